//! The shape of a MiniCPM-architecture decoder: its μP knobs, its checks, what it counts
//! (parameters, FLOPs), the HF `config.json` form, and the names and shapes of its
//! parameters in checkpoint order.

use serde::{Deserialize, Serialize};
use wsdscope_events::ModelSummary;

use crate::error::{Error, Result};

/// The shape and μP settings of a MiniCPM-architecture decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    /// Embedding output multiplier (MiniCPM: 12).
    pub scale_emb: f64,
    /// Residual branches are scaled by `scale_depth / √layers` (MiniCPM: 1.4).
    pub scale_depth: f64,
    /// μP base width: width multiplier is `hidden / dim_model_base` (MiniCPM: 256).
    pub dim_model_base: usize,
    /// Std of the embedding init; hidden matrices get `init_std / √width_mult` (MiniCPM: 0.1).
    pub init_std: f64,
    pub rms_eps: f64,
    pub rope_theta: f64,
}

impl ModelConfig {
    /// A MiniCPM shape with the paper's μP settings.
    pub fn minicpm(
        hidden: usize,
        ffn: usize,
        heads: usize,
        kv_heads: usize,
        layers: usize,
        vocab: usize,
    ) -> Self {
        ModelConfig {
            hidden,
            layers,
            heads,
            kv_heads,
            ffn,
            vocab,
            scale_emb: 12.0,
            scale_depth: 1.4,
            dim_model_base: 256,
            init_std: 0.1,
            rms_eps: 1e-5,
            rope_theta: 10000.0,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// μP width multiplier `hidden / dim_model_base`.
    pub fn width_mult(&self) -> f64 {
        self.hidden as f64 / self.dim_model_base as f64
    }

    /// Residual branch scale `scale_depth / √L`.
    pub fn residual_scale(&self) -> f64 {
        self.scale_depth / (self.layers as f64).sqrt()
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("kv-heads", self.kv_heads),
            ("ffn", self.ffn),
            ("vocab", self.vocab),
            ("dim_model_base", self.dim_model_base),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::Config(format!(
                    "--{name} 0 is not allowed; it must be at least 1"
                )));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(Error::Config(format!(
                "--hidden {} is not divisible by --heads {}; hidden must be a multiple of heads",
                self.hidden, self.heads
            )));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(Error::Config(format!(
                "--kv-heads {} does not divide --heads {}; heads must be a multiple of kv-heads",
                self.kv_heads, self.heads
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(Error::Config(format!(
                "head dim {} (hidden {} / heads {}) is odd; RoPE needs an even head dim",
                self.head_dim(),
                self.hidden,
                self.heads
            )));
        }
        if self.vocab > u32::MAX as usize {
            return Err(Error::Config(format!(
                "--vocab {} is too large; at most {}",
                self.vocab,
                u32::MAX
            )));
        }
        for (name, v) in [
            ("scale_emb", self.scale_emb),
            ("scale_depth", self.scale_depth),
            ("init_std", self.init_std),
            ("rms_eps", self.rms_eps),
            ("rope_theta", self.rope_theta),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Config(format!(
                    "{name} {v} is not allowed; it must be a finite number > 0"
                )));
            }
        }
        Ok(())
    }

    /// Parameters of one decoder layer: q, k, v, o, gate, up, down and two RMSNorm gains.
    pub fn params_per_layer(&self) -> u64 {
        let (h, f, hd) = (self.hidden as u64, self.ffn as u64, self.head_dim() as u64);
        let attn = h * hd * (2 * self.heads as u64 + 2 * self.kv_heads as u64);
        attn + 3 * h * f + 2 * h
    }

    /// Parameters outside the (tied) embedding: the count the MiniCPM paper reports.
    pub fn non_embedding_params(&self) -> u64 {
        self.layers as u64 * self.params_per_layer() + self.hidden as u64
    }

    pub fn embedding_params(&self) -> u64 {
        self.vocab as u64 * self.hidden as u64
    }

    /// All parameters, the tied head counted once.
    pub fn total_params(&self) -> u64 {
        self.non_embedding_params() + self.embedding_params()
    }

    /// Training FLOPs per token ≈ 6·(matmul params incl. the tied head) + 12·L·T·H (PaLM).
    pub fn flops_per_token(&self, seq: usize) -> f64 {
        let (h, f, hd) = (self.hidden as f64, self.ffn as f64, self.head_dim() as f64);
        let per_layer = h * hd * (2 * self.heads + 2 * self.kv_heads) as f64 + 3.0 * h * f;
        6.0 * (self.layers as f64 * per_layer + self.vocab as f64 * h)
            + 12.0 * (self.layers * seq) as f64 * h
    }

    pub fn summary(&self, preset: &str) -> ModelSummary {
        ModelSummary {
            preset: preset.to_string(),
            params: self.total_params(),
            non_embedding_params: self.non_embedding_params(),
            hidden: self.hidden,
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            ffn: self.ffn,
            vocab: self.vocab,
        }
    }

    /// The Hugging Face `config.json` of a MiniCPM model with this shape, so that our
    /// checkpoints load where MiniCPM weights load.
    pub fn hf_config_json(&self, max_seq: usize) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["MiniCPMForCausalLM"],
            "model_type": "minicpm",
            "hidden_size": self.hidden,
            "intermediate_size": self.ffn,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "num_hidden_layers": self.layers,
            "vocab_size": self.vocab,
            "max_position_embeddings": max_seq,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "scale_emb": self.scale_emb,
            "scale_depth": self.scale_depth,
            "dim_model_base": self.dim_model_base,
            "initializer_range": self.init_std,
            "tie_word_embeddings": true,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "pretraining_tp": 1,
            "use_cache": true,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32",
        })
    }

    /// Reads the shape back from an HF MiniCPM `config.json`.
    pub fn from_hf_config_json(v: &serde_json::Value) -> Option<Self> {
        let u = |k: &str| v.get(k)?.as_u64().map(|x| x as usize);
        let f = |k: &str| v.get(k)?.as_f64();
        Some(ModelConfig {
            hidden: u("hidden_size")?,
            layers: u("num_hidden_layers")?,
            heads: u("num_attention_heads")?,
            kv_heads: u("num_key_value_heads").or(u("num_attention_heads"))?,
            ffn: u("intermediate_size")?,
            vocab: u("vocab_size")?,
            scale_emb: f("scale_emb").unwrap_or(1.0),
            scale_depth: f("scale_depth").unwrap_or(1.0),
            dim_model_base: u("dim_model_base").unwrap_or(256),
            init_std: f("initializer_range").unwrap_or(0.1),
            rms_eps: f("rms_norm_eps").unwrap_or(1e-5),
            rope_theta: f("rope_theta").unwrap_or(10000.0),
        })
    }
}

/// The HF names and shapes of every parameter, in checkpoint order.
pub fn param_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, f, hd) = (cfg.hidden, cfg.ffn, cfg.head_dim());
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab, h])];
    for i in 0..cfg.layers {
        let p = format!("model.layers.{i}");
        out.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (
                format!("{p}.self_attn.q_proj.weight"),
                vec![cfg.heads * hd, h],
            ),
            (
                format!("{p}.self_attn.k_proj.weight"),
                vec![cfg.kv_heads * hd, h],
            ),
            (
                format!("{p}.self_attn.v_proj.weight"),
                vec![cfg.kv_heads * hd, h],
            ),
            (
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, cfg.heads * hd],
            ),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.mlp.gate_proj.weight"), vec![f, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![f, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, f]),
        ]);
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    out
}

/// The HF names of every parameter of a model with `layers` layers, in checkpoint order.
pub fn param_names(layers: usize) -> Vec<String> {
    let mut cfg = ModelConfig::minicpm(2, 2, 1, 1, layers, 2);
    cfg.dim_model_base = 2;
    param_shapes(&cfg).into_iter().map(|(n, _)| n).collect()
}
