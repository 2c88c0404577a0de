//! Where the periodic probes run: a pure planner that puts them at the points of a WSD run
//! where the loss landscape changes — the end of warmup, mid-stable, the last stable step,
//! several points through the decay, and the first and last step of every branch — within
//! the probes' share of training time, and spreads whatever budget is left over the runs.
//!
//! The rule, in priority order (what a tight budget keeps first; each tier gives every
//! periodic kind, in [`ProbeKind::PERIODIC`] order, a run there if its cost still fits, so a
//! cheap kind may take a place an expensive one could not afford; the first tier may spend
//! the whole budget, each later place must leave a fifth of what is planned unspent, as a
//! margin for probes that take longer than estimated):
//! 1. the last step of every decay (the trunk's and each sibling's last step, every
//!    branch's last step);
//! 2. the other decay points of the trunk and siblings (`decay_points` evenly spaced points
//!    through the decay, its last step included), and every branch's first step (where its
//!    decay starts);
//! 3. the last stable step before the trunk's (or a sibling's) decay;
//! 4. mid-stable;
//! 5. the end of warmup.
//!
//! On the CPU step the noise scale comes from the steps' own leaves at every anchor
//! (`step_noise.rs`), so the planner places sharpness, slices and the landscape. On the
//! default run (600 steps) the default budget (5%, 30 steps' worth) buys under two of their
//! rounds (about 16 steps each at 2 threads), so the decay comes first: every kind at its last
//! step, sharpness and slices at its first point too; a probe that costs more than estimated
//! may cost a cheap one a point. Every kind at every anchor needs about 18% there (`inspect`
//! estimates it from a session's costs), or a run about three times as long at 5%.
//!
//! Then, while the budget allows with half of what is planned left over (these run before
//! the later anchors, whose probes may overrun their estimates), one more run of the kind and
//! run whose largest gap between probes is the largest, at that gap's middle (an even spread,
//! as the old rotation had).
//! Costs and budget are in one unit (the engine's are seconds; the budget is the probes'
//! share of the time of all the steps the runs train, less what the probes took).

use std::collections::{BTreeMap, BTreeSet};

use wsdscope_events::{PhaseBounds, RunId};

use crate::config::ProbeConfig;
use crate::probe::ProbeKind;

/// Most probes one plan spreads beyond the anchors (a huge budget on a long run would
/// otherwise plan one at every step; the engine plans again after each probe, so a long run
/// still gets its share).
const MAX_EXTRA: usize = 256;

/// The share of what is planned that every place after the first tier, and the spread,
/// leave unspent.
pub const MARGIN: f64 = 0.2;

/// The share of what is planned that the spread beyond the anchors leaves unspent: its probes
/// fall in the gaps before the later anchors, so they run first, and an overrun of the
/// anchors' estimates must still find room at the decay (half as long again as estimated).
const SPREAD_MARGIN: f64 = 0.5;

/// Slack for the sums of costs (a budget of exactly two rounds affords two rounds).
const EPS: f64 = 1e-9;

/// One run as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RunSpan {
    pub run: RunId,
    /// The step it started this session at (a branch's fork step; 0 for a fresh trunk).
    pub from: u64,
    /// Its schedule's phases (a branch's stable phase ends at its fork).
    pub bounds: PhaseBounds,
    /// A forked run: its anchors are its first and last step (the trunk and its siblings,
    /// which start at step 0 with schedules of their own, get the phases' anchors).
    pub branch: bool,
}

/// Why a step is an anchor; the order is the priority (first kept first): the decay, where
/// the loss drops, before the states it starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Anchor {
    DecayEnd,
    DecayPoint,
    LastStable,
    MidStable,
    WarmupEnd,
}

/// The anchors of `r` after step `done`, as (tier, step), in priority order.
pub(super) fn anchors(r: &RunSpan, decay_points: u64, done: u64) -> Vec<(Anchor, u64)> {
    let b = r.bounds;
    let mut out = Vec::new();
    if r.branch {
        // A branch decays from its first step: that step starts its decay.
        out.push((Anchor::DecayEnd, b.total));
        out.push((Anchor::DecayPoint, r.from + 1));
    } else {
        let has_stable = b.decay_start > b.warmup_end;
        let has_decay = b.total > b.decay_start;
        if has_decay {
            let d = b.total - b.decay_start;
            let n = decay_points.max(1);
            out.push((Anchor::DecayEnd, b.total));
            if has_stable {
                out.push((Anchor::LastStable, b.decay_start));
            }
            for k in 1..n {
                out.push((Anchor::DecayPoint, b.decay_start + (k * d).div_ceil(n)));
            }
        } else {
            // No decay (a constant schedule): its last step is the state a decay would start from.
            out.push((Anchor::LastStable, b.total));
        }
        if has_stable {
            let mid = b.warmup_end + (b.decay_start - b.warmup_end).div_ceil(2);
            out.push((Anchor::MidStable, mid));
        }
        if b.warmup_end > 0 {
            out.push((Anchor::WarmupEnd, b.warmup_end));
        }
    }
    let mut seen = BTreeSet::new();
    out.sort_by_key(|&(a, s)| (a, s));
    out.retain(|&(_, s)| s > done.max(r.from) && s <= b.total && seen.insert(s));
    out
}

/// The steps a run's periodic probes are planned at first (the anchors of the rule above),
/// ascending: for a run with phases `bounds` that started at step `from` (a branch: forked
/// there), with `decay_points` points through its decay. What `inspect` checks a session's
/// probes against.
pub fn probe_anchors(bounds: PhaseBounds, from: u64, branch: bool, decay_points: u64) -> Vec<u64> {
    let span = RunSpan {
        run: 0,
        from,
        bounds,
        branch,
    };
    let mut steps: Vec<u64> = anchors(&span, decay_points, 0)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    steps.sort_unstable();
    steps
}

/// What the planner is given.
#[derive(Debug, Clone)]
pub(super) struct PlanInput<'a> {
    /// The runs, each with the last step whose probes have all run (anchors after it are
    /// planned, less the kinds `past` holds at that step).
    pub runs: &'a [(RunSpan, u64)],
    /// The periodic kinds, in the order a tier offers them places.
    pub kinds: &'a [ProbeKind],
    /// (run, kind) pairs a run does not measure as probes (a run whose steps give the noise
    /// scale beside one whose steps cannot, or a single-sequence batch): never planned.
    pub skip: &'a BTreeSet<(RunId, ProbeKind)>,
    /// Each kind's cost (in any unit: the engine's are seconds, the tests' training steps).
    pub cost: &'a BTreeMap<ProbeKind, f64>,
    /// Probe time left to spend, in the costs' unit (the first tier may spend all of it, the
    /// rest of the plan keeps a margin of a fifth of what it plans).
    pub budget: f64,
    /// Points through the trunk's decay, its last step included.
    pub decay_points: u64,
    /// Steps each (run, kind) has already been probed at (for spreading the rest).
    pub past: &'a BTreeMap<(RunId, ProbeKind), BTreeSet<u64>>,
}

/// For each run, the kinds to run after each of its future steps.
pub(super) type Plan = BTreeMap<RunId, BTreeMap<u64, Vec<ProbeKind>>>;

/// The plan: anchors by priority while they fit, then the rest spread. Every planned step is
/// after its run's completed step; the planned costs sum to at most `budget` (and beyond the
/// first tier, with their margin, too).
pub(super) fn plan(input: &PlanInput) -> Plan {
    let cost = |k: ProbeKind| input.cost.get(&k).copied().unwrap_or(f64::INFINITY);
    // What is planned so far; the first tier may spend the whole budget, every later place
    // must leave a fifth of what is planned unspent, as a margin for probes that take longer
    // than their estimate (a lower tier's probe usually runs before the first tier's).
    let mut planned = 0.0;
    let mut chosen: BTreeMap<(RunId, ProbeKind), BTreeSet<u64>> = BTreeMap::new();
    let mut all: Vec<(Anchor, RunId, u64)> = input
        .runs
        .iter()
        .flat_map(|(r, done)| {
            anchors(r, input.decay_points, *done)
                .into_iter()
                .map(|(a, s)| (a, r.run, s))
        })
        .collect();
    all.sort_by_key(|&(a, run, s)| (a, run, s));
    let first = all.first().map(|a| a.0);
    for (tier, run, step) in all {
        for &k in input.kinds {
            if input.skip.contains(&(run, k)) {
                continue;
            }
            let done = input.past.get(&(run, k)).is_some_and(|p| p.contains(&step));
            let after = planned + cost(k);
            let fits = if Some(tier) == first {
                after <= input.budget + EPS
            } else {
                after * (1.0 + MARGIN) <= input.budget + EPS
            };
            if !done && fits {
                planned = after;
                chosen.entry((run, k)).or_default().insert(step);
            }
        }
    }
    spread(input, &mut chosen, planned);
    let mut out = Plan::new();
    for ((run, k), steps) in chosen {
        for s in steps {
            out.entry(run).or_default().entry(s).or_default().push(k);
        }
    }
    // Within a step, the kinds in the order given.
    for steps in out.values_mut() {
        for kinds in steps.values_mut() {
            kinds.sort_by_key(|k| input.kinds.iter().position(|x| x == k));
        }
    }
    out
}

/// The largest gap of one (run, kind) between its probes (past and planned) inside the run's
/// steps after `done`: (length, middle step).
fn largest_gap(r: &RunSpan, done: u64, steps: impl Iterator<Item = u64>) -> Option<(u64, u64)> {
    let first = done.max(r.from);
    let mut edges: Vec<u64> = steps.collect();
    edges.push(r.from);
    edges.push(r.bounds.total + 1);
    edges.sort_unstable();
    edges.dedup();
    edges
        .windows(2)
        .filter_map(|w| {
            // Free steps strictly between the two probes, after `done`.
            let lo = (w[0] + 1).max(first + 1);
            let hi = w[1].saturating_sub(1);
            (lo <= hi).then(|| (w[1] - w[0], lo + (hi - lo) / 2))
        })
        .max_by_key(|&(len, mid)| (len, std::cmp::Reverse(mid)))
}

/// A place for one more probe: (gap length, then earlier run and kind first), run, kind, step.
type Candidate = ((u64, usize, usize), RunId, ProbeKind, u64);

/// Adds one run at a time of the (run, kind) with the largest gap, at its middle, while the
/// plan (`planned` so far) and the spread's margin stay within the budget.
fn spread(
    input: &PlanInput,
    chosen: &mut BTreeMap<(RunId, ProbeKind), BTreeSet<u64>>,
    mut planned: f64,
) {
    for _ in 0..MAX_EXTRA {
        let mut best: Option<Candidate> = None;
        for (ri, (r, done)) in input.runs.iter().enumerate() {
            for (ki, &k) in input.kinds.iter().enumerate() {
                if input.skip.contains(&(r.run, k)) {
                    continue;
                }
                let c = input.cost.get(&k).copied().unwrap_or(f64::INFINITY);
                if !(c > 0.0 && (planned + c) * (1.0 + SPREAD_MARGIN) <= input.budget + EPS) {
                    continue;
                }
                let past = input.past.get(&(r.run, k)).into_iter().flatten();
                let planned = chosen.get(&(r.run, k)).into_iter().flatten();
                let Some((len, mid)) = largest_gap(r, *done, past.chain(planned).copied()) else {
                    continue;
                };
                // Ties: the earlier run, then the earlier kind.
                let key = (len, usize::MAX - ri, usize::MAX - ki);
                if best.is_none_or(|b| key > b.0) {
                    best = Some((key, r.run, k, mid));
                }
            }
        }
        let Some((_, run, k, step)) = best else {
            return;
        };
        planned += input.cost[&k];
        chosen.entry((run, k)).or_default().insert(step);
    }
}

/// A kind's cost in training steps before it has been measured, from what it computes: a
/// training step is a forward and a backward pass over `batch` sequences and the update (a
/// forward pass alone about 0.4 of it, as the default preset's slices and landscapes
/// measure), the probes use `probe_batch` of them.
pub(super) fn prior_cost(kind: ProbeKind, cfg: &ProbeConfig, batch: usize) -> f64 {
    let share = cfg.batch_for(batch) as f64 / batch.max(1) as f64;
    let forward = 0.4 * share;
    match kind {
        // The gradient at θ and two Lanczos runs (H and P⁻¹H), each product one gradient
        // (forward differences) costing about twice its share of a step; on the default
        // run's states each run stopped on its residual after about a quarter of its cap.
        ProbeKind::Sharpness => (2.0 * cfg.power_iters as f64 / 4.0 + 1.0) * 2.0 * share,
        // Micro-batch gradients over the whole batch, plus their mean.
        ProbeKind::Noise => 1.25,
        ProbeKind::Slice => 2.0 * cfg.points as f64 * forward,
        ProbeKind::Landscape => (cfg.grid * cfg.grid) as f64 * forward,
        ProbeKind::Interp => cfg.points as f64 * forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [ProbeKind; 4] = ProbeKind::PERIODIC;

    /// The default `record`: 600 steps, 10% warmup, the last 10% decaying.
    fn trunk() -> RunSpan {
        RunSpan {
            run: 0,
            from: 0,
            bounds: PhaseBounds {
                warmup_end: 60,
                decay_start: 540,
                total: 600,
            },
            branch: false,
        }
    }

    /// The default preset's probe costs in steps (sharpness, noise, slice, landscape).
    fn costs() -> BTreeMap<ProbeKind, f64> {
        let cfg = ProbeConfig::default();
        KINDS
            .iter()
            .map(|&k| (k, prior_cost(k, &cfg, 16)))
            .collect()
    }

    #[test]
    fn each_run_is_planned_only_for_the_kinds_it_measures_as_probes() {
        // The trunk takes its noise scale from its steps; a sibling beside it cannot.
        let sibling = RunSpan { run: 1, ..trunk() };
        let skip = BTreeSet::from([(0, ProbeKind::Noise)]);
        let p = plan(&PlanInput {
            runs: &[(trunk(), 0), (sibling, 0)],
            kinds: &KINDS,
            skip: &skip,
            cost: &costs(),
            budget: 1e6,
            decay_points: 3,
            past: &BTreeMap::new(),
        });
        let has = |run: RunId, step: u64| p[&run].get(&step).cloned().unwrap_or_default();
        for s in [60, 300, 540, 560, 580, 600] {
            assert!(!has(0, s).contains(&ProbeKind::Noise), "trunk at {s}");
            assert!(has(0, s).contains(&ProbeKind::Sharpness), "trunk at {s}");
            assert_eq!(has(1, s), KINDS.to_vec(), "sibling at {s}");
        }
        assert!(
            p[&0].values().all(|ks| !ks.contains(&ProbeKind::Noise)),
            "nor in the spread"
        );
    }

    fn plan_of(runs: &[(RunSpan, u64)], budget: f64) -> Plan {
        plan(&PlanInput {
            runs,
            kinds: &KINDS,
            skip: &BTreeSet::new(),
            cost: &costs(),
            budget,
            decay_points: 3,
            past: &BTreeMap::new(),
        })
    }

    fn steps_of(p: &Plan, run: RunId, k: ProbeKind) -> Vec<u64> {
        p.get(&run)
            .map(|m| {
                m.iter()
                    .filter(|(_, ks)| ks.contains(&k))
                    .map(|(s, _)| *s)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn spent(p: &Plan) -> f64 {
        let c = costs();
        p.values()
            .flat_map(|m| m.values().flatten())
            .map(|k| c[k])
            .sum()
    }

    #[test]
    fn the_default_schedule_has_its_anchors() {
        let a: Vec<(Anchor, u64)> = anchors(&trunk(), 3, 0);
        assert_eq!(
            a,
            vec![
                (Anchor::DecayEnd, 600),
                (Anchor::DecayPoint, 560),
                (Anchor::DecayPoint, 580),
                (Anchor::LastStable, 540),
                (Anchor::MidStable, 300),
                (Anchor::WarmupEnd, 60),
            ]
        );
        // With room for every anchor, every kind runs at each of them.
        let p = plan_of(&[(trunk(), 0)], 1e9);
        for k in KINDS {
            let s = steps_of(&p, 0, k);
            for want in [60, 300, 540, 560, 580, 600] {
                assert!(s.contains(&want), "{k} misses step {want}: {s:?}");
            }
        }
        // Past anchors are not planned again.
        assert_eq!(anchors(&trunk(), 3, 560).len(), 2);
        assert_eq!(
            anchors(&trunk(), 1, 0).len(),
            4,
            "one decay point: the last step"
        );
    }

    #[test]
    fn the_budget_is_respected_and_the_rest_spread() {
        for budget in [0.0, 5.0, 30.0, 60.0, 150.0, 400.0] {
            let p = plan_of(&[(trunk(), 0)], budget);
            assert!(spent(&p) <= budget + 1e-9, "{} > {budget}", spent(&p));
            // What is left unspent is the margin, plus less than the cheapest kind.
            let slack = budget - spent(&p);
            let noise = costs()[&ProbeKind::Noise];
            assert!(
                slack < SPREAD_MARGIN * spent(&p) + (1.0 + SPREAD_MARGIN) * noise + 1e-9,
                "budget {budget}: {slack} left"
            );
        }
        // Beyond the anchors the rest goes into the largest gaps: none over 150 steps apart.
        let p = plan_of(&[(trunk(), 0)], 400.0);
        for k in KINDS {
            let s = steps_of(&p, 0, k);
            assert!(s.len() > 6, "{k}: {s:?}");
            let widest = s.windows(2).map(|w| w[1] - w[0]).max().unwrap();
            assert!(widest <= 150, "{k}: {s:?}");
        }
    }

    #[test]
    fn a_tight_budget_keeps_the_decay_first_then_the_last_stable_step() {
        let c = costs();
        let round: f64 = c.values().sum();
        let with_margin = 1.0 + MARGIN;
        // One round: every kind at the last step of the decay (the first tier may spend the
        // whole budget), nothing before it.
        let p = plan_of(&[(trunk(), 0)], round);
        for k in KINDS {
            assert_eq!(steps_of(&p, 0, k), vec![600], "{k}");
        }
        // Two rounds and their margin: the first point through the decay too.
        let p = plan_of(&[(trunk(), 0)], 2.0 * round * with_margin);
        for k in KINDS {
            assert_eq!(steps_of(&p, 0, k), vec![560, 600], "{k}");
        }
        // Without the margin, the second round is not planned whole.
        let p = plan_of(&[(trunk(), 0)], 2.0 * round);
        assert_eq!(steps_of(&p, 0, ProbeKind::Landscape), vec![600]);
        // Four: the last stable step after the decay points, before mid-stable and the end
        // of warmup.
        let p = plan_of(&[(trunk(), 0)], 3.0 * round * with_margin);
        for k in KINDS {
            assert_eq!(steps_of(&p, 0, k), vec![560, 580, 600], "{k}");
        }
        let p = plan_of(&[(trunk(), 0)], 4.0 * round * with_margin);
        for k in KINDS {
            assert_eq!(steps_of(&p, 0, k), vec![540, 560, 580, 600], "{k}");
        }
        // Between rounds a cheaper kind takes a place the expensive ones cannot afford.
        let p = plan_of(
            &[(trunk(), 0)],
            (round + c[&ProbeKind::Noise]) * with_margin,
        );
        assert_eq!(steps_of(&p, 0, ProbeKind::Noise), vec![560, 600]);
        assert_eq!(steps_of(&p, 0, ProbeKind::Sharpness), vec![600]);
        // Too little for anything: nothing.
        assert!(plan_of(&[(trunk(), 0)], 0.5).is_empty());
    }

    /// The default `record` at the default budget (5% of 600 steps: 30 steps' worth) with the
    /// default settings' estimated costs (a round about 13.5 steps): every kind where the
    /// decay ends, all but the landscape at the first point through it, and the noise scale
    /// at each of the three and at the last stable step.
    #[test]
    fn the_default_budget_puts_every_kind_in_the_decay() {
        let budget = 0.05 * 600.0;
        let p = plan_of(&[(trunk(), 0)], budget);
        let in_decay = |k| -> Vec<u64> {
            steps_of(&p, 0, k)
                .into_iter()
                .filter(|&s| s > 540 && s <= 600)
                .collect()
        };
        for k in KINDS {
            assert!(in_decay(k).contains(&600), "{k}: {:?}", steps_of(&p, 0, k));
        }
        assert_eq!(in_decay(ProbeKind::Noise), vec![560, 580, 600]);
        for k in [ProbeKind::Sharpness, ProbeKind::Slice] {
            assert_eq!(in_decay(k), vec![560, 600], "{k}");
        }
        assert_eq!(in_decay(ProbeKind::Landscape), vec![600]);
        // Outside the decay only the cheapest kind, at the state the decay starts from: the
        // budget goes where the loss drops.
        assert_eq!(steps_of(&p, 0, ProbeKind::Noise), vec![540, 560, 580, 600]);
        for k in [ProbeKind::Sharpness, ProbeKind::Slice, ProbeKind::Landscape] {
            assert_eq!(steps_of(&p, 0, k), in_decay(k), "{k}");
        }
        assert!(spent(&p) <= budget);
    }

    #[test]
    fn a_branch_is_probed_at_its_first_and_last_step() {
        let branch = RunSpan {
            run: 1,
            from: 300,
            bounds: PhaseBounds {
                warmup_end: 0,
                decay_start: 300,
                total: 360,
            },
            branch: true,
        };
        assert_eq!(
            anchors(&branch, 3, 300),
            vec![(Anchor::DecayEnd, 360), (Anchor::DecayPoint, 301)]
        );
        let round: f64 = costs().values().sum();
        // The trunk at step 300: both decays' ends, then the points through the decays (the
        // trunk's, the branch's first step), then the trunk's last stable step.
        let runs = [(trunk(), 300), (branch, 300)];
        let p = plan_of(&runs, 2.0 * round);
        for k in KINDS {
            assert_eq!(steps_of(&p, 1, k), vec![360], "{k}");
            assert_eq!(steps_of(&p, 0, k), vec![600], "{k}");
        }
        let p = plan_of(&runs, 5.0 * round * (1.0 + MARGIN));
        for k in KINDS {
            assert_eq!(steps_of(&p, 1, k), vec![301, 360], "{k}");
            assert_eq!(steps_of(&p, 0, k), vec![560, 580, 600], "{k}");
        }
        let p = plan_of(&runs, 6.0 * round * (1.0 + MARGIN));
        for k in KINDS {
            assert_eq!(steps_of(&p, 1, k), vec![301, 360], "{k}");
            assert_eq!(steps_of(&p, 0, k), vec![540, 560, 580, 600], "{k}");
        }
        // Nothing before a run's completed step.
        let p = plan_of(&runs, 1e4);
        assert!(p[&0].keys().all(|&s| s > 300) && p[&1].keys().all(|&s| s > 300));
    }

    #[test]
    fn cosine_and_constant_schedules_get_the_anchors_they_have() {
        let cosine = RunSpan {
            bounds: PhaseBounds {
                warmup_end: 60,
                decay_start: 60,
                total: 600,
            },
            ..trunk()
        };
        let a: Vec<u64> = anchors(&cosine, 3, 0).iter().map(|x| x.1).collect();
        assert_eq!(a, vec![600, 240, 420, 60]);
        let constant = RunSpan {
            bounds: PhaseBounds {
                warmup_end: 0,
                decay_start: 600,
                total: 600,
            },
            ..trunk()
        };
        assert_eq!(
            anchors(&constant, 3, 0),
            vec![(Anchor::LastStable, 600), (Anchor::MidStable, 300)]
        );
    }

    #[test]
    fn prior_costs_lie_in_the_measured_ranges_of_the_default_preset() {
        // Measured in default `record` runs, `bench --probes` and `trainer/tests/
        // probe_settings.rs` on 2 loaded cores, in training steps, with the default settings:
        // sharpness 5.2–16.0, landscape (7×7) 2.8–5.6, slices (2 × 9 points) 0.6–2.2, noise
        // 0.6–1.9.
        let c = costs();
        let within = |k, lo, hi| {
            let v = c[&k];
            assert!((lo..=hi).contains(&v), "{k}: {v} outside {lo}–{hi}");
        };
        within(ProbeKind::Sharpness, 5.2, 16.0);
        within(ProbeKind::Landscape, 2.8, 5.6);
        within(ProbeKind::Slice, 0.6, 2.2);
        within(ProbeKind::Noise, 0.6, 1.9);
    }
}
