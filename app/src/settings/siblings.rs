//! `--sibling KEY=V1[,V2…]` and `[[sibling]]` tables: runs beside the trunk that differ from it
//! in a few settings. A sibling's values are the flags' values: each goes through the same
//! parser as the flag it names and the whole sibling through the same validation as a run,
//! over the trunk's settings ([`Settings::sibling_plans`]).

use anyhow::{Result, anyhow, bail};
use clap::{Args, FromArgMatches};
use wsdscope_trainer::SiblingPlan;

use super::fields::Settings;

/// The settings a sibling may change. Everything else — steps, data, sequence length, the
/// device — it shares with the trunk, so that its curve compares with the trunk's.
pub const SIBLING_KEYS: &[&str] = &[
    "schedule",
    "decay",
    "lr",
    "warmup",
    "weight-decay",
    "clip",
    "batch",
    "seed",
    "hidden",
    "layers",
    "heads",
    "kv-heads",
    "ffn",
];

/// Keys whose change needs a μP init of the sibling's own (so not `--init-from` weights).
const OWN_INIT: &[&str] = &["seed", "hidden", "layers", "heads", "kv-heads", "ffn"];

impl Settings {
    /// Every sibling these settings ask for, validated: each is these settings (less the
    /// siblings) with its changes applied through the flags' own parsers, resolved like a run.
    /// An error names the sibling (`--sibling lr=-1: …`) and what is allowed.
    pub(super) fn sibling_plans(&self) -> Result<Vec<SiblingPlan>> {
        let Some(specs) = &self.sibling else {
            return Ok(Vec::new());
        };
        let base = Settings {
            sibling: None,
            ..self.clone()
        };
        let mut plans = Vec::new();
        for spec in specs {
            let sweeps: Vec<&str> = spec
                .changes
                .iter()
                .filter(|(_, v)| v.len() > 1)
                .map(|(k, _)| k.as_str())
                .collect();
            if sweeps.len() > 1 {
                bail!(
                    "--sibling: {} and {} both list several values; a sibling table sweeps one setting (give one [[sibling]] table per sweep)",
                    sweeps[0],
                    sweeps[1]
                );
            }
            let n = spec.changes.iter().map(|(_, v)| v.len()).max().unwrap_or(1);
            for i in 0..n {
                let pairs: Vec<(&str, &str)> = spec
                    .changes
                    .iter()
                    .map(|(k, v)| (k.as_str(), v[if v.len() > 1 { i } else { 0 }].as_str()))
                    .collect();
                plans.push(base.sibling_plan(&pairs)?);
            }
        }
        Ok(plans)
    }

    /// One sibling: `pairs` (key, value) over these settings.
    fn sibling_plan(&self, pairs: &[(&str, &str)]) -> Result<SiblingPlan> {
        let label = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let allowed = SIBLING_KEYS.join(", ");
        let mut args = vec!["sibling".to_string()];
        for &(key, value) in pairs {
            if !SIBLING_KEYS.contains(&key) {
                let known = Settings::ALL.iter().any(|s| s.key() == key);
                if known {
                    bail!(
                        "--sibling {key}={value}: {key} cannot differ between a sibling and the trunk (siblings share its data, steps and device); a sibling may change {allowed}"
                    );
                }
                bail!(
                    "--sibling {key}={value}: there is no setting {key:?}; a sibling may change {allowed}"
                );
            }
            if self.init_from.is_some() && OWN_INIT.contains(&key) {
                bail!(
                    "--sibling {key}={value}: a sibling with another {key} takes a μP init of its own, but --init-from gives the trunk its weights; drop one of them"
                );
            }
            // `--KEY=VALUE`, so that a negative number is a value, not a flag.
            args.push(format!("--{key}={value}"));
        }
        let matches = Settings::augment_args(clap::Command::new("sibling"))
            .try_get_matches_from(&args)
            .map_err(|e| {
                let text = e.to_string();
                let line = text.lines().next().unwrap_or_default();
                anyhow!("--sibling {label}: {}", line.trim_start_matches("error: "))
            })?;
        let changed = Settings::from_arg_matches(&matches)?;
        let mut config = changed
            .over(self.clone())
            .to_run_config()
            .map_err(|e| anyhow!("--sibling {label}: {e:#}"))?;
        // What only the trunk does: scripted forks, checkpoints, the session's run slots.
        config.forks.clear();
        config.checkpoint_every = 0;
        config.max_runs = None;
        config.keep_branch_checkpoints = false;
        Ok(SiblingPlan { label, config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(flags: &[&str]) -> Result<Vec<SiblingPlan>> {
        let mut args = vec!["t"];
        args.extend_from_slice(flags);
        let m = Settings::augment_args(clap::Command::new("t")).try_get_matches_from(args)?;
        Ok(Settings::from_arg_matches(&m)?.to_run_config()?.siblings)
    }

    #[test]
    fn each_value_is_a_sibling_labelled_by_what_differs() {
        let p = plans(&["--sibling", "lr=0.003,0.03", "--sibling", "schedule=cosine"]).unwrap();
        let labels: Vec<&str> = p.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["lr=0.003", "lr=0.03", "schedule=cosine"]);
        assert_eq!(p[0].config.schedule.peak(), 0.003);
        assert_eq!(p[1].config.schedule.peak(), 0.03);
        let trunk = Settings::default().to_run_config().unwrap();
        // The cosine sibling spans the trunk's steps with the trunk's warmup and floor.
        assert_eq!(p[2].config.schedule.kind(), "cosine");
        assert_eq!(p[2].config.schedule.total(), trunk.steps);
        assert_eq!(p[2].config.schedule.warmup(), trunk.schedule.warmup());
        // Only what the label names differs.
        let mut same = p[2].config.clone();
        same.schedule = trunk.schedule.clone();
        assert_eq!(same, trunk);
    }

    #[test]
    fn bad_keys_and_values_name_themselves_and_what_is_allowed() {
        let err = |a: &str| format!("{:#}", plans(&["--sibling", a]).unwrap_err());
        let e = err("lr=abc");
        assert!(
            e.contains("--sibling lr=abc") && e.contains("invalid float"),
            "{e}"
        );
        let e = err("lr=-1");
        assert!(e.contains("--sibling lr=-1: --lr -1 is not allowed"), "{e}");
        let e = err("steps=10");
        assert!(
            e.contains("steps cannot differ") && e.contains("may change schedule, decay, lr"),
            "{e}"
        );
        let e = err("nope=1");
        assert!(e.contains("no setting \"nope\""), "{e}");
        let e = err("schedule=step");
        assert!(
            e.contains("--sibling schedule=step") && e.contains("use wsd, cosine or constant"),
            "{e}"
        );
        let e = err("heads=3");
        assert!(e.contains("--sibling heads=3"), "{e}");
        let e = err("lr");
        assert!(e.contains("is not KEY=V1[,V2…]"), "{e}");
    }

    #[test]
    fn toml_tables_sweep_one_key_and_combine_the_others() {
        let s: Settings = toml::from_str(
            "[[sibling]]\nschedule = \"cosine\"\n\n[[sibling]]\nhidden = [64, 256]\nlr = 0.02\n",
        )
        .unwrap();
        let p = s.to_run_config().unwrap().siblings;
        let labels: Vec<&str> = p.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(
            labels,
            ["schedule=cosine", "hidden=64 lr=0.02", "hidden=256 lr=0.02"]
        );
        assert_eq!(p[2].config.model.hidden, 256);
        assert_eq!(p[2].config.schedule.peak(), 0.02);
        let two: Settings =
            toml::from_str("[[sibling]]\nhidden = [64, 256]\nlr = [0.1, 0.2]\n").unwrap();
        let e = format!("{:#}", two.to_run_config().unwrap_err());
        assert!(e.contains("both list several values"), "{e}");
        let e = toml::from_str::<Settings>("[[sibling]]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one setting"), "{e}");
    }

    #[test]
    fn siblings_count_against_max_runs_and_do_not_resume() {
        let e = format!(
            "{:#}",
            plans(&["--max-runs", "2", "--sibling", "lr=0.003,0.03"]).unwrap_err()
        );
        assert!(
            e.contains("--max-runs 2 is not allowed") && e.contains("2 siblings"),
            "{e}"
        );
        let saved = Settings::default().to_run_config().unwrap();
        let given = Settings {
            sibling: Some(vec!["lr=0.003".parse().unwrap()]),
            ..Settings::default()
        };
        let e = format!("{:#}", super::super::resumed(&given, saved).unwrap_err());
        assert!(e.contains("--sibling does not apply to --resume"), "{e}");
    }
}
