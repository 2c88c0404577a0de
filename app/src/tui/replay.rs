//! Replay: a recorded session's event stream fed into the same [`TuiState`] as a live run, up
//! to a time cursor that plays (at the recorded pace ×1/×10/×100, or as fast as it can), scrubs
//! and jumps to phase changes and forks. With `--follow` it re-reads a session that is still
//! being written and keeps the cursor at its end.
//!
//! The cursor is the number of events applied (`TuiState::events`). Moving it forward applies
//! the next events; moving it back rebuilds the state from the start (`clear_runs`), since
//! applying is cheap and the state keeps no undo log. Scrubbing moves by *step events* (of any
//! run) and always lands just before the next step event, so a step's eval, notes and forks
//! show with it.
//!
//! Pace: ×1 replays the recorded training time, the sum of the step events' `step_ms` (time
//! outside steps — evals, checkpoints, pauses — is not recorded per step and is skipped).

use std::time::{Duration, Instant};

use anyhow::Result;
use wsdscope_sessions::{RunEvent, RunId};

use super::keys::{Action, Seek};
use super::state::{Level, TuiState};
use super::{Flow, Source};

/// How often a followed session is re-read.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// The most time one pass spends applying events (at `max` speed, or after a long frame).
const APPLY_BUDGET: Duration = Duration::from_millis(30);

/// Replay speeds, slowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speed {
    X1,
    X10,
    X100,
    Max,
}

impl Speed {
    const ALL: [Speed; 4] = [Speed::X1, Speed::X10, Speed::X100, Speed::Max];

    /// Recorded milliseconds per real millisecond; `None`: as fast as possible.
    pub fn factor(self) -> Option<f64> {
        match self {
            Speed::X1 => Some(1.0),
            Speed::X10 => Some(10.0),
            Speed::X100 => Some(100.0),
            Speed::Max => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Speed::X1 => "×1",
            Speed::X10 => "×10",
            Speed::X100 => "×100",
            Speed::Max => "max",
        }
    }

    fn shifted(self, by: i32) -> Speed {
        let i = Self::ALL.iter().position(|&s| s == self).unwrap_or(0) as i32;
        Self::ALL[(i + by).clamp(0, Self::ALL.len() as i32 - 1) as usize]
    }
}

/// Re-reads a growing session. `Ok(None)`: nothing new; `Ok(Some(all))`: the whole stream as it
/// is now (usually the old one plus a tail).
pub trait Reload {
    fn reload(&mut self) -> Result<Option<Vec<RunEvent>>>;
    /// Whether a process is still writing the session (`None`: cannot be told).
    fn writer_alive(&self) -> Option<bool> {
        None
    }
}

/// A recorded stream with the positions the cursor moves between.
struct Timeline {
    events: Vec<RunEvent>,
    /// Index in `events` of each step event, in order.
    steps: Vec<usize>,
    /// Cursor positions just after a phase change (the first step of a new phase) or a fork,
    /// sorted.
    marks: Vec<usize>,
}

impl Timeline {
    fn new(events: Vec<RunEvent>) -> Self {
        let mut steps = Vec::new();
        let mut at = Vec::new();
        let mut phase: std::collections::HashMap<RunId, wsdscope_sessions::Phase> =
            Default::default();
        for (i, ev) in events.iter().enumerate() {
            match ev {
                RunEvent::Step(m) => {
                    steps.push(i);
                    let prev = phase.insert(m.run, m.phase);
                    if prev.is_some_and(|p| p != m.phase) {
                        at.push(i);
                    }
                }
                RunEvent::Forked { .. } => at.push(i),
                _ => {}
            }
        }
        let mut t = Timeline {
            events,
            steps,
            marks: Vec::new(),
        };
        let mut marks: Vec<usize> = at.into_iter().map(|i| t.settle(i)).collect();
        marks.dedup();
        t.marks = marks;
        t
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    /// The cursor that applies event `i` and everything up to the next step event.
    fn settle(&self, i: usize) -> usize {
        let k = self.steps.partition_point(|&s| s <= i);
        self.steps.get(k).copied().unwrap_or(self.len())
    }

    /// Step events before `cursor`.
    fn steps_before(&self, cursor: usize) -> usize {
        self.steps.partition_point(|&s| s < cursor)
    }

    /// The cursor with `n` step events applied (and what follows the last one).
    fn after_steps(&self, n: usize) -> usize {
        if n == 0 {
            self.steps.first().copied().unwrap_or(self.len())
        } else if n >= self.steps.len() {
            self.len()
        } else {
            self.settle(self.steps[n - 1])
        }
    }
}

/// A recorded session as a [`Source`].
pub struct ReplaySource {
    tl: Timeline,
    playing: bool,
    speed: Speed,
    /// Attached to a growing session; `following` keeps the cursor at its end.
    reload: Option<Box<dyn Reload>>,
    following: bool,
    /// The followed session's writer has gone.
    writer_gone: bool,
    /// Recorded milliseconds the cursor may still advance by.
    credit_ms: f64,
    last_tick: Option<Instant>,
    last_reload: Option<Instant>,
}

impl ReplaySource {
    /// A replay of `events`; with `reload` it follows the session as it grows (cursor at the
    /// end). Without, the cursor starts at the end too, paused: the whole session is on screen.
    pub fn new(events: Vec<RunEvent>, reload: Option<Box<dyn Reload>>) -> Self {
        let following = reload.is_some();
        ReplaySource {
            tl: Timeline::new(events),
            playing: false,
            speed: Speed::X1,
            reload,
            following,
            writer_gone: false,
            credit_ms: 0.0,
            last_tick: None,
            last_reload: None,
        }
    }

    /// Sets up `state` (a [`TuiState::replay`]) at the end of the stream.
    pub fn start(&mut self, state: &mut TuiState) {
        self.seek_to(state, self.tl.len());
        if self.reload.is_none() {
            state.set_status(
                Level::Info,
                "replay at the end of the session: b goes to the start, space plays",
            );
        }
        self.publish(state);
    }

    /// Moves the cursor to `target` events applied.
    fn seek_to(&mut self, state: &mut TuiState, target: usize) {
        let target = target.min(self.tl.len());
        if (state.events as usize) > target {
            let selected = state.ui.selected;
            state.clear_runs();
            state.ui.selected = selected;
        }
        let from = state.events as usize;
        for ev in &self.tl.events[from..target] {
            state.apply(ev);
        }
        self.credit_ms = 0.0;
    }

    fn cursor(state: &TuiState) -> usize {
        state.events as usize
    }

    fn at_end(&self, state: &TuiState) -> bool {
        Self::cursor(state) >= self.tl.len()
    }

    /// Copies the cursor's facts into the state for the header.
    fn publish(&self, state: &mut TuiState) {
        let shown = self.tl.steps_before(Self::cursor(state)) as u64;
        if let Some(r) = &mut state.ui.replay {
            r.playing = self.playing;
            r.speed = self.speed.label();
            r.follow = self.reload.is_some();
            r.following = self.following;
            r.steps_shown = shown;
            r.steps_total = self.tl.steps.len() as u64;
            r.writer_gone = self.writer_gone;
        }
    }

    /// Advances a playing cursor by `elapsed` real time.
    pub fn tick(&mut self, state: &mut TuiState, elapsed: Duration) {
        if !self.playing || self.following {
            return;
        }
        let t0 = Instant::now();
        let factor = self.speed.factor();
        if let Some(f) = factor {
            self.credit_ms += elapsed.as_secs_f64() * 1000.0 * f;
        }
        let mut n = 0u32;
        while let Some(ev) = self.tl.events.get(Self::cursor(state)) {
            if let (Some(_), RunEvent::Step(m)) = (factor, ev) {
                let cost = if m.step_ms.is_finite() && m.step_ms > 0.0 {
                    m.step_ms
                } else {
                    0.0
                };
                if cost > self.credit_ms {
                    break;
                }
                self.credit_ms -= cost;
            }
            state.apply(ev);
            n += 1;
            if n.is_multiple_of(256) && t0.elapsed() >= APPLY_BUDGET {
                // Falling behind: drop the backlog rather than build it up.
                self.credit_ms = 0.0;
                break;
            }
        }
        if self.at_end(state) {
            self.playing = false;
            self.credit_ms = 0.0;
            if self.reload.is_some() {
                self.following = true;
            } else {
                state.set_status(Level::Info, "end of the session");
            }
        }
    }

    /// Re-reads a followed session when it is due.
    fn poll_reload(&mut self, state: &mut TuiState) {
        let Some(reload) = self.reload.as_mut() else {
            return;
        };
        if self.last_reload.is_some_and(|t| t.elapsed() < FOLLOW_EVERY) {
            return;
        }
        self.last_reload = Some(Instant::now());
        // Asked before re-reading: a writer that closed the file has flushed everything.
        let alive = reload.writer_alive();
        match reload.reload() {
            Ok(Some(events)) => self.replace(state, events),
            Ok(None) => {}
            Err(e) => state.set_status(
                Level::Error,
                format!("cannot re-read the session (retrying): {e:#}"),
            ),
        }
        if alive == Some(false) && !self.writer_gone {
            self.writer_gone = true;
            if state.training_active() {
                state.set_status(
                    Level::Error,
                    "the process recording this session has gone without ending its runs (killed or crashed); everything it flushed is shown",
                );
            }
        }
    }

    /// Takes a newer version of the stream. The state is kept when the old stream is a prefix
    /// of the new one, otherwise rebuilt up to the same cursor.
    pub fn replace(&mut self, state: &mut TuiState, events: Vec<RunEvent>) {
        let cursor = Self::cursor(state);
        let old = &self.tl.events;
        let same_prefix = events.len() >= old.len() && events[..cursor] == old[..cursor];
        self.tl = Timeline::new(events);
        if !same_prefix {
            let selected = state.ui.selected;
            state.clear_runs();
            state.ui.selected = selected;
        }
        let target = if self.following {
            self.tl.len()
        } else {
            cursor.min(self.tl.len())
        };
        self.seek_to(state, target);
    }

    fn seek(&mut self, state: &mut TuiState, to: Seek) {
        let cursor = Self::cursor(state);
        let n = self.tl.steps_before(cursor) as i64;
        let total = self.tl.steps.len() as i64;
        let by_steps = |k: i64| (n + k).clamp(0, total) as usize;
        let target = match to {
            Seek::Steps(k) => self.tl.after_steps(by_steps(k)),
            Seek::Twentieths(k) => self.tl.after_steps(by_steps(k * (total / 20).max(1))),
            Seek::Start => self.tl.after_steps(0),
            Seek::End => self.tl.len(),
            Seek::NextMark => match self.tl.marks.iter().find(|&&m| m > cursor) {
                Some(&m) => m,
                None => {
                    state.set_status(Level::Info, "no later phase change or fork");
                    return;
                }
            },
            Seek::PrevMark => match self.tl.marks.iter().rev().find(|&&m| m < cursor) {
                Some(&m) => m,
                None => {
                    state.set_status(Level::Info, "no earlier phase change or fork");
                    return;
                }
            },
        };
        self.seek_to(state, target);
        let at_end = self.at_end(state);
        if self.reload.is_some() {
            // Following resumes at the end and stops anywhere else.
            self.following = at_end;
        }
        if at_end && self.playing {
            self.playing = false;
        }
    }
}

impl Source for ReplaySource {
    fn pump(&mut self, state: &mut TuiState) -> Flow {
        let now = Instant::now();
        let elapsed = self.last_tick.map(|t| now - t).unwrap_or_default();
        self.last_tick = Some(now);
        self.poll_reload(state);
        self.tick(state, elapsed);
        self.publish(state);
        Flow::Continue
    }

    fn act(&mut self, action: Action, state: &mut TuiState) -> Flow {
        match action {
            Action::Quit | Action::ForceQuit | Action::StopRun => return Flow::Quit,
            Action::PlayPause => {
                if self.playing || self.following {
                    self.playing = false;
                    self.following = false;
                } else if self.at_end(state) && self.reload.is_some() {
                    self.following = true;
                } else {
                    if self.at_end(state) {
                        let start = self.tl.after_steps(0);
                        self.seek_to(state, start);
                    }
                    self.playing = true;
                    self.credit_ms = 0.0;
                }
            }
            Action::Speed(by) => {
                self.speed = self.speed.shifted(by);
                self.credit_ms = 0.0;
            }
            Action::Seek(to) => self.seek(state, to),
            Action::Pause
            | Action::Resume
            | Action::Fork(_)
            | Action::ForkResume(_)
            | Action::Probe(_) => {
                state.set_status(Level::Warn, "this is a replay: no engine to command");
            }
        }
        self.publish(state);
        Flow::Continue
    }
}
