//! The learning-rate panel: each run's lr, the trunk's planned schedule (faint), its
//! warmup/stable/decay phases as background bands, and a marker at every fork.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;
use wsdscope_sessions::Phase;

use super::plot::{Plot, Series};
use super::{FAINT, buckets, curve, draw_order, fork_markers, phase_bands, phase_bg, run_color};
use crate::tui::state::TuiState;

pub struct LrPanel<'a>(pub &'a TuiState);

impl Widget for LrPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        let (lo, hi) = state.x_view();
        let n = buckets(area);
        let mut series = Vec::new();
        if let Some(trunk) = state.trunk()
            && let (Some(sched), Some(total)) = (&trunk.schedule, trunk.total())
        {
            // Planned over the trunk's steps that the visible range covers.
            let axis = state.run_axis(trunk);
            let points = planned(sched, axis.step(lo), axis.step(hi), n, total)
                .into_iter()
                .map(|(s, y)| (axis.x(s), y))
                .collect();
            series.push(Series::line(points, FAINT));
        }
        for r in draw_order(state) {
            series.push(Series::line(
                curve(state, r, &r.steps, &r.lr, (lo, hi, n)),
                run_color(r.id),
            ));
        }
        let title = Line::from(vec![
            Span::styled(
                " learning rate ",
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::styled(" warmup ", Style::default().bg(phase_bg(Phase::Warmup))),
            Span::styled(" stable ", Style::default().bg(phase_bg(Phase::Stable))),
            Span::styled(" decay ", Style::default().bg(phase_bg(Phase::Decay))),
            Span::styled(" ── planned", Style::default().fg(FAINT)),
            Span::raw(" ┊ fork "),
        ]);
        Plot {
            title,
            x: (lo, hi),
            x_axis: state.ui.x_axis,
            include_zero: true,
            series,
            bands: phase_bands(state),
            markers: fork_markers(state),
            empty: "no learning rate yet",
            ..Default::default()
        }
        .render(area, buf);
    }
}

/// The schedule's lr at the bucket centres of the steps `lo..=hi` plus its phase corners, up
/// to `total`, as (step, lr).
fn planned(
    sched: &wsdscope_trainer::Schedule,
    lo: f64,
    hi: f64,
    n: usize,
    total: u64,
) -> Vec<(f64, f64)> {
    let end = hi.min(total as f64);
    if end < lo.max(1.0) {
        return Vec::new();
    }
    let b = sched.bounds();
    let mut xs: Vec<f64> = (0..=n)
        .map(|i| lo + (hi - lo) * i as f64 / n as f64)
        .chain([b.warmup_end as f64, b.decay_start as f64, total as f64])
        .filter(|&x| x >= lo.max(1.0) && x <= end)
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs.into_iter()
        .map(|x| (x, sched.lr(x.round().max(1.0) as u64)))
        .collect()
}
