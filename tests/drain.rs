//! Stopping xdpboot: SIGTERM refuses new work at once and lets the TFTP transfers and HTTP
//! responses in flight finish within `[server] drain_secs`, then cuts what is left and exits.
//!
//! A client namespace reaches xdpboot (UDP backend) across a veth. Its clients are slow on
//! purpose, so the transfers are still running when the signal comes: the HTTP client reads a
//! large file through a small receive window and stops reading until the test lets it go on;
//! the TFTP client fetches a loader in lockstep and waits before each ACK.
//!
//! Needs root and iproute2.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use boot_tests::{Daemon, NetNs, TempDir, veth};
use nix::sys::signal::Signal;
use socket2::{Domain, Protocol, Socket, Type};

/// xdpboot's address, and the client's.
const BOOT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const HTTP_PORT: u16 = 8080;
const TFTP_PORT: u16 = 69;
/// Served over HTTP: far more than the socket buffers on both ends hold, so the server is
/// still sending its body while the client holds back.
const IMAGE: &str = "image.bin";
const IMAGE_LEN: usize = 32 * 1024 * 1024;
/// The HTTP client's receive buffer: a small window keeps the server from running ahead.
const CLIENT_RECEIVE_BUFFER: usize = 64 * 1024;
/// What the HTTP client reads before it holds back.
const HTTP_FIRST_PART: usize = 256 * 1024;
/// The HTTP client's reads.
const HTTP_CHUNK: usize = 64 * 1024;
/// Served over TFTP: 64 blocks and a short last one at RFC 1350's 512 bytes per block.
const LOADER: &str = "undionly.kpxe";
const LOADER_LEN: usize = 64 * 512 + 100;
const BLOCK: usize = 512;
/// Blocks the TFTP client has before the test stops xdpboot.
const TFTP_BLOCKS_BEFORE_STOP: u16 = 8;
/// How long the TFTP client waits for a DATA packet before it gives up.
const TFTP_RECEIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Slack on top of the drain bound for xdpboot to exit (and for this test to see it).
const EXIT_SLACK: Duration = Duration::from_secs(1);
/// How long xdpboot may take to bind its ports, and to log what it does.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a dropped TFTP request is listened after, to show that nothing comes.
const SILENCE: Duration = Duration::from_millis(500);
/// The log lines that start and end a drain.
const DRAIN_STARTS: &str = "stopping: new work refused, draining the transfers in flight";
const DRAIN_ENDS: &str = " drained ";

/// Bytes that differ from one position to the next, so a lost or misplaced block shows.
fn contents(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// xdpboot (198.18.0.1) and one client (198.18.0.10) on a veth, xdpboot serving with
/// `drain_secs` as its bound. Fields drop in order: the daemon first, then the namespaces, then
/// the files.
struct Lab {
    daemon: Daemon,
    client: NetNs,
    _boot: NetNs,
    _dir: TempDir,
    drain: Duration,
}

impl Lab {
    fn start(drain_secs: u64) -> Result<Lab> {
        let dir = TempDir::new("drain")?;
        let root = dir.join("root");
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join(IMAGE), contents(IMAGE_LEN))?;
        std::fs::write(root.join(LOADER), contents(LOADER_LEN))?;
        let config = dir.join("xdpboot.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\ndrain_secs = {drain_secs}\n\n[tftp]\nroot = \"{root}\"\n\n\
                 [http]\nroot = \"{root}\"\nport = {HTTP_PORT}\nhttps_port = 0\n\n\
                 [boot]\nsecret_file = \"{secret}\"\n",
                root = root.display(),
                secret = dir.join("url-secret").display(),
            ),
        )?;
        let boot = NetNs::new("boot")?;
        let client = NetNs::new("client")?;
        veth(&boot, "eth0", &client, "eth0")?;
        boot.add_address("eth0", &format!("{BOOT}/24"))?;
        client.add_address("eth0", &format!("{CLIENT}/24"))?;
        let mut daemon = Daemon::start(&boot, &["eth0"], &config, dir.join("xdpboot.log"))?;
        // Ports 67 and 4011 are bound first; TFTP and HTTP follow.
        daemon
            .child
            .wait_until("serving TFTP and HTTP", READY_TIMEOUT, || {
                Ok(boot.udp_sockets_on(TFTP_PORT)? > 0
                    && client
                        .run(|| Ok(TcpStream::connect((BOOT, HTTP_PORT)).is_ok()))
                        .unwrap_or(false))
            })?;
        Ok(Lab {
            daemon,
            client,
            _boot: boot,
            _dir: dir,
            drain: Duration::from_secs(drain_secs),
        })
    }

    /// Sends SIGTERM (or SIGINT) and returns when it was sent.
    fn stop(&self, signal: Signal) -> Result<Instant> {
        let at = Instant::now();
        self.daemon.child.signal(signal)?;
        Ok(at)
    }

    /// The first log line containing `what`, once there is one.
    fn log_line(&self, what: &str) -> Result<String> {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            if let Some(line) = self.daemon.log().lines().find(|l| l.contains(what)) {
                return Ok(line.to_owned());
            }
            ensure!(
                Instant::now() < deadline,
                "xdpboot did not log {what:?} within {LOG_TIMEOUT:?}; its log:\n{}",
                self.daemon.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for xdpboot to exit, at most `within` after `stopped`; fails if it exits
    /// unsuccessfully. Returns how long after `stopped` it was gone.
    fn wait_exit(&mut self, stopped: Instant, within: Duration) -> Result<Duration> {
        let deadline = stopped + within;
        let status = self
            .daemon
            .child
            .wait_exit(deadline.saturating_duration_since(Instant::now()))?;
        ensure!(
            status.success(),
            "xdpboot exited with {status}; its log:\n{}",
            self.daemon.log()
        );
        Ok(stopped.elapsed())
    }

    /// A TCP connection to xdpboot's HTTP port from the client, through a small receive window.
    fn connect_http(&self) -> Result<TcpStream> {
        self.client.run(|| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            // Before connecting: the window scale is agreed in the handshake.
            socket.set_recv_buffer_size(CLIENT_RECEIVE_BUFFER)?;
            socket.connect(&SocketAddr::from((BOOT, HTTP_PORT)).into())?;
            Ok(TcpStream::from(socket))
        })
    }

    /// A UDP socket of the client's for one TFTP transfer (its port is the client's TID).
    fn tftp_socket(&self) -> Result<UdpSocket> {
        self.client.run(|| {
            let socket = UdpSocket::bind((CLIENT, 0))?;
            socket.set_read_timeout(Some(TFTP_RECEIVE_TIMEOUT))?;
            Ok(socket)
        })
    }
}

/// A download of [`IMAGE`] over one HTTP/1.1 connection, read at the test's pace.
struct HttpDownload {
    stream: TcpStream,
    body: Vec<u8>,
    len: usize,
}

impl HttpDownload {
    /// Sends the request and reads the response head and the first `first` body bytes.
    fn start(stream: TcpStream, first: usize) -> Result<HttpDownload> {
        let mut stream = stream;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /{IMAGE} HTTP/1.1\r\nHost: {BOOT}:{HTTP_PORT}\r\nUser-Agent: drain-test\r\n\r\n"
        )?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            ensure!(head.len() < 16 * 1024, "no end to the response head");
            stream
                .read_exact(&mut byte)
                .context("reading the response head")?;
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        ensure!(
            head.starts_with("HTTP/1.1 200"),
            "not a 200 response: {head}"
        );
        let len = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .with_context(|| format!("no Content-Length in {head}"))?;
        ensure!(len == IMAGE_LEN, "Content-Length {len}, not {IMAGE_LEN}");
        let mut download = HttpDownload {
            stream,
            body: Vec::with_capacity(len),
            len,
        };
        download.read(first)?;
        Ok(download)
    }

    /// Reads up to `n` more body bytes. Stops early at the end of the connection; returns
    /// whether it was cut short that way.
    fn read(&mut self, n: usize) -> Result<bool> {
        let until = (self.body.len() + n).min(self.len);
        let mut chunk = vec![0u8; HTTP_CHUNK];
        while self.body.len() < until {
            let want = (until - self.body.len()).min(HTTP_CHUNK);
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => return Ok(true),
                Ok(got) => self.body.extend_from_slice(&chunk[..got]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(true),
                Err(e) => return Err(e).context("reading the body"),
            }
        }
        Ok(false)
    }
}

/// Fetches [`LOADER`] over TFTP in lockstep (RFC 1350: 512-byte blocks, one in flight), waiting
/// `pace` before each ACK, as a slow PXE ROM would. Tells `in_flight` once it has
/// [`TFTP_BLOCKS_BEFORE_STOP`] blocks. Returns the bytes it got, complete or not: a transfer
/// cut short ends when no DATA comes for [`TFTP_RECEIVE_TIMEOUT`].
fn tftp_fetch(socket: UdpSocket, pace: Duration, in_flight: mpsc::Sender<()>) -> Result<Vec<u8>> {
    let server = SocketAddrV4::new(BOOT, TFTP_PORT);
    socket.send_to(&read_request(LOADER), server)?;
    let mut file = Vec::new();
    let mut expected: u16 = 1;
    let mut packet = [0u8; 4 + BLOCK];
    loop {
        let (len, from) = match socket.recv_from(&mut packet) {
            Ok(received) => received,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(file);
            }
            Err(e) => return Err(e).context("receiving TFTP DATA"),
        };
        let opcode = u16::from_be_bytes([packet[0], packet[1]]);
        ensure!(
            len >= 4 && opcode == 3,
            "not a DATA packet: {:?}",
            &packet[..len]
        );
        let block = u16::from_be_bytes([packet[2], packet[3]]);
        if block != expected {
            // A retransmission of a block already had: its ACK was sent.
            continue;
        }
        file.extend_from_slice(&packet[4..len]);
        if block == TFTP_BLOCKS_BEFORE_STOP {
            let _ = in_flight.send(());
        }
        thread::sleep(pace);
        let mut ack = vec![0, 4];
        ack.extend_from_slice(&block.to_be_bytes());
        socket.send_to(&ack, from)?;
        if len < 4 + BLOCK {
            return Ok(file);
        }
        expected = expected.wrapping_add(1);
    }
}

/// An RFC 1350 read request for `file` in octet mode, without options.
fn read_request(file: &str) -> Vec<u8> {
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(file.as_bytes());
    rrq.push(0);
    rrq.extend_from_slice(b"octet\0");
    rrq
}

/// Starts a TFTP fetch at `pace` on a thread and waits until it is under way.
fn tftp_in_flight(lab: &Lab, pace: Duration) -> Result<thread::JoinHandle<Result<Vec<u8>>>> {
    let socket = lab.tftp_socket()?;
    let (in_flight, under_way) = mpsc::channel();
    let fetch = thread::spawn(move || tftp_fetch(socket, pace, in_flight));
    if under_way.recv_timeout(READY_TIMEOUT).is_err() {
        let result = fetch.join();
        bail!(
            "the TFTP transfer did not get under way: {result:?}; xdpboot's log:\n{}",
            lab.daemon.log()
        );
    }
    Ok(fetch)
}

#[test]
fn sigterm_refuses_new_work_and_lets_transfers_in_flight_finish() -> Result<()> {
    // Everything here is done well within the bound, so xdpboot exits before it.
    let mut lab = Lab::start(5)?;
    let mut download = HttpDownload::start(lab.connect_http()?, HTTP_FIRST_PART)?;
    // 64 blocks at 20 ms: about 1.3 s in all, 1.1 s of it after the stop.
    let fetch = tftp_in_flight(&lab, Duration::from_millis(20))?;

    let stopped = lab.stop(Signal::SIGTERM)?;
    let started = lab.log_line(DRAIN_STARTS)?;
    ensure!(
        started.contains("tftp_transfers=1") && started.contains("http_connections=1"),
        "the drain did not count one transfer of each kind: {started}"
    );
    // The listener is closed before the drain starts: a new connection is refused.
    match lab.connect_http() {
        Err(e)
            if e.downcast_ref::<std::io::Error>().map(|e| e.kind())
                == Some(ErrorKind::ConnectionRefused) => {}
        other => bail!("a new HTTP connection during the drain was not refused: {other:?}"),
    }
    // And a new TFTP request goes unanswered (firmware retransmits it to the next xdpboot).
    let late = lab.tftp_socket()?;
    late.set_read_timeout(Some(SILENCE))?;
    late.send_to(&read_request(LOADER), SocketAddrV4::new(BOOT, TFTP_PORT))?;
    let mut reply = [0u8; 4 + BLOCK];
    ensure!(
        late.recv_from(&mut reply).is_err(),
        "a new TFTP request during the drain was answered"
    );

    // The transfers in flight finish in full.
    let cut_short = download.read(IMAGE_LEN)?;
    ensure!(
        !cut_short && download.body == contents(IMAGE_LEN),
        "the HTTP body in flight was not delivered in full: {} of {IMAGE_LEN} bytes",
        download.body.len()
    );
    let loader = fetch.join().expect("the TFTP client thread")?;
    ensure!(
        loader == contents(LOADER_LEN),
        "the TFTP transfer in flight was not completed: {} of {LOADER_LEN} bytes",
        loader.len()
    );

    let took = lab.wait_exit(stopped, lab.drain + EXIT_SLACK)?;
    let ended = lab.log_line(DRAIN_ENDS)?;
    ensure!(
        ended.contains("finished=2") && ended.contains("cut=0"),
        "the drain did not end with both transfers finished: {ended}"
    );
    eprintln!("xdpboot exited {took:?} after SIGTERM:\n{started}\n{ended}");
    Ok(())
}

#[test]
fn transfers_that_outlast_the_drain_bound_are_cut() -> Result<()> {
    let mut lab = Lab::start(2)?;
    let mut download = HttpDownload::start(lab.connect_http()?, HTTP_FIRST_PART)?;
    // 64 blocks at 300 ms: about 20 s, far beyond the bound.
    let fetch = tftp_in_flight(&lab, Duration::from_millis(300))?;

    let stopped = lab.stop(Signal::SIGTERM)?;
    lab.log_line(DRAIN_STARTS)?;
    // The HTTP client does not read on: its response cannot finish.
    let took = lab.wait_exit(stopped, lab.drain + EXIT_SLACK)?;
    ensure!(
        took >= lab.drain,
        "xdpboot exited {took:?} after SIGTERM, before its drain bound of {:?}",
        lab.drain
    );
    let ended = lab.log_line(DRAIN_ENDS)?;
    ensure!(
        ended.contains("finished=0") && ended.contains("cut=2"),
        "the drain did not say both transfers were cut: {ended}"
    );
    ensure!(
        ended.contains("bound reached"),
        "the drain did not end at its bound: {ended}"
    );

    // Both clients see their transfer end short.
    let cut_short = download.read(IMAGE_LEN)?;
    ensure!(
        cut_short && download.body.len() < IMAGE_LEN,
        "the HTTP body was not cut: {} of {IMAGE_LEN} bytes",
        download.body.len()
    );
    let loader = fetch.join().expect("the TFTP client thread")?;
    ensure!(
        loader.len() < LOADER_LEN,
        "the TFTP transfer was not cut: {} of {LOADER_LEN} bytes",
        loader.len()
    );
    Ok(())
}

#[test]
fn a_second_signal_during_the_drain_stops_at_once() -> Result<()> {
    // A bound far longer than this test may take: only the second signal can end it in time.
    let mut lab = Lab::start(60)?;
    let _download = HttpDownload::start(lab.connect_http()?, HTTP_FIRST_PART)?;

    lab.stop(Signal::SIGTERM)?;
    lab.log_line(DRAIN_STARTS)?;
    let again = lab.stop(Signal::SIGINT)?;
    let took = lab.wait_exit(again, EXIT_SLACK)?;
    let ended = lab.log_line(DRAIN_ENDS)?;
    ensure!(
        ended.contains("cut=1") && ended.contains("SIGINT"),
        "the drain did not say the second signal cut the transfer: {ended}"
    );
    eprintln!("xdpboot exited {took:?} after the second signal");
    Ok(())
}
