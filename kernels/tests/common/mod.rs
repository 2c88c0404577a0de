//! Helpers shared by the kernel tests: seeded random tensors, forward+backward through an
//! op on fresh variables, and max-|Δ| comparisons that print what they measured.

#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor, Var};

/// SplitMix64 with Box–Muller normals: reproducible inputs without extra dependencies.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// A tensor of N(0, std²) entries.
    pub fn randn(&mut self, dims: &[usize], std: f64, dtype: DType) -> Tensor {
        let n: usize = dims.iter().product();
        let data: Vec<f64> = (0..n).map(|_| self.normal() * std).collect();
        Tensor::from_vec(data, dims, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// u32 class indices below `v`.
    pub fn classes(&mut self, n: usize, v: usize) -> Tensor {
        let data: Vec<u32> = (0..n)
            .map(|_| (self.next_u64() % v as u64) as u32)
            .collect();
        Tensor::from_vec(data, n, &Device::Cpu).unwrap()
    }
}

/// Runs `f` on `inputs`, the first `n_grad` of them as fresh variables (copies), the rest
/// as constants, and backpropagates ⟨f(x), r⟩. Returns the output and the variables'
/// gradients.
pub fn fwd_bwd(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[&Tensor],
    n_grad: usize,
    r: &Tensor,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs[..n_grad]
        .iter()
        .map(|t| Var::from_tensor(&t.copy().unwrap()).unwrap())
        .collect();
    let mut xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    xs.extend(inputs[n_grad..].iter().map(|t| (*t).clone()));
    let y = f(&xs).unwrap();
    let loss = (&y * r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let gs = vars
        .iter()
        .map(|v| grads.get(v).expect("input has no gradient").clone())
        .collect();
    (y.detach(), gs)
}

/// max |a − b| and max |b|, in f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> (f64, f64) {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let d = (&a - &b).unwrap().abs().unwrap().max(0).unwrap();
    let m = b.abs().unwrap().max(0).unwrap();
    (d.to_scalar().unwrap(), m.to_scalar().unwrap())
}

/// Asserts max |fast − slow| ≤ tol · max |slow| (a tolerance relative to the tensor's
/// scale), printing the measured max |Δ|.
pub fn check(name: &str, fast: &Tensor, slow: &Tensor, tol: f64) -> f64 {
    let (d, m) = max_abs_diff(fast, slow);
    eprintln!("{name}: max|Δ| = {d:.3e} (max|slow| = {m:.3e}, bound {tol:.0e}·max|slow|)");
    // An all-zero reference (e.g. dq at T = 1) must be matched exactly.
    assert!(
        d <= tol * m || (m == 0.0 && d == 0.0),
        "{name}: max|Δ| = {d:e} exceeds {tol:e}·{m:e}"
    );
    assert!(d.is_finite(), "{name}: non-finite difference");
    d
}

/// Compares an op with its slow twin: forward output and the gradient of each input named
/// in `grad_inputs` (the first ones; the others are constants).
pub fn compare(
    name: &str,
    fast: impl Fn(&[Tensor]) -> Result<Tensor>,
    slow: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[&Tensor],
    grad_inputs: &[&str],
    r: &Tensor,
    tol: f64,
) {
    let (yf, gf) = fwd_bwd(fast, inputs, grad_inputs.len(), r);
    let (ys, gs) = fwd_bwd(slow, inputs, grad_inputs.len(), r);
    check(&format!("{name} forward"), &yf, &ys, tol);
    for (i, what) in grad_inputs.iter().enumerate() {
        check(&format!("{name} d{what}"), &gf[i], &gs[i], tol);
    }
}

/// Whether the CPU executor can build kernels here (see `emu::available_or_required`).
pub fn executor_available() -> bool {
    wsdscope_kernels::emu::available_or_required()
}
