//! Where `record`'s periodic probes run, end to end: the default preset's phases on a 300-step
//! run (the default run's proportions: 10% warmup, the last 10% decaying) with one scripted
//! decay branch, read back from the session file. Every periodic kind runs at the trunk's last
//! stable step and inside its decay, and at the branch's first and last step, within the
//! budget. And the default run at the default budget probes where its loss drops: every
//! planned kind at the decay's last step, nothing before the state the decay starts from,
//! and the noise scale, which its steps give at no cost, at every anchor.

use std::collections::BTreeSet;

use wsdscope_tests::{run, session_events};

const KINDS: [&str; 4] = ["sharpness", "noise", "slice", "landscape"];

#[test]
fn every_periodic_probe_runs_at_the_last_stable_step_and_in_the_decay() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plan.h5");
    // 264 steps' worth of probes (80% of the 330 steps both runs train): room for the plan's
    // first three tiers — the four kinds at both runs' last steps, at the trunk's points
    // through its decay, at its last stable step and at the branch's first step — and its
    // margin, even when a probe takes half as long again as estimated (a round of the four
    // kinds costs 17–26 training steps on 2 loaded cores).
    let r = run(&[
        "record",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "300",
        "--threads",
        "1",
        "--probe-budget",
        "80",
        "--fork-at",
        "150",
        "--branch-decay",
        "exp:30",
    ]);
    assert!(r.ok(), "{}", r.stderr);
    let events = session_events(dir.path(), "plan.h5").unwrap();
    let probes: Vec<(u64, u64, String, f64)> = events
        .iter()
        .filter(|e| e["type"] == "probe")
        .map(|e| {
            (
                e["run"].as_u64().unwrap(),
                e["step"].as_u64().unwrap(),
                e["probe"].as_str().unwrap().to_string(),
                e["scalars"]["seconds"].as_f64().unwrap(),
            )
        })
        .collect();
    let at = |run: u64, kind: &str| -> BTreeSet<u64> {
        probes
            .iter()
            .filter(|p| p.0 == run && p.2 == kind)
            .map(|p| p.1)
            .collect()
    };
    // The trunk: warmup ends at 30, the decay starts after 270 and ends at 300.
    for kind in KINDS {
        let steps = at(0, kind);
        eprintln!("trunk {kind}: {steps:?}");
        assert!(
            steps.contains(&270),
            "{kind} not at the last stable step: {steps:?}"
        );
        assert!(
            steps.contains(&300),
            "{kind} not at the decay's end: {steps:?}"
        );
        assert!(
            steps.iter().any(|&s| s > 270),
            "{kind} not in the decay: {steps:?}"
        );
    }
    // The branch forked at 150 decays over steps 151..=180.
    for kind in KINDS {
        let steps = at(1, kind);
        eprintln!("branch {kind}: {steps:?}");
        assert!(
            steps.contains(&151) && steps.contains(&180),
            "{kind} not at the branch's first and last step: {steps:?}"
        );
    }
    // Within the budget: periodic probes (the interpolation at the branch's end included)
    // take at most 80% of the training time of both runs, give or take the one probe that
    // may overrun its estimate.
    let train: f64 = events
        .iter()
        .filter(|e| e["type"] == "step")
        .map(|e| e["step_ms"].as_f64().unwrap() / 1e3)
        .sum();
    let spent: f64 = probes.iter().map(|p| p.3).sum();
    let worst = probes.iter().map(|p| p.3).fold(0.0, f64::max);
    eprintln!(
        "probes {spent:.2} s of {train:.2} s training ({:.1}%)",
        100.0 * spent / train
    );
    assert!(spent <= 0.80 * train + worst, "{spent} s vs {train} s");
}

/// (run, step, kind) of every periodic probe a session recorded.
fn periodic(events: &[serde_json::Value]) -> Vec<(u64, u64, String)> {
    events
        .iter()
        .filter(|e| e["type"] == "probe" && KINDS.contains(&e["probe"].as_str().unwrap_or("")))
        .map(|e| {
            (
                e["run"].as_u64().unwrap(),
                e["step"].as_u64().unwrap(),
                e["probe"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The kinds the planner places on the CPU step (the noise scale comes from the steps).
const PLANNED: [&str; 3] = ["sharpness", "slice", "landscape"];

/// The default `record` (600 steps, decay from 540) at the default budget (5%): the planner
/// spends it on the decay — every planned kind at its last step — and before it at most on
/// the state the decay starts from (the last stable step, 540); the noise scale, from the
/// steps' own leaves, is reported every 10 steps and so at every anchor.
#[test]
fn the_default_budget_probes_inside_the_decay() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("default.h5");
    let r = run(&["record", "--out", out.to_str().unwrap(), "--threads", "2"]);
    assert!(r.ok(), "{}", r.stderr);
    let events = session_events(dir.path(), "default.h5").unwrap();
    let probes = periodic(&events);
    let at = |kind: &str| -> BTreeSet<u64> {
        probes.iter().filter(|p| p.2 == kind).map(|p| p.1).collect()
    };
    for kind in KINDS {
        eprintln!("{kind}: {:?}", at(kind));
    }
    assert!(!probes.is_empty(), "no periodic probe ran");
    for (run, step, kind) in &probes {
        assert_eq!(*run, 0);
        assert!(
            kind == "noise" || (540..=600).contains(step),
            "{kind} at step {step}, before the last stable step (540)"
        );
    }
    // The last step's round costs under half the budget (about 16 of 30 steps' worth), so
    // it survives probes that overrun their estimates; which of the other points through the
    // decay also get one depends on what each probe costs on this machine at this moment.
    for kind in PLANNED {
        assert!(at(kind).contains(&600), "{kind}: {:?}", at(kind));
    }
    // The noise scale: a report every 10 steps, each over the 10 steps before it, at no cost.
    let want: BTreeSet<u64> = (10..=600).step_by(10).collect();
    assert_eq!(at("noise"), want);
    for e in events.iter().filter(|e| e["probe"] == "noise") {
        assert_eq!(e["scalars"]["steps"], 10.0, "{e}");
        assert!(e["scalars"]["b_simple"].as_f64().unwrap() > 0.0, "{e}");
    }
    // `inspect` sets them against the planner's places and says what budget covers them all.
    let shown = run(&["inspect", out.to_str().unwrap()]);
    assert!(shown.ok(), "{}", shown.stderr);
    assert!(
        shown.stdout.contains(
            "  run  0 noise      at 60 steps: 10 20 30 … 580 590 600; missed - (from the training steps' own gradients)"
        ),
        "{}",
        shown.stdout
    );
    for kind in PLANNED {
        let line = shown
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("  run  0 {kind:<10} at ")))
            .unwrap_or_else(|| panic!("no coverage line for {kind}:\n{}", shown.stdout));
        let (probed, missed) = line.split_once("; missed ").unwrap();
        let probed: Vec<u64> = probed
            .rsplit(" at ")
            .next()
            .unwrap()
            .split(' ')
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(probed, at(kind).into_iter().collect::<Vec<_>>(), "{line}");
        // The anchors are 60, 300, 540, 560, 580 and 600; what ran is not missed.
        for s in missed.split(' ').filter(|s| *s != "-") {
            let s: u64 = s.parse().unwrap();
            assert!(
                [60, 300, 540, 560, 580].contains(&s) && !at(kind).contains(&s),
                "{line}"
            );
        }
    }
    let need: f64 = shown
        .stdout
        .split("every kind at every anchor would take about ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no budget line:\n{}", shown.stdout));
    assert!(need > 5.0 && need < 100.0, "{need}");
}
