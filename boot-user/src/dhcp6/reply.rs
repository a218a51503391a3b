//! Proxy replies over DHCPv6: an Advertise to a boot Solicit, a Reply to a Request or
//! Information-request, each wrapped in Relay-Reply messages when the request was relayed.
//!
//! The options, in this order, and what decided them:
//! - Client Identifier, copied (RFC 8415 §18.3.9, §21.2); EDK2 and iPXE drop a reply without
//!   their own (EDK2 `Dhcp6Io.c`; iPXE `dhcpv6.c`, `dhcpv6_check_duid`).
//! - Server Identifier, our DUID-LL (RFC 8415 §11.4, §21.3): EDK2's PXEv6 copies it into the
//!   Request it sends to port 4011 (`PxeBcDhcp6.c`, `PxeBcRequestBootService`).
//! - Vendor Class, when the client sent one: enterprise 343 and the bare "PXEClient" or
//!   "HTTPClient" (RFC 8415 §21.16). EDK2 calls an offer PXE or HTTP only by these bytes
//!   (`PxeBcParseDhcp6Packet`: length ≥ 13, enterprise, "PXEClient" at data[6];
//!   `HttpBootParseDhcp6Packet`: length ≥ 16, "HTTPClient" at data[6]).
//! - Boot File URL, last (RFC 5970 §3.1): `tftp://[addr]/file` for PXE (EDK2
//!   `PxeBcExtractBootFileUrl` reads exactly that), the policy's URL for HTTP boot and iPXE.
//!   EDK2's HTTP boot reads it with `AsciiStrLen`, so nothing but the zero-filled rest of its
//!   buffer may follow it.
//!
//! **No IA_NA**, ever: EDK2 takes an offer without one for a proxy offer (the two parsers
//! above: "the offer with assigned client address is NOT a proxy offer"), and an IA_NA with
//! status NoAddrsAvail makes it drop the Advertise (with its IAID) or hang (with another: it
//! reads only the high byte of the status code). Measured on Debian 12's OVMF, issue 16.

use std::net::{Ipv6Addr, SocketAddrV6};

use boot_common::wire::dhcpv6::{self, message_type, option};

use super::classify::{Request, ServerPort};

/// Room for a reply: what fits the IPv6 minimum MTU without fragments (1280 − 40 IPv6 − 8 UDP,
/// RFC 8200 §5). Ours are about 150 bytes before relay wrapping; a request whose relay chain
/// would not fit is not answered ([`ReplyError::TooLong`]).
pub const MAX_REPLY_LEN: usize = 1232;

/// Which reply this is; also the label it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// To a Solicit on port 547: boot information, no address.
    Advertise,
    /// To an Information-request, or a Request that names us, on port 547.
    Reply,
    /// To EDK2's Request on port 4011.
    PxeReply,
}

impl ReplyKind {
    pub const ALL: [ReplyKind; 3] = [ReplyKind::Advertise, ReplyKind::Reply, ReplyKind::PxeReply];

    pub fn name(self) -> &'static str {
        match self {
            ReplyKind::Advertise => "advertise",
            ReplyKind::Reply => "reply",
            ReplyKind::PxeReply => "pxe_reply",
        }
    }
}

/// Where a reply goes. The backends turn this into a socket address (adding the ingress
/// interface as the scope of a link-local one) or an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The client's own address, port 546 (RFC 8415 §7.2): the source of its request.
    Client(Ipv6Addr),
    /// Back to the source address and port of the request (port 4011 requests).
    Unicast(SocketAddrV6),
    /// The relay agent that sent the Relay-Forward, port 547 (RFC 8415 §19.3).
    Relay(Ipv6Addr),
}

/// A reply's bytes, held inline: building one allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReplyBytes {
    buf: [u8; MAX_REPLY_LEN],
    len: usize,
}

impl std::ops::Deref for ReplyBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for ReplyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplyBytes({} bytes)", self.len)
    }
}

/// A reply ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub bytes: ReplyBytes,
    pub destination: Destination,
}

/// Why a reply could not be encoded (an internal limit, not the client's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply would be longer than {MAX_REPLY_LEN} bytes")]
    TooLong,
}

/// The boot file URL: a whole URL from the policy, or a TFTP loader made into one with our
/// address (RFC 5970 §3.1; EDK2 wants the address in brackets, `PxeBcExtractBootFileUrl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootUrl<'a> {
    Url(&'a str),
    Tftp { server: Ipv6Addr, file: &'a str },
}

/// Builds the reply a proxy owes `request`, which arrived from `source` on `port`, naming
/// `url`; `server_duid` is our Server Identifier.
pub fn build(
    request: &Request<'_>,
    source: SocketAddrV6,
    server_duid: &[u8],
    url: BootUrl<'_>,
) -> Result<Reply, ReplyError> {
    let client = &request.client;
    let (kind, msg_type) = match (client.port, client.message_type) {
        (ServerPort::Dhcp, message_type::SOLICIT) => {
            (ReplyKind::Advertise, message_type::ADVERTISE)
        }
        (ServerPort::Dhcp, _) => (ReplyKind::Reply, message_type::REPLY),
        (ServerPort::Pxe, _) => (ReplyKind::PxeReply, message_type::REPLY),
    };
    let too_long = |_| ReplyError::TooLong;
    // Two buffers: the message, then each relay level wrapped around the one before.
    let mut a = ReplyBytes {
        buf: [0; MAX_REPLY_LEN],
        len: 0,
    };
    let mut b = a;
    let mut writer =
        dhcpv6::Writer::new(&mut a.buf, msg_type, client.transaction_id).map_err(too_long)?;
    if let Some(client_id) = request.client_id {
        writer
            .option(option::CLIENT_ID, client_id)
            .map_err(too_long)?;
    }
    writer
        .option(option::SERVER_ID, server_duid)
        .map_err(too_long)?;
    if let Some(protocol) = client.protocol {
        let class = protocol.vendor_class();
        let class_len = (class.len() as u16).to_be_bytes();
        writer
            .option_parts(
                option::VENDOR_CLASS,
                &[&dhcpv6::ENTERPRISE_INTEL.to_be_bytes(), &class_len, class],
            )
            .map_err(too_long)?;
    }
    match url {
        BootUrl::Url(url) => writer.option(option::BOOTFILE_URL, url.as_bytes()),
        BootUrl::Tftp { server, file } => {
            let mut address = AddressText::new();
            let host = address.write(server);
            writer.option_parts(
                option::BOOTFILE_URL,
                &[b"tftp://[", host, b"]/", file.as_bytes()],
            )
        }
    }
    .map_err(too_long)?;
    a.len = writer.finish();

    // Innermost relay first: each Relay-Reply carries the level inside it (RFC 8415 §19.3).
    let (mut inner, mut outer) = (&mut a, &mut b);
    for relay in request.relays().rev() {
        let mut writer = dhcpv6::Writer::relay(
            &mut outer.buf,
            message_type::RELAY_REPL,
            relay.hop_count,
            relay.link_address,
            relay.peer_address,
        )
        .map_err(too_long)?;
        if let Some(interface_id) = relay.interface_id {
            writer
                .option(option::INTERFACE_ID, interface_id)
                .map_err(too_long)?;
        }
        writer
            .option(option::RELAY_MSG, &inner.buf[..inner.len])
            .map_err(too_long)?;
        outer.len = writer.finish();
        std::mem::swap(&mut inner, &mut outer);
    }
    let destination = match client.port {
        _ if client.relays > 0 => Destination::Relay(*source.ip()),
        ServerPort::Dhcp => Destination::Client(*source.ip()),
        ServerPort::Pxe => Destination::Unicast(source),
    };
    Ok(Reply {
        kind,
        bytes: *inner,
        destination,
    })
}

/// An IPv6 address as text (RFC 5952), written without allocating.
struct AddressText {
    buf: [u8; 45],
    len: usize,
}

impl AddressText {
    fn new() -> Self {
        Self {
            buf: [0; 45],
            len: 0,
        }
    }

    fn write(&mut self, address: Ipv6Addr) -> &[u8] {
        use std::io::Write as _;
        let mut cursor = std::io::Cursor::new(&mut self.buf[..]);
        // The longest form (an IPv4-mapped or a full address) is 45 bytes: it fits.
        let _ = write!(cursor, "{address}");
        self.len = cursor.position() as usize;
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_in_rfc_5952_form() {
        for address in [
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::new(
                0x2001, 0xdb8, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
            ),
            Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc612, 1),
        ] {
            let mut text = AddressText::new();
            assert_eq!(
                std::str::from_utf8(text.write(address)),
                Ok(address.to_string().as_str())
            );
        }
    }
}
