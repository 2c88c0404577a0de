//! `wsdscope attach SOCKET|HOST:PORT`: the live TUI on a run that another process is
//! training (a `record`, or rank 0 of a job), reached over its control endpoint
//! ([`crate::attach`]). Also the hidden `wsdscope history`, which the endpoint runs to read a
//! viewer's catch-up from the session file.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use wsdscope_sessions::Session;

use crate::attach::{AttachSource, client};
use crate::cli::{AttachArgs, HistoryArgs};
use crate::tui::{self, TuiState, terminal};

pub fn run(args: AttachArgs) -> Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        bail!("wsdscope attach draws a full-screen UI and needs a terminal on stdout");
    }
    // Connect (and hear a refusal) before the terminal is touched.
    let a = client::connect(&args.target, args.token.as_deref())?;
    let mut state = TuiState::live(a.session.clone());
    state.ui.attached = true;
    let mut source = AttachSource::new(a)?;
    let mut guard = terminal::TerminalGuard::enter().context("cannot set up the terminal")?;
    let result = tui::run_loop(
        guard.terminal(),
        &mut state,
        &mut source,
        tui::crossterm_input,
    );
    drop(guard);
    result?;
    eprintln!("detached from {}", args.target);
    Ok(ExitCode::SUCCESS)
}

/// How long `history` waits for the session's writer to have written the events asked for.
const HISTORY_WAIT: Duration = Duration::from_secs(60);

/// Prints the first `--until` events of a session (one JSON line each, in `seq` order),
/// waiting while the writer of a live session has not yet flushed all of them.
pub fn history(args: HistoryArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let mut session = Session::open(&args.file)?;
    let n = args.until as usize;
    let mut writer_gone = false;
    loop {
        let events = session.events_with_seq()?;
        // A flush in progress may have written later events before earlier ones.
        let complete = events.len() >= n
            && events[..n]
                .iter()
                .enumerate()
                .all(|(i, (seq, _))| *seq == i as u64);
        if complete {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for (_, ev) in &events[..n] {
                writeln!(out, "{}", ev.to_json_line())?;
            }
            out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
        // A writer that has just finished gets one more read.
        if writer_gone || t0.elapsed() > HISTORY_WAIT {
            bail!(
                "{} holds {} of the first {n} events",
                args.file.display(),
                events
                    .iter()
                    .enumerate()
                    .take_while(|(i, (seq, _))| *seq == *i as u64)
                    .count()
            );
        }
        writer_gone = session.writer_alive() == Some(false);
        if !writer_gone {
            std::thread::sleep(Duration::from_millis(100));
        }
        session.refresh()?;
    }
}
