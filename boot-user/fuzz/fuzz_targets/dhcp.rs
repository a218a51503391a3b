//! DHCP parse → classify → policy → reply on arbitrary bytes, on both server ports: never a
//! panic, and every reply is a well-formed BOOTREPLY of at least 300 bytes.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use xdpboot::config::Config;
use xdpboot::dhcp::{AdmitAll, Ingress, LoaderIndex, Outcome, Responder, ServerPort};

struct AllLoaders;
impl LoaderIndex for AllLoaders {
    fn has_loader(&self, _: &str) -> bool {
        true
    }
}

fn responder() -> &'static Responder {
    static RESPONDER: OnceLock<Responder> = OnceLock::new();
    RESPONDER.get_or_init(|| {
        let config = Config::embedded().expect("the embedded default is valid");
        Responder::new(config.policy.clone(), config.url_ports())
    })
}

fuzz_target!(|data: &[u8]| {
    for port in [ServerPort::Dhcp, ServerPort::Pxe] {
        let ingress = Ingress {
            port,
            source: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 7), 68),
            server: Ipv4Addr::new(198, 18, 0, 1),
        };
        if let Outcome::Reply { reply, .. } = responder().handle(data, &ingress, &AllLoaders, &AdmitAll) {
            assert!(reply.bytes.len() >= 300);
            assert_eq!(reply.bytes[0], 2, "op BOOTREPLY");
            assert_eq!(&reply.bytes[236..240], &[99, 130, 83, 99]);
        }
    }
});
