//! The differentiable fused ops against their `*_slow` twins: forward outputs and every
//! input gradient on random inputs, in f32 and f64, plus error paths and causality.
//! Run with `--nocapture` to see each measured max |Δ|.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{Rng, check, compare};
use wsdscope_kernels as k;

/// Tolerances relative to the reference's largest magnitude.
const TOL_F32: f64 = 2e-5;
const TOL_F64: f64 = 1e-12;

fn tol(dtype: DType) -> f64 {
    if dtype == DType::F32 {
        TOL_F32
    } else {
        TOL_F64
    }
}

/// Half-split RoPE tables (T, D) as in the model: angle(t, i) = t / θ^(2i/D), halves repeated.
fn rope_tables(t: usize, d: usize, dtype: DType) -> (Tensor, Tensor) {
    let half = d / 2;
    let inv: Vec<f64> = (0..half)
        .map(|i| 1.0 / 10000f64.powf((2 * i) as f64 / d as f64))
        .collect();
    let (mut c, mut s) = (Vec::new(), Vec::new());
    for p in 0..t {
        for &f in inv.iter().chain(inv.iter()) {
            c.push((p as f64 * f).cos());
            s.push((p as f64 * f).sin());
        }
    }
    let c = Tensor::from_vec(c, (t, d), &Device::Cpu).unwrap();
    let s = Tensor::from_vec(s, (t, d), &Device::Cpu).unwrap();
    (c.to_dtype(dtype).unwrap(), s.to_dtype(dtype).unwrap())
}

#[test]
fn rms_norm_matches_slow() {
    for (dtype, dims) in [
        (DType::F32, vec![2048, 128]),
        (DType::F32, vec![3, 37, 96]),
        (DType::F64, vec![5, 41, 128]),
    ] {
        let mut rng = Rng::new(1);
        let h = *dims.last().unwrap();
        let x = rng.randn(&dims, 1.5, dtype);
        let w = (rng.randn(&[h], 0.3, dtype) + 1.0).unwrap();
        let r = rng.randn(&dims, 1.0, dtype);
        compare(
            &format!("rms_norm {dtype:?} {dims:?}"),
            |t| k::rms_norm(&t[0], &t[1], 1e-5),
            |t| k::rms_norm_slow(&t[0], &t[1], 1e-5),
            &[&x, &w],
            &["x", "w"],
            &r,
            tol(dtype),
        );
    }
}

#[test]
fn rms_norm_takes_strided_input() {
    let mut rng = Rng::new(2);
    let x = rng.randn(&[64, 48], 1.0, DType::F32).t().unwrap(); // (48, 64), strided
    let w = rng.randn(&[64], 1.0, DType::F32);
    let fast = k::rms_norm(&x, &w, 1e-6).unwrap();
    let slow = k::rms_norm_slow(&x, &w, 1e-6).unwrap();
    check("rms_norm strided forward", &fast, &slow, TOL_F32);
}

#[test]
fn swiglu_matches_slow() {
    for (dtype, dims) in [
        (DType::F32, vec![2048, 384]),
        (DType::F32, vec![7, 33]),
        (DType::F64, vec![3, 5, 384]),
    ] {
        let mut rng = Rng::new(3);
        let g = rng.randn(&dims, 2.0, dtype);
        let u = rng.randn(&dims, 1.0, dtype);
        let r = rng.randn(&dims, 1.0, dtype);
        compare(
            &format!("swiglu {dtype:?} {dims:?}"),
            |t| k::swiglu(&t[0], &t[1]),
            |t| k::swiglu_slow(&t[0], &t[1]),
            &[&g, &u],
            &["gate", "up"],
            &r,
            tol(dtype),
        );
    }
}

#[test]
fn rope_matches_slow() {
    for (dtype, (b, h, t, d)) in [
        (DType::F32, (16, 2, 128, 64)),
        (DType::F32, (2, 3, 37, 32)),
        (DType::F64, (2, 4, 29, 64)),
    ] {
        let mut rng = Rng::new(4);
        let x = rng.randn(&[b, h, t, d], 1.0, dtype);
        let r = rng.randn(&[b, h, t, d], 1.0, dtype);
        let (cos, sin) = rope_tables(t, d, dtype);
        compare(
            &format!("rope {dtype:?} ({b}, {h}, {t}, {d})"),
            |a| k::rope(&a[0], &a[1], &a[2]),
            |a| k::rope_slow(&a[0], &a[1], &a[2]),
            &[&x, &cos, &sin],
            &["x"],
            &r,
            tol(dtype),
        );
    }
}

#[test]
fn rope_uses_the_tables_it_is_given() {
    // Arbitrary (not rotation) tables exercise both halves of cos and sin independently.
    let mut rng = Rng::new(5);
    let x = rng.randn(&[2, 2, 9, 16], 1.0, DType::F64);
    let cos = rng.randn(&[9, 16], 1.0, DType::F64);
    let sin = rng.randn(&[9, 16], 1.0, DType::F64);
    let r = rng.randn(&[2, 2, 9, 16], 1.0, DType::F64);
    compare(
        "rope arbitrary tables",
        |a| k::rope(&a[0], &a[1], &a[2]),
        |a| k::rope_slow(&a[0], &a[1], &a[2]),
        &[&x, &cos, &sin],
        &["x"],
        &r,
        TOL_F64,
    );
}

#[test]
fn cross_entropy_matches_slow() {
    for (dtype, n, v, std) in [
        (DType::F32, 2048, 512, 3.0),
        (DType::F32, 300, 512, 1.0),
        (DType::F32, 5, 7, 10.0),
        (DType::F64, 301, 512, 3.0),
    ] {
        let mut rng = Rng::new(6);
        let logits = rng.randn(&[n, v], std, dtype);
        let targets = rng.classes(n, v);
        let r = Tensor::new(1.7f64, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        compare(
            &format!("cross_entropy {dtype:?} ({n}, {v})"),
            |t| k::cross_entropy(&t[0], &t[1]),
            |t| k::cross_entropy_slow(&t[0], &t[1]),
            &[&logits, &targets],
            &["logits"],
            &r,
            tol(dtype),
        );
    }
}

#[test]
fn cross_entropy_rejects_out_of_range_targets() {
    let logits = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
    let targets = Tensor::new(&[0u32, 4, 1], &Device::Cpu).unwrap();
    let e = k::cross_entropy(&logits, &targets).unwrap_err().to_string();
    assert!(e.contains("target 4 of row 1"), "{e}");
}

/// (B, H, Hkv, T, D) shapes: GQA and plain, T on and off the tile sizes.
const ATTN_SHAPES: [(usize, usize, usize, usize, usize); 6] = [
    (2, 4, 2, 77, 32),
    (2, 2, 2, 130, 64),
    (1, 4, 1, 64, 16),
    (3, 2, 1, 1, 8),
    (1, 3, 3, 200, 24),
    (16, 2, 1, 128, 64),
];

#[test]
fn attention_matches_slow_f32() {
    for (b, h, hkv, t, d) in ATTN_SHAPES {
        let mut rng = Rng::new(7);
        let q = rng.randn(&[b, h, t, d], 1.0, DType::F32);
        let kk = rng.randn(&[b, hkv, t, d], 1.0, DType::F32);
        let v = rng.randn(&[b, hkv, t, d], 1.0, DType::F32);
        let r = rng.randn(&[b, h, t, d], 1.0, DType::F32);
        let scale = 1.0 / (d as f64).sqrt();
        compare(
            &format!("attention f32 B{b} H{h} Hkv{hkv} T{t} D{d}"),
            |a| k::attention(&a[0], &a[1], &a[2], scale),
            |a| k::attention_slow(&a[0], &a[1], &a[2], scale),
            &[&q, &kk, &v],
            &["q", "k", "v"],
            &r,
            TOL_F32,
        );
    }
}

#[test]
fn attention_matches_slow_f64() {
    for (b, h, hkv, t, d) in [(2, 4, 2, 77, 32), (1, 2, 2, 130, 64)] {
        let mut rng = Rng::new(8);
        // Large logits (std 3·√D·scale ≈ 3) stress the online softmax's rescaling.
        let q = rng.randn(&[b, h, t, d], 3.0, DType::F64);
        let kk = rng.randn(&[b, hkv, t, d], 1.0, DType::F64);
        let v = rng.randn(&[b, hkv, t, d], 1.0, DType::F64);
        let r = rng.randn(&[b, h, t, d], 1.0, DType::F64);
        let scale = 1.0 / (d as f64).sqrt();
        compare(
            &format!("attention f64 B{b} H{h} Hkv{hkv} T{t} D{d}"),
            |a| k::attention(&a[0], &a[1], &a[2], scale),
            |a| k::attention_slow(&a[0], &a[1], &a[2], scale),
            &[&q, &kk, &v],
            &["q", "k", "v"],
            &r,
            TOL_F64,
        );
    }
}

#[test]
fn attention_is_causal() {
    let (b, h, hkv, t, d) = (2, 4, 2, 100, 16);
    let mut rng = Rng::new(9);
    let q = rng.randn(&[b, h, t, d], 1.0, DType::F32);
    let kk = rng.randn(&[b, hkv, t, d], 1.0, DType::F32);
    let v = rng.randn(&[b, hkv, t, d], 1.0, DType::F32);
    let base = k::attention(&q, &kk, &v, 0.25).unwrap();
    // Replace key/value position 70 (all heads) with fresh values.
    let pos = 70;
    let fresh_k = rng.randn(&[b, hkv, 1, d], 1.0, DType::F32);
    let fresh_v = rng.randn(&[b, hkv, 1, d], 1.0, DType::F32);
    let splice = |x: &Tensor, f: &Tensor| {
        Tensor::cat(
            &[
                &x.narrow(2, 0, pos).unwrap(),
                f,
                &x.narrow(2, pos + 1, t - pos - 1).unwrap(),
            ],
            2,
        )
        .unwrap()
    };
    let moved = k::attention(&q, &splice(&kk, &fresh_k), &splice(&v, &fresh_v), 0.25).unwrap();
    let before = (base.narrow(2, 0, pos).unwrap() - moved.narrow(2, 0, pos).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let after = (base.narrow(2, pos, t - pos).unwrap() - moved.narrow(2, pos, t - pos).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    eprintln!(
        "attention causal: max|Δ| before pos {pos} = {before:e}, from pos {pos} on = {after:e}"
    );
    assert_eq!(before, 0.0, "rows before the changed position moved");
    assert!(
        after > 1e-3,
        "rows from the changed position on did not move"
    );
}

#[test]
fn unsupported_dtypes_are_errors() {
    let dev = Device::Cpu;
    for dtype in [DType::F16, DType::BF16] {
        let x = Tensor::zeros((2, 4), dtype, &dev).unwrap();
        let w = Tensor::ones(4, dtype, &dev).unwrap();
        let e = k::rms_norm(&x, &w, 1e-6).unwrap_err().to_string();
        assert!(e.contains("rms_norm") && e.contains("not supported"), "{e}");
        assert!(k::swiglu(&x, &x).is_err());
        let t = Tensor::new(&[0u32, 1], &dev).unwrap();
        assert!(k::cross_entropy(&x, &t).is_err());
        let q = Tensor::zeros((1, 2, 4, 8), dtype, &dev).unwrap();
        assert!(k::attention(&q, &q, &q, 0.5).is_err());
        let tab = Tensor::zeros((4, 8), dtype, &dev).unwrap();
        assert!(k::rope(&q, &tab, &tab).is_err());
    }
}

#[test]
fn shape_mismatches_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
    assert!(k::rms_norm(&x, &Tensor::ones(5, DType::F32, &dev).unwrap(), 1e-6).is_err());
    assert!(k::swiglu(&x, &x.t().unwrap()).is_err());
    let q = Tensor::zeros((1, 3, 4, 8), DType::F32, &dev).unwrap();
    let kv = Tensor::zeros((1, 2, 4, 8), DType::F32, &dev).unwrap();
    let e = k::attention(&q, &kv, &kv, 0.5).unwrap_err().to_string();
    assert!(e.contains("multiple of Hkv"), "{e}");
    let tab = Tensor::zeros((5, 8), DType::F32, &dev).unwrap();
    assert!(k::rope(&q, &tab, &tab).is_err());
}
