//! What a launch is: a kernel of a source, its grid, block and dynamic shared memory, and its
//! arguments in the C types of the kernel's parameters (the structs passed by value
//! included); what runs launches ([`Gpu`]); and the geometry and size limits every op's
//! launches keep to.

use std::ffi::c_void;

use crate::error::Error;

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
    pub(super) fn new(source: &'static str, kernel: String, grid: (u32, u32), block: u32) -> Self {
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
    pub(super) fn grid_stride(source: &'static str, kernel: String, n: usize) -> Self {
        Self::new(source, kernel, (stride_blocks(n, MAX_BLOCKS), 1), BLOCK)
    }

    pub(super) fn arg(mut self, a: Arg) -> Self {
        self.args.push(a);
        self
    }

    pub(super) fn ptrs(mut self, ps: &[DevPtr]) -> Self {
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
pub(super) fn int(op: &'static str, what: &str, v: usize) -> Result<i32, Error> {
    i32::try_from(v).map_err(|_| Error::Cuda {
        op,
        msg: format!("{what} = {v} exceeds the kernels' int range"),
    })
}

/// A grid dimension (the driver takes at most 2³¹ − 1 in x, 65535 in y).
pub(super) fn grid_dim(op: &'static str, what: &str, v: usize, max: usize) -> Result<u32, Error> {
    if v > max {
        return Err(Error::Cuda {
            op,
            msg: format!("{what} = {v} exceeds the grid's limit of {max}"),
        });
    }
    Ok(v as u32)
}

pub(super) const GRID_X: usize = i32::MAX as usize;
pub(super) const GRID_Y: usize = 65535;

pub(super) fn name(base: &str, e: Elem) -> String {
    format!("{base}_{}", e.suffix())
}
