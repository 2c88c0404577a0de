//! The probes of a run, on the model (DESIGN §5):
//!
//! - [`StepTracker`]: per step, nearly free — the geometry of the previous update (cos, D1,
//!   D2, K of the MiniCPM paper §4.4) from the previous gradient and update, kept as one
//!   buffer each, and max |Δθ| of chosen tensors (paper Fig. 7);
//! - [`measure`]: the periodic measurements, each on a copy of the model through
//!   [`ModelObjective`] — sharpness (top Hessian eigenvalue and Adam-preconditioned
//!   sharpness against 38/η), 1-D slices (a filter-normalised random direction and the last
//!   update), the 2-D slice, the gradient noise scale — and [`interpolation`] between two
//!   runs.
//!
//! Each returns named scalars and series, which the engine wraps into a
//! [`wsdscope_events::ProbeResult`].

use std::collections::BTreeMap;

use candle_core::Tensor;
use wsdscope_events::StepGeometry;
use wsdscope_events::vocabulary::{common, interp, landscape, noise, sharpness, slice};
use wsdscope_kernels::step_dots_many;
use wsdscope_probes::{
    Differences, NoiseScale, Objective, StepDots, filter_normalize, interpolate,
    minicpm_batch_rule, preconditioned_sharpness, sharpness, slice_1d, slice_2d,
};

use crate::config::ProbeConfig;
use crate::data::Batch;
use crate::data::rng::{SplitMix64, hash};
use crate::error::{Error, Result};
use crate::model::MiniCpm;
use crate::objective::{ModelObjective, flatten};
use crate::optim::AdamW;

/// The kinds of periodic measurement, declared once with their scalars and series in the
/// event vocabulary (`ProbeKind::PERIODIC` is the order the engine rotates through them).
pub use wsdscope_events::ProbeKind;

/// Named scalars and series of one measurement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurement {
    pub scalars: BTreeMap<String, f64>,
    pub series: BTreeMap<String, Vec<f64>>,
}

impl Measurement {
    fn scalar(&mut self, k: &str, v: f64) {
        self.scalars.insert(k.into(), v);
    }
    fn series(&mut self, k: &str, v: Vec<f64>) {
        self.series.insert(k.into(), v);
    }
}

/// The previous step's gradient and the parameters before its update, for the next step's
/// geometry (the update itself is the current parameters minus these).
struct Prev {
    grads: Vec<Tensor>,
    theta: Vec<Tensor>,
    g_sq: f64,
    v_sq: f64,
}

/// Per-step probe state of one run.
pub struct StepTracker {
    prev: Option<Prev>,
    /// Indices (in parameter order) of the tensors whose max |Δθ| is reported.
    tracked: Vec<usize>,
}

impl StepTracker {
    pub fn new(tracked: Vec<usize>) -> Self {
        StepTracker {
            prev: None,
            tracked,
        }
    }

    /// The geometry of the previous update v = θ − θ_prev, given this step's gradients and
    /// their squared norm and the current parameters `theta` (all in parameter order,
    /// gradients before clipping); `None` without a previous step.
    pub fn geometry(
        &self,
        grads: &[Tensor],
        g_sq: f64,
        theta: &[Tensor],
    ) -> Result<Option<StepGeometry>> {
        let Some(p) = &self.prev else {
            return Ok(None);
        };
        let mut d = StepDots {
            g0g0: p.g_sq,
            g1g1: g_sq,
            vv: p.v_sq,
            ..StepDots::default()
        };
        // v = θ − θ_prev, so g·v = ⟨g, θ − θ_prev⟩ for g(t+1) and g(t); with g(t+1)·g(t),
        // one pass over each tensor's four copies.
        let quads: Vec<(&Tensor, &Tensor, &Tensor, &Tensor)> = grads
            .iter()
            .zip(&p.grads)
            .zip(theta.iter().zip(&p.theta))
            .map(|((g1, g0), (now, before))| (g1, g0, now, before))
            .collect();
        for [g0g1, g1v, g0v] in step_dots_many(&quads)? {
            d.g0g1 += g0g1;
            d.g1v += g1v;
            d.g0v += g0v;
        }
        Ok(Some(d.geometry()))
    }

    /// Keeps this step's gradients and the parameters before its update for the next step;
    /// returns max |Δθ| of the tracked tensors from the optimiser's per-tensor maxima.
    pub fn record(
        &mut self,
        grads: Vec<Tensor>,
        theta_before: Vec<Tensor>,
        g_sq: f64,
        v_sq: f64,
        max_abs: &[f64],
    ) -> Vec<f64> {
        self.prev = Some(Prev {
            grads,
            theta: theta_before,
            g_sq,
            v_sq,
        });
        self.tracked.iter().map(|&i| max_abs[i]).collect()
    }

    /// The last update θ − θ_prev per parameter, given the current parameters.
    pub fn last_update(&self, theta: &[Tensor]) -> Result<Option<Vec<Tensor>>> {
        let Some(p) = &self.prev else {
            return Ok(None);
        };
        Ok(Some(
            theta
                .iter()
                .zip(&p.theta)
                .map(|(a, b)| Ok((a - b)?))
                .collect::<Result<_>>()?,
        ))
    }
}

/// What a periodic measurement needs from a run.
pub struct ProbeInput<'a> {
    pub model: &'a MiniCpm,
    pub opt: &'a AdamW,
    /// The batch of the step just taken (all of it; most probes use the first sequences).
    pub batch: &'a Batch,
    pub cfg: &'a ProbeConfig,
    /// The learning rate of the step just taken.
    pub lr: f64,
    pub last_update: Option<Vec<Tensor>>,
    /// Seeds the random directions (with the step, so each probe differs).
    pub seed: u64,
}

/// The first `n` sequences of a batch as (inputs, targets) tensors.
fn head(model: &MiniCpm, b: &Batch, from: usize, n: usize) -> Result<(Tensor, Tensor)> {
    let (lo, hi) = (from * b.seq, (from + n) * b.seq);
    let x = Tensor::from_slice(&b.inputs[lo..hi], (n, b.seq), model.device())?;
    let y = Tensor::from_slice(&b.targets[lo..hi], (n, b.seq), model.device())?;
    Ok((x, y))
}

/// The finite-difference step of the Hessian-vector products, in parameter space along a
/// unit direction. Measured on the default run's states (`trainer/tests/probe_settings.rs`,
/// at the top eigenvector, against central differences): the loss stays quadratic along
/// the sharpest direction only below about 3e-4 (at 1e-3 vᵀHv is 3–30% low, at 1e-2 over
/// 70% low), and f32 rounding shows below about 1e-5; forward differences at 3e-5–1e-4
/// agree with central ones within 0.8%.
pub const HVP_STEP: f64 = 5e-5;

/// a/‖a‖ + b/‖b‖ (a zero part left out).
fn blend(a: &[f64], b: &[f64]) -> Vec<f64> {
    let unit = |v: &[f64]| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 0.0 { 1.0 / n } else { 0.0 }
    };
    let (ua, ub) = (unit(a), unit(b));
    a.iter().zip(b).map(|(x, y)| x * ua + y * ub).collect()
}

fn linspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
        .collect()
}

/// A Gaussian direction with the gains zeroed and every filter scaled to its parameters'
/// norm (Li et al. 2018).
fn random_direction(f: &ModelObjective, theta: &[f64], seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    let mut d: Vec<f64> = (0..theta.len()).map(|_| rng.normal()).collect();
    for (off, len) in f.gain_spans() {
        d[off..off + len].iter_mut().for_each(|x| *x = 0.0);
    }
    filter_normalize(&mut d, theta, &f.filters());
    d
}

fn checked<T>(f: &mut ModelObjective, v: T) -> Result<T> {
    match f.error() {
        Some(e) => Err(e),
        None => Ok(v),
    }
}

/// Runs one periodic measurement on a copy of the run's model.
pub fn measure(kind: ProbeKind, inp: &ProbeInput) -> Result<Measurement> {
    let n = inp.cfg.batch_for(inp.batch.batch);
    let mut m = Measurement::default();
    match kind {
        ProbeKind::Sharpness => {
            let (x, y) = head(inp.model, inp.batch, 0, n)?;
            let mut f = ModelObjective::new(inp.model, x, y)?;
            let theta = f.params()?;
            // Forward differences from the gradient at θ, one gradient per product (see
            // HVP_STEP for the step).
            let (_, g0) = f.loss_and_grad(&theta);
            let d = Differences::Forward {
                eps: HVP_STEP,
                g0: &g0,
            };
            // Lanczos stops once *an* eigenvalue has converged; from a random start in a
            // space of a million dimensions the top eigenvector's share is about 1/1000,
            // and a close second can converge first. The gradient lies mostly in the top
            // eigenspace, so the start is half gradient, half a random direction (seeded by
            // the run and step: the result depends on the state alone).
            let noise = || {
                let mut rng = SplitMix64::new(hash(&[inp.seed, 0x5348]));
                (0..theta.len()).map(|_| rng.normal()).collect::<Vec<f64>>()
            };
            let (iters, tol) = (inp.cfg.power_iters, inp.cfg.sharpness_tol);
            let h = sharpness(&mut f, &theta, &blend(&g0, &noise()), d, tol, iters);
            let h = (h.max, h.min, h.products, h.residual); // its vector is not needed
            let mut s = flatten(&inp.opt.preconditioner_inv()?)?;
            s.iter_mut().for_each(|p| *p = p.sqrt());
            // For P^(−1/2) H P^(−1/2) the gradient's counterpart is P^(−1/2) g.
            let pg: Vec<f64> = g0.iter().zip(&s).map(|(g, s)| g * s).collect();
            let u0 = blend(&pg, &noise());
            drop(pg);
            let pre = preconditioned_sharpness(&mut f, &theta, &s, &u0, d, tol, iters);
            let (top, bottom, used, residual) = h;
            let (pre_top, pre_bottom, used_pre) = (pre.max, pre.min, pre.products);
            m.scalar(sharpness::RESIDUAL, residual);
            m.scalar(sharpness::PRECOND_RESIDUAL, pre.residual);
            let beta1 = inp.opt.beta1();
            m.scalar(sharpness::LAMBDA_MAX, top);
            m.scalar(sharpness::LAMBDA_MIN, bottom);
            m.scalar(sharpness::PRECOND_LAMBDA_MAX, pre_top);
            m.scalar(sharpness::PRECOND_LAMBDA_MIN, pre_bottom);
            // Cohen et al. 2022: Adam with momentum β₁ is stable below (2 + 2β₁)/((1 − β₁)η).
            m.scalar(
                sharpness::THRESHOLD,
                (2.0 + 2.0 * beta1) / ((1.0 - beta1) * inp.lr),
            );
            m.scalar(sharpness::GD_THRESHOLD, 2.0 / inp.lr);
            m.scalar(sharpness::LR, inp.lr);
            m.scalar(sharpness::PRODUCTS, (used + used_pre) as f64);
            m.scalar(sharpness::FD_STEP, HVP_STEP);
            m.scalar(common::SEQUENCES, n as f64);
            checked(&mut f, m)
        }
        ProbeKind::Slice => {
            let (x, y) = head(inp.model, inp.batch, 0, n)?;
            let mut f = ModelObjective::new(inp.model, x, y)?;
            let theta = f.params()?;
            let d = random_direction(&f, &theta, hash(&[inp.seed, 0x5331]));
            let alphas = linspace(-inp.cfg.span, inp.cfg.span, inp.cfg.points);
            let loss = slice_1d(&mut f, &theta, &d, &alphas);
            m.series(slice::ALPHA, alphas);
            m.series(slice::LOSS_RANDOM, loss);
            if let Some(u) = &inp.last_update {
                let v = flatten(u)?;
                let betas = linspace(-inp.cfg.update_span, inp.cfg.update_span, inp.cfg.points);
                let loss = slice_1d(&mut f, &theta, &v, &betas);
                m.series(slice::BETA, betas);
                m.series(slice::LOSS_UPDATE, loss);
                m.scalar(
                    slice::UPDATE_NORM,
                    v.iter().map(|x| x * x).sum::<f64>().sqrt(),
                );
            }
            m.scalar(slice::SPAN, inp.cfg.span);
            m.scalar(common::SEQUENCES, n as f64);
            checked(&mut f, m)
        }
        ProbeKind::Landscape => {
            let (x, y) = head(inp.model, inp.batch, 0, n)?;
            let mut f = ModelObjective::new(inp.model, x, y)?;
            let theta = f.params()?;
            let d1 = random_direction(&f, &theta, hash(&[inp.seed, 0x4431]));
            let d2 = random_direction(&f, &theta, hash(&[inp.seed, 0x4432]));
            let xs = linspace(-inp.cfg.span, inp.cfg.span, inp.cfg.grid);
            let loss = slice_2d(&mut f, &theta, &d1, &d2, &xs, &xs);
            m.series(landscape::X, xs.clone());
            m.series(landscape::Y, xs);
            m.series(landscape::LOSS, loss);
            m.scalar(landscape::GRID, inp.cfg.grid as f64);
            m.scalar(landscape::SPAN, inp.cfg.span);
            m.scalar(common::SEQUENCES, n as f64);
            checked(&mut f, m)
        }
        ProbeKind::Noise => {
            let b = inp.batch;
            let k = inp.cfg.micro_batches.min(b.batch);
            if k < 2 {
                return Err(Error::Config(format!(
                    "the noise scale needs at least 2 sequences per step; the batch has {}",
                    b.batch
                )));
            }
            let per = b.batch / k;
            let mut grads = Vec::with_capacity(k);
            let mut loss = 0.0;
            for i in 0..k {
                let (x, y) = head(inp.model, b, i * per, per)?;
                let mut f = ModelObjective::new(inp.model, x, y)?;
                let theta = f.params()?;
                let (l, g) = f.loss_and_grad(&theta);
                checked(&mut f, ())?;
                loss += l / k as f64;
                grads.push(g);
            }
            let b_small = (per * b.seq) as f64;
            let est = NoiseScale::from_micro_batches(&grads, b_small);
            m.scalar(noise::B_SIMPLE, est.b_simple());
            m.scalar(noise::G_SQ, est.g_sq);
            m.scalar(noise::TRACE, est.trace);
            m.scalar(noise::BATCH_TOKENS, (b.batch * b.seq) as f64);
            m.scalar(noise::RULE_TOKENS, minicpm_batch_rule(loss));
            m.scalar(noise::LOSS, loss);
            m.scalar(noise::MICRO_BATCHES, k as f64);
            Ok(m)
        }
        ProbeKind::Interp => Err(Error::Config(
            "interpolation needs two runs; use probe::interpolation".into(),
        )),
    }
}

/// L((1 − α)·θ_a + α·θ_b) on the first sequences of `batch`, for α from −0.2 to 1.2 (so
/// both ends are seen from outside too).
pub fn interpolation(
    a: &MiniCpm,
    b: &MiniCpm,
    batch: &Batch,
    cfg: &ProbeConfig,
) -> Result<Measurement> {
    let n = cfg.batch_for(batch.batch);
    let (x, y) = head(a, batch, 0, n)?;
    let mut f = ModelObjective::new(a, x, y)?;
    let ta = f.params()?;
    let tb = flatten(
        &b.named_vars()
            .iter()
            .map(|(_, v)| v.as_tensor().clone())
            .collect::<Vec<_>>(),
    )?;
    let alphas = linspace(-0.2, 1.2, cfg.points);
    let loss = interpolate(&mut f, &ta, &tb, &alphas);
    let dist = ta
        .iter()
        .zip(&tb)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let mut m = Measurement::default();
    m.series(interp::ALPHA, alphas);
    m.series(interp::LOSS, loss);
    m.scalar(interp::DISTANCE, dist);
    m.scalar(common::SEQUENCES, n as f64);
    checked(&mut f, m)
}
