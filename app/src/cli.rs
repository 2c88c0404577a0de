//! The command line: clap definitions only. Turning flags into a validated `RunConfig`
//! happens in `settings`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::Settings;

#[derive(Parser, Debug)]
#[command(
    name = "wsdscope",
    version,
    about = "See and steer the dynamics of a Warmup-Stable-Decay training run",
    long_about = "wsdscope trains a MiniCPM-architecture language model under a WSD schedule and streams \
                  its dynamics: loss, gradient and update norms, validation loss, phases."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train headless: progress on stderr, optionally every event as JSON lines on stdout.
    Record(Box<RecordArgs>),
    /// Measure training throughput and peak memory for a model shape.
    Bench(BenchArgs),
    /// List the model presets with their parameter counts.
    Presets,
    /// Tokenizer utilities.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct RecordArgs {
    #[command(flatten)]
    pub settings: Settings,

    /// A TOML file with the same keys as the flags (flags given on the command line win).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,

    /// Continue the run saved in this checkpoint directory (or the newest one under it).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,

    /// Stream every event to stdout as one JSON object per line.
    #[arg(long)]
    pub jsonl: bool,

    /// Print the resolved configuration and parameter counts, then exit without training.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct BenchArgs {
    /// Model preset (shape overrides below apply on top).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long)]
    pub kv_heads: Option<usize>,
    #[arg(long)]
    pub ffn: Option<usize>,
    #[arg(long)]
    pub vocab: Option<usize>,
    #[arg(long)]
    pub seq: Option<usize>,
    #[arg(long)]
    pub batch: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Measured steps.
    #[arg(long, default_value_t = 20)]
    pub steps: u64,
    /// Steps run before measuring.
    #[arg(long, default_value_t = 5)]
    pub warmup_steps: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer on a text file and write a Hugging Face tokenizer.json.
    Train {
        /// UTF-8 text to learn merges from.
        file: PathBuf,
        /// Vocabulary size (at least 257: 256 bytes and one special token).
        #[arg(long)]
        vocab: usize,
        /// Where to write the tokenizer.
        #[arg(long, default_value = "tokenizer.json")]
        out: PathBuf,
    },
}
