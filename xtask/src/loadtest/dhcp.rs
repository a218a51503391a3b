//! The simulated nodes' DHCP client. Many nodes share two sockets, made in the client
//! namespace on the server's link:
//! - broadcasts (DISCOVERs) leave as whole Ethernet frames from the node's own MAC, from
//!   0.0.0.0:68 to 255.255.255.255:67, on `loadgen`'s AF_PACKET socket, as a PXE ROM sends
//!   them (a server that sheds floods per MAC sees each node as itself);
//! - unicast requests to port 4011 leave from the client address's port 68, as iPXE sends
//!   them, on `loadgen`'s UDP socket on port 68, where every reply arrives too (broadcast
//!   OFFERs and unicast ACKs alike).
//!
//! Replies are matched to the waiting node by xid, chaddr and message type; anything else
//! (late duplicates, answers to a retransmission after the first one) counts as a stray.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use boot_common::wire::MacAddr;
use boot_common::wire::ethernet::VlanTags;
use boot_common::wire::pxe::{self, BootItem, sub_option};
use boot_tests::{BootRequest, DHCP_CLIENT_PORT, Received};
use dhcproto::v4::{self, MessageType};
use dhcproto::{Decodable, Decoder};
use tokio::sync::oneshot;

use crate::loadgen;

/// Receive buffer per reply: DHCP replies are at most 576 bytes unless option 57 says more.
const RX_BUF_LEN: usize = 1536;
/// A full socket buffer (EAGAIN, ENOBUFS) is waited out this long per try ...
const SEND_BACKOFF: Duration = Duration::from_millis(1);
/// ... this many times before the send counts as failed.
const SEND_TRIES: u32 = 200;

/// The client namespace's sockets: made there (see [`boot_tests::NetNs::run`]), used from
/// anywhere.
pub(super) struct Sockets {
    packet: OwnedFd,
    udp: OwnedFd,
}

impl Sockets {
    /// Opens both sockets on `interface`; call in the client namespace.
    pub(super) fn open(interface: &str) -> anyhow::Result<Sockets> {
        let ifindex = nix::net::if_::if_nametoindex(interface)
            .with_context(|| format!("interface {interface} not found"))?;
        Ok(Sockets {
            packet: loadgen::packet_socket(ifindex)?,
            udp: loadgen::udp_socket(interface, Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT)?,
        })
    }
}

/// How a request goes out.
#[derive(Clone, Copy, Debug)]
pub(super) enum Sent {
    /// Broadcast from 0.0.0.0:68, as a client without an address.
    Broadcast,
    /// Unicast from the client address's port 68.
    Unicast(SocketAddrV4),
}

/// One request and how long to wait for its answer.
pub(super) struct Exchange<'a> {
    pub request: &'a BootRequest,
    pub sent: Sent,
    /// Wait per try.
    pub timeout: Duration,
    /// Tries after the first.
    pub retries: u32,
}

/// The shared client: cheap to clone.
#[derive(Clone)]
pub(super) struct DhcpClient {
    inner: Arc<Inner>,
}

struct Inner {
    packet: OwnedFd,
    udp: tokio::net::UdpSocket,
    pending: Mutex<HashMap<u32, Pending>>,
    strays: AtomicU64,
    /// Every OFFER and ACK that arrived, taken or not, by the server that sent it: an entry per
    /// server on the lab's segment (at most `--instances`).
    by_server: Mutex<HashMap<Ipv4Addr, ServerCounts>>,
}

/// The replies one server sent that reached the load generator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ServerCounts {
    pub offers: u64,
    pub acks: u64,
}

/// What the load generator's DHCP socket received over a storm.
#[derive(Clone, Debug, Default)]
pub(super) struct Counts {
    /// Replies that matched no waiting node: late answers to retransmissions, and with several
    /// instances every offer after a node's first.
    pub strays: u64,
    pub by_server: std::collections::BTreeMap<Ipv4Addr, ServerCounts>,
}

impl Counts {
    pub(super) fn offers(&self) -> u64 {
        self.by_server.values().map(|c| c.offers).sum()
    }

    pub(super) fn acks(&self) -> u64 {
        self.by_server.values().map(|c| c.acks).sum()
    }
}

/// A node waiting for its reply.
struct Pending {
    mac: MacAddr,
    wanted: MessageType,
    reply: oneshot::Sender<Received>,
}

impl DhcpClient {
    /// Takes over `sockets`; call inside the runtime.
    pub(super) fn new(sockets: Sockets) -> anyhow::Result<DhcpClient> {
        let udp = std::net::UdpSocket::from(sockets.udp);
        let udp = tokio::net::UdpSocket::from_std(udp).context("registering the DHCP socket")?;
        Ok(DhcpClient {
            inner: Arc::new(Inner {
                packet: sockets.packet,
                udp,
                pending: Mutex::new(HashMap::new()),
                strays: AtomicU64::new(0),
                by_server: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// What arrived so far.
    pub(super) fn counts(&self) -> Counts {
        Counts {
            strays: self.inner.strays.load(Ordering::Relaxed),
            by_server: self
                .inner
                .by_server
                .lock()
                .expect("the counts are only added to")
                .iter()
                .map(|(ip, c)| (*ip, *c))
                .collect(),
        }
    }

    /// Sends the request, again after each `timeout` up to `retries` times (keeping its xid,
    /// as firmware does), and returns the first matching reply.
    pub(super) async fn exchange(&self, exchange: Exchange<'_>) -> Result<Received, String> {
        let request = exchange.request;
        let wanted = match request.message_type {
            MessageType::Discover => MessageType::Offer,
            _ => MessageType::Ack,
        };
        // Broadcasts leave as whole frames from the node's MAC, unicasts as UDP payloads.
        let bytes = match exchange.sent {
            Sent::Broadcast => request.broadcast_frame(VlanTags::NONE),
            Sent::Unicast(_) => request.encode(),
        };
        let (tx, mut rx) = oneshot::channel();
        let previous = self.lock().insert(
            request.xid,
            Pending {
                mac: request.mac,
                wanted,
                reply: tx,
            },
        );
        debug_assert!(previous.is_none(), "xids are unique in a storm");
        let mut result = Err(format!(
            "no {wanted:?} after {} tries",
            exchange.retries + 1
        ));
        for _ in 0..=exchange.retries {
            if let Err(e) = self.send(&bytes, exchange.sent).await {
                result = Err(e);
                break;
            }
            match tokio::time::timeout(exchange.timeout, &mut rx).await {
                Ok(Ok(reply)) => {
                    result = Ok(reply);
                    break;
                }
                Ok(Err(_)) => break,
                Err(_) => {}
            }
        }
        self.lock().remove(&request.xid);
        result
    }

    /// Sends `bytes`: a UDP payload to a unicast address, a whole frame for a broadcast.
    async fn send(&self, bytes: &[u8], sent: Sent) -> Result<(), String> {
        match sent {
            Sent::Unicast(to) => self
                .inner
                .udp
                .send_to(bytes, to)
                .await
                .map(drop)
                .map_err(|e| format!("sending to {to}: {e}")),
            Sent::Broadcast => {
                for _ in 0..SEND_TRIES {
                    // SAFETY: a live descriptor and a buffer of the length given, only read.
                    let ret = unsafe {
                        libc::send(
                            self.inner.packet.as_raw_fd(),
                            bytes.as_ptr().cast(),
                            bytes.len(),
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if ret >= 0 {
                        return Ok(());
                    }
                    let err = std::io::Error::last_os_error();
                    match err.raw_os_error() {
                        Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => {
                            tokio::time::sleep(SEND_BACKOFF).await;
                        }
                        _ => return Err(format!("sending a broadcast frame: {err}")),
                    }
                }
                Err("the packet socket stayed full".to_owned())
            }
        }
    }

    /// Reads replies and hands each to the node waiting for it; runs until aborted.
    pub(super) async fn receive(self) {
        let mut buf = vec![0u8; RX_BUF_LEN];
        loop {
            let Ok((len, from)) = self.inner.udp.recv_from(&mut buf).await else {
                continue;
            };
            let bytes = &buf[..len];
            let (Ok(message), SocketAddr::V4(from)) =
                (v4::Message::decode(&mut Decoder::new(bytes)), from)
            else {
                self.inner.strays.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let server = message
                .opts()
                .get(v4::OptionCode::ServerIdentifier)
                .and_then(|o| match o {
                    v4::DhcpOption::ServerIdentifier(ip) => Some(*ip),
                    _ => None,
                })
                .unwrap_or(*from.ip());
            match message.opts().msg_type() {
                Some(MessageType::Offer) => self.count(server, |c| c.offers += 1),
                Some(MessageType::Ack) => self.count(server, |c| c.acks += 1),
                _ => {}
            }
            let mut pending = self.lock();
            let matches = pending.get(&message.xid()).is_some_and(|p| {
                message.chaddr().get(..6) == Some(&p.mac.octets()[..])
                    && message.opts().msg_type() == Some(p.wanted)
            });
            let waiting = if matches {
                pending.remove(&message.xid())
            } else {
                None
            };
            drop(pending);
            let Some(waiting) = waiting else {
                self.inner.strays.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let _ = waiting.reply.send(Received {
                from,
                // Not needed: the nodes match by xid.
                to: Ipv4Addr::UNSPECIFIED,
                len,
                bytes: bytes.to_vec(),
                message,
            });
        }
    }

    fn count(&self, server: Ipv4Addr, add: impl FnOnce(&mut ServerCounts)) {
        add(self
            .inner
            .by_server
            .lock()
            .expect("the counts are only added to")
            .entry(server)
            .or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Pending>> {
        self.inner
            .pending
            .lock()
            .expect("the pending table is never left half-changed")
    }
}

/// Option 43 of a PXE boot-server request for the first item of `offer`'s boot menu (sub-option
/// 71: type, layer 0; PXE 2.1 §2.2.5), as a BIOS ROM sends after a menu OFFER; `None` when the
/// OFFER has no menu.
pub(super) fn boot_item(offer: &Received) -> Option<Vec<u8>> {
    let options = offer.vendor_options()?;
    let menu = pxe::sub_options(&options)
        .find(sub_option::BOOT_MENU)
        .ok()
        .flatten()?;
    // Items: type (2 bytes), description length, description.
    let [high, low, ..] = *menu else {
        return None;
    };
    let item = BootItem {
        item_type: u16::from_be_bytes([high, low]),
        layer: 0,
    };
    let mut option = vec![sub_option::BOOT_ITEM, 4];
    option.extend_from_slice(&item.to_bytes());
    // A sub-option END closes the list, as iPXE's PXEBS request has it (tests/data/README.md).
    option.push(255);
    Some(option)
}

/// A random number for the storm's MACs and xids.
pub(super) fn random_u32() -> u32 {
    loadgen::rand_u32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::DhcpOption;

    fn offer_with_options(options: Vec<u8>) -> Received {
        let mut message = v4::Message::default();
        message
            .opts_mut()
            .insert(DhcpOption::VendorExtensions(options));
        Received {
            from: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 67),
            to: Ipv4Addr::BROADCAST,
            message,
            len: 0,
            bytes: Vec::new(),
        }
    }

    #[test]
    fn a_menu_offer_gets_a_request_for_its_first_item() {
        // dnsmasq's BIOS proxy OFFER (tests/data/README.md, bios-menu): discovery control,
        // prompt, boot servers, menu.
        let options = [
            &[6, 1, 3][..],
            &[10, 4, 0, b'P', b'X', b'E'],
            &[8, 7, 0x80, 0, 1, 198, 18, 0, 1],
            &[9, 7, 0x80, 0, 4, b'b', b'o', b'o', b't'],
            &[255],
        ]
        .concat();
        assert_eq!(
            boot_item(&offer_with_options(options)),
            Some(vec![71, 4, 0x80, 0, 0, 0, 255])
        );
    }

    #[test]
    fn an_offer_without_a_menu_gets_a_plain_request() {
        // xdpboot's BIOS OFFER: discovery control 8, "boot file in this offer".
        assert_eq!(boot_item(&offer_with_options(vec![6, 1, 8, 255])), None);
    }
}
