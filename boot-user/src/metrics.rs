//! Prometheus/OpenMetrics metrics, served at `/metrics` on the admin listener
//! ([`crate::admin`]). Names follow the Prometheus conventions: the `xdpboot_` prefix,
//! `_total` on counters, the base unit (`_seconds`, `_bytes`) in the name.
//!
//! Two kinds of source:
//! - families moved by events ([`crate::observe::Observer`]): DHCP decisions, HTTP requests,
//!   TFTP transfer times, boot-stage times;
//! - collectors read at scrape time: the XDP program's per-CPU verdict counters of every
//!   attached interface, the TFTP server's and the DHCP core's own counters (the ones the
//!   daemon also prints when it stops), and the node tracker's table. Nothing is copied
//!   between scrapes, so these cost nothing on the packet path.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::dhcp::stats::Stats as DhcpStats;
use crate::net::xdp::program::CounterReader;
use crate::nodes::NodeTracker;
use crate::nodes::summary::Named;
use crate::tftp::stats::TftpStats;

/// The prefix of every metric name.
pub const PREFIX: &str = "xdpboot";
/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplyLabels {
    /// `proxy_offer` or `proxy_ack`.
    pub kind: &'static str,
    pub arch: &'static str,
    /// `bios-pxe`, `uefi-pxe`, `uefi-http` or `ipxe`.
    pub firmware: &'static str,
    pub interface: &'static str,
}

/// Interface names as label values: each distinct name is stored once for the life of the
/// process, so labelling a request with its interface allocates nothing. Bounded: past
/// [`MAX_INTERFACE_LABELS`] names (interfaces renamed or created over and over) the rest are
/// counted under `other`.
pub fn interface_label(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{OnceLock, PoisonError, RwLock};
    static NAMES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(RwLock::default);
    if let Some(known) = names
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
    {
        return known;
    }
    let mut names = names.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = names.get(name) {
        return known;
    }
    if names.len() >= MAX_INTERFACE_LABELS {
        return "other";
    }
    // Bounded above: at most MAX_INTERFACE_LABELS names are kept.
    let stored: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(stored);
    stored
}

/// Distinct interface names [`interface_label`] keeps.
pub const MAX_INTERFACE_LABELS: usize = 1024;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
    pub interface: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    /// 67 or 4011.
    pub port: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `script`, `overlay`, `kernel`, `initrd`, `loader` or `file`.
    pub route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttributionLabels {
    /// `dhcp`, `tftp` or `http`.
    pub protocol: &'static str,
    /// `exact`, `neighbour`, `guessed` or `unattributed`.
    pub attribution: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Series of a family looked up with foldhash instead of the family's own SipHash: the
/// per-request metrics are found in tens of instructions, not hundreds. A series handle shares
/// its value with the family's (prometheus-client's metrics are `Arc`s inside), so what is
/// counted here is what `/metrics` shows. Bounded by [`MAX_CACHED_SERIES`]; beyond it the
/// family is asked directly.
pub struct SeriesCache<L, M> {
    series: std::sync::RwLock<std::collections::HashMap<L, M, foldhash::fast::RandomState>>,
}

/// Series each [`SeriesCache`] keeps.
pub const MAX_CACHED_SERIES: usize = 4096;

impl<L, M> Default for SeriesCache<L, M> {
    fn default() -> Self {
        SeriesCache {
            series: std::sync::RwLock::default(),
        }
    }
}

impl<L, M> std::fmt::Debug for SeriesCache<L, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesCache").finish_non_exhaustive()
    }
}

impl<L, M> SeriesCache<L, M>
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
{
    /// Runs `f` on the series of `family` labelled `labels`.
    pub fn with<C>(&self, family: &Family<L, M, C>, labels: &L, f: impl FnOnce(&M))
    where
        C: prometheus_client::metrics::family::MetricConstructor<M>,
    {
        if let Some(series) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(labels)
        {
            return f(series);
        }
        let series = family.get_or_create(labels).clone();
        let mut cached = self.series.write().unwrap_or_else(PoisonError::into_inner);
        if cached.len() < MAX_CACHED_SERIES {
            cached.insert(labels.clone(), series.clone());
        }
        drop(cached);
        f(&series)
    }
}

/// Every metric of the daemon and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub dhcp_replies: Family<ReplyLabels, Counter>,
    pub dhcp_ignored: Family<ReasonLabels, Counter>,
    pub dhcp_malformed: Family<ReasonLabels, Counter>,
    pub dhcp_decision_seconds: HistogramFamily<PortLabels>,
    pub tftp_transfer_seconds: Histogram,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_sent_bytes: Family<RouteLabels, Counter>,
    pub http_request_seconds: HistogramFamily<RouteLabels>,
    pub boot_stage_seconds: HistogramFamily<StageLabels>,
    pub node_events: Family<AttributionLabels, Counter>,
    sources: Arc<Sources>,
}

/// Buckets of one DHCP decision: microseconds normally, milliseconds when the loader check
/// touches the disk.
fn decision_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 4.0, 8))
}

/// Buckets of one HTTP request: a script in a millisecond to a large image in minutes.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// Buckets of a stage reached, counted from the boot's first DHCP request: seconds under
/// emulation or a slow ROM, minutes for a large image over a busy link.
fn stage_histogram() -> Histogram {
    Histogram::new([
        0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ])
}

impl Metrics {
    /// The families, registered, with the scrape-time collectors of `nodes` and of the sources
    /// [`Metrics::watch_xdp`], [`Metrics::watch_tftp`] and [`Metrics::watch_dhcp`] add later.
    pub fn new(nodes: Arc<Mutex<NodeTracker>>) -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "build",
            "The running xdpboot's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let dhcp_replies = Family::<ReplyLabels, Counter>::default();
        registry.register(
            "dhcp_replies",
            "Proxy DHCP replies sent, by reply kind, client architecture and firmware, and interface",
            dhcp_replies.clone(),
        );
        let dhcp_ignored = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dhcp_ignored",
            "Well-formed DHCP requests deliberately not answered, by reason and interface",
            dhcp_ignored.clone(),
        );
        let dhcp_malformed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dhcp_malformed",
            "DHCP requests dropped before classification, by what was wrong, and interface",
            dhcp_malformed.clone(),
        );
        let dhcp_decision_seconds: HistogramFamily<PortLabels> =
            Family::new_with_constructor(decision_histogram);
        registry.register_with_unit(
            "dhcp_decision",
            "Time from a DHCP request's bytes to the reply (or silence) decided, by server port",
            Unit::Seconds,
            dhcp_decision_seconds.clone(),
        );
        let tftp_transfer_seconds = Histogram::new(exponential_buckets(0.05, 2.5, 10));
        registry.register_with_unit(
            "tftp_transfer_duration",
            "Time of each completed TFTP transfer, from the read request to the last ACK",
            Unit::Seconds,
            tftp_transfer_seconds.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP(S) requests answered, by route and status",
            http_requests.clone(),
        );
        let http_sent_bytes = Family::<RouteLabels, Counter>::default();
        registry.register_with_unit(
            "http_sent",
            "HTTP(S) response body bytes handed to connections, by route",
            Unit::Bytes,
            http_sent_bytes.clone(),
        );
        let http_request_seconds: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from an HTTP request to the last byte of its response handed to the connection, by route",
            Unit::Seconds,
            http_request_seconds.clone(),
        );
        let boot_stage_seconds: HistogramFamily<StageLabels> =
            Family::new_with_constructor(stage_histogram);
        registry.register_with_unit(
            "boot_stage",
            "Time from a node's first DHCP request of a boot to reaching each later stage",
            Unit::Seconds,
            boot_stage_seconds.clone(),
        );
        let node_events = Family::<AttributionLabels, Counter>::default();
        registry.register(
            "node_events",
            "Events tied to a node on the status page, by protocol and how the node was known \
             (exact: MAC in the request or an address learnt from one; neighbour: the kernel's \
             ARP entry; guessed: the one node waiting for that file; unattributed)",
            node_events.clone(),
        );
        let sources = Arc::new(Sources {
            xdp: Mutex::new(Vec::new()),
            tftp: Mutex::new(None),
            dhcp: Mutex::new(Vec::new()),
            nodes,
        });
        registry.register_collector(Box::new(sources.clone()));
        Metrics {
            registry,
            dhcp_replies,
            dhcp_ignored,
            dhcp_malformed,
            dhcp_decision_seconds,
            tftp_transfer_seconds,
            http_requests,
            http_sent_bytes,
            http_request_seconds,
            boot_stage_seconds,
            node_events,
            sources,
        }
    }

    /// Reads the verdict counters of the XDP program on `interface` at every scrape.
    pub fn watch_xdp(&self, interface: &str, reader: CounterReader) {
        lock(&self.sources.xdp).push((interface.to_owned(), reader));
    }

    /// Reads the TFTP server's counters at every scrape.
    pub fn watch_tftp(&self, stats: Arc<TftpStats>) {
        *lock(&self.sources.tftp) = Some(stats);
    }

    /// Reads the DHCP core's counters at every scrape (for what the event families do not
    /// see: replies the backend could not send).
    pub fn watch_dhcp(&self, stats: Arc<DhcpStats>) {
        let mut dhcp = lock(&self.sources.dhcp);
        if !dhcp.iter().any(|s| Arc::ptr_eq(s, &stats)) {
            dhcp.push(stats);
        }
    }

    /// The OpenMetrics text of every metric, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail, and every name and label here is ours.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        text
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the scrape-time collector reads.
#[derive(Debug)]
struct Sources {
    xdp: Mutex<Vec<(String, CounterReader)>>,
    tftp: Mutex<Option<Arc<TftpStats>>>,
    /// One per backend's service when they keep separate counters (they share one today).
    dhcp: Mutex<Vec<Arc<DhcpStats>>>,
    nodes: Arc<Mutex<NodeTracker>>,
}

/// One metric family written by the collector: name, help, unit, and `(labels, value)` rows.
struct ConstFamily<'a> {
    name: &'a str,
    help: &'a str,
    unit: Option<Unit>,
}

impl ConstFamily<'_> {
    fn counters<L: EncodeLabelSet>(
        &self,
        encoder: &mut DescriptorEncoder,
        rows: impl IntoIterator<Item = (L, u64)>,
    ) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            self.name,
            self.help,
            self.unit.as_ref(),
            counter.metric_type(),
        )?;
        for (labels, value) in rows {
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn counter(&self, encoder: &mut DescriptorEncoder, value: u64) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(value);
        let metric = encoder.encode_descriptor(
            self.name,
            self.help,
            self.unit.as_ref(),
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_xdp(&mut encoder)?;
        self.encode_tftp(&mut encoder)?;
        self.encode_dhcp(&mut encoder)?;
        self.encode_nodes(&mut encoder)
    }
}

impl Sources {
    fn encode_xdp(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let readers = lock(&self.xdp);
        if readers.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::new();
        for (interface, reader) in readers.iter() {
            match reader.read() {
                Ok(values) => {
                    for (counter, value) in values {
                        rows.push((
                            [
                                ("interface", interface.as_str()),
                                ("verdict", counter.name()),
                            ],
                            value,
                        ));
                    }
                }
                Err(e) => {
                    tracing::debug!(iface = %interface, error = %e, "reading XDP counters failed")
                }
            }
        }
        ConstFamily {
            name: "xdp_frames",
            help: "Frames the XDP program decided about, by interface and verdict (summed over CPUs).",
            unit: None,
        }
        .counters(encoder, rows)
    }

    fn encode_tftp(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = lock(&self.tftp).clone() else {
            return Ok(());
        };
        let snapshot = stats.snapshot();
        let group = |wanted: &[&str]| -> Vec<([(&'static str, String); 1], u64)> {
            snapshot
                .iter()
                .filter_map(|(label, value)| {
                    let (group, reason) = label.split_once('.')?;
                    wanted
                        .contains(&group)
                        .then(|| ([("reason", reason.to_owned())], *value))
                })
                .collect()
        };
        let single = |name: &str| {
            snapshot
                .iter()
                .find(|(label, _)| label == name)
                .map_or(0, |(_, v)| *v)
        };
        ConstFamily {
            name: "tftp_read_requests",
            help: "TFTP read requests accepted for a transfer.",
            unit: None,
        }
        .counter(encoder, stats.get("requests", "read"))?;
        ConstFamily {
            name: "tftp_requests_dropped",
            help: "TFTP datagrams on the server port dropped without an answer, by reason \
                   (busy: all transfer slots in use; duplicate: the client's transfer is running).",
            unit: None,
        }
        .counters(encoder, group(&["dropped"]))?;
        ConstFamily {
            name: "tftp_requests_refused",
            help: "TFTP requests answered with an ERROR, by reason.",
            unit: None,
        }
        .counters(encoder, group(&["refused", "file"]))?;
        let transfers: Vec<_> = group(&["transfer"])
            .into_iter()
            .map(|([(_, outcome)], v)| ([("outcome", outcome)], v))
            .collect();
        ConstFamily {
            name: "tftp_transfers",
            help: "TFTP transfers finished, by outcome.",
            unit: None,
        }
        .counters(encoder, transfers)?;
        ConstFamily {
            name: "tftp_sent",
            help: "TFTP file bytes acknowledged by clients.",
            unit: Some(Unit::Bytes),
        }
        .counter(encoder, single("bytes"))?;
        ConstFamily {
            name: "tftp_retransmits",
            help: "TFTP DATA packets sent again after a timeout or a duplicate ACK.",
            unit: None,
        }
        .counter(encoder, single("retransmits"))
    }

    fn encode_dhcp(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = lock(&self.dhcp);
        if stats.is_empty() {
            return Ok(());
        }
        let failed = stats
            .iter()
            .flat_map(|s| s.snapshot())
            .filter(|(label, _)| label == "send_failed")
            .map(|(_, v)| v)
            .sum();
        ConstFamily {
            name: "dhcp_send_failures",
            help: "Proxy DHCP replies built but not sent (socket or TX ring full).",
            unit: None,
        }
        .counter(encoder, failed)
    }

    /// The node table's aggregates, kept by the tracker as events arrive (`/api/summary`
    /// shows the same numbers).
    fn encode_nodes(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let summary = lock(&self.nodes).summary_as_is(Instant::now(), SystemTime::now());
        gauges(
            encoder,
            "nodes",
            "Nodes on the status page, by the furthest stage of their current boot \
             (unanswered: no boot request of theirs was answered).",
            "stage",
            &summary.stages,
        )?;
        for (name, help, label, counts) in [
            (
                "nodes_by_arch",
                "Nodes on the status page, by client architecture (DHCP option 93).",
                "arch",
                &summary.arch,
            ),
            (
                "nodes_by_firmware",
                "Nodes on the status page, by the firmware that started their current boot.",
                "firmware",
                &summary.firmware,
            ),
            (
                "nodes_by_interface",
                "Nodes on the status page, by the interface of their last DHCP request.",
                "interface",
                &summary.interface,
            ),
            (
                "nodes_by_rule",
                "Nodes on the status page, by the policy rule of their last DHCP decision.",
                "rule",
                &summary.rule,
            ),
            (
                "nodes_failed",
                "Nodes on the status page whose last event failed, by reason (a DHCP reason, \
                 or <protocol>_<what> for a download).",
                "reason",
                &summary.failures,
            ),
        ] {
            gauges(encoder, name, help, label, counts)?;
        }
        let stuck = ConstGauge::new(summary.stuck as i64);
        let help = format!(
            "Nodes on the status page short of their overlay and silent for {} s.",
            crate::nodes::STUCK_AFTER.as_secs()
        );
        let metric = encoder.encode_descriptor("nodes_stuck", &help, None, stuck.metric_type())?;
        stuck.encode(metric)?;
        ConstFamily {
            name: "boots_completed",
            help: "Boots that reached their overlay (the last download before the kernel runs).",
            unit: None,
        }
        .counter(encoder, summary.boots_completed)
    }
}

/// One gauge family with a label: a sample per named count.
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    counts: &Named<usize>,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(0i64);
    let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    for (value, count) in &counts.0 {
        ConstGauge::new(*count as i64).encode(family.encode_family(&[(label, value.as_ref())])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::nodes::Limits;

    fn metrics() -> Metrics {
        Metrics::new(Arc::new(Mutex::new(NodeTracker::new(Limits {
            max_nodes: 10,
            ttl: Duration::from_secs(60),
        }))))
    }

    /// Every `# TYPE` line of the text: (name, type).
    fn families(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_owned(), t.to_owned()))
            .collect()
    }

    /// Labels families leave out of the text until they have a sample.
    fn touch_every_family(m: &Metrics) {
        let reply = ReplyLabels {
            kind: "proxy_offer",
            arch: "bios",
            firmware: "bios-pxe",
            interface: "eth0",
        };
        m.dhcp_replies.get_or_create(&reply).inc();
        let reason = ReasonLabels {
            reason: "no_rule",
            interface: "eth0",
        };
        m.dhcp_ignored.get_or_create(&reason).inc();
        m.dhcp_malformed.get_or_create(&reason).inc();
        m.dhcp_decision_seconds
            .get_or_create(&PortLabels { port: 67 })
            .observe(0.0);
        m.tftp_transfer_seconds.observe(1.0);
        let route = RouteLabels { route: "kernel" };
        m.http_requests
            .get_or_create(&HttpLabels {
                route: "kernel",
                status: 200,
            })
            .inc();
        m.http_sent_bytes.get_or_create(&route).inc();
        m.http_request_seconds.get_or_create(&route).observe(0.1);
        m.boot_stage_seconds
            .get_or_create(&StageLabels { stage: "kernel" })
            .observe(3.0);
        m.node_events
            .get_or_create(&AttributionLabels {
                protocol: "http",
                attribution: "exact",
            })
            .inc();
    }

    #[test]
    fn names_follow_the_prometheus_conventions() {
        let metrics = metrics();
        touch_every_family(&metrics);
        metrics.watch_tftp(Arc::new(TftpStats::default()));
        metrics.watch_dhcp(Arc::new(DhcpStats::default()));
        let text = metrics.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let families = families(&text);
        for (name, kind) in &families {
            assert!(name.starts_with("xdpboot_"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            // Times in seconds, sizes in bytes, never milliseconds or kilobytes.
            for bad in ["_ms", "millis", "_kb", "_mb", "kbytes"] {
                assert!(!name.contains(bad), "{name}");
            }
            if name.contains("duration") || name.contains("_stage") || name.contains("decision") {
                assert!(name.ends_with("_seconds"), "{name} is a time");
            }
            if name.contains("sent") {
                assert!(name.ends_with("_bytes"), "{name} is a size");
            }
            // Counter samples get `_total`: the family name itself must not carry it.
            if kind == "counter" {
                assert!(!name.ends_with("_total"), "{name}");
            }
        }
        let names: Vec<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "xdpboot_dhcp_replies",
            "xdpboot_dhcp_ignored",
            "xdpboot_dhcp_malformed",
            "xdpboot_dhcp_decision_seconds",
            "xdpboot_dhcp_send_failures",
            "xdpboot_tftp_read_requests",
            "xdpboot_tftp_requests_dropped",
            "xdpboot_tftp_requests_refused",
            "xdpboot_tftp_transfers",
            "xdpboot_tftp_sent_bytes",
            "xdpboot_tftp_retransmits",
            "xdpboot_tftp_transfer_duration_seconds",
            "xdpboot_http_requests",
            "xdpboot_http_sent_bytes",
            "xdpboot_http_request_duration_seconds",
            "xdpboot_boot_stage_seconds",
            "xdpboot_node_events",
            "xdpboot_nodes",
            "xdpboot_nodes_by_arch",
            "xdpboot_nodes_by_firmware",
            "xdpboot_nodes_by_interface",
            "xdpboot_nodes_by_rule",
            "xdpboot_nodes_failed",
            "xdpboot_nodes_stuck",
            "xdpboot_boots_completed",
            "xdpboot_build",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    #[test]
    fn samples_carry_their_labels_and_units() {
        let metrics = metrics();
        metrics
            .dhcp_replies
            .get_or_create(&ReplyLabels {
                kind: "proxy_offer",
                arch: "bios",
                firmware: "bios-pxe",
                interface: "eth0",
            })
            .inc();
        metrics
            .http_sent_bytes
            .get_or_create(&RouteLabels { route: "kernel" })
            .inc_by(4096);
        let tftp = Arc::new(TftpStats::default());
        tftp.count("transfer", "complete");
        tftp.count("dropped", "busy");
        tftp.add_bytes(1234);
        tftp.add_retransmits(2);
        metrics.watch_tftp(tftp);
        let text = metrics.encode();
        for line in [
            "xdpboot_dhcp_replies_total{kind=\"proxy_offer\",arch=\"bios\",firmware=\"bios-pxe\",interface=\"eth0\"} 1",
            "xdpboot_http_sent_bytes_total{route=\"kernel\"} 4096",
            "# UNIT xdpboot_http_sent_bytes bytes",
            "xdpboot_tftp_transfers_total{outcome=\"complete\"} 1",
            "xdpboot_tftp_requests_dropped_total{reason=\"busy\"} 1",
            "xdpboot_tftp_sent_bytes_total 1234",
            "xdpboot_tftp_retransmits_total 2",
            "xdpboot_nodes{stage=\"overlay\"} 0",
            "xdpboot_nodes_stuck 0",
            "xdpboot_boots_completed_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
    }
}
