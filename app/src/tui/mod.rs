//! The terminal UI: live runs and replays of recorded sessions, drawn from the same
//! `RunEvent` stream.
//!
//! The shape follows DESIGN §2/§8: [`TuiState`] is plain data updated only by applying
//! events ([`TuiState::apply`]) and by input; input returns intents ([`handle_key`],
//! [`handle_mouse`] → [`Action`]); views are pure renders of `&TuiState` ([`App`], one file
//! per panel under `views/`); the loop ([`run_loop`]) owns the side effects through a
//! [`Source`] (the live engine here; a session reader for replay) and redraws at most every
//! [`FRAME`].
//!
//! Live mode: [`run_live`]. The caller starts the engine, forwards its events into a channel
//! without blocking training (a bounded `try_send`, counting what it drops into
//! [`LiveInfo::dropped_display`]), and hands this module the receiving end plus the engine's
//! command sender. Replay: [`run_replay`] with a [`replay::ReplaySource`].

pub mod compare;
pub mod format;
pub mod keys;
pub mod layout;
pub mod replay;
pub mod series;
pub mod state;
// Synthetic sessions serve the tests and the render benchmark only.
pub mod synthetic;
pub mod terminal;
pub mod views;

#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event};
use ratatui::{Frame, Terminal};
use wsdscope_sessions::{Notice, RunEvent};
use wsdscope_trainer::Command;

pub use keys::{Action, handle_key, handle_mouse};
pub use state::{Level, TuiState};
pub use views::App;

/// The shortest time between two frames (at most 10 redraws per second: the slow end of the
/// 50–100 ms the design allows, so drawing takes the least CPU from training).
pub const FRAME: Duration = Duration::from_millis(100);
/// Redraw at least this often even when nothing changed (e.g. the clock-free ETA text).
const IDLE_FRAME: Duration = Duration::from_millis(1000);
/// The most time one pass spends applying queued events before it looks at input again.
const DRAIN_BUDGET: Duration = Duration::from_millis(30);

/// What the caller of [`run_live`] provides besides the channels.
#[derive(Debug, Clone, Default)]
pub struct LiveInfo {
    /// The session file being written, shown in the header.
    pub session_path: Option<String>,
    /// Events the caller dropped on the way to the UI because the UI fell behind (the
    /// recorder still got them). The caller increments it; the header shows it.
    pub dropped_display: Arc<AtomicU64>,
    /// Set once by the caller when something outside the event stream failed (the session
    /// file could not be written); shown in red in the header for the rest of the run.
    pub alert: Arc<OnceLock<String>>,
    /// What the recorder reports while it works (a write retried, then recovered), shown on
    /// the status line as it comes.
    pub notices: Arc<Mutex<Vec<Notice>>>,
}

/// Whether the loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// Where events come from and where intents go: the live engine, or a recorded session.
pub trait Source {
    /// Applies whatever has arrived to `state` without blocking for long. Returns
    /// [`Flow::Quit`] when the loop should end (e.g. the run ended after a requested stop).
    fn pump(&mut self, state: &mut TuiState) -> Flow;
    /// Carries out an intent. Returns [`Flow::Quit`] to end the loop now.
    fn act(&mut self, action: Action, state: &mut TuiState) -> Flow;
    /// Called once if the loop ends with an error, before it returns (e.g. to stop training
    /// so the session is completed).
    fn abort(&mut self) {}
}

/// Whether the TUI draws without colour (the monochrome theme): set once by `main` from
/// `--color` and `NO_COLOR` before any UI starts.
static MONOCHROME: AtomicBool = AtomicBool::new(false);

/// Turns the monochrome theme on or off for every UI drawn from now on. The terminal layer
/// is told the same, since it reads `NO_COLOR` on its own: `--color always` then wins over it.
pub fn set_monochrome(on: bool) {
    MONOCHROME.store(on, Ordering::Relaxed);
    ratatui::crossterm::style::force_color_output(!on);
}

/// Draws the whole app into a frame (in the monochrome theme when it is on).
pub fn draw(frame: &mut Frame, state: &TuiState) {
    frame.render_widget(App(state), frame.area());
    if MONOCHROME.load(Ordering::Relaxed) {
        strip_colour(frame.buffer_mut());
    }
}

/// The monochrome theme: every cell's colours reset to the terminal's own, its text and
/// modifiers (bold, underlined, reversed for the selection) kept. Applied to the rendered
/// buffer, so every view stays one pure function of state and no view needs a second palette.
pub fn strip_colour(buf: &mut ratatui::buffer::Buffer) {
    use ratatui::style::Color;
    for cell in buf.content.iter_mut() {
        cell.set_fg(Color::Reset);
        cell.set_bg(Color::Reset);
    }
}

/// The UI loop over any backend and input: pumps the source, handles input, redraws at most
/// every [`FRAME`]. `input(timeout)` waits up to `timeout` for one terminal event.
pub fn run_loop<B, S, I>(
    terminal: &mut Terminal<B>,
    state: &mut TuiState,
    source: &mut S,
    mut input: I,
) -> Result<()>
where
    B: Backend,
    B::Error: std::error::Error + Send + Sync + 'static,
    S: Source,
    I: FnMut(Duration) -> Result<Option<Event>>,
{
    let result = (|| -> Result<()> {
        let mut last_draw: Option<Instant> = None;
        let mut dirty = true;
        loop {
            if terminal::panicked() {
                bail!("a thread panicked (its message is above); the UI stopped");
            }
            if terminal::interrupted() {
                return Ok(());
            }
            let before = state.events;
            let flow = source.pump(state);
            dirty |= state.events != before;
            if flow == Flow::Quit {
                return Ok(());
            }
            let since = last_draw.map(|t| t.elapsed());
            let due = since.is_none_or(|s| (dirty && s >= FRAME) || s >= IDLE_FRAME);
            if due {
                let size = terminal.size()?;
                state.ui.area = ratatui::layout::Rect::new(0, 0, size.width, size.height);
                terminal.draw(|f| draw(f, state))?;
                last_draw = Some(Instant::now());
                dirty = false;
                // Branch predictions are fitted after a frame is on screen.
                dirty |= state.refresh_forecasts();
            }
            let wait = last_draw
                .map(|t| FRAME.saturating_sub(t.elapsed()))
                .unwrap_or_default()
                .max(Duration::from_millis(5));
            if let Some(ev) = input(wait)? {
                dirty = true;
                let action = match ev {
                    Event::Key(k) => handle_key(state, k),
                    Event::Mouse(m) => handle_mouse(state, m),
                    Event::Resize(..) => {
                        terminal.autoresize()?;
                        None
                    }
                    _ => None,
                };
                if let Some(a) = action
                    && source.act(a, state) == Flow::Quit
                {
                    return Ok(());
                }
                // The fork form paused the run: it goes on once the fork is on its way.
                if std::mem::take(&mut state.ui.resume_after_fork)
                    && source.act(Action::Resume, state) == Flow::Quit
                {
                    return Ok(());
                }
            }
        }
    })();
    if result.is_err() {
        source.abort();
    }
    result
}

/// The live engine as a [`Source`]: drains its event channel, turns intents into commands.
pub struct LiveSource {
    events: Receiver<RunEvent>,
    commands: Sender<Command>,
    dropped: Arc<AtomicU64>,
    alert: Arc<OnceLock<String>>,
    notices: Arc<Mutex<Vec<Notice>>>,
    disconnected: bool,
}

impl LiveSource {
    pub fn new(
        events: Receiver<RunEvent>,
        commands: Sender<Command>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        LiveSource {
            events,
            commands,
            dropped,
            alert: Default::default(),
            notices: Default::default(),
            disconnected: false,
        }
    }

    /// Shows what the recorder reports on the status line.
    pub fn with_notices(mut self, notices: Arc<Mutex<Vec<Notice>>>) -> Self {
        self.notices = notices;
        self
    }

    /// Shows `alert` in the header once it is set.
    pub fn with_alert(mut self, alert: Arc<OnceLock<String>>) -> Self {
        self.alert = alert;
        self
    }

    fn send(&mut self, c: Command, state: &mut TuiState) {
        if self.commands.send(c).is_err() {
            state.set_status(Level::Error, "the engine is gone; it cannot take commands");
        }
    }
}

impl Source for LiveSource {
    fn pump(&mut self, state: &mut TuiState) -> Flow {
        if state.ui.alert.is_none()
            && let Some(a) = self.alert.get()
        {
            state.ui.alert = Some(a.clone());
        }
        for n in std::mem::take(&mut *self.notices.lock().unwrap_or_else(|e| e.into_inner())) {
            match n {
                Notice::Retrying(m) => state.set_status(Level::Warn, m),
                Notice::Recovered(m) => state.set_status(Level::Info, m),
                Notice::MustStop(m) => state.set_status(Level::Error, m),
            }
        }
        let t0 = Instant::now();
        while !self.disconnected && t0.elapsed() < DRAIN_BUDGET {
            // Check the clock every few hundred events only.
            for _ in 0..256 {
                match self.events.try_recv() {
                    Ok(ev) => state.apply(&ev),
                    Err(TryRecvError::Empty) => {
                        state.ui.dropped_display = self.dropped.load(Ordering::Relaxed);
                        return self.after_pump(state);
                    }
                    Err(TryRecvError::Disconnected) => {
                        self.disconnected = true;
                        if state.training_active() && !state.ui.stopping {
                            state.set_status(
                                Level::Error,
                                "the engine stopped sending events without ending the run",
                            );
                        }
                        break;
                    }
                }
            }
        }
        state.ui.dropped_display = self.dropped.load(Ordering::Relaxed);
        self.after_pump(state)
    }

    fn act(&mut self, action: Action, state: &mut TuiState) -> Flow {
        match action {
            Action::Pause => self.send(Command::Pause, state),
            Action::Resume => self.send(Command::Resume, state),
            Action::Fork(req) => self.send(Command::Fork(req), state),
            Action::ForkResume(parent) => self.send(Command::ForkResume { parent }, state),
            Action::Probe(run) => self.send(Command::Probe { run }, state),
            Action::Quit | Action::StopRun => {
                if self.disconnected || !state.training_active() {
                    return Flow::Quit;
                }
                if !state.ui.stopping {
                    state.ui.stopping = true;
                    // A paused engine takes Stop too (it waits on its command channel).
                    self.send(Command::Stop, state);
                    state.set_status(Level::Info, "stopping: the session file is being completed");
                }
            }
            Action::ForceQuit => {
                if !state.ui.stopping {
                    self.send(Command::Stop, state);
                }
                return Flow::Quit;
            }
            Action::PlayPause | Action::Speed(_) | Action::Seek(_) => {}
        }
        Flow::Continue
    }

    fn abort(&mut self) {
        let _ = self.commands.send(Command::Stop);
    }
}

impl LiveSource {
    fn after_pump(&self, state: &TuiState) -> Flow {
        if state.ui.stopping && (self.disconnected || !state.training_active()) {
            Flow::Quit
        } else {
            Flow::Continue
        }
    }
}

/// Runs the live TUI until the user quits: sets up the terminal, drains `events` (never
/// blocking the sender), maps keys to `commands`, and on quit sends `Stop` and waits for the
/// run's `End` (or returns at once if the run had already ended). The terminal is restored on
/// every exit path, panics included. On an error the engine is asked to stop.
pub fn run_live(
    events: Receiver<RunEvent>,
    commands: Sender<Command>,
    info: LiveInfo,
) -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!("the TUI needs a terminal on stdout; use `wsdscope record` for headless runs");
    }
    let mut state = TuiState::live(info.session_path);
    let mut source = LiveSource::new(events, commands, info.dropped_display)
        .with_alert(info.alert)
        .with_notices(info.notices);
    let mut guard = match terminal::TerminalGuard::enter().context("cannot set up the terminal") {
        Ok(g) => g,
        Err(e) => {
            source.abort();
            return Err(e);
        }
    };
    let result = run_loop(guard.terminal(), &mut state, &mut source, crossterm_input);
    drop(guard);
    result
}

/// Runs the replay TUI over `events` (a recorded session's stream) until the user quits; with
/// `reload` it follows the session as it grows. The terminal is restored on every exit path.
pub fn run_replay(
    events: Vec<RunEvent>,
    reload: Option<Box<dyn replay::Reload>>,
    session_path: String,
    x_axis: crate::cli::XAxis,
) -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!(
            "the replay UI needs a terminal on stdout; use `wsdscope inspect` or `plot` to read a session without one"
        );
    }
    let follow = reload.is_some();
    let mut state = TuiState::replay(Some(session_path), follow);
    state.set_x_axis(x_axis);
    let mut source = replay::ReplaySource::new(events, reload);
    source.start(&mut state);
    let mut guard = terminal::TerminalGuard::enter().context("cannot set up the terminal")?;
    let result = run_loop(guard.terminal(), &mut state, &mut source, crossterm_input);
    drop(guard);
    result
}

/// Waits up to `timeout` for one terminal event.
pub fn crossterm_input(timeout: Duration) -> Result<Option<Event>> {
    if event::poll(timeout)? {
        Ok(Some(event::read()?))
    } else {
        Ok(None)
    }
}
