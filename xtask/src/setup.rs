//! `cargo xtask setup`: installs the prerequisites of the build and the tests, idempotently,
//! printing one `[setup]` line per step. The recipe is DESIGN.md's "Toolchain recipe".
//!
//! boot-user's `build.rs` checks the same prerequisites before it builds the XDP program and
//! points here when one is missing.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

/// Debian packages `setup` installs, by group, in order. The one list to extend.
pub const APT_PACKAGES: &[(&str, &[&str])] = &[
    (
        // LLVM for building bpf-linker (its `llvm-22` feature links libLLVM-22).
        "eBPF toolchain",
        &[
            "llvm-22-dev",
            "libpolly-22-dev",
            "libzstd-dev",
            "zlib1g-dev",
        ],
    ),
    (
        // The Debian package (`cargo xtask package`, tests/package.rs): dpkg-shlibdeps for
        // its Depends, systemd-analyze to check its unit (systemd need not be running).
        "packaging",
        &["dpkg-dev", "systemd"],
    ),
    (
        // Peers, firmware clients and tools of the integration tests and the lab.
        "test tools",
        &[
            "qemu-system-x86",
            "ovmf",
            "ipxe-qemu",
            // arm64 machines of the lab: qemu-system-aarch64 and AAVMF, EDK2 for its `virt`.
            "qemu-system-arm",
            "qemu-efi-aarch64",
            // Debian 12's iPXE 2019 EFI build: the firmware test of initrd padding on EFI.
            "ipxe",
            "dnsmasq-base",
            "busybox-static",
            "cpio",
            "tcpdump",
            // perfdhcp, the yardstick of `cargo xtask bench-dhcp`.
            "kea-admin",
            // perf, to profile the daemon under `cargo xtask loadgen` (BENCHMARKS.md).
            "linux-perf",
            "nginx-light",
            // HTTP load generator of `cargo xtask bench-http`.
            "wrk",
            // Certificate checks in boot-user/tests/http.rs.
            "openssl",
            "tftp-hpa",
            "atftp",
            // The FAT disk of the UEFI local-boot firmware test (mformat, mmd, mcopy).
            "mtools",
            "curl",
            // The status page's headless-browser test (tests/observability.rs): Debian's
            // Chromium, driven by playwright-core on Node.js (npm deps in tests/browser/).
            "chromium",
            "nodejs",
            // The lab's initrd is a gzip-compressed cpio; `dpkg-deb` unpacks the Debian 13
            // firmware packages and the kernel package (tests/assets.rs).
            "gzip",
            "dpkg",
            // `cargo xtask run --keep`: a shell on a kept node's serial console socket.
            "socat",
            // Scale-out: Prometheus scraping every instance of a storm (`cargo xtask loadtest
            // --prometheus`, xtask/tests/storm.rs).
            "prometheus",
            // The virtualenvs that hold Ironic's wheel (tests/ironic.rs, see `ironic_venv`) and
            // kubernetes-validate (tests/kubernetes.rs, see `kubernetes_validate`).
            "python3-venv",
        ],
    ),
];

/// The toolchain boot-user's `build.rs` builds the XDP program with.
const EBPF_TOOLCHAIN: &str = "nightly";
/// The LLVM bpf-linker is built against; the nightly's LLVM must not be newer (a nightly on
/// LLVM 23 makes an LLVM-22 bpf-linker fail with `Invalid record`).
const LLVM_MAJOR: u32 = 22;
const LLVM_BIN_DIR: &str = "/usr/lib/llvm-22/bin";
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_FEATURE: &str = "llvm-22";
/// cargo-deb, which builds the Debian package; 3.8.0 needs rustc 1.85, so it builds on the
/// installed stable.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

#[derive(clap::Args)]
pub struct Args {
    /// Only report what is missing; install nothing. Exits non-zero if anything is missing.
    #[arg(long)]
    check: bool,
}

/// Installs whatever is missing; what `test` and `run` do first.
pub fn install() -> anyhow::Result<()> {
    run(&Args { check: false })
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    let mut apt_updated = false;
    for (group, packages) in APT_PACKAGES {
        if let Some(absent) = apt_group(group, packages, args.check, &mut apt_updated)? {
            missing.push(absent);
        }
    }
    let sysroot = nightly_toolchain()?;
    if let Some(absent) = rust_src(&sysroot, args.check)? {
        missing.push(absent);
    }
    if let Some(absent) = bpf_linker(args.check)? {
        missing.push(absent);
    }
    if let Some(absent) = cargo_deb(args.check)? {
        missing.push(absent);
    }
    if let Some(absent) = cargo_fuzz(args.check)? {
        missing.push(absent);
    }
    if let Some(absent) = boot_files(args.check)? {
        missing.push(absent);
    }
    if let Some(absent) = browser_test_deps(args.check)? {
        missing.push(absent);
    }
    if let Some(absent) = ironic_venv(args.check)? {
        missing.push(absent);
    }
    if let Some(absent) = kubernetes_validate(args.check)? {
        missing.push(absent);
    }
    if !missing.is_empty() {
        bail!(
            "missing: {}; run `cargo xtask setup` to install them",
            missing.join(", ")
        );
    }
    if args.check {
        step("check: everything is installed");
    } else {
        step("done: `cargo build -p boot-user` builds the XDP program");
    }
    Ok(())
}

fn step(text: impl AsRef<str>) {
    println!("[setup] {}", text.as_ref());
}

/// Installs the group's packages that are not installed yet. With `check_only`, returns what
/// is missing instead.
fn apt_group(
    group: &str,
    packages: &[&str],
    check_only: bool,
    apt_updated: &mut bool,
) -> anyhow::Result<Option<String>> {
    let absent: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !dpkg_installed(package))
        .collect();
    if absent.is_empty() {
        step(format!(
            "apt ({group}): {} (already installed)",
            packages.join(" ")
        ));
        return Ok(None);
    }
    if check_only {
        step(format!("apt ({group}): missing {}", absent.join(" ")));
        return Ok(Some(absent.join(" ")));
    }
    step(format!("apt ({group}): installing {}…", absent.join(" ")));
    if !*apt_updated {
        apt_get(&["update"])?;
        *apt_updated = true;
    }
    let mut install = vec!["install", "-y"];
    install.extend(&absent);
    apt_get(&install)?;
    let still_absent: Vec<&str> = absent
        .iter()
        .copied()
        .filter(|package| !dpkg_installed(package))
        .collect();
    ensure!(
        still_absent.is_empty(),
        "apt-get finished but these are still not installed: {}",
        still_absent.join(" ")
    );
    Ok(None)
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.ends_with(b" installed"))
}

/// `apt-get` with a lock timeout (another apt run on the machine is waited for, not fatal),
/// through sudo when not root.
fn apt_get(args: &[&str]) -> anyhow::Result<()> {
    let mut command = if is_root()? {
        Command::new("apt-get")
    } else {
        ensure!(
            find_on_path("sudo").is_some(),
            "installing Debian packages needs root, and sudo is not installed"
        );
        let mut sudo = Command::new("sudo");
        sudo.arg("apt-get");
        sudo
    };
    command
        .args(["-o", "DPkg::Lock::Timeout=900"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_command(&mut command)
}

fn is_root() -> anyhow::Result<bool> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("running `id -u`")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Checks the nightly toolchain is there and its LLVM is not newer than bpf-linker's; returns
/// its sysroot. It is not installed from here: a fresh `nightly` would be today's, whose LLVM
/// need not match.
fn nightly_toolchain() -> anyhow::Result<PathBuf> {
    let version = Command::new("rustup")
        .args(["run", EBPF_TOOLCHAIN, "rustc", "-vV"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .context("running rustup (is it installed and on PATH?)")?;
    if !version.status.success() {
        bail!(
            "the Rust {EBPF_TOOLCHAIN} toolchain is not installed, and setup does not fetch \
             one: it must be a nightly on LLVM {LLVM_MAJOR}, like bpf-linker (today's nightly \
             may be on a newer LLVM). See DESIGN.md, \"Toolchain recipe\""
        );
    }
    let version = String::from_utf8_lossy(&version.stdout);
    let field = |name: &str| {
        version
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("?")
            .to_owned()
    };
    let (release, llvm) = (field("release:"), field("LLVM version:"));
    let llvm_major: Option<u32> = llvm.split('.').next().and_then(|major| major.parse().ok());
    if llvm_major.is_some_and(|major| major > LLVM_MAJOR) {
        bail!(
            "the {EBPF_TOOLCHAIN} toolchain ({release}) uses LLVM {llvm}, newer than the LLVM \
             {LLVM_MAJOR} bpf-linker {BPF_LINKER_VERSION} is built with: linking would fail \
             with `Invalid record`. Install a nightly on LLVM {LLVM_MAJOR} as `{EBPF_TOOLCHAIN}`"
        );
    }
    step(format!(
        "rust {EBPF_TOOLCHAIN}: {release} (LLVM {llvm}) (already installed)"
    ));
    let sysroot = Command::new("rustup")
        .args(["run", EBPF_TOOLCHAIN, "rustc", "--print", "sysroot"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .context("running rustup")?;
    ensure!(
        sysroot.status.success(),
        "rustc +{EBPF_TOOLCHAIN} --print sysroot failed"
    );
    Ok(PathBuf::from(
        String::from_utf8_lossy(&sysroot.stdout).trim(),
    ))
}

/// rust-src, which `-Z build-std=core` compiles `core` from for the BPF target.
fn rust_src(sysroot: &Path, check_only: bool) -> anyhow::Result<Option<String>> {
    let installed = || {
        sysroot
            .join("lib/rustlib/src/rust/library/core/Cargo.toml")
            .is_file()
    };
    if installed() {
        step(format!("rust-src for {EBPF_TOOLCHAIN} (already installed)"));
        return Ok(None);
    }
    if check_only {
        step(format!("rust-src for {EBPF_TOOLCHAIN}: missing"));
        return Ok(Some(format!("rust-src for {EBPF_TOOLCHAIN}")));
    }
    step(format!("rust-src for {EBPF_TOOLCHAIN}: installing…"));
    run_command(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))?;
    ensure!(
        installed(),
        "rustup reported success but rust-src is not in {}",
        sysroot.display()
    );
    Ok(None)
}

/// What the firmware tests and the lab boot (tests/assets.rs): Debian 13's iPXE and OVMF and a
/// Debian kernel package, Debian's signed shim and GRUB (Debian 13's and 12's) and Debian 12's
/// PXELINUX and syslinux modules, downloaded with private apt configurations into `.cache/` and
/// unpacked (never installed), and the busybox initrd built from them; the same for arm64
/// (kernel, busybox, signed shim and GRUB) under `.cache/arm64/`.
fn boot_files(check_only: bool) -> anyhow::Result<Option<String>> {
    if check_only {
        let cache = boot_tests::assets::cache_dir();
        if boot_tests::assets::Assets::is_prepared(&cache)
            && cache.join("arm64/http/stamp").is_file()
        {
            step(
                "boot files for the lab and firmware tests: .cache/lab, .cache/debian1[23], \
                 .cache/arm64 (already there)",
            );
            return Ok(None);
        }
        step(
            "boot files for the lab and firmware tests: missing (.cache/lab, the loader chains' \
             packages or .cache/arm64)",
        );
        return Ok(Some("boot files in .cache/".to_owned()));
    }
    boot_tests::assets::Assets::prepare(&mut |line| step(format!("boot files: {line}")))?;
    boot_tests::assets::Arm64Assets::prepare(&mut |line| {
        step(format!("boot files (arm64): {line}"))
    })?;
    Ok(None)
}

/// OpenStack Ironic's wheel (pinned) and Jinja2 from PyPI in a throwaway virtualenv under
/// `target/`, so tests/ironic.rs renders and lays out Ironic's own files without downloading
/// mid-test (`boot_tests::ironic_files`).
fn ironic_venv(check_only: bool) -> anyhow::Result<Option<String>> {
    use boot_tests::ironic_files::{IRONIC_VERSION, Ironic, venv_dir};
    if check_only {
        if Ironic::is_prepared() {
            step(format!(
                "ironic {IRONIC_VERSION} (Ironic tests): {} (already there)",
                venv_dir().display()
            ));
            return Ok(None);
        }
        step(format!(
            "ironic {IRONIC_VERSION} (Ironic tests): missing {}",
            venv_dir().display()
        ));
        return Ok(Some(format!("ironic {IRONIC_VERSION} virtualenv")));
    }
    Ironic::prepare(&mut |line| step(line))?;
    Ok(None)
}

/// tests/browser's npm dependencies (playwright-core, which drives Debian's chromium; it never
/// downloads a browser of its own), installed from its package-lock.json with `npm ci`.
fn browser_test_deps(check_only: bool) -> anyhow::Result<Option<String>> {
    let dir = crate::workspace_root().join("tests/browser");
    if dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        step("npm (status-page test): tests/browser/node_modules (already installed)");
        return Ok(None);
    }
    if check_only {
        step("npm (status-page test): missing tests/browser/node_modules");
        return Ok(Some("npm packages of tests/browser".to_owned()));
    }
    ensure!(
        find_on_path("npm").is_some(),
        "npm not found: the status-page test needs Node.js 20 or newer with npm"
    );
    step("npm (status-page test): npm ci in tests/browser…");
    run_command(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
    )?;
    Ok(None)
}

/// kubernetes-validate from PyPI in a virtualenv of Debian's python3, for the offline check of
/// docs/kubernetes/ (tests/kubernetes.rs).
fn kubernetes_validate(check_only: bool) -> anyhow::Result<Option<String>> {
    let venv = boot_tests::kubernetes_validate_venv();
    let wanted = format!(
        "kubernetes-validate {}",
        boot_tests::KUBERNETES_VALIDATE_VERSION
    );
    let installed = Command::new(venv.join("bin/kubernetes-validate"))
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if installed
        .as_deref()
        .is_some_and(|v| v.ends_with(boot_tests::KUBERNETES_VALIDATE_VERSION))
    {
        step(format!("{wanted}: {} (already installed)", venv.display()));
        return Ok(None);
    }
    if check_only {
        step(format!("{wanted}: missing ({})", venv.display()));
        return Ok(Some(wanted));
    }
    step(format!("{wanted}: installing into {}…", venv.display()));
    run_command(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    run_command(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!(
            "kubernetes-validate=={}",
            boot_tests::KUBERNETES_VALIDATE_VERSION
        ),
    ]))?;
    Ok(None)
}

/// bpf-linker, built from crates.io against the system's LLVM 22.
/// The fuzzer driver `cargo xtask fuzz` (and `test`, briefly) runs the targets with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn cargo_fuzz(check_only: bool) -> anyhow::Result<Option<String>> {
    let wanted = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    let installed = Command::new(cargo_bin_dir().join("cargo-fuzz"))
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if installed.as_deref() == Some(wanted.as_str()) {
        step(format!("{wanted} (already installed)"));
        return Ok(None);
    }
    if check_only {
        step(format!("{wanted}: missing"));
        return Ok(Some(wanted));
    }
    step(format!(
        "{wanted}: installing (cargo install, about a minute)…"
    ));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_command(Command::new(cargo).args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))?;
    Ok(None)
}

fn bpf_linker(check_only: bool) -> anyhow::Result<Option<String>> {
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION}");
    let found = installed_bpf_linker();
    if let Some((path, version)) = &found
        && *version == wanted
    {
        step(format!("{wanted}: {} (already installed)", path.display()));
        return Ok(None);
    }
    let why = match &found {
        Some((path, version)) => format!("{} is `{version}`", path.display()),
        None => "not found".to_owned(),
    };
    if check_only {
        step(format!("{wanted}: missing ({why})"));
        return Ok(Some(wanted));
    }
    step(format!(
        "{wanted}: installing ({why}; cargo install, about 2 minutes)…"
    ));
    let mut path = OsString::from(LLVM_BIN_DIR);
    if let Some(current) = env::var_os("PATH") {
        path.push(":");
        path.push(current);
    }
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_command(
        Command::new(cargo)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
            ])
            .args(["--no-default-features", "--features", BPF_LINKER_FEATURE])
            .env("PATH", path),
    )?;
    match installed_bpf_linker() {
        Some((_, version)) if version == wanted => {}
        _ => step(format!(
            "note: bpf-linker went to {}, which is not on PATH: add it, or the build cannot \
             find the linker",
            cargo_bin_dir().display()
        )),
    }
    Ok(None)
}

/// The bpf-linker on PATH, or else in cargo's bin directory, with what `--version` printed.
fn installed_bpf_linker() -> Option<(PathBuf, String)> {
    let path = find_on_path("bpf-linker").or_else(|| {
        let candidate = cargo_bin_dir().join("bpf-linker");
        candidate.is_file().then_some(candidate)
    })?;
    let out = Command::new(&path).arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Some((
        path,
        if out.status.success() {
            version
        } else {
            "broken".to_owned()
        },
    ))
}

/// cargo-deb, from crates.io, for `cargo deb` (`cargo xtask package`, tests/package.rs).
pub fn cargo_deb(check_only: bool) -> anyhow::Result<Option<String>> {
    let wanted = format!("cargo-deb {CARGO_DEB_VERSION}");
    let found = find_on_path("cargo-deb").or_else(|| {
        let candidate = cargo_bin_dir().join("cargo-deb");
        candidate.is_file().then_some(candidate)
    });
    let version = found.as_ref().and_then(|path| {
        let out = Command::new(path).arg("--version").output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    if version.as_deref() == Some(wanted.as_str()) {
        step(format!("{wanted} (already installed)"));
        return Ok(None);
    }
    let why = version.map_or("not found".to_owned(), |v| format!("found `{v}`"));
    if check_only {
        step(format!("{wanted}: missing ({why})"));
        return Ok(Some(wanted));
    }
    step(format!(
        "{wanted}: installing ({why}; cargo install, about 1.5 minutes)…"
    ));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_command(Command::new(cargo).args([
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
    ]))?;
    Ok(None)
}

fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_default()
        .join("bin")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `command` with inherited output and fails naming it when it fails.
fn run_command(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}
