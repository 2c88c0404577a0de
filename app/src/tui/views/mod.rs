//! Views: pure renders of `&TuiState`, one file per panel, composed here into the app.

pub mod branches;
pub mod confirm;
pub mod fit;
pub mod footer;
pub mod fork_form;
pub mod header;
pub mod help;
pub mod landscape;
pub mod loss;
pub mod lr;
pub mod norms;
pub mod plot;
pub mod probes;
pub mod probes_view;
pub mod runs;
pub mod yrange;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::Widget;
use wsdscope_sessions::{Phase, RunId};

use self::plot::{Band, XMarker};
use super::compare::Comparison;
use super::layout::{self, MIN_HEIGHT, MIN_WIDTH};
use super::series::{Column, envelope_on};
use super::state::{Overlay, RunData, TuiState, View};

/// Axis lines and panel borders.
pub const AXIS: Color = Color::DarkGray;
/// Axis labels and secondary text.
pub const LABEL: Color = Color::Gray;
/// The raw curve behind a smoothed one, planned schedules, reference lines.
pub const FAINT: Color = Color::DarkGray;

/// The colour of run `id` in every panel.
pub fn run_color(id: RunId) -> Color {
    const COLORS: [Color; 8] = [
        Color::Cyan,
        Color::Yellow,
        Color::Magenta,
        Color::Green,
        Color::LightRed,
        Color::LightBlue,
        Color::LightGreen,
        Color::LightMagenta,
    ];
    COLORS[id as usize % COLORS.len()]
}

/// Background of a schedule phase (256-colour palette: dark blue, green, red).
pub fn phase_bg(p: Phase) -> Color {
    match p {
        Phase::Warmup => Color::Indexed(17),
        Phase::Stable => Color::Indexed(22),
        Phase::Decay => Color::Indexed(52),
    }
}

/// Foreground of a phase name.
pub fn phase_fg(p: Phase) -> Color {
    match p {
        Phase::Warmup => Color::LightBlue,
        Phase::Stable => Color::LightGreen,
        Phase::Decay => Color::LightRed,
    }
}

/// Runs in drawing order: the selected run last, so it is on top.
pub fn draw_order(state: &TuiState) -> Vec<&RunData> {
    let mut runs: Vec<&RunData> = state
        .runs
        .values()
        .filter(|r| r.id != state.ui.selected)
        .collect();
    runs.extend(state.runs.get(&state.ui.selected));
    runs
}

/// How the loss and norm panels fit their y range (key `o`): outliers clipped past the
/// trunk's warmup, or every point.
pub fn y_fit(state: &TuiState) -> yrange::YFit {
    if state.ui.clip_outliers {
        yrange::YFit::Clipped {
            warmup_end: state
                .trunk()
                .and_then(|t| Some(state.run_axis(t).x(t.phases()?.warmup_end as f64))),
        }
    } else {
        yrange::YFit::All
    }
}

/// What a chart's title (`title_width` columns so far, in a panel `width` wide) says while
/// its y range clips outliers, with the key that stops it: the long form where it fits, else
/// the short one, else nothing.
pub fn clipped_marker(state: &TuiState, title_width: usize, width: u16) -> Option<Span<'static>> {
    if !state.ui.clip_outliers {
        return None;
    }
    ["[outliers clipped: o] ", "[clipped: o] "]
        .into_iter()
        .find(|m| title_width + m.chars().count() + 2 <= width as usize)
        .map(|m| Span::styled(m, Style::default().fg(LABEL)))
}

/// A run's per-step `col` (aligned with `steps`) on the chosen x axis, reduced to `n`
/// buckets over the visible `lo..=hi` (see [`envelope_on`]).
pub fn curve(
    state: &TuiState,
    r: &RunData,
    steps: &[u64],
    col: &Column,
    (lo, hi, n): (f64, f64, usize),
) -> Vec<(f64, f64)> {
    let axis = state.run_axis(r);
    envelope_on(steps, col, (lo, hi, n), |s| axis.x(s as f64))
}

/// The trunk's warmup/stable/decay phases as background bands of a step chart, on the chosen
/// x axis.
pub fn phase_bands(state: &TuiState) -> Vec<Band> {
    let (Some(p), Some(axis)) = (state.trunk().and_then(RunData::phases), state.trunk_axis())
    else {
        return Vec::new();
    };
    let x = |s: u64| axis.x(s as f64 + 0.5);
    let edges = [
        (f64::NEG_INFINITY, x(p.warmup_end), Phase::Warmup),
        (x(p.warmup_end), x(p.decay_start), Phase::Stable),
        (x(p.decay_start), x(p.total), Phase::Decay),
    ];
    edges
        .into_iter()
        .filter(|(from, to, _)| to > from)
        .map(|(from, to, phase)| Band {
            from,
            to,
            color: phase_bg(phase),
            label: phase.as_str(),
        })
        .collect()
}

/// A marker at every fork (`⑂id`, in the branch's colour) for a step chart.
pub fn fork_markers(state: &TuiState) -> Vec<XMarker> {
    state
        .runs
        .values()
        .filter_map(|r| {
            r.fork_step.map(|s| XMarker {
                x: state.x_of(r.id, s as f64),
                color: run_color(r.id),
                label: format!("⑂{}", r.id),
            })
        })
        .collect()
}

/// The newest finite sample of `col` among its last few (geometry is NaN on a run's first
/// step); looks back a bounded distance so a frame never scans a whole run.
pub fn latest_finite(col: &Column) -> Option<f64> {
    col.values()
        .iter()
        .rev()
        .take(64)
        .copied()
        .find(|v| v.is_finite())
}

/// "@300 (latest)" or "@300 (40 steps ago)": where a probe was measured, relative to the
/// run's latest step.
pub fn measured_at(step: u64, latest: u64) -> String {
    match latest.saturating_sub(step) {
        0 => format!("@{step} (latest)"),
        1 => format!("@{step} (1 step ago)"),
        n => format!("@{step} ({n} steps ago)"),
    }
}

/// What a panel says when its probe has not reported: how to get one, where that is possible.
pub fn no_probe_text(state: &TuiState) -> &'static str {
    if state.ui.live && state.selected_run().is_some_and(RunData::is_active) {
        "none yet: press p to probe now"
    } else {
        "no probe recorded"
    }
}

/// Buckets for a chart panel of this outer width: one per column inside the border.
pub fn buckets(area: Rect) -> usize {
    area.width.saturating_sub(2).max(1) as usize
}

/// The whole app as a widget.
pub struct App<'a>(pub &'a TuiState);

impl Widget for App<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        if state.ui.compare {
            let Some(l) = layout::compare(area, state.runs.len()) else {
                too_small(area, buf);
                return;
            };
            // Computed once per frame for both panels (a few branches: microseconds).
            let cmp = Comparison::of(state);
            header::Header(state).render(l.header, buf);
            branches::BranchesPanel { state, cmp: &cmp }.render(l.table, buf);
            loss::LossPanel(state).render(l.loss, buf);
            fit::FitPanel { state, cmp: &cmp }.render(l.fit, buf);
            footer::Footer(state).render(l.footer, buf);
            overlays(state, area, buf);
            return;
        }
        match state.ui.view {
            View::Main => {}
            View::Probes => {
                let Some(l) = layout::probes(area) else {
                    too_small(area, buf);
                    return;
                };
                header::Header(state).render(l.header, buf);
                for (chart, r) in probes_view::CHARTS.into_iter().zip(l.charts) {
                    probes_view::ChartPanel { state, chart }.render(r, buf);
                }
                if l.timeline.height > 0 {
                    probes_view::ProbeTimeline(state).render(l.timeline, buf);
                }
                footer::Footer(state).render(l.footer, buf);
                overlays(state, area, buf);
                return;
            }
            View::Landscape => {
                let Some(l) = layout::landscape(area) else {
                    too_small(area, buf);
                    return;
                };
                header::Header(state).render(l.header, buf);
                landscape::HeatmapPanel(state).render(l.map, buf);
                landscape::SlicePanel {
                    state,
                    along: landscape::Along::Random,
                }
                .render(l.slice_random, buf);
                landscape::SlicePanel {
                    state,
                    along: landscape::Along::Update,
                }
                .render(l.slice_update, buf);
                landscape::InterpPanel(state).render(l.interp, buf);
                footer::Footer(state).render(l.footer, buf);
                overlays(state, area, buf);
                return;
            }
        }
        let Some(l) = layout::compute(area, state.runs.len()) else {
            too_small(area, buf);
            return;
        };
        header::Header(state).render(l.header, buf);
        loss::LossPanel(state).render(l.loss, buf);
        lr::LrPanel(state).render(l.lr, buf);
        norms::NormsPanel(state).render(l.norms, buf);
        runs::RunsPanel(state).render(l.runs, buf);
        probes::ProbesPanel(state).render(l.probes, buf);
        footer::Footer(state).render(l.footer, buf);
        overlays(state, area, buf);
    }
}

/// The window over the panels, if one is open.
fn overlays(state: &TuiState, area: Rect, buf: &mut Buffer) {
    match &state.ui.overlay {
        Overlay::None => {}
        Overlay::Help => help::Help(state).render(area, buf),
        Overlay::Fork(form) => fork_form::ForkFormView(state, form).render(area, buf),
        Overlay::ConfirmQuit => confirm::ConfirmQuit(state).render(area, buf),
    }
}

/// One line instead of panels that cannot fit.
fn too_small(area: Rect, buf: &mut Buffer) {
    if area.is_empty() {
        return;
    }
    let long = format!(
        "terminal too small ({}×{}; need {MIN_WIDTH}×{MIN_HEIGHT})",
        area.width, area.height
    );
    let text = if long.chars().count() <= area.width as usize {
        long
    } else {
        "terminal too small".to_string()
    };
    let w = text.chars().count().min(area.width as usize) as u16;
    buf.set_stringn(
        area.x + (area.width - w) / 2,
        area.y + (area.height - 1) / 2,
        &text,
        w as usize,
        Style::default()
            .fg(Color::Yellow)
            .add_modifier(Modifier::BOLD),
    );
}
