//! The run's choices that the command line spells as words — which run steps next
//! ([`Policy`]) and the arithmetic of the passes ([`Precision`]) — with their parsers, whose
//! errors list every allowed word.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which run steps next when several are active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Every active run takes one step in turn.
    #[default]
    RoundRobin,
    /// The newest branch runs to its end first; the trunk waits while any branch is active.
    BranchesFirst,
    /// The trunk waits while branches run; the branches take steps in turn.
    TrunkPaused,
}

impl Policy {
    pub const NAMES: &'static str = "round-robin, branches-first, trunk-paused";

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "round-robin" => Ok(Policy::RoundRobin),
            "branches-first" => Ok(Policy::BranchesFirst),
            "trunk-paused" => Ok(Policy::TrunkPaused),
            _ => Err(Error::Config(format!(
                "--policy {s:?} is not allowed; use {}",
                Self::NAMES
            ))),
        }
    }
}

/// The arithmetic of the forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout (default).
    #[default]
    F32,
    /// Mixed precision: f32 master weights, gradients and AdamW moments; each weight cast to
    /// bf16 for the passes, activations in bf16 through the fused kernels (which accumulate in
    /// f32), the loss in f32. CUDA only.
    Bf16,
}

impl Precision {
    pub const NAMES: &'static str = "f32, bf16";

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(Error::Config(format!(
                "--precision {s:?} is not allowed; use {}",
                Self::NAMES
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}
