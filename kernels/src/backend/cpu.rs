//! The CPU backend: the f32 kernels of [`crate::slices`] and its GEMM, on rayon's current
//! pool. This is the CPU training path: every op is the slice function the hand-written
//! step called before it had a backend, with the same arithmetic.
//!
//! Buffers are host vectors; the model's parameters are read in place as borrowed slices
//! ([`CpuBuf::Ref`], read-only), so a step copies no weights it does not stack. The pool
//! ([`CpuPool`]) keeps every buffer given back for later steps: a step then reuses the
//! previous step's memory instead of asking the allocator for fresh zeroed pages. Only f32 and
//! u32 buffers exist here (the CPU step computes in f32).

use std::sync::Mutex;

use rayon::prelude::*;

use super::{
    AttnSaved, AttnShape, Backend, Buffer, Dt, HeadCols, Linear, Tokens, buf_err, need, need_range,
};
use crate::error::Error;
use crate::slices::{self, Mat};

/// A CPU buffer: owned f32 or u32 elements, or a borrowed read-only f32 slice (a parameter).
#[derive(Debug)]
pub enum CpuBuf<'a> {
    F32(Vec<f32>),
    U32(Vec<u32>),
    Ref(&'a [f32]),
}

impl Buffer for CpuBuf<'_> {
    fn len(&self) -> usize {
        match self {
            CpuBuf::F32(v) => v.len(),
            CpuBuf::U32(v) => v.len(),
            CpuBuf::Ref(s) => s.len(),
        }
    }

    fn dt(&self) -> Dt {
        match self {
            CpuBuf::U32(_) => Dt::U32,
            _ => Dt::F32,
        }
    }
}

impl<'a> CpuBuf<'a> {
    /// The elements of a float buffer.
    pub fn f32s(&self) -> Result<&[f32], Error> {
        match self {
            CpuBuf::F32(v) => Ok(v),
            CpuBuf::Ref(s) => Ok(s),
            CpuBuf::U32(_) => Err(buf_err("cpu", "a u32 buffer read as f32")),
        }
    }

    fn f32s_mut(&mut self) -> Result<&mut [f32], Error> {
        match self {
            CpuBuf::F32(v) => Ok(v),
            CpuBuf::Ref(_) => Err(buf_err("cpu", "a borrowed (read-only) buffer written")),
            CpuBuf::U32(_) => Err(buf_err("cpu", "a u32 buffer written as f32")),
        }
    }

    fn u32s(&self) -> Result<&[u32], Error> {
        match self {
            CpuBuf::U32(v) => Ok(v),
            _ => Err(buf_err("cpu", "an f32 buffer read as u32")),
        }
    }

    /// The owned f32 elements (a gradient leaving the step), or `None` for another kind.
    pub fn into_f32_vec(self) -> Option<Vec<f32>> {
        match self {
            CpuBuf::F32(v) => Some(v),
            _ => None,
        }
    }
}

/// The f32 buffers given back to a CPU backend, kept for later takes (of the same length).
#[derive(Default)]
pub struct CpuPool(Mutex<Vec<Vec<f32>>>);

impl CpuPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<f32>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the pool holds (between steps: every buffer a step took).
    pub fn bytes(&self) -> u64 {
        self.lock().iter().map(|b| 4 * b.len() as u64).sum()
    }
}

/// The CPU backend over a pool (usually a model's, kept across steps); buffers may borrow
/// for `'a`.
pub struct Cpu<'a> {
    pool: &'a CpuPool,
}

impl<'a> Cpu<'a> {
    pub fn new(pool: &'a CpuPool) -> Self {
        Self { pool }
    }

    /// A read-only buffer over `xs` (a parameter or a table), without a copy.
    pub fn borrow(xs: &'a [f32]) -> CpuBuf<'a> {
        CpuBuf::Ref(xs)
    }
}

/// Elements per rayon task of the element-wise loops below.
const CHUNK: usize = 1 << 14;

fn check_linear(op: &'static str, [a, b, c]: [(&str, &CpuBuf<'_>, usize); 3]) -> Result<(), Error> {
    for (what, buf, len) in [a, b, c] {
        need(op, what, buf, len, Dt::F32)?;
    }
    Ok(())
}

impl<'a> Backend for Cpu<'a> {
    type Buf = CpuBuf<'a>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn take(&self, len: usize, dt: Dt) -> Result<CpuBuf<'a>, Error> {
        match dt {
            Dt::F32 => {
                let mut free = self.pool.lock();
                Ok(CpuBuf::F32(
                    match free.iter().position(|b| b.len() == len) {
                        Some(i) => free.swap_remove(i),
                        None => vec![0.0; len],
                    },
                ))
            }
            // Token ids are uploaded, never taken; a u32 take is a fresh buffer.
            Dt::U32 => Ok(CpuBuf::U32(vec![0; len])),
            Dt::Bf16 => Err(buf_err("cpu", "the CPU backend computes in f32, not bf16")),
        }
    }

    fn give(&self, bufs: impl IntoIterator<Item = CpuBuf<'a>>) {
        let mut free = self.pool.lock();
        free.extend(bufs.into_iter().filter_map(|b| match b {
            CpuBuf::F32(v) if !v.is_empty() => Some(v),
            _ => None,
        }));
    }

    fn zeros(&self, len: usize, dt: Dt) -> Result<CpuBuf<'a>, Error> {
        match dt {
            Dt::F32 => Ok(CpuBuf::F32(vec![0.0; len])),
            Dt::U32 => Ok(CpuBuf::U32(vec![0; len])),
            Dt::Bf16 => Err(buf_err("cpu", "the CPU backend computes in f32, not bf16")),
        }
    }

    fn upload_f32(&self, xs: &[f32], dt: Dt) -> Result<CpuBuf<'a>, Error> {
        match dt {
            Dt::F32 => Ok(CpuBuf::F32(xs.to_vec())),
            _ => Err(buf_err(
                "cpu",
                format!("cannot hold f32 data as {}", dt.name()),
            )),
        }
    }

    fn upload_u32(&self, xs: &[u32]) -> Result<CpuBuf<'a>, Error> {
        Ok(CpuBuf::U32(xs.to_vec()))
    }

    fn download_f32(&self, b: &CpuBuf<'a>) -> Result<Vec<f32>, Error> {
        Ok(b.f32s()?.to_vec())
    }

    fn linear(
        &self,
        x: &CpuBuf<'a>,
        w: &CpuBuf<'a>,
        y: &mut CpuBuf<'a>,
        s: Linear,
        acc: bool,
    ) -> Result<(), Error> {
        check_linear(
            "linear",
            [
                ("x", x, s.n * s.inp),
                ("w", w, s.out * s.inp),
                ("y", y, s.n * s.out),
            ],
        )?;
        let (x, w) = (x.f32s()?, w.f32s()?);
        slices::matmul(
            y.f32s_mut()?,
            Mat::new(x, s.n, s.inp),
            Mat::t(w, s.out, s.inp),
            acc,
        );
        Ok(())
    }

    fn linear_dx(
        &self,
        dy: &CpuBuf<'a>,
        w: &CpuBuf<'a>,
        dx: &mut CpuBuf<'a>,
        s: Linear,
        acc: bool,
    ) -> Result<(), Error> {
        check_linear(
            "linear_dx",
            [
                ("dy", dy, s.n * s.out),
                ("w", w, s.out * s.inp),
                ("dx", dx, s.n * s.inp),
            ],
        )?;
        let (dy, w) = (dy.f32s()?, w.f32s()?);
        slices::matmul(
            dx.f32s_mut()?,
            Mat::new(dy, s.n, s.out),
            Mat::new(w, s.out, s.inp),
            acc,
        );
        Ok(())
    }

    fn linear_dw(
        &self,
        dy: &CpuBuf<'a>,
        x: &CpuBuf<'a>,
        dw: &mut CpuBuf<'a>,
        s: Linear,
        acc: bool,
    ) -> Result<(), Error> {
        check_linear(
            "linear_dw",
            [
                ("dy", dy, s.n * s.out),
                ("x", x, s.n * s.inp),
                ("dw", dw, s.out * s.inp),
            ],
        )?;
        let (dy, x) = (dy.f32s()?, x.f32s()?);
        slices::matmul(
            dw.f32s_mut()?,
            Mat::t(dy, s.n, s.out),
            Mat::new(x, s.n, s.inp),
            acc,
        );
        Ok(())
    }

    fn rms_norm_fwd(
        &self,
        x: &CpuBuf<'a>,
        w: &CpuBuf<'a>,
        eps: f64,
        y: &mut CpuBuf<'a>,
        rstd: &mut CpuBuf<'a>,
    ) -> Result<(), Error> {
        let (x, w) = (x.f32s()?, w.f32s()?);
        rows_of("rms_norm", x.len(), w.len(), rstd.len())?;
        slices::rms_norm_forward_saving(x, w, eps, y.f32s_mut()?, rstd.f32s_mut()?);
        Ok(())
    }

    fn rms_norm_bwd(
        &self,
        x: &CpuBuf<'a>,
        w: &CpuBuf<'a>,
        dy: &CpuBuf<'a>,
        rstd: &CpuBuf<'a>,
        dx: &mut CpuBuf<'a>,
        dw: &mut CpuBuf<'a>,
    ) -> Result<(), Error> {
        let (x, w, dy, rstd) = (x.f32s()?, w.f32s()?, dy.f32s()?, rstd.f32s()?);
        rows_of("rms_norm", x.len(), w.len(), rstd.len())?;
        need("rms_norm", "dw", dw, w.len(), Dt::F32)?;
        let g = slices::rms_norm_backward_saved(x, w, dy, rstd, dx.f32s_mut()?);
        dw.f32s_mut()?.copy_from_slice(&g);
        Ok(())
    }

    fn rope(
        &self,
        x: &CpuBuf<'a>,
        cos: &CpuBuf<'a>,
        sin: &CpuBuf<'a>,
        t: usize,
        d: usize,
        inverse: bool,
        y: &mut CpuBuf<'a>,
    ) -> Result<(), Error> {
        let (x, cos, sin) = (x.f32s()?, cos.f32s()?, sin.f32s()?);
        let y = y.f32s_mut()?;
        if inverse {
            slices::rope_backward(x, cos, sin, t, d, y);
        } else {
            slices::rope_forward(x, cos, sin, t, d, y);
        }
        Ok(())
    }

    fn attention_fwd(
        &self,
        q: &CpuBuf<'a>,
        k: &CpuBuf<'a>,
        v: &CpuBuf<'a>,
        s: AttnShape,
        scale: f64,
        out: &mut CpuBuf<'a>,
        lse: &mut CpuBuf<'a>,
    ) -> Result<(), Error> {
        slices::attention_forward(
            q.f32s()?,
            k.f32s()?,
            v.f32s()?,
            s,
            scale,
            out.f32s_mut()?,
            lse.f32s_mut()?,
        );
        Ok(())
    }

    fn attention_bwd(
        &self,
        x: AttnSaved<'_, CpuBuf<'a>>,
        s: AttnShape,
        scale: f64,
        [dq, dk, dv]: [&mut CpuBuf<'a>; 3],
    ) -> Result<(), Error> {
        let saved = slices::AttnSaved {
            q: x.q.f32s()?,
            k: x.k.f32s()?,
            v: x.v.f32s()?,
            out: x.out.f32s()?,
            lse: x.lse.f32s()?,
            dout: x.dout.f32s()?,
        };
        slices::attention_backward(
            saved,
            s,
            scale,
            dq.f32s_mut()?,
            dk.f32s_mut()?,
            dv.f32s_mut()?,
        );
        Ok(())
    }

    fn swiglu_fwd(&self, gu: &CpuBuf<'a>, f: usize, y: &mut CpuBuf<'a>) -> Result<(), Error> {
        slices::swiglu_paired_forward(gu.f32s()?, f, y.f32s_mut()?);
        Ok(())
    }

    fn swiglu_bwd(
        &self,
        gu: &CpuBuf<'a>,
        dy: &CpuBuf<'a>,
        f: usize,
        dgu: &mut CpuBuf<'a>,
    ) -> Result<(), Error> {
        slices::swiglu_paired_backward(gu.f32s()?, dy.f32s()?, f, dgu.f32s_mut()?);
        Ok(())
    }

    fn cross_entropy_fwd(
        &self,
        logits: &CpuBuf<'a>,
        targets: &CpuBuf<'a>,
        lse: &mut CpuBuf<'a>,
        loss: &mut CpuBuf<'a>,
    ) -> Result<(), Error> {
        const OP: &str = "cross_entropy";
        let (x, t) = (logits.f32s()?, targets.u32s()?);
        need(OP, "lse", lse, t.len(), Dt::F32)?;
        need(OP, "loss", loss, 1, Dt::F32)?;
        if t.is_empty() || !x.len().is_multiple_of(t.len()) {
            return Err(buf_err(
                OP,
                format!("{} logits for {} targets", x.len(), t.len()),
            ));
        }
        let (mean, l) = slices::cross_entropy_forward(x, t, x.len() / t.len())
            .map_err(|e| buf_err(OP, e.to_string()))?;
        lse.f32s_mut()?.copy_from_slice(&l);
        loss.f32s_mut()?[0] = mean;
        Ok(())
    }

    fn cross_entropy_bwd(
        &self,
        logits: &mut CpuBuf<'a>,
        targets: &CpuBuf<'a>,
        lse: &CpuBuf<'a>,
        g: f32,
    ) -> Result<(), Error> {
        let (t, lse) = (targets.u32s()?, lse.f32s()?);
        let x = logits.f32s_mut()?;
        if t.is_empty() || !x.len().is_multiple_of(t.len()) {
            return Err(buf_err(
                "cross_entropy",
                format!("{} logits for {} targets", x.len(), t.len()),
            ));
        }
        let v = x.len() / t.len();
        slices::cross_entropy_backward(x, t, lse, v, g as f64);
        Ok(())
    }

    fn embed(
        &self,
        emb: &CpuBuf<'a>,
        tokens: &Tokens<CpuBuf<'a>>,
        scale: f32,
        h: &mut CpuBuf<'a>,
    ) -> Result<(), Error> {
        let (emb, ids) = (emb.f32s()?, tokens.ids.u32s()?);
        let h = h.f32s_mut()?;
        let hd = h.len() / ids.len().max(1);
        if hd * ids.len() != h.len() || hd == 0 || !emb.len().is_multiple_of(hd) {
            return Err(buf_err(
                "embed",
                format!(
                    "h of {} for {} tokens over an embedding of {}",
                    h.len(),
                    ids.len(),
                    emb.len()
                ),
            ));
        }
        let v = emb.len() / hd;
        h.par_chunks_mut(hd)
            .zip(ids.par_iter())
            .for_each(
                |(row, &id)| match emb.get(id as usize * hd..(id as usize + 1) * hd) {
                    Some(e) if (id as usize) < v => {
                        for (y, &x) in row.iter_mut().zip(e) {
                            *y = x * scale;
                        }
                    }
                    _ => row.fill(f32::NAN),
                },
            );
        Ok(())
    }

    fn embed_bwd(
        &self,
        dh: &CpuBuf<'a>,
        tokens: &Tokens<CpuBuf<'a>>,
        scale: f32,
        demb: &mut CpuBuf<'a>,
    ) -> Result<(), Error> {
        let dh = dh.f32s()?;
        let (uniq, starts, order) = (
            tokens.uniq.u32s()?,
            tokens.starts.u32s()?,
            tokens.order.u32s()?,
        );
        let n = tokens.len();
        let hd = dh.len() / n.max(1);
        let demb = demb.f32s_mut()?;
        if hd * n != dh.len() || hd == 0 || !demb.len().is_multiple_of(hd) {
            return Err(buf_err(
                "embed_bwd",
                format!("dh of {} for {n} tokens", dh.len()),
            ));
        }
        // Each embedding row on its own task; its tokens in token order.
        demb.par_chunks_mut(hd).enumerate().for_each(|(r, row)| {
            if let Ok(u) = uniq.binary_search(&(r as u32)) {
                for &tok in &order[starts[u] as usize..starts[u + 1] as usize] {
                    let g = &dh[tok as usize * hd..(tok as usize + 1) * hd];
                    for (d, &x) in row.iter_mut().zip(g) {
                        *d += x * scale;
                    }
                }
            }
        });
        Ok(())
    }

    fn split_heads(&self, x: &CpuBuf<'a>, c: HeadCols, y: &mut CpuBuf<'a>) -> Result<(), Error> {
        let rows = c.b * c.t;
        need("split_heads", "x", x, rows * c.width, Dt::F32)?;
        need("split_heads", "y", y, c.len(), Dt::F32)?;
        let (x, y) = (x.f32s()?, y.f32s_mut()?);
        if c.is_empty() {
            return Ok(());
        }
        let (t, hd) = (c.t, c.d);
        y.par_chunks_mut(c.nh * t * hd)
            .zip(x.par_chunks(t * c.width))
            .for_each(|(yb, xb)| {
                for (tt, row) in xb.chunks_exact(c.width).enumerate() {
                    let heads = &row[c.col0..c.col0 + c.nh * hd];
                    for (h, head) in heads.chunks_exact(hd).enumerate() {
                        yb[(h * t + tt) * hd..(h * t + tt + 1) * hd].copy_from_slice(head);
                    }
                }
            });
        Ok(())
    }

    fn merge_heads(&self, x: &CpuBuf<'a>, c: HeadCols, y: &mut CpuBuf<'a>) -> Result<(), Error> {
        let rows = c.b * c.t;
        need("merge_heads", "x", x, c.len(), Dt::F32)?;
        need("merge_heads", "y", y, rows * c.width, Dt::F32)?;
        let (x, y) = (x.f32s()?, y.f32s_mut()?);
        if c.is_empty() {
            return Ok(());
        }
        let (t, hd) = (c.t, c.d);
        y.par_chunks_mut(t * c.width)
            .zip(x.par_chunks(c.nh * t * hd))
            .for_each(|(yb, xb)| {
                for (tt, row) in yb.chunks_exact_mut(c.width).enumerate() {
                    let heads = &mut row[c.col0..c.col0 + c.nh * hd];
                    for (h, head) in heads.chunks_exact_mut(hd).enumerate() {
                        head.copy_from_slice(&xb[(h * t + tt) * hd..(h * t + tt + 1) * hd]);
                    }
                }
            });
        Ok(())
    }

    fn add_scaled(
        &self,
        a: &CpuBuf<'a>,
        b: &CpuBuf<'a>,
        s: f32,
        y: &mut CpuBuf<'a>,
    ) -> Result<(), Error> {
        let (a, b) = (a.f32s()?, b.f32s()?);
        let y = y.f32s_mut()?;
        same_len("add_scaled", &[a.len(), b.len(), y.len()])?;
        y.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(y, (a, b))| {
                for ((y, &x), &z) in y.iter_mut().zip(a).zip(b) {
                    *y = x + s * z;
                }
            });
        Ok(())
    }

    fn add(&self, a: &mut CpuBuf<'a>, b: &CpuBuf<'a>) -> Result<(), Error> {
        let b = b.f32s()?;
        let a = a.f32s_mut()?;
        same_len("add", &[a.len(), b.len()])?;
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, &y)| *x += y));
        Ok(())
    }

    fn scaled(&self, x: &CpuBuf<'a>, s: f32, y: &mut CpuBuf<'a>) -> Result<(), Error> {
        let x = x.f32s()?;
        let y = y.f32s_mut()?;
        same_len("scaled", &[x.len(), y.len()])?;
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y = s * x));
        Ok(())
    }

    fn scale(&self, x: &mut CpuBuf<'a>, s: f32) -> Result<(), Error> {
        x.f32s_mut()?
            .par_chunks_mut(CHUNK)
            .for_each(|x| x.iter_mut().for_each(|x| *x *= s));
        Ok(())
    }

    fn convert(
        &self,
        x: &CpuBuf<'a>,
        x_at: usize,
        y: &mut CpuBuf<'a>,
        y_at: usize,
        len: usize,
    ) -> Result<(), Error> {
        need_range("convert", "x", x, x_at, len)?;
        need_range("convert", "y", y, y_at, len)?;
        let x = x.f32s()?;
        y.f32s_mut()?[y_at..y_at + len].copy_from_slice(&x[x_at..x_at + len]);
        Ok(())
    }
}

/// Checks that x is whole rows of w's length with one rstd per row.
fn rows_of(op: &'static str, x: usize, h: usize, rstd: usize) -> Result<(), Error> {
    if h == 0 || rstd * h != x {
        return Err(buf_err(
            op,
            format!("x of {x} is not {rstd} rows of the gain's {h}"),
        ));
    }
    Ok(())
}

fn same_len(op: &'static str, lens: &[usize]) -> Result<(), Error> {
    if lens.windows(2).any(|w| w[0] != w[1]) {
        return Err(buf_err(op, format!("operands differ in length: {lens:?}")));
    }
    Ok(())
}
