//! The law itself: its parameters, and the loss it predicts for a schedule, exactly, from
//! prefix sums of the lrs and the steps at which the lr changes.

/// The multi-power law's parameters (all ≥ 0). See the documentation of [`crate::mpl`] for the
/// formula.
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

    pub(super) fn to_array(self) -> [f64; 7] {
        [
            self.l0, self.a, self.alpha, self.b, self.c, self.beta, self.gamma,
        ]
    }

    pub(super) fn from_array(p: [f64; 7]) -> Self {
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
pub(super) struct Change {
    pub(super) step: u64,
    pub(super) drop: f64,
    pub(super) ln_lr: f64,
    pub(super) area_before: f64,
}

/// Prefix sums of a schedule and its lr changes after warmup.
pub(super) struct Schedule {
    /// `area[s]` = Σ of the lrs of global steps 1..=s.
    pub(super) area: Vec<f64>,
    pub(super) changes: Vec<Change>,
}

impl Schedule {
    pub(super) fn new(lrs: &[f64], warmup: usize) -> Self {
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
pub(super) fn lr_power(ln_lr: f64, gamma: f64) -> f64 {
    if gamma == 0.0 {
        1.0
    } else {
        (-gamma * ln_lr).exp()
    }
}

/// x = η_k^(−γ)·S_k(t), 0 when no lr has been spent since the change.
#[inline]
pub(super) fn x_at(e: f64, s: f64) -> f64 {
    if s > 0.0 { e * s } else { 0.0 }
}

/// G(x) = 1 − (C·x + 1)^(−β).
#[inline]
pub(super) fn g_of(x: f64, c: f64, beta: f64) -> f64 {
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
