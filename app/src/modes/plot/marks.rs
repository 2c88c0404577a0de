//! How data is marked and keyed on a probe figure: the marks (lines, dashes, dots, rings,
//! triangles, crosses), their legend entries, and where a legend goes so that it hides no
//! data.

use anyhow::Result;
use plotters::prelude::*;

use super::toolkit::derr;

/// How one layer of a figure over steps is drawn.
#[derive(Clone, Copy)]
pub(super) enum Mark {
    Line(u32),
    Dashed(u32),
    Dotted(u32),
    Dots(u32),
    Rings(u32),
    Triangles(u32),
    Crosses(u32),
}

/// A legend entry: its text, colour and mark.
pub(super) struct Key {
    text: String,
    color: RGBColor,
    mark: Mark,
}

pub(super) fn key(text: impl Into<String>, color: RGBColor, mark: Mark) -> Key {
    Key {
        text: text.into(),
        color,
        mark,
    }
}

/// Where to put a legend of `keys` over `pts` (axis units, within `x` × `y`) in a plot area
/// of `plot` pixels: the spot that hides no data, or else the upper right with the y range
/// raised by the legend's height. Returns the y range to draw and the spot.
pub(super) fn legend_room(
    pts: &[(f64, f64)],
    x: (f64, f64),
    y: (f64, f64),
    keys: &[Key],
    plot: (f64, f64),
) -> ((f64, f64), SeriesLabelPosition) {
    // The legend box, roughly: 15 px text (about 8 px a character) after a 30 px mark.
    let chars = keys
        .iter()
        .map(|k| k.text.chars().count())
        .max()
        .unwrap_or(0);
    let w = ((45.0 + 8.0 * chars as f64) / plot.0).min(1.0);
    let h = ((12.0 + 19.0 * keys.len() as f64) / plot.1).min(1.0);
    let norm: Vec<(f64, f64)> = pts
        .iter()
        .map(|&(px, py)| ((px - x.0) / (x.1 - x.0), (py - y.0) / (y.1 - y.0)))
        .collect();
    let (hidden, spot) = legend_spot(&norm, w, h);
    if hidden == 0 || h > 0.5 {
        return (y, spot);
    }
    let raised = y.1 + (y.1 - y.0) * h / (1.0 - h) * 1.1;
    ((y.0, raised), SeriesLabelPosition::UpperRight)
}

/// Where a legend `w` × `h` (fractions of the plot area) hides the fewest of `pts` (in 0..1
/// plot coordinates, y up): a corner, or the middle of the top or bottom edge; and how many
/// it hides there.
fn legend_spot(pts: &[(f64, f64)], w: f64, h: f64) -> (usize, SeriesLabelPosition) {
    use SeriesLabelPosition::*;
    // (position, upper edge?, horizontal place: -1 left, 0 middle, 1 right), by preference.
    let zones = [
        (UpperRight, true, 1),
        (UpperLeft, true, -1),
        (LowerRight, false, 1),
        (LowerLeft, false, -1),
        (UpperMiddle, true, 0),
        (LowerMiddle, false, 0),
    ];
    let mut best = (usize::MAX, UpperRight);
    for (pos, upper, across) in zones {
        let inside = |&(x, y): &(f64, f64)| {
            let vertical = if upper { y > 1.0 - h } else { y < h };
            let horizontal = match across {
                -1 => x < w,
                1 => x > 1.0 - w,
                _ => (x - 0.5).abs() < w / 2.0,
            };
            vertical && horizontal
        };
        let n = pts.iter().filter(|p| inside(p)).count();
        if n < best.0 {
            best = (n, pos);
        }
    }
    best
}

/// `pts` with points added along each segment (for `legend_spot`).
pub(super) fn densify(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = pts.to_vec();
    for w in pts.windows(2) {
        for k in 1..24 {
            let t = k as f64 / 24.0;
            out.push((
                w[0].0 + t * (w[1].0 - w[0].0),
                w[0].1 + t * (w[1].1 - w[0].1),
            ));
        }
    }
    out
}

/// Draws `pts` (already in axis units) with `mark`.
pub(super) fn draw_mark<'c, DB, X, Y>(
    chart: &mut ChartContext<'c, DB, Cartesian2d<X, Y>>,
    pts: Vec<(f64, f64)>,
    color: RGBColor,
    alpha: f64,
    mark: Mark,
) -> Result<()>
where
    DB: DrawingBackend + 'c,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let c = color.mix(alpha);
    match mark {
        Mark::Line(w) => chart
            .draw_series(LineSeries::new(pts, c.stroke_width(w)))
            .map(|_| ()),
        Mark::Dashed(w) => chart
            .draw_series(DashedLineSeries::new(pts, 9, 6, c.stroke_width(w)))
            .map(|_| ()),
        Mark::Dotted(w) => chart
            .draw_series(DashedLineSeries::new(pts, 2, 5, c.stroke_width(w)))
            .map(|_| ()),
        Mark::Crosses(s) => chart
            .draw_series(pts.into_iter().map(|p| Cross::new(p, s, c.stroke_width(3))))
            .map(|_| ()),
        Mark::Dots(s) => chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, s, c.filled())))
            .map(|_| ()),
        Mark::Rings(s) => chart
            .draw_series(
                pts.into_iter()
                    .map(|p| Circle::new(p, s, c.stroke_width(1))),
            )
            .map(|_| ()),
        Mark::Triangles(s) => chart
            .draw_series(
                pts.into_iter()
                    .map(|p| TriangleMarker::new(p, s, c.filled())),
            )
            .map(|_| ()),
    }
    .map_err(derr)
}

/// Adds legend entries (labelled empty series) for `keys`.
pub(super) fn draw_keys<'c, DB, X, Y>(
    chart: &mut ChartContext<'c, DB, Cartesian2d<X, Y>>,
    keys: &[Key],
) -> Result<()>
where
    DB: DrawingBackend + 'c,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for k in keys {
        let c = k.color;
        let anno = chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())
            .map_err(derr)?;
        anno.label(k.text.clone());
        match k.mark {
            Mark::Line(w) => {
                anno.legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], c.stroke_width(w))
                });
            }
            Mark::Dashed(w) => {
                anno.legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new([(0, 0), (7, 0)], c.stroke_width(w))
                        + PathElement::new([(12, 0), (20, 0)], c.stroke_width(w))
                });
            }
            Mark::Dotted(w) => {
                anno.legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new([(0, 0), (2, 0)], c.stroke_width(w))
                        + PathElement::new([(6, 0), (8, 0)], c.stroke_width(w))
                        + PathElement::new([(12, 0), (14, 0)], c.stroke_width(w))
                        + PathElement::new([(18, 0), (20, 0)], c.stroke_width(w))
                });
            }
            Mark::Crosses(s) => {
                anno.legend(move |(x, y)| Cross::new((x + 10, y), s, c.stroke_width(3)));
            }
            Mark::Dots(s) => {
                anno.legend(move |(x, y)| Circle::new((x + 10, y), s, c.filled()));
            }
            Mark::Rings(s) => {
                anno.legend(move |(x, y)| Circle::new((x + 10, y), s, c.stroke_width(1)));
            }
            Mark::Triangles(s) => {
                anno.legend(move |(x, y)| TriangleMarker::new((x + 10, y), s, c.filled()));
            }
        }
    }
    Ok(())
}

pub(super) fn draw_legend<'c, DB, X, Y>(
    chart: &mut ChartContext<'c, DB, Cartesian2d<X, Y>>,
    pos: SeriesLabelPosition,
) -> Result<()>
where
    DB: DrawingBackend + 'c,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.88))
        .border_style(RGBColor(180, 180, 180))
        .position(pos)
        .draw()
        .map_err(derr)
}
