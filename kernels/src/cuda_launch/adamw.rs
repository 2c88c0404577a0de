//! The AdamW step on CUDA: one fused kernel per tensor writing θ, m and v in place, and the
//! read-only check that the step would stay finite.

use candle_core::{CudaDevice, CudaStorage, DType, InplaceOp3, Layout, Result, Tensor};
use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::buffers::{addr, cuda, cuda_in};
use super::driver::{Driver, lerr};
use crate::adamw::{AdamWHparams, AdamWStats};
use crate::error::{Error, cuda_err};
use crate::launch::{self, AdamWParams, DevPtr, Elem};

const ADAMW: &str = "adamw_step";

/// The CUDA device of an AdamW group, checking that every tensor is f32 (master weights) and
/// on the device of `first`.
fn adamw_device(
    first: &Tensor,
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
) -> Result<CudaDevice> {
    for t in params.iter().chain(grads).chain(exp_avg).chain(exp_avg_sq) {
        if t.dtype() != DType::F32 {
            return Err(cuda_err(
                ADAMW,
                format!(
                    "on CUDA parameters, gradients and moments are f32 (master weights), got {:?}",
                    t.dtype()
                ),
            ));
        }
        if !t.device().same_device(first.device()) {
            return Err(cuda_err(
                ADAMW,
                "all tensors of a group must be on one device",
            ));
        }
    }
    Ok(first.device().as_cuda_device()?.clone())
}

/// One fused AdamW step on one tensor: θ in place (the op's destination), m and v in place
/// through their device addresses, the step statistics into `stats` (3 doubles on the
/// device).
struct FusedStep<'a> {
    grad: &'a Tensor,
    hp: AdamWParams,
    /// Device address of this tensor's three statistics.
    stats: DevPtr,
}

impl InplaceOp3 for FusedStep<'_> {
    fn name(&self) -> &'static str {
        ADAMW
    }

    fn cpu_fwd(
        &self,
        _: &mut candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        Err(cuda_err(ADAMW, "the fused CUDA step was given CPU tensors"))
    }

    fn cuda_fwd(
        &self,
        th: &mut CudaStorage,
        tl: &Layout,
        m: &CudaStorage,
        ml: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<()> {
        let dev = th.device.clone();
        let st = dev.cuda_stream();
        let n = tl.shape().elem_count();
        cuda_in!(self.grad, ADAMW, "grad", gg, gs, gl);
        let (a, _) = tl.contiguous_offsets().ok_or(Error::NonContiguous {
            op: ADAMW,
            what: "param",
        })?;
        let (mp, _m) = addr(m, ml, &st, ADAMW, "exp_avg")?;
        let (vp, _v) = addr(v, vl, &st, ADAMW, "exp_avg_sq")?;
        let (gp, _g) = addr(gs, gl, &st, ADAMW, "grad")?;
        let theta = th.as_cuda_slice_mut::<f32>()?;
        let (base, _t) = theta.device_ptr_mut(&st);
        let tp = base + (4 * a) as u64;
        if [vp, tp, gp].contains(&mp) || [tp, gp].contains(&vp) {
            return Err(cuda_err(
                ADAMW,
                "param, grad and moments must not share memory",
            ));
        }
        // The kernel writes m and v through their addresses: device memory no host reference
        // sees, and no one else on this stream reads the moments while it runs.
        let mut d = Driver::new(&dev);
        launch::adamw_step(&mut d, Elem::F32, [tp, gp, mp, vp], n, self.hp, self.stats)
            .map_err(lerr)?;
        Ok(())
    }
}

/// [`crate::adamw_step`] on CUDA: one fused kernel per tensor writing θ, m and v, and the
/// statistics of every tensor copied to the host once at the end. f32 (master weights).
pub(crate) fn adamw_step(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    hp: &AdamWHparams,
) -> Result<Vec<AdamWStats>> {
    let Some(first) = params.first() else {
        return Ok(Vec::new());
    };
    let dev = adamw_device(first, params, grads, exp_avg, exp_avg_sq)?;
    let stats = dev.alloc_zeros::<f64>(3 * params.len())?;
    let stream = dev.cuda_stream();
    let (base, sync) = stats.device_ptr(&stream);
    let hp32 = AdamWParams::new(hp);
    for i in 0..params.len() {
        let g = grads[i].contiguous()?;
        let op = FusedStep {
            grad: &g,
            hp: hp32,
            stats: base + (3 * i * std::mem::size_of::<f64>()) as u64,
        };
        params[i].inplace_op3(exp_avg[i], exp_avg_sq[i], &op)?;
    }
    drop(sync);
    let host = dev.clone_dtoh(&stats)?;
    Ok(host
        .chunks_exact(3)
        .map(|s| AdamWStats {
            update_sq: s[0],
            param_sq: s[1],
            max_abs_update: s[2],
        })
        .collect())
}

/// [`crate::adamw_step_finite`] on CUDA: one read-only kernel per tensor computing the step
/// as [`adamw_step`] would and raising one shared device flag if any new θ, m or v is not
/// finite; the flag is copied to the host once at the end. f32 (master weights).
pub(crate) fn adamw_step_finite(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    hp: &AdamWHparams,
) -> Result<bool> {
    let Some(first) = params.first() else {
        return Ok(true);
    };
    let dev = adamw_device(first, params, grads, exp_avg, exp_avg_sq)?;
    let flag = dev.alloc_zeros::<i32>(1)?;
    let st = dev.cuda_stream();
    let hp32 = AdamWParams::new(hp);
    {
        let (fp, _f) = flag.device_ptr(&st);
        let mut d = Driver::new(&dev);
        for i in 0..params.len() {
            let g = grads[i].contiguous()?;
            cuda_in!(params[i], ADAMW, "param", g1, ts, tl);
            cuda_in!(g, ADAMW, "grad", g2, gs, gl);
            cuda_in!(exp_avg[i], ADAMW, "exp_avg", g3, ms, ml);
            cuda_in!(exp_avg_sq[i], ADAMW, "exp_avg_sq", g4, vs, vl);
            let (tp, _a) = addr(ts, tl, &st, ADAMW, "param")?;
            let (gp, _b) = addr(gs, gl, &st, ADAMW, "grad")?;
            let (mp, _c) = addr(ms, ml, &st, ADAMW, "exp_avg")?;
            let (vp, _d) = addr(vs, vl, &st, ADAMW, "exp_avg_sq")?;
            let n = tl.shape().elem_count();
            launch::adamw_check(&mut d, Elem::F32, [tp, gp, mp, vp], n, hp32, fp).map_err(lerr)?;
        }
    }
    let host = dev.clone_dtoh(&flag)?;
    Ok(host[0] == 0)
}
