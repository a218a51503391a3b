//! Whole UDP frames over IPv4 and IPv6: what the AF_XDP backend receives and sends. No kernel
//! stack fills in headers or checksums there, so the reply is written here around its payload,
//! in place.

use core::net::{SocketAddrV4, SocketAddrV6};

use super::ethernet::{self, VlanTags};
use super::{Error, MacAddr, ipv4, ipv6, udp};

/// Bytes in front of the UDP payload of a frame with `tags` VLAN tags: where the caller writes
/// the payload before [`emit_udp_frame`].
pub const fn headers_len(tags: usize) -> usize {
    ethernet::HEADER_LEN + tags * ethernet::TAG_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN
}

/// A reply frame's addressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRepr {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    /// The request's tags, outermost first, so the reply goes back on the client's VLAN with
    /// its priority.
    pub tags: VlanTags,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub ttl: u8,
}

impl FrameRepr {
    /// The TTL Linux gives a datagram by default (`net.ipv4.ip_default_ttl`).
    pub const DEFAULT_TTL: u8 = 64;

    pub fn headers_len(&self) -> usize {
        headers_len(self.tags.len())
    }
}

/// Writes the Ethernet (and VLAN), IPv4 and UDP headers in front of the `payload_len` bytes
/// the caller has already put at `buf[headers_len(tags)..]`, fills in both checksums, and
/// returns the frame's length.
pub fn emit_udp_frame(
    buf: &mut [u8],
    repr: &FrameRepr,
    payload_len: usize,
) -> Result<usize, Error> {
    let ip_at = ethernet::HEADER_LEN + repr.tags.len() * ethernet::TAG_LEN;
    let udp_at = ip_at + ipv4::HEADER_LEN;
    let frame_len = repr.headers_len() + payload_len;
    let udp = udp::Repr {
        src_port: repr.src.port(),
        dst_port: repr.dst.port(),
        payload_len,
    };
    let ip = ipv4::Repr {
        src: *repr.src.ip(),
        dst: *repr.dst.ip(),
        protocol: ipv4::PROTOCOL_UDP,
        ttl: repr.ttl,
        payload_len: udp.buffer_len(),
    };
    if ip.buffer_len() > usize::from(u16::MAX) {
        return Err(Error::TooLong);
    }
    let frame = buf.get_mut(..frame_len).ok_or(Error::BufferTooSmall)?;
    ethernet::Repr {
        dst: repr.dst_mac,
        src: repr.src_mac,
        tags: repr.tags,
        ethertype: ethernet::ethertype::IPV4,
    }
    .emit(frame)?;
    ip.emit(&mut frame[ip_at..])?;
    udp.emit(&mut frame[udp_at..], ip.src, ip.dst)?;
    Ok(frame_len)
}

/// A received frame that is a whole UDP datagram over IPv4: the three views, each checked.
/// Checksums are not verified here ([`ipv4::Packet::verify_checksum`],
/// [`udp::Packet::verify_checksum`]): a NIC or veth with checksum offload hands over frames
/// whose UDP sum is only partly filled in, which the kernel would accept.
#[derive(Debug, Clone, Copy)]
pub struct UdpFrame<'a> {
    pub ethernet: ethernet::Frame<&'a [u8]>,
    pub ip: ipv4::Packet<&'a [u8]>,
    pub udp: udp::Packet<&'a [u8]>,
}

impl<'a> UdpFrame<'a> {
    /// Ethernet → up to two VLAN tags → IPv4 (not a fragment) → UDP.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let ethernet = ethernet::Frame::new_checked(bytes)?;
        if ethernet.ethertype() != ethernet::ethertype::IPV4 {
            return Err(Error::NotIpv4);
        }
        let ip = ipv4::Packet::new_checked(ethernet.payload())?;
        if ip.is_fragment() {
            return Err(Error::Fragment);
        }
        if ip.protocol() != ipv4::PROTOCOL_UDP {
            return Err(Error::NotUdp);
        }
        let udp = udp::Packet::new_checked(ip.payload())?;
        Ok(Self { ethernet, ip, udp })
    }

    pub fn src(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip.src(), self.udp.src_port())
    }

    pub fn dst(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip.dst(), self.udp.dst_port())
    }

    /// The UDP data.
    pub fn payload(&self) -> &'a [u8] {
        self.udp.payload()
    }

    /// Both checksums right (a UDP checksum of 0, "none", counts as right).
    pub fn verify_checksums(&self) -> bool {
        self.ip.verify_checksum() && self.udp.verify_checksum(self.ip.src(), self.ip.dst())
    }
}

/// Bytes in front of the UDP payload of an IPv6 frame with `tags` VLAN tags and no extension
/// headers: where the caller writes the payload before [`emit_udp6_frame`].
pub const fn headers6_len(tags: usize) -> usize {
    ethernet::HEADER_LEN + tags * ethernet::TAG_LEN + ipv6::HEADER_LEN + udp::HEADER_LEN
}

/// An IPv6 reply frame's addressing. Scope ids are not written (they are local to a host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRepr6 {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub tags: VlanTags,
    pub src: SocketAddrV6,
    pub dst: SocketAddrV6,
    pub hop_limit: u8,
}

impl FrameRepr6 {
    pub fn headers_len(&self) -> usize {
        headers6_len(self.tags.len())
    }
}

/// Writes the Ethernet (and VLAN), IPv6 and UDP headers in front of the `payload_len` bytes the
/// caller has already put at `buf[headers6_len(tags)..]`, fills in the UDP checksum, and
/// returns the frame's length.
pub fn emit_udp6_frame(
    buf: &mut [u8],
    repr: &FrameRepr6,
    payload_len: usize,
) -> Result<usize, Error> {
    let ip_at = ethernet::HEADER_LEN + repr.tags.len() * ethernet::TAG_LEN;
    let udp_at = ip_at + ipv6::HEADER_LEN;
    let frame_len = repr.headers_len() + payload_len;
    let udp = udp::Repr {
        src_port: repr.src.port(),
        dst_port: repr.dst.port(),
        payload_len,
    };
    let ip = ipv6::Repr {
        src: *repr.src.ip(),
        dst: *repr.dst.ip(),
        next_header: ipv6::next_header::UDP,
        hop_limit: repr.hop_limit,
        payload_len: udp.buffer_len(),
    };
    if udp.buffer_len() > usize::from(u16::MAX) {
        return Err(Error::TooLong);
    }
    let frame = buf.get_mut(..frame_len).ok_or(Error::BufferTooSmall)?;
    ethernet::Repr {
        dst: repr.dst_mac,
        src: repr.src_mac,
        tags: repr.tags,
        ethertype: ethernet::ethertype::IPV6,
    }
    .emit(frame)?;
    ip.emit(&mut frame[ip_at..])?;
    udp.emit_v6(&mut frame[udp_at..], ip.src, ip.dst)?;
    Ok(frame_len)
}

/// A received frame that is a whole UDP datagram over IPv6, its extension headers walked
/// ([`ipv6::walk_extension_headers`]). As for [`UdpFrame`], the checksum is not verified here.
#[derive(Debug, Clone, Copy)]
pub struct UdpFrame6<'a> {
    pub ethernet: ethernet::Frame<&'a [u8]>,
    pub ip: ipv6::Packet<&'a [u8]>,
    pub udp: udp::Packet<&'a [u8]>,
}

impl<'a> UdpFrame6<'a> {
    /// Ethernet → up to two VLAN tags → IPv6 → extension headers (no fragment) → UDP.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let ethernet = ethernet::Frame::new_checked(bytes)?;
        if ethernet.ethertype() != ethernet::ethertype::IPV6 {
            return Err(Error::NotIpv6);
        }
        let ip = ipv6::Packet::new_checked(ethernet.payload())?;
        let upper = ip.upper_layer()?;
        if upper.protocol != ipv6::next_header::UDP {
            return Err(Error::NotUdp);
        }
        let udp = udp::Packet::new_checked(upper.data)?;
        Ok(Self { ethernet, ip, udp })
    }

    pub fn src(&self) -> SocketAddrV6 {
        SocketAddrV6::new(self.ip.src(), self.udp.src_port(), 0, 0)
    }

    pub fn dst(&self) -> SocketAddrV6 {
        SocketAddrV6::new(self.ip.dst(), self.udp.dst_port(), 0, 0)
    }

    pub fn payload(&self) -> &'a [u8] {
        self.udp.payload()
    }

    /// The UDP checksum right (over IPv6 it is mandatory: 0 is wrong).
    pub fn verify_checksum(&self) -> bool {
        self.udp.verify_checksum_v6(self.ip.src(), self.ip.dst())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::VlanTag;
    use core::net::Ipv4Addr;

    fn repr(tags: &[VlanTag]) -> FrameRepr {
        FrameRepr {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr::BROADCAST,
            tags: VlanTags::new(tags).unwrap(),
            src: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 67),
            dst: SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
            ttl: FrameRepr::DEFAULT_TTL,
        }
    }

    #[test]
    fn an_emitted_frame_parses_back_with_both_checksums_right() {
        let tags = [
            VlanTag {
                tpid: 0x88a8,
                tci: 100,
            },
            VlanTag {
                tpid: 0x8100,
                tci: 0xa02a,
            },
        ];
        for tags in [&[][..], &tags[..1], &tags[..]] {
            let repr = repr(tags);
            let mut buf = [0u8; 128];
            let at = repr.headers_len();
            buf[at..at + 5].copy_from_slice(b"hello");
            let len = emit_udp_frame(&mut buf, &repr, 5).unwrap();
            assert_eq!(len, headers_len(tags.len()) + 5);
            let frame = UdpFrame::parse(&buf[..len]).unwrap();
            assert!(frame.verify_checksums());
            assert_eq!(frame.payload(), b"hello");
            assert_eq!((frame.src(), frame.dst()), (repr.src, repr.dst));
            assert_eq!(frame.ethernet.tags(), repr.tags);
            assert_eq!(frame.ethernet.src(), repr.src_mac);
            assert_eq!(frame.ip.ttl(), 64);
            assert!(!frame.ip.dont_fragment());
        }
    }

    #[test]
    fn an_emitted_v6_frame_parses_back_with_its_checksum_right() {
        use core::net::Ipv6Addr;
        let tag = [VlanTag {
            tpid: 0x8100,
            tci: 42,
        }];
        for tags in [&[][..], &tag[..]] {
            let repr = FrameRepr6 {
                src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
                dst_mac: MacAddr([0x52, 0x54, 0, 0x18, 1, 1]),
                tags: VlanTags::new(tags).unwrap(),
                src: SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1), 547, 0, 0),
                dst: SocketAddrV6::new(
                    Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe18, 0x0101),
                    546,
                    0,
                    0,
                ),
                hop_limit: 255,
            };
            let mut buf = [0u8; 128];
            let at = repr.headers_len();
            buf[at..at + 5].copy_from_slice(b"hello");
            let len = emit_udp6_frame(&mut buf, &repr, 5).unwrap();
            assert_eq!(len, headers6_len(tags.len()) + 5);
            let frame = UdpFrame6::parse(&buf[..len]).unwrap();
            assert!(frame.verify_checksum());
            assert_eq!(frame.payload(), b"hello");
            assert_eq!((frame.src(), frame.dst()), (repr.src, repr.dst));
            assert_eq!(frame.ip.hop_limit(), 255);
            assert_eq!(frame.ethernet.tags(), repr.tags);
            assert_eq!(UdpFrame::parse(&buf[..len]).err(), Some(Error::NotIpv4));
        }
    }

    #[test]
    fn a_buffer_too_small_for_the_frame_is_refused() {
        let mut buf = [0u8; 46];
        assert_eq!(
            emit_udp_frame(&mut buf, &repr(&[]), 5),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(emit_udp_frame(&mut buf, &repr(&[]), 4), Ok(46));
    }
}
