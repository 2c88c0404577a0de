//! [`Collective`] over MPI's world communicator (rsmpi over the system's OpenMPI).
//!
//! MPI is initialised with `MPI_THREAD_SERIALIZED`: the engine calls it from its own thread,
//! and calls are serialised by a lock (the engine makes them one at a time anyway).
//!
//! With a power-of-two number of ranks the sums are ours, not MPI's: recursive doubling, in
//! which ranks r and r ^ 2^k swap their partial sums at round k. That adds the ranks' shards
//! in the same binary tree as one process's step adds its halves (`model/tree.rs`), so
//! 2, 4, 8… ranks train what one process trains bit for bit (MPI's own all-reduce picks its
//! order by message size and may use a ring). Other world sizes use MPI_Allreduce.

use std::sync::Mutex;

use mpi::collective::SystemOperation;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::Collective;
use crate::error::{Error, Result};

/// The world communicator's rank and size, and the lock that serialises calls into MPI.
pub(super) struct Mpi {
    rank: usize,
    size: usize,
    lock: Mutex<()>,
}

/// Initialises MPI; the universe shuts it down when dropped.
pub(super) fn init() -> Result<(Universe, Mpi)> {
    let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
        .ok_or_else(|| Error::Config("MPI was already initialised".into()))?;
    if !matches!(threading, Threading::Serialized | Threading::Multiple) {
        return Err(Error::Config(format!(
            "this MPI gives threading level {threading:?}; the engine thread needs Serialized"
        )));
    }
    let world = universe.world();
    Ok((
        universe,
        Mpi {
            rank: world.rank() as usize,
            size: world.size() as usize,
            lock: Mutex::new(()),
        },
    ))
}

/// Ends every rank (MPI_Abort on the world).
pub(super) fn abort(code: i32) -> ! {
    SimpleCommunicator::world().abort(code)
}

impl Mpi {
    /// Runs `f` on the world communicator, one call at a time.
    fn with<T>(&self, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        f(&SimpleCommunicator::world())
    }
}

impl Mpi {
    /// Every rank's `buf` summed element-wise, the same bits on every rank: by recursive
    /// doubling for a power-of-two world (the tree of the module doc), else MPI_Allreduce.
    fn sum<T>(&self, buf: &mut [T])
    where
        T: Equivalence + Copy + std::ops::Add<Output = T>,
    {
        if buf.is_empty() || self.size < 2 {
            return;
        }
        if !self.size.is_power_of_two() {
            let send = buf.to_vec();
            self.with(|w| w.all_reduce_into(&send[..], buf, SystemOperation::sum()));
            return;
        }
        let mut theirs = buf.to_vec();
        self.with(|w| {
            let mut bit = 1;
            while bit < self.size {
                let partner = w.process_at_rank((self.rank ^ bit) as i32);
                mpi::point_to_point::send_receive_into(
                    &buf[..],
                    &partner,
                    &mut theirs[..],
                    &partner,
                );
                // IEEE addition commutes: both partners get the same bits.
                for (mine, other) in buf.iter_mut().zip(&theirs) {
                    *mine = *mine + *other;
                }
                bit <<= 1;
            }
        });
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.sum(buf);
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum(buf);
        Ok(())
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) -> Result<()> {
        self.with(|w| {
            let root = w.process_at_rank(0);
            let mut len = bytes.len() as u64;
            root.broadcast_into(&mut len);
            bytes.resize(len as usize, 0);
            root.broadcast_into(&mut bytes[..]);
        });
        Ok(())
    }
}
