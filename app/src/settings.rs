//! Run settings as a user gives them — flags, or a TOML file with the same keys — and their
//! validation into a trainer `RunConfig`. Every error names the value and what is allowed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use wsdscope_trainer::{
    DataSpec, DecayShape, ForkLength, ForkPlan, OptimConfig, Policy, Precision, ProbeConfig,
    RunConfig, Schedule, preset,
};

/// Defaults a run takes when neither flags nor the file set a value.
pub const DEFAULT_PRESET: &str = "tiny";
pub const DEFAULT_LR: f64 = 0.01;
pub const DEFAULT_WARMUP: f64 = 0.1;
pub const DEFAULT_DECAY: &str = "exp:0.1:0.1";
pub const DEFAULT_EVAL_BATCHES: usize = 4;
pub const DEFAULT_VAL_FRACTION: f64 = 0.1;

/// Every setting of a run. On the command line each is a flag (`--kv-heads 2`); in a config
/// file each is a key with the same name (`kv-heads = 2`).
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Model preset: tiny (default), wt-9m … wt-0.5b, minicpm-1.2b, minicpm-2.4b.
    #[arg(long)]
    pub preset: Option<String>,
    /// Training steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Sequences per step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per sequence.
    #[arg(long)]
    pub seq: Option<usize>,
    /// Peak learning rate (hidden matrices get lr / (hidden/256), μP).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Warmup length as a fraction of the steps, in [0, 1).
    #[arg(long, value_name = "F")]
    pub warmup: Option<f64>,
    /// The trunk's decay: SHAPE:FRACTION[:FLOOR], shape exp|linear|cosine|1-sqrt, FRACTION of
    /// the steps in (0, 1], FLOOR the final lr as a fraction of the peak (default 0.1).
    #[arg(long, value_name = "SHAPE:FRACTION[:FLOOR]")]
    pub decay: Option<String>,
    /// wsd (default), cosine or constant.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Seeds the initial weights and the synthetic data.
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu (default) or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Training data: a UTF-8 text file (bytes, or tokens with --tokenizer) or a .u16/.u32
    /// token file. Default: the embedded synthetic language.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// How to read --data: auto (by extension: .u16/.bin → u16, .u32 → u32, else text),
    /// text, u16, u32.
    #[arg(long, value_name = "FORMAT")]
    pub data_format: Option<String>,
    /// A Hugging Face tokenizer.json to encode a text --data file with.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long)]
    pub kv_heads: Option<usize>,
    #[arg(long)]
    pub ffn: Option<usize>,
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Evaluate every N steps (default: steps/20); also at the end of stable and at the end.
    #[arg(long, value_name = "N")]
    pub eval_every: Option<u64>,
    /// Number of fixed validation batches (default 4).
    #[arg(long, value_name = "N")]
    pub eval_batches: Option<usize>,
    /// Held-out fraction of a token stream (default 0.1).
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// AdamW decoupled weight decay (default 0.1).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip, 0 for none (default 1.0).
    #[arg(long)]
    pub clip: Option<f64>,
    /// Write a checkpoint every N steps (and at the end) into --checkpoint-dir.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Start from these weights (safetensors, HF MiniCPM names) instead of the μP init.
    #[arg(long, value_name = "FILE")]
    pub init_from: Option<PathBuf>,
    /// Fork a decay branch from the trunk after each of these steps, e.g. 2000,4000.
    #[arg(long, value_name = "S1,S2,…", value_delimiter = ',')]
    pub fork_at: Option<Vec<u64>>,
    /// The decay of --fork-at branches: SHAPE:LENGTH[:FLOOR]; LENGTH in steps (an integer ≥ 1)
    /// or a fraction of the fork step (e.g. 0.1); FLOOR default 0.1. Default: exp:0.1.
    #[arg(long, value_name = "SHAPE:LENGTH[:FLOOR]")]
    pub branch_decay: Option<String>,
    /// How runs share the engine: round-robin (default), branches-first, trunk-paused.
    #[arg(long)]
    pub policy: Option<String>,
    /// Memory all runs together may hold, in MiB (default: half of what is available).
    #[arg(long, value_name = "MB")]
    pub memory_budget: Option<u64>,
    /// Keep each branch's final checkpoint (under --checkpoint-dir/run-N).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(default)]
    pub keep_branch_checkpoints: Option<bool>,
    /// Run a periodic probe (sharpness, noise scale, 1-D slices, 2-D slice, in turn) after
    /// every N steps of each run; 0 (default): as often as --probe-budget allows.
    #[arg(long, value_name = "N")]
    pub probe_every: Option<u64>,
    /// Share of training time periodic probes may take, in percent (default 5 without
    /// --probe-every, unlimited with it; 0 turns periodic probes off).
    #[arg(long, value_name = "PCT")]
    pub probe_budget: Option<f64>,
    /// Sequences of the step's batch that sharpness, slices and interpolation use
    /// (default min(batch, 4)).
    #[arg(long, value_name = "N")]
    pub probe_batch: Option<usize>,
    /// Points per side of the 2-D loss slice (default 9, i.e. 81 losses).
    #[arg(long, value_name = "N")]
    pub probe_grid: Option<usize>,
    /// Tensors whose max |Δθ| each step reports (HF names, comma-separated; default: the
    /// embedding, layer 0's q_proj and the last layer's down_proj).
    #[arg(long, value_name = "NAME,…", value_delimiter = ',')]
    pub track: Option<Vec<String>>,
    /// Run the model's ops as plain candle ops instead of the fused kernels (for checking
    /// the kernels; several times slower).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(default)]
    pub reference_ops: Option<bool>,
    /// Arithmetic: f32 (default), or bf16 mixed precision — f32 master weights and AdamW
    /// moments, bf16 forward and backward passes, f32 loss. bf16 needs --device cuda:N.
    #[arg(long, value_name = "f32|bf16")]
    pub precision: Option<String>,
    /// Runs the session may hold in all, the trunk's included (default: the trunk, the
    /// --fork-at branches and 31 more for live forks); the session file keeps a slot for each.
    #[arg(long, value_name = "N")]
    pub max_runs: Option<u32>,
}

/// `a.or(b)` for every field: values in `self` win over `base`.
macro_rules! overlay {
    ($self:ident, $base:ident, $($f:ident),*) => {
        Settings { $($f: $self.$f.or($base.$f)),* }
    };
}

/// The settings that decide what a run computes (as opposed to where and how fast).
const SHAPING: &[&str] = &[
    "preset",
    "steps",
    "batch",
    "seq",
    "lr",
    "warmup",
    "decay",
    "schedule",
    "seed",
    "data",
    "data-format",
    "tokenizer",
    "hidden",
    "layers",
    "heads",
    "kv-heads",
    "ffn",
    "vocab",
    "eval-every",
    "eval-batches",
    "val-fraction",
    "weight-decay",
    "clip",
    "init-from",
];

impl Settings {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config file {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))
    }

    /// These settings, with unset values taken from `base`.
    pub fn over(self, base: Settings) -> Settings {
        overlay!(
            self,
            base,
            preset,
            steps,
            batch,
            seq,
            lr,
            warmup,
            decay,
            schedule,
            seed,
            device,
            threads,
            data,
            data_format,
            tokenizer,
            hidden,
            layers,
            heads,
            kv_heads,
            ffn,
            vocab,
            eval_every,
            eval_batches,
            val_fraction,
            weight_decay,
            clip,
            checkpoint_every,
            checkpoint_dir,
            init_from,
            fork_at,
            branch_decay,
            policy,
            memory_budget,
            keep_branch_checkpoints,
            probe_every,
            probe_budget,
            probe_batch,
            probe_grid,
            track,
            reference_ops,
            precision,
            max_runs
        )
    }

    /// Names of the settings given that change what a run computes.
    pub fn shaping_given(&self) -> Vec<&'static str> {
        let v = serde_json::json!({
            "preset": self.preset, "steps": self.steps, "batch": self.batch, "seq": self.seq,
            "lr": self.lr, "warmup": self.warmup, "decay": self.decay, "schedule": self.schedule,
            "seed": self.seed, "data": self.data, "data-format": self.data_format,
            "tokenizer": self.tokenizer, "hidden": self.hidden, "layers": self.layers,
            "heads": self.heads, "kv-heads": self.kv_heads, "ffn": self.ffn, "vocab": self.vocab,
            "eval-every": self.eval_every, "eval-batches": self.eval_batches,
            "val-fraction": self.val_fraction, "weight-decay": self.weight_decay, "clip": self.clip,
            "init-from": self.init_from,
        });
        SHAPING
            .iter()
            .copied()
            .filter(|k| !v[*k].is_null())
            .collect()
    }

    /// Validates the settings into a run configuration.
    pub fn to_run_config(&self) -> Result<RunConfig> {
        let preset_name = self
            .preset
            .clone()
            .unwrap_or_else(|| DEFAULT_PRESET.to_string());
        let p = preset(&preset_name)?;
        let mut model = p.model.clone();
        let shape = [
            (&mut model.hidden, self.hidden),
            (&mut model.layers, self.layers),
            (&mut model.heads, self.heads),
            (&mut model.kv_heads, self.kv_heads),
            (&mut model.ffn, self.ffn),
        ];
        for (slot, v) in shape {
            if let Some(v) = v {
                *slot = v;
            }
        }
        // Unless --kv-heads is given, a --heads override keeps the preset's grouping valid.
        if self.heads.is_some() && self.kv_heads.is_none() && model.heads % model.kv_heads != 0 {
            model.kv_heads = model.heads;
        }
        let data = self.data_spec()?;
        model.vocab = match (self.vocab, &data) {
            (Some(v), _) => v,
            (None, DataSpec::Text { .. }) => 256,
            (None, DataSpec::Tokenized { tokenizer, .. }) => {
                wsdscope_trainer::data::tokenizer::load(tokenizer)?.get_vocab_size(true)
            }
            (None, _) => p.model.vocab,
        };
        let steps = self.steps.unwrap_or(p.steps);
        if steps == 0 {
            bail!("--steps 0 is not allowed; it must be at least 1");
        }
        let schedule = self.schedule(steps)?;
        let cfg = RunConfig {
            preset: preset_name,
            model,
            data,
            val_fraction: self.val_fraction.unwrap_or(DEFAULT_VAL_FRACTION),
            steps,
            batch: self.batch.unwrap_or(p.batch),
            seq: self.seq.unwrap_or(p.seq),
            seed: self.seed.unwrap_or(0),
            schedule,
            optim: OptimConfig {
                weight_decay: self
                    .weight_decay
                    .unwrap_or(OptimConfig::default().weight_decay),
                clip: self.clip.unwrap_or(OptimConfig::default().clip),
                ..OptimConfig::default()
            },
            eval_every: self.eval_every.unwrap_or((steps / 20).max(1)),
            eval_batches: self.eval_batches.unwrap_or(DEFAULT_EVAL_BATCHES),
            device: self.device.clone().unwrap_or_else(|| "cpu".into()),
            threads: self.threads.unwrap_or_else(default_threads),
            checkpoint_every: self.checkpoint_every.unwrap_or(0),
            checkpoint_dir: self.checkpoint_dir.clone(),
            init_from: self.init_from.clone(),
            forks: self.fork_plans()?,
            policy: self.policy_or_default()?,
            memory_budget_mb: self.memory_budget,
            keep_branch_checkpoints: self.keep_branch_checkpoints.unwrap_or(false),
            probes: ProbeConfig {
                every: self.probe_every.unwrap_or(0),
                budget_pct: self.probe_budget,
                batch: self.probe_batch.unwrap_or(0),
                grid: self.probe_grid.unwrap_or(ProbeConfig::default().grid),
                track: self.track.clone().unwrap_or_default(),
                ..ProbeConfig::default()
            },
            reference_ops: self.reference_ops.unwrap_or(false),
            precision: match &self.precision {
                Some(p) => Precision::parse(p)?,
                None => Precision::default(),
            },
            max_runs: self.max_runs,
        };
        cfg.validate()?;
        wsdscope_trainer::engine::device(&cfg.device)?;
        if let Some(p) = &cfg.init_from
            && !p.is_file()
        {
            bail!("--init-from {}: no such file", p.display());
        }
        Ok(cfg)
    }

    pub fn policy_or_default(&self) -> Result<Policy> {
        Ok(match &self.policy {
            Some(p) => Policy::parse(p)?,
            None => Policy::default(),
        })
    }

    pub fn fork_plans(&self) -> Result<Vec<ForkPlan>> {
        let Some(at) = &self.fork_at else {
            if self.branch_decay.is_some() {
                bail!("--branch-decay needs --fork-at S1,S2,… to say where branches start");
            }
            return Ok(Vec::new());
        };
        let (shape, length, floor) =
            parse_branch_decay(self.branch_decay.as_deref().unwrap_or("exp:0.1"))?;
        Ok(at
            .iter()
            .map(|&at| ForkPlan {
                at,
                length,
                shape,
                floor,
            })
            .collect())
    }

    fn data_spec(&self) -> Result<DataSpec> {
        let Some(path) = self.data.clone() else {
            if self.tokenizer.is_some() {
                bail!("--tokenizer needs --data FILE (a text file to encode)");
            }
            return Ok(DataSpec::Synthetic);
        };
        if !path.exists() {
            bail!("--data {}: no such file", path.display());
        }
        if path.is_dir() {
            bail!(
                "--data {}: is a directory; give a text or token file",
                path.display()
            );
        }
        let format = self.data_format.as_deref().unwrap_or("auto");
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let format = match format {
            "auto" => match ext {
                "u16" | "bin" => "u16",
                "u32" => "u32",
                _ => "text",
            },
            "text" | "u16" | "u32" => format,
            other => bail!("--data-format {other:?} is not allowed; use auto, text, u16 or u32"),
        };
        Ok(match (format, self.tokenizer.clone()) {
            ("text", None) => DataSpec::Text { path },
            ("text", Some(tokenizer)) => {
                if !tokenizer.is_file() {
                    bail!("--tokenizer {}: no such file", tokenizer.display());
                }
                DataSpec::Tokenized { path, tokenizer }
            }
            (_, Some(_)) => bail!(
                "--tokenizer applies to text data, but --data {} is read as {format} tokens",
                path.display()
            ),
            ("u16", None) => DataSpec::Tokens { path, width: 2 },
            _ => DataSpec::Tokens { path, width: 4 },
        })
    }

    fn schedule(&self, steps: u64) -> Result<Schedule> {
        let peak = self.lr.unwrap_or(DEFAULT_LR);
        if !(peak.is_finite() && peak > 0.0) {
            bail!("--lr {peak} is not allowed; it must be a finite number > 0");
        }
        let warmup_f = self.warmup.unwrap_or(DEFAULT_WARMUP);
        if !(0.0..1.0).contains(&warmup_f) {
            bail!("--warmup {warmup_f} is not allowed; it is a fraction of the steps in [0, 1)");
        }
        let warmup = (warmup_f * steps as f64).round() as u64;
        let (shape, decay_steps, floor) =
            parse_decay(self.decay.as_deref().unwrap_or(DEFAULT_DECAY), steps)?;
        match self.schedule.as_deref().unwrap_or("wsd") {
            "wsd" => Ok(Schedule::wsd(
                peak,
                steps,
                warmup,
                decay_steps,
                shape,
                floor,
            )?),
            "cosine" => {
                let s = Schedule::Cosine {
                    peak,
                    warmup,
                    total: steps,
                    floor,
                };
                s.validate()?;
                Ok(s)
            }
            "constant" => {
                if self.decay.is_some() {
                    bail!("--decay does not apply to --schedule constant (it never decays)");
                }
                Ok(Schedule::Constant {
                    peak,
                    warmup,
                    total: steps,
                })
            }
            other => bail!("--schedule {other:?} is not allowed; use wsd, cosine or constant"),
        }
    }
}

/// Parses `SHAPE:FRACTION[:FLOOR]` into (shape, decay steps, floor).
pub fn parse_decay(spec: &str, steps: u64) -> Result<(DecayShape, u64, f64)> {
    let parts: Vec<&str> = spec.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        bail!(
            "--decay {spec:?} is not allowed; use SHAPE:FRACTION[:FLOOR], e.g. exp:0.1 or linear:0.2:0"
        );
    }
    let shape: DecayShape = parts[0].parse()?;
    let fraction: f64 = parts[1].parse().map_err(|_| {
        anyhow::anyhow!("--decay {spec:?}: FRACTION {:?} is not a number", parts[1])
    })?;
    if !(fraction > 0.0 && fraction <= 1.0) {
        bail!(
            "--decay {spec:?}: FRACTION {fraction} is not allowed; it is a fraction of --steps in (0, 1]"
        );
    }
    let floor = match parts.get(2) {
        Some(f) => f
            .parse::<f64>()
            .map_err(|_| anyhow::anyhow!("--decay {spec:?}: FLOOR {f:?} is not a number"))?,
        None => 0.1,
    };
    if !(0.0..=1.0).contains(&floor) {
        bail!(
            "--decay {spec:?}: FLOOR {floor} is not allowed; it is a fraction of the peak lr in [0, 1]"
        );
    }
    // At least one decay step, so a short run still has the shape it asks for.
    let decay_steps = ((fraction * steps as f64).round() as u64).max(1);
    Ok((shape, decay_steps, floor))
}

/// Parses a branch decay `SHAPE:LENGTH[:FLOOR]`: LENGTH is steps when it is an integer ≥ 1,
/// else a fraction of the fork step in (0, 1).
pub fn parse_branch_decay(spec: &str) -> Result<(DecayShape, ForkLength, f64)> {
    let parts: Vec<&str> = spec.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        bail!(
            "--branch-decay {spec:?} is not allowed; use SHAPE:LENGTH[:FLOOR], e.g. exp:0.1 or cosine:200:0"
        );
    }
    let shape: DecayShape = parts[0].parse()?;
    let length = match parts[1].parse::<u64>() {
        Ok(0) => bail!("--branch-decay {spec:?}: LENGTH 0 is not allowed"),
        Ok(n) => ForkLength::Steps(n),
        Err(_) => match parts[1].parse::<f64>() {
            Ok(f) if f > 0.0 && f < 1.0 => ForkLength::FractionOfStep(f),
            _ => bail!(
                "--branch-decay {spec:?}: LENGTH {:?} is not allowed; give steps (an integer ≥ 1) or a fraction of the fork step in (0, 1)",
                parts[1]
            ),
        },
    };
    let floor = match parts.get(2) {
        Some(f) => f
            .parse::<f64>()
            .map_err(|_| anyhow::anyhow!("--branch-decay {spec:?}: FLOOR {f:?} is not a number"))?,
        None => 0.1,
    };
    if !(0.0..=1.0).contains(&floor) {
        bail!(
            "--branch-decay {spec:?}: FLOOR {floor} is not allowed; it is a fraction of the lr in [0, 1]"
        );
    }
    Ok((shape, length, floor))
}

/// All cores the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The run configuration a `record` (or later `run`) invocation asks for.
pub fn resolve(cli: Settings, config_file: Option<&Path>) -> Result<RunConfig> {
    let settings = match config_file {
        Some(p) => cli.over(Settings::from_file(p)?),
        None => cli,
    };
    settings.to_run_config()
}

/// On `--resume`: every setting that shapes what the run computes (a flag, or a key of
/// `--config`) must agree with the saved run's value, so re-running the original command with
/// `--resume DIR` appended works. One line names each that differs, with both values.
pub fn check_resume(given: &Settings, saved: &RunConfig) -> Result<()> {
    let differ: Vec<String> = given
        .shaping_given()
        .into_iter()
        .filter_map(|key| resume_mismatch(key, given, saved))
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    bail!(
        "{}; drop {} (a resumed run continues the saved one unchanged; only --threads, --device, checkpoint, fork, policy, memory and probe flags may change) or start a new run without --resume",
        differ.join(", "),
        if differ.len() == 1 { "it" } else { "them" }
    )
}

/// `Some("--KEY GIVEN differs from the saved run's SAVED")` when a shaping setting given on
/// `--resume` does not reproduce the saved run's value.
fn resume_mismatch(key: &str, given: &Settings, saved: &RunConfig) -> Option<String> {
    fn num<T: PartialEq + std::fmt::Display>(g: Option<T>, s: T) -> Option<(String, String)> {
        let g = g?;
        (g != s).then(|| (g.to_string(), s.to_string()))
    }
    let path = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let m = &saved.model;
    let steps = saved.steps;
    let (g, s) = match key {
        "preset" => num(given.preset.clone(), saved.preset.clone())?,
        "steps" => num(given.steps, steps)?,
        "batch" => num(given.batch, saved.batch)?,
        "seq" => num(given.seq, saved.seq)?,
        "seed" => num(given.seed, saved.seed)?,
        "lr" => num(given.lr, saved.schedule.peak())?,
        "hidden" => num(given.hidden, m.hidden)?,
        "layers" => num(given.layers, m.layers)?,
        "heads" => num(given.heads, m.heads)?,
        "kv-heads" => num(given.kv_heads, m.kv_heads)?,
        "ffn" => num(given.ffn, m.ffn)?,
        "vocab" => num(given.vocab, m.vocab)?,
        "eval-every" => num(given.eval_every, saved.eval_every)?,
        "eval-batches" => num(given.eval_batches, saved.eval_batches)?,
        "val-fraction" => num(given.val_fraction, saved.val_fraction)?,
        "weight-decay" => num(given.weight_decay, saved.optim.weight_decay)?,
        "clip" => num(given.clip, saved.optim.clip)?,
        "warmup" => {
            let f = given.warmup?;
            let w = (f * steps as f64).round() as u64;
            let have = saved.schedule.warmup();
            (w != have).then(|| (format!("{f} ({w} steps)"), format!("{have} warmup steps")))?
        }
        "schedule" => num(given.schedule.clone(), saved.schedule.kind().to_string())?,
        "decay" => {
            let spec = given.decay.as_deref()?;
            let same = match (parse_decay(spec, steps), &saved.schedule) {
                (
                    Ok((shape, d, floor)),
                    Schedule::Wsd {
                        shape: s,
                        decay_steps,
                        floor: f,
                        ..
                    },
                ) => shape == *s && d == *decay_steps && floor == *f,
                (Ok((_, _, floor)), Schedule::Cosine { floor: f, .. }) => floor == *f,
                _ => false,
            };
            (!same).then(|| (format!("{spec:?}"), saved.schedule.describe()))?
        }
        "data" | "data-format" | "tokenizer" => {
            let (d, f, t) = match &saved.data {
                DataSpec::Synthetic => (None, None, None),
                DataSpec::Text { path } => (Some(path.clone()), Some("text"), None),
                DataSpec::Tokenized { path, tokenizer } => {
                    (Some(path.clone()), Some("text"), Some(tokenizer.clone()))
                }
                DataSpec::Tokens { path, width: 2 } => (Some(path.clone()), Some("u16"), None),
                DataSpec::Tokens { path, .. } => (Some(path.clone()), Some("u32"), None),
            };
            let merged = Settings {
                data: given.data.clone().or(d),
                data_format: given
                    .data_format
                    .clone()
                    .or(f.map(String::from))
                    .filter(|_| given.data.is_none() || given.data_format.is_some()),
                tokenizer: given.tokenizer.clone().or(t),
                ..Settings::default()
            };
            let same = match (merged.data_spec(), &saved.data) {
                (Ok(DataSpec::Synthetic), DataSpec::Synthetic) => true,
                (Ok(DataSpec::Text { path: a }), DataSpec::Text { path: b }) => path(&a) == path(b),
                (
                    Ok(DataSpec::Tokenized {
                        path: a,
                        tokenizer: ta,
                    }),
                    DataSpec::Tokenized {
                        path: b,
                        tokenizer: tb,
                    },
                ) => path(&a) == path(b) && path(&ta) == path(tb),
                (
                    Ok(DataSpec::Tokens { path: a, width: wa }),
                    DataSpec::Tokens { path: b, width: wb },
                ) => path(&a) == path(b) && wa == *wb,
                _ => false,
            };
            let value = match key {
                "data" => given.data.as_ref().map(|p| p.display().to_string()),
                "data-format" => given.data_format.clone(),
                _ => given.tokenizer.as_ref().map(|p| p.display().to_string()),
            }?;
            (!same).then(|| (value, saved.data.describe()))?
        }
        "init-from" => {
            let g = given.init_from.as_deref()?;
            let same = saved
                .init_from
                .as_deref()
                .is_some_and(|s| path(s) == path(g));
            (!same).then(|| {
                (
                    g.display().to_string(),
                    saved
                        .init_from
                        .as_ref()
                        .map_or("none (μP init)".into(), |p| p.display().to_string()),
                )
            })?
        }
        _ => return None,
    };
    Some(format!("--{key} {g} differs from the saved run's {s}"))
}

/// On `--resume`: applies the settings that may change without changing what the run
/// computes (where and how fast it runs, checkpoints, new forks, probes, the session's run
/// slots) to the saved configuration, and validates the result.
pub fn apply_on_resume(given: &Settings, cfg: &mut RunConfig) -> Result<()> {
    if let Some(t) = given.threads {
        cfg.threads = t;
    }
    if let Some(d) = &given.device {
        cfg.device = d.clone();
    }
    if let Some(n) = given.checkpoint_every {
        cfg.checkpoint_every = n;
    }
    if given.checkpoint_dir.is_some() {
        cfg.checkpoint_dir.clone_from(&given.checkpoint_dir);
    }
    // Forks do not change the trunk's losses, so a resumed run may script new ones.
    if given.fork_at.is_some() {
        cfg.forks = given.fork_plans()?;
    } else if given.branch_decay.is_some() {
        bail!("--branch-decay needs --fork-at S1,S2,… to say where branches start");
    }
    if given.policy.is_some() {
        cfg.policy = given.policy_or_default()?;
    }
    if given.memory_budget.is_some() {
        cfg.memory_budget_mb = given.memory_budget;
    }
    if let Some(k) = given.keep_branch_checkpoints {
        cfg.keep_branch_checkpoints = k;
    }
    let p = &mut cfg.probes;
    if let Some(n) = given.probe_every {
        p.every = n;
    }
    if given.probe_budget.is_some() {
        p.budget_pct = given.probe_budget;
    }
    if let Some(n) = given.probe_batch {
        p.batch = n;
    }
    if let Some(n) = given.probe_grid {
        p.grid = n;
    }
    if let Some(t) = &given.track {
        p.track.clone_from(t);
    }
    if let Some(r) = given.reference_ops {
        cfg.reference_ops = r;
    }
    if let Some(p) = &given.precision {
        cfg.precision = Precision::parse(p)?;
    }
    if given.max_runs.is_some() {
        cfg.max_runs = given.max_runs;
    }
    cfg.validate()?;
    wsdscope_trainer::engine::device(&cfg.device)?;
    Ok(())
}

/// A `--checkpoint-dir` must be creatable before training starts.
pub fn check_checkpoint_dir(dir: &Option<PathBuf>) -> Result<()> {
    if let Some(d) = dir {
        if d.exists() && !d.is_dir() {
            bail!(
                "--checkpoint-dir {}: exists and is not a directory",
                d.display()
            );
        }
        std::fs::create_dir_all(d)
            .with_context(|| format!("--checkpoint-dir {}: cannot create it", d.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: Settings) -> String {
        format!("{:#}", s.to_run_config().unwrap_err())
    }

    #[test]
    fn defaults_give_the_tiny_wsd_run() {
        let c = Settings::default().to_run_config().unwrap();
        assert_eq!(c.preset, "tiny");
        let b = c.schedule.bounds();
        assert_eq!(b.total, c.steps);
        assert_eq!(b.warmup_end, c.steps / 10);
        assert_eq!(b.decay_start, c.steps - c.steps / 10);
    }

    #[test]
    fn invalid_values_name_themselves() {
        let cases: Vec<(Settings, &str)> = vec![
            (
                Settings {
                    preset: Some("nope".into()),
                    ..Default::default()
                },
                "unknown preset \"nope\"",
            ),
            (
                Settings {
                    batch: Some(0),
                    ..Default::default()
                },
                "--batch 0",
            ),
            (
                Settings {
                    lr: Some(0.0),
                    ..Default::default()
                },
                "--lr 0",
            ),
            (
                Settings {
                    lr: Some(-1.0),
                    ..Default::default()
                },
                "--lr -1",
            ),
            (
                Settings {
                    steps: Some(100),
                    warmup: Some(0.5),
                    decay: Some("exp:0.6".into()),
                    ..Default::default()
                },
                "decay of 60 steps",
            ),
            (
                Settings {
                    decay: Some("exp:2".into()),
                    ..Default::default()
                },
                "FRACTION 2",
            ),
            (
                Settings {
                    decay: Some("square:0.1".into()),
                    ..Default::default()
                },
                "unknown decay shape \"square\"",
            ),
            (
                Settings {
                    schedule: Some("step".into()),
                    ..Default::default()
                },
                "--schedule \"step\"",
            ),
            (
                Settings {
                    data: Some("/no/such/file.txt".into()),
                    ..Default::default()
                },
                "/no/such/file.txt",
            ),
            (
                Settings {
                    device: Some("gpu".into()),
                    ..Default::default()
                },
                "--device \"gpu\"",
            ),
            (
                Settings {
                    heads: Some(3),
                    ..Default::default()
                },
                "--hidden 128 is not divisible by --heads 3",
            ),
            (
                Settings {
                    precision: Some("fp8".into()),
                    ..Default::default()
                },
                "--precision \"fp8\" is not allowed; use f32, bf16",
            ),
            (
                Settings {
                    precision: Some("bf16".into()),
                    ..Default::default()
                },
                "--precision bf16 is not allowed on --device cpu: bf16 mixed precision needs a CUDA device",
            ),
            (
                Settings {
                    warmup: Some(1.0),
                    ..Default::default()
                },
                "--warmup 1",
            ),
        ];
        for (s, want) in cases {
            let e = err(s);
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }

    #[test]
    fn file_values_yield_to_flags() {
        let file: Settings = toml::from_str("steps = 50\nlr = 0.02\nkv-heads = 2\n").unwrap();
        let cli = Settings {
            lr: Some(0.03),
            ..Default::default()
        };
        let merged = cli.over(file);
        assert_eq!(merged.steps, Some(50));
        assert_eq!(merged.lr, Some(0.03));
        assert_eq!(merged.kv_heads, Some(2));
        assert!(
            toml::from_str::<Settings>("stesp = 5").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn branch_decay_takes_steps_or_a_fraction() {
        assert_eq!(
            parse_branch_decay("exp:0.1").unwrap(),
            (DecayShape::Exp, ForkLength::FractionOfStep(0.1), 0.1)
        );
        assert_eq!(
            parse_branch_decay("cosine:200:0").unwrap(),
            (DecayShape::Cosine, ForkLength::Steps(200), 0.0)
        );
        assert!(
            parse_branch_decay("exp:1.5")
                .unwrap_err()
                .to_string()
                .contains("LENGTH \"1.5\"")
        );
        let s = Settings {
            steps: Some(100),
            fork_at: Some(vec![40, 60]),
            branch_decay: Some("linear:10".into()),
            ..Default::default()
        };
        let c = s.to_run_config().unwrap();
        assert_eq!(c.forks.len(), 2);
        assert_eq!(
            (c.forks[1].at, c.forks[1].length),
            (60, ForkLength::Steps(10))
        );
        let e = err(Settings {
            steps: Some(100),
            fork_at: Some(vec![100]),
            ..Default::default()
        });
        assert!(e.contains("--fork-at 100"), "{e}");
        let e = err(Settings {
            branch_decay: Some("exp:0.1".into()),
            ..Default::default()
        });
        assert!(e.contains("needs --fork-at"), "{e}");
        let e = err(Settings {
            policy: Some("fifo".into()),
            ..Default::default()
        });
        assert!(e.contains("--policy \"fifo\""), "{e}");
    }

    #[test]
    fn decay_parses_fraction_and_floor() {
        let (s, d, f) = parse_decay("1-sqrt:0.2:0", 1000).unwrap();
        assert_eq!((s, d, f), (DecayShape::OneSqrt, 200, 0.0));
        assert!(parse_decay("exp", 10).is_err());
        assert_eq!(
            parse_decay("exp:0.01", 10).unwrap().1,
            1,
            "rounds up to one step"
        );
    }
}
