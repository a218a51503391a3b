//! The simulated nodes' TFTP client: RFC 1350 read requests with the blksize option
//! (RFC 2347/2348), one block in flight (lockstep, as PXE ROMs fetch), bounded retries.
//!
//! [`ReadTransfer`] is the protocol without I/O: datagrams and timeouts in, what to send out.
//! [`Client`] drives every transfer of a storm from one thread, the way xdpboot's server drives
//! its side (`boot-user/src/tftp/transfers.rs`) and dnsmasq its own: each transfer's socket in
//! one level-triggered epoll set, registered for reading only and read once per readiness, and
//! the retransmission deadlines in one heap. A tokio task, socket and timer per transfer cost
//! the generator more per block than the server spent: a second receive per block only to
//! learn the socket was empty (tokio keeps a socket "ready" until a read fails), a task
//! wake-up, often across the runtime's threads, and a timer moved per block (the load test's
//! costing pass shows the generator's CPU per TFTP stage; BENCHMARKS.md has before and after).
//!
//! Every transfer gets a fresh UDP socket, made by the driver thread: its port is the
//! transfer's identity (RFC 1350 §4). The thread is started in the client namespace, so TFTP
//! leaves from the server's link like a ROM's while the nodes run elsewhere. `cargo xtask
//! bench-tftp`'s concurrent case runs the same client.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::sync::oneshot;

/// TFTP's well-known port.
pub(crate) const TFTP_PORT: u16 = 69;
/// Wait for the next packet before sending the last one again (RFC 1350 §2; ROMs use 1–4 s).
const PACKET_TIMEOUT: Duration = Duration::from_secs(1);
/// Times the last packet is sent again before the transfer fails.
const MAX_RETRIES: u32 = 5;
/// Longest one transfer may take.
const TRANSFER_LIMIT: Duration = Duration::from_secs(120);
/// RFC 1350's block size, used when the server ignores the blksize option.
const DEFAULT_BLKSIZE: usize = 512;
/// Largest datagram taken: a DATA of the largest blksize RFC 2348 allows, and its header.
const RECEIVE_BUFFER: usize = 65464 + 4;
/// Ready sockets taken from the epoll set per wait.
const EVENTS_PER_WAIT: usize = 256;
/// The epoll data of the wake-up eventfd; transfer tokens never reach it (see [`Token`]).
const WAKE: u64 = u64::MAX;

const RRQ: u16 = 1;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// One read transfer, client side, lockstep: it sends a datagram (the read request, then an
/// ACK per block) and waits for the next one.
pub(crate) struct ReadTransfer {
    file: String,
    /// The server's address: port 69 until its first answer names its transfer port.
    to: SocketAddrV4,
    /// The server's transfer port, once its first answer came (RFC 1350 §4).
    tid: Option<u16>,
    block_size: usize,
    expected: u16,
    received: u64,
    retries: u32,
    /// The read request, then the last ACK: sent again when the answer is late.
    last_sent: Vec<u8>,
}

/// What the caller does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send [`ReadTransfer::datagram`] and wait for the next packet.
    Send,
    /// Send [`ReadTransfer::datagram`] (the last ACK; no dally: a lost final ACK makes the
    /// server retransmit to a socket that is gone, which it bounds itself); the file had this
    /// many bytes.
    Finish(u64),
    Fail(String),
    /// Not this transfer's, or nothing new: keep waiting.
    Ignore,
}

impl ReadTransfer {
    /// A read request for `file` to `server` (its port 69), asking for `blksize`-byte blocks.
    pub(crate) fn new(server: SocketAddrV4, file: &str, blksize: u16) -> ReadTransfer {
        let mut rrq = RRQ.to_be_bytes().to_vec();
        for field in [file, "octet", "blksize", &blksize.to_string()] {
            rrq.extend_from_slice(field.as_bytes());
            rrq.push(0);
        }
        ReadTransfer {
            file: file.to_owned(),
            to: server,
            tid: None,
            block_size: DEFAULT_BLKSIZE,
            expected: 1,
            received: 0,
            retries: 0,
            last_sent: rrq,
        }
    }

    /// The datagram to send, and where.
    pub(crate) fn datagram(&self) -> (&[u8], SocketAddrV4) {
        (&self.last_sent, self.to)
    }

    /// A datagram arrived from `from`.
    pub(crate) fn on_datagram(&mut self, from: SocketAddrV4, packet: &[u8]) -> Step {
        if from.ip() != self.to.ip() || self.tid.is_some_and(|port| port != from.port()) {
            return Step::Ignore;
        }
        let [o1, o2, n1, n2, ..] = *packet else {
            return Step::Ignore;
        };
        let number = u16::from_be_bytes([n1, n2]);
        match u16::from_be_bytes([o1, o2]) {
            OACK if self.tid.is_none() => {
                self.tid = Some(from.port());
                self.to = from;
                self.block_size = negotiated_blksize(&packet[2..]).unwrap_or(DEFAULT_BLKSIZE);
                self.last_sent = ack(0);
            }
            DATA if number == self.expected => {
                if self.tid.is_none() {
                    // No OACK: the server ignored the options (RFC 2347 §3).
                    self.tid = Some(from.port());
                    self.to = from;
                }
                let data = packet.len() - 4;
                self.received += data as u64;
                self.last_sent = ack(number);
                if data < self.block_size {
                    // The last block (RFC 1350 §6).
                    return Step::Finish(self.received);
                }
                self.expected = self.expected.wrapping_add(1);
            }
            // Our ACK was lost: the server sent the block again; so do we the ACK.
            DATA if number == self.expected.wrapping_sub(1) => {}
            ERROR => {
                let message = packet[4..].split(|&b| b == 0).next().unwrap_or_default();
                return Step::Fail(format!(
                    "{}: TFTP error {number}: {}",
                    self.file,
                    String::from_utf8_lossy(message)
                ));
            }
            _ => return Step::Ignore,
        }
        self.retries = 0;
        Step::Send
    }

    /// Nothing came for [`PACKET_TIMEOUT`]: send the last datagram again, up to
    /// [`MAX_RETRIES`] times.
    pub(crate) fn on_timeout(&mut self) -> Step {
        self.retries += 1;
        if self.retries > MAX_RETRIES {
            let when = if self.tid.is_none() {
                "to its read request"
            } else {
                "mid-transfer"
            };
            return Step::Fail(format!(
                "{}: no answer {when} after {MAX_RETRIES} retries",
                self.file
            ));
        }
        Step::Send
    }
}

fn ack(block: u16) -> Vec<u8> {
    let mut packet = ACK.to_be_bytes().to_vec();
    packet.extend_from_slice(&block.to_be_bytes());
    packet
}

/// The blksize an OACK's options (name, NUL, value, NUL, …) grant.
fn negotiated_blksize(options: &[u8]) -> Option<usize> {
    let mut fields = options.split(|&b| b == 0);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if name.eq_ignore_ascii_case(b"blksize") {
            return std::str::from_utf8(value).ok()?.parse().ok();
        }
    }
    None
}

/// A transfer for the driver thread: what to read, and where the result goes.
struct NewTransfer {
    server: SocketAddrV4,
    file: String,
    blksize: u16,
    done: oneshot::Sender<Result<u64, String>>,
}

/// The TFTP client: a thread driving every transfer. Cheap to share; dropping it ends the
/// thread and fails the transfers still running.
pub(crate) struct Client {
    queue: mpsc::Sender<NewTransfer>,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    /// The driver thread's id, for its CPU time.
    thread_id: i32,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.write(1);
    }
}

impl Client {
    /// Starts the driver thread, in network namespace `ns` if given (else in the caller's).
    pub(crate) fn start(ns: Option<&boot_tests::NetNs>) -> anyhow::Result<Client> {
        let netns = match ns {
            Some(ns) => {
                let path = std::path::Path::new("/run/netns").join(ns.name());
                Some(
                    std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?,
                )
            }
            None => None,
        };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (queue, incoming) = mpsc::channel();
        let (ready, started) = mpsc::channel();
        let thread = Thread {
            epoll,
            wake: wake.clone(),
            incoming,
            stop: stop.clone(),
        };
        std::thread::Builder::new()
            .name("tftp-client".into())
            .spawn(move || {
                if let Some(file) = netns {
                    let entered = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET);
                    if let Err(e) = entered {
                        let _ = ready.send(Err(e));
                        return;
                    }
                }
                // SAFETY: gettid has no preconditions.
                let _ = ready.send(Ok(unsafe { libc::gettid() }));
                thread.run();
            })
            .context("starting the TFTP client's thread")?;
        let thread_id = started
            .recv()
            .context("the TFTP client's thread ended")?
            .context("entering the client namespace")?;
        Ok(Client {
            queue,
            wake,
            stop,
            thread_id,
        })
    }

    /// Reads `file` from `server` asking for `blksize`-byte blocks, within
    /// [`TRANSFER_LIMIT`]. The transfer starts at the call; the future resolves to the bytes
    /// read when it ends.
    pub(crate) fn fetch(
        &self,
        server: SocketAddrV4,
        file: &str,
        blksize: u16,
    ) -> impl Future<Output = Result<u64, String>> + use<> {
        const GONE: &str = "the TFTP client's thread ended";
        let (done, outcome) = oneshot::channel();
        let queued = self.queue.send(NewTransfer {
            server,
            file: file.to_owned(),
            blksize,
            done,
        });
        // Only fails if the counter would overflow, i.e. never; a wake-up is pending anyway.
        let _ = self.wake.write(1);
        async move {
            queued.map_err(|_| GONE.to_owned())?;
            outcome.await.map_err(|_| GONE.to_owned())?
        }
    }

    /// CPU time of the driver thread so far.
    pub(crate) fn cpu_time(&self) -> Duration {
        std::fs::read_to_string(format!("/proc/self/task/{}/schedstat", self.thread_id))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok())
            .map_or(Duration::ZERO, Duration::from_nanos)
    }
}

/// What the driver thread owns.
struct Thread {
    epoll: Epoll,
    wake: Arc<EventFd>,
    incoming: mpsc::Receiver<NewTransfer>,
    stop: Arc<AtomicBool>,
}

impl Thread {
    fn run(self) {
        let mut driver = Driver::default();
        let mut open = true;
        loop {
            let woken = match driver.turn(&self.epoll) {
                Ok(woken) => woken,
                Err(e) => {
                    driver.fail_all(&format!("waiting on the TFTP sockets: {e}"));
                    return;
                }
            };
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            if woken {
                // Reset before taking the queue: a transfer queued after this read comes with
                // a write of its own, so the next wait returns for it.
                let _ = self.wake.read();
            }
            loop {
                match self.incoming.try_recv() {
                    Ok(new) => driver.insert(&self.epoll, new),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if !open && driver.live == 0 {
                return;
            }
        }
    }
}

/// A transfer's place in the driver's table and the epoll data of its socket: the slot index in
/// the low 32 bits, the slot's generation in the high ones, so an event or deadline of a
/// finished transfer never reaches the one that reuses its slot. (Slot indexes stay far below
/// 2^32 - 1, so no token is [`WAKE`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Token(u64);

impl Token {
    fn new(index: usize, generation: u32) -> Token {
        Token(u64::from(generation) << 32 | index as u64)
    }

    fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

#[derive(Default)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

struct Entry {
    transfer: ReadTransfer,
    socket: UdpSocket,
    done: oneshot::Sender<Result<u64, String>>,
    /// When the transfer times out: [`PACKET_TIMEOUT`] after the last datagram sent, never
    /// after `limit`.
    deadline: Instant,
    limit: Instant,
    /// The deadline this transfer has in the heap (the earliest, if several). Deadlines only
    /// move later, so the heap gets an entry per timeout interval, not one per block.
    armed: Option<Instant>,
}

#[derive(Default)]
struct Driver {
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    deadlines: BinaryHeap<Reverse<(Instant, Token)>>,
    events: Vec<EpollEvent>,
    received: Vec<u8>,
}

impl Driver {
    fn insert(&mut self, epoll: &Epoll, new: NewTransfer) {
        let socket = match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
        {
            Ok(socket) => socket,
            Err(e) => {
                let _ = new.done.send(Err(format!("opening a TFTP socket: {e}")));
                return;
            }
        };
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        let slot = &mut self.slots[index];
        let token = Token::new(index, slot.generation);
        if let Err(e) = epoll.add(
            socket.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, token.0),
        ) {
            self.free.push(index);
            let _ = new
                .done
                .send(Err(format!("registering a TFTP socket: {e}")));
            return;
        }
        let now = Instant::now();
        slot.entry = Some(Entry {
            transfer: ReadTransfer::new(new.server, &new.file, new.blksize),
            socket,
            done: new.done,
            deadline: now,
            limit: now + TRANSFER_LIMIT,
            armed: None,
        });
        self.live += 1;
        self.act(epoll, token, Step::Send, now);
    }

    /// One turn: waits for ready sockets until the next deadline at the latest, serves them,
    /// fires the deadlines due. `Ok(true)` if the wake-up eventfd was among the ready ones.
    fn turn(&mut self, epoll: &Epoll) -> nix::Result<bool> {
        // epoll_wait counts milliseconds; rounding up wakes at most a millisecond late, never
        // early. Without a deadline, only a socket or the eventfd wakes the thread.
        let now = Instant::now();
        let timeout = self
            .deadlines
            .peek()
            .map_or(PollTimeout::NONE, |Reverse((at, _))| {
                let millis = at.saturating_duration_since(now).as_micros().div_ceil(1000);
                PollTimeout::from(u16::try_from(millis).unwrap_or(u16::MAX))
            });
        let mut events = std::mem::take(&mut self.events);
        events.resize(EVENTS_PER_WAIT, EpollEvent::empty());
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => {
                self.events = events;
                return Err(e);
            }
        };
        let now = Instant::now();
        let mut woken = false;
        for event in events.iter().take(n) {
            if event.data() == WAKE {
                woken = true;
            } else {
                self.on_ready(epoll, Token(event.data()), now);
            }
        }
        self.events = events;
        self.expire(epoll, now);
        Ok(woken)
    }

    fn entry(&mut self, token: Token) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(token.index())?;
        if slot.generation != token.generation() {
            return None;
        }
        slot.entry.as_mut()
    }

    /// A socket is readable: one datagram from it (the epoll set is level-triggered, so more
    /// would be reported by the next wait; in lockstep there is no more).
    fn on_ready(&mut self, epoll: &Epoll, token: Token, now: Instant) {
        if self.received.len() < RECEIVE_BUFFER {
            self.received.resize(RECEIVE_BUFFER, 0);
        }
        let buf = &mut self.received;
        let Some(slot) = self.slots.get_mut(token.index()) else {
            return;
        };
        if slot.generation != token.generation() {
            return;
        }
        let Some(entry) = slot.entry.as_mut() else {
            return;
        };
        let step = match entry.socket.recv_from(buf) {
            Ok((len, SocketAddr::V4(from))) => entry.transfer.on_datagram(from, &buf[..len]),
            // An IPv4 socket receives from IPv4 peers only.
            Ok((_, SocketAddr::V6(_))) => Step::Ignore,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Ignore,
            Err(e) => Step::Fail(format!("receiving: {e}")),
        };
        self.act(epoll, token, step, now);
    }

    /// Fires the deadlines due by `now`.
    fn expire(&mut self, epoll: &Epoll, now: Instant) {
        while let Some(&Reverse((at, token))) = self.deadlines.peek()
            && at <= now
        {
            self.deadlines.pop();
            let Some(entry) = self.entry(token) else {
                continue; // finished since
            };
            if entry.armed != Some(at) {
                continue; // superseded by an earlier entry, which fired already
            }
            entry.armed = None;
            if entry.deadline > now {
                // Moved later by the datagrams since: wait for the real deadline.
                let deadline = entry.deadline;
                entry.armed = Some(deadline);
                self.deadlines.push(Reverse((deadline, token)));
                continue;
            }
            let step = if entry.done.is_closed() {
                // Nobody waits for it (the node gave up at the storm's deadline).
                Step::Fail("abandoned".to_owned())
            } else if now >= entry.limit {
                Step::Fail(format!(
                    "{}: not done within {TRANSFER_LIMIT:?}",
                    entry.transfer.file
                ))
            } else {
                entry.transfer.on_timeout()
            };
            self.act(epoll, token, step, now);
        }
    }

    /// Does what the transfer asked: sends its datagram and re-arms its deadline, or finishes.
    fn act(&mut self, epoll: &Epoll, token: Token, step: Step, now: Instant) {
        let Some(entry) = self.entry(token) else {
            return;
        };
        let outcome = match step {
            Step::Ignore => return,
            Step::Fail(reason) => Err(reason),
            Step::Send | Step::Finish(_) => {
                let (datagram, to) = entry.transfer.datagram();
                match entry.socket.send_to(datagram, to) {
                    Ok(_) => {}
                    // As good as lost on the wire: the retransmission timer recovers.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        let reason = format!("sending to {to}: {e}");
                        self.finish(epoll, token, Err(reason));
                        return;
                    }
                }
                match step {
                    Step::Finish(bytes) => Ok(bytes),
                    _ => {
                        let deadline = (now + PACKET_TIMEOUT).min(entry.limit);
                        entry.deadline = deadline;
                        if entry.armed.is_none_or(|armed| armed > deadline) {
                            entry.armed = Some(deadline);
                            self.deadlines.push(Reverse((deadline, token)));
                        }
                        return;
                    }
                }
            }
        };
        self.finish(epoll, token, outcome);
    }

    fn finish(&mut self, epoll: &Epoll, token: Token, outcome: Result<u64, String>) {
        let Some(slot) = self.slots.get_mut(token.index()) else {
            return;
        };
        if slot.generation != token.generation() {
            return;
        }
        let Some(entry) = slot.entry.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        let _ = epoll.delete(entry.socket.as_fd());
        let _ = entry.done.send(outcome);
        self.free.push(token.index());
        self.live -= 1;
    }

    fn fail_all(&mut self, reason: &str) {
        for slot in &mut self.slots {
            if let Some(entry) = slot.entry.take() {
                let _ = entry.done.send(Err(reason.to_owned()));
            }
        }
        self.live = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 1), TFTP_PORT);
    const TRANSFER_PORT: u16 = 40_000;

    fn from_transfer_port() -> SocketAddrV4 {
        SocketAddrV4::new(*SERVER.ip(), TRANSFER_PORT)
    }

    fn data(block: u16, len: usize) -> Vec<u8> {
        let mut packet = DATA.to_be_bytes().to_vec();
        packet.extend_from_slice(&block.to_be_bytes());
        packet.resize(4 + len, 0xab);
        packet
    }

    #[test]
    fn an_oack_grants_its_blksize() {
        assert_eq!(
            negotiated_blksize(b"tsize\x00123\x00BLKSIZE\x001468\x00"),
            Some(1468)
        );
        assert_eq!(negotiated_blksize(b"tsize\x00123\x00"), None);
    }

    #[test]
    fn a_transfer_asks_acknowledges_each_block_and_ends_on_a_short_one() {
        let mut t = ReadTransfer::new(SERVER, "undionly.kpxe", 1468);
        let (rrq, to) = t.datagram();
        assert_eq!(to, SERVER);
        assert_eq!(
            rrq,
            b"\x00\x01undionly.kpxe\x00octet\x00blksize\x001468\x00"
        );
        let oack = b"\x00\x06blksize\x001468\x00";
        assert_eq!(t.on_datagram(from_transfer_port(), oack), Step::Send);
        assert_eq!(
            t.datagram(),
            (&b"\x00\x04\x00\x00"[..], from_transfer_port())
        );
        assert_eq!(
            t.on_datagram(from_transfer_port(), &data(1, 1468)),
            Step::Send
        );
        assert_eq!(t.datagram().0, b"\x00\x04\x00\x01");
        // The block again (our ACK was lost): the same ACK again.
        assert_eq!(
            t.on_datagram(from_transfer_port(), &data(1, 1468)),
            Step::Send
        );
        assert_eq!(t.datagram().0, b"\x00\x04\x00\x01");
        assert_eq!(
            t.on_datagram(from_transfer_port(), &data(2, 100)),
            Step::Finish(1568)
        );
        assert_eq!(t.datagram().0, b"\x00\x04\x00\x02");
    }

    #[test]
    fn a_server_that_ignores_the_options_sends_512_byte_blocks() {
        let mut t = ReadTransfer::new(SERVER, "f", 1468);
        assert_eq!(
            t.on_datagram(from_transfer_port(), &data(1, 512)),
            Step::Send
        );
        assert_eq!(
            t.on_datagram(from_transfer_port(), &data(2, 0)),
            Step::Finish(512)
        );
    }

    #[test]
    fn datagrams_from_elsewhere_are_ignored() {
        let mut t = ReadTransfer::new(SERVER, "f", 1468);
        let stranger = SocketAddrV4::new(Ipv4Addr::new(198, 18, 100, 9), TRANSFER_PORT);
        assert_eq!(t.on_datagram(stranger, &data(1, 10)), Step::Ignore);
        assert_eq!(
            t.on_datagram(from_transfer_port(), &data(1, 1468)),
            Step::Send
        );
        // Once the transfer port is known, another port is another transfer (RFC 1350 §4).
        let other_port = SocketAddrV4::new(*SERVER.ip(), TRANSFER_PORT + 1);
        assert_eq!(t.on_datagram(other_port, &data(2, 10)), Step::Ignore);
        assert_eq!(
            t.on_datagram(from_transfer_port(), b"\x00\x03"),
            Step::Ignore
        );
    }

    #[test]
    fn an_error_ends_the_transfer_with_its_message() {
        let mut t = ReadTransfer::new(SERVER, "nope", 1468);
        assert_eq!(
            t.on_datagram(from_transfer_port(), b"\x00\x05\x00\x01File not found\x00"),
            Step::Fail("nope: TFTP error 1: File not found".to_owned())
        );
    }

    #[test]
    fn silence_is_met_with_bounded_retries() {
        let mut t = ReadTransfer::new(SERVER, "f", 1468);
        for _ in 0..MAX_RETRIES {
            assert_eq!(t.on_timeout(), Step::Send);
        }
        assert_eq!(
            t.on_timeout(),
            Step::Fail("f: no answer to its read request after 5 retries".to_owned())
        );
    }

    #[test]
    fn progress_resets_the_retries() {
        let mut t = ReadTransfer::new(SERVER, "f", 1468);
        for _ in 0..MAX_RETRIES {
            assert_eq!(t.on_timeout(), Step::Send);
        }
        assert_eq!(
            t.on_datagram(from_transfer_port(), &data(1, 1468)),
            Step::Send
        );
        for _ in 0..MAX_RETRIES {
            assert_eq!(t.on_timeout(), Step::Send);
        }
        assert!(matches!(t.on_timeout(), Step::Fail(reason) if reason.contains("mid-transfer")));
    }

    #[test]
    fn the_client_fetches_a_file_from_a_lockstep_server_in_a_namespace() {
        // A minimal server on a thread: OACK, then 3 blocks of 1468 and a short one, each
        // sent after the previous block's ACK, from a transfer port of its own. Both ends in
        // a namespace of the test's own, on an address of 198.18.0.0/15.
        let ns = boot_tests::NetNs::new("tftpc").unwrap();
        ns.add_address("lo", "198.18.0.1/32").unwrap();
        let listener = ns.run(|| Ok(UdpSocket::bind("198.18.0.1:0")?)).unwrap();
        let server = match listener.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
        };
        std::thread::scope(|scope| {
            let serving = scope.spawn(|| {
                ns.run(|| {
                    let mut buf = [0u8; 600];
                    let (_, client) = listener.recv_from(&mut buf)?;
                    let transfer = UdpSocket::bind("198.18.0.1:0")?;
                    transfer.send_to(b"\x00\x06blksize\x001468\x00", client)?;
                    for block in 1..=4u16 {
                        let (len, _) = transfer.recv_from(&mut buf)?;
                        assert_eq!(&buf[..len], ack(block - 1).as_slice());
                        let len = if block == 4 { 10 } else { 1468 };
                        transfer.send_to(&data(block, len), client)?;
                    }
                    let (len, _) = transfer.recv_from(&mut buf)?;
                    assert_eq!(&buf[..len], ack(4).as_slice());
                    Ok(())
                })
            });
            let client = Client::start(Some(&ns)).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let bytes = runtime.block_on(client.fetch(server, "f", 1468));
            assert_eq!(bytes, Ok(3 * 1468 + 10));
            serving.join().unwrap().unwrap();
            assert!(client.cpu_time() > Duration::ZERO);
        });
    }
}
