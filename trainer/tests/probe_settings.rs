//! What the periodic probes' settings cost and what they lose, on the default preset's own
//! states: each test trains the default `record` run (tiny, 600 steps, decay from 540) and
//! at its anchors measures on the same state (same batch, same random directions):
//! - slices and the landscape at several resolutions, their cost in training steps and how
//!   far each lies from the finest;
//! - the sharpness probe with several residual tolerances against Lanczos run to a residual
//!   of 1e-3, and their cost;
//! - the finite-difference step of the Hessian-vector products, central and forward, at the
//!   converged top eigenvector.
//!
//! Ignored by default (each trains 600 steps, about a minute on 2 cores):
//! `cargo test --release -p wsdscope-trainer --test probe_settings -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use wsdscope_events::vocabulary::{landscape, sharpness, slice};
use wsdscope_trainer::probe::ProbeKind;
use wsdscope_trainer::{DecayShape, ProbeConfig, RunConfig, Schedule, Trainer, preset};

/// The default `record` run: the tiny preset's shape and steps, peak lr 0.01, 10% warmup,
/// the last 10% an exp decay to 0.1×.
fn default_record() -> RunConfig {
    let p = preset("tiny").unwrap();
    let mut cfg = common::small_run(p.steps);
    cfg.preset = "tiny".into();
    cfg.model = p.model;
    cfg.batch = p.batch;
    cfg.seq = p.seq;
    cfg.seed = 0;
    cfg.threads = 2;
    cfg.eval_every = u64::MAX;
    cfg.schedule = Schedule::wsd(0.01, p.steps, 60, 60, DecayShape::Exp, 0.1).unwrap();
    cfg
}

/// The trained run `tr` at its current step as an objective over the first `seqs` sequences
/// of that step's batch (what the probes evaluate), with the batch.
fn objective_at(
    tr: &Trainer,
    seqs: usize,
) -> (
    wsdscope_trainer::objective::ModelObjective,
    wsdscope_trainer::data::Batch,
) {
    let b = tr.data().train_batch_of(tr.step_count(), tr.config().batch);
    let n = seqs * b.seq;
    let dev = candle_core::Device::Cpu;
    let x = candle_core::Tensor::from_slice(&b.inputs[..n], (seqs, b.seq), &dev).unwrap();
    let y = candle_core::Tensor::from_slice(&b.targets[..n], (seqs, b.seq), &dev).unwrap();
    let f = wsdscope_trainer::objective::ModelObjective::new(tr.model(), x, y).unwrap();
    (f, b)
}

/// λ_max of H and of P⁻¹H from a sharpness result.
fn tops(r: &wsdscope_events::ProbeResult) -> (f64, f64) {
    (
        r.scalars[sharpness::LAMBDA_MAX],
        r.scalars[sharpness::PRECOND_LAMBDA_MAX],
    )
}

/// Runs `kind` on the checkpointed state `ck` with probe settings `probes`: (result, seconds).
fn probe_with(
    ck: &std::path::Path,
    probes: &ProbeConfig,
    kind: ProbeKind,
) -> (wsdscope_events::ProbeResult, f64) {
    let mut tr = Trainer::resume(ck, |c| c.probes = probes.clone()).unwrap();
    let t = Instant::now();
    let r = tr.probe(kind).unwrap();
    (r, t.elapsed().as_secs_f64())
}

/// Linear interpolation of `coarse` (on an even grid over the same span) at `n` even points.
fn upsample(coarse: &[f64], n: usize) -> Vec<f64> {
    let m = coarse.len();
    (0..n)
        .map(|i| {
            let t = i as f64 * (m - 1) as f64 / (n - 1) as f64;
            let j = (t.floor() as usize).min(m - 2);
            let f = t - j as f64;
            coarse[j] * (1.0 - f) + coarse[j + 1] * f
        })
        .collect()
}

/// Bilinear interpolation of a `m`×`m` row-major grid at `n`×`n` points over the same span.
fn upsample_2d(coarse: &[f64], m: usize, n: usize) -> Vec<f64> {
    let rows: Vec<Vec<f64>> = coarse.chunks(m).map(|r| upsample(r, n)).collect();
    let mut out = vec![0.0; n * n];
    for x in 0..n {
        let col: Vec<f64> = rows.iter().map(|r| r[x]).collect();
        for (y, v) in upsample(&col, n).into_iter().enumerate() {
            out[y * n + x] = v;
        }
    }
    out
}

/// Largest difference between `a` and `b` as a share of `b`'s range.
fn worst_of_range(a: &[f64], b: &[f64]) -> f64 {
    let (lo, hi) = b
        .iter()
        .fold((f64::MAX, f64::MIN), |m, &v| (m.0.min(v), m.1.max(v)));
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    worst / (hi - lo)
}

#[test]
#[ignore = "trains the default run (about two minutes on 2 cores); run by hand to measure"]
fn cheaper_probe_settings_on_the_default_run() {
    let cfg = default_record();
    let dir = std::env::temp_dir().join(format!("wsdscope-probe-settings-{}", std::process::id()));
    let mut tr = Trainer::new(cfg).unwrap();
    let mut step_s = Vec::new();
    let old = ProbeConfig {
        grid: 9,
        points: 17,
        ..ProbeConfig::default()
    };
    for at in [540, 560, 580, 600] {
        while tr.step_count() < at {
            let t = Instant::now();
            tr.train_step().unwrap();
            step_s.push(t.elapsed().as_secs_f64());
        }
        let ck = tr.save_checkpoint(&dir.join(at.to_string())).unwrap();
        // The pace of the last 100 steps, for costs in training steps.
        let recent = &step_s[step_s.len().saturating_sub(100)..];
        let pace = recent.iter().sum::<f64>() / recent.len() as f64;
        eprintln!("step {at}: {:.1} ms per training step", pace * 1e3);
        // Slices and the landscape: the coarser grid is a subset of the finer one (same span,
        // same directions), interpolated back onto it.
        let (fine, s) = probe_with(&ck, &old, ProbeKind::Slice);
        eprintln!("  slice 17 points: {:.2} steps", s / pace);
        for points in [9, 5] {
            let p = ProbeConfig {
                points,
                ..old.clone()
            };
            let (r, s) = probe_with(&ck, &p, ProbeKind::Slice);
            let (a, b) = (
                &r.series[slice::LOSS_RANDOM],
                &fine.series[slice::LOSS_RANDOM],
            );
            eprintln!(
                "  slice {points} points: {:.2} steps, linear between them off by at most {:.2}% of the slice's range",
                s / pace,
                100.0 * worst_of_range(&upsample(a, b.len()), b)
            );
        }
        // The landscape against a 13×13 grid over the same span and directions.
        let p = ProbeConfig {
            grid: 13,
            ..old.clone()
        };
        let (fine, s) = probe_with(&ck, &p, ProbeKind::Landscape);
        eprintln!("  landscape 13×13: {:.2} steps", s / pace);
        for grid in [9, 7, 5] {
            let p = ProbeConfig {
                grid,
                ..old.clone()
            };
            let (r, s) = probe_with(&ck, &p, ProbeKind::Landscape);
            let (a, b) = (&r.series[landscape::LOSS], &fine.series[landscape::LOSS]);
            eprintln!(
                "  landscape {grid}×{grid}: {:.2} steps, bilinear between its points off the 13×13 map by at most {:.2}% of its range",
                s / pace,
                100.0 * worst_of_range(&upsample_2d(a, grid, 13), b)
            );
        }
        let (_, s) = probe_with(&ck, &old, ProbeKind::Noise);
        eprintln!("  noise: {:.2} steps", s / pace);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The sharpness probe at the default run's anchors with residual tolerances from 2% to 20%,
/// against Lanczos from the same start run to a residual of 1e-3 (up to 60 products): how far
/// each λ_max lies from it and what it costs.
#[test]
#[ignore = "trains the default run (about two minutes on 2 cores); run by hand to measure"]
fn sharpness_converges_where_the_default_run_probes_it() {
    let cfg = default_record();
    let dir = std::env::temp_dir().join(format!("wsdscope-sharpness-{}", std::process::id()));
    let defaults = cfg.probes.clone();
    let mut tr = Trainer::new(cfg).unwrap();
    let mut step_s = Vec::new();
    for at in [60, 300, 540, 560, 580, 600] {
        while tr.step_count() < at {
            let t = Instant::now();
            tr.train_step().unwrap();
            step_s.push(t.elapsed().as_secs_f64());
        }
        let recent = &step_s[step_s.len().saturating_sub(100)..];
        let pace = recent.iter().sum::<f64>() / recent.len() as f64;
        let ck = tr.save_checkpoint(&dir.join(at.to_string())).unwrap();
        let reference = ProbeConfig {
            power_iters: 60,
            sharpness_tol: 1e-3,
            ..defaults.clone()
        };
        let (exact, exact_s) = probe_with(&ck, &reference, ProbeKind::Sharpness);
        let (rt, rp) = tops(&exact);
        eprintln!(
            "step {at}: reference λmax {rt:.4} (residual {:.1e}), P⁻¹H {rp:.1} (residual {:.1e}), {} products, {:.1} steps",
            exact.scalars[sharpness::RESIDUAL],
            exact.scalars[sharpness::PRECOND_RESIDUAL],
            exact.scalars[sharpness::PRODUCTS],
            exact_s / pace
        );
        for tol in [0.02, 0.05, 0.1, 0.2] {
            let p = ProbeConfig {
                sharpness_tol: tol,
                ..defaults.clone()
            };
            let (r, secs) = probe_with(&ck, &p, ProbeKind::Sharpness);
            let (top, pre) = tops(&r);
            eprintln!(
                "  residual ≤ {tol}: λmax {top:.4} ({:+.2}%, residual {:.3}), P⁻¹H {pre:.1} ({:+.2}%, residual {:.3}), {} products, {:.2} steps",
                100.0 * (top / rt - 1.0),
                r.scalars[sharpness::RESIDUAL],
                100.0 * (pre / rp - 1.0),
                r.scalars[sharpness::PRECOND_RESIDUAL],
                r.scalars[sharpness::PRODUCTS],
                secs / pace
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The finite-difference step of the Hessian-vector products: at the converged top
/// eigenvector v of H (residual 1e-3, central differences 1e-4 apart) at the last stable step
/// and the decay's last step, vᵀHv from central differences with steps from 1e-5 to 1e-2 and
/// from forward ones (g(θ + εv) − g(θ))/ε, which cost one gradient per product instead of two.
#[test]
#[ignore = "trains the default run (about two minutes on 2 cores); run by hand to measure"]
fn finite_difference_steps_at_the_top_eigenvector() {
    use wsdscope_probes::{Differences, Objective, sharpness};
    let mut tr = Trainer::new(default_record()).unwrap();
    for at in [540, 600] {
        while tr.step_count() < at {
            tr.train_step().unwrap();
        }
        let (mut f, _) = objective_at(&tr, 4);
        let theta = f.params().unwrap();
        let v0: Vec<f64> = (0..theta.len())
            .map(|i| ((i * 7919 % 1013) as f64) - 506.0)
            .collect();
        let e = sharpness(
            &mut f,
            &theta,
            &v0,
            Differences::Central { eps: 1e-4 },
            1e-3,
            60,
        );
        let v = e.vector;
        let shifted =
            |eps: f64| -> Vec<f64> { theta.iter().zip(&v).map(|(t, d)| t + eps * d).collect() };
        let quotient = |g1: &[f64], g0: &[f64], eps: f64| -> f64 {
            g1.iter()
                .zip(g0)
                .zip(&v)
                .map(|((a, b), d)| (a - b) / eps * d)
                .sum()
        };
        let (_, g) = f.loss_and_grad(&theta);
        eprintln!(
            "step {at}: λmax {:.4} (residual {:.1e}, {} products)",
            e.max, e.residual, e.products
        );
        for eps in [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2] {
            let (_, gp) = f.loss_and_grad(&shifted(eps));
            let (_, gm) = f.loss_and_grad(&shifted(-eps));
            let central = quotient(&gp, &gm, 2.0 * eps);
            let one_sided = quotient(&gp, &g, eps);
            eprintln!(
                "  ε {eps:.0e}: central vᵀHv {central:.4} ({:+.2}%), one-sided {one_sided:.4} ({:+.2}%)",
                100.0 * (central / e.max - 1.0),
                100.0 * (one_sided / e.max - 1.0)
            );
        }
    }
}

/// Where the top eigenvectors of H and of P^(−1/2) H P^(−1/2) live at the last stable step:
/// their mass (sum of squared components) per parameter tensor, and for the embedding how
/// much of it sits on rows of tokens the probe batch does not contain; with the spread of
/// Adam's P⁻¹ per tensor. (Why λ_max(P⁻¹H) is far above Adam's line 38/η.) `SEQS=N` measures
/// on the first N sequences of the step's batch instead of the probes' 4.
#[test]
#[ignore = "trains the default run (about a minute on 2 cores); run by hand to measure"]
fn where_the_top_eigenvectors_live() {
    use wsdscope_probes::{Differences, Objective, preconditioned_sharpness, sharpness};
    use wsdscope_trainer::objective::flatten;
    let mut tr = Trainer::new(default_record()).unwrap();
    while tr.step_count() < 540 {
        tr.train_step().unwrap();
    }
    let seqs: usize = std::env::var("SEQS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let (mut f, b) = objective_at(&tr, seqs);
    let n = seqs * b.seq;
    let theta = f.params().unwrap();
    let (_, g0) = f.loss_and_grad(&theta);
    let d = Differences::Forward { eps: 5e-5, g0: &g0 };
    let h = sharpness(&mut f, &theta, &g0, d, 1e-3, 40);
    let p_inv = flatten(&tr.optimizer().preconditioner_inv().unwrap()).unwrap();
    let s: Vec<f64> = p_inv.iter().map(|p| p.sqrt()).collect();
    let pg: Vec<f64> = g0.iter().zip(&s).map(|(g, s)| g * s).collect();
    let pre = preconditioned_sharpness(&mut f, &theta, &s, &pg, d, 1e-3, 40);
    let names: Vec<String> = tr
        .model()
        .named_vars()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let spans = f.spans().to_vec();
    let present: std::collections::BTreeSet<u32> = b.inputs[..n]
        .iter()
        .chain(&b.targets[..n])
        .copied()
        .collect();
    let vocab = tr.config().model.vocab;
    let hidden = tr.config().model.hidden;
    for (what, lambda, v) in [
        ("H", h.max, &h.vector),
        ("P^-1/2 H P^-1/2", pre.max, &pre.vector),
    ] {
        let mut mass: Vec<(f64, &str)> = spans
            .iter()
            .zip(&names)
            .map(|(&(o, l), n)| (v[o..o + l].iter().map(|x| x * x).sum::<f64>(), n.as_str()))
            .collect();
        mass.sort_by(|a, b| b.0.total_cmp(&a.0));
        eprintln!("{what}: λ_max {lambda:.4}; mass by tensor:");
        for (m, n) in mass.iter().take(5) {
            eprintln!("  {n}: {:.1}%", 100.0 * m);
        }
        let emb = names
            .iter()
            .position(|n| n.contains("embed_tokens"))
            .unwrap();
        let (o, _) = spans[emb];
        let absent: f64 = (0..vocab as u32)
            .filter(|t| !present.contains(t))
            .map(|t| {
                let r = o + t as usize * hidden;
                v[r..r + hidden].iter().map(|x| x * x).sum::<f64>()
            })
            .sum();
        eprintln!(
            "  embedding rows of the {} tokens absent from the probe batch: {:.1}%",
            vocab - present.len(),
            100.0 * absent
        );
    }
    for (&(o, l), n) in spans.iter().zip(&names) {
        let mut p: Vec<f64> = p_inv[o..o + l].to_vec();
        p.sort_by(f64::total_cmp);
        eprintln!("  P⁻¹ {n}: median {:.3e}, max {:.3e}", p[l / 2], p[l - 1]);
    }
}
