//! The TFTP server's I/O edge: the server port, a task per transfer for its setup and log
//! line, and limits. The protocol itself is in [`super::request`] (what the port answers) and
//! [`super::session`] (a transfer); the transfers' packets are exchanged by one task for all
//! of them, [`super::transfers`].
//!
//! - One socket on `0.0.0.0:<port>` with IP_PKTINFO receives requests, and with `[ipv6]` on, one
//!   on `[::]:<port>` with IPV6_RECVPKTINFO (EDK2's PXEv6 fetches its loader from the host of
//!   its `tftp://[addr]/file` URL); each tells us the interface it came in on (only served
//!   interfaces are answered; others are ignored without a reply) and the address it was sent
//!   to.
//! - Each accepted read request gets a new socket bound to our address on that interface with
//!   an ephemeral port: the server's transfer ID (RFC 1350 §4). The socket is not connected,
//!   so packets from another port reach the session and are answered with ERROR 5.
//! - Each transfer is one tokio task that opens the file, hands the session and its socket to
//!   the transfers' driver, waits for the outcome and logs it. One client's loss or silence
//!   only ever waits on its own deadline. Aborting [`TftpServer::serve`] ends them all.
//! - [`TftpServer::serve_until`] stops taking requests when told to and hands back the
//!   transfers still running ([`Draining`]), for the daemon to let finish within its bound.
//!   New requests are then dropped, not refused, for the reason below: a stop is most often
//!   a restart, and the firmware's retransmitted request reaches the new process.
//! - At most `max_transfers` run at once. Requests beyond that are dropped without an answer:
//!   PXE firmware retransmits its RRQ (with back-off) and is served when a slot frees, whereas
//!   an ERROR would abort its boot. A retransmitted RRQ from a client whose transfer is already
//!   running is dropped likewise, so it never gets two transfers.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::files::{FileCache, FileError, Generated, Generator};
use super::options::{self, Limits, MAX_WINDOWSIZE};
use super::packet::{self, MAX_REQUEST_LEN};
use super::request::{self, ReadRequest, Screened};
use super::session::{Session, SessionLimits};
use super::stats::TftpStats;
use super::transfers::{Handoff, NewTransfer, Transfers};
use crate::events::{Sink, TftpTransfer};
use crate::loaders::LoaderSearch;
use crate::net::iface::Interfaces;
use crate::net::{udp, udp6};

/// Concurrent transfers allowed by default: far more than a rack boots at once, and at most a
/// few hundred MB of buffers even at the largest block size.
pub const DEFAULT_MAX_TRANSFERS: usize = 4096;
/// Retransmissions in a row before a silent client is given up on: with the default 1 s
/// timeout, a client is cut off after 6 s of silence.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// The longest a transfer may take. A 1 MiB loader at 512-byte blocks is 2048 round trips:
/// even at 100 ms each that is under 4 minutes.
pub const DEFAULT_TRANSFER_TIME_LIMIT: Duration = Duration::from_secs(600);
/// The server port's socket receive buffer, asked for (see [`TftpServer::bind`]).
const REQUEST_RECEIVE_BUFFER: usize = 1024 * 1024;
/// Datagrams the server port handles before letting other work run.
const MAX_REQUESTS_PER_WAKEUP: usize = 64;
/// At most one warning per this interval while requests are dropped for lack of slots.
const BUSY_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The TFTP server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpConfig {
    pub root: PathBuf,
    pub port: u16,
    pub max_transfers: usize,
    pub max_retries: u32,
    pub transfer_time_limit: Duration,
    /// Where known loaders missing from `root` are found (the `ipxe` package).
    pub loaders: LoaderSearch,
    /// Listen on IPv6 as well (`[ipv6] enabled`).
    pub ipv6: bool,
}

impl TftpConfig {
    /// `root` and `port` with the default limits.
    pub fn new(root: PathBuf, port: u16) -> TftpConfig {
        TftpConfig {
            root,
            port,
            max_transfers: DEFAULT_MAX_TRANSFERS,
            max_retries: DEFAULT_MAX_RETRIES,
            transfer_time_limit: DEFAULT_TRANSFER_TIME_LIMIT,
            loaders: LoaderSearch::default(),
            ipv6: false,
        }
    }
}

impl From<&crate::config::Tftp> for TftpConfig {
    fn from(config: &crate::config::Tftp) -> TftpConfig {
        TftpConfig {
            root: config.root.clone(),
            port: config.port,
            max_transfers: config.max_transfers,
            max_retries: config.max_retries,
            transfer_time_limit: config.transfer_time_limit,
            loaders: LoaderSearch::default(),
            ipv6: false,
        }
    }
}

/// Errors setting up or running the TFTP server.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error(
        "UDP port {port} is already held by another TFTP server (tftpd-hpa, atftpd, or dnsmasq \
         with --enable-tftp): stop it, or give xdpboot another [tftp] port"
    )]
    PortInUse { port: u16 },
    #[error("binding UDP port {port}: {source}")]
    Bind { port: u16, source: io::Error },
    #[error("TFTP port {port}: {source}")]
    Io { port: u16, source: io::Error },
}

/// A bound TFTP server; [`TftpServer::serve`] runs it.
pub struct TftpServer {
    socket: AsyncFd<Socket>,
    /// `[::]:<port>`, with `[ipv6]` on.
    socket6: Option<AsyncFd<Socket>>,
    port: u16,
    shared: Arc<Shared>,
}

/// What the server port and the transfer tasks share.
struct Shared {
    config: TftpConfig,
    interfaces: Arc<Interfaces>,
    served: Vec<String>,
    files: FileCache,
    stats: Arc<TftpStats>,
    /// Transfers running, by client (address and port) and file: a retransmitted RRQ is one of
    /// them, while the next file a client asks for from the same port is not (PXELINUX and
    /// GRUB ask for one config name after another from one port, the next RRQ leaving as soon
    /// as the last ERROR or ACK arrives, possibly before this side has let go of the last one).
    active: Mutex<HashSet<(SocketAddr, Box<str>)>>,
    last_busy_warning: Mutex<Option<Instant>>,
    /// Told of every transfer's end; `None` when the admin side is off.
    observer: Sink,
    /// Makes the per-node files that are not in the root; `None` serves the root only.
    generator: Option<Arc<dyn Generator>>,
}

impl TftpServer {
    /// Binds `0.0.0.0:<config.port>` (0: an ephemeral port, for tests) and answers requests
    /// arriving on the interfaces named in `served`, looked up in `interfaces`.
    pub fn bind(
        config: TftpConfig,
        interfaces: Arc<Interfaces>,
        served: Vec<String>,
    ) -> Result<TftpServer, TftpError> {
        let port = config.port;
        let io = |source| TftpError::Io { port, source };
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(io)?;
        socket.set_nonblocking(true).map_err(io)?;
        // A rack powering on sends its requests at once; the default buffer (about 200 small
        // datagrams) would drop part of such a burst. The kernel caps this at
        // net.core.rmem_max; dropped requests are retransmitted by the firmware anyway.
        let _ = socket.set_recv_buffer_size(REQUEST_RECEIVE_BUFFER);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
            .map_err(|e| io(e.into()))?;
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        socket.bind(&addr.into()).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                TftpError::PortInUse { port }
            } else {
                TftpError::Bind { port, source }
            }
        })?;
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or(port, |a| a.port());
        let socket = crate::net::register(socket).map_err(io)?;
        let socket6 = if config.ipv6 {
            Some(bind6(port)?)
        } else {
            None
        };
        let files = FileCache::new(&config.root, config.loaders.clone());
        Ok(TftpServer {
            socket,
            socket6,
            port,
            shared: Arc::new(Shared {
                config,
                interfaces,
                served,
                files,
                stats: Arc::new(TftpStats::default()),
                active: Mutex::new(HashSet::new()),
                last_busy_warning: Mutex::new(None),
                observer: None,
                generator: None,
            }),
        })
    }

    /// Reports every transfer to `observer` too. Call before `serve`.
    pub fn with_observer(mut self, observer: Sink) -> TftpServer {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.observer = observer;
        }
        self
    }

    /// Serves the files `generator` makes (per-node configs, boot files) for names the root
    /// does not have. Call before `serve`.
    pub fn with_generator(mut self, generator: Arc<dyn Generator>) -> TftpServer {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.generator = Some(generator);
        }
        self
    }

    /// The bound port (the ephemeral one when configured with 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's counters, to read while it runs.
    pub fn stats(&self) -> Arc<TftpStats> {
        self.shared.stats.clone()
    }

    /// Serves until the server socket fails. Dropping the future ends every transfer.
    pub async fn serve(self) -> Result<(), TftpError> {
        // Held for as long as the future lives, so the stop never comes.
        let (_never, shutdown) = watch::channel(false);
        self.serve_until(shutdown).await.map(drop)
    }

    /// Serves until `shutdown` turns true (or its sender is dropped), then returns at once with
    /// the transfers still running. Fails if the server socket fails; dropping the future ends
    /// every transfer.
    pub async fn serve_until(
        self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Draining, TftpError> {
        let port = self.port;
        let (driver, queue) =
            Transfers::start().map_err(|source| TftpError::Io { port, source })?;
        let mut transfers = JoinSet::new();
        let mut buf = vec![0u8; MAX_REQUEST_LEN + 1];
        loop {
            tokio::select! {
                // A stop is seen before another batch of requests is taken.
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                ready = self.socket.readable() => {
                    let mut guard = ready.map_err(|source| TftpError::Io { port, source })?;
                    // A bounded batch per wakeup, so a flood of requests cannot keep this task
                    // from reaping finished transfers (or, on a one-thread runtime, starve them).
                    for _ in 0..MAX_REQUESTS_PER_WAKEUP {
                        match udp::receive(guard.get_inner(), &mut buf) {
                            Ok(Some(datagram)) => {
                                let bytes = buf.get(..datagram.len).unwrap_or_default();
                                let arrived = Arrived {
                                    source: datagram.source.into(),
                                    destination: datagram.destination.into(),
                                    ifindex: datagram.ifindex,
                                };
                                self.on_request(&arrived, bytes, self.socket.get_ref(), &queue, &mut transfers);
                            }
                            Ok(None) => {
                                guard.clear_ready();
                                break;
                            }
                            Err(e) => {
                                // One bad datagram must not stop the server.
                                tracing::debug!(port, error = %e, "tftp recvmsg failed");
                            }
                        }
                    }
                }
                Some(ready) = readable(self.socket6.as_ref()) => {
                    let mut guard = ready.map_err(|source| TftpError::Io { port, source })?;
                    for _ in 0..MAX_REQUESTS_PER_WAKEUP {
                        match udp6::receive6(guard.get_inner(), &mut buf) {
                            Ok(Some(datagram)) => {
                                let bytes = buf.get(..datagram.len).unwrap_or_default();
                                let arrived = Arrived {
                                    source: datagram.source.into(),
                                    destination: datagram.destination.into(),
                                    ifindex: datagram.ifindex,
                                };
                                self.on_request(&arrived, bytes, guard.get_inner(), &queue, &mut transfers);
                            }
                            Ok(None) => {
                                guard.clear_ready();
                                break;
                            }
                            Err(e) => {
                                tracing::debug!(port, error = %e, "tftp recvmsg (IPv6) failed");
                            }
                        }
                    }
                }
                Some(done) = transfers.join_next() => {
                    if let Err(e) = done && e.is_panic() {
                        tracing::error!(error = %e, "a TFTP transfer task panicked");
                    }
                }
            }
        }
        Ok(Draining {
            transfers,
            _driver: driver,
            _port: self.socket,
            _port6: self.socket6,
        })
    }

    fn on_request(
        &self,
        datagram: &Arrived,
        bytes: &[u8],
        socket: &Socket,
        queue: &Handoff,
        transfers: &mut JoinSet<()>,
    ) {
        let shared = &self.shared;
        let table = shared.interfaces.snapshot();
        let Some(iface) = table
            .get(datagram.ifindex)
            .filter(|i| shared.served.contains(&i.name))
        else {
            shared.stats.count("dropped", "not_served");
            return;
        };
        // Our address the transfer's socket is bound to: the one the request reached.
        let local: Option<SocketAddr> = match datagram.destination {
            IpAddr::V4(destination) => iface
                .server_address(destination, Ipv4Addr::UNSPECIFIED)
                .map(|a| (a, 0).into()),
            IpAddr::V6(destination) => iface.has_address6(destination).then(|| {
                let scope = if destination.is_unicast_link_local() {
                    datagram.ifindex
                } else {
                    0
                };
                SocketAddrV6::new(destination, 0, 0, scope).into()
            }),
        };
        let Some(local) = local else {
            shared.stats.count("dropped", "no_address");
            return;
        };
        let client = datagram.source;
        let bad_source = match client.ip() {
            IpAddr::V4(ip) => ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast(),
            IpAddr::V6(ip) => ip.is_unspecified() || ip.is_multicast(),
        };
        if client.port() == 0 || bad_source {
            shared.stats.count("dropped", "bad_source");
            return;
        }
        match request::screen(bytes) {
            Screened::Drop { reason } => {
                shared.stats.count("dropped", reason);
                tracing::debug!(%client, reason, "tftp datagram dropped");
            }
            Screened::Refuse {
                code,
                message,
                reason,
                name,
            } => {
                shared.stats.count("refused", reason);
                tracing::info!(
                    %client,
                    iface = %iface.name,
                    file = name.unwrap_or_default(),
                    outcome = reason,
                    error = code.number(),
                    "tftp request refused"
                );
                let mut reply = Vec::new();
                packet::write_error(&mut reply, code, message);
                let sent = match (client, local.ip()) {
                    (SocketAddr::V4(to), IpAddr::V4(from)) => {
                        udp::send_from(socket, &reply, to, from, datagram.ifindex)
                    }
                    (SocketAddr::V6(to), IpAddr::V6(from)) => {
                        udp6::send_from6(socket, &reply, to, from, datagram.ifindex)
                    }
                    _ => Ok(()),
                };
                if let Err(e) = sent {
                    tracing::debug!(%client, error = %e, "sending a tftp ERROR failed");
                }
            }
            Screened::Read(request) => {
                let Some(slot) = Slot::claim(shared, client, request.path.as_str()) else {
                    return;
                };
                shared.stats.count("requests", "read");
                let limits = Limits {
                    // An IPv6 header is 20 bytes longer than IPv4's.
                    max_blksize: options::max_blksize_for_mtu(match client {
                        SocketAddr::V4(_) => iface.mtu,
                        SocketAddr::V6(_) => iface.mtu.saturating_sub(20),
                    }),
                    max_windowsize: MAX_WINDOWSIZE,
                };
                let iface = iface.name.clone();
                transfers.spawn(transfer(slot, request, iface, local, limits, queue.clone()));
            }
        }
    }
}

/// What [`TftpServer::serve_until`] hands back when told to stop: the transfers still running.
/// Dropping it ends them.
///
/// It also holds the server port, unread, until then, so a new read request meets silence (as
/// one beyond `max_transfers` does) rather than an ERROR "shutting down" or the ICMP port
/// unreachable of a closed port. Firmware takes either of those as the end of this boot attempt
/// (EDK2's `Mtftp4RrqInput` ends the session on an ERROR packet and on a receive error alike)
/// and moves on to its next boot device, not to another TFTP server: the offer named only us.
/// Silence has it retransmit the request with back-off, which the restarted xdpboot that a
/// stop most often precedes (`systemctl restart`, an upgrade) answers once it has bound the
/// port. Were none to come back, the client moves on all the same, when its retries run out or
/// meet the closed port after we exit: an ERROR would only make it give up on a restart too.
pub struct Draining {
    pub transfers: JoinSet<()>,
    /// Exchanges the transfers' packets; dropped, it ends them.
    _driver: Transfers,
    _port: AsyncFd<Socket>,
    _port6: Option<AsyncFd<Socket>>,
}

/// Where a request came from and went, over either IP version.
struct Arrived {
    source: SocketAddr,
    destination: IpAddr,
    ifindex: u32,
}

/// The IPv6 socket's readiness, or never when there is none.
async fn readable(
    socket: Option<&AsyncFd<Socket>>,
) -> Option<io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, Socket>>> {
    match socket {
        Some(socket) => Some(socket.readable().await),
        None => std::future::pending().await,
    }
}

/// `[::]:<port>` (IPv6 only: IPv4 has its own socket), with IPV6_RECVPKTINFO.
fn bind6(port: u16) -> Result<AsyncFd<Socket>, TftpError> {
    let io = |source| TftpError::Io { port, source };
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).map_err(io)?;
    socket.set_only_v6(true).map_err(io)?;
    socket.set_nonblocking(true).map_err(io)?;
    let _ = socket.set_recv_buffer_size(REQUEST_RECEIVE_BUFFER);
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::Ipv6RecvPacketInfo,
        &true,
    )
    .map_err(|e| io(e.into()))?;
    let addr = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0);
    socket.bind(&addr.into()).map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            TftpError::PortInUse { port }
        } else {
            TftpError::Bind { port, source }
        }
    })?;
    crate::net::register(socket).map_err(io)
}

/// A transfer's place among the running ones; released on drop.
struct Slot {
    shared: Arc<Shared>,
    client: SocketAddr,
    file: Box<str>,
}

impl Slot {
    /// `None` (and counted) when the client already has a transfer of this file (its RRQ
    /// retransmitted) or no slot is free.
    fn claim(shared: &Arc<Shared>, client: SocketAddr, file: &str) -> Option<Slot> {
        let key = (client, Box::<str>::from(file));
        let mut active = shared.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.contains(&key) {
            shared.stats.count("dropped", "duplicate");
            return None;
        }
        if active.len() >= shared.config.max_transfers {
            drop(active);
            shared.stats.count("dropped", "busy");
            shared.warn_busy();
            return None;
        }
        active.insert(key.clone());
        Some(Slot {
            shared: shared.clone(),
            client,
            file: key.1,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut active = self.shared.active.lock().unwrap_or_else(|p| p.into_inner());
        active.remove(&(self.client, std::mem::take(&mut self.file)));
    }
}

impl Shared {
    /// `name` from the generator, when it makes it; else not found.
    async fn generated(
        &self,
        name: &str,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<Arc<[u8]>, FileError> {
        let Some(generator) = &self.generator else {
            return Err(FileError::NotFound);
        };
        match generator.generate(name, client, local.ip()).await {
            Some(Ok(Generated::Bytes(bytes))) => Ok(bytes),
            Some(Ok(Generated::File(path))) => self.files.open_trusted(path).await,
            Some(Err(e)) => Err(e),
            None => Err(FileError::NotFound),
        }
    }

    fn observe(&self, transfer: TftpTransfer<'_>) {
        if let Some(observer) = &self.observer {
            observer.tftp_transfer(&transfer);
        }
    }

    fn warn_busy(&self) {
        let mut last = self
            .last_busy_warning
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= BUSY_WARNING_INTERVAL) {
            *last = Some(now);
            tracing::warn!(
                max_transfers = self.config.max_transfers,
                "tftp transfer limit reached: new requests are dropped until transfers finish \
                 (clients retransmit their requests)"
            );
        }
    }
}

/// One transfer: its socket and file, then the exchange (by the transfers' driver), then its
/// log line.
async fn transfer(
    slot: Slot,
    request: ReadRequest,
    iface: String,
    local: SocketAddr,
    limits: Limits,
    queue: Handoff,
) {
    let shared = slot.shared.clone();
    let client = slot.client;
    let started = Instant::now();
    let file = request.path.as_str();
    let socket = match UdpSocket::bind(local).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
        Ok(socket) => socket,
        Err(e) => {
            shared.stats.count("transfer", "socket_error");
            tracing::warn!(%client, %local, file, error = %e, "tftp transfer socket could not be bound");
            return;
        }
    };
    let opened = match shared.files.open(&request.path).await {
        Err(FileError::NotFound) => shared.generated(file, client, local).await,
        opened => opened,
    };
    let bytes = match opened {
        Ok(bytes) => bytes,
        Err(e) => {
            shared.stats.count("file", e.name());
            tracing::info!(%client, iface, file, outcome = e.name(), error = e.error_code().number(), "tftp request refused");
            shared.observe(TftpTransfer {
                client,
                interface: &iface,
                file,
                bytes: 0,
                duration: started.elapsed(),
                error: Some(e.message().to_owned()),
            });
            let mut reply = Vec::new();
            packet::write_error(&mut reply, e.error_code(), e.message());
            // Let go first: the client's next RRQ may leave the moment this ERROR arrives.
            drop(slot);
            // One small datagram on a fresh socket: its send buffer has room.
            let _ = socket.send_to(&reply, client);
            return;
        }
    };
    let negotiated = options::negotiate(&request.options, bytes.len() as u64, limits);
    let session_limits = SessionLimits {
        max_retries: shared.config.max_retries,
        time_limit: shared.config.transfer_time_limit,
    };
    let session = Session::new(client, bytes, &negotiated, session_limits, Instant::now());
    let (done, outcome) = oneshot::channel();
    let handed = queue.hand(NewTransfer {
        session,
        socket,
        done,
    });
    let outcome = match handed {
        Ok(()) => outcome.await.ok(),
        Err(_gone) => None,
    };
    let Some(outcome) = outcome else {
        // The driver is gone without a word: it panicked (when the server is torn down, this
        // task is aborted with it and never gets here).
        shared.stats.count("transfer", "driver_gone");
        tracing::error!(%client, iface, file, "tftp transfer cut: the transfers' driver stopped");
        return;
    };
    let summary = match outcome {
        Ok(summary) => summary,
        Err(e) => {
            shared.stats.count("transfer", "socket_error");
            tracing::warn!(%client, iface, file, error = %e, "tftp transfer socket failed");
            return;
        }
    };
    let outcome = match &summary.result {
        Ok(()) => "complete",
        Err(e) => e.name(),
    };
    shared.stats.count("transfer", outcome);
    shared.stats.add_bytes(summary.bytes);
    shared.stats.add_retransmits(summary.retransmits);
    let error = summary.result.as_ref().err().map(ToString::to_string);
    shared.observe(TftpTransfer {
        client,
        interface: &iface,
        file,
        bytes: summary.bytes,
        duration: started.elapsed(),
        error: error.clone(),
    });
    tracing::info!(
        %client,
        iface,
        file,
        bytes = summary.bytes,
        size = summary.file_len,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        blksize = summary.blksize,
        windowsize = summary.windowsize,
        retransmits = summary.retransmits,
        outcome,
        error,
        "tftp transfer"
    );
}
