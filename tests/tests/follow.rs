//! Watching a live run from a second terminal, and stopping a TUI run with a signal: the real
//! binary in pseudo-terminals (tmux). A `replay --follow` attached to a headless `record`
//! through periodic probes and forks never harms it, and shows promptly how the recording
//! ended — completed, or killed. SIGTERM to `wsdscope run` restores the terminal and stops
//! the run as `record` does. Needs tmux (CI installs it); without it these tests fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use wsdscope_tests::{SMALL, Tmux, binary, json_lines, session_events, wsdscope};

/// `wsdscope ARGS…` as a shell command that prints its exit status when it ends.
fn shell(args: &[&str]) -> String {
    let mut cmd = format!("RAYON_NUM_THREADS=1 '{}'", binary().display());
    for a in args {
        cmd.push_str(&format!(" '{a}'"));
    }
    format!("{cmd}; echo EXIT=$?")
}

/// A headless `record` into `dir/s.h5` with its `--jsonl` stream in `dir/events.jsonl`.
fn record(dir: &Path, extra: &[&str]) -> Child {
    let out = std::fs::File::create(dir.join("events.jsonl")).unwrap();
    wsdscope()
        .current_dir(dir)
        .args(["record", "--out", "s.h5", "--jsonl"])
        .args(SMALL)
        .args(extra)
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("wsdscope record starts")
}

fn wait_for_file(p: &Path) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A follower attached for the whole of a headless run with probes every 10 steps and two
/// forks: the run completes with every event in the file, and the follower shows the
/// completion within a few seconds.
#[test]
fn a_follower_never_harms_the_run_and_shows_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = record(
        dir.path(),
        &[
            "--steps",
            "4000",
            "--probe-every",
            "10",
            "--fork-at",
            "1000,2000",
            "--branch-decay",
            "exp:400",
        ],
    );
    wait_for_file(&dir.path().join("s.h5"));
    let t = Tmux::start(dir.path(), 140, 40, &shell(&["replay", "--follow", "s.h5"]));
    t.wait_for("following", |s| s.contains("following"));
    let status = rec.wait().unwrap();
    let ended = Instant::now();
    assert!(status.success(), "the recording failed: {status:?}");
    let s = t.wait_for("the follower shows the end", |s| {
        s.contains("✔ completed") && s.contains("recording closed")
    });
    assert!(
        ended.elapsed() < Duration::from_secs(5),
        "shown after {:?}:\n{s}",
        ended.elapsed()
    );
    let streamed = json_lines(&std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap());
    assert_eq!(
        session_events(dir.path(), "s.h5").unwrap(),
        streamed,
        "every event is in the file"
    );
    let kinds: std::collections::BTreeSet<&str> = streamed
        .iter()
        .filter(|e| e["type"] == "probe")
        .filter_map(|e| e["probe"].as_str())
        .collect();
    assert!(kinds.len() >= 5, "{kinds:?}");
    t.keys(&["q"]);
    let end = t.wait_for("replay exits", |s| s.contains("EXIT="));
    assert!(end.contains("EXIT=0"), "{end}");
}

/// When the recording process is killed, the follower says so instead of showing the run
/// as running for ever.
#[test]
fn a_follower_shows_a_killed_recording() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = record(dir.path(), &["--steps", "1000000"]);
    wait_for_file(&dir.path().join("s.h5"));
    let t = Tmux::start(dir.path(), 140, 40, &shell(&["replay", "--follow", "s.h5"]));
    t.wait_for("running", |s| {
        s.contains("● running") && s.contains("following")
    });
    rec.kill().unwrap(); // SIGKILL
    rec.wait().unwrap();
    let killed = Instant::now();
    let s = t.wait_for("the follower shows the kill", |s| {
        s.contains("killed: no end recorded")
    });
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "shown after {:?}:\n{s}",
        killed.elapsed()
    );
    t.keys(&["q"]);
    t.wait_for("replay exits", |s| s.contains("EXIT=0"));
}

/// SIGTERM to a TUI run: the terminal is restored, the run stops with a checkpoint next to
/// the session and its end recorded, and the exit status is 143.
#[test]
fn sigterm_stops_a_tui_run_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file: PathBuf = dir.path().join("pid");
    // The inner shell writes its own pid (escaped from the outer shell) and execs wsdscope in
    // the foreground of the terminal, keeping that pid.
    let mut inner = format!(
        "echo \\$\\$ > pid; RAYON_NUM_THREADS=1 exec '{}' run --out s.h5 --steps 1000000",
        binary().display()
    );
    for a in SMALL {
        inner.push_str(&format!(" '{a}'"));
    }
    let t = Tmux::start(
        dir.path(),
        140,
        40,
        &format!("sh -c \"{inner}\"; echo EXIT=$?"),
    );
    t.wait_for("training", |s| {
        s.contains("● running") && s.contains("tok/s")
    });
    wait_for_file(&pid_file);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the pid the test's own shell wrote.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let end = t.wait_for("exit", |s| s.contains("EXIT="));
    assert!(end.contains("EXIT=143"), "{end}");
    assert!(
        end.contains("interrupted by SIGTERM") && end.contains("resume with: wsdscope run"),
        "{end}"
    );
    assert!(!end.contains("● running"), "the TUI is gone:\n{end}");
    let events = session_events(dir.path(), "s.h5").unwrap();
    let trunk_end = events
        .iter()
        .rev()
        .find(|e| e["type"] == "end" && e["run"] == 0)
        .expect("the trunk's end is recorded");
    assert_eq!(trunk_end["message"], "interrupted by SIGTERM");
    let at = trunk_end["step"].as_u64().unwrap();
    assert!(
        dir.path()
            .join(format!("s.checkpoints/step-{at:08}/trainer_state.json"))
            .exists()
    );
}
