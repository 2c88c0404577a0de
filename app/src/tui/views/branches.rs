//! The branches table (key `c`): one row per run, the trunk first, then every branch with its
//! fork step, tokens at the fork, decay (shape, length, floor), its last step, final val loss
//! (or `running`), the trunk's val loss at that step, the drop versus the trunk (trunk −
//! branch; green when the decay helped), the final training loss the multi-power law predicted
//! at the fork (and its error once the branch ends) and the memory the run holds. Below the rows: the
//! endpoint fit's parameters with their standard errors, or what the fit still needs.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, StatefulWidget, Table, TableState, Widget};

use super::{AXIS, FAINT, LABEL, run_color};
use crate::tui::compare::{self, BranchRow, Comparison};
use crate::tui::format;
use crate::tui::state::{RunData, RunStatus, TuiState};

pub struct BranchesPanel<'a> {
    pub state: &'a TuiState,
    pub cmp: &'a Comparison,
}

const HEADER: [&str; 10] = [
    "run", "fork", "tok@fork", "decay", "step", "val", "trunk", "drop", "pred", "mem",
];
const WIDTHS: [Constraint; 10] = [
    Constraint::Length(3),
    Constraint::Length(6),
    Constraint::Length(8),
    Constraint::Length(18),
    Constraint::Length(6),
    Constraint::Length(7),
    Constraint::Length(6),
    Constraint::Length(7),
    Constraint::Length(15),
    Constraint::Length(7),
];

fn dash() -> Cell<'static> {
    Cell::from(Span::styled("–", Style::default().fg(FAINT)))
}

fn loss(v: Option<f64>) -> Cell<'static> {
    v.map(|v| Cell::from(format::value(v))).unwrap_or_else(dash)
}

fn id_cell(r: &RunData) -> Cell<'static> {
    Cell::from(Span::styled(
        r.id.to_string(),
        Style::default()
            .fg(run_color(r.id))
            .add_modifier(Modifier::BOLD),
    ))
}

fn mem_cell(r: &RunData) -> Cell<'static> {
    match compare::resident_bytes(r) {
        Some(b) => Cell::from(format!("{}B", format::si(b as f64))),
        None if r.start.is_some() => Cell::from(Span::styled("freed", Style::default().fg(FAINT))),
        None => dash(),
    }
}

/// The trunk's own schedule in the table's decay form.
fn trunk_decay(r: &RunData) -> String {
    match (r.start.as_ref(), r.schedule.is_some()) {
        (Some(s), _) if s.config["schedule"]["kind"] == "wsd" => {
            let (shape, steps, floor) = compare::decay_of(&s.config["schedule"], s.phases.total, 0);
            compare::decay_label(&shape, steps, floor)
        }
        (_, true) => r.schedule_label(),
        _ => "–".into(),
    }
}

/// A sibling (a run beside the trunk from step 0): `sib`, its label where a branch shows its
/// decay, its latest validation loss, the trunk's at the same eval step, and the difference
/// (green where the sibling is lower).
fn sibling_row(state: &TuiState, r: &RunData) -> Row<'static> {
    let val = r.last_val();
    let step = r.eval_steps.last().copied();
    let trunk = state
        .runs
        .get(&0)
        .zip(step)
        .and_then(|(t, s)| compare::val_at(t, s));
    let diff = match (val, trunk) {
        (Some(v), Some(t)) => Cell::from(Span::styled(
            format!("{:+.3}", v - t),
            Style::default().fg(if v < t { Color::Green } else { Color::Yellow }),
        )),
        _ => dash(),
    };
    Row::new(vec![
        id_cell(r),
        Cell::from("sib"),
        dash(),
        Cell::from(r.name.clone()),
        Cell::from(format::step(r.last_step() as f64)),
        loss(val),
        loss(trunk),
        diff,
        dash(),
        mem_cell(r),
    ])
}

fn trunk_row(r: &RunData) -> Row<'static> {
    Row::new(vec![
        id_cell(r),
        dash(),
        dash(),
        Cell::from(trunk_decay(r)),
        Cell::from(format::step(r.last_step() as f64)),
        loss(r.last_val()),
        dash(),
        dash(),
        dash(),
        mem_cell(r),
    ])
}

/// The branch's mean training loss over its last fifth as the multi-power law predicted it at
/// the fork, and once the branch completed, the error against what it did (`1.612 Δ+0.004`);
/// a `~` marks a prediction whose decay term was still the prior's.
fn pred_cell(state: &TuiState, id: u32) -> Cell<'static> {
    let Some(f) = state.forecasts.get(&id) else {
        return dash();
    };
    let Some(p) = f.before_tail else {
        return dash();
    };
    let mark = if f.decay_fitted { "" } else { "~" };
    match f.actual {
        Some(a) => {
            let d = p - a;
            Cell::from(Line::from(vec![
                Span::raw(format!("{mark}{}", format::value(p))),
                Span::styled(
                    format!(" Δ{d:+.3}"),
                    Style::default().fg(if d.abs() < 0.02 {
                        Color::Green
                    } else {
                        Color::Yellow
                    }),
                ),
            ]))
        }
        None => Cell::from(format!("{mark}{}", format::value(p))),
    }
}

fn branch_row(state: &TuiState, r: &RunData, b: &BranchRow) -> Row<'static> {
    let val = if r.is_active() {
        Cell::from(Span::styled("running", Style::default().fg(Color::Green)))
    } else if r.status() == RunStatus::Completed {
        loss(b.final_val_loss)
    } else {
        // Stopped or failed before its end: its last val, marked as not final.
        match b.final_val_loss {
            Some(v) => Cell::from(Span::styled(
                format!("{}*", format::value(v)),
                Style::default().fg(Color::Yellow),
            )),
            None => Cell::from(Span::styled(
                r.status().as_str(),
                Style::default().fg(Color::Yellow),
            )),
        }
    };
    let drop = match b.drop {
        Some(d) => Cell::from(Span::styled(
            format!("{d:+.3}"),
            Style::default().fg(if d > 0.0 { Color::Green } else { Color::Red }),
        )),
        None => dash(),
    };
    Row::new(vec![
        id_cell(r),
        Cell::from(format::step(b.fork_step as f64)),
        Cell::from(format::si(b.tokens_at_fork as f64)),
        Cell::from(b.decay_label()),
        b.end_step
            .map(|s| Cell::from(format::step(s as f64)))
            .unwrap_or_else(dash),
        val,
        loss(b.trunk_val_loss),
        drop,
        pred_cell(state, r.id),
        mem_cell(r),
    ])
}

/// A standard error in two significant digits: 0.01831 → "0.018", 100.6 → "101".
fn uncertainty(e: f64) -> String {
    if !e.is_finite() || e <= 0.0 || !(1e-4..1e5).contains(&e) {
        return format::value(e);
    }
    let decimals = (1 - e.log10().floor() as i32).max(0) as usize;
    format!("{e:.decimals$}")
}

/// `L0 2.301 ±0.012 · B 31.2 ±4.1 · β 0.271 ±0.020` and the extrapolation, or why not yet.
fn fit_lines(cmp: &Comparison, live: bool) -> [Line<'static>; 2] {
    let label = Style::default().fg(LABEL);
    let Some(f) = &cmp.fit else {
        let why = cmp.missing().unwrap_or_default();
        return [
            Line::from(Span::styled(
                format!(" {why}"),
                Style::default().fg(Color::Yellow),
            )),
            Line::from(Span::styled(
                if live {
                    " fork decay branches at several steps (f) and let them finish"
                } else {
                    " the fit uses decay branches that ran to their end"
                },
                label,
            )),
        ];
    };
    let se = f.std_errors();
    let pm = |i: usize| {
        se.map(|e| format!(" ±{}", uncertainty(e[i])))
            .unwrap_or_default()
    };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut first = vec![
        Span::styled(" fit ", bold),
        Span::styled("L(D) = L0 + B·D^−β", label),
        Span::styled(format!(" over {} endpoints: ", f.n), label),
        Span::styled("L0 ", label),
        Span::styled(format!("{}{}", format::value(f.l0), pm(0)), bold),
        Span::styled(" · B ", label),
        Span::styled(format!("{}{}", format::value(f.b), pm(1)), bold),
        Span::styled(" · β ", label),
        Span::styled(format!("{}{}", format::value(f.beta), pm(2)), bold),
    ];
    if se.is_none() {
        first.push(Span::styled(
            format!(" (exact through {} points: no uncertainty)", f.n),
            label,
        ));
    }
    let far = 2.0 * cmp.endpoints.iter().map(|e| e.1).fold(0.0, f64::max);
    let sd = f
        .predict_std(far)
        .map(|s| format!(" ± {}", uncertainty(s)))
        .unwrap_or_default();
    let second = Line::from(vec![
        Span::styled(
            format!(
                " at 2× the last endpoint ({} tokens): L = ",
                format::si(far)
            ),
            label,
        ),
        Span::styled(format!("{}{sd}", format::value(f.predict(far))), bold),
    ]);
    [Line::from(first), second]
}

impl Widget for BranchesPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (state, cmp) = (self.state, self.cmp);
        let (bytes, live) = compare::total_resident(state);
        let mut title = vec![Span::styled(
            " branches vs trunk ",
            Style::default().add_modifier(Modifier::BOLD),
        )];
        if live > 0 {
            title.push(Span::styled(
                format!(
                    "· memory ≈ {}B in {live} live run{} (16 B/param) ",
                    format::si(bytes as f64),
                    if live == 1 { "" } else { "s" }
                ),
                Style::default().fg(LABEL),
            ));
        }
        let block = Block::bordered()
            .border_style(Style::default().fg(AXIS))
            .title(Line::from(title));
        let inner = block.inner(area);
        block.render(area, buf);
        if inner.height == 0 {
            return;
        }
        let fit_h = inner.height.saturating_sub(2).min(2);
        let [table_area, fit_area] = inner.layout(&Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(fit_h),
        ]));

        let mut by_id = cmp.rows.iter();
        let rows: Vec<Row> = state
            .runs
            .values()
            .map(|r| {
                if r.parent.is_some() {
                    match by_id.find(|b| b.id == r.id) {
                        Some(b) => branch_row(self.state, r, b),
                        None => trunk_row(r),
                    }
                } else if r.is_sibling() {
                    sibling_row(self.state, r)
                } else {
                    trunk_row(r)
                }
            })
            .collect();
        let header = Row::new(HEADER).style(
            Style::default()
                .fg(LABEL)
                .add_modifier(Modifier::UNDERLINED),
        );
        let table = Table::new(rows, WIDTHS)
            .header(header)
            .column_spacing(1)
            .flex(Flex::Start)
            .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
            .highlight_symbol("▶");
        let selected = state.runs.keys().position(|&id| id == state.ui.selected);
        let mut ts = TableState::default().with_selected(selected);
        StatefulWidget::render(table, table_area, buf, &mut ts);
        if fit_h > 0 {
            let lines = fit_lines(cmp, state.ui.live);
            Paragraph::new(lines[..fit_h as usize].to_vec()).render(fit_area, buf);
        }
    }
}
