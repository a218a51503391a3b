//! The XDP backend at work: per interface, the steering program attached, one AF_XDP socket per
//! rx queue, the rings of teed frames, and one task that answers them all. Every request, teed
//! or taken, goes through the same [`Service`] as the UDP backend; every reply is written as a
//! whole Ethernet frame (the wire layer's [`emit_udp_frame`] or, over IPv6, `emit_udp6_frame`,
//! the request's VLAN tags kept) straight into a TX frame of the queue the request came in on.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::Poll;

use boot_common::wire::ethernet::{self, VlanTags};
use boot_common::wire::frame::{
    FrameRepr, FrameRepr6, UdpFrame, UdpFrame6, emit_udp_frame, emit_udp6_frame,
};
use boot_common::wire::mac::MacAddr;
use boot_common::wire::{dhcpv6, ipv6};
use boot_common::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT, PXE_SERVER_PORT, SteerMode};
use tokio::io::unix::AsyncFd;

use super::program::{
    AttachMode, CounterReader, ExistingProgram, ProgramConfig, TeeRing, XdpAttachment, XdpError,
    XdpProgram, parse_tee_record,
};
use super::steering::Steered;
use super::xsk::{self, XskError, XskInterface, XskOptions, XskQueue};
use crate::dhcp::{Destination, ServerPort};
use crate::dhcp6;
use crate::net::iface::InterfaceTable;
use crate::net::iface::Interfaces;
use crate::net::service::Service;

/// How the backend is set up on each interface.
#[derive(Debug, Clone)]
pub struct XdpSettings {
    pub steer: SteerMode,
    pub mode: AttachMode,
    pub existing: ExistingProgram,
    pub shed_rate: u32,
    pub shed_burst: u32,
    pub never_shed: Vec<[u8; 6]>,
    /// Steer DHCPv6 too (`[ipv6] enabled`).
    pub ipv6: bool,
}

/// Why the XDP backend could not start on an interface.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Program(#[from] XdpError),
    #[error(transparent)]
    Socket(#[from] XskError),
    #[error("interface {0} does not exist")]
    UnknownInterface(String),
    #[error("counting the rx queues of {interface}: {source}")]
    Queues {
        interface: String,
        source: std::io::Error,
    },
}

/// The XDP backend on one interface, ready to serve.
pub struct XdpInterface {
    name: String,
    ifindex: u32,
    // Field order is drop order: detach the program before its sockets close.
    attachment: XdpAttachment,
    program: XdpProgram,
    queues: Vec<XskQueue>,
    tee: TeeRing,
    priority: TeeRing,
    config: ProgramConfig,
}

impl std::fmt::Debug for XdpInterface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpInterface")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .field("queues", &self.queues.len())
            .field("mode", &self.attachment.mode())
            .finish_non_exhaustive()
    }
}

impl XdpInterface {
    /// Loads and configures the program, attaches it, then opens a socket on every rx queue
    /// and registers it.
    pub fn open(name: &str, settings: &XdpSettings) -> Result<XdpInterface, BackendError> {
        let ifindex = nix::net::if_::if_nametoindex(name)
            .map_err(|_| BackendError::UnknownInterface(name.to_owned()))?;
        let mut program = XdpProgram::load()?;
        let config = ProgramConfig {
            steer: settings.steer,
            shed_rate: settings.shed_rate,
            shed_burst: settings.shed_burst,
            // Wakeups only when the reader has caught up (the kernel's default notification):
            // an idle server answers at once, a busy one polls the ring without them.
            ring_wakeup: true,
            ipv6: settings.ipv6,
        };
        program.set_config(&config)?;
        program.set_inventory(&settings.never_shed)?;
        // Attach first: the occupancy check (another xdpboot, a foreign program, --force)
        // must come before binding the queues, which another xdpboot's sockets would hold.
        // Until the sockets are registered, 4011 requests pass to the kernel and port-67 boot
        // requests are teed (counted as no_socket); clients retry.
        let tee = program.take_tee_ring()?;
        let priority = program.take_priority_ring()?;
        let attachment = program.attach(name, settings.mode, settings.existing)?;
        let queues = xsk::rx_queue_count(name)
            .map_err(|source| BackendError::Queues {
                interface: name.to_owned(),
                source,
            })?
            .clamp(1, xsk::MAX_QUEUES);
        let sockets = XskInterface::open(name, ifindex, queues, &XskOptions::default())?;
        for queue in sockets.queues() {
            program.register_socket(queue.queue_id(), queue.fd().as_raw_fd())?;
        }
        Ok(XdpInterface {
            name: name.to_owned(),
            ifindex,
            attachment,
            program,
            queues: sockets.into_queues(),
            tee,
            priority,
            config,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mode(&self) -> AttachMode {
        self.attachment.mode()
    }

    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// The handle the port-67 watcher steers this interface's program through.
    pub fn steered(&self) -> Result<Steered, XdpError> {
        Ok(Steered {
            interface: self.name.clone(),
            writer: self.program.config_writer()?,
            config: self.config,
        })
    }

    /// A reader of the program's verdict counters that outlives [`XdpInterface::serve`]'s
    /// ownership of the program (for the metrics).
    pub fn counter_reader(&self) -> Result<CounterReader, XdpError> {
        self.program.counter_reader()
    }

    /// Serves until a socket fails; the program stays attached as long as the returned future
    /// (which owns everything) lives, and is detached when it is dropped or completes.
    ///
    /// One task does all of an interface's work: the teed frames of both rings and the frames
    /// each queue's socket took, each answered straight into a TX frame of the queue it came in
    /// on, and one kernel wakeup per queue per round. No reply is copied between tasks and no
    /// task wakes another: what a proxy offer costs is the core's work and a share of one
    /// `sendto` (copy mode) or none (zero-copy).
    pub async fn serve(
        self,
        service: Arc<Service>,
        interfaces: Arc<Interfaces>,
    ) -> Result<(), BackendError> {
        let XdpInterface {
            name,
            ifindex,
            attachment,
            program,
            queues,
            tee,
            priority,
            config: _,
        } = self;
        let context = FrameAnswerer::new(service, interfaces, ifindex);
        tracing::debug!(iface = %name, "XDP backend serving");
        let result = serve_interface(context, tee, priority, queues).await;
        drop(attachment);
        drop(program);
        result
    }
}

/// Answers the request frames of one interface: what the XDP backend's task runs for every
/// frame, public so that benchmarks measure exactly that.
pub struct FrameAnswerer {
    service: Arc<Service>,
    interfaces: Arc<Interfaces>,
    ifindex: u32,
}

impl FrameAnswerer {
    pub fn new(service: Arc<Service>, interfaces: Arc<Interfaces>, ifindex: u32) -> FrameAnswerer {
        FrameAnswerer {
            service,
            interfaces,
            ifindex,
        }
    }

    /// Answers one request frame that arrived on this interface: writes the reply frame into
    /// `out` (a TX frame) and returns its length, if one is due. Frames that do not parse were
    /// vetted by the XDP program already; they are dropped here without a reply (the core
    /// counts DHCP-level problems).
    pub fn answer(&self, request: &[u8], out: &mut [u8]) -> Option<usize> {
        let ethernet = ethernet::Frame::new_checked(request).ok()?;
        if ethernet.ethertype() == ethernet::ethertype::IPV6 {
            return self.answer6(request, out);
        }
        let frame = UdpFrame::parse(request).ok()?;
        let port = match frame.udp.dst_port() {
            DHCP_SERVER_PORT => ServerPort::Dhcp,
            PXE_SERVER_PORT => ServerPort::Pxe,
            _ => return None,
        };
        let tags = frame.ethernet.tags();
        let table = self.interfaces.snapshot();
        let physical = table.get(self.ifindex)?;
        let logical = self.logical(&table, tags)?;
        let answer =
            self.service
                .handle(port, logical, frame.src(), frame.ip.dst(), frame.payload())?;
        let (dst_mac, destination) = match answer.reply.destination {
            Destination::Broadcast => (
                MacAddr::BROADCAST,
                SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_CLIENT_PORT),
            ),
            // The request's frame came from the client (or the router in front of it): its
            // source MAC is the next hop back.
            Destination::Unicast(to) => (frame.ethernet.src(), to),
            Destination::Relay(giaddr) => (
                frame.ethernet.src(),
                SocketAddrV4::new(giaddr, DHCP_SERVER_PORT),
            ),
        };
        let repr = FrameRepr {
            src_mac: MacAddr(physical.mac?),
            dst_mac,
            tags,
            src: SocketAddrV4::new(answer.server, port.number()),
            dst: destination,
            ttl: FrameRepr::DEFAULT_TTL,
        };
        let payload = &answer.reply.bytes;
        let at = repr.headers_len();
        out.get_mut(at..at + payload.len())?
            .copy_from_slice(payload);
        emit_udp_frame(out, &repr, payload.len()).ok()
    }

    /// The interface a frame with `tags` belongs to. A tagged frame belongs to the VLAN
    /// sub-interface of its (outer) tag: that is the interface the operator names and whose
    /// address the client gets. Without one the kernel would drop the frame, and no address of
    /// ours is reachable from that VLAN, so it is not answered (and counted).
    fn logical(&self, table: &InterfaceTable, tags: VlanTags) -> Option<u32> {
        match tags.as_slice().first() {
            None => Some(self.ifindex),
            Some(tag) => match table.vlan_child(self.ifindex, tag.id()) {
                Some(child) => Some(child.index),
                None => {
                    self.service.count_not_served();
                    None
                }
            },
        }
    }

    /// [`FrameAnswerer::answer`] over IPv6: DHCPv6 to port 547 (teed) or 4011 (taken).
    fn answer6(&self, request: &[u8], out: &mut [u8]) -> Option<usize> {
        let frame = UdpFrame6::parse(request).ok()?;
        let port = match frame.udp.dst_port() {
            dhcpv6::SERVER_PORT => dhcp6::ServerPort::Dhcp,
            PXE_SERVER_PORT => dhcp6::ServerPort::Pxe,
            _ => return None,
        };
        let tags = frame.ethernet.tags();
        let table = self.interfaces.snapshot();
        let physical = table.get(self.ifindex)?;
        let logical = self.logical(&table, tags)?;
        let source = frame.src();
        let scope = if source.ip().is_unicast_link_local() {
            logical
        } else {
            0
        };
        let answer = self.service.handle6(
            port,
            logical,
            SocketAddrV6::new(*source.ip(), source.port(), 0, scope),
            frame.ip.dst(),
            Some(frame.ethernet.src().octets()),
            frame.payload(),
        )?;
        let to = crate::net::udp6::reply_address(answer.reply.destination, 0);
        // From the address a 4011 request reached; else our link-local address towards a
        // link-local client (RFC 8415 §18.3: the server answers on the client's link), or our
        // URL address towards a relay.
        let from = match answer.source {
            Some(from) => from,
            None if to.ip().is_unicast_link_local() => link_local(&table, logical)?,
            None => table
                .get(logical)?
                .url_address6()
                .or_else(|| link_local(&table, logical))?,
        };
        let repr = FrameRepr6 {
            src_mac: MacAddr(physical.mac?),
            // The request's frame came from the client, the relay, or the router in front of
            // either: its source MAC is the next hop back.
            dst_mac: frame.ethernet.src(),
            tags,
            src: SocketAddrV6::new(from, port.number(), 0, 0),
            dst: SocketAddrV6::new(*to.ip(), to.port(), 0, 0),
            hop_limit: ipv6::DEFAULT_HOP_LIMIT,
        };
        let payload = &answer.reply.bytes;
        let at = repr.headers_len();
        out.get_mut(at..at + payload.len())?
            .copy_from_slice(payload);
        emit_udp6_frame(out, &repr, payload.len()).ok()
    }
}

/// The first link-local address of interface `index`.
fn link_local(table: &InterfaceTable, index: u32) -> Option<Ipv6Addr> {
    table
        .get(index)?
        .addrs6
        .iter()
        .copied()
        .find(Ipv6Addr::is_unicast_link_local)
}

/// Teed frames of the shared ring answered in one round before the task looks at the sockets
/// again and yields (the priority ring is looked at before every one of them).
const TEE_BATCH: usize = 64;

/// The interface's serving loop (see [`XdpInterface::serve`]). A round answers, in order:
/// inventory machines' teed frames (the priority ring, its replies sent at once), up to
/// [`TEE_BATCH`] frames of the shared ring (the priority ring looked at again before each),
/// one batch from each queue's socket; then sends what each queue gathered.
async fn serve_interface(
    context: FrameAnswerer,
    tee: TeeRing,
    priority: TeeRing,
    mut queues: Vec<XskQueue>,
) -> Result<(), BackendError> {
    let readiness = |source| XskError::Readiness { queue: 0, source };
    let mut shared = crate::net::register(tee).map_err(readiness)?;
    let mut priority = crate::net::register(priority).map_err(readiness)?;
    if queues.is_empty() {
        return Ok(());
    }
    loop {
        wait_for_work(&mut shared, &mut priority, &mut queues).await?;
        // Until a round finds nothing left: each ends with the queues flushed and a yield, so
        // a flood cannot keep this worker from the runtime's other tasks.
        loop {
            let mut busy = answer_priority(&context, priority.get_mut(), &mut queues)?;
            for _ in 0..TEE_BATCH {
                let Some(record) = shared.get_mut().next() else {
                    break;
                };
                busy = true;
                if let Ok(teed) = parse_tee_record(&record) {
                    let queue = queue_for(&mut queues, teed.header.rx_queue);
                    stage(&context, queue, teed.frame)?;
                }
                drop(record);
                answer_priority(&context, priority.get_mut(), &mut queues)?;
            }
            for queue in &mut queues {
                if let Some(mut batch) = queue.try_recv() {
                    busy = true;
                    batch.answer_each(|request, out| context.answer(request, out))?;
                }
            }
            for queue in &mut queues {
                queue.flush()?;
            }
            if !busy {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Answers every record of the priority ring (inventory machines) and sends each reply at
/// once, ahead of the flood's replies staged on its queue. Returns whether there were any.
fn answer_priority(
    context: &FrameAnswerer,
    priority: &mut TeeRing,
    queues: &mut [XskQueue],
) -> Result<bool, BackendError> {
    let mut any = false;
    while let Some(record) = priority.next() {
        any = true;
        let Ok(teed) = parse_tee_record(&record) else {
            continue;
        };
        let queue = queue_for(queues, teed.header.rx_queue);
        // Sent at once, ahead of the flood's replies staged on the same queue.
        match queue.send_with(|out| context.answer(teed.frame, out)) {
            Ok(()) | Err(XskError::FrameDoesNotFit { .. }) => {}
            Err(XskError::NoFreeFrame | XskError::TxRingFull) => {
                context.service.stats.record_send_failure();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(any)
}

/// Answers a teed frame into a TX frame of `queue`. Returns whether a reply was queued; one
/// that could not be (no free TX frame) is counted as a send failure.
fn stage(
    context: &FrameAnswerer,
    queue: &mut XskQueue,
    request: &[u8],
) -> Result<bool, BackendError> {
    match queue.stage_with(|out| context.answer(request, out)) {
        Ok(queued) => Ok(queued),
        Err(XskError::NoFreeFrame | XskError::FrameDoesNotFit { .. }) => {
            context.service.stats.record_send_failure();
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// The socket of rx queue `id`; every rx queue has one, and were one missing the first queue
/// sends the reply rather than lose it.
fn queue_for(queues: &mut [XskQueue], id: u32) -> &mut XskQueue {
    let at = queues.iter().position(|q| q.queue_id() == id).unwrap_or(0);
    &mut queues[at]
}

/// Waits until either ring has records or a socket has frames. Both rings signal their
/// descriptor once the reader has caught up (the program submits with the kernel's default
/// notification), and the loop drains them before it waits again, so no record is missed.
async fn wait_for_work(
    shared: &mut AsyncFd<TeeRing>,
    priority: &mut AsyncFd<TeeRing>,
    queues: &mut [XskQueue],
) -> Result<(), BackendError> {
    let readiness = |source| XskError::Readiness { queue: 0, source };
    std::future::poll_fn(|cx| {
        let mut ready = false;
        for ring in [&mut *priority, &mut *shared] {
            match ring.poll_read_ready_mut(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    // Clear first, then drain: a record submitted after the drain finds the
                    // reader caught up, so the kernel signals the descriptor again.
                    guard.clear_ready();
                    ready = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(BackendError::from(readiness(e)))),
                Poll::Pending => {}
            }
        }
        for queue in queues.iter_mut() {
            match queue.poll_rx_ready(cx) {
                Poll::Ready(Ok(())) => ready = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
        }
        if ready {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}
