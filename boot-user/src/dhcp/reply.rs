//! Proxy replies: the proxy DHCPOFFER on port 67 and the DHCPACK on port 4011.
//!
//! Field choices follow the PXE 2.1 specification and what the peers that real firmware is
//! known to accept do: pixiecore (`dhcp.go`, `pxe.go`), dnsmasq (`rfc2131.c`, proxy mode) and
//! iPXE's acceptance rules (`src/net/udp/dhcp.c`).

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{self, DhcpOption, Flags, MessageType, Opcode, OptionCode};
use dhcproto::{Encodable, Encoder};

use super::classify::{BootProtocol, Request, ServerPort};
use super::policy::MAX_BOOT_FILE_LEN;

/// dnsmasq pads every reply to `MIN_PACKETSZ` (300): the BOOTP minimum (RFC 951 §3, RFC 1542
/// §2.1) that some PXE ROMs and relays still insist on. dhcproto does not pad.
pub const MIN_REPLY_LEN: usize = 300;

/// PXE 2.1 §2.2.5, option 43 sub-option 6 (PXE_DISCOVERY_CONTROL) bit 3: "use the boot file in
/// this offer" — no boot-server discovery, no menu. dnsmasq and pixiecore send it to BIOS ROMs.
const PXE_DISCOVERY_CONTROL: u8 = 6;
const DISCOVERY_USE_BOOT_FILE: u8 = 0b1000;
/// PXE 2.1 §2.2.5, sub-option 71 (PXE_BOOT_ITEM): echoed in a 4011 ACK when the client asked for
/// a boot item, as dnsmasq does.
const PXE_BOOT_ITEM: u8 = 71;

/// Which reply this is; also the label it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// To a DISCOVER on port 67: boot information without an address.
    ProxyOffer,
    /// To a REQUEST (or INFORM) on port 4011.
    ProxyAck,
}

impl ReplyKind {
    pub fn name(self) -> &'static str {
        match self {
            ReplyKind::ProxyOffer => "proxy_offer",
            ReplyKind::ProxyAck => "proxy_ack",
        }
    }
}

/// Where a reply goes. The backends turn this into a socket address or an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68, Ethernet broadcast, out of the ingress interface: the client has no
    /// address yet (RFC 2131 §4.1; the proxy offer never gives one).
    Broadcast,
    /// Back to where the request came from (port 4011 requests come from a configured client).
    Unicast(SocketAddrV4),
    /// To the relay agent's port 67 (RFC 2131 §4.1: giaddr wins over the broadcast flag).
    Relay(Ipv4Addr),
}

/// A reply ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub bytes: Vec<u8>,
    pub destination: Destination,
}

/// Why a reply could not be encoded (an internal limit, not the client's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("boot file is {0} bytes; the BOOTP file field holds {MAX_BOOT_FILE_LEN}")]
    BootFileTooLong(usize),
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// Builds the reply a proxy server owes `request`, arrived from `source`, carrying
/// `boot_file`. `server` is the address of the ingress interface: it goes into siaddr and
/// option 54, and iPXE sends its 4011 REQUEST there and accepts the ACK only with the same
/// option 54.
pub fn build(
    request: &Request,
    source: SocketAddrV4,
    server: Ipv4Addr,
    boot_file: &str,
) -> Result<Reply, ReplyError> {
    if boot_file.len() > MAX_BOOT_FILE_LEN {
        return Err(ReplyError::BootFileTooLong(boot_file.len()));
    }
    let client = &request.client;
    let req = &request.message;
    let protocol = client.protocol.unwrap_or(BootProtocol::Pxe);
    let (kind, message_type) = match client.port {
        ServerPort::Dhcp => (ReplyKind::ProxyOffer, MessageType::Offer),
        ServerPort::Pxe => (ReplyKind::ProxyAck, MessageType::Ack),
    };

    let mut reply = v4::Message::new_with_id(
        req.xid(),
        // ciaddr is echoed in the ACK (PXE 2.1 §2.2.4, dnsmasq); a DISCOVER's is 0 anyway.
        req.ciaddr(),
        // A proxy never assigns an address: yiaddr 0 is what makes this a proxy offer to iPXE
        // and EDK2 (EDK2 `PxeBcDhcp4.c`, `HttpBootDhcp4.c`: "proxy" offers have no yiaddr).
        Ipv4Addr::UNSPECIFIED,
        server,
        req.giaddr(),
        req.chaddr(),
    );
    reply
        .set_opcode(Opcode::BootReply)
        .set_htype(req.htype())
        .set_flags(match kind {
            // The offer is broadcast; say so, as dnsmasq and pixiecore do.
            ReplyKind::ProxyOffer => Flags::default().set_broadcast(),
            ReplyKind::ProxyAck => req.flags(),
        })
        .set_sname_str(server.to_string())
        .set_fname_str(boot_file);

    let opts = reply.opts_mut();
    opts.insert(DhcpOption::MessageType(message_type));
    opts.insert(DhcpOption::ServerIdentifier(server));
    // iPXE accepts a proxy offer only if option 60 starts with "PXEClient" (dhcp.c,
    // `dhcp_discovery_rx`); EDK2 HTTP boot wants "HTTPClient" back (HttpBootDhcp4.c).
    opts.insert(DhcpOption::ClassIdentifier(
        protocol.vendor_class().to_vec(),
    ));
    // PXE 2.1 §2.2.5 / RFC 4578 §2.3: echo the client's GUID when it sent one.
    if let Some(DhcpOption::ClientMachineIdentifier(guid)) =
        req.opts().get(OptionCode::ClientMachineIdentifier)
    {
        opts.insert(DhcpOption::ClientMachineIdentifier(guid.clone()));
    }
    if let Some(vendor) = pxe_vendor_options(request, kind) {
        opts.insert(DhcpOption::VendorExtensions(vendor));
    }

    let mut bytes = Vec::with_capacity(MIN_REPLY_LEN + MAX_BOOT_FILE_LEN);
    reply
        .encode(&mut Encoder::new(&mut bytes))
        .map_err(|e| ReplyError::Encode(e.to_string()))?;
    if bytes.len() < MIN_REPLY_LEN {
        // Zero octets after END are PAD options (RFC 2132 §3.1).
        bytes.resize(MIN_REPLY_LEN, 0);
    }

    let destination = match client.port {
        ServerPort::Dhcp if !client.giaddr.is_unspecified() => Destination::Relay(client.giaddr),
        ServerPort::Dhcp => Destination::Broadcast,
        ServerPort::Pxe => Destination::Unicast(source),
    };
    Ok(Reply {
        kind,
        bytes,
        destination,
    })
}

/// Option 43, only where it belongs.
///
/// - UEFI and HTTP-boot clients get none: without it EDK2 sends its REQUEST to port 4011 and
///   takes the boot file from our ACK (pixiecore; dnsmasq since 2.76, which found that UEFI
///   firmware mishandles discovery control).
/// - BIOS PXE ROMs get sub-option 6 = 8 in the offer: boot the file named here, skip boot-server
///   discovery (PXE 2.1 §2.2.5; dnsmasq, pixiecore).
/// - In a 4011 ACK, a requested boot item (sub-option 71) is echoed (dnsmasq `rfc2131.c`).
fn pxe_vendor_options(request: &Request, kind: ReplyKind) -> Option<Vec<u8>> {
    let client = &request.client;
    if client.protocol != Some(BootProtocol::Pxe) || client.arch.is_some_and(|a| a.is_uefi()) {
        return None;
    }
    match kind {
        ReplyKind::ProxyOffer => Some(vec![PXE_DISCOVERY_CONTROL, 1, DISCOVERY_USE_BOOT_FILE, 255]),
        ReplyKind::ProxyAck => {
            let Some(DhcpOption::VendorExtensions(sent)) =
                request.message.opts().get(OptionCode::VendorExtensions)
            else {
                return None;
            };
            let item = find_suboption(sent, PXE_BOOT_ITEM).filter(|v| v.len() == 4)?;
            let mut out = vec![PXE_BOOT_ITEM, 4];
            out.extend_from_slice(item);
            out.push(255);
            Some(out)
        }
    }
}

/// A sub-option inside an encapsulated option (RFC 2132 §8.4 framing). Bounded by the slice.
fn find_suboption(data: &[u8], code: u8) -> Option<&[u8]> {
    let mut at = 0;
    while let Some(&c) = data.get(at) {
        match c {
            0 => at += 1,
            255 => return None,
            _ => {
                let len = *data.get(at + 1)? as usize;
                let value = data.get(at + 2..at + 2 + len)?;
                if c == code {
                    return Some(value);
                }
                at += 2 + len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suboptions_are_found_and_overruns_are_not() {
        assert_eq!(
            find_suboption(&[6, 1, 8, 71, 4, 0x80, 0, 0, 0, 255], 71),
            Some(&[0x80, 0, 0, 0][..])
        );
        assert_eq!(find_suboption(&[71, 9, 1, 2], 71), None);
        assert_eq!(find_suboption(&[0, 0, 255, 71, 1, 1], 71), None);
        assert_eq!(find_suboption(&[], 71), None);
    }
}
