//! `cargo xtask loadtest`: a boot storm. N simulated machines, each with its own MAC, go through
//! the whole network-boot chain against xdpboot, and (with `--against dnsmasq+nginx`) the same
//! storm runs against dnsmasq (proxy DHCP and its TFTP) with nginx serving the same files, in
//! the same run, with the ratio printed.
//!
//! Each simulated node, as a PXE ROM and then the iPXE it loads would:
//! 1. broadcasts a PXE DISCOVER from port 68 and waits for a proxy OFFER;
//! 2. sends a REQUEST to the proxy's port 4011 and waits for the ACK naming its loader (BIOS
//!    nodes send a boot-server request for the first menu item when the OFFER carried a PXE
//!    menu, as dnsmasq's do);
//! 3. fetches the loader over TFTP (RFC 1350 with a blksize option, lockstep);
//! 4. as iPXE, broadcasts a DISCOVER with user class "iPXE" and takes the script URL from the
//!    OFFER (or from a 4011 ACK when the OFFER has none, as iPXE does);
//! 5. fetches the script over HTTP and the kernel, the shared initrd and its own overlay that
//!    the script names, on one kept-alive connection.
//!
//! The DHCP and TFTP side runs where ROMs are, on the server's link (the `cli` namespace):
//! DISCOVERs leave as whole frames from the node's own MAC (`loadgen`'s AF_PACKET socket), and
//! all replies come back to one UDP socket on port 68, matched by xid and chaddr. The HTTP side
//! runs from a namespace behind a router (`far`): xdpboot refuses a script or overlay to an
//! on-link host whose neighbour entry names another MAC than the one asked for, and thousands
//! of simulated nodes share one client address. Behind a router the server has no neighbour
//! entry for the client, so the check does not apply; the overlay's signature still does.
//!
//! After each storm, a costing pass (`cost.rs`, `--cost-nodes`) takes fresh nodes through the
//! chain one stage at a time, with a barrier between stages, and prints each stage's CPU per
//! node for every server: the storm overlaps its stages and cannot be split that way.
//!
//! Scale-out (`--instances N`): N xdpboot instances on the nodes' segment, one config and one
//! URL secret, no coordination; every instance answers every DISCOVER and a node goes on with
//! the first offer it gets, as firmware does. `--kill-one-after S` kills the first instance S
//! seconds in; with `--reboots` a node whose attempt failed starts over from its DISCOVER, as a
//! machine retrying its boot entry does, and the report says whom the kill hit and how long
//! they and the survivors took. `--prometheus` has Debian's Prometheus scrape every instance
//! and compares its sums with the storm's counts (`prometheus.rs`).
//!
//! Every run is bounded: `--nodes`, `--concurrency`, per-stage timeouts and retries, and
//! `--time-limit` (no node starts after it; nodes still running get `STOP_GRACE` more, then
//! count as failed at the stage they were in).

mod cost;
mod dhcp;
mod http;
mod lab;
mod prometheus;
mod report;
pub(crate) mod tftp;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use boot_common::wire::MacAddr;
use boot_tests::{BootRequest, PXE_SERVER_PORT};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::loadgen;
use dhcp::{DhcpClient, Exchange, Sent};
use lab::{Lab, ServerKind};
use report::{NodeOutcome, Outcome, RunReport, Stage, Tally};

/// Most simulated nodes: three bytes of the MAC number them.
const MAX_NODES: u32 = 1_000_000;
/// Longest `--time-limit`.
const MAX_TIME_LIMIT: Duration = Duration::from_secs(3600);
/// How long nodes still running at `--time-limit` may take to finish.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Most nodes in flight (each may hold a TCP connection and a TFTP socket).
const MAX_CONCURRENCY: usize = 4096;
/// Nodes of the costing pass unless `--cost-nodes` says otherwise: enough that every stage's
/// CPU per node stands well above the servers' idle CPU, few enough for seconds per pass.
const DEFAULT_COST_NODES: u32 = 2_000;
/// Largest file sizes (MiB): the files are written to the lab's directory.
const MAX_FILE_MIB: u64 = 4096;
/// Most xdpboot instances on the nodes' segment (`--instances`).
const MAX_INSTANCES: usize = 8;
/// Most times a node starts over (`--reboots`): four attempts fit its block of xids.
const MAX_REBOOTS: u32 = 3;
/// The instance `--kill-one-after` kills: the first.
const KILLED: usize = 0;

/// Who serves the storm besides xdpboot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// dnsmasq in proxy-DHCP mode with its TFTP server, and nginx for HTTP.
    #[value(name = "dnsmasq+nginx")]
    DnsmasqNginx,
}

/// xdpboot's backend in the storm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The XDP program (`--backend xdp`, steering `auto`: nothing else listens on 67).
    Xdp,
    /// UDP sockets on 67 and 4011 (`--backend udp`).
    Udp,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Simulated nodes (distinct MACs), each booting once (at most 1,000,000).
    #[arg(short, long, default_value_t = 10_000)]
    nodes: u32,
    /// Architectures, in shares: `bios,uefi-x64` (alike) or `bios:1,uefi-x64:3`. PXE
    /// architectures only: bios, uefi-x64, uefi-arm64.
    #[arg(long, value_delimiter = ',', default_value = "bios,uefi-x64")]
    arch: Vec<String>,
    /// Nodes in flight at once.
    #[arg(short, long, default_value_t = 256)]
    concurrency: usize,
    /// Nodes started per second; 0 starts them as fast as --concurrency lets.
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    /// How many of the nodes (spread evenly over the storm) fetch the kernel and the shared
    /// initrd; the others fetch their script and overlay only. 0: none, and at most --nodes.
    #[arg(long, default_value_t = 100)]
    http_nodes: u32,
    /// Size of each first-stage loader served over TFTP (undionly.kpxe, ipxe-amd64.efi, …).
    #[arg(long, default_value_t = 256)]
    loader_kib: u64,
    /// Size of the kernel.
    #[arg(long, default_value_t = 16)]
    kernel_mib: u64,
    /// Size of the shared initrd.
    #[arg(long, default_value_t = 128)]
    initrd_mib: u64,
    /// TFTP block size the nodes ask for (RFC 2348): 1468 fills a 1500-byte MTU.
    #[arg(long, default_value_t = 1468)]
    tftp_blksize: u16,
    /// Seconds a DHCP exchange waits for its answer before sending again.
    #[arg(long, default_value_t = 2.0)]
    dhcp_timeout: f64,
    /// Times a DHCP request is sent again when unanswered.
    #[arg(long, default_value_t = 3)]
    dhcp_retries: u32,
    /// No node starts after this many seconds; nodes still running then get 30 s more.
    #[arg(long, default_value_t = 600)]
    time_limit: u64,
    /// Nodes of the costing pass after each storm: fresh nodes go through the chain one stage
    /// at a time, with a barrier between stages, and each stage's CPU per node is printed for
    /// every server. 0: no pass. At most --nodes.
    #[arg(long, default_value_t = DEFAULT_COST_NODES)]
    cost_nodes: u32,
    /// Before each storm and costing pass, wait up to this many seconds for every core to be
    /// quiet (below 15% busy): the machines are shared. 0: start at once.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    /// Also run the same storm against this peer, in the same run, and print the ratios.
    #[arg(long, value_enum)]
    against: Option<Peer>,
    /// xdpboot's DHCP backend.
    #[arg(long, value_enum, default_value_t = Backend::Xdp)]
    backend: Backend,
    /// The xdpboot binary. Default: build it (`cargo build --release -p boot-user`).
    #[arg(long, value_name = "PATH")]
    xdpboot: Option<PathBuf>,
    /// The dnsmasq binary.
    #[arg(long, value_name = "PATH", default_value = "dnsmasq")]
    dnsmasq: PathBuf,
    /// The nginx binary.
    #[arg(long, value_name = "PATH", default_value = "nginx")]
    nginx: PathBuf,
    /// xdpboot instances on the nodes' segment, each in a namespace and with an address of its
    /// own, one config for all: every instance answers every node, and a node boots through
    /// the one whose offer reached it first (at most 8).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Kill the first instance (SIGKILL) this many seconds into the storm: the nodes mid-boot
    /// through it fail and, with --reboots, start over and boot through the others.
    #[arg(long, value_name = "SECS")]
    kill_one_after: Option<f64>,
    /// A node whose boot failed powers on again from its PXE DISCOVER, up to this many times,
    /// as a machine does whose firmware gives up and retries its boot entry (at most 3).
    #[arg(long, default_value_t = 0)]
    reboots: u32,
    /// Fail (exit status 1) unless every node booted.
    #[arg(long)]
    require_all: bool,
    /// Start Prometheus (this binary; Debian's `prometheus` package) scraping every instance's
    /// /metrics, then query it for the counts summed over the instances and compare them with
    /// what the storm did; a mismatch fails the run.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "prometheus")]
    prometheus: Option<PathBuf>,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=MAX_NODES).contains(&self.nodes),
            "--nodes must be 1..={MAX_NODES}"
        );
        ensure!(
            (1..=MAX_CONCURRENCY).contains(&self.concurrency),
            "--concurrency must be 1..={MAX_CONCURRENCY}"
        );
        ensure!(
            self.ramp.is_finite() && self.ramp >= 0.0,
            "--ramp must be 0 or a positive rate"
        );
        ensure!(
            Duration::from_secs(self.settle_secs) <= MAX_TIME_LIMIT,
            "--settle-secs must be at most {}",
            MAX_TIME_LIMIT.as_secs()
        );
        ensure!(
            self.cost_nodes <= MAX_NODES,
            "--cost-nodes must be at most {MAX_NODES}"
        );
        ensure!(
            self.http_nodes <= self.nodes,
            "--http-nodes must be at most --nodes"
        );
        ensure!(
            self.loader_kib > 0 && self.loader_kib <= MAX_FILE_MIB * 1024,
            "--loader-kib must be 1..={}",
            MAX_FILE_MIB * 1024
        );
        ensure!(
            (1..=MAX_FILE_MIB).contains(&self.kernel_mib)
                && (1..=MAX_FILE_MIB).contains(&self.initrd_mib),
            "--kernel-mib and --initrd-mib must be 1..={MAX_FILE_MIB}"
        );
        ensure!(
            (512..=65464).contains(&self.tftp_blksize),
            "--tftp-blksize must be 512..=65464 (RFC 2348)"
        );
        ensure!(
            self.dhcp_timeout.is_finite() && self.dhcp_timeout > 0.0 && self.dhcp_timeout <= 60.0,
            "--dhcp-timeout must be in (0, 60] seconds"
        );
        ensure!(self.dhcp_retries <= 10, "--dhcp-retries must be at most 10");
        ensure!(
            self.time_limit > 0 && Duration::from_secs(self.time_limit) <= MAX_TIME_LIMIT,
            "--time-limit must be 1..={} seconds",
            MAX_TIME_LIMIT.as_secs()
        );
        ensure!(
            (1..=MAX_INSTANCES).contains(&self.instances),
            "--instances must be 1..={MAX_INSTANCES}"
        );
        ensure!(
            self.instances == 1 || self.against.is_none(),
            "--against runs its peer as one instance: leave out --instances"
        );
        if let Some(after) = self.kill_one_after {
            ensure!(
                after.is_finite() && after >= 0.0 && after < self.time_limit as f64,
                "--kill-one-after must be 0 or more seconds, before --time-limit"
            );
            ensure!(
                self.instances >= 2,
                "--kill-one-after needs --instances 2 or more: someone must survive"
            );
            ensure!(
                self.prometheus.is_none(),
                "--prometheus compares every instance's counts: a killed one's last ones are lost"
            );
        }
        ensure!(
            self.reboots <= MAX_REBOOTS,
            "--reboots must be at most {MAX_REBOOTS}"
        );
        Ok(())
    }

    fn loader_bytes(&self) -> u64 {
        self.loader_kib * 1024
    }

    /// The command that reproduces this run (for the report).
    fn command(&self) -> String {
        let mut command = format!(
            "cargo xtask loadtest --nodes {} --arch {} --concurrency {} --ramp {} --http-nodes {} \
             --loader-kib {} --kernel-mib {} --initrd-mib {}",
            self.nodes,
            self.arch.join(","),
            self.concurrency,
            self.ramp,
            self.http_nodes,
            self.loader_kib,
            self.kernel_mib,
            self.initrd_mib
        );
        if self.cost_nodes != DEFAULT_COST_NODES {
            let _ = write!(command, " --cost-nodes {}", self.cost_nodes);
        }
        if self.backend != Backend::Xdp {
            command.push_str(" --backend udp");
        }
        if self.against.is_some() {
            command.push_str(" --against dnsmasq+nginx");
        }
        if self.instances > 1 {
            command.push_str(&format!(" --instances {}", self.instances));
        }
        if let Some(after) = self.kill_one_after {
            command.push_str(&format!(" --kill-one-after {after}"));
        }
        if self.reboots > 0 {
            command.push_str(&format!(" --reboots {}", self.reboots));
        }
        if self.prometheus.is_some() {
            command.push_str(" --prometheus");
        }
        command
    }
}

/// The PXE architectures the storm simulates: name, option 93, and the loader xdpboot's
/// default policy (and the dnsmasq configuration) hands out for it.
const ARCHES: &[(&str, u16, &str)] = &[
    ("bios", 0, "undionly.kpxe"),
    ("uefi-x64", 7, "ipxe-amd64.efi"),
    ("uefi-arm64", 11, "ipxe-arm64.efi"),
];

/// `--arch`: each architecture repeated by its share, so node `i` is `mix[i % mix.len()]`.
fn arch_mix(specs: &[String]) -> anyhow::Result<Vec<u16>> {
    let mut mix = Vec::new();
    for spec in specs {
        let (name, share) = match spec.split_once(':') {
            Some((name, share)) => (
                name,
                share
                    .parse::<u32>()
                    .ok()
                    .filter(|s| (1..=100).contains(s))
                    .with_context(|| format!("--arch {spec}: the share must be 1..=100"))?,
            ),
            None => (spec.as_str(), 1),
        };
        let number = loadgen::parse_arch(name)?;
        ensure!(
            ARCHES.iter().any(|(_, n, _)| *n == number),
            "--arch {name}: the storm simulates PXE clients of {}",
            ARCHES
                .iter()
                .map(|(n, _, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
        mix.extend(std::iter::repeat_n(number, share as usize));
    }
    ensure!(!mix.is_empty(), "--arch names no architecture");
    Ok(mix)
}

/// Whether node `i` of `nodes` fetches the kernel and initrd: `http_nodes` of them, spread
/// evenly over the storm.
fn fetches_images(i: u32, nodes: u32, http_nodes: u32) -> bool {
    let (i, n, k) = (u64::from(i), u64::from(nodes), u64::from(http_nodes));
    (i + 1) * k / n > i * k / n
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    args.validate()?;
    let mix = arch_mix(&args.arch)?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the load test creates network namespaces: run it as root");
    }
    crate::reexec_optimized("loadtest")?;
    if let Some(prometheus) = &args.prometheus {
        ensure!(
            which(prometheus),
            "`{}` is not installed (cargo xtask setup installs Debian's prometheus)",
            prometheus.display()
        );
    }
    if args.against.is_some() {
        for tool in [&args.dnsmasq, &args.nginx] {
            ensure!(
                which(tool),
                "`{}` is not installed (cargo xtask setup installs it)",
                tool.display()
            );
        }
    }
    let xdpboot = match &args.xdpboot {
        Some(path) => path.clone(),
        None => crate::build_xdpboot_release("loadtest")?,
    };
    let lab = Lab::build(args)?;
    say(&format!(
        "{}; lab in {} (files: loaders {} KiB, kernel {} MiB, initrd {} MiB)",
        crate::bench_dhcp::machine(),
        lab.dir.path().display(),
        args.loader_kib,
        args.kernel_mib,
        args.initrd_mib
    ));
    let mut servers = vec![ServerKind::Xdpboot(args.backend)];
    if args.against == Some(Peer::DnsmasqNginx) {
        servers.push(ServerKind::DnsmasqNginx);
    }
    let mut reports = Vec::new();
    let mut scraped = None;
    for kind in servers {
        let running = lab.start(kind, args, &xdpboot)?;
        report::settle(Duration::from_secs(args.settle_secs));
        say(&format!(
            "{} ready{}; storm of {} nodes",
            kind.name(),
            match running.addresses.len() {
                1 => String::new(),
                n => format!(" ({n} instances)"),
            },
            args.nodes
        ));
        // Only xdpboot has /metrics; the storm against the peer is not scraped.
        let prometheus = match (&args.prometheus, kind) {
            (Some(binary), ServerKind::Xdpboot(_)) => {
                let targets: Vec<SocketAddrV4> = running
                    .addresses
                    .iter()
                    .map(|ip| SocketAddrV4::new(*ip, lab::ADMIN_PORT))
                    .collect();
                let prometheus =
                    prometheus::Prometheus::start(&lab.cli, &lab.dir, binary, &targets)?;
                say(&format!(
                    "{} scrapes {} instance(s) every {:?}",
                    prometheus.version(),
                    targets.len(),
                    prometheus::SCRAPE_INTERVAL
                ));
                Some(prometheus)
            }
            _ => None,
        };
        let mut report = storm(&lab, &running, args, &mix)?;
        // Compared before the costing pass, whose nodes Prometheus would count too.
        if let Some(prometheus) = prometheus {
            scraped = Some(prometheus.compare(&lab.cli, &report)?);
        }
        // The costing pass runs against one instance only. With several, every instance
        // answers every DISCOVER and each node goes on with whichever offer came first, so a
        // stage's CPU per node would measure the race and the duplicated answers, not the
        // stage; and after --kill-one-after the instances are not the ones the storm met.
        // Scale-out runs measure surviving, not cost: they skip the pass.
        if args.cost_nodes > 0 && running.addresses.len() == 1 {
            report::settle(Duration::from_secs(args.settle_secs));
            report.cost = Some(cost::pass(&lab, &running, args, &mix)?);
        } else if args.cost_nodes > 0 {
            say("no costing pass: it measures one instance, this run has several");
        }
        reports.push(report);
        drop(running);
    }
    println!();
    print!("{}", report::summary(args, &reports));
    if let Some(comparison) = &scraped {
        print!("{comparison}");
        ensure!(
            comparison.agrees(),
            "Prometheus's sums over the instances disagree with what the storm did (above)"
        );
    }
    if args.require_all {
        for report in &reports {
            ensure!(
                report.tally.failed == 0 && report.started == args.nodes,
                "{}: {} of {} nodes did not boot (--require-all)",
                report.server.name(),
                u64::from(args.nodes) - report.tally.booted(),
                args.nodes
            );
        }
    }
    Ok(())
}

/// Everything a simulated node needs, shared by all of them.
struct Storm {
    dhcp: DhcpClient,
    tftp: tftp::Client,
    /// Where the HTTP stage connects from: the `far` namespace's threads run the nodes.
    tally: Mutex<Tally>,
    progress: indicatif::ProgressBar,
    /// Nodes stop every stage at this instant.
    deadline: Instant,
    /// The lab's client address on the server's link (ciaddr of 4011 requests).
    client_ip: Ipv4Addr,
    loader_bytes: u64,
    kernel_bytes: u64,
    initrd_bytes: u64,
    blksize: u16,
    dhcp_timeout: Duration,
    dhcp_retries: u32,
    /// Times a failed node starts over.
    reboots: u32,
    /// Makes this storm's MACs and xids its own.
    salt: u32,
}

/// Runs one storm against the servers of `running` and measures it; with `--kill-one-after`,
/// kills the first instance that far into it.
fn storm(lab: &Lab, running: &lab::Running, args: &Args, mix: &[u16]) -> anyhow::Result<RunReport> {
    let dhcp_sockets = lab.cli.run(|| dhcp::Sockets::open(lab::CLIENT_IF))?;
    let tftp = tftp::Client::start(Some(&lab.cli))?;
    let nodes = args.nodes;
    let progress = report::progress_bar(u64::from(nodes));
    let before = report::Usage::take(running);
    let began = std::time::Instant::now();
    // The killer waits on a channel that the storm's end closes: a storm shorter than the
    // delay ends with every instance alive.
    let (storm_over, killer_wait) = std::sync::mpsc::channel::<()>();
    let (storm_result, killed_at) = std::thread::scope(|scope| {
        let killer = args.kill_one_after.map(|after| {
            let progress = progress.clone();
            scope.spawn(move || -> anyhow::Result<Option<std::time::Instant>> {
                match killer_wait.recv_timeout(Duration::from_secs_f64(after)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        running.kill(KILLED)?;
                        progress.println(format!(
                            "[loadtest] killed instance {} ({}) with SIGKILL",
                            KILLED + 1,
                            running.addresses[KILLED]
                        ));
                        Ok(Some(std::time::Instant::now()))
                    }
                    _ => Ok(None),
                }
            })
        });
        let result = run_nodes(lab, args, mix, dhcp_sockets, tftp, &progress);
        drop(storm_over);
        let killed_at = match killer {
            Some(killer) => killer.join().expect("the killer thread does not panic"),
            None => Ok(None),
        };
        (result, killed_at)
    });
    progress.finish_and_clear();
    let (started, wall, tally, dhcp_counts) = storm_result?;
    let killed_at = killed_at?;
    let after = report::Usage::take(running);
    Ok(RunReport {
        server: running.kind,
        instances: running.addresses.clone(),
        killed: killed_at.map(|at| report::Kill {
            instance: KILLED,
            after: at.saturating_duration_since(began),
            at: Instant::from_std(at),
        }),
        nodes: args.nodes,
        started,
        wall,
        tally,
        usage: after.since(&before),
        dhcp: dhcp_counts,
        server_log_tail: running.log_tail(),
        cost: None,
    })
}

/// What [`run_nodes`] measured: nodes started, wall time, their outcomes, and the DHCP
/// replies the load generator saw.
type NodesRun = (u32, Duration, Tally, dhcp::Counts);

/// Starts the nodes (at `--ramp`, at most `--concurrency` at once) and waits for them.
fn run_nodes(
    lab: &Lab,
    args: &Args,
    mix: &[u16],
    dhcp_sockets: dhcp::Sockets,
    tftp: tftp::Client,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<NodesRun> {
    let nodes = args.nodes;
    // The nodes run on threads in `far` (where their TCP connections must start); their DHCP
    // and TFTP sockets were made in `cli` and stay there.
    lab.far.run(|| {
        node_runtime()?.block_on(async {
            let start = Instant::now();
            let time_limit = Duration::from_secs(args.time_limit);
            let storm = Arc::new(Storm::new(
                args,
                DhcpClient::new(dhcp_sockets)?,
                tftp,
                progress.clone(),
                start + time_limit + STOP_GRACE,
            ));
            let receiver = tokio::spawn(storm.dhcp.clone().receive());
            let in_flight = Arc::new(Semaphore::new(args.concurrency));
            let mut tasks = tokio::task::JoinSet::new();
            let mut started = 0u32;
            for i in 0..nodes {
                if start.elapsed() >= time_limit {
                    break;
                }
                if args.ramp > 0.0 {
                    let at = start + Duration::from_secs_f64(f64::from(i) / args.ramp);
                    if at >= start + time_limit {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                }
                let Ok(Ok(permit)) =
                    tokio::time::timeout_at(start + time_limit, in_flight.clone().acquire_owned())
                        .await
                else {
                    break;
                };
                let node = Node {
                    index: i,
                    arch: mix[i as usize % mix.len()],
                    fetch_images: fetches_images(i, nodes, args.http_nodes),
                };
                let storm = storm.clone();
                tasks.spawn(async move {
                    let outcome = node.boot(&storm).await;
                    drop(permit);
                    storm.finish(outcome);
                });
                started += 1;
                // Reap finished tasks as we go, so the set stays as small as the concurrency.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
            let wall = start.elapsed();
            receiver.abort();
            let counts = storm.dhcp.counts();
            let tally = std::mem::take(&mut *storm.tally.lock().expect("no node panics"));
            anyhow::Ok((started, wall, tally, counts))
        })
    })
}

/// The runtime the simulated nodes run on; build it on a thread in `far`, where their TCP
/// connections must start.
fn node_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the load generator's runtime")
}

impl Storm {
    /// A storm's shared state; nodes stop every stage at `deadline`. Each storm gets MACs and
    /// xids of its own.
    fn new(
        args: &Args,
        dhcp: DhcpClient,
        tftp: tftp::Client,
        progress: indicatif::ProgressBar,
        deadline: Instant,
    ) -> Storm {
        Storm {
            dhcp,
            tftp,
            tally: Mutex::new(Tally::default()),
            progress,
            deadline,
            client_ip: lab::CLIENT_IP,
            loader_bytes: args.loader_bytes(),
            kernel_bytes: args.kernel_mib << 20,
            initrd_bytes: args.initrd_mib << 20,
            blksize: args.tftp_blksize,
            dhcp_timeout: Duration::from_secs_f64(args.dhcp_timeout),
            dhcp_retries: args.dhcp_retries,
            reboots: args.reboots,
            salt: dhcp::random_u32(),
        }
    }

    fn finish(&self, outcome: NodeOutcome) {
        let ok = outcome.booted();
        self.tally
            .lock()
            .expect("the tally is only added to")
            .add(&outcome);
        self.progress.inc(1);
        if !ok {
            self.progress.set_message(format!(
                "failed: {}",
                self.tally
                    .lock()
                    .expect("the tally is only added to")
                    .failed
            ));
        }
    }

    /// Node `i`'s MAC: locally administered, the storm's salt, then `i`.
    fn mac(&self, i: u32) -> MacAddr {
        let n = i.to_be_bytes();
        MacAddr([0x02, 0x5b, self.salt as u8, n[1], n[2], n[3]])
    }

    /// A transaction id for node `i`'s `k`-th exchange (fewer than [`XIDS_PER_NODE`]), unique
    /// in the storm.
    fn xid(&self, i: u32, k: u32) -> u32 {
        debug_assert!(k < XIDS_PER_NODE);
        self.salt
            .wrapping_add(i.wrapping_mul(XIDS_PER_NODE))
            .wrapping_add(k)
    }
}

/// Exchanges one boot attempt has at most: the ROM's DISCOVER and 4011 REQUEST, iPXE's
/// DISCOVER and 4011 REQUEST.
const EXCHANGES_PER_ATTEMPT: u32 = 4;
/// Transaction ids each node owns: room for every attempt ([`MAX_REBOOTS`] + 1).
const XIDS_PER_NODE: u32 = EXCHANGES_PER_ATTEMPT * (MAX_REBOOTS + 1);

/// One simulated machine.
#[derive(Clone, Copy)]
struct Node {
    index: u32,
    arch: u16,
    fetch_images: bool,
}

/// What a node has learned so far, stage by stage.
#[derive(Default)]
struct NodeState {
    /// The proxy OFFER and the server it names (option 54, else siaddr).
    offer: Option<(boot_tests::Received, Ipv4Addr)>,
    /// The loader the 4011 ACK names, and the TFTP server (siaddr, else the proxy).
    loader: Option<(String, Ipv4Addr)>,
    script_url: String,
    /// The kept-alive connection of the HTTP stages.
    session: http::Session,
    files: Option<http::ScriptFiles>,
    /// The boot attempt (0 first): its exchanges' xids are its own.
    attempt: u32,
}

impl NodeState {
    /// What attempt `attempt` (0 first) starts from: nothing learned yet.
    fn for_attempt(attempt: u32) -> NodeState {
        NodeState {
            attempt,
            ..NodeState::default()
        }
    }

    /// The number within the node of this attempt's `k`-th exchange (for its xid).
    fn exchange(&self, k: u32) -> u32 {
        debug_assert!(k < EXCHANGES_PER_ATTEMPT);
        self.attempt * EXCHANGES_PER_ATTEMPT + k
    }
}

impl Node {
    /// Whether the node goes through `stage` (only `--http-nodes` of them fetch the images).
    fn does(&self, stage: Stage) -> bool {
        self.fetch_images || !matches!(stage, Stage::Kernel | Stage::Initrd)
    }

    /// The node's boot: attempts until one gets through every stage, at most `--reboots` + 1,
    /// each starting over from the PXE DISCOVER.
    async fn boot(&self, storm: &Storm) -> NodeOutcome {
        let mut outcome = NodeOutcome::new(Instant::now());
        for attempt in 0..=storm.reboots {
            outcome.begin_attempt(attempt);
            if self.attempt(storm, attempt, &mut outcome).await || Instant::now() >= storm.deadline
            {
                break;
            }
        }
        outcome
    }

    /// One boot attempt: the whole chain from the PXE DISCOVER, stage after stage, each bounded
    /// by its own timeouts and by the storm's deadline, recorded in `outcome`; whether it got
    /// through. A machine that powers on again has learned nothing: the attempt starts from
    /// fresh state (no offer, no connection) and with xids of its own.
    async fn attempt(&self, storm: &Storm, attempt: u32, outcome: &mut NodeOutcome) -> bool {
        let mut state = NodeState::for_attempt(attempt);
        for stage in Stage::ALL {
            if !self.does(stage) {
                outcome.skip(stage);
                continue;
            }
            let began = Instant::now();
            let result = self.stage_in_time(storm, stage, &mut state).await;
            let failed = result.is_err();
            outcome.record(stage, began, Outcome::from(result));
            if failed {
                return false;
            }
            match stage {
                Stage::Discover => {
                    if let Some((_, server)) = &state.offer {
                        outcome.through(*server);
                    }
                }
                // iPXE took the first offer, maybe another instance's than the ROM did: from
                // here on the node talks to the one its script URL names.
                Stage::IpxeDhcp => {
                    if let Some(host) = http::url_host(&state.script_url) {
                        outcome.through(host);
                    }
                }
                _ => {}
            }
        }
        true
    }

    /// [`Node::stage`] within the storm's deadline.
    async fn stage_in_time(
        &self,
        storm: &Storm,
        stage: Stage,
        state: &mut NodeState,
    ) -> Result<u64, String> {
        tokio::time::timeout_at(storm.deadline, self.stage(storm, stage, state))
            .await
            .unwrap_or_else(|_| Err("time limit".into()))
    }

    /// One stage of the chain, from what the earlier ones left in `state`; the bytes it moved.
    async fn stage(
        &self,
        storm: &Storm,
        stage: Stage,
        state: &mut NodeState,
    ) -> Result<u64, String> {
        const OUT_OF_ORDER: &str = "a stage ran before the one it needs";
        let mac = storm.mac(self.index);
        let rom = BootRequest {
            mac,
            ..BootRequest::pxe(self.arch)
        };
        let ipxe = BootRequest {
            mac,
            ..BootRequest::pxe(self.arch).ipxe()
        };
        match stage {
            // The ROM's DISCOVER, broadcast from 0.0.0.0:68.
            Stage::Discover => {
                let offer = self
                    .exchange(storm, &rom, state.exchange(0), None, Sent::Broadcast)
                    .await?;
                let server = offer
                    .server_id()
                    .or_else(|| {
                        let siaddr = offer.message.siaddr();
                        (!siaddr.is_unspecified()).then_some(siaddr)
                    })
                    .ok_or("the proxy OFFER names no server")?;
                state.offer = Some((offer, server));
                Ok(0)
            }
            // The REQUEST to the proxy's port 4011 (a boot-server request for the menu's first
            // item where the OFFER carried a PXE menu, as iPXE's ROM sends to dnsmasq).
            Stage::ProxyRequest => {
                let (offer, server) = state.offer.as_ref().ok_or(OUT_OF_ORDER)?;
                let server = *server;
                let request = rom.request_to(server, storm.client_ip);
                let ack = self
                    .exchange(
                        storm,
                        &request,
                        state.exchange(1),
                        dhcp::boot_item(offer),
                        Sent::Unicast(SocketAddrV4::new(server, PXE_SERVER_PORT)),
                    )
                    .await?;
                let tftp_server = match ack.message.siaddr() {
                    ip if ip.is_unspecified() => server,
                    ip => ip,
                };
                state.loader = Some((ack.file(), tftp_server));
                Ok(0)
            }
            // The loader over TFTP.
            Stage::Tftp => {
                let (loader, server) = state.loader.as_ref().ok_or(OUT_OF_ORDER)?;
                if loader.is_empty() {
                    return Err("the 4011 ACK names no boot file".to_owned());
                }
                let server = SocketAddrV4::new(*server, tftp::TFTP_PORT);
                let bytes = storm.tftp.fetch(server, loader, storm.blksize).await?;
                if bytes != storm.loader_bytes {
                    return Err(format!(
                        "{loader}: {bytes} bytes, expected {}",
                        storm.loader_bytes
                    ));
                }
                Ok(bytes)
            }
            // iPXE's own DHCP: the script URL from the OFFER, or from a 4011 ACK when the
            // OFFER has no boot file (iPXE `dhcp.c`: it asks 4011 only then).
            Stage::IpxeDhcp => {
                let (_, proxy) = state.offer.as_ref().ok_or(OUT_OF_ORDER)?;
                let offer = self
                    .exchange(storm, &ipxe, state.exchange(2), None, Sent::Broadcast)
                    .await?;
                let mut url = offer.file();
                if url.is_empty() {
                    let server = offer.server_id().unwrap_or(*proxy);
                    let request = ipxe.clone().request_to(server, storm.client_ip);
                    let ack = self
                        .exchange(
                            storm,
                            &request,
                            state.exchange(3),
                            None,
                            Sent::Unicast(SocketAddrV4::new(server, PXE_SERVER_PORT)),
                        )
                        .await?;
                    url = ack.file();
                }
                if !url.starts_with("http://") {
                    return Err(format!("iPXE was offered {url:?}, not an http:// URL"));
                }
                state.script_url = url;
                Ok(0)
            }
            // HTTP: the script, then what it names, on one kept-alive connection.
            Stage::Script => {
                let url = &state.script_url;
                let (status, body, bytes) = state.session.get(url, http::Keep::Text).await?;
                http::expect_ok(status, url)?;
                state.files = Some(http::ScriptFiles::parse(&body)?);
                Ok(bytes)
            }
            Stage::Kernel => {
                let files = state.files.as_ref().ok_or(OUT_OF_ORDER)?;
                let (_, bytes) = state
                    .session
                    .fetch_exact(&files.kernel, storm.kernel_bytes)
                    .await?;
                Ok(bytes)
            }
            Stage::Initrd => {
                let files = state.files.as_ref().ok_or(OUT_OF_ORDER)?;
                let (_, bytes) = state
                    .session
                    .fetch_exact(&files.initrd, storm.initrd_bytes)
                    .await?;
                Ok(bytes)
            }
            Stage::Overlay => {
                let files = state.files.as_ref().ok_or(OUT_OF_ORDER)?;
                let url = &files.overlay;
                let (status, _, bytes) = state.session.get(url, http::Keep::Nothing).await?;
                http::expect_ok(status, url)?;
                if bytes == 0 {
                    return Err("the overlay is empty".to_owned());
                }
                Ok(bytes)
            }
        }
    }

    /// One DHCP exchange (`k` numbers it within the node, for its xid), with `vendor_options`
    /// as option 43 if given.
    async fn exchange(
        &self,
        storm: &Storm,
        request: &BootRequest,
        k: u32,
        vendor_options: Option<Vec<u8>>,
        sent: Sent,
    ) -> Result<boot_tests::Received, String> {
        let request = BootRequest {
            xid: storm.xid(self.index, k),
            vendor_options,
            ..request.clone()
        };
        storm
            .dhcp
            .exchange(Exchange {
                request: &request,
                sent,
                timeout: storm.dhcp_timeout,
                retries: storm.dhcp_retries,
            })
            .await
    }
}

fn say(text: &str) {
    println!("[loadtest] {text}");
}

fn which(tool: &std::path::Path) -> bool {
    if tool.components().count() > 1 {
        return tool.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_fetchers_are_spread_evenly_and_counted_exactly() {
        for (nodes, k) in [(10_000, 100), (7, 3), (5, 5), (5, 0), (1, 1)] {
            let chosen: Vec<u32> = (0..nodes)
                .filter(|&i| fetches_images(i, nodes, k))
                .collect();
            assert_eq!(chosen.len() as u32, k, "{nodes} nodes, {k} fetchers");
        }
        let chosen: Vec<u32> = (0..10_000)
            .filter(|&i| fetches_images(i, 10_000, 100))
            .collect();
        assert!(chosen.windows(2).all(|w| w[1] - w[0] == 100));
    }

    #[test]
    fn arch_shares_repeat_each_architecture() {
        let mix = arch_mix(&["bios:1".into(), "uefi-x64:3".into()]).unwrap();
        assert_eq!(mix, vec![0, 7, 7, 7]);
        assert!(arch_mix(&["http-x64".into()]).is_err());
        assert!(arch_mix(&["bios:0".into()]).is_err());
    }
}
