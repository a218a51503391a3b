//! End to end with real firmware: QEMU machines boot from xdpboot beside a site DHCP server
//! (dnsmasq, addresses only) and prove, on their serial console, that they got the shared
//! initrd and their own overlay: the initrd's /init prints `XDPBOOT-MARKER node=… mac=…
//! token=…` from a file that only the node's overlay carries. The lab is `boot_tests::rack`
//! (the same `cargo xtask run` builds); boot files come from `.cache/` (`boot_tests::assets`,
//! fetched by `cargo xtask setup`, or here on first use).
//!
//! Every machine runs under TCG where the host's KVM is unusable (see `vm::accelerator`): a
//! boot takes 10–40 s, so each test bounds its wait by [`BOOT_TIMEOUT`] and the test harness
//! runs them two at a time (one per core).

use std::time::{Duration, Instant};

use boot_tests::assets::Assets;
use boot_tests::rack::{Access, Backend, Node, Rack, RackSetup, SERVER, Start};
use boot_tests::vm::{Chain, Firmware, LOCAL_DISK_MARKER, Marker};

/// Longest a boot to the marker may take under TCG, two machines sharing two cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);
/// Longest from xdpboot's local-boot answer to the disk's boot code under TCG: the firmware
/// goes on to its next boot device, no DHCP timeout.
const LOCAL_BOOT_WITHIN: Duration = Duration::from_secs(15);

fn assets() -> &'static Assets {
    boot_tests::require_lab();
    Assets::get().expect("the firmware test assets")
}

/// Boots one node with `firmware` against xdpboot's `backend` and checks its marker.
fn boots_with_its_overlay(firmware: Firmware, backend: Backend) {
    let node = Node::numbered(1, firmware);
    let mut rack =
        Rack::start(assets(), RackSetup::new(backend, vec![node.clone()])).expect("the lab starts");
    rack.boot_all().expect("the VM starts");
    let marker = wait_for_marker(&mut rack, 0);
    assert_node_marker(&marker, &node, &rack);
    let vm = &rack.vms[0];
    eprintln!(
        "{} over {}: stages {:?}",
        firmware.name(),
        backend.name(),
        vm.reached
    );
    for stage in firmware.stages() {
        assert!(
            vm.reached(stage.name).is_some(),
            "stage {:?} seen on the console: {:?}",
            stage.name,
            vm.reached
        );
    }
    // The first stage took the path this firmware should take: TFTP only for EDK2's PXE.
    let log = rack.daemon_log();
    let tftp_any = log.lines().any(|l| l.contains("tftp transfer"));
    match firmware.tftp_loader() {
        Some(loader) => assert!(
            log.lines().any(|l| l.contains("tftp transfer")
                && l.contains(loader)
                && l.contains("outcome=\"complete\"")),
            "{loader} went over TFTP:\n{log}"
        ),
        None => assert!(!tftp_any, "no TFTP at all for {}:\n{log}", firmware.name()),
    }
    if firmware == Firmware::Arm64UefiPxe {
        let log = access_log(&rack);
        for path in ["/boot/uefi-arm64/kernel", "/boot/uefi-arm64/initrd/0"] {
            assert!(
                log.iter().any(|a| a.path == path && a.status == 200),
                "iPXE fetched {path}, the arm64 section's: {log:#?}"
            );
        }
        assert!(
            !log.iter().any(|a| a.path == "/boot/kernel"),
            "the x86 kernel of [boot] was not fetched: {log:#?}"
        );
        let kernel = vm
            .lines
            .iter()
            .find(|l| l.contains("Linux version"))
            .expect("the kernel stage was seen");
        assert!(kernel.contains("arm64"), "an arm64 kernel: {kernel}");
    }
    if firmware == Firmware::UefiHttp {
        assert!(
            access_log(&rack)
                .iter()
                .any(|a| a.path == "/ipxe-amd64.efi" && a.status == 200),
            "OVMF fetched iPXE over HTTP"
        );
    }
}

fn wait_for_marker(rack: &mut Rack, index: usize) -> Marker {
    match rack.vms[index].wait_for_marker(BOOT_TIMEOUT) {
        Ok(marker) => marker,
        Err(e) => panic!(
            "{e:#}\n----- xdpboot -----\n{}",
            tail(&rack.daemon_log(), 60)
        ),
    }
}

fn assert_node_marker(marker: &Marker, node: &Node, rack: &Rack) {
    assert_eq!(marker.node, node.hostname, "hostname from the overlay");
    assert_eq!(marker.mac, node.mac.to_string(), "MAC from the overlay");
    assert!(
        !marker.token.is_empty(),
        "a node token in the overlay: {marker:?}\n{}",
        tail(&rack.daemon_log(), 30)
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An arm64 machine (AAVMF on QEMU's `virt`, TCG) in a rack whose `[boot]` is the x86-64
/// kernel: AAVMF's PXE (arch 11) gets ipxe-arm64.efi over TFTP, iPXE gets the script, and the
/// script names the kernel and initrd of `[boot.arch.uefi-arm64]` (an x86 kernel could not
/// start), which end at the marker from the node's own overlay.
#[test]
fn aavmf_pxe_chains_ipxe_arm64_and_boots_the_arm64_kernel_of_its_arch_with_its_overlay_over_xdp() {
    let started = Instant::now();
    boots_with_its_overlay(Firmware::Arm64UefiPxe, Backend::Xdp);
    eprintln!(
        "arm64 lab and boot: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn seabios_with_the_nic_ipxe_rom_boots_its_overlay_over_xdp() {
    boots_with_its_overlay(Firmware::Bios, Backend::Xdp);
}

#[test]
fn seabios_with_the_nic_ipxe_rom_boots_its_overlay_over_udp() {
    boots_with_its_overlay(Firmware::Bios, Backend::Udp);
}

#[test]
fn ovmf_pxe_chains_ipxe_over_tftp_and_boots_its_overlay_over_xdp() {
    boots_with_its_overlay(Firmware::UefiPxe, Backend::Xdp);
}

#[test]
fn ovmf_pxe_chains_ipxe_over_tftp_and_boots_its_overlay_over_udp() {
    boots_with_its_overlay(Firmware::UefiPxe, Backend::Udp);
}

#[test]
fn ovmf_http_boot_needs_no_tftp_and_boots_its_overlay_over_xdp() {
    boots_with_its_overlay(Firmware::UefiHttp, Backend::Xdp);
}

#[test]
fn ovmf_http_boot_needs_no_tftp_and_boots_its_overlay_over_udp() {
    boots_with_its_overlay(Firmware::UefiHttp, Backend::Udp);
}

/// Issue 11, out of the box: with Debian's `ipxe` package installed and no config at all
/// (`xdpboot run --interface eth0`, beside a wildcard-bound dnsmasq), the firmware gets iPXE
/// from the package and iPXE gets a script saying there is nothing to boot yet, which exits
/// to the next boot device. Returns the rack for more checks.
fn reaches_ipxe_with_no_config(firmware: Firmware) -> Rack {
    let node = Node::numbered(1, firmware);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node.clone()]);
    setup.start = Start::NoConfig;
    let mut rack = Rack::start(assets(), setup).expect("the lab starts");
    rack.boot_all().expect("the VM starts");
    let line = match rack.vms[0].wait_for_line("nothing-to-boot script", BOOT_TIMEOUT, |l| {
        l.contains("xdpboot: nothing to boot for")
    }) {
        Ok(line) => line,
        Err(e) => panic!(
            "{e:#}\n----- xdpboot -----\n{}",
            tail(&rack.daemon_log(), 60)
        ),
    };
    assert!(
        line.contains(&node.mac.to_string()) && line.contains("no kernel is configured"),
        "{line}"
    );
    rack
}

/// The loader the daemon said it serves from the package, for `file`.
fn served_from_the_package(rack: &Rack, file: &str) -> bool {
    rack.daemon_log().lines().any(|l| {
        l.contains("serving the package's")
            && l.contains(&format!("file=\"{file}\""))
            && l.contains("from=/")
    })
}

#[test]
fn with_no_config_seabios_with_the_nic_ipxe_rom_is_told_there_is_nothing_to_boot() {
    reaches_ipxe_with_no_config(Firmware::Bios);
}

#[test]
fn with_no_config_ovmf_pxe_gets_ipxe_from_the_debian_package_over_tftp() {
    let rack = reaches_ipxe_with_no_config(Firmware::UefiPxe);
    assert!(served_from_the_package(&rack, "ipxe-amd64.efi"));
    let log = rack.daemon_log();
    assert!(
        log.lines().any(|l| l.contains("tftp transfer")
            && l.contains("ipxe-amd64.efi")
            && l.contains("outcome=\"complete\"")),
        "{log}"
    );
}

#[test]
fn with_no_config_ovmf_http_boot_gets_ipxe_from_the_debian_package_over_http() {
    let rack = reaches_ipxe_with_no_config(Firmware::UefiHttp);
    assert!(
        access_log(&rack)
            .iter()
            .any(|a| a.path == "/ipxe-amd64.efi" && a.status == 200),
        "OVMF fetched iPXE over HTTP"
    );
}

/// Quick mode with neither `--root` nor a config: `xdpboot boot -i eth0 KERNEL INITRD` boots
/// the kernel and the initrd (its /init runs; there is no overlay without a config).
fn quick_mode_boots_without_a_root(firmware: Firmware) {
    let node = Node::numbered(1, firmware);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node]);
    setup.start = Start::QuickMode;
    let mut rack = Rack::start(assets(), setup).expect("the lab starts");
    rack.boot_all().expect("the VM starts");
    if let Err(e) = rack.vms[0].wait_for_line("the initrd's /init", BOOT_TIMEOUT, |l| {
        l.contains("xdpboot-initrd: /init running")
    }) {
        panic!(
            "{e:#}\n----- xdpboot -----\n{}",
            tail(&rack.daemon_log(), 60)
        );
    }
}

#[test]
fn quick_mode_without_a_root_boots_seabios_with_the_nic_ipxe_rom() {
    quick_mode_boots_without_a_root(Firmware::Bios);
}

#[test]
fn quick_mode_without_a_root_boots_ovmf_pxe() {
    quick_mode_boots_without_a_root(Firmware::UefiPxe);
}

#[test]
fn quick_mode_without_a_root_boots_ovmf_http_boot() {
    quick_mode_boots_without_a_root(Firmware::UefiHttp);
}

fn access_log(rack: &Rack) -> Vec<Access> {
    rack.access_log()
}

/// Whether a path from the access log is `prefix…`, percent-encoding of `:` aside (iPXE
/// encodes the colons of a MAC in a path).
fn path_is(path: &str, prefix: &str) -> bool {
    path.replace("%3A", ":")
        .replace("%3a", ":")
        .starts_with(prefix)
}

#[test]
fn ipxe_2019_on_efi_finds_the_overlay_behind_the_padded_gzip_initrd() {
    let node = Node::numbered(1, Firmware::UefiPxe);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node.clone()]);
    setup.ipxe_2019_efi = true;
    let mut rack = Rack::start(assets(), setup).expect("the lab starts");
    rack.boot_all().expect("the VM starts");
    let marker = wait_for_marker(&mut rack, 0);
    assert_node_marker(&marker, &node, &rack);
    let vm = &rack.vms[0];
    assert!(
        vm.lines
            .iter()
            .any(|l| l.contains("iPXE 1.0.0+git-20190125")),
        "the 2019 iPXE booted"
    );
    // The kernel's EFI stub loaded both initrds by their initrd= names and joined them.
    assert!(
        vm.lines
            .iter()
            .any(|l| l.contains("EFI stub: Loaded initrd from command line")),
        "the EFI stub joined the initrds: {}",
        vm.console_tail(80)
    );
}

#[test]
fn two_machines_get_their_own_overlays_from_one_shared_initrd_and_not_each_others() {
    let nodes = vec![
        Node::numbered(1, Firmware::Bios),
        Node::numbered(2, Firmware::UefiPxe),
    ];
    let mut rack =
        Rack::start(assets(), RackSetup::new(Backend::Xdp, nodes.clone())).expect("the lab starts");
    rack.boot_all().expect("the VMs start");
    let first = wait_for_marker(&mut rack, 0);
    let second = wait_for_marker(&mut rack, 1);
    assert_node_marker(&first, &nodes[0], &rack);
    assert_node_marker(&second, &nodes[1], &rack);
    assert_ne!(first.token, second.token, "each node has its own token");

    // Both fetched the same shared initrd; each fetched only its own overlay.
    let log = access_log(&rack);
    let initrds = log
        .iter()
        .filter(|a| a.path == "/boot/initrd/0" && a.status == 200)
        .count();
    assert!(
        initrds >= 2,
        "both nodes fetched the shared initrd: {log:#?}"
    );
    for node in &nodes {
        let own = format!("/nodes/{}/overlay.cpio", node.mac);
        assert!(
            log.iter()
                .any(|a| path_is(&a.path, &own) && a.status == 200),
            "{} fetched its overlay: {log:#?}",
            node.hostname
        );
    }

    // The shared initrd is gzip of a length that is not a multiple of 4; it is served padded
    // with zeros to one, so a cpio behind it starts aligned (DESIGN.md, EFI initrds).
    let shared = std::fs::read(assets().http_root.join(boot_tests::assets::SHARED_INITRD))
        .expect("the shared initrd");
    assert_ne!(
        shared.len() % 4,
        0,
        "the lab's initrd exercises the padding"
    );
    let (status, served) = rack
        .fetch(&format!("http://{SERVER}/boot/initrd/0"))
        .expect("fetching the shared initrd");
    assert_eq!(status, 200);
    assert_eq!(served.len() % 4, 0, "served padded to 4 bytes");
    assert_eq!(
        &served[..shared.len()],
        &shared[..],
        "the initrd itself, unchanged"
    );
    assert!(
        served[shared.len()..].iter().all(|&b| b == 0),
        "zero padding"
    );

    // Another host on the rack's link cannot have a node's script (and with it a signed
    // overlay URL): the server checks the requester's MAC.
    let (status, _) = rack
        .fetch(&format!("http://{SERVER}/boot.ipxe?mac={}", nodes[0].mac))
        .expect("fetching a script");
    assert_eq!(status, 403, "a foreign host got n01's script");

    // The overlay URLs in the two scripts (fetched on the server itself) are signed for their
    // own node only.
    let url_of = |node: &Node| -> String {
        let (status, script) = rack
            .fetch_on_server(&format!("http://{SERVER}/boot.ipxe?mac={}", node.mac))
            .expect("fetching a script");
        assert_eq!(status, 200);
        let script = String::from_utf8_lossy(&script).into_owned();
        script
            .split_whitespace()
            .find(|w| w.contains("/overlay.cpio?"))
            .unwrap_or_else(|| panic!("no overlay URL in the script:\n{script}"))
            .to_owned()
    };
    let (url1, url2) = (url_of(&nodes[0]), url_of(&nodes[1]));
    let (status, body) = rack.fetch_on_server(&url1).expect("fetching n01's overlay");
    assert_eq!(status, 200, "n01's own signed URL works");
    let (status, _) = rack.fetch(&url1).expect("fetching n01's overlay");
    assert_eq!(
        status, 403,
        "n01's URL is refused to a host that is not n01"
    );
    assert!(String::from_utf8_lossy(&body).contains("hostname=n01"));
    // n02's signature on n01's path, and n01's path with no signature: refused.
    let query2 = url2.split_once('?').expect("a signed URL has a query").1;
    let path1 = url1.split_once('?').expect("a signed URL has a query").0;
    for (what, url) in [
        ("n02's signature on n01's path", format!("{path1}?{query2}")),
        ("n01's path unsigned", path1.to_owned()),
    ] {
        let (status, _) = rack.fetch_on_server(&url).expect("fetching");
        assert_eq!(status, 403, "{what} must be refused: {url}");
    }
}

#[test]
fn ipxe_efi_fetches_script_kernel_initrd_and_overlay_over_https_trusting_the_ca_from_fw_cfg() {
    let nodes = vec![
        Node::numbered(1, Firmware::UefiHttp),
        Node::numbered(2, Firmware::UefiPxe),
    ];
    let mut setup = RackSetup::new(Backend::Xdp, nodes.clone());
    setup.https = true;
    let mut rack = Rack::start(assets(), setup).expect("the lab starts");
    rack.boot_all().expect("the VMs start");
    for (i, node) in nodes.iter().enumerate() {
        let marker = wait_for_marker(&mut rack, i);
        assert_node_marker(&marker, node, &rack);
    }
    let log = access_log(&rack);
    // Both iPXEs (one from TFTP, one from UEFI HTTP boot over https) fetched script, kernel,
    // initrd and overlay over HTTPS.
    for path in ["/boot.ipxe", "/boot/kernel", "/boot/initrd/0"] {
        assert!(
            log.iter()
                .any(|a| a.path.starts_with(path) && a.scheme == "https" && a.status == 200),
            "{path} over https: {log:#?}"
        );
    }
    for node in &nodes {
        let overlay = format!("/nodes/{}/overlay.cpio", node.mac);
        assert!(
            log.iter()
                .any(|a| path_is(&a.path, &overlay) && a.scheme == "https" && a.status == 200),
            "{} fetched its overlay over https: {log:#?}",
            node.hostname
        );
    }
    assert!(
        log.iter().all(|a| a.scheme == "https"),
        "nothing over plain http: {log:#?}"
    );
}

#[test]
fn ovmf_https_boot_fetches_ipxe_over_tls12_dhe_trusting_the_ca_from_fw_cfg() {
    let node = Node::numbered(1, Firmware::UefiHttp);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node.clone()]);
    setup.https = true;
    let mut rack = Rack::start(assets(), setup).expect("the lab starts");
    rack.boot_all().expect("the VM starts");
    let marker = wait_for_marker(&mut rack, 0);
    assert_node_marker(&marker, &node, &rack);
    // Debian 12's OVMF offers only DHE-RSA and static-RSA suites, and rustls has no static
    // RSA: a loader served over https went through xdpboot's FFDHE key exchange.
    let log = access_log(&rack);
    assert!(
        log.iter()
            .any(|a| a.path == "/ipxe-amd64.efi" && a.scheme == "https" && a.status == 200),
        "OVMF fetched iPXE over https: {log:#?}"
    );
    assert!(
        log.iter().all(|a| a.scheme == "https"),
        "nothing over plain http: {log:#?}"
    );
}

/// Waits for OVMF's HTTP boot to give up and checks that no loader was served.
fn ovmf_gives_up_on_https_boot(rack: &mut Rack) -> String {
    let refused = rack.vms[0].wait_for_line("OVMF giving up on HTTPS boot", BOOT_TIMEOUT, |l| {
        l.contains("Error") || l.contains("failed to load Boot")
    });
    let refused = refused.unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&rack.daemon_log(), 30)));
    eprintln!("OVMF: {refused}");
    assert!(
        !access_log(rack).iter().any(|a| a.path == "/ipxe-amd64.efi"),
        "no loader was served to a firmware that does not trust the server"
    );
    refused
}

#[test]
fn ovmf_https_boot_refuses_the_server_when_the_firmware_was_not_given_the_ca() {
    let node = Node::numbered(1, Firmware::UefiHttp);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node]);
    setup.https = true;
    setup.firmware_trusts_ca = false;
    let mut rack = Rack::start(assets(), setup).expect("the lab starts");
    rack.boot_all().expect("the VM starts");
    // Debian 12's OVMF with no CA does not even connect.
    ovmf_gives_up_on_https_boot(&mut rack);
}

#[test]
fn ovmf_https_boot_refuses_a_server_certificate_from_another_ca() {
    let node = Node::numbered(1, Firmware::UefiHttp);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node]);
    setup.https = true;
    let mut rack = Rack::start(assets(), setup).expect("the lab starts");
    // The firmware gets the first CA; xdpboot, its files removed, makes a second one and
    // presents a certificate from it.
    let first_ca = std::fs::read(rack.ca_esl()).expect("the first CA");
    rack.stop_daemon();
    let tls = rack
        .ca_esl()
        .parent()
        .expect("ca.esl is in tls/")
        .to_owned();
    std::fs::remove_dir_all(&tls).expect("removing the first PKI");
    rack.start_daemon().expect("xdpboot starts again");
    assert_ne!(
        std::fs::read(rack.ca_esl()).expect("the second CA"),
        first_ca
    );
    std::fs::write(rack.ca_esl(), &first_ca).expect("giving the firmware the first CA");
    rack.boot_all().expect("the VM starts");
    ovmf_gives_up_on_https_boot(&mut rack);
    // It got as far as the handshake (so it was the certificate it refused).
    let log = rack.daemon_log();
    let broken_off = log
        .lines()
        .find(|l| l.contains("TLS handshake failed"))
        .unwrap_or_else(|| panic!("OVMF broke off a TLS handshake:\n{}", tail(&log, 30)));
    eprintln!("xdpboot: {broken_off}");
}

#[test]
fn without_a_loader_for_its_arch_uefi_pxe_gives_up_and_xdpboot_says_why() {
    let node = Node::numbered(1, Firmware::UefiPxe);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node.clone()]);
    // No ipxe-amd64.efi: the UEFI x64 rule has nothing to hand out.
    setup.tftp_loaders = vec!["undionly.kpxe"];
    let mut rack = Rack::start(assets(), setup).expect("the lab starts");
    rack.boot_all().expect("the VM starts");
    let gave_up = rack.vms[0].wait_for_line("OVMF giving up on PXE", BOOT_TIMEOUT, |l| {
        l.contains("PXE-E") || l.contains("No bootable") || l.contains("failed to load Boot")
    });
    let log = rack.daemon_log();
    let line = gave_up.unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&log, 30)));
    eprintln!("OVMF: {line}");
    let why = log
        .lines()
        .find(|l| {
            l.contains(&node.mac.to_string()) && l.contains("ipxe-amd64.efi") && l.contains("WARN")
        })
        .unwrap_or_else(|| panic!("xdpboot logs why it did not answer {}:\n{log}", node.mac));
    assert!(why.contains("missing"), "{why}");
    assert!(
        !rack.vms[0].lines.iter().any(|l| l.contains("iPXE")),
        "no iPXE started"
    );
}

#[test]
fn while_the_http_server_is_away_the_ipxe_script_retries_and_the_boot_completes() {
    let node = Node::numbered(1, Firmware::Bios);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node.clone()]);
    setup.retries = 8;
    setup.retry_delay = 2;
    // A kernel download of a few seconds, so stopping the server as soon as the script is out
    // always catches the kernel on the wire.
    setup.http_pacing_mbit = 16;
    let mut rack = Rack::start(assets(), setup).expect("the lab starts");
    rack.boot_all().expect("the VM starts");
    rack.vms[0]
        .wait_for_line("the script", BOOT_TIMEOUT, |l| {
            l.contains("xdpboot: booting")
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&rack.daemon_log(), 30)));
    let away = Instant::now();
    rack.stop_daemon();
    // Two failed attempts: one cut off mid-download, one refused outright.
    rack.vms[0]
        .wait_for_line("a second failed attempt", BOOT_TIMEOUT, |l| {
            l.contains("download failed (attempt 2")
        })
        .expect("the script retries while the server is away");
    rack.start_daemon().expect("xdpboot starts again");
    eprintln!("HTTP server away for {:.1} s", away.elapsed().as_secs_f64());
    let marker = wait_for_marker(&mut rack, 0);
    assert_node_marker(&marker, &node, &rack);
    let failures: Vec<&String> = rack.vms[0]
        .lines
        .iter()
        .filter(|l| l.contains("download failed"))
        .collect();
    eprintln!("the script's retries: {failures:#?}");
}

#[test]
fn ipxe_efi_refuses_the_https_server_when_the_firmware_was_not_given_the_ca() {
    let node = Node::numbered(1, Firmware::UefiPxe);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node]);
    setup.https = true;
    setup.firmware_trusts_ca = false;
    let mut rack = Rack::start(assets(), setup).expect("the lab starts");
    rack.boot_all().expect("the VM starts");
    let refused = rack.vms[0].wait_for_line("iPXE refusing the server", BOOT_TIMEOUT, |l| {
        l.contains("boot.ipxe") && (l.contains("denied") || l.contains("not permitted"))
    });
    let refused = refused.unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&rack.daemon_log(), 30)));
    eprintln!("iPXE: {refused}");
    assert!(
        !access_log(&rack)
            .iter()
            .any(|a| a.path.starts_with("/boot.ipxe")),
        "no script was served to an iPXE that does not trust the server"
    );
}

// ---------------------------------------------------------------------------------------------
// Third-stage chains: shim and GRUB under Secure Boot, PXELINUX, iPXE chaining GRUB, local boot

/// Whether xdpboot's log shows a complete TFTP transfer of `file`.
fn tftp_sent(rack: &Rack, file: &str) -> bool {
    rack.daemon_log().lines().any(|l| {
        l.contains("tftp transfer")
            && l.contains(&format!("file=\"{file}\""))
            && l.contains("outcome=\"complete\"")
    })
}

/// A lab with `nodes` (each through its own chain) set up by `setup`, its VMs started.
fn chain_rack(nodes: Vec<Node>, setup: impl FnOnce(&mut RackSetup)) -> Rack {
    let mut rack_setup = RackSetup::new(Backend::Xdp, nodes);
    setup(&mut rack_setup);
    let mut rack = Rack::start(assets(), rack_setup).expect("the lab starts");
    rack.boot_all().expect("the VMs start");
    rack
}

/// Waits for VM `index`, `node`, to print its marker; checks the marker and every stage of its
/// firmware and chain, and prints the time each took.
fn assert_booted_through_its_chain(rack: &mut Rack, index: usize, node: &Node) {
    let marker = wait_for_marker(rack, index);
    assert_node_marker(&marker, node, rack);
    let vm = &rack.vms[index];
    for stage in node.firmware.stages_through(node.chain) {
        assert!(
            vm.reached(stage.name).is_some(),
            "stage {:?} seen on the console: {:?}\n{}",
            stage.name,
            vm.reached,
            vm.console_tail(60)
        );
    }
    eprintln!(
        "{} through {}: {:?}",
        node.firmware.name(),
        node.chain.name(),
        vm.reached
    );
}

/// Boots `node` through its chain in a rack set up by `setup` ([`chain_rack`],
/// [`assert_booted_through_its_chain`]).
fn boots_through_its_chain(node: Node, setup: impl FnOnce(&mut RackSetup)) -> Rack {
    let mut rack = chain_rack(vec![node.clone()], setup);
    assert_booted_through_its_chain(&mut rack, 0, &node);
    rack
}

/// The console of VM `index` shows the kernel verified and Secure Boot on (the EFI stub and
/// the kernel both say so), and the kernel locked down.
fn assert_secure_boot_on(rack: &Rack, index: usize) {
    let vm = &rack.vms[index];
    for expected in [
        "EFI stub: UEFI Secure Boot is enabled.",
        "secureboot: Secure boot enabled",
    ] {
        assert!(
            vm.lines.iter().any(|l| l.contains(expected)),
            "{expected:?} on the console:\n{}",
            vm.console_tail(80)
        );
    }
}

/// VM `index`, `node`, ran the GRUB config xdpboot made for it (ipxe/grub.cfg names the node
/// it was rendered for), fetched under its per-MAC name.
fn assert_own_grub_config(rack: &Rack, index: usize, node: &Node, platform: &str) {
    let own = format!("xdpboot: GRUB booting {} ({})", node.hostname, node.mac);
    assert!(
        rack.vms[index].lines.iter().any(|l| l.contains(&own)),
        "{own:?} on the console:\n{}",
        rack.vms[index].console_tail(80)
    );
    let name = format!("grub/{platform}/grub.cfg-01-{}", node.mac);
    let daemon = rack.daemon_log();
    assert!(
        daemon
            .lines()
            .any(|l| l.contains(&format!("file=\"{name}\""))
                || l.contains(&format!("path=/{name} "))),
        "{name} fetched:\n{daemon}"
    );
}

/// VM `index`, with Secure Boot on, was handed the unsigned `loader` in full and its firmware
/// refused to run it.
fn assert_firmware_refused(rack: &mut Rack, index: usize, loader: &str) {
    let refused = rack.vms[index].wait_for_line("the firmware refusing iPXE", BOOT_TIMEOUT, |l| {
        l.contains("Access Denied")
    });
    let refused = refused.unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&rack.daemon_log(), 30)));
    eprintln!("{}: {refused}", rack.vms[index].spec.firmware.name());
    assert!(
        tftp_sent(rack, loader),
        "xdpboot handed out all of {loader}:\n{}",
        rack.daemon_log()
    );
    assert!(
        !rack.vms[index].lines.iter().any(|l| l.contains("iPXE")),
        "iPXE never ran"
    );
}

#[test]
fn secure_boot_pxe_chains_the_signed_shim_and_grub_to_the_signed_kernel_and_its_overlay_over_http()
{
    let node = Node::numbered(1, Firmware::UefiPxeSecureBoot);
    let rack = boots_through_its_chain(node.clone(), |_| {});
    assert_secure_boot_on(&rack, 0);
    // shim over TFTP, and the GRUB shim fetched from the TFTP root by its own name.
    for file in ["shimx64.efi", "grubx64.efi"] {
        assert!(
            tftp_sent(&rack, file),
            "{file} over TFTP:\n{}",
            rack.daemon_log()
        );
    }
    // GRUB read its bootstrap and the node's own config over TFTP, and fetched the kernel,
    // the shared initrd and the overlay over HTTP (Debian 13's GRUB has the http module).
    let own = format!("grub/x86_64-efi/grub.cfg-01-{}", node.mac);
    for file in ["grub/grub.cfg", own.as_str()] {
        assert!(
            tftp_sent(&rack, file),
            "{file} over TFTP:\n{}",
            rack.daemon_log()
        );
    }
    assert_own_grub_config(&rack, 0, &node, "x86_64-efi");
    let log = access_log(&rack);
    let overlay = format!("/nodes/{}/overlay.cpio", node.mac);
    for path in ["/boot/kernel", "/boot/initrd/0", overlay.as_str()] {
        assert!(
            log.iter()
                .any(|a| path_is(&a.path, path) && a.status == 200 && a.scheme == "http"),
            "{path} over HTTP: {log:#?}"
        );
    }
}

#[test]
fn secure_boot_http_boot_fetches_shim_grub_and_everything_after_over_http_alone() {
    let node = Node::numbered(1, Firmware::UefiHttpSecureBoot);
    let rack = boots_through_its_chain(node.clone(), |_| {});
    assert_secure_boot_on(&rack, 0);
    let log = access_log(&rack);
    // OVMF fetched shim by the URL xdpboot offered; shim fetched GRUB beside it (shim
    // `httpboot.c` joins the directory and the name with a second slash), GRUB its configs,
    // the kernel, the initrd and the overlay from the same server.
    let own = format!("/grub/x86_64-efi/grub.cfg-01-{}", node.mac);
    let overlay = format!("/nodes/{}/overlay.cpio", node.mac);
    for path in [
        "/shimx64.efi",
        "//grubx64.efi",
        "/grub/grub.cfg",
        own.as_str(),
        "/boot/kernel",
        "/boot/initrd/0",
        overlay.as_str(),
    ] {
        assert!(
            log.iter()
                .any(|a| path_is(&a.path, path) && a.status == 200),
            "{path} over HTTP: {log:#?}"
        );
    }
    assert_own_grub_config(&rack, 0, &node, "x86_64-efi");
    let daemon = rack.daemon_log();
    assert!(
        !daemon.lines().any(|l| l.contains("tftp transfer")),
        "no TFTP at all:\n{daemon}"
    );
}

/// UEFI HTTPS boot under Secure Boot: OVMF (Microsoft's keys, the lab's CA from fw_cfg) is
/// offered shim by an https URL and fetches it over TLS; shim fetches GRUB beside it by the
/// same URL's directory, so over https too (shim `httpboot.c` builds the next URL from the
/// one it was loaded from and fetches it through the firmware's HTTP protocol, which speaks
/// TLS for an https URL). Debian 13's GRUB, loaded from that https URL, reads its bootstrap and
/// its per-node config from its prefix on the same https server (seen here); the kernel, the
/// initrd and the overlay, which xdpboot's config names `(http,<server>)/…`, it fetches over
/// plain HTTP.
#[test]
fn secure_boot_https_boot_fetches_shim_grub_and_grubs_configs_over_tls_and_the_kernel_over_http() {
    let node = Node::numbered(1, Firmware::UefiHttpSecureBoot);
    let rack = boots_through_its_chain(node.clone(), |setup| {
        setup.https = true;
        // Ahead of the node's `loader = "shim"` rule, which offers shim by an http URL.
        setup.policy_first = Some(format!(
            "[[policy]]\nname = \"n01-shim-https\"\nmac = [\"{}\"]\nfirmware = \"http\"\n\
             http = \"https://{{server}}:{{https_port}}/shimx64.efi\"\n\n",
            node.mac
        ));
    });
    assert_secure_boot_on(&rack, 0);
    let log = access_log(&rack);
    let own = format!("/grub/x86_64-efi/grub.cfg-01-{}", node.mac);
    for path in [
        "/shimx64.efi",
        "//grubx64.efi",
        "/grub/grub.cfg",
        own.as_str(),
    ] {
        assert!(
            log.iter()
                .any(|a| a.path == path && a.status == 200 && a.scheme == "https"),
            "{path} over https: {log:#?}"
        );
    }
    let overlay = format!("/nodes/{}/overlay.cpio", node.mac);
    for path in ["/boot/kernel", "/boot/initrd/0", overlay.as_str()] {
        assert!(
            log.iter()
                .any(|a| path_is(&a.path, path) && a.status == 200 && a.scheme == "http"),
            "{path} over plain HTTP: {log:#?}"
        );
    }
    assert_own_grub_config(&rack, 0, &node, "x86_64-efi");
    let daemon = rack.daemon_log();
    assert!(
        !daemon.lines().any(|l| l.contains("tftp transfer")),
        "no TFTP at all:\n{daemon}"
    );
}

#[test]
fn secure_boot_with_debian_12s_grub_fetches_kernel_initrd_and_overlay_over_tftp() {
    let node = Node::numbered(1, Firmware::UefiPxeSecureBoot);
    let rack = boots_through_its_chain(node.clone(), |setup| setup.debian12_chain = true);
    assert_secure_boot_on(&rack, 0);
    // Debian 12's network GRUB (2.06) has no http module: xdpboot read that in the image it
    // serves and named every file by TFTP.
    let overlay = format!("nodes/{}/overlay.cpio?", node.mac);
    let daemon = rack.daemon_log();
    for file in ["boot/kernel", "boot/initrd/0", overlay.as_str()] {
        assert!(
            daemon.lines().any(|l| l.contains("tftp transfer")
                && l.contains(&format!("file=\"{file}"))
                && l.contains("outcome=\"complete\"")),
            "{file} over TFTP:\n{daemon}"
        );
    }
    assert!(
        !access_log(&rack)
            .iter()
            .any(|a| a.path.starts_with("/boot/")),
        "nothing over HTTP"
    );
}

#[test]
fn secure_boot_firmware_refuses_an_unsigned_loader_that_xdpboot_hands_it() {
    // Debian 13's iPXE is not signed: the same machine, the same policy table as the iPXE
    // tests, and the firmware's own check says no.
    let node = Node::numbered(1, Firmware::UefiPxeSecureBoot).through(Chain::Ipxe);
    let mut rack = chain_rack(vec![node], |_| {});
    assert_firmware_refused(&mut rack, 0, "ipxe-amd64.efi");
}

/// Secure Boot on arm64: AAVMF with Microsoft's keys enrolled and Secure Boot on loads Debian's
/// Microsoft-signed shimaa64 over PXE, shim the Debian-signed GRUB from the TFTP root, and GRUB
/// (verified through shim) its per-node config, then the Debian-signed arm64 kernel of
/// `[boot.arch.uefi-arm64]` with the shared initrd and the node's overlay over HTTP. A second
/// machine with the same firmware and keys is handed unsigned iPXE and must be refused: the
/// enforcement is real.
#[test]
fn aavmf_with_secure_boot_runs_debians_signed_shim_grub_and_arm64_kernel_and_refuses_ipxe() {
    let started = Instant::now();
    let node = Node::numbered(1, Firmware::Arm64UefiPxeSecureBoot);
    let unsigned = Node::numbered(2, Firmware::Arm64UefiPxeSecureBoot).through(Chain::Ipxe);
    let mut rack = chain_rack(vec![node.clone(), unsigned], |_| {});
    assert_booted_through_its_chain(&mut rack, 0, &node);
    assert!(
        rack.vms[0]
            .lines
            .iter()
            .any(|l| l.contains("EFI stub: UEFI Secure Boot is enabled.")),
        "the kernel's EFI stub saw Secure Boot on: {}",
        rack.vms[0].console_tail(80)
    );
    for file in ["shimaa64.efi", "grubaa64.efi"] {
        assert!(
            tftp_sent(&rack, file),
            "{file} over TFTP:\n{}",
            rack.daemon_log()
        );
    }
    assert_own_grub_config(&rack, 0, &node, "arm64-efi");
    let access = access_log(&rack);
    for path in ["/boot/uefi-arm64/kernel", "/boot/uefi-arm64/initrd/0"] {
        assert!(
            access.iter().any(|a| a.path == path && a.status == 200),
            "GRUB fetched {path} over HTTP: {access:#?}"
        );
    }
    assert_firmware_refused(&mut rack, 1, "ipxe-arm64.efi");
    eprintln!(
        "arm64 Secure Boot lab and boots: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// BIOS with PXELINUX: SeaBIOS runs the NIC's iPXE ROM, which xdpboot's `loader = "pxelinux"`
/// rule hands lpxelinux.0 over TFTP; lpxelinux loads ldlinux.c32 beside itself, reads the
/// node's own `pxelinux.cfg/01-<mac>`, and fetches the kernel, the shared initrd and the
/// node's signed overlay over HTTP itself.
#[test]
fn seabios_ipxe_rom_chains_lpxelinux_which_boots_its_own_config_with_the_overlay_over_http() {
    let node = Node::numbered(1, Firmware::Bios).through(Chain::Pxelinux);
    let rack = boots_through_its_chain(node.clone(), |_| {});
    let own = format!("pxelinux.cfg/01-{}", node.mac.to_string().replace(':', "-"));
    for file in ["lpxelinux.0", "ldlinux.c32", own.as_str()] {
        assert!(
            tftp_sent(&rack, file),
            "{file} over TFTP:\n{}",
            rack.daemon_log()
        );
    }
    let log = access_log(&rack);
    let overlay = format!("/nodes/{}/overlay.cpio", node.mac);
    for path in ["/boot/kernel", "/boot/initrd/0", overlay.as_str()] {
        assert!(
            log.iter()
                .any(|a| path_is(&a.path, path) && a.status == 200 && a.scheme == "http"),
            "{path} over HTTP: {log:#?}"
        );
    }
    assert!(
        !log.iter().any(|a| a.path.starts_with("/boot.ipxe")),
        "no iPXE script: PXELINUX booted it: {log:#?}"
    );
}

/// iPXE chaining another loader by URL: OVMF (no Secure Boot) PXE-boots iPXE, whose rule for
/// this node is `http = "http://{server}/grubx64.efi"`; iPXE `chain`s Debian's network GRUB,
/// which reads the node's own config from xdpboot and boots the kernel, the shared initrd and
/// the overlay.
#[test]
fn ovmf_ipxe_chains_grub_by_url_and_grub_boots_its_own_config_with_the_overlay() {
    let node = Node::numbered(1, Firmware::UefiPxe).through(Chain::IpxeGrub);
    let rack = boots_through_its_chain(node.clone(), |_| {});
    assert!(
        tftp_sent(&rack, "ipxe-amd64.efi"),
        "the firmware got iPXE over TFTP:\n{}",
        rack.daemon_log()
    );
    let log = access_log(&rack);
    assert!(
        log.iter()
            .any(|a| a.path == "/grubx64.efi" && a.status == 200),
        "iPXE chained GRUB over HTTP: {log:#?}"
    );
    assert_own_grub_config(&rack, 0, &node, "x86_64-efi");
    let overlay = format!("/nodes/{}/overlay.cpio", node.mac);
    for path in ["/boot/kernel", "/boot/initrd/0", overlay.as_str()] {
        assert!(
            log.iter()
                .any(|a| path_is(&a.path, path) && a.status == 200),
            "GRUB fetched {path} over HTTP: {log:#?}"
        );
    }
}

/// Local boot: a machine xdpboot knows to be deployed (`local = true`, as the boot API's
/// `{"local": true}`) keeps network boot first and loses seconds, not a DHCP timeout. SeaBIOS
/// runs the NIC's iPXE ROM, which gets `local.ipxe` (`exit`) instead of a script; iPXE hands
/// back to the BIOS, which boots the disk second in its order: its MBR prints the marker.
#[test]
fn ipxe_told_to_boot_locally_exits_and_the_bios_boots_the_disk_within_seconds() {
    let disk_dir = boot_tests::TempDir::new("disk").expect("a directory for the disk");
    let disk = disk_dir.join("disk.img");
    boot_tests::vm::write_bios_marker_disk(&disk).expect("the disk image");
    let mut node = Node::numbered(1, Firmware::Bios).through(Chain::LocalDisk);
    node.disk = Some(disk);
    let mut rack = chain_rack(vec![node], |_| {});
    let vm = &mut rack.vms[0];
    let told = vm
        .wait_for_line("iPXE told to boot locally", BOOT_TIMEOUT, |l| {
            l.contains("xdpboot: booting from the local disk")
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let answered = vm.started.elapsed();
    let marker = vm
        .wait_for_line("the disk's marker", BOOT_TIMEOUT, |l| {
            l.contains(LOCAL_DISK_MARKER)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let disk_after = vm.started.elapsed() - answered;
    eprintln!(
        "bios local boot: {told:?} at {:.1} s, {marker:?} {:.1} s later",
        answered.as_secs_f64(),
        disk_after.as_secs_f64()
    );
    assert!(
        disk_after < LOCAL_BOOT_WITHIN,
        "the disk booted {disk_after:?} after the answer"
    );
    assert!(
        tftp_sent(&rack, "local.ipxe"),
        "iPXE fetched local.ipxe:\n{}",
        rack.daemon_log()
    );
    let log = access_log(&rack);
    assert!(
        !log.iter().any(|a| a.path.starts_with("/boot")),
        "no script, no kernel: {log:#?}"
    );
}

/// Local boot for a PXE ROM that is not iPXE: OVMF's own PXE gets a boot menu whose only item
/// is local boot (PXE boot server type 0) and cancels its network boot on it ("PXE-E21");
/// OVMF's next boot option, HTTP boot on the same NIC, gets a URL that answers 404 and gives
/// up at once; the disk next in its order runs its removable-media loader, which prints the
/// marker.
#[test]
fn ovmf_pxe_given_the_local_boot_menu_boots_the_disk_within_seconds() {
    let disk_dir = boot_tests::TempDir::new("disk").expect("a directory for the disk");
    let disk = disk_dir.join("disk.img");
    boot_tests::vm::write_efi_marker_disk(&disk).expect("the disk image");
    let mut node = Node::numbered(1, Firmware::UefiPxe).through(Chain::LocalDisk);
    node.disk = Some(disk);
    let mut rack = chain_rack(vec![node.clone()], |_| {});
    let vm = &mut rack.vms[0];
    vm.wait_for_line("the disk's marker", BOOT_TIMEOUT, |l| {
        l.contains(LOCAL_DISK_MARKER)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("ovmf local boot: stages {:?}", vm.reached);
    let left = vm
        .reached("network boot left")
        .expect("PXE-E21 on the console");
    let disk = vm.reached("disk loader").expect("the marker was seen");
    assert!(
        disk - left < LOCAL_BOOT_WITHIN,
        "the disk booted {:?} after PXE gave up:\n{}",
        disk - left,
        vm.console_tail(30)
    );
    let log = rack.daemon_log();
    assert!(
        log.lines()
            .any(|l| l.contains("action=\"local\"") && l.contains("file=\"\"")),
        "PXE got the local-boot menu and no file:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.contains("tftp transfer")),
        "no loader at all:\n{log}"
    );
    let access = access_log(&rack);
    assert!(
        access
            .iter()
            .all(|a| a.path == "/boot/local" && a.status == 404),
        "HTTP boot asked for nothing but the local-boot URL: {access:#?}"
    );
}
