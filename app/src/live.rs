//! The live pipeline: how one engine's events reach the session file and the person watching,
//! for `record` (a printer: `--jsonl` and the progress line) and `run` (the TUI).
//!
//! ```text
//!                      ┌─► Recorder::record ──(bounded, waits)──► HDF5 writer thread
//! engine thread ─emit─►│
//!   (Pipeline::deliver)└─► Viewer::Printer ──(bounded, waits)───► main thread: jsonl, progress
//!                         or Viewer::Display ─(try_send, never waits)─► UI thread (tui::LiveSource)
//!                      └─► Attached: each viewer ─(try_send, never waits)─► its connection
//!                                                                   (crate::attach)
//! ```
//!
//! Every event is handled on the engine thread, in order, as it is emitted, so there is one
//! hop from the engine to each consumer:
//! 1. **The session file never drops an event.** [`Recorder::record`] queues it for the
//!    writer thread and waits when that queue is full (the engine waits with it). If a write
//!    fails, or the writer says the disk is nearly full ([`Notice::MustStop`]), the pipeline
//!    asks the engine to stop ([`Command::StopWith`]); what was written stays readable. The
//!    writer's notices (a write retried, then recovered) go to the viewer between events.
//! 2. **The printer sees every event** (`record`): a channel of [`EVENT_BUFFER`] events that
//!    waits when full, emptied by the main thread.
//! 3. **The display may drop step samples** (`run`): the UI's channel of [`UI_BUFFER`] events
//!    is offered each event with `try_send`. A step sample it has no room for is counted in
//!    [`LiveInfo::dropped_display`] (the header shows it) and dropped; rarer events (start,
//!    evals, notes, forks, ends) wait in order in a small queue, so the screen never misses
//!    how a run ended. The engine never waits for the screen.
//! 4. **Attached viewers are offered events like the display** ([`Attached`]): each has its
//!    own channel and queue, and the count of events delivered before it came
//!    ([`Registered::delivered`]), so it can take the earlier ones from the session file
//!    without a gap or a duplicate. One that stops reading is given up, never waited for.
//!
//! [`Live::start`] starts the engine with the pipeline as its sink; [`Live::finish`] waits
//! for the engine and hands back the recorder (to complete the file) and what the trunk's
//! events said ([`Trunk`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use wsdscope_sessions::{EndReason, Notice, RecordSummary, Recorder, RunEvent, RunId};
use wsdscope_trainer::{Command, Engine, Outcome, Trainer};

use crate::tui::LiveInfo;

/// Events the engine may run ahead of the printer before it waits (nothing is dropped).
pub const EVENT_BUFFER: usize = 4096;

/// Events the UI may fall behind by before steps are dropped from the display.
pub const UI_BUFFER: usize = 8192;

/// Events that are not step samples an attached viewer may fall behind by before it is
/// given up (it stopped reading; its connection is closed).
pub const ATTACHED_PENDING: usize = 1 << 16;

/// What the printer of `record` receives, in order.
pub enum Printed {
    Event(RunEvent),
    /// Something the session's writer has to say (a write retried, recovered, or stopping).
    Notice(Notice),
}

/// Who watches the run besides the session file.
pub enum Viewer {
    /// `record`: every event and notice, waiting for room (see the module doc).
    Printer(SyncSender<Printed>),
    /// `run`: the TUI's event channel, offered each event without waiting, and the header's
    /// shared counters and notices.
    Display {
        events: SyncSender<RunEvent>,
        info: LiveInfo,
    },
}

/// A running engine with its pipeline.
pub struct Live {
    engine: Engine,
    pipeline: Arc<Mutex<Pipeline>>,
}

/// What is left when the engine has ended.
pub struct Finished {
    pub outcome: Outcome,
    /// The session's recorder, still to be completed ([`finish_recording`]).
    pub recorder: Option<Recorder>,
    pub trunk: Trunk,
}

impl Live {
    /// Starts `trainer` on the engine thread with every event going through the pipeline to
    /// `recorder`, `viewer` and the viewers that `attached` registers (none without a control
    /// endpoint: `Attached::default()`). If the engine cannot start, the session file is
    /// removed (it never received a run).
    pub fn start(
        trainer: Trainer,
        recorder: Option<Recorder>,
        viewer: Viewer,
        attached: Attached,
    ) -> Result<Live> {
        let stopper = Arc::new(OnceLock::new());
        let pipeline = Arc::new(Mutex::new(Pipeline {
            recorder,
            recording_failed: false,
            viewer: Some(match viewer {
                Viewer::Printer(tx) => Sink::Printer(tx),
                Viewer::Display { events, info } => Sink::Display(
                    Offer::new(events, Arc::clone(&info.dropped_display), None),
                    info,
                ),
            }),
            stopper: Arc::clone(&stopper),
            stop_reason: None,
            stop_sent: false,
            trunk: Trunk::default(),
            attached,
            open_runs: BTreeMap::new(),
            started: Instant::now(),
        }));
        let side = EngineSide(Arc::clone(&pipeline));
        let engine = match Engine::spawn(trainer, move |ev| side.deliver(ev)) {
            Ok(e) => e,
            Err(e) => {
                if let Ok(p) = Arc::try_unwrap(pipeline) {
                    discard_recorder(p.into_inner().unwrap_or_else(|e| e.into_inner()).recorder);
                }
                return Err(e.into());
            }
        };
        // A stop the pipeline asked for before the engine's handle existed goes out with the
        // next event.
        let _ = stopper.set(engine.commands());
        Ok(Live { engine, pipeline })
    }

    /// A handle for sending commands to the engine (the UI, a signal handler).
    pub fn commands(&self) -> Sender<Command> {
        self.engine.commands()
    }

    /// A way to end the session without the engine ([`Breaker::fail`]).
    pub fn breaker(&self) -> Breaker {
        Breaker(Arc::downgrade(&self.pipeline))
    }

    /// Waits for the engine to end (its last events delivered) and hands back the recorder.
    pub fn finish(self) -> Result<Finished> {
        let outcome = self.engine.join();
        // The engine thread has dropped its end of the pipeline (flushing the display and the
        // writer's last notices); this is the only one left.
        let pipeline = Arc::try_unwrap(self.pipeline)
            .map_err(|_| anyhow!("the live pipeline is still in use after the engine ended"))?
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Ok(Finished {
            outcome,
            recorder: pipeline.recorder,
            trunk: pipeline.trunk,
        })
    }
}

/// The engine thread's handle on the pipeline. Dropped when the engine thread ends (also by
/// a panic), which closes the viewer after delivering what is still queued.
struct EngineSide(Arc<Mutex<Pipeline>>);

impl EngineSide {
    fn lock(&self) -> MutexGuard<'_, Pipeline> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, ev: RunEvent) {
        self.lock().deliver(ev);
    }
}

impl Drop for EngineSide {
    fn drop(&mut self) {
        self.lock().close();
    }
}

/// The pipeline's state, touched only by the engine thread until [`Live::finish`].
struct Pipeline {
    recorder: Option<Recorder>,
    recording_failed: bool,
    /// `None` once closed.
    viewer: Option<Sink>,
    /// The engine's command handle, once it exists.
    stopper: Arc<OnceLock<Sender<Command>>>,
    /// Why the run must stop for the recording's sake (the first reason only).
    stop_reason: Option<String>,
    stop_sent: bool,
    trunk: Trunk,
    attached: Attached,
    /// The runs that have started and not ended, with the last step each reported.
    open_runs: BTreeMap<RunId, u64>,
    started: Instant,
}

impl Pipeline {
    /// One event: the session file first, then the viewer.
    fn deliver(&mut self, ev: RunEvent) {
        self.trunk.on_event(&ev);
        match &ev {
            RunEvent::RunStart(s) => {
                self.open_runs.insert(s.run, s.start_step);
            }
            RunEvent::Step(m) => {
                self.open_runs.insert(m.run, m.step);
            }
            RunEvent::End { run, .. } => {
                self.open_runs.remove(run);
            }
            _ => {}
        }
        if let Some(r) = &self.recorder {
            if !self.recording_failed
                && let Err(e) = r.record(ev.clone())
            {
                self.recording_failed = true;
                self.must_stop(format!("recording failed: {e}"));
            }
            self.notices();
        }
        self.attached.deliver(&ev);
        if let Some(v) = &mut self.viewer {
            v.event(ev);
        }
        self.send_stop();
    }

    /// Hands on what the writer has to say; a must-stop also stops the run.
    fn notices(&mut self) {
        let Some(r) = &self.recorder else { return };
        for n in r.notices() {
            if let Notice::MustStop(m) = &n {
                self.must_stop(m.clone());
            }
            self.attached.notice(&n);
            if let Some(v) = &mut self.viewer {
                v.notice(n);
            }
        }
    }

    /// The run must stop for the recording's sake: training stops (once); a display shows why.
    fn must_stop(&mut self, reason: String) {
        if self.stop_reason.is_some() {
            return;
        }
        let alert = format!("{reason}; training stopped (the session keeps what was written)");
        self.attached.notice(&Notice::MustStop(alert.clone()));
        if let Some(Sink::Display(_, info)) = &self.viewer {
            let _ = info.alert.set(alert);
        }
        self.stop_reason = Some(reason);
    }

    fn send_stop(&mut self) {
        if self.stop_sent {
            return;
        }
        if let (Some(reason), Some(tx)) = (&self.stop_reason, self.stopper.get()) {
            let _ = tx.send(Command::StopWith {
                reason: reason.clone(),
                checkpoint_to: None,
            });
            self.stop_sent = true;
        }
    }

    /// The engine has ended: the writer's last notices, the display's queue, and the
    /// viewer's channel closed (so the printer's loop ends).
    fn close(&mut self) {
        self.notices();
        if let Some(Sink::Display(d, _)) = self.viewer.take() {
            d.finish(None);
        }
        self.attached.close();
    }
}

/// Ends the session from outside the engine thread, for when the engine can no longer do it
/// (another rank of the job died while this one waits for it inside a collective). It holds
/// the pipeline weakly: once the engine has ended and [`Live::finish`] has taken the
/// pipeline, it does nothing.
#[derive(Clone)]
pub struct Breaker(Weak<Mutex<Pipeline>>);

impl Breaker {
    /// Ends every run still open with `failed` and `message` (recorded and shown like any
    /// event), then completes the session file and returns its summary (`None` without a
    /// session file). Events the engine emits afterwards are not recorded. `None` when the
    /// engine had already ended: then the session ends as the engine ended it.
    pub fn fail(&self, message: &str) -> Option<Result<Option<RecordSummary>>> {
        let pipeline = self.0.upgrade()?;
        let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
        let wall_s = p.started.elapsed().as_secs_f64();
        for (run, step) in std::mem::take(&mut p.open_runs) {
            p.deliver(RunEvent::End {
                run,
                step,
                reason: EndReason::Failed,
                message: Some(message.to_string()),
                final_val_loss: None,
                wall_s,
            });
        }
        let step = p.trunk.step;
        Some(finish_recording(p.recorder.take(), step))
    }
}

/// A viewer as the pipeline drives it.
enum Sink {
    Printer(SyncSender<Printed>),
    Display(Offer, LiveInfo),
}

impl Sink {
    fn event(&mut self, ev: RunEvent) {
        match self {
            // A printer that has gone (the main thread failed writing) takes nothing more.
            Sink::Printer(tx) => {
                let _ = tx.send(Printed::Event(ev));
            }
            Sink::Display(d, _) => d.send(ev),
        }
    }

    fn notice(&mut self, n: Notice) {
        match self {
            Sink::Printer(tx) => {
                let _ = tx.send(Printed::Notice(n));
            }
            Sink::Display(_, info) => info
                .notices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(n),
        }
    }
}

/// A channel offered each event with `try_send`, never blocking the engine: a step sample
/// that finds it full is dropped and counted; other events wait in order in `pending`.
struct Offer {
    tx: SyncSender<RunEvent>,
    /// Events that are not step samples and found the channel full, in order.
    pending: VecDeque<RunEvent>,
    /// Step samples dropped so far.
    dropped: Arc<AtomicU64>,
    /// The most events `pending` may hold before this receiver is given up (an attached
    /// viewer that stopped reading); `None`: no limit (the local display).
    limit: Option<usize>,
    closed: bool,
}

impl Offer {
    fn new(tx: SyncSender<RunEvent>, dropped: Arc<AtomicU64>, limit: Option<usize>) -> Self {
        Offer {
            tx,
            pending: VecDeque::new(),
            dropped,
            limit,
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
                self.dropped();
            } else {
                self.queue(ev);
            }
            return;
        }
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => {
                if sample {
                    self.dropped();
                } else {
                    self.queue(ev);
                }
            }
            Err(TrySendError::Disconnected(_)) => self.closed = true,
        }
    }

    fn queue(&mut self, ev: RunEvent) {
        if self.limit.is_some_and(|l| self.pending.len() >= l) {
            // Nothing is read any more: forget this receiver rather than hold events forever.
            self.closed = true;
            self.pending.clear();
        } else {
            self.pending.push_back(ev);
        }
    }

    fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Delivers what is still queued. Training is over by now, so waiting is harmless; a
    /// receiver that has gone makes the sends fail at once. With `patience`, gives up after
    /// that long (a remote viewer may never read again).
    fn finish(mut self, patience: Option<Duration>) {
        let t0 = Instant::now();
        while let Some(p) = self.pending.pop_front() {
            if self.closed {
                return;
            }
            match patience {
                None => {
                    if self.tx.send(p).is_err() {
                        return;
                    }
                }
                Some(limit) => {
                    let mut p = p;
                    loop {
                        match self.tx.try_send(p) {
                            Ok(()) => break,
                            Err(TrySendError::Full(back)) if t0.elapsed() < limit => {
                                p = back;
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err(_) => return,
                        }
                    }
                }
            }
        }
    }
}

/// The viewers attached over the control endpoint ([`crate::attach`]): each is offered every
/// event like the display (its step samples dropped when it falls behind, never slowing the
/// engine). Shared by the pipeline and the endpoint's listener, which registers viewers.
#[derive(Clone, Default)]
pub struct Attached(Arc<Mutex<AttachedList>>);

#[derive(Default)]
struct AttachedList {
    /// Events delivered so far (the next event's `seq` in the session file).
    delivered: u64,
    /// Each viewer's events, and what the session's writer has to say (taken by its
    /// connection between events).
    viewers: Vec<(Offer, Notices)>,
    /// The engine has ended: nothing more comes.
    closed: bool,
}

/// A viewer's end of the pipeline, from [`Attached::register`].
pub struct Registered {
    /// The events delivered before this viewer was registered (the first one it receives
    /// is number `delivered`).
    pub delivered: u64,
    pub events: Receiver<RunEvent>,
    /// Step samples dropped because this viewer fell behind.
    pub dropped: Arc<AtomicU64>,
    /// What the session's writer reports (a write retried, recovered, the run must stop).
    pub notices: Notices,
}

/// Notices waiting for a viewer to take them.
pub type Notices = Arc<Mutex<Vec<Notice>>>;

impl Attached {
    fn lock(&self) -> MutexGuard<'_, AttachedList> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new viewer, offered every event from now on through a channel of `buffer` events
    /// (and at most [`ATTACHED_PENDING`] waiting non-sample events). `None` once the engine
    /// has ended.
    pub fn register(&self, buffer: usize) -> Option<Registered> {
        let mut list = self.lock();
        if list.closed {
            return None;
        }
        let (tx, rx) = mpsc::sync_channel(buffer);
        let dropped = Arc::new(AtomicU64::new(0));
        let notices = Notices::default();
        list.viewers.push((
            Offer::new(tx, Arc::clone(&dropped), Some(ATTACHED_PENDING)),
            Arc::clone(&notices),
        ));
        Some(Registered {
            delivered: list.delivered,
            events: rx,
            dropped,
            notices,
        })
    }

    /// How many viewers are attached now.
    pub fn count(&self) -> usize {
        self.lock()
            .viewers
            .iter()
            .filter(|(v, _)| !v.closed)
            .count()
    }

    fn deliver(&self, ev: &RunEvent) {
        let mut list = self.lock();
        list.delivered += 1;
        list.viewers.retain(|(v, _)| !v.closed);
        for (v, _) in &mut list.viewers {
            v.send(ev.clone());
        }
    }

    fn notice(&self, n: &Notice) {
        for (_, notices) in &self.lock().viewers {
            notices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(n.clone());
        }
    }

    /// The engine has ended: what is queued goes out (for a short while), then every
    /// viewer's channel closes.
    fn close(&self) {
        let viewers = {
            let mut list = self.lock();
            list.closed = true;
            std::mem::take(&mut list.viewers)
        };
        for (v, _) in viewers {
            v.finish(Some(Duration::from_secs(2)));
        }
    }
}

/// What the trunk's events said: how the run went, for the lines printed after it.
#[derive(Debug, Default)]
pub struct Trunk {
    /// The trunk's last checkpoint.
    pub checkpoint: Option<PathBuf>,
    pub step: u64,
    pub loss: Option<f64>,
    pub reason: Option<EndReason>,
    pub message: Option<String>,
    pub val: Option<f64>,
    pub wall_s: f64,
}

impl Trunk {
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
}

/// Completes the session file. Its error says what failed and that the file keeps everything
/// written before the failure.
pub fn finish_recording(recorder: Option<Recorder>, step: u64) -> Result<Option<RecordSummary>> {
    let Some(r) = recorder else { return Ok(None) };
    match r.finish() {
        Ok(s) => Ok(Some(s)),
        Err(e) => bail!(
            "{e}; training stopped after step {step}; the session keeps everything written before the failure"
        ),
    }
}

/// Forgets a session file that never received a run (training failed to start).
pub fn discard_recorder(rec: Option<Recorder>) {
    if let Some(r) = rec {
        let path = r.path().to_path_buf();
        let _ = r.finish();
        let _ = std::fs::remove_file(path);
    }
}
