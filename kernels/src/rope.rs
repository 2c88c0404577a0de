//! Fused rotary position embedding, half-split convention (HF Llama/MiniCPM):
//! y = x·cos + rotate_half(x)·sin with rotate_half(x) = [−x₂, x₁], for x (B, h, T, D) and
//! cos/sin tables (T, D). Backward for x only: the tables are constants.
//!
//! The transpose of rotate_half is z ↦ [z₂, −z₁], so dx = dy·cos + [(dy·sin)₂, −(dy·sin)₁].

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, D, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{self, Real, check_cpu, check_float, rows_per_task, simd_fn, unsupported};
use crate::error::shape_err;

const OP: &str = "rope";

struct Rope;

/// Applies y = x·cos + sign·rot(x)·sin per head, where `inverse` selects the transpose
/// rotation (backward) instead of rotate_half (forward). Slices are (B·h, T, D) and (T, D).
fn rotate<T: Real>(x: &[T], cos: &[T], sin: &[T], t: usize, d: usize, inverse: bool) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    rotate_into(x, cos, sin, t, d, inverse, &mut y);
    y
}

/// [`rotate`] into `y` (as long as `x`), every element overwritten.
pub(crate) fn rotate_into<T: Real>(
    x: &[T],
    cos: &[T],
    sin: &[T],
    t: usize,
    d: usize,
    inverse: bool,
    y: &mut [T],
) {
    let heads = (rows_per_task(t * d)).max(1);
    y.par_chunks_mut(heads * t * d)
        .zip(x.par_chunks(heads * t * d))
        .for_each(|(yc, xc)| rotate_heads(yc, xc, cos, sin, t, d, inverse));
}

#[inline(always)]
fn rotate_heads_body<T: Real>(
    yc: &mut [T],
    xc: &[T],
    cos: &[T],
    sin: &[T],
    t: usize,
    d: usize,
    inverse: bool,
) {
    let half = d / 2;
    for (yh, xh) in yc.chunks_exact_mut(t * d).zip(xc.chunks_exact(t * d)) {
        for (p, (yr, xr)) in yh.chunks_exact_mut(d).zip(xh.chunks_exact(d)).enumerate() {
            let (c, s) = (&cos[p * d..(p + 1) * d], &sin[p * d..(p + 1) * d]);
            let (x1, x2) = xr.split_at(half);
            let (y1, y2) = yr.split_at_mut(half);
            let (c1, c2) = c.split_at(half);
            let (s1, s2) = s.split_at(half);
            if inverse {
                // dx₁ = dy₁·c₁ + dy₂·s₂ ; dx₂ = dy₂·c₂ − dy₁·s₁
                for j in 0..half {
                    y1[j] = x1[j] * c1[j] + x2[j] * s2[j];
                    y2[j] = x2[j] * c2[j] - x1[j] * s1[j];
                }
            } else {
                // y₁ = x₁·c₁ − x₂·s₁ ; y₂ = x₂·c₂ + x₁·s₂
                for j in 0..half {
                    y1[j] = x1[j] * c1[j] - x2[j] * s1[j];
                    y2[j] = x2[j] * c2[j] + x1[j] * s2[j];
                }
            }
        }
    }
}
simd_fn!(fn rotate_heads<T: Real>(
    yc: &mut [T], xc: &[T], cos: &[T], sin: &[T], t: usize, d: usize, inverse: bool,
) => rotate_heads_body);

fn run<T: Real>(
    x: (&CpuStorage, &Layout),
    cos: (&CpuStorage, &Layout),
    sin: (&CpuStorage, &Layout),
    inverse: bool,
) -> Result<Vec<T>> {
    let dims = x.1.dims();
    let (t, d) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let xv = cpu::slice::<T>(x.0, x.1, OP, "x")?;
    let cv = cpu::slice::<T>(cos.0, cos.1, OP, "cos")?;
    let sv = cpu::slice::<T>(sin.0, sin.1, OP, "sin")?;
    Ok(rotate(xv, cv, sv, t, d, inverse))
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match s1.dtype() {
            DType::F32 => CpuStorage::F32(run::<f32>((s1, l1), (s2, l2), (s3, l3), false)?),
            DType::F64 => CpuStorage::F64(run::<f64>((s1, l1), (s2, l2), (s3, l3), false)?),
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
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let y = crate::cuda_launch::rope_apply((s1, l1), (s2, l2), (s3, l3), false)?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let dx = crate::cuda_launch::rope_bwd(&dy, &cos.contiguous()?, &sin.contiguous()?)?;
            return Ok((Some(dx), None, None));
        }
        let (ds, dl) = dy.storage_and_layout();
        let (cs, cl) = cos.storage_and_layout();
        let (ss, sl) = sin.storage_and_layout();
        let d = cpu::cpu(&ds, OP, "grad")?;
        let c = cpu::cpu(&cs, OP, "cos")?;
        let s = cpu::cpu(&ss, OP, "sin")?;
        let dx = match x.dtype() {
            DType::F32 => cpu::tensor_from(run::<f32>((d, dl), (c, cl), (s, sl), true)?, x.dims())?,
            DType::F64 => cpu::tensor_from(run::<f64>((d, dl), (c, cl), (s, sl), true)?, x.dims())?,
            dt => return Err(unsupported(OP, dt)),
        };
        Ok((Some(dx), None, None))
    }
}

fn check(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<()> {
    for (t, what) in [(x, "x"), (cos, "cos"), (sin, "sin")] {
        check_cpu(t, OP, what)?;
    }
    check_float(x, OP)?;
    cpu::check_same_dtype(cos, x, OP, "cos")?;
    cpu::check_same_dtype(sin, x, OP, "sin")?;
    let (_, _, t, d) = x.dims4()?;
    if d % 2 != 0 {
        return Err(shape_err(OP, format!("head dim {d} is odd")));
    }
    for (tab, what) in [(cos, "cos"), (sin, "sin")] {
        if tab.dims() != [t, d] {
            return Err(shape_err(
                OP,
                format!("{what} has shape {:?}, x wants ({t}, {d})", tab.dims()),
            ));
        }
    }
    Ok(())
}

/// Half-split RoPE of `x` (B, h, T, D) with tables `cos`, `sin` (T, D) whose two halves
/// repeat the same angles. Differentiable in `x`. f32 or f64 on the CPU, f32 or bf16 on CUDA.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    check(x, cos, sin)?;
    x.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope)
}

/// [`rope`] from plain candle ops (the model's original formulation).
pub fn rope_slow(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}
