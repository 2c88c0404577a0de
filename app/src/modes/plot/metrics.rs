//! The per-step metric figure (`--metric loss`, `lr`, `grad_norm`, …): every run overlaid,
//! the raw curve (its min/max envelope) faint behind a zero-lag EMA-smoothed one, validation
//! loss as markers, and over loss figures the endpoint fit of the completed branches.
//! Several sessions overlay in one figure, their runs labelled `FILE:RUN`; the x axis is steps,
//! tokens or training time (`--x`).

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use wsdscope_sessions::buckets::reduce;
use wsdscope_sessions::{PhaseBounds, RunInfo, Session};

use super::toolkit::{
    PALETTE, SIZE, TickedAxis, check_written, draw_phase_bands, figure_title, load_font, log_ticks,
    number,
};
use crate::cli::{PlotArgs, XAxis};

/// Samples of the raw envelope and of the smoothed curve drawn per run.
const DRAW_POINTS: usize = 2000;

/// Zero-lag smoothing: an EMA with factor `alpha` run forward, then backward over the result,
/// so a fast drop (warmup, decay) is not drawn late. `alpha` 1 returns the series unchanged.
/// Where the input is not finite (the geometry metrics at a run's first step) the result is
/// NaN too, so nothing is drawn there.
pub fn smooth(values: &[f64], alpha: f64) -> Vec<f64> {
    let mut fwd = ema(values, alpha);
    fwd.reverse();
    let mut back = ema(&fwd, alpha);
    back.reverse();
    for (b, v) in back.iter_mut().zip(values) {
        if !v.is_finite() {
            *b = f64::NAN;
        }
    }
    back
}

/// Exponential moving average with factor `alpha` (1: the raw series). A non-finite value
/// carries the average over; leading non-finite values stay as they are and the average
/// starts at the first finite one.
pub fn ema(values: &[f64], alpha: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(values.len());
    let mut acc: Option<f64> = None;
    for &v in values {
        let next = match acc {
            Some(a) if v.is_finite() => a + alpha * (v - a),
            Some(a) => a,
            None => v,
        };
        acc = next.is_finite().then_some(next);
        out.push(next);
    }
    out
}

/// The endpoint fit drawn over loss figures: the fit, tokens per step (to draw it against
/// steps) and the endpoints it was fitted to, as (step, val loss).
struct FitOverlay {
    fit: wsdscope_probes::PowerLawFit,
    tokens_per_step: f64,
    endpoints: Vec<(f64, f64)>,
}

/// One run's data for the figure.
struct Curve {
    info: RunInfo,
    /// The legend's name: `run 2 exp 60 @480`, or with several files `b.h5:2 exp 60 @480`.
    label: String,
    /// Its colour's place in the palette.
    color: usize,
    /// Where its steps go on the x axis.
    x: XMap,
    steps: Vec<u64>,
    values: Vec<f64>,
    val: Option<(Vec<u64>, Vec<f64>)>,
}

/// Where a run's steps go on the x axis (`plot --x`).
struct XMap {
    axis: XAxis,
    tokens_per_step: f64,
    /// (step, wall seconds of training up to the end of that step), for `--x time`.
    clock: Vec<(u64, f64)>,
}

impl XMap {
    /// The x of `step` (for time, the clock at the nearest recorded step at or after it).
    fn at(&self, step: u64) -> f64 {
        match self.axis {
            XAxis::Steps => step as f64,
            XAxis::Tokens => step as f64 * self.tokens_per_step,
            XAxis::Time => {
                let i = self.clock.partition_point(|&(s, _)| s < step);
                self.clock.get(i).or(self.clock.last()).map_or(0.0, |c| c.1)
            }
        }
    }

    fn of(session: &Session, run: &RunInfo, axis: XAxis) -> Result<XMap> {
        let tokens_per_step = crate::analysis::tokens_per_step(run).max(1) as f64;
        let clock = if axis == XAxis::Time {
            clock(session, run)?
        } else {
            Vec::new()
        };
        Ok(XMap {
            axis,
            tokens_per_step,
            clock,
        })
    }
}

/// A run's training clock: the cumulative step times, a branch starting from its parent's
/// clock at the fork.
fn clock(session: &Session, run: &RunInfo) -> Result<Vec<(u64, f64)>> {
    let start = match (run.parent, run.fork_step) {
        (Some(p), Some(at)) if p != run.id => {
            let parent = clock(session, session.run(p)?)?;
            let i = parent.partition_point(|&(s, _)| s < at);
            parent.get(i).or(parent.last()).map_or(0.0, |c| c.1)
        }
        _ => 0.0,
    };
    let (steps, ms) = session.series(run.id, "step_ms")?;
    let mut t = start;
    Ok(steps
        .into_iter()
        .zip(ms)
        .map(|(s, m)| {
            if m.is_finite() {
                t += m / 1e3;
            }
            (s, t)
        })
        .collect())
}

/// Draws `--metric` (a per-step metric) of `session` to `a.out`, a PNG when `png`, else an
/// SVG.
pub(super) fn run(a: &PlotArgs, sessions: &[Session], png: bool) -> Result<()> {
    let files: Vec<&std::path::Path> = std::iter::once(a.file.as_path())
        .chain(a.more.iter().map(|f| f.as_path()))
        .collect();
    let many = sessions.len() > 1;
    let names = crate::modes::compare_sessions::names(&files);
    let mut curves = Vec::new();
    for ((session, file), name) in sessions.iter().zip(&files).zip(&names) {
        let ids: Vec<u32> = match &a.runs {
            Some(ids) => ids.clone(),
            None => session.runs().iter().map(|r| r.id).collect(),
        };
        if ids.is_empty() {
            bail!("{}: holds no runs yet; nothing to plot", file.display());
        }
        for id in ids {
            let info = session.run(id)?.clone();
            let (steps, values) = session.series(id, &a.metric)?;
            let val = if a.metric == "loss" {
                Some(session.series(id, "val_loss")?)
            } else {
                None
            };
            let (label, color) = if many {
                (format!("{name}:{id} {}", info.name), curves.len())
            } else {
                (format!("run {id} {}", info.name), id as usize)
            };
            curves.push(Curve {
                x: XMap::of(session, &info, a.x)?,
                info,
                label,
                color,
                steps,
                values,
                val,
            });
        }
    }
    let session = &sessions[0];
    // The phase bands of the first file's trunk, where they have a place on the x axis.
    let trunk = XMap::of(session, &session.runs()[0], a.x)?;
    let p = session.runs()[0].phases;
    let phases = (a.x != XAxis::Time).then(|| PhaseBounds {
        warmup_end: trunk.at(p.warmup_end) as u64,
        decay_start: trunk.at(p.decay_start) as u64,
        total: trunk.at(p.total) as u64,
    });
    let overlay = if (a.metric == "loss" || a.metric == "val_loss") && !many && a.x == XAxis::Steps
    {
        let rows = crate::analysis::branches(session)?;
        crate::analysis::endpoint_fit(&rows).map(|fit| FitOverlay {
            fit,
            tokens_per_step: crate::analysis::tokens_per_step(&session.runs()[0]).max(1) as f64,
            endpoints: rows
                .iter()
                .filter(|r| r.completed && r.shape != "resume")
                .filter_map(|r| Some((r.end_step? as f64, r.final_val_loss?)))
                .collect(),
        })
    } else {
        None
    };
    let title = if many {
        format!("{} — {}", a.metric, names.join(", "))
    } else {
        figure_title(&a.metric, &a.file)
    };
    let x_desc = match a.x {
        XAxis::Steps => "step",
        XAxis::Tokens => "tokens",
        XAxis::Time => "training time (s)",
    };
    load_font()?;
    let out = a.out.clone();
    // The same figure on either backend (their types differ, so a macro, not a closure).
    macro_rules! draw_on {
        ($backend:expr) => {
            draw_figure(
                $backend.into_drawing_area(),
                &title,
                &a.metric,
                x_desc,
                &curves,
                overlay.as_ref(),
                phases,
                a.log_y,
                a.smooth,
            )?
        };
    }
    if png {
        draw_on!(BitMapBackend::new(&out, SIZE));
    } else {
        draw_on!(SVGBackend::new(&out, SIZE));
    }
    check_written(&out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn draw_figure<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    metric: &str,
    x_desc: &str,
    curves: &[Curve],
    overlay: Option<&FitOverlay>,
    phases: Option<PhaseBounds>,
    log_y: bool,
    alpha: f64,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let keep = |v: &f64| v.is_finite() && (!log_y || *v > 0.0);
    let all_y = curves.iter().flat_map(|c| {
        c.values
            .iter()
            .chain(c.val.iter().flat_map(|(_, v)| v.iter()))
            .copied()
            .filter(keep)
    });
    let (mut y0, mut y1) = all_y.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !y0.is_finite() {
        bail!(
            "no finite {metric} values to plot{}",
            if log_y {
                " (log-y needs values > 0)"
            } else {
                ""
            }
        );
    }
    if log_y {
        // Pad by a few percent in log space.
        let f = (y1 / y0).max(1.0 + 1e-9).powf(0.04);
        (y0, y1) = (y0 / f, y1 * f);
    } else {
        if y1 - y0 < 1e-12 {
            (y0, y1) = (y0 - 0.5, y1 + 0.5);
        }
        let pad = 0.04 * (y1 - y0);
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let x1 = curves
        .iter()
        .filter_map(|c| c.steps.last().map(|&s| c.x.at(s)))
        .fold(phases.map_or(1.0, |p| p.total as f64), f64::max);
    let x0 = curves
        .iter()
        .filter_map(|c| c.steps.first().map(|&s| c.x.at(s)))
        .fold(f64::INFINITY, f64::min)
        .min(curves.first().map_or(1.0, |c| c.x.at(1)));
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };

    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| {
        anyhow::anyhow!("drawing the figure failed: {e:?}")
    };
    root.fill(&WHITE).map_err(err)?;
    let (w, _) = root.dim_in_pixel();
    let title_style = TextStyle::from(("sans-serif", 26).into_font()).pos(
        plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ),
    );
    root.draw(&Text::new(title, (w as i32 / 2, 10), title_style))
        .map_err(err)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(18)
        .margin_top(66)
        .x_label_area_size(48)
        .y_label_area_size(78);
    let frame = Frame {
        metric,
        x_desc,
        curves,
        overlay,
        phases,
        log_y,
        alpha,
        x: (x0, x1),
        y: (y0, y1),
    };
    if log_y {
        // Drawn in log10 units with ticks at round values (2, 3, 5, … per decade).
        let (l0, l1) = (y0.log10(), y1.log10());
        let frame = Frame {
            y: (l0, l1),
            ..frame
        };
        let ticks: Vec<f64> = log_ticks(y0, y1).into_iter().map(f64::log10).collect();
        let chart = builder
            .build_cartesian_2d(
                x0..x1,
                TickedAxis {
                    lo: l0,
                    hi: l1,
                    ticks,
                },
            )
            .map_err(err)?;
        frame.draw(&root, chart)
    } else {
        let chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
        frame.draw(&root, chart)
    }
}

/// What one figure shows, independent of its y axis kind.
struct Frame<'a> {
    metric: &'a str,
    x_desc: &'a str,
    curves: &'a [Curve],
    overlay: Option<&'a FitOverlay>,
    phases: Option<PhaseBounds>,
    log_y: bool,
    alpha: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame<'_> {
    fn draw<'c, DB, Y>(
        &self,
        root: &DrawingArea<DB, Shift>,
        mut chart: ChartContext<'c, DB, Cartesian2d<RangedCoordf64, Y>>,
    ) -> Result<()>
    where
        DB: DrawingBackend + 'c,
        DB::ErrorType: 'static,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| {
            anyhow::anyhow!("drawing the figure failed: {e:?}")
        };
        let ((x0, _), (y0, y1)) = (self.x, self.y);
        let log_y = self.log_y;
        let keep = |v: &f64| v.is_finite() && (!log_y || *v > 0.0);
        // y values in axis units.
        let t = |v: f64| if log_y { v.log10() } else { v };
        let mut y_label = if log_y {
            format!("{} (log scale)", self.metric)
        } else {
            self.metric.to_string()
        };
        if self.alpha < 1.0 {
            y_label.push_str(&format!(
                ", smoothed (α = {}) over the faint raw range",
                self.alpha
            ));
        }
        chart
            .configure_mesh()
            .x_desc(self.x_desc)
            .y_desc(y_label)
            .axis_desc_style(("sans-serif", 18))
            .label_style(("sans-serif", 15))
            .light_line_style(RGBColor(235, 235, 235))
            .x_label_formatter(&|v: &f64| {
                if v.abs() >= 1e4 {
                    crate::tui::format::si(*v)
                } else {
                    format!("{v:.0}")
                }
            })
            .y_label_formatter(&|v: &f64| number(if log_y { 10f64.powf(*v) } else { *v }))
            .draw()
            .map_err(err)?;

        if let Some(p) = self.phases {
            draw_phase_bands(root, &mut chart, p, x0, (y0, y1))?;
        }
        // The geometry metrics change sign: a zero line reads where they do.
        if !log_y && y0 < 0.0 && y1 > 0.0 && ["grad_cos", "d1", "d2"].contains(&self.metric) {
            chart
                .draw_series(LineSeries::new(
                    [(x0, 0.0), (self.x.1, 0.0)],
                    RGBColor(90, 90, 90).stroke_width(1),
                ))
                .map_err(err)?;
        }

        for c in self.curves {
            let color = PALETTE[c.color % PALETTE.len()];
            // Fork point of a branch.
            if let Some(f) = c.info.fork_step {
                let f = c.x.at(f);
                chart
                    .draw_series(LineSeries::new(
                        [(f, y0), (f, y1)],
                        color.mix(0.5).stroke_width(1),
                    ))
                    .map_err(err)?;
            }
            // Raw curve: the min/max envelope, faint behind the smoothed one.
            let buckets = reduce(&c.steps, &c.values, DRAW_POINTS);
            let envelope = buckets
                .iter()
                .flat_map(|b| [(c.x.at(b.step_lo), b.min), (c.x.at(b.step_hi), b.max)])
                .filter(|(_, v)| keep(v))
                .map(|(x, v)| (x, t(v)));
            let smoothed = self.alpha < 1.0;
            let raw_style = if smoothed {
                color.mix(0.22).stroke_width(1)
            } else {
                color.stroke_width(2)
            };
            let raw = chart
                .draw_series(LineSeries::new(envelope, raw_style))
                .map_err(err)?;
            let name = c.label.clone();
            let legend = move |(x, y): (i32, i32)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
            };
            if smoothed {
                let sm = smooth(&c.values, self.alpha);
                let stride = (sm.len() / DRAW_POINTS).max(1);
                let pts = c
                    .steps
                    .iter()
                    .zip(&sm)
                    .enumerate()
                    .filter(|(i, (_, v))| (i % stride == 0 || *i + 1 == sm.len()) && keep(v))
                    .map(|(_, (s, v))| (c.x.at(*s), t(*v)));
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(err)?
                    .label(name)
                    .legend(legend);
            } else {
                raw.label(name).legend(legend);
            }
            if let Some((vs, vv)) = &c.val {
                let pts: Vec<(f64, f64)> = vs
                    .iter()
                    .zip(vv)
                    .filter(|(_, v)| keep(v))
                    .map(|(s, v)| (c.x.at(*s), t(*v)))
                    .collect();
                if !pts.is_empty() {
                    chart
                        .draw_series(LineSeries::new(pts.clone(), color.mix(0.8).stroke_width(1)))
                        .map_err(err)?;
                    let dots = chart
                        .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
                        .map_err(err)?;
                    if std::ptr::eq(c, &self.curves[0]) {
                        dots.label("validation loss (dots, every run)")
                            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
                    }
                }
            }
        }
        if let Some(o) = self.overlay {
            let black = RGBColor(30, 30, 30);
            let first = o
                .endpoints
                .iter()
                .map(|p| p.0)
                .fold(f64::INFINITY, f64::min);
            let (from, to) = (first * 0.5, self.x.1);
            let n = 300;
            let at = |k: usize| from + (to - from) * k as f64 / n as f64;
            let curve = |shift: f64| {
                (0..=n)
                    .map(move |k| {
                        let step = at(k);
                        let d = step * o.tokens_per_step;
                        let sd = o.fit.predict_std(d).unwrap_or(0.0);
                        (step, o.fit.predict(d) + shift * sd)
                    })
                    .filter(|(_, v)| keep(v))
                    .map(|(x, v)| (x, t(v)))
                    .collect::<Vec<_>>()
            };
            let label = format!(
                "fit L = {:.3} + {:.3}·D^-{:.3} over branch endpoints",
                o.fit.l0, o.fit.b, o.fit.beta
            );
            chart
                .draw_series(LineSeries::new(curve(0.0), black.stroke_width(2)))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], black.stroke_width(2))
                });
            if o.fit.cov.is_some() {
                for shift in [-1.0, 1.0] {
                    chart
                        .draw_series(LineSeries::new(
                            curve(shift),
                            black.mix(0.35).stroke_width(1),
                        ))
                        .map_err(err)?;
                }
            }
            chart
                .draw_series(
                    o.endpoints
                        .iter()
                        .filter(|p| keep(&p.1))
                        .map(|&(x, v)| Cross::new((x, t(v)), 7, black.stroke_width(2))),
                )
                .map_err(err)?
                .label("branch endpoints (±1σ band of the fit)")
                .legend(move |(x, y)| Cross::new((x + 10, y), 5, black.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_smooths_and_keeps_length() {
        let v = [1.0, 3.0, 3.0, f64::NAN, 3.0];
        let s = ema(&v, 0.5);
        assert_eq!(s, vec![1.0, 2.0, 2.5, 2.5, 2.75]);
        assert_eq!(ema(&v[..3], 1.0), vec![1.0, 3.0, 3.0]);
        // Forward-backward smoothing has no lag: a step stays centred on where it happens.
        let step: Vec<f64> = (0..100).map(|i| if i < 50 { 1.0 } else { 0.0 }).collect();
        let sm = smooth(&step, 0.2);
        assert!(
            (sm[49] - 0.5).abs() < 0.1 && (sm[50] - 0.5).abs() < 0.1,
            "{} {}",
            sm[49],
            sm[50]
        );
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(9.0), "9");
        assert_eq!(number(0.0001), "1.0e-4");
        assert_eq!(number(-1.1e-16), "0");
        assert_eq!(
            log_ticks(1.8, 10.5),
            vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
        );
        assert_eq!(
            log_ticks(0.001, 1.0),
            vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
        );
    }
}
