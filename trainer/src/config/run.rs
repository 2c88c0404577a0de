//! The complete configuration of a training run ([`RunConfig`]) and its parts that are not
//! shapes, choices or probes: the data, the optimiser, the scripted forks and the run slots;
//! and the validation of the whole.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::choices::{Policy, Precision};
use super::model::ModelConfig;
use super::probes::ProbeConfig;
use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// Where a run's tokens come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSpec {
    /// The embedded synthetic language (see `data::synthetic`).
    Synthetic,
    /// A UTF-8 text file, one token per byte.
    Text { path: PathBuf },
    /// A UTF-8 text file encoded by a Hugging Face `tokenizer.json`.
    Tokenized { path: PathBuf, tokenizer: PathBuf },
    /// Pre-tokenized little-endian unsigned integers, `width` bytes each (2 or 4).
    Tokens { path: PathBuf, width: u8 },
}

impl DataSpec {
    pub fn describe(&self) -> String {
        match self {
            DataSpec::Synthetic => "synthetic language".into(),
            DataSpec::Text { path } => format!("text {} (bytes)", path.display()),
            DataSpec::Tokenized { path, tokenizer } => {
                format!(
                    "text {} (tokenizer {})",
                    path.display(),
                    tokenizer.display()
                )
            }
            DataSpec::Tokens { path, width } => {
                format!("tokens {} (uint{} LE)", path.display(), 8 * width)
            }
        }
    }
}

/// Optimiser hyper-parameters (AdamW with μP groups).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 disables clipping.
    pub clip: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            clip: 1.0,
        }
    }
}

/// How long a decay branch runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForkLength {
    Steps(u64),
    /// A fraction of the fork step (0.1 at step 2000 decays over 200 steps).
    FractionOfStep(f64),
}

impl ForkLength {
    /// Decay steps of a branch forked after step `at` (at least one).
    pub fn steps_at(self, at: u64) -> u64 {
        match self {
            ForkLength::Steps(n) => n.max(1),
            ForkLength::FractionOfStep(f) => ((f * at as f64).round() as u64).max(1),
        }
    }
}

/// A decay branch a headless run forks from the trunk when the trunk completes step `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForkPlan {
    pub at: u64,
    pub length: ForkLength,
    pub shape: crate::schedule::DecayShape,
    pub floor: f64,
}

/// A run that starts at step 0 beside the trunk, from the trunk's initial weights (where the
/// shape is the same; else its own μP init) and on the trunk's batches, differing from it
/// only in what `label` names (`lr=0.003`, `schedule=cosine`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiblingPlan {
    pub label: String,
    pub config: RunConfig,
}

/// Everything that determines a training run. Two runs with equal configs on the same
/// device and thread count produce bit-identical losses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub preset: String,
    pub model: ModelConfig,
    pub data: DataSpec,
    /// Fraction of a token stream held out for validation (ignored for synthetic data,
    /// whose validation windows come from a disjoint seed domain).
    pub val_fraction: f64,
    pub steps: u64,
    pub batch: usize,
    pub seq: usize,
    pub seed: u64,
    pub schedule: Schedule,
    pub optim: OptimConfig,
    /// Evaluate every this many steps (0: only at the end of stable and at the end).
    pub eval_every: u64,
    /// Number of fixed validation batches.
    pub eval_batches: usize,
    pub device: String,
    pub threads: usize,
    pub checkpoint_every: u64,
    pub checkpoint_dir: Option<PathBuf>,
    /// Initial weights (HF names, safetensors) instead of the μP init.
    pub init_from: Option<PathBuf>,
    /// Decay branches forked from the trunk at given steps (headless scripting of forks).
    #[serde(default)]
    pub forks: Vec<ForkPlan>,
    /// How active runs share the engine.
    #[serde(default)]
    pub policy: Policy,
    /// Memory the runs together may hold, in MiB (default: half the memory available at start).
    #[serde(default)]
    pub memory_budget_mb: Option<u64>,
    /// Write a checkpoint of each branch when it ends (under `checkpoint_dir/run-N`).
    #[serde(default)]
    pub keep_branch_checkpoints: bool,
    /// Loss-landscape probes: the per-step tracking and the periodic measurements.
    #[serde(default)]
    pub probes: ProbeConfig,
    /// Run the model's ops as plain candle ops (the fused kernels' slow twins).
    #[serde(default)]
    pub reference_ops: bool,
    /// f32, or bf16 mixed precision (CUDA only).
    #[serde(default)]
    pub precision: Precision,
    /// Runs the session may hold in all, the trunk's included (the session file is created
    /// with a slot for each). `None`: the trunk, the scripted forks and [`SPARE_RUNS`] more.
    #[serde(default)]
    pub max_runs: Option<u32>,
    /// Runs beside the trunk from step 0 that differ from it in a few settings (a controlled
    /// comparison: same initial weights where the shape allows, same batches).
    #[serde(default)]
    pub siblings: Vec<SiblingPlan>,
}

/// Run slots a session keeps for live forks beyond the trunk and its scripted forks.
pub const SPARE_RUNS: u32 = 31;
/// The most runs a session may hold (each slot costs about 8 KiB of file).
pub const MAX_RUNS: u32 = 4096;

impl RunConfig {
    /// Checks every field against what is allowed; the message names the value.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.schedule.validate()?;
        if self.steps == 0 {
            return Err(Error::Config(
                "--steps 0 is not allowed; it must be at least 1".into(),
            ));
        }
        if self.batch == 0 {
            return Err(Error::Config(
                "--batch 0 is not allowed; it must be at least 1".into(),
            ));
        }
        if self.threads == 0 {
            return Err(Error::Config(
                "--threads 0 is not allowed; it must be at least 1".into(),
            ));
        }
        if self.seq < 2 {
            return Err(Error::Config(format!(
                "--seq {} is not allowed; it must be at least 2",
                self.seq
            )));
        }
        if self.schedule.total() != self.steps {
            return Err(Error::Config(format!(
                "the schedule spans {} steps but the run has {}",
                self.schedule.total(),
                self.steps
            )));
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 0.5) {
            return Err(Error::Config(format!(
                "validation fraction {} is not allowed; it must be in (0, 0.5)",
                self.val_fraction
            )));
        }
        if self.eval_batches == 0 {
            return Err(Error::Config(
                "--eval-batches 0 is not allowed; it must be at least 1".into(),
            ));
        }
        if self.precision == Precision::Bf16 && !self.on_cuda() {
            return Err(Error::Config(format!(
                "--precision bf16 is not allowed on --device {}: bf16 mixed precision needs a \
                 CUDA device (--device cuda or cuda:N); use --precision f32 on the CPU",
                self.device
            )));
        }
        let o = &self.optim;
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            return Err(Error::Config(format!(
                "AdamW betas ({}, {}) are not allowed; each must be in [0, 1)",
                o.beta1, o.beta2
            )));
        }
        let allowed = o.eps > 0.0 && o.weight_decay >= 0.0 && o.clip >= 0.0;
        if !allowed {
            return Err(Error::Config(format!(
                "AdamW eps {} / weight decay {} / clip {} not allowed; eps > 0, weight decay ≥ 0, clip ≥ 0",
                o.eps, o.weight_decay, o.clip
            )));
        }
        for f in &self.forks {
            if f.at == 0 || f.at >= self.steps {
                return Err(Error::Config(format!(
                    "--fork-at {} is not allowed; forks happen after a trunk step in 1..{}",
                    f.at, self.steps
                )));
            }
            if !(0.0..=1.0).contains(&f.floor)
                || (f.shape == crate::schedule::DecayShape::Exp && f.floor == 0.0)
            {
                return Err(Error::Config(format!(
                    "--branch-decay floor {} is not allowed; it is in [0, 1] (and > 0 for exp)",
                    f.floor
                )));
            }
            if let ForkLength::FractionOfStep(x) = f.length
                && !(x > 0.0 && x.is_finite())
            {
                return Err(Error::Config(format!(
                    "--branch-decay length {x} is not allowed; a fraction of the fork step must be > 0"
                )));
            }
        }
        if self.keep_branch_checkpoints && self.checkpoint_dir.is_none() {
            return Err(Error::Config(
                "--keep-branch-checkpoints needs --checkpoint-dir DIR to say where they go".into(),
            ));
        }
        self.probes.validate(self.batch, self.model.layers)?;
        if self.checkpoint_every > 0 && self.checkpoint_dir.is_none() {
            return Err(Error::Config(
                "--checkpoint-every needs --checkpoint-dir DIR to say where checkpoints go".into(),
            ));
        }
        for s in &self.siblings {
            self.check_sibling(s)?;
        }
        if let Some(n) = self.max_runs {
            let need = 1 + self.forks.len() as u32 + self.siblings.len() as u32;
            if n < need || n > MAX_RUNS {
                return Err(Error::Config(format!(
                    "--max-runs {n} is not allowed; it must be in {need}..={MAX_RUNS} (the trunk, its {} scripted forks and {} siblings need {need})",
                    self.forks.len(),
                    self.siblings.len()
                )));
            }
        }
        Ok(())
    }

    /// Whether `device` is a GPU: `cuda` (the GPU of this rank, see [`crate::engine::device`])
    /// or `cuda:N`.
    pub fn on_cuda(&self) -> bool {
        self.device == "cuda" || self.device.starts_with("cuda:")
    }

    /// A sibling shares the trunk's data, length and device; only what it names may differ.
    fn check_sibling(&self, s: &SiblingPlan) -> Result<()> {
        let c = &s.config;
        let shared = [
            ("steps", c.steps == self.steps),
            ("seq", c.seq == self.seq),
            (
                "data",
                c.data == self.data && c.val_fraction == self.val_fraction,
            ),
            ("vocab", c.model.vocab == self.model.vocab),
            ("eval-batches", c.eval_batches == self.eval_batches),
            ("device", c.device == self.device),
            ("precision", c.precision == self.precision),
        ];
        if let Some((what, _)) = shared.iter().find(|(_, same)| !same) {
            return Err(Error::Config(format!(
                "sibling {}: its {what} differs from the trunk's; siblings share the trunk's data, steps and device",
                s.label
            )));
        }
        if !c.siblings.is_empty() || !c.forks.is_empty() {
            return Err(Error::Config(format!(
                "sibling {}: a sibling has no siblings or scripted forks of its own",
                s.label
            )));
        }
        c.validate()
            .map_err(|e| Error::Config(format!("sibling {}: {e}", s.label)))
    }

    pub fn tokens_per_step(&self) -> u64 {
        (self.batch * self.seq) as u64
    }

    /// How many runs the session holds in all, the trunk's included: `--max-runs`, or the
    /// trunk, the scripted forks, the siblings and [`SPARE_RUNS`] more for live forks.
    pub fn run_slots(&self) -> u32 {
        self.max_runs.unwrap_or_else(|| {
            (1 + self.forks.len() as u32 + self.siblings.len() as u32 + SPARE_RUNS).min(MAX_RUNS)
        })
    }
}
