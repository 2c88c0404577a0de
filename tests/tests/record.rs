//! `wsdscope record` end to end: the JSON-lines contract, data sources, checkpoint/resume,
//! non-finite stops, and the parameter counts of the released shapes.

use wsdscope_tests::{SMALL, json_lines, run, step_losses};

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["record", "--no-record"];
    v.extend_from_slice(SMALL);
    v.extend_from_slice(extra);
    v
}

#[test]
fn jsonl_streams_every_event_with_type_and_run() {
    let r = run(&args(&["--steps", "20", "--eval-every", "5", "--jsonl"]));
    assert!(r.ok(), "{}", r.stderr);
    let ev = json_lines(&r.stdout);
    assert_eq!(ev[0]["type"], "run_start");
    assert_eq!(ev[0]["schema_version"], 1);
    assert_eq!(ev[0]["config"]["steps"], 20);
    assert!(ev[0]["data"]["entropy_floor"].as_f64().unwrap() > 0.0);
    assert_eq!(ev.last().unwrap()["type"], "end");
    assert_eq!(ev.last().unwrap()["reason"], "completed");
    assert!(ev.iter().all(|e| e["run"] == 0));
    let steps: Vec<_> = ev.iter().filter(|e| e["type"] == "step").collect();
    assert_eq!(steps.len(), 20);
    for key in [
        "loss",
        "lr",
        "grad_norm",
        "update_norm",
        "param_norm",
        "tokens_per_s",
        "tokens",
    ] {
        assert!(steps[5][key].as_f64().unwrap() > 0.0, "{key}");
    }
    let phases: Vec<&str> = steps.iter().map(|s| s["phase"].as_str().unwrap()).collect();
    assert_eq!(
        (phases[0], phases[10], phases[19]),
        ("warmup", "stable", "decay")
    );
    let evals: Vec<u64> = ev
        .iter()
        .filter(|e| e["type"] == "eval")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        evals,
        vec![5, 10, 15, 18, 20],
        "every 5, the end of stable (18) and the end"
    );
    // Progress went to stderr, not into the JSON stream.
    assert!(
        r.stderr.contains("entropy floor") && r.stderr.contains("done: 20 steps"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = step_losses(&json_lines(
        &run(&args(&["--steps", "6", "--jsonl"])).stdout,
    ));
    let b = step_losses(&json_lines(
        &run(&args(&["--steps", "6", "--jsonl"])).stdout,
    ));
    let c = step_losses(&json_lines(
        &run(&args(&["--steps", "6", "--jsonl", "--seed", "1"])).stdout,
    ));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn half_then_resume_equals_straight_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let ck = ck.to_str().unwrap();
    let straight = step_losses(&json_lines(
        &run(&args(&["--steps", "16", "--jsonl"])).stdout,
    ));
    // The first half: a run of 16 steps stopped after 8 is not available from the CLI, so
    // checkpoint every 8 steps and resume from the step-8 checkpoint.
    let full = run(&args(&[
        "--steps",
        "16",
        "--jsonl",
        "--checkpoint-every",
        "8",
        "--checkpoint-dir",
        ck,
    ]));
    assert!(full.ok(), "{}", full.stderr);
    let step8 = format!("{ck}/step-00000008");
    let resumed = run(&[
        "record",
        "--no-record",
        "--resume",
        &step8,
        "--threads",
        "1",
        "--jsonl",
    ]);
    assert!(resumed.ok(), "{}", resumed.stderr);
    let ev = json_lines(&resumed.stdout);
    assert_eq!(ev[0]["start_step"], 8);
    let mut joined = straight[..8].to_vec();
    joined.extend(step_losses(&ev));
    assert_eq!(
        joined, straight,
        "resumed losses differ from the straight run"
    );
    // The original command line with --resume appended is accepted: every flag equals the
    // saved run's value, and the run continues bit-identically.
    let mut again = args(&[
        "--steps",
        "16",
        "--jsonl",
        "--checkpoint-every",
        "8",
        "--checkpoint-dir",
        ck,
    ]);
    again.extend(["--resume", &step8]);
    let again = run(&again);
    assert!(again.ok(), "{}", again.stderr);
    let mut joined = straight[..8].to_vec();
    joined.extend(step_losses(&json_lines(&again.stdout)));
    assert_eq!(joined, straight, "the same command line resumed differs");
    // A flag that differs is refused with both values named, and nothing is written.
    let r = run(&["record", "--resume", &step8, "--lr", "0.1", "--steps", "16"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("--lr 0.1 differs from the saved run's 0.01; drop it"),
        "{}",
        r.stderr
    );
    let r = run(&["record", "--resume", &step8, "--steps", "40", "--seed", "7"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("--steps 40 differs from the saved run's 16")
            && r.stderr.contains("--seed 7 differs from the saved run's 0")
            && r.stderr.contains("drop them"),
        "{}",
        r.stderr
    );
}

#[test]
fn non_finite_loss_stops_with_the_step_and_no_poisoned_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let r = run(&args(&[
        "--steps",
        "10",
        "--lr",
        "1e30",
        "--schedule",
        "constant",
        "--warmup",
        "0",
        "--jsonl",
        "--checkpoint-every",
        "1",
        "--checkpoint-dir",
        ck.to_str().unwrap(),
    ]));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("non-finite") && r.stderr.contains("at step 2"),
        "{}",
        r.stderr
    );
    let end = json_lines(&r.stdout).pop().unwrap();
    assert_eq!(end["reason"], "failed");
    assert!(end["message"].as_str().unwrap().contains("step 2"));
    assert!(ck.join("step-00000001").exists());
    assert!(!ck.join("step-00000002").exists());
}

#[test]
fn text_tokenizer_and_token_file_data() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("corpus.txt");
    let body: String = (0..400)
        .map(|i| format!("line {i}: the cat sat on the mat; the dog ran in the fog. "))
        .collect();
    std::fs::write(&text, &body).unwrap();
    let t = text.to_str().unwrap();

    // (b) bytes: the vocab defaults to 256.
    let r = run(&[
        "record",
        "--no-record",
        "--data",
        t,
        "--steps",
        "3",
        "--seq",
        "32",
        "--batch",
        "2",
        "--hidden",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--ffn",
        "64",
        "--threads",
        "1",
        "--jsonl",
    ]);
    assert!(r.ok(), "{}", r.stderr);
    assert_eq!(json_lines(&r.stdout)[0]["model"]["vocab"], 256);

    // (c) a tokenizer trained here, then used for training.
    let tok = dir.path().join("tokenizer.json");
    let r = run(&[
        "tokenizer",
        "train",
        t,
        "--vocab",
        "300",
        "--out",
        tok.to_str().unwrap(),
    ]);
    assert!(r.ok(), "{}", r.stderr);
    let r = run(&[
        "record",
        "--no-record",
        "--data",
        t,
        "--tokenizer",
        tok.to_str().unwrap(),
        "--steps",
        "3",
        "--seq",
        "16",
        "--batch",
        "2",
        "--hidden",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--ffn",
        "64",
        "--threads",
        "1",
        "--jsonl",
    ]);
    assert!(r.ok(), "{}", r.stderr);
    let start = &json_lines(&r.stdout)[0];
    assert_eq!(start["model"]["vocab"], 300);
    assert!(
        start["data"]["train_tokens"].as_u64().unwrap() < body.len() as u64 / 2,
        "BPE compresses"
    );

    // (d) uint16 and uint32 token files.
    for (ext, width) in [("u16", 2usize), ("u32", 4)] {
        let p = dir.path().join(format!("tokens.{ext}"));
        let bytes: Vec<u8> = (0..5000u32)
            .flat_map(|i| {
                let t = (i * 7919) % 100;
                if width == 2 {
                    (t as u16).to_le_bytes().to_vec()
                } else {
                    t.to_le_bytes().to_vec()
                }
            })
            .collect();
        std::fs::write(&p, bytes).unwrap();
        let r = run(&[
            "record",
            "--no-record",
            "--data",
            p.to_str().unwrap(),
            "--vocab",
            "100",
            "--steps",
            "2",
            "--seq",
            "16",
            "--batch",
            "2",
            "--hidden",
            "32",
            "--layers",
            "1",
            "--heads",
            "2",
            "--ffn",
            "64",
            "--threads",
            "1",
            "--jsonl",
        ]);
        assert!(r.ok(), "{ext}: {}", r.stderr);
        assert_eq!(json_lines(&r.stdout)[0]["data"]["train_tokens"], 4500);
    }
}

#[test]
fn dry_run_prints_the_paper_parameter_counts() {
    let r = run(&["record", "--preset", "minicpm-1.2b", "--dry-run"]);
    assert!(r.ok(), "{}", r.stderr);
    assert!(
        r.stdout.contains("1,247,442,432 non-embedding"),
        "{}",
        r.stdout
    );
    let r = run(&["record", "--preset", "minicpm-2.4b", "--dry-run"]);
    assert!(
        r.stdout.contains("2,442,057,984 non-embedding"),
        "{}",
        r.stdout
    );
    let r = run(&["presets"]);
    assert!(r.stdout.contains("wt-0.5b") && r.stdout.contains("1,247,442,432"));
}

#[test]
fn bench_prints_json_figures() {
    let r = run(&[
        "bench",
        "--hidden",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--ffn",
        "64",
        "--vocab",
        "64",
        "--seq",
        "16",
        "--batch",
        "2",
        "--steps",
        "3",
        "--warmup-steps",
        "1",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(r.ok(), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["step_ms_median"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_mb"].as_f64().unwrap() > 1.0);
}
