//! Multi-tensor reductions accumulated in f64, one pass per tensor and no temporaries:
//! Σx² of each tensor (norms of parameters, gradients, updates), ⟨a, b⟩ of each pair
//! (cosines between successive gradients) and ⟨g, a − b⟩ of each triple (a gradient against
//! an update given as two parameter copies: the D1/D2 curvature probes), and those three
//! products of the per-step geometry from one pass over each tensor's four copies.
//!
//! Contiguous f32/f64 CPU tensors are read straight from their storage, in fixed-size
//! chunks whose partial sums are added in chunk order, so results do not depend on the
//! rayon pool's size. With the `cuda` feature, contiguous f32/bf16 CUDA tensors (all of one
//! device and dtype) take one kernel pass each and a single copy of the results to the host.
//! Anything else falls back to plain candle ops in f64.

use candle_core::{DType, Result, Storage, Tensor};
use rayon::prelude::*;

use crate::cpu::{self, GRAIN, Real};
use crate::error::shape_err;

/// Σ f(chunk) over fixed chunks, in chunk order.
fn chunked<T: Real>(n: usize, f: impl Fn(std::ops::Range<usize>) -> f64 + Sync) -> f64 {
    chunked_n(n, |r| [f(r)])[0]
}

/// [`chunked`] of several sums at once, each added up over the chunks in chunk order.
fn chunked_n<const N: usize>(
    n: usize,
    f: impl Fn(std::ops::Range<usize>) -> [f64; N] + Sync,
) -> [f64; N] {
    if n <= GRAIN {
        return f(0..n);
    }
    let parts: Vec<[f64; N]> = (0..n.div_ceil(GRAIN))
        .into_par_iter()
        .map(|c| f(c * GRAIN..((c + 1) * GRAIN).min(n)))
        .collect();
    std::array::from_fn(|j| parts.iter().map(|p| p[j]).sum())
}

/// The contiguous elements of an f32 or f64 CPU tensor.
enum Elems<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

/// `f` of the contiguous f32/f64 CPU elements of `t`, or `None` if `t` is not such.
fn with_elems<R>(t: &Tensor, f: impl FnOnce(Elems<'_>) -> R) -> Option<R> {
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(c) = &*s else { return None };
    let (a, b) = l.contiguous_offsets()?;
    match t.dtype() {
        DType::F32 => Some(f(Elems::F32(&c.as_slice::<f32>().ok()?[a..b]))),
        DType::F64 => Some(f(Elems::F64(&c.as_slice::<f64>().ok()?[a..b]))),
        _ => None,
    }
}

fn sum_sq_fast<T: Real>(x: &[T]) -> f64 {
    chunked::<T>(x.len(), |r| cpu::sum_sq_f64(&x[r]))
}

fn dot_fast<T: Real>(a: &[T], b: &[T]) -> f64 {
    chunked::<T>(a.len(), |r| cpu::dot_f64(&a[r.clone()], &b[r]))
}

fn dot_diff_fast<T: Real>(g: &[T], a: &[T], b: &[T]) -> f64 {
    chunked::<T>(g.len(), |r| {
        cpu::dot_diff_f64(&g[r.clone()], &a[r.clone()], &b[r])
    })
}

/// Σx² of one tensor from plain ops, in f64.
fn sum_sq_plain(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()
}

/// ⟨a, b⟩ of one pair from plain ops, in f64.
fn dot_plain(a: &Tensor, b: &Tensor) -> Result<f64> {
    (a.to_dtype(DType::F64)? * b.to_dtype(DType::F64)?)?
        .sum_all()?
        .to_scalar::<f64>()
}

/// Σx² of each tensor, accumulated in f64.
pub fn sum_sq_many(ts: &[&Tensor]) -> Result<Vec<f64>> {
    #[cfg(feature = "cuda")]
    if let Some(out) = crate::cuda_launch::sum_sq_many(ts)? {
        return Ok(out);
    }
    ts.iter()
        .map(|t| {
            let fast = with_elems(t, |e| match e {
                Elems::F32(x) => sum_sq_fast(x),
                Elems::F64(x) => sum_sq_fast(x),
            });
            match fast {
                Some(s) => Ok(s),
                None => sum_sq_plain(t),
            }
        })
        .collect()
}

/// ⟨a, b⟩ of each pair (same shapes), accumulated in f64.
pub fn dot_many(pairs: &[(&Tensor, &Tensor)]) -> Result<Vec<f64>> {
    #[cfg(feature = "cuda")]
    if let Some(out) = crate::cuda_launch::dot_many(pairs)? {
        return Ok(out);
    }
    pairs
        .iter()
        .enumerate()
        .map(|(i, (a, b))| {
            if a.dims() != b.dims() {
                return Err(shape_err(
                    "dot_many",
                    format!("pair {i} has shapes {:?} and {:?}", a.dims(), b.dims()),
                ));
            }
            // Both storages are read-locked only for the duration of the pass.
            let fast = with_elems(a, |ea| {
                with_elems(b, |eb| match (ea, eb) {
                    (Elems::F32(x), Elems::F32(y)) => Some(dot_fast(x, y)),
                    (Elems::F64(x), Elems::F64(y)) => Some(dot_fast(x, y)),
                    _ => None,
                })
            })
            .flatten()
            .flatten();
            match fast {
                Some(s) => Ok(s),
                None => dot_plain(a, b),
            }
        })
        .collect()
}

/// ⟨g, a − b⟩ of one triple from plain ops, in f64.
fn dot_diff_plain(g: &Tensor, a: &Tensor, b: &Tensor) -> Result<f64> {
    let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?;
    (g.to_dtype(DType::F64)? * d)?.sum_all()?.to_scalar::<f64>()
}

/// ⟨g, a − b⟩ of each triple (same shapes), accumulated in f64 with each difference formed
/// in f64, so a small update a − b between two large parameter copies loses nothing.
pub fn dot_diff_many(triples: &[(&Tensor, &Tensor, &Tensor)]) -> Result<Vec<f64>> {
    #[cfg(feature = "cuda")]
    if let Some(out) = crate::cuda_launch::dot_diff_many(triples)? {
        return Ok(out);
    }
    triples
        .iter()
        .enumerate()
        .map(|(i, (g, a, b))| {
            if g.dims() != a.dims() || a.dims() != b.dims() {
                return Err(shape_err(
                    "dot_diff_many",
                    format!(
                        "triple {i} has shapes {:?}, {:?} and {:?}",
                        g.dims(),
                        a.dims(),
                        b.dims()
                    ),
                ));
            }
            let fast = with_elems(g, |eg| {
                with_elems(a, |ea| {
                    with_elems(b, |eb| match (eg, ea, eb) {
                        (Elems::F32(x), Elems::F32(y), Elems::F32(z)) => {
                            Some(dot_diff_fast(x, y, z))
                        }
                        (Elems::F64(x), Elems::F64(y), Elems::F64(z)) => {
                            Some(dot_diff_fast(x, y, z))
                        }
                        _ => None,
                    })
                })
            })
            .flatten()
            .flatten()
            .flatten();
            match fast {
                Some(s) => Ok(s),
                None => dot_diff_plain(g, a, b),
            }
        })
        .collect()
}

/// For each quadruple (g₁, g₀, a, b) of one shape — two successive gradients and the update
/// between them as two parameter copies — ⟨g₁, g₀⟩, ⟨g₁, a − b⟩ and ⟨g₀, a − b⟩ in f64: the
/// dot products of the per-step geometry. Contiguous f32 CPU tensors are read once each, in
/// one pass (half the reads of [`dot_many`] and two [`dot_diff_many`]); anything else takes
/// those two.
pub fn step_dots_many(quads: &[(&Tensor, &Tensor, &Tensor, &Tensor)]) -> Result<Vec<[f64; 3]>> {
    for (i, &(g1, g0, a, b)) in quads.iter().enumerate() {
        let dims = g1.dims();
        if g0.dims() != dims || a.dims() != dims || b.dims() != dims {
            return Err(shape_err(
                "step_dots_many",
                format!(
                    "quadruple {i} has shapes {:?}, {:?}, {:?} and {:?}",
                    dims,
                    g0.dims(),
                    a.dims(),
                    b.dims()
                ),
            ));
        }
    }
    let f32s = |t: &Tensor, f: &mut dyn FnMut(&[f32]) -> Option<[f64; 3]>| {
        with_elems(t, |e| match e {
            Elems::F32(x) => f(x),
            Elems::F64(_) => None,
        })
        .flatten()
    };
    let fast: Option<Vec<[f64; 3]>> = quads
        .iter()
        .map(|&(g1, g0, a, b)| {
            f32s(g1, &mut |x| {
                f32s(g0, &mut |y| {
                    f32s(a, &mut |p| {
                        f32s(b, &mut |q| Some(step_dots_fast(x, y, p, q)))
                    })
                })
            })
        })
        .collect();
    if let Some(out) = fast {
        return Ok(out);
    }
    // All at once through the pair and triple passes (one launch each on CUDA).
    let pairs: Vec<(&Tensor, &Tensor)> = quads.iter().map(|q| (q.0, q.1)).collect();
    let triples: Vec<(&Tensor, &Tensor, &Tensor)> = quads
        .iter()
        .map(|q| (q.0, q.2, q.3))
        .chain(quads.iter().map(|q| (q.1, q.2, q.3)))
        .collect();
    let (gg, gv) = (dot_many(&pairs)?, dot_diff_many(&triples)?);
    let n = quads.len();
    Ok((0..n).map(|i| [gg[i], gv[i], gv[n + i]]).collect())
}

fn step_dots_fast(g1: &[f32], g0: &[f32], a: &[f32], b: &[f32]) -> [f64; 3] {
    chunked_n(g1.len(), |r| {
        cpu::step_dots_f64(&g1[r.clone()], &g0[r.clone()], &a[r.clone()], &b[r])
    })
}

/// [`sum_sq_many`] from plain candle ops.
pub fn sum_sq_many_slow(ts: &[&Tensor]) -> Result<Vec<f64>> {
    ts.iter().map(|t| sum_sq_plain(t)).collect()
}

/// [`dot_many`] from plain candle ops.
pub fn dot_many_slow(pairs: &[(&Tensor, &Tensor)]) -> Result<Vec<f64>> {
    pairs.iter().map(|(a, b)| dot_plain(a, b)).collect()
}

/// [`dot_diff_many`] from plain candle ops.
pub fn dot_diff_many_slow(triples: &[(&Tensor, &Tensor, &Tensor)]) -> Result<Vec<f64>> {
    triples
        .iter()
        .map(|(g, a, b)| dot_diff_plain(g, a, b))
        .collect()
}
