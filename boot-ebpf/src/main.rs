//! xdpboot's XDP program.
//!
//! It looks at every frame arriving on the interface, decides whether it is a network-boot
//! request, counts the verdict in [`COUNTERS`] and, for now, always returns `XDP_PASS`: the
//! kernel stack and the site DHCP server see exactly what they would without us. Steering
//! (tee on 67, take on 4011: DESIGN.md "XDP steering") comes next.
//!
//! Parsing follows xdp-tutorial's `parsing_helpers.h`: a [`Cursor`] that advances only after a
//! check against `data_end`, one helper per header, constant loop bounds.
//!
//! Only the BPF build (boot-user's `build.rs`) is the program. Built for the host, as
//! `cargo clippy --workspace` does, the crate is an ordinary std binary with an empty `main`,
//! so the same code is type-checked and linted there.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use core::{marker::PhantomData, mem::size_of};

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use boot_common::{Counter, DHCP_SERVER_PORT, PXE_SERVER_PORT};

/// Verdict counters: one `u64` per [`Counter`] per CPU, summed by userspace.
// The name must equal `boot_common::COUNTERS_MAP`; the attribute takes only a literal, and
// boot-user's tests look the map up by the constant.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// The option scan's position between iterations (see [`scan_options`]).
#[map(name = "OPTION_SCAN")]
static OPTION_SCAN: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

// EtherTypes (IEEE 802.3 / 802.1Q / 802.1ad).
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// Stacked VLAN tags we look through: an 802.1ad S-tag and an 802.1Q C-tag (QinQ).
const MAX_VLAN_TAGS: usize = 2;

const IPPROTO_UDP: u8 = 17;
/// IPv4 "more fragments" flag and fragment offset (RFC 791 §3.1). Only an unfragmented datagram
/// shows its UDP header and BOOTP body in one frame.
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
const IPV4_FRAGMENT_OFFSET: u16 = 0x1fff;

/// BOOTP `op` of a client message (RFC 951).
const BOOTREQUEST: u8 = 1;
/// First four octets of the options field (RFC 2131 §3, RFC 1497).
const DHCP_MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

// DHCP option codes (RFC 2132 §3.1, §3.2, §9.13; RFC 3004 for 77).
const OPTION_PAD: u8 = 0;
const OPTION_END: u8 = 255;
const OPTION_VENDOR_CLASS: u8 = 60;
const OPTION_USER_CLASS: u8 = 77;
/// Options scanned before giving up (pads included). PXE ROMs send about 8 options and iPXE
/// about 15 before option 60/77; a request hiding them further back is counted as plain DHCP.
const MAX_OPTIONS: usize = 32;
/// Options starting this far into the frame are not looked at. Beyond any Ethernet frame an
/// XDP program sees without multi-buffer support (a page); it keeps the verifier's range for
/// the scan position small.
const MAX_OPTION_OFFSET: usize = 4096;

/// Option 60 prefixes of boot clients: PXE ROMs and iPXE ("PXEClient:Arch:…", PXE 2.1 spec),
/// UEFI HTTP Boot ("HTTPClient:Arch:…", UEFI spec, HTTP Boot).
const PXE_CLIENT: &[u8; 9] = b"PXEClient";
const HTTP_CLIENT: &[u8; 10] = b"HTTPClient";
/// Option 77 of iPXE (`DHCP_USER_CLASS_ID` in iPXE's `include/ipxe/dhcp.h`): the bare string,
/// or as one RFC 3004 length-prefixed user class.
const IPXE_USER_CLASS: &[u8; 4] = b"iPXE";

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

    /// Moves past `len` bytes, which must all be inside the frame.
    #[inline(always)]
    fn skip(&mut self, len: usize) -> Option<()> {
        if self.pos + len > self.end {
            return None;
        }
        self.pos += len;
        Some(())
    }
}

#[xdp]
pub fn xdpboot(ctx: XdpContext) -> u32 {
    count(classify(&ctx));
    xdp_action::XDP_PASS
}

fn classify(ctx: &XdpContext) -> Counter {
    let frame = Cursor::new(ctx);
    let mut cursor = frame;
    let Some(port) = parse_to_boot_port(&mut cursor) else {
        return Counter::Passed;
    };
    let Some(op) = parse_bootp(&mut cursor) else {
        return Counter::Malformed;
    };
    match (port, op) {
        (PXE_SERVER_PORT, BOOTREQUEST) => Counter::PxeRequest,
        (PXE_SERVER_PORT, _) => Counter::Malformed,
        (_, BOOTREQUEST) => match scan_options(&frame, cursor.pos - frame.pos) {
            Options::BootClient => Counter::BootRequest,
            Options::OtherClient => Counter::DhcpPassed,
            Options::Truncated => Counter::Malformed,
        },
        // A BOOTREPLY to port 67 goes to a relay agent: the site's DHCP traffic.
        _ => Counter::DhcpPassed,
    }
}

/// Ethernet, up to [`MAX_VLAN_TAGS`] VLAN tags, IPv4 (options skipped per IHL), UDP. Returns the
/// destination port when it is 67 or 4011, leaving the cursor on the UDP payload.
#[inline(always)]
fn parse_to_boot_port(cursor: &mut Cursor<'_>) -> Option<u16> {
    let eth = cursor.take::<EthHdr>()?;
    let mut ether_type = u16::from_be_bytes(eth.ether_type);
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        ether_type = u16::from_be_bytes(cursor.take::<VlanHdr>()?.ether_type);
    }
    if ether_type != ETH_P_IPV4 {
        return None;
    }

    let ip = cursor.take::<Ipv4Hdr>()?;
    let header_len = usize::from(ip.version_ihl & 0x0f) * 4;
    if ip.version_ihl >> 4 != 4 || header_len < size_of::<Ipv4Hdr>() || ip.protocol != IPPROTO_UDP {
        return None;
    }
    let fragment = u16::from_be_bytes(ip.flags_fragment_offset);
    if fragment & (IPV4_MORE_FRAGMENTS | IPV4_FRAGMENT_OFFSET) != 0 {
        return None;
    }
    cursor.skip(header_len - size_of::<Ipv4Hdr>())?;

    let udp = cursor.take::<UdpHdr>()?;
    let port = u16::from_be_bytes(udp.dst_port);
    (port == DHCP_SERVER_PORT || port == PXE_SERVER_PORT).then_some(port)
}

/// The BOOTP fixed part and magic cookie. Returns `op`, leaving the cursor on the first option.
#[inline(always)]
fn parse_bootp(cursor: &mut Cursor<'_>) -> Option<u8> {
    let bootp = cursor.take::<BootpHdr>()?;
    (bootp.magic_cookie == DHCP_MAGIC_COOKIE).then_some(bootp.op)
}

/// What the options say about the client.
enum Options {
    /// Option 60 starts with "PXEClient" or "HTTPClient", or option 77 names iPXE.
    BootClient,
    /// Neither, within [`MAX_OPTIONS`] options (pads included).
    OtherClient,
    /// An option runs past the end of the frame, or the frame ends before option 255 without
    /// a boot mark.
    Truncated,
}

/// Scans the options (RFC 2132 §2: code, length, data; pad and end have no length) for the
/// marks of a network-boot client. The first option is `first_option` bytes into `frame`.
///
/// Between iterations the position lives in [`OPTION_SCAN`], whose contents the verifier does
/// not track. Kept in a register, every path through an iteration (pad, option 60 compared,
/// other option skipped) would leave the position with a different verified range; the
/// verifier could not merge them and would walk 2^n paths through n iterations (it hit its
/// million-instruction limit). Reloaded from the map, the position is one unknown value at the
/// top of every iteration, bounded once by [`MAX_OPTION_OFFSET`], whatever VLAN tags and IPv4
/// header length led there.
#[inline(always)]
fn scan_options(frame: &Cursor<'_>, first_option: usize) -> Options {
    let Some(next_offset) = OPTION_SCAN.get_ptr_mut(0) else {
        return Options::OtherClient;
    };
    // The stored position is that of the byte *before* the next option (the cookie's last
    // byte, or the previous option's), which was read already. A check that a pointer with
    // no constant offset is below data_end gives it no readable range in the verifier's eyes;
    // reading two bytes from one byte earlier puts the check at a constant offset of one.
    //
    // `black_box`: LLVM would fold the subtraction into the pointer difference computed by the
    // caller as `pos + !start`, and the verifier refuses bitwise operations on pointers.
    let before_first = core::hint::black_box(first_option) - 1;
    // SAFETY: this CPU's slot of a per-CPU array, used only during this run (see `count`).
    // `first_option` is below 400: headers and the BOOTP fixed part.
    unsafe { next_offset.write_volatile(before_first as u32) };
    for _ in 0..MAX_OPTIONS {
        // SAFETY: as above. Volatile, so the compiler keeps the value in the map.
        let before = unsafe { next_offset.read_volatile() } as usize;
        if before >= MAX_OPTION_OFFSET {
            return Options::OtherClient;
        }
        let mut cursor = frame.resume_at(before);
        let Some(&[_, code]) = cursor.take::<[u8; 2]>() else {
            return Options::Truncated;
        };
        let consumed = match code {
            OPTION_PAD => 1,
            OPTION_END => return Options::OtherClient,
            _ => {
                let Some(&len) = cursor.take::<u8>() else {
                    return Options::Truncated;
                };
                let len = usize::from(len);
                // Match before skipping: each peek then keeps its own check against data_end.
                // After the skip, LLVM would drop that check as implied by `len`, and the
                // verifier, which does not follow the deduction, would reject the read.
                let boot_client = match code {
                    OPTION_VENDOR_CLASS => {
                        starts_with(&cursor, len, PXE_CLIENT)
                            || starts_with(&cursor, len, HTTP_CLIENT)
                    }
                    OPTION_USER_CLASS => {
                        starts_with(&cursor, len, IPXE_USER_CLASS)
                            || is_ipxe_user_class_rfc3004(&cursor, len)
                    }
                    _ => false,
                };
                if cursor.skip(len).is_none() {
                    return Options::Truncated;
                }
                if boot_client {
                    return Options::BootClient;
                }
                2 + len
            }
        };
        // SAFETY: as above. The sum is below MAX_OPTION_OFFSET + 257.
        unsafe { next_offset.write_volatile((before + consumed) as u32) };
    }
    Options::OtherClient
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
