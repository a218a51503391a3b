//! Ethernet II frames (IEEE 802.3) with up to two VLAN tags (IEEE 802.1Q §9.6): an 802.1ad
//! service tag and an 802.1Q customer tag in front of it, as a provider network's QinQ puts
//! them. The XDP program looks through the same two.
//!
//! ```text
//! dst(6) src(6) [TPID(2) TCI(2)]{0,2} EtherType(2) payload
//! ```

use super::{Error, MacAddr, be16};

/// Destination, source and EtherType.
pub const HEADER_LEN: usize = 14;
/// A VLAN tag: TPID and TCI.
pub const TAG_LEN: usize = 4;
/// Tags looked through: an 802.1ad S-tag and an 802.1Q C-tag.
pub const MAX_TAGS: usize = 2;
/// The VLAN identifier in a tag's TCI (IEEE 802.1Q §9.6); the top four bits are PCP and DEI.
pub const VLAN_ID_MASK: u16 = 0x0fff;

/// EtherType values (IEEE Registration Authority).
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    /// An 802.1Q customer tag's TPID.
    pub const VLAN_8021Q: u16 = 0x8100;
    /// An 802.1ad service tag's TPID.
    pub const VLAN_8021AD: u16 = 0x88a8;

    /// Whether a frame's EtherType field holds a VLAN tag's TPID instead.
    pub const fn is_vlan_tag(value: u16) -> bool {
        value == VLAN_8021Q || value == VLAN_8021AD
    }
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    /// The EtherType of an untagged frame, the first tag's TPID of a tagged one.
    pub const TYPE: usize = 12;
}

/// A VLAN tag as it was on the wire, kept whole so that a reply carries the client's
/// priority bits back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VlanTag {
    /// [`ethertype::VLAN_8021Q`] or [`ethertype::VLAN_8021AD`].
    pub tpid: u16,
    /// Priority (3 bits), drop eligibility (1 bit), VLAN id (12 bits).
    pub tci: u16,
}

impl VlanTag {
    /// The VLAN id: the low 12 bits of the TCI.
    pub const fn id(self) -> u16 {
        self.tci & VLAN_ID_MASK
    }
}

/// Up to [`MAX_TAGS`] VLAN tags, outermost first, without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VlanTags {
    tags: [VlanTag; MAX_TAGS],
    len: u8,
}

impl VlanTags {
    /// An untagged frame's.
    pub const NONE: VlanTags = VlanTags {
        tags: [VlanTag { tpid: 0, tci: 0 }; MAX_TAGS],
        len: 0,
    };

    /// The tags, outermost first; more than [`MAX_TAGS`] is an error.
    pub fn new(tags: &[VlanTag]) -> Result<Self, Error> {
        let mut all = Self::NONE;
        for &tag in tags {
            all.push(tag)?;
        }
        Ok(all)
    }

    /// Appends an inner tag.
    pub fn push(&mut self, tag: VlanTag) -> Result<(), Error> {
        let slot = self
            .tags
            .get_mut(usize::from(self.len))
            .ok_or(Error::TooManyTags)?;
        *slot = tag;
        self.len += 1;
        Ok(())
    }

    pub fn as_slice(&self) -> &[VlanTag] {
        &self.tags[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The VLAN the sender is on: the innermost tag's id.
    pub fn vlan_id(&self) -> Option<u16> {
        self.as_slice().last().map(|tag| tag.id())
    }
}

/// A view of an Ethernet frame whose header and tags fit its buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
    /// Tags in front of the EtherType, counted by `new_checked`.
    tags: u8,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks that the header, every tag and the EtherType after them are inside `buffer`.
    /// A third tag is [`Error::TooManyTags`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let mut tags = 0;
        while ethertype::is_vlan_tag(be16(bytes, field::TYPE + TAG_LEN * tags)) {
            if tags == MAX_TAGS {
                return Err(Error::TooManyTags);
            }
            tags += 1;
            if bytes.len() < HEADER_LEN + TAG_LEN * tags {
                return Err(Error::Truncated);
            }
        }
        Ok(Self {
            buffer,
            tags: tags as u8,
        })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst(&self) -> MacAddr {
        MacAddr(mac_at(self.buffer.as_ref(), field::DST.start))
    }

    pub fn src(&self) -> MacAddr {
        MacAddr(mac_at(self.buffer.as_ref(), field::SRC.start))
    }

    /// The tags, outermost first.
    pub fn tags(&self) -> VlanTags {
        let bytes = self.buffer.as_ref();
        let mut tags = VlanTags::NONE;
        for i in 0..usize::from(self.tags) {
            let at = field::TYPE + TAG_LEN * i;
            tags.tags[i] = VlanTag {
                tpid: be16(bytes, at),
                tci: be16(bytes, at + 2),
            };
        }
        tags.len = self.tags;
        tags
    }

    /// The EtherType after the tags: the payload's protocol.
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), self.header_len() - 2)
    }

    /// Header and tags: where the payload starts.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + TAG_LEN * usize::from(self.tags)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Frame<&'a T> {
    /// Everything after the header, including any padding a short frame got on the wire:
    /// only the payload's own length field (IPv4 total length) tells where it ends.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// An Ethernet header to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// Written outermost first.
    pub tags: VlanTags,
    pub ethertype: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Self {
        Self {
            dst: frame.dst(),
            src: frame.src(),
            tags: frame.tags(),
            ethertype: frame.ethertype(),
        }
    }

    /// The header's length, tags included.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + TAG_LEN * self.tags.len()
    }

    /// Writes the header at the start of `buf` and returns its length; the payload goes after.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.buffer_len();
        let header = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        header[field::DST].copy_from_slice(&self.dst.octets());
        header[field::SRC].copy_from_slice(&self.src.octets());
        let mut at = field::TYPE;
        for tag in self.tags.as_slice() {
            header[at..at + 2].copy_from_slice(&tag.tpid.to_be_bytes());
            header[at + 2..at + 4].copy_from_slice(&tag.tci.to_be_bytes());
            at += TAG_LEN;
        }
        header[at..at + 2].copy_from_slice(&self.ethertype.to_be_bytes());
        Ok(len)
    }
}

fn mac_at(bytes: &[u8], at: usize) -> [u8; 6] {
    let mut mac = [0; 6];
    mac.copy_from_slice(&bytes[at..at + 6]);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const QINQ: [u8; 26] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x52, 0x54, 0x00, 0x18, 0x00, 0x01, // src
        0x88, 0xa8, 0x00, 0x64, // S-tag, VLAN 100
        0x81, 0x00, 0xa0, 0x2a, // C-tag, priority 5, VLAN 42
        0x08, 0x00, // IPv4
        0x45, 0x00, 0x00, 0x14, // payload
    ];

    #[test]
    fn a_qinq_frame_shows_both_tags_and_the_inner_ethertype() {
        let frame = Frame::new_checked(&QINQ[..]).unwrap();
        assert_eq!(frame.dst(), MacAddr::BROADCAST);
        assert_eq!(frame.src(), MacAddr([0x52, 0x54, 0x00, 0x18, 0x00, 0x01]));
        let tags = frame.tags();
        assert_eq!(tags.len(), 2);
        assert_eq!(
            tags.as_slice()[0],
            VlanTag {
                tpid: 0x88a8,
                tci: 100
            }
        );
        assert_eq!(tags.as_slice()[1].id(), 42);
        assert_eq!(tags.as_slice()[1].tci >> 13, 5);
        assert_eq!(tags.vlan_id(), Some(42));
        assert_eq!(frame.ethertype(), ethertype::IPV4);
        assert_eq!(frame.header_len(), 22);
        assert_eq!(frame.payload(), &[0x45, 0x00, 0x00, 0x14]);
    }

    #[test]
    fn a_third_tag_is_refused() {
        let mut frame = [0u8; 30];
        for at in [12, 16, 20] {
            frame[at..at + 2].copy_from_slice(&[0x81, 0x00]);
        }
        assert_eq!(
            Frame::new_checked(&frame[..]).err(),
            Some(Error::TooManyTags)
        );
    }

    #[test]
    fn a_frame_cut_inside_its_tags_is_truncated() {
        for len in 0..22 {
            assert_eq!(
                Frame::new_checked(&QINQ[..len]).err(),
                Some(Error::Truncated),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn an_emitted_header_parses_back() {
        let frame = Frame::new_checked(&QINQ[..]).unwrap();
        let repr = Repr::parse(&frame);
        let mut buf = [0u8; 22];
        assert_eq!(repr.emit(&mut buf), Ok(22));
        assert_eq!(buf, QINQ[..22]);
        assert_eq!(repr.emit(&mut buf[..21]), Err(Error::BufferTooSmall));
    }
}
