//! Helpers for the end-to-end tests: find the built `wsdscope` binary and run it as a user
//! would, capturing what it prints.

use std::path::PathBuf;
use std::process::{Command, Output};

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

/// The losses of the `step` events of `--jsonl` output.
pub fn step_losses(events: &[serde_json::Value]) -> Vec<f64> {
    events
        .iter()
        .filter(|e| e["type"] == "step")
        .map(|e| e["loss"].as_f64().unwrap())
        .collect()
}
