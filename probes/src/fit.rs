//! The loss-versus-data curve that decay branches trace (MiniCPM §4.5, WSD(S)): fit
//! `L(D) = L0 + B·D^(−β)` to branch endpoints (D in tokens), with parameter uncertainties and
//! a prediction band for extrapolation.
//!
//! For a fixed β the model is linear in (L0, B), so those come from ordinary least squares and
//! only β is searched (variable projection): a coarse log-spaced scan, then golden-section
//! refinement. The covariance of (L0, B, β) is σ²(JᵀJ)⁻¹ at the optimum, σ² = RSS/(n − 3).

/// Why a fit could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("a power-law fit needs at least 3 points with distinct D > 0, got {0}")]
    TooFewPoints(usize),
    #[error("point {0} is not finite or has D ≤ 0")]
    BadPoint(usize),
}

/// A fitted `L(D) = L0 + B·D^(−β)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerLawFit {
    pub l0: f64,
    pub b: f64,
    pub beta: f64,
    /// Residual sum of squares.
    pub rss: f64,
    pub n: usize,
    /// Covariance of (L0, B, β), when there are more points than parameters.
    pub cov: Option<[[f64; 3]; 3]>,
}

impl PowerLawFit {
    pub fn predict(&self, d: f64) -> f64 {
        self.l0 + self.b * d.powf(-self.beta)
    }

    /// Standard errors of (L0, B, β).
    pub fn std_errors(&self) -> Option<[f64; 3]> {
        self.cov
            .map(|c| [c[0][0].sqrt(), c[1][1].sqrt(), c[2][2].sqrt()])
    }

    /// One-σ uncertainty of the predicted loss at `d` (delta method).
    pub fn predict_std(&self, d: f64) -> Option<f64> {
        let c = self.cov?;
        let p = d.powf(-self.beta);
        let g = [1.0, p, -self.b * p * d.ln()];
        let mut v = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                v += g[i] * c[i][j] * g[j];
            }
        }
        Some(v.max(0.0).sqrt())
    }
}

/// Least-squares (L0, B) for a fixed β with L0 kept in [0, min L] (an irreducible loss is
/// neither negative nor above what was reached), and the residual sum of squares.
fn linear_part(points: &[(f64, f64)], beta: f64) -> (f64, f64, f64) {
    let n = points.len() as f64;
    let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
    for &(d, l) in points {
        let x = d.powf(-beta);
        sx += x;
        sy += l;
        sxx += x * x;
        sxy += x * l;
    }
    let det = n * sxx - sx * sx;
    let mut b = if det.abs() > 1e-300 {
        (n * sxy - sx * sy) / det
    } else {
        0.0
    };
    let mut l0 = (sy - b * sx) / n;
    let min_l = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let bound = l0.clamp(0.0, min_l.max(0.0));
    if bound != l0 {
        // On the bound: L0 fixed, B by least squares of (L − L0) on x.
        l0 = bound;
        b = if sxx > 0.0 {
            (sxy - l0 * sx) / sxx
        } else {
            0.0
        };
    }
    let rss = points
        .iter()
        .map(|&(d, l)| (l - l0 - b * d.powf(-beta)).powi(2))
        .sum();
    (l0, b, rss)
}

/// Fits `L(D) = L0 + B·D^(−β)` to (D, L) points, β searched in [1e-3, 5].
pub fn fit_power_law(points: &[(f64, f64)]) -> Result<PowerLawFit, FitError> {
    for (i, &(d, l)) in points.iter().enumerate() {
        if !(d.is_finite() && l.is_finite() && d > 0.0) {
            return Err(FitError::BadPoint(i));
        }
    }
    let mut ds: Vec<f64> = points.iter().map(|p| p.0).collect();
    ds.sort_by(f64::total_cmp);
    ds.dedup();
    if ds.len() < 3 {
        return Err(FitError::TooFewPoints(ds.len()));
    }
    let rss = |beta: f64| linear_part(points, beta).2;
    // Coarse scan of log β, then golden-section search around the best cell.
    let (lo, hi) = (1e-3f64.ln(), 5f64.ln());
    let k = 200;
    let grid: Vec<f64> = (0..=k)
        .map(|i| lo + (hi - lo) * i as f64 / k as f64)
        .collect();
    let best = (0..=k)
        .min_by(|&a, &b| rss(grid[a].exp()).total_cmp(&rss(grid[b].exp())))
        .unwrap_or(0);
    let (mut a, mut b) = (grid[best.saturating_sub(1)], grid[(best + 1).min(k)]);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..100 {
        let (c, d) = (b - g * (b - a), a + g * (b - a));
        if rss(c.exp()) < rss(d.exp()) {
            b = d;
        } else {
            a = c;
        }
    }
    let beta = ((a + b) / 2.0).exp();
    let (l0, bb, rss_min) = linear_part(points, beta);
    let n = points.len();
    let cov = if n > 3 {
        let s2 = rss_min / (n - 3) as f64;
        let mut jtj = [[0.0; 3]; 3];
        for &(d, _) in points {
            let p = d.powf(-beta);
            let j = [1.0, p, -bb * p * d.ln()];
            for r in 0..3 {
                for c in 0..3 {
                    jtj[r][c] += j[r] * j[c];
                }
            }
        }
        invert3(jtj).map(|inv| inv.map(|row| row.map(|x| x * s2)))
    } else {
        None
    };
    Ok(PowerLawFit {
        l0,
        b: bb,
        beta,
        rss: rss_min,
        n,
        cov,
    })
}

fn invert3(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if det.abs() < 1e-300 || !det.is_finite() {
        return None;
    }
    let mut inv = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            // Cofactor of (c, r) / det (the adjugate is the transposed cofactor matrix).
            let (r1, r2) = ([1, 0, 0][c], [2, 2, 1][c]);
            let (c1, c2) = ([1, 0, 0][r], [2, 2, 1][r]);
            let minor = m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1];
            let sign = if (r + c) % 2 == 0 { 1.0 } else { -1.0 };
            inv[r][c] = sign * minor / det;
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(l0: f64, b: f64, beta: f64) -> impl Fn(f64) -> f64 {
        move |d| l0 + b * d.powf(-beta)
    }

    #[test]
    fn recovers_known_parameters_from_exact_points() {
        let f = curve(1.7, 40.0, 0.3);
        let pts: Vec<(f64, f64)> = [1e5, 3e5, 1e6, 3e6, 1e7, 3e7]
            .iter()
            .map(|&d| (d, f(d)))
            .collect();
        let fit = fit_power_law(&pts).unwrap();
        assert!((fit.l0 - 1.7).abs() < 1e-6, "{fit:?}");
        assert!((fit.b - 40.0).abs() / 40.0 < 1e-5, "{fit:?}");
        assert!((fit.beta - 0.3).abs() < 1e-6, "{fit:?}");
        assert!((fit.predict(1e9) - f(1e9)).abs() < 1e-6);
    }

    #[test]
    fn noisy_points_land_within_their_uncertainty() {
        let f = curve(2.0, 15.0, 0.5);
        // Deterministic ±0.5% noise.
        let pts: Vec<(f64, f64)> = (0..12)
            .map(|i| {
                let d = 1e4 * 2f64.powi(i);
                let noise = if i % 2 == 0 { 1.005 } else { 0.995 };
                (d, f(d) * noise)
            })
            .collect();
        let fit = fit_power_law(&pts).unwrap();
        let se = fit.std_errors().unwrap();
        assert!((fit.l0 - 2.0).abs() < 4.0 * se[0] + 0.02, "{fit:?} {se:?}");
        assert!(
            (fit.beta - 0.5).abs() < 4.0 * se[2] + 0.02,
            "{fit:?} {se:?}"
        );
        let sd = fit.predict_std(1e8).unwrap();
        assert!(sd > 0.0 && (fit.predict(1e8) - f(1e8)).abs() < 4.0 * sd + 0.02);
    }

    #[test]
    fn the_irreducible_loss_stays_between_zero_and_the_lowest_point() {
        // Four endpoints nearly on a line in log D: unconstrained, L0 runs off to −∞.
        let pts = [
            (30720.0, 2.0753),
            (51200.0, 1.9935),
            (76800.0, 1.9508),
            (102400.0, 1.8832),
        ];
        let fit = fit_power_law(&pts).unwrap();
        assert!(fit.l0 >= 0.0 && fit.l0 <= 1.8832, "{fit:?}");
        assert!(fit.b > 0.0 && fit.beta > 0.0, "{fit:?}");
        for (d, l) in pts {
            assert!((fit.predict(d) - l).abs() < 0.05, "{fit:?} at {d}");
        }
    }

    #[test]
    #[allow(clippy::needless_range_loop)] // a matrix product reads best with indices
    fn inverse_is_an_inverse() {
        let m = [[4.0, 1.0, 2.0], [1.0, 3.0, 0.5], [2.0, 0.5, 5.0]];
        let inv = invert3(m).unwrap();
        for r in 0..3 {
            for c in 0..3 {
                let v: f64 = (0..3).map(|k| m[r][k] * inv[k][c]).sum();
                assert!((v - if r == c { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn refuses_too_few_or_bad_points() {
        assert_eq!(
            fit_power_law(&[(1.0, 2.0), (2.0, 1.5)]),
            Err(FitError::TooFewPoints(2))
        );
        assert_eq!(
            fit_power_law(&[(1.0, 2.0), (2.0, 1.5), (2.0, 1.4)]),
            Err(FitError::TooFewPoints(2))
        );
        assert_eq!(
            fit_power_law(&[(1.0, 2.0), (0.0, 1.5), (3.0, 1.0)]),
            Err(FitError::BadPoint(1))
        );
        let exact = fit_power_law(&[(1.0, 3.0), (2.0, 2.5), (4.0, 2.25)]).unwrap();
        assert!(
            exact.cov.is_none(),
            "three points fit exactly: no uncertainty"
        );
    }
}
