//! Synthetic, deterministic sessions for the TUI's snapshot tests and its render benchmark:
//! a WSD trunk with a plausible loss curve and optional decay branches, as `RunEvent`s.

use serde_json::json;
use wsdscope_sessions::{
    DataSummary, EVENT_SCHEMA_VERSION, EndReason, ModelSummary, RunEvent, RunId, RunStart,
    StepMetrics,
};
use wsdscope_trainer::{DecayShape, Schedule};

/// Tokens per step of the synthetic runs (batch 8 × seq 256).
pub const TOKENS_PER_STEP: u64 = 2048;

/// A WSD trunk of `total` steps: `warmup` warmup steps, the last `decay` steps decaying.
#[derive(Debug, Clone, Copy)]
pub struct Synthetic {
    pub total: u64,
    pub warmup: u64,
    pub decay: u64,
}

impl Synthetic {
    pub fn new(total: u64, warmup: u64, decay: u64) -> Self {
        Synthetic {
            total,
            warmup,
            decay,
        }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule::Wsd {
            peak: 0.01,
            warmup: self.warmup,
            stable_end: self.total - self.decay,
            decay_steps: self.decay,
            shape: DecayShape::Exp,
            floor: 0.1,
        }
    }

    /// A decay branch's schedule: the trunk's, decaying from `fork` over `decay` steps.
    pub fn branch_schedule(&self, fork: u64, decay: u64, shape: DecayShape) -> Schedule {
        Schedule::Wsd {
            peak: 0.01,
            warmup: self.warmup,
            stable_end: fork,
            decay_steps: decay,
            shape,
            floor: 0.1,
        }
    }

    pub fn run_start(&self, run: RunId, schedule: &Schedule, start_step: u64) -> RunEvent {
        let config = json!({
            "preset": "tiny",
            "steps": schedule.total(),
            "schedule": schedule,
            "optim": { "lr": 0.01, "clip": 1.0 },
        });
        RunEvent::RunStart(Box::new(RunStart {
            run,
            schema_version: EVENT_SCHEMA_VERSION,
            name: if run == 0 {
                "trunk".into()
            } else {
                format!("branch {run}")
            },
            parent: (run != 0).then_some(0),
            fork_step: (run != 0).then_some(start_step),
            model: ModelSummary {
                preset: "tiny".into(),
                params: 4_070_000,
                non_embedding_params: 3_020_000,
                hidden: 256,
                layers: 4,
                heads: 4,
                kv_heads: 4,
                ffn: 640,
                vocab: 4096,
            },
            data: DataSummary {
                description: "synthetic (seed 0)".into(),
                entropy_floor: Some(2.2),
                train_tokens: None,
                val_tokens: None,
            },
            phases: schedule.bounds(),
            start_step,
            batch: 8,
            seq: 256,
            device: "cpu".into(),
            threads: 2,
            config,
        }))
    }

    /// Step `s` of a run following `schedule`: the loss falls as a power law, drops further
    /// while the lr decays, plus deterministic noise.
    pub fn step(&self, run: RunId, schedule: &Schedule, s: u64) -> RunEvent {
        let noise = hash_noise(s.wrapping_mul(31).wrapping_add(run as u64));
        let lr = schedule.lr(s);
        let decayed = 1.0 - lr / 0.01; // 0 in stable, → 0.9 at the floor
        let loss = 2.4 + 8.0 / (1.0 + s as f64 / 30.0).powf(0.6) - 0.35 * decayed + 0.12 * noise;
        let grad_norm = 0.4 + 2.5 / (1.0 + s as f64 / 20.0) + 0.08 * noise.abs();
        RunEvent::Step(StepMetrics {
            run,
            step: s,
            phase: schedule.phase(s),
            loss,
            lr,
            grad_norm,
            update_norm: lr * 3.0 * (1.0 + 0.1 * noise),
            param_norm: 40.0 + s as f64 * 1e-3,
            tokens: s * TOKENS_PER_STEP,
            tokens_per_s: 1840.0,
            step_ms: 1113.0,
            grad_norm_per_layer: (0..4).map(|l| grad_norm * (0.3 + 0.1 * l as f64)).collect(),
        })
    }

    /// Validation loss at step `s` (the smooth part of the train loss, a little higher).
    pub fn eval(&self, run: RunId, schedule: &Schedule, s: u64) -> RunEvent {
        let decayed = 1.0 - schedule.lr(s) / 0.01;
        RunEvent::Eval {
            run,
            step: s,
            val_loss: 2.45 + 8.0 / (1.0 + s as f64 / 30.0).powf(0.6) - 0.35 * decayed,
            tokens: s * TOKENS_PER_STEP,
        }
    }

    /// The trunk's events up to step `upto`, with an eval every `eval_every` steps.
    pub fn trunk(&self, upto: u64, eval_every: u64) -> Vec<RunEvent> {
        let sched = self.schedule();
        let mut evs = vec![self.run_start(0, &sched, 0)];
        for s in 1..=upto {
            evs.push(self.step(0, &sched, s));
            if eval_every > 0 && s % eval_every == 0 {
                evs.push(self.eval(0, &sched, s));
            }
        }
        evs
    }

    /// Branch `run`, forked from the trunk at `fork`, decaying over `decay` steps, up to `upto`.
    pub fn branch(&self, run: RunId, fork: u64, decay: u64, upto: u64) -> Vec<RunEvent> {
        let sched = self.branch_schedule(fork, decay, DecayShape::Exp);
        let mut evs = vec![self.run_start(run, &sched, fork)];
        for s in fork + 1..=upto.min(fork + decay) {
            evs.push(self.step(run, &sched, s));
        }
        evs
    }

    /// The trunk's events up to `upto` with an eval every `eval_every` steps and at each of
    /// `extra` (the engine evaluates the trunk where a branch ends, to compare them).
    pub fn trunk_with_evals_at(&self, upto: u64, eval_every: u64, extra: &[u64]) -> Vec<RunEvent> {
        let sched = self.schedule();
        let mut evs = vec![self.run_start(0, &sched, 0)];
        for s in 1..=upto {
            evs.push(self.step(0, &sched, s));
            if s % eval_every == 0 || extra.contains(&s) {
                evs.push(self.eval(0, &sched, s));
            }
        }
        evs
    }

    /// A decay branch as the engine reports it: `Forked`, its start, its steps from `fork` up
    /// to `upto` (at most `fork + decay`), and, once it got to its end, a final eval and a
    /// completed `End`.
    pub fn forked_branch(
        &self,
        run: RunId,
        fork: u64,
        decay: u64,
        shape: DecayShape,
        upto: u64,
    ) -> Vec<RunEvent> {
        let sched = self.branch_schedule(fork, decay, shape);
        let mut evs = vec![
            RunEvent::Forked {
                run,
                parent: 0,
                step: fork,
                schedule: serde_json::to_value(&sched).expect("a schedule is plain data"),
            },
            self.run_start(run, &sched, fork),
        ];
        let end = fork + decay;
        for s in fork + 1..=upto.min(end) {
            evs.push(self.step(run, &sched, s));
        }
        if upto >= end {
            let val = self.eval(run, &sched, end);
            let RunEvent::Eval { val_loss, .. } = val else {
                unreachable!()
            };
            evs.push(val);
            evs.push(RunEvent::End {
                run,
                step: end,
                reason: EndReason::Completed,
                message: None,
                final_val_loss: Some(val_loss),
                wall_s: 1.0,
            });
        }
        evs
    }

    pub fn end(run: RunId, step: u64, reason: EndReason, message: Option<&str>) -> RunEvent {
        RunEvent::End {
            run,
            step,
            reason,
            message: message.map(str::to_string),
            final_val_loss: None,
            wall_s: 1.0,
        }
    }
}

/// Deterministic noise in [-1, 1] from an integer.
fn hash_noise(mut x: u64) -> f64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    (x % 20_001) as f64 / 10_000.0 - 1.0
}
