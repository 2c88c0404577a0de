//! The periodic probes' clock: which probes are due after a run's step. By default the
//! planner (`probe_plan.rs`) decides, within the share of training time the probes may take,
//! and plans again whenever a run starts or a probe's cost is measured; with
//! `--probe-every N` the kinds rotate every N steps of a run instead.

use std::collections::{BTreeMap, BTreeSet};

use wsdscope_events::RunId;

use super::probe_plan::{self, Plan, PlanInput, RunSpan};
use super::trainer::Trainer;
use crate::probe::ProbeKind;

/// Keeps periodic probes within their share of training time.
#[derive(Default)]
pub(super) struct ProbeClock {
    /// Wall time of training steps and of periodic probes so far, in seconds.
    pub(super) train_s: f64,
    pub(super) probe_s: f64,
    /// Next entry of [`ProbeKind::PERIODIC`] for each run (`--probe-every`: each run cycles
    /// through all).
    pub(super) next: BTreeMap<RunId, usize>,
    /// The step each run was last probed at (`--probe-every`: one kind per step).
    probed_at: BTreeMap<RunId, u64>,
    /// Last measured cost of each kind, in seconds.
    pub(super) cost: BTreeMap<ProbeKind, f64>,
    /// The planner's view of each run and the step it has completed.
    spans: BTreeMap<RunId, (RunSpan, u64)>,
    /// Steps each (run, kind) was probed at.
    past: BTreeMap<(RunId, ProbeKind), BTreeSet<u64>>,
    /// The periodic kinds each run measures as probes ([`kinds`]).
    own: BTreeMap<RunId, Vec<ProbeKind>>,
    plan: Plan,
}

/// The periodic kinds a run measures as probes of their own: no noise scale from a single
/// sequence, nor where the steps' own leaves give it (`step_noise.rs`).
fn kinds(tr: &Trainer) -> Vec<ProbeKind> {
    ProbeKind::PERIODIC
        .into_iter()
        .filter(|&k| k != ProbeKind::Noise || noise_probe(tr))
        .collect()
}

/// Whether `tr` measures the noise scale with the separate probe.
fn noise_probe(tr: &Trainer) -> bool {
    tr.cfg.batch >= 2 && !tr.leaf_noise()
}

/// Whether `tr`'s periodic probes are placed by the planner (not every N steps).
fn planned(tr: &Trainer) -> bool {
    tr.cfg.probes.periodic() && tr.cfg.probes.every == 0
}

impl ProbeClock {
    /// The next periodic probe due after run `tr` completed a step (`last`: its last one),
    /// with its position in the `--probe-every` rotation; `None` once this step's are done.
    pub(super) fn due(&mut self, tr: &Trainer, last: bool) -> Option<(ProbeKind, usize)> {
        let cfg = &tr.cfg.probes;
        if !cfg.periodic() || tr.step == 0 {
            return None;
        }
        if planned(tr) {
            if let Some(s) = self.spans.get_mut(&tr.run) {
                s.1 = tr.step - 1; // this step's probes are still to run
            }
            let past = |k: &ProbeKind| {
                self.past
                    .get(&(tr.run, *k))
                    .is_some_and(|p| p.contains(&tr.step))
            };
            return self
                .plan
                .get(&tr.run)
                .and_then(|p| p.get(&tr.step))
                .and_then(|ks| ks.iter().find(|k| !past(k) && kinds(tr).contains(k)))
                .map(|&k| (k, 0));
        }
        // Every N steps, one kind in turn (never on the run's last step, nor twice a step).
        if last
            || !tr.step.is_multiple_of(cfg.every)
            || self.probed_at.get(&tr.run) == Some(&tr.step)
        {
            return None;
        }
        let mut next = self.next.get(&tr.run).copied().unwrap_or(0);
        if ProbeKind::PERIODIC[next % ProbeKind::PERIODIC.len()] == ProbeKind::Noise
            && !noise_probe(tr)
        {
            next += 1; // no noise scale from a single sequence, or it comes from the steps
        }
        let kind = ProbeKind::PERIODIC[next % ProbeKind::PERIODIC.len()];
        if let Some(pct) = cfg.budget() {
            // Spend only what the budget has accrued, counting the probe about to run at its
            // last measured cost (or a few steps' worth before it was ever measured).
            let expected = self
                .cost
                .get(&kind)
                .copied()
                .unwrap_or(5.0 * tr.mean_step_s);
            if self.probe_s + expected > pct / 100.0 * self.train_s {
                return None;
            }
        }
        Some((kind, next))
    }

    /// Whether the noise scale of `tr`'s steps since the last report is due after this
    /// step: every `noise_window` steps of the run, at every anchor of the planner's rule
    /// (so the decay's points have a report that ends there) and at the run's last step.
    pub(super) fn noise_report_due(&self, tr: &Trainer, last: bool) -> bool {
        let cfg = &tr.cfg.probes;
        if !tr.leaf_noise() || tr.step == 0 {
            return false;
        }
        let Some((span, _)) = self.spans.get(&tr.run) else {
            return last || tr.step.is_multiple_of(cfg.noise_window);
        };
        // Windows count from the run's first step (a branch's fork), so a resumed run keeps
        // the boundaries it had: every 10th step, not every 10th after the resume.
        let from = if span.branch { span.from } else { 0 };
        let anchor = probe_plan::anchors(span, cfg.decay_points, 0)
            .iter()
            .any(|&(_, s)| s == tr.step);
        last || anchor || (tr.step - from).is_multiple_of(cfg.noise_window)
    }

    /// Run `tr` starts (the trunk, a sibling beside it, or a branch just forked): its steps
    /// join the budget and its anchors the plan (a sibling has a schedule of its own, so it
    /// gets the trunk's kind of anchors). Costs are per kind, shared by the runs: a sibling
    /// of another shape is planned at what the last probe of each kind took.
    pub(super) fn start(&mut self, tr: &Trainer) {
        let span = RunSpan {
            run: tr.run,
            from: tr.step,
            bounds: tr.cfg.schedule.bounds(),
            branch: tr.parent.is_some(),
        };
        self.spans.insert(tr.run, (span, tr.step));
        self.own.insert(tr.run, kinds(tr));
        self.replan(tr);
    }

    /// Periodic probe `kind` (position `at` of the rotation) ran on `tr` and took `secs`.
    pub(super) fn ran(&mut self, tr: &Trainer, kind: ProbeKind, at: usize, secs: f64) {
        self.probe_s += secs;
        self.cost.insert(kind, secs);
        self.next.insert(tr.run, at + 1);
        self.probed_at.insert(tr.run, tr.step);
        if !planned(tr) {
            return;
        }
        self.past.entry((tr.run, kind)).or_default().insert(tr.step);
        self.replan(tr);
    }

    /// A probe outside the plan (the interpolation at a branch's end) took `secs` of the
    /// budget.
    pub(super) fn spent(&mut self, secs: f64) {
        self.probe_s += secs;
    }

    /// Plans the runs' remaining probes with what is left of the budget, in seconds as the
    /// share is stated: its share of the training so far and of the steps still to come at
    /// the current pace, less what the probes took so far. A kind costs what it took last
    /// time (as the `--probe-every` rotation counts it), or its estimate in steps at that pace
    /// before it has run (before any step was timed, everything is counted in steps).
    fn replan(&mut self, tr: &Trainer) {
        if !planned(tr) {
            return;
        }
        let cfg = &tr.cfg.probes;
        // Every kind some run measures (`start` records each run's with its span), each run
        // planned only for its own.
        let kinds: Vec<ProbeKind> = ProbeKind::PERIODIC
            .into_iter()
            .filter(|k| self.own.values().any(|own| own.contains(k)))
            .collect();
        let skip: BTreeSet<(RunId, ProbeKind)> = self
            .own
            .iter()
            .flat_map(|(&run, own)| {
                kinds
                    .iter()
                    .filter(|k| !own.contains(k))
                    .map(move |&k| (run, k))
            })
            .collect();
        let pace = if tr.mean_step_s > 0.0 {
            tr.mean_step_s
        } else {
            1.0
        };
        let cost: BTreeMap<ProbeKind, f64> = kinds
            .iter()
            .map(|&k| {
                let prior = || pace * probe_plan::prior_cost(k, cfg, tr.cfg.batch);
                (k, self.cost.get(&k).copied().unwrap_or_else(prior))
            })
            .collect();
        let share = cfg.budget().unwrap_or(100.0) / 100.0;
        let to_come: u64 = self
            .spans
            .values()
            .map(|(s, done)| s.bounds.total.saturating_sub((*done).max(s.from)))
            .sum();
        let budget = share * (self.train_s + to_come as f64 * pace) - self.probe_s;
        let runs: Vec<(RunSpan, u64)> = self.spans.values().copied().collect();
        self.plan = probe_plan::plan(&PlanInput {
            runs: &runs,
            kinds: &kinds,
            skip: &skip,
            cost: &cost,
            budget,
            decay_points: cfg.decay_points,
            past: &self.past,
        });
    }
}
