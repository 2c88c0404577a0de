//! The footer: the most used keys of the current mode (all of them are in the `?` overlay).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::LABEL;
use crate::tui::state::TuiState;

pub struct Footer<'a>(pub &'a TuiState);

impl Widget for Footer<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        let key = Style::default()
            .fg(Color::Cyan)
            .add_modifier(Modifier::BOLD);
        let label = Style::default().fg(LABEL);
        if state.ui.stopping {
            Paragraph::new(Line::from(vec![
                Span::styled(" stopping: ", Style::default().fg(Color::Yellow)),
                Span::styled("waiting for the engine to finish its step · ", label),
                Span::styled("q", key),
                Span::styled(" leave now", label),
            ]))
            .render(area, buf);
            return;
        }
        if let Some(r) = &state.ui.replay {
            let play = if r.playing { "pause" } else { "play" };
            let hints = [
                ("space", play),
                ("<>", "speed"),
                ("[]", "step"),
                ("{}", "jump"),
                ("p/n", "phase/fork"),
                ("b/e", "start/end"),
                ("+/-", "zoom"),
                ("g", "log-y"),
                ("?", "help"),
                ("q", "quit"),
            ];
            render_hints(&hints, area, buf);
            return;
        }
        let pause = if state.paused() { "resume" } else { "pause" };
        let mut hints: Vec<(&str, &str)> = Vec::new();
        if state.ui.live {
            hints.push(("space", pause));
        }
        hints.extend([
            ("+/-", "zoom"),
            ("←→", "pan"),
            ("0", "reset"),
            ("tab", "run"),
            ("g", "log-y"),
            ("s", "smooth"),
        ]);
        if state.ui.live {
            hints.push(("f", "fork"));
        }
        hints.extend([("?", "help"), ("q", "quit")]);
        render_hints(&hints, area, buf);
    }
}

fn render_hints(hints: &[(&str, &str)], area: Rect, buf: &mut Buffer) {
    let key = Style::default()
        .fg(Color::Cyan)
        .add_modifier(Modifier::BOLD);
    let label = Style::default().fg(LABEL);
    let mut spans = vec![Span::raw(" ")];
    for (k, what) in hints {
        spans.push(Span::styled(*k, key));
        spans.push(Span::styled(format!(" {what}  "), label));
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}
