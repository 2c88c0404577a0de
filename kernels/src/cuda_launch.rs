//! CUDA launches of the fused kernels (the `cuda` feature).
//!
//! The sources in `src/cuda` are compiled by NVRTC into a CUBIN for the device's compute
//! capability at first use (once per process and capability), loaded once per device and
//! launched on the device's candle stream, so they are ordered with candle's own kernels and
//! cuBLAS calls with no extra synchronisation. A CUBIN rather than PTX: a driver loads CUBINs
//! from any NVRTC of its CUDA major version, but not PTX of a newer ISA than its own.
//!
//! Elements are f32 or bf16 (`half::bf16`, as candle stores it); the kernels compute in f32
//! and keep their statistics (log-sum-exps, reciprocal RMSs, softmax deltas) in f32, the
//! reductions and AdamW statistics in f64. Every output is a fresh allocation except
//! AdamW's, which updates parameters and moments in place.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda::{CudaDType, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{
    CudaDevice, CudaStorage, DType, InplaceOp3, Layout, Result, Shape, Storage, Tensor, WithDType,
};
use cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaView, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use half::bf16;

use crate::adamw::{AdamWHparams, AdamWStats};
use crate::cuda::{CUDA_COMMON_HEADER, CUDA_SOURCES};
use crate::error::Error;

/// An element type the kernels take, with the suffix of its kernel names.
pub(crate) trait Elem: CudaDType + DeviceRepr + WithDType {
    const SUFFIX: &'static str;
}

impl Elem for f32 {
    const SUFFIX: &'static str = "f32";
}

impl Elem for bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// Runs `f::<T>(args…)` for the element type of `dtype` (f32 or bf16).
macro_rules! dispatch {
    ($op:expr, $dtype:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::BF16 => $f::<bf16>($($arg),*),
            dtype => Err(Error::UnsupportedCudaDType { op: $op, dtype }.into()),
        }
    };
}

fn cuda_err(op: &'static str, msg: impl Into<String>) -> candle_core::Error {
    Error::Cuda {
        op,
        msg: msg.into(),
    }
    .into()
}

// ---------------------------------------------------------------------------------------
// Whether CUDA is usable
// ---------------------------------------------------------------------------------------

/// The name of CUDA device `ordinal`, or why it cannot be used (no driver, no such device).
/// Never panics: the driver is initialised and queried through error codes only.
pub fn cuda_device_name(ordinal: usize) -> std::result::Result<String, String> {
    use cudarc::driver::result;
    result::init().map_err(|e| format!("the CUDA driver did not initialise ({e})"))?;
    let count = result::device::get_count()
        .map_err(|e| format!("the CUDA driver cannot count devices ({e})"))?;
    if count <= 0 {
        return Err("the CUDA driver reports no devices".into());
    }
    if ordinal >= count as usize {
        return Err(format!(
            "there is no CUDA device {ordinal} (this machine has {count}: cuda:0 to cuda:{})",
            count - 1
        ));
    }
    let dev = result::device::get(ordinal as i32)
        .map_err(|e| format!("CUDA device {ordinal} cannot be opened ({e})"))?;
    result::device::get_name(dev).map_err(|e| format!("CUDA device {ordinal}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Compiling and loading
// ---------------------------------------------------------------------------------------

/// The source of `file` with `common.cuh` inlined (cudarc creates NVRTC programs without
/// in-memory headers).
fn full_source(file: &str) -> Result<String> {
    let src = CUDA_SOURCES
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, src)| *src)
        .ok_or_else(|| cuda_err("nvrtc", format!("no CUDA source named {file}")))?;
    Ok(src.replace("#include \"common.cuh\"", CUDA_COMMON_HEADER))
}

/// CUBIN of source `file` for compute capability `cc`, compiled by NVRTC.
fn compile_cubin(file: &'static str, cc: (i32, i32)) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result, sys};
    let err = |msg: String| cuda_err("nvrtc", format!("{file}: {msg}"));
    let src = CString::new(full_source(file)?).map_err(|e| err(e.to_string()))?;
    let name = CString::new(file).map_err(|e| err(e.to_string()))?;
    let prog = result::create_program(&src, Some(&name)).map_err(|e| err(e.to_string()))?;
    let opts = [
        format!("--gpu-architecture=sm_{}{}", cc.0, cc.1),
        "-std=c++17".to_string(),
    ];
    // SAFETY: `prog` is a live program (created above, destroyed below); the option strings
    // outlive the call.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    let out = match compiled {
        Ok(()) => {
            let mut n = 0usize;
            // SAFETY: `prog` compiled; NVRTC writes the CUBIN's size into `n` and then exactly
            // that many bytes into a buffer of that size.
            unsafe {
                sys::nvrtcGetCUBINSize(prog, &mut n)
                    .result()
                    .map_err(|e| err(e.to_string()))?;
                let mut buf = vec![0u8; n];
                sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast())
                    .result()
                    .map_err(|e| err(e.to_string()))?;
                Ok(buf)
            }
        }
        Err(e) => {
            // SAFETY: `prog` is live; the log is a NUL-terminated copy owned by the Vec.
            let log = unsafe { result::get_program_log(prog) }
                .map(|l| {
                    let bytes: Vec<u8> = l.iter().map(|&c| c as u8).collect();
                    String::from_utf8_lossy(&bytes)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_default();
            Err(err(format!("NVRTC failed ({e}) with {opts:?}:\n{log}")))
        }
    };
    // SAFETY: `prog` is destroyed once, after its last use.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// CUBINs by (source, compute capability), shared by every device of that capability.
type Images = HashMap<(&'static str, (i32, i32)), Arc<Vec<u8>>>;
/// Loaded modules by (device ordinal, source): modules belong to the device's primary
/// context, which every candle device of that ordinal shares.
type Modules = HashMap<(usize, &'static str), Arc<CudaModule>>;

fn cubin(file: &'static str, cc: (i32, i32)) -> Result<Arc<Vec<u8>>> {
    static IMAGES: OnceLock<Mutex<Images>> = OnceLock::new();
    let images = IMAGES.get_or_init(Default::default);
    if let Some(img) = images
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(file, cc))
    {
        return Ok(img.clone());
    }
    // Compiled outside the lock: a race compiles twice and keeps one, harmlessly.
    let img = Arc::new(compile_cubin(file, cc)?);
    images
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((file, cc), img.clone());
    Ok(img)
}

/// Kernel `name` of source `file` on `dev`, compiling and loading the source at first use.
fn function(dev: &CudaDevice, file: &'static str, name: &str) -> Result<CudaFunction> {
    static MODULES: OnceLock<Mutex<Modules>> = OnceLock::new();
    let stream = dev.cuda_stream();
    let ctx = stream.context();
    let key = (ctx.ordinal(), file);
    let modules = MODULES.get_or_init(Default::default);
    let cached = modules
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    let module = match cached {
        Some(m) => m,
        None => {
            let cc = ctx.compute_capability().w()?;
            let img = cubin(file, cc)?;
            let m = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(img.as_ref().clone()))
                .w()?;
            modules
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, m.clone());
            m
        }
    };
    module.load_function(name).w()
}

// ---------------------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------------------

/// Threads per block of the grid-stride and column kernels.
const BLOCK: u32 = 256;
/// Blocks of a grid-stride loop (enough to fill an H100/H200 several times over).
const MAX_BLOCKS: usize = 8192;
/// Blocks of a two-stage reduction (each writes one partial).
const REDUCE_BLOCKS: usize = 1024;

fn config(grid: (u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Blocks for a grid-stride loop over `n` elements.
fn stride_blocks(n: usize, cap: usize) -> u32 {
    n.div_ceil(BLOCK as usize).clamp(1, cap) as u32
}

/// Threads for a one-block-per-row kernel on rows of `len`: a multiple of 32 (the block
/// reductions need whole warps), at most 1024.
fn row_block(len: usize) -> u32 {
    (len.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// A size as the kernels' `int`.
fn int(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| cuda_err(op, format!("{what} = {v} exceeds the kernels' int range")))
}

/// The CUDA storage behind a (read-locked) tensor storage.
fn cuda<'a>(s: &'a Storage, op: &'static str, what: &'static str) -> Result<&'a CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        other => Err(Error::UnsupportedDevice {
            op,
            what,
            device: format!("{:?}", other.device().location()),
            supported: "CUDA expected here: all inputs of an op on one device",
        }
        .into()),
    }
}

/// The contiguous elements of `l` in `s`.
fn view<'a, T: CudaDType + DeviceRepr>(
    s: &'a CudaStorage,
    l: &Layout,
    op: &'static str,
    what: &'static str,
) -> Result<CudaView<'a, T>> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or(Error::NonContiguous { op, what })?;
    Ok(s.as_cuda_slice::<T>()?.slice(a..b))
}

/// A fresh device buffer of `n` elements that a kernel fills completely.
fn output<T: DeviceRepr>(dev: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every caller launches a kernel that writes all `n` elements before anything
    // reads them (and never reads them itself).
    unsafe { dev.alloc::<T>(n.max(1)) }
}

/// A tensor (no autograd history) over a device buffer.
fn tensor<T: CudaDType>(slice: CudaSlice<T>, dev: &CudaDevice, dims: &[usize]) -> Tensor {
    let storage = CudaStorage::wrap_cuda_slice(slice, dev.clone());
    Tensor::from_storage(
        Storage::Cuda(storage),
        Shape::from_dims(dims),
        BackpropOp::none(),
        false,
    )
}

fn row_len(op: &'static str, l: &Layout) -> Result<usize> {
    l.dims()
        .last()
        .copied()
        .ok_or_else(|| cuda_err(op, "a scalar has no rows"))
}

// ---------------------------------------------------------------------------------------
// RMSNorm
// ---------------------------------------------------------------------------------------

const RMS: &str = "rms_norm";

/// y = rms_norm(x, w) and the per-row 1/rms (f32, saved for backward).
pub(crate) fn rms_norm_fwd(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    eps: f64,
) -> Result<(CudaStorage, Tensor)> {
    dispatch!(RMS, x.dtype(), rms_norm_fwd_t(x, xl, w, wl, eps))
}

fn rms_norm_fwd_t<T: Elem>(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    eps: f64,
) -> Result<(CudaStorage, Tensor)> {
    let dev = &x.device;
    let h = row_len(RMS, xl)?;
    let n = xl.shape().elem_count() / h.max(1);
    let xv = view::<T>(x, xl, RMS, "x")?;
    let wv = view::<T>(w, wl, RMS, "w")?;
    let mut y = output::<T>(dev, n * h)?;
    let mut rstd = output::<f32>(dev, n)?;
    if n > 0 && h > 0 {
        let f = function(dev, "rms_norm.cu", &format!("rms_norm_fwd_{}", T::SUFFIX))?;
        let stream = dev.cuda_stream();
        let (hi, epsf) = (int(RMS, "H", h)?, eps as f32);
        let mut b = stream.launch_builder(&f);
        b.arg(&xv)
            .arg(&wv)
            .arg(&mut y)
            .arg(&mut rstd)
            .arg(&hi)
            .arg(&epsf);
        // SAFETY: the arguments match rms_norm_fwd_<T>(const T* x, const T* w, T* y,
        // float* rstd, int h, float eps) in rms_norm.cu: x and y hold n·h elements, w h,
        // rstd n; one block per row (grid n), whole warps per block as block_sum needs.
        unsafe { b.launch(config((n as u32, 1), row_block(h))) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(y, dev.clone()),
        tensor(rstd, dev, &[n]),
    ))
}

/// (dx, dw) of rms_norm from x, w, the upstream gradient and the saved 1/rms.
pub(crate) fn rms_norm_bwd(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    rstd: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (ds, dl) = dy.storage_and_layout();
    let (rs, rl) = rstd.storage_and_layout();
    let xs = cuda(&xs, RMS, "x")?;
    let ws = cuda(&ws, RMS, "w")?;
    let ds = cuda(&ds, RMS, "grad")?;
    let rs = cuda(&rs, RMS, "rstd")?;
    dispatch!(
        RMS,
        x.dtype(),
        rms_norm_bwd_t((xs, xl), (ws, wl), (ds, dl), (rs, rl))
    )
}

type In<'a> = (&'a CudaStorage, &'a Layout);

fn rms_norm_bwd_t<T: Elem>(x: In, w: In, dy: In, rstd: In) -> Result<(Tensor, Tensor)> {
    let dev = &x.0.device;
    let h = row_len(RMS, x.1)?;
    let n = x.1.shape().elem_count() / h.max(1);
    let xv = view::<T>(x.0, x.1, RMS, "x")?;
    let wv = view::<T>(w.0, w.1, RMS, "w")?;
    let dv = view::<T>(dy.0, dy.1, RMS, "grad")?;
    let rv = view::<f32>(rstd.0, rstd.1, RMS, "rstd")?;
    let mut dx = output::<T>(dev, n * h)?;
    let mut dw = output::<T>(dev, h)?;
    if n > 0 && h > 0 {
        let stream = dev.cuda_stream();
        let (ni, hi) = (int(RMS, "rows", n)?, int(RMS, "H", h)?);
        let f = function(
            dev,
            "rms_norm.cu",
            &format!("rms_norm_bwd_dx_{}", T::SUFFIX),
        )?;
        let mut b = stream.launch_builder(&f);
        b.arg(&xv).arg(&wv).arg(&dv).arg(&rv).arg(&mut dx).arg(&hi);
        // SAFETY: matches rms_norm_bwd_dx_<T>(const T* x, const T* w, const T* dy,
        // const float* rstd, T* dx, int h): n rows of h, one block per row, whole warps.
        unsafe { b.launch(config((n as u32, 1), row_block(h))) }.w()?;

        // dw in two deterministic stages: per chunk of rows, then over the chunks in order.
        let rows_per_chunk = n.div_ceil(256).max(16);
        let chunks = n.div_ceil(rows_per_chunk);
        let mut partial = output::<f32>(dev, chunks * h)?;
        let (rpc, ci) = (
            int(RMS, "rows", rows_per_chunk)?,
            int(RMS, "chunks", chunks)?,
        );
        let cols = h.div_ceil(BLOCK as usize) as u32;
        let f = function(
            dev,
            "rms_norm.cu",
            &format!("rms_norm_bwd_dw_partial_{}", T::SUFFIX),
        )?;
        let mut b = stream.launch_builder(&f);
        b.arg(&xv)
            .arg(&dv)
            .arg(&rv)
            .arg(&mut partial)
            .arg(&ni)
            .arg(&hi)
            .arg(&rpc);
        // SAFETY: matches rms_norm_bwd_dw_partial_<T>(const T* x, const T* dy,
        // const float* rstd, float* partial, int n, int h, int rows_per_chunk); grid
        // (⌈h/BLOCK⌉, chunks) covers every (chunk, column) of `partial` (chunks·h floats).
        unsafe { b.launch(config((cols, chunks as u32), BLOCK)) }.w()?;
        let f = function(
            dev,
            "rms_norm.cu",
            &format!("rms_norm_bwd_dw_finish_{}", T::SUFFIX),
        )?;
        let mut b = stream.launch_builder(&f);
        b.arg(&partial).arg(&mut dw).arg(&ci).arg(&hi);
        // SAFETY: matches rms_norm_bwd_dw_finish_<T>(const float* partial, T* dw,
        // int chunks, int h); one thread per column of dw (h elements).
        unsafe { b.launch(config((cols, 1), BLOCK)) }.w()?;
    }
    Ok((tensor(dx, dev, x.1.dims()), tensor(dw, dev, w.1.dims())))
}

// ---------------------------------------------------------------------------------------
// SwiGLU
// ---------------------------------------------------------------------------------------

const SWIGLU: &str = "swiglu";

/// silu(gate) ⊙ up.
pub(crate) fn swiglu_fwd(
    g: &CudaStorage,
    gl: &Layout,
    u: &CudaStorage,
    ul: &Layout,
) -> Result<CudaStorage> {
    dispatch!(SWIGLU, g.dtype(), swiglu_fwd_t(g, gl, u, ul))
}

fn swiglu_fwd_t<T: Elem>(
    g: &CudaStorage,
    gl: &Layout,
    u: &CudaStorage,
    ul: &Layout,
) -> Result<CudaStorage> {
    let dev = &g.device;
    let n = gl.shape().elem_count();
    let gv = view::<T>(g, gl, SWIGLU, "gate")?;
    let uv = view::<T>(u, ul, SWIGLU, "up")?;
    let mut y = output::<T>(dev, n)?;
    if n > 0 {
        let f = function(dev, "swiglu.cu", &format!("swiglu_fwd_{}", T::SUFFIX))?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&gv).arg(&uv).arg(&mut y).arg(&n);
        // SAFETY: matches swiglu_fwd_<T>(const T* gate, const T* up, T* y, size_t n); a
        // grid-stride loop over the n elements of each buffer.
        unsafe { b.launch(config((stride_blocks(n, MAX_BLOCKS), 1), BLOCK)) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// (dgate, dup) of swiglu.
pub(crate) fn swiglu_bwd(g: &Tensor, u: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    let (gs, gl) = g.storage_and_layout();
    let (us, ul) = u.storage_and_layout();
    let (ds, dl) = dy.storage_and_layout();
    let gs = cuda(&gs, SWIGLU, "gate")?;
    let us = cuda(&us, SWIGLU, "up")?;
    let ds = cuda(&ds, SWIGLU, "grad")?;
    dispatch!(
        SWIGLU,
        g.dtype(),
        swiglu_bwd_t((gs, gl), (us, ul), (ds, dl))
    )
}

fn swiglu_bwd_t<T: Elem>(g: In, u: In, dy: In) -> Result<(Tensor, Tensor)> {
    let dev = &g.0.device;
    let n = g.1.shape().elem_count();
    let gv = view::<T>(g.0, g.1, SWIGLU, "gate")?;
    let uv = view::<T>(u.0, u.1, SWIGLU, "up")?;
    let dv = view::<T>(dy.0, dy.1, SWIGLU, "grad")?;
    let mut dg = output::<T>(dev, n)?;
    let mut du = output::<T>(dev, n)?;
    if n > 0 {
        let f = function(dev, "swiglu.cu", &format!("swiglu_bwd_{}", T::SUFFIX))?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&gv)
            .arg(&uv)
            .arg(&dv)
            .arg(&mut dg)
            .arg(&mut du)
            .arg(&n);
        // SAFETY: matches swiglu_bwd_<T>(const T* gate, const T* up, const T* dy, T* dgate,
        // T* dup, size_t n); a grid-stride loop over n elements of each buffer.
        unsafe { b.launch(config((stride_blocks(n, MAX_BLOCKS), 1), BLOCK)) }.w()?;
    }
    Ok((tensor(dg, dev, g.1.dims()), tensor(du, dev, u.1.dims())))
}

// ---------------------------------------------------------------------------------------
// RoPE
// ---------------------------------------------------------------------------------------

const ROPE: &str = "rope";

/// Half-split RoPE of x (B, h, T, D) with cos/sin (T, D); `inverse` applies the transpose
/// (the backward pass, with x the upstream gradient).
pub(crate) fn rope_apply(
    x: (&CudaStorage, &Layout),
    cos: (&CudaStorage, &Layout),
    sin: (&CudaStorage, &Layout),
    inverse: bool,
) -> Result<CudaStorage> {
    dispatch!(ROPE, x.0.dtype(), rope_apply_t(x, cos, sin, inverse))
}

fn rope_apply_t<T: Elem>(x: In, cos: In, sin: In, inverse: bool) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let dims = x.1.dims();
    if dims.len() < 2 {
        return Err(cuda_err(
            ROPE,
            format!("x has shape {dims:?}, want (B, h, T, D)"),
        ));
    }
    let (t, d) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let n = x.1.shape().elem_count();
    let xv = view::<T>(x.0, x.1, ROPE, "x")?;
    let cv = view::<T>(cos.0, cos.1, ROPE, "cos")?;
    let sv = view::<T>(sin.0, sin.1, ROPE, "sin")?;
    let mut y = output::<T>(dev, n)?;
    let pairs = n / 2;
    if pairs > 0 {
        let name = if inverse { "rope_bwd" } else { "rope_fwd" };
        let f = function(dev, "rope.cu", &format!("{name}_{}", T::SUFFIX))?;
        let stream = dev.cuda_stream();
        let (ti, di) = (int(ROPE, "T", t)?, int(ROPE, "D", d)?);
        let mut b = stream.launch_builder(&f);
        b.arg(&xv)
            .arg(&cv)
            .arg(&sv)
            .arg(&mut y)
            .arg(&pairs)
            .arg(&ti)
            .arg(&di);
        // SAFETY: matches rope_{fwd,bwd}_<T>(const T* x, const T* cos, const T* sin, T* y,
        // size_t pairs, int t, int d): x and y hold 2·pairs elements in rows of d (even,
        // checked by the op), cos and sin (t, d); a grid-stride loop over the pairs.
        unsafe { b.launch(config((stride_blocks(pairs, MAX_BLOCKS), 1), BLOCK)) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// dx of rope from the upstream gradient.
pub(crate) fn rope_bwd(dy: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (ds, dl) = dy.storage_and_layout();
    let (cs, cl) = cos.storage_and_layout();
    let (ss, sl) = sin.storage_and_layout();
    let ds = cuda(&ds, ROPE, "grad")?;
    let dx = rope_apply(
        (ds, dl),
        (cuda(&cs, ROPE, "cos")?, cl),
        (cuda(&ss, ROPE, "sin")?, sl),
        true,
    )?;
    Ok(Tensor::from_storage(
        Storage::Cuda(dx),
        dy.shape().clone(),
        BackpropOp::none(),
        false,
    ))
}

// ---------------------------------------------------------------------------------------
// Cross-entropy
// ---------------------------------------------------------------------------------------

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
    dispatch!(CE, x.dtype(), cross_entropy_fwd_t(x, xl, t, tl))
}

fn cross_entropy_fwd_t<T: Elem>(
    x: &CudaStorage,
    xl: &Layout,
    t: &CudaStorage,
    tl: &Layout,
) -> Result<(CudaStorage, Tensor)> {
    let dev = &x.device;
    let (n, v) = xl.shape().dims2()?;
    let xv = view::<T>(x, xl, CE, "logits")?;
    let tv = view::<u32>(t, tl, CE, "targets")?;
    let mut lse = output::<f32>(dev, n)?;
    let mut rows = output::<f32>(dev, n)?;
    let mut loss = output::<f32>(dev, 1)?;
    let stream = dev.cuda_stream();
    let (ni, vi) = (int(CE, "N", n)?, int(CE, "V", v)?);
    let f = function(
        dev,
        "cross_entropy.cu",
        &format!("ce_fwd_rows_{}", T::SUFFIX),
    )?;
    let mut b = stream.launch_builder(&f);
    b.arg(&xv).arg(&tv).arg(&mut lse).arg(&mut rows).arg(&vi);
    // SAFETY: matches ce_fwd_rows_<T>(const T* logits, const u32* targets, float* lse,
    // float* row_loss, int v): n rows of v logits (n, v ≥ 1, checked by the op), one block
    // per row with whole warps; a target ≥ v is not dereferenced (the row's loss is NaN).
    unsafe { b.launch(config((n as u32, 1), row_block(v))) }.w()?;
    let f = function(dev, "cross_entropy.cu", "ce_mean")?;
    let mut b = stream.launch_builder(&f);
    b.arg(&rows).arg(&mut loss).arg(&ni);
    // SAFETY: matches ce_mean(const float* row_loss, float* loss, int n): one block of whole
    // warps reads the n row losses and writes the one loss.
    unsafe { b.launch(config((1, 1), 1024)) }.w()?;
    Ok((
        CudaStorage::wrap_cuda_slice(loss, dev.clone()),
        tensor(lse, dev, &[n]),
    ))
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
    let (xs, xl) = x.storage_and_layout();
    let (ts, tl) = t.storage_and_layout();
    let (ls, ll) = lse.storage_and_layout();
    let (gs, gl) = g.storage_and_layout();
    let xs = cuda(&xs, CE, "logits")?;
    let ts = cuda(&ts, CE, "targets")?;
    let ls = cuda(&ls, CE, "lse")?;
    let gs = cuda(&gs, CE, "grad")?;
    dispatch!(
        CE,
        x.dtype(),
        cross_entropy_bwd_t((xs, xl), (ts, tl), (ls, ll), (gs, gl))
    )
}

fn cross_entropy_bwd_t<T: Elem>(x: In, t: In, lse: In, g: In) -> Result<Tensor> {
    let dev = &x.0.device;
    let (n, v) = x.1.shape().dims2()?;
    let xv = view::<T>(x.0, x.1, CE, "logits")?;
    let tv = view::<u32>(t.0, t.1, CE, "targets")?;
    let lv = view::<f32>(lse.0, lse.1, CE, "lse")?;
    let gv = view::<f32>(g.0, g.1, CE, "grad")?;
    let mut dx = output::<T>(dev, n * v)?;
    let (ni, vi) = (int(CE, "N", n)?, int(CE, "V", v)?);
    let f = function(dev, "cross_entropy.cu", &format!("ce_bwd_{}", T::SUFFIX))?;
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    b.arg(&xv)
        .arg(&tv)
        .arg(&lv)
        .arg(&gv)
        .arg(&mut dx)
        .arg(&ni)
        .arg(&vi);
    // SAFETY: matches ce_bwd_<T>(const T* logits, const u32* targets, const float* lse,
    // const float* upstream, T* dlogits, int n, int v): n rows of v, one block per row,
    // `upstream` one float.
    unsafe { b.launch(config((n as u32, 1), row_block(v))) }.w()?;
    Ok(tensor(dx, dev, x.1.dims()))
}

// ---------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------

const ATT: &str = "attention";
/// Query (or key) rows per block: warps per block of the attention kernels (ATT_WARPS).
const ATT_WARPS: usize = 4;
/// The largest head dim the attention kernels hold in shared memory (ATT_DMAX).
const ATT_DMAX: usize = 128;

/// `AttnShape` of attention.cu, passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
struct AttnShape {
    h: i32,
    hkv: i32,
    t: i32,
    d: i32,
    scale: f32,
}

// SAFETY: a plain #[repr(C)] struct of four ints and a float, laid out as the C struct.
unsafe impl DeviceRepr for AttnShape {}

fn attn_shape(q: &[usize], k: &[usize], scale: f64) -> Result<(AttnShape, usize)> {
    let (b, h, t, d) = (q[0], q[1], q[2], q[3]);
    if d > ATT_DMAX {
        return Err(cuda_err(
            ATT,
            format!("head dim {d} exceeds the CUDA kernel's {ATT_DMAX}"),
        ));
    }
    Ok((
        AttnShape {
            h: int(ATT, "H", h)?,
            hkv: int(ATT, "Hkv", k[1])?,
            t: int(ATT, "T", t)?,
            d: int(ATT, "D", d)?,
            scale: scale as f32,
        },
        b,
    ))
}

/// Causal GQA attention of q (B, H, T, D), k, v (B, Hkv, T, D): the output and the per-row
/// log-sum-exp (B, H, T) in f32, saved for backward.
pub(crate) fn attention_fwd(
    q: (&CudaStorage, &Layout),
    k: (&CudaStorage, &Layout),
    v: (&CudaStorage, &Layout),
    scale: f64,
) -> Result<(CudaStorage, Tensor)> {
    dispatch!(ATT, q.0.dtype(), attention_fwd_t(q, k, v, scale))
}

fn attention_fwd_t<T: Elem>(q: In, k: In, v: In, scale: f64) -> Result<(CudaStorage, Tensor)> {
    let dev = &q.0.device;
    let (s, b) = attn_shape(q.1.dims(), k.1.dims(), scale)?;
    let (h, t) = (s.h as usize, s.t as usize);
    let n = q.1.shape().elem_count();
    let qv = view::<T>(q.0, q.1, ATT, "q")?;
    let kv = view::<T>(k.0, k.1, ATT, "k")?;
    let vv = view::<T>(v.0, v.1, ATT, "v")?;
    let mut out = output::<T>(dev, n)?;
    let mut lse = output::<f32>(dev, b * h * t)?;
    if n > 0 {
        let f = function(dev, "attention.cu", &format!("attn_fwd_{}", T::SUFFIX))?;
        let stream = dev.cuda_stream();
        let mut bld = stream.launch_builder(&f);
        bld.arg(&qv)
            .arg(&kv)
            .arg(&vv)
            .arg(&mut out)
            .arg(&mut lse)
            .arg(&s);
        // SAFETY: matches attn_fwd_<T>(const T* q, const T* k, const T* v, T* out,
        // float* lse, AttnShape s): q and out (B, H, T, D), k and v (B, Hkv, T, D) with H a
        // multiple of Hkv (checked by the op), D ≤ ATT_DMAX (checked above), lse B·H·T;
        // grid (⌈T/ATT_WARPS⌉, B·H) of ATT_WARPS warps, the geometry the kernel indexes by.
        unsafe {
            bld.launch(config(
                (t.div_ceil(ATT_WARPS) as u32, (b * h) as u32),
                (ATT_WARPS * 32) as u32,
            ))
        }
        .w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev.clone()),
        tensor(lse, dev, &[b, h, t]),
    ))
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
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (os, ol) = o.storage_and_layout();
    let (ds, dl) = dout.storage_and_layout();
    let (ls, ll) = lse.storage_and_layout();
    let ins = [
        (cuda(&qs, ATT, "q")?, ql),
        (cuda(&ks, ATT, "k")?, kl),
        (cuda(&vs, ATT, "v")?, vl),
        (cuda(&os, ATT, "out")?, ol),
        (cuda(&ds, ATT, "grad")?, dl),
        (cuda(&ls, ATT, "lse")?, ll),
    ];
    dispatch!(ATT, q.dtype(), attention_bwd_t(ins, scale))
}

fn attention_bwd_t<T: Elem>(ins: [In; 6], scale: f64) -> Result<[Tensor; 3]> {
    let [q, k, v, o, dout, lse] = ins;
    let dev = &q.0.device;
    let (s, b) = attn_shape(q.1.dims(), k.1.dims(), scale)?;
    let (h, hkv, t, d) = (s.h as usize, s.hkv as usize, s.t as usize, s.d as usize);
    let qv = view::<T>(q.0, q.1, ATT, "q")?;
    let kv = view::<T>(k.0, k.1, ATT, "k")?;
    let vv = view::<T>(v.0, v.1, ATT, "v")?;
    let ov = view::<T>(o.0, o.1, ATT, "out")?;
    let dv = view::<T>(dout.0, dout.1, ATT, "grad")?;
    let lv = view::<f32>(lse.0, lse.1, ATT, "lse")?;
    let rows = b * h * t;
    let mut delta = output::<f32>(dev, rows)?;
    let mut dq = output::<T>(dev, rows * d)?;
    let mut dk = output::<T>(dev, b * hkv * t * d)?;
    let mut dvv = output::<T>(dev, b * hkv * t * d)?;
    if rows > 0 && d > 0 {
        let stream = dev.cuda_stream();
        let di = int(ATT, "D", d)?;
        let f = function(
            dev,
            "attention.cu",
            &format!("attn_bwd_delta_{}", T::SUFFIX),
        )?;
        let mut bld = stream.launch_builder(&f);
        bld.arg(&ov).arg(&dv).arg(&mut delta).arg(&rows).arg(&di);
        // SAFETY: matches attn_bwd_delta_<T>(const T* out, const T* dout, float* delta,
        // size_t rows, int d): a warp per row, BLOCK/32 rows per block, rows·d elements.
        unsafe {
            bld.launch(config(
                (rows.div_ceil(BLOCK as usize / 32) as u32, 1),
                BLOCK,
            ))
        }
        .w()?;
        let tiles = t.div_ceil(ATT_WARPS) as u32;
        let threads = (ATT_WARPS * 32) as u32;
        let f = function(dev, "attention.cu", &format!("attn_bwd_dq_{}", T::SUFFIX))?;
        let mut bld = stream.launch_builder(&f);
        bld.arg(&qv)
            .arg(&kv)
            .arg(&vv)
            .arg(&dv)
            .arg(&lv)
            .arg(&delta)
            .arg(&mut dq)
            .arg(&s);
        // SAFETY: matches attn_bwd_dq_<T>(q, k, v, dout, lse, delta, T* dq, AttnShape s)
        // with the shapes of the forward pass; grid (⌈T/ATT_WARPS⌉, B·H), a warp per row.
        unsafe { bld.launch(config((tiles, (b * h) as u32), threads)) }.w()?;
        let f = function(dev, "attention.cu", &format!("attn_bwd_dkdv_{}", T::SUFFIX))?;
        let mut bld = stream.launch_builder(&f);
        bld.arg(&qv)
            .arg(&kv)
            .arg(&vv)
            .arg(&dv)
            .arg(&lv)
            .arg(&delta)
            .arg(&mut dk)
            .arg(&mut dvv)
            .arg(&s);
        // SAFETY: matches attn_bwd_dkdv_<T>(q, k, v, dout, lse, delta, T* dk, T* dv,
        // AttnShape s); grid (⌈T/ATT_WARPS⌉, B·Hkv), a warp per key row; dk and dv are
        // (B, Hkv, T, D).
        unsafe { bld.launch(config((tiles, (b * hkv) as u32), threads)) }.w()?;
    }
    Ok([
        tensor(dq, dev, q.1.dims()),
        tensor(dk, dev, k.1.dims()),
        tensor(dvv, dev, v.1.dims()),
    ])
}

// ---------------------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------------------

const ADAMW: &str = "adamw_step";

/// `AdamWParams` of adamw.cu, passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
struct AdamWParams {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2_sqrt: f32,
    grad_scale: f32,
}

// SAFETY: a plain #[repr(C)] struct of eight floats, laid out as the C struct.
unsafe impl DeviceRepr for AdamWParams {}

impl AdamWParams {
    fn new(hp: &AdamWHparams) -> Self {
        AdamWParams {
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

/// The CUDA device of an AdamW group, checking that every tensor is f32 (master weights) and
/// on the device of `first`.
fn adamw_device(
    first: &Tensor,
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
) -> Result<CudaDevice> {
    for t in params.iter().chain(grads).chain(exp_avg).chain(exp_avg_sq) {
        if t.dtype() != DType::F32 {
            return Err(cuda_err(
                ADAMW,
                format!(
                    "on CUDA parameters, gradients and moments are f32 (master weights), got {:?}",
                    t.dtype()
                ),
            ));
        }
        if !t.device().same_device(first.device()) {
            return Err(cuda_err(
                ADAMW,
                "all tensors of a group must be on one device",
            ));
        }
    }
    Ok(first.device().as_cuda_device()?.clone())
}

/// One fused AdamW step on one tensor: θ in place (the op's destination), m and v in place
/// through their device pointers, the step statistics into `stats` (3 doubles on the device).
struct FusedStep<'a> {
    grad: &'a Tensor,
    hp: AdamWParams,
    /// Device address of this tensor's three statistics.
    stats: u64,
}

impl InplaceOp3 for FusedStep<'_> {
    fn name(&self) -> &'static str {
        ADAMW
    }

    fn cpu_fwd(
        &self,
        _: &mut candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        Err(cuda_err(ADAMW, "the fused CUDA step was given CPU tensors"))
    }

    fn cuda_fwd(
        &self,
        th: &mut CudaStorage,
        tl: &Layout,
        m: &CudaStorage,
        ml: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<()> {
        let dev = th.device.clone();
        let stream = dev.cuda_stream();
        let (gs, gl) = self.grad.storage_and_layout();
        let gs = cuda(&gs, ADAMW, "grad")?;
        let gv = view::<f32>(gs, gl, ADAMW, "grad")?;
        let mv = view::<f32>(m, ml, ADAMW, "exp_avg")?;
        let vv = view::<f32>(v, vl, ADAMW, "exp_avg_sq")?;
        let n = tl.shape().elem_count();
        let (a, b) = tl.contiguous_offsets().ok_or(Error::NonContiguous {
            op: ADAMW,
            what: "param",
        })?;
        let mut theta = th.as_cuda_slice_mut::<f32>()?.slice_mut(a..b);
        let (m_ptr, _m_sync) = mv.device_ptr(&stream);
        let (v_ptr, _v_sync) = vv.device_ptr(&stream);
        let (t_ptr, _) = theta.device_ptr(&stream);
        let (g_ptr, _) = gv.device_ptr(&stream);
        if [v_ptr, t_ptr, g_ptr].contains(&m_ptr) || [t_ptr, g_ptr].contains(&v_ptr) {
            return Err(cuda_err(
                ADAMW,
                "param, grad and moments must not share memory",
            ));
        }
        let blocks = stride_blocks(n, REDUCE_BLOCKS);
        let mut partial = output::<f64>(&dev, 3 * blocks as usize)?;
        let f = function(&dev, "adamw.cu", "adamw_step_f32")?;
        let mut bld = stream.launch_builder(&f);
        bld.arg(&mut theta)
            .arg(&gv)
            .arg(&m_ptr)
            .arg(&v_ptr)
            .arg(&n)
            .arg(&self.hp)
            .arg(&mut partial);
        // SAFETY: matches adamw_step_f32(float* theta, const float* grad, float* m, float* v,
        // size_t n, AdamWParams hp, double* partial); all four buffers hold n floats, are
        // distinct (checked above) and live until the launch is queued (the views and their
        // storages are borrowed for this call; frees are ordered on this one stream). The
        // kernel writes m and v through their addresses: these are device memory no host
        // reference sees, and the moments are not read by anyone else on this stream while
        // it runs. `partial` holds 3 doubles per block of the grid-stride loop.
        if n > 0 {
            unsafe { bld.launch(config((blocks, 1), BLOCK)) }.w()?;
        }
        let bi = if n > 0 { blocks as i32 } else { 0 };
        let f = function(&dev, "adamw.cu", "adamw_stats_finish")?;
        let mut bld = stream.launch_builder(&f);
        bld.arg(&partial).arg(&bi).arg(&self.stats);
        // SAFETY: matches adamw_stats_finish(const double* partial, int blocks,
        // double* stats): one thread reads `bi` triples of `partial` and writes 3 doubles at
        // `stats`, a slot of the caller's statistics buffer reserved for this tensor.
        unsafe { bld.launch(config((1, 1), 1)) }.w()?;
        Ok(())
    }
}

/// [`crate::adamw_step`] on CUDA: one fused kernel per tensor writing θ, m and v, and the
/// statistics of every tensor copied to the host once at the end. f32 (master weights).
pub(crate) fn adamw_step(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    hp: &AdamWHparams,
) -> Result<Vec<AdamWStats>> {
    let Some(first) = params.first() else {
        return Ok(Vec::new());
    };
    let dev = adamw_device(first, params, grads, exp_avg, exp_avg_sq)?;
    let stats = dev.alloc_zeros::<f64>(3 * params.len())?;
    let stream = dev.cuda_stream();
    let (base, sync) = stats.device_ptr(&stream);
    let hp32 = AdamWParams::new(hp);
    for i in 0..params.len() {
        let g = grads[i].contiguous()?;
        let op = FusedStep {
            grad: &g,
            hp: hp32,
            stats: base + (3 * i * std::mem::size_of::<f64>()) as u64,
        };
        params[i].inplace_op3(exp_avg[i], exp_avg_sq[i], &op)?;
    }
    drop(sync);
    let host = dev.clone_dtoh(&stats)?;
    Ok(host
        .chunks_exact(3)
        .map(|s| AdamWStats {
            update_sq: s[0],
            param_sq: s[1],
            max_abs_update: s[2],
        })
        .collect())
}

/// [`crate::adamw_step_finite`] on CUDA: one read-only kernel per tensor computing the step
/// as [`adamw_step`] would and raising one shared device flag if any new θ, m or v is not
/// finite; the flag is copied to the host once at the end. f32 (master weights).
pub(crate) fn adamw_step_finite(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avg: &[&Tensor],
    exp_avg_sq: &[&Tensor],
    hp: &AdamWHparams,
) -> Result<bool> {
    let Some(first) = params.first() else {
        return Ok(true);
    };
    let dev = adamw_device(first, params, grads, exp_avg, exp_avg_sq)?;
    let mut nonfinite = dev.alloc_zeros::<i32>(1)?;
    let stream = dev.cuda_stream();
    let hp32 = AdamWParams::new(hp);
    let f = function(&dev, "adamw.cu", "adamw_check_f32")?;
    for i in 0..params.len() {
        let g = grads[i].contiguous()?;
        let (ts, tl) = params[i].storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let (ms, ml) = exp_avg[i].storage_and_layout();
        let (vs, vl) = exp_avg_sq[i].storage_and_layout();
        let tv = view::<f32>(cuda(&ts, ADAMW, "param")?, tl, ADAMW, "param")?;
        let gv = view::<f32>(cuda(&gs, ADAMW, "grad")?, gl, ADAMW, "grad")?;
        let mv = view::<f32>(cuda(&ms, ADAMW, "exp_avg")?, ml, ADAMW, "exp_avg")?;
        let vv = view::<f32>(cuda(&vs, ADAMW, "exp_avg_sq")?, vl, ADAMW, "exp_avg_sq")?;
        let n = tl.shape().elem_count();
        let blocks = stride_blocks(n, REDUCE_BLOCKS);
        let mut bld = stream.launch_builder(&f);
        bld.arg(&tv)
            .arg(&gv)
            .arg(&mv)
            .arg(&vv)
            .arg(&n)
            .arg(&hp32)
            .arg(&mut nonfinite);
        // SAFETY: matches adamw_check_f32(const float* theta, const float* grad,
        // const float* m, const float* v, size_t n, AdamWParams hp, int* nonfinite); the four
        // views hold n floats each (shapes checked by the caller) and are only read, and live
        // until the launch is queued (their storages are read-locked for this iteration;
        // frees are ordered on this one stream). The kernel writes nothing but the one int
        // of `nonfinite`, which no other kernel touches.
        if n > 0 {
            unsafe { bld.launch(config((blocks, 1), BLOCK)) }.w()?;
        }
    }
    let host = dev.clone_dtoh(&nonfinite)?;
    Ok(host[0] == 0)
}

// ---------------------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------------------

const REDUCE: &str = "reduce";

/// The device and element dtype shared by `ts` if they are all contiguous CUDA tensors of
/// one device and one dtype the kernels take; `None` sends the caller to its fallback.
fn reducible(ts: &[&Tensor]) -> Option<CudaDevice> {
    let first = ts.first()?;
    let dev = first.device().as_cuda_device().ok()?;
    let ok = ts.iter().all(|t| {
        t.device().same_device(first.device())
            && t.dtype() == first.dtype()
            && matches!(t.dtype(), DType::F32 | DType::BF16)
            && t.is_contiguous()
    });
    ok.then(|| dev.clone())
}

/// One two-stage f64 reduction per group of tensors, results gathered into one buffer and
/// copied to the host once. `kernel` is the first stage's name without its dtype suffix;
/// every group has the same number of tensors (1, 2 or 3), read in order.
fn reduce_groups(kernel: &str, groups: &[Vec<&Tensor>]) -> Result<Option<Vec<f64>>> {
    let flat: Vec<&Tensor> = groups.iter().flatten().copied().collect();
    if groups.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let Some(dev) = reducible(&flat) else {
        return Ok(None);
    };
    let mut out = dev.alloc_zeros::<f64>(groups.len())?;
    let suffix = match flat[0].dtype() {
        DType::BF16 => "bf16",
        _ => "f32",
    };
    let first = function(&dev, "reduce.cu", &format!("{kernel}_{suffix}"))?;
    let finish = function(&dev, "reduce.cu", "reduce_finish")?;
    let stream = dev.cuda_stream();
    for (i, group) in groups.iter().enumerate() {
        let n = group[0].elem_count();
        let blocks = if n > 0 {
            stride_blocks(n, REDUCE_BLOCKS)
        } else {
            0
        };
        let mut partial = output::<f64>(&dev, blocks as usize)?;
        let guards: Vec<_> = group.iter().map(|t| t.storage_and_layout()).collect();
        let mut bufs = Vec::with_capacity(group.len());
        for (s, l) in &guards {
            let s = cuda(s, REDUCE, "input")?;
            bufs.push(dispatch_view(s, l)?);
        }
        if blocks > 0 {
            let mut bld = stream.launch_builder(&first);
            for buf in &bufs {
                bld.arg(buf);
            }
            bld.arg(&n).arg(&mut partial);
            // SAFETY: matches {sum_sq,dot,dot_diff}_<T>(const T* …, size_t n,
            // double* partial) with one input pointer per tensor of the group (1, 2 or 3),
            // each holding n elements (shapes checked by the caller); a grid-stride loop
            // whose every block writes its partial.
            unsafe { bld.launch(config((blocks, 1), BLOCK)) }.w()?;
        }
        let bi = blocks as i32;
        let mut slot = out.slice_mut(i..i + 1);
        let mut bld = stream.launch_builder(&finish);
        bld.arg(&partial).arg(&bi).arg(&mut slot);
        // SAFETY: matches reduce_finish(const double* partial, int blocks, double* out): one
        // thread sums `blocks` partials into this group's slot.
        unsafe { bld.launch(config((1, 1), 1)) }.w()?;
    }
    Ok(Some(dev.clone_dtoh(&out)?))
}

/// The device address of a tensor's contiguous elements, as a kernel argument.
fn dispatch_view(s: &CudaStorage, l: &Layout) -> Result<u64> {
    let (a, _) = l.contiguous_offsets().ok_or(Error::NonContiguous {
        op: REDUCE,
        what: "input",
    })?;
    let stream = s.device.cuda_stream();
    let (base, size) = match s.dtype() {
        DType::F32 => (s.as_cuda_slice::<f32>()?.device_ptr(&stream).0, 4),
        DType::BF16 => (s.as_cuda_slice::<bf16>()?.device_ptr(&stream).0, 2),
        dtype => return Err(Error::UnsupportedCudaDType { op: REDUCE, dtype }.into()),
    };
    Ok(base + (a * size) as u64)
}

/// Σx² of each tensor in f64, or `None` unless all are contiguous f32/bf16 CUDA tensors of
/// one device and dtype.
pub(crate) fn sum_sq_many(ts: &[&Tensor]) -> Result<Option<Vec<f64>>> {
    let groups: Vec<Vec<&Tensor>> = ts.iter().map(|t| vec![*t]).collect();
    reduce_groups("sum_sq", &groups)
}

/// ⟨a, b⟩ of each pair in f64, or `None` as for [`sum_sq_many`] (or on mismatched shapes).
pub(crate) fn dot_many(pairs: &[(&Tensor, &Tensor)]) -> Result<Option<Vec<f64>>> {
    if pairs.iter().any(|(a, b)| a.dims() != b.dims()) {
        return Ok(None); // the caller reports the mismatch
    }
    let groups: Vec<Vec<&Tensor>> = pairs.iter().map(|(a, b)| vec![*a, *b]).collect();
    reduce_groups("dot", &groups)
}

/// ⟨g, a − b⟩ of each triple in f64, or `None` as for [`sum_sq_many`] (or on mismatched
/// shapes).
pub(crate) fn dot_diff_many(triples: &[(&Tensor, &Tensor, &Tensor)]) -> Result<Option<Vec<f64>>> {
    if triples
        .iter()
        .any(|(g, a, b)| g.dims() != a.dims() || a.dims() != b.dims())
    {
        return Ok(None); // the caller reports the mismatch
    }
    let groups: Vec<Vec<&Tensor>> = triples.iter().map(|(g, a, b)| vec![*g, *a, *b]).collect();
    reduce_groups("dot_diff", &groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every source compiles to a CUBIN exactly as at run time (the common header inlined,
    /// no CUDA include directory), for the H100/H200 generation. Needs only NVRTC, which a
    /// CUDA build links.
    #[test]
    fn every_source_compiles_to_a_cubin() {
        for (file, src) in CUDA_SOURCES {
            let cubin = compile_cubin(file, (9, 0)).unwrap_or_else(|e| panic!("{e}"));
            assert!(cubin.starts_with(b"\x7fELF"), "{file}: not an ELF image");
            for k in crate::cuda_kernel_names(src) {
                let name = k.as_bytes();
                assert!(
                    cubin.windows(name.len()).any(|w| w == name),
                    "{file}: kernel {k} missing from the CUBIN"
                );
            }
        }
    }

    /// Without a usable driver (none, or the build-time stub), asking for a device is an
    /// error that says why, not a panic.
    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        if let Err(why) = cuda_device_name(0) {
            assert!(why.contains("CUDA"), "{why}");
        }
        let Err(why) = cuda_device_name(usize::MAX / 2) else {
            panic!("a device with that ordinal cannot exist");
        };
        assert!(why.contains("CUDA"), "{why}");
    }
}
