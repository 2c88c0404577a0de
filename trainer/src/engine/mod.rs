//! The training loop ([`Trainer`]) and the engine thread that drives it ([`Engine`]).
//!
//! The engine runs on its own named thread, emits [`RunEvent`]s into a sink, and takes
//! [`Command`]s between steps. Each step reads top to bottom: batch of this global step →
//! forward → backward → finiteness check → AdamW → metrics → eval/checkpoint when due.
//!
//! The pieces, in the order a reader meets them:
//! - `device.rs`: [`device()`] resolves `--device` (CUDA never falls back to the CPU), and
//!   [`gpu_ordinal`] picks each rank's GPU.
//! - `reduce.rs`: the gradient all-reduce of a data-parallel step, in flat buckets (on the
//!   host, or on the GPU through NCCL).
//! - `trainer.rs`: [`Trainer`], one run — its model, optimiser, data and position — and its
//!   step, probes, evaluation, checkpoints and forks.
//! - `command.rs`: what the engine is asked between steps ([`Command`], [`ForkRequest`]) and
//!   how a run ended ([`Outcome`]).
//! - `sibling.rs`: [`Trainer::sibling`], a run beside the trunk from step 0 that differs in
//!   a few settings, from the trunk's initial weights where the shape allows.
//! - `branch.rs`: the schedules of forked runs: a decay branch ([`decay_branch`]) or WSD-S's
//!   resumption at the trunk's stable lr.
//! - `step_noise.rs`: the gradient noise scale from the CPU step's own leaves, reported
//!   over a window of steps as a `noise` probe result at no cost to the probes' budget.
//! - `feed.rs`: the commands of a step boundary, broadcast from rank 0 to every rank.
//! - `probe_plan.rs`: where the periodic probes run — the phases' anchors first, the rest
//!   spread — within their share of training time (pure).
//! - `probe_clock.rs`: which periodic probe is due after a step, from that plan (or every
//!   `--probe-every` steps).
//! - `scheduler.rs`: the runs an engine drives: which steps next under the policy, forks
//!   within the slots and the memory budget, and the end of each run.
//! - `drive.rs`: the engine loop that ties these together until every run has ended.
//! - here: [`Engine`], that loop on its own thread, and the handle that sends it commands.

mod branch;
mod command;
mod device;
mod drive;
mod feed;
mod probe_clock;
mod probe_plan;
mod reduce;
mod scheduler;
mod sibling;
mod step_noise;
mod trainer;

use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use wsdscope_events::{EndReason, RunEvent};

pub use branch::decay_branch;
pub use command::{Command, ForkRequest, Outcome};
pub use device::{Placement, device, gpu_ordinal};
use drive::drive;
pub use probe_plan::{MARGIN as PROBE_PLAN_MARGIN, probe_anchors};
pub use trainer::{Fault, Trainer};

use crate::error::{Error, Result};

/// A running engine thread.
pub struct Engine {
    commands: Sender<Command>,
    thread: JoinHandle<Outcome>,
}

impl Engine {
    /// Starts `trainer` on a thread named `wsdscope-engine`, emitting every event into `sink`.
    pub fn spawn(trainer: Trainer, sink: impl FnMut(RunEvent) + Send + 'static) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wsdscope-engine".into())
            .spawn(move || drive(trainer, rx, sink))
            .map_err(|e| Error::Config(format!("cannot start the engine thread: {e}")))?;
        Ok(Engine {
            commands: tx,
            thread,
        })
    }

    /// A handle for sending commands from elsewhere (e.g. a signal handler or the UI).
    pub fn commands(&self) -> Sender<Command> {
        self.commands.clone()
    }

    pub fn send(&self, c: Command) {
        let _ = self.commands.send(c);
    }

    /// Waits for the run to end.
    pub fn join(self) -> Outcome {
        self.thread.join().unwrap_or_else(|_| Outcome {
            reason: EndReason::Failed,
            step: 0,
            final_val_loss: None,
            message: Some("the engine thread panicked".into()),
        })
    }
}
