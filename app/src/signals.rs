//! SIGINT and SIGTERM, as an unattended job receives them (Ctrl-C; Slurm and Kubernetes
//! before preempting). The first one is handed to the mode, which finishes the current step,
//! checkpoints, records the runs' `end` events, closes the session and exits with 128 + the
//! signal's number. A second one exits at once: the session file stays readable, since it is
//! written in SWMR mode and flushed twice a second. In either case a terminal in TUI mode is
//! restored first.

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::tui::terminal;

/// A signal that asks the process to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Int,
    Term,
}

impl Stop {
    fn of(signal: i32) -> Stop {
        if signal == SIGTERM {
            Stop::Term
        } else {
            Stop::Int
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stop::Int => "SIGINT",
            Stop::Term => "SIGTERM",
        }
    }

    /// The conventional exit status of a process ended by this signal: 128 + its number.
    pub fn exit_code(self) -> u8 {
        match self {
            Stop::Int => 130,
            Stop::Term => 143,
        }
    }
}

/// Writes `line` straight to fd 2 and ends the process with `code` at once, from a thread
/// other than the mode's (which may hold the stderr lock for its progress line, or wait
/// forever for what cannot come).
pub fn exit_now(line: &str, code: i32) -> ! {
    // SAFETY: write(2) from a buffer that lives for the call; then `_exit` ends the process
    // without running atexit handlers or destructors, which could touch the HDF5 file from
    // this thread while the recorder writes it; SWMR keeps the file consistent.
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
        libc::_exit(code)
    }
}

/// Watches for SIGINT and SIGTERM on a thread of its own for the rest of the process.
pub struct Watch {
    received: Arc<OnceLock<Stop>>,
}

impl Watch {
    /// Starts watching: `on_first` runs (on the watcher thread) for the first signal; a second
    /// one restores the terminal and exits the process at once.
    pub fn start(on_first: impl FnOnce(Stop) + Send + 'static) -> Result<Watch> {
        let mut signals =
            Signals::new([SIGINT, SIGTERM]).context("cannot watch for SIGINT and SIGTERM")?;
        let received = Arc::new(OnceLock::new());
        let seen = Arc::clone(&received);
        std::thread::Builder::new()
            .name("wsdscope-signals".into())
            .spawn(move || {
                let mut on_first = Some(on_first);
                for signal in signals.forever() {
                    let stop = Stop::of(signal);
                    match on_first.take() {
                        Some(f) => {
                            let _ = seen.set(stop);
                            terminal::interrupt();
                            f(stop);
                        }
                        None => {
                            terminal::restore();
                            // Straight to fd 2: the mode may hold the stderr lock (its progress
                            // line) and be waiting for what the first signal started.
                            let line = format!(
                                "\nwsdscope: second {}: exiting now; the session keeps what was flushed (at most the last half second is lost)\n",
                                stop.name()
                            );
                            exit_now(&line, i32::from(stop.exit_code()));
                        }
                    }
                }
            })
            .context("cannot start the signal thread")?;
        Ok(Watch { received })
    }

    /// The first signal received, if any.
    pub fn received(&self) -> Option<Stop> {
        self.received.get().copied()
    }
}
