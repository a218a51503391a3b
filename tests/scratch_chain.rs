//! Scratch experiments (not committed).
use std::time::{Duration, Instant};
use boot_tests::assets::Assets;
use boot_tests::rack::{Backend, Node, Rack, RackSetup};
use boot_tests::vm::{Chain, Firmware};

fn assets() -> &'static Assets {
    boot_tests::require_lab();
    Assets::get().expect("assets")
}

fn pkg(a: &Assets, i: usize, f: &str) -> std::path::PathBuf { a.chain_loaders[i].join(f) }

#[test]
fn e1_sb_pxe_shim_grub() {
    let a = assets();
    let fw = match std::env::var("FW").as_deref() { Ok("http") => Firmware::UefiHttpSecureBoot, Ok("pxe-nosb") => Firmware::UefiPxe, _ => Firmware::UefiPxeSecureBoot };
    let node = Node::numbered(1, fw).through(Chain::Ipxe);
    let mut setup = RackSetup::new(Backend::Xdp, vec![node.clone()]);
    setup.tftp_loaders = vec![];
    let loader = std::env::var("LOADER").unwrap_or("shimx64.efi".into());
    setup.policy = Some(format!("[[policy]]\nname = \"exp\"\nmac = [\"{}\"]\nfirmware = \"pxe\"\ntftp = \"{loader}\"\n\n[[policy]]\nname = \"exph\"\nmac = [\"{}\"]\nfirmware = \"http\"\nhttp = \"http://{{server}}/exp/{loader}\"\n", node.mac, node.mac));
    let mut rack = Rack::start(a, setup).expect("lab");
    let t = rack.dir.join("tftp");
    std::fs::copy(pkg(a,0,"shimx64.efi.signed"), t.join("shimx64.efi")).unwrap();
    std::fs::copy(pkg(a,1,"grubnetx64.efi.signed"), t.join("grubx64.efi")).unwrap();
    std::fs::copy(a.ipxe.join("ipxe-amd64.efi"), t.join("ipxe-amd64.efi")).unwrap();
    std::fs::create_dir_all(t.join("grub")).unwrap();
    std::fs::write(t.join("grub/grub.cfg"), "echo \"xdpboot: GRUB booting EXP prefix=$prefix root=$root cmdpath=$cmdpath mac=$net_default_mac ip=$net_default_ip server=$net_default_server iface=$net_default_interface\"\nset timeout=0\nlinux (http,198.18.0.1)/vmlinuz console=ttyS0 panic=1\ninitrd (http,198.18.0.1)/shared-initrd.img\nboot\n").unwrap();
    let g13 = "/work/wt-chains/target/scratch/t13/x/usr/lib";
    let grub13 = std::env::var("G13").is_ok();
    if grub13 {
        std::fs::copy(format!("{g13}/shim/shimx64.efi.signed"), t.join("shimx64.efi")).unwrap();
        std::fs::copy(format!("{g13}/grub/x86_64-efi-signed/grubnetx64.efi.signed"), t.join("grubx64.efi")).unwrap();
    }
    std::fs::copy(a.http_root.join("vmlinuz"), t.join("vmlinuz")).unwrap();
    std::fs::copy(a.http_root.join("shared-initrd.img"), t.join("shared-initrd.img")).unwrap();
    let proto = if grub13 { "http" } else { "tftp" };
    std::fs::write(t.join("grub/grub.cfg"), format!("echo \"xdpboot: GRUB booting EXP prefix=$prefix root=$root cmdpath=$cmdpath mac=$net_default_mac ip=$net_default_ip server=$net_default_server cpu=$grub_cpu platform=$grub_platform\"\nset timeout=0\nlinux ({proto},198.18.0.1)/vmlinuz console=ttyS0 panic=1\ninitrd ({proto},198.18.0.1)/shared-initrd.img\nboot\n")).unwrap();
    // HTTP root: a copy with exp/
    let h = rack.dir.join("http");
    std::fs::create_dir_all(h.join("exp/grub")).unwrap();
    for f in ["vmlinuz", "shared-initrd.img", "ipxe-amd64.efi"] { std::fs::copy(a.http_root.join(f), h.join(f)).unwrap(); }
    for f in ["shimx64.efi", "grubx64.efi"] { std::fs::copy(t.join(f), h.join("exp").join(f)).unwrap(); }
    std::fs::create_dir_all(h.join("grub")).unwrap();
    std::fs::copy(t.join("grub/grub.cfg"), h.join("grub/grub.cfg")).unwrap();
    std::fs::copy(t.join("grub/grub.cfg"), h.join("exp/grub/grub.cfg")).unwrap();
    let cfg = std::fs::read_to_string(&rack.config).unwrap();
    let cfg = cfg.replace(&format!("root = \"{}\"", a.http_root.display()), &format!("root = \"{}\"", h.display()));
    std::fs::write(&rack.config, cfg).unwrap();
    rack.stop_daemon();
    rack.start_daemon().unwrap();
    let started = Instant::now();
    rack.boot_all().unwrap();
    let r = rack.vms[0].wait_for_line("init", Duration::from_secs(200), |l| l.contains("/init running") || l.contains("Access Denied") || l.contains("grub>"));
    eprintln!("elapsed {:?} result {:?}", started.elapsed(), r);
    std::thread::sleep(Duration::from_secs(2));
    rack.vms[0].poll();
    eprintln!("----- console\n{}", rack.vms[0].console_tail(60));
    for l in &rack.vms[0].lines { if l.contains("ecure") || l.contains("EFI stub") || l.contains("Linux version") || l.contains("Command line") { eprintln!("KEY {l}"); } }
    eprintln!("----- daemon\n{}", rack.daemon_log().lines().filter(|l| l.contains("tftp") || l.contains("access") || l.contains("answered") || l.contains("WARN")).collect::<Vec<_>>().join("\n"));
    eprintln!("stages {:?}", rack.vms[0].reached);
}
