//! The 1-D loss slices figure: one run's slice probe as two panels, the loss along a random
//! direction and along the last update, on one y range, each with the current parameters
//! and the lowest sampled loss marked.

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use wsdscope_sessions::vocabulary::slice;
use wsdscope_sessions::{ProbeKind, Session};

use super::marks::{Key, Mark, densify, draw_keys, draw_legend, draw_mark, key, legend_room};
use super::probe_data::{one_probe, run_name, series};
use super::toolkit::{GREY, PALETTE, derr, draw_title, figure_title, number, padded_range};
use crate::cli::PlotArgs;

pub(super) struct SliceFigure {
    title: String,
    random: (Vec<f64>, Vec<f64>),
    update: Option<(Vec<f64>, Vec<f64>)>,
    update_norm: Option<f64>,
}

pub(super) fn slice(a: &PlotArgs, session: &Session) -> Result<SliceFigure> {
    let (info, p) = one_probe(a, session, ProbeKind::Slice.name())?;
    let random = (
        series(&p, slice::ALPHA)?.to_vec(),
        series(&p, slice::LOSS_RANDOM)?.to_vec(),
    );
    let update = match (p.series.get(slice::BETA), p.series.get(slice::LOSS_UPDATE)) {
        (Some(b), Some(l)) => Some((b.clone(), l.clone())),
        _ => None,
    };
    Ok(SliceFigure {
        title: figure_title(
            &format!("1-D loss slices, {} at step {}", run_name(&info), p.step),
            &a.file,
        ),
        random,
        update,
        update_norm: p.scalars.get(slice::UPDATE_NORM).copied(),
    })
}

/// One panel of the slice figure: its points, x range and legend.
struct SlicePanel {
    caption: &'static str,
    x_desc: String,
    color: RGBColor,
    pts: Vec<(f64, f64)>,
    x: (f64, f64),
    /// The point nearest x = 0 (the current parameters) and the lowest point.
    here: (f64, f64),
    low: (f64, f64),
    keys: Vec<Key>,
}

impl SlicePanel {
    fn new(
        caption: &'static str,
        x_desc: String,
        color: RGBColor,
        (xs, ls): &(Vec<f64>, Vec<f64>),
    ) -> Option<Self> {
        let pts: Vec<(f64, f64)> = xs
            .iter()
            .zip(ls)
            .filter(|(x, l)| x.is_finite() && l.is_finite())
            .map(|(x, l)| (*x, *l))
            .collect();
        let x = padded_range(pts.iter().map(|p| p.0), false)?;
        let here = *pts.iter().min_by(|a, b| a.0.abs().total_cmp(&b.0.abs()))?;
        let low = *pts.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
        let keys = vec![
            key("loss along the direction", color, Mark::Dots(4)),
            key(
                format!("current parameters (x = 0), loss {}", number(here.1)),
                BLACK,
                Mark::Rings(7),
            ),
            key(
                format!(
                    "lowest sampled loss {} at x = {}",
                    number(low.1),
                    number(low.0)
                ),
                SLICE_LOW,
                Mark::Crosses(6),
            ),
        ];
        Some(SlicePanel {
            caption,
            x_desc,
            color,
            pts,
            x,
            here,
            low,
            keys,
        })
    }
}

/// The marker of a slice's lowest point.
const SLICE_LOW: RGBColor = RGBColor(230, 50, 50);
/// The plot area of one slice panel in pixels, roughly.
const SLICE_PLOT: (f64, f64) = (526.0, 560.0);

impl SliceFigure {
    pub(super) fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let update_desc = match self.update_norm {
            Some(n) => format!("multiples of the last update (‖Δθ‖ = {})", number(n)),
            None => "multiples of the last update".to_string(),
        };
        let panels = [
            SlicePanel::new(
                "random direction",
                "α along a random filter-normalised direction".to_string(),
                PALETTE[0],
                &self.random,
            ),
            self.update
                .as_ref()
                .and_then(|u| SlicePanel::new("along the last update", update_desc, PALETTE[1], u)),
        ];
        let losses = panels
            .iter()
            .flatten()
            .flat_map(|p| p.pts.iter().map(|q| q.1));
        let Some((y0, mut y1)) = padded_range(losses, false) else {
            bail!("the slice probe has no finite loss to plot");
        };
        // One y range for both panels, with room for either legend.
        for p in panels.iter().flatten() {
            let ((_, top), _) = legend_room(&densify(&p.pts), p.x, (y0, y1), &p.keys, SLICE_PLOT);
            y1 = y1.max(top);
        }
        root.fill(&WHITE).map_err(derr)?;
        draw_title(root, &self.title)?;
        let body = root.margin(50, 0, 0, 0);
        let areas = body.split_evenly((1, 2));
        for (area, panel) in areas.iter().zip(&panels) {
            let Some(p) = panel else {
                let style = TextStyle::from(("sans-serif", 17).into_font())
                    .color(&GREY)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                let (w, h) = area.dim_in_pixel();
                area.draw(&Text::new(
                    "no update direction at this step (a run's first step has none)",
                    (w as i32 / 2, h as i32 / 2),
                    style,
                ))
                .map_err(derr)?;
                continue;
            };
            let mut chart = ChartBuilder::on(area)
                .caption(p.caption, ("sans-serif", 19))
                .margin(18)
                .x_label_area_size(48)
                .y_label_area_size(78)
                .build_cartesian_2d(p.x.0..p.x.1, y0..y1)
                .map_err(derr)?;
            chart
                .configure_mesh()
                .x_desc(p.x_desc.as_str())
                .y_desc("loss")
                .axis_desc_style(("sans-serif", 17))
                .label_style(("sans-serif", 15))
                .light_line_style(RGBColor(235, 235, 235))
                .x_label_formatter(&|v: &f64| number(*v))
                .y_label_formatter(&|v: &f64| number(*v))
                .draw()
                .map_err(derr)?;
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, y0), (0.0, y1)],
                    7,
                    5,
                    GREY.stroke_width(1),
                ))
                .map_err(derr)?;
            draw_mark(&mut chart, p.pts.clone(), p.color, 1.0, Mark::Line(2))?;
            draw_mark(&mut chart, p.pts.clone(), p.color, 1.0, Mark::Dots(4))?;
            chart
                .draw_series([Circle::new(p.here, 9, BLACK.stroke_width(2))])
                .map_err(derr)?;
            draw_mark(&mut chart, vec![p.low], SLICE_LOW, 1.0, Mark::Crosses(8))?;
            draw_keys(&mut chart, &p.keys)?;
            let (_, spot) = legend_room(&densify(&p.pts), p.x, (y0, y1), &p.keys, SLICE_PLOT);
            draw_legend(&mut chart, spot)?;
        }
        Ok(())
    }
}
