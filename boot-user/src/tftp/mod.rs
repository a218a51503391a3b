//! TFTP for first-stage loaders: read-only, confined to its root, RFC 1350 read requests in
//! octet mode with option negotiation (RFC 2347) for blksize (RFC 2348), timeout and tsize
//! (RFC 2349) and windowsize (RFC 7440).
//!
//! Sans-IO core, I/O at the edge:
//! - [`packet`]: the wire format.
//! - [`request`]: what the server port does with a datagram, and which names may be asked for.
//! - [`options`]: option negotiation, clamped to the ingress interface's MTU.
//! - [`session`]: one transfer as a state machine driven by datagrams and timer expiries.
//! - [`files`]: the root on disk, and one shared in-memory copy of each file.
//! - [`server`]: the server port, a task per transfer for its setup and log line, limits
//!   ([`TftpServer`]).
//! - [`transfers`]: one thread exchanging every running transfer's packets (one epoll set,
//!   one deadline heap). With [`server`], the only parts that do I/O.
//! - [`stats`]: counters of requests and transfers.

pub mod files;
pub mod options;
pub mod packet;
pub mod request;
pub mod server;
pub mod session;
pub mod stats;
mod transfers;

pub use server::{Draining, TftpConfig, TftpError, TftpServer};
