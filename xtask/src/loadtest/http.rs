//! The simulated nodes' HTTP client: hyper's HTTP/1.1 client, one kept-alive connection per
//! node for its script, kernel, initrd and overlay (iPXE pools connections to a server the same
//! way), bodies counted as they stream in and thrown away.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Longest wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one request may take, a large image at a storm's share of the link included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest script kept.
const MAX_SCRIPT: usize = 64 * 1024;
/// What the nodes call themselves, as iPXE does.
const USER_AGENT: &str = "iPXE/1.21.1 (xdpboot loadtest)";

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
    connection: Option<(SocketAddrV4, SendRequest<Empty<Bytes>>)>,
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
        let sender = self.ready(target.addr).await?;
        let what = describe(url);
        let request = hyper::Request::get(target.path.as_str())
            .header(hyper::header::HOST, target.host.as_str())
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("GET{what}: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET{what}: {e}"))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut text = Vec::new();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("GET{what}: body cut short: {e}"))?;
            if let Some(data) = frame.data_ref() {
                bytes += data.len() as u64;
                if keep == Keep::Text && text.len() < MAX_SCRIPT {
                    let room = MAX_SCRIPT - text.len();
                    text.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
        Ok((status, String::from_utf8_lossy(&text).into_owned(), bytes))
    }

    /// The connection to `addr`, ready for a request: the kept-alive one, or a new one when
    /// there is none or the server closed it.
    async fn ready(
        &mut self,
        addr: SocketAddrV4,
    ) -> Result<&mut SendRequest<Empty<Bytes>>, String> {
        let reusable = match &mut self.connection {
            Some((to, sender)) if *to == addr => sender.ready().await.is_ok(),
            _ => false,
        };
        if !reusable {
            let stream =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| format!("connecting to {addr}: timed out"))?
                    .map_err(|e| format!("connecting to {addr}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
            // Ends when the server closes the connection or the node drops its sender.
            tokio::spawn(connection);
            self.connection = Some((addr, sender));
        }
        let (_, sender) = self.connection.as_mut().expect("set above");
        Ok(sender)
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
