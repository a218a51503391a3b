//! The HTTP(S) server against real clients: curl for HTTP, HTTPS with the generated CA,
//! ranges, conditional requests and HEAD; raw sockets for traversal, slowloris, stalled readers
//! and the connection limit. Everything runs on 127.0.0.1 with ephemeral ports, and every wait
//! is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use xdpboot::config::{self, Config};
use xdpboot::http::{Listeners, Server, tls};

/// Bytes of the patterned test image: larger than a socket's buffers, so transfers take many
/// writes and can be interrupted.
const IMAGE_LEN: usize = 24 * 1024 * 1024;
/// Upper bound on every curl call and socket read.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xdpboot-http-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One CA and server certificate for every test in this binary (RSA key generation is slow).
fn pki() -> &'static tls::Pki {
    static PKI: OnceLock<tls::Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        tls::generate(&["localhost".into(), "127.0.0.1".into()], None).expect("generate a PKI")
    })
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

/// A server on 127.0.0.1 with a static root holding `image.bin`, `hello.txt`, a directory, a
/// symlink inside the root and one pointing out of it.
struct Lab {
    dir: TempDir,
    root: PathBuf,
    ca: PathBuf,
    http: SocketAddr,
    https: SocketAddr,
    server: Server,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Lab {
    fn start(adjust: impl FnOnce(&mut config::Http)) -> Lab {
        let dir = TempDir::new("lab");
        let root = dir.0.join("root");
        std::fs::create_dir_all(root.join("kernels")).unwrap();
        std::fs::write(root.join("image.bin"), pattern(IMAGE_LEN)).unwrap();
        std::fs::write(root.join("hello.txt"), b"hello, node\n").unwrap();
        std::fs::write(root.join("kernels/vmlinuz-6.1"), b"kernel").unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("kernels/vmlinuz-6.1", root.join("vmlinuz")).unwrap();
        std::fs::write(dir.0.join("secret"), b"outside the root").unwrap();
        std::os::unix::fs::symlink(dir.0.join("secret"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        let ca = dir.0.join("ca.pem");
        std::fs::write(&ca, &pki().ca_pem).unwrap();

        let mut http = Config::embedded().unwrap().http;
        http.root = root.clone();
        adjust(&mut http);
        let tls = pki().server_config().unwrap();
        let server = Server::new(&http, Some(tls));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listeners = runtime.block_on(async {
            Listeners {
                http: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
                https: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            }
        });
        let http_addr = listeners.http.as_ref().unwrap().local_addr().unwrap();
        let https_addr = listeners.https.as_ref().unwrap().local_addr().unwrap();
        runtime.spawn(server.clone().serve(listeners));
        Lab {
            dir,
            root,
            ca,
            http: http_addr,
            https: https_addr,
            server,
            runtime: Some(runtime),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https.port())
    }

    /// Runs curl; returns the status, the response headers (lower-cased names) and the body.
    fn curl(&self, args: &[&str]) -> Reply {
        let headers = self.dir.0.join(format!("headers-{}", unique()));
        let body = self.dir.0.join(format!("body-{}", unique()));
        let output = Command::new("curl")
            .args(["-sS", "--path-as-is", "--max-time"])
            .arg(CLIENT_TIMEOUT.as_secs().to_string())
            .arg("--cacert")
            .arg(&self.ca)
            .arg("-D")
            .arg(&headers)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(args)
            .output()
            .expect("curl runs (cargo xtask setup installs it)");
        let status = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let head = std::fs::read_to_string(&headers).unwrap_or_default();
        let reply = Reply {
            status,
            headers: head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect(),
            body: std::fs::read(&body).unwrap_or_default(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        let _ = std::fs::remove_file(headers);
        let _ = std::fs::remove_file(body);
        reply
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn unique() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    stderr: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a raw request and reads until the server closes or `CLIENT_TIMEOUT`.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    tcp.write_all(request).unwrap();
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply);
    reply
}

#[test]
fn files_are_served_over_http_and_over_https_with_the_generated_ca() {
    let lab = Lab::start(|_| {});
    let expected = pattern(IMAGE_LEN);
    for url in [lab.url("/image.bin"), lab.https_url("/image.bin")] {
        let reply = lab.curl(&[&url]);
        assert_eq!(reply.status, 200, "{url}: {}", reply.stderr);
        assert_eq!(
            reply.header("content-length"),
            Some(&*IMAGE_LEN.to_string())
        );
        assert_eq!(reply.header("accept-ranges"), Some("bytes"));
        assert!(reply.header("etag").is_some() && reply.header("last-modified").is_some());
        assert!(reply.body == expected, "{url}: body differs");
    }
    // Plain HTTP sent the image with sendfile, not by copying it through the process.
    assert!(lab.server.sendfile_bytes() >= IMAGE_LEN as u64);
    let reply = lab.curl(&[&lab.url("/hello.txt")]);
    assert_eq!(
        (reply.status, &reply.body[..]),
        (200, &b"hello, node\n"[..])
    );
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let reply = lab.curl(&[&lab.url("/empty")]);
    assert_eq!(
        (reply.status, reply.header("content-length")),
        (200, Some("0"))
    );
    // A symlink inside the root to a file inside the root is followed.
    assert_eq!(lab.curl(&[&lab.url("/vmlinuz")]).body, b"kernel");
}

#[test]
fn an_ipxe_style_tls_1_2_ecdhe_rsa_aes_gcm_x25519_client_is_accepted() {
    let lab = Lab::start(|_| {});
    for cipher in ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"] {
        let reply = lab.curl(&[
            "--tls-max",
            "1.2",
            "--ciphers",
            cipher,
            "--curves",
            "X25519",
            &lab.https_url("/hello.txt"),
        ]);
        assert_eq!(reply.body, b"hello, node\n", "{cipher}: {}", reply.stderr);
    }
    // Without the CA, the certificate is refused: the check is real.
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .arg(lab.https_url("/hello.txt"))
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[test]
fn an_ovmf_style_tls_1_2_dhe_rsa_aes_gcm_client_without_elliptic_curves_is_accepted() {
    let lab = Lab::start(|_| {});
    // TLS 1.2 and DHE suites only: curl's OpenSSL then sends no supported_groups extension,
    // like Debian 12's OVMF (DESIGN.md); the server picks ffdhe2048 (src/http/ffdhe.rs).
    for cipher in ["DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-AES128-GCM-SHA256"] {
        let reply = lab.curl(&[
            "--verbose",
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "--ciphers",
            cipher,
            &lab.https_url("/hello.txt"),
        ]);
        assert_eq!(reply.body, b"hello, node\n", "{cipher}: {}", reply.stderr);
        assert!(
            reply.stderr.contains(&format!("TLSv1.2 / {cipher}")),
            "{cipher} negotiated: {}",
            reply.stderr
        );
    }
}

#[test]
fn head_reports_the_length_and_sends_no_body() {
    let lab = Lab::start(|_| {});
    for url in [lab.url("/image.bin"), lab.https_url("/image.bin")] {
        let reply = lab.curl(&["-I", &url]);
        assert_eq!(reply.status, 200, "{}", reply.stderr);
        assert_eq!(
            reply.header("content-length"),
            Some(&*IMAGE_LEN.to_string())
        );
    }
    // No body follows a HEAD: on a kept-alive connection the next response comes right after
    // the HEAD's header block.
    let reply = raw_exchange(
        lab.http,
        b"HEAD /hello.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&reply);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("Content-Length: 12"), "{text}");
    assert!(rest.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(rest.ends_with("\r\n\r\nhello, node\n"), "{text}");
}

/// GRUB 2.12's http module (grub-core/net/http.c) sends this request (here with `Connection:
/// close`, so the exchange ends) and compares the status line and the `Content-Length: ` header
/// byte for byte; without the size it cannot verify a kernel under Secure Boot.
#[test]
fn grubs_http_module_finds_the_status_line_and_content_length_it_matches_byte_for_byte() {
    let lab = Lab::start(|_| {});
    let reply = raw_exchange(
        lab.http,
        b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: GRUB 2.12\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.split("\r\n").any(|line| line == "Content-Length: 12"),
        "{text}"
    );
    assert_eq!(body, "hello, node\n");
}

#[test]
fn a_single_range_gets_206_and_an_unsatisfiable_one_416() {
    let lab = Lab::start(|_| {});
    let expected = pattern(IMAGE_LEN);
    for url in [lab.url("/image.bin"), lab.https_url("/image.bin")] {
        let reply = lab.curl(&["-r", "1000-1999", &url]);
        assert_eq!(reply.status, 206, "{}", reply.stderr);
        assert_eq!(
            reply.header("content-range"),
            Some(&*format!("bytes 1000-1999/{IMAGE_LEN}"))
        );
        assert_eq!(reply.header("content-length"), Some("1000"));
        assert!(reply.body == expected[1000..2000]);

        let reply = lab.curl(&["-H", "Range: bytes=-10", &url]);
        assert_eq!(reply.status, 206);
        assert!(reply.body == expected[IMAGE_LEN - 10..]);

        let reply = lab.curl(&["-r", &format!("{}-", IMAGE_LEN - 5), &url]);
        assert!(reply.status == 206 && reply.body == expected[IMAGE_LEN - 5..]);

        let reply = lab.curl(&["-r", &format!("{IMAGE_LEN}-"), &url]);
        assert_eq!(reply.status, 416);
        assert_eq!(
            reply.header("content-range"),
            Some(&*format!("bytes */{IMAGE_LEN}"))
        );
    }
    // Several ranges: served whole (RFC 9110 §14.2 lets a server ignore Range).
    let reply = lab.curl(&["-r", "0-1,5-6", &lab.url("/hello.txt")]);
    assert_eq!(
        (reply.status, &reply.body[..]),
        (200, &b"hello, node\n"[..])
    );
}

#[test]
fn conditional_requests_get_304_while_the_file_is_unchanged() {
    let lab = Lab::start(|_| {});
    let first = lab.curl(&[&lab.url("/hello.txt")]);
    let etag = first.header("etag").unwrap().to_owned();
    let modified = first.header("last-modified").unwrap().to_owned();

    let reply = lab.curl(&[
        "-H",
        &format!("If-None-Match: {etag}"),
        &lab.url("/hello.txt"),
    ]);
    assert_eq!(reply.status, 304);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("etag"), Some(&*etag));
    let reply = lab.curl(&[
        "-H",
        &format!("If-Modified-Since: {modified}"),
        &lab.https_url("/hello.txt"),
    ]);
    assert_eq!(reply.status, 304);
    let reply = lab.curl(&["-H", "If-None-Match: \"stale\"", &lab.url("/hello.txt")]);
    assert_eq!(reply.status, 200);

    // Replaced by rename: a new validator and the new content, at once.
    std::thread::sleep(Duration::from_millis(20));
    let tmp = lab.root.join(".hello.txt.new");
    std::fs::write(&tmp, b"hello again\n").unwrap();
    std::fs::rename(&tmp, lab.root.join("hello.txt")).unwrap();
    let reply = lab.curl(&[
        "-H",
        &format!("If-None-Match: {etag}"),
        &lab.url("/hello.txt"),
    ]);
    assert_eq!(
        (reply.status, &reply.body[..]),
        (200, &b"hello again\n"[..])
    );
    assert_ne!(reply.header("etag"), Some(&*etag));

    // If-Range with the old validator: the range is ignored and the whole file sent.
    let reply = lab.curl(&[
        "-r",
        "0-4",
        "-H",
        &format!("If-Range: {etag}"),
        &lab.url("/hello.txt"),
    ]);
    assert_eq!(
        (reply.status, &reply.body[..]),
        (200, &b"hello again\n"[..])
    );
}

#[test]
fn traversal_attempts_and_symlinks_out_of_the_root_are_not_found() {
    let lab = Lab::start(|_| {});
    for path in [
        "/../etc/passwd",
        "/../../../../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/%2E%2E/%2e%2e/etc/passwd",
        "/..%2fetc%2fpasswd",
        "/kernels/..%2f..%2fsecret",
        "/kernels%2f..%2f..%2fsecret",
        "/..%5c..%5cetc%5cpasswd",
        "/hello.txt%00.img",
        "/escape",
        "/etc-link/passwd",
        "/kernels",
        "/",
        "/missing",
    ] {
        for url in [lab.url(path), lab.https_url(path)] {
            let reply = lab.curl(&[&url]);
            assert_eq!(reply.status, 404, "{url}: {}", reply.stderr);
            assert_eq!(reply.body, b"not found\n", "{url}");
        }
    }
    // Not through a raw request line either (no client-side normalization at all).
    let reply = raw_exchange(
        lab.http,
        b"GET /../secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        reply.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

#[test]
fn other_methods_get_405_with_the_allowed_ones() {
    let lab = Lab::start(|_| {});
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let reply = lab.curl(&["-X", method, &lab.url("/hello.txt")]);
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        assert_eq!(reply.body, b"method not allowed\n");
    }
    // The boot script and overlay routes are hooks that answer 404 until they are written.
    assert_eq!(
        lab.curl(&[&lab.url("/boot.ipxe?mac=52:54:00:12:34:56")])
            .status,
        404
    );
    assert_eq!(
        lab.curl(&[&lab.url("/nodes/52:54:00:12:34:56/overlay.cpio")])
            .status,
        404
    );
}

#[test]
fn a_client_sending_its_headers_slowly_is_cut_off() {
    let lab = Lab::start(|http| http.header_timeout = Duration::from_secs(1));
    let mut tcp = TcpStream::connect(lab.http).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    tcp.write_all(b"GET /hello.txt HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut closed = false;
    // One header byte every 200 ms: each write is progress, but the head never completes.
    while started.elapsed() < Duration::from_secs(6) {
        if tcp.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tcp.read(&mut buf) {
            Ok(_) => {
                closed = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(closed, "the slow client was never cut off");
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(4),
        "cut off after {elapsed:?}"
    );
    // An idle TLS connection that never finishes its handshake is cut off too.
    let mut idle = TcpStream::connect(lab.https).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert!(matches!(idle.read(&mut buf), Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn oversized_heads_get_431_and_slow_or_oversized_clients_do_not_hold_up_others() {
    let lab = Lab::start(|http| http.header_timeout = Duration::from_secs(2));
    // A head past the limit: one header line of 64 KiB, and 200 small ones.
    let long = format!(
        "GET /hello.txt HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let many = format!(
        "GET /hello.txt HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect::<String>()
    );
    for request in [long, many] {
        let reply = raw_exchange(lab.http, request.as_bytes());
        assert!(
            reply.starts_with(b"HTTP/1.1 431"),
            "{}",
            String::from_utf8_lossy(&reply[..reply.len().min(200)])
        );
    }
    // Thirty slowloris connections dribbling a head that never ends, and ten sending
    // oversized heads over and over: a well-behaved client is served at once all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for i in 0..40 {
        let stop = stop.clone();
        let addr = lab.http;
        attackers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut tcp) = TcpStream::connect(addr) else {
                    continue;
                };
                if i < 30 {
                    let _ = tcp.write_all(b"GET /hello.txt HTTP/1.1\r\n");
                    while !stop.load(Ordering::Relaxed) && tcp.write_all(b"X").is_ok() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                } else {
                    let _ = tcp.write_all(&[b'a'; 32 * 1024]);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        let started = Instant::now();
        let reply = lab.curl(&[&lab.url("/hello.txt")]);
        assert_eq!(reply.status, 200, "{}", reply.stderr);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a well-behaved client waited {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().unwrap();
    }
}

#[test]
fn a_client_that_stops_reading_is_cut_off_by_the_send_timeout() {
    let lab = Lab::start(|http| http.send_timeout = Duration::from_secs(1));
    let mut tcp = TcpStream::connect(lab.http).unwrap();
    tcp.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    tcp.write_all(b"GET /image.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Socket buffers fill in well under a second; then the server waits for us.
    std::thread::sleep(Duration::from_secs(3));
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply);
    assert!(
        reply.len() < IMAGE_LEN,
        "the whole image arrived: the stalled client was not cut off"
    );
}

#[test]
fn connections_beyond_the_limit_are_refused_with_503() {
    let lab = Lab::start(|http| {
        http.max_connections = 2;
        http.header_timeout = Duration::from_secs(10);
    });
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(lab.http).unwrap())
        .collect();
    // The accept loop takes each in turn; give it a moment to count both.
    std::thread::sleep(Duration::from_millis(200));
    let reply = raw_exchange(lab.http, b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        reply.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(lab.server.stats().refused.load(Ordering::Relaxed) >= 1);
    drop(held);
    // Closed connections give their slots back.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = lab.curl(&[&lab.url("/hello.txt")]);
        if reply.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_file_truncated_during_a_download_ends_that_download_and_nothing_else() {
    let lab = Lab::start(|_| {});
    let path = lab.root.join("shrinking.bin");
    let truncate = || {
        // Truncated in place, the way `cp` over an existing file starts.
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1000)
            .unwrap();
    };

    // Plain HTTP (sendfile from the shared map).
    std::fs::write(&path, pattern(IMAGE_LEN)).unwrap();
    let mut tcp = TcpStream::connect(lab.http).unwrap();
    tcp.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    tcp.write_all(b"GET /shrinking.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut received = vec![0u8; 64 * 1024];
    let first = tcp.read(&mut received).unwrap();
    assert!(first > 0);
    truncate();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert!(
        first + rest.len() < IMAGE_LEN,
        "got the whole image from a truncated file"
    );

    // HTTPS (pread), with a client slow enough to be caught mid-transfer.
    std::fs::write(&path, pattern(IMAGE_LEN)).unwrap();
    let curl = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--limit-rate",
            "4M",
            "-o",
            "/dev/null",
        ])
        .arg("--cacert")
        .arg(&lab.ca)
        .arg(lab.https_url("/shrinking.bin"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    truncate();
    let status = curl.wait_with_output().unwrap().status;
    assert!(!status.success(), "curl should report a short transfer");

    // The server is unharmed.
    assert_eq!(lab.curl(&[&lab.url("/hello.txt")]).status, 200);
}

#[test]
fn pacing_caps_each_connection_send_rate() {
    // 40 Mbit/s = 5 MB/s: the 24 MiB image takes about five seconds instead of milliseconds.
    // Range keeps the transfer to 4 MiB so the test stays short.
    let lab = Lab::start(|http| http.pacing_mbit = 40);
    let started = Instant::now();
    let reply = lab.curl(&["-r", "0-4194303", &lab.url("/image.bin")]);
    let elapsed = started.elapsed();
    assert_eq!((reply.status, reply.body.len()), (206, 4 * 1024 * 1024));
    assert!(
        elapsed >= Duration::from_millis(500),
        "4 MiB at 40 Mbit/s took only {elapsed:?}"
    );
}

#[test]
fn every_request_gets_an_access_log_line() {
    let lines = capture_logs();
    let lab = Lab::start(|_| {});
    lab.curl(&["-r", "0-99", &lab.url("/image.bin")]);
    lab.curl(&[&lab.url("/missing-for-the-log")]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&lines.lock().unwrap()).into_owned();
        let ok = text.lines().any(|l| {
            l.contains("path=/image.bin")
                && l.contains("status=206")
                && l.contains("bytes=100")
                && l.contains("method=GET")
                && l.contains("client=127.0.0.1:")
                && l.contains("ms=")
        }) && text
            .lines()
            .any(|l| l.contains("path=/missing-for-the-log") && l.contains("status=404"));
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "no access log lines in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Installs (once) a global subscriber that keeps every log line in memory.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || Sink(sink.clone()))
                .init();
            lines
        })
        .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn first_start_generates_an_rsa_ca_and_certificate_beside_the_config() {
    let dir = TempDir::new("pki");
    let mut http = Config::embedded().unwrap().http;
    http.tls_cert = dir.0.join("tls/server.pem");
    http.tls_key = dir.0.join("tls/server.key");
    http.tls_names = vec!["boot.lab".into()];
    tls::load_or_generate(&http).expect("generate on first start");
    let tls_dir = dir.0.join("tls");
    for file in ["server.pem", "server.key", "ca.pem", "ca.key", "ca.esl"] {
        assert!(tls_dir.join(file).exists(), "{file} missing");
    }
    for key in ["server.key", "ca.key"] {
        let mode = std::fs::metadata(tls_dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let text = openssl(
        &["x509", "-noout", "-text", "-in"],
        &tls_dir.join("server.pem"),
    );
    assert!(text.contains("rsaEncryption"), "{text}");
    assert!(
        text.contains("DNS:boot.lab") && text.contains("DNS:localhost"),
        "{text}"
    );
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(tls_dir.join("ca.pem"))
        .arg(tls_dir.join("server.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // The EFI signature list carries exactly the CA's DER.
    let ca_der = tls::read_certificates(&tls_dir.join("ca.pem"))
        .unwrap()
        .remove(0);
    let esl = std::fs::read(tls_dir.join("ca.esl")).unwrap();
    assert_eq!(&esl[..16], &tls::EFI_CERT_X509_GUID);
    assert_eq!(&esl[44..], &ca_der[..]);
    assert_eq!(esl, tls::efi_signature_list(&ca_der));

    // A second start loads what is there; removing the server pair re-issues it under the
    // same CA, so clients that trust the CA keep working.
    let ca_before = std::fs::read(tls_dir.join("ca.pem")).unwrap();
    let cert_before = std::fs::read(tls_dir.join("server.pem")).unwrap();
    tls::load_or_generate(&http).unwrap();
    assert_eq!(
        std::fs::read(tls_dir.join("server.pem")).unwrap(),
        cert_before
    );
    std::fs::remove_file(tls_dir.join("server.pem")).unwrap();
    std::fs::remove_file(tls_dir.join("server.key")).unwrap();
    tls::load_or_generate(&http).unwrap();
    assert_eq!(std::fs::read(tls_dir.join("ca.pem")).unwrap(), ca_before);
    assert_ne!(
        std::fs::read(tls_dir.join("server.pem")).unwrap(),
        cert_before
    );
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(tls_dir.join("ca.pem"))
        .arg(tls_dir.join("server.pem"))
        .output()
        .unwrap();
    assert!(verify.status.success());

    // Half a pair, or nothing with generation off, is an error naming the files.
    std::fs::remove_file(tls_dir.join("server.key")).unwrap();
    let e = tls::load_or_generate(&http).err().unwrap().to_string();
    assert!(e.contains("server.key"), "{e}");
    std::fs::remove_file(tls_dir.join("server.pem")).unwrap();
    http.tls_generate = false;
    assert!(tls::load_or_generate(&http).is_err());
}

fn openssl(args: &[&str], file: &Path) -> String {
    let output = Command::new("openssl")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}
