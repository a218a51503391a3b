//! The admin listener (`[admin] listen`, loopback by default): what an operator watches.
//!
//! - `GET /metrics`: every metric in the OpenMetrics text format ([`crate::metrics`]).
//! - `GET /status`: a live page (`admin/status.html`, plain HTML and JavaScript embedded in the
//!   binary): the storm view (counts as chips that filter the table, charts of the last minutes)
//!   and the node table a page at a time. It follows `/status/events` and falls back to
//!   polling `/api/summary` where server-sent events do not get through.
//! - `GET /status/uplot.js`, `/status/uplot.css`: the charting library the page uses, vendored
//!   (`admin/vendor/uplot/README.md`) and embedded, so the page needs no other server.
//! - `GET /api/summary`: the table's aggregates ([`crate::nodes::summary::SummaryView`]), kept
//!   as events arrive.
//! - `GET /api/nodes[?stage=…&state=…&arch=…&firmware=…&interface=…&rule=…&reason=…&q=…
//!   &sort=…&offset=N&limit=N]`: one page of the node table, filtered and sorted by the server
//!   ([`crate::nodes::TableQuery`], [`crate::nodes::NodesView`]).
//! - `GET /status/events`: the summary as server-sent events, one event whenever the table
//!   changed (checked every [`EVENT_POLL`]), a comment every [`KEEPALIVE`] otherwise. An event
//!   is a few KiB however many nodes there are; the page fetches the rows it shows itself.
//!
//! hyper HTTP/1.1 as in [`crate::http`], with its own small limits: the admin side must never
//! take resources from booting clients.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::metrics;
use crate::nodes::{QueryError, TableQuery};
use crate::observe::Observer;

/// Connections at once (page views, event streams, scrapers); more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an event stream checks the node table for changes: at most this many redraws a
/// second, however fast nodes boot.
pub const EVENT_POLL: Duration = Duration::from_millis(250);
/// An idle event stream sends a comment this often, so proxies and the browser keep it open.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Parameters of one `/api/nodes` request at most: a longer query is refused.
const MAX_QUERY_PARAMETERS: usize = 16;
/// Pause after a failed accept (out of descriptors, say), so a persistent failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The status page: HTML, CSS and JavaScript.
pub const STATUS_PAGE: &str = include_str!("admin/status.html");
/// uPlot's minified script and its style sheet (version and checksums in
/// `admin/vendor/uplot/README.md`).
pub const UPLOT_JS: &str = include_str!("admin/vendor/uplot/uPlot.iife.min.js");
pub const UPLOT_CSS: &str = include_str!("admin/vendor/uplot/uPlot.min.css");
/// How long a browser may keep the vendored library: it changes only with the binary.
const ASSET_CACHE: &str = "public, max-age=3600";

/// The admin listener, bound.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    observer: Arc<Observer>,
    connections: Arc<Semaphore>,
}

impl AdminServer {
    /// Binds `addr`. Needs a tokio runtime.
    pub async fn bind(addr: SocketAddr, observer: Arc<Observer>) -> io::Result<AdminServer> {
        Ok(AdminServer {
            listener: TcpListener::bind(addr).await?,
            observer,
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the future is dropped.
    pub async fn serve(self) {
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!(%addr, "admin listener: /metrics, /status, /api/summary, /api/nodes");
        }
        loop {
            let (tcp, client) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                tracing::debug!(%client, "admin connection refused: {MAX_CONNECTIONS} in use");
                continue;
            };
            let observer = self.observer.clone();
            tokio::spawn(async move {
                connection(tcp, observer).await;
                drop(permit);
            });
        }
    }
}

async fn connection(tcp: TcpStream, observer: Arc<Observer>) {
    let _ = tcp.set_nodelay(true);
    let service = hyper::service::service_fn(move |request| {
        let observer = observer.clone();
        async move { Ok::<_, Infallible>(respond(&request, &observer)) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

/// Answers one admin request.
pub fn respond<B>(request: &Request<B>, observer: &Arc<Observer>) -> Response<AdminBody> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let response = match request.uri().path() {
        "/" => {
            let mut response = text(StatusCode::FOUND, "see /status\n");
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/status"));
            response
        }
        "/metrics" => full(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            observer.metrics.encode(),
        ),
        "/status" => full(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE),
        "/status/uplot.js" => asset("text/javascript; charset=utf-8", UPLOT_JS),
        "/status/uplot.css" => asset("text/css; charset=utf-8", UPLOT_CSS),
        "/api/summary" => full(StatusCode::OK, "application/json", summary_json(observer)),
        "/api/nodes" => match table_query(request.uri().query().unwrap_or_default()) {
            Ok(query) => full(
                StatusCode::OK,
                "application/json",
                // Serializing plain strings and numbers cannot fail.
                serde_json::to_vec(&observer.nodes(&query)).unwrap_or_default(),
            ),
            Err(e) => full(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            ),
        },
        "/status/events" => {
            let mut response = Response::new(AdminBody::events(observer.clone()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if request.method() == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, AdminBody::Full(None));
    }
    response
}

fn summary_json(observer: &Observer) -> Vec<u8> {
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_vec(&observer.summary()).unwrap_or_default()
}

/// An `/api/nodes` query string (`application/x-www-form-urlencoded`, as a browser's
/// `URLSearchParams` writes it).
fn table_query(query: &str) -> Result<TableQuery, QueryError> {
    let mut table = TableQuery::default();
    let pairs = query.split('&').filter(|pair| !pair.is_empty());
    for (n, pair) in pairs.enumerate() {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text: &str| {
            let text = text.replace('+', " ");
            percent_encoding::percent_decode_str(&text)
                .decode_utf8()
                .map(|t| t.into_owned())
                .map_err(|_| QueryError::BadValue {
                    key: "query",
                    value: pair.to_owned(),
                    expected: "UTF-8 text",
                })
        };
        if n >= MAX_QUERY_PARAMETERS {
            return Err(QueryError::TooManyParameters(MAX_QUERY_PARAMETERS));
        }
        table.set(&decode(key)?, &decode(value)?)?;
    }
    Ok(table)
}

fn text(status: StatusCode, body: &'static str) -> Response<AdminBody> {
    full(status, "text/plain; charset=utf-8", body)
}

fn asset(content_type: &'static str, body: &'static str) -> Response<AdminBody> {
    let mut response = full(StatusCode::OK, content_type, body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE));
    response
}

fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<AdminBody> {
    let body: Bytes = body.into();
    let mut response = Response::new(AdminBody::Full(None));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    *response.body_mut() = AdminBody::Full((!body.is_empty()).then_some(body));
    response
}

/// A response body: a buffer, or an endless event stream.
pub enum AdminBody {
    Full(Option<Bytes>),
    Events(EventStream),
}

impl AdminBody {
    fn events(observer: Arc<Observer>) -> AdminBody {
        let mut tick = tokio::time::interval(EVENT_POLL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        AdminBody::Events(EventStream {
            observer,
            tick,
            sent: None,
            last_write: Instant::now(),
        })
    }
}

/// `/status/events`: the summary whenever the node table changed. Ends when the client goes
/// away (hyper drops the body).
pub struct EventStream {
    observer: Arc<Observer>,
    tick: Interval,
    /// The table version last sent.
    sent: Option<u64>,
    last_write: Instant,
}

impl EventStream {
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        loop {
            ready!(self.tick.poll_tick(cx));
            let version = self.observer.nodes_version();
            if self.sent != Some(version) {
                let json = summary_json(&self.observer);
                let mut event = Vec::with_capacity(json.len() + 32);
                if self.sent.is_none() {
                    // The browser reconnects this soon after the daemon restarts.
                    event.extend_from_slice(b"retry: 2000\n");
                }
                // The summary may have dropped expired rows: remember the version it shows.
                self.sent = Some(self.observer.nodes_version());
                self.last_write = Instant::now();
                event.extend_from_slice(b"data: ");
                event.extend_from_slice(&json);
                event.extend_from_slice(b"\n\n");
                return Poll::Ready(Bytes::from(event));
            }
            if self.last_write.elapsed() >= KEEPALIVE {
                self.last_write = Instant::now();
                return Poll::Ready(Bytes::from_static(b": keepalive\n\n"));
            }
        }
    }
}

impl http_body::Body for AdminBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            AdminBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            AdminBody::Events(stream) => stream.poll_event(cx).map(|b| Some(Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, AdminBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AdminBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            AdminBody::Events(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;
    use crate::dhcp::classify::ServerPort;
    use crate::events::EventSink;
    use crate::nodes::Limits;
    use crate::observe::HttpRequest;

    fn observer() -> Arc<Observer> {
        Arc::new(Observer::new(Limits {
            max_nodes: 100,
            ttl: Duration::from_secs(60),
        }))
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    async fn next(body: &mut AdminBody) -> String {
        let frame = body.frame().await.unwrap().unwrap();
        String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
    }

    async fn body(response: Response<AdminBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_admin_routes_answer() {
        let observer = observer();
        observer.http_request(&HttpRequest {
            client: Ipv4Addr::new(198, 18, 0, 10).into(),
            method: &Method::GET,
            target: "/boot.ipxe?mac=52:54:00:00:00:0a&arch=bios",
            status: StatusCode::OK,
            bytes: 300,
            expected: 300,
            duration: Duration::from_millis(2),
        });
        let metrics = respond(&get("/metrics"), &observer);
        assert_eq!(
            metrics.headers()[header::CONTENT_TYPE],
            metrics::CONTENT_TYPE
        );
        let text = body(metrics).await;
        assert!(
            text.contains("xdpboot_http_requests_total{route=\"script\",status=\"200\"} 1"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&body(respond(&get("/api/nodes"), &observer)).await).unwrap();
        assert_eq!(json["nodes"][0]["mac"], "52:54:00:00:00:0a");
        assert_eq!(json["nodes"][0]["stage"], "script");
        assert_eq!(json["nodes"][0]["ip"], "198.18.0.10");
        let summary: serde_json::Value =
            serde_json::from_str(&body(respond(&get("/api/summary"), &observer)).await).unwrap();
        assert_eq!(summary["total"], 1);
        assert_eq!(summary["stages"]["script"], 1);
        assert_eq!(summary["stages"]["unanswered"], 0);
        let page: serde_json::Value = serde_json::from_str(
            &body(respond(
                &get("/api/nodes?stage=script&sort=attention&q=52%3A54+0a&limit=5"),
                &observer,
            ))
            .await,
        )
        .unwrap();
        assert_eq!(
            (page["matched"].as_u64(), page["limit"].as_u64()),
            (Some(1), Some(5))
        );
        assert_eq!(page["sort"], "attention");
        let refused = respond(&get("/api/nodes?stage=booted"), &observer);
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(body(refused).await.contains("stage=\"booted\""));
        let page = body(respond(&get("/status"), &observer)).await;
        assert!(page.contains("/status/events"));
        assert!(page.contains("/status/uplot.js"));
        let script = respond(&get("/status/uplot.js"), &observer);
        assert_eq!(script.status(), StatusCode::OK);
        assert!(body(script).await.contains("uPlot"));
        assert_eq!(
            respond(&get("/nope"), &observer).status(),
            StatusCode::NOT_FOUND
        );
        let post = Request::post("/metrics").body(()).unwrap();
        assert_eq!(
            respond(&post, &observer).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_event_stream_sends_the_summary_when_the_table_changes() {
        let observer = observer();
        let mut events = respond(&get("/status/events"), &observer).into_body();
        let first = next(&mut events).await;
        assert!(first.starts_with("retry: 2000\ndata: {"), "{first}");
        assert!(first.contains("\"total\":0"), "{first}");
        observer.dhcp(
            "eth0",
            ServerPort::Pxe,
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 68),
            &crate::dhcp::Outcome::Malformed(crate::dhcp::Malformed::BadMagic),
            Duration::ZERO,
        );
        observer.http_request(&HttpRequest {
            client: Ipv4Addr::new(198, 18, 0, 11).into(),
            method: &Method::GET,
            target: "/boot.ipxe?mac=52:54:00:00:00:0b",
            status: StatusCode::OK,
            bytes: 1,
            expected: 1,
            duration: Duration::ZERO,
        });
        let second = next(&mut events).await;
        assert!(second.starts_with("data: {"), "{second}");
        let summary: serde_json::Value = serde_json::from_str(
            second
                .strip_prefix("data: ")
                .and_then(|s| s.strip_suffix("\n\n"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(summary["stages"]["script"], 1, "{second}");
        // Nothing changes: a keepalive comment after a while.
        let third = next(&mut events).await;
        assert_eq!(third, ": keepalive\n\n");
    }
}
