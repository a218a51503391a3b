//! What a client boots: an ordered table of rules, first match wins.
//!
//! A rule matches on what [`classify`](super::classify) found (architecture, PXE or HTTP boot,
//! iPXE or not, MAC, UUID) and names one action: a loader over TFTP, a URL, a loader chain
//! (shim, GRUB, PXELINUX, iPXE) by its first-stage file, the client's own disk, or silence. The
//! table comes from the config file (or the embedded default); this module only evaluates it.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use boot_common::wire::mac::MacAddr;

use super::classify::{BootProtocol, Client, ClientArch, MacDisplay, UuidDisplay, guid_to_uuid};

/// The longest boot file name that fits the BOOTP `file` field with its NUL (RFC 2131 §2).
pub const MAX_BOOT_FILE_LEN: usize = 127;
/// The longest URL a template may render to for a DHCPv6 client: its boot file URL option has
/// no such field to fit (RFC 5970 §3.1), and a bracketed IPv6 server address is up to 26
/// bytes longer than a dotted quad. Room for a template that fits [`MAX_BOOT_FILE_LEN`] with
/// IPv4 and names `{server}` up to four times.
pub const MAX_BOOT_URL_LEN: usize = 255;
/// `[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]`: the longest `{server}` in a URL over IPv6.
const LONGEST_IPV6_HOST: usize = 41;

/// One row of the policy table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Shown in logs ("rule=bios").
    pub name: String,
    pub matches: Match,
    pub action: Action,
}

/// Conditions of a rule; every condition that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub arch: Option<Vec<ClientArch>>,
    pub protocol: Option<BootProtocol>,
    pub ipxe: Option<bool>,
    pub mac: Option<Vec<[u8; 6]>>,
    pub uuid: Option<Vec<[u8; 16]>>,
}

/// What a matching rule hands the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A first-stage loader, fetched over TFTP from the TFTP root. Only PXE ROMs fetch over
    /// TFTP, so such a rule never matches UEFI HTTP-boot clients.
    Tftp(String),
    /// A URL template. Only iPXE and UEFI HTTP boot speak HTTP, so such a rule never matches a
    /// PXE ROM that is not iPXE.
    Http(UrlTemplate),
    /// The first stage of a loader chain for the client's architecture: its file over TFTP to
    /// PXE ROMs, its URL on our HTTP port to UEFI HTTP boot. One rule serves both.
    Loader(Loader),
    /// Boot from the client's own disk, at once: a PXE ROM gets a boot menu whose only item is
    /// local boot, iPXE a script that exits (see [`BootAction::Local`]).
    Local,
    /// Stay silent: the client is left to another boot server.
    Silent,
}

/// A loader chain a policy rule can start, named by its first stage. Each knows its first-stage
/// file per architecture; the files come from the TFTP or HTTP root, or from the
/// distribution's packages ([`crate::loaders`]). xdpboot never signs anything: a Secure Boot
/// chain is the distribution's signed files, served as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loader {
    /// The distribution's shim, signed by Microsoft's UEFI CA, which loads the
    /// distribution-signed GRUB (`grubx64.efi`, from the TFTP root or beside shim's URL), which
    /// reads its per-node config from xdpboot (Secure Boot).
    Shim,
    /// GRUB straight from the firmware (no Secure Boot, or firmware that trusts the
    /// distribution's key).
    Grub,
    /// PXELINUX (`lpxelinux.0`, which fetches over HTTP too) for BIOS, with its per-node config.
    Pxelinux,
    /// iPXE: the builds of the `ipxe` package, as the default table hands them out.
    Ipxe,
}

impl Loader {
    pub const NAMES: &'static [&'static str] = &["shim", "grub", "pxelinux", "ipxe"];

    pub fn name(self) -> &'static str {
        match self {
            Loader::Shim => "shim",
            Loader::Grub => "grub",
            Loader::Pxelinux => "pxelinux",
            Loader::Ipxe => "ipxe",
        }
    }

    pub fn from_name(name: &str) -> Option<Loader> {
        Some(match name {
            "shim" => Loader::Shim,
            "grub" => Loader::Grub,
            "pxelinux" => Loader::Pxelinux,
            "ipxe" => Loader::Ipxe,
            _ => return None,
        })
    }

    /// The first-stage file for `arch`, under the name the loader's own code expects where it
    /// matters (shim fetches `grubx64.efi`/`grubaa64.efi` by those names: shim `netboot.c`,
    /// `DEFAULT_LOADER`); `None` where the chain has no build for it.
    pub fn first_stage(self, arch: ClientArch) -> Option<&'static str> {
        use ClientArch::{Bios, UefiArm64, UefiRiscV64, UefiX64};
        match (self, arch) {
            (Loader::Shim, UefiX64) => Some("shimx64.efi"),
            (Loader::Shim, UefiArm64) => Some("shimaa64.efi"),
            (Loader::Grub, UefiX64) => Some("grubx64.efi"),
            (Loader::Grub, UefiArm64) => Some("grubaa64.efi"),
            (Loader::Pxelinux, Bios) => Some("lpxelinux.0"),
            (Loader::Ipxe, Bios) => Some("undionly.kpxe"),
            (Loader::Ipxe, UefiX64) => Some("ipxe-amd64.efi"),
            (Loader::Ipxe, UefiArm64) => Some("ipxe-arm64.efi"),
            (Loader::Ipxe, UefiRiscV64) => Some("ipxe-riscv64.efi"),
            _ => None,
        }
    }

    /// What the first stage fetches next by a fixed name, from where it came from (the TFTP root
    /// or beside its URL): shim's GRUB (shim `netboot.c`/`httpboot.c` ask for
    /// `DEFAULT_LOADER`), PXELINUX's core module (`ldlinux.c32`, which it loads before its
    /// config).
    pub fn next_stages(self, arch: ClientArch) -> &'static [&'static str] {
        match (self, arch) {
            (Loader::Shim, ClientArch::UefiX64) => &["grubx64.efi"],
            (Loader::Shim, ClientArch::UefiArm64) => &["grubaa64.efi"],
            (Loader::Pxelinux, ClientArch::Bios) => &["ldlinux.c32"],
            _ => &[],
        }
    }

    /// The architectures [`Loader::first_stage`] has a file for.
    pub fn arches(self) -> impl Iterator<Item = ClientArch> {
        [
            ClientArch::Bios,
            ClientArch::UefiX64,
            ClientArch::UefiArm64,
            ClientArch::UefiRiscV64,
        ]
        .into_iter()
        .filter(move |&arch| self.first_stage(arch).is_some())
    }
}

/// The iPXE script a client told to boot locally fetches (over TFTP, so it needs no HTTP port):
/// it exits, and the firmware goes on to its next boot device.
pub const LOCAL_BOOT_SCRIPT: &str = "local.ipxe";
/// The path UEFI HTTP boot is sent to when it is to boot locally: under `/boot/`, where the
/// HTTP server names only the configured kernel and initrds, so no file of a root can answer
/// it and it is always a 404.
pub const LOCAL_BOOT_PATH: &str = "/boot/local";

/// The boot action for one client, templates filled in. Borrowed from the policy or held
/// inline: deciding allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "the URL is inline so that deciding allocates nothing; an action is made once per \
              request and read in place"
)]
pub enum BootAction<'p> {
    Tftp {
        file: &'p str,
    },
    Http {
        url: BootFile,
    },
    /// A loader chain's first stage: `file` is its TFTP name (PXE) or its URL (HTTP boot);
    /// `name` is the bare file either way.
    Loader {
        loader: Loader,
        name: &'static str,
        file: BootFile,
    },
    /// To the local disk: `file` is [`LOCAL_BOOT_SCRIPT`] for iPXE and the
    /// [`LOCAL_BOOT_PATH`] URL for UEFI HTTP boot; without one, a PXE ROM gets a boot menu whose
    /// only item is local boot (PXE 2.1 §2.2.5, boot server type 0).
    Local {
        file: Option<BootFile>,
    },
    Silent,
}

impl BootAction<'_> {
    /// The `file` field of the reply, when there is one.
    pub fn boot_file(&self) -> Option<&str> {
        match self {
            BootAction::Tftp { file } => Some(file),
            BootAction::Http { url } => Some(url),
            BootAction::Loader { file, .. } => Some(file),
            BootAction::Local { file } => file.as_deref(),
            BootAction::Silent => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            BootAction::Tftp { .. } => "tftp",
            BootAction::Http { .. } => "http",
            BootAction::Loader { loader, .. } => loader.name(),
            BootAction::Local { .. } => "local",
            BootAction::Silent => "silent",
        }
    }
}

/// A rendered boot file URL, kept inline: at most [`MAX_BOOT_FILE_LEN`] bytes (what the BOOTP
/// `file` field holds) for a DHCPv4 client, at most [`MAX_BOOT_URL_LEN`] for a DHCPv6 one.
/// Templates whose longest rendering does not fit are refused when the config is loaded, so
/// writing one never runs out of room.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BootFile {
    bytes: [u8; MAX_BOOT_URL_LEN],
    len: usize,
}

impl BootFile {
    pub const fn new() -> BootFile {
        BootFile {
            bytes: [0; MAX_BOOT_URL_LEN],
            len: 0,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only whole `&str`s are written (`write_str`), so the bytes are UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl Default for BootFile {
    fn default() -> Self {
        BootFile::new()
    }
}

impl std::ops::Deref for BootFile {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for BootFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for BootFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Write for BootFile {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl From<&str> for BootFile {
    /// `text`, cut at [`MAX_BOOT_URL_LEN`] bytes (on a character boundary).
    fn from(text: &str) -> BootFile {
        let mut file = BootFile::new();
        let mut end = text.len().min(MAX_BOOT_URL_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let _ = file.write_str(&text[..end]);
        file
    }
}

impl PartialEq<&str> for BootFile {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The policy table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

/// What the policy table matches on and URL templates read: the same for a DHCPv4 client
/// ([`Client::identity`]) and a DHCPv6 one, so one table decides both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity {
    pub arch: Option<ClientArch>,
    /// `None`: neither PXEClient nor HTTPClient (iPXE over DHCPv6 sends no vendor class).
    pub protocol: Option<BootProtocol>,
    /// The user class says iPXE.
    pub ipxe: bool,
    pub mac: Option<[u8; 6]>,
    /// The machine's UUID as sent (EFI GUID byte order, see [`uuid_matches`]).
    pub uuid: Option<[u8; 16]>,
}

impl Client {
    /// What the policy sees of this client.
    pub fn identity(&self) -> Identity {
        Identity {
            arch: self.arch,
            protocol: self.protocol,
            ipxe: self.ipxe.is_some(),
            mac: self.mac,
            uuid: self.uuid,
        }
    }
}

/// Values a URL template may use; [`Vars::PLACEHOLDERS`] lists them.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The address of the interface the request came in on; an IPv6 one is written in
    /// brackets (RFC 3986 §3.2.2).
    pub server: IpAddr,
    pub http_port: u16,
    pub https_port: u16,
    pub client: &'a Identity,
}

impl Vars<'_> {
    pub const PLACEHOLDERS: &'static [&'static str] =
        &["server", "http_port", "https_port", "mac", "uuid", "arch"];
}

impl Policy {
    /// The first rule that matches `client`, if any.
    pub fn decide(&self, client: &Identity) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.applies_to(client))
    }
}

impl Rule {
    fn applies_to(&self, client: &Identity) -> bool {
        let fetchable = match self.action {
            // Only a PXE client fetches over TFTP: iPXE over DHCPv6 names no protocol, and an
            // iPXE is answered with a URL.
            Action::Tftp(_) => client.protocol == Some(BootProtocol::Pxe),
            Action::Http(_) => client.protocol == Some(BootProtocol::Http) || client.ipxe,
            // A chain serves the architectures it has a build for. iPXE is not handed iPXE
            // again (it would chain itself forever); any other chain's first stage is fine for
            // iPXE, which runs it as a PXE ROM would (BIOS machines whose NIC ROM is iPXE).
            Action::Loader(loader) => {
                client.arch.and_then(|a| loader.first_stage(a)).is_some()
                    && !(loader == Loader::Ipxe && client.ipxe)
            }
            Action::Local | Action::Silent => true,
        };
        fetchable && self.matches.holds(client)
    }
}

impl Match {
    fn holds(&self, client: &Identity) -> bool {
        if let Some(arches) = &self.arch
            && !client.arch.is_some_and(|a| arches.contains(&a))
        {
            return false;
        }
        if let Some(protocol) = self.protocol
            && client.protocol != Some(protocol)
        {
            return false;
        }
        if let Some(ipxe) = self.ipxe
            && client.ipxe != ipxe
        {
            return false;
        }
        if let Some(macs) = &self.mac
            && !client.mac.is_some_and(|m| macs.contains(&m))
        {
            return false;
        }
        if let Some(uuids) = &self.uuid
            && !client
                .uuid
                .is_some_and(|u| uuids.iter().any(|c| uuid_matches(c, &u)))
        {
            return false;
        }
        true
    }
}

/// Firmware sends option 97 with the first three UUID fields little-endian (EDK2 and iPXE, see
/// `tests/data/README.md`), while operators copy UUIDs from `dmidecode` (canonical order).
/// Accept either order so a UUID copied from either place matches.
fn uuid_matches(configured: &[u8; 16], sent: &[u8; 16]) -> bool {
    configured == sent || *configured == guid_to_uuid(sent)
}

/// A URL with `{placeholder}`s, checked when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Server,
    HttpPort,
    HttpsPort,
    Mac,
    Uuid,
    Arch,
}

/// A URL template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{0}}}; known: {list}", list = Vars::PLACEHOLDERS.join(", "))]
    UnknownPlaceholder(String),
    #[error("unclosed '{{' in the URL")]
    Unclosed,
    #[error("URL must start with http:// or https://")]
    NotHttp,
    #[error(
        "URL can grow to {0} bytes, but the BOOTP file field holds {MAX_BOOT_FILE_LEN}: shorten it"
    )]
    TooLong(usize),
    #[error(
        "URL can grow to {0} bytes with an IPv6 server address, more than the {MAX_BOOT_URL_LEN} \
         xdpboot hands out: name {{server}} fewer times"
    )]
    TooLongForIpv6(usize),
}

impl UrlTemplate {
    pub fn parse(source: &str) -> Result<UrlTemplate, TemplateError> {
        if !(source.starts_with("http://") || source.starts_with("https://")) {
            return Err(TemplateError::NotHttp);
        }
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or(TemplateError::Unclosed)? + open;
            parts.push(match &rest[open + 1..close] {
                "server" => Part::Server,
                "http_port" => Part::HttpPort,
                "https_port" => Part::HttpsPort,
                "mac" => Part::Mac,
                "uuid" => Part::Uuid,
                "arch" => Part::Arch,
                other => return Err(TemplateError::UnknownPlaceholder(other.to_owned())),
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let template = UrlTemplate {
            source: source.to_owned(),
            parts,
        };
        let longest = template.longest("255.255.255.255".len());
        if longest > MAX_BOOT_FILE_LEN {
            return Err(TemplateError::TooLong(longest));
        }
        let longest = template.longest(LONGEST_IPV6_HOST);
        if longest > MAX_BOOT_URL_LEN {
            return Err(TemplateError::TooLongForIpv6(longest));
        }
        Ok(template)
    }

    /// The longest rendering with a server address of `server_len` bytes, so a URL that cannot
    /// fit is refused at start rather than truncated for some clients.
    fn longest(&self, server_len: usize) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(t) => t.len(),
                Part::Server => server_len,
                Part::HttpPort | Part::HttpsPort => "65535".len(),
                Part::Mac => "00:00:00:00:00:00".len(),
                Part::Uuid => "00000000-0000-0000-0000-000000000000".len(),
                Part::Arch => "uefi-riscv64".len(),
            })
            .sum()
    }

    /// The URL for one client. The template fits [`MAX_BOOT_FILE_LEN`] with an IPv4 server and
    /// [`MAX_BOOT_URL_LEN`] with an IPv6 one whatever the values (checked when the config is
    /// loaded), so the rendering is whole.
    pub fn render(&self, vars: &Vars<'_>) -> BootFile {
        let mut out = BootFile::new();
        for part in &self.parts {
            // It fits (see above): a write cannot fail.
            let _ = match part {
                Part::Text(t) => out.write_str(t),
                Part::Server => match vars.server {
                    IpAddr::V4(v4) => write!(out, "{v4}"),
                    IpAddr::V6(v6) => write!(out, "[{v6}]"),
                },
                Part::HttpPort => write!(out, "{}", vars.http_port),
                Part::HttpsPort => write!(out, "{}", vars.https_port),
                Part::Mac => match &vars.client.mac {
                    Some(mac) => write!(out, "{}", MacDisplay(mac)),
                    None => Ok(()),
                },
                Part::Uuid => match &vars.client.uuid {
                    Some(uuid) => write!(out, "{}", UuidDisplay(uuid)),
                    None => Ok(()),
                },
                Part::Arch => match vars.client.arch {
                    Some(arch) => out.write_str(arch.name()),
                    None => Ok(()),
                },
            };
        }
        out
    }
}

/// The conditions as the config writes them (`arch=bios,uefi-x64 ipxe=true`), or `any client`.
impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
            items.iter().map(show).collect::<Vec<_>>().join(",")
        }
        let mut conditions = Vec::new();
        if let Some(protocol) = self.protocol {
            conditions.push(format!("firmware={}", protocol.name()));
        }
        if let Some(arch) = &self.arch {
            conditions.push(format!("arch={}", list(arch, ToString::to_string)));
        }
        if let Some(ipxe) = self.ipxe {
            conditions.push(format!("ipxe={ipxe}"));
        }
        if let Some(macs) = &self.mac {
            conditions.push(format!("mac={}", list(macs, |m| MacDisplay(m).to_string())));
        }
        if let Some(uuids) = &self.uuid {
            conditions.push(format!(
                "uuid={}",
                list(uuids, |u| UuidDisplay(u).to_string())
            ));
        }
        if conditions.is_empty() {
            f.write_str("any client")
        } else {
            f.write_str(&conditions.join(" "))
        }
    }
}

/// The action as the config writes it: `tftp FILE`, `http URL`, `loader shim`, `local` or
/// `silent`.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Tftp(file) => write!(f, "tftp {file}"),
            Action::Http(url) => write!(f, "http {url}"),
            Action::Loader(loader) => write!(f, "loader {}", loader.name()),
            Action::Local => f.write_str("local"),
            Action::Silent => f.write_str("silent"),
        }
    }
}

impl fmt::Display for UrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Action {
    /// Fills in the templates for one client.
    pub fn resolve(&self, vars: &Vars<'_>) -> BootAction<'_> {
        match self {
            Action::Tftp(file) => BootAction::Tftp { file },
            Action::Http(template) => BootAction::Http {
                url: template.render(vars),
            },
            Action::Loader(loader) => {
                // `applies_to` only lets a rule match an arch the chain has a file for.
                let name = vars
                    .client
                    .arch
                    .and_then(|arch| loader.first_stage(arch))
                    .unwrap_or_default();
                let file = if vars.client.protocol == Some(BootProtocol::Http) {
                    loader_url(vars, name)
                } else {
                    BootFile::from(name)
                };
                BootAction::Loader {
                    loader: *loader,
                    name,
                    file,
                }
            }
            Action::Local => local_boot(vars),
            Action::Silent => BootAction::Silent,
        }
    }
}

/// The local-boot answer for the client of `vars`: iPXE gets a script that exits; a PXE ROM,
/// the local-boot menu. UEFI HTTP boot has no local-boot answer in its protocol, and left
/// unanswered it waits out its own DHCP (a minute, seen with OVMF) before the firmware tries
/// the disk: it gets the URL of [`LOCAL_BOOT_PATH`], which answers 404 at once, and EDK2 gives
/// up that boot option on it ("Could not retrieve NBP file size").
pub fn local_boot(vars: &Vars<'_>) -> BootAction<'static> {
    if vars.client.ipxe {
        BootAction::Local {
            file: Some(BootFile::from(LOCAL_BOOT_SCRIPT)),
        }
    } else if vars.client.protocol == Some(BootProtocol::Http) {
        BootAction::Local {
            file: Some(loader_url(vars, LOCAL_BOOT_PATH.trim_start_matches('/'))),
        }
    } else {
        BootAction::Local { file: None }
    }
}

/// `http://<server>[:<port>]/<name>`: the URL a UEFI HTTP-boot client fetches a chain's first
/// stage from. The port is left out when it is 80: shim and GRUB fetch what follows (`grubx64.efi`,
/// GRUB's `/grub/…`) from the same host, and GRUB's own HTTP client can only reach port 80
/// (grub-core/net/http.c, `HTTP_PORT`). At most 48 bytes over IPv4, so it always fits `file`;
/// an IPv6 address is written in brackets (RFC 3986 §3.2.2), at most 74 bytes, within
/// [`MAX_BOOT_URL_LEN`].
fn loader_url(vars: &Vars<'_>, name: &str) -> BootFile {
    let mut url = BootFile::new();
    // "http://" 7 + address 15 (IPv6: 41) + ":65535" 6 + "/" 1 + the longest first stage (16):
    // it fits.
    let _ = match vars.server {
        IpAddr::V4(v4) => write!(url, "http://{v4}"),
        IpAddr::V6(v6) => write!(url, "http://[{v6}]"),
    };
    if vars.http_port != 80 {
        let _ = write!(url, ":{}", vars.http_port);
    }
    let _ = write!(url, "/{name}");
    url
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), as the wire layer's [`MacAddr`] reads it.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    text.parse::<MacAddr>().ok().map(MacAddr::octets)
}

/// Parses the canonical 8-4-4-4-12 UUID form.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = text.split('-').collect();
    if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    let mut uuid = [0; 16];
    for (i, byte) in uuid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::classify::{IpxeFeatures, ServerPort};
    use dhcproto::v4::MessageType;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn client(arch: ClientArch, protocol: BootProtocol, ipxe: bool) -> Identity {
        Client {
            message_type: MessageType::Discover,
            port: ServerPort::Dhcp,
            xid: 1,
            mac: Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            arch: Some(arch),
            protocol: Some(protocol),
            undi: None,
            uuid: None,
            ipxe: ipxe.then(IpxeFeatures::default),
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
        }
        .identity()
    }

    fn rule(name: &str, matches: Match, action: Action) -> Rule {
        Rule {
            name: name.into(),
            matches,
            action,
        }
    }

    #[test]
    fn first_matching_rule_wins_and_tftp_rules_skip_http_boot_clients() {
        let policy = Policy {
            rules: vec![
                rule(
                    "tftp-any",
                    Match::default(),
                    Action::Tftp("undionly.kpxe".into()),
                ),
                rule(
                    "http-any",
                    Match::default(),
                    Action::Http(UrlTemplate::parse("http://{server}/x.efi").unwrap()),
                ),
            ],
        };
        let pxe = client(ClientArch::Bios, BootProtocol::Pxe, false);
        assert_eq!(policy.decide(&pxe).unwrap().name, "tftp-any");
        let http = client(ClientArch::UefiX64, BootProtocol::Http, false);
        assert_eq!(policy.decide(&http).unwrap().name, "http-any");
    }

    #[test]
    fn http_rules_never_match_a_pxe_rom_that_is_not_ipxe() {
        let policy = Policy {
            rules: vec![rule(
                "http-any",
                Match::default(),
                Action::Http(UrlTemplate::parse("http://{server}/x").unwrap()),
            )],
        };
        assert!(
            policy
                .decide(&client(ClientArch::Bios, BootProtocol::Pxe, false))
                .is_none()
        );
        assert!(
            policy
                .decide(&client(ClientArch::Bios, BootProtocol::Pxe, true))
                .is_some()
        );
    }

    #[test]
    fn uuid_matches_in_either_byte_order() {
        let dmidecode = parse_uuid("4c4c4544-0035-3010-8030-b4c04f4a4e31").unwrap();
        let wire = guid_to_uuid(&dmidecode);
        assert!(uuid_matches(&dmidecode, &wire));
        assert!(uuid_matches(&dmidecode, &dmidecode));
        assert!(!uuid_matches(&dmidecode, &[0; 16]));
    }

    #[test]
    fn templates_render_and_reject_what_cannot_work() {
        let t = UrlTemplate::parse("http://{server}:{http_port}/boot.ipxe?mac={mac}&arch={arch}")
            .unwrap();
        let c = client(ClientArch::Bios, BootProtocol::Pxe, true);
        let mut vars = Vars {
            server: Ipv4Addr::new(198, 18, 0, 1).into(),
            http_port: 8080,
            https_port: 8443,
            client: &c,
        };
        assert_eq!(
            t.render(&vars),
            "http://198.18.0.1:8080/boot.ipxe?mac=52:54:00:12:34:56&arch=bios"
        );
        vars.server = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into();
        assert_eq!(
            t.render(&vars),
            "http://[fd00::1]:8080/boot.ipxe?mac=52:54:00:12:34:56&arch=bios"
        );
        assert_eq!(
            UrlTemplate::parse("http://{nope}/"),
            Err(TemplateError::UnknownPlaceholder("nope".into()))
        );
        assert_eq!(
            UrlTemplate::parse("http://{server/"),
            Err(TemplateError::Unclosed)
        );
        assert_eq!(UrlTemplate::parse("tftp://x/"), Err(TemplateError::NotHttp));
        let long = format!("http://{{server}}/{}", "a".repeat(110));
        assert!(matches!(
            UrlTemplate::parse(&long),
            Err(TemplateError::TooLong(_))
        ));
        // Fits the BOOTP field with dotted quads, not the DHCPv6 limit with bracketed IPv6.
        let servers = format!("http://{}/", "{server}/".repeat(7));
        assert!(matches!(
            UrlTemplate::parse(&servers),
            Err(TemplateError::TooLongForIpv6(_))
        ));
    }

    #[test]
    fn macs_and_uuids_parse_strictly() {
        assert_eq!(
            parse_mac("52:54:00:AB:cd:01"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 1])
        );
        assert_eq!(
            parse_mac("52-54-00-ab-cd-01"),
            parse_mac("52:54:00:ab:cd:01")
        );
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:01:02"), None);
        assert_eq!(parse_mac("5:54:00:ab:cd:01"), None);
        assert_eq!(parse_uuid("4c4c4544-0035-3010-8030-b4c04f4a4e3"), None);
        assert!(parse_uuid("4c4c4544-0035-3010-8030-b4c04f4a4e31").is_some());
    }
}
