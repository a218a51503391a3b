//! Scale-out without a cluster of our own: proxyDHCP keeps no leases, so more xdpboot instances
//! serve more clients with no coordination between them, as long as they share one inventory
//! (the boot API) and one URL secret. These tests run three instances against one inventory
//! API server of the test's own, all in namespaces made here (198.18.0.0/15):
//!
//! ```text
//!   lan: bridge br0, 198.18.0.0/24                     rtr (forwards; dnsmasq --dhcp-relay)
//!   ├─ site    198.18.0.2   dnsmasq: addresses           eth0 198.18.0.254 on br0
//!   │                       for .0/24 and .2/24          eth1 198.18.2.1 ── relayed: a client on
//!   ├─ boot1   198.18.0.1   xdpboot #1                                      subnet 198.18.2.0/24
//!   ├─ boot2   198.18.0.3   xdpboot #2                   eth2 198.18.3.1 ── boot3 198.18.3.2
//!   ├─ inv     198.18.0.5   the inventory API (:8000)                       xdpboot #3
//!   ├─ rtr     198.18.0.254
//!   └─ client  (no address until the site server's offer)
//! ```
//!
//! The relay agent is dnsmasq's `--dhcp-relay`, forwarding subnet B's broadcasts to the site's
//! DHCP server and to xdpboot #3, both on other segments. The three instances run the same
//! config file (the XDP backend, the inventory's URL, one URL secret): what differs between
//! their answers is only their own address, taken from the interface a request came in on.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use boot_common::wire::MacAddr;
use boot_tests::{
    BootFiles, BootRequest, ChildGuard, DEFAULT_LOADERS, DHCP_SERVER_PORT, Daemon, Dnsmasq,
    HTTP_PORT, NetNs, PXE_SERVER_PORT, Probe, Received, STARTUP_TIMEOUT, TempDir,
    broadcast_to_servers, unique_ifindex, veth, veth_with_index,
};
use dhcproto::Encodable;
use dhcproto::v4::{MessageType, OptionCode};

const XDP: &[&str] = &["--backend", "xdp"];
/// The segment of the first two instances, the site's DHCP server and the inventory.
const BOOT1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SITE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const BOOT2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const INVENTORY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
const INVENTORY_PORT: u16 = 8000;
const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// Subnet B, behind the relay agent (the router's address there is giaddr).
const RELAY: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// xdpboot #3's own segment, behind the router.
const ROUTER_BOOT3: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 1);
const BOOT3: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 2);
/// The site server's ranges: the segment's and subnet B's.
const LAN_RANGE: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(198, 18, 0, 100),
    Ipv4Addr::new(198, 18, 0, 200),
);
const RELAYED_RANGE: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(198, 18, 2, 100),
    Ipv4Addr::new(198, 18, 2, 200),
);
/// The machines the inventory knows: the client on the segment and the one behind the relay.
/// They are the clients' real interface MACs, so that xdpboot's on-link check (a script or
/// overlay only to the host whose MAC asked for it) passes as it would for real hardware.
const CLIENT_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x5c, 0x01, 0x01]);
const RELAYED_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x5c, 0x02, 0x01]);
/// What the inventory answers for its machines (pixiecore's shape); relative URLs are
/// resolved against the API, so every instance hands out the same absolute ones.
const SPEC: &str =
    r#"{"kernel": "files/vmlinuz", "initrd": ["files/initrd.img"], "cmdline": "inventory=one"}"#;
const KERNEL: &[u8] = b"kernel from the inventory\n";
const INITRD: &[u8] = b"initrd from the inventory\n";
/// How long an instance may take to answer a machine the inventory knows: the first DISCOVER
/// starts the lookup, a retransmission is answered (see boot-user/src/bootapi.rs).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// How long one exchange collects replies.
const EXCHANGE_WINDOW: Duration = Duration::from_millis(800);

// ---------------------------------------------------------------------------------------------
// The inventory

/// A pixiecore-style boot API on `inv`: 200 and [`SPEC`] for the machines it knows, 404 for any
/// other, and the files the spec names. It notes who asked for what, so a test can see that
/// every instance asked the one inventory.
struct Inventory {
    requests: Arc<Mutex<Vec<(Ipv4Addr, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Largest request head the inventory reads.
const MAX_REQUEST_HEAD: usize = 4096;

impl Inventory {
    fn start(ns: &NetNs, known: &'static [MacAddr]) -> Result<Inventory> {
        let listener = ns.run(|| {
            Ok(TcpListener::bind(SocketAddrV4::new(
                INVENTORY,
                INVENTORY_PORT,
            ))?)
        })?;
        listener.set_nonblocking(true)?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((mut stream, peer)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (status, body): (&str, &[u8]) = match path.as_str() {
                    "/files/vmlinuz" => ("200 OK", KERNEL),
                    "/files/initrd.img" => ("200 OK", INITRD),
                    p if known
                        .iter()
                        .any(|mac| p == format!("/v1/boot/{}", mac_text(*mac))) =>
                    {
                        ("200 OK", SPEC.as_bytes())
                    }
                    _ => ("404 Not Found", b""),
                };
                if let std::net::SocketAddr::V4(peer) = peer {
                    log.lock()
                        .expect("the request log is only pushed to")
                        .push((*peer.ip(), path));
                }
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = stream.write_all(body);
            }
        });
        Ok(Inventory {
            requests,
            stop,
            thread: Some(thread),
        })
    }

    /// The addresses that looked `mac` up.
    fn asked_about(&self, mac: MacAddr) -> Vec<Ipv4Addr> {
        let wanted = format!("/v1/boot/{}", mac_text(mac));
        let mut who: Vec<Ipv4Addr> = self
            .requests
            .lock()
            .expect("the request log is only pushed to")
            .iter()
            .filter(|(_, path)| *path == wanted)
            .map(|(ip, _)| *ip)
            .collect();
        who.sort();
        who.dedup();
        who
    }
}

impl Drop for Inventory {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `52:54:00:5c:01:01`, as the boot API's path and `ip link` write a MAC.
fn mac_text(mac: MacAddr) -> String {
    let o = mac.octets();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        o[0], o[1], o[2], o[3], o[4], o[5]
    )
}

// ---------------------------------------------------------------------------------------------
// The site

/// The whole drawing above. Fields drop in order: processes first, then the namespaces (and
/// every link in them), then the files.
struct Site {
    instances: Vec<Daemon>,
    _relay: ChildGuard,
    _dnsmasq: Dnsmasq,
    inventory: Inventory,
    /// Port 68 of the client on the segment and of the one behind the relay.
    probe: Probe,
    relayed_probe: Probe,
    client: NetNs,
    relayed: NetNs,
    _namespaces: Vec<NetNs>,
    _files: BootFiles,
    scratch: TempDir,
}

impl Site {
    fn build() -> Result<Site> {
        let files = BootFiles::new(DEFAULT_LOADERS)?;
        let scratch = TempDir::new("scratch")?;
        let lan = NetNs::new("lan")?;
        let site = NetNs::new("site")?;
        let inv = NetNs::new("inv")?;
        let rtr = NetNs::new("rtr")?;
        let client = NetNs::new("client")?;
        let relayed = NetNs::new("relayed")?;
        let boots = [
            NetNs::new("boot1")?,
            NetNs::new("boot2")?,
            NetNs::new("boot3")?,
        ];
        lan.add_bridge("br0")?;
        for (port, ns) in [
            ("site", &site),
            ("inv", &inv),
            ("rtr", &rtr),
            ("client", &client),
        ] {
            veth(&lan, port, ns, "eth0")?;
            lan.attach(port, "br0")?;
        }
        // The served devices get interface indexes of their own: BPF links are system-wide.
        for (port, ns) in [("boot1", &boots[0]), ("boot2", &boots[1])] {
            veth_with_index(ns, "eth0", Some(unique_ifindex()), &lan, port)?;
            lan.attach(port, "br0")?;
        }
        veth_with_index(&boots[2], "eth0", Some(unique_ifindex()), &rtr, "eth2")?;
        veth(&rtr, "eth1", &relayed, "eth0")?;
        client.ip(&format!("link set eth0 address {}", mac_text(CLIENT_MAC)))?;
        relayed.ip(&format!("link set eth0 address {}", mac_text(RELAYED_MAC)))?;
        for (ns, iface, cidr) in [
            (&site, "eth0", SITE),
            (&inv, "eth0", INVENTORY),
            (&boots[0], "eth0", BOOT1),
            (&boots[1], "eth0", BOOT2),
            (&rtr, "eth0", ROUTER_LAN),
            (&rtr, "eth1", RELAY),
            (&rtr, "eth2", ROUTER_BOOT3),
            (&boots[2], "eth0", BOOT3),
        ] {
            ns.add_address(iface, &format!("{cidr}/24"))?;
        }
        // Replies to subnet B and to xdpboot #3 go through the router.
        for ns in [&site, &inv, &boots[0], &boots[1]] {
            ns.ip(&format!("route add default via {ROUTER_LAN}"))?;
        }
        boots[2].ip(&format!("route add default via {ROUTER_BOOT3}"))?;
        rtr.sysctl("net.ipv4.ip_forward=1")?;

        let dnsmasq = Dnsmasq::start_ranges(
            &site,
            "eth0",
            &[LAN_RANGE, RELAYED_RANGE],
            files.dir.path(),
            boot_tests::Binding::Interfaces,
        )?;
        let relay = start_relay(&rtr, scratch.path())?;
        let inventory = Inventory::start(&inv, &[CLIENT_MAC, RELAYED_MAC])?;

        // One config for all three: the inventory, one URL secret, an overlay per node.
        let secret = files.dir.join("url-secret");
        std::fs::write(&secret, [0x5a; 32])?;
        let base = std::fs::read_to_string(files.config())?;
        std::fs::write(
            files.config(),
            format!(
                "{base}\n[api]\nurl = \"http://{INVENTORY}:{INVENTORY_PORT}/\"\ntimeout_secs = 2\n\n\
                 [[overlay]]\npath = \"etc/node\"\ncontent = \"mac={{{{mac}}}}\\ntoken={{{{token}}}}\\n\"\n"
            ),
        )?;
        let mut instances = Vec::new();
        for (i, ns) in boots.iter().enumerate() {
            instances.push(Daemon::start_serving(
                ns,
                &["eth0"],
                &files.config(),
                files.dir.join(format!("xdpboot{}.log", i + 1)),
                XDP,
            )?);
        }
        let probe = Probe::client(&client, "eth0")?;
        let relayed_probe = Probe::client(&relayed, "eth0")?;
        let mut namespaces = vec![lan, site, inv, rtr];
        namespaces.extend(boots);
        Ok(Site {
            instances,
            _relay: relay,
            _dnsmasq: dnsmasq,
            inventory,
            probe,
            relayed_probe,
            client,
            relayed,
            _namespaces: namespaces,
            _files: files,
            scratch,
        })
    }

    /// Every instance's log, for a failure message.
    fn logs(&self) -> String {
        self.instances
            .iter()
            .enumerate()
            .map(|(i, d)| format!("--- xdpboot #{} ---\n{}", i + 1, d.log()))
            .collect()
    }

    /// `curl URL` from `ns`: the status and the body.
    fn fetch(&self, ns: &NetNs, url: &str) -> Result<(u16, Vec<u8>)> {
        fetch(ns, &self.scratch, url)
    }
}

/// dnsmasq as the relay agent on the router: requests broadcast on eth1 (subnet B) go to the
/// site's DHCP server and to xdpboot #3, with giaddr = its address there; replies to giaddr
/// come back to the subnet. (dnsmasq relays to every server given for one local address.) No
/// `--interface`: the replies arrive on the other two links.
fn start_relay(rtr: &NetNs, dir: &Path) -> Result<ChildGuard> {
    let args = [
        "--keep-in-foreground".to_owned(),
        "--conf-file=/dev/null".to_owned(),
        "--port=0".to_owned(),
        format!("--dhcp-relay={RELAY},{SITE}"),
        format!("--dhcp-relay={RELAY},{BOOT3}"),
        format!("--pid-file={}", dir.join("relay.pid").display()),
        format!("--dhcp-leasefile={}", dir.join("relay.leases").display()),
        "--log-dhcp".to_owned(),
        "--log-facility=-".to_owned(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let mut child = rtr.spawn(
        "dnsmasq relay",
        Path::new("dnsmasq"),
        &args,
        &[],
        dir.join("relay.log"),
    )?;
    child.wait_until("listening on port 67", STARTUP_TIMEOUT, || {
        Ok(rtr.udp_sockets_on(DHCP_SERVER_PORT)? > 0)
    })?;
    Ok(child)
}

/// `curl URL` from `ns`: the HTTP status (0 for TFTP) and the body.
fn fetch(ns: &NetNs, dir: &TempDir, url: &str) -> Result<(u16, Vec<u8>)> {
    let fetched = fetch_with(ns, dir, url, &[])?;
    Ok((fetched.status, fetched.body))
}

// ---------------------------------------------------------------------------------------------
// Offers, side by side

/// Sends `request` (a fresh xid each time) through `probe` until, within one exchange, a proxy
/// reply (no address) came from every one of `servers`; returns the exchange's replies.
/// Relayed or not, broadcast or unicast to `to`.
fn until_all_answer(
    probe: &Probe,
    request: &BootRequest,
    to: SocketAddrV4,
    servers: &[Ipv4Addr],
    site: &Site,
) -> Result<Vec<Received>> {
    let deadline = Instant::now() + ANSWER_WITHIN;
    let answered_by_all = |replies: &[Received]| {
        servers.iter().all(|s| {
            replies
                .iter()
                .any(|r| r.server_id() == Some(*s) && r.message.yiaddr().is_unspecified())
        })
    };
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let request = BootRequest {
            xid: boot_tests::next_id() ^ 0x5ca1_0000,
            ..request.clone()
        };
        last = probe.exchange(&request, to, EXCHANGE_WINDOW, |r| {
            answered_by_all(r) && r.iter().any(|r| !r.message.yiaddr().is_unspecified())
        })?;
        if answered_by_all(&last) {
            return Ok(last);
        }
    }
    bail!(
        "not every one of {servers:?} answered within {ANSWER_WITHIN:?}; the last exchange \
         got {last:#?}\n{}",
        site.logs()
    )
}

/// The proxy reply `server` sent among `replies`.
fn proxy_reply_from(replies: &[Received], server: Ipv4Addr) -> Result<&Received> {
    replies
        .iter()
        .find(|r| r.server_id() == Some(server) && r.message.yiaddr().is_unspecified())
        .with_context(|| format!("no proxy reply from {server} in {replies:#?}"))
}

/// What a client acts on in a proxy reply: every header field and option except the server's
/// own address (siaddr, option 54), with that address written `{server}` wherever it appears in
/// text (the script URL in `file`). Two instances serving one inventory must agree on this.
fn boot_relevant(reply: &Received) -> Result<BTreeMap<String, String>> {
    let m = &reply.message;
    let server = reply
        .server_id()
        .context("a proxy reply names its server (option 54)")?;
    let own = server.to_string();
    let text = |bytes: &[u8]| bytes.escape_ascii().to_string().replace(&own, "{server}");
    // Not the xid: each exchange has its own, and replies echo it.
    let mut fields = BTreeMap::from([
        ("op".to_owned(), format!("{:?}", m.opcode())),
        ("flags".to_owned(), format!("{:?}", m.flags())),
        ("ciaddr".to_owned(), m.ciaddr().to_string()),
        ("yiaddr".to_owned(), m.yiaddr().to_string()),
        ("giaddr".to_owned(), m.giaddr().to_string()),
        ("chaddr".to_owned(), text(m.chaddr())),
        ("sname".to_owned(), text(m.sname().unwrap_or_default())),
        ("file".to_owned(), text(m.fname().unwrap_or_default())),
        ("source port".to_owned(), reply.from.port().to_string()),
    ]);
    for (code, option) in m.opts().iter() {
        if *code == OptionCode::ServerIdentifier {
            continue;
        }
        let bytes = option.to_vec().context("re-encoding an option")?;
        fields.insert(format!("option {}", u8::from(*code)), text(&bytes));
    }
    Ok(fields)
}

/// Fails with both sides when the two proxy replies differ in anything a client acts on.
fn assert_same_boot(what: &str, a: &Received, b: &Received) -> Result<()> {
    let (fa, fb) = (boot_relevant(a)?, boot_relevant(b)?);
    ensure!(
        fa == fb,
        "{what}: the instances disagree:\n{} said {fa:#?}\n{} said {fb:#?}",
        a.from,
        b.from
    );
    Ok(())
}

/// A script with the instance's own address and the overlay URL's expiry and signature
/// blanked out: expiries are counted from each instance's clock, a second apart at most.
fn script_shape(script: &str, server: Ipv4Addr) -> String {
    script
        .replace(&server.to_string(), "{server}")
        .split_inclusive(['?', '&', '\n', ' '])
        .map(|part| {
            if part.starts_with("expires=") || part.starts_with("sig=") {
                let (key, _) = part.split_once('=').expect("checked above");
                let end = if part.ends_with(['&', '\n', ' ']) {
                    &part[part.len() - 1..]
                } else {
                    ""
                };
                format!("{key}=…{end}")
            } else {
                part.to_owned()
            }
        })
        .collect()
}

/// The URL after `initrd --name overlay.cpio ` in a rendered script.
fn overlay_url(script: &str) -> Result<String> {
    script
        .lines()
        .find_map(|line| line.strip_prefix("initrd --name overlay.cpio "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .with_context(|| format!("no overlay in the script:\n{script}"))
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn two_instances_on_one_segment_make_the_same_offers_from_one_inventory() -> Result<()> {
    let site = Site::build()?;
    let both = [BOOT1, BOOT2];

    // The PXE ROM's DISCOVER, UEFI and BIOS: the site server's address offer and one proxy
    // offer from each instance, alike but for the server's address.
    let mut address = None;
    let uefi_rom = BootRequest {
        mac: CLIENT_MAC,
        ..BootRequest::pxe(7)
    };
    let bios_rom = BootRequest {
        mac: CLIENT_MAC,
        ..BootRequest::pxe(0)
    };
    for rom in [&uefi_rom, &bios_rom] {
        let arch = rom.arch.expect("a PXE ROM sends option 93");
        let replies = until_all_answer(&site.probe, rom, broadcast_to_servers(), &both, &site)?;
        let (a, b) = (
            proxy_reply_from(&replies, BOOT1)?,
            proxy_reply_from(&replies, BOOT2)?,
        );
        assert_eq!(a.message_type(), Some(MessageType::Offer));
        assert_same_boot(&format!("arch {arch} PXE offer"), a, b)?;
        let first = replies
            .iter()
            .find(|r| r.message.yiaddr().is_unspecified())
            .expect("two proxy offers are in");
        println!(
            "arch {arch}: proxy offers from {BOOT1} and {BOOT2} agree (file {:?}); the client \
             takes the first, from {}",
            a.file(),
            first.from.ip()
        );
        if let Some(offer) = replies
            .iter()
            .find(|r| !r.message.yiaddr().is_unspecified())
        {
            address = Some(offer.message.yiaddr());
        }
    }
    let address = address.context("the site server offered no address")?;
    // The ROM takes the site server's address (the REQUEST/ACK with dnsmasq is not what this
    // test is about), then asks each proxy's port 4011: the ACKs agree as well.
    site.client.add_address("eth0", &format!("{address}/24"))?;
    let mut acks = Vec::new();
    for server in both {
        let request = uefi_rom.clone().request_to(server, address);
        let replies = until_all_answer(
            &site.probe,
            &request,
            SocketAddrV4::new(server, PXE_SERVER_PORT),
            &[server],
            &site,
        )?;
        acks.push(proxy_reply_from(&replies, server)?.clone());
    }
    assert_eq!(acks[0].message_type(), Some(MessageType::Ack));
    assert_eq!(acks[0].file(), "ipxe-amd64.efi");
    assert_same_boot("port-4011 ACK", &acks[0], &acks[1])?;

    // iPXE's DISCOVER: the script URL, the same but for the host.
    let ipxe = uefi_rom.clone().ipxe();
    let replies = until_all_answer(&site.probe, &ipxe, broadcast_to_servers(), &both, &site)?;
    let (a, b) = (
        proxy_reply_from(&replies, BOOT1)?,
        proxy_reply_from(&replies, BOOT2)?,
    );
    assert_same_boot("iPXE offer", a, b)?;
    let script_urls = [a.file(), b.file()];
    assert!(
        script_urls[0].starts_with(&format!("http://{BOOT1}:{HTTP_PORT}/boot.ipxe?")),
        "{script_urls:?}"
    );

    // Both scripts boot the inventory's kernel and initrd, with its command line.
    let mut scripts = Vec::new();
    for (url, server) in script_urls.iter().zip(both) {
        let (status, body) = site.fetch(&site.client, url)?;
        let script = String::from_utf8(body)?;
        assert_eq!(status, 200, "{url}: {script}\n{}", site.logs());
        let inventory = format!("http://{INVENTORY}:{INVENTORY_PORT}/files/");
        assert!(
            script.contains(&format!("kernel --name kernel {inventory}vmlinuz"))
                && script.contains(&format!("initrd --name 0.img {inventory}initrd.img"))
                && script.contains("inventory=one"),
            "{server}'s script does not boot the inventory's answer:\n{script}"
        );
        scripts.push(script);
    }
    assert_eq!(
        script_shape(&scripts[0], BOOT1),
        script_shape(&scripts[1], BOOT2),
        "the two scripts differ beyond the server's address and the URL's expiry"
    );

    // One URL secret: the overlay #1 signed is served by #2 too, byte for byte (the node's
    // token with it), so a node whose instance dies mid-boot can finish on another.
    let signed_by_1 = overlay_url(&scripts[0])?;
    let (status, from_1) = site.fetch(&site.client, &signed_by_1)?;
    assert_eq!(status, 200, "{signed_by_1}\n{}", site.logs());
    let on_2 = signed_by_1.replace(&BOOT1.to_string(), &BOOT2.to_string());
    let (status, from_2) = site.fetch(&site.client, &on_2)?;
    assert_eq!(status, 200, "{on_2}\n{}", site.logs());
    assert!(from_1.starts_with(b"070701"), "not a newc cpio archive");
    assert_eq!(from_1, from_2, "the two instances built different overlays");

    // Each instance asked the one inventory itself: no state passes between them.
    assert_eq!(site.inventory.asked_about(CLIENT_MAC), vec![BOOT1, BOOT2]);
    Ok(())
}

#[test]
fn a_third_instance_boots_a_subnet_behind_a_relay_from_the_same_inventory() -> Result<()> {
    let site = Site::build()?;
    let probe = &site.relayed_probe;

    // The ROM's broadcast reaches the site server and xdpboot #3 only through the relay agent,
    // each on a segment of its own; both answers come back through it.
    let rom = BootRequest {
        mac: RELAYED_MAC,
        ..BootRequest::pxe(7)
    };
    let replies = until_all_answer(probe, &rom, broadcast_to_servers(), &[BOOT3], &site)?;
    let offer = proxy_reply_from(&replies, BOOT3)?;
    assert_eq!(offer.message_type(), Some(MessageType::Offer));
    assert_eq!(offer.message.siaddr(), BOOT3);
    assert_eq!(offer.file(), "ipxe-amd64.efi");
    let address = replies
        .iter()
        .find(|r| !r.message.yiaddr().is_unspecified())
        .with_context(|| format!("no address offer through the relay: {replies:#?}"))?;
    ensure!(
        address.server_id() == Some(SITE),
        "the address offer should come from the site server: {address:#?}"
    );
    let yiaddr = address.message.yiaddr();
    ensure!(
        (RELAYED_RANGE.0..=RELAYED_RANGE.1).contains(&yiaddr),
        "the site server picked the range by giaddr: {yiaddr} is outside {RELAYED_RANGE:?}"
    );
    assert_eq!(
        (*offer.from.ip(), offer.message.giaddr()),
        (RELAY, RELAY),
        "the proxy offer came back through the relay agent, giaddr kept"
    );

    // The client takes its address from the site server (through the relay), then talks to
    // xdpboot #3 directly, through the router, as iPXE and ROMs do after an offer.
    let take = rom.clone().selecting(SITE, yiaddr);
    let acked = probe.exchange(&take, broadcast_to_servers(), ANSWER_WITHIN, |r| {
        r.iter()
            .any(|r| r.message_type() == Some(MessageType::Ack) && r.message.yiaddr() == yiaddr)
    })?;
    ensure!(
        acked
            .iter()
            .any(|r| r.message_type() == Some(MessageType::Ack) && r.server_id() == Some(SITE)),
        "the site server did not acknowledge {yiaddr} through the relay: {acked:#?}"
    );
    site.relayed.add_address("eth0", &format!("{yiaddr}/24"))?;
    site.relayed.ip(&format!("route add default via {RELAY}"))?;

    let request = rom.clone().request_to(BOOT3, yiaddr);
    let replies = until_all_answer(
        probe,
        &request,
        SocketAddrV4::new(BOOT3, PXE_SERVER_PORT),
        &[BOOT3],
        &site,
    )?;
    let ack = proxy_reply_from(&replies, BOOT3)?;
    assert_eq!(ack.message_type(), Some(MessageType::Ack));
    assert_eq!(ack.file(), "ipxe-amd64.efi");
    let (_, loader) = site.fetch(&site.relayed, &format!("tftp://{BOOT3}/ipxe-amd64.efi"))?;
    assert_eq!(loader, b"dummy loader\n", "the loader over TFTP, routed");

    // iPXE's DISCOVER, relayed again: the script URL; then the script, the inventory's kernel
    // and initrd, and the overlay, all over HTTP through the router.
    let ipxe = BootRequest {
        mac: RELAYED_MAC,
        ..BootRequest::pxe(7).ipxe()
    };
    let replies = until_all_answer(probe, &ipxe, broadcast_to_servers(), &[BOOT3], &site)?;
    let script_url = proxy_reply_from(&replies, BOOT3)?.file();
    assert!(
        script_url.starts_with(&format!("http://{BOOT3}:{HTTP_PORT}/boot.ipxe?")),
        "{script_url}"
    );
    let (status, script) = site.fetch(&site.relayed, &script_url)?;
    let script = String::from_utf8(script)?;
    assert_eq!(status, 200, "{script}\n{}", site.logs());
    let kernel_url = format!("http://{INVENTORY}:{INVENTORY_PORT}/files/vmlinuz");
    assert!(
        script.contains(&format!("kernel --name kernel {kernel_url}")),
        "{script}"
    );
    assert_eq!(
        site.fetch(&site.relayed, &kernel_url)?,
        (200, KERNEL.to_vec())
    );
    let (status, overlay) = site.fetch(&site.relayed, &overlay_url(&script)?)?;
    assert_eq!(status, 200, "{}", site.logs());
    let expected = format!("mac={}", mac_text(RELAYED_MAC));
    assert!(
        overlay.starts_with(b"070701")
            && overlay
                .windows(expected.len())
                .any(|w| w == expected.as_bytes()),
        "the overlay is not this node's"
    );
    assert_eq!(site.inventory.asked_about(RELAYED_MAC), vec![BOOT3]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// An HTTP cache in front

/// An HTTP answer as curl got it.
struct Fetched {
    status: u16,
    /// Header names in lower case, the last value of each.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// `curl URL` from `ns` with extra request headers.
fn fetch_with(ns: &NetNs, dir: &TempDir, url: &str, headers: &[&str]) -> Result<Fetched> {
    let n = boot_tests::next_id();
    let (head, body) = (dir.join(format!("head-{n}")), dir.join(format!("body-{n}")));
    let (head_arg, body_arg) = (head.display().to_string(), body.display().to_string());
    let mut args = vec![
        "-sS",
        "-g",
        "--max-time",
        "5",
        "-D",
        &head_arg,
        "-o",
        &body_arg,
        "-w",
        "%{http_code}",
    ];
    for header in headers {
        args.extend(["-H", header]);
    }
    args.push(url);
    let status = ns.exec(Path::new("curl"), &args)?.trim().parse()?;
    let headers = std::fs::read_to_string(&head)?
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body_bytes = std::fs::read(&body).unwrap_or_default();
    let _ = std::fs::remove_file(&head);
    let _ = std::fs::remove_file(&body);
    Ok(Fetched {
        status,
        headers,
        body: body_bytes,
    })
}

impl Fetched {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// nginx as a caching reverse proxy for `origin` on `listen`: every response cached, fresh
/// for `fresh`, then revalidated with a conditional request (If-None-Match from the cached
/// ETag) rather than fetched again; `X-Cache-Status` says what the cache did.
fn nginx_cache_config(
    dir: &Path,
    listen: SocketAddrV4,
    origin: SocketAddrV4,
    fresh: u32,
) -> String {
    let d = dir.display();
    format!(
        "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n\
           client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           proxy_cache_path {d}/cache levels=1 keys_zone=boot:1m max_size=64m inactive=10m use_temp_path=off;\n\
           server {{\n    listen {listen};\n    location / {{\n\
               proxy_pass http://{origin};\n      proxy_cache boot;\n\
               proxy_cache_valid 200 {fresh}s;\n      proxy_cache_revalidate on;\n\
               proxy_cache_lock on;\n\
               add_header X-Cache-Status $upstream_cache_status always;\n    }}\n  }}\n}}\n"
    )
}

/// How long nginx keeps a cached answer fresh before it revalidates it with the origin.
const CACHE_FRESH_SECS: u32 = 2;

#[test]
fn an_nginx_cache_in_front_of_an_instance_keeps_etags_and_ranges_right() -> Result<()> {
    // origin (xdpboot, 198.18.4.1:8080) ── edge (nginx, 198.18.4.2:8081, and the client)
    let origin_ip = Ipv4Addr::new(198, 18, 4, 1);
    let edge_ip = Ipv4Addr::new(198, 18, 4, 2);
    let files = BootFiles::new(DEFAULT_LOADERS)?;
    let scratch = TempDir::new("scratch")?;
    let origin = NetNs::new("origin")?;
    let edge = NetNs::new("edge")?;
    veth(&origin, "eth0", &edge, "eth0")?;
    origin.add_address("eth0", &format!("{origin_ip}/24"))?;
    edge.add_address("eth0", &format!("{edge_ip}/24"))?;
    // The shared initrd (2 MiB of varied bytes, so a wrong range cannot look right), and a
    // second image the cache first sees as a range request.
    let image: Vec<u8> = (0u32..2 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(files.dir.join("initrd.img"), &image)?;
    std::fs::write(files.dir.join("second.img"), &image[..1 << 20])?;
    let daemon = Daemon::start(
        &origin,
        &["eth0"],
        &files.config(),
        files.dir.join("xdpboot.log"),
    )?;
    let nginx_dir = scratch.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let listen = SocketAddrV4::new(edge_ip, 8081);
    std::fs::write(
        nginx_dir.join("nginx.conf"),
        nginx_cache_config(
            &nginx_dir,
            listen,
            SocketAddrV4::new(origin_ip, HTTP_PORT),
            CACHE_FRESH_SECS,
        ),
    )?;
    let conf = nginx_dir.join("nginx.conf");
    let mut nginx = edge.spawn(
        "nginx",
        Path::new("nginx"),
        &[
            "-c".as_ref(),
            conf.as_os_str(),
            "-g".as_ref(),
            "daemon off;".as_ref(),
        ],
        &[],
        nginx_dir.join("nginx.log"),
    )?;
    let direct = format!("http://{origin_ip}:{HTTP_PORT}/initrd.img");
    let cached = format!("http://{listen}/initrd.img");
    nginx.wait_until("serving through to xdpboot", STARTUP_TIMEOUT, || {
        Ok(
            fetch_with(&edge, &scratch, &direct, &[]).is_ok_and(|f| f.status == 200)
                && fetch_with(&edge, &scratch, &format!("http://{listen}/nothing"), &[]).is_ok(),
        )
    })?;
    // The origin's access log from here on.
    let seen_before = daemon.log().lines().count();
    let origin_requests = || -> Vec<String> {
        daemon
            .log()
            .lines()
            .skip(seen_before)
            .filter(|l| l.contains("path=/initrd.img "))
            .map(str::to_owned)
            .collect()
    };

    let origin_view = fetch_with(&edge, &scratch, &direct, &[])?;
    let etag = origin_view.header("etag").to_owned();
    ensure!(
        etag.starts_with('"'),
        "xdpboot sends a strong ETag: {etag:?}"
    );

    // A miss, then hits: the origin's ETag and bytes, the origin asked once.
    let miss = fetch_with(&edge, &scratch, &cached, &[])?;
    assert_eq!((miss.status, miss.header("x-cache-status")), (200, "MISS"));
    assert_eq!(miss.header("etag"), etag, "the cache passes the ETag on");
    assert!(miss.body == image, "the cache's first answer is the image");
    let hit = fetch_with(&edge, &scratch, &cached, &[])?;
    assert_eq!((hit.status, hit.header("x-cache-status")), (200, "HIT"));
    assert_eq!(hit.header("etag"), etag);
    assert!(hit.body == image, "the cached copy is the image");

    // Ranges from the cached copy: the right bytes, Content-Range, and If-Range by ETag.
    let range = fetch_with(&edge, &scratch, &cached, &["Range: bytes=1000-1999"])?;
    assert_eq!(range.status, 206);
    assert_eq!(
        range.header("content-range"),
        format!("bytes 1000-1999/{}", image.len())
    );
    assert!(range.body == image[1000..2000], "the range's bytes");
    let if_range = |tag: &str| {
        fetch_with(
            &edge,
            &scratch,
            &cached,
            &["Range: bytes=-100", &format!("If-Range: {tag}")],
        )
    };
    let same = if_range(&etag)?;
    assert_eq!(
        same.status, 206,
        "If-Range with the current ETag gets the range"
    );
    assert!(same.body == image[image.len() - 100..]);
    let changed = if_range("\"not-the-etag\"")?;
    assert_eq!(
        changed.status, 200,
        "If-Range with another ETag gets the whole file"
    );
    assert_eq!(changed.body.len(), image.len());

    // Conditional GETs: 304 from the cache while fresh; once stale, the cache revalidates
    // with the origin by ETag (a 304 from xdpboot) instead of fetching the image again.
    let not_modified = fetch_with(
        &edge,
        &scratch,
        &cached,
        &[&format!("If-None-Match: {etag}")],
    )?;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    // (nginx counts freshness in whole seconds of its clock: the entry goes stale between
    // `fresh` and `fresh` + 1 s after the miss; until then the cache answers HIT.)
    let deadline = Instant::now() + Duration::from_secs(u64::from(CACHE_FRESH_SECS) + 4);
    let revalidated = loop {
        let answer = fetch_with(&edge, &scratch, &cached, &[])?;
        match answer.header("x-cache-status") {
            "REVALIDATED" => break answer,
            "HIT" if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(250));
            }
            other => bail!(
                "a stale entry should be revalidated, the cache said {other:?} ({}):\n{}",
                answer.status,
                daemon.log()
            ),
        }
    };
    assert_eq!(revalidated.status, 200);
    assert!(revalidated.body == image);

    // A range as the cache's first sight of a file: the client gets its bytes, and the cache
    // keeps the whole file, not the range.
    let second = &image[..1 << 20];
    let url = format!("http://{listen}/second.img");
    let cold = fetch_with(&edge, &scratch, &url, &["Range: bytes=4096-8191"])?;
    assert_eq!(cold.status, 206, "{}", cold.header("x-cache-status"));
    assert!(cold.body == second[4096..8192], "the cold range's bytes");
    let whole = fetch_with(&edge, &scratch, &url, &[])?;
    assert_eq!((whole.status, whole.header("x-cache-status")), (200, "HIT"));
    assert!(whole.body == second, "the cache kept the whole file");

    // The origin sent the image once in full to the cache (and once to the direct fetch
    // above); the revalidation was a conditional request it answered 304.
    let requests = origin_requests();
    let with_status = |status: &str| {
        requests
            .iter()
            .filter(|l| l.contains(&format!("status={status} ")))
            .count()
    };
    assert_eq!(
        (requests.len(), with_status("200"), with_status("304")),
        (3, 2, 1),
        "the origin should see the direct fetch, the miss and the revalidation only:\n{}",
        requests.join("\n")
    );
    drop(nginx);
    Ok(())
}
