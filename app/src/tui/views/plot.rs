//! A compact line chart on a braille canvas: y labels, an x axis with its title, background
//! bands (the schedule's phases) and vertical markers (fork points). The panels give it
//! already reduced points (see `series::envelope`), so drawing costs O(width) whatever the
//! run length. The x axis is steps, tokens or training time (`x_axis`); with `x_values` it
//! is any value range (loss slices), untitled.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::canvas::{Canvas, Line as CanvasLine, Points};
use ratatui::widgets::{Block, Widget};

use super::yrange::{YFit, extent};
use super::{AXIS, LABEL};
use crate::cli::XAxis;
use crate::tui::format;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Braille line through consecutive points.
    Line,
    /// One `•` per point (sparse data such as evals).
    Dots,
    /// A dotted braille line through consecutive points (a reference curve that must not be
    /// mistaken for data).
    Dotted,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub points: Vec<(f64, f64)>,
    pub color: Color,
    pub kind: Kind,
    /// Kept whole inside a y range that clips outliers (a branch's curve).
    pub keep: bool,
}

impl Series {
    pub fn line(points: Vec<(f64, f64)>, color: Color) -> Self {
        Series {
            points,
            color,
            kind: Kind::Line,
            keep: false,
        }
    }

    pub fn dots(points: Vec<(f64, f64)>, color: Color) -> Self {
        Series {
            points,
            color,
            kind: Kind::Dots,
            keep: false,
        }
    }

    pub fn dotted(points: Vec<(f64, f64)>, color: Color) -> Self {
        Series {
            points,
            color,
            kind: Kind::Dotted,
            keep: false,
        }
    }

    /// Marks the series to be kept whole inside a clipped y range.
    pub fn kept(mut self) -> Self {
        self.keep = true;
        self
    }
}

/// A background band over the step range `from..to`.
#[derive(Debug, Clone)]
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub color: Color,
    pub label: &'static str,
}

/// A vertical marker at step `x`, labelled at the top.
#[derive(Debug, Clone)]
pub struct XMarker {
    pub x: f64,
    pub color: Color,
    pub label: String,
}

/// The chart widget. Series are drawn in order (later on top).
#[derive(Debug, Clone, Default)]
pub struct Plot<'a> {
    pub title: Line<'a>,
    /// The visible range on `x_axis` (or value range with `x_values`).
    pub x: (f64, f64),
    /// What the x axis measures: its title and how its ticks read (`1200`, `2.46M`, `1m20s`).
    pub x_axis: XAxis,
    /// Label the x axis with values (`-0.5`, `0`, `1.2`) and no title rather than `x_axis`.
    pub x_values: bool,
    pub log_y: bool,
    /// Every point inside the y range, or outliers clipped (drawn on the range's edge).
    pub y_fit: YFit,
    /// Keep 0 inside the y range (linear axes only).
    pub include_zero: bool,
    pub series: Vec<Series>,
    /// Horizontal reference lines (y, color), drawn under the series; they do not widen the
    /// y range unless `fit_refs` is set.
    pub refs: Vec<(f64, Color)>,
    pub fit_refs: bool,
    pub bands: Vec<Band>,
    pub markers: Vec<XMarker>,
    /// Shown when there is nothing to draw.
    pub empty: &'a str,
}

impl Plot<'_> {
    fn ty(&self, y: f64) -> Option<f64> {
        if !y.is_finite() {
            None
        } else if self.log_y {
            (y > 0.0).then(|| y.log10())
        } else {
            Some(y)
        }
    }

    fn untransform(&self, y: f64) -> f64 {
        if self.log_y { 10f64.powf(y) } else { y }
    }
}

impl Widget for Plot<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let block = Block::bordered()
            .border_style(Style::default().fg(AXIS))
            .title(self.title.clone());
        let inner = block.inner(area);
        block.render(area, buf);
        if inner.width < 12 || inner.height < 2 {
            return;
        }

        // Transform to the drawn y scale (log10 when log-y) and find the range.
        let series: Vec<Series> = self
            .series
            .iter()
            .map(|s| Series {
                points: s
                    .points
                    .iter()
                    .filter_map(|&(x, y)| self.ty(y).map(|y| (x, y)))
                    .collect(),
                ..*s
            })
            .collect();
        let refs: Vec<(f64, Color)> = self
            .refs
            .iter()
            .filter_map(|&(y, c)| self.ty(y).map(|y| (y, c)))
            .collect();
        let sets: Vec<(&[(f64, f64)], bool)> =
            series.iter().map(|s| (&s.points[..], s.keep)).collect();
        let Some((mut lo, mut hi)) = extent(&sets, self.x, self.y_fit) else {
            let text = format!("{:^w$}", self.empty, w = inner.width as usize);
            buf.set_stringn(
                inner.x,
                inner.y + (inner.height - 1) / 2,
                text,
                inner.width as usize,
                Style::default().fg(LABEL),
            );
            return;
        };
        if self.fit_refs {
            for &(y, _) in &refs {
                lo = lo.min(y);
                hi = hi.max(y);
            }
        }
        if self.include_zero && !self.log_y {
            lo = lo.min(0.0);
            hi = hi.max(0.0);
        }
        let span = hi - lo;
        let pad = if span > 0.0 {
            span * 0.04
        } else {
            (hi.abs() * 0.05).max(1e-9)
        };
        let (bottom, top) = if self.include_zero && !self.log_y && lo >= 0.0 {
            (lo, hi + pad)
        } else {
            (lo - pad, hi + pad)
        };

        // What lies outside the range is drawn on its edge.
        let series: Vec<Series> = series
            .into_iter()
            .map(|mut s| {
                for p in &mut s.points {
                    p.1 = p.1.clamp(bottom, top);
                }
                s
            })
            .collect();

        let plot_h = inner.height - 1;
        // y labels at "nice" values, each on the row whose dots cover it.
        let dots = 4.0 * plot_h as f64 - 1.0;
        let row_of = |y: f64| -> u16 {
            let d = ((top - y) / (top - bottom) * dots).round().clamp(0.0, dots);
            (d as u16 / 4).min(plot_h - 1)
        };
        let max_ticks = (plot_h as usize / 2).clamp(2, 5);
        let mut labels: Vec<(u16, String)> = Vec::new();
        for t in ticks(
            self.untransform(bottom),
            self.untransform(top),
            max_ticks,
            self.log_y,
        ) {
            let Some(ty) = self.ty(t) else { continue };
            let r = row_of(ty);
            if labels.iter().all(|(lr, _)| *lr != r) {
                labels.push((r, format::value(t)));
            }
        }
        let label_w = labels
            .iter()
            .map(|(_, s)| s.chars().count() as u16)
            .max()
            .unwrap_or(1)
            .min(inner.width / 3);
        let plot = Rect::new(
            inner.x + label_w + 1,
            inner.y,
            inner.width - label_w - 1,
            plot_h,
        );
        let (x0, x1) = self.x;
        // Canvas dots per unit on each axis, to space the dots of dotted lines evenly.
        let dots_x = 2.0 * plot.width as f64 / (x1 - x0).abs().max(f64::MIN_POSITIVE);
        let dots_y = 4.0 * plot.height as f64 / (top - bottom).max(f64::MIN_POSITIVE);

        Canvas::default()
            .marker(Marker::Braille)
            .x_bounds([x0, x1])
            .y_bounds([bottom, top])
            .paint(|ctx| {
                for &(y, c) in &refs {
                    ctx.draw(&CanvasLine::new(x0, y, x1, y, c));
                }
                ctx.layer();
                for s in &series {
                    let (pts, color) = (&s.points, &s.color);
                    match s.kind {
                        Kind::Line if pts.len() > 1 => {
                            for w in pts.windows(2) {
                                ctx.draw(&CanvasLine::new(w[0].0, w[0].1, w[1].0, w[1].1, *color));
                            }
                        }
                        Kind::Line => ctx.draw(&Points::new(pts, *color)),
                        Kind::Dots => {
                            ctx.marker(Marker::Dot);
                            ctx.draw(&Points::new(pts, *color));
                            ctx.marker(Marker::Braille);
                        }
                        Kind::Dotted => {
                            let dotted = dotted_points(pts, x0, x1, dots_x, dots_y);
                            ctx.draw(&Points::new(&dotted, *color));
                        }
                    }
                    ctx.layer();
                }
            })
            .render(plot, buf);

        // Column c of the plot shows about this step (the canvas has 2 dots per column).
        let res = 2.0 * plot.width as f64 - 1.0;
        let col_x = |c: u16| x0 + (2.0 * c as f64 + 0.5) / res.max(1.0) * (x1 - x0);
        let x_col = |x: f64| -> Option<u16> {
            if x < x0 || x > x1 || x1 <= x0 {
                return None;
            }
            let dot = ((x - x0) * res / (x1 - x0)).round();
            Some((dot as u16) / 2)
        };

        // Phase bands behind everything, labelled on the bottom row where they fit.
        if !self.bands.is_empty() {
            let mut label_done = vec![false; self.bands.len()];
            for c in 0..plot.width {
                let x = col_x(c);
                if let Some((i, band)) = self
                    .bands
                    .iter()
                    .enumerate()
                    .find(|(_, b)| x >= b.from && x < b.to)
                {
                    for r in 0..plot.height {
                        buf[(plot.x + c, plot.y + r)].set_bg(band.color);
                    }
                    if !label_done[i] {
                        label_done[i] = true;
                        let cols_left = (0..plot.width - c)
                            .take_while(|&d| {
                                let x = col_x(c + d);
                                x >= band.from && x < band.to
                            })
                            .count();
                        let len = band.label.chars().count();
                        if cols_left > len + 1 && plot.height > 1 {
                            buf.set_stringn(
                                plot.x + c + 1,
                                plot.bottom() - 1,
                                band.label,
                                len,
                                Style::default().fg(LABEL),
                            );
                        }
                    }
                }
            }
        }

        // Fork markers: a dotted vertical line on empty cells, the label at the top.
        for m in &self.markers {
            let Some(c) = x_col(m.x) else { continue };
            let x = plot.x + c;
            for r in 0..plot.height {
                let cell = &mut buf[(x, plot.y + r)];
                if cell.symbol() == " " {
                    cell.set_symbol("┊").set_fg(m.color);
                }
            }
            // The label right of the line, or left of it where only that side has room.
            let room = plot.right().saturating_sub(x + 1) as usize;
            let len = m.label.chars().count();
            let left_room = x.saturating_sub(plot.x) as usize;
            if room < len && left_room > len {
                let lx = x - len as u16;
                buf.set_stringn(lx, plot.y, &m.label, len, Style::default().fg(m.color));
            } else if room > 0 {
                buf.set_stringn(x + 1, plot.y, &m.label, room, Style::default().fg(m.color));
            }
        }

        // Y axis and labels.
        let axis_x = inner.x + label_w;
        let axis_style = Style::default().fg(AXIS);
        for r in 0..plot_h {
            buf[(axis_x, inner.y + r)]
                .set_symbol("│")
                .set_style(axis_style);
        }
        for (r, text) in &labels {
            buf[(axis_x, inner.y + r)].set_symbol("┤");
            let w = text.chars().count().min(label_w as usize) as u16;
            buf.set_stringn(
                axis_x - w,
                inner.y + r,
                text,
                w as usize,
                Style::default().fg(LABEL),
            );
        }

        // X axis with the first, middle and last visible step.
        let y_axis = inner.bottom() - 1;
        buf[(axis_x, y_axis)].set_symbol("└").set_style(axis_style);
        for c in 0..plot.width {
            buf[(plot.x + c, y_axis)]
                .set_symbol("─")
                .set_style(axis_style);
        }
        let fmt_x = |x: f64| {
            if self.x_values {
                format::value(x)
            } else {
                self.x_axis.tick(x)
            }
        };
        let left = fmt_x(x0);
        let right = fmt_x(x1);
        let mid = fmt_x((x0 + x1) / 2.0);
        let w = plot.width as usize;
        let label_style = Style::default().fg(LABEL);
        let (lw, rw, mw) = (
            left.chars().count(),
            right.chars().count(),
            mid.chars().count(),
        );
        if lw + rw + 2 <= w {
            buf.set_stringn(plot.x, y_axis, &left, w, label_style);
            let rx = plot.right() - rw as u16;
            buf.set_stringn(rx, y_axis, &right, rw, label_style);
            let mx = plot.x + (plot.width / 2).saturating_sub(mw as u16 / 2);
            // The stretch between the first label and the next one drawn.
            let mut free_to = rx;
            if mx > plot.x + lw as u16 + 1 && mx + (mw as u16) + 1 < rx {
                buf.set_stringn(mx, y_axis, &mid, mw, label_style);
                free_to = mx;
            }
            // The axis's title in the middle of that stretch, where it fits with a gap.
            let title = self.x_axis.name();
            let tw = title.chars().count() as u16;
            let free_from = plot.x + lw as u16;
            if !self.x_values && free_to >= free_from + tw + 4 {
                let tx = free_from + (free_to - free_from - tw) / 2;
                buf.set_stringn(tx, y_axis, title, tw as usize, label_style);
            }
        }
    }
}

/// Points every third canvas dot along the polyline `pts` (given `dots_x`/`dots_y` canvas
/// dots per unit), drawn as a dotted line. At most a few points per column of the chart.
fn dotted_points(
    pts: &[(f64, f64)],
    x0: f64,
    x1: f64,
    dots_x: f64,
    dots_y: f64,
) -> Vec<(f64, f64)> {
    const GAP: f64 = 3.0;
    let mut out = Vec::new();
    let (lo, hi) = (x0.min(x1), x0.max(x1));
    for w in pts.windows(2) {
        let (a, b) = (w[0], w[1]);
        // Clip to the visible x range so an off-screen neighbour costs nothing.
        let (xa, xb) = (a.0.max(lo), b.0.min(hi));
        if xb < xa || b.0 == a.0 {
            continue;
        }
        let at = |x: f64| a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0);
        let (ya, yb) = (at(xa), at(xb));
        let len = ((xb - xa) * dots_x).hypot((yb - ya) * dots_y);
        let k = (len / GAP).floor().min(4096.0) as usize;
        for i in 0..=k {
            let t = if k == 0 { 0.0 } else { i as f64 / k as f64 };
            out.push((xa + (xb - xa) * t, ya + (yb - ya) * t));
        }
    }
    if pts.len() == 1 {
        out.push(pts[0]);
    }
    out
}

/// Round tick values inside `lo..=hi`, at most about `max` of them: 1-2-2.5-5 steps, or
/// decades on a log axis spanning more than two of them.
pub fn ticks(lo: f64, hi: f64, max: usize, log: bool) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo || max == 0 {
        return Vec::new();
    }
    if log && lo > 0.0 && hi / lo > 100.0 {
        let (a, b) = (lo.log10().ceil() as i32, hi.log10().floor() as i32);
        let stride = ((b - a + 1) as usize).div_ceil(max).max(1);
        return (a..=b).step_by(stride).map(|e| 10f64.powi(e)).collect();
    }
    let raw = (hi - lo) / max as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|k| {
            let v = k as f64 * step;
            // Snap away binary noise (0.30000000000000004).
            let digits = (-step.log10().floor()).max(0.0) as i32 + 2;
            let scale = 10f64.powi(digits);
            (v * scale).round() / scale
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::ticks;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 0.0104, 3, false), vec![0.0, 0.005, 0.01]);
        assert_eq!(ticks(3.9, 10.4, 4, false), vec![4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.2, 2.8, 3, false), vec![1.0, 2.0]);
        assert_eq!(ticks(1e-4, 1.0, 5, true), vec![1e-4, 1e-3, 1e-2, 1e-1, 1.0]);
        assert!(ticks(1.0, 1.0, 3, false).is_empty());
    }
}
