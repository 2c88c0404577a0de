//! Times each fused op (forward + backward) against its `*_slow` twin at the `tiny`
//! model's shapes (B=16, T=128, 2 heads of 64, 1 KV head, hidden 128, ffn 384, V=512) and
//! prints the speedups. Plain `std::time`, median of repeated runs; the rayon pool is the
//! global one (set RAYON_NUM_THREADS to pin it).
//!
//! Everything runs twice: with glibc malloc's defaults, where every multi-MB buffer is a
//! fresh mmap and its first touch page-faults (costly in a VM, and the plain ops allocate
//! more buffers), then after `mallopt` keeps such buffers on the heap, which leaves the
//! ops' own arithmetic.
//!
//! `cargo bench -p wsdscope-kernels --bench ops`

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use wsdscope_kernels as k;

const B: usize = 16;
const T: usize = 128;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const D: usize = 64;
const HIDDEN: usize = 128;
const FFN: usize = 384;
const VOCAB: usize = 512;
const LAYERS: usize = 4;

/// Deterministic pseudo-normal data (sum of uniforms), enough for timing.
fn data(dims: &[usize], seed: u64, std: f64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut u = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let v: Vec<f32> = (0..n)
        .map(|_| ((u() + u() + u() + u() - 2.0) * std * 1.7) as f32)
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// Median wall time of `f` in milliseconds.
fn time(mut f: impl FnMut() -> Result<()>) -> f64 {
    for _ in 0..3 {
        f().unwrap();
    }
    let mut ts: Vec<f64> = (0..15)
        .map(|_| {
            let t0 = Instant::now();
            f().unwrap();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    ts[ts.len() / 2]
}

/// Forward + backward of op(vars, consts), seeded with a dense all-ones upstream gradient
/// (candle's `backward` on a non-scalar; a `sum_all` loss would add candle's slow
/// broadcast backward to both sides and hide the ops' own cost).
fn fwd_bwd(
    op: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    vars: &[Var],
    consts: &[Tensor],
) -> Result<()> {
    let mut xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    xs.extend(consts.iter().cloned());
    let y = op(&xs)?;
    let grads = y.backward()?;
    for v in vars {
        assert!(grads.get(v).is_some());
    }
    Ok(())
}

type Op = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

struct Case {
    name: &'static str,
    vars: Vec<Var>,
    consts: Vec<Tensor>,
    fast: Op,
    slow: Op,
}

fn var(dims: &[usize], seed: u64, std: f64) -> Var {
    Var::from_tensor(&data(dims, seed, std)).unwrap()
}

fn rope_tables() -> (Tensor, Tensor) {
    let inv: Vec<f32> = (0..D / 2)
        .map(|i| 1.0 / 10000f32.powf((2 * i) as f32 / D as f32))
        .collect();
    let (mut c, mut s) = (Vec::new(), Vec::new());
    for p in 0..T {
        for &f in inv.iter().chain(inv.iter()) {
            c.push((p as f32 * f).cos());
            s.push((p as f32 * f).sin());
        }
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(c, (T, D), &dev).unwrap(),
        Tensor::from_vec(s, (T, D), &dev).unwrap(),
    )
}

fn cases() -> Vec<Case> {
    let n = B * T;
    let (cos, sin) = rope_tables();
    let targets: Vec<u32> = (0..n).map(|i| (i * 7919 % VOCAB) as u32).collect();
    let targets = Tensor::from_vec(targets, n, &Device::Cpu).unwrap();
    let scale = 1.0 / (D as f64).sqrt();
    vec![
        Case {
            name: "rms_norm (2048, 128)",
            vars: vec![var(&[n, HIDDEN], 1, 1.0), var(&[HIDDEN], 2, 0.1)],
            consts: vec![],
            fast: Box::new(|t| k::rms_norm(&t[0], &t[1], 1e-5)),
            slow: Box::new(|t| k::rms_norm_slow(&t[0], &t[1], 1e-5)),
        },
        Case {
            name: "swiglu (2048, 384)",
            vars: vec![var(&[n, FFN], 4, 1.0), var(&[n, FFN], 5, 1.0)],
            consts: vec![],
            fast: Box::new(|t| k::swiglu(&t[0], &t[1])),
            slow: Box::new(|t| k::swiglu_slow(&t[0], &t[1])),
        },
        Case {
            name: "rope (16, 2, 128, 64)",
            vars: vec![var(&[B, HEADS, T, D], 7, 1.0)],
            consts: vec![cos, sin],
            fast: Box::new(|t| k::rope(&t[0], &t[1], &t[2])),
            slow: Box::new(|t| k::rope_slow(&t[0], &t[1], &t[2])),
        },
        Case {
            name: "cross_entropy (2048, 512)",
            vars: vec![var(&[n, VOCAB], 9, 2.0)],
            consts: vec![targets],
            fast: Box::new(|t| k::cross_entropy(&t[0], &t[1])),
            slow: Box::new(|t| k::cross_entropy_slow(&t[0], &t[1])),
        },
        Case {
            name: "attention q(16, 2, 128, 64) kv(16, 1, …)",
            vars: vec![
                var(&[B, HEADS, T, D], 10, 1.0),
                var(&[B, KV_HEADS, T, D], 11, 1.0),
                var(&[B, KV_HEADS, T, D], 12, 1.0),
            ],
            consts: vec![],
            fast: Box::new(move |t| k::attention(&t[0], &t[1], &t[2], scale)),
            slow: Box::new(move |t| k::attention_slow(&t[0], &t[1], &t[2], scale)),
        },
    ]
}

/// The tiny model's parameter shapes (HF layout), for the optimiser and the reductions.
fn param_shapes() -> Vec<Vec<usize>> {
    let mut s = vec![vec![VOCAB, HIDDEN]];
    for _ in 0..LAYERS {
        s.extend([
            vec![HIDDEN],
            vec![HEADS * D, HIDDEN],
            vec![KV_HEADS * D, HIDDEN],
            vec![KV_HEADS * D, HIDDEN],
            vec![HIDDEN, HEADS * D],
            vec![HIDDEN],
            vec![FFN, HIDDEN],
            vec![FFN, HIDDEN],
            vec![HIDDEN, FFN],
        ]);
    }
    s.push(vec![HIDDEN]);
    s
}

fn refs(ts: &[Tensor]) -> Vec<&Tensor> {
    ts.iter().collect()
}

fn report(name: &str, fast: f64, slow: f64) {
    println!(
        "{name:<44} fused {fast:>8.3} ms   slow {slow:>8.3} ms   speedup {:>5.2}×",
        slow / fast
    );
}

/// Keeps buffers up to 32 MiB on the heap and never trims it (glibc only).
fn keep_buffers_on_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt only changes glibc malloc's tuning; both parameters and values
        // are valid, and no allocation is in flight on another thread of this program.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

fn main() {
    println!(
        "rayon threads: {} (median of 15 runs, forward + backward)",
        rayon::current_num_threads()
    );
    println!("-- glibc malloc defaults (page faults on fresh buffers included)");
    run_all();
    if keep_buffers_on_heap() {
        println!("-- buffers kept on the heap (mallopt): the ops' arithmetic");
        run_all();
    }
}

fn run_all() {
    for c in cases() {
        let fast = time(|| fwd_bwd(&*c.fast, &c.vars, &c.consts));
        let slow = time(|| fwd_bwd(&*c.slow, &c.vars, &c.consts));
        report(c.name, fast, slow);
    }

    let shapes = param_shapes();
    let n_params: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let mk = |seed: u64, std: f64| -> Vec<Tensor> {
        shapes
            .iter()
            .enumerate()
            .map(|(i, s)| data(s, seed * 1000 + i as u64, std))
            .collect()
    };
    let (p, g, m) = (mk(20, 0.1), mk(21, 0.01), mk(22, 0.001));
    let v: Vec<Tensor> = mk(23, 0.01).iter().map(|t| t.sqr().unwrap()).collect();
    let hp = k::AdamWHparams {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        bias_correction1: 0.5,
        bias_correction2_sqrt: 0.5,
        grad_scale: 0.9,
    };
    let fast = time(|| k::adamw_step(&refs(&p), &refs(&g), &refs(&m), &refs(&v), &hp).map(|_| ()));
    let slow =
        time(|| k::adamw_step_slow(&refs(&p), &refs(&g), &refs(&m), &refs(&v), &hp).map(|_| ()));
    report(
        &format!("adamw_step ({n_params} params, {} tensors)", shapes.len()),
        fast,
        slow,
    );

    let fast = time(|| k::sum_sq_many(&refs(&g)).map(|_| ()));
    let slow = time(|| k::sum_sq_many_slow(&refs(&g)).map(|_| ()));
    report("sum_sq_many (all gradients)", fast, slow);
    let pairs: Vec<(&Tensor, &Tensor)> = g.iter().zip(&m).collect();
    let fast = time(|| k::dot_many(&pairs).map(|_| ()));
    let slow = time(|| k::dot_many_slow(&pairs).map(|_| ()));
    report("dot_many (gradients · moments)", fast, slow);
}
