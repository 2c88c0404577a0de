//! The runs list: one row per run (trunk and branches) with where it was forked from
//! (parent run @ fork step), its schedule, progress, last losses and status. Columns are
//! dropped, least important first, when the panel is narrow. The selected run is highlighted.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Cell, Row, StatefulWidget, Table, TableState, Widget};

use super::{AXIS, LABEL, run_color};
use crate::tui::format;
use crate::tui::state::{RunData, RunStatus, TuiState};

pub struct RunsPanel<'a>(pub &'a TuiState);

fn status_color(s: RunStatus) -> Color {
    match s {
        RunStatus::Running => Color::Green,
        RunStatus::Paused => Color::Yellow,
        RunStatus::Completed => Color::Cyan,
        RunStatus::Stopped => Color::Gray,
        RunStatus::Failed => Color::Red,
    }
}

/// A column: header, width constraint, cell text.
struct Col {
    name: &'static str,
    width: Constraint,
    cell: fn(&RunData) -> Cell<'static>,
}

fn dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "–".into())
}

const ID: Col = Col {
    name: "id",
    width: Constraint::Length(2),
    cell: |r| {
        Cell::from(Span::styled(
            r.id.to_string(),
            Style::default()
                .fg(run_color(r.id))
                .add_modifier(Modifier::BOLD),
        ))
    },
};
const FROM: Col = Col {
    name: "from",
    width: Constraint::Length(7),
    cell: |r| {
        Cell::from(match (r.parent, r.fork_step) {
            (Some(p), Some(s)) => format!("{p}@{}", format::step(s as f64)),
            (Some(p), None) => p.to_string(),
            (None, Some(s)) => format!("?@{}", format::step(s as f64)),
            (None, None) if r.is_sibling() => "sib".into(),
            (None, None) => "–".into(),
        })
    },
};
const SCHEDULE: Col = Col {
    name: "schedule",
    width: Constraint::Min(12),
    cell: |r| Cell::from(r.schedule_label()),
};
const STEP: Col = Col {
    name: "step",
    width: Constraint::Length(6),
    cell: |r| Cell::from(format::step(r.last_step() as f64)),
};
const LOSS: Col = Col {
    name: "loss",
    width: Constraint::Length(5),
    cell: |r| Cell::from(dash(r.last_loss().map(short))),
};
const VAL: Col = Col {
    name: "val",
    width: Constraint::Length(5),
    cell: |r| Cell::from(dash(r.last_val().map(short))),
};
const STATUS: Col = Col {
    name: "status",
    width: Constraint::Length(7),
    cell: |r| {
        let s = r.status();
        Cell::from(Span::styled(
            s.as_str(),
            Style::default().fg(status_color(s)),
        ))
    },
};

/// A loss in five cells: "3.521" → "3.521", "12.345" → "12.35".
fn short(v: f64) -> String {
    let s = format::value(v);
    s.chars().take(5).collect()
}

impl Widget for RunsPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        let block = Block::bordered()
            .border_style(Style::default().fg(AXIS))
            .title(Span::styled(
                " runs ",
                Style::default().add_modifier(Modifier::BOLD),
            ));
        // Border (2), highlight symbol (1), then columns with one space between them.
        let mut room = area.width.saturating_sub(3) as i32;
        let cost = |c: &Col| match c.width {
            Constraint::Length(n) | Constraint::Min(n) => n as i32 + 1,
            _ => 1,
        };
        let mut cols = vec![&ID, &STEP, &LOSS, &STATUS];
        room -= cols.iter().map(|c| cost(c)).sum::<i32>() - 1;
        let mut extra = Vec::new();
        for c in [&FROM, &SCHEDULE, &VAL] {
            if room >= cost(c) {
                room -= cost(c);
                extra.push(c);
            }
        }
        // Display order: id, from, schedule, step, loss, val, status.
        let order = [&ID, &FROM, &SCHEDULE, &STEP, &LOSS, &VAL, &STATUS];
        cols.extend(extra);
        let cols: Vec<&Col> = order
            .into_iter()
            .filter(|c| cols.iter().any(|k| k.name == c.name))
            .collect();

        let rows: Vec<Row> = state
            .runs
            .values()
            .map(|r| Row::new(cols.iter().map(|c| (c.cell)(r))))
            .collect();
        let header = Row::new(cols.iter().map(|c| c.name)).style(
            Style::default()
                .fg(LABEL)
                .add_modifier(Modifier::UNDERLINED),
        );
        let table = Table::new(rows, cols.iter().map(|c| c.width))
            .header(header)
            .column_spacing(1)
            .block(block)
            .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
            .highlight_symbol("▶");
        let selected = state.runs.keys().position(|&id| id == state.ui.selected);
        let mut ts = TableState::default().with_selected(selected);
        StatefulWidget::render(table, area, buf, &mut ts);
    }
}
