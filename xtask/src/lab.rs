//! `cargo xtask run`: the README's first command. Installs what is missing, builds xdpboot,
//! and then either serves a real interface (`--interface IF`) or builds the lab and boots real
//! firmware from it: a rack of QEMU machines on a bridge in a network namespace, a server
//! namespace with the site's DHCP server (dnsmasq, addresses only) and xdpboot on one veth,
//! addresses in 198.18.0.0/15. Each machine's serial console is streamed until its initrd
//! prints the marker line from its own overlay; then a summary, and the lab is torn down (also
//! on Ctrl-C or an error: every piece is a guard, see `boot_tests::rack`).
//!
//! xdpboot runs with its embedded default plus a small lab config that only moves the TFTP and
//! HTTP roots to `.cache/lab/` (the iPXE loaders, the kernel and the busybox initrd live there:
//! nothing is written to /var/lib/xdpboot on the host), keeps its generated TLS files and URL
//! secret in the lab's directory, and names what the nodes boot (`[boot]`, `[[overlay]]`,
//! `[[node]]`).

use std::collections::HashSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use boot_tests::assets::{Arm64Assets, Assets};
use boot_tests::rack::{Backend, Node, PROBE, RANGE, Rack, RackSetup, SERVER};
use boot_tests::vm::{self, Chain, Firmware, Marker};
use nix::sys::signal::{SigSet, Signal};

use crate::{setup, workspace_root};

/// How long the first node may take to print its marker under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Extra time per further node: they share the two cores.
const BOOT_TIMEOUT_PER_NODE: Duration = Duration::from_secs(40);
/// How often consoles and the daemon's log are read.
const POLL: Duration = Duration::from_millis(100);
/// Most nodes one lab boots at once (each is a TCG emulator on a shared CPU).
const MAX_NODES: u8 = 16;

/// Set by the signal thread on SIGINT/SIGTERM; the lab loop then tears everything down.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, clap::ValueEnum)]
enum FirmwareArg {
    /// SeaBIOS with the virtio NIC's iPXE ROM: iPXE fetches its script over HTTP.
    Bios,
    /// OVMF's own PXE client: TFTP of ipxe-amd64.efi, then iPXE over HTTP(S).
    Uefi,
    /// OVMF UEFI HTTP boot: ipxe-amd64.efi over HTTP, then iPXE over HTTP(S); no TFTP at all.
    UefiHttp,
    /// OVMF with Secure Boot enforced and Microsoft's keys (arm64: AAVMF): PXE, TFTP of
    /// Debian's signed shim, then its signed GRUB, the node's GRUB config, and the
    /// Debian-signed kernel with the shared initrd and the overlay over HTTP.
    UefiSecureboot,
    /// The same through UEFI HTTP boot: shim, GRUB and everything after over HTTP.
    UefiHttpSecureboot,
}

impl FirmwareArg {
    fn firmware(self) -> Firmware {
        match self {
            FirmwareArg::Bios => Firmware::Bios,
            FirmwareArg::Uefi => Firmware::UefiPxe,
            FirmwareArg::UefiHttp => Firmware::UefiHttp,
            FirmwareArg::UefiSecureboot => Firmware::UefiPxeSecureBoot,
            FirmwareArg::UefiHttpSecureboot => Firmware::UefiHttpSecureBoot,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ChainArg {
    /// iPXE and the node's iPXE script (without Secure Boot).
    Ipxe,
    /// Debian's signed shim, then its signed GRUB and the node's GRUB config (UEFI).
    ShimGrub,
    /// iPXE, which chains Debian's network GRUB by URL; GRUB reads the node's config (UEFI
    /// without Secure Boot).
    IpxeGrub,
    /// lpxelinux.0 and the node's PXELINUX config; kernel, initrd and overlay over HTTP (BIOS).
    Pxelinux,
}

impl ChainArg {
    fn chain(self) -> Chain {
        match self {
            ChainArg::Ipxe => Chain::Ipxe,
            ChainArg::ShimGrub => Chain::ShimGrub,
            ChainArg::IpxeGrub => Chain::IpxeGrub,
            ChainArg::Pxelinux => Chain::Pxelinux,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ArchArg {
    /// PCs: q35 or pc machines, OVMF or SeaBIOS.
    #[value(name = "x86-64")]
    X86_64,
    /// arm64 `virt` machines under TCG with AAVMF, whose PXE fetches ipxe-arm64.efi; iPXE then
    /// boots Debian's arm64 kernel from the lab's `[boot.arch.uefi-arm64]`.
    Arm64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    /// XDP program and AF_XDP sockets; beside a wildcard-bound dnsmasq on the same veth.
    Xdp,
    /// UDP sockets on 67 and 4011; dnsmasq then has to bind its interface.
    Udp,
}

#[derive(clap::Args)]
pub struct Args {
    /// Serve this interface for real instead of building the lab (repeatable).
    #[arg(short, long = "interface", value_name = "IF")]
    interfaces: Vec<String>,
    /// Lab: how the machines boot.
    #[arg(long, value_enum, default_value = "uefi")]
    firmware: FirmwareArg,
    /// Lab: the loaders after the firmware; the default is iPXE, or shim and GRUB under
    /// Secure Boot.
    #[arg(long, value_enum)]
    chain: Option<ChainArg>,
    /// Lab: the machines' CPU. arm64 boots through AAVMF's PXE (`--firmware uefi` or
    /// `uefi-secureboot`) only.
    #[arg(long, value_enum, default_value = "x86-64")]
    arch: ArchArg,
    /// Lab: how requests reach xdpboot.
    #[arg(long, value_enum, default_value = "xdp")]
    backend: BackendArg,
    /// Lab: machines to boot at once, each with its own MAC, hostname and overlay.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=MAX_NODES as i64))]
    nodes: u8,
    /// Lab: OVMF's HTTP boot fetches the loader over HTTPS (TLS 1.2 DHE: Debian 12's OVMF has
    /// no elliptic curves) and iPXE's EFI builds fetch script, kernel, initrds and overlay over
    /// HTTPS, both trusting the lab's generated CA that OVMF gets through fw_cfg. BIOS iPXE has
    /// no TLS.
    #[arg(long)]
    https: bool,
    /// Lab: leave it up after the boots (the nodes keep a shell on their console) and print
    /// how to reach it; Ctrl-C tears it down.
    #[arg(long)]
    keep: bool,
    /// Skip installing prerequisites.
    #[arg(long)]
    no_setup: bool,
    /// Extra arguments for `xdpboot run` (with --interface), after `--`.
    #[arg(last = true)]
    xdpboot_args: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !args.no_setup {
        setup::install()?;
    }
    let binary = build()?;
    if !args.interfaces.is_empty() {
        return serve(&binary, args);
    }
    // The harness finds the daemon through XDPBOOT_BIN; one already set (another build of
    // xdpboot) is kept.
    if std::env::var_os("XDPBOOT_BIN").is_none() {
        // SAFETY of set_var: single-threaded at this point; nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var("XDPBOOT_BIN", &binary) };
    }
    lab(args)
}

fn build() -> anyhow::Result<PathBuf> {
    step("building xdpboot (cargo build -p boot-user)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--package", "boot-user", "--bins"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "building xdpboot failed ({status})");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("debug").join("xdpboot"))
}

/// `xdpboot run --interface IF …` in the foreground.
fn serve(binary: &PathBuf, args: &Args) -> anyhow::Result<()> {
    let mut command = Command::new(binary);
    command.arg("run");
    for iface in &args.interfaces {
        command.args(["--interface", iface]);
    }
    command.args(&args.xdpboot_args);
    step(&format!("running {command:?} (Ctrl-C stops it)"));
    let status = command.status().context("starting xdpboot")?;
    ensure!(status.success(), "xdpboot exited with {status}");
    Ok(())
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread started after it) and
/// turns them into [`INTERRUPTED`] on a thread of their own, so the lab loop can tear down
/// in order. Children start with an empty signal mask (std resets it), so a terminal's
/// Ctrl-C still reaches them too.
fn catch_interrupts() -> anyhow::Result<()> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            println!("\n[run] {signal}: tearing the lab down");
            INTERRUPTED.store(true, Ordering::SeqCst);
        }
    });
    Ok(())
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn lab(args: &Args) -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the lab creates network namespaces, bridges and taps: run it as root");
    }
    catch_interrupts()?;
    remove_stale_namespaces();
    let assets = Assets::prepare(&mut |line| step(line))?;
    let versions: Vec<String> = assets
        .versions
        .iter()
        .map(|(name, version)| format!("{name} {version}"))
        .collect();
    step(&format!(
        "boot files in {}: Debian 13 {} (kernel {}); shared initrd {} bytes (gzip, not a multiple of 4: the server pads it)",
        assets.cache.join("lab").display(),
        versions.join(", "),
        assets.kernel_version,
        assets.shared_initrd_len
    ));

    let firmware = match (args.arch, args.firmware) {
        (ArchArg::X86_64, firmware) => firmware.firmware(),
        (ArchArg::Arm64, firmware @ (FirmwareArg::Uefi | FirmwareArg::UefiSecureboot)) => {
            let arm64 = Arm64Assets::prepare(&mut |line| step(&format!("arm64: {line}")))?;
            let versions: Vec<String> = arm64
                .versions
                .iter()
                .map(|(name, version)| format!("{name} {version}"))
                .collect();
            step(&format!(
                "arm64 boot files: Debian 13 {} (kernel {}), served through [boot.arch.uefi-arm64];                  firmware: AAVMF from {}",
                versions.join(", "),
                arm64.kernel_version,
                vm::AAVMF_DIR
            ));
            match firmware {
                FirmwareArg::UefiSecureboot => Firmware::Arm64UefiPxeSecureBoot,
                _ => Firmware::Arm64UefiPxe,
            }
        }
        (ArchArg::Arm64, _) => {
            bail!(
                "--arch arm64 boots through AAVMF's own PXE client only: use --firmware uefi or uefi-secureboot"
            )
        }
    };
    let chain = args.chain.map_or(firmware.default_chain(), ChainArg::chain);
    match (chain, firmware) {
        (Chain::Pxelinux, Firmware::Bios) => {}
        (Chain::Pxelinux, _) => bail!("--chain pxelinux is for BIOS: use --firmware bios"),
        (Chain::ShimGrub | Chain::IpxeGrub, Firmware::Bios) => {
            bail!("--chain {} is for UEFI machines", chain.name())
        }
        (Chain::Ipxe | Chain::IpxeGrub, firmware) if firmware.secure_boot() => {
            bail!("Debian's iPXE is not signed: Secure Boot refuses it; use --chain shim-grub")
        }
        (Chain::IpxeGrub, Firmware::Arm64UefiPxe) => {
            bail!("--chain ipxe-grub is x86-64 only here: the lab chains grubx64.efi")
        }
        _ => {}
    }
    let backend = match args.backend {
        BackendArg::Xdp => Backend::Xdp,
        BackendArg::Udp => Backend::Udp,
    };
    let nodes: Vec<Node> = (1..=args.nodes)
        .map(|n| Node::numbered(n, firmware).through(chain))
        .collect();
    let mut setup = RackSetup::new(backend, nodes.clone());
    setup.https = args.https;
    if args.https && firmware == Firmware::Bios {
        step("--https: BIOS iPXE has no TLS, so BIOS nodes keep plain HTTP (try --firmware uefi)");
    }
    if args.https && firmware.arch() == vm::Arch::Arm64 {
        step("--https: the lab gives its CA to OVMF only, so arm64 nodes keep plain HTTP");
    }
    if args.https && chain != Chain::Ipxe {
        step("--https: GRUB and PXELINUX fetch over plain HTTP (or TFTP): the chain keeps HTTP");
    }
    setup.keep = args.keep;

    step(&format!(
        "creating the lab: rack namespace (bridge br0), server namespace ({SERVER}/24 on a veth to the bridge), \
         probe namespace ({PROBE}/24)"
    ));
    match backend {
        Backend::Xdp => step(&format!(
            "site DHCP server: dnsmasq on the server's veth, bound to the wildcard address (its default), \
             addresses {}–{} only; xdpboot's xdp backend tees port 67 beside it",
            RANGE.0, RANGE.1
        )),
        Backend::Udp => step(&format!(
            "site DHCP server: dnsmasq with --bind-interfaces, addresses {}–{} only: the udp backend's socket \
             on 0.0.0.0:67 can share the port only with a server bound to its interface (a wildcard-bound \
             dnsmasq would refuse to start beside it; the xdp backend binds nothing on 67)",
            RANGE.0, RANGE.1
        )),
    }
    let started = Instant::now();
    let mut rack = Rack::start(&assets, setup).context("creating the lab")?;
    step(&format!(
        "xdpboot ({} backend) is serving eth0 in the server namespace in {:.1} s: embedded default + {} \
         (only the TFTP/HTTP roots → {}, TLS files and URL secret → the lab's directory, and [boot]/[[overlay]]/[[node]])",
        backend.name(),
        started.elapsed().as_secs_f64(),
        rack.config.display(),
        assets.cache.join("lab").display()
    ));
    match firmware.arch() {
        vm::Arch::X86_64 => step(&format!(
            "QEMU accelerator: {} ({})",
            vm::accelerator(),
            vm::accelerator_reason()
        )),
        vm::Arch::Arm64 => step(
            "QEMU accelerator: tcg (an arm64 guest on this host is always emulated; expect ~25 s to the marker)",
        ),
    }
    step("router advertisements with lifetime 0 on the rack, so iPXE skips its ~13 s IPv6 wait");

    for node in &nodes {
        if interrupted() {
            bail!("interrupted");
        }
        step(&format!(
            "booting {} ({}, {}: {}; then {}); its serial console follows",
            node.hostname,
            node.mac,
            firmware.name(),
            firmware.first_stage(),
            node.chain.name()
        ));
        rack.boot(node)?;
    }

    let timeout = BOOT_TIMEOUT + BOOT_TIMEOUT_PER_NODE * u32::from(args.nodes - 1);
    let outcome = follow(&mut rack, timeout);
    let logs = save_logs(&rack);
    summary(&rack, args, &outcome, &logs);
    if let Err(e) = outcome {
        step("xdpboot's log (last lines):");
        print_tail(&rack.daemon_log(), 40);
        step("tearing the lab down");
        drop(rack);
        return Err(e);
    }
    if args.keep && !interrupted() {
        keep(&mut rack);
    }
    step("tearing the lab down (VMs, xdpboot, dnsmasq, namespaces, files)");
    drop(rack);
    step("done");
    Ok(())
}

/// Streams every VM's console and xdpboot's decisions until every node printed its marker
/// (and, unless kept, powered off), a node failed, the time is up, or Ctrl-C.
fn follow(rack: &mut Rack, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut daemon_lines = 0usize;
    let mut announced: HashSet<(usize, &'static str)> = HashSet::new();
    loop {
        for (i, vm) in rack.vms.iter_mut().enumerate() {
            for line in vm.poll() {
                if !line.trim().is_empty() && worth_showing(&line) {
                    println!("  [{}] {line}", vm.spec.name);
                }
            }
            for (stage, at) in vm.reached.clone() {
                if announced.insert((i, stage)) {
                    step(&format!(
                        "{}: {stage} after {:.1} s",
                        vm.spec.name,
                        at.as_secs_f64()
                    ));
                }
            }
        }
        let log = rack.daemon_log();
        for line in log.lines().skip(daemon_lines) {
            if line.contains(" INFO ") || line.contains(" WARN ") || line.contains(" ERROR ") {
                println!("  [xdpboot] {}", strip_timestamp(line));
            }
        }
        daemon_lines = log.lines().count();
        let _ = std::io::stdout().flush();

        let keep = rack.setup.keep;
        let mut all_done = true;
        for vm in &mut rack.vms {
            let marked = vm.marker().is_some();
            let exited = vm.exited();
            if exited && !marked {
                vm.poll();
                if vm.marker().is_none() {
                    bail!(
                        "{} stopped without printing its marker (stages reached: {:?})",
                        vm.spec.name,
                        vm.reached
                    );
                }
            }
            if vm
                .lines
                .iter()
                .any(|l| l.contains(boot_tests::assets::NO_OVERLAY))
            {
                bail!("{} booted without its overlay", vm.spec.name);
            }
            // Kept nodes stay up with a shell; the others power off after the marker.
            all_done &= marked && (keep || exited);
        }
        if all_done {
            return Ok(());
        }
        if interrupted() {
            bail!("interrupted");
        }
        if Instant::now() >= deadline {
            bail!("not every node printed its marker within {timeout:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// The summary: per node the firmware, the path, the time to each stage and the marker.
fn summary(rack: &Rack, args: &Args, outcome: &anyhow::Result<()>, logs: &std::path::Path) {
    let https = rack.setup.https;
    step("summary");
    for vm in &rack.vms {
        let second_stage = match (vm.spec.chain, vm.spec.firmware, https) {
            (Chain::ShimGrub | Chain::IpxeGrub, ..) => {
                "the node's GRUB config, then kernel, initrd and overlay over HTTP (GRUB's http module)"
            }
            (Chain::Pxelinux, ..) => {
                "the node's PXELINUX config over TFTP, then kernel, initrd and overlay over HTTP"
            }
            (_, Firmware::Bios, _) => {
                "script, kernel, initrd and overlay over HTTP (BIOS iPXE has no TLS)"
            }
            (_, Firmware::Arm64UefiPxe, true) => {
                "script, kernel, initrd and overlay over HTTP (the lab's CA goes to OVMF only)"
            }
            (_, _, true) => "script, kernel, initrd and overlay over HTTPS",
            (_, _, false) => "script, kernel, initrd and overlay over HTTP",
        };
        let first_stage = match (vm.spec.firmware, https) {
            (Firmware::UefiHttp, true) => {
                "UEFI HTTPS boot of ipxe-amd64.efi (TLS 1.2 DHE: OVMF 2022.11 has no ECDHE), no TFTP"
            }
            (firmware, _) => firmware.first_stage(),
        };
        println!(
            "  {} ({}): firmware {}, backend {}, first stage: {first_stage}; {second_stage}",
            vm.spec.name,
            vm.spec.mac,
            vm.spec.firmware.name(),
            rack.setup.backend.name(),
        );
        let mut previous = Duration::ZERO;
        for (stage, at) in &vm.reached {
            println!(
                "      {:<24} {:>6.1} s  (+{:.1} s)",
                stage,
                at.as_secs_f64(),
                (*at - previous).as_secs_f64()
            );
            previous = *at;
        }
        println!(
            "      whole console: {}",
            logs.join(format!("{}.serial.log", vm.spec.name)).display()
        );
        match vm.marker() {
            Some(Marker { node, mac, token }) => println!(
                "      booted in {:.1} s: node={node} mac={mac} token={token} (from its own overlay)",
                vm.reached("marker").unwrap_or_default().as_secs_f64()
            ),
            None => println!("      no marker"),
        }
    }
    match outcome {
        Ok(()) => step(&format!(
            "all {} node(s) booted their overlay ({} backend{})",
            rack.vms.len(),
            rack.setup.backend.name(),
            if args.https { ", https" } else { "" }
        )),
        Err(e) => step(&format!("failed: {e:#}")),
    }
    step(&format!(
        "logs of this run (consoles, xdpboot, dnsmasq, the lab config) kept in {}",
        logs.display()
    ));
}

/// Copies the lab's logs and config to `target/lab-logs/` (replacing the previous run's), so
/// they outlive the lab's directory.
fn save_logs(rack: &Rack) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let logs = target.join("lab-logs");
    let _ = std::fs::remove_dir_all(&logs);
    if std::fs::create_dir_all(&logs).is_ok()
        && let Ok(entries) = std::fs::read_dir(rack.dir.path())
    {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".log") || name.ends_with(".toml") {
                let _ = std::fs::copy(entry.path(), logs.join(&*name));
            }
        }
    }
    logs
}

/// Leaves the lab up until Ctrl-C, printing how to reach it and when a node changes state.
fn keep(rack: &mut Rack) {
    step("the lab stays up (--keep); Ctrl-C tears it down");
    for line in rack.describe() {
        println!("  {line}");
    }
    let mut up: Vec<bool> = rack.vms.iter_mut().map(|vm| !vm.exited()).collect();
    for (vm, running) in rack.vms.iter().zip(&up) {
        println!(
            "  status: {} {}",
            vm.spec.name,
            if *running {
                "booted, shell on its console"
            } else {
                "powered off"
            }
        );
    }
    while !interrupted() {
        for (vm, running) in rack.vms.iter_mut().zip(up.iter_mut()) {
            for line in vm.poll() {
                println!("  [{}] {line}", vm.spec.name);
            }
            if *running && vm.exited() {
                *running = false;
                step(&format!("status: {} powered off", vm.spec.name));
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Namespaces a killed run of the lab or of the firmware tests left: the harness's names
/// (`xbt<pid>-<salt>-<n><role>`) with the roles `boot_tests::rack` gives (rack, server, probe)
/// whose process is gone. Deleting them removes their links too. No other namespace is
/// touched, whoever made it.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let mut removed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix("xbt")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !["rack", "server", "probe"]
            .iter()
            .any(|role| name.ends_with(role))
        {
            continue;
        }
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if Command::new("ip")
            .args(["netns", "del", name])
            .status()
            .is_ok_and(|s| s.success())
        {
            removed += 1;
        }
    }
    if removed > 0 {
        step(&format!(
            "removed {removed} namespace(s) left by an earlier run that was killed"
        ));
    }
}

/// Whether a console line is shown while streaming: everything but the kernel's own boot
/// messages, of which only the milestones are (the whole console stays in the node's serial
/// log, named in the summary).
fn worth_showing(line: &str) -> bool {
    const KERNEL_MILESTONES: &[&str] = &[
        "Linux version",
        "Command line:",
        // arm64's spelling.
        "Kernel command line:",
        "Unpacking initramfs",
        "Run /init",
        "Kernel panic",
        "reboot:",
    ];
    let kernel_message = line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .is_some_and(|(stamp, _)| stamp.trim().parse::<f64>().is_ok());
    !kernel_message || KERNEL_MILESTONES.iter().any(|m| line.contains(m))
}

/// A tracing line without its leading timestamp.
fn strip_timestamp(line: &str) -> &str {
    match line.split_once(' ') {
        Some((first, rest)) if first.contains('T') && first.ends_with('Z') => rest.trim_start(),
        _ => line,
    }
}

fn print_tail(text: &str, lines: usize) {
    let all: Vec<&str> = text.lines().collect();
    for line in &all[all.len().saturating_sub(lines)..] {
        println!("    {line}");
    }
}

fn step(text: &str) {
    println!("[run] {text}");
}
