//! `export --format hf`: a checkpoint as a Hugging Face `LlamaForCausalLM` folder, the μP
//! multipliers folded into the weights (see `wsdscope_trainer::hf_export`).

use std::path::Path;

use anyhow::Result;
use wsdscope_trainer::hf_export;

/// Writes the export into `out` (an empty staging directory); returns a one-line summary.
pub fn write(input: &Path, out: &Path) -> Result<String> {
    let e = hf_export::export(input, out)?;
    let c = &e.config;
    let tokenizer = match &e.tokenizer {
        Some(p) => format!("tokenizer {} copied", p.display()),
        None => format!(
            "no tokenizer files (the run trained on {}, which no tokenizer.json describes)",
            e.data
        ),
    };
    Ok(format!(
        "LlamaForCausalLM of step {}: hidden {}, layers {}, heads {} (kv {}), vocab {}, {} \
         parameters (untied head) in float32; {tokenizer}",
        e.step, c.hidden, c.layers, c.heads, c.kv_heads, c.vocab, e.params
    ))
}
