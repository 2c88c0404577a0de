//! The pieces every `wsdscope plot` figure is made of: the figure size, the run palette and
//! the ink for explanations, the bundled font, titles and notes, round-tick axes and padded
//! ranges, the shaded warmup/stable/decay bands, tick labels, and the check that a figure
//! was written. It draws no figure itself.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};
use wsdscope_sessions::PhaseBounds;

/// The size of every figure, in pixels.
pub(crate) const SIZE: (u32, u32) = (1280, 720);

/// Line colours of runs 0, 1, 2, … (trunk first).
pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Phase band fills: warmup, stable, decay.
pub(crate) const BANDS: [(RGBColor, &str); 3] = [
    (RGBColor(255, 236, 204), "warmup"),
    (RGBColor(232, 245, 233), "stable"),
    (RGBColor(227, 236, 250), "decay"),
];

/// Text and markers that explain a figure rather than belong to one run.
pub(super) const INK: RGBColor = RGBColor(60, 60, 60);
pub(super) const GREY: RGBColor = RGBColor(110, 110, 110);

pub(super) fn color_of(id: u32) -> RGBColor {
    PALETTE[id as usize % PALETTE.len()]
}

pub(super) fn derr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the figure failed: {e:?}")
}

/// Registers the bundled DejaVu Sans as "sans-serif".
pub(crate) fn load_font() -> Result<()> {
    register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow::anyhow!("the bundled font could not be loaded"))
}

/// The title of a figure of `file`: "WHAT — FILE NAME".
pub(crate) fn figure_title(what: &str, file: &Path) -> String {
    format!(
        "{what} — {}",
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

pub(crate) fn check_written(p: &Path) -> Result<()> {
    let m = std::fs::metadata(p)
        .with_context(|| format!("--out {}: the figure was not written", p.display()))?;
    if m.len() == 0 {
        bail!("--out {}: the figure is empty", p.display());
    }
    Ok(())
}

pub(super) fn draw_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (w, _) = root.dim_in_pixel();
    let style =
        TextStyle::from(("sans-serif", 26).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(title, (w as i32 / 2, 10), style))
        .map_err(derr)
}

/// A short note at the bottom left of the figure.
pub(super) fn draw_note<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, note: &str) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (_, h) = root.dim_in_pixel();
    let style = TextStyle::from(("sans-serif", 14).into_font())
        .color(&GREY)
        .pos(Pos::new(HPos::Left, VPos::Bottom));
    root.draw(&Text::new(note, (10, h as i32 - 6), style))
        .map_err(derr)
}

/// A linear axis with caller-chosen ticks (used for log10 units with round-value ticks).
#[derive(Clone)]
pub(crate) struct TickedAxis {
    pub(crate) lo: f64,
    pub(crate) hi: f64,
    pub(crate) ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Round values between `lo` and `hi` for a log axis: every mantissa 1–9 when the range is
/// under two decades, 1, 2 and 5 under five, powers of ten beyond.
pub(crate) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = (hi / lo).log10();
    let mantissas: &[f64] = if decades < 2.0 {
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    } else if decades < 5.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let mut out = Vec::new();
    for d in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
        for m in mantissas {
            let v = m * 10f64.powi(d);
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
    }
    out
}

/// Round tick values between `lo` and `hi`, about `n` of them (steps of 1, 2 or 5 × 10^k).
pub(crate) fn linear_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if lo.is_nan() || hi.is_nan() || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let e = raw.log10().floor() as i32;
    // k·m·10^e, dividing by an exact power of ten for e < 0 so 0.6 comes out as 0.6.
    let at = |units: f64| {
        if e < 0 {
            units / 10f64.powi(-e)
        } else {
            units * 10f64.powi(e)
        }
    };
    let m = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|m| at(*m) >= raw)
        .unwrap_or(10.0);
    let step = at(m);
    let mut out = Vec::new();
    let mut k = (lo / step).ceil();
    while k * step <= hi + 1e-9 * step {
        out.push(at(k * m));
        k += 1.0;
    }
    out
}

/// A y axis from `lo` to `hi` in axis units (log10 of the value on a log axis) with round
/// ticks.
pub(super) fn y_axis(lo: f64, hi: f64, log: bool) -> TickedAxis {
    if log {
        TickedAxis {
            lo,
            hi,
            ticks: log_ticks(10f64.powf(lo), 10f64.powf(hi))
                .into_iter()
                .map(f64::log10)
                .collect(),
        }
    } else {
        TickedAxis {
            lo,
            hi,
            ticks: linear_ticks(lo, hi, 8),
        }
    }
}

/// The y range of `values` (finite, and > 0 on a log axis) padded by a few percent.
pub(super) fn padded_range(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    Some(if log {
        let f = (hi / lo).max(1.0 + 1e-9).powf(0.05);
        let f = f.max(1.05);
        (lo / f, hi * f)
    } else {
        let (lo, hi) = if hi - lo < 1e-12 * hi.abs().max(1.0) {
            (lo - 0.5 * lo.abs().max(1.0), hi + 0.5 * hi.abs().max(1.0))
        } else {
            (lo, hi)
        };
        let pad = 0.05 * (hi - lo);
        (lo - pad, hi + pad)
    })
}

/// Shades the warmup, stable and decay phases of `p` behind a chart whose x axis is steps
/// (from `x0`) and names them above the plot; `y` is the y range in axis units.
pub(crate) fn draw_phase_bands<'c, DB, Y>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut ChartContext<'c, DB, Cartesian2d<RangedCoordf64, Y>>,
    p: PhaseBounds,
    x0: f64,
    (y0, y1): (f64, f64),
) -> Result<()>
where
    DB: DrawingBackend + 'c,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64>,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| {
        anyhow::anyhow!("drawing the figure failed: {e:?}")
    };
    let bounds = [
        (0.0, p.warmup_end as f64),
        (p.warmup_end as f64, p.decay_start as f64),
        (p.decay_start as f64, p.total as f64),
    ];
    for ((lo, hi), (color, label)) in bounds.into_iter().zip(BANDS) {
        if hi > lo {
            let lo = lo.max(x0);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(lo, y0), (hi, y1)],
                    color.filled(),
                )))
                .map_err(err)?;
            let (px, top) = chart.backend_coord(&((lo + hi) / 2.0, y1));
            let style = TextStyle::from(("sans-serif", 15).into_font())
                .color(&RGBColor(110, 110, 110))
                .pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Bottom,
                ));
            root.draw(&Text::new(label, (px, top - 4), style))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// A tick label: short, without trailing zeros, scientific when very large or small.
/// Values below 1e-12 in size are taken for zero (tick positions carry rounding error).
pub(crate) fn number(y: f64) -> String {
    let y = if y.abs() < 1e-12 { 0.0 } else { y };
    if y != 0.0 && (y.abs() >= 1e4 || y.abs() < 1e-3) {
        return format!("{y:.1e}");
    }
    let s = format!("{y:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
