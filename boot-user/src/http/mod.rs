//! The HTTP(S) server of the second boot stage: iPXE scripts, kernels, initrds and images.
//!
//! One server, a plain and a TLS listener (hyper HTTP/1.1 on tokio, rustls). Each request is
//! routed by [`Route`]: `/boot.ipxe` and `/nodes/<mac>/overlay.cpio` are the hooks for the
//! script renderer and the overlay builder; every other path is a file under the static root
//! ([`files`]). Plain connections send file bodies with `sendfile(2)` from one shared map of
//! each file (`stream.rs`), TLS connections in bounded `pread` chunks (`body.rs`), so memory
//! stays flat in the number of clients.
//!
//! Limits, each a constant here or a key of `[http]`: request head size and header count,
//! the time to send a request head (slowloris) or finish a TLS handshake, the time a response
//! may stall, the number of connections, and an optional per-connection pacing rate.
//!
//! The daemon runs [`serve_observed`]; tests and benchmarks bind their own listeners and run
//! [`Server::serve`].
//!
//! Stopping is nginx's graceful quit: when the shutdown signal comes, the listeners close at
//! once (a new connection is refused), each connection finishes the response it is sending and
//! then closes instead of waiting for another request (hyper's `graceful_shutdown`), and
//! [`Server::serve_until`] hands back the connections still open for the daemon to wait on,
//! within its bound.

mod body;
mod ffdhe;
pub mod files;
pub mod overlay;
pub mod scripts;
pub mod signed;
mod stream;
pub mod thirdstage;
pub mod tls;

use std::convert::Infallible;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use body::{Body, MAPPED_CHUNK, READ_CHUNK};
pub use files::Delivery;
pub use files::MapRegistry;

use crate::config;
use crate::events::Sink;
use crate::reload::{Decisions, Swap};
use body::AccessLog;
use files::StaticRoot;
use scripts::BootContent;
use stream::Stream;

/// Bytes of a request head (request line and header fields) before it is refused with 431.
/// Boot firmware sends a few hundred; hyper's minimum buffer is 8 KiB.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Header fields of a request before it is refused with 431.
pub const MAX_HEADERS: usize = 64;
/// Pending connections the kernel queues per listener (it caps this at net.core.somaxconn).
pub const LISTEN_BACKLOG: i32 = 1024;
/// File descriptors beyond `max_connections` for open files, listeners and the rest of the
/// daemon, when raising the descriptor limit.
const FD_HEADROOM: u64 = 1024;
/// Pause after a failed accept (out of descriptors, say) before the next, so a persistent
/// failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// What a plain-HTTP client gets when `max_connections` are in use.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n";

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("binding HTTP port {port}: {source}")]
    Bind { port: u16, source: io::Error },
    #[error("an HTTPS listener needs a TLS configuration")]
    NoTlsConfig,
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    BootContent(#[from] scripts::BootContentError),
    #[error("{0}")]
    Config(String),
}

/// Where a request goes. Scripts, boot files and overlays are served by `scripts.rs` when the
/// server has boot content ([`Server::with_boot`]), and are 404 otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/boot.ipxe?mac=…&arch=…`: the per-node iPXE script.
    BootScript,
    /// `/nodes/<mac>/overlay.cpio`: the node's generated cpio overlay (identity, tokens).
    NodeOverlay { mac: &'a str },
    /// `/boot/kernel`, `/boot/initrd/<n>`: the files `[boot]` names.
    BootFile(&'a str),
    /// A name a loader after the firmware asks for, made per node unless the static root has
    /// it ([`thirdstage::ThirdStageName`]): `/grub/grub.cfg-01-<mac>`,
    /// `/pxelinux.cfg/01-<mac>`, `/local.ipxe`, … (the path still percent-encoded).
    ThirdStage(&'a str),
    /// Anything else: a file under the static root (the path still percent-encoded).
    File(&'a str),
}

impl<'a> Route<'a> {
    pub fn of(path: &'a str) -> Route<'a> {
        if path == "/boot.ipxe" {
            return Route::BootScript;
        }
        if let Some(rest) = path.strip_prefix("/boot/") {
            return Route::BootFile(rest);
        }
        if let Some(mac) = path
            .strip_prefix("/nodes/")
            .and_then(|rest| rest.strip_suffix("/overlay.cpio"))
            && !mac.is_empty()
            && !mac.contains('/')
        {
            return Route::NodeOverlay { mac };
        }
        if third_stage_name(path).is_some() {
            return Route::ThirdStage(path);
        }
        Route::File(path)
    }
}

/// The path inside the roots a request path names, when it is a name a loader after the
/// firmware asks for.
fn third_stage_name(path: &str) -> Option<String> {
    let relative = files::decode_request_path(path).ok()?;
    let relative = relative.to_str()?;
    thirdstage::ThirdStageName::parse(relative).map(|_| relative.to_owned())
}

/// The listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Counters since start, for the daemon's exit summary and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    /// Connections refused because `max_connections` were in use.
    pub refused: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: AtomicU64,
    pub requests: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("http_connections", self.connections.load(Ordering::Relaxed)),
            ("http_refused", self.refused.load(Ordering::Relaxed)),
            (
                "http_tls_failures",
                self.tls_failures.load(Ordering::Relaxed),
            ),
            ("http_requests", self.requests.load(Ordering::Relaxed)),
        ]
    }
}

/// The listeners a server accepts on; either may be absent.
#[derive(Debug, Default)]
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
}

impl Listeners {
    /// Binds `[http] port` and `https_port` (0 leaves a listener out) on every address, IPv6
    /// and IPv4 alike, or IPv4 only where the host has no IPv6. Needs a tokio runtime.
    pub fn bind(config: &config::Http) -> Result<Listeners, HttpError> {
        let bind = |port: u16| -> Result<Option<TcpListener>, HttpError> {
            if port == 0 {
                return Ok(None);
            }
            bind_any(port)
                .map(Some)
                .map_err(|source| HttpError::Bind { port, source })
        };
        Ok(Listeners {
            http: bind(config.port)?,
            https: bind(config.https_port)?,
        })
    }
}

fn bind_any(port: u16) -> io::Result<TcpListener> {
    let dual = (|| {
        let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_only_v6(false)?;
        Ok::<_, io::Error>(socket)
    })();
    let (socket, addr) = match dual {
        Ok(socket) => (socket, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))),
        // A host booted with ipv6.disable=1.
        Err(_) => (
            Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?,
            SocketAddr::from(([0, 0, 0, 0], port)),
        ),
    };
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Runs the HTTP(S) server `[http]` describes until the future is dropped: loads or generates
/// the TLS certificate, raises the descriptor limit to fit `max_connections`, binds the ports
/// and serves. Returns only on a start-up error.
pub async fn serve(config: Arc<config::Config>) -> Result<(), HttpError> {
    let decisions =
        Decisions::from_config(&config).map_err(|e| HttpError::Config(e.to_string()))?;
    let boot = BootContent::new((*config).clone(), Arc::new(Swap::new(decisions)))?;
    // Held for as long as the future lives, so the stop never comes.
    let (_never, shutdown) = watch::channel(false);
    serve_observed(config, Arc::new(boot), None, shutdown)
        .await
        .map(drop)
}

/// [`serve`], reporting every request to `observer` too, until `shutdown` turns true; then
/// as [`Server::serve_until`].
pub async fn serve_observed(
    config: Arc<config::Config>,
    boot: Arc<BootContent>,
    observer: Sink,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinSet<()>, HttpError> {
    let http = &config.http;
    let tls = if http.https_port == 0 {
        None
    } else {
        Some(tls::load_or_generate(http)?)
    };
    raise_descriptor_limit(u64::from(http.max_connections) + FD_HEADROOM);
    let listeners = Listeners::bind(http)?;
    Server::new(http, tls)
        .with_loaders(config.loaders.clone())
        .with_boot(boot)
        .with_observer(observer)
        .serve_until(listeners, shutdown)
        .await
}

/// Raises the soft RLIMIT_NOFILE towards `wanted` (within the hard limit): each connection
/// holds a descriptor, and the usual soft limit of 1024 is below a boot storm.
fn raise_descriptor_limit(wanted: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let target = wanted.min(hard);
    if target > soft && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_err() {
        tracing::warn!(soft, wanted, "could not raise the open-file limit");
    }
    if hard < wanted {
        tracing::warn!(
            hard,
            wanted,
            "the open-file limit is below http.max_connections plus headroom: connections past it fail"
        );
    }
}

/// The server: routing, the static root, TLS and limits, shared by all connections.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    files: StaticRoot,
    /// Scripts, boot files and overlays; `None` serves static files only.
    boot: Option<Arc<BootContent>>,
    maps: Arc<MapRegistry>,
    tls: Option<TlsAcceptor>,
    connections: Arc<Semaphore>,
    http1: http1::Builder,
    header_timeout: Duration,
    send_timeout: Duration,
    /// SO_MAX_PACING_RATE in bytes per second; 0 leaves sockets unpaced.
    pacing: u64,
    stats: Stats,
    /// Told of every request when its response ends; `None` when the admin side is off.
    observer: Sink,
}

impl Server {
    pub fn new(config: &config::Http, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let maps = Arc::new(MapRegistry::default());
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // Also bounds the idle time between requests on a kept-alive connection.
            .header_read_timeout(config.header_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS)
            // GRUB's http module matches "Content-Length: " byte for byte
            // (grub-core/net/http.c, parse_line): with hyper's lower-case names it never
            // learns a file's size, and its Secure Boot verifier then refuses the kernel
            // ("big file signature isn't implemented yet"). Names are case-insensitive
            // (RFC 9110 §5.1) for every other client.
            .title_case_headers(true)
            .writev(true);
        Server {
            shared: Arc::new(Shared {
                files: StaticRoot::new(&config.root, maps.clone()),
                boot: None,
                maps,
                tls: tls.map(TlsAcceptor::from),
                connections: Arc::new(Semaphore::new(config.max_connections as usize)),
                http1,
                header_timeout: config.header_timeout,
                send_timeout: config.send_timeout,
                pacing: u64::from(config.pacing_mbit) * 1_000_000 / 8,
                stats: Stats::default(),
                observer: None,
            }),
        }
    }

    /// Serves scripts, boot files and overlays from `boot` too. Call before `serve`.
    pub fn with_boot(mut self, boot: Arc<BootContent>) -> Server {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.boot = Some(boot);
        }
        self
    }

    /// Serves known loaders missing from the root from `loaders`. Call before `serve`.
    pub fn with_loaders(mut self, loaders: crate::loaders::LoaderSearch) -> Server {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.files.set_loaders(loaders);
        }
        self
    }

    /// Reports every request to `observer` too. Call before `serve`.
    pub fn with_observer(mut self, observer: Sink) -> Server {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.observer = observer;
        }
        self
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Body bytes plain connections sent with `sendfile` (zero-copy) since start.
    pub fn sendfile_bytes(&self) -> u64 {
        self.shared.maps.sendfile_bytes()
    }

    /// Accepts on the listeners until the future is dropped, which ends every connection too.
    pub async fn serve(self, listeners: Listeners) -> Result<(), HttpError> {
        // Held for as long as the future lives, so the stop never comes.
        let (_never, shutdown) = watch::channel(false);
        self.serve_until(listeners, shutdown).await.map(drop)
    }

    /// Accepts on the listeners until `shutdown` turns true (or its sender is dropped), then
    /// closes them and returns at once with the connections still open. Each of those finishes
    /// the response it is sending and closes; dropping the set cuts them. Dropping the future
    /// ends every connection.
    pub async fn serve_until(
        self,
        listeners: Listeners,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<JoinSet<()>, HttpError> {
        if listeners.https.is_some() && self.shared.tls.is_none() {
            return Err(HttpError::NoTlsConfig);
        }
        for (listener, scheme) in [
            (&listeners.http, Scheme::Http),
            (&listeners.https, Scheme::Https),
        ] {
            let Some(listener) = listener else { continue };
            tracing::info!(
                addr = ?listener.local_addr().ok(),
                scheme = scheme.as_str(),
                root = %self.shared.files.root().display(),
                "serving HTTP"
            );
        }
        // At most `max_connections` (the semaphore), each reaped here when it ends.
        let mut connections = JoinSet::new();
        loop {
            let (accepted, scheme) = tokio::select! {
                // A stop is seen before another connection is taken.
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                accepted = accept(listeners.http.as_ref()) => (accepted, Scheme::Http),
                accepted = accept(listeners.https.as_ref()) => (accepted, Scheme::Https),
                Some(done) = connections.join_next() => {
                    if let Err(e) = done && e.is_panic() {
                        tracing::error!(error = %e, "an HTTP connection task panicked");
                    }
                    continue;
                }
            };
            let (tcp, client) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(scheme = scheme.as_str(), error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            // An IPv4 client of the dual-stack socket is logged as 192.0.2.1, not ::ffff:….
            let client = SocketAddr::new(client.ip().to_canonical(), client.port());
            let stats = &self.shared.stats;
            let Ok(permit) = self.shared.connections.clone().try_acquire_owned() else {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%client, "refused: http.max_connections in use");
                if scheme == Scheme::Http {
                    // Best effort, never waiting: the socket buffer of a new connection has room.
                    let _ = tcp.try_write(BUSY_RESPONSE);
                }
                continue;
            };
            stats.connections.fetch_add(1, Ordering::Relaxed);
            connections.spawn(self.clone().connection(
                tcp,
                client,
                scheme,
                permit,
                shutdown.clone(),
            ));
        }
        // Closed now, not when the connections are done: a new connection is refused at once
        // (nginx's graceful quit closes its listening sockets first too).
        drop(listeners);
        Ok(connections)
    }

    async fn connection(
        self,
        tcp: TcpStream,
        client: SocketAddr,
        scheme: Scheme,
        _permit: OwnedSemaphorePermit,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let shared = &self.shared;
        // The address the client reached: scripts point it back there.
        let local = match tcp.local_addr() {
            Ok(addr) => SocketAddr::new(addr.ip().to_canonical(), addr.port()),
            Err(_) => return,
        };
        // Response heads are small and go out on their own write; don't let Nagle hold them.
        let _ = tcp.set_nodelay(true);
        if shared.pacing > 0
            && let Err(e) = stream::set_pacing_rate(&tcp, shared.pacing)
        {
            tracing::debug!(%client, error = %e, "cannot pace this connection");
        }
        let stream = match (scheme, &shared.tls) {
            (Scheme::Http, _) => Stream::plain(tcp, shared.maps.clone(), shared.send_timeout),
            (Scheme::Https, Some(acceptor)) => {
                match tokio::time::timeout(shared.header_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => Stream::tls(tls, shared.maps.clone(), shared.send_timeout),
                    Ok(Err(e)) => {
                        shared.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%client, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        shared.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%client, "TLS handshake timed out");
                        return;
                    }
                }
            }
            (Scheme::Https, None) => return,
        };
        let server = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.respond(request, client, local, scheme).await) }
        });
        let connection = shared.http1.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            // (The value seen is dropped in here: a lock guard must not live across an await.)
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                // The response in progress (or, on a connection that has not sent one yet, the
                // first request) is still served; keep-alive ends after it.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%client, error = %e, "connection ended with an error");
        }
    }

    async fn respond(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
        local: SocketAddr,
        scheme: Scheme,
    ) -> Response<Body> {
        self.shared.stats.requests.fetch_add(1, Ordering::Relaxed);
        let log = AccessLog::new(
            client,
            scheme.as_str(),
            request.method().clone(),
            request.uri().path_and_query().map_or("", |p| p.as_str()),
            Instant::now(),
        )
        .observed_by(self.shared.observer.clone());
        let response = match (Route::of(request.uri().path()), &self.shared.boot) {
            // The script may wait on the boot API; everything else is answered at once.
            (Route::BootScript, Some(boot))
                if request.method() == Method::GET || request.method() == Method::HEAD =>
            {
                boot.script(request.uri().query(), client, local, scheme)
                    .await
            }
            (Route::ThirdStage(path), Some(boot))
                if request.method() == Method::GET || request.method() == Method::HEAD =>
            {
                self.third_stage(boot, &request, path, client, local, scheme)
                    .await
            }
            _ => self.route(&request, client, local, scheme),
        };
        let (parts, body) = response.into_parts();
        let mut body = body.with_access_log(log);
        body.log_response(parts.status);
        Response::from_parts(parts, body)
    }

    /// A per-node file a loader asks for by name: the static root's file of that name if there
    /// is one, else the one made for this node (which may wait for the boot API).
    async fn third_stage<B>(
        &self,
        boot: &BootContent,
        request: &Request<B>,
        path: &str,
        client: SocketAddr,
        local: SocketAddr,
        scheme: Scheme,
    ) -> Response<Body> {
        let delivery = match scheme {
            Scheme::Http => Delivery::Mapped,
            Scheme::Https => Delivery::Read,
        };
        if let Ok(response) =
            self.shared
                .files
                .respond(request.method(), path, request.headers(), delivery)
        {
            return response;
        }
        let Some(relative) = third_stage_name(path) else {
            return not_found();
        };
        match boot.third_stage(&relative, client, local).await {
            Some(Ok(text)) => {
                let len = text.len();
                let body = if request.method() == Method::HEAD {
                    Body::empty()
                } else {
                    Body::full(text)
                };
                let mut response = Response::new(body);
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                // Per node, and carrying fresh signatures: never from a cache.
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            Some(Err(refusal)) => refusal.response(),
            None => not_found(),
        }
    }

    /// Dispatches a request by its [`Route`].
    pub fn route<B>(
        &self,
        request: &Request<B>,
        client: SocketAddr,
        local: SocketAddr,
        scheme: Scheme,
    ) -> Response<Body> {
        let method = request.method();
        // A boot server only hands things out (RFC 9110 §15.5.6: 405 names the allowed ones).
        if method != Method::GET && method != Method::HEAD {
            let mut response =
                short_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let delivery = match scheme {
            Scheme::Http => Delivery::Mapped,
            Scheme::Https => Delivery::Read,
        };
        let uri = request.uri();
        match (Route::of(uri.path()), &self.shared.boot) {
            // Served by `respond`, which can wait for the boot API.
            (Route::BootScript, Some(_)) => not_found(),
            (Route::NodeOverlay { mac }, Some(boot)) => boot.overlay(
                method,
                uri.path(),
                mac,
                uri.query(),
                request.headers(),
                client,
                local,
            ),
            (Route::BootFile(rest), Some(boot)) => boot.boot_file(
                &self.shared.files,
                method,
                rest,
                request.headers(),
                delivery,
            ),
            (Route::BootScript | Route::NodeOverlay { .. } | Route::BootFile(_), None) => {
                not_found()
            }
            // Served by `respond`, which can wait for the boot API.
            (Route::ThirdStage(_), Some(_)) => not_found(),
            (Route::File(path) | Route::ThirdStage(path), _) => {
                match self
                    .shared
                    .files
                    .respond(method, path, request.headers(), delivery)
                {
                    Ok(response) => response,
                    Err(refusal) => {
                        tracing::debug!(path, reason = %refusal, "not served");
                        not_found()
                    }
                }
            }
        }
    }
}

/// The next connection on `listener`; never, when there is none.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// A 404 with a short body: the same for every refusal, so it tells a prober nothing.
pub fn not_found() -> Response<Body> {
    short_response(StatusCode::NOT_FOUND, "not found\n")
}

/// A response with a short text body.
fn short_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_can_spawn_serve_as_a_task() {
        fn spawnable<F: std::future::Future + Send + 'static>(_: &F) {}
        // Never polled: this only proves the future fits tokio::spawn / JoinSet::spawn.
        let future = serve(Arc::new(crate::config::Config::embedded().unwrap()));
        spawnable(&future);
    }

    #[test]
    fn routes_leave_hooks_for_scripts_and_overlays() {
        assert_eq!(Route::of("/boot.ipxe"), Route::BootScript);
        assert_eq!(
            Route::of("/nodes/52:54:00:12:34:56/overlay.cpio"),
            Route::NodeOverlay {
                mac: "52:54:00:12:34:56"
            }
        );
        assert_eq!(
            Route::of("/nodes//overlay.cpio"),
            Route::File("/nodes//overlay.cpio")
        );
        assert_eq!(
            Route::of("/nodes/a/b/overlay.cpio"),
            Route::File("/nodes/a/b/overlay.cpio")
        );
        assert_eq!(Route::of("/vmlinuz"), Route::File("/vmlinuz"));
        assert_eq!(
            Route::of("/grub/x86_64-efi/grub.cfg"),
            Route::ThirdStage("/grub/x86_64-efi/grub.cfg")
        );
        assert_eq!(
            Route::of("//pxelinux.cfg/01-52-54-00-12-34-56"),
            Route::ThirdStage("//pxelinux.cfg/01-52-54-00-12-34-56")
        );
        assert_eq!(
            Route::of("/grub/unicode.pf2"),
            Route::File("/grub/unicode.pf2")
        );
    }
}
