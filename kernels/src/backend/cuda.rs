//! The GPU backend (feature `cuda`): the step's launches through the driver
//! ([`crate::cuda_launch`]'s `Driver`, NVRTC-compiled sources) on a candle CUDA device's
//! stream, GEMMs through cuBLAS on the same stream (candle's handle): `sgemm` for f32, and
//! `gemm_ex` with bf16 operands, f32 compute and a bf16 or f32 output for bf16. Everything
//! is queued in stream order with candle's own work; only downloads wait.
//!
//! Buffers are typed device allocations ([`CudaMem`]) so that a gradient leaves the step as a
//! candle tensor without a copy ([`into_tensor`]); parameters are borrowed in place
//! ([`with_borrowed`]).

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Shape, Storage, Tensor};
use cudarc::cublas::{CudaBlas, result as blas, sys as bsys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use half::bf16;

use super::launched::{Device, Gemm, Launched};
use super::{DevBuf, Dt, buf_err};
use crate::cuda_launch::Driver;
use crate::error::Error;
use crate::launch::{DevPtr, Elem, Gpu, Launch};

fn cuda_err(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Cuda {
        op,
        msg: e.to_string(),
    }
}

/// Device memory of one buffer, typed so it can become a candle tensor.
pub enum CudaMem {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<bf16>),
    U32(CudaSlice<u32>),
}

impl CudaMem {
    fn ptr(&self, stream: &CudaStream) -> DevPtr {
        // The address only: every use is queued on this stream (the one candle and cuBLAS
        // use), so stream order is the synchronisation and the event guard can go.
        match self {
            CudaMem::F32(s) => s.device_ptr(stream).0,
            CudaMem::Bf16(s) => s.device_ptr(stream).0,
            CudaMem::U32(s) => s.device_ptr(stream).0,
        }
    }
}

/// One op's launches on the device's stream (the crate's driver; temporaries are freed,
/// stream-ordered, when it is dropped).
pub struct Launches(Driver);

impl Gpu for Launches {
    fn scratch(&mut self, bytes: usize) -> Result<DevPtr, Error> {
        self.0.scratch(bytes)
    }

    fn launch(&mut self, l: &Launch) -> Result<(), Error> {
        self.0.launch(l)
    }
}

/// A candle CUDA device's stream, cuBLAS handle and memory for [`Launched`].
pub struct CudaDev {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    blas: Arc<CudaBlas>,
}

/// The GPU backend.
pub type Cuda = Launched<CudaDev>;

/// A backend on `dev`'s stream.
pub fn backend(dev: &CudaDevice) -> Cuda {
    Launched::new(
        CudaDev {
            dev: dev.clone(),
            stream: dev.cuda_stream(),
            blas: dev.cublas_handle(),
        },
        "cuda",
    )
}

impl CudaDev {
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }
}

/// A size as cuBLAS's `int`.
fn blas_int(what: &str, v: usize) -> Result<i32, Error> {
    i32::try_from(v)
        .map_err(|_| buf_err("gemm", format!("{what} = {v} exceeds cuBLAS's int range")))
}

fn data_type(e: Elem) -> bsys::cudaDataType {
    match e {
        Elem::F32 => bsys::cudaDataType::CUDA_R_32F,
        Elem::Bf16 => bsys::cudaDataType::CUDA_R_16BF,
    }
}

impl Device for CudaDev {
    type Mem = CudaMem;
    type Gpu<'a>
        = Launches
    where
        Self: 'a;

    fn alloc(&self, len: usize, dt: Dt, zero: bool) -> Result<(CudaMem, DevPtr), Error> {
        let n = len.max(1);
        let e = |x| cuda_err("alloc", x);
        // SAFETY (the non-zeroed allocations): a taken buffer's contents are unspecified by
        // the backend's contract; every op that takes one writes it before anything reads it.
        let mem = match (dt, zero) {
            (Dt::F32, true) => CudaMem::F32(self.stream.alloc_zeros::<f32>(n).map_err(e)?),
            (Dt::F32, false) => CudaMem::F32(unsafe { self.stream.alloc::<f32>(n) }.map_err(e)?),
            (Dt::Bf16, true) => CudaMem::Bf16(self.stream.alloc_zeros::<bf16>(n).map_err(e)?),
            (Dt::Bf16, false) => CudaMem::Bf16(unsafe { self.stream.alloc::<bf16>(n) }.map_err(e)?),
            (Dt::U32, true) => CudaMem::U32(self.stream.alloc_zeros::<u32>(n).map_err(e)?),
            (Dt::U32, false) => CudaMem::U32(unsafe { self.stream.alloc::<u32>(n) }.map_err(e)?),
        };
        let p = mem.ptr(&self.stream);
        Ok((mem, p))
    }

    fn upload(&self, bytes: &[u8], dt: Dt) -> Result<(CudaMem, DevPtr), Error> {
        let e = |x| cuda_err("upload", x);
        let mem = match dt {
            Dt::F32 => {
                let v: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                CudaMem::F32(self.stream.clone_htod(&v).map_err(e)?)
            }
            Dt::Bf16 => {
                let v: Vec<bf16> = bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_bits(u16::from_ne_bytes([c[0], c[1]])))
                    .collect();
                CudaMem::Bf16(self.stream.clone_htod(&v).map_err(e)?)
            }
            Dt::U32 => {
                let v: Vec<u32> = bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                CudaMem::U32(self.stream.clone_htod(&v).map_err(e)?)
            }
        };
        let p = mem.ptr(&self.stream);
        Ok((mem, p))
    }

    fn download(&self, ptr: DevPtr, bytes: usize) -> Result<Vec<u8>, Error> {
        let mut host = vec![0u8; bytes];
        if bytes == 0 {
            return Ok(host);
        }
        // SAFETY: `ptr` addresses at least `bytes` bytes of device memory of this context
        // (a buffer's invariant); the copy is queued after every launch that writes it, and
        // `host` outlives it: the stream is synchronised before `host` is returned.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(&mut host, ptr, self.stream.cu_stream())
        }
        .map_err(|e| cuda_err("download", e))?;
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("download", e))?;
        Ok(host)
    }

    fn gpu(&self) -> Launches {
        Launches(Driver::new(&self.dev))
    }

    /// Row-major c (m, n) = a · b is column-major cᵀ (n, m) = bᵀ · aᵀ: cuBLAS gets b first
    /// and a second, each transposed when the row-major operand is used transposed, with
    /// its stored row length as leading dimension.
    fn gemm(&self, g: Gemm) -> Result<(), Error> {
        let (m, n, k) = g.mnk();
        if m == 0 || n == 0 {
            return Ok(());
        }
        let op = |t: bool| {
            if t {
                bsys::cublasOperation_t::CUBLAS_OP_T
            } else {
                bsys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (mi, ni, ki) = (blas_int("m", m)?, blas_int("n", n)?, blas_int("k", k)?);
        let (lda, ldb) = (blas_int("lda", g.b.cols)?, blas_int("ldb", g.a.cols)?);
        let alpha = 1.0f32;
        let beta = if g.accumulate { 1.0f32 } else { 0.0 };
        let handle = *self.blas.handle();
        let e = |x| cuda_err("gemm", x);
        // cuBLAS runs in the calling thread's current context: make it this device's.
        self.stream
            .context()
            .bind_to_thread()
            .map_err(|x| cuda_err("gemm", x))?;
        match (g.ab, g.c_elem) {
            // SAFETY: the backend checked every buffer against its operand's shape: b holds
            // (rows × cols) = (n, k) or (k, n) elements, a (m, k) or (k, m), c m·n, all f32
            // device memory of this context; the handle is bound to this stream, so the GEMM
            // is ordered after the launches that wrote a and b. k = 0 with beta 0 writes
            // zeros, as the other backends do.
            (Elem::F32, Elem::F32) => unsafe {
                blas::sgemm(
                    handle,
                    op(g.b.transposed),
                    op(g.a.transposed),
                    ni,
                    mi,
                    ki,
                    &alpha,
                    g.b.ptr as *const f32,
                    lda,
                    g.a.ptr as *const f32,
                    ldb,
                    &beta,
                    g.c as *mut f32,
                    ni,
                )
            }
            .map_err(e),
            (Elem::Bf16, c_elem) => {
                // SAFETY: as for sgemm, with bf16 operands and a c of `c_elem`; the scale
                // factors are f32 as CUBLAS_COMPUTE_32F requires.
                unsafe {
                    blas::gemm_ex(
                        handle,
                        op(g.b.transposed),
                        op(g.a.transposed),
                        ni,
                        mi,
                        ki,
                        (&alpha as *const f32).cast(),
                        g.b.ptr as *const std::ffi::c_void,
                        data_type(Elem::Bf16),
                        lda,
                        g.a.ptr as *const std::ffi::c_void,
                        data_type(Elem::Bf16),
                        ldb,
                        (&beta as *const f32).cast(),
                        g.c as *mut std::ffi::c_void,
                        data_type(c_elem),
                        ni,
                        bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                        bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                    )
                }
                .map_err(e)
            }
            (Elem::F32, Elem::Bf16) => Err(buf_err("gemm", "an f32 GEMM cannot write bf16")),
        }
    }
}

/// Runs `f` with read-only buffers over `ts` (contiguous f32 or bf16 CUDA tensors on `dev`),
/// holding each tensor's storage lock until `f` returns, so nothing writes them while the
/// step queues its work (later writers are ordered after it on the stream).
pub fn with_borrowed<R>(
    dev: &CudaDevice,
    ts: &[&Tensor],
    f: impl FnOnce(&[DevBuf<CudaMem>]) -> R,
) -> Result<R, Error> {
    let stream = dev.cuda_stream();
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut bufs = Vec::with_capacity(ts.len());
    for (s, l) in &guards {
        let Storage::Cuda(c) = &**s else {
            return Err(buf_err("cuda", "a borrowed tensor is not on a CUDA device"));
        };
        let (start, end) = l.contiguous_offsets().ok_or(Error::NonContiguous {
            op: "cuda",
            what: "a borrowed tensor",
        })?;
        let (base, dt) = match c.dtype() {
            DType::F32 => (
                c.as_cuda_slice::<f32>()
                    .map_err(|e| cuda_err("cuda", e))?
                    .device_ptr(&stream)
                    .0,
                Dt::F32,
            ),
            DType::BF16 => (
                c.as_cuda_slice::<bf16>()
                    .map_err(|e| cuda_err("cuda", e))?
                    .device_ptr(&stream)
                    .0,
                Dt::Bf16,
            ),
            dtype => return Err(Error::UnsupportedCudaDType { op: "cuda", dtype }),
        };
        let ptr = base + (start * dt.size()) as u64;
        // SAFETY: `ptr` addresses the tensor's `end - start` contiguous elements of `dt` on
        // this device; the read guard in `guards` keeps the storage alive and unwritten
        // until `f` returns, and the buffer does not outlive `f`'s borrow.
        bufs.push(unsafe { DevBuf::borrowed(ptr, end - start, dt) });
    }
    let r = f(&bufs);
    drop(bufs);
    drop(guards);
    Ok(r)
}

/// An owned f32 buffer of `dev` as a candle tensor of `dims` (no copy).
pub fn into_tensor(
    buf: DevBuf<CudaMem>,
    dev: &CudaDevice,
    dims: &[usize],
) -> Result<Tensor, Error> {
    use super::Buffer;
    let n: usize = dims.iter().product();
    if buf.len() != n {
        return Err(buf_err(
            "cuda",
            format!("a buffer of {} elements as a tensor of {dims:?}", buf.len()),
        ));
    }
    let storage = match buf.into_mem() {
        Some(CudaMem::F32(s)) => CudaStorage::wrap_cuda_slice(s, dev.clone()),
        Some(CudaMem::Bf16(s)) => CudaStorage::wrap_cuda_slice(s, dev.clone()),
        _ => return Err(buf_err("cuda", "only owned float buffers become tensors")),
    };
    Ok(Tensor::from_storage(
        Storage::Cuda(storage),
        Shape::from_dims(dims),
        BackpropOp::none(),
        false,
    ))
}
