//! The launches of the differentiable ops: RMSNorm, SwiGLU, RoPE, cross-entropy and
//! attention, forward and backward.

use super::desc::{
    ATT_DMAX, ATT_WARPS, Arg, AttnShape, BLOCK, DevPtr, Elem, GRID_X, GRID_Y, Gpu, Launch,
    grid_dim, int, name, row_block,
};
use crate::error::Error;

// ---------------------------------------------------------------------------------------
// RMSNorm
// ---------------------------------------------------------------------------------------

const RMS: &str = "rms_norm";

/// y (n, h) = rms_norm(x, w) and rstd (n, f32) = the per-row 1/rms.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_fwd(
    g: &mut impl Gpu,
    e: Elem,
    x: DevPtr,
    w: DevPtr,
    y: DevPtr,
    rstd: DevPtr,
    n: usize,
    h: usize,
    eps: f32,
) -> Result<(), Error> {
    if n == 0 || h == 0 {
        return Ok(());
    }
    let l = Launch::new(
        "rms_norm.cu",
        name("rms_norm_fwd", e),
        (grid_dim(RMS, "rows", n, GRID_X)?, 1),
        row_block(h),
    )
    .ptrs(&[x, w, y, rstd])
    .arg(Arg::Int(int(RMS, "H", h)?))
    .arg(Arg::Float(eps));
    g.launch(&l)
}

/// dx (n, h) and dw (h) of rms_norm from x, w, the upstream gradient dy and rstd.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_bwd(
    g: &mut impl Gpu,
    e: Elem,
    x: DevPtr,
    w: DevPtr,
    dy: DevPtr,
    rstd: DevPtr,
    dx: DevPtr,
    dw: DevPtr,
    n: usize,
    h: usize,
) -> Result<(), Error> {
    if n == 0 || h == 0 {
        return Ok(());
    }
    let (ni, hi) = (int(RMS, "rows", n)?, int(RMS, "H", h)?);
    g.launch(
        &Launch::new(
            "rms_norm.cu",
            name("rms_norm_bwd_dx", e),
            (grid_dim(RMS, "rows", n, GRID_X)?, 1),
            row_block(h),
        )
        .ptrs(&[x, w, dy, rstd, dx])
        .arg(Arg::Int(hi)),
    )?;
    // dw in two deterministic stages: per chunk of rows, then over the chunks in order.
    let rows_per_chunk = n.div_ceil(256).max(16);
    let chunks = n.div_ceil(rows_per_chunk);
    let partial = g.scratch(4 * chunks * h)?;
    let cols = grid_dim(RMS, "column blocks", h.div_ceil(BLOCK as usize), GRID_X)?;
    g.launch(
        &Launch::new(
            "rms_norm.cu",
            name("rms_norm_bwd_dw_partial", e),
            (cols, grid_dim(RMS, "row chunks", chunks, GRID_Y)?),
            BLOCK,
        )
        .ptrs(&[x, dy, rstd, partial])
        .arg(Arg::Int(ni))
        .arg(Arg::Int(hi))
        .arg(Arg::Int(int(RMS, "rows per chunk", rows_per_chunk)?)),
    )?;
    g.launch(
        &Launch::new(
            "rms_norm.cu",
            name("rms_norm_bwd_dw_finish", e),
            (cols, 1),
            BLOCK,
        )
        .ptrs(&[partial, dw])
        .arg(Arg::Int(int(RMS, "chunks", chunks)?))
        .arg(Arg::Int(hi)),
    )
}

// ---------------------------------------------------------------------------------------
// SwiGLU
// ---------------------------------------------------------------------------------------

/// y = silu(gate) ⊙ up over n elements.
pub fn swiglu_fwd(
    g: &mut impl Gpu,
    e: Elem,
    gate: DevPtr,
    up: DevPtr,
    y: DevPtr,
    n: usize,
) -> Result<(), Error> {
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &Launch::grid_stride("swiglu.cu", name("swiglu_fwd", e), n)
            .ptrs(&[gate, up, y])
            .arg(Arg::Size(n as u64)),
    )
}

/// dgate and dup of swiglu over n elements.
#[allow(clippy::too_many_arguments)]
pub fn swiglu_bwd(
    g: &mut impl Gpu,
    e: Elem,
    gate: DevPtr,
    up: DevPtr,
    dy: DevPtr,
    dgate: DevPtr,
    dup: DevPtr,
    n: usize,
) -> Result<(), Error> {
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &Launch::grid_stride("swiglu.cu", name("swiglu_bwd", e), n)
            .ptrs(&[gate, up, dy, dgate, dup])
            .arg(Arg::Size(n as u64)),
    )
}

// ---------------------------------------------------------------------------------------
// RoPE
// ---------------------------------------------------------------------------------------

const ROPE: &str = "rope";

/// Half-split RoPE of x (…, t, d) with n elements, cos/sin (t, d), into y; `inverse`
/// applies the transpose (the backward pass, x the upstream gradient).
#[allow(clippy::too_many_arguments)]
pub fn rope(
    g: &mut impl Gpu,
    e: Elem,
    x: DevPtr,
    cos: DevPtr,
    sin: DevPtr,
    y: DevPtr,
    n: usize,
    t: usize,
    d: usize,
    inverse: bool,
) -> Result<(), Error> {
    let pairs = n / 2;
    if pairs == 0 {
        return Ok(());
    }
    let base = if inverse { "rope_bwd" } else { "rope_fwd" };
    g.launch(
        &Launch::grid_stride("rope.cu", name(base, e), pairs)
            .ptrs(&[x, cos, sin, y])
            .arg(Arg::Size(pairs as u64))
            .arg(Arg::Int(int(ROPE, "T", t)?))
            .arg(Arg::Int(int(ROPE, "D", d)?)),
    )
}

// ---------------------------------------------------------------------------------------
// Cross-entropy
// ---------------------------------------------------------------------------------------

const CE: &str = "cross_entropy";

/// The mean cross-entropy of logits (n, v) against u32 targets (n) into `loss` (one f32),
/// and the per-row log-sum-exps into `lse` (n, f32). A target out of range makes it NaN.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_fwd(
    g: &mut impl Gpu,
    e: Elem,
    logits: DevPtr,
    targets: DevPtr,
    lse: DevPtr,
    loss: DevPtr,
    n: usize,
    v: usize,
) -> Result<(), Error> {
    let (ni, vi) = (int(CE, "N", n)?, int(CE, "V", v)?);
    let rows = g.scratch(4 * n.max(1))?;
    if n > 0 {
        g.launch(
            &Launch::new(
                "cross_entropy.cu",
                name("ce_fwd_rows", e),
                (grid_dim(CE, "rows", n, GRID_X)?, 1),
                row_block(v),
            )
            .ptrs(&[logits, targets, lse, rows])
            .arg(Arg::Int(vi)),
        )?;
    }
    g.launch(
        &Launch::new("cross_entropy.cu", "ce_mean".into(), (1, 1), 1024)
            .ptrs(&[rows, loss])
            .arg(Arg::Int(ni)),
    )
}

/// dlogits (n, v) of the mean cross-entropy; `upstream` is one f32 on the device.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_bwd(
    g: &mut impl Gpu,
    e: Elem,
    logits: DevPtr,
    targets: DevPtr,
    lse: DevPtr,
    upstream: DevPtr,
    dlogits: DevPtr,
    n: usize,
    v: usize,
) -> Result<(), Error> {
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &Launch::new(
            "cross_entropy.cu",
            name("ce_bwd", e),
            (grid_dim(CE, "rows", n, GRID_X)?, 1),
            row_block(v),
        )
        .ptrs(&[logits, targets, lse, upstream, dlogits])
        .arg(Arg::Int(int(CE, "N", n)?))
        .arg(Arg::Int(int(CE, "V", v)?)),
    )
}

// ---------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------

const ATT: &str = "attention";

/// The shape of a causal grouped-query attention: q (b, h, t, d), k and v (b, hkv, t, d).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnDims {
    pub b: usize,
    pub h: usize,
    pub hkv: usize,
    pub t: usize,
    pub d: usize,
    pub scale: f32,
}

impl AttnDims {
    fn shape(&self) -> Result<AttnShape, Error> {
        if self.d > ATT_DMAX || self.d == 0 {
            return Err(Error::Cuda {
                op: ATT,
                msg: format!(
                    "head dim {} is outside the kernels' 1 to {ATT_DMAX}",
                    self.d
                ),
            });
        }
        if self.hkv == 0 || !self.h.is_multiple_of(self.hkv) {
            return Err(Error::Cuda {
                op: ATT,
                msg: format!(
                    "{} query heads cannot share {} KV heads evenly",
                    self.h, self.hkv
                ),
            });
        }
        Ok(AttnShape {
            h: int(ATT, "H", self.h)?,
            hkv: int(ATT, "Hkv", self.hkv)?,
            t: int(ATT, "T", self.t)?,
            d: int(ATT, "D", self.d)?,
            scale: self.scale,
        })
    }

    /// The grid (⌈t/ATT_WARPS⌉, b·heads) of ATT_WARPS warps the kernels index by.
    fn grid(&self, heads: usize) -> Result<(u32, u32), Error> {
        Ok((
            grid_dim(ATT, "row tiles", self.t.div_ceil(ATT_WARPS), GRID_X)?,
            grid_dim(ATT, "B·heads", self.b * heads, GRID_Y)?,
        ))
    }
}

/// out (b, h, t, d) and lse (b, h, t; f32) of causal GQA attention.
pub fn attention_fwd(
    g: &mut impl Gpu,
    e: Elem,
    [q, k, v]: [DevPtr; 3],
    out: DevPtr,
    lse: DevPtr,
    dims: AttnDims,
) -> Result<(), Error> {
    let s = dims.shape()?;
    if dims.b * dims.t == 0 {
        return Ok(());
    }
    g.launch(
        &Launch::new(
            "attention.cu",
            name("attn_fwd", e),
            dims.grid(dims.h)?,
            (ATT_WARPS * 32) as u32,
        )
        .ptrs(&[q, k, v, out, lse])
        .arg(Arg::Attn(s)),
    )
}

/// dq, dk, dv of attention from q, k, v, the forward output, its upstream gradient `dout`
/// and the saved lse.
pub fn attention_bwd(
    g: &mut impl Gpu,
    e: Elem,
    [q, k, v, out, dout, lse]: [DevPtr; 6],
    [dq, dk, dv]: [DevPtr; 3],
    dims: AttnDims,
) -> Result<(), Error> {
    let s = dims.shape()?;
    let rows = dims.b * dims.h * dims.t;
    if rows == 0 {
        return Ok(());
    }
    let delta = g.scratch(4 * rows)?;
    g.launch(
        &Launch::new(
            "attention.cu",
            name("attn_bwd_delta", e),
            (
                grid_dim(
                    ATT,
                    "row groups",
                    rows.div_ceil(BLOCK as usize / 32),
                    GRID_X,
                )?,
                1,
            ),
            BLOCK,
        )
        .ptrs(&[out, dout, delta])
        .arg(Arg::Size(rows as u64))
        .arg(Arg::Int(s.d)),
    )?;
    let threads = (ATT_WARPS * 32) as u32;
    g.launch(
        &Launch::new(
            "attention.cu",
            name("attn_bwd_dq", e),
            dims.grid(dims.h)?,
            threads,
        )
        .ptrs(&[q, k, v, dout, lse, delta, dq])
        .arg(Arg::Attn(s)),
    )?;
    g.launch(
        &Launch::new(
            "attention.cu",
            name("attn_bwd_dkdv", e),
            dims.grid(dims.hkv)?,
            threads,
        )
        .ptrs(&[q, k, v, dout, lse, delta, dk, dv])
        .arg(Arg::Attn(s)),
    )
}
