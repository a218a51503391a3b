//! The simulated nodes' TFTP client: RFC 1350 read requests with the blksize option
//! (RFC 2347/2348), one block in flight (lockstep, as PXE ROMs fetch), bounded retries.
//!
//! Every transfer gets a fresh UDP socket (its port is the transfer's identity, RFC 1350 §4)
//! from [`SocketFactory`], a thread in the client namespace, so TFTP leaves from the server's
//! link like a ROM's while the nodes themselves run elsewhere. `cargo xtask bench-tftp`'s
//! concurrent case runs the same client ([`fetch_on`]) on sockets it makes itself.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// TFTP's well-known port.
const TFTP_PORT: u16 = 69;
/// Wait for the next packet before sending the last one again (RFC 1350 §2; ROMs use 1–4 s).
const PACKET_TIMEOUT: Duration = Duration::from_secs(1);
/// Times the last packet is sent again before the transfer fails.
const MAX_RETRIES: u32 = 5;
/// Longest one transfer may take.
const TRANSFER_LIMIT: Duration = Duration::from_secs(120);
/// RFC 1350's block size, used when the server ignores the blksize option.
const DEFAULT_BLKSIZE: usize = 512;

const RRQ: u16 = 1;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

type SocketRequest = oneshot::Sender<std::io::Result<std::net::UdpSocket>>;

/// Makes UDP sockets in the client namespace for transfers running anywhere.
pub(super) struct SocketFactory {
    requests: std::sync::mpsc::Sender<SocketRequest>,
}

impl SocketFactory {
    /// Starts the factory's thread in `ns`; it ends when the factory is dropped.
    pub(super) fn start(ns: &boot_tests::NetNs) -> anyhow::Result<SocketFactory> {
        let path = std::path::Path::new("/run/netns").join(ns.name());
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let (requests, incoming) = std::sync::mpsc::channel::<SocketRequest>();
        let (ready, entered) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("tftp-sockets".into())
            .spawn(move || {
                let entered_ns = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET);
                let ok = entered_ns.is_ok();
                let _ = ready.send(entered_ns);
                if !ok {
                    return;
                }
                while let Ok(reply) = incoming.recv() {
                    let socket =
                        std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
                            .and_then(|s| s.set_nonblocking(true).map(|()| s));
                    let _ = reply.send(socket);
                }
            })
            .context("starting the TFTP socket thread")?;
        entered
            .recv()
            .context("the TFTP socket thread ended")?
            .with_context(|| format!("entering network namespace {}", ns.name()))?;
        Ok(SocketFactory { requests })
    }

    async fn socket(&self) -> Result<tokio::net::UdpSocket, String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .map_err(|_| "the TFTP socket thread ended".to_owned())?;
        let socket = rx
            .await
            .map_err(|_| "the TFTP socket thread ended".to_owned())?
            .map_err(|e| format!("opening a TFTP socket: {e}"))?;
        tokio::net::UdpSocket::from_std(socket).map_err(|e| format!("registering it: {e}"))
    }

    /// Reads `file` from `server` asking for `blksize`-byte blocks; returns the bytes read.
    pub(super) async fn fetch(
        &self,
        server: Ipv4Addr,
        file: &str,
        blksize: u16,
    ) -> Result<u64, String> {
        let socket = self.socket().await?;
        fetch_on(&socket, SocketAddrV4::new(server, TFTP_PORT), file, blksize).await
    }
}

/// Reads `file` from the TFTP server listening on `server`, on `socket` (a fresh one per
/// transfer), within [`TRANSFER_LIMIT`]; returns the bytes read.
pub(crate) async fn fetch_on(
    socket: &tokio::net::UdpSocket,
    server: SocketAddrV4,
    file: &str,
    blksize: u16,
) -> Result<u64, String> {
    tokio::time::timeout(TRANSFER_LIMIT, transfer(socket, server, file, blksize))
        .await
        .unwrap_or_else(|_| Err(format!("{file}: not done within {TRANSFER_LIMIT:?}")))
}

/// One read transfer on `socket`.
async fn transfer(
    socket: &tokio::net::UdpSocket,
    server: SocketAddrV4,
    file: &str,
    blksize: u16,
) -> Result<u64, String> {
    let mut rrq = RRQ.to_be_bytes().to_vec();
    for field in [file, "octet", "blksize", &blksize.to_string()] {
        rrq.extend_from_slice(field.as_bytes());
        rrq.push(0);
    }
    let mut last_sent = rrq;
    let mut to = server;
    // The server's transfer port, once its first answer came (RFC 1350 §4).
    let mut tid: Option<u16> = None;
    let mut block_size = DEFAULT_BLKSIZE;
    let mut expected: u16 = 1;
    let mut received: u64 = 0;
    let mut retries = 0;
    let mut buf = vec![0u8; usize::from(blksize).max(DEFAULT_BLKSIZE) + 4];
    socket
        .send_to(&last_sent, to)
        .await
        .map_err(|e| format!("sending the read request: {e}"))?;
    let mut deadline = Instant::now() + PACKET_TIMEOUT;
    loop {
        let (len, from) = match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => return Err(format!("receiving: {e}")),
            Err(_) => {
                retries += 1;
                if retries > MAX_RETRIES {
                    let when = if tid.is_none() {
                        "to its read request"
                    } else {
                        "mid-transfer"
                    };
                    return Err(format!(
                        "{file}: no answer {when} after {MAX_RETRIES} retries"
                    ));
                }
                socket
                    .send_to(&last_sent, to)
                    .await
                    .map_err(|e| format!("sending again: {e}"))?;
                deadline = Instant::now() + PACKET_TIMEOUT;
                continue;
            }
        };
        let SocketAddr::V4(from) = from else { continue };
        if from.ip() != server.ip() || tid.is_some_and(|port| port != from.port()) || len < 4 {
            continue;
        }
        let packet = &buf[..len];
        let opcode = u16::from_be_bytes([packet[0], packet[1]]);
        let number = u16::from_be_bytes([packet[2], packet[3]]);
        match opcode {
            OACK if tid.is_none() => {
                tid = Some(from.port());
                to = from;
                block_size = negotiated_blksize(&packet[2..]).unwrap_or(DEFAULT_BLKSIZE);
                last_sent = ack(0);
            }
            DATA if number == expected => {
                if tid.is_none() {
                    // No OACK: the server ignored the options (RFC 2347 §3).
                    tid = Some(from.port());
                    to = from;
                }
                let data = len - 4;
                received += data as u64;
                last_sent = ack(number);
                if data < block_size {
                    // The last block (RFC 1350 §6); no dally: a lost final ACK makes the
                    // server retransmit to a socket that is gone, which it bounds itself.
                    socket
                        .send_to(&last_sent, to)
                        .await
                        .map_err(|e| format!("sending the last ACK: {e}"))?;
                    return Ok(received);
                }
                expected = expected.wrapping_add(1);
            }
            DATA if number == expected.wrapping_sub(1) => {
                // Our ACK was lost: the server sent the block again; so do we the ACK.
            }
            ERROR => {
                let message = packet[4..].split(|&b| b == 0).next().unwrap_or_default();
                return Err(format!(
                    "{file}: TFTP error {number}: {}",
                    String::from_utf8_lossy(message)
                ));
            }
            _ => continue,
        }
        socket
            .send_to(&last_sent, to)
            .await
            .map_err(|e| format!("sending an ACK: {e}"))?;
        retries = 0;
        deadline = Instant::now() + PACKET_TIMEOUT;
    }
}

fn ack(block: u16) -> Vec<u8> {
    let mut packet = ACK.to_be_bytes().to_vec();
    packet.extend_from_slice(&block.to_be_bytes());
    packet
}

/// The blksize an OACK's options (name, NUL, value, NUL, …) grant.
fn negotiated_blksize(options: &[u8]) -> Option<usize> {
    let mut fields = options.split(|&b| b == 0);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if name.eq_ignore_ascii_case(b"blksize") {
            return std::str::from_utf8(value).ok()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oack_grants_its_blksize() {
        assert_eq!(
            negotiated_blksize(b"tsize\x00123\x00BLKSIZE\x001468\x00"),
            Some(1468)
        );
        assert_eq!(negotiated_blksize(b"tsize\x00123\x00"), None);
    }
}
