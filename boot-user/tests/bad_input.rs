//! Bad input gets no reply and no crash: truncated, oversized, wrong-magic, looping-option and
//! wrong-op packets are counted as malformed; arbitrary bytes never panic the core.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{self, DhcpOption, MessageType};
use dhcproto::{Encodable, Encoder};
use proptest::prelude::*;

use xdpboot::config::Config;
use xdpboot::dhcp::stats::Stats;
use xdpboot::dhcp::{AdmitAll, Ingress, LoaderIndex, Malformed, Outcome, Responder, ServerPort};

struct AllLoaders;
impl LoaderIndex for AllLoaders {
    fn has_loader(&self, _: &str) -> bool {
        true
    }
}

/// The embedded default's responder; outcomes borrow rule names from it.
fn responder() -> &'static Responder {
    static RESPONDER: std::sync::OnceLock<Responder> = std::sync::OnceLock::new();
    RESPONDER.get_or_init(|| {
        let config = Config::embedded().expect("embedded default is valid");
        Responder::new(config.policy.clone(), config.url_ports())
    })
}

fn ingress(port: ServerPort) -> Ingress {
    Ingress {
        port,
        source: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        server: Ipv4Addr::new(198, 18, 0, 1),
    }
}

/// A well-formed BIOS PXE DISCOVER, the base every mutation starts from.
fn pxe_discover() -> Vec<u8> {
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    let mut msg = v4::Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    opts.insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    opts.insert(DhcpOption::ClientSystemArchitecture(0u16.into()));
    opts.insert(DhcpOption::ClientNetworkInterface(1, 2, 1));
    let mut out = Vec::new();
    msg.encode(&mut Encoder::new(&mut out)).unwrap();
    out
}

fn handle(bytes: &[u8]) -> Outcome<'static> {
    responder().handle(bytes, &ingress(ServerPort::Dhcp), &AllLoaders, &AdmitAll)
}

fn malformed(bytes: &[u8]) -> Malformed {
    match handle(bytes) {
        Outcome::Malformed(m) => m,
        other => panic!("expected a malformed outcome, got {other:?}"),
    }
}

#[test]
fn the_unmutated_discover_is_answered() {
    assert!(matches!(handle(&pxe_discover()), Outcome::Reply { .. }));
}

#[test]
fn a_discover_truncated_at_any_offset_is_never_answered() {
    let full = pxe_discover();
    for len in 0..full.len() {
        let outcome = handle(&full[..len]);
        assert!(
            !matches!(outcome, Outcome::Reply { .. }),
            "truncated to {len} bytes and still answered"
        );
    }
    // Cut inside the header: counted as truncated.
    assert_eq!(malformed(&full[..100]), Malformed::Truncated);
    // Cut inside an option: its length runs past the end.
    let options_start = 240;
    assert_eq!(
        malformed(&full[..options_start + 4]),
        Malformed::OptionOverrun
    );
}

#[test]
fn an_oversized_datagram_is_dropped() {
    let mut big = pxe_discover();
    big.resize(1473, 0);
    assert_eq!(malformed(&big), Malformed::Oversized);
    // 1472 bytes of zero padding after END is still a legal request.
    big.truncate(1472);
    assert!(matches!(handle(&big), Outcome::Reply { .. }));
}

#[test]
fn a_wrong_magic_cookie_is_dropped() {
    let mut p = pxe_discover();
    p[236..240].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(malformed(&p), Malformed::BadMagic);
}

#[test]
fn a_reply_sent_to_the_server_port_is_dropped() {
    let mut p = pxe_discover();
    p[0] = 2; // BOOTREPLY
    assert_eq!(malformed(&p), Malformed::NotARequest);
}

#[test]
fn a_hardware_length_over_16_is_dropped() {
    let mut p = pxe_discover();
    p[2] = 200;
    assert_eq!(malformed(&p), Malformed::BadHardwareLength);
}

#[test]
fn an_endless_option_list_is_cut_off() {
    // 300 one-byte options ("looping" lists that never reach END) exceed the walk's bound.
    let mut p = pxe_discover()[..240].to_vec();
    p.extend_from_slice(&[53, 1, 1]);
    for i in 0..300 {
        p.extend_from_slice(&[224 + (i % 2) as u8, 0]);
    }
    p.push(255);
    assert_eq!(malformed(&p), Malformed::TooManyOptions);
}

#[test]
fn an_option_longer_than_the_packet_is_dropped() {
    let mut p = pxe_discover()[..240].to_vec();
    p.extend_from_slice(&[53, 1, 1, 60, 200, b'P', b'X', b'E']);
    assert_eq!(malformed(&p), Malformed::OptionOverrun);
}

#[test]
fn a_request_without_a_message_type_is_dropped() {
    let mut p = pxe_discover()[..240].to_vec();
    p.extend_from_slice(&[60, 9]);
    p.extend_from_slice(b"PXEClient");
    p.push(255);
    assert_eq!(malformed(&p), Malformed::NoMessageType);
}

#[test]
fn an_option_list_without_end_is_truncated() {
    let full = pxe_discover();
    let end = full.iter().rposition(|&b| b == 255).unwrap();
    assert_eq!(malformed(&full[..end]), Malformed::MissingEnd);
}

#[test]
fn lengths_dhcproto_trusts_are_checked_first() {
    // Each of these once panicked dhcproto's debug assertions (found by the property test).
    for option in [
        &[94u8, 2, 1, 2][..],
        &[80, 1, 0],
        &[81, 1, 0],
        &[151, 0],
        &[152, 2, 0, 0],
    ] {
        let mut p = pxe_discover()[..240].to_vec();
        p.extend_from_slice(&[53, 1, 1]);
        p.extend_from_slice(option);
        p.push(255);
        assert_eq!(
            malformed(&p),
            Malformed::BadOptionLength(option[0]),
            "{option:?}"
        );
    }
    // Split across two instances (RFC 3396), option 94 is still three octets in all.
    let mut p = pxe_discover()[..240].to_vec();
    p.extend_from_slice(&[53, 1, 1, 94, 1, 1, 94, 2, 2, 1, 255]);
    assert!(!matches!(handle(&p), Outcome::Malformed(_)));
    // A PAD between two instances ends the run for dhcproto, which then decodes a two-octet
    // option 94 on its own: rejected (found by `cargo xtask fuzz`, dhcp target).
    let mut p = pxe_discover()[..240].to_vec();
    p.extend_from_slice(&[53, 1, 1, 94, 2, 1, 1, 0, 94, 1, 2, 255]);
    assert_eq!(malformed(&p), Malformed::BadOptionLength(94));
}

/// Inputs the fuzz targets once crashed on, kept as regression tests: none may panic.
#[test]
fn fuzz_regressions_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions/dhcp");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the regression directory exists") {
        let bytes = std::fs::read(entry.expect("a directory entry").path()).expect("readable");
        for port in [ServerPort::Dhcp, ServerPort::Pxe] {
            let _ = responder().handle(&bytes, &ingress(port), &AllLoaders, &AdmitAll);
        }
        seen += 1;
    }
    assert!(seen > 0, "no regression inputs in {}", dir.display());
}

#[test]
fn malformed_packets_are_counted_by_reason() {
    let stats = Stats::default();
    let mut bad = pxe_discover();
    bad[236] = 0;
    stats.record(&handle(&bad));
    stats.record(&handle(&[0u8; 10]));
    stats.record(&handle(&pxe_discover()));
    let counts: HashSet<(String, u64)> = stats.snapshot().into_iter().collect();
    assert!(counts.contains(&("malformed.bad_magic".into(), 1)));
    assert!(counts.contains(&("malformed.truncated".into(), 1)));
    assert!(counts.contains(&("reply.proxy_offer".into(), 1)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let r = responder();
        for port in [ServerPort::Dhcp, ServerPort::Pxe] {
            let _ = r.handle(&bytes, &ingress(port), &AllLoaders, &AdmitAll);
        }
    }

    #[test]
    fn mutated_discovers_never_panic_and_replies_stay_well_formed(
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..16),
        extra in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut p = pxe_discover();
        p.extend_from_slice(&extra);
        for (at, value) in flips {
            if let Some(b) = p.get_mut(at) {
                *b = value;
            }
        }
        if let Outcome::Reply { reply, .. } = handle(&p) {
            prop_assert!(reply.bytes.len() >= 300);
            prop_assert_eq!(reply.bytes[0], 2);
            prop_assert_eq!(&reply.bytes[236..240], &[99, 130, 83, 99]);
        }
    }
}
