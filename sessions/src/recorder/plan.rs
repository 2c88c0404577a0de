//! What a session file is created for: the trunk's configuration, its run slots and the
//! widths of the per-step rows.

use crate::RunStart;
use crate::layout::WIDE;

/// What the file is created for: the trunk's configuration and how many runs it can hold.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPlan {
    /// The trunk's run configuration (the root `config` attribute).
    pub config: serde_json::Value,
    /// Run slots to create, the trunk's included. A run with a higher id cannot be recorded.
    pub runs: u32,
    /// Columns of `grad_norm_per_layer`, `grad_norm_per_group` and `max_update`: the widest
    /// run's (rows of narrower runs are padded with NaN and read back at their own width).
    pub widths: [usize; WIDE.len()],
}

impl SessionPlan {
    /// A plan for a session whose trunk starts with `start` and that holds `runs` runs, all of
    /// the trunk's shape (forks copy their parent's shape).
    pub fn for_trunk(start: &RunStart, runs: u32) -> Self {
        SessionPlan {
            config: start.config.clone(),
            runs: runs.max(1),
            widths: run_widths(start),
        }
    }
}

/// Columns of each [`WIDE`] dataset that a run's step events carry.
pub fn run_widths(s: &RunStart) -> [usize; WIDE.len()] {
    [
        s.model.layers,
        s.param_groups.len(),
        s.tracked_tensors.len(),
    ]
}
