//! [`Collective`] over NCCL on the run's GPU (cudarc's bindings; `libnccl.so.2` from NVIDIA's
//! wheel, see `scripts/setup-cuda`). The gradient and loss sums of a step stay on the device,
//! queued on the device's one stream behind the backward pass that made them ([`DeviceSum`]);
//! the small host messages (a step boundary's commands, the memory budget) are staged
//! through the device and go through NCCL too. So the launcher's MPI only starts the job:
//! rank 0 makes NCCL's unique id and broadcasts it over MPI, and every rank joins with it.

use std::ffi::{CStr, c_char};
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, DType, Device, InplaceOp1, Layout, Tensor};
use cudarc::driver::{CudaStream, CudaViewMut, DeviceRepr, DriverError};
use cudarc::nccl::result::NcclError;
use cudarc::nccl::{Comm, Id, NcclType, ReduceOp, sys};

use super::{Collective, DeviceSum};
use crate::error::{Error, Result};

/// Bytes of one broadcast frame: an 8-byte length and the message, or its first part. A step
/// boundary's command fits one frame; longer messages take a second broadcast.
const FRAME: usize = 256;

/// This rank's NCCL communicator on its GPU's stream.
pub(super) struct Nccl {
    comm: Mutex<Handle>,
    stream: Arc<CudaStream>,
    rank: usize,
    size: usize,
}

/// The communicator, moved between threads inside the mutex.
struct Handle(Comm);

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not
// overlap; every use goes through `Nccl::comm`'s mutex, one call at a time. NCCL makes the
// communicator's GPU current for each call itself.
unsafe impl Send for Handle {}

impl Nccl {
    /// Joins the ranks of `world` in one NCCL communicator on `device` (CUDA). All ranks must
    /// call this together: rank 0 makes the unique id, `world` broadcasts it, and NCCL's
    /// initialisation waits for every rank.
    pub(super) fn join(world: &dyn Collective, device: &Device) -> Result<Nccl> {
        let Device::Cuda(dev) = device else {
            return Err(Error::Config(format!(
                "NCCL sums on a GPU; this run is on {device:?}"
            )));
        };
        let stream = dev.cuda_stream();
        let (rank, size) = (world.rank(), world.size());
        // An empty broadcast tells the other ranks that rank 0 has no id for them.
        let made = world.is_root().then(Id::new);
        let mut bytes: Vec<u8> = match &made {
            Some(Ok(id)) => id.internal().iter().map(|&c| c as u8).collect(),
            _ => Vec::new(),
        };
        world.broadcast_bytes(&mut bytes)?;
        if let Some(Err(e)) = made {
            return Err(nccl_error("rank 0 could not make NCCL's unique id", &e));
        }
        let Ok(internal) = <[u8; 128]>::try_from(bytes.as_slice()) else {
            return Err(Error::Collective(format!(
                "rank {rank}: rank 0 sent {} bytes instead of NCCL's 128-byte unique id (it \
                 could not make one)",
                bytes.len()
            )));
        };
        // ncclCommInitRank joins on the calling thread's current GPU.
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| driver_error("binding the GPU to this thread", e))?;
        let ordinal = stream.context().ordinal();
        let comm = Comm::from_rank(
            Arc::clone(&stream),
            rank,
            size,
            Id::uninit(internal.map(|b| b as c_char)),
        )
        .map_err(|e| {
            nccl_error(
                &format!("rank {rank} of {size} could not join NCCL on GPU {ordinal}"),
                &e,
            )
        })?;
        Ok(Nccl {
            comm: Mutex::new(Handle(comm)),
            stream,
            rank,
            size,
        })
    }

    /// The communicator, one caller at a time.
    fn comm(&self) -> MutexGuard<'_, Handle> {
        self.comm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sums `buf` over the ranks in place on the device (queued on the stream).
    fn sum<T: NcclType>(&self, buf: &mut CudaViewMut<'_, T>) -> Result<()> {
        let n = buf.len();
        self.comm()
            .0
            .all_reduce_in_place(buf, &ReduceOp::Sum)
            .map_err(|e| nccl_error(&format!("all-reduce of {n} elements"), &e))?;
        Ok(())
    }

    /// Runs `op` on a device copy of `host` and copies the result back, waiting for it.
    fn staged<T: NcclType + DeviceRepr>(
        &self,
        host: &mut [T],
        op: impl FnOnce(&mut CudaViewMut<'_, T>) -> Result<()>,
    ) -> Result<()> {
        if host.is_empty() {
            return Ok(());
        }
        let copy = |e| driver_error("staging a host buffer through the GPU", e);
        let mut dev = self.stream.clone_htod(host).map_err(copy)?;
        op(&mut dev.slice_mut(..))?;
        self.stream.memcpy_dtoh(&dev, host).map_err(copy)?;
        self.stream.synchronize().map_err(copy)
    }

    /// Replaces `host` with rank 0's bytes, through the device.
    fn broadcast(&self, host: &mut [u8]) -> Result<()> {
        self.staged(host, |buf| {
            let n = buf.len();
            self.comm()
                .0
                .broadcast_in_place(buf, 0)
                .map_err(|e| nccl_error(&format!("broadcast of {n} bytes"), &e))?;
            Ok(())
        })
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.staged(buf, |b| self.sum(b))
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.staged(buf, |b| self.sum(b))
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) -> Result<()> {
        let mut frame = [0u8; FRAME];
        if self.rank == 0 {
            let head = bytes.len().min(FRAME - 8);
            frame[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            frame[8..8 + head].copy_from_slice(&bytes[..head]);
        }
        self.broadcast(&mut frame)?;
        let len = u64::from_le_bytes(frame[..8].try_into().expect("8 bytes")) as usize;
        let head = len.min(FRAME - 8);
        if self.rank != 0 {
            bytes.clear();
            bytes.extend_from_slice(&frame[8..8 + head]);
            bytes.resize(len, 0);
        }
        if len > head {
            self.broadcast(&mut bytes[head..])?;
        }
        Ok(())
    }

    fn on_device(&self) -> Option<&dyn DeviceSum> {
        Some(self)
    }
}

impl DeviceSum for Nccl {
    fn all_reduce_sum_in_place(&self, t: &Tensor) -> Result<()> {
        t.inplace_op1(&InPlaceSum(self))?;
        Ok(())
    }
}

/// [`DeviceSum`] as a candle op, to reach the tensor's device buffer.
struct InPlaceSum<'a>(&'a Nccl);

impl InplaceOp1 for InPlaceSum<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce-sum"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> candle_core::Result<()> {
        Err(candle_core::Error::Msg(
            "NCCL sums tensors on a GPU; this one is on the CPU".into(),
        ))
    }

    fn cuda_fwd(&self, s: &mut CudaStorage, l: &Layout) -> candle_core::Result<()> {
        let Some((a, b)) = l.contiguous_offsets() else {
            return Err(candle_core::Error::Msg(
                "NCCL sums contiguous tensors only".into(),
            ));
        };
        let done = match s.dtype() {
            DType::F32 => self
                .0
                .sum(&mut s.as_cuda_slice_mut::<f32>()?.slice_mut(a..b)),
            DType::F64 => self
                .0
                .sum(&mut s.as_cuda_slice_mut::<f64>()?.slice_mut(a..b)),
            d => {
                return Err(candle_core::Error::Msg(format!(
                    "NCCL sums f32 or f64 tensors here, not {d:?}"
                )));
            }
        };
        done.map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

/// An NCCL failure of `what`, with NCCL's own words for it.
fn nccl_error(what: &str, e: &NcclError) -> Error {
    // SAFETY: ncclGetErrorString returns a static NUL-terminated string for every result code.
    let text = unsafe { CStr::from_ptr(sys::ncclGetErrorString(e.0)) };
    Error::Collective(format!(
        "NCCL: {what}: {} ({:?}); NCCL_DEBUG=INFO says more",
        text.to_string_lossy(),
        e.0
    ))
}

/// A CUDA driver failure around an NCCL call.
fn driver_error(what: &str, e: DriverError) -> Error {
    Error::Collective(format!("NCCL: {what}: {e}"))
}
