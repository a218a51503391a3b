//! DHCPv6 proxy boot over the UDP backend, beside the site's DHCPv6 server on the same host and
//! interface: dnsmasq hands out addresses (it binds `[::]:547` with `--bind-interfaces`),
//! xdpboot answers only boot clients, with a boot file URL and no address. The client speaks
//! as EDK2 and iPXE do (`boot_tests::ipv6`); the link has no IPv4 at all.
//!
//! ```text
//!   boot namespace: eth0 fd00:18::1/64, dnsmasq (fd00:18::100–1ff) and xdpboot
//!        ║ veth
//!   client namespace: eth0, link-local (and fd00:18::150/64 for the 4011 exchange)
//! ```

use std::net::Ipv6Addr;
use std::time::Duration;

use boot_common::wire::MacAddr;
use boot_common::wire::dhcpv6::{self, message_type, option};
use boot_tests::ipv6::{
    Dnsmasq6, Probe6, Received6, add_address6, edk2_boot_service_request, edk2_solicit,
    ipxe_information_request, link_local, no_dad, plain_solicit, udp6_sockets_on, wait_ipv6_ready,
};
use boot_tests::{Binding, BootFiles, DEFAULT_LOADERS, Daemon, HTTP_PORT, NetNs, veth};

const BOOT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x150);
const RANGE: (Ipv6Addr, Ipv6Addr) = (
    Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x100),
    Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x1ff),
);
/// How long replies are waited for; how long silence is listened for.
const WINDOW: Duration = Duration::from_secs(3);

/// The lab; fields drop in order: processes, then namespaces, then files.
struct Lab {
    daemon: Daemon,
    _dnsmasq: Dnsmasq6,
    client: NetNs,
    _boot: NetNs,
    files: BootFiles,
    /// The client's MAC (its link-local address is the EUI-64 of it).
    mac: MacAddr,
}

impl Lab {
    fn start() -> Lab {
        let files = BootFiles::new(DEFAULT_LOADERS).expect("the boot files");
        let config = files.config();
        let mut text = std::fs::read_to_string(&config).expect("the config");
        text.push_str("\n[ipv6]\nenabled = true\n");
        std::fs::write(&config, text).expect("writing the config");
        let boot = NetNs::new("boot6").expect("a namespace");
        let client = NetNs::new("client6").expect("a namespace");
        for ns in [&boot, &client] {
            no_dad(ns, "all").expect("DAD off");
        }
        veth(&boot, "eth0", &client, "eth0").expect("the link");
        add_address6(&boot, "eth0", &format!("{BOOT}/64")).expect("the server's address");
        for ns in [&boot, &client] {
            wait_ipv6_ready(ns, "eth0").expect("link-local addresses");
        }
        let mac = boot_tests::ipv6::mac_of(link_local(&client, "eth0").expect("the client's"))
            .expect("an EUI-64 link-local address");
        let dnsmasq = Dnsmasq6::start(
            &boot,
            "eth0",
            RANGE,
            files.dir.path(),
            Binding::Interfaces,
            false,
            &[],
        )
        .expect("dnsmasq as the site's DHCPv6 server");
        let before = udp6_sockets_on(&boot, dhcpv6::SERVER_PORT).expect("the socket table");
        let mut daemon = Daemon::start(&boot, &["eth0"], &config, files.dir.join("xdpboot.log"))
            .expect("xdpboot starts");
        daemon
            .child
            .wait_until("listening on port 547", boot_tests::STARTUP_TIMEOUT, || {
                Ok(udp6_sockets_on(&boot, dhcpv6::SERVER_PORT)? > before)
            })
            .expect("xdpboot binds port 547");
        Lab {
            daemon,
            _dnsmasq: dnsmasq,
            client,
            _boot: boot,
            files,
            mac,
        }
    }

    /// A DHCPv6 client on the client's link-local address, port 546.
    fn dhcp_client(&self) -> Probe6 {
        let address = link_local(&self.client, "eth0").expect("the client's link-local address");
        Probe6::bind(&self.client, "eth0", address, dhcpv6::CLIENT_PORT).expect("port 546")
    }

    /// Sends `request` to ff02::1:2 and collects what comes back with its transaction id.
    fn exchange(&self, probe: &Probe6, request: &[u8], want: usize) -> Vec<Received6> {
        let xid = dhcpv6::Packet::new_checked(request)
            .expect("a DHCPv6 message")
            .transaction_id();
        probe.multicast(request).expect("sending the request");
        probe
            .collect(WINDOW, |all| {
                all.iter()
                    .filter(|r| r.transaction_id() == Some(xid))
                    .count()
                    >= want
            })
            .expect("receiving")
            .into_iter()
            .filter(|r| r.transaction_id() == Some(xid))
            .collect()
    }

    fn ours<'a>(&self, replies: &'a [Received6]) -> Vec<&'a Received6> {
        replies
            .iter()
            .filter(|r| r.boot_file_url().is_some() && r.option(option::IA_NA).is_none())
            .collect()
    }
}

/// The proxy Advertise: from port 547 to our port 546, its Server Identifier ours, no address.
fn assert_proxy_advertise(reply: &Received6) {
    assert_eq!(reply.msg_type(), message_type::ADVERTISE);
    assert_eq!(reply.from.port(), dhcpv6::SERVER_PORT);
    for code in [option::IA_NA, option::IA_TA, option::STATUS_CODE] {
        assert_eq!(reply.option(code), None, "no option {code} from a proxy");
    }
    let server_id = reply.server_id().expect("a Server Identifier");
    assert_eq!(&server_id[..4], &[0, 3, 0, 1], "a DUID-LL of Ethernet");
}

#[test]
fn ovmf_pxev6_solicit_gets_a_proxy_advertise_beside_the_site_servers_address() {
    let lab = Lab::start();
    let probe = lab.dhcp_client();
    let replies = lab.exchange(&probe, &edk2_solicit(lab.mac, false, 0x10_0001), 2);
    let ours = lab.ours(&replies);
    assert_eq!(ours.len(), 1, "one proxy Advertise: {replies:#?}");
    assert_proxy_advertise(ours[0]);
    assert_eq!(
        ours[0].boot_file_url().as_deref(),
        Some("tftp://[fd00:18::1]/ipxe-amd64.efi")
    );
    assert!(
        replies.iter().any(|r| r.option(option::IA_NA).is_some()),
        "the site server's Advertise with an address: {replies:#?}"
    );
    let log = lab.daemon.log();
    assert!(
        log.lines().any(|l| l.contains("answered over DHCPv6")
            && l.contains(&lab.mac.to_string())
            && l.contains("reply=\"advertise\"")),
        "{log}"
    );
}

#[test]
fn ovmf_httpv6_solicit_gets_the_loader_url_in_brackets() {
    let lab = Lab::start();
    let probe = lab.dhcp_client();
    let replies = lab.exchange(&probe, &edk2_solicit(lab.mac, true, 0x10_0002), 2);
    let ours = lab.ours(&replies);
    assert_eq!(ours.len(), 1, "{replies:#?}");
    assert_proxy_advertise(ours[0]);
    assert_eq!(
        ours[0].boot_file_url(),
        Some(format!("http://[fd00:18::1]:{HTTP_PORT}/ipxe-amd64.efi"))
    );
    let class = ours[0]
        .option(option::VENDOR_CLASS)
        .expect("a vendor class");
    assert_eq!(&class[6..], b"HTTPClient");
}

#[test]
fn a_solicit_without_boot_marks_gets_only_the_site_servers_advertise() {
    let lab = Lab::start();
    let probe = lab.dhcp_client();
    let replies = lab.exchange(&probe, &plain_solicit(lab.mac, 0x10_0003), 99);
    assert!(
        replies.iter().any(|r| r.option(option::IA_NA).is_some()),
        "the site server answered: {replies:#?}"
    );
    assert!(
        lab.ours(&replies).is_empty(),
        "xdpboot stayed silent: {replies:#?}"
    );
}

/// EDK2's second exchange: the Request to port 4011 of the host in the tftp:// URL, with our
/// Server Identifier and the Advertise's transaction id; the Reply comes from that address
/// and port.
#[test]
fn edk2s_boot_service_request_on_4011_is_answered_from_the_url_host() {
    let lab = Lab::start();
    let probe = lab.dhcp_client();
    let replies = lab.exchange(&probe, &edk2_solicit(lab.mac, false, 0x10_0004), 2);
    let advertise = lab
        .ours(&replies)
        .first()
        .copied()
        .cloned()
        .expect("our Advertise");
    let server_id = advertise.server_id().expect("a Server Identifier");

    add_address6(&lab.client, "eth0", &format!("{CLIENT}/64")).expect("the client's address");
    let pxe =
        Probe6::bind(&lab.client, "eth0", CLIENT, boot_tests::PXE_SERVER_PORT).expect("port 4011");
    pxe.send(
        &edk2_boot_service_request(lab.mac, &server_id, 0x10_0004),
        BOOT,
        boot_tests::PXE_SERVER_PORT,
    )
    .expect("sending to 4011");
    let replies = pxe
        .collect(WINDOW, |all| !all.is_empty())
        .expect("receiving");
    let reply = replies
        .first()
        .unwrap_or_else(|| panic!("a Reply on 4011; xdpboot:\n{}", lab.daemon.log()));
    assert_eq!(reply.msg_type(), message_type::REPLY);
    assert_eq!((*reply.from.ip(), reply.from.port()), (BOOT, 4011));
    assert_eq!(reply.transaction_id(), Some(0x10_0004));
    assert_eq!(
        reply.boot_file_url().as_deref(),
        Some("tftp://[fd00:18::1]/ipxe-amd64.efi")
    );
}

#[test]
fn ipxes_information_request_is_answered_with_its_script_url() {
    let lab = Lab::start();
    let probe = lab.dhcp_client();
    let replies = lab.exchange(&probe, &ipxe_information_request(lab.mac, 0x10_0005), 2);
    let ours: Vec<&Received6> = replies
        .iter()
        .filter(|r| r.boot_file_url().is_some())
        .collect();
    assert_eq!(ours.len(), 1, "{replies:#?}");
    assert_eq!(ours[0].msg_type(), message_type::REPLY);
    assert_eq!(
        ours[0].boot_file_url(),
        Some(format!(
            "http://[fd00:18::1]:{HTTP_PORT}/boot.ipxe?mac={}&arch=",
            lab.mac
        ))
    );
}

/// The first stage over IPv6: the loader over TFTP from the URL's host, and the script over
/// HTTP, each from the client's ULA.
#[test]
fn tftp_and_http_answer_over_ipv6() {
    let lab = Lab::start();
    add_address6(&lab.client, "eth0", &format!("{CLIENT}/64")).expect("the client's address");
    let loader = lab.files.dir.join("fetched.efi");
    let loader_arg = loader.display().to_string();
    lab.client
        .exec(
            std::path::Path::new("curl"),
            &[
                "-sSg",
                "--max-time",
                "10",
                "-o",
                &loader_arg,
                "tftp://[fd00:18::1]/ipxe-amd64.efi",
            ],
        )
        .expect("curl over TFTP");
    assert_eq!(
        std::fs::read(&loader).expect("the fetched loader"),
        std::fs::read(lab.files.tftp_root().join("ipxe-amd64.efi")).expect("the loader")
    );
    let status = lab
        .client
        .exec(
            std::path::Path::new("curl"),
            &[
                "-sg",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://[fd00:18::1]:{HTTP_PORT}/boot.ipxe?mac={}", lab.mac),
            ],
        )
        .expect("curl over HTTP");
    assert_eq!(status.trim(), "200");
    let log = lab.daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("tftp transfer") && l.contains("outcome=\"complete\"")),
        "{log}"
    );
}
