//! The periodic probes' clock: which probe of the rotation is due after a run's step, within
//! the share of training time the probes may take.

use std::collections::BTreeMap;

use wsdscope_events::RunId;

use super::trainer::Trainer;
use crate::probe::ProbeKind;

/// Keeps periodic probes within their share of training time.
#[derive(Default)]
pub(super) struct ProbeClock {
    /// Wall time of training steps and of periodic probes so far, in seconds.
    pub(super) train_s: f64,
    pub(super) probe_s: f64,
    /// Next entry of [`ProbeKind::PERIODIC`] for each run (each run cycles through all).
    pub(super) next: BTreeMap<RunId, usize>,
    /// Last measured cost of each kind, in seconds.
    pub(super) cost: BTreeMap<ProbeKind, f64>,
}

impl ProbeClock {
    /// The periodic probe due after run `tr` completed a step, if any, and its position in
    /// the rotation.
    pub(super) fn due(&self, tr: &Trainer) -> Option<(ProbeKind, usize)> {
        let cfg = &tr.cfg.probes;
        if !cfg.periodic() || tr.step == 0 {
            return None;
        }
        if cfg.every > 0 && !tr.step.is_multiple_of(cfg.every) {
            return None;
        }
        let mut next = self.next.get(&tr.run).copied().unwrap_or(0);
        if ProbeKind::PERIODIC[next % ProbeKind::PERIODIC.len()] == ProbeKind::Noise
            && tr.cfg.batch < 2
        {
            next += 1; // no noise scale from a single sequence
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
}
