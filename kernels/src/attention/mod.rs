//! Fused causal grouped-query attention, flash style: softmax(q·kᵀ·scale + causal mask)·v.
//!
//! q is (B, H, T, D); k and v are (B, Hkv, T, D) with H a multiple of Hkv, and query head h
//! reads KV head h / (H/Hkv) (HF `repeat_kv`).
//!
//! This file is the candle op: its checks, the CPU or CUDA pass it runs, the log-sum-exp it
//! saves for backward, and its plain-op twin with the helpers the model's reference ops share
//! ([`repeat_kv`], [`causal_mask`]). The CPU passes themselves, in tiles, are in `flash.rs`.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, D, DType, Device, Layout, Result, Shape, Tensor};

use crate::cpu::{self, Real, check_cpu, check_float, unsupported};
use crate::error::{Error, shape_err};
use flash::{backward, forward};

mod flash;
#[cfg(test)]
mod tests;

pub(crate) use flash::{BwdIn, Dims, backward_into, forward_into};

const OP: &str = "attention";

struct Attention {
    scale: f64,
    /// Per-row log-sum-exp of the scaled, masked scores, (B, H, T), from the forward pass.
    lse: Mutex<Option<CpuStorage>>,
    /// The same from a CUDA forward pass, (B, H, T) f32 on the device.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    saved: crate::cuda::Saved,
}

impl Attention {
    fn fwd<T: Real>(
        &self,
        q: (&CpuStorage, &Layout),
        k: (&CpuStorage, &Layout),
        v: (&CpuStorage, &Layout),
    ) -> Result<CpuStorage> {
        let dm = Dims::of(q.1.dims(), k.1.dims());
        let qv = cpu::slice::<T>(q.0, q.1, OP, "q")?;
        let kv = cpu::slice::<T>(k.0, k.1, OP, "k")?;
        let vv = cpu::slice::<T>(v.0, v.1, OP, "v")?;
        let (out, lse) = forward(qv, kv, vv, dm, self.scale);
        *self.lse.lock().unwrap_or_else(|e| e.into_inner()) = Some(T::to_cpu_storage_owned(lse));
        Ok(T::to_cpu_storage_owned(out))
    }

    fn bwd_typed<T: Real>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        dout: &Tensor,
    ) -> Result<[Tensor; 3]> {
        let stash = self.lse.lock().unwrap_or_else(|e| e.into_inner());
        let lse = stash.as_ref().ok_or(Error::MissingState {
            op: OP,
            what: "log-sum-exp",
        })?;
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (os, ol) = o.storage_and_layout();
        let (ds, dl) = dout.storage_and_layout();
        let x = BwdIn {
            q: cpu::storage_slice::<T>(&qs, ql, OP, "q")?,
            k: cpu::storage_slice::<T>(&ks, kl, OP, "k")?,
            v: cpu::storage_slice::<T>(&vs, vl, OP, "v")?,
            o: cpu::storage_slice::<T>(&os, ol, OP, "out")?,
            dout: cpu::storage_slice::<T>(&ds, dl, OP, "grad")?,
            lse: T::cpu_storage_as_slice(lse)?,
        };
        let (dq, dk, dv) = backward(&x, Dims::of(q.dims(), k.dims()), self.scale);
        Ok([
            cpu::tensor_from(dq, q.dims())?,
            cpu::tensor_from(dk, k.dims())?,
            cpu::tensor_from(dv, v.dims())?,
        ])
    }
}

impl CustomOp3 for Attention {
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
            DType::F32 => self.fwd::<f32>((s1, l1), (s2, l2), (s3, l3))?,
            DType::F64 => self.fwd::<f64>((s1, l1), (s2, l2), (s3, l3))?,
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
        let (out, lse) =
            crate::cuda_launch::attention_fwd((s1, l1), (s2, l2), (s3, l3), self.scale)?;
        self.saved.put(lse);
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dout = dout.contiguous()?;
        #[cfg(feature = "cuda")]
        if q.device().is_cuda() {
            let lse = self.saved.get(OP, "log-sum-exp")?;
            let [dq, dk, dv] =
                crate::cuda_launch::attention_bwd(q, k, v, res, &dout, &lse, self.scale)?;
            return Ok((Some(dq), Some(dk), Some(dv)));
        }
        let [dq, dk, dv] = match q.dtype() {
            DType::F32 => self.bwd_typed::<f32>(q, k, v, res, &dout)?,
            DType::F64 => self.bwd_typed::<f64>(q, k, v, res, &dout)?,
            dt => return Err(unsupported(OP, dt)),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

fn check(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
    for (t, what) in [(q, "q"), (k, "k"), (v, "v")] {
        check_cpu(t, OP, what)?;
    }
    check_float(q, OP)?;
    cpu::check_same_dtype(k, q, OP, "k")?;
    cpu::check_same_dtype(v, q, OP, "v")?;
    let (b, h, t, d) = q.dims4()?;
    let (bk, hkv, tk, dk) = k.dims4()?;
    if v.dims() != k.dims() {
        return Err(shape_err(
            OP,
            format!("k {:?} and v {:?} differ", k.dims(), v.dims()),
        ));
    }
    if bk != b || tk != t || dk != d || hkv == 0 || h % hkv != 0 {
        return Err(shape_err(
            OP,
            format!(
                "q {:?} and k/v {:?} do not fit: want q (B, H, T, D), k/v (B, Hkv, T, D), H a multiple of Hkv",
                q.dims(),
                k.dims()
            ),
        ));
    }
    Ok(())
}

/// Causal attention `softmax(q·kᵀ·scale + mask)·v` for q (B, H, T, D) and k, v
/// (B, Hkv, T, D), H a multiple of Hkv (grouped-query). Returns (B, H, T, D).
/// Differentiable in q, k and v. f32 or f64 on the CPU; f32 or bf16 on CUDA, with a head
/// dim of at most 128.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    check(q, k, v)?;
    let op = Attention {
        scale,
        lse: Mutex::new(None),
        saved: Default::default(),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// (B, kv, T, hd) → (B, kv·rep, T, hd); query head h reads KV head h / rep (HF `repeat_kv`).
/// Shared with the model's reference ops.
pub fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, hd) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, kv, rep, t, hd))?
        .reshape((b, kv * rep, t, hd))
}

/// (T, T): 0 on and below the diagonal, −∞ above. Shared with the model's reference ops.
pub fn causal_mask(t: usize, device: &Device, dtype: DType) -> Result<Tensor> {
    let m: Vec<f32> = (0..t * t)
        .map(|k| {
            if k % t > k / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(m, (t, t), device)?.to_dtype(dtype)
}

/// [`attention`] from plain candle ops (the model's original formulation): materialises
/// the (B, H, T, T) scores.
pub fn attention_slow(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (_, h, t, _) = q.dims4()?;
    let rep = h / k.dim(1)?;
    let (k, v) = (repeat_kv(k, rep)?, repeat_kv(v, rep)?); // (B, H, T, D)
    let mask = causal_mask(t, q.device(), q.dtype())?; // (T, T)
    let scores = q.matmul(&k.t()?)?.affine(scale, 0.0)?; // (B, H, T, T)
    let scores = scores.broadcast_add(&mask)?;
    let m = scores.max_keepdim(D::Minus1)?.detach();
    let e = scores.broadcast_sub(&m)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?; // (B, H, T, T)
    p.matmul(&v) // (B, H, T, D)
}
