//! Probe figures end to end: a small session recorded with periodic probes and one decay
//! branch is drawn by `plot` as every probe figure (sharpness, noise, landscape, slice,
//! interp), a per-step geometry metric and a probe scalar, to PNG and SVG; a probe that is
//! not there gets one clear line naming what is.

use std::path::Path;

use wsdscope_tests::{SMALL, run};

/// Records `steps` steps with a probe every 2 steps (and `extra` flags) into `dir/name`.
fn record(dir: &Path, name: &str, steps: &str, extra: &[&str]) -> String {
    let f = dir.join(name).to_str().unwrap().to_string();
    let mut args = vec!["record", "--out", &f, "--steps", steps];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    let r = run(&args);
    assert!(r.ok(), "{}", r.stderr);
    f
}

/// Width and height from a PNG's signature and IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24, "{} bytes is no PNG", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "the first chunk is IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn every_probe_figure_is_drawn_to_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let fs = record(
        dir.path(),
        "p.h5",
        "16",
        &[
            "--probe-every",
            "2",
            "--fork-at",
            "6",
            "--branch-decay",
            "exp:4",
        ],
    );
    // (metric, extra flags, text the SVG must hold: legend or panel text)
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "sharpness",
            &[],
            &["run 0 trunk", "38/η", "Adam-preconditioned λ_max", "warmup"],
        ),
        (
            "noise",
            &[],
            &["B_simple, running average", "MiniCPM rule", "the batch"],
        ),
        (
            "landscape",
            &[],
            &[
                "direction 1 (filter-normalised)",
                "direction 2 (filter-normalised)",
                "grid minimum",
                "current parameters",
                "step 8",
            ],
        ),
        (
            "slice",
            &["--step", "6"],
            &[
                "random direction",
                "along the last update",
                "at step 6",
                "current parameters (x = 0)",
            ],
        ),
        ("interp", &[], &["run 0 @", "→ run 1 @10", "branch (α = 1)"]),
        (
            "grad_cos",
            &["--smooth", "0.3"],
            &["run 0 trunk", "run 1 exp 4 @6"],
        ),
        (
            "probe.noise.b_simple_avg",
            &["--linear-y"],
            &["run 0 trunk", "probe.noise.b_simple_avg"],
        ),
    ];
    for (metric, extra, texts) in cases {
        for ext in ["png", "svg"] {
            let out = dir
                .path()
                .join(format!("{}.{ext}", metric.replace('.', "_")));
            let mut args = vec![
                "plot",
                &fs,
                "--out",
                out.to_str().unwrap(),
                "--metric",
                metric,
            ];
            args.extend_from_slice(extra);
            let p = run(&args);
            assert!(p.ok(), "{args:?}: {}", p.stderr);
            assert!(p.stderr.contains("wrote "), "{}", p.stderr);
            let bytes = std::fs::read(&out).unwrap_or_else(|e| panic!("{metric}.{ext}: {e}"));
            if ext == "png" {
                assert_eq!(png_size(&bytes), (1280, 720), "{metric}");
                assert!(
                    bytes.len() > 15_000,
                    "{metric}.png is only {} bytes",
                    bytes.len()
                );
            } else {
                let svg = String::from_utf8(bytes).unwrap();
                assert!(svg.starts_with("<svg"), "{metric}.svg");
                assert!(
                    svg.len() > 10_000,
                    "{metric}.svg is only {} bytes",
                    svg.len()
                );
                for t in *texts {
                    assert!(svg.contains(t), "{metric}.svg lacks {t:?}");
                }
            }
        }
    }
}

/// One line on stderr, exit code 2, naming `want`.
fn refused(args: &[&str], want: &[&str]) {
    let r = run(args);
    assert_eq!(r.code, Some(2), "{args:?} should fail: {}", r.stderr);
    let line = r.stderr.trim();
    assert!(
        line.starts_with("error: ") && line.lines().count() == 1,
        "{args:?}: {line}"
    );
    for w in want {
        assert!(line.contains(w), "{args:?}: {line:?} lacks {w:?}");
    }
}

#[test]
fn missing_probes_and_steps_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let full = record(
        dir.path(),
        "full.h5",
        "16",
        &[
            "--probe-every",
            "2",
            "--fork-at",
            "6",
            "--branch-decay",
            "exp:4",
        ],
    );
    // Probes every 2 steps, no branch: sharpness at 2, noise at 4, nothing else.
    let few = record(dir.path(), "few.h5", "5", &["--probe-every", "2"]);
    let none = record(dir.path(), "none.h5", "3", &["--probe-budget", "0"]);
    let out = dir.path().join("x.png");
    let out = out.to_str().unwrap();
    let plot = |file: &str, flags: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["plot", file, "--out", out]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(flags.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            plot(&full, &["--metric", "landscape", "--step", "999"]),
            vec![
                "run 0 (trunk) has no landscape probe at step 999",
                "at steps 8",
            ],
        ),
        (
            plot(&full, &["--metric", "landscape", "--runs", "1"]),
            vec![
                "run 1 (exp 4 @6) has no landscape probe results",
                "run 0 (steps 8)",
            ],
        ),
        (
            plot(&few, &["--metric", "interp"]),
            vec!["has no interp probe results; it has: noise, sharpness"],
        ),
        (
            plot(&few, &["--metric", "slice"]),
            vec!["has no slice probe results; it has: noise, sharpness"],
        ),
        (
            plot(&none, &["--metric", "sharpness"]),
            vec!["has no sharpness probe results; it has no probe results at all"],
        ),
        (
            plot(&few, &["--metric", "probe.sharpness.nope"]),
            vec!["probe.sharpness.nope", "probe.sharpness.lambda_max"],
        ),
        (
            plot(&full, &["--metric", "loss", "--step", "8"]),
            vec!["--step 8 applies to --metric landscape and slice only"],
        ),
        (
            plot(&full, &["--metric", "acc"]),
            vec![
                "--metric \"acc\" is not allowed",
                "grad_cos, d1, d2, curvature",
                "sharpness, noise, landscape, slice, interp",
                "probe.<probe>.<scalar>",
            ],
        ),
    ];
    for (args, want) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&a, &want);
    }
    assert!(!Path::new(out).exists(), "no figure is written on an error");
}
