//! Per-node scripts, boot files and overlays over HTTP, against real clients: curl fetches, and
//! `cpio` unpacks the shared initrd followed by a node's overlay to check the union the kernel
//! builds (later files win). Loopback only, ephemeral ports, bounded waits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use xdpboot::config::Config;
use xdpboot::http::scripts::BootContent;
use xdpboot::http::signed::UrlSigner;
use xdpboot::http::{Listeners, Server};
use xdpboot::reload::{Decisions, Swap};

const NODE_A: &str = "52:54:00:00:0a:01";
const NODE_B: &str = "52:54:00:00:0b:02";
const TIMEOUT: Duration = Duration::from_secs(20);

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xdpboot-boot-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server with a kernel, a shared initrd (a newc archive made by `cpio`, 4n+1 bytes long so
/// the padding shows), two configured nodes and an overlay.
struct Lab {
    dir: TempDir,
    http: SocketAddr,
    content: Arc<BootContent>,
    _runtime: tokio::runtime::Runtime,
}

impl Lab {
    fn start() -> Lab {
        Lab::with_kernel("vmlinuz")
    }

    /// The lab with `[boot] kernel` set to `kernel` ("" for none, and then no initrds).
    fn with_kernel(kernel: &str) -> Lab {
        Lab::with_boot(kernel, "")
    }

    /// The lab with `[boot] kernel` set to `kernel` and `boot_keys` (TOML lines) in `[boot]`.
    fn with_boot(kernel: &str, boot_keys: &str) -> Lab {
        let dir = TempDir::new();
        let root = dir.0.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("vmlinuz"), b"not really a kernel").unwrap();
        std::fs::write(root.join("vmlinuz-arm64"), b"not really an arm64 kernel").unwrap();
        let shared = shared_initrd(&dir.0);
        let config_text = format!(
            r#"
[http]
root = "{root}"
https_port = 0

[boot]
kernel = "{kernel}"
initrds = [{initrds}]
cmdline = "console=ttyS0"
secret_file = "{secret}"
{boot_keys}

[boot.arch.uefi-arm64]
kernel = "vmlinuz-arm64"
cmdline = "console=ttyAMA0"

[[overlay]]
path = "etc/hostname"
content = "{{{{hostname}}}}\n"

[[overlay]]
path = "etc/xdpboot/node"
mode = "0600"
content = "mac={{{{mac}}}} token={{{{token}}}} rack={{{{rack}}}}\n"

[[node]]
mac = "{NODE_A}"
hostname = "rack7-a"
cmdline = "role=worker"
vars = {{ rack = "7" }}

[[node]]
mac = "{NODE_B}"
hostname = "rack7-b"
"#,
            root = root.display(),
            initrds = if kernel.is_empty() {
                String::new()
            } else {
                format!("{:?}", shared.display().to_string())
            },
            secret = dir.0.join("url-secret").display(),
        );
        let config = Arc::new(Config::parse(&config_text, "lab.toml").expect("lab config"));
        let decisions = Decisions::from_config(&config).expect("no API");
        let content = Arc::new(
            BootContent::new((*config).clone(), Arc::new(Swap::new(decisions)))
                .expect("boot content"),
        );
        let server = Server::new(&config.http, None).with_boot(content.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listeners = runtime.block_on(async {
            Listeners {
                http: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
                https: None,
            }
        });
        let http = listeners.http.as_ref().unwrap().local_addr().unwrap();
        runtime.spawn(server.serve(listeners));
        Lab {
            dir,
            http,
            content,
            _runtime: runtime,
        }
    }

    /// GET `path` with curl; returns the status and the body.
    fn get(&self, path: &str, extra: &[&str]) -> (u16, Vec<u8>) {
        let body = self.dir.0.join(format!("body-{}", unique()));
        let output = Command::new("curl")
            .args(["-sS", "--max-time", &TIMEOUT.as_secs().to_string()])
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(extra)
            .arg(format!("http://{}{path}", self.http))
            .output()
            .expect("curl runs");
        let status = String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0);
        (status, std::fs::read(&body).unwrap_or_default())
    }

    fn script(&self, mac: &str) -> String {
        let (status, body) = self.get(&format!("/boot.ipxe?mac={mac}&arch=bios"), &[]);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        String::from_utf8(body).unwrap()
    }

    /// The overlay URL path (with its signature) a script hands out.
    fn overlay_path(&self, script: &str) -> String {
        let start = script.find("/nodes/").expect("the script names an overlay");
        let end = script[start..].find(char::is_whitespace).unwrap() + start;
        script[start..end].to_owned()
    }
}

fn unique() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A newc archive made by GNU cpio with `etc/hostname` = "shared" and `etc/shared-only`, plus
/// one trailing byte, so its length is not a multiple of 4.
fn shared_initrd(dir: &Path) -> PathBuf {
    let tree = dir.join("shared-tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), b"shared\n").unwrap();
    std::fs::write(tree.join("etc/shared-only"), b"from the shared initrd\n").unwrap();
    let out = dir.join("shared.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find etc | cpio -o -H newc --quiet > '{}'",
            tree.display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let mut bytes = std::fs::read(&out).unwrap();
    while bytes.len() % 4 != 1 {
        bytes.push(0);
    }
    std::fs::write(&out, &bytes).unwrap();
    out
}

#[test]
fn a_configured_node_gets_its_script_with_kernel_initrds_and_a_signed_overlay() {
    let lab = Lab::start();
    let script = lab.script(NODE_A);
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    let base = format!("http://127.0.0.1:{}", lab.http.port());
    assert!(
        script.contains(&format!(
            "kernel --name kernel {base}/boot/kernel initrd=0.img initrd=overlay.cpio console=ttyS0 role=worker"
        )),
        "{script}"
    );
    assert!(
        script.contains(&format!("initrd --name 0.img {base}/boot/initrd/0")),
        "{script}"
    );
    assert!(script.contains("booting rack7-a"), "{script}");
    assert!(
        script.contains(&format!("/nodes/{NODE_A}/overlay.cpio?expires=")),
        "{script}"
    );
    // Retries are bounded by the config.
    assert!(script.contains("iseq ${attempt} 5"), "{script}");
}

#[test]
fn an_arm64_node_gets_the_kernel_and_cmdline_of_its_arch_section_and_the_shared_initrds() {
    let lab = Lab::start();
    let base = format!("http://127.0.0.1:{}", lab.http.port());
    let (status, body) = lab.get(&format!("/boot.ipxe?mac={NODE_B}&arch=uefi-arm64"), &[]);
    assert_eq!(status, 200);
    let script = String::from_utf8(body).unwrap();
    assert!(
        script.contains(&format!(
            "kernel --name kernel {base}/boot/uefi-arm64/kernel initrd=0.img initrd=overlay.cpio console=ttyAMA0 ||"
        )),
        "{script}"
    );
    // No initrds of its own: [boot]'s, under the arch's path.
    assert!(
        script.contains(&format!(
            "initrd --name 0.img {base}/boot/uefi-arm64/initrd/0"
        )),
        "{script}"
    );
    let (status, kernel) = lab.get("/boot/uefi-arm64/kernel", &[]);
    assert_eq!(
        (status, kernel.as_slice()),
        (200, &b"not really an arm64 kernel"[..])
    );
    let (status, initrd) = lab.get("/boot/uefi-arm64/initrd/0", &[]);
    assert_eq!((status, initrd), (200, lab.get("/boot/initrd/0", &[]).1));
    // Other architectures keep [boot]; an arch without a section has no URL of its own.
    let (_, body) = lab.get(&format!("/boot.ipxe?mac={NODE_B}&arch=uefi-x64"), &[]);
    let script = String::from_utf8(body).unwrap();
    assert!(
        script.contains(&format!("kernel --name kernel {base}/boot/kernel ")),
        "{script}"
    );
    assert_eq!(lab.get("/boot/uefi-x64/kernel", &[]).0, 404);
    assert_eq!(lab.get("/boot/uefi-arm64/initrd/1", &[]).0, 404);
}

#[test]
fn an_unknown_node_gets_a_default_hostname_and_a_request_without_mac_is_refused() {
    let lab = Lab::start();
    let script = lab.script("52:54:00:99:99:99");
    assert!(script.contains("booting node-525400999999"), "{script}");
    assert_eq!(lab.get("/boot.ipxe", &[]).0, 400);
    assert_eq!(lab.get("/boot.ipxe?mac=not-a-mac", &[]).0, 400);
}

#[test]
fn the_shared_initrd_is_padded_to_four_bytes_and_the_kernel_is_served() {
    let lab = Lab::start();
    let stored = std::fs::read(lab.dir.0.join("shared.cpio")).unwrap();
    let (status, served) = lab.get("/boot/initrd/0", &[]);
    assert_eq!(status, 200);
    assert_eq!(served.len() % 4, 0);
    assert_eq!(served.len(), stored.len().next_multiple_of(4));
    assert_eq!(&served[..stored.len()], &stored[..]);
    assert!(served[stored.len()..].iter().all(|&b| b == 0));
    // A range over the padding is consistent with the whole.
    let from = stored.len() - 2;
    let (status, tail) = lab.get("/boot/initrd/0", &["-r", &format!("{from}-")]);
    assert_eq!(status, 206);
    assert_eq!(tail, &served[from..]);

    let (status, kernel) = lab.get("/boot/kernel", &[]);
    assert_eq!(
        (status, kernel.as_slice()),
        (200, &b"not really a kernel"[..])
    );
    assert_eq!(lab.get("/boot/initrd/1", &[]).0, 404);
    assert_eq!(lab.get("/boot/nothing", &[]).0, 404);
}

#[test]
fn the_shared_initrd_and_a_nodes_overlay_unpack_to_their_union_with_the_overlay_winning() {
    let lab = Lab::start();
    let overlay_path = lab.overlay_path(&lab.script(NODE_A));
    let (status, overlay) = lab.get(&overlay_path, &[]);
    assert_eq!(status, 200);
    assert_eq!(overlay.len() % 4, 0);
    let (_, shared) = lab.get("/boot/initrd/0", &[]);
    // The kernel's order: the shared initrd, then the overlay.
    let mut both = shared;
    both.extend_from_slice(&overlay);
    let out = lab.dir.0.join("unpacked");
    std::fs::create_dir_all(&out).unwrap();
    let archive = lab.dir.0.join("both.cpio");
    std::fs::write(&archive, &both).unwrap();
    // cpio reads one archive per call; the kernel reads all back to back. Unpack each part in
    // order (-u: later files replace earlier ones, as the kernel does).
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{out}' && cpio -idu --quiet < '{shared}' && cpio -idu --quiet < '{overlay}'",
            out = out.display(),
            shared = lab.dir.0.join("shared.cpio").display(),
            overlay = {
                let p = lab.dir.0.join("overlay.cpio");
                std::fs::write(&p, &overlay).unwrap();
                p
            }
            .display(),
        ))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(out.join("etc/hostname")).unwrap(),
        "rack7-a\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("etc/shared-only")).unwrap(),
        "from the shared initrd\n"
    );
    let node = std::fs::read_to_string(out.join("etc/xdpboot/node")).unwrap();
    assert!(node.starts_with(&format!("mac={NODE_A} token=")), "{node}");
    assert!(node.ends_with(" rack=7\n"), "{node}");
    // The node file kept its mode.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("etc/xdpboot/node"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // And the concatenation the kernel reads: GNU cpio stops at the first trailer, so check
    // the overlay's archive starts at a 4-byte boundary after the padded shared one.
    assert_eq!(both.len() % 4, 0);
    assert_eq!(&both[both.len() - overlay.len()..][..6], b"070701");
}

#[test]
fn overlays_need_their_own_unexpired_signature() {
    let lab = Lab::start();
    let path_a = lab.overlay_path(&lab.script(NODE_A));
    let path_b = lab.overlay_path(&lab.script(NODE_B));
    assert_eq!(lab.get(&path_a, &[]).0, 200);
    // iPXE 2019 percent-encodes the colons of the MAC: still the same signed path.
    assert_eq!(lab.get(&path_a.replace(':', "%3A"), &[]).0, 200);
    // Unsigned.
    assert_eq!(
        lab.get(&format!("/nodes/{NODE_A}/overlay.cpio"), &[]).0,
        403
    );
    // B's signature on A's path: one node cannot read another's overlay.
    let query_b = path_b.split_once('?').unwrap().1;
    assert_eq!(
        lab.get(&format!("/nodes/{NODE_A}/overlay.cpio?{query_b}"), &[])
            .0,
        403
    );
    // Expired: signed with the server's own key an hour in the past.
    let secret = std::fs::read(lab.dir.0.join("url-secret")).unwrap();
    let signer = UrlSigner::new(&secret);
    let expired = signer.sign(
        &format!("/nodes/{NODE_A}/overlay.cpio"),
        SystemTime::now() - Duration::from_secs(7200),
        Duration::from_secs(3600),
    );
    assert_eq!(lab.get(&expired, &[]).0, 403);
    // The same key, a valid time: accepted (so the 403 above was the expiry).
    let fresh = signer.sign(
        &format!("/nodes/{NODE_A}/overlay.cpio"),
        SystemTime::now(),
        Duration::from_secs(60),
    );
    assert_eq!(lab.get(&fresh, &[]).0, 200);
}

#[test]
fn overlays_are_built_once_per_node_and_revalidated_by_etag() {
    let lab = Lab::start();
    let path = lab.overlay_path(&lab.script(NODE_B));
    for _ in 0..5 {
        assert_eq!(lab.get(&path, &[]).0, 200);
    }
    assert_eq!(lab.content.overlay_builds(), 1);
    let headers = lab.dir.0.join("etag-headers");
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D"])
        .arg(&headers)
        .arg(format!("http://{}{path}", lab.http))
        .status()
        .unwrap();
    assert!(out.success());
    let headers = std::fs::read_to_string(headers).unwrap();
    let etag = headers
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("etag").then_some(value)
        })
        .expect("an ETag")
        .trim()
        .to_owned();
    let (status, body) = lab.get(&path, &["-H", &format!("If-None-Match: {etag}")]);
    assert_eq!((status, body.len()), (304, 0));
}

#[test]
fn a_node_with_nothing_to_boot_gets_a_script_that_says_why_and_exits() {
    let lab = Lab::with_kernel("");
    let (status, body) = lab.get(&format!("/boot.ipxe?mac={NODE_A}"), &[]);
    let script = String::from_utf8(body).expect("a text script");
    assert_eq!(status, 200, "{script}");
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        script.contains(&format!(
            "nothing to boot for {NODE_A}: no kernel is configured"
        )),
        "{script}"
    );
    // `exit` hands control back to the firmware, which tries its next boot device at once.
    assert_eq!(script.lines().last(), Some("exit"), "{script}");
}

/// A shipped template in `ipxe/`, rendered for NODE_A (BIOS) with `vars` in `[boot]`: the
/// script with this lab's address written as `BASE`.
fn rendered(template: &str, vars: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ipxe")
        .join(template);
    let lab = Lab::with_boot(
        "vmlinuz",
        &format!("script = {:?}\nvars = {vars}\n", path.display().to_string()),
    );
    lab.script(NODE_A)
        .replace(&format!("http://{}", lab.http), "BASE")
}

#[test]
fn the_multiboot_template_loads_the_hypervisor_with_the_kernel_and_initrds_as_modules() {
    let script = rendered(
        "multiboot.ipxe",
        r#"{ multiboot_kernel = "xen/xen.gz", multiboot_args = "dom0_mem=2048M console=com1" }"#,
    );
    let commands: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("kernel") || l.starts_with("module") || l.starts_with("boot"))
        .collect();
    assert_eq!(
        commands,
        [
            "kernel BASE/xen/xen.gz dom0_mem=2048M console=com1 || goto retry",
            "module BASE/boot/kernel console=ttyS0 role=worker || goto retry",
            "module BASE/boot/initrd/0 || goto retry",
            "boot || goto retry",
        ],
        "{script}"
    );
    assert!(
        script.contains(
            "echo xdpboot: booting rack7-a (52:54:00:00:0a:01, bios) through multiboot xen/xen.gz"
        ),
        "{script}"
    );
    assert!(!script.contains("{{"), "every tag rendered:\n{script}");
}

#[test]
fn the_windows_template_hands_wimboot_bootmgr_bcd_boot_sdi_and_boot_wim_by_name() {
    let script = rendered(
        "windows.ipxe",
        r#"{ wimboot = "wimboot", windows = "win11pe" }"#,
    );
    let commands: Vec<&str> = script
        .lines()
        .filter(|l| l.contains("kernel ") || l.contains("initrd ") || l.starts_with("boot"))
        .collect();
    assert_eq!(
        commands,
        [
            "kernel BASE/wimboot || goto retry",
            // BIOS only: on EFI wimboot takes bootmgfw.efi out of boot.wim.
            "iseq ${platform} efi || initrd --name bootmgr BASE/win11pe/bootmgr bootmgr || goto retry",
            "initrd --name BCD BASE/win11pe/boot/bcd BCD || goto retry",
            "initrd --name boot.sdi BASE/win11pe/boot/boot.sdi boot.sdi || goto retry",
            "initrd --name boot.wim BASE/win11pe/sources/boot.wim boot.wim || goto retry",
            "boot || goto retry",
        ],
        "{script}"
    );
    assert!(!script.contains("{{"), "every tag rendered:\n{script}");
}

#[test]
fn the_esxi_template_chains_mboot_with_the_boot_cfg_url_on_uefi_only() {
    let script = rendered("esxi.ipxe", r#"{ esxi = "esxi8" }"#);
    assert!(
        script.contains(
            "\nchain BASE/esxi8/efi/boot/bootx64.efi -c BASE/esxi8/boot.cfg || goto retry\n"
        ),
        "{script}"
    );
    assert!(
        script.contains("iseq ${platform} efi || goto bios"),
        "{script}"
    );
    assert!(!script.contains("{{"), "every tag rendered:\n{script}");
}

#[test]
fn a_template_naming_a_variable_nobody_sets_is_refused_when_the_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ipxe/multiboot.ipxe");
    let e = Config::parse(
        &format!("[boot]\nscript = {:?}\n", path.display().to_string()),
        "t.toml",
    )
    .expect_err("multiboot_kernel is set nowhere");
    assert!(e.to_string().contains("multiboot_kernel"), "{e}");
    // [boot] vars follow the rules of a node's vars.
    let e = Config::parse("[boot]\nvars = { mac = \"x\" }\n", "t.toml").expect_err("built-in");
    assert_eq!((e.key.as_str(), e.line), ("boot.vars", Some(2)), "{e}");
}
