//! Fused SwiGLU activation: y = silu(gate) ⊙ up = gate·σ(gate)·up, with backward for both.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{self, GRAIN, Real, check_cpu, check_float, rows_per_task, simd_fn, unsupported};
use crate::error::shape_err;

const OP: &str = "swiglu";

struct SwiGlu;

#[inline(always)]
fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp_fast())
}

fn forward<T: Real>(g: &[T], u: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); g.len()];
    forward_into(g, u, &mut y);
    y
}

/// [`forward`] into `y`, every element overwritten.
pub(crate) fn forward_into<T: Real>(g: &[T], u: &[T], y: &mut [T]) {
    y.par_chunks_mut(GRAIN)
        .zip(g.par_chunks(GRAIN).zip(u.par_chunks(GRAIN)))
        .for_each(|(yc, (gc, uc))| forward_chunk(yc, gc, uc));
}

#[inline(always)]
fn forward_chunk_body<T: Real>(y: &mut [T], g: &[T], u: &[T]) {
    for ((yi, &gi), &ui) in y.iter_mut().zip(g).zip(u) {
        *yi = gi * sigmoid(gi) * ui;
    }
}
simd_fn!(fn forward_chunk<T: Real>(y: &mut [T], g: &[T], u: &[T]) => forward_chunk_body);

/// dgate = dy·up·σ(g)·(1 + g·(1 − σ(g))); dup = dy·silu(g).
fn backward<T: Real>(g: &[T], u: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let mut dg = vec![T::zero(); g.len()];
    let mut du = vec![T::zero(); g.len()];
    backward_into(g, u, dy, &mut dg, &mut du);
    (dg, du)
}

/// [`backward`] into `dg` and `du`, every element overwritten.
pub(crate) fn backward_into<T: Real>(g: &[T], u: &[T], dy: &[T], dg: &mut [T], du: &mut [T]) {
    dg.par_chunks_mut(GRAIN)
        .zip(du.par_chunks_mut(GRAIN))
        .zip(
            g.par_chunks(GRAIN)
                .zip(u.par_chunks(GRAIN))
                .zip(dy.par_chunks(GRAIN)),
        )
        .for_each(|((dgc, duc), ((gc, uc), dyc))| backward_chunk(dgc, duc, gc, uc, dyc));
}

#[inline(always)]
fn backward_chunk_body<T: Real>(dg: &mut [T], du: &mut [T], g: &[T], u: &[T], dy: &[T]) {
    for ((dgi, dui), ((&gi, &ui), &d)) in dg
        .iter_mut()
        .zip(du.iter_mut())
        .zip(g.iter().zip(u).zip(dy))
    {
        let s = sigmoid(gi);
        *dui = d * gi * s;
        *dgi = d * ui * s * (T::one() + gi * (T::one() - s));
    }
}
simd_fn!(fn backward_chunk<T: Real>(dg: &mut [T], du: &mut [T], g: &[T], u: &[T], dy: &[T]) => backward_chunk_body);

/// [`forward_into`] on rows holding [gate | up] side by side: `gu` (N, 2F) → `y` (N, F).
pub(crate) fn forward_paired<T: Real>(gu: &[T], f: usize, y: &mut [T]) {
    let rows = rows_per_task(2 * f);
    y.par_chunks_mut(rows * f)
        .zip(gu.par_chunks(rows * 2 * f))
        .for_each(|(yc, gc)| forward_paired_rows(yc, gc, f));
}

#[inline(always)]
fn forward_paired_rows_body<T: Real>(y: &mut [T], gu: &[T], f: usize) {
    for (yr, gr) in y.chunks_exact_mut(f).zip(gu.chunks_exact(2 * f)) {
        let (g, u) = gr.split_at(f);
        forward_chunk_body(yr, g, u);
    }
}
simd_fn!(fn forward_paired_rows<T: Real>(y: &mut [T], gu: &[T], f: usize) => forward_paired_rows_body);

/// [`backward_into`] on rows holding [gate | up]: `gu` (N, 2F) and `dy` (N, F) → `dgu`
/// (N, 2F), rows [dgate | dup].
pub(crate) fn backward_paired<T: Real>(gu: &[T], dy: &[T], f: usize, dgu: &mut [T]) {
    let rows = rows_per_task(2 * f);
    dgu.par_chunks_mut(rows * 2 * f)
        .zip(gu.par_chunks(rows * 2 * f).zip(dy.par_chunks(rows * f)))
        .for_each(|(dc, (gc, yc))| backward_paired_rows(dc, gc, yc, f));
}

#[inline(always)]
fn backward_paired_rows_body<T: Real>(dgu: &mut [T], gu: &[T], dy: &[T], f: usize) {
    for ((dr, gr), yr) in dgu
        .chunks_exact_mut(2 * f)
        .zip(gu.chunks_exact(2 * f))
        .zip(dy.chunks_exact(f))
    {
        let (g, u) = gr.split_at(f);
        let (dg, du) = dr.split_at_mut(f);
        backward_chunk_body(dg, du, g, u, yr);
    }
}
simd_fn!(fn backward_paired_rows<T: Real>(dgu: &mut [T], gu: &[T], dy: &[T], f: usize) => backward_paired_rows_body);

impl SwiGlu {
    fn fwd<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let g = cpu::slice::<T>(s1, l1, OP, "gate")?;
        let u = cpu::slice::<T>(s2, l2, OP, "up")?;
        Ok(T::to_cpu_storage_owned(forward(g, u)))
    }

    fn bwd_typed<T: Real>(&self, g: &Tensor, u: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        let (gs, gl) = g.storage_and_layout();
        let (us, ul) = u.storage_and_layout();
        let (ds, dl) = dy.storage_and_layout();
        let gv = cpu::storage_slice::<T>(&gs, gl, OP, "gate")?;
        let uv = cpu::storage_slice::<T>(&us, ul, OP, "up")?;
        let dv = cpu::storage_slice::<T>(&ds, dl, OP, "grad")?;
        let (dg, du) = backward(gv, uv, dv);
        Ok((
            cpu::tensor_from(dg, g.dims())?,
            cpu::tensor_from(du, u.dims())?,
        ))
    }
}

impl CustomOp2 for SwiGlu {
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
        let y = crate::cuda_launch::swiglu_fwd(s1, l1, s2, l2)?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        #[cfg(feature = "cuda")]
        if g.device().is_cuda() {
            let (dg, du) = crate::cuda_launch::swiglu_bwd(g, u, &dy)?;
            return Ok((Some(dg), Some(du)));
        }
        let (dg, du) = match g.dtype() {
            DType::F32 => self.bwd_typed::<f32>(g, u, &dy)?,
            DType::F64 => self.bwd_typed::<f64>(g, u, &dy)?,
            dt => return Err(unsupported(OP, dt)),
        };
        Ok((Some(dg), Some(du)))
    }
}

/// `silu(gate) ⊙ up` elementwise; `gate` and `up` of one shape. Differentiable in both.
/// f32 or f64 on the CPU, f32 or bf16 on CUDA.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    check_cpu(gate, OP, "gate")?;
    check_cpu(up, OP, "up")?;
    check_float(gate, OP)?;
    cpu::check_same_dtype(up, gate, OP, "up")?;
    if gate.dims() != up.dims() {
        return Err(shape_err(
            OP,
            format!(
                "gate {:?} and up {:?} differ in shape",
                gate.dims(),
                up.dims()
            ),
        ));
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

/// [`swiglu`] from plain candle ops.
pub fn swiglu_slow(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}
