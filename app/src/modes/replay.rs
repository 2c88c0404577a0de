//! `wsdscope replay FILE.h5 [--follow]`: the TUI over a recorded session with a time cursor.
//! The session is opened and read before the terminal is touched, so a bad file gives the
//! reader's one-line error on a normal terminal. `--follow` re-reads a session that a headless
//! `record` is still writing (see [`crate::tui::replay`]).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use wsdscope_sessions::{RunEvent, Session};

use crate::cli::ReplayArgs;
use crate::tui::{self, replay::Reload};

/// A followed session is read whole at least this often even when its run table looks
/// unchanged (notes and checkpoints do not change it).
const FULL_RELOAD: Duration = Duration::from_secs(5);

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let session = Session::open(&args.file)?;
    let events = session.events()?;
    let path = args.file.display().to_string();
    let reload: Option<Box<dyn Reload>> = if args.follow {
        Some(Box::new(Follow::new(session)))
    } else {
        None
    };
    tui::run_replay(events, reload, path)?;
    Ok(ExitCode::SUCCESS)
}

/// A growing session, re-read when its run table (step and eval counts, ends) changes.
struct Follow {
    session: Session,
    seen: Vec<(u32, u64, u64, bool)>,
    last_full: Instant,
}

impl Follow {
    fn new(session: Session) -> Self {
        let seen = signature(&session);
        Follow {
            session,
            seen,
            last_full: Instant::now(),
        }
    }
}

fn signature(s: &Session) -> Vec<(u32, u64, u64, bool)> {
    s.runs()
        .iter()
        .map(|r| (r.id, r.steps, r.evals, r.end.is_some()))
        .collect()
}

impl Reload for Follow {
    fn reload(&mut self) -> Result<Option<Vec<RunEvent>>> {
        self.session.refresh()?;
        let sig = signature(&self.session);
        if sig == self.seen && self.last_full.elapsed() < FULL_RELOAD {
            return Ok(None);
        }
        self.seen = sig;
        self.last_full = Instant::now();
        Ok(Some(self.session.events()?))
    }

    fn writer_alive(&self) -> Option<bool> {
        self.session.writer_alive()
    }
}
