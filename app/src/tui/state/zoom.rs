//! The x range the charts show, in the unit of the chosen x axis (steps, tokens or seconds):
//! the whole session's, or a zoom window inside it that halves, doubles and pans and never
//! leaves the session's range.

use super::TuiState;

/// The narrowest zoom window, in the trunk's steps.
const MIN_ZOOM_STEPS: f64 = 8.0;

impl TuiState {
    /// The x range of the whole session: every run's start to its planned end or last step
    /// (on the time axis a planned end lies where the run's mean step time takes it).
    pub fn x_full(&self) -> (f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for r in self.runs.values() {
            let start = r
                .fork_step
                .or_else(|| r.start.as_ref().map(|s| s.start_step))
                .or_else(|| r.steps.first().map(|s| s.saturating_sub(1)))
                .unwrap_or(0);
            let axis = self.run_axis(r);
            let end = r.last_step().max(r.total().unwrap_or(0));
            lo = lo.min(axis.x(start as f64));
            hi = hi.max(axis.x(end as f64));
        }
        if !lo.is_finite() {
            return (0.0, 1.0);
        }
        if hi <= lo {
            hi = lo + self.unit_step();
        }
        (lo, hi)
    }

    /// One of the trunk's steps in the axis's unit (1 where that is not known yet).
    fn unit_step(&self) -> f64 {
        let per_step = self.trunk_axis().map_or(1.0, |a| a.per_step());
        if per_step > 0.0 { per_step } else { 1.0 }
    }

    /// The narrowest zoom window: [`MIN_ZOOM_STEPS`] of the trunk's steps.
    fn min_zoom(&self) -> f64 {
        MIN_ZOOM_STEPS * self.unit_step()
    }

    /// The visible x range.
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
        let width = ((b - a) / 2.0).max(self.min_zoom());
        let c = center.unwrap_or_else(|| match self.ui.zoom {
            Some(_) => (a + b) / 2.0,
            None => self
                .selected_run()
                .filter(|r| r.last_step() > 0)
                .map(|r| self.run_axis(r).x(r.last_step() as f64))
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
}

/// Keeps a window of width `b − a` inside `full` (shrinking it to `full` if wider).
fn clamp_window(a: f64, b: f64, full: (f64, f64)) -> (f64, f64) {
    let w = (b - a).min(full.1 - full.0);
    let a = a.clamp(full.0, full.1 - w);
    (a, a + w)
}
