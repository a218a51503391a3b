//! Boot decisions from an external API, compatible with pixiecore's API mode: for each machine,
//! `GET <api>/v1/boot/<mac>` answers JSON `{"kernel": …, "initrd": […], "cmdline": …,
//! "message": …}` to boot it, or 404 to leave it alone. This is how Ironic-, Tinkerbell- or
//! CMDB-driven sites keep boot control in their own system while xdpboot does the network part.
//! Beyond pixiecore, an answer may be a ready iPXE script (`"ipxe_script"`) or the URL of one
//! (`"ipxe_script_url"`), for systems that write their own (Ironic's `boot.ipxe`, MAAS,
//! Tinkerbell), and any answer may be `"once": true`: the machine boots with it once, and its
//! next boot falls back as if the API had answered 404. The schema is `docs/boot-api.md`.
//!
//! Boot-once needs no state in the API: xdpboot remembers, per machine, a fingerprint of the
//! once-answer it served ([`OnceToken`], a hash of the JSON body), so the API may keep
//! returning the same answer and the machine still boots with it only once; an answer that
//! differs in any byte (a new request id, say) is a new one and boots once more. The memory is
//! per instance and per run, bounded by [`MAX_SPENT_ONCE`]: an API that must never repeat a
//! boot clears its answer once the machine has booted, as it would with pixiecore.
//!
//! One answer is xdpboot's own: `{"local": true}` (no kernel) sends the machine to its own disk
//! at once, as Ironic does with a deployed node while network boot stays first in its boot
//! order: a PXE ROM gets a boot menu whose only item is local boot, iPXE a script that exits,
//! GRUB a config that exits, PXELINUX one that does `LOCALBOOT 0`, and UEFI HTTP boot a URL
//! that answers 404 at once.
//!
//! DHCP must answer within the firmware's offer window and never waits on a network call: a
//! machine not yet in the cache is looked up in the background and answered on its next
//! DISCOVER (firmware retries every 1–4 s). Answers are cached for a short time, errors for
//! less; while the API is down its machines are not answered rather than answered wrongly, and
//! the log says so once per outage.
//!
//! A flood of new MACs (a random-MAC attack, or a rack powering on at once) is bounded twice.
//! At most [`MAX_IN_FLIGHT`] lookups run; a new machine seen while they all do is not queued
//! (no task is spawned to wait for a slot) but counted in [`BootApi::lookups_deferred`] and
//! asked about on its next DISCOVER. And the cache holds at most `max_entries` machines: when
//! full, it sweeps out expired entries (in batches, see `Cache::make_room`) and then evicts the
//! least recently used answers, so the machines that keep asking keep their answers through
//! the flood. A lookup in flight is never evicted: its marker is created only with a slot and
//! removed before the slot is released, so markers never outnumber slots, and when every entry
//! is one (a cache smaller than [`MAX_IN_FLIGHT`]) a new machine is deferred too.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::dhcp::classify::MacDisplay;

/// Largest API answer read: a boot spec is a few URLs.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Lookups in flight at once, DHCP's background ones and the HTTP side's together. Beyond
/// this, DHCP defers new machines to their next DISCOVER and the HTTP side waits (within the
/// timeout), so a flood of new MACs costs at most this many tasks and sockets.
pub const MAX_IN_FLIGHT: usize = 64;
/// How long a failed lookup is remembered before the next DISCOVER tries again.
const ERROR_TTL: Duration = Duration::from_secs(2);

/// Machines whose boot-once answer was served and is remembered as spent. Past this, the
/// oldest are forgotten first (their answer, if the API still gives it, boots them once more).
pub const MAX_SPENT_ONCE: usize = 100_000;

/// What the API said about one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiDecision {
    /// Boot it with this.
    Boot(ApiBoot),
    /// Boot it with an iPXE script of the API's: given whole, or to be chained from a URL.
    Script(ApiScript),
    /// `{"local": true}`: boot it from its own disk.
    Local,
    /// 404: not ours; stay silent.
    NotOurs,
}

impl ApiDecision {
    /// The fingerprint of a boot-once answer; `None` for one that boots every time.
    pub fn once(&self) -> Option<OnceToken> {
        match self {
            ApiDecision::Boot(boot) => boot.once,
            ApiDecision::Script(script) => script.once,
            ApiDecision::Local | ApiDecision::NotOurs => None,
        }
    }
}

/// Which boot-once answer a machine was served: a hash of the API's JSON body, so the same
/// answer repeated is recognised and a changed one is not. In memory only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnceToken(u64);

impl OnceToken {
    fn of(body: &[u8]) -> OnceToken {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: stable for the life of the process, which is all the
        // memory of spent answers lasts.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        OnceToken(hasher.finish())
    }
}

/// A boot spec from the API: absolute http(s) URLs (relative ones resolved against the API).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiBoot {
    pub kernel: String,
    pub initrds: Vec<String>,
    pub cmdline: String,
    pub message: Option<String>,
    /// Set for a boot-once answer (`"once": true`).
    pub once: Option<OnceToken>,
}

/// An iPXE script answer (`"ipxe_script"` or `"ipxe_script_url"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiScript {
    pub source: ScriptSource,
    pub message: Option<String>,
    /// Set for a boot-once answer (`"once": true`).
    pub once: Option<OnceToken>,
}

/// Where an API's iPXE script comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptSource {
    /// The script itself (starting `#!ipxe`), served as it is in place of xdpboot's template.
    Inline(String),
    /// An absolute http(s) URL the node chains (relative ones resolved against the API).
    Url(String),
}

impl ApiScript {
    /// What the node gets at `/boot.ipxe`: the API's script, or one that chains its URL.
    pub fn render(&self, mac: &[u8; 6]) -> String {
        match &self.source {
            ScriptSource::Inline(script) => script.clone(),
            ScriptSource::Url(url) => {
                let mut script = String::from("#!ipxe\n");
                if let Some(message) = &self.message {
                    script.push_str(&format!("echo {}\n", one_line(message)));
                }
                // --autofree: the chained script (and what it loads) is freed if it returns.
                script.push_str(&format!(
                    "echo xdpboot: chaining the boot API's script for {mac}\n\
                     chain --autofree {url} || goto failed\n\
                     exit\n\
                     :failed\n\
                     echo xdpboot: the boot API's script could not be fetched: {url}\n\
                     echo xdpboot: leaving network boot, the firmware tries its next boot device\n\
                     exit 1\n",
                    mac = MacDisplay(mac),
                ));
                script
            }
        }
    }
}

/// `text` without line breaks (an iPXE command is one line).
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// The answer as pixiecore documents it (`cmdline` as a string; the object form with
/// templates is not supported and is refused with a clear error), and xdpboot's additions:
/// `ipxe_script`, `ipxe_script_url` and `once` (docs/boot-api.md).
#[derive(Debug, Deserialize)]
struct Spec {
    #[serde(default)]
    kernel: Option<String>,
    #[serde(default)]
    local: bool,
    #[serde(default)]
    initrd: Vec<String>,
    #[serde(default)]
    cmdline: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    ipxe_script: Option<String>,
    #[serde(default)]
    ipxe_script_url: Option<String>,
    #[serde(default)]
    once: bool,
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
    /// A lookup is in flight.
    Pending,
}

impl Entry {
    /// Whether the entry still stands at `now` (a pending one always does).
    fn is_fresh(&self, now: Instant, ttl: Duration) -> bool {
        match self {
            Entry::Known(_, at) => now.duration_since(*at) < ttl,
            Entry::Failed(_, at) => now.duration_since(*at) < ERROR_TTL,
            Entry::Pending => true,
        }
    }
}

/// A lookup as DHCP sees it: no waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Decided(ApiDecision),
    /// Being asked; answer on the next request.
    Pending,
    /// Not asked: [`MAX_IN_FLIGHT`] lookups are in flight. The next request tries again.
    Deferred,
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
            Lookup::Decided(ApiDecision::Boot(_) | ApiDecision::Script(_)) => Admit::Yes,
            Lookup::Decided(ApiDecision::Local) => Admit::Local,
            Lookup::Decided(ApiDecision::NotOurs) => Admit::NotOurs,
            // Either way the firmware's next DISCOVER is the one answered.
            Lookup::Pending | Lookup::Deferred => Admit::Pending,
            Lookup::Failed(_) => Admit::Unavailable,
        }
    }
}

/// `Slot::used` of a pending entry: it has no place in the recency order (it is not evicted).
const NOT_IN_ORDER: u64 = 0;

/// One cached MAC and when it was last used.
#[derive(Debug)]
struct Slot {
    entry: Entry,
    /// The stamp of its current place in [`Cache::recency`], or [`NOT_IN_ORDER`].
    used: u64,
}

/// The answers, bounded by `max_entries`, evicting expired entries and then the least recently
/// used; pending entries are never evicted. Sans-IO: the caller passes the time.
///
/// The recency order is a log of `(mac, stamp)` pairs, oldest use first; a use appends a pair
/// and a pair whose stamp is no longer its slot's is stale and skipped (the usual lazy-deletion
/// LRU). The log is compacted when it holds twice `max_entries` pairs, so it stays bounded and
/// every operation is amortised O(1).
#[derive(Debug)]
struct Cache {
    entries: HashMap<[u8; 6], Slot>,
    recency: VecDeque<([u8; 6], u64)>,
    clock: u64,
    max_entries: usize,
    ttl: Duration,
    /// Entries added since expired ones were last swept out.
    added_since_sweep: usize,
}

impl Cache {
    fn new(max_entries: usize, ttl: Duration) -> Cache {
        Cache {
            entries: HashMap::new(),
            recency: VecDeque::new(),
            clock: NOT_IN_ORDER,
            // The config refuses 0; 1 keeps a zero from making every insertion fail.
            max_entries: max_entries.max(1),
            ttl,
            added_since_sweep: 0,
        }
    }

    /// What the cache says about `mac` at `now`, marking an answer as used; `None` when
    /// absent or expired.
    fn lookup(&mut self, mac: [u8; 6], now: Instant) -> Option<Lookup> {
        let slot = self.entries.get(&mac)?;
        if !slot.entry.is_fresh(now, self.ttl) {
            return None;
        }
        let found = match &slot.entry {
            Entry::Known(decision, _) => Lookup::Decided(decision.clone()),
            Entry::Failed(e, _) => Lookup::Failed(e.clone()),
            Entry::Pending => return Some(Lookup::Pending),
        };
        self.touch(mac);
        Some(found)
    }

    /// Marks a lookup of `mac` as in flight. False when there is no room: every entry is
    /// itself a lookup in flight.
    fn start(&mut self, mac: [u8; 6], now: Instant) -> bool {
        if !self.make_room(mac, now) {
            return false;
        }
        // Replacing an expired answer leaves its recency pair stale.
        self.entries.insert(
            mac,
            Slot {
                entry: Entry::Pending,
                used: NOT_IN_ORDER,
            },
        );
        true
    }

    /// Records an answer (replacing the pending marker of its lookup, if any). Not kept when
    /// every entry is a lookup in flight: the caller has the answer anyway.
    fn store(&mut self, mac: [u8; 6], entry: Entry, now: Instant) {
        if !self.make_room(mac, now) {
            return;
        }
        self.entries.insert(
            mac,
            Slot {
                entry,
                used: NOT_IN_ORDER,
            },
        );
        self.touch(mac);
    }

    /// Drops the pending marker of a lookup that ended without storing an answer.
    fn abandon(&mut self, mac: [u8; 6]) {
        if let Some(Slot {
            entry: Entry::Pending,
            ..
        }) = self.entries.get(&mac)
        {
            self.entries.remove(&mac);
        }
    }

    fn touch(&mut self, mac: [u8; 6]) {
        let Some(slot) = self.entries.get_mut(&mac) else {
            return;
        };
        self.clock += 1;
        slot.used = self.clock;
        self.recency.push_back((mac, self.clock));
        if self.recency.len() > 2 * self.max_entries {
            // At least `max_entries` uses since the last compaction pay for this one.
            let entries = &self.entries;
            self.recency
                .retain(|(mac, used)| entries.get(mac).is_some_and(|slot| slot.used == *used));
        }
    }

    /// Makes room for `mac` if it is not cached yet. Expired entries go first, swept at most
    /// once per `max_entries / 2` additions (so the sweep costs O(1) amortised: a flood of
    /// live answers does not rescan the table per MAC); then the least recently used answer.
    /// False when every entry is a lookup in flight.
    fn make_room(&mut self, mac: [u8; 6], now: Instant) -> bool {
        if self.entries.contains_key(&mac) {
            return true;
        }
        self.added_since_sweep += 1;
        if self.entries.len() < self.max_entries {
            return true;
        }
        if self.added_since_sweep > self.max_entries / 2 {
            self.added_since_sweep = 0;
            let ttl = self.ttl;
            self.entries.retain(|_, slot| slot.entry.is_fresh(now, ttl));
            if self.entries.len() < self.max_entries {
                return true;
            }
        }
        while let Some((old, used)) = self.recency.pop_front() {
            if self.entries.get(&old).is_some_and(|slot| slot.used == used) {
                self.entries.remove(&old);
                return true;
            }
        }
        false
    }
}

/// The boot-once answers served, per machine, bounded by [`MAX_SPENT_ONCE`] (oldest first out).
#[derive(Debug, Default)]
struct SpentOnce {
    by_mac: HashMap<[u8; 6], OnceToken>,
    /// Insertion order, for forgetting the oldest; a MAC appears once.
    order: VecDeque<[u8; 6]>,
}

impl SpentOnce {
    /// Records `once` for `mac`; false if it was recorded already.
    fn insert(&mut self, mac: [u8; 6], once: OnceToken) -> bool {
        match self.by_mac.insert(mac, once) {
            Some(previous) => previous != once,
            None => {
                self.order.push_back(mac);
                if self.order.len() > MAX_SPENT_ONCE
                    && let Some(oldest) = self.order.pop_front()
                {
                    self.by_mac.remove(&oldest);
                }
                true
            }
        }
    }

    fn get(&self, mac: &[u8; 6]) -> Option<OnceToken> {
        self.by_mac.get(mac).copied()
    }
}

/// The API client with its cache.
pub struct BootApi {
    /// `http://host:port/prefix` without a trailing slash.
    base: String,
    authority: String,
    path_prefix: String,
    timeout: Duration,
    cache: Mutex<Cache>,
    /// [`MAX_IN_FLIGHT`] slots; a lookup holds one from before its request to after its answer
    /// is stored.
    in_flight: Arc<Semaphore>,
    /// Set while lookups fail, so the outage is logged once, and its end too.
    down: AtomicBool,
    /// Boot-once answers already served, per machine.
    spent: Mutex<SpentOnce>,
    /// Requests sent to the API.
    pub lookups: AtomicU64,
    /// Lookups that failed (unreachable, timed out, an error status, a bad spec).
    pub failures: AtomicU64,
    /// Machines not looked up because [`MAX_IN_FLIGHT`] lookups were in flight; each is asked
    /// about on its next request.
    pub lookups_deferred: AtomicU64,
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

/// A background lookup's pending marker and slot. Dropped without an answer stored (its task
/// cancelled with the runtime), it removes the marker so the next DISCOVER asks again; the
/// slot is released after that (fields drop after `drop`), so markers never outnumber slots.
struct BackgroundLookup {
    api: Arc<BootApi>,
    mac: [u8; 6],
    _slot: OwnedSemaphorePermit,
}

impl Drop for BackgroundLookup {
    fn drop(&mut self) {
        self.api.lock_cache().abandon(self.mac);
    }
}

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
            cache: Mutex::new(Cache::new(max_entries, ttl)),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            down: AtomicBool::new(false),
            spent: Mutex::new(SpentOnce::default()),
            lookups: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            lookups_deferred: AtomicU64::new(0),
        })
    }

    /// What is known about `mac` now. On a miss (or an expired entry) a background lookup is
    /// started and `Pending` returned, or `Deferred` when [`MAX_IN_FLIGHT`] lookups are
    /// already in flight; needs a tokio runtime.
    pub fn lookup_now(self: &Arc<Self>, mac: [u8; 6]) -> Lookup {
        let now = Instant::now();
        let mut cache = self.lock_cache();
        if let Some(known) = cache.lookup(mac, now) {
            return match known {
                Lookup::Decided(decision) => Lookup::Decided(self.unless_spent(mac, decision)),
                other => other,
            };
        }
        // The slot before the task: a task per MAC waiting for a slot is what a random-MAC
        // flood would pile up without bound. Firmware asks again within seconds anyway.
        let deferred = || {
            self.lookups_deferred.fetch_add(1, Ordering::Relaxed);
            Lookup::Deferred
        };
        let Ok(slot) = self.in_flight.clone().try_acquire_owned() else {
            return deferred();
        };
        if !cache.start(mac, now) {
            return deferred();
        }
        drop(cache);
        let lookup = BackgroundLookup {
            api: self.clone(),
            mac,
            _slot: slot,
        };
        tokio::spawn(async move {
            let api = &lookup.api;
            let result = api.within_timeout(api.fetch(mac)).await;
            api.store(mac, result);
        });
        Lookup::Pending
    }

    /// Asks the API about `mac` and waits (for the HTTP side, which can wait); the answer is
    /// cached like a background lookup's. The timeout covers the wait for a slot as well as the
    /// exchange: behind a hung API, slots only free up as lookups time out.
    pub async fn lookup(self: &Arc<Self>, mac: [u8; 6]) -> Result<ApiDecision, ApiError> {
        let cached = self.lock_cache().lookup(mac, Instant::now());
        if let Some(Lookup::Decided(decision)) = cached {
            return Ok(self.unless_spent(mac, decision));
        }
        let result = self
            .within_timeout(async {
                let _slot = self
                    .in_flight
                    .acquire()
                    .await
                    .map_err(|e| ApiError::Unreachable(e.to_string()))?;
                self.fetch(mac).await
            })
            .await;
        self.store(mac, result.clone());
        result.map(|decision| self.unless_spent(mac, decision))
    }

    /// Records that `mac` was served its boot-once answer `once`: from now on the same answer
    /// counts as the API's 404 for it (DHCP stays silent, the script says there is nothing to
    /// boot), so its next boot falls back to the firmware's next boot device.
    pub fn spend(&self, mac: [u8; 6], once: OnceToken) {
        let mut spent = self.spent.lock().unwrap_or_else(PoisonError::into_inner);
        if spent.insert(mac, once) {
            tracing::info!(
                mac = %MacDisplay(&mac),
                "the boot API's boot-once answer was served: the machine's next boot falls back"
            );
        }
    }

    /// `decision`, or `NotOurs` when it is the boot-once answer `mac` was already served.
    fn unless_spent(&self, mac: [u8; 6], decision: ApiDecision) -> ApiDecision {
        let Some(once) = decision.once() else {
            return decision;
        };
        let spent = self.spent.lock().unwrap_or_else(PoisonError::into_inner);
        if spent.get(&mac) == Some(once) {
            ApiDecision::NotOurs
        } else {
            decision
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn store(&self, mac: [u8; 6], result: Result<ApiDecision, ApiError>) {
        let now = Instant::now();
        let entry = match &result {
            Ok(decision) => Entry::Known(decision.clone(), now),
            Err(e) => Entry::Failed(e.clone(), now),
        };
        self.lock_cache().store(mac, entry, now);
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

    async fn within_timeout(
        &self,
        lookup: impl Future<Output = Result<ApiDecision, ApiError>>,
    ) -> Result<ApiDecision, ApiError> {
        match tokio::time::timeout(self.timeout, lookup).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Timeout(self.timeout)),
        }
    }

    /// One request; the caller holds a slot and bounds the time.
    async fn fetch(&self, mac: [u8; 6]) -> Result<ApiDecision, ApiError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let path = format!("{}/v1/boot/{}", self.path_prefix, MacDisplay(&mac));
        self.get(&path).await
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
            200 => self.parse_spec(&body),
            404 => Ok(ApiDecision::NotOurs),
            other => Err(ApiError::Status(other)),
        }
    }

    fn parse_spec(&self, body: &[u8]) -> Result<ApiDecision, ApiError> {
        let spec: Spec =
            serde_json::from_slice(body).map_err(|e| ApiError::BadSpec(e.to_string()))?;
        if spec.local {
            // The machine's own disk: nothing else may come with it, and it is no one-time
            // answer (after a boot-once answer the machine falls back to its disk anyway).
            if spec.kernel.is_some() || spec.ipxe_script.is_some() || spec.ipxe_script_url.is_some()
            {
                return Err(ApiError::BadSpec(
                    "local: true boots the machine's own disk; it takes no kernel or script".into(),
                ));
            }
            if spec.once {
                return Err(ApiError::BadSpec(
                    "local: true is not a boot-once answer (after one, the machine boots its disk \
                     anyway)"
                        .into(),
                ));
            }
            return Ok(ApiDecision::Local);
        }
        let once = spec.once.then(|| OnceToken::of(body));
        let script = |source| {
            Ok(ApiDecision::Script(ApiScript {
                source,
                message: spec.message.clone(),
                once,
            }))
        };
        let kernel = match (spec.kernel, spec.ipxe_script, spec.ipxe_script_url) {
            (Some(kernel), None, None) => kernel,
            // iPXE runs a downloaded image as a script only with this magic line.
            (None, Some(text), None) if text.starts_with("#!ipxe") => {
                return script(ScriptSource::Inline(text));
            }
            (None, Some(_), None) => {
                return Err(ApiError::BadSpec(
                    "ipxe_script must start with #!ipxe".into(),
                ));
            }
            // The URL goes into a script line as it is.
            (None, None, Some(url))
                if url.is_empty()
                    || url.contains(|c: char| c.is_whitespace() || c.is_control()) =>
            {
                return Err(ApiError::BadSpec(format!(
                    "ipxe_script_url {url:?} is empty or has spaces or control characters"
                )));
            }
            (None, None, Some(url)) => return script(ScriptSource::Url(self.resolve(&url)?)),
            (None, None, None) => {
                return Err(ApiError::BadSpec(
                    "an answer needs one of kernel, ipxe_script and ipxe_script_url, or local: true"
                        .into(),
                ));
            }
            _ => {
                return Err(ApiError::BadSpec(
                    "kernel, ipxe_script and ipxe_script_url exclude each other".into(),
                ));
            }
        };
        let cmdline = match spec.cmdline {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s,
            Some(_) => {
                return Err(ApiError::BadSpec(
                    "cmdline must be a string (the templated object form is not supported)".into(),
                ));
            }
        };
        if kernel.is_empty() {
            return Err(ApiError::BadSpec("kernel is empty".into()));
        }
        Ok(ApiDecision::Boot(ApiBoot {
            kernel: self.resolve(&kernel)?,
            initrds: spec
                .initrd
                .iter()
                .map(|u| self.resolve(u))
                .collect::<Result<_, _>>()?,
            cmdline,
            message: spec.message,
            once,
        }))
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

    const TTL: Duration = Duration::from_secs(60);

    fn not_ours(now: Instant) -> Entry {
        Entry::Known(ApiDecision::NotOurs, now)
    }

    fn boot_spec() -> ApiDecision {
        ApiDecision::Boot(ApiBoot {
            kernel: "http://198.18.0.1/vmlinuz".into(),
            ..ApiBoot::default()
        })
    }

    /// Distinct locally administered MACs from a per-run random stream (xorshift; the flood
    /// needs variety, not quality). Universally administered test MACs never collide with them.
    struct RandomMacs {
        state: u64,
        seen: std::collections::HashSet<[u8; 6]>,
    }

    impl RandomMacs {
        fn new() -> RandomMacs {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
            RandomMacs {
                state: seed | 1,
                seen: std::collections::HashSet::new(),
            }
        }
    }

    impl Iterator for RandomMacs {
        type Item = [u8; 6];
        fn next(&mut self) -> Option<[u8; 6]> {
            loop {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                let b = self.state.to_le_bytes();
                // Locally administered (U/L bit, 0x02, set), unicast (I/G bit, 0x01, clear).
                let mac = [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]];
                if self.seen.insert(mac) {
                    return Some(mac);
                }
            }
        }
    }

    const INVENTORY: [u8; 6] = [0x00, 0x1b, 0x21, 0x0a, 0x0b, 0x0c];

    #[test]
    fn recently_used_answers_survive_a_flood_of_new_macs() {
        let mut cache = Cache::new(8, TTL);
        let now = Instant::now();
        cache.store(INVENTORY, Entry::Known(boot_spec(), now), now);
        for (i, mac) in RandomMacs::new().take(10_000).enumerate() {
            assert!(cache.start(mac, now));
            cache.store(mac, not_ours(now), now);
            assert!(cache.entries.len() <= 8, "the cache grew past its bound");
            // The machine keeps asking (every few new MACs) and keeps its answer.
            if i % 5 == 0 {
                assert_eq!(
                    cache.lookup(INVENTORY, now),
                    Some(Lookup::Decided(boot_spec())),
                    "evicted after {i} new MACs"
                );
            }
        }
        assert!(
            cache.recency.len() <= 2 * 8,
            "the recency log is bounded: {}",
            cache.recency.len()
        );
    }

    #[test]
    fn the_least_recently_used_answer_is_the_one_evicted() {
        let mut cache = Cache::new(3, TTL);
        let now = Instant::now();
        let [a, b, c, d] = [
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            [2, 0, 0, 0, 0, 3],
            [2, 0, 0, 0, 0, 4],
        ];
        for mac in [a, b, c] {
            cache.store(mac, not_ours(now), now);
        }
        cache.lookup(a, now);
        cache.store(d, not_ours(now), now);
        assert!(
            cache.lookup(b, now).is_none(),
            "b was the least recently used"
        );
        for mac in [a, c, d] {
            assert!(cache.lookup(mac, now).is_some());
        }
    }

    #[test]
    fn expired_entries_are_evicted_before_live_ones() {
        let mut cache = Cache::new(4, TTL);
        let then = Instant::now();
        let now = then + TTL;
        let old = [2, 0, 0, 0, 0, 9];
        cache.store(old, not_ours(then), then);
        let live: Vec<[u8; 6]> = RandomMacs::new().take(3).collect();
        for &mac in &live {
            cache.store(mac, not_ours(now), now);
        }
        // Expired, yet the most recently used: the sweep still takes it first.
        cache.touch(old);
        cache.store([2, 0, 0, 0, 0, 10], not_ours(now), now);
        assert!(!cache.entries.contains_key(&old));
        for mac in live {
            assert!(
                cache.lookup(mac, now).is_some(),
                "a live answer was evicted"
            );
        }
    }

    #[test]
    fn pending_markers_survive_a_flood_and_a_cache_full_of_them_defers() {
        let mut cache = Cache::new(8, TTL);
        let now = Instant::now();
        let pending: Vec<[u8; 6]> = (1..=3).map(|i| [0, 0x1b, 0x21, 0, 0, i]).collect();
        for &mac in &pending {
            assert!(cache.start(mac, now));
        }
        for mac in RandomMacs::new().take(1000) {
            cache.store(mac, not_ours(now), now);
            assert!(cache.entries.len() <= 8);
        }
        // Even once expired: the lookup is in flight and will store its answer.
        let later = now + 10 * TTL;
        for mac in RandomMacs::new().take(1000) {
            cache.store(mac, not_ours(later), later);
        }
        for &mac in &pending {
            assert_eq!(cache.lookup(mac, later), Some(Lookup::Pending));
        }
        let mut full = Cache::new(2, TTL);
        assert!(full.start([2, 0, 0, 0, 0, 1], now));
        assert!(full.start([2, 0, 0, 0, 0, 2], now));
        assert!(
            !full.start([2, 0, 0, 0, 0, 3], now),
            "no marker was evictable"
        );
        full.store([2, 0, 0, 0, 0, 3], not_ours(now), now);
        assert_eq!(
            full.entries.len(),
            2,
            "an answer does not evict a marker either"
        );
        full.abandon([2, 0, 0, 0, 0, 1]);
        assert!(full.start([2, 0, 0, 0, 0, 3], now));
    }

    fn api_at(url: &str, timeout: Duration, max_entries: usize) -> Arc<BootApi> {
        Arc::new(BootApi::new(url, timeout, TTL, max_entries).unwrap())
    }

    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    #[tokio::test]
    async fn lookups_beyond_the_in_flight_bound_are_deferred_not_queued() {
        // Port 9 (discard) on loopback: nothing listens, a started lookup fails at once.
        let timeout = Duration::from_millis(200);
        let api = api_at("http://127.0.0.1:9", timeout, 1000);
        let held = api
            .in_flight
            .clone()
            .try_acquire_many_owned(MAX_IN_FLIGHT as u32)
            .unwrap();
        let tasks = alive_tasks();
        for mac in RandomMacs::new().take(1000) {
            assert_eq!(api.lookup_now(mac), Lookup::Deferred);
        }
        assert_eq!(alive_tasks(), tasks, "a deferred lookup spawned a task");
        assert_eq!(
            api.lock_cache().entries.len(),
            0,
            "a deferred lookup left a marker"
        );
        assert_eq!(api.lookups_deferred.load(Ordering::Relaxed), 1000);
        assert_eq!(api.lookups.load(Ordering::Relaxed), 0);

        // The HTTP side waits for a slot, but no longer than the timeout.
        let started = Instant::now();
        assert_eq!(api.lookup(INVENTORY).await, Err(ApiError::Timeout(timeout)));
        assert!(started.elapsed() < timeout + Duration::from_millis(500));
        assert_eq!(
            api.lookups.load(Ordering::Relaxed),
            0,
            "no request without a slot"
        );

        drop(held);
        let mac = [2, 0, 0, 0, 0, 1];
        assert_eq!(api.lookup_now(mac), Lookup::Pending);
        assert_eq!(
            api.lookup_now(mac),
            Lookup::Pending,
            "one lookup per machine"
        );
    }

    /// A boot API of the test's own on 127.0.0.1: [`INVENTORY`] is answered at once with a
    /// boot spec, every other MAC with 404 after `delay`, or never when `delay` is `None` (the
    /// connection is held until the client gives up). Its tasks end when it is dropped.
    /// A boot API of the test's own that answers after `delay` (or never), on a runtime and
    /// thread of its own: its handlers do not count among the tasks of the runtime under test.
    struct SlowApi {
        url: String,
        /// Requests received.
        seen: Arc<AtomicU64>,
        /// Requests received and not yet answered or abandoned.
        open: Arc<AtomicU64>,
        /// The most `open` ever was.
        most_open: Arc<AtomicU64>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for SlowApi {
        fn drop(&mut self) {
            // Ending the accept loop drops its JoinSet, which aborts the handlers.
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    impl SlowApi {
        async fn start(delay: Option<Duration>) -> SlowApi {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let seen = Arc::new(AtomicU64::new(0));
            let open = Arc::new(AtomicU64::new(0));
            let most_open = Arc::new(AtomicU64::new(0));
            let counters = (seen.clone(), open.clone(), most_open.clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let mut handlers = tokio::task::JoinSet::new();
                    let accept = async {
                        while let Ok((stream, _)) = listener.accept().await {
                            while handlers.try_join_next().is_some() {}
                            handlers.spawn(Self::answer(stream, delay, counters.clone()));
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
            });
            SlowApi {
                url,
                seen,
                open,
                most_open,
                stop: Some(stop),
                thread: Some(thread),
            }
        }

        async fn answer(
            mut stream: tokio::net::TcpStream,
            delay: Option<Duration>,
            (seen, open, most_open): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>),
        ) {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(n) if n > 0 && head.len() < 8192 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
            most_open.fetch_max(now_open, Ordering::SeqCst);
            let path = String::from_utf8_lossy(&head).into_owned();
            let inventory = format!("/v1/boot/{} ", MacDisplay(&INVENTORY));
            let response = if path.contains(&inventory) {
                let body = r#"{"kernel": "http://198.18.0.1/vmlinuz"}"#;
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                match delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    // Until the client closes (read returns 0) or errors.
                    None => while let Ok(1..) = stream.read(&mut buf).await {},
                }
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into()
            };
            // Before the answer leaves, so the client cannot start its next lookup first.
            open.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }

    /// Waits (bounded) for `done`.
    async fn eventually(what: &str, limit: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_random_mac_flood_is_bounded_and_known_machines_stay_answered() {
        const FLOOD: usize = 20_000;
        const MAX_ENTRIES: usize = 256;
        let server = SlowApi::start(Some(Duration::from_millis(20))).await;
        let api = api_at(&server.url, Duration::from_secs(5), MAX_ENTRIES);
        let baseline_tasks = alive_tasks();

        assert_eq!(api.lookup_now(INVENTORY), Lookup::Pending);
        eventually(
            "the inventory machine is answered",
            Duration::from_secs(5),
            || api.lookup_now(INVENTORY) == Lookup::Decided(boot_spec()),
        )
        .await;

        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut started, mut deferred, mut most_tasks) = (0u64, 0u64, 0usize);
        for (i, mac) in RandomMacs::new().take(FLOOD).enumerate() {
            match api.lookup_now(mac) {
                Lookup::Pending => started += 1,
                Lookup::Deferred => deferred += 1,
                other => panic!("a new MAC was {other:?}"),
            }
            if i % 20 == 0 {
                assert_eq!(
                    api.lookup_now(INVENTORY),
                    Lookup::Decided(boot_spec()),
                    "the inventory machine lost its answer after {i} MACs"
                );
                assert!(api.lock_cache().entries.len() <= MAX_ENTRIES);
                most_tasks = most_tasks.max(alive_tasks());
                // Let lookups finish, so the flood meets a cache that is full and churning.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if Instant::now() > deadline {
                break;
            }
        }
        eventually(
            "the lookups in flight finish",
            Duration::from_secs(10),
            || api.in_flight.available_permits() == MAX_IN_FLIGHT,
        )
        .await;

        assert_eq!(api.lookup_now(INVENTORY), Lookup::Decided(boot_spec()));
        assert!(api.lock_cache().entries.len() <= MAX_ENTRIES);
        let most_open = server.most_open.load(Ordering::SeqCst);
        assert!(
            most_open <= MAX_IN_FLIGHT as u64,
            "{most_open} requests reached the API at once"
        );
        // Every lookup started reached the server, none was left queued, the rest deferred.
        assert_eq!(server.seen.load(Ordering::SeqCst), started + 1);
        assert_eq!(api.lookups.load(Ordering::Relaxed), started + 1);
        assert_eq!(api.lookups_deferred.load(Ordering::Relaxed), deferred);
        assert!(
            deferred > 0,
            "the flood never filled the slots: nothing was tested"
        );
        assert!(
            started > MAX_ENTRIES as u64,
            "the flood never overflowed the cache: {started} lookups"
        );
        // Our lookups and their HTTP connections' drivers (an aborted driver lingers until
        // the runtime next polls it, so a few more than two per slot): bounded by the slots,
        // never a task per MAC of the 20,000. (The server runs on a runtime of its own.)
        assert!(
            most_tasks <= baseline_tasks + 4 * MAX_IN_FLIGHT,
            "{most_tasks} tasks alive during the flood"
        );
        let markers = api
            .lock_cache()
            .entries
            .values()
            .filter(|slot| matches!(slot.entry, Entry::Pending))
            .count();
        assert_eq!(markers, 0, "a finished lookup left its marker");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn behind_a_hung_api_lookups_time_out_and_leave_nothing_behind() {
        let server = SlowApi::start(None).await;
        // Long enough that a loaded machine sends 64 requests well within half of it; the
        // wait below must end near one timeout, where waiting for a slot first would take two.
        let timeout = Duration::from_secs(2);
        let api = api_at(&server.url, timeout, 1000);
        let baseline_tasks = alive_tasks();

        let hung: Vec<[u8; 6]> = RandomMacs::new().take(MAX_IN_FLIGHT).collect();
        for &mac in &hung {
            assert_eq!(api.lookup_now(mac), Lookup::Pending);
        }
        eventually("every slot's request reaches the API", timeout / 2, || {
            server.open.load(Ordering::SeqCst) == MAX_IN_FLIGHT as u64
        })
        .await;
        assert_eq!(api.lookup_now([2, 0, 0, 0, 0, 1]), Lookup::Deferred);

        // Waits for a slot the hung lookups hold, and gives up in time.
        let started = Instant::now();
        let waited = api.lookup([2, 0, 0, 0, 0, 2]).await;
        assert_eq!(waited, Err(ApiError::Timeout(timeout)));
        assert!(
            started.elapsed() < timeout + timeout / 2,
            "took {:?}",
            started.elapsed()
        );

        eventually("the hung lookups time out", 2 * timeout, || {
            api.in_flight.available_permits() == MAX_IN_FLIGHT
        })
        .await;
        for &mac in &hung {
            assert_eq!(
                api.lookup_now(mac),
                Lookup::Failed(ApiError::Timeout(timeout))
            );
        }
        // Neither a lookup nor a connection task per hung request outlives its timeout.
        eventually("the server sees every connection closed", timeout, || {
            server.open.load(Ordering::SeqCst) == 0
        })
        .await;
        eventually("no task is left behind", timeout, || {
            alive_tasks() <= baseline_tasks
        })
        .await;
    }

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
        let ApiDecision::Boot(spec) = api
            .parse_spec(br#"{"kernel": "k/vmlinuz", "initrd": ["http://x/i.img"], "cmdline": "a=b", "message": "hi"}"#)
            .unwrap()
        else {
            panic!("a kernel answer is a boot spec");
        };
        assert_eq!(spec.kernel, "http://10.0.0.1:8080/api/k/vmlinuz");
        assert_eq!(spec.once, None);
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

    fn api() -> BootApi {
        BootApi::new(
            "http://10.0.0.1:8080/api",
            Duration::from_secs(1),
            Duration::from_secs(1),
            8,
        )
        .unwrap()
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x18, 0x01, 0x01];

    #[test]
    fn a_script_answer_is_served_whole_or_chained_from_its_url() {
        let api = api();
        let ApiDecision::Script(inline) = api
            .parse_spec(br##"{"ipxe_script": "#!ipxe\nchain http://ironic/boot.ipxe\n"}"##)
            .unwrap()
        else {
            panic!("an ipxe_script answer is a script");
        };
        assert_eq!(
            inline.render(&MAC),
            "#!ipxe\nchain http://ironic/boot.ipxe\n"
        );

        let ApiDecision::Script(url) = api
            .parse_spec(
                br#"{"ipxe_script_url": "ironic/boot.ipxe?mac=${mac}", "message": "to Ironic\n"}"#,
            )
            .unwrap()
        else {
            panic!("an ipxe_script_url answer is a script");
        };
        assert_eq!(
            url.source,
            ScriptSource::Url("http://10.0.0.1:8080/api/ironic/boot.ipxe?mac=${mac}".into())
        );
        let script = url.render(&MAC);
        assert!(script.starts_with("#!ipxe\necho to Ironic \n"), "{script}");
        assert!(
            script.contains(
                "chain --autofree http://10.0.0.1:8080/api/ironic/boot.ipxe?mac=${mac} || goto failed\n"
            ),
            "{script}"
        );
    }

    #[test]
    fn script_answers_that_ipxe_could_not_run_are_refused() {
        let api = api();
        for (body, why) in [
            (&br##"{"ipxe_script": "echo no magic"}"##[..], "#!ipxe"),
            (br#"{"ipxe_script_url": "http://x/a b.ipxe"}"#, "spaces"),
            (
                br#"{"ipxe_script_url": "http://x/a\nkernel http://evil"}"#,
                "control",
            ),
            (br#"{"ipxe_script_url": "tftp://x/a.ipxe"}"#, "http(s)"),
            (br##"{"kernel": "k", "ipxe_script": "#!ipxe"}"##, "exclude"),
            (
                br##"{"ipxe_script": "#!ipxe", "ipxe_script_url": "a"}"##,
                "exclude",
            ),
            (br#"{"once": true}"#, "needs one of"),
        ] {
            let error = api.parse_spec(body).unwrap_err().to_string();
            assert!(
                error.contains(why),
                "{}: {error}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_boot_once_answer_boots_once_and_a_changed_answer_boots_once_more() {
        let api = api();
        let first = api
            .parse_spec(br#"{"kernel": "http://x/vmlinuz", "once": true, "id": 1}"#)
            .unwrap();
        let once = first.once().expect("a boot-once answer has a token");
        // The same answer again (the API keeps giving it) is the same one.
        let again = api
            .parse_spec(br#"{"kernel": "http://x/vmlinuz", "once": true, "id": 1}"#)
            .unwrap();
        assert_eq!(again.once(), Some(once));

        assert_eq!(
            api.unless_spent(MAC, first.clone()),
            first,
            "not served yet"
        );
        api.spend(MAC, once);
        assert_eq!(api.unless_spent(MAC, again), ApiDecision::NotOurs, "spent");
        let other_mac = [0x52, 0x54, 0x00, 0x18, 0x01, 0x02];
        assert_eq!(
            api.unless_spent(other_mac, first.clone()),
            first,
            "per machine"
        );

        let changed = api
            .parse_spec(br#"{"kernel": "http://x/vmlinuz", "once": true, "id": 2}"#)
            .unwrap();
        assert_ne!(changed.once(), Some(once));
        assert_eq!(
            api.unless_spent(MAC, changed.clone()),
            changed,
            "a new answer"
        );

        let every_time = api
            .parse_spec(br#"{"kernel": "http://x/vmlinuz"}"#)
            .unwrap();
        assert_eq!(every_time.once(), None);
        assert_eq!(api.unless_spent(MAC, every_time.clone()), every_time);
    }

    #[test]
    fn spent_answers_are_bounded_and_the_oldest_forgotten_first() {
        let mut spent = SpentOnce::default();
        let token = OnceToken(7);
        let mac = |i: usize| {
            let b = (i as u32).to_be_bytes();
            [2, 0, b[0], b[1], b[2], b[3]]
        };
        for i in 0..=MAX_SPENT_ONCE {
            assert!(spent.insert(mac(i), token));
        }
        assert!(!spent.insert(mac(MAX_SPENT_ONCE), token), "already there");
        assert_eq!(spent.by_mac.len(), MAX_SPENT_ONCE);
        assert_eq!(spent.order.len(), MAX_SPENT_ONCE);
        assert_eq!(spent.get(&mac(0)), None, "the oldest went first");
        assert_eq!(spent.get(&mac(1)), Some(token));
    }

    /// Every answer docs/boot-api.md shows as an example is one xdpboot accepts.
    #[test]
    fn the_documented_examples_are_accepted() {
        const DOC: &str = include_str!("../../docs/boot-api.md");
        let api = api();
        let examples: Vec<&str> = DOC
            .split("```json\n")
            .skip(1)
            .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
            .filter(|block| !block.contains("\"$schema\""))
            .collect();
        assert!(examples.len() >= 4, "examples found: {examples:?}");
        for example in examples {
            if let Err(e) = api.parse_spec(example.as_bytes()) {
                panic!("{example}: {e}");
            }
        }
    }

    #[test]
    fn local_true_without_a_kernel_sends_the_machine_to_its_disk() {
        let api = api();
        assert_eq!(
            api.parse_spec(br#"{"local": true, "message": "deployed"}"#),
            Ok(ApiDecision::Local)
        );
        for (body, why) in [
            (&br#"{"local": true, "kernel": "k"}"#[..], "takes no kernel"),
            (
                br##"{"local": true, "ipxe_script": "#!ipxe"}"##,
                "takes no kernel",
            ),
            (br#"{"local": true, "once": true}"#, "boot-once"),
            (br#"{"local": false}"#, "needs one of"),
        ] {
            let error = api.parse_spec(body).unwrap_err().to_string();
            assert!(
                error.contains(why),
                "{}: {error}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
