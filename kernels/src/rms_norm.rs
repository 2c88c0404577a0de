//! Fused RMSNorm over the last dim: y = x / √(mean(x²) + ε) · w, with backward for x and w.
//!
//! The candle op saves nothing for backward on the CPU: the per-row 1/rms is one pass over a
//! row, recomputed there. The slice forms for hand-written steps (`slices`) can also write it
//! in the forward pass and read it back in the backward, as the CUDA kernels do.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, D, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{self, Real, check_cpu, check_float, rows_per_task, simd_fn, unsupported};
use crate::error::shape_err;

const OP: &str = "rms_norm";

struct RmsNorm {
    eps: f64,
    /// Per-row 1/rms from a CUDA forward pass (the CPU recomputes it).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    saved: crate::cuda::Saved,
}

/// 1/√(mean(x²) + ε) of one row.
#[inline(always)]
fn inv_rms<T: Real>(x: &[T], eps: f64) -> T {
    let ms = cpu::dot(x, x) / T::from_f64(x.len() as f64);
    T::one() / (ms + T::from_f64(eps)).sqrt()
}

fn forward<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    forward_into(x, w, eps, &mut y);
    y
}

/// [`forward`] into `y` (as long as `x`), every element overwritten.
pub(crate) fn forward_into<T: Real>(x: &[T], w: &[T], eps: f64, y: &mut [T]) {
    let h = w.len();
    let chunk = rows_per_task(h) * h;
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(yc, xc)| forward_rows(w, yc, xc, &mut [], eps));
}

/// [`forward_into`], also writing each row's 1/rms into `rstd` (one per row).
pub(crate) fn forward_into_saving<T: Real>(
    x: &[T],
    w: &[T],
    eps: f64,
    y: &mut [T],
    rstd: &mut [T],
) {
    let h = w.len();
    let rows = rows_per_task(h);
    y.par_chunks_mut(rows * h)
        .zip(x.par_chunks(rows * h).zip(rstd.par_chunks_mut(rows)))
        .for_each(|(yc, (xc, rc))| forward_rows(w, yc, xc, rc, eps));
}

/// Rows of `x` into `y`; each row's 1/rms also into `rstd` unless it is empty.
#[inline(always)]
fn forward_rows_body<T: Real>(w: &[T], y: &mut [T], x: &[T], rstd: &mut [T], eps: f64) {
    let h = w.len();
    for (i, (yr, xr)) in y.chunks_exact_mut(h).zip(x.chunks_exact(h)).enumerate() {
        let r = inv_rms(xr, eps);
        if let Some(slot) = rstd.get_mut(i) {
            *slot = r;
        }
        for ((yi, &xi), &wi) in yr.iter_mut().zip(xr).zip(w) {
            *yi = xi * r * wi;
        }
    }
}
simd_fn!(fn forward_rows<T: Real>(w: &[T], y: &mut [T], x: &[T], rstd: &mut [T], eps: f64) => forward_rows_body);

/// dx = r·(g − x·r²·⟨g, x⟩/H) with g = dy ⊙ w; dw = Σ_rows dy ⊙ x · r.
fn backward<T: Real>(x: &[T], w: &[T], dy: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let mut dx = vec![T::zero(); x.len()];
    let dw = backward_into(x, w, dy, eps, &mut dx);
    (dx, dw)
}

/// [`backward`] with dx written into `dx` (every element overwritten); returns dw.
pub(crate) fn backward_into<T: Real>(x: &[T], w: &[T], dy: &[T], eps: f64, dx: &mut [T]) -> Vec<T> {
    backward_rows_into(x, w, dy, None, eps, dx)
}

/// [`backward_into`] with each row's 1/rms read from `rstd` (as the forward pass saved it)
/// instead of recomputed: the same values, so the same results.
pub(crate) fn backward_into_saved<T: Real>(
    x: &[T],
    w: &[T],
    dy: &[T],
    rstd: &[T],
    dx: &mut [T],
) -> Vec<T> {
    backward_rows_into(x, w, dy, Some(rstd), 0.0, dx)
}

fn backward_rows_into<T: Real>(
    x: &[T],
    w: &[T],
    dy: &[T],
    rstd: Option<&[T]>,
    eps: f64,
    dx: &mut [T],
) -> Vec<T> {
    let h = w.len();
    let rows = rows_per_task(h);
    let chunk = rows * h;
    // One dw partial per task, summed below in task order: deterministic for any pool size.
    let partials: Vec<Vec<T>> = dx
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(dy.par_chunks(chunk)))
        .enumerate()
        .map(|(task, (dxc, (xc, dyc)))| {
            let rs = rstd.map_or(&[][..], |r| {
                &r[task * rows..(task * rows + rows).min(r.len())]
            });
            backward_rows(w, dxc, xc, dyc, rs, eps)
        })
        .collect();
    let mut dw = vec![T::zero(); h];
    for p in &partials {
        for (a, &b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    dw
}

/// dx for a block of rows, returning the block's dw partial; each row's 1/rms from `rstd`
/// unless it is empty.
#[inline(always)]
fn backward_rows_body<T: Real>(
    w: &[T],
    dxc: &mut [T],
    xc: &[T],
    dyc: &[T],
    rstd: &[T],
    eps: f64,
) -> Vec<T> {
    let h = w.len();
    let hf = T::from_f64(h as f64);
    let mut dw = vec![T::zero(); h];
    let mut g = vec![T::zero(); h];
    for (i, ((dxr, xr), dyr)) in dxc
        .chunks_exact_mut(h)
        .zip(xc.chunks_exact(h))
        .zip(dyc.chunks_exact(h))
        .enumerate()
    {
        let r = match rstd.get(i) {
            Some(&r) => r,
            None => inv_rms(xr, eps),
        };
        for ((gi, &d), &wi) in g.iter_mut().zip(dyr).zip(w) {
            *gi = d * wi;
        }
        let c = r * r * cpu::dot(&g, xr) / hf;
        for ((dxi, &gi), &xi) in dxr.iter_mut().zip(&g).zip(xr) {
            *dxi = r * (gi - xi * c);
        }
        for ((dwi, &d), &xi) in dw.iter_mut().zip(dyr).zip(xr) {
            *dwi += d * xi * r;
        }
    }
    dw
}

simd_fn!(fn backward_rows<T: Real>(w: &[T], dx: &mut [T], x: &[T], dy: &[T], rstd: &[T], eps: f64) -> Vec<T> => backward_rows_body);

impl RmsNorm {
    fn fwd<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let x = cpu::slice::<T>(s1, l1, OP, "x")?;
        let w = cpu::slice::<T>(s2, l2, OP, "w")?;
        Ok(T::to_cpu_storage_owned(forward(x, w, self.eps)))
    }

    fn bwd_typed<T: Real>(&self, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (ds, dl) = dy.storage_and_layout();
        let xv = cpu::storage_slice::<T>(&xs, xl, OP, "x")?;
        let wv = cpu::storage_slice::<T>(&ws, wl, OP, "w")?;
        let dv = cpu::storage_slice::<T>(&ds, dl, OP, "grad")?;
        let (dx, dw) = backward(xv, wv, dv, self.eps);
        Ok((
            cpu::tensor_from(dx, x.dims())?,
            cpu::tensor_from(dw, w.dims())?,
        ))
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match s1.dtype() {
            DType::F32 => self.fwd::<f32>(s1, l1, s2, l2)?,
            DType::F64 => self.fwd::<f64>(s1, l1, s2, l2)?,
            dt => return Err(unsupported(OP, dt)),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (y, rstd) = crate::cuda_launch::rms_norm_fwd(s1, l1, s2, l2, self.eps)?;
        self.saved.put(rstd);
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let rstd = self.saved.get(OP, "1/rms")?;
            let (dx, dw) = crate::cuda_launch::rms_norm_bwd(x, w, &dy, &rstd)?;
            return Ok((Some(dx), Some(dw)));
        }
        let (dx, dw) = match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(x, w, &dy)?,
            DType::F64 => self.bwd_typed::<f64>(x, w, &dy)?,
            dt => return Err(unsupported(OP, dt)),
        };
        Ok((Some(dx), Some(dw)))
    }
}

fn check(x: &Tensor, w: &Tensor) -> Result<()> {
    check_cpu(x, OP, "x")?;
    check_cpu(w, OP, "w")?;
    check_float(x, OP)?;
    let h = x.dim(D::Minus1)?;
    if w.dims() != [h] {
        return Err(shape_err(
            OP,
            format!("w has shape {:?}, x's last dim is {h}", w.dims()),
        ));
    }
    cpu::check_same_dtype(w, x, OP, "w")
}

/// RMSNorm of `x` (..., H) with gain `w` (H): `x / √(mean(x²) + eps) · w` over the last dim.
/// Differentiable in `x` and `w`. f32 or f64 on the CPU, f32 or bf16 on CUDA.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    check(x, w)?;
    let op = RmsNorm {
        eps,
        saved: Default::default(),
    };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

/// [`rms_norm`] from plain candle ops (the model's original formulation).
pub fn rms_norm_slow(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let inv_rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?; // (..., 1)
    x.broadcast_mul(&inv_rms)?.broadcast_mul(w)
}
