//! The loss panel: train loss (smoothed over its faint raw curve, or raw) and validation
//! loss for every run overlaid, with the data's entropy floor as a reference line, and each
//! decay branch's training loss as the multi-power law predicted it at its fork (dotted). The
//! y range leaves the warmup's transient over the top unless `o` turned that off.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::plot::{Plot, Series};
use super::{FAINT, LABEL, buckets, clipped_marker, curve, draw_order, run_color, y_fit};
use crate::tui::format;
use crate::tui::state::TuiState;

pub struct LossPanel<'a>(pub &'a TuiState);

impl Widget for LossPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        let (lo, hi) = state.x_view();
        let n = buckets(area);
        let runs = draw_order(state);
        let mut series = Vec::new();
        if state.ui.smooth {
            for r in &runs {
                series.push(Series::line(
                    curve(state, r, &r.steps, &r.loss, (lo, hi, n)),
                    FAINT,
                ));
            }
        }
        for r in &runs {
            let col = if state.ui.smooth {
                &r.loss_ema
            } else {
                &r.loss
            };
            let line = Series::line(curve(state, r, &r.steps, col, (lo, hi, n)), run_color(r.id));
            series.push(if r.parent.is_some() {
                line.kept()
            } else {
                line
            });
        }
        for r in &runs {
            series.push(Series::dots(
                curve(state, r, &r.eval_steps, &r.val_loss, (lo, hi, n)),
                run_color(r.id),
            ));
        }
        // Each branch's predicted training loss (multi-power law): as made at its fork, and
        // (faint) as refitted with the branch's own steps while it runs.
        for r in &runs {
            let axis = state.run_axis(r);
            let visible = |pts: &[(f64, f64)]| -> Vec<(f64, f64)> {
                pts.iter()
                    .map(|&(s, y)| (axis.x(s), y))
                    .filter(|&(x, _)| x >= lo && x <= hi)
                    .collect()
            };
            if let Some(f) = state.forecasts.get(&r.id) {
                if let Some(now) = f.now.as_ref().filter(|_| f.actual.is_none()) {
                    series.push(Series::dotted(visible(now), FAINT));
                }
                series.push(Series::dotted(visible(&f.before), run_color(r.id)));
            }
        }
        let floor = state
            .trunk()
            .and_then(|t| t.start.as_ref())
            .and_then(|s| s.data.entropy_floor);

        let sel = run_color(state.ui.selected);
        let mut title = vec![
            Span::styled(" loss ", Style::default().add_modifier(Modifier::BOLD)),
            Span::styled(
                if state.ui.smooth {
                    "── train (EMA)"
                } else {
                    "── train"
                },
                Style::default().fg(sel),
            ),
        ];
        if state.ui.smooth {
            title.push(Span::styled(" ── raw", Style::default().fg(FAINT)));
        }
        title.push(Span::styled(" • val", Style::default().fg(sel)));
        if !state.forecasts.is_empty() {
            title.push(Span::styled(
                " ┈ predicted at fork",
                Style::default().fg(sel),
            ));
            if state
                .forecasts
                .values()
                .any(|f| f.now.is_some() && f.actual.is_none())
            {
                title.push(Span::styled(" ┈ refit", Style::default().fg(FAINT)));
            }
        }
        if let Some(f) = floor {
            title.push(Span::styled(
                format!(" ── floor {}", format::value(f)),
                Style::default().fg(FAINT),
            ));
        }
        if state.ui.log_y {
            title.push(Span::styled(" [log-y]", Style::default().fg(LABEL)));
        }
        if state.ui.zoom.is_some() {
            let axis = state.ui.x_axis;
            title.push(Span::styled(
                format!(" [{} {}–{}]", axis.name(), axis.tick(lo), axis.tick(hi)),
                Style::default().fg(LABEL),
            ));
        }
        title.push(Span::raw(" "));
        let width: usize = title.iter().map(Span::width).sum();
        title.extend(clipped_marker(state, width, area.width));

        Plot {
            title: Line::from(title),
            x: (lo, hi),
            x_axis: state.ui.x_axis,
            log_y: state.ui.log_y,
            y_fit: y_fit(state),
            series,
            refs: floor.map(|f| vec![(f, FAINT)]).unwrap_or_default(),
            empty: "waiting for the first step…",
            ..Default::default()
        }
        .render(area, buf);
    }
}
