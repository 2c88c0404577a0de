//! What `inspect` says about a session's periodic probes against the places the planner aims
//! for (the end of warmup, mid-stable, the last stable step, the points through the decay,
//! a branch's first and last step; `trainer/src/engine/probe_plan.rs`): per run and kind,
//! the anchors probed and those missed, and what share of the training time would have
//! bought every kind at every anchor at the costs this session measured.

use std::collections::{BTreeMap, BTreeSet};

use wsdscope_sessions::{PhaseBounds, RunEvent, RunId};
use wsdscope_trainer::engine::{PROBE_PLAN_MARGIN, probe_anchors};

/// A run as the coverage sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunPlaces {
    pub run: RunId,
    pub phases: PhaseBounds,
    /// The step it started at in this session (a branch: its fork step).
    pub from: u64,
    /// A forked run (its anchors are its first and last step).
    pub branch: bool,
}

/// One run's periodic probes of one kind against its anchors.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KindCoverage {
    pub run: RunId,
    pub kind: String,
    /// Every step this kind ran at on this run, anchors or not.
    pub probed: Vec<u64>,
    /// Anchors it did not run at.
    pub missed: Vec<u64>,
    /// Of `probed`, the results that came from the training steps themselves (the noise
    /// scale of the CPU step's leaves, `steps` > 0) rather than a pass of their own.
    pub from_steps: usize,
}

/// Coverage of every run and periodic kind, and the probe budget (percent of the session's
/// training time) that every kind at every anchor of every run would take at the mean cost
/// each kind had here, with the planner's margin; `None` when a kind never ran (no cost to
/// go by) or no step time was recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Coverage {
    pub kinds: Vec<KindCoverage>,
    pub budget_for_anchors: Option<f64>,
}

/// Coverage of `kinds` (the periodic probe names) over `runs`, from the session's events,
/// with `decay_points` points through each decay.
pub fn coverage(
    runs: &[RunPlaces],
    events: &[RunEvent],
    kinds: &[&str],
    decay_points: u64,
) -> Coverage {
    let mut at: BTreeMap<(RunId, &str), BTreeSet<u64>> = BTreeMap::new();
    let mut from_steps: BTreeMap<(RunId, &str), usize> = BTreeMap::new();
    let mut cost: BTreeMap<&str, (f64, u32)> = BTreeMap::new();
    let mut train_ms = 0.0;
    for e in events {
        match e {
            RunEvent::Step(m) => train_ms += m.step_ms,
            RunEvent::Probe(p) => {
                if let Some(&k) = kinds.iter().find(|k| **k == p.probe) {
                    at.entry((p.run, k)).or_default().insert(p.step);
                    if p.scalars.get("steps").is_some_and(|&n| n > 0.0) {
                        *from_steps.entry((p.run, k)).or_default() += 1;
                    }
                    let c = cost.entry(k).or_default();
                    c.0 += p.scalars.get("seconds").copied().unwrap_or(0.0);
                    c.1 += 1;
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut needed_s = Some(0.0);
    for r in runs {
        let anchors = probe_anchors(r.phases, r.from, r.branch, decay_points);
        for &k in kinds {
            let probed = at.get(&(r.run, k)).cloned().unwrap_or_default();
            let missed = anchors
                .iter()
                .copied()
                .filter(|s| !probed.contains(s))
                .collect();
            out.push(KindCoverage {
                run: r.run,
                kind: k.to_string(),
                probed: probed.into_iter().collect(),
                missed,
                from_steps: from_steps.get(&(r.run, k)).copied().unwrap_or(0),
            });
            needed_s = match (needed_s, cost.get(k)) {
                (Some(n), Some(&(secs, count))) => {
                    Some(n + anchors.len() as f64 * secs / count as f64)
                }
                _ => None,
            };
        }
    }
    // The planner keeps a share of what it plans unspent beyond its first places, so a
    // budget that covers every anchor is that much larger than their cost.
    let budget_for_anchors = needed_s
        .filter(|_| train_ms > 0.0)
        .map(|s| 100.0 * s * (1.0 + PROBE_PLAN_MARGIN) / (train_ms / 1e3));
    Coverage {
        kinds: out,
        budget_for_anchors,
    }
}

/// Steps as text, `-` for none; a long list as its count, first and last three.
fn steps(s: &[u64]) -> String {
    let list = |s: &[u64]| s.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    match s.len() {
        0 => "-".into(),
        1..=12 => list(s),
        n => format!("{n} steps: {} … {}", list(&s[..3]), list(&s[n - 3..])),
    }
}

/// The lines `inspect` prints.
pub fn describe(c: &Coverage) -> Vec<String> {
    let mut out =
        vec!["periodic probes against the planner's places (missed: anchors without one):".into()];
    for k in &c.kinds {
        let source = if k.from_steps > 0 {
            " (from the training steps' own gradients)"
        } else {
            ""
        };
        out.push(format!(
            "  run {:>2} {:<10} at {}; missed {}{source}",
            k.run,
            k.kind,
            steps(&k.probed),
            steps(&k.missed)
        ));
    }
    if let Some(b) = c.budget_for_anchors {
        out.push(format!(
            "  every kind at every anchor would take about {b:.0}% of this session's training time at the costs measured here (--probe-budget {:.0})",
            b.ceil()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use wsdscope_sessions::{Phase, ProbeResult, StepMetrics};

    fn step(run: RunId, step: u64, ms: f64) -> RunEvent {
        RunEvent::Step(StepMetrics {
            run,
            step,
            phase: Phase::Stable,
            loss: 2.0,
            lr: 0.01,
            grad_norm: 1.0,
            update_norm: 0.1,
            param_norm: 10.0,
            tokens: step * 2048,
            tokens_per_s: 20480.0,
            step_ms: ms,
            grad_norm_per_layer: Vec::new(),
            grad_norm_per_group: Vec::new(),
            geometry: None,
            max_update: Vec::new(),
        })
    }

    fn probe(run: RunId, step: u64, kind: &str, seconds: f64) -> RunEvent {
        RunEvent::Probe(ProbeResult {
            run,
            step,
            probe: kind.into(),
            scalars: BTreeMap::from([("seconds".to_string(), seconds)]),
            series: BTreeMap::new(),
        })
    }

    #[test]
    fn anchors_missed_and_the_budget_that_covers_them() {
        // The default run's phases: anchors 60, 300, 540, 560, 580, 600.
        let trunk = RunPlaces {
            run: 0,
            phases: PhaseBounds {
                warmup_end: 60,
                decay_start: 540,
                total: 600,
            },
            from: 0,
            branch: false,
        };
        // A branch forked at 400 decaying to 450: its first and last step.
        let branch = RunPlaces {
            run: 1,
            phases: PhaseBounds {
                warmup_end: 60,
                decay_start: 400,
                total: 450,
            },
            from: 400,
            branch: true,
        };
        let mut events: Vec<RunEvent> = (1..=600).map(|s| step(0, s, 100.0)).collect();
        events.push(probe(0, 560, "sharpness", 0.5));
        events.push(probe(0, 600, "sharpness", 0.7));
        events.push(probe(0, 590, "sharpness", 0.6)); // spread: not an anchor
        events.push(probe(1, 450, "sharpness", 0.6));
        events.push(probe(0, 600, "noise", 0.1));
        let c = coverage(&[trunk, branch], &events, &["sharpness", "noise"], 3);
        let get = |run, kind: &str| {
            c.kinds
                .iter()
                .find(|k| k.run == run && k.kind == kind)
                .unwrap()
        };
        assert_eq!(get(0, "sharpness").probed, vec![560, 590, 600]);
        assert_eq!(get(0, "sharpness").missed, vec![60, 300, 540, 580]);
        assert_eq!(get(0, "noise").missed, vec![60, 300, 540, 560, 580]);
        assert_eq!(get(1, "sharpness").missed, vec![401]);
        assert_eq!(get(1, "noise").missed, vec![401, 450]);
        // 8 anchors × (0.6 s sharpness + 0.1 s noise) × 1.2 over 60 s of training.
        let want = 100.0 * 8.0 * 0.7 * 1.2 / 60.0;
        assert!((c.budget_for_anchors.unwrap() - want).abs() < 1e-9, "{c:?}");
        let text = describe(&c).join("\n");
        assert!(
            text.contains("run  0 sharpness  at 560 590 600; missed 60 300 540 580"),
            "{text}"
        );
        assert!(
            text.contains("about 11% of this session's training time"),
            "{text}"
        );
        // The noise scale reported from the steps every 10 steps: a long list, shortened.
        let mut from_steps: Vec<RunEvent> = (1..=600).map(|s| step(0, s, 100.0)).collect();
        for s in (10..=600).step_by(10) {
            let mut p = probe(0, s, "noise", 0.0);
            if let RunEvent::Probe(p) = &mut p {
                p.scalars.insert("steps".into(), 10.0);
            }
            from_steps.push(p);
        }
        let c = coverage(&[trunk], &from_steps, &["noise"], 3);
        assert_eq!(c.kinds[0].from_steps, 60);
        assert!(c.kinds[0].missed.is_empty());
        let text = describe(&c).join("\n");
        assert!(
            text.contains("noise      at 60 steps: 10 20 30 … 580 590 600; missed - (from the training steps' own gradients)"),
            "{text}"
        );
        // A kind that never ran has no cost to go by: no budget figure.
        let none = coverage(&[trunk], &events, &["sharpness", "landscape"], 3);
        assert_eq!(none.budget_for_anchors, None);
        assert!(
            !describe(&none)
                .join("\n")
                .contains("every kind at every anchor")
        );
    }
}
