//! xdpboot as a proxyDHCP server beside a real site DHCP server (dnsmasq), seen from a client
//! that sends what PXE firmware, iPXE and UEFI HTTP boot send. Every test builds its own
//! topology in private network namespaces (see `boot_tests`), so tests run in parallel and share
//! no state.
//!
//! Needs root, dnsmasq, iproute2 and the daemon: `cargo build -p boot-user` first.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::Result;
use boot_tests::{
    Binding, BootFiles, BootRequest, DEFAULT_LOADERS, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, Daemon,
    Dnsmasq, NetNs, PXE_SERVER_PORT, Probe, QUIET, REPLY_TIMEOUT, Received, STARTUP_TIMEOUT,
    SiteLan, TwoSubnets, assert_proxy_reply, broadcast_to_servers, from_server,
    replies_once_decided, veth,
};
use dhcproto::v4::MessageType;

/// Broadcasts `request` on the LAN and returns the site server's offer and ours.
fn both_offers(lan: &SiteLan, request: &BootRequest) -> Result<(Received, Received)> {
    let replies = lan
        .probe
        .exchange(request, broadcast_to_servers(), REPLY_TIMEOUT, |r| {
            !from_server(r, SiteLan::SITE).is_empty() && !from_server(r, SiteLan::BOOT).is_empty()
        })?;
    let site = from_server(&replies, SiteLan::SITE);
    let ours = from_server(&replies, SiteLan::BOOT);
    assert_eq!(
        site.len(),
        1,
        "expected one offer from the site DHCP server within {REPLY_TIMEOUT:?}, got {replies:#?}"
    );
    assert_eq!(
        ours.len(),
        1,
        "expected one proxy offer from xdpboot within {REPLY_TIMEOUT:?}, got {replies:#?}"
    );
    Ok((site[0].clone(), ours[0].clone()))
}

/// The site server's offer: an address from its range, from its own address.
fn assert_address_offer(offer: &Received) {
    assert_eq!(offer.message_type(), Some(MessageType::Offer));
    assert_eq!(*offer.from.ip(), SiteLan::SITE);
    let yiaddr = offer.message.yiaddr();
    assert!(
        (SiteLan::RANGE.0..=SiteLan::RANGE.1).contains(&yiaddr),
        "site offer's yiaddr {yiaddr} is outside {:?}",
        SiteLan::RANGE
    );
}

/// A proxy OFFER from xdpboot on the LAN.
fn assert_proxy_offer(offer: &Received, request: &BootRequest, vendor_class: &str, file: &str) {
    boot_tests::assert_proxy_offer(offer, request, SiteLan::BOOT, vendor_class, file);
}

/// [`replies_once_decided`] for a DISCOVER broadcast on the LAN, a BIOS DISCOVER following it.
fn discover_once_decided(lan: &SiteLan, request: &BootRequest) -> Result<Vec<Received>> {
    replies_once_decided(
        &lan.probe,
        broadcast_to_servers(),
        request,
        &BootRequest::pxe(0),
        SiteLan::BOOT,
    )
}

// ---------------------------------------------------------------------------------------------
// Topology A: one LAN with the site's DHCP server, xdpboot and a client

#[test]
fn bios_pxe_rom_gets_an_address_from_the_site_and_undionly_from_us() -> Result<()> {
    let lan = SiteLan::start()?;
    let request = BootRequest::pxe(0);
    let (site, ours) = both_offers(&lan, &request)?;
    assert_address_offer(&site);
    assert_proxy_offer(&ours, &request, "PXEClient", "undionly.kpxe");
    Ok(())
}

#[test]
fn uefi_pxe_roms_get_the_efi_loader_without_option_43() -> Result<()> {
    let lan = SiteLan::start()?;
    // 7 is UEFI x64, 9 the EFI byte-code number several x64 firmwares send, 6 UEFI IA32 (which
    // the default policy sends to the same loader).
    for arch in [7, 9, 6] {
        let request = BootRequest::pxe(arch);
        let (site, ours) = both_offers(&lan, &request)?;
        assert_address_offer(&site);
        assert_proxy_offer(&ours, &request, "PXEClient", "ipxe-amd64.efi");
    }
    Ok(())
}

#[test]
fn uefi_http_boot_gets_a_url_and_the_httpclient_vendor_class() -> Result<()> {
    let lan = SiteLan::start()?;
    let request = BootRequest::http(16);
    let (site, ours) = both_offers(&lan, &request)?;
    assert_address_offer(&site);
    assert_proxy_offer(
        &ours,
        &request,
        "HTTPClient",
        "http://198.18.0.1:8080/ipxe-amd64.efi",
    );
    Ok(())
}

#[test]
fn ipxe_gets_the_url_of_its_boot_script() -> Result<()> {
    let lan = SiteLan::start()?;
    for (arch, name) in [(0, "bios"), (7, "uefi-x64")] {
        let request = BootRequest::pxe(arch).ipxe();
        let (site, ours) = both_offers(&lan, &request)?;
        assert_address_offer(&site);
        let url = format!(
            "http://198.18.0.1:8080/boot.ipxe?mac={}&arch={name}",
            request.mac
        );
        assert_proxy_offer(&ours, &request, "PXEClient", &url);
    }
    Ok(())
}

#[test]
fn requests_to_port_4011_are_acked_from_4011_with_the_offers_server_and_file() -> Result<()> {
    let client = Ipv4Addr::new(198, 18, 0, 50);
    let lan = SiteLan::start_with(DEFAULT_LOADERS, Some(client), DHCP_CLIENT_PORT)?;
    let cases = [
        BootRequest::pxe(0),
        BootRequest::pxe(7),
        BootRequest::pxe(0).ipxe(),
        BootRequest::pxe(7).ipxe(),
    ];
    for discover in cases {
        let (_, offer) = both_offers(&lan, &discover)?;
        let server = offer.server_id().expect("the offer has option 54");
        let file = offer.file();
        // As iPXE does after a proxy offer (dhcp.c, DHCP_STATE_PROXYREQUEST): the same xid and
        // client, now with an address, unicast to option 54 port 4011.
        let request = discover.request_to(server, client);
        let replies = lan.probe.exchange(
            &request,
            SocketAddrV4::new(server, PXE_SERVER_PORT),
            REPLY_TIMEOUT,
            |r| !r.is_empty(),
        )?;
        assert_eq!(
            replies.len(),
            1,
            "expected one ACK for {request:?} within {REPLY_TIMEOUT:?}, got {replies:#?}"
        );
        assert_proxy_reply(
            &replies[0],
            &request,
            MessageType::Ack,
            server,
            "PXEClient",
            &file,
        );
        assert_eq!(replies[0].to, client, "the ACK is unicast to the requester");
    }
    Ok(())
}

#[test]
fn plain_discover_is_left_to_the_site_dhcp_server() -> Result<()> {
    let lan = SiteLan::start()?;
    let request = BootRequest::plain();
    let replies = discover_once_decided(&lan, &request)?;
    assert!(
        from_server(&replies, SiteLan::BOOT).is_empty(),
        "xdpboot answered a DISCOVER that is not a boot request: {replies:#?}"
    );
    let site = from_server(&replies, SiteLan::SITE);
    assert_eq!(site.len(), 1, "the site server's offer: {replies:#?}");
    assert_address_offer(site[0]);
    Ok(())
}

#[test]
fn unknown_architecture_gets_no_proxy_offer() -> Result<()> {
    let lan = SiteLan::start()?;
    // 2 is EFI Itanium: a real code, but no policy knows it.
    let request = BootRequest::pxe(2);
    let replies = discover_once_decided(&lan, &request)?;
    assert!(
        from_server(&replies, SiteLan::BOOT).is_empty(),
        "xdpboot answered an unknown architecture: {replies:#?}"
    );
    Ok(())
}

#[test]
fn arm64_is_offered_its_loader_only_once_the_loader_is_in_the_tftp_root() -> Result<()> {
    let lan = SiteLan::start()?;
    let before = BootRequest::pxe(11);
    let replies = discover_once_decided(&lan, &before)?;
    assert!(
        from_server(&replies, SiteLan::BOOT).is_empty(),
        "xdpboot offered a loader that is not in the TFTP root: {replies:#?}"
    );
    assert!(
        lan.daemon.log().contains("ipxe-arm64.efi"),
        "the missing loader is reported:\n{}",
        lan.daemon.log()
    );

    lan.files.add_loader("ipxe-arm64.efi")?;
    // The daemon caches loader lookups for a second (FsLoaders::TTL): a client retrying, as
    // firmware does every few seconds, is answered once the cache has expired.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = BootRequest::pxe(11);
        let replies = lan.probe.exchange(
            &after,
            broadcast_to_servers(),
            Duration::from_millis(500),
            |r| !from_server(r, SiteLan::BOOT).is_empty(),
        )?;
        if let Some(ours) = from_server(&replies, SiteLan::BOOT).first() {
            assert_proxy_offer(ours, &after, "PXEClient", "ipxe-arm64.efi");
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "no offer for arm64 within 5 s of the loader appearing:\n{}",
            lan.daemon.log()
        );
    }
}

#[test]
fn relayed_discover_is_answered_to_the_relay_agent() -> Result<()> {
    // The client namespace plays the relay agent: it holds giaddr and listens on port 67.
    let relay = Ipv4Addr::new(198, 18, 0, 60);
    let lan = SiteLan::start_with(DEFAULT_LOADERS, Some(relay), DHCP_SERVER_PORT)?;
    let request = BootRequest::pxe(7).relayed_by(relay);
    let replies = lan.probe.exchange(
        &request,
        SocketAddrV4::new(SiteLan::BOOT, DHCP_SERVER_PORT),
        REPLY_TIMEOUT,
        |r| !r.is_empty(),
    )?;
    assert_eq!(
        replies.len(),
        1,
        "expected one relayed offer, got {replies:#?}"
    );
    assert_eq!(replies[0].to, relay, "the offer goes to giaddr, port 67");
    assert_proxy_reply(
        &replies[0],
        &request,
        MessageType::Offer,
        SiteLan::BOOT,
        "PXEClient",
        "ipxe-amd64.efi",
    );
    Ok(())
}

#[test]
fn the_request_for_the_site_servers_address_is_left_to_it() -> Result<()> {
    let lan = SiteLan::start()?;
    let discover = BootRequest::pxe(7);
    let (site, _) = both_offers(&lan, &discover)?;
    // The PXE ROM takes the site server's address (same xid, as firmware does).
    let request = discover.selecting(SiteLan::SITE, site.message.yiaddr());
    let replies = replies_once_decided(
        &lan.probe,
        broadcast_to_servers(),
        &request,
        &BootRequest::pxe(0),
        SiteLan::BOOT,
    )?;
    assert!(
        from_server(&replies, SiteLan::BOOT).is_empty(),
        "xdpboot answered a REQUEST on port 67: {replies:#?}"
    );
    let acks = from_server(&replies, SiteLan::SITE);
    assert_eq!(acks.len(), 1, "the site server's ACK: {replies:#?}");
    assert_eq!(acks[0].message_type(), Some(MessageType::Ack));
    assert_eq!(acks[0].message.yiaddr(), site.message.yiaddr());
    Ok(())
}

#[test]
fn port_4011_does_not_answer_requests_that_are_not_boot_requests() -> Result<()> {
    let client = Ipv4Addr::new(198, 18, 0, 51);
    let lan = SiteLan::start_with(DEFAULT_LOADERS, Some(client), DHCP_CLIENT_PORT)?;
    let to = SocketAddrV4::new(SiteLan::BOOT, PXE_SERVER_PORT);
    let plain = BootRequest::plain().request_to(SiteLan::BOOT, client);
    let sentinel = BootRequest::pxe(0).request_to(SiteLan::BOOT, client);
    let replies = replies_once_decided(&lan.probe, to, &plain, &sentinel, SiteLan::BOOT)?;
    assert!(
        replies.is_empty(),
        "xdpboot answered a REQUEST without PXEClient on 4011: {replies:#?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The site's DHCP server on the same host as xdpboot (UDP backend)

#[test]
fn a_site_dhcp_server_bound_to_its_interface_keeps_working_beside_xdpboot() -> Result<()> {
    for dnsmasq_first in [true, false] {
        let files = BootFiles::new(DEFAULT_LOADERS)?;
        let host = NetNs::new("host")?;
        let client = NetNs::new("client")?;
        veth(&host, "eth0", &client, "eth0")?;
        host.add_address("eth0", &format!("{}/24", SiteLan::BOOT))?;
        let start_dnsmasq = || Dnsmasq::start(&host, "eth0", SiteLan::RANGE, files.dir.path());
        let start_daemon = || {
            Daemon::start(
                &host,
                &["eth0"],
                &files.config(),
                files.dir.join("xdpboot.log"),
            )
        };
        // Both orders: each server must leave port 67 shareable for the other.
        let (_dnsmasq, _daemon) = if dnsmasq_first {
            let d = start_dnsmasq()?;
            (d, start_daemon()?)
        } else {
            let x = start_daemon()?;
            (start_dnsmasq()?, x)
        };
        let probe = Probe::client(&client, "eth0")?;

        let request = BootRequest::pxe(7);
        let is_address_offer = |r: &Received| !r.message.yiaddr().is_unspecified();
        let replies = probe.exchange(&request, broadcast_to_servers(), REPLY_TIMEOUT, |r| {
            r.iter().any(is_address_offer) && r.iter().any(|r| !is_address_offer(r))
        })?;
        let (site, ours): (Vec<&Received>, Vec<&Received>) =
            replies.iter().partition(|r| is_address_offer(r));
        assert_eq!(
            (site.len(), ours.len()),
            (1, 1),
            "dnsmasq started {}: one address offer and one proxy offer: {replies:#?}",
            if dnsmasq_first { "first" } else { "second" }
        );
        assert_eq!(site[0].message_type(), Some(MessageType::Offer));
        assert_proxy_offer(ours[0], &request, "PXEClient", "ipxe-amd64.efi");
    }
    Ok(())
}

#[test]
fn a_wildcard_bound_dhcp_server_on_the_same_host_is_reported_not_fought() -> Result<()> {
    let files = BootFiles::new(DEFAULT_LOADERS)?;
    let host = NetNs::new("host")?;
    let client = NetNs::new("client")?;
    veth(&host, "eth0", &client, "eth0")?;
    host.add_address("eth0", &format!("{}/24", SiteLan::BOOT))?;
    let mut dnsmasq = Dnsmasq::start_with(
        &host,
        "eth0",
        SiteLan::RANGE,
        files.dir.path(),
        Binding::Wildcard,
    )?;
    let mut daemon = Daemon::spawn(
        &host,
        &["eth0"],
        &files.config(),
        files.dir.join("xdpboot.log"),
    )?;
    let status = daemon.wait_exit(STARTUP_TIMEOUT)?;
    assert!(
        !status.success(),
        "xdpboot should refuse to start: {status}"
    );
    let log = daemon.log();
    assert!(
        log.contains("UDP port 67") && log.contains("--backend xdp"),
        "the error names the port and the way out:\n{log}"
    );
    dnsmasq.child.check_running()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Topology B: one xdpboot on two subnets

#[test]
fn each_subnet_is_told_the_address_of_the_interface_it_came_in_on() -> Result<()> {
    let lab = TwoSubnets::start()?;
    let subnets = [
        (&lab.probe_a, TwoSubnets::BOOT_A),
        (&lab.probe_b, TwoSubnets::BOOT_B),
    ];
    // A PXE ROM and iPXE on each subnet, all asking at once.
    let sent: Vec<[BootRequest; 2]> = subnets
        .iter()
        .map(|(probe, _)| {
            let requests = [BootRequest::pxe(0), BootRequest::pxe(7).ipxe()];
            for request in &requests {
                probe.broadcast(request)?;
            }
            Ok(requests)
        })
        .collect::<Result<_>>()?;

    for ((probe, server), [bios, ipxe]) in subnets.iter().zip(&sent) {
        let answered = |r: &[Received], xid| r.iter().any(|r| r.message.xid() == xid);
        let mut replies = probe.collect(REPLY_TIMEOUT, |r| {
            answered(r, bios.xid) && answered(r, ipxe.xid)
        })?;
        replies.extend(probe.collect(QUIET, |_| false)?);
        assert_eq!(
            replies.len(),
            2,
            "one offer per request, and only this subnet's: {replies:#?}"
        );
        let reply_to = |request: &BootRequest| {
            replies
                .iter()
                .find(|r| r.message.xid() == request.xid)
                .expect("checked above")
        };
        assert_proxy_reply(
            reply_to(bios),
            bios,
            MessageType::Offer,
            *server,
            "PXEClient",
            "undionly.kpxe",
        );
        let url = format!(
            "http://{server}:8080/boot.ipxe?mac={}&arch=uefi-x64",
            ipxe.mac
        );
        assert_proxy_reply(
            reply_to(ipxe),
            ipxe,
            MessageType::Offer,
            *server,
            "PXEClient",
            &url,
        );
    }
    Ok(())
}

#[test]
fn interfaces_not_named_on_the_command_line_are_not_served() -> Result<()> {
    let lab = TwoSubnets::serving(&["eth1"])?;
    let unserved = BootRequest::pxe(0);
    lab.probe_b.broadcast(&unserved)?;
    // The served subnet's answer proves the unserved request (sent first, to the same port-67
    // socket) has been decided.
    let served = BootRequest::pxe(0);
    let replies = lab
        .probe_a
        .exchange(&served, broadcast_to_servers(), REPLY_TIMEOUT, |r| {
            !r.is_empty()
        })?;
    assert_eq!(
        replies.len(),
        1,
        "the served subnet is answered: {replies:#?}"
    );
    assert_eq!(*replies[0].from.ip(), TwoSubnets::BOOT_A);
    let stray = lab.probe_b.collect(QUIET, |_| false)?;
    assert!(
        stray.is_empty(),
        "xdpboot answered on an interface it was not told to serve: {stray:#?}"
    );
    Ok(())
}

#[test]
fn an_address_added_after_start_is_handed_to_that_interfaces_clients() -> Result<()> {
    let files = BootFiles::new(DEFAULT_LOADERS)?;
    let boot = NetNs::new("boot")?;
    let client = NetNs::new("client")?;
    veth(&boot, "eth1", &client, "eth0")?;
    let daemon = Daemon::start(
        &boot,
        &["eth1"],
        &files.config(),
        files.dir.join("xdpboot.log"),
    )?;
    let probe = Probe::client(&client, "eth0")?;

    // Nothing to hand out yet. Waiting for that also lets the daemon reach its event loop: it
    // subscribes to address events only after its startup read of the interface table
    // (boot-user `Interfaces::watch`), so a change in between would go unnoticed.
    let early = BootRequest::pxe(0);
    let replies = probe.exchange(&early, broadcast_to_servers(), QUIET, |r| !r.is_empty())?;
    assert!(
        replies.is_empty(),
        "answered without an address to give: {replies:#?}"
    );

    let address = Ipv4Addr::new(198, 18, 3, 1);
    boot.add_address("eth1", &format!("{address}/24"))?;
    // The daemon learns of the address from rtnetlink, asynchronously: ask until it answers.
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let (request, replies) = loop {
        let request = BootRequest::pxe(0);
        let replies = probe.exchange(
            &request,
            broadcast_to_servers(),
            Duration::from_millis(200),
            |r| !r.is_empty(),
        )?;
        if !replies.is_empty() || Instant::now() >= deadline {
            break (request, replies);
        }
    };
    assert_eq!(
        replies.len(),
        1,
        "no offer within {REPLY_TIMEOUT:?} of adding {address}; daemon log:\n{}",
        daemon.log()
    );
    assert_proxy_reply(
        &replies[0],
        &request,
        MessageType::Offer,
        address,
        "PXEClient",
        "undionly.kpxe",
    );
    Ok(())
}
