//! What the periodic probes' default settings cost and what cheaper ones lose, on the
//! default preset's own states: trains the default `record` run (tiny, 600 steps, decay from
//! 540) and at the last stable step and through the decay runs each kind with several
//! settings on the same state (same batch, same random directions), printing their cost in
//! training steps and how far each result lies from the most precise one (and checking that
//! fewer Lanczos products never overstate the top eigenvalue). Ignored by default
//! (it trains 600 steps, about two minutes on 2 cores):
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

/// Lanczos products per run to compare (the first is the reference).
const SHARPNESS_ITERS: [usize; 5] = [20, 10, 6, 5, 4];

#[test]
#[ignore = "trains the default run (about two minutes on 2 cores); run by hand to measure"]
fn cheaper_probe_settings_on_the_default_run() {
    let cfg = default_record();
    let dir = std::env::temp_dir().join(format!("wsdscope-probe-settings-{}", std::process::id()));
    let mut tr = Trainer::new(cfg).unwrap();
    let mut step_s = Vec::new();
    let old = ProbeConfig {
        power_iters: 10,
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
        // Sharpness: 20 Lanczos products per run as the reference.
        let mut reference = None;
        for iters in SHARPNESS_ITERS {
            let p = ProbeConfig {
                power_iters: iters,
                ..old.clone()
            };
            let (r, s) = probe_with(&ck, &p, ProbeKind::Sharpness);
            let (top, pre) = (
                r.scalars[sharpness::LAMBDA_MAX],
                r.scalars[sharpness::PRECOND_LAMBDA_MAX],
            );
            let (rt, rp) = *reference.get_or_insert((top, pre));
            // Lanczos's top Ritz value only grows with the Krylov space: fewer products never
            // overstate the eigenvalue.
            assert!(top <= rt * (1.0 + 1e-6) && pre <= rp * (1.0 + 1e-6));
            eprintln!(
                "  sharpness ≤{iters:>2} products/run: {:.2} steps ({} products), λmax {top:.4} ({:+.2}%), P⁻¹H {pre:.1} ({:+.2}%)",
                s / pace,
                r.scalars[sharpness::PRODUCTS],
                100.0 * (top / rt - 1.0),
                100.0 * (pre / rp - 1.0),
            );
        }
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
