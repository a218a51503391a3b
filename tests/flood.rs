//! A DHCP flood against the XDP backend (GitHub issue 7): a million boot DISCOVERs from random
//! MACs plus a burst from one MAC, sent as fast as the generator can, while a legitimate client
//! (an inventory MAC, `[xdp] never_shed`) boots. Its DISCOVER→OFFER and REQUEST→ACK latency
//! during the flood is compared with its idle latency; the daemon must stay up, answer, keep its
//! memory bounded, and its verdict counters must show what happened to the flood.
//!
//! ```text
//!   boot  (xdpboot --backend xdp --steer tee, eth0 198.18.0.1/24) ─┐
//!   flood (eth0, no address: the generator, from port 68)          ─┼─ br0 in "lan"
//!   legit (eth0 198.18.0.50/24: the client being measured)         ─┘
//! ```
//! The flood and the legitimate client have veths of their own, so the flood does not queue in
//! front of the client's requests on its link; what they share is the bridge, the server's link,
//! its XDP program and the daemon, as on a real provisioning LAN.
//!
//! Needs root, iproute2, curl and the daemon's release build with its eBPF object (`cargo build
//! --release -p boot-user --bin xdpboot`; `cargo xtask test` builds it). The summary table it prints is what BENCHMARKS.md quotes.

use std::ffi::OsStr;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use boot_common::wire::{MacAddr, udp};
use boot_tests::xdp::Counters;
use boot_tests::{
    BootFiles, BootRequest, ChildGuard, DEFAULT_LOADERS, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, NetNs,
    PXE_SERVER_PORT, STARTUP_TIMEOUT, Serving, next_id, unique_ifindex, veth, veth_with_index,
    xdpboot_release_binary,
};
use dhcproto::v4::{self, MessageType};
use dhcproto::{Decodable, Decoder};
use socket2::{Domain, Protocol, Socket, Type};

/// DISCOVERs the generator sends, the one-MAC burst included.
const FLOOD_PACKETS: u64 = 1_000_000;
/// DISCOVERs from a single MAC, back to back, in the middle of the flood.
const BURST_PACKETS: u64 = 10_000;
/// Where in the flood the burst starts (its sequence number).
const BURST_AT: u64 = 300_000;
/// The flood stops here even if it has not sent everything.
const FLOOD_TIME_CAP: Duration = Duration::from_secs(30);
/// DISCOVERs per `sendmmsg` call.
const SEND_BATCH: usize = 64;
/// The legitimate client's exchanges of each kind (DISCOVER→OFFER, REQUEST→ACK) per phase.
const SAMPLES: usize = 1000;
/// The least the p99 bound under the flood allows over the idle p99 (see its check).
const FLOOD_JITTER: Duration = Duration::from_micros(100);
/// Exchanges before the idle measurement (ARP, caches, first wakeups), not measured.
const WARMUP: usize = 20;
/// The flood has sent this much before the client starts measuring, so it measures a server
/// that is already under the flood.
const MEASURE_AFTER: u64 = 50_000;
/// Longest wait for one reply to the legitimate client; a reply later than this is lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// `[xdp] shed_rate` and `shed_burst` of the shipped config (this test keeps them).
const SHED_RATE: u64 = 10;
const SHED_BURST: u64 = 20;

const BOOT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const LEGIT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);
/// Where chaddr starts in a BOOTP message (RFC 2131 §2), for the client's socket filter.
const CHADDR_AT: usize = 28;

// ---------------------------------------------------------------------------------------------
// The lab

/// The flood topology (see the module docs). Fields drop in order: the daemon first, then the
/// client's socket, the namespaces (and every link in them), the files.
struct FloodLan {
    daemon: ChildGuard,
    client: LegitClient,
    legit: NetNs,
    flood: NetNs,
    boot: NetNs,
    lan: NetNs,
    _files: BootFiles,
}

impl FloodLan {
    fn start(legit_mac: MacAddr) -> Result<FloodLan> {
        let files = BootFiles::new(DEFAULT_LOADERS)?;
        // The shipped shedding settings, and the legitimate client in the inventory.
        let mut config = std::fs::read_to_string(files.config())?;
        config.push_str(&format!(
            "\n[xdp]\nshed_rate = {SHED_RATE}\nshed_burst = {SHED_BURST}\nnever_shed = [\"{}\"]\n",
            legit_mac
        ));
        std::fs::write(files.config(), config)?;

        let lan = NetNs::new("lan")?;
        let boot = NetNs::new("boot")?;
        let flood = NetNs::new("flood")?;
        let legit = NetNs::new("legit")?;
        lan.add_bridge("br0")?;
        // The served device gets an index of its own (BPF links are system-wide).
        veth_with_index(&boot, "eth0", Some(unique_ifindex()), &lan, "boot")?;
        veth(&lan, "flood", &flood, "eth0")?;
        veth(&lan, "legit", &legit, "eth0")?;
        for port in ["boot", "flood", "legit"] {
            lan.attach(port, "br0")?;
        }
        boot.add_address("eth0", &format!("{BOOT}/24"))?;
        legit.add_address("eth0", &format!("{LEGIT}/24"))?;
        legit.ip(&format!("link set eth0 address {legit_mac}"))?;

        let daemon = start_daemon(&boot, &files.config(), files.dir.join("xdpboot.log"))?;
        let client = LegitClient::bind(&legit, legit_mac)?;
        Ok(FloodLan {
            daemon,
            client,
            legit,
            flood,
            boot,
            lan,
            _files: files,
        })
    }

    fn counters(&self) -> Result<Counters> {
        Counters::read(&self.boot, "eth0")
    }

    /// `GET http://127.0.0.1:9180/metrics` inside the boot namespace (the admin listener).
    fn metrics(&self) -> Result<String> {
        self.boot.exec(
            Path::new("curl"),
            &[
                "-sS",
                "--fail",
                "--max-time",
                "5",
                "http://127.0.0.1:9180/metrics",
            ],
        )
    }
}

/// `xdpboot run --backend xdp --steer tee --interface eth0` with the shipped log level (info:
/// one line per answered request, as an operator runs it), waiting until it serves.
fn start_daemon(ns: &NetNs, config: &Path, log: PathBuf) -> Result<ChildGuard> {
    let args: Vec<&OsStr> = [
        "run",
        "--backend",
        "xdp",
        "--steer",
        "tee",
        "--interface",
        "eth0",
        "--config",
    ]
    .iter()
    .map(OsStr::new)
    .chain([config.as_os_str()])
    .collect();
    let mut child = ns.spawn(
        "xdpboot",
        // The daemon as it ships: a debug build spends ten times the CPU per request, and a
        // flood then measures the build, not the design.
        &xdpboot_release_binary(),
        &args,
        &[
            ("RUST_LOG", "info"),
            ("NO_COLOR", "1"),
            ("RUST_BACKTRACE", "0"),
        ],
        log.clone(),
    )?;
    child.wait_until("serving", STARTUP_TIMEOUT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        Ok(Serving::find(&text, "eth0").is_some())
    })?;
    Ok(child)
}

// ---------------------------------------------------------------------------------------------
// Socket helpers

/// Attaches a classic BPF socket filter. On a UDP socket the program sees the datagram from its
/// UDP header on.
fn attach_filter(socket: &impl AsRawFd, program: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const fn bpf_stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn bpf_jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Keeps only datagrams whose BOOTP chaddr starts with `mac`. On a UDP socket the filter sees
/// the datagram from its UDP header on.
fn chaddr_filter(mac: MacAddr) -> [libc::sock_filter; 6] {
    let at = (udp::HEADER_LEN + CHADDR_AT) as u32;
    let mac = mac.octets();
    let high = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let low = u32::from(u16::from_be_bytes([mac[4], mac[5]]));
    [
        bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, at),
        bpf_jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, high, 0, 3),
        bpf_stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, at + 4),
        bpf_jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, low, 0, 1),
        bpf_stmt(libc::BPF_RET | libc::BPF_K, u32::MAX),
        bpf_stmt(libc::BPF_RET | libc::BPF_K, 0),
    ]
}

/// Nanoseconds of CLOCK_REALTIME, the clock of SO_TIMESTAMPNS.
fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Resident and peak resident memory of `pid` (`VmRSS`, `VmHWM`), in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

// ---------------------------------------------------------------------------------------------
// The legitimate client

/// The client being measured: port 68 on the legit namespace's eth0, seeing only BOOTREPLYs for
/// its own MAC (a socket filter drops the flood's broadcast OFFERs in the kernel, as firmware
/// drops them by xid), with kernel receive timestamps.
struct LegitClient {
    socket: UdpSocket,
    mac: MacAddr,
}

/// One exchange: how long its reply took, or `None` if none came within [`REPLY_TIMEOUT`].
type Sample = Option<Duration>;

impl LegitClient {
    fn bind(ns: &NetNs, mac: MacAddr) -> Result<LegitClient> {
        let socket = ns.run(move || {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_reuse_address(true)?;
            socket.set_broadcast(true)?;
            socket.bind_device(Some(b"eth0"))?;
            socket.set_recv_buffer_size(1 << 20)?;
            attach_filter(&socket, &chaddr_filter(mac))?;
            let on: libc::c_int = 1;
            // SAFETY: an int option, pointer and length of a local.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_TIMESTAMPNS,
                    (&raw const on).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            ensure!(rc == 0, "SO_TIMESTAMPNS: {}", io::Error::last_os_error());
            socket
                .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT).into())
                .context("binding port 68 in the legit namespace")?;
            Ok(UdpSocket::from(socket))
        })?;
        Ok(LegitClient { socket, mac })
    }

    fn discover(&self) -> BootRequest {
        BootRequest {
            mac: self.mac,
            ..BootRequest::pxe(7)
        }
    }

    /// A proxy DISCOVER broadcast, answered by an OFFER.
    fn discover_offer(&self) -> Result<Sample> {
        let discover = self.discover();
        self.exchange(
            &discover,
            SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT),
            MessageType::Offer,
        )
    }

    /// The REQUEST to the server's port 4011, answered by an ACK.
    fn request_ack(&self) -> Result<Sample> {
        let request = self.discover().request_to(BOOT, LEGIT);
        self.exchange(
            &request,
            SocketAddrV4::new(BOOT, PXE_SERVER_PORT),
            MessageType::Ack,
        )
    }

    /// Sends `request` and waits for the reply of `kind` with its xid. The latency runs from just
    /// before the send to the kernel's receive timestamp of the reply, so this thread's own
    /// scheduling on a busy machine does not count.
    fn exchange(
        &self,
        request: &BootRequest,
        to: SocketAddrV4,
        kind: MessageType,
    ) -> Result<Sample> {
        let bytes = request.encode();
        let sent_ns = realtime_ns();
        self.socket
            .send_to(&bytes, to)
            .with_context(|| format!("sending to {to}"))?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut buf = [0u8; 2048];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(deadline - now))?;
            let Some((len, received_ns)) = self.receive(&mut buf)? else {
                continue;
            };
            let Ok(message) = v4::Message::decode(&mut Decoder::new(&buf[..len])) else {
                continue;
            };
            if message.xid() == request.xid && message.opts().msg_type() == Some(kind) {
                return Ok(Some(Duration::from_nanos(
                    received_ns.saturating_sub(sent_ns),
                )));
            }
        }
    }

    /// One datagram and its kernel receive time (CLOCK_REALTIME ns); `None` on timeout.
    fn receive(&self, buf: &mut [u8]) -> Result<Option<(usize, u64)>> {
        // SAFETY: plain C structs, valid when zeroed.
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 16]>();
        // SAFETY: `msg` points at `iov` (into `buf`) and `control`, both alive for the call.
        let len = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &raw mut msg, 0) };
        if len < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(None),
                _ => Err(err.into()),
            };
        }
        let mut stamp = realtime_ns();
        // SAFETY: the CMSG_* walk stays within `control`, as the kernel filled it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    stamp = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                }
                cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
            }
        }
        Ok(Some((len as usize, stamp)))
    }
}

/// What one measuring phase saw.
#[derive(Default)]
struct Measured {
    offers: Vec<Sample>,
    acks: Vec<Sample>,
    /// Exchanges of either kind that ended while the flood was still being sent.
    during_flood: usize,
}

/// Alternates DISCOVER→OFFER and REQUEST→ACK, [`SAMPLES`] of each, one at a time; with `flood`
/// given, stops early when the flood has ended (the samples are then not under the flood).
fn measure(client: &LegitClient, flood: Option<&FloodProgress>) -> Result<Measured> {
    // The client stands for another machine, as the flood does (see `flood`): its send path
    // (the bridge and the server's veth run inside its sendto) must not wait for a CPU behind
    // the daemon and the flood that share this machine's two cores. Real-time priority for this
    // thread, idle and flooded alike; where it cannot be had, the measurement runs without.
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid parameter.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    let mut measured = Measured::default();
    for _ in 0..SAMPLES {
        if flood.is_some_and(|f| f.done.load(Ordering::Acquire)) {
            break;
        }
        measured.offers.push(client.discover_offer()?);
        measured.acks.push(client.request_ack()?);
        if flood.is_some_and(|f| !f.done.load(Ordering::Acquire)) {
            measured.during_flood += 2;
        }
    }
    Ok(measured)
}

/// Percentiles of the answered samples.
#[derive(Clone, Copy, Debug, Default)]
struct Latency {
    answered: usize,
    lost: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Latency {
    fn of(samples: &[Sample]) -> Latency {
        let mut answered: Vec<Duration> = samples.iter().flatten().copied().collect();
        answered.sort_unstable();
        let at = |q: f64| -> Duration {
            if answered.is_empty() {
                return Duration::ZERO;
            }
            let rank = ((q * answered.len() as f64).ceil() as usize).clamp(1, answered.len());
            answered[rank - 1]
        };
        Latency {
            answered: answered.len(),
            lost: samples.len() - answered.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: answered.last().copied().unwrap_or_default(),
        }
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

// ---------------------------------------------------------------------------------------------
// The flood generator

/// Shared between the generator and the test while the flood runs.
#[derive(Default)]
struct FloodProgress {
    sent: AtomicU64,
    done: AtomicBool,
}

/// What the generator did.
#[derive(Debug, Default)]
struct FloodReport {
    sent: u64,
    elapsed: Duration,
    /// Burst DISCOVERs sent, and the time from the first to the last of them.
    burst_sent: u64,
    burst_time: Duration,
    /// `sendmmsg` calls refused for want of buffer space (retried).
    send_errors: u64,
    stopped_by_cap: bool,
    pinned_cpu: Option<usize>,
    /// Whether the generator thread runs at nice 19.
    niced: bool,
}

impl FloodReport {
    fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A small xorshift generator: the flood's MACs need to be distinct, not unpredictable.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sends [`FLOOD_PACKETS`] PXE DISCOVERs (UEFI x64, as the legitimate client's) from port 68 of
/// `ns`'s eth0 to 255.255.255.255:67 with `sendmmsg`, as fast as it can, each from a random
/// locally administered MAC (chaddr) except [`BURST_PACKETS`] from `burst_mac` starting at
/// [`BURST_AT`]. Bounded by the count and [`FLOOD_TIME_CAP`]. Pinned to the last CPU when it
/// can be, so the rest of the machine is left to the daemon and the client.
fn flood(ns: &NetNs, burst_mac: MacAddr, progress: &FloodProgress) -> Result<FloodReport> {
    ns.run(|| {
        let mut report = FloodReport::default();
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        if cpus > 1 {
            let mut set = nix::sched::CpuSet::new();
            if set.set(cpus - 1).is_ok()
                && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
            {
                report.pinned_cpu = Some(cpus - 1);
            }
        }
        // The flood stands for other machines on the LAN: here it shares the server's two
        // cores, and at the default priority it would take CPU from the kernel's receive work
        // (ksoftirqd) and the daemon, which a real flood on other machines cannot. At nice 19
        // it sends with what they leave, which on this machine is still ~150,000 DISCOVERs/s.
        // SAFETY: setpriority on the calling thread (who = 0) with a constant value.
        report.niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } == 0;
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_broadcast(true)?;
        socket.bind_device(Some(b"eth0"))?;
        socket.set_nonblocking(true)?;
        socket.set_send_buffer_size(4 << 20)?;
        // The offers to the flood come back broadcast to port 68: drop them at the socket.
        attach_filter(&socket, &[bpf_stmt(libc::BPF_RET | libc::BPF_K, 0)])?;
        socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT).into())?;
        socket.connect(&SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT).into())?;

        let mut discover = BootRequest::pxe(7);
        let mut bufs = vec![vec![0u8; BootRequest::MAX_LEN]; SEND_BATCH];
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: 0,
            })
            .collect();
        // SAFETY: plain C structs, valid when zeroed.
        let mut msgs: Vec<libc::mmsghdr> = (0..SEND_BATCH).map(|_| unsafe { zeroed() }).collect();
        for (msg, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        let mut random = XorShift(realtime_ns() | 1);
        let xid_base = random.next() as u32;
        let burst = BURST_AT..BURST_AT + BURST_PACKETS;
        let mut burst_first: Option<Instant> = None;
        let mut burst_last = None;

        let start = Instant::now();
        let mut sent = 0u64;
        while sent < FLOOD_PACKETS {
            if start.elapsed() >= FLOOD_TIME_CAP {
                report.stopped_by_cap = true;
                break;
            }
            let n = (FLOOD_PACKETS - sent).min(SEND_BATCH as u64) as usize;
            for (i, (buf, iov)) in bufs.iter_mut().zip(iovs.iter_mut()).take(n).enumerate() {
                let seq = sent + i as u64;
                discover.mac = if burst.contains(&seq) {
                    burst_mac
                } else {
                    let r = random.next().to_be_bytes();
                    // Locally administered, unicast, and never the client's (02:…) or the
                    // burst's.
                    MacAddr([0x06, r[0], r[1], r[2], r[3], r[4]])
                };
                discover.xid = xid_base.wrapping_add(seq as u32);
                iov.iov_len = discover
                    .write(buf)
                    .expect("a DISCOVER fits BootRequest::MAX_LEN");
            }
            // SAFETY: `msgs[..n]` point at `iovs[..n]`, which point into `bufs`; none of them
            // moves or is freed during the call.
            let done =
                unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if done < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => {
                        report.send_errors += 1;
                        thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    _ => return Err(anyhow::Error::new(err).context("sendmmsg")),
                }
            }
            let done = done as u64;
            let now = Instant::now();
            let in_burst = (sent..sent + done).filter(|s| burst.contains(s)).count() as u64;
            if in_burst > 0 {
                burst_first.get_or_insert(now);
                burst_last = Some(now);
                report.burst_sent += in_burst;
            }
            sent += done;
            progress.sent.store(sent, Ordering::Release);
        }
        report.elapsed = start.elapsed();
        report.sent = sent;
        if let (Some(first), Some(last)) = (burst_first, burst_last) {
            report.burst_time = last - first;
        }
        Ok(report)
    })
}

// ---------------------------------------------------------------------------------------------
// The test

#[test]
fn a_million_discover_flood_leaves_an_inventory_client_answered_within_twice_its_idle_latency()
-> Result<()> {
    let id = next_id().to_be_bytes();
    let pid = (std::process::id() as u16).to_be_bytes();
    let legit_mac = MacAddr([0x02, pid[0], pid[1], 0xaa, id[2], id[3]]);
    let burst_mac = MacAddr([0x02, pid[0], pid[1], 0xbb, id[2], id[3]]);
    let mut lab = FloodLan::start(legit_mac)?;
    let pid = lab.daemon.pid();

    // Idle: warm up (ARP, first wakeups), then measure.
    for _ in 0..WARMUP {
        lab.client
            .discover_offer()?
            .context("no OFFER while idle")?;
        lab.client.request_ack()?.context("no ACK while idle")?;
    }
    let idle = measure(&lab.client, None)?;
    let memory_before = memory_kib(pid)?;
    let counters_before = lab.counters()?;
    let metrics_before = lab.metrics()?;

    // The flood, and the same measurement while it runs.
    let progress = FloodProgress::default();
    let (report, during) = thread::scope(|scope| -> Result<(FloodReport, Measured)> {
        let generator = scope.spawn(|| {
            let report = flood(&lab.flood, burst_mac, &progress);
            progress.done.store(true, Ordering::Release);
            report
        });
        let started = Instant::now();
        while progress.sent.load(Ordering::Acquire) < MEASURE_AFTER
            && !progress.done.load(Ordering::Acquire)
            && started.elapsed() < FLOOD_TIME_CAP
        {
            thread::sleep(Duration::from_millis(1));
        }
        let measured = measure(&lab.client, Some(&progress));
        let report = generator
            .join()
            .map_err(|_| anyhow::anyhow!("the flood generator panicked"))??;
        Ok((report, measured?))
    })?;

    // Let the daemon work off what the rings still hold, then look at it.
    let settle = Instant::now();
    let mut counters_after = lab.counters()?;
    while settle.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(200));
        let now = lab.counters()?;
        let stable = now == counters_after;
        counters_after = now;
        if stable {
            break;
        }
    }
    let memory_after = memory_kib(pid)?;
    let metrics_after = lab.metrics()?;
    lab.daemon.check_running()?;
    let after = (lab.client.discover_offer()?, lab.client.request_ack()?);

    let delta = counters_after.since(&counters_before);
    let replies = metric_sum(&metrics_after, "xdpboot_dhcp_replies_total")
        - metric_sum(&metrics_before, "xdpboot_dhcp_replies_total");
    let send_failures = metric_sum(&metrics_after, "xdpboot_dhcp_send_failures_total")
        - metric_sum(&metrics_before, "xdpboot_dhcp_send_failures_total");
    let link = link_drops(&lab)?;

    let idle_offer = Latency::of(&idle.offers);
    let idle_ack = Latency::of(&idle.acks);
    let flood_offer = Latency::of(&during.offers);
    let flood_ack = Latency::of(&during.acks);
    let discover_verdicts = delta.get("teed") + delta.get("ring_full") + delta.get("shed");
    println!(
        "\n### DHCP flood (tests/flood.rs)\n\n\
         flood: {} DISCOVERs sent in {:.2} s ({:.0}/s, sendmmsg × {SEND_BATCH}, pinned to CPU \
         {:?}, nice 19: {}{}), {} of them from one MAC in {:.1} ms; {} sendmmsg calls retried\n\
         XDP counters: teed +{}, ring_full +{}, shed +{}, taken +{}, passed +{}, dhcp_passed \
         +{}, malformed +{}; teed+ring_full+shed = {} ({:.2}% of sent)\n\
         links: {link}\n\
         daemon: replies +{replies}, send failures +{send_failures}; VmRSS {} → {} KiB, VmHWM \
         {} → {} KiB\n\n\
         | legit client (inventory MAC) | samples | lost | p50 | p99 | max |\n\
         |---|---|---|---|---|---|\n\
         | DISCOVER→OFFER idle | {} | {} | {} | {} | {} |\n\
         | DISCOVER→OFFER flood | {} | {} | {} | {} | {} |\n\
         | REQUEST→ACK idle | {} | {} | {} | {} | {} |\n\
         | REQUEST→ACK flood | {} | {} | {} | {} | {} |\n\
         ({} of the flood exchanges ended while the flood was being sent)\n",
        report.sent,
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.pinned_cpu,
        report.niced,
        if report.stopped_by_cap {
            ", stopped by the time cap"
        } else {
            ""
        },
        report.burst_sent,
        report.burst_time.as_secs_f64() * 1e3,
        report.send_errors,
        delta.get("teed"),
        delta.get("ring_full"),
        delta.get("shed"),
        delta.get("taken"),
        delta.get("passed"),
        delta.get("dhcp_passed"),
        delta.get("malformed"),
        discover_verdicts,
        discover_verdicts as f64 * 100.0 / report.sent.max(1) as f64,
        memory_before.0,
        memory_after.0,
        memory_before.1,
        memory_after.1,
        idle_offer.answered,
        idle_offer.lost,
        us(idle_offer.p50),
        us(idle_offer.p99),
        us(idle_offer.max),
        flood_offer.answered,
        flood_offer.lost,
        us(flood_offer.p50),
        us(flood_offer.p99),
        us(flood_offer.max),
        idle_ack.answered,
        idle_ack.lost,
        us(idle_ack.p50),
        us(idle_ack.p99),
        us(idle_ack.max),
        flood_ack.answered,
        flood_ack.lost,
        us(flood_ack.p50),
        us(flood_ack.p99),
        us(flood_ack.max),
        during.during_flood,
    );

    // Nothing crashed, and the daemon still answers.
    lab.daemon.check_running()?;
    ensure!(
        after.0.is_some() && after.1.is_some(),
        "the daemon no longer answers after the flood: {after:?}"
    );
    ensure!(
        report.sent == FLOOD_PACKETS,
        "the generator sent only {} DISCOVERs in {FLOOD_TIME_CAP:?}",
        report.sent
    );
    // The legitimate client is in the inventory: none of its requests is lost, idle or not.
    for (what, latency) in [
        ("idle DISCOVER", idle_offer),
        ("idle REQUEST", idle_ack),
        ("DISCOVER under the flood", flood_offer),
        ("REQUEST under the flood", flood_ack),
    ] {
        ensure!(
            latency.lost == 0,
            "{} of the client's {what}s went unanswered",
            latency.lost
        );
    }
    ensure!(
        during.during_flood >= SAMPLES,
        "only {} exchanges happened under the flood: it ended too soon to measure",
        during.during_flood
    );
    // The one-MAC burst was shed, beyond its bucket (shed_burst, refilled at shed_rate); the
    // random MACs, each with a full bucket, never are.
    let burst_allowance = SHED_BURST + SHED_RATE * (report.burst_time.as_secs() + 1);
    ensure!(
        delta.get("shed") > 0 && delta.get("shed") <= report.burst_sent,
        "shed +{} for a burst of {} from one MAC",
        delta.get("shed"),
        report.burst_sent
    );
    ensure!(
        delta.get("shed") + burst_allowance + link.lost_in_transit >= report.burst_sent,
        "shed +{} for a burst of {} from one MAC (allowance {burst_allowance})",
        delta.get("shed"),
        report.burst_sent
    );
    // Every DISCOVER that reached the server's XDP program got a verdict: teed, ring_full or
    // shed (plus the client's own, teed). What is missing was dropped on the way, and the links
    // say so.
    let client_discovers = (WARMUP + idle.offers.len() + during.offers.len() + 1) as u64;
    let flood_verdicts = discover_verdicts.saturating_sub(client_discovers);
    ensure!(
        flood_verdicts + link.lost_in_transit >= report.sent * 99 / 100
            && flood_verdicts <= report.sent,
        "the counters do not account for the flood: {flood_verdicts} verdicts, {} lost in \
         transit, {} sent",
        link.lost_in_transit,
        report.sent
    );
    // Memory stays bounded: the daemon's tables are bounded (node table, buckets in the
    // kernel), so a million MACs must not grow it.
    let (rss_before, _) = memory_before;
    let (_, hwm_after) = memory_after;
    ensure!(
        hwm_after <= 2 * rss_before + 16 * 1024,
        "the daemon's peak RSS grew from {rss_before} KiB to {hwm_after} KiB"
    );
    // Issue 7: the client's p99 under the flood within twice its idle p99. On a quiet machine
    // the idle p99 can be a few tens of µs, where twice it is inside the jitter the flood's
    // own receive work adds to any wake-up on these two cores (a NAPI poll of 64 frames runs
    // before the client's frame whoever answers it): the bound is never tighter than
    // `FLOOD_JITTER` over the idle p99. A starved client is milliseconds late, or lost.
    for (what, idle, flood) in [
        ("DISCOVER→OFFER", idle_offer, flood_offer),
        ("REQUEST→ACK", idle_ack, flood_ack),
    ] {
        let bound = (2 * idle.p99).max(idle.p99 + FLOOD_JITTER);
        ensure!(
            flood.p99 <= bound,
            "{what} p99 under the flood is {} against {} idle (bound {}: twice idle, or \
             idle + {})",
            us(flood.p99),
            us(idle.p99),
            us(bound),
            us(FLOOD_JITTER)
        );
    }
    Ok(())
}

/// The sum of every sample of the counter `name` (all label sets) in an OpenMetrics text.
fn metric_sum(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Where the flood's frames went missing between the generator and the XDP program.
#[derive(Debug, Default)]
struct LinkDrops {
    /// The flood's eth0 (tx_dropped), the bridge ports (rx/tx dropped) and the server's eth0
    /// (rx_dropped): frames that never reached the XDP program.
    lost_in_transit: u64,
    detail: String,
}

impl std::fmt::Display for LinkDrops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} dropped in transit ({})",
            self.lost_in_transit, self.detail
        )
    }
}

fn link_drops(lab: &FloodLan) -> Result<LinkDrops> {
    let mut drops = LinkDrops::default();
    let mut detail = Vec::new();
    for (ns, iface, keys) in [
        (&lab.flood, "eth0", &["tx_dropped"][..]),
        (&lab.lan, "flood", &["rx_dropped"][..]),
        (&lab.lan, "boot", &["tx_dropped"][..]),
        (&lab.boot, "eth0", &["rx_dropped"][..]),
    ] {
        let stats = link_stats(ns, iface)?;
        for key in keys {
            let n = stats.get(*key).copied().unwrap_or(0);
            drops.lost_in_transit += n;
            detail.push(format!("{iface} {key} {n}"));
        }
    }
    let legit = link_stats(&lab.legit, "eth0")?;
    detail.push(format!(
        "legit eth0 rx {} rx_dropped {}",
        legit.get("rx_packets").copied().unwrap_or(0),
        legit.get("rx_dropped").copied().unwrap_or(0)
    ));
    drops.detail = detail.join(", ");
    Ok(drops)
}

/// `ip -s link show dev IFACE` as name → value (rx_packets, rx_dropped, tx_packets, tx_dropped).
fn link_stats(ns: &NetNs, iface: &str) -> Result<std::collections::BTreeMap<String, u64>> {
    let json = ns.ip(&format!("-s -j link show dev {iface}"))?;
    let value: serde_json::Value = serde_json::from_str(&json)?;
    let stats = &value[0]["stats64"];
    let mut out = std::collections::BTreeMap::new();
    for dir in ["rx", "tx"] {
        for key in ["packets", "dropped"] {
            let Some(n) = stats[dir][key].as_u64() else {
                bail!("no {dir}.{key} for {iface}: {json}");
            };
            out.insert(format!("{dir}_{key}"), n);
        }
    }
    Ok(out)
}
