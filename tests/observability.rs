//! What an operator sees of a boot: simulated clients go through DHCP → TFTP → HTTP script,
//! kernel, initrd and overlay in network namespaces (a proxyDHCP probe, tftp-hpa or atftp,
//! curl), and the admin listener shows it: `/metrics`, `/api/nodes`, and the live status page
//! in headless Chromium, whose rows must appear and advance while the clients boot.
//!
//! Needs root, iproute2, tftp-hpa, atftp and curl; the browser test also Node.js with
//! tests/browser's npm packages and Debian's chromium (`cargo xtask setup` installs them).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use boot_common::wire::MacAddr;
use boot_tests::{
    BootRequest, Daemon, NetNs, PXE_SERVER_PORT, Probe, REPLY_TIMEOUT, Received, TempDir,
    broadcast_to_servers, run_command, unique_ifindex, unique_mac, veth, veth_with_index,
};
use serde_json::Value;

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
        let root = dir.join("root");
        std::fs::create_dir_all(&root)?;
        for (name, len) in FILES {
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
        let deadline = Instant::now() + SHOW_TIMEOUT;
        while lab.admin("/metrics").is_err() {
            ensure!(
                Instant::now() < deadline,
                "the admin listener did not answer at {ADMIN} within {SHOW_TIMEOUT:?}:\n{}",
                lab.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(lab)
    }

    /// `GET ADMIN<path>` from inside the boot namespace.
    fn admin(&self, path: &str) -> Result<String> {
        let url = format!("{ADMIN}{path}");
        self.boot.exec(
            Path::new("curl"),
            &["-sS", "--fail", "--max-time", "5", &url],
        )
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
