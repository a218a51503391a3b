//! What both backends share around the sans-IO core: which interfaces are served, which address
//! each request gets, the loader check against the file system, counters and the one log event
//! per client decision.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::iface::Interfaces;
use crate::dhcp::classify::{MacDisplay, UuidDisplay};
use crate::dhcp::stats::{Stats, malformed_name};
use crate::dhcp::{AdmitAll, Ignored, Ingress, LoaderIndex, Outcome, Reply, ServerPort};
use crate::dhcp6;
use crate::events::Sink;
use crate::loaders::LoaderSearch;
use crate::log_budget::LogBudget;
use crate::reload::{Decisions, Swap};

/// A reply and how to send it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub reply: Reply,
    /// The interface the request came in on; broadcast replies leave through it.
    pub ifindex: u32,
    /// Our address on it: the reply's IP source.
    pub server: Ipv4Addr,
}

/// A DHCPv6 reply and how to send it.
#[derive(Debug, Clone)]
pub struct Answer6 {
    pub reply: dhcp6::Reply,
    /// The interface the request came in on: the scope of a link-local destination.
    pub ifindex: u32,
    /// The reply's IP source when it must be one address: the one a port-4011 request was
    /// sent to (EDK2 reads the reply only from the server in its URL,
    /// `PxeBcRequestBootService`). `None`: the kernel picks (a link-local one towards a
    /// link-local client).
    pub source: Option<Ipv6Addr>,
}

/// The daemon's request handling, shared by the backends.
pub struct Service {
    /// The policy and the boot API; a reload (SIGHUP) replaces them for every backend at once.
    decisions: Arc<Swap<Decisions>>,
    interfaces: Arc<Interfaces>,
    served: Vec<String>,
    loaders: FsLoaders,
    /// Shared by every backend's service, so the counters add up across them.
    pub stats: Arc<Stats>,
    /// Requests that arrived on an interface we do not serve.
    pub not_served: AtomicU64,
    /// Requests on a served interface that has no address to hand out.
    pub no_address: AtomicU64,
    /// `[ipv6]`: the URL addresses the config names per interface.
    ipv6: crate::config::Ipv6,
    /// The DHCPv6 core's counters, shared by every backend's service like [`Service::stats`].
    pub stats6: Arc<dhcp6::stats::Stats>,
    /// Metrics and the node table; `None` when the admin side is off.
    observer: Sink,
    /// Caps the info and warn lines per request (a flood must not become a flood of lines).
    log_budget: LogBudget,
}

impl Service {
    pub fn new(
        decisions: Arc<Swap<Decisions>>,
        interfaces: Arc<Interfaces>,
        served: Vec<String>,
        loaders: FsLoaders,
        stats: Arc<Stats>,
    ) -> Service {
        Service {
            decisions,
            interfaces,
            served,
            loaders,
            stats,
            not_served: AtomicU64::new(0),
            no_address: AtomicU64::new(0),
            ipv6: crate::config::Ipv6::default(),
            stats6: Arc::default(),
            observer: None,
            log_budget: LogBudget::default(),
        }
    }

    /// Reports every decision to `observer` too.
    pub fn with_observer(mut self, observer: Sink) -> Service {
        self.observer = observer;
        self
    }

    /// Answers DHCPv6 as `[ipv6]` says, counting into `stats6`.
    pub fn with_ipv6(
        mut self,
        ipv6: crate::config::Ipv6,
        stats6: Arc<dhcp6::stats::Stats>,
    ) -> Service {
        self.ipv6 = ipv6;
        self.stats6 = stats6;
        self
    }

    fn count_no_address(&self, iface: &str) {
        self.no_address.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = &self.observer {
            observer.dhcp_unanswered("no_address", iface);
        }
    }

    /// Handles one DHCPv6 request payload that arrived on `ifindex`, from `source` (whose
    /// link-layer address is `link_mac`, when the backend saw the frame), addressed to
    /// `destination` (ff02::1:2, or one of ours). Returns the reply to send, if one is due.
    pub fn handle6(
        &self,
        port: dhcp6::ServerPort,
        ifindex: u32,
        source: SocketAddrV6,
        destination: Ipv6Addr,
        link_mac: Option<[u8; 6]>,
        bytes: &[u8],
    ) -> Option<Answer6> {
        let started = Instant::now();
        let table = self.interfaces.snapshot();
        let Some(iface) = table.get(ifindex).filter(|i| self.served.contains(&i.name)) else {
            self.count_not_served();
            return None;
        };
        // The URL's host: the address a unicast request reached (the one in the URL it was
        // given), else the configured one, else the interface's first global or ULA address.
        let addressed = (iface.has_address6(destination)
            && dhcp6::url_address_problem(destination).is_none())
        .then_some(destination);
        let server = addressed
            .or_else(|| self.ipv6.addresses.get(&iface.name).copied())
            .or_else(|| iface.url_address6());
        let (Some(server), Some(mac)) = (server, iface.mac) else {
            self.count_no_address(&iface.name);
            tracing::debug!(iface = %iface.name, "DHCPv6 request on an interface without a global or unique-local IPv6 address (or a MAC for the server id)");
            return None;
        };
        let duid = boot_common::wire::dhcpv6::duid_ll(mac.into());
        let link_mac = match link_mac {
            Some(mac) => Some(mac),
            // Asked only for port 4011, where EDK2's Request comes from a global address with a
            // DUID-UUID (one netlink round trip per boot). On 547 clients send from their
            // link-local address (RFC 8415 §13.1), which names the MAC or is a privacy address
            // of a machine that is not booting: no lookup per datagram of the site's traffic.
            None if port == dhcp6::ServerPort::Pxe
                && boot_common::wire::ipv6::eui64_mac(*source.ip()).is_none() =>
            {
                crate::net::neighbour::lookup6(*source.ip(), ifindex).unwrap_or_else(|e| {
                    tracing::debug!(client = %source, error = %e, "neighbour lookup failed");
                    None
                })
            }
            None => None,
        };
        let ingress = dhcp6::Ingress {
            port,
            source,
            server,
            server_duid: &duid,
            link_mac,
        };
        let decisions = self.decisions.load();
        let responder =
            dhcp6::Responder::new(&decisions.responder.policy, decisions.responder.ports);
        let outcome = match &decisions.api {
            Some(api) => responder.handle(bytes, &ingress, &self.loaders, api),
            None => responder.handle(bytes, &ingress, &self.loaders, &AdmitAll),
        };
        self.stats6.record(&outcome);
        let loud = matches!(
            outcome,
            dhcp6::Outcome::Reply { .. }
                | dhcp6::Outcome::Ignored {
                    reason: dhcp6::Ignored::UnknownArch
                        | dhcp6::Ignored::NoRule
                        | dhcp6::Ignored::Silent { .. }
                        | dhcp6::Ignored::LoaderMissing { .. }
                        | dhcp6::Ignored::ReplyFailed(_)
                        | dhcp6::Ignored::NotOurs,
                    ..
                }
        );
        if !loud || self.log_budget.allow() {
            log_decision6(&outcome, &iface.name, port, source);
        }
        if let Some(observer) = &self.observer {
            observer.dhcp6(&iface.name, port, &outcome, started.elapsed());
        }
        match outcome {
            dhcp6::Outcome::Reply { reply, .. } => Some(Answer6 {
                reply,
                ifindex,
                source: (port == dhcp6::ServerPort::Pxe).then_some(destination),
            }),
            _ => None,
        }
    }

    /// Counts a request that arrived where no served interface is (e.g. a VLAN without a
    /// sub-interface).
    pub fn count_not_served(&self) {
        self.not_served.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = &self.observer {
            observer.dhcp_unanswered("not_served", "");
        }
    }

    /// Handles one request payload that arrived on `ifindex`, from `source`, addressed to
    /// `destination`. Returns the reply to send, if one is due.
    pub fn handle(
        &self,
        port: ServerPort,
        ifindex: u32,
        source: SocketAddrV4,
        destination: Ipv4Addr,
        bytes: &[u8],
    ) -> Option<Answer> {
        let started = Instant::now();
        let table = self.interfaces.snapshot();
        let Some(iface) = table.get(ifindex).filter(|i| self.served.contains(&i.name)) else {
            self.count_not_served();
            return None;
        };
        let Some(server) = iface.server_address(destination, peek_giaddr(bytes)) else {
            self.count_no_address(&iface.name);
            tracing::debug!(iface = %iface.name, "request on an interface without an IPv4 address");
            return None;
        };
        let ingress = Ingress {
            port,
            source,
            server,
        };
        let decisions = self.decisions.load();
        let outcome = match &decisions.api {
            Some(api) => decisions
                .responder
                .handle(bytes, &ingress, &self.loaders, api),
            None => decisions
                .responder
                .handle(bytes, &ingress, &self.loaders, &AdmitAll),
        };
        self.stats.record(&outcome);
        if !is_loud(&outcome) || self.log_budget.allow() {
            log_decision(&outcome, &iface.name, port);
        }
        if let Some(observer) = &self.observer {
            observer.dhcp(&iface.name, port, source, &outcome, started.elapsed());
        }
        match outcome {
            Outcome::Reply { reply, .. } => Some(Answer {
                reply,
                ifindex,
                server,
            }),
            _ => None,
        }
    }
}

/// giaddr (RFC 2131 §2: octets 24–27) before the full parse, to pick the server address in the
/// relay's subnet. Zero when the packet is too short; the parse then rejects it anyway.
fn peek_giaddr(bytes: &[u8]) -> Ipv4Addr {
    match bytes.get(24..28) {
        Some(&[a, b, c, d]) => Ipv4Addr::new(a, b, c, d),
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

/// Whether [`log_decision`] logs `outcome` above debug level (and so takes from the budget).
fn is_loud(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Malformed(_) => false,
        Outcome::Ignored { reason, .. } => !matches!(
            reason,
            Ignored::NotBootRequest
                | Ignored::MessageType(_)
                | Ignored::ApiPending
                | Ignored::ApiDown
        ),
        Outcome::Reply { .. } => true,
    }
}

/// One structured event per client decision (STYLE: mac, arch, iface, action). Debug-level
/// events are logged whatever the budget (the filter drops them cheaply when off).
fn log_decision(outcome: &Outcome, iface: &str, port: ServerPort) {
    // The fields below are formatted before the event is: not for an event the level filter
    // drops anyway (with `info` off, deciding allocates nothing at all).
    let enabled = match outcome {
        Outcome::Malformed(_)
        | Outcome::Ignored {
            reason:
                Ignored::NotBootRequest
                | Ignored::MessageType(_)
                | Ignored::ApiPending
                | Ignored::ApiDown,
            ..
        } => tracing::enabled!(tracing::Level::DEBUG),
        Outcome::Ignored {
            reason: Ignored::LoaderMissing { .. } | Ignored::ReplyFailed(_),
            ..
        } => tracing::enabled!(tracing::Level::WARN),
        _ => tracing::enabled!(tracing::Level::INFO),
    };
    if !enabled {
        return;
    }
    let port = port.number();
    match outcome {
        Outcome::Malformed(m) => {
            tracing::debug!(
                iface,
                port,
                reason = malformed_name(*m),
                "malformed request dropped"
            );
        }
        Outcome::Ignored { client, reason } => {
            let mac = client
                .mac
                .as_ref()
                .map(|m| MacDisplay(m).to_string())
                .unwrap_or_default();
            let arch = client.arch.map(|a| a.to_string()).unwrap_or_default();
            match reason {
                Ignored::NotBootRequest | Ignored::MessageType(_) => {
                    tracing::debug!(mac, arch, iface, port, reason = reason.name(), "not for us")
                }
                // The API module logs outages once; per request these are detail.
                Ignored::ApiPending | Ignored::ApiDown => tracing::debug!(
                    mac,
                    arch,
                    iface,
                    port,
                    reason = reason.name(),
                    "not answered yet"
                ),
                Ignored::NotOurs => {
                    tracing::info!(
                        mac,
                        arch,
                        iface,
                        port,
                        reason = reason.name(),
                        "not answered: the boot API does not know it"
                    )
                }
                Ignored::LoaderMissing { rule, file } => tracing::warn!(
                    mac,
                    arch,
                    iface,
                    port,
                    rule,
                    file,
                    "not answered: the rule's loader is missing from the TFTP root"
                ),
                Ignored::ReplyFailed(e) => {
                    tracing::warn!(
                        mac,
                        arch,
                        iface,
                        port,
                        error = %e,
                        "not answered: reply failed"
                    )
                }
                Ignored::Silent { rule } => {
                    tracing::info!(
                        mac,
                        arch,
                        iface,
                        port,
                        rule,
                        action = "silent",
                        "not answered"
                    )
                }
                Ignored::UnknownArch | Ignored::NoRule => {
                    tracing::info!(
                        mac,
                        arch,
                        iface,
                        port,
                        reason = reason.name(),
                        "not answered"
                    )
                }
            }
        }
        Outcome::Reply {
            client,
            rule,
            action,
            reply,
        } => {
            let mac = client
                .mac
                .as_ref()
                .map(|m| MacDisplay(m).to_string())
                .unwrap_or_default();
            let uuid = client
                .uuid
                .as_ref()
                .map(|u| UuidDisplay(u).to_string())
                .unwrap_or_default();
            let arch = client.arch.map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(
                mac,
                arch,
                uuid,
                ipxe = client.ipxe.is_some(),
                iface,
                port,
                reply = reply.kind.name(),
                rule,
                action = action.kind(),
                file = action.boot_file().unwrap_or_default(),
                "answered"
            );
        }
    }
}

/// One structured event per DHCPv6 decision, as [`log_decision`] for DHCPv4: `debug` for what
/// is not ours, `info` for answers and boot clients left alone, `warn` for what the operator
/// must fix.
fn log_decision6(
    outcome: &dhcp6::Outcome,
    iface: &str,
    port: dhcp6::ServerPort,
    source: SocketAddrV6,
) {
    use dhcp6::{Ignored as I, Outcome as O};
    let port = port.number();
    let describe = |client: &dhcp6::Client| {
        (
            client
                .mac
                .as_ref()
                .map(|m| MacDisplay(m).to_string())
                .unwrap_or_default(),
            client.arch.map(|a| a.to_string()).unwrap_or_default(),
            dhcp6::classify::TypeName(client.message_type).to_string(),
        )
    };
    match outcome {
        O::Malformed(m) => {
            tracing::debug!(iface, port, %source, reason = m.name(), "malformed DHCPv6 request dropped")
        }
        O::Ignored { client, reason } => match reason {
            I::NotBootRequest | I::MessageType(_) | I::OtherServer | I::ApiPending | I::ApiDown => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let (mac, arch, request) = describe(client);
                    tracing::debug!(
                        mac,
                        arch,
                        iface,
                        port,
                        request,
                        reason = reason.name(),
                        "DHCPv6: not for us"
                    );
                }
            }
            I::LoaderMissing { rule, file } => {
                let (mac, arch, request) = describe(client);
                tracing::warn!(
                    mac,
                    arch,
                    iface,
                    port,
                    request,
                    rule,
                    file,
                    "DHCPv6 not answered: the rule's loader is missing from the TFTP root"
                );
            }
            I::ReplyFailed(e) => {
                let (mac, arch, request) = describe(client);
                tracing::warn!(mac, arch, iface, port, request, error = %e, "DHCPv6 not answered: reply failed");
            }
            _ => {
                if tracing::enabled!(tracing::Level::INFO) {
                    let (mac, arch, request) = describe(client);
                    tracing::info!(
                        mac,
                        arch,
                        iface,
                        port,
                        request,
                        reason = reason.name(),
                        "DHCPv6 not answered"
                    );
                }
            }
        },
        O::Reply {
            client,
            rule,
            action,
            reply,
        } => {
            if tracing::enabled!(tracing::Level::INFO) {
                let (mac, arch, request) = describe(client);
                let uuid = client
                    .uuid
                    .as_ref()
                    .map(|u| UuidDisplay(u).to_string())
                    .unwrap_or_default();
                tracing::info!(
                    mac,
                    arch,
                    uuid,
                    ipxe = client.ipxe,
                    iface,
                    port,
                    request,
                    relays = client.relays,
                    reply = reply.kind.name(),
                    rule,
                    action = action.kind(),
                    file = action.boot_file().unwrap_or_default(),
                    "answered over DHCPv6"
                );
            }
        }
    }
}

/// Loader lookup under the TFTP root. A loader counts as present only if it is a regular file
/// that resolves inside the root, which is exactly what the TFTP server will agree to serve.
///
/// Answers are cached for [`FsLoaders::TTL`]: resolving a path costs syscalls, a proxy offer
/// must not, and a loader copied into the root is still seen within a second.
#[derive(Debug)]
pub struct FsLoaders {
    root: PathBuf,
    search: LoaderSearch,
    cache: RwLock<HashMap<String, (bool, Instant), foldhash::fast::RandomState>>,
}

impl FsLoaders {
    pub const TTL: Duration = Duration::from_secs(1);
    /// Bounds the cache; the policy names a handful of loaders, so this is never reached in
    /// practice, and when it is the cache simply starts over.
    const MAX_ENTRIES: usize = 1024;

    /// Loaders in `root`, or known loaders `search` finds (the `ipxe` package).
    pub fn new(root: &Path, search: LoaderSearch) -> FsLoaders {
        FsLoaders {
            root: root.to_path_buf(),
            search,
            cache: RwLock::default(),
        }
    }

    /// Where the loader `file` is served from, if anywhere: the TFTP root, else the search.
    pub fn locate(&self, file: &str) -> Option<PathBuf> {
        let in_root = match (
            self.root.canonicalize(),
            self.root.join(file).canonicalize(),
        ) {
            (Ok(root), Ok(path)) if path.starts_with(&root) && path.is_file() => Some(path),
            _ => None,
        };
        in_root.or_else(|| self.search.find_relative(Path::new(file)))
    }

    fn lookup(&self, file: &str) -> bool {
        self.locate(file).is_some()
    }
}

impl LoaderIndex for FsLoaders {
    fn has_loader(&self, file: &str) -> bool {
        let now = Instant::now();
        if let Ok(cache) = self.cache.read()
            && let Some(&(present, checked)) = cache.get(file)
            && now.duration_since(checked) < FsLoaders::TTL
        {
            return present;
        }
        let present = self.lookup(file);
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= FsLoaders::MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(file.to_owned(), (present, now));
        }
        present
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaders_outside_the_root_do_not_count() {
        let dir = std::env::temp_dir().join(format!("xdpboot-loaders-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("undionly.kpxe"), b"x").unwrap();
        std::fs::write(dir.join("outside"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), root.join("escape")).unwrap();
        let loaders = FsLoaders::new(&root, LoaderSearch::default());
        assert!(loaders.has_loader("undionly.kpxe"));
        assert!(!loaders.has_loader("missing.efi"));
        assert!(!loaders.has_loader("sub"));
        assert!(!loaders.has_loader("escape"));
        assert!(!loaders.has_loader("../outside"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
