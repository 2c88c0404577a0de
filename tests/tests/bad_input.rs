//! Every invalid value gets one clear line naming it and what is allowed, a non-zero exit,
//! and never a panic.

use wsdscope_tests::run;

fn refused(args: &[&str], want: &str) {
    let r = run(args);
    assert_eq!(
        r.code,
        Some(2),
        "{args:?} should fail with exit 2: {}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("panicked"),
        "{args:?} panicked: {}",
        r.stderr
    );
    let line = r.stderr.trim();
    assert!(line.starts_with("error: "), "{args:?}: {line}");
    assert_eq!(
        line.lines().count(),
        1,
        "{args:?}: one line expected: {line}"
    );
    assert!(line.contains(want), "{args:?}: {line:?} lacks {want:?}");
}

#[test]
fn invalid_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("a.txt");
    std::fs::write(&text, "abcdefgh".repeat(100)).unwrap();
    let t = text.to_str().unwrap();
    let toml = dir.path().join("bad.toml");
    std::fs::write(&toml, "stepz = 3\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["record", "--preset", "gpt5"],
            "unknown preset \"gpt5\"; allowed: tiny",
        ),
        (&["record", "--batch", "0"], "--batch 0"),
        (&["record", "--lr", "0"], "--lr 0 is not allowed"),
        (&["record", "--lr", "-0.5"], "--lr -0.5"),
        (
            &["record", "--steps", "100", "--decay", "exp:0.95"],
            "decay of 95 steps does not fit",
        ),
        (
            &["record", "--decay", "wiggle:0.1"],
            "unknown decay shape \"wiggle\"",
        ),
        (
            &["record", "--data", "/no/such/data.txt"],
            "--data /no/such/data.txt: no such file",
        ),
        (
            &["record", "--data", t, "--vocab", "50"],
            "holds token id 104 but the model's vocab is 50; use --vocab 105",
        ),
        (&["record", "--device", "cuda:0"], "CUDA is unavailable"),
        (
            &["record", "--precision", "bf16"],
            "--precision bf16 is not allowed on --device cpu",
        ),
        (&["record", "--device", "tpu"], "--device \"tpu\""),
        (&["record", "--threads", "0"], "--threads 0"),
        (
            &["record", "--config", toml.to_str().unwrap()],
            "unknown field `stepz`",
        ),
        (&["record", "--resume", "/no/such/ck"], "no such directory"),
        (&["record", "--checkpoint-every", "5"], "--checkpoint-dir"),
        (&["tokenizer", "train", t, "--vocab", "10"], "--vocab 10"),
        (&["bench", "--heads", "3"], "not divisible by --heads 3"),
        // A run that cannot fit is refused before anything is allocated.
        (
            &["record", "--batch", "100000000"],
            "(MemAvailable); lower --batch or --seq",
        ),
        (
            &["record", "--seq", "100000000"],
            "at --batch 16 × --seq 100000000",
        ),
        (
            &["record", "--max-runs", "0"],
            "--max-runs 0 is not allowed",
        ),
        (
            &[
                "record",
                "--steps",
                "100",
                "--fork-at",
                "10,20",
                "--max-runs",
                "2",
            ],
            "--max-runs 2 is not allowed; it must be in 3..=4096",
        ),
    ];
    for (args, want) in cases {
        refused(args, want);
    }
}

#[test]
fn the_cuda_executor_device_is_only_for_the_kernel_check() {
    for mode in ["record", "bench"] {
        refused(
            &[mode, "--device", "cuda-emu", "--steps", "2"],
            "only for `wsdscope bench --kernels --device cuda-emu`",
        );
    }
}

#[test]
fn the_tui_run_refuses_to_be_one_of_several_mpi_ranks() {
    // What `mpirun -n 2 wsdscope run` sets in each rank: the TUI would train a full copy per
    // rank, so it says to record under mpirun and attach instead (before it asks for a
    // terminal).
    let out = wsdscope_tests::wsdscope()
        .args(["run", "--steps", "2"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("one of 2 MPI ranks") && err.contains("wsdscope attach"),
        "{err}"
    );
}
