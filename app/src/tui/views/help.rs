//! The `?` overlay: every key of the current mode (live, attached or replay) and what it does.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget};

use super::LABEL;
use crate::tui::keys::{ATTACH_KEYS, FORK_KEYS, keys_for};
use crate::tui::layout::centered;
use crate::tui::state::TuiState;

pub struct Help<'a>(pub &'a TuiState);

impl Widget for Help<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let keys = keys_for(self.0);
        let live = self.0.ui.live;
        let key_w = keys
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let desc_w = keys
            .iter()
            .map(|(_, d)| d.chars().count())
            .max()
            .unwrap_or(0);
        let key = Style::default()
            .fg(Color::Cyan)
            .add_modifier(Modifier::BOLD);
        let label = Style::default().fg(LABEL);
        let mut lines: Vec<Line> = keys
            .iter()
            .map(|(k, d)| {
                Line::from(vec![
                    Span::styled(format!(" {k:>key_w$}  "), key),
                    Span::raw(*d),
                ])
            })
            .collect();
        if self.0.ui.attached {
            // Attached to another process's run, these keys differ from the ones above.
            lines.push(Line::from(Span::styled(" attached:", label)));
            lines.extend(ATTACH_KEYS.iter().map(|(k, d)| {
                Line::from(vec![
                    Span::styled(format!(" {k:>key_w$}  "), key),
                    Span::raw(*d),
                ])
            }));
        }
        lines.push(Line::from(""));
        if live {
            lines.push(Line::from(Span::styled(
                format!(" fork form: {FORK_KEYS}"),
                label,
            )));
        }
        lines.push(Line::from(Span::styled(
            " ? or esc closes this help",
            label,
        )));
        let width = (key_w + desc_w + 5).max(FORK_KEYS.chars().count() + 14) as u16;
        let height = lines.len() as u16 + 2;
        let r = centered(area, width, height);
        Clear.render(r, buf);
        Paragraph::new(lines)
            .block(
                Block::bordered()
                    .title(Span::styled(
                        " keys ",
                        Style::default().add_modifier(Modifier::BOLD),
                    ))
                    .border_style(Style::default().fg(Color::Cyan)),
            )
            .render(r, buf);
    }
}
