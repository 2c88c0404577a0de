//! `wsdscope export --format tensorboard|csv` end to end: a recorded session with a branch
//! becomes one TensorBoard run directory and one CSV per run; input it cannot take (a
//! checkpoint, a file that is not HDF5, a non-empty --out without --force) gets one clear
//! line, exit 2, and nothing written. (The TensorBoard reader itself checks the event files
//! in tests/python/test_export.py.)

use std::path::Path;

use wsdscope_tests::{SMALL, json_lines, listing, run};

/// Records a 20-step session `dir/s.h5`; returns its path and the events it streamed.
fn record(dir: &Path, extra: &[&str]) -> (String, Vec<serde_json::Value>) {
    let f = dir.join("s.h5");
    let fs = f.to_str().unwrap().to_string();
    let mut args = vec![
        "record",
        "--out",
        &fs,
        "--steps",
        "20",
        "--eval-every",
        "5",
        "--jsonl",
    ];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    let r = run(&args);
    assert!(r.ok(), "{}", r.stderr);
    (fs, json_lines(&r.stdout))
}

/// Exit 2, one line naming `want`, and `dir` as it was.
fn refused(args: &[&str], want: &str, dir: &Path) {
    let before = listing(dir);
    let r = run(args);
    assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
    let line = r.stderr.trim();
    assert!(!line.contains("panicked"), "{args:?}: {line}");
    assert_eq!(
        line.lines().count(),
        1,
        "{args:?}: one line expected: {line}"
    );
    assert!(line.starts_with("error: "), "{args:?}: {line}");
    assert!(line.contains(want), "{args:?}: {line:?} lacks {want:?}");
    assert_eq!(listing(dir), before, "{args:?} wrote something");
}

#[test]
fn a_session_with_a_branch_exports_one_run_each() {
    let dir = tempfile::tempdir().unwrap();
    let (f, events) = record(
        dir.path(),
        &["--fork-at", "10", "--branch-decay", "exp:0.5"],
    );
    let out = dir.path().join("csv");
    let o = out.to_str().unwrap();
    let r = run(&["export", &f, "--format", "csv", "--out", o]);
    assert!(r.ok(), "{}", r.stderr);
    assert!(r.stderr.contains("2 CSV files"), "{}", r.stderr);
    let files = listing(&out);
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0], "run0-trunk.csv");
    assert!(files[1].starts_with("run1-"), "{files:?}");
    let trunk = std::fs::read_to_string(out.join(&files[0])).unwrap();
    let mut lines = trunk.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..4], ["step", "tokens", "phase", "loss"]);
    assert!(header.contains(&"val_loss"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 20, "one row per trunk step");
    assert!(rows.iter().all(|r| r.len() == header.len()));
    let val = header.iter().position(|h| *h == "val_loss").unwrap();
    let with_val: Vec<(u64, f64)> = rows
        .iter()
        .filter(|r| !r[val].is_empty())
        .map(|r| (r[0].parse().unwrap(), r[val].parse().unwrap()))
        .collect();
    let evals: Vec<(u64, f64)> = events
        .iter()
        .filter(|e| e["type"] == "eval" && e["run"] == 0)
        .map(|e| (e["step"].as_u64().unwrap(), e["val_loss"].as_f64().unwrap()))
        .collect();
    assert!(evals.len() >= 4, "{evals:?}");
    assert_eq!(
        with_val, evals,
        "the trunk's evals, at their steps, exactly"
    );

    // TensorBoard: a directory per run with one event file each; --force replaces the old
    // export, and no staging directory is left behind.
    let tb = dir.path().join("tb");
    std::fs::create_dir(&tb).unwrap();
    std::fs::write(tb.join("old"), "x").unwrap();
    let t = tb.to_str().unwrap();
    let r = run(&[
        "export",
        &f,
        "--format",
        "tensorboard",
        "--out",
        t,
        "--force",
    ]);
    assert!(r.ok(), "{}", r.stderr);
    let runs = listing(&tb);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0], "run0-trunk");
    for d in &runs {
        let files = listing(&tb.join(d));
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].starts_with("events.out.tfevents."), "{files:?}");
    }
    assert_eq!(listing(dir.path()), ["csv", "s.h5", "tb"]);
}

#[test]
fn input_it_cannot_take_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = d.join("ck");
    let cks = ck.to_str().unwrap();
    let (f, _) = record(d, &["--checkpoint-every", "10", "--checkpoint-dir", cks]);
    let text = d.join("notes.txt");
    std::fs::write(&text, "not a session").unwrap();
    let full = d.join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), "mine").unwrap();
    let out = d.join("out");
    let o = out.to_str().unwrap();

    refused(
        &["export", cks, "--format", "csv", "--out", o],
        "--format csv exports a session file",
        d,
    );
    refused(
        &["export", cks, "--format", "tensorboard", "--out", o],
        "is a checkpoint",
        d,
    );
    refused(
        &[
            "export",
            text.to_str().unwrap(),
            "--format",
            "tensorboard",
            "--out",
            o,
        ],
        "notes.txt is neither a checkpoint directory nor a session file",
        d,
    );
    refused(
        &[
            "export",
            &f,
            "--format",
            "csv",
            "--out",
            full.to_str().unwrap(),
        ],
        "exists and is not empty (pass --force",
        d,
    );
    assert_eq!(listing(&full), ["keep.txt"]);
    // An unknown format: one line naming it and the allowed ones.
    let r = run(&["export", &f, "--format", "parquet", "--out", o]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("error: invalid value 'parquet' for '--format <FORMAT>'"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("[possible values: hf, tensorboard, csv]"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    assert!(!out.exists());
    // An HDF5 file that is not a session.
    let fake = d.join("fake.h5");
    let mut bytes = b"\x89HDF\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&[0; 512]);
    std::fs::write(&fake, bytes).unwrap();
    refused(
        &[
            "export",
            fake.to_str().unwrap(),
            "--format",
            "csv",
            "--out",
            o,
        ],
        "fake.h5",
        d,
    );
}
