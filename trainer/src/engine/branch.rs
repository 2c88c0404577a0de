//! The schedules of the runs a fork starts: a decay branch from the parent's current lr
//! (WSD's decay, tried at any step), or WSD-S's resumption at the trunk's stable lr.

use super::trainer::Trainer;
use crate::config::ForkLength;
use crate::schedule::{DecayShape, Schedule};

/// The schedule of a decay branch forked after step `at` of a run whose lr there is `lr`:
/// that lr until the fork, then `shape` over `d` steps down to `floor`×lr.
pub fn decay_branch(lr: f64, at: u64, d: u64, shape: DecayShape, floor: f64) -> Schedule {
    Schedule::Wsd {
        peak: lr,
        warmup: 0,
        stable_end: at,
        decay_steps: d,
        shape,
        floor,
    }
}

/// A decay branch of a parent at its current step: its schedule and name (`exp 60 @540`).
pub(super) fn decay_of(
    length: ForkLength,
    shape: DecayShape,
    floor: f64,
) -> impl FnOnce(&Trainer, Option<&Trainer>) -> (Schedule, String) {
    move |p, _| {
        let at = p.step;
        let d = length.steps_at(at);
        let lr = p.cfg.schedule.lr(at.max(1));
        (
            decay_branch(lr, at, d, shape, floor),
            format!("{shape} {d} @{at}"),
        )
    }
}

/// WSD-S: continue from a (decayed) run's state at the trunk's stable lr until the trunk's
/// last step.
pub(super) fn resume_of(p: &Trainer, trunk: Option<&Trainer>) -> (Schedule, String) {
    let t = trunk.unwrap_or(p);
    let schedule = Schedule::Constant {
        peak: t.cfg.schedule.peak(),
        warmup: 0,
        total: t.cfg.steps.max(p.step + 1),
    };
    (schedule, format!("resume @{}", p.step))
}
