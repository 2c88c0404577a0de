//! The TUI's state: plain data. The run data changes only by [`TuiState::apply`]ing
//! [`RunEvent`]s, so a live run and a replay (which applies a recorded stream up to its time
//! cursor) build the same state; the UI part ([`UiState`]) changes only by key handling and by
//! what the main loop sets (terminal size, dropped display samples).

use std::collections::BTreeMap;

use ratatui::layout::Rect;
use wsdscope_sessions::{
    EndReason, NoteKind, Phase, PhaseBounds, ProbeResult, RunEvent, RunId, RunStart, StepMetrics,
};
use wsdscope_trainer::{DecayShape, Schedule};

use super::series::Column;

/// Weight of the newest sample in the smoothed (EMA) loss: about a 20-step window.
pub const EMA_ALPHA: f64 = 0.05;
/// Steps averaged for the step time behind the ETA and for tokens/s.
const RECENT: usize = 32;
/// The narrowest zoom window, in steps.
const MIN_ZOOM_STEPS: f64 = 8.0;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct EndInfo {
    pub step: u64,
    pub reason: EndReason,
    pub message: Option<String>,
    pub final_val_loss: Option<f64>,
}

/// What a run is doing now, as the events tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Paused,
    Completed,
    Stopped,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "done",
            RunStatus::Stopped => "stopped",
            RunStatus::Failed => "failed",
        }
    }
}

/// Everything known about one run (the trunk or a branch), series aligned with `steps`.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    pub id: RunId,
    pub name: String,
    pub parent: Option<RunId>,
    pub fork_step: Option<u64>,
    /// The run's start event (model, data, phases, device, config), once seen.
    pub start: Option<Box<RunStart>>,
    /// The run's schedule, read from the config when it has the trainer's form.
    pub schedule: Option<Schedule>,
    pub steps: Vec<u64>,
    pub loss: Column,
    /// Debiased EMA of the loss (see [`EMA_ALPHA`]).
    pub loss_ema: Column,
    pub lr: Column,
    pub grad_norm: Column,
    pub update_norm: Column,
    pub param_norm: Vec<f64>,
    pub tokens: Vec<u64>,
    pub tokens_per_s: Vec<f64>,
    pub step_ms: Vec<f64>,
    pub phase: Vec<Phase>,
    /// Per-layer gradient norms of the latest step only (a history would cost layers × steps).
    pub grad_norm_per_layer: Vec<f64>,
    /// Per-group gradient norms of the latest step (names in `start.param_groups`).
    pub grad_norm_per_group: Vec<f64>,
    /// The geometry of each step's previous update (MiniCPM §4.4); NaN where undefined.
    pub grad_cos: Column,
    pub d1: Column,
    pub d2: Column,
    pub curvature: Column,
    /// Debiased EMA of `curvature` (same weight as the loss's), for the probes view.
    pub curvature_ema: Column,
    /// max |Δθ| of each tracked tensor (names in `start.tracked_tensors`), per step.
    pub max_update: Vec<Column>,
    ema: Ema,
    curvature_ema_state: Ema,
    pub eval_steps: Vec<u64>,
    pub val_loss: Column,
    pub notes: Vec<(u64, String)>,
    pub checkpoints: Vec<(u64, String)>,
    /// Probe results in arrival order.
    pub probes: Vec<ProbeResult>,
    pub paused: bool,
    pub end: Option<EndInfo>,
}

impl RunData {
    pub fn new(id: RunId) -> Self {
        RunData {
            id,
            name: if id == 0 {
                "trunk".into()
            } else {
                format!("branch {id}")
            },
            ..Default::default()
        }
    }

    pub fn last_step(&self) -> u64 {
        self.steps
            .last()
            .copied()
            .unwrap_or_else(|| self.start.as_ref().map(|s| s.start_step).unwrap_or(0))
    }

    pub fn phases(&self) -> Option<PhaseBounds> {
        self.start.as_ref().map(|s| s.phases)
    }

    /// The last step the run is planned to reach.
    pub fn total(&self) -> Option<u64> {
        self.phases().map(|p| p.total)
    }

    pub fn status(&self) -> RunStatus {
        match &self.end {
            Some(e) => match e.reason {
                EndReason::Completed => RunStatus::Completed,
                EndReason::Stopped => RunStatus::Stopped,
                EndReason::Failed => RunStatus::Failed,
            },
            None if self.paused => RunStatus::Paused,
            None => RunStatus::Running,
        }
    }

    pub fn is_active(&self) -> bool {
        self.end.is_none()
    }

    pub fn last_loss(&self) -> Option<f64> {
        self.loss.last()
    }

    pub fn last_val(&self) -> Option<f64> {
        self.val_loss.last()
    }

    /// Mean step time over the last few steps, in ms.
    pub fn recent_step_ms(&self) -> Option<f64> {
        mean_tail(&self.step_ms)
    }

    pub fn recent_tokens_per_s(&self) -> Option<f64> {
        mean_tail(&self.tokens_per_s)
    }

    /// Seconds left at the recent step time (from the data, never the wall clock).
    pub fn eta_s(&self) -> Option<f64> {
        let left = self.total()?.saturating_sub(self.last_step());
        Some(left as f64 * self.recent_step_ms()? / 1000.0)
    }

    /// A short description of the schedule: a WSD decay as `exp→0.1 d200` (shape → floor,
    /// decay steps), otherwise its kind.
    pub fn schedule_label(&self) -> String {
        match &self.schedule {
            Some(Schedule::Wsd {
                decay_steps,
                shape,
                floor,
                ..
            }) => format!("{shape}→{floor} d{decay_steps}"),
            Some(Schedule::Cosine { floor, .. }) => format!("cosine→{floor}"),
            Some(Schedule::Constant { .. }) => "constant".into(),
            None => "?".into(),
        }
    }

    /// Keeps only steps before `step` (a resumed or repeated step replaces what follows).
    fn truncate_before(&mut self, step: u64) {
        let keep = self.steps.partition_point(|&s| s < step);
        if keep == self.steps.len() {
            return;
        }
        self.steps.truncate(keep);
        for c in [
            &mut self.loss,
            &mut self.loss_ema,
            &mut self.lr,
            &mut self.grad_norm,
            &mut self.update_norm,
            &mut self.grad_cos,
            &mut self.d1,
            &mut self.d2,
            &mut self.curvature,
            &mut self.curvature_ema,
        ] {
            c.truncate(keep);
        }
        for c in &mut self.max_update {
            c.truncate(keep);
        }
        self.probes.retain(|p| p.step < step);
        self.param_norm.truncate(keep);
        self.tokens.truncate(keep);
        self.tokens_per_s.truncate(keep);
        self.step_ms.truncate(keep);
        self.phase.truncate(keep);
        // Rebuild the EMAs' running state from the kept prefix.
        self.ema = Ema::over(self.loss.values());
        self.curvature_ema_state = Ema::over(self.curvature.values());
        let keep_evals = self.eval_steps.partition_point(|&s| s < step);
        self.eval_steps.truncate(keep_evals);
        self.val_loss.truncate(keep_evals);
    }

    fn push_step(&mut self, m: &StepMetrics) {
        if self.steps.last().is_some_and(|&s| s >= m.step) {
            self.truncate_before(m.step);
        }
        self.steps.push(m.step);
        self.loss.push(m.loss);
        self.loss_ema.push(self.ema.push(m.loss));
        self.lr.push(m.lr);
        self.grad_norm.push(m.grad_norm);
        self.update_norm.push(m.update_norm);
        self.param_norm.push(m.param_norm);
        self.tokens.push(m.tokens);
        self.tokens_per_s.push(m.tokens_per_s);
        self.step_ms.push(m.step_ms);
        self.phase.push(m.phase);
        self.grad_norm_per_layer.clone_from(&m.grad_norm_per_layer);
        self.grad_norm_per_group.clone_from(&m.grad_norm_per_group);
        let g = m.geometry;
        self.grad_cos.push(g.map_or(f64::NAN, |g| g.cos));
        self.d1.push(g.map_or(f64::NAN, |g| g.d1));
        self.d2.push(g.map_or(f64::NAN, |g| g.d2));
        let k = g.map_or(f64::NAN, |g| g.curvature);
        self.curvature.push(k);
        self.curvature_ema.push(self.curvature_ema_state.push(k));
        let n = self.steps.len() - 1;
        if self.max_update.len() < m.max_update.len() {
            self.max_update.resize_with(m.max_update.len(), || {
                let mut c = Column::new();
                for _ in 0..n {
                    c.push(f64::NAN);
                }
                c
            });
        }
        for (i, c) in self.max_update.iter_mut().enumerate() {
            c.push(m.max_update.get(i).copied().unwrap_or(f64::NAN));
        }
    }

    /// The newest result of probe `kind` (`sharpness`, `noise`, `slice`, `landscape`,
    /// `interp`) on this run, if any.
    pub fn latest_probe(&self, kind: &str) -> Option<&ProbeResult> {
        self.probes.iter().rev().find(|p| p.probe == kind)
    }

    fn push_eval(&mut self, step: u64, val_loss: f64) {
        if self.eval_steps.last().is_some_and(|&s| s >= step) {
            let keep = self.eval_steps.partition_point(|&s| s < step);
            self.eval_steps.truncate(keep);
            self.val_loss.truncate(keep);
        }
        self.eval_steps.push(step);
        self.val_loss.push(val_loss);
    }
}

/// A debiased exponential moving average with weight [`EMA_ALPHA`] that skips non-finite
/// samples (NaN until the first finite one).
#[derive(Debug, Clone, Copy, Default)]
struct Ema {
    value: f64,
    weight: f64,
}

impl Ema {
    /// The state after `values`.
    fn over(values: &[f64]) -> Self {
        let mut e = Ema::default();
        for &v in values {
            e.push(v);
        }
        e
    }

    /// Adds a sample; returns the average so far.
    fn push(&mut self, v: f64) -> f64 {
        if v.is_finite() {
            self.value = (1.0 - EMA_ALPHA) * self.value + EMA_ALPHA * v;
            self.weight = (1.0 - EMA_ALPHA) * self.weight + EMA_ALPHA;
        }
        if self.weight > 0.0 {
            self.value / self.weight
        } else {
            f64::NAN
        }
    }
}

fn mean_tail(v: &[f64]) -> Option<f64> {
    let tail = &v[v.len().saturating_sub(RECENT)..];
    let finite: Vec<f64> = tail.iter().copied().filter(|x| x.is_finite()).collect();
    (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64)
}

/// How important a status-line message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// The one-line message at the top: the last note from the engine, an error, or feedback on
/// a key.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub text: String,
    pub level: Level,
}

/// Which field of the fork form has the focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkField {
    Length,
    Shape,
    Floor,
}

/// The fork form: fork a decay branch from `parent` at its current step.
#[derive(Debug, Clone, PartialEq)]
pub struct ForkForm {
    pub parent: RunId,
    /// The parent's step when the form opened (the fork happens at the step the engine is at).
    pub at_step: u64,
    pub field: ForkField,
    /// Steps (`200`) or a percentage of the fork step (`10%`).
    pub length: String,
    pub shape: DecayShape,
    /// Floor ratio of the peak lr, `0..=1`.
    pub floor: String,
    pub error: Option<String>,
}

/// A window drawn over the panels; it takes the keys while open.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Overlay {
    #[default]
    None,
    Help,
    Fork(ForkForm),
    ConfirmQuit,
}

/// Which full-screen view shows (key `v` cycles them; the branches view of key `c` goes
/// over any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Loss, lr, norms, runs and the small probes panel.
    #[default]
    Main,
    /// Per-step geometry (cos, D1, D2, K), sharpness and noise scale over steps.
    Probes,
    /// The selected run's latest 2-D landscape, 1-D slices and interpolation.
    Landscape,
}

impl View {
    /// The view after this one: Main → Probes → Landscape → Main.
    pub fn next(self) -> View {
        match self {
            View::Main => View::Probes,
            View::Probes => View::Landscape,
            View::Landscape => View::Main,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            View::Main => "main",
            View::Probes => "probes",
            View::Landscape => "landscape",
        }
    }
}

/// What belongs to the UI alone.
#[derive(Debug, Clone)]
pub struct UiState {
    /// Visible step range; `None` shows the whole run.
    pub zoom: Option<(f64, f64)>,
    pub selected: RunId,
    pub log_y: bool,
    pub smooth: bool,
    /// The branches view: the comparison table and the endpoint fit in place of the other
    /// panels (key `c`).
    pub compare: bool,
    /// The full-screen view under the branches view (key `v`).
    pub view: View,
    pub overlay: Overlay,
    pub status: Option<Status>,
    /// Display samples the caller dropped because the UI fell behind (the recorder has them).
    pub dropped_display: u64,
    pub session_path: Option<String>,
    /// True while a live engine is attached (pause, fork and the quit confirmation apply).
    pub live: bool,
    /// Set once Stop was sent; the loop waits for the run to end.
    pub stopping: bool,
    /// The pause state asked for and not yet confirmed by the engine's note.
    pub pause_intent: Option<bool>,
    /// The run whose probes `p` asked for and that have not arrived yet.
    pub probing: Option<RunId>,
    /// The terminal size at the last draw, for mouse hit-testing.
    pub area: Rect,
    /// A failure outside the event stream that must stay visible (e.g. the session file could
    /// not be written), shown in red before any status message.
    pub alert: Option<String>,
    /// The time cursor, when replaying a recorded session.
    pub replay: Option<ReplayUi>,
}

/// What the replay's time cursor shows in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayUi {
    pub playing: bool,
    /// `×1`, `×10`, `×100` or `max`.
    pub speed: &'static str,
    /// Attached to a growing session (`--follow`).
    pub follow: bool,
    /// Following: the cursor stays at the end as the session grows.
    pub following: bool,
    /// Step events applied (all runs) and recorded.
    pub steps_shown: u64,
    pub steps_total: u64,
    /// Followed, and no process writes the session any more (finished, or killed).
    pub writer_gone: bool,
}

impl Default for UiState {
    fn default() -> Self {
        UiState {
            zoom: None,
            selected: 0,
            log_y: false,
            smooth: true,
            compare: false,
            view: View::Main,
            overlay: Overlay::None,
            status: None,
            dropped_display: 0,
            session_path: None,
            live: true,
            stopping: false,
            pause_intent: None,
            probing: None,
            area: Rect::default(),
            alert: None,
            replay: None,
        }
    }
}

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

    pub fn set_status(&mut self, level: Level, text: impl Into<String>) {
        self.ui.status = Some(Status {
            text: text.into(),
            level,
        });
    }

    /// The step range of the whole session: every run's start to its planned end or last step.
    pub fn x_full(&self) -> (f64, f64) {
        let mut lo = u64::MAX;
        let mut hi = 0u64;
        for r in self.runs.values() {
            let start = r
                .fork_step
                .or_else(|| r.start.as_ref().map(|s| s.start_step))
                .or_else(|| r.steps.first().map(|s| s.saturating_sub(1)))
                .unwrap_or(0);
            lo = lo.min(start);
            hi = hi.max(r.last_step()).max(r.total().unwrap_or(0));
        }
        if lo == u64::MAX {
            return (0.0, 1.0);
        }
        if hi <= lo {
            hi = lo + 1;
        }
        (lo as f64, hi as f64)
    }

    /// The visible step range.
    pub fn x_view(&self) -> (f64, f64) {
        let full = self.x_full();
        match self.ui.zoom {
            Some((a, b)) => clamp_window(a, b, full),
            None => full,
        }
    }

    /// Halves the window around `center` (default: the selected run's latest step when not
    /// zoomed, the window's middle when zoomed).
    pub fn zoom_in(&mut self, center: Option<f64>) {
        let full = self.x_full();
        let (a, b) = self.x_view();
        let width = ((b - a) / 2.0).max(MIN_ZOOM_STEPS);
        let c = center.unwrap_or_else(|| match self.ui.zoom {
            Some(_) => (a + b) / 2.0,
            None => self
                .selected_run()
                .map(|r| r.last_step() as f64)
                .filter(|&s| s > 0.0)
                .unwrap_or((a + b) / 2.0),
        });
        self.ui.zoom = Some(clamp_window(c - width / 2.0, c + width / 2.0, full));
    }

    /// Doubles the window; back to the whole run once it covers it.
    pub fn zoom_out(&mut self, center: Option<f64>) {
        let full = self.x_full();
        let Some(_) = self.ui.zoom else { return };
        let (a, b) = self.x_view();
        let width = (b - a) * 2.0;
        if width >= full.1 - full.0 {
            self.ui.zoom = None;
            return;
        }
        let c = center.unwrap_or((a + b) / 2.0);
        self.ui.zoom = Some(clamp_window(c - width / 2.0, c + width / 2.0, full));
    }

    /// Moves the window by `fraction` of its width (negative: towards step 0).
    pub fn pan(&mut self, fraction: f64) {
        let full = self.x_full();
        let Some(_) = self.ui.zoom else { return };
        let (a, b) = self.x_view();
        let d = (b - a) * fraction;
        self.ui.zoom = Some(clamp_window(a + d, b + d, full));
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

/// Keeps a window of width `b − a` inside `full` (shrinking it to `full` if wider).
fn clamp_window(a: f64, b: f64, full: (f64, f64)) -> (f64, f64) {
    let w = (b - a).min(full.1 - full.0);
    let a = a.clamp(full.0, full.1 - w);
    (a, a + w)
}
