//! The gradient noise scale of a run, and its cheapest source: the training step itself.
//!
//! The CPU step computes a batch as the leaves of `model/tree.rs` (at most 512 tokens
//! each): each leaf's gradient is that of a small batch drawn from the same step, and the
//! step's gradient is that of the whole batch. Those are the two batch sizes McCandlish et
//! al. (2018, appendix A) estimate B_simple = tr Σ / |G|² from, so a run whose step has two
//! or more leaves gets the noise scale at every step for the price of the leaves' squared
//! norms (read in the pass that combines the leaves), with no pass of its own and nothing
//! taken from the periodic probes' budget. One step's estimate rests on a few small batches and is
//! noisy; like the paper, [`NoiseSums`] averages |G|² and tr Σ apart over a window of steps
//! (`noise_window`, ending at every phase anchor of the probe planner too) and reports the
//! window as one `noise` probe result at its last step. Runs whose step is one pass (CUDA,
//! the reference ops) measure the noise scale with the separate periodic probe instead.

use std::collections::BTreeMap;

use wsdscope_events::vocabulary::noise;
use wsdscope_probes::{NoiseScale, minicpm_batch_rule};

use crate::collective::{self, Collective};
use crate::config::RunConfig;
use crate::error::Result;
use crate::model::MiniCpm;
use crate::model::tree::{self, LeafNorm};
use crate::probe::Measurement;

/// Leaves the step of one global batch has, over all ranks (each rank's shard is its own
/// tree): the noise scale from the step needs two.
pub(super) fn global_leaves(batch: usize, seq: usize, ranks: usize) -> usize {
    fn count(b: usize, leaf: usize) -> usize {
        if b == 0 {
            0
        } else if b <= leaf {
            1
        } else {
            count(b.div_ceil(2), leaf) + count(b - b.div_ceil(2), leaf)
        }
    }
    let leaf = tree::leaf_sequences(seq);
    (0..ranks)
        .map(|r| count(collective::rows(batch, r, ranks.max(1)).len(), leaf))
        .sum()
}

/// One step's estimate from its leaves' squared norms (this rank's; summed over the ranks
/// when they exchange) and the global batch's gradient norm before clipping, over
/// `batch_tokens` tokens, with the number of leaves over all ranks. `None` with fewer than
/// two leaves in all.
pub(super) fn step_estimate(
    comm: &dyn Collective,
    leaves: &[LeafNorm],
    grad_norm: f64,
    batch_tokens: f64,
) -> Result<Option<(NoiseScale, usize)>> {
    // (Σ |g_leaf|², Σ 1/tokens, leaves) over every rank's leaves.
    let mut sums = [
        leaves.iter().map(|l| l.sq_norm).sum::<f64>(),
        leaves.iter().map(|l| 1.0 / l.tokens as f64).sum::<f64>(),
        leaves.len() as f64,
    ];
    if collective::exchanges(comm) {
        comm.all_reduce_sum_f64(&mut sums)?;
    }
    let [sq, inv, k] = sums;
    Ok((k >= 2.0).then(|| {
        let est = NoiseScale::from_means(sq / k, inv / k, grad_norm * grad_norm, batch_tokens);
        (est, k as usize)
    }))
}

/// The weight of the newest estimate in the run's averaged B_simple: tr Σ and |G|² are each
/// averaged exponentially over the estimates (McCandlish et al. average numerator and
/// denominator apart), so with a report every 10 steps the average spans about the last 30
/// steps and follows the decay. A sum since step 0 (the average until the noise scale came
/// from the steps) stayed at the stable phase's level while the decay tripled it.
const AVERAGE_WEIGHT: f64 = 0.3;

/// A run's noise-scale estimates: the window since the last report, and the run's average.
#[derive(Debug, Clone, Default)]
pub(super) struct NoiseSums {
    /// Sums over the window's steps: tr Σ, |G|², loss; its steps; leaves per step.
    window: (f64, f64, f64),
    steps: u64,
    leaves: usize,
    /// Exponential averages of the estimates so far (tr Σ, |G|²); none before the first.
    /// Kept in checkpoints.
    pub(super) average: Option<(f64, f64)>,
}

impl NoiseSums {
    /// Adds one step's estimate (from `leaves` leaves) to the window.
    pub(super) fn add_step(&mut self, est: NoiseScale, loss: f64, leaves: usize) {
        self.window.0 += est.trace;
        self.window.1 += est.g_sq;
        self.window.2 += loss;
        self.steps += 1;
        self.leaves = leaves;
    }

    /// Adds one estimate to the run's average and returns the run's averaged B_simple.
    pub(super) fn average_with(&mut self, trace: f64, g_sq: f64) -> f64 {
        let w = AVERAGE_WEIGHT;
        let (t, g) = match self.average {
            None => (trace, g_sq),
            Some((t, g)) => (t + w * (trace - t), g + w * (g_sq - g)),
        };
        self.average = Some((t, g));
        if g > 0.0 { t / g } else { f64::NAN }
    }

    /// The window's report as a `noise` probe's measurement (its means; B_simple is the ratio
    /// of the mean tr Σ to the mean |G|²), and a fresh window; `None` if it holds no step.
    pub(super) fn take_window(&mut self, batch_tokens: f64) -> Option<Measurement> {
        if self.steps == 0 {
            return None;
        }
        let n = self.steps as f64;
        let (trace, g_sq, loss) = (self.window.0 / n, self.window.1 / n, self.window.2 / n);
        let est = NoiseScale { g_sq, trace };
        let avg = self.average_with(trace, g_sq);
        let out = [
            (noise::B_SIMPLE, est.b_simple()),
            (noise::B_SIMPLE_AVG, avg),
            (noise::G_SQ, g_sq),
            (noise::TRACE, trace),
            (noise::BATCH_TOKENS, batch_tokens),
            (noise::RULE_TOKENS, minicpm_batch_rule(loss)),
            (noise::LOSS, loss),
            (noise::MICRO_BATCHES, self.leaves as f64),
            (noise::STEPS, n),
        ];
        self.window = (0.0, 0.0, 0.0);
        self.steps = 0;
        Some(Measurement {
            scalars: out.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            series: BTreeMap::new(),
        })
    }
}

/// Whether a run with settings `cfg` on `model` over `ranks` ranks takes its noise scale from
/// its steps' leaves: per-step probes and periodic ones on, a step split into leaves (the CPU
/// step), two or more of them.
pub(super) fn from_leaves(cfg: &RunConfig, model: &MiniCpm, ranks: usize) -> bool {
    let p = &cfg.probes;
    p.per_step
        && p.periodic()
        && model.steps_in_leaves()
        && global_leaves(cfg.batch, cfg.seq, ranks) >= 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::Solo;

    #[test]
    fn leaves_are_counted_over_every_ranks_tree() {
        assert_eq!(global_leaves(16, 128, 1), 4, "leaves of 4 sequences of 128");
        assert_eq!(
            global_leaves(16, 128, 2),
            4,
            "each rank's half is two leaves"
        );
        assert_eq!(global_leaves(2, 128, 1), 1, "one leaf: no noise scale");
        assert_eq!(global_leaves(2, 1024, 1), 2, "one sequence per leaf");
        assert_eq!(global_leaves(5, 512, 2), 5);
    }

    #[test]
    fn a_step_estimate_needs_two_leaves_and_solves_the_expected_norms() {
        let (g_sq, trace) = (0.5, 300.0);
        let e = |b: f64| g_sq + trace / b;
        let leaves: Vec<LeafNorm> = (0..4)
            .map(|_| LeafNorm {
                tokens: 512,
                sq_norm: e(512.0),
            })
            .collect();
        let (est, k) = step_estimate(&Solo, &leaves, e(2048.0).sqrt(), 2048.0)
            .unwrap()
            .unwrap();
        assert_eq!(k, 4);
        assert!((est.g_sq - g_sq).abs() < 1e-9 && (est.trace - trace).abs() < 1e-6);
        assert_eq!(
            step_estimate(&Solo, &leaves[..1], 1.0, 512.0).unwrap(),
            None
        );
    }

    #[test]
    fn a_window_reports_its_means_once_and_the_run_average_follows_the_newest() {
        let mut s = NoiseSums::default();
        assert_eq!(s.take_window(2048.0), None, "no step yet");
        s.add_step(
            NoiseScale {
                g_sq: 1.0,
                trace: 100.0,
            },
            3.0,
            4,
        );
        s.add_step(
            NoiseScale {
                g_sq: 3.0,
                trace: 500.0,
            },
            2.0,
            4,
        );
        let w = s.take_window(2048.0).unwrap().scalars;
        assert_eq!(w[noise::B_SIMPLE], 150.0, "mean tr Σ 300 over mean |G|² 2");
        assert_eq!(w[noise::STEPS], 2.0);
        assert_eq!(w[noise::LOSS], 2.5);
        assert_eq!(w[noise::MICRO_BATCHES], 4.0);
        assert_eq!(s.take_window(2048.0), None, "the window starts afresh");
        s.add_step(
            NoiseScale {
                g_sq: 2.0,
                trace: 0.0,
            },
            2.0,
            4,
        );
        let w = s.take_window(2048.0).unwrap().scalars;
        assert_eq!(w[noise::B_SIMPLE], 0.0);
        let (t, g) = (300.0 * 0.7, 2.0 * 0.7 + 2.0 * 0.3);
        assert_eq!(
            w[noise::B_SIMPLE_AVG],
            t / g,
            "tr Σ 300 → 0, |G|² 2 → 2, newest at 0.3"
        );
    }
}
