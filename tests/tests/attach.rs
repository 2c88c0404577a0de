//! Attaching to a running job: a headless `record` serves its control endpoint, and viewers
//! — raw clients speaking the line protocol here, and `wsdscope attach` in a pseudo-terminal
//! (tmux) — follow it and steer it. The catch-up from the session file plus the live events
//! are the session's events without a gap or a duplicate; commands take effect; a wrong
//! token, garbage and unknown commands are refused and change nothing; several viewers may
//! attach, and one that stops reading never slows or stops the run; detaching leaves the run
//! running. Needs tmux (CI installs it); without it the TUI test fails.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wsdscope_tests::{SMALL, Tmux, binary, json_lines, session_events, wsdscope};

/// A run long enough to outlast every test (they stop it).
const LONG: &[&str] = &["--steps", "400000"];

/// A headless `record` into `dir/s.h5`, `--jsonl` into `dir/events.jsonl`, stderr into
/// `dir/stderr.txt`.
fn record(dir: &Path, extra: &[&str]) -> Child {
    let out = std::fs::File::create(dir.join("events.jsonl")).unwrap();
    let err = std::fs::File::create(dir.join("stderr.txt")).unwrap();
    wsdscope()
        .current_dir(dir)
        .env("RAYON_NUM_THREADS", "1")
        .args(["record", "--out", "s.h5", "--jsonl"])
        .args(SMALL)
        .args(extra)
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("wsdscope record starts")
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn socket(dir: &Path) -> PathBuf {
    let p = dir.join("s.h5.sock");
    wait_until("the control socket appears", || p.exists());
    p
}

/// Waits for the child to end (60 s at most).
fn wait_exit(child: &mut Child) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the run did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw client of the line protocol.
struct Client {
    input: BufReader<Box<dyn std::io::Read + Send>>,
    out: Box<dyn Write + Send>,
}

impl Client {
    fn unix(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("the socket takes connections");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Client {
            out: Box::new(s.try_clone().unwrap()),
            input: BufReader::new(Box::new(s)),
        }
    }

    fn tcp(addr: &str) -> Client {
        let s = TcpStream::connect(addr).expect("the port takes connections");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Client {
            out: Box::new(s.try_clone().unwrap()),
            input: BufReader::new(Box::new(s)),
        }
    }

    fn send(&mut self, line: &str) {
        self.out
            .write_all(format!("{line}\n").as_bytes())
            .expect("the server reads");
    }

    /// The next line, `None` at the end of the stream.
    fn next(&mut self) -> Option<Value> {
        let mut l = String::new();
        match self.input.read_line(&mut l) {
            Ok(0) => None,
            Ok(_) => {
                Some(serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            }
            Err(e) => panic!("reading from the server: {e}"),
        }
    }

    /// Says hello and returns the welcome's `delivered`.
    fn hello(&mut self, token: Option<&str>) -> u64 {
        let mut h = json!({"cmd": "hello", "protocol": 1});
        if let Some(t) = token {
            h["token"] = json!(t);
        }
        self.send(&h.to_string());
        let w = self.next().expect("a welcome");
        assert_eq!(w["msg"], "welcome", "{w}");
        assert!(w["session"].as_str().unwrap().ends_with("s.h5"), "{w}");
        w["delivered"].as_u64().unwrap()
    }

    /// Reads lines into `events` (events) and `msgs` (replies) until `stop` holds for one.
    fn until(
        &mut self,
        events: &mut Vec<Value>,
        msgs: &mut Vec<Value>,
        mut stop: impl FnMut(&Value) -> bool,
    ) {
        loop {
            let v = self.next().expect("the stream goes on");
            let done = stop(&v);
            if v.get("msg").is_some() {
                msgs.push(v);
            } else {
                events.push(v);
            }
            if done {
                return;
            }
        }
    }

    /// Reads to the end of the stream.
    fn rest(&mut self, events: &mut Vec<Value>, msgs: &mut Vec<Value>) {
        while let Some(v) = self.next() {
            if v.get("msg").is_some() {
                msgs.push(v);
            } else {
                events.push(v);
            }
        }
    }
}

/// What identifies an event, whatever the last bits of its floats (a probe's scalars read
/// back from the file may differ from the live ones in the last place).
fn key(e: &Value) -> String {
    format!(
        "{} run {} step {} {}{}",
        e["type"], e["run"], e["step"], e["probe"], e["kind"]
    )
}

fn steps(events: &[Value]) -> usize {
    events.iter().filter(|e| e["type"] == "step").count()
}

/// A viewer attached mid-run sees the session's events exactly once in order (the catch-up
/// from the file, then live), and its pause, fork, resume and stop take effect.
#[test]
fn catch_up_then_live_is_the_whole_session_and_commands_steer_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = record(dir.path(), LONG);
    let sock = socket(dir.path());
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is its owner's only");
    std::thread::sleep(Duration::from_millis(500));

    let mut c = Client::unix(&sock);
    let delivered = c.hello(None);
    assert!(delivered > 0, "attached mid-run");
    let (mut events, mut msgs) = (Vec::new(), Vec::new());
    c.until(&mut events, &mut msgs, |v| v["msg"] == "caught_up");
    assert_eq!(
        events.len() as u64,
        delivered,
        "the catch-up is what came before"
    );
    assert_eq!(msgs.last().unwrap()["events"], delivered);

    c.send(r#"{"cmd":"pause"}"#);
    c.until(&mut events, &mut msgs, |v| {
        v["type"] == "note" && v["kind"] == "paused"
    });
    c.send(r#"{"cmd":"fork","parent":0,"length":{"steps":100},"shape":"linear","floor":0.1}"#);
    c.until(&mut events, &mut msgs, |v| v["type"] == "forked");
    c.send(r#"{"cmd":"resume"}"#);
    c.until(&mut events, &mut msgs, |v| {
        v["type"] == "end" && v["run"] == 1
    });
    c.send(r#"{"cmd":"stop"}"#);
    c.rest(&mut events, &mut msgs);
    assert_eq!(msgs.last().unwrap()["msg"], "ended", "{msgs:?}");
    for cmd in ["pause", "fork", "resume", "stop"] {
        assert!(
            msgs.iter()
                .any(|m| m["msg"] == "accepted" && m["cmd"] == cmd),
            "{cmd} accepted: {msgs:?}"
        );
    }
    assert!(
        !msgs.iter().any(|m| m["msg"] == "dropped"),
        "nothing dropped: {msgs:?}"
    );

    let status = wait_exit(&mut rec);
    assert!(status.success(), "the run failed: {status:?}");
    assert!(!sock.exists(), "the socket is removed at the end");
    let end = events
        .iter()
        .find(|e| e["type"] == "end" && e["run"] == 0)
        .unwrap();
    assert_eq!(end["reason"], "stopped", "{end}");

    let session = session_events(dir.path(), "s.h5").unwrap();
    assert_eq!(events.len(), session.len(), "no gap, no duplicate");
    let (ours, theirs): (Vec<_>, Vec<_>) = (
        events.iter().map(key).collect(),
        session.iter().map(key).collect(),
    );
    assert_eq!(ours, theirs);
    // The catch-up came from the file itself.
    assert_eq!(
        &events[..delivered as usize],
        &session[..delivered as usize]
    );
    // The live part is what the pipeline delivered (as --jsonl printed it).
    let jsonl = json_lines(&std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap());
    assert_eq!(&events[delivered as usize..], &jsonl[delivered as usize..]);
}

/// The first `listening on ADDR: … --token T` line of the run's stderr.
fn listening(dir: &Path) -> (String, String) {
    let mut found = None;
    wait_until("the run prints its TCP address and token", || {
        let err = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
        found = err.lines().find_map(|l| {
            let rest = l.strip_prefix("listening on ")?;
            let (addr, tail) = rest.split_once(": ")?;
            let token = tail.split("--token ").nth(1)?.trim().to_string();
            Some((addr.to_string(), token))
        });
        found.is_some()
    });
    found.unwrap()
}

/// A refused line, then the end of the stream.
fn refused(c: &mut Client) -> String {
    let r = c.next().expect("a refusal");
    assert_eq!(r["msg"], "refused", "{r}");
    r["error"].as_str().unwrap().to_string()
}

/// A wrong or missing token, garbage, a wrong protocol, a command before hello and unknown or
/// malformed commands are each refused in one line, and the run goes on untouched.
#[test]
fn refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = record(dir.path(), &[LONG, &["--listen", "127.0.0.1:0"]].concat());
    let (addr, token) = listening(dir.path());
    let sock = socket(dir.path());

    let hello = |token: Option<&str>| {
        let mut h = json!({"cmd": "hello", "protocol": 1});
        if let Some(t) = token {
            h["token"] = json!(t);
        }
        h.to_string()
    };
    let mut c = Client::tcp(&addr);
    c.send(&hello(Some("0123456789abcdef0123456789abcdef")));
    assert!(refused(&mut c).contains("wrong token"));
    assert!(c.next().is_none(), "a refused hello closes the connection");
    let mut c = Client::tcp(&addr);
    c.send(&hello(None));
    assert!(refused(&mut c).contains("wrong token"));
    let mut c = Client::tcp(&addr);
    c.send("GET / HTTP/1.1");
    assert!(refused(&mut c).contains("unreadable"));
    let mut c = Client::unix(&sock);
    c.send(r#"{"cmd":"hello","protocol":99}"#);
    assert!(refused(&mut c).contains("protocol version 99"));
    let mut c = Client::unix(&sock);
    c.send(r#"{"cmd":"stop"}"#);
    assert!(refused(&mut c).contains("hello first"));

    // Attached: unknown and malformed commands are refused, the connection stays.
    let mut c = Client::tcp(&addr);
    c.hello(Some(&token));
    let (mut events, mut msgs) = (Vec::new(), Vec::new());
    c.until(&mut events, &mut msgs, |v| v["msg"] == "caught_up");
    c.send(r#"{"cmd":"self_destruct"}"#);
    c.send("not json at all");
    c.send(r#"{"cmd":"probe","run":"trunk"}"#);
    c.until(&mut events, &mut msgs, |v| {
        v["msg"] == "refused" && v["error"].as_str().unwrap().contains("bad `probe`")
    });
    let errors: Vec<&str> = msgs
        .iter()
        .filter(|m| m["msg"] == "refused")
        .map(|m| m["error"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].contains("unknown command `self_destruct`"),
        "{errors:?}"
    );
    assert!(errors[1].contains("unreadable"), "{errors:?}");
    // The run went on as if nothing had been said: still training, never paused.
    let mut seen = steps(&events);
    let target = seen + 2000;
    c.until(&mut events, &mut msgs, |v| {
        if v["type"] == "step" {
            seen += 1;
        }
        seen >= target
    });
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "note" && e["kind"] == "paused"),
        "never paused"
    );
    assert!(!events.iter().any(|e| e["type"] == "end"), "never stopped");
    c.send(r#"{"cmd":"stop"}"#);
    c.rest(&mut events, &mut msgs);
    let status = wait_exit(&mut rec);
    assert!(status.success(), "the run failed: {status:?}");
    let end = events.iter().find(|e| e["type"] == "end").unwrap();
    assert_eq!(end["reason"], "stopped", "{end}");
}

/// Two viewers follow the whole run while a third attaches and never reads again: training
/// goes on at full pace (the stalled viewer loses samples, nobody waits for it), and the run
/// stops and exits promptly when asked.
#[test]
fn several_viewers_and_a_stalled_one_never_slow_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = record(dir.path(), LONG);
    let sock = socket(dir.path());
    let mut a = Client::unix(&sock);
    a.hello(None);
    let mut stalled = Client::unix(&sock);
    stalled.hello(None);
    let mut b = Client::unix(&sock);
    b.hello(None);
    // Read on a thread of its own, as fast as the lines come.
    let (tx, stop_b) = std::sync::mpsc::channel::<()>();
    let b = std::thread::spawn(move || {
        let (mut be, mut bm) = (Vec::new(), Vec::new());
        b.until(&mut be, &mut bm, |_| stop_b.try_recv().is_ok());
        b.send(r#"{"cmd":"stop"}"#);
        b.rest(&mut be, &mut bm);
        be
    });
    let (mut ae, mut am) = (Vec::new(), Vec::new());
    // Far more than the stalled viewer's queue and socket can hold: had the engine waited for
    // it, it would have stopped long before.
    let mut seen = 0;
    a.until(&mut ae, &mut am, |v| {
        if v["type"] == "step" {
            seen += 1;
        }
        seen >= 40_000
    });
    tx.send(()).unwrap();
    let asked = Instant::now();
    a.rest(&mut ae, &mut am);
    let be = b.join().unwrap();
    let status = wait_exit(&mut rec);
    assert!(status.success(), "the run failed: {status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "the run took {:?} to stop",
        asked.elapsed()
    );
    drop(stalled);
    let session = session_events(dir.path(), "s.h5").unwrap();
    let theirs: Vec<String> = session.iter().map(key).collect();
    for (who, events) in [("a", &ae), ("b", &be)] {
        let ours: Vec<String> = events.iter().map(key).collect();
        assert_eq!(
            ours.len(),
            theirs.len(),
            "viewer {who}: no gap, no duplicate"
        );
        assert!(
            ours == theirs,
            "viewer {who} saw the session's events in order"
        );
    }
}

/// `wsdscope attach` in a terminal shows the run; `q` detaches and the run goes on; a second
/// viewer stops it with `X`, `y`.
#[test]
fn attach_shows_the_run_and_detaching_leaves_it_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = record(dir.path(), LONG);
    socket(dir.path());
    let attach = format!("'{}' attach s.h5.sock; echo EXIT=$?", binary().display());

    let t = Tmux::start(dir.path(), 120, 40, &attach);
    t.wait_for("the attached run", |s| {
        s.contains("● running") && s.contains("tok/s")
    });
    let s = t.wait_for("caught up", |s| s.contains("attached ("));
    assert!(s.contains("earlier events"), "{s}");
    t.keys(&["?"]);
    t.wait_for("the help names the attached keys", |s| {
        s.contains("attached:") && s.contains("detach: leave the TUI")
    });
    t.keys(&["?"]);
    t.wait_for("help closed", |s| !s.contains("attached:"));
    t.keys(&["q"]);
    let s = t.wait_for("detached", |s| s.contains("EXIT="));
    assert!(s.contains("EXIT=0") && s.contains("detached from"), "{s}");
    drop(t);
    let size = || {
        std::fs::metadata(dir.path().join("events.jsonl"))
            .unwrap()
            .len()
    };
    let before = size();
    wait_until("the run goes on after the viewer left", || {
        size() > before + 100_000
    });
    assert!(rec.try_wait().unwrap().is_none(), "the run still runs");

    let t = Tmux::start(dir.path(), 120, 40, &attach);
    t.wait_for("attached again", |s| s.contains("● running"));
    t.keys(&["X"]);
    t.wait_for("the stop confirmation", |s| {
        s.contains("stop training and quit")
    });
    t.keys(&["y"]);
    let s = t.wait_for("left", |s| s.contains("EXIT="));
    assert!(s.contains("EXIT=0"), "{s}");
    let status = wait_exit(&mut rec);
    assert!(status.success(), "the run failed: {status:?}");
    let session = session_events(dir.path(), "s.h5").unwrap();
    let end = session.iter().find(|e| e["type"] == "end").unwrap();
    assert_eq!(end["reason"], "stopped", "{end}");
}

/// Another user is refused even where the socket's mode would let them in (the peer's uid is
/// checked too). Needs root to act as another user; elsewhere it checks nothing.
#[test]
fn another_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot connect as another user here");
        return;
    }
    if std::process::Command::new("python3")
        .args(["-c", ""])
        .status()
        .is_err()
    {
        eprintln!("no python3: no client to run as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut rec = record(dir.path(), LONG);
    let sock = socket(dir.path());
    let as_nobody = |sock: &Path| {
        use std::os::unix::process::CommandExt;
        let script = "import socket,sys\n\
            s=socket.socket(socket.AF_UNIX)\n\
            try:\n s.connect(sys.argv[1])\n\
            except OSError as e:\n print('connect failed', e.errno); sys.exit(0)\n\
            s.sendall(b'{\"cmd\":\"hello\",\"protocol\":1}\\n')\n\
            print(s.makefile().readline().strip())\n";
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(sock)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("python3 runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The mode keeps others out…
    let said = as_nobody(&sock);
    assert!(said.contains("connect failed"), "{said}");
    // …and were it opened, the uid check would.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let said = as_nobody(&sock);
    assert!(
        said.contains("refused") && said.contains("another user"),
        "{said}"
    );
    // The run is untouched: its owner attaches and stops it.
    let mut c = Client::unix(&sock);
    c.hello(None);
    c.send(r#"{"cmd":"stop"}"#);
    let (mut events, mut msgs) = (Vec::new(), Vec::new());
    c.rest(&mut events, &mut msgs);
    assert!(wait_exit(&mut rec).success());
    let end = events
        .iter()
        .find(|e| e["type"] == "end")
        .unwrap_or_else(|| panic!("{msgs:?} {}", events.len()));
    assert_eq!(end["reason"], "stopped", "{end}");
}

/// `wsdscope run` serves the same endpoint: a viewer attached to it follows the run, and its
/// pause shows in the run's own TUI.
#[test]
fn a_tui_run_can_be_attached_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = format!(
        "RAYON_NUM_THREADS=1 '{}' run --out s.h5",
        binary().display()
    );
    for a in SMALL.iter().chain(LONG) {
        cmd.push_str(&format!(" '{a}'"));
    }
    let t = Tmux::start(dir.path(), 120, 40, &format!("{cmd}; echo EXIT=$?"));
    let sock = socket(dir.path());
    t.wait_for("the run's TUI", |s| s.contains("● running"));
    let mut c = Client::unix(&sock);
    c.hello(None);
    let (mut events, mut msgs) = (Vec::new(), Vec::new());
    c.until(&mut events, &mut msgs, |v| v["msg"] == "caught_up");
    c.send(r#"{"cmd":"pause"}"#);
    c.until(&mut events, &mut msgs, |v| {
        v["type"] == "note" && v["kind"] == "paused"
    });
    t.wait_for("the run's own TUI shows the pause", |s| {
        s.contains("❚❚ paused")
    });
    drop(c);
    // The run's own q still asks, and stops it.
    t.keys(&["q"]);
    t.wait_for("quit confirmation", |s| {
        s.contains("stop training and quit")
    });
    t.keys(&["y"]);
    let s = t.wait_for("exit", |s| s.contains("EXIT="));
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(!sock.exists(), "the socket is removed at the end");
}

/// `wsdscope attach HOST:PORT` needs the run's token: a wrong one is one clear line and a
/// failed exit, the right one opens the TUI.
#[test]
fn attach_over_tcp_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = record(dir.path(), &[LONG, &["--listen", "127.0.0.1:0"]].concat());
    let (addr, token) = listening(dir.path());
    let attach = |token: &str| {
        format!(
            "'{}' attach {addr} --token {token}; echo EXIT=$?",
            binary().display()
        )
    };
    let t = Tmux::start(dir.path(), 120, 40, &attach("not-the-token"));
    let s = t.wait_for("the refusal", |s| s.contains("EXIT="));
    assert!(
        s.contains("refused: wrong token") && s.contains("EXIT=2"),
        "{s}"
    );
    drop(t);
    let t = Tmux::start(dir.path(), 120, 40, &attach(&token));
    t.wait_for("the attached run", |s| s.contains("● running"));
    t.keys(&["q"]);
    let s = t.wait_for("detached", |s| s.contains("EXIT="));
    assert!(s.contains("EXIT=0"), "{s}");
    assert!(rec.try_wait().unwrap().is_none(), "the run still runs");
    let _ = rec.kill();
    let _ = rec.wait();
}

/// What the session's writer reports reaches attached viewers too: a write retried, then
/// recovered.
#[test]
fn writer_notices_reach_attached_viewers() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::fs::File::create(dir.path().join("events.jsonl")).unwrap();
    let mut rec = wsdscope()
        .current_dir(dir.path())
        .env("RAYON_NUM_THREADS", "1")
        .env("WSDSCOPE_TEST_FAULTS", "flush-busy:7")
        .args(["record", "--out", "s.h5", "--jsonl"])
        .args(SMALL)
        .args(LONG)
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut c = Client::unix(&socket(dir.path()));
    c.hello(None);
    let (mut events, mut msgs) = (Vec::new(), Vec::new());
    c.until(&mut events, &mut msgs, |v| {
        v["msg"] == "note" && v["text"].as_str().unwrap().contains("recovered")
    });
    assert_eq!(msgs.last().unwrap()["level"], "info", "{msgs:?}");
    c.send(r#"{"cmd":"stop"}"#);
    c.rest(&mut events, &mut msgs);
    assert!(wait_exit(&mut rec).success());
    // The viewer waited for its catch-up while the writer retried, so it fell behind and lost
    // step samples: exactly as many as it was told, and nothing else.
    let session = session_events(dir.path(), "s.h5").unwrap();
    let told = msgs
        .iter()
        .filter(|m| m["msg"] == "dropped")
        .filter_map(|m| m["count"].as_u64())
        .max()
        .unwrap_or(0);
    assert_eq!(events.len() as u64 + told, session.len() as u64);
    let rare = |e: &&Value| e["type"] != "step";
    let ours: Vec<String> = events.iter().filter(rare).map(key).collect();
    let theirs: Vec<String> = session.iter().filter(rare).map(key).collect();
    assert!(ours == theirs, "every event but step samples arrives");
}
