//! Golden packets: requests captured from real firmware (`tests/data/`, see its README for how)
//! go through the core with the embedded default policy; the replies' fields are checked
//! against what each firmware needs (PXE 2.1, iPXE `dhcp.c`, EDK2 `PxeBcDhcp4.c` /
//! `HttpBootDhcp4.c`, and dnsmasq's replies in the same captures).

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{self, DhcpOption, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder};

use xdpboot::config::Config;
use xdpboot::dhcp::classify::{self, BootProtocol, ClientArch, UuidDisplay};
use xdpboot::dhcp::{
    AdmitAll, BootAction, Destination, Ignored, Ingress, LoaderIndex, Outcome, ReplyKind,
    Responder, ServerPort,
};

/// The proxy's address in every capture.
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

struct AllLoaders;
impl LoaderIndex for AllLoaders {
    fn has_loader(&self, _: &str) -> bool {
        true
    }
}

fn golden(name: &str) -> Vec<u8> {
    let path = format!("{}/../tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The embedded default's responder; outcomes borrow rule names from it.
fn responder() -> &'static Responder {
    static RESPONDER: std::sync::OnceLock<Responder> = std::sync::OnceLock::new();
    RESPONDER.get_or_init(|| {
        let config = Config::embedded().expect("embedded default is valid");
        Responder::new(config.policy.clone(), config.url_ports())
    })
}

/// Runs a golden request through the core as if it arrived from `source` on `port`.
fn handle(name: &str, port: ServerPort, source: SocketAddrV4) -> Outcome<'static> {
    let ingress = Ingress {
        port,
        source,
        server: SERVER,
    };
    responder().handle(&golden(name), &ingress, &AllLoaders, &AdmitAll)
}

fn broadcast_source() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)
}

struct Answered {
    request: v4::Message,
    reply: v4::Message,
    raw_len: usize,
    destination: Destination,
    kind: ReplyKind,
    action: BootAction<'static>,
}

fn answered(name: &str, port: ServerPort, source: SocketAddrV4) -> Answered {
    match handle(name, port, source) {
        Outcome::Reply { reply, action, .. } => Answered {
            request: v4::Message::decode(&mut Decoder::new(&golden(name))).unwrap(),
            reply: v4::Message::decode(&mut Decoder::new(&reply.bytes)).unwrap(),
            raw_len: reply.bytes.len(),
            destination: reply.destination,
            kind: reply.kind,
            action,
        },
        other => panic!("{name}: expected a reply, got {other:?}"),
    }
}

fn opt(m: &v4::Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

/// The `file` field up to its NUL terminator (dhcproto keeps the NUL).
fn file(m: &v4::Message) -> String {
    let raw = m.fname().unwrap_or_default();
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8(raw[..end].to_vec()).unwrap()
}

/// What every proxy reply has in common, whatever the client.
fn assert_proxy_reply_basics(a: &Answered, vendor_class: &[u8]) {
    let (req, rep) = (&a.request, &a.reply);
    assert_eq!(rep.opcode(), Opcode::BootReply);
    assert_eq!(rep.xid(), req.xid(), "xid echoed");
    assert_eq!(rep.chaddr(), req.chaddr(), "chaddr echoed");
    assert_eq!(rep.htype(), req.htype());
    assert_eq!(rep.yiaddr(), Ipv4Addr::UNSPECIFIED, "a proxy never assigns");
    assert_eq!(rep.siaddr(), SERVER, "siaddr is the ingress address");
    assert_eq!(rep.giaddr(), req.giaddr());
    assert_eq!(
        opt(rep, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(rep, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(vendor_class.to_vec()))
    );
    // Option 97 echoed byte for byte.
    assert_eq!(
        opt(rep, OptionCode::ClientMachineIdentifier),
        opt(req, OptionCode::ClientMachineIdentifier)
    );
    assert!(opt(req, OptionCode::ClientMachineIdentifier).is_some());
    assert!(a.raw_len >= 300, "padded to 300 bytes, got {}", a.raw_len);
    assert!(!file(rep).is_empty(), "a boot file");
}

fn assert_no_option_43(a: &Answered) {
    assert_eq!(opt(&a.reply, OptionCode::VendorExtensions), None);
}

// ---- SeaBIOS + the NIC's iPXE ROM -----------------------------------------------------------

#[test]
fn seabios_ipxe_rom_discover_gets_a_broadcast_proxy_offer_with_the_script_url() {
    let a = answered(
        "seabios-ipxe-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
    );
    assert_proxy_reply_basics(&a, b"PXEClient");
    assert_eq!(a.kind, ReplyKind::ProxyOffer);
    assert_eq!(
        opt(&a.reply, OptionCode::MessageType),
        Some(&DhcpOption::MessageType(MessageType::Offer))
    );
    assert!(a.reply.flags().broadcast());
    assert_eq!(a.destination, Destination::Broadcast);
    assert_eq!(
        file(&a.reply),
        "http://198.18.0.1:80/boot.ipxe?mac=52:54:00:18:00:01&arch=bios"
    );
    assert!(matches!(a.action, BootAction::Http { .. }));
    // BIOS: "use the boot file in this offer" (PXE 2.1 §2.2.5). With siaddr and file present,
    // iPXE takes this offer as is (dhcp_has_pxeopts) and sends no 4011 request.
    assert_eq!(
        opt(&a.reply, OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
}

#[test]
fn seabios_ipxe_rom_proxy_request_on_4011_gets_an_ack_back_to_its_port_68() {
    let source = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 146), 68);
    let a = answered("seabios-ipxe-request-4011.bin", ServerPort::Pxe, source);
    assert_proxy_reply_basics(&a, b"PXEClient");
    assert_eq!(a.kind, ReplyKind::ProxyAck);
    assert_eq!(
        opt(&a.reply, OptionCode::MessageType),
        Some(&DhcpOption::MessageType(MessageType::Ack))
    );
    assert_eq!(a.destination, Destination::Unicast(source));
    assert_eq!(
        a.reply.ciaddr(),
        Ipv4Addr::new(198, 18, 0, 146),
        "ciaddr echoed"
    );
    assert_eq!(
        file(&a.reply),
        "http://198.18.0.1:80/boot.ipxe?mac=52:54:00:18:00:01&arch=bios"
    );
    // iPXE accepts the ACK only with the option 54 it sent its request to.
    assert_eq!(
        opt(&a.request, OptionCode::ServerIdentifier),
        opt(&a.reply, OptionCode::ServerIdentifier)
    );
}

#[test]
fn seabios_ipxe_boot_server_request_gets_its_boot_item_echoed() {
    let source = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 149), 68);
    let a = answered("seabios-ipxe-pxebs-4011.bin", ServerPort::Pxe, source);
    assert_eq!(a.kind, ReplyKind::ProxyAck);
    assert_eq!(a.reply.xid(), 0);
    assert_eq!(
        opt(&a.reply, OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![
            71, 4, 0x80, 0, 0, 0, 255
        ]))
    );
}

#[test]
fn undionly_kpxe_with_a_bare_pxeclient_vendor_class_is_classified_by_option_93() {
    // undionly.kpxe copies the server's option 60 ("PXEClient", no ":Arch:"), so the arch
    // must come from option 93.
    let bytes = golden("undionly-kpxe-discover.bin");
    let request = classify::parse(&bytes, ServerPort::Dhcp).unwrap();
    assert_eq!(request.client.arch, Some(ClientArch::Bios));
    assert_eq!(request.client.protocol, Some(BootProtocol::Pxe));
    assert!(request.client.ipxe.is_some());
    let a = answered(
        "undionly-kpxe-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
    );
    assert_eq!(
        file(&a.reply),
        "http://198.18.0.1:80/boot.ipxe?mac=52:54:00:18:00:01&arch=bios"
    );
}

// ---- OVMF's own PXE client ------------------------------------------------------------------

#[test]
fn ovmf_pxe_discover_gets_the_x64_loader_and_no_option_43() {
    let a = answered(
        "ovmf-pxe-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
    );
    assert_proxy_reply_basics(&a, b"PXEClient");
    assert_eq!(a.kind, ReplyKind::ProxyOffer);
    assert_eq!(file(&a.reply), "ipxe-amd64.efi");
    assert_eq!(
        a.action,
        BootAction::Tftp {
            file: "ipxe-amd64.efi"
        }
    );
    // No option 43: EDK2 then asks port 4011 for the boot file (pixiecore; dnsmasq ≥ 2.76).
    assert_no_option_43(&a);
    assert_eq!(a.destination, Destination::Broadcast);
}

#[test]
fn ovmf_pxe_request_from_port_4011_without_option_54_is_acked_back_to_port_4011() {
    // EDK2 sends from port 4011 with a new xid and no option 54: the server address is the
    // one the request reached (SERVER here), and the ACK goes back to port 4011.
    let source = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 147), 4011);
    let a = answered("ovmf-pxe-request-4011.bin", ServerPort::Pxe, source);
    assert_proxy_reply_basics(&a, b"PXEClient");
    assert_eq!(opt(&a.request, OptionCode::ServerIdentifier), None);
    assert_eq!(a.kind, ReplyKind::ProxyAck);
    assert_eq!(a.destination, Destination::Unicast(source));
    assert_eq!(file(&a.reply), "ipxe-amd64.efi");
    assert_eq!(a.reply.ciaddr(), Ipv4Addr::new(198, 18, 0, 147));
    assert_no_option_43(&a);
}

#[test]
fn ovmf_uuid_is_printed_in_dmidecode_order() {
    let bytes = golden("ovmf-pxe-discover.bin");
    let request = classify::parse(&bytes, ServerPort::Dhcp).unwrap();
    let uuid = request.client.uuid.expect("OVMF sends option 97");
    assert_eq!(
        UuidDisplay(&uuid).to_string(),
        "00112233-4455-6677-8899-aabbccddee02"
    );
    assert_eq!(request.client.undi, Some((3, 0)));
}

// ---- iPXE EFI, chainloaded ------------------------------------------------------------------

#[test]
fn ipxe_efi_discover_gets_the_script_url_with_its_arch() {
    let bytes = golden("ipxe-efi-discover.bin");
    let request = classify::parse(&bytes, ServerPort::Dhcp).unwrap();
    let features = request.client.ipxe.expect("user class iPXE");
    assert!(features.efi && features.http && !features.https);
    let a = answered(
        "ipxe-efi-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
    );
    assert_proxy_reply_basics(&a, b"PXEClient");
    assert_eq!(
        file(&a.reply),
        "http://198.18.0.1:80/boot.ipxe?mac=52:54:00:18:00:02&arch=uefi-x64"
    );
    assert_no_option_43(&a);
}

#[test]
fn ipxe_efi_proxy_request_gets_the_same_url() {
    let source = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 147), 68);
    let a = answered("ipxe-efi-request-4011.bin", ServerPort::Pxe, source);
    assert_eq!(a.kind, ReplyKind::ProxyAck);
    assert_eq!(
        file(&a.reply),
        "http://198.18.0.1:80/boot.ipxe?mac=52:54:00:18:00:02&arch=uefi-x64"
    );
    assert_eq!(a.destination, Destination::Unicast(source));
}

// ---- OVMF UEFI HTTP boot --------------------------------------------------------------------

#[test]
fn ovmf_http_boot_discover_gets_an_httpclient_offer_with_a_url() {
    let a = answered(
        "ovmf-http-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
    );
    assert_proxy_reply_basics(&a, b"HTTPClient");
    assert_eq!(a.kind, ReplyKind::ProxyOffer);
    assert_eq!(file(&a.reply), "http://198.18.0.1:80/ipxe-amd64.efi");
    assert_no_option_43(&a);
}

// ---- requests that are not ours -------------------------------------------------------------

#[test]
fn requests_to_port_67_selecting_the_site_servers_offer_are_left_alone() {
    for name in [
        "seabios-ipxe-request-67.bin",
        "undionly-kpxe-request-67.bin",
        "ovmf-pxe-request-67.bin",
        "ipxe-efi-request-67.bin",
        "ovmf-http-request-67.bin",
    ] {
        match handle(name, ServerPort::Dhcp, broadcast_source()) {
            Outcome::Ignored {
                reason: Ignored::MessageType(MessageType::Request),
                ..
            } => {}
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn a_discover_without_a_pxe_vendor_class_is_the_site_servers_alone() {
    let mut bytes = golden("ovmf-pxe-discover.bin");
    // Overwrite "PXEClient" in option 60 with something else of the same length.
    let at = bytes
        .windows(9)
        .position(|w| w == b"PXEClient")
        .expect("vendor class present");
    bytes[at..at + 9].copy_from_slice(b"MSFT 5.0 ");
    let ingress = Ingress {
        port: ServerPort::Dhcp,
        source: broadcast_source(),
        server: SERVER,
    };
    match responder().handle(&bytes, &ingress, &AllLoaders, &AdmitAll) {
        Outcome::Ignored {
            reason: Ignored::NotBootRequest,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_relayed_discover_is_answered_to_the_relay() {
    let mut bytes = golden("ovmf-pxe-discover.bin");
    let relay = Ipv4Addr::new(198, 18, 7, 1);
    bytes[24..28].copy_from_slice(&relay.octets());
    let ingress = Ingress {
        port: ServerPort::Dhcp,
        source: SocketAddrV4::new(relay, 67),
        server: SERVER,
    };
    match responder().handle(&bytes, &ingress, &AllLoaders, &AdmitAll) {
        Outcome::Reply { reply, .. } => {
            // The broadcast flag is set, but giaddr wins (RFC 2131 §4.1).
            assert_eq!(reply.destination, Destination::Relay(relay));
            let m = v4::Message::decode(&mut Decoder::new(&reply.bytes)).unwrap();
            assert_eq!(m.giaddr(), relay);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_loader_means_no_offer() {
    struct NoLoaders;
    impl LoaderIndex for NoLoaders {
        fn has_loader(&self, _: &str) -> bool {
            false
        }
    }
    let ingress = Ingress {
        port: ServerPort::Dhcp,
        source: broadcast_source(),
        server: SERVER,
    };
    match responder().handle(
        &golden("ovmf-pxe-discover.bin"),
        &ingress,
        &NoLoaders,
        &AdmitAll,
    ) {
        Outcome::Ignored {
            reason: Ignored::LoaderMissing { file, .. },
            ..
        } => assert_eq!(file, "ipxe-amd64.efi"),
        other => panic!("{other:?}"),
    }
    // HTTP actions do not depend on the TFTP root.
    match responder().handle(
        &golden("ipxe-efi-discover.bin"),
        &ingress,
        &NoLoaders,
        &AdmitAll,
    ) {
        Outcome::Reply { .. } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_golden_request_parses_and_has_option_93() {
    let dir = format!("{}/../tests/data", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let bytes = std::fs::read(&path).unwrap();
            let port = if path.to_string_lossy().contains("4011") {
                ServerPort::Pxe
            } else {
                ServerPort::Dhcp
            };
            let request =
                classify::parse(&bytes, port).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(request.client.arch.is_some(), "{}", path.display());
            assert!(request.client.is_boot_request(), "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 14, "only {seen} golden packets");
}

// ---- Local boot and loader chains -----------------------------------------------------------

/// A responder whose only rule is `rules` (TOML), and the outcome of golden request `name`
/// through it, from `source` on `port`, admitted by `admission`.
fn handle_with(
    rules: &str,
    name: &str,
    port: ServerPort,
    source: SocketAddrV4,
    admission: &dyn xdpboot::dhcp::Admission,
) -> (Option<Answered>, Outcome<'static>) {
    let config = Config::parse(rules, "rules.toml").expect("the rules parse");
    let responder: &'static Responder = Box::leak(Box::new(Responder::new(
        config.policy.clone(),
        config.url_ports(),
    )));
    let ingress = Ingress {
        port,
        source,
        server: SERVER,
    };
    let outcome = responder.handle(&golden(name), &ingress, &AllLoaders, admission);
    let answered = match &outcome {
        Outcome::Reply { reply, action, .. } => Some(Answered {
            request: v4::Message::decode(&mut Decoder::new(&golden(name))).unwrap(),
            reply: v4::Message::decode(&mut Decoder::new(&reply.bytes)).unwrap(),
            raw_len: reply.bytes.len(),
            destination: reply.destination,
            kind: reply.kind,
            action: *action,
        }),
        _ => None,
    };
    (answered, outcome)
}

/// Option 43 of a local-boot answer: discovery control 3 (no discovery), prompt with timeout 0,
/// and one menu item of boot server type 0, "local boot" (PXE 2.1 §2.2.5; what dnsmasq sends
/// for a `pxe-service` without a basename).
fn local_boot_menu(echoed_item: Option<[u8; 4]>) -> Vec<u8> {
    let text = b"xdpboot: boot from local disk";
    let mut expected = vec![
        6,
        1,
        3,
        10,
        4,
        0,
        b'P',
        b'X',
        b'E',
        9,
        3 + text.len() as u8,
        0,
        0,
    ];
    expected.push(text.len() as u8);
    expected.extend_from_slice(text);
    if let Some(item) = echoed_item {
        expected.extend_from_slice(&[71, 4]);
        expected.extend_from_slice(&item);
    }
    expected.push(255);
    expected
}

const LOCAL: &str = "[[policy]]\nname = \"deployed\"\nlocal = true\n";

#[test]
fn a_pxe_rom_sent_to_its_disk_gets_a_menu_whose_only_item_is_local_boot_and_no_file() {
    for (name, port, source) in [
        (
            "ovmf-pxe-discover.bin",
            ServerPort::Dhcp,
            broadcast_source(),
        ),
        (
            "ovmf-pxe-request-4011.bin",
            ServerPort::Pxe,
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 147), 4011),
        ),
    ] {
        let (a, outcome) = handle_with(LOCAL, name, port, source, &AdmitAll);
        let a = a.unwrap_or_else(|| panic!("{name}: {outcome:?}"));
        assert_eq!(a.action, BootAction::Local { file: None }, "{name}");
        assert_eq!(file(&a.reply), "", "{name}: no boot file");
        assert_eq!(
            opt(&a.reply, OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(local_boot_menu(None))),
            "{name}"
        );
        assert_eq!(a.reply.siaddr(), SERVER);
        assert!(a.raw_len >= 300);
    }
}

#[test]
fn ipxe_sent_to_its_disk_gets_the_script_that_exits_and_uefi_http_boot_a_url_that_fails_at_once() {
    let (a, outcome) = handle_with(
        LOCAL,
        "seabios-ipxe-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
        &AdmitAll,
    );
    let a = a.unwrap_or_else(|| panic!("{outcome:?}"));
    assert_eq!(file(&a.reply), "local.ipxe");
    assert!(matches!(a.action, BootAction::Local { file: Some(f) } if f.as_str() == "local.ipxe"));
    // UEFI HTTP boot has no "local" answer: it gets a URL that is always a 404, so it gives
    // up at once and the firmware tries its next boot option.
    let (a, outcome) = handle_with(
        LOCAL,
        "ovmf-http-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
        &AdmitAll,
    );
    let a = a.unwrap_or_else(|| panic!("{outcome:?}"));
    assert_eq!(file(&a.reply), "http://198.18.0.1/boot/local");
    assert_eq!(
        opt(&a.reply, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
}

#[test]
fn the_boot_apis_local_answer_overrides_the_policy_table() {
    struct Deployed;
    impl xdpboot::dhcp::Admission for Deployed {
        fn admit(&self, _: Option<[u8; 6]>) -> xdpboot::dhcp::Admit {
            xdpboot::dhcp::Admit::Local
        }
    }
    let table = "[[policy]]\nname = \"uefi\"\narch = [\"uefi-x64\"]\ntftp = \"ipxe-amd64.efi\"\n";
    let (a, outcome) = handle_with(
        table,
        "ovmf-pxe-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
        &Deployed,
    );
    let a = a.unwrap_or_else(|| panic!("{outcome:?}"));
    assert_eq!(a.action, BootAction::Local { file: None });
    assert!(matches!(
        outcome,
        Outcome::Reply {
            rule: "boot-api",
            ..
        }
    ));
}

#[test]
fn a_loader_chain_hands_each_arch_its_first_stage_over_tftp_or_at_its_url() {
    let shim = "[[policy]]\nname = \"sb\"\nloader = \"shim\"\n";
    let (a, outcome) = handle_with(
        shim,
        "ovmf-pxe-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
        &AdmitAll,
    );
    let a = a.unwrap_or_else(|| panic!("{outcome:?}"));
    assert_eq!(file(&a.reply), "shimx64.efi");
    assert_no_option_43(&a);
    // UEFI HTTP boot: the same rule, at its URL on the HTTP port (80 is left out: GRUB's HTTP
    // client reaches no other port, and shim fetches grubx64.efi beside it).
    let (a, outcome) = handle_with(
        shim,
        "ovmf-http-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
        &AdmitAll,
    );
    let a = a.unwrap_or_else(|| panic!("{outcome:?}"));
    assert_eq!(file(&a.reply), "http://198.18.0.1/shimx64.efi");
    // shim has no BIOS build: a BIOS ROM is not matched by the rule (and the table has no
    // other, so nothing answers it).
    let (a, _) = handle_with(
        shim,
        "seabios-ipxe-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
        &AdmitAll,
    );
    assert!(a.is_none());
    // PXELINUX: BIOS only; iPXE (the NIC ROM) runs it like a PXE ROM would.
    let (a, outcome) = handle_with(
        "[[policy]]\nname = \"bios\"\nloader = \"pxelinux\"\n",
        "seabios-ipxe-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
        &AdmitAll,
    );
    let a = a.unwrap_or_else(|| panic!("{outcome:?}"));
    assert_eq!(file(&a.reply), "lpxelinux.0");
    // iPXE is never handed iPXE again (it would chain itself for ever).
    let (a, _) = handle_with(
        "[[policy]]\nname = \"ipxe\"\nloader = \"ipxe\"\n",
        "ipxe-efi-discover.bin",
        ServerPort::Dhcp,
        broadcast_source(),
        &AdmitAll,
    );
    assert!(a.is_none());
}
