//! Checkpoints: one directory per saved step, complete or absent.
//!
//! ```text
//! DIR/step-00000300/
//!     model.safetensors      parameters, HF MiniCPM names (model.embed_tokens.weight, …), f32
//!     config.json            the HF MiniCPM config of this shape
//!     optimizer.safetensors  AdamW moments: {name}.exp_avg, {name}.exp_avg_sq
//!     trainer_state.json     step, tokens, Adam's t, data cursor, RNG state, the run config
//! ```
//! A checkpoint is written to `step-N.partial` and renamed when complete, so a crash never
//! leaves a half-written checkpoint that `--resume` would pick up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::data::rng::SplitMix64;
use crate::error::{Error, Result};

pub const CHECKPOINT_FORMAT: u32 = 1;
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
pub const HF_CONFIG_FILE: &str = "config.json";

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: u32,
    /// Steps completed.
    pub step: u64,
    pub tokens: u64,
    /// AdamW's step count (bias corrections).
    pub adam_t: u64,
    /// The next global step whose batch will be drawn (batches are pure functions of it).
    pub data_cursor: u64,
    /// The trainer's RNG, for stochastic parts of training (none in the step itself today).
    pub rng: SplitMix64,
    pub last_val_loss: Option<f64>,
    pub config: RunConfig,
    /// The run's averaged noise-scale estimates (tr Σ, |G|²), so a resumed run's average
    /// goes on where it was (absent in checkpoints written before it was kept).
    #[serde(default)]
    pub noise_average: Option<(f64, f64)>,
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainerState,
    pub model: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
}

fn ck_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.into(),
        message: message.into(),
    }
}

/// Writes a checkpoint for `state` under `root` and returns its directory.
pub fn save(
    root: &Path,
    state: &TrainerState,
    model: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let final_dir = root.join(format!("step-{:08}", state.step));
    let tmp = root.join(format!("step-{:08}.partial", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let to_map =
        |ts: &[(String, Tensor)]| -> HashMap<String, Tensor> { ts.iter().cloned().collect() };
    candle_core::safetensors::save(&to_map(model), tmp.join(MODEL_FILE))
        .map_err(|e| ck_err(&tmp, format!("writing {MODEL_FILE}: {e}")))?;
    candle_core::safetensors::save(&to_map(optimizer), tmp.join(OPTIMIZER_FILE))
        .map_err(|e| ck_err(&tmp, format!("writing {OPTIMIZER_FILE}: {e}")))?;
    let hf = state.config.model.hf_config_json(state.config.seq);
    write_json(&tmp.join(HF_CONFIG_FILE), &hf)?;
    write_json(&tmp.join(STATE_FILE), state)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    Ok(final_dir)
}

/// `v` as pretty JSON text ending in a newline, at `path`.
pub(crate) fn write_json(path: &Path, v: &impl Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(v).expect("serialisable");
    std::fs::write(path, s + "\n").map_err(|e| Error::io(path, e))
}

/// Finds the checkpoint `path` names: a checkpoint directory itself, or a checkpoint root
/// whose newest complete `step-N` is taken.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        return Err(ck_err(path, "no such directory"));
    }
    if !path.is_dir() {
        return Err(ck_err(
            path,
            "is a file; --resume takes a checkpoint directory",
        ));
    }
    if path.join(STATE_FILE).exists() {
        return Ok(path.to_path_buf());
    }
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
            && entry.path().join(STATE_FILE).exists()
            && best.as_ref().is_none_or(|(b, _)| n > *b)
        {
            best = Some((n, entry.path()));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        ck_err(
            path,
            format!("holds no checkpoint (no {STATE_FILE} and no complete step-N directory)"),
        )
    })
}

/// Loads the checkpoint `path` names (see [`resolve`]).
pub fn load(path: &Path) -> Result<Checkpoint> {
    let (dir, state) = read_state(path)?;
    let read = |file: &str| -> Result<HashMap<String, Tensor>> {
        let p = dir.join(file);
        candle_core::safetensors::load(&p, &Device::Cpu)
            .map_err(|e| ck_err(&p, format!("unreadable: {e}")))
    };
    Ok(Checkpoint {
        model: read(MODEL_FILE)?,
        optimizer: read(OPTIMIZER_FILE)?,
        dir,
        state,
    })
}

/// The checkpoint directory `path` names (the newest under a root) and its trainer state,
/// without reading any tensor: enough to check flags and estimate memory before loading.
pub fn read_state(path: &Path) -> Result<(PathBuf, TrainerState)> {
    let dir = resolve(path)?;
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|e| ck_err(&state_path, format!("unreadable: {e}")))?;
    if state.format > CHECKPOINT_FORMAT {
        return Err(ck_err(
            &dir,
            format!(
                "has format {} but this wsdscope reads up to {CHECKPOINT_FORMAT}; upgrade wsdscope",
                state.format
            ),
        ));
    }
    Ok((dir, state))
}

/// Loads HF-named weights from one safetensors file (e.g. `--init-from`), as f32 on CPU.
pub fn load_weights(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(ck_err(path, "no such file"));
    }
    let ts = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| ck_err(path, format!("not a safetensors file: {e}")))?;
    ts.into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(candle_core::DType::F32)?)))
        .collect()
}
