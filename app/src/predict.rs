//! Predicting a decay branch before it runs: the multi-power law (Luo et al. 2025; see
//! `wsdscope_probes::mpl`) fitted on every run's training-loss curve so far — the trunk's,
//! and the branches' that already ran — then evaluated on a branch's schedule (its parent's lr
//! history up to the fork, its own decay after).
//!
//! Until some run has decayed, the law's decay term (B, C, β, γ) cannot be fitted and comes
//! from [`prior`]; predictions then say so (`decay_fitted` false). Shared by the TUI (live and
//! replay) and `inspect`, over the plain [`RunCurve`] facts both have.

use std::collections::BTreeMap;

use wsdscope_probes::{Curve, MplFit, MultiPowerLaw, fit_multi_power_law};
use wsdscope_sessions::{RunEvent, RunId};
use wsdscope_trainer::Schedule;

/// What the fit needs of one run.
#[derive(Debug, Clone)]
pub struct RunCurve {
    pub id: RunId,
    pub parent: Option<RunId>,
    pub fork_step: Option<u64>,
    pub schedule: Schedule,
    /// The run's own training steps and losses (a branch's start after its fork).
    pub steps: Vec<u64>,
    pub loss: Vec<f64>,
}

/// The loss a full decay of the peak lr removes in the prior's law (B·η_peak, nats), from a
/// calibration on sessions of the default preset (`scripts/calibrate-decay-prior`, which
/// records them with seeds no test uses, and the ignored test `calibrate_decay_prior` below,
/// which fits this one number by least squares over every fork's prediction).
pub const PRIOR_DROP: f64 = 0.68;

/// How far predictions made with the prior land from what the branches did, in the
/// calibration (root-mean-square error, nats): the uncertainty they are reported with.
pub const PRIOR_SPREAD: f64 = 0.07;

/// The decay term's values before any decay has been seen: B such that a full decay of the
/// peak lr η removes [`PRIOR_DROP`] (B·η), and C, β, γ at mid-range values of the law. Once
/// a run has decayed, all seven are fitted.
pub fn prior(peak_lr: f64) -> MultiPowerLaw {
    MultiPowerLaw {
        l0: 1.0,
        a: 1.0,
        alpha: 0.5,
        b: PRIOR_DROP / peak_lr.max(1e-12),
        c: 2.0,
        beta: 0.6,
        gamma: 0.5,
    }
}

/// The lr of every step 1..=total of run `id`: its ancestors' lrs up to each fork, then its own.
pub fn lrs(curves: &[RunCurve], id: RunId) -> Option<Vec<f64>> {
    let r = curves.iter().find(|c| c.id == id)?;
    let total = r.schedule.total();
    let mut out: Vec<f64> = match (r.parent, r.fork_step) {
        (Some(p), Some(at)) if p != id => {
            let mut h = lrs(curves, p)?;
            h.truncate(at as usize);
            h.resize(at as usize, *h.last().unwrap_or(&0.0));
            h
        }
        _ => Vec::new(),
    };
    let from = out.len() as u64 + 1;
    out.extend((from..=total).map(|s| r.schedule.lr(s)));
    Some(out)
}

/// Steps that belong to the warmup of the trunk (the law starts after it).
fn warmup_of(curves: &[RunCurve]) -> usize {
    curves
        .iter()
        .find(|c| c.parent.is_none())
        .map(|c| c.schedule.bounds().warmup_end as usize)
        .unwrap_or(0)
}

/// Means of the losses over bins of about `len/128` consecutive steps: the noise averages out
/// and, unlike an EMA, nothing lags behind a drop.
fn binned(steps: &[u64], loss: &[f64]) -> Vec<(u64, f64)> {
    let n = steps.len().min(loss.len());
    let w = (n / 128).max(1);
    let mut out = Vec::with_capacity(n / w + 1);
    let mut i = 0;
    while i < n {
        let j = (i + w).min(n);
        let fin: Vec<(u64, f64)> = (i..j)
            .filter(|&k| loss[k].is_finite())
            .map(|k| (steps[k], loss[k]))
            .collect();
        if !fin.is_empty() {
            let step = fin.iter().map(|p| p.0).sum::<u64>() / fin.len() as u64;
            let l = fin.iter().map(|p| p.1).sum::<f64>() / fin.len() as f64;
            if out.last().is_none_or(|&(s, _)| step > s) {
                out.push((step, l));
            }
        }
        i = j;
    }
    out
}

/// Fits the law on every run with enough steps past the warmup.
pub fn fit(curves: &[RunCurve]) -> Option<MplFit> {
    let warmup = warmup_of(curves);
    let peak = curves
        .iter()
        .find(|c| c.parent.is_none())
        .map(|c| c.schedule.peak())?;
    let mut data = Vec::new();
    for c in curves {
        let points: Vec<(u64, f64)> = binned(&c.steps, &c.loss)
            .into_iter()
            .filter(|&(s, _)| s as usize > warmup)
            .collect();
        if points.len() < 3 {
            continue;
        }
        let lrs = lrs(curves, c.id)?;
        data.push(Curve {
            lrs,
            warmup,
            points,
        });
    }
    if data.is_empty() {
        return None;
    }
    fit_multi_power_law(&data, &prior(peak)).ok()
}

/// The law's loss for run `id` at `steps` (global steps).
pub fn curve(fit: &MplFit, curves: &[RunCurve], id: RunId, steps: &[u64]) -> Option<Vec<f64>> {
    let lrs = lrs(curves, id)?;
    Some(fit.law.predict(&lrs, warmup_of(curves), steps))
}

/// Steps of a branch of `len` steps over which its end is compared: the last fifth, at least
/// 5 (single training losses are noisy; a window mean of predicted against observed is not).
pub fn tail_len(len: u64) -> u64 {
    (len / 5).max(5).min(len)
}

/// The predicted mean training loss over the last [`tail_len`] steps of a branch that runs
/// from after `at` to `end`.
pub fn predicted_tail(
    fit: &MplFit,
    curves: &[RunCurve],
    id: RunId,
    at: u64,
    end: u64,
) -> Option<f64> {
    let k = tail_len(end.saturating_sub(at));
    if k == 0 {
        return None;
    }
    let steps: Vec<u64> = (end + 1 - k..=end).collect();
    let v = curve(fit, curves, id, &steps)?;
    let fin: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
    (!fin.is_empty()).then(|| fin.iter().sum::<f64>() / fin.len() as f64)
}

/// The observed mean training loss over the last [`tail_len`] of a run's own step losses:
/// what a predicted end is compared with.
pub fn actual_final(loss: &[f64]) -> Option<f64> {
    let n = loss.len();
    if n == 0 {
        return None;
    }
    let k = tail_len(n as u64) as usize;
    let tail: Vec<f64> = loss[n - k..n]
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64)
}

/// A branch's final loss as predicted when it was forked, and as it turned out.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchPrediction {
    pub run: RunId,
    pub fork_step: u64,
    pub end_step: u64,
    /// Predicted mean training loss over the branch's last [`tail_len`] steps, from the runs
    /// seen before the fork.
    pub before: f64,
    /// Whether that fit had seen a decay (false: the decay term came from the prior).
    pub decay_fitted: bool,
    /// Observed mean training loss over the same steps, once it completed.
    pub actual: Option<f64>,
}

impl BranchPrediction {
    /// The prediction's uncertainty (nats, one RMS error): the prior's calibrated spread when
    /// the decay term came from it; `None` when it was fitted on the run's own decays.
    pub fn uncertainty(&self) -> Option<f64> {
        (!self.decay_fitted).then_some(PRIOR_SPREAD)
    }
}

/// Run curves rebuilt from an event stream (steps and `run_start`s only).
#[derive(Debug, Clone, Default)]
pub struct Curves {
    pub runs: BTreeMap<RunId, RunCurve>,
}

impl Curves {
    pub fn apply(&mut self, ev: &RunEvent) {
        match ev {
            RunEvent::RunStart(s) => {
                let Some(schedule) = s
                    .config
                    .get("schedule")
                    .and_then(|v| serde_json::from_value::<Schedule>(v.clone()).ok())
                else {
                    return;
                };
                let c = self.runs.entry(s.run).or_insert_with(|| RunCurve {
                    id: s.run,
                    parent: s.parent,
                    fork_step: s.fork_step,
                    schedule: schedule.clone(),
                    steps: Vec::new(),
                    loss: Vec::new(),
                });
                // A resume restarts the run after its start step.
                let keep = c.steps.partition_point(|&x| x <= s.start_step);
                c.steps.truncate(keep);
                c.loss.truncate(keep);
                c.schedule = schedule;
            }
            RunEvent::Step(m) => {
                if let Some(c) = self.runs.get_mut(&m.run) {
                    c.steps.push(m.step);
                    c.loss.push(m.loss);
                }
            }
            _ => {}
        }
    }

    pub fn list(&self) -> Vec<RunCurve> {
        self.runs.values().cloned().collect()
    }
}

/// What the TUI shows of a branch's prediction: the curve predicted at its fork, the one from
/// the latest refit while it runs, and how its end compares.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub fork_step: u64,
    pub end_step: u64,
    /// (step, loss) of the law from the fork to the end, made when the branch was forked.
    pub before: Vec<(f64, f64)>,
    /// The law's mean over the branch's last [`tail_len`] steps (what `actual` is compared
    /// with), made at the fork.
    pub before_tail: Option<f64>,
    pub decay_fitted: bool,
    /// The same from a refit that includes the branch's own steps so far (live runs).
    pub now: Option<Vec<(f64, f64)>>,
    /// Observed mean training loss over the branch's last [`tail_len`] steps, once it
    /// completed.
    pub actual: Option<f64>,
}

/// Points drawn per predicted curve.
const CURVE_POINTS: u64 = 64;

/// A fork whose prediction is still to be made: the branch and how many steps every run had
/// recorded when it was forked (curves only grow, so these prefixes are the state then).
#[derive(Debug, Clone)]
struct PendingFork {
    run: RunId,
    lens: BTreeMap<RunId, usize>,
    at: u64,
    end: u64,
}

/// Keeps [`Forecast`]s up to date for a UI whose state holds the runs' curves. Recording is
/// O(1) per event (a fork only queues its prediction with the curve lengths at that moment),
/// so building a state from a long session stays cheap; [`Predictor::resolve`] makes the
/// queued predictions — one fit each, on exactly what was recorded before the fork — and,
/// when `refit` is set, refits every 5% more steps (at least 25) while a branch runs.
#[derive(Debug, Clone, Default)]
pub struct Predictor {
    pending: Vec<PendingFork>,
    seen: std::collections::BTreeSet<RunId>,
    /// Completed branches: (end step, mean loss of their last steps).
    actual: BTreeMap<RunId, (u64, Option<f64>)>,
    steps: usize,
    next_refit: usize,
    /// A branch completed since the last [`Self::resolve`].
    unscored: bool,
}

impl Predictor {
    fn sample(fit: &MplFit, list: &[RunCurve], id: RunId, from: u64, to: u64) -> Vec<(f64, f64)> {
        let n = (to - from).clamp(1, CURVE_POINTS);
        let steps: Vec<u64> = (0..=n)
            .map(|k| from + (to - from) * k / n)
            .filter(|&s| s > 0)
            .collect();
        match curve(fit, list, id, &steps) {
            Some(v) => steps
                .iter()
                .zip(v)
                .filter(|(_, l)| l.is_finite())
                .map(|(&s, l)| (s as f64, l))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Records a branch's fork, given how many steps each run has recorded now.
    pub fn fork(&mut self, run: RunId, at: u64, end: u64, lens: BTreeMap<RunId, usize>) {
        if self.seen.insert(run) {
            self.pending.push(PendingFork { run, lens, at, end });
        }
    }

    pub fn step(&mut self) {
        self.steps += 1;
    }

    /// Records that run `run` completed at `end` with `actual` as its final loss.
    pub fn completed(&mut self, run: RunId, end: u64, actual: Option<f64>) {
        self.actual.insert(run, (end, actual));
        self.unscored = true;
    }

    /// Whether [`Self::resolve`] has anything to do.
    pub fn due(&self, refit: bool) -> bool {
        !self.pending.is_empty()
            || self.unscored
            || (refit && self.steps >= self.next_refit && self.actual.len() < self.seen.len())
    }

    /// Makes the queued predictions and (with `refit`) the periodic refit from `curves`, the
    /// runs as recorded now; returns whether `out` changed.
    pub fn resolve(
        &mut self,
        curves: &[RunCurve],
        out: &mut BTreeMap<RunId, Forecast>,
        refit: bool,
    ) -> bool {
        let mut changed = false;
        self.unscored = false;
        if !self.pending.is_empty() {
            // A refit is worth it only once the new branches have run a while.
            self.next_refit = self.steps + (self.steps / 20).max(25);
        }
        for p in std::mem::take(&mut self.pending) {
            let list: Vec<RunCurve> = curves
                .iter()
                .filter_map(|c| {
                    let n = *p.lens.get(&c.id)?;
                    Some(RunCurve {
                        steps: c.steps[..n.min(c.steps.len())].to_vec(),
                        loss: c.loss[..n.min(c.loss.len())].to_vec(),
                        ..c.clone()
                    })
                })
                .collect();
            if let Some(f) = fit(&list) {
                let before = Self::sample(&f, &list, p.run, p.at, p.end);
                if !before.is_empty() {
                    out.insert(
                        p.run,
                        Forecast {
                            fork_step: p.at,
                            end_step: p.end,
                            before,
                            before_tail: predicted_tail(&f, &list, p.run, p.at, p.end),
                            decay_fitted: f.decay_fitted,
                            now: None,
                            actual: None,
                        },
                    );
                    changed = true;
                }
            }
        }
        for (id, fc) in out.iter_mut() {
            if fc.actual.is_none()
                && let Some(&(end, a)) = self.actual.get(id)
                && end == fc.end_step
                && a.is_some()
            {
                fc.actual = a;
                changed = true;
            }
        }
        let running: Vec<RunId> = out
            .keys()
            .filter(|id| !self.actual.contains_key(id))
            .copied()
            .collect();
        if refit && !running.is_empty() && self.steps >= self.next_refit {
            self.next_refit = self.steps + (self.steps / 20).max(25);
            if let Some(f) = fit(curves) {
                for id in running {
                    let fc = out.get_mut(&id).expect("listed");
                    fc.now = Some(Self::sample(&f, curves, id, fc.fork_step, fc.end_step));
                }
                changed = true;
            }
        }
        changed
    }
}

/// The law fitted on every run of a session, as recorded (`inspect --json`'s `law`).
pub fn session_law(events: &[RunEvent]) -> Option<MplFit> {
    let mut curves = Curves::default();
    events.iter().for_each(|ev| curves.apply(ev));
    fit(&curves.list())
}

/// Walks a session's events and, at each branch's fork, predicts its final loss from what had
/// been recorded until then; at the end, pairs each prediction with what the branch did.
pub fn predictions(events: &[RunEvent]) -> Vec<BranchPrediction> {
    let mut curves = Curves::default();
    let mut out: Vec<BranchPrediction> = Vec::new();
    for ev in events {
        if let RunEvent::RunStart(s) = ev
            && let (Some(_), Some(at)) = (s.parent, s.fork_step)
            && !curves.runs.contains_key(&s.run)
        {
            curves.apply(ev);
            let list = curves.list();
            let end = s.phases.total;
            if let Some(f) = fit(&list)
                && let Some(v) = predicted_tail(&f, &list, s.run, at, end)
            {
                out.push(BranchPrediction {
                    run: s.run,
                    fork_step: at,
                    end_step: end,
                    before: v,
                    decay_fitted: f.decay_fitted,
                    actual: None,
                });
            }
            continue;
        }
        curves.apply(ev);
        if let RunEvent::End {
            run,
            step,
            reason: wsdscope_sessions::EndReason::Completed,
            ..
        } = ev
            && let Some(p) = out
                .iter_mut()
                .find(|p| p.run == *run && p.end_step == *step)
        {
            p.actual = curves.runs.get(run).and_then(|c| actual_final(&c.loss));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsdscope_trainer::DecayShape;

    fn trunk(steps: u64) -> Schedule {
        Schedule::wsd(0.01, steps, steps / 10, steps / 10, DecayShape::Exp, 0.1).unwrap()
    }

    #[test]
    fn a_branch_inherits_its_parents_lr_history() {
        let t = trunk(100);
        let branch = wsdscope_trainer::engine::decay_branch(0.01, 40, 20, DecayShape::Linear, 0.0);
        let curves = vec![
            RunCurve {
                id: 0,
                parent: None,
                fork_step: None,
                schedule: t.clone(),
                steps: vec![],
                loss: vec![],
            },
            RunCurve {
                id: 1,
                parent: Some(0),
                fork_step: Some(40),
                schedule: branch.clone(),
                steps: vec![],
                loss: vec![],
            },
        ];
        let l = lrs(&curves, 1).unwrap();
        assert_eq!(l.len(), 60);
        for s in 1..=40 {
            assert_eq!(l[s - 1], t.lr(s as u64), "trunk history at {s}");
        }
        for s in 41..=60 {
            assert_eq!(l[s - 1], branch.lr(s as u64));
        }
        assert!(l[59] < 1e-3, "decayed to the floor");
    }

    /// Fits [`PRIOR_DROP`] on the sessions in `$WSDSCOPE_CALIBRATION_DIR` (made by
    /// `scripts/calibrate-decay-prior`): at each fork, the trunk as recorded until then is
    /// fitted with the prior's decay term, and the branch's predicted end is linear in B; the
    /// least-squares B·η over all forks, and the RMS error with it, are printed.
    #[test]
    #[ignore = "reads the sessions scripts/calibrate-decay-prior records"]
    fn calibrate_decay_prior() {
        let dir = std::env::var("WSDSCOPE_CALIBRATION_DIR")
            .expect("WSDSCOPE_CALIBRATION_DIR: the sessions to calibrate on");
        let mut rows = Vec::new(); // (file, fork, with no drop, drop per nat of PRIOR_DROP, actual)
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "h5"))
            .collect();
        files.sort();
        for path in &files {
            let events = wsdscope_sessions::Session::open(path)
                .unwrap()
                .events()
                .unwrap();
            let mut curves = Curves::default();
            let mut forks: BTreeMap<RunId, (u64, f64, f64)> = BTreeMap::new();
            for ev in &events {
                curves.apply(ev);
                match ev {
                    RunEvent::RunStart(s) if s.parent.is_some() && !forks.contains_key(&s.run) => {
                        let at = s.fork_step.unwrap();
                        let list: Vec<RunCurve> = curves
                            .list()
                            .into_iter()
                            .filter(|c| c.parent.is_none() || c.id == s.run)
                            .collect();
                        let f = fit(&list).unwrap();
                        assert!(!f.decay_fitted, "the trunk has not decayed at {at}");
                        let with = predicted_tail(&f, &list, s.run, at, s.phases.total).unwrap();
                        let mut flat = f.clone();
                        flat.law.b = 0.0;
                        let without =
                            predicted_tail(&flat, &list, s.run, at, s.phases.total).unwrap();
                        forks.insert(s.run, (at, without, (without - with) / PRIOR_DROP));
                    }
                    RunEvent::End { run, .. } if forks.contains_key(run) => {
                        let (at, without, per) = forks[run];
                        let actual = actual_final(&curves.runs[run].loss).unwrap();
                        rows.push((path.clone(), at, without, per, actual));
                    }
                    _ => {}
                }
            }
        }
        assert!(!rows.is_empty(), "no completed branches in {dir}");
        let num: f64 = rows.iter().map(|r| r.3 * (r.2 - r.4)).sum();
        let den: f64 = rows.iter().map(|r| r.3 * r.3).sum();
        let drop = num / den;
        let rms = |d: f64| {
            (rows
                .iter()
                .map(|r| (r.2 - d * r.3 - r.4).powi(2))
                .sum::<f64>()
                / rows.len() as f64)
                .sqrt()
        };
        for r in &rows {
            println!(
                "{} fork {:>4}: predicted {:.4} (today's prior) / {:.4} (calibrated), actual {:.4}",
                r.0.file_name().unwrap().to_string_lossy(),
                r.1,
                r.2 - PRIOR_DROP * r.3,
                r.2 - drop * r.3,
                r.4
            );
        }
        println!(
            "{} forks: B·η = {drop:.4} nats (RMS error {:.4}); PRIOR_DROP {PRIOR_DROP} gives {:.4}",
            rows.len(),
            rms(drop),
            rms(PRIOR_DROP)
        );
    }

    #[test]
    fn binning_averages_without_lag() {
        let steps: Vec<u64> = (1..=1280).collect();
        let loss: Vec<f64> = steps
            .iter()
            .map(|&s| if s <= 640 { 2.0 } else { 1.0 })
            .collect();
        let b = binned(&steps, &loss);
        assert_eq!(b.len(), 128);
        assert!(
            b.iter().all(|&(s, l)| (s <= 640) == (l == 2.0)),
            "no bin straddles the drop"
        );
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
