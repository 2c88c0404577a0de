//! What decay branches say, read from a session: per branch its fork point, decay, final
//! validation loss and drop against the trunk at the same step; and the fit of
//! L(D) = L0 + B·D^(−β) over branch endpoints (MiniCPM §4.5). Shared by `inspect` and `plot`.

use anyhow::Result;
use serde::Serialize;
use wsdscope_probes::{PowerLawFit, fit_power_law};
use wsdscope_sessions::{EndReason, RunInfo, Session};

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

fn tokens_per_step(r: &RunInfo) -> u64 {
    let c = &r.config;
    c["batch"].as_u64().unwrap_or(0) * c["seq"].as_u64().unwrap_or(0)
}

/// Every forked run of the session, in id order.
pub fn branches(s: &Session) -> Result<Vec<BranchRow>> {
    let trunk_val = s.series(0, "val_loss").unwrap_or_default();
    let val_at = |step: u64| {
        trunk_val
            .0
            .iter()
            .position(|&x| x == step)
            .map(|i| trunk_val.1[i])
    };
    let mut rows = Vec::new();
    for r in s.runs().iter().filter(|r| r.parent.is_some()) {
        let sched = &r.config["schedule"];
        let fork_step = r.fork_step.unwrap_or(0);
        let (shape, decay_steps, floor) = match sched["kind"].as_str() {
            Some("wsd") => (
                sched["shape"].as_str().unwrap_or("?").to_string(),
                sched["decay_steps"].as_u64().unwrap_or(0),
                sched["floor"].as_f64(),
            ),
            _ => (
                "resume".to_string(),
                r.phases.total.saturating_sub(fork_step),
                None,
            ),
        };
        let tps = tokens_per_step(r);
        let trunk_val_loss = r.last_step.and_then(val_at);
        let completed = matches!(r.end, Some((EndReason::Completed, _)));
        rows.push(BranchRow {
            id: r.id,
            name: r.name.clone(),
            parent: r.parent.unwrap_or(0),
            fork_step,
            tokens_at_fork: fork_step * tps,
            shape,
            decay_steps,
            floor,
            end_step: r.last_step,
            end_tokens: r.last_step.map(|s| s * tps),
            completed,
            final_val_loss: r.final_val_loss,
            trunk_val_loss,
            drop: match (trunk_val_loss, r.final_val_loss) {
                (Some(t), Some(b)) if completed => Some(t - b),
                _ => None,
            },
        });
    }
    Ok(rows)
}

/// The power-law fit over the endpoints (tokens, final val loss) of completed decay
/// branches, when there are at least three distinct ones.
pub fn endpoint_fit(rows: &[BranchRow]) -> Option<PowerLawFit> {
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.completed && r.shape != "resume")
        .filter_map(|r| Some((r.end_tokens? as f64, r.final_val_loss?)))
        .collect();
    fit_power_law(&pts).ok()
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
