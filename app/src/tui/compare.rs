//! Decay branches compared with the trunk (issue 5, "Compare"): per branch its fork point,
//! decay, final validation loss and drop against the trunk at the same step; the fit of
//! L(D) = L0 + B·D^(−β) over completed branches' endpoints (MiniCPM §4.5, DESIGN §5); and the
//! memory a run holds while it lives.
//!
//! Pure functions over plain facts, so the TUI (from its event-built state) and `inspect`/`plot`
//! (from a recorded session, via `crate::analysis`) compute the same rows. This lives under
//! `tui/` because the render benchmark compiles the TUI's module tree on its own.

use serde::Serialize;
use serde_json::Value;
use wsdscope_probes::{PowerLawFit, fit_power_law};
use wsdscope_sessions::RunId;

use super::state::{RunData, TuiState};

/// Bytes per parameter of a run's parameter state alone (f32 parameters, two AdamW moments and
/// the gradients of a step): the estimate for a run whose config is not the trainer's full
/// form (an older or synthetic session). Otherwise the engine's own estimate is used.
pub const BYTES_PER_PARAM: u64 = 16;

/// Completed decay branches the endpoint fit needs.
pub const FIT_MIN_BRANCHES: usize = 3;

/// The parameter-state estimate for a run of `params` parameters (see [`BYTES_PER_PARAM`]).
pub fn run_bytes(params: u64) -> u64 {
    BYTES_PER_PARAM * params
}

/// One decay branch, compared with its trunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchRow {
    pub id: u32,
    pub name: String,
    pub parent: u32,
    pub fork_step: u64,
    pub tokens_at_fork: u64,
    /// `exp`, `linear`, `cosine`, `1-sqrt`, or `resume` for a WSD-S continuation.
    pub shape: String,
    pub decay_steps: u64,
    pub floor: Option<f64>,
    pub end_step: Option<u64>,
    pub end_tokens: Option<u64>,
    pub completed: bool,
    pub final_val_loss: Option<f64>,
    /// The trunk's validation loss at the branch's last step, when the trunk got there.
    pub trunk_val_loss: Option<f64>,
    /// trunk − branch at the same step (positive: the decay helped).
    pub drop: Option<f64>,
}

impl BranchRow {
    /// A completed decay (not a WSD-S resume): its endpoint belongs to the fit.
    pub fn is_fit_endpoint(&self) -> bool {
        self.completed && self.shape != "resume"
    }

    /// `exp 150 → 0.1×`, or `resume 400`.
    pub fn decay_label(&self) -> String {
        decay_label(&self.shape, self.decay_steps, self.floor)
    }
}

/// What is known of one forked run, whichever way it was read (events or a session file).
#[derive(Debug, Clone, Copy)]
pub struct BranchFacts<'a> {
    pub id: u32,
    pub name: &'a str,
    pub parent: u32,
    pub fork_step: u64,
    /// The run's schedule in its serde form (`{"kind": "wsd", "shape": …}`); `Null` if unknown.
    pub schedule: &'a Value,
    /// The last step the run is planned to reach.
    pub total: u64,
    pub tokens_per_step: u64,
    /// The last step the run recorded.
    pub last_step: Option<u64>,
    pub completed: bool,
    /// Its last validation loss (the one at its end once it completed).
    pub final_val_loss: Option<f64>,
}

/// A run's decay read from its schedule JSON: (shape, decay steps, floor ratio). A schedule
/// that is not WSD continues at the stable lr from `fork_step` to `total` (a WSD-S resume).
pub fn decay_of(sched: &Value, total: u64, fork_step: u64) -> (String, u64, Option<f64>) {
    match sched["kind"].as_str() {
        Some("wsd") => (
            sched["shape"].as_str().unwrap_or("?").to_string(),
            sched["decay_steps"].as_u64().unwrap_or(0),
            sched["floor"].as_f64(),
        ),
        _ => ("resume".to_string(), total.saturating_sub(fork_step), None),
    }
}

/// `exp 150 → 0.1×`, or `resume 400` when there is no floor.
pub fn decay_label(shape: &str, decay_steps: u64, floor: Option<f64>) -> String {
    match floor {
        Some(f) => format!("{shape} {decay_steps} → {f}×"),
        None => format!("{shape} {decay_steps}"),
    }
}

/// The row of one branch; `trunk_val_at(step)` is the trunk's validation loss at exactly
/// that step, if it was evaluated there.
pub fn branch_row(f: &BranchFacts, trunk_val_at: impl Fn(u64) -> Option<f64>) -> BranchRow {
    let (shape, decay_steps, floor) = decay_of(f.schedule, f.total, f.fork_step);
    let tps = f.tokens_per_step;
    let trunk_val_loss = f.last_step.and_then(trunk_val_at);
    BranchRow {
        id: f.id,
        name: f.name.to_string(),
        parent: f.parent,
        fork_step: f.fork_step,
        tokens_at_fork: f.fork_step * tps,
        shape,
        decay_steps,
        floor,
        end_step: f.last_step,
        end_tokens: f.last_step.map(|s| s * tps),
        completed: f.completed,
        final_val_loss: f.final_val_loss,
        trunk_val_loss,
        drop: match (trunk_val_loss, f.final_val_loss) {
            (Some(t), Some(b)) if f.completed => Some(t - b),
            _ => None,
        },
    }
}

/// The fit's points: (tokens, final val loss) of every completed decay branch.
pub fn fit_points(rows: &[BranchRow]) -> Vec<(f64, f64)> {
    rows.iter()
        .filter(|r| r.is_fit_endpoint())
        .filter_map(|r| Some((r.end_tokens? as f64, r.final_val_loss?)))
        .collect()
}

/// The power-law fit over the endpoints (tokens, final val loss) of completed decay
/// branches, when there are at least three distinct ones.
pub fn endpoint_fit(rows: &[BranchRow]) -> Option<PowerLawFit> {
    fit_power_law(&fit_points(rows)).ok()
}

/// `L(D) = 1.84 + 31.2·D^-0.27` with standard errors when known.
pub fn describe_fit(f: &PowerLawFit) -> String {
    match f.std_errors() {
        Some([e0, e1, e2]) => format!(
            "L(D) = {:.4} (±{e0:.4}) + {:.4} (±{e1:.4})·D^-{:.4} (±{e2:.4}), D in tokens, {} branch endpoints",
            f.l0, f.b, f.beta, f.n
        ),
        None => format!(
            "L(D) = {:.4} + {:.4}·D^-{:.4}, D in tokens, {} branch endpoints (exact: no uncertainty)",
            f.l0, f.b, f.beta, f.n
        ),
    }
}

/// The memory a run holds now: the engine's estimate from its config while it lives (the
/// parameter state alone when the config is not the trainer's), nothing once it ended (a
/// finished branch frees its memory).
pub fn resident_bytes(r: &RunData) -> Option<u64> {
    let s = r.start.as_ref()?;
    r.is_active()
        .then(|| r.run_bytes.unwrap_or_else(|| run_bytes(s.model.params)))
}

/// The memory all live runs hold, and how many they are.
pub fn total_resident(state: &TuiState) -> (u64, usize) {
    state
        .runs
        .values()
        .filter_map(resident_bytes)
        .fold((0, 0), |(b, n), x| (b + x, n + 1))
}

/// A run's validation loss at exactly `step` (the trunk's, to compare another run with).
pub(crate) fn val_at(r: &RunData, step: u64) -> Option<f64> {
    let i = r.eval_steps.binary_search(&step).ok()?;
    r.val_loss.values().get(i).copied()
}

/// A run's last validation loss: its last eval, or the one its `End` reported.
fn final_val(r: &RunData) -> Option<f64> {
    r.last_val()
        .or_else(|| r.end.as_ref().and_then(|e| e.final_val_loss))
}

/// Every forked run of the state, in id order, compared with the trunk (run 0).
pub fn branch_rows(state: &TuiState) -> Vec<BranchRow> {
    let trunk = state.runs.get(&0);
    let trunk_tps = trunk.and_then(RunData::batch_tokens);
    state
        .runs
        .values()
        .filter(|r| r.parent.is_some())
        .map(|r| {
            // Before its start event a branch is known from its `Forked` event alone.
            let sched_from_event;
            let schedule = match r.start.as_ref().and_then(|s| s.config.get("schedule")) {
                Some(v) => v,
                None => {
                    sched_from_event = r
                        .schedule
                        .as_ref()
                        .and_then(|s| serde_json::to_value(s).ok())
                        .unwrap_or(Value::Null);
                    &sched_from_event
                }
            };
            let facts = BranchFacts {
                id: r.id,
                name: &r.name,
                parent: r.parent.unwrap_or(0),
                fork_step: r.fork_step.unwrap_or(0),
                schedule,
                total: r.total().unwrap_or(0),
                tokens_per_step: r.batch_tokens().or(trunk_tps).unwrap_or(0),
                last_step: r.steps.last().copied().or(r.end.as_ref().map(|e| e.step)),
                completed: r.status() == super::state::RunStatus::Completed,
                final_val_loss: final_val(r),
            };
            branch_row(&facts, |s| trunk.and_then(|t| val_at(t, s)))
        })
        .collect()
}

/// What the branches view shows: the rows, and the fit once enough branches completed.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub rows: Vec<BranchRow>,
    /// Completed decay branches with an endpoint.
    pub endpoints: Vec<(RunId, f64, f64)>,
    pub fit: Option<PowerLawFit>,
}

impl Comparison {
    pub fn of(state: &TuiState) -> Self {
        let rows = branch_rows(state);
        let endpoints = rows
            .iter()
            .filter(|r| r.is_fit_endpoint())
            .filter_map(|r| Some((r.id, r.end_tokens? as f64, r.final_val_loss?)))
            .collect();
        let fit = endpoint_fit(&rows);
        Comparison {
            rows,
            endpoints,
            fit,
        }
    }

    /// Why there is no fit: `fit needs 3 completed branches, have 1`.
    pub fn missing(&self) -> Option<String> {
        self.fit.is_none().then(|| {
            let have = self.endpoints.len();
            if have >= FIT_MIN_BRANCHES {
                format!(
                    "no fit: the {have} endpoints need {FIT_MIN_BRANCHES} distinct token counts"
                )
            } else {
                format!("fit needs {FIT_MIN_BRANCHES} completed branches, have {have}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use wsdscope_sessions::RunEvent;
    use wsdscope_trainer::DecayShape;

    use super::*;
    use crate::tui::synthetic::{Synthetic, TOKENS_PER_STEP};

    /// A trunk at step 700 evaluated every 100 steps and where each branch ends (350, 530),
    /// two completed branches and one still running.
    fn state() -> TuiState {
        let syn = Synthetic::new(1000, 50, 150);
        let mut s = TuiState::live(None);
        let mut evs = syn.trunk_with_evals_at(700, 100, &[350, 530]);
        evs.extend(syn.forked_branch(1, 250, 100, DecayShape::Exp, 350));
        evs.extend(syn.forked_branch(2, 450, 80, DecayShape::Linear, 530));
        evs.extend(syn.forked_branch(3, 650, 100, DecayShape::Exp, 690));
        for ev in &evs {
            s.apply(ev);
        }
        s
    }

    fn trunk_val(s: &TuiState, step: u64) -> f64 {
        let t = &s.runs[&0];
        t.val_loss.values()[t.eval_steps.iter().position(|&x| x == step).unwrap()]
    }

    #[test]
    fn branches_are_compared_with_the_trunk_at_their_last_step() {
        let s = state();
        let rows = branch_rows(&s);
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3]);

        let b1 = &rows[0];
        assert_eq!((b1.parent, b1.fork_step), (0, 250));
        assert_eq!(b1.tokens_at_fork, 250 * TOKENS_PER_STEP);
        assert_eq!((b1.shape.as_str(), b1.decay_steps), ("exp", 100));
        assert_eq!(b1.floor, Some(0.1));
        assert_eq!(b1.decay_label(), "exp 100 → 0.1×");
        assert_eq!(b1.end_step, Some(350));
        assert_eq!(b1.end_tokens, Some(350 * TOKENS_PER_STEP));
        assert!(b1.completed && b1.is_fit_endpoint());
        assert_eq!(b1.final_val_loss, s.runs[&1].last_val());
        assert_eq!(b1.trunk_val_loss, Some(trunk_val(&s, 350)));
        let drop = b1.drop.unwrap();
        assert!(
            (drop - (trunk_val(&s, 350) - b1.final_val_loss.unwrap())).abs() < 1e-12,
            "drop is trunk − branch"
        );
        // The synthetic decay to 0.1× lowers the val loss by 0.35 × 0.9 at the end.
        assert!((drop - 0.315).abs() < 1e-9, "{drop}");

        let b2 = &rows[1];
        assert_eq!((b2.shape.as_str(), b2.decay_steps), ("linear", 80));
        assert_eq!(b2.end_step, Some(530));
        assert_eq!(b2.trunk_val_loss, Some(trunk_val(&s, 530)));
        assert!(b2.drop.unwrap() > 0.3);

        // Still running: its latest numbers, no drop, not a fit endpoint.
        let b3 = &rows[2];
        assert_eq!(b3.end_step, Some(690));
        assert!(!b3.completed && !b3.is_fit_endpoint());
        assert_eq!(b3.trunk_val_loss, None);
        assert_eq!(b3.drop, None);

        let cmp = Comparison::of(&s);
        assert_eq!(cmp.endpoints.len(), 2);
        assert!(cmp.fit.is_none());
        assert_eq!(
            cmp.missing().as_deref(),
            Some("fit needs 3 completed branches, have 2")
        );
    }

    #[test]
    fn a_third_completed_branch_makes_the_fit() {
        let mut s = state();
        let syn = Synthetic::new(1000, 50, 150);
        for ev in syn.forked_branch(3, 650, 100, DecayShape::Exp, 750) {
            // Where it left off: its later steps, its eval and its end.
            let later = match &ev {
                RunEvent::Step(m) => m.step > 690,
                RunEvent::Eval { .. } | RunEvent::End { .. } => true,
                _ => false,
            };
            if later {
                s.apply(&ev);
            }
        }
        let cmp = Comparison::of(&s);
        assert_eq!(cmp.endpoints.len(), 3);
        let f = cmp.fit.as_ref().expect("three endpoints fit");
        assert_eq!(f.n, 3);
        assert_eq!(cmp.missing(), None);
        for &(_, d, l) in &cmp.endpoints {
            assert!((f.predict(d) - l).abs() < 1e-6, "exact through 3 points");
        }
        assert_eq!(endpoint_fit(&cmp.rows).as_ref(), Some(f));
    }

    #[test]
    fn memory_is_sixteen_bytes_per_parameter_of_each_live_run() {
        let s = state();
        // The trunk and branch 3 live; branches 1 and 2 freed theirs.
        assert_eq!(total_resident(&s), (2 * 16 * 4_070_000, 2));
        assert_eq!(resident_bytes(&s.runs[&1]), None);
        assert_eq!(run_bytes(1_000), 16_000);
    }
}
