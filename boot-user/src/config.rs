//! The TOML configuration: an embedded default (`config/xdpboot.toml`), an optional file read
//! on top of it, and validation that names the file, line and key of every error.
//!
//! Defaults live in one place, the embedded file: every key a user file leaves out takes its
//! value from there, and a test proves the embedded file is complete and valid.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::dhcp::UrlPorts;
use crate::dhcp::classify::{BootProtocol, ClientArch};
use crate::dhcp::policy::{self, Action, Loader, Match, Policy, Rule, UrlTemplate};
use crate::loaders::LoaderSearch;
use crate::template::Template;

/// The embedded default configuration.
pub const DEFAULT_TOML: &str = include_str!("../config/xdpboot.toml");
/// How the embedded default is named in error messages.
const DEFAULT_NAME: &str = "<embedded default>";

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub interfaces: Vec<String>,
    pub backend: Backend,
    /// `[server] drain_secs`: how long a stop (SIGTERM, SIGINT) lets TFTP transfers and HTTP
    /// responses in flight finish before it cuts them; zero stops at once.
    pub drain: Duration,
    pub xdp: Xdp,
    pub tftp: Tftp,
    pub http: Http,
    pub boot: Boot,
    /// The files of every node's overlay.
    pub overlay: Vec<OverlayFile>,
    /// Per-node settings, matched by MAC or UUID.
    pub nodes: Vec<Node>,
    pub policy: Policy,
    pub admin: Admin,
    pub api: Api,
    /// Where loaders missing from the roots are looked for (`[loaders] search`).
    pub loaders: LoaderSearch,
    /// `[ipv6]`: DHCPv6 boot beside the site's DHCPv6 server.
    pub ipv6: Ipv6,
}

/// The `[ipv6]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ipv6 {
    /// Answer DHCPv6 boot clients (port 547 and 4011 over IPv6) on the served interfaces.
    pub enabled: bool,
    /// The address put in boot URLs, per interface; an interface not named uses its first
    /// global or unique-local address.
    pub addresses: BTreeMap<String, std::net::Ipv6Addr>,
}

/// One file of every node's overlay (`[[overlay]]`): where, with which permissions, from which template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayFile {
    /// Relative path inside the initramfs, e.g. `etc/hostname`.
    pub path: String,
    /// Permission bits (e.g. 0o644); the file type is added here.
    pub mode: u32,
    pub content: Template,
}

/// The `[admin]` section: the listener for `/metrics` and the status page, and the bounds of
/// the node table behind the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub enabled: bool,
    pub listen: std::net::SocketAddr,
    /// Most nodes the status page remembers; the least recently seen is forgotten first.
    pub max_nodes: usize,
    /// A node not seen for this long is forgotten.
    pub node_ttl: Duration,
}

/// Upper bound of `server.drain_secs`: an hour. A service manager's stop timeout must exceed
/// the bound (systemd's default is 90 s), or it kills the daemon mid-drain.
pub const MAX_DRAIN_SECS: u64 = 3600;

/// Upper bound of `admin.max_nodes`.
pub const MAX_ADMIN_NODES: usize = 1_000_000;
/// Upper bound of `admin.node_ttl_secs`: a week.
pub const MAX_ADMIN_NODE_TTL_SECS: u64 = 7 * 24 * 3600;

/// The `[api]` section: boot decisions from an external system (pixiecore's API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// `http://host:port/prefix`; `None` (an empty `url`) keeps decisions in the policy table.
    pub url: Option<String>,
    pub timeout: std::time::Duration,
    pub cache_ttl: std::time::Duration,
    pub max_cache: usize,
}

/// The `[boot]` section: what the default iPXE script boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// `None`: nothing to boot is configured; `/boot.ipxe` answers 404 and says so in the log.
    pub kernel: Option<PathBuf>,
    pub initrds: Vec<PathBuf>,
    pub cmdline: String,
    /// The iPXE script template, parsed; the default is `ipxe/boot.ipxe`.
    pub script: Template,
    /// The per-node GRUB config template; the default is `ipxe/grub.cfg`.
    pub grub_config: Template,
    /// The per-node PXELINUX config template; the default is `ipxe/pxelinux.cfg`.
    pub pxelinux_config: Template,
    pub retries: u32,
    pub retry_delay: u32,
    /// Hand out https URLs in scripts (for iPXE builds with TLS and a trusted CA).
    pub https: bool,
    /// How long signed overlay URLs stay valid.
    pub url_lifetime: std::time::Duration,
    /// The HMAC key of signed URLs and node tokens; generated at first start when missing.
    pub secret_file: PathBuf,
    /// `[boot.arch.<name>]`: what nodes of one architecture boot instead (an arm64 node cannot
    /// run an x86 kernel); at most one per architecture.
    pub arch: Vec<ArchBoot>,
    /// `[boot] vars`: template variables for every node (a node's own `vars` win), e.g. the
    /// files of ipxe/multiboot.ipxe, ipxe/windows.ipxe or ipxe/esxi.ipxe.
    pub vars: BTreeMap<String, String>,
}

/// `[boot.arch.<name>]`: one architecture's own kernel, initrds or command line. A key left
/// out keeps `[boot]`'s value; read when the node's script is rendered (see [`Boot::files`]),
/// so quick mode's kernel is inherited as well as the config's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchBoot {
    pub arch: ClientArch,
    pub kernel: Option<PathBuf>,
    pub initrds: Option<Vec<PathBuf>>,
    pub cmdline: Option<String>,
}

/// What one node boots: `[boot]`, or its architecture's `[boot.arch.<name>]` over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFiles<'a> {
    /// The architecture whose section applied; `None` for plain `[boot]`. Its files are
    /// served under `/boot/<name>/`.
    pub arch: Option<ClientArch>,
    pub kernel: Option<&'a Path>,
    pub initrds: &'a [PathBuf],
    pub cmdline: &'a str,
}

impl Boot {
    /// The files for a node of architecture `arch` (a [`ClientArch::name`], as the script
    /// URL's `arch=` carries it): its `[boot.arch.<name>]` section over `[boot]`, or `[boot]`
    /// alone when there is none or the name is unknown.
    pub fn files(&self, arch: Option<&str>) -> BootFiles<'_> {
        let own = arch
            .and_then(ClientArch::from_name)
            .and_then(|arch| self.arch.iter().find(|a| a.arch == arch));
        BootFiles {
            arch: own.map(|a| a.arch),
            kernel: own
                .and_then(|a| a.kernel.as_deref())
                .or(self.kernel.as_deref()),
            initrds: own
                .and_then(|a| a.initrds.as_deref())
                .unwrap_or(&self.initrds),
            cmdline: own
                .and_then(|a| a.cmdline.as_deref())
                .unwrap_or(&self.cmdline),
        }
    }
}

/// One node's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub mac: Option<[u8; 6]>,
    pub uuid: Option<[u8; 16]>,
    pub hostname: Option<String>,
    /// Extra kernel command line for this node, after `[boot] cmdline`.
    pub cmdline: Option<String>,
    /// Template variables of this node's script and overlay.
    pub vars: BTreeMap<String, String>,
}

/// The embedded default iPXE script template.
pub const DEFAULT_SCRIPT: &str = include_str!("../../ipxe/boot.ipxe");
/// The embedded default per-node GRUB config template.
pub const DEFAULT_GRUB_CONFIG: &str = include_str!("../../ipxe/grub.cfg");
/// The embedded default per-node PXELINUX config template.
pub const DEFAULT_PXELINUX_CONFIG: &str = include_str!("../../ipxe/pxelinux.cfg");

/// Variables every script template may use; node `vars` add their own names.
pub const SCRIPT_VARIABLES: &[&str] = &[
    "mac",
    "uuid",
    "arch",
    "hostname",
    "server",
    "base_url",
    "kernel_url",
    "initrd_urls",
    "initrd_names",
    "overlay_url",
    "overlay_path",
    "all_initrd_urls",
    "initrd_list",
    "cmdline",
    "retries",
    "retry_delay",
    "token",
    "grub_kernel",
    "grub_initrds",
    "grub_fetch",
];
/// Variables every overlay file template may use; node `vars` add their own names.
pub const OVERLAY_VARIABLES: &[&str] = &["mac", "uuid", "arch", "hostname", "token", "server"];
/// Most `[[node]]` entries and overlay files a config may hold.
pub const MAX_NODES: usize = 100_000;
pub const MAX_OVERLAY_FILES: usize = 256;

/// How port-67 boot requests reach xdpboot in the XDP backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Steer {
    /// Copy them to xdpboot and still pass them to the kernel: a DHCP server on this host keeps
    /// seeing every packet.
    Tee,
    /// Take them (AF_XDP): only for hosts where nothing else listens on UDP 67.
    Redirect,
    /// Take them only when no socket on this host would receive them (the XDP program asks
    /// the kernel per frame), and tee everything while another program holds UDP 67.
    Auto,
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver (native) mode, falling back to generic (skb) mode with a warning.
    Auto,
    /// Driver mode only.
    Driver,
    /// Generic (skb) mode only.
    Skb,
}

/// The `[xdp]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xdp {
    pub steer: Steer,
    pub mode: XdpMode,
    /// Boot requests per second per client MAC before the XDP program sheds them; 0 disables.
    pub shed_rate: u32,
    /// Requests a MAC may send at once before the rate applies.
    pub shed_burst: u32,
    /// Never shed: these plus every MAC named in the policy table.
    pub never_shed: Vec<[u8; 6]>,
}

/// How boot requests reach the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Sockets on UDP 67 and 4011.
    Udp,
    /// The XDP program steers boot requests to the daemon; port 67 stays free.
    Xdp,
    /// XDP where it can attach, UDP elsewhere.
    Auto,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Udp => "udp",
            Backend::Xdp => "xdp",
            Backend::Auto => "auto",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tftp {
    pub root: PathBuf,
    pub port: u16,
    /// Transfers in flight at once; requests beyond are dropped (the client re-sends).
    pub max_transfers: usize,
    /// Retransmissions of one packet before a silent client is dropped.
    pub max_retries: u32,
    /// A whole transfer's limit.
    pub transfer_time_limit: std::time::Duration,
}

/// The `[http]` section: the HTTP(S) server for scripts, kernels, initrds and images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http {
    pub root: PathBuf,
    /// Plain HTTP port; 0 disables the plain listener.
    pub port: u16,
    /// HTTPS port; 0 disables the TLS listener (and certificate handling).
    pub https_port: u16,
    /// PEM certificate chain of the HTTPS listener.
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
    /// Generate a CA and a server certificate at start when `tls_cert` and `tls_key` are absent.
    pub tls_generate: bool,
    /// Names (DNS names or IP addresses) the generated server certificate carries besides the
    /// host's own.
    pub tls_names: Vec<String>,
    /// Simultaneous client connections, plain and TLS together.
    pub max_connections: u32,
    /// How long a client may take to send a request head (and to finish a TLS handshake, and
    /// to start its next request on a kept-alive connection).
    pub header_timeout: Duration,
    /// How long a response may make no progress (the client stopped reading).
    pub send_timeout: Duration,
    /// Per-connection send rate limit in Mbit/s; 0 means none.
    pub pacing_mbit: u32,
}

/// Upper bound of `http.max_connections`: each connection holds a file descriptor.
pub const MAX_HTTP_CONNECTIONS: u32 = 1_000_000;
/// Upper bound of `http.header_timeout_secs` and `http.send_timeout_secs`.
pub const MAX_HTTP_TIMEOUT_SECS: u64 = 3600;

impl Config {
    /// The embedded default.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse("", DEFAULT_NAME)
    }

    /// Reads and validates `path` on top of the embedded default.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Validates `text` (named `file` in errors) on top of the embedded default.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let resolver = Resolver {
            user: Source::new(text, file),
            default: Source::new(DEFAULT_TOML, DEFAULT_NAME),
        };
        let user = resolver.user.deserialize()?;
        let default = resolver.default.deserialize()?;
        resolver.resolve(user, default)
    }

    pub fn url_ports(&self) -> UrlPorts {
        UrlPorts {
            http: self.http.port,
            https: self.http.https_port,
        }
    }

    /// MACs the XDP program must never shed: `xdp.never_shed` plus every MAC the policy names
    /// (the inventory).
    pub fn never_shed(&self) -> Vec<[u8; 6]> {
        let mut macs = self.xdp.never_shed.clone();
        for rule in &self.policy.rules {
            macs.extend(rule.matches.mac.iter().flatten().copied());
        }
        macs.sort_unstable();
        macs.dedup();
        macs
    }

    /// The loaders the policy refers to, with the rule naming each: TFTP files, and the first
    /// stages of loader chains (with the files their first stage fetches next) for the arches
    /// the rule can match.
    pub fn tftp_loaders(&self) -> impl Iterator<Item = (&str, &str)> {
        self.policy.rules.iter().flat_map(|r| {
            let files: Vec<&str> = match &r.action {
                Action::Tftp(file) => vec![file.as_str()],
                Action::Loader(loader) => loader
                    .arches()
                    .filter(|arch| r.matches.arch.as_ref().is_none_or(|a| a.contains(arch)))
                    .flat_map(|arch| {
                        loader
                            .first_stage(arch)
                            .into_iter()
                            .chain(loader.next_stages(arch).iter().copied())
                    })
                    .collect(),
                _ => Vec::new(),
            };
            files.into_iter().map(|file| (r.name.as_str(), file))
        })
    }
}

/// A configuration error: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<FileServer>,
    xdp: Option<FileXdp>,
    tftp: Option<FileTftp>,
    http: Option<FileHttp>,
    boot: Option<FileBoot>,
    overlay: Option<Vec<Spanned<FileOverlay>>>,
    node: Option<Vec<Spanned<FileNode>>>,
    policy: Option<Vec<Spanned<FileRule>>>,
    admin: Option<FileAdmin>,
    api: Option<FileApi>,
    loaders: Option<FileLoaders>,
    ipv6: Option<FileIpv6>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIpv6 {
    enabled: Option<bool>,
    addresses: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLoaders {
    search: Option<Vec<Spanned<PathBuf>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    max_nodes: Option<Spanned<usize>>,
    node_ttl_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApi {
    url: Option<Spanned<String>>,
    timeout_secs: Option<Spanned<u64>>,
    cache_secs: Option<u64>,
    max_cache: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBoot {
    kernel: Option<Spanned<String>>,
    initrds: Option<Vec<Spanned<String>>>,
    cmdline: Option<String>,
    script: Option<Spanned<String>>,
    grub_config: Option<Spanned<String>>,
    pxelinux_config: Option<Spanned<String>>,
    retries: Option<Spanned<u32>>,
    retry_delay: Option<u32>,
    https: Option<bool>,
    url_lifetime: Option<Spanned<u64>>,
    secret_file: Option<Spanned<PathBuf>>,
    arch: Option<BTreeMap<Spanned<String>, Spanned<FileArchBoot>>>,
    vars: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileArchBoot {
    kernel: Option<Spanned<String>>,
    initrds: Option<Vec<Spanned<String>>>,
    cmdline: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOverlay {
    path: Spanned<String>,
    mode: Option<Spanned<String>>,
    content: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    mac: Option<Spanned<String>>,
    uuid: Option<Spanned<String>>,
    hostname: Option<String>,
    cmdline: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    interfaces: Option<Vec<Spanned<String>>>,
    backend: Option<Backend>,
    drain_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileXdp {
    steer: Option<Steer>,
    mode: Option<XdpMode>,
    shed_rate: Option<u32>,
    shed_burst: Option<Spanned<u32>>,
    never_shed: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTftp {
    root: Option<Spanned<PathBuf>>,
    port: Option<Spanned<u16>>,
    max_transfers: Option<Spanned<usize>>,
    max_retries: Option<u32>,
    transfer_time_limit: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    root: Option<Spanned<PathBuf>>,
    port: Option<Spanned<u16>>,
    https_port: Option<Spanned<u16>>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
    tls_generate: Option<bool>,
    tls_names: Option<Vec<Spanned<String>>>,
    max_connections: Option<Spanned<u32>>,
    header_timeout_secs: Option<Spanned<u64>>,
    send_timeout_secs: Option<Spanned<u64>>,
    pacing_mbit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    name: Spanned<String>,
    arch: Option<Vec<Spanned<String>>>,
    firmware: Option<Spanned<String>>,
    ipxe: Option<bool>,
    mac: Option<Vec<Spanned<String>>>,
    uuid: Option<Vec<Spanned<String>>>,
    tftp: Option<Spanned<String>>,
    http: Option<Spanned<String>>,
    loader: Option<Spanned<String>>,
    local: Option<Spanned<bool>>,
    silent: Option<Spanned<bool>>,
}

/// A config text and the name to report it under.
#[derive(Clone, Copy)]
struct Source<'a> {
    text: &'a str,
    name: &'a str,
}

impl<'a> Source<'a> {
    fn new(text: &'a str, name: &'a str) -> Source<'a> {
        Source { text, name }
    }

    fn deserialize(&self) -> Result<FileConfig, ConfigError> {
        toml::from_str(self.text).map_err(|e| ConfigError {
            file: self.name.to_owned(),
            line: e.span().map(|s| self.line_of(&s)),
            key: String::new(),
            message: e.message().trim().to_owned(),
        })
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.name.to_owned(),
            line: Some(self.line_of(&span)),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Picks each value from the user file or else the default, validating as it goes; errors
/// point into whichever text the value came from.
struct Resolver<'a> {
    user: Source<'a>,
    default: Source<'a>,
}

impl Resolver<'_> {
    fn resolve(&self, user: FileConfig, default: FileConfig) -> Result<Config, ConfigError> {
        let incomplete = |key: &str| ConfigError {
            file: DEFAULT_NAME.to_owned(),
            line: None,
            key: key.to_owned(),
            message: "missing from the embedded default".to_owned(),
        };
        let (us, ds) = (
            user.server.unwrap_or_default(),
            default.server.unwrap_or_default(),
        );
        let (ux, dx) = (
            user.xdp.unwrap_or_default(),
            default.xdp.unwrap_or_default(),
        );
        let (ut, dt) = (
            user.tftp.unwrap_or_default(),
            default.tftp.unwrap_or_default(),
        );
        let (uh, dh) = (
            user.http.unwrap_or_default(),
            default.http.unwrap_or_default(),
        );

        let (src, interfaces) = self
            .pick(us.interfaces, ds.interfaces)
            .ok_or_else(|| incomplete("server.interfaces"))?;
        let interfaces = interfaces
            .into_iter()
            .map(|name| validate_interface_name(src, name))
            .collect::<Result<_, _>>()?;
        let backend = us
            .backend
            .or(ds.backend)
            .ok_or_else(|| incomplete("server.backend"))?;
        let (src, drain) = self
            .pick(us.drain_secs, ds.drain_secs)
            .ok_or_else(|| incomplete("server.drain_secs"))?;
        if *drain.get_ref() > MAX_DRAIN_SECS {
            return Err(src.error(
                drain.span(),
                "server.drain_secs",
                format!("must be between 0 and {MAX_DRAIN_SECS} seconds"),
            ));
        }

        let steer = ux
            .steer
            .or(dx.steer)
            .ok_or_else(|| incomplete("xdp.steer"))?;
        let mode = ux.mode.or(dx.mode).ok_or_else(|| incomplete("xdp.mode"))?;
        let shed_rate = ux
            .shed_rate
            .or(dx.shed_rate)
            .ok_or_else(|| incomplete("xdp.shed_rate"))?;
        let (src, shed_burst) = self
            .pick(ux.shed_burst, dx.shed_burst)
            .ok_or_else(|| incomplete("xdp.shed_burst"))?;
        if shed_rate > 0 && *shed_burst.get_ref() == 0 {
            return Err(src.error(
                shed_burst.span(),
                "xdp.shed_burst",
                "must be at least 1 when xdp.shed_rate is set (0 would shed every request)",
            ));
        }
        let (src, macs) = self
            .pick(ux.never_shed, dx.never_shed)
            .ok_or_else(|| incomplete("xdp.never_shed"))?;
        let never_shed = macs
            .into_iter()
            .map(|mac| {
                policy::parse_mac(mac.get_ref()).ok_or_else(|| {
                    src.error(
                        mac.span(),
                        "xdp.never_shed",
                        format!(
                            "{:?} is not a MAC address like 52:54:00:12:34:56",
                            mac.get_ref()
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let xdp = Xdp {
            steer,
            mode,
            shed_rate,
            shed_burst: shed_burst.into_inner(),
            never_shed,
        };

        let (src, root) = self
            .pick(ut.root, dt.root)
            .ok_or_else(|| incomplete("tftp.root"))?;
        let tftp_root = validate_root(src, "tftp.root", root)?;
        let (_, tftp_port) = self
            .pick(ut.port, dt.port)
            .ok_or_else(|| incomplete("tftp.port"))?;
        let (src, max_transfers) = self
            .pick(ut.max_transfers, dt.max_transfers)
            .ok_or_else(|| incomplete("tftp.max_transfers"))?;
        if *max_transfers.get_ref() == 0 {
            return Err(src.error(
                max_transfers.span(),
                "tftp.max_transfers",
                "must be at least 1",
            ));
        }
        let max_retries = ut
            .max_retries
            .or(dt.max_retries)
            .ok_or_else(|| incomplete("tftp.max_retries"))?;
        let (src, time_limit) = self
            .pick(ut.transfer_time_limit, dt.transfer_time_limit)
            .ok_or_else(|| incomplete("tftp.transfer_time_limit"))?;
        if *time_limit.get_ref() == 0 {
            return Err(src.error(
                time_limit.span(),
                "tftp.transfer_time_limit",
                "must be at least 1 second",
            ));
        }
        let http = self.resolve_http(uh, dh)?;
        let (src, search) = self
            .pick(
                user.loaders.and_then(|l| l.search),
                default.loaders.and_then(|l| l.search),
            )
            .ok_or_else(|| incomplete("loaders.search"))?;
        let loaders = LoaderSearch::new(
            search
                .into_iter()
                .map(|dir| validate_root(src, "loaders.search", dir))
                .collect::<Result<_, _>>()?,
        );
        let api = self.resolve_api(
            user.api.unwrap_or_default(),
            default.api.unwrap_or_default(),
        )?;
        let admin = self.resolve_admin(
            user.admin.unwrap_or_default(),
            default.admin.unwrap_or_default(),
        )?;
        let (nodes_src, file_nodes) = match user.node {
            Some(nodes) => (self.user, nodes),
            None => (self.default, default.node.unwrap_or_default()),
        };
        let nodes = resolve_nodes(nodes_src, file_nodes)?;
        // Template variables: the fixed ones and every name a node defines.
        let node_vars: Vec<&str> = nodes
            .iter()
            .flat_map(|n| n.vars.keys().map(String::as_str))
            .collect();
        let boot = self.resolve_boot(
            user.boot.unwrap_or_default(),
            default.boot.unwrap_or_default(),
            &http.root,
            &node_vars,
        )?;
        let (overlay_src, file_overlay) = match user.overlay {
            Some(files) => (self.user, files),
            None => (self.default, default.overlay.unwrap_or_default()),
        };
        // Overlay files may use `[boot] vars` too.
        let all_vars: Vec<&str> = node_vars
            .iter()
            .copied()
            .chain(boot.vars.keys().map(String::as_str))
            .collect();
        let overlay = resolve_overlay(overlay_src, file_overlay, &all_vars)?;

        let ipv6 = self.resolve_ipv6(
            user.ipv6.unwrap_or_default(),
            default.ipv6.unwrap_or_default(),
        )?;

        let (src, rules) = self
            .pick(user.policy, default.policy)
            .ok_or_else(|| incomplete("policy"))?;
        let mut policy = Policy::default();
        for (i, rule) in rules.into_iter().enumerate() {
            let rule = validate_rule(src, i, rule)?;
            if let Some(previous) = policy.rules.iter().find(|r| r.name == rule.name) {
                return Err(ConfigError {
                    file: src.name.to_owned(),
                    line: None,
                    key: format!("policy[{i}].name"),
                    message: format!("duplicate rule name {:?}", previous.name),
                });
            }
            policy.rules.push(rule);
        }

        Ok(Config {
            interfaces,
            backend,
            drain: Duration::from_secs(drain.into_inner()),
            xdp,
            tftp: Tftp {
                root: tftp_root,
                port: tftp_port.into_inner(),
                max_transfers: max_transfers.into_inner(),
                max_retries,
                transfer_time_limit: std::time::Duration::from_secs(time_limit.into_inner()),
            },
            http,
            boot,
            overlay,
            nodes,
            policy,
            admin,
            api,
            loaders,
            ipv6,
        })
    }

    fn resolve_ipv6(&self, user: FileIpv6, default: FileIpv6) -> Result<Ipv6, ConfigError> {
        let incomplete = |key: &str| ConfigError {
            file: DEFAULT_NAME.to_owned(),
            line: None,
            key: format!("ipv6.{key}"),
            message: "missing from the embedded default".to_owned(),
        };
        let enabled = user
            .enabled
            .or(default.enabled)
            .ok_or_else(|| incomplete("enabled"))?;
        let (src, file_addresses) = self
            .pick(user.addresses, default.addresses)
            .ok_or_else(|| incomplete("addresses"))?;
        let mut addresses = BTreeMap::new();
        for (name, address) in file_addresses {
            let key = format!("ipv6.addresses.{}", name.get_ref());
            let name = validate_interface_name(src, name).map_err(|e| ConfigError {
                key: key.clone(),
                ..e
            })?;
            let span = address.span();
            let address =
                validate_url_address(address.get_ref()).map_err(|why| src.error(span, key, why))?;
            addresses.insert(name, address);
        }
        Ok(Ipv6 { enabled, addresses })
    }

    fn resolve_admin(&self, ua: FileAdmin, da: FileAdmin) -> Result<Admin, ConfigError> {
        let incomplete = |key: &str| ConfigError {
            file: DEFAULT_NAME.to_owned(),
            line: None,
            key: format!("admin.{key}"),
            message: "missing from the embedded default".to_owned(),
        };
        let enabled = ua
            .enabled
            .or(da.enabled)
            .ok_or_else(|| incomplete("enabled"))?;
        let (src, listen) = self
            .pick(ua.listen, da.listen)
            .ok_or_else(|| incomplete("listen"))?;
        let listen = listen.get_ref().parse().map_err(|_| {
            src.error(
                listen.span(),
                "admin.listen",
                format!(
                    "{:?} is not an address and port like 127.0.0.1:9180 or [::1]:9180",
                    listen.get_ref()
                ),
            )
        })?;
        let (src, max_nodes) = self
            .pick(ua.max_nodes, da.max_nodes)
            .ok_or_else(|| incomplete("max_nodes"))?;
        if !(1..=MAX_ADMIN_NODES).contains(max_nodes.get_ref()) {
            return Err(src.error(
                max_nodes.span(),
                "admin.max_nodes",
                format!("must be between 1 and {MAX_ADMIN_NODES}"),
            ));
        }
        let (src, ttl) = self
            .pick(ua.node_ttl_secs, da.node_ttl_secs)
            .ok_or_else(|| incomplete("node_ttl_secs"))?;
        if !(1..=MAX_ADMIN_NODE_TTL_SECS).contains(ttl.get_ref()) {
            return Err(src.error(
                ttl.span(),
                "admin.node_ttl_secs",
                format!("must be between 1 and {MAX_ADMIN_NODE_TTL_SECS} seconds (a week)"),
            ));
        }
        Ok(Admin {
            enabled,
            listen,
            max_nodes: max_nodes.into_inner(),
            node_ttl: Duration::from_secs(ttl.into_inner()),
        })
    }

    fn resolve_api(&self, ua: FileApi, da: FileApi) -> Result<Api, ConfigError> {
        let incomplete = |key: &str| ConfigError {
            file: DEFAULT_NAME.to_owned(),
            line: None,
            key: format!("api.{key}"),
            message: "missing from the embedded default".to_owned(),
        };
        let (src, url) = self.pick(ua.url, da.url).ok_or_else(|| incomplete("url"))?;
        let url = if url.get_ref().is_empty() {
            None
        } else {
            // Checked the way the client will use it.
            crate::bootapi::BootApi::new(
                url.get_ref(),
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(1),
                1,
            )
            .map_err(|e| src.error(url.span(), "api.url", e.to_string()))?;
            Some(url.into_inner())
        };
        let (src, timeout) = self
            .pick(ua.timeout_secs, da.timeout_secs)
            .ok_or_else(|| incomplete("timeout_secs"))?;
        if !(1..=60).contains(timeout.get_ref()) {
            return Err(src.error(
                timeout.span(),
                "api.timeout_secs",
                "must be between 1 and 60",
            ));
        }
        let cache = ua
            .cache_secs
            .or(da.cache_secs)
            .ok_or_else(|| incomplete("cache_secs"))?;
        let (src, max_cache) = self
            .pick(ua.max_cache, da.max_cache)
            .ok_or_else(|| incomplete("max_cache"))?;
        if *max_cache.get_ref() == 0 {
            return Err(src.error(max_cache.span(), "api.max_cache", "must be at least 1"));
        }
        Ok(Api {
            url,
            timeout: std::time::Duration::from_secs(timeout.into_inner()),
            cache_ttl: std::time::Duration::from_secs(cache),
            max_cache: max_cache.into_inner(),
        })
    }

    fn resolve_boot(
        &self,
        ub: FileBoot,
        db: FileBoot,
        http_root: &Path,
        node_vars: &[&str],
    ) -> Result<Boot, ConfigError> {
        let incomplete = |key: &str| ConfigError {
            file: DEFAULT_NAME.to_owned(),
            line: None,
            key: format!("boot.{key}"),
            message: "missing from the embedded default".to_owned(),
        };
        // Relative paths are under the HTTP root.
        let path = |text: &str| {
            let p = PathBuf::from(text);
            if p.is_absolute() {
                p
            } else {
                http_root.join(p)
            }
        };
        let (_, kernel) = self
            .pick(ub.kernel, db.kernel)
            .ok_or_else(|| incomplete("kernel"))?;
        let kernel = (!kernel.get_ref().is_empty()).then(|| path(kernel.get_ref()));
        let (src, initrds) = self
            .pick(ub.initrds, db.initrds)
            .ok_or_else(|| incomplete("initrds"))?;
        let mut initrd_paths = Vec::new();
        for initrd in initrds {
            if initrd.get_ref().is_empty() {
                return Err(src.error(initrd.span(), "boot.initrds", "an initrd path is empty"));
            }
            initrd_paths.push(path(initrd.get_ref()));
        }
        if kernel.is_none() && !initrd_paths.is_empty() {
            return Err(ConfigError {
                file: src.name.to_owned(),
                line: None,
                key: "boot.initrds".into(),
                message: "initrds without a kernel: set boot.kernel too".into(),
            });
        }
        let cmdline = ub
            .cmdline
            .or(db.cmdline)
            .ok_or_else(|| incomplete("cmdline"))?;
        let vars = match self.pick(ub.vars, db.vars) {
            Some((src, vars)) => {
                let mut out = BTreeMap::new();
                for (name, value) in vars {
                    if !is_variable_name(&name) {
                        return Err(src.error(
                            value.span(),
                            "boot.vars",
                            format!("{name:?} cannot be a variable name (built-in, or not letters, digits, _ and -)"),
                        ));
                    }
                    out.insert(name, value.into_inner());
                }
                out
            }
            None => BTreeMap::new(),
        };
        let mut known: Vec<&str> = SCRIPT_VARIABLES.to_vec();
        known.extend_from_slice(node_vars);
        known.extend(vars.keys().map(String::as_str));
        let template = |value: Option<Spanned<String>>,
                        default_value: Option<Spanned<String>>,
                        key: &str,
                        default_text: &str,
                        default_file: &str|
         -> Result<Template, ConfigError> {
            let (src, value) = self
                .pick(value, default_value)
                .ok_or_else(|| incomplete(key))?;
            if value.get_ref().is_empty() {
                return Template::parse(default_text, &known).map_err(|e| ConfigError {
                    file: default_file.into(),
                    line: Some(e.line),
                    key: String::new(),
                    message: e.problem.to_string(),
                });
            }
            let file = path(value.get_ref());
            let text = std::fs::read_to_string(&file).map_err(|e| {
                src.error(
                    value.span(),
                    format!("boot.{key}"),
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            Template::parse(&text, &known).map_err(|e| ConfigError {
                file: file.display().to_string(),
                line: Some(e.line),
                key: String::new(),
                message: e.problem.to_string(),
            })
        };
        let script = template(
            ub.script,
            db.script,
            "script",
            DEFAULT_SCRIPT,
            "ipxe/boot.ipxe",
        )?;
        let grub_config = template(
            ub.grub_config,
            db.grub_config,
            "grub_config",
            DEFAULT_GRUB_CONFIG,
            "ipxe/grub.cfg",
        )?;
        let pxelinux_config = template(
            ub.pxelinux_config,
            db.pxelinux_config,
            "pxelinux_config",
            DEFAULT_PXELINUX_CONFIG,
            "ipxe/pxelinux.cfg",
        )?;
        let (src, retries) = self
            .pick(ub.retries, db.retries)
            .ok_or_else(|| incomplete("retries"))?;
        if *retries.get_ref() == 0 {
            return Err(src.error(retries.span(), "boot.retries", "must be at least 1"));
        }
        let retry_delay = ub
            .retry_delay
            .or(db.retry_delay)
            .ok_or_else(|| incomplete("retry_delay"))?;
        let https = ub.https.or(db.https).ok_or_else(|| incomplete("https"))?;
        let (src, lifetime) = self
            .pick(ub.url_lifetime, db.url_lifetime)
            .ok_or_else(|| incomplete("url_lifetime"))?;
        if *lifetime.get_ref() == 0 {
            return Err(src.error(
                lifetime.span(),
                "boot.url_lifetime",
                "must be at least 1 second",
            ));
        }
        let (src, secret_file) = self
            .pick(ub.secret_file, db.secret_file)
            .ok_or_else(|| incomplete("secret_file"))?;
        let secret_file = validate_root(src, "boot.secret_file", secret_file)?;
        let arch = match self.pick(ub.arch, db.arch) {
            Some((src, sections)) => sections
                .into_iter()
                .map(|(name, section)| {
                    resolve_arch_boot(src, name, section, kernel.is_some(), &path)
                })
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Boot {
            kernel,
            initrds: initrd_paths,
            cmdline,
            script,
            grub_config,
            pxelinux_config,
            retries: retries.into_inner(),
            retry_delay,
            https,
            url_lifetime: std::time::Duration::from_secs(lifetime.into_inner()),
            secret_file,
            arch,
            vars,
        })
    }

    fn resolve_http(&self, uh: FileHttp, dh: FileHttp) -> Result<Http, ConfigError> {
        let incomplete = |key: &str| ConfigError {
            file: DEFAULT_NAME.to_owned(),
            line: None,
            key: format!("http.{key}"),
            message: "missing from the embedded default".to_owned(),
        };
        let (src, root) = self
            .pick(uh.root, dh.root)
            .ok_or_else(|| incomplete("root"))?;
        let root = validate_root(src, "http.root", root)?;
        let (_, port) = self
            .pick(uh.port, dh.port)
            .ok_or_else(|| incomplete("port"))?;
        let (_, https_port) = self
            .pick(uh.https_port, dh.https_port)
            .ok_or_else(|| incomplete("https_port"))?;
        let (src, tls_cert) = self
            .pick(uh.tls_cert, dh.tls_cert)
            .ok_or_else(|| incomplete("tls_cert"))?;
        let tls_cert = validate_root(src, "http.tls_cert", tls_cert)?;
        let (src, tls_key) = self
            .pick(uh.tls_key, dh.tls_key)
            .ok_or_else(|| incomplete("tls_key"))?;
        let tls_key = validate_root(src, "http.tls_key", tls_key)?;
        let tls_generate = uh
            .tls_generate
            .or(dh.tls_generate)
            .ok_or_else(|| incomplete("tls_generate"))?;
        let (src, names) = self
            .pick(uh.tls_names, dh.tls_names)
            .ok_or_else(|| incomplete("tls_names"))?;
        let tls_names = names
            .into_iter()
            .map(|name| {
                if is_host_name_or_address(name.get_ref()) {
                    Ok(name.into_inner())
                } else {
                    Err(src.error(
                        name.span(),
                        "http.tls_names",
                        format!(
                            "{:?} is neither a DNS name like boot.example.org nor an IP address",
                            name.get_ref()
                        ),
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        let (src, max_connections) = self
            .pick(uh.max_connections, dh.max_connections)
            .ok_or_else(|| incomplete("max_connections"))?;
        if !(1..=MAX_HTTP_CONNECTIONS).contains(max_connections.get_ref()) {
            return Err(src.error(
                max_connections.span(),
                "http.max_connections",
                format!("must be between 1 and {MAX_HTTP_CONNECTIONS}"),
            ));
        }
        let timeout = |key: &str, user, default| -> Result<Duration, ConfigError> {
            let (src, secs): (_, Spanned<u64>) =
                self.pick(user, default).ok_or_else(|| incomplete(key))?;
            if !(1..=MAX_HTTP_TIMEOUT_SECS).contains(secs.get_ref()) {
                return Err(src.error(
                    secs.span(),
                    format!("http.{key}"),
                    format!("must be between 1 and {MAX_HTTP_TIMEOUT_SECS} seconds"),
                ));
            }
            Ok(Duration::from_secs(secs.into_inner()))
        };
        let header_timeout = timeout(
            "header_timeout_secs",
            uh.header_timeout_secs,
            dh.header_timeout_secs,
        )?;
        let send_timeout = timeout(
            "send_timeout_secs",
            uh.send_timeout_secs,
            dh.send_timeout_secs,
        )?;
        let pacing_mbit = uh
            .pacing_mbit
            .or(dh.pacing_mbit)
            .ok_or_else(|| incomplete("pacing_mbit"))?;
        Ok(Http {
            root,
            port: port.into_inner(),
            https_port: https_port.into_inner(),
            tls_cert,
            tls_key,
            tls_generate,
            tls_names,
            max_connections: max_connections.into_inner(),
            header_timeout,
            send_timeout,
            pacing_mbit,
        })
    }

    /// The user's value if set, else the default's, with the text it came from.
    fn pick<T>(&self, user: Option<T>, default: Option<T>) -> Option<(Source<'_>, T)> {
        match (user, default) {
            (Some(v), _) => Some((self.user, v)),
            (None, Some(v)) => Some((self.default, v)),
            (None, None) => None,
        }
    }
}

/// One `[boot.arch.<name>]` section; `path` resolves a file name as `[boot]`'s are resolved,
/// `has_kernel` says whether `[boot]` names a kernel it could inherit.
fn resolve_arch_boot(
    src: Source<'_>,
    name: Spanned<String>,
    section: Spanned<FileArchBoot>,
    has_kernel: bool,
    path: &dyn Fn(&str) -> PathBuf,
) -> Result<ArchBoot, ConfigError> {
    let key = format!("boot.arch.{}", name.get_ref());
    let arch = ClientArch::from_name(name.get_ref()).ok_or_else(|| {
        src.error(
            name.span(),
            key.clone(),
            format!(
                "unknown architecture {:?}; known: {}",
                name.get_ref(),
                ClientArch::NAMES.join(", ")
            ),
        )
    })?;
    let span = section.span();
    let section = section.into_inner();
    if section.kernel.is_none() && section.initrds.is_none() && section.cmdline.is_none() {
        return Err(src.error(
            span,
            key,
            "sets nothing: give it a kernel, initrds or a cmdline (or remove it)",
        ));
    }
    let kernel = match section.kernel {
        Some(kernel) if kernel.get_ref().is_empty() => {
            return Err(src.error(
                kernel.span(),
                format!("{key}.kernel"),
                "is empty: name the kernel, or leave the key out to keep [boot]'s",
            ));
        }
        Some(kernel) => Some(path(kernel.get_ref())),
        None => None,
    };
    let initrds = match section.initrds {
        Some(initrds) => {
            let mut paths = Vec::with_capacity(initrds.len());
            for initrd in initrds {
                if initrd.get_ref().is_empty() {
                    return Err(src.error(
                        initrd.span(),
                        format!("{key}.initrds"),
                        "an initrd path is empty",
                    ));
                }
                paths.push(path(initrd.get_ref()));
            }
            Some(paths)
        }
        None => None,
    };
    if kernel.is_none() && !has_kernel && initrds.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(src.error(
            span,
            format!("{key}.initrds"),
            "initrds without a kernel: set a kernel here or in [boot]",
        ));
    }
    Ok(ArchBoot {
        arch,
        kernel,
        initrds,
        cmdline: section.cmdline,
    })
}

fn resolve_nodes(src: Source<'_>, nodes: Vec<Spanned<FileNode>>) -> Result<Vec<Node>, ConfigError> {
    if nodes.len() > MAX_NODES {
        return Err(src.error(
            nodes[MAX_NODES].span(),
            "node",
            format!("more than {MAX_NODES} nodes"),
        ));
    }
    let mut out: Vec<Node> = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.into_iter().enumerate() {
        let span = node.span();
        let node = node.into_inner();
        let key = |field: &str| format!("node[{i}].{field}");
        let mac = match &node.mac {
            Some(mac) => Some(policy::parse_mac(mac.get_ref()).ok_or_else(|| {
                src.error(
                    mac.span(),
                    key("mac"),
                    format!(
                        "{:?} is not a MAC address like 52:54:00:12:34:56",
                        mac.get_ref()
                    ),
                )
            })?),
            None => None,
        };
        let uuid = match &node.uuid {
            Some(uuid) => Some(policy::parse_uuid(uuid.get_ref()).ok_or_else(|| {
                src.error(
                    uuid.span(),
                    key("uuid"),
                    format!(
                        "{:?} is not a UUID like 4c4c4544-0035-3010-8030-b4c04f4a4e31",
                        uuid.get_ref()
                    ),
                )
            })?),
            None => None,
        };
        if mac.is_none() && uuid.is_none() {
            return Err(src.error(
                span,
                format!("node[{i}]"),
                "a node needs a mac or a uuid to be matched by",
            ));
        }
        if let Some(previous) = out
            .iter()
            .position(|n| (mac.is_some() && n.mac == mac) || (uuid.is_some() && n.uuid == uuid))
        {
            return Err(src.error(
                span,
                format!("node[{i}]"),
                format!("matches the same machine as node[{previous}]"),
            ));
        }
        let mut vars = BTreeMap::new();
        for (name, value) in node.vars {
            if !is_variable_name(&name) {
                return Err(src.error(value.span(), key("vars"), format!("{name:?} cannot be a variable name (built-in, or not letters, digits, _ and -)")));
            }
            vars.insert(name, value.into_inner());
        }
        out.push(Node {
            mac,
            uuid,
            hostname: node.hostname,
            cmdline: node.cmdline,
            vars,
        });
    }
    Ok(out)
}

/// A name a `vars` table may define: letters, digits, `_` and `-`, and not a built-in one.
fn is_variable_name(name: &str) -> bool {
    let builtin = SCRIPT_VARIABLES.contains(&name) || OVERLAY_VARIABLES.contains(&name);
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid && !builtin
}

fn resolve_overlay(
    src: Source<'_>,
    files: Vec<Spanned<FileOverlay>>,
    node_vars: &[&str],
) -> Result<Vec<OverlayFile>, ConfigError> {
    if files.len() > MAX_OVERLAY_FILES {
        return Err(src.error(
            files[MAX_OVERLAY_FILES].span(),
            "overlay",
            format!("more than {MAX_OVERLAY_FILES} files"),
        ));
    }
    let mut known: Vec<&str> = OVERLAY_VARIABLES.to_vec();
    known.extend_from_slice(node_vars);
    let mut out: Vec<OverlayFile> = Vec::new();
    for (i, file) in files.into_iter().enumerate() {
        let file = file.into_inner();
        let key = |field: &str| format!("overlay[{i}].{field}");
        let path = file.path.get_ref().trim_start_matches('/').to_owned();
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            || path.contains('\0')
        {
            return Err(src.error(
                file.path.span(),
                key("path"),
                format!(
                    "{:?} must be a plain relative path such as etc/hostname",
                    file.path.get_ref()
                ),
            ));
        }
        if out.iter().any(|f| f.path == path) {
            return Err(src.error(
                file.path.span(),
                key("path"),
                format!("{path:?} appears twice"),
            ));
        }
        let mode = match &file.mode {
            Some(mode) => u32::from_str_radix(mode.get_ref(), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    src.error(
                        mode.span(),
                        key("mode"),
                        format!("{:?} is not an octal mode like \"0644\"", mode.get_ref()),
                    )
                })?,
            None => 0o644,
        };
        // The template's own line numbers are counted from the content's first line.
        let content = Template::parse(file.content.get_ref(), &known).map_err(|e| {
            let mut err = src.error(file.content.span(), key("content"), e.problem.to_string());
            err.line = err.line.map(|l| l + e.line - 1);
            err
        })?;
        out.push(OverlayFile {
            path,
            mode,
            content,
        });
    }
    Ok(out)
}

fn validate_interface_name(src: Source<'_>, name: Spanned<String>) -> Result<String, ConfigError> {
    let span = name.span();
    let name = name.into_inner();
    // IFNAMSIZ is 16 with the NUL; '/' and whitespace are refused by the kernel.
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(src.error(
            span,
            "server.interfaces",
            format!("{name:?} is not an interface name"),
        ));
    }
    Ok(name)
}

/// `[ipv6] addresses` values: see [`crate::dhcp6::url_address_problem`].
pub fn validate_url_address(text: &str) -> Result<std::net::Ipv6Addr, String> {
    let address: std::net::Ipv6Addr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv6 address like fd00::1"))?;
    match crate::dhcp6::url_address_problem(address) {
        Some(why) => Err(format!("{address} {why}")),
        None => Ok(address),
    }
}

fn validate_root(
    src: Source<'_>,
    key: &str,
    root: Spanned<PathBuf>,
) -> Result<PathBuf, ConfigError> {
    let span = root.span();
    let root = root.into_inner();
    if !root.is_absolute() {
        return Err(src.error(
            span,
            key,
            format!("{} must be an absolute path", root.display()),
        ));
    }
    Ok(root)
}

fn validate_rule(
    src: Source<'_>,
    index: usize,
    rule: Spanned<FileRule>,
) -> Result<Rule, ConfigError> {
    let rule_span = rule.span();
    let rule = rule.into_inner();
    let key = |field: &str| format!("policy[{index}].{field}");
    let name = rule.name.get_ref().trim().to_owned();
    if name.is_empty() {
        return Err(src.error(rule.name.span(), key("name"), "must not be empty"));
    }

    let mut matches = Match::default();
    if let Some(arches) = rule.arch {
        let mut list = Vec::new();
        for arch in arches {
            let parsed = ClientArch::from_name(arch.get_ref()).ok_or_else(|| {
                src.error(
                    arch.span(),
                    key("arch"),
                    format!(
                        "unknown architecture {:?}; known: {}",
                        arch.get_ref(),
                        ClientArch::NAMES.join(", ")
                    ),
                )
            })?;
            list.push(parsed);
        }
        matches.arch = Some(list);
    }
    if let Some(firmware) = rule.firmware {
        matches.protocol = Some(match firmware.get_ref().as_str() {
            "pxe" => BootProtocol::Pxe,
            "http" => BootProtocol::Http,
            other => {
                return Err(src.error(
                    firmware.span(),
                    key("firmware"),
                    format!("{other:?} is neither \"pxe\" nor \"http\""),
                ));
            }
        });
    }
    matches.ipxe = rule.ipxe;
    if let Some(macs) = rule.mac {
        let mut list = Vec::new();
        for mac in macs {
            list.push(policy::parse_mac(mac.get_ref()).ok_or_else(|| {
                src.error(
                    mac.span(),
                    key("mac"),
                    format!(
                        "{:?} is not a MAC address like 52:54:00:12:34:56",
                        mac.get_ref()
                    ),
                )
            })?);
        }
        matches.mac = Some(list);
    }
    if let Some(uuids) = rule.uuid {
        let mut list = Vec::new();
        for uuid in uuids {
            list.push(policy::parse_uuid(uuid.get_ref()).ok_or_else(|| {
                src.error(
                    uuid.span(),
                    key("uuid"),
                    format!(
                        "{:?} is not a UUID like 4c4c4544-0035-3010-8030-b4c04f4a4e31",
                        uuid.get_ref()
                    ),
                )
            })?);
        }
        matches.uuid = Some(list);
    }

    let silent = rule.silent.as_ref().is_some_and(|s| *s.get_ref());
    let local = rule.local.as_ref().is_some_and(|s| *s.get_ref());
    let action = match (rule.tftp, rule.http, rule.loader, local, silent) {
        (Some(file), None, None, false, false) => {
            let span = file.span();
            let file = file.into_inner();
            validate_loader_name(&file).map_err(|why| src.error(span, key("tftp"), why))?;
            Action::Tftp(file)
        }
        (None, Some(url), None, false, false) => {
            let span = url.span();
            Action::Http(
                UrlTemplate::parse(url.get_ref())
                    .map_err(|e| src.error(span, key("http"), e.to_string()))?,
            )
        }
        (None, None, Some(loader), false, false) => {
            let parsed = Loader::from_name(loader.get_ref()).ok_or_else(|| {
                src.error(
                    loader.span(),
                    key("loader"),
                    format!(
                        "unknown loader {:?}; known: {}",
                        loader.get_ref(),
                        Loader::NAMES.join(", ")
                    ),
                )
            })?;
            // A rule for arches the chain has no build for would never match: say so now.
            if let Some(arches) = &matches.arch
                && !arches.iter().any(|&a| parsed.first_stage(a).is_some())
            {
                let served: Vec<&str> = parsed.arches().map(ClientArch::name).collect();
                return Err(src.error(
                    loader.span(),
                    key("loader"),
                    format!(
                        "loader {:?} has a first stage only for {}: this rule's arch never matches",
                        parsed.name(),
                        served.join(", ")
                    ),
                ));
            }
            Action::Loader(parsed)
        }
        (None, None, None, true, false) => Action::Local,
        (None, None, None, false, true) => Action::Silent,
        _ => {
            return Err(src.error(
                rule_span,
                format!("policy[{index}]"),
                format!(
                    "rule {name:?} needs exactly one action: tftp = \"file\", http = \"url\", \
                     loader = \"shim\" (or grub, pxelinux, ipxe), local = true or silent = true"
                ),
            ));
        }
    };
    Ok(Rule {
        name,
        matches,
        action,
    })
}

/// A name a certificate can carry: an IP address, or a DNS name of letters, digits and hyphens
/// in dot-separated labels of at most 63 bytes (RFC 1035 section 2.3.4), 253 bytes in all.
fn is_host_name_or_address(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A loader name is a relative path inside the TFTP root: no `..`, no absolute path, no
/// backslash or NUL (which some TFTP clients and servers treat as separators or terminators).
pub fn validate_loader_name(file: &str) -> Result<(), String> {
    if file.is_empty() {
        return Err("loader name is empty".into());
    }
    if file.len() > policy::MAX_BOOT_FILE_LEN {
        return Err(format!(
            "loader name is longer than {} bytes",
            policy::MAX_BOOT_FILE_LEN
        ));
    }
    if file.starts_with('/')
        || file.contains(['\\', '\0'])
        || file.split('/').any(|c| c == ".." || c.is_empty())
    {
        return Err(format!(
            "{file:?} must be a plain relative path inside the TFTP root"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_complete_and_valid() {
        let config = Config::embedded().unwrap();
        assert_eq!(config.backend, Backend::Auto);
        assert!(config.interfaces.is_empty());
        assert_eq!(config.policy.rules[0].name, "ipxe");
        assert!(config.tftp_loaders().any(|(_, f)| f == "undionly.kpxe"));
        assert_eq!(config.drain, Duration::from_secs(10));
    }

    #[test]
    fn the_drain_bound_may_be_zero_but_not_unbounded() {
        let config = Config::parse("[server]\ndrain_secs = 0\n", "t.toml").unwrap();
        assert_eq!(config.drain, Duration::ZERO);
        let e = error("[server]\n\ndrain_secs = 86400\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(3), "server.drain_secs"),
            "{e}"
        );
    }

    #[test]
    fn a_user_file_overrides_only_what_it_sets() {
        let config = Config::parse("[http]\nport = 8080\n", "t.toml").unwrap();
        assert_eq!(config.http.port, 8080);
        assert_eq!(config.http.https_port, 443);
        assert_eq!(config.policy, Config::embedded().unwrap().policy);
    }

    #[test]
    fn a_user_policy_replaces_the_default_table() {
        let config = Config::parse(
            "[[policy]]\nname = \"only\"\narch = [\"bios\"]\ntftp = \"lpxelinux.0\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(config.policy.rules.len(), 1);
        assert_eq!(
            config.policy.rules[0].action,
            Action::Tftp("lpxelinux.0".into())
        );
    }

    fn error(text: &str) -> ConfigError {
        Config::parse(text, "t.toml").unwrap_err()
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let e = error(
            "[server]\nbackend = \"udp\"\n\n[[policy]]\nname = \"x\"\narch = [\"bios\", \"sparc\"]\ntftp = \"a\"\n",
        );
        assert_eq!(e.line, Some(6));
        assert_eq!(e.key, "policy[0].arch");
        assert!(
            e.to_string()
                .starts_with("t.toml:6: policy[0].arch: unknown architecture \"sparc\""),
            "{e}"
        );

        let e = error("[server]\nbakend = \"udp\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");

        let e = error("[server]\nbackend = \"ebpf\"\n");
        assert_eq!(e.line, Some(2), "{e}");

        let e = error("[tftp]\nport = 70000\n");
        assert_eq!(e.line, Some(2), "{e}");

        let e = error("[[policy]]\nname = \"x\"\nhttp = \"http://{server}/{nope}\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(3), "policy[0].http"), "{e}");

        let e = error("[[policy]]\nname = \"x\"\nmac = [\"52:54:00:12:34\"]\nsilent = true\n");
        assert_eq!((e.line, e.key.as_str()), (Some(3), "policy[0].mac"), "{e}");

        let e = error("[[policy]]\nname = \"x\"\ntftp = \"../etc/passwd\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(3), "policy[0].tftp"), "{e}");

        let e = error("[[policy]]\nname = \"x\"\ntftp = \"a\"\nsilent = true\n");
        assert_eq!(e.key, "policy[0]", "{e}");
        assert!(e.message.contains("exactly one action"), "{e}");

        let e = error("[tftp]\nroot = \"relative/dir\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "tftp.root"), "{e}");

        let e = error("[server]\ninterfaces = [\"eth0\", \"this-name-is-far-too-long\"]\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(2), "server.interfaces"),
            "{e}"
        );

        let e = error("[xdp]\nshed_rate = 5\nshed_burst = 0\n");
        assert_eq!((e.line, e.key.as_str()), (Some(3), "xdp.shed_burst"), "{e}");

        let e = error("[xdp]\nnever_shed = [\"nope\"]\n");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "xdp.never_shed"), "{e}");

        let e = error("[xdp]\nsteer = \"sideways\"\n");
        assert_eq!(e.line, Some(2), "{e}");

        let e = error("[server\n");
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn ipv6_url_addresses_are_validated_with_their_line_and_interface() {
        let config = Config::parse(
            "[ipv6]\nenabled = true\naddresses = { eth0 = \"fd00:18::1\" }\n",
            "t.toml",
        )
        .unwrap();
        assert!(config.ipv6.enabled);
        assert_eq!(
            config.ipv6.addresses.get("eth0"),
            Some(&"fd00:18::1".parse().unwrap())
        );
        assert!(!Config::embedded().unwrap().ipv6.enabled, "off by default");
        for (value, why) in [
            ("fe80::1", "link-local"),
            ("ff02::1:2", "multicast"),
            ("::", "cannot be reached"),
            ("::ffff:198.18.0.1", "IPv4-mapped"),
            ("198.18.0.1", "not an IPv6 address"),
        ] {
            let e = error(&format!(
                "[ipv6]\nenabled = true\naddresses = {{ eth1 = \"fd00::2\", eth0 = \"{value}\" }}\n"
            ));
            assert_eq!(
                (e.line, e.key.as_str()),
                (Some(3), "ipv6.addresses.eth0"),
                "{e}"
            );
            assert!(e.message.contains(why), "{value}: {e}");
        }
        let e = error("[ipv6]\n\naddresses = { \"a/b\" = \"fd00::1\" }\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(3), "ipv6.addresses.a/b"),
            "{e}"
        );
    }

    #[test]
    fn the_inventory_is_never_shed() {
        let config = Config::parse(
            "[xdp]\nnever_shed = [\"52:54:00:00:00:01\"]\n\n[[policy]]\nname = \"r\"\nmac = [\"52:54:00:00:00:02\", \"52:54:00:00:00:01\"]\nsilent = true\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            config.never_shed(),
            vec![[0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2]]
        );
    }

    #[test]
    fn http_limits_and_tls_settings_are_validated_with_their_line() {
        let config = Config::embedded().unwrap();
        assert!(config.http.tls_generate);
        assert!(config.http.max_connections >= 1000);
        assert_eq!(config.http.pacing_mbit, 0);

        let config = Config::parse(
            "[http]\ntls_names = [\"boot.lab\", \"198.18.0.1\"]\nheader_timeout_secs = 3\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(config.http.tls_names, ["boot.lab", "198.18.0.1"]);
        assert_eq!(config.http.header_timeout, Duration::from_secs(3));

        let e = error("[http]\nport = 80\nmax_connections = 0\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(3), "http.max_connections"),
            "{e}"
        );
        let e = error("[http]\n\nsend_timeout_secs = 0\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(3), "http.send_timeout_secs"),
            "{e}"
        );
        let e = error("[http]\nheader_timeout_secs = 86400\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(2), "http.header_timeout_secs"),
            "{e}"
        );
        let e = error("[http]\ntls_names = [\"ok.lab\", \"not a name\"]\n");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "http.tls_names"), "{e}");
        let e = error("[http]\ntls_cert = \"server.pem\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "http.tls_cert"), "{e}");
        let e = error("[http]\ntls_generate = \"yes\"\n");
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn admin_settings_are_validated_with_their_line() {
        let config = Config::embedded().unwrap();
        assert!(config.admin.enabled);
        assert!(
            config.admin.listen.ip().is_loopback(),
            "loopback by default"
        );
        let config = Config::parse(
            "[admin]\nlisten = \"[::1]:9999\"\nmax_nodes = 5\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(config.admin.listen.to_string(), "[::1]:9999");
        assert_eq!(config.admin.max_nodes, 5);
        let e = error("[admin]\nenabled = true\nlisten = \"localhost\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(3), "admin.listen"), "{e}");
        let e = error("[admin]\nmax_nodes = 0\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(2), "admin.max_nodes"),
            "{e}"
        );
        let e = error("[admin]\nnode_ttl_secs = 0\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(2), "admin.node_ttl_secs"),
            "{e}"
        );
        let e = error("[admin]\nport = 1\n");
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn an_arch_section_gives_its_nodes_their_own_kernel_and_leaves_the_rest_to_boot() {
        let config = Config::parse(
            "[http]\nroot = \"/srv/http\"\n\n[boot]\nkernel = \"vmlinuz\"\ninitrds = [\"a.img\"]\n\
             cmdline = \"console=ttyS0\"\n\n[boot.arch.uefi-arm64]\nkernel = \"arm64/vmlinuz\"\n\
             initrds = [\"/abs/arm64.img\"]\n\n[boot.arch.uefi-x64]\ncmdline = \"console=ttyS1\"\n",
            "t.toml",
        )
        .unwrap();
        let arm64 = config.boot.files(Some("uefi-arm64"));
        assert_eq!(arm64.arch, Some(ClientArch::UefiArm64));
        assert_eq!(arm64.kernel, Some(Path::new("/srv/http/arm64/vmlinuz")));
        assert_eq!(arm64.initrds, [PathBuf::from("/abs/arm64.img")]);
        assert_eq!(
            arm64.cmdline, "console=ttyS0",
            "a key left out keeps [boot]'s"
        );
        let x64 = config.boot.files(Some("uefi-x64"));
        assert_eq!(x64.arch, Some(ClientArch::UefiX64));
        assert_eq!(x64.kernel, Some(Path::new("/srv/http/vmlinuz")));
        assert_eq!(x64.initrds, [PathBuf::from("/srv/http/a.img")]);
        assert_eq!(x64.cmdline, "console=ttyS1");
        for other in [Some("bios"), Some("sparc"), None] {
            let files = config.boot.files(other);
            assert_eq!(files.arch, None, "{other:?}");
            assert_eq!(files.kernel, Some(Path::new("/srv/http/vmlinuz")));
        }
        assert!(Config::embedded().unwrap().boot.arch.is_empty());

        // An arm64-only rack: nothing in [boot], everything in the arch's section.
        let config = Config::parse(
            "[boot.arch.uefi-arm64]\nkernel = \"/k\"\ninitrds = [\"/i\"]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            config.boot.files(Some("uefi-arm64")).kernel,
            Some(Path::new("/k"))
        );
        assert_eq!(config.boot.files(Some("uefi-x64")).kernel, None);
    }

    #[test]
    fn arch_sections_are_validated_with_their_line() {
        let e = error("[boot]\nkernel = \"k\"\n\n[boot.arch.sparc64]\nkernel = \"k\"\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(4), "boot.arch.sparc64"),
            "{e}"
        );
        assert!(
            e.message.contains("uefi-arm64"),
            "lists the known names: {e}"
        );
        let e = error("[boot.arch.uefi-arm64]\n\n[admin]\nenabled = true\n");
        assert_eq!(e.key, "boot.arch.uefi-arm64", "{e}");
        assert!(e.message.contains("sets nothing"), "{e}");
        let e = error("[boot.arch.uefi-arm64]\ncmdline = \"x\"\nkernel = \"\"\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(3), "boot.arch.uefi-arm64.kernel"),
            "{e}"
        );
        let e = error("[boot.arch.uefi-arm64]\nkernel = \"k\"\ninitrds = [\"a\", \"\"]\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(3), "boot.arch.uefi-arm64.initrds"),
            "{e}"
        );
        let e = error("[boot.arch.uefi-arm64]\ninitrds = [\"a\"]\n");
        assert_eq!(e.key, "boot.arch.uefi-arm64.initrds", "{e}");
        assert!(e.message.contains("without a kernel"), "{e}");
        let e = error("[boot.arch.uefi-arm64]\nkernal = \"k\"\n");
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn loader_names_stay_inside_the_root() {
        for bad in ["", "/abs", "a/../b", "..", "a\\b", "a\0b", "a//b", "dir/"] {
            assert!(validate_loader_name(bad).is_err(), "{bad:?}");
        }
        for good in ["undionly.kpxe", "efi/ipxe.efi", "a.b.c"] {
            assert!(validate_loader_name(good).is_ok(), "{good:?}");
        }
    }
}
