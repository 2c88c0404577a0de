//! The differentiable ops on CUDA: RMSNorm, SwiGLU, RoPE, cross-entropy and attention, each
//! pass a fresh output (and what backward needs) from the launches of `crate::launch`.

use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, DType, Layout, Result, Tensor};

use super::buffers::{addr, cuda, cuda_in, elem, fresh, row_len, tensor};
use super::driver::{Driver, lerr};
use crate::error::cuda_err;
use crate::launch::{self, AttnDims};

const RMS: &str = "rms_norm";

/// y = rms_norm(x, w) and the per-row 1/rms (f32, saved for backward).
pub(crate) fn rms_norm_fwd(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    eps: f64,
) -> Result<(CudaStorage, Tensor)> {
    let dev = &x.device;
    let e = elem(RMS, x.dtype())?;
    let h = row_len(RMS, xl)?;
    let n = xl.shape().elem_count() / h.max(1);
    let y = fresh(dev, x.dtype(), n * h)?;
    let rstd = fresh(dev, DType::F32, n)?;
    {
        let st = dev.cuda_stream();
        let (xp, _gx) = addr(x, xl, &st, RMS, "x")?;
        let (wp, _gw) = addr(w, wl, &st, RMS, "w")?;
        let (yp, _gy) = addr(&y, &Layout::contiguous(n * h), &st, RMS, "y")?;
        let (rp, _gr) = addr(&rstd, &Layout::contiguous(n), &st, RMS, "rstd")?;
        let mut d = Driver::new(dev);
        launch::rms_norm_fwd(&mut d, e, xp, wp, yp, rp, n, h, eps as f32).map_err(lerr)?;
    }
    Ok((y, tensor(rstd, &[n])))
}

/// (dx, dw) of rms_norm from x, w, the upstream gradient and the saved 1/rms.
pub(crate) fn rms_norm_bwd(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    rstd: &Tensor,
) -> Result<(Tensor, Tensor)> {
    cuda_in!(x, RMS, "x", gx, xs, xl);
    cuda_in!(w, RMS, "w", gw, ws, wl);
    cuda_in!(dy, RMS, "grad", gd, ds, dl);
    cuda_in!(rstd, RMS, "rstd", gr, rs, rl);
    let dev = &xs.device;
    let e = elem(RMS, x.dtype())?;
    let h = row_len(RMS, xl)?;
    let n = xl.shape().elem_count() / h.max(1);
    let dx = fresh(dev, x.dtype(), n * h)?;
    let dw = fresh(dev, x.dtype(), h)?;
    {
        let st = dev.cuda_stream();
        let (xp, _a) = addr(xs, xl, &st, RMS, "x")?;
        let (wp, _b) = addr(ws, wl, &st, RMS, "w")?;
        let (dp, _c) = addr(ds, dl, &st, RMS, "grad")?;
        let (rp, _d) = addr(rs, rl, &st, RMS, "rstd")?;
        let (dxp, _e) = addr(&dx, &Layout::contiguous(n * h), &st, RMS, "dx")?;
        let (dwp, _f) = addr(&dw, &Layout::contiguous(h), &st, RMS, "dw")?;
        let mut d = Driver::new(dev);
        launch::rms_norm_bwd(&mut d, e, xp, wp, dp, rp, dxp, dwp, n, h).map_err(lerr)?;
    }
    Ok((tensor(dx, x.dims()), tensor(dw, w.dims())))
}

const SWIGLU: &str = "swiglu";

/// silu(gate) ⊙ up.
pub(crate) fn swiglu_fwd(
    g: &CudaStorage,
    gl: &Layout,
    u: &CudaStorage,
    ul: &Layout,
) -> Result<CudaStorage> {
    let dev = &g.device;
    let e = elem(SWIGLU, g.dtype())?;
    let n = gl.shape().elem_count();
    let y = fresh(dev, g.dtype(), n)?;
    {
        let st = dev.cuda_stream();
        let (gp, _a) = addr(g, gl, &st, SWIGLU, "gate")?;
        let (up, _b) = addr(u, ul, &st, SWIGLU, "up")?;
        let (yp, _c) = addr(&y, &Layout::contiguous(n), &st, SWIGLU, "y")?;
        launch::swiglu_fwd(&mut Driver::new(dev), e, gp, up, yp, n).map_err(lerr)?;
    }
    Ok(y)
}

/// (dgate, dup) of swiglu.
pub(crate) fn swiglu_bwd(g: &Tensor, u: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    cuda_in!(g, SWIGLU, "gate", gg, gs, gl);
    cuda_in!(u, SWIGLU, "up", gu, us, ul);
    cuda_in!(dy, SWIGLU, "grad", gd, ds, dl);
    let dev = &gs.device;
    let e = elem(SWIGLU, g.dtype())?;
    let n = gl.shape().elem_count();
    let dg = fresh(dev, g.dtype(), n)?;
    let du = fresh(dev, g.dtype(), n)?;
    {
        let st = dev.cuda_stream();
        let (gp, _a) = addr(gs, gl, &st, SWIGLU, "gate")?;
        let (up, _b) = addr(us, ul, &st, SWIGLU, "up")?;
        let (dp, _c) = addr(ds, dl, &st, SWIGLU, "grad")?;
        let (dgp, _d) = addr(&dg, &Layout::contiguous(n), &st, SWIGLU, "dgate")?;
        let (dup, _e) = addr(&du, &Layout::contiguous(n), &st, SWIGLU, "dup")?;
        let mut d = Driver::new(dev);
        launch::swiglu_bwd(&mut d, e, gp, up, dp, dgp, dup, n).map_err(lerr)?;
    }
    Ok((tensor(dg, g.dims()), tensor(du, u.dims())))
}

const ROPE: &str = "rope";

/// Half-split RoPE of x (B, h, T, D) with cos/sin (T, D); `inverse` applies the transpose
/// (the backward pass, with x the upstream gradient).
pub(crate) fn rope_apply(
    x: (&CudaStorage, &Layout),
    cos: (&CudaStorage, &Layout),
    sin: (&CudaStorage, &Layout),
    inverse: bool,
) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let e = elem(ROPE, x.0.dtype())?;
    let dims = x.1.dims();
    if dims.len() < 2 {
        return Err(cuda_err(
            ROPE,
            format!("x has shape {dims:?}, want (B, h, T, D)"),
        ));
    }
    let (t, d) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let n = x.1.shape().elem_count();
    let y = fresh(dev, x.0.dtype(), n)?;
    {
        let st = dev.cuda_stream();
        let (xp, _a) = addr(x.0, x.1, &st, ROPE, "x")?;
        let (cp, _b) = addr(cos.0, cos.1, &st, ROPE, "cos")?;
        let (sp, _c) = addr(sin.0, sin.1, &st, ROPE, "sin")?;
        let (yp, _d) = addr(&y, &Layout::contiguous(n), &st, ROPE, "y")?;
        let mut g = Driver::new(dev);
        launch::rope(&mut g, e, xp, cp, sp, yp, n, t, d, inverse).map_err(lerr)?;
    }
    Ok(y)
}

/// dx of rope from the upstream gradient.
pub(crate) fn rope_bwd(dy: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    cuda_in!(dy, ROPE, "grad", gd, ds, dl);
    cuda_in!(cos, ROPE, "cos", gc, cs, cl);
    cuda_in!(sin, ROPE, "sin", gs, ss, sl);
    let dx = rope_apply((ds, dl), (cs, cl), (ss, sl), true)?;
    Ok(tensor(dx, dy.dims()))
}

const CE: &str = "cross_entropy";

/// The mean cross-entropy of logits (N, V) against u32 targets (N), as an f32 scalar (for
/// bf16 logits too), and the per-row log-sum-exps (f32, saved for backward). A target out
/// of range makes the loss NaN.
pub(crate) fn cross_entropy_fwd(
    x: &CudaStorage,
    xl: &Layout,
    t: &CudaStorage,
    tl: &Layout,
) -> Result<(CudaStorage, Tensor)> {
    let dev = &x.device;
    let e = elem(CE, x.dtype())?;
    let (n, v) = xl.shape().dims2()?;
    let lse = fresh(dev, DType::F32, n)?;
    let loss = fresh(dev, DType::F32, 1)?;
    {
        let st = dev.cuda_stream();
        let (xp, _a) = addr(x, xl, &st, CE, "logits")?;
        let (tp, _b) = addr(t, tl, &st, CE, "targets")?;
        let (lp, _c) = addr(&lse, &Layout::contiguous(n), &st, CE, "lse")?;
        let (op, _d) = addr(&loss, &Layout::contiguous(1), &st, CE, "loss")?;
        let mut g = Driver::new(dev);
        launch::cross_entropy_fwd(&mut g, e, xp, tp, lp, op, n, v).map_err(lerr)?;
    }
    Ok((loss, tensor(lse, &[n])))
}

/// dlogits of the mean cross-entropy; `g` is the upstream gradient (a scalar, read on the
/// device, so no host synchronisation).
pub(crate) fn cross_entropy_bwd(
    x: &Tensor,
    t: &Tensor,
    lse: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    let g = g.to_dtype(DType::F32)?.contiguous()?;
    cuda_in!(x, CE, "logits", gx, xs, xl);
    cuda_in!(t, CE, "targets", gt, ts, tl);
    cuda_in!(lse, CE, "lse", gl_, ls, ll);
    cuda_in!(g, CE, "grad", gg, gs, gl);
    let dev = &xs.device;
    let e = elem(CE, x.dtype())?;
    let (n, v) = xl.shape().dims2()?;
    let dx = fresh(dev, x.dtype(), n * v)?;
    {
        let st = dev.cuda_stream();
        let (xp, _a) = addr(xs, xl, &st, CE, "logits")?;
        let (tp, _b) = addr(ts, tl, &st, CE, "targets")?;
        let (lp, _c) = addr(ls, ll, &st, CE, "lse")?;
        let (gp, _d) = addr(gs, gl, &st, CE, "grad")?;
        let (dp, _e) = addr(&dx, &Layout::contiguous(n * v), &st, CE, "dlogits")?;
        let mut d = Driver::new(dev);
        launch::cross_entropy_bwd(&mut d, e, xp, tp, lp, gp, dp, n, v).map_err(lerr)?;
    }
    Ok(tensor(dx, x.dims()))
}

const ATT: &str = "attention";

fn attn_dims(q: &[usize], k: &[usize], scale: f64) -> AttnDims {
    AttnDims {
        b: q[0],
        h: q[1],
        hkv: k[1],
        t: q[2],
        d: q[3],
        scale: scale as f32,
    }
}

/// Causal GQA attention of q (B, H, T, D), k, v (B, Hkv, T, D): the output and the per-row
/// log-sum-exp (B, H, T) in f32, saved for backward.
pub(crate) fn attention_fwd(
    q: (&CudaStorage, &Layout),
    k: (&CudaStorage, &Layout),
    v: (&CudaStorage, &Layout),
    scale: f64,
) -> Result<(CudaStorage, Tensor)> {
    let dev = &q.0.device;
    let e = elem(ATT, q.0.dtype())?;
    let dims = attn_dims(q.1.dims(), k.1.dims(), scale);
    let n = q.1.shape().elem_count();
    let rows = dims.b * dims.h * dims.t;
    let out = fresh(dev, q.0.dtype(), n)?;
    let lse = fresh(dev, DType::F32, rows)?;
    {
        let st = dev.cuda_stream();
        let (qp, _a) = addr(q.0, q.1, &st, ATT, "q")?;
        let (kp, _b) = addr(k.0, k.1, &st, ATT, "k")?;
        let (vp, _c) = addr(v.0, v.1, &st, ATT, "v")?;
        let (op, _d) = addr(&out, &Layout::contiguous(n), &st, ATT, "out")?;
        let (lp, _e) = addr(&lse, &Layout::contiguous(rows), &st, ATT, "lse")?;
        let mut g = Driver::new(dev);
        launch::attention_fwd(&mut g, e, [qp, kp, vp], op, lp, dims).map_err(lerr)?;
    }
    Ok((out, tensor(lse, &[dims.b, dims.h, dims.t])))
}

/// (dq, dk, dv) of attention from the inputs, the forward output `o`, the upstream gradient
/// and the saved log-sum-exp.
pub(crate) fn attention_bwd(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    dout: &Tensor,
    lse: &Tensor,
    scale: f64,
) -> Result<[Tensor; 3]> {
    cuda_in!(q, ATT, "q", g1, qs, ql);
    cuda_in!(k, ATT, "k", g2, ks, kl);
    cuda_in!(v, ATT, "v", g3, vs, vl);
    cuda_in!(o, ATT, "out", g4, os, ol);
    cuda_in!(dout, ATT, "grad", g5, ds, dl);
    cuda_in!(lse, ATT, "lse", g6, ls, ll);
    let dev = &qs.device;
    let e = elem(ATT, q.dtype())?;
    let dims = attn_dims(ql.dims(), kl.dims(), scale);
    let (nq, nk) = (q.elem_count(), k.elem_count());
    let dq = fresh(dev, q.dtype(), nq)?;
    let dk = fresh(dev, q.dtype(), nk)?;
    let dv = fresh(dev, q.dtype(), nk)?;
    {
        let st = dev.cuda_stream();
        let (qp, _a) = addr(qs, ql, &st, ATT, "q")?;
        let (kp, _b) = addr(ks, kl, &st, ATT, "k")?;
        let (vp, _c) = addr(vs, vl, &st, ATT, "v")?;
        let (op, _d) = addr(os, ol, &st, ATT, "out")?;
        let (dp, _e) = addr(ds, dl, &st, ATT, "grad")?;
        let (lp, _f) = addr(ls, ll, &st, ATT, "lse")?;
        let (dqp, _g) = addr(&dq, &Layout::contiguous(nq), &st, ATT, "dq")?;
        let (dkp, _h) = addr(&dk, &Layout::contiguous(nk), &st, ATT, "dk")?;
        let (dvp, _i) = addr(&dv, &Layout::contiguous(nk), &st, ATT, "dv")?;
        let mut g = Driver::new(dev);
        launch::attention_bwd(&mut g, e, [qp, kp, vp, op, dp, lp], [dqp, dkp, dvp], dims)
            .map_err(lerr)?;
    }
    Ok([
        tensor(dq, q.dims()),
        tensor(dk, k.dims()),
        tensor(dv, v.dims()),
    ])
}
