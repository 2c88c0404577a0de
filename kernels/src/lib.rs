//! Fused training ops for wsdscope, each checked against a `*_slow` twin built from plain,
//! differentiable candle ops (the formulations `trainer::model` and `trainer::optim` use).
//!
//! Differentiable ops (candle `CustomOp`s with forward and backward; f32 or f64 on the CPU,
//! f32 or bf16 on CUDA with the `cuda` feature):
//! - [`rms_norm`]`(x (…, H), w (H), eps)`: gradients for x and w.
//! - [`swiglu`]`(gate, up)`: silu(gate)·up, gradients for both.
//! - [`cross_entropy`]`(logits (N, V), targets (N) u32)`: the scalar mean CE; keeps N
//!   log-sum-exps, not an N×V softmax, for backward.
//! - [`rope`]`(x (B, h, T, D), cos (T, D), sin (T, D))`: half-split RoPE, gradient for x.
//! - [`attention`]`(q (B, H, T, D), k, v (B, Hkv, T, D), scale)`: causal grouped-query
//!   attention, flash style (key tiles, online softmax, log-sum-exp saved for backward).
//!
//! Optimiser and statistics (no autograd):
//! - [`adamw_step`]: one AdamW step for a parameter group, in place on parameters and both
//!   moments (three in-place passes per tensor: candle's in-place API writes one tensor per
//!   call), returning Σ(Δθ)², Σθ², max|Δθ| per tensor ([`AdamWStats`]).
//! - [`adamw_step_finite`]: whether that step would leave every θ, m and v finite, computed
//!   with the step's own arithmetic and writing nothing; checking every group first makes a
//!   step all-or-nothing.
//! - [`sum_sq_many`], [`dot_many`], [`dot_diff_many`]: per-tensor Σx², ⟨a, b⟩ and
//!   ⟨g, a − b⟩ accumulated in f64; [`step_dots_many`]: the per-step geometry's three
//!   products of two gradients and an update in one pass.
//!
//! CPU kernels split work over rayon's current pool (never their own thread counts) and
//! sum partial results in a fixed order, so results do not depend on the number of
//! threads. Element-wise hot loops are compiled twice, for the x86-64 baseline and for AVX2
//! (chosen at run time), with identical arithmetic; the matrix products (attention's tiles,
//! [`slices::matmul`]) use the `gemm` crate, whose micro-kernel is chosen per CPU, so those
//! results can differ in the last bits between CPUs (as candle's own matmul does). In
//! f32 the kernels use their own vectorisable eˣ (within about one ulp of libm's); f64
//! uses libm. Other dtypes and devices get a candle error wrapping [`Error`], never a panic.
//!
//! [`slices`] has the same ops on plain f32 slices, forward and backward as separate calls,
//! plus a GEMM, for hand-written backward passes (the trainer's CPU step uses them).
//!
//! [`backend`] is the training step's view of the kernels: buffers and exactly the ops a
//! MiniCPM step needs, implemented on the CPU slices, on the CPU executor of the CUDA sources
//! and (feature `cuda`) on a GPU, so one hand-written step runs on all three.
//!
//! CUDA C sources for the same ops (f32 and bf16) are embedded as [`CUDA_SOURCES`] with
//! their shared header [`CUDA_COMMON_HEADER`]; a test compiles them to PTX with NVRTC
//! (`scripts/test` provides it; a plain `cargo test` skips that step without it). With the
//! `cuda` feature every op also runs on CUDA tensors: the sources are compiled by NVRTC at
//! first use on each device and launched on candle's stream (bf16 in and out, f32
//! accumulation; AdamW on f32 master weights).

mod adamw;
mod attention;
pub mod backend;
mod cpu;
mod cross_entropy;
mod cuda;
#[cfg(feature = "cuda")]
mod cuda_launch;
pub mod emu;
mod error;
pub mod launch;
mod optim;
pub mod parity;
mod reduce;
mod rms_norm;
mod rope;
pub mod slices;
mod swiglu;

pub use adamw::{AdamWHparams, AdamWSlowStep, AdamWStats, adamw_step_slow};
pub use attention::{attention, attention_slow, causal_mask, repeat_kv};
pub use cross_entropy::{cross_entropy, cross_entropy_slow};
pub use cuda::{CUDA_COMMON_HEADER, CUDA_SOURCES, cuda_kernel_names};
#[cfg(feature = "cuda")]
pub use cuda_launch::cuda_device_name;
pub use error::Error;
pub use optim::{adamw_step, adamw_step_finite};
pub use reduce::{
    dot_diff_many, dot_diff_many_slow, dot_many, dot_many_slow, step_dots_many, sum_sq_many,
    sum_sq_many_slow,
};
pub use rms_norm::{rms_norm, rms_norm_slow};
pub use rope::{rope, rope_slow};
pub use swiglu::{swiglu, swiglu_slow};
