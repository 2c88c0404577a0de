//! Loss-landscape estimators over a small [`Objective`] trait, so each is testable on
//! closed-form functions (a quadratic with a known Hessian) and independent of the model:
//!
//! - [`step_geometry`]: cos(g(t+1), g(t)), D1, D2 and the curvature K of the MiniCPM paper
//!   §4.4 from two consecutive gradients and the update between them;
//! - [`hvp`]: a Hessian-vector product by central differences of gradients (candle has no
//!   double backward);
//! - [`top_eigenvalue`]: power iteration on [`hvp`] (the sharpness);
//! - [`filter_normalize`]: a random direction scaled filter by filter to the parameters'
//!   norms (Li et al. 2018), for loss slices.
//!
//! Not wired into the engine yet: the periodic probes, their budget and their views come
//! with the probes feature.

/// A differentiable scalar function of a flat parameter vector.
pub trait Objective {
    /// Number of parameters.
    fn dim(&self) -> usize;
    /// The loss at `theta`.
    fn loss(&mut self, theta: &[f64]) -> f64;
    /// The loss and its gradient at `theta`.
    fn loss_and_grad(&mut self, theta: &[f64]) -> (f64, Vec<f64>);
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// The geometry of one optimiser step (MiniCPM §4.4, Fig. 8).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepGeometry {
    /// cos(g(t+1), g(t)).
    pub cos: f64,
    /// D1 = g(t+1)·v(t)/‖v(t)‖: the slope along the update, after it.
    pub d1: f64,
    /// D2 = (g(t+1) − g(t))·v(t)/‖v(t)‖²: the curvature along the update.
    pub d2: f64,
    /// K = |D2|/(1 + D1²)^(3/2): the curvature of the loss curve along the update.
    pub k: f64,
}

/// Geometry of the step `v = θ(t+1) − θ(t)` from the gradients before (`g0`) and after (`g1`).
pub fn step_geometry(g0: &[f64], g1: &[f64], v: &[f64]) -> StepGeometry {
    let (n0, n1, nv) = (norm(g0), norm(g1), norm(v));
    let cos = if n0 > 0.0 && n1 > 0.0 {
        dot(g0, g1) / (n0 * n1)
    } else {
        0.0
    };
    if nv == 0.0 {
        return StepGeometry {
            cos,
            d1: 0.0,
            d2: 0.0,
            k: 0.0,
        };
    }
    let d1 = dot(g1, v) / nv;
    let dg: Vec<f64> = g1.iter().zip(g0).map(|(a, b)| a - b).collect();
    let d2 = dot(&dg, v) / (nv * nv);
    StepGeometry {
        cos,
        d1,
        d2,
        k: d2.abs() / (1.0 + d1 * d1).powf(1.5),
    }
}

/// H·v at `theta` by central differences of gradients with step `eps` along the unit `v`:
/// (g(θ + εv̂) − g(θ − εv̂)) / (2ε) · ‖v‖. Exact for quadratics up to rounding.
pub fn hvp(f: &mut impl Objective, theta: &[f64], v: &[f64], eps: f64) -> Vec<f64> {
    let nv = norm(v);
    if nv == 0.0 {
        return vec![0.0; v.len()];
    }
    let shifted = |s: f64| -> Vec<f64> {
        theta
            .iter()
            .zip(v)
            .map(|(t, d)| t + s * eps * d / nv)
            .collect()
    };
    let (_, gp) = f.loss_and_grad(&shifted(1.0));
    let (_, gm) = f.loss_and_grad(&shifted(-1.0));
    gp.iter()
        .zip(&gm)
        .map(|(a, b)| (a - b) / (2.0 * eps) * nv)
        .collect()
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
        assert!((geo.k - geo.d2.abs() / (1.0 + geo.d1 * geo.d1).powf(1.5)).abs() < 1e-12);
        assert!((geo.cos - dot(&g0, &g1) / (norm(&g0) * norm(&g1))).abs() < 1e-12);
        assert!(geo.cos <= 1.0 && geo.cos >= -1.0);
        let still = step_geometry(&g0, &g1, &[0.0; 3]);
        assert_eq!((still.d1, still.d2, still.k), (0.0, 0.0, 0.0));
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
