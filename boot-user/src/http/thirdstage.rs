//! What the loaders after the firmware ask xdpboot for, by name, and the fixed parts of what
//! they get: GRUB's and PXELINUX's per-node configs, and the script that sends iPXE to the
//! local disk. Sans I/O: names in, names and texts out. The configs themselves are rendered
//! from templates by [`super::scripts::BootContent`], which serves them over HTTP and TFTP.
//!
//! The names are the ones the loaders' own code asks for, seen here on the wire:
//! - **GRUB**. Debian's network builds (`grubnetx64.efi.signed`, `build-efi-images`) have the
//!   prefix `/grub` on the server they were fetched from, and an embedded config that sources
//!   `$prefix/x86_64-efi/grub.cfg` if `[ -e ]` finds it, else `$prefix/grub.cfg` (arm64:
//!   `arm64-efi/`). Seen here, Debian 12's and 13's GRUB never ask for the first over TFTP or
//!   HTTP (after the `<platform>/*.lst` files normal mode reads) and read `grub/grub.cfg`. They
//!   never search per-MAC names themselves; upstream GRUB's `normal` does, on a TFTP prefix
//!   (grub-core/net/net.c, `grub_net_search_config_file`): `grub.cfg-<uuid>` (2.12, from DHCP
//!   option 97), `grub.cfg-01-<mac>` (hyphens), then the client's IPv4 address in upper-case
//!   hex (`grub.cfg-C6120033`), shorter and shorter (`grub.cfg-C612003`, …, `grub.cfg-C`),
//!   then `grub.cfg`. xdpboot answers the per-MAC name for the node asking, and the whole-address
//!   name for the address asking (its MAC from the kernel's neighbour table); the UUID and the
//!   shorter, subnet-wide hex names are not made (a file of that name in a root is served), so
//!   GRUB goes on to the next. Every kind of GRUB ends at a per-node config: `grub.cfg` is a
//!   bootstrap, the same for every node, that reads
//!   `${grub_cpu}-${grub_platform}/grub.cfg-01-${net_default_mac}`, which tells xdpboot the
//!   GRUB's platform too (the MAC with colons, which xdpboot takes as well).
//! - **PXELINUX** looks beside itself for `pxelinux.cfg/<uuid>`, `pxelinux.cfg/01-<mac>`, the
//!   address in hex and `pxelinux.cfg/default` (syslinux `doc/pxelinux.txt`); xdpboot answers
//!   `01-<mac>`.
//! - **iPXE** told to boot locally fetches [`LOCAL_SCRIPT_NAME`] (over TFTP: the name has no
//!   scheme).
//!
//! A file of the same name in a root wins over the generated one, as a loader in a root wins
//! over the package's.

use std::net::{IpAddr, Ipv4Addr};

use crate::dhcp::classify::MacDisplay;
use crate::dhcp::policy::{LOCAL_BOOT_SCRIPT, parse_mac};

/// The directory of GRUB's files: the prefix built into Debian's and Ubuntu's network GRUB.
pub const GRUB_PREFIX: &str = "grub";
/// The script iPXE fetches when told to boot from its disk.
pub const LOCAL_SCRIPT_NAME: &str = LOCAL_BOOT_SCRIPT;
/// What that script says and does: iPXE's `exit` returns to the firmware, which tries its next
/// boot device (a BIOS the disk after the NIC; UEFI its next boot option).
pub const LOCAL_SCRIPT: &str = "#!ipxe\necho xdpboot: booting from the local disk\nexit\n";

/// A GRUB platform, as GRUB names its module directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrubPlatform {
    X86_64Efi,
    Arm64Efi,
}

impl GrubPlatform {
    pub const ALL: [GrubPlatform; 2] = [GrubPlatform::X86_64Efi, GrubPlatform::Arm64Efi];

    /// GRUB's directory name (`$prefix/<dir>/`).
    pub fn dir(self) -> &'static str {
        match self {
            GrubPlatform::X86_64Efi => "x86_64-efi",
            GrubPlatform::Arm64Efi => "arm64-efi",
        }
    }

    /// The name the GRUB image is served under (what shim fetches).
    pub fn image(self) -> &'static str {
        match self {
            GrubPlatform::X86_64Efi => "grubx64.efi",
            GrubPlatform::Arm64Efi => "grubaa64.efi",
        }
    }

    /// The architecture as the DHCP side names it (`{{arch}}` in templates).
    pub fn arch(self) -> &'static str {
        match self {
            GrubPlatform::X86_64Efi => "uefi-x64",
            GrubPlatform::Arm64Efi => "uefi-arm64",
        }
    }

    fn from_dir(dir: &str) -> Option<GrubPlatform> {
        GrubPlatform::ALL.into_iter().find(|p| p.dir() == dir)
    }
}

/// A file xdpboot makes for the loader asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThirdStageName {
    /// `grub/grub.cfg` or `grub/<platform>/grub.cfg`: the bootstrap, the same for every node.
    GrubBootstrap { platform: Option<GrubPlatform> },
    /// `grub/[<platform>/]grub.cfg-01-<mac>`: the node's own GRUB config.
    GrubConfig {
        platform: Option<GrubPlatform>,
        mac: [u8; 6],
    },
    /// `grub/[<platform>/]grub.cfg-<hex>`: GRUB's name by the client's IPv4 address, whole or
    /// a prefix ([`GrubAddress`]).
    GrubConfigByAddress {
        platform: Option<GrubPlatform>,
        address: GrubAddress,
    },
    /// `pxelinux.cfg/01-<mac>`: the node's own PXELINUX config.
    PxelinuxConfig { mac: [u8; 6] },
    /// [`LOCAL_SCRIPT_NAME`].
    LocalScript,
}

impl ThirdStageName {
    /// The name `relative` (a path inside the roots, no leading `/`, percent-decoded) stands
    /// for, if it is one of the names above.
    pub fn parse(relative: &str) -> Option<ThirdStageName> {
        if relative == LOCAL_SCRIPT_NAME {
            return Some(ThirdStageName::LocalScript);
        }
        if let Some(name) = relative.strip_prefix("pxelinux.cfg/") {
            return Some(ThirdStageName::PxelinuxConfig {
                mac: per_mac(name)?,
            });
        }
        let rest = relative.strip_prefix(GRUB_PREFIX)?.strip_prefix('/')?;
        let (platform, name) = match rest.split_once('/') {
            Some((dir, name)) => (Some(GrubPlatform::from_dir(dir)?), name),
            None => (None, rest),
        };
        if name == "grub.cfg" {
            return Some(ThirdStageName::GrubBootstrap { platform });
        }
        let suffix = name.strip_prefix("grub.cfg-")?;
        if let Some(mac) = per_mac(suffix) {
            return Some(ThirdStageName::GrubConfig { platform, mac });
        }
        Some(ThirdStageName::GrubConfigByAddress {
            platform,
            address: GrubAddress::parse(suffix)?,
        })
    }
}

/// The hex digits of a GRUB config name by address: an IPv4 address as `%02X%02X%02X%02X`,
/// or the first 1 to 7 digits of one (GRUB drops a digit at a time: grub-core/net/net.c,
/// `search_through`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrubAddress {
    /// The digits read, left-aligned: `C612` is `0xC6120000`.
    value: u32,
    digits: u8,
}

impl GrubAddress {
    /// 1 to 8 upper-case hex digits, as GRUB writes them.
    fn parse(text: &str) -> Option<GrubAddress> {
        let digits = u8::try_from(text.len())
            .ok()
            .filter(|n| (1..=8).contains(n))?;
        if !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return None;
        }
        let value = u32::from_str_radix(text, 16).ok()? << (4 * (8 - u32::from(digits)));
        Some(GrubAddress { value, digits })
    }

    /// The whole address this name gives, if it gives a whole one.
    pub fn whole(self) -> Option<Ipv4Addr> {
        (self.digits == 8).then(|| Ipv4Addr::from(self.value))
    }
}

/// GRUB's config name by `ip`, whole: `grub.cfg-C6120033`.
pub fn grub_address_name(ip: Ipv4Addr) -> String {
    format!("grub.cfg-{:08X}", u32::from(ip))
}

/// `01-<mac>` (ARP hardware type 1, Ethernet), the MAC with hyphens or colons.
fn per_mac(name: &str) -> Option<[u8; 6]> {
    parse_mac(name.strip_prefix("01-")?)
}

/// `01-52-54-00-12-34-56`: how GRUB and PXELINUX name a per-MAC file.
pub fn per_mac_name(mac: &[u8; 6]) -> String {
    format!("01-{}", MacDisplay(mac)).replace(':', "-")
}

/// The GRUB bootstrap: it goes on to the node's own config, by the MAC GRUB booted from
/// (`net_default_mac`, set from the interface GRUB was loaded over: grub-core/net/net.c), in
/// the directory named after GRUB's platform as GRUB names its module directory
/// (`x86_64-efi`: `grub_cpu` and `grub_platform`, set by GRUB's kernel).
pub fn grub_bootstrap(platform: Option<GrubPlatform>) -> String {
    let dir = platform.map_or("${grub_cpu}-${grub_platform}", |p| p.dir());
    format!(
        "# xdpboot: the same for every node; each goes on to its own config, named by its MAC.\n\
         source ${{prefix}}/{dir}/grub.cfg-01-${{net_default_mac}}\n"
    )
}

/// A GRUB config that says why and leaves network boot: `exit` returns to shim or the
/// firmware, which tries its next boot option (the local disk, when the node is to boot
/// from it).
pub fn grub_exit(why: &str) -> String {
    format!("echo \"xdpboot: {}\"\nexit\n", grub_quotable(why))
}

/// A PXELINUX config that boots the next BIOS boot device (`LOCALBOOT 0`: syslinux
/// `doc/pxelinux.txt`), saying why first.
pub fn pxelinux_local(why: &str) -> String {
    format!(
        "SERIAL 0 115200\nSAY xdpboot: {why}\nDEFAULT local\nPROMPT 0\nLABEL local\n  LOCALBOOT 0\n"
    )
}

/// `why` without the characters a GRUB double-quoted string treats specially.
fn grub_quotable(why: &str) -> String {
    why.chars()
        .filter(|c| !matches!(c, '"' | '\\' | '$'))
        .collect()
}

/// How a GRUB reaches xdpboot for its kernel, initrds and overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrubFetch {
    /// GRUB's `http` module (Debian 13's network GRUB has it), on port 80: GRUB's HTTP client
    /// connects nowhere else (grub-core/net/http.c, `HTTP_PORT`).
    Http,
    /// GRUB's `tftp` module (every network GRUB; Debian 12's has no `http`).
    Tftp,
}

impl GrubFetch {
    pub fn name(self) -> &'static str {
        match self {
            GrubFetch::Http => "http",
            GrubFetch::Tftp => "tftp",
        }
    }

    /// GRUB's device for `server`: `(http,198.18.0.1)`. Followed by an absolute path, it names
    /// a file on xdpboot (`(tftp,198.18.0.1)/boot/kernel`).
    pub fn device(self, server: IpAddr) -> String {
        format!("({},{server})", self.name())
    }
}

/// A URL as a GRUB file name, when GRUB can fetch it: `http://host/path` (port 80, the only one
/// GRUB's HTTP client connects to) becomes `(http,host)/path`. Boot API answers name their
/// files by URL.
pub fn grub_file_of_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let host = match authority.rsplit_once(':') {
        Some((host, "80")) => host,
        Some(_) => return None,
        None => authority,
    };
    if host.is_empty() || host.contains(['(', ')', ',', '\'']) || path.contains('\'') {
        return None;
    }
    Some(format!("(http,{host}){path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x18, 0x01, 0x01];

    #[test]
    fn the_names_grub_pxelinux_and_ipxe_ask_for_are_recognised() {
        use ThirdStageName::*;
        let x64 = Some(GrubPlatform::X86_64Efi);
        for (name, expected) in [
            ("grub/grub.cfg", Some(GrubBootstrap { platform: None })),
            (
                "grub/x86_64-efi/grub.cfg",
                Some(GrubBootstrap { platform: x64 }),
            ),
            (
                "grub/arm64-efi/grub.cfg",
                Some(GrubBootstrap {
                    platform: Some(GrubPlatform::Arm64Efi),
                }),
            ),
            (
                "grub/grub.cfg-01-52-54-00-18-01-01",
                Some(GrubConfig {
                    platform: None,
                    mac: MAC,
                }),
            ),
            (
                "grub/x86_64-efi/grub.cfg-01-52:54:00:18:01:01",
                Some(GrubConfig {
                    platform: x64,
                    mac: MAC,
                }),
            ),
            (
                "pxelinux.cfg/01-52-54-00-18-01-01",
                Some(PxelinuxConfig { mac: MAC }),
            ),
            ("local.ipxe", Some(LocalScript)),
            (
                "grub/grub.cfg-C6120133",
                Some(GrubConfigByAddress {
                    platform: None,
                    address: GrubAddress {
                        value: 0xC612_0133,
                        digits: 8,
                    },
                }),
            ),
            (
                "grub/x86_64-efi/grub.cfg-C6",
                Some(GrubConfigByAddress {
                    platform: x64,
                    address: GrubAddress {
                        value: 0xC600_0000,
                        digits: 2,
                    },
                }),
            ),
            // GRUB writes hex in upper case; nine digits are no IPv4 address; GRUB 2.12's
            // UUID names, PXELINUX's UUID and default: not made here.
            ("grub/grub.cfg-c6120133", None),
            ("grub/grub.cfg-C61201330", None),
            ("grub/grub.cfg-", None),
            ("grub/grub.cfg-00112233-4455-6677-8899-525400180101", None),
            ("pxelinux.cfg/default", None),
            ("pxelinux.cfg/00112233-4455-6677-8899-525400180101", None),
            ("grub/x86_64-efi/command.lst", None),
            ("grub/i386-pc/grub.cfg", None),
            ("grub/grub.cfg-01-52-54-00-18-01", None),
            ("other/grub.cfg", None),
            ("grubx64.efi", None),
        ] {
            assert_eq!(ThirdStageName::parse(name), expected, "{name}");
        }
        assert_eq!(per_mac_name(&MAC), "01-52-54-00-18-01-01");
    }

    #[test]
    fn only_a_whole_hex_address_names_one_machine() {
        let ip = Ipv4Addr::new(198, 18, 1, 51);
        let name = grub_address_name(ip);
        assert_eq!(name, "grub.cfg-C6120133");
        let address = |name: &str| match ThirdStageName::parse(&format!("grub/{name}")) {
            Some(ThirdStageName::GrubConfigByAddress { address, .. }) => address,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(address(&name).whole(), Some(ip));
        // Every shorter name GRUB tries is a prefix of a subnet's addresses, no one machine's.
        for digits in 1..8 {
            assert_eq!(
                address(&name[..9 + digits]).whole(),
                None,
                "{digits} digits"
            );
        }
    }

    #[test]
    fn the_bootstrap_goes_on_to_the_per_mac_config_beside_it() {
        assert_eq!(
            grub_bootstrap(Some(GrubPlatform::X86_64Efi)).lines().last(),
            Some("source ${prefix}/x86_64-efi/grub.cfg-01-${net_default_mac}")
        );
        assert_eq!(
            grub_bootstrap(None).lines().last(),
            Some("source ${prefix}/${grub_cpu}-${grub_platform}/grub.cfg-01-${net_default_mac}")
        );
    }

    #[test]
    fn urls_become_grub_file_names_only_where_grub_can_fetch_them() {
        assert_eq!(
            grub_file_of_url("http://198.18.0.9/k/vmlinuz?x=1").as_deref(),
            Some("(http,198.18.0.9)/k/vmlinuz?x=1")
        );
        assert_eq!(
            grub_file_of_url("http://cmdb:80/vmlinuz").as_deref(),
            Some("(http,cmdb)/vmlinuz")
        );
        assert_eq!(grub_file_of_url("http://cmdb:8080/vmlinuz"), None);
        assert_eq!(grub_file_of_url("https://cmdb/vmlinuz"), None);
        assert_eq!(grub_file_of_url("http://a'b/vmlinuz"), None);
        assert_eq!(
            GrubFetch::Tftp.device("198.18.0.1".parse().unwrap()),
            "(tftp,198.18.0.1)"
        );
    }

    #[test]
    fn texts_that_leave_network_boot_say_why_safely() {
        assert_eq!(
            grub_exit("no kernel \"$x\""),
            "echo \"xdpboot: no kernel x\"\nexit\n"
        );
        assert!(pxelinux_local("local").contains("LOCALBOOT 0"));
    }
}
