//! End to end over IPv6 with real firmware: OVMF's PXEv6 and HTTPv6 boot reach iPXE from
//! xdpboot beside the site's DHCPv6 server (dnsmasq, addresses only) on the same host and
//! interface, on a link without IPv4, and iPXE then fetches its script, the kernel, the shared
//! initrd and the node's overlay over IPv6 to the marker its /init prints (as in
//! `firmware_boot.rs`). The lab is `boot_tests::rack` with [`RackSetup::ipv6`].
//!
//! Two ways a site advertises its link, and what each proves:
//! - [`Ipv6Lab::Stateless`] (the O flag and an autonomous prefix from the lab's router): every
//!   stage takes its boot information from xdpboot: EDK2's Advertise, its 4011 Reply, and
//!   iPXE's Information-request Reply.
//! - [`Ipv6Lab::Managed`] (dnsmasq's own RAs with the M flag, as issue 16 measured): EDK2 takes
//!   its address from dnsmasq and its loader from xdpboot; iPXE, which takes all its settings
//!   from the server that leased it an address, gets the script URL from the site's server.
//!
//! Every machine runs under TCG (see `vm::accelerator`).

use std::time::{Duration, Instant};

use boot_common::wire::dhcpv6::{self, message_type, option};
use boot_tests::assets::Assets;
use boot_tests::rack::{Backend, Captured6, Ipv6Lab, Node, Rack, RackSetup};
use boot_tests::vm::{Firmware, Marker};

/// Longest a boot to the marker may take under TCG on a shared machine. OVMF tries HTTP boot
/// over IPv4 before IPv6 (a minute and more of DHCPv4 on a link without it: no fw_cfg knob
/// turns it off), and iPXE's DHCPv4 waits out its own timeout (about 20 s) before it moves on.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn assets() -> &'static Assets {
    boot_tests::require_lab();
    Assets::get().expect("the firmware test assets")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn wait_for_marker(rack: &mut Rack, index: usize) -> Marker {
    match rack.vms[index].wait_for_marker(BOOT_TIMEOUT) {
        Ok(marker) => marker,
        Err(e) => panic!(
            "{e:#}\n----- xdpboot -----\n{}",
            tail(&rack.daemon_log(), 80)
        ),
    }
}

/// Boots one node with `firmware` over IPv6 against xdpboot's `backend` and checks its marker,
/// its stages, and that every download went over IPv6.
fn boots_over_ipv6(firmware: Firmware, backend: Backend, lab: Ipv6Lab) -> Rack {
    let started = Instant::now();
    let node = Node::numbered(1, firmware);
    let mut rack = Rack::start(assets(), RackSetup::ipv6(backend, vec![node.clone()], lab))
        .expect("the lab starts");
    rack.boot_all().expect("the VM starts");
    let marker = wait_for_marker(&mut rack, 0);
    assert_eq!(marker.node, node.hostname, "hostname from the overlay");
    assert_eq!(marker.mac, node.mac.to_string(), "MAC from the overlay");
    assert!(!marker.token.is_empty(), "a node token: {marker:?}");
    let vm = &rack.vms[0];
    eprintln!(
        "{} over {} ({lab:?}): stages {:?}; lab and boot {:.1} s",
        firmware.name(),
        backend.name(),
        vm.reached,
        started.elapsed().as_secs_f64()
    );
    for stage in firmware.stages() {
        assert!(
            vm.reached(stage.name).is_some(),
            "stage {:?} seen on the console: {:?}\n{}\n----- xdpboot -----\n{}",
            stage.name,
            vm.reached,
            vm.lines[..vm.lines.len().min(150)].join("\n"),
            tail(&rack.daemon_log(), 80)
        );
    }
    let log = rack.daemon_log();
    let mac = node.mac.to_string();
    // The firmware's own DHCPv6 exchange was answered by xdpboot.
    assert!(
        log.lines().any(|l| l.contains("answered over DHCPv6")
            && l.contains(&mac)
            && l.contains("reply=\"advertise\"")),
        "xdpboot advertised to {mac}:\n{}",
        tail(&log, 60)
    );
    if firmware == Firmware::UefiPxe6 {
        assert!(
            log.lines().any(|l| l.contains("answered over DHCPv6")
                && l.contains(&mac)
                && l.contains("reply=\"pxe_reply\"")),
            "EDK2's Request on 4011 was answered:\n{}",
            tail(&log, 60)
        );
        assert!(
            log.lines().any(|l| l.contains("tftp transfer")
                && l.contains("ipxe-amd64.efi")
                && l.contains("client=[fd00:")
                && l.contains("outcome=\"complete\"")),
            "ipxe-amd64.efi went over TFTP on IPv6:\n{}",
            tail(&log, 60)
        );
    }
    if lab == Ipv6Lab::Stateless {
        assert!(
            log.lines().any(|l| l.contains("answered over DHCPv6")
                && l.contains(&mac)
                && l.contains("request=\"information_request\"")),
            "iPXE's Information-request was answered by xdpboot:\n{}",
            tail(&log, 60)
        );
    }
    save_captures(&rack, firmware, lab);
    let access = rack.access_log();
    for path in ["/boot.ipxe", "/boot/kernel", "/boot/initrd/0"] {
        assert!(
            access.iter().any(|a| a.path.starts_with(path)
                && a.status == 200
                && a.client
                    .as_deref()
                    .is_some_and(|c| c.starts_with("[fd00:18::"))),
            "{path} over IPv6: {access:#?}"
        );
    }
    assert!(
        access.iter().all(|a| a
            .client
            .as_deref()
            .is_some_and(|c| c.starts_with("[fd00:18::"))),
        "nothing over IPv4: {access:#?}"
    );
    rack
}

/// The client's messages of the capture, named as `tests/data/dhcpv6/` keeps them: the firmware's
/// boot Solicit, EDK2's 4011 Request, and iPXE's Solicit or Information-request.
fn golden_requests(captured: &[Captured6], firmware: Firmware) -> Vec<(&'static str, Vec<u8>)> {
    let has = |c: &Captured6, code: u16, needle: &[u8]| {
        dhcpv6::Packet::new_checked(&c.payload[..])
            .ok()
            .and_then(|p| p.find(code).ok().flatten())
            .is_some_and(|data| data.windows(needle.len()).any(|w| w == needle))
    };
    let ipxe = |c: &Captured6| has(c, option::USER_CLASS, b"iPXE");
    let from_client = |c: &&Captured6| {
        c.dst.port() == dhcpv6::SERVER_PORT || c.dst.port() == boot_tests::PXE_SERVER_PORT
    };
    let first = |want: &dyn Fn(&Captured6) -> bool| {
        captured
            .iter()
            .filter(from_client)
            .find(|c| want(c))
            .map(|c| c.payload.clone())
    };
    let class: &[u8] = if firmware == Firmware::UefiHttp6 {
        b"HTTPClient"
    } else {
        b"PXEClient"
    };
    let prefix = if firmware == Firmware::UefiHttp6 {
        "ovmf-httpv6"
    } else {
        "ovmf-pxev6"
    };
    let mut out = Vec::new();
    let solicit = first(&|c: &Captured6| {
        c.payload[0] == message_type::SOLICIT && !ipxe(c) && has(c, option::VENDOR_CLASS, class)
    });
    if let Some(bytes) = solicit {
        out.push((
            if prefix == "ovmf-httpv6" {
                "ovmf-httpv6-solicit.bin"
            } else {
                "ovmf-pxev6-solicit.bin"
            },
            bytes,
        ));
    }
    if let Some(bytes) = first(&|c: &Captured6| c.dst.port() == boot_tests::PXE_SERVER_PORT) {
        out.push(("ovmf-pxev6-request-4011.bin", bytes));
    }
    if let Some(bytes) = first(&|c: &Captured6| {
        c.payload[0] == message_type::REQUEST && c.dst.port() == dhcpv6::SERVER_PORT && !ipxe(c)
    }) {
        out.push((
            if prefix == "ovmf-httpv6" {
                "ovmf-httpv6-request-547.bin"
            } else {
                "ovmf-pxev6-request-547.bin"
            },
            bytes,
        ));
    }
    for (kind, name) in [
        (
            message_type::INFORMATION_REQUEST,
            "ipxe-efi-information-request.bin",
        ),
        (message_type::SOLICIT, "ipxe-efi-solicit.bin"),
    ] {
        if let Some(bytes) = first(&|c: &Captured6| c.payload[0] == kind && ipxe(c)) {
            out.push((name, bytes));
        }
    }
    out
}

/// Lists what the capture holds and, with `XDPBOOT_SAVE_CAPTURES=1`, saves the clients'
/// requests to `tests/data/dhcpv6/` as golden packets (`boot-user/tests/golden6.rs` reads them).
fn save_captures(rack: &Rack, firmware: Firmware, lab: Ipv6Lab) {
    let captured = rack.dhcpv6_captured().expect("the capture");
    for c in &captured {
        eprintln!(
            "  {} -> {} type {} ({} bytes)",
            c.src,
            c.dst,
            c.payload.first().copied().unwrap_or(0),
            c.payload.len()
        );
    }
    if std::env::var_os("XDPBOOT_SAVE_CAPTURES").is_none() {
        return;
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/dhcpv6");
    for (name, bytes) in golden_requests(&captured, firmware) {
        // The M-flag lab's iPXE runs the stateful exchange: its Solicit comes from there.
        if name.starts_with("ipxe-efi-solicit") && lab != Ipv6Lab::Managed {
            continue;
        }
        std::fs::write(format!("{dir}/{name}"), bytes).expect("writing a golden packet");
        eprintln!("saved tests/data/dhcpv6/{name}");
    }
}

#[test]
fn ovmf_pxev6_chains_ipxe_over_tftp6_and_boots_its_overlay_over_ipv6_over_udp() {
    boots_over_ipv6(Firmware::UefiPxe6, Backend::Udp, Ipv6Lab::Stateless);
}

#[test]
fn ovmf_httpv6_boot_fetches_ipxe_and_boots_its_overlay_over_ipv6_over_udp() {
    boots_over_ipv6(Firmware::UefiHttp6, Backend::Udp, Ipv6Lab::Stateless);
}

/// Issue 16's setup: dnsmasq's own router advertisements with the M flag.
#[test]
fn under_the_m_flag_ovmf_pxev6_takes_its_loader_from_xdpboot_and_its_address_from_dnsmasq() {
    boots_over_ipv6(Firmware::UefiPxe6, Backend::Udp, Ipv6Lab::Managed);
}

#[test]
fn under_the_m_flag_ovmf_httpv6_takes_its_loader_from_xdpboot_and_its_address_from_dnsmasq() {
    boots_over_ipv6(Firmware::UefiHttp6, Backend::Udp, Ipv6Lab::Managed);
}

/// The XDP backend: dnsmasq binds `[::]:547` as a site server installed with its defaults does
/// (no `--bind-interfaces`), and xdpboot binds nothing there: its program tees the boot
/// Solicits and Information-requests beside dnsmasq and takes the Request to 4011.
#[test]
fn ovmf_pxev6_chains_ipxe_over_tftp6_and_boots_its_overlay_over_ipv6_over_xdp() {
    boots_over_ipv6(Firmware::UefiPxe6, Backend::Xdp, Ipv6Lab::Stateless);
}

#[test]
fn ovmf_httpv6_boot_fetches_ipxe_and_boots_its_overlay_over_ipv6_over_xdp() {
    boots_over_ipv6(Firmware::UefiHttp6, Backend::Xdp, Ipv6Lab::Stateless);
}

#[test]
fn under_the_m_flag_ovmf_pxev6_boots_beside_a_wildcard_bound_dnsmasq_over_xdp() {
    boots_over_ipv6(Firmware::UefiPxe6, Backend::Xdp, Ipv6Lab::Managed);
}
