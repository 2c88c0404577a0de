//! Model shapes (presets, μP knobs, parameter counts, the HF `config.json` form) and the
//! complete, validated configuration of a training run.
//!
//! - `model.rs`: [`ModelConfig`], a decoder's shape, and what follows from it alone: its
//!   checks, parameter counts, FLOPs per token, the HF `config.json` form and the
//!   parameters' names and shapes ([`param_shapes`]).
//! - `presets.rs`: the named shapes [`preset`] looks up.
//! - `choices.rs`: [`Policy`] and [`Precision`], parsed from their command-line words.
//! - `probes.rs`: [`ProbeConfig`], what the probes measure and their time budget.
//! - `run.rs`: [`RunConfig`], everything that determines a run, and its validation.

mod choices;
mod model;
mod presets;
mod probes;
mod run;
#[cfg(test)]
mod tests;

pub use choices::{Policy, Precision};
pub use model::{ModelConfig, param_names, param_shapes};
pub use presets::{Preset, preset, presets};
pub use probes::ProbeConfig;
pub use run::{
    DataSpec, ForkLength, ForkPlan, MAX_RUNS, OptimConfig, RunConfig, SPARE_RUNS, SiblingPlan,
};
