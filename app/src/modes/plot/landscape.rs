//! The 2-D loss landscape figure: one run's landscape probe as a viridis heatmap with
//! iso-loss lines, the current parameters and the grid minimum marked, and a colour bar.

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use wsdscope_sessions::vocabulary::landscape;
use wsdscope_sessions::{ProbeKind, Session};

use super::probe_data::{one_probe, run_name, series};
use super::toolkit::{GREY, INK, derr, draw_title, figure_title, number};
use crate::cli::PlotArgs;
use crate::palette::VIRIDIS;

// ---------------------------------------------------------------------------------------
// The colour map.

/// The viridis colour of `t` in [0, 1] (clamped; NaN maps to 0): dark violet to yellow, with
/// lightness rising monotonically, so the order of values reads the same in grey.
pub(crate) fn viridis(t: f64) -> RGBColor {
    let (r, g, b) = viridis_exact(t);
    RGBColor(r.round() as u8, g.round() as u8, b.round() as u8)
}

/// [`viridis`] before rounding to 8-bit channels (0..255 each).
fn viridis_exact(t: f64) -> (f64, f64, f64) {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let pos = t * (VIRIDIS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |p: u8, q: u8| p as f64 + f * (q as f64 - p as f64);
    (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

// ---------------------------------------------------------------------------------------
// The 2-D landscape.

pub(super) struct LandscapeFigure {
    title: String,
    run: String,
    step: u64,
    x: Vec<f64>,
    y: Vec<f64>,
    /// Row j holds the losses at y[j].
    loss: Vec<f64>,
}

pub(super) fn landscape(a: &PlotArgs, session: &Session) -> Result<LandscapeFigure> {
    let (info, p) = one_probe(a, session, ProbeKind::Landscape.name())?;
    let (x, y, loss) = (
        series(&p, landscape::X)?,
        series(&p, landscape::Y)?,
        series(&p, landscape::LOSS)?,
    );
    if x.is_empty() || y.is_empty() || loss.len() != x.len() * y.len() {
        bail!(
            "the landscape probe of run {} at step {} is malformed: {} losses for a {}×{} grid",
            p.run,
            p.step,
            loss.len(),
            x.len(),
            y.len()
        );
    }
    if !loss.iter().any(|l| l.is_finite()) {
        bail!(
            "the landscape probe of run {} at step {} has no finite loss",
            p.run,
            p.step
        );
    }
    Ok(LandscapeFigure {
        title: figure_title("2-D loss landscape", &a.file),
        run: run_name(&info),
        step: p.step,
        x: x.to_vec(),
        y: y.to_vec(),
        loss: loss.to_vec(),
    })
}

/// Cell edges around grid points `c` (halfway between neighbours, mirrored at the ends).
fn edges(c: &[f64]) -> Vec<f64> {
    if c.len() == 1 {
        return vec![c[0] - 0.5, c[0] + 0.5];
    }
    let mut e = Vec::with_capacity(c.len() + 1);
    e.push(c[0] - (c[1] - c[0]) / 2.0);
    for w in c.windows(2) {
        e.push((w[0] + w[1]) / 2.0);
    }
    let n = c.len();
    e.push(c[n - 1] + (c[n - 1] - c[n - 2]) / 2.0);
    e
}

/// Segments where the surface `z` over the grid (row j at y[j], column i at x[i]), linear
/// along cell edges, crosses `level` (marching squares; saddles split by the cell mean).
pub(crate) fn iso_segments(x: &[f64], y: &[f64], z: &[f64], level: f64) -> Vec<[(f64, f64); 2]> {
    let nx = x.len();
    let mut out = Vec::new();
    for j in 0..y.len().saturating_sub(1) {
        for i in 0..nx.saturating_sub(1) {
            // Corners counter-clockwise from the lower left.
            let c = [
                (x[i], y[j], z[j * nx + i]),
                (x[i + 1], y[j], z[j * nx + i + 1]),
                (x[i + 1], y[j + 1], z[(j + 1) * nx + i + 1]),
                (x[i], y[j + 1], z[(j + 1) * nx + i]),
            ];
            if c.iter().any(|p| !p.2.is_finite()) {
                continue;
            }
            let mut cross = Vec::with_capacity(4);
            for e in 0..4 {
                let (p, q) = (c[e], c[(e + 1) % 4]);
                if (p.2 < level) != (q.2 < level) {
                    let t = (level - p.2) / (q.2 - p.2);
                    cross.push((p.0 + t * (q.0 - p.0), p.1 + t * (q.1 - p.1)));
                }
            }
            match cross.len() {
                2 => out.push([cross[0], cross[1]]),
                4 => {
                    let mean = c.iter().map(|p| p.2).sum::<f64>() / 4.0;
                    if (mean < level) == (c[0].2 < level) {
                        out.push([cross[0], cross[1]]);
                        out.push([cross[2], cross[3]]);
                    } else {
                        out.push([cross[3], cross[0]]);
                        out.push([cross[1], cross[2]]);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

impl LandscapeFigure {
    pub(super) fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let nx = self.x.len();
        let finite = || self.loss.iter().copied().filter(|l| l.is_finite());
        let lo = finite().fold(f64::INFINITY, f64::min);
        let hi = finite().fold(f64::NEG_INFINITY, f64::max);
        let span = (hi - lo).max(1e-12);
        let norm = |l: f64| (l - lo) / span;
        let (xe, ye) = (edges(&self.x), edges(&self.y));
        let (xr, yr) = (xe[0]..xe[xe.len() - 1], ye[0]..ye[ye.len() - 1]);

        root.fill(&WHITE).map_err(derr)?;
        draw_title(root, &self.title)?;
        let (map_area, rest) = root.split_horizontally(820);
        let (bar_area, info_area) = rest.split_horizontally(150);

        let mut chart = ChartBuilder::on(&map_area)
            .margin(18)
            .margin_top(66)
            .x_label_area_size(48)
            .y_label_area_size(78)
            .build_cartesian_2d(xr, yr)
            .map_err(derr)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("direction 1 (filter-normalised)")
            .y_desc("direction 2 (filter-normalised)")
            .axis_desc_style(("sans-serif", 18))
            .label_style(("sans-serif", 15))
            .x_label_formatter(&|v: &f64| number(*v))
            .y_label_formatter(&|v: &f64| number(*v))
            .draw()
            .map_err(derr)?;
        let mut cells = Vec::with_capacity(self.loss.len());
        for j in 0..self.y.len() {
            for i in 0..nx {
                let l = self.loss[j * nx + i];
                let fill = if l.is_finite() {
                    viridis(norm(l))
                } else {
                    RGBColor(200, 200, 200)
                };
                cells.push(Rectangle::new(
                    [(xe[i], ye[j]), (xe[i + 1], ye[j + 1])],
                    fill.filled(),
                ));
            }
        }
        chart.draw_series(cells).map_err(derr)?;
        // Iso-lines at seven evenly spaced losses.
        for k in 1..8 {
            let level = lo + span * k as f64 / 8.0;
            let segs = iso_segments(&self.x, &self.y, &self.loss, level);
            chart
                .draw_series(
                    segs.into_iter()
                        .map(|s| PathElement::new(s, WHITE.mix(0.55).stroke_width(1))),
                )
                .map_err(derr)?;
        }
        // The current parameters (the centre) and the grid minimum.
        let (imin, _) = self
            .loss
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .fold(
                (0, f64::INFINITY),
                |b, (i, &l)| if l < b.1 { (i, l) } else { b },
            );
        let min_at = (self.x[imin % nx], self.y[imin / nx]);
        let nearest = |c: &[f64]| {
            (0..c.len())
                .min_by(|&a, &b| c[a].abs().total_cmp(&c[b].abs()))
                .unwrap_or(0)
        };
        let centre_loss = self.loss[nearest(&self.y) * nx + nearest(&self.x)];
        let red = RGBColor(230, 50, 50);
        chart
            .draw_series([
                Circle::new(min_at, 9, WHITE.stroke_width(3)),
                Circle::new(min_at, 7, red.filled()),
            ])
            .map_err(derr)?;
        chart
            .draw_series([
                Cross::new((0.0, 0.0), 9, BLACK.stroke_width(5)),
                Cross::new((0.0, 0.0), 9, WHITE.stroke_width(2)),
            ])
            .map_err(derr)?;

        // The colour bar.
        let mut bar = ChartBuilder::on(&bar_area)
            .margin_top(66)
            .margin_bottom(18 + 48)
            .margin_left(10)
            .margin_right(4)
            .right_y_label_area_size(70)
            .build_cartesian_2d(0.0..1.0, lo..lo + span)
            .map_err(derr)?;
        bar.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc("loss")
            .axis_desc_style(("sans-serif", 18))
            .label_style(("sans-serif", 15))
            .y_labels(8)
            .y_label_formatter(&|v: &f64| number(*v))
            .draw()
            .map_err(derr)?;
        let n = 128;
        bar.draw_series((0..n).map(|k| {
            let (a, b) = (k as f64 / n as f64, (k + 1) as f64 / n as f64);
            Rectangle::new(
                [(0.0, lo + a * span), (1.0, lo + b * span)],
                viridis((a + b) / 2.0).filled(),
            )
        }))
        .map_err(derr)?;

        // What the figure shows, and its markers, beside the bar.
        let text = |s: &str, (x, y): (i32, i32), size: u32, color: RGBColor| {
            let style = TextStyle::from(("sans-serif", size).into_font())
                .color(&color)
                .pos(Pos::new(HPos::Left, VPos::Center));
            info_area.draw(&Text::new(s.to_string(), (x, y), style))
        };
        let mut y = 90;
        for (s, size) in [
            (self.run.clone(), 17),
            (format!("step {}", self.step), 17),
            (format!("{} × {} grid", nx, self.y.len()), 15),
        ] {
            text(&s, (8, y), size, INK).map_err(derr)?;
            y += 26;
        }
        y += 20;
        info_area
            .draw(&Cross::new((18, y), 9, BLACK.stroke_width(5)))
            .map_err(derr)?;
        info_area
            .draw(&Cross::new((18, y), 9, WHITE.stroke_width(2)))
            .map_err(derr)?;
        text("current parameters", (36, y), 15, INK).map_err(derr)?;
        text(
            &format!("loss {}", number(centre_loss)),
            (36, y + 20),
            14,
            GREY,
        )
        .map_err(derr)?;
        y += 56;
        info_area
            .draw(&Circle::new((18, y), 7, red.filled()))
            .map_err(derr)?;
        text("grid minimum", (36, y), 15, INK).map_err(derr)?;
        text(&format!("loss {}", number(lo)), (36, y + 20), 14, GREY).map_err(derr)?;
        text(
            &format!("at ({}, {})", number(min_at.0), number(min_at.1)),
            (36, y + 40),
            14,
            GREY,
        )
        .map_err(derr)?;
        y += 76;
        info_area
            .draw(&PathElement::new(
                [(8, y), (28, y)],
                RGBColor(150, 150, 150).stroke_width(1),
            ))
            .map_err(derr)?;
        text("iso-loss lines", (36, y), 15, INK).map_err(derr)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative luminance (WCAG) of an sRGB colour with channels in 0..255.
    fn luminance((r, g, b): (f64, f64, f64)) -> f64 {
        let lin = |u: f64| {
            let v = u / 255.0;
            if v <= 0.04045 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    }

    #[test]
    fn viridis_runs_from_violet_to_yellow_with_rising_luminance() {
        assert_eq!(viridis(0.0), RGBColor(0x44, 0x01, 0x54));
        assert_eq!(viridis(1.0), RGBColor(0xfd, 0xe7, 0x25));
        assert_eq!(viridis(-3.0), viridis(0.0), "clamped below");
        assert_eq!(viridis(7.0), viridis(1.0), "clamped above");
        assert_eq!(viridis(f64::NAN), viridis(0.0));
        // Luminance rises strictly along the map …
        let lum: Vec<f64> = (0..=1024)
            .map(|k| luminance(viridis_exact(k as f64 / 1024.0)))
            .collect();
        for (k, w) in lum.windows(2).enumerate() {
            assert!(
                w[1] > w[0],
                "luminance falls at {k}/1024: {} → {}",
                w[0],
                w[1]
            );
        }
        assert!(lum[1024] > 10.0 * lum[0], "{} vs {}", lum[1024], lum[0]);
        // … and still over the 8-bit colours drawn, at the resolution of the colour bar.
        let drawn: Vec<f64> = (0..=64)
            .map(|k| {
                let c = viridis(k as f64 / 64.0);
                luminance((c.0 as f64, c.1 as f64, c.2 as f64))
            })
            .collect();
        assert!(drawn.windows(2).all(|w| w[1] > w[0]), "{drawn:?}");
    }

    #[test]
    fn iso_lines_lie_on_the_level() {
        // A plane z = x + 2y: linear along edges, so every crossing is exact.
        let x = [-1.0, -0.5, 0.0, 0.5, 1.0];
        let y = [-1.0, 0.0, 1.0];
        let z: Vec<f64> = y
            .iter()
            .flat_map(|yy| x.iter().map(move |xx| xx + 2.0 * yy))
            .collect();
        let segs = iso_segments(&x, &y, &z, 0.3);
        assert!(!segs.is_empty());
        for s in &segs {
            for (px, py) in s {
                assert!((px + 2.0 * py - 0.3).abs() < 1e-12, "{px} {py}");
            }
        }
        assert!(iso_segments(&x, &y, &z, 99.0).is_empty());
    }
}
