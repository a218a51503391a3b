//! The simulated nodes' HTTP client: HTTP/1.1 GETs on one kept-alive connection per node for
//! its script, kernel, initrd and overlay (iPXE keeps its connection to a server the same way).
//!
//! A small client of its own rather than hyper's: the generator must not be the storm's
//! ceiling, and most of its CPU for the images went into copying 144 MiB per fetching node out
//! of the socket only to throw it away (the costing pass showed the generator spending three
//! times the server's CPU on those stages). Bodies that are only counted are discarded in the
//! kernel (`recv` with `MSG_TRUNC`, which TCP takes as "drop this many bytes", tcp(7)); only a
//! script's text is read. Responses must carry a Content-Length, as both servers' do.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;

/// Longest wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one request may take, a large image at a storm's share of the link included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest script kept.
const MAX_SCRIPT: usize = 64 * 1024;
/// Largest response head (status line and headers) taken.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes read per `read` of a head or a kept body.
const READ_CHUNK: usize = 16 * 1024;
/// Most bytes one `recv(MSG_TRUNC)` drops; the buffer it names is this long, though TCP
/// writes nothing into it.
const DISCARD_CHUNK: usize = 256 * 1024;
/// What the nodes call themselves, as iPXE does.
const USER_AGENT: &str = "iPXE/1.21.1 (xdpboot loadtest)";

thread_local! {
    /// The buffer `recv(MSG_TRUNC)` is given; one per runtime thread.
    static DISCARD: RefCell<Vec<u8>> = RefCell::new(vec![0; DISCARD_CHUNK]);
}

/// What to keep of a response body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// The text (a script): up to [`MAX_SCRIPT`] bytes.
    Text,
    /// Only its length.
    Nothing,
}

/// A node's connection to one server, opened on first use and again when the server closed it.
#[derive(Default)]
pub(super) struct Session {
    connection: Option<(SocketAddrV4, TcpStream)>,
}

/// How one request on a connection went wrong.
enum Failed {
    /// The connection was closed or reset before any of the response came: a kept-alive
    /// connection the server had closed, worth one more try on a new one.
    BeforeResponse(String),
    Other(String),
}

impl Session {
    /// GET `url`: the status, the body (with [`Keep::Text`]) and the body's length.
    pub(super) async fn get(
        &mut self,
        url: &str,
        keep: Keep,
    ) -> Result<(u16, String, u64), String> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.get_unbounded(url, keep))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "GET{}: not done within {REQUEST_TIMEOUT:?}",
                    describe(url)
                ))
            })
    }

    /// GET `url` and check it is a 200 of `expected` bytes; the bytes read.
    pub(super) async fn fetch_exact(
        &mut self,
        url: &str,
        expected: u64,
    ) -> Result<((), u64), String> {
        let (status, _, bytes) = self.get(url, Keep::Nothing).await?;
        expect_ok(status, url)?;
        // xdpboot pads initrds to 4 bytes; the sizes the storm writes are multiples of 4.
        if bytes != expected {
            return Err(format!(
                "GET{}: {bytes} bytes, expected {expected}",
                describe(url)
            ));
        }
        Ok(((), bytes))
    }

    async fn get_unbounded(&mut self, url: &str, keep: Keep) -> Result<(u16, String, u64), String> {
        let target = Target::parse(url)?;
        let what = describe(url);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\n\r\n",
            target.path, target.host
        );
        loop {
            let reused = match &self.connection {
                Some((to, _)) if *to == target.addr => true,
                _ => {
                    self.connection = Some((target.addr, connect(target.addr).await?));
                    false
                }
            };
            let (_, stream) = self.connection.as_mut().expect("connected above");
            match exchange(stream, request.as_bytes(), keep).await {
                Ok((status, text, bytes, close)) => {
                    if close {
                        self.connection = None;
                    }
                    return Ok((status, text, bytes));
                }
                Err(Failed::BeforeResponse(_)) if reused => self.connection = None,
                Err(Failed::BeforeResponse(e) | Failed::Other(e)) => {
                    self.connection = None;
                    return Err(format!("GET{what}: {e}"));
                }
            }
        }
    }
}

async fn connect(addr: SocketAddrV4) -> Result<TcpStream, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr}: timed out"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One request and its response on `stream`: status, kept text, body length, and whether the
/// server closes the connection after it.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    keep: Keep,
) -> Result<(u16, String, u64, bool), Failed> {
    stream
        .write_all(request)
        .await
        .map_err(|e| Failed::BeforeResponse(format!("sending the request: {e}")))?;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let head_len = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() >= MAX_HEAD {
            return Err(Failed::Other(format!(
                "a response head over {MAX_HEAD} bytes"
            )));
        }
        let before = buf.len();
        buf.resize(before + READ_CHUNK, 0);
        let n = stream.read(&mut buf[before..]).await;
        buf.truncate(before + *n.as_ref().unwrap_or(&0));
        match n {
            Ok(0) if before == 0 => {
                return Err(Failed::BeforeResponse("closed before a response".into()));
            }
            Ok(0) => return Err(Failed::Other("closed mid-head".into())),
            Ok(_) => {}
            Err(e) if before == 0 => return Err(Failed::BeforeResponse(e.to_string())),
            Err(e) => return Err(Failed::Other(e.to_string())),
        }
    };
    let head = Head::parse(&buf[..head_len]).map_err(Failed::Other)?;
    let length = head
        .content_length
        .ok_or_else(|| Failed::Other("a response without Content-Length".into()))?;
    let cut_short = |got: u64| Failed::Other(format!("body cut short at {got} of {length} bytes"));
    let mut text = Vec::new();
    let mut got = 0u64;
    let mut take = |bytes: &[u8], got: &mut u64| {
        *got += bytes.len() as u64;
        if keep == Keep::Text && text.len() < MAX_SCRIPT {
            let room = MAX_SCRIPT - text.len();
            text.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    };
    let early = &buf[head_len..];
    take(&early[..early.len().min(length as usize)], &mut got);
    while got < length {
        let want = usize::try_from(length - got).unwrap_or(usize::MAX);
        let n = match keep {
            Keep::Text => {
                buf.resize(READ_CHUNK.min(want), 0);
                let n = stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| Failed::Other(e.to_string()))?;
                take(&buf[..n], &mut got);
                n
            }
            Keep::Nothing => {
                let n = discard(stream, want.min(DISCARD_CHUNK))
                    .await
                    .map_err(|e| Failed::Other(e.to_string()))?;
                got += n as u64;
                n
            }
        };
        if n == 0 {
            return Err(cut_short(got));
        }
    }
    Ok((
        head.status,
        String::from_utf8_lossy(&text).into_owned(),
        got,
        head.close,
    ))
}

/// Drops up to `len` received bytes in the kernel, waiting until some are there; the number
/// dropped, 0 at the end of the stream.
async fn discard(stream: &TcpStream, len: usize) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        let dropped = stream.try_io(Interest::READABLE, || {
            DISCARD.with_borrow_mut(|scratch| {
                let len = len.min(scratch.len());
                // SAFETY: a live descriptor and a buffer of at least `len` bytes, owned by this
                // thread for the call; with MSG_TRUNC, TCP drops the bytes without writing it.
                let n = unsafe {
                    libc::recv(
                        stream.as_raw_fd(),
                        scratch.as_mut_ptr().cast(),
                        len,
                        libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            })
        });
        match dropped {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the client needs of a response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    /// `Connection: close`, or HTTP/1.0 without keep-alive.
    close: bool,
}

impl Head {
    /// Parses the status line and headers (up to and including the empty line).
    fn parse(head: &[u8]) -> Result<Head, String> {
        let text = std::str::from_utf8(head).map_err(|_| "a response head that is not text")?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut words = status_line.splitn(3, ' ');
        let (version, status) = (words.next(), words.next());
        let status = status
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("a bad status line {status_line:?}"))?;
        let mut head = Head {
            status,
            content_length: None,
            close: version == Some("HTTP/1.0"),
        };
        for line in lines.take_while(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("a bad header line {line:?}"));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                head.content_length = Some(
                    value
                        .parse()
                        .map_err(|_| format!("a bad Content-Length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("connection") {
                head.close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!(
                    "Transfer-Encoding {value} (the client reads Content-Length bodies)"
                ));
            }
        }
        Ok(head)
    }
}

/// Fails unless `status` is 200.
pub(super) fn expect_ok(status: u16, url: &str) -> Result<(), String> {
    if status == 200 {
        return Ok(());
    }
    Err(format!("HTTP {status}{}", describe(url)))
}

/// Where a failure happened, without the per-node parts (so failures of many nodes add up).
fn describe(url: &str) -> String {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, path)| path);
    let path = path.split('?').next().unwrap_or_default();
    if path.starts_with("nodes/") {
        " for an overlay".to_owned()
    } else {
        format!(" for /{path}")
    }
}

/// The IPv4 host of an `http://a.b.c.d[:port]/…` URL.
pub(super) fn url_host(url: &str) -> Option<Ipv4Addr> {
    Target::parse(url).ok().map(|target| *target.addr.ip())
}

/// An `http://` URL, split for a request.
struct Target {
    addr: SocketAddrV4,
    host: String,
    /// Path and query.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are fetched"))?;
        let (host, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (ip, port) = match host.rsplit_once(':') {
            Some((ip, port)) => (
                ip,
                port.parse::<u16>()
                    .map_err(|_| format!("{url}: bad port"))?,
            ),
            None => (host, 80),
        };
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{url}: the host must be an IPv4 address"))?;
        Ok(Target {
            addr: SocketAddrV4::new(ip, port),
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// The URLs an iPXE script names: its `kernel`, its first other `initrd`, and the overlay
/// (the initrd named `overlay.cpio`).
pub(super) struct ScriptFiles {
    pub kernel: String,
    pub initrd: String,
    pub overlay: String,
}

impl ScriptFiles {
    pub(super) fn parse(script: &str) -> Result<ScriptFiles, String> {
        if !script.starts_with("#!ipxe") {
            return Err("the script is not an iPXE script".to_owned());
        }
        let (mut kernel, mut initrd, mut overlay) = (None, None, None);
        for line in script.lines() {
            let mut words = line.split_whitespace();
            let command = words.next();
            if !matches!(command, Some("kernel" | "initrd")) {
                continue;
            }
            let mut name = None;
            let mut url = None;
            while let Some(word) = words.next() {
                if word == "--name" || word == "-n" {
                    name = words.next();
                } else if let Some(value) = word.strip_prefix("--name=") {
                    name = Some(value);
                } else if word.starts_with("http://") || word.starts_with("https://") {
                    url = Some(word.to_owned());
                    break;
                }
            }
            let Some(url) = url else { continue };
            match command {
                Some("kernel") => kernel = kernel.or(Some(url)),
                _ if name == Some("overlay.cpio") || url.contains("/overlay.cpio") => {
                    overlay = overlay.or(Some(url))
                }
                _ => initrd = initrd.or(Some(url)),
            }
        }
        match (kernel, initrd, overlay) {
            (Some(kernel), Some(initrd), Some(overlay)) => Ok(ScriptFiles {
                kernel,
                initrd,
                overlay,
            }),
            _ => Err("the script does not name a kernel, an initrd and an overlay".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_xdpboot_script_names_kernel_initrd_and_overlay() {
        let script = "#!ipxe\necho xdpboot: booting node-x\nset attempt:int32 0\n:fetch\n\
            kernel --name kernel http://198.18.100.1:80/boot/kernel initrd=0.img initrd=overlay.cpio console=ttyS0 || goto retry\n\
            initrd --name 0.img http://198.18.100.1:80/boot/initrd/0 || goto retry\n\
            initrd --name overlay.cpio http://198.18.100.1:80/nodes/02:5b:00:00:00:01/overlay.cpio?expires=1&sig=ab || goto retry\n\
            boot || goto retry\n";
        let files = ScriptFiles::parse(script).unwrap();
        assert_eq!(files.kernel, "http://198.18.100.1:80/boot/kernel");
        assert_eq!(files.initrd, "http://198.18.100.1:80/boot/initrd/0");
        assert!(files.overlay.ends_with("overlay.cpio?expires=1&sig=ab"));
        let target = Target::parse(&files.overlay).unwrap();
        assert_eq!(target.addr, "198.18.100.1:80".parse().unwrap());
        assert_eq!(
            target.path,
            "/nodes/02:5b:00:00:00:01/overlay.cpio?expires=1&sig=ab"
        );
    }

    #[test]
    fn a_response_head_gives_status_length_and_whether_the_connection_stays() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\nContent-Type: text/plain\r\n\r\n";
        assert_eq!(
            Head::parse(head),
            Ok(Head {
                status: 200,
                content_length: Some(1234),
                close: false
            })
        );
        let closing = b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            Head::parse(closing),
            Ok(Head {
                status: 403,
                content_length: Some(0),
                close: true
            })
        );
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert!(Head::parse(old).unwrap().close);
        assert!(Head::parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(Head::parse(b"HTTP/1.1 OK\r\n\r\n").is_err());
        assert!(Head::parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn failures_name_the_route_not_the_node() {
        assert_eq!(
            expect_ok(
                403,
                "http://198.18.100.1/nodes/02:5b:00:00:00:01/overlay.cpio?sig=1"
            ),
            Err("HTTP 403 for an overlay".to_owned())
        );
        assert_eq!(
            expect_ok(
                404,
                "http://198.18.100.1:80/boot.ipxe?mac=02:5b:00:00:00:01"
            ),
            Err("HTTP 404 for /boot.ipxe".to_owned())
        );
    }
}
