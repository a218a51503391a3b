//! The wire layer against real bytes: the BOOTP requests firmware sent in the lab
//! (`tests/data/*.bin`) and the frames around them (`tests/data/*.pcap`), each checked against
//! `dhcproto`, an independent decoder, and against the notes in `tests/data/README.md`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use boot_common::wire::dhcpv4::{
    self, BOOTREPLY, BOOTREQUEST, FLAG_BROADCAST, HTYPE_ETHERNET, Header, Packet, Writer,
    message_type, option,
};
use boot_common::wire::ethernet::{VlanTag, VlanTags};
use boot_common::wire::{FrameRepr, MacAddr, UdpFrame, emit_udp_frame, headers_len, pxe};
use dhcproto::v4::{self, DhcpOption, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

/// Every captured request, by file name.
fn captures() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(data_dir())
        .expect("tests/data is in the repository")
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "bin"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("a readable capture"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 15, "the captures of tests/data/README.md");
    files
}

fn capture(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).expect("a capture named in tests/data/README.md")
}

fn dhcproto_decode(bytes: &[u8]) -> v4::Message {
    v4::Message::decode(&mut Decoder::new(bytes)).expect("dhcproto decodes the capture")
}

/// `sname`/`file` as dhcproto gives them: up to and including the first NUL, or nothing.
fn dhcproto_text(field: Option<&[u8]>) -> &[u8] {
    field.map_or(&[], |text| text.strip_suffix(&[0]).unwrap_or(text))
}

#[test]
fn every_captured_request_reads_as_dhcproto_reads_it() {
    for (name, bytes) in captures() {
        let ours = Packet::new_checked(&bytes[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs = dhcproto_decode(&bytes);
        assert_eq!(ours.op(), u8::from(theirs.opcode()), "{name}");
        assert_eq!(ours.op(), BOOTREQUEST, "{name}");
        assert_eq!(ours.htype(), u8::from(theirs.htype()), "{name}");
        assert_eq!(ours.hlen(), theirs.hlen(), "{name}");
        assert_eq!(ours.hops(), theirs.hops(), "{name}");
        assert_eq!(ours.xid(), theirs.xid(), "{name}");
        assert_eq!(ours.secs(), theirs.secs(), "{name}");
        assert_eq!(ours.broadcast(), theirs.flags().broadcast(), "{name}");
        assert_eq!(ours.ciaddr(), theirs.ciaddr(), "{name}");
        assert_eq!(ours.yiaddr(), theirs.yiaddr(), "{name}");
        assert_eq!(ours.siaddr(), theirs.siaddr(), "{name}");
        assert_eq!(ours.giaddr(), theirs.giaddr(), "{name}");
        assert_eq!(&ours.chaddr()[..6], theirs.chaddr(), "{name}");
        let mac = ours.client_mac().expect("an Ethernet chaddr");
        assert_eq!(&mac.octets()[..], theirs.chaddr(), "{name}");
        assert_eq!(
            dhcpv4::until_nul(ours.sname()),
            dhcproto_text(theirs.sname()),
            "{name}"
        );
        assert_eq!(
            dhcpv4::until_nul(ours.file()),
            dhcproto_text(theirs.fname()),
            "{name}"
        );
        assert_eq!(
            ours.message_type().unwrap(),
            theirs.opts().msg_type().map(u8::from),
            "{name}"
        );

        // Every option, byte for byte: dhcproto's typed value encoded again must be the code,
        // length and data our iterator found.
        let mut codes = Vec::new();
        for item in ours.options() {
            let (code, data) = item.unwrap_or_else(|e| panic!("{name}: {e}"));
            codes.push(code);
            let decoded = theirs
                .opts()
                .get(OptionCode::from(code))
                .unwrap_or_else(|| panic!("{name}: dhcproto lost option {code}"));
            let mut encoded = Vec::new();
            decoded
                .encode(&mut Encoder::new(&mut encoded))
                .expect("dhcproto encodes what it decoded");
            assert_eq!(encoded[0], code, "{name}");
            assert_eq!(&encoded[2..], data, "{name}: option {code}");
        }
        let mut theirs_codes: Vec<u8> = theirs
            .opts()
            .iter()
            .map(|(code, _)| u8::from(*code))
            .filter(|&code| code != option::END)
            .collect();
        theirs_codes.sort();
        codes.sort();
        assert_eq!(codes, theirs_codes, "{name}: the same options");

        // The options a boot server reads, through the helpers.
        if let Some(DhcpOption::ClientSystemArchitecture(arch)) =
            theirs.opts().get(OptionCode::ClientSystemArchitecture)
        {
            let data = ours.find(option::CLIENT_ARCH).unwrap().expect("option 93");
            assert_eq!(dhcpv4::client_arch(data), Some(u16::from(*arch)), "{name}");
        }
        if let Some(DhcpOption::ClientMachineIdentifier(id)) =
            theirs.opts().get(OptionCode::ClientMachineIdentifier)
        {
            let data = ours
                .find(option::CLIENT_MACHINE_ID)
                .unwrap()
                .expect("option 97");
            assert_eq!(
                pxe::client_machine_id(data).map(|g| g.to_vec()),
                Some(id[1..].to_vec())
            );
        }
    }
}

#[test]
fn the_seabios_ipxe_discover_says_what_the_readme_says() {
    let bytes = capture("seabios-ipxe-discover.bin");
    let packet = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(
        packet.client_mac(),
        Some("52:54:00:18:00:01".parse().unwrap())
    );
    assert_eq!(packet.message_type(), Ok(Some(message_type::DISCOVER)));
    assert!(!packet.broadcast());
    let arch = packet.find(option::CLIENT_ARCH).unwrap().unwrap();
    assert_eq!(dhcpv4::client_arch(arch), Some(0));
    assert_eq!(
        packet.find(option::VENDOR_CLASS),
        Ok(Some(&b"PXEClient:Arch:00000:UNDI:002001"[..]))
    );
    assert_eq!(packet.find(option::USER_CLASS), Ok(Some(&b"iPXE"[..])));
    assert_eq!(packet.find(option::CLIENT_NDI), Ok(Some(&[1, 2, 1][..])));
    let guid = pxe::client_machine_id(packet.find(option::CLIENT_MACHINE_ID).unwrap().unwrap());
    assert_eq!(
        guid,
        Some([
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0x01
        ])
    );
    let order: Vec<u8> = packet.options().map(|o| o.unwrap().0).collect();
    assert_eq!(order, [53, 57, 93, 94, 60, 77, 55, 175, 61, 97]);
}

#[test]
fn the_ovmf_http_discover_is_arch_16_with_an_httpclient_vendor_class() {
    let bytes = capture("ovmf-http-discover.bin");
    let packet = Packet::new_checked(&bytes[..]).unwrap();
    assert!(packet.broadcast());
    let arch = packet.find(option::CLIENT_ARCH).unwrap().unwrap();
    assert_eq!(dhcpv4::client_arch(arch), Some(16));
    assert!(
        packet
            .find(option::VENDOR_CLASS)
            .unwrap()
            .unwrap()
            .starts_with(b"HTTPClient:Arch:00016")
    );
    assert_eq!(packet.find(option::USER_CLASS), Ok(None));
}

#[test]
fn the_ipxe_boot_server_request_names_boot_item_0x8000() {
    let bytes = capture("seabios-ipxe-pxebs-4011.bin");
    let packet = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(packet.xid(), 0);
    assert_eq!(packet.ciaddr(), Ipv4Addr::new(198, 18, 0, 149));
    assert_eq!(packet.find(option::SERVER_ID), Ok(None));
    let vendor = packet.find(option::VENDOR_SPECIFIC).unwrap().unwrap();
    let item = pxe::sub_options(vendor)
        .find(pxe::sub_option::BOOT_ITEM)
        .unwrap()
        .unwrap();
    assert_eq!(
        pxe::BootItem::parse(item),
        Some(pxe::BootItem {
            item_type: 0x8000,
            layer: 0
        })
    );
}

/// The Ethernet frames of a classic little-endian pcap file (linktype 1).
fn pcap_frames(name: &str) -> Vec<Vec<u8>> {
    let bytes = capture(name);
    assert_eq!(
        &bytes[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "{name}: little-endian pcap"
    );
    assert_eq!(
        u32::from_le_bytes(bytes[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut frames = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let captured = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        frames.push(bytes[at + 16..at + 16 + captured].to_vec());
        at += 16 + captured;
    }
    frames
}

#[test]
fn every_captured_frame_parses_and_the_firmwares_checksums_verify() {
    let mut client_frames = 0;
    for name in [
        "bios.pcap",
        "bios-menu.pcap",
        "uefi-pxe.pcap",
        "uefi-http.pcap",
    ] {
        for (i, bytes) in pcap_frames(name).iter().enumerate() {
            let frame = UdpFrame::parse(bytes).unwrap_or_else(|e| panic!("{name} #{i}: {e}"));
            assert!(
                frame.ip.verify_checksum(),
                "{name} #{i}: IPv4 header checksum"
            );
            let dhcp = Packet::new_checked(frame.payload()).unwrap();
            // The servers' replies left the namespace's veth with checksum offload, so their
            // UDP sums are only partly filled in; the firmware computes its own in full.
            if dhcp.op() == BOOTREQUEST {
                assert!(frame.verify_checksums(), "{name} #{i}: UDP checksum");
                assert_ne!(frame.udp.checksum(), 0, "{name} #{i}: a checksum was sent");
                client_frames += 1;
            }
        }
    }
    assert_eq!(client_frames, 19);
}

#[test]
fn the_first_bios_frame_carries_the_seabios_ipxe_discover() {
    let frames = pcap_frames("bios.pcap");
    let frame = UdpFrame::parse(&frames[0]).unwrap();
    assert_eq!(frame.payload(), capture("seabios-ipxe-discover.bin"));
    assert_eq!(frame.src(), SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
    assert_eq!(frame.dst(), SocketAddrV4::new(Ipv4Addr::BROADCAST, 67));
    assert!(frame.ethernet.dst().is_broadcast());
    assert_eq!(frame.ethernet.src().to_string(), "52:54:00:18:00:01");
    assert!(frame.ethernet.tags().is_empty());
}

/// The chaddr field of a MAC.
fn chaddr(mac: MacAddr) -> [u8; 16] {
    let mut chaddr = [0; 16];
    chaddr[..6].copy_from_slice(&mac.octets());
    chaddr
}

/// A proxy OFFER as DESIGN.md describes it, written with the [`Writer`] into `buf`.
fn write_proxy_offer(buf: &mut [u8], request: &Packet<&[u8]>) -> usize {
    let server = Ipv4Addr::new(198, 18, 0, 1);
    let header = Header {
        op: BOOTREPLY,
        htype: HTYPE_ETHERNET,
        hlen: 6,
        hops: 0,
        xid: request.xid(),
        secs: 0,
        flags: FLAG_BROADCAST,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: server,
        giaddr: request.giaddr(),
        chaddr: chaddr(request.client_mac().unwrap()),
        sname: b"198.18.0.1",
        file: b"undionly.kpxe",
    };
    let mut writer = Writer::new(buf, &header).unwrap();
    writer
        .option(option::MESSAGE_TYPE, &[message_type::OFFER])
        .unwrap();
    writer.option(option::SERVER_ID, &server.octets()).unwrap();
    writer.option(option::VENDOR_CLASS, b"PXEClient").unwrap();
    let guid =
        pxe::client_machine_id(request.find(option::CLIENT_MACHINE_ID).unwrap().unwrap()).unwrap();
    writer
        .option(
            option::CLIENT_MACHINE_ID,
            &pxe::client_machine_id_option(&guid),
        )
        .unwrap();
    writer
        .option(
            option::VENDOR_SPECIFIC,
            &pxe::discovery_control_option(pxe::discovery_control::BOOT_FILE_IN_OFFER),
        )
        .unwrap();
    writer.finish()
}

#[test]
fn a_written_proxy_offer_reads_back_with_dhcproto() {
    let request_bytes = capture("seabios-ipxe-discover.bin");
    let request = Packet::new_checked(&request_bytes[..]).unwrap();
    let mut buf = [0u8; 576];
    let len = write_proxy_offer(&mut buf, &request);
    assert_eq!(len, dhcpv4::MIN_LEN, "a short reply is padded to 300 bytes");

    let reply = dhcproto_decode(&buf[..len]);
    assert_eq!(reply.opcode(), v4::Opcode::BootReply);
    assert_eq!(reply.xid(), request.xid());
    assert!(reply.flags().broadcast());
    assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.siaddr(), Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(reply.chaddr(), &request.chaddr()[..6]);
    assert_eq!(reply.sname(), Some(&b"198.18.0.1\0"[..]));
    assert_eq!(reply.fname(), Some(&b"undionly.kpxe\0"[..]));
    let opts = reply.opts();
    assert_eq!(opts.msg_type(), Some(v4::MessageType::Offer));
    assert_eq!(
        opts.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 18, 0, 1)))
    );
    assert_eq!(
        opts.get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(
        opts.get(OptionCode::ClientMachineIdentifier),
        request
            .find(option::CLIENT_MACHINE_ID)
            .unwrap()
            .map(|id| DhcpOption::ClientMachineIdentifier(id.to_vec()))
            .as_ref()
    );
    assert_eq!(
        opts.get(OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
}

#[test]
fn a_written_reply_frame_parses_back_with_both_checksums_right() {
    let request_bytes = capture("seabios-ipxe-discover.bin");
    let request = Packet::new_checked(&request_bytes[..]).unwrap();
    let tags = VlanTags::new(&[
        VlanTag {
            tpid: 0x88a8,
            tci: 100,
        },
        VlanTag {
            tpid: 0x8100,
            tci: 0x2000 | 42,
        },
    ])
    .unwrap();
    let repr = FrameRepr {
        src_mac: "02:00:00:00:00:01".parse().unwrap(),
        dst_mac: MacAddr::BROADCAST,
        tags,
        src: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 67),
        dst: SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
        ttl: FrameRepr::DEFAULT_TTL,
    };
    // As the AF_XDP backend will: the DHCP payload straight into the frame, then the headers.
    let mut umem_frame = [0u8; 2048];
    let at = headers_len(2);
    let payload_len = write_proxy_offer(&mut umem_frame[at..], &request);
    let len = emit_udp_frame(&mut umem_frame, &repr, payload_len).unwrap();
    assert_eq!(len, 14 + 8 + 20 + 8 + 300);

    let frame = UdpFrame::parse(&umem_frame[..len]).unwrap();
    assert!(frame.ip.verify_checksum());
    assert!(frame.udp.verify_checksum(frame.ip.src(), frame.ip.dst()));
    assert_ne!(frame.udp.checksum(), 0);
    assert_eq!(frame.ethernet.tags(), tags);
    assert_eq!(frame.ethernet.tags().vlan_id(), Some(42));
    assert_eq!((frame.src(), frame.dst()), (repr.src, repr.dst));
    let reply = Packet::new_checked(frame.payload()).unwrap();
    assert_eq!(reply.message_type(), Ok(Some(message_type::OFFER)));
    assert_eq!(dhcproto_decode(frame.payload()).xid(), request.xid());
}
