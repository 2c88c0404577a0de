//! Launching: the shared launch descriptions of `crate::launch`, run by the driver.

use std::sync::Arc;

use candle_core::CudaDevice;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use super::modules::function;
use crate::error::Error;
use crate::launch::{DevPtr, Gpu, Launch};

/// Runs [`Launch`]es on one device's candle stream: the kernel's CUfunction, the launch's
/// geometry and its parameter array go to `cuLaunchKernel` unchanged. Temporaries are freed
/// (stream-ordered) when it is dropped, after the launches that use them are queued.
pub(crate) struct Driver {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    scratch: Vec<CudaSlice<u8>>,
}

impl Driver {
    pub(crate) fn new(dev: &CudaDevice) -> Self {
        Self {
            dev: dev.clone(),
            stream: dev.cuda_stream(),
            scratch: Vec::new(),
        }
    }
}

impl Gpu for Driver {
    fn scratch(&mut self, bytes: usize) -> std::result::Result<DevPtr, Error> {
        // SAFETY: scratch contents are unspecified by contract: the kernels that use a
        // temporary write it before reading it.
        let s = unsafe { self.dev.alloc::<u8>(bytes.max(1)) }.map_err(|e| Error::Cuda {
            op: "scratch",
            msg: e.to_string(),
        })?;
        let (p, sync) = s.device_ptr(&self.stream);
        drop(sync);
        self.scratch.push(s);
        Ok(p)
    }

    fn launch(&mut self, l: &Launch) -> std::result::Result<(), Error> {
        let f = function(&self.dev, l.source, &l.kernel).map_err(|e| Error::Cuda {
            op: "launch",
            msg: e.to_string(),
        })?;
        let mut params = l.params();
        // SAFETY: the launch's arguments match the kernel's parameters (the op functions of
        // `crate::launch` build them per kernel, and the CPU executor checks every list
        // against the compiled kernel's parameter sizes); `params` points at them and lives
        // across the call; every pointer argument is a live device buffer of this stream
        // (its guard or owner outlives the queued launch: frees are stream-ordered).
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                l.grid,
                l.block,
                l.shared_bytes,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| Error::Cuda {
            op: "launch",
            msg: format!("{}: {e}", l.kernel),
        })
    }
}

/// A launch's error as candle's.
pub(super) fn lerr(e: Error) -> candle_core::Error {
    e.into()
}
