//! The TFTP server over loopback, against real clients (tftp-hpa's `tftp`, `atftp`) and a raw
//! UDP client that checks the packets RFC 1350, 2347–2349 and 7440 prescribe.
//!
//! Each test runs its own server on an ephemeral port of 127.0.0.1 (traffic stays on loopback)
//! with its own temporary root; every wait has a deadline.

use std::future::Future;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xdpboot::net::iface::Interfaces;
use xdpboot::tftp::packet::{self, ErrorCode, Opcode, Packet, TftpOption};
use xdpboot::tftp::stats::TftpStats;
use xdpboot::tftp::{TftpConfig, TftpServer};

/// How long a real client may take for one file.
const CLIENT_DEADLINE: Duration = Duration::from_secs(30);
/// How long the raw client waits for a packet that should come.
const REPLY_DEADLINE: Duration = Duration::from_secs(3);
/// How long the raw client listens to show that nothing comes.
const SILENCE: Duration = Duration::from_millis(400);

const LOADER: &str = "loader.bin";
const LOADER_LEN: usize = 1024 * 1024 + 123;
const SMALL: &str = "small.efi";
const SMALL_LEN: usize = 64 * 1024 + 7;

// ---- harness ------------------------------------------------------------------------------

/// A temporary TFTP root with a loader, a small file, a subdirectory and a symlink that points
/// out of the root. Removed on drop.
struct Root {
    dir: PathBuf,
}

impl Root {
    fn new() -> Root {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xdpboot-tftp-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/sub")).expect("creating the test root");
        std::fs::write(dir.join("root").join(LOADER), contents(LOADER_LEN)).expect("loader");
        std::fs::write(dir.join("root").join(SMALL), contents(SMALL_LEN)).expect("small");
        std::fs::write(dir.join("root/sub/inner.efi"), b"inner").expect("inner");
        std::fs::write(dir.join("secret"), b"outside the root").expect("secret");
        std::os::unix::fs::symlink(dir.join("secret"), dir.join("root/escape")).expect("symlink");
        Root { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Bytes that differ block to block, so a misplaced block shows.
fn contents(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + i / 509) % 256) as u8).collect()
}

/// A server on 127.0.0.1:<ephemeral> answering on `lo`, on its own runtime; stopped on drop.
struct Server {
    port: u16,
    stats: Arc<TftpStats>,
    runtime: tokio::runtime::Runtime,
    root: Root,
}

impl Server {
    fn start() -> Server {
        Server::start_with(|_| {}, &["lo"])
    }

    fn start_with(adjust: impl FnOnce(&mut TftpConfig), served: &[&str]) -> Server {
        let root = Root::new();
        let mut config = TftpConfig::new(root.path(), 0);
        adjust(&mut config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let interfaces = Arc::new(Interfaces::default());
        interfaces.refresh().expect("reading the interface table");
        let served = served.iter().map(|s| s.to_string()).collect();
        let server = {
            let _guard = runtime.enter();
            TftpServer::bind(config, interfaces, served).expect("binding the TFTP server")
        };
        let (port, stats) = (server.port(), server.stats());
        runtime.spawn(server.serve());
        Server {
            port,
            stats,
            runtime,
            root,
        }
    }

    fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port)
    }

    /// Polls until counter `group.reason` reaches `n`, or fails after `deadline`.
    fn wait_for_count(&self, group: &str, reason: &str, n: u64, deadline: Duration) {
        let end = Instant::now() + deadline;
        while self.stats.get(group, reason) < n {
            assert!(
                Instant::now() < end,
                "{group}.{reason} did not reach {n} within {deadline:?}: {:?}",
                self.stats.snapshot()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn loader(&self) -> Vec<u8> {
        std::fs::read(self.root.path().join(LOADER)).expect("the loader")
    }
}

/// Runs a client command to completion within [`CLIENT_DEADLINE`]; returns whether it
/// succeeded and its output. The output is collected while it runs (a trace fills a pipe).
fn run_client(command: &mut Command) -> (bool, String) {
    let shown = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {shown}: {e} (is the client installed?)"));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    let Ok(output) = finished.recv_timeout(CLIENT_DEADLINE) else {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("{shown} did not finish within {CLIENT_DEADLINE:?}");
    };
    let output = output.expect("waiting for the client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn tftp_hpa(server: &Server, remote: &str, local: &Path) -> (bool, String) {
    run_client(
        Command::new("tftp")
            .args([
                "-m",
                "binary",
                "127.0.0.1",
                &server.port.to_string(),
                "-c",
                "get",
            ])
            .arg(remote)
            .arg(local),
    )
}

/// `atftp --get`; each `option` becomes `--option <option>`, except flags starting with `--`.
fn atftp(server: &Server, remote: &str, local: &Path, options: &[&str]) -> (bool, String) {
    let mut command = Command::new("atftp");
    command.args(["--get", "--remote-file", remote, "--local-file"]);
    command.arg(local);
    for option in options {
        if option.starts_with("--") {
            command.arg(option);
        } else {
            command.args(["--option", option]);
        }
    }
    command.args(["127.0.0.1", &server.port.to_string()]);
    run_client(&mut command)
}

/// A raw client socket on loopback.
fn raw_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a client socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    socket
}

fn send_request(
    socket: &UdpSocket,
    to: SocketAddrV4,
    opcode: Opcode,
    name: &[u8],
    options: &[TftpOption],
) {
    let mut buf = Vec::new();
    packet::write_request(&mut buf, opcode, name, "octet", options);
    socket.send_to(&buf, to).expect("sending a request");
}

/// The next datagram within `deadline`, with its source.
fn receive(socket: &UdpSocket, deadline: Duration) -> Option<(Vec<u8>, SocketAddrV4)> {
    let end = Instant::now() + deadline;
    let mut buf = vec![0u8; 70_000];
    while Instant::now() < end {
        match socket.recv_from(&mut buf) {
            Ok((len, SocketAddr::V4(from))) => return Some((buf[..len].to_vec(), from)),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => panic!("receiving: {e}"),
        }
    }
    None
}

/// The ERROR code the server answers `name` with.
fn error_for(server: &Server, opcode: Opcode, name: &[u8]) -> u16 {
    let socket = raw_client();
    send_request(&socket, server.addr(), opcode, name, &[]);
    let (reply, _) = receive(&socket, REPLY_DEADLINE).expect("an answer");
    match Packet::parse(&reply) {
        Ok(Packet::Error { code, .. }) => code,
        other => panic!("expected an ERROR for {name:?}, got {other:?}"),
    }
}

fn ack(block: u16) -> Vec<u8> {
    let mut buf = Vec::new();
    packet::write_ack(&mut buf, block);
    buf
}

// ---- real clients ---------------------------------------------------------------------------

#[test]
fn tftp_hpa_fetches_a_loader_byte_for_byte() {
    let server = Server::start();
    let out = server.root.out("hpa.bin");
    let (ok, output) = tftp_hpa(&server, LOADER, &out);
    assert!(ok, "tftp-hpa failed: {output}");
    assert!(std::fs::read(&out).expect("the fetched file") == server.loader());
    server.wait_for_count("transfer", "complete", 1, REPLY_DEADLINE);
    assert_eq!(server.stats.get("transfer", "complete"), 1);
}

#[test]
fn tftp_hpa_with_a_leading_slash_gets_the_file_from_the_root() {
    let server = Server::start();
    let out = server.root.out("slash.efi");
    let (ok, output) = tftp_hpa(&server, "/sub/inner.efi", &out);
    assert!(ok, "tftp-hpa failed: {output}");
    assert_eq!(std::fs::read(&out).expect("the fetched file"), b"inner");
}

#[test]
fn tftp_hpa_is_told_when_a_file_is_missing() {
    let server = Server::start();
    let out = server.root.out("missing.bin");
    let (_, output) = tftp_hpa(&server, "missing.bin", &out);
    assert!(
        output.contains("File not found") || output.contains("file not found"),
        "{output}"
    );
    server.wait_for_count("file", "not_found", 1, REPLY_DEADLINE);
}

#[test]
fn atftp_with_blksize_and_windowsize_fetches_a_loader_byte_for_byte() {
    let server = Server::start();
    let tsize = format!("tsize: {LOADER_LEN}");
    // atftp's options, and what its trace must show our OACK granting.
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["blksize 1468", "windowsize 8"],
            &["blksize: 1468", "windowsize: 8"],
        ),
        (&["blksize 1468"], &["blksize: 1468"]),
        (
            &["windowsize 16", "tsize enable"],
            &["windowsize: 16", &tsize],
        ),
        // A window of 65464-byte blocks is bounded in bytes.
        (
            &["blksize 65464", "windowsize 4"],
            &["blksize: 65464", "windowsize: 2"],
        ),
        (&[], &[]),
    ];
    for (i, (options, granted)) in cases.iter().enumerate() {
        let out = server.root.out(&format!("atftp-{i}.bin"));
        let mut with_trace = vec!["--trace"];
        with_trace.extend_from_slice(options);
        let (ok, output) = atftp(&server, LOADER, &out, &with_trace);
        assert!(ok, "atftp {options:?} failed: {output}");
        assert!(
            std::fs::read(&out).expect("the fetched file") == server.loader(),
            "atftp {options:?} got a different file"
        );
        let oack = output.lines().find(|l| l.contains("received OACK"));
        match oack {
            Some(line) => {
                for option in *granted {
                    assert!(line.contains(option), "{option:?} not granted: {line}");
                }
            }
            None => assert!(granted.is_empty(), "no OACK for {options:?}"),
        }
    }
    server.wait_for_count("transfer", "complete", cases.len() as u64, REPLY_DEADLINE);
}

#[test]
fn tftp_hpa_and_atftp_fetch_a_file_past_the_block_number_rollover() {
    // 65538 blocks of 512 bytes: block numbers go 65535, 0, 1, 2 on the wire.
    let server = Server::start();
    let big = contents(32 * 1024 * 1024 + 1000);
    std::fs::write(server.root.path().join("big.img"), &big).expect("writing big.img");
    let out = server.root.out("big-hpa.img");
    let (ok, output) = tftp_hpa(&server, "big.img", &out);
    assert!(ok, "tftp-hpa failed: {output}");
    assert!(
        std::fs::read(&out).expect("fetched") == big,
        "tftp-hpa got a different file"
    );
    let out = server.root.out("big-atftp.img");
    let (ok, output) = atftp(&server, "big.img", &out, &[]);
    assert!(ok, "atftp failed: {output}");
    assert!(
        std::fs::read(&out).expect("fetched") == big,
        "atftp got a different file"
    );
}

#[test]
fn atftp_cannot_write_to_the_tftp_server() {
    let server = Server::start();
    let local = server.root.out("upload.bin");
    std::fs::write(&local, b"data").expect("a file to upload");
    let (ok, output) = run_client(
        Command::new("atftp")
            .args(["--put", "--remote-file", "upload.bin", "--local-file"])
            .arg(&local)
            .args(["127.0.0.1", &server.port.to_string()]),
    );
    assert!(!ok, "the upload succeeded: {output}");
    assert!(!server.root.path().join("upload.bin").exists());
    assert_eq!(server.stats.get("refused", "write_request"), 1);
}

// ---- the protocol, packet by packet -------------------------------------------------------

#[test]
fn a_tftp_write_request_gets_an_access_violation() {
    let server = Server::start();
    assert_eq!(error_for(&server, Opcode::Wrq, b"new.bin"), 2);
}

#[test]
fn tftp_traversal_attempts_are_refused_and_missing_files_are_not_found() {
    let server = Server::start();
    for refused in [
        &b"../secret"[..],
        b"sub/../../secret",
        b"//etc/passwd",
        b"sub\\inner.efi",
        b"escape",
        b"sub",
    ] {
        assert_eq!(
            error_for(&server, Opcode::Rrq, refused),
            2,
            "{}",
            String::from_utf8_lossy(refused)
        );
    }
    assert_eq!(error_for(&server, Opcode::Rrq, b"missing.bin"), 1);
    assert_eq!(
        error_for(&server, Opcode::Rrq, b"/etc/passwd"),
        1,
        "the root is /"
    );

    // A NUL inside the name ends it; what follows is read as the mode and refused.
    let socket = raw_client();
    socket
        .send_to(b"\x00\x01../secret\0.efi\0octet\0", server.addr())
        .expect("send");
    let (reply, _) = receive(&socket, REPLY_DEADLINE).expect("an answer");
    assert!(matches!(
        Packet::parse(&reply),
        Ok(Packet::Error { code: 4, .. })
    ));
}

#[test]
fn an_unknown_tftp_opcode_gets_error_4_and_an_error_gets_nothing() {
    let server = Server::start();
    let socket = raw_client();
    socket
        .send_to(b"\x00\x2aquestion", server.addr())
        .expect("send");
    let (reply, _) = receive(&socket, REPLY_DEADLINE).expect("an answer");
    assert!(matches!(
        Packet::parse(&reply),
        Ok(Packet::Error { code: 4, .. })
    ));
    let mut error = Vec::new();
    packet::write_error(&mut error, ErrorCode::NotDefined, "hello");
    socket.send_to(&error, server.addr()).expect("send");
    assert_eq!(receive(&socket, SILENCE), None);
}

#[test]
fn tftp_options_are_clamped_and_the_oack_refused_with_error_8_ends_the_transfer() {
    let server = Server::start();
    let socket = raw_client();
    send_request(
        &socket,
        server.addr(),
        Opcode::Rrq,
        LOADER.as_bytes(),
        &[
            TftpOption::new("blksize", 70_000),
            TftpOption::new("windowsize", 1000),
            TftpOption::new("tsize", 0),
            TftpOption::new("timeout", 2),
            TftpOption::new("x-vendor", "whatever"),
        ],
    );
    let (reply, tid) = receive(&socket, REPLY_DEADLINE).expect("an OACK");
    assert_ne!(tid.port(), server.port, "the transfer has its own port");
    let Ok(Packet::Oack(options)) = Packet::parse(&reply) else {
        panic!("expected an OACK, got {:?}", Packet::parse(&reply));
    };
    // Loopback's MTU (65536) leaves RFC 2348's 65464 as the ceiling, and a window of such
    // blocks is bounded in bytes.
    assert_eq!(
        options,
        [
            TftpOption::new("blksize", 65464),
            TftpOption::new("windowsize", 2),
            TftpOption::new("tsize", LOADER_LEN),
            TftpOption::new("timeout", 2),
        ]
    );
    let mut refuse = Vec::new();
    packet::write_error(&mut refuse, ErrorCode::OptionsRefused, "no");
    socket.send_to(&refuse, tid).expect("send");
    server.wait_for_count("transfer", "options_refused", 1, REPLY_DEADLINE);
    assert_eq!(receive(&socket, SILENCE), None, "nothing after a refusal");
}

#[test]
fn a_tftp_packet_from_an_unexpected_port_gets_error_5_and_the_transfer_completes() {
    let server = Server::start();
    let client = raw_client();
    let intruder = raw_client();
    send_request(&client, server.addr(), Opcode::Rrq, SMALL.as_bytes(), &[]);
    let mut received = Vec::new();
    let mut block = 1u16;
    loop {
        let (reply, tid) = receive(&client, REPLY_DEADLINE).expect("DATA");
        let Ok(Packet::Data {
            block: got,
            payload,
        }) = Packet::parse(&reply)
        else {
            panic!("expected DATA, got {:?}", Packet::parse(&reply));
        };
        assert_eq!(got, block);
        received.extend_from_slice(payload);
        if block == 3 {
            intruder.send_to(&ack(3), tid).expect("send");
            let (answer, from) = receive(&intruder, REPLY_DEADLINE).expect("ERROR 5");
            assert_eq!(from, tid);
            assert!(matches!(
                Packet::parse(&answer),
                Ok(Packet::Error { code: 5, .. })
            ));
        }
        client.send_to(&ack(block), tid).expect("send");
        if payload.len() < 512 {
            break;
        }
        block += 1;
    }
    assert!(received == contents(SMALL_LEN));
    server.wait_for_count("transfer", "complete", 1, REPLY_DEADLINE);
}

#[test]
fn a_retransmitted_tftp_request_does_not_start_a_second_transfer() {
    let server = Server::start();
    let client = raw_client();
    for _ in 0..3 {
        send_request(&client, server.addr(), Opcode::Rrq, SMALL.as_bytes(), &[]);
    }
    let (first, tid) = receive(&client, REPLY_DEADLINE).expect("DATA 1");
    assert!(matches!(
        Packet::parse(&first),
        Ok(Packet::Data { block: 1, .. })
    ));
    assert_eq!(
        receive(&client, SILENCE),
        None,
        "a second transfer answered"
    );
    assert_eq!(server.stats.get("dropped", "duplicate"), 2);
    client.send_to(&ack(1), tid).expect("send");
    assert!(receive(&client, REPLY_DEADLINE).is_some_and(|(_, from)| from == tid));
}

/// PXELINUX and GRUB ask for one config name after another from one port, the next RRQ
/// leaving as soon as the last ERROR (or final ACK) arrives. A request for another file from a
/// client port whose transfer is still held is a new request, not a retransmission: before,
/// it was dropped as one, and under load lpxelinux lost its `pxelinux.cfg/01-<mac>` that way.
#[test]
fn the_next_file_from_the_same_client_port_is_served_while_its_last_transfer_runs() {
    let server = Server::start();
    let client = raw_client();
    send_request(&client, server.addr(), Opcode::Rrq, SMALL.as_bytes(), &[]);
    let (first, small_tid) = receive(&client, REPLY_DEADLINE).expect("DATA 1 of the first file");
    assert!(matches!(
        Packet::parse(&first),
        Ok(Packet::Data { block: 1, .. })
    ));
    // The first transfer waits for its ACK; the same port asks for another file.
    send_request(&client, server.addr(), Opcode::Rrq, LOADER.as_bytes(), &[]);
    let (second, loader_tid) = receive(&client, REPLY_DEADLINE).expect("DATA 1 of the second file");
    assert!(matches!(
        Packet::parse(&second),
        Ok(Packet::Data { block: 1, .. })
    ));
    assert_ne!(loader_tid, small_tid, "each transfer has its own TID");
    assert_eq!(server.stats.get("dropped", "duplicate"), 0);
    // And right after an ERROR, the next name is answered at once too.
    for _ in 0..20 {
        send_request(
            &client,
            server.addr(),
            Opcode::Rrq,
            b"pxelinux.cfg/missing",
            &[],
        );
        // The two transfers above may retransmit their DATA 1 meanwhile: not the answer.
        let error = std::iter::from_fn(|| receive(&client, REPLY_DEADLINE))
            .map(|(packet, _)| packet)
            .find(|packet| !matches!(Packet::parse(packet), Ok(Packet::Data { .. })))
            .expect("ERROR 1");
        assert!(matches!(
            Packet::parse(&error),
            Ok(Packet::Error { code: 1, .. })
        ));
    }
    assert_eq!(server.stats.get("dropped", "duplicate"), 0);
}

#[test]
fn requests_on_an_interface_that_is_not_served_get_no_tftp_answer() {
    let server = Server::start_with(|_| {}, &["xdpboot-none0"]);
    let client = raw_client();
    send_request(&client, server.addr(), Opcode::Rrq, SMALL.as_bytes(), &[]);
    assert_eq!(receive(&client, SILENCE), None);
    assert_eq!(server.stats.get("dropped", "not_served"), 1);
}

#[test]
fn a_silent_tftp_client_is_cut_off_after_its_retries() {
    let server = Server::start_with(|c| c.max_retries = 2, &["lo"]);
    let client = raw_client();
    send_request(
        &client,
        server.addr(),
        Opcode::Rrq,
        SMALL.as_bytes(),
        &[TftpOption::new("timeout", 1)],
    );
    let started = Instant::now();
    let mut oacks = 0;
    while let Some((reply, _)) = receive(&client, Duration::from_millis(1600)) {
        assert!(matches!(Packet::parse(&reply), Ok(Packet::Oack(_))));
        oacks += 1;
        assert!(oacks <= 3, "more than 1 + max_retries OACKs");
    }
    assert_eq!(oacks, 3, "the OACK and two retransmissions");
    server.wait_for_count("transfer", "timed_out", 1, REPLY_DEADLINE);
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn over_the_transfer_limit_tftp_requests_are_dropped_and_served_on_retransmission() {
    let server = Server::start_with(
        |c| {
            c.max_transfers = 1;
            c.max_retries = 1;
        },
        &["lo"],
    );
    // A client that takes the only slot and then goes silent (cut off after 2 s).
    let silent = raw_client();
    send_request(&silent, server.addr(), Opcode::Rrq, SMALL.as_bytes(), &[]);
    assert!(receive(&silent, REPLY_DEADLINE).is_some());

    let client = raw_client();
    send_request(&client, server.addr(), Opcode::Rrq, SMALL.as_bytes(), &[]);
    assert_eq!(
        receive(&client, SILENCE),
        None,
        "no answer while busy (not an ERROR)"
    );
    assert_eq!(server.stats.get("dropped", "busy"), 1);

    // Retransmitting the request, as firmware does, gets it served once the slot frees.
    let end = Instant::now() + Duration::from_secs(10);
    let data = loop {
        assert!(
            Instant::now() < end,
            "never served: {:?}",
            server.stats.snapshot()
        );
        send_request(&client, server.addr(), Opcode::Rrq, SMALL.as_bytes(), &[]);
        if let Some((reply, _)) = receive(&client, Duration::from_millis(500)) {
            break reply;
        }
    };
    assert!(matches!(
        Packet::parse(&data),
        Ok(Packet::Data { block: 1, .. })
    ));
    assert_eq!(server.stats.get("transfer", "timed_out"), 1);
}

// ---- many transfers on one runtime --------------------------------------------------------

/// How an in-process client misbehaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Good,
    /// Ignores the first copy of DATA 2 (as if lost), so the server must retransmit it.
    LosesBlock2,
    /// Sends the request and never acknowledges anything.
    Silent,
}

/// Fetches `name` with blksize 1468 over a fresh socket; returns the bytes. Like a real
/// client it sends its last packet again after a second of silence (a thousand requests at
/// once can overflow the server port's receive buffer).
async fn fetch(server: SocketAddrV4, name: &str, behaviour: Behaviour) -> Vec<u8> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut last = Vec::new();
    packet::write_request(
        &mut last,
        Opcode::Rrq,
        name.as_bytes(),
        "octet",
        &[TftpOption::new("blksize", 1468)],
    );
    let mut peer = server;
    socket.send_to(&last, peer).await.expect("send");
    let mut incoming = vec![0u8; 2048];
    let mut data = Vec::new();
    let mut expected = 1u16;
    let mut dropped_once = false;
    let mut silences = 0;
    loop {
        let received =
            tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut incoming)).await;
        let Ok(received) = received else {
            silences += 1;
            assert!(silences < 20, "the server stopped answering");
            socket.send_to(&last, peer).await.expect("send");
            continue;
        };
        let (len, SocketAddr::V4(from)) = received.expect("recv") else {
            continue;
        };
        silences = 0;
        if behaviour == Behaviour::Silent {
            return data;
        }
        peer = from;
        let reply = match Packet::parse(&incoming[..len]) {
            Ok(Packet::Oack(_)) => 0,
            Ok(Packet::Data { block, payload }) => {
                if block == 2 && behaviour == Behaviour::LosesBlock2 && !dropped_once {
                    dropped_once = true;
                    continue;
                }
                if block != expected {
                    continue;
                }
                data.extend_from_slice(payload);
                expected = expected.wrapping_add(1);
                if payload.len() < 1468 {
                    packet::write_ack(&mut last, block);
                    socket.send_to(&last, peer).await.expect("send");
                    return data;
                }
                block
            }
            other => panic!("unexpected {other:?}"),
        };
        packet::write_ack(&mut last, reply);
        socket.send_to(&last, peer).await.expect("send");
    }
}

#[test]
fn a_thousand_concurrent_tftp_transfers_finish_while_lossy_and_silent_clients_wait_on_their_timers()
{
    let server = Server::start();
    let addr = server.addr();
    let expected = contents(SMALL_LEN);
    let started = Instant::now();
    server.runtime.block_on(async {
        let mut clients = tokio::task::JoinSet::new();
        for i in 0..1000 {
            let behaviour = match i % 100 {
                0 => Behaviour::Silent,
                1 => Behaviour::LosesBlock2,
                _ => Behaviour::Good,
            };
            clients.spawn(async move { (behaviour, fetch(addr, SMALL, behaviour).await) });
        }
        while let Some(done) = clients.join_next().await {
            let (behaviour, data) = done.expect("a client task");
            if behaviour != Behaviour::Silent {
                assert!(data == expected, "a client got a different file");
            }
        }
    });
    // The good clients did not wait for the lossy ones' 1 s retransmission timers, let alone
    // the silent ones' 6 s of retries: everything but the silent ten is done in seconds.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    server.wait_for_count("transfer", "complete", 990, REPLY_DEADLINE);
    assert!(server.stats.get("dropped", "busy") == 0);
}

// ---- the log --------------------------------------------------------------------------------

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Runs `f` on a current-thread runtime with a subscriber capturing info-level events.
fn with_captured_log<T>(f: impl Future<Output = T>) -> (T, String) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let value = tracing::subscriber::with_default(subscriber, || runtime.block_on(f));
    let log = String::from_utf8_lossy(&captured.0.lock().expect("log buffer")).into_owned();
    (value, log)
}

#[test]
fn every_tftp_transfer_is_logged_with_client_file_bytes_and_duration() {
    let root = Root::new();
    let ((), log) = with_captured_log(async {
        let interfaces = Arc::new(Interfaces::default());
        interfaces.refresh().expect("interfaces");
        let server = TftpServer::bind(
            TftpConfig::new(root.path(), 0),
            interfaces,
            vec!["lo".to_owned()],
        )
        .expect("bind");
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, server.port());
        let serving = tokio::spawn(server.serve());
        let data = fetch(addr, SMALL, Behaviour::Good).await;
        assert_eq!(data.len(), SMALL_LEN);
        // The log line follows the final ACK; give the transfer task a moment to write it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        serving.abort();
    });
    let line = log
        .lines()
        .find(|l| l.contains("tftp transfer"))
        .unwrap_or_else(|| panic!("no transfer line in:\n{log}"));
    for field in [
        "client=127.0.0.1:",
        "file=\"small.efi\"",
        &format!("bytes={SMALL_LEN}"),
        "duration_ms=",
        "blksize=1468",
        "windowsize=1",
        "retransmits=0",
        "outcome=\"complete\"",
    ] {
        assert!(line.contains(field), "{field:?} missing from {line}");
    }
}
