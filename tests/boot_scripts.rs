//! A node's script (and with it its signed overlay URL and token) is handed only to the host
//! that is that node: on the server's link, the kernel's neighbour entry for the requesting
//! address must name the MAC the request claims. The same holds for the per-node configs of
//! the loaders after the firmware (GRUB's, PXELINUX's) over HTTP and TFTP, for GRUB's name by
//! address, and for the overlay those configs name; over IPv4 and IPv6. Namespaces the test
//! creates, 198.18.0.0/15 and fd00::/8.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use boot_tests::{BootHost, HostSetup, command_output};

const XDP: &[&str] = &["--backend", "xdp"];
/// curl's exit codes for TFTP errors 1 (file not found) and 2 (access violation).
const CURL_TFTP_NOT_FOUND: i32 = 68;
const CURL_TFTP_PERMISSION: i32 = 69;
/// Longest one curl may run (its own --max-time is shorter).
const CURL_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn a_host_gets_its_own_script_and_loader_configs_but_not_another_nodes() -> Result<()> {
    let lab = BootHost::new(HostSetup {
        client_host: Some(50),
        ..HostSetup::default()
    })?;
    // A kernel, so scripts are served at all.
    let kernel = lab.files.dir.join("vmlinuz");
    std::fs::write(&kernel, b"kernel")?;
    let base = std::fs::read_to_string(lab.files.config())?;
    let config = base.replace(
        "[boot]\n",
        &format!("[boot]\nkernel = \"{}\"\n", kernel.display()),
    );
    assert_ne!(config, base, "the harness config has a [boot] section");
    std::fs::write(
        lab.files.config(),
        format!("{config}\n[[overlay]]\npath = \"etc/token\"\ncontent = \"{{{{token}}}}\"\n"),
    )?;
    let _daemon = lab.start_daemon(XDP)?;
    let port = base
        .lines()
        .find_map(|l| l.strip_prefix("port = "))
        .expect("an HTTP port")
        .trim()
        .to_owned();
    let link = lab.client.ip("-o link show eth0")?;
    let own_mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("the client's MAC")
        .to_owned();
    let other_mac = "52:54:00:de:ad:01";
    let [a, b, c, _] = lab.server.octets();
    let own_ip = Ipv4Addr::new(a, b, c, 50);
    let other_ip = Ipv4Addr::new(a, b, c, 51);
    // (status, body) of an HTTP GET from the client.
    let http = |path: &str| -> Result<(String, String)> {
        let out = lab.client.exec(
            Path::new("curl"),
            &[
                "-s",
                "-w",
                "\n%{http_code}",
                "--max-time",
                "5",
                // The HTTP listener comes up just after the DHCP side says "serving".
                "--retry",
                "10",
                "--retry-connrefused",
                "--retry-delay",
                "1",
                &format!("http://{}:{port}{path}", lab.server),
            ],
        )?;
        let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
        Ok((status.trim().to_owned(), body.to_owned()))
    };
    // (curl's exit code, body) of a TFTP read from the client.
    let tftp = |name: &str| -> Result<(i32, String)> {
        let out = command_output(
            Command::new("ip")
                .args(["netns", "exec", lab.client.name()])
                .args([
                    "curl",
                    "-s",
                    "--max-time",
                    "10",
                    // curl would take a "?" for a query and leave it out of the TFTP file name.
                    &format!("tftp://{}/{}", lab.server, name.replace('?', "%3F")),
                ]),
            CURL_TIMEOUT,
        )?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    let hyphens = |mac: &str| mac.replace(':', "-");

    assert_eq!(http(&format!("/boot.ipxe?mac={own_mac}"))?.0, "200");
    assert_eq!(http(&format!("/boot.ipxe?mac={other_mac}"))?.0, "403");

    // GRUB's config for this node, by each name GRUB asks: over HTTP and TFTP, by MAC (with
    // hyphens as upstream GRUB writes it, colons as the bootstrap does) and by address.
    let own_grub = format!("grub/x86_64-efi/grub.cfg-01-{}", hyphens(&own_mac));
    let by_address = format!("grub/x86_64-efi/grub.cfg-{:08X}", u32::from(own_ip));
    let (status, config) = http(&format!("/{own_grub}"))?;
    assert_eq!(status, "200", "{config}");
    assert!(
        config.contains(&own_mac),
        "the node's own config:\n{config}"
    );
    for name in [
        own_grub.as_str(),
        &format!("grub/grub.cfg-01-{own_mac}"),
        by_address.as_str(),
    ] {
        let (code, over_tftp) = tftp(name)?;
        assert_eq!(code, 0, "{name} over TFTP");
        assert!(over_tftp.contains(&own_mac), "{name}:\n{over_tftp}");
        let (status, over_http) = http(&format!("/{name}"))?;
        assert_eq!(status, "200", "{name} over HTTP");
        assert!(over_http.contains(&own_mac), "{name}:\n{over_http}");
    }
    // Another node's, by MAC or by its address: refused, over either protocol.
    for name in [
        format!("grub/x86_64-efi/grub.cfg-01-{}", hyphens(other_mac)),
        format!("grub/grub.cfg-{:08X}", u32::from(other_ip)),
        format!("pxelinux.cfg/01-{}", hyphens(other_mac)),
    ] {
        assert_eq!(http(&format!("/{name}"))?.0, "403", "{name} over HTTP");
        assert_eq!(tftp(&name)?.0, CURL_TFTP_PERMISSION, "{name} over TFTP");
    }
    // A prefix of an address names a subnet, no node: not made, so GRUB goes on to grub.cfg.
    let prefix = format!("grub/grub.cfg-{:06X}", u32::from(own_ip) >> 8);
    assert_eq!(http(&format!("/{prefix}"))?.0, "404");
    assert_eq!(tftp(&prefix)?.0, CURL_TFTP_NOT_FOUND);
    // PXELINUX's config for this node.
    let (status, pxelinux) = http(&format!("/pxelinux.cfg/01-{}", hyphens(&own_mac)))?;
    assert_eq!(status, "200");
    assert!(pxelinux.contains(&own_mac), "{pxelinux}");

    // The overlay GRUB's config names (signed for this node's path) comes to this node; the
    // same signature on another node's path does not.
    let overlay = config
        .split(['\'', '"', ' ', '\n'])
        .find_map(|w| w.find("/nodes/").map(|at| w[at..].to_owned()))
        .unwrap_or_else(|| panic!("an overlay in the GRUB config:\n{config}"));
    assert_eq!(tftp(overlay.trim_start_matches('/'))?.0, 0, "{overlay}");
    assert_eq!(http(&overlay)?.0, "200", "{overlay}");
    let stolen = overlay.replace(&own_mac, other_mac);
    assert_ne!(stolen, overlay);
    assert_eq!(http(&stolen)?.0, "403", "{stolen}");
    assert_eq!(
        tftp(stolen.trim_start_matches('/'))?.0,
        CURL_TFTP_PERMISSION,
        "{stolen}"
    );

    // The same over IPv6 (ULA addresses on the same link, fd00::/8): the kernel's neighbour
    // entry from neighbour discovery names the client, and another node's script is refused.
    lab.host.ip(&format!(
        "-6 addr add fd00:18::1/64 dev {} nodad",
        lab.iface
    ))?;
    lab.client.ip("-6 addr add fd00:18::32/64 dev eth0 nodad")?;
    let http6 = |path: &str| -> Result<String> {
        lab.client.exec(
            Path::new("curl"),
            &[
                "-s",
                "-g",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
                &format!("http://[fd00:18::1]:{port}{path}"),
            ],
        )
    };
    assert_eq!(http6(&format!("/boot.ipxe?mac={own_mac}"))?.trim(), "200");
    assert_eq!(
        http6(&format!("/boot.ipxe?mac={other_mac}"))?.trim(),
        "403",
        "another node's script over IPv6"
    );
    assert_eq!(http6(&stolen)?.trim(), "403", "{stolen} over IPv6");
    Ok(())
}
