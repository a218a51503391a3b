//! CPU of the whole user-space offer path, without I/O: a request frame as the XDP backend
//! receives it (Ethernet/IPv4/UDP around a captured PXE DISCOVER, a new client MAC each time out
//! of 1,000) → the service (interface check, the core, stats, the node table and metrics, the
//! decision's log line at the shipped `info` level) → the reply frame as it goes on the TX ring.
//!
//! `cargo bench -p boot-user --bench offer` prints ns per offer (`FrameAnswerer::answer`, the
//! function the XDP backend runs for every frame). For instruction counts, which
//! are stable on shared machines, run the built bench under callgrind twice with different
//! counts and divide the difference (BENCHMARKS.md has the command and the results):
//! `XDPBOOT_OFFERS=N valgrind --tool=callgrind --callgrind-out-file=/dev/null <bench binary>`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use boot_common::wire::ethernet::VlanTags;
use boot_common::wire::frame::{FrameRepr, emit_udp_frame, headers_len};
use boot_common::wire::mac::MacAddr;
use xdpboot::config::Config;
use xdpboot::dhcp::stats::Stats;
use xdpboot::events::{EventSink, Sink};
use xdpboot::loaders::LoaderSearch;
use xdpboot::net::iface::Interfaces;
use xdpboot::net::service::{FsLoaders, Service};
use xdpboot::net::xdp::backend::FrameAnswerer;
use xdpboot::nodes::Limits;
use xdpboot::observe::Observer;
use xdpboot::reload::{Decisions, Swap};

/// Distinct client MACs the offers cycle through (a rack's worth).
const CLIENTS: u32 = 1000;

fn main() {
    let offers: u32 = std::env::var("XDPBOOT_OFFERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    // The daemon's default log level, written nowhere.
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::sink)
        .init();

    let root = std::env::temp_dir().join(format!("xdpboot-offer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("temp dir");
    for loader in ["undionly.kpxe", "ipxe-amd64.efi"] {
        std::fs::write(root.join(loader), b"loader").expect("loader");
    }
    let config = Config::embedded().expect("the embedded default");
    let (interfaces, _watcher) = Interfaces::new().expect("the interface table");
    let lo = interfaces
        .snapshot()
        .by_name("lo")
        .map(|i| i.index)
        .expect("loopback");
    let observer = Arc::new(Observer::new(Limits {
        max_nodes: config.admin.max_nodes,
        ttl: config.admin.node_ttl,
    }));
    let sink: Sink = Some(observer.clone() as Arc<dyn EventSink>);
    let service = Service::new(
        Arc::new(Swap::new(Decisions::from_config(&config).expect("no API"))),
        interfaces.clone(),
        vec!["lo".to_owned()],
        FsLoaders::new(&root, LoaderSearch::default()),
        Arc::new(Stats::default()),
    )
    .with_observer(sink);
    let answerer = FrameAnswerer::new(Arc::new(service), interfaces, lo);

    let payload = std::fs::read(format!(
        "{}/../tests/data/ovmf-pxe-discover.bin",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("golden DISCOVER");
    let request = FrameRepr {
        src_mac: MacAddr([0x52, 0x54, 0x00, 0, 0, 0]),
        dst_mac: MacAddr::BROADCAST,
        tags: VlanTags::NONE,
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        dst: SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        ttl: FrameRepr::DEFAULT_TTL,
    };
    let mut frame = vec![0u8; headers_len(0) + payload.len()];
    frame[headers_len(0)..].copy_from_slice(&payload);
    let frame_len = emit_udp_frame(&mut frame, &request, payload.len()).expect("request frame");
    frame.truncate(frame_len);
    // chaddr's last three octets, in the frame: the headers, then BOOTP's 28 + 3.
    let chaddr_tail = headers_len(0) + 28 + 3;
    // The TX frame the reply is written into, as a UMEM frame is.
    let mut reply = vec![0u8; 2048];

    let started = Instant::now();
    let mut answered = 0u32;
    for n in 0..offers {
        let id = (n % CLIENTS).to_be_bytes();
        frame[chaddr_tail..chaddr_tail + 3].copy_from_slice(&id[1..]);
        if answerer.answer(&frame, &mut reply).is_some() {
            answered += 1;
        }
    }
    let per = started.elapsed().as_nanos() as f64 / f64::from(offers.max(1));
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(answered, offers, "every DISCOVER is answered");
    println!("offer path: {per:.0} ns/offer over {offers} offers ({CLIENTS} clients)");
}
