//! `cargo xtask run`: the README's first command. Installs what is missing, builds, and runs
//! xdpboot with its embedded default: on a real interface when one is named, otherwise in a
//! lab of network namespaces (a site DHCP server giving addresses, xdpboot, and a PXE client
//! on one bridge, 198.18.0.0/16) where it shows each kind of client getting its address from
//! the site server and its boot file from xdpboot, then tears the lab down.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use boot_tests::{BootRequest, DEFAULT_LOADERS, PXE_SERVER_PORT, Received, SiteLan, from_server};

use crate::{setup, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Serve this interface for real instead of building the namespace lab (repeatable).
    #[arg(short, long = "interface", value_name = "IF")]
    interfaces: Vec<String>,
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
    // The harness finds the daemon through XDPBOOT_BIN.
    // SAFETY of set_var: single-threaded at this point; nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("XDPBOOT_BIN", &binary) };
    lab()
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

fn lab() -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the lab creates network namespaces: run it as root");
    }
    step(
        "creating the lab: namespaces lan (bridge), site (dnsmasq 198.18.0.2), boot (xdpboot 198.18.0.1), client",
    );
    // The client keeps an address so it can also ask port 4011 as a booted client would.
    let client = std::net::Ipv4Addr::new(198, 18, 0, 50);
    let lan = SiteLan::start_with(DEFAULT_LOADERS, Some(client), boot_tests::DHCP_CLIENT_PORT)
        .context("creating the lab")?;
    step("xdpboot is serving eth0 in the boot namespace with the embedded default policy");

    let kinds = [
        ("BIOS PXE ROM", BootRequest::pxe(0)),
        ("UEFI x64 PXE", BootRequest::pxe(7)),
        ("iPXE", BootRequest::pxe(0).ipxe()),
        ("UEFI HTTP boot", BootRequest::http(16)),
        ("plain DHCP client", BootRequest::plain()),
    ];
    for (name, request) in kinds {
        let replies = lan.probe.exchange(
            &request,
            SocketAddrV4::new(std::net::Ipv4Addr::BROADCAST, 67),
            Duration::from_secs(2),
            |r| {
                !from_server(r, SiteLan::SITE).is_empty()
                    && (request.vendor_class.is_none() || !from_server(r, SiteLan::BOOT).is_empty())
            },
        )?;
        report(name, &replies);
    }

    // A UEFI client that took the site's address asks port 4011 for its boot file.
    let request = BootRequest::pxe(7).request_to(SiteLan::BOOT, client);
    let replies = lan.probe.exchange(
        &request,
        SocketAddrV4::new(SiteLan::BOOT, PXE_SERVER_PORT),
        Duration::from_secs(2),
        |r| !r.is_empty(),
    )?;
    match replies.first() {
        Some(ack) => step(&format!(
            "UEFI x64 REQUEST to {}:4011 → ACK from {} with boot file {:?}",
            SiteLan::BOOT,
            ack.from,
            ack.file()
        )),
        None => bail!("no ACK on port 4011; xdpboot's log:\n{}", lan.daemon.log()),
    }

    step("xdpboot's log:");
    for line in lan.daemon.log().lines() {
        println!("    {line}");
    }
    step("tearing the lab down");
    drop(lan);
    step("done");
    Ok(())
}

fn report(name: &str, replies: &[Received]) {
    let site = from_server(replies, SiteLan::SITE);
    let boot = from_server(replies, SiteLan::BOOT);
    let address = site.first().map_or("no address offer".to_owned(), |r| {
        format!("address {}", r.message.yiaddr())
    });
    let boot_file = boot.first().map_or("no proxy offer".to_owned(), |r| {
        format!("boot file {:?}", r.file())
    });
    step(&format!(
        "{name:<18} DISCOVER → site server: {address}; xdpboot: {boot_file}"
    ));
}

fn step(text: &str) {
    println!("[run] {text}");
}
