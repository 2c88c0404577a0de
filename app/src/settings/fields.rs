//! Every run setting, declared once. Each entry of the `settings!` list below is a field of
//! [`Settings`] and so a flag (clap) and a key of a `--config` TOML file (serde, the same
//! kebab-case name); the list also drives the overlay of flags over the file
//! ([`Settings::over`]) and the table [`Settings::ALL`], which says for each setting whether it
//! *shapes* the run (what `--resume` checks against the saved run) or is *adjustable* (where,
//! how fast, checkpoints, forks, probes: a resumed run may change it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

/// One run setting as declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Its [`Settings`] field, e.g. `kv_heads`.
    pub field: &'static str,
    /// Whether it decides what the run computes: on `--resume` it must agree with the saved
    /// run. Otherwise it is adjustable: a resumed run takes the new value.
    pub shaping: bool,
}

impl Setting {
    /// Its flag without the dashes, which is also its TOML key: `kv-heads`.
    pub fn key(&self) -> String {
        self.field.replace('_', "-")
    }
}

/// Declares the settings: `ROLE FIELD: TYPE,` each (the field holds `Option<TYPE>`), after its
/// doc comment (the `--help` text) and its `#[arg]`/`#[serde]` attributes. ROLE is `shaping`
/// or `adjustable` (see [`Setting::shaping`]).
macro_rules! settings {
    (@shaping shaping) => { true };
    (@shaping adjustable) => { false };
    ($(
        $(#[$attr:meta])*
        $role:ident $field:ident: $ty:ty,
    )*) => {
        /// Every setting of a run. On the command line each is a flag (`--kv-heads 2`); in a
        /// config file each is a key with the same name (`kv-heads = 2`).
        #[derive(Args, Debug, Clone, Default, Deserialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[$attr])*
                pub $field: Option<$ty>,
            )*
        }

        impl Settings {
            /// Every setting, in the order declared.
            pub const ALL: &'static [Setting] = &[
                $(Setting { field: stringify!($field), shaping: settings!(@shaping $role) },)*
            ];

            /// These settings, with unset values taken from `base`.
            pub fn over(self, base: Settings) -> Settings {
                Settings {
                    $($field: self.$field.or(base.$field),)*
                }
            }

            /// The settings that have a value, in the order declared.
            pub fn given(&self) -> impl Iterator<Item = &'static Setting> + use<> {
                let set = [$(self.$field.is_some(),)*];
                Self::ALL.iter().zip(set).filter_map(|(s, set)| set.then_some(s))
            }

            /// Settings with only `field` set, to its type's [`sample::Sample`], and that
            /// value as a flag's argument and as a TOML value.
            #[cfg(test)]
            pub(super) fn sample(field: &str) -> (Settings, &'static str, &'static str) {
                use sample::Sample;
                let mut s = Settings::default();
                let text = match field {
                    $(stringify!($field) => {
                        s.$field = Some(<$ty as Sample>::sample());
                        (<$ty as Sample>::CLI, <$ty as Sample>::TOML)
                    })*
                    other => panic!("no setting {other}"),
                };
                (s, text.0, text.1)
            }
        }
    };
}

settings! {
    /// Model preset: tiny (default), wt-9m … wt-0.5b, minicpm-1.2b, minicpm-2.4b.
    #[arg(long)]
    shaping preset: String,
    /// Training steps.
    #[arg(long)]
    shaping steps: u64,
    /// Sequences per step.
    #[arg(long)]
    shaping batch: usize,
    /// Tokens per sequence.
    #[arg(long)]
    shaping seq: usize,
    /// Peak learning rate (hidden matrices get lr / (hidden/256), μP).
    #[arg(long)]
    shaping lr: f64,
    /// Warmup length as a fraction of the steps, in [0, 1).
    #[arg(long, value_name = "F")]
    shaping warmup: f64,
    /// The trunk's decay: SHAPE:FRACTION[:FLOOR], shape exp|linear|cosine|1-sqrt, FRACTION of
    /// the steps in (0, 1], FLOOR the final lr as a fraction of the peak (default 0.1).
    #[arg(long, value_name = "SHAPE:FRACTION[:FLOOR]")]
    shaping decay: String,
    /// wsd (default), cosine or constant.
    #[arg(long)]
    shaping schedule: String,
    /// Seeds the initial weights and the synthetic data.
    #[arg(long)]
    shaping seed: u64,
    /// cpu (default), cuda (under mpirun: the GPU of the rank's place on its node) or cuda:N.
    #[arg(long)]
    adjustable device: String,
    /// Worker threads (default: `RAYON_NUM_THREADS` when set, else all cores).
    #[arg(long)]
    adjustable threads: usize,
    /// Training data: a UTF-8 text file (bytes, or tokens with --tokenizer) or a .u16/.u32
    /// token file. Default: the embedded synthetic language.
    #[arg(long, value_name = "PATH")]
    shaping data: PathBuf,
    /// How to read --data: auto (by extension: .u16/.bin → u16, .u32 → u32, else text),
    /// text, u16, u32.
    #[arg(long, value_name = "FORMAT")]
    shaping data_format: String,
    /// A Hugging Face tokenizer.json to encode a text --data file with.
    #[arg(long, value_name = "FILE")]
    shaping tokenizer: PathBuf,
    /// Model width (default: the preset's); --heads must divide it.
    #[arg(long)]
    shaping hidden: usize,
    /// Decoder layers (default: the preset's).
    #[arg(long)]
    shaping layers: usize,
    /// Attention heads (default: the preset's); they must divide --hidden.
    #[arg(long)]
    shaping heads: usize,
    /// Key/value heads (grouped-query attention); they must divide --heads. Default: the
    /// preset's, or --heads where a --heads override is not a multiple of the preset's.
    #[arg(long)]
    shaping kv_heads: usize,
    /// Feed-forward width (default: the preset's).
    #[arg(long)]
    shaping ffn: usize,
    /// Vocabulary size (default: 256 for text --data, the tokenizer's with --tokenizer, else
    /// the preset's).
    #[arg(long)]
    shaping vocab: usize,
    /// Evaluate every N steps (default: steps/20); also at the end of stable and at the end.
    #[arg(long, value_name = "N")]
    shaping eval_every: u64,
    /// Number of fixed validation batches (default 4).
    #[arg(long, value_name = "N")]
    shaping eval_batches: usize,
    /// Held-out fraction of a token stream (default 0.1).
    #[arg(long)]
    shaping val_fraction: f64,
    /// AdamW decoupled weight decay (default 0.1).
    #[arg(long)]
    shaping weight_decay: f64,
    /// Global gradient-norm clip, 0 for none (default 1.0).
    #[arg(long)]
    shaping clip: f64,
    /// Write a checkpoint every N steps (and at the end) into --checkpoint-dir.
    #[arg(long, value_name = "N")]
    adjustable checkpoint_every: u64,
    /// Where checkpoints go (needed by --checkpoint-every and --keep-branch-checkpoints); an
    /// interrupted run checkpoints here too, else into NAME.checkpoints/ by the session file.
    #[arg(long, value_name = "DIR")]
    adjustable checkpoint_dir: PathBuf,
    /// Start from these weights (safetensors, HF MiniCPM names) instead of the μP init.
    #[arg(long, value_name = "FILE")]
    shaping init_from: PathBuf,
    /// Fork a decay branch from the trunk after each of these steps, e.g. 2000,4000.
    #[arg(long, value_name = "S1,S2,…", value_delimiter = ',')]
    adjustable fork_at: Vec<u64>,
    /// The decay of --fork-at branches: SHAPE:LENGTH[:FLOOR]; LENGTH in steps (an integer ≥ 1)
    /// or a fraction of the fork step (e.g. 0.1); FLOOR default 0.1. Default: exp:0.1.
    #[arg(long, value_name = "SHAPE:LENGTH[:FLOOR]")]
    adjustable branch_decay: String,
    /// How runs share the engine: round-robin (default), branches-first, trunk-paused.
    #[arg(long)]
    adjustable policy: String,
    /// Memory all runs together may hold, in MiB (default: half of what is available).
    #[arg(long, value_name = "MB")]
    adjustable memory_budget: u64,
    /// Keep each branch's final checkpoint (under --checkpoint-dir/run-N).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(default)]
    adjustable keep_branch_checkpoints: bool,
    /// Run a periodic probe (sharpness, noise scale, 1-D slices, 2-D slice, in turn) after
    /// every N steps of each run; 0 (default): where the phases change (end of warmup,
    /// mid-stable, last stable step, through the decay, each branch's ends), as far as
    /// --probe-budget allows.
    #[arg(long, value_name = "N")]
    adjustable probe_every: u64,
    /// Share of training time periodic probes may take, in percent (default 5 without
    /// --probe-every, unlimited with it; 0 turns periodic probes off).
    #[arg(long, value_name = "PCT")]
    adjustable probe_budget: f64,
    /// Points through the decay where each periodic probe runs when the budget allows, the
    /// decay's last step included (default 3; without --probe-every).
    #[arg(long, value_name = "N")]
    adjustable probe_decay_points: u64,
    /// Sequences of the step's batch that sharpness, slices, the landscape and interpolation
    /// use (default min(batch, 4)). Sharpness is that batch's Hessian's and grows as it
    /// shrinks: compare it at one setting.
    #[arg(long, value_name = "N")]
    adjustable probe_batch: usize,
    /// Points per side of the 2-D loss slice (default 7, i.e. 49 losses).
    #[arg(long, value_name = "N")]
    adjustable probe_grid: usize,
    /// Steps each report of the gradient noise scale averages where it comes from the CPU
    /// step's own leaves, at no extra pass (default 10; a report also ends at each place
    /// the planner probes).
    #[arg(long, value_name = "N")]
    adjustable probe_noise_window: u64,
    /// Tensors whose max |Δθ| each step reports (HF names, comma-separated; default: the
    /// embedding, layer 0's q_proj and the last layer's down_proj).
    #[arg(long, value_name = "NAME,…", value_delimiter = ',')]
    adjustable track: Vec<String>,
    /// Run the model's ops as plain candle ops instead of the fused kernels (for checking
    /// the kernels; several times slower).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(default)]
    adjustable reference_ops: bool,
    /// Arithmetic: f32 (default), or bf16 mixed precision — f32 master weights and AdamW
    /// moments, bf16 forward and backward passes, f32 loss. bf16 needs --device cuda:N.
    #[arg(long, value_name = "f32|bf16")]
    adjustable precision: String,
    /// Runs the session may hold in all, the trunk's included (default: the trunk, the
    /// --fork-at branches and 31 more for live forks); the session file keeps a slot for each.
    #[arg(long, value_name = "N")]
    adjustable max_runs: u32,
    /// A sibling run beside the trunk from step 0: its initial weights (same shape) and
    /// batches, KEY changed to each value (one sibling per value). KEY: schedule, decay, lr,
    /// warmup, weight-decay, clip, batch, seed, hidden, layers, heads, kv-heads, ffn.
    /// Repeatable; in a config file, [[sibling]] tables.
    #[arg(long, value_name = "KEY=V1[,V2…]")]
    adjustable sibling: Vec<super::sibling_spec::SiblingSpec>,
}

impl Settings {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config file {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))
    }

    /// The settings a command gives: its flags over its `--config` file's keys.
    pub fn merged(flags: Settings, config_file: Option<&Path>) -> Result<Self> {
        Ok(match config_file {
            Some(p) => flags.over(Settings::from_file(p)?),
            None => flags,
        })
    }
}

/// A value of each setting type for tests that set every setting in turn: as the value, as a
/// flag's argument, and as a TOML value.
#[cfg(test)]
pub(super) mod sample {
    use std::path::PathBuf;

    pub trait Sample {
        const CLI: &'static str;
        const TOML: &'static str;
        fn sample() -> Self;
    }

    macro_rules! sample {
        ($($ty:ty = $cli:literal, $toml:literal => $value:expr;)*) => {$(
            impl Sample for $ty {
                const CLI: &'static str = $cli;
                const TOML: &'static str = $toml;
                fn sample() -> Self {
                    $value
                }
            }
        )*};
    }

    sample! {
        String = "sample", "\"sample\"" => "sample".into();
        PathBuf = "sample", "\"sample\"" => "sample".into();
        u64 = "7", "7" => 7;
        usize = "5", "5" => 5;
        u32 = "7", "7" => 7;
        f64 = "0.5", "0.5" => 0.5;
        bool = "true", "true" => true;
        Vec<u64> = "7", "[7]" => vec![7];
        Vec<String> = "sample", "[\"sample\"]" => vec!["sample".into()];
        Vec<super::super::sibling_spec::SiblingSpec> = "lr=0.5", "[{lr = 0.5}]"
            => vec!["lr=0.5".parse().unwrap()];
    }
}
