//! The x axis of the step charts (key `x`, `replay --x`): steps, tokens or training time, so
//! that runs with other batches meet at equal data. Each run maps its own steps: tokens at
//! its own batch × seq (a sibling with `batch=` or another session's run differs from the
//! trunk), time as the sum of its own step times — a branch continues its parent's clock from
//! the fork, a sibling starts at zero as the trunk does (each run's training seconds, as
//! `plot --x time` draws them). The zoom window is kept in the axis's unit and carried over
//! when the axis changes.

use wsdscope_sessions::RunId;

use super::{RunData, TuiState};
use crate::cli::XAxis;
use crate::tui::format;

/// Parents followed at most to find a branch's clock at its fork (a malformed stream with a
/// parent cycle must not recurse forever).
const MAX_DEPTH: usize = 32;

impl XAxis {
    /// The axis after this one: steps → tokens → time → steps.
    pub fn next(self) -> XAxis {
        match self {
            XAxis::Steps => XAxis::Tokens,
            XAxis::Tokens => XAxis::Time,
            XAxis::Time => XAxis::Steps,
        }
    }

    /// The axis's title: `steps`, `tokens` or `time`.
    pub fn name(self) -> &'static str {
        match self {
            XAxis::Steps => "steps",
            XAxis::Tokens => "tokens",
            XAxis::Time => "time",
        }
    }

    /// A tick label: a step (`12.5k` from 10,000), tokens with k/M suffixes (`1.23M`), a
    /// duration (`1m20s`).
    pub fn tick(self, x: f64) -> String {
        match self {
            XAxis::Steps => format::step(x),
            XAxis::Tokens => format::si(x),
            XAxis::Time => format::duration(x.max(0.0)),
        }
    }
}

/// Where one run's steps go on an x axis. Cheap to make (a few lookups); the time axis
/// interpolates linearly between the ends of recorded steps and goes on past the last one at
/// the run's mean step time (its planned steps).
#[derive(Debug, Clone, Copy)]
pub struct RunAxis<'a> {
    axis: XAxis,
    tokens_per_step: f64,
    /// The run's recorded steps and its clock at the end of each (seconds since its start).
    steps: &'a [u64],
    clock: &'a [f64],
    /// The step the clock starts at (before the first recorded step).
    start: f64,
    /// The clock's value at `start`: a branch's parent's clock at the fork, else 0.
    offset: f64,
    /// Seconds per step past the last recorded one.
    sec_per_step: f64,
}

impl RunAxis<'_> {
    /// The x of `step` (fractional steps interpolate).
    pub fn x(&self, step: f64) -> f64 {
        match self.axis {
            XAxis::Steps => step,
            XAxis::Tokens => step * self.tokens_per_step,
            XAxis::Time => self.offset + self.seconds(step),
        }
    }

    /// The step at `x` (the inverse of [`Self::x`]; the first such step where the clock
    /// stood still).
    pub fn step(&self, x: f64) -> f64 {
        match self.axis {
            XAxis::Steps => x,
            XAxis::Tokens => x / self.tokens_per_step,
            XAxis::Time => self.step_at_seconds(x - self.offset),
        }
    }

    /// x units per step: 1, tokens per step, or the mean seconds per step.
    pub fn per_step(&self) -> f64 {
        match self.axis {
            XAxis::Steps => 1.0,
            XAxis::Tokens => self.tokens_per_step,
            XAxis::Time => self.sec_per_step,
        }
    }

    /// Seconds of this run's clock at `step`, counted from its start.
    fn seconds(&self, s: f64) -> f64 {
        let n = self.steps.len();
        let i = self.steps.partition_point(|&k| (k as f64) < s);
        if i == n {
            let (s0, c0) = n
                .checked_sub(1)
                .map_or((self.start, 0.0), |l| (self.steps[l] as f64, self.clock[l]));
            return c0 + (s - s0).max(0.0) * self.sec_per_step;
        }
        let (s0, c0) = match i {
            0 => (self.start, 0.0),
            _ => (self.steps[i - 1] as f64, self.clock[i - 1]),
        };
        let (s1, c1) = (self.steps[i] as f64, self.clock[i]);
        if s <= s0 || s1 <= s0 {
            return c0;
        }
        c0 + (c1 - c0) * (s - s0) / (s1 - s0)
    }

    fn step_at_seconds(&self, t: f64) -> f64 {
        let n = self.steps.len();
        if t <= 0.0 {
            return self.start;
        }
        let j = self.clock.partition_point(|&c| c < t);
        if j == n {
            let (s0, c0) = n
                .checked_sub(1)
                .map_or((self.start, 0.0), |l| (self.steps[l] as f64, self.clock[l]));
            return if self.sec_per_step > 0.0 {
                s0 + (t - c0) / self.sec_per_step
            } else {
                s0
            };
        }
        let (s0, c0) = match j {
            0 => (self.start, 0.0),
            _ => (self.steps[j - 1] as f64, self.clock[j - 1]),
        };
        let (s1, c1) = (self.steps[j] as f64, self.clock[j]);
        if c1 <= c0 {
            return s1;
        }
        s0 + (s1 - s0) * (t - c0) / (c1 - c0)
    }
}

/// A run's tokens per step: its own batch × seq, else what its steps recorded, else 1.
fn tokens_per_step(r: &RunData) -> f64 {
    r.batch_tokens()
        .filter(|&t| t > 0)
        .map(|t| t as f64)
        .or_else(|| {
            let (&s, &t) = (r.steps.last()?, r.tokens.last()?);
            (s > 0 && t > 0).then(|| t as f64 / s as f64)
        })
        .unwrap_or(1.0)
}

impl TuiState {
    /// Where `r`'s steps go on the chosen x axis.
    pub fn run_axis<'a>(&'a self, r: &'a RunData) -> RunAxis<'a> {
        self.run_axis_in(r, self.ui.x_axis, 0)
    }

    /// The trunk's axis (phase bands, the planned lr), if there is a trunk.
    pub fn trunk_axis(&self) -> Option<RunAxis<'_>> {
        self.trunk().map(|t| self.run_axis(t))
    }

    /// The x of run `id`'s step `step` on the chosen axis (the step itself if the run is
    /// unknown).
    pub fn x_of(&self, id: RunId, step: f64) -> f64 {
        self.runs
            .get(&id)
            .map_or(step, |r| self.run_axis(r).x(step))
    }

    fn run_axis_in<'a>(&'a self, r: &'a RunData, axis: XAxis, depth: usize) -> RunAxis<'a> {
        let start = r
            .steps
            .first()
            .map(|&s| s.saturating_sub(1))
            .or(r.fork_step)
            .or_else(|| r.start.as_ref().map(|s| s.start_step))
            .unwrap_or(0) as f64;
        let parent = match (r.parent, r.fork_step) {
            (Some(p), Some(at)) if p != r.id && depth < MAX_DEPTH => self
                .runs
                .get(&p)
                .map(|pr| (self.run_axis_in(pr, axis, depth + 1), at)),
            _ => None,
        };
        let own = r
            .clock
            .last()
            .filter(|&&c| c > 0.0)
            .map(|c| c / r.clock.len() as f64);
        let sec_per_step = own
            .or_else(|| parent.map(|(p, _)| p.sec_per_step))
            .unwrap_or(0.0);
        let offset = match (axis, parent) {
            (XAxis::Time, Some((p, at))) => p.offset + p.seconds(at as f64),
            _ => 0.0,
        };
        RunAxis {
            axis,
            tokens_per_step: tokens_per_step(r),
            steps: &r.steps,
            clock: &r.clock,
            start,
            offset,
            sec_per_step,
        }
    }

    /// Switches the step charts to the next x axis (steps → tokens → time), keeping a zoom
    /// window on the same steps of the selected run.
    pub fn cycle_x_axis(&mut self) {
        let (old, new) = (self.ui.x_axis, self.ui.x_axis.next());
        let zoom = self.ui.zoom;
        self.set_x_axis(new);
        let Some((a, b)) = zoom else { return };
        let Some(r) = self.selected_run() else {
            self.ui.zoom = None;
            return;
        };
        let (from, to) = (self.run_axis_in(r, old, 0), self.run_axis_in(r, new, 0));
        self.ui.zoom = Some((to.x(from.step(a)), to.x(from.step(b))));
    }

    /// Sets the x axis (the zoom window, in the old unit, is dropped).
    pub fn set_x_axis(&mut self, axis: XAxis) {
        self.ui.x_axis = axis;
        self.ui.zoom = None;
    }
}
