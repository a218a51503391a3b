//! `cargo xtask`: xdpboot's developer tasks (the alias is in `.cargo/config.toml`).
//!
//! One module per subcommand; add a variant to [`Command`] and a module beside `setup.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_tftp;
mod lab;
mod setup;
mod test;

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
    /// Run every test (the README's second command and what CI runs): installs what is
    /// missing, then cargo fmt --check, clippy -D warnings, and cargo test --workspace.
    Test(test::Args),
    /// Install, build and run xdpboot with its embedded default (the README's first command):
    /// on --interface IF for real, or else in a lab of network namespaces beside a site DHCP
    /// server, showing what each kind of client is told.
    Run(lab::Args),
    /// Benchmark: fetch a loader over TFTP from xdpboot and dnsmasq, side by side.
    BenchTftp(bench_tftp::Args),
}

/// The workspace's root directory (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is a workspace member")
        .to_path_buf()
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup(args) => setup::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Run(args) => lab::run(&args),
        Command::BenchTftp(args) => bench_tftp::run(&args),
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
