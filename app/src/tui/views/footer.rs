//! The footer: the most used keys of the current mode (all of them are in the `?` overlay),
//! leaving out the least needed ones on a narrow terminal so `?` and `q` always show.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::LABEL;
use crate::tui::state::{TuiState, View};

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
                compare_hint(state),
                view_hint(state),
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
            compare_hint(state),
            view_hint(state),
        ]);
        if state.ui.live {
            hints.push(("p", "probe"));
            hints.push(("f", "fork"));
        }
        hints.extend([("?", "help"), ("q", "quit")]);
        render_hints(&hints, area, buf);
    }
}

/// `c` toggles the branches view (back to the view under it).
fn compare_hint(state: &TuiState) -> (&'static str, &'static str) {
    let back = match state.ui.view {
        View::Main => "panels",
        v => v.as_str(),
    };
    ("c", if state.ui.compare { back } else { "compare" })
}

/// `v` goes to the next view (out of the branches view, to the probes view).
fn view_hint(state: &TuiState) -> (&'static str, &'static str) {
    let next = if state.ui.compare {
        View::Probes
    } else {
        state.ui.view.next()
    };
    ("v", next.as_str())
}

/// Hints left out first, in this order, when the line is too narrow for all of them (the
/// `?` overlay lists every key).
const DROP_FIRST: [&str; 9] = ["0", "←→", "p", "s", "{}", "[]", "g", "tab", "<>"];

fn render_hints(hints: &[(&str, &str)], area: Rect, buf: &mut Buffer) {
    let width = |h: &[(&str, &str)]| -> usize {
        1 + h
            .iter()
            .map(|(k, w)| k.chars().count() + w.chars().count() + 3)
            .sum::<usize>()
    };
    let mut hints = hints.to_vec();
    for drop in DROP_FIRST {
        if width(&hints) <= area.width as usize + 2 {
            break;
        }
        hints.retain(|(k, _)| *k != drop);
    }
    let key = Style::default()
        .fg(Color::Cyan)
        .add_modifier(Modifier::BOLD);
    let label = Style::default().fg(LABEL);
    let mut spans = vec![Span::raw(" ")];
    for (k, what) in hints {
        spans.push(Span::styled(k, key));
        spans.push(Span::styled(format!(" {what}  "), label));
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}
