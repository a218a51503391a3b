//! The response body type every route returns, and the access log line written when a
//! response is finished (or abandoned).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};
use http_body::{Frame, SizeHint};

use super::files::{Delivery, OpenFile};
use crate::events::{HttpRequest, Sink};

/// Largest slice of a mapped file handed to hyper at once. It costs no memory (it references
/// the map); it bounds how far the access log's byte count can run ahead of the socket.
pub const MAPPED_CHUNK: u64 = 2 * 1024 * 1024;
/// Bytes read per `pread` for connections that cannot use the map (TLS). One such buffer per
/// sending connection, reused once the previous chunk is written.
pub const READ_CHUNK: usize = 64 * 1024;
/// The zeros padding can add.
static PADDING: [u8; 3] = [0; 3];
/// Characters of a request path kept in the access log.
const MAX_LOGGED_PATH: usize = 256;

/// A response body: nothing, a small buffer (error pages, scripts, overlays), or a file range.
pub struct Body {
    kind: Kind,
    /// Zero bytes sent after the file range: initrds padded to a 4-byte boundary (see
    /// `StaticRoot::respond_open`). At most 3.
    padding: u64,
    log: Option<AccessLog>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    /// Slices of the file's shared map; the connection stream sends them with `sendfile`.
    Mapped {
        file: Arc<OpenFile>,
        next: u64,
        end: u64,
    },
    /// Bounded `pread` chunks into one reused buffer.
    Read {
        file: Arc<OpenFile>,
        next: u64,
        end: u64,
        buf: BytesMut,
    },
}

impl Body {
    pub fn empty() -> Body {
        Body::new(Kind::Empty)
    }

    /// A body held in memory (error pages, rendered scripts, generated overlays).
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::empty()
        } else {
            Body::new(Kind::Full(Some(bytes)))
        }
    }

    /// Bytes `start..end` of `file`, sent the way the connection allows.
    pub fn file(file: Arc<OpenFile>, start: u64, end: u64, delivery: Delivery) -> Body {
        if start >= end {
            return Body::empty();
        }
        Body::new(match (delivery, file.mapped().is_some()) {
            (Delivery::Mapped, true) => Kind::Mapped {
                file,
                next: start,
                end,
            },
            _ => Kind::Read {
                file,
                next: start,
                end,
                buf: BytesMut::new(),
            },
        })
    }

    fn new(kind: Kind) -> Body {
        Body {
            kind,
            padding: 0,
            log: None,
        }
    }

    /// `padding` zero bytes after the rest of the body.
    pub fn with_padding(mut self, padding: u64) -> Body {
        self.padding = padding.min(PADDING.len() as u64);
        self
    }

    pub(crate) fn with_access_log(mut self, log: AccessLog) -> Body {
        self.log = Some(log);
        self
    }

    fn remaining(&self) -> u64 {
        self.padding
            + match &self.kind {
                Kind::Empty => 0,
                Kind::Full(bytes) => bytes.as_ref().map_or(0, |b| b.len() as u64),
                Kind::Mapped { next, end, .. } | Kind::Read { next, end, .. } => end - next,
            }
    }

    fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        match self.next_content_chunk() {
            None if self.padding > 0 => {
                let pad = std::mem::take(&mut self.padding) as usize;
                Some(Ok(Bytes::from_static(&PADDING[..pad])))
            }
            chunk => chunk,
        }
    }

    fn next_content_chunk(&mut self) -> Option<io::Result<Bytes>> {
        match &mut self.kind {
            Kind::Empty => None,
            Kind::Full(bytes) => bytes.take().map(Ok),
            Kind::Mapped { file, next, end } => {
                if next >= end {
                    return None;
                }
                let stop = (*end).min(*next + MAPPED_CHUNK);
                let chunk = file.mapped_slice(*next, stop);
                *next = stop;
                Some(chunk.ok_or_else(|| io::Error::other("file range outside its map")))
            }
            Kind::Read {
                file,
                next,
                end,
                buf,
            } => {
                if next >= end {
                    return None;
                }
                let want = usize::try_from(*end - *next).map_or(READ_CHUNK, |n| n.min(READ_CHUNK));
                // Reuses the allocation once hyper has dropped the previous chunk.
                buf.reserve(want);
                buf.resize(want, 0);
                let result = match file.file().read_at(buf, *next) {
                    // The file shrank under us (rewritten in place): end the body early; hyper
                    // then closes the connection short of Content-Length.
                    Ok(0) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being sent",
                    )),
                    Ok(n) => {
                        *next += n as u64;
                        buf.truncate(n);
                        Ok(buf.split().freeze())
                    }
                    Err(e) => Err(e),
                };
                if result.is_err() {
                    *next = *end;
                }
                Some(result)
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let chunk = this.next_chunk();
        if let (Some(log), Some(Ok(bytes))) = (&mut this.log, &chunk) {
            log.bytes += bytes.len() as u64;
        }
        if let (Some(log), Some(Err(_))) = (&mut this.log, &chunk) {
            log.failed = true;
        }
        Poll::Ready(chunk.map(|c| c.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}

/// One access log line per request, written when its body is dropped: after the last byte
/// was handed to the connection, or when the client went away.
pub(crate) struct AccessLog {
    pub client: SocketAddr,
    pub scheme: &'static str,
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub started: Instant,
    /// Body bytes handed to the connection (ahead of the socket by at most one chunk).
    pub bytes: u64,
    /// Body bytes the response promised.
    pub expected: u64,
    pub failed: bool,
    observer: Sink,
}

impl AccessLog {
    pub fn new(
        client: SocketAddr,
        scheme: &'static str,
        method: Method,
        path: &str,
        started: Instant,
    ) -> AccessLog {
        let path = match path.char_indices().nth(MAX_LOGGED_PATH) {
            Some((cut, _)) => format!("{}…", &path[..cut]),
            None => path.to_owned(),
        };
        AccessLog {
            client,
            scheme,
            method,
            path,
            status: StatusCode::OK,
            started,
            bytes: 0,
            expected: 0,
            failed: false,
            observer: None,
        }
    }

    /// Reports the request to `observer` too when it ends.
    pub fn observed_by(mut self, observer: Sink) -> AccessLog {
        self.observer = observer;
        self
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // A body dropped before its end: the client closed, or a send timed out.
        let complete = !self.failed && self.bytes >= self.expected;
        tracing::info!(
            target: "xdpboot::http::access",
            client = %self.client,
            scheme = self.scheme,
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            bytes = self.bytes,
            complete,
            ms = self.started.elapsed().as_millis() as u64,
            "request"
        );
        if let Some(observer) = &self.observer {
            observer.http_request(&HttpRequest {
                client: self.client.ip(),
                method: &self.method,
                target: &self.path,
                status: self.status,
                bytes: self.bytes,
                // A failed body counts as cut short, whatever it had sent.
                expected: if self.failed {
                    self.expected.max(self.bytes + 1)
                } else {
                    self.expected
                },
                duration: self.started.elapsed(),
            });
        }
    }
}

impl Body {
    /// Records the status and the body length the response promised in the access log.
    pub(crate) fn log_response(&mut self, status: StatusCode) {
        let remaining = self.remaining();
        if let Some(log) = &mut self.log {
            log.status = status;
            log.expected = remaining;
        }
    }
}
