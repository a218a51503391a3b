//! The firmware lab: a rack of QEMU machines booting from xdpboot beside a site DHCP server,
//! all inside network namespaces made here (the same lab `cargo xtask run` builds).
//!
//! ```text
//!   rack namespace: bridge br0 ── tap0 (VM), tap1 (VM), …
//!                        │   └── probe (198.18.0.50/24, a host on the rack for curl checks)
//!                        └── srv ══ veth ══ eth0 in the server namespace, 198.18.0.1/24:
//!                                             dnsmasq (addresses only, .100–.200),
//!                                             xdpboot (xdp or udp backend),
//!                                             router advertisements (lifetime 0)
//! ```
//! With the xdp backend dnsmasq binds the wildcard address, as a site server installed with
//! its defaults does, and xdpboot tees port 67 beside it; the udp backend can only share port
//! 67 with a dnsmasq that binds its interface (`--bind-interfaces`), so that is what it gets.
//!
//! xdpboot runs with the embedded default plus a lab config that changes only what a lab must:
//! the TFTP and HTTP roots (`.cache/lab/`, see [`crate::assets`]), where TLS files and the
//! URL secret go (the lab's own directory, never /etc or /var/lib on the host), and what to
//! boot (`[boot]`, `[[overlay]]`, `[[node]]`).
//!
//! iPXE waits ~13 s for IPv6 autoconfiguration unless a router says there is none
//! (DESIGN.md, "Test lab facts"): [`RouterAdvertiser`] sends link-local RAs with router
//! lifetime 0 on the server's veth.
//!
//! An IPv6 rack ([`RackSetup::ipv6`]) has no IPv4 at all: the server is `fd00:18::1/64`, the
//! probe `fd00:18::50/64`, dnsmasq hands out `fd00:18::100–1ff` over DHCPv6, and xdpboot runs
//! with `[ipv6] enabled`. Who advertises the link is the [`Ipv6Lab`] choice: dnsmasq itself
//! with the M flag (as the issue measured), or the lab's router with the O flag and an
//! autonomous prefix, under which iPXE asks only for information and takes its script from
//! xdpboot.

use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use boot_common::wire::MacAddr;
use socket2::{Domain, Protocol, Socket, Type};

use crate::assets::{Arm64Assets, Assets, KERNEL, NODE_FILE, SHARED_INITRD};
use crate::ipv6::{Dnsmasq6, add_address6, no_dad, wait_ipv6_ready};
use crate::vm::{Arch, Chain, Firmware, Vm, VmSpec};
use crate::{
    Binding, COMMAND_TIMEOUT, Daemon, Dnsmasq, NetNs, STARTUP_TIMEOUT, TempDir, run_command,
    unique_ifindex, veth, veth_with_index,
};

/// xdpboot's address on the rack.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The probe host's address on the rack.
pub const PROBE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);
/// The site server's address range.
pub const RANGE: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(198, 18, 0, 100),
    Ipv4Addr::new(198, 18, 0, 200),
);
/// xdpboot's address on an IPv6 rack (unique-local, RFC 4193).
pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1);
/// The probe host's address on an IPv6 rack.
pub const PROBE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x50);
/// The site server's DHCPv6 range.
pub const RANGE6: (Ipv6Addr, Ipv6Addr) = (
    Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x100),
    Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x1ff),
);
/// The rack's /64.
pub const PREFIX6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0);
/// The served interface in the server namespace.
pub const SERVER_IF: &str = "eth0";
/// Kernel command line of every node: the console on the serial port, and a kernel that
/// panics (a broken initrd) reboots at once, which `-no-reboot` turns into QEMU exiting.
pub const CMDLINE: &str = "console=ttyS0 panic=1";
/// The same for arm64 nodes, whose serial port is `virt`'s PL011.
pub const CMDLINE_ARM64: &str = "console=ttyAMA0 panic=1";
/// Debian 12's iPXE EFI build (package `ipxe`, 2019).
pub const IPXE_2019_EFI: &str = "/usr/lib/ipxe/ipxe.efi";
/// How often the lab's router advertisement goes out (besides answers to solicitations).
const RA_INTERVAL: Duration = Duration::from_millis(1000);

/// The backend xdpboot runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Xdp,
    Udp,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Xdp => "xdp",
            Backend::Udp => "udp",
        }
    }

    /// How the site's dnsmasq binds port 67 beside this backend.
    pub fn site_binding(self) -> Binding {
        match self {
            Backend::Xdp => Binding::Wildcard,
            Backend::Udp => Binding::Interfaces,
        }
    }
}

/// How an IPv6 rack's link is advertised (RFC 4861 router advertisements) and so which DHCPv6
/// each client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Lab {
    /// dnsmasq advertises the link itself (`--enable-ra`, the M flag for its stateful range), as
    /// issue 16 measured. EDK2 takes its address from dnsmasq and its boot file from xdpboot;
    /// iPXE, seeing M, runs a stateful exchange and takes everything from the server that gave
    /// it an address (iPXE `dhcpv6.c`: the Reply of the Request it sent), so its script URL must
    /// come from the site server: dnsmasq names xdpboot's script for user class iPXE.
    Managed,
    /// The lab's router advertises the O flag and the /64 as autonomous: iPXE configures its
    /// address itself and sends an Information-request, which dnsmasq leaves to xdpboot
    /// (`--dhcp-ignore` for user class iPXE) and xdpboot answers with the script URL. EDK2's
    /// PXE and HTTP boot run their stateful exchange whatever the RA says.
    Stateless,
}

/// The site's DHCP server of the rack.
#[derive(Debug)]
pub enum SiteServer {
    V4(Dnsmasq),
    V6(Dnsmasq6),
}

/// A machine of the rack: its identity in xdpboot's `[[node]]` table and its VM.
#[derive(Debug, Clone)]
pub struct Node {
    pub hostname: String,
    pub mac: MacAddr,
    pub firmware: Firmware,
    /// The loaders after the firmware's network boot (the lab's policy gives the node a rule
    /// of its own for any chain but iPXE).
    pub chain: Chain,
    /// A disk second in its boot order (local-boot tests).
    pub disk: Option<PathBuf>,
    /// `vars = { rack = … }` of its `[[node]]` entry, shown in its overlay.
    pub rack_label: String,
}

impl Node {
    /// Node `n` (1-based) of a lab: `n01`, MAC `52:54:00:18:01:<n>`.
    pub fn numbered(n: u8, firmware: Firmware) -> Node {
        Node {
            hostname: format!("n{n:02}"),
            mac: MacAddr([0x52, 0x54, 0x00, 0x18, 0x01, n]),
            firmware,
            chain: firmware.default_chain(),
            disk: None,
            rack_label: "lab".to_owned(),
        }
    }

    /// The same node booting through `chain`.
    pub fn through(mut self, chain: Chain) -> Node {
        self.chain = chain;
        self
    }
}

/// How xdpboot is started in the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// `xdpboot run` with the lab's config ([`lab_config`]).
    LabConfig,
    /// `xdpboot run --interface eth0` and nothing else, as a new user runs it after
    /// `apt-get install ipxe`: the embedded default, loaders from Debian's `ipxe` package, no
    /// kernel to boot. It writes its URL secret and TLS files where the default says (under
    /// /var/lib/xdpboot and /etc/xdpboot): those are overlays of the lab's own directory in
    /// the daemon's mount namespace, so nothing reaches the host's.
    NoConfig,
    /// `xdpboot boot --interface eth0 KERNEL INITRD --cmdline …`: quick mode, no `--root`, no
    /// config; the same overlays.
    QuickMode,
}

/// How to build the rack.
#[derive(Debug, Clone)]
pub struct RackSetup {
    pub backend: Backend,
    /// How xdpboot is started.
    pub start: Start,
    pub nodes: Vec<Node>,
    /// Serve HTTPS (port 443) and hand out https URLs to iPXE's EFI builds (see [`lab_config`]
    /// for who cannot use it). xdpboot's `[boot] https` puts one scheme into every script, so
    /// in a rack with a BIOS node the scripts keep plain HTTP URLs.
    pub https: bool,
    /// Loaders in the TFTP root (default: all of [`crate::assets::LOADERS`]).
    pub tftp_loaders: Vec<&'static str>,
    /// Download attempts of the boot script and the pause between them.
    pub retries: u32,
    pub retry_delay: u32,
    /// Keep the nodes up with a shell on their console after the marker.
    pub keep: bool,
    /// `[http] pacing_mbit`: 0 for none.
    pub http_pacing_mbit: u32,
    /// With `https`: give OVMF (and through it iPXE) the lab's CA. Off shows that the trust
    /// is real: iPXE then refuses the server.
    pub firmware_trusts_ca: bool,
    /// Serve Debian 12's iPXE 2019 EFI build (`/usr/lib/ipxe/ipxe.efi`, package `ipxe`) as
    /// `ipxe-amd64.efi`: it hands initrds to the kernel's EFI stub by `initrd=` names, which the
    /// stub joins back to back, so only the server's 4-byte padding of the gzip initrd lets the
    /// overlay behind it be found (DESIGN.md, "EFI initrds").
    pub ipxe_2019_efi: bool,
    /// More files for the TFTP root, as (name there, file to copy). The lab then has a TFTP
    /// root of its own ([`Rack::tftp_root`]).
    pub tftp_files: Vec<(String, PathBuf)>,
    /// `[[policy]]` rules (TOML) put before the lab's table, after each node's own chain rule;
    /// `None`: none.
    pub policy: Option<String>,
    /// An IPv6-only rack, advertised so.
    pub ipv6: Option<Ipv6Lab>,
    /// `[[policy]]` rules (TOML) put ahead of every other, the nodes' own chain rules included
    /// (a node's chain started some other way than its chain rule would, e.g. shim by an https
    /// URL); `None`: none.
    pub policy_first: Option<String>,
    /// An HTTP root of the test's own instead of the cache's (`.cache/lab/http`), e.g. one
    /// that Ironic writes into (tests/ironic.rs).
    pub http_root: Option<PathBuf>,
    /// Serve Debian 12's shim and GRUB (2.06: no `http` module, so GRUB fetches its kernel,
    /// initrds and overlay over TFTP) instead of Debian 13's (2.12: over HTTP).
    pub debian12_chain: bool,
}

impl RackSetup {
    pub fn new(backend: Backend, nodes: Vec<Node>) -> RackSetup {
        RackSetup {
            backend,
            start: Start::LabConfig,
            nodes,
            https: false,
            tftp_loaders: crate::assets::LOADERS.to_vec(),
            retries: 5,
            retry_delay: 3,
            keep: false,
            http_pacing_mbit: 0,
            firmware_trusts_ca: true,
            ipxe_2019_efi: false,
            tftp_files: Vec::new(),
            policy: None,
            policy_first: None,
            http_root: None,
            debian12_chain: false,
            ipv6: None,
        }
    }

    /// An IPv6-only rack of `nodes`.
    pub fn ipv6(backend: Backend, nodes: Vec<Node>, lab: Ipv6Lab) -> RackSetup {
        RackSetup {
            ipv6: Some(lab),
            ..RackSetup::new(backend, nodes)
        }
    }
}

/// The running lab. Fields drop in order: VMs and processes first, then namespaces, then
/// files.
pub struct Rack {
    pub vms: Vec<Vm>,
    /// tcpdump of the rack's DHCPv6 traffic (IPv6 racks): [`Rack::dhcpv6_captured`].
    pub capture: Option<crate::ChildGuard>,
    pub daemon: Option<Daemon>,
    pub dnsmasq: SiteServer,
    pub ra: Option<RouterAdvertiser>,
    pub probe: NetNs,
    pub server: NetNs,
    pub rack: NetNs,
    pub dir: TempDir,
    pub setup: RackSetup,
    pub assets: Assets,
    pub config: PathBuf,
    /// The TFTP root xdpboot serves: the cache's, or the lab's own copy (files may be added
    /// while it runs when it is the lab's own).
    pub tftp_root: PathBuf,
    daemon_starts: u32,
}

impl Rack {
    /// Builds the namespaces, starts dnsmasq, the router advertisements and xdpboot; no VM
    /// yet ([`Rack::boot`]).
    pub fn start(assets: &Assets, setup: RackSetup) -> Result<Rack> {
        let dir = TempDir::new("lab")?;
        // The cache's TFTP root, unless this lab serves other loaders.
        let tftp = if setup.tftp_loaders == crate::assets::LOADERS
            && !setup.ipxe_2019_efi
            && setup.tftp_files.is_empty()
        {
            assets.tftp_root.clone()
        } else {
            let tftp = dir.join("tftp");
            std::fs::create_dir_all(&tftp)?;
            for loader in &setup.tftp_loaders {
                std::fs::copy(assets.tftp_root.join(loader), tftp.join(loader))?;
            }
            if setup.ipxe_2019_efi {
                std::fs::copy(IPXE_2019_EFI, tftp.join("ipxe-amd64.efi")).with_context(|| {
                    format!("copying {IPXE_2019_EFI} (install Debian 12's ipxe)")
                })?;
            }
            for (name, source) in &setup.tftp_files {
                std::fs::copy(source, tftp.join(name))
                    .with_context(|| format!("copying {} to the TFTP root", source.display()))?;
            }
            tftp
        };
        // arm64 nodes boot their own kernel and initrd, fetched only for a rack that has one.
        let arm64 = if setup.nodes.iter().any(|n| n.firmware.arch() == Arch::Arm64) {
            Some(Arm64Assets::get()?)
        } else {
            None
        };
        let config = dir.join("xdpboot.toml");
        std::fs::write(
            &config,
            lab_config(assets, arm64, &setup, dir.path(), &tftp),
        )?;

        let rack = NetNs::new("rack")?;
        let server = NetNs::new("server")?;
        let probe = NetNs::new("probe")?;
        if setup.ipv6.is_some() {
            for ns in [&rack, &server, &probe] {
                no_dad(ns, "all")?;
            }
        }
        rack.add_bridge("br0")?;
        // The served veth gets an interface index of its own: BPF links are system-wide.
        veth_with_index(&server, SERVER_IF, Some(unique_ifindex()), &rack, "srv")?;
        rack.attach("srv", "br0")?;
        veth(&probe, "eth0", &rack, "probe")?;
        rack.attach("probe", "br0")?;

        let (dnsmasq, ra) = match setup.ipv6 {
            None => {
                server.add_address(SERVER_IF, &format!("{SERVER}/24"))?;
                probe.add_address("eth0", &format!("{PROBE}/24"))?;
                let dnsmasq = Dnsmasq::start_with(
                    &server,
                    SERVER_IF,
                    RANGE,
                    dir.path(),
                    setup.backend.site_binding(),
                )?;
                let ra = RouterAdvertiser::start(&server, SERVER_IF, Advertised::NoRouter)?;
                (SiteServer::V4(dnsmasq), Some(ra))
            }
            Some(lab) => {
                add_address6(&server, SERVER_IF, &format!("{SERVER6}/64"))?;
                add_address6(&probe, "eth0", &format!("{PROBE6}/64"))?;
                wait_ipv6_ready(&server, SERVER_IF)?;
                wait_ipv6_ready(&probe, "eth0")?;
                // The site's server, configured as its operator would for a boot server beside
                // it: nothing about booting but where iPXE's script is (M flag) or that iPXE is
                // left to the boot server (O flag).
                let extra: Vec<String> = match lab {
                    Ipv6Lab::Managed => vec![
                        "--dhcp-userclass=set:ipxe,iPXE".to_owned(),
                        format!(
                            "--dhcp-option=tag:ipxe,option6:bootfile-url,http://[{SERVER6}]:80/boot.ipxe?mac=${{net0/mac}}"
                        ),
                    ],
                    Ipv6Lab::Stateless => vec![
                        "--dhcp-userclass=set:ipxe,iPXE".to_owned(),
                        "--dhcp-ignore=tag:ipxe".to_owned(),
                    ],
                };
                let dnsmasq = Dnsmasq6::start(
                    &server,
                    SERVER_IF,
                    RANGE6,
                    dir.path(),
                    setup.backend.site_binding(),
                    lab == Ipv6Lab::Managed,
                    &extra,
                )?;
                let ra = match lab {
                    Ipv6Lab::Managed => None,
                    Ipv6Lab::Stateless => Some(RouterAdvertiser::start(
                        &server,
                        SERVER_IF,
                        Advertised::OtherConfig { prefix: PREFIX6 },
                    )?),
                };
                (SiteServer::V6(dnsmasq), ra)
            }
        };
        let capture = match setup.ipv6 {
            Some(_) => Some(start_capture(&rack, dir.path())?),
            None => None,
        };
        let mut lab = Rack {
            vms: Vec::new(),
            capture,
            daemon: None,
            dnsmasq,
            ra,
            probe,
            server,
            rack,
            dir,
            setup,
            assets: assets.clone(),
            config,
            tftp_root: tftp,
            daemon_starts: 0,
        };
        lab.start_daemon()?;
        Ok(lab)
    }

    /// Starts xdpboot (again) and waits until it serves; each start logs to its own file.
    pub fn start_daemon(&mut self) -> Result<()> {
        self.daemon_starts += 1;
        let log = self.daemon_log_path(self.daemon_starts);
        let args: &[&str] = match self.setup.backend {
            // `--steer auto` sees dnsmasq on port 67 and tees.
            Backend::Xdp => &["--backend", "xdp"],
            Backend::Udp => &["--backend", "udp"],
        };
        let daemon = match self.setup.start {
            Start::LabConfig => {
                Daemon::start_serving(&self.server, &[SERVER_IF], &self.config, log, args)?
            }
            Start::NoConfig => self.start_without_config(&["run", args[0], args[1]], log)?,
            Start::QuickMode => {
                let kernel = self.assets.http_root.join(KERNEL);
                let initrd = self.assets.http_root.join(SHARED_INITRD);
                let (kernel, initrd) = (kernel.display().to_string(), initrd.display().to_string());
                self.start_without_config(
                    &[
                        "boot",
                        args[0],
                        args[1],
                        &kernel,
                        &initrd,
                        "--cmdline",
                        CMDLINE,
                    ],
                    log,
                )?
            }
        };
        self.daemon = Some(daemon);
        if self.setup.https {
            // The CA is generated at start; OVMF gets it through fw_cfg.
            let ca = self.ca_esl();
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            while !ca.is_file() {
                if Instant::now() >= deadline {
                    bail!(
                        "xdpboot made no {} within {STARTUP_TIMEOUT:?}",
                        ca.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// `xdpboot ARGS --interface eth0` with no config file ([`Start::NoConfig`],
    /// [`Start::QuickMode`]), its /etc and /var/lib overlaid with directories of the lab's in
    /// a mount namespace of its own (`ip netns exec` gives each command one, with mounts
    /// propagating no further), and waits until it serves.
    fn start_without_config(&self, args: &[&str], log: PathBuf) -> Result<Daemon> {
        const OVERLAY_ROOTS: &str = r#"set -e
lab=$1; shift
for top in etc var/lib; do
    mkdir -p "$lab/$top/upper" "$lab/$top/work"
    mount -t overlay overlay -o "lowerdir=/$top,upperdir=$lab/$top/upper,workdir=$lab/$top/work" "/$top"
done
exec "$@"
"#;
        let overlays = self.dir.join("host-overlay");
        let binary = crate::xdpboot_binary();
        let mut argv: Vec<&std::ffi::OsStr> = vec![
            "-c".as_ref(),
            OVERLAY_ROOTS.as_ref(),
            "sh".as_ref(),
            overlays.as_os_str(),
            binary.as_os_str(),
        ];
        argv.extend(args.iter().map(std::ffi::OsStr::new));
        argv.push("--interface".as_ref());
        argv.push(SERVER_IF.as_ref());
        let mut child = self.server.spawn(
            "xdpboot",
            Path::new("sh"),
            &argv,
            &[
                ("RUST_LOG", "info,xdpboot=debug"),
                ("NO_COLOR", "1"),
                ("RUST_BACKTRACE", "0"),
            ],
            log.clone(),
        )?;
        child.wait_until("serving", STARTUP_TIMEOUT, || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(crate::Serving::find(&text, SERVER_IF).is_some())
        })?;
        Ok(Daemon { child })
    }

    /// Stops xdpboot (SIGTERM, then SIGKILL): DHCP, TFTP and HTTP go away together.
    pub fn stop_daemon(&mut self) {
        self.daemon = None;
    }

    pub fn daemon_log_path(&self, start: u32) -> PathBuf {
        self.dir.join(format!("xdpboot-{start}.log"))
    }

    /// Everything every xdpboot of this lab logged, in order.
    pub fn daemon_log(&self) -> String {
        (1..=self.daemon_starts)
            .map(|n| std::fs::read_to_string(self.daemon_log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("")
    }

    /// The generated CA as an EFI signature list.
    pub fn ca_esl(&self) -> PathBuf {
        self.dir.join("tls/ca.esl")
    }

    /// The generated CA (PEM).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// Where a kept node's console socket is.
    pub fn console_socket(&self, hostname: &str) -> PathBuf {
        self.dir.join(format!("{hostname}.console"))
    }

    /// The DHCPv6 messages seen on the rack's bridge so far (IPv6 racks), in order: source,
    /// destination and UDP payload.
    pub fn dhcpv6_captured(&self) -> Result<Vec<Captured6>> {
        let bytes = std::fs::read(self.dir.join(CAPTURE_FILE))?;
        read_pcap(&bytes)
    }

    /// xdpboot's HTTP access log so far, one entry per response.
    pub fn access_log(&self) -> Vec<Access> {
        self.daemon_log()
            .lines()
            .filter(|l| l.contains("xdpboot::http::access"))
            .filter_map(|l| {
                let field = |key: &str| {
                    l.split_whitespace()
                        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                        .map(|v| v.trim_matches('"').to_owned())
                };
                Some(Access {
                    scheme: field("scheme")?,
                    path: field("path")?,
                    status: field("status")?.parse().ok()?,
                    client: field("client"),
                })
            })
            .collect()
    }

    /// xdpboot's address on this rack, as URLs write it.
    pub fn server_host(&self) -> String {
        match self.setup.ipv6 {
            Some(_) => format!("[{SERVER6}]"),
            None => SERVER.to_string(),
        }
    }

    /// xdpboot's address on this rack.
    pub fn server_address(&self) -> IpAddr {
        match self.setup.ipv6 {
            Some(_) => SERVER6.into(),
            None => SERVER.into(),
        }
    }

    /// Starts every node's VM, each on a tap of its own on the rack's bridge.
    pub fn boot_all(&mut self) -> Result<()> {
        for node in self.setup.nodes.clone() {
            self.boot(&node)?;
        }
        Ok(())
    }

    /// Starts `node`'s VM on a new tap.
    pub fn boot(&mut self, node: &Node) -> Result<usize> {
        let index = self.vms.len();
        let tap = format!("tap{index}");
        self.rack.ip(&format!("tuntap add dev {tap} mode tap"))?;
        self.rack.attach(&tap, "br0")?;
        let mut spec = VmSpec::new(&node.hostname, node.mac, node.firmware);
        spec.chain = node.chain;
        spec.disk = node.disk.clone();
        if self.setup.https && self.setup.firmware_trusts_ca && node.firmware.is_ovmf() {
            spec.https_ca = Some(self.ca_esl());
        }
        if self.setup.keep {
            spec.console_socket = Some(self.console_socket(&node.hostname));
        }
        let vm = Vm::start(&self.rack, &tap, spec, self.dir.path())?;
        self.vms.push(vm);
        Ok(index)
    }

    /// Powers VM `index` off (if it still runs) and on again on its tap, with fresh firmware
    /// variables: what a node's BMC does when Ironic reboots it.
    pub fn reboot(&mut self, index: usize) -> Result<()> {
        let old = self.vms.remove(index);
        let spec = old.spec.clone();
        // The old QEMU lets go of the tap before the new one opens it.
        drop(old);
        let vm = Vm::start(&self.rack, &format!("tap{index}"), spec, self.dir.path())?;
        self.vms.insert(index, vm);
        Ok(())
    }

    /// `curl` from the probe host (a machine on the rack's link that is no node): the HTTP
    /// status and the body.
    pub fn fetch(&self, url: &str) -> Result<(u16, Vec<u8>)> {
        self.fetch_from(&self.probe, url)
    }

    /// `curl` on the boot server itself, as its operator would.
    pub fn fetch_on_server(&self, url: &str) -> Result<(u16, Vec<u8>)> {
        self.fetch_from(&self.server, url)
    }

    fn fetch_from(&self, ns: &NetNs, url: &str) -> Result<(u16, Vec<u8>)> {
        let body = self.dir.join(format!("fetch-{}", crate::next_id()));
        let mut args = vec!["-s", "-g", "-o"];
        let body_arg = body.display().to_string();
        args.push(&body_arg);
        args.extend(["-w", "%{http_code}", "--max-time", "10"]);
        let ca = self.ca_pem().display().to_string();
        if url.starts_with("https:") {
            args.extend(["--cacert", &ca]);
        }
        args.push(url);
        let status = ns.exec(Path::new("curl"), &args)?;
        let status: u16 = status.trim().parse().context("curl printed no status")?;
        let bytes = std::fs::read(&body).unwrap_or_default();
        let _ = std::fs::remove_file(&body);
        Ok((status, bytes))
    }

    /// What a person needs to look at the lab, one line each.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "rack namespace {} (bridge br0, the VMs' taps), server namespace {} ({SERVER}/24 on {SERVER_IF}), probe namespace {} ({PROBE}/24)",
                self.rack.name(),
                self.server.name(),
                self.probe.name()
            ),
            format!("xdpboot config: {}", self.config.display()),
            format!(
                "xdpboot log: {}",
                self.daemon_log_path(self.daemon_starts).display()
            ),
            format!("dnsmasq log: {}", self.dir.join("dnsmasq.log").display()),
            format!(
                "try: ip netns exec {} curl -s 'http://{SERVER}/boot.ipxe?mac={}'",
                self.probe.name(),
                self.setup
                    .nodes
                    .first()
                    .map_or("52:54:00:18:01:01".to_owned(), |node| node.mac.to_string())
            ),
        ];
        for vm in &self.vms {
            let mut line = format!(
                "node {} ({}, {}): serial console log {}",
                vm.spec.name,
                vm.spec.mac,
                vm.spec.firmware.name(),
                vm.serial.display()
            );
            if let Some(socket) = &vm.spec.console_socket {
                let _ = write!(
                    line,
                    "; console: socat -,rawer UNIX-CONNECT:{}",
                    socket.display()
                );
            }
            lines.push(line);
        }
        lines
    }
}

/// Where an IPv6 rack's capture goes, in the lab's directory.
const CAPTURE_FILE: &str = "dhcp6.pcap";

/// tcpdump on the rack's bridge, writing every DHCPv6 and port-4011 datagram as it comes (-U).
fn start_capture(rack: &NetNs, dir: &Path) -> Result<crate::ChildGuard> {
    let file = dir.join(CAPTURE_FILE);
    let args: Vec<std::ffi::OsString> = vec![
        "-i".into(),
        "br0".into(),
        "-U".into(),
        "-n".into(),
        "-w".into(),
        file.clone().into(),
        "udp port 546 or udp port 547 or udp port 4011".into(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let log = dir.join("tcpdump.log");
    let mut child = rack.spawn("tcpdump", Path::new("tcpdump"), &args, &[], log.clone())?;
    child.wait_until("capturing", STARTUP_TIMEOUT, || {
        Ok(std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on")))
    })?;
    Ok(child)
}

/// One DHCPv6 datagram of a capture.
#[derive(Debug, Clone)]
pub struct Captured6 {
    pub src: std::net::SocketAddrV6,
    pub dst: std::net::SocketAddrV6,
    pub payload: Vec<u8>,
}

/// The UDP-over-IPv6 frames of a pcap file (libpcap's format: a 24-byte header, then a 16-byte
/// header before each frame; little-endian, Ethernet, as tcpdump writes here).
fn read_pcap(bytes: &[u8]) -> Result<Vec<Captured6>> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    if u32_at(0) != Some(0xa1b2_c3d4) {
        bail!("not a little-endian pcap file");
    }
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(len) = u32_at(at + 8) {
        let start = at + 16;
        let Some(frame) = bytes.get(start..start + len as usize) else {
            break; // the last frame is still being written
        };
        if let Ok(udp) = boot_common::wire::UdpFrame6::parse(frame) {
            out.push(Captured6 {
                src: udp.src(),
                dst: udp.dst(),
                payload: udp.payload().to_vec(),
            });
        }
        at = start + len as usize;
    }
    Ok(out)
}

/// One line of xdpboot's HTTP access log.
#[derive(Debug, Clone)]
pub struct Access {
    pub scheme: String,
    pub path: String,
    pub status: u16,
    /// The client's address, as logged.
    pub client: Option<String>,
}

/// The lab's xdpboot config: the embedded default with the roots, TLS files and URL secret
/// moved into the lab, plus what to boot: `[boot]` for x86-64 nodes, and
/// `[boot.arch.uefi-arm64]` with `arm64`'s kernel and initrd when the rack has arm64 nodes.
pub fn lab_config(
    assets: &Assets,
    arm64: Option<&Arm64Assets>,
    setup: &RackSetup,
    dir: &Path,
    tftp_root: &Path,
) -> String {
    let mut text = String::new();
    let q = |p: &Path| toml_string(&p.display().to_string());
    let _ = writeln!(
        text,
        "# cargo xtask run / tests/firmware_boot.rs: xdpboot's embedded default, with the roots\n\
         # pointing at the lab's cache (.cache/lab), the generated TLS files and URL secret kept\n\
         # in the lab's directory (HTTPS off unless the lab asks for it), and what the nodes boot.\n"
    );
    // Stopping the lab's xdpboot takes the server away at once, transfers in flight and all
    // (tests/firmware_boot.rs stops it mid-download), rather than draining them first.
    let _ = writeln!(text, "[server]\ndrain_secs = 0\n");
    let _ = writeln!(text, "[tftp]\nroot = {}\n", q(tftp_root));
    // The lab serves exactly its own loaders (Debian 13's iPXE in its roots; the signed shim and
    // GRUB and Debian 12's PXELINUX from their unpacked packages, found by the package search),
    // never the host's `ipxe` package behind them ([`Start::NoConfig`] shows that path).
    let chain = if setup.debian12_chain {
        &assets.chain_loaders_debian12
    } else {
        &assets.chain_loaders
    };
    // arm64's shim and GRUB are in their own packages (shimaa64.efi, grubaa64.efi).
    let arm64_chain = arm64.into_iter().flat_map(|a| a.chain_loaders());
    let search: Vec<String> = chain
        .iter()
        .cloned()
        .chain(arm64_chain)
        .map(|d| q(&d))
        .collect();
    let _ = writeln!(text, "[loaders]\nsearch = [{}]\n", search.join(", "));
    if setup.ipv6.is_some() {
        let _ = writeln!(
            text,
            "[ipv6]\nenabled = true\naddresses = {{ {SERVER_IF} = \"{SERVER6}\" }}\n"
        );
    }
    let _ = writeln!(
        text,
        "[http]\nroot = {}\nhttps_port = {}\ntls_cert = {}\ntls_key = {}\ntls_names = [\"{SERVER}\", \"{SERVER6}\"]\npacing_mbit = {}\n",
        q(setup.http_root.as_deref().unwrap_or(&assets.http_root)),
        if setup.https { 443 } else { 0 },
        q(&dir.join("tls/server.pem")),
        q(&dir.join("tls/server.key")),
        setup.http_pacing_mbit,
    );
    let keep = |cmdline: &str| {
        if setup.keep {
            format!("{cmdline} xdpboot.keep")
        } else {
            cmdline.to_owned()
        }
    };
    let cmdline = keep(CMDLINE);
    let _ = writeln!(
        text,
        "[boot]\nkernel = \"{KERNEL}\"\ninitrds = [\"{SHARED_INITRD}\"]\ncmdline = {}\n\
         retries = {}\nretry_delay = {}\nhttps = {}\nsecret_file = {}\n",
        toml_string(&cmdline),
        setup.retries,
        setup.retry_delay,
        // xdpboot puts one scheme in every script's URLs; BIOS iPXE has no TLS (see
        // `RackSetup::https`), and arm64 nodes are not given the lab's CA.
        setup.https && setup.nodes.iter().all(|n| n.firmware.is_ovmf()),
        q(&dir.join("url-secret")),
    );
    if let Some(arm64) = arm64 {
        let _ = writeln!(
            text,
            "[boot.arch.uefi-arm64]\nkernel = {}\ninitrds = [{}]\ncmdline = {}\n",
            q(&arm64.kernel),
            q(&arm64.initrd),
            toml_string(&keep(CMDLINE_ARM64)),
        );
    }
    let _ = writeln!(
        text,
        "[[overlay]]\npath = \"{NODE_FILE}\"\nmode = \"0644\"\n\
         content = \"hostname={{{{hostname}}}}\\nmac={{{{mac}}}}\\nuuid={{{{uuid}}}}\\narch={{{{arch}}}}\\ntoken={{{{token}}}}\\nrack={{{{rack}}}}\\n\"\n"
    );
    for node in &setup.nodes {
        let _ = writeln!(
            text,
            "[[node]]\nmac = \"{}\"\nhostname = \"{}\"\nvars = {{ rack = \"{}\" }}\n",
            node.mac, node.hostname, node.rack_label
        );
    }
    // Each node boots through its own chain: a rule for it (by MAC) ahead of the table.
    let mut rules = setup.policy_first.clone().unwrap_or_default();
    for node in &setup.nodes {
        let rule = match node.chain {
            Chain::Ipxe => continue,
            Chain::ShimGrub => "loader = \"shim\"",
            Chain::Pxelinux => "loader = \"pxelinux\"",
            Chain::LocalDisk => "local = true",
            // The firmware gets iPXE from the table below; iPXE chains GRUB by its URL.
            Chain::IpxeGrub => "ipxe = true\nhttp = \"http://{server}/grubx64.efi\"",
        };
        let _ = writeln!(
            rules,
            "[[policy]]\nname = \"{}-{}\"\nmac = [\"{}\"]\n{rule}\n",
            node.hostname,
            node.chain.name(),
            node.mac
        );
    }
    if let Some(policy) = &setup.policy {
        rules.push_str(policy);
        rules.push('\n');
    }
    if setup.https {
        // The default table with https for iPXE's EFI builds and for UEFI HTTP boot: OVMF
        // trusts the lab's CA from fw_cfg and fetches the loader over TLS 1.2 DHE (Debian 12's
        // OVMF has no elliptic curves: xdpboot's `http::ffdhe`), and Debian 13's iPXE reads the
        // CA from the TlsCaCertificate variable OVMF fills. BIOS iPXE has no TLS.
        text.push_str(&rules);
        text.push_str(
            "[[policy]]\nname = \"ipxe-efi-https\"\nipxe = true\narch = [\"uefi-x64\"]\n\
             http = \"https://{server}:{https_port}/boot.ipxe?mac={mac}&arch={arch}\"\n\n\
             [[policy]]\nname = \"uefi-https-x64\"\nfirmware = \"http\"\narch = [\"uefi-x64\"]\n\
             http = \"https://{server}:{https_port}/ipxe-amd64.efi\"\n\n",
        );
        text.push_str(LAB_TABLE);
    } else if !rules.is_empty() {
        // A [[policy]] list replaces the default table: write it out after the nodes' rules.
        text.push_str(&rules);
        text.push_str(LAB_TABLE);
    }
    text
}

/// The embedded default's policy table, as far as the lab's machines need it.
const LAB_TABLE: &str = "[[policy]]\nname = \"ipxe\"\nipxe = true\n\
     http = \"http://{server}:{http_port}/boot.ipxe?mac={mac}&arch={arch}\"\n\n\
     [[policy]]\nname = \"uefi-http-x64\"\nfirmware = \"http\"\narch = [\"uefi-x64\"]\n\
     http = \"http://{server}:{http_port}/ipxe-amd64.efi\"\n\n\
     [[policy]]\nname = \"bios\"\narch = [\"bios\"]\ntftp = \"undionly.kpxe\"\n\n\
     [[policy]]\nname = \"uefi-x64\"\narch = [\"uefi-x64\"]\ntftp = \"ipxe-amd64.efi\"\n\n\
     [[policy]]\nname = \"uefi-arm64\"\narch = [\"uefi-arm64\"]\ntftp = \"ipxe-arm64.efi\"\n";

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Router advertisements

/// Sends ICMPv6 router advertisements with router lifetime 0 (RFC 4861 §4.2: "not a default
/// router") from the link-local address of an interface, every [`RA_INTERVAL`] and in answer
/// to router solicitations, so iPXE's IPv6 configurator finishes at once instead of waiting
/// ~13 s. What they advertise is [`Advertised`]. Stops on drop.
pub struct RouterAdvertiser {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What a [`RouterAdvertiser`] says about the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advertised {
    /// No prefix, no M/O flags (so no DHCPv6 either): there is no IPv6 here to wait for.
    NoRouter,
    /// The O flag (RFC 4861 §4.2: "other configuration" from DHCPv6, RFC 8415 §18.2.6) and
    /// `prefix`/64 on-link and autonomous (§4.6.2: hosts form their addresses in it, RFC 4862).
    OtherConfig { prefix: Ipv6Addr },
}

impl Advertised {
    /// The RA's ICMPv6 message: type 134, code 0, checksum (the kernel fills it in for ICMPv6
    /// raw sockets), cur hop limit 64, flags, router lifetime 0, reachable time 0, retrans
    /// timer 0; then a Prefix Information option (type 3, 4 units of 8 octets) when there is a
    /// prefix: length 64, flags L and A, valid and preferred lifetimes, reserved, the prefix.
    fn message(self) -> Vec<u8> {
        let flags = match self {
            Advertised::NoRouter => 0,
            Advertised::OtherConfig { .. } => 0x40,
        };
        let mut ra = vec![134, 0, 0, 0, 64, flags, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        if let Advertised::OtherConfig { prefix } = self {
            ra.extend([3, 4, 64, 0xc0]);
            ra.extend(3600u32.to_be_bytes());
            ra.extend(3600u32.to_be_bytes());
            ra.extend([0; 4]);
            ra.extend(prefix.octets());
        }
        ra
    }
}

impl RouterAdvertiser {
    pub fn start(ns: &NetNs, iface: &str, advertised: Advertised) -> Result<RouterAdvertiser> {
        // No duplicate address detection: the link-local address is usable at once.
        run_command(
            Command::new("ip")
                .args(["netns", "exec", ns.name(), "sysctl", "-qw"])
                .arg(format!("net.ipv6.conf.{iface}.accept_dad=0")),
            COMMAND_TIMEOUT,
        )?;
        let name = iface.to_owned();
        let (socket, index) = ns.run(move || {
            let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
            socket.bind_device(Some(name.as_bytes()))?;
            // RFC 4861 §6.1.2: hosts drop RAs whose hop limit is not 255.
            socket.set_multicast_hops_v6(255)?;
            socket.set_unicast_hops_v6(255)?;
            let index = nix::net::if_::if_nametoindex(name.as_str())?;
            // Solicitations go to all-routers.
            socket.join_multicast_v6(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2), index)?;
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            Ok((socket, index))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let ra = advertised.message();
        let thread = std::thread::spawn(move || advertise(&socket, index, &ra, &stopping));
        Ok(RouterAdvertiser {
            stop,
            thread: Some(thread),
        })
    }
}

fn advertise(socket: &Socket, index: u32, ra: &[u8], stop: &AtomicBool) {
    let all_nodes = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, index);
    let mut last = Instant::now() - RA_INTERVAL;
    let mut buf = [0u8; 1500];
    let mut reader = socket;
    while !stop.load(Ordering::Relaxed) {
        // A router solicitation is ICMPv6 type 133 (raw ICMPv6 sockets get no IP header).
        let solicited = matches!(reader.read(&mut buf), Ok(n) if n > 0 && buf[0] == 133);
        if solicited || last.elapsed() >= RA_INTERVAL {
            // Fails until the link-local address exists; the next round tries again.
            let _ = socket.send_to(ra, &all_nodes.into());
            last = Instant::now();
        }
    }
}

impl Drop for RouterAdvertiser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
