//! Helpers for the end-to-end tests: find the built `wsdscope` binary and run it as a user
//! would, capturing what it prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The names in `dir`, sorted (what a test sees an export or a run leave behind).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The `wsdscope` binary of the same profile as these tests (`target/<profile>/wsdscope`).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("WSDSCOPE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/wsdscope
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join(format!("wsdscope{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p wsdscope), or set WSDSCOPE_BIN",
        bin.display()
    );
    bin
}

/// A `wsdscope` command with a single worker thread (tests run side by side), run in a scratch
/// directory so that default `sessions/` files never land in the source tree.
pub fn wsdscope() -> Command {
    let scratch = std::env::temp_dir().join("wsdscope-e2e");
    let _ = std::fs::create_dir_all(&scratch);
    let mut c = Command::new(binary());
    c.env("RAYON_NUM_THREADS", "1").current_dir(scratch);
    c
}

/// What a finished invocation printed.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl From<Output> for Ran {
    fn from(o: Output) -> Self {
        Ran {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `wsdscope ARGS…` to completion.
pub fn run(args: &[&str]) -> Ran {
    wsdscope()
        .args(args)
        .output()
        .expect("wsdscope runs")
        .into()
}

/// Flags for a very small, fast model on the synthetic language.
pub const SMALL: &[&str] = &[
    "--hidden",
    "32",
    "--layers",
    "2",
    "--heads",
    "2",
    "--kv-heads",
    "1",
    "--ffn",
    "64",
    "--vocab",
    "64",
    "--seq",
    "16",
    "--batch",
    "4",
    "--threads",
    "1",
];

/// Parses `--jsonl` output into JSON values, failing on any line that is not JSON.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The whole event stream of the session `file` (relative to `dir`), as `wsdscope inspect FILE
/// --events` prints it; `Err` with what it printed on stderr when it cannot be read.
pub fn session_events(dir: &std::path::Path, file: &str) -> Result<Vec<serde_json::Value>, String> {
    let out = wsdscope()
        .current_dir(dir)
        .args(["inspect", file, "--events"])
        .output()
        .expect("wsdscope runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(json_lines(&String::from_utf8_lossy(&out.stdout)))
}

/// Collects the `--jsonl` lines a child prints on `stdout`, on a thread: join it for them.
/// Every line must be JSON, except a last one cut short because the child was killed.
pub fn collect_json_lines(
    mut stdout: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<serde_json::Value>> {
    std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).expect("stdout reads");
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        json_lines(complete)
    })
}

/// The losses of the `step` events of `--jsonl` output.
pub fn step_losses(events: &[serde_json::Value]) -> Vec<f64> {
    events
        .iter()
        .filter(|e| e["type"] == "step")
        .map(|e| e["loss"].as_f64().unwrap())
        .collect()
}

/// A detached tmux session on a private server (its own socket), running one shell command in
/// a pseudo-terminal of a given size; the screen is read back with `capture-pane`. The server
/// is killed when this is dropped. Panics, with an install hint, when tmux is missing: the
/// TUI tests must not pass by skipping.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `sh -c COMMAND` in `dir` in a `width`×`height` terminal. The pane stays open after
    /// the command ends, so its last output (e.g. an `EXIT=$?` echo) can be read.
    pub fn start(dir: &std::path::Path, width: u16, height: u16, command: &str) -> Tmux {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Tmux {
            socket: format!("wsdscope-e2e-{}-{n}", std::process::id()),
        };
        let (w, h) = (width.to_string(), height.to_string());
        let keep = format!("{command}; sleep 600");
        t.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-x",
            &w,
            "-y",
            &h,
            "-c",
            dir.to_str().expect("UTF-8 path"),
            "sh",
            "-c",
            &keep,
        ]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run tmux ({e}); the TUI end-to-end tests need it: apt-get install tmux"
                )
            });
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends keys by tmux name: `"q"`, `"Space"`, `"Escape"`, `"Enter"`, `"Left"`.
    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.tmux(&["send-keys", "-t", "e2e", k]);
        }
    }

    /// The screen as text, one line per row.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "e2e"])
    }

    /// The screen with its attributes as escape sequences (colours, bold, reverse).
    pub fn screen_with_escapes(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-e", "-t", "e2e"])
    }

    pub fn resize(&self, width: u16, height: u16) {
        let (w, h) = (width.to_string(), height.to_string());
        self.tmux(&["resize-window", "-t", "e2e", "-x", &w, "-y", &h]);
    }

    /// Polls the screen until `ok` holds (60 s at most); returns that screen, or panics with
    /// the last one.
    pub fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let t0 = std::time::Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if t0.elapsed() > std::time::Duration::from_secs(60) {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}
