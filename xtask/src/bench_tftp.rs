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

use std::ffi::OsStr;
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
    let _dnsmasq = start_dnsmasq(&ns, &args.dnsmasq, &root, &dir)?;
    let _xdpboot = start_xdpboot(&ns, &xdpboot, &config, &dir)?;

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
    println!();
    println!(
        "Command: cargo xtask bench-tftp --repetitions {} --size {}",
        args.repetitions, args.size
    );
    Ok(())
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
) -> anyhow::Result<ChildGuard> {
    let args = [
        "--keep-in-foreground".to_owned(),
        "--conf-file=/dev/null".to_owned(),
        // No DNS; TFTP only, on loopback.
        "--port=0".to_owned(),
        "--enable-tftp".to_owned(),
        format!("--tftp-root={}", root.display()),
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
    } else {
        format!("{bytes}-byte")
    }
}
