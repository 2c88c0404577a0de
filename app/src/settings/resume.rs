//! `--resume`: the settings given must reproduce the saved run in everything that shapes it
//! (the [`Setting::shaping`] ones), and the adjustable ones apply to the saved configuration.

use std::path::Path;

use anyhow::{Result, bail};
use wsdscope_trainer::{DataSpec, RunConfig, Schedule};

use super::fields::{Setting, Settings};
use super::run_config::parse_decay;

/// The configuration a `--resume` continues with: the saved one, checked against the shaping
/// settings given, with the adjustable ones applied.
pub fn resumed(given: &Settings, saved: RunConfig) -> Result<RunConfig> {
    if given.sibling.is_some() {
        bail!(
            "--sibling does not apply to --resume: a checkpoint holds the trunk only, so siblings cannot continue; drop --sibling (and [[sibling]] tables) to continue the trunk alone, or start a new run with them"
        );
    }
    check_resume(given, &saved)?;
    let mut cfg = saved;
    // The saved run's siblings were not checkpointed: the trunk continues alone.
    cfg.siblings.clear();
    given.adjust(&mut cfg)?;
    Ok(cfg)
}

/// On `--resume`: every setting that shapes what the run computes (a flag, or a key of
/// `--config`) must agree with the saved run's value, so re-running the original command with
/// `--resume DIR` appended works. One line names each that differs, with both values.
pub fn check_resume(given: &Settings, saved: &RunConfig) -> Result<()> {
    let differ: Vec<String> = given
        .given()
        .filter(|s| s.shaping)
        .filter_map(|s| resume_mismatch(s, given, saved))
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
/// `--resume` does not reproduce the saved run's value. Each shaping setting has its arm (a
/// test sets each in turn).
fn resume_mismatch(setting: &Setting, given: &Settings, saved: &RunConfig) -> Option<String> {
    let key = setting.key();
    fn num<T: PartialEq + std::fmt::Display>(g: Option<T>, s: T) -> Option<(String, String)> {
        let g = g?;
        (g != s).then(|| (g.to_string(), s.to_string()))
    }
    let path = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let m = &saved.model;
    let steps = saved.steps;
    let (g, s) = match key.as_str() {
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
            let value = match key.as_str() {
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
