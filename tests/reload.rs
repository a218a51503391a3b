//! SIGHUP: a new config takes effect without dropping the XDP attachment, and an invalid one is
//! refused with its line while the old one keeps serving. And the external boot API (pixiecore's
//! protocol) decides which machines are answered, against a small API server the test starts.
//! All in namespaces the tests create, 198.18.0.0/15, bounded waits.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use boot_common::wire::MacAddr;
use boot_tests::{BootHost, BootRequest, HostSetup, NetNs, Received, broadcast_to_servers};
use nix::sys::signal::Signal;

const XDP: &[&str] = &["--backend", "xdp"];
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends DISCOVERs (fresh xids) until xdpboot's offer names `file`, or fails after `within`.
fn offer_with_file(lab: &BootHost, arch: u16, file: &str, within: Duration) -> Result<Received> {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        let request = BootRequest::pxe(arch);
        let replies = lab.probe.exchange(
            &request,
            broadcast_to_servers(),
            Duration::from_millis(500),
            |r| !r.is_empty(),
        )?;
        if let Some(offer) = replies.into_iter().next() {
            if offer.file() == file {
                return Ok(offer);
            }
            last = Some(offer.file());
        }
    }
    bail!("no offer with file {file:?} within {within:?}; last offer's file: {last:?}")
}

/// The config file with `rules` as its policy table (TOML `[[policy]]` entries).
fn write_policy(lab: &BootHost, base: &str, rules: &str) -> Result<()> {
    std::fs::write(lab.files.config(), format!("{base}\n{rules}")).context("writing the config")
}

#[test]
fn sighup_applies_a_new_policy_without_detaching_and_refuses_a_bad_one() -> Result<()> {
    let lab = BootHost::new(HostSetup::default())?;
    lab.files.add_loader("other.kpxe")?;
    let base = std::fs::read_to_string(lab.files.config())?;
    write_policy(
        &lab,
        &base,
        "[[policy]]\nname = \"bios\"\narch = [\"bios\"]\ntftp = \"undionly.kpxe\"\n",
    )?;
    let daemon = lab.start_daemon(XDP)?;
    offer_with_file(&lab, 0, "undionly.kpxe", REPLY_TIMEOUT)?;
    let programs = lab.xdp_programs()?;

    write_policy(
        &lab,
        &base,
        "[[policy]]\nname = \"bios\"\narch = [\"bios\"]\ntftp = \"other.kpxe\"\n",
    )?;
    daemon.child.signal(Signal::SIGHUP)?;
    offer_with_file(&lab, 0, "other.kpxe", Duration::from_secs(5)).with_context(|| daemon.log())?;
    assert_eq!(
        lab.xdp_programs()?,
        programs,
        "the XDP program was replaced by a reload"
    );
    assert!(daemon.log().contains("config reloaded"), "{}", daemon.log());

    // Line 4 of the appended rules names an unknown architecture.
    write_policy(
        &lab,
        &base,
        "[[policy]]\nname = \"bios\"\ntftp = \"undionly.kpxe\"\narch = [\"sparc\"]\n",
    )?;
    let bad_line = base.lines().count() + 1 + 4;
    daemon.child.signal(Signal::SIGHUP)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.log().contains("reload refused") {
        if Instant::now() > deadline {
            bail!("no refusal logged:\n{}", daemon.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            ":{bad_line}: policy[0].arch: unknown architecture \"sparc\""
        )),
        "the refusal names the line and reason (line {bad_line}):\n{log}"
    );
    // The previous config keeps serving.
    offer_with_file(&lab, 0, "other.kpxe", REPLY_TIMEOUT)?;
    assert_eq!(lab.xdp_programs()?, programs);
    Ok(())
}

/// A pixiecore-style boot API on the host namespace's loopback: 200 with a spec for `known`,
/// 404 for anything else; `down` makes it drop connections.
struct BootApi {
    port: u16,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BootApi {
    fn start(ns: &NetNs, known: &'static str) -> Result<BootApi> {
        BootApi::answering(
            ns,
            vec![(
                known,
                r#"{"kernel": "http://198.18.0.200/vmlinuz", "initrd": ["initrd.img"], "cmdline": "from=api"}"#,
            )],
        )
    }

    /// An API that answers each `(mac, JSON body)` with 200 and that body, and 404 otherwise.
    fn answering(ns: &NetNs, answers: Vec<(&'static str, &'static str)>) -> Result<BootApi> {
        let listener = ns.run(|| Ok(TcpListener::bind("127.0.0.1:0")?))?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (down.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if d.load(Ordering::Relaxed) {
                    continue; // dropped: the API is "down"
                }
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let n = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let answer = answers
                    .iter()
                    .find(|(mac, _)| path == format!("/v1/boot/{mac}"));
                let reply = if let Some((_, body)) = answer {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Ok(BootApi {
            port,
            down,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for BootApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// DISCOVERs from `mac` until xdpboot answers (true) or `within` passes (false).
fn answered_within(lab: &BootHost, mac: MacAddr, within: Duration) -> Result<bool> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let mut request = BootRequest::pxe(7);
        request.mac = mac;
        let replies = lab.probe.exchange(
            &request,
            broadcast_to_servers(),
            Duration::from_millis(400),
            |r| !r.is_empty(),
        )?;
        if !replies.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn the_boot_api_decides_which_machines_are_answered_and_what_they_boot() -> Result<()> {
    const KNOWN: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0x00, 0x01]);
    const UNKNOWN: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0x00, 0x02]);
    let lab = BootHost::new(HostSetup {
        client_host: Some(50),
        ..HostSetup::default()
    })?;
    let api = BootApi::start(&lab.host, "52:54:00:aa:00:01")?;
    let base = std::fs::read_to_string(lab.files.config())?;
    std::fs::write(
        lab.files.config(),
        format!(
            "{base}\n[api]\nurl = \"http://127.0.0.1:{}/\"\ntimeout_secs = 1\ncache_secs = 1\n",
            api.port
        ),
    )?;
    let daemon = lab.start_daemon(XDP)?;

    // Known: the first DISCOVER starts the lookup, a retry is answered.
    assert!(
        answered_within(&lab, KNOWN, Duration::from_secs(5))?,
        "the API's machine was not answered:\n{}",
        daemon.log()
    );
    // Unknown (404): never answered.
    assert!(!answered_within(&lab, UNKNOWN, Duration::from_secs(2))?);
    assert!(
        daemon.log().contains("the boot API does not know it"),
        "{}",
        daemon.log()
    );

    // The boot script comes from the API's spec, relative URLs resolved against the API.
    let url = format!(
        "http://{}:{}/boot.ipxe?mac=52:54:00:aa:00:01",
        lab.server,
        http_port(&base)?
    );
    let script = lab
        .host
        .exec(Path::new("curl"), &["-sS", "--max-time", "5", &url])?;
    assert!(
        script.contains("kernel --name kernel http://198.18.0.200/vmlinuz initrd=0.img"),
        "{script}"
    );
    assert!(
        script.contains(&format!(
            "initrd --name 0.img http://127.0.0.1:{}/initrd.img",
            api.port
        )),
        "{script}"
    );
    assert!(script.contains("from=api"), "{script}");

    // Down: after the cache expires the machine is no longer answered, and the log says why.
    api.down.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(!answered_within(&lab, KNOWN, Duration::from_secs(3))?);
    assert!(
        daemon.log().contains("the boot API is down"),
        "{}",
        daemon.log()
    );
    // Back: answered again.
    api.down.store(false, Ordering::Relaxed);
    assert!(answered_within(&lab, KNOWN, Duration::from_secs(6))?);
    assert!(
        daemon.log().contains("the boot API answers again"),
        "{}",
        daemon.log()
    );
    Ok(())
}

/// The `[http] port` the harness's config sets.
fn http_port(config: &str) -> Result<u16> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("port = "))
        .context("the harness config names an HTTP port")?
        .trim()
        .parse()
        .context("HTTP port")
}

/// The answers beyond pixiecore's (docs/boot-api.md), against an API of the test's own: a
/// ready iPXE script is served as it is, a script URL is chained, and a boot-once answer boots
/// the machine once: its next DHCP goes unanswered and its script says there is nothing to boot.
#[test]
fn the_boot_api_can_answer_a_ready_script_a_script_url_or_a_boot_once_spec() -> Result<()> {
    const SCRIPT: &str = "52:54:00:aa:00:11";
    const URL: &str = "52:54:00:aa:00:12";
    const ONCE: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0x00, 0x13]);
    let lab = BootHost::new(HostSetup {
        client_host: Some(50),
        ..HostSetup::default()
    })?;
    let api = BootApi::answering(
        &lab.host,
        vec![
            (
                SCRIPT,
                r##"{"ipxe_script": "#!ipxe\necho straight from the API\nexit\n"}"##,
            ),
            (
                URL,
                r#"{"ipxe_script_url": "ironic/boot.ipxe", "message": "handing over to Ironic"}"#,
            ),
            (
                "52:54:00:aa:00:13",
                r#"{"kernel": "http://198.18.0.200/vmlinuz", "cmdline": "provision", "once": true, "id": "deploy-1"}"#,
            ),
        ],
    )?;
    let base = std::fs::read_to_string(lab.files.config())?;
    // A long cache: the spent answer is still the cached one when the machine comes back.
    std::fs::write(
        lab.files.config(),
        format!(
            "{base}\n[api]\nurl = \"http://127.0.0.1:{}/\"\ntimeout_secs = 1\ncache_secs = 60\n",
            api.port
        ),
    )?;
    let daemon = lab.start_daemon(XDP)?;
    let port = http_port(&base)?;
    let script = |mac: &str| -> Result<String> {
        let url = format!("http://{}:{port}/boot.ipxe?mac={mac}", lab.server);
        lab.host
            .exec(Path::new("curl"), &["-sS", "--max-time", "5", &url])
    };

    assert_eq!(
        script(SCRIPT)?,
        "#!ipxe\necho straight from the API\nexit\n"
    );
    let chained = script(URL)?;
    assert!(
        chained.starts_with("#!ipxe\necho handing over to Ironic\n"),
        "{chained}"
    );
    assert!(
        chained.contains(&format!(
            "chain --autofree http://127.0.0.1:{}/ironic/boot.ipxe || goto failed",
            api.port
        )),
        "{chained}"
    );

    // Boot once: answered, and its script boots the API's kernel...
    assert!(
        answered_within(&lab, ONCE, Duration::from_secs(5))?,
        "the boot-once machine was not answered:\n{}",
        daemon.log()
    );
    let first = script(&ONCE.to_string())?;
    assert!(first.contains("http://198.18.0.200/vmlinuz"), "{first}");
    assert!(first.contains("provision"), "{first}");
    // ...once: the API still gives the same answer, but the machine's next boot falls back.
    let second = script(&ONCE.to_string())?;
    assert!(
        second.contains("nothing to boot") && !second.contains("vmlinuz"),
        "{second}"
    );
    assert!(!answered_within(&lab, ONCE, Duration::from_secs(2))?);
    assert!(
        daemon.log().contains("boot-once answer was served"),
        "{}",
        daemon.log()
    );
    Ok(())
}
