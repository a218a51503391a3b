//! A client's MAC from the kernel's neighbour (ARP) table, asked through rtnetlink for the one
//! address: the route to the client names the interface (RTM_GETROUTE, as `ip route get`),
//! then the kernel's entry for the client on that interface (RTM_GETNEIGH for one address, as
//! `ip neigh get ADDR dev DEV`; Linux answers it since 5.0, and only with an interface: without
//! one it refuses with EINVAL). A client behind a router has a route through a gateway and no
//! entry of its own: no MAC.
//!
//! Only an entry the kernel itself would send to counts (`NUD_VALID` in
//! `include/net/neighbour.h`: reachable, stale, delay, probe, permanent, noarp), which is what
//! `/proc/net/arp` marks complete (ATF_COM); an incomplete or failed entry, or one without a
//! 6-byte link-layer address, names nobody.
//!
//! [`Neighbours`] remembers answers for a few seconds: a boot storm's many fetches from one
//! client cost one lookup per client, not one per request.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::netlink::{Message, NetlinkError, Request, RequestSocket, ne_u16, ne_u32};

/// Addresses the cache holds; past it the oldest answer goes. A rack booting at once is a few
/// hundred to a few thousand clients.
pub const CACHE_ENTRIES: usize = 4096;
/// How long a MAC found is trusted: entries change only when a machine is replaced or an
/// address moves, and the node tracker takes a neighbour's word only for a node it tracks.
pub const FOUND_TTL: Duration = Duration::from_secs(5);
/// How long "no entry" is trusted: shorter, because a client that has just started talking
/// gets its entry as soon as the kernel first answers it.
pub const MISSING_TTL: Duration = Duration::from_secs(1);

/// `struct ndmsg`: family, two pad bytes, ifindex, state, flags, type.
const NDMSG_LEN: usize = 12;
/// `struct rtmsg`: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
const RTMSG_LEN: usize = 12;
/// States of an entry the kernel sends to (`NUD_VALID`, include/net/neighbour.h).
const NUD_VALID: u16 = libc::NUD_PERMANENT
    | libc::NUD_NOARP
    | libc::NUD_REACHABLE
    | libc::NUD_PROBE
    | libc::NUD_STALE
    | libc::NUD_DELAY;

/// The MAC of the kernel's complete neighbour entry for `ip`, asked now (no cache).
pub fn lookup(ip: Ipv4Addr) -> Result<Option<[u8; 6]>, NetlinkError> {
    let mut socket = RequestSocket::open()?;
    let ifindex = match socket.ask(route_request(ip)) {
        Ok(answer) => on_link_interface(&answer)?,
        // No route: nothing on our links has this address.
        Err(NetlinkError::Refused(Errno::ENETUNREACH | Errno::EHOSTUNREACH)) => None,
        Err(e) => return Err(e),
    };
    let Some(ifindex) = ifindex else {
        return Ok(None);
    };
    match socket.ask(neighbour_request(ip, ifindex)) {
        Ok(answer) => Ok(NeighbourEntry::parse(&answer)?.mac()),
        // ENOENT: no entry. ENODEV: the interface went away between the two questions.
        Err(NetlinkError::Refused(Errno::ENOENT | Errno::ENODEV)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The MAC of the kernel's complete neighbour entry for the IPv6 address `ip` on `ifindex`,
/// asked now: the client of a DHCPv6 request that came from an address whose interface
/// identifier names no MAC. The kernel makes a (stale) entry from the source link-layer
/// address of a client's neighbour solicitation (RFC 4861 §7.2.3), which a client that sent us
/// a unicast datagram has just sent.
pub fn lookup6(ip: std::net::Ipv6Addr, ifindex: u32) -> Result<Option<[u8; 6]>, NetlinkError> {
    let mut socket = RequestSocket::open()?;
    let mut ndmsg = [0u8; NDMSG_LEN];
    ndmsg[0] = libc::AF_INET6 as u8;
    ndmsg[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    let request = Request::get(libc::RTM_GETNEIGH, &ndmsg).attribute(libc::NDA_DST, &ip.octets());
    match socket.ask(request) {
        Ok(answer) => Ok(NeighbourEntry::parse(&answer)?.mac()),
        Err(NetlinkError::Refused(Errno::ENOENT | Errno::ENODEV)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The MAC of the kernel's complete neighbour entry for the IPv6 address `ip`, asked now: on
/// `scope` for a link-local address (its zone: the interface it was reached on), else on the
/// interface of the route to it when that route is on-link, as [`lookup`] does for IPv4. The
/// entry comes from neighbour discovery (RFC 4861), which a client that reached us by TCP has
/// just gone through.
pub fn lookup_v6(ip: std::net::Ipv6Addr, scope: u32) -> Result<Option<[u8; 6]>, NetlinkError> {
    if ip.is_unicast_link_local() {
        return match scope {
            0 => Ok(None),
            ifindex => lookup6(ip, ifindex),
        };
    }
    let mut socket = RequestSocket::open()?;
    let mut rtmsg = [0u8; RTMSG_LEN];
    rtmsg[0] = libc::AF_INET6 as u8;
    rtmsg[1] = 128; // dst_len: the one address
    let route = Request::get(libc::RTM_GETROUTE, &rtmsg).attribute(libc::RTA_DST, &ip.octets());
    let ifindex = match socket.ask(route) {
        Ok(answer) => on_link_interface(&answer)?,
        Err(NetlinkError::Refused(Errno::ENETUNREACH | Errno::EHOSTUNREACH)) => None,
        Err(e) => return Err(e),
    };
    match ifindex {
        Some(ifindex) => lookup6(ip, ifindex),
        None => Ok(None),
    }
}

/// `ip route get IP`: an RTM_GETROUTE for the host route to `ip`.
fn route_request(ip: Ipv4Addr) -> Request {
    let mut rtmsg = [0u8; RTMSG_LEN];
    rtmsg[0] = libc::AF_INET as u8;
    rtmsg[1] = 32; // dst_len: the one address
    Request::get(libc::RTM_GETROUTE, &rtmsg).attribute(libc::RTA_DST, &ip.octets())
}

/// `ip neigh get IP dev IFINDEX`: an RTM_GETNEIGH for one entry. The kernel refuses any state,
/// flag or type in the request header (net/core/neighbour.c, `neigh_valid_get_req`).
fn neighbour_request(ip: Ipv4Addr, ifindex: u32) -> Request {
    let mut ndmsg = [0u8; NDMSG_LEN];
    ndmsg[0] = libc::AF_INET as u8;
    ndmsg[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    Request::get(libc::RTM_GETNEIGH, &ndmsg).attribute(libc::NDA_DST, &ip.octets())
}

/// The interface of a route (an RTM_NEWROUTE answer) when it reaches the address directly:
/// `None` for a route through a gateway, whose neighbour entry is the gateway's.
fn on_link_interface(answer: &Message<'_>) -> Result<Option<u32>, NetlinkError> {
    if answer.kind != libc::RTM_NEWROUTE {
        return Err(NetlinkError::Malformed(
            "a route question answered with another",
        ));
    }
    let attributes = answer
        .attributes(RTMSG_LEN)
        .ok_or(NetlinkError::Malformed("a route without its rtmsg"))?;
    let mut oif = None;
    for attribute in attributes {
        match attribute? {
            (libc::RTA_GATEWAY, _) => return Ok(None),
            (libc::RTA_OIF, payload) => oif = ne_u32(payload),
            _ => {}
        }
    }
    Ok(oif)
}

/// One entry of the kernel's neighbour table, from an RTM_NEWNEIGH message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourEntry {
    pub ifindex: u32,
    /// `NUD_*` bits.
    pub state: u16,
    pub address: Option<Ipv4Addr>,
    /// NDA_LLADDR when it is 6 bytes long (Ethernet).
    pub lladdr: Option<[u8; 6]>,
}

impl NeighbourEntry {
    pub fn parse(message: &Message<'_>) -> Result<NeighbourEntry, NetlinkError> {
        if message.kind != libc::RTM_NEWNEIGH {
            return Err(NetlinkError::Malformed(
                "a neighbour question answered with another",
            ));
        }
        let header = message.payload;
        if !matches!(
            header.first().map(|&f| i32::from(f)),
            Some(libc::AF_INET | libc::AF_INET6)
        ) {
            return Err(NetlinkError::Malformed("a neighbour entry not for IP"));
        }
        let (Some(ifindex), Some(state), Some(attributes)) = (
            header.get(4..).and_then(ne_u32),
            header.get(8..).and_then(ne_u16),
            message.attributes(NDMSG_LEN),
        ) else {
            return Err(NetlinkError::Malformed(
                "a neighbour entry without its ndmsg",
            ));
        };
        let mut entry = NeighbourEntry {
            ifindex,
            state,
            address: None,
            lladdr: None,
        };
        for attribute in attributes {
            match attribute? {
                (libc::NDA_DST, payload) => {
                    entry.address = <[u8; 4]>::try_from(payload).ok().map(Ipv4Addr::from);
                }
                (libc::NDA_LLADDR, payload) => entry.lladdr = payload.try_into().ok(),
                _ => {}
            }
        }
        Ok(entry)
    }

    /// The MAC, for a complete entry only.
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.lladdr
            .filter(|mac| self.state & NUD_VALID != 0 && *mac != [0; 6])
    }
}

/// Answers remembered per client address: found for [`FOUND_TTL`], missing for
/// [`MISSING_TTL`], at most [`CACHE_ENTRIES`] of them (the oldest answer goes first).
#[derive(Debug, Default)]
pub struct NeighbourCache {
    entries: HashMap<Ipv4Addr, Cached>,
    /// Insertion order, for eviction at the bound.
    order: BTreeMap<u64, Ipv4Addr>,
    next_seq: u64,
}

#[derive(Debug)]
struct Cached {
    mac: Option<[u8; 6]>,
    expires: Instant,
    seq: u64,
}

impl NeighbourCache {
    /// The remembered answer for `ip`, if one is still fresh at `now`.
    pub fn get(&self, ip: Ipv4Addr, now: Instant) -> Option<Option<[u8; 6]>> {
        self.entries
            .get(&ip)
            .filter(|cached| now < cached.expires)
            .map(|cached| cached.mac)
    }

    pub fn insert(&mut self, ip: Ipv4Addr, mac: Option<[u8; 6]>, now: Instant) {
        if let Some(old) = self.entries.remove(&ip) {
            self.order.remove(&old.seq);
        }
        while self.entries.len() >= CACHE_ENTRIES {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let ttl = if mac.is_some() {
            FOUND_TTL
        } else {
            MISSING_TTL
        };
        self.entries.insert(
            ip,
            Cached {
                mac,
                expires: now + ttl,
                seq,
            },
        );
        self.order.insert(seq, ip);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The kernel's neighbour table as the node tracker reads it: [`lookup`] behind a
/// [`NeighbourCache`]. The cache's lock is never held across a lookup: two callers missing
/// the same address both ask the kernel, and neither waits for the other.
#[derive(Debug, Default)]
pub struct Neighbours {
    cache: Mutex<NeighbourCache>,
}

impl Neighbours {
    /// The MAC of the complete neighbour entry for `ip`, at most [`FOUND_TTL`] old. A failed
    /// lookup counts as no entry (remembered for [`MISSING_TTL`]).
    pub fn mac(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        if let Some(answer) = self.cache().get(ip, Instant::now()) {
            return answer;
        }
        let answer = lookup(ip).unwrap_or_else(|e| {
            tracing::debug!(client = %ip, error = %e, "neighbour lookup failed");
            None
        });
        self.cache().insert(ip, answer, Instant::now());
        answer
    }

    fn cache(&self) -> MutexGuard<'_, NeighbourCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::thread;

    use proptest::prelude::*;

    use super::super::netlink::Messages;
    use super::*;

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
            .collect()
    }

    fn message(bytes: &[u8]) -> Message<'_> {
        Messages::new(bytes).next().unwrap().unwrap()
    }

    // The kernel's answers (Linux 6.18, x86_64: host byte order is little-endian), captured in
    // a namespace set up as in `the_kernel_names_complete_neighbours_only`, with veth `v0`
    // (ifindex 3) at 198.18.0.1/24 and the route 198.18.1.0/24 via 198.18.0.9.
    /// 198.18.0.9 lladdr 02:00:00:00:00:09 PERMANENT.
    const PERMANENT: &str = "4c0000001c000000030000005f7b000002000000030000008000000108000100c61200090a000200020000000009000008000400000000001400030011000000110000001100000001000000";
    /// 198.18.0.12 lladdr 02:00:00:00:00:0c STALE.
    const STALE: &str = "4c0000001c000000030000005f7b000002000000030000000400000108000100c612000c0a00020002000000000c000008000400000000001400030080170000100000001000000001000000";
    /// 198.18.0.11 INCOMPLETE (no lladdr).
    const INCOMPLETE: &str = "400000001c000000030000005f7b000002000000030000000100000108000100c612000b08000400000000001400030081170000110000001100000001000000";
    /// 198.18.0.14 FAILED.
    const FAILED: &str = "400000001c000000030000005f7b000002000000030000002000000108000100c612000e0800040000000000140003007f1700000f0000000f00000001000000";
    /// `ip route get 198.18.0.9`: dev v0.
    const ROUTE_ON_LINK: &str = "6800000018000000010000005f7b000002200000fe0000010002000008000f00fe00000008000100c6120009080004000300000008000700c6120001080019000000000024000c000200000000000000000000000000000000000000000000000000000000000000";
    /// `ip route get 198.18.1.5`: via 198.18.0.9 dev v0.
    const ROUTE_VIA_GATEWAY: &str = "7000000018000000020000005f7b000002200000fe0000010002000008000f00fe00000008000100c6120105080004000300000008000700c612000108000500c6120009080019000000000024000c000200000000000000000000000000000000000000000000000000000000000000";

    #[test]
    #[cfg(target_endian = "little")]
    fn a_captured_permanent_entry_names_its_mac() {
        let bytes = unhex(PERMANENT);
        let entry = NeighbourEntry::parse(&message(&bytes)).unwrap();
        assert_eq!(
            entry,
            NeighbourEntry {
                ifindex: 3,
                state: libc::NUD_PERMANENT,
                address: Some(Ipv4Addr::new(198, 18, 0, 9)),
                lladdr: Some([2, 0, 0, 0, 0, 9]),
            }
        );
        assert_eq!(entry.mac(), Some([2, 0, 0, 0, 0, 9]));
        let bytes = unhex(STALE);
        let stale = NeighbourEntry::parse(&message(&bytes)).unwrap();
        assert_eq!(stale.mac(), Some([2, 0, 0, 0, 0, 0xc]));
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn captured_incomplete_and_failed_entries_name_no_mac() {
        for (name, hex) in [("incomplete", INCOMPLETE), ("failed", FAILED)] {
            let bytes = unhex(hex);
            let entry = NeighbourEntry::parse(&message(&bytes)).unwrap();
            assert_eq!(entry.mac(), None, "{name}");
        }
        // A failed entry can keep the address it had (as /proc/net/arp shows with flags 0x0).
        let failed = NeighbourEntry {
            lladdr: Some([2, 0, 0, 0, 0, 0xe]),
            ..NeighbourEntry::parse(&message(&unhex(FAILED))).unwrap()
        };
        assert_eq!(failed.mac(), None);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_captured_route_names_the_interface_only_when_the_client_is_on_link() {
        let bytes = unhex(ROUTE_ON_LINK);
        assert_eq!(on_link_interface(&message(&bytes)).unwrap(), Some(3));
        let bytes = unhex(ROUTE_VIA_GATEWAY);
        assert_eq!(on_link_interface(&message(&bytes)).unwrap(), None);
        // A neighbour entry is not a route.
        let bytes = unhex(PERMANENT);
        assert!(on_link_interface(&message(&bytes)).is_err());
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn requests_are_the_ones_the_kernel_answered_above() {
        assert_eq!(
            route_request(Ipv4Addr::new(198, 18, 0, 9))
                .with_seq(1)
                .as_bytes(),
            unhex("240000001a000100010000000000000002200000000000000000000008000100c6120009")
        );
        assert_eq!(
            neighbour_request(Ipv4Addr::new(198, 18, 0, 9), 3)
                .with_seq(3)
                .as_bytes(),
            unhex("240000001e000100030000000000000002000000030000000000000008000100c6120009")
        );
    }

    proptest! {
        #[test]
        fn parsing_any_datagram_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for message in Messages::new(&bytes).flatten() {
                let _ = NeighbourEntry::parse(&message);
                let _ = on_link_interface(&message);
            }
        }
    }

    #[test]
    fn answers_are_remembered_for_their_ttl() {
        let t0 = Instant::now();
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 11));
        let mac = [0x52, 0x54, 0, 0, 0, 0xa];
        let mut cache = NeighbourCache::default();
        assert_eq!(cache.get(a, t0), None);
        cache.insert(a, Some(mac), t0);
        cache.insert(b, None, t0);
        let just_before = |ttl| t0 + ttl - Duration::from_millis(1);
        assert_eq!(cache.get(a, just_before(FOUND_TTL)), Some(Some(mac)));
        assert_eq!(cache.get(a, t0 + FOUND_TTL), None);
        assert_eq!(cache.get(b, just_before(MISSING_TTL)), Some(None));
        assert_eq!(cache.get(b, t0 + MISSING_TTL), None);
        // A new answer replaces the old one and its time.
        cache.insert(b, Some(mac), t0 + MISSING_TTL);
        assert_eq!(cache.get(b, t0 + FOUND_TTL), Some(Some(mac)));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_cache_forgets_its_oldest_answers_at_its_bound() {
        let t0 = Instant::now();
        let address = |i: usize| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i as u32);
        let mut cache = NeighbourCache::default();
        for i in 0..CACHE_ENTRIES {
            cache.insert(address(i), None, t0);
        }
        // Answering an address again does not grow the cache.
        cache.insert(address(0), Some([2; 6]), t0);
        assert_eq!(cache.len(), CACHE_ENTRIES);
        cache.insert(address(CACHE_ENTRIES), None, t0);
        assert_eq!(cache.len(), CACHE_ENTRIES);
        // Address 1 was the oldest answer left; 0 was answered again just before.
        assert_eq!(cache.get(address(1), t0), None);
        assert_eq!(cache.get(address(0), t0), Some(Some([2; 6])));
        assert_eq!(cache.get(address(CACHE_ENTRIES), t0), Some(None));
    }

    /// Runs `f` on a thread of its own inside a new network namespace. The namespace, and the
    /// interfaces made in it, go away with the thread: nothing is left to clean up. Without
    /// the privilege to make one, an unprivileged run outside CI skips (saying so); as root or
    /// under `CI=true` the test fails.
    fn in_fresh_netns(f: impl FnOnce() + Send + 'static) {
        let test = thread::current().name().unwrap_or("this test").to_owned();
        let must_run = nix::unistd::Uid::effective().is_root()
            || std::env::var("CI").is_ok_and(|ci| ci == "true");
        let outcome = thread::Builder::new()
            .name(test.clone())
            .spawn(move || {
                if let Err(err) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                    assert!(
                        !must_run,
                        "{test}: cannot create a network namespace: {err}"
                    );
                    eprintln!("skipping {test}: cannot create a network namespace: {err}");
                    return;
                }
                f();
            })
            .expect("spawning the namespace thread")
            .join();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Runs `ip ARGS` (iproute2): a child process runs in the namespace of the thread that
    /// starts it.
    fn ip(args: &str) {
        let output = Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .expect("running `ip` (iproute2)");
        assert!(
            output.status.success(),
            "ip {args}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn the_kernel_names_complete_neighbours_only() {
        in_fresh_netns(|| {
            ip("link add nb0 type veth peer name nb1");
            ip("link set nb0 up");
            ip("link set nb1 up");
            ip("addr add 198.18.0.1/24 dev nb0");
            ip("neigh add 198.18.0.9 lladdr 02:00:00:00:00:09 dev nb0 nud permanent");
            ip("neigh add 198.18.0.12 lladdr 02:00:00:00:00:0c dev nb0 nud stale");
            ip("neigh add 198.18.0.11 dev nb0 nud incomplete");
            ip("neigh add 198.18.0.14 dev nb0 nud failed");
            ip("route add 198.18.1.0/24 via 198.18.0.9");
            let host = |last| Ipv4Addr::new(198, 18, 0, last);
            assert_eq!(lookup(host(9)).unwrap(), Some([2, 0, 0, 0, 0, 9]));
            assert_eq!(lookup(host(12)).unwrap(), Some([2, 0, 0, 0, 0, 0xc]));
            assert_eq!(lookup(host(11)).unwrap(), None, "incomplete");
            assert_eq!(lookup(host(14)).unwrap(), None, "failed");
            assert_eq!(lookup(host(13)).unwrap(), None, "absent");
            // Behind the router 198.18.0.9: its entry is the router's, not the client's.
            assert_eq!(lookup(Ipv4Addr::new(198, 18, 1, 5)).unwrap(), None);
            // No route at all.
            assert_eq!(lookup(Ipv4Addr::new(198, 19, 0, 1)).unwrap(), None);

            // The cache answers from memory until FOUND_TTL: the kernel is asked once.
            let neighbours = Neighbours::default();
            assert_eq!(neighbours.mac(host(9)), Some([2, 0, 0, 0, 0, 9]));
            ip("neigh del 198.18.0.9 dev nb0");
            assert_eq!(lookup(host(9)).unwrap(), None);
            assert_eq!(neighbours.mac(host(9)), Some([2, 0, 0, 0, 0, 9]));
        });
    }
}
