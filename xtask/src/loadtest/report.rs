//! What a storm measured: per stage, completions, failures (with their reasons), rate and
//! latency; the servers' CPU time and peak RSS; and the tables that compare two servers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::time::Instant;

use super::Args;
use super::cost::ThreadTimes;
use super::lab::{Running, ServerKind};
use crate::bench_dhcp::{self, CoreTicks};
use crate::bench_http;
use crate::loadgen::micros;

/// The steps of a network boot, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    Discover,
    ProxyRequest,
    Tftp,
    IpxeDhcp,
    Script,
    Kernel,
    Initrd,
    Overlay,
}

impl Stage {
    pub(super) const ALL: [Stage; 8] = [
        Stage::Discover,
        Stage::ProxyRequest,
        Stage::Tftp,
        Stage::IpxeDhcp,
        Stage::Script,
        Stage::Kernel,
        Stage::Initrd,
        Stage::Overlay,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Stage::Discover => "PXE DISCOVER → proxy OFFER",
            Stage::ProxyRequest => "REQUEST :4011 → ACK",
            Stage::Tftp => "TFTP loader",
            Stage::IpxeDhcp => "iPXE DHCP → script URL",
            Stage::Script => "HTTP script",
            Stage::Kernel => "HTTP kernel",
            Stage::Initrd => "HTTP shared initrd",
            Stage::Overlay => "HTTP overlay",
        }
    }

    /// Whether the stage moves a file worth a throughput column.
    fn is_transfer(self) -> bool {
        matches!(self, Stage::Tftp | Stage::Kernel | Stage::Initrd)
    }
}

/// How one stage of one node ended.
pub(super) enum Outcome {
    Done {
        bytes: u64,
    },
    Failed(String),
    /// Not asked of this node (`--http-nodes`).
    Skipped,
}

impl From<Result<u64, String>> for Outcome {
    fn from(result: Result<u64, String>) -> Outcome {
        match result {
            Ok(bytes) => Outcome::Done { bytes },
            Err(reason) => Outcome::Failed(reason),
        }
    }
}

/// One node's boot: the stages of each attempt as far as it got.
pub(super) struct NodeOutcome {
    started: Instant,
    /// Every attempt's stages, in order: attempt, stage, start, duration, outcome.
    stages: Vec<(u32, Stage, Instant, Duration, Outcome)>,
    /// The attempt under way.
    attempt: u32,
    /// Per attempt, the instance the node was talking to last (the proxy whose offer it took,
    /// then the one its script URL names).
    through: Vec<Option<Ipv4Addr>>,
}

impl NodeOutcome {
    pub(super) fn new(started: Instant) -> NodeOutcome {
        NodeOutcome {
            started,
            stages: Vec::with_capacity(Stage::ALL.len()),
            attempt: 0,
            through: Vec::with_capacity(1),
        }
    }

    /// Attempt `attempt` (0 first) starts.
    pub(super) fn begin_attempt(&mut self, attempt: u32) {
        self.attempt = attempt;
        self.through.push(None);
    }

    /// The attempt under way now talks to `server`.
    pub(super) fn through(&mut self, server: Ipv4Addr) {
        if let Some(last) = self.through.last_mut() {
            *last = Some(server);
        }
    }

    pub(super) fn record(&mut self, stage: Stage, began: Instant, outcome: Outcome) {
        self.stages
            .push((self.attempt, stage, began, began.elapsed(), outcome));
    }

    pub(super) fn skip(&mut self, stage: Stage) {
        let now = Instant::now();
        self.stages
            .push((self.attempt, stage, now, Duration::ZERO, Outcome::Skipped));
    }

    /// The last attempt's stages.
    fn last_attempt(&self) -> impl Iterator<Item = &(u32, Stage, Instant, Duration, Outcome)> {
        self.stages.iter().filter(|s| s.0 == self.attempt)
    }

    /// Every stage of the last attempt done (or skipped), to the last.
    pub(super) fn booted(&self) -> bool {
        self.last_attempt().count() == Stage::ALL.len()
            && self
                .last_attempt()
                .all(|(_, _, _, _, o)| !matches!(o, Outcome::Failed(_)))
    }

    /// The first failure of the node's boot, as "stage: reason".
    fn first_failure(&self) -> Option<String> {
        self.stages.iter().find_map(|(_, stage, _, _, o)| match o {
            Outcome::Failed(reason) => Some(format!("{}: {reason}", stage.label())),
            _ => None,
        })
    }
}

/// One stage's (or the whole boot's) numbers over a storm.
#[derive(Default)]
pub(super) struct StageTally {
    done: u64,
    skipped: u64,
    failures: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
    bytes: u64,
    first_start: Option<Instant>,
    last_end: Option<Instant>,
}

impl StageTally {
    fn add(&mut self, began: Instant, took: Duration, outcome: &Outcome) {
        match outcome {
            Outcome::Skipped => {
                self.skipped += 1;
                return;
            }
            Outcome::Done { bytes } => {
                self.done += 1;
                self.bytes += bytes;
                self.latencies.push(took);
            }
            Outcome::Failed(reason) => *self.failures.entry(reason.clone()).or_default() += 1,
        }
        self.first_start = Some(self.first_start.map_or(began, |t| t.min(began)));
        let end = began + took;
        self.last_end = Some(self.last_end.map_or(end, |t| t.max(end)));
    }

    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// From the stage's first start to its last end.
    fn window(&self) -> Duration {
        match (self.first_start, self.last_end) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        }
    }

    /// Completions per second over the stage's window.
    fn rate(&self) -> f64 {
        per_second(self.done as f64, self.window())
    }

    fn mib_per_s(&self) -> f64 {
        per_second(self.bytes as f64 / f64::from(1 << 20), self.window())
    }

    fn percentile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index]
    }
}

fn per_second(n: f64, over: Duration) -> f64 {
    if over.is_zero() {
        0.0
    } else {
        n / over.as_secs_f64()
    }
}

/// Everything the nodes of one storm did.
#[derive(Default)]
pub(super) struct Tally {
    stages: Vec<StageTally>,
    /// The whole chain: done when every stage of the node's last attempt was.
    boot: StageTally,
    pub failed: u64,
    /// Booted nodes: when each started and how long it took, and the instance it booted
    /// through.
    boots: Vec<(Instant, Duration, Option<Ipv4Addr>)>,
    /// Nodes that needed more than one attempt.
    restarts: Vec<Restart>,
}

/// A node that started over.
struct Restart {
    started: Instant,
    took: Duration,
    booted: bool,
    /// The instances its failed attempts went through.
    failed_through: Vec<Ipv4Addr>,
    first_failure: String,
}

impl Tally {
    pub(super) fn add(&mut self, node: &NodeOutcome) {
        if self.stages.is_empty() {
            self.stages = Stage::ALL.iter().map(|_| StageTally::default()).collect();
        }
        for (_, stage, began, took, outcome) in &node.stages {
            self.stages[*stage as usize].add(*began, *took, outcome);
        }
        let took = node.started.elapsed();
        let booted = node.booted();
        if booted {
            self.boot
                .add(node.started, took, &Outcome::Done { bytes: 0 });
            self.boots
                .push((node.started, took, node.through.last().copied().flatten()));
        } else {
            self.failed += 1;
            let at = node
                .last_attempt()
                .last()
                .map_or("no stage", |(_, stage, _, _, _)| stage.label());
            self.boot.add(
                node.started,
                took,
                &Outcome::Failed(format!("failed at {at}")),
            );
        }
        if node.attempt > 0 {
            let failed_attempts = if booted {
                &node.through[..node.through.len() - 1]
            } else {
                &node.through[..]
            };
            self.restarts.push(Restart {
                started: node.started,
                took,
                booted,
                failed_through: failed_attempts.iter().flatten().copied().collect(),
                first_failure: node.first_failure().unwrap_or_default(),
            });
        }
    }

    /// Nodes that went through the whole chain.
    pub(super) fn boot_done(&self) -> u64 {
        self.boot.done
    }

    fn stage(&self, stage: Stage) -> Option<&StageTally> {
        self.stages.get(stage as usize)
    }

    /// Nodes that booted.
    pub(super) fn booted(&self) -> u64 {
        self.boot.done
    }

    /// Nodes that got through `stage` (in any attempt).
    pub(super) fn done(&self, stage: Stage) -> u64 {
        self.stage(stage).map_or(0, |t| t.done)
    }

    /// Booted nodes by the instance they booted through.
    pub(super) fn booted_through(&self) -> BTreeMap<Ipv4Addr, u64> {
        let mut by = BTreeMap::new();
        for (_, _, server) in &self.boots {
            if let Some(server) = server {
                *by.entry(*server).or_default() += 1;
            }
        }
        by
    }
}

/// CPU and memory at one moment.
pub(super) struct Usage {
    at: std::time::Instant,
    /// The servers' processes' utime + stime, in clock ticks.
    server_ticks: u64,
    server_pids: Vec<u32>,
    /// Their VmHWM, summed (KiB).
    server_peak_rss_kib: u64,
    /// What their memory is now: `smaps_rollup`, summed.
    server_memory: Memory,
    /// This process (the load generator).
    client_cpu: Duration,
    cores: Vec<CoreTicks>,
    others: HashMap<u32, u64>,
    /// Per thread, the servers' and the generator's.
    server_threads: ThreadTimes,
    generator_threads: ThreadTimes,
}

/// CPU and memory over a storm.
pub(super) struct UsageDelta {
    pub server_cpu: Duration,
    pub server_peak_rss_kib: u64,
    /// The servers' memory when the storm ended (the node state is at its largest then).
    pub server_memory: Memory,
    pub client_cpu: Duration,
    /// Busy time of all cores (everything: processes, the kernel's network work, others).
    pub machine_busy: Duration,
    /// CPU time of other processes on the machine meanwhile.
    pub others_cpu: Duration,
    pub elapsed: Duration,
    /// What set the storm's pace.
    pub limit: Limit,
    /// The servers' CPU by thread name, busiest first, with how many threads had the name.
    pub server_threads: Vec<(String, Duration, usize)>,
}

impl Usage {
    pub(super) fn take(running: &Running) -> Usage {
        let server_pids = running.pids();
        let mut exclude = server_pids.clone();
        exclude.push(std::process::id());
        Usage {
            at: std::time::Instant::now(),
            server_ticks: bench_http::cpu_ticks(&server_pids),
            server_peak_rss_kib: server_pids
                .iter()
                .filter_map(|&pid| bench_http::proc_status_field(pid, "VmHWM:"))
                .sum(),
            server_memory: server_pids.iter().map(|&pid| Memory::of(pid)).sum(),
            client_cpu: own_cpu(),
            cores: bench_dhcp::core_times().unwrap_or_default(),
            others: bench_dhcp::other_processes(&exclude),
            server_threads: ThreadTimes::of(&server_pids),
            generator_threads: ThreadTimes::of(&[std::process::id()]),
            server_pids,
        }
    }

    pub(super) fn since(&self, before: &Usage) -> UsageDelta {
        let ticks = |t: u64| Duration::from_secs_f64(t as f64 / bench_dhcp::ticks_per_second());
        let busy = |cores: &[CoreTicks]| cores.iter().map(|c| c.busy).sum::<u64>();
        let others: u64 = self
            .others
            .iter()
            .filter(|(pid, _)| !before.server_pids.contains(pid))
            .map(|(pid, t)| t.saturating_sub(before.others.get(pid).copied().unwrap_or(0)))
            .sum();
        let server_cpu = Duration::from_secs_f64(
            self.server_ticks.saturating_sub(before.server_ticks) as f64
                / bench_http::clock_ticks_per_second(),
        );
        let client_cpu = self.client_cpu.saturating_sub(before.client_cpu);
        let machine_busy = ticks(busy(&self.cores).saturating_sub(busy(&before.cores)));
        let others_cpu = ticks(others);
        let elapsed = self.at.duration_since(before.at);
        let limit = Limit::judge(&Shares {
            cores: self.cores.len().max(1),
            elapsed,
            machine_busy,
            server: server_cpu,
            generator: client_cpu,
            others: others_cpu,
            server_thread: self.server_threads.busiest_since(&before.server_threads),
            generator_thread: self
                .generator_threads
                .busiest_since(&before.generator_threads),
        });
        UsageDelta {
            server_threads: self.server_threads.by_name_since(&before.server_threads),
            server_cpu,
            server_peak_rss_kib: self.server_peak_rss_kib,
            server_memory: self.server_memory,
            client_cpu,
            machine_busy,
            others_cpu,
            elapsed,
            limit,
        }
    }
}

/// Busy share of one core above which a thread counts as saturated: it had its core to itself
/// and set the pace of whatever waited on it.
const SATURATED_THREAD: f64 = 0.90;
/// Busy share of all cores above which the machine counts as full.
const FULL_MACHINE: f64 = 0.95;
/// Share of all cores other processes may take before the run counts as disturbed.
const DISTURBED: f64 = 0.25;

/// Where the CPU of a storm went, for [`Limit::judge`].
pub(super) struct Shares {
    pub cores: usize,
    pub elapsed: Duration,
    pub machine_busy: Duration,
    pub server: Duration,
    pub generator: Duration,
    pub others: Duration,
    /// The busiest thread of each side, and its CPU time.
    pub server_thread: Option<(String, Duration)>,
    pub generator_thread: Option<(String, Duration)>,
}

/// What set a storm's pace.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Limit {
    /// A server thread had its core to itself: the server's own ceiling.
    ServerThread { thread: String, share: f64 },
    /// One of the generator's threads did.
    GeneratorThread { thread: String, share: f64 },
    /// The cores were full, shared by the server with the generator (and the kernel's network
    /// work between them): on a machine of its own the server would have had more of them.
    GeneratorMachine {
        busy: f64,
        generator: f64,
        server: f64,
    },
    /// The cores were full and other processes took a large part of them.
    Disturbed { busy: f64, others: f64 },
    /// Nothing was full: the pace was the round trips of the nodes in flight.
    Latency { busy: f64 },
}

impl Limit {
    pub(super) fn judge(s: &Shares) -> Limit {
        let of_one_core = |d: Duration| {
            if s.elapsed.is_zero() {
                0.0
            } else {
                d.as_secs_f64() / s.elapsed.as_secs_f64()
            }
        };
        let of_all = |d: Duration| of_one_core(d) / s.cores as f64;
        let saturated = |thread: &Option<(String, Duration)>| {
            thread
                .as_ref()
                .map(|(name, d)| (name.clone(), of_one_core(*d)))
                .filter(|(_, share)| *share >= SATURATED_THREAD)
        };
        let busy = of_all(s.machine_busy);
        if let Some((thread, share)) = saturated(&s.server_thread) {
            return Limit::ServerThread { thread, share };
        }
        if let Some((thread, share)) = saturated(&s.generator_thread) {
            return Limit::GeneratorThread { thread, share };
        }
        if busy < FULL_MACHINE {
            return Limit::Latency { busy };
        }
        let (generator, server, others) = (of_all(s.generator), of_all(s.server), of_all(s.others));
        if others >= DISTURBED {
            Limit::Disturbed { busy, others }
        } else {
            Limit::GeneratorMachine {
                busy,
                generator,
                server,
            }
        }
    }

    /// "generator-bound", "server-bound", "disturbed" or "neither".
    pub(super) fn verdict(&self) -> &'static str {
        match self {
            Limit::ServerThread { .. } => "server-bound",
            Limit::GeneratorThread { .. } | Limit::GeneratorMachine { .. } => "generator-bound",
            Limit::Disturbed { .. } => "disturbed",
            Limit::Latency { .. } => "neither (latency-bound)",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |x: f64| format!("{:.0}%", x * 100.0);
        write!(f, "{}: ", self.verdict())?;
        match self {
            Limit::ServerThread { thread, share } => write!(
                f,
                "the server's thread {thread} was busy {} of the time",
                pct(*share)
            ),
            Limit::GeneratorThread { thread, share } => write!(
                f,
                "the generator's thread {thread} was busy {} of the time",
                pct(*share)
            ),
            Limit::GeneratorMachine {
                busy,
                generator,
                server,
            } => write!(
                f,
                "the cores were {} busy, and the server had them with the generator, which took \
                 {} of them (the server {})",
                pct(*busy),
                pct(*generator),
                pct(*server)
            ),
            Limit::Disturbed { busy, others } => write!(
                f,
                "the cores were {} busy and other processes took {} of them",
                pct(*busy),
                pct(*others)
            ),
            Limit::Latency { busy } => write!(
                f,
                "no thread and not the cores were full ({} busy): the pace was the nodes' round \
                 trips",
                pct(*busy)
            ),
        }
    }
}

/// Busy share of the busiest core under which the machine counts as quiet (as `bench-dhcp`).
const QUIET_BUSY: f64 = 0.15;
/// Window over which the cores' load is judged while waiting for quiet.
const QUIET_WINDOW: Duration = Duration::from_millis(500);

/// Waits, up to `limit`, until every core is quiet (other sessions' builds share these
/// machines); returns the busiest core's share in the last window.
pub(super) fn settle(limit: Duration) -> f64 {
    let deadline = std::time::Instant::now() + limit;
    let mut said = false;
    loop {
        let before = bench_dhcp::core_times().unwrap_or_default();
        std::thread::sleep(QUIET_WINDOW);
        let after = bench_dhcp::core_times().unwrap_or_default();
        let busiest = busiest_share(&before, &after);
        if busiest < QUIET_BUSY || std::time::Instant::now() >= deadline {
            return busiest;
        }
        if !said {
            super::say(&format!(
                "waiting up to {limit:?} for other work to finish (busiest core {:.0}% busy)",
                busiest * 100.0
            ));
            said = true;
        }
    }
}

/// The busy share of the busiest core between two readings.
fn busiest_share(before: &[CoreTicks], after: &[CoreTicks]) -> f64 {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.total.saturating_sub(b.total);
            if total == 0 {
                0.0
            } else {
                a.busy.saturating_sub(b.busy) as f64 / total as f64
            }
        })
        .fold(0.0, f64::max)
}

/// Where a process's resident memory is, from `/proc/<pid>/smaps_rollup` (KiB), and its
/// threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Memory {
    pub rss_kib: u64,
    /// Heap, thread stacks, AF_XDP UMEM: what the process wrote.
    pub anonymous_kib: u64,
    pub threads: u64,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        Memory {
            threads: bench_http::proc_status_field(pid, "Threads:").unwrap_or(0),
            ..Memory::parse_rollup(&rollup)
        }
    }

    fn parse_rollup(text: &str) -> Memory {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("Rss:"),
            anonymous_kib: field("Anonymous:"),
            threads: 0,
        }
    }
}

impl std::iter::Sum for Memory {
    fn sum<I: Iterator<Item = Memory>>(iter: I) -> Memory {
        iter.fold(Memory::default(), |a, b| Memory {
            rss_kib: a.rss_kib + b.rss_kib,
            anonymous_kib: a.anonymous_kib + b.anonymous_kib,
            threads: a.threads + b.threads,
        })
    }
}

/// CPU time of this process, all threads.
pub(super) fn own_cpu() -> Duration {
    // SAFETY: rusage is plain old data; getrusage only writes it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a pointer to a live rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// One storm against one server (one or more instances of it).
pub(super) struct RunReport {
    pub server: ServerKind,
    /// Each instance's address.
    pub instances: Vec<Ipv4Addr>,
    /// The instance killed mid-storm, if one was.
    pub killed: Option<Kill>,
    pub nodes: u32,
    pub started: u32,
    pub wall: Duration,
    pub tally: Tally,
    pub usage: UsageDelta,
    pub dhcp: super::dhcp::Counts,
    pub server_log_tail: String,
    /// The costing pass after the storm, if one ran.
    pub cost: Option<super::cost::PassCost>,
}

/// `--kill-one-after`: which instance died, and when.
pub(super) struct Kill {
    pub instance: usize,
    /// Into the storm.
    pub after: Duration,
    pub at: Instant,
}

pub(super) fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "[loadtest] {elapsed_precise} [{bar:40}] {pos}/{len} nodes booted or failed, \
             {per_sec} {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The report: a table per server, then the ratios when two ran.
pub(super) fn summary(args: &Args, reports: &[RunReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Boot storm: {} nodes ({}), {} in flight, ramp {}\n",
        args.nodes,
        args.arch.join(","),
        args.concurrency,
        if args.ramp > 0.0 {
            format!("{}/s", args.ramp)
        } else {
            "none (as fast as the concurrency lets)".to_owned()
        }
    );
    let _ = writeln!(
        out,
        "{}. Every node: PXE DISCOVER → proxy OFFER, REQUEST to 4011 → ACK, its loader over \
         TFTP ({} KiB, blksize {}, lockstep), iPXE DISCOVER → script URL, then over HTTP (one \
         kept-alive connection) its script and its overlay; {} of the nodes, spread over the \
         storm, also fetch the kernel ({} MiB) and the shared initrd ({} MiB). Scaled to keep \
         a run on 2 shared cores within minutes. DHCP and TFTP from the server's link, HTTP \
         from behind a router. Rate: completions over the stage's first start to last end; \
         latency per node and stage, DHCP retries included.\n",
        bench_dhcp::machine(),
        args.loader_kib,
        args.tftp_blksize,
        args.http_nodes,
        args.kernel_mib,
        args.initrd_mib
    );
    for report in reports {
        server_table(&mut out, report);
    }
    if let [ours, theirs] = reports {
        ratio_table(&mut out, ours, theirs);
    }
    super::cost::table(&mut out, reports);
    let _ = writeln!(out, "Command: `{}`\n", args.command());
    out
}

fn server_table(out: &mut String, r: &RunReport) {
    let u = &r.usage;
    let _ = writeln!(
        out,
        "### {}{}\n\n{} of {} nodes started, {} booted, {} failed; wall time {:.1} s.\n",
        r.server.name(),
        match r.instances.len() {
            1 => String::new(),
            n => format!(", {n} instances"),
        },
        r.started,
        r.nodes,
        r.tally.boot.done,
        r.tally.failed,
        r.wall.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| stage | done | failed | rate/s | p50 | p99 | max | MiB/s |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for stage in Stage::ALL {
        let Some(t) = r.tally.stage(stage) else {
            continue;
        };
        row(out, stage.label(), t, stage.is_transfer());
    }
    row(out, "**whole boot**", &r.tally.boot, false);
    let _ = writeln!(
        out,
        "\nServer: CPU {:.1} s ({:.2} cores over the wall time), peak RSS {:.1} MiB (VmHWM, \
         summed over its processes; at the end {:.1} MiB, {:.1} MiB of it anonymous, {} \
         threads). Load generator: CPU {:.1} s. Both cores: {:.0}% busy \
         (servers, generator, the kernel's network work between them{}).{}\n\nServer CPU by \
         thread: {}.\n\n**Limit: {}.**\n",
        u.server_cpu.as_secs_f64(),
        per_second(u.server_cpu.as_secs_f64(), u.elapsed),
        mib(u.server_peak_rss_kib),
        mib(u.server_memory.rss_kib),
        mib(u.server_memory.anonymous_kib),
        u.server_memory.threads,
        u.client_cpu.as_secs_f64(),
        100.0 * per_second(u.machine_busy.as_secs_f64(), u.elapsed)
            / std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        if u.others_cpu.as_secs_f64() > 0.5 {
            format!(
                "; other processes on the machine took {:.1} CPU s meanwhile",
                u.others_cpu.as_secs_f64()
            )
        } else {
            String::new()
        },
        match (r.dhcp.strays, r.instances.len()) {
            (0, _) => String::new(),
            (n, 1) => format!(
                " DHCP replies that matched no waiting node (late answers to retransmissions): {n}."
            ),
            (n, _) => format!(
                " DHCP replies that matched no waiting node (the offers after each node's \
                 first, late answers to retransmissions): {n}."
            ),
        },
        thread_list(&u.server_threads),
        u.limit
    );
    if r.instances.len() > 1 {
        instances_table(out, r);
    }
    let mut failures: Vec<(String, u64)> = Vec::new();
    for stage in Stage::ALL {
        if let Some(t) = r.tally.stage(stage) {
            for (reason, n) in &t.failures {
                failures.push((format!("{}: {reason}", stage.label()), *n));
            }
        }
    }
    if !failures.is_empty() {
        failures.sort_by_key(|f| std::cmp::Reverse(f.1));
        let _ = writeln!(out, "Failed stages (of any attempt):\n");
        for (reason, n) in failures.iter().take(10) {
            let _ = writeln!(out, "- {n} × {reason}");
        }
        let _ = writeln!(out, "\nServer log (last lines):\n\n{}", r.server_log_tail);
    }
}

/// "tftp-transfers 12.1 s, tokio-rt-worker 5.3 s (2 threads), …": the five busiest names.
fn thread_list(threads: &[(String, Duration, usize)]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = threads
        .iter()
        .take(SHOWN)
        .map(|(name, d, n)| {
            let count = if *n > 1 {
                format!(" ({n} threads)")
            } else {
                String::new()
            };
            format!("{name} {:.1} s{count}", d.as_secs_f64())
        })
        .collect();
    if threads.len() > SHOWN {
        let rest: Duration = threads[SHOWN..].iter().map(|(_, d, _)| *d).sum();
        parts.push(format!("others {:.1} s", rest.as_secs_f64()));
    }
    parts.join(", ")
}

/// Per instance: the replies the nodes got from it and the boots it served; then, after a
/// kill, what became of the nodes it left mid-boot and how long the survivors took.
fn instances_table(out: &mut String, r: &RunReport) {
    let booted = r.tally.booted_through();
    let _ = writeln!(
        out,
        "Instances (one config, one URL secret; every instance answers every DISCOVER, a node \
         boots through the first offer it gets, iPXE's included):\n\n\
         | instance | address | offers the nodes got | 4011 ACKs | nodes booted through it |\n\
         |---|---|---:|---:|---:|"
    );
    for (i, ip) in r.instances.iter().enumerate() {
        let counts = r.dhcp.by_server.get(ip).copied().unwrap_or_default();
        let note = match &r.killed {
            Some(kill) if kill.instance == i => {
                format!(" (SIGKILL {:.1} s in)", kill.after.as_secs_f64())
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {ip}{note} | {} | {} | {} |",
            i + 1,
            counts.offers,
            counts.acks,
            booted.get(ip).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(out);
    let Some(kill) = &r.killed else {
        return;
    };
    let victim = r.instances[kill.instance];
    let (hit, other): (Vec<&Restart>, Vec<&Restart>) = r
        .tally
        .restarts
        .iter()
        .partition(|restart| restart.failed_through.contains(&victim));
    let mut hit_boots = StageTally::default();
    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    let mut last_end = None;
    for restart in &hit {
        *reasons.entry(restart.first_failure.as_str()).or_default() += 1;
        let outcome = if restart.booted {
            Outcome::Done { bytes: 0 }
        } else {
            Outcome::Failed("did not boot".into())
        };
        hit_boots.add(restart.started, restart.took, &outcome);
        if restart.booted {
            let end = restart.started + restart.took;
            last_end = Some(last_end.map_or(end, |t: Instant| t.max(end)));
        }
    }
    let mut reasons: Vec<(&str, u64)> = reasons.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    let reasons: Vec<String> = reasons
        .iter()
        .take(4)
        .map(|(reason, n)| format!("{n} × {reason}"))
        .collect();
    let after_kill: Vec<Duration> = r
        .tally
        .boots
        .iter()
        .filter(|(started, _, _)| *started >= kill.at)
        .map(|(_, took, _)| *took)
        .collect();
    let after_kill = StageTally {
        done: after_kill.len() as u64,
        latencies: after_kill,
        ..StageTally::default()
    };
    let _ = writeln!(
        out,
        "Kill: instance {} ({victim}) got SIGKILL {:.1} s into the storm. {} nodes had a boot \
         attempt fail through it ({}) and started over from their PXE DISCOVER: {} of them \
         booted through the survivors, {} did not. Their whole boot, the failed attempt \
         included: p50 {}, p99 {}, max {}; the last of them booted {} after the kill. Nodes \
         that powered on after the kill: {} booted, whole boot p50 {}, p99 {}. Other nodes \
         that started over: {}.\n",
        kill.instance + 1,
        kill.after.as_secs_f64(),
        hit.len(),
        if reasons.is_empty() {
            "none".to_owned()
        } else {
            reasons.join("; ")
        },
        hit_boots.done,
        hit_boots.failed(),
        micros(hit_boots.percentile(0.5)),
        micros(hit_boots.percentile(0.99)),
        micros(hit_boots.percentile(1.0)),
        last_end.map_or("–".to_owned(), |end| format!(
            "{:.1} s",
            end.saturating_duration_since(kill.at).as_secs_f64()
        )),
        after_kill.done,
        micros(after_kill.percentile(0.5)),
        micros(after_kill.percentile(0.99)),
        other.len()
    );
}

fn row(out: &mut String, label: &str, t: &StageTally, transfer: bool) {
    let failed = match t.failed() {
        0 if t.skipped > 0 => format!("0 ({} skipped)", t.skipped),
        0 => "0".to_owned(),
        n => n.to_string(),
    };
    let throughput = if transfer && t.done > 0 {
        format!("{:.0}", t.mib_per_s())
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "| {label} | {} | {failed} | {:.0} | {} | {} | {} | {throughput} |",
        t.done,
        t.rate(),
        micros(t.percentile(0.50)),
        micros(t.percentile(0.99)),
        micros(t.percentile(1.0)),
    );
}

fn ratio_table(out: &mut String, ours: &RunReport, theirs: &RunReport) {
    let _ = writeln!(
        out,
        "### {} ÷ {}\n\nRate: {a} ÷ {b} (above 1: {a} completes more per second). p50 and \
         p99: {b} ÷ {a} (above 1: {a} answers sooner). The two ran one after the other in the \
         same lab on the same files. nginx serves one static script and one static overlay to \
         every node: it renders nothing per node and checks no signature, where xdpboot \
         renders each script, signs each overlay URL and builds each overlay.\n",
        ours.server.name(),
        theirs.server.name(),
        a = ours.server.name(),
        b = theirs.server.name(),
    );
    let _ = writeln!(out, "| stage | rate | p50 | p99 |\n|---|---:|---:|---:|");
    let ratio = |a: f64, b: f64| {
        if a > 0.0 && b > 0.0 {
            format!("{:.2}×", a / b)
        } else {
            "–".to_owned()
        }
    };
    let mut line = |label: &str, a: &StageTally, b: &StageTally| {
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} |",
            ratio(a.rate(), b.rate()),
            ratio(
                b.percentile(0.5).as_secs_f64(),
                a.percentile(0.5).as_secs_f64()
            ),
            ratio(
                b.percentile(0.99).as_secs_f64(),
                a.percentile(0.99).as_secs_f64()
            ),
        );
    };
    for stage in Stage::ALL {
        if let (Some(a), Some(b)) = (ours.tally.stage(stage), theirs.tally.stage(stage)) {
            line(stage.label(), a, b);
        }
    }
    line("**whole boot**", &ours.tally.boot, &theirs.tally.boot);
    let (a, b) = (&ours.usage, &theirs.usage);
    let _ = writeln!(
        out,
        "\nWall time: {:.1} s vs {:.1} s ({}). Server CPU: {:.1} s vs {:.1} s ({} of the \
         peer's CPU per storm). Peak RSS: {:.1} MiB vs {:.1} MiB.\n",
        ours.wall.as_secs_f64(),
        theirs.wall.as_secs_f64(),
        ratio(theirs.wall.as_secs_f64(), ours.wall.as_secs_f64()),
        a.server_cpu.as_secs_f64(),
        b.server_cpu.as_secs_f64(),
        ratio(a.server_cpu.as_secs_f64(), b.server_cpu.as_secs_f64()),
        mib(a.server_peak_rss_kib),
        mib(b.server_peak_rss_kib),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(server_ms: u64, generator_ms: u64, others_ms: u64, busy_ms: u64) -> Shares {
        Shares {
            cores: 2,
            elapsed: Duration::from_secs(1),
            machine_busy: Duration::from_millis(busy_ms),
            server: Duration::from_millis(server_ms),
            generator: Duration::from_millis(generator_ms),
            others: Duration::from_millis(others_ms),
            server_thread: Some(("xdpboot".into(), Duration::from_millis(server_ms / 2))),
            generator_thread: Some((
                "tftp-client".into(),
                Duration::from_millis(generator_ms / 3),
            )),
        }
    }

    #[test]
    fn the_busiest_core_decides_whether_the_machine_is_quiet() {
        let core = |busy, total| CoreTicks { busy, total };
        let before = [core(100, 1_000), core(500, 1_000)];
        let after = [core(110, 1_100), core(560, 1_100)];
        assert!((busiest_share(&before, &after) - 0.6).abs() < 1e-9);
        assert_eq!(busiest_share(&before, &before), 0.0);
    }

    #[test]
    fn smaps_rollup_gives_resident_and_anonymous_memory() {
        let rollup = "55d0e0000000-7ffc00000000 ---p 00000000 00:00 0  [rollup]\n\
                      Rss:               45760 kB\nPss:               42541 kB\n\
                      Anonymous:         34312 kB\nSwap:                  0 kB\n";
        assert_eq!(
            Memory::parse_rollup(rollup),
            Memory {
                rss_kib: 45_760,
                anonymous_kib: 34_312,
                threads: 0
            }
        );
        assert_eq!(Memory::parse_rollup(""), Memory::default());
    }

    #[test]
    fn a_server_thread_that_had_its_core_to_itself_is_the_limit() {
        let mut s = shares(1_000, 900, 0, 1_990);
        s.server_thread = Some(("dnsmasq".into(), Duration::from_millis(970)));
        assert_eq!(
            Limit::judge(&s),
            Limit::ServerThread {
                thread: "dnsmasq".into(),
                share: 0.97
            }
        );
        assert_eq!(Limit::judge(&s).verdict(), "server-bound");
    }

    #[test]
    fn a_saturated_generator_thread_is_the_limit() {
        let mut s = shares(400, 1_000, 0, 1_500);
        s.generator_thread = Some(("tftp-client".into(), Duration::from_millis(950)));
        assert_eq!(Limit::judge(&s).verdict(), "generator-bound");
    }

    #[test]
    fn full_cores_shared_with_the_generator_make_the_storm_generator_bound() {
        let generator = Limit::judge(&shares(800, 1_100, 0, 1_960));
        assert_eq!(
            generator,
            Limit::GeneratorMachine {
                busy: 0.98,
                generator: 0.55,
                server: 0.4
            }
        );
        assert_eq!(
            generator.to_string(),
            "generator-bound: the cores were 98% busy, and the server had them with the \
             generator, which took 55% of them (the server 40%)"
        );
        // Even where the server took more: it did not reach its own ceiling.
        assert_eq!(
            Limit::judge(&shares(1_100, 800, 0, 1_960)).verdict(),
            "generator-bound"
        );
        assert_eq!(
            Limit::judge(&shares(600, 600, 700, 1_960)).verdict(),
            "disturbed"
        );
    }

    #[test]
    fn spare_cores_and_no_saturated_thread_mean_the_round_trips_set_the_pace() {
        assert_eq!(
            Limit::judge(&shares(500, 600, 0, 1_300)),
            Limit::Latency { busy: 0.65 }
        );
    }
}
