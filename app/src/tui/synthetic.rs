//! Synthetic, deterministic sessions for the TUI's snapshot tests and its render benchmark:
//! a WSD trunk with a plausible loss curve and optional decay branches, as `RunEvent`s, and
//! periodic probe results of every kind (sharpness, noise scale, slices, landscape,
//! interpolation) shaped as the engine reports them.

use std::collections::BTreeMap;

use serde_json::json;
use wsdscope_sessions::vocabulary::{common, interp, landscape, noise, sharpness, slice};
use wsdscope_sessions::{
    DataSummary, EVENT_SCHEMA_VERSION, EndReason, ModelSummary, ProbeKind, ProbeResult, RunEvent,
    RunId, RunStart, StepGeometry, StepMetrics,
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
            param_groups: vec!["embedding".into(), "hidden".into(), "norm".into()],
            tracked_tensors: vec![
                "model.embed_tokens.weight".into(),
                "model.layers.0.self_attn.q_proj.weight".into(),
            ],
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
            grad_norm_per_group: vec![grad_norm * 0.2, grad_norm * 0.9, grad_norm * 0.1],
            geometry: (s > 1).then(|| {
                let d1 = -0.02 * (1.0 - decayed) + 0.01 * noise;
                let d2 = 20.0 + 60.0 * decayed + 5.0 * noise;
                StepGeometry {
                    cos: 0.1 + 0.5 * decayed + 0.05 * noise,
                    d1,
                    d2,
                    curvature: d2.abs() / (1.0 + d1 * d1).powf(1.5),
                }
            }),
            max_update: vec![lr * 1.1, lr * 0.6],
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

    /// The smooth part of the loss at step `s` (what the probes measure around).
    fn smooth_loss(schedule: &Schedule, s: u64) -> f64 {
        let decayed = 1.0 - schedule.lr(s) / 0.01;
        2.4 + 8.0 / (1.0 + s as f64 / 30.0).powf(0.6) - 0.35 * decayed
    }

    /// Every periodic probe of run `run` at step `s`: sharpness (the preconditioned one
    /// crosses 38/η late in the stable phase, falls below it as the lr decays), noise scale,
    /// both 1-D slices and a 21×21 landscape whose minimum is off the centre.
    pub fn probes(&self, run: RunId, schedule: &Schedule, s: u64) -> Vec<RunEvent> {
        let noise = hash_noise(s.wrapping_mul(7).wrapping_add(run as u64 * 1000 + 3));
        let lr = schedule.lr(s).max(1e-9);
        let loss = Self::smooth_loss(schedule, s);
        let grow = 1.0 - (-(s as f64) / 250.0).exp();
        let sharpness = probe(
            run,
            s,
            ProbeKind::Sharpness.name(),
            &[
                (
                    sharpness::LAMBDA_MAX,
                    40.0 + 60.0 * grow * (1.0 + 0.05 * noise),
                ),
                (
                    sharpness::PRECOND_LAMBDA_MAX,
                    3800.0 * (0.55 + 0.5 * grow) * (1.0 + 0.03 * noise),
                ),
                (sharpness::THRESHOLD, 38.0 / lr),
                (sharpness::GD_THRESHOLD, 2.0 / lr),
                (sharpness::LR, lr),
                (sharpness::PRODUCTS, 40.0),
                (common::SEQUENCES, 8.0),
                (common::SECONDS, 2.5),
                (common::COST_STEPS, 2.2),
            ],
            Vec::new(),
        );
        let b_avg = 2000.0 * (1.0 + s as f64 / 100.0).powf(0.8);
        let noise_scale = probe(
            run,
            s,
            ProbeKind::Noise.name(),
            &[
                (noise::B_SIMPLE, b_avg * (1.0 + 0.3 * noise)),
                (noise::B_SIMPLE_AVG, b_avg),
                (noise::BATCH_TOKENS, TOKENS_PER_STEP as f64),
                (noise::RULE_TOKENS, 1.21e9 / loss.powf(6.24)),
                (noise::G_SQ, 0.4),
                (noise::TRACE, 0.4 * b_avg / 256.0),
                (noise::LOSS, loss),
                (common::SECONDS, 1.5),
                (common::COST_STEPS, 1.3),
            ],
            Vec::new(),
        );
        let alpha = linspace(-1.0, 1.0, 21);
        let beta = linspace(-1.0, 3.0, 17);
        let slice = probe(
            run,
            s,
            ProbeKind::Slice.name(),
            &[(common::SECONDS, 1.0)],
            vec![
                (
                    slice::LOSS_RANDOM,
                    alpha
                        .iter()
                        .map(|a| loss + 1.5 * a * a + 0.2 * a + 0.3 * a.powi(4))
                        .collect(),
                ),
                (slice::ALPHA, alpha),
                (
                    slice::LOSS_UPDATE,
                    beta.iter()
                        .map(|b| loss + 0.004 * (b - 1.5) * (b - 1.5) - 0.009)
                        .collect(),
                ),
                (slice::BETA, beta),
            ],
        );
        let grid = linspace(-1.0, 1.0, 21);
        let mut surface = Vec::with_capacity(grid.len() * grid.len());
        for &y in &grid {
            for &x in &grid {
                surface.push(
                    loss + 1.2 * (x - 0.3) * (x - 0.3)
                        + 0.8 * (y + 0.2) * (y + 0.2)
                        + 0.3 * x * y
                        + 0.1 * (3.0 * x).sin() * (2.0 * y).cos(),
                );
            }
        }
        let landscape = probe(
            run,
            s,
            ProbeKind::Landscape.name(),
            &[(landscape::GRID, grid.len() as f64), (landscape::SPAN, 1.0)],
            vec![
                (landscape::X, grid.clone()),
                (landscape::Y, grid),
                (landscape::LOSS, surface),
            ],
        );
        vec![sharpness, noise_scale, slice, landscape]
    }

    /// The interpolation L((1−α)θ_parent + αθ_branch) from `parent` at `from` to the end of
    /// `branch` at `to` (reported on the branch), α from −0.2 to 1.2.
    pub fn interp(
        &self,
        parent: RunId,
        from: u64,
        branch: RunId,
        to: u64,
        branch_schedule: &Schedule,
    ) -> RunEvent {
        let lp = Self::smooth_loss(&self.schedule(), from);
        let lb = Self::smooth_loss(branch_schedule, to);
        let alpha = linspace(-0.2, 1.2, 15);
        let loss = alpha
            .iter()
            .map(|a| lp + (lb - lp) * a + 0.15 * a * (a - 1.0))
            .collect();
        probe(
            branch,
            to,
            ProbeKind::Interp.name(),
            &[
                (interp::FROM_RUN, parent as f64),
                (interp::FROM_STEP, from as f64),
                (interp::TO_RUN, branch as f64),
                (interp::TO_STEP, to as f64),
                (interp::DISTANCE, 3.2),
            ],
            vec![(interp::ALPHA, alpha), (interp::LOSS, loss)],
        )
    }

    /// The trunk up to `upto` (evals every `eval_every`) with every probe every `probe_every`
    /// steps.
    pub fn trunk_with_probes(&self, upto: u64, eval_every: u64, probe_every: u64) -> Vec<RunEvent> {
        let sched = self.schedule();
        let mut evs = Vec::new();
        for ev in self.trunk(upto, eval_every) {
            let probe_at = match &ev {
                RunEvent::Step(m) if m.step % probe_every == 0 => Some(m.step),
                _ => None,
            };
            evs.push(ev);
            if let Some(s) = probe_at {
                evs.extend(self.probes(0, &sched, s));
            }
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

/// A probe result event.
fn probe(
    run: RunId,
    step: u64,
    kind: &str,
    scalars: &[(&str, f64)],
    series: Vec<(&str, Vec<f64>)>,
) -> RunEvent {
    RunEvent::Probe(ProbeResult {
        run,
        step,
        probe: kind.into(),
        scalars: scalars.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
        series: series
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
    })
}

/// `n` evenly spaced values from `a` to `b`.
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
        .collect()
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
