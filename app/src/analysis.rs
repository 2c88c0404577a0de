//! What decay branches say, read from a session: per branch its fork point, decay, final
//! validation loss and drop against the trunk at the same step; and the fit of
//! L(D) = L0 + B·D^(−β) over branch endpoints (MiniCPM §4.5). Shared by `inspect` and `plot`.

use anyhow::Result;
use wsdscope_sessions::{EndReason, RunInfo, Session};

// The rows and the fit are computed over plain facts shared with the TUI's branches view.
use crate::tui::compare::{BranchFacts, branch_row};
pub use crate::tui::compare::{BranchRow, describe_fit, endpoint_fit};

/// Tokens per step of a recorded run (batch × seq of its config; 0 where it has none).
pub(crate) fn tokens_per_step(r: &RunInfo) -> u64 {
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
    let rows = s
        .runs()
        .iter()
        .filter(|r| r.parent.is_some())
        .map(|r| {
            let facts = BranchFacts {
                id: r.id,
                name: &r.name,
                parent: r.parent.unwrap_or(0),
                fork_step: r.fork_step.unwrap_or(0),
                schedule: &r.config["schedule"],
                total: r.phases.total,
                tokens_per_step: tokens_per_step(r),
                last_step: r.last_step,
                completed: matches!(r.end, Some((EndReason::Completed, _))),
                final_val_loss: r.final_val_loss,
            };
            branch_row(&facts, val_at)
        })
        .collect();
    Ok(rows)
}
