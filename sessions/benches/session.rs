//! Session-file benchmark: writes a synthetic 1,000,000-step session through the recorder (the
//! same thread and buffering a live run uses), then reports its size per scalar sample and how
//! long it takes to open it and build a 1,000-bucket min/max view of the trunk's loss.
//!
//!     cargo bench -p wsdscope-sessions --bench session [-- STEPS]

mod common;

use std::time::Instant;

use wsdscope_sessions::{
    Phase, Recorder, RunEvent, Session, SessionPlan, StepGeometry, StepMetrics,
};

fn main() {
    let steps: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let layers = common::LAYERS;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.h5");

    let t = Instant::now();
    let trunk = common::run_start(0, None, steps);
    let rec = Recorder::create(&path, &SessionPlan::for_trunk(&trunk, 32)).expect("create");
    rec.record(RunEvent::RunStart(Box::new(trunk)))
        .expect("record");
    // A noisy, slowly falling loss: a realistic thing to compress.
    let mut rng = common::Noise(0x2545F4914F6CDD1D);
    for s in 1..=steps {
        let noise = rng.next();
        let loss = 1.0 + 8.0 / (1.0 + s as f64 / 100.0) + 0.05 * noise;
        rec.record(RunEvent::Step(StepMetrics {
            run: 0,
            step: s,
            phase: Phase::Stable,
            loss,
            lr: 0.01,
            grad_norm: 0.4 + 0.1 * noise,
            update_norm: 0.05,
            param_norm: 100.0 + s as f64 * 1e-5,
            tokens: s * 2048,
            tokens_per_s: 5000.0 + 100.0 * noise,
            step_ms: 400.0 + 10.0 * noise,
            grad_norm_per_layer: vec![0.2 + 0.01 * noise; layers],
            grad_norm_per_group: vec![0.1, 0.3 + 0.1 * noise, 0.05],
            geometry: Some(StepGeometry {
                cos: 0.2 + 0.1 * noise,
                d1: -0.01 * noise,
                d2: 5.0 + noise,
                curvature: 5.0 + noise,
            }),
            max_update: vec![1e-3; common::TRACKED],
        }))
        .expect("record");
        if s % 1000 == 0 {
            rec.record(RunEvent::Eval {
                run: 0,
                step: s,
                val_loss: loss,
                tokens: s * 2048,
            })
            .expect("record");
        }
    }
    let summary = rec.finish().expect("finish");
    let write_s = t.elapsed().as_secs_f64();
    // Per step: 7 float64 metrics + 4 per-layer norms + step, seq, tokens (u64) + phase (u8).
    let scalars = steps * (7 + layers as u64 + 3 + 1);
    println!(
        "wrote {steps} steps in {write_s:.2} s ({:.0} steps/s through the recorder thread)",
        steps as f64 / write_s
    );
    println!(
        "file: {} bytes = {:.2} bytes per scalar sample ({scalars} samples), {:.1} bytes per step",
        summary.bytes,
        summary.bytes as f64 / scalars as f64,
        summary.bytes as f64 / steps as f64
    );

    // What `wsdscope replay` reads before its first frame: the whole event stream.
    {
        let t = Instant::now();
        let s = Session::open(&path).expect("open");
        let (_, v) = s.series(0, "loss").expect("series");
        println!(
            "(one f64 column of {} rows: {:.1} ms)",
            v.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    let s = Session::open(&path).expect("open");
    let events = s.events().expect("events");
    println!(
        "open + the full event stream ({} events, as replay loads it): {:.0} ms",
        events.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    drop(events);
    for round in 0..3 {
        let t = Instant::now();
        let s = Session::open(&path).expect("open");
        let opened = t.elapsed().as_secs_f64();
        let b = s.buckets(0, "loss", 0..=u64::MAX, 1000).expect("buckets");
        let total = t.elapsed().as_secs_f64();
        assert_eq!(b.len(), 1000);
        assert_eq!(b.iter().map(|x| x.count).sum::<u64>(), steps);
        let zoom = Instant::now();
        let z = s
            .buckets(0, "loss", steps / 2..=steps / 2 + 10_000, 1000)
            .expect("buckets");
        let zoom_s = zoom.elapsed().as_secs_f64();
        println!(
            "round {round}: open {:.1} ms, open + 1000-bucket min/max view of loss {:.1} ms (target < 1000 ms); 10k-step zoom {:.1} ms ({} buckets)",
            opened * 1e3,
            total * 1e3,
            zoom_s * 1e3,
            z.len()
        );
    }
}
