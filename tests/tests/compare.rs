//! `inspect A.h5 B.h5`: several sessions in one table, runs labelled `FILE:RUN`, compared at
//! matched tokens (sessions of other lengths or batch sizes meet at equal data).

use serde_json::Value;
use wsdscope_tests::{SMALL, json_lines, run};

/// Records a session of `steps` steps to `out` (evals every 10) and returns its events.
fn record(out: &str, steps: &str) -> Vec<Value> {
    let mut args = vec!["record", "--out", out, "--steps", steps, "--jsonl"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--eval-every", "10", "--probe-budget", "0"]);
    let r = run(&args);
    assert!(r.ok(), "{}", r.stderr);
    json_lines(&r.stdout)
}

#[test]
fn two_sessions_compare_at_matched_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.h5"), dir.path().join("b.h5"));
    let ev_a = record(a.to_str().unwrap(), "60");
    let ev_b = record(b.to_str().unwrap(), "40");
    let r = run(&[
        "inspect",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
    ]);
    assert!(r.ok(), "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    let labels: Vec<&str> = runs.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["a.h5:0", "b.h5:0"]);
    // b's last eval (step 40 of 4×16-token batches) bounds the comparison.
    let tokens = 40 * 4 * 16;
    assert_eq!(v["matched_tokens"], tokens);
    let eval_at = |ev: &[Value], step: u64| {
        ev.iter()
            .find(|e| e["type"] == "eval" && e["step"] == step)
            .unwrap_or_else(|| panic!("no eval at {step}"))["val_loss"]
            .as_f64()
            .unwrap()
    };
    let close = |x: &Value, y: f64| (x.as_f64().unwrap() - y).abs() < 1e-9;
    assert!(close(&runs[0]["val_at_matched_tokens"], eval_at(&ev_a, 40)));
    assert!(close(&runs[1]["val_at_matched_tokens"], eval_at(&ev_b, 40)));
    assert!(close(&runs[0]["final_val_loss"], eval_at(&ev_a, 60)));
    assert!(close(&runs[0]["final_minus_first"], 0.0));
    let d = runs[1]["final_val_loss"].as_f64().unwrap() - eval_at(&ev_a, 60);
    assert!(close(&runs[1]["final_minus_first"], d));

    let text = run(&["inspect", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(text.ok(), "{}", text.stderr);
    assert!(
        text.stdout.contains("2 runs of 2 sessions"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("b.h5:0"), "{}", text.stdout);
    let missing = run(&["inspect", a.to_str().unwrap(), "/nonexistent/c.h5"]);
    assert_eq!(missing.code, Some(2));
    assert!(missing.stderr.contains("c.h5"), "{}", missing.stderr);
}

#[test]
fn two_sessions_plot_in_one_figure_against_tokens_or_time() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.h5"), dir.path().join("b.h5"));
    record(a.to_str().unwrap(), "60");
    record(b.to_str().unwrap(), "40");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    for (x, label) in [("tokens", "tokens"), ("time", "training time (s)")] {
        let fig = dir.path().join(format!("{x}.svg"));
        let r = run(&["plot", a, b, "--x", x, "--out", fig.to_str().unwrap()]);
        assert!(r.ok(), "{}", r.stderr);
        let svg = std::fs::read_to_string(&fig).unwrap();
        for want in ["a.h5:0 trunk", "b.h5:0 trunk", label] {
            assert!(svg.contains(want), "--x {x}: the figure lacks {want:?}");
        }
    }
    let fig = dir.path().join("s.svg");
    let r = run(&[
        "plot",
        a,
        b,
        "--metric",
        "sharpness",
        "--out",
        fig.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("per-step metrics"), "{}", r.stderr);
}
