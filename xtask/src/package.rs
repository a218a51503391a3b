//! `cargo xtask package`: the Debian package (GitHub issue 7). Installs cargo-deb if missing,
//! builds `target/debian/xdpboot_<version>_<arch>.deb` with `cargo deb -p boot-user` (a
//! release build; the XDP program is inside the binary), then checks the systemd unit the
//! package carries: `systemd-analyze verify` must have nothing to say, and the exposure score
//! of `systemd-analyze security --offline=true` is printed (the README reports it).
//! The metadata is `[package.metadata.deb]` in boot-user/Cargo.toml; the unit, the conffile
//! and the maintainer scripts are in boot-user/debian/. tests/package.rs runs the unit.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, ensure};
use boot_tests::debian::{self, Unpacked};

use crate::{setup, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Directory for the .deb (default: target/debian).
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Faster, lighter compression: a larger .deb, made in seconds.
    #[arg(long)]
    fast: bool,
    /// Print systemd-analyze security's whole table, not only the score.
    #[arg(short, long)]
    verbose: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    setup::cargo_deb(false)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/debian"));
    std::fs::create_dir_all(&output).with_context(|| format!("creating {}", output.display()))?;
    // cargo deb names the .deb by version; an older one beside it would be ambiguous.
    for old in std::fs::read_dir(&output)?.flatten() {
        let name = old.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!("{}_", debian::PACKAGE)) && name.ends_with(".deb") {
            std::fs::remove_file(old.path())?;
        }
    }
    step("cargo deb -p boot-user (release build)…");
    let mut build = debian::build_command(&output, args.fast);
    let status = build
        .status()
        .with_context(|| format!("starting {build:?}"))?;
    ensure!(status.success(), "cargo deb failed: {status}");
    let deb = debian::find_deb(&output)?;
    let size = deb.metadata()?.len();
    step(format!(
        "{} ({:.1} MB)",
        deb.display(),
        size as f64 / 1_000_000.0
    ));

    let unpacked = Unpacked::new(&deb)?;
    let contents = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .context("running dpkg-deb --contents")?;
    for line in String::from_utf8_lossy(&contents.stdout).lines() {
        // "-rwxr-xr-x 0/0 9935328 2026-11-25 00:00 ./usr/bin/xdpboot": files only.
        if line.starts_with('-')
            && let Some(path) = line.split_whitespace().last()
        {
            step(format!("  {}", path.trim_start_matches('.')));
        }
    }

    let analysis = debian::analyze(&unpacked)?;
    ensure!(
        analysis.verify.is_empty(),
        "systemd-analyze verify {} complains:\n{}",
        debian::UNIT_NAME,
        analysis.verify
    );
    step(format!(
        "systemd-analyze verify {}: clean",
        debian::UNIT_NAME
    ));
    if args.verbose {
        println!("{}", analysis.security);
    }
    step(format!(
        "systemd-analyze security --offline=true {}: exposure {:.1} {}",
        debian::UNIT_NAME,
        analysis.exposure,
        analysis.verdict
    ));
    Ok(())
}

fn step(text: impl AsRef<str>) {
    println!("[package] {}", text.as_ref());
}
