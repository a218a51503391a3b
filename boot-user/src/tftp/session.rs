//! One read transfer, sans I/O, in the manner of quinn-proto's `Connection`: the caller feeds
//! it datagrams ([`Session::on_datagram`]) and timer expiries ([`Session::on_timeout`]), both
//! with the current time, and drains what to send with [`Session::poll_transmit`] (or
//! [`Session::poll_transmit_parts`], which leaves a block's bytes in the shared file) and when
//! to wake it with [`Session::poll_timeout`]. No sockets, no clocks: tests drive it in simulated
//! time.
//!
//! Flow (RFC 1350 §4, RFC 2347, RFC 7440 §4):
//! - With options acknowledged, the server sends an OACK and waits for ACK 0; otherwise it
//!   starts with DATA 1.
//! - DATA goes out a window at a time (`windowsize` blocks, 1 without RFC 7440). An ACK for
//!   block `n` confirms everything up to `n`, and the next window starts at `n + 1`: after the
//!   last block of a window that is simply the next window; an ACK for a block inside the
//!   window is how an RFC 7440 receiver reports a gap, and the window restarts after it.
//! - A duplicate or stale ACK changes nothing and sends nothing. Answering duplicates is the
//!   Sorcerer's Apprentice bug (RFC 1123 §4.2.3.1): every retransmission would double the
//!   traffic from then on. Lost packets are recovered by the retransmission timer only.
//! - On a timeout the window is sent again from the first unacknowledged block, at most
//!   `max_retries` times in a row; then the client is given up on.
//! - A transfer also ends when it exceeds its total time limit, when the client sends an
//!   ERROR (ERROR 8 refusing the OACK, RFC 2347), or when the last block is acknowledged.
//!
//! Block numbers are 16 bits on the wire and roll over from 65535 to 0, as the tftp-hpa and
//! atftp clients (tested) and U-Boot expect; the session counts blocks in 64 bits, so files
//! of more than 65535 blocks (32 MiB at 512 bytes) transfer correctly. (Rolling over to 1
//! instead is a minority convention, and RFC 1350 does not define a rollover at all.)

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::options::{MIN_BLKSIZE, Negotiated};
use super::packet::{self, ErrorCode, Packet, TftpOption};

/// How many ERROR 5 replies to strangers may wait to be sent; more are dropped. A flood of
/// packets to a transfer's port must not grow memory.
const MAX_QUEUED_STRANGER_REPLIES: usize = 8;
/// Client error messages are kept for the log up to this many characters.
const MAX_CLIENT_MESSAGE_CHARS: usize = 100;

/// Bounds of one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Retransmissions in a row without progress before the client is given up on.
    pub max_retries: u32,
    /// From the request to the last ACK.
    pub time_limit: Duration,
}

/// Why a transfer did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("no acknowledgement after {retries} retransmissions")]
    TimedOut { retries: u32 },
    #[error("exceeded the transfer time limit of {0:?}")]
    TimeLimit(Duration),
    #[error("client refused the options (ERROR {code}: {message:?})")]
    OptionsRefused { code: u16, message: String },
    #[error("client aborted (ERROR {code}: {message:?})")]
    Aborted { code: u16, message: String },
}

impl TransferError {
    /// A stable label for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            TransferError::TimedOut { .. } => "timed_out",
            TransferError::TimeLimit(_) => "time_limit",
            TransferError::OptionsRefused { .. } => "options_refused",
            TransferError::Aborted { .. } => "aborted",
        }
    }
}

/// What a finished transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub result: Result<(), TransferError>,
    /// Bytes the client acknowledged.
    pub bytes: u64,
    pub file_len: u64,
    /// Blocks the client acknowledged.
    pub blocks: u64,
    /// Datagrams sent to the client (OACK, DATA and ERROR), retransmissions included.
    pub datagrams: u64,
    /// Of those, OACK and DATA packets sent more than once.
    pub retransmits: u64,
    pub duration: Duration,
    pub blksize: u16,
    pub windowsize: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// OACK sent (or due), waiting for ACK 0 (RFC 2347).
    Negotiating {
        oack_due: bool,
    },
    Sending,
    Finished {
        result: Result<(), TransferError>,
        at: Instant,
    },
}

/// One read transfer to one client (its TID being its address and port, RFC 1350 §4).
#[derive(Debug)]
pub struct Session {
    peer: SocketAddr,
    file: Arc<[u8]>,
    blksize: u16,
    windowsize: u16,
    timeout: Duration,
    limits: SessionLimits,
    oack: Vec<TftpOption>,
    started: Instant,
    phase: Phase,
    /// Blocks are counted from 1; `last_block` is the short (possibly empty) final one.
    last_block: u64,
    /// The highest block acknowledged (0: none).
    acked: u64,
    /// The next block to send, and the last block of the current window.
    next: u64,
    window_end: u64,
    /// The highest block sent so far; sending one at or below it is a retransmission.
    highest_sent: u64,
    oack_sent: bool,
    /// Consecutive timeouts without progress.
    retries: u32,
    /// When to retransmit.
    deadline: Instant,
    error_to_peer: Option<(ErrorCode, &'static str)>,
    strangers: VecDeque<SocketAddr>,
    datagrams: u64,
    retransmits: u64,
}

impl Session {
    /// Starts serving `file` to `peer` with the agreed options; the first datagram (OACK or
    /// DATA 1) is ready in [`Session::poll_transmit`].
    pub fn new(
        peer: SocketAddr,
        file: Arc<[u8]>,
        negotiated: &Negotiated,
        limits: SessionLimits,
        now: Instant,
    ) -> Session {
        let blksize = negotiated.blksize.max(MIN_BLKSIZE);
        let windowsize = negotiated.windowsize.max(1);
        // A file of n full blocks ends with an empty block (RFC 1350 §6: a DATA packet shorter
        // than the block size ends the transfer).
        let last_block = file.len() as u64 / u64::from(blksize) + 1;
        let oack = negotiated.acknowledged.clone();
        let phase = if oack.is_empty() {
            Phase::Sending
        } else {
            Phase::Negotiating { oack_due: true }
        };
        Session {
            peer,
            file,
            blksize,
            windowsize,
            timeout: negotiated.timeout,
            limits,
            oack,
            started: now,
            phase,
            last_block,
            acked: 0,
            next: 1,
            window_end: u64::from(windowsize).min(last_block),
            highest_sent: 0,
            oack_sent: false,
            retries: 0,
            deadline: now + negotiated.timeout,
            error_to_peer: None,
            strangers: VecDeque::new(),
            datagrams: 0,
            retransmits: 0,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished { .. })
    }

    /// Writes the next datagram due into `buf` and returns where it goes; `None` when nothing
    /// is due. Call until `None` after every event.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let (to, payload) = self.poll_transmit_parts(buf)?;
        buf.extend_from_slice(payload);
        Some(to)
    }

    /// As [`Session::poll_transmit`], but a DATA packet's payload is not copied: `buf` gets
    /// the packet up to it (the 4-byte header) and the payload is returned as a slice of the
    /// file, for a vectored send. For other packets `buf` is the whole datagram and the payload
    /// empty.
    pub fn poll_transmit_parts(&mut self, buf: &mut Vec<u8>) -> Option<(SocketAddr, &[u8])> {
        if let Some(stranger) = self.strangers.pop_front() {
            packet::write_error(buf, ErrorCode::UnknownTransferId, "unknown transfer ID");
            return Some((stranger, &[]));
        }
        if let Some((code, message)) = self.error_to_peer.take() {
            packet::write_error(buf, code, message);
            self.datagrams += 1;
            return Some((self.peer, &[]));
        }
        let mut block = None;
        match &mut self.phase {
            Phase::Negotiating { oack_due } if *oack_due => {
                *oack_due = false;
                packet::write_oack(buf, &self.oack);
                if self.oack_sent {
                    self.retransmits += 1;
                }
                self.oack_sent = true;
            }
            Phase::Sending if self.next <= self.window_end => {
                let number = self.next;
                packet::write_data_header(buf, wire_block(number));
                if number <= self.highest_sent {
                    self.retransmits += 1;
                } else {
                    self.highest_sent = number;
                }
                self.next += 1;
                block = Some(number);
            }
            _ => return None,
        }
        self.datagrams += 1;
        let payload = block.map_or(&[][..], |number| self.block_bytes(number));
        Some((self.peer, payload))
    }

    /// When [`Session::on_timeout`] is next due; `None` once finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_finished() {
            return None;
        }
        Some(self.deadline.min(self.started + self.limits.time_limit))
    }

    /// A datagram arrived on the transfer's port from `from`.
    pub fn on_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        if self.is_finished() {
            return;
        }
        let packet = Packet::parse(bytes);
        if from != self.peer {
            // RFC 1350 §4: a packet from an unknown TID gets ERROR 5 and leaves the transfer
            // alone. An ERROR is never answered (two servers must not loop on each other).
            if !matches!(packet, Ok(Packet::Error { .. }))
                && self.strangers.len() < MAX_QUEUED_STRANGER_REPLIES
            {
                self.strangers.push_back(from);
            }
            return;
        }
        match packet {
            Ok(Packet::Ack { block }) => self.on_ack(block, now),
            Ok(Packet::Error { code, message }) => {
                let message = client_message(message);
                let error = if code == ErrorCode::OptionsRefused.number() {
                    TransferError::OptionsRefused { code, message }
                } else {
                    TransferError::Aborted { code, message }
                };
                self.finish(Err(error), now);
            }
            // A DATA, OACK or request from the client, or garbage: not part of a read
            // transfer's exchange; ignored.
            _ => {}
        }
    }

    fn on_ack(&mut self, wire: u16, now: Instant) {
        match self.phase {
            Phase::Negotiating { .. } => {
                // RFC 2347: the client confirms the OACK with ACK 0; then DATA 1 follows.
                if wire == 0 {
                    self.phase = Phase::Sending;
                    self.retries = 0;
                    self.deadline = now + self.timeout;
                }
            }
            Phase::Sending => {
                // Which outstanding block this is: the unique one in (acked, highest_sent]
                // with these low 16 bits (a window is far shorter than 65536 blocks).
                let ahead = u64::from(wire.wrapping_sub(wire_block(self.acked)));
                if ahead == 0 || ahead > self.highest_sent - self.acked {
                    return; // duplicate or stale: see the module comment
                }
                self.acked += ahead;
                self.retries = 0;
                if self.acked == self.last_block {
                    self.finish(Ok(()), now);
                    return;
                }
                // RFC 7440 §4: the next window starts after the acknowledged block, also
                // when that block was inside the window (the receiver saw a gap).
                self.next = self.acked + 1;
                self.window_end = (self.acked + u64::from(self.windowsize)).min(self.last_block);
                self.deadline = now + self.timeout;
            }
            Phase::Finished { .. } => {}
        }
    }

    /// The retransmission timer or the time limit may have expired.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.is_finished() {
            return;
        }
        if now >= self.started + self.limits.time_limit {
            self.error_to_peer = Some((ErrorCode::NotDefined, "transfer time limit exceeded"));
            self.finish(Err(TransferError::TimeLimit(self.limits.time_limit)), now);
            return;
        }
        if now < self.deadline {
            return;
        }
        if self.retries >= self.limits.max_retries {
            // Nothing is sent: a client that stopped answering is gone or is not listening.
            let retries = self.retries;
            self.finish(Err(TransferError::TimedOut { retries }), now);
            return;
        }
        self.retries += 1;
        self.deadline = now + self.timeout;
        match &mut self.phase {
            Phase::Negotiating { oack_due } => *oack_due = true,
            Phase::Sending => self.next = self.acked + 1,
            Phase::Finished { .. } => {}
        }
    }

    /// The outcome and counters; `None` while the transfer runs.
    pub fn summary(&self) -> Option<Summary> {
        let Phase::Finished { result, at } = &self.phase else {
            return None;
        };
        let len = self.file.len() as u64;
        Some(Summary {
            result: result.clone(),
            bytes: (self.acked * u64::from(self.blksize)).min(len),
            file_len: len,
            blocks: self.acked,
            datagrams: self.datagrams,
            retransmits: self.retransmits,
            duration: at.saturating_duration_since(self.started),
            blksize: self.blksize,
            windowsize: self.windowsize,
        })
    }

    fn finish(&mut self, result: Result<(), TransferError>, now: Instant) {
        self.phase = Phase::Finished { result, at: now };
    }

    /// The bytes of block `block` (1-based); the last one is short, possibly empty.
    fn block_bytes(&self, block: u64) -> &[u8] {
        let size = u64::from(self.blksize);
        let len = self.file.len() as u64;
        let start = (block.saturating_sub(1) * size).min(len);
        let end = (start + size).min(len);
        // start <= end <= len, and both fit usize because len does.
        self.file.get(start as usize..end as usize).unwrap_or(&[])
    }
}

/// The 16-bit block number on the wire: the low bits, rolling over from 65535 to 0.
fn wire_block(block: u64) -> u16 {
    (block & 0xffff) as u16
}

/// A client's ERROR message made safe for a log line.
fn client_message(message: &[u8]) -> String {
    String::from_utf8_lossy(message)
        .chars()
        .take(MAX_CLIENT_MESSAGE_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::tftp::options::{self, Limits};

    const CLIENT: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 50), 2070));
    const TIMEOUT: Duration = Duration::from_secs(1);
    const LIMITS: SessionLimits = SessionLimits {
        max_retries: 3,
        time_limit: Duration::from_secs(60),
    };

    /// A deterministic file whose every byte depends on its offset, so misplaced blocks show.
    fn file(len: usize) -> Arc<[u8]> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn negotiated(blksize: u16, windowsize: u16) -> Negotiated {
        Negotiated {
            blksize,
            windowsize,
            ..Negotiated::plain()
        }
    }

    /// Everything the session wants to send now, as parsed packets with their destination.
    fn drain(session: &mut Session) -> Vec<(SocketAddr, Sent)> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(to) = session.poll_transmit(&mut buf) {
            out.push((to, Sent::from(&buf)));
        }
        out
    }

    /// What the client sees, simplified for assertions.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Sent {
        Data(u16, Vec<u8>),
        Oack(Vec<TftpOption>),
        Error(u16),
    }

    impl Sent {
        fn from(bytes: &[u8]) -> Sent {
            match Packet::parse(bytes) {
                Ok(Packet::Data { block, payload }) => Sent::Data(block, payload.to_vec()),
                Ok(Packet::Oack(options)) => Sent::Oack(options),
                Ok(Packet::Error { code, .. }) => Sent::Error(code),
                other => panic!("the server sent {other:?}"),
            }
        }
    }

    /// The block numbers of the DATA packets in `sent`.
    fn blocks(sent: &[(SocketAddr, Sent)]) -> Vec<u16> {
        sent.iter()
            .filter_map(|(_, s)| match s {
                Sent::Data(block, _) => Some(*block),
                _ => None,
            })
            .collect()
    }

    fn ack(block: u16) -> Vec<u8> {
        let mut buf = Vec::new();
        packet::write_ack(&mut buf, block);
        buf
    }

    fn error(code: ErrorCode) -> Vec<u8> {
        let mut buf = Vec::new();
        packet::write_error(&mut buf, code, "no thanks");
        buf
    }

    #[test]
    fn a_plain_tftp_request_is_served_block_by_block_without_an_oack() {
        let t0 = Instant::now();
        let data = file(1300);
        let mut s = Session::new(CLIENT, data.clone(), &Negotiated::plain(), LIMITS, t0);
        let mut received = Vec::new();
        for block in 1..=3u16 {
            let sent = drain(&mut s);
            assert_eq!(blocks(&sent), [block]);
            let (to, Sent::Data(_, payload)) = &sent[0] else {
                unreachable!()
            };
            assert_eq!(*to, CLIENT);
            received.extend_from_slice(payload);
            s.on_datagram(CLIENT, &ack(block), t0);
        }
        assert_eq!(received, &data[..]);
        assert!(drain(&mut s).is_empty());
        let summary = s.summary().expect("finished");
        assert_eq!(summary.result, Ok(()));
        assert_eq!((summary.bytes, summary.blocks), (1300, 3));
        assert_eq!((summary.datagrams, summary.retransmits), (3, 0));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_tftp_file_of_whole_blocks_ends_with_an_empty_block() {
        let t0 = Instant::now();
        let mut s = Session::new(CLIENT, file(1024), &Negotiated::plain(), LIMITS, t0);
        for block in 1..=2 {
            assert_eq!(blocks(&drain(&mut s)), [block]);
            s.on_datagram(CLIENT, &ack(block), t0);
        }
        assert_eq!(drain(&mut s), [(CLIENT, Sent::Data(3, vec![]))]);
        s.on_datagram(CLIENT, &ack(3), t0);
        assert_eq!(
            s.summary().map(|s| (s.result, s.bytes)),
            Some((Ok(()), 1024))
        );

        // And an empty file is one empty block.
        let mut s = Session::new(CLIENT, file(0), &Negotiated::plain(), LIMITS, t0);
        assert_eq!(drain(&mut s), [(CLIENT, Sent::Data(1, vec![]))]);
        s.on_datagram(CLIENT, &ack(1), t0);
        assert!(s.summary().is_some_and(|s| s.result.is_ok()));
    }

    #[test]
    fn a_data_packet_in_parts_is_its_header_and_a_slice_of_the_shared_file() {
        let t0 = Instant::now();
        let data = file(700);
        let mut s = Session::new(CLIENT, data.clone(), &Negotiated::plain(), LIMITS, t0);
        let mut header = Vec::new();
        let (to, payload) = s.poll_transmit_parts(&mut header).expect("DATA 1");
        assert_eq!(to, CLIENT);
        assert_eq!(header, [0, 3, 0, 1]);
        assert!(
            std::ptr::eq(payload, &data[..512]),
            "the payload is not copied"
        );
        s.on_datagram(CLIENT, &ack(1), t0);
        // Joined, the parts are what poll_transmit writes.
        let mut whole = Vec::new();
        assert_eq!(s.poll_transmit(&mut whole), Some(CLIENT));
        let mut joined = Vec::new();
        let mut again = Session::new(CLIENT, data.clone(), &Negotiated::plain(), LIMITS, t0);
        again.poll_transmit(&mut Vec::new());
        again.on_datagram(CLIENT, &ack(1), t0);
        let (_, payload) = again.poll_transmit_parts(&mut joined).expect("DATA 2");
        joined.extend_from_slice(payload);
        assert_eq!(joined, whole);
        assert_eq!(Sent::from(&whole), Sent::Data(2, data[512..].to_vec()));
    }

    #[test]
    fn tftp_options_are_confirmed_with_an_oack_and_data_waits_for_ack_0() {
        let t0 = Instant::now();
        let limits = Limits {
            max_blksize: 1468,
            max_windowsize: 64,
        };
        let asked = [
            TftpOption::new("tsize", 0),
            TftpOption::new("blksize", 1468),
        ];
        let n = options::negotiate(&asked, 3000, limits);
        let mut s = Session::new(CLIENT, file(3000), &n, LIMITS, t0);
        assert_eq!(
            drain(&mut s),
            [(
                CLIENT,
                Sent::Oack(vec![
                    TftpOption::new("tsize", 3000),
                    TftpOption::new("blksize", 1468)
                ])
            )]
        );
        // Nothing but ACK 0 moves it on.
        s.on_datagram(CLIENT, &ack(1), t0);
        assert!(drain(&mut s).is_empty());
        s.on_datagram(CLIENT, &ack(0), t0);
        let sent = drain(&mut s);
        assert_eq!(blocks(&sent), [1]);
        let (_, Sent::Data(_, payload)) = &sent[0] else {
            unreachable!()
        };
        assert_eq!(payload.len(), 1468);
    }

    #[test]
    fn a_lost_oack_is_sent_again_after_the_timeout() {
        let t0 = Instant::now();
        let n = options::negotiate(
            &[TftpOption::new("blksize", 1024)],
            10,
            Limits {
                max_blksize: 1468,
                max_windowsize: 1,
            },
        );
        let mut s = Session::new(CLIENT, file(10), &n, LIMITS, t0);
        assert!(matches!(drain(&mut s)[..], [(_, Sent::Oack(_))]));
        s.on_timeout(t0 + TIMEOUT);
        assert!(matches!(drain(&mut s)[..], [(_, Sent::Oack(_))]));
        s.on_datagram(CLIENT, &ack(0), t0 + TIMEOUT);
        assert_eq!(blocks(&drain(&mut s)), [1]);
        s.on_datagram(CLIENT, &ack(1), t0 + TIMEOUT);
        assert_eq!(s.summary().map(|s| s.retransmits), Some(1));
    }

    #[test]
    fn a_client_refusing_the_oack_with_error_8_ends_the_tftp_transfer() {
        let t0 = Instant::now();
        let n = Negotiated {
            acknowledged: vec![TftpOption::new("blksize", 1468)],
            ..negotiated(1468, 1)
        };
        let mut s = Session::new(CLIENT, file(5000), &n, LIMITS, t0);
        drain(&mut s);
        s.on_datagram(CLIENT, &error(ErrorCode::OptionsRefused), t0);
        assert!(drain(&mut s).is_empty(), "an ERROR is never answered");
        let summary = s.summary().expect("finished");
        assert_eq!(
            summary.result,
            Err(TransferError::OptionsRefused {
                code: 8,
                message: "no thanks".into()
            })
        );
        assert_eq!(summary.bytes, 0);
    }

    #[test]
    fn an_error_from_the_tftp_client_aborts_the_transfer() {
        let t0 = Instant::now();
        let mut s = Session::new(CLIENT, file(5000), &Negotiated::plain(), LIMITS, t0);
        drain(&mut s);
        s.on_datagram(CLIENT, &ack(1), t0);
        drain(&mut s);
        s.on_datagram(CLIENT, &error(ErrorCode::DiskFull), t0);
        let summary = s.summary().expect("finished");
        assert_eq!(summary.result.map_err(|e| e.name()), Err("aborted"));
        assert_eq!(summary.bytes, 512);
    }

    #[test]
    fn a_lost_tftp_data_block_is_sent_again_after_the_timeout() {
        let t0 = Instant::now();
        let mut s = Session::new(CLIENT, file(700), &Negotiated::plain(), LIMITS, t0);
        assert_eq!(blocks(&drain(&mut s)), [1]); // lost on the way
        assert_eq!(s.poll_timeout(), Some(t0 + TIMEOUT));
        s.on_timeout(t0 + TIMEOUT);
        assert_eq!(blocks(&drain(&mut s)), [1]);
        s.on_datagram(CLIENT, &ack(1), t0 + TIMEOUT);
        assert_eq!(blocks(&drain(&mut s)), [2]);
        s.on_datagram(CLIENT, &ack(2), t0 + TIMEOUT);
        let summary = s.summary().expect("finished");
        assert_eq!((summary.datagrams, summary.retransmits), (3, 1));
    }

    #[test]
    fn early_timer_wakeups_change_nothing() {
        let t0 = Instant::now();
        let mut s = Session::new(CLIENT, file(700), &Negotiated::plain(), LIMITS, t0);
        drain(&mut s);
        s.on_timeout(t0 + TIMEOUT / 2);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.poll_timeout(), Some(t0 + TIMEOUT));
    }

    #[test]
    fn duplicate_tftp_acks_never_trigger_a_retransmission() {
        // The Sorcerer's Apprentice (RFC 1123 §4.2.3.1): DATA 1 is delayed, the server times
        // out and sends it again, the client acknowledges both copies. Only the first ACK may
        // release DATA 2; the duplicate must not send DATA 2 a second time, or every block
        // from then on would travel twice.
        let t0 = Instant::now();
        let mut s = Session::new(CLIENT, file(2000), &Negotiated::plain(), LIMITS, t0);
        assert_eq!(blocks(&drain(&mut s)), [1]);
        s.on_timeout(t0 + TIMEOUT);
        assert_eq!(blocks(&drain(&mut s)), [1]);
        let t1 = t0 + TIMEOUT + Duration::from_millis(5);
        s.on_datagram(CLIENT, &ack(1), t1);
        assert_eq!(blocks(&drain(&mut s)), [2]);
        s.on_datagram(CLIENT, &ack(1), t1);
        assert!(drain(&mut s).is_empty());
        for block in 2..=4 {
            s.on_datagram(CLIENT, &ack(block), t1);
            s.on_datagram(CLIENT, &ack(block), t1);
            let sent = blocks(&drain(&mut s));
            assert!(sent.len() <= 1, "after ACK {block}: {sent:?}");
        }
        let summary = s.summary().expect("finished");
        assert_eq!((summary.datagrams, summary.retransmits), (5, 1));
    }

    #[test]
    fn stale_and_future_tftp_acks_are_ignored() {
        let t0 = Instant::now();
        let mut s = Session::new(CLIENT, file(5000), &Negotiated::plain(), LIMITS, t0);
        drain(&mut s);
        s.on_datagram(CLIENT, &ack(1), t0);
        drain(&mut s);
        // Block 9 was never sent; block 0 and 1 are old news.
        for bogus in [9, 0, 1, 65535] {
            s.on_datagram(CLIENT, &ack(bogus), t0);
            assert!(drain(&mut s).is_empty(), "ACK {bogus}");
        }
        s.on_datagram(CLIENT, &ack(2), t0);
        assert_eq!(blocks(&drain(&mut s)), [3]);
    }

    #[test]
    fn tftp_retries_are_bounded_and_a_silent_client_is_cut_off() {
        let t0 = Instant::now();
        let mut s = Session::new(CLIENT, file(5000), &Negotiated::plain(), LIMITS, t0);
        let mut sends = blocks(&drain(&mut s)).len();
        let mut now = t0;
        while let Some(deadline) = s.poll_timeout() {
            assert!(
                now - t0 < Duration::from_secs(10),
                "still running at {now:?}"
            );
            now = deadline;
            s.on_timeout(now);
            sends += blocks(&drain(&mut s)).len();
        }
        assert_eq!(sends, 1 + LIMITS.max_retries as usize);
        assert_eq!(now - t0, TIMEOUT * (LIMITS.max_retries + 1));
        let summary = s.summary().expect("finished");
        assert_eq!(
            summary.result,
            Err(TransferError::TimedOut {
                retries: LIMITS.max_retries
            })
        );
    }

    #[test]
    fn the_time_limit_ends_a_slow_tftp_transfer_with_an_error() {
        // A client acknowledging every block just before the timeout would otherwise keep
        // its transfer (and a slot) for ever.
        let t0 = Instant::now();
        let limits = SessionLimits {
            max_retries: 3,
            time_limit: Duration::from_secs(5),
        };
        let mut s = Session::new(CLIENT, file(100_000), &Negotiated::plain(), limits, t0);
        let mut now = t0;
        let mut block = 0u16;
        loop {
            let sent = drain(&mut s);
            if s.is_finished() {
                assert_eq!(sent, [(CLIENT, Sent::Error(0))]);
                break;
            }
            assert_eq!(blocks(&sent), [block + 1]);
            now += Duration::from_millis(900);
            s.on_timeout(now);
            if s.is_finished() {
                continue;
            }
            block += 1;
            s.on_datagram(CLIENT, &ack(block), now);
        }
        let summary = s.summary().expect("finished");
        assert_eq!(
            summary.result,
            Err(TransferError::TimeLimit(limits.time_limit))
        );
        assert_eq!(summary.duration, Duration::from_millis(5400));
    }

    #[test]
    fn a_packet_from_another_port_gets_error_5_and_the_tftp_transfer_carries_on() {
        let t0 = Instant::now();
        let stranger = SocketAddr::new(CLIENT.ip(), CLIENT.port() + 1);
        let mut s = Session::new(CLIENT, file(2000), &Negotiated::plain(), LIMITS, t0);
        assert_eq!(blocks(&drain(&mut s)), [1]);
        s.on_datagram(stranger, &ack(1), t0);
        assert_eq!(drain(&mut s), [(stranger, Sent::Error(5))]);
        // An ERROR from a stranger is not answered (no error ping-pong).
        s.on_datagram(stranger, &error(ErrorCode::UnknownTransferId), t0);
        assert!(drain(&mut s).is_empty());
        // A flood from strangers queues a bounded number of replies.
        for _ in 0..1000 {
            s.on_datagram(stranger, &ack(1), t0);
        }
        assert_eq!(drain(&mut s).len(), MAX_QUEUED_STRANGER_REPLIES);
        // The real client's transfer is untouched.
        s.on_datagram(CLIENT, &ack(1), t0);
        assert_eq!(blocks(&drain(&mut s)), [2]);
    }

    #[test]
    fn a_tftp_window_is_sent_per_ack() {
        let t0 = Instant::now();
        let data = file(10 * 512 + 100);
        let mut s = Session::new(CLIENT, data.clone(), &negotiated(512, 4), LIMITS, t0);
        assert_eq!(blocks(&drain(&mut s)), [1, 2, 3, 4]);
        s.on_datagram(CLIENT, &ack(4), t0);
        assert_eq!(blocks(&drain(&mut s)), [5, 6, 7, 8]);
        s.on_datagram(CLIENT, &ack(8), t0);
        assert_eq!(blocks(&drain(&mut s)), [9, 10, 11]);
        s.on_datagram(CLIENT, &ack(11), t0);
        let summary = s.summary().expect("finished");
        assert_eq!(summary.result, Ok(()));
        assert_eq!((summary.datagrams, summary.retransmits), (11, 0));
    }

    #[test]
    fn a_block_lost_in_the_middle_of_a_window_restarts_it_after_the_last_acked_block() {
        // RFC 7440 §4: the receiver acknowledges the last block it got in order; the sender
        // starts the next window right after it.
        let t0 = Instant::now();
        let data = file(12 * 512 + 1);
        let mut s = Session::new(CLIENT, data.clone(), &negotiated(512, 4), LIMITS, t0);
        let first = drain(&mut s);
        assert_eq!(blocks(&first), [1, 2, 3, 4]); // 3 is lost; the client keeps 1 and 2
        s.on_datagram(CLIENT, &ack(2), t0);
        let second = drain(&mut s);
        assert_eq!(blocks(&second), [3, 4, 5, 6]);
        s.on_datagram(CLIENT, &ack(6), t0);
        assert_eq!(blocks(&drain(&mut s)), [7, 8, 9, 10]);
        s.on_datagram(CLIENT, &ack(10), t0);
        let last = drain(&mut s);
        assert_eq!(blocks(&last), [11, 12, 13]);
        s.on_datagram(CLIENT, &ack(13), t0);
        let summary = s.summary().expect("finished");
        assert_eq!(summary.result, Ok(()));
        assert_eq!(summary.retransmits, 2, "blocks 3 and 4 went twice");

        // What the client kept (1, 2) and what restarted the window (3–6) is the file's start.
        let mut assembled = Vec::new();
        for (_, sent) in first[..2].iter().chain(&second) {
            if let Sent::Data(_, payload) = sent {
                assembled.extend_from_slice(payload);
            }
        }
        assert!(assembled == data[..6 * 512]);
    }

    #[test]
    fn a_window_lost_entirely_is_sent_again_from_the_first_unacked_block() {
        let t0 = Instant::now();
        let mut s = Session::new(CLIENT, file(20 * 512), &negotiated(512, 8), LIMITS, t0);
        assert_eq!(blocks(&drain(&mut s)), (1..=8).collect::<Vec<_>>());
        s.on_datagram(CLIENT, &ack(8), t0);
        assert_eq!(blocks(&drain(&mut s)), (9..=16).collect::<Vec<_>>());
        s.on_timeout(t0 + TIMEOUT);
        assert_eq!(blocks(&drain(&mut s)), (9..=16).collect::<Vec<_>>());
    }

    #[test]
    fn tftp_block_numbers_roll_over_to_zero_past_65535() {
        // 32 MiB + a bit at 512 bytes: 65538 blocks, the last ones numbered 0, 1 and 2.
        let t0 = Instant::now();
        let data = file(32 * 1024 * 1024 + 700);
        let mut s = Session::new(CLIENT, data.clone(), &negotiated(512, 16), LIMITS, t0);
        let mut buf = Vec::new();
        let mut assembled = Vec::with_capacity(data.len());
        let mut wire_numbers = Vec::new();
        while !s.is_finished() {
            let mut last = None;
            while s.poll_transmit(&mut buf).is_some() {
                let Ok(Packet::Data { block, payload }) = Packet::parse(&buf) else {
                    panic!("not DATA");
                };
                assembled.extend_from_slice(payload);
                if assembled.len() > 65530 * 512 {
                    wire_numbers.push(block);
                }
                last = Some(block);
            }
            s.on_datagram(CLIENT, &ack(last.expect("a window")), t0);
        }
        assert_eq!(
            &wire_numbers[wire_numbers.len() - 5..],
            [65534, 65535, 0, 1, 2]
        );
        assert!(assembled == data[..], "the reassembled file differs");
        let summary = s.summary().expect("finished");
        assert_eq!((summary.blocks, summary.retransmits), (65538, 0));
        assert_eq!(summary.bytes, data.len() as u64);
    }

    #[test]
    fn an_ack_across_the_rollover_is_matched_to_the_right_block() {
        // A window straddling 65535 → 0, acknowledged mid-window (a gap report).
        let t0 = Instant::now();
        let mut s = Session::new(CLIENT, file(65600 * 8), &negotiated(8, 8), LIMITS, t0);
        let mut last = 0u16;
        while last != 65528 {
            last = *blocks(&drain(&mut s)).last().expect("a window");
            s.on_datagram(CLIENT, &ack(last), t0);
        }
        assert_eq!(
            blocks(&drain(&mut s)),
            [65529, 65530, 65531, 65532, 65533, 65534, 65535, 0]
        );
        s.on_datagram(CLIENT, &ack(65535), t0);
        assert_eq!(blocks(&drain(&mut s)), [0, 1, 2, 3, 4, 5, 6, 7]);
        s.on_datagram(CLIENT, &ack(1), t0);
        assert_eq!(blocks(&drain(&mut s)), [2, 3, 4, 5, 6, 7, 8, 9]);
    }
}
