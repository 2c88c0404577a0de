//! What the app itself holds for a run, so the memory estimate made before training
//! (`wsdscope_trainer::memory`) counts it too: the `run` TUI's per-step series
//! (`tui/state/`, `tui/series.rs`) and the bounded event channels between the engine, the
//! printer or UI, and the session recorder. Headless `record` keeps no series.

use std::mem::size_of;

use wsdscope_sessions::recorder::CHANNEL_CAPACITY;
use wsdscope_sessions::{Phase, ProbeResult, RunEvent};
use wsdscope_trainer::RunConfig;
use wsdscope_trainer::memory::{self, MemoryEstimate, Place};

use crate::live::{EVENT_BUFFER, UI_BUFFER};

/// Metric columns with a min/max pyramid per run: loss, its EMA, lr, gradient and update
/// norms, cos, D1, D2, curvature and its EMA (`RunData` in `tui/state/run.rs`).
const COLUMNS: u64 = 10;
/// Plain 8-byte series per run: parameter norm, tokens, tokens/s, step time.
const PLAIN: u64 = 4;
/// Samples per level-0 block of a column's pyramid (`tui/series.rs`, `BLOCK`).
const BLOCK: u64 = 32;
/// What the HDF5 writer holds while it records one run: the library itself, its metadata
/// cache, the run's open datasets and the rows it buffers between flushes (measured with
/// session format 3: `record --out` against `--no-record` of the same run, 14 MiB with one
/// run, 16 MiB with four).
const HDF5_WRITER: u64 = 12 << 20;
/// What each run adds to the writer: its datasets opened, each caching the chunk it appends
/// to.
pub const HDF5_PER_RUN: u64 = 1 << 20;

/// Capacity of a vector grown by `push` to `len` elements: amortised doubling from 4.
fn grown(len: u64) -> u64 {
    if len == 0 {
        0
    } else {
        len.max(4).checked_next_power_of_two().unwrap_or(u64::MAX)
    }
}

/// Bytes one run's series hold after `steps` steps.
fn run_series_bytes(steps: u64, tracked: u64) -> u64 {
    let column = |n: u64| {
        // values, plus level k of the pyramid: n / (BLOCK·2^k) (min, max) pairs.
        let mut bytes = grown(n).saturating_mul(8);
        let mut blocks = n / BLOCK;
        while blocks > 0 {
            bytes = bytes.saturating_add(grown(blocks).saturating_mul(16));
            blocks /= 2;
        }
        bytes
    };
    let columns = (COLUMNS + tracked).saturating_mul(column(steps));
    let steps_vec = grown(steps).saturating_mul(8); // Vec<u64> of steps
    let plain = PLAIN.saturating_mul(grown(steps)).saturating_mul(8);
    let phases = grown(steps).saturating_mul(size_of::<Phase>() as u64);
    // A forecast refit copies every run's steps and losses and lays out its lr per step.
    let refit = steps.saturating_mul(8 + 8 + 8);
    columns
        .saturating_add(steps_vec)
        .saturating_add(plain)
        .saturating_add(phases)
        .saturating_add(refit)
}

/// Bytes of one probe result: its struct, about a dozen named scalars, and its series (the
/// 2-D grid's losses and axes, or a few 1-D slices).
fn probe_result_bytes(cfg: &RunConfig) -> u64 {
    let grid = cfg.probes.grid as u64;
    let points = cfg.probes.points as u64;
    let series = (grid * grid + 2 * grid).max(4 * points) * 8;
    size_of::<ProbeResult>() as u64 + 12 * 64 + series
}

/// Bytes the `run` TUI holds for `cfg` by the end of the run, with `tui`; 0 for headless
/// `record`, which keeps no series. Counts the trunk's steps, every scripted branch's and
/// every sibling's.
pub fn display_bytes(cfg: &RunConfig, tui: bool) -> u64 {
    if !tui {
        return 0;
    }
    let tracked = if cfg.probes.per_step {
        cfg.probes.tracked(cfg.model.layers).len() as u64
    } else {
        0
    };
    let branch_steps = cfg.forks.iter().map(|f| f.length.steps_at(f.at));
    // Each sibling keeps a series of the trunk's length.
    let sibling_steps = cfg.siblings.iter().map(|s| s.config.steps);
    let runs: Vec<u64> = std::iter::once(cfg.steps)
        .chain(branch_steps)
        .chain(sibling_steps)
        .collect();
    let series = runs.iter().fold(0u64, |acc, &s| {
        acc.saturating_add(run_series_bytes(s, tracked))
    });
    // Periodic probes: one after every `--probe-every` steps; within the default budget (5%
    // of training time) a probe costs at least a step, so at most one in 20 steps.
    let every = if cfg.probes.every > 0 {
        cfg.probes.every
    } else {
        20
    };
    let probes = if cfg.probes.periodic() {
        runs.iter().map(|s| s / every).sum::<u64>()
    } else {
        0
    };
    let slots = (UI_BUFFER as u64).saturating_mul(slot_bytes());
    series
        .saturating_add(probes.saturating_mul(probe_result_bytes(cfg)))
        .saturating_add(slots)
}

/// One slot of a bounded channel of events (std's array channel allocates all of them up
/// front): the event and its stamp.
fn slot_bytes() -> u64 {
    (size_of::<RunEvent>() + size_of::<usize>()) as u64
}

/// Bytes the recorder side holds: the recorder's bounded channel (`CHANNEL_CAPACITY`
/// events), the engine's channel to the printer (`EVENT_BUFFER` events) and the HDF5
/// writer's buffers for the trunk (each branch adds [`HDF5_PER_RUN`]).
pub fn recorder_bytes() -> u64 {
    (CHANNEL_CAPACITY + EVENT_BUFFER) as u64 * slot_bytes() + HDF5_WRITER + HDF5_PER_RUN
}

/// The estimate of a run as this invocation runs it: the trainer's parts, the TUI's series
/// (`tui`) and the session recorder (`recording`).
pub fn estimate(cfg: &RunConfig, tui: bool, recording: bool) -> MemoryEstimate {
    let mut e = memory::estimate(cfg);
    let display = display_bytes(cfg, tui);
    if display > 0 {
        e.add("the TUI's series and event queue", display);
    }
    if recording {
        let runs = memory::branches_alive(cfg) + cfg.siblings.len() as u64;
        e.add(
            "the session recorder",
            recorder_bytes().saturating_add(HDF5_PER_RUN.saturating_mul(runs)),
        );
    }
    e
}

/// Refuses, in one line, a run whose estimate exceeds the memory available: host memory
/// (`MemAvailable`) for the whole run on the CPU, for its host side on CUDA (the device's
/// own memory is not asked for before CUDA starts).
pub fn check(e: &MemoryEstimate) -> anyhow::Result<()> {
    let Some(available) = memory::available_host() else {
        return Ok(());
    };
    if e.is_cuda() {
        let host = e.peak(Place::Host);
        if host > available {
            anyhow::bail!(
                "the run needs about {} of host memory besides the device's, but {} is available (MemAvailable); lower --batch or --eval-batches, or use a smaller --data file",
                memory::human(host),
                memory::human(available)
            );
        }
        return Ok(());
    }
    memory::check_fits(e, available, "MemAvailable").map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(steps: u64) -> RunConfig {
        let mut c = crate::settings::resolve(Default::default(), None).expect("defaults resolve");
        c.steps = steps;
        c
    }

    #[test]
    fn headless_record_keeps_no_series_and_the_tui_grows_with_steps() {
        let small = cfg(600);
        assert_eq!(display_bytes(&small, false), 0);
        let a = display_bytes(&small, true);
        let b = display_bytes(&cfg(1_000_000), true);
        assert!(a > 0 && b > a, "{a} {b}");
        // Ten columns of 8-byte values, four plain series and the steps: at least 120 B/step.
        assert!(b > 120 * 1_000_000, "{b}");
        assert!(recorder_bytes() > HDF5_WRITER);
        let mut forked = small.clone();
        forked.forks = vec![
            wsdscope_trainer::ForkPlan {
                at: 100,
                length: wsdscope_trainer::ForkLength::Steps(50),
                shape: wsdscope_trainer::DecayShape::Exp,
                floor: 0.1,
            };
            2
        ];
        assert!(display_bytes(&forked, true) > a);
        // A sibling keeps a series as long as the trunk's, and the recorder a run more.
        let mut sib = small.clone();
        sib.siblings = vec![wsdscope_trainer::SiblingPlan {
            label: "lr=0.003".into(),
            config: small.clone(),
        }];
        assert!(display_bytes(&sib, true) >= 2 * a - (UI_BUFFER as u64) * slot_bytes());
        let (one, two) = (estimate(&small, false, true), estimate(&sib, false, true));
        assert!(
            two.total() > one.total() + HDF5_PER_RUN,
            "the sibling's state and writer"
        );
    }
}
