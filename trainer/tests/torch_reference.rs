//! The model, its gradients and AdamW against PyTorch: `tests/reference/minicpm_ref.py` is a
//! small PyTorch version of the same MiniCPM, μP groups and optimiser (autograd,
//! `clip_grad_norm_`, `torch.optim.AdamW`). A [`Trainer`] is built on the synthetic language;
//! its initial weights, the batches of its first steps and their learning rates go to the
//! script, which trains the same steps in f32. Then, on an MHA and a GQA shape, the gradient
//! of every tensor at the first step, every step's loss and gradient norm, and each tensor's
//! change after the first step and after all six (warmup, stable and decay; the first one
//! clipped) must agree at tolerances just above the float32 rounding measured between the two.
//!
//! Needs Python with PyTorch and numpy: `WSDSCOPE_TORCH_PYTHON`, else the venv `scripts/test`
//! makes (`~/.cache/wsdscope/torch-venv`, or under `WSDSCOPE_CACHE`), else `python3`. Without
//! one the test prints why it skipped and passes, unless `WSDSCOPE_REQUIRE_TORCH` is set (to
//! anything but empty or `0`; `scripts/test` sets it) or `WSDSCOPE_TORCH_PYTHON` is: then it
//! fails.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use wsdscope_trainer::{DecayShape, ModelConfig, Schedule, Trainer};

/// Steps each shape trains: 2 warmup, 2 stable, 2 decay.
const STEPS: u64 = 6;

/// Tolerances, a few times the largest difference measured over both shapes (in brackets;
/// float32 on both sides, one thread each). Tensor differences are max |ours − torch| over
/// max |torch| of the tensor.
const LOSS_TOL: f64 = 5e-7; // relative, every step [9.0e-8]
const GRAD_NORM_TOL: f64 = 2e-6; // relative, every step [4.1e-7]
const GRAD_TOL: f64 = 3e-6; // every tensor's gradient at the first step [6.6e-7]
const FIRST_UPDATE_TOL: f64 = 1e-4; // every tensor's θ₁ − θ₀ [2.4e-5]
/// Every tensor's θ₆ − θ₀ [1.6e-3]: Adam divides by √v, so where a gradient is small the
/// rounding of the two sides grows over the steps.
const UPDATE_TOL: f64 = 5e-3;
/// Adam's first step moves θ by −lr·g/(|g| + ε): where |g| is near ε = 1e-8 the float32
/// rounding of g (~1e-10 here) becomes a percent of the step, so the first-update check
/// leaves out elements whose gradient is below this (about 200 of 10⁵ on these shapes).
const TINY_GRAD: f32 = 1e-6;

/// The Python to run, whether the user chose it, and where it came from.
fn python() -> (PathBuf, bool, String) {
    if let Some(p) = std::env::var_os("WSDSCOPE_TORCH_PYTHON") {
        return (p.into(), true, "WSDSCOPE_TORCH_PYTHON".into());
    }
    let cache = std::env::var_os("WSDSCOPE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/wsdscope")));
    if let Some(venv) = cache.map(|c| c.join("torch-venv/bin/python"))
        && venv.exists()
    {
        return (venv, false, "the scripts/test venv".into());
    }
    ("python3".into(), false, "the default".into())
}

/// A Python that imports torch and numpy; `None` (having said why) where the test may skip.
fn torch_python() -> Option<PathBuf> {
    let (py, chosen, from) = python();
    let why = match Command::new(&py)
        .args(["-c", "import torch, numpy"])
        .output()
    {
        Ok(o) if o.status.success() => return Some(py),
        Ok(o) => format!(
            "`{} -c 'import torch, numpy'` ({from}) failed: {}",
            py.display(),
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => format!("cannot run {} ({from}): {e}", py.display()),
    };
    let required = chosen
        || std::env::var_os("WSDSCOPE_REQUIRE_TORCH").is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "the PyTorch comparison is required (WSDSCOPE_REQUIRE_TORCH or WSDSCOPE_TORCH_PYTHON \
         is set) but there is no Python with torch and numpy: {why}"
    );
    eprintln!(
        "skipped the PyTorch comparison: {why}. Run scripts/test (it installs PyTorch), or set \
         WSDSCOPE_TORCH_PYTHON to a python with torch and numpy; WSDSCOPE_REQUIRE_TORCH=1 makes \
         this a failure."
    );
    None
}

/// The elements of a tensor as f32.
fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// max |a − b| / max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut diff, mut scale) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        diff = diff.max((x as f64 - y as f64).abs());
        scale = scale.max((y as f64).abs());
    }
    diff / scale
}

/// What the reference wrote: `grad.NAME` (the first step's gradients), `step1.NAME` and
/// `param.NAME` (the weights after the first and the last step), `loss` and `grad_norm` (each
/// step's, the norm before clipping).
fn run_reference(py: &Path, dir: &Path, case: &serde_json::Value) -> HashMap<String, Tensor> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/minicpm_ref.py");
    let (case_path, out) = (dir.join("case.json"), dir.join("out.safetensors"));
    std::fs::write(&case_path, case.to_string()).unwrap();
    let o = Command::new(py)
        .arg(&script)
        .arg(&case_path)
        .arg(dir.join("init.safetensors"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    candle_core::safetensors::load(&out, &Device::Cpu).unwrap()
}

/// Trains `model` for [`STEPS`] steps here and in PyTorch from the same weights on the same
/// batches and checks that they agree.
fn compare(what: &str, model: ModelConfig) {
    let Some(py) = torch_python() else { return };
    let mut cfg = common::small_run(STEPS);
    cfg.model = model;
    cfg.model.dim_model_base = 32;
    cfg.optim.clip = 0.72;
    cfg.seq = 32;
    cfg.batch = 4;
    cfg.seed = 3;
    cfg.schedule = Schedule::wsd(0.01, STEPS, 2, 2, DecayShape::Exp, 0.1).unwrap();
    let mut tr = Trainer::new(cfg.clone()).unwrap();
    // Copies: the parameters share storage with the model, which AdamW updates in place.
    let init: HashMap<String, Tensor> = tr
        .parameters()
        .into_iter()
        .map(|(n, t)| (n, t.copy().unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    candle_core::safetensors::save(&init, dir.path().join("init.safetensors")).unwrap();

    let batches: Vec<_> = (1..=STEPS).map(|s| tr.data().train_batch(s)).collect();
    let rows = |v: &[u32]| v.chunks(cfg.seq).map(<[u32]>::to_vec).collect::<Vec<_>>();
    let o = &cfg.optim;
    let case = serde_json::json!({
        "model": cfg.model.hf_config_json(cfg.seq),
        "optim": {"beta1": o.beta1, "beta2": o.beta2, "eps": o.eps,
                  "weight_decay": o.weight_decay, "clip": o.clip},
        "steps": batches.iter().zip(1..).map(|(b, s)| serde_json::json!({
            "lr": cfg.schedule.lr(s), "inputs": rows(&b.inputs), "targets": rows(&b.targets),
        })).collect::<Vec<_>>(),
    });
    let reference = run_reference(&py, dir.path(), &case);
    let tensor = |k: &str| {
        reference
            .get(k)
            .unwrap_or_else(|| panic!("the reference wrote no {k}"))
    };

    // The first step's gradients, of the model as the trainer's step computes them.
    let b = &batches[0];
    let x = Tensor::from_slice(&b.inputs, (b.batch, b.seq), &Device::Cpu).unwrap();
    let y = Tensor::from_slice(&b.targets, (b.batch, b.seq), &Device::Cpu).unwrap();
    let (_, grads) = tr.model().loss_and_grads(&x, &y).unwrap();
    let mut worst_grad = (0.0, String::new());
    for (name, var) in tr.model().named_vars() {
        let d = rel_diff(
            &values(grads.get(var).unwrap()),
            &values(tensor(&format!("grad.{name}"))),
        );
        assert!(
            d < GRAD_TOL,
            "{what}: gradient of {name} differs from PyTorch by {d:.2e}"
        );
        if d > worst_grad.0 {
            worst_grad = (d, name.clone());
        }
    }

    let (ref_loss, ref_norm) = (values(tensor("loss")), values(tensor("grad_norm")));
    let (mut worst_loss, mut worst_norm, mut worst_first) = (0.0f64, 0.0f64, (0.0, String::new()));
    for s in 0..STEPS as usize {
        let m = tr.train_step().unwrap();
        let dl = (m.loss - ref_loss[s] as f64).abs() / ref_loss[s] as f64;
        let dn = (m.grad_norm - ref_norm[s] as f64).abs() / ref_norm[s] as f64;
        eprintln!(
            "{what} step {}: lr {:.5}, loss {:.6} vs torch {:.6} ({dl:.1e}), grad norm {:.5} \
             vs {:.5} ({dn:.1e})",
            s + 1,
            m.lr,
            m.loss,
            ref_loss[s],
            m.grad_norm,
            ref_norm[s]
        );
        assert!(
            dl < LOSS_TOL,
            "{what}: step {} loss differs by {dl:.2e}",
            s + 1
        );
        assert!(
            dn < GRAD_NORM_TOL,
            "{what}: step {} grad norm differs by {dn:.2e}",
            s + 1
        );
        worst_loss = worst_loss.max(dl);
        worst_norm = worst_norm.max(dn);
        if s == 0 {
            worst_first = compare_changes(
                what,
                &tr,
                &init,
                &reference,
                "step1",
                FIRST_UPDATE_TOL,
                true,
            );
        }
    }
    // The steps cover clipping (the first) and its absence.
    assert!(
        ref_norm.iter().any(|&n| n as f64 > o.clip)
            && ref_norm.iter().any(|&n| (n as f64) < o.clip),
        "{what}: the gradient norms {ref_norm:?} do not straddle the clip {}",
        o.clip
    );
    let worst_update = compare_changes(what, &tr, &init, &reference, "param", UPDATE_TOL, false);
    eprintln!(
        "{what}: worst differences from PyTorch: loss {worst_loss:.1e} (tolerance {LOSS_TOL:.0e}), \
         grad norm {worst_norm:.1e} ({GRAD_NORM_TOL:.0e}), gradient {:.1e} ({}; {GRAD_TOL:.0e}), \
         first update {:.1e} ({}; {FIRST_UPDATE_TOL:.0e}), change over {STEPS} steps {:.1e} \
         ({}; {UPDATE_TOL:.0e})",
        worst_grad.0, worst_grad.1, worst_first.0, worst_first.1, worst_update.0, worst_update.1
    );
}

/// Checks each tensor's change since `init`, ours against the reference's `{key}.NAME`, to
/// `tol`; returns the largest difference and its tensor. (The parameters themselves are
/// dominated by their initial values, which would hide a wrong update.) With `first`, the
/// elements whose first-step gradient (the reference's) is below [`TINY_GRAD`] are left out.
fn compare_changes(
    what: &str,
    tr: &Trainer,
    init: &HashMap<String, Tensor>,
    reference: &HashMap<String, Tensor>,
    key: &str,
    tol: f64,
    first: bool,
) -> (f64, String) {
    let mut worst = (0.0, String::new());
    let mut left_out = 0;
    for (name, now) in tr.parameters() {
        let start = values(&init[&name]);
        let theirs = &reference[&format!("{key}.{name}")];
        let keep: Vec<bool> = if first {
            values(&reference[&format!("grad.{name}")])
                .iter()
                .map(|g| g.abs() >= TINY_GRAD)
                .collect()
        } else {
            vec![true; start.len()]
        };
        left_out += keep.iter().filter(|&&k| !k).count();
        let delta = |t: &Tensor| -> Vec<f32> {
            values(t)
                .iter()
                .zip(&start)
                .zip(&keep)
                .map(|((a, b), &k)| if k { a - b } else { 0.0 })
                .collect()
        };
        let d = rel_diff(&delta(&now), &delta(theirs));
        assert!(
            d < tol,
            "{what}: the change of {name} after {} step(s) differs from PyTorch's by {d:.2e}",
            tr.step_count()
        );
        if d > worst.0 {
            worst = (d, name);
        }
    }
    if first {
        eprintln!(
            "{what}: {left_out} elements with |g| < {TINY_GRAD:e} left out of the first update"
        );
    }
    worst
}

#[test]
fn an_mha_model_trains_as_in_pytorch() {
    compare("MHA", ModelConfig::minicpm(64, 160, 4, 4, 2, 256));
}

#[test]
fn a_gqa_model_trains_as_in_pytorch() {
    compare("GQA", ModelConfig::minicpm(64, 160, 8, 2, 3, 256));
}
