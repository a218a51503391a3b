//! `--steer auto` beside a DHCP server that starts after xdpboot or restarts under it: the
//! server must see every PXE DISCOVER whatever the order (issue 11). xdpboot and dnsmasq
//! (bound to the wildcard address, its default) serve the same interface of one host; a client
//! across a veth broadcasts as PXE firmware does.
//!
//! ```text
//!   host: xdpboot --backend xdp (steer auto), later dnsmasq, on eth0 198.18.0.1/24 ─── client
//! ```

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use boot_tests::{
    Binding, BootHost, BootRequest, DHCP_SERVER_PORT, Daemon, HostSetup, assert_proxy_offer,
};

/// The XDP backend with the default steering (`auto`).
const XDP: &[&str] = &["--backend", "xdp"];
/// How long the watcher may take to log a switch: its poll interval is 250 ms.
const SWITCH_LOGGED: Duration = Duration::from_secs(2);

/// The boot clients of the issue: a UEFI PXE ROM, a BIOS PXE ROM and iPXE, each with the file
/// xdpboot's default policy gives it.
fn boot_clients(lab: &BootHost) -> Vec<(BootRequest, String)> {
    let ipxe = BootRequest::pxe(7).ipxe();
    let script = format!(
        "http://{}:8080/boot.ipxe?mac={}&arch=uefi-x64",
        lab.server, ipxe.mac
    );
    vec![
        (BootRequest::pxe(7), "ipxe-amd64.efi".to_owned()),
        (BootRequest::pxe(0), "undionly.kpxe".to_owned()),
        (ipxe, script),
    ]
}

/// Every boot client gets dnsmasq's address offer and xdpboot's proxy offer.
fn every_client_gets_both_offers(lab: &BootHost) -> Result<()> {
    for (discover, file) in boot_clients(lab) {
        let (_, ours) = lab.site_and_proxy_offers(&discover)?;
        assert_proxy_offer(&ours, &discover, lab.server, "PXEClient", &file);
    }
    Ok(())
}

/// The one proxy offer of a DISCOVER that only xdpboot hears.
fn only_xdpboot_answers(lab: &BootHost) -> Result<()> {
    let discover = BootRequest::pxe(7);
    let offer = lab.proxy_offer(&discover)?;
    assert_proxy_offer(&offer, &discover, lab.server, "PXEClient", "ipxe-amd64.efi");
    Ok(())
}

/// Waits until the daemon has logged `times` lines containing `text`; returns its log.
fn wait_for_log(daemon: &mut Daemon, text: &str, times: usize) -> Result<String> {
    let deadline = Instant::now() + SWITCH_LOGGED;
    loop {
        daemon.child.check_running()?;
        let log = daemon.log();
        if log.lines().filter(|line| line.contains(text)).count() >= times {
            return Ok(log);
        }
        ensure!(
            Instant::now() < deadline,
            "xdpboot did not log {text:?} {times}× within {SWITCH_LOGGED:?}:\n{log}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

const HELD: &str = "UDP port 67 is held by another program";
const FREE: &str = "no other program holds UDP port 67";

#[test]
fn a_dhcp_server_started_two_seconds_after_xdpboot_sees_every_pxe_discover() -> Result<()> {
    let mut lab = BootHost::new(HostSetup::default())?;
    let mut daemon = lab.start_daemon(XDP)?;
    let serving = daemon.serving(&lab.iface).expect("serving");
    assert_eq!(serving.steer.as_deref(), Some("Auto"), "{serving:?}");
    wait_for_log(&mut daemon, FREE, 1)?;

    // Nobody else on 67 yet: xdpboot takes the DISCOVER (nothing would have seen it).
    let before = lab.counters()?;
    only_xdpboot_answers(&lab)?;
    let grown = lab.counters()?.since(&before);
    assert_eq!(
        (grown.get("redirected"), grown.get("teed")),
        (1, 0),
        "{grown:?}"
    );

    thread::sleep(Duration::from_secs(2));
    lab.start_site_server(Binding::Wildcard)?;
    let before = lab.counters()?;
    every_client_gets_both_offers(&lab)?;
    let grown = lab.counters()?.since(&before);
    assert_eq!(grown.get("redirected"), 0, "{grown:?}");
    assert!(grown.get("teed") >= 3, "{grown:?}");

    let log = wait_for_log(&mut daemon, HELD, 1)?;
    let switch = log
        .lines()
        .find(|line| line.contains(HELD))
        .expect("waited for it");
    assert!(
        switch.contains("dnsmasq") && switch.contains(&format!("0.0.0.0:{DHCP_SERVER_PORT}")),
        "the switch names the process and its socket: {switch}"
    );
    Ok(())
}

#[test]
fn a_dhcp_server_restarted_under_a_running_xdpboot_sees_every_pxe_discover() -> Result<()> {
    let mut lab = BootHost::new(HostSetup {
        site_server: Some(Binding::Wildcard),
        ..HostSetup::default()
    })?;
    let mut daemon = lab.start_daemon(XDP)?;
    wait_for_log(&mut daemon, HELD, 1)?;
    every_client_gets_both_offers(&lab)?;

    // dnsmasq stops (a restart's first half): the watcher lets xdpboot take DISCOVERs again.
    lab.dnsmasq = None;
    assert_eq!(lab.host.udp_sockets_on(DHCP_SERVER_PORT)?, 0);
    wait_for_log(&mut daemon, FREE, 1)?;
    let before = lab.counters()?;
    only_xdpboot_answers(&lab)?;
    assert_eq!(lab.counters()?.since(&before).get("redirected"), 1);

    // It comes back: the first DISCOVERs after it binds reach it, whatever the watcher has
    // seen so far (the program asks the kernel per frame).
    lab.start_site_server(Binding::Wildcard)?;
    let before = lab.counters()?;
    every_client_gets_both_offers(&lab)?;
    let grown = lab.counters()?.since(&before);
    assert_eq!(grown.get("redirected"), 0, "{grown:?}");
    wait_for_log(&mut daemon, HELD, 2)?;

    // And once more, bound to the interface only (`--bind-interfaces`): the same.
    lab.start_site_server(Binding::Interfaces)?;
    every_client_gets_both_offers(&lab)?;
    Ok(())
}
