//! CUDA launches of the fused kernels (the `cuda` feature).
//!
//! The sources in `src/cuda` are compiled by NVRTC into a CUBIN for the device's compute
//! capability at first use (once per process and capability), loaded once per device and
//! launched on the device's candle stream, so they are ordered with candle's own kernels and
//! cuBLAS calls with no extra synchronisation. A CUBIN rather than PTX: a driver loads CUBINs
//! from any NVRTC of its CUDA major version, but not PTX of a newer ISA than its own.
//!
//! Elements are f32 or bf16 (`half::bf16`, as candle stores it); the kernels compute in f32
//! and keep their statistics (log-sum-exps, reciprocal RMSs, softmax deltas) in f32, the
//! reductions and AdamW statistics in f64. Every output is a fresh allocation except
//! AdamW's, which updates parameters and moments in place.
//!
//! Which kernels an op launches, with what grid, block and arguments, is not decided here:
//! `crate::launch` describes every launch once, and [`Driver`] hands each description to
//! `cuLaunchKernel` as it is. The CPU executor (`crate::emu`) runs the same descriptions, so
//! the geometry and argument lists a GPU gets are the ones every test run executes.
//!
//! The layers, from the bottom: [`modules`] compiles the sources and loads them per device,
//! [`driver`] hands launches to the driver, [`buffers`] turns tensors into device addresses
//! and fresh buffers into tensors, and [`ops`], [`adamw`] and [`reduce`] are the entry points
//! the crate's ops call on CUDA tensors. [`device`] says whether CUDA is usable at all.

mod adamw;
mod buffers;
mod device;
mod driver;
mod modules;
mod ops;
mod reduce;
#[cfg(test)]
mod tests;

pub(crate) use adamw::{adamw_step, adamw_step_finite};
pub use device::cuda_device_name;
pub(crate) use driver::Driver;
pub(crate) use ops::{
    attention_bwd, attention_fwd, cross_entropy_bwd, cross_entropy_fwd, rms_norm_bwd, rms_norm_fwd,
    rope_apply, rope_bwd, swiglu_bwd, swiglu_fwd,
};
pub(crate) use reduce::{dot_diff_many, dot_many, sum_sq_many};
