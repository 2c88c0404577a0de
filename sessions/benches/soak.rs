//! Soak benchmark of the recorder: a 1,000,000-step trunk with three decay branches (forked
//! at 25%, 50% and 75%, 100,000 steps each, interleaved with the trunk as the engine's
//! round-robin does), an eval every 1,000 steps and a periodic probe every 500 steps of each
//! run (the five kinds in turn, with their series), all through the real recorder thread into
//! a real session file. Prints the process's resident memory (now and peak) at 10k, 100k and
//! 1M trunk steps, which must stay flat, and the wall time per 1,000 events.
//!
//!     cargo bench -p wsdscope-sessions --bench soak [-- STEPS]

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::{Noise, run_start};
use wsdscope_sessions::vocabulary::{PROBES, probe_columns};
use wsdscope_sessions::{
    EndReason, Phase, ProbeResult, Recorder, RunEvent, Session, SessionPlan, StepGeometry,
    StepMetrics,
};

/// The allocator of the `wsdscope` binary, so the memory figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn step(run: u32, s: u64, noise: &mut Noise) -> RunEvent {
    let loss = 1.0 + 8.0 / (1.0 + s as f64 / 100.0) + 0.05 * noise.next() - 0.01 * run as f64;
    RunEvent::Step(StepMetrics {
        run,
        step: s,
        phase: Phase::Stable,
        loss,
        lr: 0.01,
        grad_norm: 0.3 + 0.01 * noise.next(),
        update_norm: 0.02,
        param_norm: 90.0,
        tokens: s * 2048,
        tokens_per_s: 24_000.0,
        step_ms: 85.0,
        grad_norm_per_layer: vec![0.1; common::LAYERS],
        grad_norm_per_group: vec![0.05, 0.3, 0.01],
        geometry: Some(StepGeometry {
            cos: 0.4,
            d1: -0.01,
            d2: 3.0,
            curvature: 2.9,
        }),
        max_update: vec![1e-3; common::TRACKED],
    })
}

/// The `k`-th probe result of a run: the vocabulary's kinds in turn, with every scalar and a
/// landscape's 9×9 grid or a slice's 17 points as series.
fn probe(run: u32, s: u64, k: usize) -> RunEvent {
    let spec = &PROBES[k % PROBES.len()];
    let scalars: BTreeMap<String, f64> = probe_columns(spec)
        .enumerate()
        .map(|(i, n)| (n.to_string(), 1.0 + i as f64))
        .collect();
    let series = spec
        .series
        .iter()
        .map(|q| {
            let n = q.name;
            let len = if spec.name == "landscape" && n == "loss" {
                81
            } else {
                17
            };
            (n.to_string(), (0..len).map(|i| i as f64 * 0.1).collect())
        })
        .collect();
    RunEvent::Probe(ProbeResult {
        run,
        step: s,
        probe: spec.name.into(),
        scalars,
        series,
    })
}

/// Fields of /proc/self/status in MiB: VmRSS (now), VmHWM (peak), RssAnon, RssFile.
fn memory_mib() -> [f64; 4] {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    ["VmRSS:", "VmHWM:", "RssAnon:", "RssFile:"].map(|name| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    })
}

fn main() {
    let steps: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let branch_len = steps / 10;
    let forks = [steps / 4, steps / 2, 3 * steps / 4];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("soak.h5");
    let trunk = run_start(0, None, steps);
    let rec = Recorder::create(&path, &SessionPlan::for_trunk(&trunk, 32)).expect("create");
    let [rss0, ..] = memory_mib();
    println!(
        "soak: {steps} trunk steps, 3 branches of {branch_len} steps, a probe every 500 steps per run"
    );
    println!(
        "  {:>9}  {:>10}  {:>9}  {:>9}",
        "steps", "events", "RSS MiB", "peak MiB"
    );
    println!("  {:>9}  {:>10}  {rss0:>9.1}  {:>9}", 0, 0, "");
    let t0 = Instant::now();
    let events = std::cell::Cell::new(0u64);
    let send = |ev: RunEvent| {
        rec.record(ev).expect("record");
        events.set(events.get() + 1);
    };
    send(RunEvent::RunStart(Box::new(trunk)));
    let mut noise = Noise(0x2545F4914F6CDD1D);
    let mut live: Vec<(u32, u64)> = Vec::new(); // (run, its last step)
    let mut probes: BTreeMap<u32, usize> = BTreeMap::new();
    let mut marks = [10_000u64, 100_000, steps].into_iter().peekable();
    let mut at_marks: Vec<f64> = Vec::new();
    for s in 1..=steps {
        send(step(0, s, &mut noise));
        if s % 1000 == 0 {
            send(RunEvent::Eval {
                run: 0,
                step: s,
                val_loss: 2.0,
                tokens: s * 2048,
            });
        }
        if s % 500 == 0 {
            let k = probes.entry(0).or_default();
            send(probe(0, s, *k));
            *k += 1;
        }
        if let Some(i) = forks.iter().position(|&f| f == s) {
            let run = i as u32 + 1;
            send(RunEvent::Forked {
                run,
                parent: 0,
                step: s,
                schedule: serde_json::json!({"kind": "wsd", "shape": "exp"}),
            });
            send(RunEvent::RunStart(Box::new(run_start(
                run,
                Some(s),
                s + branch_len,
            ))));
            live.push((run, s));
        }
        // Round-robin: each live branch takes a step with the trunk's.
        for (run, at) in live.iter_mut() {
            *at += 1;
            send(step(*run, *at, &mut noise));
            if *at % 500 == 0 {
                let k = probes.entry(*run).or_default();
                send(probe(*run, *at, *k));
                *k += 1;
            }
        }
        live.retain(|&(run, at)| {
            let done = at >= forks[run as usize - 1] + branch_len;
            if done {
                send(RunEvent::End {
                    run,
                    step: at,
                    reason: EndReason::Completed,
                    message: None,
                    final_val_loss: Some(1.9),
                    wall_s: 1.0,
                });
            }
            !done
        });
        if marks.peek() == Some(&s) {
            marks.next();
            let [now, peak, anon, file] = memory_mib();
            at_marks.push(now);
            println!(
                "  {s:>9}  {:>10}  {now:>9.1}  {peak:>9.1}  anon {anon:.1} file {file:.1}",
                events.get()
            );
        }
    }
    send(RunEvent::End {
        run: 0,
        step: steps,
        reason: EndReason::Completed,
        message: None,
        final_val_loss: Some(2.0),
        wall_s: 1.0,
    });
    let summary = rec.finish().expect("finish");
    let secs = t0.elapsed().as_secs_f64();
    let [now, peak, ..] = memory_mib();
    println!("  finished: RSS {now:.1} MiB, peak {peak:.1} MiB");
    println!(
        "  {} events in {secs:.1} s: {:.2} ms per 1k events ({:.0} events/s); file {:.1} MiB, {} runs",
        summary.events,
        secs * 1e6 / summary.events as f64,
        summary.events as f64 / secs,
        summary.bytes as f64 / (1 << 20) as f64,
        summary.runs
    );
    if let [_, a, b] = at_marks[..] {
        println!(
            "  resident memory from 100k to {steps} steps: {:+.1} MiB (the writer's buffers, caches and free lists are bounded; finished runs' datasets are closed)",
            b - a
        );
    }
    let s = Session::open(&path).expect("open");
    let n: u64 = s.runs().iter().map(|r| r.steps).sum();
    assert_eq!(s.runs().len(), 4);
    assert_eq!(n, steps + 3 * branch_len, "every step row is in the file");
}
