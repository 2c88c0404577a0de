//! `wsdscope`: the command-line entry point. Parses, dispatches to a mode, and turns errors
//! into one clear line on stderr and a non-zero exit.

mod cli;
mod modes;
mod progress;
mod settings;
mod threads;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, TokenizerCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(a) => modes::record::run(*a),
        Command::Bench(a) => modes::bench::run(a).map(|_| ExitCode::SUCCESS),
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
            modes::record::group(m.total_params()),
            modes::record::group(m.non_embedding_params()),
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
