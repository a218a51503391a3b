//! `cargo xtask loadgen`: a DHCP load generator for proxy-DHCP servers. It sends PXE
//! DISCOVERs from many simulated clients at a set rate, matches the OFFERs by xid, and reports
//! offers/s, loss and the DISCOVER→OFFER latency distribution.
//!
//! Two paths, as a proxy server meets them:
//! - **broadcast** (what PXE ROMs send): whole Ethernet frames on an `AF_PACKET` socket, from
//!   the client's own MAC, 0.0.0.0:68 → 255.255.255.255:67, giaddr 0, broadcast flag set. The
//!   offers come back broadcast to 255.255.255.255:68 and are read from a UDP socket on port 68
//!   tied to the interface.
//! - **relayed** (what a relay agent forwards, and all `perfdhcp` can send): from
//!   `<giaddr>:67` to `<target>:67` on a UDP socket, giaddr set, hops 1; the offers come back
//!   to `<giaddr>:67` on the same socket.
//!
//! Sends are batched (`sendmmsg`, up to `--batch` per call); receives are batched
//! (`recvmmsg`). Send times are taken just before each `sendmmsg`, receive times by the kernel
//! as the offer arrives (`SO_TIMESTAMPNS`), so the latency is the client's wire view and the
//! generator's own scheduling does not inflate it. The xid of request `n` is `base + n`, with a
//! per-run random `base`; a reply counts only if its xid, chaddr and message type (OFFER) fit.
//!
//! Every run is bounded by `--count` and `--duration`, and waits at most `--wait` after its last
//! send for late offers; anything later is loss.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use boot_common::wire::MacAddr;
use boot_common::wire::dhcpv4::{self, message_type};
use boot_common::wire::ethernet::VlanTags;
use boot_common::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT};
use boot_tests::BootRequest;

/// Requests one run may send: the send-time table holds 8 bytes per request.
pub const MAX_COUNT: u64 = 20_000_000;
/// Longest send phase of one run.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Longest wait for late offers after the last send.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// Distinct clients: three bytes of the MAC number them.
pub const MAX_CLIENTS: u32 = 1 << 24;
/// Largest `sendmmsg` batch.
pub const MAX_BATCH: usize = 1024;
/// Messages per `recvmmsg`.
const RX_BATCH: usize = 64;
/// Receive buffer per message: DHCP replies are at most 576 bytes unless option 57 says more.
const RX_BUF_LEN: usize = 1536;
/// Socket buffers (SO_RCVBUFFORCE/SO_SNDBUFFORCE): the generator must not be where offers
/// are lost.
const SOCKET_BUFFER: libc::c_int = 64 << 20;
/// Rate of the warm-up requests (ARP, caches, the server's first wakeups), not measured.
const WARMUP_RATE: u64 = 2_000;
/// Option 55 of the generator's DISCOVERs: a PXE ROM's short list (PXE 2.1 §2.2.5: 43 and 60
/// among it).
const PARAMETER_REQUEST_LIST: &[u8] = &[1, 3, 6, 12, 15, 17, 43, 54, 60, 66, 67, 97];
/// Option 97's GUID before [`Generator::fill`] numbers the client in its last four bytes.
const GUID: [u8; 16] = [0x5a; 16];
/// Marks an answered request in the send-time table.
const ANSWERED: u64 = u64::MAX;

/// How the DISCOVERs reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RequestPath {
    /// As a PXE ROM sends it: from 0.0.0.0:68 to 255.255.255.255:67, giaddr 0.
    Broadcast,
    /// As a relay agent forwards it: from <giaddr>:67 to <target>:67.
    Relayed,
}

impl std::fmt::Display for RequestPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestPath::Broadcast => "broadcast",
            RequestPath::Relayed => "relayed",
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Interface to send on (and receive the offers from).
    #[arg(short, long, value_name = "IF")]
    interface: String,
    /// Run inside this network namespace (`ip netns` name).
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// broadcast: as PXE ROMs send (from port 68, giaddr 0); relayed: as a relay agent forwards
    /// (from <giaddr>:67 to <target>:67, as perfdhcp does).
    #[arg(long, value_enum, default_value_t = RequestPath::Broadcast)]
    path: RequestPath,
    /// The server, for --path relayed.
    #[arg(long, value_name = "IP", required_if_eq("path", "relayed"))]
    target: Option<Ipv4Addr>,
    /// The relay address put in giaddr and sent from, for --path relayed. Default: the
    /// interface's first IPv4 address.
    #[arg(long, value_name = "IP")]
    giaddr: Option<Ipv4Addr>,
    /// DISCOVERs per second; 0 sends as fast as the generator can.
    #[arg(short, long, default_value_t = 10_000)]
    rate: u64,
    /// DISCOVERs to send (at most 20,000,000).
    #[arg(short = 'n', long, default_value_t = 100_000)]
    count: u64,
    /// Stop sending after this many seconds even if --count is not reached (at most 600).
    #[arg(short, long, default_value_t = 10.0)]
    duration: f64,
    /// Distinct simulated clients (MACs); request n comes from client n mod clients.
    #[arg(short, long, default_value_t = 1_000)]
    clients: u32,
    /// Client architectures (option 93), assigned to clients in turn: names (bios, uefi-ia32,
    /// uefi-x64, uefi-bc, uefi-arm32, uefi-arm64, http-x64, http-arm64) or numbers.
    #[arg(long, value_delimiter = ',', default_value = "bios,uefi-x64")]
    arch: Vec<String>,
    /// Milliseconds to wait for late offers after the last send (at most 10,000).
    #[arg(long, default_value_t = 500)]
    wait_ms: u64,
    /// Most DISCOVERs per sendmmsg call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// DISCOVERs sent (at 2,000/s) and answered before the measured run, not counted.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// Pin the generator to this CPU.
    #[arg(long, value_name = "CPU")]
    cpu: Option<usize>,
    /// Time offers when the generator reads them, not when the kernel received them (what
    /// perfdhcp does): adds the generator's own receive path to the latency.
    #[arg(long)]
    user_timestamps: bool,
}

/// What one run does.
#[derive(Clone, Debug)]
pub struct Settings {
    pub interface: String,
    pub path: RequestPath,
    /// The server (relayed path); ignored on the broadcast path.
    pub target: Ipv4Addr,
    /// Relayed path: giaddr and source address; `None` takes the interface's address.
    pub giaddr: Option<Ipv4Addr>,
    /// DISCOVERs per second; 0 for as fast as possible.
    pub rate: u64,
    pub count: u64,
    pub duration: Duration,
    pub clients: u32,
    pub arches: Vec<u16>,
    pub wait: Duration,
    pub batch: usize,
    pub warmup: u64,
    pub cpu: Option<usize>,
    /// Latency to the kernel's receive time (SO_TIMESTAMPNS) rather than to when the
    /// generator read the offer.
    pub kernel_timestamps: bool,
}

impl Settings {
    /// One broadcast PXE DISCOVER (UEFI x64) from `interface`: what [`wait_for_answer`] sends
    /// to learn that a server is up.
    pub fn probe(interface: &str) -> Settings {
        Settings {
            interface: interface.into(),
            path: RequestPath::Broadcast,
            target: Ipv4Addr::BROADCAST,
            giaddr: None,
            rate: 0,
            count: 1,
            duration: Duration::from_secs(1),
            clients: 1,
            arches: vec![7],
            wait: Duration::from_millis(100),
            batch: 1,
            warmup: 0,
            cpu: None,
            kernel_timestamps: true,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=MAX_COUNT).contains(&self.count),
            "--count must be 1..={MAX_COUNT}"
        );
        ensure!(
            !self.duration.is_zero() && self.duration <= MAX_DURATION,
            "--duration must be above 0 and at most {} s",
            MAX_DURATION.as_secs()
        );
        ensure!(
            self.wait <= MAX_WAIT,
            "--wait-ms must be at most {MAX_WAIT:?}"
        );
        ensure!(
            (1..=MAX_CLIENTS).contains(&self.clients),
            "--clients must be 1..={MAX_CLIENTS}"
        );
        ensure!(
            (1..=MAX_BATCH).contains(&self.batch),
            "--batch must be 1..={MAX_BATCH}"
        );
        ensure!(!self.arches.is_empty(), "--arch names no architecture");
        ensure!(
            self.warmup <= 100_000,
            "--warmup must be at most 100,000 requests"
        );
        Ok(())
    }
}

/// Latency percentiles of the answered requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    pub mean: Duration,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub sent: u64,
    /// Requests answered with an OFFER (each counted once).
    pub answered: u64,
    /// Further OFFERs for requests already answered.
    pub duplicates: u64,
    /// Replies that were not ours: unknown xid, wrong chaddr, not a BOOTREPLY.
    pub foreign: u64,
    /// Replies to our requests that were not OFFERs.
    pub not_offers: u64,
    /// First to last send.
    pub send_time: Duration,
    /// First send to last answer: the window the offers/s are counted over.
    pub answer_time: Duration,
    pub latency: Latency,
    /// CPU time of the generator's thread during the run (sending and receiving).
    pub generator_cpu: Duration,
    /// `sendmmsg` calls that failed (ENOBUFS, EAGAIN); their requests were sent later.
    pub send_errors: u64,
    /// UDP datagrams the generator's namespace dropped for want of socket buffer space
    /// (`RcvbufErrors`): offers that arrived but are counted lost.
    pub rcvbuf_errors: u64,
    /// The run ended at `duration` before sending `count`.
    pub hit_duration: bool,
}

impl Report {
    /// DISCOVERs per second actually sent.
    pub fn send_rate(&self) -> f64 {
        per_second(self.sent, self.send_time)
    }

    /// OFFERs per second: answered requests over the answer window.
    pub fn offers_per_sec(&self) -> f64 {
        per_second(self.answered, self.answer_time)
    }

    /// Fraction of requests without an OFFER.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - self.answered as f64 / self.sent as f64
    }
}

fn per_second(n: u64, over: Duration) -> f64 {
    if over.is_zero() {
        return 0.0;
    }
    n as f64 / over.as_secs_f64()
}

pub fn run_cli(args: &Args) -> anyhow::Result<()> {
    let arches = args
        .arch
        .iter()
        .map(|name| parse_arch(name))
        .collect::<anyhow::Result<Vec<u16>>>()?;
    ensure!(
        args.duration.is_finite() && args.duration > 0.0,
        "--duration must be a positive number of seconds"
    );
    let settings = Settings {
        interface: args.interface.clone(),
        path: args.path,
        target: args.target.unwrap_or(Ipv4Addr::BROADCAST),
        giaddr: args.giaddr,
        rate: args.rate,
        count: args.count,
        duration: Duration::from_secs_f64(args.duration.min(MAX_DURATION.as_secs_f64() + 1.0)),
        clients: args.clients,
        arches,
        wait: Duration::from_millis(args.wait_ms),
        batch: args.batch,
        warmup: args.warmup,
        cpu: args.cpu,
        kernel_timestamps: !args.user_timestamps,
    };
    settings.validate()?;
    let report = match &args.netns {
        Some(name) => in_netns(name, || run(&settings))?,
        None => run(&settings)?,
    };
    print_report(&settings, &report);
    Ok(())
}

/// Runs `f` on a thread that has entered the network namespace `name` (`/run/netns/<name>`).
pub fn in_netns<T: Send>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let path = Path::new("/run/netns").join(name);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering network namespace {name}"))?;
            f()
        });
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

pub fn print_report(settings: &Settings, report: &Report) {
    let names: Vec<String> = settings.arches.iter().map(|a| arch_name(*a)).collect();
    let rate = if settings.rate == 0 {
        "as fast as possible".to_owned()
    } else {
        format!("{}/s asked", settings.rate)
    };
    println!(
        "[loadgen] {} DISCOVERs on {} from {} clients ({}): {} sent in {:.3} s ({:.0}/s; {rate}){}",
        settings.path,
        settings.interface,
        settings.clients,
        names.join(", "),
        report.sent,
        report.send_time.as_secs_f64(),
        report.send_rate(),
        if report.hit_duration {
            ", stopped by --duration"
        } else {
            ""
        }
    );
    println!(
        "[loadgen] offers: {} ({:.0}/s), loss {:.3}%, duplicates {}, other replies {} (not an \
         OFFER: {})",
        report.answered,
        report.offers_per_sec(),
        report.loss() * 100.0,
        report.duplicates,
        report.foreign,
        report.not_offers
    );
    let l = &report.latency;
    println!(
        "[loadgen] DISCOVER→OFFER latency: p50 {}, p90 {}, p99 {}, p99.9 {}, max {} (mean {})",
        micros(l.p50),
        micros(l.p90),
        micros(l.p99),
        micros(l.p999),
        micros(l.max),
        micros(l.mean)
    );
    println!(
        "[loadgen] generator CPU {:.3} s ({:.2} µs per DISCOVER); failed sendmmsg calls {}; \
         offers dropped at the generator's socket {}",
        report.generator_cpu.as_secs_f64(),
        report.generator_cpu.as_secs_f64() * 1e6 / report.sent.max(1) as f64,
        report.send_errors,
        report.rcvbuf_errors
    );
}

/// `Duration` as microseconds with one decimal, or milliseconds above 10 ms.
pub fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// Architecture names as `--arch` takes them (RFC 4578 §2.1 and the IANA registry).
const ARCHES: &[(&str, u16)] = &[
    ("bios", 0),
    ("uefi-ia32", 6),
    ("uefi-x64", 7),
    ("uefi-bc", 9),
    ("uefi-arm32", 10),
    ("uefi-arm64", 11),
    ("http-x64", 16),
    ("http-arm64", 19),
];

pub fn parse_arch(name: &str) -> anyhow::Result<u16> {
    if let Some((_, number)) = ARCHES.iter().find(|(n, _)| *n == name) {
        return Ok(*number);
    }
    name.parse().with_context(|| {
        let known: Vec<&str> = ARCHES.iter().map(|(n, _)| *n).collect();
        format!(
            "unknown architecture `{name}`: use a number or one of {}",
            known.join(", ")
        )
    })
}

pub fn arch_name(number: u16) -> String {
    ARCHES
        .iter()
        .find(|(_, n)| *n == number)
        .map_or_else(|| number.to_string(), |(name, _)| (*name).to_owned())
}

/// Runs the warm-up and then the measured run, in the calling thread's network namespace.
pub fn run(settings: &Settings) -> anyhow::Result<Report> {
    settings.validate()?;
    if let Some(cpu) = settings.cpu {
        pin_to(cpu)?;
    }
    let mut generator = Generator::open(settings)?;
    if settings.warmup > 0 {
        generator.phase(&Phase {
            rate: WARMUP_RATE.min(if settings.rate == 0 {
                u64::MAX
            } else {
                settings.rate
            }),
            count: settings.warmup,
            duration: MAX_WAIT,
            wait: Duration::from_millis(200),
        })?;
    }
    generator.phase(&Phase {
        rate: settings.rate,
        count: settings.count,
        duration: settings.duration,
        wait: settings.wait,
    })
}

/// Sends single DISCOVERs until one is answered or `timeout` passes: whether a server answers
/// on this path at all (servers are ready when they answer, not when they have started).
pub fn wait_for_answer(settings: &Settings, timeout: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut generator = Generator::open(settings)?;
    while Instant::now() < deadline {
        let report = generator.phase(&Phase {
            rate: 0,
            count: 1,
            duration: Duration::from_millis(100),
            wait: Duration::from_millis(100),
        })?;
        if report.answered > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)
        .with_context(|| format!("CPU {cpu} is out of range"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning the generator to CPU {cpu}"))
}

/// One send-and-collect phase.
struct Phase {
    rate: u64,
    count: u64,
    duration: Duration,
    wait: Duration,
}

enum Sender {
    /// AF_PACKET, whole frames.
    Packet(OwnedFd),
    /// The UDP socket the offers come back on, sending to `target`:67.
    Udp(libc::sockaddr_in),
}

struct Generator {
    path: RequestPath,
    sender: Sender,
    /// Broadcast path: port 68; relayed path: `<giaddr>:67` (and the sender).
    receiver: OwnedFd,
    /// One DISCOVER per architecture; [`Generator::fill`] gives each request its xid, MAC and
    /// GUID.
    requests: Vec<BootRequest>,
    clients: u32,
    batch: usize,
    /// Makes the run's MACs its own, should two runs share a link.
    salt: u8,
    /// [`BootRequest::MAX_FRAME_LEN`] bytes each; the request written in `tx_bufs[i]` is
    /// `tx_lens[i]` long.
    tx_bufs: Vec<Vec<u8>>,
    tx_lens: Vec<usize>,
    rx_bufs: Vec<Vec<u8>>,
    rx_ctrl: Vec<[u64; 8]>,
    rx_meta: [(usize, u64); RX_BATCH],
    kernel_timestamps: bool,
}

impl Generator {
    fn open(settings: &Settings) -> anyhow::Result<Generator> {
        let ifindex = nix::net::if_::if_nametoindex(settings.interface.as_str())
            .with_context(|| format!("interface {} not found", settings.interface))?;
        let (sender, receiver, giaddr) = match settings.path {
            RequestPath::Broadcast => {
                let packet = packet_socket(ifindex)?;
                let udp = udp_socket(&settings.interface, Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT)?;
                (Sender::Packet(packet), udp, Ipv4Addr::UNSPECIFIED)
            }
            RequestPath::Relayed => {
                let giaddr = match settings.giaddr {
                    Some(addr) => addr,
                    None => interface_address(&settings.interface)?,
                };
                ensure!(
                    !settings.target.is_broadcast() && !settings.target.is_unspecified(),
                    "--path relayed needs the server's address (--target)"
                );
                let udp = udp_socket(&settings.interface, giaddr, DHCP_SERVER_PORT)?;
                (
                    Sender::Udp(sockaddr_in(settings.target, DHCP_SERVER_PORT)),
                    udp,
                    giaddr,
                )
            }
        };
        let requests = settings
            .arches
            .iter()
            .map(|arch| discover(settings.path, *arch, giaddr))
            .collect();
        let salt = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id()) as u8;
        Ok(Generator {
            path: settings.path,
            sender,
            receiver,
            requests,
            clients: settings.clients,
            batch: settings.batch,
            salt,
            tx_bufs: vec![vec![0; BootRequest::MAX_FRAME_LEN]; settings.batch],
            tx_lens: vec![0; settings.batch],
            rx_bufs: vec![vec![0; RX_BUF_LEN]; RX_BATCH],
            rx_ctrl: vec![[0; 8]; RX_BATCH],
            rx_meta: [(0, 0); RX_BATCH],
            kernel_timestamps: settings.kernel_timestamps,
        })
    }

    /// The MAC of client `n`: locally administered, unicast, the run's salt, then `n`.
    fn client_mac(&self, client: u32) -> MacAddr {
        let n = client.to_be_bytes();
        MacAddr([0x02, 0xd0, self.salt, n[1], n[2], n[3]])
    }

    /// Writes request `seq` (xid `base + seq`) into `tx_bufs[slot]`.
    fn fill(&mut self, slot: usize, seq: u64, base: u32) {
        let client = (seq % u64::from(self.clients)) as u32;
        let mac = self.client_mac(client);
        let arches = self.requests.len();
        let request = &mut self.requests[client as usize % arches];
        request.xid = base.wrapping_add(seq as u32);
        request.mac = mac;
        // The GUID's last four bytes number the client, as a machine's SMBIOS UUID would be
        // its own.
        request.guid[12..].copy_from_slice(&client.to_be_bytes());
        let buf = &mut self.tx_bufs[slot];
        let written = match self.path {
            RequestPath::Broadcast => {
                request.write_frame(buf, &request.broadcast_addressing(VlanTags::NONE))
            }
            RequestPath::Relayed => request.write(buf),
        };
        self.tx_lens[slot] = written.expect("a DISCOVER fits BootRequest::MAX_FRAME_LEN");
    }

    fn phase(&mut self, phase: &Phase) -> anyhow::Result<Report> {
        let base: u32 = rand_u32();
        let count = phase.count;
        let mut send_times: Vec<u64> = vec![0; count as usize];
        let mut latencies: Vec<u64> = Vec::with_capacity(count as usize);
        // Replies left over from an earlier phase are not this one's.
        self.drain(
            base,
            &mut send_times,
            &mut latencies,
            &mut Report::default(),
            0,
        )?;
        let mut report = Report::default();
        let drops_before = udp_rcvbuf_errors();
        let cpu_before = thread_cpu_time();

        let start = Instant::now();
        let start_ns = now_ns();
        let mut first_send_ns = 0u64;
        let mut last_send_ns = 0u64;
        let mut last_answer_ns = 0u64;
        let mut sent = 0u64;
        let nanos_per_request = if phase.rate == 0 {
            0
        } else {
            1_000_000_000 / phase.rate.max(1)
        };
        while sent < count {
            let elapsed = start.elapsed();
            if elapsed >= phase.duration {
                report.hit_duration = true;
                break;
            }
            // Open loop: everything due by now goes out, so a late wakeup is made up for.
            let due = if phase.rate == 0 {
                count - sent
            } else {
                let by_now =
                    (elapsed.as_nanos() * u128::from(phase.rate) / 1_000_000_000) as u64 + 1;
                by_now.min(count).saturating_sub(sent)
            };
            let mut busy = false;
            if due > 0 {
                let n = (due as usize).min(self.batch);
                for slot in 0..n {
                    self.fill(slot, sent + slot as u64, base);
                }
                let now = now_ns();
                match self.send(n) {
                    Ok(done) => {
                        for seq in sent..sent + done as u64 {
                            send_times[seq as usize] = now;
                        }
                        if sent == 0 && done > 0 {
                            first_send_ns = now;
                        }
                        if done > 0 {
                            last_send_ns = now;
                        }
                        sent += done as u64;
                        busy = done > 0;
                    }
                    Err(err)
                        if matches!(
                            err.raw_os_error(),
                            Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR)
                        ) =>
                    {
                        report.send_errors += 1;
                    }
                    Err(err) => return Err(err).context("sendmmsg"),
                }
            }
            let got = self.drain(base, &mut send_times, &mut latencies, &mut report, sent)?;
            if got.1 > 0 {
                last_answer_ns = last_answer_ns.max(got.1);
            }
            busy |= got.0 > 0;
            if !busy && phase.rate > 0 {
                // Sleep when the next request is far off; spin when it is close.
                let next_at = sent.saturating_mul(nanos_per_request);
                let now = start.elapsed().as_nanos() as u64;
                let ahead = next_at.saturating_sub(now);
                if ahead > 200_000 {
                    std::thread::sleep(Duration::from_nanos((ahead - 100_000).min(1_000_000)));
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        report.sent = sent;
        // Late offers: until all are in or the wait is over.
        let wait_until = Instant::now() + phase.wait;
        while report.answered + report.duplicates < sent && Instant::now() < wait_until {
            let (n, last) = self.drain(base, &mut send_times, &mut latencies, &mut report, sent)?;
            if last > 0 {
                last_answer_ns = last_answer_ns.max(last);
            }
            if n == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        report.generator_cpu = thread_cpu_time().saturating_sub(cpu_before);
        report.rcvbuf_errors = udp_rcvbuf_errors().saturating_sub(drops_before);
        report.send_time = Duration::from_nanos(last_send_ns.saturating_sub(first_send_ns));
        // A single request has no send window; count its rate over its answer.
        report.answer_time =
            Duration::from_nanos(last_answer_ns.saturating_sub(first_send_ns.max(start_ns)));
        report.latency = percentiles(&mut latencies);
        Ok(report)
    }

    /// Sends `tx_bufs[..n]`; returns how many went.
    fn send(&mut self, n: usize) -> io::Result<usize> {
        let mut iovecs: Vec<libc::iovec> = self.tx_bufs[..n]
            .iter_mut()
            .zip(&self.tx_lens)
            .map(|(buf, &len)| libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: len,
            })
            .collect();
        let (fd, mut name, name_len): (RawFd, Option<libc::sockaddr_in>, libc::socklen_t) =
            match &self.sender {
                Sender::Packet(fd) => (fd.as_raw_fd(), None, 0),
                Sender::Udp(to) => (
                    self.receiver.as_raw_fd(),
                    Some(*to),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ),
            };
        let name_ptr: *mut libc::c_void = name.as_mut().map_or(std::ptr::null_mut(), |n| {
            (n as *mut libc::sockaddr_in).cast()
        });
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is plain old data; all-zero is a valid empty header.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = name_ptr.cast();
                h.msg_hdr.msg_namelen = name_len;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: `headers` points at `iovecs`, which point at `tx_bufs` (each at least as long
        // as its `tx_lens` entry), and at `name`; all outlive the call, and the kernel only
        // reads them.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                headers.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }

    /// Reads what offers are waiting, without blocking. Returns how many datagrams were read
    /// and the latest receive time among the answers (0 if none).
    fn drain(
        &mut self,
        base: u32,
        send_times: &mut [u64],
        latencies: &mut Vec<u64>,
        report: &mut Report,
        sent: u64,
    ) -> anyhow::Result<(usize, u64)> {
        let mut total = 0;
        let mut last = 0;
        // A bounded number of batches per call, so sending is not starved.
        for _ in 0..4 {
            let n = self.receive().context("recvmmsg")?;
            for i in 0..n {
                let (len, stamp) = self.rx_meta[i];
                let rx_ns = if stamp == 0 || !self.kernel_timestamps {
                    now_ns()
                } else {
                    stamp
                };
                let payload = &self.rx_bufs[i][..len];
                match self.classify(payload, base, sent) {
                    Reply::Offer(seq) => {
                        let sent_at = send_times[seq as usize];
                        if sent_at == ANSWERED {
                            report.duplicates += 1;
                        } else {
                            latencies.push(rx_ns.saturating_sub(sent_at));
                            send_times[seq as usize] = ANSWERED;
                            report.answered += 1;
                            last = last.max(rx_ns);
                        }
                    }
                    Reply::NotOffer => report.not_offers += 1,
                    Reply::Foreign => report.foreign += 1,
                }
            }
            total += n;
            if n < RX_BATCH {
                break;
            }
        }
        Ok((total, last))
    }

    fn classify(&self, reply: &[u8], base: u32, sent: u64) -> Reply {
        let Ok(reply) = dhcpv4::Packet::new_checked(reply) else {
            return Reply::Foreign;
        };
        if reply.op() != dhcpv4::BOOTREPLY {
            return Reply::Foreign;
        }
        let seq = u64::from(reply.xid().wrapping_sub(base));
        if seq >= sent {
            return Reply::Foreign;
        }
        let client = (seq % u64::from(self.clients)) as u32;
        if reply.client_mac() != Some(self.client_mac(client)) {
            return Reply::Foreign;
        }
        match reply.message_type() {
            Ok(Some(message_type::OFFER)) => Reply::Offer(seq),
            _ => Reply::NotOffer,
        }
    }

    /// One `recvmmsg` into `rx_bufs`; each datagram's length and kernel receive time (ns, 0
    /// when absent) go to `rx_meta`. Returns how many datagrams arrived.
    fn receive(&mut self) -> io::Result<usize> {
        // SAFETY: iovec and mmsghdr are plain old data; all-zero values are valid empty ones.
        let mut iovecs: [libc::iovec; RX_BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut headers: [libc::mmsghdr; RX_BATCH] = unsafe { zeroed() };
        for (i, (buf, ctrl)) in self
            .rx_bufs
            .iter_mut()
            .zip(self.rx_ctrl.iter_mut())
            .enumerate()
        {
            iovecs[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let h = &mut headers[i].msg_hdr;
            h.msg_iov = &mut iovecs[i];
            h.msg_iovlen = 1;
            h.msg_control = ctrl.as_mut_ptr().cast();
            h.msg_controllen = size_of::<[u64; 8]>();
        }
        // SAFETY: `headers` points at `iovecs` and `rx_ctrl`, which point at buffers owned by
        // `self`; all outlive the call and are as long as the headers say.
        let n = unsafe {
            libc::recvmmsg(
                self.receiver.as_raw_fd(),
                headers.as_mut_ptr(),
                RX_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                return Ok(0);
            }
            return Err(err);
        }
        let n = n as usize;
        for (meta, h) in self.rx_meta.iter_mut().zip(&headers[..n]) {
            *meta = (h.msg_len as usize, timestamp(&h.msg_hdr));
        }
        Ok(n)
    }
}

enum Reply {
    Offer(u64),
    NotOffer,
    Foreign,
}

/// The SCM_TIMESTAMPNS of a received message, as ns since the epoch; 0 if absent.
fn timestamp(msg: &libc::msghdr) -> u64 {
    // SAFETY: `msg` was filled by recvmmsg; the CMSG macros walk its control buffer within
    // `msg_controllen`, and the timestamp is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    0
}

/// The generator's DISCOVER for `arch`, as OVMF's and iPXE's PXE ROMs shape it: options 53,
/// 57, 93, 94, 97, 55 and 60, no client identifier, padded to the BOOTP minimum of 300 bytes.
/// The xid, MAC and the GUID's last four bytes are left for [`Generator::fill`]. On the relayed
/// path giaddr is the relay agent's and hops 1, and the ROM's broadcast bit (RFC 1542 §2.2)
/// stays set: a relay agent passes the client's flags on.
pub fn discover(path: RequestPath, arch: u16, giaddr: Ipv4Addr) -> BootRequest {
    // UEFI HTTP boot's architecture types (RFC 4578 §2.1 and the IANA registry).
    let http = matches!(arch, 15 | 16 | 18 | 19);
    let rom = if http {
        BootRequest::http(arch)
    } else {
        BootRequest::pxe(arch)
    };
    let rom = BootRequest {
        xid: 0,
        mac: MacAddr::ZERO,
        guid: GUID,
        parameter_request_list: PARAMETER_REQUEST_LIST,
        client_id: false,
        ..rom
    };
    match path {
        RequestPath::Broadcast => rom,
        RequestPath::Relayed => BootRequest {
            broadcast: true,
            ..rom.relayed_by(giaddr)
        },
    }
}

fn percentiles(latencies: &mut [u64]) -> Latency {
    if latencies.is_empty() {
        return Latency::default();
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        Duration::from_nanos(latencies[index])
    };
    let sum: u128 = latencies.iter().map(|&l| u128::from(l)).sum();
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: Duration::from_nanos(latencies[latencies.len() - 1]),
        mean: Duration::from_nanos((sum / latencies.len() as u128) as u64),
    }
}

/// CLOCK_REALTIME in ns: the clock SO_TIMESTAMPNS stamps received datagrams with.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub(crate) fn rand_u32() -> u32 {
    let nanos = now_ns();
    // splitmix64 of the clock: enough to keep runs' xids apart.
    let mut z = nanos.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

/// CPU time of the calling thread.
pub fn thread_cpu_time() -> Duration {
    // SAFETY: timespec is plain old data and clock_gettime only writes it.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `RcvbufErrors` of the calling thread's network namespace (`/proc/thread-self/net/snmp`).
fn udp_rcvbuf_errors() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/thread-self/net/snmp") else {
        return 0;
    };
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// The first IPv4 address of `interface`.
pub fn interface_address(interface: &str) -> anyhow::Result<Ipv4Addr> {
    for ifaddr in nix::ifaddrs::getifaddrs().context("listing interface addresses")? {
        if ifaddr.interface_name != interface {
            continue;
        }
        if let Some(addr) = ifaddr.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            return Ok(addr.ip());
        }
    }
    bail!("{interface} has no IPv4 address: give one with --giaddr, or add one")
}

fn sockaddr_in(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn check(ret: libc::c_int, what: &str) -> anyhow::Result<()> {
    if ret < 0 {
        return Err(io::Error::last_os_error()).context(what.to_owned());
    }
    Ok(())
}

fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
    what: &str,
) -> anyhow::Result<()> {
    // SAFETY: a live descriptor and a pointer to an int of the size given.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(ret, what)
}

/// An AF_PACKET socket that sends whole frames on `ifindex`, past the qdisc (the generator
/// paces itself), and receives nothing (protocol 0).
pub(crate) fn packet_socket(ifindex: u32) -> anyhow::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    check(raw, "opening an AF_PACKET socket (needs root)")?;
    // SAFETY: `raw` is a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid before the fields are set.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: a live descriptor and a sockaddr_ll of the size given.
    let ret = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    check(ret, "binding the AF_PACKET socket")?;
    set_int(
        &fd,
        libc::SOL_PACKET,
        libc::PACKET_QDISC_BYPASS,
        1,
        "PACKET_QDISC_BYPASS",
    )?;
    set_int(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        SOCKET_BUFFER,
        "SO_SNDBUFFORCE",
    )?;
    Ok(fd)
}

/// A UDP socket on `addr:port`, tied to `interface`, with a large buffer and kernel receive
/// timestamps.
pub(crate) fn udp_socket(interface: &str, addr: Ipv4Addr, port: u16) -> anyhow::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    check(raw, "opening a UDP socket")?;
    // SAFETY: `raw` is a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1, "SO_REUSEADDR")?;
    set_int(&fd, libc::SOL_SOCKET, libc::SO_BROADCAST, 1, "SO_BROADCAST")?;
    set_int(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        1,
        "SO_TIMESTAMPNS",
    )?;
    set_int(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        SOCKET_BUFFER,
        "SO_RCVBUFFORCE",
    )?;
    set_int(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        SOCKET_BUFFER,
        "SO_SNDBUFFORCE",
    )?;
    let device = CString::new(interface).context("interface name")?;
    // SAFETY: a live descriptor and a NUL-terminated name of the length given.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            device.as_ptr().cast(),
            device.as_bytes_with_nul().len() as libc::socklen_t,
        )
    };
    check(ret, "SO_BINDTODEVICE")?;
    let sin = sockaddr_in(addr, port);
    // SAFETY: a live descriptor and a sockaddr_in of the size given.
    let ret = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    check(ret, &format!("binding UDP {addr}:{port} on {interface}"))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use boot_common::wire::UdpFrame;

    /// The option codes of a message, in the order they were written.
    fn option_codes(bootp: &[u8]) -> Vec<u8> {
        dhcpv4::Packet::new_checked(bootp)
            .unwrap()
            .options()
            .map(|item| item.unwrap().0)
            .collect()
    }

    #[test]
    fn a_broadcast_discover_is_a_rom_frame_with_valid_checksums() {
        let mut request = discover(RequestPath::Broadcast, 7, Ipv4Addr::UNSPECIFIED);
        request.mac = MacAddr([0x02, 0xd0, 0, 0, 0, 1]);
        let mut buf = vec![0; BootRequest::MAX_FRAME_LEN];
        let len = request
            .write_frame(&mut buf, &request.broadcast_addressing(VlanTags::NONE))
            .unwrap();
        // The options (324 bytes with the fixed part and the cookie) need no padding to the
        // BOOTP minimum.
        assert_eq!(len, 14 + 20 + 8 + 324);
        let frame = UdpFrame::parse(&buf[..len]).unwrap();
        assert!(frame.verify_checksums());
        assert_eq!(frame.ethernet.src(), request.mac);
        assert_eq!(frame.dst().port(), DHCP_SERVER_PORT);
        let bootp = frame.payload();
        assert_eq!(option_codes(bootp), [53, 57, 93, 94, 97, 55, 60]);
        let class = b"PXEClient:Arch:00007:UNDI:003000";
        assert!(bootp.windows(class.len()).any(|w| w == class));
        let packet = dhcpv4::Packet::new_checked(bootp).unwrap();
        assert!(packet.broadcast());
        assert_eq!(packet.client_mac(), Some(request.mac));
    }

    #[test]
    fn a_relayed_discover_names_its_relay_and_keeps_the_roms_broadcast_bit() {
        let relay = Ipv4Addr::new(198, 18, 0, 60);
        let request = discover(RequestPath::Relayed, 0, relay);
        let bootp = request.encode();
        let packet = dhcpv4::Packet::new_checked(&bootp[..]).unwrap();
        assert_eq!((packet.giaddr(), packet.hops()), (relay, 1));
        assert!(packet.broadcast());
        assert_eq!(bootp.len(), 324, "the broadcast path's message");
        let class = b"PXEClient:Arch:00000:UNDI:002001";
        assert!(bootp.windows(class.len()).any(|w| w == class));
    }

    #[test]
    fn percentiles_pick_the_right_ranks() {
        let mut values: Vec<u64> = (1..=1000).collect();
        let l = percentiles(&mut values);
        assert_eq!(l.p50, Duration::from_nanos(500));
        assert_eq!(l.p99, Duration::from_nanos(990));
        assert_eq!(l.max, Duration::from_nanos(1000));
    }
}
