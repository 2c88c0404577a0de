//! Reductions over parameter-sized tensors with f64 accumulation, read straight from CPU
//! storage in one pass (no temporaries): the per-step norms, dot products and max |Δθ| that
//! clipping and the per-step probes need. Other devices and layouts fall back to candle ops.

use candle_core::{DType, Storage, Tensor};

use crate::error::Result;

/// Calls `f` with the contiguous f32 contents of each tensor if all are contiguous CPU f32
/// tensors; returns `None` (and calls nothing) otherwise.
fn with_f32<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> R) -> Option<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (storage, layout) in &guards {
        let Storage::Cpu(cpu) = &**storage else {
            return None;
        };
        let (start, end) = layout.contiguous_offsets()?;
        let all = cpu.as_slice::<f32>().ok()?;
        slices.push(&all[start..end]);
    }
    Some(f(&slices))
}

/// Σ a·b over chunks, accumulated in f64 per chunk of f32 products (exact enough, and
/// vectorisable).
fn dot_f32(a: &[f32], b: &[f32]) -> f64 {
    const CHUNK: usize = 256;
    a.chunks(CHUNK)
        .zip(b.chunks(CHUNK))
        .map(|(x, y)| {
            x.iter()
                .zip(y)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum::<f64>()
        })
        .sum()
}

/// Σ x² of a tensor, in f64.
pub fn sum_sq(t: &Tensor) -> Result<f64> {
    dot(t, t)
}

/// Σ a·b of two tensors of the same shape, in f64.
pub fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    if let Some(v) = with_f32(&[a, b], |s| dot_f32(s[0], s[1])) {
        return Ok(v);
    }
    Ok((a.to_dtype(DType::F64)? * b.to_dtype(DType::F64)?)?
        .sum_all()?
        .to_scalar::<f64>()?)
}

/// Σ g·(a − b) of three tensors of the same shape, in f64, each difference formed exactly
/// in f64 (so a small update a − b between two large parameter tensors loses nothing).
pub fn dot_diff(g: &Tensor, a: &Tensor, b: &Tensor) -> Result<f64> {
    if let Some(v) = with_f32(&[g, a, b], |s| {
        s[0].iter()
            .zip(s[1])
            .zip(s[2])
            .map(|((&g, &a), &b)| f64::from(g) * (f64::from(a) - f64::from(b)))
            .sum::<f64>()
    }) {
        return Ok(v);
    }
    let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?;
    Ok((g.to_dtype(DType::F64)? * d)?
        .sum_all()?
        .to_scalar::<f64>()?)
}

/// max |x| of a tensor.
pub fn max_abs(t: &Tensor) -> Result<f64> {
    if let Some(v) = with_f32(&[t], |s| {
        s[0].iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64
    }) {
        return Ok(v);
    }
    Ok(t.abs()?
        .to_dtype(DType::F64)?
        .max_all()?
        .to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fast_paths_agree_with_candle_ops() {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (37, 41), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (37, 41), &dev).unwrap();
        let want = (a.to_dtype(DType::F64).unwrap() * b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!((dot(&a, &b).unwrap() - want).abs() < 1e-9 * want.abs().max(1.0));
        // A strided view takes the fallback and gives the same answer.
        let (at, bt) = (a.t().unwrap(), b.t().unwrap());
        assert!((dot(&at, &bt).unwrap() - want).abs() < 1e-9 * want.abs().max(1.0));
        let m = a
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        assert_eq!(max_abs(&a).unwrap(), m);
        assert_eq!(max_abs(&at).unwrap(), m);
        let x = Tensor::new(&[3.0f64, 4.0], &dev).unwrap();
        assert_eq!(sum_sq(&x).unwrap(), 25.0);
        let c = Tensor::randn(0f32, 1.0, (37, 41), &dev).unwrap();
        let want = dot(&a, &(&b - &c).unwrap()).unwrap();
        let got = dot_diff(&a, &b, &c).unwrap();
        assert!(
            (got - want).abs() < 1e-5 * want.abs().max(1.0),
            "{got} vs {want}"
        );
        let strided = dot_diff(&at, &bt, &c.t().unwrap()).unwrap();
        assert!((strided - want).abs() < 1e-5 * want.abs().max(1.0));
    }
}
