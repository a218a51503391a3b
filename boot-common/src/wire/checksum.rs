//! The Internet checksum (RFC 1071): the one's complement of the one's complement sum of the
//! data taken as big-endian 16-bit words. IPv4 (RFC 791 §3.1) sums its header; UDP
//! (RFC 768) sums a pseudo-header, its header and its data.

use core::net::Ipv4Addr;

/// A running one's complement sum over any number of slices of any length. A slice of odd
/// length leaves its last octet waiting for the first octet of the next one, as if the data
/// were contiguous: the UDP sum runs over a pseudo-header that is not next to the datagram in
/// memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum {
    /// Words added with the end-around carries deferred to [`Checksum::sum`] (RFC 1071 §2 (C)):
    /// a `u64` cannot overflow on any buffer that fits in memory (2^48 words of at most 0xffff).
    sum: u64,
    /// The high octet of a word whose low octet is the next slice's first.
    pending: Option<u8>,
}

impl Checksum {
    pub const fn new() -> Self {
        Self {
            sum: 0,
            pending: None,
        }
    }

    /// Adds `bytes` as if they followed everything added before.
    #[must_use]
    pub fn add_bytes(mut self, mut bytes: &[u8]) -> Self {
        if let Some(high) = self.pending.take() {
            let Some((&low, rest)) = bytes.split_first() else {
                self.pending = Some(high);
                return self;
            };
            self.sum += u64::from(u16::from_be_bytes([high, low]));
            bytes = rest;
        }
        // Eight octets at a time as native-endian lanes: the one's complement sum commutes
        // with swapping the octets of every word (RFC 1071 §2 (B)), so the lanes' folded sum is
        // swapped into network order once at the end. Each chunk adds less than 2^33: the
        // `u64` cannot overflow on any buffer that fits in memory.
        let mut chunks = bytes.chunks_exact(8);
        let mut lanes: u64 = 0;
        for chunk in &mut chunks {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(chunk);
            let v = u64::from_ne_bytes(eight);
            lanes += (v & 0xffff_ffff) + (v >> 32);
        }
        self.sum += u64::from(u16::from_be(fold(lanes)));
        let mut words = chunks.remainder().chunks_exact(2);
        for word in &mut words {
            self.sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
        }
        if let [last] = words.remainder() {
            self.pending = Some(*last);
        }
        self
    }

    /// The folded sum, not complemented: what the RFC 1071 examples show.
    pub fn sum(self) -> u16 {
        // An odd total length is padded with a zero octet on the right (RFC 768, "Fields";
        // RFC 1071 §4.1).
        fold(self.sum + self.pending.map_or(0, |high| u64::from(high) << 8))
    }

    /// The checksum to write: the complement of [`Checksum::sum`]. Over data that includes a
    /// correct checksum field the sum is all ones and this is 0, which is how a receiver
    /// verifies (RFC 1071 §1 (3)).
    pub fn finish(self) -> u16 {
        !self.sum()
    }
}

/// `sum` with its end-around carries added back in (RFC 1071 §2 (C)), to 16 bits.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum of one contiguous buffer.
pub fn checksum(bytes: &[u8]) -> u16 {
    Checksum::new().add_bytes(bytes).finish()
}

/// A sum started with the IPv4 pseudo-header of UDP (RFC 768, "Fields"): source address,
/// destination address, a zero octet, the protocol and the UDP length. Add the UDP header
/// and data to it.
pub fn ipv4_pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> Checksum {
    let [len_high, len_low] = length.to_be_bytes();
    Checksum::new()
        .add_bytes(&src.octets())
        .add_bytes(&dst.octets())
        .add_bytes(&[0, protocol, len_high, len_low])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 §3, "Numerical Examples": the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
    const RFC1071_EXAMPLE: [u8; 8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];

    #[test]
    fn the_rfc_1071_example_sums_to_ddf2() {
        assert_eq!(Checksum::new().add_bytes(&RFC1071_EXAMPLE).sum(), 0xddf2);
        assert_eq!(checksum(&RFC1071_EXAMPLE), !0xddf2);
    }

    #[test]
    fn slices_of_odd_length_sum_as_if_contiguous() {
        for split in 0..=RFC1071_EXAMPLE.len() {
            let (a, b) = RFC1071_EXAMPLE.split_at(split);
            for cut in 0..=b.len() {
                let (b, c) = b.split_at(cut);
                assert_eq!(
                    Checksum::new().add_bytes(a).add_bytes(b).add_bytes(c).sum(),
                    0xddf2
                );
            }
        }
    }

    #[test]
    fn an_odd_total_length_is_padded_with_a_zero_octet() {
        assert_eq!(
            Checksum::new().add_bytes(&[0x12, 0x34, 0x56]).sum(),
            0x1234 + 0x5600
        );
    }

    #[test]
    fn data_that_includes_its_checksum_sums_to_zero() {
        let mut data = [0x45, 0x00, 0x01, 0x73, 0x12, 0x34, 0x00, 0x00];
        let sum = checksum(&data);
        data[6..8].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(&data), 0);
    }

    #[test]
    fn carries_fold_back_in() {
        // 0xffff + 0xffff + 0x0002 = 0x20000, whose carry folds back in as 0x0002.
        assert_eq!(
            Checksum::new()
                .add_bytes(&[0xff, 0xff, 0xff, 0xff, 0, 2])
                .sum(),
            0x0002
        );
    }
}
