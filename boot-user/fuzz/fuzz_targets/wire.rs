//! boot-common's wire layer on arbitrary bytes: every view (Ethernet, IPv4, UDP, the UDP frame,
//! DHCP) and the option iterator read every field without a panic, every slice they hand out
//! lies inside the input, and the option walk stays within its bound.
#![no_main]

use boot_common::wire::dhcpv4::{self, Header, Options};
use boot_common::wire::{MacAddr, UdpFrame, checksum, ethernet, ipv4, pxe, udp};
use libfuzzer_sys::fuzz_target;

fn inside(inner: &[u8], outer: &[u8]) -> bool {
    let start = inner.as_ptr() as usize;
    start >= outer.as_ptr() as usize && start + inner.len() <= outer.as_ptr() as usize + outer.len()
}

fn walk_options(bytes: &[u8]) {
    let mut options = 0;
    for (code, data) in Options::new(bytes).flatten() {
        assert!(code != dhcpv4::option::PAD && code != dhcpv4::option::END);
        assert!(inside(data, bytes));
        let _ = (
            dhcpv4::client_arch(data),
            pxe::client_machine_id(data),
            pxe::BootItem::parse(data),
        );
        options += 1;
    }
    assert!(options <= dhcpv4::MAX_OPTIONS);
}

fn dhcp(bytes: &[u8]) {
    let Ok(message) = dhcpv4::Packet::new_checked(bytes) else {
        return;
    };
    let _ = Header::parse(&message);
    let _ = (
        message.client_mac(),
        message.broadcast(),
        message.message_type(),
    );
    assert!(inside(message.sname(), bytes) && inside(message.file(), bytes));
    walk_options(&bytes[dhcpv4::OPTIONS_OFFSET..]);
    if let Ok(Some(vendor)) = message.find(dhcpv4::option::VENDOR_SPECIFIC) {
        walk_options(vendor);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = ethernet::Frame::new_checked(data) {
        let _ = (
            frame.dst(),
            frame.src(),
            frame.tags().vlan_id(),
            frame.ethertype(),
        );
        assert!(inside(frame.payload(), data));
    }
    if let Ok(ip) = ipv4::Packet::new_checked(data) {
        let _ = (
            ip.is_fragment(),
            ip.fragment_offset(),
            ip.protocol(),
            ip.src(),
            ip.dst(),
        );
        let _ = ip.verify_checksum();
        assert!(inside(ip.options(), data) && inside(ip.payload(), data));
        assert_eq!(
            ip.header_len() + ip.payload().len(),
            usize::from(ip.total_len())
        );
    }
    if let Ok(datagram) = udp::Packet::new_checked(data) {
        let _ = (datagram.src_port(), datagram.dst_port());
        let _ = datagram.verify_checksum([198, 18, 0, 7].into(), [198, 18, 0, 1].into());
        assert!(inside(datagram.payload(), data));
    }
    if let Ok(frame) = UdpFrame::parse(data) {
        let _ = (frame.src(), frame.dst(), frame.verify_checksums());
        assert!(inside(frame.payload(), data));
        dhcp(frame.payload());
    }
    dhcp(data);
    walk_options(data);
    let _ = checksum::checksum(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(mac) = text.parse::<MacAddr>() {
            assert!(
                mac.to_string()
                    .eq_ignore_ascii_case(&text.replace('-', ":"))
            );
        }
    }
});
