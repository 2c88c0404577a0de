//! Validating settings into a trainer [`RunConfig`]: defaults, the model shape, the data, the
//! schedule and its decay, forks, probes. Every error names the value and what is allowed.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use wsdscope_trainer::{
    DataSpec, DecayLength, DecayShape, DecaySpec, ForkLength, ForkPlan, LengthForm, OptimConfig,
    Policy, Precision, ProbeConfig, RunConfig, Schedule, preset,
};

use super::fields::Settings;

/// Defaults a run takes when neither flags nor the file set a value.
pub const DEFAULT_PRESET: &str = "tiny";
pub const DEFAULT_LR: f64 = 0.01;
pub const DEFAULT_WARMUP: f64 = 0.1;
pub const DEFAULT_DECAY: &str = "exp:0.1:0.1";
pub const DEFAULT_EVAL_BATCHES: usize = 4;
pub const DEFAULT_VAL_FRACTION: f64 = 0.1;

impl Settings {
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
        let mut cfg = RunConfig {
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
            init_from: self.init_from.clone(),
            // The adjustable settings' defaults; `adjust` applies those given.
            device: "cpu".into(),
            threads: default_threads(),
            checkpoint_every: 0,
            checkpoint_dir: None,
            forks: Vec::new(),
            policy: Policy::default(),
            memory_budget_mb: None,
            keep_branch_checkpoints: false,
            probes: ProbeConfig::default(),
            reference_ops: false,
            precision: Precision::default(),
            max_runs: None,
            siblings: Vec::new(),
        };
        self.adjust(&mut cfg)?;
        if let Some(p) = &cfg.init_from
            && !p.is_file()
        {
            bail!("--init-from {}: no such file", p.display());
        }
        Ok(cfg)
    }

    /// Applies the adjustable settings given — where and how fast the run goes, checkpoints,
    /// forks (they do not change the trunk's losses), policy, memory, probes, the session's
    /// run slots — to a new run's configuration or a resumed one's, and validates the result.
    pub fn adjust(&self, cfg: &mut RunConfig) -> Result<()> {
        if let Some(t) = self.threads {
            cfg.threads = t;
        }
        if let Some(d) = &self.device {
            cfg.device = d.clone();
        }
        if let Some(n) = self.checkpoint_every {
            cfg.checkpoint_every = n;
        }
        if self.checkpoint_dir.is_some() {
            cfg.checkpoint_dir.clone_from(&self.checkpoint_dir);
        }
        // Forks do not change the trunk's losses, so a resumed run may script new ones (and
        // `fork_plans` refuses a --branch-decay without them).
        if self.fork_at.is_some() || self.branch_decay.is_some() {
            cfg.forks = self.fork_plans()?;
        }
        if self.policy.is_some() {
            cfg.policy = self.policy_or_default()?;
        }
        if self.memory_budget.is_some() {
            cfg.memory_budget_mb = self.memory_budget;
        }
        if let Some(k) = self.keep_branch_checkpoints {
            cfg.keep_branch_checkpoints = k;
        }
        let p = &mut cfg.probes;
        if let Some(n) = self.probe_every {
            p.every = n;
        }
        if self.probe_budget.is_some() {
            p.budget_pct = self.probe_budget;
        }
        if let Some(n) = self.probe_decay_points {
            p.decay_points = n;
        }
        if let Some(n) = self.probe_batch {
            p.batch = n;
        }
        if let Some(n) = self.probe_grid {
            p.grid = n;
        }
        if let Some(n) = self.probe_noise_window {
            p.noise_window = n;
        }
        if let Some(t) = &self.track {
            p.track.clone_from(t);
        }
        if let Some(r) = self.reference_ops {
            cfg.reference_ops = r;
        }
        if let Some(p) = &self.precision {
            cfg.precision = Precision::parse(p)?;
        }
        if self.max_runs.is_some() {
            cfg.max_runs = self.max_runs;
        }
        // Siblings do not change the trunk; each is resolved over these settings.
        if self.sibling.is_some() {
            cfg.siblings = self.sibling_plans()?;
        }
        cfg.validate()?;
        wsdscope_trainer::engine::device(&cfg.device)?;
        Ok(())
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

    pub(super) fn data_spec(&self) -> Result<DataSpec> {
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

/// Parses `--decay SHAPE:FRACTION[:FLOOR]` into (shape, decay steps, floor).
pub fn parse_decay(spec: &str, steps: u64) -> Result<(DecayShape, u64, f64)> {
    let d = decay_flag("--decay", spec, LengthForm::FractionOfRun)?;
    Ok((d.shape, d.length.steps(steps), d.floor))
}

/// Parses `--branch-decay SHAPE:LENGTH[:FLOOR]`: LENGTH is steps when it is an integer ≥ 1,
/// else a fraction of the fork step in (0, 1).
pub fn parse_branch_decay(spec: &str) -> Result<(DecayShape, ForkLength, f64)> {
    let d = decay_flag("--branch-decay", spec, LengthForm::StepsOrFraction)?;
    Ok((d.shape, fork_length(d.length), d.floor))
}

/// A decay flag's value, its errors prefixed with the flag.
fn decay_flag(flag: &str, spec: &str, form: LengthForm) -> Result<DecaySpec> {
    DecaySpec::parse(spec, form).map_err(|e| anyhow::anyhow!("{flag} {e}"))
}

/// A branch's decay length: steps, or a fraction of the step it forks at.
pub fn fork_length(length: DecayLength) -> ForkLength {
    match length {
        DecayLength::Steps(n) => ForkLength::Steps(n),
        DecayLength::Fraction(f) => ForkLength::FractionOfStep(f),
    }
}

/// The threads a run uses unless `--threads` says otherwise: `RAYON_NUM_THREADS` when the
/// user set it (a whole number ≥ 1), else all cores the process may use.
pub fn default_threads() -> usize {
    threads_from(std::env::var("RAYON_NUM_THREADS").ok().as_deref())
}

/// [`default_threads`] given the value of `RAYON_NUM_THREADS`; one that is not a whole number
/// ≥ 1 is ignored, as rayon itself ignores it.
fn threads_from(rayon: Option<&str>) -> usize {
    rayon
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

#[cfg(test)]
#[test]
fn threads_default_to_rayon_num_threads_when_it_is_set() {
    let cores = threads_from(None);
    assert!(cores >= 1);
    assert_eq!(threads_from(Some("3")), 3);
    assert_eq!(threads_from(Some(" 5 ")), 5);
    assert_eq!(threads_from(Some("0")), cores);
    assert_eq!(threads_from(Some("many")), cores);
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
