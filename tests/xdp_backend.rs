//! xdpboot's XDP backend on the same host, and the same interface, as the site's DHCP server
//! (dnsmasq), seen from a client in another namespace (GitHub issue 4): boot DISCOVERs on port
//! 67 are teed, so dnsmasq still sees them; port 4011 is taken; every reply leaves through
//! AF_XDP, so no socket on 67 is needed and a wildcard-bound dnsmasq does not get in the way.
//! Also: redirect mode, relayed requests, VLAN sub-interfaces, other XDP programs on the
//! interface, a second xdpboot, `xdpboot stats`, `--backend auto`, and what SIGTERM and
//! kill -9 leave behind.
//!
//! Needs root, dnsmasq, iproute2 and the daemon built with its eBPF object:
//! `cargo build -p boot-user` first. The VLAN sub-interface test is `#[ignore]`d: the lab's
//! kernel has no 802.1Q VLAN devices (no 8021q module). Run it with `--ignored` on a kernel
//! that has them; on one without, it fails saying so.

use std::net::SocketAddrV4;
use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::{Result, bail};
use boot_common::wire::ethernet::{VlanTag, VlanTags, ethertype};
use boot_tests::xdp::{self, ForeignXdp, VlanDevices};
use boot_tests::{
    Binding, BootHost, BootRequest, DHCP_SERVER_PORT, Daemon, HostSetup, PXE_SERVER_PORT, Probe,
    QUIET, REPLY_TIMEOUT, Received, STARTUP_TIMEOUT, TwoSubnets, assert_proxy_offer,
    assert_proxy_reply, broadcast_to_servers, replies_once_decided_by,
};
use dhcproto::v4::MessageType;
use nix::sys::signal::Signal;

/// `xdpboot run` with the XDP backend and everything else as configured (steer `auto`).
const XDP: &[&str] = &["--backend", "xdp"];
/// How long a signalled daemon may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the kernel may take to let go of a dead daemon's program. (Its BPF link closes
/// with the process; here that was immediate.)
const DETACH_TIMEOUT: Duration = Duration::from_secs(2);
/// The client's host number on the served subnet, where a test gives it an address.
const CLIENT: u8 = 50;

/// dnsmasq's offers carry an address; xdpboot's never do. Both come from the host's address.
fn is_address_offer(reply: &Received) -> bool {
    !reply.message.yiaddr().is_unspecified()
}

/// Sends the REQUEST that follows `discover`'s proxy offer to the host's port 4011, from the
/// client's address, and returns the one ACK.
fn ack_from_4011(lab: &BootHost, discover: &BootRequest) -> Result<(BootRequest, Received)> {
    let request = discover.clone().request_to(lab.server, lab.address(CLIENT));
    let replies = lab.probe.exchange(
        &request,
        SocketAddrV4::new(lab.server, PXE_SERVER_PORT),
        REPLY_TIMEOUT,
        |r| !r.is_empty(),
    )?;
    assert_eq!(
        replies.len(),
        1,
        "expected one ACK from port 4011 within {REPLY_TIMEOUT:?}, got {replies:#?}"
    );
    Ok((request, replies[0].clone()))
}

/// Issue 4, on a host where dnsmasq and xdpboot (started with [`XDP`]) serve the same
/// interface, and the client has an address ([`CLIENT`]) for its 4011 requests: PXE ROMs and
/// iPXE get both offers and the 4011 ACK from xdpboot; a plain client gets dnsmasq's offer
/// only.
fn dnsmasq_and_xdpboot_each_answer_their_part(lab: &BootHost, daemon: &Daemon) -> Result<()> {
    let serving = daemon
        .serving(&lab.iface)
        .expect("start_daemon waits for the serving line");
    assert_eq!(serving.backend, "xdp", "{serving:?}");
    assert_eq!(serving.steer.as_deref(), Some("Auto"), "{serving:?}");
    // With dnsmasq on port 67, `--steer auto` tees (tests/steering.rs has the switches).
    let log = daemon.log();
    assert!(
        log.contains("UDP port 67 is held by another program") && log.contains("dnsmasq"),
        "{log}"
    );

    let ipxe = BootRequest::pxe(7).ipxe();
    let script = format!(
        "http://{}:8080/boot.ipxe?mac={}&arch=uefi-x64",
        lab.server, ipxe.mac
    );
    let cases = [
        (BootRequest::pxe(0), "undionly.kpxe".to_owned()),
        (BootRequest::pxe(7), "ipxe-amd64.efi".to_owned()),
        (ipxe, script),
    ];
    for (discover, file) in &cases {
        let (_, ours) = lab.site_and_proxy_offers(discover)?;
        assert_proxy_offer(&ours, discover, lab.server, "PXEClient", file);
        // Then, as iPXE always does (and UEFI, and BIOS when told): the REQUEST to 4011.
        let (request, ack) = ack_from_4011(lab, discover)?;
        assert_proxy_reply(
            &ack,
            &request,
            MessageType::Ack,
            lab.server,
            "PXEClient",
            file,
        );
        assert_eq!(
            ack.to,
            lab.address(CLIENT),
            "the ACK is unicast to the client"
        );
    }

    let plain = BootRequest::plain();
    let mut replies = replies_once_decided_by(
        &lab.probe,
        broadcast_to_servers(),
        &plain,
        &BootRequest::pxe(0),
        |r| !is_address_offer(r),
    )?;
    // xdpboot has decided; dnsmasq answers on its own schedule.
    if !replies.iter().any(is_address_offer) {
        let is_plain = |r: &Received| r.message.xid() == plain.xid;
        let late = lab
            .probe
            .collect(REPLY_TIMEOUT, |r| r.iter().any(is_plain))?;
        replies.extend(late.into_iter().filter(is_plain));
    }
    assert!(
        replies.iter().all(is_address_offer),
        "xdpboot answered a DISCOVER that is not a boot request: {replies:#?}"
    );
    assert_eq!(replies.len(), 1, "dnsmasq's offer: {replies:#?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// dnsmasq and xdpboot on one interface

#[test]
fn dnsmasq_bound_to_the_interface_and_xdpboot_each_answer_their_part() -> Result<()> {
    let lab = BootHost::new(HostSetup {
        site_server: Some(Binding::Interfaces),
        client_host: Some(CLIENT),
        ..HostSetup::default()
    })?;
    let daemon = lab.start_daemon(XDP)?;
    dnsmasq_and_xdpboot_each_answer_their_part(&lab, &daemon)
}

#[test]
fn dnsmasq_bound_to_the_wildcard_address_and_xdpboot_each_answer_their_part() -> Result<()> {
    let lab = BootHost::new(HostSetup {
        site_server: Some(Binding::Wildcard),
        client_host: Some(CLIENT),
        ..HostSetup::default()
    })?;
    let daemon = lab.start_daemon(XDP)?;
    dnsmasq_and_xdpboot_each_answer_their_part(&lab, &daemon)
}

#[test]
fn beside_a_wildcard_bound_dnsmasq_the_udp_backend_refuses_and_the_xdp_backend_serves() -> Result<()>
{
    let lab = BootHost::new(HostSetup {
        site_server: Some(Binding::Wildcard),
        ..HostSetup::default()
    })?;
    let mut udp = lab.spawn_daemon(&["--backend", "udp"])?;
    let status = udp.wait_exit(STARTUP_TIMEOUT)?;
    assert!(!status.success(), "the UDP backend should refuse: {status}");
    let log = udp.log();
    assert!(
        log.contains("UDP port 67") && log.contains("--backend xdp"),
        "the error names the port and the way out:\n{log}"
    );

    let _daemon = lab.start_daemon(XDP)?;
    let request = BootRequest::pxe(7);
    let (_, ours) = lab.site_and_proxy_offers(&request)?;
    assert_proxy_offer(&ours, &request, lab.server, "PXEClient", "ipxe-amd64.efi");
    Ok(())
}

#[test]
#[ignore = "needs 802.1Q VLAN devices: the lab's kernel has no 8021q module"]
fn a_vlan_tagged_client_is_served_by_dnsmasq_and_xdpboot_on_the_vlan_sub_interface() -> Result<()> {
    // Ignored rather than skipped, so it never counts as passed without running.
    if let VlanDevices::Missing(why) = xdp::vlan_devices()? {
        bail!("this test needs 802.1Q VLAN devices, which this kernel does not make: {why}");
    }
    let lab = BootHost::new(HostSetup {
        site_server: Some(Binding::Interfaces),
        vlan: Some(100),
        client_host: Some(CLIENT),
        ..HostSetup::default()
    })?;
    let daemon = lab.start_daemon(XDP)?;
    let serving = daemon.serving(&lab.iface).expect("serving");
    assert_eq!(
        serving.device.as_deref(),
        Some(lab.device),
        "the program goes on the VLAN's parent device"
    );
    // The probe is bound to the client's eth0.100: what it receives came in tagged. The
    // replies must carry eth0.100's address (lab.server, 198.18.100.1), not eth0's.
    //
    // Not yet run on a kernel with VLAN devices. Should the proxy offers be missing here: a
    // VLAN device on veth hands its tag to the driver out of band (tx-vlan offload), so the
    // frame the host's XDP program sees carries no tag (veth offers it through the
    // bpf_xdp_metadata_rx_vlan_tag kfunc instead), as with NICs that strip tags on receive.
    dnsmasq_and_xdpboot_each_answer_their_part(&lab, &daemon)?;

    // The untagged LAN below the VLAN (eth0, 198.18.0.1) is not served. A tagged request
    // sent after the untagged one comes through the same program and queue, so once it is
    // answered the untagged one has been decided.
    let untagged = Probe::client(&lab.client, "eth0")?;
    untagged.broadcast(&BootRequest::pxe(0))?;
    lab.site_and_proxy_offers(&BootRequest::pxe(0))?;
    let stray = untagged.collect(QUIET, |_| false)?;
    assert!(
        stray.is_empty(),
        "xdpboot answered on the untagged LAN it was not told to serve: {stray:#?}"
    );
    Ok(())
}

#[test]
fn a_tagged_discover_for_a_vlan_without_a_sub_interface_is_not_answered() -> Result<()> {
    // Raw frames: this kernel may make no VLAN devices, and none is wanted here.
    let lab = BootHost::new(HostSetup::default())?;
    let daemon = lab.start_daemon(XDP)?;
    let tagged = BootRequest::pxe(0);
    let vlan_100 = VlanTag {
        tpid: ethertype::VLAN_8021Q,
        tci: 100,
    };
    let frame = tagged.broadcast_frame(VlanTags::new(&[vlan_100])?);
    xdp::send_frame(&lab.client, "eth0", &frame)?;
    // Sent after it on the same queue, so decided after it.
    let sentinel = BootRequest::pxe(0);
    lab.proxy_offer(&sentinel)?;
    std::thread::sleep(QUIET);
    let mac = format!("mac=\"{}\"", tagged.mac);
    let log = daemon.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("answered") && l.contains(&mac)),
        "xdpboot answered a request from VLAN 100, which this host has no interface on:\n{log}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Steering

#[test]
fn redirect_mode_takes_boot_discovers_from_the_kernel_and_tee_mode_leaves_them_a_copy() -> Result<()>
{
    for (steer, logged) in [("redirect", "Redirect"), ("tee", "Tee")] {
        let lab = BootHost::new(HostSetup::default())?;
        let daemon = lab.start_daemon(&["--backend", "xdp", "--steer", steer])?;
        let serving = daemon.serving(&lab.iface).expect("serving");
        assert_eq!(serving.steer.as_deref(), Some(logged), "{serving:?}");
        // A plain socket on port 67, as a DHCP server has, started after xdpboot.
        let listener = Probe::bind(&lab.host, &lab.iface, DHCP_SERVER_PORT)?;
        let before = lab.counters()?;

        let plain = BootRequest::plain();
        lab.probe.broadcast(&plain)?;
        let boot = BootRequest::pxe(7);
        let offer = lab.proxy_offer(&boot)?;
        assert_proxy_offer(&offer, &boot, lab.server, "PXEClient", "ipxe-amd64.efi");

        let heard_of = |r: &[Received], xid: u32| r.iter().any(|r| r.message.xid() == xid);
        let teeing = steer == "tee";
        let mut heard = listener.collect_requests(REPLY_TIMEOUT, |r| {
            heard_of(r, plain.xid) && (!teeing || heard_of(r, boot.xid))
        })?;
        heard.extend(listener.collect_requests(QUIET, |_| false)?);
        assert!(
            heard_of(&heard, plain.xid),
            "--steer {steer}: the kernel's socket on 67 gets a plain DISCOVER: {heard:#?}"
        );
        assert_eq!(
            heard_of(&heard, boot.xid),
            teeing,
            "--steer {steer}: the kernel's socket on 67 {} the boot DISCOVER: {heard:#?}",
            if teeing { "also gets" } else { "never sees" }
        );

        let grown = lab.counters()?.since(&before);
        let (taken, left) = if teeing {
            ("teed", "redirected")
        } else {
            ("redirected", "teed")
        };
        assert_eq!(grown.get(taken), 1, "--steer {steer}: {grown:?}");
        assert_eq!(grown.get(left), 0, "--steer {steer}: {grown:?}");
        assert_eq!(grown.get("dhcp_passed"), 1, "--steer {steer}: {grown:?}");
    }
    Ok(())
}

#[test]
fn a_relayed_discover_is_answered_to_the_relay_agent_on_port_67_through_af_xdp() -> Result<()> {
    // The client namespace plays the relay agent: it holds giaddr and listens on port 67.
    let lab = BootHost::new(HostSetup {
        client_host: Some(CLIENT),
        probe_port: DHCP_SERVER_PORT,
        ..HostSetup::default()
    })?;
    let daemon = lab.start_daemon(XDP)?;
    // Nothing else on 67: `--steer auto` takes boot DISCOVERs, and no socket in the host's
    // namespace could have sent the reply.
    let serving = daemon.serving(&lab.iface).expect("serving");
    assert_eq!(serving.steer.as_deref(), Some("Auto"), "{serving:?}");
    assert_eq!(lab.host.udp_sockets_on(DHCP_SERVER_PORT)?, 0);
    let before = lab.counters()?;

    let relay = lab.address(CLIENT);
    let request = BootRequest::pxe(7).relayed_by(relay);
    let replies = lab.probe.exchange(
        &request,
        SocketAddrV4::new(lab.server, DHCP_SERVER_PORT),
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
        lab.server,
        "PXEClient",
        "ipxe-amd64.efi",
    );
    let grown = lab.counters()?.since(&before);
    assert_eq!(grown.get("redirected"), 1, "{grown:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Counters and backends

#[test]
fn xdpboot_stats_counts_teed_discovers_passed_dhcp_and_taken_4011_requests() -> Result<()> {
    let lab = BootHost::new(HostSetup {
        site_server: Some(Binding::Interfaces),
        client_host: Some(CLIENT),
        ..HostSetup::default()
    })?;
    let _daemon = lab.start_daemon(XDP)?;
    let before = lab.counters()?;

    let discover = BootRequest::pxe(7);
    lab.site_and_proxy_offers(&discover)?;
    ack_from_4011(&lab, &discover)?;
    let plain = BootRequest::plain();
    let replies = lab
        .probe
        .exchange(&plain, broadcast_to_servers(), REPLY_TIMEOUT, |r| {
            !r.is_empty()
        })?;
    assert_eq!(replies.len(), 1, "dnsmasq's offer: {replies:#?}");

    let grown = lab.counters()?.since(&before);
    assert_eq!(grown.get("teed"), 1, "the boot DISCOVER: {grown:?}");
    assert_eq!(grown.get("taken"), 1, "the REQUEST to 4011: {grown:?}");
    assert_eq!(grown.get("dhcp_passed"), 1, "the plain DISCOVER: {grown:?}");
    assert_eq!(grown.get("redirected"), 0, "dnsmasq is on 67: {grown:?}");

    // And again: the counters keep counting.
    let before = lab.counters()?;
    let discover = BootRequest::pxe(0).ipxe();
    lab.site_and_proxy_offers(&discover)?;
    ack_from_4011(&lab, &discover)?;
    let grown = lab.counters()?.since(&before);
    assert_eq!((grown.get("teed"), grown.get("taken")), (1, 1), "{grown:?}");
    Ok(())
}

#[test]
fn the_auto_backend_says_which_backend_serves_each_interface() -> Result<()> {
    // eth1 is free; eth2 has another tool's XDP program, which `auto` does not replace.
    let lab = TwoSubnets::serving_with(&["eth1", "eth2"], &["--backend", "auto"], |boot| {
        ForeignXdp::load()?.attach_through_netlink(boot, "eth2")
    })?;
    let eth1 = lab.daemon.serving("eth1").expect("serving");
    let eth2 = lab.daemon.serving("eth2").expect("serving");
    assert_eq!(eth1.backend, "xdp", "{eth1:?}");
    assert_eq!(eth2.backend, "udp", "{eth2:?}");
    let log = lab.daemon.log();
    assert!(
        log.contains("XDP unavailable here: using the UDP backend") && log.contains("--force"),
        "the fallback is explained:\n{log}"
    );

    for (probe, server) in [
        (&lab.probe_a, TwoSubnets::BOOT_A),
        (&lab.probe_b, TwoSubnets::BOOT_B),
    ] {
        let request = BootRequest::pxe(0);
        let replies = probe.exchange(&request, broadcast_to_servers(), REPLY_TIMEOUT, |r| {
            !r.is_empty()
        })?;
        assert_eq!(
            replies.len(),
            1,
            "one offer on {server}'s subnet: {replies:#?}"
        );
        assert_proxy_offer(&replies[0], &request, server, "PXEClient", "undionly.kpxe");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Other programs on the interface

#[derive(Debug, Clone, Copy)]
enum Holder {
    /// Attached through netlink, as `ip link set dev IF xdp obj …` does: it outlives its loader.
    Netlink,
    /// Held by a BPF link, as libxdp and aya attach.
    BpfLink,
}

fn program_names(lab: &BootHost) -> Result<Vec<String>> {
    Ok(lab.xdp_programs()?.into_iter().map(|p| p.name).collect())
}

/// Attaches a [`ForeignXdp`] to the host's device as `holder` does; the descriptor keeps a
/// BPF link alive.
fn attach_foreign(lab: &BootHost, holder: Holder) -> Result<Option<OwnedFd>> {
    let foreign = ForeignXdp::load()?;
    let link = match holder {
        Holder::Netlink => {
            foreign.attach_through_netlink(&lab.host, lab.device)?;
            None
        }
        Holder::BpfLink => Some(foreign.attach_through_link(&lab.host, lab.device)?),
    };
    assert_eq!(program_names(lab)?, [ForeignXdp::NAME], "{holder:?}");
    Ok(link)
}

#[test]
fn a_foreign_xdp_program_makes_xdpboot_refuse_and_point_at_force() -> Result<()> {
    for holder in [Holder::Netlink, Holder::BpfLink] {
        let lab = BootHost::new(HostSetup::default())?;
        let _link = attach_foreign(&lab, holder)?;

        let mut refused = lab.spawn_daemon(XDP)?;
        let status = refused.wait_exit(STARTUP_TIMEOUT)?;
        assert!(
            !status.success(),
            "{holder:?}: xdpboot should refuse: {status}"
        );
        let log = refused.log();
        assert!(
            log.contains("already has an XDP program attached")
                && log.contains(ForeignXdp::NAME)
                && log.contains("--force"),
            "{holder:?}: the error names the program and the way out:\n{log}"
        );
        assert_eq!(
            program_names(&lab)?,
            [ForeignXdp::NAME],
            "{holder:?}: refusing leaves the other program where it was"
        );
    }
    Ok(())
}

#[test]
fn force_replaces_a_foreign_xdp_program_and_sigterm_removes_xdpboots() -> Result<()> {
    for holder in [Holder::Netlink, Holder::BpfLink] {
        let lab = BootHost::new(HostSetup::default())?;
        let _link = attach_foreign(&lab, holder)?;

        let mut daemon = lab.start_daemon(&["--backend", "xdp", "--force"])?;
        assert_eq!(program_names(&lab)?, ["xdpboot"], "{holder:?}");
        let request = BootRequest::pxe(7);
        let offer = lab.proxy_offer(&request)?;
        assert_proxy_offer(&offer, &request, lab.server, "PXEClient", "ipxe-amd64.efi");

        daemon.child.signal(Signal::SIGTERM)?;
        let status = daemon.child.wait_exit(EXIT_TIMEOUT)?;
        assert!(status.success(), "{holder:?}: exit after SIGTERM: {status}");
        xdp::wait_for_no_xdp(&lab.host, lab.device, DETACH_TIMEOUT)?;
    }
    Ok(())
}

#[test]
fn force_leaves_the_xdp_programs_of_other_namespaces_alone() -> Result<()> {
    // Two hosts whose devices share an interface index, as devices in different namespaces
    // (containers) often do; the index is ours alone, so nobody else's link is at risk.
    let index = boot_tests::unique_ifindex();
    let same_index = HostSetup {
        ifindex: Some(index),
        ..HostSetup::default()
    };
    let other = BootHost::new(same_index)?;
    let _other_daemon = other.start_daemon(XDP)?;
    let others_programs = other.xdp_programs()?;

    for holder in [Holder::Netlink, Holder::BpfLink] {
        let lab = BootHost::new(same_index)?;
        let _link = attach_foreign(&lab, holder)?;
        let daemon = lab.start_daemon(&["--backend", "xdp", "--force"]);
        let said = match &daemon {
            Ok(daemon) => daemon.log(),
            Err(e) => format!("{e:#}"),
        };
        assert_eq!(
            other.xdp_programs()?,
            others_programs,
            "{holder:?}: --force in one namespace took another namespace's program; the forcing \
             xdpboot said:\n{said}"
        );
        let request = BootRequest::pxe(0);
        let offer = other.proxy_offer(&request)?;
        assert_proxy_offer(&offer, &request, other.server, "PXEClient", "undionly.kpxe");
        let _daemon = daemon?;
        assert_eq!(program_names(&lab)?, ["xdpboot"], "{holder:?}");
    }
    Ok(())
}

#[test]
fn a_second_xdpboot_on_the_same_interface_refuses_and_the_first_keeps_serving() -> Result<()> {
    let lab = BootHost::new(HostSetup::default())?;
    let mut first = lab.start_daemon(XDP)?;
    let programs = lab.xdp_programs()?;

    let mut second = lab.spawn_daemon(XDP)?;
    let status = second.wait_exit(STARTUP_TIMEOUT)?;
    assert!(
        !status.success(),
        "the second xdpboot should refuse: {status}"
    );
    let log = second.log();
    assert!(
        log.contains(&format!("XDP backend on {}", lab.device)),
        "the error names the interface:\n{log}"
    );

    assert_eq!(
        lab.xdp_programs()?,
        programs,
        "the first one's program stays"
    );
    first.child.check_running()?;
    let request = BootRequest::pxe(0);
    let offer = lab.proxy_offer(&request)?;
    assert_proxy_offer(&offer, &request, lab.server, "PXEClient", "undionly.kpxe");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Stopping

#[test]
fn no_xdp_program_is_left_on_the_interface_after_sigterm_or_kill_9() -> Result<()> {
    let lab = BootHost::new(HostSetup {
        site_server: Some(Binding::Interfaces),
        ..HostSetup::default()
    })?;
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let mut daemon = lab.start_daemon(XDP)?;
        assert_eq!(program_names(&lab)?, ["xdpboot"]);
        lab.site_and_proxy_offers(&BootRequest::pxe(0))?;

        daemon.child.signal(signal)?;
        let status = daemon.child.wait_exit(EXIT_TIMEOUT)?;
        if signal == Signal::SIGTERM {
            assert!(status.success(), "exit after SIGTERM: {status}");
        }
        xdp::wait_for_no_xdp(&lab.host, lab.device, DETACH_TIMEOUT)?;

        // dnsmasq goes on alone.
        let request = BootRequest::pxe(0);
        let mut replies =
            lab.probe
                .exchange(&request, broadcast_to_servers(), REPLY_TIMEOUT, |r| {
                    !r.is_empty()
                })?;
        replies.extend(
            lab.probe
                .collect(QUIET, |_| false)?
                .into_iter()
                .filter(|r| r.message.xid() == request.xid),
        );
        assert!(
            replies.len() == 1 && is_address_offer(&replies[0]),
            "after {signal}: dnsmasq's offer only: {replies:#?}"
        );
    }
    Ok(())
}

#[test]
fn a_new_xdpboot_attaches_cleanly_right_after_the_last_one_was_killed() -> Result<()> {
    let lab = BootHost::new(HostSetup::default())?;
    // Several rounds, each starting at once: a queue or hook the kernel released late would
    // show as a failed start.
    for round in 0..3 {
        let mut daemon = lab.start_daemon(XDP)?;
        let request = BootRequest::pxe(7);
        let offer = lab.proxy_offer(&request)?;
        assert_proxy_offer(&offer, &request, lab.server, "PXEClient", "ipxe-amd64.efi");
        daemon.child.signal(Signal::SIGKILL)?;
        let status = daemon.child.wait_exit(EXIT_TIMEOUT)?;
        assert!(!status.success(), "round {round}: killed: {status}");
    }
    Ok(())
}
