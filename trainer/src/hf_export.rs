//! A checkpoint as a Hugging Face `LlamaForCausalLM` folder, readable with no custom code.
//!
//! MiniCPM is Llama plus three μP multipliers, and each is linear in one weight, so folding
//! them into the weights gives a plain Llama that computes the same logits:
//!
//! ```text
//! embed_tokens' = embed_tokens · scale_emb
//! o_proj'       = o_proj    · scale_depth / √L          (every layer)
//! down_proj'    = down_proj · scale_depth / √L          (every layer)
//! lm_head       = embed_tokens / (hidden / dim_model_base)   (untied)
//! ```
//!
//! Everything else is Llama's already: pre-norm RMSNorm (`rms_norm_eps`), half-split RoPE
//! (`rotate_half`, `rope_theta`), softmax(q·kᵀ/√head_dim), grouped-query attention, SwiGLU
//! with SiLU, no biases, and the same tensor names. The native MiniCPM form stays the
//! training checkpoint format; this is the form other tools read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::checkpoint::{self, MODEL_FILE};
use crate::config::{DataSpec, ModelConfig, param_shapes};
use crate::data::tokenizer;
use crate::error::{Error, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// The begin- and end-of-text token ids the export declares (none for runs without a
/// tokenizer: their data carries no such tokens).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpecialTokens {
    /// The token's text and id.
    pub end_of_text: Option<(String, u32)>,
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub step: u64,
    pub config: ModelConfig,
    /// Parameters written, the untied head included.
    pub params: u64,
    /// The tokenizer copied next to the weights, if the run used one.
    pub tokenizer: Option<PathBuf>,
    /// What the run trained on, for the summary of a run without a tokenizer.
    pub data: String,
}

fn not_expressible(cfg: &ModelConfig, why: String) -> Error {
    Error::Config(format!(
        "a model of hidden {}, {} heads ({} kv), {} layers cannot be written as a \
         LlamaForCausalLM: {why}",
        cfg.hidden, cfg.heads, cfg.kv_heads, cfg.layers
    ))
}

/// Refuses a shape a Llama config cannot describe (Llama derives head_dim = hidden / heads,
/// groups query heads evenly over kv heads, and rotates pairs of dimensions with RoPE).
pub fn check_expressible(cfg: &ModelConfig) -> Result<()> {
    cfg.validate()
        .map_err(|e| not_expressible(cfg, e.to_string()))?;
    let mult = [
        ("scale_emb", cfg.scale_emb),
        ("scale_depth / √layers", cfg.residual_scale()),
        ("1 / (hidden / dim_model_base)", 1.0 / cfg.width_mult()),
    ];
    for (name, v) in mult {
        if !(v.is_finite() && v > 0.0 && (v as f32).is_normal()) {
            return Err(not_expressible(
                cfg,
                format!("its multiplier {name} = {v} does not fold into float32 weights"),
            ));
        }
    }
    Ok(())
}

/// The Llama `config.json` of `cfg` trained on sequences of `max_seq` tokens.
pub fn llama_config(
    cfg: &ModelConfig,
    max_seq: usize,
    special: &SpecialTokens,
) -> serde_json::Value {
    let id = special.end_of_text.as_ref().map(|(_, id)| *id);
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden,
        "intermediate_size": cfg.ffn,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim(),
        "num_hidden_layers": cfg.layers,
        "vocab_size": cfg.vocab,
        "max_position_embeddings": max_seq,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": null,
        "attention_bias": false,
        "mlp_bias": false,
        "attention_dropout": 0.0,
        "initializer_range": cfg.init_std,
        "pretraining_tp": 1,
        "tie_word_embeddings": false,
        "use_cache": true,
        "bos_token_id": id,
        "eos_token_id": id,
        "torch_dtype": "float32",
    })
}

/// `generation_config.json`: the same special tokens as the config.
pub fn generation_config(special: &SpecialTokens) -> serde_json::Value {
    let id = special.end_of_text.as_ref().map(|(_, id)| *id);
    serde_json::json!({ "bos_token_id": id, "eos_token_id": id })
}

/// `tokenizer_config.json` for a copied `tokenizer.json`: the fast tokenizer, nothing added
/// around a text (training saw none), and the run's context length.
pub fn tokenizer_config(max_seq: usize, special: &SpecialTokens) -> serde_json::Value {
    let mut v = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_seq,
        "clean_up_tokenization_spaces": false,
    });
    if let Some((text, _)) = &special.end_of_text {
        v["bos_token"] = text.clone().into();
        v["eos_token"] = text.clone().into();
    }
    v
}

/// The MiniCPM checkpoint tensors `weights` as Llama tensors, μP multipliers folded in (see
/// the module docs). Every parameter of `cfg` must be present with its shape.
pub fn fold(cfg: &ModelConfig, weights: &HashMap<String, Tensor>) -> Result<Vec<(String, Tensor)>> {
    check_expressible(cfg)?;
    let res = cfg.residual_scale();
    let mut out = Vec::new();
    for (name, shape) in param_shapes(cfg) {
        let t = weights
            .get(&name)
            .ok_or_else(|| Error::Config(format!("the checkpoint lacks tensor {name}")))?;
        if t.dims() != shape.as_slice() {
            return Err(Error::Config(format!(
                "checkpoint tensor {name} has shape {:?}, its config wants {shape:?}",
                t.dims()
            )));
        }
        let t = t.to_dtype(DType::F32)?;
        if name == "model.embed_tokens.weight" {
            out.push((
                "lm_head.weight".into(),
                t.affine(1.0 / cfg.width_mult(), 0.0)?,
            ));
            out.push((name, t.affine(cfg.scale_emb, 0.0)?));
        } else if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
            out.push((name, t.affine(res, 0.0)?));
        } else {
            out.push((name, t.copy()?));
        }
    }
    for (name, t) in &out {
        let finite = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|x| x.is_finite());
        if !finite {
            return Err(Error::Config(format!(
                "{name} holds a non-finite value after folding the μP multipliers in"
            )));
        }
    }
    Ok(out)
}

/// The end-of-text token of a tokenizer: `<|endoftext|>` (what `wsdscope tokenizer train`
/// reserves), else its first special token, else none.
fn end_of_text(tok: &tokenizers::Tokenizer) -> Option<(String, u32)> {
    if let Some(id) = tok.token_to_id(tokenizer::END_OF_TEXT) {
        return Some((tokenizer::END_OF_TEXT.to_string(), id));
    }
    tok.get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .min_by_key(|(id, _)| *id)
        .map(|(id, t)| (t.content, id))
}

/// The tokenizer a run was trained with, checked against the model's vocabulary.
fn run_tokenizer(path: &Path, cfg: &ModelConfig) -> Result<(tokenizers::Tokenizer, PathBuf)> {
    if !path.is_file() {
        return Err(Error::Config(format!(
            "the run was trained with the tokenizer {}, which the export copies, but it is not \
             there (the path is as given to record: run export where it resolves)",
            path.display()
        )));
    }
    let tok = tokenizer::load(path)?;
    let n = tok.get_vocab_size(true);
    if n > cfg.vocab {
        return Err(Error::Tokenizer(format!(
            "{} has {n} tokens but the model's vocabulary is {}; it is not this run's tokenizer",
            path.display(),
            cfg.vocab
        )));
    }
    Ok((tok, path.to_path_buf()))
}

/// Writes the checkpoint `ckpt` names (a `step-N` directory, or the newest under a root) into
/// the existing directory `out` as a `LlamaForCausalLM` folder: `config.json`,
/// `model.safetensors`, `generation_config.json`, and `tokenizer.json` plus
/// `tokenizer_config.json` when the run used a tokenizer. Everything is checked before the
/// first file is written.
pub fn export(ckpt: &Path, out: &Path) -> Result<Exported> {
    let (dir, state) = checkpoint::read_state(ckpt)?;
    let cfg = &state.config.model;
    check_expressible(cfg)?;
    let tok = match &state.config.data {
        DataSpec::Tokenized { tokenizer, .. } => Some(run_tokenizer(tokenizer, cfg)?),
        _ => None,
    };
    let special = SpecialTokens {
        end_of_text: tok.as_ref().and_then(|(t, _)| end_of_text(t)),
    };
    let path = dir.join(MODEL_FILE);
    let weights =
        candle_core::safetensors::load(&path, &candle_core::Device::Cpu).map_err(|e| {
            Error::Checkpoint {
                path: path.clone(),
                message: format!("unreadable: {e}"),
            }
        })?;
    let tensors = fold(cfg, &weights)?;
    let params = tensors.iter().map(|(_, t)| t.elem_count() as u64).sum();

    let seq = state.config.seq;
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    let model = out.join(MODEL_FILE);
    candle_core::safetensors::save(&map, &model).map_err(|e| Error::Checkpoint {
        path: model.clone(),
        message: format!("writing: {e}"),
    })?;
    checkpoint::write_json(&out.join(CONFIG_FILE), &llama_config(cfg, seq, &special))?;
    checkpoint::write_json(
        &out.join(GENERATION_CONFIG_FILE),
        &generation_config(&special),
    )?;
    if let Some((_, src)) = &tok {
        let dst = out.join(TOKENIZER_FILE);
        std::fs::copy(src, &dst).map_err(|e| Error::io(src, e))?;
        checkpoint::write_json(
            &out.join(TOKENIZER_CONFIG_FILE),
            &tokenizer_config(seq, &special),
        )?;
    }
    Ok(Exported {
        step: state.step,
        config: cfg.clone(),
        params,
        tokenizer: tok.map(|(_, p)| p),
        data: state.config.data.describe(),
    })
}

#[cfg(test)]
mod tests;
