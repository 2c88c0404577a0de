use super::*;

fn tiny_cfg() -> ModelConfig {
    let mut c = ModelConfig::minicpm(16, 24, 4, 2, 2, 11);
    c.dim_model_base = 8;
    c
}

fn batch(device: &Device) -> (Tensor, Tensor) {
    let x: Vec<u32> = (0..2 * 5).map(|i| (i * 7 % 11) as u32).collect();
    let y: Vec<u32> = (0..2 * 5).map(|i| (i * 3 % 11) as u32).collect();
    (
        Tensor::from_vec(x, (2, 5), device).unwrap(),
        Tensor::from_vec(y, (2, 5), device).unwrap(),
    )
}

#[test]
fn parameter_count_matches_the_config() {
    let cfg = tiny_cfg();
    let m = MiniCpm::init(&cfg, 8, 0, &Device::Cpu, DType::F32).unwrap();
    let n: usize = m.named_vars().iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(n as u64, cfg.total_params());
}

#[test]
fn init_follows_mup_and_is_seeded() {
    let mut cfg = ModelConfig::minicpm(256, 256, 4, 4, 1, 3000);
    cfg.dim_model_base = 64; // width_mult 4: hidden std = 0.1 / 2
    let m = MiniCpm::init(&cfg, 8, 1, &Device::Cpu, DType::F32).unwrap();
    let std = |name: &str| {
        let v = &m.named_vars().iter().find(|(n, _)| n == name).unwrap().1;
        v.as_tensor()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
    };
    assert!((std("model.embed_tokens.weight") - 0.1).abs() < 0.003);
    assert!((std("model.layers.0.mlp.up_proj.weight") - 0.05).abs() < 0.002);
    assert_eq!(std("model.norm.weight"), 1.0);
    let again = MiniCpm::init(&cfg, 8, 1, &Device::Cpu, DType::F32).unwrap();
    let a = m.named_vars()[1]
        .1
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = again.named_vars()[1]
        .1
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn every_parameter_receives_a_gradient() {
    let cfg = tiny_cfg();
    let m = MiniCpm::init(&cfg, 8, 0, &Device::Cpu, DType::F32).unwrap();
    let (x, y) = batch(&Device::Cpu);
    let loss = m.loss(&x, &y, true).unwrap();
    let grads = loss.backward().unwrap();
    for (name, v) in m.named_vars() {
        let g = grads
            .get(v)
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        let n = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(n > 0.0 && n.is_finite(), "{name}: |g|² = {n}");
    }
}

#[test]
fn gradients_match_finite_differences() {
    // f64, central differences on a few entries of every tensor.
    let cfg = tiny_cfg();
    let dev = Device::Cpu;
    let m = MiniCpm::init(&cfg, 8, 3, &dev, DType::F64).unwrap();
    let (x, y) = batch(&dev);
    let grads = m.loss(&x, &y, true).unwrap().backward().unwrap();
    let eps = 1e-5;
    let mut worst = 0.0f64;
    for (name, v) in m.named_vars() {
        let g = grads
            .get(v)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = v
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for k in [0, base.len() / 3, base.len() - 1] {
            let probe = |delta: f64| {
                let mut p = base.clone();
                p[k] += delta;
                v.set(&Tensor::from_vec(p, v.shape(), &dev).unwrap())
                    .unwrap();
                m.loss(&x, &y, false).unwrap().to_scalar::<f64>().unwrap()
            };
            let fd = (probe(eps) - probe(-eps)) / (2.0 * eps);
            v.set(&Tensor::from_vec(base.clone(), v.shape(), &dev).unwrap())
                .unwrap();
            let err = (fd - g[k]).abs() / (fd.abs() + g[k].abs()).max(1e-6);
            worst = worst.max(err);
            assert!(
                err < 1e-5,
                "{name}[{k}]: autograd {} vs finite differences {fd}",
                g[k]
            );
        }
    }
    eprintln!("worst relative gradient error: {worst:e}");
}

/// The fused kernels and the plain-op reference compute the same loss and gradients.
#[test]
fn fused_ops_match_the_reference_ops() {
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 2e-4)] {
        let cfg = tiny_cfg();
        let dev = Device::Cpu;
        let fused = MiniCpm::init(&cfg, 8, 5, &dev, dtype).unwrap();
        let mut reference = MiniCpm::init(&cfg, 8, 5, &dev, dtype).unwrap();
        reference.set_ops(Ops::Reference);
        let (x, y) = batch(&dev);
        let lf = fused.loss(&x, &y, true).unwrap();
        let lr = reference.loss(&x, &y, true).unwrap();
        let scalar = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        let (a, b) = (scalar(&lf), scalar(&lr));
        assert!((a - b).abs() < tol * b.abs(), "{dtype:?} loss {a} vs {b}");
        let (gf, gr) = (lf.backward().unwrap(), lr.backward().unwrap());
        let mut worst = 0.0f64;
        for ((name, vf), (_, vr)) in fused.named_vars().iter().zip(reference.named_vars()) {
            let flat = |g: &Tensor| {
                g.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            let (f, r) = (flat(gf.get(vf).unwrap()), flat(gr.get(vr).unwrap()));
            let scale = r.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-12);
            let d = f
                .iter()
                .zip(&r)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            worst = worst.max(d / scale);
            assert!(
                d <= tol * scale,
                "{dtype:?} {name}: max |Δ| {d} (scale {scale})"
            );
        }
        eprintln!("{dtype:?}: fused vs reference, worst gradient |Δ|/max|g| {worst:.1e}");
    }
}

/// The hand-written step (`model/step.rs`) on the CPU computes the loss and gradients of
/// the plain-op reference graph, and its forward-only loss agrees too.
#[test]
fn cpu_step_matches_the_reference_ops() {
    let cfg = tiny_cfg(); // 4 query heads on 2 KV heads
    let dev = Device::Cpu;
    let fast = MiniCpm::init(&cfg, 8, 9, &dev, DType::F32).unwrap();
    assert!(fast.uses_step());
    let mut reference = MiniCpm::init(&cfg, 8, 9, &dev, DType::F32).unwrap();
    reference.set_ops(Ops::Reference);
    let (x, y) = batch(&dev);
    let (lf, gf) = fast.loss_and_grads(&x, &y).unwrap();
    let (lr, gr) = reference.loss_and_grads(&x, &y).unwrap();
    let scalar = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
    let (a, b) = (scalar(&lf), scalar(&lr));
    assert!((a - b).abs() < 1e-5 * b.abs(), "loss {a} vs {b}");
    let forward_only = scalar(&fast.loss(&x, &y, false).unwrap());
    assert!(
        (forward_only - b).abs() < 1e-5 * b.abs(),
        "{forward_only} vs {b}"
    );
    let mut worst = 0.0f64;
    for ((name, vf), (_, vr)) in fast.named_vars().iter().zip(reference.named_vars()) {
        let flat = |g: &Tensor| g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (f, r) = (flat(gf.get(vf).unwrap()), flat(gr.get(vr).unwrap()));
        let scale = r.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
        let d = f
            .iter()
            .zip(&r)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        worst = worst.max((d / scale) as f64);
        assert!(d <= 2e-4 * scale, "{name}: max |Δ| {d} (scale {scale})");
    }
    eprintln!("CPU step vs reference, worst gradient |Δ|/max|g| {worst:.1e}");
    let bad = Tensor::from_vec(vec![3u32, 11], (1, 2), &dev).unwrap();
    let e = fast.loss_and_grads(&bad, &bad).unwrap_err().to_string();
    assert!(e.contains("11") && e.contains("vocabulary"), "{e}");
}

#[test]
fn attention_is_causal() {
    // Changing token 2 must leave the logits of positions 0 and 1 untouched.
    let cfg = tiny_cfg();
    let dev = Device::Cpu;
    let m = MiniCpm::init(&cfg, 8, 0, &dev, DType::F64).unwrap();
    let logits = |xs: Vec<u32>| {
        let x = Tensor::from_vec(xs, (1, 3), &dev).unwrap();
        m.logits(&x, false).unwrap().to_vec2::<f64>().unwrap()
    };
    let a = logits(vec![4, 5, 6]);
    let b = logits(vec![4, 5, 10]);
    assert_eq!(a[0], b[0]);
    assert_eq!(a[1], b[1]);
    assert_ne!(a[2], b[2]);
}
