//! Boot decisions from an external API, compatible with pixiecore's API mode: for each machine,
//! `GET <api>/v1/boot/<mac>` answers JSON `{"kernel": …, "initrd": […], "cmdline": …,
//! "message": …}` to boot it, or 404 to leave it alone. This is how Ironic-, Tinkerbell- or
//! CMDB-driven sites keep boot control in their own system while xdpboot does the network part.
//!
//! DHCP must answer within the firmware's offer window and never waits on a network call: a
//! machine not yet in the cache is looked up in the background and answered on its next
//! DISCOVER (firmware retries every 1–4 s). Answers are cached for a short time, errors for
//! less; while the API is down its machines are not answered rather than answered wrongly, and
//! the log says so once per outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::dhcp::classify::MacDisplay;

/// Largest API answer read: a boot spec is a few URLs.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Lookups in flight at once; a boot storm of new MACs queues behind these.
const MAX_IN_FLIGHT: usize = 64;
/// How long a failed lookup is remembered before the next DISCOVER tries again.
const ERROR_TTL: Duration = Duration::from_secs(2);

/// What the API said about one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiDecision {
    /// Boot it with this.
    Boot(ApiBoot),
    /// 404: not ours; stay silent.
    NotOurs,
}

/// A boot spec from the API: absolute http(s) URLs (relative ones resolved against the API).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiBoot {
    pub kernel: String,
    pub initrds: Vec<String>,
    pub cmdline: String,
    pub message: Option<String>,
}

/// The answer as pixiecore documents it (`cmdline` as a string; the object form with
/// templates is not supported and is refused with a clear error).
#[derive(Debug, Deserialize)]
struct Spec {
    kernel: String,
    #[serde(default)]
    initrd: Vec<String>,
    #[serde(default)]
    cmdline: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

/// Why a lookup failed (the machine is then not answered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the boot API: {0}")]
    Unreachable(String),
    #[error("the boot API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the boot API answered HTTP {0}")]
    Status(u16),
    #[error("the boot API's answer is not a boot spec: {0}")]
    BadSpec(String),
}

/// The cache's state for one MAC.
#[derive(Debug, Clone)]
enum Entry {
    Known(ApiDecision, Instant),
    Failed(ApiError, Instant),
    Pending,
}

/// A lookup as DHCP sees it: no waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Decided(ApiDecision),
    /// Being asked; answer on the next request.
    Pending,
    /// The last attempt failed recently.
    Failed(ApiError),
}

/// DHCP asks the API through the cache, never waiting (see [`BootApi::lookup_now`]).
impl crate::dhcp::Admission for Arc<BootApi> {
    fn admit(&self, mac: Option<[u8; 6]>) -> crate::dhcp::Admit {
        use crate::dhcp::Admit;
        // Only Ethernet clients can be looked up by MAC; others are not the API's machines.
        let Some(mac) = mac else {
            return Admit::NotOurs;
        };
        match self.lookup_now(mac) {
            Lookup::Decided(ApiDecision::Boot(_)) => Admit::Yes,
            Lookup::Decided(ApiDecision::NotOurs) => Admit::NotOurs,
            Lookup::Pending => Admit::Pending,
            Lookup::Failed(_) => Admit::Unavailable,
        }
    }
}

/// The API client with its cache.
pub struct BootApi {
    /// `http://host:port/prefix` without a trailing slash.
    base: String,
    authority: String,
    path_prefix: String,
    timeout: Duration,
    ttl: Duration,
    max_entries: usize,
    cache: Mutex<HashMap<[u8; 6], Entry>>,
    in_flight: Arc<Semaphore>,
    /// Set while lookups fail, so the outage is logged once, and its end too.
    down: AtomicBool,
    pub lookups: AtomicU64,
    pub failures: AtomicU64,
}

impl std::fmt::Debug for BootApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootApi")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A config value that is not a usable API URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ApiUrlError(pub String);

impl BootApi {
    /// `url` is the API's base (`http://cmdb.example:8080/pixie`).
    pub fn new(
        url: &str,
        timeout: Duration,
        ttl: Duration,
        max_entries: usize,
    ) -> Result<BootApi, ApiUrlError> {
        let (authority, path_prefix) = parse_base(url)?;
        Ok(BootApi {
            base: url.trim_end_matches('/').to_owned(),
            authority,
            path_prefix,
            timeout,
            ttl,
            max_entries,
            cache: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            down: AtomicBool::new(false),
            lookups: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// What is known about `mac` now. On a miss (or an expired entry) a background lookup is
    /// started and `Pending` returned; needs a tokio runtime.
    pub fn lookup_now(self: &Arc<Self>, mac: [u8; 6]) -> Lookup {
        let now = Instant::now();
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            match cache.get(&mac) {
                Some(Entry::Known(decision, at)) if now.duration_since(*at) < self.ttl => {
                    return Lookup::Decided(decision.clone());
                }
                Some(Entry::Failed(e, at)) if now.duration_since(*at) < ERROR_TTL => {
                    return Lookup::Failed(e.clone());
                }
                Some(Entry::Pending) => return Lookup::Pending,
                _ => {}
            }
            if cache.len() >= self.max_entries && !cache.contains_key(&mac) {
                // Bounded: expired entries go first, then everything (a rare, cheap reset).
                cache.retain(|_, e| match e {
                    Entry::Known(_, at) => now.duration_since(*at) < self.ttl,
                    Entry::Failed(_, at) => now.duration_since(*at) < ERROR_TTL,
                    Entry::Pending => true,
                });
                if cache.len() >= self.max_entries {
                    cache.clear();
                }
            }
            cache.insert(mac, Entry::Pending);
        }
        let api = self.clone();
        tokio::spawn(async move {
            let result = api.fetch(mac).await;
            api.store(mac, result);
        });
        Lookup::Pending
    }

    /// Asks the API about `mac` and waits (for the HTTP side, which can wait); the answer is
    /// cached like a background lookup's.
    pub async fn lookup(self: &Arc<Self>, mac: [u8; 6]) -> Result<ApiDecision, ApiError> {
        if let Lookup::Decided(decision) = self.cached(mac) {
            return Ok(decision);
        }
        let result = self.fetch(mac).await;
        self.store(mac, result.clone());
        result
    }

    fn cached(&self, mac: [u8; 6]) -> Lookup {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match cache.get(&mac) {
            Some(Entry::Known(decision, at)) if at.elapsed() < self.ttl => {
                Lookup::Decided(decision.clone())
            }
            _ => Lookup::Pending,
        }
    }

    fn store(&self, mac: [u8; 6], result: Result<ApiDecision, ApiError>) {
        let now = Instant::now();
        let entry = match &result {
            Ok(decision) => Entry::Known(decision.clone(), now),
            Err(e) => Entry::Failed(e.clone(), now),
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(mac, entry);
        match result {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(api = %self.base, "the boot API answers again");
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        api = %self.base,
                        error = %e,
                        "the boot API is down: its machines are not answered until it is back"
                    );
                }
            }
        }
    }

    async fn fetch(&self, mac: [u8; 6]) -> Result<ApiDecision, ApiError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let _permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        let path = format!("{}/v1/boot/{}", self.path_prefix, MacDisplay(&mac));
        match tokio::time::timeout(self.timeout, self.get(&path)).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Timeout(self.timeout)),
        }
    }

    async fn get(&self, path: &str) -> Result<ApiDecision, ApiError> {
        let unreachable = |e: &dyn std::fmt::Display| ApiError::Unreachable(e.to_string());
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(&e))?;
        let driver = tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, &self.authority)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| unreachable(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| ApiError::BadSpec(e.to_string()))?
            .to_bytes();
        driver.abort();
        match status.as_u16() {
            200 => self.parse_spec(&body).map(ApiDecision::Boot),
            404 => Ok(ApiDecision::NotOurs),
            other => Err(ApiError::Status(other)),
        }
    }

    fn parse_spec(&self, body: &[u8]) -> Result<ApiBoot, ApiError> {
        let spec: Spec =
            serde_json::from_slice(body).map_err(|e| ApiError::BadSpec(e.to_string()))?;
        let cmdline = match spec.cmdline {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s,
            Some(_) => {
                return Err(ApiError::BadSpec(
                    "cmdline must be a string (the templated object form is not supported)".into(),
                ));
            }
        };
        if spec.kernel.is_empty() {
            return Err(ApiError::BadSpec("kernel is empty".into()));
        }
        Ok(ApiBoot {
            kernel: self.resolve(&spec.kernel)?,
            initrds: spec
                .initrd
                .iter()
                .map(|u| self.resolve(u))
                .collect::<Result<_, _>>()?,
            cmdline,
            message: spec.message,
        })
    }

    /// pixiecore resolves relative URLs against the API's URL; absolute http(s) URLs pass.
    /// Anything else (file://, data:) is refused: iPXE fetches these itself.
    fn resolve(&self, url: &str) -> Result<String, ApiError> {
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(url.to_owned());
        }
        if url.contains("://") {
            return Err(ApiError::BadSpec(format!(
                "{url:?}: only http(s) URLs can be handed to iPXE"
            )));
        }
        Ok(format!("{}/{}", self.base, url.trim_start_matches('/')))
    }
}

/// `http://host:port/prefix` → ("host:port", "/prefix"). Plain HTTP only: the API is a
/// site-local service, and the node fetches the URLs it returns itself.
fn parse_base(url: &str) -> Result<(String, String), ApiUrlError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        ApiUrlError(format!(
            "{url:?} must start with http:// (https APIs are not supported)"
        ))
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return Err(ApiUrlError(format!("{url:?} has no usable host")));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_split_and_checked() {
        assert_eq!(
            parse_base("http://127.0.0.1:8080/pixie/").unwrap(),
            ("127.0.0.1:8080".into(), "/pixie".into())
        );
        assert_eq!(
            parse_base("http://cmdb").unwrap(),
            ("cmdb:80".into(), String::new())
        );
        assert!(parse_base("https://cmdb/").is_err());
        assert!(parse_base("ftp://cmdb/").is_err());
        assert!(parse_base("http:///x").is_err());
    }

    #[test]
    fn specs_resolve_relative_urls_and_refuse_what_ipxe_cannot_fetch() {
        let api = BootApi::new(
            "http://10.0.0.1:8080/api",
            Duration::from_secs(1),
            Duration::from_secs(1),
            8,
        )
        .unwrap();
        let spec = api
            .parse_spec(br#"{"kernel": "k/vmlinuz", "initrd": ["http://x/i.img"], "cmdline": "a=b", "message": "hi"}"#)
            .unwrap();
        assert_eq!(spec.kernel, "http://10.0.0.1:8080/api/k/vmlinuz");
        assert_eq!(spec.initrds, ["http://x/i.img"]);
        assert_eq!(spec.cmdline, "a=b");
        assert!(
            api.parse_spec(br#"{"kernel": "file:///etc/passwd"}"#)
                .is_err()
        );
        assert!(
            api.parse_spec(br#"{"kernel": "x", "cmdline": {"a": 1}}"#)
                .is_err()
        );
        assert!(api.parse_spec(b"not json").is_err());
        assert!(api.parse_spec(br#"{"initrd": []}"#).is_err());
    }
}
