//! The `kiln` binary: serve models over HTTP, embed from the command line, fetch and inspect models.
#![forbid(unsafe_code)]

mod args;
mod args_keys;
mod cmd_bench;
mod cmd_embed;
mod cmd_fetch;
mod cmd_generate;
mod cmd_inspect;
mod cmd_keys;
mod cmd_serve;
mod model_source;

mod progress;
mod serve_auth;

use clap::Parser;

/// mimalloc serves the many short-lived buffers of a decode step (each layer's quantized
/// inputs, attention scratch, the logits) faster than glibc's allocator, whose large blocks
/// went back to the OS and faulted in again at every step (alternating runs in commit
/// 376da1f's message: 1.06-1.4x tokens/s; see `kiln_kernels::memory`).
#[global_allocator]
static ALLOCATOR: kiln_kernels::memory::MiMalloc = kiln_kernels::memory::MiMalloc;

fn main() -> std::process::ExitCode {
    kiln_kernels::memory::configure_mimalloc();
    let cli = args::Cli::parse();
    progress::init_logging(cli.log_format);
    let result = match cli.command {
        args::Command::Serve(a) => cmd_serve::run(a),
        args::Command::Embed(a) => cmd_embed::run(a),
        args::Command::Fetch(a) => cmd_fetch::run(a),
        args::Command::Inspect(a) => cmd_inspect::run(a),
        args::Command::Generate(a) => cmd_generate::run_generate(a),
        args::Command::Chat(a) => cmd_generate::run_chat(a),
        args::Command::Keys(a) => cmd_keys::run(a),
        args::Command::Bench(a) => cmd_bench::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
