//! The fork form: length (steps, or a percentage of the fork step), decay shape and floor of
//! a decay branch forked from the selected run, with a preview of what it will do. The run is
//! paused while the form is open, and the form says so: the step in its title is the one the
//! branch starts at (or "pausing…" until the engine has stopped).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget, Wrap};
use wsdscope_trainer::{DecayShape, ForkLength};

use super::{LABEL, run_color};
use crate::tui::format;
use crate::tui::keys::{FORK_KEYS, parse_fork};
use crate::tui::layout::centered;
use crate::tui::state::{ForkField, ForkForm, TuiState};

pub struct ForkFormView<'a>(pub &'a TuiState, pub &'a ForkForm);

impl Widget for ForkFormView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (state, form) = (self.0, self.1);
        let at = state.fork_point(form.parent);
        // Before the pause is confirmed, the preview reckons from the last step shown.
        let from = at.unwrap_or_else(|| state.runs.get(&form.parent).map_or(0, |r| r.last_step()));
        let label = Style::default().fg(LABEL);
        let focus = Style::default()
            .fg(Color::Black)
            .bg(Color::Cyan)
            .add_modifier(Modifier::BOLD);
        let field = |f: ForkField, name: &'static str, value: String, hint: String| {
            let on = form.field == f;
            Line::from(vec![
                Span::styled(
                    if on { " ▶ " } else { "   " },
                    Style::default().fg(Color::Cyan),
                ),
                Span::styled(format!("{name:<7}"), label),
                Span::styled(
                    format!(" {value} "),
                    if on { focus } else { Style::default() },
                ),
                Span::styled(format!("  {hint}"), label),
            ])
        };
        let shapes = DecayShape::ALL
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let mut lines = vec![
            Line::from(""),
            field(
                ForkField::Length,
                "length",
                format!(
                    "{}{}",
                    form.length,
                    if form.field == ForkField::Length {
                        "▏"
                    } else {
                        ""
                    }
                ),
                "steps, or % of the step".into(),
            ),
            field(
                ForkField::Shape,
                "shape",
                format!("‹ {} ›", form.shape),
                shapes,
            ),
            field(
                ForkField::Floor,
                "floor",
                format!(
                    "{}{}",
                    form.floor,
                    if form.field == ForkField::Floor {
                        "▏"
                    } else {
                        ""
                    }
                ),
                "× peak lr, in [0, 1]".into(),
            ),
            Line::from(""),
        ];
        match form
            .error
            .clone()
            .map(Err)
            .unwrap_or_else(|| parse_fork(form))
        {
            Ok(req) => {
                let steps = match req.length {
                    ForkLength::Steps(n) => n,
                    ForkLength::FractionOfStep(f) => (f * from as f64).round() as u64,
                };
                lines.push(Line::from(Span::raw(format!(
                    " decays over {} steps to {}×peak, ending near step {}",
                    format::grouped(steps),
                    format::value(req.floor),
                    format::grouped(from + steps)
                ))));
            }
            Err(e) => lines.push(Line::from(Span::styled(
                format!(" {e}"),
                Style::default().fg(Color::Red),
            ))),
        }
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            match (at, form.resume) {
                (None, _) => " pausing the run: the fork step shows once it has stopped".into(),
                (Some(_), true) => {
                    " paused while you choose: enter forks here, esc resumes".to_string()
                }
                (Some(s), false) => format!(
                    " run paused (by you) at step {}; it stays paused",
                    format::grouped(s)
                ),
            },
            Style::default().fg(Color::Yellow),
        )));
        lines.push(Line::from(Span::styled(format!(" {FORK_KEYS}"), label)));
        let r = centered(area, 60, lines.len() as u16 + 3);
        Clear.render(r, buf);
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(
                Block::bordered()
                    .title(Line::from(vec![
                        Span::styled(
                            " fork a decay branch from ",
                            Style::default().add_modifier(Modifier::BOLD),
                        ),
                        Span::styled(
                            format!("run {}", form.parent),
                            Style::default()
                                .fg(run_color(form.parent))
                                .add_modifier(Modifier::BOLD),
                        ),
                        Span::styled(
                            match at {
                                Some(s) => format!(" at step {} ", format::grouped(s)),
                                None => " (pausing…) ".into(),
                            },
                            Style::default().add_modifier(Modifier::BOLD),
                        ),
                    ]))
                    .border_style(Style::default().fg(Color::Cyan)),
            )
            .render(r, buf);
    }
}
