//! Attaching to a running job: the control endpoint every `record` and `run` listens on, and
//! the `wsdscope attach` client that opens the live TUI on it.
//!
//! ```text
//!   record / run ── live pipeline ─► Attached (one bounded queue per viewer, try_send)
//!        ▲                                  │
//!        │ Command                           ▼
//!   server.rs: listener thread ─► per connection: hello → welcome → catch-up → live events
//!                                                ◄── commands (fork, wsd_s, pause, …)
//!   client.rs: `wsdscope attach SOCKET|HOST:PORT` ─► AttachSource (a tui::Source)
//! ```
//!
//! **Endpoints.** By default a Unix socket next to the session file (`NAME.h5.sock`, mode
//! 0600, removed at the end; the peer's uid is checked too). TCP only with `--listen
//! HOST:PORT`, and then only with the random token printed at start.
//!
//! **Wire protocol** ([`PROTOCOL`]): one JSON object per line, both ways.
//! - Client → server: first [`Request::Hello`] (`{"cmd":"hello","protocol":1,"token":…}`),
//!   then commands: `pause`, `resume`, `stop`, `probe` (`run`), `wsd_s` (`parent`), `fork`
//!   (the fields of a `ForkRequest`: `parent`, `length`, `shape`, `floor`, optional `at_step`).
//! - Server → client: [`Reply`]s (objects with a `"msg"` field) and events (the `RunEvent`
//!   objects of `record --jsonl`, with a `"type"` field). First `welcome` with the session
//!   path and `delivered`, the number of events the run had produced when this viewer was
//!   registered; then those `delivered` events, read back from the session file in `seq`
//!   order (waiting for the writer where the file lags), then `caught_up`; then every later
//!   event live — no gap, no duplicate. A viewer that falls behind loses step samples only
//!   (`dropped` says how many); `ended` follows the run's last event.
//! - A wrong token, a garbage line, an unknown command or another protocol version gets one
//!   `refused` line and changes nothing (a refused hello also closes the connection).
//!
//! The catch-up is read by the server (in a child process, so the session file is opened
//! exactly as `replay --follow` opens it), so a viewer on another machine (an SSH tunnel)
//! needs no copy of the file.

pub mod client;
pub mod server;
mod stream;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use wsdscope_sessions::RunId;
use wsdscope_trainer::{Command, ForkRequest};

pub use client::AttachSource;
pub use server::{Listening, Server};

/// The version of the wire protocol; a hello with another one is refused.
pub const PROTOCOL: u32 = 1;

/// Events a viewer's queue holds before its step samples are dropped.
pub const VIEWER_BUFFER: usize = 8192;

/// What a client sends: a hello, then commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Hello {
        protocol: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    Pause,
    Resume,
    Stop,
    Fork(ForkRequest),
    /// Fork a run into one that resumes the stable learning rate (WSD-S).
    WsdS {
        parent: RunId,
    },
    /// Run every periodic probe on a run now.
    Probe {
        run: RunId,
    },
}

/// The command names a client may send after its hello.
const COMMANDS: &[&str] = &["pause", "resume", "stop", "fork", "wsd_s", "probe"];

impl Request {
    /// One line of the wire protocol (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a request serialises")
    }

    /// Reads one line, or says in a sentence why it is not a request.
    pub fn parse(line: &str) -> Result<Request, String> {
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .map_err(|e| format!("unreadable message (not one JSON object per line): {e}"))?;
        let Some(cmd) = v.get("cmd").and_then(|c| c.as_str()) else {
            return Err("unreadable message: no \"cmd\" field".into());
        };
        if cmd != "hello" && !COMMANDS.contains(&cmd) {
            return Err(format!(
                "unknown command `{cmd}` (known: hello, {})",
                COMMANDS.join(", ")
            ));
        }
        let cmd = cmd.to_string();
        serde_json::from_value(v).map_err(|e| format!("bad `{cmd}` command: {e}"))
    }

    /// The engine command this asks for (`None` for a hello).
    pub fn command(self) -> Option<Command> {
        Some(match self {
            Request::Hello { .. } => return None,
            Request::Pause => Command::Pause,
            Request::Resume => Command::Resume,
            Request::Stop => Command::Stop,
            Request::Fork(f) => Command::Fork(f),
            Request::WsdS { parent } => Command::ForkResume { parent },
            Request::Probe { run } => Command::Probe { run },
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Pause => "pause",
            Request::Resume => "resume",
            Request::Stop => "stop",
            Request::Fork(_) => "fork",
            Request::WsdS { .. } => "wsd_s",
            Request::Probe { .. } => "probe",
        }
    }
}

/// What the server says besides events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Reply {
    /// The hello was accepted: the session file (if the run records one) and the number of
    /// events produced before this viewer, which come next (from the file).
    Welcome {
        protocol: u32,
        session: Option<String>,
        delivered: u64,
    },
    /// The events before the viewer are all sent (`events` of them); live ones follow.
    CaughtUp { events: u64 },
    /// Something the viewer should know: what the session's writer reports (a write retried,
    /// recovered, the run must stop), or that the catch-up could not be read.
    Note {
        #[serde(default)]
        level: Level,
        text: String,
    },
    /// A command was passed to the engine.
    Accepted { cmd: String },
    /// A message was refused; nothing changed.
    Refused { error: String },
    /// Step samples not sent to this viewer so far because it fell behind.
    Dropped { count: u64 },
    /// The run has ended: no more events come.
    Ended,
}

/// How much a [`Reply::Note`] matters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    #[default]
    Warn,
    Error,
}

impl Reply {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a reply serialises")
    }
}
