//! What an operator sees of a boot: simulated clients go through DHCP → TFTP → HTTP script,
//! kernel, initrd and overlay in network namespaces (a proxyDHCP probe, tftp-hpa or atftp,
//! curl), and the admin listener shows it: `/metrics`, `/api/nodes`, and the live status page
//! in headless Chromium, whose rows must appear and advance while the clients boot.
//!
//! Needs root, iproute2, tftp-hpa, atftp and curl; the browser test also Node.js with
//! tests/browser's npm packages and Debian's chromium (`cargo xtask setup` installs them).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use boot_common::wire::{MacAddr, dhcpv4};
use boot_tests::{
    BootRequest, Daemon, NetNs, PXE_SERVER_PORT, Probe, REPLY_TIMEOUT, Received, TempDir,
    broadcast_to_servers, run_command, unique_ifindex, unique_mac, veth, veth_with_index,
};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

/// xdpboot's address on the LAN.
const BOOT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const HTTP_PORT: u16 = 8080;
/// The embedded default's admin address, in the boot namespace.
const ADMIN: &str = "http://127.0.0.1:9180";
/// The files the clients fetch, and their sizes.
const FILES: &[(&str, usize)] = &[
    ("undionly.kpxe", 40_000),
    ("ipxe-amd64.efi", 48_000),
    ("vmlinuz", 300_000),
    ("initrd.img", 100_000),
];
/// How long the admin side may take to show what a client just did.
const SHOW_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command (curl, tftp) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

fn size_of(name: &str) -> u64 {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, len)| *len as u64)
        .expect("a file of FILES")
}

/// One provisioning LAN: xdpboot (198.18.0.1) and `count` clients (198.18.0.10, .11, …) on a
/// bridge, each client in its own namespace with the MAC it boots with. Fields drop in order:
/// the daemon first, then the clients, namespaces and files.
struct Lab {
    daemon: Daemon,
    clients: Vec<Client>,
    boot: NetNs,
    _lan: NetNs,
    _dir: TempDir,
}

/// A simulated machine: its namespace, MAC and address, and a DHCP probe on port 68.
struct Client {
    name: String,
    mac: MacAddr,
    ip: Ipv4Addr,
    probe: Probe,
    ns: NetNs,
}

impl Lab {
    /// Builds the LAN and starts `xdpboot run ARGS` (e.g. `--backend xdp`), waiting until it
    /// serves and its admin listener answers.
    fn start(count: u8, args: &[&str]) -> Result<Lab> {
        let dir = TempDir::new("observe")?;
        let config = write_boot_files(&dir, FILES)?;
        let lan = NetNs::new("lan")?;
        let boot = NetNs::new("boot")?;
        lan.add_bridge("br0")?;
        veth_with_index(&boot, "eth0", Some(unique_ifindex()), &lan, "boot")?;
        lan.attach("boot", "br0")?;
        boot.add_address("eth0", &format!("{BOOT}/24"))?;
        let mut clients = Vec::new();
        for i in 0..count {
            let ns = NetNs::new("node")?;
            let port = format!("n{i}");
            veth(&lan, &port, &ns, "eth0")?;
            lan.attach(&port, "br0")?;
            let mac = unique_mac();
            ns.ip(&format!("link set eth0 address {mac}"))?;
            let ip = Ipv4Addr::new(198, 18, 0, 10 + i);
            ns.add_address("eth0", &format!("{ip}/24"))?;
            let probe = Probe::client(&ns, "eth0")?;
            clients.push(Client {
                name: format!("node{i}"),
                mac,
                ip,
                probe,
                ns,
            });
        }
        let daemon =
            Daemon::start_serving(&boot, &["eth0"], &config, dir.join("xdpboot.log"), args)?;
        let lab = Lab {
            daemon,
            clients,
            boot,
            _lan: lan,
            _dir: dir,
        };
        wait_for_admin(&lab.boot, &lab.daemon)?;
        Ok(lab)
    }

    /// `GET ADMIN<path>` from inside the boot namespace.
    fn admin(&self, path: &str) -> Result<String> {
        admin(&self.boot, path)
    }

    /// `/api/nodes` once `ready` holds for it.
    fn nodes_when(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + SHOW_TIMEOUT;
        loop {
            let nodes: Value = serde_json::from_str(&self.admin("/api/nodes")?)?;
            if ready(&nodes) {
                return Ok(nodes);
            }
            if Instant::now() >= deadline {
                bail!("/api/nodes did not show {what} within {SHOW_TIMEOUT:?}: {nodes:#}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes `files` (name, size) into `dir/root` and a config serving them (TFTP and HTTP from
/// that root, the kernel `vmlinuz`, the initrd `initrd.img`, a per-node overlay naming the
/// MAC); returns the config's path.
fn write_boot_files(dir: &TempDir, files: &[(&str, usize)]) -> Result<PathBuf> {
    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    for (name, len) in files {
        let bytes: Vec<u8> = (0..*len).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join(name), bytes)?;
    }
    let config = dir.join("xdpboot.toml");
    std::fs::write(
        &config,
        format!(
            "[tftp]\nroot = \"{root}\"\n\n[http]\nroot = \"{root}\"\nport = {HTTP_PORT}\n\
             https_port = 0\n\n[boot]\nkernel = \"vmlinuz\"\ninitrds = [\"initrd.img\"]\n\
             cmdline = \"console=ttyS0\"\nsecret_file = \"{secret}\"\n\n[[overlay]]\n\
             path = \"etc/xdpboot-mac\"\ncontent = \"{{{{mac}}}}\\n\"\n",
            root = root.display(),
            secret = dir.join("url-secret").display(),
        ),
    )?;
    Ok(config)
}

/// `GET ADMIN<path>` from inside `ns`.
fn admin(ns: &NetNs, path: &str) -> Result<String> {
    let url = format!("{ADMIN}{path}");
    ns.exec(
        Path::new("curl"),
        &["-sS", "--fail", "--max-time", "5", &url],
    )
}

/// Waits until the daemon's admin listener answers in `ns`.
fn wait_for_admin(ns: &NetNs, daemon: &Daemon) -> Result<()> {
    let deadline = Instant::now() + SHOW_TIMEOUT;
    while admin(ns, "/metrics").is_err() {
        ensure!(
            Instant::now() < deadline,
            "the admin listener did not answer at {ADMIN} within {SHOW_TIMEOUT:?}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A node's row in `/api/nodes`.
fn row<'a>(nodes: &'a Value, client: &Client) -> Option<&'a Value> {
    let mac = client.mac.to_string();
    nodes["nodes"].as_array()?.iter().find(|n| n["mac"] == mac)
}

/// The stage a node's row shows; `"none"` for a row without one, `""` for no row.
fn stage_of(nodes: &Value, client: &Client) -> String {
    match row(nodes, client) {
        Some(node) => node["stage"].as_str().unwrap_or("none").to_owned(),
        None => String::new(),
    }
}

/// Which TFTP client a simulated ROM uses.
#[derive(Clone, Copy)]
enum Tftp {
    Hpa,
    Atftp,
}

/// What a client boots as, and how far it got.
struct Boot<'a> {
    client: &'a Client,
    /// DHCP option 93: 0 BIOS, 7 UEFI x64 (PXE, then 4011), 11 UEFI ARM64, 16 UEFI HTTP.
    arch: u16,
    tftp: Tftp,
    /// From the script: the kernel, initrd and overlay URLs.
    urls: Vec<(String, String)>,
}

impl<'a> Boot<'a> {
    fn new(client: &'a Client, arch: u16, tftp: Tftp) -> Boot<'a> {
        Boot {
            client,
            arch,
            tftp,
            urls: Vec::new(),
        }
    }

    fn request(&self, ipxe: bool) -> BootRequest {
        let base = if self.arch == 16 {
            BootRequest::http(self.arch)
        } else {
            BootRequest::pxe(self.arch)
        };
        let request = BootRequest {
            mac: self.client.mac,
            ..base
        };
        if ipxe { request.ipxe() } else { request }
    }

    /// Broadcasts a DISCOVER and returns xdpboot's proxy offer, if one comes.
    fn discover(&self, ipxe: bool) -> Result<Option<(BootRequest, Received)>> {
        let request = self.request(ipxe);
        let replies =
            self.client
                .probe
                .exchange(&request, broadcast_to_servers(), REPLY_TIMEOUT, |r| {
                    !r.is_empty()
                })?;
        Ok(replies.into_iter().next().map(|reply| (request, reply)))
    }

    fn offer(&self, ipxe: bool) -> Result<Received> {
        self.discover(ipxe)?
            .map(|(_, reply)| reply)
            .with_context(|| format!("{}: no proxy offer", self.client.name))
    }

    /// Runs one stage of the boot.
    fn step(&mut self, stage: &str) -> Result<()> {
        let client = self.client;
        match stage {
            "dhcp" if self.arch == 7 => {
                // UEFI PXE: the offer has no option 43, so the firmware asks 4011 from its
                // address; that is how xdpboot learns the address exactly.
                let (discover, _) = self.discover(false)?.context("no proxy offer")?;
                let request = discover.request_to(BOOT, client.ip);
                let acks = client.probe.exchange(
                    &request,
                    SocketAddrV4::new(BOOT, PXE_SERVER_PORT),
                    REPLY_TIMEOUT,
                    |r| !r.is_empty(),
                )?;
                ensure!(acks.len() == 1, "{}: expected one 4011 ACK", client.name);
            }
            "dhcp" => {
                self.offer(false)?;
            }
            "unanswered" => {
                ensure!(
                    self.discover(false)?.is_none(),
                    "{}: answered, but its loader is missing",
                    client.name
                );
            }
            "loader" if self.arch == 16 => {
                let url = self.offer(false)?.file();
                self.curl(&url)?;
            }
            "loader" => {
                let file = self.offer(false)?.file();
                self.tftp_get(&file)?;
            }
            "script" => {
                let url = self.offer(true)?.file();
                let script = self.curl(&url)?;
                self.urls = script_urls(&script);
                ensure!(
                    self.urls.len() == 3,
                    "kernel, initrd, overlay in:\n{script}"
                );
            }
            "kernel" | "initrd" | "overlay" => {
                let url = self
                    .urls
                    .iter()
                    .find(|(what, _)| what == stage)
                    .map(|(_, url)| url.clone())
                    .with_context(|| format!("no {stage} URL: fetch the script first"))?;
                self.curl(&url)?;
            }
            other => bail!("unknown stage {other}"),
        }
        Ok(())
    }

    fn local(&self, name: &str) -> PathBuf {
        let name = name.rsplit('/').next().unwrap_or(name);
        PathBuf::from(format!(
            "/tmp/{}-{}-{name}",
            std::process::id(),
            self.client.name
        ))
    }

    /// Fetches `file` from xdpboot over TFTP and checks its size.
    fn tftp_get(&self, file: &str) -> Result<()> {
        let local = self.local(file);
        let local_text = local.display().to_string();
        let server = BOOT.to_string();
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.client.ns.name()]);
        match self.tftp {
            Tftp::Hpa => command.args([
                "tftp",
                "-m",
                "binary",
                &server,
                "-c",
                "get",
                file,
                &local_text,
            ]),
            Tftp::Atftp => command.args(["atftp", "-g", "-r", file, "-l", &local_text, &server]),
        };
        let result = run_command(&mut command, COMMAND_TIMEOUT);
        let got = std::fs::metadata(&local).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&local);
        result?;
        ensure!(got == size_of(file), "tftp {file}: got {got} bytes");
        Ok(())
    }

    /// `GET url` from the client; returns the body as text (lossy).
    fn curl(&self, url: &str) -> Result<String> {
        let local = self.local("curl-body");
        let local_text = local.display().to_string();
        let result = self.client.ns.exec(
            Path::new("curl"),
            &["-sS", "--fail", "--max-time", "10", "-o", &local_text, url],
        );
        let body = std::fs::read(&local).unwrap_or_default();
        let _ = std::fs::remove_file(&local);
        result.with_context(|| format!("{}: GET {url}", self.client.name))?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Runs the stages up to and including `last`.
    fn until(&mut self, last: &str) -> Result<()> {
        for stage in ["dhcp", "loader", "script", "kernel", "initrd", "overlay"] {
            self.step(stage)?;
            if stage == last {
                break;
            }
        }
        Ok(())
    }
}

/// The kernel, initrd and overlay URLs of a rendered `ipxe/boot.ipxe`:
/// `kernel --name kernel URL …` and `initrd --name NAME URL …`.
fn script_urls(script: &str) -> Vec<(String, String)> {
    script
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["kernel", "--name", _, url, ..] => Some(("kernel", *url)),
                ["initrd", "--name", "overlay.cpio", url, ..] => Some(("overlay", *url)),
                ["initrd", "--name", _, url, ..] => Some(("initrd", *url)),
                _ => None,
            }
        })
        .map(|(what, url)| (what.to_owned(), url.to_owned()))
        .collect()
}

/// The value of the sample `name{labels}` (exactly as written) in an OpenMetrics text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

fn assert_sample(metrics: &str, series: &str, expected: f64) {
    assert_eq!(
        sample(metrics, series),
        Some(expected),
        "{series} in /metrics:\n{metrics}"
    );
}

#[test]
fn metrics_and_the_node_table_follow_simulated_boots() -> Result<()> {
    let lab = Lab::start(3, &["--backend", "xdp", "--steer", "tee"])?;
    let [bios, uefi, arm] = [&lab.clients[0], &lab.clients[1], &lab.clients[2]];
    // A BIOS PXE ROM that goes all the way: TFTP by tftp-hpa, then iPXE over HTTP.
    Boot::new(bios, 0, Tftp::Hpa).until("overlay")?;
    // A UEFI PXE client (via port 4011, atftp) that stops after the kernel.
    Boot::new(uefi, 7, Tftp::Atftp).until("kernel")?;
    // An ARM64 client whose loader is missing from the TFTP root: not answered.
    Boot::new(arm, 11, Tftp::Hpa).step("unanswered")?;

    let nodes = lab.nodes_when("the three nodes where they stopped", |nodes| {
        stage_of(nodes, bios) == "overlay"
            && stage_of(nodes, uefi) == "kernel"
            && stage_of(nodes, arm) == "none"
    })?;
    let node = row(&nodes, bios).expect("a row");
    assert_eq!(node["firmware"], "bios-pxe", "{node:#}");
    assert_eq!(node["ipxe"], true, "{node:#}");
    assert_eq!(node["arch"], "bios", "{node:#}");
    assert_eq!(node["interface"], "eth0", "{node:#}");
    assert_eq!(node["ip"], bios.ip.to_string(), "{node:#}");
    let stages: Vec<&str> = node["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .filter_map(|s| s["stage"].as_str())
        .collect();
    assert_eq!(
        stages,
        ["dhcp", "loader", "script", "kernel", "initrd", "overlay"]
    );
    let fetched = node["bytes"].as_u64().expect("bytes");
    let files = size_of("undionly.kpxe") + size_of("vmlinuz") + size_of("initrd.img");
    assert!(
        fetched > files,
        "{fetched} bytes: the files plus script and overlay"
    );
    let node = row(&nodes, uefi).expect("a row");
    assert_eq!(node["firmware"], "uefi-pxe", "{node:#}");
    assert_eq!(node["ip"], uefi.ip.to_string(), "{node:#}");
    let node = row(&nodes, arm).expect("a row");
    assert_eq!(node["arch"], "uefi-arm64", "{node:#}");
    let error = node["last_error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("loader_missing"), "{node:#}");

    let metrics = lab.admin("/metrics")?;
    assert!(metrics.ends_with("# EOF\n"));
    for (series, value) in [
        (
            "xdpboot_dhcp_replies_total{kind=\"proxy_offer\",arch=\"bios\",firmware=\"bios-pxe\",interface=\"eth0\"}",
            2.0, // the DISCOVER, and the loader step's own
        ),
        (
            "xdpboot_dhcp_replies_total{kind=\"proxy_offer\",arch=\"bios\",firmware=\"ipxe\",interface=\"eth0\"}",
            1.0,
        ),
        (
            "xdpboot_dhcp_replies_total{kind=\"proxy_ack\",arch=\"uefi-x64\",firmware=\"uefi-pxe\",interface=\"eth0\"}",
            1.0,
        ),
        (
            "xdpboot_dhcp_ignored_total{reason=\"loader_missing\",interface=\"eth0\"}",
            1.0,
        ),
        ("xdpboot_dhcp_decision_seconds_count{port=\"4011\"}", 1.0),
        ("xdpboot_tftp_transfers_total{outcome=\"complete\"}", 2.0),
        (
            "xdpboot_tftp_sent_bytes_total",
            (size_of("undionly.kpxe") + size_of("ipxe-amd64.efi")) as f64,
        ),
        ("xdpboot_tftp_transfer_duration_seconds_count", 2.0),
        (
            "xdpboot_http_requests_total{route=\"script\",status=\"200\"}",
            2.0,
        ),
        (
            "xdpboot_http_requests_total{route=\"kernel\",status=\"200\"}",
            2.0,
        ),
        (
            "xdpboot_http_requests_total{route=\"overlay\",status=\"200\"}",
            1.0,
        ),
        (
            "xdpboot_http_sent_bytes_total{route=\"kernel\"}",
            2.0 * size_of("vmlinuz") as f64,
        ),
        (
            "xdpboot_http_sent_bytes_total{route=\"initrd\"}",
            size_of("initrd.img") as f64,
        ),
        ("xdpboot_boot_stage_seconds_count{stage=\"kernel\"}", 2.0),
        ("xdpboot_boot_stage_seconds_count{stage=\"overlay\"}", 1.0),
        // The BIOS ROM's TFTP is tied to it by the kernel's ARP entry, the UEFI client's by
        // the address its 4011 REQUEST came from.
        (
            "xdpboot_node_events_total{protocol=\"tftp\",attribution=\"neighbour\"}",
            1.0,
        ),
        (
            "xdpboot_node_events_total{protocol=\"tftp\",attribution=\"exact\"}",
            1.0,
        ),
        ("xdpboot_nodes{stage=\"overlay\"}", 1.0),
        ("xdpboot_nodes{stage=\"kernel\"}", 1.0),
        ("xdpboot_nodes{stage=\"unanswered\"}", 1.0),
    ] {
        assert_sample(&metrics, series, value);
    }
    // The XDP program's own counters, read from its per-CPU map at scrape time.
    let teed = sample(
        &metrics,
        "xdpboot_xdp_frames_total{interface=\"eth0\",verdict=\"teed\"}",
    );
    assert!(teed.is_some_and(|n| n >= 6.0), "teed {teed:?}:\n{metrics}");
    let taken = sample(
        &metrics,
        "xdpboot_xdp_frames_total{interface=\"eth0\",verdict=\"taken\"}",
    );
    assert_eq!(taken, Some(1.0), "the 4011 REQUEST:\n{metrics}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The status page in headless Chromium

/// Where the browser test's tools live, checked (and the npm packages installed) first: this
/// test fails with the fix to apply, never skips.
fn browser_tools() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    assert!(
        on_path("node"),
        "`node` (Node.js 20 or newer) not found: the status-page test drives Chromium with \
         playwright-core; run `cargo xtask setup`"
    );
    assert!(
        Path::new(&chromium()).is_file(),
        "{} not found: install Debian's chromium (`cargo xtask setup` does)",
        chromium()
    );
    if !dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        eprintln!("tests/browser: installing its npm packages (`npm ci`; no browser download)");
        assert!(
            on_path("npm"),
            "`npm` not found: install Node.js with npm, then `cargo xtask setup`"
        );
        let result = run_command(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
            Duration::from_secs(300),
        );
        if let Err(e) = result {
            panic!(
                "`npm ci` in {} failed: {e:#}; run `cargo xtask setup`",
                dir.display()
            );
        }
    }
    dir
}

/// Held by each test that drives Chromium: two browsers at once on a small machine would
/// measure each other, not the page.
fn one_browser_at_a_time() -> MutexGuard<'static, ()> {
    static BROWSER: Mutex<()> = Mutex::new(());
    BROWSER.lock().unwrap_or_else(PoisonError::into_inner)
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

/// `tests/browser/status.mjs` in headless Chromium, in the boot namespace, taking one command
/// a line. Killed on drop.
struct StatusPage {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
    _profile: TempDir,
}

impl StatusPage {
    /// Longest wait for one answer (the script's own step timeout is 20 s).
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(40);

    fn start(ns: &NetNs, url: &str) -> Result<StatusPage> {
        let dir = browser_tools();
        let profile = TempDir::new("chromium")?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns.name(), "node"])
            .arg(dir.join("status.mjs"))
            .arg(url)
            .arg(profile.path())
            .env("CHROMIUM", chromium())
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec. It
        // takes the browser down should this test process die without dropping the guard.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().context("starting node status.mjs")?;
        let stdin = child.stdin.take().context("the driver's stdin")?;
        let stdout = child.stdout.take().context("the driver's stdout")?;
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(StatusPage {
            child,
            stdin,
            answers,
            _profile: profile,
        })
    }

    /// Sends one command and returns its `ok` answer.
    fn command(&mut self, line: &str) -> Result<String> {
        writeln!(self.stdin, "{line}").context("writing to the browser driver")?;
        self.stdin.flush()?;
        let answer = self
            .answers
            .recv_timeout(StatusPage::ANSWER_TIMEOUT)
            .with_context(|| {
                format!(
                    "no answer to `{line}` within {:?}",
                    StatusPage::ANSWER_TIMEOUT
                )
            })?;
        match answer.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_owned()),
            None => bail!("`{line}`: {answer}"),
        }
    }

    /// Waits until the page shows `client` at `stage`.
    fn expect(&mut self, client: &Client, stage: &str) -> Result<()> {
        self.command(&format!("expect {} {stage}", client.mac))?;
        Ok(())
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_status_page_shows_nodes_appear_and_advance_in_headless_chromium() -> Result<()> {
    let _browser = one_browser_at_a_time();
    let lab = Lab::start(5, &["--backend", "udp"])?;
    let mut page = StatusPage::start(&lab.boot, &format!("{ADMIN}/status"))?;
    assert_eq!(
        page.command("open")?,
        "live",
        "the page follows /status/events"
    );

    let c = &lab.clients;
    // Each step is seen on the page before the next one starts: rows appear, then advance.
    let mut bios = Boot::new(&c[0], 0, Tftp::Hpa);
    for stage in ["dhcp", "loader", "script", "kernel", "initrd", "overlay"] {
        bios.step(stage)?;
        page.expect(&c[0], stage)?;
    }
    let mut uefi = Boot::new(&c[1], 7, Tftp::Atftp);
    for stage in ["dhcp", "loader", "script", "kernel"] {
        uefi.step(stage)?;
        page.expect(&c[1], stage)?;
    }
    let mut http_boot = Boot::new(&c[2], 16, Tftp::Hpa);
    http_boot.step("dhcp")?;
    page.expect(&c[2], "dhcp")?;
    http_boot.step("loader")?;
    page.expect(&c[2], "loader")?;
    Boot::new(&c[3], 0, Tftp::Atftp).step("dhcp")?;
    page.expect(&c[3], "dhcp")?;
    Boot::new(&c[4], 11, Tftp::Hpa).step("unanswered")?;
    page.expect(&c[4], "none")?;

    // A picture of the page with nodes at every kind of stage (README, "Observing").
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser");
    std::fs::create_dir_all(&target)?;
    let shot = target.join("status.png");
    page.command(&format!("screenshot {}", shot.display()))?;
    let png = std::fs::read(&shot)?;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    if let Some(copy) = std::env::var_os("XDPBOOT_STATUS_SCREENSHOT") {
        std::fs::copy(&shot, &copy)?;
    }
    page.command("quit")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A storm of 10,000 nodes on the status page
//
// ```text
//   boot  (xdpboot --backend udp, eth0 198.18.0.1/24, admin 127.0.0.1:9180, Chromium) ─┐
//   storm (eth0 198.18.0.2/24; 198.18.64.0/18 local: one address per node)            ─┘ veth
// ```
// The generator is the test's own: one thread per node in flight, each a blocking PXE ROM and
// then iPXE (DISCOVER, port-4011 REQUEST, TFTP, iPXE's DISCOVER, HTTP script and overlay), with
// the wire layer's requests ([`BootRequest`]) and replies read through `boot_common`'s DHCP view.
// DHCP goes out of the storm namespace's own address (the ROM has none yet; the MAC is in
// chaddr); the REQUEST names the node's address in ciaddr, and TFTP and HTTP leave from it.
// The boot namespace routes the nodes' network through 198.18.0.2, so xdpboot sees them as
// nodes behind a router: its neighbour table knows none of them, and every fetch is tied to
// its node by the address the REQUEST taught it, or by the MAC in the URL.

/// Simulated nodes: the shipped `[admin] max_nodes`, so the table is full but nothing is evicted.
const STORM_NODES: usize = 10_000;
/// Nodes booting at once, each on a thread of its own.
const STORM_WORKERS: usize = 32;
/// Longest a storm phase may take.
const STORM_TIMEOUT: Duration = Duration::from_secs(420);
/// Nodes a second that go on from their offer in the second phase: the chain takes 40 s, so
/// the page watches the stages change (the first phase, the wave of DISCOVERs, is unpaced).
const CHAIN_RATE: u32 = 250;
/// The nodes' addresses, one each from the second: local to the storm namespace (a `local`
/// route, as for AnyIP) and routed to it from the boot namespace.
const STORM_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 0);
const STORM_NET_PREFIX: u8 = 18;
/// The storm namespace's address on the boot LAN: the nodes' router.
const STORM_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The files of the storm: small, so the storm is about many nodes, not many bytes.
const STORM_FILES: &[(&str, usize)] = &[
    ("undionly.kpxe", 4096),
    ("ipxe-amd64.efi", 4096),
    ("vmlinuz", 65_536),
    ("initrd.img", 32_768),
];
/// A DHCP exchange waits this long for its reply before sending again, this many times.
const DHCP_WAIT: Duration = Duration::from_secs(2);
const DHCP_TRIES: u32 = 4;
/// A TFTP packet waits this long for its answer before sending again, this many times.
const TFTP_WAIT: Duration = Duration::from_secs(2);
const TFTP_TRIES: u32 = 4;
/// RFC 1350's block size: the storm's RRQ asks for no option.
const TFTP_BLOCK: usize = 512;
/// One HTTP request's connect, send and receive, each.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest HTTP response the storm reads.
const MAX_RESPONSE: u64 = 1 << 20;
/// Errors the storm keeps word for word (it counts all).
const MAX_STORM_ERRORS: usize = 10;
/// How long the page is watched while updates stream in: the issue's "a minute of updates".
const WATCH_FOR: Duration = Duration::from_secs(60);
/// DISCOVERs per second after the storm while the minute is not over, so updates keep coming.
const DRIZZLE_PER_SECOND: u32 = 20;
/// The page's bounds (issue 17): first render, longest task on the main thread while updates
/// stream in, and growth of its JavaScript heap (after a collection) over the minute.
const FIRST_RENDER_LIMIT_MS: f64 = 1000.0;
const LONG_TASK_LIMIT_MS: f64 = 200.0;
const HEAP_GROWTH_LIMIT: f64 = 8.0 * 1024.0 * 1024.0;
/// Updates the page must receive over the minute: the event stream sends at most four a second.
const MIN_UPDATES: f64 = 60.0;

/// How far a node of the storm goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Plan {
    /// UEFI ARM64, whose loader is missing from the TFTP root: not answered, a failure.
    Unanswered,
    /// A BIOS ROM that gets its offer and is heard from no more.
    BiosOffer,
    /// UEFI x64 PXE: the offer and the port-4011 ACK, no more.
    Ack,
    /// … and the loader over TFTP.
    Loader,
    /// … and iPXE's DHCP and its script.
    Script,
    /// … and an overlay URL with a forged signature: refused, a failure.
    ForgedOverlay,
    /// … and its overlay: the boot is complete.
    Overlay,
    /// … with the kernel and the initrd before the overlay.
    Everything,
}

impl Plan {
    /// Node `i`'s plan: the same shares in every hundred nodes.
    fn of(i: usize) -> Plan {
        match i % 100 {
            0 => Plan::Unanswered,
            1..=19 => Plan::BiosOffer,
            20..=39 => Plan::Ack,
            40..=59 => Plan::Loader,
            60..=69 => Plan::Script,
            70..=71 => Plan::ForgedOverlay,
            72..=73 => Plan::Everything,
            _ => Plan::Overlay,
        }
    }

    /// The stage `/api/summary` must count the node under at the end.
    fn stage(self) -> &'static str {
        match self {
            Plan::Unanswered => "unanswered",
            Plan::BiosOffer | Plan::Ack => "dhcp",
            Plan::Loader => "loader",
            Plan::Script | Plan::ForgedOverlay => "script",
            Plan::Overlay | Plan::Everything => "overlay",
        }
    }

    /// Option 93.
    fn arch(self) -> u16 {
        match self {
            Plan::Unanswered => 11,
            Plan::BiosOffer => 0,
            _ => 7,
        }
    }
}

/// Node `i`'s MAC and address.
fn storm_mac(i: usize) -> MacAddr {
    let n = (i as u32).to_be_bytes();
    MacAddr([0x02, 0x5e, 0x17, n[1], n[2], n[3]])
}

fn storm_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(STORM_NET) + 1 + i as u32)
}

/// The boot LAN of the storm: xdpboot in `boot`, the generator's sockets in `storm`.
struct StormLab {
    daemon: Daemon,
    storm: NetNs,
    boot: NetNs,
    _dir: TempDir,
}

impl StormLab {
    fn start() -> Result<StormLab> {
        let dir = TempDir::new("storm")?;
        let config = write_boot_files(&dir, STORM_FILES)?;
        let boot = NetNs::new("boot")?;
        let storm = NetNs::new("storm")?;
        veth_with_index(&boot, "eth0", Some(unique_ifindex()), &storm, "eth0")?;
        boot.add_address("eth0", &format!("{BOOT}/24"))?;
        storm.add_address("eth0", &format!("{STORM_GATEWAY}/24"))?;
        storm.ip(&format!(
            "route add local {STORM_NET}/{STORM_NET_PREFIX} dev lo"
        ))?;
        boot.ip(&format!(
            "route add {STORM_NET}/{STORM_NET_PREFIX} via {STORM_GATEWAY}"
        ))?;
        let daemon = Daemon::start_serving(
            &boot,
            &["eth0"],
            &config,
            dir.join("xdpboot.log"),
            &["--backend", "udp"],
        )?;
        wait_for_admin(&boot, &daemon)?;
        Ok(StormLab {
            daemon,
            storm,
            boot,
            _dir: dir,
        })
    }

    fn summary(&self) -> Result<Value> {
        Ok(serde_json::from_str(&admin(&self.boot, "/api/summary")?)?)
    }

    /// `/api/summary` once `ready` holds for it, polled until `timeout`.
    fn summary_when(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let summary = self.summary()?;
            if ready(&summary) {
                return Ok(summary);
            }
            if Instant::now() >= deadline {
                let log = self.daemon.log();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                bail!(
                    "/api/summary did not show {what} within {timeout:?}: {}\nthe daemon's log ends:\n{}",
                    compact(&summary),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The summary once the table has stopped changing (two reads a second apart agree).
    fn quiet_summary(&self) -> Result<Value> {
        let deadline = Instant::now() + SHOW_TIMEOUT;
        let mut last = self.summary()?;
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.summary()?;
            if now["version"] == last["version"] {
                return Ok(now);
            }
            ensure!(
                Instant::now() < deadline,
                "the node table kept changing after the storm"
            );
            last = now;
        }
    }
}

/// A summary without its history, for messages.
fn compact(summary: &Value) -> String {
    let mut summary = summary.clone();
    if let Some(object) = summary.as_object_mut() {
        object.remove("history");
    }
    summary.to_string()
}

/// The generator's side of the storm: one DHCP socket that every node thread sends through,
/// and a receiver that hands each reply to the thread waiting for its xid.
struct Storm {
    dhcp: UdpSocket,
    waiting: Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>,
    /// Nodes through their phase, and the ones that failed it.
    done: AtomicUsize,
    failed: AtomicUsize,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Storm {
    fn new(ns: &NetNs) -> Result<Storm> {
        let dhcp = ns.run(|| {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_broadcast(true)?;
            socket.bind_device(Some(b"eth0"))?;
            socket.set_recv_buffer_size(4 << 20)?;
            socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())?;
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
            Ok(UdpSocket::from(socket))
        })?;
        Ok(Storm {
            dhcp,
            waiting: Mutex::new(HashMap::new()),
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            errors: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        })
    }

    /// Hands replies to their waiting threads until [`Storm::stop`] is set.
    fn receive(&self) {
        let mut buf = [0u8; 1500];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok(len) = self.dhcp.recv(&mut buf) else {
                continue; // timed out: look at the stop flag
            };
            let Ok(reply) = dhcpv4::Packet::new_checked(&buf[..len]) else {
                continue;
            };
            if reply.op() != dhcpv4::BOOTREPLY {
                continue;
            }
            let waiter = self
                .waiting
                .lock()
                .expect("no thread panics holding the table")
                .remove(&reply.xid());
            if let Some(waiter) = waiter {
                let _ = waiter.send(buf[..len].to_vec());
            }
        }
    }

    fn send(&self, request: &BootRequest, to: SocketAddrV4) -> Result<()> {
        self.dhcp.send_to(&request.encode(), to)?;
        Ok(())
    }

    /// Sends `request` to `to` until its reply comes ([`DHCP_TRIES`] times at most).
    fn exchange(&self, request: &BootRequest, to: SocketAddrV4) -> Result<Vec<u8>> {
        let bytes = request.encode();
        for _ in 0..DHCP_TRIES {
            let (tx, rx) = mpsc::channel();
            self.waiting
                .lock()
                .expect("no thread panics holding the table")
                .insert(request.xid, tx);
            self.dhcp.send_to(&bytes, to)?;
            if let Ok(reply) = rx.recv_timeout(DHCP_WAIT) {
                return Ok(reply);
            }
        }
        self.waiting
            .lock()
            .expect("no thread panics holding the table")
            .remove(&request.xid);
        bail!(
            "no reply to {:?} from {to} after {DHCP_TRIES} tries",
            request.message_type
        )
    }

    /// Runs `step` for nodes `0..STORM_NODES` on [`STORM_WORKERS`] threads in `ns`, while a
    /// receiver hands out DHCP replies; node `i` starts no earlier than `i / rate` seconds in
    /// when there is a `rate`.
    fn run(
        &self,
        ns: &NetNs,
        rate: Option<u32>,
        step: fn(&Storm, usize) -> Result<()>,
    ) -> Result<()> {
        self.done.store(0, Ordering::Relaxed);
        self.stop.store(false, Ordering::Relaxed);
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let deadline = started + STORM_TIMEOUT;
        ns.run(|| {
            std::thread::scope(|scope| {
                let receiver = scope.spawn(|| self.receive());
                let workers: Vec<_> = (0..STORM_WORKERS)
                    .map(|_| {
                        scope.spawn(|| {
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= STORM_NODES || Instant::now() > deadline {
                                    break;
                                }
                                if let Some(rate) = rate {
                                    let at = started + Duration::from_secs(i as u64) / rate;
                                    std::thread::sleep(
                                        at.saturating_duration_since(Instant::now()),
                                    );
                                }
                                if let Err(e) = step(self, i) {
                                    self.failed.fetch_add(1, Ordering::Relaxed);
                                    let mut errors =
                                        self.errors.lock().expect("no thread panics holding it");
                                    if errors.len() < MAX_STORM_ERRORS {
                                        errors.push(format!("node {i} ({:?}): {e:#}", Plan::of(i)));
                                    }
                                }
                                self.done.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                    })
                    .collect();
                for worker in workers {
                    let _ = worker.join();
                }
                self.stop.store(true, Ordering::Relaxed);
                let _ = receiver.join();
            });
            Ok(())
        })?;
        let failed = self.failed.load(Ordering::Relaxed);
        let errors = self.errors.lock().expect("no thread panics holding it");
        ensure!(
            failed == 0,
            "{failed} nodes of the storm failed, among them:\n{}",
            errors.join("\n")
        );
        ensure!(
            self.done.load(Ordering::Relaxed) == STORM_NODES,
            "the storm phase did not finish within {STORM_TIMEOUT:?}"
        );
        Ok(())
    }
}

/// The first phase: every node's first DISCOVER, answered with a proxy offer (but the ARM64
/// nodes', whose loader is missing: they are sent and not answered).
fn discover(storm: &Storm, i: usize) -> Result<()> {
    let plan = Plan::of(i);
    let request = BootRequest {
        mac: storm_mac(i),
        ..BootRequest::pxe(plan.arch())
    };
    let to = broadcast_to_servers();
    if plan == Plan::Unanswered {
        return storm.send(&request, to);
    }
    let offer = storm.exchange(&request, to)?;
    ensure!(
        !boot_file(&offer)?.is_empty(),
        "an offer without a boot file"
    );
    Ok(())
}

/// The second phase: the UEFI nodes go on as their plan says (the others are done).
fn boot_on(storm: &Storm, i: usize) -> Result<()> {
    let plan = Plan::of(i);
    if plan < Plan::Ack {
        return Ok(());
    }
    let (mac, ip) = (storm_mac(i), storm_ip(i));
    // The UEFI PXE client asks port 4011, from its address (PXE 2.1 §2.2.5).
    let request = BootRequest {
        mac,
        ..BootRequest::pxe(plan.arch())
    }
    .request_to(BOOT, ip);
    let ack = storm.exchange(&request, SocketAddrV4::new(BOOT, PXE_SERVER_PORT))?;
    let loader = boot_file(&ack)?;
    if plan == Plan::Ack {
        return Ok(());
    }
    let got = tftp_get(ip, &loader)?;
    let want = STORM_FILES
        .iter()
        .find(|(n, _)| *n == loader)
        .map(|(_, l)| *l);
    ensure!(Some(got) == want, "tftp {loader}: {got} bytes");
    if plan == Plan::Loader {
        return Ok(());
    }
    // iPXE's own DHCP: the offer names the script.
    let ipxe = BootRequest {
        mac,
        ..BootRequest::pxe(plan.arch())
    }
    .ipxe();
    let offer = storm.exchange(&ipxe, broadcast_to_servers())?;
    let script = http_ok(ip, &boot_file(&offer)?)?;
    let urls = script_urls(&String::from_utf8_lossy(&script));
    if plan == Plan::Script {
        return Ok(());
    }
    let url = |what: &str| {
        urls.iter()
            .find(|(w, _)| w == what)
            .map(|(_, url)| url.clone())
            .with_context(|| format!("no {what} URL in the script"))
    };
    if plan == Plan::Everything {
        http_ok(ip, &url("kernel")?)?;
        http_ok(ip, &url("initrd")?)?;
    }
    let overlay = url("overlay")?;
    if plan == Plan::ForgedOverlay {
        let forged = overlay.replace("sig=", "sig=00");
        let (status, _) = http_get(ip, &forged)?;
        ensure!(status >= 400, "a forged overlay URL got {status}");
        return Ok(());
    }
    http_ok(ip, &overlay)?;
    Ok(())
}

/// The boot file a reply names.
fn boot_file(reply: &[u8]) -> Result<String> {
    let packet = dhcpv4::Packet::new_checked(reply).context("a DHCP reply")?;
    Ok(String::from_utf8_lossy(dhcpv4::until_nul(packet.file())).into_owned())
}

/// Fetches `file` from xdpboot over TFTP from `from` (RFC 1350, lockstep, no options);
/// returns its length.
fn tftp_get(from: Ipv4Addr, file: &str) -> Result<usize> {
    const RRQ: u16 = 1;
    const DATA: u16 = 3;
    const ACK: u16 = 4;
    const ERROR: u16 = 5;
    let socket = UdpSocket::bind(SocketAddrV4::new(from, 0))?;
    socket.set_read_timeout(Some(TFTP_WAIT))?;
    let mut to = std::net::SocketAddr::from(SocketAddrV4::new(BOOT, 69));
    let mut send = RRQ.to_be_bytes().to_vec();
    send.extend_from_slice(file.as_bytes());
    send.extend_from_slice(b"\0octet\0");
    let (mut block, mut got, mut tries, mut server) = (1u16, 0usize, 0, None);
    let mut buf = [0u8; 4 + TFTP_BLOCK];
    loop {
        socket.send_to(&send, to)?;
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                tries += 1;
                ensure!(
                    tries < TFTP_TRIES,
                    "tftp {file}: no answer after {tries} tries"
                );
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if server.is_some_and(|s| s != peer) || len < 4 {
            continue;
        }
        match u16::from_be_bytes([buf[0], buf[1]]) {
            ERROR => bail!(
                "tftp {file}: {}",
                String::from_utf8_lossy(dhcpv4::until_nul(&buf[4..len]))
            ),
            DATA if u16::from_be_bytes([buf[2], buf[3]]) == block => {
                server = Some(peer);
                to = peer;
                got += len - 4;
                send = [ACK.to_be_bytes(), block.to_be_bytes()].concat();
                if len - 4 < TFTP_BLOCK {
                    socket.send_to(&send, to)?;
                    return Ok(got);
                }
                block = block.wrapping_add(1);
                tries = 0;
            }
            // A duplicate: the ACK goes again at the top of the loop.
            _ => {}
        }
    }
}

/// `GET url` from `from`, expecting 200; the body.
fn http_ok(from: Ipv4Addr, url: &str) -> Result<Vec<u8>> {
    let (status, body) = http_get(from, url)?;
    ensure!(status == 200, "GET {url}: {status}");
    Ok(body)
}

/// `GET url` (`http://host:port/path`) over a connection of its own from `from`
/// (`Connection: close`): the status and the body.
fn http_get(from: Ipv4Addr, url: &str) -> Result<(u16, Vec<u8>)> {
    let rest = url.strip_prefix("http://").context("an http:// URL")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let server: SocketAddrV4 = authority
        .parse()
        .with_context(|| format!("{authority} in {url}"))?;
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddrV4::new(from, 0).into())?;
    socket.connect_timeout(&server.into(), HTTP_TIMEOUT)?;
    let mut stream = std::net::TcpStream::from(socket);
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut stream, MAX_RESPONSE),
        &mut response,
    )?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let body = &response[head_end + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// A chunked body's data (RFC 9112 §7.1).
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size line")?;
        let size = std::str::from_utf8(&body[..line_end])?
            .split(';')
            .next()
            .unwrap_or_default();
        let size = usize::from_str_radix(size.trim(), 16)?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(data);
        }
        ensure!(body.len() >= size + 2, "a chunk cut short");
        data.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// What `/api/summary` must say once every node of the storm got as far as its plan.
fn expected_summary() -> Vec<(&'static str, &'static str, u64)> {
    let count =
        |f: &dyn Fn(Plan) -> bool| (0..STORM_NODES).filter(|i| f(Plan::of(*i))).count() as u64;
    let mut expected: Vec<(&'static str, &'static str, u64)> = [
        "unanswered",
        "dhcp",
        "loader",
        "script",
        "kernel",
        "initrd",
        "overlay",
    ]
    .into_iter()
    .map(|stage| ("stages", stage, count(&|p| p.stage() == stage)))
    .collect();
    expected.extend([
        ("arch", "bios", count(&|p| p == Plan::BiosOffer)),
        ("arch", "uefi-x64", count(&|p| p >= Plan::Ack)),
        ("arch", "uefi-arm64", count(&|p| p == Plan::Unanswered)),
        ("firmware", "bios-pxe", count(&|p| p == Plan::BiosOffer)),
        ("firmware", "uefi-pxe", count(&|p| p != Plan::BiosOffer)),
        ("interface", "eth0", STORM_NODES as u64),
        (
            "failures",
            "loader_missing",
            count(&|p| p == Plan::Unanswered),
        ),
        (
            "failures",
            "http_overlay",
            count(&|p| p == Plan::ForgedOverlay),
        ),
        ("time_to_stage", "loader", count(&|p| p >= Plan::Loader)),
        ("time_to_stage", "script", count(&|p| p >= Plan::Script)),
        ("time_to_stage", "kernel", count(&|p| p == Plan::Everything)),
        ("time_to_stage", "overlay", count(&|p| p >= Plan::Overlay)),
    ]);
    expected
}

fn count_in(summary: &Value, field: &str, key: &str) -> u64 {
    let value = &summary[field][key];
    if field == "time_to_stage" {
        value["count"].as_u64().unwrap_or(0)
    } else {
        value.as_u64().unwrap_or(0)
    }
}

#[test]
fn a_storm_of_ten_thousand_nodes_stays_true_and_responsive_on_the_status_page() -> Result<()> {
    let _browser = one_browser_at_a_time();
    let lab = StormLab::start()?;
    let storm = Storm::new(&lab.storm)?;

    // The wave of first DISCOVERs: 10,000 rows.
    let started = Instant::now();
    storm.run(&lab.storm, None, discover)?;
    let waved = started.elapsed();
    lab.summary_when("every node of the storm", SHOW_TIMEOUT, |s| {
        s["total"] == STORM_NODES
    })?;

    // The page opens on a full table.
    let mut page = StatusPage::start(&lab.boot, &format!("{ADMIN}/status"))?;
    assert_eq!(
        page.command("open")?,
        "live",
        "the page follows /status/events"
    );
    let first_render: f64 = page.command("first-render")?.parse()?;
    assert!(
        first_render < FIRST_RENDER_LIMIT_MS,
        "first render at {STORM_NODES} nodes took {first_render} ms"
    );
    page.command("watch-start")?;
    let watching = Instant::now();

    // The rest of the chain while the page watches.
    let screenshot =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser/status-storm.png");
    std::fs::create_dir_all(screenshot.parent().expect("a directory"))?;
    storm.done.store(0, Ordering::Relaxed);
    let chain = std::thread::scope(|scope| -> Result<Duration> {
        let chain = scope.spawn(|| {
            let started = Instant::now();
            storm
                .run(&lab.storm, Some(CHAIN_RATE), boot_on)
                .map(|()| started.elapsed())
        });
        // Mid-storm: 60 % of the nodes are through.
        let deadline = Instant::now() + STORM_TIMEOUT;
        while storm.done.load(Ordering::Relaxed) < STORM_NODES * 6 / 10
            && !chain.is_finished()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        page.command(&format!("screenshot-view {}", screenshot.display()))?;
        chain.join().expect("the storm thread does not panic")
    })?;

    // Updates keep coming until the minute is over: BIOS ROMs asking again.
    storm.stop.store(false, Ordering::Relaxed);
    let drizzle = lab.storm.run(|| {
        let bios: Vec<usize> = (0..STORM_NODES)
            .filter(|i| Plan::of(*i) == Plan::BiosOffer)
            .collect();
        std::thread::scope(|scope| {
            scope.spawn(|| storm.receive());
            let mut sent = 0usize;
            let result = (|| {
                while watching.elapsed() < WATCH_FOR {
                    let i = bios[sent % bios.len()];
                    storm.exchange(
                        &BootRequest {
                            mac: storm_mac(i),
                            ..BootRequest::pxe(0)
                        },
                        broadcast_to_servers(),
                    )?;
                    sent += 1;
                    std::thread::sleep(Duration::from_secs(1) / DRIZZLE_PER_SECOND);
                }
                Ok(sent)
            })();
            storm.stop.store(true, Ordering::Relaxed);
            result
        })
    })?;
    let watch: Value = serde_json::from_str(&page.command("watch-stop")?)?;
    eprintln!(
        "storm: {STORM_NODES} first DISCOVERs in {waved:.1?}, the chain in {chain:.1?}, \
         {drizzle} DISCOVERs after; first render {first_render} ms; the page over {:.0} s: {watch}",
        watch["seconds"].as_f64().unwrap_or(0.0)
    );
    let number = |key: &str| watch[key].as_f64().unwrap_or(f64::NAN);
    assert!(
        number("longest_task_ms") < LONG_TASK_LIMIT_MS,
        "a task held the page's main thread for {} ms while updates streamed in: {watch}",
        number("longest_task_ms")
    );
    assert!(
        number("heap_end") - number("heap_start") < HEAP_GROWTH_LIMIT,
        "the page's heap grew over the minute: {watch}"
    );
    assert!(
        number("updates") >= MIN_UPDATES,
        "the page got too few updates over the minute: {watch}"
    );

    // Once the table is quiet: the page's counts are the API's, and the plan's.
    let summary = lab.quiet_summary()?;
    page.command(&format!("settle {}", summary["version"]))?;
    let shown: Value = serde_json::from_str(&page.command("chips")?)?;
    let chips = shown["chips"].as_array().context("chips")?;
    let chip = |filter: &str, value: &str| {
        chips
            .iter()
            .find(|c| c["filter"] == filter && c["value"] == value)
            .with_context(|| format!("no chip {filter}={value}: {shown}"))
    };
    for c in chips {
        let n = c["n"].as_u64().context("a chip's count")?;
        assert_eq!(
            c["shown"].as_str().map(|s| s.replace(',', "")),
            Some(n.to_string()),
            "a chip shows another number than it holds: {c}"
        );
        let filter = c["filter"].as_str().unwrap_or_default();
        let value = c["value"].as_str().unwrap_or_default();
        let api = match filter {
            "all" => summary["total"].as_u64(),
            "stage" => summary["stages"][value].as_u64(),
            "state" => summary[value].as_u64(),
            "reason" => summary["failures"][value].as_u64(),
            field => summary[field][value].as_u64(),
        };
        assert_eq!(
            Some(n),
            api,
            "chip {filter}={value} against {}",
            compact(&summary)
        );
    }
    let stage_total: u64 = chips
        .iter()
        .filter(|c| c["filter"] == "stage")
        .filter_map(|c| c["n"].as_u64())
        .sum();
    assert_eq!(
        stage_total, STORM_NODES as u64,
        "the stage chips add up to the nodes"
    );
    assert_eq!(chip("all", "all")?["n"], STORM_NODES);
    assert_eq!(
        shown["matched"], STORM_NODES,
        "the table pages through every node"
    );
    for (field, key, n) in expected_summary() {
        assert_eq!(
            count_in(&summary, field, key),
            n,
            "{field}.{key} in {}",
            compact(&summary)
        );
    }
    assert_eq!(summary["failed"], 300, "{}", compact(&summary));
    assert_eq!(summary["boots_completed"], 2800, "{}", compact(&summary));

    // A stage chip shows exactly the nodes at that stage, page by page.
    let filtered: Value = serde_json::from_str(&page.command("filter stage script")?)?;
    let mut macs: Vec<String> = filtered["macs"]
        .as_array()
        .context("macs")?
        .iter()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect();
    macs.sort();
    let mut wanted: Vec<String> = (0..STORM_NODES)
        .filter(|i| Plan::of(*i).stage() == "script")
        .map(|i| storm_mac(i).to_string())
        .collect();
    wanted.sort();
    assert_eq!(filtered["matched"], summary["stages"]["script"]);
    assert_eq!(filtered["stages"], serde_json::json!(["script"]));
    assert!(
        macs == wanted,
        "the script chip shows {} nodes, {} expected",
        macs.len(),
        wanted.len()
    );
    page.command("text")?;
    if let Some(copy) = std::env::var_os("XDPBOOT_STORM_SCREENSHOT") {
        std::fs::copy(&screenshot, &copy)?;
    }
    page.command("quit")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The Grafana dashboard

/// The series names a scrape exports: those with samples, and those of every family it
/// declares (`# TYPE`), which a family without samples yet (no malformed request seen, say)
/// declares all the same: a counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`,
/// an info's `_info`, a gauge's own name.
fn exported_series(scrape: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in scrape.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declared.split_once(' ').unwrap_or((declared, ""));
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#')
            && let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty())
        {
            names.insert(name.to_owned());
        }
    }
    names
}

/// The metric names in a PromQL expression: every identifier that starts with `xdpboot_`.
fn dashboard_metrics(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("xdpboot_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if before_ok {
            names.push(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[test]
fn the_grafana_dashboard_asks_only_for_metrics_the_daemon_exports() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/xdpboot.json");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    // What Grafana needs to import it.
    for key in [
        "title",
        "uid",
        "schemaVersion",
        "panels",
        "templating",
        "time",
    ] {
        ensure!(!dashboard[key].is_null(), "the dashboard has no {key:?}");
    }
    ensure!(
        dashboard["id"].is_null(),
        "an importable dashboard has no \"id\" of its own"
    );
    ensure!(
        dashboard["schemaVersion"].as_u64().is_some(),
        "schemaVersion is a number"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .context("templating.list")?;
    ensure!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "a Prometheus data-source variable named `datasource`"
    );

    // A daemon that has seen each kind of event: a whole boot, a loader missing, a malformed
    // request (families without a sample are not in the text at all), TFTP, XDP.
    let lab = Lab::start(2, &["--backend", "xdp", "--steer", "tee"])?;
    Boot::new(&lab.clients[0], 0, Tftp::Hpa).until("overlay")?;
    Boot::new(&lab.clients[1], 11, Tftp::Hpa).step("unanswered")?;
    let from = lab.clients[1].ip;
    lab.clients[1].ns.run(move || {
        // A BOOTREQUEST without a message type (option 53), to port 4011: the XDP program
        // hands every well-framed BOOTREQUEST there to the daemon, whose core refuses it.
        let mut request = [0u8; 300];
        request[..3].copy_from_slice(&[dhcpv4::BOOTREQUEST, dhcpv4::HTYPE_ETHERNET, 6]);
        request[236..241].copy_from_slice(&[99, 130, 83, 99, 255]);
        UdpSocket::bind(SocketAddrV4::new(from, 0))?
            .send_to(&request, SocketAddrV4::new(BOOT, PXE_SERVER_PORT))?;
        Ok(())
    })?;
    lab.nodes_when("both nodes", |nodes| {
        stage_of(nodes, &lab.clients[0]) == "overlay" && stage_of(nodes, &lab.clients[1]) == "none"
    })?;
    let deadline = Instant::now() + SHOW_TIMEOUT;
    let scrape = loop {
        let scrape = lab.admin("/metrics")?;
        if scrape.contains("xdpboot_dhcp_malformed_total{") || Instant::now() > deadline {
            break scrape;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let exported = exported_series(&scrape);
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let query = variable["query"]["query"]
            .as_str()
            .context("a variable's query")?;
        for name in dashboard_metrics(query) {
            ensure!(
                exported.contains(&name),
                "variable {}: {name} is not exported",
                variable["name"]
            );
        }
    }

    let panels = dashboard["panels"].as_array().context("panels")?;
    ensure!(!panels.is_empty(), "the dashboard has panels");
    let mut ids = std::collections::BTreeSet::new();
    let mut asked = 0;
    for panel in panels {
        let title = panel["title"].as_str().context("every panel has a title")?;
        ensure!(
            ids.insert(panel["id"].as_u64().context("a panel id")?),
            "{title}: panel ids are unique"
        );
        let kind = panel["type"].as_str().unwrap_or_default();
        ensure!(
            ["timeseries", "stat", "bargauge", "row", "table", "text"].contains(&kind),
            "{title}: panel type {kind:?}"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        ensure!(
            matches!((x, w, grid["y"].as_u64(), grid["h"].as_u64()), (Some(x), Some(w), Some(_), Some(h)) if x + w <= 24 && w > 0 && h > 0),
            "{title}: gridPos {grid} fits Grafana's 24 columns"
        );
        if kind == "row" || kind == "text" {
            continue;
        }
        ensure!(
            panel["datasource"]["uid"] == "${datasource}",
            "{title}: queries the dashboard's data source"
        );
        let targets = panel["targets"].as_array().context("targets")?;
        ensure!(!targets.is_empty(), "{title}: a panel without a query");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .context("every target has an expr")?;
            let opens = expr.matches(['(', '{', '[']).count();
            let closes = expr.matches([')', '}', ']']).count();
            ensure!(opens == closes, "{title}: unbalanced brackets in {expr}");
            let names = dashboard_metrics(expr);
            ensure!(!names.is_empty(), "{title}: {expr} names no xdpboot metric");
            for name in names {
                ensure!(
                    exported.contains(&name),
                    "{title}: {expr} asks for {name}, which /metrics does not export:\n{scrape}"
                );
                asked += 1;
            }
        }
    }
    eprintln!(
        "the dashboard: {} panels, {asked} metric references, all exported",
        panels.len()
    );
    Ok(())
}
