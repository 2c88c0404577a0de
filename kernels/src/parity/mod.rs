//! Parity of every fused op with its `*_slow` twin on one device: forward outputs and
//! gradients (against a seeded random upstream gradient) on seeded random inputs, and the
//! optimiser step and reductions, each as the worst |Δ| relative to the reference's largest
//! magnitude; and whether the step's finiteness check agrees with the twin, on a finite step
//! and on two that overflow. This is the check a CUDA build runs on a GPU (`wsdscope bench
//! --kernels`).
//!
//! Dtypes: f32 and f64 on the CPU, f32 and bf16 on CUDA. For bf16 the reference runs in f32
//! on the same bf16-rounded inputs, so a row measures the kernel's own error (its bf16
//! outputs are rounded once, ≈ 2⁻⁹ relative). AdamW runs on f32 (master weights) only.

use candle_core::{DType, Device, Result, Tensor, Var};

pub mod executor;

use crate::{
    AdamWHparams, adamw_step, adamw_step_finite, adamw_step_slow, attention, attention_slow,
    cross_entropy, cross_entropy_slow, dot_diff_many, dot_diff_many_slow, dot_many, dot_many_slow,
    rms_norm, rms_norm_slow, rope, rope_slow, sum_sq_many, sum_sq_many_slow, swiglu, swiglu_slow,
};

/// One compared tensor (or statistic).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The op, e.g. `attention`, with the case's shape where one op is checked on several
    /// (`attention gqa2 d64 T70`).
    pub op: String,
    /// The dtype the fused op ran in.
    pub dtype: &'static str,
    /// What was compared: `out`, `grad q`, `param`, `update_sq`, …
    pub what: &'static str,
    /// max |fused − reference|.
    pub max_abs: f64,
    /// max |reference| (the scale `max_abs` is judged against).
    pub scale: f64,
    /// The largest allowed `max_abs / scale`.
    pub tol: f64,
}

impl Row {
    /// `max_abs / scale` (0 when both are 0).
    pub fn rel(&self) -> f64 {
        if self.max_abs == 0.0 {
            0.0
        } else {
            self.max_abs / self.scale.max(f64::MIN_POSITIVE)
        }
    }

    pub fn pass(&self) -> bool {
        self.max_abs.is_finite() && self.scale.is_finite() && self.rel() <= self.tol
    }
}

/// The dtypes the fused ops take on `device`.
pub fn dtypes(device: &Device) -> Vec<DType> {
    if device.is_cuda() {
        vec![DType::F32, DType::BF16]
    } else {
        vec![DType::F32, DType::F64]
    }
}

fn dtype_name(dt: DType) -> &'static str {
    match dt {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::BF16 => "bf16",
        _ => "other",
    }
}

/// Allowed relative error of a differentiable op's outputs and gradients.
fn tol(dt: DType) -> f64 {
    match dt {
        DType::F64 => 1e-9,
        DType::F32 => 2e-4,
        _ => 3e-2,
    }
}

/// The dtype the reference runs in.
fn reference_dtype(dt: DType) -> DType {
    if dt == DType::BF16 { DType::F32 } else { dt }
}

/// Seeded values in [-scale, scale) (SplitMix64), as an f32 tensor on `device`.
fn random(seed: u64, dims: &[usize], scale: f32, device: &Device) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(data, dims, device)
}

/// max |a − b| and max |b|, in f64.
fn compare(a: &Tensor, b: &Tensor) -> Result<(f64, f64)> {
    let a = a.to_dtype(DType::F64)?;
    let b = b.to_dtype(DType::F64)?;
    let d = (a - &b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    let s = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    Ok((d, s))
}

/// An input of a differentiable op: a name for the rows, the values (f32), and whether the
/// op is differentiated in it.
struct Input {
    what: &'static str,
    values: Tensor,
    grad: bool,
}

type OpFn<'a> = &'a dyn Fn(&[Tensor]) -> Result<Tensor>;

/// Runs `fused` in `dt` and `slow` in the reference dtype on the same inputs, then both
/// backward from the same upstream gradient, and compares output and gradients.
fn differentiable(
    op: &'static str,
    dt: DType,
    inputs: &[Input],
    fused: OpFn<'_>,
    slow: OpFn<'_>,
    seed: u64,
) -> Result<Vec<Row>> {
    let rdt = reference_dtype(dt);
    let mut fused_in = Vec::new();
    let mut slow_in = Vec::new();
    let mut vars = Vec::new();
    for x in inputs {
        // Integer inputs (targets) pass through unchanged.
        let (xf, xr) = if x.values.dtype().is_float() {
            let xf = x.values.to_dtype(dt)?;
            let xr = xf.to_dtype(rdt)?;
            (xf, xr)
        } else {
            (x.values.clone(), x.values.clone())
        };
        if x.grad {
            let (vf, vr) = (Var::from_tensor(&xf)?, Var::from_tensor(&xr)?);
            fused_in.push(vf.as_tensor().clone());
            slow_in.push(vr.as_tensor().clone());
            vars.push((x.what, vf, vr));
        } else {
            fused_in.push(xf);
            slow_in.push(xr);
        }
    }
    let out_f = fused(&fused_in)?;
    let out_r = slow(&slow_in)?;
    let device = out_r.device().clone();
    // An upstream gradient exactly representable in `dt`, so both sides receive the same one.
    let up = random(seed ^ 0x5eed, out_r.dims(), 1.0, &device)?
        .to_dtype(dt)?
        .to_dtype(DType::F32)?;
    let loss_f = (out_f.to_dtype(DType::F32)? * &up)?.sum_all()?;
    let loss_r = (out_r.to_dtype(DType::F32)? * &up)?.sum_all()?;
    let grads_f = loss_f.backward()?;
    let grads_r = loss_r.backward()?;
    let t = tol(dt);
    let name = dtype_name(dt);
    let (d, s) = compare(&out_f, &out_r)?;
    let mut rows = vec![Row {
        op: op.into(),
        dtype: name,
        what: "out",
        max_abs: d,
        scale: s,
        tol: t,
    }];
    for (what, vf, vr) in &vars {
        let missing = || candle_core::Error::Msg(format!("{op}: no gradient for {what}"));
        let gf = grads_f.get(vf.as_tensor()).ok_or_else(missing)?;
        let gr = grads_r.get(vr.as_tensor()).ok_or_else(missing)?;
        let (d, s) = compare(gf, gr)?;
        rows.push(Row {
            op: op.into(),
            dtype: name,
            what,
            max_abs: d,
            scale: s,
            tol: t,
        });
    }
    Ok(rows)
}

fn input(what: &'static str, values: Tensor, grad: bool) -> Input {
    Input { what, values, grad }
}

/// cos/sin tables (T, D) of half-split RoPE, as the model builds them.
fn rope_tables(t: usize, d: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = d / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(t * d), Vec::with_capacity(t * d));
    for p in 0..t {
        for i in (0..half).chain(0..half) {
            let a = p as f32 / 10000f32.powf((2 * i) as f32 / d as f32);
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (t, d), device)?,
        Tensor::from_vec(sin, (t, d), device)?,
    ))
}

/// Every differentiable op in `dt` on `device`.
fn ops(device: &Device, dt: DType) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let r = |seed: u64, dims: &[usize], scale: f32| random(seed, dims, scale, device);

    let (n, h) = (96, 768);
    rows.extend(differentiable(
        "rms_norm",
        dt,
        &[
            input("grad x", r(1, &[n, h], 2.0)?, true),
            input("grad w", (r(2, &[h], 0.5)? + 1.0)?, true),
        ],
        &|x| rms_norm(&x[0], &x[1], 1e-5),
        &|x| rms_norm_slow(&x[0], &x[1], 1e-5),
        11,
    )?);

    rows.extend(differentiable(
        "swiglu",
        dt,
        &[
            input("grad gate", r(3, &[n, 1920], 4.0)?, true),
            input("grad up", r(4, &[n, 1920], 2.0)?, true),
        ],
        &|x| swiglu(&x[0], &x[1]),
        &|x| swiglu_slow(&x[0], &x[1]),
        12,
    )?);

    let (b, heads, t, d) = (2, 12, 130, 64);
    let (cos, sin) = rope_tables(t, d, device)?;
    rows.extend(differentiable(
        "rope",
        dt,
        &[
            input("grad x", r(5, &[b, heads, t, d], 2.0)?, true),
            input("cos", cos, false),
            input("sin", sin, false),
        ],
        &|x| rope(&x[0], &x[1], &x[2]),
        &|x| rope_slow(&x[0], &x[1], &x[2]),
        13,
    )?);

    let (rows_ce, vocab) = (200, 3000);
    let targets: Vec<u32> = (0..rows_ce as u32)
        .map(|i| (i * 7919 + 13) % vocab as u32)
        .collect();
    rows.extend(differentiable(
        "cross_entropy",
        dt,
        &[
            input("grad logits", r(6, &[rows_ce, vocab], 8.0)?, true),
            input(
                "targets",
                Tensor::from_vec(targets, rows_ce, device)?,
                false,
            ),
        ],
        &|x| cross_entropy(&x[0], &x[1]),
        &|x| cross_entropy_slow(&x[0], &x[1]),
        14,
    )?);

    // Grouped-query attention with T not a multiple of any tile, then a 128-wide head.
    let cases = [
        ("attention", 2, 8, 4, 150, 64, 7),
        ("attention d128", 1, 4, 4, 77, 128, 8),
    ];
    for (op, b, h, hkv, t, d, seed) in cases {
        let scale = 1.0 / (d as f64).sqrt();
        rows.extend(differentiable(
            op,
            dt,
            &[
                input("grad q", r(seed, &[b, h, t, d], 2.0)?, true),
                input("grad k", r(seed + 100, &[b, hkv, t, d], 2.0)?, true),
                input("grad v", r(seed + 200, &[b, hkv, t, d], 1.0)?, true),
            ],
            &|x| attention(&x[0], &x[1], &x[2], scale),
            &|x| attention_slow(&x[0], &x[1], &x[2], scale),
            15 + seed,
        )?);
    }
    Ok(rows)
}

/// The AdamW step both parity checks take: the third step of a run (bias corrections not
/// yet 1), weight decay on, gradients scaled (as after clipping).
fn step_hparams() -> AdamWHparams {
    AdamWHparams {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        bias_correction1: 1.0 - 0.9f64.powi(3),
        bias_correction2_sqrt: (1.0 - 0.95f64.powi(3)).sqrt(),
        grad_scale: 0.5,
    }
}

/// One AdamW step with and without the fused kernel (f32 or f64).
fn adamw(device: &Device, dt: DType) -> Result<Vec<Row>> {
    let shapes: [&[usize]; 2] = [&[300, 257], &[1000]];
    let mut params = Vec::new();
    let mut grads = Vec::new();
    let mut ms = Vec::new();
    let mut vs = Vec::new();
    for (i, dims) in shapes.iter().enumerate() {
        let s = 40 + 4 * i as u64;
        params.push(random(s, dims, 1.0, device)?.to_dtype(dt)?);
        grads.push(random(s + 1, dims, 0.1, device)?.to_dtype(dt)?);
        ms.push(random(s + 2, dims, 0.01, device)?.to_dtype(dt)?);
        vs.push(random(s + 3, dims, 1e-4, device)?.abs()?.to_dtype(dt)?);
    }
    let hp = step_hparams();
    fn refs(v: &[Tensor]) -> Vec<&Tensor> {
        v.iter().collect()
    }
    let slow = adamw_step_slow(&refs(&params), &refs(&grads), &refs(&ms), &refs(&vs), &hp)?;
    let copies = |v: &[Tensor]| v.iter().map(Tensor::copy).collect::<Result<Vec<_>>>();
    let (p2, m2, v2) = (copies(&params)?, copies(&ms)?, copies(&vs)?);
    let stats = adamw_step(&refs(&p2), &refs(&grads), &refs(&m2), &refs(&v2), &hp)?;
    let (name, t) = (dtype_name(dt), if dt == DType::F64 { 1e-9 } else { 1e-5 });
    let mut rows = Vec::new();
    let mut worst = |what: &'static str, pairs: Vec<(f64, f64)>, tol: f64| {
        let (d, s) = pairs
            .into_iter()
            .fold((0.0f64, 0.0f64), |(d, s), (a, b)| (d.max(a), s.max(b)));
        rows.push(Row {
            op: "adamw_step".into(),
            dtype: name,
            what,
            max_abs: d,
            scale: s,
            tol,
        });
    };
    let pairs = |f: &[Tensor], r: &dyn Fn(usize) -> Tensor| -> Result<Vec<(f64, f64)>> {
        (0..f.len()).map(|i| compare(&f[i], &r(i))).collect()
    };
    worst("param", pairs(&p2, &|i| slow[i].param.clone())?, t);
    worst("exp_avg", pairs(&m2, &|i| slow[i].exp_avg.clone())?, t);
    worst(
        "exp_avg_sq",
        pairs(&v2, &|i| slow[i].exp_avg_sq.clone())?,
        t,
    );
    // The statistics come from f32 differences of nearly equal parameters: looser.
    let st = if dt == DType::F64 { 1e-8 } else { 1e-3 };
    let stat = |f: fn(&crate::AdamWStats) -> f64| -> Vec<(f64, f64)> {
        stats
            .iter()
            .zip(&slow)
            .map(|(a, b)| ((f(a) - f(&b.stats)).abs(), f(&b.stats).abs()))
            .collect()
    };
    worst("update_sq", stat(|s| s.update_sq), st);
    worst("param_sq", stat(|s| s.param_sq), st);
    worst("max_abs_update", stat(|s| s.max_abs_update), st);

    // The finiteness check against the twin's outputs, on the untouched originals: this
    // step; |g| = 1e20 unclipped (v' overflows in f32); an enormous lr where v = g = 0 and
    // m = 1 (θ' = … − (lr/bc₁)·β₁/ε overflows).
    let at = shapes[1][0] - 1;
    let finite = |what, g: &[Tensor], m: &[Tensor], v: &[Tensor], hp: &AdamWHparams| {
        let check = adamw_step_finite(&refs(&params), &refs(g), &refs(m), &refs(v), hp)?;
        let mut twin = true;
        for s in adamw_step_slow(&refs(&params), &refs(g), &refs(m), &refs(v), hp)? {
            for t in [&s.param, &s.exp_avg, &s.exp_avg_sq] {
                let x = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                twin &= x.iter().all(|x| x.is_finite());
            }
        }
        Ok::<_, candle_core::Error>(Row {
            op: "adamw_step_finite".into(),
            dtype: name,
            what,
            max_abs: if check == twin { 0.0 } else { 1.0 },
            scale: 1.0,
            tol: 0.0,
        })
    };
    rows.push(finite("agrees: finite step", &grads, &ms, &vs, &hp)?);
    let mut g = grads.clone();
    g[1] = planted(&g[1], at, 1e20)?;
    let unclipped = AdamWHparams {
        grad_scale: 1.0,
        ..hp
    };
    rows.push(finite("agrees: |g| = 1e20", &g, &ms, &vs, &unclipped)?);
    let (mut g, mut m, mut v) = (grads.clone(), ms.clone(), vs.clone());
    g[1] = planted(&g[1], at, 0.0)?;
    m[1] = planted(&m[1], at, 1.0)?;
    v[1] = planted(&v[1], at, 0.0)?;
    let huge = AdamWHparams {
        lr: if dt == DType::F64 { 1e300 } else { 1e31 },
        ..hp
    };
    rows.push(finite("agrees: huge lr", &g, &m, &v, &huge)?);
    Ok(rows)
}

/// `t` with element `i` (of its flattened view) set to `x`, on `t`'s device.
fn planted(t: &Tensor, i: usize, x: f64) -> Result<Tensor> {
    let mut v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    v[i] = x;
    Tensor::from_vec(v, t.dims(), t.device())?.to_dtype(t.dtype())
}

/// The multi-tensor reductions against their plain-op twins.
fn reductions(device: &Device, dt: DType) -> Result<Vec<Row>> {
    let dims: [&[usize]; 3] = [&[513, 129], &[7], &[100_003]];
    let mk = |s: u64| -> Result<Vec<Tensor>> {
        dims.iter()
            .enumerate()
            .map(|(i, d)| random(s + i as u64, d, 3.0, device)?.to_dtype(dt))
            .collect()
    };
    let (a, b, g) = (mk(60)?, mk(70)?, mk(80)?);
    let ra: Vec<&Tensor> = a.iter().collect();
    let pairs: Vec<(&Tensor, &Tensor)> = a.iter().zip(&b).collect();
    let triples: Vec<(&Tensor, &Tensor, &Tensor)> = g
        .iter()
        .zip(&a)
        .zip(&b)
        .map(|((g, a), b)| (g, a, b))
        .collect();
    let name = dtype_name(dt);
    let row = |what: &'static str, f: Vec<f64>, r: Vec<f64>| {
        let (d, s) = f.iter().zip(&r).fold((0.0f64, 0.0f64), |(d, s), (x, y)| {
            (d.max((x - y).abs()), s.max(y.abs()))
        });
        Row {
            op: "reductions".into(),
            dtype: name,
            what,
            max_abs: d,
            scale: s,
            tol: 1e-9,
        }
    };
    Ok(vec![
        row("sum_sq_many", sum_sq_many(&ra)?, sum_sq_many_slow(&ra)?),
        row("dot_many", dot_many(&pairs)?, dot_many_slow(&pairs)?),
        row(
            "dot_diff_many",
            dot_diff_many(&triples)?,
            dot_diff_many_slow(&triples)?,
        ),
    ])
}

/// Every check on `device`, in every dtype it takes.
pub fn run(device: &Device) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for dt in dtypes(device) {
        rows.extend(ops(device, dt)?);
        if dt != DType::BF16 {
            rows.extend(adamw(device, dt)?);
        }
        rows.extend(reductions(device, dt)?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_kernels_pass_their_own_parity_check() {
        let rows = run(&Device::Cpu).unwrap();
        assert!(rows.len() > 30);
        for r in &rows {
            assert!(r.pass(), "{r:?} (relative {:.2e})", r.rel());
        }
    }
}
