//! `cargo xtask bench-http`: HTTP and HTTPS download throughput and peak memory of xdpboot's
//! HTTP server against nginx, on loopback, with wrk as the client.
//!
//! Each point is one scheme (http, https) and one number of concurrent downloads of the same
//! image; for each, a fresh xdpboot (`boot-user`'s `http_serve` example, which runs
//! `xdpboot::http::serve` exactly as the daemon does) and then a fresh nginx (a private config
//! and prefix in a temporary directory: sendfile on, two workers, the same RSA certificate)
//! serve `wrk -d SECONDS`. wrk reports the body bytes it read (a Lua `done` hook prints exact
//! numbers, unfinished downloads included); the server's peak RSS is the sum of its processes'
//! VmHWM, its CPU time their utime + stime over the run. Bounded: one wrk run per server and
//! point, each killed `WRK_GRACE` after its duration.
//!
//! On a two-core machine wrk shares the CPUs with the server and does the receiving copies,
//! so the aggregate throughput is largely wrk's; server CPU seconds per GiB is the column that
//! compares the servers' own cost.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::workspace_root;

/// How long a server may take to accept connections after start (xdpboot generates its RSA
/// keys on the first start).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long past its duration a wrk run may take before it is killed.
const WRK_GRACE: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Schemes {
    Http,
    Https,
    Both,
}

#[derive(clap::Args)]
pub struct Args {
    /// Size of the image every client downloads, in MiB.
    #[arg(long, default_value_t = 256)]
    pub size_mib: u64,
    /// Seconds of load per point.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent downloads per point, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 100, 1000])]
    pub clients: Vec<u32>,
    /// Which listeners to measure.
    #[arg(long, value_enum, default_value = "both")]
    pub scheme: Schemes,
    /// wrk threads (at most the number of clients).
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Measure xdpboot only.
    #[arg(long)]
    pub no_nginx: bool,
    /// Runs per server and point; the median run (by throughput) is reported. Other work on
    /// the machine disturbs single runs.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Keep the work directory (image, certificates, nginx config and logs).
    #[arg(long)]
    pub keep: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(
        args.seconds > 0 && args.size_mib > 0 && args.repeat > 0,
        "--seconds, --size-mib and --repeat must be positive"
    );
    ensure!(
        !args.clients.is_empty() && args.clients.iter().all(|&c| c > 0),
        "--clients must be positive"
    );
    for tool in ["wrk"]
        .into_iter()
        .chain((!args.no_nginx).then_some("nginx"))
    {
        ensure!(
            which(tool),
            "{tool} is not installed; run `cargo xtask setup` (it installs the test tools)"
        );
    }
    let server_bin = build_http_serve()?;
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg")
        && let Some(one_minute) = load.split_whitespace().next()
        && one_minute.parse::<f64>().is_ok_and(|l| l > 0.5)
    {
        println!(
            "[bench-http] load average {one_minute} before starting: other work on this machine will disturb the numbers"
        );
    }
    let work = WorkDir::new(args.keep)?;
    let image_path = work.root().join("image.bin");
    write_image(&image_path, args.size_mib * MIB)?;
    let lua = work.path.join("report.lua");
    std::fs::write(&lua, WRK_REPORT)?;

    let schemes: &[Scheme] = match args.scheme {
        Schemes::Http => &[Scheme::Http],
        Schemes::Https => &[Scheme::Https],
        Schemes::Both => &[Scheme::Http, Scheme::Https],
    };
    let mut rows = Vec::new();
    for &scheme in schemes {
        for &clients in &args.clients {
            let load = Load {
                scheme,
                clients,
                threads: args.threads.min(clients).max(1),
                seconds: args.seconds,
                lua: &lua,
            };
            // Alternate the servers run by run, so a disturbance hits both alike.
            let mut xdpboot_runs = Vec::new();
            let mut nginx_runs = Vec::new();
            for _ in 0..args.repeat {
                let m = measure(&load, || start_xdpboot(&server_bin, &work))?;
                println!(
                    "[bench-http] {} c={clients} xdpboot: {}",
                    scheme.name(),
                    m.summary()
                );
                xdpboot_runs.push(m);
                if !args.no_nginx {
                    let m = measure(&load, || start_nginx(&work))?;
                    println!(
                        "[bench-http] {} c={clients} nginx:   {}",
                        scheme.name(),
                        m.summary()
                    );
                    nginx_runs.push(m);
                }
            }
            let xdpboot = median(xdpboot_runs).expect("--repeat is at least 1");
            let nginx = median(nginx_runs);
            rows.push((scheme, clients, xdpboot, nginx));
        }
    }
    print_table(args, &rows);
    if args.keep {
        println!("[bench-http] work directory kept: {}", work.path.display());
    }
    Ok(())
}

/// What wrk prints at the end: exact totals, unfinished downloads included.
const WRK_REPORT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("xdpboot-bench bytes=%d us=%d requests=%d errors=%d\n",
    summary.bytes, summary.duration, summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

struct Load<'a> {
    scheme: Scheme,
    clients: u32,
    threads: u32,
    seconds: u64,
    lua: &'a Path,
}

struct Measurement {
    bytes: u64,
    seconds: f64,
    requests: u64,
    errors: u64,
    peak_rss_kib: u64,
    cpu_seconds: f64,
}

impl Measurement {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.seconds.max(1e-9)
    }

    fn cpu_per_gib(&self) -> f64 {
        self.cpu_seconds / (self.bytes as f64 / (1024.0 * MIB as f64)).max(1e-9)
    }

    fn summary(&self) -> String {
        format!(
            "{:.0} MiB/s, {} downloads finished, {} wrk errors, peak RSS {:.1} MiB, {:.2} CPU s/GiB",
            self.mib_per_s(),
            self.requests,
            self.errors,
            self.peak_rss_kib as f64 / 1024.0,
            self.cpu_per_gib()
        )
    }
}

/// A server under test: its processes and the ports it serves.
struct Server {
    child: Child,
    http: u16,
    https: u16,
}

impl Server {
    /// The server's processes: the one started and its children (nginx's workers).
    fn pids(&self) -> Vec<u32> {
        process_and_children(self.child.id())
    }

    fn stop(mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only when a measurement failed half-way; `stop` normally reaps the child first.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn measure(
    load: &Load<'_>,
    start: impl FnOnce() -> anyhow::Result<Server>,
) -> anyhow::Result<Measurement> {
    let server = start()?;
    let port = match load.scheme {
        Scheme::Http => server.http,
        Scheme::Https => server.https,
    };
    wait_ready(port)?;
    let pids = server.pids();
    let cpu_before = cpu_ticks(&pids);
    let url = format!("{}://127.0.0.1:{port}/image.bin", load.scheme.name());
    let result = run_wrk(load, &url);
    let cpu = (cpu_ticks(&pids).saturating_sub(cpu_before)) as f64 / clock_ticks_per_second();
    let peak_rss_kib = pids
        .iter()
        .filter_map(|&pid| proc_status_field(pid, "VmHWM:"))
        .sum();
    server.stop();
    let (bytes, seconds, requests, errors) = result?;
    Ok(Measurement {
        bytes,
        seconds,
        requests,
        errors,
        peak_rss_kib,
        cpu_seconds: cpu,
    })
}

/// The run with the median throughput.
fn median(mut runs: Vec<Measurement>) -> Option<Measurement> {
    runs.sort_by(|a, b| a.mib_per_s().total_cmp(&b.mib_per_s()));
    let middle = runs.len() / 2;
    runs.into_iter().nth(middle)
}

/// Runs wrk once; returns body bytes, seconds, finished requests and errors.
fn run_wrk(load: &Load<'_>, url: &str) -> anyhow::Result<(u64, f64, u64, u64)> {
    let timeout = format!("{}s", load.seconds + WRK_GRACE.as_secs());
    // wrk needs a descriptor per connection: lift the soft limit to the hard one first.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec wrk \"$@\"",
            "wrk",
        ])
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.clients))
        .arg(format!("-d{}s", load.seconds))
        .arg("--timeout")
        .arg(&timeout)
        .arg("-s")
        .arg(load.lua)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running wrk")?;
    let deadline = Instant::now() + Duration::from_secs(load.seconds) + WRK_GRACE;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "wrk did not finish within {}s",
                load.seconds + WRK_GRACE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().find(|l| l.starts_with("xdpboot-bench ")) else {
        bail!(
            "wrk printed no report for {url}:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let field = |name: &str| -> anyhow::Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in {line:?}"))
    };
    Ok((
        field("bytes")?,
        field("us")? as f64 / 1e6,
        field("requests")?,
        field("errors")?,
    ))
}

fn start_xdpboot(bin: &Path, work: &WorkDir) -> anyhow::Result<Server> {
    let (http, https) = (free_port()?, free_port()?);
    let child = Command::new(bin)
        .arg(work.root())
        .arg(http.to_string())
        .arg(https.to_string())
        .arg(work.tls())
        // One access-log line per download is cheap, but nginx logs nothing here either.
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(
            work.path.join("xdpboot.log"),
        )?))
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Server { child, http, https })
}

fn start_nginx(work: &WorkDir) -> anyhow::Result<Server> {
    let (http, https) = (free_port()?, free_port()?);
    let prefix = work.path.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let tls = work.tls();
    ensure!(
        tls.join("server.pem").exists(),
        "no certificate in {} yet: xdpboot makes it on its first start",
        tls.display()
    );
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        nginx_config(&prefix, &work.root(), &tls, http, https),
    )?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(prefix.join("logs/error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    Ok(Server { child, http, https })
}

/// nginx as a fair peer: two workers for two CPUs, sendfile with TCP_CORK (tcp_nopush),
/// no access log, TLS 1.2 and 1.3 with the certificate xdpboot generated.
fn nginx_config(prefix: &Path, root: &Path, tls: &Path, http: u16, https: u16) -> String {
    nginx_config_on(prefix, root, Ipv4Addr::LOCALHOST, http, Some((tls, https)))
}

/// [`nginx_config`] listening on `addr`: plain HTTP on `http`, and TLS on the port of `tls`
/// (with `server.pem` and `server.key` from its directory) when given.
pub(crate) fn nginx_config_on(
    prefix: &Path,
    root: &Path,
    addr: Ipv4Addr,
    http: u16,
    tls: Option<(&Path, u16)>,
) -> String {
    let p = prefix.display();
    let mut conf = String::new();
    let _ = write!(
        conf,
        "daemon off;\nmaster_process on;\nworker_processes 2;\nworker_rlimit_nofile 8192;\n\
         pid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n\
         \x20 client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n\
         \x20 uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
         \x20 types {{ application/octet-stream bin; }}\n\
         \x20 server {{\n    listen {addr}:{http};\n",
    );
    if let Some((tls, https)) = tls {
        let _ = write!(
            conf,
            "    listen {addr}:{https} ssl;\n\
             \x20   ssl_certificate {tls}/server.pem;\n    ssl_certificate_key {tls}/server.key;\n\
             \x20   ssl_protocols TLSv1.2 TLSv1.3;\n",
            tls = tls.display(),
        );
    }
    let _ = write!(conf, "    root {root};\n  }}\n}}\n", root = root.display());
    conf
}

/// Builds the `http_serve` example in release mode (without the XDP program: HTTP only).
fn build_http_serve() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "-p",
            "boot-user",
            "--example",
            "http_serve",
        ])
        .env("AYA_BUILD_SKIP", "1")
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "building the http_serve example failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("release/examples/http_serve"))
}

/// A temporary directory with `root/` (the served files) and `tls/`; removed on drop unless
/// kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn new(keep: bool) -> anyhow::Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("xdpboot-bench-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("root"))?;
        std::fs::create_dir_all(path.join("tls"))?;
        Ok(WorkDir { path, keep })
    }

    fn root(&self) -> PathBuf {
        self.path.join("root")
    }

    fn tls(&self) -> PathBuf {
        self.path.join("tls")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes `len` bytes of incompressible data (xorshift), so nothing in the path can cheat.
pub(crate) fn write_image(path: &Path, len: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn wait_ready(port: u16) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "nothing listens on {addr} after {}s",
        READY_TIMEOUT.as_secs()
    )
}

/// `root` and its child processes (nginx's master and workers).
pub(crate) fn process_and_children(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    pids.extend(all_pids().filter(|&pid| proc_status_field(pid, "PPid:") == Some(u64::from(root))));
    pids
}

/// Every process id in /proc now (none if /proc cannot be read).
pub(crate) fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flat_map(|entries| entries.flatten())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
}

pub(crate) fn proc_status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime of every thread of the processes, in clock ticks.
pub(crate) fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux architecture the project builds for.
    100.0
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn print_table(args: &Args, rows: &[(Scheme, u32, Measurement, Option<Measurement>)]) {
    println!();
    println!(
        "{} MiB image, {} s per point (median of {}), wrk -t{} on loopback; MiB/s is the clients' aggregate",
        args.size_mib, args.seconds, args.repeat, args.threads
    );
    println!(
        "{:<6} {:>7} | {:>9} {:>9} {:>6} | {:>9} {:>9} | {:>9} {:>9}",
        "scheme",
        "clients",
        "xdpboot",
        "nginx",
        "ratio",
        "RSS xdpb",
        "RSS nginx",
        "CPU/GiB x",
        "CPU/GiB n"
    );
    println!(
        "{:<6} {:>7} | {:>9} {:>9} {:>6} | {:>9} {:>9} | {:>9} {:>9}",
        "", "", "MiB/s", "MiB/s", "x/n", "MiB", "MiB", "s", "s"
    );
    for (scheme, clients, x, n) in rows {
        let (nginx, ratio, rss, cpu) = match n {
            Some(n) => (
                format!("{:.0}", n.mib_per_s()),
                format!("{:.2}", x.mib_per_s() / n.mib_per_s().max(1e-9)),
                format!("{:.1}", n.peak_rss_kib as f64 / 1024.0),
                format!("{:.2}", n.cpu_per_gib()),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<6} {:>7} | {:>9.0} {:>9} {:>6} | {:>9.1} {:>9} | {:>9.2} {:>9}",
            scheme.name(),
            clients,
            x.mib_per_s(),
            nginx,
            ratio,
            x.peak_rss_kib as f64 / 1024.0,
            rss,
            x.cpu_per_gib(),
            cpu
        );
    }
}
