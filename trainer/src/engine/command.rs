//! The engine's side of its contract with whoever drives it: what it is asked between steps
//! ([`Command`], [`ForkRequest`]) and how a run ended ([`Outcome`]).

use std::path::PathBuf;

use wsdscope_events::{EndReason, RunId};

use crate::config::ForkLength;

/// A request to fork a decay branch from a run at its current step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForkRequest {
    pub parent: RunId,
    pub length: ForkLength,
    pub shape: crate::schedule::DecayShape,
    pub floor: f64,
    /// The parent's step the requester showed as the fork step (the TUI pauses the run while
    /// its form is open): the engine forks only if the parent is still at that step and
    /// otherwise refuses, naming both steps. `None`: wherever the parent is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_step: Option<u64>,
}

/// What the engine is asked to do between steps (serialisable: rank 0 broadcasts it to the
/// other ranks of a data-parallel run).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    Pause,
    Resume,
    Stop,
    /// Stop every run for a reason from outside (SIGINT, SIGTERM, a full disk): each run ends
    /// `stopped` with `reason` as its message (e.g. "interrupted by SIGTERM"); the trunk writes
    /// a final checkpoint into its `--checkpoint-dir`, or into `checkpoint_to` when it has
    /// none (preemption: a job that is about to be killed keeps its progress).
    StopWith {
        reason: String,
        checkpoint_to: Option<PathBuf>,
    },
    /// Fork a decay branch from a run at its current step.
    Fork(ForkRequest),
    /// Fork a run (usually a decayed branch) into one that continues at the trunk's stable
    /// learning rate until the trunk's last step (WSD-S, Wen et al. 2024).
    ForkResume {
        parent: RunId,
    },
    /// Run every periodic probe on a run now (and the interpolation to its parent or its
    /// newest branch, if one is running), outside the budget.
    Probe {
        run: RunId,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub reason: EndReason,
    pub step: u64,
    pub final_val_loss: Option<f64>,
    pub message: Option<String>,
}
