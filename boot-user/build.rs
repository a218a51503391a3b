//! Builds the XDP program (the `boot-ebpf` crate) for the BPF target with aya-build, as
//! aya-template does, and leaves the object in `$OUT_DIR/boot-ebpf`, where `src/net/xdp.rs`
//! embeds it.
//!
//! aya-build runs `rustup run nightly cargo build -Z build-std=core --target bpfel-unknown-none`,
//! which needs rustup, the nightly toolchain with `rust-src`, and `bpf-linker` on PATH. Each is
//! checked first, so a missing one is reported by name with the command that installs it,
//! rather than as a linker trace from the inner build.
//!
//! `AYA_BUILD_SKIP=1` skips the BPF build (clippy, hosts without the toolchain): `$OUT_DIR/boot-ebpf`
//! is then an empty placeholder and the XDP backend fails at start-up saying so.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// The crate holding the XDP program; its binary target names the object in `OUT_DIR`.
const EBPF_PACKAGE: &str = "boot-ebpf";
/// The toolchain aya-build runs the BPF build with (`rustup run <this> cargo …`).
const EBPF_TOOLCHAIN: &str = "nightly";
/// The linker rustc uses for the BPF targets.
const BPF_LINKER: &str = "bpf-linker";
/// aya-build's own switch, kept with the same meaning.
const AYA_BUILD_SKIP: &str = "AYA_BUILD_SKIP";
/// What installs every prerequisite (xtask/src/setup.rs).
const SETUP_COMMAND: &str = "cargo xtask setup";

fn main() -> ExitCode {
    println!("cargo:rerun-if-env-changed={AYA_BUILD_SKIP}");
    let result = if skip_requested() {
        write_placeholder()
    } else if let Err(missing) = check_prerequisites() {
        eprintln!(
            "\nerror: cannot build xdpboot's XDP program ({EBPF_PACKAGE}): {missing}.\n\
             \n    Install the eBPF toolchain with:  {SETUP_COMMAND}\n\
             \n    (To build without the XDP program, e.g. for clippy or the UDP backend only, \
             set {AYA_BUILD_SKIP}=1.)\n"
        );
        return ExitCode::FAILURE;
    } else {
        build_ebpf()
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Same test as aya-build's: `AYA_BUILD_SKIP` is `1` or `true`.
fn skip_requested() -> bool {
    env::var_os(AYA_BUILD_SKIP)
        .is_some_and(|value| value == "1" || value.eq_ignore_ascii_case("true"))
}

fn out_dir() -> anyhow::Result<PathBuf> {
    env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("OUT_DIR is not set (not run by cargo?)"))
}

/// An empty object where the real one would be, so `include_bytes_aligned!` still compiles;
/// `net::xdp` recognises it and refuses to load.
fn write_placeholder() -> anyhow::Result<()> {
    let path = out_dir()?.join(EBPF_PACKAGE);
    fs::write(&path, []).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "cargo:warning={AYA_BUILD_SKIP} is set: xdpboot is built without its XDP program \
         (the XDP backend will refuse to start)"
    );
    Ok(())
}

/// The first missing prerequisite of the BPF build, as a phrase naming it.
fn check_prerequisites() -> Result<(), String> {
    if find_on_path("rustup").is_none() {
        return Err(format!(
            "rustup is not on PATH (the XDP program is built with the {EBPF_TOOLCHAIN} \
             toolchain through `rustup run`)"
        ));
    }
    let sysroot = Command::new("rustup")
        .args(["run", EBPF_TOOLCHAIN, "rustc", "--print", "sysroot"])
        // Never download a toolchain from a build script: a newer nightly would not match
        // bpf-linker's LLVM anyway.
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let Some(sysroot) = sysroot else {
        return Err(format!(
            "the Rust {EBPF_TOOLCHAIN} toolchain is not installed"
        ));
    };
    // `-Z build-std=core` compiles core from the toolchain's rust-src component.
    if !sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file()
    {
        return Err(format!(
            "the rust-src component of the {EBPF_TOOLCHAIN} toolchain is not installed"
        ));
    }
    // `rustup run` puts cargo's bin directory first on PATH for the inner build, so a
    // bpf-linker there is found even when the outer PATH lacks it.
    let cargo_bin = cargo_home().map(|home| home.join("bin"));
    let linker = find_on_path(BPF_LINKER).or_else(|| {
        let candidate = cargo_bin.as_ref()?.join(BPF_LINKER);
        is_executable(&candidate).then_some(candidate)
    });
    let Some(linker) = linker else {
        let cargo_bin = cargo_bin.map_or_else(String::new, |dir| format!(" or {}", dir.display()));
        return Err(format!(
            "{BPF_LINKER} is not installed (not on PATH{cargo_bin})"
        ));
    };
    // A bpf-linker whose libLLVM was removed is found but cannot link.
    let runs = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !runs {
        return Err(format!(
            "{} is installed but does not run (is its LLVM still installed?)",
            linker.display()
        ));
    }
    Ok(())
}

/// Cargo's home, where `cargo install` puts binaries in `bin/` (as rustup finds it).
fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
}

/// The first executable file called `name` in PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn build_ebpf() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let package = packages
        .into_iter()
        .find(|package| package.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("package {EBPF_PACKAGE} is not in the workspace"))?;
    let root_dir = package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", package.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
