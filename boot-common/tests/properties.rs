//! Properties of the wire layer: no view panics on any bytes, whatever a view hands out lies
//! inside its buffer, and what the emitters write parses back to what they were given.

use std::net::{Ipv4Addr, SocketAddrV4};

use boot_common::wire::checksum::{Checksum, checksum};
use boot_common::wire::dhcpv4::{self, Header, Options, Writer};
use boot_common::wire::ethernet::{self, VlanTag, VlanTags, ethertype};
use boot_common::wire::{
    Error, FrameRepr, MacAddr, UdpFrame, emit_udp_frame, headers_len, ipv4, pxe, udp,
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

/// Reads every option, checking the bound and that each data slice lies in `bytes`.
fn walk_options(bytes: &[u8]) {
    let mut count = 0;
    for item in Options::new(bytes) {
        match item {
            Ok((code, data)) => {
                assert!(code != dhcpv4::option::PAD && code != dhcpv4::option::END);
                assert!(inside(data, bytes));
                count += 1;
            }
            Err(e) => assert!(matches!(e, Error::OptionOverrun | Error::TooManyOptions)),
        }
    }
    assert!(count <= dhcpv4::MAX_OPTIONS);
}

/// The Internet checksum computed the plainest way: pairs of bytes, the odd one padded.
fn reference_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        sum += u64::from(pair[0]) << 8 | u64::from(*pair.get(1).unwrap_or(&0));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn vlan_tag() -> impl Strategy<Value = VlanTag> {
    (
        prop_oneof![Just(ethertype::VLAN_8021AD), Just(ethertype::VLAN_8021Q)],
        any::<u16>(),
    )
        .prop_map(|(tpid, tci)| VlanTag { tpid, tci })
}

fn vlan_tags() -> impl Strategy<Value = VlanTags> {
    prop::collection::vec(vlan_tag(), 0..=ethernet::MAX_TAGS)
        .prop_map(|tags| VlanTags::new(&tags).expect("at most MAX_TAGS"))
}

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

fn ipv4_addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

/// An option code with a length octet: neither PAD nor END.
fn option_code() -> impl Strategy<Value = u8> {
    1u8..=254
}

/// Runs every view over `bytes` (and the DHCP view over a UDP frame's payload), reading
/// every field: nothing may panic, and every slice handed out lies inside `bytes`.
fn exercise_views(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(frame) = ethernet::Frame::new_checked(bytes) {
        let _ = (frame.dst(), frame.src(), frame.tags(), frame.ethertype());
        prop_assert!(frame.tags().len() <= ethernet::MAX_TAGS);
        prop_assert!(inside(frame.payload(), bytes));
    }
    if let Ok(ip) = ipv4::Packet::new_checked(bytes) {
        let _ = (
            ip.dscp_ecn(),
            ip.ident(),
            ip.dont_fragment(),
            ip.more_fragments(),
        );
        let _ = (
            ip.fragment_offset(),
            ip.is_fragment(),
            ip.ttl(),
            ip.protocol(),
        );
        let _ = (ip.checksum(), ip.src(), ip.dst(), ip.verify_checksum());
        prop_assert!(inside(ip.options(), bytes));
        prop_assert!(inside(ip.payload(), bytes));
        prop_assert_eq!(
            ip.header_len() + ip.payload().len(),
            usize::from(ip.total_len())
        );
    }
    if let Ok(datagram) = udp::Packet::new_checked(bytes) {
        let _ = (
            datagram.src_port(),
            datagram.dst_port(),
            datagram.checksum(),
        );
        let _ = datagram.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
        prop_assert!(inside(datagram.payload(), bytes));
        prop_assert_eq!(
            datagram.payload().len() + udp::HEADER_LEN,
            usize::from(datagram.len())
        );
    }
    let mut dhcp = vec![bytes];
    if let Ok(frame) = UdpFrame::parse(bytes) {
        let _ = (frame.src(), frame.dst(), frame.verify_checksums());
        prop_assert!(inside(frame.payload(), bytes));
        dhcp.push(frame.payload());
    }
    for bytes in dhcp {
        if let Ok(message) = dhcpv4::Packet::new_checked(bytes) {
            let _ = Header::parse(&message);
            let _ = (
                message.client_mac(),
                message.broadcast(),
                message.message_type(),
            );
            prop_assert!(inside(message.sname(), bytes) && inside(message.file(), bytes));
            walk_options(&bytes[dhcpv4::OPTIONS_OFFSET..]);
            for code in [
                dhcpv4::option::CLIENT_ARCH,
                dhcpv4::option::CLIENT_MACHINE_ID,
            ] {
                if let Ok(Some(data)) = message.find(code) {
                    let _ = (dhcpv4::client_arch(data), pxe::client_machine_id(data));
                }
            }
            if let Ok(Some(vendor)) = message.find(dhcpv4::option::VENDOR_SPECIFIC) {
                walk_options(vendor);
            }
        }
    }
    walk_options(bytes);
    let _ = pxe::BootItem::parse(bytes);
    let _ = checksum(bytes);
    Ok(())
}

/// A real request (`tests/data/seabios-ipxe-discover.bin`) in a frame with `tags` VLAN tags:
/// a start that gets past every check, for the mutations below.
fn captured_request_frame(tags: usize) -> Vec<u8> {
    let payload = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/seabios-ipxe-discover.bin"
    ))
    .expect("the capture is in the repository");
    let tag = VlanTag {
        tpid: ethertype::VLAN_8021Q,
        tci: 42,
    };
    let repr = FrameRepr {
        src_mac: MacAddr([0x52, 0x54, 0, 0x18, 0, 1]),
        dst_mac: MacAddr::BROADCAST,
        tags: VlanTags::new(&[tag; 2][..tags]).expect("at most two"),
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        dst: SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        ttl: FrameRepr::DEFAULT_TTL,
    };
    let mut frame = vec![0u8; headers_len(tags) + payload.len()];
    frame[headers_len(tags)..].copy_from_slice(&payload);
    emit_udp_frame(&mut frame, &repr, payload.len()).expect("the buffer is the frame's size");
    frame
}

proptest! {
    #[test]
    fn no_view_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1600)) {
        exercise_views(&bytes)?;
    }

    /// Arbitrary bytes rarely pass the first checks; a real frame with a few bytes changed
    /// and its end cut off reaches every length check and the option walk.
    #[test]
    fn no_view_panics_on_a_damaged_real_frame(
        tags in 0usize..=2,
        changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        keep in any::<prop::sample::Index>(),
    ) {
        let mut frame = captured_request_frame(tags);
        for (at, byte) in changes {
            let at = at.index(frame.len());
            frame[at] = byte;
        }
        frame.truncate(keep.index(frame.len() + 1));
        exercise_views(&frame)?;
    }

    /// Option lists built from pads, ENDs and length octets that may lie.
    #[test]
    fn the_option_iterator_never_panics_on_option_like_bytes(
        parts in prop::collection::vec(
            prop_oneof![
                Just(vec![0u8]),
                Just(vec![255u8]),
                (option_code(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..20))
                    .prop_map(|(code, len, data)| [&[code, len][..], &data].concat()),
            ],
            0..100,
        )
    ) {
        walk_options(&parts.concat());
    }

    #[test]
    fn the_checksum_matches_the_plain_one_however_the_data_is_split(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort();
        let mut sum = Checksum::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            sum = sum.add_bytes(&bytes[start..cut]);
            start = cut;
        }
        prop_assert_eq!(sum.finish(), reference_checksum(&bytes));
        prop_assert_eq!(checksum(&bytes), reference_checksum(&bytes));
    }

    #[test]
    fn a_mac_prints_as_the_old_helpers_did_and_parses_back(mac in mac(), upper: bool, dash: bool) {
        let text = mac.to_string();
        // tests/lib.rs `mac_text` and boot-user's `MacDisplay`.
        let old = mac.octets().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        prop_assert_eq!(&text, &old);
        let mut variant = if upper { text.to_uppercase() } else { text.clone() };
        if dash {
            variant = variant.replace(':', "-");
        }
        prop_assert_eq!(variant.parse::<MacAddr>(), Ok(mac));
    }

    #[test]
    fn mac_parsing_never_panics(text in "\\PC{0,20}") {
        let _ = text.parse::<MacAddr>();
    }

    #[test]
    fn an_emitted_ethernet_header_parses_back(
        dst in mac(), src in mac(), tags in vlan_tags(),
        kind in any::<u16>().prop_filter("not a tag", |t| !ethertype::is_vlan_tag(*t)),
    ) {
        let repr = ethernet::Repr { dst, src, tags, ethertype: kind };
        let mut buf = vec![0u8; repr.buffer_len()];
        prop_assert_eq!(repr.emit(&mut buf), Ok(repr.buffer_len()));
        let frame = ethernet::Frame::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(ethernet::Repr::parse(&frame), repr);
        prop_assert!(frame.payload().is_empty());
    }

    #[test]
    fn an_emitted_ipv4_header_parses_back(
        src in ipv4_addr(), dst in ipv4_addr(), protocol: u8, ttl: u8, payload_len in 0usize..1500,
    ) {
        let repr = ipv4::Repr { src, dst, protocol, ttl, payload_len };
        let mut buf = vec![0u8; repr.buffer_len()];
        prop_assert_eq!(repr.emit(&mut buf), Ok(ipv4::HEADER_LEN));
        let packet = ipv4::Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(ipv4::Repr::parse(&packet), repr);
        prop_assert!(packet.verify_checksum());
        prop_assert!(!packet.is_fragment());
    }

    #[test]
    fn an_emitted_udp_datagram_parses_back_and_verifies(
        src in ipv4_addr(), dst in ipv4_addr(), src_port: u16, dst_port: u16,
        payload in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let repr = udp::Repr { src_port, dst_port, payload_len: payload.len() };
        let mut buf = vec![0u8; repr.buffer_len()];
        buf[udp::HEADER_LEN..].copy_from_slice(&payload);
        prop_assert_eq!(repr.emit(&mut buf, src, dst), Ok(repr.buffer_len()));
        let datagram = udp::Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(udp::Repr::parse(&datagram), repr);
        prop_assert_eq!(datagram.payload(), &payload[..]);
        prop_assert!(datagram.verify_checksum(src, dst));
        prop_assert_ne!(datagram.checksum(), 0);
    }

    #[test]
    fn an_emitted_frame_parses_back_with_both_checksums_right(
        src_mac in mac(), dst_mac in mac(), tags in vlan_tags(),
        src in (ipv4_addr(), any::<u16>()), dst in (ipv4_addr(), any::<u16>()), ttl: u8,
        payload in prop::collection::vec(any::<u8>(), 0..600),
        // Ethernet padding after the datagram, which the views must leave out.
        padding in prop::collection::vec(any::<u8>(), 0..50),
    ) {
        let repr = FrameRepr {
            src_mac, dst_mac, tags, ttl,
            src: SocketAddrV4::new(src.0, src.1),
            dst: SocketAddrV4::new(dst.0, dst.1),
        };
        let at = headers_len(tags.len());
        let mut buf = vec![0u8; at + payload.len()];
        buf[at..].copy_from_slice(&payload);
        prop_assert_eq!(emit_udp_frame(&mut buf, &repr, payload.len()), Ok(buf.len()));
        buf.extend_from_slice(&padding);
        let frame = UdpFrame::parse(&buf).unwrap();
        prop_assert!(frame.verify_checksums());
        prop_assert_eq!(frame.payload(), &payload[..]);
        prop_assert_eq!((frame.src(), frame.dst()), (repr.src, repr.dst));
        prop_assert_eq!(frame.ethernet.tags(), tags);
        prop_assert_eq!((frame.ethernet.src(), frame.ethernet.dst()), (src_mac, dst_mac));
        prop_assert_eq!(frame.ip.ttl(), ttl);
    }

    #[test]
    fn a_written_message_reads_back_with_its_options_in_order(
        fixed in (any::<[u8; 4]>(), any::<u32>(), any::<u16>(), any::<u16>(), any::<[u8; 16]>()),
        addresses in any::<[[u8; 4]; 4]>(),
        sname in prop::collection::vec(1u8..=255, 0..64),
        file in prop::collection::vec(1u8..=255, 0..128),
        options in prop::collection::vec(
            (option_code(), prop::collection::vec(any::<u8>(), 0..=255)),
            0..12,
        ),
    ) {
        let ([op, htype, hlen, hops], xid, secs, flags, chaddr) = fixed;
        let [ciaddr, yiaddr, siaddr, giaddr] = addresses.map(Ipv4Addr::from);
        let header = Header {
            op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr,
            sname: &sname, file: &file,
        };
        let mut buf = [0u8; 4096];
        let mut writer = Writer::new(&mut buf, &header).unwrap();
        for (code, data) in &options {
            writer.option(*code, data).unwrap();
        }
        let len = writer.finish();
        prop_assert!(len >= dhcpv4::MIN_LEN);
        let message = dhcpv4::Packet::new_checked(&buf[..len]).unwrap();
        prop_assert_eq!(Header::parse(&message), header);
        let read: Vec<(u8, Vec<u8>)> = message
            .options()
            .map(|item| item.map(|(code, data)| (code, data.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(read, options);
    }

    #[test]
    fn the_writer_refuses_what_does_not_fit_and_never_writes_past_its_buffer(
        size in dhcpv4::MIN_LEN..700,
        options in prop::collection::vec(
            (option_code(), prop::collection::vec(any::<u8>(), 0..=255)),
            0..8,
        ),
    ) {
        let mut buf = vec![0xeeu8; size + 16];
        let header = Header {
            op: 2, htype: 1, hlen: 6, hops: 0, xid: 1, secs: 0, flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED, yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED, giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [0; 16], sname: b"", file: b"",
        };
        let mut writer = Writer::new(&mut buf[..size], &header).unwrap();
        let mut written = Vec::new();
        for (code, data) in &options {
            let fits = writer.len() + 2 + data.len() < size;
            let result = writer.option(*code, data);
            prop_assert_eq!(result.is_ok(), fits);
            if fits {
                written.push((*code, data.clone()));
            } else {
                prop_assert_eq!(result, Err(Error::BufferTooSmall));
            }
        }
        let len = writer.finish();
        prop_assert!(len <= size);
        prop_assert!(buf[size..].iter().all(|&b| b == 0xee));
        let message = dhcpv4::Packet::new_checked(&buf[..len]).unwrap();
        let read: Vec<(u8, Vec<u8>)> =
            message.options().map(|o| o.map(|(c, d)| (c, d.to_vec())).unwrap()).collect();
        prop_assert_eq!(read, written);
    }
}
