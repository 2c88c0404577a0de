//! The kernel backend a hand-written training step runs on: buffers it owns and exactly the
//! ops a MiniCPM step needs, forward and backward, with one set of layouts for every
//! implementation. The step (the trainer's `model/step.rs`) is written once over [`Backend`];
//! which kernels do the work is the backend's business:
//!
//! - [`cpu::Cpu`]: the CPU kernels of [`crate::slices`] and the `gemm` crate, in f32 (the
//!   CPU training path, benchmarked against PyTorch).
//! - [`emu::Emu`]: the CUDA sources run by the CPU executor ([`crate::emu`]) through the
//!   launches of [`crate::launch`], with GEMMs done on the CPU (f32 accumulation; a bf16
//!   output is rounded once, as a cuBLAS bf16 GEMM with f32 compute rounds it).
//! - `cuda::Cuda` (feature `cuda`): the same launches through the driver on a candle CUDA
//!   device's stream, GEMMs through cuBLAS (sgemm in f32; `gemm_ex` with bf16 operands and
//!   f32 compute in bf16).
//!
//! The two launching backends are one generic implementation, [`Launched`], over a
//! [`Device`] that supplies memory (host or device) and the GEMM; every other op is the same
//! launch on both, so the executor runs the geometry, argument lists and bf16 roundings a GPU
//! step gets.
//!
//! Buffers hold f32, bf16 or u32 elements ([`Dt`]); the mixed-precision step keeps bf16
//! activations and f32 statistics (log-sum-exps, reciprocal RMSs) and gradients. Ops take
//! their outputs as `&mut` buffers and overwrite every element unless they say they add.
//! Element-wise ops may run in place. The launching backends check every buffer's length and
//! type against what the op's launches read and write before they launch (a mismatch is an
//! [`Error`], never an out-of-bounds access); the CPU backend checks types and leaves lengths
//! to the slice kernels' asserts (a panic on a caller's bug, as [`crate::slices`] documents).
//!
//! Layouts (row-major): token rows (N = B·T, ·); heads (B, h, T, d); a linear layer's weight
//! (out, in) as in PyTorch; SwiGLU's input as rows [gate | up] (N, 2F), one GEMM's output for
//! the stacked gate and up weights; RoPE tables (≥ T, d).

pub mod checks;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod emu;
mod launched;

pub use crate::launch::step::HeadCols;
pub use crate::slices::AttnShape;
pub use launched::{DevBuf, Device, Gemm, Launched, Operand};

use crate::error::Error;
use crate::launch::Elem;

/// The element type of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dt {
    F32,
    Bf16,
    U32,
}

impl Dt {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dt::F32 | Dt::U32 => 4,
            Dt::Bf16 => 2,
        }
    }

    /// The kernels' element type of a float buffer.
    pub fn elem(self) -> Option<Elem> {
        match self {
            Dt::F32 => Some(Elem::F32),
            Dt::Bf16 => Some(Elem::Bf16),
            Dt::U32 => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dt::F32 => "f32",
            Dt::Bf16 => "bf16",
            Dt::U32 => "u32",
        }
    }
}

impl From<Elem> for Dt {
    fn from(e: Elem) -> Self {
        match e {
            Elem::F32 => Dt::F32,
            Elem::Bf16 => Dt::Bf16,
        }
    }
}

/// What every backend's buffer tells about itself.
pub trait Buffer {
    /// Elements.
    fn len(&self) -> usize;
    fn dt(&self) -> Dt;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shape of a linear layer over token rows: x (n, inp), w (out, inp), y (n, out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    pub n: usize,
    pub inp: usize,
    pub out: usize,
}

/// A batch's token ids as the step's ops read them: the ids (n, u32) for the lookup, and the
/// tokens grouped by id for the embedding's scatter-add (the host sorts them once, so every
/// backend adds each embedding row's tokens in token order, without atomics).
pub struct Tokens<B> {
    /// (n) the ids.
    pub ids: B,
    /// (u) the distinct ids, ascending.
    pub uniq: B,
    /// (u + 1) where each distinct id's tokens begin in `order`.
    pub starts: B,
    /// (n) token indices sorted stably by id.
    pub order: B,
}

impl<B: Buffer> Tokens<B> {
    /// Uploads `ids` and their grouping to `be`.
    pub fn upload<Be: Backend<Buf = B>>(be: &Be, ids: &[u32]) -> Result<Self, Error> {
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_by_key(|&i| ids[i as usize]); // stable: token order within an id
        let (mut uniq, mut starts) = (Vec::new(), Vec::new());
        for (k, &i) in order.iter().enumerate() {
            let id = ids[i as usize];
            if uniq.last() != Some(&id) {
                uniq.push(id);
                starts.push(k as u32);
            }
        }
        starts.push(ids.len() as u32);
        Ok(Tokens {
            ids: be.upload_u32(ids)?,
            uniq: be.upload_u32(&uniq)?,
            starts: be.upload_u32(&starts)?,
            order: be.upload_u32(&order)?,
        })
    }

    /// Tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The ops of a MiniCPM training step on one backend. Sizes are in elements; shapes are
/// given by the arguments and checked against the buffers.
pub trait Backend {
    type Buf: Buffer;

    /// A short name for messages (`cpu`, `cuda-emu`, `cuda`).
    fn name(&self) -> &'static str;

    // --- memory -------------------------------------------------------------------------

    /// A buffer of `len` elements whose contents are unspecified, from the backend's pool of
    /// buffers given back ([`Self::give`]) or fresh: the step's activations and temporaries.
    fn take(&self, len: usize, dt: Dt) -> Result<Self::Buf, Error>;
    /// Returns buffers to the pool, for later takes (this step's or the next one's).
    fn give(&self, bufs: impl IntoIterator<Item = Self::Buf>);
    /// A fresh zero-filled buffer outside the pool: outputs that leave the step (gradients).
    fn zeros(&self, len: usize, dt: Dt) -> Result<Self::Buf, Error>;
    /// `xs` stored as `dt` (f32, or bf16 rounded to nearest even).
    fn upload_f32(&self, xs: &[f32], dt: Dt) -> Result<Self::Buf, Error>;
    fn upload_u32(&self, xs: &[u32]) -> Result<Self::Buf, Error>;
    /// A float buffer's elements widened to f32 (waits for the work that writes it).
    fn download_f32(&self, b: &Self::Buf) -> Result<Vec<f32>, Error>;

    // --- GEMMs (f32 accumulation; `acc` adds to the output instead of overwriting) -------

    /// y (n, out) = x (n, inp) · wᵀ.
    fn linear(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        y: &mut Self::Buf,
        s: Linear,
        acc: bool,
    ) -> Result<(), Error>;
    /// dx (n, inp) = dy (n, out) · w: a linear layer's input gradient.
    fn linear_dx(
        &self,
        dy: &Self::Buf,
        w: &Self::Buf,
        dx: &mut Self::Buf,
        s: Linear,
        acc: bool,
    ) -> Result<(), Error>;
    /// dw (out, inp) = dyᵀ · x: a linear layer's weight gradient (dw may be f32 over bf16
    /// operands).
    fn linear_dw(
        &self,
        dy: &Self::Buf,
        x: &Self::Buf,
        dw: &mut Self::Buf,
        s: Linear,
        acc: bool,
    ) -> Result<(), Error>;

    // --- fused ops ----------------------------------------------------------------------

    /// y (N, H) = RMSNorm of rows x with gain w (H); rstd (N, f32) = each row's 1/rms.
    fn rms_norm_fwd(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        eps: f64,
        y: &mut Self::Buf,
        rstd: &mut Self::Buf,
    ) -> Result<(), Error>;
    /// dx (N, H) and dw (H, the type of x) of RMSNorm for upstream dy, from the saved rstd.
    fn rms_norm_bwd(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        dy: &Self::Buf,
        rstd: &Self::Buf,
        dx: &mut Self::Buf,
        dw: &mut Self::Buf,
    ) -> Result<(), Error>;
    /// Half-split RoPE of heads x (·, t, d) into y with tables cos, sin (≥ t rows of d);
    /// `inverse` applies the transpose (the backward pass, x the upstream gradient).
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &Self::Buf,
        cos: &Self::Buf,
        sin: &Self::Buf,
        t: usize,
        d: usize,
        inverse: bool,
        y: &mut Self::Buf,
    ) -> Result<(), Error>;
    /// Causal grouped-query attention of q (B, h, T, d), k, v (B, hkv, T, d): out (as q) and
    /// lse (B, h, T; f32).
    #[allow(clippy::too_many_arguments)]
    fn attention_fwd(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        s: AttnShape,
        scale: f64,
        out: &mut Self::Buf,
        lse: &mut Self::Buf,
    ) -> Result<(), Error>;
    /// dq, dk, dv of attention from its inputs, output, lse and the upstream gradient dout.
    fn attention_bwd(
        &self,
        saved: AttnSaved<'_, Self::Buf>,
        s: AttnShape,
        scale: f64,
        grads: [&mut Self::Buf; 3],
    ) -> Result<(), Error>;
    /// y (N, F) = silu(gate) ⊙ up for rows gu (N, 2F) = [gate | up].
    fn swiglu_fwd(&self, gu: &Self::Buf, f: usize, y: &mut Self::Buf) -> Result<(), Error>;
    /// dgu (N, 2F) = [dgate | dup] for upstream dy (N, F).
    fn swiglu_bwd(
        &self,
        gu: &Self::Buf,
        dy: &Self::Buf,
        f: usize,
        dgu: &mut Self::Buf,
    ) -> Result<(), Error>;
    /// The mean cross-entropy of logits (N, V) against u32 targets (N) into `loss` (1, f32)
    /// and each row's log-sum-exp into lse (N, f32). Targets must be < V (the caller checks:
    /// a backend may give NaN or an error for one that is not).
    fn cross_entropy_fwd(
        &self,
        logits: &Self::Buf,
        targets: &Self::Buf,
        lse: &mut Self::Buf,
        loss: &mut Self::Buf,
    ) -> Result<(), Error>;
    /// The logits (N, V) become the gradient of `g` · the mean cross-entropy, in place.
    fn cross_entropy_bwd(
        &self,
        logits: &mut Self::Buf,
        targets: &Self::Buf,
        lse: &Self::Buf,
        g: f32,
    ) -> Result<(), Error>;

    // --- the step's glue ------------------------------------------------------------------

    /// h (N, H) = emb[ids] · scale for emb (V, H). Ids must be < V (the caller checks).
    fn embed(
        &self,
        emb: &Self::Buf,
        tokens: &Tokens<Self::Buf>,
        scale: f32,
        h: &mut Self::Buf,
    ) -> Result<(), Error>;
    /// demb (V, H; f32) += scale · dh (N, H) scattered by id, each row's tokens in token
    /// order.
    fn embed_bwd(
        &self,
        dh: &Self::Buf,
        tokens: &Tokens<Self::Buf>,
        scale: f32,
        demb: &mut Self::Buf,
    ) -> Result<(), Error>;
    /// y (B, nh, T, d) = the columns `c` of token rows x (B·T, width).
    fn split_heads(&self, x: &Self::Buf, c: HeadCols, y: &mut Self::Buf) -> Result<(), Error>;
    /// The columns `c` of token rows y (B·T, width) = x (B, nh, T, d); other columns keep
    /// their contents.
    fn merge_heads(&self, x: &Self::Buf, c: HeadCols, y: &mut Self::Buf) -> Result<(), Error>;
    /// y = a + s·b.
    fn add_scaled(
        &self,
        a: &Self::Buf,
        b: &Self::Buf,
        s: f32,
        y: &mut Self::Buf,
    ) -> Result<(), Error>;
    /// a += b.
    fn add(&self, a: &mut Self::Buf, b: &Self::Buf) -> Result<(), Error>;
    /// y = s·x.
    fn scaled(&self, x: &Self::Buf, s: f32, y: &mut Self::Buf) -> Result<(), Error>;
    /// x *= s.
    fn scale(&self, x: &mut Self::Buf, s: f32) -> Result<(), Error>;
    /// y[y_at .. y_at + len] = x[x_at .. x_at + len] in y's type: a copy (stacking or
    /// unstacking weights) or a conversion (f32 → bf16 rounds to nearest even).
    fn convert(
        &self,
        x: &Self::Buf,
        x_at: usize,
        y: &mut Self::Buf,
        y_at: usize,
        len: usize,
    ) -> Result<(), Error>;
}

/// What attention's backward reads: the forward's inputs, output and lse, and the upstream
/// gradient of its output.
pub struct AttnSaved<'a, B> {
    pub q: &'a B,
    pub k: &'a B,
    pub v: &'a B,
    pub out: &'a B,
    pub lse: &'a B,
    pub dout: &'a B,
}

/// An error naming the op and what is wrong with a buffer.
pub(crate) fn buf_err(op: &'static str, msg: impl Into<String>) -> Error {
    Error::Backend {
        op,
        msg: msg.into(),
    }
}

/// Checks that `b` holds `len` elements of `dt`.
pub(crate) fn need<B: Buffer>(
    op: &'static str,
    what: &str,
    b: &B,
    len: usize,
    dt: Dt,
) -> Result<(), Error> {
    if b.len() != len || b.dt() != dt {
        return Err(buf_err(
            op,
            format!(
                "{what} holds {} {} elements, the op needs {len} {}",
                b.len(),
                b.dt().name(),
                dt.name()
            ),
        ));
    }
    Ok(())
}

/// The float element type of `b`, or an error.
pub(crate) fn float_of<B: Buffer>(op: &'static str, what: &str, b: &B) -> Result<Elem, Error> {
    b.dt()
        .elem()
        .ok_or_else(|| buf_err(op, format!("{what} holds u32, the op needs floats")))
}

/// Checks a range of `b`.
pub(crate) fn need_range<B: Buffer>(
    op: &'static str,
    what: &str,
    b: &B,
    at: usize,
    len: usize,
) -> Result<(), Error> {
    if at.checked_add(len).is_none_or(|end| end > b.len()) {
        return Err(buf_err(
            op,
            format!(
                "{what}[{at}..{at} + {len}] is outside its {} elements",
                b.len()
            ),
        ));
    }
    Ok(())
}
