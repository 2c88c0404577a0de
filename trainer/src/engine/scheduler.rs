//! The runs an engine drives ([`Runs`]): which one steps next under the policy, forking a
//! run within the session's slots and memory budget, probing one on request, and ending
//! runs with their last checkpoint and `end` event.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use wsdscope_events::{EndReason, NoteKind, RunEvent, RunId};

use super::command::Outcome;
use super::probe_clock::ProbeClock;
use super::trainer::Trainer;
use crate::config::{Policy, SiblingPlan};
use crate::probe::ProbeKind;
use crate::schedule::Schedule;

/// Memory the runs may hold together by default: half of what the OS reports available.
pub(super) fn default_budget() -> u64 {
    let avail = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    avail.map(|kb| kb * 1024 / 2).unwrap_or(u64::MAX)
}

/// The runs an engine drives, and how it decides which steps next.
pub(super) struct Runs {
    pub(super) active: Vec<Trainer>,
    pub(super) next_id: RunId,
    /// Runs the session holds in all (`RunConfig::run_slots`): ids stay below it.
    pub(super) slots: u32,
    pub(super) budget: u64,
    pub(super) policy: Policy,
    pub(super) rr: usize,
    /// Steps at which the trunk also evaluates: where branches end, for the comparison.
    pub(super) trunk_evals: BTreeSet<u64>,
    pub(super) started: BTreeMap<RunId, Instant>,
    pub(super) probes: ProbeClock,
    /// Runs asked to be probed before their first step: probed right after it.
    pub(super) probe_pending: BTreeSet<RunId>,
}

impl Runs {
    /// Runs `kind` on active run `i` and emits its result (or a note saying why it failed);
    /// returns the seconds it took.
    pub(super) fn probe(
        &mut self,
        i: usize,
        kind: ProbeKind,
        emit: &mut impl FnMut(RunEvent),
    ) -> f64 {
        if !self.active[i].is_root() {
            return 0.0; // only rank 0 records: the other ranks would measure for nobody
        }
        let t0 = Instant::now();
        let result = if kind == ProbeKind::Interp {
            let tr = &self.active[i];
            // A branch against its parent, or the trunk against its newest branch.
            let other = match tr.parent {
                Some(p) => self.active.iter().find(|r| r.run == p),
                None => self.active.iter().rev().find(|r| r.parent == Some(tr.run)),
            };
            other.map(|o| tr.interpolate_with(o))
        } else {
            Some(self.active[i].probe(kind))
        };
        let tr = &self.active[i];
        match result {
            Some(Ok(r)) => emit(RunEvent::Probe(r)),
            Some(Err(e)) => emit(RunEvent::Note {
                run: tr.run,
                step: tr.step,
                kind: NoteKind::Failed,
                message: format!("probe {} failed: {e}", kind.name()),
            }),
            None => {}
        }
        t0.elapsed().as_secs_f64()
    }

    /// Every probe on run `id` now, outside the budget (after its first step if it has
    /// not taken one yet).
    pub(super) fn probe_all(
        &mut self,
        id: RunId,
        emit: &mut impl FnMut(RunEvent),
    ) -> std::result::Result<(), String> {
        let Some(i) = self.active.iter().position(|r| r.run == id) else {
            return Err(format!("probe refused: run {id} is not running"));
        };
        if self.active[i].step == 0 {
            self.probe_pending.insert(id);
            return Ok(());
        }
        let single = self.active[i].cfg.batch < 2;
        for kind in ProbeKind::PERIODIC.into_iter().chain([ProbeKind::Interp]) {
            if single && kind == ProbeKind::Noise {
                continue;
            }
            let secs = self.probe(i, kind, emit);
            self.probes.cost.insert(kind, secs);
        }
        Ok(())
    }
    pub(super) fn pick(&mut self) -> usize {
        let branches: Vec<usize> = (0..self.active.len())
            .filter(|&i| self.active[i].run != 0)
            .collect();
        match self.policy {
            Policy::RoundRobin => {
                self.rr = (self.rr + 1) % self.active.len();
                self.rr
            }
            Policy::BranchesFirst => *branches.last().unwrap_or(&0),
            Policy::TrunkPaused if !branches.is_empty() => {
                self.rr = (self.rr + 1) % branches.len();
                branches[self.rr]
            }
            Policy::TrunkPaused => 0,
        }
    }

    /// Forks `parent` at its current step into a new run with `schedule`; returns the new id,
    /// or why the fork was refused.
    pub(super) fn fork(
        &mut self,
        parent: RunId,
        branch: impl FnOnce(&Trainer, Option<&Trainer>) -> (Schedule, String),
        emit: &mut impl FnMut(RunEvent),
    ) -> std::result::Result<RunId, String> {
        let Some(p) = self.active.iter().find(|r| r.run == parent) else {
            return Err(format!("fork refused: run {parent} is not running"));
        };
        let (schedule, name) = branch(p, self.active.iter().find(|r| r.run == 0));
        if p.step == 0 {
            return Err(format!(
                "fork refused: run {parent} has not taken a step yet"
            ));
        }
        if self.next_id >= self.slots {
            return Err(format!(
                "fork refused: the session has room for {} runs and all are taken (--max-runs N raises it for the next session)",
                self.slots
            ));
        }
        let resident: u64 = self.active.iter().map(Trainer::resident_bytes).sum();
        let need = resident + p.resident_bytes() + p.activation_bytes();
        if need > self.budget {
            return Err(format!(
                "fork refused: {} runs would need about {} MiB, over the memory budget of {} MiB (--memory-budget MB)",
                self.active.len() + 1,
                need >> 20,
                self.budget >> 20
            ));
        }
        let id = self.next_id;
        let at = p.step;
        let branch = p
            .fork(id, schedule, name)
            .map_err(|e| format!("fork refused: {e}"))?;
        self.next_id += 1;
        emit(RunEvent::Forked {
            run: id,
            parent,
            step: at,
            schedule: serde_json::to_value(&branch.cfg.schedule).expect("schedule serialises"),
        });
        emit(branch.run_start_event());
        if let Some(trunk) = self.active.iter().find(|r| r.run == 0)
            && branch.cfg.steps <= trunk.cfg.steps
        {
            self.trunk_evals.insert(branch.cfg.steps);
        }
        self.started.insert(id, Instant::now());
        self.probes.start(&branch);
        self.active.push(branch);
        Ok(id)
    }

    /// Starts `plan` beside the trunk (which has not stepped yet) within the session's slots
    /// and the memory budget, like a fork; returns its id, or why it was refused.
    pub(super) fn sibling(
        &mut self,
        plan: &SiblingPlan,
        emit: &mut impl FnMut(RunEvent),
    ) -> std::result::Result<RunId, String> {
        let label = &plan.label;
        let Some(trunk) = self.active.iter().find(|r| r.run == 0) else {
            return Err(format!("sibling {label} refused: the trunk is not running"));
        };
        if self.next_id >= self.slots {
            return Err(format!(
                "sibling {label} refused: the session has room for {} runs and all are taken (--max-runs N)",
                self.slots
            ));
        }
        let resident: u64 = self.active.iter().map(Trainer::resident_bytes).sum();
        let step = self
            .active
            .iter()
            .map(Trainer::activation_bytes)
            .chain([crate::memory::step_bytes(&plan.config)])
            .max()
            .unwrap_or(0);
        let need = resident + crate::memory::run_bytes(&plan.config) + step;
        if need > self.budget {
            return Err(format!(
                "sibling {label} refused: {} runs would need about {} MiB, over the memory budget of {} MiB (--memory-budget MB)",
                self.active.len() + 1,
                need >> 20,
                self.budget >> 20
            ));
        }
        let id = self.next_id;
        let run = trunk
            .sibling(id, plan)
            .map_err(|e| format!("sibling {label} refused: {e}"))?;
        self.next_id += 1;
        emit(run.run_start_event());
        self.started.insert(id, Instant::now());
        self.probes.start(&run);
        self.active.push(run);
        Ok(id)
    }

    /// Ends every run as `stopped` (branches first, the trunk last), with `message` and the
    /// trunk's fallback checkpoint directory; the trunk's outcome goes to `trunk_outcome`.
    pub(super) fn stop_all(
        &mut self,
        message: Option<String>,
        checkpoint_to: Option<&Path>,
        trunk_outcome: &mut Option<Outcome>,
        emit: &mut impl FnMut(RunEvent),
    ) {
        while !self.active.is_empty() {
            let i = self.active.len() - 1;
            let o = self.finish(i, EndReason::Stopped, message.clone(), checkpoint_to, emit);
            if self.active.is_empty() {
                trunk_outcome.get_or_insert(o);
            }
        }
    }

    /// Ends run `i` with `reason`: its last checkpoint if asked for, its `end` event, and its
    /// memory freed.
    /// `checkpoint_to`: where the trunk's final checkpoint goes when it has no
    /// `--checkpoint-dir` (an interrupted run keeps its progress).
    pub(super) fn finish(
        &mut self,
        i: usize,
        reason: EndReason,
        message: Option<String>,
        checkpoint_to: Option<&Path>,
        emit: &mut impl FnMut(RunEvent),
    ) -> Outcome {
        let tr = self.active.remove(i);
        if self.rr >= i && self.rr > 0 {
            self.rr -= 1;
        }
        let run = tr.run;
        let dir = tr
            .cfg
            .checkpoint_dir
            .clone()
            .or_else(|| checkpoint_to.filter(|_| run == 0).map(Path::to_path_buf));
        let keep = if run == 0 {
            !tr.checkpoint_due()
        } else {
            tr.cfg.keep_branch_checkpoints
        };
        if reason != EndReason::Failed
            && tr.is_root()
            && tr.step > 0
            && keep
            && let Some(dir) = dir
        {
            let root = if run == 0 {
                dir
            } else {
                dir.join(format!("run-{run}"))
            };
            match tr.save_checkpoint(&root) {
                Ok(path) => emit(RunEvent::Checkpoint {
                    run,
                    step: tr.step,
                    path: path.display().to_string(),
                }),
                Err(e) => emit(RunEvent::Note {
                    run,
                    step: tr.step,
                    kind: NoteKind::Failed,
                    message: format!("final checkpoint failed: {e}"),
                }),
            }
        }
        let wall_s = self
            .started
            .get(&run)
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        emit(RunEvent::End {
            run,
            step: tr.step,
            reason,
            message: message.clone(),
            final_val_loss: tr.last_val,
            wall_s,
        });
        Outcome {
            reason,
            step: tr.step,
            final_val_loss: tr.last_val,
            message,
        }
    }
}
