//! `wsdscope run`: train in the full-screen TUI, recording the session exactly like `record`.
//!
//! Threads: the engine (`wsdscope-engine`) emits into a bounded channel that never drops; the
//! fan-out thread (`wsdscope-fanout`, the same [`record::fan_out`] loop `record` uses) gives
//! every event to the recorder first, then offers it to the UI with `try_send` on a second
//! bounded channel, so the engine never waits on the UI. Steps the UI has no room for are
//! counted as dropped display samples (the header shows the count); rarer events (start, eval,
//! notes, forks, end) wait in order in a small queue until the UI has room, so the screen never
//! misses how a run ended. The UI runs on the main thread; when it returns, the engine is
//! stopped and joined, the session file completed, and a summary printed after the terminal is
//! restored.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};

use anyhow::{Result, anyhow, bail};
use wsdscope_sessions::{EndReason, RunEvent};
use wsdscope_trainer::Command;

use crate::cli::RunArgs;
use crate::modes::record::{self, Fanned};
use crate::progress::duration;
use crate::tui::{self, LiveInfo};

/// Events the UI may fall behind by before steps are dropped from the display.
pub(crate) const UI_BUFFER: usize = 8192;

pub fn run(args: RunArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let train = &args.train;
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
    }) = record::prepare(train, true)?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    let total = trainer.config().steps;
    let info = LiveInfo {
        session_path: recorder.as_ref().map(|r| r.path().display().to_string()),
        ..Default::default()
    };
    let (engine, events) = match record::spawn_engine(trainer) {
        Ok(e) => e,
        Err(e) => {
            record::discard_recorder(recorder);
            return Err(e);
        }
    };
    interrupts.attach(engine.commands(), checkpoint_to);
    let commands = engine.commands();
    let (ui_tx, ui_rx) = mpsc::sync_channel(UI_BUFFER);
    let fan = {
        let stop = engine.commands();
        let alert = info.alert.clone();
        let notices = info.notices.clone();
        let mut display = Display::new(ui_tx, info.dropped_display.clone());
        std::thread::Builder::new()
            .name("wsdscope-fanout".into())
            .spawn(move || {
                let mut summary = Summary::default();
                let result = record::fan_out(
                    events,
                    recorder.as_ref(),
                    |reason| {
                        let _ = alert.set(format!(
                            "{reason}; training stopped (the session keeps what was written)"
                        ));
                        let _ = stop.send(Command::StopWith {
                            reason,
                            checkpoint_to: None,
                        });
                    },
                    |item| {
                        match item {
                            Fanned::Event(ev) => {
                                summary.on_event(ev);
                                display.send(ev.clone());
                            }
                            Fanned::Notice(n) => {
                                notices.lock().unwrap_or_else(|e| e.into_inner()).push(n);
                            }
                        }
                        Ok(())
                    },
                );
                display.finish();
                (recorder, summary, result)
            })
    };
    let fan = match fan {
        Ok(f) => f,
        Err(e) => {
            engine.send(Command::Stop);
            engine.join();
            bail!("cannot start the fan-out thread: {e}");
        }
    };
    let ui = tui::run_live(ui_rx, commands.clone(), info.clone());
    // The run has ended or was asked to stop; make sure, then wait for its end event. (After
    // a signal the engine already has its StopWith, which comes first.)
    let _ = commands.send(Command::Stop);
    let outcome = engine.join();
    let (recorder, summary, fanned) = fan
        .join()
        .map_err(|_| anyhow!("the fan-out thread panicked; the session may be incomplete"))?;
    let path = recorder.as_ref().map(|r| r.path().display().to_string());
    let recorded = record::finish_recording(recorder, outcome.step);
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
    eprintln!("{}", summary.line(total));
    let dropped = info.dropped_display.load(Ordering::Relaxed);
    if dropped > 0 {
        eprintln!(
            "the UI fell behind: {dropped} step samples were not drawn (all are in the session)"
        );
    }
    if let Some(stop) = interrupts.received() {
        for line in
            record::interrupted_lines(stop, outcome.step, None, summary.checkpoint.as_deref())
        {
            eprintln!("{line}");
        }
        recorded?;
        return Ok(ExitCode::from(stop.exit_code()));
    }
    ui?;
    fanned?;
    recorded?;
    Ok(if summary.reason == Some(EndReason::Failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The UI's end of the fan-out: `try_send`, never blocking the engine.
struct Display {
    tx: SyncSender<RunEvent>,
    /// Events that are not step samples and found the channel full, in order.
    pending: VecDeque<RunEvent>,
    dropped: Arc<AtomicU64>,
    closed: bool,
}

impl Display {
    fn new(tx: SyncSender<RunEvent>, dropped: Arc<AtomicU64>) -> Self {
        Display {
            tx,
            pending: VecDeque::new(),
            dropped,
            closed: false,
        }
    }

    fn send(&mut self, ev: RunEvent) {
        if self.closed {
            return;
        }
        while let Some(p) = self.pending.pop_front() {
            match self.tx.try_send(p) {
                Ok(()) => {}
                Err(TrySendError::Full(p)) => {
                    self.pending.push_front(p);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.closed = true;
                    return;
                }
            }
        }
        let sample = matches!(ev, RunEvent::Step(_));
        if !self.pending.is_empty() {
            // Keep the order of what is shown: a step may not overtake a queued event.
            if sample {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                self.pending.push_back(ev);
            }
            return;
        }
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => {
                if sample {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.pending.push_back(ev);
                }
            }
            Err(TrySendError::Disconnected(_)) => self.closed = true,
        }
    }

    /// Delivers what is still queued. Training is over by now, so waiting is harmless; a UI
    /// that has quit makes the sends fail at once.
    fn finish(mut self) {
        while let Some(p) = self.pending.pop_front() {
            if self.closed || self.tx.send(p).is_err() {
                return;
            }
        }
    }
}

/// What the one-line summary after the UI says.
#[derive(Debug, Default)]
struct Summary {
    /// The trunk's last checkpoint.
    checkpoint: Option<std::path::PathBuf>,
    step: u64,
    loss: Option<f64>,
    reason: Option<EndReason>,
    message: Option<String>,
    val: Option<f64>,
    wall_s: f64,
}

impl Summary {
    fn on_event(&mut self, ev: &RunEvent) {
        match ev {
            RunEvent::Step(m) if m.run == 0 => {
                self.step = m.step;
                self.loss = Some(m.loss);
            }
            RunEvent::Checkpoint { run: 0, path, .. } => {
                self.checkpoint = Some(path.into());
            }
            RunEvent::End {
                run: 0,
                step,
                reason,
                message,
                final_val_loss,
                wall_s,
            } => {
                self.step = *step;
                self.reason = Some(*reason);
                self.message.clone_from(message);
                self.val = *final_val_loss;
                self.wall_s = *wall_s;
            }
            _ => {}
        }
    }

    fn line(&self, total: u64) -> String {
        let what = match self.reason {
            Some(EndReason::Completed) => "completed",
            Some(EndReason::Stopped) => "stopped",
            Some(EndReason::Failed) => "failed",
            None => "ended without an end event",
        };
        let mut s = format!(
            "run {what} at step {}/{total} in {}",
            self.step,
            duration(self.wall_s)
        );
        if let Some(l) = self.loss {
            s.push_str(&format!(", loss {l:.4}"));
        }
        if let Some(v) = self.val {
            s.push_str(&format!(", val loss {v:.4}"));
        }
        if let Some(m) = &self.message {
            s.push_str(&format!(": {m}"));
        }
        s
    }
}
