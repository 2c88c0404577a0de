//! The multi-power law (MPL) of Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction
//! Across Learning Rate Schedules" (arXiv:2503.12811): the loss curve of a run predicted from its
//! learning-rate schedule alone, and a fit of the law's seven parameters to observed curves (a
//! WSD trunk and its decay branches share one law), so an unseen schedule can be extrapolated.
//!
//! With t ≥ 1 counting the steps after warmup, η_1..η_t their learning rates and η_0 the peak
//! (the lr of the last warmup step):
//!
//! ```text
//! L(t)  = L0 + A·(S1(t) + S_W)^(−α) − LD(t)
//! LD(t) = B·Σ_{k=1..t} (η_{k−1} − η_k)·G(η_k^(−γ)·S_k(t)),   G(x) = 1 − (C·x + 1)^(−β)
//! S1(t) = Σ_{τ=1..t} η_τ,   S_k(t) = Σ_{τ=k..t} η_τ,   S_W = Σ of the warmup lrs.
//! ```
//!
//! Evaluation uses prefix sums of the lrs (each S is O(1)) and visits only the steps at which
//! the lr changes (constant stretches add nothing to LD), so a point costs O(lr changes before
//! it). Where the lr is exactly 0, η^(−γ) is +∞: G is 1 once any lr has been spent since the
//! drop, and 0 while none has (the limit of a vanishing lr, under which nothing is learnt).
//!
//! Fitting ([`fit_multi_power_law`]): each curve is subsampled to at most 256 points after warmup
//! (its last point always kept, the decay region given at least half of them). So that long
//! decays stay cheap, the fit merges the lr changes of the far past of each point into blocks
//! within which S_k(t) and η_k vary by at most 5%, summed at their mean (O(log(S range)/0.05)
//! terms per point instead of one per decay step; error ~1e-6 in loss on 20k-step decays);
//! [`MultiPowerLaw::predict`] stays exact.
//!
//! The objective is least squares on loss values, then refined under a Huber loss whose
//! threshold is 1.345 robust standard deviations (1.4826 × the median absolute deviation of the
//! least-squares residuals), so isolated loss spikes of a per-step curve do not pull the fit
//! while Gaussian-like noise is treated as plain least squares. The minimiser is
//! Levenberg–Marquardt with an analytic Jacobian on transformed parameters: L0 = m·sigmoid(z)
//! keeps L0 in [0, m]; the other six are optimised by their logarithms (kept positive, within
//! wide bounds). The bound m is the lowest loss observed *before any lr decrease*, where the law
//! is L0 plus a positive term; later losses may lie below L0, since LD subtracts (without such
//! points m is the highest observed loss). Starting points come from a grid over (α, C, β, γ) on
//! which (L0, A, B) — linear in the law — are solved exactly by bound-constrained least squares;
//! the prior's exponents and the best three grid points each get a few iterations, and the best
//! of those is followed to convergence.

/// Most points of one curve that enter a fit (the rest are subsampled away).
const POINTS_PER_CURVE: usize = 256;
/// Fewest fitted points past an lr decrease for the decay term (B, C, β, γ) to be fitted.
const MIN_DECAY_POINTS: usize = 8;
const MAX_LM_ITERS: usize = 100;
/// Iterations from each start before all but the best are dropped.
const SCOUT_LM_ITERS: usize = 8;
/// Grid starts (besides the prior's) refined by Levenberg–Marquardt.
const LM_STARTS: usize = 3;
/// Huber threshold in robust standard deviations (95% efficiency under Gaussian noise).
const HUBER_K: f64 = 1.345;

/// The multi-power law's parameters (all ≥ 0). See the module documentation for the formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiPowerLaw {
    /// Irreducible loss.
    pub l0: f64,
    /// Scale of the power law in the lr area.
    pub a: f64,
    /// Exponent of the power law in the lr area.
    pub alpha: f64,
    /// Scale of the loss drop that lr decreases bring.
    pub b: f64,
    /// Rate at which a decrease's drop is realised, in units of lr area.
    pub c: f64,
    /// Exponent of the drop's saturation.
    pub beta: f64,
    /// How much a smaller lr speeds the realisation of a drop.
    pub gamma: f64,
}

/// One observed curve: the full lr schedule of a run from step 1 (warmup included) and observed
/// `(step, loss)` points (1-based global steps, any subset, increasing).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub lrs: Vec<f64>,
    pub warmup: usize,
    pub points: Vec<(u64, f64)>,
}

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

/// Why a fit could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MplError {
    #[error("no curves to fit")]
    NoCurves,
    #[error("curve {curve} has no observed points")]
    EmptyCurve { curve: usize },
    #[error("curve {curve}: the loss at step {step} is {loss}, not a finite number")]
    NonFiniteLoss { curve: usize, step: u64, loss: f64 },
    #[error("curve {curve}: the learning rate at step {step} is {lr}, not a finite number ≥ 0")]
    BadLr { curve: usize, step: u64, lr: f64 },
    #[error("curve {curve}: warmup of {warmup} steps is longer than its {len}-step schedule")]
    WarmupTooLong {
        curve: usize,
        warmup: usize,
        len: usize,
    },
    #[error("curve {curve}: point at step {step} lies past the end of its {len}-step schedule")]
    StepBeyondSchedule { curve: usize, step: u64, len: usize },
    #[error("curve {curve}: point at step {step} is not a 1-based step after the previous point's")]
    BadStep { curve: usize, step: u64 },
    #[error("prior parameter {name} is {value}, not a finite number ≥ 0")]
    BadPrior { name: &'static str, value: f64 },
    #[error("{got} usable points (after warmup) but the fit needs at least {need}")]
    TooFewPoints { got: usize, need: usize },
    #[error("no convergence: {0}")]
    NoConvergence(&'static str),
}

impl MultiPowerLaw {
    /// Predicted loss at each requested 1-based global step of a run with schedule `lrs` (warmup
    /// steps first; `warmup` is clamped to `lrs.len()`). During warmup this is the law's power
    /// part, L0 + A·(lr area so far)^(−α); a step of 0 or past the schedule gives NaN. Cost per
    /// step: O(number of lr changes before it).
    pub fn predict(&self, lrs: &[f64], warmup: usize, steps: &[u64]) -> Vec<f64> {
        let sched = Schedule::new(lrs, warmup);
        let e = sched.lr_powers(self.gamma);
        steps.iter().map(|&s| sched.loss(self, &e, s)).collect()
    }

    fn to_array(self) -> [f64; 7] {
        [
            self.l0, self.a, self.alpha, self.b, self.c, self.beta, self.gamma,
        ]
    }

    fn from_array(p: [f64; 7]) -> Self {
        let [l0, a, alpha, b, c, beta, gamma] = p;
        Self {
            l0,
            a,
            alpha,
            b,
            c,
            beta,
            gamma,
        }
    }
}

/// A step at which the lr changes: k (as a global step), η_{k−1} − η_k, ln η_k and the lr area
/// before it (so S_k(t) = area(t) − `area_before`).
#[derive(Debug, Clone, Copy)]
struct Change {
    step: u64,
    drop: f64,
    ln_lr: f64,
    area_before: f64,
}

/// Prefix sums of a schedule and its lr changes after warmup.
struct Schedule {
    /// `area[s]` = Σ of the lrs of global steps 1..=s.
    area: Vec<f64>,
    changes: Vec<Change>,
}

impl Schedule {
    fn new(lrs: &[f64], warmup: usize) -> Self {
        let mut area = Vec::with_capacity(lrs.len() + 1);
        let mut acc = 0.0;
        area.push(acc);
        for &lr in lrs {
            acc += lr;
            area.push(acc);
        }
        // η_0 is the last warmup lr; without warmup, η_0 = η_1 (no change at the first step).
        let first = (warmup.min(lrs.len()) + 1).max(2);
        let changes = (first..=lrs.len())
            .filter(|&g| lrs[g - 2] != lrs[g - 1])
            .map(|g| Change {
                step: g as u64,
                drop: lrs[g - 2] - lrs[g - 1],
                ln_lr: lrs[g - 1].ln(),
                area_before: area[g - 1],
            })
            .collect();
        Self { area, changes }
    }

    /// η_k^(−γ) for every change.
    fn lr_powers(&self, gamma: f64) -> Vec<f64> {
        self.changes
            .iter()
            .map(|c| lr_power(c.ln_lr, gamma))
            .collect()
    }

    fn loss(&self, law: &MultiPowerLaw, e: &[f64], step: u64) -> f64 {
        if step == 0 || step as usize >= self.area.len() {
            return f64::NAN;
        }
        let area = self.area[step as usize];
        let n = self.changes.partition_point(|c| c.step <= step);
        let v = decay_sum(&self.changes[..n], e, area, law.c, law.beta);
        law.l0 + law.a * area.powf(-law.alpha) - law.b * v
    }
}

/// η^(−γ) from ln η (+∞ at η = 0 when γ > 0).
fn lr_power(ln_lr: f64, gamma: f64) -> f64 {
    if gamma == 0.0 {
        1.0
    } else {
        (-gamma * ln_lr).exp()
    }
}

/// x = η_k^(−γ)·S_k(t), 0 when no lr has been spent since the change.
#[inline]
fn x_at(e: f64, s: f64) -> f64 {
    if s > 0.0 { e * s } else { 0.0 }
}

/// G(x) = 1 − (C·x + 1)^(−β).
#[inline]
fn g_of(x: f64, c: f64, beta: f64) -> f64 {
    if x == f64::INFINITY {
        if c > 0.0 && beta > 0.0 { 1.0 } else { 0.0 }
    } else {
        -(-beta * (c * x).ln_1p()).exp_m1()
    }
}

/// Σ_k (η_{k−1} − η_k)·G(η_k^(−γ)·S_k(t)) over `changes` (those at or before t), `area` = area(t).
fn decay_sum(changes: &[Change], e: &[f64], area: f64, c: f64, beta: f64) -> f64 {
    changes
        .iter()
        .zip(e)
        .map(|(ch, &ek)| ch.drop * g_of(x_at(ek, area - ch.area_before), c, beta))
        .sum()
}

/// Largest relative spread of S_k(t), and of η_k (in ln η), within a block of lr changes the fit
/// merges into one term of LD.
const MERGE_SPREAD: f64 = 0.05;

/// One term of LD at a fitted point: a change, or a block of consecutive changes merged into
/// their summed drop at their |drop|-weighted mean ln η and lr area.
#[derive(Debug, Clone, Copy)]
struct Term {
    drop: f64,
    ln_lr: f64,
    area_before: f64,
}

/// A point entering the fit.
struct FitPoint {
    #[cfg_attr(not(test), expect(dead_code))]
    step: u64,
    area: f64,
    ln_area: f64,
    /// Its terms of LD, in [`FitCurve::terms`].
    terms: std::ops::Range<usize>,
}

struct FitCurve {
    terms: Vec<Term>,
    points: Vec<FitPoint>,
    /// The curve's first lr change, if a fitted point follows it.
    first_change: Option<Term>,
}

/// Prefix sums over a schedule's changes, to merge any run of them in O(1).
struct ChangeSums {
    drop: Vec<f64>,
    abs: Vec<f64>,
    abs_ln: Vec<f64>,
    abs_area: Vec<f64>,
    zeros: Vec<usize>,
    rises: Vec<usize>,
}

impl ChangeSums {
    fn new(changes: &[Change]) -> Self {
        let mut s = Self {
            drop: vec![0.0],
            abs: vec![0.0],
            abs_ln: vec![0.0],
            abs_area: vec![0.0],
            zeros: vec![0],
            rises: vec![0],
        };
        for c in changes {
            let w = c.drop.abs();
            let zero = c.ln_lr == f64::NEG_INFINITY;
            s.drop.push(s.drop.last().unwrap() + c.drop);
            s.abs.push(s.abs.last().unwrap() + w);
            s.abs_ln
                .push(s.abs_ln.last().unwrap() + if zero { 0.0 } else { w * c.ln_lr });
            s.abs_area
                .push(s.abs_area.last().unwrap() + w * c.area_before);
            s.zeros.push(s.zeros.last().unwrap() + usize::from(zero));
            s.rises
                .push(s.rises.last().unwrap() + usize::from(c.drop < 0.0));
        }
        s
    }

    /// Whether `changes[a..b]` may be merged: no zero lr, drops of one sign, ln η within the
    /// spread at its ends.
    fn mergeable(&self, changes: &[Change], a: usize, b: usize) -> bool {
        let rises = self.rises[b] - self.rises[a];
        self.zeros[b] == self.zeros[a]
            && (rises == 0 || rises == b - a)
            && (changes[a].ln_lr - changes[b - 1].ln_lr).abs() <= MERGE_SPREAD
    }
}

/// Appends the terms of LD at a point of lr area `area` whose changes so far are `changes`:
/// walking back from the latest, each block spans at most `MERGE_SPREAD` of its own S_k(t), so
/// recent changes stay single and old ones merge (O(log(S range)/spread) terms, not O(changes)).
fn push_terms(changes: &[Change], sums: &ChangeSums, area: f64, out: &mut Vec<Term>) {
    let mut b = changes.len();
    while b > 0 {
        let last = changes[b - 1];
        let lo = last.area_before - MERGE_SPREAD * (area - last.area_before);
        let mut a = changes[..b]
            .partition_point(|c| c.area_before < lo)
            .min(b - 1);
        while a + 1 < b && !sums.mergeable(changes, a, b) {
            a += (b - a) / 2;
        }
        if a + 1 == b {
            out.push(Term {
                drop: last.drop,
                ln_lr: last.ln_lr,
                area_before: last.area_before,
            });
        } else {
            let w = sums.abs[b] - sums.abs[a];
            out.push(Term {
                drop: sums.drop[b] - sums.drop[a],
                ln_lr: (sums.abs_ln[b] - sums.abs_ln[a]) / w,
                area_before: (sums.abs_area[b] - sums.abs_area[a]) / w,
            });
        }
        b = a;
    }
}

/// Indices of `k` of `idx`, evenly spread, first and last included.
fn spread(idx: &[usize], k: usize) -> Vec<usize> {
    if k >= idx.len() {
        return idx.to_vec();
    }
    if k == 0 {
        return Vec::new();
    }
    if k == 1 {
        return vec![idx[idx.len() - 1]];
    }
    let r = (idx.len() - 1) as f64 / (k - 1) as f64;
    (0..k)
        .map(|i| idx[(i as f64 * r).round() as usize])
        .collect()
}

/// What [`prepare`] makes of a curve.
struct Prepared {
    curve: FitCurve,
    /// Losses at the fitted points.
    ys: Vec<f64>,
    /// Lowest usable loss before any lr decrease (∞ if none): L0 lies below it.
    min_before_decay: f64,
    /// Highest usable loss.
    max_loss: f64,
    /// Fitted points past an lr decrease.
    n_decay: usize,
}

/// Checks a curve and keeps its usable points (after warmup, some lr spent), subsampled.
fn prepare(ci: usize, curve: &Curve) -> Result<Prepared, MplError> {
    let len = curve.lrs.len();
    if let Some((i, &lr)) = curve
        .lrs
        .iter()
        .enumerate()
        .find(|(_, lr)| !(lr.is_finite() && **lr >= 0.0))
    {
        return Err(MplError::BadLr {
            curve: ci,
            step: i as u64 + 1,
            lr,
        });
    }
    if curve.warmup > len {
        return Err(MplError::WarmupTooLong {
            curve: ci,
            warmup: curve.warmup,
            len,
        });
    }
    if curve.points.is_empty() {
        return Err(MplError::EmptyCurve { curve: ci });
    }
    let mut prev = 0;
    for &(step, loss) in &curve.points {
        if step <= prev {
            return Err(MplError::BadStep { curve: ci, step });
        }
        if step as usize > len {
            return Err(MplError::StepBeyondSchedule {
                curve: ci,
                step,
                len,
            });
        }
        if !loss.is_finite() {
            return Err(MplError::NonFiniteLoss {
                curve: ci,
                step,
                loss,
            });
        }
        prev = step;
    }
    let sched = Schedule::new(&curve.lrs, curve.warmup);
    let usable: Vec<usize> = (0..curve.points.len())
        .filter(|&i| {
            let s = curve.points[i].0;
            s as usize > curve.warmup && sched.area[s as usize] > 0.0
        })
        .collect();
    // Past the first lr decrease: the region that identifies the decay term, kept denser.
    let first_decrease = sched
        .changes
        .iter()
        .find(|c| c.drop > 0.0)
        .map_or(u64::MAX, |c| c.step);
    let (decay, stable): (Vec<usize>, Vec<usize>) = usable
        .iter()
        .partition(|&&i| curve.points[i].0 >= first_decrease);
    let loss = |i: &usize| curve.points[*i].1;
    let min_before_decay = stable.iter().map(loss).fold(f64::INFINITY, f64::min);
    let max_loss = usable.iter().map(loss).fold(f64::NEG_INFINITY, f64::max);
    let n_decay = decay
        .len()
        .min((POINTS_PER_CURVE / 2).max(POINTS_PER_CURVE.saturating_sub(stable.len())));
    let n_stable = (POINTS_PER_CURVE - n_decay).min(stable.len());
    let mut kept = spread(&stable, n_stable);
    kept.extend(spread(&decay, n_decay));
    kept.sort_unstable();
    let last_step = kept.last().map_or(0, |&i| curve.points[i].0);
    let changes = &sched.changes[..sched.changes.partition_point(|c| c.step <= last_step)];
    let sums = ChangeSums::new(changes);
    let mut terms = Vec::new();
    let points = kept
        .iter()
        .map(|&i| {
            let step = curve.points[i].0;
            let area = sched.area[step as usize];
            let start = terms.len();
            let n = changes.partition_point(|c| c.step <= step);
            push_terms(&changes[..n], &sums, area, &mut terms);
            FitPoint {
                step,
                area,
                ln_area: area.ln(),
                terms: start..terms.len(),
            }
        })
        .collect();
    let first_change = changes.first().map(|c| Term {
        drop: c.drop,
        ln_lr: c.ln_lr,
        area_before: c.area_before,
    });
    let ys = kept.iter().map(|&i| curve.points[i].1).collect();
    let n_decay_kept = kept
        .iter()
        .filter(|&&i| curve.points[i].0 >= first_decrease)
        .count();
    Ok(Prepared {
        curve: FitCurve {
            terms,
            points,
            first_change,
        },
        ys,
        min_before_decay,
        max_loss,
        n_decay: n_decay_kept,
    })
}

/// Bounds of the optimised coordinates: z of L0 = m·sigmoid(z), then ln A, ln α, ln B, ln C,
/// ln β, ln γ.
const THETA_LO: [f64; 7] = [-40.0, -27.6, -9.2, -27.6, -23.0, -9.2, -9.2];
const THETA_HI: [f64; 7] = [40.0, 27.6, 1.61, 27.6, 23.0, 1.61, 1.61];

struct Problem {
    curves: Vec<FitCurve>,
    y: Vec<f64>,
    /// Upper bound of L0 (≥ 0): the lowest loss before any lr decrease (the law is L0 plus a
    /// positive term there), else the highest loss.
    l0_max: f64,
    /// 7: every parameter fitted; 3: only L0, A, α (the rest held at `held`).
    free: usize,
    held: MultiPowerLaw,
}

impl Problem {
    fn theta_of(&self, p: &[f64; 7]) -> [f64; 7] {
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

    fn params_of(&self, t: &[f64; 7]) -> [f64; 7] {
        let mut p = self.held.to_array();
        p[0] = self.l0_max / (1.0 + (-t[0]).exp());
        for j in 1..self.free {
            p[j] = t[j].exp();
        }
        p
    }

    /// Predictions at every fitted point and, when `jac` is given, their derivatives by the
    /// free coordinates of `theta_of` (row-major, `free` columns).
    fn eval(&self, p: &[f64; 7], pred: &mut [f64], mut jac: Option<&mut [f64]>) {
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
    fn lm(&self, start: &[f64; 7], delta: f64, max_iters: usize) -> Option<([f64; 7], f64, bool)> {
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
    fn starts(&self, prior: &MultiPowerLaw) -> Vec<[f64; 7]> {
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

fn median(v: &mut [f64]) -> f64 {
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
fn box_least_squares(
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

/// Fits every parameter jointly on all curves (they share one law: e.g. a trunk and its decay
/// branches, whose lrs include the shared history). Points during warmup (and before any lr is
/// spent) are not fitted. The decay term's parameters (B, C, β, γ) are only identifiable if
/// some curve has points past an lr decrease; with fewer than 8 such (fitted) points they are
/// held at `prior`'s values and only L0, A, α are fitted. `prior`'s exponents also seed the
/// search. See the module documentation for the method. Returns the fit and its RMS residual,
/// or why it could not be made (bad input, too few points, no finite fit).
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const PEAK: f64 = 0.01;

    fn truth() -> MultiPowerLaw {
        MultiPowerLaw {
            l0: 2.0,
            a: 0.5,
            alpha: 0.5,
            b: 25.0,
            c: 2.0,
            beta: 0.6,
            gamma: 0.5,
        }
    }

    /// A prior unlike the truth, so holding or refining it is visible.
    fn prior() -> MultiPowerLaw {
        MultiPowerLaw {
            l0: 1.0,
            a: 1.0,
            alpha: 0.3,
            b: 10.0,
            c: 1.0,
            beta: 0.5,
            gamma: 0.4,
        }
    }

    /// Linear warmup to `PEAK` over `warmup` steps, then constant, `len` steps in all.
    fn stable(warmup: usize, len: usize) -> Vec<f64> {
        (1..=len)
            .map(|s| {
                if s <= warmup {
                    PEAK * s as f64 / warmup as f64
                } else {
                    PEAK
                }
            })
            .collect()
    }

    enum Decay {
        /// Geometric to the fraction of the peak.
        Exp(f64),
        /// Linear to the fraction of the peak.
        Linear(f64),
    }

    /// `trunk[..fork]` followed by a `len`-step decay from the peak.
    fn branch(trunk: &[f64], fork: usize, len: usize, decay: Decay) -> Vec<f64> {
        let mut lrs = trunk[..fork].to_vec();
        lrs.extend((1..=len).map(|j| {
            let f = j as f64 / len as f64;
            match decay {
                Decay::Exp(end) => PEAK * end.powf(f),
                Decay::Linear(end) => PEAK * (1.0 - (1.0 - end) * f),
            }
        }));
        lrs
    }

    /// The law straight from its definition, O(t²).
    fn direct(law: &MultiPowerLaw, lrs: &[f64], warmup: usize, step: usize) -> f64 {
        let t = step - warmup;
        let eta = |k: usize| lrs[warmup + k - 1];
        let eta0 = lrs[warmup - 1];
        let sw: f64 = lrs[..warmup].iter().sum();
        let s1: f64 = (1..=t).map(eta).sum();
        let ld: f64 = (1..=t)
            .map(|k| {
                let prev = if k == 1 { eta0 } else { eta(k - 1) };
                let sk: f64 = (k..=t).map(eta).sum();
                let x = eta(k).powf(-law.gamma) * sk;
                (prev - eta(k)) * (1.0 - (law.c * x + 1.0).powf(-law.beta))
            })
            .sum();
        law.l0 + law.a * (s1 + sw).powf(-law.alpha) - law.b * ld
    }

    /// Deterministic noise uniform in ±`amp` (a 64-bit LCG).
    fn noise(seed: u64, amp: f64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            amp * (2.0 * (state >> 11) as f64 / (1u64 << 53) as f64 - 1.0)
        }
    }

    fn observe(
        law: &MultiPowerLaw,
        lrs: &[f64],
        warmup: usize,
        steps: std::ops::RangeInclusive<u64>,
        rng: &mut impl FnMut() -> f64,
    ) -> Curve {
        let steps: Vec<u64> = steps.collect();
        let losses = law.predict(lrs, warmup, &steps);
        Curve {
            lrs: lrs.to_vec(),
            warmup,
            points: steps
                .into_iter()
                .zip(losses)
                .map(|(s, l)| (s, l + rng()))
                .collect(),
        }
    }

    #[test]
    fn a_constant_schedule_is_a_pure_power_law() {
        let law = truth();
        for warmup in [0, 1, 30] {
            let lrs: Vec<f64> = if warmup == 0 {
                vec![PEAK; 200]
            } else {
                stable(warmup, 200)
            };
            let steps: Vec<u64> = (1..=200).collect();
            let got = law.predict(&lrs, warmup, &steps);
            for (&s, &l) in steps.iter().zip(&got) {
                let area: f64 = lrs[..s as usize].iter().sum();
                assert_eq!(l, law.l0 + law.a * area.powf(-law.alpha), "step {s}");
            }
        }
        assert!(law.predict(&[PEAK; 5], 0, &[0, 6])[0].is_nan());
        assert!(law.predict(&[PEAK; 5], 0, &[0, 6])[1].is_nan());
    }

    #[test]
    fn predict_matches_the_direct_quadratic_formula() {
        let law = truth();
        let trunk = stable(20, 400);
        for lrs in [
            branch(&trunk, 250, 150, Decay::Exp(0.05)),
            branch(&trunk, 250, 150, Decay::Linear(0.01)),
            // Decay, a short re-warm, then a linear decay again.
            {
                let mut l = branch(&trunk, 100, 50, Decay::Exp(0.3));
                l.extend([0.005, 0.008, 0.01]);
                l.extend(branch(&trunk, 0, 100, Decay::Linear(0.1)));
                l
            },
        ] {
            let steps: Vec<u64> = (21..=lrs.len() as u64).collect();
            let got = law.predict(&lrs, 20, &steps);
            for (&s, &l) in steps.iter().zip(&got) {
                let want = direct(&law, &lrs, 20, s as usize);
                assert!(((l - want) / want).abs() < 1e-12, "step {s}: {l} vs {want}");
            }
        }
    }

    #[test]
    fn a_zero_lr_stops_the_curve() {
        let law = truth();
        let mut lrs = branch(&stable(10, 300), 200, 50, Decay::Linear(0.0));
        lrs.extend([0.0; 20]);
        let steps: Vec<u64> = (240..=lrs.len() as u64).collect();
        let got = law.predict(&lrs, 10, &steps);
        assert!(got.iter().all(|l| l.is_finite()), "{got:?}");
        let at_zero = got[(250 - 240) as usize];
        for &l in &got[(250 - 240) as usize..] {
            assert_eq!(l, at_zero);
        }
        // Continuous with an lr that only nearly reaches 0.
        let mut near = lrs.clone();
        near[249..].iter_mut().for_each(|l| *l = 1e-15);
        let near_loss = law.predict(&near, 10, &[250])[0];
        assert!(
            (near_loss - at_zero).abs() < 1e-5,
            "{near_loss} vs {at_zero}"
        );
    }

    #[test]
    fn recovers_a_known_law_and_predicts_an_unseen_branch() {
        let law = truth();
        let warmup = 50;
        let stable_lrs = stable(warmup, 600);
        let trunk = branch(&stable_lrs, 540, 60, Decay::Exp(0.1));
        let b300 = branch(&stable_lrs, 300, 60, Decay::Exp(0.1));
        let b420 = branch(&stable_lrs, 420, 60, Decay::Exp(0.1));
        let mut rng = noise(7, 0.002);
        let curves = vec![
            observe(&law, &trunk, warmup, 1..=600, &mut rng),
            observe(&law, &b300, warmup, 301..=360, &mut rng),
            observe(&law, &b420, warmup, 421..=480, &mut rng),
        ];
        let t0 = Instant::now();
        let fit = fit_multi_power_law(&curves, &prior()).unwrap();
        let elapsed = t0.elapsed();
        eprintln!(
            "mpl fit of 3 curves ({} points used): {elapsed:?}, rms {:.5}, {:?}",
            fit.points, fit.rms, fit.law
        );
        assert!(fit.decay_fitted);
        assert!(fit.rms < 0.002, "{fit:?}");
        assert!(fit.law.l0 >= 0.0 && fit.law.l0 <= 2.2, "{fit:?}");
        for c in &curves {
            let last = c.lrs.len() as u64;
            let got = fit.law.predict(&c.lrs, warmup, &[last])[0];
            let want = law.predict(&c.lrs, warmup, &[last])[0];
            eprintln!(
                "final loss at {last}: fitted {got:.5}, true {want:.5}, error {:.5}",
                got - want
            );
            assert!((got - want).abs() < 0.01, "step {last}: {got} vs {want}");
        }
        let unseen = branch(&stable_lrs, 360, 60, Decay::Linear(0.0));
        let got = fit.law.predict(&unseen, warmup, &[420])[0];
        let want = law.predict(&unseen, warmup, &[420])[0];
        eprintln!(
            "unseen branch (fork 360, linear to 0): fitted {got:.5}, true {want:.5}, error {:.5}",
            got - want
        );
        assert!((got - want).abs() < 0.02, "{got} vs {want}");
    }

    #[test]
    fn loss_spikes_do_not_pull_the_fit() {
        let law = truth();
        let stable_lrs = stable(50, 600);
        let trunk = branch(&stable_lrs, 540, 60, Decay::Exp(0.1));
        let b300 = branch(&stable_lrs, 300, 60, Decay::Exp(0.1));
        let mut rng = noise(11, 0.002);
        let mut curves = vec![
            observe(&law, &trunk, 50, 51..=600, &mut rng),
            observe(&law, &b300, 50, 301..=360, &mut rng),
        ];
        // Spikes of +0.3 on every 25th trunk point, decay region included.
        for p in curves[0].points.iter_mut().step_by(25) {
            p.1 += 0.3;
        }
        let fit = fit_multi_power_law(&curves, &prior()).unwrap();
        for c in &curves {
            let last = c.lrs.len() as u64;
            let got = fit.law.predict(&c.lrs, 50, &[last])[0];
            let want = law.predict(&c.lrs, 50, &[last])[0];
            assert!((got - want).abs() < 0.01, "step {last}: {got} vs {want}");
        }
    }

    #[test]
    fn l0_may_lie_above_the_decayed_losses() {
        // A strong decay term: the decayed losses end ~0.2 below L0 = 2.5, so bounding L0 by the
        // lowest observed loss would bias the whole fit.
        let law = MultiPowerLaw {
            l0: 2.5,
            a: 0.4,
            alpha: 0.7,
            b: 40.0,
            c: 10.0,
            beta: 1.0,
            gamma: 0.9,
        };
        let stable_lrs = stable(50, 600);
        let trunk = branch(&stable_lrs, 540, 60, Decay::Exp(0.1));
        let b300 = branch(&stable_lrs, 300, 60, Decay::Exp(0.1));
        let mut rng = noise(19, 0.002);
        let curves = vec![
            observe(&law, &trunk, 50, 1..=600, &mut rng),
            observe(&law, &b300, 50, 301..=360, &mut rng),
        ];
        let lowest = curves[0].points.last().unwrap().1;
        assert!(lowest < law.l0 - 0.1, "{lowest}");
        let fit = fit_multi_power_law(&curves, &prior()).unwrap();
        assert!(fit.rms < 0.002, "{fit:?}");
        assert!(fit.law.l0 > lowest, "{fit:?}");
        for c in &curves {
            let last = c.lrs.len() as u64;
            let got = fit.law.predict(&c.lrs, 50, &[last])[0];
            let want = law.predict(&c.lrs, 50, &[last])[0];
            assert!((got - want).abs() < 0.01, "step {last}: {got} vs {want}");
        }
    }

    #[test]
    fn stable_points_alone_hold_the_decay_term_at_the_prior() {
        let law = truth();
        // The schedule decays after step 500, but only stable-phase points are observed.
        let lrs = branch(&stable(50, 600), 500, 100, Decay::Exp(0.1));
        let mut rng = noise(3, 0.002);
        let curves = vec![observe(&law, &lrs, 50, 1..=500, &mut rng)];
        let pr = prior();
        let fit = fit_multi_power_law(&curves, &pr).unwrap();
        assert!(!fit.decay_fitted);
        assert_eq!(
            (fit.law.b, fit.law.c, fit.law.beta, fit.law.gamma),
            (pr.b, pr.c, pr.beta, pr.gamma)
        );
        assert_eq!(fit.points, 256);
        assert!(fit.rms < 0.002, "{fit:?}");
        let got = fit.law.predict(&lrs, 50, &[500])[0];
        let want = law.predict(&lrs, 50, &[500])[0];
        assert!((got - want).abs() < 0.005, "{got} vs {want}");
    }

    #[test]
    fn subsampling_keeps_the_last_point_and_a_dense_decay() {
        let lrs = branch(&stable(100, 5000), 4000, 1000, Decay::Exp(0.1));
        let curve = Curve {
            lrs,
            warmup: 100,
            points: (1..=5000).map(|s| (s, 3.0)).collect(),
        };
        let prep = prepare(0, &curve).unwrap();
        let fc = &prep.curve;
        assert_eq!((fc.points.len(), prep.ys.len()), (256, 256));
        assert_eq!((prep.min_before_decay, prep.max_loss), (3.0, 3.0));
        assert_eq!(prep.n_decay, 128);
        assert_eq!(fc.points.last().unwrap().step, 5000);
        assert!(fc.first_change.is_some());
    }

    #[test]
    fn bad_input_is_named() {
        let pr = prior();
        let lrs = stable(10, 100);
        let curve = |points: Vec<(u64, f64)>| Curve {
            lrs: lrs.clone(),
            warmup: 10,
            points,
        };
        assert_eq!(fit_multi_power_law(&[], &pr), Err(MplError::NoCurves));
        let e = fit_multi_power_law(&[curve(vec![])], &pr).unwrap_err();
        assert_eq!(e, MplError::EmptyCurve { curve: 0 });
        assert!(e.to_string().contains("no observed points"), "{e}");

        let good: Vec<(u64, f64)> = (11..=60).map(|s| (s, 3.0 - s as f64 * 1e-3)).collect();
        let mut nan = good.clone();
        nan[5].1 = f64::NAN;
        let e = fit_multi_power_law(&[curve(good.clone()), curve(nan)], &pr).unwrap_err();
        assert!(
            matches!(e, MplError::NonFiniteLoss { curve: 1, step: 16, loss } if loss.is_nan()),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("NaN") && e.to_string().contains("16"),
            "{e}"
        );

        let mut past = good.clone();
        past.push((101, 2.0));
        let e = fit_multi_power_law(&[curve(past)], &pr).unwrap_err();
        assert_eq!(
            e,
            MplError::StepBeyondSchedule {
                curve: 0,
                step: 101,
                len: 100
            }
        );
        assert!(
            e.to_string().contains("101") && e.to_string().contains("100"),
            "{e}"
        );

        let mut bad_lr = curve(good.clone());
        bad_lr.lrs[41] = -1e-3;
        let e = fit_multi_power_law(&[bad_lr], &pr).unwrap_err();
        assert!(
            e.to_string().contains("-0.001") && e.to_string().contains("42"),
            "{e}"
        );

        let e = fit_multi_power_law(&[curve(vec![(12, 3.0), (12, 2.9)])], &pr).unwrap_err();
        assert_eq!(e, MplError::BadStep { curve: 0, step: 12 });

        // Points only during warmup leave nothing to fit.
        let e = fit_multi_power_law(&[curve(vec![(3, 3.5), (9, 3.1)])], &pr).unwrap_err();
        assert_eq!(e, MplError::TooFewPoints { got: 0, need: 4 });

        let e = fit_multi_power_law(
            &[curve(good)],
            &MultiPowerLaw {
                gamma: f64::NAN,
                ..pr
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("gamma") && e.to_string().contains("NaN"),
            "{e}"
        );
    }

    #[test]
    fn box_least_squares_respects_bounds() {
        // y = 1 + 2x exactly; with the slope capped at 1 the intercept absorbs the rest.
        let xs = [0.0, 1.0, 2.0, 3.0];
        let mut gram = [[0.0; 3]; 3];
        let mut xty = [0.0; 3];
        let mut yty = 0.0;
        for &x in &xs {
            let (row, y) = ([1.0, x, 0.0], 1.0 + 2.0 * x);
            for a in 0..2 {
                xty[a] += row[a] * y;
                for b in 0..2 {
                    gram[a][b] += row[a] * row[b];
                }
            }
            yty += y * y;
        }
        let inf = f64::INFINITY;
        let (x, err) = box_least_squares(&gram, &xty, yty, 2, &[0.0; 3], &[inf; 3]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 2.0).abs() < 1e-12 && err.abs() < 1e-9);
        let (x, _) = box_least_squares(&gram, &xty, yty, 2, &[0.0; 3], &[inf, 1.0, inf]).unwrap();
        assert!(
            (x[1] - 1.0).abs() < 1e-12 && (x[0] - 2.5).abs() < 1e-12,
            "{x:?}"
        );
    }

    /// The problem of fitting one curve with every parameter free, `law` as the held values.
    fn one_curve_problem(curve: &Curve, law: &MultiPowerLaw) -> Problem {
        let prep = prepare(0, curve).unwrap();
        Problem {
            curves: vec![prep.curve],
            y: prep.ys,
            l0_max: 3.0,
            free: 7,
            held: *law,
        }
    }

    #[test]
    fn merged_terms_match_the_exact_law_on_long_decays() {
        let law = truth();
        let st = stable(1000, 100_000);
        // (schedule, whether its changes are dense enough to merge)
        for (lrs, merges) in [
            (branch(&st, 80_000, 20_000, Decay::Exp(0.1)), true),
            (branch(&st, 80_000, 20_000, Decay::Linear(0.0)), true),
            // Step decay: few changes, far apart, none merged.
            (
                (1..=100_000)
                    .map(|s: i32| PEAK * 0.3f64.powi(s / 20_000))
                    .collect(),
                false,
            ),
        ] {
            let curve = Curve {
                lrs,
                warmup: 1000,
                points: (1001..=100_000).map(|s| (s, 3.0)).collect(),
            };
            let problem = one_curve_problem(&curve, &law);
            let fc = &problem.curves[0];
            let steps: Vec<u64> = fc.points.iter().map(|p| p.step).collect();
            let exact = law.predict(&curve.lrs, 1000, &steps);
            let mut merged = vec![0.0; steps.len()];
            problem.eval(&law.to_array(), &mut merged, None);
            let worst = exact
                .iter()
                .zip(&merged)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let sched = Schedule::new(&curve.lrs, 1000);
            let pairs: usize = steps
                .iter()
                .map(|&s| sched.changes.partition_point(|c| c.step <= s))
                .sum();
            eprintln!(
                "merged LD: {} terms for {pairs} exact pairs, worst error {worst:.2e}",
                fc.terms.len()
            );
            assert!(worst < 1e-4, "{worst}");
            if merges {
                assert!(fc.terms.len() * 20 < pairs, "{} vs {pairs}", fc.terms.len());
            } else {
                assert_eq!(fc.terms.len(), pairs);
            }
        }
    }

    #[test]
    fn the_jacobian_matches_finite_differences() {
        let law = MultiPowerLaw { l0: 1.5, ..truth() };
        let stable_lrs = stable(50, 600);
        let curve = Curve {
            lrs: branch(&stable_lrs, 400, 200, Decay::Linear(0.0)),
            warmup: 50,
            points: (51..=600).map(|s| (s, 3.0)).collect(),
        };
        let problem = one_curve_problem(&curve, &law);
        let n = problem.y.len();
        let p = law.to_array();
        let theta = problem.theta_of(&p);
        let (mut pred, mut jac) = (vec![0.0; n], vec![0.0; n * 7]);
        problem.eval(&p, &mut pred, Some(&mut jac));
        for j in 0..7 {
            let h = 1e-6;
            let (mut up, mut down) = (theta, theta);
            up[j] += h;
            down[j] -= h;
            let (mut pu, mut pd) = (vec![0.0; n], vec![0.0; n]);
            problem.eval(&problem.params_of(&up), &mut pu, None);
            problem.eval(&problem.params_of(&down), &mut pd, None);
            for i in 0..n {
                let fd = (pu[i] - pd[i]) / (2.0 * h);
                let an = jac[i * 7 + j];
                assert!(
                    (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
                    "parameter {j}, point {i}: analytic {an}, numeric {fd}"
                );
            }
        }
    }
}
