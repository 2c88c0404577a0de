//! Headless runs as an unattended job sees them: SIGINT and SIGTERM in the middle of a real
//! `record` (a clean stop, a checkpoint, the `end` event, the exit status, and a resume that
//! continues bit-identically), a second signal, a SIGKILL at the recorder's riskiest instants,
//! and writes that fail for a while and then succeed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;
use wsdscope_tests::{
    SMALL, collect_json_lines, json_lines, listing, run, session_events, step_losses, wsdscope,
};

/// A `record` child whose `--jsonl` lines arrive on a channel as they are printed.
struct Job {
    child: Child,
    lines: Receiver<Value>,
    seen: Vec<Value>,
}

impl Job {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Job {
        let mut cmd = wsdscope();
        cmd.current_dir(dir)
            .arg("record")
            .args(SMALL)
            .args(args)
            .arg("--jsonl")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("wsdscope starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).expect("a JSON line");
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Job {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (60 s at most) until the trunk has reported step `step`.
    fn wait_for_step(&mut self, step: u64) {
        let t0 = Instant::now();
        while !self
            .seen
            .iter()
            .any(|e| e["type"] == "step" && e["run"] == 0 && e["step"].as_u64() >= Some(step))
        {
            assert!(t0.elapsed() < Duration::from_secs(60), "no step {step}");
            if let Ok(v) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(v);
            }
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits for the process; returns its exit code, stderr and every JSON line it printed.
    fn finish(mut self) -> (Option<i32>, String, Vec<Value>) {
        let mut err = String::new();
        use std::io::Read;
        self.child
            .stderr
            .take()
            .expect("piped")
            .read_to_string(&mut err)
            .unwrap();
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        (status.code(), err, self.seen)
    }
}

/// The flags of the interrupted jobs below: long enough to be interrupted mid-run.
const JOB: &[&str] = &["--steps", "3000", "--eval-every", "100"];

fn trunk_end(events: &[Value]) -> &Value {
    events
        .iter()
        .rev()
        .find(|e| e["type"] == "end" && e["run"] == 0)
        .expect("the trunk's end event")
}

fn inspect(path: &Path) -> Value {
    let i = run(&["inspect", path.to_str().unwrap(), "--json"]);
    assert!(i.ok(), "inspect {}: {}", path.display(), i.stderr);
    serde_json::from_str(&i.stdout).unwrap()
}

/// The losses of the same run straight through, for comparing a resumed one with.
fn straight_losses() -> Vec<f64> {
    let mut args = vec!["record", "--no-record", "--jsonl"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(JOB);
    let r = run(&args);
    assert!(r.ok(), "{}", r.stderr);
    step_losses(&json_lines(&r.stdout))
}

/// SIGTERM (what Slurm and Kubernetes send before preempting a job) in the middle of a
/// headless run without --checkpoint-dir: the step finishes, a checkpoint goes next to the
/// session, the end is recorded, the exit status is 143, and the printed command resumes the
/// run bit-identically into a new session beside the first.
#[test]
fn sigterm_checkpoints_next_to_the_session_and_the_printed_command_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::start(dir.path(), &[&["--out", "s.h5"], JOB].concat(), &[]);
    job.wait_for_step(300);
    job.signal(libc::SIGTERM);
    let (code, err, events) = job.finish();
    assert_eq!(code, Some(143), "{err}");
    let end = trunk_end(&events);
    assert_eq!(end["reason"], "stopped");
    assert_eq!(end["message"], "interrupted by SIGTERM");
    let at = end["step"].as_u64().unwrap();
    assert!((300..3000).contains(&at), "{at}");
    let ck = events
        .iter()
        .find(|e| e["type"] == "checkpoint" && e["run"] == 0)
        .expect("a checkpoint event");
    let ck_path = ck["path"].as_str().unwrap();
    assert!(
        ck_path.ends_with(&format!("s.checkpoints/step-{at:08}")),
        "{ck_path}"
    );
    assert!(
        dir.path().join(ck_path).join("model.safetensors").exists()
            || Path::new(ck_path).join("model.safetensors").exists()
    );
    // The session holds everything, the end included.
    let v = inspect(&dir.path().join("s.h5"));
    assert_eq!(v["runs"][0]["status"], "stopped");
    assert_eq!(v["runs"][0]["last_step"].as_u64(), Some(at));
    assert_eq!(v["runs"][0]["message"], "interrupted by SIGTERM");
    for want in [
        "interrupted by SIGTERM: stopped after step",
        "session: s.h5",
        "checkpoint: s.checkpoints/step-",
        "resume with: wsdscope record",
    ] {
        assert!(err.contains(want), "stderr lacks {want:?}:\n{err}");
    }
    // The printed command, run as a user would paste it, continues the run.
    let command = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("resume with: wsdscope "))
        .expect("a resume command");
    let bin = wsdscope_tests::binary();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' {command}", bin.display()))
        .current_dir(dir.path())
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let resumed = wsdscope_tests::Ran::from(out);
    assert!(resumed.ok(), "{command}: {}", resumed.stderr);
    let after = json_lines(&resumed.stdout);
    assert_eq!(after[0]["start_step"].as_u64(), Some(at));
    let mut joined: Vec<f64> = step_losses(&events)[..at as usize].to_vec();
    joined.extend(step_losses(&after));
    assert_eq!(joined, straight_losses(), "the resumed run differs");
    // The first session is untouched; the resumed one went beside it.
    assert!(dir.path().join(format!("s.resume-{at}.h5")).exists());
    assert_eq!(
        inspect(&dir.path().join("s.h5"))["runs"][0]["last_step"].as_u64(),
        Some(at)
    );
}

/// SIGINT (Ctrl-C) with --checkpoint-dir: the checkpoint goes there and the exit status is
/// 130; without one, no checkpoint is written and the user is told how to get one.
#[test]
fn sigint_stops_cleanly_with_and_without_a_checkpoint_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::start(
        dir.path(),
        &[&["--out", "a.h5", "--checkpoint-dir", "ck"], JOB].concat(),
        &[],
    );
    job.wait_for_step(200);
    job.signal(libc::SIGINT);
    let (code, err, events) = job.finish();
    assert_eq!(code, Some(130), "{err}");
    let end = trunk_end(&events);
    assert_eq!(end["message"], "interrupted by SIGINT");
    let at = end["step"].as_u64().unwrap();
    assert!(
        dir.path()
            .join(format!("ck/step-{at:08}/trainer_state.json"))
            .exists()
    );
    assert!(
        err.contains("resume with: wsdscope record") && err.contains("--resume ck"),
        "{err}"
    );
    assert_eq!(
        inspect(&dir.path().join("a.h5"))["runs"][0]["status"],
        "stopped"
    );
    // The same command line with --resume continues bit-identically.
    let resumed = Job::start(
        dir.path(),
        &[
            &["--out", "a.h5", "--checkpoint-dir", "ck"],
            JOB,
            &["--resume", "ck"],
        ]
        .concat(),
        &[],
    );
    let (code, err, after) = resumed.finish();
    assert_eq!(code, Some(0), "{err}");
    let mut joined: Vec<f64> = step_losses(&events)[..at as usize].to_vec();
    joined.extend(step_losses(&after));
    assert_eq!(joined, straight_losses(), "the resumed run differs");

    let mut job = Job::start(dir.path(), &[&["--out", "b.h5"], JOB].concat(), &[]);
    job.wait_for_step(100);
    job.signal(libc::SIGINT);
    let (code, err, events) = job.finish();
    assert_eq!(code, Some(130), "{err}");
    assert!(!events.iter().any(|e| e["type"] == "checkpoint"));
    assert!(err.contains("no checkpoint was written"), "{err}");
    assert!(!dir.path().join("b.checkpoints").exists());
    assert_eq!(
        inspect(&dir.path().join("b.h5"))["runs"][0]["status"],
        "stopped"
    );
}

/// A second signal exits at once even while the first is still being handled (here the
/// recorder is held in the middle of a flush), and the file stays readable.
#[test]
fn a_second_signal_exits_at_once_leaving_a_readable_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::start(
        dir.path(),
        // The probe (where the recorder is held) comes late enough that the writer has
        // flushed steps before it (it flushes twice a second; a step here takes ~1 ms).
        &[&["--out", "s.h5", "--probe-every", "2500"], JOB].concat(),
        &[("WSDSCOPE_TEST_PAUSE", "probe")],
    );
    job.wait_for_step(2510);
    job.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        job.child.try_wait().unwrap().is_none(),
        "the recorder is held"
    );
    let t0 = Instant::now();
    job.signal(libc::SIGINT);
    let (code, err, _) = job.finish();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("second SIGINT"), "{err}");
    let v = inspect(&dir.path().join("s.h5"));
    assert!(v["runs"][0]["steps"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["runs"][0]["status"], "killed");
}

/// Where the recorder pauses and what the file then holds: `events before seq N are in the
/// file`.
fn paused_at(err_line: &str) -> u64 {
    err_line
        .split("before seq ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {err_line:?}"))
}

/// Starts a job that pauses at `point`, waits for the pause, SIGKILLs it there, and returns
/// the durable seq the recorder reported and the JSON lines printed before the kill.
fn kill_at(dir: &Path, out: &str, point: &str, extra: &[&str]) -> (u64, Vec<Value>) {
    let mut cmd = wsdscope();
    cmd.current_dir(dir)
        .arg("record")
        .args(SMALL)
        .args(["--out", out, "--jsonl", "--steps", "3000"])
        .args(extra)
        .env("WSDSCOPE_TEST_PAUSE", point)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let printed = collect_json_lines(stdout);
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut durable = None;
    let mut said = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        // The line may follow a fragment of a progress line the training side was writing.
        if line.contains("wsdscope-test: paused at") {
            durable = Some(paused_at(&line));
            break;
        }
        said.push(line);
    }
    let durable = durable.unwrap_or_else(|| {
        let status = child.wait().unwrap();
        panic!(
            "{point}: the recorder never paused; the run ended with {status} after {:?}, saying:\n{}",
            t0.elapsed(),
            said.join("\n")
        )
    });
    eprintln!("{out}: paused at {point} after {:?}", t0.elapsed());
    child.kill().unwrap(); // SIGKILL, in the pause
    child.wait().unwrap();
    (durable, printed.join().unwrap())
}

/// A SIGKILL inside the recorder's riskiest instants — while it builds the file, and in the
/// middle of the flush that follows a fork or a new probe kind — leaves either no file (the
/// file gets its name only once complete) or one that opens with every event flushed before
/// the kill, exactly as the run printed it.
#[test]
fn sigkill_at_the_recorders_pause_points_leaves_a_readable_session() {
    let dir = tempfile::tempdir().unwrap();
    // While the file is built: nothing is at the path, and the next recording takes it.
    let (_, _) = kill_at(dir.path(), "c.h5", "create", &[]);
    assert!(!dir.path().join("c.h5").exists());
    let again = wsdscope()
        .current_dir(dir.path())
        .args(["record", "--out", "c.h5", "--steps", "5"])
        .args(SMALL)
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let leftovers: Vec<String> = listing(dir.path())
        .into_iter()
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Mid-flush after a fork, at three different forks, and after the first probe.
    for (i, (point, extra)) in [
        ("fork", vec!["--fork-at", "40", "--branch-decay", "exp:20"]),
        ("fork", vec!["--fork-at", "777", "--branch-decay", "exp:20"]),
        (
            "fork",
            vec!["--fork-at", "1500,1600", "--branch-decay", "exp:200"],
        ),
        ("probe", vec!["--probe-every", "333"]),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("k{i}.h5");
        let (durable, printed) = kill_at(dir.path(), &name, point, &extra);
        let path = dir.path().join(&name);
        let v = inspect(&path);
        assert_eq!(v["writer_alive"], false);
        // Every event flushed before the kill is in the file, as printed.
        let back = session_events(dir.path(), &name).unwrap_or_else(|e| panic!("{point}: {e}"));
        assert!(
            back.len() as u64 >= durable,
            "{point}: {} events in the file, {durable} were flushed",
            back.len()
        );
        assert_eq!(
            back[..],
            printed[..back.len()],
            "{point}: the file differs from the run"
        );
    }
}

/// Writes that fail for a while (a busy file, as a reader's lock once caused) are retried
/// with backoff while training goes on; the run completes with every event in the file.
#[test]
fn transient_write_failures_are_retried_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::start(
        dir.path(),
        &["--out", "s.h5", "--steps", "600", "--probe-every", "50"],
        &[("WSDSCOPE_TEST_FAULTS", "flush-busy:4")],
    );
    let (code, err, events) = job.finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("retrying with backoff"), "{err}");
    assert!(err.contains("recovered after 4 retries"), "{err}");
    assert_eq!(session_events(dir.path(), "s.h5").unwrap(), events);
}

/// SIGKILL at random instants — during start-up, between steps, inside probes and forks —
/// never leaves an unreadable session: the path holds either nothing (killed before the file
/// was complete) or a session that opens and holds a prefix of the stream the run printed.
#[test]
fn sigkill_at_random_instants_never_leaves_an_unreadable_session() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut x = seed | 1;
    let mut opened = 0;
    for i in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(10 + x % 1500);
        let name = format!("r{i}.h5");
        let mut child = wsdscope()
            .current_dir(dir.path())
            .arg("record")
            .args(SMALL)
            .args(["--out", &name, "--jsonl", "--steps", "100000"])
            .args([
                "--probe-every",
                "7",
                "--fork-at",
                "30,200",
                "--branch-decay",
                "exp:100",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let printed = collect_json_lines(stdout);
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        let printed = printed.join().unwrap();
        let path = dir.path().join(&name);
        if !path.exists() {
            eprintln!("killed after {delay:?} (seed {seed}): no file yet");
            continue;
        }
        let back = session_events(dir.path(), &name)
            .unwrap_or_else(|e| panic!("killed after {delay:?} (seed {seed}): {e}"));
        // Events reach the recorder before the printer: the overlap must agree.
        let n = back.len().min(printed.len());
        assert_eq!(
            back[..n],
            printed[..n],
            "killed after {delay:?} (seed {seed})"
        );
        opened += 1;
        eprintln!(
            "killed after {delay:?}: {} events in the file, {} printed",
            back.len(),
            printed.len()
        );
    }
    assert!(
        opened > 0,
        "every kill came before the file existed (seed {seed})"
    );
}
