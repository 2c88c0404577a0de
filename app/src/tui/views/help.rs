//! The `?` overlay: every key and what it does.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget};

use super::LABEL;
use crate::tui::keys::{FORK_KEYS, KEYS};
use crate::tui::layout::centered;

pub struct Help;

impl Widget for Help {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let key_w = KEYS
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let desc_w = KEYS
            .iter()
            .map(|(_, d)| d.chars().count())
            .max()
            .unwrap_or(0);
        let key = Style::default()
            .fg(Color::Cyan)
            .add_modifier(Modifier::BOLD);
        let label = Style::default().fg(LABEL);
        let mut lines: Vec<Line> = KEYS
            .iter()
            .map(|(k, d)| {
                Line::from(vec![
                    Span::styled(format!(" {k:>key_w$}  "), key),
                    Span::raw(*d),
                ])
            })
            .collect();
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            format!(" fork form: {FORK_KEYS}"),
            label,
        )));
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
