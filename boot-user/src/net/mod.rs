//! I/O edges: the interface table, the kernel's neighbour table, and the backends that carry
//! requests to the core.

pub mod iface;
pub mod neighbour;
pub mod netlink;
pub mod service;
pub mod sockdiag;
pub mod udp;
pub mod udp6;
pub mod xdp;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// Types that own the file descriptor they expose, so it stays open and the same for as long
/// as the value lives: the condition `AsyncFd::register` asks its caller to uphold.
pub trait OwnsFd: AsRawFd {}
impl OwnsFd for OwnedFd {}
impl OwnsFd for socket2::Socket {}

/// Registers an owned descriptor with the tokio reactor for read and write readiness.
pub fn register<T: OwnsFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `T: OwnsFd` owns its descriptor; it is open now and closed only when the AsyncFd
    // (which owns `inner`) drops it.
    unsafe { AsyncFd::register(inner) }.map_err(|e| e.into_parts().1)
}
