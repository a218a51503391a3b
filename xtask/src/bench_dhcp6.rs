//! `cargo xtask bench-dhcp6`: DHCPv6 boot Advertises per second and CPU per Advertise, through a
//! veth pair, for xdpboot's XDP backend (the program tees each Solicit) and its UDP backend,
//! against what operators run today to boot over IPv6: dnsmasq as a full DHCPv6 server handing
//! out an address and `option6:bootfile-url` (no peer offers a DHCPv6 proxy). One generator,
//! one run, the same pinning.
//!
//! Each server gets a lab of its own: two private namespaces joined by a veth pair, `gen0`
//! (link-local only, the generator) and `eth0` fd00:18::1/64 (the server). The generator sends
//! EDK2-shaped PXEv6 Solicits (`boot_tests::ipv6::edk2_solicit`: DUID-UUID, IA_NA, ORO, UNDI,
//! arch 7, vendor class "PXEClient"), each from a client of its own (a DUID of its own), from its
//! link-local address to ff02::1:2, paced in 1 ms slices; a receiver thread matches each
//! Advertise to its Solicit by transaction id. Servers are pinned to `--server-cpu`, the
//! generator to `--generator-cpu`, RPS on both ends (as `bench-dhcp`).
//!
//! A ladder of rates: at each rate every server still on it gets one trial, interleaved; a
//! server leaves the ladder after two rates in a row that were not loss-free (more than
//! `--max-loss-pct` unanswered). CPU per Advertise: the server process's CPU time (all
//! threads' schedstat) over the Advertises of a trial. The XDP program itself runs in the
//! sender's softirq on veth and is not in it (`cargo xtask bench-xdp` measures it: ns per
//! frame).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use boot_common::wire::MacAddr;
use boot_common::wire::dhcpv6;
use boot_tests::ipv6::{add_address6, edk2_solicit, link_local, no_dad, wait_ipv6_ready};
use boot_tests::{ChildGuard, NetNs, TempDir, veth};

use crate::bench_dhcp::{CpuSnapshot, pid_in_netns, set_rps};

/// How long a server may take from start to its first answer.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the receiver waits for late Advertises after the last Solicit.
const DRAIN: Duration = Duration::from_millis(500);
/// The server's address, and the URL it hands out.
const SERVER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1);
const BOOT_URL: &str = "http://[fd00:18::1]:80/ipxe-amd64.efi";

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Server6 {
    /// xdpboot, XDP backend: the program tees each boot Solicit to userspace.
    XdpTee,
    /// xdpboot, UDP backend: a socket on [ff02::1:2%eth0]:547.
    Udp,
    /// dnsmasq as a full DHCPv6 server: an address and option6:bootfile-url in every Advertise.
    Dnsmasq,
}

impl Server6 {
    fn name(self) -> &'static str {
        match self {
            Server6::XdpTee => "xdpboot xdp (tee)",
            Server6::Udp => "xdpboot udp",
            Server6::Dnsmasq => "dnsmasq DHCPv6 + bootfile-url",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Servers to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "xdp-tee,udp,dnsmasq"
    )]
    servers: Vec<Server6>,
    /// The ladder of offered rates (Solicits/s), climbed in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,5000,10000,20000,30000,40000,60000"
    )]
    rates: Vec<u64>,
    /// Seconds of sending per trial.
    #[arg(long, default_value_t = 2.0)]
    trial_secs: f64,
    /// Most Solicits (percent) a loss-free rate may leave unanswered.
    #[arg(long, default_value_t = 0.5)]
    max_loss_pct: f64,
    /// CPU the servers are pinned to.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    /// CPU the generator is pinned to.
    #[arg(long, default_value_t = 0)]
    generator_cpu: usize,
    /// The xdpboot binary. Default: build it (`cargo build --release -p boot-user`).
    #[arg(long, value_name = "PATH")]
    xdpboot: Option<PathBuf>,
    /// The dnsmasq binary.
    #[arg(long, value_name = "PATH", default_value = "dnsmasq")]
    dnsmasq: PathBuf,
}

/// One trial's result.
#[derive(Debug, Clone, Copy)]
struct Trial {
    sent: u64,
    answered: u64,
    seconds: f64,
    p50: Duration,
    p99: Duration,
    cpu: Duration,
}

impl Trial {
    fn loss_pct(&self) -> f64 {
        100.0 * (self.sent.saturating_sub(self.answered)) as f64 / self.sent.max(1) as f64
    }

    fn cpu_per_answer(&self) -> Duration {
        self.cpu / u32::try_from(self.answered.max(1)).unwrap_or(u32::MAX)
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(!args.servers.is_empty(), "--servers names no server");
    ensure!(!args.rates.is_empty(), "--rates names no rate");
    ensure!(
        args.server_cpu != args.generator_cpu,
        "the server and the generator need separate CPUs"
    );
    let xdpboot = match &args.xdpboot {
        Some(path) => path.clone(),
        None => crate::build_xdpboot_release("bench-dhcp6")?,
    };
    let mut labs = Vec::new();
    for (index, &kind) in args.servers.iter().enumerate() {
        println!("[bench-dhcp6] starting {}", kind.name());
        labs.push(Lab::start(kind, index, args, &xdpboot)?);
    }
    let mut results: HashMap<Server6, Vec<(u64, Trial)>> = HashMap::new();
    let mut lossy_in_a_row: HashMap<Server6, u32> = HashMap::new();
    for &rate in &args.rates {
        for lab in &labs {
            if lossy_in_a_row.get(&lab.kind).copied().unwrap_or(0) >= 2 {
                continue;
            }
            let trial = lab.trial(args, rate)?;
            println!(
                "[bench-dhcp6] {:<30} {rate:>6}/s: sent {:>7} ({:>6.0}/s) answered {:>7} loss {:>6.2}% p50 {:>6} µs p99 {:>6} µs CPU {:>6.1} µs/Advertise",
                lab.kind.name(),
                trial.sent,
                trial.sent as f64 / trial.seconds.max(1e-9),
                trial.answered,
                trial.loss_pct(),
                trial.p50.as_micros(),
                trial.p99.as_micros(),
                trial.cpu_per_answer().as_secs_f64() * 1e6,
            );
            let lossy = trial.loss_pct() > args.max_loss_pct;
            *lossy_in_a_row.entry(lab.kind).or_default() = if lossy {
                lossy_in_a_row.get(&lab.kind).copied().unwrap_or(0) + 1
            } else {
                0
            };
            results.entry(lab.kind).or_default().push((rate, trial));
        }
    }
    summary(args, &results);
    Ok(())
}

fn summary(args: &Args, results: &HashMap<Server6, Vec<(u64, Trial)>>) {
    let ceiling = |kind: Server6| -> Option<(u64, Trial)> {
        results
            .get(&kind)?
            .iter()
            .filter(|(_, t)| t.loss_pct() <= args.max_loss_pct)
            .max_by_key(|(rate, _)| *rate)
            .copied()
    };
    // The highest rate every server answered loss-free: CPU per Advertise compared there.
    let common = args
        .rates
        .iter()
        .copied()
        .filter(|rate| {
            args.servers.iter().all(|kind| {
                results.get(kind).is_some_and(|trials| {
                    trials
                        .iter()
                        .any(|(r, t)| r == rate && t.loss_pct() <= args.max_loss_pct)
                })
            })
        })
        .max();
    println!("\n[bench-dhcp6] summary ({})", crate::bench_dhcp::machine());
    println!(
        "[bench-dhcp6] {:<30} {:>16} {:>10} {:>22}",
        "server",
        "loss-free up to",
        "p99 there",
        match common {
            Some(rate) => format!("CPU/Advertise @{rate}/s"),
            None => "CPU/Advertise".to_owned(),
        }
    );
    let cpu_at = |kind: Server6| -> Option<Duration> {
        let rate = common?;
        results
            .get(&kind)?
            .iter()
            .find(|(r, _)| *r == rate)
            .map(|(_, t)| t.cpu_per_answer())
    };
    for &kind in &args.servers {
        let (rate, p99) = match ceiling(kind) {
            Some((rate, trial)) => (format!("{rate}/s"), format!("{} µs", trial.p99.as_micros())),
            None => ("none".to_owned(), "-".to_owned()),
        };
        let cpu = cpu_at(kind).map_or("-".to_owned(), |c| {
            format!("{:.1} µs", c.as_secs_f64() * 1e6)
        });
        println!(
            "[bench-dhcp6] {:<30} {rate:>16} {p99:>10} {cpu:>22}",
            kind.name()
        );
    }
    if let Some(dnsmasq) = cpu_at(Server6::Dnsmasq) {
        for kind in [Server6::XdpTee, Server6::Udp] {
            if let Some(ours) = cpu_at(kind) {
                println!(
                    "[bench-dhcp6] dnsmasq / {}: {:.2}x the CPU per Advertise",
                    kind.name(),
                    dnsmasq.as_secs_f64() / ours.as_secs_f64().max(1e-12)
                );
            }
        }
        if let Some((theirs, _)) = ceiling(Server6::Dnsmasq) {
            for kind in [Server6::XdpTee, Server6::Udp] {
                if let Some((ours, _)) = ceiling(kind) {
                    println!(
                        "[bench-dhcp6] {} / dnsmasq: {:.2}x the loss-free rate (ladder steps)",
                        kind.name(),
                        ours as f64 / theirs as f64
                    );
                }
            }
        }
    }
}

/// A server in its namespace pair, ready.
struct Lab {
    kind: Server6,
    _server: ChildGuard,
    pid: u32,
    gen_ns: NetNs,
    _srv_ns: NetNs,
    _dir: TempDir,
}

impl Lab {
    fn start(kind: Server6, index: usize, args: &Args, xdpboot: &Path) -> anyhow::Result<Lab> {
        let dir = TempDir::new("bench-dhcp6").context("creating the lab directory")?;
        let tftp = dir.join("tftp");
        std::fs::create_dir(&tftp)?;
        for loader in ["undionly.kpxe", "ipxe-amd64.efi"] {
            std::fs::write(tftp.join(loader), b"")?;
        }
        let config = dir.join("xdpboot.toml");
        std::fs::write(
            &config,
            format!(
                "# cargo xtask bench-dhcp6: DHCPv6 on, shedding off (every simulated client is \
                 answered), HTTP(S) off.\n\
                 [ipv6]\nenabled = true\naddresses = {{ eth0 = \"{SERVER}\" }}\n\n\
                 [xdp]\nshed_rate = 0\n\n[tftp]\nroot = \"{}\"\n\n\
                 [http]\nroot = \"{}\"\nport = 0\nhttps_port = 0\n\n\
                 [boot]\nsecret_file = \"{}\"\n",
                tftp.display(),
                dir.path().display(),
                dir.join("url-secret").display(),
            ),
        )?;
        let gen_ns = NetNs::new("gen6")?;
        let srv_ns = NetNs::new("srv6")?;
        for ns in [&gen_ns, &srv_ns] {
            no_dad(ns, "all")?;
        }
        veth(&gen_ns, "gen0", &srv_ns, "eth0")?;
        add_address6(&srv_ns, "eth0", &format!("{SERVER}/64"))?;
        wait_ipv6_ready(&gen_ns, "gen0")?;
        wait_ipv6_ready(&srv_ns, "eth0")?;
        set_rps(&srv_ns, "eth0", args.server_cpu)?;
        set_rps(&gen_ns, "gen0", args.generator_cpu)?;
        let cpu = args.server_cpu.to_string();
        let (program, mut argv, envs, comm): (&Path, Vec<String>, Vec<(&str, &str)>, &str) =
            match kind {
                Server6::Dnsmasq => (
                    &args.dnsmasq,
                    vec![
                        "--keep-in-foreground".into(),
                        "--conf-file=/dev/null".into(),
                        "--port=0".into(),
                        "--interface=eth0".into(),
                        "--bind-interfaces".into(),
                        "--dhcp-range=fd00:18::1:0,fd00:18::ffff:ffff,64,1h".into(),
                        format!("--dhcp-option=option6:bootfile-url,{BOOT_URL}"),
                        // No log line per answer (xdpboot's per-answer line is off too).
                        "--quiet-dhcp6".into(),
                        format!("--dhcp-leasefile={}", dir.join("dnsmasq.leases").display()),
                        format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
                        "--log-facility=-".into(),
                    ],
                    vec![],
                    "dnsmasq",
                ),
                Server6::XdpTee | Server6::Udp => {
                    let backend = if kind == Server6::Udp { "udp" } else { "xdp" };
                    (
                        xdpboot,
                        vec![
                            "run".into(),
                            "--interface".into(),
                            "eth0".into(),
                            "--backend".into(),
                            backend.into(),
                            "--steer".into(),
                            "tee".into(),
                            "--config".into(),
                            config.display().to_string(),
                        ],
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
        let client = link_local(&gen_ns, "gen0")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            server.check_running()?;
            let probe = Generator::open(&gen_ns, client, args.generator_cpu)?;
            let trial = probe.run(1, 10, 0xf0_0000 + index as u32)?;
            if trial.answered > 0 {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer a Solicit within {READY_TIMEOUT:?}; its log:\n{}",
                    kind.name(),
                    server.log()
                );
            }
        }
        let pid = pid_in_netns(&srv_ns, comm)?;
        Ok(Lab {
            kind,
            _server: server,
            pid,
            gen_ns,
            _srv_ns: srv_ns,
            _dir: dir,
        })
    }

    fn trial(&self, args: &Args, rate: u64) -> anyhow::Result<Trial> {
        let client = link_local(&self.gen_ns, "gen0")?;
        let generator = Generator::open(&self.gen_ns, client, args.generator_cpu)?;
        let count = ((rate as f64) * args.trial_secs).ceil() as u64;
        let before = CpuSnapshot::take(self.pid)?;
        let mut trial = generator.run(rate, count, 0)?;
        let after = CpuSnapshot::take(self.pid)?;
        trial.cpu = after.server.saturating_sub(before.server);
        Ok(trial)
    }
}

/// The Solicit generator: a socket on the generator's link-local address, port 546.
struct Generator {
    socket: Arc<UdpSocket>,
    ifindex: u32,
    cpu: usize,
}

impl Generator {
    fn open(ns: &NetNs, address: Ipv6Addr, cpu: usize) -> anyhow::Result<Generator> {
        let (socket, ifindex) = ns.run(move || {
            use socket2::{Domain, Protocol, Socket, Type};
            let ifindex = nix::net::if_::if_nametoindex("gen0")?;
            let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_only_v6(true)?;
            socket.set_reuse_address(true)?;
            socket.set_multicast_if_v6(ifindex)?;
            let _ = socket.set_recv_buffer_size(8 << 20);
            let _ = socket.set_send_buffer_size(8 << 20);
            socket.bind(&SocketAddrV6::new(address, dhcpv6::CLIENT_PORT, 0, ifindex).into())?;
            Ok((UdpSocket::from(socket), ifindex))
        })?;
        Ok(Generator {
            socket: Arc::new(socket),
            ifindex,
            cpu,
        })
    }

    /// Sends `count` Solicits at `rate` per second (each with a client and transaction id of its
    /// own, from `first_xid` on) and counts the Advertises, with their latency.
    fn run(&self, rate: u64, count: u64, first_xid: u32) -> anyhow::Result<Trial> {
        let to = SocketAddrV6::new(
            dhcpv6::ALL_RELAY_AGENTS_AND_SERVERS,
            dhcpv6::SERVER_PORT,
            0,
            self.ifindex,
        );
        let done = Arc::new(AtomicBool::new(false));
        let sent_at = Arc::new(std::sync::Mutex::new(HashMap::<u32, Instant>::new()));
        let receiver = {
            let socket = self.socket.clone();
            let done = done.clone();
            let sent_at = sent_at.clone();
            std::thread::spawn(move || -> Vec<Duration> {
                let mut latencies = Vec::new();
                let mut seen = std::collections::HashSet::new();
                let mut buf = [0u8; 2048];
                let _ = socket.set_read_timeout(Some(Duration::from_millis(20)));
                let mut drain_until = None;
                loop {
                    if done.load(Ordering::Relaxed) && drain_until.is_none() {
                        drain_until = Some(Instant::now() + DRAIN);
                    }
                    if drain_until.is_some_and(|t| Instant::now() >= t) {
                        return latencies;
                    }
                    let Ok(len) = socket.recv(&mut buf) else {
                        continue;
                    };
                    let Ok(packet) = dhcpv6::Packet::new_checked(&buf[..len]) else {
                        continue;
                    };
                    if packet.msg_type() != dhcpv6::message_type::ADVERTISE {
                        continue;
                    }
                    let xid = packet.transaction_id();
                    if !seen.insert(xid) {
                        continue;
                    }
                    let started = sent_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&xid)
                        .copied();
                    if let Some(started) = started {
                        latencies.push(started.elapsed());
                    }
                }
            })
        };
        pin_to(self.cpu);
        let started = Instant::now();
        let slice = Duration::from_millis(1);
        let per_slice = (rate as f64 / 1000.0).max(1.0);
        let mut sent = 0u64;
        let mut owed = 0.0f64;
        while sent < count {
            owed += per_slice;
            while owed >= 1.0 && sent < count {
                let xid = (first_xid + sent as u32) & 0x00ff_ffff;
                let mac = MacAddr([
                    0x02,
                    0x18,
                    (sent >> 24) as u8,
                    (sent >> 16) as u8,
                    (sent >> 8) as u8,
                    sent as u8,
                ]);
                let solicit = edk2_solicit(mac, false, xid);
                sent_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(xid, Instant::now());
                // A full send buffer is loss the generator caused: count it as sent.
                let _ = self.socket.send_to(&solicit, to);
                sent += 1;
                owed -= 1.0;
            }
            let next = started + slice.mul_f64((sent as f64 / per_slice).floor());
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        let mut latencies = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("the receiver thread panicked"))?;
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Ok(Trial {
            sent,
            answered: latencies.len() as u64,
            seconds,
            p50: at(0.5),
            p99: at(0.99),
            cpu: Duration::ZERO,
        })
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}
