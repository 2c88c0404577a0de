//! How the ranks of a data-parallel run talk to each other ([`Collective`]): their number and
//! place, a sum over all ranks, and a broadcast from rank 0. One process is [`Solo`] (every
//! call a no-op), so the engine has a single code path; under `mpirun` (built with the `mpi`
//! feature) it is MPI's world communicator ([`World::join`] picks).
//!
//! Each rank trains on its own rows of the global batch ([`rows`]), so together the ranks see
//! exactly the data one process sees; see `engine/reduce.rs` for the gradient all-reduce.
//!
//! A run on a GPU with several ranks trains through NCCL instead ([`for_device`], built with
//! the `cuda` feature): its sums stay on the device ([`DeviceSum`]) and MPI only starts the
//! job (it carries NCCL's unique id) and aborts it.

mod lifeline;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "cuda")]
mod nccl;

pub use lifeline::{Lifeline, Lost};

use std::ops::Range;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// The ranks of a run and what they can do together. Every rank must make the same calls in
/// the same order (MPI's rule for collectives); a rank that does not makes the others wait.
pub trait Collective: Send + Sync {
    /// This process's place among the ranks, `0..size()`.
    fn rank(&self) -> usize;

    /// How many ranks share the run.
    fn size(&self) -> usize;

    /// Replaces `buf` on every rank with the element-wise sum over all ranks.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;

    /// Replaces `buf` on every rank with the element-wise sum over all ranks.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;

    /// Replaces `bytes` on every rank with rank 0's (whatever their lengths were).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) -> Result<()>;

    /// Rank 0 records the session and writes checkpoints.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Sums of tensors on their own device, if this collective has them (NCCL on a GPU);
    /// without, the engine sums through host buffers.
    fn on_device(&self) -> Option<&dyn DeviceSum> {
        None
    }
}

/// Sums over the ranks of tensors where they live, queued on their device's stream like any
/// other op on them. Every rank must make the same calls in the same order.
pub trait DeviceSum: Send + Sync {
    /// Replaces the contiguous f32 or f64 tensor `t` with its element-wise sum over all
    /// ranks, in place: `t` must own its storage (no other tensor may share it).
    fn all_reduce_sum_in_place(&self, t: &Tensor) -> Result<()>;
}

/// Whether the ranks of `comm` exchange anything in a step: several ranks, or one sent
/// through NCCL anyway (`WSDSCOPE_NCCL=1`, to check that path on one GPU). One process on its
/// own makes no collective calls.
pub fn exchanges(comm: &dyn Collective) -> bool {
    comm.size() > 1 || comm.on_device().is_some()
}

/// The collective a run on `device` trains with: NCCL on the GPU when `device` is CUDA and
/// `comm` has several ranks, or one with `WSDSCOPE_NCCL=1`; otherwise `comm` itself. NCCL's
/// unique id travels over `comm` (MPI), so every rank must call this at the same point.
pub fn for_device(comm: Arc<dyn Collective>, device: &Device) -> Result<Arc<dyn Collective>> {
    let forced = nccl_forced(std::env::var("WSDSCOPE_NCCL").ok().as_deref())?;
    if forced && !device.is_cuda() {
        return Err(Error::Config(format!(
            "WSDSCOPE_NCCL=1 sends the ranks' sums through NCCL, which needs a GPU \
             (--device cuda); this run is on {device:?}"
        )));
    }
    if comm.on_device().is_some() || !device.is_cuda() || (comm.size() == 1 && !forced) {
        return Ok(comm);
    }
    #[cfg(feature = "cuda")]
    return Ok(Arc::new(nccl::Nccl::join(&*comm, device)?));
    #[cfg(not(feature = "cuda"))]
    Ok(comm)
}

/// Whether `WSDSCOPE_NCCL` (`value`) asks for NCCL even for one process: `1` yes; unset,
/// empty or `0` no.
fn nccl_forced(value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("" | "0") => Ok(false),
        Some("1") => Ok(true),
        Some(v) => Err(Error::Config(format!(
            "WSDSCOPE_NCCL={v:?} is not allowed; use 1 (NCCL even for one process) or 0"
        ))),
    }
}

/// One process: a sum over one rank is the value itself, a broadcast from itself changes
/// nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
}

/// The rows of a global batch of `global` rows that `rank` of `size` trains on: contiguous,
/// in rank order, as even as possible (the first `global % size` ranks take one more).
pub fn rows(global: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, extra) = (global / size, global % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// Errors unless every one of `size` ranks gets at least one row of a batch of `batch`.
pub fn check_batch(batch: usize, size: usize) -> Result<()> {
    if batch < size {
        return Err(Error::Config(format!(
            "--batch {batch} cannot be split across {size} ranks: each needs at least one sequence"
        )));
    }
    Ok(())
}

/// This process's place in the job: MPI's world when launched by `mpirun`/`srun` (with the
/// `mpi` feature), otherwise [`Solo`]. Keep it alive until the run has ended, on the thread
/// that made it: dropping it shuts MPI down.
pub struct World {
    comm: Arc<dyn Collective>,
    #[cfg(feature = "mpi")]
    _universe: Option<::mpi::environment::Universe>,
}

impl World {
    /// Joins the job this process was launched into. Without the `mpi` feature a launch by
    /// `mpirun` with more than one rank is refused (each rank would train alone and record).
    pub fn join() -> Result<World> {
        #[cfg(feature = "mpi")]
        if launched_ranks().is_some() {
            let (universe, comm) = mpi::init()?;
            return Ok(World {
                comm: Arc::new(comm),
                _universe: Some(universe),
            });
        }
        #[cfg(not(feature = "mpi"))]
        if let Some(n) = launched_ranks().filter(|&n| n > 1) {
            return Err(Error::Config(format!(
                "launched as one of {n} MPI ranks, but this wsdscope was built without MPI: \
                 build it with `cargo build --release --features wsdscope/mpi`"
            )));
        }
        Ok(World::solo())
    }

    /// One process on its own.
    pub fn solo() -> World {
        World {
            comm: Arc::new(Solo),
            #[cfg(feature = "mpi")]
            _universe: None,
        }
    }

    /// The ranks, to hand to the trainer ([`crate::Trainer::set_collective`]).
    pub fn collective(&self) -> Arc<dyn Collective> {
        Arc::clone(&self.comm)
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    pub fn size(&self) -> usize {
        self.comm.size()
    }

    pub fn is_root(&self) -> bool {
        self.comm.is_root()
    }

    /// Ends every rank of the job at once (a rank that cannot go on while the others wait
    /// for it in a collective); one process just exits.
    pub fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if self._universe.is_some() {
            mpi::abort(code);
        }
        std::process::exit(code)
    }
}

/// How many ranks the launcher (`mpirun`, `srun`) started, if this process is one of them.
pub fn launched_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cover_the_batch_in_order_as_evenly_as_possible() {
        for global in 1..20 {
            for size in 1..=global.min(6) {
                let parts: Vec<_> = (0..size).map(|r| rows(global, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, global);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].len() >= w[1].len() && w[0].len() - w[1].len() <= 1);
                }
            }
        }
        assert_eq!(rows(16, 1, 2), 8..16);
        assert_eq!(rows(5, 0, 2), 0..3);
    }

    #[test]
    fn solo_changes_nothing() {
        let mut x = vec![1.0f32, 2.0];
        Solo.all_reduce_sum_f32(&mut x).unwrap();
        assert_eq!(x, [1.0, 2.0]);
        let mut b = vec![7u8];
        Solo.broadcast_bytes(&mut b).unwrap();
        assert_eq!(b, [7]);
        assert!(check_batch(1, 2).is_err() && check_batch(2, 2).is_ok());
    }

    #[test]
    fn one_process_exchanges_nothing_and_keeps_its_collective_on_the_cpu() {
        assert!(!exchanges(&Solo));
        let comm = for_device(Arc::new(Solo), &Device::Cpu).unwrap();
        assert!(!exchanges(&*comm));
    }

    #[test]
    fn wsdscope_nccl_takes_1_or_0() {
        assert!(!nccl_forced(None).unwrap());
        assert!(!nccl_forced(Some("0")).unwrap() && !nccl_forced(Some("")).unwrap());
        assert!(nccl_forced(Some("1")).unwrap());
        let e = nccl_forced(Some("yes")).unwrap_err().to_string();
        assert!(
            e.contains("WSDSCOPE_NCCL=\"yes\" is not allowed; use 1"),
            "{e}"
        );
    }
}
