//! Shared CPU plumbing for the kernels: the float element trait (f32, f64), typed views of
//! candle storage, small vector primitives written so LLVM vectorises them, and the rayon
//! work-splitting rules (always the current pool; no thread counts of our own).

use std::ops::Neg;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor, WithDType};

use crate::error::Error;

/// Elements per rayon task: below this a kernel runs on the calling thread, since handing
/// work to the pool costs more than it saves.
pub(crate) const GRAIN: usize = 1 << 14;

/// A float the CPU kernels compute in.
pub(crate) trait Real: WithDType + Neg<Output = Self> + Send + Sync {
    const NEG_INF: Self;
    fn abs(self) -> Self;
    /// eˣ for the kernels' hot loops: [`exp_f32`] for f32 (a few ulp, vectorisable), the
    /// exact libm `exp` for f64 (which the gradient checks use).
    fn exp_fast(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn fmax(self, other: Self) -> Self;
    fn is_finite(self) -> bool;
    /// The element slice of a CPU storage of this dtype, mutable.
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
}

macro_rules! real {
    ($t:ty, $variant:ident, $exp_fast:path) => {
        impl Real for $t {
            const NEG_INF: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn exp_fast(self) -> Self {
                $exp_fast(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn fmax(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v.as_mut_slice()),
                    _ => None,
                }
            }
        }
    };
}
real!(f32, F32, exp_f32);
real!(f64, F64, f64::exp);

/// eˣ in f32 within a few ulp, branch-free so loops over it vectorise (libm's `expf` is a
/// call per element). eˣ = 2ᵏ·eʳ with k = round(x·log₂e) and r = x − k·ln2 split into a high
/// part exact in f32 and a low correction (Cody–Waite), |r| ≤ ln2/2; eʳ by its Taylor
/// polynomial to degree 7 (truncation < 1e-8 relative). Below −86 it returns 0 (eˣ < 5e-38),
/// above 88.72 +∞; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln2 rounded to 15 significant bits: k·LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6; // ln2 − LN2_HI
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding and subtracting it rounds to an integer
    const LO: f32 = -86.0;
    const HI: f32 = 88.72;
    let xc = x.clamp(LO, HI);
    // y = k + 1.5·2²³ has a fixed exponent, so its low mantissa bits hold k + 2²² as an
    // integer: k needs no float→int conversion (which would block vectorisation).
    let y = xc * LOG2E + ROUND;
    let k = y - ROUND; // in [−124, 128]
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // p·2ᵏ = (p·2ᵏ⁻¹)·2, so that k = 128 needs no exponent beyond a normal float's.
    let k_bits = y.to_bits().wrapping_sub(ROUND.to_bits()); // k as a wrapping u32
    let half_two_k = f32::from_bits(k_bits.wrapping_add(126) << 23);
    let y = (p * half_two_k) * 2.0;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

/// `simd_fn!(pub(crate) fn name<T: Real>(args…) -> R => body_fn);` defines `name`, which
/// runs `body_fn` (an `#[inline(always)]` fn with the same arguments) compiled for AVX2
/// when the CPU has it, else as built (the x86-64 baseline, SSE2). Call it from inside
/// each rayon task: task bodies are functions of their own and inherit no features. The
/// arithmetic is the same either way (lanes are fixed accumulators and no FMA is formed),
/// so results are bitwise identical with and without AVX2.
macro_rules! simd_fn {
    ($vis:vis fn $name:ident<$T:ident: Real>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$T: Real>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2")]
                fn avx2<$T: Real>($($arg: $ty),*) $(-> $ret)? {
                    $body::<$T>($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2::<$T>($($arg),*) };
                }
            }
            $body::<$T>($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// The error for a dtype the CPU kernels do not take.
pub(crate) fn unsupported(op: &'static str, dtype: DType) -> candle_core::Error {
    Error::UnsupportedDType { op, dtype }.into()
}

/// The contiguous element range of `l` in `s`, typed as `T`.
pub(crate) fn slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &'static str,
    what: &'static str,
) -> Result<&'a [T]> {
    if s.dtype() != T::DTYPE {
        return Err(Error::DTypeMismatch {
            op,
            what,
            got: s.dtype(),
            expected: T::DTYPE,
        }
        .into());
    }
    let (a, b) = l
        .contiguous_offsets()
        .ok_or(Error::NonContiguous { op, what })?;
    Ok(&T::cpu_storage_as_slice(s)?[a..b])
}

/// Mutable twin of [`slice`].
pub(crate) fn slice_mut<'a, T: Real>(
    s: &'a mut CpuStorage,
    l: &Layout,
    op: &'static str,
    what: &'static str,
) -> Result<&'a mut [T]> {
    let got = s.dtype();
    let (a, b) = l
        .contiguous_offsets()
        .ok_or(Error::NonContiguous { op, what })?;
    let data = T::slice_mut(s).ok_or(Error::DTypeMismatch {
        op,
        what,
        got,
        expected: T::DTYPE,
    })?;
    Ok(&mut data[a..b])
}

/// The devices this build's kernels run on, for error messages.
pub(crate) const SUPPORTED_DEVICES: &str = if cfg!(feature = "cuda") {
    "CPU and CUDA"
} else {
    "CPU only: this build has no `cuda` feature"
};

/// The CPU storage behind a (read-locked) tensor storage.
pub(crate) fn cpu<'a>(
    s: &'a Storage,
    op: &'static str,
    what: &'static str,
) -> Result<&'a CpuStorage> {
    match s {
        Storage::Cpu(c) => Ok(c),
        other => Err(Error::UnsupportedDevice {
            op,
            what,
            device: format!("{:?}", other.device().location()),
            supported: SUPPORTED_DEVICES,
        }
        .into()),
    }
}

/// [`slice`] of a read-locked tensor storage, which must be on the CPU.
pub(crate) fn storage_slice<'a, T: WithDType>(
    s: &'a Storage,
    l: &Layout,
    op: &'static str,
    what: &'static str,
) -> Result<&'a [T]> {
    slice(cpu(s, op, what)?, l, op, what)
}

/// Checks that `t` is on a device the kernels run on: the CPU, and CUDA devices in a build
/// with the `cuda` feature.
pub(crate) fn check_cpu(t: &Tensor, op: &'static str, what: &'static str) -> Result<()> {
    if t.device().is_cpu() || (cfg!(feature = "cuda") && t.device().is_cuda()) {
        Ok(())
    } else {
        Err(Error::UnsupportedDevice {
            op,
            what,
            device: format!("{:?}", t.device().location()),
            supported: SUPPORTED_DEVICES,
        }
        .into())
    }
}

/// Checks that `t` has a dtype the kernels of its device take: f32 or f64 on the CPU, f32 or
/// bf16 on CUDA.
pub(crate) fn check_float(t: &Tensor, op: &'static str) -> Result<()> {
    match (t.device().is_cuda(), t.dtype()) {
        (false, DType::F32 | DType::F64) | (true, DType::F32 | DType::BF16) => Ok(()),
        (true, dtype) => Err(Error::UnsupportedCudaDType { op, dtype }.into()),
        (false, dtype) => Err(unsupported(op, dtype)),
    }
}

/// Checks that `t` has the dtype of `reference`.
pub(crate) fn check_same_dtype(
    t: &Tensor,
    reference: &Tensor,
    op: &'static str,
    what: &'static str,
) -> Result<()> {
    if t.dtype() == reference.dtype() {
        Ok(())
    } else {
        Err(Error::DTypeMismatch {
            op,
            what,
            got: t.dtype(),
            expected: reference.dtype(),
        }
        .into())
    }
}

/// A tensor from a freshly computed CPU buffer.
pub(crate) fn tensor_from<T: WithDType>(data: Vec<T>, dims: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(data, dims, &candle_core::Device::Cpu)
}

/// Rows per rayon task for rows of `row_len` elements.
#[inline]
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (GRAIN / row_len.max(1)).max(1)
}

/// Independent accumulator lanes of the reductions below: enough to vectorise and to
/// hide the add latency, and fixed, so the summation order (hence every result) does not
/// depend on the SIMD width the code was built for.
const LANES: usize = 16;

/// Sum of the lanes, pairwise.
#[inline(always)]
fn fold_lanes<T: Real>(mut acc: [T; LANES]) -> T {
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            let x = acc[l + w];
            acc[l] += x;
        }
        w /= 2;
    }
    acc[0]
}

/// Σ aᵢ·bᵢ with independent lanes, so that the loop vectorises without reassociation
/// licences (the summation order is fixed, hence deterministic).
#[inline(always)]
pub(crate) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = T::zero();
    for (x, y) in ar.iter().zip(br) {
        tail += *x * *y;
    }
    fold_lanes(acc) + tail
}

/// Σ aᵢ with independent lanes.
#[inline(always)]
pub(crate) fn sum<T: Real>(a: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let ac = a.chunks_exact(LANES);
    let ar = ac.remainder();
    for x in ac {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    let mut tail = T::zero();
    for &x in ar {
        tail += x;
    }
    fold_lanes(acc) + tail
}

/// max aᵢ with independent lanes (−∞ for an empty slice). NaNs are skipped here; callers
/// feed the values through exp and a sum, where a NaN still propagates.
#[inline(always)]
pub(crate) fn max<T: Real>(a: &[T]) -> T {
    let mut acc = [T::NEG_INF; LANES];
    let ac = a.chunks_exact(LANES);
    let ar = ac.remainder();
    for x in ac {
        for l in 0..LANES {
            if x[l] > acc[l] {
                acc[l] = x[l];
            }
        }
    }
    let mut m = T::NEG_INF;
    for &x in acc.iter().chain(ar) {
        if x > m {
            m = x;
        }
    }
    m
}

/// max |aᵢ| with independent lanes (0 for an empty slice; NaNs are skipped).
#[inline(always)]
pub(crate) fn max_abs<T: Real>(a: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let ac = a.chunks_exact(LANES);
    let ar = ac.remainder();
    for x in ac {
        for l in 0..LANES {
            let v = x[l].abs();
            if v > acc[l] {
                acc[l] = v;
            }
        }
    }
    let mut m = T::zero();
    for &x in acc.iter().chain(ar) {
        let v = x.abs();
        if v > m {
            m = v;
        }
    }
    m
}

/// Σ aᵢ² accumulated in f64 with independent lanes.
#[inline(always)]
pub(crate) fn sum_sq_f64<T: Real>(a: &[T]) -> f64 {
    let mut acc = [0f64; 4];
    let ac = a.chunks_exact(4);
    let ar = ac.remainder();
    for x in ac {
        for l in 0..4 {
            let v = x[l].to_f64();
            acc[l] += v * v;
        }
    }
    let mut tail = 0.0;
    for x in ar {
        let v = x.to_f64();
        tail += v * v;
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}

/// Σ aᵢ·bᵢ accumulated in f64 with independent lanes.
#[inline(always)]
pub(crate) fn dot_f64<T: Real>(a: &[T], b: &[T]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..4 {
            acc[l] += x[l].to_f64() * y[l].to_f64();
        }
    }
    let mut tail = 0.0;
    for (x, y) in ar.iter().zip(br) {
        tail += x.to_f64() * y.to_f64();
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}

/// Σ gᵢ·(aᵢ − bᵢ) accumulated in f64 with independent lanes, each difference formed in f64.
#[inline(always)]
pub(crate) fn dot_diff_f64<T: Real>(g: &[T], a: &[T], b: &[T]) -> f64 {
    let n = g.len().min(a.len()).min(b.len());
    let (g, a, b) = (&g[..n], &a[..n], &b[..n]);
    let mut acc = [0f64; 4];
    let (gc, ac, bc) = (g.chunks_exact(4), a.chunks_exact(4), b.chunks_exact(4));
    let (gr, ar, br) = (gc.remainder(), ac.remainder(), bc.remainder());
    for ((x, y), z) in gc.zip(ac).zip(bc) {
        for l in 0..4 {
            acc[l] += x[l].to_f64() * (y[l].to_f64() - z[l].to_f64());
        }
    }
    let mut tail = 0.0;
    for ((x, y), z) in gr.iter().zip(ar).zip(br) {
        tail += x.to_f64() * (y.to_f64() - z.to_f64());
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}

/// ⟨g₁, g₀⟩, ⟨g₁, a − b⟩ and ⟨g₀, a − b⟩ in one pass, accumulated in f64 with independent
/// lanes, each difference formed in f64.
#[inline(always)]
pub(crate) fn step_dots_f64<T: Real>(g1: &[T], g0: &[T], a: &[T], b: &[T]) -> [f64; 3] {
    let n = g1.len().min(g0.len()).min(a.len()).min(b.len());
    let mut acc = [[0f64; 4]; 3];
    let whole = n - n % 4;
    for i in (0..whole).step_by(4) {
        for l in 0..4 {
            let (x, y) = (g1[i + l].to_f64(), g0[i + l].to_f64());
            let d = a[i + l].to_f64() - b[i + l].to_f64();
            acc[0][l] += x * y;
            acc[1][l] += x * d;
            acc[2][l] += y * d;
        }
    }
    let mut out = acc.map(|a| (a[0] + a[2]) + (a[1] + a[3]));
    for i in whole..n {
        let (x, y) = (g1[i].to_f64(), g0[i].to_f64());
        let d = a[i].to_f64() - b[i].to_f64();
        out[0] += x * y;
        out[1] += x * d;
        out[2] += y * d;
    }
    out
}

/// y *= α.
#[inline(always)]
pub(crate) fn scale<T: Real>(y: &mut [T], alpha: T) {
    for yi in y.iter_mut() {
        *yi *= alpha;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -86.0f32;
        while x < 88.7 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            // Relative error in units of f32 epsilon.
            worst = worst.max(((got - want) / want).abs() / f32::EPSILON as f64);
            x += 0.000_731;
        }
        eprintln!("exp_f32: worst relative error {worst:.2} ulp (ε units)");
        assert!(worst < 4.0, "exp_f32 off by {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
