//! The viewer's side: connecting to a run's control endpoint and the live TUI's
//! [`Source`] over it. Events (the catch-up, then live ones) are read on a thread of its own
//! into a bounded queue, so a UI that falls behind makes the server drop step samples for
//! this viewer only; intents go back as command lines.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use wsdscope_sessions::RunEvent;

use super::stream::Stream;
use super::{PROTOCOL, Reply, Request, VIEWER_BUFFER};
use crate::tui::{Action, Flow, Level, Source, TuiState};

/// The most time one pump spends applying events before it looks at input again.
const DRAIN_BUDGET: Duration = Duration::from_millis(30);

/// One line from the server.
#[derive(Debug)]
pub enum Incoming {
    Event(RunEvent),
    Reply(Reply),
    /// The connection ended (with why, if it broke).
    Closed(Option<String>),
}

/// A connection that said hello and was welcomed.
pub struct Attachment {
    pub session: Option<String>,
    pub delivered: u64,
    out: Stream,
    input: BufReader<Stream>,
}

/// Connects to `target` (a Unix socket path, or HOST:PORT) and says hello; the server's
/// refusal is the error.
pub fn connect(target: &str, token: Option<&str>) -> Result<Attachment> {
    let unix = target.contains('/') || Path::new(target).exists();
    let stream = if unix {
        Stream::Unix(
            UnixStream::connect(target).with_context(|| format!("cannot connect to {target}"))?,
        )
    } else {
        let s =
            TcpStream::connect(target).with_context(|| format!("cannot connect to {target}"))?;
        let _ = s.set_nodelay(true);
        Stream::Tcp(s)
    };
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    let hello = Request::Hello {
        protocol: PROTOCOL,
        token: token.map(str::to_string),
    };
    out.write_all(format!("{}\n", hello.to_line()).as_bytes())
        .with_context(|| format!("cannot talk to {target}"))?;
    let mut first = String::new();
    input
        .read_line(&mut first)
        .with_context(|| format!("{target} did not answer"))?;
    if first.is_empty() {
        bail!("{target} closed the connection without a word");
    }
    match serde_json::from_str::<Reply>(&first) {
        Ok(Reply::Welcome {
            session, delivered, ..
        }) => Ok(Attachment {
            session,
            delivered,
            out,
            input,
        }),
        Ok(Reply::Refused { error }) => bail!("{target} refused: {error}"),
        _ => bail!(
            "{target} does not speak the wsdscope attach protocol: {}",
            first.trim()
        ),
    }
}

/// Reads one server line.
fn parse(line: &str) -> Incoming {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) if v.get("msg").is_some() => match serde_json::from_value(v) {
            Ok(r) => Incoming::Reply(r),
            Err(e) => Incoming::Closed(Some(format!("unreadable message from the run: {e}"))),
        },
        Ok(v) => match serde_json::from_value(v) {
            Ok(ev) => Incoming::Event(ev),
            Err(e) => Incoming::Closed(Some(format!("unreadable event from the run: {e}"))),
        },
        Err(e) => Incoming::Closed(Some(format!("unreadable line from the run: {e}"))),
    }
}

/// A run reached over its control endpoint, as a [`Source`] for the live TUI.
pub struct AttachSource {
    incoming: Receiver<Incoming>,
    out: Stream,
    /// The connection has ended (the run ended, or it broke).
    closed: bool,
}

impl AttachSource {
    /// Starts reading the attachment's lines on a thread of its own.
    pub fn new(a: Attachment) -> Result<Self> {
        let Attachment { out, mut input, .. } = a;
        let (tx, incoming) = mpsc::sync_channel(VIEWER_BUFFER);
        std::thread::Builder::new()
            .name("attach-reader".into())
            .spawn(move || {
                let mut line = String::new();
                loop {
                    line.clear();
                    let msg = match input.read_line(&mut line) {
                        Ok(0) => Incoming::Closed(None),
                        Ok(_) => parse(&line),
                        Err(e) => Incoming::Closed(Some(format!("the connection broke: {e}"))),
                    };
                    let last = matches!(msg, Incoming::Closed(_));
                    // Waits when the UI is behind: the server then drops samples for us.
                    if tx.send(msg).is_err() || last {
                        return;
                    }
                }
            })?;
        Ok(AttachSource {
            incoming,
            out,
            closed: false,
        })
    }

    fn send(&mut self, r: Request, state: &mut TuiState) {
        let line = format!("{}\n", r.to_line());
        if self.closed || self.out.write_all(line.as_bytes()).is_err() {
            state.set_status(Level::Error, "the run is gone; it cannot take commands");
        }
    }

    fn receive(&mut self, msg: Incoming, state: &mut TuiState) {
        match msg {
            Incoming::Event(ev) => state.apply(&ev),
            Incoming::Reply(r) => match r {
                Reply::Welcome { .. } | Reply::Accepted { .. } => {}
                Reply::CaughtUp { events } => state.set_status(
                    Level::Info,
                    format!("attached ({events} earlier events): q detaches, X stops the run"),
                ),
                Reply::Note { level, text } => state.set_status(
                    match level {
                        super::Level::Info => Level::Info,
                        super::Level::Warn => Level::Warn,
                        super::Level::Error => Level::Error,
                    },
                    text,
                ),
                Reply::Refused { error } => state.set_status(Level::Error, error),
                Reply::Dropped { count } => state.ui.dropped_display = count,
                Reply::Ended => {
                    self.closed = true;
                    state.set_status(Level::Info, "the run has ended; q leaves");
                }
            },
            Incoming::Closed(why) => {
                self.closed = true;
                if state.training_active() {
                    state.set_status(
                        Level::Error,
                        why.unwrap_or_else(|| "the run closed the connection".into()),
                    );
                }
            }
        }
    }
}

impl Source for AttachSource {
    fn pump(&mut self, state: &mut TuiState) -> Flow {
        let t0 = Instant::now();
        while !self.closed && t0.elapsed() < DRAIN_BUDGET {
            match self.incoming.try_recv() {
                Ok(msg) => self.receive(msg, state),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.closed = true,
            }
        }
        if state.ui.stopping && (self.closed || !state.training_active()) {
            Flow::Quit
        } else {
            Flow::Continue
        }
    }

    fn act(&mut self, action: Action, state: &mut TuiState) -> Flow {
        match action {
            Action::Pause => self.send(Request::Pause, state),
            Action::Resume => self.send(Request::Resume, state),
            Action::Fork(req) => self.send(Request::Fork(req), state),
            Action::ForkResume(parent) => self.send(Request::WsdS { parent }, state),
            Action::Probe(run) => self.send(Request::Probe { run }, state),
            // Detaching leaves the run as it is.
            Action::Quit | Action::ForceQuit => return Flow::Quit,
            Action::StopRun => {
                if self.closed || !state.training_active() {
                    return Flow::Quit;
                }
                if !state.ui.stopping {
                    state.ui.stopping = true;
                    self.send(Request::Stop, state);
                    state.set_status(Level::Info, "stopping the run: waiting for its end");
                }
            }
            Action::PlayPause | Action::Speed(_) | Action::Seek(_) => {}
        }
        Flow::Continue
    }
}
