//! wsdscope's trainer: a MiniCPM-architecture decoder on candle with real autograd, its data,
//! AdamW with μP groups, WSD and other schedules, checkpoints, and the engine thread that
//! drives a run and emits [`wsdscope_events::RunEvent`]s.
//!
//! The public surface: [`RunConfig`] (what a run is), [`Trainer`] (one run, step by step),
//! [`Engine`] (a trainer on its own thread, taking [`Command`]s), plus the pieces a user may
//! want on their own ([`model`], [`schedule`], [`data`], [`checkpoint`]).

pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod data;
pub mod engine;
pub mod error;
pub mod hf_export;
pub mod memory;
pub mod model;
pub mod objective;
pub mod optim;
pub mod probe;
pub mod schedule;

pub use collective::{Collective, World};
pub use config::{
    DataSpec, ForkLength, ForkPlan, ModelConfig, OptimConfig, Policy, Precision, Preset,
    ProbeConfig, RunConfig, SiblingPlan, preset, presets,
};
pub use engine::{Command, Engine, ForkRequest, Outcome, Trainer};
pub use error::{Error, Result};
pub use memory::{MemoryEstimate, available_host, check_fits, estimate};
pub use schedule::{DecayLength, DecayShape, DecaySpec, LengthForm, Schedule};
/// The CPU executor of the CUDA kernels (`wsdscope bench --kernels --device cuda-emu`).
pub use wsdscope_kernels::emu;
/// The fused kernels' parity check against their plain-op twins (`wsdscope bench --kernels`).
pub use wsdscope_kernels::parity;
