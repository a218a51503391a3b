//! The XDP backend at work: per interface, the steering program attached, one AF_XDP socket per
//! rx queue, and the reader of the tee ring. Every request, teed or taken, goes through the same
//! [`Service`] as the UDP backend; every reply leaves as a whole Ethernet frame on the TX ring of
//! the queue the request came in on, with the request's VLAN tags.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boot_common::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT, PXE_SERVER_PORT, SteerMode};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::program::{
    AttachMode, CounterReader, ExistingProgram, ProgramConfig, TeeRing, XdpAttachment, XdpError,
    XdpProgram, parse_tee_record,
};
use super::steering::Steered;
use super::xsk::{self, XskError, XskInterface, XskOptions, XskQueue};
use crate::dhcp::{Destination, ServerPort};
use crate::net::frame::{self, ReplyHeaders};
use crate::net::iface::Interfaces;
use crate::net::service::{Answer, Service};

/// Replies to shared-ring frames the tee reader may queue for one AF_XDP queue before it
/// drops (and counts) more. Small on purpose: the BPF ring in front already absorbs bursts, and
/// every reply queued here is one more send a later request waits for.
const TEE_REPLY_QUEUE: usize = 256;
/// Replies to inventory machines (the priority ring), queued apart so that they never wait
/// behind a flood's replies.
const PRIORITY_REPLY_QUEUE: usize = 64;

/// How the backend is set up on each interface.
#[derive(Debug, Clone)]
pub struct XdpSettings {
    pub steer: SteerMode,
    pub mode: AttachMode,
    pub existing: ExistingProgram,
    pub shed_rate: u32,
    pub shed_burst: u32,
    pub never_shed: Vec<[u8; 6]>,
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
        let context = Arc::new(Context {
            service,
            interfaces,
            ifindex,
        });
        let mut tasks = JoinSet::new();
        let mut tee_senders = HashMap::new();
        for queue in queues {
            let (shared, shared_rx) = mpsc::channel(TEE_REPLY_QUEUE);
            let (priority, priority_rx) = mpsc::channel(PRIORITY_REPLY_QUEUE);
            tee_senders.insert(queue.queue_id(), ReplySenders { shared, priority });
            let replies = TeeReplies {
                shared: shared_rx,
                priority: priority_rx,
            };
            tasks.spawn(serve_queue(queue, replies, context.clone()));
        }
        tasks.spawn(read_tee(tee, priority, tee_senders, context.clone()));
        tracing::debug!(iface = %name, "XDP backend serving");
        let result = match tasks.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(BackendError::Socket(XskError::Readiness {
                queue: 0,
                source: std::io::Error::other(e.to_string()),
            })),
            None => Ok(()),
        };
        tasks.abort_all();
        drop(attachment);
        drop(program);
        result
    }
}

/// What the serving tasks of one interface share.
struct Context {
    service: Arc<Service>,
    interfaces: Arc<Interfaces>,
    ifindex: u32,
}

impl Context {
    /// Handles one request frame that arrived on this interface: returns the reply frame, if
    /// one is due. Frames that do not parse were vetted by the XDP program already; they are
    /// dropped here without a reply (the core counts DHCP-level problems).
    fn handle(&self, request: &[u8]) -> Option<Vec<u8>> {
        let parsed = frame::parse(request).ok()?;
        let port = match parsed.destination.port() {
            DHCP_SERVER_PORT => ServerPort::Dhcp,
            PXE_SERVER_PORT => ServerPort::Pxe,
            _ => return None,
        };
        let table = self.interfaces.snapshot();
        let physical = table.get(self.ifindex)?;
        // A tagged frame belongs to the VLAN sub-interface of its (outer) tag: that is the
        // interface the operator names and whose address the client gets. Without one the
        // kernel would drop the frame, and no address of ours is reachable from that VLAN, so
        // it is not answered.
        let logical = match parsed.vlans.first() {
            None => self.ifindex,
            Some(tag) => match table.vlan_child(self.ifindex, tag.id()) {
                Some(child) => child.index,
                None => {
                    self.service.count_not_served();
                    return None;
                }
            },
        };
        let answer = self.service.handle(
            port,
            logical,
            parsed.source,
            *parsed.destination.ip(),
            parsed.payload,
        )?;
        let src_mac = physical.mac?;
        reply_frame(&answer, port, src_mac, parsed.src_mac, &parsed.vlans)
    }
}

/// The Ethernet frame around a reply.
fn reply_frame(
    answer: &Answer,
    port: ServerPort,
    src_mac: [u8; 6],
    client_mac: [u8; 6],
    vlans: &[frame::VlanTag],
) -> Option<Vec<u8>> {
    let (dst_mac, destination) = match answer.reply.destination {
        Destination::Broadcast => (
            [0xff; 6],
            SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_CLIENT_PORT),
        ),
        // The request's frame came from the client (or the router in front of it): its source
        // MAC is the next hop back.
        Destination::Unicast(to) => (client_mac, to),
        Destination::Relay(giaddr) => (client_mac, SocketAddrV4::new(giaddr, DHCP_SERVER_PORT)),
    };
    let headers = ReplyHeaders {
        src_mac,
        dst_mac,
        vlans,
        source: SocketAddrV4::new(answer.server, port.number()),
        destination,
    };
    let mut out = vec![0u8; frame::frame_len(vlans.len(), answer.reply.bytes.len())];
    let len = frame::build(&headers, &answer.reply.bytes, &mut out)?;
    out.truncate(len);
    Some(out)
}

/// The tee reader's two reply queues into one AF_XDP queue.
struct ReplySenders {
    shared: mpsc::Sender<Vec<u8>>,
    priority: mpsc::Sender<Vec<u8>>,
}

/// The receiving ends of [`ReplySenders`].
struct TeeReplies {
    shared: mpsc::Receiver<Vec<u8>>,
    priority: mpsc::Receiver<Vec<u8>>,
}

/// One AF_XDP queue: answers the frames the program took, and sends the replies to teed
/// frames that arrived on this queue, inventory machines' first.
async fn serve_queue(
    mut queue: XskQueue,
    mut tee: TeeReplies,
    context: Arc<Context>,
) -> Result<(), BackendError> {
    let mut replies: Vec<Vec<u8>> = Vec::with_capacity(xsk::RX_BATCH as usize);
    let mut shared = false;
    loop {
        // `biased`: under a flood every branch is ready at every turn; the priority replies
        // must win each time, not one turn in three.
        tokio::select! {
            biased;
            Some(reply) = tee.priority.recv() => {
                replies.push(reply);
                drain(&mut tee.priority, &mut replies);
            }
            batch = queue.recv() => {
                let batch = batch?;
                replies.extend(batch.frames().filter_map(|f| context.handle(f)));
            }
            Some(reply) = tee.shared.recv() => {
                // A priority reply that came meanwhile goes in front of this batch.
                drain(&mut tee.priority, &mut replies);
                replies.push(reply);
                drain(&mut tee.shared, &mut replies);
                shared = true;
            }
        }
        if std::mem::take(&mut shared)
            && let Some(batch) = queue.try_recv()
        {
            // The requests the program took meanwhile go in front of the flood's replies. Their
            // RX ring is looked at directly: its readiness may wait for the runtime's next I/O
            // poll while a flood keeps every worker busy.
            let taken: Vec<Vec<u8>> = batch.frames().filter_map(|f| context.handle(f)).collect();
            replies.splice(0..0, taken);
        }
        if !replies.is_empty() {
            let queued = queue.send_batch(replies.iter().map(Vec::as_slice))?;
            for _ in queued..replies.len() {
                context.service.stats.record_send_failure();
            }
            replies.clear();
        }
    }
}

/// Moves queued replies into `replies` until it holds one TX batch.
fn drain(queue: &mut mpsc::Receiver<Vec<u8>>, replies: &mut Vec<Vec<u8>>) {
    while replies.len() < xsk::TX_BATCH {
        match queue.try_recv() {
            Ok(reply) => replies.push(reply),
            Err(_) => break,
        }
    }
}

/// Teed frames of the shared ring handled before the reader yields, so that the queue tasks
/// send what it handed them (the priority ring is looked at before every frame).
const TEE_BATCH: usize = 64;
/// Longest the reader works through the shared ring before it yields, whatever a frame costs.
/// A queue task woken by the reader waits in the reader's worker (tokio's LIFO slot cannot be
/// stolen), so this bounds how long a taken request (4011) or a reply waits behind a flood.
const TEE_SLICE: Duration = Duration::from_micros(100);

/// Reads teed frames and hands their replies to the queue they came in on. Inventory MACs'
/// frames (the priority ring) go first, before every frame of the shared ring, and their
/// replies go to the queue's priority channel.
async fn read_tee(
    ring: TeeRing,
    priority: TeeRing,
    queues: HashMap<u32, ReplySenders>,
    context: Arc<Context>,
) -> Result<(), BackendError> {
    let readiness = |source| XskError::Readiness { queue: 0, source };
    let mut ring = crate::net::register(ring).map_err(readiness)?;
    let mut priority = crate::net::register(priority).map_err(readiness)?;
    let handle = |record: &[u8], urgent: bool| {
        let Ok(teed) = parse_tee_record(record) else {
            return;
        };
        let Some(reply) = context.handle(teed.frame) else {
            return;
        };
        // Every rx queue has a socket; were one missing, the first queue sends the reply
        // rather than lose it.
        let sender = queues
            .get(&teed.header.rx_queue)
            .or_else(|| queues.values().next());
        let sender = sender.map(|s| if urgent { &s.priority } else { &s.shared });
        if let Some(sender) = sender
            && sender.try_send(reply).is_err()
        {
            context.service.stats.record_send_failure();
        }
    };
    loop {
        // Clear first, then drain: a record submitted after the drain finds the reader caught
        // up, so the kernel signals it and the next wait returns at once.
        tokio::select! {
            guard = priority.readable_mut() => guard.map_err(readiness)?.clear_ready(),
            guard = ring.readable_mut() => guard.map_err(readiness)?.clear_ready(),
        }
        loop {
            let mut handled = 0;
            let mut empty = false;
            let slice = Instant::now();
            while handled < TEE_BATCH && slice.elapsed() < TEE_SLICE {
                // The priority ring is looked at before every shared frame: a check of the
                // ring's producer position, so an inventory machine's request waits for one
                // flood frame's handling at most.
                let mut urgent = 0;
                while let Some(record) = priority.get_mut().next() {
                    handle(&record, true);
                    urgent += 1;
                }
                if urgent > 0 {
                    // Let the queue task send the reply now. Woken from here, it sits in this
                    // worker's LIFO slot, which no other worker may steal: without the yield it
                    // would wait for the rest of the batch (measured: 3 ms under a flood).
                    tokio::task::yield_now().await;
                }
                let Some(record) = ring.get_mut().next() else {
                    empty = true;
                    break;
                };
                handle(&record, false);
                handled += 1;
            }
            if empty {
                break;
            }
            // A full batch or slice: let the queue tasks send, then look at the rings again.
            tokio::task::yield_now().await;
        }
    }
}
