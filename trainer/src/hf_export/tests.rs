//! The folding of the μP multipliers, the Llama config, and the refusals of the export.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::*;
use crate::model::MiniCpm;

fn small(heads: usize, kv: usize) -> ModelConfig {
    ModelConfig::minicpm(32, 48, heads, kv, 3, 40)
}

fn weights(cfg: &ModelConfig) -> HashMap<String, Tensor> {
    let m = MiniCpm::init(cfg, 8, 1, &Device::Cpu, DType::F32).unwrap();
    m.named_vars()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn scaled(t: &Tensor, by: f64) -> Vec<f32> {
    values(t).iter().map(|&x| (x as f64 * by) as f32).collect()
}

#[test]
fn each_multiplier_lands_on_its_own_tensor_and_nothing_else_changes() {
    let cfg = small(4, 2);
    let w = weights(&cfg);
    let folded: HashMap<String, Tensor> = fold(&cfg, &w).unwrap().into_iter().collect();
    assert_eq!(
        folded.len(),
        w.len() + 1,
        "the untied head is the one new tensor"
    );
    let res = 1.4 / 3f64.sqrt();
    let e = &w["model.embed_tokens.weight"];
    assert_eq!(
        values(&folded["model.embed_tokens.weight"]),
        scaled(e, 12.0)
    );
    assert_eq!(values(&folded["lm_head.weight"]), scaled(e, 256.0 / 32.0));
    for (name, t) in &w {
        let want = if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
            scaled(t, res)
        } else if name == "model.embed_tokens.weight" {
            continue;
        } else {
            values(t)
        };
        let got = values(&folded[name]);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-30))
            .fold(0f32, f32::max);
        assert!(worst <= 1.2e-7, "{name}: relative difference {worst}");
    }
}

#[test]
fn the_llama_config_carries_the_shape_untied_in_float32() {
    let mut cfg = small(4, 2);
    cfg.rope_theta = 500_000.0;
    cfg.rms_eps = 1e-6;
    let special = SpecialTokens {
        end_of_text: Some(("<|endoftext|>".into(), 0)),
    };
    let c = llama_config(&cfg, 128, &special);
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["num_attention_heads"], 4);
    assert_eq!(c["num_key_value_heads"], 2);
    assert_eq!(c["head_dim"], 8);
    assert_eq!(c["rope_theta"], 500_000.0);
    assert_eq!(c["rms_norm_eps"], 1e-6);
    assert_eq!(c["max_position_embeddings"], 128);
    assert_eq!(c["tie_word_embeddings"], false);
    assert_eq!(c["torch_dtype"], "float32");
    assert_eq!(c["eos_token_id"], 0);
    // No scale_emb, scale_depth or dim_model_base: they are in the weights.
    assert!(c.get("scale_emb").is_none() && c.get("dim_model_base").is_none());
    let none = llama_config(&cfg, 128, &SpecialTokens::default());
    assert!(none["bos_token_id"].is_null() && none["eos_token_id"].is_null());
    assert_eq!(
        tokenizer_config(128, &special)["eos_token"],
        "<|endoftext|>"
    );
}

#[test]
fn a_shape_llama_cannot_express_is_refused_by_name() {
    let mut cfg = small(4, 2);
    cfg.kv_heads = 3;
    let e = check_expressible(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("cannot be written as a LlamaForCausalLM") && e.contains("--kv-heads 3"),
        "{e}"
    );
    let mut cfg = small(4, 2);
    cfg.scale_emb = 1e300;
    let e = check_expressible(&cfg).unwrap_err().to_string();
    assert!(e.contains("scale_emb") && e.contains("float32"), "{e}");
}

#[test]
fn a_tensor_missing_or_of_another_shape_is_refused_by_name() {
    let cfg = small(2, 2);
    let mut w = weights(&cfg);
    w.remove("model.layers.1.mlp.up_proj.weight");
    let e = fold(&cfg, &w).unwrap_err().to_string();
    assert!(
        e.contains("lacks tensor model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );
    let mut w = weights(&cfg);
    w.insert(
        "model.norm.weight".into(),
        Tensor::ones(7, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = fold(&cfg, &w).unwrap_err().to_string();
    assert!(e.contains("model.norm.weight has shape [7]"), "{e}");
}
