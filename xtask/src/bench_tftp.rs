//! `cargo xtask bench-tftp`: how long fetching a first-stage loader over TFTP takes from
//! xdpboot and from dnsmasq, measured in the same run with the same client.
//!
//! Both servers run in one private network namespace and serve the same file from the same
//! directory; the client is `atftp`, started inside the namespace and timed from spawn to exit
//! (process start-up, about a millisecond, is in both numbers). Loopback has no loss, so the
//! numbers measure per-block cost and round trips: at 512-byte blocks a 1 MiB file is 2049
//! lockstep round trips, blksize 1468 cuts that to 715, and windowsize 8 (RFC 7440) to 90
//! windows. dnsmasq does not negotiate windowsize, so its third case equals its second.
//! Fetches alternate between the servers so drift affects both alike; the report gives the
//! median of each, the spread, and the ratio dnsmasq ÷ xdpboot (above 1: xdpboot is faster).
//!
//! The concurrent case is a boot storm's TFTP stage: `--concurrent` (256) transfers of a
//! 256 KiB loader start at once, lockstep at blksize 1468 as PXE ROMs fetch, from the load
//! test's own client (`loadtest::tftp`, one socket per transfer, all on one thread, so the
//! client leaves the other core to the server). A round is all of them to the end; rounds
//! alternate between the servers. Per round: wall time, transfers/s, and the server's CPU per
//! MiB served, from its process's utime + stime (`/proc/<pid>/stat`, every thread, system time
//! included: on loopback that is also the delivery of what it sends) before and after.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use boot_tests::{ChildGuard, NetNs, STARTUP_TIMEOUT, TempDir};

/// dnsmasq serves TFTP on the standard port; xdpboot on another one in the same namespace.
const DNSMASQ_PORT: u16 = 69;
const XDPBOOT_PORT: u16 = 6969;
/// The longest one fetch may take before the benchmark gives up.
const FETCH_DEADLINE: Duration = Duration::from_secs(60);
const LOADER: &str = "loader.bin";
const EMPTY: &str = "empty.bin";
/// The concurrent case's file.
const STORM_LOADER: &str = "storm-loader.bin";
/// The concurrent case's block size: what PXE ROMs ask for on a 1500-byte MTU.
const STORM_BLKSIZE: u16 = 1468;
/// The most simultaneous transfers `--concurrent` may ask for (xdpboot's default limit).
const MAX_CONCURRENT: usize = 4096;
/// The longest one concurrent round may take before the benchmark gives up.
const ROUND_DEADLINE: Duration = Duration::from_secs(180);
/// dnsmasq serves 50 transfers at once by default (`--tftp-max`); it is raised to at least the
/// concurrent case's count so both servers get the whole storm.
const DNSMASQ_DEFAULT_TFTP_MAX: usize = 50;

#[derive(clap::Args)]
pub struct Args {
    /// Timed fetches per server and case; the median is reported.
    #[arg(long, default_value_t = 31)]
    repetitions: usize,
    /// Size of the loader fetched, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    size: usize,
    /// The xdpboot binary to measure. Default: build it (`cargo build --release -p boot-user`).
    #[arg(long, value_name = "PATH")]
    xdpboot: Option<PathBuf>,
    /// The dnsmasq binary to compare with.
    #[arg(long, value_name = "PATH", default_value = "dnsmasq")]
    dnsmasq: PathBuf,
    /// Simultaneous lockstep transfers in the concurrent case (a boot storm's in-flight count).
    #[arg(long, default_value_t = 256)]
    concurrent: usize,
    /// Size of the loader each concurrent transfer fetches, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    concurrent_size: usize,
    /// Concurrent rounds per server; the median is reported (0: no concurrent case).
    #[arg(long, default_value_t = 5)]
    concurrent_rounds: usize,
    /// Run only the concurrent case, not the atftp fetches.
    #[arg(long)]
    concurrent_only: bool,
}

/// One client configuration.
struct Case {
    name: &'static str,
    /// The file fetched.
    file: &'static str,
    /// atftp `--option` values.
    options: &'static [&'static str],
}

const CASES: &[Case] = &[
    // atftp's start-up and one round trip: the floor under every other row.
    Case {
        name: "empty file (client floor)",
        file: EMPTY,
        options: &[],
    },
    Case {
        name: "512-byte blocks (RFC 1350)",
        file: LOADER,
        options: &[],
    },
    Case {
        name: "blksize 1468",
        file: LOADER,
        options: &["blksize 1468"],
    },
    Case {
        name: "blksize 1468 + windowsize 8",
        file: LOADER,
        options: &["blksize 1468", "windowsize 8"],
    },
];

/// Which server a fetch goes to.
#[derive(Clone, Copy)]
struct Target {
    name: &'static str,
    port: u16,
}

const DNSMASQ: Target = Target {
    name: "dnsmasq",
    port: DNSMASQ_PORT,
};
const XDPBOOT: Target = Target {
    name: "xdpboot",
    port: XDPBOOT_PORT,
};

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(args.repetitions > 0, "--repetitions must be at least 1");
    ensure!(
        (1..=MAX_CONCURRENT).contains(&args.concurrent),
        "--concurrent must be 1..={MAX_CONCURRENT}"
    );
    ensure!(
        !args.concurrent_only || args.concurrent_rounds > 0,
        "--concurrent-only needs --concurrent-rounds of at least 1"
    );
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the benchmark runs both servers in a network namespace: run it as root");
    }
    for tool in ["atftp", "ip"] {
        ensure!(
            on_path(tool),
            "`{tool}` is not installed (cargo xtask setup installs it)"
        );
    }
    let xdpboot = match &args.xdpboot {
        Some(path) => path.clone(),
        None => crate::build_xdpboot_release("bench-tftp")?,
    };
    let dnsmasq_version = version_line(&args.dnsmasq)?;

    let dir = TempDir::new("bench-tftp").context("creating the benchmark directory")?;
    let root = dir.join("root");
    std::fs::create_dir(&root).context("creating the TFTP root")?;
    let loader = pseudo_random(args.size);
    std::fs::write(root.join(LOADER), &loader).context("writing the loader")?;
    std::fs::write(root.join(EMPTY), b"").context("writing the empty file")?;
    std::fs::write(root.join(STORM_LOADER), pseudo_random(args.concurrent_size))
        .context("writing the concurrent case's loader")?;
    let config = dir.join("xdpboot.toml");
    std::fs::write(
        &config,
        format!(
            "[tftp]\nroot = \"{}\"\nport = {XDPBOOT_PORT}\n",
            root.display()
        ),
    )
    .context("writing the xdpboot config")?;

    let ns = NetNs::new("bench").context("creating the benchmark namespace")?;
    let tftp_max = args.concurrent.max(DNSMASQ_DEFAULT_TFTP_MAX);
    let dnsmasq = start_dnsmasq(&ns, &args.dnsmasq, &root, &dir, tftp_max)?;
    let xdpboot = start_xdpboot(&ns, &xdpboot, &config, &dir)?;

    if args.concurrent_only {
        let storm = concurrent(&ns, args, dnsmasq.pid(), xdpboot.pid())?;
        print_concurrent(args, &dnsmasq_version, &storm);
        print_command(args);
        return Ok(());
    }

    println!(
        "[bench-tftp] {} bytes, {} fetches per server and case, atftp over loopback in a \
         private namespace",
        args.size, args.repetitions
    );
    let out = dir.join("fetched.bin");
    let mut rows = Vec::new();
    for case in CASES {
        let expected: &[u8] = if case.file == LOADER { &loader } else { b"" };
        let (dnsmasq_times, xdpboot_times) = ns.run(|| {
            // One untimed fetch each: xdpboot reads the file into its cache, and the page
            // cache holds it for dnsmasq.
            for target in [DNSMASQ, XDPBOOT] {
                fetch(target, case, &out, expected)?;
            }
            let mut times = (Vec::new(), Vec::new());
            for _ in 0..args.repetitions {
                times.0.push(fetch(DNSMASQ, case, &out, expected)?);
                times.1.push(fetch(XDPBOOT, case, &out, expected)?);
            }
            Ok(times)
        })?;
        rows.push((
            case.name,
            Stats::of(dnsmasq_times),
            Stats::of(xdpboot_times),
        ));
    }

    println!();
    println!(
        "Fetch of a {} loader with atftp over loopback (median of {}, min–max):",
        human_size(args.size),
        args.repetitions
    );
    println!();
    println!("| client options | {dnsmasq_version} | xdpboot | dnsmasq ÷ xdpboot |");
    println!("|---|---|---|---|");
    for (name, dnsmasq, xdpboot) in &rows {
        println!(
            "| {name} | {} | {} | {:.2}× |",
            dnsmasq,
            xdpboot,
            dnsmasq.median.as_secs_f64() / xdpboot.median.as_secs_f64()
        );
    }
    let storm = if args.concurrent_rounds > 0 {
        Some(concurrent(&ns, args, dnsmasq.pid(), xdpboot.pid())?)
    } else {
        None
    };

    if let Some(storm) = &storm {
        print_concurrent(args, &dnsmasq_version, storm);
    }
    print_command(args);
    Ok(())
}

/// The command that repeats this run.
fn print_command(args: &Args) {
    let mut command = String::from("cargo xtask bench-tftp");
    if args.concurrent_only {
        command.push_str(" --concurrent-only");
    } else {
        command.push_str(&format!(
            " --repetitions {} --size {}",
            args.repetitions, args.size
        ));
    }
    if args.concurrent_rounds > 0 {
        command.push_str(&format!(
            " --concurrent {} --concurrent-size {} --concurrent-rounds {}",
            args.concurrent, args.concurrent_size, args.concurrent_rounds
        ));
    } else {
        command.push_str(" --concurrent-rounds 0");
    }
    println!();
    println!("Command: {command}");
}

/// One concurrent round against one server.
struct Round {
    wall: Duration,
    /// The server's CPU time (user + system, all threads) over the round.
    cpu: Duration,
    /// The client thread's, to tell whether the client or the server was the limit.
    client_cpu: Duration,
}

/// Both servers' rounds.
struct Storm {
    dnsmasq: Vec<Round>,
    xdpboot: Vec<Round>,
}

/// Runs `--concurrent-rounds` rounds per server, alternating, on one client thread in the
/// namespace.
fn concurrent(ns: &NetNs, args: &Args, dnsmasq: u32, xdpboot: u32) -> anyhow::Result<Storm> {
    println!(
        "[bench-tftp] concurrent: {} lockstep transfers of {} bytes at blksize {STORM_BLKSIZE}, \
         {} rounds per server",
        args.concurrent, args.concurrent_size, args.concurrent_rounds
    );
    if cfg!(debug_assertions) {
        // The client then needs about twice the CPU per block, and with one core for each side
        // it sets the pace: the wall times say more about it than about the servers.
        println!(
            "[bench-tftp] note: the client is a debug build; for wall times that the servers \
             set, run `cargo run --release -p xtask -- bench-tftp ...`"
        );
    }
    ns.run(|| {
        // The load test's TFTP client: one thread drives every transfer.
        let client = crate::loadtest::tftp::Client::start(None)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the client's runtime")?;
        // One untimed round each: xdpboot reads the file into its cache, the page cache holds
        // it for dnsmasq, and both have met this many clients once.
        for (target, pid) in [(DNSMASQ, dnsmasq), (XDPBOOT, xdpboot)] {
            round(&runtime, &client, target, pid, args)?;
        }
        let mut storm = Storm {
            dnsmasq: Vec::new(),
            xdpboot: Vec::new(),
        };
        for _ in 0..args.concurrent_rounds {
            storm
                .dnsmasq
                .push(round(&runtime, &client, DNSMASQ, dnsmasq, args)?);
            storm
                .xdpboot
                .push(round(&runtime, &client, XDPBOOT, xdpboot, args)?);
        }
        Ok(storm)
    })
}

/// `--concurrent` transfers started together against `target` (process `pid`), to the end.
fn round(
    runtime: &tokio::runtime::Runtime,
    client: &crate::loadtest::tftp::Client,
    target: Target,
    pid: u32,
    args: &Args,
) -> anyhow::Result<Round> {
    let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, target.port);
    let expected = args.concurrent_size as u64;
    runtime.block_on(async {
        let cpu_before = crate::bench_http::cpu_ticks(&[pid]);
        let client_before = client.cpu_time();
        let started = Instant::now();
        let all = async {
            // All start here; they end in any order.
            let transfers: Vec<_> = (0..args.concurrent)
                .map(|_| client.fetch(server, STORM_LOADER, STORM_BLKSIZE))
                .collect();
            for transfer in transfers {
                let bytes = transfer
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", target.name))?;
                ensure!(
                    bytes == expected,
                    "{} served {bytes} bytes, expected {expected}",
                    target.name
                );
            }
            Ok(())
        };
        tokio::time::timeout(ROUND_DEADLINE, all)
            .await
            .with_context(|| {
                format!("{}: round not done within {ROUND_DEADLINE:?}", target.name)
            })??;
        let wall = started.elapsed();
        let client_cpu = client.cpu_time().saturating_sub(client_before);
        let ticks = crate::bench_http::cpu_ticks(&[pid]).saturating_sub(cpu_before);
        Ok(Round {
            wall,
            cpu: Duration::from_secs_f64(
                ticks as f64 / crate::bench_http::clock_ticks_per_second(),
            ),
            client_cpu,
        })
    })
}

fn print_concurrent(args: &Args, dnsmasq_version: &str, storm: &Storm) {
    let mib = (args.concurrent * args.concurrent_size) as f64 / (1024.0 * 1024.0);
    let d_wall = Stats::of(storm.dnsmasq.iter().map(|r| r.wall).collect());
    let x_wall = Stats::of(storm.xdpboot.iter().map(|r| r.wall).collect());
    let per_second = |wall: &Stats| args.concurrent as f64 / wall.median.as_secs_f64();
    // CPU time comes in clock ticks (10 ms): a round's is a few dozen of them, too coarse for
    // a median, so the figure is over all rounds together; the range is per round.
    let cpu_per_mib = |rounds: &[Round]| {
        let total: Duration = rounds.iter().map(|r| r.cpu).sum();
        total.as_secs_f64() * 1000.0 / (mib * rounds.len() as f64)
    };
    let cpu_cell = |rounds: &[Round]| {
        let per_round = Stats::of(rounds.iter().map(|r| r.cpu).collect());
        let per_mib = |cpu: Duration| cpu.as_secs_f64() * 1000.0 / mib;
        format!(
            "{:.2} ms ({:.1}–{:.1})",
            cpu_per_mib(rounds),
            per_mib(per_round.min),
            per_mib(per_round.max)
        )
    };
    println!();
    println!(
        "{} simultaneous lockstep transfers of a {} loader at blksize {STORM_BLKSIZE} over \
         loopback ({} rounds; wall time: median, min–max; CPU: all rounds, per-round min–max):",
        args.concurrent,
        human_size(args.concurrent_size),
        args.concurrent_rounds
    );
    println!();
    // Every ratio reads the same way: above 1, xdpboot is ahead.
    println!("| | {dnsmasq_version} | xdpboot | xdpboot ahead by |");
    println!("|---|---|---|---|");
    println!(
        "| wall time | {d_wall} | {x_wall} | {:.2}× |",
        d_wall.median.as_secs_f64() / x_wall.median.as_secs_f64()
    );
    println!(
        "| transfers/s | {:.0} | {:.0} | {:.2}× |",
        per_second(&d_wall),
        per_second(&x_wall),
        per_second(&x_wall) / per_second(&d_wall)
    );
    println!(
        "| server CPU per MiB | {} | {} | {:.2}× |",
        cpu_cell(&storm.dnsmasq),
        cpu_cell(&storm.xdpboot),
        cpu_per_mib(&storm.dnsmasq) / cpu_per_mib(&storm.xdpboot)
    );
    let busy = |rounds: &[Round], cpu: fn(&Round) -> Duration| {
        let used: Duration = rounds.iter().map(cpu).sum();
        let wall: Duration = rounds.iter().map(|r| r.wall).sum();
        100.0 * used.as_secs_f64() / wall.as_secs_f64()
    };
    println!(
        "| busy, server / client (% of one core) | {:.0} / {:.0} | {:.0} / {:.0} | |",
        busy(&storm.dnsmasq, |r| r.cpu),
        busy(&storm.dnsmasq, |r| r.client_cpu),
        busy(&storm.xdpboot, |r| r.cpu),
        busy(&storm.xdpboot, |r| r.client_cpu),
    );
}

/// Median and range of one series.
struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut times: Vec<Duration>) -> Stats {
        times.sort();
        let n = times.len();
        let median = if n % 2 == 1 {
            times[n / 2]
        } else {
            (times[n / 2 - 1] + times[n / 2]) / 2
        };
        Stats {
            median,
            min: times[0],
            max: times[n - 1],
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "{:.1} ms ({:.1}–{:.1})",
            ms(self.median),
            ms(self.min),
            ms(self.max)
        )
    }
}

/// One timed `atftp --get` from `target`, run on the calling thread's network namespace;
/// checks the fetched bytes.
fn fetch(target: Target, case: &Case, out: &Path, expected: &[u8]) -> anyhow::Result<Duration> {
    let _ = std::fs::remove_file(out);
    let mut command = Command::new("atftp");
    command
        .args(["--get", "--remote-file", case.file, "--local-file"])
        .arg(out);
    for option in case.options {
        command.args(["--option", option]);
    }
    command
        .args(["127.0.0.1", &target.port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = command.spawn().context("starting atftp")?;
    // A watchdog kills the client at the deadline; the wait itself blocks, so the time taken
    // is measured without polling delays.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(FETCH_DEADLINE) == Err(mpsc::RecvTimeoutError::Timeout) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let status = child.wait().context("waiting for atftp")?;
    let elapsed = started.elapsed();
    let _ = done.send(());
    let _ = watchdog.join();
    ensure!(
        status.success(),
        "atftp {:?} from {} failed ({status})",
        case.options,
        target.name
    );
    let fetched = std::fs::read(out).context("reading the fetched file")?;
    ensure!(
        fetched == expected,
        "{} served different bytes for {:?}",
        target.name,
        case.options
    );
    Ok(elapsed)
}

fn start_dnsmasq(
    ns: &NetNs,
    binary: &Path,
    root: &Path,
    dir: &TempDir,
    tftp_max: usize,
) -> anyhow::Result<ChildGuard> {
    let args = [
        "--keep-in-foreground".to_owned(),
        "--conf-file=/dev/null".to_owned(),
        // No DNS; TFTP only, on loopback.
        "--port=0".to_owned(),
        "--enable-tftp".to_owned(),
        format!("--tftp-root={}", root.display()),
        format!("--tftp-max={tftp_max}"),
        "--interface=lo".to_owned(),
        "--bind-interfaces".to_owned(),
        format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
        "--log-facility=-".to_owned(),
    ];
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let before = ns.udp_sockets_on(DNSMASQ_PORT)?;
    let mut child = ns.spawn("dnsmasq", binary, &args, &[], dir.join("dnsmasq.log"))?;
    child.wait_until("listening on TFTP port 69", STARTUP_TIMEOUT, || {
        Ok(ns.udp_sockets_on(DNSMASQ_PORT)? > before)
    })?;
    Ok(child)
}

fn start_xdpboot(
    ns: &NetNs,
    binary: &Path,
    config: &Path,
    dir: &TempDir,
) -> anyhow::Result<ChildGuard> {
    let args: [&OsStr; 7] = [
        "run".as_ref(),
        "--backend".as_ref(),
        "udp".as_ref(),
        "--interface".as_ref(),
        "lo".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    let before = ns.udp_sockets_on(XDPBOOT_PORT)?;
    let mut child = ns.spawn(
        "xdpboot",
        binary,
        &args,
        &[("RUST_LOG", "info"), ("NO_COLOR", "1")],
        dir.join("xdpboot.log"),
    )?;
    child.wait_until(
        &format!("listening on TFTP port {XDPBOOT_PORT}"),
        STARTUP_TIMEOUT,
        || Ok(ns.udp_sockets_on(XDPBOOT_PORT)? > before),
    )?;
    Ok(child)
}

/// The first line of `<binary> --version`, e.g. "Dnsmasq version 2.90".
fn version_line(binary: &Path) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running {} --version (is dnsmasq installed?)",
                binary.display()
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or("dnsmasq");
    // "Dnsmasq version 2.90  Copyright ..." → "dnsmasq 2.90"
    Ok(match line.split_whitespace().nth(2) {
        Some(version) => format!("dnsmasq {version}"),
        None => "dnsmasq".to_owned(),
    })
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Deterministic bytes without long runs (xorshift), so nothing compresses or repeats.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn human_size(bytes: usize) -> String {
    if bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes}-byte")
    }
}
