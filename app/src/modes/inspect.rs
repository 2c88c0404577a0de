//! `wsdscope inspect FILE.h5 [--json | --events]`: what a session holds — its configuration,
//! its runs (id, name, parent, fork step, steps, final train and val loss, status, duration),
//! its branches and their fit, its siblings with their differences from the trunk and which run
//! ended lowest — or its whole event stream as the JSON lines the run printed.

use anyhow::Result;
use serde_json::{Value, json};
use wsdscope_sessions::{EndReason, RunInfo, Session};

use crate::analysis::{BranchRow, branches, describe_fit, endpoint_fit};
use crate::cli::InspectArgs;
use crate::progress::duration;
use crate::sibling_table::{SiblingRow, siblings, winner};

/// How a run stands. Without an `end` event it is running while a recorder still writes the
/// file, and was killed (or its recorder was) once none does.
fn status(r: &RunInfo, writer_alive: Option<bool>) -> &'static str {
    match &r.end {
        None => match writer_alive {
            Some(true) => "running",
            Some(false) => "killed",
            None => "running (or killed)",
        },
        Some((EndReason::Completed, _)) => "completed",
        Some((EndReason::Stopped, _)) => "stopped",
        Some((EndReason::Failed, _)) => "failed",
    }
}

fn run_json(r: &RunInfo, writer_alive: Option<bool>) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "parent": r.parent,
        "fork_step": r.fork_step,
        "steps": r.steps,
        "first_step": r.first_step,
        "last_step": r.last_step,
        "final_train_loss": r.final_train_loss,
        "final_val_loss": r.final_val_loss,
        "evals": r.evals,
        "status": status(r, writer_alive),
        "message": r.end.as_ref().and_then(|(_, m)| m.clone()),
        "wall_s": r.wall_s,
        "params": r.model.params,
        "phases": r.phases,
    })
}

/// One line about the run configuration, read defensively from its JSON.
fn describe_config(c: &Value) -> String {
    let sched = &c["schedule"];
    let schedule = match sched["kind"].as_str() {
        Some("wsd") => format!(
            "wsd (warmup {}, {} decay over {} steps to {}×)",
            sched["warmup"],
            sched["shape"].as_str().unwrap_or("?"),
            sched["decay_steps"],
            sched["floor"]
        ),
        Some(k) => k.to_string(),
        None => "?".into(),
    };
    format!(
        "preset {}, {} steps × {}×{} tokens, {}, peak lr {}, seed {}",
        c["preset"].as_str().unwrap_or("?"),
        c["steps"],
        c["batch"],
        c["seq"],
        schedule,
        sched["peak"],
        c["seed"]
    )
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}

pub fn run(a: InspectArgs) -> Result<()> {
    if !a.more.is_empty() {
        let files: Vec<_> = std::iter::once(a.file.clone()).chain(a.more).collect();
        return super::compare_sessions::run(&files, a.json);
    }
    let s = Session::open(&a.file)?;
    if let Some((have, want)) = s.recovered() {
        eprintln!(
            "warning: {} lost its last {} bytes (a write failed, e.g. a full disk); showing everything before that",
            a.file.display(),
            want - have
        );
    }
    if a.events {
        use std::io::Write;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        for e in s.events()? {
            writeln!(out, "{}", e.to_json_line())?;
        }
        out.flush()?;
        return Ok(());
    }
    let config: Value = s
        .root_attr("config")
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or(Value::Null);
    let rows = branches(&s)?;
    let fit = endpoint_fit(&rows);
    let sibling_rows = siblings(&s);
    let won = winner(&s);
    let events = s.events()?;
    let predictions = crate::predict::predictions(&events);
    let law = crate::predict::session_law(&events);
    let probes = probe_counts(&events);
    let coverage = planned_coverage(&s, &config, &events);
    let writer = s.writer_alive();
    if a.json {
        let fit_json = fit.as_ref().map(|f| {
            json!({
                "l0": f.l0, "b": f.b, "beta": f.beta, "n": f.n, "rss": f.rss,
                "std_errors": f.std_errors(),
            })
        });
        let out = json!({
            "branches": rows,
            "siblings": sibling_rows,
            "lowest_val_loss": won,
            "fit": fit_json,
            "file": a.file.display().to_string(),
            "format_version": s.format_version(),
            "producer": s.root_attr("producer"),
            "created": s.root_attr("created"),
            "config": config,
            "writer_alive": writer,
            "runs": s.runs().iter().map(|r| run_json(r, writer)).collect::<Vec<_>>(),
            "probe_coverage": coverage,
            "law": law.map(|f| json!({
                "l0": f.law.l0, "a": f.law.a, "alpha": f.law.alpha, "b": f.law.b,
                "c": f.law.c, "beta": f.law.beta, "gamma": f.law.gamma,
                "decay_fitted": f.decay_fitted, "rms": f.rms, "points": f.points,
            })),
            "predictions": predictions.iter().map(|p| json!({
                "run": p.run, "fork_step": p.fork_step, "end_step": p.end_step,
                "tail_steps": crate::predict::tail_len(p.end_step - p.fork_step),
                "predicted_tail_train_loss": p.before, "decay_fitted": p.decay_fitted,
                "uncertainty": p.uncertainty(),
                "actual_tail_train_loss": p.actual,
                "error": p.actual.map(|a| p.before - a),
            })).collect::<Vec<_>>(),
            "probes": probes.iter().map(|(run, kind, n, secs)| json!({
                "run": run, "probe": kind, "count": n, "seconds": secs,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "session {} (format {}, {}, created {})",
        a.file.display(),
        s.format_version(),
        s.root_attr("producer").unwrap_or_default(),
        s.root_attr("created").unwrap_or_default()
    );
    if config.is_null() {
        println!("config: none recorded yet (no run has started)");
    } else {
        println!("config: {}", describe_config(&config));
    }
    println!(
        "{:>4}  {:<16} {:>6} {:>6} {:>16} {:>10} {:>10}  {:<19} {:>8}",
        "run", "name", "parent", "fork", "steps", "train loss", "val loss", "status", "duration"
    );
    for r in s.runs() {
        let steps = match (r.first_step, r.last_step) {
            (Some(a), Some(b)) => format!("{a}..{b} ({})", r.steps),
            _ => "none".into(),
        };
        println!(
            "{:>4}  {:<16} {:>6} {:>6} {:>16} {:>10} {:>10}  {:<19} {:>8}",
            r.id,
            r.name,
            r.parent
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            r.fork_step
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            steps,
            opt(r.final_train_loss),
            opt(r.final_val_loss),
            status(r, writer),
            r.wall_s.map(duration).unwrap_or_else(|| "-".into())
        );
        if let Some((_, Some(m))) = &r.end {
            println!("      {m}");
        }
    }
    if !rows.is_empty() {
        print_branches(&rows);
    }
    if !sibling_rows.is_empty() {
        print_siblings(&sibling_rows);
    }
    if let Some(w) = &won {
        println!(
            "lowest final val loss: run {} ({}) {:.4}, {:.4} below the next",
            w.id, w.label, w.final_val_loss, w.margin
        );
    }
    if !predictions.is_empty() {
        println!(
            "decay predictions (multi-power law fitted on what was recorded before each fork; mean training loss over each branch's last fifth):"
        );
        for p in &predictions {
            let actual = p
                .actual
                .map(|a| format!("actual {a:.4}, error {:+.4}", p.before - a))
                .unwrap_or_else(|| "not completed".into());
            let how = match p.uncertainty() {
                Some(u) => format!(" ± {u:.2} (decay term from the calibrated prior)"),
                None => String::new(),
            };
            println!(
                "  run {:>2} forked at {:>6}, ends {:>6}: predicted {:.4}{how}; {actual}",
                p.run, p.fork_step, p.end_step, p.before,
            );
        }
    }
    if !probes.is_empty() {
        println!("probes:");
        for (run, kind, n, secs) in &probes {
            println!("  run {run:>2} {kind:<10} ×{n:<4} {secs:.1} s");
        }
    }
    if let Some(c) = &coverage {
        for line in super::probe_coverage::describe(c) {
            println!("{line}");
        }
    }
    if let Some(f) = &fit {
        println!("fit: {}", describe_fit(f));
        let far = rows.iter().filter_map(|r| r.end_tokens).max().unwrap_or(0) as f64 * 10.0;
        let sd = f
            .predict_std(far)
            .map(|s| format!(" ± {s:.4}"))
            .unwrap_or_default();
        println!(
            "     extrapolated to 10× the last endpoint ({far:.3e} tokens): L = {:.4}{sd}",
            f.predict(far)
        );
    }
    Ok(())
}

/// Where the session's periodic probes ran against the planner's places, when the planner
/// placed them (not `--probe-every`, not turned off).
fn planned_coverage(
    s: &Session,
    config: &Value,
    events: &[wsdscope_sessions::RunEvent],
) -> Option<super::probe_coverage::Coverage> {
    use super::probe_coverage::{RunPlaces, coverage};
    let probes = &config["probes"];
    let planned = probes["every"].as_u64() == Some(0)
        && probes["budget_pct"].as_f64().is_none_or(|b| b > 0.0);
    if !planned {
        return None;
    }
    let runs: Vec<RunPlaces> = s
        .runs()
        .iter()
        .map(|r| RunPlaces {
            run: r.id,
            phases: r.phases,
            from: r.fork_step.unwrap_or(r.start_step),
            branch: r.parent.is_some(),
        })
        .collect();
    let kinds: Vec<&str> = wsdscope_sessions::ProbeKind::PERIODIC
        .iter()
        .map(|k| k.name())
        .collect();
    let points = probes["decay_points"].as_u64().unwrap_or(3);
    Some(coverage(&runs, events, &kinds, points))
}

/// (run, probe, results, seconds) of every probe kind recorded per run.
fn probe_counts(events: &[wsdscope_sessions::RunEvent]) -> Vec<(u32, String, usize, f64)> {
    let mut out: Vec<(u32, String, usize, f64)> = Vec::new();
    for e in events {
        if let wsdscope_sessions::RunEvent::Probe(p) = e {
            let secs = p.scalars.get("seconds").copied().unwrap_or(0.0);
            match out.iter_mut().find(|x| x.0 == p.run && x.1 == p.probe) {
                Some(x) => {
                    x.2 += 1;
                    x.3 += secs;
                }
                None => out.push((p.run, p.probe.clone(), 1, secs)),
            }
        }
    }
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    out
}

fn print_siblings(rows: &[SiblingRow]) {
    println!("siblings (from step 0 beside the trunk, on its batches):");
    println!(
        "{:>4}  {:<18} {:>10} {:>9} {:>10} {:>8}  differences from the trunk",
        "run", "label", "params", "val loss", "trunk val", "vs trunk"
    );
    for r in rows {
        let vs = match (r.final_val_loss, r.trunk_val_loss) {
            (Some(a), Some(b)) => format!("{:+.4}", a - b),
            _ => "-".into(),
        };
        println!(
            "{:>4}  {:<18} {:>10} {:>9} {:>10} {:>8}  {}{}",
            r.id,
            r.label,
            crate::tui::format::grouped(r.params),
            opt(r.final_val_loss),
            opt(r.trunk_val_loss),
            vs,
            r.differences.join(", "),
            if r.completed { "" } else { "  (not completed)" }
        );
    }
}

fn print_branches(rows: &[BranchRow]) {
    println!("branches:");
    println!(
        "{:>4}  {:>9} {:>14}  {:<18} {:>8} {:>9} {:>10} {:>8}",
        "run", "fork step", "tokens at fork", "decay", "end step", "val loss", "trunk val", "drop"
    );
    for r in rows {
        let decay = r.decay_label();
        println!(
            "{:>4}  {:>9} {:>14}  {:<18} {:>8} {:>9} {:>10} {:>8}{}",
            r.id,
            r.fork_step,
            r.tokens_at_fork,
            decay,
            r.end_step
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            opt(r.final_val_loss),
            opt(r.trunk_val_loss),
            r.drop
                .map(|d| format!("{d:+.4}"))
                .unwrap_or_else(|| "-".into()),
            if r.completed { "" } else { "  (not completed)" }
        );
    }
}
