//! The executor backend: the CUDA sources' launches run by the CPU executor
//! ([`crate::emu::Executor`]) on host memory, with GEMMs done on the CPU. A training step on
//! it is the GPU step with the GEMMs swapped: the same kernels, launch geometry, argument
//! lists, layouts and bf16 roundings.
//!
//! GEMMs read their operands as stored (f32, or bf16 widened exactly), multiply-accumulate in
//! f32 with the `gemm` crate ([`crate::slices::matmul`], the CPU backend's GEMM) and store
//! the result once in the output's type (bf16 rounded to nearest even): what a cuBLAS GEMM
//! with f32 compute type returns, up to summation order.

use half::bf16;

use super::launched::{Device, Gemm, Launched, Operand};
use super::{Dt, buf_err};
use crate::emu::{Ctx, Executor, HostBuf};
use crate::error::Error;
use crate::launch::{DevPtr, Elem};
use crate::slices::{self, Mat};

/// Host memory and CPU GEMMs for [`Launched`].
pub struct EmuDevice<'e> {
    ex: &'e Executor,
}

/// The executor backend.
pub type Emu<'e> = Launched<EmuDevice<'e>>;

/// A backend that runs the step's launches on `ex`.
pub fn backend(ex: &Executor) -> Emu<'_> {
    Launched::new(EmuDevice { ex }, "cuda-emu")
}

/// The f32 values of a GEMM operand (bf16 widened).
///
/// # Safety
/// `o.ptr` must address `o.rows · o.cols` live host elements of `e`.
unsafe fn operand_f32(o: &Operand, e: Elem) -> Vec<f32> {
    let n = o.rows * o.cols;
    // SAFETY: the caller's contract.
    unsafe {
        match e {
            Elem::F32 => std::slice::from_raw_parts(o.ptr as *const f32, n).to_vec(),
            Elem::Bf16 => std::slice::from_raw_parts(o.ptr as *const u16, n)
                .iter()
                .map(|&b| bf16::from_bits(b).to_f32())
                .collect(),
        }
    }
}

impl<'e> Device for EmuDevice<'e> {
    type Mem = HostBuf;
    type Gpu<'a>
        = Ctx<'e>
    where
        Self: 'a;

    fn alloc(&self, len: usize, dt: Dt, zero: bool) -> Result<(HostBuf, DevPtr), Error> {
        let bytes = len * dt.size();
        let mut b = if zero {
            HostBuf::zeros(bytes)
        } else {
            HostBuf::garbage(bytes)
        };
        let p = b.ptr();
        Ok((b, p))
    }

    fn upload(&self, bytes: &[u8], _dt: Dt) -> Result<(HostBuf, DevPtr), Error> {
        let mut b = HostBuf::from_bytes(bytes);
        let p = b.ptr();
        Ok((b, p))
    }

    fn download(&self, ptr: DevPtr, bytes: usize) -> Result<Vec<u8>, Error> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: a buffer's address on this device is a host address of at least its
        // bytes (owned memory, or borrowed under `DevBuf::borrowed`'s contract), and the
        // executor's launches have finished when they return.
        Ok(unsafe { std::slice::from_raw_parts(ptr as *const u8, bytes) }.to_vec())
    }

    fn gpu(&self) -> Ctx<'e> {
        self.ex.context()
    }

    fn gemm(&self, g: Gemm) -> Result<(), Error> {
        let (m, n, _) = g.mnk();
        if m * n == 0 {
            return Ok(());
        }
        if g.ab == Elem::F32 && g.c_elem == Elem::F32 {
            // SAFETY: the backend checked each buffer's length against its operand's shape
            // (a and b) and m·n (c); all are live host memory and c is a distinct, writable
            // buffer (the backend's `&mut` output).
            let (a, b, c) = unsafe {
                (
                    std::slice::from_raw_parts(g.a.ptr as *const f32, g.a.rows * g.a.cols),
                    std::slice::from_raw_parts(g.b.ptr as *const f32, g.b.rows * g.b.cols),
                    std::slice::from_raw_parts_mut(g.c as *mut f32, m * n),
                )
            };
            slices::matmul(c, mat(a, &g.a), mat(b, &g.b), g.accumulate);
            return Ok(());
        }
        if g.ab == Elem::F32 {
            return Err(buf_err("gemm", "an f32 GEMM cannot write bf16"));
        }
        // SAFETY: as above, for bf16 operands.
        let (a, b) = unsafe { (operand_f32(&g.a, g.ab), operand_f32(&g.b, g.ab)) };
        let c_op = Operand {
            ptr: g.c,
            rows: m,
            cols: n,
            transposed: false,
        };
        let mut c = if g.accumulate {
            // SAFETY: c holds m·n elements of c_elem (checked by the backend).
            unsafe { operand_f32(&c_op, g.c_elem) }
        } else {
            vec![0.0; m * n]
        };
        slices::matmul(&mut c, mat(&a, &g.a), mat(&b, &g.b), g.accumulate);
        // SAFETY: c is the backend's distinct, writable output of m·n elements of c_elem.
        unsafe {
            match g.c_elem {
                Elem::F32 => {
                    std::slice::from_raw_parts_mut(g.c as *mut f32, m * n).copy_from_slice(&c)
                }
                Elem::Bf16 => {
                    let out = std::slice::from_raw_parts_mut(g.c as *mut u16, m * n);
                    for (o, &x) in out.iter_mut().zip(&c) {
                        *o = bf16::from_f32(x).to_bits();
                    }
                }
            }
        }
        Ok(())
    }
}

fn mat<'a>(data: &'a [f32], o: &Operand) -> Mat<'a> {
    if o.transposed {
        Mat::t(data, o.rows, o.cols)
    } else {
        Mat::new(data, o.rows, o.cols)
    }
}
