//! Types shared by the XDP program (`boot-ebpf`) and the daemon (`boot-user`).
//!
//! Everything here crosses the kernel boundary, so it is `#[repr(C)]` with explicit padding and
//! no pointers. Map and program names are constants so the two sides cannot drift apart
//! (`#[map(name = ...)]` in `boot-ebpf` takes only a literal, so boot-user's tests look every
//! map up by these constants).
//!
//! [`wire`] holds the packet formats both sides read (and the daemon writes): zero-copy views
//! and emitters into a caller's buffer, without allocation.
#![no_std]

use core::mem::size_of;

pub mod wire;

/// UDP port a DHCP server listens on (RFC 2131 §4.1).
pub const DHCP_SERVER_PORT: u16 = 67;
/// UDP port a DHCP client listens on (RFC 2131 §4.1).
pub const DHCP_CLIENT_PORT: u16 = 68;
/// PXE boot-server port (PXE 2.1 spec §2.2.1; iPXE `PXE_PORT`).
pub const PXE_SERVER_PORT: u16 = 4011;

/// Name of the XDP program in the object file and in the kernel. `aya-ebpf`'s `#[xdp]` names
/// the program after its function, so `boot-ebpf` defines `fn xdpboot`.
pub const PROGRAM_NAME: &str = "xdpboot";

// Map names. The kernel keeps the first 15 bytes of a map's name (`BPF_OBJ_NAME_LEN`), and
// `xdpboot stats` finds the counters of a running daemon by name, so each fits.

/// Per-CPU array of `u64` counters indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Array with one [`Config`], written by userspace.
pub const CONFIG_MAP: &str = "CONFIG";
/// Hash of [`MacKey`] → `u8` (value unused): MACs (chaddr) of known machines, never shed.
pub const INVENTORY_MAP: &str = "INVENTORY";
/// LRU hash of [`MacKey`] → [`TokenBucket`]: the flood limiter's state, one bucket per client
/// MAC (chaddr).
pub const SHED_BUCKETS_MAP: &str = "SHED_BUCKETS";
/// XSKMAP: rx queue → AF_XDP socket, for frames taken on 4011 (and on 67 in redirect mode).
pub const XSK_MAP: &str = "XSKS";
/// Ring buffer of [`TeeRecord`]s: the boot DISCOVERs copied on port 67.
pub const TEE_RING_MAP: &str = "TEED_FRAMES";

/// Ring buffer of [`TeeRecord`]s from inventory MACs (the machines the config names): kept
/// apart so a flood of made-up MACs that fills [`TEE_RING_MAP`] cannot crowd them out, and read
/// first by userspace.
pub const PRIORITY_RING_MAP: &str = "PRIORITY_FRAMES";
/// Size of [`PRIORITY_RING_MAP`]: about 80 records, a rack's worth of DISCOVERs between polls.
pub const PRIORITY_RING_BYTES: u32 = 1 << 17;

/// Entries of [`INVENTORY_MAP`]: machines userspace may list as never shed.
pub const INVENTORY_MAX_ENTRIES: u32 = 65_536;
/// Entries of [`SHED_BUCKETS_MAP`]. A flood of made-up MACs evicts the least recently seen
/// buckets, which start full again when their MAC comes back: the limiter forgets, it never
/// fills up.
pub const SHED_BUCKETS_MAX_ENTRIES: u32 = 16_384;
/// Slots of [`XSK_MAP`]: rx queues an interface may have sockets on. A frame on a higher queue
/// finds no socket and is counted [`Counter::NoSocket`].
pub const XSK_MAX_QUEUES: u32 = 256;
/// Size of [`TEE_RING_MAP`] in bytes (a power-of-two number of pages, as the kernel requires):
/// about 670 records of [`TeeRecord`] (plus the kernel's 8-byte record header each), room for a
/// boot storm between two polls of a userspace that wakes every few milliseconds.
pub const TEE_RING_BYTES: u32 = 1 << 20;
/// Bytes of a teed frame the record holds: a 1500-byte IP packet with an Ethernet header and
/// two VLAN tags (1522) fits. DHCP messages are far shorter (RFC 2131 §2: 576 unless option 57
/// says more).
pub const TEE_CAPTURE_LEN: usize = 1536;

/// What the XDP program decided about one frame. The discriminant is the index into
/// [`COUNTERS_MAP`].
///
/// Every frame moves exactly one verdict counter, except that a port-67 boot DISCOVER in
/// redirect mode that finds no AF_XDP socket moves [`Counter::NoSocket`] and then the counter
/// of the tee it falls back to.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Not UDP to port 67 or 4011 (or an IPv4 fragment, whose ports cannot be seen): passed to
    /// the kernel untouched.
    Passed = 0,
    /// DHCP to port 67 that is not a boot DISCOVER (a plain client, a boot client's REQUEST,
    /// or a BOOTREPLY to a relay agent): passed, the site DHCP server's business.
    DhcpPassed = 1,
    /// A boot DISCOVER to port 67, copied to userspace through [`TEE_RING_MAP`] and passed.
    Teed = 2,
    /// A boot DISCOVER to port 67 taken by the AF_XDP socket of its rx queue (redirect mode).
    Redirected = 3,
    /// A BOOTREQUEST to port 4011 taken by the AF_XDP socket of its rx queue.
    Taken = 4,
    /// A frame to take found no AF_XDP socket in its rx queue's slot: passed on 4011, teed
    /// instead on 67.
    NoSocket = 5,
    /// A boot request from a MAC over its rate: not handed to userspace. Passed on 67 (the site
    /// DHCP server's traffic is not ours to drop), dropped on 4011.
    Shed = 6,
    /// A frame to port 67 or 4011 that is not a sound BOOTP message: truncated (IP or UDP
    /// length beyond the frame), too short, a wrong op, a bad magic cookie, or an option
    /// running past the end. Passed on 67, dropped on 4011.
    Malformed = 7,
    /// A boot DISCOVER that could not be teed because the ring buffer had no room: passed, and
    /// userspace never saw it (the client retries).
    RingFull = 8,
}

impl Counter {
    /// Number of counters; the size of [`COUNTERS_MAP`].
    pub const COUNT: u32 = 9;
    /// Every counter in index order, for userspace readers.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Passed,
        Counter::DhcpPassed,
        Counter::Teed,
        Counter::Redirected,
        Counter::Taken,
        Counter::NoSocket,
        Counter::Shed,
        Counter::Malformed,
        Counter::RingFull,
    ];

    /// The counter's slot in [`COUNTERS_MAP`].
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Stable snake_case name, used by `xdpboot stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Passed => "passed",
            Counter::DhcpPassed => "dhcp_passed",
            Counter::Teed => "teed",
            Counter::Redirected => "redirected",
            Counter::Taken => "taken",
            Counter::NoSocket => "no_socket",
            Counter::Shed => "shed",
            Counter::Malformed => "malformed",
            Counter::RingFull => "ring_full",
        }
    }
}

// `ALL` must list the counters in index order: readers zip it with the map's slots.
const _: () = {
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i].index() as usize == i);
        i += 1;
    }
};

/// What happens to a boot DISCOVER on port 67 ([`Config::steer`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SteerMode {
    /// Copy the frame to userspace through [`TEE_RING_MAP`] and pass it on: the kernel and any
    /// DHCP server on the host still see it.
    #[default]
    Tee = 0,
    /// Take the frame with the rx queue's AF_XDP socket, for hosts where nothing else listens
    /// on port 67. Without a socket on the queue the frame is teed instead.
    Redirect = 1,
    /// Take the frame as [`SteerMode::Redirect`] does only when no socket of the host would
    /// receive it: the program asks the kernel's own UDP lookup (`bpf_sk_lookup_udp`, the
    /// frame's addresses and ports, the interface's namespace and device) and tees when a DHCP
    /// server is bound there, from the first frame after it binds. Tagged frames are always
    /// teed: a socket bound to the VLAN device cannot be looked up from its parent.
    Auto = 2,
}

/// [`Config::flags`] bit: submit ring-buffer records with the kernel's default notification
/// (a wakeup when userspace has caught up) instead of `BPF_RB_NO_WAKEUP`. A wakeup costs 2–3 µs
/// per record; without it userspace must poll the ring on a timer.
pub const CONFIG_FLAG_WAKEUP: u32 = 1 << 0;

/// [`Config::flags`] bit: steer DHCPv6 too (`[ipv6] enabled`): boot Solicits, Requests and
/// Information-requests to port 547 teed, messages to port 4011 over IPv6 taken. Off, every
/// IPv6 frame is passed untouched.
pub const CONFIG_FLAG_IPV6: u32 = 1 << 1;

/// The program's settings: the single entry of [`CONFIG_MAP`]. All zeroes (the state before
/// userspace writes it) means tee, no wakeups, no shedding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// A [`SteerMode`] discriminant; anything else is treated as [`SteerMode::Tee`].
    pub steer: u32,
    /// `CONFIG_FLAG_*` bits.
    pub flags: u32,
    /// Boot requests per second each MAC may send on average; 0 disables shedding.
    pub shed_rate: u32,
    /// Boot requests a MAC may send back to back (the bucket's size); at least 1 when
    /// `shed_rate` is set (0 is read as 1).
    pub shed_burst: u32,
}

/// A MAC address as a map key, padded to 8 bytes. The padding is part of the key the kernel
/// hashes, so it must be zero: build keys with [`MacKey::new`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl MacKey {
    pub const fn new(mac: [u8; 6]) -> Self {
        Self { mac, _pad: [0; 2] }
    }
}

/// A MAC's flood limiter, in [`SHED_BUCKETS_MAP`]. The bucket holds time, not tokens: one boot
/// request costs `1 s / shed_rate` of credit, credit grows with elapsed time, and it is capped
/// at `shed_burst` requests' worth. That is a token bucket without a division per refill.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Credit in nanoseconds at `updated_ns`.
    pub credit_ns: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last update.
    pub updated_ns: u64,
}

/// Metadata of a teed frame: the start of every [`TeeRecord`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TeeHeader {
    /// Length of the frame as received (`bpf_xdp_get_buff_len`), which may exceed
    /// `captured_len`.
    pub packet_len: u32,
    /// Bytes of the frame in [`TeeRecord::frame`], from its start; at most [`TEE_CAPTURE_LEN`].
    /// The rest of the array holds stale bytes of earlier records.
    pub captured_len: u32,
    /// The interface the frame arrived on.
    pub ifindex: u32,
    /// The rx queue it arrived on.
    pub rx_queue: u32,
    /// VLAN ids (the low 12 bits of each tag's TCI), outermost first; only the first
    /// `vlan_tags` are meaningful. Tags the NIC stripped (rx VLAN offload) are not seen by XDP.
    pub vlan_ids: [u16; 2],
    /// Number of 802.1Q/802.1ad tags in front of the IPv4 header: 0, 1 or 2.
    pub vlan_tags: u8,
    pub _pad: [u8; 3],
}

impl TeeHeader {
    /// The VLAN the client is on: the innermost tag's id, if the frame was tagged.
    pub fn vlan_id(&self) -> Option<u16> {
        let tags = usize::from(self.vlan_tags).min(self.vlan_ids.len());
        tags.checked_sub(1)
            .map(|innermost| self.vlan_ids[innermost])
    }
}

/// One record of [`TEE_RING_MAP`]. Fixed-size: the verifier rejects a ring-buffer reservation
/// of variable size, so every record is reserved whole and the frame copied into its front.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TeeRecord {
    pub header: TeeHeader,
    pub frame: [u8; TEE_CAPTURE_LEN],
}

/// Bytes of a [`TeeRecord`]: what userspace reads for each ring-buffer item.
pub const TEE_RECORD_LEN: usize = size_of::<TeeRecord>();

// The kernel hands out ring-buffer records 8-byte aligned and the layouts above have no
// implicit padding; these pin both facts down.
const _: () = {
    assert!(size_of::<Config>() == 16);
    assert!(size_of::<MacKey>() == 8);
    assert!(size_of::<TokenBucket>() == 16);
    assert!(size_of::<TeeHeader>() == 24);
    assert!(TEE_RECORD_LEN == 24 + TEE_CAPTURE_LEN);
    assert!(8 % core::mem::align_of::<TeeRecord>() == 0);
    assert!(TEE_RING_BYTES.is_power_of_two());
};

#[cfg(feature = "user")]
mod pod {
    use super::{Config, MacKey, TeeHeader, TokenBucket};

    // SAFETY: each is `#[repr(C)]`, `Copy`, made of integers and byte arrays with no implicit
    // padding (sizes asserted above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for MacKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TokenBucket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TeeHeader {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vlan_id_is_the_innermost_tags() {
        let mut header = TeeHeader {
            vlan_ids: [100, 42],
            ..TeeHeader::default()
        };
        assert_eq!(header.vlan_id(), None);
        header.vlan_tags = 1;
        assert_eq!(header.vlan_id(), Some(100));
        header.vlan_tags = 2;
        assert_eq!(header.vlan_id(), Some(42));
        header.vlan_tags = 7;
        assert_eq!(header.vlan_id(), Some(42));
    }
}
