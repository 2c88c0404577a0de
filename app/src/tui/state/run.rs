//! One run's data as the events tell it: its series aligned with its steps (loss and its
//! EMA, lr, norms, the update geometry), evals, notes, checkpoints, probe results and how it
//! ended, plus what the views derive from them (status, ETA, the schedule's label).

use wsdscope_sessions::{EndReason, Phase, PhaseBounds, ProbeResult, RunId, RunStart, StepMetrics};
use wsdscope_trainer::Schedule;

use crate::tui::series::Column;

/// Weight of the newest sample in the smoothed (EMA) loss: about a 20-step window.
pub const EMA_ALPHA: f64 = 0.05;
/// Steps averaged for the step time behind the ETA and for tokens/s.
const RECENT: usize = 32;

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
    /// Memory the run holds while it lives, as the engine estimates it from its config
    /// (`wsdscope_trainer::memory::run_bytes`); `None` when the config is not the trainer's
    /// full form (an older or synthetic session).
    pub run_bytes: Option<u64>,
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
    /// Seconds of training at the end of each step since the run's first recorded step began:
    /// the running sum of `step_ms` (a step without a finite time adds nothing).
    pub clock: Vec<f64>,
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

    /// Tokens per step: the run's own batch × seq, from its start event.
    pub fn batch_tokens(&self) -> Option<u64> {
        self.start.as_ref().map(|s| s.batch as u64 * s.seq as u64)
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
        // A sibling is named by what differs from the trunk (`lr=0.003`).
        if self.is_sibling() {
            return self.name.clone();
        }
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

    /// A run beside the trunk from step 0 (no parent, not the trunk).
    pub fn is_sibling(&self) -> bool {
        self.id != 0 && self.parent.is_none()
    }

    /// Keeps only steps before `step` (a resumed or repeated step replaces what follows).
    pub(super) fn truncate_before(&mut self, step: u64) {
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
        self.clock.truncate(keep);
        self.phase.truncate(keep);
        // Rebuild the EMAs' running state from the kept prefix.
        self.ema = Ema::over(self.loss.values());
        self.curvature_ema_state = Ema::over(self.curvature.values());
        let keep_evals = self.eval_steps.partition_point(|&s| s < step);
        self.eval_steps.truncate(keep_evals);
        self.val_loss.truncate(keep_evals);
    }

    pub(super) fn push_step(&mut self, m: &StepMetrics) {
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
        let dt = if m.step_ms.is_finite() && m.step_ms > 0.0 {
            m.step_ms / 1e3
        } else {
            0.0
        };
        self.clock
            .push(self.clock.last().copied().unwrap_or(0.0) + dt);
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

    pub(super) fn push_eval(&mut self, step: u64, val_loss: f64) {
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
