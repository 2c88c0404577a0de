//! Tensors as the launches see them: the kernels' element type of a dtype, the device address
//! of a tensor's contiguous elements, fresh buffers for outputs and tensors over them.

use candle_core::backend::BackendStorage;
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape, Storage, Tensor};
use cudarc::driver::{CudaStream, DevicePtr, SyncOnDrop};
use half::bf16;

use crate::error::{Error, cuda_err};
use crate::launch::{DevPtr, Elem};

/// The kernels' element type of a tensor dtype.
pub(super) fn elem(op: &'static str, dtype: DType) -> Result<Elem> {
    match dtype {
        DType::F32 => Ok(Elem::F32),
        DType::BF16 => Ok(Elem::Bf16),
        dtype => Err(Error::UnsupportedCudaDType { op, dtype }.into()),
    }
}

/// The CUDA storage behind a (read-locked) tensor storage.
pub(super) fn cuda<'a>(
    s: &'a Storage,
    op: &'static str,
    what: &'static str,
) -> Result<&'a CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        other => Err(Error::UnsupportedDevice {
            op,
            what,
            device: format!("{:?}", other.device().location()),
            supported: "CUDA expected here: all inputs of an op on one device",
        }
        .into()),
    }
}

/// Device address of the contiguous elements of `l` in `s`, with the guard that orders the
/// access on `stream` (keep it until the launches that use the address are queued).
pub(super) fn addr<'a>(
    s: &'a CudaStorage,
    l: &Layout,
    stream: &'a CudaStream,
    op: &'static str,
    what: &'static str,
) -> Result<(DevPtr, SyncOnDrop<'a>)> {
    let (a, _) = l
        .contiguous_offsets()
        .ok_or(Error::NonContiguous { op, what })?;
    let (base, size, sync) = match s.dtype() {
        DType::F32 => {
            let (p, g) = s.as_cuda_slice::<f32>()?.device_ptr(stream);
            (p, 4, g)
        }
        DType::BF16 => {
            let (p, g) = s.as_cuda_slice::<bf16>()?.device_ptr(stream);
            (p, 2, g)
        }
        DType::U32 => {
            let (p, g) = s.as_cuda_slice::<u32>()?.device_ptr(stream);
            (p, 4, g)
        }
        dtype => return Err(Error::UnsupportedCudaDType { op, dtype }.into()),
    };
    Ok((base + (a * size) as u64, sync))
}

/// A fresh device buffer of `n` elements of `dtype` that the op's kernels fill completely.
pub(super) fn fresh(dev: &CudaDevice, dtype: DType, n: usize) -> Result<CudaStorage> {
    let n = n.max(1);
    // SAFETY: every caller launches kernels that write all elements before anything reads
    // them (and never reads them itself).
    unsafe {
        Ok(match dtype {
            DType::F32 => CudaStorage::wrap_cuda_slice(dev.alloc::<f32>(n)?, dev.clone()),
            DType::BF16 => CudaStorage::wrap_cuda_slice(dev.alloc::<bf16>(n)?, dev.clone()),
            DType::F64 => CudaStorage::wrap_cuda_slice(dev.alloc::<f64>(n)?, dev.clone()),
            dtype => {
                return Err(Error::UnsupportedCudaDType { op: "alloc", dtype }.into());
            }
        })
    }
}

/// A tensor (no autograd history) over a device buffer.
pub(super) fn tensor(s: CudaStorage, dims: &[usize]) -> Tensor {
    Tensor::from_storage(
        Storage::Cuda(s),
        Shape::from_dims(dims),
        BackpropOp::none(),
        false,
    )
}

pub(super) fn row_len(op: &'static str, l: &Layout) -> Result<usize> {
    l.dims()
        .last()
        .copied()
        .ok_or_else(|| cuda_err(op, "a scalar has no rows"))
}

/// A tensor's storage and layout, read-locked, as CUDA storage.
macro_rules! cuda_in {
    ($t:expr, $op:expr, $what:expr, $guard:ident, $s:ident, $l:ident) => {
        let $guard = $t.storage_and_layout();
        let $s = cuda(&$guard.0, $op, $what)?;
        let $l = $guard.1;
    };
}
pub(super) use cuda_in;
