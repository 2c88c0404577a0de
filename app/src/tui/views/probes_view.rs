//! The probes view (key `v`): how the optimiser moves through the loss surface, over the
//! visible steps, for every run overlaid (the selected one on top) on the trunk's phase bands
//! with a marker at every fork. Four per-step charts (MiniCPM §4.4: the cosine between
//! successive gradients, the slope D1 and curvature D2 along the update, the curvature K of
//! the loss along the update path) and two periodic ones on log-y: the preconditioned
//! sharpness against Adam's stability line 38/η, and the gradient noise scale against the
//! batch in use and MiniCPM's batch-size rule. Below them, where there is room, a strip of
//! where every periodic probe (sharpness, noise scale, slices, landscape) ran, on the same
//! phase bands: whether they caught the stable state and the decay.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Widget};

use super::plot::{Plot, Series};
use super::{
    AXIS, FAINT, LABEL, buckets, curve, draw_order, fork_markers, latest_finite, no_probe_text,
    phase_bands, run_color,
};
use wsdscope_sessions::ProbeKind;
use wsdscope_sessions::vocabulary::{Drawing, noise, sharpness};

use crate::tui::format;
use crate::tui::series::Column;
use crate::tui::state::{RunData, TuiState};

const SHARPNESS: &str = ProbeKind::Sharpness.name();
const NOISE: &str = ProbeKind::Noise.name();

/// One chart of the probes view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chart {
    /// cos(g(t+1), g(t)).
    Cos,
    /// D1 = g(t+1)·v(t)/‖v(t)‖.
    D1,
    /// D2 = (g(t+1) − g(t))·v(t)/‖v(t)‖².
    D2,
    /// K = |D2|/(1+D1²)^1.5 (EMA-smoothed with `s`).
    Curvature,
    /// Top Hessian eigenvalue, raw and Adam-preconditioned, against 38/η.
    Sharpness,
    /// Gradient noise scale B_simple against the batch and the batch-size rule.
    Noise,
}

/// The charts in layout order (two per row).
pub const CHARTS: [Chart; 6] = [
    Chart::Cos,
    Chart::D1,
    Chart::D2,
    Chart::Curvature,
    Chart::Sharpness,
    Chart::Noise,
];

/// One chart of the probes view as a widget.
pub struct ChartPanel<'a> {
    pub state: &'a TuiState,
    pub chart: Chart,
}

impl Widget for ChartPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.state;
        let (lo, hi) = state.x_view();
        let n = buckets(area);
        let runs = draw_order(state);
        let sel = state.selected_run();
        let sel_color = run_color(state.ui.selected);
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let faint = Style::default().fg(FAINT);
        let no_probe;
        let mut plot = Plot {
            x: (lo, hi),
            x_axis: state.ui.x_axis,
            bands: phase_bands(state),
            markers: fork_markers(state),
            empty: "no step geometry yet (it needs two steps)",
            ..Default::default()
        };
        // The chart's name, then the selected run's latest value, then the legend (a narrow
        // chart cuts the title's end).
        let name: &str;
        let mut legend: Vec<Span> = Vec::new();
        // The selected run's latest value as (text, colour).
        let latest: Option<(String, Color)>;
        let geometry = |col: fn(&RunData) -> &Column| -> Option<(String, Color)> {
            sel.and_then(|r| latest_finite(col(r)))
                .map(|v| (format::value(v), sel_color))
        };
        match self.chart {
            Chart::Cos => {
                name = "cos(g(t+1), g(t))";
                legend.push(Span::styled("between successive steps", faint));
                plot.series = lines(state, &runs, |r| &r.grad_cos, lo, hi, n);
                plot.refs = vec![(0.0, FAINT)];
                plot.include_zero = true;
                latest = geometry(|r| &r.grad_cos);
            }
            Chart::D1 => {
                name = "D1";
                legend.push(Span::styled("slope along the last update", faint));
                plot.series = lines(state, &runs, |r| &r.d1, lo, hi, n);
                plot.refs = vec![(0.0, FAINT)];
                plot.include_zero = true;
                latest = geometry(|r| &r.d1);
            }
            Chart::D2 => {
                name = "D2";
                legend.push(Span::styled("curvature along the last update", faint));
                plot.series = lines(state, &runs, |r| &r.d2, lo, hi, n);
                plot.refs = vec![(0.0, FAINT)];
                plot.include_zero = true;
                latest = geometry(|r| &r.d2);
            }
            Chart::Curvature => {
                name = "K = |D2|/(1+D1²)^1.5";
                let smooth = state.ui.smooth;
                if smooth {
                    for r in &runs {
                        plot.series.push(Series::line(
                            curve(state, r, &r.steps, &r.curvature, (lo, hi, n)),
                            FAINT,
                        ));
                    }
                    plot.series
                        .extend(lines(state, &runs, |r| &r.curvature_ema, lo, hi, n));
                    legend.push(Span::styled("── EMA", Style::default().fg(sel_color)));
                    legend.push(Span::styled(" ── raw", faint));
                    latest = geometry(|r| &r.curvature_ema);
                } else {
                    plot.series = lines(state, &runs, |r| &r.curvature, lo, hi, n);
                    latest = geometry(|r| &r.curvature);
                }
                plot.log_y = state.ui.log_y;
                plot.include_zero = true;
                if state.ui.log_y {
                    legend.push(Span::styled(" [log-y]", Style::default().fg(LABEL)));
                }
            }
            Chart::Sharpness => {
                name = ProbeKind::Sharpness.spec().title;
                legend.push(Span::styled("── P⁻¹H", Style::default().fg(sel_color)));
                legend.push(Span::styled(" • λmax(H)", Style::default().fg(sel_color)));
                legend.push(Span::styled(" ── 38/η", faint));
                legend.push(Span::styled(" [log-y]", Style::default().fg(LABEL)));
                plot.log_y = over_steps(
                    state,
                    &mut plot.series,
                    &runs,
                    ProbeKind::Sharpness,
                    None,
                    (lo, hi, n),
                );
                no_probe = format!("sharpness: {}", no_probe_text(state));
                plot.empty = &no_probe;
                latest = sel.and_then(|r| r.latest_probe(SHARPNESS)).and_then(|p| {
                    let s = p.scalars.get(sharpness::PRECOND_LAMBDA_MAX)?;
                    let t = p.scalars.get(sharpness::THRESHOLD)?;
                    Some(if s > t {
                        (
                            format!(
                                "{} > 38/η {} ⚠ edge of stability",
                                format::value(*s),
                                format::value(*t)
                            ),
                            Color::Yellow,
                        )
                    } else {
                        (
                            format!("{} < 38/η {} ✔", format::value(*s), format::value(*t)),
                            sel_color,
                        )
                    })
                });
            }
            Chart::Noise => {
                name = "noise scale";
                legend.push(Span::styled("── avg", Style::default().fg(sel_color)));
                legend.push(Span::styled(" • B_simple", Style::default().fg(sel_color)));
                legend.push(Span::styled(" ── batch", faint));
                legend.push(Span::styled(" ┈ rule", Style::default().fg(LABEL)));
                legend.push(Span::styled(" [tokens, log-y]", Style::default().fg(LABEL)));
                // MiniCPM's batch rule, dotted beside each run's batch.
                let rule = Some(noise::RULE_TOKENS);
                plot.log_y = over_steps(
                    state,
                    &mut plot.series,
                    &runs,
                    ProbeKind::Noise,
                    rule,
                    (lo, hi, n),
                );
                no_probe = format!("noise scale: {}", no_probe_text(state));
                plot.empty = &no_probe;
                latest = sel.and_then(|r| r.latest_probe(NOISE)).and_then(|p| {
                    let b = p.scalars.get(noise::B_SIMPLE_AVG)?;
                    let batch = p
                        .scalars
                        .get(noise::BATCH_TOKENS)
                        .map(|t| format!(" vs batch {}", format::si(*t)))
                        .unwrap_or_default();
                    Some((format!("{} avg{batch}", format::si(*b)), sel_color))
                });
            }
        }
        let mut spans = vec![Span::styled(format!(" {name} "), bold)];
        if let Some((text, color)) = latest {
            spans.push(Span::styled(
                text,
                Style::default().fg(color).add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::raw(" "));
        }
        spans.extend(legend);
        spans.push(Span::raw(" "));
        plot.title = Line::from(spans);
        plot.render(area, buf);
    }
}

/// Where each periodic probe ran over the visible steps, on the trunk's phase bands: one row
/// per kind, a `●` in the run's colour at every step a run was probed there (the selected run
/// on top), and the phases' names on the last row.
pub struct ProbeTimeline<'a>(pub &'a TuiState);

impl Widget for ProbeTimeline<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        let title = Line::from(vec![
            Span::styled(
                " where the probes ran ",
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::styled("● in the run's colour ", Style::default().fg(FAINT)),
        ]);
        let block = Block::bordered()
            .border_style(Style::default().fg(AXIS))
            .title(title);
        let inner = block.inner(area);
        block.render(area, buf);
        let kinds = ProbeKind::PERIODIC;
        let label_w = kinds.iter().map(|k| k.name().len()).max().unwrap_or(0) as u16 + 1;
        if inner.width < label_w + 4 || inner.height == 0 {
            return;
        }
        let strip = Rect::new(
            inner.x + label_w,
            inner.y,
            inner.width - label_w,
            inner.height,
        );
        let (lo, hi) = state.x_view();
        let w = strip.width as f64;
        let span = (hi - lo).max(f64::MIN_POSITIVE);
        let centre = |c: u16| lo + (c as f64 + 0.5) / w * span;
        let column = |x: f64| -> Option<u16> {
            (x >= lo && x <= hi).then(|| (((x - lo) / span * w) as u16).min(strip.width - 1))
        };
        let rows = (kinds.len() as u16).min(strip.height);
        // The trunk's phases behind the marks, named on the row below them where they fit.
        let bands = phase_bands(state);
        let mut named = vec![false; bands.len()];
        for c in 0..strip.width {
            let x = centre(c);
            let Some(i) = bands.iter().position(|b| x >= b.from && x < b.to) else {
                continue;
            };
            for r in 0..strip.height {
                buf[(strip.x + c, strip.y + r)].set_bg(bands[i].color);
            }
            let room = (c..strip.width)
                .take_while(|&d| centre(d) < bands[i].to)
                .count();
            let label = bands[i].label;
            if strip.height > rows && !named[i] && room > label.len() {
                named[i] = true;
                let style = Style::default().fg(LABEL);
                buf.set_stringn(strip.x + c, strip.y + rows, label, label.len(), style);
            }
        }
        for (i, k) in kinds.iter().enumerate().take(rows as usize) {
            let style = Style::default().fg(LABEL);
            buf.set_stringn(
                inner.x,
                inner.y + i as u16,
                k.name(),
                label_w as usize - 1,
                style,
            );
        }
        for r in draw_order(state) {
            let color = run_color(r.id);
            for p in &r.probes {
                let Some(i) = kinds.iter().position(|k| k.name() == p.probe) else {
                    continue;
                };
                let x = state.x_of(r.id, p.step as f64);
                if let (true, Some(c)) = ((i as u16) < rows, column(x)) {
                    buf[(strip.x + c, strip.y + i as u16)]
                        .set_symbol("●")
                        .set_fg(color);
                }
            }
        }
    }
}

/// One line per run (selected last) of a per-step column, reduced to the chart's buckets.
fn lines(
    state: &TuiState,
    runs: &[&RunData],
    col: fn(&RunData) -> &Column,
    lo: f64,
    hi: f64,
    n: usize,
) -> Vec<Series> {
    runs.iter()
        .map(|r| {
            let points = curve(state, r, &r.steps, col(r), (lo, hi, n));
            Series::line(points, run_color(r.id))
        })
        .collect()
}

/// The points of scalar `key` of probe `kind` on `r` inside `lo..=hi` (plus the nearest one
/// outside on each side, so lines reach the edges), in step order. More than two per bucket
/// are reduced to each bucket's min and max, so what a frame allocates is bounded by the
/// chart's width, not by how many probes the run has.
/// The series of a probe kind drawn over steps, as its declaration says
/// ([`Drawing::OverSteps`]): for every run its reference (faint) and the chart's `guide`
/// scalar (dotted), then for every run its single estimates (dots) and its headline (a line)
/// in the run's colour, the selected run last. Returns whether the y-axis is logarithmic.
fn over_steps(
    state: &TuiState,
    series: &mut Vec<Series>,
    runs: &[&RunData],
    kind: ProbeKind,
    guide: Option<&str>,
    (lo, hi, n): (f64, f64, usize),
) -> bool {
    let Drawing::OverSteps {
        headline,
        samples,
        reference,
        log_y,
        ..
    } = kind.spec().drawing
    else {
        unreachable!("{kind} is not declared as drawn over steps")
    };
    let kind = kind.name();
    for r in runs {
        if let Some(k) = reference {
            series.push(Series::line(
                probe_points(state, r, kind, k, lo, hi, n),
                FAINT,
            ));
        }
        if let Some(k) = guide {
            series.push(Series::dotted(
                probe_points(state, r, kind, k, lo, hi, n),
                LABEL,
            ));
        }
    }
    for r in runs {
        let c = run_color(r.id);
        if let Some(k) = samples {
            series.push(Series::dots(probe_points(state, r, kind, k, lo, hi, n), c));
        }
        series.push(Series::line(
            probe_points(state, r, kind, headline, lo, hi, n),
            c,
        ));
    }
    log_y
}

pub fn probe_points(
    state: &TuiState,
    r: &RunData,
    kind: &str,
    key: &str,
    lo: f64,
    hi: f64,
    n: usize,
) -> Vec<(f64, f64)> {
    let axis = state.run_axis(r);
    let all = || {
        r.probes
            .iter()
            .filter(move |p| p.probe == kind)
            .filter_map(move |p| {
                let v = *p.scalars.get(key)?;
                v.is_finite().then_some((axis.x(p.step as f64), v))
            })
    };
    let mut before: Option<(f64, f64)> = None;
    let mut after: Option<(f64, f64)> = None;
    let mut inside = 0usize;
    for (x, y) in all() {
        if x < lo {
            if before.is_none_or(|b| x >= b.0) {
                before = Some((x, y));
            }
        } else if x > hi {
            if after.is_none_or(|a| x < a.0) {
                after = Some((x, y));
            }
        } else {
            inside += 1;
        }
    }
    let n = n.max(1);
    let mut out = Vec::with_capacity(inside.min(2 * n) + 2);
    out.extend(before);
    if inside <= 2 * n {
        let from = out.len();
        out.extend(all().filter(|&(x, _)| x >= lo && x <= hi));
        out[from..].sort_by(|a, b| a.0.total_cmp(&b.0));
    } else {
        let width = (hi - lo) / n as f64;
        let mut slots = vec![(f64::INFINITY, f64::NEG_INFINITY); n];
        for (x, y) in all().filter(|&(x, _)| x >= lo && x <= hi) {
            let j = (((x - lo) / width) as usize).min(n - 1);
            slots[j] = (slots[j].0.min(y), slots[j].1.max(y));
        }
        for (j, &(mn, mx)) in slots.iter().enumerate() {
            if mn <= mx {
                let x = lo + width * (j as f64 + 0.5);
                out.push((x, mn));
                if mx > mn {
                    out.push((x, mx));
                }
            }
        }
    }
    out.extend(after);
    out
}
