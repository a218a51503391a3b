//! The transfers in flight, driven together by one thread: every transfer's socket in one
//! epoll set, every retransmission deadline in one heap. This is the shape of dnsmasq's TFTP
//! loop (one `poll` over all transfer sockets, then each ready one served: `check_tftp_listeners`
//! in `src/tftp.c`), instead of a tokio task, a reactor registration and a timer per transfer.
//!
//! Why (measured with `cargo xtask bench-tftp`'s concurrent case, 256 lockstep transfers; the
//! numbers are in BENCHMARKS.md): with a task per transfer each block cost a send, two
//! receives (the second only to learn the socket was empty: tokio keeps a socket "ready" until
//! a read fails), a share of an `epoll_wait` that woke few tasks (tokio registers a socket for
//! writing too, so every send also reported it writable), and a task wake-up, often across
//! threads. Here a block costs a send, one receive and a share of one `epoll_wait`:
//! - The epoll set is level-triggered and registered for reading only: a ready socket is read
//!   once per wait and, should more be queued, reported again by the next wait, so no read is
//!   spent on an empty socket.
//! - The thread sleeps in `epoll_wait` itself, until a socket is ready, the next deadline, or
//!   the eventfd through which a [`Handoff`] brings a new transfer. A tokio task here (the set
//!   registered with the runtime, tried first) cost more per block: two `epoll_wait`s per
//!   wake-up, and the task moving between worker threads.
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
//!
//! The transfer's task ([`super::server`]) opens the file, starts the session and hands it
//! over; it gets the summary back through a oneshot channel and logs it. The thread holds no
//! lock while it runs and shares nothing but the handoff queue.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{MsgFlags, SockaddrStorage, sendmsg};
use tokio::sync::oneshot;

use super::session::{Session, Summary};

/// Ready sockets taken from the epoll set per wait.
const EVENTS_PER_WAIT: usize = 256;
/// A client's ACK is 4 bytes and its ERROR short; longer datagrams are truncated harmlessly.
const RECEIVE_BUFFER: usize = 516;
/// The deadline heap is rebuilt without the entries of finished transfers once it holds more
/// than twice as many entries as transfers, plus this slack.
const HEAP_SLACK: usize = 1024;
/// The epoll data of the wake-up eventfd; transfer tokens never reach it (see [`Token`]).
const WAKE: u64 = u64::MAX;

/// What a transfer's task hears back: the finished session's summary, or the socket error
/// that ended it.
pub(super) type Outcome = io::Result<Summary>;

/// A transfer to drive: its session (already started), its socket, and where to report.
pub(super) struct NewTransfer {
    pub(super) session: Session,
    pub(super) socket: UdpSocket,
    pub(super) done: oneshot::Sender<Outcome>,
}

/// The running driver thread. Dropping this ends it and every transfer it holds.
pub(super) struct Transfers {
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
}

impl Drop for Transfers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.write(1);
    }
}

/// The driver thread has ended.
#[derive(Debug)]
pub(super) struct DriverGone;

/// Hands transfers to the driver thread; one per transfer task. The queue behind it is not
/// bounded by itself: every transfer in it holds one of the server's `max_transfers` slots.
#[derive(Clone)]
pub(super) struct Handoff {
    queue: mpsc::Sender<NewTransfer>,
    wake: Arc<EventFd>,
}

impl Handoff {
    /// Gives `new` to the driver; if the driver is gone, `new` is dropped (its `done` with it).
    pub(super) fn hand(&self, new: NewTransfer) -> Result<(), DriverGone> {
        self.queue.send(new).map_err(|_| DriverGone)?;
        // Only fails if the counter would overflow, i.e. never; a wake-up is pending anyway.
        let _ = self.wake.write(1);
        Ok(())
    }
}

impl Transfers {
    /// Starts the driver thread; transfers are handed to it through the returned [`Handoff`].
    /// The thread ends when the returned [`Transfers`] is dropped, or when, woken, it finds
    /// every handoff gone and its last transfer finished.
    pub(super) fn start() -> io::Result<(Transfers, Handoff)> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (queue, incoming) = mpsc::channel();
        let thread = Thread {
            epoll,
            wake: wake.clone(),
            incoming,
            stop: stop.clone(),
        };
        std::thread::Builder::new()
            .name("tftp-transfers".into())
            .spawn(move || thread.run())?;
        Ok((
            Transfers {
                stop,
                wake: wake.clone(),
            },
            Handoff { queue, wake },
        ))
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
            let woken = match driver.turn(&self.epoll, true) {
                Ok(woken) => woken,
                Err(e) => {
                    let e = io::Error::from(e);
                    driver.fail_all(&e);
                    tracing::error!(error = %e, "waiting on the tftp transfers' sockets failed");
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
            if !open && driver.is_empty() {
                return;
            }
        }
    }
}

/// A transfer's place in the driver's table, and the epoll data of its socket: the slot index
/// in the low 32 bits, the slot's generation in the high ones, so an event or deadline of a
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
    blocked: Option<(SocketAddr, Vec<u8>)>,
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

    fn insert(&mut self, epoll: &Epoll, new: NewTransfer) {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                generation: 0,
                entry: None,
            });
            self.slots.len() - 1
        });
        let slot = &mut self.slots[index];
        let token = Token::new(index, slot.generation);
        if let Err(e) = epoll.add(
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

    /// One turn: waits for ready sockets, until the next deadline at the latest (not at all
    /// with `block` false); serves them; fires the deadlines due. `Ok(true)` if the wake-up
    /// eventfd was among the ready ones.
    fn turn(&mut self, epoll: &Epoll, block: bool) -> nix::Result<bool> {
        let timeout = if block {
            // epoll_wait counts milliseconds; rounding up wakes at most a millisecond late,
            // never early (timeouts are whole seconds, RFC 2349). Without a deadline, only a
            // socket or the eventfd wakes the thread.
            let now = Instant::now();
            self.next_deadline().map_or(PollTimeout::NONE, |at| {
                let millis = at.saturating_duration_since(now).as_micros().div_ceil(1000);
                PollTimeout::from(u16::try_from(millis).unwrap_or(u16::MAX))
            })
        } else {
            PollTimeout::ZERO
        };
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
                self.on_event(epoll, Token(event.data()), event.events(), now);
            }
        }
        self.events = events;
        self.expire(epoll, now);
        Ok(woken)
    }

    fn on_event(&mut self, epoll: &Epoll, token: Token, flags: EpollFlags, now: Instant) {
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
                    if let Err(e) = epoll.modify(entry.socket.as_fd(), &mut event) {
                        self.finish(token, Err(e.into()));
                        return;
                    }
                }
            }
        }
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR) {
            match entry.socket.recv_from(&mut self.received) {
                Ok((len, from)) => {
                    let bytes = self.received.get(..len).unwrap_or_default();
                    entry.session.on_datagram(from, bytes, now);
                }
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
    fn progress(&mut self, epoll: &Epoll, token: Token) {
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
                    if let Err(e) = epoll.modify(entry.socket.as_fd(), &mut event) {
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
fn send(socket: &UdpSocket, to: SocketAddr, header: &[u8], payload: &[u8]) -> io::Result<()> {
    let iov = [IoSlice::new(header), IoSlice::new(payload)];
    let parts = if payload.is_empty() {
        &iov[..1]
    } else {
        &iov[..]
    };
    let to = SockaddrStorage::from(to);
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

    /// Serves ready sockets until `f` returns something; panics after [`DEADLINE`].
    fn serve_until<T>(
        driver: &mut Driver,
        epoll: &Epoll,
        mut f: impl FnMut(&mut Driver) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            driver.turn(epoll, false).expect("epoll_wait");
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
    fn receive(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 1024];
        let (len, from) = socket.recv_from(&mut buf).ok()?;
        Some((buf[..len].to_vec(), from))
    }

    #[test]
    fn one_driver_runs_lockstep_transfers_with_one_deadline_each_and_answers_strangers() {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
        let mut driver = Driver::default();
        let file: Arc<[u8]> = (0..10 * 512 + 100).map(|i| (i % 251) as u8).collect();
        let clients: Vec<UdpSocket> = (0..2).map(|_| loopback_socket()).collect();
        let mut outcomes = Vec::new();
        for client in &clients {
            let peer = client.local_addr().expect("client address");
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
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
        let mut driver = Driver::default();
        let client = loopback_socket();
        let peer = client.local_addr().expect("client address");
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
