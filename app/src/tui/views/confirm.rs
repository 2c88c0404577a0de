//! The quit confirmation shown while training runs: `y` stops and quits, any other key
//! keeps training.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Padding, Paragraph, Widget, Wrap};

use super::LABEL;
use crate::tui::layout::centered;
use crate::tui::state::TuiState;

pub struct ConfirmQuit<'a>(pub &'a TuiState);

impl Widget for ConfirmQuit<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let step = self.0.trunk().map(|t| t.last_step()).unwrap_or(0);
        let key = Style::default()
            .fg(Color::Cyan)
            .add_modifier(Modifier::BOLD);
        let lines = vec![
            Line::from(format!("Training is still running (step {step}).")),
            Line::from(""),
            Line::from(vec![
                Span::styled("y", key),
                Span::raw("  stop training and quit"),
            ]),
            Line::from(Span::styled(
                "   (the session file is completed first)",
                Style::default().fg(LABEL),
            )),
            Line::from(vec![
                Span::styled("any other key", key),
                Span::raw("  keep training"),
            ]),
        ];
        let r = centered(area, 48, lines.len() as u16 + 2);
        Clear.render(r, buf);
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(
                Block::bordered()
                    .title(Span::styled(
                        " quit? ",
                        Style::default().add_modifier(Modifier::BOLD),
                    ))
                    .border_style(Style::default().fg(Color::Yellow))
                    .padding(Padding::horizontal(1)),
            )
            .render(r, buf);
    }
}
