//! The named model shapes (`--preset`): the CPU default, the MiniCPM paper's wind-tunnel
//! shapes and the two released models, each with the training shape it is meant to run at.

use super::model::ModelConfig;
use crate::error::{Error, Result};

/// A named model shape with the training shape it is meant to run at.
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
    pub model: ModelConfig,
    pub seq: usize,
    pub batch: usize,
    pub steps: u64,
}

/// All presets: the CPU default, the paper's wind-tunnel shapes and the two released models.
pub fn presets() -> Vec<Preset> {
    let m = ModelConfig::minicpm;
    let wt = |name, about, h, f, nh, l| Preset {
        name,
        about,
        model: m(h, f, nh, nh, l, 4096),
        seq: 512,
        batch: 8,
        steps: 2000,
    };
    vec![
        Preset {
            name: "tiny",
            about: "the CPU default: a full WSD run in a few minutes",
            model: m(128, 384, 2, 1, 4, 512),
            seq: 128,
            batch: 16,
            steps: 600,
        },
        wt("wt-9m", "wind tunnel 9M (320/800/5/8)", 320, 800, 5, 8),
        wt(
            "wt-30m",
            "wind tunnel 30M (512/1280/8/12)",
            512,
            1280,
            8,
            12,
        ),
        wt(
            "wt-70m",
            "wind tunnel 70M (640/1600/10/14)",
            640,
            1600,
            10,
            14,
        ),
        wt(
            "wt-0.1b",
            "wind tunnel 0.1B (768/1920/12/16)",
            768,
            1920,
            12,
            16,
        ),
        wt(
            "wt-0.2b",
            "wind tunnel 0.2B (1024/2560/16/20)",
            1024,
            2560,
            16,
            20,
        ),
        wt(
            "wt-0.5b",
            "wind tunnel 0.5B (1344/3360/21/24)",
            1344,
            3360,
            21,
            24,
        ),
        Preset {
            name: "minicpm-1.2b",
            about: "MiniCPM-1.2B (1536/3840/24 heads, 8 KV heads/52 layers, vocab 73,440)",
            model: m(1536, 3840, 24, 8, 52, 73440),
            seq: 4096,
            batch: 1,
            steps: 1000,
        },
        Preset {
            name: "minicpm-2.4b",
            about: "MiniCPM-2.4B (2304/5760/36/36/40, vocab 122,753)",
            model: m(2304, 5760, 36, 36, 40, 122753),
            seq: 4096,
            batch: 1,
            steps: 1000,
        },
    ]
}

/// Looks a preset up by name; the error lists every allowed name.
pub fn preset(name: &str) -> Result<Preset> {
    let all = presets();
    let names: Vec<_> = all.iter().map(|p| p.name).collect();
    all.into_iter().find(|p| p.name == name).ok_or_else(|| {
        Error::Config(format!(
            "unknown preset {name:?}; allowed: {}",
            names.join(", ")
        ))
    })
}
