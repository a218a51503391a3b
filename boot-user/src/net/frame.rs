//! Ethernet frames for the XDP backend: parse a request frame (Ethernet, up to two VLAN tags,
//! IPv4, UDP) and build the reply frame around a DHCP payload, since AF_XDP sends whole frames
//! and no kernel stack fills in headers or checksums.
//!
//! The XDP program already checked that a frame it hands over is a UDP datagram to port 67 or
//! 4011; this parser checks again, because userspace must not trust a ring.

use std::net::{Ipv4Addr, SocketAddrV4};

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV4_MIN_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
/// Two tags at most (802.1ad outer + 802.1Q inner), as the XDP program parses.
pub const MAX_VLAN_TAGS: usize = 2;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;

/// A VLAN tag as it was on the wire: TPID and TCI (priority, DEI, VLAN id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    pub tci: u16,
}

impl VlanTag {
    pub fn id(&self) -> u16 {
        self.tci & 0x0fff
    }
}

/// Why a frame was not a UDP/IPv4 datagram we can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame truncated")]
    Truncated,
    #[error("not IPv4")]
    NotIpv4,
    #[error("more than {MAX_VLAN_TAGS} VLAN tags")]
    TooManyTags,
    #[error("bad IPv4 header")]
    BadIpv4,
    #[error("IPv4 fragment")]
    Fragment,
    #[error("not UDP")]
    NotUdp,
    #[error("bad UDP length")]
    BadUdpLength,
}

/// The headers of a request frame and where its UDP payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlans: Vec<VlanTag>,
    pub source: SocketAddrV4,
    pub destination: SocketAddrV4,
    pub payload: &'a [u8],
}

/// Parses Ethernet → VLAN tags → IPv4 → UDP.
pub fn parse(frame: &[u8]) -> Result<RequestFrame<'_>, FrameError> {
    let eth = frame.get(..ETH_HLEN).ok_or(FrameError::Truncated)?;
    let dst_mac = mac_at(eth, 0);
    let src_mac = mac_at(eth, 6);
    let mut ethertype = be16(eth, 12);
    let mut at = ETH_HLEN;
    let mut vlans = Vec::new();
    while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        if vlans.len() == MAX_VLAN_TAGS {
            return Err(FrameError::TooManyTags);
        }
        let tag = frame.get(at..at + VLAN_HLEN).ok_or(FrameError::Truncated)?;
        vlans.push(VlanTag {
            tpid: ethertype,
            tci: be16(tag, 0),
        });
        ethertype = be16(tag, 2);
        at += VLAN_HLEN;
    }
    if ethertype != ETH_P_IP {
        return Err(FrameError::NotIpv4);
    }
    let ip = frame.get(at..).ok_or(FrameError::Truncated)?;
    let first = *ip.first().ok_or(FrameError::Truncated)?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < IPV4_MIN_HLEN {
        return Err(FrameError::BadIpv4);
    }
    if ip.len() < ihl {
        return Err(FrameError::Truncated);
    }
    let total = usize::from(be16(ip, 2));
    if total < ihl || total > ip.len() {
        return Err(FrameError::BadIpv4);
    }
    // More-fragments flag or a fragment offset: not a whole datagram.
    if be16(ip, 6) & 0x3fff != 0 {
        return Err(FrameError::Fragment);
    }
    if ip[9] != IPPROTO_UDP {
        return Err(FrameError::NotUdp);
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    // Ethernet may pad short frames; the IPv4 total length says where the datagram ends.
    let udp = &ip[ihl..total];
    if udp.len() < UDP_HLEN {
        return Err(FrameError::Truncated);
    }
    let udp_len = usize::from(be16(udp, 4));
    if udp_len < UDP_HLEN || udp_len > udp.len() {
        return Err(FrameError::BadUdpLength);
    }
    Ok(RequestFrame {
        src_mac,
        dst_mac,
        vlans,
        source: SocketAddrV4::new(src_ip, be16(udp, 0)),
        destination: SocketAddrV4::new(dst_ip, be16(udp, 2)),
        payload: &udp[UDP_HLEN..udp_len],
    })
}

/// The addressing of a reply frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyHeaders<'a> {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Copied from the request, outer first, so the reply stays on the client's VLAN.
    pub vlans: &'a [VlanTag],
    pub source: SocketAddrV4,
    pub destination: SocketAddrV4,
}

/// The length of the frame [`build`] writes for a payload of `payload_len` bytes.
pub fn frame_len(vlans: usize, payload_len: usize) -> usize {
    ETH_HLEN + vlans * VLAN_HLEN + IPV4_MIN_HLEN + UDP_HLEN + payload_len
}

/// Writes the reply frame into `out` and returns its length, or `None` if `out` is too small
/// or the datagram would not fit an IPv4 length field.
pub fn build(h: &ReplyHeaders<'_>, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let len = frame_len(h.vlans.len(), payload.len());
    let ip_len = u16::try_from(IPV4_MIN_HLEN + UDP_HLEN + payload.len()).ok()?;
    let out = out.get_mut(..len)?;
    out[0..6].copy_from_slice(&h.dst_mac);
    out[6..12].copy_from_slice(&h.src_mac);
    let mut at = 12;
    for tag in h.vlans {
        out[at..at + 2].copy_from_slice(&tag.tpid.to_be_bytes());
        out[at + 2..at + 4].copy_from_slice(&tag.tci.to_be_bytes());
        at += VLAN_HLEN;
    }
    out[at..at + 2].copy_from_slice(&ETH_P_IP.to_be_bytes());
    at += 2;

    let ip = &mut out[at..at + IPV4_MIN_HLEN];
    ip[0] = 0x45; // IPv4, 5-word header
    ip[1] = 0; // DSCP/ECN
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&[0, 0]); // identification: unfragmented
    ip[6..8].copy_from_slice(&[0, 0]); // flags/fragment offset
    ip[8] = 64; // TTL
    ip[9] = IPPROTO_UDP;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&h.source.ip().octets());
    ip[16..20].copy_from_slice(&h.destination.ip().octets());
    let sum = checksum(&[ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    at += IPV4_MIN_HLEN;

    let udp_len = (UDP_HLEN + payload.len()) as u16; // < ip_len, checked above
    let (udp, data) = out[at..].split_at_mut(UDP_HLEN);
    udp[0..2].copy_from_slice(&h.source.port().to_be_bytes());
    udp[2..4].copy_from_slice(&h.destination.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    data.copy_from_slice(payload);
    // RFC 768: the checksum covers a pseudo-header, the UDP header and the data; a computed 0
    // is sent as 0xffff.
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&h.source.ip().octets());
    pseudo[4..8].copy_from_slice(&h.destination.ip().octets());
    pseudo[9] = IPPROTO_UDP;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    let sum = match checksum(&[&pseudo, udp, data]) {
        0 => 0xffff,
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    Some(len)
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &byte in *part {
            match odd.take() {
                Some(high) => sum += u32::from(u16::from_be_bytes([high, byte])),
                None => odd = Some(byte),
            }
        }
    }
    if let Some(high) = odd {
        sum += u32::from(u16::from_be_bytes([high, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    let mut mac = [0; 6];
    mac.copy_from_slice(&b[at..at + 6]);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(vlans: &[VlanTag]) -> ReplyHeaders<'_> {
        ReplyHeaders {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [0xff; 6],
            vlans,
            source: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 67),
            destination: SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
        }
    }

    #[test]
    fn built_frames_parse_back_with_valid_checksums() {
        let tags = [
            VlanTag {
                tpid: 0x88a8,
                tci: 100,
            },
            VlanTag {
                tpid: 0x8100,
                tci: 0x2000 | 42,
            },
        ];
        for vlans in [&tags[..0], &tags[..1], &tags[..]] {
            let payload: Vec<u8> = (0..301u16).map(|i| i as u8).collect();
            let mut buf = [0u8; 2048];
            let h = headers(vlans);
            let len = build(&h, &payload, &mut buf).unwrap();
            assert_eq!(len, frame_len(vlans.len(), payload.len()));
            let frame = parse(&buf[..len]).unwrap();
            assert_eq!(frame.payload, &payload[..]);
            assert_eq!(frame.vlans, vlans);
            assert_eq!(frame.source, h.source);
            assert_eq!(frame.destination, h.destination);
            assert_eq!(frame.src_mac, h.src_mac);
            let ip_at = ETH_HLEN + vlans.len() * VLAN_HLEN;
            // A header with its checksum in place sums to zero.
            assert_eq!(checksum(&[&buf[ip_at..ip_at + 20]]), 0);
            let udp = &buf[ip_at + 20..len];
            let mut pseudo = [0u8; 12];
            pseudo[0..4].copy_from_slice(&buf[ip_at + 12..ip_at + 16]);
            pseudo[4..8].copy_from_slice(&buf[ip_at + 16..ip_at + 20]);
            pseudo[9] = 17;
            pseudo[10..12].copy_from_slice(&(udp.len() as u16).to_be_bytes());
            assert_eq!(checksum(&[&pseudo, udp]), 0);
        }
    }

    #[test]
    fn checksum_matches_rfc_1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2, complemented 220d.
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            0x220d
        );
        // Odd lengths pad with a zero byte, also across part boundaries.
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2], &[0x03]]),
            checksum(&[&[0x00, 0x01, 0xf2, 0x03]])
        );
    }

    #[test]
    fn frames_are_refused_rather_than_misread() {
        let mut buf = [0u8; 512];
        let len = build(&headers(&[]), &[1, 2, 3], &mut buf).unwrap();
        let good = &buf[..len];
        for cut in 0..len {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut frag = good.to_vec();
        frag[14 + 6] = 0x20; // more fragments
        assert_eq!(parse(&frag), Err(FrameError::Fragment));
        let mut tcp = good.to_vec();
        tcp[14 + 9] = 6;
        assert_eq!(parse(&tcp), Err(FrameError::NotUdp));
        let mut ihl = good.to_vec();
        ihl[14] = 0x44;
        assert_eq!(parse(&ihl), Err(FrameError::BadIpv4));
        let mut udp_len = good.to_vec();
        udp_len[14 + 20 + 4] = 0xff;
        assert_eq!(parse(&udp_len), Err(FrameError::BadUdpLength));
        // Three tags are more than the XDP program looks through.
        let mut tagged = vec![0u8; 12];
        for _ in 0..3 {
            tagged.extend_from_slice(&[0x81, 0x00, 0, 1]);
        }
        tagged.extend_from_slice(&[0x08, 0x00]);
        tagged.extend_from_slice(&good[14..]);
        assert_eq!(parse(&tagged), Err(FrameError::TooManyTags));
    }

    #[test]
    fn ethernet_padding_after_the_datagram_is_ignored() {
        let mut buf = [0u8; 128];
        let len = build(&headers(&[]), &[9; 4], &mut buf).unwrap();
        let frame = parse(&buf[..len + 20]).unwrap();
        assert_eq!(frame.payload, &[9; 4]);
    }

    #[test]
    fn a_too_small_buffer_is_refused() {
        let mut buf = [0u8; 40];
        assert_eq!(build(&headers(&[]), &[0; 300], &mut buf), None);
    }
}
