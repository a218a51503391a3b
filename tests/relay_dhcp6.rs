//! A relayed DHCPv6 boot: the client is on another segment, behind a relay agent (dnsmasq's
//! `--dhcp-relay`, which adds the client's link-layer address, RFC 6939) that forwards to the
//! boot host's address. On the boot host the site's DHCPv6 server (dnsmasq, bound to `[::]:547`)
//! and xdpboot's XDP backend share the interface: the program tees the Relay-Forward, dnsmasq
//! answers with an address for the client's segment, xdpboot with the boot file, each inside a
//! Relay-Reply, and the relay hands both Advertises to the client.
//!
//! ```text
//!   client (eth0, link-local) ── relay: eth1 fd00:19::1/64 │ eth0 fd00:18::fe/64 ── boot: eth0 fd00:18::1/64
//!                                       dnsmasq --dhcp-relay                          dnsmasq (DHCPv6) + xdpboot (xdp)
//! ```

use std::net::Ipv6Addr;
use std::time::Duration;

use boot_common::wire::dhcpv6::{self, message_type, option};
use boot_tests::ipv6::{
    Dnsmasq6, Probe6, add_address6, edk2_solicit, link_local, mac_of, no_dad, udp6_sockets_on,
    wait_ipv6_ready,
};
use boot_tests::{
    Binding, BootFiles, ChildGuard, DEFAULT_LOADERS, Daemon, NetNs, STARTUP_TIMEOUT,
    unique_ifindex, veth, veth_with_index,
};

const BOOT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1);
const RELAY_UPSTREAM: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0xfe);
const RELAY_DOWNSTREAM: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, 1);
/// The site server's range on the client's segment (it picks it by the relay's link address).
const REMOTE_RANGE: (Ipv6Addr, Ipv6Addr) = (
    Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, 0x100),
    Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, 0x1ff),
);
const WINDOW: Duration = Duration::from_secs(5);

#[test]
fn a_relayed_pxev6_solicit_gets_the_site_servers_address_and_xdpboots_boot_file_over_xdp() {
    let files = BootFiles::new(DEFAULT_LOADERS).expect("the boot files");
    let config = files.config();
    let mut text = std::fs::read_to_string(&config).expect("the config");
    text.push_str("\n[ipv6]\nenabled = true\n");
    std::fs::write(&config, text).expect("writing the config");

    let boot = NetNs::new("boot6").expect("a namespace");
    let relay = NetNs::new("relay6").expect("a namespace");
    let client = NetNs::new("client6").expect("a namespace");
    for ns in [&boot, &relay, &client] {
        no_dad(ns, "all").expect("DAD off");
    }
    veth_with_index(&boot, "eth0", Some(unique_ifindex()), &relay, "eth0").expect("link A");
    veth(&relay, "eth1", &client, "eth0").expect("link B");
    add_address6(&boot, "eth0", &format!("{BOOT}/64")).expect("an address");
    add_address6(&relay, "eth0", &format!("{RELAY_UPSTREAM}/64")).expect("an address");
    add_address6(&relay, "eth1", &format!("{RELAY_DOWNSTREAM}/64")).expect("an address");
    // The site server answers the client's segment through the relay.
    boot.ip(&format!("-6 route add fd00:19::/64 via {RELAY_UPSTREAM}"))
        .expect("a route to the client's segment");
    for (ns, iface) in [
        (&boot, "eth0"),
        (&relay, "eth0"),
        (&relay, "eth1"),
        (&client, "eth0"),
    ] {
        wait_ipv6_ready(ns, iface).expect("link-local addresses");
    }

    // The boot host: the site's DHCPv6 server as installed (wildcard), and xdpboot.
    let _site = Dnsmasq6::start(
        &boot,
        "eth0",
        REMOTE_RANGE,
        files.dir.path(),
        Binding::Wildcard,
        false,
        // Its own link too: dnsmasq serves a relayed segment only beside a local one.
        &["--dhcp-range=fd00:18::100,fd00:18::1ff,64,1h".to_owned()],
    )
    .expect("the site's DHCPv6 server");
    let daemon = Daemon::start_serving(
        &boot,
        &["eth0"],
        &config,
        files.dir.join("xdpboot.log"),
        &["--backend", "xdp"],
    )
    .expect("xdpboot on the xdp backend");

    // The relay agent.
    let relay_dir = files.dir.join("relay");
    std::fs::create_dir_all(&relay_dir).expect("the relay's directory");
    let _relay_agent = start_relay(&relay, &relay_dir).expect("dnsmasq as a DHCPv6 relay");

    let address = link_local(&client, "eth0").expect("the client's link-local address");
    let mac = mac_of(address).expect("an EUI-64 link-local address");
    let probe = Probe6::bind(&client, "eth0", address, dhcpv6::CLIENT_PORT).expect("port 546");
    probe
        .multicast(&edk2_solicit(mac, false, 0x20_0001))
        .expect("sending the Solicit");
    let replies = probe
        .collect(WINDOW, |all| all.len() >= 2)
        .expect("receiving");
    let ours: Vec<_> = replies
        .iter()
        .filter(|r| r.boot_file_url().is_some())
        .collect();
    let site_offer = replies
        .iter()
        .find(|r| r.option(option::IA_NA).is_some())
        .unwrap_or_else(|| {
            panic!(
                "the site server's Advertise through the relay: {replies:#?}\n{}",
                daemon.log()
            )
        });
    assert_eq!(site_offer.msg_type(), message_type::ADVERTISE);
    assert_eq!(
        ours.len(),
        1,
        "xdpboot's Advertise through the relay: {replies:#?}\n{}",
        daemon.log()
    );
    let advertise = ours[0];
    assert_eq!(advertise.msg_type(), message_type::ADVERTISE);
    assert_eq!(advertise.transaction_id(), Some(0x20_0001));
    assert_eq!(
        advertise.option(option::IA_NA),
        None,
        "no address from a proxy"
    );
    assert_eq!(
        advertise.boot_file_url().as_deref(),
        Some("tftp://[fd00:18::1]/ipxe-amd64.efi")
    );
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("answered over DHCPv6"))
        .unwrap_or_else(|| panic!("xdpboot answered:\n{log}"));
    assert!(line.contains("relays=1"), "{line}");
    assert!(
        line.contains(&mac.to_string()),
        "the client's MAC, not the relay's: {line}"
    );
}

/// dnsmasq relaying DHCPv6 from eth1 to xdpboot's host (`--dhcp-relay=LOCAL,SERVER`), nothing
/// else.
fn start_relay(ns: &NetNs, dir: &std::path::Path) -> anyhow::Result<ChildGuard> {
    let args = [
        "--keep-in-foreground".to_owned(),
        "--conf-file=/dev/null".to_owned(),
        "--port=0".to_owned(),
        "--interface=eth1".to_owned(),
        format!("--dhcp-relay={RELAY_DOWNSTREAM},{BOOT}"),
        format!("--pid-file={}", dir.join("relay.pid").display()),
        "--log-dhcp".to_owned(),
        "--log-facility=-".to_owned(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let before = udp6_sockets_on(ns, dhcpv6::SERVER_PORT)?;
    let mut child = ns.spawn(
        "dnsmasq (DHCPv6 relay)",
        std::path::Path::new("dnsmasq"),
        &args,
        &[],
        dir.join("relay.log"),
    )?;
    child.wait_until("listening on port 547", STARTUP_TIMEOUT, || {
        Ok(udp6_sockets_on(ns, dhcpv6::SERVER_PORT)? > before)
    })?;
    Ok(child)
}
