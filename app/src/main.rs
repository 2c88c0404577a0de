//! `wsdscope`: the command-line entry point. Parses, dispatches to a mode (the `wsdscope`
//! library), and turns errors into one clear line on stderr and a non-zero exit.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use wsdscope::cli::{Cli, Command, TokenizerCommand};
use wsdscope::{modes, tui};

/// mimalloc keeps freed large blocks for reuse; glibc's malloc unmaps them, and with several
/// threads every unmap is a TLB shootdown across cores (~15% of a 2-thread `tiny` step).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    process_setup();
    let cli = Cli::try_parse().unwrap_or_else(|e| match e.kind() {
        // A value outside what a flag allows: one line naming it and the allowed ones.
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            eprintln!("{}", one_line(&e.render().to_string()));
            std::process::exit(2);
        }
        _ => e.exit(),
    });
    tui::set_monochrome(
        cli.color
            .monochrome(std::env::var("NO_COLOR").ok().as_deref()),
    );
    let result = match cli.command {
        Command::Run(a) => modes::run::run(*a),
        Command::Record(a) => modes::record::run(*a),
        Command::Replay(a) => modes::replay::run(a),
        Command::Attach(a) => modes::attach::run(a),
        Command::History(a) => modes::attach::history(a),
        Command::Bench(a) => modes::bench::run(a).map(|_| ExitCode::SUCCESS),
        Command::Inspect(a) => modes::inspect::run(a).map(|_| ExitCode::SUCCESS),
        Command::Plot(a) => modes::plot::run(a).map(|_| ExitCode::SUCCESS),
        Command::Export(a) => modes::export::run(a).map(|_| ExitCode::SUCCESS),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "wsdscope",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Presets => {
            print_presets();
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokenizer(TokenizerCommand::Train { file, vocab, out }) => {
            wsdscope_trainer::data::tokenizer::train(&file, vocab, &out)
                .map(|n| {
                    eprintln!("wrote {} ({n} tokens)", out.display());
                    ExitCode::SUCCESS
                })
                .map_err(Into::into)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

/// clap's rendering of a usage error as one line: its first line, then its notes (the
/// allowed values, a suggestion), without the pointer to `--help`.
fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Process-wide settings made once, before any thread starts.
fn process_setup() {
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE action (terminate quietly, as `head` expects of a
    // pipe writer) before any thread exists; Rust's runtime had set it to ignore.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes glibc's allocator and is called before any allocation-heavy
    // work or other thread. candle allocates a fresh buffer per op; above glibc's default
    // 128 KiB threshold each one is a new mmap whose pages fault in and are unmapped again.
    // Keeping large buffers on the heap reuses them (about 10% faster steps here).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn print_presets() {
    println!(
        "{:<14} {:>15} {:>15}  shape (hidden/ffn/heads/kv/layers, vocab)",
        "preset", "params", "non-embedding"
    );
    for p in wsdscope_trainer::presets() {
        let m = &p.model;
        println!(
            "{:<14} {:>15} {:>15}  {}/{}/{}/{}/{}, {}  — {}",
            p.name,
            tui::format::grouped(m.total_params()),
            tui::format::grouped(m.non_embedding_params()),
            m.hidden,
            m.ffn,
            m.heads,
            m.kv_heads,
            m.layers,
            m.vocab,
            p.about
        );
    }
}
