//! What an estimate is made of: named parts, each with where it lives ([`Place`]), when it is
//! held ([`Phase`]) and the flag that shrinks it ([`Lever`]); the peak they add up to, the
//! one-line summary and the breakdown part by part.

use std::fmt;

use super::units::{human, sat};
use crate::config::RunConfig;

/// When a part is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// For the whole run.
    Resident,
    /// During a training step.
    Step,
    /// During a periodic probe.
    Probe,
}

/// Where a part lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    Host,
    /// The CUDA device the run trains on.
    Device,
}

/// What a part grows with, and so which flag shrinks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lever {
    /// The process itself: nothing to lower.
    Fixed,
    /// Tokens per step: `--batch` × `--seq`.
    Tokens,
    /// The model's shape: `--preset`, `--hidden`, `--layers`, `--vocab`.
    Shape,
    /// Periodic probes: `--probe-budget 0` turns them off.
    Probes,
    /// Scripted branches alive at the same time: `--fork-at`.
    Branches,
    /// Sibling runs beside the trunk: `--sibling`.
    Siblings,
    /// The training data (`--data`).
    Data,
    /// Added by the caller (the display, the recorder).
    Other,
}

impl Lever {
    /// The group name a one-line summary uses.
    fn label(self) -> &'static str {
        match self {
            Lever::Fixed => "process",
            Lever::Tokens => "activations and batches",
            Lever::Shape => "parameters and AdamW state",
            Lever::Probes => "probes",
            Lever::Branches => "branches",
            Lever::Siblings => "siblings",
            Lever::Data => "data",
            Lever::Other => "other",
        }
    }

    /// What to lower, for a refusal.
    fn advice(self) -> Option<&'static str> {
        match self {
            Lever::Tokens => Some("lower --batch or --seq"),
            Lever::Shape => {
                Some("choose a smaller --preset or lower --hidden, --layers or --vocab")
            }
            Lever::Probes => Some(
                "turn periodic probes off with --probe-budget 0, or choose a smaller --preset or \
                 lower --hidden, --layers or --vocab",
            ),
            Lever::Branches => Some("script fewer --fork-at steps whose branches overlap"),
            Lever::Siblings => Some("give fewer --sibling values, or smaller ones"),
            Lever::Data => Some("use a smaller --data file, or a pre-tokenized .u16/.u32 one"),
            Lever::Fixed | Lever::Other => None,
        }
    }
}

/// One named part of an estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: String,
    pub bytes: u64,
    pub place: Place,
    pub phase: Phase,
    pub lever: Lever,
}

/// The memory a run needs: named parts, and the peak they add up to.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    parts: Vec<Part>,
    batch: usize,
    seq: usize,
    /// The run's device is CUDA: parameters and activations live there.
    pub(super) cuda: bool,
    /// Most branches alive at the same time.
    pub(super) branches: u64,
}

impl MemoryEstimate {
    pub(super) fn new(cfg: &RunConfig) -> Self {
        MemoryEstimate {
            parts: Vec::new(),
            batch: cfg.batch,
            seq: cfg.seq,
            cuda: cfg.on_cuda(),
            branches: 0,
        }
    }

    pub(super) fn part(
        &mut self,
        name: &str,
        bytes: u128,
        place: Place,
        phase: Phase,
        lever: Lever,
    ) {
        self.parts.push(Part {
            name: name.into(),
            bytes: sat(bytes),
            place,
            phase,
            lever,
        });
    }

    /// Adds a host part held for the whole run (the app's display and recorder buffers).
    pub fn add(&mut self, name: impl Into<String>, bytes: u64) {
        self.add_part(Part {
            name: name.into(),
            bytes,
            place: Place::Host,
            phase: Phase::Resident,
            lever: Lever::Other,
        });
    }

    pub fn add_part(&mut self, part: Part) {
        self.parts.push(part);
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether the run trains on a CUDA device (then [`Self::total`] is device memory).
    pub fn is_cuda(&self) -> bool {
        self.cuda
    }

    pub(super) fn sum(&self, place: Place, phase: Phase) -> u128 {
        self.parts
            .iter()
            .filter(|p| p.place == place && p.phase == phase)
            .map(|p| p.bytes as u128)
            .sum()
    }

    /// The transient phase that sets the peak at `place`.
    fn peak_phase(&self, place: Place) -> Phase {
        if self.sum(place, Phase::Probe) > self.sum(place, Phase::Step) {
            Phase::Probe
        } else {
            Phase::Step
        }
    }

    /// Peak bytes at `place`: what is resident plus the larger transient.
    pub fn peak(&self, place: Place) -> u64 {
        let resident = self.sum(place, Phase::Resident);
        sat(resident
            + self
                .sum(place, Phase::Step)
                .max(self.sum(place, Phase::Probe)))
    }

    /// The peak where the run's tensors live: host memory on the CPU, device memory on CUDA.
    pub fn total(&self) -> u64 {
        self.peak(if self.cuda {
            Place::Device
        } else {
            Place::Host
        })
    }

    /// The parts that make up [`Self::total`], summed by lever, largest first.
    fn groups(&self) -> Vec<(Lever, u128)> {
        let place = if self.cuda {
            Place::Device
        } else {
            Place::Host
        };
        let transient = self.peak_phase(place);
        let mut groups: Vec<(Lever, u128)> = Vec::new();
        for p in &self.parts {
            if p.place != place || !(p.phase == Phase::Resident || p.phase == transient) {
                continue;
            }
            match groups.iter_mut().find(|(l, _)| *l == p.lever) {
                Some((_, b)) => *b += p.bytes as u128,
                None => groups.push((p.lever, p.bytes as u128)),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.1));
        groups
    }

    fn group_text(&self, lever: Lever, bytes: u128) -> String {
        let b = human(sat(bytes));
        match lever {
            Lever::Tokens => format!(
                "{} {b} at --batch {} × --seq {}",
                lever.label(),
                self.batch,
                self.seq
            ),
            Lever::Branches => format!("{} {b} ({} alive at once)", lever.label(), self.branches),
            _ => format!("{} {b}", lever.label()),
        }
    }

    /// One line: the peak and its three largest groups.
    pub fn summary(&self) -> String {
        let groups = self.groups();
        let groups: Vec<(Lever, u128)> = groups
            .into_iter()
            .filter(|&(l, b)| l != Lever::Fixed && b > 0)
            .collect();
        let shown: Vec<String> = groups
            .iter()
            .take(3)
            .map(|&(l, b)| self.group_text(l, b))
            .collect();
        let more = if groups.len() > 3 { "; …" } else { "" };
        let place = if self.cuda { " of device memory" } else { "" };
        format!(
            "about {}{place} ({}{more})",
            human(self.total()),
            shown.join("; ")
        )
    }

    /// The advice for a refusal: the flag that lowers the largest group that has one.
    pub(super) fn advice(&self) -> &'static str {
        self.groups()
            .iter()
            .find_map(|(l, _)| l.advice())
            .unwrap_or("free some memory")
    }
}

impl fmt::Display for MemoryEstimate {
    /// The breakdown: one line per part, grouped by phase, then the peak.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let places: &[Place] = if self.cuda {
            &[Place::Device, Place::Host]
        } else {
            &[Place::Host]
        };
        for &place in places {
            let where_ = match place {
                Place::Host => "host memory",
                Place::Device => "device memory",
            };
            let peak_phase = self.peak_phase(place);
            writeln!(f, "{where_}: peak {}", human(self.peak(place)))?;
            for (phase, title) in [
                (Phase::Resident, "held for the whole run"),
                (Phase::Step, "during a training step"),
                (Phase::Probe, "during a periodic probe"),
            ] {
                let parts: Vec<&Part> = self
                    .parts
                    .iter()
                    .filter(|p| p.place == place && p.phase == phase && p.bytes > 0)
                    .collect();
                if parts.is_empty() {
                    continue;
                }
                let sum: u128 = parts.iter().map(|p| p.bytes as u128).sum();
                let mark = if phase != Phase::Resident && phase == peak_phase {
                    " (the larger transient: counted in the peak)"
                } else {
                    ""
                };
                writeln!(f, "  {title}: {}{mark}", human(sat(sum)))?;
                for p in parts {
                    writeln!(f, "    {:>10}  {}", human(p.bytes), p.name)?;
                }
            }
        }
        Ok(())
    }
}
