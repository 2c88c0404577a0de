//! Record → read back: the reader yields exactly the event stream that was recorded, reads a
//! file while it grows, answers bucket queries, and rejects files that are not sessions.

use std::collections::BTreeMap;
use std::path::Path;

use wsdscope_sessions::{
    DataSummary, EVENT_SCHEMA_VERSION, EndReason, ModelSummary, NoteKind, Phase, PhaseBounds,
    ProbeResult, RunEvent, RunStart, Session, SessionPlan, StepGeometry, StepMetrics,
};

fn start(run: u32, parent: Option<u32>, fork_step: Option<u64>) -> RunEvent {
    RunEvent::RunStart(Box::new(RunStart {
        run,
        schema_version: EVENT_SCHEMA_VERSION,
        name: if run == 0 {
            "trunk".into()
        } else {
            format!("branch {run}")
        },
        parent,
        fork_step,
        model: ModelSummary {
            preset: "tiny".into(),
            params: 1000,
            non_embedding_params: 800,
            hidden: 8,
            layers: 3,
            heads: 2,
            kv_heads: 1,
            ffn: 16,
            vocab: 32,
        },
        data: DataSummary {
            description: "synthetic".into(),
            entropy_floor: Some(0.9),
            train_tokens: None,
            val_tokens: None,
        },
        phases: PhaseBounds {
            warmup_end: 10,
            decay_start: 80,
            total: 100,
        },
        start_step: fork_step.unwrap_or(0),
        batch: 4,
        seq: 16,
        device: "cpu".into(),
        threads: 1,
        config: serde_json::json!({"steps": 100, "schedule": {"kind": "wsd"}}),
        param_groups: vec!["embedding".into(), "hidden".into(), "norm".into()],
        tracked_tensors: vec!["model.embed_tokens.weight".into()],
    }))
}

fn step(run: u32, s: u64) -> RunEvent {
    RunEvent::Step(StepMetrics {
        run,
        step: s,
        phase: if s <= 10 {
            Phase::Warmup
        } else if s <= 80 {
            Phase::Stable
        } else {
            Phase::Decay
        },
        loss: 5.0 / (1.0 + s as f64) + run as f64 * 0.01,
        lr: 0.01,
        grad_norm: 1.0 + (s as f64).sin().abs(),
        update_norm: 0.1,
        param_norm: 10.0 + s as f64 * 1e-3,
        tokens: s * 64,
        tokens_per_s: 1234.5,
        step_ms: 51.9,
        grad_norm_per_layer: vec![0.1 * s as f64, 0.2, 0.3],
        grad_norm_per_group: vec![0.5, 0.25 * s as f64, 0.125],
        geometry: (s > 1).then_some(StepGeometry {
            cos: 0.9 - 0.001 * s as f64,
            d1: -0.01,
            d2: 3.0,
            curvature: 2.99,
        }),
        max_update: vec![1e-3 * s as f64],
    })
}

fn session_events() -> Vec<RunEvent> {
    let mut ev = vec![start(0, None, None)];
    for s in 1..=60 {
        ev.push(step(0, s));
        if s % 20 == 0 {
            ev.push(RunEvent::Eval {
                run: 0,
                step: s,
                val_loss: 3.0 - s as f64 / 100.0,
                tokens: s * 64,
            });
        }
    }
    ev.push(RunEvent::Forked {
        run: 1,
        parent: 0,
        step: 60,
        schedule: serde_json::json!({"kind": "wsd", "shape": "exp"}),
    });
    ev.push(start(1, Some(0), Some(60)));
    for s in 61..=70 {
        ev.push(step(0, s));
        ev.push(step(1, s));
    }
    ev.push(RunEvent::Probe(ProbeResult {
        run: 1,
        step: 70,
        probe: "sharpness".into(),
        scalars: BTreeMap::from([("lambda_max".to_string(), 12.5)]),
        series: BTreeMap::new(),
    }));
    ev.push(RunEvent::Note {
        run: 0,
        step: 70,
        kind: NoteKind::Paused,
        message: "paused".into(),
    });
    ev.push(RunEvent::End {
        run: 1,
        step: 70,
        reason: EndReason::Completed,
        message: None,
        final_val_loss: Some(2.1),
        wall_s: 3.0,
    });
    ev.push(RunEvent::End {
        run: 0,
        step: 70,
        reason: EndReason::Stopped,
        message: None,
        final_val_loss: Some(2.4),
        wall_s: 7.5,
    });
    ev
}

/// The plan of a session like [`session_events`]'s: the trunk's shape, room for `runs` runs.
fn plan(runs: u32) -> SessionPlan {
    let RunEvent::RunStart(s) = start(0, None, None) else {
        unreachable!()
    };
    SessionPlan::for_trunk(&s, runs)
}

fn record(path: &Path, events: &[RunEvent]) {
    let rec = wsdscope_sessions::Recorder::create(path, &plan(4)).unwrap();
    for e in events {
        rec.record(e.clone()).unwrap();
    }
    let summary = rec.finish().unwrap();
    assert_eq!(summary.events, events.len() as u64);
    assert_eq!(summary.runs, 2);
}

#[test]
fn replays_exactly_the_recorded_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h5");
    let events = session_events();
    record(&path, &events);
    let s = Session::open(&path).unwrap();
    assert_eq!(s.format_version(), 3);
    assert_eq!(s.events().unwrap(), events);
    // Probe scalars, by run, from the recorded probe events.
    assert_eq!(
        s.series(1, "probe.sharpness.lambda_max").unwrap(),
        (vec![70], vec![12.5])
    );
    assert_eq!(
        s.probe_scalars(1).unwrap(),
        vec![("sharpness".to_string(), vec!["lambda_max".to_string()])]
    );
    let e = s
        .series(0, "probe.sharpness.lambda_max")
        .unwrap_err()
        .to_string();
    assert!(e.contains("recorded: none"), "{e}");
    let (steps, cos) = s.series(0, "grad_cos").unwrap();
    assert_eq!(steps.len(), 70);
    assert!(cos[0].is_nan() && (cos[1] - (0.9 - 0.002)).abs() < 1e-12);
    let runs = s.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[0].steps, runs[0].last_step, runs[0].evals),
        (70, Some(70), 3)
    );
    assert_eq!(
        (runs[1].parent, runs[1].fork_step, runs[1].steps),
        (Some(0), Some(60), 10)
    );
    assert_eq!(runs[1].end, Some((EndReason::Completed, None)));
    assert_eq!(runs[0].final_val_loss, Some(2.4));
    assert!(s.root_attr("config").unwrap().contains("\"steps\":100"));
}

/// A format-1 file (no geometry columns, per-group norms, max updates or probe datasets)
/// still reads: the newer fields come back empty.
#[test]
fn format_1_files_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h5");
    let events = session_events();
    record(&path, &events);
    {
        let f = hdf5::File::open_rw(&path).unwrap();
        for run in ["runs/0", "runs/1"] {
            let g = f.group(run).unwrap();
            for name in [
                "grad_cos",
                "d1",
                "d2",
                "curvature",
                "grad_norm_per_group",
                "max_update",
            ] {
                g.unlink(name).unwrap();
            }
        }
        f.attr("format_version")
            .unwrap()
            .write_scalar(&1u32)
            .unwrap();
    }
    let s = Session::open(&path).unwrap();
    assert_eq!(s.format_version(), 1);
    let back = s.events().unwrap();
    assert_eq!(back.len(), events.len());
    for (b, e) in back.iter().zip(&events) {
        match (b, e) {
            (RunEvent::Step(b), RunEvent::Step(e)) => {
                assert_eq!((b.step, b.loss), (e.step, e.loss));
                assert!(b.geometry.is_none() && b.max_update.is_empty());
                assert!(b.grad_norm_per_group.is_empty());
                assert_eq!(b.grad_norm_per_layer, e.grad_norm_per_layer);
            }
            _ => assert_eq!(b, e),
        }
    }
    let e = s.series(0, "d1").unwrap_err().to_string();
    assert!(e.contains("came with format 2"), "{e}");
}

#[test]
fn buckets_read_a_step_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h5");
    record(&path, &session_events());
    let s = Session::open(&path).unwrap();
    let b = s.buckets(0, "grad_norm", 11..=40, 3).unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!((b[0].step_lo, b[2].step_hi), (11, 40));
    assert_eq!(b.iter().map(|x| x.count).sum::<u64>(), 30);
    let want_max = (21..=30)
        .map(|s| 1.0 + (s as f64).sin().abs())
        .fold(0.0, f64::max);
    assert_eq!(b[1].max, want_max);
    let v = s.buckets(0, "val_loss", 0..=u64::MAX, 10).unwrap();
    assert_eq!(v.len(), 3);
    let e = s.buckets(0, "nope", 0..=10, 3).unwrap_err().to_string();
    assert!(
        e.contains("unknown metric \"nope\"") && e.contains("grad_norm"),
        "{e}"
    );
    let e = s.buckets(7, "loss", 0..=10, 3).unwrap_err().to_string();
    assert!(e.contains("no run 7"), "{e}");
}

#[test]
fn reads_a_growing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h5");
    let rec = wsdscope_sessions::Recorder::create(&path, &plan(2)).unwrap();
    rec.record(start(0, None, None)).unwrap();
    for s in 1..=30 {
        rec.record(step(0, s)).unwrap();
    }
    // The writer flushes at least twice a second.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let mut reader = Session::open(&path).unwrap();
    assert_eq!(reader.runs()[0].steps, 30);
    assert!(reader.runs()[0].end.is_none());
    for s in 31..=50 {
        rec.record(step(0, s)).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(1200));
    reader.refresh().unwrap();
    assert_eq!(reader.runs()[0].steps, 50);
    drop(reader);
    rec.finish().unwrap();
}

#[test]
fn refuses_what_is_not_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let msg = |p: &Path| Session::open(p).err().expect("must fail").to_string();
    assert!(msg(&d.join("missing.h5")).contains("missing.h5: no such file"));
    assert!(msg(d).contains("is a directory"));
    std::fs::write(d.join("empty.h5"), b"").unwrap();
    assert!(msg(&d.join("empty.h5")).contains("is empty"));
    std::fs::write(d.join("text.h5"), b"hello, not hdf5 at all").unwrap();
    assert!(msg(&d.join("text.h5")).contains("is not an HDF5 file"));
    // An HDF5 file that is not a session.
    let other = d.join("other.h5");
    hdf5::File::create(&other)
        .unwrap()
        .create_group("x")
        .unwrap();
    assert!(msg(&other).contains("not a wsdscope session"));
    // A session from a newer wsdscope.
    let newer = d.join("newer.h5");
    record(&newer, &session_events());
    hdf5::File::open_rw(&newer)
        .unwrap()
        .attr("format_version")
        .unwrap()
        .write_scalar(&99u32)
        .unwrap();
    let m = msg(&newer);
    assert!(
        m.contains("newer wsdscope") && m.contains("format 99"),
        "{m}"
    );
    // A truncated session.
    let trunc = d.join("trunc.h5");
    record(&trunc, &session_events());
    let bytes = std::fs::read(&trunc).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    let m = msg(&trunc);
    assert!(m.contains("is truncated"), "{m}");
    // An existing file is never overwritten by a recorder.
    let e = wsdscope_sessions::Recorder::create(&trunc, &plan(1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("exists"), "{e}");
    let e = wsdscope_sessions::Recorder::create(&d.join("no/such/dir/x.h5"), &plan(1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

/// Format-2 recorders left SWMR mode for a moment (closed the file and opened it for plain
/// writing) whenever they added a run's or a probe's datasets; a writer killed in that window
/// left the file marked "open for writing" but not "for SWMR writing". Such files must still
/// open: the file's bytes at that moment are taken here as a copy made while a plain writer
/// holds it (the copy has no live writer).
#[test]
fn opens_a_file_whose_plain_writer_was_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h5");
    let killed = dir.path().join("killed.h5");
    let events = session_events();
    record(&path, &events);
    {
        let f = hdf5::File::with_options()
            .with_fapl(|p| p.libver_v110())
            .open_rw(&path)
            .unwrap();
        f.flush().unwrap();
        std::fs::copy(&path, &killed).unwrap();
    }
    let s = Session::open(&killed).unwrap();
    assert_eq!(s.events().unwrap(), events);
}

/// Format 3 creates everything up front: the run slots, every probe table, the run index;
/// after that the writer only appends. A reader that opened the file before a branch started
/// and before the first probe sees them with a refresh, and the writer never stumbles.
#[test]
fn new_runs_and_probes_only_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h5");
    let events = session_events();
    let rec = wsdscope_sessions::Recorder::create(&path, &plan(3)).unwrap();
    // The file appears under its name only once it is complete and in SWMR mode.
    let layout = |f: &hdf5::File| {
        let runs = f.group("runs").unwrap().member_names().unwrap();
        let probes = f.group("probes").unwrap().member_names().unwrap();
        (runs, probes)
    };
    let (runs, mut probes) = layout(&hdf5::File::open_as(&path, hdf5::OpenMode::ReadSWMR).unwrap());
    assert_eq!(runs, ["0", "1", "2"]);
    probes.sort();
    assert_eq!(
        probes,
        ["interp", "landscape", "noise", "sharpness", "slice"]
    );
    let mut reader = Session::open(&path).unwrap();
    assert_eq!(reader.writer_alive(), Some(true));
    assert!(reader.runs().is_empty());
    for e in &events {
        rec.record(e.clone()).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(1200));
    reader.refresh().unwrap();
    assert_eq!(reader.runs().len(), 2);
    assert_eq!(reader.events().unwrap(), events);
    rec.finish().unwrap();
    assert_eq!(reader.writer_alive(), Some(false));
    drop(reader);

    let f = hdf5::File::open(&path).unwrap();
    let ids: Vec<u32> = f.dataset("run_ids").unwrap().read_raw().unwrap();
    assert_eq!(ids, [0, 1]);
    let info: Vec<u8> = f.dataset("runs/1/info").unwrap().read_raw().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(
        (info["type"].as_str(), info["fork_step"].as_u64()),
        (Some("run_start"), Some(60))
    );
    assert!(
        f.dataset("runs/2/info").unwrap().shape()[0] == 0,
        "slot 2 unused"
    );
    let t = f.group("probes/sharpness").unwrap();
    let run: Vec<u32> = t.dataset("run").unwrap().read_raw().unwrap();
    let lam: Vec<f64> = t.dataset("lambda_max").unwrap().read_raw().unwrap();
    let lmin: Vec<f64> = t.dataset("lambda_min").unwrap().read_raw().unwrap();
    assert_eq!((run, lam), (vec![1], vec![12.5]));
    assert!(lmin[0].is_nan(), "a scalar the result lacks is NaN");
    assert_eq!(
        f.attr("run_slots").unwrap().read_scalar::<u32>().unwrap(),
        3
    );
}

/// A run that the session has no slot for is refused by the writer with a clear error; what
/// was written before stays readable.
#[test]
fn a_run_beyond_the_slots_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h5");
    let rec = wsdscope_sessions::Recorder::create(&path, &plan(1)).unwrap();
    rec.record(start(0, None, None)).unwrap();
    rec.record(step(0, 1)).unwrap();
    rec.record(start(1, Some(0), Some(1))).unwrap();
    let e = rec.finish().unwrap_err().to_string();
    assert!(e.contains("room for 1 runs"), "{e}");
    let s = Session::open(&path).unwrap();
    assert_eq!(s.runs().len(), 1);
}

/// A run narrower than its slot (fewer tracked tensors) is padded in the file and reads back
/// at its own width.
#[test]
fn narrower_runs_read_back_at_their_width() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h5");
    let mut wide_plan = plan(2);
    wide_plan.widths[2] = 3;
    let rec = wsdscope_sessions::Recorder::create(&path, &wide_plan).unwrap();
    let mut events = vec![start(0, None, None)];
    events.extend((1..=5).map(|s| step(0, s)));
    for e in &events {
        rec.record(e.clone()).unwrap();
    }
    rec.finish().unwrap();
    let s = Session::open(&path).unwrap();
    assert_eq!(s.events().unwrap(), events);
    let f = hdf5::File::open(&path).unwrap();
    assert_eq!(f.dataset("runs/0/max_update").unwrap().shape(), [5, 3]);
}

/// A run's datasets are closed once its end is written; an event for it that still comes
/// later (a late eval) reopens them and lands after its rows, and the stream reads back whole.
#[test]
fn events_after_a_runs_end_are_still_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h5");
    let mut events = vec![start(0, None, None)];
    events.extend((1..=3).map(|s| step(0, s)));
    events.push(RunEvent::End {
        run: 0,
        step: 3,
        reason: EndReason::Stopped,
        message: None,
        final_val_loss: None,
        wall_s: 1.0,
    });
    let rec = wsdscope_sessions::Recorder::create(&path, &plan(1)).unwrap();
    for e in &events {
        rec.record(e.clone()).unwrap();
    }
    // Past the flush that closes run 0's datasets.
    std::thread::sleep(std::time::Duration::from_millis(700));
    let late = [
        step(0, 4),
        RunEvent::Eval {
            run: 0,
            step: 4,
            val_loss: 2.0,
            tokens: 256,
        },
    ];
    for e in &late {
        rec.record(e.clone()).unwrap();
    }
    rec.finish().unwrap();
    events.extend(late);
    let s = Session::open(&path).unwrap();
    assert_eq!(s.events().unwrap(), events);
    assert_eq!(s.runs()[0].steps, 4);
}
