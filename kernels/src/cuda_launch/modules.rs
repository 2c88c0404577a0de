//! Compiling and loading: the sources in `src/cuda` compiled by NVRTC into a CUBIN per
//! compute capability (once per process), loaded as a module per device (once per device),
//! and the kernel functions looked up in them.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda::WrapErr;
use candle_core::{CudaDevice, Result};
use cudarc::driver::{CudaFunction, CudaModule};

use crate::cuda::{CUDA_COMMON_HEADER, CUDA_SOURCES};
use crate::error::cuda_err;

/// The source of `file` with `common.cuh` inlined (cudarc creates NVRTC programs without
/// in-memory headers).
fn full_source(file: &str) -> Result<String> {
    let src = CUDA_SOURCES
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, src)| *src)
        .ok_or_else(|| cuda_err("nvrtc", format!("no CUDA source named {file}")))?;
    Ok(src.replace("#include \"common.cuh\"", CUDA_COMMON_HEADER))
}

/// CUBIN of source `file` for compute capability `cc`, compiled by NVRTC.
pub(super) fn compile_cubin(file: &'static str, cc: (i32, i32)) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result, sys};
    let err = |msg: String| cuda_err("nvrtc", format!("{file}: {msg}"));
    let src = CString::new(full_source(file)?).map_err(|e| err(e.to_string()))?;
    let name = CString::new(file).map_err(|e| err(e.to_string()))?;
    let prog = result::create_program(&src, Some(&name)).map_err(|e| err(e.to_string()))?;
    let opts = [
        format!("--gpu-architecture=sm_{}{}", cc.0, cc.1),
        "-std=c++17".to_string(),
    ];
    // SAFETY: `prog` is a live program (created above, destroyed below); the option strings
    // outlive the call.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    let out = match compiled {
        Ok(()) => {
            let mut n = 0usize;
            // SAFETY: `prog` compiled; NVRTC writes the CUBIN's size into `n` and then exactly
            // that many bytes into a buffer of that size.
            unsafe {
                sys::nvrtcGetCUBINSize(prog, &mut n)
                    .result()
                    .map_err(|e| err(e.to_string()))?;
                let mut buf = vec![0u8; n];
                sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast())
                    .result()
                    .map_err(|e| err(e.to_string()))?;
                Ok(buf)
            }
        }
        Err(e) => {
            // SAFETY: `prog` is live; the log is a NUL-terminated copy owned by the Vec.
            let log = unsafe { result::get_program_log(prog) }
                .map(|l| {
                    let bytes: Vec<u8> = l.iter().map(|&c| c as u8).collect();
                    String::from_utf8_lossy(&bytes)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_default();
            Err(err(format!("NVRTC failed ({e}) with {opts:?}:\n{log}")))
        }
    };
    // SAFETY: `prog` is destroyed once, after its last use.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// CUBINs by (source, compute capability), shared by every device of that capability.
type Images = HashMap<(&'static str, (i32, i32)), Arc<Vec<u8>>>;
/// Loaded modules by (device ordinal, source): modules belong to the device's primary
/// context, which every candle device of that ordinal shares.
type Modules = HashMap<(usize, &'static str), Arc<CudaModule>>;

fn cubin(file: &'static str, cc: (i32, i32)) -> Result<Arc<Vec<u8>>> {
    static IMAGES: OnceLock<Mutex<Images>> = OnceLock::new();
    let images = IMAGES.get_or_init(Default::default);
    if let Some(img) = images
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(file, cc))
    {
        return Ok(img.clone());
    }
    // Compiled outside the lock: a race compiles twice and keeps one, harmlessly.
    let img = Arc::new(compile_cubin(file, cc)?);
    images
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((file, cc), img.clone());
    Ok(img)
}

/// Kernel `name` of source `file` on `dev`, compiling and loading the source at first use.
pub(super) fn function(dev: &CudaDevice, file: &'static str, name: &str) -> Result<CudaFunction> {
    static MODULES: OnceLock<Mutex<Modules>> = OnceLock::new();
    let stream = dev.cuda_stream();
    let ctx = stream.context();
    let key = (ctx.ordinal(), file);
    let modules = MODULES.get_or_init(Default::default);
    let cached = modules
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    let module = match cached {
        Some(m) => m,
        None => {
            let cc = ctx.compute_capability().w()?;
            let img = cubin(file, cc)?;
            let m = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(img.as_ref().clone()))
                .w()?;
            modules
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, m.clone());
            m
        }
    };
    module.load_function(name).w()
}
