//! Golden DHCPv6 requests through the core with the embedded default policy: captured from the
//! firmware itself (`tests/data/dhcpv6/`: Debian 12's OVMF and Debian 13's
//! iPXE, saved by `tests/firmware_boot6.rs`), and shaped as the firmware's source builds them
//! (EDK2 `PxeBcDhcp6.c` / `HttpBootDhcp6.c` and its DHCPv6 driver `Dhcp6Io.c`; iPXE
//! `net/udp/dhcpv6.c` as of 2019, which sent neither a vendor class nor an architecture). The
//! replies are checked field by field against what that firmware's parser reads, and decoded
//! again by an independent decoder (dhcproto).

use std::net::{Ipv6Addr, SocketAddrV6};

use boot_common::wire::dhcpv6::{self, message_type, option};
use boot_common::wire::{MacAddr, ipv6};
use dhcproto::v6::{self, DhcpOption, OptionCode};
use dhcproto::{Decodable, Decoder};

use xdpboot::config::Config;
use xdpboot::dhcp::classify::{BootProtocol, ClientArch};
use xdpboot::dhcp::{AdmitAll, LoaderIndex};
use xdpboot::dhcp6::classify::MacSource;
use xdpboot::dhcp6::{Destination, Ignored, Ingress, Outcome, ReplyKind, Responder, ServerPort};

/// Our address on the rack (a ULA, as the lab's) and our DUID-LL.
const SERVER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1);
const SERVER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0x18, 0, 1]);
/// The client: the lab's node 1, and its SMBIOS UUID 00112233-4455-6677-8899-525400180101
/// (EDK2's DUID-UUID carries it in EFI GUID byte order).
const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x18, 1, 1]);
const GUID: [u8; 16] = [
    0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0x52, 0x54, 0x00, 0x18, 0x01, 0x01,
];

struct AllLoaders;
impl LoaderIndex for AllLoaders {
    fn has_loader(&self, _: &str) -> bool {
        true
    }
}

fn config() -> &'static Config {
    static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| Config::embedded().expect("the embedded default is valid"))
}

fn client_link_local() -> Ipv6Addr {
    ipv6::eui64_link_local(MAC)
}

fn handle(bytes: &[u8], port: ServerPort, source: SocketAddrV6) -> Outcome<'static> {
    let duid = dhcpv6::duid_ll(SERVER_MAC);
    let ingress = Ingress {
        port,
        source,
        server: SERVER,
        server_duid: &duid,
        link_mac: None,
    };
    let config = config();
    Responder::new(&config.policy, config.url_ports()).handle(
        bytes,
        &ingress,
        &AllLoaders,
        &AdmitAll,
    )
}

fn from_client(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(client_link_local(), port, 0, 0)
}

/// A DHCPv6 message with `options` in order.
fn message(msg_type: u8, xid: u32, options: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let mut writer = dhcpv6::Writer::new(&mut buf, msg_type, xid).unwrap();
    for (code, data) in options {
        writer.option(*code, data).unwrap();
    }
    let len = writer.finish();
    buf.truncate(len);
    buf
}

fn duid_uuid() -> Vec<u8> {
    [&[0, 4][..], &GUID].concat()
}

fn vendor_class(class: &[u8]) -> Vec<u8> {
    [
        &343u32.to_be_bytes()[..],
        &(class.len() as u16).to_be_bytes(),
        class,
    ]
    .concat()
}

/// EDK2's options after its DHCPv6 driver's own (client id, elapsed time, IA_NA: `Dhcp6Io.c`,
/// `Dhcp6SendSolicitMsg`): ORO, UNDI (62), arch (61) and the vendor class, as
/// `PxeBcBuildDhcp6Options` (PXE: ORO 59, 60; arch 7) or `HttpBootBuildDhcp6Options` (HTTP: ORO
/// 59, 60, 23, 16; arch 16) writes them, class id "PXEClient:Arch:00007:UNDI:003000".
fn edk2_options(http: bool, with_ia: bool) -> Vec<(u16, Vec<u8>)> {
    let mut options = vec![
        (option::CLIENT_ID, duid_uuid()),
        (option::ELAPSED_TIME, vec![0, 0]),
    ];
    if with_ia {
        // IAID, T1, T2 zero; no addresses.
        options.push((option::IA_NA, vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
    }
    if http {
        options.push((option::ORO, vec![0, 59, 0, 60, 0, 23, 0, 16]));
        options.push((option::NII, vec![1, 3, 0]));
        options.push((option::CLIENT_ARCH_TYPE, vec![0, 16]));
        options.push((
            option::VENDOR_CLASS,
            vendor_class(b"HTTPClient:Arch:00016:UNDI:003000"),
        ));
    } else {
        options.push((option::ORO, vec![0, 59, 0, 60]));
        options.push((option::NII, vec![1, 3, 0]));
        options.push((option::CLIENT_ARCH_TYPE, vec![0, 7]));
        options.push((
            option::VENDOR_CLASS,
            vendor_class(b"PXEClient:Arch:00007:UNDI:003000"),
        ));
    }
    options
}

fn ovmf_pxe_solicit() -> Vec<u8> {
    message(
        message_type::SOLICIT,
        0x00ab_cdef,
        &edk2_options(false, true),
    )
}

fn ovmf_http_solicit() -> Vec<u8> {
    message(
        message_type::SOLICIT,
        0x0012_3456,
        &edk2_options(true, true),
    )
}

/// iPXE's message (`dhcpv6_tx`): client id (DUID-LL), server id once known, IA_NA when
/// stateful, ORO (23, 24, 59, 60), user class "iPXE", elapsed time.
fn ipxe_message(msg_type: u8, stateful: bool) -> Vec<u8> {
    let mut options = vec![(option::CLIENT_ID, dhcpv6::duid_ll(MAC).to_vec())];
    if stateful {
        options.push((
            option::IA_NA,
            vec![0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0, 0, 0, 0, 0],
        ));
    }
    options.push((option::ORO, vec![0, 23, 0, 24, 0, 59, 0, 60]));
    options.push((option::USER_CLASS, [&[0, 4][..], b"iPXE"].concat()));
    options.push((option::ELAPSED_TIME, vec![0, 0]));
    message(msg_type, 0x0077_8899, &options)
}

/// A reply decoded by dhcproto, and what the core said about it.
struct Answered {
    reply: v6::Message,
    raw: Vec<u8>,
    kind: ReplyKind,
    destination: Destination,
}

fn answered(bytes: &[u8], port: ServerPort, source: SocketAddrV6) -> Answered {
    match handle(bytes, port, source) {
        Outcome::Reply { reply, .. } => Answered {
            reply: v6::Message::decode(&mut Decoder::new(&reply.bytes))
                .expect("dhcproto decodes the reply"),
            raw: reply.bytes.to_vec(),
            kind: reply.kind,
            destination: reply.destination,
        },
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn ignored(bytes: &[u8], port: ServerPort, source: SocketAddrV6) -> Ignored<'static> {
    match handle(bytes, port, source) {
        Outcome::Ignored { reason, .. } => reason,
        other => panic!("expected no reply, got {other:?}"),
    }
}

/// The raw data of option `code` in a message, read by the wire layer.
fn raw_option(message: &[u8], code: u16) -> Option<Vec<u8>> {
    dhcpv6::Packet::new_checked(message)
        .unwrap()
        .find(code)
        .unwrap()
        .map(<[u8]>::to_vec)
}

fn url(reply: &[u8]) -> String {
    String::from_utf8(raw_option(reply, option::BOOTFILE_URL).expect("a boot file URL"))
        .expect("the URL is text")
}

/// What every proxy reply has in common.
fn assert_proxy_basics(request: &[u8], a: &Answered) {
    let request = v6::Message::decode(&mut Decoder::new(request)).unwrap();
    assert_eq!(a.reply.xid(), request.xid(), "transaction id echoed");
    assert_eq!(
        a.reply.opts().get(OptionCode::ClientId),
        request.opts().get(OptionCode::ClientId),
        "client id copied"
    );
    assert_eq!(
        a.reply.opts().get(OptionCode::ServerId),
        Some(&DhcpOption::ServerId(dhcpv6::duid_ll(SERVER_MAC).to_vec())),
        "our DUID-LL"
    );
    for code in [
        option::IA_NA,
        option::IA_TA,
        option::IA_PD,
        option::STATUS_CODE,
    ] {
        assert_eq!(
            raw_option(&a.raw, code),
            None,
            "no option {code}: a proxy assigns nothing"
        );
    }
    // Nothing after the URL: EDK2's HTTP boot reads it with AsciiStrLen.
    let last = dhcpv6::Packet::new_checked(&a.raw[..])
        .unwrap()
        .options()
        .last()
        .unwrap()
        .unwrap();
    assert_eq!(last.0, option::BOOTFILE_URL, "the URL is the last option");
}

/// EDK2's test of a PXE offer (`PxeBcParseDhcp6Packet`) and an HTTP one
/// (`HttpBootParseDhcp6Packet`), on our option 16.
fn edk2_sees(reply: &[u8]) -> Option<BootProtocol> {
    let data = raw_option(reply, option::VENDOR_CLASS)?;
    let intel = data[..4] == 343u32.to_be_bytes();
    if data.len() >= 16 && &data[6..16] == b"HTTPClient" {
        Some(BootProtocol::Http)
    } else if data.len() >= 13 && intel && &data[6..15] == b"PXEClient" {
        Some(BootProtocol::Pxe)
    } else {
        None
    }
}

#[test]
fn ovmf_pxev6_solicit_gets_an_advertise_with_a_tftp_url_and_no_address() {
    let request = ovmf_pxe_solicit();
    let a = answered(&request, ServerPort::Dhcp, from_client(546));
    assert_proxy_basics(&request, &a);
    assert_eq!(a.kind, ReplyKind::Advertise);
    assert_eq!(a.reply.msg_type(), v6::MessageType::Advertise);
    assert_eq!(edk2_sees(&a.raw), Some(BootProtocol::Pxe));
    assert_eq!(url(&a.raw), "tftp://[fd00:18::1]/ipxe-amd64.efi");
    assert_eq!(a.destination, Destination::Client(client_link_local()));
}

#[test]
fn ovmf_httpv6_solicit_gets_an_advertise_with_the_loader_url() {
    let request = ovmf_http_solicit();
    let a = answered(&request, ServerPort::Dhcp, from_client(546));
    assert_proxy_basics(&request, &a);
    assert_eq!(a.kind, ReplyKind::Advertise);
    assert_eq!(edk2_sees(&a.raw), Some(BootProtocol::Http));
    assert_eq!(url(&a.raw), "http://[fd00:18::1]:80/ipxe-amd64.efi");
}

/// `PxeBcRequestBootService`: the Advertise's transaction id, its Server Identifier, then the
/// options of EDK2's Request to the address server except IA_NA, IA_TA and that server's id;
/// from port 4011 to port 4011 of the host in our URL.
#[test]
fn ovmf_pxev6_request_on_4011_gets_a_reply_from_4011() {
    let mut options = vec![(option::SERVER_ID, dhcpv6::duid_ll(SERVER_MAC).to_vec())];
    options.extend(edk2_options(false, false));
    let request = message(message_type::REQUEST, 0x00ab_cdef, &options);
    let source = SocketAddrV6::new(
        Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x150),
        4011,
        0,
        0,
    );
    let a = answered(&request, ServerPort::Pxe, source);
    assert_proxy_basics(&request, &a);
    assert_eq!(a.kind, ReplyKind::PxeReply);
    assert_eq!(a.reply.msg_type(), v6::MessageType::Reply);
    assert_eq!(edk2_sees(&a.raw), Some(BootProtocol::Pxe));
    assert_eq!(url(&a.raw), "tftp://[fd00:18::1]/ipxe-amd64.efi");
    assert_eq!(a.destination, Destination::Unicast(source));

    // A 4011 Request carrying another server's id is not ours.
    let mut options = vec![(option::SERVER_ID, vec![0, 3, 0, 1, 9, 9, 9, 9, 9, 9])];
    options.extend(edk2_options(false, false));
    let other = message(message_type::REQUEST, 1, &options);
    assert_eq!(
        ignored(&other, ServerPort::Pxe, source),
        Ignored::OtherServer
    );
}

#[test]
fn ipxe_information_request_gets_a_reply_with_its_script_url() {
    let request = ipxe_message(message_type::INFORMATION_REQUEST, false);
    let a = answered(&request, ServerPort::Dhcp, from_client(546));
    assert_proxy_basics(&request, &a);
    assert_eq!(a.kind, ReplyKind::Reply);
    assert_eq!(a.reply.msg_type(), v6::MessageType::Reply);
    assert_eq!(
        raw_option(&a.raw, option::VENDOR_CLASS),
        None,
        "iPXE sent none"
    );
    // iPXE sends no architecture over DHCPv6: the script is [boot]'s.
    assert_eq!(
        url(&a.raw),
        "http://[fd00:18::1]:80/boot.ipxe?mac=52:54:00:18:01:01&arch="
    );
}

#[test]
fn ipxe_solicit_gets_an_advertise_without_an_address() {
    let request = ipxe_message(message_type::SOLICIT, true);
    let a = answered(&request, ServerPort::Dhcp, from_client(546));
    assert_proxy_basics(&request, &a);
    assert_eq!(a.kind, ReplyKind::Advertise);
    assert!(url(&a.raw).contains("/boot.ipxe?mac=52:54:00:18:01:01"));
}

#[test]
fn the_mac_comes_from_the_duid_else_the_link_local_address() {
    let request = ovmf_pxe_solicit();
    let Outcome::Reply { client, .. } = handle(&request, ServerPort::Dhcp, from_client(546)) else {
        panic!("answered")
    };
    assert_eq!(client.mac, Some(MAC.octets()));
    assert_eq!(client.mac_source, Some(MacSource::LinkLocal));
    assert_eq!(client.uuid, Some(GUID), "EDK2's DUID-UUID");
    assert_eq!(client.arch, Some(ClientArch::UefiX64));

    let request = ipxe_message(message_type::INFORMATION_REQUEST, false);
    let stranger = SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 1, 2, 3, 4), 546, 0, 0);
    let Outcome::Reply { client, .. } = handle(&request, ServerPort::Dhcp, stranger) else {
        panic!("answered")
    };
    assert_eq!(client.mac, Some(MAC.octets()));
    assert_eq!(client.mac_source, Some(MacSource::Duid));
}

/// An RA with M set starts EDK2's own DHCPv6 session for the address: no vendor class, a
/// request for DNS servers (issue 16). The site's server answers it; we must not.
#[test]
fn a_plain_solicit_is_left_to_the_site_dhcpv6_server() {
    let request = message(
        message_type::SOLICIT,
        5,
        &[
            (option::CLIENT_ID, duid_uuid()),
            (option::ELAPSED_TIME, vec![0, 0]),
            (option::IA_NA, vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            (option::ORO, vec![0, 23]),
        ],
    );
    assert_eq!(
        ignored(&request, ServerPort::Dhcp, from_client(546)),
        Ignored::NotBootRequest
    );
}

#[test]
fn address_requests_renewals_and_servers_messages_are_not_answered() {
    let mut pxe = edk2_options(false, true);
    // A Request to the site's server, as EDK2 sends after choosing its Advertise.
    pxe.push((option::SERVER_ID, vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 2]));
    for kind in [
        message_type::REQUEST,
        message_type::RENEW,
        message_type::REBIND,
        message_type::CONFIRM,
        message_type::RELEASE,
        message_type::DECLINE,
        message_type::ADVERTISE,
        message_type::REPLY,
        message_type::RELAY_REPL,
    ] {
        let request = message(kind, 9, &pxe);
        let reason = match handle(&request, ServerPort::Dhcp, from_client(546)) {
            Outcome::Ignored { reason, .. } => reason,
            Outcome::Malformed(m) if kind == message_type::RELAY_REPL => {
                // Read as a relay message, it has no Relay Message option.
                assert_eq!(m.name(), "relay_without_message");
                continue;
            }
            other => panic!("type {kind}: {other:?}"),
        };
        assert_eq!(reason, Ignored::MessageType(kind), "type {kind}");
    }
}

#[test]
fn a_request_naming_us_is_answered_and_one_naming_another_server_is_not() {
    let mut options = edk2_options(false, true);
    options.push((option::SERVER_ID, dhcpv6::duid_ll(SERVER_MAC).to_vec()));
    let to_us = message(message_type::REQUEST, 3, &options);
    let a = answered(&to_us, ServerPort::Dhcp, from_client(546));
    assert_eq!(a.kind, ReplyKind::Reply);

    // A Solicit must carry no server id (RFC 8415 §16.2), an Information-request no IA
    // (§16.12), and one naming another server is that server's.
    let mut options = edk2_options(false, true);
    options.push((option::SERVER_ID, dhcpv6::duid_ll(SERVER_MAC).to_vec()));
    let solicit = message(message_type::SOLICIT, 3, &options);
    assert_eq!(
        ignored(&solicit, ServerPort::Dhcp, from_client(546)),
        Ignored::OtherServer
    );
    let asks = ipxe_message(message_type::INFORMATION_REQUEST, true);
    assert_eq!(
        ignored(&asks, ServerPort::Dhcp, from_client(546)),
        Ignored::OtherServer
    );
}

#[test]
fn an_architecture_no_policy_knows_is_not_answered() {
    let mut options = edk2_options(false, true);
    for (code, data) in &mut options {
        if *code == option::CLIENT_ARCH_TYPE {
            *data = vec![0, 2]; // EFI Itanium
        }
    }
    let request = message(message_type::SOLICIT, 1, &options);
    assert_eq!(
        ignored(&request, ServerPort::Dhcp, from_client(546)),
        Ignored::UnknownArch
    );
}

/// A relay agent on another segment: Relay-Forward with the client's Solicit, its own
/// interface id and the client's link-layer address (option 79, RFC 6939). The Advertise goes
/// back inside a Relay-Reply with the same hop count, addresses and interface id, to the
/// relay's port 547; the MAC comes from option 79 (EDK2's DUID-UUID names none, and a peer
/// address that is not EUI-64 neither).
#[test]
fn a_relayed_solicit_is_answered_inside_a_relay_reply_to_the_relay() {
    let solicit = ovmf_pxe_solicit();
    let link = Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, 1);
    let peer = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x1111, 0x2222, 0x3333, 0x4444);
    let mut buf = vec![0u8; 1500];
    let mut writer =
        dhcpv6::Writer::relay(&mut buf, message_type::RELAY_FORW, 0, link, peer).unwrap();
    writer.option(option::INTERFACE_ID, b"eth1").unwrap();
    writer
        .option(
            option::CLIENT_LINKLAYER_ADDR,
            &[&[0, 1][..], &MAC.octets()].concat(),
        )
        .unwrap();
    writer.option(option::RELAY_MSG, &solicit).unwrap();
    let len = writer.finish();
    buf.truncate(len);
    let relay_address =
        SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0xfe), 547, 0, 0);

    let Outcome::Reply { client, reply, .. } = handle(&buf, ServerPort::Dhcp, relay_address) else {
        panic!("answered")
    };
    assert_eq!(client.mac, Some(MAC.octets()));
    assert_eq!(client.mac_source, Some(MacSource::Relay));
    assert_eq!(client.relays, 1);
    assert_eq!(reply.destination, Destination::Relay(*relay_address.ip()));
    let outer = v6::RelayMessage::decode(&mut Decoder::new(&reply.bytes)).unwrap();
    assert_eq!(outer.msg_type(), v6::MessageType::RelayRepl);
    assert_eq!(
        (outer.hop_count(), outer.link_addr(), outer.peer_addr()),
        (0, link, peer)
    );
    let relay = dhcpv6::RelayPacket::new_checked(&reply.bytes[..]).unwrap();
    assert_eq!(relay.find(option::INTERFACE_ID), Ok(Some(&b"eth1"[..])));
    let inner = relay.find(option::RELAY_MSG).unwrap().unwrap();
    let advertise = v6::Message::decode(&mut Decoder::new(inner)).unwrap();
    assert_eq!(advertise.msg_type(), v6::MessageType::Advertise);
    assert_eq!(edk2_sees(inner), Some(BootProtocol::Pxe));
    assert_eq!(url(inner), "tftp://[fd00:18::1]/ipxe-amd64.efi");
}

fn golden(name: &str) -> Vec<u8> {
    let path = format!("{}/../tests/data/dhcpv6/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The captures' client: the lab's node 1 on its link-local address.
fn captured_from(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(client_link_local(), port, 0, 0)
}

#[test]
fn captured_ovmf_pxev6_solicit_gets_an_advertise_edk2_takes_for_a_proxy_offer() {
    let request = golden("ovmf-pxev6-solicit.bin");
    let a = answered(&request, ServerPort::Dhcp, captured_from(546));
    assert_proxy_basics(&request, &a);
    assert_eq!(a.kind, ReplyKind::Advertise);
    assert_eq!(edk2_sees(&a.raw), Some(BootProtocol::Pxe));
    assert_eq!(url(&a.raw), "tftp://[fd00:18::1]/ipxe-amd64.efi");
}

#[test]
fn captured_ovmf_httpv6_solicit_gets_an_advertise_with_the_loader_url() {
    let request = golden("ovmf-httpv6-solicit.bin");
    let a = answered(&request, ServerPort::Dhcp, captured_from(546));
    assert_proxy_basics(&request, &a);
    assert_eq!(edk2_sees(&a.raw), Some(BootProtocol::Http));
    assert_eq!(url(&a.raw), "http://[fd00:18::1]:80/ipxe-amd64.efi");
}

/// The captured 4011 Request names the lab's xdpboot by its DUID; answering as that server,
/// from a global address that names no MAC, the MAC comes from the link layer.
#[test]
fn captured_ovmf_pxev6_request_on_4011_is_answered_by_the_server_it_names() {
    let request = golden("ovmf-pxev6-request-4011.bin");
    let named = raw_option(&request, option::SERVER_ID).expect("EDK2 names the proxy");
    let source = SocketAddrV6::new(
        Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x122),
        4011,
        0,
        0,
    );
    let ingress = Ingress {
        port: ServerPort::Pxe,
        source,
        server: SERVER,
        server_duid: &named,
        link_mac: Some(MAC.octets()),
    };
    let config = config();
    let outcome = Responder::new(&config.policy, config.url_ports()).handle(
        &request,
        &ingress,
        &AllLoaders,
        &AdmitAll,
    );
    let Outcome::Reply { client, reply, .. } = outcome else {
        panic!("answered: {outcome:?}")
    };
    assert_eq!(client.mac, Some(MAC.octets()));
    assert_eq!(client.mac_source, Some(MacSource::LinkLayer));
    assert_eq!(reply.kind, ReplyKind::PxeReply);
    assert_eq!(reply.destination, Destination::Unicast(source));
    assert_eq!(raw_option(&reply.bytes, option::SERVER_ID), Some(named));
    assert_eq!(url(&reply.bytes), "tftp://[fd00:18::1]/ipxe-amd64.efi");
    // Another server's xdpboot leaves it alone.
    assert_eq!(
        ignored(&request, ServerPort::Pxe, source),
        Ignored::OtherServer
    );
}

/// What EDK2 sends the site's server after choosing its address: not ours.
#[test]
fn captured_requests_to_the_site_server_are_not_answered() {
    for name in ["ovmf-pxev6-request-547.bin", "ovmf-httpv6-request-547.bin"] {
        let request = golden(name);
        assert!(
            matches!(
                ignored(&request, ServerPort::Dhcp, captured_from(546)),
                Ignored::MessageType(3) | Ignored::NotBootRequest
            ),
            "{name}"
        );
    }
}

/// Debian 13's iPXE sends what EDK2 sends (vendor class "PXEClient:Arch:00007:…", option 61)
/// besides its user class, and a DUID-UUID in RFC 4122 byte order: its script names its
/// architecture, and its MAC comes from its link-local address.
#[test]
fn captured_ipxe_information_request_gets_its_script_with_its_arch() {
    let request = golden("ipxe-efi-information-request.bin");
    let a = answered(&request, ServerPort::Dhcp, captured_from(546));
    assert_proxy_basics(&request, &a);
    assert_eq!(a.kind, ReplyKind::Reply);
    assert_eq!(
        url(&a.raw),
        "http://[fd00:18::1]:80/boot.ipxe?mac=52:54:00:18:01:01&arch=uefi-x64"
    );
    let Outcome::Reply { client, .. } = handle(&request, ServerPort::Dhcp, captured_from(546))
    else {
        panic!("answered")
    };
    assert!(client.ipxe);
    assert_eq!(client.protocol, Some(BootProtocol::Pxe));
    assert_eq!(client.mac_source, Some(MacSource::LinkLocal));
}

/// Under the M flag iPXE solicits an address; we answer it without one, which iPXE, wanting an
/// address from the Advertise it picks, passes over (`dhcpv6_iaaddr`).
#[test]
fn captured_ipxe_solicit_gets_an_advertise_without_an_address() {
    let request = golden("ipxe-efi-solicit.bin");
    let a = answered(&request, ServerPort::Dhcp, captured_from(546));
    assert_proxy_basics(&request, &a);
    assert_eq!(a.kind, ReplyKind::Advertise);
    assert!(url(&a.raw).starts_with("http://[fd00:18::1]:80/boot.ipxe?mac=52:54:00:18:01:01"));
}
