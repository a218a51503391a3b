//! `cargo xtask fuzz`: runs the `cargo fuzz` targets of `boot-user/fuzz` (DHCP, DHCPv6, TFTP
//! request, HTTP path, template, overlay, wire) for a bounded time or number of executions each,
//! and prints executions and crashes per target. `cargo xtask test` runs each briefly so they keep
//! building; long runs (results in BENCHMARKS.md) use `--seconds 1800` or `--runs 10000000`.
//!
//! The targets build with the nightly toolchain and sanitizers, without the XDP object
//! (`AYA_BUILD_SKIP=1`): they exercise the parsers, not the kernel side.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};

use crate::workspace_root;

/// Every target, in the order they run.
pub const TARGETS: &[&str] = &[
    "dhcp",
    "dhcp6",
    "tftp_request",
    "http_path",
    "template",
    "overlay",
    "wire",
];

#[derive(clap::Args)]
pub struct Args {
    /// Targets to run (default: all).
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// Wall-clock limit per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Execution limit per target (0: none, the time limit decides).
    #[arg(long, default_value_t = 0)]
    runs: u64,
}

/// One target's result.
pub struct FuzzRun {
    pub target: String,
    pub executions: u64,
    pub seconds: f64,
    pub crashed: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let targets: Vec<String> = if args.targets.is_empty() {
        TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        args.targets.clone()
    };
    for target in &targets {
        if !TARGETS.contains(&target.as_str()) {
            bail!(
                "unknown fuzz target {target}; known: {}",
                TARGETS.join(", ")
            );
        }
    }
    let mut results = Vec::new();
    for target in &targets {
        results.push(run_target(target, args.seconds, args.runs)?);
    }
    println!(
        "[fuzz] {:<14} {:>14} {:>9} {:>8}",
        "target", "executions", "seconds", "crashes"
    );
    for r in &results {
        println!(
            "[fuzz] {:<14} {:>14} {:>9.0} {:>8}",
            r.target,
            r.executions,
            r.seconds,
            if r.crashed { "YES" } else { "0" }
        );
    }
    let crashed: Vec<&str> = results
        .iter()
        .filter(|r| r.crashed)
        .map(|r| r.target.as_str())
        .collect();
    ensure!(
        crashed.is_empty(),
        "fuzz targets crashed: {} (inputs in boot-user/fuzz/artifacts/)",
        crashed.join(", ")
    );
    Ok(())
}

/// Runs one target; its corpus persists in boot-user/fuzz/corpus/<target> between runs.
pub fn run_target(target: &str, seconds: u64, runs: u64) -> anyhow::Result<FuzzRun> {
    println!(
        "[fuzz] {target}: up to {seconds} s{}",
        if runs > 0 {
            format!(" or {runs} runs")
        } else {
            String::new()
        }
    );
    let dir = workspace_root().join("boot-user");
    let mut command = Command::new("cargo");
    command
        .args(["+nightly", "fuzz", "run", target, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1");
    if runs > 0 {
        command.arg(format!("-runs={runs}"));
    }
    let started = Instant::now();
    let output = command
        .current_dir(&dir)
        .env("AYA_BUILD_SKIP", "1")
        .output()
        .with_context(|| {
            format!("running cargo fuzz run {target} (cargo xtask setup installs cargo-fuzz)")
        })?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // libFuzzer's final stats: "stat::number_of_executed_units: N".
    let executions = stderr
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let crashed = !output.status.success();
    if crashed {
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    Ok(FuzzRun {
        target: target.to_owned(),
        executions,
        seconds,
        crashed,
    })
}
