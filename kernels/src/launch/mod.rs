//! Every launch of the CUDA sources in `src/cuda`, described once: which kernel, the grid,
//! the block, the dynamic shared memory and the argument list, for any executor that runs
//! those sources. On a GPU the executor is the driver (`cuda_launch`, through cudarc); on the
//! CPU it is the project's CUDA executor ([`crate::emu`]). Both receive the same [`Launch`]
//! and marshal its arguments the same way (an array of pointers to each argument's bytes, as
//! `cuLaunchKernel` takes them), so the executor tests the geometry and argument lists a GPU
//! run gets.
//!
//! Buffers are device addresses ([`DevPtr`]): what `cuMemAlloc` returned on a GPU, a host
//! address on the executor. The op functions take every buffer their kernels read and
//! write, allocate their own temporaries through [`Gpu::scratch`], and issue their kernels in
//! stream order; they check sizes that the kernels' `int` arguments must hold.
//!
//! `desc.rs` says what a launch is (its arguments, the C structs passed by value, the
//! geometry limits) and what runs one ([`Gpu`]); `ops.rs`, `adamw.rs` and `reduce.rs`
//! describe the launches of the crate's ops, and [`step`] those of the training step's glue
//! kernels.

mod adamw;
mod desc;
mod ops;
mod reduce;
pub mod step;
#[cfg(test)]
mod tests;

pub use adamw::{adamw_check, adamw_step};
pub use desc::{
    ATT_DMAX, ATT_WARPS, AdamWParams, Arg, AttnShape, BLOCK, DevPtr, Elem, Gpu, Launch, MAX_BLOCKS,
    REDUCE_BLOCKS, row_block, stride_blocks,
};
pub use ops::{
    AttnDims, attention_bwd, attention_fwd, cross_entropy_bwd, cross_entropy_fwd, rms_norm_bwd,
    rms_norm_fwd, rope, swiglu_bwd, swiglu_fwd,
};
pub use reduce::{Reduction, reduce};
