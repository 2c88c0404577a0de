//! The fused AdamW step and the multi-tensor reductions against their `*_slow` twins, the
//! first AdamW step against its closed form, in-place semantics, the step's finiteness
//! check against the twin and the step, and independence of the results from the rayon
//! pool's size. Run with `--nocapture` to see each max |Δ|.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{Rng, check};
use wsdscope_kernels as k;

/// Shapes of one parameter group: a gain, a matrix, and one larger than a rayon chunk.
const SHAPES: [&[usize]; 3] = [&[7], &[33, 65], &[70_001]];

fn hparams(t: i32, weight_decay: f64, grad_scale: f64) -> k::AdamWHparams {
    let (beta1, beta2) = (0.9, 0.95);
    k::AdamWHparams {
        lr: 0.01,
        beta1,
        beta2,
        eps: 1e-8,
        weight_decay,
        bias_correction1: 1.0 - f64::powi(beta1, t),
        bias_correction2_sqrt: (1.0 - f64::powi(beta2, t)).sqrt(),
        grad_scale,
    }
}

/// (params, grads, exp_avg, exp_avg_sq) with moments as after a few steps.
fn group(rng: &mut Rng, dtype: DType) -> [Vec<Tensor>; 4] {
    let mut out: [Vec<Tensor>; 4] = Default::default();
    for dims in SHAPES {
        out[0].push(rng.randn(dims, 0.1, dtype));
        out[1].push(rng.randn(dims, 1e-2, dtype));
        out[2].push(rng.randn(dims, 1e-3, dtype));
        out[3].push(rng.randn(dims, 1e-2, dtype).sqr().unwrap());
    }
    out
}

fn refs(ts: &[Tensor]) -> Vec<&Tensor> {
    ts.iter().collect()
}

fn rel(name: &str, fast: f64, slow: f64, tol: f64) {
    let d = (fast - slow).abs();
    eprintln!("{name}: |Δ| = {d:.3e} (slow {slow:.6e}, bound {tol:.0e}·|slow|)");
    assert!(d <= tol * slow.abs(), "{name}: {fast} vs {slow}");
}

#[test]
fn adamw_matches_slow() {
    for (dtype, wd, clip, tol) in [
        (DType::F32, 0.1, 0.7, 1e-6),
        (DType::F32, 0.0, 1.0, 1e-6),
        (DType::F64, 0.1, 0.3, 1e-13),
    ] {
        let mut rng = Rng::new(11);
        let [p, g, m, v] = group(&mut rng, dtype);
        let hp = hparams(3, wd, clip);
        let slow = k::adamw_step_slow(&refs(&p), &refs(&g), &refs(&m), &refs(&v), &hp).unwrap();
        // The fast step writes in place: give it copies.
        let copies =
            |ts: &[Tensor]| -> Vec<Tensor> { ts.iter().map(|t| t.copy().unwrap()).collect() };
        let (pf, mf, vf) = (copies(&p), copies(&m), copies(&v));
        let stats = k::adamw_step(&refs(&pf), &refs(&g), &refs(&mf), &refs(&vf), &hp).unwrap();
        for (i, s) in slow.iter().enumerate() {
            let tag = format!(
                "adamw {dtype:?} wd {wd} clip {clip} tensor {:?}",
                p[i].dims()
            );
            check(&format!("{tag} param"), &pf[i], &s.param, tol);
            check(&format!("{tag} exp_avg"), &mf[i], &s.exp_avg, tol);
            check(&format!("{tag} exp_avg_sq"), &vf[i], &s.exp_avg_sq, tol);
            // The update is small against θ: compare it directly, not through θ.
            check(
                &format!("{tag} update"),
                &(&pf[i] - &p[i]).unwrap(),
                &(&s.param - &p[i]).unwrap(),
                if dtype == DType::F32 { 1e-4 } else { 1e-10 },
            );
            rel(
                &format!("{tag} Σ(Δθ)²"),
                stats[i].update_sq,
                s.stats.update_sq,
                1e-4,
            );
            rel(
                &format!("{tag} Σθ²"),
                stats[i].param_sq,
                s.stats.param_sq,
                1e-9,
            );
            rel(
                &format!("{tag} max|Δθ|"),
                stats[i].max_abs_update,
                s.stats.max_abs_update,
                1e-4,
            );
        }
    }
}

#[test]
fn adamw_first_step_matches_the_closed_form() {
    // At t = 1 from zero moments: m̂ = g, v̂ = g², so θ' = θ(1 − lr·wd) − lr·g/(|g| + ε).
    let dev = Device::Cpu;
    let theta = [1.0f64, -2.0, 0.5, 3.0];
    let grad = [0.3f64, -0.1, 2.0, 0.0];
    let hp = hparams(1, 0.1, 1.0);
    let var = Var::from_vec(theta.to_vec(), 4, &dev).unwrap();
    let g = Tensor::new(&grad, &dev).unwrap();
    let (m, v) = (var.zeros_like().unwrap(), var.zeros_like().unwrap());
    let stats = k::adamw_step(&[&var], &[&g], &[&m], &[&v], &hp).unwrap();
    let got = var.as_tensor().to_vec1::<f64>().unwrap();
    let mut upd_sq = 0.0;
    for i in 0..4 {
        let want =
            theta[i] * (1.0 - hp.lr * hp.weight_decay) - hp.lr * grad[i] / (grad[i].abs() + hp.eps);
        upd_sq += (want - theta[i]).powi(2);
        assert!(
            (got[i] - want).abs() < 1e-15,
            "θ[{i}] = {} want {want}",
            got[i]
        );
    }
    eprintln!(
        "adamw closed form: Σ(Δθ)² = {} (want {upd_sq})",
        stats[0].update_sq
    );
    assert!((stats[0].update_sq - upd_sq).abs() < 1e-14);
    // The moments were written in place too: m = (1 − β₁)·g, v = (1 − β₂)·g².
    assert_eq!(m.to_vec1::<f64>().unwrap()[2], (1.0 - hp.beta1) * 2.0);
    assert_eq!(v.to_vec1::<f64>().unwrap()[2], (1.0 - hp.beta2) * 4.0);
}

#[test]
fn adamw_rejects_bad_groups_before_writing() {
    let dev = Device::Cpu;
    let p = Tensor::ones(4, DType::F32, &dev).unwrap();
    let g = Tensor::ones(4, DType::F32, &dev).unwrap();
    let m = Tensor::zeros(4, DType::F32, &dev).unwrap();
    let bad = Tensor::zeros(5, DType::F32, &dev).unwrap();
    let hp = hparams(1, 0.0, 1.0);
    // The second tensor's moment has the wrong shape: the first must stay untouched.
    let p2 = Tensor::ones(5, DType::F32, &dev).unwrap();
    let g2 = Tensor::ones(5, DType::F32, &dev).unwrap();
    let m2 = Tensor::zeros(4, DType::F32, &dev).unwrap();
    let e = k::adamw_step(
        &[&p, &p2],
        &[&g, &g2],
        &[&m, &m2],
        &[&m.copy().unwrap(), &bad],
        &hp,
    );
    assert!(e.unwrap_err().to_string().contains("exp_avg has shape [4]"));
    assert_eq!(p.to_vec1::<f32>().unwrap(), vec![1.0; 4]);
    let half = Tensor::ones(4, DType::F16, &dev).unwrap();
    assert!(k::adamw_step(&[&half], &[&half], &[&half], &[&half], &hp).is_err());
}

#[test]
fn reductions_match_slow() {
    let mut rng = Rng::new(12);
    let big = rng.randn(&[300, 700], 1.0, DType::F32);
    let big2 = rng.randn(&[300, 700], 1.0, DType::F32);
    let small = rng.randn(&[17], 3.0, DType::F64);
    let small2 = rng.randn(&[17], 3.0, DType::F64);
    let strided = big.t().unwrap(); // falls back to plain ops
    let offset = big.narrow(0, 100, 150).unwrap(); // contiguous with a start offset
    let offset2 = big2.narrow(0, 100, 150).unwrap();
    let half = big.to_dtype(DType::BF16).unwrap(); // falls back too
    let ts = [&big, &small, &strided, &offset, &half];
    let fast = k::sum_sq_many(&ts).unwrap();
    let slow = k::sum_sq_many_slow(&ts).unwrap();
    let names = ["big f32", "small f64", "strided", "offset view", "bf16"];
    for i in 0..ts.len() {
        rel(
            &format!("sum_sq_many {}", names[i]),
            fast[i],
            slow[i],
            1e-12,
        );
    }
    let pairs = [
        (&big, &big2),
        (&small, &small2),
        (&strided, &big2.t().unwrap()),
        (&offset, &offset2),
        (&big, &big),
    ];
    let pairs: Vec<(&Tensor, &Tensor)> = pairs.iter().map(|(a, b)| (*a, *b)).collect();
    let fast = k::dot_many(&pairs).unwrap();
    let slow = k::dot_many_slow(&pairs).unwrap();
    let names = ["big f32", "small f64", "strided", "offset view", "self"];
    for i in 0..pairs.len() {
        rel(&format!("dot_many {}", names[i]), fast[i], slow[i], 1e-11);
    }
    assert!(k::dot_many(&[(&big, &small)]).is_err());
    let big3 = rng.randn(&[300, 700], 1.0, DType::F32);
    let offset3 = big3.narrow(0, 100, 150).unwrap();
    let triples = [
        (&big, &big2, &big3),
        (&small, &small2, &small),
        (&strided, &big2.t().unwrap(), &big3.t().unwrap()),
        (&offset, &offset2, &offset3),
    ];
    let fast = k::dot_diff_many(&triples).unwrap();
    let slow = k::dot_diff_many_slow(&triples).unwrap();
    let names = ["big f32", "small f64", "strided", "offset view"];
    for i in 0..triples.len() {
        rel(
            &format!("dot_diff_many {}", names[i]),
            fast[i],
            slow[i],
            1e-11,
        );
    }
    assert!(k::dot_diff_many(&[(&big, &big2, &small)]).is_err());
    // The step geometry's three products in one pass agree with the pair and triple passes.
    let big4 = rng.randn(&[300, 700], 1.0, DType::F32);
    let offset4 = big4.narrow(0, 100, 150).unwrap();
    let tiny = rng.randn(&[3, 5], 1.0, DType::F32);
    let tiny2 = rng.randn(&[3, 5], 1.0, DType::F32);
    let quads = [
        (&big, &big2, &big3, &big4),
        (&small, &small2, &small, &small2),
        (&offset, &offset2, &offset3, &offset4),
        (&tiny, &tiny2, &tiny, &tiny2),
    ];
    // Together (the f64 quadruple sends all through the pair and triple passes), and each
    // alone (the f32 ones in one pass of their own).
    let together = k::step_dots_many(&quads).unwrap();
    let names = ["big f32", "small f64", "offset view", "tiny (a tail only)"];
    for (i, &(g1, g0, a, b)) in quads.iter().enumerate() {
        let alone = k::step_dots_many(&[(g1, g0, a, b)]).unwrap()[0];
        let gg = k::dot_many_slow(&[(g1, g0)]).unwrap()[0];
        let gv = k::dot_diff_many_slow(&[(g1, a, b), (g0, a, b)]).unwrap();
        for (j, want) in [gg, gv[0], gv[1]].into_iter().enumerate() {
            let what = format!("step_dots_many {} [{j}]", names[i]);
            rel(&what, together[i][j], want, 1e-11);
            rel(&format!("{what} alone"), alone[j], want, 1e-11);
        }
    }
    assert!(k::step_dots_many(&[(&big, &big2, &big3, &small)]).is_err());
}

#[test]
fn results_do_not_depend_on_the_pool_size() {
    let mut rng = Rng::new(13);
    let x = rng.randn(&[2048, 128], 1.0, DType::F32);
    let w = rng.randn(&[128], 1.0, DType::F32);
    let q = rng.randn(&[4, 2, 100, 32], 1.0, DType::F32);
    let kv = rng.randn(&[4, 1, 100, 32], 1.0, DType::F32);
    let big = rng.randn(&[500_000], 1.0, DType::F32);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let xv = Var::from_tensor(&x).unwrap();
            let wv = Var::from_tensor(&w).unwrap();
            let y = k::rms_norm(&xv, &wv, 1e-6).unwrap();
            let gw = y
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(&wv)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let qv = Var::from_tensor(&q).unwrap();
            let kvv = Var::from_tensor(&kv).unwrap();
            let a = k::attention(&qv, &kvv, &kvv, 0.2).unwrap();
            let gk = a
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(&kvv)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (gw, gk, k::sum_sq_many(&[&big]).unwrap())
        })
    };
    let (one, three) = (run(1), run(3));
    assert!(one == three, "results changed with the pool size");
    eprintln!(
        "pool-size independence: rms_norm dw, attention dk, sum_sq bitwise equal for 1 and 3 threads"
    );
}

/// `t` with element `i` (of its flattened view) set to `x`.
fn with(t: &Tensor, i: usize, x: f64) -> Tensor {
    let mut v = t
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    v[i] = x;
    Tensor::from_vec(v, t.dims(), &Device::Cpu)
        .unwrap()
        .to_dtype(t.dtype())
        .unwrap()
}

fn all_finite(t: &Tensor) -> bool {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .all(|x| x.is_finite())
}

/// The raw bits of every element, to show that nothing was written.
fn bits(ts: &[Tensor]) -> Vec<Vec<u64>> {
    ts.iter()
        .map(|t| {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect()
}

/// Whether the slow twin's new (θ, m, v) are each all finite, over the group.
fn slow_finite(
    p: &[Tensor],
    g: &[Tensor],
    m: &[Tensor],
    v: &[Tensor],
    hp: &k::AdamWHparams,
) -> [bool; 3] {
    let slow = k::adamw_step_slow(&refs(p), &refs(g), &refs(m), &refs(v), hp).unwrap();
    [
        slow.iter().all(|s| all_finite(&s.param)),
        slow.iter().all(|s| all_finite(&s.exp_avg)),
        slow.iter().all(|s| all_finite(&s.exp_avg_sq)),
    ]
}

/// The finiteness check against the slow twin and against the in-place step itself, on
/// finite steps and on steps that overflow in one element of the tensor larger than a
/// rayon chunk: |g| = 1e20 without clipping (g² overflows f32, so v' is infinite while θ'
/// stays finite) and an enormous lr with v = 0 (θ' overflows, m' and v' do not). The check
/// writes nothing.
#[test]
fn adamw_finite_check_agrees_with_slow() {
    let last = SHAPES.len() - 1;
    let at = 70_000; // in the last rayon chunk of the largest tensor
    for dtype in [DType::F32, DType::F64] {
        // Finite steps; with and without clipping and decay.
        for (wd, clip) in [(0.1, 0.7), (0.0, 1.0)] {
            let mut rng = Rng::new(21);
            let [p, g, m, v] = group(&mut rng, dtype);
            let hp = hparams(3, wd, clip);
            let got = k::adamw_step_finite(&refs(&p), &refs(&g), &refs(&m), &refs(&v), &hp);
            eprintln!("adamw check {dtype:?} wd {wd} clip {clip}: {got:?}");
            assert!(got.unwrap());
            assert_eq!(slow_finite(&p, &g, &m, &v, &hp), [true; 3]);
        }

        // |g| = 1e20, no clipping: v' = β₂·v + (1 − β₂)·1e40 is +∞ in f32, finite in f64.
        let mut rng = Rng::new(22);
        let [p, mut g, m, v] = group(&mut rng, dtype);
        g[last] = with(&g[last], at, -1e20);
        let hp = hparams(3, 0.1, 1.0);
        let before = bits(&[p.clone(), m.clone(), v.clone()].concat());
        let got = k::adamw_step_finite(&refs(&p), &refs(&g), &refs(&m), &refs(&v), &hp).unwrap();
        let slow = slow_finite(&p, &g, &m, &v, &hp);
        eprintln!("adamw check {dtype:?} |g| = 1e20: {got} (slow θ, m, v finite: {slow:?})");
        let f32 = dtype == DType::F32;
        assert_eq!(
            slow,
            [true, true, !f32],
            "the case does not overflow as meant"
        );
        assert_eq!(got, !f32);
        assert_eq!(bits(&[p.clone(), m.clone(), v.clone()].concat()), before);

        // An enormous lr where v = g = 0 and m ≠ 0: m'/(√v'·… + ε) = β₁·m/ε, so
        // θ' = θ·(1 − lr·wd) − (lr/bc₁)·β₁·m/ε overflows; m' and v' stay finite.
        let mut rng = Rng::new(23);
        let [p, mut g, mut m, mut v] = group(&mut rng, dtype);
        g[last] = with(&g[last], at, 0.0);
        m[last] = with(&m[last], at, 1.0);
        v[last] = with(&v[last], at, 0.0);
        let mut hp = hparams(3, 0.1, 1.0);
        hp.lr = if f32 { 1e31 } else { 1e300 };
        let got = k::adamw_step_finite(&refs(&p), &refs(&g), &refs(&m), &refs(&v), &hp).unwrap();
        let slow = slow_finite(&p, &g, &m, &v, &hp);
        eprintln!(
            "adamw check {dtype:?} lr {:e}: {got} (slow θ, m, v finite: {slow:?})",
            hp.lr
        );
        assert_eq!(
            slow,
            [false, true, true],
            "the case does not overflow as meant"
        );
        assert!(!got);

        // The same enormous lr without the planted element: every θ' is finite.
        let mut rng = Rng::new(23);
        let [p, g, m, v] = group(&mut rng, dtype);
        let got = k::adamw_step_finite(&refs(&p), &refs(&g), &refs(&m), &refs(&v), &hp).unwrap();
        assert_eq!(got, slow_finite(&p, &g, &m, &v, &hp) == [true; 3]);

        // A NaN gradient makes every new value NaN.
        let mut rng = Rng::new(24);
        let [p, mut g, m, v] = group(&mut rng, dtype);
        g[0] = with(&g[0], 3, f64::NAN);
        let hp = hparams(3, 0.1, 0.5);
        assert!(!k::adamw_step_finite(&refs(&p), &refs(&g), &refs(&m), &refs(&v), &hp).unwrap());
    }
}

/// The check answers exactly what the in-place step then writes, in f32, for lrs from
/// ordinary to overflowing (each step on fresh copies).
#[test]
fn adamw_finite_check_agrees_with_the_step() {
    let mut rng = Rng::new(25);
    let [p, g, m, v] = group(&mut rng, DType::F32);
    let mut seen = [false; 2];
    for lr in [1e-3, 1e30, 1e33, 1e35, 1e36, 1e37, 1e38, 1e39] {
        let mut hp = hparams(2, 0.1, 0.9);
        hp.lr = lr;
        let copies =
            |ts: &[Tensor]| -> Vec<Tensor> { ts.iter().map(|t| t.copy().unwrap()).collect() };
        let (pc, mc, vc) = (copies(&p), copies(&m), copies(&v));
        let check =
            k::adamw_step_finite(&refs(&pc), &refs(&g), &refs(&mc), &refs(&vc), &hp).unwrap();
        k::adamw_step(&refs(&pc), &refs(&g), &refs(&mc), &refs(&vc), &hp).unwrap();
        let wrote = pc.iter().chain(&mc).chain(&vc).all(all_finite);
        eprintln!("adamw check vs step, lr {lr:e}: check {check}, step wrote finite {wrote}");
        assert_eq!(check, wrote, "lr {lr:e}");
        seen[check as usize] = true;
    }
    assert_eq!(seen, [true, true], "the lrs should give both answers");
}
