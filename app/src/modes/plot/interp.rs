//! The parent → branch interpolation figure: the loss along the straight line from a
//! parent's parameters at the fork to the branch's at its end, one curve per interpolation.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use wsdscope_sessions::vocabulary::interp;
use wsdscope_sessions::{ProbeKind, Session};

use super::marks::{Key, Mark, densify, draw_keys, draw_legend, draw_mark, key, legend_room};
use super::probe_data::{none_recorded, results_of, series};
use super::toolkit::{GREY, INK, color_of, derr, draw_title, figure_title, number, padded_range};
use crate::cli::PlotArgs;

struct InterpCurve {
    label: String,
    color: RGBColor,
    pts: Vec<(f64, f64)>,
}

pub(super) struct InterpFigure {
    title: String,
    curves: Vec<InterpCurve>,
}

pub(super) fn interp(a: &PlotArgs, session: &Session) -> Result<InterpFigure> {
    let ids: Option<Vec<u32>> = match &a.runs {
        Some(ids) => {
            for &id in ids {
                session.run(id)?;
            }
            Some(ids.clone())
        }
        None => None,
    };
    let all = results_of(session, ProbeKind::Interp.name())?;
    if all.is_empty() {
        return Err(none_recorded(session, ProbeKind::Interp.name()));
    }
    let mut curves = Vec::new();
    for p in &all {
        let s = |k: &str| p.scalars.get(k).copied().filter(|v| v.is_finite());
        let from = s(interp::FROM_RUN).map(|v| v as u32);
        let to = s(interp::TO_RUN).map_or(p.run, |v| v as u32);
        if let Some(ids) = &ids
            && !ids.contains(&to)
            && !from.is_some_and(|f| ids.contains(&f))
        {
            continue;
        }
        let at = |step: Option<f64>| step.map(|v| format!(" @{}", v as u64)).unwrap_or_default();
        let label = format!(
            "run {}{} → run {to}{}",
            from.map_or("?".to_string(), |f| f.to_string()),
            at(s(interp::FROM_STEP)),
            at(s(interp::TO_STEP))
        );
        let pts: Vec<(f64, f64)> = series(p, interp::ALPHA)?
            .iter()
            .zip(series(p, interp::LOSS)?)
            .filter(|(x, l)| x.is_finite() && l.is_finite())
            .map(|(x, l)| (*x, *l))
            .collect();
        curves.push(InterpCurve {
            label,
            color: color_of(to),
            pts,
        });
    }
    if curves.is_empty() {
        let runs: BTreeSet<String> = all
            .iter()
            .map(|p| {
                p.scalars
                    .get(interp::TO_RUN)
                    .map_or(p.run, |v| *v as u32)
                    .to_string()
            })
            .collect();
        bail!(
            "no interpolation involves the runs chosen with --runs; branches interpolated: {}",
            runs.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(InterpFigure {
        title: figure_title("parent → branch interpolation", &a.file),
        curves,
    })
}

impl InterpFigure {
    pub(super) fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let all = || self.curves.iter().flat_map(|c| c.pts.iter());
        let Some((y0, y1)) = padded_range(all().map(|p| p.1), false) else {
            bail!("the interpolation probes have no finite loss to plot");
        };
        let (x0, x1) =
            padded_range(all().map(|p| p.0).chain([0.0, 1.0]), false).unwrap_or((-0.25, 1.25));
        let keys: Vec<Key> = self
            .curves
            .iter()
            .map(|c| key(c.label.clone(), c.color, Mark::Line(2)))
            .collect();
        let seen: Vec<(f64, f64)> = self.curves.iter().flat_map(|c| densify(&c.pts)).collect();
        let ((y0, y1), spot) = legend_room(&seen, (x0, x1), (y0, y1), &keys, (1166.0, 588.0));
        root.fill(&WHITE).map_err(derr)?;
        draw_title(root, &self.title)?;
        let mut chart = ChartBuilder::on(root)
            .margin(18)
            .margin_top(66)
            .x_label_area_size(48)
            .y_label_area_size(78)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(derr)?;
        chart
            .configure_mesh()
            .x_desc("α: 0 = parent, 1 = branch")
            .y_desc("loss at (1 − α)·θ_parent + α·θ_branch")
            .axis_desc_style(("sans-serif", 18))
            .label_style(("sans-serif", 15))
            .light_line_style(RGBColor(235, 235, 235))
            .x_label_formatter(&|v: &f64| number(*v))
            .y_label_formatter(&|v: &f64| number(*v))
            .draw()
            .map_err(derr)?;
        for (x, label) in [(0.0, "parent (α = 0)"), (1.0, "branch (α = 1)")] {
            chart
                .draw_series(DashedLineSeries::new(
                    [(x, y0), (x, y1)],
                    7,
                    5,
                    INK.stroke_width(1),
                ))
                .map_err(derr)?;
            let (px, top) = chart.backend_coord(&(x, y1));
            let style = TextStyle::from(("sans-serif", 15).into_font())
                .color(&GREY)
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            root.draw(&Text::new(label, (px, top - 4), style))
                .map_err(derr)?;
        }
        for c in &self.curves {
            draw_mark(&mut chart, c.pts.clone(), c.color, 1.0, Mark::Line(2))?;
            draw_mark(&mut chart, c.pts.clone(), c.color, 1.0, Mark::Dots(3))?;
        }
        draw_keys(&mut chart, &keys)?;
        draw_legend(&mut chart, spot)?;
        Ok(())
    }
}
