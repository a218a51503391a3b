//! The offer path as the XDP backend runs it, set up once for `benches/offer.rs` (what it
//! costs) and `tests/offer_allocations.rs` (that it allocates nothing): the embedded default
//! config serving loopback, a TFTP root with the default loaders, the observer with its node
//! table and metrics, and a request frame (a captured OVMF PXE DISCOVER) whose client MAC the
//! caller varies.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;

use boot_common::wire::ethernet::VlanTags;
use boot_common::wire::frame::{FrameRepr, emit_udp_frame, headers_len};
use boot_common::wire::mac::MacAddr;
use xdpboot::config::Config;
use xdpboot::dhcp::stats::Stats;
use xdpboot::events::{EventSink, Sink};
use xdpboot::loaders::LoaderSearch;
use xdpboot::net::iface::{Interfaces, Watcher};
use xdpboot::net::service::{FsLoaders, Service};
use xdpboot::net::xdp::backend::FrameAnswerer;
use xdpboot::nodes::Limits;
use xdpboot::observe::Observer;
use xdpboot::reload::{Decisions, Swap};

/// Distinct client MACs the offers cycle through (a rack's worth).
pub const CLIENTS: u32 = 1000;
/// chaddr's last three octets in the request frame: the headers, then BOOTP's 28 + 3.
const CHADDR_TAIL: usize = headers_len(0) + 28 + 3;

pub struct OfferLab {
    pub answerer: FrameAnswerer,
    pub request: Vec<u8>,
    /// A TX frame's worth of room for the reply.
    pub reply: Vec<u8>,
    root: PathBuf,
    _watcher: Watcher,
}

impl OfferLab {
    pub fn new() -> OfferLab {
        let root = std::env::temp_dir().join(format!("xdpboot-offer-lab-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("temp dir");
        for loader in ["undionly.kpxe", "ipxe-amd64.efi"] {
            std::fs::write(root.join(loader), b"loader").expect("loader");
        }
        let config = Config::embedded().expect("the embedded default");
        let (interfaces, watcher) = Interfaces::new().expect("the interface table");
        let lo = interfaces
            .snapshot()
            .by_name("lo")
            .map(|i| i.index)
            .expect("loopback");
        let observer = Arc::new(Observer::new(Limits {
            max_nodes: config.admin.max_nodes,
            ttl: config.admin.node_ttl,
        }));
        let sink: Sink = Some(observer as Arc<dyn EventSink>);
        let service = Service::new(
            Arc::new(Swap::new(Decisions::from_config(&config).expect("no API"))),
            interfaces.clone(),
            vec!["lo".to_owned()],
            FsLoaders::new(&root, LoaderSearch::default()),
            Arc::new(Stats::default()),
        )
        .with_observer(sink);
        let payload = std::fs::read(format!(
            "{}/../tests/data/ovmf-pxe-discover.bin",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("golden DISCOVER");
        let repr = FrameRepr {
            src_mac: MacAddr([0x52, 0x54, 0x00, 0, 0, 0]),
            dst_mac: MacAddr::BROADCAST,
            tags: VlanTags::NONE,
            src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            dst: SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
            ttl: FrameRepr::DEFAULT_TTL,
        };
        let mut request = vec![0u8; headers_len(0) + payload.len()];
        request[headers_len(0)..].copy_from_slice(&payload);
        let len = emit_udp_frame(&mut request, &repr, payload.len()).expect("request frame");
        request.truncate(len);
        OfferLab {
            answerer: FrameAnswerer::new(Arc::new(service), interfaces, lo),
            request,
            reply: vec![0u8; 2048],
            root,
            _watcher: watcher,
        }
    }

    /// Answers the request as client `n` (of [`CLIENTS`]); whether a reply frame was written.
    pub fn offer(&mut self, n: u32) -> bool {
        let id = (n % CLIENTS).to_be_bytes();
        self.request[CHADDR_TAIL..CHADDR_TAIL + 3].copy_from_slice(&id[1..]);
        self.answerer
            .answer(&self.request, &mut self.reply)
            .is_some()
    }
}

impl Drop for OfferLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
