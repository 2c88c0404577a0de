//! The writer thread's loop: handle events, flush on a timer (or at once for starts and ends),
//! retry failures that can pass, stop safely when the disk is nearly full, and finish when the
//! channel closes.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::report::{Notice, RecordSummary};
use super::space::human_bytes;
use super::writer::SessionWriter;
use crate::RunEvent;
use crate::error::{Result, write_err};

/// How often buffered rows reach the file at the latest.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// How long a write failure that can pass (a lock, a busy file) is retried before it counts
/// as persistent.
pub const RETRY_FOR: Duration = Duration::from_secs(60);

/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Step rows the writer holds while a retry waits before it stops taking events (the engine
/// then waits on the full channel: nothing is dropped, memory stays bounded).
const MAX_PENDING_ROWS: usize = 1 << 16;
/// Rows after which the writer flushes without waiting for [`FLUSH_INTERVAL`]: keeps its
/// buffers small when events arrive faster than the timer (a fast model, a replayed stream).
const FLUSH_ROWS: usize = 1 << 12;

/// A pending retry of a failed flush.
struct Retry {
    since: Instant,
    next: Instant,
    delay: Duration,
    attempts: u32,
}

impl SessionWriter {
    /// The writer loop: handle events, flush on a timer (or at once for starts and ends),
    /// retry failures that can pass, finish when the channel closes.
    pub(super) fn run(mut self, rx: Receiver<RunEvent>) -> Result<RecordSummary> {
        let mut last_flush = Instant::now();
        let mut retry: Option<Retry> = None;
        let mut open = true;
        let mut urgent = false;
        loop {
            let full = self.pending_rows() >= FLUSH_ROWS;
            let wake = match &retry {
                Some(r) => r.next,
                None if urgent || !open || full => Instant::now(),
                None => last_flush + FLUSH_INTERVAL,
            };
            if open && self.pending_rows() < MAX_PENDING_ROWS {
                match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                    Ok(ev) => match self.handle(ev) {
                        Ok(u) => urgent |= u,
                        Err(e) => {
                            // An event the file cannot take (a run beyond its slots): keep
                            // everything before it, then stop.
                            let _ = self.flush();
                            let _ = self.close();
                            return Err(e);
                        }
                    },
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            } else {
                std::thread::sleep(wake.saturating_duration_since(Instant::now()));
            }
            let now = Instant::now();
            let due = match &retry {
                Some(r) => now >= r.next,
                None => {
                    urgent
                        || !open
                        || now >= last_flush + FLUSH_INTERVAL
                        || self.pending_rows() >= FLUSH_ROWS
                }
            };
            if !due {
                continue;
            }
            if self.stopping.is_none() {
                let margin = self.margin();
                if let Some(left) = self.space_left().filter(|&left| left < margin) {
                    let message = format!(
                        "the disk is nearly full ({} left, {} needed to go on safely); the run was stopped and the session closed with everything in it",
                        human_bytes(left),
                        human_bytes(margin)
                    );
                    self.notice(Notice::MustStop(message.clone()));
                    self.stopping = Some(message);
                }
            }
            match self.flush() {
                Ok(()) => {
                    if let Some(r) = retry.take() {
                        self.notice(Notice::Recovered(format!(
                            "recording to {} recovered after {} retries over {:.1} s; nothing was lost",
                            self.path.display(),
                            r.attempts,
                            r.since.elapsed().as_secs_f64()
                        )));
                    }
                    last_flush = now;
                    urgent = false;
                    if !open {
                        break;
                    }
                }
                Err(f)
                    if f.transient
                        && retry.as_ref().is_none_or(|r| r.since.elapsed() < RETRY_FOR) =>
                {
                    let r = retry.get_or_insert_with(|| Retry {
                        since: now,
                        next: now,
                        delay: Duration::from_millis(50),
                        attempts: 0,
                    });
                    if r.attempts == 0 {
                        let msg = format!(
                            "writing {} failed ({}); retrying with backoff for up to {} s while training goes on",
                            self.path.display(),
                            f.message,
                            RETRY_FOR.as_secs()
                        );
                        self.notice(Notice::Retrying(msg));
                    }
                    let r = retry.as_mut().expect("set");
                    r.attempts += 1;
                    r.next = now + r.delay;
                    r.delay = (r.delay * 2).min(MAX_BACKOFF);
                }
                Err(f) => {
                    let mut message = f.message;
                    if let Some(r) = &retry {
                        message.push_str(&format!(
                            " (still failing after {} retries over {:.0} s)",
                            r.attempts,
                            r.since.elapsed().as_secs_f64()
                        ));
                    }
                    return Err(write_err(&self.path, message));
                }
            }
        }
        let summary = RecordSummary {
            path: self.path.clone(),
            events: self.seq,
            runs: self.taken.iter().flatten().count(),
            bytes: 0,
            notices: Vec::new(),
        };
        let path = self.path.clone();
        let stopping = self.stopping.take();
        self.close()?;
        if let Some(message) = stopping {
            return Err(write_err(&path, message));
        }
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(RecordSummary { bytes, ..summary })
    }
}
