//! Loss-landscape estimators over a small [`Objective`] trait, so each is testable on
//! closed-form functions (a quadratic with a known Hessian) and independent of the model:
//!
//! - [`step_geometry`]: cos(g(t+1), g(t)), D1, D2 and the curvature K of the MiniCPM paper
//!   §4.4 from two consecutive gradients and the update between them;
//! - [`hvp`]: a Hessian-vector product by central differences of gradients (candle has no
//!   double backward);
//! - [`top_eigenvalue`]: power iteration on [`hvp`] (the sharpness);
//! - [`sharpness`], [`preconditioned_sharpness`]: the largest (algebraic) eigenvalue of H and
//!   of P⁻¹H for a diagonal preconditioner P (Adam's, for the preconditioned sharpness of
//!   Cohen et al. 2022 against 38/η) by [`lanczos_extremes`](crate::lanczos_extremes) on
//!   [`hvp`];
//! - [`filter_normalize`]: a random direction scaled filter by filter to the parameters'
//!   norms (Li et al. 2018), for loss slices;
//! - [`slice_1d`], [`slice_2d`], [`interpolate`]: losses along directions and segments;
//! - [`NoiseScale`]: the simple gradient noise scale B_simple = tr(Σ)/|G|² from gradients at
//!   two batch sizes (McCandlish et al. 2018).
//!
//! The trainer implements [`Objective`] for its model and runs these between steps.

use crate::lanczos::{Extremes, dot, lanczos_extremes};

/// A differentiable scalar function of a flat parameter vector.
pub trait Objective {
    /// Number of parameters.
    fn dim(&self) -> usize;
    /// The loss at `theta`.
    fn loss(&mut self, theta: &[f64]) -> f64;
    /// The loss and its gradient at `theta`.
    fn loss_and_grad(&mut self, theta: &[f64]) -> (f64, Vec<f64>);
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// The geometry of one optimiser step (MiniCPM §4.4, Fig. 8): cos(g(t+1), g(t)); D1, the
/// slope along the update after it; D2, the curvature along it; K = |D2|/(1 + D1²)^(3/2)
/// (`curvature`). One type, the event contract's, from the estimator to the session file.
pub use wsdscope_events::StepGeometry;

/// The inner products a step's geometry needs, summed over all parameters (so a caller can
/// accumulate them tensor by tensor without flattening anything).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepDots {
    /// g(t)·g(t)
    pub g0g0: f64,
    /// g(t+1)·g(t+1)
    pub g1g1: f64,
    /// g(t)·g(t+1)
    pub g0g1: f64,
    /// g(t)·v(t)
    pub g0v: f64,
    /// g(t+1)·v(t)
    pub g1v: f64,
    /// v(t)·v(t)
    pub vv: f64,
}

impl std::ops::AddAssign for StepDots {
    fn add_assign(&mut self, o: Self) {
        self.g0g0 += o.g0g0;
        self.g1g1 += o.g1g1;
        self.g0g1 += o.g0g1;
        self.g0v += o.g0v;
        self.g1v += o.g1v;
        self.vv += o.vv;
    }
}

impl StepDots {
    /// cos, D1, D2 and K from the inner products.
    pub fn geometry(&self) -> StepGeometry {
        let (n0, n1, nv) = (self.g0g0.sqrt(), self.g1g1.sqrt(), self.vv.sqrt());
        let cos = if n0 > 0.0 && n1 > 0.0 {
            (self.g0g1 / (n0 * n1)).clamp(-1.0, 1.0)
        } else {
            0.0
        };
        if nv == 0.0 {
            return StepGeometry {
                cos,
                d1: 0.0,
                d2: 0.0,
                curvature: 0.0,
            };
        }
        let d1 = self.g1v / nv;
        let d2 = (self.g1v - self.g0v) / self.vv;
        StepGeometry {
            cos,
            d1,
            d2,
            curvature: d2.abs() / (1.0 + d1 * d1).powf(1.5),
        }
    }
}

/// Geometry of the step `v = θ(t+1) − θ(t)` from the gradients before (`g0`) and after (`g1`).
pub fn step_geometry(g0: &[f64], g1: &[f64], v: &[f64]) -> StepGeometry {
    StepDots {
        g0g0: dot(g0, g0),
        g1g1: dot(g1, g1),
        g0g1: dot(g0, g1),
        g0v: dot(g0, v),
        g1v: dot(g1, v),
        vv: dot(v, v),
    }
    .geometry()
}

/// How a Hessian-vector product is taken from gradients, stepping `eps` in parameter space
/// along the unit direction v̂ (the step must stay inside the region where the loss is
/// quadratic: on a trained model's sharpest directions that is below about 1e-3).
#[derive(Debug, Clone, Copy)]
pub enum Differences<'a> {
    /// (g(θ + εv̂) − g(θ − εv̂)) / (2ε): second-order accurate, two gradients per product.
    Central { eps: f64 },
    /// (g(θ + εv̂) − g(θ)) / ε, with g(θ) given: first-order accurate, one gradient per
    /// product.
    Forward { eps: f64, g0: &'a [f64] },
}

/// H·v at `theta` by central differences of gradients with step `eps` along the unit `v`:
/// (g(θ + εv̂) − g(θ − εv̂)) / (2ε) · ‖v‖. Exact for quadratics up to rounding.
pub fn hvp(f: &mut impl Objective, theta: &[f64], v: &[f64], eps: f64) -> Vec<f64> {
    hvp_by(f, theta, v, Differences::Central { eps })
}

/// H·v at `theta` by the finite differences `d`, scaled back by ‖v‖. Exact for quadratics
/// up to rounding.
pub fn hvp_by(f: &mut impl Objective, theta: &[f64], v: &[f64], d: Differences) -> Vec<f64> {
    let nv = norm(v);
    if nv == 0.0 {
        return vec![0.0; v.len()];
    }
    let shifted = |step: f64| -> Vec<f64> {
        theta
            .iter()
            .zip(v)
            .map(|(t, d)| t + step * d / nv)
            .collect()
    };
    let difference = |gp: Vec<f64>, gm: &[f64], span: f64| -> Vec<f64> {
        let mut out = gp;
        out.iter_mut()
            .zip(gm)
            .for_each(|(a, b)| *a = (*a - b) / span * nv);
        out
    };
    match d {
        Differences::Central { eps } => {
            let (_, gp) = f.loss_and_grad(&shifted(eps));
            let (_, gm) = f.loss_and_grad(&shifted(-eps));
            difference(gp, &gm, 2.0 * eps)
        }
        Differences::Forward { eps, g0 } => {
            let (_, gp) = f.loss_and_grad(&shifted(eps));
            difference(gp, g0, eps)
        }
    }
}

/// The Hessian's eigenvalue of largest magnitude at `theta` and its eigenvector, by power
/// iteration on [`hvp`] from the start vector `v0`, until the estimate moves by less than
/// `rel_tol` (relative) or after `max_iter` products (each costs two gradients).
pub fn top_eigenvalue(
    f: &mut impl Objective,
    theta: &[f64],
    v0: &[f64],
    eps: f64,
    rel_tol: f64,
    max_iter: usize,
) -> (f64, Vec<f64>, usize) {
    let n0 = norm(v0).max(f64::MIN_POSITIVE);
    let mut v: Vec<f64> = v0.iter().map(|x| x / n0).collect();
    let mut lambda = 0.0;
    for it in 1..=max_iter {
        let w = hvp(f, theta, &v, eps);
        let next = dot(&v, &w);
        let nw = norm(&w);
        if nw == 0.0 {
            return (0.0, v, it);
        }
        v = w.iter().map(|x| x / nw).collect();
        if it > 1 && (next - lambda).abs() <= rel_tol * next.abs() {
            return (next, v, it);
        }
        lambda = next;
    }
    (lambda, v, max_iter)
}

/// The top (algebraic) Hessian eigenvalue at `theta` by Lanczos on finite-difference
/// Hessian-vector products `d`, to a relative Ritz residual of `tol` or `max_iter` products.
pub fn sharpness(
    f: &mut impl Objective,
    theta: &[f64],
    v0: &[f64],
    d: Differences,
    tol: f64,
    max_iter: usize,
) -> Extremes {
    lanczos_extremes(|v| hvp_by(f, theta, v, d), v0, tol, max_iter)
}

/// The top eigenvalue of P⁻¹H for a diagonal preconditioner P given as `p_inv_sqrt` =
/// P^(−1/2), by Lanczos on the symmetric P^(−1/2) H P^(−1/2) (same spectrum). Each product
/// steps the differences' `eps` in parameter space along P^(−1/2)u, so a widely spread P
/// does not stretch the finite difference. The Ritz vector it returns is the symmetric
/// operator's (u, not z = P^(−1/2)u).
pub fn preconditioned_sharpness(
    f: &mut impl Objective,
    theta: &[f64],
    p_inv_sqrt: &[f64],
    v0: &[f64],
    d: Differences,
    tol: f64,
    max_iter: usize,
) -> Extremes {
    let op = |u: &[f64]| {
        let z: Vec<f64> = u.iter().zip(p_inv_sqrt).map(|(u, s)| u * s).collect();
        let hz = hvp_by(f, theta, &z, d);
        hz.iter().zip(p_inv_sqrt).map(|(h, s)| h * s).collect()
    };
    lanczos_extremes(op, v0, tol, max_iter)
}

/// L(θ + α·d) for each α.
pub fn slice_1d(f: &mut impl Objective, theta: &[f64], d: &[f64], alphas: &[f64]) -> Vec<f64> {
    alphas
        .iter()
        .map(|&a| {
            let th: Vec<f64> = theta.iter().zip(d).map(|(t, d)| t + a * d).collect();
            f.loss(&th)
        })
        .collect()
}

/// L(θ + x·d1 + y·d2) on the grid `xs` × `ys`, row-major by y (row j holds y = ys[j]).
pub fn slice_2d(
    f: &mut impl Objective,
    theta: &[f64],
    d1: &[f64],
    d2: &[f64],
    xs: &[f64],
    ys: &[f64],
) -> Vec<f64> {
    let mut out = Vec::with_capacity(xs.len() * ys.len());
    let mut th = vec![0.0; theta.len()];
    for &y in ys {
        for &x in xs {
            for (i, t) in th.iter_mut().enumerate() {
                *t = theta[i] + x * d1[i] + y * d2[i];
            }
            out.push(f.loss(&th));
        }
    }
    out
}

/// L((1 − α)·a + α·b) for each α: the loss along the segment between two parameter vectors
/// (α outside [0, 1] extrapolates).
pub fn interpolate(f: &mut impl Objective, a: &[f64], b: &[f64], alphas: &[f64]) -> Vec<f64> {
    let d: Vec<f64> = b.iter().zip(a).map(|(b, a)| b - a).collect();
    slice_1d(f, a, &d, alphas)
}

/// The simple gradient noise scale (McCandlish et al. 2018, appendix A) from the squared norm
/// of gradients over small batches of `b_small` examples and over a big batch of `b_big`:
/// |G|² ≈ (B_big|G_big|² − B_small|G_small|²)/(B_big − B_small),
/// tr(Σ) ≈ (|G_small|² − |G_big|²)/(1/B_small − 1/B_big), B_simple = tr(Σ)/|G|².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseScale {
    /// Unbiased estimate of |G|², the true gradient's squared norm.
    pub g_sq: f64,
    /// Unbiased estimate of tr(Σ), the per-example gradient covariance's trace.
    pub trace: f64,
}

impl NoiseScale {
    pub fn estimate(small_sq: f64, b_small: f64, big_sq: f64, b_big: f64) -> Self {
        NoiseScale {
            g_sq: (b_big * big_sq - b_small * small_sq) / (b_big - b_small),
            trace: (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big),
        }
    }

    /// From the gradients of k disjoint micro-batches of `b_small` examples each: the small
    /// norm is their mean squared norm, the big gradient their mean (k·b_small examples).
    pub fn from_micro_batches(grads: &[Vec<f64>], b_small: f64) -> Self {
        let k = grads.len() as f64;
        let small_sq = grads.iter().map(|g| dot(g, g)).sum::<f64>() / k;
        let mut big = vec![0.0; grads.first().map_or(0, Vec::len)];
        for g in grads {
            big.iter_mut().zip(g).for_each(|(b, x)| *b += x / k);
        }
        Self::estimate(small_sq, b_small, dot(&big, &big), k * b_small)
    }

    /// From small batches of possibly different sizes b_i that make up a big batch
    /// (`big_sq` = |G_big|² over `b_big` examples), given the mean of their squared norms
    /// |G_bi|², `mean_sq`, and the mean of 1/b_i, `mean_inv`. Since E|G_b|² = |G|² + tr(Σ)/b,
    /// tr(Σ) ≈ (mean_sq − |G_big|²)/(mean_inv − 1/B_big) and |G|² ≈ |G_big|² − tr(Σ)/B_big:
    /// [`Self::estimate`] when the sizes are equal. The sums travel between ranks, so the
    /// means are what a caller has.
    pub fn from_means(mean_sq: f64, mean_inv: f64, big_sq: f64, b_big: f64) -> Self {
        let trace = (mean_sq - big_sq) / (mean_inv - 1.0 / b_big);
        NoiseScale {
            g_sq: big_sq - trace / b_big,
            trace,
        }
    }

    /// B_simple = tr(Σ)/|G|², in the unit of the batch sizes (NaN if |G|² ≤ 0).
    pub fn b_simple(&self) -> f64 {
        if self.g_sq > 0.0 {
            self.trace / self.g_sq
        } else {
            f64::NAN
        }
    }
}

/// The critical batch size rule of the MiniCPM paper (§4.2): bs = 1.21·10⁹ / L^6.24 tokens.
pub fn minicpm_batch_rule(loss: f64) -> f64 {
    1.21e9 / loss.powf(6.24)
}

/// Scales `direction` filter by filter so each filter (a contiguous `(offset, len)` piece, e.g.
/// one row of a weight matrix) has the norm of the same piece of `params` (Li et al. 2018).
pub fn filter_normalize(direction: &mut [f64], params: &[f64], filters: &[(usize, usize)]) {
    for &(off, len) in filters {
        let d = &mut direction[off..off + len];
        let (nd, np) = (norm(d), norm(&params[off..off + len]));
        let s = if nd > 0.0 { np / nd } else { 0.0 };
        d.iter_mut().for_each(|x| *x *= s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f(θ) = ½ θᵀAθ with A = Q diag(λ) Qᵀ for a fixed rotation Q: known spectrum.
    struct Quadratic {
        a: Vec<Vec<f64>>,
        calls: usize,
    }

    impl Quadratic {
        fn with_spectrum(lambdas: &[f64]) -> Self {
            let n = lambdas.len();
            // Q: a product of Givens rotations, orthogonal by construction.
            let mut q: Vec<Vec<f64>> = (0..n)
                .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
                .collect();
            for (k, angle) in [(0usize, 0.7f64), (1, 1.1), (2, 0.3)] {
                let (i, j) = (k % n, (k + 1) % n);
                let (c, s) = (angle.cos(), angle.sin());
                for row in q.iter_mut() {
                    let (a, b) = (row[i], row[j]);
                    row[i] = c * a - s * b;
                    row[j] = s * a + c * b;
                }
            }
            let a = (0..n)
                .map(|r| {
                    (0..n)
                        .map(|c| (0..n).map(|k| q[r][k] * lambdas[k] * q[c][k]).sum())
                        .collect()
                })
                .collect();
            Quadratic { a, calls: 0 }
        }

        fn mul(&self, x: &[f64]) -> Vec<f64> {
            self.a.iter().map(|row| dot(row, x)).collect()
        }
    }

    impl Objective for Quadratic {
        fn dim(&self) -> usize {
            self.a.len()
        }
        fn loss(&mut self, theta: &[f64]) -> f64 {
            0.5 * dot(theta, &self.mul(theta))
        }
        fn loss_and_grad(&mut self, theta: &[f64]) -> (f64, Vec<f64>) {
            self.calls += 1;
            let g = self.mul(theta);
            (0.5 * dot(theta, &g), g)
        }
    }

    #[test]
    fn power_iteration_finds_the_top_eigenvalue_to_1e_3() {
        let mut f = Quadratic::with_spectrum(&[12.0, 4.0, 1.0, 0.5, -0.25]);
        let theta = vec![0.3, -0.2, 0.5, 0.1, 0.7];
        let v0 = vec![1.0, 1.0, 1.0, 1.0, 1.0];
        let (lambda, v, iters) = top_eigenvalue(&mut f, &theta, &v0, 1e-3, 1e-9, 500);
        assert!(
            (lambda - 12.0).abs() / 12.0 < 1e-3,
            "{lambda} after {iters} products"
        );
        // v is an eigenvector: A v = λ v.
        let av = f.mul(&v);
        assert!(
            av.iter()
                .zip(&v)
                .all(|(a, b)| (a - lambda * b).abs() < 1e-3)
        );
        assert_eq!(f.calls, 2 * iters, "two gradients per product");
    }

    const CENTRAL: Differences<'static> = Differences::Central { eps: 1e-3 };

    #[test]
    fn finite_difference_hvp_is_exact_on_a_quadratic() {
        let mut f = Quadratic::with_spectrum(&[3.0, 2.0, 1.0]);
        let theta = vec![1.0, 2.0, 3.0];
        let v = vec![0.5, -1.0, 2.0];
        let got = hvp(&mut f, &theta, &v, 1e-2);
        let want = f.mul(&v);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
        }
        // Forward differences from the gradient at θ: one gradient per product, as exact.
        let (_, g0) = f.loss_and_grad(&theta);
        let before = f.calls;
        let forward = Differences::Forward { eps: 1e-4, g0: &g0 };
        let got = hvp_by(&mut f, &theta, &v, forward);
        assert_eq!(f.calls, before + 1, "one gradient per forward product");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
        }
        assert_eq!(f.dim(), 3);
        assert!(f.loss(&theta) > 0.0);
    }

    #[test]
    fn step_geometry_is_exact_on_a_quadratic() {
        // On ½θᵀAθ: g = Aθ, so g(t+1) − g(t) = A v and D2 = vᵀAv/‖v‖² exactly.
        let f = Quadratic::with_spectrum(&[5.0, 2.0, 0.5]);
        let theta0 = vec![1.0, -1.0, 0.5];
        let v = vec![-0.1, 0.05, 0.2];
        let theta1: Vec<f64> = theta0.iter().zip(&v).map(|(a, b)| a + b).collect();
        let (g0, g1) = (f.mul(&theta0), f.mul(&theta1));
        let geo = step_geometry(&g0, &g1, &v);
        let nv = norm(&v);
        assert!((geo.d2 - dot(&v, &f.mul(&v)) / (nv * nv)).abs() < 1e-12);
        assert!((geo.d1 - dot(&g1, &v) / nv).abs() < 1e-12);
        assert!((geo.curvature - geo.d2.abs() / (1.0 + geo.d1 * geo.d1).powf(1.5)).abs() < 1e-12);
        assert!((geo.cos - dot(&g0, &g1) / (norm(&g0) * norm(&g1))).abs() < 1e-12);
        assert!(geo.cos <= 1.0 && geo.cos >= -1.0);
        let still = step_geometry(&g0, &g1, &[0.0; 3]);
        assert_eq!((still.d1, still.d2, still.curvature), (0.0, 0.0, 0.0));
    }

    #[test]
    fn preconditioned_sharpness_is_the_top_eigenvalue_of_p_inv_h() {
        // Diagonal H and P: the eigenvalues of P⁻¹H are h_i/p_i, the top one 6/0.5 = 12
        // although H's own top eigenvalue is 9.
        let mut f = Quadratic::with_spectrum(&[9.0, 6.0, 1.0]);
        f.a = vec![
            vec![9.0, 0.0, 0.0],
            vec![0.0, 6.0, 0.0],
            vec![0.0, 0.0, 1.0],
        ];
        let p = [2.0, 0.5, 1.0];
        let s: Vec<f64> = p.iter().map(|p: &f64| 1.0 / p.sqrt()).collect();
        let lambda =
            preconditioned_sharpness(&mut f, &[0.1, 0.2, 0.3], &s, &[1.0; 3], CENTRAL, 1e-10, 50)
                .max;
        assert!((lambda - 12.0).abs() / 12.0 < 1e-3, "{lambda}");
        // A rotated H with P = c·I: every eigenvalue is divided by c.
        let mut g = Quadratic::with_spectrum(&[8.0, 3.0, -1.0, 0.5]);
        let s = vec![0.5; 4]; // P = 4·I
        let lambda = preconditioned_sharpness(
            &mut g,
            &[0.0; 4],
            &s,
            &[1.0, 0.3, -0.2, 0.9],
            CENTRAL,
            1e-10,
            50,
        )
        .max;
        assert!((lambda - 2.0).abs() / 2.0 < 1e-3, "{lambda}");
    }

    #[test]
    fn lanczos_finds_the_top_algebraic_eigenvalue_past_a_larger_negative_one() {
        // Power iteration would return −20 (largest magnitude); the sharpness is 7.
        let spectrum = [7.0, 3.0, 1.0, -2.0, -20.0];
        let mut f = Quadratic::with_spectrum(&spectrum);
        let theta = vec![0.1, 0.2, -0.3, 0.4, 0.5];
        let v0 = vec![1.0, -0.5, 0.25, 0.8, 0.3];
        let e = sharpness(&mut f, &theta, &v0, CENTRAL, 1e-12, 50);
        let (top, bottom, it) = (e.max, e.min, e.products);
        assert!((top - 7.0).abs() / 7.0 < 1e-3, "{top} after {it}");
        assert!((bottom + 20.0).abs() / 20.0 < 1e-3, "{bottom}");
        assert!(
            it <= 6,
            "five dimensions: exact after at most five products, got {it}"
        );
        let (pow, _, _) = top_eigenvalue(&mut f, &theta, &v0, 1e-3, 1e-12, 500);
        assert!(
            (pow + 20.0).abs() < 1e-2,
            "power iteration gives the magnitude: {pow}"
        );
        // Preconditioned, P = diag: eigenvalues of P⁻¹H = h_i/p_i for a diagonal H.
        let mut g = Quadratic::with_spectrum(&[1.0; 3]);
        g.a = vec![
            vec![9.0, 0.0, 0.0],
            vec![0.0, 6.0, 0.0],
            vec![0.0, 0.0, -30.0],
        ];
        let p: [f64; 3] = [2.0, 0.5, 1.0];
        let s: Vec<f64> = p.iter().map(|p| 1.0 / p.sqrt()).collect();
        let e =
            preconditioned_sharpness(&mut g, &[0.0; 3], &s, &[1.0, 1.0, 1.0], CENTRAL, 1e-12, 20);
        let (top, bottom) = (e.max, e.min);
        assert!((top - 12.0).abs() / 12.0 < 1e-3, "{top}");
        assert!((bottom + 30.0).abs() / 30.0 < 1e-3, "{bottom}");
    }

    #[test]
    fn slices_and_interpolation_follow_the_quadratic() {
        let mut f = Quadratic::with_spectrum(&[2.0, 1.0]);
        let theta = vec![1.0, -1.0];
        let d = vec![0.5, 0.25];
        let alphas = [-1.0, 0.0, 0.5, 2.0];
        let got = slice_1d(&mut f, &theta, &d, &alphas);
        for (a, l) in alphas.iter().zip(&got) {
            let th: Vec<f64> = theta.iter().zip(&d).map(|(t, d)| t + a * d).collect();
            assert!((l - 0.5 * dot(&th, &f.mul(&th))).abs() < 1e-12);
        }
        let grid = slice_2d(
            &mut f,
            &theta,
            &d,
            &[0.0, 1.0],
            &[0.0, 1.0],
            &[-1.0, 0.0, 1.0],
        );
        assert_eq!(grid.len(), 6);
        // Row j is y = ys[j]; x = 0 and y = 0 is θ itself.
        assert!((grid[2] - f.loss(&theta)).abs() < 1e-12);
        let th = vec![1.0 + 0.5, -1.0 + 0.25 + 1.0];
        assert!((grid[5] - f.loss(&th)).abs() < 1e-12);
        let b = vec![0.0, 0.0];
        let line = interpolate(&mut f, &theta, &b, &[0.0, 1.0, 0.5]);
        assert!((line[0] - f.loss(&theta)).abs() < 1e-12);
        assert!(line[1].abs() < 1e-12, "the minimum at b");
        assert!(
            (line[2] - 0.25 * f.loss(&theta)).abs() < 1e-12,
            "quadratic in α"
        );
    }

    #[test]
    fn noise_scale_recovers_a_known_covariance() {
        // Per-example gradients G + ξ with ξ uniform in ±a per coordinate: tr(Σ) = n·a²/3.
        let (n, a) = (4usize, 2.0f64);
        let g_true = [0.5, -0.3, 0.2, 0.1];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let (b_small, k) = (8usize, 4usize);
        let (mut trace, mut g_sq) = (0.0, 0.0);
        let trials = 4000;
        for _ in 0..trials {
            let micro: Vec<Vec<f64>> = (0..k)
                .map(|_| {
                    let mut m = vec![0.0; n];
                    for _ in 0..b_small {
                        for (i, mi) in m.iter_mut().enumerate() {
                            *mi += (g_true[i] + a * uniform()) / b_small as f64;
                        }
                    }
                    m
                })
                .collect();
            let est = NoiseScale::from_micro_batches(&micro, b_small as f64);
            trace += est.trace / trials as f64;
            g_sq += est.g_sq / trials as f64;
        }
        let want_trace = n as f64 * a * a / 3.0;
        let want_g: f64 = g_true.iter().map(|g| g * g).sum();
        assert!(
            (trace - want_trace).abs() / want_trace < 0.03,
            "{trace} vs {want_trace}"
        );
        assert!((g_sq - want_g).abs() / want_g < 0.1, "{g_sq} vs {want_g}");
        let b = NoiseScale { g_sq, trace }.b_simple();
        assert!(
            (b - want_trace / want_g).abs() / (want_trace / want_g) < 0.15,
            "{b}"
        );
        assert!((minicpm_batch_rule(2.0) - 1.21e9 / 2f64.powf(6.24)).abs() < 1e-3);
    }

    #[test]
    fn small_batches_of_any_sizes_give_the_noise_scale_back() {
        // Expected squared norms E|G_b|² = |G|² + tr(Σ)/b, for sizes 3, 3 and 2 of a big
        // batch of 8: the estimate solves them exactly, and equal sizes give `estimate`.
        let (g_sq, trace) = (0.25, 40.0);
        let e = |b: f64| g_sq + trace / b;
        let mean_sq = (e(3.0) + e(3.0) + e(2.0)) / 3.0;
        let mean_inv = (1.0 / 3.0 + 1.0 / 3.0 + 1.0 / 2.0) / 3.0;
        let got = NoiseScale::from_means(mean_sq, mean_inv, e(8.0), 8.0);
        assert!((got.g_sq - g_sq).abs() < 1e-12 && (got.trace - trace).abs() < 1e-9);
        // Two of 4 with squared norms 1.5 and 2.5.
        let a = NoiseScale::from_means(2.0, 1.0 / 4.0, 1.2, 8.0);
        let b = NoiseScale::estimate(2.0, 4.0, 1.2, 8.0);
        assert!((a.g_sq - b.g_sq).abs() < 1e-12 && (a.trace - b.trace).abs() < 1e-12);
    }

    #[test]
    fn filter_normalisation_gives_each_filter_its_parameters_norm() {
        let params = vec![3.0, 4.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let mut d = vec![1.0, 0.0, 7.0, -2.0, 2.0, 2.0, -2.0];
        let filters = [(0, 2), (2, 1), (3, 4)];
        filter_normalize(&mut d, &params, &filters);
        for &(off, len) in &filters {
            let (nd, np) = (norm(&d[off..off + len]), norm(&params[off..off + len]));
            assert!((nd - np).abs() < 1e-12, "filter at {off}: {nd} vs {np}");
        }
        assert_eq!(&d[0..2], &[5.0, 0.0], "direction kept, norm 5");
    }
}
