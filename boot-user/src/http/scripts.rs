//! What iPXE fetches after DHCP: the per-node boot script (`/boot.ipxe?mac=…`), the kernel and
//! initrds it names (`/boot/kernel`, `/boot/initrd/<n>`), and the node's signed overlay
//! (`/nodes/<mac>/overlay.cpio?expires=…&sig=…`). The same for the other loaders a chain may
//! go through ([`thirdstage`](super::thirdstage)): GRUB's and PXELINUX's per-node configs, over
//! HTTP and TFTP, and the kernel, initrds and overlay over TFTP for a GRUB without `http`.
//!
//! Scripts and configs are rendered from templates (`ipxe/boot.ipxe`, `ipxe/grub.cfg`,
//! `ipxe/pxelinux.cfg` by default) with the node's variables: those of its `[[node]]` entry,
//! matched by MAC or UUID, and defaults otherwise. Every URL in them points back at the address
//! the request came to, so a multi-homed server hands each rack its own address, as the DHCP
//! side does. A node may fetch only its own script, config and overlay (see `requester_is`).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use aws_lc_rs::hmac;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::files::{Delivery, StaticRoot, respond_open};
use super::overlay::{Overlay, OverlayCache, hex};
use super::signed::UrlSigner;
use super::thirdstage::{self, GrubFetch, GrubPlatform, ThirdStageName};
use super::{Body, Scheme};
use crate::bootapi::{ApiBoot, ApiDecision, ApiScript, OnceToken};
use crate::config::{Config, Node};
use crate::dhcp::classify::{ClientArch, MacDisplay, UuidDisplay};
use crate::dhcp::policy::{parse_mac, parse_uuid};
use crate::loaders::grub_modules;
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
    /// GRUB images read, with how they fetch ([`BootContent::grub_fetch`]): by path, for the
    /// length and mtime read.
    grub_images: Mutex<HashMap<PathBuf, (GrubImageStamp, GrubFetch)>>,
}

/// Which version of a GRUB image was read: its length and mtime.
type GrubImageStamp = (u64, Option<SystemTime>);

/// A node's UUID and arch, as its script request gave them.
type Identity = (Option<[u8; 16]>, Option<String>);

/// Nodes whose script-request identity is remembered for their overlays.
const MAX_IDENTITIES: usize = 100_000;
/// Largest GRUB image read to see which modules it has (Debian's are about 4 MB).
const MAX_GRUB_IMAGE_LEN: u64 = 64 << 20;

/// What a node is to boot.
enum Plan {
    /// `[boot]` (`None`) or the boot API's spec.
    Boot(Option<ApiBoot>),
    /// The boot API's own iPXE script, whole or chained from a URL (iPXE only).
    Script(ApiScript),
    /// Its own disk (the boot API said so).
    Local,
    /// Nothing, and why.
    Nothing(&'static str),
}

impl Plan {
    /// What a third-stage `loader` (GRUB, PXELINUX) boots: `[boot]` (`None`) or the API's spec;
    /// else why it boots nothing here, for the config that then leaves for the local disk.
    fn for_loader(self, loader: &str) -> Result<Option<ApiBoot>, String> {
        match self {
            Plan::Boot(spec) => Ok(spec),
            Plan::Script(_) => Err(format!(
                "the boot API answered with an iPXE script, which {loader} cannot run"
            )),
            Plan::Local => Err("booting from the local disk".to_owned()),
            Plan::Nothing(why) => Err(why.to_owned()),
        }
    }
}

/// Why a per-node file is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ThirdStageRefusal {
    /// Another node's file, or an overlay URL not signed for it (HTTP 403, TFTP ERROR 2).
    #[error("not this client's")]
    Forbidden,
    #[error("no such file")]
    NotFound,
    /// Rendering or building failed (logged where it happened).
    #[error("could not be made")]
    Failed,
}

impl ThirdStageRefusal {
    pub fn response(self) -> Response<Body> {
        match self {
            ThirdStageRefusal::Forbidden => text(StatusCode::FORBIDDEN, "forbidden\n"),
            ThirdStageRefusal::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
            ThirdStageRefusal::Failed => {
                text(StatusCode::INTERNAL_SERVER_ERROR, "could not be made\n")
            }
        }
    }
}

/// A boot file by its TFTP name ([`BootContent::tftp_boot_file`]).
#[derive(Debug, Clone)]
pub enum TftpBootFile {
    /// A file `[boot]` names, wherever it is (trusted, as over HTTP).
    File(PathBuf),
    /// A node's overlay.
    Bytes(Arc<[u8]>),
}

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
            grub_images: Mutex::new(HashMap::new()),
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
        let spec = match self.plan(&config, &node.mac, node.arch.as_deref()).await {
            Plan::Boot(spec) => spec,
            Plan::Script(script) => {
                self.spend(&node.mac, script.once);
                return script_response(script.render(&node.mac));
            }
            Plan::Local => return script_response(thirdstage::LOCAL_SCRIPT.to_owned()),
            Plan::Nothing(why) => return nothing_to_boot(&node.mac, why),
        };
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
        let base = base_url(wanted, server, port);
        let vars = self.boot_vars(&config, &node, entry, server, &base, spec.as_ref());
        match boot.script.render(&vars) {
            Ok(script) => {
                self.spend(&node.mac, spec.as_ref().and_then(|s| s.once));
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

    /// What `mac` (of architecture `arch`, a [`ClientArch::name`]) is to boot: `[boot]` (or
    /// its architecture's section), the boot API's answer (waited for), or nothing.
    async fn plan(&self, config: &Config, mac: &[u8; 6], arch: Option<&str>) -> Plan {
        let api = self.decisions.load().api.clone();
        match api {
            Some(api) => match api.lookup(*mac).await {
                Ok(ApiDecision::Boot(spec)) => Plan::Boot(Some(spec)),
                Ok(ApiDecision::Script(script)) => Plan::Script(script),
                Ok(ApiDecision::Local) => Plan::Local,
                Ok(ApiDecision::NotOurs) => {
                    Plan::Nothing("the boot API has nothing for this machine")
                }
                Err(e) => {
                    tracing::warn!(mac = %MacDisplay(mac), error = %e, "nothing to boot: the boot API failed");
                    Plan::Nothing("the boot API is unavailable")
                }
            },
            // The node's architecture may have its own kernel (`[boot.arch.<name>]`).
            None if config.boot.files(arch).kernel.is_none() => {
                tracing::warn!(mac = %MacDisplay(mac), "a node asked what to boot, but [boot] kernel is not set");
                Plan::Nothing("no kernel is configured ([boot] kernel)")
            }
            None => Plan::Boot(None),
        }
    }

    /// Marks a boot-once answer served to `mac` as spent, so the machine's next boot falls
    /// back ([`crate::bootapi::BootApi::spend`]).
    fn spend(&self, mac: &[u8; 6], once: Option<OnceToken>) {
        if let (Some(once), Some(api)) = (once, self.decisions.load().api.as_ref()) {
            api.spend(*mac, once);
        }
    }

    /// The variables of every per-node template: the node's own ([`BootContent::node_vars`]),
    /// what it boots (`spec`, else `[boot]`) and where from (`base`: this server's URL as the
    /// node reaches it).
    fn boot_vars(
        &self,
        config: &Config,
        node: &NodeQuery,
        entry: Option<&Node>,
        server: IpAddr,
        base: &str,
        spec: Option<&ApiBoot>,
    ) -> Vars {
        let boot = &config.boot;
        let files = boot.files(node.arch.as_deref());
        let mut vars = self.node_vars(config, node, entry, &server.to_string());
        let (kernel_url, initrd_urls, base_cmdline) = match spec {
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
        let mut all_initrd_urls = initrd_urls.clone();
        let (overlay_url, overlay_path) = if config.overlay.is_empty() {
            (String::new(), String::new())
        } else {
            initrd_names.push("overlay.cpio".into());
            let path = format!("/nodes/{}/overlay.cpio", MacDisplay(&node.mac));
            let signed = self
                .signer
                .sign(&path, SystemTime::now(), boot.url_lifetime);
            all_initrd_urls.push(format!("{base}{signed}"));
            (format!("{base}{signed}"), signed)
        };
        let cmdline = match entry.and_then(|n| n.cmdline.as_deref()) {
            Some(extra) if !base_cmdline.is_empty() => format!("{base_cmdline} {extra}"),
            Some(extra) => extra.to_owned(),
            None => base_cmdline,
        };
        for (name, value) in [
            ("base_url", Value::Text(base.to_owned())),
            ("kernel_url", Value::Text(kernel_url)),
            ("initrd_urls", Value::List(initrd_urls)),
            ("initrd_names", Value::List(initrd_names)),
            ("overlay_url", Value::Text(overlay_url)),
            ("overlay_path", Value::Text(overlay_path)),
            ("initrd_list", Value::Text(all_initrd_urls.join(","))),
            ("all_initrd_urls", Value::List(all_initrd_urls)),
            ("cmdline", Value::Text(cmdline)),
            ("retries", Value::Text(boot.retries.to_string())),
            ("retry_delay", Value::Text(boot.retry_delay.to_string())),
        ] {
            vars.insert(name.to_owned(), value);
        }
        vars
    }

    /// A file a loader after the firmware asks for by name ([`ThirdStageName`]): GRUB's and
    /// PXELINUX's per-node configs, GRUB's bootstrap, iPXE's local-boot script. `relative` is
    /// the path inside the roots (no leading `/`, percent-decoded), asked for by `client`
    /// over a connection (or TFTP exchange) to `local`. `None`: not such a name.
    pub async fn third_stage(
        &self,
        relative: &str,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Option<Result<String, ThirdStageRefusal>> {
        let name = ThirdStageName::parse(relative)?;
        Some(match name {
            ThirdStageName::LocalScript => Ok(thirdstage::LOCAL_SCRIPT.to_owned()),
            ThirdStageName::GrubBootstrap { platform } => Ok(thirdstage::grub_bootstrap(platform)),
            ThirdStageName::GrubConfig { platform, mac } => {
                let platform = platform.unwrap_or_else(|| self.grub_platform_of(&mac));
                self.grub_config(platform, mac, client, local).await
            }
            ThirdStageName::GrubConfigByAddress { platform, address } => {
                // Only the machine at that address may have it, and it is that machine's MAC
                // the config is made for. A prefix names a subnet: not made here.
                let Some(ip) = address.whole() else {
                    return Some(Err(ThirdStageRefusal::NotFound));
                };
                if client.ip().to_canonical() != IpAddr::V4(ip) {
                    tracing::warn!(client = %client.ip(), asked = %ip, "refused: a host asked for another address's GRUB config");
                    return Some(Err(ThirdStageRefusal::Forbidden));
                }
                let Some(mac) = neighbour_mac(ip) else {
                    return Some(Err(ThirdStageRefusal::NotFound));
                };
                let platform = platform.unwrap_or_else(|| self.grub_platform_of(&mac));
                self.grub_config(platform, mac, client, local).await
            }
            ThirdStageName::PxelinuxConfig { mac } => {
                self.pxelinux_config(mac, client, local).await
            }
        })
    }

    /// The GRUB platform of a node whose GRUB asked for a config name without one (upstream
    /// GRUB's search, right in the prefix): the architecture it last gave, else x86-64.
    fn grub_platform_of(&self, mac: &[u8; 6]) -> GrubPlatform {
        let identities = self
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let arch = identities.get(mac).and_then(|(_, arch)| arch.as_deref());
        GrubPlatform::ALL
            .into_iter()
            .find(|p| Some(p.arch()) == arch)
            .unwrap_or(GrubPlatform::X86_64Efi)
    }

    /// The node's GRUB config, rendered from `[boot] grub_config` (`ipxe/grub.cfg`): its
    /// kernel, initrds and overlay by GRUB file names, on xdpboot over HTTP where this GRUB can
    /// ([`BootContent::grub_fetch`]), else over TFTP.
    async fn grub_config(
        &self,
        platform: GrubPlatform,
        mac: [u8; 6],
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<String, ThirdStageRefusal> {
        if requester_is(&mac, client).is_err() {
            return Err(ThirdStageRefusal::Forbidden);
        }
        let config = self.config.load();
        let node = self.remember_loader(mac, platform.arch());
        let spec = match self
            .plan(&config, &mac, node.arch.as_deref())
            .await
            .for_loader("GRUB")
        {
            Ok(spec) => spec,
            Err(why) => return Ok(thirdstage::grub_exit(&why)),
        };
        let entry = find_node(&config, &node);
        let server = local.ip().to_canonical();
        let base = base_url(Scheme::Http, server, config.http.port);
        let mut vars = self.boot_vars(&config, &node, entry, server, &base, spec.as_ref());
        let fetch = self.grub_fetch(&config, platform);
        let device = fetch.device(server);
        let on_us = |path: &str| format!("{device}{path}");
        let (kernel, mut initrds) = match &spec {
            Some(spec) => {
                let files: Option<Vec<String>> = std::iter::once(&spec.kernel)
                    .chain(&spec.initrds)
                    .map(|url| thirdstage::grub_file_of_url(url))
                    .collect();
                let Some(mut files) = files else {
                    return Ok(thirdstage::grub_exit(
                        "GRUB fetches only http:// URLs on port 80, and the boot API named others",
                    ));
                };
                let kernel = files.remove(0);
                (kernel, files)
            }
            None => {
                let files = config.boot.files(node.arch.as_deref());
                (
                    on_us(&BootFilePath::kernel(files.arch)),
                    (0..files.initrds.len())
                        .map(|i| on_us(&BootFilePath::initrd(files.arch, i)))
                        .collect(),
                )
            }
        };
        if let Some(Value::Text(overlay)) = vars.get("overlay_path")
            && !overlay.is_empty()
        {
            initrds.push(on_us(overlay));
        }
        vars.insert("grub_kernel".into(), Value::Text(kernel));
        vars.insert("grub_initrds".into(), Value::List(initrds));
        vars.insert("grub_fetch".into(), Value::Text(fetch.name().into()));
        let rendered = config.boot.grub_config.render(&vars).map_err(|e| {
            tracing::warn!(mac = %MacDisplay(&mac), error = %e, "rendering the GRUB config failed");
            ThirdStageRefusal::Failed
        })?;
        self.spend(&mac, spec.as_ref().and_then(|s| s.once));
        Ok(rendered)
    }

    /// The node's PXELINUX config, rendered from `[boot] pxelinux_config`
    /// (`ipxe/pxelinux.cfg`): lpxelinux fetches the URLs in it over HTTP itself.
    async fn pxelinux_config(
        &self,
        mac: [u8; 6],
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<String, ThirdStageRefusal> {
        if requester_is(&mac, client).is_err() {
            return Err(ThirdStageRefusal::Forbidden);
        }
        let config = self.config.load();
        let node = self.remember_loader(mac, "bios");
        let spec = match self
            .plan(&config, &mac, node.arch.as_deref())
            .await
            .for_loader("PXELINUX")
        {
            Ok(spec) => spec,
            Err(why) => return Ok(thirdstage::pxelinux_local(&why)),
        };
        let entry = find_node(&config, &node);
        let server = local.ip().to_canonical();
        // PXELINUX has no TLS: plain HTTP, on the configured port.
        let base = base_url(Scheme::Http, server, config.http.port);
        let vars = self.boot_vars(&config, &node, entry, server, &base, spec.as_ref());
        let rendered = config.boot.pxelinux_config.render(&vars).map_err(|e| {
            tracing::warn!(mac = %MacDisplay(&mac), error = %e, "rendering the PXELINUX config failed");
            ThirdStageRefusal::Failed
        })?;
        self.spend(&mac, spec.as_ref().and_then(|s| s.once));
        Ok(rendered)
    }

    /// How `platform`'s GRUB reaches xdpboot: over HTTP when the GRUB image served for it has
    /// the `http` module and our HTTP port is 80 (the only one GRUB's HTTP client connects
    /// to), else over TFTP. The image is the one a client gets as `grubx64.efi`: from the TFTP
    /// root, else the HTTP root, else the package search; read once per version of the file.
    fn grub_fetch(&self, config: &Config, platform: GrubPlatform) -> GrubFetch {
        if config.http.port != 80 {
            return GrubFetch::Tftp;
        }
        let name = platform.image();
        let in_root = |root: &Path| {
            let root = root.canonicalize().ok()?;
            let path = root.join(name).canonicalize().ok()?;
            (path.starts_with(&root) && path.is_file()).then_some(path)
        };
        let Some(image) = in_root(&config.tftp.root)
            .or_else(|| in_root(&config.http.root))
            .or_else(|| config.loaders.find(name))
        else {
            return GrubFetch::Tftp;
        };
        let Ok(meta) = std::fs::metadata(&image) else {
            return GrubFetch::Tftp;
        };
        let stamp = (meta.len(), meta.modified().ok());
        let mut images = self
            .grub_images
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, fetch)) = images.get(&image)
            && *seen == stamp
        {
            return *fetch;
        }
        let has_http = meta.len() <= MAX_GRUB_IMAGE_LEN
            && std::fs::read(&image).is_ok_and(|bytes| {
                grub_modules(&bytes).is_some_and(|modules| modules.contains(&"http"))
            });
        let fetch = if has_http {
            GrubFetch::Http
        } else {
            GrubFetch::Tftp
        };
        tracing::info!(image = %image.display(), fetch = fetch.name(), "GRUB fetches kernels, initrds and overlays over {}", fetch.name());
        if images.len() >= GrubPlatform::ALL.len() * 4 {
            images.clear();
        }
        images.insert(image, (stamp, fetch));
        fetch
    }

    /// A file of `[boot]` or a node's overlay by the name a loader that fetches over TFTP asks
    /// for (GRUB without `http`): `boot/kernel`, `boot/initrd/<n>` (under `boot/<arch>/` too),
    /// `nodes/<mac>/overlay.cpio?expires=…&sig=…` (signed as over HTTP). `None`: not such a
    /// name.
    pub fn tftp_boot_file(
        &self,
        name: &str,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Option<Result<TftpBootFile, ThirdStageRefusal>> {
        let (path, query) = match name.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (name, None),
        };
        if let Some(rest) = path.strip_prefix("boot/") {
            let config = self.config.load();
            return Some(
                boot_file_of(&config, rest)
                    .map(|(path, _)| TftpBootFile::File(path.to_owned()))
                    .ok_or(ThirdStageRefusal::NotFound),
            );
        }
        let mac = path.strip_prefix("nodes/")?.strip_suffix("/overlay.cpio")?;
        Some(
            self.node_overlay(&format!("/{path}"), mac, query, client, local)
                .map(|overlay| TftpBootFile::Bytes(overlay.bytes.clone())),
        )
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
        let overlay = match self.node_overlay(path, mac_text, query, client, local) {
            Ok(overlay) => overlay,
            Err(refusal) => return refusal.response(),
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

    /// The overlay of the node `mac_text` names, for a request of `path` (signed) by `client`.
    fn node_overlay(
        &self,
        path: &str,
        mac_text: &str,
        query: Option<&str>,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<Arc<Overlay>, ThirdStageRefusal> {
        // Signed in decoded form: iPXE 2019 percent-encodes the colons of the MAC in the
        // path, newer iPXE does not (tests/firmware_boot.rs found it).
        let path = decode(path).unwrap_or_default();
        if let Err(refusal) = self.signer.verify(&path, query, SystemTime::now()) {
            tracing::info!(path, reason = %refusal, "overlay refused");
            return Err(ThirdStageRefusal::Forbidden);
        }
        let Some(mac) = decode(mac_text).as_deref().and_then(parse_mac) else {
            return Err(ThirdStageRefusal::NotFound);
        };
        if requester_is(&mac, client).is_err() {
            return Err(ThirdStageRefusal::Forbidden);
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
        let vars = self.node_vars(&config, &query, entry, &server);
        let key = MacDisplay(&mac).to_string();
        self.overlays
            .get(&key, &config.overlay, &vars)
            .map_err(|e| {
                tracing::warn!(mac = key, error = %e, "building the overlay failed");
                ThirdStageRefusal::Failed
            })
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
        let Some((path, align)) = boot_file_of(&config, rest) else {
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

    /// Keeps the arch of a node whose loader (GRUB, PXELINUX) asked for its config, keeping the
    /// UUID its script request gave, if any; returns the node as its templates see it.
    fn remember_loader(&self, mac: [u8; 6], arch: &str) -> NodeQuery {
        let mut identities = self
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if identities.len() >= MAX_IDENTITIES && !identities.contains_key(&mac) {
            identities.clear();
        }
        let identity = identities.entry(mac).or_default();
        identity.1 = Some(arch.to_owned());
        NodeQuery {
            mac,
            uuid: identity.0,
            arch: identity.1.clone(),
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

    /// Variables shared by scripts and overlays: `[boot] vars`, the node's own `vars` over them,
    /// and the built-in ones over both.
    fn node_vars(
        &self,
        config: &Config,
        query: &NodeQuery,
        entry: Option<&Node>,
        server: &str,
    ) -> Vars {
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
        let own = entry.into_iter().flat_map(|node| &node.vars);
        for (name, value) in config.boot.vars.iter().chain(own) {
            vars.insert(name.clone(), Value::Text(value.clone()));
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

/// Over TFTP: GRUB's and PXELINUX's per-node configs, iPXE's local-boot script, and the boot
/// files and overlay of a GRUB that fetches over TFTP.
impl crate::tftp::files::Generator for BootContent {
    fn generate<'a>(
        &'a self,
        name: &'a str,
        client: SocketAddr,
        local: IpAddr,
    ) -> crate::tftp::files::Generating<'a> {
        use crate::tftp::files::{FileError, Generated};
        Box::pin(async move {
            let local = SocketAddr::from((local, 0));
            let refused = |refusal: ThirdStageRefusal| match refusal {
                ThirdStageRefusal::Forbidden => FileError::PermissionDenied,
                ThirdStageRefusal::NotFound => FileError::NotFound,
                ThirdStageRefusal::Failed => FileError::Io(io::Error::other(refusal)),
            };
            if let Some(file) = self.tftp_boot_file(name, client, local) {
                return Some(
                    file.map(|file| match file {
                        TftpBootFile::File(path) => Generated::File(path),
                        TftpBootFile::Bytes(bytes) => Generated::Bytes(bytes),
                    })
                    .map_err(refused),
                );
            }
            let made = self.third_stage(name, client, local).await?;
            Some(
                made.map(|text| Generated::Bytes(text.into_bytes().into()))
                    .map_err(refused),
            )
        })
    }
}

/// `scheme://server:port`, an IPv6 address in brackets.
fn base_url(scheme: Scheme, server: IpAddr, port: u16) -> String {
    let host = match server {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    format!("{}://{host}:{port}", scheme.as_str())
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

/// The file behind `/boot/<rest>` (HTTP) or `boot/<rest>` (TFTP) and the alignment its body
/// is padded to: initrds to 4 bytes (see [`respond_open`]), the kernel not at all.
fn boot_file_of<'c>(config: &'c Config, rest: &str) -> Option<(&'c Path, u64)> {
    let wanted = BootFilePath::parse(rest)?;
    let boot = config.boot.files(wanted.arch.map(ClientArch::name));
    // `/boot/uefi-x64/kernel` without a uefi-x64 section is no file: each file has one URL.
    if boot.arch != wanted.arch {
        return None;
    }
    match wanted.file {
        BootFile::Kernel => Some((boot.kernel?, 1)),
        BootFile::Initrd(n) => Some((boot.initrds.get(n)?.as_path(), 4)),
    }
}

/// Refuses a request for `mac`'s script or overlay from a host on our link whose MAC is
/// another: the kernel's neighbour entry for the client's address names the machine that
/// actually connected. A client behind a router has no such entry (its address is not on our
/// link) and is not checked; the overlay's signature still binds it to the URL it was given.
/// The kernel is asked each time, not through the node tracker's cache: the check is about
/// the host connected now.
fn requester_is(mac: &[u8; 6], client: SocketAddr) -> Result<(), Box<Response<Body>>> {
    let ip = client.ip().to_canonical();
    let actual = match (ip, client) {
        (IpAddr::V4(v4), _) => neighbour_mac(v4),
        // Over IPv6 the neighbour table (NDP) answers the same question; a link-local client
        // is looked up on the interface it came in on.
        (IpAddr::V6(v6), SocketAddr::V6(v6_client)) => {
            crate::net::neighbour::lookup_v6(v6, v6_client.scope_id()).unwrap_or_else(|e| {
                tracing::debug!(client = %v6, error = %e, "neighbour lookup failed");
                None
            })
        }
        (IpAddr::V6(_), SocketAddr::V4(_)) => None,
    };
    match actual {
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

/// The MAC of the kernel's neighbour entry for `ip`: the machine on our link at that address.
fn neighbour_mac(ip: std::net::Ipv4Addr) -> Option<[u8; 6]> {
    crate::net::neighbour::lookup(ip).unwrap_or_else(|e| {
        tracing::debug!(client = %ip, error = %e, "neighbour lookup failed");
        None
    })
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
