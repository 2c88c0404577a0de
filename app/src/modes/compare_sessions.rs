//! `inspect A.h5 B.h5 …`: every run of several sessions in one table, each labelled
//! `FILE:RUN` (the file's name and the run id, e.g. `wsd.h5:0`). Per run: its final and best
//! validation loss, the final's difference from the first file's trunk, and the validation
//! loss at matched tokens — the most tokens every trunk and sibling reached, interpolated
//! linearly between evals — so sessions with other batch sizes or lengths compare at equal
//! data. Runs that began later (branches) get a value there only if their evals span it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use wsdscope_sessions::Session;

use crate::tui::format::si;

/// One run of one session, as the table shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunLine {
    /// `FILE:RUN`.
    pub label: String,
    pub file: String,
    pub run: u32,
    /// The run's name (`trunk`, a branch's, a sibling's label).
    pub name: String,
    /// Whether the run began at step 0 (a trunk or a sibling) rather than at a fork.
    pub from_start: bool,
    pub steps: u64,
    /// (tokens, val loss) of each eval, in order.
    #[serde(skip)]
    pub evals: Vec<(u64, f64)>,
    pub final_val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
}

impl RunLine {
    /// The val loss at `tokens`, linear between the two evals around it; `None` outside them.
    pub fn val_at(&self, tokens: u64) -> Option<f64> {
        let e = &self.evals;
        let i = e.partition_point(|&(t, _)| t < tokens);
        match (i.checked_sub(1).map(|j| e[j]), e.get(i)) {
            (_, Some(&(t, v))) if t == tokens => Some(v),
            (Some((t0, v0)), Some(&(t1, v1))) => {
                let w = (tokens - t0) as f64 / (t1 - t0) as f64;
                Some(v0 + w * (v1 - v0))
            }
            _ => None,
        }
    }
}

/// The runs of the session at `path`, labelled with `name`.
fn runs_of(path: &Path, name: &str) -> Result<Vec<RunLine>> {
    let s = Session::open(path).with_context(|| format!("inspect {}", path.display()))?;
    let mut out: Vec<RunLine> = s
        .runs()
        .iter()
        .map(|r| RunLine {
            label: format!("{name}:{}", r.id),
            file: path.display().to_string(),
            run: r.id,
            name: r.name.clone(),
            from_start: r.parent.is_none(),
            steps: r.steps,
            evals: Vec::new(),
            final_val_loss: r.final_val_loss,
            best_val_loss: None,
        })
        .collect();
    // The evals from each run's val_loss column (not the whole event log), at tokens = step ×
    // its own batch × seq, as the engine counts them.
    for (r, info) in out.iter_mut().zip(s.runs()) {
        let tokens_per_step = crate::analysis::tokens_per_step(info);
        let (steps, vals) = s.series(info.id, "val_loss")?;
        r.evals = steps
            .into_iter()
            .zip(vals)
            .filter(|(_, v)| v.is_finite())
            .map(|(step, v)| (step * tokens_per_step, v))
            .collect();
        r.evals.sort_by_key(|e| e.0);
        r.best_val_loss = r.evals.iter().map(|e| e.1).reduce(f64::min);
        if r.final_val_loss.is_none() {
            r.final_val_loss = r.evals.last().map(|e| e.1);
        }
    }
    Ok(out)
}

/// How each file is named in labels (`FILE:RUN`) by `inspect`, `plot` and `replay` of several
/// sessions: its file name, or the path as given where two files share a name.
pub fn names<P: AsRef<Path>>(files: &[P]) -> Vec<String> {
    let short: Vec<String> = files
        .iter()
        .map(|f| {
            let f = f.as_ref();
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| f.display().to_string())
        })
        .collect();
    short
        .iter()
        .zip(files)
        .map(|(s, f)| {
            if short.iter().filter(|o| *o == s).count() > 1 {
                f.as_ref().display().to_string()
            } else {
                s.clone()
            }
        })
        .collect()
}

/// The tokens at which runs are matched: the fewest that any run from step 0 reached at its
/// last eval.
pub fn matched_tokens(runs: &[RunLine]) -> Option<u64> {
    runs.iter()
        .filter(|r| r.from_start)
        .filter_map(|r| r.evals.last().map(|e| e.0))
        .min()
}

/// Prints the table (or, with `json`, one object) for `files`.
pub fn run(files: &[PathBuf], json: bool) -> Result<()> {
    let mut runs = Vec::new();
    for (f, name) in files.iter().zip(names(files)) {
        runs.extend(runs_of(f, &name)?);
    }
    let matched = matched_tokens(&runs);
    let reference = runs.first().and_then(|r| r.final_val_loss);
    let first = runs.first().map(|r| r.label.clone()).unwrap_or_default();
    if json {
        let rows: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({
                    "label": r.label, "file": r.file, "run": r.run, "name": r.name,
                    "steps": r.steps, "final_val_loss": r.final_val_loss,
                    "best_val_loss": r.best_val_loss,
                    "final_minus_first": r.final_val_loss.zip(reference).map(|(a, b)| a - b),
                    "val_at_matched_tokens": matched.and_then(|t| r.val_at(t)),
                })
            })
            .collect();
        let out = json!({ "matched_tokens": matched, "first": first, "runs": rows });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let at = matched.map(|t| si(t as f64)).unwrap_or_else(|| "–".into());
    println!(
        "{} runs of {} sessions; matched tokens: {at} (the fewest any trunk or sibling reached at its last eval)",
        runs.len(),
        files.len()
    );
    let width = runs.iter().map(|r| r.label.len()).max().unwrap_or(3).max(3);
    let num = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into());
    println!(
        " {:<width$}  {:<18} {:>6} {:>9} {:>9} {:>14} {:>12}",
        "run",
        "name",
        "steps",
        "final val",
        "best val",
        format!("vs {}", first.split(':').next().unwrap_or("")),
        format!("@{at} tok"),
    );
    for r in &runs {
        let vs = r
            .final_val_loss
            .zip(reference)
            .map(|(a, b)| format!("{:+.4}", a - b))
            .unwrap_or_else(|| "–".into());
        let name: String = r.name.chars().take(18).collect();
        println!(
            " {:<width$}  {:<18} {:>6} {:>9} {:>9} {:>14} {:>12}",
            r.label,
            name,
            r.steps,
            num(r.final_val_loss),
            num(r.best_val_loss),
            vs,
            num(matched.and_then(|t| r.val_at(t))),
        );
    }
    if let Some(best) = runs
        .iter()
        .filter_map(|r| Some((r, r.final_val_loss?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
    {
        println!(
            "lowest final val loss: {} ({}) {:.4}",
            best.0.label, best.0.name, best.1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(from_start: bool, evals: &[(u64, f64)]) -> RunLine {
        RunLine {
            label: "a.h5:0".into(),
            file: "a.h5".into(),
            run: 0,
            name: "trunk".into(),
            from_start,
            steps: 0,
            evals: evals.to_vec(),
            final_val_loss: None,
            best_val_loss: None,
        }
    }

    #[test]
    fn val_is_interpolated_between_evals_and_absent_outside_them() {
        let r = line(true, &[(100, 3.0), (200, 2.0), (400, 1.0)]);
        assert_eq!(r.val_at(100), Some(3.0));
        assert_eq!(r.val_at(150), Some(2.5));
        assert_eq!(r.val_at(300), Some(1.5));
        assert_eq!(r.val_at(400), Some(1.0));
        assert_eq!(r.val_at(50), None);
        assert_eq!(r.val_at(401), None);
    }

    #[test]
    fn tokens_are_matched_where_every_run_from_step_0_has_been() {
        let runs = [
            line(true, &[(100, 3.0), (400, 1.0)]),
            line(true, &[(100, 3.0), (250, 1.0)]),
            line(false, &[(300, 1.0), (320, 0.9)]), // a branch does not bound it
        ];
        assert_eq!(matched_tokens(&runs), Some(250));
    }

    #[test]
    fn files_with_the_same_name_are_labelled_by_path() {
        let n = names(&[
            PathBuf::from("x/a.h5"),
            PathBuf::from("y/a.h5"),
            PathBuf::from("b.h5"),
        ]);
        assert_eq!(n, ["x/a.h5", "y/a.h5", "b.h5"]);
    }
}
