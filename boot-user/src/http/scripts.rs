//! What iPXE fetches after DHCP: the per-node boot script (`/boot.ipxe?mac=…`), the kernel and
//! initrds it names (`/boot/kernel`, `/boot/initrd/<n>`), and the node's signed overlay
//! (`/nodes/<mac>/overlay.cpio?expires=…&sig=…`).
//!
//! The script is rendered from a template (`ipxe/boot.ipxe` by default) with the node's
//! variables: those of its `[[node]]` entry, matched by MAC or UUID, and defaults otherwise.
//! Every URL in it points back at the address the script was fetched from, so a multi-homed
//! server hands each rack its own address, as the DHCP side does.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use aws_lc_rs::hmac;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::files::{Delivery, StaticRoot, respond_open};
use super::overlay::{OverlayCache, hex};
use super::signed::UrlSigner;
use super::{Body, Scheme};
use crate::bootapi::ApiDecision;
use crate::config::{Config, Node};
use crate::dhcp::classify::{ClientArch, MacDisplay, UuidDisplay};
use crate::dhcp::policy::{parse_mac, parse_uuid};
use crate::reload::{Decisions, Swap};
use crate::template::{Value, Vars};

/// Characters of a node's token (hex of an HMAC: 128 bits).
const TOKEN_LEN: usize = 32;

/// Why the boot content could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum BootContentError {
    #[error("reading the URL secret {path}: {source}")]
    ReadSecret { path: String, source: io::Error },
    #[error("writing a new URL secret {path}: {source}")]
    WriteSecret { path: String, source: io::Error },
    #[error("the URL secret {path} is shorter than 16 bytes")]
    ShortSecret { path: String },
    #[error("generating a URL secret failed")]
    Random,
}

/// The boot configuration the HTTP routes serve, with its signing key and overlay cache.
pub struct BootContent {
    /// The config's `[boot]`, `[[node]]` and `[[overlay]]` (and ports); a reload replaces it.
    config: Swap<Config>,
    /// The boot API, when decisions come from one; shared with the DHCP side.
    decisions: Arc<Swap<Decisions>>,
    signer: UrlSigner,
    /// Derives node tokens; the same secret as the signer, a separate purpose string.
    token_key: hmac::Key,
    overlays: OverlayCache,
    /// UUID and arch each node gave with its script request, for its overlay's templates (the
    /// overlay URL names only the MAC). Bounded; starts over when full.
    identities: Mutex<HashMap<[u8; 6], Identity>>,
}

/// A node's UUID and arch, as its script request gave them.
type Identity = (Option<[u8; 16]>, Option<String>);

/// Nodes whose script-request identity is remembered for their overlays.
const MAX_IDENTITIES: usize = 100_000;

impl std::fmt::Debug for BootContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootContent").finish_non_exhaustive()
    }
}

/// The node's answer to a request that names it.
struct NodeQuery {
    mac: [u8; 6],
    uuid: Option<[u8; 16]>,
    arch: Option<String>,
}

impl BootContent {
    /// Loads the URL secret (creating it, mode 0600, at first start).
    pub fn new(
        config: Config,
        decisions: Arc<Swap<Decisions>>,
    ) -> Result<BootContent, BootContentError> {
        let secret = load_or_create_secret(&config.boot.secret_file)?;
        Ok(BootContent {
            signer: UrlSigner::new(&secret),
            token_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            config: Swap::new(config),
            decisions,
            overlays: OverlayCache::default(),
            identities: Mutex::new(HashMap::new()),
        })
    }

    /// Serves `config`'s scripts, nodes and overlays from now on (SIGHUP). The URL secret
    /// stays: URLs already handed out keep working. Overlays whose inputs changed are rebuilt
    /// on their next request (the cache is keyed by the hash of the rendered files).
    pub fn reload(&self, config: Config) {
        self.config.store(config);
    }

    /// The overlays built so far (a storm must build each node's once).
    pub fn overlay_builds(&self) -> u64 {
        self.overlays.builds()
    }

    /// `/boot.ipxe?mac=…&uuid=…&arch=…`, fetched over a `scheme` connection to `local`. In
    /// API mode the kernel, initrds and command line come from the boot API (waited for here:
    /// HTTP can wait, unlike DHCP), or the whole script does; serving a boot-once answer
    /// spends it ([`crate::bootapi::BootApi::spend`]).
    pub async fn script(
        &self,
        query: Option<&str>,
        client: SocketAddr,
        local: SocketAddr,
        scheme: Scheme,
    ) -> Response<Body> {
        let config = self.config.load();
        let boot = &config.boot;
        let Some(node) = parse_query(query) else {
            return text(
                StatusCode::BAD_REQUEST,
                "boot.ipxe needs ?mac=aa:bb:cc:dd:ee:ff\n",
            );
        };
        if let Err(refused) = requester_is(&node.mac, client) {
            return *refused;
        }
        self.remember(&node);
        let api = self.decisions.load().api.clone();
        let from_api = match &api {
            Some(api) => match api.lookup(node.mac).await {
                Ok(ApiDecision::Boot(spec)) => Some(spec),
                Ok(ApiDecision::Script(script)) => {
                    if let Some(once) = script.once {
                        api.spend(node.mac, once);
                    }
                    return script_response(script.render(&node.mac));
                }
                Ok(ApiDecision::NotOurs) => {
                    return nothing_to_boot(&node.mac, "the boot API has nothing for this machine");
                }
                Err(e) => {
                    tracing::warn!(mac = %MacDisplay(&node.mac), error = %e, "no boot script: the boot API failed");
                    return nothing_to_boot(&node.mac, "the boot API is unavailable");
                }
            },
            None => None,
        };
        // The node's architecture may have its own kernel (`[boot.arch.<name>]`).
        let files = boot.files(node.arch.as_deref());
        if from_api.is_none() && files.kernel.is_none() {
            tracing::warn!(mac = %MacDisplay(&node.mac), "a node asked for its boot script, but [boot] kernel is not set");
            return nothing_to_boot(&node.mac, "no kernel is configured ([boot] kernel)");
        }
        let entry = find_node(&config, &node);
        let server = local.ip().to_canonical();
        // URLs use the scheme the script was fetched with (an iPXE without TLS fetches over
        // http, one that trusts our CA over https), unless `[boot] https` asks for https for
        // all. They point where this request went when the scheme is the same (right behind a
        // port mapping too), else at the configured port of the other listener.
        let (wanted, configured_port) = if boot.https || scheme == Scheme::Https {
            (Scheme::Https, config.http.https_port)
        } else {
            (Scheme::Http, config.http.port)
        };
        let port = if wanted == scheme {
            local.port()
        } else {
            configured_port
        };
        let scheme = wanted.as_str();
        let host = match server {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let base = format!("{scheme}://{host}:{port}");
        let mut vars = self.node_vars(&node, entry, &server.to_string());
        let (kernel_url, initrd_urls, base_cmdline) = match &from_api {
            Some(spec) => (
                spec.kernel.clone(),
                spec.initrds.clone(),
                spec.cmdline.clone(),
            ),
            None => (
                format!("{base}{}", BootFilePath::kernel(files.arch)),
                (0..files.initrds.len())
                    .map(|i| format!("{base}{}", BootFilePath::initrd(files.arch, i)))
                    .collect::<Vec<_>>(),
                files.cmdline.to_owned(),
            ),
        };
        let mut initrd_names: Vec<String> =
            (0..initrd_urls.len()).map(|i| format!("{i}.img")).collect();
        let overlay_url = if config.overlay.is_empty() {
            String::new()
        } else {
            initrd_names.push("overlay.cpio".into());
            let path = format!("/nodes/{}/overlay.cpio", MacDisplay(&node.mac));
            format!(
                "{base}{}",
                self.signer
                    .sign(&path, SystemTime::now(), boot.url_lifetime)
            )
        };
        let cmdline = match entry.and_then(|n| n.cmdline.as_deref()) {
            Some(extra) if !base_cmdline.is_empty() => format!("{base_cmdline} {extra}"),
            Some(extra) => extra.to_owned(),
            None => base_cmdline,
        };
        for (name, value) in [
            ("base_url", Value::Text(base.clone())),
            ("kernel_url", Value::Text(kernel_url)),
            ("initrd_urls", Value::List(initrd_urls)),
            ("initrd_names", Value::List(initrd_names)),
            ("overlay_url", Value::Text(overlay_url)),
            ("cmdline", Value::Text(cmdline)),
            ("retries", Value::Text(boot.retries.to_string())),
            ("retry_delay", Value::Text(boot.retry_delay.to_string())),
        ] {
            vars.insert(name.to_owned(), value);
        }
        match boot.script.render(&vars) {
            Ok(script) => {
                if let (Some(api), Some(once)) = (&api, from_api.as_ref().and_then(|s| s.once)) {
                    api.spend(node.mac, once);
                }
                script_response(script)
            }
            Err(e) => {
                tracing::warn!(mac = %MacDisplay(&node.mac), error = %e, "rendering the boot script failed");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "script rendering failed\n",
                )
            }
        }
    }

    /// `/nodes/<mac>/overlay.cpio?expires=…&sig=…`: 403 unless signed for this path and not
    /// expired, so one node cannot read another's overlay.
    #[allow(clippy::too_many_arguments)]
    pub fn overlay(
        &self,
        method: &Method,
        path: &str,
        mac_text: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Response<Body> {
        // Signed in decoded form: iPXE 2019 percent-encodes the colons of the MAC in the
        // path, newer iPXE does not (tests/firmware_boot.rs found it).
        let path = decode(path).unwrap_or_default();
        if let Err(refusal) = self.signer.verify(&path, query, SystemTime::now()) {
            tracing::info!(path, reason = %refusal, "overlay refused");
            return text(StatusCode::FORBIDDEN, "forbidden\n");
        }
        let Some(mac) = decode(mac_text).as_deref().and_then(parse_mac) else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        if let Err(refused) = requester_is(&mac, client) {
            return *refused;
        }
        let (uuid, arch) = self
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&mac)
            .cloned()
            .unwrap_or_default();
        let query = NodeQuery { mac, uuid, arch };
        let config = self.config.load();
        let entry = find_node(&config, &query);
        let server = local.ip().to_canonical().to_string();
        let vars = self.node_vars(&query, entry, &server);
        let key = MacDisplay(&mac).to_string();
        let overlay = match self.overlays.get(&key, &config.overlay, &vars) {
            Ok(overlay) => overlay,
            Err(e) => {
                tracing::warn!(mac = key, error = %e, "building the overlay failed");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "overlay failed\n");
            }
        };
        let etag = HeaderValue::from_str(&format!("\"{}\"", overlay.hash))
            .expect("a hex digest is a valid header value");
        // RFC 9110 §13.1.2: a matching If-None-Match on GET/HEAD is a 304.
        if headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response.headers_mut().insert(header::ETAG, etag);
            return response;
        }
        let len = overlay.bytes.len();
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            Body::full(bytes::Bytes::from_owner(ArcBytes(overlay.bytes.clone())))
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(header::ETAG, etag);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
        response
    }

    /// `/boot/kernel` and `/boot/initrd/<n>` (under `/boot/<arch>/` for a
    /// `[boot.arch.<arch>]` section): the files the config names, wherever they are. Initrds
    /// are padded to a multiple of 4 bytes (see [`respond_open`]).
    pub fn boot_file(
        &self,
        files: &StaticRoot,
        method: &Method,
        rest: &str,
        headers: &HeaderMap,
        delivery: Delivery,
    ) -> Response<Body> {
        let config = self.config.load();
        let Some(wanted) = BootFilePath::parse(rest) else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        let boot = config.boot.files(wanted.arch.map(ClientArch::name));
        // `/boot/uefi-x64/kernel` without a uefi-x64 section is no file: each file has one URL.
        let (path, align): (Option<&Path>, u64) = match wanted.file {
            _ if boot.arch != wanted.arch => (None, 1),
            BootFile::Kernel => (boot.kernel, 1),
            BootFile::Initrd(n) => (boot.initrds.get(n).map(|p| p.as_path()), 4),
        };
        let Some(path) = path else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        match files.open_path(path) {
            Ok(file) => respond_open(method, &file, headers, delivery, align),
            Err(refusal) => {
                tracing::warn!(path = %path.display(), reason = %refusal, "a [boot] file cannot be served");
                text(StatusCode::NOT_FOUND, "not found\n")
            }
        }
    }

    /// Keeps the UUID and arch a node sent with its script request for its overlay.
    fn remember(&self, node: &NodeQuery) {
        let mut identities = self
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if identities.len() >= MAX_IDENTITIES && !identities.contains_key(&node.mac) {
            identities.clear();
        }
        identities.insert(node.mac, (node.uuid, node.arch.clone()));
    }

    /// Variables shared by scripts and overlays.
    fn node_vars(&self, query: &NodeQuery, entry: Option<&Node>, server: &str) -> Vars {
        let mac = MacDisplay(&query.mac).to_string();
        let hostname = entry
            .and_then(|n| n.hostname.clone())
            .unwrap_or_else(|| format!("node-{}", mac.replace(':', "")));
        let uuid = query
            .uuid
            .or_else(|| entry.and_then(|n| n.uuid))
            .map(|u| UuidDisplay(&crate::dhcp::classify::guid_to_uuid(&u)).to_string())
            .unwrap_or_default();
        let token = hmac::sign(&self.token_key, format!("node-token\n{mac}").as_bytes());
        let mut vars: Vars = BTreeMap::new();
        if let Some(node) = entry {
            for (name, value) in &node.vars {
                vars.insert(name.clone(), Value::Text(value.clone()));
            }
        }
        for (name, value) in [
            ("mac", mac),
            ("uuid", uuid),
            ("arch", query.arch.clone().unwrap_or_default()),
            ("hostname", hostname),
            ("token", hex(token.as_ref())[..TOKEN_LEN].to_owned()),
            ("server", server.to_owned()),
        ] {
            vars.insert(name.to_owned(), Value::Text(value));
        }
        vars
    }
}

/// A file of `[boot]` as its URL names it, after `/boot/`: `kernel` or `initrd/<n>`, under
/// `<arch>/` when it comes from that architecture's `[boot.arch.<arch>]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFilePath {
    pub arch: Option<ClientArch>,
    pub file: BootFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFile {
    Kernel,
    Initrd(usize),
}

impl BootFilePath {
    /// `rest` is the path after `/boot/`, as sent.
    pub fn parse(rest: &str) -> Option<BootFilePath> {
        let (arch, file) = match rest.split_once('/') {
            Some((head, tail)) => match ClientArch::from_name(head) {
                Some(arch) => (Some(arch), tail),
                None => (None, rest),
            },
            None => (None, rest),
        };
        let file = match file {
            "kernel" => BootFile::Kernel,
            _ => BootFile::Initrd(file.strip_prefix("initrd/")?.parse().ok()?),
        };
        Some(BootFilePath { arch, file })
    }

    /// The URL path of the kernel for `arch`'s section (`None`: `[boot]`'s).
    fn kernel(arch: Option<ClientArch>) -> String {
        BootFilePath {
            arch,
            file: BootFile::Kernel,
        }
        .to_string()
    }

    /// The URL path of initrd `n` for `arch`'s section (`None`: `[boot]`'s).
    fn initrd(arch: Option<ClientArch>, n: usize) -> String {
        BootFilePath {
            arch,
            file: BootFile::Initrd(n),
        }
        .to_string()
    }
}

impl std::fmt::Display for BootFilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("/boot/")?;
        if let Some(arch) = self.arch {
            write!(f, "{}/", arch.name())?;
        }
        match self.file {
            BootFile::Kernel => f.write_str("kernel"),
            BootFile::Initrd(n) => write!(f, "initrd/{n}"),
        }
    }
}

/// Refuses a request for `mac`'s script or overlay from a host on our link whose MAC is
/// another: the kernel's neighbour entry for the client's address names the machine that
/// actually connected. A client behind a router has no such entry (its address is not on our
/// link) and is not checked; the overlay's signature still binds it to the URL it was given.
/// The kernel is asked each time, not through the node tracker's cache: the check is about
/// the host connected now.
fn requester_is(mac: &[u8; 6], client: SocketAddr) -> Result<(), Box<Response<Body>>> {
    let std::net::IpAddr::V4(ip) = client.ip().to_canonical() else {
        return Ok(());
    };
    let neighbour = crate::net::neighbour::lookup(ip).unwrap_or_else(|e| {
        tracing::debug!(client = %ip, error = %e, "neighbour lookup failed");
        None
    });
    match neighbour {
        Some(actual) if actual != *mac => {
            tracing::warn!(
                claimed = %MacDisplay(mac),
                actual = %MacDisplay(&actual),
                client = %ip,
                "refused: a host asked for another node's boot files"
            );
            Err(Box::new(text(StatusCode::FORBIDDEN, "forbidden\n")))
        }
        _ => Ok(()),
    }
}

/// The `[[node]]` entry of the machine asking: by MAC, else by UUID (either byte order, as the
/// DHCP policy matches).
fn find_node<'c>(config: &'c Config, query: &NodeQuery) -> Option<&'c Node> {
    let by_mac = config.nodes.iter().find(|n| n.mac == Some(query.mac));
    by_mac.or_else(|| {
        let uuid = query.uuid?;
        let swapped = crate::dhcp::classify::guid_to_uuid(&uuid);
        config
            .nodes
            .iter()
            .find(|n| n.uuid == Some(uuid) || n.uuid == Some(swapped))
    })
}

/// `mac=…&uuid=…&arch=…`, percent-decoded. `None` without a valid MAC.
fn parse_query(query: Option<&str>) -> Option<NodeQuery> {
    let (mut mac, mut uuid, mut arch) = (None, None, None);
    for pair in query?.split('&') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        let value = decode(value)?;
        match name {
            "mac" => mac = parse_mac(&value),
            // The canonical text form; stored in wire (GUID) order like option 97.
            "uuid" => uuid = parse_uuid(&value).map(|u| crate::dhcp::classify::guid_to_uuid(&u)),
            "arch"
                if value.len() <= 32
                    && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                arch = Some(value)
            }
            _ => {}
        }
    }
    Some(NodeQuery {
        mac: mac?,
        uuid,
        arch,
    })
}

fn decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The script for a node with nothing to boot: it says why on the console and exits, so the
/// firmware goes on to its next boot device at once. A 404 instead would leave iPXE printing
/// a bare error and the firmware waiting out its own timeout.
fn nothing_to_boot(mac: &[u8; 6], why: &str) -> Response<Body> {
    let script = format!(
        "#!ipxe\n\
         echo xdpboot: nothing to boot for {}: {why}\n\
         echo xdpboot: leaving network boot, the firmware tries its next boot device\n\
         exit\n",
        MacDisplay(mac)
    );
    script_response(script)
}

/// A rendered script as the response. Scripts carry fresh signatures: never from a cache.
fn script_response(script: String) -> Response<Body> {
    let mut response = Response::new(Body::full(script.clone()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(script.len()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}

/// Lets a `Bytes` share an overlay's `Arc<[u8]>` without copying it.
struct ArcBytes(Arc<[u8]>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Reads the URL secret, or creates it (0600, parent directories as needed).
fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, BootContentError> {
    let name = || path.display().to_string();
    match std::fs::read(path) {
        Ok(secret) if secret.len() >= 16 => return Ok(secret),
        Ok(_) => return Err(BootContentError::ShortSecret { path: name() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(BootContentError::ReadSecret {
                path: name(),
                source,
            });
        }
    }
    let secret = UrlSigner::generate_secret().map_err(|_| BootContentError::Random)?;
    let write = || -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(&secret)
    };
    write().map_err(|source| BootContentError::WriteSecret {
        path: name(),
        source,
    })?;
    tracing::info!(path = %path.display(), "created a new URL secret");
    Ok(secret.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_need_a_mac_and_decode_it() {
        let q = parse_query(Some("mac=52%3A54%3A00%3A12%3A34%3A56&arch=uefi-x64")).unwrap();
        assert_eq!(q.mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(q.arch.as_deref(), Some("uefi-x64"));
        assert!(parse_query(Some("arch=bios")).is_none());
        assert!(parse_query(None).is_none());
        let q = parse_query(Some("mac=52:54:00:12:34:56&arch=<script>")).unwrap();
        assert_eq!(q.arch, None, "odd arch values are dropped, not rendered");
    }

    #[test]
    fn boot_file_paths_name_an_arch_only_by_its_policy_name_and_round_trip() {
        let parse = BootFilePath::parse;
        assert_eq!(
            parse("kernel"),
            Some(BootFilePath {
                arch: None,
                file: BootFile::Kernel
            })
        );
        assert_eq!(
            parse("uefi-arm64/initrd/2"),
            Some(BootFilePath {
                arch: Some(ClientArch::UefiArm64),
                file: BootFile::Initrd(2)
            })
        );
        for bad in [
            "",
            "initrd/",
            "initrd/x",
            "sparc/kernel",
            "uefi-arm64/",
            "uefi-arm64/x",
            "kernel/",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        for path in [
            "/boot/kernel",
            "/boot/initrd/0",
            "/boot/uefi-arm64/kernel",
            "/boot/bios/initrd/7",
        ] {
            let parsed = parse(path.strip_prefix("/boot/").unwrap()).unwrap();
            assert_eq!(parsed.to_string(), path);
        }
    }
}
