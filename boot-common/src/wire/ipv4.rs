//! IPv4 datagrams (RFC 791 §3.1).
//!
//! ```text
//! 0      version(4) IHL(4)   DSCP/ECN    total length(16)
//! 4      identification(16)              flags(3) fragment offset(13)
//! 8      TTL         protocol            header checksum(16)
//! 12     source address
//! 16     destination address
//! 20     options (IHL > 5), then the payload up to total length
//! ```

use core::net::Ipv4Addr;

use super::checksum::checksum;
use super::{Error, be16, ipv4_at};

/// A header without options: what [`Repr`] writes.
pub const HEADER_LEN: usize = 20;
/// Protocol numbers (IANA "Assigned Internet Protocol Numbers").
pub const PROTOCOL_UDP: u8 = 17;
/// Flags and fragment offset (RFC 791 §3.1): "don't fragment", "more fragments", and the
/// offset of this fragment in 8-octet units.
pub const DONT_FRAGMENT: u16 = 0x4000;
pub const MORE_FRAGMENTS: u16 = 0x2000;
pub const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

mod field {
    pub const VERSION_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAGMENT: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// A view of an IPv4 datagram: version 4, a header length of at least 20 bytes, and a total
/// length that covers the header and lies within the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let packet = Self { buffer };
        if packet.version() != 4 {
            return Err(Error::BadVersion);
        }
        let header_len = packet.header_len();
        if header_len < HEADER_LEN || header_len > len {
            return Err(Error::BadHeaderLength);
        }
        let total_len = usize::from(packet.total_len());
        if total_len < header_len || total_len > len {
            return Err(Error::BadLength);
        }
        Ok(packet)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.bytes()[field::VERSION_IHL] >> 4
    }

    /// IHL in bytes (the field counts 32-bit words).
    pub fn header_len(&self) -> usize {
        usize::from(self.bytes()[field::VERSION_IHL] & 0x0f) * 4
    }

    pub fn dscp_ecn(&self) -> u8 {
        self.bytes()[field::DSCP_ECN]
    }

    /// Header and payload; bytes after it in the buffer are link-layer padding.
    pub fn total_len(&self) -> u16 {
        be16(self.bytes(), field::TOTAL_LEN)
    }

    pub fn ident(&self) -> u16 {
        be16(self.bytes(), field::IDENT)
    }

    fn flags_fragment(&self) -> u16 {
        be16(self.bytes(), field::FLAGS_FRAGMENT)
    }

    pub fn dont_fragment(&self) -> bool {
        self.flags_fragment() & DONT_FRAGMENT != 0
    }

    pub fn more_fragments(&self) -> bool {
        self.flags_fragment() & MORE_FRAGMENTS != 0
    }

    /// Where this fragment's data belongs in the datagram, in bytes.
    pub fn fragment_offset(&self) -> usize {
        usize::from(self.flags_fragment() & FRAGMENT_OFFSET_MASK) * 8
    }

    /// Whether this is one piece of a fragmented datagram (the first, with "more fragments",
    /// or a later one, with an offset): only a whole datagram shows its UDP header and data.
    pub fn is_fragment(&self) -> bool {
        self.flags_fragment() & (MORE_FRAGMENTS | FRAGMENT_OFFSET_MASK) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.bytes()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.bytes()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        be16(self.bytes(), field::CHECKSUM)
    }

    pub fn src(&self) -> Ipv4Addr {
        ipv4_at(self.bytes(), field::SRC)
    }

    pub fn dst(&self) -> Ipv4Addr {
        ipv4_at(self.bytes(), field::DST)
    }

    /// Whether the header checksum is right: the checksum over the header, the checksum field
    /// included, is zero (RFC 1071 §1 (3)).
    pub fn verify_checksum(&self) -> bool {
        checksum(&self.bytes()[..self.header_len()]) == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The options between the fixed header and the payload (usually none).
    pub fn options(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// From the end of the header to the total length: Ethernet padding after a short
    /// datagram is not part of it.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

/// An IPv4 header to write: no options, DSCP 0, identification 0 and no flags, as the daemon's
/// replies have always been. The identification serves only reassembly (RFC 791 §3.2), and a
/// DHCP or TFTP reply is far below any link's MTU; "don't fragment" clear leaves a router free
/// to deliver it anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// Bytes after the header.
    pub payload_len: usize,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Self {
        Self {
            src: packet.src(),
            dst: packet.dst(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
        }
    }

    /// Header and payload.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header, checksum filled in, at the start of `buf` and returns its length.
    /// The payload is not touched: it goes after the header, in the same buffer or not.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let total_len = u16::try_from(self.buffer_len()).map_err(|_| Error::TooLong)?;
        let header = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        header[field::VERSION_IHL] = 0x45; // version 4, five 32-bit words
        header[field::DSCP_ECN] = 0;
        header[field::TOTAL_LEN..field::TOTAL_LEN + 2].copy_from_slice(&total_len.to_be_bytes());
        header[field::IDENT..field::IDENT + 2].fill(0);
        header[field::FLAGS_FRAGMENT..field::FLAGS_FRAGMENT + 2].fill(0);
        header[field::TTL] = self.ttl;
        header[field::PROTOCOL] = self.protocol;
        header[field::CHECKSUM..field::CHECKSUM + 2].fill(0);
        header[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
        header[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
        let sum = checksum(header);
        header[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 28-byte UDP datagram with a correct header checksum, then 4 bytes of padding.
    const PADDED: [u8; 32] = [
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x00, 0x00, 198, 18, 0, 1, 198,
        18, 0, 2, // header
        0x00, 0x43, 0x00, 0x44, 0x00, 0x08, 0x00, 0x00, // UDP header, no data
        0xee, 0xee, 0xee, 0xee, // Ethernet padding
    ];

    fn padded() -> [u8; 32] {
        let mut bytes = PADDED;
        let sum = checksum(&bytes[..HEADER_LEN]);
        bytes[10..12].copy_from_slice(&sum.to_be_bytes());
        bytes
    }

    #[test]
    fn the_payload_ends_at_the_total_length_not_the_buffer() {
        let bytes = padded();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload().len(), 8);
        assert_eq!(packet.protocol(), PROTOCOL_UDP);
        assert_eq!(packet.src(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(packet.dst(), Ipv4Addr::new(198, 18, 0, 2));
        assert!(packet.verify_checksum());
        assert!(!packet.is_fragment());
    }

    #[test]
    fn a_wrong_version_header_length_or_total_length_is_refused() {
        let check = |edit: fn(&mut [u8; 32]), error| {
            let mut bytes = padded();
            edit(&mut bytes);
            assert_eq!(Packet::new_checked(&bytes[..]).err(), Some(error));
        };
        check(|b| b[0] = 0x65, Error::BadVersion);
        check(|b| b[0] = 0x44, Error::BadHeaderLength);
        check(|b| b[0] = 0x49, Error::BadHeaderLength); // 36 bytes: past the buffer
        check(|b| b[3] = 19, Error::BadLength); // shorter than the header
        check(|b| b[3] = 33, Error::BadLength); // past the buffer
        assert_eq!(
            Packet::new_checked(&padded()[..19]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn more_fragments_or_an_offset_make_a_fragment() {
        for (flags, fragment) in [(0x4000, false), (0x2000, true), (0x0001, true), (0, false)] {
            let mut bytes = padded();
            bytes[6..8].copy_from_slice(&u16::to_be_bytes(flags));
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(packet.is_fragment(), fragment, "{flags:#06x}");
        }
    }

    #[test]
    fn a_changed_byte_fails_the_header_checksum() {
        let mut bytes = padded();
        bytes[8] = 63;
        assert!(!Packet::new_checked(&bytes[..]).unwrap().verify_checksum());
    }

    #[test]
    fn an_emitted_header_matches_the_reference_bytes() {
        let repr = Repr {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            protocol: PROTOCOL_UDP,
            ttl: 64,
            payload_len: 8,
        };
        let mut buf = [0u8; 20];
        assert_eq!(repr.emit(&mut buf), Ok(HEADER_LEN));
        assert_eq!(buf, padded()[..20]);
        let too_long = Repr {
            payload_len: 65_516,
            ..repr
        };
        assert_eq!(too_long.emit(&mut buf), Err(Error::TooLong));
    }
}
