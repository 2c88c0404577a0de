//! Probe figures for `wsdscope plot`: a probe scalar over steps (`--metric
//! probe.<probe>.<scalar>`), sharpness against the 38/η stability line, the gradient noise
//! scale against the batch, the 2-D loss landscape as a heatmap with a colour bar, the 1-D
//! loss slices, and the parent → branch interpolation curves. `plot` checks the arguments
//! and opens the session, then hands over here; the shared pieces (palette, phase bands, the
//! round-tick axis, the font) come from `plot`.

use std::collections::BTreeSet;

use anyhow::{Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use wsdscope_sessions::{PhaseBounds, ProbeResult, RunEvent, RunInfo, Session};

use super::plot::{
    PALETTE, SIZE, TickedAxis, check_written, draw_phase_bands, figure_title, load_font, log_ticks,
    number,
};
use crate::cli::PlotArgs;
use crate::palette::VIRIDIS;

/// The probe figures `--metric` accepts besides the per-step metrics and probe scalars.
pub(crate) const FIGURES: [&str; 5] = ["sharpness", "noise", "landscape", "slice", "interp"];

/// Text and markers that explain a figure rather than belong to one run.
const INK: RGBColor = RGBColor(60, 60, 60);
const GREY: RGBColor = RGBColor(110, 110, 110);

/// Flag combinations that only the probe figures use.
pub(crate) fn check_args(a: &PlotArgs) -> Result<()> {
    if let Some(s) = a.step
        && a.metric != "landscape"
        && a.metric != "slice"
    {
        bail!(
            "--step {s} applies to --metric landscape and slice only (not {:?})",
            a.metric
        );
    }
    Ok(())
}

/// Draws `--metric` (a probe figure or `probe.<probe>.<scalar>`) of `session` to `a.out`.
pub(crate) fn run(a: &PlotArgs, session: &Session, png: bool) -> Result<()> {
    if session.runs().is_empty() {
        bail!("{}: holds no runs yet; nothing to plot", a.file.display());
    }
    let figure = match a.metric.as_str() {
        "sharpness" => Figure::Steps(sharpness(a, session)?),
        "noise" => Figure::Steps(noise(a, session)?),
        "landscape" => Figure::Landscape(landscape(a, session)?),
        "slice" => Figure::Slice(slice(a, session)?),
        "interp" => Figure::Interp(interp(a, session)?),
        m => Figure::Steps(probe_scalar(a, session, m)?),
    };
    load_font()?;
    {
        // The backends write the file when the area is presented; the scope ends their use.
        if png {
            let root = BitMapBackend::new(&a.out, SIZE).into_drawing_area();
            figure.draw(&root)?;
            root.present().map_err(derr)?;
        } else {
            let root = SVGBackend::new(&a.out, SIZE).into_drawing_area();
            figure.draw(&root)?;
            root.present().map_err(derr)?;
        }
    }
    check_written(&a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn derr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the figure failed: {e:?}")
}

// ---------------------------------------------------------------------------------------
// Finding the data.

/// "run 1 (exp 4 @6)".
fn run_name(r: &RunInfo) -> String {
    format!("run {} ({})", r.id, r.name)
}

fn color_of(id: u32) -> RGBColor {
    PALETTE[id as usize % PALETTE.len()]
}

/// The probe kinds recorded anywhere in the session.
fn recorded_kinds(session: &Session) -> BTreeSet<String> {
    session
        .runs()
        .iter()
        .filter_map(|r| session.probe_scalars(r.id).ok())
        .flatten()
        .map(|(p, _)| p)
        .collect()
}

/// The error for a session without any `kind` probe: says so and names what it has.
fn none_recorded(session: &Session, kind: &str) -> anyhow::Error {
    let kinds = recorded_kinds(session);
    let hint = match kind {
        "interp" => {
            " (interpolations are measured when a branch completes: record with --fork-at and probes on)"
        }
        _ => " (record with --probe-every N or --probe-budget PCT to run probes)",
    };
    if kinds.is_empty() {
        anyhow!(
            "{}: has no {kind} probe results; it has no probe results at all{hint}",
            session.path().display()
        )
    } else {
        anyhow!(
            "{}: has no {kind} probe results; it has: {}{hint}",
            session.path().display(),
            kinds.into_iter().collect::<Vec<_>>().join(", ")
        )
    }
}

/// The scalar names run `id` recorded for probe `kind` (None: that run has no such probe).
fn scalars_of(session: &Session, id: u32, kind: &str) -> Result<Option<Vec<String>>> {
    Ok(session
        .probe_scalars(id)?
        .into_iter()
        .find(|(p, _)| p == kind)
        .map(|(_, names)| names))
}

/// The runs `--runs` names (default: all), each checked to exist.
fn selected_runs(a: &PlotArgs, session: &Session) -> Result<Vec<RunInfo>> {
    match &a.runs {
        Some(ids) => ids.iter().map(|&id| Ok(session.run(id)?.clone())).collect(),
        None => Ok(session.runs().to_vec()),
    }
}

/// The selected runs that recorded probe `kind`, with their scalar names. A run named by
/// `--runs` without it is an error; with the default (all runs) such runs are left out.
fn runs_with(a: &PlotArgs, session: &Session, kind: &str) -> Result<Vec<(RunInfo, Vec<String>)>> {
    let mut out = Vec::new();
    let mut lacking = Vec::new();
    for r in selected_runs(a, session)? {
        match scalars_of(session, r.id, kind)? {
            Some(names) => out.push((r, names)),
            None => lacking.push(r),
        }
    }
    if out.is_empty() && a.runs.is_none() {
        return Err(none_recorded(session, kind));
    }
    if let Some(r) = lacking.first().filter(|_| a.runs.is_some()) {
        let with: Vec<String> = session
            .runs()
            .iter()
            .filter(|o| matches!(scalars_of(session, o.id, kind), Ok(Some(_))))
            .map(|o| o.id.to_string())
            .collect();
        if with.is_empty() {
            return Err(none_recorded(session, kind));
        }
        bail!(
            "{} has no {kind} probe results; runs with them: {}",
            run_name(r),
            with.join(", ")
        );
    }
    Ok(out)
}

/// The finite (step, value) points of scalar `name` of probe `kind` of run `id`; empty when
/// the run never recorded that scalar.
fn points(
    session: &Session,
    id: u32,
    kind: &str,
    names: &[String],
    name: &str,
) -> Result<Vec<(f64, f64)>> {
    if !names.iter().any(|n| n == name) {
        return Ok(Vec::new());
    }
    let (steps, values) = session.series(id, &format!("probe.{kind}.{name}"))?;
    Ok(steps
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_finite())
        .map(|(s, v)| (*s as f64, *v))
        .collect())
}

/// Every probe result of `kind` in the session, in the order they happened.
fn results_of(session: &Session, kind: &str) -> Result<Vec<ProbeResult>> {
    Ok(session
        .events()?
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::Probe(p) if p.probe == kind => Some(p),
            _ => None,
        })
        .collect())
}

/// The probe among `found` (one run's results of one kind) at `step`, or the latest one
/// without a step; the error names the steps there are.
pub(crate) fn pick_at<'a>(
    found: &[&'a ProbeResult],
    step: Option<u64>,
    kind: &str,
    run: &str,
) -> Result<&'a ProbeResult> {
    let picked = match step {
        None => found.iter().max_by_key(|p| p.step),
        Some(s) => found.iter().rev().find(|p| p.step == s),
    };
    if let Some(p) = picked {
        return Ok(p);
    }
    let steps: Vec<String> = found.iter().map(|p| p.step.to_string()).collect();
    match step {
        Some(s) if !steps.is_empty() => bail!(
            "{run} has no {kind} probe at step {s}; its {kind} probes are at steps {}",
            steps.join(", ")
        ),
        _ => bail!("{run} has no {kind} probe results"),
    }
}

/// The run that landscape and slice draw (the first of `--runs`, default the trunk) and its
/// probe of `kind` at `--step`.
fn one_probe(a: &PlotArgs, session: &Session, kind: &str) -> Result<(RunInfo, ProbeResult)> {
    let id = a
        .runs
        .as_ref()
        .and_then(|r| r.first().copied())
        .unwrap_or(session.runs()[0].id);
    let info = session.run(id)?.clone();
    let all = results_of(session, kind)?;
    if all.is_empty() {
        return Err(none_recorded(session, kind));
    }
    let mine: Vec<&ProbeResult> = all.iter().filter(|p| p.run == id).collect();
    if mine.is_empty() {
        let mut others: Vec<String> = Vec::new();
        for r in session.runs() {
            let steps: Vec<String> = all
                .iter()
                .filter(|p| p.run == r.id)
                .map(|p| p.step.to_string())
                .collect();
            if !steps.is_empty() {
                others.push(format!("run {} (steps {})", r.id, steps.join(", ")));
            }
        }
        bail!(
            "{} has no {kind} probe results; runs with them: {} (choose one with --runs)",
            run_name(&info),
            others.join("; ")
        );
    }
    let p = pick_at(&mine, a.step, kind, &run_name(&info))?.clone();
    Ok((info, p))
}

fn series<'a>(p: &'a ProbeResult, name: &str) -> Result<&'a [f64]> {
    p.series.get(name).map(Vec::as_slice).ok_or_else(|| {
        anyhow!(
            "the {} probe of run {} at step {} has no series {name:?}",
            p.probe,
            p.run,
            p.step
        )
    })
}

// ---------------------------------------------------------------------------------------
// Figures over steps: sharpness, noise, probe scalars.

/// How one layer of a figure over steps is drawn.
#[derive(Clone, Copy)]
enum Mark {
    Line(u32),
    Dashed(u32),
    Dotted(u32),
    Dots(u32),
    Rings(u32),
    Triangles(u32),
    Crosses(u32),
}

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

/// A legend entry: its text, colour and mark.
struct Key {
    text: String,
    color: RGBColor,
    mark: Mark,
}

fn key(text: impl Into<String>, color: RGBColor, mark: Mark) -> Key {
    Key {
        text: text.into(),
        color,
        mark,
    }
}

/// A figure over steps with the trunk's phases shaded and fork points marked.
struct StepsFigure {
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

fn sharpness(a: &PlotArgs, session: &Session) -> Result<StepsFigure> {
    let runs = runs_with(a, session, "sharpness")?;
    let infos: Vec<RunInfo> = runs.iter().map(|(r, _)| r.clone()).collect();
    let log_y = !a.linear_y;
    let mut f = steps_frame(
        session,
        &infos,
        figure_title("sharpness", &a.file),
        "sharpness λ_max".into(),
        log_y,
    );
    for (r, names) in &runs {
        let c = color_of(r.id);
        let get = |name: &str| points(session, r.id, "sharpness", names, name);
        let (pre, raw) = (get("precond_lambda_max")?, get("lambda_max")?);
        let (thr, gd) = (get("threshold")?, get("gd_threshold")?);
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

fn noise(a: &PlotArgs, session: &Session) -> Result<StepsFigure> {
    let runs = runs_with(a, session, "noise")?;
    let infos: Vec<RunInfo> = runs.iter().map(|(r, _)| r.clone()).collect();
    let log_y = !a.linear_y;
    let mut f = steps_frame(
        session,
        &infos,
        figure_title("gradient noise scale", &a.file),
        "tokens per batch".into(),
        log_y,
    );
    for (r, names) in &runs {
        let c = color_of(r.id);
        let get = |name: &str| points(session, r.id, "noise", names, name);
        let (one, avg) = (get("b_simple")?, get("b_simple_avg")?);
        let (batch, rule) = (get("batch_tokens")?, get("rule_tokens")?);
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

fn probe_scalar(a: &PlotArgs, session: &Session, metric: &str) -> Result<StepsFigure> {
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

/// The y range of `values` (finite, and > 0 on a log axis) padded by a few percent.
fn padded_range(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
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
fn y_axis(lo: f64, hi: f64, log: bool) -> TickedAxis {
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

/// Where to put a legend of `keys` over `pts` (axis units, within `x` × `y`) in a plot area
/// of `plot` pixels: the spot that hides no data, or else the upper right with the y range
/// raised by the legend's height. Returns the y range to draw and the spot.
fn legend_room(
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
fn densify(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
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

fn draw_title<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str) -> Result<()>
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
fn draw_note<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, note: &str) -> Result<()>
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

/// Draws `pts` (already in axis units) with `mark`.
fn draw_mark<'c, DB, X, Y>(
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
fn draw_keys<'c, DB, X, Y>(
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

fn draw_legend<'c, DB, X, Y>(
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

impl StepsFigure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
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

struct LandscapeFigure {
    title: String,
    run: String,
    step: u64,
    x: Vec<f64>,
    y: Vec<f64>,
    /// Row j holds the losses at y[j].
    loss: Vec<f64>,
}

fn landscape(a: &PlotArgs, session: &Session) -> Result<LandscapeFigure> {
    let (info, p) = one_probe(a, session, "landscape")?;
    let (x, y, loss) = (series(&p, "x")?, series(&p, "y")?, series(&p, "loss")?);
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
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
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

// ---------------------------------------------------------------------------------------
// The 1-D slices.

struct SliceFigure {
    title: String,
    random: (Vec<f64>, Vec<f64>),
    update: Option<(Vec<f64>, Vec<f64>)>,
    update_norm: Option<f64>,
}

fn slice(a: &PlotArgs, session: &Session) -> Result<SliceFigure> {
    let (info, p) = one_probe(a, session, "slice")?;
    let random = (
        series(&p, "alpha")?.to_vec(),
        series(&p, "loss_random")?.to_vec(),
    );
    let update = match (p.series.get("beta"), p.series.get("loss_update")) {
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
        update_norm: p.scalars.get("update_norm").copied(),
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
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
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

// ---------------------------------------------------------------------------------------
// Parent → branch interpolations.

struct InterpCurve {
    label: String,
    color: RGBColor,
    pts: Vec<(f64, f64)>,
}

struct InterpFigure {
    title: String,
    curves: Vec<InterpCurve>,
}

fn interp(a: &PlotArgs, session: &Session) -> Result<InterpFigure> {
    let ids: Option<Vec<u32>> = match &a.runs {
        Some(ids) => {
            for &id in ids {
                session.run(id)?;
            }
            Some(ids.clone())
        }
        None => None,
    };
    let all = results_of(session, "interp")?;
    if all.is_empty() {
        return Err(none_recorded(session, "interp"));
    }
    let mut curves = Vec::new();
    for p in &all {
        let s = |k: &str| p.scalars.get(k).copied().filter(|v| v.is_finite());
        let from = s("from_run").map(|v| v as u32);
        let to = s("to_run").map_or(p.run, |v| v as u32);
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
            at(s("from_step")),
            at(s("to_step"))
        );
        let pts: Vec<(f64, f64)> = series(p, "alpha")?
            .iter()
            .zip(series(p, "loss")?)
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
                    .get("to_run")
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
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
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

/// Every figure this module draws.
enum Figure {
    Steps(StepsFigure),
    Landscape(LandscapeFigure),
    Slice(SliceFigure),
    Interp(InterpFigure),
}

impl Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        match self {
            Figure::Steps(f) => f.draw(root),
            Figure::Landscape(f) => f.draw(root),
            Figure::Slice(f) => f.draw(root),
            Figure::Interp(f) => f.draw(root),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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

    fn probe(step: u64) -> ProbeResult {
        ProbeResult {
            run: 0,
            step,
            probe: "landscape".into(),
            scalars: BTreeMap::new(),
            series: BTreeMap::new(),
        }
    }

    #[test]
    fn the_probe_at_step_or_the_latest_is_picked() {
        let ps = [probe(8), probe(24), probe(16)];
        let found: Vec<&ProbeResult> = ps.iter().collect();
        assert_eq!(
            pick_at(&found, None, "landscape", "run 0").unwrap().step,
            24
        );
        assert_eq!(
            pick_at(&found, Some(16), "landscape", "run 0")
                .unwrap()
                .step,
            16
        );
        let e = pick_at(&found, Some(999), "landscape", "run 0 (trunk)")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "run 0 (trunk) has no landscape probe at step 999; its landscape probes are at steps 8, 24, 16"
        );
        let e = pick_at(&[], None, "slice", "run 2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("run 2 has no slice probe"), "{e}");
    }

    #[test]
    fn check_args_rejects_step_for_other_metrics() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut v = vec!["wsdscope", "plot", "s.h5", "--out", "x.png"];
            v.extend_from_slice(extra);
            match crate::cli::Cli::parse_from(v).command {
                crate::cli::Command::Plot(a) => a,
                _ => unreachable!(),
            }
        };
        assert!(check_args(&parse(&["--metric", "landscape", "--step", "8"])).is_ok());
        assert!(check_args(&parse(&["--metric", "slice"])).is_ok());
        let e = check_args(&parse(&["--metric", "loss", "--step", "8"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--step 8 applies to --metric landscape and slice"),
            "{e}"
        );
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
        let s = super::super::plot::smooth(&[f64::NAN, 1.0, 1.0, 1.0], 0.5);
        assert!(s[0].is_nan());
        assert_eq!(&s[1..], &[1.0, 1.0, 1.0]);
    }
}
