//! `wsdscope export --format hf` end to end: a few steps are trained with `wsdscope record`
//! into a checkpoint, exported, and loaded by Hugging Face `transformers`
//! (`AutoModelForCausalLM`, no custom code, float32; `tests/python/hf_logits.py`); its logits
//! on a token sequence must match wsdscope's own forward of the same checkpoint within a
//! relative error of 1e-4, defined as max |transformers − wsdscope| / max |wsdscope| over all
//! T × V logits. One MHA shape on the synthetic language, one GQA shape trained with a
//! tokenizer (whose files the export carries and AutoTokenizer must read back to the same
//! ids). Then the bad inputs: each is one line on stderr, exit 2, and nothing written.
//!
//! The comparison needs Python with torch and transformers: `WSDSCOPE_TORCH_PYTHON`, else
//! the venv `scripts/test` makes (`~/.cache/wsdscope/torch-venv`, or under `WSDSCOPE_CACHE`),
//! else `python3`. Without one it prints why it skipped, unless `WSDSCOPE_REQUIRE_TRANSFORMERS`
//! is set (to anything but empty or `0`; `scripts/test` sets it): then it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use wsdscope_tests::{SMALL, listing, run};
use wsdscope_trainer::checkpoint;
use wsdscope_trainer::model::MiniCpm;

/// max |transformers − wsdscope| / max |wsdscope| over all logits, float32 on both sides.
const LOGITS_TOL: f64 = 1e-4;

/// A grouped-query shape: 4 query heads share 2 key/value heads.
const GQA: [&str; 8] = [
    "--hidden",
    "32",
    "--heads",
    "4",
    "--kv-heads",
    "2",
    "--vocab",
    "64",
];

/// Overwrites model settings in the trainer state of the checkpoint `ck` names; returns its
/// step directory.
fn set_model_config(ck: &Path, values: &[(&str, f64)]) -> PathBuf {
    let step = checkpoint::resolve(ck).unwrap();
    let path = step.join(checkpoint::STATE_FILE);
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for &(key, v) in values {
        let model = &mut state["config"]["model"];
        model[key] = if model[key].is_u64() {
            (v as u64).into()
        } else {
            v.into()
        };
    }
    std::fs::write(&path, state.to_string()).unwrap();
    step
}

/// The Python to try: `WSDSCOPE_TORCH_PYTHON`, else the venv of `scripts/test` if it exists,
/// else `python3`.
fn python() -> PathBuf {
    let cache = std::env::var_os("WSDSCOPE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/wsdscope")));
    let venv = cache
        .map(|c| c.join("torch-venv/bin/python"))
        .filter(|p| p.exists());
    std::env::var_os("WSDSCOPE_TORCH_PYTHON")
        .map(PathBuf::from)
        .or(venv)
        .unwrap_or_else(|| "python3".into())
}

/// A Python that imports torch and transformers; `None` (having said why) where the test may
/// skip.
fn transformers_python() -> Option<PathBuf> {
    let py = python();
    let probe = Command::new(&py)
        .args(["-c", "import torch, transformers"])
        .output();
    let why = match probe {
        Ok(o) if o.status.success() => return Some(py),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.trim().lines().last().unwrap_or("").to_string();
            format!(
                "{} cannot import torch and transformers: {last}",
                py.display()
            )
        }
        Err(e) => format!("cannot run {}: {e}", py.display()),
    };
    let required = std::env::var_os("WSDSCOPE_REQUIRE_TRANSFORMERS")
        .is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "the transformers comparison is required (WSDSCOPE_REQUIRE_TRANSFORMERS is set) but \
         there is no Python with torch and transformers: {why}"
    );
    eprintln!(
        "skipped the transformers comparison: {why}. Run scripts/test (it installs \
         transformers), or set WSDSCOPE_TORCH_PYTHON to a python with torch and transformers; \
         WSDSCOPE_REQUIRE_TRANSFORMERS=1 makes this a failure."
    );
    None
}

/// Trains `steps` steps with `record` and the given flags into `dir/ck`; returns `dir/ck`.
fn train(dir: &Path, flags: &[&str]) -> PathBuf {
    let ck = dir.join("ck");
    let mut args = vec![
        "record",
        "--no-record",
        "--steps",
        "5",
        "--batch",
        "2",
        "--seq",
        "16",
        "--layers",
        "2",
        "--ffn",
        "64",
        "--threads",
        "1",
        "--lr",
        "0.02",
        "--checkpoint-every",
        "5",
        "--checkpoint-dir",
        ck.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    let r = run(&args);
    assert!(r.ok(), "record failed: {}", r.stderr);
    ck
}

/// `export CK --format hf --out OUT`, which must succeed; returns its summary line.
fn export(ck: &Path, out: &Path) -> String {
    let r = run(&[
        "export",
        ck.to_str().unwrap(),
        "--format",
        "hf",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.ok(), "export failed: {}", r.stderr);
    r.stderr
}

/// wsdscope's own logits (T, V) for `tokens`, from the checkpoint's weights and config.
fn wsdscope_logits(ck: &Path, tokens: &[u32]) -> Vec<Vec<f32>> {
    let c = checkpoint::load(ck).unwrap();
    let cfg = &c.state.config.model;
    let m =
        MiniCpm::from_tensors(cfg, c.state.config.seq, c.model, &Device::Cpu, DType::F32).unwrap();
    let ids = Tensor::from_vec(tokens.to_vec(), (1, tokens.len()), &Device::Cpu).unwrap();
    m.logits(&ids, false).unwrap().to_vec2().unwrap()
}

/// What `hf_logits.py` printed for the export in `out`.
fn transformers_run(
    py: &Path,
    out: &Path,
    tokens: &[u32],
    text: Option<&str>,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/hf_logits.py");
    let mut c = Command::new(py);
    c.arg(&script)
        .arg(out)
        .arg(serde_json::to_string(tokens).unwrap())
        .env("OMP_NUM_THREADS", "1")
        .env("HF_HUB_OFFLINE", "1");
    if let Some(t) = text {
        c.arg(t);
    }
    let o = c.output().expect("python runs");
    assert!(
        o.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("hf_logits.py prints JSON")
}

/// max |a − b| / max |b|.
fn rel_error(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    assert_eq!(a.len(), b.len(), "sequence lengths");
    let (mut diff, mut scale) = (0f64, 0f64);
    for (ra, rb) in a.iter().zip(b) {
        assert_eq!(ra.len(), rb.len(), "vocabulary sizes");
        for (&x, &y) in ra.iter().zip(rb) {
            diff = diff.max((x as f64 - y as f64).abs());
            scale = scale.max((y as f64).abs());
        }
    }
    diff / scale
}

/// Loads the export with transformers and compares its logits for `tokens` with wsdscope's.
fn compare(
    py: &Path,
    ck: &Path,
    out: &Path,
    tokens: &[u32],
    text: Option<&str>,
) -> serde_json::Value {
    let ours = wsdscope_logits(ck, tokens);
    let theirs = transformers_run(py, out, tokens, text);
    assert_eq!(theirs["class"], "LlamaForCausalLM");
    assert_eq!(theirs["dtype"], "torch.float32");
    let hf: Vec<Vec<f32>> = serde_json::from_value(theirs["logits"].clone()).unwrap();
    let err = rel_error(&hf, &ours);
    eprintln!("{}: max relative logit error {err:.2e}", out.display());
    assert!(
        err <= LOGITS_TOL,
        "transformers' logits differ from wsdscope's by {err:.2e} (> {LOGITS_TOL:e})"
    );
    theirs
}

#[test]
fn an_mha_export_of_a_synthetic_run_loads_in_transformers_with_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let ck = train(
        dir.path(),
        &[
            "--hidden",
            "32",
            "--heads",
            "2",
            "--kv-heads",
            "2",
            "--vocab",
            "64",
        ],
    );
    let out = dir.path().join("hf");
    let summary = export(&ck, &out);
    assert!(
        summary.contains("LlamaForCausalLM of step 5") && summary.contains("no tokenizer files"),
        "{summary}"
    );
    assert_eq!(
        listing(&out),
        ["config.json", "generation_config.json", "model.safetensors"]
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_key_value_heads"], 2);
    assert_eq!(config["tie_word_embeddings"], false);
    let Some(py) = transformers_python() else {
        return;
    };
    let tokens: Vec<u32> = (0..16).map(|i| (i * 37 + 5) % 64).collect();
    compare(&py, &ck, &out, &tokens, None);
}

#[test]
fn a_gqa_export_of_a_tokenizer_run_carries_the_tokenizer_and_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    let body: String = (0..300)
        .map(|i| format!("line {i}: the cat sat on the mat; the dog ran in the fog. "))
        .collect();
    std::fs::write(&corpus, body).unwrap();
    let tok = dir.path().join("tokenizer.json");
    let r = run(&[
        "tokenizer",
        "train",
        corpus.to_str().unwrap(),
        "--vocab",
        "300",
        "--out",
        tok.to_str().unwrap(),
    ]);
    assert!(r.ok(), "{}", r.stderr);
    let ck = train(
        dir.path(),
        &[
            "--data",
            corpus.to_str().unwrap(),
            "--tokenizer",
            tok.to_str().unwrap(),
        ]
        .iter()
        .chain(&GQA[..6])
        .copied()
        .collect::<Vec<_>>(),
    );
    // RoPE's θ and RMSNorm's ε are fixed by the CLI; give this checkpoint other values so that
    // the comparison also shows the export carries them (both sides read the same state).
    let step = set_model_config(&ck, &[("rope_theta", 500.0), ("rms_eps", 1e-2)]);

    let out = dir.path().join("hf");
    let summary = export(&ck, &out);
    assert!(
        summary.contains("tokenizer") && summary.contains("copied"),
        "{summary}"
    );
    assert_eq!(
        listing(&out),
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).unwrap(),
        std::fs::read(&tok).unwrap()
    );
    // Without its tokenizer the run cannot be exported whole: refused, by name.
    let moved = dir.path().join("moved.json");
    std::fs::rename(&tok, &moved).unwrap();
    let other = dir.path().join("hf2");
    refused(
        &[
            ck.to_str().unwrap(),
            "--format",
            "hf",
            "--out",
            other.to_str().unwrap(),
        ],
        &["tokenizer", "tokenizer.json", "is not there"],
    );
    assert!(!other.exists());
    std::fs::rename(&moved, &tok).unwrap();
    let Some(py) = transformers_python() else {
        return;
    };
    let text = "the dog sat on the mat in the fog; the cat ran.";
    let t = wsdscope_trainer::data::tokenizer::load(&tok).unwrap();
    let ids = wsdscope_trainer::data::tokenizer::encode(&t, text).unwrap();
    assert!(ids.len() >= 8, "{ids:?}");
    let tokens = &ids[..ids.len().min(16)];
    let theirs = compare(&py, &step, &out, tokens, Some(text));
    let hf_ids: Vec<u32> = serde_json::from_value(theirs["ids"].clone()).unwrap();
    assert_eq!(hf_ids, ids, "AutoTokenizer encodes the text differently");
    assert_eq!(
        theirs["eos_token_id"],
        t.token_to_id("<|endoftext|>").unwrap()
    );
}

/// Runs `export ARGS…`, which must fail with exit 2 and one line on stderr naming `what`.
fn refused(args: &[&str], what: &[&str]) -> String {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    let r = run(&all);
    assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
    let lines: Vec<&str> = r.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {}", r.stderr);
    for w in what {
        assert!(lines[0].contains(w), "{args:?}: {:?} lacks {w:?}", lines[0]);
    }
    lines[0].to_string()
}

#[test]
fn bad_inputs_get_one_line_exit_2_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let o = out.to_str().unwrap();

    // A file that is neither a checkpoint nor a session.
    let notes = d.join("notes.txt");
    std::fs::write(&notes, "not a model").unwrap();
    refused(
        &[notes.to_str().unwrap(), "--format", "hf", "--out", o],
        &["notes.txt", "neither a checkpoint"],
    );

    // A session file given to --format hf.
    let session = d.join("s.h5");
    let mut args = vec!["record", "--steps", "2", "--out", session.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    let r = run(&args);
    assert!(r.ok(), "{}", r.stderr);
    refused(
        &[session.to_str().unwrap(), "--format", "hf", "--out", o],
        &["--format hf", "s.h5", "session"],
    );

    // A checkpoint whose shape Llama cannot express (kv heads that do not divide the heads).
    let ck = train(d, &GQA);
    let step = checkpoint::resolve(&ck).unwrap();
    let good = std::fs::read_to_string(step.join(checkpoint::STATE_FILE)).unwrap();
    set_model_config(&ck, &[("kv_heads", 3.0)]);
    let c = ck.to_str().unwrap();
    refused(
        &[c, "--format", "hf", "--out", o],
        &["cannot be written as a LlamaForCausalLM", "--kv-heads 3"],
    );
    std::fs::write(step.join(checkpoint::STATE_FILE), good).unwrap();

    // An unknown format (clap's usage error: exit 2, the value and the choices named).
    let r = run(&["export", c, "--format", "onnx", "--out", o]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let first = r.stderr.lines().next().unwrap_or("");
    assert!(
        first.contains("'onnx'") && r.stderr.contains("hf"),
        "{}",
        r.stderr
    );

    // Nothing of the refusals above was written: no --out, no staging directory.
    assert!(!out.exists(), "a refused export created --out");
    let stray: Vec<String> = listing(d)
        .into_iter()
        .filter(|f| f.contains("partial"))
        .collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");

    // A non-empty --out is kept as it is, unless --force replaces it.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("mine.txt"), "keep me").unwrap();
    refused(
        &[c, "--format", "hf", "--out", o],
        &["--out", "not empty", "--force"],
    );
    assert_eq!(listing(&out), ["mine.txt"]);
    let r = run(&["export", c, "--format", "hf", "--out", o, "--force"]);
    assert!(r.ok(), "{}", r.stderr);
    assert_eq!(
        listing(&out),
        ["config.json", "generation_config.json", "model.safetensors"]
    );
}
