//! Fused causal grouped-query attention, flash style: softmax(q·kᵀ·scale + causal mask)·v.
//!
//! q is (B, H, T, D); k and v are (B, Hkv, T, D) with H a multiple of Hkv, and query head h
//! reads KV head h / (H/Hkv) (HF `repeat_kv`). The forward pass walks key tiles with an
//! online softmax, so at most a BR×BC tile of one head's T×T scores exists at a time (one
//! row of it per query row here), and saves only the per-row log-sum-exp (B·H·T floats).
//! Backward recomputes the probabilities tile by tile from q, k and that log-sum-exp
//! (FlashAttention-2's recurrence) and returns dq, dk, dv, with dk and dv summed over the
//! query heads that share a KV head.
//!
//! Work split: forward over (B, H, query tile); backward over (B, Hkv), each task owning
//! its KV head's dk, dv and its query heads' dq, so no reductions across tasks are needed.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, D, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{self, Real, axpy, check_cpu, check_float, dot, simd_fn, unsupported};
use crate::error::{Error, shape_err};

const OP: &str = "attention";

/// Query rows per forward tile.
const BR: usize = 32;
/// Key rows per tile.
const BC: usize = 64;

struct Attention {
    scale: f64,
    /// Per-row log-sum-exp of the scaled, masked scores, (B, H, T), from the forward pass.
    lse: Mutex<Option<CpuStorage>>,
}

#[derive(Clone, Copy)]
struct Dims {
    h: usize,
    hkv: usize,
    t: usize,
    d: usize,
}

impl Dims {
    fn of(q: &[usize], k: &[usize]) -> Self {
        Dims {
            h: q[1],
            hkv: k[1],
            t: q[2],
            d: q[3],
        }
    }

    fn rep(&self) -> usize {
        self.h / self.hkv
    }
}

/// One query tile (rows i0.., as many as `lse` holds) of one head: online softmax over key
/// tiles up to the diagonal. `o` holds the tile's output rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_tile_body<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    lse: &mut [T],
    i0: usize,
    d: usize,
    scale: T,
) {
    let rows = lse.len();
    let mut m = [T::NEG_INF; BR];
    let mut l = [T::zero(); BR];
    let mut s = [T::zero(); BC]; // (BC): one row of the score tile
    let mut kt = vec![T::zero(); d * BC]; // (D, BC): the key tile, transposed
    let i_end = i0 + rows; // keys j < i_end are visible to some row of the tile
    let mut j0 = 0;
    while j0 < i_end {
        let j1 = (j0 + BC).min(i_end);
        transpose_tile(k, j0, j1 - j0, d, &mut kt);
        for r in 0..rows {
            let i = i0 + r;
            let jend = j1.min(i + 1);
            if jend <= j0 {
                continue;
            }
            let qi = &q[i * d..(i + 1) * d];
            let n = jend - j0;
            scores(qi, &kt, &mut s[..n], scale);
            let mt = s[..n].iter().fold(T::NEG_INF, |a, &b| a.fmax(b));
            let m_new = m[r].fmax(mt);
            let alpha = (m[r] - m_new).exp_fast(); // 0 on the first tile (m = −∞)
            for sj in s[..n].iter_mut() {
                *sj = (*sj - m_new).exp_fast(); // scores → unnormalised probabilities
            }
            let orow = &mut o[r * d..(r + 1) * d];
            if alpha != T::one() {
                cpu::scale(orow, alpha);
                l[r] *= alpha;
            }
            for (j, &p) in s[..n].iter().enumerate() {
                l[r] += p;
                axpy(orow, p, &v[(j0 + j) * d..(j0 + j + 1) * d]);
            }
            m[r] = m_new;
        }
        j0 = j1;
    }
    for r in 0..rows {
        cpu::scale(&mut o[r * d..(r + 1) * d], T::one() / l[r]);
        lse[r] = m[r] + l[r].ln();
    }
}

/// Rows j0..j0+n of a (T, D) head, transposed into `kt` (D, BC).
#[inline(always)]
fn transpose_tile<T: Real>(src: &[T], j0: usize, n: usize, d: usize, kt: &mut [T]) {
    for j in 0..n {
        let row = &src[(j0 + j) * d..(j0 + j + 1) * d];
        for (c, &x) in row.iter().enumerate() {
            kt[c * BC + j] = x;
        }
    }
}

/// out[j] = scale·⟨a, tile row j⟩ for the n = out.len() rows of a transposed tile `kt`
/// (D, BC), accumulated as D axpys across j: vectorises over keys with no horizontal sums.
#[inline(always)]
fn scores<T: Real>(a: &[T], kt: &[T], out: &mut [T], scale: T) {
    let n = out.len();
    out.fill(T::zero());
    for (c, &ac) in a.iter().enumerate() {
        for (o, &x) in out.iter_mut().zip(&kt[c * BC..c * BC + n]) {
            *o += ac * x;
        }
    }
    for o in out.iter_mut() {
        *o *= scale;
    }
}

simd_fn!(fn forward_tile<T: Real>(
    q: &[T], k: &[T], v: &[T], o: &mut [T], lse: &mut [T], i0: usize, d: usize, scale: T,
) => forward_tile_body);

/// (out (B, H, T, D), lse (B, H, T)).
fn forward<T: Real>(q: &[T], k: &[T], v: &[T], dm: Dims, scale: f64) -> (Vec<T>, Vec<T>) {
    let Dims { h, t, d, .. } = dm;
    let (rep, hkv) = (dm.rep(), dm.hkv);
    let scale = T::from_f64(scale);
    let mut out = vec![T::zero(); q.len()];
    let mut lse = vec![T::zero(); q.len() / d];
    out.par_chunks_mut(t * d)
        .zip(lse.par_chunks_mut(t))
        .enumerate()
        .for_each(|(bh, (oh, lh))| {
            let (bi, hi) = (bh / h, bh % h);
            let kv = (bi * hkv + hi / rep) * t * d;
            let (kh, vh) = (&k[kv..kv + t * d], &v[kv..kv + t * d]); // (T, D)
            let qh = &q[bh * t * d..(bh + 1) * t * d]; // (T, D)
            oh.par_chunks_mut(BR * d)
                .zip(lh.par_chunks_mut(BR))
                .enumerate()
                .for_each(|(qt, (ot, lt))| forward_tile(qh, kh, vh, ot, lt, qt * BR, d, scale));
        });
    (out, lse)
}

/// Saved and incoming tensors of the backward pass, as slices.
struct BwdIn<'a, T> {
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    o: &'a [T],
    dout: &'a [T],
    lse: &'a [T],
}

/// (dq, dk, dv). With P = exp(S − lse), Δᵢ = ⟨dOᵢ, Oᵢ⟩:
/// dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − Δ), dQ = dS K·scale, dK = dSᵀ Q·scale.
fn backward<T: Real>(x: &BwdIn<'_, T>, dm: Dims, scale: f64) -> (Vec<T>, Vec<T>, Vec<T>) {
    let Dims { t, d, .. } = dm;
    let rep = dm.rep();
    let scale = T::from_f64(scale);
    let mut dq = vec![T::zero(); x.q.len()];
    let mut dk = vec![T::zero(); x.k.len()];
    let mut dv = vec![T::zero(); x.v.len()];
    dq.par_chunks_mut(rep * t * d)
        .zip(dk.par_chunks_mut(t * d).zip(dv.par_chunks_mut(t * d)))
        .enumerate()
        .for_each(|(bg, (dqg, (dkh, dvh)))| backward_group(x, dm, scale, bg, dqg, dkh, dvh));
    (dq, dk, dv)
}

/// The backward pass of KV group `bg` = b·Hkv + g: its dk, dv (T, D) and the dq of its
/// query heads (rep, T, D).
#[inline(always)]
fn backward_group_body<T: Real>(
    x: &BwdIn<'_, T>,
    dm: Dims,
    scale: T,
    bg: usize,
    dqg: &mut [T],
    dkh: &mut [T],
    dvh: &mut [T],
) {
    let Dims { t, d, .. } = dm;
    let rep = dm.rep();
    // Its query heads are b·H + g·rep + r = bg·rep + r.
    let kh = &x.k[bg * t * d..(bg + 1) * t * d]; // (T, D)
    let vh = &x.v[bg * t * d..(bg + 1) * t * d]; // (T, D)
    let mut delta = vec![T::zero(); t];
    let (mut p, mut ds) = ([T::zero(); BC], [T::zero(); BC]); // one row of P and dS
    let (mut kt, mut vt) = (vec![T::zero(); d * BC], vec![T::zero(); d * BC]); // (D, BC)
    for (r, dqh) in dqg.chunks_exact_mut(t * d).enumerate() {
        let bh = bg * rep + r;
        let span = bh * t * d..(bh + 1) * t * d;
        let (qh, oh, doh) = (&x.q[span.clone()], &x.o[span.clone()], &x.dout[span]);
        let lh = &x.lse[bh * t..(bh + 1) * t];
        for (i, di) in delta.iter_mut().enumerate() {
            *di = dot(&doh[i * d..(i + 1) * d], &oh[i * d..(i + 1) * d]);
        }
        for j0 in (0..t).step_by(BC) {
            let j1 = (j0 + BC).min(t);
            transpose_tile(kh, j0, j1 - j0, d, &mut kt);
            transpose_tile(vh, j0, j1 - j0, d, &mut vt);
            // Rows i ≥ j0 see this key tile; the tile's k, v, dk, dv stay in cache.
            for i in j0..t {
                let jend = j1.min(i + 1);
                let qi = &qh[i * d..(i + 1) * d];
                let doi = &doh[i * d..(i + 1) * d];
                let (li, di) = (lh[i], delta[i]);
                let dqi = &mut dqh[i * d..(i + 1) * d];
                let n = jend - j0;
                scores(qi, &kt, &mut p[..n], scale);
                for pj in p[..n].iter_mut() {
                    *pj = (*pj - li).exp_fast();
                }
                scores(doi, &vt, &mut ds[..n], T::one());
                for (dsj, &pj) in ds[..n].iter_mut().zip(&p[..n]) {
                    *dsj = pj * (*dsj - di) * scale;
                }
                for j in 0..n {
                    let span = (j0 + j) * d..(j0 + j + 1) * d;
                    axpy(&mut dvh[span.clone()], p[j], doi);
                    axpy(dqi, ds[j], &kh[span.clone()]);
                    axpy(&mut dkh[span], ds[j], qi);
                }
            }
        }
    }
}

simd_fn!(fn backward_group<T: Real>(
    x: &BwdIn<'_, T>, dm: Dims, scale: T, bg: usize, dqg: &mut [T], dkh: &mut [T], dvh: &mut [T],
) => backward_group_body);

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
            q: cpu::slice::<T>(cpu::cpu(&qs, OP, "q")?, ql, OP, "q")?,
            k: cpu::slice::<T>(cpu::cpu(&ks, OP, "k")?, kl, OP, "k")?,
            v: cpu::slice::<T>(cpu::cpu(&vs, OP, "v")?, vl, OP, "v")?,
            o: cpu::slice::<T>(cpu::cpu(&os, OP, "out")?, ol, OP, "out")?,
            dout: cpu::slice::<T>(cpu::cpu(&ds, OP, "grad")?, dl, OP, "grad")?,
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

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dout = dout.contiguous()?;
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
/// Differentiable in q, k and v. f32 or f64, CPU.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    check(q, k, v)?;
    let op = Attention {
        scale,
        lse: Mutex::new(None),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// (B, kv, T, hd) → (B, kv·rep, T, hd); query head h reads KV head h / rep (HF `repeat_kv`).
fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, hd) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, kv, rep, t, hd))?
        .reshape((b, kv * rep, t, hd))
}

/// (T, T): 0 on and below the diagonal, −∞ above.
fn causal_mask(t: usize, device: &Device, dtype: DType) -> Result<Tensor> {
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
