//! The packet formats xdpboot reads and writes, written once: Ethernet with VLAN tags, IPv4,
//! IPv6 with its extension headers, UDP, BOOTP/DHCPv4 and the PXE options inside it, and
//! DHCPv6.
//!
//! The shape is smoltcp's `wire` module: a view (`Packet<T: AsRef<[u8]>>`, `Frame<T>`) checks
//! its buffer once in `new_checked` so that no accessor can panic afterwards, and reads its
//! fields straight from the bytes; a `Repr` of the fields the project writes has `buffer_len()`
//! and `emit()` into a buffer the caller owns. Nothing here allocates, so the daemon can write a
//! reply straight into an AF_XDP frame, and the XDP program shares the constants.
//!
//! Checked means: a view never reads outside its buffer, and a length field that claims more
//! than the buffer holds is an [`Error`], not a shorter read. Beyond that a view reports what
//! the bytes say; judging the values (an op of 7, a checksum that does not verify) is the
//! caller's business.

pub mod checksum;
pub mod dhcpv4;
pub mod dhcpv6;
pub mod ethernet;
pub mod frame;
pub mod ipv4;
pub mod ipv6;
pub mod mac;
pub mod pxe;
pub mod udp;

pub use frame::{
    FrameRepr, FrameRepr6, UdpFrame, UdpFrame6, emit_udp_frame, emit_udp6_frame, headers_len,
    headers6_len,
};
pub use mac::MacAddr;

use core::fmt;

/// Why bytes are not a packet of the expected format, or why a packet could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before the header does.
    Truncated,
    /// The IP version field is not the one of the view (4 or 6).
    BadVersion,
    /// The IPv4 header length (IHL) is below 5 words or runs past the buffer.
    BadHeaderLength,
    /// A length field (IPv4 total length, UDP length) is shorter than its header or longer
    /// than the buffer.
    BadLength,
    /// More VLAN tags than [`ethernet::MAX_TAGS`].
    TooManyTags,
    /// The EtherType after the VLAN tags is not IPv4.
    NotIpv4,
    /// The EtherType after the VLAN tags is not IPv6.
    NotIpv6,
    /// The IPv4 protocol (or the IPv6 header after the extension headers) is not UDP.
    NotUdp,
    /// An IPv4 or IPv6 fragment: the UDP header and payload are not all in this datagram.
    Fragment,
    /// More IPv6 extension headers than [`ipv6::MAX_EXTENSION_HEADERS`].
    TooManyExtensionHeaders,
    /// The DHCP magic cookie is missing (RFC 2131 §3).
    BadMagicCookie,
    /// An option's length runs past the end of the options (RFC 2132 §2).
    OptionOverrun,
    /// More than [`dhcpv4::MAX_OPTIONS`] (or [`dhcpv6::MAX_OPTIONS`]) options.
    TooManyOptions,
    /// Option data longer than its length field can say: 255 bytes in DHCPv4 (RFC 2132 §2),
    /// 65535 in DHCPv6 (RFC 8415 §21.1).
    OptionTooLong,
    /// PAD (0) or END (255) written as an option with data: they are single octets.
    BadOptionCode,
    /// Text longer than its fixed field (BOOTP `sname`, `file`) less the terminating NUL.
    FieldTooLong,
    /// The caller's buffer cannot hold what is to be written.
    BufferTooSmall,
    /// A datagram longer than the IP and UDP 16-bit length fields can say.
    TooLong,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated header",
            Error::BadVersion => "wrong IP version",
            Error::BadHeaderLength => "bad IPv4 header length",
            Error::BadLength => "length field disagrees with the header or the buffer",
            Error::TooManyTags => "more than two VLAN tags",
            Error::NotIpv4 => "not IPv4",
            Error::NotIpv6 => "not IPv6",
            Error::NotUdp => "not UDP",
            Error::Fragment => "IP fragment",
            Error::TooManyExtensionHeaders => "too many IPv6 extension headers",
            Error::BadMagicCookie => "no DHCP magic cookie",
            Error::OptionOverrun => "option runs past the end",
            Error::TooManyOptions => "too many options",
            Error::OptionTooLong => "option data longer than 255 bytes",
            Error::BadOptionCode => "PAD or END written as an option with data",
            Error::FieldTooLong => "text longer than its field",
            Error::BufferTooSmall => "buffer too small",
            Error::TooLong => "datagram longer than 65535 bytes",
        })
    }
}

impl core::error::Error for Error {}

/// The big-endian `u16` at `at`. Callers checked the buffer's length in `new_checked`.
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The four octets at `at`, as an IPv4 address.
fn ipv4_at(bytes: &[u8], at: usize) -> core::net::Ipv4Addr {
    core::net::Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3])
}
