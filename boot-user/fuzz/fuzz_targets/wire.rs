//! boot-common's wire layer on arbitrary bytes: every view (Ethernet, IPv4, IPv6 and its
//! extension-header walk, UDP, the UDP frames over both, DHCP, DHCPv6 and its relay messages)
//! and the option iterators read every field without a panic, every slice they hand out lies
//! inside the input, and the option walks stay within their bounds.
#![no_main]

use boot_common::wire::dhcpv4::{self, Header, Options};
use boot_common::wire::{
    MacAddr, UdpFrame, UdpFrame6, checksum, dhcpv6, ethernet, ipv4, ipv6, pxe, udp,
};
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

fn walk_options6(bytes: &[u8]) {
    let mut options = 0;
    for (code, data) in dhcpv6::Options::new(bytes).flatten() {
        assert!(inside(data, bytes));
        match code {
            dhcpv6::option::VENDOR_CLASS => {
                if let Some(vendor) = dhcpv6::VendorClass::parse(data) {
                    assert!(vendor.classes().all(|class| inside(class, data)));
                }
            }
            dhcpv6::option::USER_CLASS => {
                assert!(dhcpv6::Strings::new(data).all(|class| inside(class, data)));
            }
            _ => {
                let _ = (
                    dhcpv6::duid_mac(data),
                    dhcpv6::client_arch(data),
                    dhcpv6::client_linklayer_mac(data),
                );
            }
        }
        options += 1;
    }
    assert!(options <= dhcpv6::MAX_OPTIONS);
}

fn dhcp6(bytes: &[u8]) {
    if let Ok(message) = dhcpv6::Packet::new_checked(bytes) {
        let _ = (message.msg_type(), message.transaction_id());
        walk_options6(&bytes[dhcpv6::HEADER_LEN..]);
    }
    if let Ok(relay) = dhcpv6::RelayPacket::new_checked(bytes) {
        let _ = (relay.hop_count(), relay.link_address(), relay.peer_address());
        walk_options6(&bytes[dhcpv6::RELAY_HEADER_LEN..]);
        if let Ok(Some(inner)) = relay.find(dhcpv6::option::RELAY_MSG) {
            assert!(inside(inner, bytes));
            walk_options6(inner);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ip) = ipv6::Packet::new_checked(data) {
        let _ = (ip.traffic_class(), ip.flow_label(), ip.src(), ip.dst());
        assert!(inside(ip.payload(), data));
        if let Ok(upper) = ip.upper_layer() {
            assert!(inside(upper.data, ip.payload()));
            assert_eq!(upper.offset + upper.data.len(), ip.payload().len());
        }
    }
    if let Ok(frame) = UdpFrame6::parse(data) {
        let _ = (frame.src(), frame.dst(), frame.verify_checksum());
        assert!(inside(frame.payload(), data));
        dhcp6(frame.payload());
    }
    dhcp6(data);
    walk_options6(data);
    if let Some((&first, rest)) = data.split_first() {
        if let Ok(upper) = ipv6::walk_extension_headers(first, rest) {
            assert!(inside(upper.data, rest));
        }
    }
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
