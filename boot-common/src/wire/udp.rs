//! UDP datagrams (RFC 768).
//!
//! ```text
//! 0   source port(16)     destination port(16)
//! 4   length(16)          checksum(16)
//! 8   data, up to length
//! ```

use core::net::{Ipv4Addr, Ipv6Addr};

use super::checksum::{Checksum, ipv4_pseudo_header};
use super::ipv4::PROTOCOL_UDP;
use super::{Error, be16, ipv6};

pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram whose length field covers the header and lies within the buffer.
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
        let len = usize::from(be16(bytes, field::LENGTH));
        if len < HEADER_LEN || len > bytes.len() {
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

    pub fn src_port(&self) -> u16 {
        be16(self.bytes(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.bytes(), field::DST_PORT)
    }

    /// Header and data.
    pub fn len(&self) -> u16 {
        be16(self.bytes(), field::LENGTH)
    }

    /// Whether the datagram carries no data.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) == HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        be16(self.bytes(), field::CHECKSUM)
    }

    /// Whether the checksum over the IPv4 pseudo-header, header and data is right, or absent:
    /// over IPv4 a checksum of 0 means the sender computed none (RFC 768, "Fields").
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0
            || ipv4_pseudo_header(src, dst, PROTOCOL_UDP, self.len())
                .add_bytes(&self.bytes()[..usize::from(self.len())])
                .finish()
                == 0
    }

    /// Whether the checksum over the IPv6 pseudo-header, header and data is right. Over IPv6
    /// the checksum is mandatory: a receiver discards a datagram whose checksum is 0
    /// (RFC 8200 §8.1).
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.checksum() != 0
            && ipv6::pseudo_header(src, dst, PROTOCOL_UDP, u32::from(self.len()))
                .add_bytes(&self.bytes()[..usize::from(self.len())])
                .finish()
                == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The data: the length field's bytes less the header, whatever follows in the buffer.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

/// A UDP header to write in front of data the caller has already put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Bytes of data after the header.
    pub payload_len: usize,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Self {
        Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        }
    }

    /// Header and data.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header at the start of `datagram`, whose next `payload_len` bytes already
    /// hold the data, and fills in the checksum over the IPv4 pseudo-header of `src` and `dst`.
    /// Returns the datagram's length.
    pub fn emit(&self, datagram: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<usize, Error> {
        let len = u16::try_from(self.buffer_len()).map_err(|_| Error::TooLong)?;
        self.emit_with(datagram, ipv4_pseudo_header(src, dst, PROTOCOL_UDP, len))
    }

    /// [`Repr::emit`] over IPv6: the checksum over the IPv6 pseudo-header of `src` and `dst`
    /// (RFC 8200 §8.1).
    pub fn emit_v6(
        &self,
        datagram: &mut [u8],
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) -> Result<usize, Error> {
        let len = u16::try_from(self.buffer_len()).map_err(|_| Error::TooLong)?;
        self.emit_with(
            datagram,
            ipv6::pseudo_header(src, dst, PROTOCOL_UDP, u32::from(len)),
        )
    }

    /// Writes the header and the checksum, `pseudo` being the sum of the pseudo-header.
    fn emit_with(&self, datagram: &mut [u8], pseudo: Checksum) -> Result<usize, Error> {
        let len = self.buffer_len();
        let len_field = u16::try_from(len).map_err(|_| Error::TooLong)?;
        let datagram = datagram.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        datagram[field::SRC_PORT..field::SRC_PORT + 2]
            .copy_from_slice(&self.src_port.to_be_bytes());
        datagram[field::DST_PORT..field::DST_PORT + 2]
            .copy_from_slice(&self.dst_port.to_be_bytes());
        datagram[field::LENGTH..field::LENGTH + 2].copy_from_slice(&len_field.to_be_bytes());
        datagram[field::CHECKSUM..field::CHECKSUM + 2].fill(0);
        let sum = match pseudo.add_bytes(datagram).finish() {
            // 0 means "no checksum" on the wire over IPv4, and is forbidden over IPv6; its one's
            // complement twin says the same sum (RFC 768, "Fields"; RFC 8200 §8.1).
            0 => 0xffff,
            sum => sum,
        };
        datagram[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&sum.to_be_bytes());
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    #[test]
    fn the_length_field_must_cover_the_header_and_fit_the_buffer() {
        let mut bytes = [0, 67, 0, 68, 0, 10, 0, 0, 1, 2, 3];
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload(), &[1, 2]);
        assert_eq!((packet.src_port(), packet.dst_port()), (67, 68));
        for (len, error) in [(7, Error::BadLength), (12, Error::BadLength)] {
            bytes[5] = len;
            assert_eq!(Packet::new_checked(&bytes[..]).err(), Some(error));
        }
        assert_eq!(
            Packet::new_checked(&bytes[..7]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn an_emitted_datagram_verifies_and_a_changed_one_does_not() {
        let mut buf = [0u8; 11];
        buf[8..].copy_from_slice(b"abc");
        let repr = Repr {
            src_port: 67,
            dst_port: 68,
            payload_len: 3,
        };
        assert_eq!(repr.emit(&mut buf, SRC, DST), Ok(11));
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.verify_checksum(SRC, DST));
        assert_eq!(Repr::parse(&packet), repr);
        assert!(!packet.verify_checksum(SRC, Ipv4Addr::new(198, 18, 0, 3)));
        assert_eq!(
            repr.emit(&mut buf[..10], SRC, DST),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn an_emitted_v6_datagram_verifies_and_a_zero_checksum_does_not() {
        let (src, dst) = (
            core::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
            core::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe18, 0x0101),
        );
        let mut buf = [0u8; 11];
        buf[8..].copy_from_slice(b"abc");
        let repr = Repr {
            src_port: 547,
            dst_port: 546,
            payload_len: 3,
        };
        assert_eq!(repr.emit_v6(&mut buf, src, dst), Ok(11));
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.verify_checksum_v6(src, dst));
        assert!(!packet.verify_checksum_v6(src, core::net::Ipv6Addr::LOCALHOST));
        buf[6..8].fill(0);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(!packet.verify_checksum_v6(src, dst), "mandatory over IPv6");
    }

    #[test]
    fn a_computed_zero_is_sent_as_all_ones() {
        // Find data whose checksum comes out 0: two payload octets chosen to cancel the rest.
        let repr = Repr {
            src_port: 67,
            dst_port: 68,
            payload_len: 2,
        };
        let mut buf = [0u8; 10];
        repr.emit(&mut buf, SRC, DST).unwrap();
        // With the payload equal to the checksum just computed, the new sum is all ones, whose
        // complement is 0.
        let sum = [buf[6], buf[7]];
        buf[8..].copy_from_slice(&sum);
        repr.emit(&mut buf, SRC, DST).unwrap();
        assert_eq!(&buf[6..8], &[0xff, 0xff]);
        assert!(
            Packet::new_checked(&buf[..])
                .unwrap()
                .verify_checksum(SRC, DST)
        );
    }
}
