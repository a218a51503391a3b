//! Proxy replies: the proxy DHCPOFFER on port 67 and the DHCPACK on port 4011.
//!
//! Field choices follow the PXE 2.1 specification and what the peers that real firmware is
//! known to accept do: pixiecore (`dhcp.go`, `pxe.go`), dnsmasq (`rfc2131.c`, proxy mode) and
//! iPXE's acceptance rules (`src/net/udp/dhcp.c`).

use std::net::{Ipv4Addr, SocketAddrV4};

use boot_common::wire::dhcpv4;

use super::classify::{BootProtocol, Request, ServerPort};
use super::policy::MAX_BOOT_FILE_LEN;

/// dnsmasq pads every reply to `MIN_PACKETSZ` (300): the BOOTP minimum (RFC 951 §3, RFC 1542
/// §2.1) that some PXE ROMs and relays still insist on. The wire layer's writer pads to it.
pub const MIN_REPLY_LEN: usize = dhcpv4::MIN_LEN;

/// PXE 2.1 §2.2.5, option 43 sub-option 6 (PXE_DISCOVERY_CONTROL) bit 3: "use the boot file in
/// this offer" — no boot-server discovery, no menu. dnsmasq and pixiecore send it to BIOS ROMs.
const PXE_DISCOVERY_CONTROL: u8 = 6;
const DISCOVERY_USE_BOOT_FILE: u8 = 0b1000;
/// PXE 2.1 §2.2.5, sub-option 71 (PXE_BOOT_ITEM): echoed in a 4011 ACK when the client asked for
/// a boot item, as dnsmasq does.
const PXE_BOOT_ITEM: u8 = 71;
/// PXE 2.1 §2.2.5, sub-options 9 (PXE_BOOT_MENU: type, description length, description) and
/// 10 (PXE_MENU_PROMPT: timeout in seconds, prompt).
const PXE_BOOT_MENU: u8 = 9;
const PXE_MENU_PROMPT: u8 = 10;
/// Discovery control for the local-boot menu: bits 0 and 1 (no broadcast, no multicast
/// discovery), as dnsmasq sends for a menu whose items name no boot server (`pxe_opts`).
const DISCOVERY_NONE: u8 = 0b0011;
/// The menu's one item: boot server type 0, "PXE bootstrap server", which PXE 2.1 §2.2.5
/// (Table 2-2) reserves for local boot. dnsmasq sends it for a `pxe-service` without a
/// basename; EDK2 aborts its network boot on it ("Local boot(PXE bootstrap server) need
/// abort", `PxeBcDiscoverBootFile`) and the firmware tries its next boot option.
const LOCAL_BOOT_ITEM: &[u8] = b"xdpboot: boot from local disk";
/// Timeout 0: the first item is taken without a prompt (PXE 2.1 §2.2.5; EDK2
/// `PxeBcSelectBootPrompt` returns EFI_TIMEOUT and picks the default item). The prompt text is
/// dnsmasq's.
const LOCAL_BOOT_PROMPT: &[u8] = &[0, b'P', b'X', b'E'];
/// Room for option 43: the local-boot menu is the longest we send.
const MAX_VENDOR_LEN: usize = 64;

/// What a reply hands the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handout<'a> {
    /// A boot file (`file`): a TFTP name or a URL.
    File(&'a str),
    /// No file: a PXE boot menu whose only item is local boot (see [`LOCAL_BOOT_ITEM`]).
    LocalBootMenu,
}

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

/// Room for a reply: 576 octets, the size every DHCP client must accept (RFC 2131 §2). Ours
/// are about 300 (the padded minimum); a request whose echoed options would not fit is not
/// answered (`ReplyError::TooLong`).
pub const MAX_REPLY_LEN: usize = 576;

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
    #[error("boot file is {0} bytes; the BOOTP file field holds {MAX_BOOT_FILE_LEN}")]
    BootFileTooLong(usize),
    #[error("the reply would be longer than {MAX_REPLY_LEN} bytes")]
    TooLong,
}

/// Builds the reply a proxy server owes `request`, arrived from `source`, handing out
/// `handout`. `server` is the address of the ingress interface: it goes into siaddr and
/// option 54, and iPXE sends its 4011 REQUEST there and accepts the ACK only with the same
/// option 54.
pub fn build(
    request: &Request<'_>,
    source: SocketAddrV4,
    server: Ipv4Addr,
    handout: Handout<'_>,
) -> Result<Reply, ReplyError> {
    let boot_file = match handout {
        Handout::File(file) => file,
        Handout::LocalBootMenu => "",
    };
    if boot_file.len() > MAX_BOOT_FILE_LEN {
        return Err(ReplyError::BootFileTooLong(boot_file.len()));
    }
    let client = &request.client;
    let req = &request.packet;
    let protocol = client.protocol.unwrap_or(BootProtocol::Pxe);
    let (kind, message_type) = match client.port {
        ServerPort::Dhcp => (ReplyKind::ProxyOffer, dhcpv4::message_type::OFFER),
        ServerPort::Pxe => (ReplyKind::ProxyAck, dhcpv4::message_type::ACK),
    };
    // sname: our address as text (dnsmasq and pixiecore send it), written without `format!`.
    let mut sname = [0u8; 15];
    let sname_len = write_ipv4(server, &mut sname);
    let header = dhcpv4::Header {
        op: dhcpv4::BOOTREPLY,
        htype: req.htype(),
        hlen: req.hlen(),
        hops: 0,
        xid: req.xid(),
        secs: 0,
        flags: match kind {
            // The offer is broadcast; say so, as dnsmasq and pixiecore do.
            ReplyKind::ProxyOffer => dhcpv4::FLAG_BROADCAST,
            ReplyKind::ProxyAck => req.flags(),
        },
        // ciaddr is echoed in the ACK (PXE 2.1 §2.2.4, dnsmasq); a DISCOVER's is 0 anyway.
        ciaddr: req.ciaddr(),
        // A proxy never assigns an address: yiaddr 0 is what makes this a proxy offer to iPXE
        // and EDK2 (EDK2 `PxeBcDhcp4.c`, `HttpBootDhcp4.c`: "proxy" offers have no yiaddr).
        yiaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: server,
        giaddr: req.giaddr(),
        chaddr: req.chaddr(),
        sname: &sname[..sname_len],
        file: boot_file.as_bytes(),
    };
    let mut bytes = ReplyBytes {
        buf: [0; MAX_REPLY_LEN],
        len: 0,
    };
    let too_long = |_| ReplyError::TooLong;
    let mut writer = dhcpv4::Writer::new(&mut bytes.buf, &header).map_err(too_long)?;
    writer
        .option(dhcpv4::option::MESSAGE_TYPE, &[message_type])
        .map_err(too_long)?;
    writer
        .option(dhcpv4::option::SERVER_ID, &server.octets())
        .map_err(too_long)?;
    // iPXE accepts a proxy offer only if option 60 starts with "PXEClient" (dhcp.c,
    // `dhcp_discovery_rx`); EDK2 HTTP boot wants "HTTPClient" back (HttpBootDhcp4.c).
    writer
        .option(dhcpv4::option::VENDOR_CLASS, protocol.vendor_class())
        .map_err(too_long)?;
    // PXE 2.1 §2.2.5 / RFC 4578 §2.3: echo the client's GUID when it sent one.
    if let Some(guid) = request.machine_id {
        writer
            .option(dhcpv4::option::CLIENT_MACHINE_ID, guid)
            .map_err(too_long)?;
    }
    let mut vendor = [0u8; MAX_VENDOR_LEN];
    let vendor_len = match handout {
        Handout::File(_) => pxe_vendor_options(request, kind, &mut vendor),
        Handout::LocalBootMenu => local_boot_menu(request, &mut vendor),
    };
    if let Some(len) = vendor_len {
        writer
            .option(dhcpv4::option::VENDOR_SPECIFIC, &vendor[..len])
            .map_err(too_long)?;
    }
    // Zero octets after END are PAD options (RFC 2132 §3.1), up to the 300-byte minimum.
    bytes.len = writer.finish();

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

/// `a.b.c.d` into `out`; returns its length (at most 15).
fn write_ipv4(address: Ipv4Addr, out: &mut [u8; 15]) -> usize {
    let mut len = 0;
    for (i, octet) in address.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for digit in &digits[skip..] {
            out[len] = b'0' + digit;
            len += 1;
        }
    }
    len
}

/// Option 43, only where it belongs, written into `out`; returns its length.
///
/// - UEFI and HTTP-boot clients get none: without it EDK2 sends its REQUEST to port 4011 and
///   takes the boot file from our ACK (pixiecore; dnsmasq since 2.76, which found that UEFI
///   firmware mishandles discovery control).
/// - BIOS PXE ROMs get sub-option 6 = 8 in the offer: boot the file named here, skip boot-server
///   discovery (PXE 2.1 §2.2.5; dnsmasq, pixiecore).
/// - In a 4011 ACK, a requested boot item (sub-option 71) is echoed (dnsmasq `rfc2131.c`).
fn pxe_vendor_options(
    request: &Request<'_>,
    kind: ReplyKind,
    out: &mut [u8; MAX_VENDOR_LEN],
) -> Option<usize> {
    let client = &request.client;
    if client.protocol != Some(BootProtocol::Pxe) || client.arch.is_some_and(|a| a.is_uefi()) {
        return None;
    }
    match kind {
        ReplyKind::ProxyOffer => {
            out[..4].copy_from_slice(&[
                PXE_DISCOVERY_CONTROL,
                1,
                DISCOVERY_USE_BOOT_FILE,
                dhcpv4::option::END,
            ]);
            Some(4)
        }
        ReplyKind::ProxyAck => {
            let item =
                find_suboption(request.vendor_options?, PXE_BOOT_ITEM).filter(|v| v.len() == 4)?;
            out[0] = PXE_BOOT_ITEM;
            out[1] = 4;
            out[2..6].copy_from_slice(item);
            out[6] = dhcpv4::option::END;
            Some(7)
        }
    }
}

/// Option 43 of a local-boot answer, written into `out`: discovery control (no discovery), the
/// prompt with timeout 0 and the one-item menu, in dnsmasq's order (`pxe_opts`). Sent to every
/// PXE client, UEFI included, in the offer and in a 4011 ACK alike: a PXE ROM that gets a menu
/// needs no boot file, and EDK2 classifies an offer with these options as a PXE 1.0 proxy
/// offer (`PxeOfferTypeProxyPxe10`) whose menu it evaluates itself. A requested boot item
/// (sub-option 71) is echoed in the ACK, as [`pxe_vendor_options`] does.
fn local_boot_menu(request: &Request<'_>, out: &mut [u8; MAX_VENDOR_LEN]) -> Option<usize> {
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        out[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    put(&[PXE_DISCOVERY_CONTROL, 1, DISCOVERY_NONE]);
    put(&[PXE_MENU_PROMPT, LOCAL_BOOT_PROMPT.len() as u8]);
    put(LOCAL_BOOT_PROMPT);
    // Item: type (2 octets, network order) 0 = local boot, description length, description.
    put(&[PXE_BOOT_MENU, 3 + LOCAL_BOOT_ITEM.len() as u8, 0, 0]);
    put(&[LOCAL_BOOT_ITEM.len() as u8]);
    put(LOCAL_BOOT_ITEM);
    if request.client.port == ServerPort::Pxe
        && let Some(item) = request
            .vendor_options
            .and_then(|options| find_suboption(options, PXE_BOOT_ITEM))
            .filter(|v| v.len() == 4)
    {
        put(&[PXE_BOOT_ITEM, 4]);
        put(item);
    }
    put(&[dhcpv4::option::END]);
    Some(len)
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
    fn the_local_boot_menu_fits_its_buffer_with_a_boot_item_echoed() {
        // discovery control 3 + prompt 6 + menu 5 + item text + boot item 6 + END 1
        let longest = 3 + 2 + LOCAL_BOOT_PROMPT.len() + 5 + LOCAL_BOOT_ITEM.len() + 6 + 1;
        assert!(longest <= MAX_VENDOR_LEN, "{longest}");
    }

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

#[cfg(test)]
mod address_tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_dotted_quads() {
        for address in [
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(255, 255, 255, 255),
            Ipv4Addr::new(10, 100, 9, 99),
        ] {
            let mut out = [0u8; 15];
            let len = write_ipv4(address, &mut out);
            assert_eq!(
                std::str::from_utf8(&out[..len]),
                Ok(address.to_string().as_str())
            );
        }
    }
}
