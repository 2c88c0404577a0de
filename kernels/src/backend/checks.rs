//! The training step's own kernels (`step.cu`) on the CPU executor against the CPU backend,
//! in f32 and bf16, on edge-case shapes: sizes that are not multiples of the block, a single
//! row, repeated token ids. Each output is a [`Row`] of [`crate::parity`] (worst |Δ|
//! relative to the reference's largest magnitude, with the parity tolerances: 2e-4 in f32,
//! 3e-2 in bf16). For bf16 the inputs are rounded to bf16 first and the CPU reference
//! computes in f32 on those values, so a row measures the kernel's own rounding.

use half::bf16;

use super::cpu::{Cpu, CpuPool};
use super::{Backend, Dt, HeadCols, Tokens, emu};
use crate::emu::Executor;
use crate::error::Error;
use crate::parity::Row;

/// Seeded values in [-scale, scale), rounded to bf16 when `dt` is bf16.
fn random(seed: u64, n: usize, scale: f32, dt: Dt) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let x = ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale;
            if dt == Dt::Bf16 {
                bf16::from_f32(x).to_f32()
            } else {
                x
            }
        })
        .collect()
}

/// Named outputs of one case. Each case makes its buffers `dt` and its values exactly
/// representable in `vt` (so the CPU's f32 buffers get the executor's bf16 values).
type Outputs = Vec<(&'static str, Vec<f32>)>;

/// A batch of `n` token ids below `v` with repeats (ids of a small range, unsorted).
fn token_ids(n: usize, v: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7 + i / 3) % v.min(11)) as u32)
        .collect()
}

/// embed and embed_bwd: h = emb[ids]·s, then demb (random start) += s·dh scattered.
fn embed<B: Backend>(be: &B, dt: Dt, vt: Dt, n: usize) -> Result<Outputs, Error> {
    let (v, hd, s) = (37, 19, 1.75);
    let ids = token_ids(n, v);
    let tokens = Tokens::upload(be, &ids)?;
    let emb = be.upload_f32(&random(1, v * hd, 1.0, vt), dt)?;
    let mut h = be.take(n * hd, dt)?;
    be.embed(&emb, &tokens, s, &mut h)?;
    let dh = be.upload_f32(&random(2, n * hd, 1.0, vt), dt)?;
    let mut demb = be.upload_f32(&random(3, v * hd, 1.0, Dt::F32), Dt::F32)?;
    be.embed_bwd(&dh, &tokens, s, &mut demb)?;
    Ok(vec![
        ("h", be.download_f32(&h)?),
        ("demb", be.download_f32(&demb)?),
    ])
}

/// split_heads of the middle heads of token rows, then merge_heads back into rows that hold
/// other values elsewhere (they must survive).
fn heads<B: Backend>(be: &B, dt: Dt, vt: Dt, b: usize, t: usize) -> Result<Outputs, Error> {
    let (d, width) = (6, 5 * 6 + 1);
    let c = HeadCols {
        b,
        t,
        width,
        col0: 7,
        nh: 3,
        d,
    };
    let x = be.upload_f32(&random(4, b * t * width, 1.0, vt), dt)?;
    let mut y = be.take(c.len(), dt)?;
    be.split_heads(&x, c, &mut y)?;
    let back = be.upload_f32(&random(5, c.len(), 1.0, vt), dt)?;
    let mut rows = be.upload_f32(&random(6, b * t * width, 1.0, vt), dt)?;
    be.merge_heads(&back, c, &mut rows)?;
    Ok(vec![
        ("split_heads", be.download_f32(&y)?),
        ("merge_heads", be.download_f32(&rows)?),
    ])
}

/// SwiGLU forward and backward on paired rows.
fn swiglu<B: Backend>(be: &B, dt: Dt, vt: Dt, n: usize) -> Result<Outputs, Error> {
    let f = 37;
    let gu = be.upload_f32(&random(7, n * 2 * f, 4.0, vt), dt)?;
    let mut y = be.take(n * f, dt)?;
    be.swiglu_fwd(&gu, f, &mut y)?;
    let dy = be.upload_f32(&random(8, n * f, 1.0, vt), dt)?;
    let mut dgu = be.take(n * 2 * f, dt)?;
    be.swiglu_bwd(&gu, &dy, f, &mut dgu)?;
    Ok(vec![
        ("y", be.download_f32(&y)?),
        ("dgu", be.download_f32(&dgu)?),
    ])
}

/// add_scaled, add, scaled and scale (in place), and a copy at offsets.
fn elementwise<B: Backend>(be: &B, dt: Dt, vt: Dt, n: usize) -> Result<Outputs, Error> {
    let a = be.upload_f32(&random(9, n, 1.0, vt), dt)?;
    let b = be.upload_f32(&random(10, n, 1.0, vt), dt)?;
    let mut y = be.take(n, dt)?;
    be.add_scaled(&a, &b, 0.375, &mut y)?;
    let mut sum = be.upload_f32(&random(11, n, 1.0, vt), dt)?;
    be.add(&mut sum, &b)?;
    let mut s = be.take(n, dt)?;
    be.scaled(&a, -1.5, &mut s)?;
    let mut x = be.upload_f32(&random(12, n, 1.0, vt), dt)?;
    be.scale(&mut x, 0.1)?;
    let mut c = be.upload_f32(&random(13, n + 5, 1.0, vt), dt)?;
    be.convert(&a, 1, &mut c, 4, n - 1)?;
    Ok(vec![
        ("add_scaled", be.download_f32(&y)?),
        ("add", be.download_f32(&sum)?),
        ("scaled", be.download_f32(&s)?),
        ("scale in place", be.download_f32(&x)?),
        ("copy at offsets", be.download_f32(&c)?),
    ])
}

fn row(op: &str, dt: Dt, what: &'static str, got: &[f32], want: &[f32]) -> Row {
    let (mut max_abs, mut scale) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        max_abs = max_abs.max((g as f64 - w as f64).abs());
        scale = scale.max((w as f64).abs());
    }
    if got.len() != want.len() || got.iter().any(|x| !x.is_finite()) {
        max_abs = f64::NAN;
    }
    Row {
        op: op.to_string(),
        dtype: dt.name(),
        what,
        max_abs,
        scale,
        tol: if dt == Dt::Bf16 { 3e-2 } else { 2e-4 },
    }
}

/// Each `step.cu` kernel on `ex` in f32 and bf16 against the CPU backend: one [`Row`] per
/// output and shape (a single row or element, and sizes that are not multiples of the block).
pub fn checks(ex: &Executor) -> Result<Vec<Row>, Error> {
    let gpu = emu::backend(ex);
    let pool = CpuPool::default();
    let cpu = Cpu::new(&pool);
    let mut rows = Vec::new();
    for dt in [Dt::F32, Dt::Bf16] {
        // Each case on the executor in `dt` and on the CPU in f32, over the same values.
        macro_rules! case {
            ($f:ident($($arg:expr),*)) => {
                ($f(&gpu, dt, dt, $($arg),*)?, $f(&cpu, Dt::F32, dt, $($arg),*)?)
            };
        }
        let cases = [
            ("step embed 1 token", case!(embed(1))),
            ("step embed 300 tokens", case!(embed(300))),
            ("step heads B1 T1", case!(heads(1, 1))),
            ("step heads B3 T43", case!(heads(3, 43))),
            ("step swiglu_paired 1 row", case!(swiglu(1))),
            ("step swiglu_paired 123 rows", case!(swiglu(123))),
            ("step elementwise n2", case!(elementwise(2))),
            ("step elementwise n70001", case!(elementwise(70001))),
        ];
        for (op, (got, want)) in cases {
            for ((what, g), (_, w)) in got.iter().zip(&want) {
                rows.push(row(op, dt, what, g, w));
            }
        }
        // Conversions: f32 → bf16 rounds to nearest even, as the host's `half` does.
        let xs = random(14, 1001, 3.0, Dt::F32);
        let src = gpu.upload_f32(&xs, Dt::F32)?;
        let mut y = gpu.take(xs.len(), dt)?;
        gpu.convert(&src, 0, &mut y, 0, xs.len())?;
        let want: Vec<f32> = xs
            .iter()
            .map(|&x| match dt {
                Dt::Bf16 => bf16::from_f32(x).to_f32(),
                _ => x,
            })
            .collect();
        let mut exact = row(
            "step convert n1001",
            dt,
            "from f32",
            &gpu.download_f32(&y)?,
            &want,
        );
        exact.tol = 0.0;
        rows.push(exact);
        let mut back = gpu.take(xs.len(), Dt::F32)?;
        gpu.convert(&y, 0, &mut back, 0, xs.len())?;
        let mut exact = row(
            "step convert n1001",
            dt,
            "to f32",
            &gpu.download_f32(&back)?,
            &want,
        );
        exact.tol = 0.0;
        rows.push(exact);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_kernels_agree_with_the_cpu_backend() {
        // Without a C++ compiler the executor cannot build kernels: skip, saying why, unless
        // WSDSCOPE_REQUIRE_EMU is set (as the executor's other tests do).
        if !crate::emu::available_or_required() {
            return;
        }
        let rows = checks(&Executor::new()).unwrap();
        for r in &rows {
            eprintln!(
                "{:>5} {:<30} {:<16} rel {:.1e} (tol {:.0e})",
                r.dtype,
                r.op,
                r.what,
                r.rel(),
                r.tol
            );
        }
        assert!(rows.len() >= 2 * (8 * 2 + 6), "{} rows", rows.len());
        for r in &rows {
            assert!(r.pass(), "{r:?}");
        }
    }
}
