//! The commands of one step boundary, the same on every rank: rank 0 (or the only process)
//! takes them from the engine's channel and broadcasts each; the other ranks apply what it
//! broadcast, so a fork, a pause or a stop happens on every rank at the same step.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use super::command::Command;
use crate::collective::Collective;

/// What the engine does next at a step boundary.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Next {
    /// Apply this command.
    Command(Command),
    /// Nobody can send commands any more (stop, as [`Command::Stop`]).
    Closed,
    /// Nothing more at this boundary: take the step.
    Empty,
}

/// The engine's channel of commands, and the ranks that must all apply them.
pub(super) struct Feed {
    rx: Receiver<Command>,
    comm: Arc<dyn Collective>,
}

impl Feed {
    pub(super) fn new(rx: Receiver<Command>, comm: Arc<dyn Collective>) -> Self {
        Feed { rx, comm }
    }

    /// The next command at this boundary; `wait` (a paused engine) blocks until one comes.
    pub(super) fn next(&self, wait: bool) -> Next {
        if !crate::collective::exchanges(&*self.comm) {
            return self.local(wait);
        }
        let mut bytes = if self.comm.is_root() {
            serde_json::to_vec(&self.local(wait)).expect("commands serialise")
        } else {
            Vec::new()
        };
        match self.comm.broadcast_bytes(&mut bytes) {
            Ok(()) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                lost(format!("rank 0 sent a command this rank cannot read: {e}"))
            }),
            Err(e) => lost(format!("lost contact with rank 0: {e}")),
        }
    }

    /// The next command from this process's own channel.
    fn local(&self, wait: bool) -> Next {
        let c = if wait {
            self.rx.recv().ok()
        } else {
            match self.rx.try_recv() {
                Ok(c) => Some(c),
                Err(TryRecvError::Empty) => return Next::Empty,
                Err(TryRecvError::Disconnected) => None,
            }
        };
        c.map_or(Next::Closed, Next::Command)
    }
}

/// Stops this rank with `reason` when the ranks cannot agree on what comes next.
fn lost(reason: String) -> Next {
    Next::Command(Command::StopWith {
        reason,
        checkpoint_to: None,
    })
}
