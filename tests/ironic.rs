//! xdpboot as the boot front end of an OpenStack Ironic deployment, proven with Ironic's own
//! files (Ironic 39.0.0 from PyPI, see `boot_tests::ironic_files`): Ironic decides what each
//! machine boots and writes the files; the site's DHCP server (dnsmasq, addresses only) hands
//! out addresses; xdpboot only steers the boot (`[dhcp] dhcp_provider = none` in Ironic).
//!
//! The lab's HTTP root holds Ironic's `[deploy] http_root` at `/ironic/` (`http_url =
//! http://198.18.0.1/ironic`); xdpboot's policy sends iPXE to `/ironic/boot.ipxe` and UEFI PXE
//! ROMs to `snponly.efi`, as the README's "Ironic, Metal3, Bifrost" section says. The deploy
//! ramdisk prints a marker and its /proc/cmdline, so each test sees Ironic's parameters arrive.
//!
//! Ironic's GRUB layout (its `pxe` interface, the Secure Boot path) boots under Secure Boot:
//! OVMF's PXE gets Debian's shim over TFTP, shim the Debian-signed GRUB, and GRUB reads
//! Ironic's own `grub/grub.cfg` from xdpboot's TFTP root, which is Ironic's `[pxe] tftp_root`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boot_common::wire::MacAddr;
use boot_tests::TempDir;
use boot_tests::assets::{Assets, KERNEL};
use boot_tests::ironic_files::{
    DEPLOY_MARKER, INSTANCE_MARKER, IRONIC_VERSION, Interface, Ironic, IronicNode, Layout, Switch,
    printed_cmdline, ramdisk,
};
use boot_tests::rack::{Backend, CMDLINE, Node, Rack, RackSetup, SERVER};
use boot_tests::vm::Firmware;

/// Longest a boot to a ramdisk's marker may take under TCG, two machines sharing two cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Where the Ironic API would be; the agent is never started, only told.
const IPA_API_URL: &str = "http://198.18.0.1:6385";
/// The fallback a node with no config of its own chains (Ironic's unit tests and Bifrost's
/// and Metal3's discovery use `inspector.ipxe`).
const FALLBACK: &str = "inspector.ipxe";
/// What our stand-in for the inspector's script prints.
const FALLBACK_MARKER: &str = "IRONIC-FALLBACK-REACHED";

fn ironic() -> &'static Ironic {
    Ironic::get().expect("Ironic's virtualenv (cargo xtask setup makes it)")
}

/// The node's UUID in Ironic (the VM's SMBIOS UUID is another matter).
fn node_uuid(n: u8) -> String {
    format!("1be26c0b-03f2-4d2e-ae87-c02d7f33c1{n:02}")
}

/// An HTTP root for xdpboot with Ironic's http_root at `ironic/` and the deploy and instance
/// images; `http_url` as the deployment sets it.
struct IronicRoot {
    dir: TempDir,
    layout: Layout,
}

impl IronicRoot {
    fn new(assets: &Assets, known: &[&Node], http_url: &str) -> IronicRoot {
        let dir = TempDir::new("ironic").expect("a directory");
        let images = dir.join("images");
        std::fs::create_dir_all(&images).expect("images/");
        let deploy = ramdisk(&images, DEPLOY_MARKER).expect("the deploy ramdisk");
        let instance = ramdisk(&images, INSTANCE_MARKER).expect("the instance ramdisk");
        let kernel = assets.http_root.join(KERNEL);
        let nodes = known
            .iter()
            .enumerate()
            .map(|(i, node)| IronicNode {
                uuid: node_uuid(i as u8 + 1),
                macs: vec![node.mac],
                deploy_kernel: kernel.clone(),
                deploy_ramdisk: deploy.clone(),
                kernel: kernel.clone(),
                ramdisk: instance.clone(),
                kernel_append_params: CMDLINE.to_owned(),
                ipa_api_url: IPA_API_URL.to_owned(),
            })
            .collect();
        let layout = Layout {
            interface: Interface::Ipxe,
            http_root: dir.join("http/ironic"),
            tftp_root: dir.join("tftp"),
            http_url: http_url.to_owned(),
            fallback_script: Some(FALLBACK.to_owned()),
            tftp_server: None,
            nodes,
        };
        let written = ironic()
            .lay_out(&layout)
            .expect("Ironic lays out its files");
        eprintln!("Ironic {IRONIC_VERSION} wrote {written:#?}");
        // The inspector's script is served by the inspector (or, in Bifrost, from the same
        // root); ours only says it was reached.
        std::fs::write(
            layout.http_root.join(FALLBACK),
            format!("#!ipxe\necho {FALLBACK_MARKER} for ${{mac}}\nsleep 600\n"),
        )
        .expect("inspector.ipxe");
        // UEFI HTTP boot fetches iPXE from the HTTP root (the lab serves no package loaders).
        std::fs::copy(
            assets.http_root.join("snponly.efi"),
            dir.join("http/snponly.efi"),
        )
        .expect("snponly.efi in the HTTP root");
        IronicRoot { dir, layout }
    }

    fn http_root(&self) -> PathBuf {
        self.dir.join("http")
    }
}

/// The policy of the README's worked example: iPXE (the NIC's ROM, or the one UEFI PXE got) to
/// Ironic's master script, UEFI HTTP boot to snponly.efi by URL (Ironic's `http-ipxe`), UEFI
/// PXE to snponly.efi over TFTP, BIOS PXE to undionly.kpxe.
fn ironic_policy() -> String {
    "[[policy]]\nname = \"ironic-ipxe\"\nipxe = true\n\
     http = \"http://{server}:{http_port}/ironic/boot.ipxe\"\n\n\
     [[policy]]\nname = \"uefi-http\"\nfirmware = \"http\"\narch = [\"uefi-x64\"]\n\
     http = \"http://{server}:{http_port}/snponly.efi\"\n\n\
     [[policy]]\nname = \"ironic-bios\"\narch = [\"bios\"]\ntftp = \"undionly.kpxe\"\n\n\
     [[policy]]\nname = \"ironic-uefi-x64\"\narch = [\"uefi-x64\"]\ntftp = \"snponly.efi\"\n"
        .to_owned()
}

fn start_rack(root: &IronicRoot, nodes: Vec<Node>) -> Rack {
    boot_tests::require_lab();
    let assets = Assets::get().expect("the firmware test assets");
    let mut setup = RackSetup::new(Backend::Xdp, nodes);
    setup.policy = Some(ironic_policy());
    setup.http_root = Some(root.http_root());
    Rack::start(assets, setup).expect("the lab starts")
}

/// Waits for `marker` on VM `index`'s console; the command line printed after it.
fn wait_for_ramdisk(rack: &mut Rack, index: usize, marker: &str) -> String {
    let line = rack.vms[index]
        .wait_for_line(marker, BOOT_TIMEOUT, |l| l.contains(marker))
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\n----- xdpboot -----\n{}",
                tail(&rack.daemon_log(), 60)
            )
        });
    printed_cmdline(&line, marker)
        .unwrap_or_else(|| panic!("no command line after the marker: {line}"))
        .to_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Ironic's deploy parameters on the deploy ramdisk's command line.
fn assert_deploy_cmdline(cmdline: &str, mac: MacAddr) {
    for wanted in [
        format!("ipa-api-url={IPA_API_URL}"),
        format!("BOOTIF={mac}"),
        "initrd=deploy_ramdisk".to_owned(),
        "console=ttyS0".to_owned(),
    ] {
        assert!(
            cmdline.split_whitespace().any(|w| w == wanted),
            "{wanted} on the deploy ramdisk's command line: {cmdline}"
        );
    }
}

/// Whether xdpboot served `path` (as requested) with 200.
fn served(rack: &Rack, path: &str) -> bool {
    rack.access_log()
        .iter()
        .any(|a| a.path == path && a.status == 200)
}

#[test]
fn ironic_39_renders_its_templates_as_its_own_unit_tests_expect() {
    let checked = ironic()
        .check_renderings()
        .expect("Ironic's renderings match its unit tests' expected files");
    for name in [
        "boot.ipxe",
        "boot-fallback.ipxe",
        "ipxe_config.template",
        "pxe_grub_config.template",
    ] {
        assert!(
            checked.iter().any(|c| c == name),
            "{name} checked: {checked:?}"
        );
    }
}

#[test]
fn ironics_ipxe_layout_has_relative_mac_symlinks_to_each_nodes_config() {
    let assets = Assets::get().expect("the firmware test assets");
    let node = Node::numbered(1, Firmware::Bios);
    let root = IronicRoot::new(assets, &[&node], "http://198.18.0.1/ironic");
    let http = &root.layout.http_root;
    let uuid = node_uuid(1);
    let link = http.join("pxelinux.cfg/52-54-00-18-01-01");
    assert_eq!(
        std::fs::read_link(&link).expect("a symlink per MAC"),
        Path::new(&format!("../{uuid}/config"))
    );
    let config = std::fs::read_to_string(&link).expect("the link resolves");
    assert!(config.starts_with("#!ipxe"), "{config}");
    assert!(
        config.contains(&format!(
            "kernel http://198.18.0.1/ironic/{uuid}/deploy_kernel selinux=0 troubleshoot=0 text {CMDLINE} ipa-api-url={IPA_API_URL} BOOTIF=${{mac}} initrd=deploy_ramdisk || goto retry"
        )),
        "{config}"
    );
    let master = std::fs::read_to_string(http.join("boot.ipxe")).expect("boot.ipxe");
    assert!(
        master.contains("chain pxelinux.cfg/${mac:hexhyp}"),
        "{master}"
    );
    assert!(
        master.contains(&format!("chain {FALLBACK} | goto boot_failed")),
        "{master}"
    );
    for image in ["deploy_kernel", "deploy_ramdisk", "kernel", "ramdisk"] {
        assert!(http.join(&uuid).join(image).is_file(), "{uuid}/{image}");
    }

    // After a ramdisk deploy, every goto names boot_ramdisk and nothing else changed.
    let path = root.layout.config_of(&root.layout.nodes[0]);
    ironic()
        .switch_config(&path, Switch::Ramdisk, Interface::Ipxe)
        .expect("switch_pxe_config");
    let switched = std::fs::read_to_string(&path).expect("the config");
    let gotos: Vec<&str> = switched
        .lines()
        .filter(|l| l.starts_with("goto "))
        .collect();
    assert!(
        !gotos.is_empty() && gotos.iter().all(|l| *l == "goto boot_ramdisk"),
        "{switched}"
    );
    assert_eq!(
        switched
            .lines()
            .filter(|l| !l.starts_with("goto "))
            .collect::<Vec<_>>(),
        config
            .lines()
            .filter(|l| !l.starts_with("goto "))
            .collect::<Vec<_>>()
    );
}

/// Ironic's `pxe` interface in UEFI mode (GRUB, the Secure Boot path): the master
/// `grub/grub.cfg` sources `$net_default_mac.conf` from the TFTP root, which links to the
/// node's GRUB config. The layout alone; the boot is
/// [`ovmf_secure_boot_pxe_runs_shim_and_grub_through_ironics_grub_configs_to_the_deploy_ramdisk`].
#[test]
fn ironics_grub_layout_for_secure_boot_sources_a_per_mac_config() {
    let assets = Assets::get().expect("the firmware test assets");
    let dir = TempDir::new("ironic-grub").expect("a directory");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).expect("images/");
    let deploy = ramdisk(&images, DEPLOY_MARKER).expect("the deploy ramdisk");
    let kernel = assets.http_root.join(KERNEL);
    let mac = MacAddr([0x52, 0x54, 0x00, 0x18, 0x01, 0x01]);
    let node = IronicNode {
        uuid: node_uuid(1),
        macs: vec![mac],
        deploy_kernel: kernel.clone(),
        deploy_ramdisk: deploy.clone(),
        kernel,
        ramdisk: deploy,
        kernel_append_params: CMDLINE.to_owned(),
        ipa_api_url: IPA_API_URL.to_owned(),
    };
    let layout = Layout {
        interface: Interface::Pxe,
        http_root: dir.join("http"),
        tftp_root: dir.join("tftp"),
        http_url: format!("http://{SERVER}"),
        fallback_script: None,
        tftp_server: Some(SERVER.to_string()),
        nodes: vec![node.clone()],
    };
    ironic()
        .lay_out(&layout)
        .expect("Ironic lays out its GRUB files");
    let tftp = &layout.tftp_root;
    let master = std::fs::read_to_string(tftp.join("grub/grub.cfg")).expect("grub/grub.cfg");
    assert!(
        master.contains(&format!("source {}/$net_default_mac.conf", tftp.display())),
        "{master}"
    );
    for link in [
        format!("{mac}.conf"),
        "grub.cfg-01-52-54-00-18-01-01".to_owned(),
    ] {
        assert_eq!(
            std::fs::read_link(tftp.join(&link)).expect("a symlink per MAC"),
            Path::new(&format!("{}/config", node.uuid)),
            "{link}"
        );
    }
    let config = std::fs::read_to_string(layout.config_of(&node)).expect("the node's config");
    assert!(config.contains("set default=deploy"), "{config}");
    assert!(
        config.contains(&format!(
            "linux {}/deploy_kernel selinux=0 troubleshoot=0 text {CMDLINE} ipa-api-url={IPA_API_URL} boot_server={SERVER}",
            node.uuid
        )),
        "TFTP-relative paths: {config}"
    );
    ironic()
        .switch_config(&layout.config_of(&node), Switch::Ramdisk, Interface::Pxe)
        .expect("switch_pxe_config");
    let switched = std::fs::read_to_string(layout.config_of(&node)).expect("the config");
    assert!(switched.contains("set default=boot_ramdisk"), "{switched}");
}

/// OVMF's own PXE → snponly.efi over TFTP → iPXE → Ironic's `boot.ipxe` → the node's
/// `pxelinux.cfg/<mac>` symlink → its config → the deploy ramdisk with Ironic's parameters.
/// Then Ironic's post-deploy rewrite (`goto boot_ramdisk`) and a reboot: the instance's kernel
/// and ramdisk boot.
#[test]
fn ovmf_pxe_reaches_ironics_deploy_ramdisk_and_after_the_goto_rewrite_the_instance() {
    let started = Instant::now();
    let assets = Assets::get().expect("the firmware test assets");
    let node = Node::numbered(1, Firmware::UefiPxe);
    let root = IronicRoot::new(assets, &[&node], &format!("http://{SERVER}/ironic"));
    let mut rack = start_rack(&root, vec![node.clone()]);
    rack.boot_all().expect("the VM starts");
    let cmdline = wait_for_ramdisk(&mut rack, 0, DEPLOY_MARKER);
    let deployed = started.elapsed();
    eprintln!(
        "deploy ramdisk after {:.1} s: {cmdline}",
        deployed.as_secs_f64()
    );
    assert_deploy_cmdline(&cmdline, node.mac);
    let log = rack.daemon_log();
    assert!(
        log.lines().any(|l| l.contains("tftp transfer")
            && l.contains("snponly.efi")
            && l.contains("outcome=\"complete\"")),
        "snponly.efi went over TFTP:\n{}",
        tail(&log, 40)
    );
    let uuid = node_uuid(1);
    for path in [
        "/ironic/boot.ipxe".to_owned(),
        "/ironic/pxelinux.cfg/52-54-00-18-01-01".to_owned(),
        format!("/ironic/{uuid}/deploy_kernel"),
        format!("/ironic/{uuid}/deploy_ramdisk"),
    ] {
        assert!(
            served(&rack, &path),
            "{path} served: {:#?}",
            rack.access_log()
        );
    }

    // The deploy is done: Ironic switches the config to the instance and reboots the node.
    ironic()
        .switch_config(
            &root.layout.config_of(&root.layout.nodes[0]),
            Switch::Ramdisk,
            Interface::Ipxe,
        )
        .expect("switch_pxe_config");
    let rebooted = Instant::now();
    rack.reboot(0).expect("the VM starts again");
    let cmdline = wait_for_ramdisk(&mut rack, 0, INSTANCE_MARKER);
    eprintln!(
        "instance ramdisk {:.1} s after the reboot: {cmdline}",
        rebooted.elapsed().as_secs_f64()
    );
    for wanted in ["root=/dev/ram0", "initrd=ramdisk", "console=ttyS0"] {
        assert!(
            cmdline.split_whitespace().any(|w| w == wanted),
            "{wanted} on the instance's command line: {cmdline}"
        );
    }
    for path in [
        format!("/ironic/{uuid}/kernel"),
        format!("/ironic/{uuid}/ramdisk"),
    ] {
        assert!(
            served(&rack, &path),
            "{path} served: {:#?}",
            rack.access_log()
        );
    }
    eprintln!(
        "Ironic {IRONIC_VERSION} over OVMF PXE: deploy ramdisk at {:.1} s, whole test {:.1} s",
        deployed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// SeaBIOS with the NIC's iPXE ROM (no first-stage download) under Bifrost's `http_url`, which
/// ends in `/`: Ironic's URLs then hold `//` (`/ironic//<uuid>/deploy_kernel`), which xdpboot
/// serves like `/`. A second machine Ironic has no port for gets Ironic's fallback (the
/// inspector's script).
#[test]
fn seabios_ipxe_reaches_ironics_deploy_ramdisk_under_bifrosts_http_url_and_an_unknown_mac_the_fallback()
 {
    let started = Instant::now();
    let assets = Assets::get().expect("the firmware test assets");
    let node = Node::numbered(1, Firmware::Bios);
    let unknown = Node::numbered(2, Firmware::Bios);
    let root = IronicRoot::new(assets, &[&node], &format!("http://{SERVER}/ironic/"));
    let mut rack = start_rack(&root, vec![node.clone(), unknown.clone()]);
    rack.boot_all().expect("the VMs start");
    let cmdline = wait_for_ramdisk(&mut rack, 0, DEPLOY_MARKER);
    eprintln!(
        "deploy ramdisk after {:.1} s: {cmdline}",
        started.elapsed().as_secs_f64()
    );
    assert_deploy_cmdline(&cmdline, node.mac);
    let uuid = node_uuid(1);
    for path in [
        format!("/ironic//{uuid}/deploy_kernel"),
        format!("/ironic//{uuid}/deploy_ramdisk"),
    ] {
        assert!(
            served(&rack, &path),
            "{path} served: {:#?}",
            rack.access_log()
        );
    }
    // A path that starts with `//`, as under Bifrost's root-level http_url.
    let (status, body) = rack
        .fetch(&format!("http://{SERVER}//ironic/boot.ipxe"))
        .expect("fetching //ironic/boot.ipxe");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("chain pxelinux.cfg/"));

    let line = rack.vms[1]
        .wait_for_line("Ironic's fallback", BOOT_TIMEOUT, |l| {
            l.contains(FALLBACK_MARKER)
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", tail(&rack.daemon_log(), 40)));
    assert!(line.contains(&unknown.mac.to_string()), "{line}");
    assert!(
        rack.access_log()
            .iter()
            .any(|a| a.path == "/ironic/pxelinux.cfg/52-54-00-18-01-02" && a.status == 404),
        "the unknown MAC's config was asked for and missing: {:#?}",
        rack.access_log()
    );
    eprintln!("SeaBIOS lab: {:.1} s", started.elapsed().as_secs_f64());
}

/// Ironic's `http-ipxe` interface: OVMF's UEFI HTTP boot (no PXE, no TFTP) gets snponly.efi by
/// URL from xdpboot's HTTP root, and that iPXE goes on to Ironic's master script and the deploy
/// ramdisk as over PXE.
#[test]
fn ovmf_http_boot_gets_snponly_by_url_and_reaches_ironics_deploy_ramdisk() {
    let started = Instant::now();
    let assets = Assets::get().expect("the firmware test assets");
    let node = Node::numbered(1, Firmware::UefiHttp);
    let root = IronicRoot::new(assets, &[&node], &format!("http://{SERVER}/ironic"));
    let mut rack = start_rack(&root, vec![node.clone()]);
    rack.boot_all().expect("the VM starts");
    let cmdline = wait_for_ramdisk(&mut rack, 0, DEPLOY_MARKER);
    eprintln!(
        "deploy ramdisk after {:.1} s: {cmdline}",
        started.elapsed().as_secs_f64()
    );
    assert_deploy_cmdline(&cmdline, node.mac);
    assert!(served(&rack, "/snponly.efi"), "{:#?}", rack.access_log());
    assert!(
        served(&rack, "/ironic/boot.ipxe"),
        "{:#?}",
        rack.access_log()
    );
    assert!(
        !rack.daemon_log().contains("tftp transfer"),
        "no TFTP for UEFI HTTP boot"
    );
}

/// Ironic's `pxe` interface (GRUB, for Secure Boot) booted under Secure Boot: OVMF with
/// Microsoft's keys PXE-boots Debian's signed shim (the node's `loader = "shim"` rule), shim
/// loads the Debian-signed GRUB from the TFTP root, and GRUB reads, all over TFTP from xdpboot's
/// TFTP root, which is Ironic's `[pxe] tftp_root`: Ironic's `grub/grub.cfg` (a file in the root
/// wins over xdpboot's own bootstrap of that name), the `<tftp_root>/$net_default_mac.conf` it
/// sources by the conductor's absolute path (resolved by a link in the root, as the README
/// says), the node's `<uuid>/config`, and the deploy kernel (Debian's, signed: shim checks it)
/// and ramdisk, which starts with Ironic's parameters and Secure Boot on.
#[test]
fn ovmf_secure_boot_pxe_runs_shim_and_grub_through_ironics_grub_configs_to_the_deploy_ramdisk() {
    let started = Instant::now();
    boot_tests::require_lab();
    let assets = Assets::get().expect("the firmware test assets");
    let node = Node::numbered(1, Firmware::UefiPxeSecureBoot);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node.clone()]);
    // A TFTP root of the lab's own for Ironic to write into; shim and GRUB come from the
    // loader search.
    setup.tftp_loaders = Vec::new();
    let mut rack = Rack::start(assets, setup).expect("the lab starts");
    let tftp = rack.tftp_root.canonicalize().expect("the lab's TFTP root");

    let images = rack.dir.join("images");
    std::fs::create_dir_all(&images).expect("images/");
    let deploy = ramdisk(&images, DEPLOY_MARKER).expect("the deploy ramdisk");
    // The lab's kernel is Debian's, signed by Debian: shim lets GRUB boot it.
    let kernel = assets.http_root.join(KERNEL);
    let ironic_node = IronicNode {
        uuid: node_uuid(1),
        macs: vec![node.mac],
        deploy_kernel: kernel.clone(),
        deploy_ramdisk: deploy.clone(),
        kernel,
        ramdisk: deploy,
        kernel_append_params: CMDLINE.to_owned(),
        ipa_api_url: IPA_API_URL.to_owned(),
    };
    let layout = Layout {
        interface: Interface::Pxe,
        http_root: rack.dir.join("ironic-http"),
        tftp_root: tftp.clone(),
        http_url: format!("http://{SERVER}"),
        fallback_script: None,
        tftp_server: Some(SERVER.to_string()),
        nodes: vec![ironic_node.clone()],
    };
    let written = ironic()
        .lay_out(&layout)
        .expect("Ironic lays out its GRUB files");
    eprintln!("Ironic {IRONIC_VERSION} wrote {written:#?}");
    // GRUB asks for `<tftp_root>/<mac>.conf` by its absolute path, which xdpboot looks up under
    // its root: a link there back to the root itself (tftpd-hpa's remap in Ironic's guide).
    let relative = tftp.strip_prefix("/").expect("an absolute path");
    let parent = relative.parent().expect("the root is not /");
    std::fs::create_dir_all(tftp.join(parent)).expect("the link's directory");
    std::os::unix::fs::symlink(&tftp, tftp.join(relative)).expect("the link to the root");

    rack.boot_all().expect("the VM starts");
    let cmdline = wait_for_ramdisk(&mut rack, 0, DEPLOY_MARKER);
    let deployed = started.elapsed();
    eprintln!(
        "deploy ramdisk under Secure Boot after {:.1} s: {cmdline}",
        deployed.as_secs_f64()
    );
    for wanted in [
        format!("ipa-api-url={IPA_API_URL}"),
        format!("boot_server={SERVER}"),
        "console=ttyS0".to_owned(),
    ] {
        assert!(
            cmdline.split_whitespace().any(|w| w == wanted),
            "{wanted} on the deploy ramdisk's command line: {cmdline}"
        );
    }
    let vm = &rack.vms[0];
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
    // Ironic's files, not xdpboot's: its master config, the per-MAC link by the absolute
    // path, the node's config and images, all over TFTP.
    let uuid = node_uuid(1);
    // xdpboot logs the name as asked, without its leading `/`.
    let by_mac = format!("{}/{}.conf", relative.display(), node.mac);
    let log = rack.daemon_log();
    let transfers: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tftp transfer"))
        .filter_map(|l| l.split_once(" file=").map(|(_, rest)| rest))
        .collect();
    eprintln!("TFTP: {transfers:#?}");
    for file in [
        "shimx64.efi",
        "grubx64.efi",
        "grub/grub.cfg",
        by_mac.as_str(),
        &format!("{uuid}/deploy_kernel"),
        &format!("{uuid}/deploy_ramdisk"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("tftp transfer")
                && l.contains(&format!("file=\"{file}\""))
                && l.contains("outcome=\"complete\"")),
            "{file} over TFTP:\n{}",
            tail(&log, 60)
        );
    }
    assert!(
        !log.contains(&format!("grub.cfg-01-{}", node.mac)),
        "GRUB never asked for xdpboot's own per-node config:\n{}",
        tail(&log, 60)
    );
    assert!(
        !vm.lines.iter().any(|l| l.contains("xdpboot: GRUB booting")),
        "xdpboot's own GRUB config never ran"
    );
    let http = rack.access_log();
    assert!(http.is_empty(), "nothing over HTTP: {http:#?}");
    eprintln!(
        "Ironic {IRONIC_VERSION} GRUB layout under Secure Boot: deploy ramdisk at {:.1} s",
        deployed.as_secs_f64()
    );
}
