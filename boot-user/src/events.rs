//! What the servers report as they work, and the sink they report it to. Defined here, below
//! every server, so that observation flows one way (STYLE.md, "Dependencies point one way"):
//! the DHCP service, TFTP and HTTP call an [`EventSink`]; the observer
//! ([`crate::observe::Observer`], with the metrics, the node table and the status page behind
//! it) implements it, and nothing below imports the observer.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::dhcp::{Outcome, ServerPort};
use crate::dhcp6;

/// A TFTP transfer that ended (or could not start).
#[derive(Debug, Clone)]
pub struct TftpTransfer<'a> {
    pub client: SocketAddr,
    pub interface: &'a str,
    pub file: &'a str,
    /// Bytes the client acknowledged.
    pub bytes: u64,
    pub duration: Duration,
    /// Why it failed; `None` for a complete transfer.
    pub error: Option<String>,
}

/// An HTTP(S) response that was finished or abandoned.
#[derive(Debug, Clone)]
pub struct HttpRequest<'a> {
    pub client: IpAddr,
    pub method: &'a Method,
    /// The request target as sent: path and query, percent-encoded.
    pub target: &'a str,
    pub status: StatusCode,
    /// Body bytes handed to the connection, and how many the response promised.
    pub bytes: u64,
    pub expected: u64,
    pub duration: Duration,
}

/// Where the servers' events go. Each call is made once per event, on the server's own task:
/// an implementation must be quick and must not block on I/O.
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// One DHCP request and what the core decided, `elapsed` after it arrived.
    fn dhcp(
        &self,
        iface: &str,
        port: ServerPort,
        source: SocketAddrV4,
        outcome: &Outcome,
        elapsed: Duration,
    );

    /// One DHCPv6 request on `port` and what the core decided, `elapsed` after it arrived.
    fn dhcp6(
        &self,
        iface: &str,
        port: dhcp6::ServerPort,
        outcome: &dhcp6::Outcome,
        elapsed: Duration,
    );

    /// A DHCP request dropped before the core saw it: on an interface not served, or on one
    /// without an address to hand out.
    fn dhcp_unanswered(&self, reason: &'static str, iface: &str);

    /// One TFTP transfer, finished or refused.
    fn tftp_transfer(&self, transfer: &TftpTransfer<'_>);

    /// One HTTP(S) response.
    fn http_request(&self, request: &HttpRequest<'_>);
}

/// A server's sink: `None` when nothing listens (`[admin] enabled = false`), and then the
/// server does nothing extra at all.
pub type Sink = Option<Arc<dyn EventSink>>;
