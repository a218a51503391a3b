//! A client connection's byte stream under hyper: plain TCP or TLS, with a send timeout, and
//! zero-copy file bodies on plain TCP.
//!
//! hyper writes responses with vectored writes of the `Bytes` a body yields, and file bodies
//! on plain connections yield slices of the file's shared map (`files.rs`). The stream
//! recognizes such a slice by its address ([`MapRegistry`]) and sends it with `sendfile(2)`
//! from the file instead of copying it out of the map: the kernel moves page-cache pages to the
//! socket, the process never touches them, and memory stays flat however many clients
//! download. Anything else is written as usual, so a slice that was not recognized is still
//! sent correctly (copied by `write`).

use std::fs::File;
use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use nix::sys::socket::{MsgFlags, SockaddrStorage};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;

use super::files::MapRegistry;

/// Bytes per `sendfile` call at most (Linux caps one call a little below 2 GiB anyway).
const MAX_SENDFILE: usize = 1 << 30;

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The stream hyper reads requests from and writes responses to.
pub struct Stream {
    transport: Transport,
    maps: Arc<MapRegistry>,
    send_timeout: Duration,
    /// Armed while a write waits for the client; fires `send_timeout` after the last progress.
    stall: Pin<Box<Sleep>>,
    stalled: bool,
}

impl Stream {
    pub fn plain(tcp: TcpStream, maps: Arc<MapRegistry>, send_timeout: Duration) -> Stream {
        Stream::new(Transport::Plain(tcp), maps, send_timeout)
    }

    pub fn tls(
        tls: TlsStream<TcpStream>,
        maps: Arc<MapRegistry>,
        send_timeout: Duration,
    ) -> Stream {
        Stream::new(Transport::Tls(Box::new(tls)), maps, send_timeout)
    }

    fn new(transport: Transport, maps: Arc<MapRegistry>, send_timeout: Duration) -> Stream {
        Stream {
            transport,
            maps,
            send_timeout,
            stall: Box::pin(tokio::time::sleep(send_timeout)),
            stalled: false,
        }
    }

    /// Runs a write step; while it is pending, the send timeout runs.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        step: impl FnOnce(&mut Transport, &MapRegistry, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match step(&mut self.transport, &self.maps, cx) {
            Poll::Ready(result) => {
                self.stalled = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.stalled {
                    self.stalled = true;
                    self.stall
                        .as_mut()
                        .reset(Instant::now() + self.send_timeout);
                }
                if self.stall.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading (http.send_timeout_secs)",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .timed(cx, |transport, maps, cx| match transport {
                Transport::Plain(tcp) => poll_write_plain(tcp, maps, cx, &[IoSlice::new(buf)]),
                Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
            })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .timed(cx, |transport, maps, cx| match transport {
                Transport::Plain(tcp) => poll_write_plain(tcp, maps, cx, bufs),
                Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
            })
    }

    fn is_write_vectored(&self) -> bool {
        // Keeps hyper queueing body `Bytes` as they are (its "queue" write strategy) instead
        // of copying them into one buffer: the map slices must arrive here unchanged.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .timed(cx, |transport, _, cx| match transport {
                Transport::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
                Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .timed(cx, |transport, _, cx| match transport {
                Transport::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
                Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            })
    }
}

/// One write step on plain TCP: a leading mapped slice goes out with `sendfile`; leading
/// ordinary buffers (response headers) go out with `sendmsg`, flagged MSG_MORE when a mapped
/// slice follows so headers and the first body bytes share packets (as nginx does with
/// TCP_CORK).
fn poll_write_plain(
    tcp: &TcpStream,
    maps: &MapRegistry,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
        return Poll::Ready(Ok(0));
    };
    if let Some((file, offset)) = maps.find(&bufs[first]) {
        let count = bufs[first].len().min(MAX_SENDFILE);
        let sent = ready!(poll_sendfile(tcp, cx, file.file(), offset, count))?;
        maps.sent.fetch_add(sent as u64, Ordering::Relaxed);
        return Poll::Ready(Ok(sent));
    }
    let end = bufs[first..]
        .iter()
        .position(|b| !b.is_empty() && maps.find(b).is_some())
        .map_or(bufs.len(), |i| first + i);
    let flags = if end < bufs.len() {
        // nix names no MSG_MORE; the flag is Linux's.
        MsgFlags::from_bits_retain(libc::MSG_MORE) | MsgFlags::MSG_NOSIGNAL
    } else {
        MsgFlags::MSG_NOSIGNAL
    };
    let plain = &bufs[first..end];
    poll_io(tcp, cx, |tcp| {
        nix::sys::socket::sendmsg::<SockaddrStorage>(tcp.as_raw_fd(), plain, &[], flags, None)
            .map_err(io::Error::from)
    })
}

fn poll_sendfile(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    file: &File,
    offset: u64,
    count: usize,
) -> Poll<io::Result<usize>> {
    let Ok(mut off) = i64::try_from(offset) else {
        return Poll::Ready(Err(io::Error::other("file offset beyond off_t")));
    };
    let sent = ready!(poll_io(tcp, cx, |tcp| {
        nix::sys::sendfile::sendfile64(tcp, file, Some(&mut off), count).map_err(io::Error::from)
    }))?;
    if sent == 0 {
        // The file ended before the range did: it was truncated in place.
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while being sent",
        )));
    }
    Poll::Ready(Ok(sent))
}

/// Runs a non-blocking write syscall when the socket is writable, waiting on tokio's
/// readiness when it would block.
fn poll_io(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    mut op: impl FnMut(&TcpStream) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        match tcp.try_io(Interest::WRITABLE, || op(tcp)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return Poll::Ready(result),
        }
    }
}

/// Caps the socket's send rate (SO_MAX_PACING_RATE; TCP paces itself without the fq qdisc
/// since Linux 4.13). The workaround for iPXE EFI drivers that hang on fast links.
pub fn set_pacing_rate(tcp: &TcpStream, bytes_per_second: u64) -> io::Result<()> {
    let rate: u64 = bytes_per_second;
    // SAFETY: a valid socket descriptor, and a pointer to a live u64 with its exact size
    // (Linux reads a u64 rate when optlen is 8).
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&rate as *const u64).cast(),
            std::mem::size_of::<u64>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
