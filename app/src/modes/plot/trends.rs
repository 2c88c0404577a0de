//! Probe figures over steps: sharpness against the 38/η stability line, the gradient noise
//! scale against the batch, and any probe scalar (`--metric probe.<probe>.<scalar>`), every
//! selected run overlaid on the trunk's phases with fork points marked.

use anyhow::{Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use wsdscope_sessions::vocabulary::{Drawing, noise, sharpness};
use wsdscope_sessions::{PhaseBounds, ProbeKind, RunInfo, Session};

use super::marks::{Key, Mark, densify, draw_keys, draw_legend, draw_mark, key, legend_room};
use super::probe_data::{none_recorded, points, recorded_kinds, runs_with, selected_runs};
use super::toolkit::{
    GREY, INK, color_of, derr, draw_note, draw_phase_bands, draw_title, figure_title, number,
    padded_range, y_axis,
};
use crate::cli::PlotArgs;

struct Layer {
    pts: Vec<(f64, f64)>,
    color: RGBColor,
    alpha: f64,
    mark: Mark,
}

impl Layer {
    fn new(pts: Vec<(f64, f64)>, color: RGBColor, alpha: f64, mark: Mark) -> Self {
        Layer {
            pts,
            color,
            alpha,
            mark,
        }
    }
}

/// A figure over steps with the trunk's phases shaded and fork points marked.
pub(super) struct StepsFigure {
    title: String,
    y_desc: String,
    log_y: bool,
    phases: PhaseBounds,
    x: (f64, f64),
    forks: Vec<(f64, RGBColor)>,
    layers: Vec<Layer>,
    keys: Vec<Key>,
}

/// `(x, y)` points as a staircase: each value holds until the next point's x, the last one
/// until `end` (when that is further right).
fn staircase(pts: &[(f64, f64)], end: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(2 * pts.len());
    for (i, &(x, v)) in pts.iter().enumerate() {
        out.push((x, v));
        let next = pts.get(i + 1).map_or(end.max(x), |p| p.0);
        out.push((next, v));
    }
    out
}

/// Where a run's last staircase step ends: one typical probe interval after its last probe,
/// but not past the run's last step.
fn stair_end(pts: &[(f64, f64)], run: &RunInfo) -> f64 {
    let last = pts.last().map_or(0.0, |p| p.0);
    let gap = if pts.len() >= 2 {
        (last - pts[0].0) / (pts.len() - 1) as f64
    } else {
        f64::INFINITY
    };
    let run_end = run.last_step.map_or(last, |s| s as f64);
    (last + gap).min(run_end).max(last)
}

/// The shared parts of the figures over steps: x range, fork markers, phases.
fn steps_frame(
    session: &Session,
    runs: &[RunInfo],
    title: String,
    y_desc: String,
    log_y: bool,
) -> StepsFigure {
    let phases = session.runs()[0].phases;
    let last = runs.iter().filter_map(|r| r.last_step).max().unwrap_or(1);
    StepsFigure {
        title,
        y_desc,
        log_y,
        phases,
        x: (0.0, last.max(phases.total).max(1) as f64),
        forks: runs
            .iter()
            .filter_map(|r| Some((r.fork_step? as f64, color_of(r.id))))
            .collect(),
        layers: Vec::new(),
        keys: Vec::new(),
    }
}

/// The y-axis label its declaration gives a probe kind drawn over steps.
fn y_label(kind: ProbeKind) -> &'static str {
    match kind.spec().drawing {
        Drawing::OverSteps { y_label, .. } => y_label,
        _ => kind.spec().title,
    }
}

pub(super) fn sharpness(a: &PlotArgs, session: &Session) -> Result<StepsFigure> {
    let runs = runs_with(a, session, ProbeKind::Sharpness.name())?;
    let infos: Vec<RunInfo> = runs.iter().map(|(r, _)| r.clone()).collect();
    let log_y = !a.linear_y;
    let mut f = steps_frame(
        session,
        &infos,
        figure_title(ProbeKind::Sharpness.spec().title, &a.file),
        y_label(ProbeKind::Sharpness).into(),
        log_y,
    );
    for (r, names) in &runs {
        let c = color_of(r.id);
        let get = |name: &str| points(session, r.id, ProbeKind::Sharpness.name(), names, name);
        let (pre, raw) = (
            get(sharpness::PRECOND_LAMBDA_MAX)?,
            get(sharpness::LAMBDA_MAX)?,
        );
        let (thr, gd) = (get(sharpness::THRESHOLD)?, get(sharpness::GD_THRESHOLD)?);
        f.layers.push(Layer::new(
            staircase(&gd, stair_end(&gd, r)),
            c,
            0.3,
            Mark::Dashed(1),
        ));
        f.layers.push(Layer::new(
            staircase(&thr, stair_end(&thr, r)),
            c,
            0.9,
            Mark::Dashed(2),
        ));
        f.layers
            .push(Layer::new(raw.clone(), c, 0.45, Mark::Line(1)));
        f.layers.push(Layer::new(raw, c, 0.8, Mark::Triangles(6)));
        f.layers
            .push(Layer::new(pre.clone(), c, 1.0, Mark::Line(2)));
        f.layers.push(Layer::new(pre, c, 1.0, Mark::Dots(4)));
        f.keys
            .push(key(format!("run {} {}", r.id, r.name), c, Mark::Line(2)));
    }
    f.keys.extend([
        key("Adam-preconditioned λ_max", INK, Mark::Dots(4)),
        key("λ_max of the Hessian", INK, Mark::Triangles(6)),
        key("38/η: Adam's stability threshold", INK, Mark::Dashed(2)),
        key("2/η: plain GD's threshold (faint)", GREY, Mark::Dashed(1)),
    ]);
    Ok(f)
}

pub(super) fn noise(a: &PlotArgs, session: &Session) -> Result<StepsFigure> {
    let runs = runs_with(a, session, ProbeKind::Noise.name())?;
    let infos: Vec<RunInfo> = runs.iter().map(|(r, _)| r.clone()).collect();
    let log_y = !a.linear_y;
    let mut f = steps_frame(
        session,
        &infos,
        figure_title(ProbeKind::Noise.spec().title, &a.file),
        y_label(ProbeKind::Noise).into(),
        log_y,
    );
    for (r, names) in &runs {
        let c = color_of(r.id);
        let get = |name: &str| points(session, r.id, ProbeKind::Noise.name(), names, name);
        let (one, avg) = (get(noise::B_SIMPLE)?, get(noise::B_SIMPLE_AVG)?);
        let (batch, rule) = (get(noise::BATCH_TOKENS)?, get(noise::RULE_TOKENS)?);
        // The batch a run trains with: a reference line over the steps the run covers.
        if let Some(&(_, b)) = batch.last() {
            let from = r.fork_step.unwrap_or(0) as f64;
            let to = r.last_step.map_or(f.x.1, |s| s as f64);
            f.layers.push(Layer::new(
                vec![(from, b), (to, b)],
                INK,
                0.9,
                Mark::Dotted(2),
            ));
        }
        f.layers
            .push(Layer::new(rule.clone(), c, 0.8, Mark::Dashed(2)));
        f.layers.push(Layer::new(one, c, 0.45, Mark::Rings(4)));
        f.layers
            .push(Layer::new(avg.clone(), c, 1.0, Mark::Line(2)));
        f.layers.push(Layer::new(avg, c, 1.0, Mark::Dots(3)));
        f.keys
            .push(key(format!("run {} {}", r.id, r.name), c, Mark::Line(2)));
    }
    f.keys.extend([
        key("B_simple, running average (run colour)", INK, Mark::Line(2)),
        key("B_simple, one estimate (faint)", GREY, Mark::Rings(4)),
        key("tokens per step: the batch", INK, Mark::Dotted(2)),
        key(
            "MiniCPM rule 1.21e9 / L^6.24 at the current loss",
            INK,
            Mark::Dashed(2),
        ),
    ]);
    Ok(f)
}

pub(super) fn probe_scalar(a: &PlotArgs, session: &Session, metric: &str) -> Result<StepsFigure> {
    let (kind, name) = metric
        .strip_prefix("probe.")
        .and_then(|r| r.split_once('.'))
        .ok_or_else(|| anyhow!("--metric {metric:?}: expected probe.<probe>.<scalar>"))?;
    let mut runs = Vec::new();
    let mut first_err = None;
    for r in selected_runs(a, session)? {
        // Runs without the scalar are left out unless --runs names them.
        match session.series(r.id, metric) {
            Ok(_) => runs.push(r),
            Err(e) if a.runs.is_some() => return Err(e.into()),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if runs.is_empty() {
        if recorded_kinds(session).contains(kind) || first_err.is_none() {
            return Err(first_err.map_or_else(|| none_recorded(session, kind), Into::into));
        }
        return Err(none_recorded(session, kind));
    }
    let mut f = steps_frame(
        session,
        &runs,
        figure_title(metric, &a.file),
        metric.to_string(),
        a.log_y,
    );
    for r in &runs {
        let c = color_of(r.id);
        let pts = points(session, r.id, kind, &[name.to_string()], name)?;
        f.layers
            .push(Layer::new(pts.clone(), c, 0.9, Mark::Line(2)));
        f.layers.push(Layer::new(pts, c, 1.0, Mark::Dots(4)));
        f.keys
            .push(key(format!("run {} {}", r.id, r.name), c, Mark::Dots(4)));
    }
    Ok(f)
}

impl StepsFigure {
    pub(super) fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let log = self.log_y;
        let all = self.layers.iter().flat_map(|l| l.pts.iter().map(|p| p.1));
        let Some((y0, y1)) = padded_range(all.clone(), log) else {
            bail!(
                "no finite values to plot{}",
                if log {
                    " (a log axis needs values > 0; try --linear-y)"
                } else {
                    ""
                }
            );
        };
        let hidden = if log {
            all.filter(|v| v.is_finite() && *v <= 0.0).count()
        } else {
            0
        };
        let t = |v: f64| if log { v.log10() } else { v };
        let keep = |v: &f64| v.is_finite() && (!log || *v > 0.0);
        let (x0, x1) = self.x;
        // Every layer in axis units.
        let layers: Vec<Vec<(f64, f64)>> = self
            .layers
            .iter()
            .map(|l| {
                l.pts
                    .iter()
                    .filter(|(_, v)| keep(v))
                    .map(|&(x, v)| (x, t(v)))
                    .collect()
            })
            .collect();
        let seen: Vec<(f64, f64)> = layers.iter().flat_map(|p| densify(p)).collect();
        let ((a0, a1), spot) =
            legend_room(&seen, (x0, x1), (t(y0), t(y1)), &self.keys, (1166.0, 588.0));
        let axis = y_axis(a0, a1, log);

        root.fill(&WHITE).map_err(derr)?;
        draw_title(root, &self.title)?;
        let mut chart = ChartBuilder::on(root)
            .margin(18)
            .margin_top(66)
            .x_label_area_size(48)
            .y_label_area_size(78)
            .build_cartesian_2d(x0..x1, axis)
            .map_err(derr)?;
        let y_desc = if log {
            format!("{} (log scale)", self.y_desc)
        } else {
            self.y_desc.clone()
        };
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(y_desc)
            .axis_desc_style(("sans-serif", 18))
            .label_style(("sans-serif", 15))
            .light_line_style(RGBColor(235, 235, 235))
            .x_label_formatter(&|v: &f64| format!("{v:.0}"))
            .y_label_formatter(&|v: &f64| number(if log { 10f64.powf(*v) } else { *v }))
            .draw()
            .map_err(derr)?;
        draw_phase_bands(root, &mut chart, self.phases, x0, (a0, a1))?;
        for &(f, c) in &self.forks {
            chart
                .draw_series(LineSeries::new(
                    [(f, a0), (f, a1)],
                    c.mix(0.5).stroke_width(1),
                ))
                .map_err(derr)?;
        }
        for (l, pts) in self.layers.iter().zip(layers) {
            draw_mark(&mut chart, pts, l.color, l.alpha, l.mark)?;
        }
        draw_keys(&mut chart, &self.keys)?;
        draw_legend(&mut chart, spot)?;
        if hidden > 0 {
            draw_note(
                root,
                &format!(
                    "{hidden} value{} ≤ 0 not shown on the log axis (--linear-y shows them)",
                    if hidden == 1 { "" } else { "s" }
                ),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modes::plot::toolkit::linear_ticks;

    #[test]
    fn ticks_staircases_and_smoothing_of_gappy_series() {
        assert_eq!(
            linear_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        );
        assert_eq!(linear_ticks(-0.07, 0.31, 4), vec![0.0, 0.1, 0.2, 0.3]);
        assert_eq!(
            staircase(&[(2.0, 5.0), (10.0, 7.0)], 14.0),
            vec![(2.0, 5.0), (10.0, 5.0), (10.0, 7.0), (14.0, 7.0)]
        );
        // The geometry metrics are NaN at a run's first step: smoothing starts after it.
        let s = super::super::metrics::smooth(&[f64::NAN, 1.0, 1.0, 1.0], 0.5);
        assert!(s[0].is_nan());
        assert_eq!(&s[1..], &[1.0, 1.0, 1.0]);
    }
}
