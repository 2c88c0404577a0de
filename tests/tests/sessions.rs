//! Sessions end to end: `record` writes an HDF5 session that `inspect` and `plot` read; a
//! SIGKILLed recording keeps everything up to its last flush; bad files and paths get one
//! clear line each.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use wsdscope_tests::{SMALL, json_lines, run, wsdscope};

fn record_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["record", "--out", out];
    v.extend_from_slice(SMALL);
    v.extend_from_slice(extra);
    v
}

#[test]
fn record_inspect_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.h5");
    let fs = f.to_str().unwrap();
    let r = run(&record_args(
        fs,
        &["--steps", "30", "--eval-every", "10", "--jsonl"],
    ));
    assert!(r.ok(), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("session: {fs}")), "{}", r.stderr);
    let live = json_lines(&r.stdout);

    let i = run(&["inspect", fs, "--json"]);
    assert!(i.ok(), "{}", i.stderr);
    let v: serde_json::Value = serde_json::from_str(&i.stdout).unwrap();
    assert_eq!(v["format_version"], 3);
    assert_eq!(v["config"]["steps"], 30);
    let run0 = &v["runs"][0];
    assert_eq!(
        (
            run0["id"].as_u64(),
            run0["steps"].as_u64(),
            run0["last_step"].as_u64()
        ),
        (Some(0), Some(30), Some(30))
    );
    assert_eq!(run0["status"], "completed");
    let last_loss = live.iter().rev().find(|e| e["type"] == "step").unwrap()["loss"]
        .as_f64()
        .unwrap();
    assert_eq!(run0["final_train_loss"].as_f64().unwrap(), last_loss);
    let last_val = live.iter().rev().find(|e| e["type"] == "eval").unwrap()["val_loss"]
        .as_f64()
        .unwrap();
    assert_eq!(run0["final_val_loss"].as_f64().unwrap(), last_val);
    let text = run(&["inspect", fs]);
    assert!(
        text.stdout.contains("completed") && text.stdout.contains("1..30 (30)"),
        "{}",
        text.stdout
    );

    for (name, extra) in [
        ("loss.png", vec![]),
        ("lr.svg", vec!["--metric", "lr"]),
        (
            "g.png",
            vec!["--metric", "grad_norm", "--log-y", "--smooth", "0.3"],
        ),
    ] {
        let out = dir.path().join(name);
        let mut args = vec!["plot", fs, "--out", out.to_str().unwrap()];
        args.extend(extra);
        let p = run(&args);
        assert!(p.ok(), "{name}: {}", p.stderr);
        let bytes = std::fs::read(&out).unwrap();
        assert!(bytes.len() > 10_000, "{name} is only {} bytes", bytes.len());
        if name.ends_with(".png") {
            assert_eq!(&bytes[1..4], b"PNG");
        } else {
            let svg = String::from_utf8(bytes).unwrap();
            assert!(svg.contains("<svg") && svg.contains("step") && svg.contains("decay"));
        }
    }
}

#[test]
fn default_session_path_is_timestamped_under_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let r = wsdscope_tests::Ran::from(
        wsdscope()
            .current_dir(dir.path())
            .args(["record", "--steps", "2"])
            .args(SMALL)
            .output()
            .unwrap(),
    );
    assert!(r.ok(), "{}", r.stderr);
    let files: Vec<_> = std::fs::read_dir(dir.path().join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.ends_with(".h5") && name.len() == "20261129-021000.h5".len(),
        "{name}"
    );
    assert!(
        r.stderr.matches(&format!("sessions/{name}")).count() >= 2,
        "printed at start and end: {}",
        r.stderr
    );
}

#[test]
fn sigkill_loses_at_most_the_last_second() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("killed.h5");
    let fs = f.to_str().unwrap();
    let mut child = wsdscope()
        .args(record_args(fs, &["--steps", "1000000", "--jsonl"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["type"] == "step" {
                let _ = tx.send((Instant::now(), v["step"].as_u64().unwrap()));
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("training started");
    let mut seen = vec![first];
    while first.0.elapsed() < Duration::from_millis(2500) {
        if let Ok(x) = rx.recv_timeout(Duration::from_millis(50)) {
            seen.push(x);
        }
    }
    child.kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    child.wait().unwrap();
    seen.extend(rx.try_iter());
    let must_have = seen
        .iter()
        .filter(|(t, _)| *t + Duration::from_secs(1) <= killed_at)
        .map(|(_, s)| *s)
        .max()
        .expect("steps more than a second before the kill");

    let i = run(&["inspect", fs, "--json"]);
    assert!(i.ok(), "inspect after SIGKILL: {}", i.stderr);
    let v: serde_json::Value = serde_json::from_str(&i.stdout).unwrap();
    let steps = v["runs"][0]["steps"].as_u64().unwrap();
    let last = v["runs"][0]["last_step"].as_u64().unwrap();
    eprintln!(
        "killed after step {}; file holds {steps} steps; required {must_have}",
        seen.last().unwrap().1
    );
    assert!(
        last >= must_have && steps == last,
        "file holds {last} steps, needed {must_have}"
    );
    // No end event and no live writer: the run was killed.
    assert_eq!(v["runs"][0]["status"], "killed");
    assert_eq!(v["writer_alive"], false);
    // Opening again works too (the status flags stay cleared).
    assert!(run(&["inspect", fs]).ok());
}

fn refused(args: &[&str], want: &str) {
    let r = run(args);
    assert_ne!(r.code, Some(0), "{args:?} should fail");
    assert!(
        !r.stderr.contains("panicked"),
        "{args:?} panicked: {}",
        r.stderr
    );
    let line = r.stderr.trim();
    assert_eq!(
        line.lines().count(),
        1,
        "{args:?}: one line expected: {line}"
    );
    assert!(line.contains(want), "{args:?}: {line:?} lacks {want:?}");
}

#[test]
fn bad_session_files_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    std::fs::write(p("empty.h5"), b"").unwrap();
    std::fs::write(p("text.h5"), b"not an hdf5 file").unwrap();
    let good = p("good.h5");
    assert!(run(&record_args(&good, &["--steps", "3"])).ok());
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(p("trunc.h5"), &bytes[..bytes.len() / 3]).unwrap();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["inspect".into(), p("missing.h5")],
            format!("{}: no such file", p("missing.h5")),
        ),
        (
            vec!["inspect".into(), d.to_str().unwrap().into()],
            "is a directory".into(),
        ),
        (vec!["inspect".into(), p("empty.h5")], "is empty".into()),
        (
            vec!["inspect".into(), p("text.h5")],
            "is not an HDF5 file".into(),
        ),
        (vec!["inspect".into(), p("trunc.h5")], "is truncated".into()),
        (
            vec!["plot".into(), good.clone(), "--out".into(), p("x.jpg")],
            "must end in .png or .svg".into(),
        ),
        (
            vec![
                "plot".into(),
                good.clone(),
                "--out".into(),
                p("x.png"),
                "--metric".into(),
                "acc".into(),
            ],
            "--metric \"acc\"".into(),
        ),
        (
            vec![
                "plot".into(),
                good.clone(),
                "--out".into(),
                p("x.png"),
                "--runs".into(),
                "4".into(),
            ],
            "no run 4".into(),
        ),
        (
            vec![
                "plot".into(),
                good.clone(),
                "--out".into(),
                p("x.png"),
                "--smooth".into(),
                "0".into(),
            ],
            "--smooth 0".into(),
        ),
        (
            vec![
                "plot".into(),
                good.clone(),
                "--out".into(),
                p("nodir/x.png"),
            ],
            "x.png".into(),
        ),
        (
            vec![
                "record".into(),
                "--out".into(),
                good.clone(),
                "--steps".into(),
                "2".into(),
            ],
            "the file exists".into(),
        ),
        (
            vec!["record".into(), "--out".into(), p("nodir/s.h5")],
            "does not exist".into(),
        ),
        (
            vec!["record".into(), "--out".into(), p("s.txt")],
            "must end in .h5".into(),
        ),
    ];
    for (args, want) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&a, &want);
    }
    // The session that a refused --out named is untouched.
    assert_eq!(std::fs::read(&good).unwrap(), bytes);
}

/// A full disk, simulated with a file-size limit (writes past it fail with EFBIG, as they
/// would with ENOSPC): the recorder sees the space running out before a write fails, stops
/// the run while there is room to record its end, and closes a complete file.
#[test]
fn a_full_disk_stops_training_and_keeps_a_complete_session() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("full.h5");
    let fs = f.to_str().unwrap();
    let mut cmd = wsdscope();
    cmd.args(record_args(fs, &["--steps", "1000000"]));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                // Room for the file's structure, a safety margin and a few hundred steps.
                rlim_cur: 3 << 20,
                rlim_max: 3 << 20,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let r = wsdscope_tests::Ran::from(cmd.output().unwrap());
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let last = r
        .stderr
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.starts_with("error: recording to")
            && last.contains("the disk is nearly full")
            && last.contains("training stopped after step"),
        "{last}"
    );
    let i = run(&["inspect", fs, "--json"]);
    assert!(i.ok(), "the session must stay readable: {}", i.stderr);
    assert!(
        !i.stderr.contains("lost its last"),
        "the file is complete, not cut short: {}",
        i.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&i.stdout).unwrap();
    let run0 = &v["runs"][0];
    let steps = run0["steps"].as_u64().unwrap();
    eprintln!("{last}\nsession keeps {steps} steps");
    assert!(steps > 100, "{steps}");
    assert_eq!(run0["status"], "stopped", "the end is recorded");
    assert!(
        run0["message"]
            .as_str()
            .unwrap_or_default()
            .contains("disk is nearly full"),
        "{run0}"
    );
    assert_eq!(run0["last_step"].as_u64(), Some(steps));
}
