//! Cost of the sans-IO core per request: `cargo bench -p boot-user --bench core`.
//! Reports ns per handled request for each golden client kind (no I/O).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use xdpboot::config::Config;
use xdpboot::dhcp::{AdmitAll, Ingress, LoaderIndex, Outcome, Responder, ServerPort};

struct AllLoaders;
impl LoaderIndex for AllLoaders {
    fn has_loader(&self, _: &str) -> bool {
        true
    }
}

fn main() {
    let config = Config::embedded().expect("embedded default is valid");
    let responder = Responder::new(config.policy.clone(), config.url_ports());
    for (name, port) in [
        ("seabios-ipxe-discover.bin", ServerPort::Dhcp),
        ("ovmf-pxe-discover.bin", ServerPort::Dhcp),
        ("ovmf-pxe-request-4011.bin", ServerPort::Pxe),
        ("ovmf-pxe-request-67.bin", ServerPort::Dhcp),
    ] {
        let path = format!("{}/../tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).expect("golden packet");
        let ingress = Ingress {
            port,
            source: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 147), 68),
            server: Ipv4Addr::new(198, 18, 0, 1),
        };
        const ROUNDS: u32 = 200_000;
        let start = Instant::now();
        let mut replies = 0u32;
        for _ in 0..ROUNDS {
            if let Outcome::Reply { .. } =
                responder.handle(&bytes, &ingress, &AllLoaders, &AdmitAll)
            {
                replies += 1;
            }
        }
        let per = start.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
        println!("{name:<28} {per:>8.0} ns/request  ({replies} replies)");
    }
}
