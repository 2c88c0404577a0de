//! The header: what is training where (model, parameters, device, threads), how far it is
//! (step/total, phase, tokens, tokens/s, ETA), the session file, and below it the status line
//! (run state, dropped display samples, the last note or error, the memory the live runs
//! hold by the engine's estimate of 16 bytes per parameter each).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::{LABEL, phase_fg};
use crate::tui::state::{Level, RunStatus, TuiState};
use crate::tui::{compare, format};

pub struct Header<'a>(pub &'a TuiState);

const SEP: &str = " │ ";

impl Widget for Header<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        let label = Style::default().fg(LABEL);
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let mut facts = vec![Span::styled(
            " wsdscope ",
            Style::default()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD),
        )];
        let trunk = state.trunk();
        if let Some(s) = trunk.and_then(|t| t.start.as_ref()) {
            facts.push(Span::styled(format!(" {} ", s.model.preset), bold));
            facts.push(Span::raw(format!(
                "{} params",
                format::si(s.model.params as f64)
            )));
            facts.push(Span::styled(" · ", label));
            facts.push(Span::raw(format!(
                "{}, {} thread{}",
                s.device,
                s.threads,
                if s.threads == 1 { "" } else { "s" }
            )));
        } else {
            facts.push(Span::styled(" waiting for the run to start…", label));
        }
        if let Some(t) = trunk {
            facts.push(Span::styled(SEP, label));
            let step = t.last_step();
            match t.total() {
                Some(total) if total > 0 => facts.push(Span::styled(
                    format!(
                        "step {}/{} {:.0}%",
                        format::grouped(step),
                        format::grouped(total),
                        100.0 * step as f64 / total as f64
                    ),
                    bold,
                )),
                _ => facts.push(Span::styled(
                    format!("step {}", format::grouped(step)),
                    bold,
                )),
            }
            if let Some(&p) = t.phase.last() {
                facts.push(Span::raw(" "));
                facts.push(Span::styled(p.as_str(), Style::default().fg(phase_fg(p))));
            }
            facts.push(Span::styled(SEP, label));
            if let Some(&tok) = t.tokens.last() {
                facts.push(Span::raw(format!("{} tok", format::si(tok as f64))));
            }
            if let Some(tps) = t.recent_tokens_per_s() {
                facts.push(Span::styled(" · ", label));
                facts.push(Span::raw(format!("{} tok/s", format::si(tps))));
            }
            if t.is_active() {
                let eta = if t.paused {
                    "paused".to_string()
                } else {
                    t.eta_s()
                        .map(format::duration)
                        .unwrap_or_else(|| "?".into())
                };
                facts.push(Span::styled(" · ETA ", label));
                facts.push(Span::raw(eta));
            }
        }

        let mut status = vec![Span::raw(" ")];
        let (badge, color) = if state.ui.stopping && state.training_active() {
            ("■ stopping…", Color::Yellow)
        } else {
            let writer_gone = state.ui.replay.as_ref().is_some_and(|r| r.writer_gone);
            match trunk.map(|t| t.status()) {
                None if writer_gone => ("✖ no run recorded", Color::Red),
                None => ("○ starting", LABEL),
                Some(RunStatus::Running | RunStatus::Paused) if writer_gone => {
                    ("✖ killed: no end recorded", Color::Red)
                }
                Some(RunStatus::Running) => ("● running", Color::Green),
                Some(RunStatus::Paused) => ("❚❚ paused", Color::Yellow),
                Some(RunStatus::Completed) => ("✔ completed", Color::Cyan),
                Some(RunStatus::Stopped) => ("■ stopped", LABEL),
                Some(RunStatus::Failed) => ("✖ failed", Color::Red),
            }
        };
        status.push(Span::styled(
            badge,
            Style::default().fg(color).add_modifier(Modifier::BOLD),
        ));
        if let Some(r) = &state.ui.replay {
            status.push(Span::styled(SEP, label));
            let (mark, what) = if r.follow && r.writer_gone {
                ("■", "recording closed")
            } else if r.following {
                ("⟳", "following")
            } else if r.playing {
                ("▶", "playing")
            } else {
                ("❚❚", "replay paused")
            };
            status.push(Span::styled(
                format!("{mark} {what} {}", r.speed),
                Style::default()
                    .fg(Color::Magenta)
                    .add_modifier(Modifier::BOLD),
            ));
            let pct = if r.steps_total > 0 {
                100.0 * r.steps_shown as f64 / r.steps_total as f64
            } else {
                100.0
            };
            status.push(Span::raw(format!(
                " · cursor {}/{} steps {pct:.0}%",
                format::grouped(r.steps_shown),
                format::grouped(r.steps_total),
            )));
        }
        if let Some(a) = &state.ui.alert {
            status.push(Span::styled(SEP, label));
            status.push(Span::styled(
                format!("✖ {a}"),
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            ));
        }
        if state.ui.dropped_display > 0 {
            status.push(Span::styled(SEP, label));
            status.push(Span::styled(
                format!(
                    "⚠ {} display samples dropped (recorded in full)",
                    format::grouped(state.ui.dropped_display)
                ),
                Style::default().fg(Color::Yellow),
            ));
        }
        if let Some(s) = &state.ui.status {
            status.push(Span::styled(SEP, label));
            let style = match s.level {
                Level::Info => Style::default(),
                Level::Warn => Style::default().fg(Color::Yellow),
                Level::Error => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            };
            status.push(Span::styled(s.text.clone(), style));
        }
        let (bytes, live) = compare::total_resident(state);
        if live > 0 {
            status.push(Span::styled(SEP, label));
            status.push(Span::raw(format!(
                "mem ≈ {}B in {live} run{}",
                format::si(bytes as f64),
                if live == 1 { "" } else { "s" }
            )));
        }
        if let Some(p) = &state.ui.session_path {
            status.push(Span::styled(SEP, label));
            status.push(Span::styled(format!("session {p}"), label));
        }
        Paragraph::new(vec![Line::from(facts), Line::from(status)]).render(area, buf);
    }
}
