//! `cargo xtask test`: the README's second command and what CI runs. Installs what is missing,
//! then checks formatting and lints and runs every test in the workspace: unit, golden-packet,
//! BPF_PROG_TEST_RUN and namespace integration tests (these need root, as CI has).

use std::process::Command;

use anyhow::{Context as _, ensure};

use crate::{fuzz, setup, workspace_root};

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECONDS: u64 = 10;

#[derive(clap::Args)]
pub struct Args {
    /// Skip installing prerequisites (they must already be there).
    #[arg(long)]
    no_setup: bool,
    /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
    #[arg(last = true)]
    cargo_test_args: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !args.no_setup {
        setup::install()?;
    }
    cargo("fmt", &["fmt", "--all", "--", "--check"])?;
    println!("[test] module cycles (cargo xtask modules)");
    crate::modules::check(&crate::modules::Graph::read(
        &workspace_root().join("boot-user/src"),
    )?)?;
    cargo(
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The integration tests run the daemon binary of the same profile.
    cargo("build", &["build", "--package", "boot-user", "--bins"])?;
    // The flood test judges the daemon as it ships (release).
    cargo(
        "build --release",
        &[
            "build",
            "--release",
            "--package",
            "boot-user",
            "--bin",
            "xdpboot",
        ],
    )?;
    let mut test: Vec<&str> = vec!["test", "--workspace", "--no-fail-fast"];
    if !args.cargo_test_args.is_empty() {
        test.push("--");
        test.extend(args.cargo_test_args.iter().map(String::as_str));
    }
    cargo("test", &test)?;
    // Each fuzz target briefly, so they keep building and the seed corpus keeps passing;
    // long runs are `cargo xtask fuzz --seconds 1800`.
    for target in fuzz::TARGETS {
        let run = fuzz::run_target(target, FUZZ_SECONDS, 0)?;
        ensure!(!run.crashed, "fuzz target {target} crashed");
        println!(
            "[test] fuzz {target}: {} executions, no crash",
            run.executions
        );
    }
    println!("[test] all passed");
    Ok(())
}

fn cargo(step: &str, args: &[&str]) -> anyhow::Result<()> {
    println!("[test] cargo {}", args.join(" "));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {step}"))?;
    ensure!(status.success(), "cargo {step} failed ({status})");
    Ok(())
}
