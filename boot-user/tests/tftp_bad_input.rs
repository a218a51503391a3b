//! Properties of the TFTP core under arbitrary input: the server port's screening never
//! panics, requests round-trip through the wire format, a session never panics or runs
//! unbounded whatever it is fed, and through any pattern of loss a session delivers the file
//! exactly (driven in simulated time against an RFC 1350 / RFC 7440 receiver).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use xdpboot::tftp::options::Negotiated;
use xdpboot::tftp::packet::{self, Opcode, Packet, TftpOption};
use xdpboot::tftp::request;
use xdpboot::tftp::session::{Session, SessionLimits};

const CLIENT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 50), 2070));
const STRANGER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 51), 2070));

fn file(len: usize) -> Arc<[u8]> {
    (0..len).map(|i| (i * 13 % 256) as u8).collect()
}

fn negotiated(blksize: u16, windowsize: u16) -> Negotiated {
    Negotiated {
        blksize,
        windowsize,
        ..Negotiated::plain()
    }
}

/// One thing that can happen to a session.
#[derive(Debug, Clone)]
enum Event {
    Ack(u16),
    Bytes(Vec<u8>),
    Stranger(Vec<u8>),
    Wait(u16),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => any::<u16>().prop_map(Event::Ack),
        4 => (0u16..40).prop_map(Event::Ack),
        2 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Event::Bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Event::Stranger),
        2 => (0u16..3000).prop_map(Event::Wait),
    ]
}

/// A deterministic coin for loss decisions.
struct Coin(u64);

impl Coin {
    fn lands(&mut self, percent: u64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 100 < percent
    }
}

/// A receiver as RFC 1350 and RFC 7440 §4 describe it: it acknowledges every `windowsize`
/// in-order blocks and the last one; on a gap it acknowledges the last block it has in order,
/// once; for a block it already has it acknowledges its position again; after the final ACK
/// it dallies, answering a repeated final block with the final ACK again.
struct Receiver {
    blksize: usize,
    windowsize: u64,
    /// The next block it needs (absolute, from 1).
    expected: u64,
    since_ack: u64,
    gap_reported: bool,
    data: Vec<u8>,
    done: bool,
}

impl Receiver {
    fn new(blksize: u16, windowsize: u16) -> Receiver {
        Receiver {
            blksize: usize::from(blksize),
            windowsize: u64::from(windowsize),
            expected: 1,
            since_ack: 0,
            gap_reported: false,
            data: Vec::new(),
            done: false,
        }
    }

    fn wire(block: u64) -> u16 {
        (block & 0xffff) as u16
    }

    /// The ACK to send for a DATA packet, if any.
    fn on_data(&mut self, block: u16, payload: &[u8]) -> Option<u16> {
        let last_in_order = Receiver::wire(self.expected - 1);
        if self.done {
            return (block == last_in_order).then_some(block);
        }
        if block != Receiver::wire(self.expected) {
            if block == last_in_order || self.gap_reported {
                return (block == last_in_order).then_some(last_in_order);
            }
            self.gap_reported = true;
            self.since_ack = 0;
            return Some(last_in_order);
        }
        self.data.extend_from_slice(payload);
        self.expected += 1;
        self.since_ack += 1;
        self.gap_reported = false;
        if payload.len() < self.blksize {
            self.done = true;
            return Some(block);
        }
        if self.since_ack == self.windowsize {
            self.since_ack = 0;
            return Some(block);
        }
        None
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn tftp_screening_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..700),
    ) {
        let _ = request::screen(&bytes);
        let _ = Packet::parse(&bytes);
    }

    #[test]
    fn tftp_requests_round_trip_through_the_wire_format(
        name in "[ -~]{1,100}",
        options in proptest::collection::vec(("[a-z]{1,10}", "[ -~]{0,10}"), 0..8),
    ) {
        let options: Vec<TftpOption> =
            options.iter().map(|(n, v)| TftpOption::new(n, v)).collect();
        let mut buf = Vec::new();
        packet::write_request(&mut buf, Opcode::Rrq, name.as_bytes(), "octet", &options);
        prop_assume!(buf.len() <= packet::MAX_REQUEST_LEN);
        let Ok(Packet::Rrq(parsed)) = Packet::parse(&buf) else {
            return Err(TestCaseError::fail(format!("not an RRQ: {buf:?}")));
        };
        prop_assert_eq!(parsed.filename, name.as_bytes());
        prop_assert_eq!(parsed.mode, b"octet");
        prop_assert_eq!(parsed.options, options);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_tftp_session_fed_anything_never_panics_and_always_ends(
        len in 0usize..3000,
        blksize in 8u16..600,
        windowsize in 1u16..10,
        events in proptest::collection::vec(event(), 0..200),
    ) {
        let t0 = Instant::now();
        let limits = SessionLimits { max_retries: 3, time_limit: Duration::from_secs(600) };
        let data = file(len);
        let mut s = Session::new(CLIENT, data.clone(), &negotiated(blksize, windowsize), limits, t0);
        let mut now = t0;
        let mut buf = Vec::new();
        let mut drain = |s: &mut Session| {
            while let Some(to) = s.poll_transmit(&mut buf) {
                if to == CLIENT
                    && let Ok(Packet::Data { payload, .. }) = Packet::parse(&buf)
                {
                    assert!(payload.len() <= usize::from(blksize));
                }
            }
        };
        for event in events {
            match event {
                Event::Ack(block) => {
                    let mut ack = Vec::new();
                    packet::write_ack(&mut ack, block);
                    s.on_datagram(CLIENT, &ack, now);
                }
                Event::Bytes(bytes) => s.on_datagram(CLIENT, &bytes, now),
                Event::Stranger(bytes) => s.on_datagram(STRANGER, &bytes, now),
                Event::Wait(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    s.on_timeout(now);
                }
            }
            drain(&mut s);
        }
        // Left alone, it gives up within its retries.
        let mut wakeups = 0;
        while let Some(deadline) = s.poll_timeout() {
            wakeups += 1;
            prop_assert!(wakeups <= limits.max_retries + 2, "still running");
            now = now.max(deadline);
            s.on_timeout(now);
            drain(&mut s);
        }
        let summary = s.summary().expect("finished");
        prop_assert!(summary.bytes <= len as u64);
    }

    #[test]
    fn a_tftp_session_delivers_the_file_exactly_through_any_loss_pattern(
        len in 0usize..6000,
        blksize in 8u16..700,
        windowsize in 1u16..9,
        data_loss in 0u64..30,
        ack_loss in 0u64..30,
        seed in 1u64..u64::MAX,
    ) {
        let t0 = Instant::now();
        // Many retries: the point is the data, not giving up under 30 % loss.
        let limits = SessionLimits { max_retries: 40, time_limit: Duration::from_secs(100_000) };
        let data = file(len);
        let mut s = Session::new(CLIENT, data.clone(), &negotiated(blksize, windowsize), limits, t0);
        let mut client = Receiver::new(blksize, windowsize);
        let mut coin = Coin(seed);
        let mut now = t0;
        let mut buf = Vec::new();
        let mut ack = Vec::new();
        for _ in 0..200_000 {
            if s.is_finished() {
                break;
            }
            let mut acks = Vec::new();
            while s.poll_transmit(&mut buf).is_some() {
                if coin.lands(data_loss) {
                    continue;
                }
                let Ok(Packet::Data { block, payload }) = Packet::parse(&buf) else {
                    return Err(TestCaseError::fail("the server sent something other than DATA"));
                };
                if let Some(n) = client.on_data(block, payload) {
                    acks.push(n);
                }
            }
            let mut delivered = false;
            for n in acks {
                if !coin.lands(ack_loss) {
                    packet::write_ack(&mut ack, n);
                    s.on_datagram(CLIENT, &ack, now);
                    delivered = true;
                }
            }
            if !delivered && let Some(deadline) = s.poll_timeout() {
                now = now.max(deadline);
                s.on_timeout(now);
            }
        }
        let summary = s.summary().expect("the transfer ended");
        prop_assert_eq!(&summary.result, &Ok(()));
        prop_assert!(client.data == *data, "the client assembled different bytes");
        prop_assert_eq!(summary.bytes, len as u64);
    }
}
