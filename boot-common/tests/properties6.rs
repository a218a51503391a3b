//! Properties of the IPv6 side of the wire layer: no IPv6 or DHCPv6 view panics on any bytes,
//! the extension-header walk stays inside its packet and within its bound, and what the
//! emitters write parses back to what they were given.

use std::net::{Ipv6Addr, SocketAddrV6};

use boot_common::wire::dhcpv6::{self, Options, RelayPacket, Strings, VendorClass, Writer};
use boot_common::wire::ethernet::{self, VlanTag, VlanTags, ethertype};
use boot_common::wire::{
    Error, FrameRepr6, MacAddr, UdpFrame6, emit_udp6_frame, headers6_len, ipv6, udp,
};
use proptest::prelude::*;

/// Whether `inner` is a sub-slice of `outer`.
fn inside(inner: &[u8], outer: &[u8]) -> bool {
    let (start, end) = (
        inner.as_ptr() as usize,
        inner.as_ptr() as usize + inner.len(),
    );
    start >= outer.as_ptr() as usize && end <= outer.as_ptr() as usize + outer.len()
}

fn ipv6_addr() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

fn vlan_tags() -> impl Strategy<Value = VlanTags> {
    prop::collection::vec(
        (
            prop_oneof![Just(ethertype::VLAN_8021AD), Just(ethertype::VLAN_8021Q)],
            any::<u16>(),
        )
            .prop_map(|(tpid, tci)| VlanTag { tpid, tci }),
        0..=ethernet::MAX_TAGS,
    )
    .prop_map(|tags| VlanTags::new(&tags).expect("at most MAX_TAGS"))
}

/// Reads every DHCPv6 option, checking the bound and that each data slice lies in `bytes`,
/// and reads the options that hold structure (vendor and user class, DUIDs) as the core does.
fn walk_options(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut count = 0;
    for item in Options::new(bytes) {
        match item {
            Ok((code, data)) => {
                prop_assert!(inside(data, bytes));
                count += 1;
                match code {
                    dhcpv6::option::VENDOR_CLASS => {
                        if let Some(vendor) = VendorClass::parse(data) {
                            for class in vendor.classes() {
                                prop_assert!(inside(class, data));
                            }
                        }
                    }
                    dhcpv6::option::USER_CLASS => {
                        for class in Strings::new(data) {
                            prop_assert!(inside(class, data));
                        }
                    }
                    _ => {
                        let _ = (
                            dhcpv6::duid_mac(data),
                            dhcpv6::client_arch(data),
                            dhcpv6::client_linklayer_mac(data),
                        );
                    }
                }
            }
            Err(e) => prop_assert!(matches!(e, Error::OptionOverrun | Error::TooManyOptions)),
        }
    }
    prop_assert!(count <= dhcpv6::MAX_OPTIONS);
    Ok(())
}

/// Runs every IPv6 and DHCPv6 view over `bytes`, reading every field: nothing may panic, and
/// every slice handed out lies inside `bytes`.
fn exercise_views(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut messages = vec![bytes];
    if let Ok(ip) = ipv6::Packet::new_checked(bytes) {
        let _ = (ip.traffic_class(), ip.flow_label(), ip.hop_limit());
        let _ = (ip.src(), ip.dst(), ip.next_header());
        prop_assert!(inside(ip.payload(), bytes));
        prop_assert_eq!(ip.payload().len(), usize::from(ip.payload_len()));
        if let Ok(upper) = ip.upper_layer() {
            prop_assert!(inside(upper.data, ip.payload()));
            prop_assert_eq!(upper.offset + upper.data.len(), ip.payload().len());
        }
    }
    if let Ok(frame) = UdpFrame6::parse(bytes) {
        let _ = (frame.src(), frame.dst(), frame.verify_checksum());
        prop_assert!(inside(frame.payload(), bytes));
        messages.push(frame.payload());
    }
    for bytes in messages {
        if let Ok(message) = dhcpv6::Packet::new_checked(bytes) {
            let _ = (message.msg_type(), message.transaction_id());
            prop_assert!(message.transaction_id() < 1 << 24);
            walk_options(&bytes[dhcpv6::HEADER_LEN..])?;
        }
        if let Ok(relay) = RelayPacket::new_checked(bytes) {
            let _ = (
                relay.hop_count(),
                relay.link_address(),
                relay.peer_address(),
            );
            walk_options(&bytes[dhcpv6::RELAY_HEADER_LEN..])?;
            if let Ok(Some(inner)) = relay.find(dhcpv6::option::RELAY_MSG) {
                prop_assert!(inside(inner, bytes));
                walk_options(inner)?;
            }
        }
    }
    walk_options(bytes)?;
    Ok(())
}

/// A Solicit as EDK2's PXE client shapes it (`PxeBcDhcp6.c`, `PxeBcBuildDhcp6Options`, plus
/// the client id, IA_NA and elapsed time its DHCPv6 driver adds), in a frame to ff02::1:2
/// with `tags` VLAN tags: a start that gets past every check, for the mutations below.
fn solicit_frame(tags: usize) -> Vec<u8> {
    let mac = MacAddr([0x52, 0x54, 0, 0x18, 1, 1]);
    let mut message = [0u8; 256];
    let mut writer = Writer::new(&mut message, dhcpv6::message_type::SOLICIT, 0x12_3456)
        .expect("room for the header");
    let uuid = [
        0, 4, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0x52, 0x54, 0, 0x18, 1, 1,
    ];
    writer.option(dhcpv6::option::CLIENT_ID, &uuid).unwrap();
    writer.option(dhcpv6::option::IA_NA, &[0; 12]).unwrap();
    writer
        .option(dhcpv6::option::ELAPSED_TIME, &[0, 0])
        .unwrap();
    writer.option(dhcpv6::option::ORO, &[0, 59, 0, 60]).unwrap();
    writer.option(dhcpv6::option::NII, &[1, 3, 0]).unwrap();
    writer
        .option(dhcpv6::option::CLIENT_ARCH_TYPE, &[0, 7])
        .unwrap();
    writer
        .option_parts(
            dhcpv6::option::VENDOR_CLASS,
            &[
                &343u32.to_be_bytes(),
                &[0, 32],
                b"PXEClient:Arch:00007:UNDI:003000",
            ],
        )
        .unwrap();
    let len = writer.finish();
    let tag = VlanTag {
        tpid: ethertype::VLAN_8021Q,
        tci: 42,
    };
    let repr = FrameRepr6 {
        src_mac: mac,
        dst_mac: MacAddr([0x33, 0x33, 0, 1, 0, 2]),
        tags: VlanTags::new(&[tag; 2][..tags]).expect("at most two"),
        src: SocketAddrV6::new(ipv6::eui64_link_local(mac), 546, 0, 0),
        dst: SocketAddrV6::new(dhcpv6::ALL_RELAY_AGENTS_AND_SERVERS, 547, 0, 0),
        hop_limit: 1,
    };
    let mut frame = vec![0u8; headers6_len(tags) + len];
    frame[headers6_len(tags)..].copy_from_slice(&message[..len]);
    emit_udp6_frame(&mut frame, &repr, len).expect("the buffer is the frame's size");
    frame
}

/// An extension header of kind `kind` whose next header is `next`, `units` long in the units
/// its kind counts, with filler bytes.
fn extension_header(kind: u8, next: u8, units: u8) -> Vec<u8> {
    let len = match kind {
        ipv6::next_header::FRAGMENT => ipv6::FRAGMENT_HEADER_LEN,
        ipv6::next_header::AUTHENTICATION => (usize::from(units) + 2) * 4,
        _ => (usize::from(units) + 1) * 8,
    };
    let mut header = vec![0xa5; len];
    header[0] = next;
    if kind == ipv6::next_header::FRAGMENT {
        header[1..4].fill(0);
    } else {
        header[1] = units;
    }
    header
}

fn extension_kind() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(ipv6::next_header::HOP_BY_HOP),
        Just(ipv6::next_header::ROUTING),
        Just(ipv6::next_header::FRAGMENT),
        Just(ipv6::next_header::AUTHENTICATION),
        Just(ipv6::next_header::DESTINATION_OPTIONS),
    ]
}

proptest! {
    #[test]
    fn no_ipv6_view_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1600)) {
        exercise_views(&bytes)?;
    }

    /// A real-shaped Solicit frame with a few bytes changed and its end cut off reaches every
    /// length check, the extension-header walk and the option walk.
    #[test]
    fn no_ipv6_view_panics_on_a_damaged_solicit(
        tags in 0usize..=2,
        changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        keep in any::<prop::sample::Index>(),
    ) {
        let mut frame = solicit_frame(tags);
        for (at, byte) in changes {
            let at = at.index(frame.len());
            frame[at] = byte;
        }
        frame.truncate(keep.index(frame.len() + 1));
        exercise_views(&frame)?;
    }

    /// Chains of extension headers of any kind and length: the walk finds the upper layer
    /// after exactly the chain when the chain is within the bound, and refuses it otherwise.
    #[test]
    fn the_extension_header_walk_finds_the_upper_layer_or_says_why_not(
        chain in prop::collection::vec((extension_kind(), 0u8..4), 0..12),
        upper in prop_oneof![Just(ipv6::next_header::UDP), Just(ipv6::next_header::ICMPV6)],
        data in prop::collection::vec(any::<u8>(), 0..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut payload = Vec::new();
        for (i, (kind, units)) in chain.iter().enumerate() {
            let next = chain.get(i + 1).map_or(upper, |(k, _)| *k);
            payload.extend(extension_header(*kind, next, *units));
        }
        let headers_len = payload.len();
        payload.extend(&data);
        let first = chain.first().map_or(upper, |(k, _)| *k);
        let walked = ipv6::walk_extension_headers(first, &payload);
        if chain.len() <= ipv6::MAX_EXTENSION_HEADERS {
            let found = walked.unwrap();
            prop_assert_eq!((found.protocol, found.offset), (upper, headers_len));
            prop_assert_eq!(found.data, &data[..]);
        } else {
            prop_assert_eq!(walked, Err(Error::TooManyExtensionHeaders));
        }
        // Cut short, the walk fails or stops inside what is left.
        let short = &payload[..cut.index(payload.len() + 1)];
        if let Ok(found) = ipv6::walk_extension_headers(first, short) {
            prop_assert!(inside(found.data, short));
        }
    }

    #[test]
    fn an_emitted_ipv6_header_parses_back(
        src in ipv6_addr(), dst in ipv6_addr(), next_header: u8, hop_limit: u8,
        payload_len in 0usize..1500,
    ) {
        let repr = ipv6::Repr { src, dst, next_header, hop_limit, payload_len };
        let mut buf = vec![0u8; repr.buffer_len()];
        prop_assert_eq!(repr.emit(&mut buf), Ok(ipv6::HEADER_LEN));
        let packet = ipv6::Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(ipv6::Repr::parse(&packet), repr);
        prop_assert_eq!((packet.traffic_class(), packet.flow_label()), (0, 0));
    }

    #[test]
    fn an_emitted_v6_frame_parses_back_with_its_checksum_right(
        src_mac in mac(), dst_mac in mac(), tags in vlan_tags(),
        src in (ipv6_addr(), any::<u16>()), dst in (ipv6_addr(), any::<u16>()), hop_limit: u8,
        payload in prop::collection::vec(any::<u8>(), 0..600),
        padding in prop::collection::vec(any::<u8>(), 0..50),
    ) {
        let repr = FrameRepr6 {
            src_mac, dst_mac, tags, hop_limit,
            src: SocketAddrV6::new(src.0, src.1, 0, 0),
            dst: SocketAddrV6::new(dst.0, dst.1, 0, 0),
        };
        let at = headers6_len(tags.len());
        let mut buf = vec![0u8; at + payload.len()];
        buf[at..].copy_from_slice(&payload);
        prop_assert_eq!(emit_udp6_frame(&mut buf, &repr, payload.len()), Ok(buf.len()));
        buf.extend_from_slice(&padding);
        let frame = UdpFrame6::parse(&buf).unwrap();
        prop_assert!(frame.verify_checksum());
        prop_assert_ne!(frame.udp.checksum(), 0);
        prop_assert_eq!(frame.payload(), &payload[..]);
        prop_assert_eq!((frame.src(), frame.dst()), (repr.src, repr.dst));
        prop_assert_eq!(frame.ethernet.tags(), tags);
        prop_assert_eq!(frame.ip.hop_limit(), hop_limit);
    }

    #[test]
    fn a_written_dhcpv6_message_reads_back_with_its_options_in_order(
        msg_type: u8, xid in 0u32..(1 << 24),
        options in prop::collection::vec(
            (any::<u16>(), prop::collection::vec(any::<u8>(), 0..300)),
            0..12,
        ),
    ) {
        let mut buf = vec![0u8; 8192];
        let mut writer = Writer::new(&mut buf, msg_type, xid).unwrap();
        for (code, data) in &options {
            writer.option(*code, data).unwrap();
        }
        let len = writer.finish();
        let message = dhcpv6::Packet::new_checked(&buf[..len]).unwrap();
        prop_assert_eq!((message.msg_type(), message.transaction_id()), (msg_type, xid));
        let read: Vec<(u16, Vec<u8>)> = message
            .options()
            .map(|item| item.map(|(code, data)| (code, data.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(read, options);
    }

    #[test]
    fn a_relay_message_carries_its_inner_message_unchanged(
        hop_count: u8, link in ipv6_addr(), peer in ipv6_addr(),
        inner in prop::collection::vec(any::<u8>(), 4..400),
        size in 0usize..500,
    ) {
        let mut buf = vec![0xeeu8; size + 8];
        let written = Writer::relay(&mut buf[..size], dhcpv6::message_type::RELAY_REPL, hop_count, link, peer)
            .and_then(|mut writer| {
                writer.option(dhcpv6::option::RELAY_MSG, &inner)?;
                Ok(writer.finish())
            });
        let needed = dhcpv6::RELAY_HEADER_LEN + dhcpv6::OPTION_HEADER_LEN + inner.len();
        prop_assert!(buf[size..].iter().all(|&b| b == 0xee), "nothing past the buffer");
        if size < needed {
            prop_assert_eq!(written, Err(Error::BufferTooSmall));
        } else {
            prop_assert_eq!(written, Ok(needed));
            let relay = RelayPacket::new_checked(&buf[..needed]).unwrap();
            prop_assert_eq!((relay.hop_count(), relay.link_address(), relay.peer_address()), (hop_count, link, peer));
            prop_assert_eq!(relay.find(dhcpv6::option::RELAY_MSG), Ok(Some(&inner[..])));
        }
    }

    #[test]
    fn eui64_link_local_addresses_round_trip_their_mac(mac in mac()) {
        let address = ipv6::eui64_link_local(mac);
        prop_assert_eq!(ipv6::eui64_mac(address), Some(mac));
        prop_assert_eq!(dhcpv6::duid_mac(&dhcpv6::duid_ll(mac)), Some(mac));
    }

    #[test]
    fn udp_over_ipv6_verifies_only_with_its_own_addresses(
        src in ipv6_addr(), dst in ipv6_addr(), other in ipv6_addr(),
        payload in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let repr = udp::Repr { src_port: 547, dst_port: 546, payload_len: payload.len() };
        let mut buf = vec![0u8; repr.buffer_len()];
        buf[udp::HEADER_LEN..].copy_from_slice(&payload);
        repr.emit_v6(&mut buf, src, dst).unwrap();
        let datagram = udp::Packet::new_checked(&buf[..]).unwrap();
        prop_assert!(datagram.verify_checksum_v6(src, dst));
        // The one's complement sum cannot tell some addresses apart (0x0000 from 0xffff words,
        // words moved between the two): only a different sum must fail.
        // (0x0000 and 0xffff are both zero in one's complement.)
        let sum = |a: Ipv6Addr| match ipv6::pseudo_header(a, dst, 17, 0).sum() {
            0xffff => 0,
            sum => sum,
        };
        if sum(other) != sum(src) {
            prop_assert!(!datagram.verify_checksum_v6(other, dst));
        }
    }
}
