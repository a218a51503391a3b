//! `cargo xtask`: xdpboot's developer tasks (the alias is in `.cargo/config.toml`).
//!
//! One module per subcommand; add a variant to [`Command`] and a module beside `setup.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod setup;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "xdpboot's developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install everything building and testing xdpboot needs on a Debian 12 machine: LLVM for
    /// bpf-linker, rust-src for the nightly toolchain, bpf-linker itself, and the test tools.
    /// Safe to run again: what is installed is left alone.
    Setup(setup::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup(args) => setup::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The cause chain on one line; a backtrace says nothing useful to the person
            // running a task.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
