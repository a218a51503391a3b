//! xdpboot's XDP program.
//!
//! It looks at every frame arriving on the interface and steers network-boot requests to
//! xdpboot (DESIGN.md, "XDP steering: tee on 67, take on 4011"):
//!
//! - a boot DISCOVER to port 67 is **teed**: copied into the [`TEED_FRAMES`] ring buffer with
//!   its ifindex, rx queue and VLAN ids, and passed on, so the kernel and the site's DHCP server
//!   see exactly what they would without us. In redirect mode ([`Config::steer`]) the rx
//!   queue's AF_XDP socket takes it instead; in auto mode it does so only when the kernel's
//!   UDP lookup finds no socket that would receive the frame.
//! - a BOOTREQUEST to port 4011 is **taken**: redirected into the AF_XDP socket of its rx queue
//!   (passed when no socket is bound there).
//! - over IPv6 (its extension headers walked, a bounded number), a boot client's Solicit,
//!   Request or Information-request to port 547 is **teed**, whatever the steering mode: a
//!   DHCPv6 server on this host sees it as it would without us. A Relay-Forward is teed too
//!   (the client's marks are inside it, for userspace to read). A DHCPv6 message to port 4011
//!   is taken like a BOOTREQUEST there.
//! - everything else is passed unchanged.
//!
//! Every verdict is counted in [`COUNTERS`]. A per-MAC token bucket sheds floods of boot
//! requests before userspace sees them.
//!
//! Parsing follows xdp-tutorial's `parsing_helpers.h`: a [`Cursor`] that advances only after a
//! check against `data_end`, one helper per header, constant loop bounds.
//!
//! Only the BPF build (boot-user's `build.rs`) is the program. Built for the host, as
//! `cargo clippy --workspace` does, the crate is an ordinary std binary with an empty `main`,
//! so the same code is type-checked and linted there.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use core::{marker::PhantomData, mem::size_of, ptr::addr_of_mut};

use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_RB_NO_WAKEUP, bpf_sock_tuple,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 as bpf_sock_tuple_ipv4, xdp_action,
    },
    helpers::{
        bpf_ktime_get_ns, bpf_sk_lookup_udp, bpf_sk_release, bpf_xdp_get_buff_len,
        bpf_xdp_load_bytes,
    },
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, XskMap},
    programs::XdpContext,
};
use boot_common::{
    CONFIG_FLAG_IPV6, CONFIG_FLAG_WAKEUP, Config, Counter, DHCP_SERVER_PORT, INVENTORY_MAX_ENTRIES,
    MacKey, PRIORITY_RING_BYTES, PXE_SERVER_PORT, SHED_BUCKETS_MAX_ENTRIES, SteerMode,
    TEE_CAPTURE_LEN, TEE_RING_BYTES, TeeHeader, TeeRecord, TokenBucket, XSK_MAX_QUEUES,
    wire::{
        dhcpv4::{self, BOOTREPLY, BOOTREQUEST, HTYPE_ETHERNET, option},
        dhcpv6,
        ethernet::{self, ethertype},
        ipv4,
        ipv6::{self, next_header},
        pxe::{HTTP_CLIENT, IPXE_USER_CLASS, PXE_CLIENT},
    },
};

// Map names must equal the `*_MAP` constants of boot-common; the attribute takes only a
// literal, and boot-user looks every map up by the constant (its tests load them all).

/// Verdict counters: one `u64` per [`Counter`] per CPU, summed by userspace.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// The program's settings, written by userspace (all zeroes until then: tee, no shedding).
#[map(name = "CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// MACs of known machines: never shed. The value is unused.
#[map(name = "INVENTORY")]
static INVENTORY: HashMap<MacKey, u8> = HashMap::with_max_entries(INVENTORY_MAX_ENTRIES, 0);

/// The flood limiter's buckets, one per MAC seen sending boot requests.
#[map(name = "SHED_BUCKETS")]
static SHED_BUCKETS: LruHashMap<MacKey, TokenBucket> =
    LruHashMap::with_max_entries(SHED_BUCKETS_MAX_ENTRIES, 0);

/// rx queue → AF_XDP socket bound to that queue of this interface.
#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(XSK_MAX_QUEUES, 0);

/// Teed boot DISCOVERs, one [`TeeRecord`] each.
#[map(name = "TEED_FRAMES")]
static TEED_FRAMES: RingBuf = RingBuf::with_byte_size(TEE_RING_BYTES, 0);

/// Teed boot DISCOVERs of inventory MACs: a flood cannot fill this one.
#[map(name = "PRIORITY_FRAMES")]
static PRIORITY_FRAMES: RingBuf = RingBuf::with_byte_size(PRIORITY_RING_BYTES, 0);

/// What the header parse learned about the current request, carried across the option scan
/// (see [`scan_options`] for why it lives here and not in registers).
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Request> = PerCpuArray::with_max_entries(1, 0);

// Header constants (EtherTypes, IPv4 flags, BOOTP fields, option codes) come from boot-common's
// wire layer, which the daemon parses with: the two sides cannot disagree about a number.

/// Options scanned before giving up (pads included). PXE ROMs send about 8 options and iPXE
/// about 15; a request hiding its boot marks further back is counted as plain DHCP.
const MAX_OPTIONS: usize = 32;
/// DHCPv6 options scanned before giving up: EDK2 sends its vendor class seventh and iPXE
/// fourth (tests/data/README.md); a message hiding its marks further back is the site's.
const MAX_OPTIONS6: usize = 16;
/// Options starting this far into the frame are not looked at. Beyond any Ethernet frame an
/// XDP program sees without multi-buffer support (a page); it keeps the verifier's range for
/// the scan position small.
const MAX_OPTION_OFFSET: usize = 4096;

const NS_PER_SEC: u64 = 1_000_000_000;

#[repr(C)]
#[allow(dead_code, reason = "wire layout: not every field is read")]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: [u8; 2],
}

#[repr(C)]
#[allow(dead_code, reason = "wire layout: not every field is read")]
struct VlanHdr {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

#[repr(C)]
#[allow(dead_code, reason = "wire layout: not every field is read")]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    total_len: [u8; 2],
    id: [u8; 2],
    flags_fragment_offset: [u8; 2],
    ttl: u8,
    protocol: u8,
    checksum: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

/// RFC 8200 §3.
#[repr(C)]
#[allow(dead_code, reason = "wire layout: not every field is read")]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

#[repr(C)]
#[allow(dead_code, reason = "wire layout: not every field is read")]
struct UdpHdr {
    src_port: [u8; 2],
    dst_port: [u8; 2],
    len: [u8; 2],
    checksum: [u8; 2],
}

/// The fixed BOOTP message (RFC 951; RFC 2131 §2 figure 1) and the magic cookie that starts
/// the options field.
#[repr(C)]
#[allow(dead_code, reason = "wire layout: not every field is read")]
struct BootpHdr {
    op: u8,
    htype: u8,
    hlen: u8,
    hops: u8,
    xid: [u8; 4],
    secs: [u8; 2],
    flags: [u8; 2],
    ciaddr: [u8; 4],
    yiaddr: [u8; 4],
    siaddr: [u8; 4],
    giaddr: [u8; 4],
    chaddr: [u8; 16],
    sname: [u8; 64],
    file: [u8; 128],
    magic_cookie: [u8; 4],
}

/// A BOOTREQUEST to port 67 or 4011, as far as the headers tell; the option scan fills in the
/// rest. The value of [`SCRATCH`].
#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    /// Offset in the frame of the byte *before* the next option to scan.
    before_next_option: u32,
    /// UDP destination port: 67 or 4011.
    port: u16,
    /// As in [`TeeHeader`].
    vlan_ids: [u16; 2],
    vlan_tags: u8,
    /// Option 53, or 0 when not (yet) seen.
    message_type: u8,
    /// 1 once an option marked the client as a network-boot client.
    boot_client: u8,
    /// BOOTP `htype` and `hlen`: whether `chaddr` is an Ethernet MAC.
    htype: u8,
    hlen: u8,
    /// IPv6: the next header to read at `before_next_option + 1` during the extension-header
    /// walk.
    next_header: u8,
    /// IPv6: where the payload ends (the IPv6 header's payload length from its offset), then
    /// where the DHCPv6 message ends (the UDP length): offsets in the frame.
    ip_end: u32,
    options_end: u32,
    /// The frame's source MAC and the client's (BOOTP `chaddr`), for [`limiter_key`].
    source_mac: [u8; 6],
    chaddr: [u8; 6],
    /// IPv4 source and destination and the UDP source port, as on the wire, for
    /// [`host_socket_receives`].
    src_addr: [u8; 4],
    dst_addr: [u8; 4],
    src_port: [u8; 2],
}

/// A read position in the frame that moves forward only after a check against `data_end`
/// (xdp-tutorial's `struct hdr_cursor`). Headers are byte arrays, so no access is misaligned.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    pos: usize,
    end: usize,
    _frame: PhantomData<&'a XdpContext>,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    fn new(ctx: &'a XdpContext) -> Self {
        Self {
            pos: ctx.data(),
            end: ctx.data_end(),
            _frame: PhantomData,
        }
    }

    /// The `T` at the cursor without moving, or `None` if the frame ends first.
    #[inline(always)]
    fn peek<T>(&self) -> Option<&'a T> {
        if self.pos + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: [pos, pos + size_of::<T>()) lies inside the frame (checked just above), `T` is
        // a `#[repr(C)]` byte layout with alignment 1, and the frame outlives the context 'a.
        Some(unsafe { &*(self.pos as *const T) })
    }

    /// The `T` at the cursor, moving past it.
    #[inline(always)]
    fn take<T>(&mut self) -> Option<&'a T> {
        let header = self.peek::<T>()?;
        self.pos += size_of::<T>();
        Some(header)
    }

    /// A cursor `offset` bytes into the frame, at a position an earlier cursor of this run
    /// reached (so inside the frame, though the verifier cannot know it). It moves nothing
    /// forward by itself: every read through it is checked as usual.
    #[inline(always)]
    fn resume_at(&self, offset: usize) -> Self {
        Self {
            pos: self.pos + offset,
            ..*self
        }
    }

    /// Whether `len` more bytes are inside the frame.
    #[inline(always)]
    fn has(&self, len: usize) -> bool {
        self.pos + len <= self.end
    }

    /// Moves past `len` bytes, which must all be inside the frame.
    #[inline(always)]
    fn skip(&mut self, len: usize) -> Option<()> {
        if !self.has(len) {
            return None;
        }
        self.pos += len;
        Some(())
    }
}

#[xdp]
pub fn xdpboot(ctx: XdpContext) -> u32 {
    let (counter, action) = steer(&ctx);
    count(counter);
    action
}

/// The verdict on one frame: what to count and what to return.
#[inline(always)]
fn steer(ctx: &XdpContext) -> (Counter, u32) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return (Counter::Passed, xdp_action::XDP_PASS);
    };
    match parse_request(ctx, scratch) {
        Parsed::NotForUs => return (Counter::Passed, xdp_action::XDP_PASS),
        // A BOOTREPLY to port 67 goes to a relay agent: the site's DHCP traffic.
        Parsed::ReplyToRelay => return (Counter::DhcpPassed, xdp_action::XDP_PASS),
        Parsed::Malformed { port } => return malformed(port),
        Parsed::Ipv6 => return steer6(ctx, scratch),
        Parsed::Request => {}
    }
    let options = scan_options(ctx, scratch);
    // SAFETY: this CPU's slot, written by `parse_request` and `scan_options` during this run
    // (XDP is not re-entered on a CPU). Volatile, as every access to it: see `scan_options`.
    let request = unsafe { scratch.read_volatile() };
    if let OptionScan::Overrun = options {
        return malformed(request.port);
    }
    let config = CONFIG.get(0).copied().unwrap_or_default();
    let wakeup = config.flags & CONFIG_FLAG_WAKEUP != 0;
    // SAFETY: a lookup whose value is not read.
    let inventory = unsafe { INVENTORY.get(limiter_key(&request)) }.is_some();

    if request.port == PXE_SERVER_PORT {
        // An inventory machine's request goes through its own ring, in every steering mode: a
        // flood on the shared AF_XDP queue cannot crowd it out. Nothing else listens on 4011,
        // so the frame itself is dropped once copied.
        if inventory && copy_to(&PRIORITY_FRAMES, ctx, &request, wakeup).is_ok() {
            return (Counter::Taken, xdp_action::XDP_DROP);
        }
        // Any BOOTREQUEST: only xdpboot answers 4011, and userspace decides what to answer.
        if over_limit(&limiter_key(&request), &config) {
            return (Counter::Shed, xdp_action::XDP_DROP);
        }
        return match XSKS.redirect(ctx.rx_queue_index(), u64::from(xdp_action::XDP_PASS)) {
            Ok(action) => (Counter::Taken, action),
            Err(action) => (Counter::NoSocket, action),
        };
    }

    // Port 67: userspace answers boot DISCOVERs only (with a proxy OFFER); a boot client's
    // REQUEST there is for the site server's address.
    if request.message_type != dhcpv4::message_type::DISCOVER || request.boot_client == 0 {
        return (Counter::DhcpPassed, xdp_action::XDP_PASS);
    }
    if over_limit(&limiter_key(&request), &config) {
        return (Counter::Shed, xdp_action::XDP_PASS);
    }
    // Inventory machines are teed into their own ring even where the others are redirected
    // (the kernel, with nobody on 67 in that mode, drops the passed frame).
    if !inventory && takes_port_67(ctx, &config, &request) {
        match XSKS.redirect(ctx.rx_queue_index(), u64::from(xdp_action::XDP_PASS)) {
            Ok(action) => return (Counter::Redirected, action),
            // No socket on this queue: a tee still gets the request to userspace.
            Err(_) => count(Counter::NoSocket),
        }
    }
    (tee(ctx, &request, wakeup, inventory), xdp_action::XDP_PASS)
}

/// Frames to 67 go on to the kernel whatever they hold (the site server judges them); nothing
/// but xdpboot listens on 4011 in this backend, so there they are dropped.
#[inline(always)]
fn malformed(port: u16) -> (Counter, u32) {
    let action = if port == PXE_SERVER_PORT {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    };
    (Counter::Malformed, action)
}

/// What the headers say about a frame.
enum Parsed {
    /// Not UDP to 67 or 4011 in an unfragmented IPv4 datagram.
    NotForUs,
    /// To 67 or 4011, but not a sound BOOTP message.
    Malformed { port: u16 },
    /// A BOOTREPLY to port 67.
    ReplyToRelay,
    /// A BOOTREQUEST with a good magic cookie, recorded in [`SCRATCH`].
    Request,
    /// An IPv6 packet, its header recorded in [`SCRATCH`] for [`walk_ipv6`].
    Ipv6,
}

/// Ethernet, up to [`ethernet::MAX_TAGS`] VLAN tags, IPv4 (options skipped per IHL, fragments
/// passed), UDP to 67 or 4011 with lengths that fit the frame, BOOTP with the magic cookie. A
/// request is recorded in `scratch`, with the scan position on its first option.
#[inline(always)]
fn parse_request(ctx: &XdpContext, scratch: *mut Request) -> Parsed {
    let frame = Cursor::new(ctx);
    let mut cursor = frame;
    let Some(eth) = cursor.take::<EthHdr>() else {
        return Parsed::NotForUs;
    };
    let mut ether_type = u16::from_be_bytes(eth.ether_type);
    let mut vlan_ids = [0u16; ethernet::MAX_TAGS];
    let mut vlan_tags = 0u8;
    for vlan_id in &mut vlan_ids {
        if ether_type != ethertype::VLAN_8021Q && ether_type != ethertype::VLAN_8021AD {
            break;
        }
        let Some(tag) = cursor.take::<VlanHdr>() else {
            return Parsed::NotForUs;
        };
        *vlan_id = u16::from_be_bytes(tag.tci) & ethernet::VLAN_ID_MASK;
        vlan_tags += 1;
        ether_type = u16::from_be_bytes(tag.ether_type);
    }
    if ether_type == ethertype::IPV6 {
        return start_ipv6(frame, cursor, eth, vlan_ids, vlan_tags, scratch);
    }
    if ether_type != ethertype::IPV4 {
        return Parsed::NotForUs;
    }

    let Some(ip) = cursor.take::<Ipv4Hdr>() else {
        return Parsed::NotForUs;
    };
    let header_len = usize::from(ip.version_ihl & 0x0f) * 4;
    if ip.version_ihl >> 4 != 4
        || header_len < size_of::<Ipv4Hdr>()
        || ip.protocol != ipv4::PROTOCOL_UDP
    {
        return Parsed::NotForUs;
    }
    let fragment = u16::from_be_bytes(ip.flags_fragment_offset);
    if fragment & (ipv4::MORE_FRAGMENTS | ipv4::FRAGMENT_OFFSET_MASK) != 0 {
        return Parsed::NotForUs;
    }
    let total_len = usize::from(u16::from_be_bytes(ip.total_len));
    if cursor.skip(header_len - size_of::<Ipv4Hdr>()).is_none() {
        return Parsed::NotForUs;
    }
    let Some(udp) = cursor.take::<UdpHdr>() else {
        return Parsed::NotForUs;
    };
    let port = u16::from_be_bytes(udp.dst_port);
    if port != DHCP_SERVER_PORT && port != PXE_SERVER_PORT {
        return Parsed::NotForUs;
    }

    // Addressed to us from here on. The fixed-size read comes before the length checks: were
    // it after them, LLVM would drop its bounds check as implied by the UDP length, and the
    // verifier, which does not follow that deduction, would refuse the read.
    let Some(bootp) = cursor.take::<BootpHdr>() else {
        return Parsed::Malformed { port };
    };
    // The UDP length covers the whole message, inside the IP datagram, inside the frame: a
    // frame cut short (or lying about its lengths) is not read as a request, whatever its
    // first bytes say. The kernel's UDP input drops such datagrams too.
    let udp_len = usize::from(u16::from_be_bytes(udp.len));
    let options_len = udp_len.wrapping_sub(size_of::<UdpHdr>() + size_of::<BootpHdr>());
    if udp_len < size_of::<UdpHdr>() + size_of::<BootpHdr>()
        || total_len < header_len + udp_len
        || !cursor.has(options_len)
    {
        return Parsed::Malformed { port };
    }
    if !bytes_eq(&bootp.magic_cookie, &dhcpv4::MAGIC_COOKIE) {
        return Parsed::Malformed { port };
    }
    match (port, bootp.op) {
        (_, BOOTREQUEST) => {}
        (DHCP_SERVER_PORT, BOOTREPLY) => return Parsed::ReplyToRelay,
        _ => return Parsed::Malformed { port },
    }

    // `black_box`: LLVM would fold the subtraction into the pointer difference as
    // `pos + !start`, and the verifier refuses bitwise operations on pointers.
    let first_option = core::hint::black_box(cursor.pos - frame.pos);
    let c = &bootp.chaddr;
    let request = Request {
        // Below 400: headers and the BOOTP fixed part.
        before_next_option: (first_option - 1) as u32,
        port,
        vlan_ids,
        vlan_tags,
        message_type: 0,
        boot_client: 0,
        // Raw, and the key chosen only after the scan: a branch here would give the scan two
        // starting states that the verifier walks separately.
        htype: bootp.htype,
        hlen: bootp.hlen,
        next_header: 0,
        ip_end: 0,
        options_end: 0,
        source_mac: eth.src,
        chaddr: [c[0], c[1], c[2], c[3], c[4], c[5]],
        src_addr: ip.src,
        dst_addr: ip.dst,
        src_port: udp.src_port,
    };
    // SAFETY: this CPU's slot of a per-CPU array, used only during this run (see `count`).
    unsafe { scratch.write_volatile(request) };
    Parsed::Request
}

/// Whether the steering mode takes this port-67 boot DISCOVER (rather than tee it).
#[inline(always)]
fn takes_port_67(ctx: &XdpContext, config: &Config, request: &Request) -> bool {
    if config.steer == SteerMode::Redirect as u32 {
        return true;
    }
    // Auto: never take what a DHCP server on this host would have seen, whenever it started;
    // the kernel's own lookup answers for this very frame. A tagged frame is teed, since a
    // server bound to the VLAN device is not found through the parent device.
    config.steer == SteerMode::Auto as u32
        && request.vlan_tags == 0
        && !host_socket_receives(ctx, request)
}

/// Whether a UDP socket of this host would receive the port-67 frame `request` describes, as
/// the kernel's UDP input would look it up (`__udp4_lib_lookup`: the exact address first, then
/// sockets bound to 0.0.0.0; a socket bound to another device does not match). DHCP servers
/// bind 0.0.0.0:67 (dnsmasq, ISC dhcpd's fallback socket, systemd-networkd, udhcpd), so a
/// broadcast DISCOVER finds them. Userspace also watches the host's port-67 sockets and
/// switches the interface to tee (for servers this lookup cannot see, such as one bound to a
/// unicast address that reads frames through a packet socket); this check closes the gap
/// until it does.
#[inline(always)]
fn host_socket_receives(ctx: &XdpContext, request: &Request) -> bool {
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: aya_ebpf::bindings::bpf_sock_tuple__bindgen_ty_1 {
            ipv4: bpf_sock_tuple_ipv4 {
                // All in network byte order, as the helper expects (`__be32`, `__be16`).
                saddr: u32::from_ne_bytes(request.src_addr),
                daddr: u32::from_ne_bytes(request.dst_addr),
                sport: u16::from_ne_bytes(request.src_port),
                dport: DHCP_SERVER_PORT.to_be(),
            },
        },
    };
    // SAFETY: the helper reads `size_of::<bpf_sock_tuple_ipv4>()` initialised bytes of the
    // tuple on our stack; BPF_F_CURRENT_NETNS looks in the interface's own namespace.
    let socket = unsafe {
        bpf_sk_lookup_udp(
            ctx.ctx.cast(),
            &mut tuple,
            size_of::<bpf_sock_tuple_ipv4>() as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if socket.is_null() {
        return false;
    }
    // SAFETY: a socket the lookup returned, released once, as the verifier requires.
    unsafe { bpf_sk_release(socket.cast()) };
    true
}

/// Whose bucket a request spends: the client's MAC from chaddr (RFC 2131 §2), which is the
/// machine whatever path the frame took. The frame's source MAC is the client's only on its own
/// link: a relay agent forwards DISCOVERs from its own MAC, and a client behind a router sends
/// its 4011 REQUEST through the router, so keying on it would make every client there share
/// one bucket. A chaddr that is not an Ethernet MAC (htype 1, hlen 6) falls back to the
/// frame's source.
#[inline(always)]
fn limiter_key(request: &Request) -> MacKey {
    if request.htype != HTYPE_ETHERNET || request.hlen != 6 {
        return MacKey::new(request.source_mac);
    }
    MacKey::new(request.chaddr)
}

/// How the option list ended.
enum OptionScan {
    /// Option 255, both a message type and a boot mark, or the scan's bound.
    Sound,
    /// An option runs past the end of the frame, or the frame ends before option 255.
    Overrun,
}

/// Scans the options (RFC 2132 §2: code, length, data; pad and end have no length) for the
/// message type and the marks of a network-boot client, recording them in `scratch`:
/// option 60 starting with "PXEClient" or "HTTPClient", option 77 naming iPXE, option 93 (the
/// client architecture, which only PXE clients send; userspace has the last word).
///
/// The scan state lives in [`SCRATCH`], whose contents the verifier does not track, and every
/// access to it is volatile so that the compiler keeps it there. Kept in registers, every path
/// through an iteration (pad, option 60 compared, other option skipped) would leave the
/// position with a different verified range; the verifier could not merge them and would walk
/// 2^n paths through n iterations (it hit its million-instruction limit). Reloaded from the
/// map, the position is one unknown value at the top of every iteration, bounded once by
/// [`MAX_OPTION_OFFSET`], whatever VLAN tags and IPv4 header length led there. For the same
/// reason the cursor is rebuilt here from the context rather than handed down from the parse.
#[inline(always)]
fn scan_options(ctx: &XdpContext, scratch: *mut Request) -> OptionScan {
    let frame = Cursor::new(ctx);
    // SAFETY (every access below): this CPU's slot, see `parse_request`.
    let next = unsafe { addr_of_mut!((*scratch).before_next_option) };
    let message_type = unsafe { addr_of_mut!((*scratch).message_type) };
    let boot_client = unsafe { addr_of_mut!((*scratch).boot_client) };
    for _ in 0..MAX_OPTIONS {
        // The stored position is that of the byte *before* the next option (the cookie's last
        // byte, or the previous option's), which was read already. A check that a pointer with
        // no constant offset is below data_end gives it no readable range in the verifier's
        // eyes; reading two bytes from one byte earlier puts the check at a constant offset of
        // one.
        let before = unsafe { next.read_volatile() } as usize;
        if before >= MAX_OPTION_OFFSET {
            return OptionScan::Sound;
        }
        let mut cursor = frame.resume_at(before);
        let Some(&[_, code]) = cursor.take::<[u8; 2]>() else {
            return OptionScan::Overrun;
        };
        let consumed = match code {
            option::PAD => 1,
            option::END => return OptionScan::Sound,
            _ => {
                let Some(&len) = cursor.take::<u8>() else {
                    return OptionScan::Overrun;
                };
                let len = usize::from(len);
                // Look before skipping: each peek then keeps its own check against data_end.
                // After the skip, LLVM would drop that check as implied by `len`, and the
                // verifier, which does not follow the deduction, would reject the read.
                if code == option::MESSAGE_TYPE
                    && len == 1
                    && let Some(&value) = cursor.peek::<u8>()
                {
                    unsafe { message_type.write_volatile(value) };
                }
                let boot_mark = match code {
                    option::VENDOR_CLASS => {
                        starts_with(&cursor, len, PXE_CLIENT)
                            || starts_with(&cursor, len, HTTP_CLIENT)
                    }
                    option::USER_CLASS => {
                        starts_with(&cursor, len, IPXE_USER_CLASS)
                            || is_ipxe_user_class_rfc3004(&cursor, len)
                    }
                    // RFC 4578 §2.1: a list of 16-bit architecture types.
                    option::CLIENT_ARCH => len >= 2,
                    _ => false,
                };
                if boot_mark {
                    unsafe { boot_client.write_volatile(1) };
                }
                if cursor.skip(len).is_none() {
                    return OptionScan::Overrun;
                }
                2 + len
            }
        };
        // Everything the verdict needs is known: the rest of the list is userspace's to read.
        if unsafe { message_type.read_volatile() } != 0
            && unsafe { boot_client.read_volatile() } != 0
        {
            return OptionScan::Sound;
        }
        // The sum is below MAX_OPTION_OFFSET + 257.
        unsafe { next.write_volatile((before + consumed) as u32) };
    }
    OptionScan::Sound
}

/// Whether the option data at the cursor (`len` bytes) starts with `prefix`.
#[inline(always)]
fn starts_with<const N: usize>(cursor: &Cursor<'_>, len: usize, prefix: &[u8; N]) -> bool {
    len >= N
        && cursor
            .peek::<[u8; N]>()
            .is_some_and(|data| bytes_eq(data, prefix))
}

/// Option 77 in RFC 3004 form: one user class, its length byte, then "iPXE".
#[inline(always)]
fn is_ipxe_user_class_rfc3004(cursor: &Cursor<'_>, len: usize) -> bool {
    const N: usize = IPXE_USER_CLASS.len();
    len > N
        && cursor.peek::<[u8; N + 1]>().is_some_and(|data| {
            usize::from(data[0]) == N
                && bytes_eq(&[data[1], data[2], data[3], data[4]], IPXE_USER_CLASS)
        })
}

/// Byte-wise comparison. Array `==` may become a `bcmp` call, which BPF cannot make.
#[inline(always)]
fn bytes_eq<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    let mut i = 0;
    while i < N {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether a boot request from `key` exceeds its MAC's rate and is to be shed.
///
/// The bucket is read and written without a lock: two CPUs handling requests from one MAC at
/// the same instant may both spend the same credit, letting a few more requests through than
/// the rate allows (at most one per CPU per race). For a flood limiter that is acceptable, and
/// cheaper than a spin lock on every boot request.
#[inline(always)]
fn over_limit(key: &MacKey, config: &Config) -> bool {
    let Some(cost) = NS_PER_SEC.checked_div(u64::from(config.shed_rate)) else {
        return false; // rate 0: shedding is off
    };
    // SAFETY: a lookup whose value is not read.
    if unsafe { INVENTORY.get(key) }.is_some() {
        return false;
    }
    let capacity = cost.saturating_mul(u64::from(config.shed_burst.max(1)));
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(bucket) = SHED_BUCKETS.get_ptr_mut(key) else {
        // First request from this MAC (or the first since its bucket was evicted): a full
        // bucket, less this request. A failed insert lets the request through.
        let bucket = TokenBucket {
            credit_ns: capacity - cost,
            updated_ns: now,
        };
        let _ = SHED_BUCKETS.insert(key, bucket, 0);
        return false;
    };
    // SAFETY: a value of the LRU hash, valid for this run (RCU); racing writers from other
    // CPUs are tolerated, see above.
    let bucket = unsafe { &mut *bucket };
    let elapsed = now.saturating_sub(bucket.updated_ns);
    // The credit may exceed a capacity that userspace has lowered since: it drains.
    let room = capacity.saturating_sub(bucket.credit_ns);
    let credit = if elapsed >= room {
        capacity.max(bucket.credit_ns)
    } else {
        bucket.credit_ns + elapsed
    };
    bucket.updated_ns = now;
    if credit < cost {
        bucket.credit_ns = credit;
        return true;
    }
    bucket.credit_ns = credit - cost;
    false
}

/// Copies the frame into a [`TEED_FRAMES`] record for userspace (an inventory MAC's into
/// [`PRIORITY_FRAMES`], or the shared ring when that is full). The caller passes the frame.
#[inline(always)]
fn tee(ctx: &XdpContext, request: &Request, wakeup: bool, inventory: bool) -> Counter {
    if inventory && copy_to(&PRIORITY_FRAMES, ctx, request, wakeup).is_ok() {
        return Counter::Teed;
    }
    match copy_to(&TEED_FRAMES, ctx, request, wakeup) {
        Ok(()) => Counter::Teed,
        Err(counter) => counter,
    }
}

/// Copies the frame, with its ingress ifindex, queue and VLAN tags, into a record of `ring`.
/// The error is the counter for a frame userspace will not see.
#[inline(always)]
fn copy_to(
    ring: &RingBuf,
    ctx: &XdpContext,
    request: &Request,
    wakeup: bool,
) -> Result<(), Counter> {
    // SAFETY: the helper reads the program's own context.
    let packet_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    // Clamped as u64 and cast only at the call: clamped as u32, the verifier sees the
    // length's 32-bit bounds only and refuses it ("R4 min value is negative").
    let captured = packet_len.min(TEE_CAPTURE_LEN as u64);
    if captured == 0 {
        // Cannot happen to a frame that parsed as BOOTP; the verifier needs the check
        // ("invalid zero-sized read").
        return Err(Counter::Malformed);
    }
    // A fixed-size record: the verifier rejects a reservation of variable size.
    let Some(mut entry) = ring.reserve::<TeeRecord>(0) else {
        return Err(Counter::RingFull);
    };
    let record = entry.as_mut_ptr();
    let header = TeeHeader {
        packet_len: packet_len as u32,
        captured_len: captured as u32,
        ifindex: ctx.ingress_ifindex() as u32,
        rx_queue: ctx.rx_queue_index(),
        vlan_ids: request.vlan_ids,
        vlan_tags: request.vlan_tags,
        _pad: [0; 3],
    };
    // SAFETY: `record` is the reserved record, TEE_RECORD_LEN writable bytes; the copy fills
    // at most TEE_CAPTURE_LEN bytes of its frame array.
    let copied = unsafe {
        addr_of_mut!((*record).header).write(header);
        bpf_xdp_load_bytes(
            ctx.ctx,
            0,
            addr_of_mut!((*record).frame).cast(),
            captured as u32,
        )
    };
    if copied != 0 {
        // Not seen: the length was clamped to the frame's. Counted as a tee that did not
        // happen, which is what userspace experiences.
        entry.discard(0);
        return Err(Counter::RingFull);
    }
    // Without a wakeup, userspace polls the ring on a timer: a wakeup per record costs more
    // than the tee itself (DESIGN.md).
    let flags = if wakeup {
        0
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    };
    entry.submit(flags);
    Ok(())
}

// ---- IPv6 -----------------------------------------------------------------------------------

/// The verdict on a DHCPv6 frame (see the module notes).
#[inline(always)]
fn steer6(ctx: &XdpContext, scratch: *mut Request) -> (Counter, u32) {
    let config = CONFIG.get(0).copied().unwrap_or_default();
    if config.flags & CONFIG_FLAG_IPV6 == 0 {
        return (Counter::Passed, xdp_action::XDP_PASS);
    }
    match walk_ipv6(ctx, scratch) {
        Walked6::NotForUs => return (Counter::Passed, xdp_action::XDP_PASS),
        Walked6::Malformed { port } => return malformed(port),
        Walked6::Dhcp => {}
    }
    // SAFETY: this CPU's slot, written during this run (see `steer`).
    let kind = unsafe { addr_of_mut!((*scratch).message_type).read_volatile() };
    let port = unsafe { addr_of_mut!((*scratch).port).read_volatile() };
    let scan = port == PXE_SERVER_PORT
        || kind == dhcpv6::message_type::SOLICIT
        || kind == dhcpv6::message_type::REQUEST
        || kind == dhcpv6::message_type::INFORMATION_REQUEST;
    if scan && let OptionScan::Overrun = scan_options6(ctx, scratch) {
        return malformed(port);
    }
    // SAFETY: as above.
    let request = unsafe { scratch.read_volatile() };
    let wakeup = config.flags & CONFIG_FLAG_WAKEUP != 0;
    // Straight from the client (link-local source, RFC 8415 §13.1), the frame's source is the
    // client's MAC: its bucket and its inventory entry.
    let key = MacKey::new(request.source_mac);
    // SAFETY: a lookup whose value is not read.
    let inventory = unsafe { INVENTORY.get(key) }.is_some();

    if port == PXE_SERVER_PORT {
        if inventory && copy_to(&PRIORITY_FRAMES, ctx, &request, wakeup).is_ok() {
            return (Counter::Taken, xdp_action::XDP_DROP);
        }
        if over_limit(&key, &config) {
            return (Counter::Shed, xdp_action::XDP_DROP);
        }
        return match XSKS.redirect(ctx.rx_queue_index(), u64::from(xdp_action::XDP_PASS)) {
            Ok(action) => (Counter::Taken, action),
            Err(action) => (Counter::NoSocket, action),
        };
    }
    // A relay's frames come from the relay's MAC, for every client behind it: not shed (one
    // bucket would stop them all), and teed unread (the marks are in the relayed message).
    if kind == dhcpv6::message_type::RELAY_FORW {
        return (tee(ctx, &request, wakeup, false), xdp_action::XDP_PASS);
    }
    if !scan || request.boot_client == 0 {
        return (Counter::DhcpPassed, xdp_action::XDP_PASS);
    }
    if over_limit(&key, &config) {
        return (Counter::Shed, xdp_action::XDP_PASS);
    }
    (tee(ctx, &request, wakeup, inventory), xdp_action::XDP_PASS)
}

/// What the IPv6 headers say about a frame.
enum Walked6 {
    /// Not UDP to 547 or 4011 after at most [`ipv6::MAX_EXTENSION_HEADERS`] extension headers
    /// (or a fragment, whose ports cannot be seen).
    NotForUs,
    /// To 547 or 4011, but the UDP length does not fit the packet or the frame, or is shorter
    /// than a DHCPv6 header.
    Malformed { port: u16 },
    /// A DHCPv6 message, its type, port and first option recorded in [`SCRATCH`].
    Dhcp,
}

/// The IPv6 header: version 6, its next header and where its payload ends, recorded in
/// `scratch` with the walk's position on the last byte of the header.
#[inline(always)]
fn start_ipv6(
    frame: Cursor<'_>,
    mut cursor: Cursor<'_>,
    eth: &EthHdr,
    vlan_ids: [u16; ethernet::MAX_TAGS],
    vlan_tags: u8,
    scratch: *mut Request,
) -> Parsed {
    let Some(ip) = cursor.take::<Ipv6Hdr>() else {
        return Parsed::NotForUs;
    };
    if ip.version_class_flow[0] >> 4 != 6 {
        return Parsed::NotForUs;
    }
    // `black_box`: see `parse_request`.
    let after_header = core::hint::black_box(cursor.pos - frame.pos);
    let request = Request {
        // Below 100: Ethernet, two tags, the IPv6 header.
        before_next_option: (after_header - 1) as u32,
        port: 0,
        vlan_ids,
        vlan_tags,
        message_type: 0,
        boot_client: 0,
        htype: 0,
        hlen: 0,
        next_header: ip.next_header,
        ip_end: (after_header + usize::from(u16::from_be_bytes(ip.payload_len))) as u32,
        options_end: 0,
        source_mac: eth.src,
        chaddr: eth.src,
        src_addr: [0; 4],
        dst_addr: [0; 4],
        src_port: [0; 2],
    };
    // SAFETY: this CPU's slot of a per-CPU array, used only during this run (see `count`).
    unsafe { scratch.write_volatile(request) };
    Parsed::Ipv6
}

/// The walk over the extension headers to UDP (RFC 8200 §4; the same kinds and lengths as the
/// wire layer's `ipv6::walk_extension_headers`), then the UDP header and DHCPv6's type byte.
/// Position and next header live in [`SCRATCH`] between iterations, as the option scan's do
/// (see [`scan_options`] for why).
#[inline(always)]
fn walk_ipv6(ctx: &XdpContext, scratch: *mut Request) -> Walked6 {
    let frame = Cursor::new(ctx);
    // SAFETY (every access below): this CPU's slot, see `parse_request`.
    let next = unsafe { addr_of_mut!((*scratch).before_next_option) };
    let header = unsafe { addr_of_mut!((*scratch).next_header) };
    // The headers, then UDP: one more turn than the bound.
    for _ in 0..=ipv6::MAX_EXTENSION_HEADERS {
        let before = unsafe { next.read_volatile() } as usize;
        if before >= MAX_OPTION_OFFSET {
            return Walked6::NotForUs;
        }
        let mut cursor = frame.resume_at(before);
        let len = match unsafe { header.read_volatile() } {
            next_header::UDP => return dhcpv6_header(cursor, before, scratch),
            next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DESTINATION_OPTIONS => {
                // RFC 8200 §4.3: 8-octet units, not counting the first 8.
                let Some(&[_, kind, units]) = cursor.take::<[u8; 3]>() else {
                    return Walked6::NotForUs;
                };
                unsafe { header.write_volatile(kind) };
                (usize::from(units) + 1) * 8
            }
            next_header::FRAGMENT => {
                let Some(&[_, kind, _, high, low]) = cursor.take::<[u8; 5]>() else {
                    return Walked6::NotForUs;
                };
                // Only an atomic fragment (RFC 6946) holds the whole datagram.
                let offset_and_more = u16::from_be_bytes([high, low]);
                if offset_and_more & (ipv6::FRAGMENT_OFFSET_MASK | ipv6::FRAGMENT_MORE) != 0 {
                    return Walked6::NotForUs;
                }
                unsafe { header.write_volatile(kind) };
                ipv6::FRAGMENT_HEADER_LEN
            }
            next_header::AUTHENTICATION => {
                // RFC 4302 §2.2: 4-octet units, less 2.
                let Some(&[_, kind, units]) = cursor.take::<[u8; 3]>() else {
                    return Walked6::NotForUs;
                };
                unsafe { header.write_volatile(kind) };
                (usize::from(units) + 2) * 4
            }
            _ => return Walked6::NotForUs,
        };
        // The sum is below MAX_OPTION_OFFSET + 2048.
        unsafe { next.write_volatile((before + len) as u32) };
    }
    Walked6::NotForUs
}

/// The UDP header after `before` and the DHCPv6 header after it: port 547 or 4011, a length
/// inside the IPv6 payload and the frame, and room for the message type and transaction id.
#[inline(always)]
fn dhcpv6_header(mut cursor: Cursor<'_>, before: usize, scratch: *mut Request) -> Walked6 {
    let Some(&[_, _, _, dst_high, dst_low, len_high, len_low, _, _]) = cursor.take::<[u8; 9]>()
    else {
        return Walked6::NotForUs;
    };
    let port = u16::from_be_bytes([dst_high, dst_low]);
    if port != dhcpv6::SERVER_PORT && port != PXE_SERVER_PORT {
        return Walked6::NotForUs;
    }
    // The fixed-size read before the length checks, as in `parse_request`.
    let Some(&[kind, _, _, _]) = cursor.peek::<[u8; 4]>() else {
        return Walked6::Malformed { port };
    };
    let udp_len = usize::from(u16::from_be_bytes([len_high, len_low]));
    // SAFETY: this CPU's slot, see `parse_request`.
    let ip_end = unsafe { addr_of_mut!((*scratch).ip_end).read_volatile() } as usize;
    let udp_start = before + 1;
    if udp_len < 8 + dhcpv6::HEADER_LEN || udp_start + udp_len > ip_end || !cursor.has(udp_len - 8)
    {
        return Walked6::Malformed { port };
    }
    // SAFETY: as above.
    unsafe {
        addr_of_mut!((*scratch).port).write_volatile(port);
        addr_of_mut!((*scratch).message_type).write_volatile(kind);
        addr_of_mut!((*scratch).options_end).write_volatile((udp_start + udp_len) as u32);
        // The byte before the first option: the transaction id's last.
        addr_of_mut!((*scratch).before_next_option)
            .write_volatile((udp_start + 8 + dhcpv6::HEADER_LEN - 1) as u32);
    }
    Walked6::Dhcp
}

/// Scans a DHCPv6 message's options (RFC 8415 §21.1: code and length, 16 bits each) for a
/// network-boot client's marks: a vendor class of enterprise 343 starting "PXEClient" or
/// "HTTPClient" (EDK2, and Debian 13's iPXE), a user class "iPXE" (iPXE), or a client
/// architecture (option 61, RFC 5970 §3.3). It stops at the first mark: the message type is
/// known, and the rest is userspace's to read. Position in [`SCRATCH`], as [`scan_options`].
#[inline(always)]
fn scan_options6(ctx: &XdpContext, scratch: *mut Request) -> OptionScan {
    let frame = Cursor::new(ctx);
    // SAFETY (every access below): this CPU's slot, see `parse_request`.
    let next = unsafe { addr_of_mut!((*scratch).before_next_option) };
    let end = unsafe { addr_of_mut!((*scratch).options_end).read_volatile() } as usize;
    let boot_client = unsafe { addr_of_mut!((*scratch).boot_client) };
    for _ in 0..MAX_OPTIONS6 {
        let before = unsafe { next.read_volatile() } as usize;
        if before + 1 >= end || before >= MAX_OPTION_OFFSET {
            return OptionScan::Sound;
        }
        let mut cursor = frame.resume_at(before);
        let Some(&[_, code_high, code_low, len_high, len_low]) = cursor.take::<[u8; 5]>() else {
            return OptionScan::Overrun;
        };
        let code = u16::from_be_bytes([code_high, code_low]);
        let len = usize::from(u16::from_be_bytes([len_high, len_low]));
        if before + 1 + dhcpv6::OPTION_HEADER_LEN + len > end {
            return OptionScan::Overrun;
        }
        let mark = match code {
            dhcpv6::option::VENDOR_CLASS => is_boot_vendor_class6(&cursor, len),
            dhcpv6::option::USER_CLASS => is_ipxe_user_class6(&cursor, len),
            dhcpv6::option::CLIENT_ARCH_TYPE => len >= 2,
            _ => false,
        };
        if mark {
            unsafe { boot_client.write_volatile(1) };
            return OptionScan::Sound;
        }
        // The sum is below MAX_OPTION_OFFSET + 65540.
        unsafe { next.write_volatile((before + dhcpv6::OPTION_HEADER_LEN + len) as u32) };
    }
    OptionScan::Sound
}

/// Option 16 data at the cursor (`len` bytes): enterprise 343, then a first class string that
/// starts with "PXEClient" or "HTTPClient" (what EDK2 checks in offers: `PxeBcParseDhcp6Packet`,
/// `HttpBootParseDhcp6Packet`).
#[inline(always)]
fn is_boot_vendor_class6(cursor: &Cursor<'_>, len: usize) -> bool {
    const PXE: usize = 6 + PXE_CLIENT.len();
    const HTTP: usize = 6 + HTTP_CLIENT.len();
    let intel = dhcpv6::ENTERPRISE_INTEL.to_be_bytes();
    let Some(data) = cursor.peek::<[u8; PXE]>() else {
        return false;
    };
    if len < PXE || !bytes_eq(&[data[0], data[1], data[2], data[3]], &intel) {
        return false;
    }
    let class_len = usize::from(u16::from_be_bytes([data[4], data[5]]));
    let mut pxe = [0u8; PXE_CLIENT.len()];
    let mut i = 0;
    while i < pxe.len() {
        pxe[i] = data[6 + i];
        i += 1;
    }
    if class_len >= PXE_CLIENT.len() && bytes_eq(&pxe, PXE_CLIENT) {
        return true;
    }
    len >= HTTP
        && class_len >= HTTP_CLIENT.len()
        && cursor.peek::<[u8; HTTP]>().is_some_and(|data| {
            let mut http = [0u8; HTTP_CLIENT.len()];
            let mut i = 0;
            while i < http.len() {
                http[i] = data[6 + i];
                i += 1;
            }
            bytes_eq(&http, HTTP_CLIENT)
        })
}

/// Option 15 data at the cursor: a first user class of four octets, "iPXE" (iPXE `dhcpv6.c`).
#[inline(always)]
fn is_ipxe_user_class6(cursor: &Cursor<'_>, len: usize) -> bool {
    const N: usize = IPXE_USER_CLASS.len();
    len >= N + 2
        && cursor.peek::<[u8; N + 2]>().is_some_and(|data| {
            data[0] == 0
                && usize::from(data[1]) == N
                && bytes_eq(&[data[2], data[3], data[4], data[5]], IPXE_USER_CLASS)
        })
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter.index()) {
        // SAFETY: the slot belongs to this CPU, and XDP runs with migration disabled and is
        // not re-entered on one CPU, so nothing else writes it meanwhile.
        unsafe { *slot += 1 };
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a loaded program: the verifier rejects any path into an endless loop.
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The kernel lets only GPL-compatible programs call GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
