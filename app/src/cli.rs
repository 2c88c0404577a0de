//! The command line: clap definitions only. Turning flags into a validated `RunConfig`
//! happens in `settings`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::Settings;

#[derive(Parser, Debug)]
#[command(
    name = "wsdscope",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WSDSCOPE_COMMIT"), ")"),
    about = "See and steer the dynamics of a Warmup-Stable-Decay training run",
    long_about = "wsdscope trains a MiniCPM-architecture language model under a WSD schedule and streams \
                  its dynamics: loss, gradient and update norms, validation loss, phases."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Colour: auto (the default: none when NO_COLOR is set and not empty), always or never.
    /// Without colour the TUI draws in the terminal's own colours, selection reversed.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

/// `--color`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to draw without colour, given the value of `NO_COLOR` (no-color.org: set and
    /// not empty means no colour).
    pub fn monochrome(self, no_color: Option<&str>) -> bool {
        match self {
            ColorChoice::Always => false,
            ColorChoice::Never => true,
            ColorChoice::Auto => no_color.is_some_and(|v| !v.is_empty()),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train in a full-screen terminal UI (the embedded default without flags), recording the
    /// session like `record`.
    Run(Box<RunArgs>),
    /// Train headless: progress on stderr, optionally every event as JSON lines on stdout.
    Record(Box<RecordArgs>),
    /// Open a recorded session in the terminal UI with a time cursor (play, scrub, jump).
    Replay(ReplayArgs),
    /// Open the live terminal UI on a run another process is training (`record`, `run`):
    /// follow it and steer it; `q` detaches and leaves it running.
    Attach(AttachArgs),
    /// Print a session's first events as JSON lines, waiting for its writer (what a run's
    /// control endpoint sends an attaching viewer to catch up).
    #[command(hide = true)]
    History(HistoryArgs),
    /// Summarise a session file: config, runs, final losses, durations.
    Inspect(InspectArgs),
    /// Draw a session's curves to a PNG or SVG figure.
    Plot(PlotArgs),
    /// Bring a checkpoint or a session to other tools: a Hugging Face Llama folder that
    /// `transformers` loads, TensorBoard event files, or one CSV per run.
    Export(ExportArgs),
    /// Measure training throughput and peak memory for a model shape (or, with --kernels,
    /// check the fused kernels against their plain-op twins).
    Bench(BenchArgs),
    /// List the model presets with their parameter counts.
    Presets,
    /// Tokenizer utilities.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Print shell completions for wsdscope, e.g.
    /// `wsdscope completions bash > ~/.local/share/bash-completion/completions/wsdscope`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
}

/// What to train and where to record it: every flag `record` and `run` share.
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    #[command(flatten)]
    pub settings: Settings,

    /// A TOML file with the same keys as the flags (flags given on the command line win).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,

    /// Continue the run saved in this checkpoint directory (or the newest one under it).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,

    /// The session file to record into (must not exist). Default: sessions/<timestamp>.h5.
    #[arg(long, value_name = "FILE.h5", conflicts_with = "no_record")]
    pub out: Option<PathBuf>,

    /// Train without writing a session file.
    #[arg(long)]
    pub no_record: bool,

    /// Print the resolved configuration and parameter counts, then exit without training.
    #[arg(long)]
    pub dry_run: bool,

    /// Also accept `wsdscope attach` over TCP on this address (e.g. 127.0.0.1:7070; port 0
    /// picks one), with a token printed at start. Without it only the Unix socket
    /// NAME.h5.sock next to the session file is served.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,

    /// Serve no control socket next to the session file (nobody can attach, unless --listen).
    #[arg(long)]
    pub no_socket: bool,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct RecordArgs {
    #[command(flatten)]
    pub train: TrainArgs,

    /// Stream every event to stdout as one JSON object per line.
    #[arg(long)]
    pub jsonl: bool,
}

/// `run` takes every `record` flag except `--jsonl` (the UI owns stdout).
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct RunArgs {
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// A session file written by `record` or `run`.
    pub file: PathBuf,
    /// More session files, replayed together: their runs side by side, labelled FILE:RUN,
    /// the later files' trunks shown like siblings of the first's.
    #[arg(conflicts_with = "follow")]
    pub more: Vec<PathBuf>,
    /// Keep up with a session that a headless `record` is still writing: re-read it every
    /// half second and keep the cursor at the end (until you scrub back; `e` follows again).
    #[arg(long)]
    pub follow: bool,
    /// The step charts' x axis to start with: steps, tokens (runs with other batches meet at
    /// equal data) or time (each run's training seconds); `x` in the TUI cycles them.
    #[arg(long, value_enum, default_value_t = XAxis::Steps)]
    pub x: XAxis,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The run's control socket (NAME.h5.sock next to its session file), or HOST:PORT of a
    /// run started with --listen.
    #[arg(value_name = "SOCKET|HOST:PORT")]
    pub target: String,
    /// The token a run started with --listen printed (TCP only).
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The session file a run is writing.
    pub file: PathBuf,
    /// How many events (from the first) to print.
    #[arg(long)]
    pub until: u64,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct BenchArgs {
    /// Model preset (shape overrides below apply on top).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Model width (hidden size), instead of the preset's.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Decoder layers, instead of the preset's.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Attention heads (must divide --hidden), instead of the preset's.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Key/value heads (must divide --heads; fewer than --heads is GQA), instead of the preset's.
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Feed-forward (SwiGLU) width, instead of the preset's.
    #[arg(long)]
    pub ffn: Option<usize>,
    /// Vocabulary size, instead of the preset's.
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Tokens per sequence (default 128).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Sequences per step (default 16).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Worker threads (default: `RAYON_NUM_THREADS` when set, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu (default), cuda or cuda:N; with --kernels also cuda-emu (the CUDA kernels on the CPU
    /// executor).
    #[arg(long)]
    pub device: Option<String>,
    /// f32 (default), or bf16 mixed precision (f32 master weights, bf16 passes; CUDA only).
    #[arg(long, value_name = "f32|bf16")]
    pub precision: Option<String>,
    /// The device's peak dense FLOP/s in TFLOP/s (e.g. 790 for bf16 on an H200): also prints
    /// the model FLOP utilisation.
    #[arg(long, value_name = "TFLOP/S")]
    pub peak_tflops: Option<f64>,
    /// Instead of training: run every fused kernel (forward and backward, AdamW, reductions)
    /// against its plain-op twin on --device in each dtype it takes there, print the worst
    /// relative errors and fail if one is over its tolerance. --device cuda-emu runs the
    /// CUDA kernels on the CPU executor (needs a C++ compiler: c++ or $CXX) in f32 and bf16.
    #[arg(long)]
    pub kernels: bool,
    /// Measured steps.
    #[arg(long, default_value_t = 20)]
    pub steps: u64,
    /// Steps run before measuring.
    #[arg(long, default_value_t = 5)]
    pub warmup_steps: u64,
    /// Also measure the engine with this many decay branches beside the trunk (a list, e.g.
    /// 0,1,3): total tokens/s of all runs and the latency of a fork.
    #[arg(long, value_name = "N,…", value_delimiter = ',')]
    pub branches: Option<Vec<usize>>,
    /// Also measure the probes: the per-step geometry's overhead (steps with and without it,
    /// in alternation) and the cost of each periodic probe in training steps.
    #[arg(long)]
    pub probes: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A session file written by `record`.
    pub file: PathBuf,
    /// More session files: then one table compares every run of every file (final and best
    /// val loss, the difference from the first file's trunk, the val loss at matched tokens).
    #[arg(conflicts_with = "events")]
    pub more: Vec<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long, conflicts_with = "events")]
    pub json: bool,
    /// Print the session's whole event stream, one JSON object per line: exactly what
    /// `record --jsonl` printed while it ran.
    #[arg(long)]
    pub events: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// What to export: a checkpoint directory (`--format hf`: a `step-N` directory, or a
    /// checkpoint directory whose latest step is taken) or a session file (`tensorboard`,
    /// `csv`; a session still being written is read as far as it goes).
    pub input: PathBuf,
    /// The target format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The directory to write. It must not exist or be empty, unless --force; it appears only
    /// once complete.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace a non-empty --out directory.
    #[arg(long)]
    pub force: bool,
}

/// `export --format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// A Hugging Face `LlamaForCausalLM` folder with the μP scalings folded into the weights.
    Hf,
    /// TensorBoard event files, one run directory per wsdscope run.
    Tensorboard,
    /// One tidy CSV per run: step, tokens, phase and every scalar.
    Csv,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// A session file written by `record`.
    pub file: PathBuf,
    /// More session files, overlaid in one figure (per-step metrics only); runs are labelled
    /// FILE:RUN.
    pub more: Vec<PathBuf>,
    /// The x axis: steps, tokens (sessions with other batch sizes meet at equal data) or
    /// time (wall seconds of training, a branch continuing its parent's clock).
    #[arg(long, value_enum, default_value_t = XAxis::Steps)]
    pub x: XAxis,
    /// The figure to write: FIG.png or FIG.svg.
    #[arg(long, value_name = "FIG.png|FIG.svg")]
    pub out: PathBuf,
    /// What to draw. A per-step metric: loss (with val loss), val_loss, lr, grad_norm,
    /// update_norm, param_norm, tokens_per_s, step_ms, or the step geometry grad_cos, d1, d2,
    /// curvature. A probe scalar over steps: probe.<probe>.<scalar> (e.g.
    /// probe.sharpness.lambda_max). A probe figure: sharpness (λ_max against the 38/η
    /// stability line), noise (gradient noise scale against the batch), landscape (2-D loss
    /// slice at --step), slice (1-D slices at --step), interp (parent → branch interpolations).
    #[arg(long, default_value = "loss")]
    pub metric: String,
    /// Runs to draw, e.g. 0,2 (default: all). For landscape and slice: the first one is drawn
    /// (default: the trunk).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub runs: Option<Vec<u32>>,
    /// The step of the probe that --metric landscape or slice draws (default: the run's latest
    /// one of that kind).
    #[arg(long, value_name = "S")]
    pub step: Option<u64>,
    /// Logarithmic y axis (the default for --metric sharpness and noise).
    #[arg(long, conflicts_with = "linear_y")]
    pub log_y: bool,
    /// Linear y axis for --metric sharpness and noise (log-y by default).
    #[arg(long)]
    pub linear_y: bool,
    /// EMA smoothing factor in (0, 1]; 1 draws the raw curve only (default 0.1).
    #[arg(long, value_name = "ALPHA", default_value_t = 0.1)]
    pub smooth: f64,
}

/// What `plot --x` draws against, and the TUI's step charts (`replay --x`, key `x`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XAxis {
    #[default]
    Steps,
    Tokens,
    Time,
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn no_color_turns_colour_off_unless_always_is_asked_for() {
        use super::ColorChoice::*;
        assert!(!Auto.monochrome(None));
        assert!(!Auto.monochrome(Some("")), "an empty NO_COLOR is not set");
        assert!(Auto.monochrome(Some("1")));
        assert!(Never.monochrome(None));
        assert!(!Always.monochrome(Some("1")));
    }

    /// Every argument of every subcommand says what it is for in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in c.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "wsdscope", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
    /// `replay --x` picks the step charts' first x axis; a wrong one is named with the choices.
    #[test]
    fn replay_takes_the_first_x_axis() {
        use clap::Parser;

        use super::{Command, XAxis};
        let axis = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Replay(a)) => Ok(a.x),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(axis(&["wsdscope", "replay", "a.h5"]), Ok(XAxis::Steps));
        assert_eq!(
            axis(&["wsdscope", "replay", "a.h5", "b.h5", "--x", "tokens"]),
            Ok(XAxis::Tokens)
        );
        let e = axis(&["wsdscope", "replay", "a.h5", "--x", "epochs"]).unwrap_err();
        assert!(
            e.contains("epochs") && e.contains("tokens") && e.contains("time"),
            "{e}"
        );
    }
}
