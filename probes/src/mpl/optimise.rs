//! The optimiser: the least-squares (or Huber) problem over transformed parameters with its
//! analytic Jacobian, Levenberg–Marquardt, the grid of starting points with the linear
//! parameters solved exactly, and the small linear algebra they need.

use super::law::{MultiPowerLaw, g_of, lr_power, x_at};
use super::prepare::FitCurve;

/// Grid starts (besides the prior's) refined by Levenberg–Marquardt.
const LM_STARTS: usize = 3;

/// Bounds of the optimised coordinates: z of L0 = m·sigmoid(z), then ln A, ln α, ln B, ln C,
/// ln β, ln γ.
const THETA_LO: [f64; 7] = [-40.0, -27.6, -9.2, -27.6, -23.0, -9.2, -9.2];
const THETA_HI: [f64; 7] = [40.0, 27.6, 1.61, 27.6, 23.0, 1.61, 1.61];

pub(super) struct Problem {
    pub(super) curves: Vec<FitCurve>,
    pub(super) y: Vec<f64>,
    /// Upper bound of L0 (≥ 0): the lowest loss before any lr decrease (the law is L0 plus a
    /// positive term there), else the highest loss.
    pub(super) l0_max: f64,
    /// 7: every parameter fitted; 3: only L0, A, α (the rest held at `held`).
    pub(super) free: usize,
    pub(super) held: MultiPowerLaw,
}

impl Problem {
    pub(super) fn theta_of(&self, p: &[f64; 7]) -> [f64; 7] {
        let mut t = [0.0; 7];
        if self.l0_max > 0.0 {
            let f = (p[0] / self.l0_max).clamp(1e-9, 1.0 - 1e-9);
            t[0] = (f / (1.0 - f)).ln();
        }
        for j in 1..7 {
            t[j] = p[j].max(1e-300).ln().clamp(THETA_LO[j], THETA_HI[j]);
        }
        t
    }

    pub(super) fn params_of(&self, t: &[f64; 7]) -> [f64; 7] {
        let mut p = self.held.to_array();
        p[0] = self.l0_max / (1.0 + (-t[0]).exp());
        for j in 1..self.free {
            p[j] = t[j].exp();
        }
        p
    }

    /// Predictions at every fitted point and, when `jac` is given, their derivatives by the
    /// free coordinates of `theta_of` (row-major, `free` columns).
    pub(super) fn eval(&self, p: &[f64; 7], pred: &mut [f64], mut jac: Option<&mut [f64]>) {
        let [l0, a, alpha, b, c, beta, gamma] = *p;
        let nf = self.free;
        let d_l0 = if self.l0_max > 0.0 {
            l0 * (1.0 - l0 / self.l0_max)
        } else {
            0.0
        };
        let with_decay_jac = jac.is_some() && nf == 7;
        let mut i = 0;
        for curve in &self.curves {
            for pt in &curve.points {
                let terms = &curve.terms[pt.terms.clone()];
                let (mut v, mut vc, mut vb, mut vg) = (0.0, 0.0, 0.0, 0.0);
                if with_decay_jac {
                    for ch in terms {
                        let x = x_at(lr_power(ch.ln_lr, gamma), pt.area - ch.area_before);
                        if x == 0.0 {
                            continue;
                        }
                        if x == f64::INFINITY {
                            v += ch.drop * g_of(x, c, beta);
                            continue;
                        }
                        let cx = c * x;
                        let lq = cx.ln_1p();
                        let g = -(-beta * lq).exp_m1();
                        let pw = 1.0 - g;
                        // ∂G/∂ln x (= ∂G/∂ln C).
                        let h = beta * pw * cx / (1.0 + cx);
                        v += ch.drop * g;
                        vc += ch.drop * h;
                        vg += ch.drop * h * ch.ln_lr;
                        vb += ch.drop * pw * lq;
                    }
                } else if b != 0.0 {
                    v = terms
                        .iter()
                        .map(|ch| {
                            let x = x_at(lr_power(ch.ln_lr, gamma), pt.area - ch.area_before);
                            ch.drop * g_of(x, c, beta)
                        })
                        .sum();
                }
                let u = (-alpha * pt.ln_area).exp();
                pred[i] = l0 + a * u - b * v;
                if let Some(j) = jac.as_deref_mut() {
                    let row = &mut j[i * nf..(i + 1) * nf];
                    row[0] = d_l0;
                    row[1] = a * u;
                    row[2] = -a * u * alpha * pt.ln_area;
                    if nf == 7 {
                        row[3] = -b * v;
                        row[4] = -b * vc;
                        row[5] = -b * beta * vb;
                        row[6] = b * gamma * vg;
                    }
                }
                i += 1;
            }
        }
    }

    fn cost(&self, pred: &[f64], delta: f64) -> f64 {
        pred.iter()
            .zip(&self.y)
            .map(|(p, y)| huber(p - y, delta))
            .sum()
    }

    /// Levenberg–Marquardt from `start` on the Huber cost with threshold `delta` (∞: least
    /// squares), Marquardt's diagonal scaling, at most `max_iters` iterations. Returns the
    /// parameters, their cost and whether it converged.
    #[allow(clippy::needless_range_loop)] // matrix code reads best with indices
    pub(super) fn lm(
        &self,
        start: &[f64; 7],
        delta: f64,
        max_iters: usize,
    ) -> Option<([f64; 7], f64, bool)> {
        let (n, nf) = (self.y.len(), self.free);
        let mut theta = self.theta_of(start);
        let mut p = self.params_of(&theta);
        let (mut pred, mut jac) = (vec![0.0; n], vec![0.0; n * nf]);
        let (mut pred2, mut jac2) = (vec![0.0; n], vec![0.0; n * nf]);
        self.eval(&p, &mut pred, Some(&mut jac));
        let mut cost = self.cost(&pred, delta);
        if !cost.is_finite() {
            return None;
        }
        let mut lambda = 1e-3;
        for _ in 0..max_iters {
            let mut h = [[0.0; 7]; 7];
            let mut g = [0.0; 7];
            for i in 0..n {
                let r = pred[i] - self.y[i];
                let w = huber_weight(r, delta);
                let row = &jac[i * nf..(i + 1) * nf];
                for a in 0..nf {
                    g[a] += w * row[a] * r;
                    for b in 0..=a {
                        h[a][b] += w * row[a] * row[b];
                    }
                }
            }
            for a in 0..nf {
                for b in 0..a {
                    h[b][a] = h[a][b];
                }
            }
            let max_diag = (0..nf).map(|a| h[a][a]).fold(0.0, f64::max);
            let mut accepted = false;
            while lambda < 1e12 {
                let mut m = h;
                for (a, row) in m.iter_mut().enumerate().take(nf) {
                    row[a] += lambda * h[a][a].max(1e-12 * max_diag);
                }
                let Some(step) = solve(m, g.map(|x| -x), nf) else {
                    lambda *= 10.0;
                    continue;
                };
                let mut theta2 = theta;
                for a in 0..nf {
                    theta2[a] = (theta[a] + step[a]).clamp(THETA_LO[a], THETA_HI[a]);
                }
                let p2 = self.params_of(&theta2);
                self.eval(&p2, &mut pred2, Some(&mut jac2));
                let cost2 = self.cost(&pred2, delta);
                if cost2.is_finite() && cost2 <= cost {
                    let moved = (0..nf)
                        .map(|a| (theta2[a] - theta[a]).abs())
                        .fold(0.0, f64::max);
                    let done = cost - cost2 <= 1e-10 * cost || moved < 1e-9;
                    std::mem::swap(&mut pred, &mut pred2);
                    std::mem::swap(&mut jac, &mut jac2);
                    (theta, p, cost) = (theta2, p2, cost2);
                    if done {
                        return Some((p, cost, true));
                    }
                    lambda = (lambda / 3.0).max(1e-12);
                    accepted = true;
                    break;
                }
                lambda *= 4.0;
            }
            if !accepted {
                // No step lowers the cost: a minimum (to numerical precision).
                return Some((p, cost, true));
            }
        }
        Some((p, cost, false))
    }

    /// Starting points: a grid over the nonlinear exponents (α, C, β, γ) with (L0, A, B) solved
    /// exactly for each, best first; the prior's exponents are always included (first).
    pub(super) fn starts(&self, prior: &MultiPowerLaw) -> Vec<[f64; 7]> {
        let n = self.y.len();
        let mut pred = vec![0.0; n];
        // LD(t)/B at every point for (C, β, γ).
        let decay_basis = |c: f64, beta: f64, gamma: f64, out: &mut [f64]| {
            let law = MultiPowerLaw {
                l0: 0.0,
                a: 0.0,
                alpha: 0.0,
                b: -1.0,
                c,
                beta,
                gamma,
            };
            self.eval(&law.to_array(), out, None);
        };
        let ln_area: Vec<f64> = self
            .curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.ln_area))
            .collect();
        let bounds = ([0.0, 0.0, 0.0], [self.l0_max, f64::INFINITY, f64::INFINITY]);
        // Best (L0, A, B) for the exponents, and its squared error.
        let linear = |alpha: f64, v: &[f64], fit_b: bool| -> Option<([f64; 3], f64)> {
            let k = if fit_b { 3 } else { 2 };
            let mut gram = [[0.0; 3]; 3];
            let mut xty = [0.0; 3];
            let mut yty = 0.0;
            for i in 0..n {
                let y = if fit_b {
                    self.y[i]
                } else {
                    self.y[i] + self.held.b * v[i]
                };
                let x = [1.0, (-alpha * ln_area[i]).exp(), -v[i]];
                for a in 0..k {
                    xty[a] += x[a] * y;
                    for b in 0..k {
                        gram[a][b] += x[a] * x[b];
                    }
                }
                yty += y * y;
            }
            box_least_squares(&gram, &xty, yty, k, &bounds.0, &bounds.1)
        };
        let mut scored: Vec<(f64, [f64; 7])> = Vec::new();
        let mut push = |alpha: f64, c: f64, beta: f64, gamma: f64, v: &[f64], fit_b: bool| {
            if let Some((lin, err)) = linear(alpha, v, fit_b) {
                let mut p = self.held.to_array();
                p[0] = lin[0];
                p[1] = lin[1].max(1e-8);
                p[2] = alpha;
                if fit_b {
                    p[3..7].copy_from_slice(&[lin[2].max(1e-8), c, beta, gamma]);
                }
                scored.push((err, p));
            }
        };
        let clamp_exp = |x: f64| x.clamp(1e-3, 4.0);
        let prior_alpha = clamp_exp(prior.alpha);
        if self.free == 7 {
            let (pc, pb, pg) = (
                prior.c.clamp(1e-9, 1e9),
                clamp_exp(prior.beta),
                clamp_exp(prior.gamma),
            );
            decay_basis(pc, pb, pg, &mut pred);
            push(prior_alpha, pc, pb, pg, &pred, true);
            for gamma in [0.2, 0.5, 0.9] {
                let x_ref = self.typical_x(gamma);
                for beta in [0.3, 0.6, 1.0] {
                    for cx in [0.3, 3.0, 30.0] {
                        let c = cx / x_ref;
                        decay_basis(c, beta, gamma, &mut pred);
                        for alpha in [0.1, 0.3, 0.6, 1.0] {
                            push(alpha, c, beta, gamma, &pred, true);
                        }
                    }
                }
            }
        } else {
            let h = self.held;
            decay_basis(h.c, h.beta, h.gamma, &mut pred);
            push(prior_alpha, h.c, h.beta, h.gamma, &pred, false);
            for alpha in [0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3] {
                push(alpha, h.c, h.beta, h.gamma, &pred, false);
            }
        }
        let prior_start = scored.first().map(|s| s.1);
        let mut grid = scored.split_off(1.min(scored.len()));
        grid.sort_by(|a, b| a.0.total_cmp(&b.0));
        prior_start
            .into_iter()
            .chain(grid.into_iter().take(LM_STARTS).map(|s| s.1))
            .collect()
    }

    /// Median over points past a change of η^(−γ)·(lr area since the curve's first change): the
    /// scale of x, so the grid of C covers the part of G that bends.
    fn typical_x(&self, gamma: f64) -> f64 {
        let mut xs: Vec<f64> = self
            .curves
            .iter()
            .filter_map(|c| c.first_change.map(|first| (c, first)))
            .flat_map(|(c, first)| {
                let e = lr_power(first.ln_lr, gamma);
                c.points
                    .iter()
                    .filter(|p| !p.terms.is_empty())
                    .map(move |p| x_at(e, p.area - first.area_before))
            })
            .filter(|x| x.is_finite() && *x > 0.0)
            .collect();
        if xs.is_empty() {
            return 1.0;
        }
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    }
}

fn huber(r: f64, delta: f64) -> f64 {
    if r.abs() <= delta {
        0.5 * r * r
    } else {
        delta * (r.abs() - 0.5 * delta)
    }
}

/// Iteratively-reweighted Gauss–Newton weight of a residual under the Huber loss.
fn huber_weight(r: f64, delta: f64) -> f64 {
    if r.abs() <= delta {
        1.0
    } else {
        delta / r.abs()
    }
}

pub(super) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Solves the leading `n`×`n` system `m·x = rhs` by Gaussian elimination with partial pivoting.
#[allow(clippy::needless_range_loop)] // matrix code reads best with indices
fn solve(mut m: [[f64; 7]; 7], mut rhs: [f64; 7], n: usize) -> Option<[f64; 7]> {
    for col in 0..n {
        let piv = (col..n).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        let pivot = m[piv][col].abs();
        if pivot.is_nan() || pivot <= 1e-300 {
            return None;
        }
        m.swap(col, piv);
        rhs.swap(col, piv);
        for r in col + 1..n {
            let f = m[r][col] / m[col][col];
            for c in col..n {
                m[r][c] -= f * m[col][c];
            }
            rhs[r] -= f * rhs[col];
        }
    }
    let mut x = [0.0; 7];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|c| m[r][c] * x[c]).sum();
        x[r] = (rhs[r] - s) / m[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Least squares over `k` ≤ 3 coefficients, each within [lo, hi], from the Gram matrix XᵀX,
/// Xᵀy and yᵀy: every assignment of free / at-lower / at-upper is solved and the best feasible
/// one kept (exact for this convex problem). Returns the coefficients and the squared error.
pub(super) fn box_least_squares(
    gram: &[[f64; 3]; 3],
    xty: &[f64; 3],
    yty: f64,
    k: usize,
    lo: &[f64; 3],
    hi: &[f64; 3],
) -> Option<([f64; 3], f64)> {
    let mut best: Option<([f64; 3], f64)> = None;
    for code in 0..3usize.pow(k as u32) {
        let state: Vec<usize> = (0..k).map(|j| code / 3usize.pow(j as u32) % 3).collect();
        if (0..k).any(|j| state[j] == 2 && !hi[j].is_finite()) {
            continue;
        }
        let mut x = [0.0; 3];
        let free: Vec<usize> = (0..k).filter(|&j| state[j] == 0).collect();
        for j in 0..k {
            x[j] = match state[j] {
                1 => lo[j],
                2 => hi[j],
                _ => 0.0,
            };
        }
        if !free.is_empty() {
            let mut m = [[0.0; 7]; 7];
            let mut rhs = [0.0; 7];
            for (a, &fa) in free.iter().enumerate() {
                rhs[a] = xty[fa] - (0..k).map(|j| gram[fa][j] * x[j]).sum::<f64>();
                for (b, &fb) in free.iter().enumerate() {
                    m[a][b] = gram[fa][fb];
                }
            }
            let Some(sol) = solve(m, rhs, free.len()) else {
                continue;
            };
            for (a, &fa) in free.iter().enumerate() {
                x[fa] = sol[a];
            }
        }
        let tol = 1e-12 * (1.0 + x.iter().fold(0.0f64, |m, v| m.max(v.abs())));
        if (0..k).any(|j| x[j] < lo[j] - tol || x[j] > hi[j] + tol) {
            continue;
        }
        for j in 0..k {
            x[j] = x[j].clamp(lo[j], hi[j]);
        }
        let mut err = yty;
        for a in 0..k {
            err -= 2.0 * x[a] * xty[a];
            for b in 0..k {
                err += x[a] * gram[a][b] * x[b];
            }
        }
        if best.is_none_or(|b| err < b.1) {
            best = Some((x, err));
        }
    }
    best
}
