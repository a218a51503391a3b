//! The whole chain, costed: CPU per node for each stage of the boot, for each server.
//!
//! A storm overlaps its stages (one node fetches its loader while the next asks for its
//! OFFER), so its CPU cannot be split by stage. After its storm, each server therefore meets a
//! costing pass: `--cost-nodes` fresh nodes go through the chain one stage at a time, every
//! node finishing a stage (or failing it) before any starts the next. At each barrier the pass
//! samples
//! - the server's processes, every thread (`/proc/<pid>/task/<tid>/schedstat`, in ns): user and
//!   system time and, since the kernel accounts CPU by tick (no `IRQ_TIME_ACCOUNTING`), the
//!   network work done in the thread's context, such as delivering what it sends across the
//!   veth pair into the client's sockets;
//! - the load generator (this process, `getrusage`), the same way;
//! - the kernel's deferred network work, charged to neither (the `ksoftirqd/N` threads);
//! - the machine's busy time (`/proc/stat`), so what other processes took shows too.
//!
//! A stage's cost per node is the difference between its two barriers ÷ the nodes that
//! finished it; the whole chain per booted node is the stages' sum ÷ the nodes that finished
//! the last stage. A regression in any one stage shows in its row.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::lab::{self, Lab, Running};
use super::report::{RunReport, Stage, own_cpu};
use super::{Args, Node, NodeState, STOP_GRACE, Storm, dhcp, fetches_images, node_runtime, tftp};
use crate::bench_dhcp;
use crate::loadgen::micros;

/// How long the server's CPU is watched, before the pass, while nobody asks it anything.
const IDLE_WINDOW: Duration = Duration::from_secs(1);
/// Distinct failure reasons kept per stage.
const MAX_REASONS: usize = 4;

/// CPU time per thread of some processes, in ns.
#[derive(Clone, Debug, Default)]
pub(super) struct ThreadTimes {
    threads: HashMap<u32, ThreadTime>,
}

#[derive(Clone, Debug)]
struct ThreadTime {
    name: String,
    ns: u64,
}

impl ThreadTimes {
    /// Every thread of `pids` now.
    pub(super) fn of(pids: &[u32]) -> ThreadTimes {
        let mut threads = HashMap::new();
        for pid in pids {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let Some(tid) = task
                    .file_name()
                    .to_str()
                    .and_then(|t| t.parse::<u32>().ok())
                else {
                    continue;
                };
                let dir = task.path();
                let Some(ns) = std::fs::read_to_string(dir.join("schedstat"))
                    .ok()
                    .and_then(|text| schedstat_ns(&text))
                else {
                    continue;
                };
                let name = std::fs::read_to_string(dir.join("comm"))
                    .map(|n| n.trim_end().to_owned())
                    .unwrap_or_default();
                threads.insert(tid, ThreadTime { name, ns });
            }
        }
        ThreadTimes { threads }
    }

    /// The CPU time of each thread between `before` and now (`self`). A thread started since
    /// counts from zero; one that ended since loses its last part (the servers and ksoftirqd
    /// keep their threads); a thread id reused since counts from zero.
    fn each_since<'a>(
        &'a self,
        before: &'a ThreadTimes,
    ) -> impl Iterator<Item = (&'a str, Duration)> + 'a {
        self.threads.iter().map(|(tid, now)| {
            let earlier = before
                .threads
                .get(tid)
                .filter(|b| b.ns <= now.ns && b.name == now.name)
                .map_or(0, |b| b.ns);
            (now.name.as_str(), Duration::from_nanos(now.ns - earlier))
        })
    }

    /// All threads' CPU time between `before` and now.
    pub(super) fn since(&self, before: &ThreadTimes) -> Duration {
        self.each_since(before).map(|(_, d)| d).sum()
    }

    /// CPU time between `before` and now by thread name (tokio's workers share one), the
    /// busiest name first, with how many threads had it.
    pub(super) fn by_name_since(&self, before: &ThreadTimes) -> Vec<(String, Duration, usize)> {
        let mut names: HashMap<&str, (Duration, usize)> = HashMap::new();
        for (name, d) in self.each_since(before) {
            let entry = names.entry(name).or_default();
            entry.0 += d;
            entry.1 += 1;
        }
        let mut names: Vec<(String, Duration, usize)> = names
            .into_iter()
            .map(|(name, (d, n))| (name.to_owned(), d, n))
            .collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        names
    }

    /// The thread that ran most between `before` and now, and how long.
    pub(super) fn busiest_since(&self, before: &ThreadTimes) -> Option<(String, Duration)> {
        self.each_since(before)
            .max_by_key(|(_, d)| *d)
            .map(|(name, d)| (name.to_owned(), d))
    }
}

/// The first field of `/proc/<pid>/task/<tid>/schedstat`: time on a CPU, in ns.
fn schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The kernel's softirq threads, which run the network work deferred from interrupts and from
/// processes that did too much of it.
pub(super) fn ksoftirqd_pids() -> Vec<u32> {
    crate::bench_http::all_pids()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with("ksoftirqd/"))
        })
        .collect()
}

/// CPU counters at one barrier.
#[derive(Clone, Debug, Default)]
pub(super) struct Sample {
    pub at: Duration,
    pub server: ThreadTimes,
    pub generator: Duration,
    pub deferred: ThreadTimes,
    /// All cores' busy time.
    pub busy: Duration,
}

impl Sample {
    pub(super) fn take(epoch: std::time::Instant, server: &[u32], ksoftirqd: &[u32]) -> Sample {
        let ticks = |t: u64| Duration::from_secs_f64(t as f64 / bench_dhcp::ticks_per_second());
        Sample {
            at: epoch.elapsed(),
            server: ThreadTimes::of(server),
            generator: own_cpu(),
            deferred: ThreadTimes::of(ksoftirqd),
            busy: ticks(
                bench_dhcp::core_times()
                    .unwrap_or_default()
                    .iter()
                    .map(|c| c.busy)
                    .sum(),
            ),
        }
    }
}

/// What one stage of the pass cost.
#[derive(Clone, Debug)]
pub(super) struct StageCost {
    pub stage: Stage,
    /// Nodes that finished the stage.
    pub done: u64,
    pub failed: u64,
    /// The first few reasons, with their counts.
    pub reasons: Vec<(String, u64)>,
    pub wall: Duration,
    pub server: Duration,
    pub generator: Duration,
    /// ksoftirqd.
    pub deferred: Duration,
    /// Busy time of all cores, everything included.
    pub busy: Duration,
}

impl StageCost {
    /// The stage's cost: what ran between the barriers `before` and `after`.
    pub(super) fn between(
        stage: Stage,
        done: u64,
        failed: u64,
        before: &Sample,
        after: &Sample,
    ) -> StageCost {
        StageCost {
            stage,
            done,
            failed,
            reasons: Vec::new(),
            wall: after.at.saturating_sub(before.at),
            server: after.server.since(&before.server),
            generator: after.generator.saturating_sub(before.generator),
            deferred: after.deferred.since(&before.deferred),
            busy: after.busy.saturating_sub(before.busy),
        }
    }

    /// `total` per node that finished the stage; `None` when none did.
    pub(super) fn per_node(&self, total: Duration) -> Option<Duration> {
        per(total, self.done)
    }

    /// What other processes and kernel threads took meanwhile: the machine's busy time less
    /// the server, the generator and ksoftirqd (never below zero: the busy time is counted in
    /// ticks, the rest in ns).
    pub(super) fn rest(&self) -> Duration {
        self.busy
            .saturating_sub(self.server + self.generator + self.deferred)
    }
}

fn per(total: Duration, n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs_f64(total.as_secs_f64() / n as f64))
}

/// One server's costing pass.
#[derive(Clone, Debug)]
pub(super) struct PassCost {
    pub nodes: u32,
    /// Nodes of the pass that fetch the kernel and initrd.
    pub fetchers: u32,
    pub stages: Vec<StageCost>,
    /// The server's CPU time per second while idle, just before the pass.
    pub idle_per_second: Duration,
}

impl PassCost {
    /// Nodes that finished every stage they were given.
    pub(super) fn booted(&self) -> u64 {
        self.stages.last().map_or(0, |s| s.done)
    }

    /// `part` of every stage, summed, per booted node.
    pub(super) fn chain(&self, part: impl Fn(&StageCost) -> Duration) -> Option<Duration> {
        per(self.stages.iter().map(part).sum(), self.booted())
    }

    fn stage(&self, stage: Stage) -> Option<&StageCost> {
        self.stages.iter().find(|s| s.stage == stage)
    }
}

/// The nodes of a pass that fetch the images: as many per node as in the storm, at least one
/// when any did.
fn pass_fetchers(pass_nodes: u32, storm_nodes: u32, http_nodes: u32) -> u32 {
    if http_nodes == 0 {
        return 0;
    }
    let share = u64::from(http_nodes) * u64::from(pass_nodes) / u64::from(storm_nodes.max(1));
    (share as u32).clamp(1, pass_nodes)
}

/// Runs the costing pass against the servers of `running`.
pub(super) fn pass(
    lab: &Lab,
    running: &Running,
    args: &Args,
    mix: &[u16],
) -> anyhow::Result<PassCost> {
    let nodes = args.cost_nodes.min(args.nodes);
    let fetchers = pass_fetchers(nodes, args.nodes, args.http_nodes);
    super::say(&format!(
        "{}: costing pass, {nodes} nodes one stage at a time ({fetchers} fetch the images)",
        running.kind.name()
    ));
    let server = running.pids();
    let ksoftirqd = ksoftirqd_pids();
    let epoch = std::time::Instant::now();
    let idle_before = Sample::take(epoch, &server, &ksoftirqd);
    std::thread::sleep(IDLE_WINDOW);
    let idle_after = Sample::take(epoch, &server, &ksoftirqd);
    let idle = idle_after.server.since(&idle_before.server);
    let idle_per_second = Duration::from_secs_f64(
        idle.as_secs_f64() / idle_after.at.saturating_sub(idle_before.at).as_secs_f64(),
    );

    let dhcp_sockets = lab.cli.run(|| dhcp::Sockets::open(lab::CLIENT_IF))?;
    let tftp = tftp::Client::start(Some(&lab.cli))?;
    let stages = lab.far.run(|| {
        node_runtime()?.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(args.time_limit) + STOP_GRACE;
            let storm = Arc::new(Storm::new(
                args,
                dhcp::DhcpClient::new(dhcp_sockets)?,
                tftp,
                indicatif::ProgressBar::hidden(),
                deadline,
            ));
            let receiver = tokio::spawn(storm.dhcp.clone().receive());
            let mut live: Vec<(Node, NodeState)> = (0..nodes)
                .map(|index| {
                    let node = Node {
                        index,
                        arch: mix[index as usize % mix.len()],
                        fetch_images: fetches_images(index, nodes, fetchers),
                    };
                    (node, NodeState::default())
                })
                .collect();
            let mut stages = Vec::new();
            for stage in Stage::ALL {
                let before = Sample::take(epoch, &server, &ksoftirqd);
                let (done, failures) = all_through(&storm, stage, &mut live, args.concurrency)
                    .await
                    .with_context(|| format!("costing pass, {}", stage.label()))?;
                let after = Sample::take(epoch, &server, &ksoftirqd);
                let failed = failures.values().sum();
                let mut cost = StageCost::between(stage, done, failed, &before, &after);
                let mut reasons: Vec<(String, u64)> = failures.into_iter().collect();
                reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
                reasons.truncate(MAX_REASONS);
                cost.reasons = reasons;
                stages.push(cost);
            }
            receiver.abort();
            anyhow::Ok(stages)
        })
    })?;
    Ok(PassCost {
        nodes,
        fetchers,
        stages,
        idle_per_second,
    })
}

/// Takes every node of `live` that goes through `stage` through it, at most `concurrency` at
/// once, and returns when all have finished it: the barrier. Nodes that failed leave `live`.
/// Returns the number that finished it, and the failures by reason.
async fn all_through(
    storm: &Arc<Storm>,
    stage: Stage,
    live: &mut Vec<(Node, NodeState)>,
    concurrency: usize,
) -> anyhow::Result<(u64, HashMap<String, u64>)> {
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = Vec::with_capacity(live.len());
    for (node, mut state) in live.drain(..) {
        if !node.does(stage) {
            next.push((node, state));
            continue;
        }
        let permit = gate.clone().acquire_owned().await?;
        let storm = storm.clone();
        tasks.spawn(async move {
            let result = node.stage_in_time(&storm, stage, &mut state).await;
            drop(permit);
            (node, state, result)
        });
    }
    let mut done = 0;
    let mut failures: HashMap<String, u64> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (node, state, result) = joined.context("a node's task failed")?;
        match result {
            Ok(_) => {
                done += 1;
                next.push((node, state));
            }
            Err(reason) => *failures.entry(reason).or_default() += 1,
        }
    }
    // Keep the nodes in order, so the next stage starts them as this one did.
    next.sort_by_key(|(node, _)| node.index);
    *live = next;
    Ok((done, failures))
}

/// The per-stage table: each server's CPU per node, the generator's and ksoftirqd's beside.
pub(super) fn table(out: &mut String, reports: &[RunReport]) {
    let costed: Vec<(&RunReport, &PassCost)> = reports
        .iter()
        .filter_map(|r| r.cost.as_ref().map(|c| (r, c)))
        .collect();
    let Some((_, first)) = costed.first() else {
        return;
    };
    let names: Vec<&str> = costed.iter().map(|(r, _)| r.server.name()).collect();
    let _ = writeln!(
        out,
        "### CPU per node, stage by stage\n\n{} fresh nodes ({} of them fetching the images) \
         went through the chain one stage at a time after each storm, every node finishing a \
         stage before any began the next; CPU sampled at each barrier. Server: its processes' \
         threads (`/proc/<pid>/task/*/schedstat`: user and system time, and the network work \
         the kernel did in their context, such as delivering what they send). Generator: this \
         process (`getrusage`). ksoftirqd: the kernel's deferred network work, charged to \
         neither. µs per node that finished the stage; the chain per booted node.{}\n",
        first.nodes,
        first.fetchers,
        match names[..] {
            [a, b] => format!(" Ratio: {a} ÷ {b} (below 1: {a} spends less)."),
            _ => String::new(),
        }
    );
    let mut header = "| stage | nodes |".to_owned();
    let mut rule = "|---|---:|".to_owned();
    for name in &names {
        let _ = write!(header, " {name} |");
        rule.push_str("---:|");
    }
    if costed.len() == 2 {
        header.push_str(" ratio |");
        rule.push_str("---:|");
    }
    header.push_str(" generator | ksoftirqd |");
    rule.push_str("---:|---:|");
    let _ = writeln!(out, "{header}\n{rule}");
    let cell = |d: Option<Duration>| d.map_or("–".to_owned(), micros);
    let joined = |cells: Vec<String>| cells.join(" · ");
    for stage in Stage::ALL {
        let costs: Vec<Option<&StageCost>> = costed.iter().map(|(_, c)| c.stage(stage)).collect();
        let nodes = joined(
            costs
                .iter()
                .map(|c| c.map_or("–".to_owned(), |c| c.done.to_string()))
                .collect(),
        );
        let server: Vec<Option<Duration>> = costs
            .iter()
            .map(|c| c.and_then(|c| c.per_node(c.server)))
            .collect();
        let part = |f: fn(&StageCost) -> Duration| {
            joined(
                costs
                    .iter()
                    .map(|c| cell(c.and_then(|c| c.per_node(f(c)))))
                    .collect(),
            )
        };
        row(
            out,
            stage.label(),
            &nodes,
            &server,
            &part(|c| c.generator),
            &part(|c| c.deferred),
        );
    }
    let booted = joined(costed.iter().map(|(_, c)| c.booted().to_string()).collect());
    let chain = |f: fn(&StageCost) -> Duration| -> Vec<Option<Duration>> {
        costed.iter().map(|(_, c)| c.chain(f)).collect()
    };
    let cells = |v: Vec<Option<Duration>>| joined(v.into_iter().map(cell).collect());
    row(
        out,
        "**whole chain, per booted node**",
        &booted,
        &chain(|c| c.server),
        &cells(chain(|c| c.generator)),
        &cells(chain(|c| c.deferred)),
    );
    let storm: Vec<Option<Duration>> = costed
        .iter()
        .map(|(r, _)| per(r.usage.server_cpu, r.tally.boot_done()))
        .collect();
    let storm_generator = cells(
        costed
            .iter()
            .map(|(r, _)| per(r.usage.client_cpu, r.tally.boot_done()))
            .collect(),
    );
    let storm_booted = joined(
        costed
            .iter()
            .map(|(r, _)| r.tally.boot_done().to_string())
            .collect(),
    );
    row(
        out,
        "the storm, per booted node (stages overlapping)",
        &storm_booted,
        &storm,
        &storm_generator,
        "",
    );
    let _ = writeln!(out);
    for (r, c) in &costed {
        let rest: Duration = c.stages.iter().map(StageCost::rest).sum();
        let wall: Duration = c.stages.iter().map(|s| s.wall).sum();
        let _ = writeln!(
            out,
            "{}: idle, the server took {} of CPU per second; the pass took {:.1} s, and other \
             processes and kernel threads {:.1} CPU s meanwhile.",
            r.server.name(),
            micros(c.idle_per_second),
            wall.as_secs_f64(),
            rest.as_secs_f64()
        );
        for s in c.stages.iter().filter(|s| s.failed > 0) {
            let reasons: Vec<String> = s
                .reasons
                .iter()
                .map(|(reason, n)| format!("{n} × {reason}"))
                .collect();
            let _ = writeln!(
                out,
                "  {}: {} failed ({})",
                s.stage.label(),
                s.failed,
                reasons.join("; ")
            );
        }
    }
    let _ = writeln!(out);
}

fn row(
    out: &mut String,
    label: &str,
    nodes: &str,
    server: &[Option<Duration>],
    generator: &str,
    deferred: &str,
) {
    let cell = |d: &Option<Duration>| d.map_or("–".to_owned(), micros);
    let mut line = format!("| {label} | {nodes} |");
    for s in server {
        let _ = write!(line, " {} |", cell(s));
    }
    if let [Some(a), Some(b)] = server {
        let _ = write!(line, " {} |", ratio(*a, *b));
    } else if server.len() == 2 {
        line.push_str(" – |");
    }
    let _ = writeln!(out, "{line} {generator} | {deferred} |");
}

/// `a ÷ b` as "0.42×".
pub(super) fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "–".to_owned();
    }
    format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(threads: &[(u32, &str, u64)]) -> ThreadTimes {
        ThreadTimes {
            threads: threads
                .iter()
                .map(|&(tid, name, ns)| {
                    (
                        tid,
                        ThreadTime {
                            name: name.to_owned(),
                            ns,
                        },
                    )
                })
                .collect(),
        }
    }

    fn sample(at_ms: u64, server: ThreadTimes, generator_ms: u64, busy_ms: u64) -> Sample {
        Sample {
            at: Duration::from_millis(at_ms),
            server,
            generator: Duration::from_millis(generator_ms),
            deferred: ThreadTimes::default(),
            busy: Duration::from_millis(busy_ms),
        }
    }

    #[test]
    fn schedstat_gives_the_time_on_a_cpu_in_nanoseconds() {
        assert_eq!(schedstat_ns("1234567 890 12\n"), Some(1_234_567));
        assert_eq!(schedstat_ns(""), None);
        assert_eq!(schedstat_ns("x 1 2"), None);
    }

    #[test]
    fn thread_time_counts_new_threads_from_zero_and_forgets_ended_ones() {
        let before = times(&[
            (1, "xdpboot", 1_000),
            (2, "tokio-rt-worker", 500),
            (3, "gone", 9),
        ]);
        let after = times(&[
            (1, "xdpboot", 1_600),
            (2, "tokio-rt-worker", 800),
            (4, "new", 50),
        ]);
        assert_eq!(after.since(&before), Duration::from_nanos(600 + 300 + 50));
        assert_eq!(
            after.busiest_since(&before),
            Some(("xdpboot".to_owned(), Duration::from_nanos(600)))
        );
        let workers = times(&[(1, "w", 100), (2, "w", 100), (3, "main", 50)]);
        assert_eq!(
            workers.by_name_since(&ThreadTimes::default()),
            vec![
                ("w".to_owned(), Duration::from_nanos(200), 2),
                ("main".to_owned(), Duration::from_nanos(50), 1)
            ]
        );
    }

    #[test]
    fn a_reused_thread_id_counts_from_zero() {
        let before = times(&[(7, "old", 5_000)]);
        // Same id, another thread (another name, or a counter that went back).
        assert_eq!(
            times(&[(7, "other", 70)]).since(&before),
            Duration::from_nanos(70)
        );
        assert_eq!(
            times(&[(7, "old", 70)]).since(&before),
            Duration::from_nanos(70)
        );
    }

    #[test]
    fn a_stage_costs_what_ran_between_its_barriers_per_node_that_finished_it() {
        let before = sample(1_000, times(&[(1, "s", 2_000_000)]), 400, 3_000);
        let after = sample(1_500, times(&[(1, "s", 12_000_000)]), 420, 3_040);
        let cost = StageCost::between(Stage::Discover, 1_000, 3, &before, &after);
        assert_eq!(cost.wall, Duration::from_millis(500));
        assert_eq!(cost.server, Duration::from_millis(10));
        assert_eq!(cost.generator, Duration::from_millis(20));
        assert_eq!(cost.per_node(cost.server), Some(Duration::from_micros(10)));
        // 40 ms busy, 30 ms of it the server's and the generator's.
        assert_eq!(cost.rest(), Duration::from_millis(10));
        let none = StageCost::between(Stage::Discover, 0, 3, &before, &after);
        assert_eq!(none.per_node(none.server), None);
    }

    #[test]
    fn the_chain_is_every_stage_summed_per_node_that_booted() {
        let stage = |stage, done, server_ms| StageCost {
            stage,
            done,
            failed: 0,
            reasons: Vec::new(),
            wall: Duration::ZERO,
            server: Duration::from_millis(server_ms),
            generator: Duration::ZERO,
            deferred: Duration::ZERO,
            busy: Duration::ZERO,
        };
        let pass = PassCost {
            nodes: 100,
            fetchers: 1,
            stages: vec![
                stage(Stage::Discover, 100, 10),
                // One image fetch costs a lot; one node did it.
                stage(Stage::Kernel, 1, 40),
                stage(Stage::Overlay, 50, 50),
            ],
            idle_per_second: Duration::ZERO,
        };
        assert_eq!(pass.booted(), 50);
        assert_eq!(pass.chain(|c| c.server), Some(Duration::from_millis(2)));
        assert_eq!(
            pass.stage(Stage::Kernel).and_then(|k| k.per_node(k.server)),
            Some(Duration::from_millis(40))
        );
    }

    #[test]
    fn a_pass_fetches_images_in_the_storms_proportion_and_at_least_once() {
        assert_eq!(pass_fetchers(2_000, 10_000, 100), 20);
        assert_eq!(pass_fetchers(100, 10_000, 100), 1);
        assert_eq!(pass_fetchers(100, 10_000, 0), 0);
        assert_eq!(pass_fetchers(100, 100, 100), 100);
    }

    #[test]
    fn ratios_read_as_the_first_over_the_second() {
        assert_eq!(
            ratio(Duration::from_micros(5), Duration::from_micros(20)),
            "0.25×"
        );
        assert_eq!(ratio(Duration::from_micros(5), Duration::ZERO), "–");
    }
}
