//! The endpoint fit chart of the branches view: completed decay branches' final val loss
//! against tokens (one dot per branch, in its colour), the fitted L(D) = L0 + B·D^(−β) through
//! them and on to 2× the last endpoint (the extrapolation beyond the dotted marker), its ±1σ
//! band, and the trunk's val loss (faint) for reference.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use super::plot::{Plot, Series, XMarker};
use super::{FAINT, LABEL, buckets, run_color};
use crate::tui::compare::Comparison;
use crate::tui::state::TuiState;

pub struct FitPanel<'a> {
    pub state: &'a TuiState,
    pub cmp: &'a Comparison,
}

/// The fitted curve.
const CURVE: Color = Color::White;
/// The ±1σ band's edges.
const BAND: Color = Color::Gray;

impl Widget for FitPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (state, cmp) = (self.state, self.cmp);
        let last = cmp.endpoints.iter().map(|e| e.1).fold(0.0, f64::max);
        let first = cmp
            .endpoints
            .iter()
            .map(|e| e.1)
            .fold(f64::INFINITY, f64::min);
        let (x0, x1) = if cmp.endpoints.is_empty() {
            (0.0, 1.0)
        } else {
            (0.5 * first, 2.0 * last)
        };
        let mut series = Vec::new();
        // The trunk's val loss over the same token range.
        if let Some(t) = state.runs.get(&0)
            && let Some(tps) = t.batch_tokens()
            && !cmp.endpoints.is_empty()
        {
            let pts: Vec<(f64, f64)> = t
                .eval_steps
                .iter()
                .zip(t.val_loss.values())
                .map(|(&s, &v)| ((s * tps) as f64, v))
                .filter(|&(x, _)| x >= x0 && x <= x1)
                .collect();
            series.push(Series::line(pts, FAINT));
        }
        let mut markers = Vec::new();
        if let Some(f) = &cmp.fit {
            let n = 2 * buckets(area);
            let xs: Vec<f64> = (0..=n)
                .map(|i| x0 + (x1 - x0) * i as f64 / n as f64)
                .collect();
            if f.cov.is_some() {
                for sign in [-1.0, 1.0] {
                    let edge = xs
                        .iter()
                        .filter_map(|&x| Some((x, f.predict(x) + sign * f.predict_std(x)?)))
                        .collect();
                    series.push(Series::line(edge, BAND));
                }
            }
            let curve = |range: &dyn Fn(f64) -> bool| -> Vec<(f64, f64)> {
                xs.iter()
                    .copied()
                    .filter(|&x| range(x))
                    .map(|x| (x, f.predict(x)))
                    .collect()
            };
            series.push(Series::line(curve(&|x| x <= last), CURVE));
            series.push(Series::line(curve(&|x| x >= last), LABEL));
            markers.push(XMarker {
                x: last,
                color: LABEL,
                label: "extrapolated".into(),
            });
        }
        for &(id, x, y) in &cmp.endpoints {
            series.push(Series::dots(vec![(x, y)], run_color(id)));
        }

        let mut title = Vec::new();
        match &cmp.fit {
            Some(f) => {
                title.push(Span::styled(
                    " fit ",
                    Style::default().add_modifier(Modifier::BOLD),
                ));
                title.push(Span::styled("── L(D)", Style::default().fg(CURVE)));
                if f.cov.is_some() {
                    title.push(Span::styled(" ── ±1σ", Style::default().fg(BAND)));
                }
                title.push(Span::styled(" • endpoints", Style::default().fg(LABEL)));
                title.push(Span::styled(" ── trunk val", Style::default().fg(FAINT)));
            }
            None => title.push(Span::styled(
                format!(" {}", cmp.missing().unwrap_or_default()),
                Style::default().fg(Color::Yellow),
            )),
        }
        title.push(Span::styled(" · x: tokens ", Style::default().fg(LABEL)));
        let empty = cmp.missing().unwrap_or_default();
        Plot {
            title: Line::from(title),
            x: (x0, x1),
            log_y: state.ui.log_y,
            series,
            markers,
            empty: &empty,
            ..Default::default()
        }
        .render(area, buf);
    }
}
