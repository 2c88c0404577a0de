//! One implementation of [`Backend`](super::Backend) for everything that runs the CUDA
//! sources: each op is the launch of [`crate::launch`] (or [`crate::launch::step`]) a GPU
//! gets, handed to the [`Device`]'s [`Gpu`]; only memory and the GEMM differ between the CPU
//! executor and a GPU, and those are the [`Device`]'s.
//!
//! Every op checks its buffers' lengths and element types before it launches: a launch
//! trusts its pointers, so a mismatch here would be an out-of-bounds access there.
//!
//! This file has the types: the [`Device`] trait, its GEMM description, buffers and the
//! pooled backend [`Launched`]; `ops.rs` implements the backend's ops for it.

use std::sync::Mutex;

use super::{Buffer, Dt, buf_err, float_of, need};
use crate::error::Error;
use crate::launch::{DevPtr, Elem, Gpu};

mod ops;

/// One operand of a [`Gemm`], row-major as [`crate::slices::Mat`]: `rows × cols` elements at
/// `ptr`, used as is or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    pub ptr: DevPtr,
    pub rows: usize,
    pub cols: usize,
    pub transposed: bool,
}

impl Operand {
    /// (rows, cols) as used.
    pub fn used(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }
}

/// c (m, n) = a · b (or c += a · b with `accumulate`), row-major; a and b hold `ab`
/// elements, c holds `c_elem` (f32 over bf16 operands for weight gradients). f32 compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gemm {
    pub c: DevPtr,
    pub c_elem: Elem,
    pub a: Operand,
    pub b: Operand,
    pub ab: Elem,
    pub accumulate: bool,
}

impl Gemm {
    /// (m, n, k).
    pub fn mnk(&self) -> (usize, usize, usize) {
        let (m, k) = self.a.used();
        (m, self.b.used().1, k)
    }
}

/// Memory and GEMMs of a machine that runs the CUDA sources' launches.
pub trait Device {
    /// Owned memory behind a buffer.
    type Mem;
    /// What runs one op's launches (its temporaries live until it is dropped).
    type Gpu<'a>: Gpu
    where
        Self: 'a;

    /// Memory for `len` elements of `dt` and its address; zero-filled with `zero`, otherwise
    /// of unspecified contents.
    fn alloc(&self, len: usize, dt: Dt, zero: bool) -> Result<(Self::Mem, DevPtr), Error>;
    /// Memory holding `bytes` (elements of `dt`) and its address.
    fn upload(&self, bytes: &[u8], dt: Dt) -> Result<(Self::Mem, DevPtr), Error>;
    /// `bytes` bytes from `ptr`, after every queued launch that writes them.
    fn download(&self, ptr: DevPtr, bytes: usize) -> Result<Vec<u8>, Error>;
    fn gpu(&self) -> Self::Gpu<'_>;
    fn gemm(&self, g: Gemm) -> Result<(), Error>;
}

/// A buffer of a [`Launched`] backend: owned memory, or a borrowed address (a parameter the
/// caller keeps alive and unwritten while the buffer is used).
pub struct DevBuf<M> {
    mem: Option<M>,
    ptr: DevPtr,
    len: usize,
    dt: Dt,
}

impl<M> Buffer for DevBuf<M> {
    fn len(&self) -> usize {
        self.len
    }

    fn dt(&self) -> Dt {
        self.dt
    }
}

impl<M> DevBuf<M> {
    /// A read-only buffer over `len` elements of `dt` at `ptr`, owned elsewhere.
    ///
    /// # Safety
    /// `ptr` must address `len` elements of `dt` on the backend's device that stay allocated
    /// and are not written by anyone else while this buffer or any op reading it is in
    /// flight.
    pub unsafe fn borrowed(ptr: DevPtr, len: usize, dt: Dt) -> Self {
        Self {
            mem: None,
            ptr,
            len,
            dt,
        }
    }

    /// The address of the first element.
    pub fn ptr(&self) -> DevPtr {
        self.ptr
    }

    /// The owned memory (`None` for a borrowed buffer).
    pub fn into_mem(self) -> Option<M> {
        self.mem
    }

    /// The address of element `at`.
    fn at(&self, at: usize) -> DevPtr {
        self.ptr + (at * self.dt.size()) as u64
    }

    fn writable(&self, op: &'static str, what: &str) -> Result<DevPtr, Error> {
        if self.mem.is_none() {
            return Err(buf_err(
                op,
                format!("{what} is a borrowed, read-only buffer"),
            ));
        }
        Ok(self.ptr)
    }
}

/// The backend over a [`Device`]: every op a launch (or a GEMM), buffers pooled by length
/// and type.
pub struct Launched<D: Device> {
    dev: D,
    pool: Mutex<Vec<DevBuf<D::Mem>>>,
    name: &'static str,
}

impl<D: Device> Launched<D> {
    pub fn new(dev: D, name: &'static str) -> Self {
        Self {
            dev,
            pool: Mutex::new(Vec::new()),
            name,
        }
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Bytes the pool holds.
    pub fn pool_bytes(&self) -> u64 {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.iter().map(|b| (b.len * b.dt.size()) as u64).sum()
    }

    fn fresh(&self, len: usize, dt: Dt, zero: bool) -> Result<DevBuf<D::Mem>, Error> {
        let (mem, ptr) = self.dev.alloc(len, dt, zero)?;
        Ok(DevBuf {
            mem: Some(mem),
            ptr,
            len,
            dt,
        })
    }
}

/// The element type shared by float buffers `bs`, or an error naming the first that differs.
fn common(op: &'static str, bs: &[(&str, Dt)]) -> Result<Elem, Error> {
    let (first, dt) = bs[0];
    let e = dt
        .elem()
        .ok_or_else(|| buf_err(op, format!("{first} holds u32, the op needs floats")))?;
    for &(what, d) in &bs[1..] {
        if d != dt {
            return Err(buf_err(
                op,
                format!("{what} holds {}, {first} {}", d.name(), dt.name()),
            ));
        }
    }
    Ok(e)
}

fn rows(op: &'static str, x: usize, h: usize) -> Result<usize, Error> {
    if h == 0 || !x.is_multiple_of(h) {
        return Err(buf_err(op, format!("{x} elements are not rows of {h}")));
    }
    Ok(x / h)
}

impl<D: Device> Launched<D> {
    /// One GEMM after checking its buffers: a (rows × cols) and b as given, c (m × n).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        op: &'static str,
        c: &mut DevBuf<D::Mem>,
        a: (&DevBuf<D::Mem>, usize, usize, bool),
        b: (&DevBuf<D::Mem>, usize, usize, bool),
        accumulate: bool,
    ) -> Result<(), Error> {
        let ab = common(op, &[("a", a.0.dt), ("b", b.0.dt)])?;
        let c_elem = float_of(op, "c", c)?;
        if c_elem != ab && c_elem != Elem::F32 {
            return Err(buf_err(op, "an f32 GEMM cannot write bf16"));
        }
        need(op, "a", a.0, a.1 * a.2, a.0.dt)?;
        need(op, "b", b.0, b.1 * b.2, b.0.dt)?;
        let oa = Operand {
            ptr: a.0.ptr,
            rows: a.1,
            cols: a.2,
            transposed: a.3,
        };
        let ob = Operand {
            ptr: b.0.ptr,
            rows: b.1,
            cols: b.2,
            transposed: b.3,
        };
        let g = Gemm {
            c: c.writable(op, "the output")?,
            c_elem,
            a: oa,
            b: ob,
            ab,
            accumulate,
        };
        let (m, n, k) = g.mnk();
        if ob.used().0 != k {
            return Err(buf_err(op, "inner dimensions differ"));
        }
        need(op, "c", c, m * n, c.dt)?;
        self.dev.gemm(g)
    }
}
