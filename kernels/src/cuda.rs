//! CUDA C sources of the kernels (f32 and bf16 variants), embedded so a CUDA backend can
//! compile them at run time with NVRTC. Each source includes `common.cuh` by name; pass
//! [`CUDA_COMMON_HEADER`] to NVRTC as that in-memory header. They are compiled to PTX by
//! `tests/nvrtc.rs` (with the NVRTC `scripts/test` provides; skipped without one). With the
//! `cuda` feature, `cuda_launch` compiles them at first use on each device and launches them
//! for CUDA tensors.

use std::sync::Mutex;

use candle_core::{Result, Tensor};

use crate::error::Error;

/// The helpers every source includes as `"common.cuh"`.
pub const CUDA_COMMON_HEADER: &str = include_str!("cuda/common.cuh");

/// (file name, source) of each kernel source in `src/cuda`.
pub const CUDA_SOURCES: &[(&str, &str)] = &[
    ("adamw.cu", include_str!("cuda/adamw.cu")),
    ("attention.cu", include_str!("cuda/attention.cu")),
    ("cross_entropy.cu", include_str!("cuda/cross_entropy.cu")),
    ("reduce.cu", include_str!("cuda/reduce.cu")),
    ("rms_norm.cu", include_str!("cuda/rms_norm.cu")),
    ("rope.cu", include_str!("cuda/rope.cu")),
    ("step.cu", include_str!("cuda/step.cu")),
    ("swiglu.cu", include_str!("cuda/swiglu.cu")),
];

/// The `extern "C" __global__` kernel names a source defines (its PTX entry points).
pub fn cuda_kernel_names(source: &str) -> Vec<&str> {
    source
        .split("extern \"C\" __global__ void ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .collect()
}

/// What a fused op's forward pass keeps for its backward pass when it ran on CUDA: per-row
/// statistics (log-sum-exps, reciprocal RMSs) as a device tensor. CPU runs keep their own.
#[derive(Default)]
pub(crate) struct Saved(Mutex<Option<Tensor>>);

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl Saved {
    pub(crate) fn put(&self, t: Tensor) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    /// The saved tensor, or an error naming the op if the forward pass did not run.
    pub(crate) fn get(&self, op: &'static str, what: &'static str) -> Result<Tensor> {
        let saved = self.0.lock().unwrap_or_else(|e| e.into_inner());
        saved
            .clone()
            .ok_or_else(|| Error::MissingState { op, what }.into())
    }
}
