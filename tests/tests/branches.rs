//! Decay branches end to end: scripted with --fork-at/--branch-decay, recorded as runs with
//! parent and fork step, compared and fitted by `inspect`, drawn with the fit by `plot`; and
//! the product's core claim on the default preset: a 10% exp decay branch forked in the stable
//! phase ends clearly below the trunk at the same step.

use wsdscope_tests::{SMALL, json_lines, run};

#[test]
fn scripted_branches_are_recorded_compared_and_fitted() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b.h5");
    let fs = f.to_str().unwrap();
    let mut args = vec!["record", "--out", fs, "--steps", "60", "--jsonl"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&[
        "--fork-at",
        "10,20,30,40",
        "--branch-decay",
        "exp:0.25",
        "--policy",
        "round-robin",
    ]);
    let r = run(&args);
    assert!(r.ok(), "{}", r.stderr);
    let ev = json_lines(&r.stdout);
    let forked: Vec<(u64, u64)> = ev
        .iter()
        .filter(|e| e["type"] == "forked")
        .map(|e| (e["run"].as_u64().unwrap(), e["step"].as_u64().unwrap()))
        .collect();
    assert_eq!(forked, vec![(1, 10), (2, 20), (3, 30), (4, 40)]);
    let ends = ev.iter().filter(|e| e["type"] == "end").count();
    assert_eq!(ends, 5);

    let i = run(&["inspect", fs, "--json"]);
    assert!(i.ok(), "{}", i.stderr);
    let v: serde_json::Value = serde_json::from_str(&i.stdout).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 5);
    let b = &v["branches"];
    assert_eq!(b.as_array().unwrap().len(), 4);
    assert_eq!(b[2]["fork_step"], 30);
    assert_eq!(b[2]["decay_steps"], 8, "0.25 × fork step 30, rounded");
    assert_eq!(b[2]["shape"], "exp");
    assert_eq!(b[2]["tokens_at_fork"], 30 * 64);
    assert_eq!(b[2]["end_step"], 38);
    assert!(
        b[2]["trunk_val_loss"].as_f64().is_some(),
        "the trunk is evaluated where branches end"
    );
    let drop = b[2]["drop"].as_f64().unwrap();
    assert_eq!(
        drop,
        b[2]["trunk_val_loss"].as_f64().unwrap() - b[2]["final_val_loss"].as_f64().unwrap()
    );
    let fit = &v["fit"];
    assert_eq!(fit["n"], 4);
    assert!(fit["beta"].as_f64().unwrap() > 0.0);
    let text = run(&["inspect", fs]);
    assert!(
        text.stdout.contains("branches:") && text.stdout.contains("fit: L(D) ="),
        "{}",
        text.stdout
    );

    let svg = dir.path().join("b.svg");
    let p = run(&["plot", fs, "--out", svg.to_str().unwrap()]);
    assert!(p.ok(), "{}", p.stderr);
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.contains("over branch endpoints") && svg.contains("run 3 exp 8 @30"));
}

#[test]
fn branch_and_budget_errors_are_named() {
    for (flags, want) in [
        (vec!["--fork-at", "0"], "--fork-at 0"),
        (
            vec!["--fork-at", "5", "--branch-decay", "exp:1.5"],
            "LENGTH \"1.5\"",
        ),
        (vec!["--branch-decay", "exp:0.1"], "needs --fork-at"),
        (vec!["--policy", "lifo"], "--policy \"lifo\""),
    ] {
        let mut args = vec!["record", "--no-record", "--steps", "20"];
        args.extend_from_slice(SMALL);
        args.extend(flags);
        let r = run(&args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.trim().lines().count() == 1 && r.stderr.contains(want),
            "{args:?}: {}",
            r.stderr
        );
    }
    // A budget too small for a branch: the fork is refused with a note; training goes on.
    let mut args = vec![
        "record",
        "--no-record",
        "--steps",
        "20",
        "--jsonl",
        "--memory-budget",
        "0",
        "--fork-at",
        "5",
    ];
    args.extend_from_slice(SMALL);
    let r = run(&args);
    assert!(r.ok(), "{}", r.stderr);
    assert!(
        r.stderr.contains("fork refused") && r.stderr.contains("memory budget"),
        "{}",
        r.stderr
    );
}

/// Measured over seeds 0 and 1 (tiny, 240 steps of batch 8, fork at 160, exp decay over 16
/// steps): the branch ends 0.17–0.21 nats below the trunk at step 176. Asserted margin: 0.08.
#[test]
fn a_ten_percent_exp_branch_on_the_default_preset_ends_clearly_below_the_trunk() {
    let r = run(&[
        "record",
        "--no-record",
        "--preset",
        "tiny",
        "--steps",
        "240",
        "--batch",
        "8",
        "--fork-at",
        "160",
        "--branch-decay",
        "exp:0.1",
        "--eval-every",
        "40",
        "--threads",
        "1",
        "--jsonl",
    ]);
    assert!(r.ok(), "{}", r.stderr);
    let ev = json_lines(&r.stdout);
    let val = |run: u64, step: u64| {
        ev.iter()
            .find(|e| e["type"] == "eval" && e["run"] == run && e["step"] == step)
            .and_then(|e| e["val_loss"].as_f64())
            .unwrap_or_else(|| panic!("no eval of run {run} at step {step}"))
    };
    let (branch, trunk) = (val(1, 176), val(0, 176));
    eprintln!(
        "step 176: branch {branch:.4}, trunk {trunk:.4}, drop {:.4}",
        trunk - branch
    );
    assert!(
        branch < trunk - 0.08,
        "branch {branch:.4} vs trunk {trunk:.4}"
    );
}
