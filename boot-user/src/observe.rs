//! Where the servers' events end up: each DHCP decision, TFTP transfer and HTTP request is one
//! call on the shared [`Observer`] (through [`EventSink`], which the servers know it by), and
//! moves the metrics ([`crate::metrics`]) and the node tracker ([`crate::nodes`]). The servers
//! hold an [`crate::events::Sink`]: `None` when `[admin] enabled = false`, and then they do
//! nothing extra at all.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;

use crate::config::Admin;
use crate::dhcp::classify::{Client, ServerPort};
use crate::dhcp::policy::parse_mac;
use crate::dhcp::stats::{Stats as DhcpStats, malformed_name};
use crate::dhcp::{Ignored, Outcome};
use crate::dhcp6;
pub use crate::events::{EventSink, HttpRequest, TftpTransfer};
use crate::http::Route;
use crate::http::scripts::{BootFile, BootFilePath};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{
    AttributionLabels, HttpLabels, Metrics, PortLabels, ReasonLabels, ReplyLabels, RouteLabels,
    SeriesCache, StageLabels, interface_label,
};
use crate::net::neighbour::Neighbours;
use crate::net::xdp::backend::XdpInterface;
use crate::nodes::summary::SummaryView;
use crate::nodes::{
    DhcpAnswer, DhcpSeen, Fetch, Fetched, Firmware, Limits, NodeTracker, NodesView, Stage,
    TableQuery, Update,
};
use crate::tftp::stats::TftpStats;

/// Metrics and the node tracker, fed by every server.
#[derive(Debug)]
pub struct Observer {
    pub metrics: Metrics,
    nodes: Arc<Mutex<NodeTracker>>,
    /// The tracker's version, readable without its lock (the event stream polls it).
    version: AtomicU64,
    /// Client MACs for downloads known by address only, asked outside the tracker's lock.
    neighbours: Neighbours,
    /// The series every DHCP request moves, found cheaply (see [`SeriesCache`]).
    decisions: SeriesCache<PortLabels, Histogram>,
    replies: SeriesCache<ReplyLabels, Counter>,
    ignored: SeriesCache<ReasonLabels, Counter>,
    node_events: SeriesCache<AttributionLabels, Counter>,
}

impl Observer {
    pub fn new(limits: Limits) -> Observer {
        let nodes = Arc::new(Mutex::new(NodeTracker::new(limits)));
        Observer {
            metrics: Metrics::new(nodes.clone()),
            nodes,
            version: AtomicU64::new(0),
            neighbours: Neighbours::default(),
            decisions: SeriesCache::default(),
            replies: SeriesCache::default(),
            ignored: SeriesCache::default(),
            node_events: SeriesCache::default(),
        }
    }

    /// The daemon's observer, or `None` when `[admin]` is disabled.
    pub fn from_config(admin: &Admin) -> Option<Arc<Observer>> {
        admin.enabled.then(|| {
            Arc::new(Observer::new(Limits {
                max_nodes: admin.max_nodes,
                ttl: admin.node_ttl,
            }))
        })
    }

    fn tracker(&self) -> MutexGuard<'_, NodeTracker> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes of the node table since start.
    pub fn nodes_version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// One page of the node table (`/api/nodes`).
    pub fn nodes(&self, query: &TableQuery) -> NodesView {
        let mut tracker = self.tracker();
        let view = tracker.view(Instant::now(), SystemTime::now(), query);
        self.version.store(tracker.version(), Ordering::Relaxed);
        view
    }

    /// The node table's aggregates (`/api/summary`).
    pub fn summary(&self) -> SummaryView {
        let mut tracker = self.tracker();
        let view = tracker.summary(Instant::now(), SystemTime::now());
        self.version.store(tracker.version(), Ordering::Relaxed);
        view
    }

    /// Reads the XDP program's counters on `iface` at every scrape.
    pub fn watch_xdp(&self, iface: &XdpInterface) {
        match iface.counter_reader() {
            Ok(reader) => self.metrics.watch_xdp(iface.name(), reader),
            Err(e) => {
                tracing::warn!(iface = %iface.name(), error = %e, "XDP counters will be missing from /metrics")
            }
        }
    }

    pub fn watch_tftp(&self, stats: Arc<TftpStats>) {
        self.metrics.watch_tftp(stats);
    }

    pub fn watch_dhcp(&self, stats: Arc<DhcpStats>) {
        self.metrics.watch_dhcp(stats);
    }

    fn record(&self, protocol: &'static str, update: Update) {
        self.node_events.with(
            &self.metrics.node_events,
            &AttributionLabels {
                protocol,
                attribution: update.attribution.name(),
            },
            |c| {
                c.inc();
            },
        );
        if let Some((stage, after)) = update.reached
            && stage != Stage::Dhcp
        {
            self.metrics
                .boot_stage_seconds
                .get_or_create(&StageLabels {
                    stage: stage.name(),
                })
                .observe(after.as_secs_f64());
        }
    }

    /// A download: the neighbour entry is looked up first, without the tracker's lock (a
    /// netlink round trip on a cache miss), and only when the tracker would use it. Should the
    /// address become known or unknown in between, the tracker's own check at the update wins.
    fn fetch(&self, fetch: &Fetch<'_>) {
        let needed = self.tracker().needs_neighbour(fetch);
        let neighbour = if needed {
            self.neighbours.mac(fetch.client)
        } else {
            None
        };
        self.track(fetch.protocol, |t| {
            t.fetch(Instant::now(), fetch, neighbour)
        });
    }

    /// How long a DHCP decision (v4 or v6) on `port` took.
    fn decided(&self, port: u16, elapsed: Duration) {
        self.decisions.with(
            &self.metrics.dhcp_decision_seconds,
            &PortLabels { port },
            |h| h.observe(elapsed.as_secs_f64()),
        );
    }

    /// A DHCP request (v4 or v6) left unanswered, and why.
    fn count_ignored(&self, reason: &'static str, interface: &'static str) {
        self.ignored.with(
            &self.metrics.dhcp_ignored,
            &ReasonLabels { reason, interface },
            |c| {
                c.inc();
            },
        );
    }

    /// A DHCP reply (v4 or v6) sent.
    fn count_reply(&self, labels: &ReplyLabels) {
        self.replies.with(&self.metrics.dhcp_replies, labels, |c| {
            c.inc();
        });
    }

    fn track(&self, protocol: &'static str, event: impl FnOnce(&mut NodeTracker) -> Update) {
        let mut tracker = self.tracker();
        let update = event(&mut tracker);
        self.version.store(tracker.version(), Ordering::Relaxed);
        drop(tracker);
        self.record(protocol, update);
    }
}

/// The servers report here: metrics first, then the node table.
impl EventSink for Observer {
    /// One DHCP decision (`Service::handle`): the request from `source` on `iface`, decided in
    /// `elapsed`.
    fn dhcp(
        &self,
        iface: &str,
        port: ServerPort,
        source: SocketAddrV4,
        outcome: &Outcome,
        elapsed: Duration,
    ) {
        let m = &self.metrics;
        self.decided(port.number(), elapsed);
        let interface = interface_label(iface);
        let (client, rule, answer) = match outcome {
            Outcome::Malformed(malformed) => {
                m.dhcp_malformed
                    .get_or_create(&ReasonLabels {
                        reason: malformed_name(*malformed),
                        interface,
                    })
                    .inc();
                return;
            }
            Outcome::Ignored { client, reason } => {
                self.count_ignored(reason.name(), interface);
                // Plain DHCP and a boot client's REQUEST to the site server are not boot
                // decisions: no row for them.
                if matches!(reason, Ignored::NotBootRequest | Ignored::MessageType(_)) {
                    return;
                }
                let error = !matches!(reason, Ignored::Silent { .. });
                let rule = match reason {
                    Ignored::Silent { rule } | Ignored::LoaderMissing { rule, .. } => Some(*rule),
                    _ => None,
                };
                (
                    client,
                    rule,
                    DhcpAnswer::NotAnswered {
                        reason: reason.name(),
                        error,
                    },
                )
            }
            Outcome::Reply {
                client,
                rule,
                action,
                reply,
            } => {
                self.count_reply(&ReplyLabels {
                    kind: reply.kind.name(),
                    arch: client.arch.map_or("none", |a| a.name()),
                    firmware: Firmware::of(&client.identity()).name(),
                    interface,
                });
                (
                    client,
                    Some(*rule),
                    DhcpAnswer::Answered {
                        reply: reply.kind.name(),
                        file: action.boot_file().unwrap_or_default(),
                    },
                )
            }
        };
        let Some(mac) = client.mac else {
            return;
        };
        let seen = DhcpSeen {
            mac,
            uuid: client.uuid,
            arch: client.arch,
            firmware: Firmware::of(&client.identity()),
            interface,
            address: client_address(client, port, source),
            rule,
            answer,
        };
        self.track("dhcp", |t| t.dhcp(Instant::now(), &seen));
    }

    /// One DHCPv6 decision (`Service::handle6`): the same metrics as DHCPv4's (port 547 or
    /// 4011, the reply kinds `advertise`, `reply` and `pxe_reply`) and the same node rows. A
    /// DHCPv6 request does not show the client's address to the node table: its downloads are
    /// told apart by the MAC in their URLs.
    fn dhcp6(
        &self,
        iface: &str,
        port: dhcp6::ServerPort,
        outcome: &dhcp6::Outcome,
        elapsed: Duration,
    ) {
        let m = &self.metrics;
        self.decided(port.number(), elapsed);
        let interface = interface_label(iface);
        let (client, rule, answer) = match outcome {
            dhcp6::Outcome::Malformed(malformed) => {
                m.dhcp_malformed
                    .get_or_create(&ReasonLabels {
                        reason: malformed.name(),
                        interface,
                    })
                    .inc();
                return;
            }
            dhcp6::Outcome::Ignored { client, reason } => {
                self.count_ignored(reason.name(), interface);
                if matches!(
                    reason,
                    dhcp6::Ignored::NotBootRequest
                        | dhcp6::Ignored::MessageType(_)
                        | dhcp6::Ignored::OtherServer
                ) {
                    return;
                }
                let rule = match reason {
                    dhcp6::Ignored::Silent { rule }
                    | dhcp6::Ignored::LoaderMissing { rule, .. } => Some(*rule),
                    _ => None,
                };
                (
                    client,
                    rule,
                    DhcpAnswer::NotAnswered {
                        reason: reason.name(),
                        error: !matches!(reason, dhcp6::Ignored::Silent { .. }),
                    },
                )
            }
            dhcp6::Outcome::Reply {
                client,
                rule,
                action,
                reply,
            } => {
                self.count_reply(&ReplyLabels {
                    kind: reply.kind.name(),
                    arch: client.arch.map_or("none", |a| a.name()),
                    firmware: Firmware::of(&client.identity()).name(),
                    interface,
                });
                (
                    client,
                    Some(*rule),
                    DhcpAnswer::Answered {
                        reply: reply.kind.name(),
                        file: action.boot_file().unwrap_or_default(),
                    },
                )
            }
        };
        let Some(mac) = client.mac else {
            return;
        };
        let seen = DhcpSeen {
            mac,
            uuid: client.uuid,
            arch: client.arch,
            firmware: Firmware::of(&client.identity()),
            interface,
            address: None,
            rule,
            answer,
        };
        self.track("dhcp", |t| t.dhcp(Instant::now(), &seen));
    }

    /// A DHCP request dropped before the core saw it: on an interface not served, or on one
    /// without an address to hand out.
    fn dhcp_unanswered(&self, reason: &'static str, iface: &str) {
        self.metrics
            .dhcp_ignored
            .get_or_create(&ReasonLabels {
                reason,
                interface: interface_label(iface),
            })
            .inc();
    }

    /// One TFTP transfer, finished or refused.
    fn tftp_transfer(&self, transfer: &TftpTransfer<'_>) {
        if transfer.error.is_none() {
            self.metrics
                .tftp_transfer_seconds
                .observe(transfer.duration.as_secs_f64());
        }
        // The node table knows clients by IPv4 address; a transfer over IPv6 shows in the
        // metrics only.
        let IpAddr::V4(client) = transfer.client.ip() else {
            return;
        };
        // A GRUB without `http` fetches its config, kernel, initrds and overlay over TFTP too:
        // the same names as over HTTP tell the stage. Anything else is a loader.
        let (path, query) = match transfer.file.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (transfer.file, None),
        };
        let rooted = format!("/{path}");
        let what = match classify_http(&rooted, query).1 {
            Some(
                what @ (Fetched::Script(_)
                | Fetched::Kernel
                | Fetched::Initrd
                | Fetched::Overlay(_)),
            ) => what,
            _ => Fetched::Loader(transfer.file),
        };
        let fetch = Fetch {
            client,
            what,
            protocol: "tftp",
            ok: transfer.error.is_none(),
            bytes: transfer.bytes,
            duration: transfer.duration,
            error: transfer.error.clone(),
        };
        self.fetch(&fetch);
    }

    /// One HTTP(S) response.
    fn http_request(&self, request: &HttpRequest<'_>) {
        let (path, query) = match request.target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (request.target, None),
        };
        let (route, fetched) = classify_http(path, query);
        let m = &self.metrics;
        m.http_requests
            .get_or_create(&HttpLabels {
                route,
                status: request.status.as_u16(),
            })
            .inc();
        m.http_sent_bytes
            .get_or_create(&RouteLabels { route })
            .inc_by(request.bytes);
        m.http_request_seconds
            .get_or_create(&RouteLabels { route })
            .observe(request.duration.as_secs_f64());
        // A HEAD fetches nothing: it moves the metrics, not the node.
        let (Some(fetched), IpAddr::V4(client), &Method::GET) =
            (fetched, request.client, request.method)
        else {
            return;
        };
        let success = request.status.is_success() || request.status == StatusCode::NOT_MODIFIED;
        let complete = request.bytes >= request.expected;
        let error = if !success {
            Some(format!(
                "{} {}",
                request.status.as_u16(),
                request.status.canonical_reason().unwrap_or_default()
            ))
        } else if !complete {
            Some(format!(
                "connection ended after {} of {} bytes",
                request.bytes, request.expected
            ))
        } else {
            None
        };
        let fetch = Fetch {
            client,
            what: fetched,
            protocol: "http",
            ok: error.is_none(),
            bytes: request.bytes,
            duration: request.duration,
            error,
        };
        self.fetch(&fetch);
    }
}

/// The client's own address when its request shows it: ciaddr, or the source of a port-4011
/// REQUEST that did not come through a relay. A DISCOVER's source is 0.0.0.0 or a relay.
fn client_address(client: &Client, port: ServerPort, source: SocketAddrV4) -> Option<Ipv4Addr> {
    if !client.ciaddr.is_unspecified() {
        return Some(client.ciaddr);
    }
    (port == ServerPort::Pxe && client.giaddr.is_unspecified() && !source.ip().is_unspecified())
        .then_some(*source.ip())
}

/// The route label of a request and what it fetched for the node tracker, from its path and
/// query (percent-encoded, as sent).
pub fn classify_http<'a>(
    path: &'a str,
    query: Option<&'a str>,
) -> (&'static str, Option<Fetched<'a>>) {
    match Route::of(path) {
        Route::BootScript => {
            let mac = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|pair| pair.strip_prefix("mac="))
                .and_then(decoded_mac);
            ("script", mac.map(Fetched::Script))
        }
        Route::NodeOverlay { mac } => ("overlay", decoded_mac(mac).map(Fetched::Overlay)),
        Route::BootFile(rest) => match BootFilePath::parse(rest).map(|p| p.file) {
            Some(BootFile::Kernel) => ("kernel", Some(Fetched::Kernel)),
            Some(BootFile::Initrd(_)) => ("initrd", Some(Fetched::Initrd)),
            None => ("file", Some(Fetched::Other(rest))),
        },
        // A loader's per-node config is the node's script in another language.
        Route::ThirdStage(path) => match third_stage_mac(path) {
            Some(mac) => ("script", Some(Fetched::Script(mac))),
            None => ("file", Some(Fetched::Other(path))),
        },
        Route::File(path) if is_loader(path) => ("loader", Some(Fetched::Loader(path))),
        Route::File(path) => ("file", Some(Fetched::Other(path))),
    }
}

/// The node a per-node config name belongs to (`/grub/grub.cfg-01-<mac>`, …).
fn third_stage_mac(path: &str) -> Option<[u8; 6]> {
    use crate::http::thirdstage::ThirdStageName;
    let relative = crate::http::files::decode_request_path(path).ok()?;
    match ThirdStageName::parse(relative.to_str()?)? {
        ThirdStageName::GrubConfig { mac, .. } | ThirdStageName::PxelinuxConfig { mac } => {
            Some(mac)
        }
        // By address: the node is whoever the kernel says has it (the tracker knows by then).
        ThirdStageName::GrubConfigByAddress { .. }
        | ThirdStageName::GrubBootstrap { .. }
        | ThirdStageName::LocalScript => None,
    }
}

fn decoded_mac(text: &str) -> Option<[u8; 6]> {
    parse_mac(&percent_decode_str(text).decode_utf8().ok()?)
}

/// Names first-stage loaders have: iPXE builds (`.efi`, `.kpxe`, `.pxe`, `.lkrn`) and
/// pxelinux-style `.0`.
fn is_loader(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    [".efi", ".kpxe", ".pxe", ".lkrn", ".0"]
        .iter()
        .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_routes_name_the_node_and_the_stage() {
        assert_eq!(
            classify_http(
                "/boot.ipxe",
                Some("mac=52%3A54%3A00%3A00%3A00%3A0a&arch=bios")
            ),
            ("script", Some(Fetched::Script([0x52, 0x54, 0, 0, 0, 0xa])))
        );
        assert_eq!(
            classify_http(
                "/nodes/52:54:00:00:00:0a/overlay.cpio",
                Some("expires=1&sig=x")
            ),
            (
                "overlay",
                Some(Fetched::Overlay([0x52, 0x54, 0, 0, 0, 0xa]))
            )
        );
        assert_eq!(
            classify_http("/boot/kernel", None),
            ("kernel", Some(Fetched::Kernel))
        );
        assert_eq!(
            classify_http("/boot/initrd/1", None),
            ("initrd", Some(Fetched::Initrd))
        );
        assert_eq!(
            classify_http("/boot/uefi-arm64/kernel", None),
            ("kernel", Some(Fetched::Kernel))
        );
        assert_eq!(
            classify_http("/boot/uefi-arm64/initrd/0", None),
            ("initrd", Some(Fetched::Initrd))
        );
        assert_eq!(
            classify_http("/ipxe-amd64.efi", None),
            ("loader", Some(Fetched::Loader("/ipxe-amd64.efi")))
        );
        assert_eq!(
            classify_http("/images/root.squashfs", None),
            ("file", Some(Fetched::Other("/images/root.squashfs")))
        );
        assert_eq!(classify_http("/boot.ipxe", None), ("script", None));
    }

    #[test]
    fn a_head_request_moves_the_metrics_not_the_node() {
        let observer = Observer::new(Limits {
            max_nodes: 10,
            ttl: Duration::from_secs(60),
        });
        let request = |method| HttpRequest {
            client: Ipv4Addr::new(198, 18, 0, 10).into(),
            method,
            target: "/boot.ipxe?mac=52:54:00:00:00:0a",
            status: StatusCode::OK,
            bytes: 0,
            expected: 0,
            duration: Duration::ZERO,
        };
        observer.http_request(&request(&Method::HEAD));
        assert!(observer.nodes(&TableQuery::default()).nodes.is_empty());
        assert!(
            observer
                .metrics
                .encode()
                .contains("xdpboot_http_requests_total{route=\"script\",status=\"200\"} 1")
        );
        observer.http_request(&request(&Method::GET));
        assert_eq!(observer.nodes(&TableQuery::default()).nodes.len(), 1);
    }

    #[test]
    fn a_client_address_is_learnt_only_where_the_request_shows_it() {
        let mut client = Client {
            message_type: dhcproto::v4::MessageType::Request,
            port: ServerPort::Pxe,
            xid: 1,
            mac: Some([2; 6]),
            arch: None,
            protocol: None,
            undi: None,
            uuid: None,
            ipxe: None,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
        };
        let from = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 68);
        assert_eq!(
            client_address(&client, ServerPort::Pxe, from),
            Some(*from.ip())
        );
        assert_eq!(client_address(&client, ServerPort::Dhcp, from), None);
        client.giaddr = Ipv4Addr::new(198, 18, 1, 1);
        assert_eq!(client_address(&client, ServerPort::Pxe, from), None);
        client.ciaddr = Ipv4Addr::new(198, 18, 1, 20);
        assert_eq!(
            client_address(&client, ServerPort::Dhcp, from),
            Some(client.ciaddr)
        );
    }

    #[test]
    fn a_dhcpv6_answer_makes_a_node_row_and_moves_the_reply_metric() {
        use boot_common::wire::dhcpv6::{self, Writer, message_type, option};
        let observer = Observer::new(Limits {
            max_nodes: 10,
            ttl: Duration::from_secs(60),
        });
        let mut buf = [0u8; 256];
        let mut writer = Writer::new(&mut buf, message_type::SOLICIT, 7).unwrap();
        let class = [&343u32.to_be_bytes()[..], &[0, 9], b"PXEClient"].concat();
        writer.option(option::CLIENT_ARCH_TYPE, &[0, 7]).unwrap();
        writer.option(option::VENDOR_CLASS, &class).unwrap();
        let len = writer.finish();
        let config = crate::config::Config::embedded().unwrap();
        let duid = dhcpv6::duid_ll([2, 0, 0, 0, 0, 1].into());
        let mac = [0x52, 0x54, 0, 0x18, 1, 1];
        let ingress = dhcp6::Ingress {
            port: dhcp6::ServerPort::Dhcp,
            source: std::net::SocketAddrV6::new(
                boot_common::wire::ipv6::eui64_link_local(mac.into()),
                546,
                0,
                0,
            ),
            server: "fd00:18::1".parse().unwrap(),
            server_duid: &duid,
            link_mac: None,
        };
        struct Everything;
        impl crate::dhcp::LoaderIndex for Everything {
            fn has_loader(&self, _: &str) -> bool {
                true
            }
        }
        let outcome = dhcp6::Responder::new(&config.policy, config.url_ports()).handle(
            &buf[..len],
            &ingress,
            &Everything,
            &crate::dhcp::AdmitAll,
        );
        assert!(
            matches!(outcome, dhcp6::Outcome::Reply { .. }),
            "{outcome:?}"
        );
        observer.dhcp6("eth0", dhcp6::ServerPort::Dhcp, &outcome, Duration::ZERO);
        assert_eq!(observer.nodes(&TableQuery::default()).nodes.len(), 1);
        let metrics = observer.metrics.encode();
        assert!(
            metrics.contains("kind=\"advertise\"") && metrics.contains("firmware=\"uefi-pxe\""),
            "{metrics}"
        );
    }
}
