//! The landscape view (key `v` twice): what the loss looks like around the selected run's
//! parameters, from its latest periodic probes. A heatmap of the 2-D slice along two
//! filter-normalised random directions (Li et al. 2018; half-block cells, two pixels each, on
//! a viridis-like ramp, with a colour bar, the current parameters and the grid's minimum
//! marked); the 1-D slices along a random direction and along the last update; and the linear
//! interpolation between a branch and its parent (Hägele et al. 2024). Every panel says at
//! which step it was measured and how long ago that was.

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};
use wsdscope_sessions::vocabulary::{Drawing, interp, landscape, slice};
use wsdscope_sessions::{ProbeKind, ProbeResult};

use super::plot::{Plot, Series, XMarker};
use super::{AXIS, LABEL, measured_at, no_probe_text, run_color};
use crate::tui::format;
use crate::tui::state::{RunData, TuiState};

/// A perceptual ramp (viridis, sampled at nine stops) from low loss to high loss.
pub use crate::palette::VIRIDIS as RAMP;

/// The ramp's colour at `t` in `0..=1` (clamped; linear between stops).
pub fn ramp(t: f64) -> Color {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (RAMP.len() - 1) as f64;
    let i = (pos.floor() as usize).min(RAMP.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (RAMP[i], RAMP[i + 1]);
    let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * f).round() as u8;
    Color::Rgb(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The colour of loss `v` on a map whose losses span `lo..=hi`: `lo` gets the ramp's first
/// colour, `hi` its last. With `log` (and positive losses) the ramp follows log(loss), which
/// keeps detail near the minimum when the edges of the grid are far higher.
pub fn heat_color(v: f64, lo: f64, hi: f64, log: bool) -> Color {
    let f = |x: f64| if log && lo > 0.0 { x.max(lo).ln() } else { x };
    let span = f(hi) - f(lo);
    let t = if span > 0.0 {
        (f(v) - f(lo)) / span
    } else {
        0.0
    };
    ramp(t)
}

/// Black or white, whichever reads better on `bg`.
fn contrast(bg: Color) -> Color {
    match bg {
        Color::Rgb(r, g, b) if 0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64 > 140.0 => {
            Color::Black
        }
        _ => Color::White,
    }
}

/// The measurement grid of a "landscape" result: `loss[j·nx + i]` is at (`x[i]`, `y[j]`).
struct Grid<'a> {
    x: &'a [f64],
    y: &'a [f64],
    loss: &'a [f64],
}

impl<'a> Grid<'a> {
    fn of(p: &'a ProbeResult) -> Result<Self, String> {
        let get = |k: &str| p.series.get(k).map(Vec::as_slice);
        let Drawing::Surface { x, y, z } = ProbeKind::Landscape.spec().drawing else {
            unreachable!("the landscape probe is declared as a surface")
        };
        let (Some(x), Some(y), Some(loss)) = (get(x), get(y), get(z)) else {
            return Err("result without x, y and loss series".into());
        };
        if x.len() < 2 || y.len() < 2 || loss.len() != x.len() * y.len() {
            return Err(format!(
                "malformed result: {}×{} grid with {} losses",
                x.len(),
                y.len(),
                loss.len()
            ));
        }
        Ok(Grid { x, y, loss })
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        self.loss[j * self.x.len() + i]
    }

    /// Bilinear interpolation at fractional grid indices (`u` along x, `v` along y).
    fn sample(&self, u: f64, v: f64) -> f64 {
        let (nx, ny) = (self.x.len(), self.y.len());
        let i = (u.floor().max(0.0) as usize).min(nx - 2);
        let j = (v.floor().max(0.0) as usize).min(ny - 2);
        let (fu, fv) = (
            (u - i as f64).clamp(0.0, 1.0),
            (v - j as f64).clamp(0.0, 1.0),
        );
        let top = self.at(i, j + 1) * (1.0 - fu) + self.at(i + 1, j + 1) * fu;
        let bottom = self.at(i, j) * (1.0 - fu) + self.at(i + 1, j) * fu;
        bottom * (1.0 - fv) + top * fv
    }

    /// The finite losses' (min, max) and where the minimum is (i, j).
    fn range(&self) -> Option<(f64, f64, usize, usize)> {
        let nx = self.x.len();
        let mut best: Option<(f64, f64, usize, usize)> = None;
        for (k, &l) in self.loss.iter().enumerate() {
            if !l.is_finite() {
                continue;
            }
            best = Some(match best {
                None => (l, l, k % nx, k / nx),
                Some((lo, hi, _, _)) if l < lo => (l, hi.max(l), k % nx, k / nx),
                Some((lo, hi, i, j)) => (lo, hi.max(l), i, j),
            });
        }
        best
    }
}

/// The fractional index of `x` in the ascending `xs`, if it lies inside them.
fn frac_index(xs: &[f64], x: f64) -> Option<f64> {
    let k = xs.partition_point(|&v| v <= x);
    if k == 0 || x > xs[xs.len() - 1] {
        return None;
    }
    if k == xs.len() {
        return Some((xs.len() - 1) as f64);
    }
    let (a, b) = (xs[k - 1], xs[k]);
    Some((k - 1) as f64 + if b > a { (x - a) / (b - a) } else { 0.0 })
}

/// A bordered panel with a short grey message in its middle (wrapped if narrow).
fn message_panel(title: Line, text: &str, area: Rect, buf: &mut Buffer) {
    let block = Block::bordered()
        .border_style(Style::default().fg(AXIS))
        .title(title);
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.is_empty() {
        return;
    }
    let rows = (text.chars().count() as u16).div_ceil(inner.width).max(1);
    let top = inner.y + inner.height.saturating_sub(rows) / 2;
    let r = Rect::new(inner.x, top, inner.width, inner.bottom() - top);
    Paragraph::new(text)
        .style(Style::default().fg(LABEL))
        .alignment(Alignment::Center)
        .wrap(Wrap { trim: true })
        .render(r, buf);
}

/// " <what> [run N] @step (age) · extra " for a panel's title, the most needed first (a
/// narrow panel cuts the end).
fn panel_title<'a>(
    what: &'a str,
    run: &RunData,
    show_run: bool,
    step: Option<u64>,
    extra: String,
) -> Line<'a> {
    let label = Style::default().fg(LABEL);
    let mut spans = vec![Span::styled(
        format!(" {what}"),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if show_run {
        spans.push(Span::styled(
            format!(" run {}", run.id),
            Style::default().fg(run_color(run.id)),
        ));
    }
    if let Some(s) = step {
        spans.push(Span::styled(
            format!(" {}", measured_at(s, run.last_step())),
            label,
        ));
    }
    if !extra.is_empty() {
        spans.push(Span::styled(format!(" · {extra}"), label));
    }
    spans.push(Span::raw(" "));
    Line::from(spans)
}

/// The 2-D landscape of the selected run as a heatmap.
pub struct HeatmapPanel<'a>(pub &'a TuiState);

impl Widget for HeatmapPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        let Some(run) = state.selected_run() else {
            message_panel(
                Line::from(" loss landscape "),
                "waiting for the first step…",
                area,
                buf,
            );
            return;
        };
        let Some(p) = run.latest_probe(ProbeKind::Landscape.name()) else {
            let title = panel_title("loss landscape", run, true, None, String::new());
            message_panel(title, no_probe_text(state), area, buf);
            return;
        };
        let grid = match Grid::of(p) {
            Ok(g) => g,
            Err(e) => {
                let title = panel_title("loss landscape", run, true, Some(p.step), String::new());
                message_panel(title, &e, area, buf);
                return;
            }
        };
        let (nx, ny) = (grid.x.len(), grid.y.len());
        let span = p
            .scalars
            .get(landscape::SPAN)
            .map(|s| format!(" ±{}", format::value(*s)))
            .unwrap_or_default();
        let title = panel_title(
            "loss landscape",
            run,
            true,
            Some(p.step),
            format!("{nx}×{ny}{span}"),
        );
        let Some((lo, hi, min_i, min_j)) = grid.range() else {
            message_panel(title, "no finite loss in this result", area, buf);
            return;
        };
        let block = Block::bordered()
            .border_style(Style::default().fg(AXIS))
            .title(title);
        let inner = block.inner(area);
        block.render(area, buf);
        let log = state.ui.log_y && lo > 0.0;
        let label = Style::default().fg(LABEL);

        // Labels: y values left of the map, the colour bar and its values right of it, x
        // values and the legend below.
        let (y0, y1) = (grid.y[0], grid.y[ny - 1]);
        let (x0, x1) = (grid.x[0], grid.x[nx - 1]);
        let ylabels = [format::value(y1), format::value(y0), "0".to_string()];
        let lw = ylabels.iter().map(|s| s.chars().count()).max().unwrap_or(1) as u16;
        let mid = if log {
            (lo * hi).sqrt()
        } else {
            (lo + hi) / 2.0
        };
        let bar_labels = [format::value(hi), format::value(mid), format::value(lo)];
        let bw = bar_labels
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(1) as u16;
        let bar_room = 1 + 2 + 1 + bw;
        if inner.width < lw + 1 + 4 + bar_room || inner.height < 4 {
            return;
        }
        let avail_w = inner.width - lw - 1 - bar_room;
        let avail_h = inner.height - 2;
        // Square pixels: a cell is about twice as tall as wide and holds two of them.
        let map_w = avail_w.min(2 * avail_h);
        let map_h = avail_h.min(map_w.div_ceil(2));
        let map = Rect::new(inner.x + lw + 1, inner.y, map_w, map_h);
        let ph = 2 * map_h;
        // Pixel (px, py) → fractional grid index; the corner pixels sit on the grid's corners.
        let u_of = |px: u16| px as f64 / (map_w - 1).max(1) as f64 * (nx - 1) as f64;
        let v_of = |py: u16| (ph - 1 - py) as f64 / (ph - 1).max(1) as f64 * (ny - 1) as f64;
        let px_of = |u: f64| (u / (nx - 1) as f64 * (map_w - 1) as f64).round() as u16;
        let py_of = |v: f64| ((ny - 1) as f64 - v) / (ny - 1) as f64 * (ph - 1) as f64;
        let color_at = |px: u16, py: u16| {
            let l = grid.sample(u_of(px), v_of(py));
            if l.is_finite() {
                heat_color(l, lo, hi, log)
            } else {
                Color::Black
            }
        };
        for r in 0..map_h {
            for c in 0..map_w {
                buf[(map.x + c, map.y + r)]
                    .set_symbol("▀")
                    .set_fg(color_at(c, 2 * r))
                    .set_bg(color_at(c, 2 * r + 1));
            }
        }
        // The grid's minimum (×), then the current parameters (+) on top.
        let mut mark = |u: f64, v: f64, symbol: &str| {
            let c = px_of(u).min(map_w - 1);
            let r = ((py_of(v).round() as u16) / 2).min(map_h - 1);
            let cell = &mut buf[(map.x + c, map.y + r)];
            let bg = cell.fg;
            cell.set_symbol(symbol).set_style(
                Style::default()
                    .fg(contrast(bg))
                    .bg(bg)
                    .add_modifier(Modifier::BOLD),
            );
        };
        mark(min_i as f64, min_j as f64, "×");
        let centre = frac_index(grid.x, 0.0).zip(frac_index(grid.y, 0.0));
        if let Some((u0, v0)) = centre {
            mark(u0, v0, "+");
        }

        // y labels and axis.
        let axis = Style::default().fg(AXIS);
        for r in 0..map_h {
            buf[(map.x - 1, map.y + r)].set_symbol("│").set_style(axis);
        }
        let mut put_y = |r: u16, text: &str| {
            let w = text.chars().count() as u16;
            buf.set_stringn(map.x - 1 - w, map.y + r, text, w as usize, label);
            buf[(map.x - 1, map.y + r)].set_symbol("┤");
        };
        put_y(0, &ylabels[0]);
        put_y(map_h - 1, &ylabels[1]);
        if let Some((_, v0)) = centre {
            let r = (py_of(v0).round() as u16) / 2;
            if r > 0 && r + 1 < map_h {
                put_y(r, "0");
            }
        }
        // x axis: first, 0 (under the centre) and last value.
        let xr = map.y + map_h;
        if xr < inner.bottom() {
            buf[(map.x - 1, xr)].set_symbol("└").set_style(axis);
            for c in 0..map_w {
                buf[(map.x + c, xr)].set_symbol("─").set_style(axis);
            }
            let (left, right) = (format::value(x0), format::value(x1));
            let (lw_, rw) = (left.chars().count() as u16, right.chars().count() as u16);
            if lw_ + rw + 2 <= map_w {
                buf.set_stringn(map.x, xr, &left, lw_ as usize, label);
                buf.set_stringn(map.right() - rw, xr, &right, rw as usize, label);
                if let Some((u0, _)) = centre {
                    let c = map.x + px_of(u0);
                    if c > map.x + lw_ + 1 && c + 2 < map.right() - rw {
                        buf.set_stringn(c, xr, "0", 1, label);
                    }
                }
            }
        }

        // Colour bar: the ramp top (max) to bottom (min), two pixels a row, with values.
        let bar_x = map.right() + 1;
        for r in 0..map_h {
            let t = |py: u16| 1.0 - py as f64 / (ph - 1).max(1) as f64;
            let value_at = |t: f64| {
                if log {
                    (lo.ln() + t * (hi.ln() - lo.ln())).exp()
                } else {
                    lo + t * (hi - lo)
                }
            };
            for c in 0..2 {
                buf[(bar_x + c, map.y + r)]
                    .set_symbol("▀")
                    .set_fg(heat_color(value_at(t(2 * r)), lo, hi, log))
                    .set_bg(heat_color(value_at(t(2 * r + 1)), lo, hi, log));
            }
        }
        let lx = bar_x + 3;
        let bar_rows = [0, map_h / 2, map_h - 1];
        for (text, r) in bar_labels.iter().zip(bar_rows) {
            if r < map_h && (r == 0 || r + 1 == map_h || (r > 1 && r + 2 < map_h)) {
                buf.set_stringn(lx, map.y + r, text, bw as usize, label);
            }
        }

        // Legend: the loss at the current parameters and at the grid's minimum.
        let at_centre = centre
            .map(|(u, v)| format!(" L {}", format::value(grid.sample(u, v))))
            .unwrap_or_default();
        let legend = Line::from(vec![
            Span::styled("+", Style::default().add_modifier(Modifier::BOLD)),
            Span::styled(format!(" θ now{at_centre}"), label),
            Span::styled("  ×", Style::default().add_modifier(Modifier::BOLD)),
            Span::styled(
                format!(
                    " grid min {} at ({}, {})",
                    format::value(lo),
                    format::value(grid.x[min_i]),
                    format::value(grid.y[min_j])
                ),
                label,
            ),
            Span::styled(if log { "  [log colours]" } else { "" }, label),
        ]);
        let legend_row = xr + 1;
        if legend_row < inner.bottom() {
            buf.set_line(inner.x, legend_row, &legend, inner.width);
        }
        if legend_row + 1 < inner.bottom() {
            let axes = "x, y: two random directions, filter-normalised";
            buf.set_stringn(inner.x, legend_row + 1, axes, inner.width as usize, label);
        }
    }
}

/// Which 1-D slice of a "slice" result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Along {
    /// A filter-normalised random direction (x in its units).
    Random,
    /// The last update (x in multiples of it).
    Update,
}

/// One 1-D loss slice of the selected run's latest "slice" result.
pub struct SlicePanel<'a> {
    pub state: &'a TuiState,
    pub along: Along,
}

impl Widget for SlicePanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.state;
        let (what, xs, ys, unit) = match self.along {
            Along::Random => (
                "random-direction slice",
                slice::ALPHA,
                slice::LOSS_RANDOM,
                "x filter-norm.",
            ),
            Along::Update => (
                "update-direction slice",
                slice::BETA,
                slice::LOSS_UPDATE,
                "x in updates",
            ),
        };
        let Some(run) = state.selected_run() else {
            message_panel(Line::from(format!(" {what} ")), "no run yet", area, buf);
            return;
        };
        let latest = run.latest_probe(ProbeKind::Slice.name());
        let points: Vec<(f64, f64)> = latest
            .and_then(|p| Some((p.series.get(xs)?, p.series.get(ys)?)))
            .map(|(x, y)| {
                x.iter()
                    .zip(y)
                    .map(|(&x, &y)| (x, y))
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect()
            })
            .unwrap_or_default();
        let title = panel_title(what, run, false, latest.map(|p| p.step), unit.to_string());
        let Some(p) = latest else {
            message_panel(title, no_probe_text(state), area, buf);
            return;
        };
        if points.len() < 2 {
            let msg = format!("malformed result at step {}: no {xs}/{ys} series", p.step);
            message_panel(title, &msg, area, buf);
            return;
        }
        let (x0, x1) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
                (a.0.min(p.0), a.1.max(p.0))
            });
        Plot {
            title,
            x: (x0, x1),
            x_values: true,
            series: vec![Series::line(points, run_color(run.id))],
            markers: vec![XMarker {
                x: 0.0,
                color: LABEL,
                label: "θ now".into(),
            }],
            empty: "no finite loss in this slice",
            ..Default::default()
        }
        .render(area, buf);
    }
}

/// The newest "interp" result that involves the selected run: measured on it, or with it as
/// either end of the interpolation.
pub fn latest_interp(state: &TuiState) -> Option<&ProbeResult> {
    let sel = state.ui.selected as f64;
    state
        .runs
        .values()
        .flat_map(|r| r.probes.iter())
        .filter(|p| p.probe == ProbeKind::Interp.name())
        .filter(|p| {
            p.run == state.ui.selected
                || p.scalars.get(interp::FROM_RUN) == Some(&sel)
                || p.scalars.get(interp::TO_RUN) == Some(&sel)
        })
        .max_by_key(|p| (p.step, p.run))
}

/// L((1−α)θ_parent + αθ_branch) from the latest interpolation involving the selected run.
pub struct InterpPanel<'a>(pub &'a TuiState);

impl Widget for InterpPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let state = self.0;
        let what = "interpolation";
        let Some(run) = state.selected_run() else {
            message_panel(Line::from(format!(" {what} ")), "no run yet", area, buf);
            return;
        };
        let Some(p) = latest_interp(state) else {
            let title = panel_title(what, run, false, None, String::new());
            let text = if state.ui.live && run.is_active() {
                "none yet: measured when a branch ends"
            } else {
                "no probe recorded"
            };
            message_panel(title, text, area, buf);
            return;
        };
        let scalar = |k: &str| p.scalars.get(k).copied();
        let end = |run: Option<f64>, step: Option<f64>| match (run, step) {
            (Some(r), Some(s)) => format!("run {r}@{s}"),
            (Some(r), None) => format!("run {r}"),
            _ => "?".into(),
        };
        let from = end(scalar(interp::FROM_RUN), scalar(interp::FROM_STEP));
        let to = end(scalar(interp::TO_RUN), scalar(interp::TO_STEP));
        let dist = scalar(interp::DISTANCE)
            .map(|d| format!("‖θ₁−θ₀‖ {}", format::value(d)))
            .unwrap_or_default();
        let title = panel_title(what, run, false, Some(p.step), dist);
        let points: Vec<(f64, f64)> =
            match (p.series.get(interp::ALPHA), p.series.get(interp::LOSS)) {
                (Some(a), Some(l)) => a
                    .iter()
                    .zip(l)
                    .map(|(&a, &l)| (a, l))
                    .filter(|(a, l)| a.is_finite() && l.is_finite())
                    .collect(),
                _ => Vec::new(),
            };
        if points.len() < 2 {
            let msg = format!("malformed result at step {}: no alpha/loss series", p.step);
            message_panel(title, &msg, area, buf);
            return;
        }
        let (x0, x1) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
                (a.0.min(p.0), a.1.max(p.0))
            });
        let color_of = |k: &str| {
            scalar(k)
                .filter(|r| *r >= 0.0 && *r <= u32::MAX as f64)
                .map(|r| run_color(r as u32))
                .unwrap_or(LABEL)
        };
        Plot {
            title,
            x: (x0, x1),
            x_values: true,
            series: vec![Series::line(points, run_color(p.run))],
            markers: vec![
                XMarker {
                    x: 0.0,
                    color: color_of(interp::FROM_RUN),
                    label: format!("α=0 {from}"),
                },
                XMarker {
                    x: 1.0,
                    color: color_of(interp::TO_RUN),
                    label: format!("α=1 {to}"),
                },
            ],
            empty: "no finite loss in this interpolation",
            ..Default::default()
        }
        .render(area, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(c: (u8, u8, u8)) -> Color {
        Color::Rgb(c.0, c.1, c.2)
    }

    #[test]
    fn the_heatmap_maps_min_to_the_first_colour_and_max_to_the_last() {
        let first = rgb(RAMP[0]);
        let last = rgb(RAMP[RAMP.len() - 1]);
        for log in [false, true] {
            assert_eq!(heat_color(3.1, 3.1, 7.5, log), first);
            assert_eq!(heat_color(7.5, 3.1, 7.5, log), last);
            // Outside the range clamps to the ends.
            assert_eq!(heat_color(1.0, 3.1, 7.5, log), first);
            assert_eq!(heat_color(99.0, 3.1, 7.5, log), last);
        }
        // The middle of the range is the middle stop; a flat map is all the first colour.
        assert_eq!(heat_color(5.0, 3.0, 7.0, false), rgb(RAMP[4]));
        assert_eq!(heat_color(2.0, 2.0, 2.0, false), first);
        assert_eq!(ramp(f64::NAN), first);
    }

    #[test]
    fn fractional_indices_interpolate_inside_the_grid() {
        let xs = [-1.0, -0.5, 0.0, 0.5, 1.0];
        assert_eq!(frac_index(&xs, 0.0), Some(2.0));
        assert_eq!(frac_index(&xs, -1.0), Some(0.0));
        assert_eq!(frac_index(&xs, 1.0), Some(4.0));
        assert_eq!(frac_index(&xs, 0.25), Some(2.5));
        assert_eq!(frac_index(&xs, 1.5), None);
        assert_eq!(frac_index(&xs, -1.5), None);
    }
}
