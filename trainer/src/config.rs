//! Model shapes (presets, μP knobs, parameter counts, the HF `config.json` form) and the
//! complete, validated configuration of a training run.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wsdscope_events::ModelSummary;

use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// The shape and μP settings of a MiniCPM-architecture decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    /// Embedding output multiplier (MiniCPM: 12).
    pub scale_emb: f64,
    /// Residual branches are scaled by `scale_depth / √layers` (MiniCPM: 1.4).
    pub scale_depth: f64,
    /// μP base width: width multiplier is `hidden / dim_model_base` (MiniCPM: 256).
    pub dim_model_base: usize,
    /// Std of the embedding init; hidden matrices get `init_std / √width_mult` (MiniCPM: 0.1).
    pub init_std: f64,
    pub rms_eps: f64,
    pub rope_theta: f64,
}

impl ModelConfig {
    /// A MiniCPM shape with the paper's μP settings.
    pub fn minicpm(
        hidden: usize,
        ffn: usize,
        heads: usize,
        kv_heads: usize,
        layers: usize,
        vocab: usize,
    ) -> Self {
        ModelConfig {
            hidden,
            layers,
            heads,
            kv_heads,
            ffn,
            vocab,
            scale_emb: 12.0,
            scale_depth: 1.4,
            dim_model_base: 256,
            init_std: 0.1,
            rms_eps: 1e-5,
            rope_theta: 10000.0,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// μP width multiplier `hidden / dim_model_base`.
    pub fn width_mult(&self) -> f64 {
        self.hidden as f64 / self.dim_model_base as f64
    }

    /// Residual branch scale `scale_depth / √L`.
    pub fn residual_scale(&self) -> f64 {
        self.scale_depth / (self.layers as f64).sqrt()
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("kv-heads", self.kv_heads),
            ("ffn", self.ffn),
            ("vocab", self.vocab),
            ("dim_model_base", self.dim_model_base),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::Config(format!(
                    "--{name} 0 is not allowed; it must be at least 1"
                )));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(Error::Config(format!(
                "--hidden {} is not divisible by --heads {}; hidden must be a multiple of heads",
                self.hidden, self.heads
            )));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(Error::Config(format!(
                "--kv-heads {} does not divide --heads {}; heads must be a multiple of kv-heads",
                self.kv_heads, self.heads
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Error::Config(format!(
                "head dim {} (hidden {} / heads {}) is odd; RoPE needs an even head dim",
                self.head_dim(),
                self.hidden,
                self.heads
            )));
        }
        if self.vocab > u32::MAX as usize {
            return Err(Error::Config(format!(
                "--vocab {} is too large; at most {}",
                self.vocab,
                u32::MAX
            )));
        }
        for (name, v) in [
            ("scale_emb", self.scale_emb),
            ("scale_depth", self.scale_depth),
            ("init_std", self.init_std),
            ("rms_eps", self.rms_eps),
            ("rope_theta", self.rope_theta),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Config(format!(
                    "{name} {v} is not allowed; it must be a finite number > 0"
                )));
            }
        }
        Ok(())
    }

    /// Parameters of one decoder layer: q, k, v, o, gate, up, down and two RMSNorm gains.
    pub fn params_per_layer(&self) -> u64 {
        let (h, f, hd) = (self.hidden as u64, self.ffn as u64, self.head_dim() as u64);
        let attn = h * hd * (2 * self.heads as u64 + 2 * self.kv_heads as u64);
        attn + 3 * h * f + 2 * h
    }

    /// Parameters outside the (tied) embedding: the count the MiniCPM paper reports.
    pub fn non_embedding_params(&self) -> u64 {
        self.layers as u64 * self.params_per_layer() + self.hidden as u64
    }

    pub fn embedding_params(&self) -> u64 {
        self.vocab as u64 * self.hidden as u64
    }

    /// All parameters, the tied head counted once.
    pub fn total_params(&self) -> u64 {
        self.non_embedding_params() + self.embedding_params()
    }

    /// Training FLOPs per token ≈ 6·(matmul params incl. the tied head) + 12·L·T·H (PaLM).
    pub fn flops_per_token(&self, seq: usize) -> f64 {
        let (h, f, hd) = (self.hidden as f64, self.ffn as f64, self.head_dim() as f64);
        let per_layer = h * hd * (2 * self.heads + 2 * self.kv_heads) as f64 + 3.0 * h * f;
        6.0 * (self.layers as f64 * per_layer + self.vocab as f64 * h)
            + 12.0 * (self.layers * seq) as f64 * h
    }

    pub fn summary(&self, preset: &str) -> ModelSummary {
        ModelSummary {
            preset: preset.to_string(),
            params: self.total_params(),
            non_embedding_params: self.non_embedding_params(),
            hidden: self.hidden,
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            ffn: self.ffn,
            vocab: self.vocab,
        }
    }

    /// The Hugging Face `config.json` of a MiniCPM model with this shape, so that our
    /// checkpoints load where MiniCPM weights load.
    pub fn hf_config_json(&self, max_seq: usize) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["MiniCPMForCausalLM"],
            "model_type": "minicpm",
            "hidden_size": self.hidden,
            "intermediate_size": self.ffn,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "num_hidden_layers": self.layers,
            "vocab_size": self.vocab,
            "max_position_embeddings": max_seq,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "scale_emb": self.scale_emb,
            "scale_depth": self.scale_depth,
            "dim_model_base": self.dim_model_base,
            "initializer_range": self.init_std,
            "tie_word_embeddings": true,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "pretraining_tp": 1,
            "use_cache": true,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32",
        })
    }

    /// Reads the shape back from an HF MiniCPM `config.json`.
    pub fn from_hf_config_json(v: &serde_json::Value) -> Option<Self> {
        let u = |k: &str| v.get(k)?.as_u64().map(|x| x as usize);
        let f = |k: &str| v.get(k)?.as_f64();
        Some(ModelConfig {
            hidden: u("hidden_size")?,
            layers: u("num_hidden_layers")?,
            heads: u("num_attention_heads")?,
            kv_heads: u("num_key_value_heads").or(u("num_attention_heads"))?,
            ffn: u("intermediate_size")?,
            vocab: u("vocab_size")?,
            scale_emb: f("scale_emb").unwrap_or(1.0),
            scale_depth: f("scale_depth").unwrap_or(1.0),
            dim_model_base: u("dim_model_base").unwrap_or(256),
            init_std: f("initializer_range").unwrap_or(0.1),
            rms_eps: f("rms_norm_eps").unwrap_or(1e-5),
            rope_theta: f("rope_theta").unwrap_or(10000.0),
        })
    }
}

/// The HF names and shapes of every parameter, in checkpoint order.
pub fn param_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, f, hd) = (cfg.hidden, cfg.ffn, cfg.head_dim());
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab, h])];
    for i in 0..cfg.layers {
        let p = format!("model.layers.{i}");
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (
                format!("{p}.self_attn.q_proj.weight"),
                vec![cfg.heads * hd, h],
            ),
            (
                format!("{p}.self_attn.k_proj.weight"),
                vec![cfg.kv_heads * hd, h],
            ),
            (
                format!("{p}.self_attn.v_proj.weight"),
                vec![cfg.kv_heads * hd, h],
            ),
            (
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, cfg.heads * hd],
            ),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![f, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![f, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, f]),
        ]);
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    out
}

/// The HF names of every parameter of a model with `layers` layers, in checkpoint order.
pub fn param_names(layers: usize) -> Vec<String> {
    let mut cfg = ModelConfig::minicpm(2, 2, 1, 1, layers, 2);
    cfg.dim_model_base = 2;
    param_shapes(&cfg).into_iter().map(|(n, _)| n).collect()
}

/// A named model shape with the training shape it is meant to run at.
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
    pub model: ModelConfig,
    pub seq: usize,
    pub batch: usize,
    pub steps: u64,
}

/// All presets: the CPU default, the paper's wind-tunnel shapes and the two released models.
pub fn presets() -> Vec<Preset> {
    let m = ModelConfig::minicpm;
    let wt = |name, about, h, f, nh, l| Preset {
        name,
        about,
        model: m(h, f, nh, nh, l, 4096),
        seq: 512,
        batch: 8,
        steps: 2000,
    };
    vec![
        Preset {
            name: "tiny",
            about: "the CPU default: a full WSD run in a few minutes",
            model: m(128, 384, 2, 1, 4, 512),
            seq: 128,
            batch: 16,
            steps: 600,
        },
        wt("wt-9m", "wind tunnel 9M (320/800/5/8)", 320, 800, 5, 8),
        wt(
            "wt-30m",
            "wind tunnel 30M (512/1280/8/12)",
            512,
            1280,
            8,
            12,
        ),
        wt(
            "wt-70m",
            "wind tunnel 70M (640/1600/10/14)",
            640,
            1600,
            10,
            14,
        ),
        wt(
            "wt-0.1b",
            "wind tunnel 0.1B (768/1920/12/16)",
            768,
            1920,
            12,
            16,
        ),
        wt(
            "wt-0.2b",
            "wind tunnel 0.2B (1024/2560/16/20)",
            1024,
            2560,
            16,
            20,
        ),
        wt(
            "wt-0.5b",
            "wind tunnel 0.5B (1344/3360/21/24)",
            1344,
            3360,
            21,
            24,
        ),
        Preset {
            name: "minicpm-1.2b",
            about: "MiniCPM-1.2B (1536/3840/24 heads, 8 KV heads/52 layers, vocab 73,440)",
            model: m(1536, 3840, 24, 8, 52, 73440),
            seq: 4096,
            batch: 1,
            steps: 1000,
        },
        Preset {
            name: "minicpm-2.4b",
            about: "MiniCPM-2.4B (2304/5760/36/36/40, vocab 122,753)",
            model: m(2304, 5760, 36, 36, 40, 122753),
            seq: 4096,
            batch: 1,
            steps: 1000,
        },
    ]
}

/// Looks a preset up by name; the error lists every allowed name.
pub fn preset(name: &str) -> Result<Preset> {
    let all = presets();
    let names: Vec<_> = all.iter().map(|p| p.name).collect();
    all.into_iter().find(|p| p.name == name).ok_or_else(|| {
        Error::Config(format!(
            "unknown preset {name:?}; allowed: {}",
            names.join(", ")
        ))
    })
}

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

/// Which run steps next when several are active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Every active run takes one step in turn.
    #[default]
    RoundRobin,
    /// The newest branch runs to its end first; the trunk waits while any branch is active.
    BranchesFirst,
    /// The trunk waits while branches run; the branches take steps in turn.
    TrunkPaused,
}

impl Policy {
    pub const NAMES: &'static str = "round-robin, branches-first, trunk-paused";

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "round-robin" => Ok(Policy::RoundRobin),
            "branches-first" => Ok(Policy::BranchesFirst),
            "trunk-paused" => Ok(Policy::TrunkPaused),
            _ => Err(Error::Config(format!(
                "--policy {s:?} is not allowed; use {}",
                Self::NAMES
            ))),
        }
    }
}

/// The arithmetic of the forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout (default).
    #[default]
    F32,
    /// Mixed precision: f32 master weights, gradients and AdamW moments; each weight cast to
    /// bf16 for the passes, activations in bf16 through the fused kernels (which accumulate in
    /// f32), the loss in f32. CUDA only.
    Bf16,
}

impl Precision {
    pub const NAMES: &'static str = "f32, bf16";

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(Error::Config(format!(
                "--precision {s:?} is not allowed; use {}",
                Self::NAMES
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
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
}

/// Run slots a session keeps for live forks beyond the trunk and its scripted forks.
pub const SPARE_RUNS: u32 = 31;
/// The most runs a session may hold (each slot costs about 8 KiB of file).
pub const MAX_RUNS: u32 = 4096;

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
    /// Micro-batches the step's batch is split into for the gradient noise scale (at most
    /// one per sequence; a batch of one sequence has no noise scale).
    pub micro_batches: usize,
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
            batch: 0,
            grid: 9,
            points: 17,
            span: 0.5,
            update_span: 8.0,
            power_iters: 10,
            micro_batches: 4,
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
        if self.micro_batches < 2 {
            return Err(Error::Config(format!(
                "probe micro-batches {} not allowed; the noise scale needs at least 2",
                self.micro_batches
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
        if self.precision == Precision::Bf16 && !self.device.starts_with("cuda:") {
            return Err(Error::Config(format!(
                "--precision bf16 is not allowed on --device {}: bf16 mixed precision needs a \
                 CUDA device (--device cuda:N); use --precision f32 on the CPU",
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
        if let Some(n) = self.max_runs {
            let need = 1 + self.forks.len() as u32;
            if n < need || n > MAX_RUNS {
                return Err(Error::Config(format!(
                    "--max-runs {n} is not allowed; it must be in {need}..={MAX_RUNS} (the trunk and its {} scripted forks need {need})",
                    self.forks.len()
                )));
            }
        }
        Ok(())
    }

    pub fn tokens_per_step(&self) -> u64 {
        (self.batch * self.seq) as u64
    }

    /// How many runs the session holds in all, the trunk's included: `--max-runs`, or the
    /// trunk, the scripted forks and [`SPARE_RUNS`] more for live forks.
    pub fn run_slots(&self) -> u32 {
        self.max_runs
            .unwrap_or_else(|| (1 + self.forks.len() as u32 + SPARE_RUNS).min(MAX_RUNS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_models_match_the_paper_non_embedding_counts() {
        assert_eq!(
            preset("minicpm-1.2b").unwrap().model.non_embedding_params(),
            1_247_442_432
        );
        assert_eq!(
            preset("minicpm-2.4b").unwrap().model.non_embedding_params(),
            2_442_057_984
        );
    }

    #[test]
    fn every_preset_is_valid_and_unknown_names_list_the_allowed() {
        for p in presets() {
            p.model
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
        let e = preset("huge").unwrap_err().to_string();
        assert!(
            e.contains("\"huge\"") && e.contains("tiny") && e.contains("minicpm-2.4b"),
            "{e}"
        );
    }

    #[test]
    fn shape_errors_name_the_values() {
        let mut m = ModelConfig::minicpm(100, 200, 3, 3, 2, 10);
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .contains("--hidden 100")
        );
        m = ModelConfig::minicpm(128, 200, 4, 3, 2, 10);
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .contains("--kv-heads 3")
        );
        m = ModelConfig::minicpm(96, 200, 32, 32, 2, 10);
        assert!(m.validate().unwrap_err().to_string().contains("odd"));
    }

    #[test]
    fn hf_config_round_trips() {
        let m = preset("minicpm-1.2b").unwrap().model;
        let back = ModelConfig::from_hf_config_json(&m.hf_config_json(4096)).unwrap();
        assert_eq!(back, m);
    }
}
