//! What a storm measured: per stage, completions, failures (with their reasons), rate and
//! latency; the servers' CPU time and peak RSS; and the tables that compare two servers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::time::Instant;

use super::Args;
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

    fn label(self) -> &'static str {
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
    /// This process (the load generator).
    client_cpu: Duration,
    cores: Vec<CoreTicks>,
    others: HashMap<u32, u64>,
}

/// CPU and memory over a storm.
pub(super) struct UsageDelta {
    pub server_cpu: Duration,
    pub server_peak_rss_kib: u64,
    pub client_cpu: Duration,
    /// Busy time of all cores (everything: processes, the kernel's network work, others).
    pub machine_busy: Duration,
    /// CPU time of other processes on the machine meanwhile.
    pub others_cpu: Duration,
    pub elapsed: Duration,
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
            client_cpu: own_cpu(),
            cores: bench_dhcp::core_times().unwrap_or_default(),
            others: bench_dhcp::other_processes(&exclude),
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
        UsageDelta {
            server_cpu: Duration::from_secs_f64(
                self.server_ticks.saturating_sub(before.server_ticks) as f64
                    / bench_http::clock_ticks_per_second(),
            ),
            server_peak_rss_kib: self.server_peak_rss_kib,
            client_cpu: self.client_cpu.saturating_sub(before.client_cpu),
            machine_busy: ticks(busy(&self.cores).saturating_sub(busy(&before.cores))),
            others_cpu: ticks(others),
            elapsed: self.at.duration_since(before.at),
        }
    }
}

/// CPU time of this process, all threads.
fn own_cpu() -> Duration {
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
         summed over its processes). Load generator: CPU {:.1} s. Both cores: {:.0}% busy \
         (servers, generator, the kernel's network work between them{}).{}\n",
        u.server_cpu.as_secs_f64(),
        per_second(u.server_cpu.as_secs_f64(), u.elapsed),
        mib(u.server_peak_rss_kib),
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
        }
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
