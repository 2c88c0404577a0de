//! `wsdscope plot FILE.h5 --out FIG.png|FIG.svg`: a session's curves as a figure — every run
//! overlaid, warmup/stable/decay shaded, fork points marked, the raw curve (its min/max
//! envelope) faint behind an EMA-smoothed one, validation loss as markers, legend and axis
//! labels. Text uses the bundled DejaVu Sans, so no system fonts are needed.
//!
//! Besides the per-step metrics (`metrics`) it draws the probe figures: a probe scalar over
//! steps (`--metric probe.<probe>.<scalar>`), sharpness against the 38/η stability line, the
//! gradient noise scale against the batch (`trends`), the 2-D loss landscape as a heatmap
//! with a colour bar (`landscape`), the 1-D loss slices (`slice`), and the parent → branch
//! interpolation curves (`interp`). This module checks the arguments, opens the session and
//! dispatches; the figures read the session through `probe_data` and draw with the shared
//! pieces of `toolkit` and `marks`.

mod interp;
mod landscape;
mod marks;
mod metrics;
mod probe_data;
mod slice;
mod toolkit;
mod trends;

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use wsdscope_sessions::{ProbeKind, Session};

use self::interp::{InterpFigure, interp};
use self::landscape::{LandscapeFigure, landscape};
use self::slice::{SliceFigure, slice};
use self::toolkit::{SIZE, check_written, derr, load_font};
use self::trends::{StepsFigure, noise, probe_scalar, sharpness};
use crate::cli::{PlotArgs, XAxis};

pub use self::metrics::{ema, smooth};

/// The probe figures `--metric` accepts besides the per-step metrics and probe scalars: one
/// per probe kind of the vocabulary, in the order `--help` lists them.
pub(crate) const FIGURES: [ProbeKind; 5] = [
    ProbeKind::Sharpness,
    ProbeKind::Noise,
    ProbeKind::Landscape,
    ProbeKind::Slice,
    ProbeKind::Interp,
];

pub fn run(a: PlotArgs) -> Result<()> {
    let ext = a.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext != "png" && ext != "svg" {
        bail!(
            "--out {}: the figure must end in .png or .svg",
            a.out.display()
        );
    }
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        bail!(
            "--out {}: directory {} does not exist",
            a.out.display(),
            parent.display()
        );
    }
    if !(a.smooth > 0.0 && a.smooth <= 1.0) {
        bail!(
            "--smooth {} is not allowed; ALPHA is an EMA factor in (0, 1] (1 = no smoothing)",
            a.smooth
        );
    }
    let mut allowed = wsdscope_sessions::layout::metric_names();
    allowed.extend(FIGURES.map(ProbeKind::name));
    let probe_scalar = a
        .metric
        .strip_prefix("probe.")
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(p, s)| !p.is_empty() && !s.is_empty());
    if !allowed.contains(&a.metric.as_str()) && !probe_scalar {
        bail!(
            "--metric {:?} is not allowed; use one of {}, or probe.<probe>.<scalar> \
             (e.g. probe.sharpness.lambda_max)",
            a.metric,
            allowed.join(", ")
        );
    }
    check_args(&a)?;
    let figure = probe_scalar || ProbeKind::parse(&a.metric).is_some();
    if figure && (!a.more.is_empty() || a.x != XAxis::Steps) {
        bail!(
            "--metric {}: several session files and --x tokens|time apply to the per-step metrics \
             ({}) only",
            a.metric,
            wsdscope_sessions::layout::metric_names().join(", ")
        );
    }
    let mut sessions = vec![Session::open(&a.file)?];
    for f in &a.more {
        sessions.push(Session::open(f)?);
    }
    if figure {
        return run_probe_figure(&a, &sessions[0], ext == "png");
    }
    metrics::run(&a, &sessions, ext == "png")
}

/// Flag combinations that only the probe figures use.
pub(crate) fn check_args(a: &PlotArgs) -> Result<()> {
    if let Some(s) = a.step
        && a.metric != ProbeKind::Landscape.name()
        && a.metric != ProbeKind::Slice.name()
    {
        bail!(
            "--step {s} applies to --metric landscape and slice only (not {:?})",
            a.metric
        );
    }
    Ok(())
}

/// Draws `--metric` (a probe figure or `probe.<probe>.<scalar>`) of `session` to `a.out`.
fn run_probe_figure(a: &PlotArgs, session: &Session, png: bool) -> Result<()> {
    if session.runs().is_empty() {
        bail!("{}: holds no runs yet; nothing to plot", a.file.display());
    }
    // Every kind of the vocabulary has its figure (a new kind fails to compile here).
    let figure = match ProbeKind::parse(&a.metric) {
        Some(ProbeKind::Sharpness) => Figure::Steps(sharpness(a, session)?),
        Some(ProbeKind::Noise) => Figure::Steps(noise(a, session)?),
        Some(ProbeKind::Landscape) => Figure::Landscape(landscape(a, session)?),
        Some(ProbeKind::Slice) => Figure::Slice(slice(a, session)?),
        Some(ProbeKind::Interp) => Figure::Interp(interp(a, session)?),
        None => Figure::Steps(probe_scalar(a, session, &a.metric)?),
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

/// Every probe figure.
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
    use super::*;

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
}
