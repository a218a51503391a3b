//! A node's script (and with it its signed overlay URL and token) is handed only to the host
//! that is that node: on the server's link, the kernel's neighbour entry for the requesting
//! address must name the MAC the request claims. Namespaces the test creates, 198.18.0.0/15.

use std::path::Path;

use anyhow::Result;
use boot_tests::{BootHost, HostSetup};

const XDP: &[&str] = &["--backend", "xdp"];

#[test]
fn a_host_gets_its_own_script_but_not_another_nodes() -> Result<()> {
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
    let curl = |mac: &str| -> Result<String> {
        lab.client.exec(
            Path::new("curl"),
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
                // The HTTP listener comes up just after the DHCP side says "serving".
                "--retry",
                "10",
                "--retry-connrefused",
                "--retry-delay",
                "1",
                &format!("http://{}:{port}/boot.ipxe?mac={mac}", lab.server),
            ],
        )
    };
    assert_eq!(curl(&own_mac)?.trim(), "200");
    assert_eq!(curl("52:54:00:de:ad:01")?.trim(), "403");
    Ok(())
}
