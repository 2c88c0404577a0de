//! Parity of every CUDA kernel, run on the CPU executor (`--device cuda-emu`), with the CPU
//! ops: each op's forward and backward launches (as `crate::launch` issues them on a GPU) in
//! f32 and bf16, on shapes chosen for the kernels' edge cases, against the plain-op twins
//! on the CPU (autograd for the gradients) at the tolerances of the device parity check.
//!
//! Edge cases: sequence lengths that are not multiples of the attention tiles (and a single
//! position), head dims 64 and 128, GQA ratios 1, 2 and 4, vocabularies and rows that are not
//! multiples of the block or longer than one block, a single row, grid-stride loops that wrap
//! (more elements than the capped grid has threads). For bf16 the reference runs in f32 on
//! the same bf16-rounded inputs and upstream gradient, so a row measures the kernel's error.

use candle_core::{DType, Device, Tensor, Var};

use super::{Row, random, rope_tables, step_hparams, tol};
use crate::emu::{Executor, HostBuf};
use crate::launch::{self, AdamWParams, AttnDims, Elem, Reduction};
use crate::{
    AdamWHparams, adamw_step_slow, attention_slow, cross_entropy_slow, dot_diff_many_slow,
    dot_many_slow, rms_norm_slow, rope_slow, sum_sq_many_slow, swiglu_slow,
};

/// What can fail while checking: a kernel or reference error (a failed check is a row).
type Result<T> = std::result::Result<T, crate::Error>;

fn cerr(e: candle_core::Error) -> crate::Error {
    crate::Error::Executor(format!("reference op: {e}"))
}

fn dt_name(e: Elem) -> &'static str {
    e.suffix()
}

/// The tolerance of a differentiable op's rows in `e`.
fn tol_of(e: Elem) -> f64 {
    tol(match e {
        Elem::F32 => DType::F32,
        Elem::Bf16 => DType::BF16,
    })
}

/// Seeded values in [-scale, scale) as `e` holds them (rounded for bf16), in f32.
fn values(seed: u64, n: usize, scale: f32, e: Elem) -> Vec<f32> {
    let v = random(seed, &[n], scale, &Device::Cpu)
        .and_then(|t| t.to_vec1::<f32>())
        .expect("CPU tensors of f32");
    HostBuf::from_f32(&v, e).to_f32(e)
}

/// max |got − want| and max |want|.
fn worst(got: &[f32], want: &[f32]) -> (f64, f64) {
    let mut d = if got.len() == want.len() {
        0.0
    } else {
        f64::INFINITY
    };
    let mut s = 0.0f64;
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (*g as f64, *w as f64);
        d = if (g - w).abs().is_nan() {
            f64::INFINITY
        } else {
            d.max((g - w).abs())
        };
        s = s.max(w.abs());
    }
    (d, s)
}

fn row(op: &str, e: Elem, what: &'static str, got: &[f32], want: &[f32], tol: f64) -> Row {
    row_floor(op, e, what, got, want, tol, 0.0)
}

/// [`row`] judged against at least `floor`: for a reference that is zero in exact
/// arithmetic (attention's dq and dk at a single position), whose computed value is
/// rounding noise on the scale of its sibling gradients.
fn row_floor(
    op: &str,
    e: Elem,
    what: &'static str,
    got: &[f32],
    want: &[f32],
    tol: f64,
    floor: f64,
) -> Row {
    let (max_abs, scale) = worst(got, want);
    let scale = scale.max(floor);
    Row {
        op: op.to_string(),
        dtype: dt_name(e),
        what,
        max_abs,
        scale,
        tol,
    }
}

/// An input of a reference computation: a name, values, shape, and whether it is
/// differentiated.
struct In<'a> {
    what: &'static str,
    values: &'a [f32],
    dims: &'a [usize],
    grad: bool,
}

fn inp<'a>(what: &'static str, values: &'a [f32], dims: &'a [usize], grad: bool) -> In<'a> {
    In {
        what,
        values,
        dims,
        grad,
    }
}

type Grads = Vec<(&'static str, Vec<f32>)>;

/// The plain-op twin on the CPU in f32: its output, and the gradients of Σ out·up for the
/// inputs marked `grad`.
fn reference(
    inputs: &[In],
    f: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    up: &[f32],
) -> Result<(Vec<f32>, Grads)> {
    let run = || -> candle_core::Result<(Vec<f32>, Grads)> {
        let mut ts = Vec::new();
        let mut vars = Vec::new();
        for x in inputs {
            let t = Tensor::from_slice(x.values, x.dims, &Device::Cpu)?;
            if x.grad {
                let v = Var::from_tensor(&t)?;
                ts.push(v.as_tensor().clone());
                vars.push((x.what, v));
            } else {
                ts.push(t);
            }
        }
        let out = f(&ts)?;
        let upt = Tensor::from_slice(up, out.dims(), &Device::Cpu)?;
        let grads = (&out * &upt)?.sum_all()?.backward()?;
        let mut gs = Vec::new();
        for (what, v) in &vars {
            let g = grads
                .get(v.as_tensor())
                .ok_or_else(|| candle_core::Error::Msg(format!("no gradient for {what}")))?;
            gs.push((*what, g.flatten_all()?.to_vec1::<f32>()?));
        }
        Ok((out.flatten_all()?.to_vec1::<f32>()?, gs))
    };
    run().map_err(cerr)
}

fn grad<'a>(gs: &'a Grads, what: &str) -> &'a [f32] {
    &gs.iter()
        .find(|(w, _)| *w == what)
        .expect("the reference differentiates this input")
        .1
}

fn buf(xs: &[f32], e: Elem) -> HostBuf {
    HostBuf::from_f32(xs, e)
}

fn out(n: usize, e: Elem) -> HostBuf {
    HostBuf::garbage(n * e.size())
}

fn f32_out(n: usize) -> HostBuf {
    HostBuf::garbage(4 * n)
}

fn rms_norm(ex: &Executor, e: Elem, n: usize, h: usize, seed: u64) -> Result<Vec<Row>> {
    let op = format!("rms_norm {n}x{h}");
    let x = values(seed, n * h, 2.0, e);
    let w: Vec<f32> = values(seed + 1, h, 0.5, e)
        .iter()
        .map(|v| v + 1.0)
        .collect();
    let w = HostBuf::from_f32(&w, e).to_f32(e);
    let up = values(seed + 2, n * h, 1.0, e);
    let (want, gs) = reference(
        &[inp("x", &x, &[n, h], true), inp("w", &w, &[h], true)],
        &|t| rms_norm_slow(&t[0], &t[1], 1e-5),
        &up,
    )?;
    let (mut xb, mut wb, mut ub) = (buf(&x, e), buf(&w, e), buf(&up, e));
    let (mut yb, mut rb) = (out(n * h, e), f32_out(n));
    let (mut dxb, mut dwb) = (out(n * h, e), out(h, e));
    let mut g = ex.context();
    launch::rms_norm_fwd(
        &mut g,
        e,
        xb.ptr(),
        wb.ptr(),
        yb.ptr(),
        rb.ptr(),
        n,
        h,
        1e-5,
    )?;
    #[rustfmt::skip]
    launch::rms_norm_bwd(&mut g, e, xb.ptr(), wb.ptr(), ub.ptr(), rb.ptr(), dxb.ptr(), dwb.ptr(), n, h)?;
    let t = tol_of(e);
    Ok(vec![
        row(&op, e, "out", &yb.to_f32(e), &want, t),
        row(&op, e, "grad x", &dxb.to_f32(e), grad(&gs, "x"), t),
        row(&op, e, "grad w", &dwb.to_f32(e), grad(&gs, "w"), t),
    ])
}

fn swiglu(ex: &Executor, e: Elem, n: usize, seed: u64) -> Result<Vec<Row>> {
    let op = format!("swiglu n={n}");
    let gate = values(seed, n, 4.0, e);
    let upv = values(seed + 1, n, 2.0, e);
    let dy = values(seed + 2, n, 1.0, e);
    let (want, gs) = reference(
        &[inp("gate", &gate, &[n], true), inp("up", &upv, &[n], true)],
        &|t| swiglu_slow(&t[0], &t[1]),
        &dy,
    )?;
    let (mut gb, mut ub, mut db) = (buf(&gate, e), buf(&upv, e), buf(&dy, e));
    let (mut yb, mut dgb, mut dub) = (out(n, e), out(n, e), out(n, e));
    let mut g = ex.context();
    launch::swiglu_fwd(&mut g, e, gb.ptr(), ub.ptr(), yb.ptr(), n)?;
    #[rustfmt::skip]
    launch::swiglu_bwd(&mut g, e, gb.ptr(), ub.ptr(), db.ptr(), dgb.ptr(), dub.ptr(), n)?;
    let t = tol_of(e);
    let mut rows = vec![
        row(&op, e, "out", &yb.to_f32(e), &want, t),
        row(&op, e, "grad gate", &dgb.to_f32(e), grad(&gs, "gate"), t),
        row(&op, e, "grad up", &dub.to_f32(e), grad(&gs, "up"), t),
    ];
    if e == Elem::Bf16 {
        // The bf16 kernel computes in f32 and rounds once, to nearest even: its output is
        // exactly the f32 kernel's on the same values, rounded.
        let (mut g32, mut u32_) = (buf(&gate, Elem::F32), buf(&upv, Elem::F32));
        let mut y32 = out(n, Elem::F32);
        launch::swiglu_fwd(&mut g, Elem::F32, g32.ptr(), u32_.ptr(), y32.ptr(), n)?;
        let rounded = HostBuf::from_f32(&y32.to_f32(Elem::F32), Elem::Bf16).to_f32(Elem::Bf16);
        rows.push(exact(&op, e, "rounding", &yb.to_f32(e), &rounded));
    }
    Ok(rows)
}

/// A row that passes only if `got` equals `want` bit for bit (NaNs equal).
fn exact(op: &str, e: Elem, what: &'static str, got: &[f32], want: &[f32]) -> Row {
    let differ = got.len() != want.len()
        || got
            .iter()
            .zip(want)
            .any(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()));
    Row {
        op: op.to_string(),
        dtype: dt_name(e),
        what,
        max_abs: if differ { 1.0 } else { 0.0 },
        scale: 1.0,
        tol: 0.0,
    }
}

fn rope(ex: &Executor, e: Elem, [b, h, t, d]: [usize; 4], seed: u64) -> Result<Vec<Row>> {
    let op = format!("rope {b}x{h}x{t}x{d}");
    let n = b * h * t * d;
    let x = values(seed, n, 2.0, e);
    let (cos, sin) = rope_tables(t, d, &Device::Cpu).map_err(cerr)?;
    let table = |c: &Tensor| -> Result<Vec<f32>> {
        let v = c.flatten_all().and_then(|c| c.to_vec1()).map_err(cerr)?;
        Ok(HostBuf::from_f32(&v, e).to_f32(e))
    };
    let (cos, sin) = (table(&cos)?, table(&sin)?);
    let dy = values(seed + 1, n, 1.0, e);
    let (want, gs) = reference(
        &[
            inp("x", &x, &[b, h, t, d], true),
            inp("cos", &cos, &[t, d], false),
            inp("sin", &sin, &[t, d], false),
        ],
        &|ts| rope_slow(&ts[0], &ts[1], &ts[2]),
        &dy,
    )?;
    let (mut xb, mut cb, mut sb, mut db) = (buf(&x, e), buf(&cos, e), buf(&sin, e), buf(&dy, e));
    let (mut yb, mut dxb) = (out(n, e), out(n, e));
    let mut g = ex.context();
    #[rustfmt::skip]
    launch::rope(&mut g, e, xb.ptr(), cb.ptr(), sb.ptr(), yb.ptr(), n, t, d, false)?;
    #[rustfmt::skip]
    launch::rope(&mut g, e, db.ptr(), cb.ptr(), sb.ptr(), dxb.ptr(), n, t, d, true)?;
    let tl = tol_of(e);
    Ok(vec![
        row(&op, e, "out", &yb.to_f32(e), &want, tl),
        row(&op, e, "grad x", &dxb.to_f32(e), grad(&gs, "x"), tl),
    ])
}

fn cross_entropy(ex: &Executor, e: Elem, n: usize, v: usize, seed: u64) -> Result<Vec<Row>> {
    let op = format!("cross_entropy {n}x{v}");
    let logits = values(seed, n * v, 8.0, e);
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % v as u32).collect();
    // The loss is a scalar: its upstream gradient is one value, exact in bf16.
    let up = [0.75f32];
    let tt = Tensor::from_slice(&targets, n, &Device::Cpu).map_err(cerr)?;
    let (want, gs) = reference(
        &[inp("logits", &logits, &[n, v], true)],
        &|ts| cross_entropy_slow(&ts[0], &tt),
        &up,
    )?;
    let (mut xb, mut tb, mut ub) = (
        buf(&logits, e),
        HostBuf::from_u32(&targets),
        buf(&up, Elem::F32),
    );
    let (mut lse, mut loss, mut dx) = (f32_out(n), f32_out(1), out(n * v, e));
    let mut g = ex.context();
    #[rustfmt::skip]
    launch::cross_entropy_fwd(&mut g, e, xb.ptr(), tb.ptr(), lse.ptr(), loss.ptr(), n, v)?;
    #[rustfmt::skip]
    launch::cross_entropy_bwd(&mut g, e, xb.ptr(), tb.ptr(), lse.ptr(), ub.ptr(), dx.ptr(), n, v)?;
    let t = tol_of(e);
    Ok(vec![
        // The loss is accumulated in f32 from the rows' f32 statistics in both dtypes.
        row(
            &op,
            e,
            "out",
            &loss.to_f32(Elem::F32),
            &want,
            tol_of(Elem::F32),
        ),
        row(&op, e, "grad logits", &dx.to_f32(e), grad(&gs, "logits"), t),
    ])
}

fn attention(ex: &Executor, e: Elem, [b, h, hkv, t, d]: [usize; 5], seed: u64) -> Result<Vec<Row>> {
    let op = format!("attention gqa{} d{d} T{t}", h / hkv);
    let (nq, nk) = (b * h * t * d, b * hkv * t * d);
    let q = values(seed, nq, 2.0, e);
    let k = values(seed + 1, nk, 2.0, e);
    let v = values(seed + 2, nk, 1.0, e);
    let dout = values(seed + 3, nq, 1.0, e);
    let scale = 1.0 / (d as f64).sqrt();
    let (want, gs) = reference(
        &[
            inp("q", &q, &[b, h, t, d], true),
            inp("k", &k, &[b, hkv, t, d], true),
            inp("v", &v, &[b, hkv, t, d], true),
        ],
        &|ts| attention_slow(&ts[0], &ts[1], &ts[2], scale),
        &dout,
    )?;
    let dims = AttnDims {
        b,
        h,
        hkv,
        t,
        d,
        scale: scale as f32,
    };
    let (mut qb, mut kb, mut vb, mut db) = (buf(&q, e), buf(&k, e), buf(&v, e), buf(&dout, e));
    let (mut ob, mut lb) = (out(nq, e), f32_out(b * h * t));
    let (mut dq, mut dk, mut dv) = (out(nq, e), out(nk, e), out(nk, e));
    let mut g = ex.context();
    let ins = [qb.ptr(), kb.ptr(), vb.ptr()];
    launch::attention_fwd(&mut g, e, ins, ob.ptr(), lb.ptr(), dims)?;
    let saved = [ins[0], ins[1], ins[2], ob.ptr(), db.ptr(), lb.ptr()];
    launch::attention_bwd(&mut g, e, saved, [dq.ptr(), dk.ptr(), dv.ptr()], dims)?;
    let tl = tol_of(e);
    // At a single position the softmax is 1 and dq = dk = 0 exactly; judge them on dv's scale.
    let floor = grad(&gs, "v")
        .iter()
        .fold(0.0f64, |m, x| m.max(x.abs() as f64));
    Ok(vec![
        row(&op, e, "out", &ob.to_f32(e), &want, tl),
        row_floor(&op, e, "grad q", &dq.to_f32(e), grad(&gs, "q"), tl, floor),
        row_floor(&op, e, "grad k", &dk.to_f32(e), grad(&gs, "k"), tl, floor),
        row(&op, e, "grad v", &dv.to_f32(e), grad(&gs, "v"), tl),
    ])
}

/// θ after a step: f32 as the twin's arithmetic (1e-5, as the device check); bf16 is the
/// f32 result rounded once: at most half a bf16 ulp, 2⁻⁸ of |θ| (3.9·10⁻³), with margin.
fn param_tol(e: Elem) -> f64 {
    match e {
        Elem::F32 => 1e-5,
        Elem::Bf16 => 5e-3,
    }
}

/// One AdamW step per shape: θ, m and v against the twin; the kernel's statistics against
/// the same sums taken (in f64) over the θ it wrote; the finiteness check against the
/// twin's outputs on a finite step and on two that overflow.
fn adamw(ex: &Executor, e: Elem) -> Result<Vec<Row>> {
    let hp = step_hparams();
    let mut rows = Vec::new();
    for (i, n) in [1usize, 77_101, 300_007].into_iter().enumerate() {
        let op = format!("adamw_step n={n}");
        let s = 40 + 10 * i as u64;
        let theta = values(s, n, 1.0, e);
        let gr = values(s + 1, n, 0.1, e);
        let m = values(s + 2, n, 0.01, Elem::F32);
        let v: Vec<f32> = values(s + 3, n, 1e-4, Elem::F32)
            .iter()
            .map(|x| x.abs())
            .collect();
        let t = |x: &[f32]| Tensor::from_slice(x, n, &Device::Cpu).map_err(cerr);
        let twin = adamw_step_slow(&[&t(&theta)?], &[&t(&gr)?], &[&t(&m)?], &[&t(&v)?], &hp)
            .map_err(cerr)?
            .remove(0);
        let vec = |x: &Tensor| x.to_vec1::<f32>().map_err(cerr);
        let (mut tb, mut gb, mut mb, mut vb) = (
            buf(&theta, e),
            buf(&gr, e),
            buf(&m, Elem::F32),
            buf(&v, Elem::F32),
        );
        let mut stats = HostBuf::garbage(24);
        let mut g = ex.context();
        let ptrs = [tb.ptr(), gb.ptr(), mb.ptr(), vb.ptr()];
        launch::adamw_step(&mut g, e, ptrs, n, AdamWParams::new(&hp), stats.ptr())?;
        let new = tb.to_f32(e);
        rows.push(row(&op, e, "param", &new, &vec(&twin.param)?, param_tol(e)));
        rows.push(row(
            &op,
            e,
            "exp_avg",
            &mb.to_f32(Elem::F32),
            &vec(&twin.exp_avg)?,
            1e-5,
        ));
        rows.push(row(
            &op,
            e,
            "exp_avg_sq",
            &vb.to_f32(Elem::F32),
            &vec(&twin.exp_avg_sq)?,
            1e-5,
        ));
        // The statistics the kernel reduced, against the same sums over what it wrote.
        let (mut usq, mut psq, mut mx) = (0.0f64, 0.0f64, 0.0f64);
        for (a, b) in new.iter().zip(&theta) {
            let dlt = (a - b) as f64;
            usq += dlt * dlt;
            psq += (*a as f64) * (*a as f64);
            mx = mx.max((a - b).abs() as f64);
        }
        let got = stats.to_f64();
        for (what, k, want) in [
            ("update_sq", 0, usq),
            ("param_sq", 1, psq),
            ("max_abs_update", 2, mx),
        ] {
            rows.push(Row {
                op: op.clone(),
                dtype: dt_name(e),
                what,
                max_abs: (got[k] - want).abs(),
                scale: want.abs(),
                tol: 1e-6,
            });
        }
        if i == 1 {
            rows.extend(adamw_finite(ex, e, &theta, &gr, &m, &v, &hp)?);
        }
    }
    Ok(rows)
}

/// Whether the executor's finiteness check agrees with the twin on a finite step, on
/// |g| = 1e20 unclipped (v overflows) and on a huge lr with v = g = 0, m = 1 (θ overflows).
fn adamw_finite(
    ex: &Executor,
    e: Elem,
    theta: &[f32],
    gr: &[f32],
    m: &[f32],
    v: &[f32],
    hp: &AdamWHparams,
) -> Result<Vec<Row>> {
    let n = theta.len();
    let at = n - 1;
    /// (what, g, m, v, hyperparameters) of one step.
    type Case = (&'static str, Vec<f32>, Vec<f32>, Vec<f32>, AdamWHparams);
    let mut cases: Vec<Case> = Vec::new();
    cases.push((
        "agrees: finite step",
        gr.to_vec(),
        m.to_vec(),
        v.to_vec(),
        *hp,
    ));
    let mut g1 = gr.to_vec();
    g1[at] = 1e20;
    cases.push((
        "agrees: |g| = 1e20",
        HostBuf::from_f32(&g1, e).to_f32(e),
        m.to_vec(),
        v.to_vec(),
        AdamWHparams {
            grad_scale: 1.0,
            ..*hp
        },
    ));
    let (mut g2, mut m2, mut v2) = (gr.to_vec(), m.to_vec(), v.to_vec());
    g2[at] = 0.0;
    m2[at] = 1.0;
    v2[at] = 0.0;
    cases.push((
        "agrees: huge lr",
        g2,
        m2,
        v2,
        AdamWHparams { lr: 1e31, ..*hp },
    ));
    let mut rows = Vec::new();
    for (what, g, m, v, hp) in cases {
        let t = |x: &[f32]| Tensor::from_slice(x, n, &Device::Cpu).map_err(cerr);
        let twin = adamw_step_slow(&[&t(theta)?], &[&t(&g)?], &[&t(&m)?], &[&t(&v)?], &hp)
            .map_err(cerr)?
            .remove(0);
        let mut finite = true;
        for x in [&twin.param, &twin.exp_avg, &twin.exp_avg_sq] {
            let x = x.to_vec1::<f32>().map_err(cerr)?;
            finite &= x.iter().all(|x| x.is_finite());
        }
        let (mut tb, mut gb, mut mb, mut vb) = (
            buf(theta, e),
            buf(&g, e),
            buf(&m, Elem::F32),
            buf(&v, Elem::F32),
        );
        let mut flag = HostBuf::zeros(4);
        let mut ctx = ex.context();
        let ptrs = [tb.ptr(), gb.ptr(), mb.ptr(), vb.ptr()];
        launch::adamw_check(&mut ctx, e, ptrs, n, AdamWParams::new(&hp), flag.ptr())?;
        let check = flag.to_i32()[0] == 0;
        rows.push(Row {
            op: "adamw_check".into(),
            dtype: dt_name(e),
            what,
            max_abs: if check == finite { 0.0 } else { 1.0 },
            scale: 1.0,
            tol: 0.0,
        });
    }
    Ok(rows)
}

fn reductions(ex: &Executor, e: Elem) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, n) in [1usize, 7, 300_007].into_iter().enumerate() {
        let op = format!("reductions n={n}");
        let s = 60 + 10 * i as u64;
        let (a, b, g) = (
            values(s, n, 3.0, e),
            values(s + 1, n, 3.0, e),
            values(s + 2, n, 3.0, e),
        );
        let t = |x: &[f32]| Tensor::from_slice(x, n, &Device::Cpu).map_err(cerr);
        let (ta, tb, tg) = (t(&a)?, t(&b)?, t(&g)?);
        let want = [
            sum_sq_many_slow(&[&ta]).map_err(cerr)?[0],
            dot_many_slow(&[(&ta, &tb)]).map_err(cerr)?[0],
            dot_diff_many_slow(&[(&tg, &ta, &tb)]).map_err(cerr)?[0],
        ];
        let (mut ab, mut bb, mut gb) = (buf(&a, e), buf(&b, e), buf(&g, e));
        let kinds = [
            (Reduction::SumSq, "sum_sq", vec![ab.ptr()]),
            (Reduction::Dot, "dot", vec![ab.ptr(), bb.ptr()]),
            (
                Reduction::DotDiff,
                "dot_diff",
                vec![gb.ptr(), ab.ptr(), bb.ptr()],
            ),
        ];
        for ((r, what, ins), want) in kinds.into_iter().zip(want) {
            let mut o = HostBuf::garbage(8);
            launch::reduce(&mut ex.context(), r, e, &ins, n, o.ptr())?;
            let got = o.to_f64()[0];
            rows.push(Row {
                op: op.clone(),
                dtype: dt_name(e),
                what,
                max_abs: (got - want).abs(),
                scale: want.abs(),
                tol: 1e-9,
            });
        }
    }
    Ok(rows)
}

/// The ops this check covers, for [`run`]'s filter.
pub const OPS: &[&str] = &[
    "rms_norm",
    "swiglu",
    "rope",
    "cross_entropy",
    "attention",
    "adamw",
    "reductions",
    "step",
];

/// Every kernel on the executor in f32 and bf16, for the ops `only` accepts (by name, see
/// [`OPS`]). An executor error (a compile error, a deadlock, a bad argument list) is an
/// `Err`; a kernel that runs but is wrong is a failing row.
pub fn run(ex: &Executor, only: &dyn Fn(&str) -> bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for e in [Elem::F32, Elem::Bf16] {
        if only("rms_norm") {
            // A single row longer than one block; rows shorter than one; a width that is not
            // a multiple of the warp.
            rows.extend(rms_norm(ex, e, 1, 2500, 1)?);
            rows.extend(rms_norm(ex, e, 37, 768, 2)?);
            rows.extend(rms_norm(ex, e, 300, 33, 3)?);
        }
        if only("swiglu") {
            // One element; a tail block; more elements than the capped grid has threads.
            for (n, s) in [(1, 4), (1000, 5), (2_100_001, 6)] {
                rows.extend(swiglu(ex, e, n, s)?);
            }
        }
        if only("rope") {
            rows.extend(rope(ex, e, [1, 3, 37, 64], 7)?);
            rows.extend(rope(ex, e, [2, 2, 5, 128], 8)?);
        }
        if only("cross_entropy") {
            // A single row; a vocabulary shorter than a block and not a multiple of the warp;
            // one longer than the largest block and not a multiple of it.
            rows.extend(cross_entropy(ex, e, 1, 77, 9)?);
            rows.extend(cross_entropy(ex, e, 37, 3001, 10)?);
        }
        if only("attention") {
            // GQA 1, 2 and 4; head dims 64 and 128; lengths off the 32-key tile and the
            // 4-row block, and a single position.
            rows.extend(attention(ex, e, [1, 4, 4, 37, 64], 11)?);
            rows.extend(attention(ex, e, [2, 4, 2, 70, 64], 12)?);
            rows.extend(attention(ex, e, [1, 8, 2, 33, 128], 13)?);
            rows.extend(attention(ex, e, [1, 2, 1, 1, 128], 14)?);
        }
        if only("adamw") {
            rows.extend(adamw(ex, e)?);
        }
        if only("reductions") {
            rows.extend(reductions(ex, e)?);
        }
    }
    if only("step") {
        // The training step's own kernels (step.cu), both dtypes, against the CPU backend.
        rows.extend(crate::backend::checks::checks(ex)?);
    }
    Ok(rows)
}
