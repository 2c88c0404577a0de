//! The norms panel: the global gradient norm before clipping (with the clip threshold as a
//! reference line) beside the update norm ‖θ(t+1) − θ(t)‖, every run overlaid; the y range
//! leaves the warmup's gradient spike over the top unless `o` turned that off.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::plot::{Plot, Series};
use super::{FAINT, LABEL, buckets, clipped_marker, curve, draw_order, run_color, y_fit};
use crate::tui::format;
use crate::tui::series::Column;
use crate::tui::state::{RunData, TuiState};

pub struct NormsPanel<'a>(pub &'a TuiState);

impl Widget for NormsPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        // Too small for two charts: the gradient norm alone, the update norm in its title.
        let single = area.width < 64 && area.height < 10;
        let [grad, update] = if single {
            [area, Rect::default()]
        } else if area.width >= 64 || area.height < 10 {
            area.layout(&Layout::horizontal([Constraint::Fill(1); 2]))
        } else {
            area.layout(&Layout::vertical([Constraint::Fill(1); 2]))
        };
        let clip = state
            .trunk()
            .and_then(|t| t.start.as_ref())
            .and_then(|s| s.config.get("optim")?.get("clip")?.as_f64())
            .filter(|c| c.is_finite() && *c > 0.0);
        let mut title = vec![Span::styled(
            " grad norm ‖g‖ ",
            Style::default().add_modifier(Modifier::BOLD),
        )];
        if let Some(c) = clip {
            title.push(Span::styled(
                format!("── clip {} ", format::value(c)),
                Style::default().fg(FAINT),
            ));
        }
        if state.ui.log_y {
            title.push(Span::styled("[log-y] ", Style::default().fg(LABEL)));
        }
        if single {
            if let Some(u) = state.selected_run().and_then(|r| r.update_norm.last()) {
                title.push(Span::styled(
                    format!("‖Δθ‖ {} ", format::value(u)),
                    Style::default().fg(LABEL),
                ));
            }
            plot(state, grad, Line::from(title), |r| &r.grad_norm, clip).render(grad, buf);
            return;
        }
        plot(state, grad, Line::from(title), |r| &r.grad_norm, clip).render(grad, buf);
        let mut title = vec![Span::styled(
            " update norm ‖Δθ‖ ",
            Style::default().add_modifier(Modifier::BOLD),
        )];
        if state.ui.log_y {
            title.push(Span::styled("[log-y] ", Style::default().fg(LABEL)));
        }
        plot(state, update, Line::from(title), |r| &r.update_norm, None).render(update, buf);
    }
}

fn plot<'a>(
    state: &TuiState,
    area: Rect,
    title: Line<'a>,
    col: impl Fn(&RunData) -> &Column,
    reference: Option<f64>,
) -> Plot<'a> {
    let (lo, hi) = state.x_view();
    let n = buckets(area);
    let series = draw_order(state)
        .into_iter()
        .map(|r| {
            let points = curve(state, r, &r.steps, col(r), (lo, hi, n));
            let line = Series::line(points, run_color(r.id));
            if r.parent.is_some() {
                line.kept()
            } else {
                line
            }
        })
        .collect();
    let mut title = title;
    if let Some(m) = clipped_marker(state, title.width(), area.width) {
        title.push_span(m);
    }
    Plot {
        title,
        x: (lo, hi),
        x_axis: state.ui.x_axis,
        log_y: state.ui.log_y,
        y_fit: y_fit(state),
        include_zero: !state.ui.log_y,
        series,
        refs: reference.map(|c| vec![(c, FAINT)]).unwrap_or_default(),
        empty: "no steps yet",
        ..Default::default()
    }
}
