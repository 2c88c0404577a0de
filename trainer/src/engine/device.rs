//! `--device` resolved to a candle device: the CPU, or a CUDA device (one per ordinal for
//! the whole process). Asking for CUDA never falls back to the CPU; a build or machine
//! without it gets an error that says why.

use candle_core::Device;

use crate::error::{Error, Result};

/// Resolves a `--device` value. CUDA needs a build with the `cuda` feature and a working
/// driver; asking for CUDA never falls back to the CPU.
pub fn device(spec: &str) -> Result<Device> {
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(n) = spec.strip_prefix("cuda:") {
        let Ok(ordinal) = n.parse::<usize>() else {
            return Err(Error::Config(format!(
                "--device {spec:?} is not allowed; use cpu or cuda:N"
            )));
        };
        return cuda_device(spec, ordinal);
    }
    if spec == "cuda-emu" {
        return Err(Error::Config(
            "--device cuda-emu runs the CUDA kernels on the CPU executor to check them; it is \
             only for `wsdscope bench --kernels --device cuda-emu`. To train, use cpu or cuda:N"
                .into(),
        ));
    }
    Err(Error::Config(format!(
        "--device {spec:?} is not allowed; use cpu or cuda:N"
    )))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(spec: &str, _ordinal: usize) -> Result<Device> {
    Err(Error::Config(format!(
        "--device {spec}: CUDA is unavailable in this build (it has no cuda feature); use --device cpu"
    )))
}

/// CUDA device `ordinal`: one candle device per ordinal for the whole process (tensors of two
/// separately created devices would count as being on different devices), on a stream of its
/// own. The driver is asked first, through error codes, so a missing driver or device gives
/// an error saying why rather than a panic.
#[cfg(feature = "cuda")]
fn cuda_device(spec: &str, ordinal: usize) -> Result<Device> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static DEVICES: OnceLock<Mutex<HashMap<usize, Device>>> = OnceLock::new();
    let mut devices = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(d) = devices.get(&ordinal) {
        return Ok(d.clone());
    }
    let unavailable = |why: String| {
        Error::Config(format!(
            "--device {spec}: CUDA is unavailable: {why}; use --device cpu"
        ))
    };
    wsdscope_kernels::cuda_device_name(ordinal).map_err(unavailable)?;
    let dev = Device::new_cuda_with_stream(ordinal).map_err(|e| unavailable(e.to_string()))?;
    if let Device::Cuda(c) = &dev {
        // SAFETY: every kernel, copy and cuBLAS call of this device goes to its one stream
        // (candle's ops, and the fused kernels, which launch on `cuda_stream()`), so stream
        // order alone sequences all uses of its tensors; cross-stream events are not needed.
        unsafe { c.disable_event_tracking() };
    }
    devices.insert(ordinal, dev.clone());
    Ok(dev)
}
