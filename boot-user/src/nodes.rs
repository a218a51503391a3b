//! The node tracker: what each machine seen recently is doing, for the status page and
//! `/api/nodes`. Sans-IO: events and the time come in, a table comes out; the servers feed it
//! through [`crate::observe::Observer`].
//!
//! A node is a MAC. Its row holds where its current boot got to on the chain
//! DHCP → loader → script → kernel → initrd → overlay, when it reached each stage, the bytes it
//! fetched, and its last error.
//!
//! Who fetched what, and how sure we are ([`Attribution`]):
//! - DHCP requests carry the MAC (chaddr): exact. The client's address is learnt from a
//!   request that shows it: ciaddr, or the source of a (not relayed) port-4011 REQUEST.
//! - `/boot.ipxe?mac=…` and `/nodes/<mac>/overlay.cpio` name the MAC in the URL: exact, and
//!   the request's source address is learnt as that node's (iPXE fetches everything from one
//!   address).
//! - TFTP transfers and kernel/initrd/loader downloads are known by the client's IP only. An
//!   address learnt as above is exact. Otherwise the kernel's neighbour (ARP) entry for the
//!   address names the MAC: exact on the same link, and accepted only when it names a node we
//!   track (behind a router it names the router). Failing both, a fetch of the very file a node
//!   was just offered is put down to that node when exactly one node on that interface is
//!   waiting for it ([`Attribution::Guessed`]); with several waiting it is not attributed.
//!   In practice this last case is a BIOS PXE ROM behind a relay, since ROMs take the boot
//!   file from the offer and never send a 4011 REQUEST.
//!
//! Bounded: at most `max_nodes` rows (the least recently seen goes first), and rows not seen
//! for `ttl` are dropped.
//!
//! The aggregates a status page shows for a storm (nodes per stage, arch, firmware, interface,
//! rule, failure reason; stuck nodes; completion rates; time to each stage) are kept as events
//! arrive ([`summary`]), O(1) per event, and served by [`NodeTracker::summary`]; the table
//! itself is served a page at a time, filtered and sorted here ([`NodeTracker::view`]).

pub mod summary;

use std::fmt::Write as _;

/// The tables keyed by client MAC and address: their keys come off the network, so they are
/// hashed with a keyed hash (foldhash's random seed), but a far cheaper one than SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::dhcp::BootFile;
use crate::dhcp::classify::{BootProtocol, ClientArch, MacDisplay, UuidDisplay};
use crate::dhcp::policy::Identity;
use summary::{Keys, RuleId, RuleNames, Summary, SummaryHead, SummaryView, UNKNOWN};

/// How long after its offer a node may still be guessed as the one fetching the offered file.
pub const GUESS_WINDOW: Duration = Duration::from_secs(60);
/// A node silent for this long that asks for DHCP again is starting a new boot, whatever
/// stage it reached.
pub const BOOT_GAP: Duration = Duration::from_secs(300);
/// Characters kept of a last-error message or a last event.
const MAX_TEXT: usize = 200;
/// What [`NodeTracker::stage_counts`] calls nodes that reached no stage.
pub const UNANSWERED: &str = "unanswered";
/// A node short of its overlay and silent this long is stuck. Downloads are reported when they
/// end, so a node fetching a large initrd over a slow link is silent meanwhile: the bound is
/// minutes, not seconds.
pub const STUCK_AFTER: Duration = Duration::from_secs(120);
/// Rows of an `/api/nodes` page when the request names no `limit`.
pub const DEFAULT_PAGE_ROWS: usize = 100;
/// Most rows of one `/api/nodes` page: a larger `limit` is cut to this.
pub const MAX_PAGE_ROWS: usize = 1000;

/// The stages of a network boot, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// A boot request answered (or deliberately not) by the proxyDHCP side.
    Dhcp,
    /// The first-stage loader (iPXE) fetched over TFTP, or over HTTP by UEFI HTTP boot.
    Loader,
    /// The per-node iPXE script.
    Script,
    Kernel,
    /// One of the shared initrds.
    Initrd,
    /// The node's own overlay: the last download before the kernel starts.
    Overlay,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Dhcp,
        Stage::Loader,
        Stage::Script,
        Stage::Kernel,
        Stage::Initrd,
        Stage::Overlay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Dhcp => "dhcp",
            Stage::Loader => "loader",
            Stage::Script => "script",
            Stage::Kernel => "kernel",
            Stage::Initrd => "initrd",
            Stage::Overlay => "overlay",
        }
    }

    /// The stage of `name` (as [`Stage::name`] spells it).
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What boots the node, as its DHCP request shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Firmware {
    /// A legacy BIOS PXE ROM.
    BiosPxe,
    /// UEFI's PXE client.
    UefiPxe,
    /// UEFI HTTP boot (vendor class HTTPClient).
    UefiHttp,
    /// iPXE (user class "iPXE"): chainloaded, or the NIC's own ROM.
    Ipxe,
}

impl Firmware {
    /// The name in `/api/nodes` and in the `firmware` label of the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Firmware::BiosPxe => "bios-pxe",
            Firmware::UefiPxe => "uefi-pxe",
            Firmware::UefiHttp => "uefi-http",
            Firmware::Ipxe => "ipxe",
        }
    }

    pub fn of(client: &Identity) -> Firmware {
        if client.ipxe {
            Firmware::Ipxe
        } else if client.protocol == Some(BootProtocol::Http) {
            Firmware::UefiHttp
        } else if client.arch.is_some_and(ClientArch::is_uefi) {
            Firmware::UefiPxe
        } else {
            Firmware::BiosPxe
        }
    }
}

// Both serialize as their names, so the JSON and the metrics say the same.
impl Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl Serialize for Firmware {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One DHCP decision about a boot request.
#[derive(Debug, Clone)]
pub struct DhcpSeen<'a> {
    pub mac: [u8; 6],
    pub uuid: Option<[u8; 16]>,
    pub arch: Option<ClientArch>,
    pub firmware: Firmware,
    /// The interface's name, stored once by the caller (observe.rs passes the interned metric
    /// label), so the node keeps a reference, not a copy.
    pub interface: &'static str,
    /// The client's own address, when the request shows it (see the module notes).
    pub address: Option<Ipv4Addr>,
    /// The policy rule that decided, when one did.
    pub rule: Option<&'a str>,
    pub answer: DhcpAnswer<'a>,
}

/// What the proxyDHCP side did with the request.
#[derive(Debug, Clone, Copy)]
pub enum DhcpAnswer<'a> {
    /// A proxy OFFER or ACK naming `file` (a TFTP loader or a URL).
    Answered { reply: &'static str, file: &'a str },
    /// Deliberately not answered (`reason` as counted); `error` when the operator should look
    /// (a missing loader, no rule), not when a rule said to stay silent.
    NotAnswered { reason: &'static str, error: bool },
}

/// A download that finished (or failed): a TFTP transfer or an HTTP response.
#[derive(Debug, Clone)]
pub struct Fetch<'a> {
    /// The address it came from.
    pub client: Ipv4Addr,
    pub what: Fetched<'a>,
    /// `"tftp"` or `"http"`, for the node's last event and error.
    pub protocol: &'static str,
    /// Sent whole with a success status.
    pub ok: bool,
    pub bytes: u64,
    pub duration: Duration,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// What was fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched<'a> {
    /// A first-stage loader by name (TFTP) or path (HTTP).
    Loader(&'a str),
    /// The per-node script of `mac` (from the URL).
    Script([u8; 6]),
    Kernel,
    Initrd,
    /// The overlay of `mac` (from the URL).
    Overlay([u8; 6]),
    /// Any other file (`path`): counted in the node's bytes, no stage.
    Other(&'a str),
}

impl Fetched<'_> {
    pub fn stage(self) -> Option<Stage> {
        match self {
            Fetched::Loader(_) => Some(Stage::Loader),
            Fetched::Script(_) => Some(Stage::Script),
            Fetched::Kernel => Some(Stage::Kernel),
            Fetched::Initrd => Some(Stage::Initrd),
            Fetched::Overlay(_) => Some(Stage::Overlay),
            Fetched::Other(_) => None,
        }
    }

    fn describe(self) -> String {
        match self {
            Fetched::Loader(name) | Fetched::Other(name) => name.to_owned(),
            Fetched::Script(_) => "script".to_owned(),
            Fetched::Kernel => "kernel".to_owned(),
            Fetched::Initrd => "initrd".to_owned(),
            Fetched::Overlay(_) => "overlay".to_owned(),
        }
    }
}

/// How an event was tied to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribution {
    /// The MAC was in the request, or the address was learnt from one that had it.
    Exact,
    /// The kernel's neighbour entry for the client's address names a tracked node.
    Neighbour,
    /// The only node waiting for this file on this interface.
    Guessed,
    /// No node could be named; the event counts in the metrics only.
    Unattributed,
}

impl Attribution {
    pub fn name(self) -> &'static str {
        match self {
            Attribution::Exact => "exact",
            Attribution::Neighbour => "neighbour",
            Attribution::Guessed => "guessed",
            Attribution::Unattributed => "unattributed",
        }
    }
}

/// What an event did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub attribution: Attribution,
    /// A stage the node reached for the first time in this boot, and how long after the boot's
    /// first DHCP request.
    pub reached: Option<(Stage, Duration)>,
}

impl Update {
    const NONE: Update = Update {
        attribution: Attribution::Unattributed,
        reached: None,
    };
}

/// The tracker's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_nodes: usize,
    pub ttl: Duration,
}

/// When a node reached a stage in its current boot, and what it fetched for it.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    bytes: u64,
    /// Time spent fetching for this stage (transfers added up).
    busy: Duration,
    count: u32,
}

#[derive(Debug, Clone)]
struct Node {
    mac: [u8; 6],
    uuid: Option<[u8; 16]>,
    arch: Option<ClientArch>,
    /// The firmware of the boot's first DHCP request: the machine's own.
    firmware: Option<Firmware>,
    /// iPXE asked for DHCP during this boot.
    ipxe: bool,
    /// `""` until a DHCP request names it.
    interface: &'static str,
    address: Option<Ipv4Addr>,
    first_seen: Instant,
    last_seen: Instant,
    /// When it was last seen, as a count of events: orders the table (`recent`) and the
    /// stuck cursor ([`Summary::stuck_cursor`]).
    seq: u64,
    /// The neighbours of this node in the table's recency list (see [`NodeTracker::touch`]):
    /// the node seen next after it, and the one seen last before it.
    newer: Option<[u8; 6]>,
    older: Option<[u8; 6]>,
    boots: u32,
    boot_started: Instant,
    stages: [Option<Mark>; Stage::ALL.len()],
    /// The furthest stage with a mark: asked on every event, so kept rather than searched.
    furthest: Option<Stage>,
    /// The boot file of the last DHCP answer (shown with it), and when it was offered while
    /// the node still waits for it.
    answered_file: BootFile,
    offered: Option<Instant>,
    bytes: u64,
    last_event: Event,
    last_error: Option<(Instant, Event)>,
    /// The rule of the last DHCP decision.
    rule: Option<RuleId>,
    /// Why the last event failed, when it did (the reason the summary counts it under).
    failure: Option<&'static str>,
}

/// What last happened to a node, kept as its parts: a DHCP answer, the event a storm repeats
/// for every node, costs no formatting until someone looks (`/api/nodes`).
#[derive(Debug, Clone)]
enum Event {
    None,
    /// A DHCP answer naming the node's `answered_file`.
    Answered {
        reply: &'static str,
    },
    NotAnswered {
        reason: &'static str,
    },
    Text(String),
}

impl Event {
    /// The event as the status page shows it; `file` is the node's last answered boot file.
    fn describe(&self, file: &BootFile) -> String {
        match self {
            Event::None => String::new(),
            Event::Answered { reply } => clip(format!("{reply}: {file}")),
            Event::NotAnswered { reason } => format!("not answered: {reason}"),
            Event::Text(text) => text.clone(),
        }
    }
}

impl Node {
    fn new(mac: [u8; 6], interface: &'static str, now: Instant) -> Node {
        Node {
            mac,
            uuid: None,
            arch: None,
            firmware: None,
            ipxe: false,
            interface,
            address: None,
            first_seen: now,
            last_seen: now,
            seq: 0,
            newer: None,
            older: None,
            boots: 1,
            boot_started: now,
            stages: [None; Stage::ALL.len()],
            furthest: None,
            answered_file: BootFile::new(),
            offered: None,
            bytes: 0,
            last_event: Event::None,
            last_error: None,
            rule: None,
            failure: None,
        }
    }

    /// What the summary counts this node under.
    fn keys(&self) -> Keys {
        Keys {
            slot: self.stage().map_or(0, |s| s.index() + 1),
            arch: self.arch.map_or(UNKNOWN, ClientArch::name),
            firmware: self.firmware.map_or(UNKNOWN, Firmware::name),
            interface: if self.interface.is_empty() {
                UNKNOWN
            } else {
                self.interface
            },
            rule: self.rule,
            failure: self.failure,
        }
    }

    /// The boot reached its overlay.
    fn finished(&self) -> bool {
        self.stages[Stage::Overlay.index()].is_some()
    }

    /// Silent for [`STUCK_AFTER`] short of the overlay.
    fn stuck(&self, now: Instant) -> bool {
        !self.finished() && now.saturating_duration_since(self.last_seen) >= STUCK_AFTER
    }

    /// Takes this boot's times to stage out of the summary's histograms.
    fn forget_marks(&self, summary: &mut Summary) {
        for stage in Stage::ALL {
            if let Some(mark) = self.stages[stage.index()] {
                summary.forgot(stage, mark.at.saturating_duration_since(self.boot_started));
            }
        }
    }

    fn stage(&self) -> Option<Stage> {
        self.furthest
    }

    fn new_boot(&mut self, now: Instant) {
        self.boots += 1;
        self.boot_started = now;
        self.stages = [None; Stage::ALL.len()];
        self.furthest = None;
        self.firmware = None;
        self.ipxe = false;
        self.offered = None;
        self.bytes = 0;
    }

    /// Marks `stage` reached (or adds to it); returns it when it is new in this boot.
    fn mark(
        &mut self,
        stage: Stage,
        now: Instant,
        bytes: u64,
        busy: Duration,
    ) -> Option<(Stage, Duration)> {
        let slot = &mut self.stages[stage.index()];
        match slot {
            Some(mark) => {
                mark.bytes += bytes;
                mark.busy += busy;
                mark.count += 1;
                None
            }
            None => {
                *slot = Some(Mark {
                    at: now,
                    bytes,
                    busy,
                    count: 1,
                });
                self.furthest = self.furthest.max(Some(stage));
                Some((stage, now.saturating_duration_since(self.boot_started)))
            }
        }
    }
}

/// The table of nodes seen recently.
#[derive(Debug)]
pub struct NodeTracker {
    limits: Limits,
    /// Boxed: a node is a few hundred bytes, and the table's growth then moves pointers, not
    /// nodes (a storm of new MACs grows it to its bound).
    nodes: HashMap<[u8; 6], Box<Node>>,
    /// The ends of the recency list threaded through the nodes (`newer`/`older`, in `seq`
    /// order): the oldest is the first to go. A list in the nodes themselves moves on each
    /// request without allocating, where an ordered map allocates as it splits.
    newest: Option<[u8; 6]>,
    oldest: Option<[u8; 6]>,
    /// The newest node the stuck cursor has passed (its `seq` is `stuck_cursor - 1`), where
    /// [`NodeTracker::settle_counts`] goes on from.
    stuck_frontier: Option<[u8; 6]>,
    next_seq: u64,
    by_address: HashMap<Ipv4Addr, [u8; 6]>,
    /// Bumped on every change, so watchers can tell when to redraw.
    version: u64,
    /// The aggregates, moved by every event.
    summary: Summary,
    rules: RuleNames,
}

impl NodeTracker {
    pub fn new(limits: Limits) -> NodeTracker {
        NodeTracker {
            limits: Limits {
                max_nodes: limits.max_nodes.max(1),
                ttl: limits.ttl,
            },
            nodes: HashMap::default(),
            newest: None,
            oldest: None,
            stuck_frontier: None,
            next_seq: 0,
            by_address: HashMap::default(),
            version: 0,
            summary: Summary::new(),
            rules: RuleNames::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Changes since start; equal versions mean an equal table.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Nodes by the furthest stage of their current boot, in [`Stage::ALL`] order, after
    /// those whose only requests went unanswered (under [`UNANSWERED`]). Kept as events
    /// arrive: no scan.
    pub fn stage_counts(&self) -> Vec<(&'static str, usize)> {
        std::iter::once(UNANSWERED)
            .chain(Stage::ALL.iter().map(|s| s.name()))
            .zip(*self.summary.stages())
            .collect()
    }

    /// A DHCP decision about a boot request from `seen.mac`.
    pub fn dhcp(&mut self, now: Instant, seen: &DhcpSeen<'_>) -> Update {
        self.expire(now);
        self.summary.tick(now);
        let rule = seen.rule.map(|name| self.rules.id(name));
        let (node, summary) = self.touch(seen.mac, seen.interface, now);
        let before = node.keys();
        let reached_later = node.stage().is_some_and(|s| s > Stage::Dhcp);
        let restarted = reached_later
            && (now.saturating_duration_since(node.last_seen) >= BOOT_GAP
                // iPXE's own DHCP follows the loader; anything else asking again after the
                // loader, or anyone asking again after the script, is a new boot.
                || node.stage() >= Some(Stage::Script)
                || seen.firmware != Firmware::Ipxe);
        if restarted {
            node.forget_marks(summary);
            node.new_boot(now);
        }
        node.last_seen = now;
        node.interface = seen.interface;
        if seen.uuid.is_some() {
            node.uuid = seen.uuid;
        }
        if seen.arch.is_some() {
            node.arch = seen.arch;
        }
        if node.firmware.is_none() {
            node.firmware = Some(seen.firmware);
        }
        node.ipxe |= seen.firmware == Firmware::Ipxe;
        node.rule = rule;
        let reached = match seen.answer {
            DhcpAnswer::Answered { reply, file } => {
                node.answered_file = BootFile::from(file);
                node.offered = Some(now);
                node.last_event = Event::Answered { reply };
                node.failure = None;
                node.mark(Stage::Dhcp, now, 0, Duration::ZERO)
            }
            DhcpAnswer::NotAnswered { reason, error } => {
                let event = Event::NotAnswered { reason };
                if error {
                    node.last_error = Some((now, event.clone()));
                }
                node.last_event = event;
                node.failure = error.then_some(reason);
                None
            }
        };
        summary.moved(&before, &node.keys());
        if let Some((stage, after)) = reached {
            summary.reached(stage, after);
        }
        if let Some(address) = seen.address {
            self.learn_address(seen.mac, address);
        }
        self.version += 1;
        Update {
            attribution: Attribution::Exact,
            reached,
        }
    }

    /// Whether [`NodeTracker::fetch`] would use the kernel's neighbour entry for
    /// `fetch.client`: only for a download known by its address alone, from an address no
    /// node is known by, while there are nodes it could name. The caller looks the entry up
    /// (I/O) only then, and without holding the tracker.
    pub fn needs_neighbour(&self, fetch: &Fetch<'_>) -> bool {
        !matches!(fetch.what, Fetched::Script(_) | Fetched::Overlay(_))
            && !self.nodes.is_empty()
            && !self.by_address.contains_key(&fetch.client)
    }

    /// A download by `fetch.client`. `neighbour` is the MAC of the kernel's neighbour entry
    /// for the address, looked up when [`NodeTracker::needs_neighbour`] said so (`None`
    /// otherwise); it is used only when the address is not known already.
    pub fn fetch(&mut self, now: Instant, fetch: &Fetch<'_>, neighbour: Option<[u8; 6]>) -> Update {
        self.expire(now);
        self.summary.tick(now);
        let (mac, attribution) = match fetch.what {
            Fetched::Script(mac) | Fetched::Overlay(mac) => {
                // A MAC in a URL is the client's word: a row is made for it only when the
                // server agreed (signed overlay, known script); failures update rows only.
                if !fetch.ok && !self.nodes.contains_key(&mac) {
                    return Update::NONE;
                }
                // A node first seen here (its DHCP went elsewhere) has no interface yet.
                self.touch(mac, "", now);
                self.learn_address(mac, fetch.client);
                (mac, Attribution::Exact)
            }
            _ => match self.resolve(now, fetch, neighbour) {
                Some(found) => found,
                None => return Update::NONE,
            },
        };
        let (node, summary) = self.touch(mac, "", now);
        let before = node.keys();
        node.last_seen = now;
        node.bytes += fetch.bytes;
        let what = fetch.what.describe();
        let reached = if fetch.ok {
            node.last_event = Event::Text(clip(format!(
                "{} {what}: {} in {} ms",
                fetch.protocol,
                human_bytes(fetch.bytes),
                fetch.duration.as_millis()
            )));
            // A download that began before the node's last failure does not undo it: a
            // script's end can be reported after the node's next request, refused at once
            // (a forged overlay URL), was.
            let began = now.checked_sub(fetch.duration).unwrap_or(now);
            if node.last_error.as_ref().is_none_or(|(at, _)| began >= *at) {
                node.failure = None;
            }
            if matches!(fetch.what, Fetched::Loader(_)) {
                node.offered = None;
            }
            fetch
                .what
                .stage()
                .and_then(|stage| node.mark(stage, now, fetch.bytes, fetch.duration))
        } else {
            let text = clip(format!(
                "{} {what}: {}",
                fetch.protocol,
                fetch.error.as_deref().unwrap_or("failed")
            ));
            node.last_event = Event::Text(text.clone());
            node.last_error = Some((now, Event::Text(text)));
            node.failure = Some(fetch_failure(fetch.protocol, fetch.what));
            None
        };
        summary.moved(&before, &node.keys());
        if let Some((stage, after)) = reached {
            summary.reached(stage, after);
        }
        self.version += 1;
        Update {
            attribution,
            reached,
        }
    }

    /// The node behind an address-only fetch (see the module notes).
    fn resolve(
        &mut self,
        now: Instant,
        fetch: &Fetch<'_>,
        neighbour: Option<[u8; 6]>,
    ) -> Option<([u8; 6], Attribution)> {
        if let Some(mac) = self.by_address.get(&fetch.client) {
            return Some((*mac, Attribution::Exact));
        }
        if let Some(mac) = neighbour.filter(|m| self.nodes.contains_key(m)) {
            self.learn_address(mac, fetch.client);
            return Some((mac, Attribution::Neighbour));
        }
        let Fetched::Loader(file) = fetch.what else {
            return None;
        };
        let mut waiting = self.nodes.values().filter(|node| {
            node.address.is_none()
                && node.stage() == Some(Stage::Dhcp)
                && node.offered.is_some_and(|at| {
                    now.saturating_duration_since(at) <= GUESS_WINDOW
                        && offered_names(node.answered_file.as_str(), file)
                })
        });
        let first = waiting.next()?;
        if waiting.next().is_some() {
            return None;
        }
        let mac = first.mac;
        self.learn_address(mac, fetch.client);
        Some((mac, Attribution::Guessed))
    }

    /// Ties `address` to `mac` (and to no other node).
    fn learn_address(&mut self, mac: [u8; 6], address: Ipv4Addr) {
        if address.is_unspecified() || address.is_broadcast() {
            return;
        }
        if let Some(previous) = self.by_address.insert(address, mac)
            && previous != mac
            && let Some(other) = self.nodes.get_mut(&previous)
        {
            other.address = None;
        }
        if let Some(node) = self.nodes.get_mut(&mac)
            && let Some(old) = node.address.replace(address)
            && old != address
            && self.by_address.get(&old) == Some(&mac)
        {
            self.by_address.remove(&old);
        }
    }

    /// The node of `mac`, created (evicting the least recently seen at the bound) if new, and
    /// made the most recently seen; with the summary, for the caller to move the node's counts
    /// once it has changed it.
    fn touch(
        &mut self,
        mac: [u8; 6],
        interface: &'static str,
        now: Instant,
    ) -> (&mut Node, &mut Summary) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(node) = self.nodes.get(&mac) {
            // It leaves the silent end of the order: no longer stuck.
            if node.seq < self.summary.stuck_cursor && !node.finished() {
                self.summary.stuck = self.summary.stuck.saturating_sub(1);
            }
            self.unlink(mac);
        } else {
            // One eviction makes room (the table grows by one at a time); the loop also copes
            // with a bound that shrank, and ends when the list does.
            while self.nodes.len() >= self.limits.max_nodes {
                let Some(oldest) = self.oldest.filter(|m| self.nodes.contains_key(m)) else {
                    break;
                };
                self.remove(oldest);
            }
            let node = Box::new(Node::new(mac, interface, now));
            self.summary.add(&node.keys());
            self.nodes.insert(mac, node);
        }
        self.push_newest(mac);
        let node = self
            .nodes
            .get_mut(&mac)
            .expect("the node was found or inserted just above");
        node.seq = seq;
        (node, &mut self.summary)
    }

    /// Takes `mac` out of the recency list (it stays in the table). The stuck frontier steps
    /// back to its older neighbour if it was this node.
    fn unlink(&mut self, mac: [u8; 6]) {
        let Some((newer, older)) = self.nodes.get(&mac).map(|n| (n.newer, n.older)) else {
            return;
        };
        if self.stuck_frontier == Some(mac) {
            self.stuck_frontier = older;
        }
        match newer.and_then(|n| self.nodes.get_mut(&n)) {
            Some(node) => node.older = older,
            None => self.newest = older,
        }
        match older.and_then(|o| self.nodes.get_mut(&o)) {
            Some(node) => node.newer = newer,
            None => self.oldest = newer,
        }
    }

    /// Puts `mac` (in the table, out of the list) at the newest end of the recency list.
    fn push_newest(&mut self, mac: [u8; 6]) {
        let previous = self.newest;
        if let Some(node) = self.nodes.get_mut(&mac) {
            node.newer = None;
            node.older = previous;
        }
        match previous.and_then(|p| self.nodes.get_mut(&p)) {
            Some(node) => node.newer = Some(mac),
            None => self.oldest = Some(mac),
        }
        self.newest = Some(mac);
    }

    fn remove(&mut self, mac: [u8; 6]) {
        self.unlink(mac);
        if let Some(node) = self.nodes.remove(&mac) {
            if node.seq < self.summary.stuck_cursor && !node.finished() {
                self.summary.stuck = self.summary.stuck.saturating_sub(1);
            }
            self.summary.sub(&node.keys());
            node.forget_marks(&mut self.summary);
            if let Some(address) = node.address
                && self.by_address.get(&address) == Some(&mac)
            {
                self.by_address.remove(&address);
            }
        }
    }

    /// The nodes from the most recently seen to the least.
    fn newest_first(&self) -> impl Iterator<Item = &Node> + '_ {
        std::iter::successors(self.newest.and_then(|m| self.nodes.get(&m)), |node| {
            node.older.and_then(|m| self.nodes.get(&m))
        })
        .map(|node| &**node)
        .take(self.nodes.len())
    }

    /// Drops the nodes not seen for the TTL.
    pub fn expire(&mut self, now: Instant) {
        let mut removed = false;
        while let Some(mac) = self.oldest {
            let Some(node) = self.nodes.get(&mac) else {
                break;
            };
            if now.saturating_duration_since(node.last_seen) <= self.limits.ttl {
                break;
            }
            self.remove(mac);
            removed = true;
        }
        if removed {
            self.version += 1;
        }
    }

    /// Brings what depends on the time alone up to `now`: expired nodes go, nodes silent for
    /// [`STUCK_AFTER`] count as stuck, the history closes past seconds. The readers call it;
    /// the event path does not pay for it. Each node crosses the stuck cursor once per event,
    /// so this is O(1) per event, amortized.
    pub fn settle(&mut self, now: Instant) {
        self.expire(now);
        self.settle_counts(now);
    }

    /// [`NodeTracker::settle`] but for the expiry, which changes the table's version.
    fn settle_counts(&mut self, now: Instant) {
        self.summary.tick(now);
        // On from the frontier towards the newest: each node is passed once per event.
        loop {
            let next = match self.stuck_frontier {
                Some(frontier) => self.nodes.get(&frontier).and_then(|n| n.newer),
                None => self.oldest,
            };
            let Some(node) = next.and_then(|mac| self.nodes.get(&mac)) else {
                break;
            };
            if now.saturating_duration_since(node.last_seen) < STUCK_AFTER {
                break;
            }
            if !node.finished() {
                self.summary.stuck += 1;
            }
            self.summary.stuck_cursor = node.seq + 1;
            self.stuck_frontier = Some(node.mac);
        }
    }

    /// `/api/summary`: the aggregates, as of `now` (`wall` is the same instant on the wall
    /// clock).
    pub fn summary(&mut self, now: Instant, wall: SystemTime) -> SummaryView {
        self.settle(now);
        self.summary_as_is(now, wall)
    }

    /// [`NodeTracker::summary`] without dropping expired nodes first: for a reader that does
    /// not tell the event stream when the table changed (the metrics collector). The version
    /// stays as it is.
    pub fn summary_as_is(&mut self, now: Instant, wall: SystemTime) -> SummaryView {
        self.settle_counts(now);
        let head = SummaryHead {
            version: self.version,
            now_ms: unix_ms(now, wall, now),
            total: self.nodes.len(),
            max_nodes: self.limits.max_nodes,
            ttl_secs: self.limits.ttl.as_secs(),
        };
        self.summary
            .view(head, &self.rules, |t| unix_ms(now, wall, t))
    }

    /// One page of the table, as `/api/nodes` serves it: the nodes `query` picks, in its
    /// order. O(n) in the table (O(n log n) for the orders other than `recent`), bounded by
    /// `max_nodes`; the rows built are at most [`MAX_PAGE_ROWS`].
    pub fn view(&mut self, now: Instant, wall: SystemTime, query: &TableQuery) -> NodesView {
        self.settle(now);
        let words: Vec<String> = query
            .text
            .iter()
            .flat_map(|t| t.split_whitespace())
            .map(str::to_lowercase)
            .collect();
        let mut text = String::new();
        // Most recently seen first: the `recent` order, and the tie-break of the others.
        let mut rows: Vec<(u128, &Node)> = self
            .newest_first()
            .filter(|node| self.matches(node, query, now, &words, &mut text))
            .map(|node| (query.sort.key(node, now), node))
            .collect();
        if query.sort != Sort::Recent {
            rows.sort_unstable_by_key(|(key, _)| *key);
        }
        let limit = query.limit.min(MAX_PAGE_ROWS);
        let nodes = rows
            .iter()
            .skip(query.offset)
            .take(limit)
            .map(|(_, node)| self.row(node, now, wall))
            .collect();
        NodesView {
            version: self.version,
            now_ms: unix_ms(now, wall, now),
            total: self.nodes.len(),
            matched: rows.len(),
            offset: query.offset,
            limit,
            sort: query.sort.name(),
            max_nodes: self.limits.max_nodes,
            ttl_secs: self.limits.ttl.as_secs(),
            stages: Stage::ALL,
            nodes,
        }
    }

    fn matches(
        &self,
        node: &Node,
        query: &TableQuery,
        now: Instant,
        words: &[String],
        text: &mut String,
    ) -> bool {
        let keys = node.keys();
        let is =
            |wanted: &Option<String>, value: &str| wanted.as_deref().is_none_or(|w| w == value);
        let state = match query.state {
            None => true,
            Some(NodeState::Failed) => keys.failure.is_some(),
            Some(NodeState::Stuck) => node.stuck(now),
        };
        if !(query.stage.is_none_or(|s| s == node.stage())
            && state
            && is(&query.arch, keys.arch)
            && is(&query.firmware, keys.firmware)
            && is(&query.interface, keys.interface)
            && is(&query.rule, self.rules.name(keys.rule))
            && query
                .reason
                .as_deref()
                .is_none_or(|r| keys.failure == Some(r)))
        {
            return false;
        }
        if words.is_empty() {
            return true;
        }
        text.clear();
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "{} {} {} {} {}",
            MacDisplay(&node.mac),
            keys.arch,
            keys.firmware,
            keys.interface,
            node.stage().map_or(UNANSWERED, Stage::name)
        );
        if let Some(uuid) = &node.uuid {
            let _ = write!(text, " {}", UuidDisplay(uuid));
        }
        if let Some(address) = node.address {
            let _ = write!(text, " {address}");
        }
        text.make_ascii_lowercase();
        words.iter().all(|word| text.contains(word.as_str()))
    }

    /// A node as the status page shows it.
    fn row(&self, node: &Node, now: Instant, wall: SystemTime) -> NodeView {
        let unix_ms = |t| unix_ms(now, wall, t);
        let keys = node.keys();
        NodeView {
            mac: MacDisplay(&node.mac).to_string(),
            uuid: node.uuid.as_ref().map(|u| UuidDisplay(u).to_string()),
            arch: node.arch.map(|a| a.to_string()),
            firmware: node.firmware,
            ipxe: node.ipxe,
            interface: node.interface.to_owned(),
            ip: node.address.map(|a| a.to_string()),
            stage: node.stage(),
            stages: Stage::ALL
                .iter()
                .filter_map(|stage| {
                    let mark = node.stages[stage.index()]?;
                    Some(StageView {
                        stage: *stage,
                        at_ms: unix_ms(mark.at),
                        after_ms: mark
                            .at
                            .saturating_duration_since(node.boot_started)
                            .as_millis() as u64,
                        bytes: mark.bytes,
                        busy_ms: mark.busy.as_millis() as u64,
                        count: mark.count,
                    })
                })
                .collect(),
            bytes: node.bytes,
            boots: node.boots,
            boot_started_ms: unix_ms(node.boot_started),
            first_seen_ms: unix_ms(node.first_seen),
            last_seen_ms: unix_ms(node.last_seen),
            last_event: node.last_event.describe(&node.answered_file),
            last_error: node.last_error.as_ref().map(|(at, event)| ErrorView {
                at_ms: unix_ms(*at),
                message: event.describe(&node.answered_file),
            }),
            rule: self.rules.name(keys.rule).to_owned(),
            failure: keys.failure,
            stuck: node.stuck(now),
        }
    }
}

/// `t` on the wall clock, in Unix milliseconds, given that `now` is `wall`.
fn unix_ms(now: Instant, wall: SystemTime, t: Instant) -> u64 {
    wall.checked_sub(now.saturating_duration_since(t))
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The failure reason of a download that failed: `<protocol>_<what>`.
fn fetch_failure(protocol: &'static str, what: Fetched<'_>) -> &'static str {
    match (protocol, what) {
        ("tftp", _) => "tftp_loader",
        (_, Fetched::Loader(_)) => "http_loader",
        (_, Fetched::Script(_)) => "http_script",
        (_, Fetched::Kernel) => "http_kernel",
        (_, Fetched::Initrd) => "http_initrd",
        (_, Fetched::Overlay(_)) => "http_overlay",
        (_, Fetched::Other(_)) => "http_file",
    }
}

/// What `/api/nodes` asks for (README, "Observing"): filters that must all hold, an order and a
/// page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableQuery {
    /// `Some(None)`: the nodes no request of whose boot was answered (`stage=unanswered`).
    pub stage: Option<Option<Stage>>,
    pub state: Option<NodeState>,
    pub arch: Option<String>,
    pub firmware: Option<String>,
    pub interface: Option<String>,
    pub rule: Option<String>,
    /// Failed nodes of this reason (as [`SummaryView::failures`] names them).
    pub reason: Option<String>,
    /// Words that must each occur in the MAC, UUID, address, arch, firmware, interface or
    /// stage (`q=`).
    pub text: Option<String>,
    pub sort: Sort,
    pub offset: usize,
    /// Rows at most; cut to [`MAX_PAGE_ROWS`].
    pub limit: usize,
}

impl Default for TableQuery {
    fn default() -> Self {
        TableQuery {
            stage: None,
            state: None,
            arch: None,
            firmware: None,
            interface: None,
            rule: None,
            reason: None,
            text: None,
            sort: Sort::Recent,
            offset: 0,
            limit: DEFAULT_PAGE_ROWS,
        }
    }
}

/// A bad `/api/nodes` query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "unknown parameter {0:?}: stage, state, arch, firmware, interface, rule, reason, q, sort, \
         offset, limit"
    )]
    UnknownParameter(String),
    #[error("more than {0} parameters")]
    TooManyParameters(usize),
    #[error("{key}={value:?}: expected {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl TableQuery {
    /// Sets the parameter `key` (both decoded already).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), QueryError> {
        let bad = |key, expected| QueryError::BadValue {
            key,
            value: value.to_owned(),
            expected,
        };
        let text = || (!value.is_empty()).then(|| value.to_owned());
        match key {
            "stage" if value == UNANSWERED => self.stage = Some(None),
            "stage" => {
                let stage = Stage::from_name(value).ok_or_else(|| {
                    bad(
                        "stage",
                        "unanswered, dhcp, loader, script, kernel, initrd or overlay",
                    )
                })?;
                self.stage = Some(Some(stage));
            }
            "state" => {
                self.state = Some(match value {
                    "failed" => NodeState::Failed,
                    "stuck" => NodeState::Stuck,
                    _ => return Err(bad("state", "failed or stuck")),
                })
            }
            "arch" => self.arch = text(),
            "firmware" => self.firmware = text(),
            "interface" => self.interface = text(),
            "rule" => self.rule = text(),
            "reason" => self.reason = text(),
            "q" => self.text = text(),
            "sort" => {
                self.sort = Sort::from_name(value)
                    .ok_or_else(|| bad("sort", "attention, recent, stage or mac"))?
            }
            "offset" => self.offset = value.parse().map_err(|_| bad("offset", "a row number"))?,
            "limit" => {
                self.limit = value
                    .parse::<usize>()
                    .map_err(|_| bad("limit", "a number of rows"))?
                    .min(MAX_PAGE_ROWS)
            }
            other => return Err(QueryError::UnknownParameter(other.to_owned())),
        }
        Ok(())
    }
}

/// A node's state beyond its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Its last event failed.
    Failed,
    /// Short of its overlay and silent for [`STUCK_AFTER`].
    Stuck,
}

/// The order of an `/api/nodes` page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Most recently seen first.
    #[default]
    Recent,
    /// What needs an operator first: failed nodes, then stuck ones, then those still booting,
    /// then finished boots; in each group the longest silent first.
    Attention,
    /// The least advanced first (unanswered, DHCP, …, overlay), then the most recently seen.
    Stage,
    /// By MAC.
    Mac,
}

impl Sort {
    pub fn name(self) -> &'static str {
        match self {
            Sort::Recent => "recent",
            Sort::Attention => "attention",
            Sort::Stage => "stage",
            Sort::Mac => "mac",
        }
    }

    pub fn from_name(name: &str) -> Option<Sort> {
        [Sort::Recent, Sort::Attention, Sort::Stage, Sort::Mac]
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// The node's place: smaller first.
    fn key(self, node: &Node, now: Instant) -> u128 {
        let seq = u128::from(node.seq);
        let newest_first = u128::from(u64::MAX - node.seq);
        match self {
            Sort::Recent => newest_first,
            Sort::Attention => {
                let group: u128 = if node.failure.is_some() {
                    0
                } else if node.stuck(now) {
                    1
                } else if !node.finished() {
                    2
                } else {
                    3
                };
                group << 64 | seq
            }
            Sort::Stage => (node.keys().slot as u128) << 64 | newest_first,
            Sort::Mac => node.mac.iter().fold(0u128, |k, b| k << 8 | u128::from(*b)),
        }
    }
}

/// Whether the boot file of an offer (a TFTP name or a URL) names `fetched` (a TFTP name or
/// an HTTP path).
fn offered_names(offered: &str, fetched: &str) -> bool {
    let offered = offered.split(['?', '#']).next().unwrap_or_default();
    let (offered, fetched) = (
        offered.trim_start_matches('/'),
        fetched.trim_start_matches('/'),
    );
    !fetched.is_empty() && (offered == fetched || offered.ends_with(&format!("/{fetched}")))
}

/// `1234567` as `1.2 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn clip(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_TEXT) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// `/api/nodes`: one page of the table.
#[derive(Debug, Clone, Serialize)]
pub struct NodesView {
    /// The node table's version (as in `/api/summary`).
    pub version: u64,
    /// The server's clock, so a page can show ages without trusting its own.
    pub now_ms: u64,
    /// Nodes tracked.
    pub total: usize,
    /// Nodes the query's filters pick (the rows below are `limit` of them from `offset`).
    pub matched: usize,
    pub offset: usize,
    pub limit: usize,
    /// The order of the rows: `attention`, `recent`, `stage` or `mac`.
    pub sort: &'static str,
    pub max_nodes: usize,
    pub ttl_secs: u64,
    /// The stages in order.
    pub stages: [Stage; Stage::ALL.len()],
    pub nodes: Vec<NodeView>,
}

/// One node's row. Times are Unix milliseconds; `after_ms` counts from the boot's first DHCP
/// request.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub mac: String,
    pub uuid: Option<String>,
    pub arch: Option<String>,
    pub firmware: Option<Firmware>,
    pub ipxe: bool,
    pub interface: String,
    pub ip: Option<String>,
    /// The furthest stage of the current boot; `None` when its only request went unanswered.
    pub stage: Option<Stage>,
    pub stages: Vec<StageView>,
    /// Bytes fetched in the current boot.
    pub bytes: u64,
    /// Boots seen (a DHCP request after the loader or script starts a new one).
    pub boots: u32,
    pub boot_started_ms: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub last_event: String,
    pub last_error: Option<ErrorView>,
    /// The rule of the last DHCP decision (`unknown` when none decided).
    pub rule: String,
    /// Why the last event failed, when it did (as `/api/summary` counts it).
    pub failure: Option<&'static str>,
    /// Short of the overlay and silent for `stuck_after_secs`.
    pub stuck: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    pub stage: Stage,
    pub at_ms: u64,
    pub after_ms: u64,
    pub bytes: u64,
    /// Time spent downloading for this stage.
    pub busy_ms: u64,
    /// Requests or transfers for this stage (initrds: one each).
    pub count: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorView {
    pub at_ms: u64,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_nodes: 4,
        ttl: Duration::from_secs(3600),
    };
    const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xa];
    const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xb];
    const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);

    fn offer(mac: [u8; 6], firmware: Firmware, file: &str) -> DhcpSeen<'_> {
        DhcpSeen {
            mac,
            uuid: None,
            arch: Some(ClientArch::Bios),
            firmware,
            interface: "eth0",
            address: None,
            rule: Some("default"),
            answer: DhcpAnswer::Answered {
                reply: "proxy_offer",
                file,
            },
        }
    }

    fn fetched(client: Ipv4Addr, what: Fetched<'_>) -> Fetch<'_> {
        Fetch {
            client,
            what,
            protocol: "http",
            ok: true,
            bytes: 1000,
            duration: Duration::from_millis(5),
            error: None,
        }
    }

    /// No neighbour entry for the client (behind a router, or not looked up).
    const NO_NEIGHBOUR: Option<[u8; 6]> = None;

    fn all() -> TableQuery {
        TableQuery {
            limit: MAX_PAGE_ROWS,
            ..TableQuery::default()
        }
    }

    fn row(tracker: &mut NodeTracker, now: Instant, mac: [u8; 6]) -> NodeView {
        let text = MacDisplay(&mac).to_string();
        tracker
            .view(now, SystemTime::now(), &all())
            .nodes
            .into_iter()
            .find(|n| n.mac == text)
            .expect("the node has a row")
    }

    #[test]
    fn a_node_advances_through_every_stage_of_an_ipxe_boot() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut tracker = NodeTracker::new(LIMITS);
        let update = tracker.dhcp(at(0), &offer(A, Firmware::BiosPxe, "undionly.kpxe"));
        assert_eq!(update.reached, Some((Stage::Dhcp, Duration::ZERO)));
        // The ROM's TFTP fetch: the address is unknown, the neighbour table names A.
        let tftp = Fetch {
            protocol: "tftp",
            ..fetched(IP_A, Fetched::Loader("undionly.kpxe"))
        };
        assert!(tracker.needs_neighbour(&tftp));
        let update = tracker.fetch(at(100), &tftp, Some(A));
        assert_eq!(update.attribution, Attribution::Neighbour);
        assert_eq!(
            update.reached,
            Some((Stage::Loader, Duration::from_millis(100)))
        );
        // iPXE's own DHCP does not start a new boot.
        tracker.dhcp(at(200), &offer(A, Firmware::Ipxe, "http://x/boot.ipxe"));
        for (ms, what, stage) in [
            (300, Fetched::Script(A), Stage::Script),
            (400, Fetched::Kernel, Stage::Kernel),
            (500, Fetched::Initrd, Stage::Initrd),
            (600, Fetched::Overlay(A), Stage::Overlay),
        ] {
            let fetch = fetched(IP_A, what);
            assert!(
                !tracker.needs_neighbour(&fetch),
                "the address is known: no neighbour lookup"
            );
            let update = tracker.fetch(at(ms), &fetch, NO_NEIGHBOUR);
            assert_eq!(update.attribution, Attribution::Exact);
            assert_eq!(update.reached, Some((stage, Duration::from_millis(ms))));
        }
        // A second initrd adds to the stage, it does not reach it again.
        let update = tracker.fetch(at(550), &fetched(IP_A, Fetched::Initrd), NO_NEIGHBOUR);
        assert_eq!(update.reached, None);
        let node = row(&mut tracker, at(700), A);
        assert_eq!(node.stage, Some(Stage::Overlay));
        assert_eq!(node.firmware, Some(Firmware::BiosPxe));
        assert!(node.ipxe);
        assert_eq!(node.ip.as_deref(), Some("198.18.0.10"));
        assert_eq!(node.bytes, 6000);
        assert_eq!(node.boots, 1);
        let initrd = node
            .stages
            .iter()
            .find(|s| s.stage == Stage::Initrd)
            .unwrap();
        assert_eq!(
            (initrd.count, initrd.bytes, initrd.after_ms),
            (2, 2000, 500)
        );
    }

    #[test]
    fn asking_again_after_the_script_starts_a_new_boot() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(t0, &offer(A, Firmware::Ipxe, "http://x/boot.ipxe"));
        tracker.fetch(t0, &fetched(IP_A, Fetched::Script(A)), NO_NEIGHBOUR);
        let later = t0 + Duration::from_secs(30);
        tracker.dhcp(later, &offer(A, Firmware::Ipxe, "http://x/boot.ipxe"));
        let node = row(&mut tracker, later, A);
        assert_eq!(node.boots, 2);
        assert_eq!(node.stage, Some(Stage::Dhcp));
        assert_eq!(node.bytes, 0);
    }

    #[test]
    fn a_fetch_of_the_offered_loader_is_guessed_only_when_one_node_waits_for_it() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(t0, &offer(A, Firmware::BiosPxe, "undionly.kpxe"));
        let tftp = fetched(IP_A, Fetched::Loader("undionly.kpxe"));
        assert_eq!(
            tracker.fetch(t0, &tftp, NO_NEIGHBOUR).attribution,
            Attribution::Guessed
        );
        // Now two nodes wait for the same loader: B's fetch cannot be told apart.
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(t0, &offer(A, Firmware::BiosPxe, "undionly.kpxe"));
        tracker.dhcp(t0, &offer(B, Firmware::BiosPxe, "undionly.kpxe"));
        let tftp = fetched(IP_B, Fetched::Loader("undionly.kpxe"));
        assert_eq!(
            tracker.fetch(t0, &tftp, NO_NEIGHBOUR).attribution,
            Attribution::Unattributed
        );
        // A UEFI HTTP-boot node is offered a URL and fetches its path.
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(
            t0,
            &offer(A, Firmware::UefiHttp, "http://198.18.0.1:80/ipxe-amd64.efi"),
        );
        let http = fetched(IP_A, Fetched::Loader("/ipxe-amd64.efi"));
        assert_eq!(
            tracker.fetch(t0, &http, NO_NEIGHBOUR).attribution,
            Attribution::Guessed
        );
    }

    #[test]
    fn a_neighbour_entry_counts_only_for_a_tracked_node() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(t0, &offer(A, Firmware::BiosPxe, "undionly.kpxe"));
        // Behind a router the neighbour entry is the router's.
        let router = [2, 0, 0, 0, 0, 1];
        let update = tracker.fetch(t0, &fetched(IP_B, Fetched::Kernel), Some(router));
        assert_eq!(update, Update::NONE);
        assert_eq!(tracker.len(), 1);
    }

    #[test]
    fn the_neighbour_table_is_asked_only_when_its_answer_could_name_a_node() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        let kernel = fetched(IP_A, Fetched::Kernel);
        // No node yet: whatever the entry names, it names no tracked node.
        assert!(!tracker.needs_neighbour(&kernel));
        tracker.dhcp(t0, &offer(A, Firmware::BiosPxe, "undionly.kpxe"));
        assert!(tracker.needs_neighbour(&kernel));
        // The URL names the MAC.
        assert!(!tracker.needs_neighbour(&fetched(IP_A, Fetched::Script(A))));
        assert!(!tracker.needs_neighbour(&fetched(IP_A, Fetched::Overlay(A))));
        // Once the address is learnt, it is known without the kernel.
        tracker.fetch(t0, &fetched(IP_A, Fetched::Script(A)), NO_NEIGHBOUR);
        assert!(!tracker.needs_neighbour(&kernel));
        assert!(tracker.needs_neighbour(&fetched(IP_B, Fetched::Kernel)));
    }

    #[test]
    fn failures_are_the_last_error_and_do_not_advance() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(t0, &offer(A, Firmware::Ipxe, "http://x/boot.ipxe"));
        tracker.fetch(t0, &fetched(IP_A, Fetched::Script(A)), NO_NEIGHBOUR);
        let failed = Fetch {
            ok: false,
            error: Some("404 Not Found".into()),
            ..fetched(IP_A, Fetched::Kernel)
        };
        assert_eq!(tracker.fetch(t0, &failed, NO_NEIGHBOUR).reached, None);
        let node = row(&mut tracker, t0, A);
        assert_eq!(node.stage, Some(Stage::Script));
        assert_eq!(
            node.last_error.unwrap().message,
            "http kernel: 404 Not Found"
        );
        // A refused overlay for a MAC never seen makes no row.
        let forged = Fetch {
            ok: false,
            ..fetched(IP_B, Fetched::Overlay(B))
        };
        assert_eq!(tracker.fetch(t0, &forged, NO_NEIGHBOUR), Update::NONE);
        assert_eq!(tracker.len(), 1);
        // An unanswered request that needs the operator is an error too.
        let missing = DhcpSeen {
            answer: DhcpAnswer::NotAnswered {
                reason: "loader_missing",
                error: true,
            },
            ..offer(B, Firmware::UefiPxe, "")
        };
        tracker.dhcp(t0, &missing);
        let node = row(&mut tracker, t0, B);
        assert_eq!(node.stage, None);
        let counts = tracker.stage_counts();
        assert_eq!(counts[0], ("unanswered", 1));
        assert_eq!(counts[3], ("script", 1));
        assert_eq!(
            node.last_error.unwrap().message,
            "not answered: loader_missing"
        );
    }

    /// The script's end is reported after the node's next request, refused at once: the
    /// failure stands. A download that began after it clears it.
    #[test]
    fn a_download_that_began_before_a_failure_does_not_clear_it() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(t0, &offer(A, Firmware::Ipxe, "http://x/boot.ipxe"));
        let forged = Fetch {
            ok: false,
            duration: Duration::ZERO,
            ..fetched(IP_A, Fetched::Overlay(A))
        };
        let refused_at = t0 + Duration::from_millis(10);
        tracker.fetch(refused_at, &forged, NO_NEIGHBOUR);
        // The script began at 6 ms and ended at 11 ms, reported after the refusal.
        let script = fetched(IP_A, Fetched::Script(A));
        tracker.fetch(refused_at + Duration::from_millis(1), &script, NO_NEIGHBOUR);
        let node = row(&mut tracker, refused_at, A);
        assert_eq!(node.stage, Some(Stage::Script));
        assert_eq!(node.failure, Some("http_overlay"));
        // The next boot's download, begun after the refusal, clears it.
        let later = refused_at + Duration::from_millis(100);
        tracker.fetch(later, &script, NO_NEIGHBOUR);
        assert_eq!(row(&mut tracker, later, A).failure, None);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_silent_nodes() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        let mac = |i: u8| [2, 0, 0, 0, 0, i];
        for i in 0..10u8 {
            let seen = DhcpSeen {
                address: Some(Ipv4Addr::new(198, 18, 0, 100 + i)),
                ..offer(mac(i), Firmware::UefiPxe, "ipxe-amd64.efi")
            };
            tracker.dhcp(t0 + Duration::from_secs(u64::from(i)), &seen);
        }
        assert_eq!(tracker.len(), LIMITS.max_nodes);
        let view = tracker.view(
            t0 + Duration::from_secs(10),
            SystemTime::now(),
            &TableQuery {
                limit: 2,
                ..TableQuery::default()
            },
        );
        let macs: Vec<&str> = view.nodes.iter().map(|n| n.mac.as_str()).collect();
        assert_eq!(macs, ["02:00:00:00:00:09", "02:00:00:00:00:08"]);
        assert_eq!(view.total, 4);
        // Evicted nodes take their addresses with them.
        assert_eq!(tracker.by_address.len(), LIMITS.max_nodes);
        tracker.expire(t0 + LIMITS.ttl + Duration::from_millis(8500));
        assert_eq!(
            tracker.len(),
            1,
            "only the node seen at 9 s is within the TTL"
        );
        tracker.expire(t0 + LIMITS.ttl + Duration::from_secs(10));
        assert!(tracker.is_empty());
        assert!(tracker.by_address.is_empty());
    }

    #[test]
    fn an_address_belongs_to_one_node() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(t0, &offer(A, Firmware::Ipxe, "u"));
        tracker.dhcp(t0, &offer(B, Firmware::Ipxe, "u"));
        tracker.fetch(t0, &fetched(IP_A, Fetched::Script(A)), NO_NEIGHBOUR);
        // The site server hands A's old address to B.
        tracker.fetch(t0, &fetched(IP_A, Fetched::Script(B)), NO_NEIGHBOUR);
        assert_eq!(row(&mut tracker, t0, A).ip, None);
        assert_eq!(row(&mut tracker, t0, B).ip.as_deref(), Some("198.18.0.10"));
        let update = tracker.fetch(t0, &fetched(IP_A, Fetched::Kernel), NO_NEIGHBOUR);
        assert_eq!(row(&mut tracker, t0, B).stage, Some(Stage::Kernel));
        assert_eq!(update.attribution, Attribution::Exact);
    }

    #[test]
    fn the_view_serializes_stages_by_name() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(t0, &offer(A, Firmware::BiosPxe, "undionly.kpxe"));
        let json = serde_json::to_value(tracker.view(t0, SystemTime::now(), &all())).unwrap();
        assert_eq!(json["stages"][0], "dhcp");
        assert_eq!(json["nodes"][0]["stage"], "dhcp");
        assert_eq!(json["nodes"][0]["firmware"], "bios-pxe");
        assert_eq!(json["nodes"][0]["mac"], "52:54:00:00:00:0a");
    }

    /// The summary as a scan of the table computes it.
    #[derive(Debug, PartialEq)]
    struct Recount {
        stages: Vec<usize>,
        failed: usize,
        stuck: usize,
        breakdowns: Vec<std::collections::BTreeMap<String, usize>>,
        timings: Vec<summary::Timings>,
    }

    fn recount(tracker: &NodeTracker, now: Instant) -> Recount {
        let mut stages = vec![0; summary::SLOTS];
        let mut breakdowns = vec![std::collections::BTreeMap::new(); 5];
        let mut timings = vec![summary::Timings::default(); Stage::ALL.len()];
        let (mut failed, mut stuck) = (0, 0);
        for node in tracker.nodes.values() {
            let keys = node.keys();
            // The stage from the marks themselves, not from the node's own record of it.
            let furthest = Stage::ALL
                .iter()
                .rev()
                .find(|s| node.stages[s.index()].is_some());
            assert_eq!(node.stage(), furthest.copied());
            stages[furthest.map_or(0, |s| s.index() + 1)] += 1;
            let rule = tracker.rules.name(keys.rule);
            for (i, key) in [keys.arch, keys.firmware, keys.interface, rule]
                .into_iter()
                .enumerate()
            {
                *breakdowns[i].entry(key.to_owned()).or_insert(0) += 1;
            }
            if let Some(reason) = keys.failure {
                failed += 1;
                *breakdowns[4].entry(reason.to_owned()).or_insert(0) += 1;
            }
            stuck += usize::from(node.stuck(now));
            for stage in &Stage::ALL[1..] {
                if let Some(mark) = node.stages[stage.index()] {
                    timings[stage.index()]
                        .add(mark.at.saturating_duration_since(node.boot_started));
                }
            }
        }
        Recount {
            stages,
            failed,
            stuck,
            breakdowns,
            timings,
        }
    }

    /// The summary the tracker kept, in [`Recount`]'s terms.
    fn kept(tracker: &mut NodeTracker, now: Instant) -> Recount {
        let view = tracker.summary(now, SystemTime::now());
        let map = |named: &summary::Named<usize>| {
            named
                .0
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        Recount {
            stages: view.stages.0.iter().map(|(_, n)| *n).collect(),
            failed: view.failed,
            stuck: view.stuck,
            breakdowns: vec![
                map(&view.arch),
                map(&view.firmware),
                map(&view.interface),
                map(&view.rule),
                map(&view.failures),
            ],
            timings: Stage::ALL
                .iter()
                .map(|s| tracker.summary.timings(*s).clone())
                .collect(),
        }
    }

    /// One event of a random history.
    #[derive(Debug, Clone)]
    enum Step {
        Dhcp {
            mac: u8,
            firmware: u8,
            answer: u8,
            rule: u8,
            interface: u8,
            address: Option<u8>,
        },
        Fetch {
            client: u8,
            what: u8,
            mac: u8,
            ok: bool,
            neighbour: Option<u8>,
        },
        Wait(u16),
        Look,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..6u8, 0..4u8, 0..4u8, 0..3u8, 0..2u8, proptest::option::of(0..4u8)).prop_map(
                |(mac, firmware, answer, rule, interface, address)| Step::Dhcp {
                    mac, firmware, answer, rule, interface, address,
                }
            ),
            4 => (0..4u8, 0..6u8, 0..6u8, any::<bool>(), proptest::option::of(0..6u8)).prop_map(
                |(client, what, mac, ok, neighbour)| Step::Fetch { client, what, mac, ok, neighbour }
            ),
            2 => (0..400u16).prop_map(Step::Wait),
            1 => Just(Step::Look),
        ]
    }

    proptest::proptest! {
        /// Whatever happens, in whatever order, the counts kept event by event are the counts
        /// a scan of the table finds, and the stages add up to the nodes.
        #[test]
        fn the_summary_kept_by_events_equals_a_recount(steps in proptest::collection::vec(step(), 1..120)) {
            let limits = Limits { max_nodes: 4, ttl: Duration::from_secs(900) };
            let mut tracker = NodeTracker::new(limits);
            let mut now = Instant::now();
            let mac = |i: u8| [2, 0, 0, 0, 0, i];
            let ip = |i: u8| Ipv4Addr::new(198, 18, 0, 10 + i);
            for step in steps {
                match step {
                    Step::Dhcp { mac: m, firmware, answer, rule, interface, address } => {
                        let firmware = [Firmware::BiosPxe, Firmware::UefiPxe, Firmware::UefiHttp, Firmware::Ipxe][usize::from(firmware)];
                        let answer = match answer {
                            0 | 1 => DhcpAnswer::Answered { reply: "proxy_offer", file: "undionly.kpxe" },
                            2 => DhcpAnswer::NotAnswered { reason: "loader_missing", error: true },
                            _ => DhcpAnswer::NotAnswered { reason: "silent", error: false },
                        };
                        let seen = DhcpSeen {
                            mac: mac(m),
                            uuid: None,
                            arch: [Some(ClientArch::Bios), Some(ClientArch::UefiX64), None][usize::from(m % 3)],
                            firmware,
                            interface: ["eth0", "eth1"][usize::from(interface)],
                            address: address.map(ip),
                            rule: [Some("bios"), Some("uefi"), None][usize::from(rule)],
                            answer,
                        };
                        tracker.dhcp(now, &seen);
                    }
                    Step::Fetch { client, what, mac: m, ok, neighbour } => {
                        let what = [
                            Fetched::Loader("undionly.kpxe"),
                            Fetched::Script(mac(m)),
                            Fetched::Kernel,
                            Fetched::Initrd,
                            Fetched::Overlay(mac(m)),
                            Fetched::Other("/x"),
                        ][usize::from(what)];
                        let fetch = Fetch {
                            ok,
                            error: (!ok).then(|| "404 Not Found".to_owned()),
                            ..fetched(ip(client), what)
                        };
                        tracker.fetch(now, &fetch, neighbour.map(mac));
                    }
                    Step::Wait(secs) => now += Duration::from_secs(u64::from(secs)),
                    Step::Look => {
                        tracker.summary(now, SystemTime::now());
                    }
                }
                let kept = kept(&mut tracker, now);
                proptest::prop_assert_eq!(&kept, &recount(&tracker, now));
                proptest::prop_assert_eq!(kept.stages.iter().sum::<usize>(), tracker.len());
            }
        }
    }

    #[test]
    fn the_summary_counts_nodes_by_stage_arch_rule_and_failure() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(t0, &offer(A, Firmware::BiosPxe, "undionly.kpxe"));
        let tftp = Fetch {
            protocol: "tftp",
            ..fetched(IP_A, Fetched::Loader("undionly.kpxe"))
        };
        tracker.fetch(t0 + Duration::from_millis(400), &tftp, Some(A));
        let missing = DhcpSeen {
            arch: Some(ClientArch::UefiArm64),
            rule: Some("arm"),
            answer: DhcpAnswer::NotAnswered {
                reason: "loader_missing",
                error: true,
            },
            ..offer(B, Firmware::UefiPxe, "")
        };
        tracker.dhcp(t0, &missing);
        let view = tracker.summary(t0 + Duration::from_secs(1), SystemTime::now());
        assert_eq!(view.total, 2);
        assert_eq!(view.stages.get(UNANSWERED), Some(&1));
        assert_eq!(view.stages.get("loader"), Some(&1));
        assert_eq!(view.failed, 1);
        assert_eq!(view.failures.get("loader_missing"), Some(&1));
        assert_eq!(view.arch.get("bios"), Some(&1));
        assert_eq!(view.arch.get("uefi-arm64"), Some(&1));
        assert_eq!(view.rule.get("default"), Some(&1));
        assert_eq!(view.rule.get("arm"), Some(&1));
        assert_eq!(view.interface.get("eth0"), Some(&2));
        let loader = view.time_to_stage.get("loader").unwrap();
        assert_eq!(loader.count, 1);
        let p50 = loader.p50_ms.unwrap();
        assert!((400..=480).contains(&p50), "{p50}");
        assert_eq!(view.time_to_stage.get("overlay").unwrap().p50_ms, None);
        // The history so far: seconds 0 and 1.
        assert_eq!(view.history.completed.len(), 2);
        assert_eq!(view.history.stages.get("loader").unwrap(), &[1, 1]);
    }

    #[test]
    fn a_node_silent_short_of_its_overlay_is_stuck_until_it_is_heard_again() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(t0, &offer(A, Firmware::Ipxe, "http://x/boot.ipxe"));
        tracker.dhcp(t0, &offer(B, Firmware::Ipxe, "http://x/boot.ipxe"));
        tracker.fetch(t0, &fetched(IP_B, Fetched::Script(B)), NO_NEIGHBOUR);
        tracker.fetch(t0, &fetched(IP_B, Fetched::Overlay(B)), NO_NEIGHBOUR);
        let later = t0 + STUCK_AFTER;
        let view = tracker.summary(later, SystemTime::now());
        assert_eq!(view.stuck, 1, "A is stuck; B finished its boot");
        let stuck = tracker.view(
            later,
            SystemTime::now(),
            &TableQuery {
                state: Some(NodeState::Stuck),
                ..all()
            },
        );
        assert_eq!(stuck.matched, 1);
        assert_eq!(stuck.nodes[0].mac, "52:54:00:00:00:0a");
        assert!(stuck.nodes[0].stuck);
        tracker.dhcp(later, &offer(A, Firmware::Ipxe, "http://x/boot.ipxe"));
        assert_eq!(tracker.summary(later, SystemTime::now()).stuck, 0);
    }

    #[test]
    fn the_table_is_served_a_filtered_sorted_page_at_a_time() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(Limits {
            max_nodes: 100,
            ..LIMITS
        });
        let mac = |i: u8| [2, 0, 0, 0, 0, i];
        for i in 0..30u8 {
            let at = t0 + Duration::from_secs(u64::from(i));
            tracker.dhcp(at, &offer(mac(i), Firmware::Ipxe, "http://x/boot.ipxe"));
            if i % 3 == 0 {
                let ip = Ipv4Addr::new(198, 18, 1, i);
                tracker.fetch(at, &fetched(ip, Fetched::Script(mac(i))), NO_NEIGHBOUR);
            }
            if i == 9 {
                let failed = Fetch {
                    ok: false,
                    error: Some("404 Not Found".into()),
                    ..fetched(Ipv4Addr::new(198, 18, 1, i), Fetched::Kernel)
                };
                tracker.fetch(at, &failed, NO_NEIGHBOUR);
            }
        }
        let now = t0 + Duration::from_secs(30);
        let mut query = |q: TableQuery| tracker.view(now, SystemTime::now(), &q);
        let scripts = query(TableQuery {
            stage: Some(Some(Stage::Script)),
            limit: 4,
            offset: 4,
            ..TableQuery::default()
        });
        assert_eq!(
            (scripts.total, scripts.matched, scripts.nodes.len()),
            (30, 10, 4)
        );
        let macs: Vec<&str> = scripts.nodes.iter().map(|n| n.mac.as_str()).collect();
        // Most recent first: 27, 24, 21, 18 | 15, 12, 9, 6 | 3, 0.
        assert_eq!(
            macs,
            [
                "02:00:00:00:00:0f",
                "02:00:00:00:00:0c",
                "02:00:00:00:00:09",
                "02:00:00:00:00:06"
            ]
        );
        let attention = query(TableQuery {
            sort: Sort::Attention,
            limit: 2,
            ..TableQuery::default()
        });
        assert_eq!(
            attention.nodes[0].mac, "02:00:00:00:00:09",
            "the failed node first"
        );
        assert_eq!(attention.nodes[0].failure, Some("http_kernel"));
        assert_eq!(
            attention.nodes[1].mac, "02:00:00:00:00:00",
            "then the longest silent"
        );
        let found = query(TableQuery {
            text: Some("02:00:00:00:00:1D".into()),
            ..TableQuery::default()
        });
        assert_eq!(found.matched, 1);
        let by_mac = query(TableQuery {
            sort: Sort::Mac,
            offset: 28,
            ..TableQuery::default()
        });
        assert_eq!(by_mac.nodes.len(), 2);
        assert_eq!(by_mac.nodes[1].mac, "02:00:00:00:00:1d");
        let failed = query(TableQuery {
            reason: Some("http_kernel".into()),
            ..TableQuery::default()
        });
        assert_eq!(failed.matched, 1);
    }

    #[test]
    fn a_query_names_its_filters_or_is_refused() {
        let mut query = TableQuery::default();
        query.set("stage", "unanswered").unwrap();
        assert_eq!(query.stage, Some(None));
        query.set("stage", "kernel").unwrap();
        assert_eq!(query.stage, Some(Some(Stage::Kernel)));
        query.set("sort", "attention").unwrap();
        query.set("limit", "1000000").unwrap();
        assert_eq!(query.limit, MAX_PAGE_ROWS);
        assert!(matches!(
            query.set("stage", "booted"),
            Err(QueryError::BadValue { key: "stage", .. })
        ));
        assert!(matches!(
            query.set("limt", "5"),
            Err(QueryError::UnknownParameter(_))
        ));
    }

    #[test]
    fn the_least_recently_seen_node_goes_first_and_the_table_keeps_its_bound() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut tracker = NodeTracker::new(LIMITS);
        let macs: Vec<[u8; 6]> = (1..=6).map(|i| [0x52, 0x54, 0, 0, 1, i]).collect();
        for (i, mac) in macs[..4].iter().enumerate() {
            tracker.dhcp(
                at(i as u64),
                &offer(*mac, Firmware::BiosPxe, "undionly.kpxe"),
            );
        }
        // The oldest (1) is seen again: 2 is now the least recently seen, and goes first.
        tracker.dhcp(at(10), &offer(macs[0], Firmware::BiosPxe, "undionly.kpxe"));
        tracker.dhcp(at(11), &offer(macs[4], Firmware::BiosPxe, "undionly.kpxe"));
        tracker.dhcp(at(12), &offer(macs[5], Firmware::BiosPxe, "undionly.kpxe"));
        let order = |tracker: &mut NodeTracker, now| -> Vec<String> {
            tracker
                .view(now, SystemTime::now(), &TableQuery::default())
                .nodes
                .into_iter()
                .map(|n| n.mac)
                .collect()
        };
        let text = |i: usize| MacDisplay(&macs[i]).to_string();
        assert_eq!(
            order(&mut tracker, at(12)),
            [text(5), text(4), text(0), text(3)]
        );
        // Past the TTL of node 3 only the nodes seen since stay; the oldest went first.
        let later = at(3) + LIMITS.ttl + Duration::from_secs(1);
        assert_eq!(order(&mut tracker, later), [text(5), text(4), text(0)]);
    }
}
