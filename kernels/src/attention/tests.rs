//! Shapes beyond the integration tests' (kernels/tests/ops.rs): odd T around the tile
//! sizes, small and large D, GQA ratios, degenerate sizes, and pool-size independence.

use candle_core::{DType, Device, Tensor, Var};

use super::{attention, attention_slow};

/// Reproducible N(0, std²) entries (SplitMix64 and Box–Muller).
fn randn(seed: u64, dims: &[usize], std: f64, dtype: DType) -> Tensor {
    let mut s = seed;
    let mut uniform = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 + 0.5 / (1u64 << 53) as f64
    };
    let n: usize = dims.iter().product();
    let data: Vec<f64> = (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * std
        })
        .collect();
    let t = Tensor::from_vec(data, dims, &Device::Cpu).unwrap();
    t.to_dtype(dtype).unwrap()
}

type Op = fn(&Tensor, &Tensor, &Tensor, f64) -> candle_core::Result<Tensor>;

/// Output and (dq, dk, dv) of ⟨op(q, k, v), r⟩, flattened to f64.
fn run(op: Op, x: &[Tensor; 4], scale: f64) -> [Vec<f64>; 4] {
    let vars = [&x[0], &x[1], &x[2]].map(|t| Var::from_tensor(&t.copy().unwrap()).unwrap());
    let (q, k, v) = (
        vars[0].as_tensor(),
        vars[1].as_tensor(),
        vars[2].as_tensor(),
    );
    let y = op(q, k, v, scale).unwrap();
    let grads = (&y * &x[3]).unwrap().sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| {
        let t = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
        t.to_vec1::<f64>().unwrap()
    };
    let g = |v: &Var| flat(grads.get(v).expect("no gradient"));
    [flat(&y), g(&vars[0]), g(&vars[1]), g(&vars[2])]
}

fn inputs(shape: (usize, usize, usize, usize, usize), dtype: DType) -> [Tensor; 4] {
    let (b, h, hkv, t, d) = shape;
    [
        randn(1, &[b, h, t, d], 2.0, dtype),
        randn(2, &[b, hkv, t, d], 1.0, dtype),
        randn(3, &[b, hkv, t, d], 1.0, dtype),
        randn(4, &[b, h, t, d], 1.0, dtype),
    ]
}

#[test]
fn matches_slow_on_odd_shapes() {
    // (B, H, Hkv, T, D): T off, below and just past the 64-row tiles; D from 8 to 128;
    // Hkv = H, H/2, H/3 and 1.
    let shapes = [
        (1, 3, 1, 130, 16),
        (2, 6, 2, 77, 128),
        (1, 2, 1, 5, 64),
        (2, 2, 2, 65, 8),
        (1, 4, 4, 129, 32),
        (1, 3, 3, 64, 16),
        (1, 2, 1, 200, 64),
    ];
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 2e-5 } else { 1e-12 };
        for shape in shapes {
            let x = inputs(shape, dtype);
            let scale = 1.0 / (shape.4 as f64).sqrt();
            let fast = run(attention, &x, scale);
            let slow = run(attention_slow, &x, scale);
            for (what, (f, s)) in ["out", "dq", "dk", "dv"].iter().zip(fast.iter().zip(&slow)) {
                let diff = f
                    .iter()
                    .zip(s)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                let max = s.iter().map(|a| a.abs()).fold(0.0, f64::max);
                eprintln!(
                    "attention {dtype:?} {shape:?} {what}: max|Δ| = {diff:.3e} (max {max:.3e})"
                );
                assert!(
                    diff <= tol * max,
                    "{dtype:?} {shape:?} {what}: max|Δ| {diff:e}"
                );
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_the_pool_size() {
    let x = inputs((2, 6, 2, 150, 32), DType::F32);
    let in_pool = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| run(attention, &x, 0.2))
    };
    let one = in_pool(1);
    for threads in [2, 3, 5] {
        assert!(
            in_pool(threads) == one,
            "results changed with {threads} threads"
        );
    }
}

#[test]
fn degenerate_sizes_do_not_panic() {
    for (b, h, hkv, t, d) in [(1, 2, 1, 0, 8), (0, 2, 2, 4, 8), (1, 2, 1, 3, 0)] {
        let x = inputs((b, h, hkv, t, d), DType::F32);
        let [y, dq, dk, dv] = run(attention, &x, 0.5);
        assert_eq!(y.len(), b * h * t * d);
        assert_eq!(
            (dq.len(), dk.len(), dv.len()),
            (y.len(), b * hkv * t * d, b * hkv * t * d)
        );
        assert!(dk.iter().chain(&dv).all(|&g| g == 0.0));
    }
}
