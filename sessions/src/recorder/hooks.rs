//! Test hooks of the writer: points where a test can stop it to kill it there, and injected
//! transient flush failures. Off unless the environment asks for them.

use std::time::Duration;

/// Places where tests can stop the writer, to kill it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PausePoint {
    /// While the file is being built, before it has its real name.
    Create,
    /// In the middle of the flush that follows a branch's `run_start`.
    Fork,
    /// In the middle of the flush that follows the first probe result.
    Probe,
}

/// Test-only behaviour, off unless the environment asks for it:
/// `WSDSCOPE_TEST_PAUSE=create|fork|probe` makes the writer print
/// `wsdscope-test: paused at <point> (events before seq <n> are in the file)` to stderr and
/// sleep for two minutes at that point, so a test can SIGKILL it there;
/// `WSDSCOPE_TEST_FAULTS=flush-busy:N` makes the first N flushes after the first run starts
/// fail half-way with a transient error, as a reader's lock used to.
#[derive(Debug, Clone, Default)]
pub(super) struct TestHooks {
    pub(super) pause: Option<PausePoint>,
    pub(super) busy_flushes: u32,
}

impl TestHooks {
    pub(super) fn from_env() -> Self {
        let pause = match std::env::var("WSDSCOPE_TEST_PAUSE").ok().as_deref() {
            Some("create") => Some(PausePoint::Create),
            Some("fork") => Some(PausePoint::Fork),
            Some("probe") => Some(PausePoint::Probe),
            _ => None,
        };
        let busy_flushes = std::env::var("WSDSCOPE_TEST_FAULTS")
            .ok()
            .and_then(|v| v.strip_prefix("flush-busy:")?.parse().ok())
            .unwrap_or(0);
        TestHooks {
            pause,
            busy_flushes,
        }
    }

    pub(super) fn pause(point: PausePoint, durable_seq: u64) {
        let name = match point {
            PausePoint::Create => "create",
            PausePoint::Fork => "fork",
            PausePoint::Probe => "probe",
        };
        // Straight to fd 2: the training side may hold the stderr lock for its progress line.
        // That line may be half-written (Rust writes a formatted line in pieces), so this one
        // starts with a newline of its own, to stand on a line by itself.
        let line = format!(
            "\nwsdscope-test: paused at {name} (events before seq {durable_seq} are in the file)\n"
        );
        // SAFETY: write(2) from a buffer that lives for the call.
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        std::thread::sleep(Duration::from_secs(120));
    }
}
