//! Run settings as a user gives them — flags, or a TOML file with the same keys — and their
//! validation into a trainer `RunConfig`. Every error names the value and what is allowed.
//!
//! - `fields`: every setting, declared once; the flag, the TOML key, the overlay of flags
//!   over the file and whether it shapes the run all come from that declaration.
//! - `run_config`: validation into a `RunConfig`, and the decay flags.
//! - `sibling_spec`: one `--sibling KEY=V1[,V2…]` or `[[sibling]]` table as given;
//!   `siblings`: each resolved over the trunk's settings through the flags' own parsers.
//! - `resume`: what `--resume` checks against the saved run, and what it may change.
//!
//! To add a setting: add one entry to the `settings!` list in `fields.rs` — its doc comment
//! (the `--help` text), its `#[arg(long, …)]`, `shaping` or `adjustable`, its name and its
//! type — then use the value: a shaping one in [`Settings::to_run_config`] and in the match of
//! `resume::resume_mismatch` (how it compares with a saved run), an adjustable one in
//! [`Settings::adjust`] (which serves new and resumed runs alike). The tests set every
//! declared setting in turn: each must be a flag with a help text and a TOML key, `--resume`
//! must refuse a shaping one that differs from the saved run, and `adjust` must read an
//! adjustable one and no other.

mod fields;
mod resume;
mod run_config;
mod sibling_spec;
mod siblings;

use std::path::Path;

use anyhow::Result;
use wsdscope_trainer::RunConfig;

pub use fields::{Setting, Settings};
pub use resume::{check_resume, resumed};
pub use run_config::{
    DEFAULT_DECAY, DEFAULT_EVAL_BATCHES, DEFAULT_LR, DEFAULT_PRESET, DEFAULT_VAL_FRACTION,
    DEFAULT_WARMUP, check_checkpoint_dir, default_threads, fork_length, parse_branch_decay,
    parse_decay,
};
pub use sibling_spec::SiblingSpec;
pub use siblings::SIBLING_KEYS;

/// The run configuration a `record` (or later `run`) invocation asks for.
pub fn resolve(cli: Settings, config_file: Option<&Path>) -> Result<RunConfig> {
    Settings::merged(cli, config_file)?.to_run_config()
}

#[cfg(test)]
mod tests;
