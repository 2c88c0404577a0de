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
//!
//! Which kernels an op launches, with what grid, block and arguments, is not decided here:
//! `crate::launch` describes every launch once, and [`Driver`] hands each description to
//! `cuLaunchKernel` as it is. The CPU executor (`crate::emu`) runs the same descriptions, so
//! the geometry and argument lists a GPU gets are the ones every test run executes.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda::WrapErr;
use candle_core::op::BackpropOp;
use candle_core::{
    CudaDevice, CudaStorage, DType, InplaceOp3, Layout, Result, Shape, Storage, Tensor,
};
use cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, SyncOnDrop,
};
use half::bf16;

use crate::adamw::{AdamWHparams, AdamWStats};
use crate::cuda::{CUDA_COMMON_HEADER, CUDA_SOURCES};
use crate::error::Error;
use crate::launch::{self, AdamWParams, AttnDims, DevPtr, Elem, Gpu, Launch, Reduction};

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
// Launching: the shared launch descriptions of `crate::launch`, run by the driver
// ---------------------------------------------------------------------------------------

/// Runs [`Launch`]es on one device's candle stream: the kernel's CUfunction, the launch's
/// geometry and its parameter array go to `cuLaunchKernel` unchanged. Temporaries are freed
/// (stream-ordered) when it is dropped, after the launches that use them are queued.
pub(crate) struct Driver {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    scratch: Vec<CudaSlice<u8>>,
}

impl Driver {
    pub(crate) fn new(dev: &CudaDevice) -> Self {
        Self {
            dev: dev.clone(),
            stream: dev.cuda_stream(),
            scratch: Vec::new(),
        }
    }
}

impl Gpu for Driver {
    fn scratch(&mut self, bytes: usize) -> std::result::Result<DevPtr, Error> {
        // SAFETY: scratch contents are unspecified by contract: the kernels that use a
        // temporary write it before reading it.
        let s = unsafe { self.dev.alloc::<u8>(bytes.max(1)) }.map_err(|e| Error::Cuda {
            op: "scratch",
            msg: e.to_string(),
        })?;
        let (p, sync) = s.device_ptr(&self.stream);
        drop(sync);
        self.scratch.push(s);
        Ok(p)
    }

    fn launch(&mut self, l: &Launch) -> std::result::Result<(), Error> {
        let f = function(&self.dev, l.source, &l.kernel).map_err(|e| Error::Cuda {
            op: "launch",
            msg: e.to_string(),
        })?;
        let mut params = l.params();
        // SAFETY: the launch's arguments match the kernel's parameters (the op functions of
        // `crate::launch` build them per kernel, and the CPU executor checks every list
        // against the compiled kernel's parameter sizes); `params` points at them and lives
        // across the call; every pointer argument is a live device buffer of this stream
        // (its guard or owner outlives the queued launch: frees are stream-ordered).
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                l.grid,
                l.block,
                l.shared_bytes,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| Error::Cuda {
            op: "launch",
            msg: format!("{}: {e}", l.kernel),
        })
    }
}

fn lerr(e: Error) -> candle_core::Error {
    e.into()
}

/// The kernels' element type of a tensor dtype.
fn elem(op: &'static str, dtype: DType) -> Result<Elem> {
    match dtype {
        DType::F32 => Ok(Elem::F32),
        DType::BF16 => Ok(Elem::Bf16),
        dtype => Err(Error::UnsupportedCudaDType { op, dtype }.into()),
    }
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

/// Device address of the contiguous elements of `l` in `s`, with the guard that orders the
/// access on `stream` (keep it until the launches that use the address are queued).
fn addr<'a>(
    s: &'a CudaStorage,
    l: &Layout,
    stream: &'a CudaStream,
    op: &'static str,
    what: &'static str,
) -> Result<(DevPtr, SyncOnDrop<'a>)> {
    let (a, _) = l
        .contiguous_offsets()
        .ok_or(Error::NonContiguous { op, what })?;
    let (base, size, sync) = match s.dtype() {
        DType::F32 => {
            let (p, g) = s.as_cuda_slice::<f32>()?.device_ptr(stream);
            (p, 4, g)
        }
        DType::BF16 => {
            let (p, g) = s.as_cuda_slice::<bf16>()?.device_ptr(stream);
            (p, 2, g)
        }
        DType::U32 => {
            let (p, g) = s.as_cuda_slice::<u32>()?.device_ptr(stream);
            (p, 4, g)
        }
        dtype => return Err(Error::UnsupportedCudaDType { op, dtype }.into()),
    };
    Ok((base + (a * size) as u64, sync))
}

/// A fresh device buffer of `n` elements of `dtype` that the op's kernels fill completely.
fn fresh(dev: &CudaDevice, dtype: DType, n: usize) -> Result<CudaStorage> {
    let n = n.max(1);
    // SAFETY: every caller launches kernels that write all elements before anything reads
    // them (and never reads them itself).
    unsafe {
        Ok(match dtype {
            DType::F32 => CudaStorage::wrap_cuda_slice(dev.alloc::<f32>(n)?, dev.clone()),
            DType::BF16 => CudaStorage::wrap_cuda_slice(dev.alloc::<bf16>(n)?, dev.clone()),
            DType::F64 => CudaStorage::wrap_cuda_slice(dev.alloc::<f64>(n)?, dev.clone()),
            dtype => {
                return Err(Error::UnsupportedCudaDType { op: "alloc", dtype }.into());
            }
        })
    }
}

/// A tensor (no autograd history) over a device buffer.
fn tensor(s: CudaStorage, dims: &[usize]) -> Tensor {
    Tensor::from_storage(
        Storage::Cuda(s),
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

/// A tensor's storage and layout, read-locked, as CUDA storage.
macro_rules! cuda_in {
    ($t:expr, $op:expr, $what:expr, $guard:ident, $s:ident, $l:ident) => {
        let $guard = $t.storage_and_layout();
        let $s = cuda(&$guard.0, $op, $what)?;
        let $l = $guard.1;
    };
}

// ---------------------------------------------------------------------------------------
// The ops
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

// ---------------------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------------------

const ADAMW: &str = "adamw_step";

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
/// through their device addresses, the step statistics into `stats` (3 doubles on the
/// device).
struct FusedStep<'a> {
    grad: &'a Tensor,
    hp: AdamWParams,
    /// Device address of this tensor's three statistics.
    stats: DevPtr,
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
        let st = dev.cuda_stream();
        let n = tl.shape().elem_count();
        cuda_in!(self.grad, ADAMW, "grad", gg, gs, gl);
        let (a, _) = tl.contiguous_offsets().ok_or(Error::NonContiguous {
            op: ADAMW,
            what: "param",
        })?;
        let (mp, _m) = addr(m, ml, &st, ADAMW, "exp_avg")?;
        let (vp, _v) = addr(v, vl, &st, ADAMW, "exp_avg_sq")?;
        let (gp, _g) = addr(gs, gl, &st, ADAMW, "grad")?;
        let theta = th.as_cuda_slice_mut::<f32>()?;
        let (base, _t) = theta.device_ptr_mut(&st);
        let tp = base + (4 * a) as u64;
        if [vp, tp, gp].contains(&mp) || [tp, gp].contains(&vp) {
            return Err(cuda_err(
                ADAMW,
                "param, grad and moments must not share memory",
            ));
        }
        // The kernel writes m and v through their addresses: device memory no host reference
        // sees, and no one else on this stream reads the moments while it runs.
        let mut d = Driver::new(&dev);
        launch::adamw_step(&mut d, Elem::F32, [tp, gp, mp, vp], n, self.hp, self.stats)
            .map_err(lerr)?;
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
    let flag = dev.alloc_zeros::<i32>(1)?;
    let st = dev.cuda_stream();
    let hp32 = AdamWParams::new(hp);
    {
        let (fp, _f) = flag.device_ptr(&st);
        let mut d = Driver::new(&dev);
        for i in 0..params.len() {
            let g = grads[i].contiguous()?;
            cuda_in!(params[i], ADAMW, "param", g1, ts, tl);
            cuda_in!(g, ADAMW, "grad", g2, gs, gl);
            cuda_in!(exp_avg[i], ADAMW, "exp_avg", g3, ms, ml);
            cuda_in!(exp_avg_sq[i], ADAMW, "exp_avg_sq", g4, vs, vl);
            let (tp, _a) = addr(ts, tl, &st, ADAMW, "param")?;
            let (gp, _b) = addr(gs, gl, &st, ADAMW, "grad")?;
            let (mp, _c) = addr(ms, ml, &st, ADAMW, "exp_avg")?;
            let (vp, _d) = addr(vs, vl, &st, ADAMW, "exp_avg_sq")?;
            let n = tl.shape().elem_count();
            launch::adamw_check(&mut d, Elem::F32, [tp, gp, mp, vp], n, hp32, fp).map_err(lerr)?;
        }
    }
    let host = dev.clone_dtoh(&flag)?;
    Ok(host[0] == 0)
}

// ---------------------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------------------

/// The device and element type shared by `ts` if they are all contiguous CUDA tensors of
/// one device and one dtype the kernels take; `None` sends the caller to its fallback.
fn reducible(ts: &[&Tensor]) -> Option<(CudaDevice, Elem)> {
    let first = ts.first()?;
    let dev = first.device().as_cuda_device().ok()?;
    let e = elem("reduce", first.dtype()).ok()?;
    let ok = ts.iter().all(|t| {
        t.device().same_device(first.device()) && t.dtype() == first.dtype() && t.is_contiguous()
    });
    ok.then(|| (dev.clone(), e))
}

/// One reduction per group of tensors, results gathered into one buffer and copied to the
/// host once; every group has `r.inputs()` tensors, read in order.
fn reduce_groups(r: Reduction, groups: &[Vec<&Tensor>]) -> Result<Option<Vec<f64>>> {
    if groups.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let flat: Vec<&Tensor> = groups.iter().flatten().copied().collect();
    let Some((dev, e)) = reducible(&flat) else {
        return Ok(None);
    };
    let out = dev.alloc_zeros::<f64>(groups.len())?;
    let st = dev.cuda_stream();
    {
        let (base, _o) = out.device_ptr(&st);
        let mut d = Driver::new(&dev);
        for (i, group) in groups.iter().enumerate() {
            let guards: Vec<_> = group.iter().map(|t| t.storage_and_layout()).collect();
            let mut ptrs = Vec::with_capacity(group.len());
            let mut syncs = Vec::with_capacity(group.len());
            for (s, l) in &guards {
                let (p, g) = addr(cuda(s, "reduce", "input")?, l, &st, "reduce", "input")?;
                ptrs.push(p);
                syncs.push(g);
            }
            let slot = base + (8 * i) as u64;
            launch::reduce(&mut d, r, e, &ptrs, group[0].elem_count(), slot).map_err(lerr)?;
        }
    }
    Ok(Some(dev.clone_dtoh(&out)?))
}

/// Σx² of each tensor in f64, or `None` unless all are contiguous f32/bf16 CUDA tensors of
/// one device and dtype.
pub(crate) fn sum_sq_many(ts: &[&Tensor]) -> Result<Option<Vec<f64>>> {
    let groups: Vec<Vec<&Tensor>> = ts.iter().map(|t| vec![*t]).collect();
    reduce_groups(Reduction::SumSq, &groups)
}

/// ⟨a, b⟩ of each pair in f64, or `None` as for [`sum_sq_many`] (or on mismatched shapes).
pub(crate) fn dot_many(pairs: &[(&Tensor, &Tensor)]) -> Result<Option<Vec<f64>>> {
    if pairs.iter().any(|(a, b)| a.dims() != b.dims()) {
        return Ok(None); // the caller reports the mismatch
    }
    let groups: Vec<Vec<&Tensor>> = pairs.iter().map(|(a, b)| vec![*a, *b]).collect();
    reduce_groups(Reduction::Dot, &groups)
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
    reduce_groups(Reduction::DotDiff, &groups)
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
