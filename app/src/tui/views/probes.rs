//! The probe panel: which probes exist now. Today that is the per-step scalars of the
//! selected run; periodic probes (sharpness, loss slices, noise scale) arrive with the probes
//! issue, and the panel says so plainly. A failed run's full message is shown here too.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};
use wsdscope_sessions::{EndReason, ProbeResult};

use super::{AXIS, LABEL, run_color};
use crate::tui::format;
use crate::tui::state::TuiState;

pub struct ProbesPanel<'a>(pub &'a TuiState);

impl Widget for ProbesPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        let block = Block::bordered()
            .border_style(Style::default().fg(AXIS))
            .title(Span::styled(
                " probes ",
                Style::default().add_modifier(Modifier::BOLD),
            ));
        let label = Style::default().fg(LABEL);
        let mut lines = Vec::new();
        match state.selected_run() {
            Some(r) => {
                if let Some(end) = &r.end
                    && end.reason == EndReason::Failed
                {
                    lines.push(Line::from(Span::styled(
                        format!(
                            "✖ run {} failed at step {}: {}",
                            r.id,
                            end.step,
                            end.message.as_deref().unwrap_or("no message")
                        ),
                        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                    )));
                }
                lines.push(Line::from(vec![
                    Span::styled("per step", label),
                    Span::styled(
                        format!(" · run {}", r.id),
                        Style::default().fg(run_color(r.id)),
                    ),
                    Span::styled(format!(" · step {}", r.last_step()), label),
                ]));
                let last = |v: Option<f64>| v.map(format::value).unwrap_or_else(|| "–".into());
                let theta = r.param_norm.last().copied();
                let update = r.update_norm.last();
                lines.push(Line::from(format!(
                    "  ‖θ‖ {}  ‖g‖ {}  ‖Δθ‖ {}",
                    last(theta),
                    last(r.grad_norm.last()),
                    last(update)
                )));
                let rel = match (update, theta) {
                    (Some(u), Some(t)) if t > 0.0 => Some(u / t),
                    _ => None,
                };
                lines.push(Line::from(format!(
                    "  ‖Δθ‖/‖θ‖ {}  lr {}",
                    last(rel),
                    last(r.lr.last())
                )));
                lines.push(Line::from(format!(
                    "  {} ms/step",
                    last(r.recent_step_ms())
                )));
            }
            None => lines.push(Line::from(Span::styled("per step: no steps yet", label))),
        }
        // Periodic probes: the latest result of each probe that has reported on this run.
        let mut latest: Vec<&ProbeResult> = Vec::new();
        if let Some(r) = state.selected_run() {
            for p in r.probes.iter().rev() {
                if !latest.iter().any(|q| q.probe == p.probe) {
                    latest.push(p);
                }
            }
        }
        latest.sort_by(|a, b| a.probe.cmp(&b.probe));
        if latest.is_empty() {
            lines.push(Line::from(vec![
                Span::styled("periodic: ", label),
                Span::raw("none yet"),
            ]));
            lines.push(Line::from(Span::styled(
                "  (sharpness, loss slices and noise scale come with the probes feature)",
                label,
            )));
        } else {
            lines.push(Line::from(Span::styled("periodic:", label)));
            for p in latest {
                let scalars = p
                    .scalars
                    .iter()
                    .take(3)
                    .map(|(k, v)| format!("{k} {}", format::value(*v)))
                    .collect::<Vec<_>>()
                    .join("  ");
                lines.push(Line::from(vec![
                    Span::styled(format!("  {} ", p.probe), Style::default().fg(Color::Cyan)),
                    Span::styled(format!("@{} ", p.step), label),
                    Span::raw(scalars),
                ]));
            }
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block)
            .render(area, buf);
    }
}
