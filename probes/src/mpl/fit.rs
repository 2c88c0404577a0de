//! A fit from observed curves to a law: the curves prepared, the problem set up, the best
//! start followed to convergence, then refined under the Huber loss.

use super::error::MplError;
use super::law::MultiPowerLaw;
use super::optimise::{Problem, median};
use super::prepare::{Curve, prepare};

/// A fitted law.
#[derive(Debug, Clone, PartialEq)]
pub struct MplFit {
    pub law: MultiPowerLaw,
    /// Root-mean-square residual over the points the fit used.
    pub rms: f64,
    /// Whether B, C, β, γ were fitted (false: they are the prior's).
    pub decay_fitted: bool,
    /// Points the fit used (after warmup, after subsampling).
    pub points: usize,
}

/// Fewest fitted points past an lr decrease for the decay term (B, C, β, γ) to be fitted.
const MIN_DECAY_POINTS: usize = 8;
const MAX_LM_ITERS: usize = 100;
/// Iterations from each start before all but the best are dropped.
const SCOUT_LM_ITERS: usize = 8;
/// Huber threshold in robust standard deviations (95% efficiency under Gaussian noise).
const HUBER_K: f64 = 1.345;

/// Fits every parameter jointly on all curves (they share one law: e.g. a trunk and its decay
/// branches, whose lrs include the shared history). Points during warmup (and before any lr is
/// spent) are not fitted. The decay term's parameters (B, C, β, γ) are only identifiable if
/// some curve has points past an lr decrease; with fewer than 8 such (fitted) points they are
/// held at `prior`'s values and only L0, A, α are fitted. `prior`'s exponents also seed the
/// search. See the documentation of [`crate::mpl`] for the method. Returns the fit and its RMS
/// residual, or why it could not be made (bad input, too few points, no finite fit).
pub fn fit_multi_power_law(curves: &[Curve], prior: &MultiPowerLaw) -> Result<MplFit, MplError> {
    const NAMES: [&str; 7] = ["l0", "a", "alpha", "b", "c", "beta", "gamma"];
    for (name, value) in NAMES.into_iter().zip(prior.to_array()) {
        if !(value.is_finite() && value >= 0.0) {
            return Err(MplError::BadPrior { name, value });
        }
    }
    if curves.is_empty() {
        return Err(MplError::NoCurves);
    }
    let mut fit_curves = Vec::with_capacity(curves.len());
    let mut y = Vec::new();
    let (mut min_before_decay, mut max_loss) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut n_decay = 0;
    for (ci, curve) in curves.iter().enumerate() {
        let prep = prepare(ci, curve)?;
        fit_curves.push(prep.curve);
        y.extend(prep.ys);
        min_before_decay = min_before_decay.min(prep.min_before_decay);
        max_loss = max_loss.max(prep.max_loss);
        n_decay += prep.n_decay;
    }
    let decay_fitted = n_decay >= MIN_DECAY_POINTS;
    let free = if decay_fitted { 7 } else { 3 };
    let n = y.len();
    if n <= free {
        return Err(MplError::TooFewPoints {
            got: n,
            need: free + 1,
        });
    }
    let problem = Problem {
        curves: fit_curves,
        y,
        // The decay term pulls losses below L0, so only points before any decrease bound it.
        l0_max: if min_before_decay.is_finite() {
            min_before_decay
        } else {
            max_loss
        }
        .max(0.0),
        free,
        held: *prior,
    };
    // A few iterations from every start, then only the best is followed to convergence.
    let mut best: Option<([f64; 7], f64, bool)> = None;
    for start in problem.starts(prior) {
        if let Some(r) = problem.lm(&start, f64::INFINITY, SCOUT_LM_ITERS)
            && best.is_none_or(|b| r.1 < b.1)
        {
            best = Some(r);
        }
    }
    let Some((mut p, _, converged)) = best else {
        return Err(MplError::NoConvergence(
            "no starting point gave a finite loss",
        ));
    };
    if !converged && let Some((q, _, _)) = problem.lm(&p, f64::INFINITY, MAX_LM_ITERS) {
        p = q;
    }
    let mut pred = vec![0.0; n];
    problem.eval(&p, &mut pred, None);
    // Robust refinement: Huber threshold from the residuals' median absolute deviation.
    let mut res: Vec<f64> = pred.iter().zip(&problem.y).map(|(a, b)| a - b).collect();
    let med = median(&mut res);
    let mut dev: Vec<f64> = res.iter().map(|r| (r - med).abs()).collect();
    let delta = HUBER_K * 1.4826 * median(&mut dev);
    // With every residual inside the threshold the least-squares optimum is the Huber one.
    let outliers = res.iter().any(|r| r.abs() > delta);
    if outliers
        && delta > 0.0
        && delta.is_finite()
        && let Some((q, _, _)) = problem.lm(&p, delta, MAX_LM_ITERS)
    {
        p = q;
        problem.eval(&p, &mut pred, None);
    }
    let rms = (pred
        .iter()
        .zip(&problem.y)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        / n as f64)
        .sqrt();
    if !(rms.is_finite() && p.iter().all(|v| v.is_finite())) {
        return Err(MplError::NoConvergence(
            "the fitted law does not give finite losses",
        ));
    }
    Ok(MplFit {
        law: MultiPowerLaw::from_array(p),
        rms,
        decay_fitted,
        points: n,
    })
}
