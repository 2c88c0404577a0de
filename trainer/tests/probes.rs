//! Probes on the real model: the per-step geometry agrees with an independent computation on
//! flat vectors, periodic probes run on schedule (every N steps, or within the time budget)
//! with results of the stated shapes, `Command::Probe` runs them all now, and a completing
//! branch is interpolated against its parent.

mod common;

use std::sync::mpsc;

use candle_core::Tensor;
use wsdscope_events::{ProbeResult, RunEvent};
use wsdscope_probes::{Objective, step_geometry};
use wsdscope_trainer::objective::ModelObjective;
use wsdscope_trainer::{Command, DecayShape, Engine, ForkLength, ForkPlan, Trainer};

/// g(θ) on the batch of `step`, from a fresh objective (no optimiser involved).
fn grad_at(tr: &Trainer, step: u64) -> (Vec<f64>, Vec<f64>) {
    let b = tr.data().train_batch(step);
    let dev = tr.model().device();
    let x = Tensor::from_slice(&b.inputs, (b.batch, b.seq), dev).unwrap();
    let y = Tensor::from_slice(&b.targets, (b.batch, b.seq), dev).unwrap();
    let mut f = ModelObjective::new(tr.model(), x, y).unwrap();
    let theta = f.params().unwrap();
    let (_, g) = f.loss_and_grad(&theta);
    (theta, g)
}

#[test]
fn per_step_geometry_agrees_with_flat_vectors() {
    let mut tr = Trainer::new(common::small_run(20)).unwrap();
    for _ in 0..3 {
        tr.train_step().unwrap();
    }
    // g(t) at θ(t) on batch t+1, the update v(t), then g(t+1) at θ(t+1) on batch t+2.
    let (theta0, g0) = grad_at(&tr, 4);
    let m4 = tr.train_step().unwrap();
    let (theta1, g1) = grad_at(&tr, 5);
    let m5 = tr.train_step().unwrap();
    let v: Vec<f64> = theta1.iter().zip(&theta0).map(|(a, b)| a - b).collect();
    let want = step_geometry(&g0, &g1, &v);
    let got = m5.geometry.expect("a second step has geometry");
    eprintln!("geometry: tracker {got:?}, flat {want:?}");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-3 * b.abs().max(1e-3);
    assert!(close(got.cos, want.cos), "cos {} vs {}", got.cos, want.cos);
    assert!(close(got.d1, want.d1), "d1 {} vs {}", got.d1, want.d1);
    assert!(close(got.d2, want.d2), "d2 {} vs {}", got.d2, want.d2);
    assert!(close(got.curvature, want.curvature));
    // Per-group norms add up to the global norm; tracked max |Δθ| are positive.
    let sq: f64 = m4.grad_norm_per_group.iter().map(|g| g * g).sum();
    assert!((sq.sqrt() - m4.grad_norm).abs() < 1e-9 * m4.grad_norm);
    assert_eq!(m4.grad_norm_per_group.len(), 3);
    assert_eq!(m4.max_update.len(), 3);
    assert!(m4.max_update.iter().all(|&x| x > 0.0 && x.is_finite()));
    // The embedding's max |Δθ| is the largest element of its update.
    let emb = theta1[..tr.model().named_vars()[0].1.elem_count()]
        .iter()
        .zip(&theta0)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        (m4.max_update[0] - emb).abs() < 1e-6 * emb,
        "{} vs {emb}",
        m4.max_update[0]
    );
    let first = Trainer::new(common::small_run(20))
        .unwrap()
        .train_step()
        .unwrap();
    assert!(first.geometry.is_none(), "no previous update at step 1");
}

fn events_of(cfg: wsdscope_trainer::RunConfig, commands: impl FnOnce(&Engine)) -> Vec<RunEvent> {
    let (tx, rx) = mpsc::channel();
    let engine = Engine::spawn(Trainer::new(cfg).unwrap(), move |e| tx.send(e).unwrap()).unwrap();
    commands(&engine);
    engine.join();
    rx.iter().collect()
}

fn probes(events: &[RunEvent]) -> Vec<&ProbeResult> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Probe(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn periodic_probes_every_n_steps_with_results_of_the_stated_shapes() {
    let mut cfg = common::small_run(40);
    cfg.probes.every = 4;
    cfg.probes.grid = 5;
    cfg.probes.points = 7;
    cfg.forks = vec![ForkPlan {
        at: 12,
        length: ForkLength::Steps(8),
        shape: DecayShape::Exp,
        floor: 0.1,
    }];
    let events = events_of(cfg, |_| {});
    let ps = probes(&events);
    let trunk: Vec<_> = ps.iter().filter(|p| p.run == 0).collect();
    assert!(trunk.iter().all(|p| p.step % 4 == 0), "every 4 steps only");
    let kinds: Vec<&str> = trunk.iter().map(|p| p.probe.as_str()).collect();
    assert_eq!(
        &kinds[..4],
        &["sharpness", "noise", "slice", "landscape"],
        "{kinds:?}"
    );
    for p in &ps {
        assert!(p.scalars["seconds"] >= 0.0);
        match p.probe.as_str() {
            "sharpness" => {
                let lr = p.scalars["lr"];
                assert!((p.scalars["threshold"] - 38.0 / lr).abs() < 1e-6 * 38.0 / lr);
                assert!(p.scalars["lambda_max"].is_finite());
                assert!(p.scalars["precond_lambda_max"].is_finite());
            }
            "noise" => {
                assert!(p.scalars["trace"].is_finite() && p.scalars["g_sq"].is_finite());
                assert_eq!(p.scalars["batch_tokens"], 64.0);
                assert!(p.scalars["b_simple_avg"].is_finite());
            }
            "slice" => {
                assert_eq!(p.series["alpha"].len(), 7);
                assert_eq!(p.series["loss_random"].len(), 7);
                assert!(p.series["loss_random"].iter().all(|l| l.is_finite()));
                // At α = 0 the slice passes through the current parameters: both slices agree.
                assert!((p.series["loss_random"][3] - p.series["loss_update"][3]).abs() < 1e-5);
            }
            "landscape" => {
                assert_eq!(p.series["loss"].len(), 25);
                assert_eq!(p.series["x"].len(), 5);
            }
            "interp" => {
                assert_eq!(p.run, 1, "reported on the branch that completed");
                assert_eq!((p.scalars["from_run"], p.scalars["to_run"]), (0.0, 1.0));
                assert_eq!(p.scalars["to_step"], 20.0);
                assert_eq!(p.series["loss"].len(), 7);
                assert!(p.scalars["distance"] > 0.0);
            }
            other => panic!("unexpected probe {other}"),
        }
    }
    assert_eq!(
        ps.iter().filter(|p| p.probe == "interp").count(),
        1,
        "one interpolation when the branch completes"
    );
    // Every kind, scalar and series is in the session's closed vocabulary: the session file
    // creates its probe tables from it before anything is recorded.
    use wsdscope_events::vocabulary::{probe_columns, probe_spec};
    for p in &ps {
        let spec = probe_spec(&p.probe)
            .unwrap_or_else(|| panic!("probe kind {:?} is not in the vocabulary", p.probe));
        for k in p.scalars.keys() {
            assert!(
                probe_columns(spec).any(|c| c == k),
                "{}: scalar {k:?} is not in the vocabulary",
                p.probe
            );
        }
        for k in p.series.keys() {
            assert!(
                spec.series.iter().any(|q| q.name == k),
                "{}: series {k:?} is not in the vocabulary",
                p.probe
            );
        }
    }
    // The branch is probed too (it inherits the probe configuration).
    assert!(ps.iter().any(|p| p.run == 1 && p.probe != "interp"));
}

#[test]
fn the_default_budget_bounds_probe_time_and_probe_now_runs_everything() {
    let mut cfg = common::small_run(600);
    cfg.eval_every = 0;
    assert_eq!(cfg.probes.budget(), Some(5.0), "the default budget");
    // On this toy model a sharpness estimate costs about 30 steps; a 20% budget lets several
    // periodic probes run in 600 steps.
    cfg.probes.budget_pct = Some(20.0);
    let events = events_of(cfg, |e| e.send(Command::Probe { run: 0 }));
    let ps = probes(&events);
    // The command ran every periodic kind once (interp needs a branch: none here).
    for k in ["sharpness", "noise", "slice", "landscape"] {
        assert!(ps.iter().any(|p| p.probe == k), "{k} missing");
    }
    let train: f64 = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Step(m) => Some(m.step_ms / 1e3),
            _ => None,
        })
        .sum();
    // Periodic probes (all but the first four, which the command asked for) stay within 20%
    // of training time, plus the one probe that may overshoot its estimate.
    let periodic: Vec<f64> = ps[4..].iter().map(|p| p.scalars["seconds"]).collect();
    let spent: f64 = periodic.iter().sum();
    let worst = periodic.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "training {train:.3} s, {} periodic probes {spent:.3} s",
        periodic.len()
    );
    assert!(!periodic.is_empty(), "the budget allowed no periodic probe");
    assert!(spent <= 0.20 * train + worst + 1e-3, "{spent} vs {train}");
    let mut off = common::small_run(10);
    off.probes.budget_pct = Some(0.0);
    assert!(probes(&events_of(off, |_| {})).is_empty());
}

/// Lanczos brackets the Hessian's spectrum: every Rayleigh quotient vᵀHv/vᵀv (from second
/// differences of the loss, no gradients) lies between the reported λ_min and λ_max.
#[test]
fn sharpness_brackets_rayleigh_quotients_of_the_loss() {
    use wsdscope_trainer::probe::ProbeKind;
    let mut cfg = common::small_run(30);
    cfg.probes.power_iters = 30;
    let mut tr = Trainer::new(cfg).unwrap();
    for _ in 0..10 {
        tr.train_step().unwrap();
    }
    let p = tr.probe(ProbeKind::Sharpness).unwrap();
    let (top, bottom) = (p.scalars["lambda_max"], p.scalars["lambda_min"]);
    let b = tr.data().train_batch(tr.step_count());
    let n = 4.min(b.batch);
    let dev = tr.model().device();
    let x = Tensor::from_slice(&b.inputs[..n * b.seq], (n, b.seq), dev).unwrap();
    let y = Tensor::from_slice(&b.targets[..n * b.seq], (n, b.seq), dev).unwrap();
    let mut f = ModelObjective::new(tr.model(), x, y).unwrap();
    let theta = f.params().unwrap();
    let h = 3e-2;
    for seed in 0..4u64 {
        let mut s = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(seed + 1);
        let v: Vec<f64> = (0..theta.len())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut at = |t: f64| {
            let th: Vec<f64> = theta.iter().zip(&v).map(|(a, d)| a + t * d / nv).collect();
            f.loss(&th)
        };
        let q = (at(h) - 2.0 * at(0.0) + at(-h)) / (h * h);
        eprintln!("Rayleigh quotient {q:.4} within [{bottom:.4}, {top:.4}]");
        assert!(
            q <= top * 1.05 + 1e-3 && q >= bottom * 1.05 - 1e-3,
            "{q} outside [{bottom}, {top}]"
        );
    }
    assert!(top > 0.0 && top.is_finite(), "{top}");
}

/// The sharpness probe's λ_max is the top eigenvalue of the Hessian: it agrees within its
/// tolerance (5%) with Lanczos run from another start to a residual of 1e-4 on central
/// differences a step of 1e-5 apart, and its reported residual is within the tolerance.
#[test]
fn sharpness_is_the_converged_top_eigenvalue() {
    use wsdscope_probes::{Differences, sharpness};
    use wsdscope_trainer::probe::ProbeKind;
    let mut cfg = common::small_run(200);
    cfg.batch = 8;
    let tol = cfg.probes.sharpness_tol;
    let mut tr = Trainer::new(cfg).unwrap();
    for _ in 0..120 {
        tr.train_step().unwrap();
    }
    let p = tr.probe(ProbeKind::Sharpness).unwrap();
    let top = p.scalars["lambda_max"];
    assert!(
        p.scalars["residual"] <= tol || p.scalars["products"] >= 20.0,
        "{p:?}"
    );
    let b = tr.data().train_batch_of(tr.step_count(), 8);
    let n = p.scalars["sequences"] as usize;
    let dev = tr.model().device();
    let x = Tensor::from_slice(&b.inputs[..n * b.seq], (n, b.seq), dev).unwrap();
    let y = Tensor::from_slice(&b.targets[..n * b.seq], (n, b.seq), dev).unwrap();
    let mut f = ModelObjective::new(tr.model(), x, y).unwrap();
    let theta = f.params().unwrap();
    let v0: Vec<f64> = (0..theta.len())
        .map(|i| ((i * 7919 % 1013) as f64) - 506.0)
        .collect();
    let reference = |f: &mut ModelObjective, eps: f64| {
        sharpness(f, &theta, &v0, Differences::Central { eps }, 1e-4, 80).max
    };
    let exact = reference(&mut f, 1e-5);
    eprintln!(
        "λmax: probe {top:.4}, reference {exact:.4}; {:?}",
        p.scalars
    );
    assert!((top - exact).abs() <= tol * exact, "{top} vs {exact}");
}
