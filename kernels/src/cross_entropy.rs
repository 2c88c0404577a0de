//! Fused mean cross-entropy of logits (N, V) against class targets (N).
//!
//! The forward pass keeps only the per-row log-sum-exp (N floats) for backward, never an
//! N×V probability tensor; backward recomputes each row's softmax from the logits (which
//! autograd keeps anyway) and writes (softmax − onehot)/N · upstream.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{self, Real, check_cpu, check_float, rows_per_task, simd_fn, unsupported};
use crate::error::{Error, shape_err};

const OP: &str = "cross_entropy";

struct CrossEntropy {
    /// Per-row log-sum-exp from the forward pass, (N), in the logits' dtype.
    lse: Mutex<Option<CpuStorage>>,
    /// The same from a CUDA forward pass, (N) f32 on the device.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    saved: crate::cuda::Saved,
}

/// log Σ exp of one row: a max pass, then exps into a small buffer (a plain map loop,
/// which vectorises) summed with independent lanes.
#[inline(always)]
fn logsumexp<T: Real>(row: &[T]) -> T {
    let m = cpu::max(row);
    let mut buf = [T::zero(); 256];
    let mut s = T::zero();
    for chunk in row.chunks(256) {
        let b = &mut buf[..chunk.len()];
        for (e, &x) in b.iter_mut().zip(chunk) {
            *e = (x - m).exp_fast();
        }
        s += cpu::sum(b);
    }
    m + s.ln()
}

pub(crate) fn check_targets(t: &[u32], v: usize) -> Result<()> {
    match t.iter().position(|&c| c as usize >= v) {
        Some(row) => Err(Error::TargetOutOfRange {
            op: OP,
            row,
            target: t[row],
            vocab: v,
        }
        .into()),
        None => Ok(()),
    }
}

/// (mean loss, per-row lse).
pub(crate) fn forward<T: Real>(x: &[T], t: &[u32], v: usize) -> (T, Vec<T>) {
    let n = t.len();
    let mut lse = vec![T::zero(); n];
    let rows = rows_per_task(v);
    let partials: Vec<f64> = lse
        .par_chunks_mut(rows)
        .enumerate()
        .map(|(c, lc)| forward_rows(x, &t[c * rows..c * rows + lc.len()], v, c * rows, lc))
        .collect();
    let total: f64 = partials.iter().sum();
    (T::from_f64(total / n as f64), lse)
}

/// The lse of rows r0.. (as many as `lse` holds) and the sum of their losses.
#[inline(always)]
fn forward_rows_body<T: Real>(x: &[T], t: &[u32], v: usize, r0: usize, lse: &mut [T]) -> f64 {
    let mut loss = 0f64;
    for (i, li) in lse.iter_mut().enumerate() {
        let row = &x[(r0 + i) * v..(r0 + i + 1) * v];
        *li = logsumexp(row);
        loss += (*li - row[t[i] as usize]).to_f64();
    }
    loss
}
simd_fn!(fn forward_rows<T: Real>(x: &[T], t: &[u32], v: usize, r0: usize, lse: &mut [T]) -> f64 => forward_rows_body);

/// dlogits = (softmax − onehot) · g/N, one row at a time.
fn backward<T: Real>(x: &[T], t: &[u32], lse: &[T], v: usize, g: f64) -> Vec<T> {
    let n = t.len();
    let coef = T::from_f64(g / n as f64);
    let mut dx = vec![T::zero(); x.len()];
    let rows = rows_per_task(v);
    dx.par_chunks_mut(rows * v)
        .enumerate()
        .for_each(|(c, dc)| backward_rows(x, t, lse, v, c * rows, coef, dc));
    dx
}

/// [`backward`] in place: the logits `x` become dlogits, with no second N×V buffer.
pub(crate) fn backward_in_place<T: Real>(x: &mut [T], t: &[u32], lse: &[T], v: usize, g: f64) {
    let n = t.len();
    let coef = T::from_f64(g / n as f64);
    let rows = rows_per_task(v);
    x.par_chunks_mut(rows * v)
        .enumerate()
        .for_each(|(c, xc)| backward_rows_in_place(&t[c * rows..], &lse[c * rows..], v, coef, xc));
}

/// Rows of logits → their dlogits; `t` and `lse` start at the chunk's first row.
#[inline(always)]
fn backward_rows_in_place_body<T: Real>(t: &[u32], lse: &[T], v: usize, coef: T, x: &mut [T]) {
    for (i, row) in x.chunks_exact_mut(v).enumerate() {
        let l = lse[i];
        for xi in row.iter_mut() {
            *xi = (*xi - l).exp_fast() * coef;
        }
        row[t[i] as usize] -= coef;
    }
}
simd_fn!(fn backward_rows_in_place<T: Real>(
    t: &[u32], lse: &[T], v: usize, coef: T, x: &mut [T],
) => backward_rows_in_place_body);

/// dlogits of rows r0.. (as many as `dx` holds).
#[inline(always)]
fn backward_rows_body<T: Real>(
    x: &[T],
    t: &[u32],
    lse: &[T],
    v: usize,
    r0: usize,
    coef: T,
    dx: &mut [T],
) {
    for (i, dr) in dx.chunks_exact_mut(v).enumerate() {
        let r = r0 + i;
        let (row, l) = (&x[r * v..(r + 1) * v], lse[r]);
        for (d, &xi) in dr.iter_mut().zip(row) {
            *d = (xi - l).exp_fast() * coef;
        }
        dr[t[r] as usize] -= coef;
    }
}
simd_fn!(fn backward_rows<T: Real>(
    x: &[T], t: &[u32], lse: &[T], v: usize, r0: usize, coef: T, dx: &mut [T],
) => backward_rows_body);

impl CrossEntropy {
    fn fwd<T: Real>(&self, s1: &CpuStorage, l1: &Layout, t: &[u32]) -> Result<CpuStorage> {
        let x = cpu::slice::<T>(s1, l1, OP, "logits")?;
        let v = l1.dims()[1];
        let (loss, lse) = forward(x, t, v);
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) = Some(T::to_cpu_storage_owned(lse));
        Ok(T::to_cpu_storage_owned(vec![loss]))
    }

    fn bwd_typed<T: Real>(&self, x: &Tensor, t: &Tensor, g: f64) -> Result<Tensor> {
        let stash = self.lse.lock().unwrap_or_else(|e| e.into_inner());
        let lse = stash.as_ref().ok_or(Error::MissingState {
            op: OP,
            what: "log-sum-exp",
        })?;
        let lse = T::cpu_storage_as_slice(lse)?;
        let (xs, xl) = x.storage_and_layout();
        let (ts, tl) = t.storage_and_layout();
        let xv = cpu::storage_slice::<T>(&xs, xl, OP, "logits")?;
        let tv = cpu::storage_slice::<u32>(&ts, tl, OP, "targets")?;
        let dx = backward(xv, tv, lse, x.dims()[1], g);
        cpu::tensor_from(dx, x.dims())
    }
}

impl CustomOp2 for CrossEntropy {
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
        let t = cpu::slice::<u32>(s2, l2, OP, "targets")?;
        check_targets(t, l1.dims()[1])?;
        let out = match s1.dtype() {
            DType::F32 => self.fwd::<f32>(s1, l1, t)?,
            DType::F64 => self.fwd::<f64>(s1, l1, t)?,
            dt => return Err(unsupported(OP, dt)),
        };
        Ok((out, Shape::from(())))
    }

    /// On CUDA the loss is f32 for f32 and bf16 logits alike (accumulated in f32, the mean
    /// in f64); a target out of range gives a NaN loss rather than an error.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (loss, lse) = crate::cuda_launch::cross_entropy_fwd(s1, l1, s2, l2)?;
        self.saved.put(lse);
        Ok((loss, Shape::from(())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let lse = self.saved.get(OP, "log-sum-exp")?;
            let dx = crate::cuda_launch::cross_entropy_bwd(x, t, &lse, dy)?;
            return Ok((Some(dx), None));
        }
        let g = dy.to_dtype(DType::F64)?.reshape(())?.to_scalar::<f64>()?;
        let dx = match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(x, t, g)?,
            DType::F64 => self.bwd_typed::<f64>(x, t, g)?,
            dt => return Err(unsupported(OP, dt)),
        };
        Ok((Some(dx), None))
    }
}

fn check(logits: &Tensor, targets: &Tensor) -> Result<()> {
    check_cpu(logits, OP, "logits")?;
    check_cpu(targets, OP, "targets")?;
    check_float(logits, OP)?;
    let (n, v) = logits.dims2()?;
    if targets.dtype() != DType::U32 {
        return Err(Error::DTypeMismatch {
            op: OP,
            what: "targets",
            got: targets.dtype(),
            expected: DType::U32,
        }
        .into());
    }
    if targets.dims() != [n] {
        return Err(shape_err(
            OP,
            format!(
                "targets have shape {:?}, logits have {n} rows",
                targets.dims()
            ),
        ));
    }
    if n == 0 || v == 0 {
        return Err(shape_err(OP, format!("empty logits ({n}, {v})")));
    }
    Ok(())
}

/// Mean cross-entropy (a scalar) of `logits` (N, V) against u32 `targets` (N).
/// Differentiable in `logits`; saves only N log-sum-exps for backward. f32 or f64 on the
/// CPU; f32 or bf16 on CUDA, where the loss is always f32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    check(logits, targets)?;
    let op = CrossEntropy {
        lse: Mutex::new(None),
        saved: Default::default(),
    };
    logits.contiguous()?.apply_op2(&targets.contiguous()?, op)
}

/// [`cross_entropy`] from plain candle ops (the model's original formulation).
pub fn cross_entropy_slow(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let m = logits.max_keepdim(1)?.detach(); // (N, 1)
    let z = logits.broadcast_sub(&m)?; // (N, V)
    let lse = z.exp()?.sum_keepdim(1)?.log()?; // (N, 1)
    let picked = z.gather(&targets.unsqueeze(1)?, 1)?; // (N, 1)
    (lse - picked)?.mean_all()
}
