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

/// The tables keyed by client MAC and address: their keys come off the network, so they are
/// hashed with a keyed hash (foldhash's random seed), but a far cheaper one than SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::dhcp::BootFile;
use crate::dhcp::classify::{BootProtocol, Client, ClientArch, MacDisplay, UuidDisplay};

/// How long after its offer a node may still be guessed as the one fetching the offered file.
pub const GUESS_WINDOW: Duration = Duration::from_secs(60);
/// A node silent for this long that asks for DHCP again is starting a new boot, whatever
/// stage it reached.
pub const BOOT_GAP: Duration = Duration::from_secs(300);
/// Characters kept of a last-error message or a last event.
const MAX_TEXT: usize = 200;
/// What [`NodeTracker::stage_counts`] calls nodes that reached no stage.
pub const UNANSWERED: &str = "unanswered";

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

    pub fn of(client: &Client) -> Firmware {
        if client.ipxe.is_some() {
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
    pub interface: &'a str,
    /// The client's own address, when the request shows it (see the module notes).
    pub address: Option<Ipv4Addr>,
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
    interface: String,
    address: Option<Ipv4Addr>,
    first_seen: Instant,
    last_seen: Instant,
    /// The neighbours of this node in the table's recency list (see [`NodeTracker::touch`]):
    /// the node seen next after it, and the one seen last before it.
    newer: Option<[u8; 6]>,
    older: Option<[u8; 6]>,
    boots: u32,
    boot_started: Instant,
    stages: [Option<Mark>; Stage::ALL.len()],
    /// The boot file of the last DHCP answer (shown with it), and when it was offered while
    /// the node still waits for it.
    answered_file: BootFile,
    offered: Option<Instant>,
    bytes: u64,
    last_event: Event,
    last_error: Option<(Instant, Event)>,
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
    fn new(mac: [u8; 6], interface: &str, now: Instant) -> Node {
        Node {
            mac,
            uuid: None,
            arch: None,
            firmware: None,
            ipxe: false,
            interface: interface.to_owned(),
            address: None,
            first_seen: now,
            last_seen: now,
            newer: None,
            older: None,
            boots: 1,
            boot_started: now,
            stages: [None; Stage::ALL.len()],
            answered_file: BootFile::new(),
            offered: None,
            bytes: 0,
            last_event: Event::None,
            last_error: None,
        }
    }

    fn stage(&self) -> Option<Stage> {
        Stage::ALL
            .iter()
            .rev()
            .copied()
            .find(|s| self.stages[s.index()].is_some())
    }

    fn new_boot(&mut self, now: Instant) {
        self.boots += 1;
        self.boot_started = now;
        self.stages = [None; Stage::ALL.len()];
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
    /// The ends of the recency list threaded through the nodes (`newer`/`older`): the oldest
    /// is the first to go. A list in the nodes themselves moves on each request without
    /// allocating, where an ordered map allocates as it splits.
    newest: Option<[u8; 6]>,
    oldest: Option<[u8; 6]>,
    by_address: HashMap<Ipv4Addr, [u8; 6]>,
    /// Bumped on every change, so watchers can tell when to redraw.
    version: u64,
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
            by_address: HashMap::default(),
            version: 0,
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
    /// those whose only requests went unanswered (under [`UNANSWERED`]).
    pub fn stage_counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts = [0; Stage::ALL.len() + 1];
        for node in self.nodes.values() {
            counts[node.stage().map_or(0, |s| s.index() + 1)] += 1;
        }
        std::iter::once(UNANSWERED)
            .chain(Stage::ALL.iter().map(|s| s.name()))
            .zip(counts)
            .collect()
    }

    /// A DHCP decision about a boot request from `seen.mac`.
    pub fn dhcp(&mut self, now: Instant, seen: &DhcpSeen<'_>) -> Update {
        self.expire(now);
        let node = self.touch(seen.mac, seen.interface, now);
        let reached_later = node.stage().is_some_and(|s| s > Stage::Dhcp);
        let restarted = reached_later
            && (now.saturating_duration_since(node.last_seen) >= BOOT_GAP
                // iPXE's own DHCP follows the loader; anything else asking again after the
                // loader, or anyone asking again after the script, is a new boot.
                || node.stage() >= Some(Stage::Script)
                || seen.firmware != Firmware::Ipxe);
        if restarted {
            node.new_boot(now);
        }
        node.last_seen = now;
        node.interface.clear();
        node.interface.push_str(seen.interface);
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
        let reached = match seen.answer {
            DhcpAnswer::Answered { reply, file } => {
                node.answered_file = BootFile::from(file);
                node.offered = Some(now);
                node.last_event = Event::Answered { reply };
                node.mark(Stage::Dhcp, now, 0, Duration::ZERO)
            }
            DhcpAnswer::NotAnswered { reason, error } => {
                let event = Event::NotAnswered { reason };
                if error {
                    node.last_error = Some((now, event.clone()));
                }
                node.last_event = event;
                None
            }
        };
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
        let node = self.touch(mac, "", now);
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
            None
        };
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
    /// made the most recently seen.
    fn touch(&mut self, mac: [u8; 6], interface: &str, now: Instant) -> &mut Node {
        if self.nodes.contains_key(&mac) {
            if self.newest != Some(mac) {
                self.unlink(mac);
                self.push_newest(mac);
            }
        } else {
            // One eviction makes room (the table grows by one at a time); the loop also copes
            // with a bound that shrank, and ends when the list does.
            while self.nodes.len() >= self.limits.max_nodes {
                let Some(oldest) = self.oldest.filter(|m| self.nodes.contains_key(m)) else {
                    break;
                };
                self.remove(oldest);
            }
            self.nodes
                .insert(mac, Box::new(Node::new(mac, interface, now)));
            self.push_newest(mac);
        }
        self.nodes
            .get_mut(&mac)
            .expect("the node was found or inserted just above")
    }

    /// Takes `mac` out of the recency list (it stays in the table).
    fn unlink(&mut self, mac: [u8; 6]) {
        let Some((newer, older)) = self.nodes.get(&mac).map(|n| (n.newer, n.older)) else {
            return;
        };
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
        if let Some(node) = self.nodes.remove(&mac)
            && let Some(address) = node.address
            && self.by_address.get(&address) == Some(&mac)
        {
            self.by_address.remove(&address);
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

    /// The table as the status page shows it: most recently seen first, at most `limit` rows.
    pub fn snapshot(&self, now: Instant, wall: SystemTime, limit: usize) -> NodesView {
        let unix_ms = |t: Instant| {
            let wall_t = wall
                .checked_sub(now.saturating_duration_since(t))
                .unwrap_or(UNIX_EPOCH);
            wall_t
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        let nodes = self
            .newest_first()
            .take(limit)
            .map(|node| NodeView {
                mac: MacDisplay(&node.mac).to_string(),
                uuid: node.uuid.as_ref().map(|u| UuidDisplay(u).to_string()),
                arch: node.arch.map(|a| a.to_string()),
                firmware: node.firmware,
                ipxe: node.ipxe,
                interface: node.interface.clone(),
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
            })
            .collect();
        NodesView {
            now_ms: unix_ms(now),
            total: self.nodes.len(),
            max_nodes: self.limits.max_nodes,
            ttl_secs: self.limits.ttl.as_secs(),
            stages: Stage::ALL,
            nodes,
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

/// `/api/nodes`: the table, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct NodesView {
    /// The server's clock, so a page can show ages without trusting its own.
    pub now_ms: u64,
    /// Nodes tracked (the rows below may be fewer).
    pub total: usize,
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

    fn row(tracker: &NodeTracker, now: Instant, mac: [u8; 6]) -> NodeView {
        let text = MacDisplay(&mac).to_string();
        tracker
            .snapshot(now, SystemTime::now(), usize::MAX)
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
        let node = row(&tracker, at(700), A);
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
        let node = row(&tracker, later, A);
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
        let node = row(&tracker, t0, A);
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
        let node = row(&tracker, t0, B);
        assert_eq!(node.stage, None);
        let counts = tracker.stage_counts();
        assert_eq!(counts[0], ("unanswered", 1));
        assert_eq!(counts[3], ("script", 1));
        assert_eq!(
            node.last_error.unwrap().message,
            "not answered: loader_missing"
        );
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
        let view = tracker.snapshot(t0 + Duration::from_secs(10), SystemTime::now(), 2);
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
        assert_eq!(row(&tracker, t0, A).ip, None);
        assert_eq!(row(&tracker, t0, B).ip.as_deref(), Some("198.18.0.10"));
        let update = tracker.fetch(t0, &fetched(IP_A, Fetched::Kernel), NO_NEIGHBOUR);
        assert_eq!(row(&tracker, t0, B).stage, Some(Stage::Kernel));
        assert_eq!(update.attribution, Attribution::Exact);
    }

    #[test]
    fn the_view_serializes_stages_by_name() {
        let t0 = Instant::now();
        let mut tracker = NodeTracker::new(LIMITS);
        tracker.dhcp(t0, &offer(A, Firmware::BiosPxe, "undionly.kpxe"));
        let json = serde_json::to_value(tracker.snapshot(t0, SystemTime::now(), 10)).unwrap();
        assert_eq!(json["stages"][0], "dhcp");
        assert_eq!(json["nodes"][0]["stage"], "dhcp");
        assert_eq!(json["nodes"][0]["firmware"], "bios-pxe");
        assert_eq!(json["nodes"][0]["mac"], "52:54:00:00:00:0a");
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
        let order: Vec<String> = tracker
            .snapshot(at(12), SystemTime::now(), usize::MAX)
            .nodes
            .into_iter()
            .map(|n| n.mac)
            .collect();
        let text = |i: usize| MacDisplay(&macs[i]).to_string();
        assert_eq!(order, [text(5), text(4), text(0), text(3)]);
        // Past the TTL only the nodes seen since stay, oldest dropped first.
        tracker.expire(at(3) + LIMITS.ttl + Duration::from_secs(1));
        let left: Vec<String> = tracker
            .snapshot(at(20), SystemTime::now(), usize::MAX)
            .nodes
            .into_iter()
            .map(|n| n.mac)
            .collect();
        assert_eq!(left, [text(5), text(4), text(0)]);
    }
}
