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

use boot_tests::assets::{Arm64Assets, Assets};
use boot_tests::rack::{Backend, CMDLINE_ARM64, Node, Rack, RackSetup, SERVER, Start};
use boot_tests::vm::{Firmware, GRUB_CONFIG_READ, Marker, SCRIPT_GAVE_UP};

/// Longest a boot to the marker may take under TCG, two machines sharing two cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

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

/// Secure Boot on arm64: AAVMF with Microsoft's keys enrolled and Secure Boot on loads Debian's
/// Microsoft-signed shim over PXE, shim the Debian-signed GRUB from the TFTP root, and GRUB
/// (verified through shim) the Debian-signed arm64 kernel with the shared initrd and the node's
/// overlay over HTTP. GRUB's config is written here, with the signed overlay URL of the node's
/// own script (xdpboot renders no GRUB configs yet). A second machine with the same firmware
/// and keys is handed unsigned iPXE and must be refused: the enforcement is real.
#[test]
fn aavmf_with_secure_boot_runs_debians_signed_shim_grub_and_arm64_kernel_and_refuses_ipxe() {
    let started = Instant::now();
    let arm64 = Arm64Assets::get().expect("the arm64 firmware test assets");
    let node = Node::numbered(1, Firmware::Arm64UefiPxeSecureBoot);
    let unsigned = Node::numbered(2, Firmware::Arm64UefiPxeSecureBoot);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node.clone(), unsigned.clone()]);
    // shim asks for GRUB by its default name at the TFTP root, not beside itself (DESIGN.md).
    setup.tftp_files = vec![
        ("shimaa64.efi".to_owned(), arm64.shim.clone()),
        ("grubaa64.efi".to_owned(), arm64.grub.clone()),
    ];
    setup.policy = Some(format!(
        "[[policy]]\nname = \"unsigned\"\nmac = [\"{}\"]\ntftp = \"ipxe-arm64.efi\"\n\n\
         [[policy]]\nname = \"shim\"\narch = [\"uefi-arm64\"]\ntftp = \"shimaa64.efi\"\n",
        unsigned.mac
    ));
    let mut rack = Rack::start(assets(), setup).expect("the lab starts");
    // GRUB's network image has prefix /grub: it reads grub.cfg from there on the TFTP server.
    let grub_dir = rack.tftp_root.join("grub");
    std::fs::create_dir_all(&grub_dir).expect("creating grub/");
    std::fs::write(grub_dir.join("grub.cfg"), grub_config(&rack, &node)).expect("grub.cfg");
    rack.boot_all().expect("the VMs start");

    let marker = wait_for_marker(&mut rack, 0);
    assert_node_marker(&marker, &node, &rack);
    let vm = &rack.vms[0];
    eprintln!("arm64 Secure Boot chain: stages {:?}", vm.reached);
    for stage in Firmware::Arm64UefiPxeSecureBoot.stages() {
        assert!(
            vm.reached(stage.name).is_some(),
            "stage {:?} seen on the console: {:?}",
            stage.name,
            vm.reached
        );
    }
    assert!(
        vm.lines
            .iter()
            .any(|l| l.contains("EFI stub: UEFI Secure Boot is enabled.")),
        "the kernel's EFI stub saw Secure Boot on: {}",
        vm.console_tail(80)
    );
    let log = rack.daemon_log();
    for file in ["shimaa64.efi", "grubaa64.efi"] {
        assert!(
            log.lines().any(|l| l.contains("tftp transfer")
                && l.contains(&format!("file=\"{file}\""))
                && l.contains("outcome=\"complete\"")),
            "{file} went over TFTP:\n{log}"
        );
    }
    let access = access_log(&rack);
    for path in ["/boot/uefi-arm64/kernel", "/boot/uefi-arm64/initrd/0"] {
        assert!(
            access.iter().any(|a| a.path == path && a.status == 200),
            "GRUB fetched {path} over HTTP: {access:#?}"
        );
    }

    // The same firmware and keys refuse Debian's unsigned iPXE.
    let refused = rack.vms[1]
        .wait_for_line("the firmware refusing unsigned iPXE", BOOT_TIMEOUT, |l| {
            l.contains("Access Denied")
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&rack.daemon_log(), 30)));
    eprintln!("AAVMF: {refused}");
    assert!(
        !rack.vms[1].lines.iter().any(|l| l.contains("iPXE")),
        "iPXE never ran on the Secure Boot machine"
    );
    assert!(
        log.lines().any(|l| l.contains("tftp transfer")
            && l.contains("ipxe-arm64.efi")
            && l.contains("outcome=\"complete\"")),
        "the firmware had all of ipxe-arm64.efi before refusing it:\n{log}"
    );
    eprintln!(
        "arm64 Secure Boot lab and boots: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// GRUB's config for `node`: the kernel and shared initrd of `[boot.arch.uefi-arm64]` and the
/// node's overlay, at the URLs xdpboot's script for the node names (fetched on the server, as
/// only the node itself could elsewhere), over GRUB's `http` module.
fn grub_config(rack: &Rack, node: &Node) -> String {
    let url = format!("http://{SERVER}/boot.ipxe?mac={}&arch=uefi-arm64", node.mac);
    // xdpboot says it serves once DHCP is up; its HTTP listener may follow a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, script) = loop {
        match rack.fetch_on_server(&url) {
            Ok(fetched) => break fetched,
            Err(e) if Instant::now() >= deadline => panic!("fetching the node's script: {e:#}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(status, 200);
    let script = String::from_utf8_lossy(&script).into_owned();
    let url = |needle: &str| -> String {
        let url = script
            .split_whitespace()
            .find(|w| w.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} URL in the script:\n{script}"));
        // GRUB names the server as a device: (http,198.18.0.1)/path.
        let path = url
            .strip_prefix(&format!("http://{SERVER}:80"))
            .unwrap_or_else(|| panic!("{url} is not on {SERVER}:80"));
        format!("\"(http,{SERVER}){path}\"")
    };
    format!(
        "echo \"{GRUB_CONFIG_READ} the kernel, the shared initrd and {host}'s overlay over http\"\n\
         linux {kernel} {CMDLINE_ARM64}\n\
         initrd {initrd} {overlay}\n\
         boot\n\
         echo \"{gave_up} GRUB could not boot\"\n",
        host = node.hostname,
        kernel = url("/boot/uefi-arm64/kernel"),
        initrd = url("/boot/uefi-arm64/initrd/0"),
        overlay = url("/overlay.cpio?"),
        gave_up = SCRIPT_GAVE_UP,
    )
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
        l.contains("serving the ipxe package's")
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

fn access_log(rack: &Rack) -> Vec<boot_tests::rack::Access> {
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
