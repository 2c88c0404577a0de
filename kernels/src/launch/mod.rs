//! Every launch of the CUDA sources in `src/cuda`, described once: which kernel, the grid,
//! the block, the dynamic shared memory and the argument list, for any executor that runs
//! those sources. On a GPU the executor is the driver (`cuda_launch`, through cudarc); on the
//! CPU it is the project's CUDA executor ([`crate::emu`]). Both receive the same [`Launch`]
//! and marshal its arguments the same way (an array of pointers to each argument's bytes, as
//! `cuLaunchKernel` takes them), so the executor tests the geometry and argument lists a GPU
//! run gets.
//!
//! Buffers are device addresses ([`DevPtr`]): what `cuMemAlloc` returned on a GPU, a host
//! address on the executor. The op functions below take every buffer their kernels read and
//! write, allocate their own temporaries through [`Gpu::scratch`], and issue their kernels in
//! stream order; they check sizes that the kernels' `int` arguments must hold.

use std::ffi::c_void;

use crate::error::Error;

pub mod step;

/// A device address (a host address on the CPU executor).
pub type DevPtr = u64;

/// The element type of a kernel variant: the suffix of its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    Bf16,
}

impl Elem {
    pub fn suffix(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::Bf16 => "bf16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::Bf16 => 2,
        }
    }
}

/// `AttnShape` of attention.cu, passed by value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub h: i32,
    pub hkv: i32,
    pub t: i32,
    pub d: i32,
    pub scale: f32,
}

/// `AdamWParams` of adamw.cu, passed by value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias_correction1: f32,
    pub bias_correction2_sqrt: f32,
    pub grad_scale: f32,
}

impl AdamWParams {
    pub fn new(hp: &crate::AdamWHparams) -> Self {
        Self {
            lr: hp.lr as f32,
            beta1: hp.beta1 as f32,
            beta2: hp.beta2 as f32,
            eps: hp.eps as f32,
            weight_decay: hp.weight_decay as f32,
            bias_correction1: hp.bias_correction1 as f32,
            bias_correction2_sqrt: hp.bias_correction2_sqrt as f32,
            grad_scale: hp.grad_scale as f32,
        }
    }
}

/// One kernel argument, by value, in the C type of the kernel's parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// A pointer parameter (`T*`, `const T*`).
    Ptr(DevPtr),
    /// `int`.
    Int(i32),
    /// `float`.
    Float(f32),
    /// `size_t`.
    Size(u64),
    /// `AttnShape`.
    Attn(AttnShape),
    /// `AdamWParams`.
    AdamW(AdamWParams),
}

impl Arg {
    /// The argument's bytes: what the kernel's parameter of that C type holds.
    fn ptr(&self) -> *const c_void {
        match self {
            Arg::Ptr(p) | Arg::Size(p) => (p as *const u64).cast(),
            Arg::Int(i) => (i as *const i32).cast(),
            Arg::Float(f) => (f as *const f32).cast(),
            Arg::Attn(s) => (s as *const AttnShape).cast(),
            Arg::AdamW(h) => (h as *const AdamWParams).cast(),
        }
    }

    /// Size in bytes of the C parameter.
    pub fn size(&self) -> usize {
        match self {
            Arg::Ptr(_) | Arg::Size(_) => 8,
            Arg::Int(_) | Arg::Float(_) => 4,
            Arg::Attn(_) => std::mem::size_of::<AttnShape>(),
            Arg::AdamW(_) => std::mem::size_of::<AdamWParams>(),
        }
    }
}

/// One kernel launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The source file that defines the kernel, e.g. `rms_norm.cu`.
    pub source: &'static str,
    /// The kernel's `extern "C"` name.
    pub kernel: String,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
    pub args: Vec<Arg>,
}

impl Launch {
    fn new(source: &'static str, kernel: String, grid: (u32, u32), block: u32) -> Self {
        Self {
            source,
            kernel,
            grid: (grid.0, grid.1, 1),
            block: (block, 1, 1),
            shared_bytes: 0,
            args: Vec::new(),
        }
    }

    /// A grid-stride loop of `kernel` over `n` items: BLOCK threads per block, as many
    /// blocks as cover `n` up to MAX_BLOCKS.
    fn grid_stride(source: &'static str, kernel: String, n: usize) -> Self {
        Self::new(source, kernel, (stride_blocks(n, MAX_BLOCKS), 1), BLOCK)
    }

    fn arg(mut self, a: Arg) -> Self {
        self.args.push(a);
        self
    }

    fn ptrs(mut self, ps: &[DevPtr]) -> Self {
        self.args.extend(ps.iter().map(|&p| Arg::Ptr(p)));
        self
    }

    /// The kernel parameters as `cuLaunchKernel` takes them: one pointer per argument to
    /// that argument's bytes. Valid while `self` is neither moved nor changed.
    pub fn params(&self) -> Vec<*mut c_void> {
        self.args.iter().map(|a| a.ptr().cast_mut()).collect()
    }

    /// Blocks in the grid.
    pub fn blocks(&self) -> u64 {
        self.grid.0 as u64 * self.grid.1 as u64 * self.grid.2 as u64
    }

    /// Threads per block.
    pub fn threads(&self) -> u32 {
        self.block.0 * self.block.1 * self.block.2
    }
}

/// What runs launches: a GPU through the driver, or the CPU executor.
pub trait Gpu {
    /// A device buffer of `bytes` (contents unspecified) that stays valid until this value
    /// is dropped: the temporaries of one op.
    fn scratch(&mut self, bytes: usize) -> Result<DevPtr, Error>;
    /// Queues (GPU) or runs (executor) one launch, after every launch before it.
    fn launch(&mut self, l: &Launch) -> Result<(), Error>;
}

/// Threads per block of the grid-stride and column kernels.
pub const BLOCK: u32 = 256;
/// Blocks of a grid-stride loop (enough to fill an H100/H200 several times over).
pub const MAX_BLOCKS: usize = 8192;
/// Blocks of a two-stage reduction (each writes one partial).
pub const REDUCE_BLOCKS: usize = 1024;
/// Query (or key) rows per block of the attention kernels: their warps (ATT_WARPS).
pub const ATT_WARPS: usize = 4;
/// The largest head dim the attention kernels hold in shared memory (ATT_DMAX).
pub const ATT_DMAX: usize = 128;

/// Blocks for a grid-stride loop over `n` elements.
pub fn stride_blocks(n: usize, cap: usize) -> u32 {
    n.div_ceil(BLOCK as usize).clamp(1, cap) as u32
}

/// Threads for a one-block-per-row kernel on rows of `len`: a multiple of 32 (the block
/// reductions need whole warps), at most 1024.
pub fn row_block(len: usize) -> u32 {
    (len.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// A size as the kernels' `int`.
fn int(op: &'static str, what: &str, v: usize) -> Result<i32, Error> {
    i32::try_from(v).map_err(|_| Error::Cuda {
        op,
        msg: format!("{what} = {v} exceeds the kernels' int range"),
    })
}

/// A grid dimension (the driver takes at most 2³¹ − 1 in x, 65535 in y).
fn grid_dim(op: &'static str, what: &str, v: usize, max: usize) -> Result<u32, Error> {
    if v > max {
        return Err(Error::Cuda {
            op,
            msg: format!("{what} = {v} exceeds the grid's limit of {max}"),
        });
    }
    Ok(v as u32)
}

const GRID_X: usize = i32::MAX as usize;
const GRID_Y: usize = 65535;

fn name(base: &str, e: Elem) -> String {
    format!("{base}_{}", e.suffix())
}

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

// ---------------------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------------------

/// One fused AdamW step over n elements (θ and its gradient in `e`, moments f32), in place;
/// its three statistics (Σ(Δθ)², Σθ², max|Δθ|, f64) go to `stats`.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    g: &mut impl Gpu,
    e: Elem,
    [theta, grad, m, v]: [DevPtr; 4],
    n: usize,
    hp: AdamWParams,
    stats: DevPtr,
) -> Result<(), Error> {
    let blocks = if n > 0 {
        stride_blocks(n, REDUCE_BLOCKS)
    } else {
        0
    };
    let partial = g.scratch(8 * 3 * (blocks as usize).max(1))?;
    if n > 0 {
        g.launch(
            &Launch::new("adamw.cu", name("adamw_step", e), (blocks, 1), BLOCK)
                .ptrs(&[theta, grad, m, v])
                .arg(Arg::Size(n as u64))
                .arg(Arg::AdamW(hp))
                .arg(Arg::Ptr(partial)),
        )?;
    }
    g.launch(
        &Launch::new("adamw.cu", "adamw_stats_finish".into(), (1, 1), 1)
            .arg(Arg::Ptr(partial))
            .arg(Arg::Int(blocks as i32))
            .arg(Arg::Ptr(stats)),
    )
}

/// Raises the int at `flag` if the AdamW step over n elements would leave any θ, m or v
/// non-finite; writes nothing else. The caller zeroes the flag.
pub fn adamw_check(
    g: &mut impl Gpu,
    e: Elem,
    [theta, grad, m, v]: [DevPtr; 4],
    n: usize,
    hp: AdamWParams,
    flag: DevPtr,
) -> Result<(), Error> {
    if n == 0 {
        return Ok(());
    }
    g.launch(
        &Launch::new(
            "adamw.cu",
            name("adamw_check", e),
            (stride_blocks(n, REDUCE_BLOCKS), 1),
            BLOCK,
        )
        .ptrs(&[theta, grad, m, v])
        .arg(Arg::Size(n as u64))
        .arg(Arg::AdamW(hp))
        .arg(Arg::Ptr(flag)),
    )
}

// ---------------------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------------------

/// An f64 reduction of one, two or three tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Σx² of one tensor.
    SumSq,
    /// ⟨a, b⟩.
    Dot,
    /// ⟨g, a − b⟩.
    DotDiff,
}

impl Reduction {
    fn kernel(self) -> &'static str {
        match self {
            Reduction::SumSq => "sum_sq",
            Reduction::Dot => "dot",
            Reduction::DotDiff => "dot_diff",
        }
    }

    /// How many tensors it reads.
    pub fn inputs(self) -> usize {
        match self {
            Reduction::SumSq => 1,
            Reduction::Dot => 2,
            Reduction::DotDiff => 3,
        }
    }
}

/// The reduction `r` of `inputs` (n elements each) into the f64 at `out`, two deterministic
/// stages (a partial per block, then the partials in block order).
pub fn reduce(
    g: &mut impl Gpu,
    r: Reduction,
    e: Elem,
    inputs: &[DevPtr],
    n: usize,
    out: DevPtr,
) -> Result<(), Error> {
    if inputs.len() != r.inputs() {
        return Err(Error::Cuda {
            op: "reduce",
            msg: format!(
                "{} reads {} tensors, got {}",
                r.kernel(),
                r.inputs(),
                inputs.len()
            ),
        });
    }
    let blocks = if n > 0 {
        stride_blocks(n, REDUCE_BLOCKS)
    } else {
        0
    };
    let partial = g.scratch(8 * (blocks as usize).max(1))?;
    if blocks > 0 {
        g.launch(
            &Launch::new("reduce.cu", name(r.kernel(), e), (blocks, 1), BLOCK)
                .ptrs(inputs)
                .arg(Arg::Size(n as u64))
                .arg(Arg::Ptr(partial)),
        )?;
    }
    g.launch(
        &Launch::new("reduce.cu", "reduce_finish".into(), (1, 1), 1)
            .arg(Arg::Ptr(partial))
            .arg(Arg::Int(blocks as i32))
            .arg(Arg::Ptr(out)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records launches instead of running them.
    #[derive(Default)]
    struct Recorder {
        launches: Vec<Launch>,
        next: DevPtr,
    }

    impl Gpu for Recorder {
        fn scratch(&mut self, bytes: usize) -> Result<DevPtr, Error> {
            self.next += 0x1000 + bytes as u64;
            Ok(self.next)
        }
        fn launch(&mut self, l: &Launch) -> Result<(), Error> {
            self.launches.push(l.clone());
            Ok(())
        }
    }

    #[test]
    fn params_point_at_each_arguments_bytes() {
        let l = Launch::new("x.cu", "k".into(), (1, 1), 32)
            .arg(Arg::Ptr(0xdead_beef))
            .arg(Arg::Int(-7))
            .arg(Arg::Float(1.5))
            .arg(Arg::Size(1 << 40));
        let p = l.params();
        // SAFETY: each pointer points at the argument of its C type, alive in `l`.
        unsafe {
            assert_eq!(*(p[0] as *const u64), 0xdead_beef);
            assert_eq!(*(p[1] as *const i32), -7);
            assert_eq!(*(p[2] as *const f32), 1.5);
            assert_eq!(*(p[3] as *const u64), 1 << 40);
        }
    }

    #[test]
    fn the_c_structs_have_the_c_layout() {
        assert_eq!(std::mem::size_of::<AttnShape>(), 20);
        assert_eq!(std::mem::size_of::<AdamWParams>(), 32);
    }

    #[test]
    fn row_kernels_get_whole_warps_and_one_block_per_row() {
        let mut r = Recorder::default();
        rms_norm_fwd(&mut r, Elem::Bf16, 1, 2, 3, 4, 5, 1000, 1e-5).unwrap();
        let l = &r.launches[0];
        assert_eq!(l.kernel, "rms_norm_fwd_bf16");
        assert_eq!((l.grid, l.block), ((5, 1, 1), (1024, 1, 1)));
        assert_eq!(row_block(1), 32);
        assert_eq!(row_block(33), 64);
    }

    #[test]
    fn sizes_beyond_the_kernels_int_are_refused() {
        let mut r = Recorder::default();
        let err = rms_norm_fwd(&mut r, Elem::F32, 1, 2, 3, 4, 1, 1 << 31, 1e-5).unwrap_err();
        assert!(
            err.to_string().contains("exceeds the kernels' int range"),
            "{err}"
        );
        let dims = AttnDims {
            b: 1,
            h: 6,
            hkv: 4,
            t: 8,
            d: 64,
            scale: 0.1,
        };
        let err = attention_fwd(&mut r, Elem::F32, [1, 2, 3], 4, 5, dims).unwrap_err();
        assert!(err.to_string().contains("evenly"), "{err}");
        assert!(r.launches.is_empty());
    }
}
