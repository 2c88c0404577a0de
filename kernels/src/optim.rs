//! The optimiser's entry points, [`adamw_step`] and [`adamw_step_finite`]: each checks a
//! parameter group, then runs it where its tensors live, through the fused CUDA kernels
//! (`cuda_launch`, feature `cuda`) or the CPU passes of `adamw`. Choosing here, above both,
//! keeps the step's data types and its CPU reference free of the CUDA driver layer, which
//! takes those types from `adamw`.

use candle_core::{Result, Tensor};

use crate::adamw::{self, AdamWHparams, AdamWStats};

/// One AdamW step over a parameter group, in place on `params`, `exp_avg` and `exp_avg_sq`
/// (a `Var` passes as `&var` through `Deref`). All tensors are checked before any is
/// written. Returns each tensor's [`AdamWStats`]. f32 or f64 on the CPU, contiguous. On
/// CUDA: f32 (master weights), one fused kernel per tensor writing θ, m and v in one pass,
/// and one host synchronisation per call (for the statistics). What it writes is written
/// even if it is not finite: ask [`adamw_step_finite`] first.
pub fn adamw_step(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    hp: &AdamWHparams,
) -> Result<Vec<AdamWStats>> {
    adamw::check_group(params, grads, exp_avg, exp_avg_sq)?;
    #[cfg(feature = "cuda")]
    if params.first().is_some_and(|p| p.device().is_cuda()) {
        return crate::cuda_launch::adamw_step(params, grads, exp_avg, exp_avg_sq, hp);
    }
    adamw::adamw_step_cpu(params, grads, exp_avg, exp_avg_sq, hp)
}

/// Whether [`adamw_step`] with the same arguments would leave every parameter and both
/// moments of every tensor finite, without writing anything. Each element is computed
/// exactly as the step computes it (the same functions; θ' in the element type), so `true`
/// means the step writes only finite values and `false` that it would write at least one
/// non-finite m, v or θ. The group is checked as [`adamw_step`] checks it. A caller that
/// must not apply half a step checks every group before stepping any. On the CPU it reads
/// θ, g, m and v once, on rayon's pool; on CUDA one read-only kernel per tensor and one host
/// synchronisation per call (for the flag).
pub fn adamw_step_finite(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    hp: &AdamWHparams,
) -> Result<bool> {
    adamw::check_group(params, grads, exp_avg, exp_avg_sq)?;
    #[cfg(feature = "cuda")]
    if params.first().is_some_and(|p| p.device().is_cuda()) {
        return crate::cuda_launch::adamw_step_finite(params, grads, exp_avg, exp_avg_sq, hp);
    }
    adamw::adamw_step_finite_cpu(params, grads, exp_avg, exp_avg_sq, hp)
}
