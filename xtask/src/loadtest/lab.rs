//! The storm's lab: private namespaces on one bridged segment, the boot files, and the servers
//! under test.
//!
//! ```text
//!   lan: bridge br0, 198.18.100.0/24
//!   ├─ cli   198.18.100.100  DHCP and TFTP from the servers' segment, as ROMs
//!   ├─ srv1  198.18.100.1    xdpboot (or dnsmasq + nginx)
//!   ├─ srv2  198.18.100.2    xdpboot #2 (--instances 2), … up to srv8
//!   └─ rtr   198.18.100.254  eth1 198.18.102.1 ── far 198.18.102.2 (HTTP, behind a router)
//! ```
//! Every URL a server hands out names its own address, which `far` reaches through `rtr`: the
//! servers see HTTP clients from an address off their links, as they would see nodes behind a
//! router, so xdpboot's neighbour check (a script or overlay only to the on-link host whose
//! MAC asked for it) does not apply to the simulated nodes that share one address.
//!
//! The servers of a storm run at once, one per `srv` namespace; xdpboot and its peer run one
//! after the other in `srv1`, on the same files. Fields drop in order: processes first
//! ([`Running`] is dropped before the [`Lab`]), then the namespaces (and every link in them),
//! then the files.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use boot_tests::{ChildGuard, NetNs, TempDir, unique_ifindex, veth, veth_with_index};

use super::{ARCHES, Args, Backend};
use crate::bench_http;
use crate::loadgen::{self, Settings};

/// The client side of the servers' segment (the nodes' DHCP and TFTP).
pub(super) const CLIENT_IF: &str = "eth0";
pub(super) const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 100);
/// The first server's address on the nodes' segment; instance `i` has `.1 + i`.
pub(super) const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const ROUTER_LAN_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 254);
const ROUTER_UP_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 102, 1);
const FAR_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 102, 2);
const HTTP_PORT: u16 = 80;
/// Where every xdpboot's admin listener (`/metrics`) listens, for `--prometheus`.
pub(super) const ADMIN_PORT: u16 = 9180;
/// How long a server may take to answer its first DISCOVER and accept its first connection.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The overlay file xdpboot generates per node, and the static one nginx serves.
const OVERLAY_FILE: &str = "etc/xdpboot-node";
/// What the nodes boot (nothing reads it: the storm stops at the downloads).
const CMDLINE: &str = "console=ttyS0 quiet";
/// Lines of a server's log shown when it failed.
const LOG_TAIL: usize = 15;

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ServerKind {
    /// xdpboot alone: proxy DHCP, TFTP and HTTP.
    Xdpboot(Backend),
    /// dnsmasq (proxy DHCP and TFTP) and nginx (HTTP).
    DnsmasqNginx,
}

impl ServerKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            ServerKind::Xdpboot(Backend::Xdp) => "xdpboot (xdp backend)",
            ServerKind::Xdpboot(Backend::Udp) => "xdpboot (udp backend)",
            ServerKind::DnsmasqNginx => "dnsmasq + nginx",
        }
    }
}

pub(super) struct Lab {
    pub cli: NetNs,
    /// One per instance: `srv[0]` is the first server's.
    pub srv: Vec<NetNs>,
    pub far: NetNs,
    /// Never used after the build: held so the segment and the router live (and are removed)
    /// with the lab.
    _lan: NetNs,
    _rtr: NetNs,
    pub dir: TempDir,
}

/// Instance `i`'s address on the nodes' segment.
pub(super) fn server_ip(i: usize) -> Ipv4Addr {
    let offset = u32::try_from(i).expect("instances are few (MAX_INSTANCES)");
    Ipv4Addr::from(u32::from(SERVER_IP) + offset)
}

impl Lab {
    /// Writes the boot files and builds the namespaces, with `instances` server namespaces.
    pub(super) fn build(args: &Args) -> anyhow::Result<Lab> {
        let dir = TempDir::new("loadtest").context("creating the lab directory")?;
        write_files(&dir, args)?;
        let lan = NetNs::new("lan")?;
        let cli = NetNs::new("cli")?;
        let rtr = NetNs::new("rtr")?;
        let far = NetNs::new("far")?;
        lan.add_bridge("br0")?;
        veth(&lan, "cli", &cli, CLIENT_IF)?;
        veth(&lan, "rtr", &rtr, "eth0")?;
        for port in ["cli", "rtr"] {
            lan.attach(port, "br0")?;
        }
        veth(&rtr, "eth1", &far, "eth0")?;
        cli.add_address(CLIENT_IF, &format!("{CLIENT_IP}/24"))?;
        rtr.add_address("eth0", &format!("{ROUTER_LAN_IP}/24"))?;
        rtr.add_address("eth1", &format!("{ROUTER_UP_IP}/24"))?;
        far.add_address("eth0", &format!("{FAR_IP}/24"))?;
        far.ip(&format!("route add default via {ROUTER_UP_IP}"))?;
        rtr.sysctl("net.ipv4.ip_forward=1")?;
        let mut srv = Vec::new();
        for i in 0..args.instances {
            let ns = NetNs::new(&format!("srv{}", i + 1))?;
            let port = format!("srv{}", i + 1);
            // The served device gets an interface index of its own: BPF links are system-wide.
            veth_with_index(&ns, "eth0", Some(unique_ifindex()), &lan, &port)?;
            lan.attach(&port, "br0")?;
            ns.add_address("eth0", &format!("{}/24", server_ip(i)))?;
            ns.ip(&format!(
                "route add {}/24 via {ROUTER_LAN_IP}",
                Ipv4Addr::from(u32::from(FAR_IP) & !0xff)
            ))?;
            srv.push(ns);
        }
        // Every node opens a TCP connection (far) and a TFTP socket (cli): room for more than
        // the default 28,000 ephemeral ports.
        for ns in [&far, &cli] {
            ns.sysctl("net.ipv4.ip_local_port_range=1024 65535")?;
        }
        Ok(Lab {
            cli,
            srv,
            far,
            _lan: lan,
            _rtr: rtr,
            dir,
        })
    }

    fn tftp_root(&self) -> PathBuf {
        self.dir.join("tftp")
    }

    fn http_root(&self) -> PathBuf {
        self.dir.join("http")
    }

    /// Starts `kind` (xdpboot in every `srv` namespace, its peer in the first) and waits until
    /// each instance serves, one answers a PXE DISCOVER from `cli`, and each accepts a
    /// connection from `far`.
    pub(super) fn start(
        &self,
        kind: ServerKind,
        args: &Args,
        xdpboot: &Path,
    ) -> anyhow::Result<Running> {
        let mut children = Vec::new();
        let mut addresses = Vec::new();
        match kind {
            ServerKind::Xdpboot(backend) => {
                let config = self.dir.join("xdpboot.toml");
                std::fs::write(&config, self.xdpboot_config())?;
                let backend = match backend {
                    Backend::Xdp => "xdp",
                    Backend::Udp => "udp",
                };
                let words = [
                    "run",
                    "--interface",
                    "eth0",
                    "--backend",
                    backend,
                    "--config",
                ];
                let argv: Vec<&OsStr> = words
                    .iter()
                    .map(OsStr::new)
                    .chain([config.as_os_str()])
                    .collect();
                for (i, srv) in self.srv.iter().enumerate() {
                    children.push(srv.spawn(
                        &format!("xdpboot #{}", i + 1),
                        xdpboot,
                        &argv,
                        // Warnings, and the start and stop lines; not a line per DHCP answer,
                        // TFTP transfer or HTTP request (nginx and dnsmasq log none either).
                        &[
                            (
                                "RUST_LOG",
                                "warn,xdpboot=info,xdpboot::net::service=warn,xdpboot::http=warn,\
                                 xdpboot::tftp=warn",
                            ),
                            ("NO_COLOR", "1"),
                        ],
                        self.dir.join(format!("xdpboot-{}.log", i + 1)),
                    )?);
                    addresses.push(server_ip(i));
                }
            }
            ServerKind::DnsmasqNginx => {
                let srv = &self.srv[0];
                addresses.push(SERVER_IP);
                let argv = self.dnsmasq_args(args);
                let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
                children.push(srv.spawn(
                    "dnsmasq",
                    &args.dnsmasq,
                    &argv,
                    &[],
                    self.dir.join("dnsmasq.log"),
                )?);
                let prefix = self.dir.join("nginx");
                std::fs::create_dir_all(prefix.join("logs"))?;
                let conf = prefix.join("nginx.conf");
                std::fs::write(
                    &conf,
                    bench_http::nginx_config_on(
                        &prefix,
                        &self.http_root(),
                        Ipv4Addr::UNSPECIFIED,
                        HTTP_PORT,
                        None,
                    ),
                )?;
                let argv: Vec<&OsStr> = vec![
                    "-p".as_ref(),
                    prefix.as_os_str(),
                    "-c".as_ref(),
                    conf.as_os_str(),
                    "-e".as_ref(),
                    "stderr".as_ref(),
                ];
                children.push(srv.spawn(
                    "nginx",
                    &args.nginx,
                    &argv,
                    &[],
                    self.dir.join("nginx.log"),
                )?);
            }
        }
        let mut running = Running {
            kind,
            children,
            addresses,
        };
        self.wait_ready(&mut running)?;
        Ok(running)
    }

    fn wait_ready(&self, running: &mut Running) -> anyhow::Result<()> {
        // Each xdpboot logs `serving` once it answers (boot_tests::Daemon::start_serving); a
        // DISCOVER then shows that answers reach the nodes' side.
        if matches!(running.kind, ServerKind::Xdpboot(_)) {
            let deadline = Instant::now() + READY_TIMEOUT;
            for (i, child) in running.children.iter_mut().enumerate() {
                let log = self.dir.join(format!("xdpboot-{}.log", i + 1));
                child.wait_until(
                    "serving",
                    deadline.saturating_duration_since(Instant::now()),
                    || {
                        let text = std::fs::read_to_string(&log).unwrap_or_default();
                        Ok(boot_tests::Serving::find(&text, "eth0").is_some())
                    },
                )?;
            }
        }
        let probe = Settings::probe(CLIENT_IF);
        let answered = self
            .cli
            .run(|| loadgen::wait_for_answer(&probe, READY_TIMEOUT))?;
        running.check()?;
        if !answered {
            bail!(
                "{} did not answer a PXE DISCOVER within {READY_TIMEOUT:?}:\n{}",
                running.kind.name(),
                running.log_tail()
            );
        }
        for address in running.addresses.clone() {
            let http = SocketAddrV4::new(address, HTTP_PORT);
            let connected = self.far.run(|| {
                let deadline = Instant::now() + READY_TIMEOUT;
                while Instant::now() < deadline {
                    if TcpStream::connect_timeout(&http.into(), Duration::from_secs(1)).is_ok() {
                        return Ok(true);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(false)
            })?;
            running.check()?;
            if !connected {
                bail!(
                    "{} accepted no connection on {http} within {READY_TIMEOUT:?}:\n{}",
                    running.kind.name(),
                    running.log_tail()
                );
            }
        }
        Ok(())
    }

    /// xdpboot's embedded default with the lab's roots and what the nodes boot: the kernel,
    /// the shared initrd, and a generated overlay per node.
    fn xdpboot_config(&self) -> String {
        let http = self.http_root();
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# cargo xtask loadtest: xdpboot's embedded default (flood shedding included), \
             with the lab's roots and boot files; HTTPS off.\n"
        );
        let _ = writeln!(
            text,
            "[tftp]\nroot = \"{}\"\n\n[http]\nroot = \"{}\"\nport = {HTTP_PORT}\nhttps_port = 0\n",
            self.tftp_root().display(),
            http.display()
        );
        let _ = writeln!(
            text,
            "[boot]\nkernel = \"{}\"\ninitrds = [\"{}\"]\ncmdline = \"{CMDLINE}\"\nsecret_file = \"{}\"\n",
            http.join("kernel").display(),
            http.join("initrd.img").display(),
            self.dir.join("url-secret").display()
        );
        // Reachable from the lab's namespaces, for `--prometheus`; the lab is private.
        let _ = writeln!(text, "[admin]\nlisten = \"0.0.0.0:{ADMIN_PORT}\"\n");
        let _ = writeln!(
            text,
            "[[overlay]]\npath = \"{OVERLAY_FILE}\"\nmode = \"0644\"\n\
             content = \"hostname={{{{hostname}}}}\\nmac={{{{mac}}}}\\nuuid={{{{uuid}}}}\\n\
             token={{{{token}}}}\\n\""
        );
        text
    }

    /// dnsmasq as the usual proxy-DHCP setup for chainloading iPXE (as `bench-dhcp` runs it,
    /// plus TFTP): PXE ROMs get the loaders through `pxe-service` lines, iPXE (option 175)
    /// gets the script URL through `dhcp-boot`, which dnsmasq honours in proxy mode. No log
    /// line per answer or transfer; TFTP transfers capped as high as xdpboot's default.
    fn dnsmasq_args(&self, args: &Args) -> Vec<String> {
        let subnet = Ipv4Addr::from(u32::from(SERVER_IP) & !0xff);
        let mut argv: Vec<String> = vec![
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            "--interface=eth0".into(),
            "--bind-interfaces".into(),
            format!("--dhcp-range={subnet},proxy"),
            "--dhcp-match=set:ipxe,175".into(),
        ];
        for (csa, loader) in [
            ("x86PC", "undionly.kpxe"),
            ("x86-64_EFI", "ipxe-amd64.efi"),
            ("ARM64_EFI", "ipxe-arm64.efi"),
        ] {
            argv.push(format!("--pxe-service=tag:!ipxe,{csa},iPXE,{loader}"));
        }
        argv.extend([
            format!("--dhcp-boot=tag:ipxe,http://{SERVER_IP}:{HTTP_PORT}/boot.ipxe"),
            "--enable-tftp".into(),
            format!("--tftp-root={}", self.tftp_root().display()),
            format!("--tftp-max={}", args.concurrency.max(4096)),
            "--quiet-dhcp".into(),
            "--quiet-tftp".into(),
            format!(
                "--dhcp-leasefile={}",
                self.dir.join("dnsmasq.leases").display()
            ),
            format!("--pid-file={}", self.dir.join("dnsmasq.pid").display()),
            "--log-facility=-".into(),
        ]);
        argv
    }
}

/// The servers of one storm; stopped on drop.
pub(super) struct Running {
    pub kind: ServerKind,
    children: Vec<ChildGuard>,
    /// Each instance's address on the nodes' segment (xdpboot: one per child, in order).
    pub addresses: Vec<Ipv4Addr>,
}

impl Running {
    /// Every process of the servers (nginx's workers included).
    pub(super) fn pids(&self) -> Vec<u32> {
        self.children
            .iter()
            .flat_map(|c| bench_http::process_and_children(c.pid()))
            .collect()
    }

    /// Kills instance `i` outright (SIGKILL), as a crash or a pulled plug would: no drain.
    pub(super) fn kill(&self, i: usize) -> anyhow::Result<()> {
        self.children
            .get(i)
            .with_context(|| format!("there is no instance {}", i + 1))?
            .signal(nix::sys::signal::Signal::SIGKILL)
    }

    fn check(&mut self) -> anyhow::Result<()> {
        for child in &mut self.children {
            child.check_running()?;
        }
        Ok(())
    }

    /// The last lines of every server's log.
    pub(super) fn log_tail(&self) -> String {
        let mut out = String::new();
        for child in &self.children {
            let log = child.log();
            let lines: Vec<&str> = log.lines().collect();
            for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
                let _ = writeln!(out, "    {line}");
            }
        }
        out
    }
}

/// The loaders (one per architecture, all the same size), the kernel, the shared initrd, and
/// for nginx a static script and a static overlay of the size xdpboot generates.
fn write_files(dir: &TempDir, args: &Args) -> anyhow::Result<()> {
    let tftp = dir.join("tftp");
    let http = dir.join("http");
    std::fs::create_dir(&tftp)?;
    std::fs::create_dir(&http)?;
    for (_, _, loader) in ARCHES {
        bench_http::write_image(&tftp.join(loader), args.loader_bytes())
            .with_context(|| format!("writing {loader}"))?;
    }
    // One URL secret for every instance, made before any starts: an overlay URL one signs is
    // then valid on all, and two instances starting at once do not race to create it (the
    // loser would refuse to start rather than overwrite it).
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| std::io::Read::read_exact(&mut random, &mut secret))
        .context("reading /dev/urandom for the URL secret")?;
    std::fs::write(dir.join("url-secret"), secret)?;
    bench_http::write_image(&http.join("kernel"), args.kernel_mib << 20)
        .context("writing the kernel")?;
    bench_http::write_image(&http.join("initrd.img"), args.initrd_mib << 20)
        .context("writing the initrd")?;
    let base = format!("http://{SERVER_IP}:{HTTP_PORT}");
    std::fs::write(
        http.join("boot.ipxe"),
        format!(
            "#!ipxe\n\
             echo the same static script for every node: nginx renders nothing per node\n\
             kernel --name kernel {base}/kernel initrd=0.img initrd=overlay.cpio {CMDLINE} || goto failed\n\
             initrd --name 0.img {base}/initrd.img || goto failed\n\
             initrd --name overlay.cpio {base}/overlay.cpio || goto failed\n\
             boot || goto failed\n\
             :failed\n\
             exit 1\n"
        ),
    )?;
    let node = b"hostname=node-025b00000001\nmac=02:5b:00:00:00:01\n\
                 uuid=00000000-0000-0000-0000-000000000001\ntoken=0123456789abcdef0123456789abcdef\n";
    std::fs::write(
        http.join("overlay.cpio"),
        newc_cpio(&[(OVERLAY_FILE, node.as_slice())]),
    )?;
    Ok(())
}

/// A newc cpio archive of `files` (mode 0644), ended by its trailer.
fn newc_cpio(files: &[(&str, &[u8])]) -> Vec<u8> {
    fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let mut out = Vec::new();
    for (i, (name, data)) in files.iter().enumerate() {
        entry(&mut out, i as u32 + 1, name, 0o100_644, data);
    }
    entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_overlay_is_a_newc_archive() {
        let archive = newc_cpio(&[("etc/x", b"abc")]);
        assert!(archive.starts_with(b"070701"));
        assert_eq!(archive.len() % 4, 0);
        // 110-byte header + "etc/x\0" padded to 116, data padded to 4; then the trailer.
        assert_eq!(&archive[110..115], b"etc/x");
        assert_eq!(&archive[116..119], b"abc");
        assert!(archive.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
