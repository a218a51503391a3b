//! DHCPv6 parse (relay messages included) → classify → policy → reply on arbitrary bytes, on
//! both server ports and from a link-local and a relay's source: never a panic, and every reply
//! is a well-formed DHCPv6 (or relay) message that carries no address.
#![no_main]

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::OnceLock;

use boot_common::wire::{MacAddr, dhcpv6};
use libfuzzer_sys::fuzz_target;
use xdpboot::config::Config;
use xdpboot::dhcp::{AdmitAll, LoaderIndex};
use xdpboot::dhcp6::{Ingress, Outcome, Responder, ServerPort};

struct AllLoaders;
impl LoaderIndex for AllLoaders {
    fn has_loader(&self, _: &str) -> bool {
        true
    }
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config::embedded().expect("the embedded default is valid"))
}

/// Every option of `message` (a relay's inner messages too) reads, and none is an address.
fn check(message: &[u8]) {
    let kind = message[0];
    let options = if dhcpv6::message_type::is_relay(kind) {
        assert_eq!(kind, dhcpv6::message_type::RELAY_REPL);
        dhcpv6::Options::new(&message[dhcpv6::RELAY_HEADER_LEN..])
    } else {
        assert!(kind == dhcpv6::message_type::ADVERTISE || kind == dhcpv6::message_type::REPLY);
        dhcpv6::Options::new(&message[dhcpv6::HEADER_LEN..])
    };
    for item in options {
        let (code, data) = item.expect("a reply's options are whole");
        assert!(code != dhcpv6::option::IA_NA && code != dhcpv6::option::IA_TA);
        if code == dhcpv6::option::RELAY_MSG {
            check(data);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    let duid = dhcpv6::duid_ll(MacAddr([2, 0, 0, 0x18, 0, 1]));
    let sources = [
        SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe18, 0x0101), 546, 0, 0),
        SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0xfe), 547, 0, 0),
    ];
    for port in [ServerPort::Dhcp, ServerPort::Pxe] {
        for source in sources {
            let ingress = Ingress {
                port,
                source,
                server: Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1),
                server_duid: &duid,
                link_mac: None,
            };
            let responder = Responder::new(&config.policy, config.url_ports());
            if let Outcome::Reply { reply, .. } =
                responder.handle(data, &ingress, &AllLoaders, &AdmitAll)
            {
                check(&reply.bytes);
            }
        }
    }
});
