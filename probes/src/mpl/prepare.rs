//! The preparation of a fit's data: each observed curve checked, its usable points
//! subsampled (the decay region kept denser), and each point's terms of LD, with the lr
//! changes of its far past merged into blocks.

use super::error::MplError;
use super::law::{Change, Schedule};

/// One observed curve: the full lr schedule of a run from step 1 (warmup included) and observed
/// `(step, loss)` points (1-based global steps, any subset, increasing).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub lrs: Vec<f64>,
    pub warmup: usize,
    pub points: Vec<(u64, f64)>,
}

/// Most points of one curve that enter a fit (the rest are subsampled away).
const POINTS_PER_CURVE: usize = 256;

/// Largest relative spread of S_k(t), and of η_k (in ln η), within a block of lr changes the fit
/// merges into one term of LD.
const MERGE_SPREAD: f64 = 0.05;

/// One term of LD at a fitted point: a change, or a block of consecutive changes merged into
/// their summed drop at their |drop|-weighted mean ln η and lr area.
#[derive(Debug, Clone, Copy)]
pub(super) struct Term {
    pub(super) drop: f64,
    pub(super) ln_lr: f64,
    pub(super) area_before: f64,
}

/// A point entering the fit.
pub(super) struct FitPoint {
    #[cfg_attr(not(test), expect(dead_code))]
    pub(super) step: u64,
    pub(super) area: f64,
    pub(super) ln_area: f64,
    /// Its terms of LD, in [`FitCurve::terms`].
    pub(super) terms: std::ops::Range<usize>,
}

pub(super) struct FitCurve {
    pub(super) terms: Vec<Term>,
    pub(super) points: Vec<FitPoint>,
    /// The curve's first lr change, if a fitted point follows it.
    pub(super) first_change: Option<Term>,
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
pub(super) struct Prepared {
    pub(super) curve: FitCurve,
    /// Losses at the fitted points.
    pub(super) ys: Vec<f64>,
    /// Lowest usable loss before any lr decrease (∞ if none): L0 lies below it.
    pub(super) min_before_decay: f64,
    /// Highest usable loss.
    pub(super) max_loss: f64,
    /// Fitted points past an lr decrease.
    pub(super) n_decay: usize,
}

/// Checks a curve and keeps its usable points (after warmup, some lr spent), subsampled.
pub(super) fn prepare(ci: usize, curve: &Curve) -> Result<Prepared, MplError> {
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
