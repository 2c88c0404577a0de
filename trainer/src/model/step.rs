//! One MiniCPM training step, written out by hand (llm.c style) over a kernel backend
//! ([`wsdscope_kernels::backend::Backend`]): the forward pass keeps the activations its
//! backward needs, and the backward is the chain rule in reverse order, op by op. The same
//! code, order, layouts and casts run on every backend: the CPU slices (the CPU training
//! path), the CPU executor of the CUDA sources (the test that a GPU step computes what the
//! CPU step does) and CUDA (the GPU training path).
//!
//! ```text
//! h  = embed(x) · scale_emb                                   (N, H)      N = B·T
//! for each of the L blocks, with s = scale_depth / √L:
//!     h += s · o_proj(Attn(RoPE(q), RoPE(k), v))              q, k, v = [Wq; Wk; Wv] · RMSNorm(h)
//!     h += s · down(silu(gate) ⊙ up)                          [gate | up] = [Wg; Wu] · RMSNorm(h)
//! logits = RMSNorm(h) / width_mult · embedᵀ                   (N, V), tied head
//! loss   = mean cross-entropy
//! ```
//!
//! It computes the same function as [`super::MiniCpm::logits`] with the fused ops (a test
//! compares loss and every gradient with the reference ops), without a graph: each buffer is
//! written once, and a step's buffers come from the backend's pool, so a step reuses the
//! previous step's memory.
//!
//! Precision: in f32 every buffer is f32 and the weights are read in place (q/k/v and
//! gate/up are stacked into one matrix each, so each pair or triple of projections is one
//! GEMM). In bf16 mixed precision the f32 master weights are cast to bf16 once per step (the
//! stacked ones straight into their stack), activations and their gradients are bf16, the
//! statistics (RMSNorm's 1/rms, the log-sum-exps of attention and the cross-entropy) and the
//! loss are f32, and every weight gradient is f32 for the optimiser (the GEMMs write it in
//! f32; RMSNorm's gain gradient comes out in bf16 and is widened).
//!
//! Layouts: token rows (N, ·) row-major; heads (B, h, T, hd) for RoPE and attention; q, k
//! and v are column blocks of one (N, (nh + 2·kv)·hd) GEMM output, [gate | up] of one
//! (N, 2F). Per layer the backward keeps its input h, both normed inputs and their 1/rms,
//! q/k/v and o in head layout, o merged, the attention lse, the [gate | up] rows,
//! silu(gate)·up, and the (stacked, cast) weights its GEMMs ran on.

use wsdscope_kernels::backend::{
    AttnSaved, AttnShape, Backend, Buffer, Dt, HeadCols, Linear, Tokens,
};

use crate::config::{ModelConfig, Precision};
use crate::error::{Error, Result};

/// The model's parameters on a backend, as a step reads them.
pub struct Weights<'p, B> {
    /// Every parameter in checkpoint order ([`super::param_shapes`]), f32 masters.
    pub params: &'p [B],
    /// RoPE tables (≥ T rows of hd), f32.
    pub cos: &'p B,
    pub sin: &'p B,
}

/// One batch of next-token pairs, (B, T) each, row-major.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub inputs: &'a [u32],
    pub targets: &'a [u32],
    pub b: usize,
    pub t: usize,
}

/// A weight as a pass reads it: the f32 master itself, or this step's bf16 copy.
enum W<'p, B> {
    Master(&'p B),
    Copy(B),
}

impl<B> W<'_, B> {
    fn get(&self) -> &B {
        match self {
            W::Master(b) => b,
            W::Copy(b) => b,
        }
    }

    fn into_copy(self) -> Option<B> {
        match self {
            W::Master(_) => None,
            W::Copy(b) => Some(b),
        }
    }
}

/// `master` as the step computes in `cd`: itself in f32, a bf16 copy otherwise.
fn cast<'p, Be: Backend>(be: &Be, master: &'p Be::Buf, cd: Dt) -> Result<W<'p, Be::Buf>> {
    if cd == master.dt() {
        return Ok(W::Master(master));
    }
    let mut c = be.take(master.len(), cd)?;
    be.convert(master, 0, &mut c, 0, master.len())?;
    Ok(W::Copy(c))
}

/// The weights `ws` (each (rows, H)) stacked into one (Σ rows, H) matrix in `cd`, so their
/// projections of the same input run as one GEMM.
fn stack<Be: Backend>(be: &Be, ws: &[Be::Buf], cd: Dt) -> Result<Be::Buf> {
    let mut out = be.take(ws.iter().map(|w| w.len()).sum(), cd)?;
    let mut at = 0;
    for w in ws {
        be.convert(w, 0, &mut out, at, w.len())?;
        at += w.len();
    }
    Ok(out)
}

/// A stacked weight's gradient split back into its parts' (f32, sizes `lens`).
fn unstack<Be: Backend>(be: &Be, g: &Be::Buf, lens: &[usize]) -> Result<Vec<Be::Buf>> {
    let mut at = 0;
    lens.iter()
        .map(|&l| {
            let mut part = be.zeros(l, Dt::F32)?;
            be.convert(g, at, &mut part, 0, l)?;
            at += l;
            Ok(part)
        })
        .collect()
}

/// The gradient of RMSNorm's gain as the optimiser takes it (f32), and dx into `dx`.
fn rms_norm_backward<Be: Backend>(
    be: &Be,
    x: &Be::Buf,
    w: &Be::Buf,
    dy: &Be::Buf,
    rstd: &Be::Buf,
    dx: &mut Be::Buf,
) -> Result<Be::Buf> {
    if x.dt() == Dt::F32 {
        let mut dw = be.zeros(w.len(), Dt::F32)?;
        be.rms_norm_bwd(x, w, dy, rstd, dx, &mut dw)?;
        return Ok(dw);
    }
    let mut dw = be.take(w.len(), x.dt())?;
    be.rms_norm_bwd(x, w, dy, rstd, dx, &mut dw)?;
    let mut wide = be.zeros(w.len(), Dt::F32)?;
    be.convert(&dw, 0, &mut wide, 0, w.len())?;
    be.give([dw]);
    Ok(wide)
}

/// Gives `bufs` and the step's weight copies among `ws` back to the pool.
fn finish<Be: Backend>(be: &Be, bufs: Vec<Be::Buf>, ws: Vec<W<'_, Be::Buf>>) {
    be.give(bufs);
    be.give(ws.into_iter().filter_map(W::into_copy));
}

/// What the backward pass needs of one decoder block's forward.
struct BlockActs<'p, B> {
    h_in: B,          // (N, H) the block's input
    w_in: W<'p, B>,   // (H) input_layernorm
    x1: B,            // (N, H) RMSNorm(h_in)
    r1: B,            // (N) f32, its 1/rms
    w_qkv: B,         // ((nh + 2·kv)·hd, H) q, k, v weights stacked
    q: B,             // (B, nh, T, hd) after RoPE
    k: B,             // (B, kv, T, hd) after RoPE
    v: B,             // (B, kv, T, hd)
    o: B,             // (B, nh, T, hd) attention output
    lse: B,           // (B, nh, T) f32
    o_rows: B,        // (N, nh·hd) o with heads merged
    w_o: W<'p, B>,    // (H, nh·hd)
    h_mid: B,         // (N, H) after the attention residual
    w_post: W<'p, B>, // (H) post_attention_layernorm
    x2: B,            // (N, H) RMSNorm(h_mid)
    r2: B,            // (N) f32, its 1/rms
    w_gu: B,          // (2F, H) gate and up weights stacked
    gu: B,            // (N, 2F) rows [gate(x2) | up(x2)]
    act: B,           // (N, F) silu(gate) ⊙ up
    w_down: W<'p, B>, // (H, F)
}

impl<B> BlockActs<'_, B> {
    /// Every buffer it owns, for the pool.
    fn into_bufs(self) -> Vec<B> {
        let mut out = vec![
            self.h_in,
            self.x1,
            self.r1,
            self.w_qkv,
            self.q,
            self.k,
            self.v,
            self.o,
            self.lse,
            self.o_rows,
            self.h_mid,
            self.x2,
            self.r2,
            self.w_gu,
            self.gu,
            self.act,
        ];
        out.extend(
            [self.w_in, self.w_o, self.w_post, self.w_down]
                .into_iter()
                .filter_map(W::into_copy),
        );
        out
    }
}

/// Errors unless every id and target is inside the vocabulary (the kernels would only mark
/// such a row NaN).
fn check_batch(batch: &Batch<'_>, v: usize) -> Result<()> {
    let n = batch.b * batch.t;
    if batch.inputs.len() != n || batch.targets.len() != n {
        return Err(Error::Config(format!(
            "a batch of {}×{} has {} inputs and {} targets",
            batch.b,
            batch.t,
            batch.inputs.len(),
            batch.targets.len()
        )));
    }
    if let Some(&id) = batch.inputs.iter().find(|&&id| id as usize >= v) {
        return Err(Error::Config(format!(
            "token id {id} is outside the vocabulary of {v}"
        )));
    }
    if let Some(row) = batch.targets.iter().position(|&c| c as usize >= v) {
        return Err(wsdscope_kernels::Error::TargetOutOfRange {
            op: "cross_entropy",
            row,
            target: batch.targets[row],
            vocab: v,
        }
        .into());
    }
    Ok(())
}

/// The mean next-token loss of `batch` and, with `grad`, every parameter's gradient (f32,
/// in checkpoint order), computed on `be` in `precision`.
pub fn run<Be: Backend>(
    be: &Be,
    cfg: &ModelConfig,
    w: Weights<'_, Be::Buf>,
    batch: Batch<'_>,
    precision: Precision,
    grad: bool,
) -> Result<(f32, Option<Vec<Be::Buf>>)> {
    let (hs, f, v) = (cfg.hidden, cfg.ffn, cfg.vocab);
    let (nh, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim());
    let (b, t) = (batch.b, batch.t);
    let n = b * t;
    check_batch(&batch, v)?;
    let p = w.params;
    if p.len() != 2 + 9 * cfg.layers {
        return Err(Error::Config(format!(
            "the step got {} parameters, the model has {}",
            p.len(),
            2 + 9 * cfg.layers
        )));
    }
    if w.cos.len() < t * hd || w.sin.len() < t * hd {
        return Err(Error::Config(format!(
            "sequence of {t} tokens exceeds the RoPE tables of {}",
            w.cos.len().min(w.sin.len()) / hd.max(1)
        )));
    }
    let cd = match precision {
        Precision::F32 => Dt::F32,
        Precision::Bf16 => Dt::Bf16,
    };
    let eps = cfg.rms_eps;
    let res = cfg.residual_scale() as f32;
    let scale_emb = cfg.scale_emb as f32;
    let inv_wm = (1.0 / cfg.width_mult()) as f32;
    let shape = AttnShape {
        b,
        h: nh,
        hkv: kv,
        t,
        d: hd,
    };
    let scale = 1.0 / (hd as f64).sqrt();
    // q, k and v come out of one GEMM as column blocks of (N, width) rows.
    let width = (nh + 2 * kv) * hd;
    let cols = |col0: usize, heads: usize, width: usize| HeadCols {
        b,
        t,
        width,
        col0,
        nh: heads,
        d: hd,
    };
    let (q_cols, k_cols, v_cols) = (
        cols(0, nh, width),
        cols(nh * hd, kv, width),
        cols((nh + kv) * hd, kv, width),
    );
    let o_cols = cols(0, nh, nh * hd);
    let lin = |inp, out| Linear { n, inp, out };

    let tokens = Tokens::upload(be, batch.inputs)?;
    let targets = be.upload_u32(batch.targets)?;
    // The weights used outside the blocks, and RoPE's tables (T, hd), in the compute type.
    let emb = cast(be, &p[0], cd)?; // (V, H)
    let w_norm = cast(be, &p[p.len() - 1], cd)?; // (H)
    let (cos, sin) = if cd == Dt::F32 {
        (W::Master(w.cos), W::Master(w.sin))
    } else {
        let table = |src: &Be::Buf| -> Result<W<'_, Be::Buf>> {
            let mut c = be.take(t * hd, cd)?;
            be.convert(src, 0, &mut c, 0, t * hd)?;
            Ok(W::Copy(c))
        };
        (table(w.cos)?, table(w.sin)?)
    };
    // Heads of columns `c` of token rows, rotated by RoPE if `rope`.
    let heads = |rows: &Be::Buf, c: HeadCols, rope: bool| -> Result<Be::Buf> {
        let mut y = be.take(c.len(), cd)?;
        be.split_heads(rows, c, &mut y)?; // (B, c.nh, T, hd)
        if !rope {
            return Ok(y);
        }
        let mut r = be.take(c.len(), cd)?;
        be.rope(&y, cos.get(), sin.get(), t, hd, false, &mut r)?;
        be.give([y]);
        Ok(r)
    };

    // h = embed(x) · scale_emb                                        (N, H)
    let mut h = be.take(n * hs, cd)?;
    be.embed(emb.get(), &tokens, scale_emb, &mut h)?;

    let mut acts = Vec::with_capacity(if grad { cfg.layers } else { 0 });
    for l in 0..cfg.layers {
        let lw = &p[1 + 9 * l..10 + 9 * l];
        // h += s · Attn(RMSNorm(h))
        let w_in = cast(be, &lw[0], cd)?;
        let (mut x1, mut r1) = (be.take(n * hs, cd)?, be.take(n, Dt::F32)?);
        be.rms_norm_fwd(&h, w_in.get(), eps, &mut x1, &mut r1)?; // (N, H)
        let w_qkv = stack(be, &lw[1..4], cd)?; // ((nh + 2·kv)·hd, H)
        let mut qkv = be.take(n * width, cd)?;
        be.linear(&x1, &w_qkv, &mut qkv, lin(hs, width), false)?; // (N, (nh + 2·kv)·hd)
        let q = heads(&qkv, q_cols, true)?; // (B, nh, T, hd)
        let k = heads(&qkv, k_cols, true)?; // (B, kv, T, hd)
        let vv = heads(&qkv, v_cols, false)?; // (B, kv, T, hd)
        be.give([qkv]);
        let (mut o, mut lse) = (be.take(q.len(), cd)?, be.take(b * nh * t, Dt::F32)?);
        be.attention_fwd(&q, &k, &vv, shape, scale, &mut o, &mut lse)?; // (B, nh, T, hd)
        let mut o_rows = be.take(n * nh * hd, cd)?;
        be.merge_heads(&o, o_cols, &mut o_rows)?; // (N, nh·hd)
        let w_o = cast(be, &lw[4], cd)?;
        let mut a = be.take(n * hs, cd)?;
        be.linear(&o_rows, w_o.get(), &mut a, lin(nh * hd, hs), false)?; // (N, H)
        let mut h_mid = be.take(n * hs, cd)?;
        be.add_scaled(&h, &a, res, &mut h_mid)?;
        be.give([a]);
        // h += s · down(silu(gate(x)) ⊙ up(x)),  x = RMSNorm(h)
        let w_post = cast(be, &lw[5], cd)?;
        let (mut x2, mut r2) = (be.take(n * hs, cd)?, be.take(n, Dt::F32)?);
        be.rms_norm_fwd(&h_mid, w_post.get(), eps, &mut x2, &mut r2)?; // (N, H)
        let w_gu = stack(be, &lw[6..8], cd)?; // (2F, H)
        let mut gu = be.take(n * 2 * f, cd)?;
        be.linear(&x2, &w_gu, &mut gu, lin(hs, 2 * f), false)?; // (N, 2F): [gate(x) | up(x)]
        let mut act = be.take(n * f, cd)?;
        be.swiglu_fwd(&gu, f, &mut act)?; // (N, F)
        let w_down = cast(be, &lw[8], cd)?;
        let mut mlp = be.take(n * hs, cd)?;
        be.linear(&act, w_down.get(), &mut mlp, lin(f, hs), false)?; // (N, H)
        let mut h_out = be.take(n * hs, cd)?;
        be.add_scaled(&h_mid, &mlp, res, &mut h_out)?;
        be.give([mlp]);
        let block = BlockActs {
            h_in: std::mem::replace(&mut h, h_out),
            w_in,
            x1,
            r1,
            w_qkv,
            q,
            k,
            v: vv,
            o,
            lse,
            o_rows,
            w_o,
            h_mid,
            w_post,
            x2,
            r2,
            w_gu,
            gu,
            act,
            w_down,
        };
        if grad {
            acts.push(block);
        } else {
            be.give(block.into_bufs());
        }
    }
    // logits = RMSNorm(h) / width_mult · embedᵀ                          (N, V)
    let (mut xf, mut rf) = (be.take(n * hs, cd)?, be.take(n, Dt::F32)?);
    be.rms_norm_fwd(&h, w_norm.get(), eps, &mut xf, &mut rf)?; // (N, H)
    be.scale(&mut xf, inv_wm)?;
    let mut logits = be.take(n * v, cd)?;
    be.linear(&xf, emb.get(), &mut logits, lin(hs, v), false)?; // (N, V)
    let (mut lse, mut loss) = (be.take(n, Dt::F32)?, be.take(1, Dt::F32)?);
    be.cross_entropy_fwd(&logits, &targets, &mut lse, &mut loss)?;
    if !grad {
        let value = be.download_f32(&loss)?[0];
        finish(
            be,
            vec![logits, xf, h, rf, lse, loss],
            vec![emb, w_norm, cos, sin],
        );
        return Ok((value, None));
    }

    // Backward, in reverse order of the forward above.
    let mut grads: Vec<Option<Be::Buf>> = (0..p.len()).map(|_| None).collect();
    be.cross_entropy_bwd(&mut logits, &targets, &lse, 1.0)?; // logits → dlogits (N, V)
    let mut dxf = be.take(n * hs, cd)?;
    be.linear_dx(&logits, emb.get(), &mut dxf, lin(hs, v), false)?; // (N, H)
    // The tied head's share of d embed (f32); the lookup's share is added at the end.
    let mut d_emb = be.zeros(v * hs, Dt::F32)?;
    be.linear_dw(&logits, &xf, &mut d_emb, lin(hs, v), false)?; // (V, H)
    be.scale(&mut dxf, inv_wm)?;
    let mut dh = be.take(n * hs, cd)?;
    grads[p.len() - 1] = Some(rms_norm_backward(be, &h, w_norm.get(), &dxf, &rf, &mut dh)?);
    be.give([logits, xf, h, dxf, rf, lse]);

    let mut tmp = be.take(n * hs, cd)?; // (N, H) scratch for scaled upstream grads
    let mut dnorm = be.take(n * hs, cd)?; // (N, H) a norm's input gradient
    for l in (0..cfg.layers).rev() {
        let a = acts.pop().expect("one set of activations per block");
        let lw = &p[1 + 9 * l..10 + 9 * l];
        // h_out = h_mid + s · down(act)
        be.scaled(&dh, res, &mut tmp)?;
        let mut dact = be.take(n * f, cd)?;
        be.linear_dx(&tmp, a.w_down.get(), &mut dact, lin(f, hs), false)?; // (N, F)
        let mut dw_down = be.zeros(hs * f, Dt::F32)?;
        be.linear_dw(&tmp, &a.act, &mut dw_down, lin(f, hs), false)?; // (H, F)
        let mut dgu = be.take(n * 2 * f, cd)?;
        be.swiglu_bwd(&a.gu, &dact, f, &mut dgu)?; // (N, 2F) [dgate | dup]
        let mut dx = be.take(n * hs, cd)?; // (N, H): ∂/∂x2, later ∂/∂x1
        be.linear_dx(&dgu, &a.w_gu, &mut dx, lin(hs, 2 * f), false)?;
        let mut dw_gu = be.take(2 * f * hs, Dt::F32)?;
        be.linear_dw(&dgu, &a.x2, &mut dw_gu, lin(hs, 2 * f), false)?; // (2F, H)
        be.give([dact, dgu]);
        let dw_post = rms_norm_backward(be, &a.h_mid, a.w_post.get(), &dx, &a.r2, &mut dnorm)?;
        be.add(&mut dh, &dnorm)?; // dh is now ∂/∂h_mid
        // h_mid = h_in + s · o_proj(o_rows)
        be.scaled(&dh, res, &mut tmp)?;
        let mut do_rows = be.take(n * nh * hd, cd)?;
        be.linear_dx(&tmp, a.w_o.get(), &mut do_rows, lin(nh * hd, hs), false)?; // (N, nh·hd)
        let mut dw_o = be.zeros(hs * nh * hd, Dt::F32)?;
        be.linear_dw(&tmp, &a.o_rows, &mut dw_o, lin(nh * hd, hs), false)?; // (H, nh·hd)
        let mut dout = be.take(n * nh * hd, cd)?;
        be.split_heads(&do_rows, o_cols, &mut dout)?; // (B, nh, T, hd)
        let (mut dq, mut dk, mut dv) = (
            be.take(a.q.len(), cd)?,
            be.take(a.k.len(), cd)?,
            be.take(a.v.len(), cd)?,
        );
        let saved = AttnSaved {
            q: &a.q,
            k: &a.k,
            v: &a.v,
            out: &a.o,
            lse: &a.lse,
            dout: &dout,
        };
        be.attention_bwd(saved, shape, scale, [&mut dq, &mut dk, &mut dv])?;
        // Undo RoPE, then back to token rows: dq, dk, dv as column blocks of (N, width).
        let mut dqkv = be.take(n * width, cd)?;
        be.rope(&dq, cos.get(), sin.get(), t, hd, true, &mut dout)?;
        be.merge_heads(&dout, q_cols, &mut dqkv)?;
        let mut dk_heads = be.take(n * kv * hd, cd)?;
        be.rope(&dk, cos.get(), sin.get(), t, hd, true, &mut dk_heads)?;
        be.merge_heads(&dk_heads, k_cols, &mut dqkv)?;
        be.merge_heads(&dv, v_cols, &mut dqkv)?;
        be.linear_dx(&dqkv, &a.w_qkv, &mut dx, lin(hs, width), false)?; // (N, H)
        let mut dw_qkv = be.take(width * hs, Dt::F32)?;
        be.linear_dw(&dqkv, &a.x1, &mut dw_qkv, lin(hs, width), false)?; // (width, H)
        let dw_in = rms_norm_backward(be, &a.h_in, a.w_in.get(), &dx, &a.r1, &mut dnorm)?;
        be.add(&mut dh, &dnorm)?; // dh is now ∂/∂h_in
        be.give([do_rows, dout, dx, dqkv, dk_heads, dq, dk, dv]);
        be.give(a.into_bufs());
        let [dw_q, dw_k, dw_v]: [Be::Buf; 3] =
            unstack(be, &dw_qkv, &[lw[1].len(), lw[2].len(), lw[3].len()])?
                .try_into()
                .map_err(|_| Error::Config("q/k/v gradients: three parts expected".into()))?;
        let [dw_gate, dw_up]: [Be::Buf; 2] = unstack(be, &dw_gu, &[lw[6].len(), lw[7].len()])?
            .try_into()
            .map_err(|_| Error::Config("gate/up gradients: two parts expected".into()))?;
        be.give([dw_qkv, dw_gu]);
        let base = 1 + 9 * l;
        for (i, g) in [
            dw_in, dw_q, dw_k, dw_v, dw_o, dw_post, dw_gate, dw_up, dw_down,
        ]
        .into_iter()
        .enumerate()
        {
            grads[base + i] = Some(g);
        }
    }
    // h₀ = embed(x) · scale_emb: scatter the rows back, each row's tokens in token order.
    be.embed_bwd(&dh, &tokens, scale_emb, &mut d_emb)?;
    grads[0] = Some(d_emb);
    let value = be.download_f32(&loss)?[0];
    finish(be, vec![dh, tmp, dnorm, loss], vec![emb, w_norm, cos, sin]);
    let grads = grads
        .into_iter()
        .map(|g| g.ok_or_else(|| Error::Config("a parameter received no gradient".into())))
        .collect::<Result<_>>()?;
    Ok((value, Some(grads)))
}
