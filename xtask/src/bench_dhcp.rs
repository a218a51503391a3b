//! `cargo xtask bench-dhcp`: proxy OFFERs per second, DISCOVER→OFFER latency and CPU per
//! offer at saturation, through veth pairs, for xdpboot's XDP backend (tee and redirect
//! steering), its UDP backend and dnsmasq in proxy mode: the same load generator (`cargo xtask
//! loadgen`), the same run, the same pinning. Then a cross-check of the generator against ISC's
//! perfdhcp at rates both reach, and the XDP program's flood shedding at its default settings.
//!
//! Each server gets a lab of its own, all built at the start: two private namespaces joined by
//! a veth pair, `gen0` 198.18.<n>.2/24 (the generator, and the relay address on the relayed
//! path) and `eth0` 198.18.<n>.1/24 (the server). Servers are pinned to `--server-cpu` with
//! taskset, the generator's thread to `--generator-cpu`. On veth the receive side of a packet
//! runs on the sender's CPU (the peer's NAPI, the XDP program included), so RPS on each end
//! moves the kernel's stack work for a packet to its receiver's core, as a NIC's queue IRQ would
//! (turn it off with --no-rps). The XDP program itself still runs on the generator's core.
//!
//! The load climbs a ladder of rates (`--rates`). At each rate every server still on the ladder
//! gets `--repeats` trials, interleaved (server A, B, C, D, A, B, …), so drift and the other
//! work on the machine hit all of them alike; a rate's result is the median of its trials. A
//! rate is loss-free for a server when the median loss is at most --max-loss-pct, and within
//! the latency bound when also the median p99 is at most --max-p99-us; a server leaves the
//! ladder after --stop-after rates in a row that were not loss-free. Its ceiling is the highest
//! loss-free rate (throughput: robust to the scheduling noise of a shared machine), reported
//! with its latency, beside the highest rate within the latency bound. Each trial first waits
//! for the cores to be quiet and is run again when other processes used more than 5% of a core
//! meanwhile.
//!
//! CPU per offer: the server process's CPU time (all threads, `/proc/<pid>/task/*/schedstat`)
//! over the offers, and the busy time of the server's core (`/proc/stat`: the process, plus
//! the kernel's softirq work that RPS puts there, plus anything else that ran there).
//!
//! Ctrl-C (or SIGTERM) stops the run after the current trial and removes everything it made.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use boot_tests::{ChildGuard, NetNs, TempDir, run_command, veth};

use crate::loadgen::{self, Report, RequestPath, Settings, micros};

/// How long a server may take from start to its first answer.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a perfdhcp run may take beyond its test period before it is killed.
const PERFDHCP_GRACE: Duration = Duration::from_secs(15);
/// A trial whose generator sent less than this share of the rate asked is generator-limited.
const GENERATOR_SHORTFALL: f64 = 0.97;
/// Background load (busy share of a core) under which the machine counts as quiet.
const QUIET_BUSY: f64 = 0.15;
/// Most CPU time other processes may take during a trial (share of one core) before the trial
/// counts as disturbed and is run again.
const MAX_FOREIGN: f64 = 0.05;
/// Runs of a disturbed trial before its last result is kept anyway (and shown as disturbed).
const DISTURBED_TRIES: u32 = 4;
/// Loaders the default policy offers; the benchmark's TFTP root holds empty ones.
const LOADERS: &[&str] = &["undionly.kpxe", "ipxe-amd64.efi"];

/// Set by SIGINT/SIGTERM: stop after the current trial, cleaning up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn catch_interrupts() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.context("installing a signal handler")?;
    }
    Ok(())
}

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerKind {
    /// xdpboot, XDP backend, `--steer tee` (port-67 boot DISCOVERs copied, still passed to the
    /// kernel: the mode for hosts that also run a DHCP server).
    XdpTee,
    /// xdpboot, XDP backend, `--steer redirect` (taken with AF_XDP, never reach the stack).
    XdpRedirect,
    /// xdpboot, UDP backend (sockets on 67 and 4011).
    Udp,
    /// dnsmasq in proxy mode (`dhcp-range=<net>,proxy` and `pxe-service` lines).
    Dnsmasq,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::XdpTee => "xdpboot xdp (tee)",
            ServerKind::XdpRedirect => "xdpboot xdp (redirect)",
            ServerKind::Udp => "xdpboot udp",
            ServerKind::Dnsmasq => "dnsmasq proxy",
        }
    }

    fn is_xdp(self) -> bool {
        matches!(self, ServerKind::XdpTee | ServerKind::XdpRedirect)
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Distinct simulated clients (MACs), one ladder each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    clients: Vec<u32>,
    /// Servers to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "xdp-tee,xdp-redirect,udp,dnsmasq"
    )]
    servers: Vec<ServerKind>,
    /// Request paths: broadcast (as PXE ROMs send: from port 68, giaddr 0) and relayed (from a
    /// relay agent's port 67, giaddr set, as perfdhcp sends).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "broadcast,relayed"
    )]
    paths: Vec<RequestPath>,
    /// Client architectures, given to clients in turn (see `cargo xtask loadgen --help`).
    #[arg(long, value_delimiter = ',', default_value = "bios,uefi-x64")]
    arch: Vec<String>,
    /// The ladder of offered rates (DISCOVERs/s), climbed in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "5000,10000,15000,20000,30000,40000,60000,80000,100000,120000,140000,\
                         160000,200000,250000,300000,400000"
    )]
    rates: Vec<u64>,
    /// Trials per server and rate; the median counts.
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// A server leaves the ladder after this many rates in a row that were not loss-free.
    #[arg(long, default_value_t = 2)]
    stop_after: u32,
    /// Seconds of sending per trial.
    #[arg(long, default_value_t = 2.0)]
    trial_secs: f64,
    /// Most DISCOVERs (percent) a loss-free rate may leave unanswered (median of its trials).
    #[arg(long, default_value_t = 0.1)]
    max_loss_pct: f64,
    /// Highest p99 DISCOVER→OFFER latency (µs) within the latency bound (median of trials).
    #[arg(long, default_value_t = 1000)]
    max_p99_us: u64,
    /// CPU the servers are pinned to.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    /// CPU the generator (and perfdhcp) is pinned to.
    #[arg(long, default_value_t = 0)]
    generator_cpu: usize,
    /// Leave RPS off: the kernel's receive work for each packet then runs on its sender's core.
    #[arg(long)]
    no_rps: bool,
    /// Rates of the perfdhcp cross-check (relayed path, first client count, uefi-x64 clients).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,5000,10000,20000,40000"
    )]
    perfdhcp_rates: Vec<u64>,
    /// Skip the perfdhcp cross-check.
    #[arg(long)]
    no_perfdhcp: bool,
    /// Skip the run that shows the XDP program's shedding at its default settings.
    #[arg(long)]
    no_shed_demo: bool,
    /// Skip the trial with the generator flat out.
    #[arg(long)]
    no_flat_out: bool,
    /// Before each trial, wait up to this many seconds for both cores to be under 15% busy.
    #[arg(long, default_value_t = 30)]
    settle_secs: u64,
    /// The xdpboot binary. Default: build it (`cargo build --release -p boot-user`).
    #[arg(long, value_name = "PATH")]
    xdpboot: Option<PathBuf>,
    /// The dnsmasq binary.
    #[arg(long, value_name = "PATH", default_value = "dnsmasq")]
    dnsmasq: PathBuf,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.clients.is_empty(), "--clients names no count");
        ensure!(!self.servers.is_empty(), "--servers names no server");
        ensure!(!self.paths.is_empty(), "--paths names no path");
        ensure!(!self.rates.is_empty(), "--rates names no rate");
        ensure!(
            self.rates.iter().all(|&r| r > 0),
            "--rates must all be positive"
        );
        ensure!(
            self.trial_secs > 0.0 && self.trial_secs <= 60.0,
            "--trial-secs must be in (0, 60]"
        );
        ensure!((1..=9).contains(&self.repeats), "--repeats must be 1..=9");
        ensure!(self.stop_after >= 1, "--stop-after must be at least 1");
        let top = self.rates.iter().max().copied().unwrap_or(0);
        ensure!(
            top as f64 * self.trial_secs <= loadgen::MAX_COUNT as f64,
            "the top rate × --trial-secs exceeds the generator's {} requests per run",
            loadgen::MAX_COUNT
        );
        ensure!(
            self.server_cpu != self.generator_cpu,
            "the server and the generator need separate CPUs"
        );
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        ensure!(
            self.server_cpu < cpus && self.generator_cpu < cpus,
            "this machine has CPUs 0..{}",
            cpus - 1
        );
        Ok(())
    }

    fn trial(&self) -> Duration {
        Duration::from_secs_f64(self.trial_secs)
    }

    /// Requests of a flat-out trial: what the top rate would send.
    fn flat_out_count(&self) -> u64 {
        let top = self.rates.iter().max().copied().unwrap_or(1);
        ((top as f64 * self.trial_secs) as u64).clamp(1, loadgen::MAX_COUNT)
    }
}

/// One trial: the generator's report and the CPU time spent meanwhile.
#[derive(Clone, Debug)]
struct Trial {
    /// Rate asked; 0 for flat out.
    rate: u64,
    report: Report,
    /// Server process CPU time.
    server_cpu: Duration,
    /// The part of it spent in user space (the rest is the kernel's work on the server's
    /// behalf: receive, the AF_XDP or socket send, and what the send does to deliver).
    server_user: Duration,
    /// Busy time of the server's and the generator's cores.
    server_core: Duration,
    generator_core: Duration,
    /// XDP counters that say a request did not reach the daemon (`shed`, `ring_full`,
    /// `no_socket`), where they moved.
    xdp_counters: Vec<(String, u64)>,
    /// CPU time of other processes during the trial, as a share of one core.
    foreign: f64,
    /// Packets the kernel dropped from full per-CPU backlogs (`/proc/net/softnet_stat`) on
    /// the server's and the generator's core: lost before any socket.
    backlog_drops: (u64, u64),
}

impl Trial {
    fn per_offer(&self, time: Duration) -> f64 {
        time.as_secs_f64() * 1e6 / self.report.answered.max(1) as f64
    }
}

/// One rung of the ladder for one server: the medians of its trials.
#[derive(Clone, Debug)]
struct Step {
    rate: u64,
    send_rate: f64,
    offers: f64,
    loss: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    server_cpu: f64,
    server_user: f64,
    server_core: f64,
    /// The most any of its trials was disturbed.
    foreign: f64,
}

impl Step {
    fn of(trials: &[Trial]) -> Step {
        fn median<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
            values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            values[values.len() / 2]
        }
        let each = |f: &dyn Fn(&Trial) -> f64| median(trials.iter().map(f).collect());
        let each_d = |f: &dyn Fn(&Trial) -> Duration| median(trials.iter().map(f).collect());
        Step {
            rate: trials[0].rate,
            send_rate: each(&|t| t.report.send_rate()),
            offers: each(&|t| t.report.offers_per_sec()),
            loss: each(&|t| t.report.loss()),
            p50: each_d(&|t| t.report.latency.p50),
            p99: each_d(&|t| t.report.latency.p99),
            max: each_d(&|t| t.report.latency.max),
            server_cpu: each(&|t| t.per_offer(t.server_cpu)),
            server_user: each(&|t| t.per_offer(t.server_user)),
            server_core: each(&|t| t.per_offer(t.server_core)),
            foreign: trials.iter().map(|t| t.foreign).fold(0.0, f64::max),
        }
    }

    /// Loss-free: the median loss is within --max-loss-pct.
    fn loss_free(&self, args: &Args) -> bool {
        self.loss * 100.0 <= args.max_loss_pct && self.offers > 0.0
    }

    /// Loss-free, and the median p99 within --max-p99-us.
    fn within_slo(&self, args: &Args) -> bool {
        self.loss_free(args) && self.p99 <= Duration::from_micros(args.max_p99_us)
    }

    fn generator_limited(&self) -> bool {
        self.rate > 0 && self.send_rate < self.rate as f64 * GENERATOR_SHORTFALL
    }
}

/// One server's ladder for one client count and path.
struct Series {
    server: ServerKind,
    clients: u32,
    path: RequestPath,
    steps: Vec<Step>,
    /// Highest loss-free rate.
    loss_free: Option<Step>,
    /// Highest rate that was loss-free with p99 within --max-p99-us.
    within_slo: Option<Step>,
    /// It was loss-free at the rate where the generator fell short: its ceiling is above.
    generator_bound: bool,
    /// With the generator flat out.
    flat_out: Option<Trial>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    args.validate()?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the benchmark creates network namespaces: run it as root");
    }
    for tool in ["ip", "taskset"] {
        ensure!(on_path(tool), "`{tool}` is not installed");
    }
    let arches = args
        .arch
        .iter()
        .map(|a| loadgen::parse_arch(a))
        .collect::<anyhow::Result<Vec<u16>>>()?;
    let xdpboot = match &args.xdpboot {
        Some(path) => path.clone(),
        None => crate::build_xdpboot_release("bench-dhcp")?,
    };
    let dnsmasq_version = version_line(&args.dnsmasq).unwrap_or_else(|_| "dnsmasq".into());
    let perfdhcp = !args.no_perfdhcp && !args.perfdhcp_rates.is_empty();
    if perfdhcp {
        ensure!(
            on_path("perfdhcp"),
            "`perfdhcp` is not installed (Debian package kea-admin; cargo xtask setup installs \
             it), or pass --no-perfdhcp"
        );
    }
    catch_interrupts()?;
    step(&format!(
        "{}; servers on CPU {}, generator on CPU {}, RPS {}; {} s trials, {} per rate; \
         loss-free: median loss ≤ {}%; latency bound: median p99 ≤ {} µs",
        machine(),
        args.server_cpu,
        args.generator_cpu,
        if args.no_rps { "off" } else { "on" },
        args.trial_secs,
        args.repeats,
        args.max_loss_pct,
        args.max_p99_us
    ));

    let mut labs = Vec::new();
    for (index, &kind) in args.servers.iter().enumerate() {
        check_interrupted()?;
        let lab = Lab::start(kind, index, args, &xdpboot, None)?;
        step(&format!("{} ready (pid {})", kind.name(), lab.pid));
        labs.push(lab);
    }
    let mut series = Vec::new();
    for &clients in &args.clients {
        for &path in &args.paths {
            series.extend(ladder(&labs, args, &arches, clients, path)?);
        }
    }
    let mut cross_checks = Vec::new();
    if perfdhcp {
        for lab in &labs {
            for &rate in &args.perfdhcp_rates {
                check_interrupted()?;
                cross_checks.push(cross_check(lab, args, rate)?);
            }
        }
    }
    for lab in labs {
        let name = lab.kind.name();
        if let Some(line) = lab.stopped_counters() {
            step(&format!("{name} at exit: {line}"));
        }
    }
    let shed = if args.no_shed_demo {
        None
    } else {
        check_interrupted()?;
        Some(shed_demo(args, &xdpboot, &arches)?)
    };

    println!();
    print!(
        "{}",
        summary(
            args,
            &series,
            &cross_checks,
            shed.as_ref(),
            &dnsmasq_version
        )
    );
    Ok(())
}

/// Climbs the ladder of rates with every server, interleaving their trials; then a flat-out
/// trial for each.
fn ladder(
    labs: &[Lab],
    args: &Args,
    arches: &[u16],
    clients: u32,
    path: RequestPath,
) -> anyhow::Result<Vec<Series>> {
    let mut series: Vec<Series> = labs
        .iter()
        .map(|lab| Series {
            server: lab.kind,
            clients,
            path,
            steps: Vec::new(),
            loss_free: None,
            within_slo: None,
            generator_bound: false,
            flat_out: None,
        })
        .collect();
    let mut failures = vec![0u32; labs.len()];
    let mut climbing = vec![true; labs.len()];
    for &rate in &args.rates {
        if !climbing.contains(&true) {
            break;
        }
        let mut trials: Vec<Vec<Trial>> = vec![Vec::new(); labs.len()];
        for _ in 0..args.repeats {
            for (i, lab) in labs.iter().enumerate() {
                if !climbing[i] {
                    continue;
                }
                check_interrupted()?;
                let trial = lab.trial(args, arches, clients, path, rate)?;
                log_trial(lab.kind, clients, path, &trial);
                trials[i].push(trial);
            }
        }
        for (i, lab) in labs.iter().enumerate() {
            if !climbing[i] {
                continue;
            }
            let step_result = Step::of(&trials[i]);
            let loss_free = step_result.loss_free(args);
            let slo = step_result.within_slo(args);
            step(&format!(
                "{} {clients} {path} at {rate}/s: median offers {:.0}/s, loss {:.3}%, p99 {} → \
                 {}",
                lab.kind.name(),
                step_result.offers,
                step_result.loss * 100.0,
                micros(step_result.p99),
                match (loss_free, slo) {
                    (true, true) => "loss-free, p99 within bound",
                    (true, false) => "loss-free, p99 over bound",
                    _ => "lossy",
                }
            ));
            let s = &mut series[i];
            if slo {
                s.within_slo = Some(step_result.clone());
            }
            if loss_free {
                failures[i] = 0;
                s.loss_free = Some(step_result.clone());
                if step_result.generator_limited() {
                    // The server answered all the generator could send: its ceiling is
                    // higher than this ladder can show.
                    s.generator_bound = true;
                    climbing[i] = false;
                }
            } else {
                failures[i] += 1;
                if failures[i] >= args.stop_after {
                    climbing[i] = false;
                }
            }
            s.steps.push(step_result);
        }
    }
    if !args.no_flat_out {
        for (i, lab) in labs.iter().enumerate() {
            check_interrupted()?;
            let trial = lab.trial(args, arches, clients, path, 0)?;
            log_trial(lab.kind, clients, path, &trial);
            series[i].flat_out = Some(trial);
        }
    }
    Ok(series)
}

fn log_trial(kind: ServerKind, clients: u32, path: RequestPath, t: &Trial) {
    let r = &t.report;
    let asked = if t.rate == 0 {
        "flat out".to_owned()
    } else {
        format!("{}/s", t.rate)
    };
    let mut notes = String::new();
    for (name, value) in &t.xdp_counters {
        let _ = write!(notes, " {name}={value}");
    }
    if t.backlog_drops != (0, 0) {
        let _ = write!(
            notes,
            " backlog drops {}/{}",
            t.backlog_drops.0, t.backlog_drops.1
        );
    }
    if t.foreign > 0.01 {
        let _ = write!(
            notes,
            " (other processes: {:.0}% of a core)",
            t.foreign * 100.0
        );
    }
    step(&format!(
        "  {} {clients} {path} {asked}: sent {:.0}/s, offers {:.0}/s, loss {:.3}%, p50 {} p99 {} \
         max {}; server {:.2} µs/offer (user {:.2}, its core {:.2}), generator core {:.2} \
         µs{notes}",
        kind.name(),
        r.send_rate(),
        r.offers_per_sec(),
        r.loss() * 100.0,
        micros(r.latency.p50),
        micros(r.latency.p99),
        micros(r.latency.max),
        t.per_offer(t.server_cpu),
        t.per_offer(t.server_user),
        t.per_offer(t.server_core),
        t.per_offer(t.generator_core),
    ));
}

// ---------------------------------------------------------------------------------------------
// The lab

/// One server in its namespace, the generator's namespace beside it, and their files. Fields
/// drop in order: the server first, then the namespaces (and the veth pair), then the files.
struct Lab {
    server: ChildGuard,
    pid: u32,
    kind: ServerKind,
    gen_ns: NetNs,
    srv_ns: NetNs,
    /// Config, TFTP root and logs; removed last.
    _dir: TempDir,
    server_ip: Ipv4Addr,
    xdpboot: PathBuf,
}

impl Lab {
    /// Builds the lab for `kind` (subnet 198.18.(60 + index).0/24) and waits until the server
    /// answers. `shed` is the XDP shedding (rate, burst); `None` turns it off.
    fn start(
        kind: ServerKind,
        index: usize,
        args: &Args,
        xdpboot: &Path,
        shed: Option<(u32, u32)>,
    ) -> anyhow::Result<Lab> {
        let subnet = 60 + u8::try_from(index % 100).expect("below 100");
        let server_ip = Ipv4Addr::new(198, 18, subnet, 1);
        let gen_ip = Ipv4Addr::new(198, 18, subnet, 2);
        let dir = TempDir::new("bench-dhcp").context("creating the lab directory")?;
        let tftp = dir.join("tftp");
        let http = dir.join("http");
        std::fs::create_dir(&tftp)?;
        std::fs::create_dir(&http)?;
        for loader in LOADERS {
            std::fs::write(tftp.join(loader), b"")?;
        }
        let (shed_rate, shed_burst) = shed.unwrap_or((0, 1));
        let config = dir.join("xdpboot.toml");
        std::fs::write(
            &config,
            format!(
                "# cargo xtask bench-dhcp: shedding off (shed_rate = 0) so distinct clients at \
                 benchmark rates are all answered; HTTP(S) listeners off.\n\
                 [xdp]\nshed_rate = {shed_rate}\nshed_burst = {shed_burst}\n\n\
                 [tftp]\nroot = \"{}\"\n\n[http]\nroot = \"{}\"\nport = 0\nhttps_port = 0\n",
                tftp.display(),
                http.display()
            ),
        )?;
        let gen_ns = NetNs::new("gen")?;
        let srv_ns = NetNs::new("srv")?;
        veth(&gen_ns, "gen0", &srv_ns, "eth0")?;
        gen_ns.add_address("gen0", &format!("{gen_ip}/24"))?;
        srv_ns.add_address("eth0", &format!("{server_ip}/24"))?;
        if !args.no_rps {
            set_rps(&srv_ns, "eth0", args.server_cpu)?;
            set_rps(&gen_ns, "gen0", args.generator_cpu)?;
        }
        let cpu = args.server_cpu.to_string();
        let (program, mut argv, envs, comm): (&Path, Vec<String>, Vec<(&str, &str)>, &str) =
            match kind {
                ServerKind::Dnsmasq => (
                    &args.dnsmasq,
                    vec![
                        "--keep-in-foreground".into(),
                        "--conf-file=/dev/null".into(),
                        "--port=0".into(),
                        "--interface=eth0".into(),
                        "--bind-interfaces".into(),
                        format!("--dhcp-range={},proxy", Ipv4Addr::new(198, 18, subnet, 0)),
                        "--pxe-service=x86PC,BIOS,undionly.kpxe".into(),
                        "--pxe-service=x86-64_EFI,UEFI,ipxe-amd64.efi".into(),
                        // No log line per answer (xdpboot's per-answer line is off too).
                        "--quiet-dhcp".into(),
                        format!("--dhcp-leasefile={}", dir.join("dnsmasq.leases").display()),
                        format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
                        "--log-facility=-".into(),
                    ],
                    vec![],
                    "dnsmasq",
                ),
                _ => {
                    let mut argv: Vec<String> =
                        vec!["run".into(), "--interface".into(), "eth0".into()];
                    argv.extend(
                        match kind {
                            ServerKind::XdpTee => ["--backend", "xdp", "--steer", "tee"],
                            ServerKind::XdpRedirect => ["--backend", "xdp", "--steer", "redirect"],
                            _ => ["--backend", "udp", "--steer", "auto"],
                        }
                        .map(String::from),
                    );
                    argv.push("--config".into());
                    argv.push(config.display().to_string());
                    (
                        xdpboot,
                        argv,
                        // Warnings, and the start and stop lines, but not the one info line
                        // per answer (target xdpboot::net::service).
                        vec![
                            ("RUST_LOG", "warn,xdpboot=info,xdpboot::net::service=warn"),
                            ("NO_COLOR", "1"),
                        ],
                        "xdpboot",
                    )
                }
            };
        argv.splice(0..0, ["-c".to_owned(), cpu, program.display().to_string()]);
        let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
        let mut server = srv_ns.spawn(
            kind.name(),
            Path::new("taskset"),
            &argv,
            &envs,
            dir.join("server.log"),
        )?;
        let probe = Settings::probe("gen0");
        let answered = gen_ns.run(|| loadgen::wait_for_answer(&probe, READY_TIMEOUT))?;
        server.check_running()?;
        if !answered {
            bail!(
                "{} did not answer a PXE DISCOVER within {READY_TIMEOUT:?}; its log:\n{}",
                kind.name(),
                server.log()
            );
        }
        let pid = pid_in_netns(&srv_ns, comm)?;
        Ok(Lab {
            server,
            pid,
            kind,
            gen_ns,
            srv_ns,
            _dir: dir,
            server_ip,
            xdpboot: xdpboot.to_path_buf(),
        })
    }

    fn settings(
        &self,
        args: &Args,
        arches: &[u16],
        clients: u32,
        path: RequestPath,
        rate: u64,
    ) -> Settings {
        let count = if rate == 0 {
            args.flat_out_count() as f64
        } else {
            rate as f64 * args.trial_secs
        };
        Settings {
            interface: "gen0".into(),
            path,
            target: self.server_ip,
            giaddr: None,
            rate,
            count: (count.ceil() as u64).clamp(1, loadgen::MAX_COUNT),
            // The count ends a trial; the cap only catches a generator that falls behind.
            duration: args.trial().mul_f64(1.25),
            clients,
            arches: arches.to_vec(),
            wait: Duration::from_millis(500),
            batch: 64,
            warmup: 0,
            cpu: Some(args.generator_cpu),
            kernel_timestamps: true,
        }
    }

    /// One trial in a quiet moment: waits for the cores to be quiet first, and runs it again
    /// (up to [`DISTURBED_TRIES`] times) when other processes took more than
    /// [`MAX_FOREIGN`] of a core meanwhile.
    fn trial(
        &self,
        args: &Args,
        arches: &[u16],
        clients: u32,
        path: RequestPath,
        rate: u64,
    ) -> anyhow::Result<Trial> {
        let settings = self.settings(args, arches, clients, path, rate);
        let mut attempt = 0;
        loop {
            attempt += 1;
            settle(Duration::from_secs(args.settle_secs), args)?;
            let trial = self.measure(args, &settings)?;
            if trial.foreign <= MAX_FOREIGN || attempt >= DISTURBED_TRIES {
                return Ok(trial);
            }
            step(&format!(
                "disturbed: other processes used {:.0}% of a core during the trial; again",
                trial.foreign * 100.0
            ));
        }
    }

    /// A warm-up (so ARP, caches and the server's first wakeups are out of the way), then one
    /// measured run with the CPU time around it.
    fn measure(&self, args: &Args, settings: &Settings) -> anyhow::Result<Trial> {
        let warmup = Settings {
            rate: 2_000,
            count: 200,
            duration: Duration::from_secs(2),
            wait: Duration::from_millis(200),
            ..settings.clone()
        };
        self.gen_ns.run(|| loadgen::run(&warmup))?;
        let counters_before = self.xdp_counters();
        let drops_before = backlog_drops();
        let before = CpuSnapshot::take(self.pid)?;
        let report = self.gen_ns.run(|| loadgen::run(settings))?;
        let after = CpuSnapshot::take(self.pid)?;
        let drops_after = backlog_drops();
        let dropped = |cpu: usize| {
            drops_after
                .get(cpu)
                .copied()
                .unwrap_or(0)
                .saturating_sub(drops_before.get(cpu).copied().unwrap_or(0))
        };
        let counters_after = self.xdp_counters();
        let xdp_counters = counters_after
            .iter()
            .filter_map(|(name, value)| {
                let old = counters_before
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0, |(_, v)| *v);
                let delta = value.saturating_sub(old);
                // The ones that say a request did not reach the daemon.
                (delta > 0 && matches!(name.as_str(), "shed" | "ring_full" | "no_socket"))
                    .then(|| (name.clone(), delta))
            })
            .collect();
        Ok(Trial {
            rate: settings.rate,
            report,
            server_cpu: after.server.saturating_sub(before.server),
            server_user: after.server_user.saturating_sub(before.server_user),
            server_core: after.core_busy(args.server_cpu) - before.core_busy(args.server_cpu),
            generator_core: after.core_busy(args.generator_cpu)
                - before.core_busy(args.generator_cpu),
            xdp_counters,
            foreign: before.foreign_share(&after, args.server_cpu),
            backlog_drops: (dropped(args.server_cpu), dropped(args.generator_cpu)),
        })
    }

    /// The XDP program's counters (`xdpboot stats`), for the XDP servers; empty otherwise.
    fn xdp_counters(&self) -> Vec<(String, u64)> {
        if !self.kind.is_xdp() {
            return Vec::new();
        }
        let Ok(out) = run_command(
            Command::new("ip")
                .args(["netns", "exec", self.srv_ns.name()])
                .arg(&self.xdpboot)
                .args(["stats", "--interface", "eth0"]),
            Duration::from_secs(10),
        ) else {
            return Vec::new();
        };
        out.lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let name = words.next()?;
                let value = words.next()?.parse().ok()?;
                Some((name.to_owned(), value))
            })
            .collect()
    }

    /// Stops the server; for xdpboot, returns the counters line it logs at exit.
    fn stopped_counters(self) -> Option<String> {
        let Lab {
            mut server,
            pid,
            kind,
            ..
        } = self;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = server.wait_exit(Duration::from_secs(5));
        if kind == ServerKind::Dnsmasq {
            return None;
        }
        server
            .log()
            .lines()
            .find_map(|l| l.split_once("counters=").map(|(_, c)| c.trim().to_owned()))
    }
}

/// The process called `comm` in `ns` (the lab's server: the namespace is ours and holds only
/// it).
pub(crate) fn pid_in_netns(ns: &NetNs, comm: &str) -> anyhow::Result<u32> {
    let inode = std::fs::metadata(Path::new("/run/netns").join(ns.name()))
        .context("reading the namespace's inode")?
        .ino();
    let wanted = format!("net:[{inode}]");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        if link.to_str() != Some(wanted.as_str()) {
            continue;
        }
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if name.trim() == comm {
            return Ok(pid);
        }
    }
    bail!("no process `{comm}` found in namespace {}", ns.name())
}

/// Receive packet steering of `iface`'s first rx queue to `cpu`.
pub(crate) fn set_rps(ns: &NetNs, iface: &str, cpu: usize) -> anyhow::Result<()> {
    let mask = format!("{:x}", 1u64 << cpu);
    run_command(
        Command::new("ip").args([
            "netns",
            "exec",
            ns.name(),
            "sh",
            "-c",
            &format!("echo {mask} > /sys/class/net/{iface}/queues/rx-0/rps_cpus"),
        ]),
        Duration::from_secs(10),
    )
    .with_context(|| format!("setting RPS on {iface}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CPU accounting

pub(crate) struct CpuSnapshot {
    /// CPU time of every thread of the server.
    pub(crate) server: Duration,
    /// Its user-space part (`utime` of every thread, in USER_HZ ticks: coarse, so only the
    /// sum over a trial means anything).
    server_user: Duration,
    /// Per CPU, from `/proc/stat` in USER_HZ ticks.
    cores: Vec<CoreTicks>,
    /// Every other process's CPU ticks.
    others: HashMap<u32, u64>,
}

impl CpuSnapshot {
    pub(crate) fn take(pid: u32) -> anyhow::Result<CpuSnapshot> {
        let mut server = Duration::ZERO;
        let mut user_ticks = 0u64;
        let tasks = format!("/proc/{pid}/task");
        for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
            let task = task?.path();
            // utime is field 14 of stat, after the command name in parentheses.
            if let Ok(stat) = std::fs::read_to_string(task.join("stat"))
                && let Some((_, rest)) = stat.rsplit_once(')')
                && let Some(ticks) = rest
                    .split_whitespace()
                    .nth(11)
                    .and_then(|v| v.parse::<u64>().ok())
            {
                user_ticks += ticks;
            }
            let path = task.join("schedstat");
            // A thread that has just ended has no schedstat any more.
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Some(ns) = text.split_whitespace().next().and_then(|v| v.parse().ok())
            {
                server += Duration::from_nanos(ns);
            }
        }
        Ok(CpuSnapshot {
            server,
            server_user: Duration::from_secs_f64(user_ticks as f64 / ticks_per_second()),
            cores: core_times()?,
            others: other_processes(&[pid, std::process::id()]),
        })
    }

    fn core_busy(&self, cpu: usize) -> Duration {
        let ticks = self.cores.get(cpu).map_or(0, |c| c.busy);
        Duration::from_secs_f64(ticks as f64 / ticks_per_second())
    }

    /// CPU time other processes (not the server, not this one, not kernel threads) used
    /// between `self` and `later`, as a share of one core over that time: they competed with
    /// the server or the generator (the machine has only the two cores the benchmark uses).
    fn foreign_share(&self, later: &CpuSnapshot, cpu: usize) -> f64 {
        let elapsed = later
            .cores
            .get(cpu)
            .map_or(0, |c| c.total)
            .saturating_sub(self.cores.get(cpu).map_or(0, |c| c.total));
        if elapsed == 0 {
            return 0.0;
        }
        let used: u64 = later
            .others
            .iter()
            .map(|(pid, ticks)| ticks.saturating_sub(self.others.get(pid).copied().unwrap_or(0)))
            .sum();
        used as f64 / elapsed as f64
    }
}

/// CPU ticks (user and system) of every process but `exclude` and kernel threads. A process
/// that starts and ends between two snapshots is missed (counting reaped children's time
/// instead would count all of a long compiler run that merely ended during a trial).
pub(crate) fn other_processes(exclude: &[u32]) -> HashMap<u32, u64> {
    let mut ticks = HashMap::new();
    for pid in crate::bench_http::all_pids() {
        if exclude.contains(&pid) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (in parentheses, may hold spaces): state is field 3,
        // flags 9, utime 14, stime 15.
        let Some((_, rest)) = text.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        const PF_KTHREAD: u64 = 0x0020_0000;
        if field(9).is_some_and(|flags| flags & PF_KTHREAD != 0) {
            continue;
        }
        let total = [14, 15].iter().filter_map(|&n| field(n)).sum();
        ticks.insert(pid, total);
    }
    ticks
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CoreTicks {
    /// Everything but idle and iowait.
    pub(crate) busy: u64,
    pub(crate) total: u64,
}

/// Per CPU, the packets dropped because its backlog was full (`/proc/net/softnet_stat`, second
/// column, hexadecimal; one line per CPU).
fn backlog_drops() -> Vec<u64> {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .map(|line| {
            line.split_whitespace()
                .nth(1)
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .unwrap_or(0)
        })
        .collect()
}

/// Per CPU ticks from `/proc/stat`.
pub(crate) fn core_times() -> anyhow::Result<Vec<CoreTicks>> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let mut cores = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        if !name.starts_with("cpu") || name == "cpu" {
            continue;
        }
        let values: Vec<u64> = fields.filter_map(|v| v.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
        // already in user.
        let total: u64 = values.iter().take(8).sum();
        let at = |i: usize| values.get(i).copied().unwrap_or(0);
        cores.push(CoreTicks {
            busy: total - at(3) - at(4),
            total,
        });
    }
    Ok(cores)
}

pub(crate) fn ticks_per_second() -> f64 {
    // SAFETY: sysconf with a constant name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Busy share of each of the benchmark's two cores over `window`.
fn background_load(window: Duration, args: &Args) -> anyhow::Result<(f64, f64)> {
    let before = core_times()?;
    std::thread::sleep(window);
    let after = core_times()?;
    let share = |cpu: usize| {
        let (Some(a), Some(b)) = (after.get(cpu), before.get(cpu)) else {
            return 0.0;
        };
        let total = a.total.saturating_sub(b.total);
        if total == 0 {
            0.0
        } else {
            a.busy.saturating_sub(b.busy) as f64 / total as f64
        }
    };
    Ok((share(args.server_cpu), share(args.generator_cpu)))
}

/// Waits, up to `limit`, for both cores to be quiet; returns the last load seen.
fn settle(limit: Duration, args: &Args) -> anyhow::Result<(f64, f64)> {
    let deadline = Instant::now() + limit;
    let mut said = false;
    loop {
        check_interrupted()?;
        let load = background_load(Duration::from_millis(300), args)?;
        if (load.0 < QUIET_BUSY && load.1 < QUIET_BUSY) || Instant::now() >= deadline {
            return Ok(load);
        }
        if !said {
            step(&format!(
                "waiting up to {limit:?} for other work to finish (cores {:.0}% / {:.0}% busy)",
                load.0 * 100.0,
                load.1 * 100.0
            ));
            said = true;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// perfdhcp cross-check

struct CrossCheck {
    server: ServerKind,
    rate: u64,
    clients: u32,
    perfdhcp: Option<PerfdhcpResult>,
    loadgen: Trial,
}

#[derive(Debug, Default)]
struct PerfdhcpResult {
    sent: u64,
    received: u64,
    period: f64,
    avg_ms: f64,
    max_ms: f64,
}

/// perfdhcp and the generator, one after the other, at `rate` on the relayed path with the
/// same client count and architecture (perfdhcp sends one option 60/93 pair: uefi-x64).
fn cross_check(lab: &Lab, args: &Args, rate: u64) -> anyhow::Result<CrossCheck> {
    let clients = args.clients[0];
    let secs = args.trial_secs.ceil().max(1.0) as u64;
    let class = "PXEClient:Arch:00007:UNDI:003000";
    let hex: String = class.bytes().map(|b| format!("{b:02x}")).collect();
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", lab.gen_ns.name(), "taskset", "-c"])
        .arg(args.generator_cpu.to_string())
        .args(["perfdhcp", "-4", "-l", "gen0", "-i", "-g", "single"])
        .args(["-r", &rate.to_string(), "-p", &secs.to_string()])
        .args(["-R", &clients.to_string()])
        .args(["-o", &format!("60,{hex}"), "-o", "93,0007"])
        .arg(lab.server_ip.to_string());
    settle(Duration::from_secs(args.settle_secs), args)?;
    let text = run_bounded(&mut command, Duration::from_secs(secs) + PERFDHCP_GRACE)?;
    let perfdhcp = parse_perfdhcp(&text, secs as f64);
    if perfdhcp.is_none() {
        step(&format!("perfdhcp printed no statistics:\n{text}"));
    }
    let mut settings = lab.settings(args, &[7], clients, RequestPath::Relayed, rate);
    settings.count = rate * secs;
    settings.duration = Duration::from_secs(secs).mul_f64(1.25);
    // perfdhcp times an exchange from its send to its own read of the offer.
    settings.kernel_timestamps = false;
    let trial = lab.measure(args, &settings)?;
    if let Some(p) = &perfdhcp {
        step(&format!(
            "cross-check {} at {rate}/s, {clients} clients, relayed: perfdhcp {} sent, {} \
             answered, avg {:.3} ms, max {:.3} ms | loadgen {} sent, {} answered, mean {}, p99 {}",
            lab.kind.name(),
            p.sent,
            p.received,
            p.avg_ms,
            p.max_ms,
            trial.report.sent,
            trial.report.answered,
            micros(trial.report.latency.mean),
            micros(trial.report.latency.p99)
        ));
    }
    Ok(CrossCheck {
        server: lab.kind,
        rate,
        clients,
        perfdhcp,
        loadgen: trial,
    })
}

/// The DISCOVER-OFFER statistics of perfdhcp's final report.
fn parse_perfdhcp(text: &str, period: f64) -> Option<PerfdhcpResult> {
    let value = |key: &str| -> Option<f64> {
        text.lines().find_map(|line| {
            let rest = line.trim().strip_prefix(key)?;
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    Some(PerfdhcpResult {
        sent: value("sent packets:")? as u64,
        received: value("received packets:")? as u64,
        period,
        avg_ms: value("avg delay:").unwrap_or(f64::NAN),
        max_ms: value("max delay:").unwrap_or(f64::NAN),
    })
}

/// Runs `command` to its end or until `timeout` (then kills it); returns stdout and stderr.
fn run_bounded(command: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let dir = std::env::temp_dir().join(format!("xtask-bench-dhcp-{}.out", std::process::id()));
    let out = std::fs::File::create(&dir)?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&dir);
            bail!("{shown} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&dir).unwrap_or_default();
    let _ = std::fs::remove_file(&dir);
    Ok(text)
}

// ---------------------------------------------------------------------------------------------
// Shedding at the default settings

struct ShedDemo {
    rate: u64,
    clients: u32,
    secs: f64,
    report: Report,
    shed: u64,
    teed: u64,
}

/// xdpboot's XDP backend (tee) with the shipped `shed_rate = 10`, `shed_burst = 20`, at a rate
/// where each of 1,000 MACs sends 50 DISCOVERs/s: most are shed, and the counter says so.
fn shed_demo(args: &Args, xdpboot: &Path, arches: &[u16]) -> anyhow::Result<ShedDemo> {
    let lab = Lab::start(
        ServerKind::XdpTee,
        args.servers.len(),
        args,
        xdpboot,
        Some((10, 20)),
    )?;
    let (clients, rate) = (1_000, 50_000);
    let before = lab.xdp_counters();
    let settings = Settings {
        warmup: 0,
        ..lab.settings(args, arches, clients, RequestPath::Broadcast, rate)
    };
    let report = lab.gen_ns.run(|| loadgen::run(&settings))?;
    let after = lab.xdp_counters();
    let delta = |name: &str| {
        let get =
            |list: &[(String, u64)]| list.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
        get(&after).saturating_sub(get(&before))
    };
    let demo = ShedDemo {
        rate,
        clients,
        secs: args.trial_secs,
        shed: delta("shed"),
        teed: delta("teed"),
        report,
    };
    step(&format!(
        "shedding at the defaults: {} sent, {} answered, shed counter +{}, teed +{}",
        demo.report.sent, demo.report.answered, demo.shed, demo.teed
    ));
    Ok(demo)
}

// ---------------------------------------------------------------------------------------------
// The report

fn summary(
    args: &Args,
    series: &[Series],
    checks: &[CrossCheck],
    shed: Option<&ShedDemo>,
    dnsmasq_version: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Proxy DHCP: offers/s, DISCOVER→OFFER latency, CPU per offer\n"
    );
    let _ = writeln!(
        out,
        "{}; servers pinned to CPU {}, generator to CPU {}, RPS {}; {} s trials, median of {} \
         per rate; {}; arches {}. Loss-free: the highest rate on the ladder whose median loss \
         ≤ {}% (latency and CPU are that rate's medians); beside it the highest rate whose \
         median p99 was also ≤ {} µs. CPU: the server process's CPU time per offer, and its \
         core's busy time per offer (with the kernel's receive work RPS puts there). In the \
         ladder, ✗ marks a lossy rate and (p99) one over the latency bound.\n",
        machine(),
        args.server_cpu,
        args.generator_cpu,
        if args.no_rps { "off" } else { "on" },
        args.trial_secs,
        args.repeats,
        dnsmasq_version,
        args.arch.join(","),
        args.max_loss_pct,
        args.max_p99_us
    );
    for &clients in &args.clients {
        for &path in &args.paths {
            let rows: Vec<&Series> = series
                .iter()
                .filter(|s| s.clients == clients && s.path == path)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let dnsmasq = rows.iter().find(|s| s.server == ServerKind::Dnsmasq);
            let _ = writeln!(
                out,
                "### {clients} clients, {path} path ({})\n",
                match path {
                    RequestPath::Broadcast => "from 0.0.0.0:68 to 255.255.255.255:67, giaddr 0",
                    RequestPath::Relayed => "from the relay's :67, giaddr set",
                }
            );
            let _ = writeln!(
                out,
                "| server | loss-free offers/s | p50 | p99 | max | server CPU µs/offer | of \
                 which user | its core µs/offer | × dnsmasq | offers/s with p99 ≤ {} µs | × \
                 dnsmasq | dnsmasq CPU ÷ its CPU | flat out: offers/s (loss), CPU µs/offer | \
                 others' CPU |",
                args.max_p99_us
            );
            let _ = writeln!(
                out,
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for s in &rows {
                let flat = s.flat_out.as_ref().map_or("–".into(), |t| {
                    format!(
                        "{:.0} ({:.1}%), {:.2}",
                        t.report.offers_per_sec(),
                        t.report.loss() * 100.0,
                        t.per_offer(t.server_cpu)
                    )
                });
                let ratio = |mine: Option<&Step>, theirs: Option<&Step>| match (mine, theirs) {
                    (Some(m), Some(t)) => format!("{:.1}×", m.offers / t.offers),
                    _ => "–".into(),
                };
                let slo = s
                    .within_slo
                    .as_ref()
                    .map_or(format!("none ≥ {}", args.rates[0]), |t| {
                        format!("{:.0}", t.offers)
                    });
                let slo_ratio = ratio(
                    s.within_slo.as_ref(),
                    dnsmasq.and_then(|d| d.within_slo.as_ref()),
                );
                let Some(t) = &s.loss_free else {
                    let _ = writeln!(
                        out,
                        "| {} | none ≥ {}/s | | | | | | | | {slo} | {slo_ratio} | | {flat} | |",
                        s.server.name(),
                        args.rates[0]
                    );
                    continue;
                };
                let bound = if s.generator_bound {
                    " (generator-bound: ≥)"
                } else {
                    ""
                };
                let d = dnsmasq.and_then(|d| d.loss_free.as_ref());
                let cpu_ratio = d.map_or("–".into(), |d| {
                    format!("{:.1}×", d.server_cpu / t.server_cpu)
                });
                let _ = writeln!(
                    out,
                    "| {} | {:.0}{bound} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {slo} | \
                     {slo_ratio} | {cpu_ratio} | {flat} | {:.0}% |",
                    s.server.name(),
                    t.offers,
                    micros(t.p50),
                    micros(t.p99),
                    micros(t.max),
                    t.server_cpu,
                    t.server_user,
                    t.server_core,
                    ratio(Some(t), d),
                    t.foreign * 100.0,
                );
            }
            let _ = writeln!(out);
            // The whole ladder: median offers/s, loss and p99 per rate.
            let _ = write!(out, "<details><summary>Ladder</summary>\n\n| rate/s |");
            for s in &rows {
                let _ = write!(out, " {} |", s.server.name());
            }
            let _ = write!(out, "\n|---:|");
            for _ in &rows {
                let _ = write!(out, "---|");
            }
            let _ = writeln!(out);
            for &rate in &args.rates {
                if !rows
                    .iter()
                    .any(|s| s.steps.iter().any(|st| st.rate == rate))
                {
                    continue;
                }
                let _ = write!(out, "| {rate} |");
                for s in &rows {
                    match s.steps.iter().find(|st| st.rate == rate) {
                        Some(st) => {
                            let _ = write!(
                                out,
                                " {:.0}/s, {:.2}% lost, p99 {}{} |",
                                st.offers,
                                st.loss * 100.0,
                                micros(st.p99),
                                if !st.loss_free(args) {
                                    " ✗"
                                } else if !st.within_slo(args) {
                                    " (p99)"
                                } else {
                                    ""
                                }
                            );
                        }
                        None => {
                            let _ = write!(out, " |");
                        }
                    }
                }
                let _ = writeln!(out);
            }
            let _ = writeln!(out, "\n</details>\n");
        }
    }
    if !checks.is_empty() {
        let _ = writeln!(
            out,
            "### Cross-check: perfdhcp (Kea) vs cargo xtask loadgen, relayed path, uefi-x64\n\n\
             One after the other at the same rate, client count and pinning. Here loadgen times \
             an offer when it reads it, as perfdhcp does (the tables above use the kernel's \
             receive time).\n"
        );
        let _ = writeln!(
            out,
            "| server | rate/s | clients | perfdhcp sent/s | perfdhcp offers/s | perfdhcp loss | \
             perfdhcp avg | loadgen sent/s | loadgen offers/s | loadgen loss | loadgen mean | \
             loadgen p99 |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in checks {
            let r = &c.loadgen.report;
            let perfdhcp = match &c.perfdhcp {
                Some(p) => format!(
                    "{:.0} | {:.0} | {:.2}% | {:.3} ms",
                    p.sent as f64 / p.period,
                    p.received as f64 / p.period,
                    if p.sent == 0 {
                        0.0
                    } else {
                        100.0 * (1.0 - p.received as f64 / p.sent as f64)
                    },
                    p.avg_ms
                ),
                None => "– | – | – | –".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {perfdhcp} | {:.0} | {:.0} | {:.2}% | {:.3} ms | {} |",
                c.server.name(),
                c.rate,
                c.clients,
                r.send_rate(),
                r.offers_per_sec(),
                r.loss() * 100.0,
                r.latency.mean.as_secs_f64() * 1e3,
                micros(r.latency.p99)
            );
        }
        let _ = writeln!(out);
    }
    if let Some(d) = shed {
        let _ = writeln!(
            out,
            "### Flood shedding at the shipped defaults (shed_rate = 10, shed_burst = 20)\n\n\
             xdpboot xdp (tee), {} clients at {}/s for {} s (each MAC sends {}/s): {} \
             DISCOVERs sent, {} answered ({:.1}%); the XDP program's `shed` counter grew by {} \
             and `teed` by {}. The rows above run with `shed_rate = 0`.\n",
            d.clients,
            d.rate,
            d.secs,
            d.rate / u64::from(d.clients),
            d.report.sent,
            d.report.answered,
            100.0 * d.report.answered as f64 / d.report.sent.max(1) as f64,
            d.shed,
            d.teed
        );
    }
    out
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} CPUs, Linux {kernel}")
}

fn step(text: &str) {
    println!("[bench-dhcp] {text}");
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// "dnsmasq 2.90" from `dnsmasq --version`.
pub(crate) fn version_line(binary: &Path) -> anyhow::Result<String> {
    let output = Command::new(binary).arg("--version").output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(2))
        .context("no version")?;
    Ok(format!("dnsmasq {version}"))
}
