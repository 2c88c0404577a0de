//! The TUI's state: plain data. The run data changes only by [`TuiState::apply`]ing
//! [`RunEvent`]s, so a live run and a replay (which applies a recorded stream up to its time
//! cursor) build the same state; the UI part ([`UiState`]) changes only by key handling and by
//! what the main loop sets (terminal size, dropped display samples).
//!
//! The parts: a run's data ([`RunData`], `run.rs`), the UI's own state ([`UiState`],
//! `ui.rs`), the visible range with its zoom window (`zoom.rs`) on the x axis each run's
//! steps map to (`axis.rs`: steps, tokens or training time); here the whole
//! state ([`TuiState`]) and how an event changes it.

mod axis;
mod run;
mod ui;
mod zoom;

use std::collections::BTreeMap;

use wsdscope_sessions::{EndReason, NoteKind, RunEvent, RunId};
use wsdscope_trainer::{RunConfig, Schedule};

pub use self::axis::RunAxis;
pub use self::run::{EMA_ALPHA, EndInfo, RunData, RunStatus};
pub use self::ui::{ForkField, ForkForm, Level, Overlay, ReplayUi, Status, UiState, View};

/// The whole TUI state: runs by id (trunk = 0) plus the UI part.
#[derive(Debug, Clone, Default)]
pub struct TuiState {
    pub runs: BTreeMap<RunId, RunData>,
    /// Each branch's multi-power-law prediction (made at its fork; refitted while it runs
    /// when live).
    pub forecasts: BTreeMap<RunId, crate::predict::Forecast>,
    predictor: crate::predict::Predictor,
    /// Number of events applied so far (a replay's cursor position).
    pub events: u64,
    pub ui: UiState,
}

impl TuiState {
    /// An empty state for a live run.
    pub fn live(session_path: Option<String>) -> Self {
        let mut s = TuiState::default();
        s.ui.session_path = session_path;
        s
    }

    /// An empty state for replaying a recorded session (no engine attached).
    pub fn replay(session_path: Option<String>, follow: bool) -> Self {
        let mut s = TuiState::default();
        s.ui.session_path = session_path;
        s.ui.live = false;
        s.ui.replay = Some(ReplayUi {
            playing: false,
            speed: "×1",
            follow,
            following: follow,
            steps_shown: 0,
            steps_total: 0,
            writer_gone: false,
        });
        s
    }

    /// Applies one event. Unknown events (a newer vocabulary) are counted and ignored.
    pub fn apply(&mut self, ev: &RunEvent) {
        self.events += 1;
        self.record_for_forecasts(ev);
        let first_run = self.runs.is_empty();
        match ev {
            RunEvent::RunStart(s) => {
                let r = self
                    .runs
                    .entry(s.run)
                    .or_insert_with(|| RunData::new(s.run));
                r.name = s.name.clone();
                r.schedule = s
                    .config
                    .get("schedule")
                    .and_then(|v| serde_json::from_value::<Schedule>(v.clone()).ok())
                    .or(r.schedule.take());
                r.run_bytes = serde_json::from_value::<RunConfig>(s.config.clone())
                    .ok()
                    .map(|c| wsdscope_trainer::memory::run_bytes(&c));
                r.parent = s.parent.or(r.parent);
                r.fork_step = s.fork_step.or(r.fork_step);
                if s.run != 0 && r.parent.is_none() {
                    // Older streams: a branch's config may carry its parent.
                    r.parent = s
                        .config
                        .get("parent")
                        .and_then(|v| v.as_u64())
                        .and_then(|p| RunId::try_from(p).ok());
                }
                // A resume replaces whatever followed its start step.
                r.truncate_before(s.start_step + 1);
                r.end = None;
                r.paused = false;
                r.start = Some(s.clone());
            }
            RunEvent::Step(m) => {
                self.runs
                    .entry(m.run)
                    .or_insert_with(|| RunData::new(m.run))
                    .push_step(m);
            }
            RunEvent::Eval {
                run,
                step,
                val_loss,
                ..
            } => {
                self.runs
                    .entry(*run)
                    .or_insert_with(|| RunData::new(*run))
                    .push_eval(*step, *val_loss);
            }
            RunEvent::Forked {
                run,
                parent,
                step,
                schedule,
            } => {
                self.set_fork(*run, *parent, *step);
                if let Ok(sched) = serde_json::from_value::<Schedule>(schedule.clone())
                    && let Some(r) = self.runs.get_mut(run)
                {
                    r.schedule = Some(sched);
                }
                self.ui.status = Some(Status {
                    text: format!("run {run} forked from run {parent} at step {step}"),
                    level: Level::Info,
                });
            }
            RunEvent::Probe(p) => {
                self.runs
                    .entry(p.run)
                    .or_insert_with(|| RunData::new(p.run))
                    .probes
                    .push(p.clone());
                // `p` asked for probes of this run: the results arriving say it is over.
                if self.ui.probing == Some(p.run) {
                    self.ui.probing = None;
                    self.set_status(
                        Level::Info,
                        format!(
                            "run {} probed at step {} (v: probes and landscape views)",
                            p.run, p.step
                        ),
                    );
                }
            }
            RunEvent::Checkpoint { run, step, path } => {
                if let Some(r) = self.runs.get_mut(run) {
                    r.checkpoints.push((*step, path.clone()));
                }
            }
            RunEvent::Note {
                run,
                step,
                kind,
                message,
            } => {
                let r = self.runs.entry(*run).or_insert_with(|| RunData::new(*run));
                r.notes.push((*step, message.clone()));
                match kind {
                    NoteKind::Paused => r.paused = true,
                    NoteKind::Resumed => r.paused = false,
                    NoteKind::Info | NoteKind::Refused | NoteKind::Failed => {}
                }
                self.ui.pause_intent = None;
                let level = match kind {
                    NoteKind::Refused | NoteKind::Failed => Level::Warn,
                    NoteKind::Info | NoteKind::Paused | NoteKind::Resumed => Level::Info,
                };
                self.ui.status = Some(Status {
                    text: format!("run {run} step {step}: {message}"),
                    level,
                });
            }
            RunEvent::End {
                run,
                step,
                reason,
                message,
                final_val_loss,
                ..
            } => {
                let r = self.runs.entry(*run).or_insert_with(|| RunData::new(*run));
                r.paused = false;
                r.end = Some(EndInfo {
                    step: *step,
                    reason: *reason,
                    message: message.clone(),
                    final_val_loss: *final_val_loss,
                });
                let val = final_val_loss
                    .map(|v| format!(", val loss {}", super::format::value(v)))
                    .unwrap_or_default();
                self.ui.status = Some(match reason {
                    EndReason::Failed => Status {
                        text: format!(
                            "run {run} failed at step {step}: {}",
                            message.as_deref().unwrap_or("no message")
                        ),
                        level: Level::Error,
                    },
                    EndReason::Completed => Status {
                        text: format!("run {run} completed at step {step}{val}"),
                        level: Level::Info,
                    },
                    EndReason::Stopped => Status {
                        text: format!("run {run} stopped at step {step}{val}"),
                        level: Level::Info,
                    },
                });
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
        if first_run && let Some(&id) = self.runs.keys().next() {
            self.ui.selected = id;
        }
    }

    /// What the branch predictions need to know of an event, before it is applied.
    fn record_for_forecasts(&mut self, ev: &RunEvent) {
        match ev {
            RunEvent::RunStart(s) if s.parent.is_some() => {
                let lens = self
                    .runs
                    .iter()
                    .filter(|(id, _)| **id != s.run)
                    .map(|(&id, r)| (id, r.steps.len()))
                    .chain([(s.run, 0)])
                    .collect();
                let at = s.fork_step.unwrap_or(s.start_step);
                self.predictor.fork(s.run, at, s.phases.total, lens);
            }
            RunEvent::Step(_) => self.predictor.step(),
            RunEvent::End {
                run,
                step,
                reason: EndReason::Completed,
                ..
            } => {
                let actual = self
                    .runs
                    .get(run)
                    .and_then(|r| crate::predict::actual_final(r.loss.values()));
                self.predictor.completed(*run, *step, actual);
            }
            _ => {}
        }
    }

    /// Makes the branch predictions queued by [`Self::apply`] (one fit per fork, on what was
    /// recorded before it; live runs also refit while a branch runs). The UI loop calls it
    /// after drawing, so a long replay shows its first frame before any fit. Returns whether
    /// anything changed.
    pub fn refresh_forecasts(&mut self) -> bool {
        let live = self.ui.live;
        if !self.predictor.due(live) {
            return false;
        }
        let curves: Vec<crate::predict::RunCurve> = self
            .runs
            .values()
            .filter_map(|r| {
                Some(crate::predict::RunCurve {
                    id: r.id,
                    parent: r.parent,
                    fork_step: r.fork_step,
                    schedule: r.schedule.clone()?,
                    steps: r.steps.clone(),
                    loss: r.loss.values().to_vec(),
                })
            })
            .collect();
        self.predictor.resolve(&curves, &mut self.forecasts, live)
    }

    /// Forgets every run (a replay scrubbing backwards re-applies from the start).
    pub fn clear_runs(&mut self) {
        self.runs.clear();
        self.forecasts.clear();
        self.predictor = Default::default();
        self.events = 0;
        self.ui.status = None;
    }

    /// Records a branch's parent and fork step (for fork events).
    pub fn set_fork(&mut self, run: RunId, parent: RunId, step: u64) {
        let r = self.runs.entry(run).or_insert_with(|| RunData::new(run));
        r.parent = Some(parent);
        r.fork_step = Some(step);
    }

    pub fn trunk(&self) -> Option<&RunData> {
        self.runs.get(&0).or_else(|| self.runs.values().next())
    }

    pub fn selected_run(&self) -> Option<&RunData> {
        self.runs.get(&self.ui.selected).or_else(|| self.trunk())
    }

    /// True while the run this UI drives has not ended (or has not started yet).
    /// Whether any run (the trunk or a branch that outlives it) is still training.
    pub fn training_active(&self) -> bool {
        self.runs.is_empty() || self.runs.values().any(RunData::is_active)
    }

    pub fn paused(&self) -> bool {
        self.trunk().is_some_and(|r| r.paused)
    }

    /// The step a fork from `parent` would start at, once the engine is known to hold still:
    /// its pause confirmed (every step before it has arrived) and no resume asked for. `None`
    /// while it trains, since the step shown would be behind the engine's.
    pub fn fork_point(&self, parent: RunId) -> Option<u64> {
        if !self.paused() || self.ui.pause_intent == Some(false) {
            return None;
        }
        self.runs
            .get(&parent)
            .filter(|r| r.is_active())
            .map(RunData::last_step)
    }

    pub fn set_status(&mut self, level: Level, text: impl Into<String>) {
        self.ui.status = Some(Status {
            text: text.into(),
            level,
        });
    }

    /// Selects the next (`+1`) or previous (`-1`) run, wrapping around.
    pub fn cycle_run(&mut self, dir: i32) {
        let ids: Vec<RunId> = self.runs.keys().copied().collect();
        if ids.is_empty() {
            return;
        }
        let i = ids
            .iter()
            .position(|&id| id == self.ui.selected)
            .unwrap_or(0) as i64;
        let n = ids.len() as i64;
        let j = (i + dir as i64).rem_euclid(n) as usize;
        self.ui.selected = ids[j];
    }
}
