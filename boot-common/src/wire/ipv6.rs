//! IPv6 packets (RFC 8200 §3) and the walk over their extension headers (RFC 8200 §4).
//!
//! ```text
//! 0      version(4) traffic class(8) flow label(20)
//! 4      payload length(16)        next header(8)  hop limit(8)
//! 8      source address (16 octets)
//! 24     destination address (16 octets)
//! 40     extension headers, each naming the next, then the upper-layer header
//! ```
//!
//! The walk is bounded ([`MAX_EXTENSION_HEADERS`]) and knows the headers RFC 8200 §4 lists
//! whose length it can read: Hop-by-Hop, Routing and Destination Options (the generic format
//! of §4.3: a length in 8-octet units not counting the first 8), Fragment (§4.5: 8 octets)
//! and Authentication (RFC 4302 §2.2: a length in 4-octet units less 2). A fragment that is not
//! the whole datagram ends the walk with [`Error::Fragment`]: its UDP header or data are not
//! all here. ESP hides what follows; it, "no next header" and every unknown number are the
//! upper layer as far as the walk goes, so the caller sees a protocol that is not UDP.

use core::net::Ipv6Addr;

use super::checksum::Checksum;
use super::{Error, MacAddr, be16};

/// The fixed header: what [`Repr`] writes.
pub const HEADER_LEN: usize = 40;
/// Extension headers walked before [`Error::TooManyExtensionHeaders`]. RFC 8200 §4.1 lets each
/// appear once (Destination Options twice), six in all; eight leaves room for a repeat and
/// keeps the walk constant-bounded, as the XDP program's own walk must be.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Next-header numbers (IANA "Assigned Internet Protocol Numbers", RFC 8200 §4).
pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AUTHENTICATION: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DESTINATION_OPTIONS: u8 = 60;
}

/// The fragment header's length (RFC 8200 §4.5), and in its third and fourth octets the
/// offset's mask and the M ("more fragments") flag; the two bits between are reserved.
pub const FRAGMENT_HEADER_LEN: usize = 8;
pub const FRAGMENT_OFFSET_MASK: u16 = 0xfff8;
pub const FRAGMENT_MORE: u16 = 0x0001;

/// The hop limit Linux gives a datagram by default (`net.ipv6.conf.*.hop_limit`).
pub const DEFAULT_HOP_LIMIT: u8 = 64;

mod field {
    pub const VERSION: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// A view of an IPv6 packet: version 6, and a payload length that lies within the buffer
/// (bytes after it are link-layer padding). A payload length of zero is taken at its word: a
/// jumbogram (RFC 2675) cannot be carried on the links xdpboot serves.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if bytes[field::VERSION] >> 4 != 6 {
            return Err(Error::BadVersion);
        }
        if HEADER_LEN + usize::from(be16(bytes, field::PAYLOAD_LEN)) > bytes.len() {
            return Err(Error::BadLength);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn traffic_class(&self) -> u8 {
        let b = self.bytes();
        (b[0] << 4) | (b[1] >> 4)
    }

    pub fn flow_label(&self) -> u32 {
        let b = self.bytes();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }

    /// Bytes after the fixed header: extension headers and the upper layer.
    pub fn payload_len(&self) -> u16 {
        be16(self.bytes(), field::PAYLOAD_LEN)
    }

    /// The first header after the fixed one.
    pub fn next_header(&self) -> u8 {
        self.bytes()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.bytes()[field::HOP_LIMIT]
    }

    pub fn src(&self) -> Ipv6Addr {
        ipv6_at(self.bytes(), field::SRC)
    }

    pub fn dst(&self) -> Ipv6Addr {
        ipv6_at(self.bytes(), field::DST)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Extension headers and upper layer, up to the payload length.
    pub fn payload(&self) -> &'a [u8] {
        let bytes = self.buffer.as_ref();
        &bytes[HEADER_LEN..HEADER_LEN + usize::from(be16(bytes, field::PAYLOAD_LEN))]
    }

    /// Walks the extension headers to the upper layer: its protocol number and its bytes.
    pub fn upper_layer(&self) -> Result<UpperLayer<'a>, Error> {
        walk_extension_headers(self.next_header(), self.payload())
    }
}

/// What follows the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer<'a> {
    /// The last next-header value: 17 for UDP.
    pub protocol: u8,
    /// Bytes of the payload the extension headers took.
    pub offset: usize,
    /// The upper-layer header and data.
    pub data: &'a [u8],
}

/// The walk of RFC 8200 §4 over `payload`, whose first header is `first`; see the module
/// documentation for what it knows.
pub fn walk_extension_headers(first: u8, payload: &[u8]) -> Result<UpperLayer<'_>, Error> {
    let mut protocol = first;
    let mut offset = 0;
    for _ in 0..MAX_EXTENSION_HEADERS {
        let rest = &payload[offset..];
        let len = match protocol {
            next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DESTINATION_OPTIONS => {
                // RFC 8200 §4.3: "Hdr Ext Len", 8-octet units not including the first 8.
                let units = *rest.get(1).ok_or(Error::Truncated)?;
                (usize::from(units) + 1) * 8
            }
            next_header::FRAGMENT => {
                let header = rest.get(..FRAGMENT_HEADER_LEN).ok_or(Error::Truncated)?;
                let offset_and_more = be16(header, 2);
                // An atomic fragment (offset 0, no more: RFC 6946) is the whole datagram.
                if offset_and_more & (FRAGMENT_OFFSET_MASK | FRAGMENT_MORE) != 0 {
                    return Err(Error::Fragment);
                }
                FRAGMENT_HEADER_LEN
            }
            next_header::AUTHENTICATION => {
                // RFC 4302 §2.2: "Payload Len", 4-octet units minus 2.
                let units = *rest.get(1).ok_or(Error::Truncated)?;
                (usize::from(units) + 2) * 4
            }
            _ => {
                return Ok(UpperLayer {
                    protocol,
                    offset,
                    data: rest,
                });
            }
        };
        if rest.len() < len {
            return Err(Error::Truncated);
        }
        protocol = rest[0];
        offset += len;
    }
    // One more header than the bound allows, unless the bound ended exactly on the upper
    // layer.
    match protocol {
        next_header::HOP_BY_HOP
        | next_header::ROUTING
        | next_header::DESTINATION_OPTIONS
        | next_header::FRAGMENT
        | next_header::AUTHENTICATION => Err(Error::TooManyExtensionHeaders),
        _ => Ok(UpperLayer {
            protocol,
            offset,
            data: &payload[offset..],
        }),
    }
}

/// An IPv6 header to write: traffic class and flow label 0, no extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    /// Bytes after the header.
    pub payload_len: usize,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Self {
        Self {
            src: packet.src(),
            dst: packet.dst(),
            next_header: packet.next_header(),
            hop_limit: packet.hop_limit(),
            payload_len: usize::from(packet.payload_len()),
        }
    }

    /// Header and payload.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header at the start of `buf` and returns its length; the payload is not
    /// touched.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let payload_len = u16::try_from(self.payload_len).map_err(|_| Error::TooLong)?;
        let header = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        header[..4].copy_from_slice(&[0x60, 0, 0, 0]);
        header[field::PAYLOAD_LEN..field::PAYLOAD_LEN + 2]
            .copy_from_slice(&payload_len.to_be_bytes());
        header[field::NEXT_HEADER] = self.next_header;
        header[field::HOP_LIMIT] = self.hop_limit;
        header[field::SRC..field::SRC + 16].copy_from_slice(&self.src.octets());
        header[field::DST..field::DST + 16].copy_from_slice(&self.dst.octets());
        Ok(HEADER_LEN)
    }
}

/// A sum started with the IPv6 pseudo-header of an upper-layer protocol (RFC 8200 §8.1):
/// source, destination, the upper-layer length as 32 bits, three zero octets and the next
/// header. Add the upper-layer header and data to it.
pub fn pseudo_header(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> Checksum {
    Checksum::new()
        .add_bytes(&src.octets())
        .add_bytes(&dst.octets())
        .add_bytes(&length.to_be_bytes())
        .add_bytes(&[0, 0, 0, next_header])
}

/// The sixteen octets at `at`, as an IPv6 address.
fn ipv6_at(bytes: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0; 16];
    octets.copy_from_slice(&bytes[at..at + 16]);
    Ipv6Addr::from(octets)
}

/// The MAC behind a link-local address whose interface identifier is a modified EUI-64
/// (RFC 4291 §2.5.1 and appendix A: the MAC's halves around ff:fe, the universal/local bit
/// inverted). EDK2 and iPXE form their link-local addresses so; a privacy or stable-opaque
/// identifier (RFC 8981, RFC 7217) is not one, and names no MAC.
pub fn eui64_mac(address: Ipv6Addr) -> Option<MacAddr> {
    let o = address.octets();
    let link_local = o[..8] == [0xfe, 0x80, 0, 0, 0, 0, 0, 0];
    (link_local && o[11] == 0xff && o[12] == 0xfe)
        .then(|| MacAddr([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]]))
}

/// The link-local address with the modified EUI-64 interface identifier of `mac`: the inverse
/// of [`eui64_mac`].
pub fn eui64_link_local(mac: MacAddr) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        a ^ 0x02,
        b,
        c,
        0xff,
        0xfe,
        d,
        e,
        f,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe18, 0x0101);
    const DST: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

    /// A packet carrying `headers` (each its bytes) and then 8 bytes of UDP, then padding.
    fn build(first: u8, headers: &[&[u8]]) -> ([u8; 128], usize) {
        let mut buf = [0xeeu8; 128];
        let ext: usize = headers.iter().map(|h| h.len()).sum();
        let repr = Repr {
            src: SRC,
            dst: DST,
            next_header: first,
            hop_limit: 1,
            payload_len: ext + 8,
        };
        repr.emit(&mut buf).unwrap();
        let mut at = HEADER_LEN;
        for header in headers {
            buf[at..at + header.len()].copy_from_slice(header);
            at += header.len();
        }
        buf[at..at + 8].copy_from_slice(&[2, 34, 2, 35, 0, 8, 0, 0]);
        (buf, at + 8)
    }

    #[test]
    fn an_emitted_header_parses_back() {
        let (buf, len) = build(next_header::UDP, &[]);
        let packet = Packet::new_checked(&buf[..len + 4]).unwrap();
        assert_eq!((packet.src(), packet.dst()), (SRC, DST));
        assert_eq!((packet.traffic_class(), packet.flow_label()), (0, 0));
        assert_eq!(packet.payload().len(), 8, "the padding is not payload");
        assert_eq!(
            Repr::parse(&packet),
            Repr {
                src: SRC,
                dst: DST,
                next_header: next_header::UDP,
                hop_limit: 1,
                payload_len: 8,
            }
        );
        let upper = packet.upper_layer().unwrap();
        assert_eq!((upper.protocol, upper.offset), (next_header::UDP, 0));
    }

    #[test]
    fn a_wrong_version_or_a_payload_past_the_buffer_is_refused() {
        let (mut buf, len) = build(next_header::UDP, &[]);
        assert_eq!(
            Packet::new_checked(&buf[..len - 1]).err(),
            Some(Error::BadLength)
        );
        assert_eq!(
            Packet::new_checked(&buf[..39]).err(),
            Some(Error::Truncated)
        );
        buf[0] = 0x45;
        assert_eq!(
            Packet::new_checked(&buf[..len]).err(),
            Some(Error::BadVersion)
        );
    }

    #[test]
    fn extension_headers_are_walked_to_the_upper_layer() {
        let hop_by_hop = [next_header::DESTINATION_OPTIONS, 0, 5, 2, 0, 0, 1, 0];
        let destination = [
            next_header::FRAGMENT,
            1,
            1,
            12,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let atomic_fragment = [next_header::AUTHENTICATION, 0, 0, 0, 0, 0, 0, 1];
        let authentication = [next_header::UDP, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
        let (buf, len) = build(
            next_header::HOP_BY_HOP,
            &[&hop_by_hop, &destination, &atomic_fragment, &authentication],
        );
        let packet = Packet::new_checked(&buf[..len]).unwrap();
        let upper = packet.upper_layer().unwrap();
        assert_eq!(upper.protocol, next_header::UDP);
        assert_eq!(upper.offset, 8 + 16 + 8 + 12);
        assert_eq!(upper.data, &[2, 34, 2, 35, 0, 8, 0, 0]);
    }

    #[test]
    fn a_fragment_that_is_not_the_whole_datagram_ends_the_walk() {
        for offset_and_more in [0x0001u16, 0x0008, 0xfff9] {
            let [a, b] = offset_and_more.to_be_bytes();
            let fragment = [next_header::UDP, 0, a, b, 0, 0, 0, 7];
            let (buf, len) = build(next_header::FRAGMENT, &[&fragment]);
            let packet = Packet::new_checked(&buf[..len]).unwrap();
            assert_eq!(packet.upper_layer(), Err(Error::Fragment));
        }
    }

    #[test]
    fn the_walk_is_bounded_and_checks_every_length() {
        let chained = [next_header::DESTINATION_OPTIONS, 0, 1, 4, 0, 0, 0, 0];
        let nine = [&chained[..]; MAX_EXTENSION_HEADERS + 1];
        let (buf, len) = build(next_header::DESTINATION_OPTIONS, &nine);
        let packet = Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!(packet.upper_layer(), Err(Error::TooManyExtensionHeaders));

        let mut eight = [&chained[..]; MAX_EXTENSION_HEADERS];
        let last = [next_header::UDP, 0, 1, 4, 0, 0, 0, 0];
        eight[MAX_EXTENSION_HEADERS - 1] = &last;
        let (buf, len) = build(next_header::DESTINATION_OPTIONS, &eight);
        let upper = Packet::new_checked(&buf[..len])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!((upper.protocol, upper.offset), (next_header::UDP, 64));

        // A length running past the payload.
        let long = [next_header::UDP, 3, 0, 0, 0, 0, 0, 0];
        let (buf, len) = build(next_header::ROUTING, &[&long]);
        let packet = Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!(packet.upper_layer(), Err(Error::Truncated));
    }

    #[test]
    fn esp_and_no_next_header_are_not_walked_into() {
        for protocol in [next_header::ESP, next_header::NO_NEXT_HEADER, 200] {
            let upper = walk_extension_headers(protocol, &[1, 2, 3]).unwrap();
            assert_eq!((upper.protocol, upper.offset), (protocol, 0));
        }
    }

    #[test]
    fn the_pseudo_header_sum_matches_the_rfc_layout() {
        // Every word of the pseudo-header, summed by hand.
        let sum = pseudo_header(SRC, DST, next_header::UDP, 0x1_0008).sum();
        let words: u64 = SRC
            .segments()
            .iter()
            .chain(DST.segments().iter())
            .map(|&w| u64::from(w))
            .sum::<u64>()
            + 0x0001
            + 0x0008
            + u64::from(next_header::UDP);
        let mut folded = words;
        while folded > 0xffff {
            folded = (folded & 0xffff) + (folded >> 16);
        }
        assert_eq!(u64::from(sum), folded);
    }

    #[test]
    fn eui64_identifiers_name_their_mac_and_others_do_not() {
        let mac = MacAddr([0x52, 0x54, 0x00, 0x18, 0x01, 0x01]);
        assert_eq!(eui64_link_local(mac), SRC);
        assert_eq!(eui64_mac(SRC), Some(mac));
        // Not link-local, or not an EUI-64 identifier.
        assert_eq!(
            eui64_mac(Ipv6Addr::new(0xfd00, 0, 0, 0, 0x5054, 0xff, 0xfe18, 0x0101)),
            None
        );
        assert_eq!(
            eui64_mac(Ipv6Addr::new(
                0xfe80, 0, 0, 0, 0x1234, 0x5678, 0x9abc, 0xdef0
            )),
            None
        );
    }
}
