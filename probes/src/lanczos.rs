//! The Lanczos iteration for the extreme eigenvalues of a symmetric operator known only
//! through its products (a Hessian through finite differences of gradients), stopped on
//! the Ritz residual of the top eigenvalue rather than on a stalled estimate.
//!
//! After k products the Krylov basis Q (k vectors, kept in f32 and fully re-orthogonalised
//! against) and the tridiagonal T = QᵀAQ give Ritz pairs (θ, y = Q s) with residual
//! ‖A y − θ y‖ = β_k |s_k| (s_k the last component of T's eigenvector). For a symmetric A
//! some eigenvalue lies within that residual of θ, so a small residual means θ_max is an
//! eigenvalue, not merely an estimate that stopped moving. The top Ritz vector comes back
//! too, so the next measurement of a slowly moving operator can start from it.

/// What one Lanczos run found.
#[derive(Debug, Clone, PartialEq)]
pub struct Extremes {
    /// The largest (algebraic) Ritz value.
    pub max: f64,
    /// The smallest (algebraic) Ritz value (a bound, not converged: the stopping rule
    /// watches the largest).
    pub min: f64,
    /// Operator products used.
    pub products: usize,
    /// ‖A y − θ_max y‖ / |θ_max| for the unit Ritz vector y of `max`: an eigenvalue of A
    /// lies within this share of `max` (up to the operator's own error).
    pub residual: f64,
    /// The unit Ritz vector y of `max` (a start vector for the next run).
    pub vector: Vec<f64>,
}

/// a·b.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// a·b for an f32 basis vector, in eight independent sums so the loop vectorises (the
/// re-orthogonalisation takes k of these per product, over all parameters).
fn dot32(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, y)| f64::from(x) * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += f64::from(x[i]) * y[i];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The extreme eigenvalues of a symmetric operator by Lanczos from `v0`, with full
/// re-orthogonalisation: it stops once the top Ritz value's relative residual is at most
/// `tol`, after `max_iter` products, or when the Krylov space is invariant (then the Ritz
/// values are exact). Unlike power iteration, it returns the largest *algebraic*
/// eigenvalue even when a negative one has a larger magnitude (as early in training).
/// Memory: `max_iter` f32 vectors of the operator's dimension, plus five f64 ones.
pub fn lanczos_extremes(
    mut op: impl FnMut(&[f64]) -> Vec<f64>,
    v0: &[f64],
    tol: f64,
    max_iter: usize,
) -> Extremes {
    let n0 = dot(v0, v0).sqrt();
    if n0 == 0.0 || max_iter == 0 {
        return Extremes {
            max: 0.0,
            min: 0.0,
            products: 0,
            residual: f64::INFINITY,
            vector: vec![0.0; v0.len()],
        };
    }
    let mut q: Vec<f64> = v0.iter().map(|x| x / n0).collect();
    let mut q_prev = vec![0.0; q.len()];
    let mut basis: Vec<Vec<f32>> = Vec::with_capacity(max_iter);
    let (mut alphas, mut betas) = (Vec::new(), Vec::new());
    let mut top = TopRitz::default();
    for it in 1..=max_iter {
        basis.push(q.iter().map(|&x| x as f32).collect());
        let mut w = op(&q);
        let alpha = dot(&w, &q);
        alphas.push(alpha);
        // The three-term recurrence, then w − Q(Qᵀw) against the whole basis: keeps it
        // orthogonal, so no ghost copies of converged eigenvalues appear and the residual
        // means what it says. A second pass only where the first removed much of what was
        // left ("twice is enough", Kahan and Parlett).
        let beta_prev = betas.last().copied().unwrap_or(0.0);
        for ((w, q), p) in w.iter_mut().zip(&q).zip(&q_prev) {
            *w -= alpha * q + beta_prev * p;
        }
        let mut beta = dot(&w, &w).sqrt();
        for _ in 0..2 {
            for b in &basis {
                let c = dot32(b, &w);
                w.iter_mut()
                    .zip(b)
                    .for_each(|(w, &b)| *w -= c * f64::from(b));
            }
            let after = dot(&w, &w).sqrt();
            let removed_much = after < 0.7 * beta;
            beta = after;
            if !removed_much {
                break;
            }
        }
        top = TopRitz::of(&alphas, &betas, beta);
        let scale = top.max.abs().max(top.min.abs()).max(f64::MIN_POSITIVE);
        let invariant = beta <= 1e-12 * scale;
        if invariant || top.residual <= tol * top.max.abs() || it == max_iter {
            break;
        }
        betas.push(beta);
        q_prev = std::mem::replace(&mut q, w.iter().map(|x| x / beta).collect());
    }
    // y = Q s, the top Ritz vector.
    drop((q, q_prev));
    let mut vector = vec![0.0; v0.len()];
    for (b, &s) in basis.iter().zip(&top.s) {
        vector
            .iter_mut()
            .zip(b)
            .for_each(|(y, &b)| *y += s * f64::from(b));
    }
    let ny = dot(&vector, &vector).sqrt();
    if ny > 0.0 {
        vector.iter_mut().for_each(|y| *y /= ny);
    }
    Extremes {
        max: top.max,
        min: top.min,
        products: alphas.len(),
        residual: top.residual / top.max.abs().max(f64::MIN_POSITIVE),
        vector,
    }
}

/// The tridiagonal's extreme eigenvalues and the top one's eigenvector and residual.
#[derive(Debug, Default)]
struct TopRitz {
    max: f64,
    min: f64,
    s: Vec<f64>,
    residual: f64,
}

impl TopRitz {
    /// From T's diagonal `a`, off-diagonal `b` (one shorter) and the next β.
    fn of(a: &[f64], b: &[f64], beta_next: f64) -> Self {
        let (values, vectors) = symmetric_eigen(&tridiagonal(a, b));
        let (imax, _) = values
            .iter()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |m, (i, &v)| {
                    if v > m.1 { (i, v) } else { m }
                },
            );
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let s: Vec<f64> = vectors.iter().map(|row| row[imax]).collect();
        let last = s.last().copied().unwrap_or(0.0);
        TopRitz {
            max: values[imax],
            min,
            residual: beta_next * last.abs(),
            s,
        }
    }
}

fn tridiagonal(a: &[f64], b: &[f64]) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut t = vec![vec![0.0; n]; n];
    for i in 0..n {
        t[i][i] = a[i];
        if i + 1 < n {
            t[i][i + 1] = b[i];
            t[i + 1][i] = b[i];
        }
    }
    t
}

/// Eigenvalues and eigenvectors (columns of the second result) of a small symmetric
/// matrix by cyclic Jacobi rotations, to rounding.
fn symmetric_eigen(m: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = m.len();
    let mut a = m.to_vec();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let diag: f64 = (0..n).map(|i| a[i][i] * a[i][i]).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q] == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, the symmetric Schur).
                let tau = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let t = if tau == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (x, y) = (row[p], row[q]);
                    row[p] = c * x - s * y;
                    row[q] = s * x + c * y;
                }
                let (upper, lower) = a.split_at_mut(q);
                for (x, y) in upper[p].iter_mut().zip(lower[0].iter_mut()) {
                    let (u, w) = (*x, *y);
                    *x = c * u - s * w;
                    *y = s * u + c * w;
                }
                for row in v.iter_mut() {
                    let (x, y) = (row[p], row[q]);
                    row[p] = c * x - s * y;
                    row[q] = s * x + c * y;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symmetric matrix with the given spectrum: diag(λ) rotated by a fixed orthogonal Q.
    fn with_spectrum(lambdas: &[f64]) -> Vec<Vec<f64>> {
        let n = lambdas.len();
        let mut q: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
            .collect();
        for k in 0..n {
            let (i, j) = (k, (k + 3) % n);
            let (c, s) = ((0.4 + k as f64).cos(), (0.4 + k as f64).sin());
            for row in q.iter_mut() {
                let (a, b) = (row[i], row[j]);
                row[i] = c * a - s * b;
                row[j] = s * a + c * b;
            }
        }
        (0..n)
            .map(|r| {
                (0..n)
                    .map(|c| (0..n).map(|k| q[r][k] * lambdas[k] * q[c][k]).sum())
                    .collect()
            })
            .collect()
    }

    fn mul(a: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
        a.iter().map(|row| dot(row, x)).collect()
    }

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let m = with_spectrum(&[5.0, -3.0, 2.0, 0.5, 1.0]);
        let (values, vectors) = symmetric_eigen(&m);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for (got, want) in sorted.iter().zip([-3.0, 0.5, 1.0, 2.0, 5.0]) {
            assert!((got - want).abs() < 1e-12, "{sorted:?}");
        }
        for (i, &l) in values.iter().enumerate() {
            let v: Vec<f64> = vectors.iter().map(|r| r[i]).collect();
            let mv = mul(&m, &v);
            assert!(mv.iter().zip(&v).all(|(a, b)| (a - l * b).abs() < 1e-12));
        }
    }

    #[test]
    fn the_residual_bounds_the_error_and_the_vector_is_the_eigenvector() {
        // A cluster just below the top makes convergence slow; the residual must still bound
        // the error of every stop, at every tolerance.
        let mut spectrum: Vec<f64> = (0..60).map(|i| 1.0 - i as f64 / 60.0).collect();
        spectrum[0] = 3.0;
        spectrum[1] = 2.9;
        spectrum[59] = -4.0;
        let a = with_spectrum(&spectrum);
        let v0: Vec<f64> = (0..60).map(|i| ((i * 7 % 11) as f64) - 5.0).collect();
        for tol in [1e-1, 1e-2, 1e-4] {
            let e = lanczos_extremes(|x| mul(&a, x), &v0, tol, 60);
            assert!(e.residual <= tol || e.products == 60, "{e:?}");
            // Some eigenvalue lies within the residual; here it must be the top one.
            assert!(
                (e.max - 3.0).abs() <= e.residual * e.max.abs() + 1e-9,
                "{tol}: {e:?}"
            );
            let ay = mul(&a, &e.vector);
            let r: f64 = ay
                .iter()
                .zip(&e.vector)
                .map(|(x, y)| (x - e.max * y).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!((r / e.max - e.residual).abs() < 1e-6, "{r} vs {e:?}");
        }
        // The basis is kept in f32: the values are exact to about f32's precision.
        let tight = lanczos_extremes(|x| mul(&a, x), &v0, 1e-10, 60);
        assert!(
            (tight.max - 3.0).abs() < 1e-7 && (tight.min + 4.0).abs() < 1e-6,
            "{tight:?}"
        );
    }

    #[test]
    fn a_start_at_the_eigenvector_converges_at_once() {
        let a = with_spectrum(&[7.0, 3.0, 1.0, -2.0, -20.0, 0.1, 0.2, 0.3]);
        let v0: Vec<f64> = (0..8).map(|i| 1.0 + i as f64).collect();
        let cold = lanczos_extremes(|x| mul(&a, x), &v0, 1e-6, 8);
        let warm = lanczos_extremes(|x| mul(&a, x), &cold.vector, 1e-6, 8);
        assert_eq!(warm.products, 1, "{warm:?}");
        assert!((warm.max - 7.0).abs() < 1e-6);
        assert!(cold.products > warm.products);
    }
}
