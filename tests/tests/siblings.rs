//! Sibling runs end to end: `--sibling KEY=V1[,V2…]` (and `[[sibling]]` tables) record runs
//! beside the trunk from step 0 on its initial weights and batches — an identical sibling
//! repeats the trunk's loss curve bit for bit, `schedule=cosine` gives the WSD-against-cosine
//! comparison, `hidden=…` runs other shapes — which `inspect` lists with their differences
//! and the run that ended lowest, and `plot` draws; bad values, resuming with siblings and a
//! sibling over the memory budget are refused with a clear message.

use serde_json::Value;
use wsdscope_tests::{SMALL, json_lines, run};

/// `record --jsonl` of the small model for `steps` steps with `extra` flags; its events.
fn record(out: &str, steps: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["record", "--out", out, "--steps", steps, "--jsonl"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--probe-budget", "0"]);
    args.extend_from_slice(extra);
    let r = run(&args);
    assert!(r.ok(), "{}", r.stderr);
    json_lines(&r.stdout)
}

fn series(ev: &[Value], run: u64, key: &str) -> Vec<f64> {
    ev.iter()
        .filter(|e| e["type"] == "step" && e["run"] == run)
        .map(|e| e[key].as_f64().unwrap())
        .collect()
}

fn names(ev: &[Value]) -> Vec<(u64, String, Value)> {
    ev.iter()
        .filter(|e| e["type"] == "run_start")
        .map(|e| {
            (
                e["run"].as_u64().unwrap(),
                e["name"].as_str().unwrap().to_string(),
                e["parent"].clone(),
            )
        })
        .collect()
}

#[test]
fn an_identical_sibling_repeats_the_trunk_and_other_widths_run_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.h5");
    let fs = f.to_str().unwrap();
    // lr=0.01 is the trunk's own lr: this sibling differs in nothing.
    let ev = record(
        fs,
        "30",
        &["--sibling", "lr=0.01", "--sibling", "hidden=16,64"],
    );
    assert_eq!(
        names(&ev),
        [
            (0, "trunk".into(), Value::Null),
            (1, "lr=0.01".into(), Value::Null),
            (2, "hidden=16".into(), Value::Null),
            (3, "hidden=64".into(), Value::Null),
        ]
    );
    let trunk = series(&ev, 0, "loss");
    assert_eq!(trunk.len(), 30);
    assert_eq!(series(&ev, 1, "loss"), trunk, "same weights, same batches");
    // The trunk alone computes the same curve: siblings do not disturb it.
    let alone = record(dir.path().join("a.h5").to_str().unwrap(), "30", &[]);
    assert_eq!(series(&alone, 0, "loss"), trunk);
    for run in [2, 3] {
        assert_eq!(series(&ev, run, "loss").len(), 30);
    }
    let params: Vec<u64> = ev
        .iter()
        .filter(|e| e["type"] == "run_start")
        .map(|e| e["model"]["params"].as_u64().unwrap())
        .collect();
    assert!(params[2] < params[0] && params[0] < params[3], "{params:?}");

    let i = run(&["inspect", fs, "--json"]);
    assert!(i.ok(), "{}", i.stderr);
    let v: Value = serde_json::from_str(&i.stdout).unwrap();
    let sib = v["siblings"].as_array().unwrap();
    assert_eq!(sib.len(), 3);
    assert_eq!(sib[0]["differences"].as_array().unwrap().len(), 0);
    assert_eq!(sib[2]["differences"][0], "hidden 32 → 64");
    let won = &v["lowest_val_loss"];
    let finals: Vec<f64> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["final_val_loss"].as_f64().unwrap())
        .collect();
    let best = finals.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(won["final_val_loss"].as_f64().unwrap(), best);
    let text = run(&["inspect", fs]);
    assert!(text.stdout.contains("siblings ("), "{}", text.stdout);
    assert!(text.stdout.contains("hidden 32 → 16"), "{}", text.stdout);
    assert!(
        text.stdout.contains(&format!(
            "lowest final val loss: run {} ({})",
            won["id"],
            won["label"].as_str().unwrap()
        )),
        "{}",
        text.stdout
    );
}

#[test]
fn schedule_cosine_records_the_wsd_and_cosine_runs_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.h5");
    let fs = f.to_str().unwrap();
    let ev = record(fs, "40", &["--sibling", "schedule=cosine"]);
    assert_eq!(names(&ev)[1].1, "schedule=cosine");
    let (wsd, cos) = (series(&ev, 0, "lr"), series(&ev, 1, "lr"));
    assert_eq!((wsd.len(), cos.len()), (40, 40));
    // The same warmup (4 steps), then WSD holds the peak while cosine falls; both end at
    // the floor 0.1 × peak.
    assert_eq!(wsd[..4], cos[..4]);
    let peak = 0.01;
    assert!(wsd[4..36].iter().all(|&x| x == peak), "{wsd:?}");
    assert!(cos[5..].windows(2).all(|w| w[1] < w[0]), "{cos:?}");
    let mid = 0.1 * peak + 0.9 * peak * 0.5 * (1.0 + (std::f64::consts::PI * 16.0 / 36.0).cos());
    assert!(
        (cos[19] - mid).abs() < 1e-12,
        "step 20: {} vs {mid}",
        cos[19]
    );
    assert!((wsd[39] - 0.1 * peak).abs() < 1e-12 && (cos[39] - 0.1 * peak).abs() < 1e-12);
    // Same initial weights and batch: the first losses agree.
    assert_eq!(series(&ev, 0, "loss")[0], series(&ev, 1, "loss")[0]);
    let text = run(&["inspect", fs]);
    assert!(text.stdout.contains("schedule wsd"), "{}", text.stdout);
    assert!(text.stdout.contains("→ cosine"), "{}", text.stdout);
    let png = dir.path().join("lr.png");
    let p = run(&["plot", fs, "--metric", "lr", "--out", png.to_str().unwrap()]);
    assert!(p.ok(), "{}", p.stderr);
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
}

#[test]
fn toml_sibling_tables_sweep_the_lr() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, "[[sibling]]\nlr = [0.003, 0.03]\n").unwrap();
    let f = dir.path().join("t.h5");
    let ev = record(
        f.to_str().unwrap(),
        "12",
        &["--config", cfg.to_str().unwrap()],
    );
    let n: Vec<String> = names(&ev).into_iter().map(|x| x.1).collect();
    assert_eq!(n, ["trunk", "lr=0.003", "lr=0.03"]);
    assert_eq!(series(&ev, 1, "lr")[5], 0.003);
    assert_eq!(series(&ev, 2, "lr")[5], 0.03);
}

#[test]
fn bad_siblings_resumes_and_budgets_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.h5");
    let os = out.to_str().unwrap();
    for (value, says) in [
        ("lr=abc", "--sibling lr=abc: invalid value 'abc' for '--lr"),
        ("steps=5", "--sibling steps=5: steps cannot differ"),
        (
            "colour=red",
            "--sibling colour=red: there is no setting \"colour\"",
        ),
        (
            "schedule=step",
            "--sibling schedule=step: --schedule \"step\" is not allowed",
        ),
        ("batch=0", "--sibling batch=0: --batch 0 is not allowed"),
    ] {
        let mut args = vec!["record", "--out", os, "--steps", "10", "--sibling", value];
        args.extend_from_slice(SMALL);
        let r = run(&args);
        assert_eq!(r.code, Some(2), "{value}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{value}: {}", r.stderr);
        assert!(!out.exists(), "no session is left behind for {value}");
    }
    // A sibling over the memory budget is refused with a note; the trunk trains on.
    let ev = record(os, "6", &["--memory-budget", "0", "--sibling", "lr=0.003"]);
    assert!(ev.iter().any(|e| {
        e["type"] == "note"
            && e["kind"] == "refused"
            && e["message"]
                .as_str()
                .unwrap()
                .contains("sibling lr=0.003 refused")
    }));
    assert_eq!(series(&ev, 0, "loss").len(), 6);
    assert!(series(&ev, 1, "loss").is_empty());
    // A checkpoint holds the trunk only: --resume refuses --sibling and says what to do.
    let ck = dir.path().join("ck");
    let cks = ck.to_str().unwrap();
    let first = dir.path().join("r.h5");
    record(
        first.to_str().unwrap(),
        "8",
        &[
            "--checkpoint-every",
            "4",
            "--checkpoint-dir",
            cks,
            "--sibling",
            "lr=0.003",
        ],
    );
    let mut with = vec!["record", "--no-record", "--steps", "8", "--resume", cks];
    with.extend_from_slice(SMALL);
    with.extend_from_slice(&["--sibling", "lr=0.003"]);
    let r = run(&with);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("--sibling does not apply to --resume"),
        "{}",
        r.stderr
    );
    // Without --sibling the trunk continues alone from its step-4 checkpoint, and says so.
    let step4 = ck.join("step-00000004");
    let mut alone = vec![
        "record",
        "--jsonl",
        "--no-record",
        "--steps",
        "8",
        "--resume",
    ];
    alone.push(step4.to_str().unwrap());
    alone.extend_from_slice(SMALL);
    let r = run(&alone);
    assert!(r.ok(), "{}", r.stderr);
    assert!(
        r.stderr.contains("the trunk continues alone"),
        "{}",
        r.stderr
    );
    let ev = json_lines(&r.stdout);
    assert_eq!(names(&ev).len(), 1, "only the trunk resumes");
    assert_eq!(series(&ev, 0, "loss").len(), 4);
}
