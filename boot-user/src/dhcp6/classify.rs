//! Who is asking over DHCPv6: unwrap relay messages, check the client's message and describe
//! the client that sent it.
//!
//! One pass over wire-layer views ([`dhcpv6::Packet`], [`dhcpv6::RelayPacket`]), no
//! allocation. A boot client is known by what EDK2 and iPXE put in their messages:
//! - EDK2's PXE and HTTP boot (`PxeBcDhcp6.c` and `HttpBootDhcp6.c`, `*BuildDhcp6Options`):
//!   vendor class 16 of enterprise 343 with "PXEClient:Arch:…" or "HTTPClient:Arch:…", the
//!   architecture in option 61, the UNDI version in option 62, and a DUID-UUID client id.
//! - iPXE (`net/udp/dhcpv6.c`, `dhcpv6_tx`): user class 15 "iPXE" and a DUID-LL client id; no
//!   vendor class and no architecture.
//!
//! The MAC, which the policy, the node table and the per-node files go by, comes from the
//! first place that has it: a DUID-LL or DUID-LLT of Ethernet, a relay's client link-layer
//! address (option 79, RFC 6939), or the modified EUI-64 of the client's link-local address
//! (the datagram's source, or a relay's peer address), which EDK2 and iPXE both form.

use std::fmt;
use std::net::Ipv6Addr;

use boot_common::wire::{Error as WireError, dhcpv6, ipv6, pxe};

use crate::dhcp::classify::{BootProtocol, ClientArch};
use crate::dhcp::policy::Identity;

/// The largest request we accept: a DHCPv6 message in one unfragmented Ethernet frame cannot be
/// longer (1500 − 40 IPv6 − 8 UDP). Anything bigger is not from boot firmware.
pub const MAX_REQUEST_LEN: usize = 1452;
/// Relay agents a message may pass through (RFC 8415 §7.6, HOP_COUNT_LIMIT): relay messages
/// nested deeper are refused.
pub const MAX_RELAY_DEPTH: usize = 8;
/// A DUID's longest: two octets of type and up to 128 of identifier (RFC 8415 §11.1).
pub const MAX_DUID_LEN: usize = 130;

/// Why a request was dropped before classification. Counted, never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than a DHCPv6 header")]
    Truncated,
    #[error("longer than {MAX_REQUEST_LEN} bytes")]
    Oversized,
    #[error("an option runs past the end of the message")]
    OptionOverrun,
    #[error("more than {} options", dhcpv6::MAX_OPTIONS)]
    TooManyOptions,
    #[error("relay messages nested more than {MAX_RELAY_DEPTH} deep")]
    RelayTooDeep,
    #[error("a relay message without a Relay Message option")]
    RelayWithoutMessage,
    #[error("option {0} has a length its RFC does not allow")]
    BadOptionLength(u16),
}

impl Malformed {
    /// Every reason, for counters.
    pub const ALL: [Malformed; 7] = [
        Malformed::Truncated,
        Malformed::Oversized,
        Malformed::OptionOverrun,
        Malformed::TooManyOptions,
        Malformed::RelayTooDeep,
        Malformed::RelayWithoutMessage,
        Malformed::BadOptionLength(0),
    ];

    /// Stable label.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::Truncated => "truncated",
            Malformed::Oversized => "oversized",
            Malformed::OptionOverrun => "option_overrun",
            Malformed::TooManyOptions => "too_many_options",
            Malformed::RelayTooDeep => "relay_too_deep",
            Malformed::RelayWithoutMessage => "relay_without_message",
            Malformed::BadOptionLength(_) => "bad_option_length",
        }
    }

    fn from_wire(error: WireError) -> Malformed {
        match error {
            WireError::TooManyOptions => Malformed::TooManyOptions,
            WireError::Truncated => Malformed::Truncated,
            _ => Malformed::OptionOverrun,
        }
    }
}

/// The UDP port a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerPort {
    /// UDP 547: DHCPv6, shared with the site's DHCPv6 server. We answer boot clients only,
    /// and never with an address.
    Dhcp,
    /// UDP 4011: the boot-server port EDK2's PXEv6 sends its second Request to
    /// (`PxeBcDhcp6.c`, `PxeBcRequestBootService`: `PXEBC_BS_DISCOVER_PORT`), ours alone.
    Pxe,
}

impl ServerPort {
    pub fn number(self) -> u16 {
        match self {
            ServerPort::Dhcp => dhcpv6::SERVER_PORT,
            ServerPort::Pxe => boot_common::PXE_SERVER_PORT,
        }
    }
}

/// Where the client's MAC was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacSource {
    /// Its DUID-LL or DUID-LLT.
    Duid,
    /// The relay agent's option 79.
    Relay,
    /// The EUI-64 interface identifier of its link-local address.
    LinkLocal,
    /// The link-layer source of the datagram, as the backend saw it.
    LinkLayer,
}

/// A DHCPv6 request, described in the protocol's own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's message type (inside any relay messages).
    pub message_type: u8,
    pub port: ServerPort,
    pub transaction_id: u32,
    pub mac: Option<[u8; 6]>,
    pub mac_source: Option<MacSource>,
    /// Option 61, else "Arch:xxxxx" in the vendor class; `None` without either (iPXE).
    pub arch: Option<ClientArch>,
    /// From the vendor class: "PXEClient…" or "HTTPClient…" of enterprise 343.
    pub protocol: Option<BootProtocol>,
    /// The user class holds "iPXE".
    pub ipxe: bool,
    /// A DUID-UUID client id: the machine's UUID (EDK2 sends the SMBIOS UUID, in EFI GUID
    /// byte order as in DHCPv4's option 97).
    pub uuid: Option<[u8; 16]>,
    /// Relay agents the request came through.
    pub relays: u8,
}

impl Client {
    /// Whether this is a request a PXE or HTTP boot server answers at all.
    pub fn is_boot_request(&self) -> bool {
        self.protocol.is_some() || self.ipxe
    }

    /// What the policy sees of this client.
    pub fn identity(&self) -> Identity {
        Identity {
            arch: self.arch,
            protocol: self.protocol,
            ipxe: self.ipxe,
            mac: self.mac,
            uuid: self.uuid,
        }
    }
}

/// One relay agent's Relay-Forward: what its Relay-Reply must carry back (RFC 8415 §19.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay<'a> {
    pub hop_count: u8,
    pub link_address: Ipv6Addr,
    pub peer_address: Ipv6Addr,
    /// Option 18, copied into the Relay-Reply (RFC 8415 §21.18).
    pub interface_id: Option<&'a [u8]>,
}

/// A request that passed the checks: what the reply copies, and the client.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub client: Client,
    /// The client's DUID, copied into the reply (RFC 8415 §18.3).
    pub client_id: Option<&'a [u8]>,
    /// The server the client addressed, if it named one.
    pub server_id: Option<&'a [u8]>,
    /// An IA_NA or IA_TA: addresses asked for, which an Information-request must not do
    /// (RFC 8415 §16.12).
    pub asks_for_addresses: bool,
    /// The relay agents, outermost (the one that sent to us) first; `relays.len()` of them.
    relays: [Option<Relay<'a>>; MAX_RELAY_DEPTH],
}

impl<'a> Request<'a> {
    /// The relay agents, outermost first.
    pub fn relays(&self) -> impl DoubleEndedIterator<Item = &Relay<'a>> {
        self.relays[..usize::from(self.client.relays)]
            .iter()
            .flatten()
    }
}

/// What the walk over the client's options keeps (the first instance of each).
#[derive(Default)]
struct Seen<'a> {
    client_id: Option<&'a [u8]>,
    server_id: Option<&'a [u8]>,
    ia: bool,
    vendor_class: Option<&'a [u8]>,
    user_class: Option<&'a [u8]>,
    arch: Option<&'a [u8]>,
}

/// Checks the bytes (the UDP payload), unwraps relay messages and classifies the client.
/// `source` is the datagram's source address (the client's own when no relay is in between),
/// and `link_mac` the link-layer source the backend saw, if it knows it.
pub fn parse(
    bytes: &[u8],
    port: ServerPort,
    source: Ipv6Addr,
    link_mac: Option<[u8; 6]>,
) -> Result<Request<'_>, Malformed> {
    if bytes.len() < dhcpv6::HEADER_LEN {
        return Err(Malformed::Truncated);
    }
    if bytes.len() > MAX_REQUEST_LEN {
        return Err(Malformed::Oversized);
    }
    let mut relays = [None; MAX_RELAY_DEPTH];
    let mut depth = 0;
    let mut relay_mac = None;
    let mut peer = source;
    let mut message = bytes;
    while dhcpv6::message_type::is_relay(message[0]) {
        if depth == MAX_RELAY_DEPTH {
            return Err(Malformed::RelayTooDeep);
        }
        let relay = dhcpv6::RelayPacket::new_checked(message).map_err(|_| Malformed::Truncated)?;
        let mut inner = None;
        let mut interface_id = None;
        for item in relay.options() {
            let (code, data) = item.map_err(Malformed::from_wire)?;
            match code {
                dhcpv6::option::RELAY_MSG if inner.is_none() => inner = Some(data),
                dhcpv6::option::INTERFACE_ID if interface_id.is_none() => interface_id = Some(data),
                // The innermost relay's (the one on the client's link) wins.
                dhcpv6::option::CLIENT_LINKLAYER_ADDR => {
                    relay_mac = dhcpv6::client_linklayer_mac(data).or(relay_mac)
                }
                _ => {}
            }
        }
        relays[depth] = Some(Relay {
            hop_count: relay.hop_count(),
            link_address: relay.link_address(),
            peer_address: relay.peer_address(),
            interface_id,
        });
        depth += 1;
        peer = relay.peer_address();
        message = inner.ok_or(Malformed::RelayWithoutMessage)?;
        if message.len() < dhcpv6::HEADER_LEN {
            return Err(Malformed::Truncated);
        }
    }
    let packet = dhcpv6::Packet::new_checked(message).map_err(|_| Malformed::Truncated)?;
    let seen = walk_options(packet.options())?;

    let duid_mac = seen.client_id.and_then(dhcpv6::duid_mac);
    let link_local_mac = ipv6::eui64_mac(peer);
    // Through a relay, the datagram's link-layer source is the relay's.
    let link_mac = link_mac
        .filter(|_| depth == 0)
        .map(boot_common::wire::MacAddr);
    let (mac, mac_source) = match (duid_mac, relay_mac, link_local_mac, link_mac) {
        (Some(mac), _, _, _) => (Some(mac), Some(MacSource::Duid)),
        (None, Some(mac), _, _) => (Some(mac), Some(MacSource::Relay)),
        (None, None, Some(mac), _) => (Some(mac), Some(MacSource::LinkLocal)),
        (None, None, None, Some(mac)) => (Some(mac), Some(MacSource::LinkLayer)),
        (None, None, None, None) => (None, None),
    };
    let vendor_class = seen.vendor_class.and_then(dhcpv6::VendorClass::parse);
    // The first class string of enterprise 343 says PXE or HTTP (EDK2 checks the same bytes
    // of our reply: `PxeBcParseDhcp6Packet`, `HttpBootParseDhcp6Packet`).
    let class = vendor_class
        .filter(|v| v.enterprise == dhcpv6::ENTERPRISE_INTEL)
        .and_then(|v| v.classes().next());
    let protocol = class.and_then(|class| {
        if class.starts_with(pxe::PXE_CLIENT) {
            Some(BootProtocol::Pxe)
        } else if class.starts_with(pxe::HTTP_CLIENT) {
            Some(BootProtocol::Http)
        } else {
            None
        }
    });
    let arch_code = seen
        .arch
        .and_then(dhcpv6::client_arch)
        .or_else(|| class.and_then(arch_from_class));
    let ipxe = seen
        .user_class
        .is_some_and(|data| dhcpv6::Strings::new(data).any(|class| class == pxe::IPXE_USER_CLASS));
    let uuid = seen.client_id.and_then(|duid| match duid {
        [0, 4, uuid @ ..] => <[u8; 16]>::try_from(uuid).ok(),
        _ => None,
    });
    let client = Client {
        message_type: packet.msg_type(),
        port,
        transaction_id: packet.transaction_id(),
        mac: mac.map(|m| m.octets()),
        mac_source,
        arch: arch_code.map(|code| ClientArch::from_code(code).0),
        protocol,
        ipxe,
        uuid,
        relays: depth as u8,
    };
    Ok(Request {
        client,
        client_id: seen.client_id,
        server_id: seen.server_id,
        asks_for_addresses: seen.ia,
        relays,
    })
}

/// The option walk, bounded by the wire layer's `MAX_OPTIONS`; lengths its RFCs fix are
/// checked for the options the core reads.
fn walk_options(options: dhcpv6::Options<'_>) -> Result<Seen<'_>, Malformed> {
    let mut seen = Seen::default();
    fn first<'a>(slot: &mut Option<&'a [u8]>, data: &'a [u8]) {
        if slot.is_none() {
            *slot = Some(data);
        }
    }
    for item in options {
        let (code, data) = item.map_err(Malformed::from_wire)?;
        let len_ok = match code {
            dhcpv6::option::CLIENT_ID | dhcpv6::option::SERVER_ID => {
                (3..=MAX_DUID_LEN).contains(&data.len())
            }
            dhcpv6::option::ELAPSED_TIME => data.len() == 2, // RFC 8415 §21.9
            dhcpv6::option::CLIENT_ARCH_TYPE => !data.is_empty() && data.len() % 2 == 0, // RFC 5970 §3.3
            dhcpv6::option::NII => data.len() == 3, // RFC 5970 §3.4
            dhcpv6::option::VENDOR_CLASS => data.len() >= 4, // RFC 8415 §21.16
            _ => true,
        };
        if !len_ok {
            return Err(Malformed::BadOptionLength(code));
        }
        match code {
            dhcpv6::option::CLIENT_ID => first(&mut seen.client_id, data),
            dhcpv6::option::SERVER_ID => first(&mut seen.server_id, data),
            dhcpv6::option::IA_NA | dhcpv6::option::IA_TA => seen.ia = true,
            dhcpv6::option::VENDOR_CLASS => first(&mut seen.vendor_class, data),
            dhcpv6::option::USER_CLASS => first(&mut seen.user_class, data),
            dhcpv6::option::CLIENT_ARCH_TYPE => first(&mut seen.arch, data),
            _ => {}
        }
    }
    Ok(seen)
}

/// "PXEClient:Arch:00007:UNDI:003000" → 7, as in DHCPv4 (PXE 2.1 §2.2.5; EDK2 writes the
/// same class string into option 16).
fn arch_from_class(class: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(class).ok()?;
    let rest = text.split(":Arch:").nth(1)?;
    rest.get(..5)?.parse().ok()
}

/// The message type's name in logs.
pub struct TypeName(pub u8);

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use dhcpv6::message_type as t;
        let name = match self.0 {
            t::SOLICIT => "solicit",
            t::ADVERTISE => "advertise",
            t::REQUEST => "request",
            t::CONFIRM => "confirm",
            t::RENEW => "renew",
            t::REBIND => "rebind",
            t::REPLY => "reply",
            t::RELEASE => "release",
            t::DECLINE => "decline",
            t::RECONFIGURE => "reconfigure",
            t::INFORMATION_REQUEST => "information_request",
            t::RELAY_FORW => "relay_forw",
            t::RELAY_REPL => "relay_repl",
            other => return write!(f, "type_{other}"),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boot_common::wire::MacAddr;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x18, 1, 1];

    fn solicit(options: &[(u16, &[u8])]) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let mut writer =
            dhcpv6::Writer::new(&mut buf, dhcpv6::message_type::SOLICIT, 0x42).unwrap();
        for (code, data) in options {
            writer.option(*code, data).unwrap();
        }
        let len = writer.finish();
        buf.truncate(len);
        buf
    }

    fn link_local() -> Ipv6Addr {
        ipv6::eui64_link_local(MacAddr(MAC))
    }

    #[test]
    fn arch_is_read_from_the_vendor_class_when_option_61_is_missing() {
        let class = [
            &343u32.to_be_bytes()[..],
            &[0, 32],
            b"PXEClient:Arch:00007:UNDI:003000",
        ]
        .concat();
        let bytes = solicit(&[(dhcpv6::option::VENDOR_CLASS, &class)]);
        let request = parse(&bytes, ServerPort::Dhcp, link_local(), None).unwrap();
        assert_eq!(request.client.arch, Some(ClientArch::UefiX64));
        assert_eq!(request.client.protocol, Some(BootProtocol::Pxe));
        assert_eq!(request.client.mac, Some(MAC));
        assert_eq!(request.client.mac_source, Some(MacSource::LinkLocal));
    }

    #[test]
    fn another_enterprise_is_not_a_boot_client() {
        let class = [&9u32.to_be_bytes()[..], &[0, 9], b"PXEClient"].concat();
        let bytes = solicit(&[(dhcpv6::option::VENDOR_CLASS, &class)]);
        let request = parse(&bytes, ServerPort::Dhcp, link_local(), None).unwrap();
        assert!(!request.client.is_boot_request());
    }

    #[test]
    fn lengths_the_rfcs_fix_are_checked() {
        for (code, data) in [
            (dhcpv6::option::ELAPSED_TIME, &[0u8][..]),
            (dhcpv6::option::CLIENT_ARCH_TYPE, &[0, 7, 0][..]),
            (dhcpv6::option::NII, &[1, 3][..]),
            (dhcpv6::option::CLIENT_ID, &[0, 3][..]),
            (dhcpv6::option::VENDOR_CLASS, &[0, 0, 1][..]),
        ] {
            let bytes = solicit(&[(code, data)]);
            assert_eq!(
                parse(&bytes, ServerPort::Dhcp, link_local(), None).err(),
                Some(Malformed::BadOptionLength(code))
            );
        }
        let mut cut = solicit(&[(dhcpv6::option::ELAPSED_TIME, &[0, 0])]);
        cut.pop();
        assert_eq!(
            parse(&cut, ServerPort::Dhcp, link_local(), None).err(),
            Some(Malformed::OptionOverrun)
        );
        assert_eq!(
            parse(&[1, 2, 3], ServerPort::Dhcp, link_local(), None).err(),
            Some(Malformed::Truncated)
        );
        assert_eq!(
            parse(
                &[1; MAX_REQUEST_LEN + 1],
                ServerPort::Dhcp,
                link_local(),
                None
            )
            .err(),
            Some(Malformed::Oversized)
        );
    }

    #[test]
    fn relays_nested_beyond_the_hop_limit_are_refused() {
        let mut message = solicit(&[]);
        for _ in 0..=MAX_RELAY_DEPTH {
            let mut buf = vec![0u8; message.len() + 64];
            let mut writer = dhcpv6::Writer::relay(
                &mut buf,
                dhcpv6::message_type::RELAY_FORW,
                0,
                Ipv6Addr::UNSPECIFIED,
                Ipv6Addr::UNSPECIFIED,
            )
            .unwrap();
            writer.option(dhcpv6::option::RELAY_MSG, &message).unwrap();
            let len = writer.finish();
            buf.truncate(len);
            message = buf;
        }
        assert_eq!(
            parse(&message, ServerPort::Dhcp, link_local(), None).err(),
            Some(Malformed::RelayTooDeep)
        );
        let empty = [dhcpv6::message_type::RELAY_FORW; dhcpv6::RELAY_HEADER_LEN];
        assert_eq!(
            parse(&empty, ServerPort::Dhcp, link_local(), None).err(),
            Some(Malformed::RelayWithoutMessage)
        );
    }

    #[test]
    fn message_types_print_by_name() {
        assert_eq!(TypeName(1).to_string(), "solicit");
        assert_eq!(TypeName(11).to_string(), "information_request");
        assert_eq!(TypeName(200).to_string(), "type_200");
    }
}
