//! `cargo xtask`: xdpboot's developer tasks (the alias is in `.cargo/config.toml`).
//!
//! One module per subcommand; add a variant to [`Command`] and a module beside `setup.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_dhcp;
mod bench_dhcp6;
mod bench_http;
mod bench_tftp;
mod bench_xdp;
mod fuzz;
mod lab;
mod loadgen;
mod loadtest;
mod modules;
mod package;
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
    /// Install, build, and boot real firmware in QEMU through xdpboot (the README's first
    /// command): a lab of network namespaces with a site DHCP server beside xdpboot; or, with
    /// --interface IF, run xdpboot for real there.
    Run(lab::Args),
    /// Load-test a proxy-DHCP server: PXE DISCOVERs from many simulated clients at a set rate
    /// (broadcast as ROMs send them, or relayed), OFFERs matched by xid; prints offers/s, loss
    /// and p50/p99/max DISCOVER→OFFER latency. Bounded by --count and --duration.
    Loadgen(loadgen::Args),
    /// Boot storm: N simulated nodes, each with its own MAC, through the whole chain (PXE
    /// DISCOVER, 4011 REQUEST, TFTP loader, iPXE DHCP, HTTP script, kernel, shared initrd,
    /// overlay) against xdpboot in network namespaces; per stage completions, failures,
    /// rate and latency, the server's CPU and peak RSS, and what limited the storm
    /// (generator, server, or neither); then a costing pass prints each stage's CPU per node.
    /// --against dnsmasq+nginx runs the same storm against dnsmasq (proxy DHCP, TFTP) and
    /// nginx in the same run. --instances N runs N xdpboot instances on the nodes' segment
    /// (--kill-one-after kills one midway, --prometheus has Prometheus scrape them and checks
    /// its sums). Runs an optimized build of itself. Needs root.
    Loadtest(loadtest::Args),
    /// Benchmark: ns per packet of the XDP program's decision for boot and non-boot frames
    /// (BPF_PROG_TEST_RUN with a repeat count). Needs root and the eBPF toolchain.
    BenchXdp(bench_xdp::Args),
    /// Benchmark: proxy offers/s, DISCOVER→OFFER latency and CPU per offer at saturation
    /// through veth, for xdpboot's XDP (tee, redirect) and UDP backends and dnsmasq in proxy
    /// mode, with one load generator in one run; plus a perfdhcp cross-check. Needs root.
    BenchDhcp(bench_dhcp::Args),
    /// Benchmark: DHCPv6 boot Advertises/s and CPU per Advertise through veth, for xdpboot's XDP
    /// (tee) and UDP backends and dnsmasq as a full DHCPv6 server with option6:bootfile-url,
    /// one generator of EDK2-shaped Solicits, one run. Needs root.
    BenchDhcp6(bench_dhcp6::Args),
    /// Benchmark: HTTP(S) downloads of a large image from xdpboot and nginx, side by side.
    BenchHttp(bench_http::Args),
    /// Benchmark: fetch a loader over TFTP from xdpboot and dnsmasq, side by side.
    BenchTftp(bench_tftp::Args),
    /// Build the Debian package (cargo deb, installing cargo-deb if missing) into
    /// target/debian/, list its files, and check its systemd unit with systemd-analyze
    /// (verify, and the exposure score of `security --offline=true`).
    Package(package::Args),
    /// Check that the daemon's modules form no import cycle (what `cargo xtask test` runs);
    /// --graph prints every edge between peer modules.
    Modules(modules::Args),
    /// Run the cargo-fuzz targets (DHCP, TFTP request, HTTP path, template, overlay, wire)
    /// for a bounded time each; prints executions and crashes.
    Fuzz(fuzz::Args),
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
        Command::Loadgen(args) => loadgen::run_cli(&args),
        Command::Loadtest(args) => loadtest::run(&args),
        Command::BenchXdp(args) => bench_xdp::run(&args),
        Command::BenchDhcp(args) => bench_dhcp::run(&args),
        Command::BenchDhcp6(args) => bench_dhcp6::run(&args),
        Command::BenchTftp(args) => bench_tftp::run(&args),
        Command::Package(args) => package::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Modules(args) => modules::run(&args),
        Command::BenchHttp(args) => bench_http::run(&args),
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

/// Set in the environment of the optimized xtask that [`reexec_optimized`] starts.
const OPTIMIZED_ENV: &str = "XTASK_OPTIMIZED";

/// In a debug build of xtask (what `cargo xtask` runs), builds an optimized one (`cargo build
/// --release -p xtask`) and replaces this process with it, same arguments; in an optimized
/// build, returns. For the load generators: a debug build spends about twice the CPU per
/// packet (tokio and the protocol code unoptimized) and becomes the run's ceiling.
fn reexec_optimized(tag: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::process::CommandExt as _;
    if !cfg!(debug_assertions) || std::env::var_os(OPTIMIZED_ENV).is_some() {
        return Ok(());
    }
    println!(
        "[{tag}] building an optimized load generator (cargo build --release -p xtask): a \
         debug build would be the storm's ceiling"
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "xtask"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    anyhow::ensure!(status.success(), "building xtask failed ({status})");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let error = std::process::Command::new(target.join("release").join("xtask"))
        .args(std::env::args_os().skip(1))
        .env(OPTIMIZED_ENV, "1")
        .exec();
    Err(error).context("running the optimized xtask")
}

/// `cargo build --release -p boot-user --bin xdpboot` (what the benchmarks measure); the
/// binary's path. `tag` names the command in the progress line.
fn build_xdpboot_release(tag: &str) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    println!("[{tag}] building xdpboot (cargo build --release -p boot-user --bin xdpboot)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "boot-user", "--bin", "xdpboot"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    anyhow::ensure!(status.success(), "building xdpboot failed ({status})");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("release").join("xdpboot"))
}
