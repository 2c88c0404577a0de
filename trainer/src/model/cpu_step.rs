//! The MiniCPM loss and its gradients on CPU in f32 without candle's autograd (llm.c style):
//! the forward pass keeps the activations its backward needs, and the backward is written
//! out by hand over the kernels' slice forms (`wsdscope_kernels::slices`) and one GEMM.
//!
//! It computes the same function as [`MiniCpm::logits`] with the fused ops (a test compares
//! loss and every gradient with the reference ops), but a candle graph allocates every
//! node's output and, in `backward()`, zero-fills and adds a gradient buffer per node input;
//! here each buffer is written once and the linear layers' input gradients are accumulated
//! by the GEMM itself. [`MiniCpm::loss_and_grads`] takes this path whenever it applies
//! ([`applies`]); CUDA, bf16, f64 and the reference ops go through the graph.
//!
//! Layouts: token rows are (N = B·T, ·) row-major; heads are (B, h, T, hd) for RoPE and
//! attention. Per layer the backward keeps its input h, both normed inputs, q/k/v/o in head
//! layout, o merged, the attention lse, the [gate | up] rows and silu(gate)·up, and the
//! stacked q/k/v and gate/up weights its GEMMs ran on.
//!
//! Buffers come from the model's [`Scratch`] and go back to it when the step is done, so a
//! step reuses the previous step's memory instead of asking the allocator for fresh zeroed
//! pages (zero-filling alone was ~5–10% of a step). Every buffer taken is fully overwritten.

use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};
use rayon::prelude::*;
use wsdscope_kernels::slices::{self, AttnSaved, AttnShape, Mat};

use super::{MiniCpm, Ops};
use crate::error::{Error, Result};

/// Whether [`run`] can run `m`: fused ops, CPU, f32 parameters computed in f32.
pub(super) fn applies(m: &MiniCpm) -> bool {
    m.ops == Ops::Fused && m.device.is_cpu() && m.dtype == DType::F32 && m.compute == DType::F32
}

/// The elements of a contiguous f32 CPU tensor behind a read guard.
fn f32s<'a>(s: &'a Storage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let range = l.contiguous_offsets();
    match (s, range) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(&v[a..b]),
        _ => Err(Error::Config(format!(
            "the CPU step needs {what} as a contiguous f32 CPU tensor"
        ))),
    }
}

/// Reusable f32 buffers of a model's CPU steps.
#[derive(Default)]
pub(crate) struct Scratch(Mutex<Vec<Vec<f32>>>);

impl Scratch {
    /// A buffer of `len` elements whose contents are unspecified (stale): callers overwrite
    /// every element.
    fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match free.iter().position(|b| b.len() == len) {
            Some(i) => free.swap_remove(i),
            None => vec![0.0; len],
        }
    }

    /// Returns buffers for later steps.
    fn give(&self, bufs: impl IntoIterator<Item = Vec<f32>>) {
        let mut free = self.0.lock().unwrap_or_else(|e| e.into_inner());
        free.extend(bufs.into_iter().filter(|b| !b.is_empty()));
    }

    /// Bytes of the buffers the pool holds (between steps: every buffer it ever handed out).
    pub(super) fn bytes(&self) -> u64 {
        let free = self.0.lock().unwrap_or_else(|e| e.into_inner());
        free.iter().map(|b| 4 * b.len() as u64).sum()
    }
}

/// y (N, out) = x (N, in) · wᵀ for w (out, in).
fn linear(sc: &Scratch, x: &[f32], w: &[f32], n: usize, inp: usize, out: usize) -> Vec<f32> {
    let mut y = sc.take(n * out);
    slices::matmul(&mut y, Mat::new(x, n, inp), Mat::t(w, out, inp), false);
    y
}

/// Backward of [`linear`] for upstream dy (N, out): dx (N, in) = dy · w, added to `dx`'s
/// contents with `acc`; returns dw (out, in) = dyᵀ · x.
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    n: usize,
    inp: usize,
    out: usize,
    dx: &mut [f32],
    acc: bool,
) -> Vec<f32> {
    slices::matmul(dx, Mat::new(dy, n, out), Mat::new(w, out, inp), acc);
    let mut dw = vec![0f32; out * inp];
    slices::matmul(&mut dw, Mat::t(dy, n, out), Mat::new(x, n, inp), false);
    dw
}

/// Where n heads of hd sit in token rows: columns `col0..col0 + n·hd` of rows `width` wide.
#[derive(Clone, Copy)]
struct Cols {
    width: usize,
    col0: usize,
    n: usize,
}

/// Columns `c` of token rows x (N, width) → (B, n, T, hd) heads, into `y`.
fn split_heads(x: &[f32], c: Cols, t: usize, hd: usize, y: &mut [f32]) {
    y.par_chunks_mut(c.n * t * hd)
        .zip(x.par_chunks(t * c.width))
        .for_each(|(yb, xb)| {
            for (tt, row) in xb.chunks_exact(c.width).enumerate() {
                let heads = &row[c.col0..c.col0 + c.n * hd];
                for (h, head) in heads.chunks_exact(hd).enumerate() {
                    yb[(h * t + tt) * hd..(h * t + tt + 1) * hd].copy_from_slice(head);
                }
            }
        });
}

/// (B, n, T, hd) heads → columns `c` of token rows y (N, width); other columns untouched.
fn merge_heads(x: &[f32], c: Cols, t: usize, hd: usize, y: &mut [f32]) {
    y.par_chunks_mut(t * c.width)
        .zip(x.par_chunks(c.n * t * hd))
        .for_each(|(yb, xb)| {
            for (tt, row) in yb.chunks_exact_mut(c.width).enumerate() {
                let heads = &mut row[c.col0..c.col0 + c.n * hd];
                for (h, head) in heads.chunks_exact_mut(hd).enumerate() {
                    head.copy_from_slice(&xb[(h * t + tt) * hd..(h * t + tt + 1) * hd]);
                }
            }
        });
}

/// The weights `ws` (each (rows, H)) stacked into one (Σ rows, H) matrix, so their three
/// (or two) projections of the same input run as one GEMM.
fn stack(sc: &Scratch, ws: &[&[f32]]) -> Vec<f32> {
    let mut out = sc.take(ws.iter().map(|w| w.len()).sum());
    let mut at = 0;
    for w in ws {
        out[at..at + w.len()].copy_from_slice(w);
        at += w.len();
    }
    out
}

/// A stacked weight's gradient split back into its parts' (sizes `lens`).
fn unstack(g: &[f32], lens: &[usize]) -> Vec<Vec<f32>> {
    let mut at = 0;
    lens.iter()
        .map(|&l| {
            at += l;
            g[at - l..at].to_vec()
        })
        .collect()
}

/// Elements per rayon task of the element-wise loops below.
const CHUNK: usize = 1 << 14;

/// y = a + s·b, elementwise.
fn add_scaled(a: &[f32], b: &[f32], s: f32, y: &mut [f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(y, (a, b))| {
            for ((y, &x), &z) in y.iter_mut().zip(a).zip(b) {
                *y = x + s * z;
            }
        });
}

/// y = s·x, elementwise.
fn scaled(x: &[f32], s: f32, y: &mut [f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y = s * x));
}

/// x *= s, elementwise.
fn scale_in_place(x: &mut [f32], s: f32) {
    x.par_chunks_mut(CHUNK)
        .for_each(|x| x.iter_mut().for_each(|x| *x *= s));
}

/// a += b, elementwise.
fn add_into(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, &y)| *x += y));
}

/// What the backward pass needs of one decoder block's forward.
struct BlockActs {
    h_in: Vec<f32>,   // (N, H) the block's input
    x1: Vec<f32>,     // (N, H) RMSNorm(h_in)
    w_qkv: Vec<f32>,  // ((nh + 2·kv)·hd, H) q, k, v weights stacked
    q: Vec<f32>,      // (B, nh, T, hd) after RoPE
    k: Vec<f32>,      // (B, kv, T, hd) after RoPE
    v: Vec<f32>,      // (B, kv, T, hd)
    o: Vec<f32>,      // (B, nh, T, hd) attention output
    lse: Vec<f32>,    // (B, nh, T)
    o_rows: Vec<f32>, // (N, nh·hd) o with heads merged
    h_mid: Vec<f32>,  // (N, H) after the attention residual
    x2: Vec<f32>,     // (N, H) RMSNorm(h_mid)
    w_gu: Vec<f32>,   // (2F, H) gate and up weights stacked
    gu: Vec<f32>,     // (N, 2F) rows [gate(x2) | up(x2)]
    act: Vec<f32>,    // (N, F) silu(gate) ⊙ up
}

impl BlockActs {
    fn into_bufs(self) -> [Vec<f32>; 14] {
        [
            self.h_in,
            self.x1,
            self.w_qkv,
            self.q,
            self.k,
            self.v,
            self.o,
            self.lse,
            self.o_rows,
            self.h_mid,
            self.x2,
            self.w_gu,
            self.gu,
            self.act,
        ]
    }
}

/// The mean next-token loss of `inputs` → `targets` (both (B, T) u32) and, with `grad`,
/// every parameter's gradient (the model's `named_vars` are the keys).
pub(super) fn run(
    m: &MiniCpm,
    inputs: &Tensor,
    targets: &Tensor,
    grad: bool,
) -> Result<(f32, Option<GradStore>)> {
    let cfg = &m.cfg;
    let sc = &m.scratch;
    let (b, t) = inputs.dims2()?;
    let ids: Vec<u32> = inputs.flatten_all()?.to_vec1()?;
    let tgt: Vec<u32> = targets.flatten_all()?.to_vec1()?;
    if tgt.len() != ids.len() {
        return Err(Error::Config(format!(
            "targets have {} tokens, inputs {}",
            tgt.len(),
            ids.len()
        )));
    }
    let (hs, f, v) = (cfg.hidden, cfg.ffn, cfg.vocab);
    let (nh, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim());
    let n = b * t;
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
    let q_cols = Cols {
        width,
        col0: 0,
        n: nh,
    };
    let k_cols = Cols {
        width,
        col0: nh * hd,
        n: kv,
    };
    let v_cols = Cols {
        width,
        col0: (nh + kv) * hd,
        n: kv,
    };
    let o_cols = Cols {
        width: nh * hd,
        col0: 0,
        n: nh,
    };

    // Read access to every parameter for the whole step (the optimiser writes after it).
    let guards: Vec<_> = m
        .named
        .iter()
        .map(|(_, p)| p.storage_and_layout())
        .collect();
    let w: Vec<&[f32]> = guards
        .iter()
        .zip(&m.named)
        .map(|((s, l), (name, _))| f32s(s, l, name))
        .collect::<Result<_>>()?;
    let (cos_s, cos_l) = m.rope_cos.storage_and_layout();
    let (sin_s, sin_l) = m.rope_sin.storage_and_layout();
    let (cos, sin) = (f32s(&cos_s, cos_l, "cos")?, f32s(&sin_s, sin_l, "sin")?);
    let emb = w[0]; // (V, H)
    let w_norm = w[w.len() - 1]; // (H)

    // h = embed(x) · scale_emb                                      (N, H)
    let mut h = sc.take(n * hs);
    for (row, &id) in h.chunks_exact_mut(hs).zip(&ids) {
        let id = id as usize;
        if id >= v {
            sc.give([h]);
            return Err(Error::Config(format!(
                "token id {id} is outside the vocabulary of {v}"
            )));
        }
        for (y, &e) in row.iter_mut().zip(&emb[id * hs..(id + 1) * hs]) {
            *y = e * scale_emb;
        }
    }

    let mut acts = Vec::with_capacity(if grad { cfg.layers } else { 0 });
    for l in 0..cfg.layers {
        let lw = &w[1 + 9 * l..10 + 9 * l];
        // h += s · Attn(RMSNorm(h))
        let mut x1 = sc.take(n * hs);
        slices::rms_norm_forward(&h, lw[0], eps, &mut x1); // (N, H)
        let w_qkv = stack(sc, &lw[1..4]); // ((nh + 2·kv)·hd, H)
        let qkv = linear(sc, &x1, &w_qkv, n, hs, width); // (N, (nh + 2·kv)·hd)
        let heads = |c: Cols, rope: bool| {
            let mut y = sc.take(n * c.n * hd);
            split_heads(&qkv, c, t, hd, &mut y); // (B, c.n, T, hd)
            if rope {
                let mut r = sc.take(y.len());
                slices::rope_forward(&y, cos, sin, t, hd, &mut r);
                sc.give([y]);
                r
            } else {
                y
            }
        };
        let q = heads(q_cols, true); // (B, nh, T, hd)
        let k = heads(k_cols, true); // (B, kv, T, hd)
        let vv = heads(v_cols, false); // (B, kv, T, hd)
        sc.give([qkv]);
        let (mut o, mut lse) = (sc.take(q.len()), sc.take(b * nh * t));
        slices::attention_forward(&q, &k, &vv, shape, scale, &mut o, &mut lse); // (B, nh, T, hd)
        let mut o_rows = sc.take(n * nh * hd);
        merge_heads(&o, o_cols, t, hd, &mut o_rows); // (N, nh·hd)
        let a = linear(sc, &o_rows, lw[4], n, nh * hd, hs); // (N, H)
        let mut h_mid = sc.take(n * hs);
        add_scaled(&h, &a, res, &mut h_mid);
        sc.give([a]);
        // h += s · down(silu(gate(x)) ⊙ up(x)),  x = RMSNorm(h)
        let mut x2 = sc.take(n * hs);
        slices::rms_norm_forward(&h_mid, lw[5], eps, &mut x2); // (N, H)
        let w_gu = stack(sc, &lw[6..8]); // (2F, H)
        let gu = linear(sc, &x2, &w_gu, n, hs, 2 * f); // (N, 2F): [gate(x) | up(x)]
        let mut act = sc.take(n * f);
        slices::swiglu_paired_forward(&gu, f, &mut act); // (N, F)
        let mlp = linear(sc, &act, lw[8], n, f, hs); // (N, H)
        let mut h_out = sc.take(n * hs);
        add_scaled(&h_mid, &mlp, res, &mut h_out);
        sc.give([mlp]);
        let block = BlockActs {
            h_in: std::mem::replace(&mut h, h_out),
            x1,
            w_qkv,
            q,
            k,
            v: vv,
            o,
            lse,
            o_rows,
            h_mid,
            x2,
            w_gu,
            gu,
            act,
        };
        if grad {
            acts.push(block);
        } else {
            sc.give(block.into_bufs());
        }
    }
    // logits = RMSNorm(h) / width_mult · embedᵀ                        (N, V)
    let mut xf = sc.take(n * hs);
    slices::rms_norm_forward(&h, w_norm, eps, &mut xf); // (N, H)
    scale_in_place(&mut xf, inv_wm);
    let mut logits = linear(sc, &xf, emb, n, hs, v); // (N, V)
    let (loss, lse) = match slices::cross_entropy_forward(&logits, &tgt, v) {
        Ok(r) => r,
        Err(e) => {
            sc.give([logits, xf, h]);
            return Err(e.into());
        }
    };
    if !grad {
        sc.give([logits, xf, h]);
        return Ok((loss, None));
    }

    // Backward, in reverse order of the forward above.
    let mut grads: Vec<Vec<f32>> = vec![Vec::new(); w.len()];
    slices::cross_entropy_backward(&mut logits, &tgt, &lse, v, 1.0); // logits → dlogits (N, V)
    let mut dxf = sc.take(n * hs);
    // The tied head's share of d embed; the lookup's share is added at the end.
    let mut d_emb = linear_backward(&logits, &xf, emb, n, hs, v, &mut dxf, false); // (V, H)
    scale_in_place(&mut dxf, inv_wm);
    let mut dh = sc.take(n * hs);
    grads[w.len() - 1] = slices::rms_norm_backward(&h, w_norm, &dxf, eps, &mut dh); // (N, H)
    sc.give([logits, xf, h, dxf]);

    let mut tmp = sc.take(n * hs); // (N, H) scratch for scaled upstream grads
    let mut dnorm = sc.take(n * hs); // (N, H) a norm's input gradient
    for l in (0..cfg.layers).rev() {
        let a = acts.pop().expect("one set of activations per block");
        let lw = &w[1 + 9 * l..10 + 9 * l];
        // h_out = h_mid + s · down(act)
        scaled(&dh, res, &mut tmp);
        let mut dact = sc.take(n * f);
        let dw_down = linear_backward(&tmp, &a.act, lw[8], n, f, hs, &mut dact, false);
        let mut dgu = sc.take(2 * n * f);
        slices::swiglu_paired_backward(&a.gu, &dact, f, &mut dgu); // (N, 2F) [dgate | dup]
        let mut dx = sc.take(n * hs); // (N, H): ∂/∂x2, later ∂/∂x1
        let dw_gu = linear_backward(&dgu, &a.x2, &a.w_gu, n, hs, 2 * f, &mut dx, false);
        sc.give([dact, dgu]);
        let dw_post = slices::rms_norm_backward(&a.h_mid, lw[5], &dx, eps, &mut dnorm);
        add_into(&mut dh, &dnorm); // dh is now ∂/∂h_mid
        // h_mid = h_in + s · o_proj(o_rows)
        scaled(&dh, res, &mut tmp);
        let mut do_rows = sc.take(n * nh * hd);
        let dw_o = linear_backward(&tmp, &a.o_rows, lw[4], n, nh * hd, hs, &mut do_rows, false);
        let mut dout = sc.take(n * nh * hd);
        split_heads(&do_rows, o_cols, t, hd, &mut dout); // (B, nh, T, hd)
        let (mut dq, mut dk, mut dv) = (sc.take(a.q.len()), sc.take(a.k.len()), sc.take(a.v.len()));
        let saved = AttnSaved {
            q: &a.q,
            k: &a.k,
            v: &a.v,
            out: &a.o,
            lse: &a.lse,
            dout: &dout,
        };
        slices::attention_backward(saved, shape, scale, &mut dq, &mut dk, &mut dv);
        // Undo RoPE, then back to token rows: dq, dk, dv as column blocks of (N, width).
        let mut dqkv = sc.take(n * width);
        slices::rope_backward(&dq, cos, sin, t, hd, &mut dout);
        merge_heads(&dout, q_cols, t, hd, &mut dqkv);
        let mut dk_heads = sc.take(n * kv * hd);
        slices::rope_backward(&dk, cos, sin, t, hd, &mut dk_heads);
        merge_heads(&dk_heads, k_cols, t, hd, &mut dqkv);
        merge_heads(&dv, v_cols, t, hd, &mut dqkv);
        let dw_qkv = linear_backward(&dqkv, &a.x1, &a.w_qkv, n, hs, width, &mut dx, false);
        let dw_in = slices::rms_norm_backward(&a.h_in, lw[0], &dx, eps, &mut dnorm);
        add_into(&mut dh, &dnorm); // dh is now ∂/∂h_in
        sc.give([do_rows, dout, dx, dqkv, dk_heads, dq, dk, dv]);
        sc.give(a.into_bufs());
        let [dw_q, dw_k, dw_v]: [Vec<f32>; 3] =
            unstack(&dw_qkv, &[lw[1].len(), lw[2].len(), lw[3].len()])
                .try_into()
                .expect("three parts");
        let [dw_gate, dw_up]: [Vec<f32>; 2] = unstack(&dw_gu, &[lw[6].len(), lw[7].len()])
            .try_into()
            .expect("two parts");
        let base = 1 + 9 * l;
        for (i, g) in [
            dw_in, dw_q, dw_k, dw_v, dw_o, dw_post, dw_gate, dw_up, dw_down,
        ]
        .into_iter()
        .enumerate()
        {
            grads[base + i] = g;
        }
    }
    // h₀ = embed(x) · scale_emb: scatter the rows back, in token order.
    for (row, &id) in dh.chunks_exact(hs).zip(&ids) {
        let id = id as usize;
        for (d, &g) in d_emb[id * hs..(id + 1) * hs].iter_mut().zip(row) {
            *d += g * scale_emb;
        }
    }
    grads[0] = d_emb;
    sc.give([dh, tmp, dnorm]);

    drop(w);
    drop(guards);
    let mut store = GradStore::default();
    for ((_, p), g) in m.named.iter().zip(grads) {
        store.insert(p.as_tensor(), Tensor::from_vec(g, p.dims(), &Device::Cpu)?);
    }
    Ok((loss, Some(store)))
}
