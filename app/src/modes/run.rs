//! `wsdscope run`: train in the full-screen TUI, recording the session exactly like `record`.
//!
//! The engine's events go through the live pipeline ([`crate::live`]): each is recorded to
//! the session file (never dropped), then offered to the UI without waiting (a step sample the
//! UI has no room for is dropped from the display and counted in the header). The UI runs on
//! the main thread; when it returns, the engine is stopped and joined, the session file
//! completed, and a summary printed after the terminal is restored.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use anyhow::{Result, bail};
use wsdscope_sessions::{EndReason, Notice};
use wsdscope_trainer::Command;

use crate::attach::Server;
use crate::cli::RunArgs;
use crate::live::{Finished, Live, Trunk, UI_BUFFER, Viewer, finish_recording};
use crate::modes::record;
use crate::progress::duration;
use crate::tui::{self, LiveInfo};

pub fn run(args: RunArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let train = &args.train;
    if let Some(n) = wsdscope_trainer::collective::launched_ranks().filter(|&n| n > 1) {
        bail!(
            "wsdscope run trains in one process with its TUI, but it was launched as one of {n} MPI ranks; \
             run `wsdscope record` under mpirun and watch rank 0 with `wsdscope attach`"
        );
    }
    if !train.dry_run && !std::io::stdout().is_terminal() {
        bail!(
            "wsdscope run draws a full-screen UI and needs a terminal on stdout; use `wsdscope record` for headless runs"
        );
    }
    let interrupts = record::Interrupts::watch()?;
    let Some(record::Prepared {
        trainer,
        recorder,
        checkpoint_to,
        server,
    }) = record::prepare(train, true)?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    let total = trainer.config().steps;
    let info = LiveInfo {
        session_path: recorder.as_ref().map(|r| r.path().display().to_string()),
        ..Default::default()
    };
    let (ui_tx, ui_rx) = mpsc::sync_channel(UI_BUFFER);
    let viewer = Viewer::Display {
        events: ui_tx,
        info: info.clone(),
    };
    let attached = server.as_ref().map(Server::attached).unwrap_or_default();
    let live = Live::start(trainer, recorder, viewer, attached)?;
    interrupts.attach(live.commands(), checkpoint_to);
    let commands = live.commands();
    // Other viewers may attach while the UI runs (the token of --listen is on the status
    // line at start); served until this function returns.
    let _listening = match server {
        Some(s) => {
            let mut notices = info.notices.lock().unwrap_or_else(|e| e.into_inner());
            notices.extend(s.lines().into_iter().map(Notice::Recovered));
            drop(notices);
            Some(s.start(commands.clone())?)
        }
        None => None,
    };
    let ui = tui::run_live(ui_rx, commands.clone(), info.clone());
    // The run has ended or was asked to stop; make sure, then wait for its end event. (After
    // a signal the engine already has its StopWith, which comes first.)
    let _ = commands.send(Command::Stop);
    let Finished {
        outcome,
        recorder,
        trunk,
    } = live.finish()?;
    let path = recorder.as_ref().map(|r| r.path().display().to_string());
    let recorded = finish_recording(recorder, outcome.step);
    // The terminal is restored by now: say where the session is and how the run went.
    if let Some(p) = &path {
        match &recorded {
            Ok(Some(s)) => {
                for n in &s.notices {
                    eprintln!("{n}");
                }
                eprintln!("session: {p} ({} events, {} bytes)", s.events, s.bytes)
            }
            _ => eprintln!("session: {p}"),
        }
    }
    eprintln!("{}", summary_line(&trunk, total));
    let dropped = info.dropped_display.load(Ordering::Relaxed);
    if dropped > 0 {
        eprintln!(
            "the UI fell behind: {dropped} step samples were not drawn (all are in the session)"
        );
    }
    if let Some(stop) = interrupts.received() {
        for line in record::interrupted_lines(stop, outcome.step, None, trunk.checkpoint.as_deref())
        {
            eprintln!("{line}");
        }
        recorded?;
        return Ok(ExitCode::from(stop.exit_code()));
    }
    ui?;
    recorded?;
    Ok(if trunk.reason == Some(EndReason::Failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The one line printed after the UI: how the trunk ended, where, and its losses.
fn summary_line(t: &Trunk, total: u64) -> String {
    let what = match t.reason {
        Some(EndReason::Completed) => "completed",
        Some(EndReason::Stopped) => "stopped",
        Some(EndReason::Failed) => "failed",
        None => "ended without an end event",
    };
    let mut s = format!(
        "run {what} at step {}/{total} in {}",
        t.step,
        duration(t.wall_s)
    );
    if let Some(l) = t.loss {
        s.push_str(&format!(", loss {l:.4}"));
    }
    if let Some(v) = t.val {
        s.push_str(&format!(", val loss {v:.4}"));
    }
    if let Some(m) = &t.message {
        s.push_str(&format!(": {m}"));
    }
    s
}
