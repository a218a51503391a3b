//! The transfers in flight, driven together by one task: every transfer's socket in one epoll
//! set, every retransmission deadline in one heap. This is the shape of dnsmasq's TFTP loop
//! (one `poll` over all transfer sockets, then each ready one served, `src/tftp.c`), here in a
//! tokio task, instead of a task, a reactor registration and a timer per transfer.
//!
//! Why (measured with `cargo xtask bench-tftp`'s concurrent case, 256 lockstep transfers, see
//! BENCHMARKS.md): with a task per transfer each block cost a send, two receives (the second
//! only to learn the socket was empty: tokio keeps a socket "ready" until a read fails), a
//! share of an `epoll_wait` that woke few tasks, and a task wake-up, often across threads.
//! Here a block costs a send, one receive and a small share of one `epoll_wait`:
//! - The epoll set is level-triggered: a ready socket is read once per wait and, should more
//!   be queued, reported again by the next wait, so no read is spent on an empty socket.
//! - The set's own descriptor is registered with tokio (an epoll descriptor is pollable), so
//!   the task sleeps in the runtime like any other and is woken when any transfer has mail.
//! - DATA goes out as two iovecs, the 4-byte header and the block's slice of the shared file
//!   ([`Session::poll_transmit_parts`]), without copying the block.
//! - A session's deadline only moves later while ACKs come in; the heap gets an entry for a
//!   session only when its deadline is earlier than the one already there, and an entry that
//!   comes due early is pushed again at the session's real deadline: about one heap entry per
//!   timeout interval per session, not one per block.
//!
//! Each transfer keeps its own socket, bound to an ephemeral port: the port is the transfer's
//! identity (RFC 1350 §4), so sends cannot be batched across transfers (`sendmmsg` takes one
//! socket), and within a lockstep transfer there is one datagram per round trip.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{MsgFlags, SockaddrIn, sendmsg};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::session::{Session, Summary};

/// Transfers handed over but not yet taken in; senders wait beyond that. Small: taking one in
/// is quick, and the number of transfers is bounded by the server's slots anyway.
const QUEUE_DEPTH: usize = 64;
/// Ready sockets taken from the epoll set per wait.
const EVENTS_PER_WAIT: usize = 64;
/// Waits per wakeup before the task lets other work run (new transfers, timers, other tasks
/// on its thread): at a few microseconds per datagram, about a millisecond's worth.
const MAX_WAITS_PER_WAKEUP: usize = 4;
/// A client's ACK is 4 bytes and its ERROR short; longer datagrams are truncated harmlessly.
const RECEIVE_BUFFER: usize = 516;
/// The deadline heap is rebuilt without the entries of finished transfers once it holds more
/// than twice as many entries as transfers, plus this slack.
const HEAP_SLACK: usize = 1024;

/// What a transfer's task hears back: the finished session's summary, or the socket error
/// that ended it.
pub(super) type Outcome = io::Result<Summary>;

/// A transfer to drive: its session (already started), its socket, and where to report.
pub(super) struct NewTransfer {
    pub(super) session: Session,
    pub(super) socket: UdpSocket,
    pub(super) done: oneshot::Sender<Outcome>,
}

/// The running driver. Dropping it ends every transfer it holds.
pub(super) struct Transfers {
    task: JoinHandle<()>,
}

impl Drop for Transfers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Transfers {
    /// Starts the driver task; transfers are handed to it through the returned sender. The
    /// task ends when every sender is gone and its last transfer has finished, or when the
    /// returned [`Transfers`] is dropped.
    pub(super) fn start() -> io::Result<(Transfers, mpsc::Sender<NewTransfer>)> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let poll = crate::net::register(EpollSet(epoll))?;
        let (queue, incoming) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(run(poll, incoming));
        Ok((Transfers { task }, queue))
    }
}

/// The epoll set of the transfers' sockets.
struct EpollSet(Epoll);

impl AsRawFd for EpollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

impl crate::net::OwnsFd for EpollSet {}

async fn run(poll: AsyncFd<EpollSet>, mut incoming: mpsc::Receiver<NewTransfer>) {
    let mut driver = Driver::default();
    // One timer for all transfers, set to the heap's earliest entry. Moving it takes a lock in
    // tokio's timer wheel, so it is moved only when it would otherwise fire late; firing early
    // only wakes the task to no effect.
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    let mut timer_at: Option<Instant> = None;
    let mut open = true;
    loop {
        if let Some(next) = driver.next_deadline()
            && timer_at.is_none_or(|at| at > next)
        {
            timer.as_mut().reset(next.into());
            timer_at = Some(next);
        }
        tokio::select! {
            // New transfers and timers first: they are cheap when idle, and a busy epoll set
            // must not keep them waiting.
            biased;
            new = incoming.recv(), if open => match new {
                Some(new) => driver.insert(poll.get_ref(), new),
                None => open = false,
            },
            () = &mut timer, if timer_at.is_some() => {
                timer_at = None;
                driver.expire(poll.get_ref(), Instant::now());
            }
            ready = poll.readable() => {
                let mut guard = match ready {
                    Ok(guard) => guard,
                    Err(e) => {
                        driver.fail_all(&e);
                        tracing::error!(error = %e, "the tftp transfers' epoll set failed");
                        return;
                    }
                };
                match driver.serve_ready(guard.get_inner()) {
                    Ok(true) => guard.clear_ready(),
                    Ok(false) => {}
                    Err(e) => {
                        let e = io::Error::from(e);
                        driver.fail_all(&e);
                        tracing::error!(error = %e, "waiting on the tftp transfers' sockets failed");
                        return;
                    }
                }
            }
        }
        if !open && driver.is_empty() {
            return;
        }
    }
}

/// A transfer's place in the driver's table, and the epoll data of its socket: the slot index
/// in the low 32 bits, the slot's generation in the high ones, so an event or deadline of a
/// finished transfer never reaches the one that reuses its slot.
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

struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

struct Entry {
    session: Session,
    socket: UdpSocket,
    done: oneshot::Sender<Outcome>,
    /// The deadline this transfer has in the heap (the earliest, if several).
    armed: Option<Instant>,
    /// A datagram the socket's send buffer had no room for, sent when it is writable again;
    /// nothing more is taken from the session until then.
    blocked: Option<(SocketAddrV4, Vec<u8>)>,
}

#[derive(Default)]
struct Driver {
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    deadlines: BinaryHeap<Reverse<(Instant, Token)>>,
    events: Vec<EpollEvent>,
    header: Vec<u8>,
    received: Vec<u8>,
}

impl Driver {
    fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    fn insert(&mut self, epoll: &EpollSet, new: NewTransfer) {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                generation: 0,
                entry: None,
            });
            self.slots.len() - 1
        });
        let slot = &mut self.slots[index];
        let token = Token::new(index, slot.generation);
        if let Err(e) = epoll.0.add(
            new.socket.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, token.0),
        ) {
            self.free.push(index);
            let _ = new.done.send(Err(e.into()));
            return;
        }
        slot.entry = Some(Entry {
            session: new.session,
            socket: new.socket,
            done: new.done,
            armed: None,
            blocked: None,
        });
        self.live += 1;
        // The session's first datagram (OACK or DATA 1) is due now.
        self.progress(epoll, token);
    }

    fn entry(&mut self, token: Token) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(token.index())?;
        if slot.generation != token.generation() {
            return None;
        }
        slot.entry.as_mut()
    }

    /// Serves the ready sockets, a bounded number of waits' worth; `Ok(true)` once a wait
    /// found none (the set is drained and its readiness may be cleared).
    fn serve_ready(&mut self, epoll: &EpollSet) -> nix::Result<bool> {
        let mut events = std::mem::take(&mut self.events);
        events.resize(EVENTS_PER_WAIT, EpollEvent::empty());
        let mut drained = false;
        for _ in 0..MAX_WAITS_PER_WAKEUP {
            let n = match epoll.0.wait(&mut events, 0u8) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    self.events = events;
                    return Err(e);
                }
            };
            if n == 0 {
                drained = true;
                break;
            }
            let now = Instant::now();
            for event in events.iter().take(n) {
                self.on_event(epoll, Token(event.data()), event.events(), now);
            }
        }
        self.events = events;
        Ok(drained)
    }

    fn on_event(&mut self, epoll: &EpollSet, token: Token, flags: EpollFlags, now: Instant) {
        if self.received.len() < RECEIVE_BUFFER {
            self.received.resize(RECEIVE_BUFFER, 0);
        }
        let Some(slot) = self.slots.get_mut(token.index()) else {
            return;
        };
        if slot.generation != token.generation() {
            return;
        }
        let Some(entry) = slot.entry.as_mut() else {
            return;
        };
        if flags.contains(EpollFlags::EPOLLOUT)
            && let Some((to, datagram)) = &entry.blocked
        {
            match send(&entry.socket, *to, datagram, &[]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                sent => {
                    if let Err(e) = sent {
                        tracing::debug!(%to, error = %e, "tftp send failed");
                    }
                    entry.blocked = None;
                    let mut event = EpollEvent::new(EpollFlags::EPOLLIN, token.0);
                    if let Err(e) = epoll.0.modify(entry.socket.as_fd(), &mut event) {
                        self.finish(token, Err(e.into()));
                        return;
                    }
                }
            }
        }
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR) {
            match entry.socket.recv_from(&mut self.received) {
                Ok((len, SocketAddr::V4(from))) => {
                    let bytes = self.received.get(..len).unwrap_or_default();
                    entry.session.on_datagram(from, bytes, now);
                }
                // An IPv4 socket receives from IPv4 peers only.
                Ok((_, SocketAddr::V6(_))) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.finish(token, Err(e));
                    return;
                }
            }
        }
        self.progress(epoll, token);
    }

    /// Fires the deadlines due by `now`.
    fn expire(&mut self, epoll: &EpollSet, now: Instant) {
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
            if entry.done.is_closed() {
                // Nobody waits for the outcome (the server is being torn down).
                self.finish(token, Err(io::ErrorKind::Interrupted.into()));
                continue;
            }
            entry.session.on_timeout(now);
            self.progress(epoll, token);
        }
    }

    /// Sends what the session has due, then arms its next deadline or, if it finished,
    /// reports it.
    fn progress(&mut self, epoll: &EpollSet, token: Token) {
        let header = &mut self.header;
        let Some(slot) = self.slots.get_mut(token.index()) else {
            return;
        };
        let Some(entry) = slot.entry.as_mut() else {
            return;
        };
        while entry.blocked.is_none()
            && let Some((to, payload)) = entry.session.poll_transmit_parts(header)
        {
            match send(&entry.socket, to, header, payload) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut datagram = Vec::with_capacity(header.len() + payload.len());
                    datagram.extend_from_slice(header);
                    datagram.extend_from_slice(payload);
                    entry.blocked = Some((to, datagram));
                    let mut event =
                        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT, token.0);
                    if let Err(e) = epoll.0.modify(entry.socket.as_fd(), &mut event) {
                        self.finish(token, Err(e.into()));
                        return;
                    }
                }
                // As good as lost on the wire: the retransmission timer recovers, or the
                // retries run out.
                Err(e) => tracing::debug!(%to, error = %e, "tftp send failed"),
            }
        }
        match entry.session.poll_timeout() {
            None => {
                let outcome = entry
                    .session
                    .summary()
                    .ok_or_else(|| io::Error::other("a finished session without a summary"));
                self.finish(token, outcome);
            }
            Some(deadline) => {
                if entry.armed.is_none_or(|armed| armed > deadline) {
                    entry.armed = Some(deadline);
                    self.deadlines.push(Reverse((deadline, token)));
                }
            }
        }
    }

    /// Takes the transfer out (closing its socket, which leaves the epoll set with it) and
    /// reports `outcome`.
    fn finish(&mut self, token: Token, outcome: Outcome) {
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
        self.free.push(token.index());
        self.live -= 1;
        drop(entry.socket);
        let _ = entry.done.send(outcome);
        if self.deadlines.len() > 2 * self.live + HEAP_SLACK {
            let slots = &self.slots;
            self.deadlines.retain(|Reverse((at, token))| {
                slots.get(token.index()).is_some_and(|slot| {
                    slot.generation == token.generation()
                        && slot.entry.as_ref().is_some_and(|e| e.armed == Some(*at))
                })
            });
        }
    }

    /// Ends every transfer with `error` (the epoll set itself failed).
    fn fail_all(&mut self, error: &io::Error) {
        for index in 0..self.slots.len() {
            let generation = self.slots[index].generation;
            let outcome = Err(io::Error::new(error.kind(), error.to_string()));
            self.finish(Token::new(index, generation), outcome);
        }
    }
}

/// Sends `header` and `payload` as one datagram to `to`, without joining them first.
fn send(socket: &UdpSocket, to: SocketAddrV4, header: &[u8], payload: &[u8]) -> io::Result<()> {
    let iov = [IoSlice::new(header), IoSlice::new(payload)];
    let parts = if payload.is_empty() {
        &iov[..1]
    } else {
        &iov[..]
    };
    let to = SockaddrIn::from(to);
    sendmsg(
        socket.as_raw_fd(),
        parts,
        &[],
        MsgFlags::MSG_DONTWAIT,
        Some(&to),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The driver without tokio: its epoll set and heap, driven by hand against clients on
    //! loopback (as the integration tests in `tests/tftp.rs` run the whole server there).

    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::tftp::options::Negotiated;
    use crate::tftp::packet::{self, ErrorCode, Packet};
    use crate::tftp::session::SessionLimits;

    const LIMITS: SessionLimits = SessionLimits {
        max_retries: 3,
        time_limit: Duration::from_secs(60),
    };
    /// How long a test waits for what should come.
    const DEADLINE: Duration = Duration::from_secs(5);

    fn loopback_socket() -> UdpSocket {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding on loopback");
        socket.set_nonblocking(true).expect("non-blocking");
        socket
    }

    fn v4(addr: SocketAddr) -> SocketAddrV4 {
        match addr {
            SocketAddr::V4(addr) => addr,
            SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
        }
    }

    /// Serves ready sockets until `f` returns something; panics after [`DEADLINE`].
    fn serve_until<T>(
        driver: &mut Driver,
        epoll: &EpollSet,
        mut f: impl FnMut(&mut Driver) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            driver.serve_ready(epoll).expect("epoll_wait");
            if let Some(found) = f(driver) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "nothing came within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The next datagram waiting on `socket`, with its sender.
    fn receive(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddrV4)> {
        let mut buf = [0u8; 1024];
        let (len, from) = socket.recv_from(&mut buf).ok()?;
        Some((buf[..len].to_vec(), v4(from)))
    }

    #[test]
    fn one_driver_runs_lockstep_transfers_with_one_deadline_each_and_answers_strangers() {
        let epoll = EpollSet(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll"));
        let mut driver = Driver::default();
        let file: Arc<[u8]> = (0..10 * 512 + 100).map(|i| (i % 251) as u8).collect();
        let clients: Vec<UdpSocket> = (0..2).map(|_| loopback_socket()).collect();
        let mut outcomes = Vec::new();
        for client in &clients {
            let peer = v4(client.local_addr().expect("client address"));
            let session = Session::new(
                peer,
                file.clone(),
                &Negotiated::plain(),
                LIMITS,
                Instant::now(),
            );
            let (done, outcome) = oneshot::channel();
            driver.insert(
                &epoll,
                NewTransfer {
                    session,
                    socket: loopback_socket(),
                    done,
                },
            );
            outcomes.push(outcome);
        }

        let stranger = loopback_socket();
        let mut received = vec![Vec::new(); clients.len()];
        let mut finished = vec![false; clients.len()];
        let mut stranger_answered = false;
        serve_until(&mut driver, &epoll, |driver| {
            // A block's ACK moves its transfer's deadline later, which needs no new entry.
            assert!(
                driver.deadlines.len() <= clients.len(),
                "one entry per transfer"
            );
            for (i, client) in clients.iter().enumerate() {
                let Some((bytes, server)) = receive(client) else {
                    continue;
                };
                let Ok(Packet::Data { block, payload }) = Packet::parse(&bytes) else {
                    panic!("client {i} got {bytes:?}");
                };
                received[i].extend_from_slice(payload);
                finished[i] = payload.len() < 512;
                let mut ack = Vec::new();
                packet::write_ack(&mut ack, block);
                client.send_to(&ack, server).expect("sending an ACK");
                if i == 0 && block == 3 {
                    // RFC 1350 §4: another port gets ERROR 5 and the transfer carries on.
                    stranger
                        .send_to(&ack, server)
                        .expect("sending as a stranger");
                }
            }
            if let Some((bytes, _)) = receive(&stranger) {
                let code = match Packet::parse(&bytes) {
                    Ok(Packet::Error { code, .. }) => code,
                    other => panic!("the stranger got {other:?}"),
                };
                assert_eq!(code, ErrorCode::UnknownTransferId.number());
                stranger_answered = true;
            }
            (finished.iter().all(|f| *f) && stranger_answered && driver.is_empty()).then_some(())
        });

        for (i, data) in received.iter().enumerate() {
            assert!(data[..] == file[..], "client {i} got different bytes");
        }
        for mut outcome in outcomes {
            let summary = outcome
                .try_recv()
                .expect("an outcome")
                .expect("no socket error");
            assert_eq!(summary.result, Ok(()));
            assert_eq!(summary.bytes, file.len() as u64);
            assert_eq!(summary.retransmits, 0);
        }
    }

    #[test]
    fn a_finished_transfers_slot_is_reused_and_its_old_token_reaches_nothing() {
        let epoll = EpollSet(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll"));
        let mut driver = Driver::default();
        let client = loopback_socket();
        let peer = v4(client.local_addr().expect("client address"));
        let start = |driver: &mut Driver| {
            let session = Session::new(
                peer,
                Arc::from(&b"tiny"[..]),
                &Negotiated::plain(),
                LIMITS,
                Instant::now(),
            );
            let (done, outcome) = oneshot::channel();
            driver.insert(
                &epoll,
                NewTransfer {
                    session,
                    socket: loopback_socket(),
                    done,
                },
            );
            outcome
        };
        let mut first = start(&mut driver);
        let (_, server) = serve_until(&mut driver, &epoll, |_| receive(&client)).clone();
        let mut ack = Vec::new();
        packet::write_ack(&mut ack, 1);
        client.send_to(&ack, server).expect("sending ACK 1");
        serve_until(&mut driver, &epoll, |driver| {
            driver.is_empty().then_some(())
        });
        assert!(first.try_recv().is_ok_and(|o| o.is_ok()));

        let old = Token::new(0, 0);
        let _second = start(&mut driver);
        assert_eq!(driver.slots.len(), 1, "the slot is reused");
        assert!(driver.entry(old).is_none());
        driver.finish(old, Err(io::ErrorKind::Other.into()));
        assert!(!driver.is_empty(), "the old token ended nothing");
    }
}
