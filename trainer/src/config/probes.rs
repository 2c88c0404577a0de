//! What the loss-landscape probes measure, how much training time the periodic ones may
//! take, and the checks of those settings.

use super::model::param_names;
use crate::error::{Error, Result};

/// What the probes measure and how much time the periodic ones may take.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProbeConfig {
    /// Track the per-step geometry (cos, D1, D2, K) and max |Δθ| (keeps the last gradient and
    /// update: 8 bytes per parameter).
    pub per_step: bool,
    /// Run a periodic probe after every this many steps of a run (0: as often as the budget
    /// allows).
    pub every: u64,
    /// Share of training time that periodic probes may take, in percent. `None`: 5 when
    /// `every` is 0, no limit when `every` is set. 0 turns periodic probes off.
    pub budget_pct: Option<f64>,
    /// Points through the trunk's decay where the planner puts periodic probes, its last
    /// step included (when `every` is 0; see `engine/probe_plan.rs`).
    pub decay_points: u64,
    /// Sequences of the step's batch that sharpness, slices and interpolation use
    /// (0: min(batch, 4)).
    pub batch: usize,
    /// Points per side of the 2-D slice grid.
    pub grid: usize,
    /// Points of each 1-D slice and of the interpolation.
    pub points: usize,
    /// Half-width of the random-direction slices, in filter-normalised units.
    pub span: f64,
    /// Half-width of the update-direction slice, in multiples of the last update.
    pub update_span: f64,
    /// Most Hessian-vector products per Lanczos run (two runs per sharpness probe: H and P⁻¹H).
    pub power_iters: usize,
    /// Each Lanczos run stops once its top Ritz value's residual is at most this share of
    /// the value (an eigenvalue then lies that close), or after `power_iters` products.
    pub sharpness_tol: f64,
    /// Micro-batches the step's batch is split into for the gradient noise scale (at most
    /// one per sequence; a batch of one sequence has no noise scale), where it is a probe of
    /// its own (runs whose step is one pass: CUDA, the reference ops).
    pub micro_batches: usize,
    /// Training steps each noise-scale report averages where the CPU step's leaves give it
    /// (`engine/step_noise.rs`); a report also ends at every phase anchor of the planner.
    pub noise_window: u64,
    /// Tensors whose max |Δθ| every step reports (HF names; empty: the embedding, the first
    /// layer's q_proj and the last layer's down_proj).
    pub track: Vec<String>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            per_step: true,
            every: 0,
            budget_pct: None,
            decay_points: 3,
            batch: 0,
            grid: 7,
            points: 9,
            span: 0.5,
            update_span: 8.0,
            power_iters: 20,
            sharpness_tol: 0.05,
            micro_batches: 4,
            noise_window: 10,
            track: Vec::new(),
        }
    }
}

impl ProbeConfig {
    /// The effective budget in percent of training time (`None`: unlimited).
    pub fn budget(&self) -> Option<f64> {
        match self.budget_pct {
            Some(b) => Some(b),
            None if self.every == 0 => Some(5.0),
            None => None,
        }
    }

    /// Whether periodic probes run at all.
    pub fn periodic(&self) -> bool {
        self.budget() != Some(0.0)
    }

    /// Sequences the probes use for a run with `batch` sequences per step.
    pub fn batch_for(&self, batch: usize) -> usize {
        if self.batch == 0 {
            batch.min(4)
        } else {
            self.batch.min(batch)
        }
    }

    /// The tracked tensors of a model with `layers` layers.
    pub fn tracked(&self, layers: usize) -> Vec<String> {
        if !self.track.is_empty() {
            return self.track.clone();
        }
        vec![
            "model.embed_tokens.weight".into(),
            "model.layers.0.self_attn.q_proj.weight".into(),
            format!(
                "model.layers.{}.mlp.down_proj.weight",
                layers.saturating_sub(1)
            ),
        ]
    }

    pub fn validate(&self, batch: usize, layers: usize) -> Result<()> {
        if let Some(b) = self.budget_pct
            && !(0.0..=100.0).contains(&b)
        {
            return Err(Error::Config(format!(
                "--probe-budget {b} is not allowed; it is a percentage in [0, 100]"
            )));
        }
        if !(1..=100).contains(&self.decay_points) {
            return Err(Error::Config(format!(
                "--probe-decay-points {} is not allowed; it must be in 1..=100 (the decay's last step is one)",
                self.decay_points
            )));
        }
        if self.batch > batch {
            return Err(Error::Config(format!(
                "--probe-batch {} is not allowed; it is at most the batch ({batch} sequences)",
                self.batch
            )));
        }
        if !(3..=65).contains(&self.grid) {
            return Err(Error::Config(format!(
                "--probe-grid {} is not allowed; it must be in 3..=65",
                self.grid
            )));
        }
        if !(3..=257).contains(&self.points) {
            return Err(Error::Config(format!(
                "probe points {} not allowed; it must be in 3..=257",
                self.points
            )));
        }
        let spans_ok = self.span > 0.0
            && self.span.is_finite()
            && self.update_span > 0.0
            && self.update_span.is_finite();
        if !spans_ok {
            return Err(Error::Config(format!(
                "probe spans {} / {} are not allowed; both must be finite and > 0",
                self.span, self.update_span
            )));
        }
        if self.power_iters < 2 {
            return Err(Error::Config(format!(
                "probe power iterations {} not allowed; at least 2",
                self.power_iters
            )));
        }
        if !(self.sharpness_tol > 0.0 && self.sharpness_tol < 1.0) {
            return Err(Error::Config(format!(
                "sharpness tolerance {} not allowed; it must be in (0, 1)",
                self.sharpness_tol
            )));
        }
        if self.micro_batches < 2 {
            return Err(Error::Config(format!(
                "probe micro-batches {} not allowed; the noise scale needs at least 2",
                self.micro_batches
            )));
        }
        if !(1..=100_000).contains(&self.noise_window) {
            return Err(Error::Config(format!(
                "--probe-noise-window {} is not allowed; it must be in 1..=100000 steps",
                self.noise_window
            )));
        }
        let names: Vec<String> = param_names(layers);
        for t in &self.track {
            if !names.contains(t) {
                return Err(Error::Config(format!(
                    "--track {t:?} is not a tensor of this model; e.g. {}, {}",
                    names[0], names[1]
                )));
            }
        }
        Ok(())
    }
}
