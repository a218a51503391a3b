//! The UDP-socket backend: for hosts where XDP is unavailable.
//!
//! One socket on 0.0.0.0:67 and one on 0.0.0.0:4011, each with IP_PKTINFO so every datagram
//! tells us the interface it arrived on and the address it was sent to (ip(7)). Replies leave
//! through the same interface (IP_PKTINFO on send) from the right source port: iPXE accepts a
//! proxy offer only from port 67 and an ACK only from port 4011 (iPXE `dhcp.c`).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::service::{Answer, Service};
use crate::dhcp::classify::MAX_REQUEST_LEN;
use crate::dhcp::{Destination, ServerPort};

/// Errors setting up or running the UDP backend.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error(
        "UDP port {port} is already held by another server that does not share it (for port 67 \
         typically a DHCP server bound to the wildcard address, such as dnsmasq without \
         --bind-interfaces). Run xdpboot with --backend xdp, which answers boot requests \
         without binding port 67, or make that server bind to its interfaces"
    )]
    PortInUse { port: u16 },
    #[error("binding UDP port {port}: {source}")]
    Bind { port: u16, source: io::Error },
    #[error("UDP port {port}: {source}")]
    Io { port: u16, source: io::Error },
}

/// A bound DHCP or PXE socket.
pub struct UdpSocket {
    port: ServerPort,
    fd: AsyncFd<Socket>,
}

impl UdpSocket {
    /// Binds 0.0.0.0:`port`. SO_REUSEADDR lets us share the port with a DHCP server that also
    /// sets it (dnsmasq with --bind-interfaces does); one that binds the wildcard without it
    /// keeps the port to itself, and we say so.
    pub fn bind(port: ServerPort) -> Result<UdpSocket, UdpError> {
        let number = port.number();
        let io = |source| UdpError::Io {
            port: number,
            source,
        };
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(io)?;
        socket.set_reuse_address(true).map_err(io)?;
        socket.set_broadcast(true).map_err(io)?;
        socket.set_nonblocking(true).map_err(io)?;
        setsockopt(&socket, sockopt::Ipv4PacketInfo, &true).map_err(|e| io(e.into()))?;
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, number));
        socket.bind(&addr.into()).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                UdpError::PortInUse { port: number }
            } else {
                UdpError::Bind {
                    port: number,
                    source,
                }
            }
        })?;
        let fd = super::register(socket).map_err(io)?;
        Ok(UdpSocket { port, fd })
    }

    /// Serves requests until an I/O error other than a transient one.
    pub async fn serve(self, service: Arc<Service>) -> Result<(), UdpError> {
        let number = self.port.number();
        let mut buf = vec![0u8; MAX_REQUEST_LEN + 1];
        loop {
            let mut guard = self.fd.readable().await.map_err(|source| UdpError::Io {
                port: number,
                source,
            })?;
            loop {
                let datagram = match receive(guard.get_inner(), &mut buf) {
                    Ok(Some(d)) => d,
                    Ok(None) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => {
                        // A single bad datagram or a transient error must not stop the server.
                        tracing::debug!(port = number, error = %e, "recvmsg failed");
                        continue;
                    }
                };
                let bytes = &buf[..datagram.len];
                let Some(answer) = service.handle(
                    self.port,
                    datagram.ifindex,
                    datagram.source,
                    datagram.destination,
                    bytes,
                ) else {
                    continue;
                };
                if let Err(e) = self.send(&answer) {
                    service.stats.record_send_failure();
                    tracing::warn!(port = number, error = %e, "sending reply failed");
                }
            }
        }
    }

    fn send(&self, answer: &Answer) -> io::Result<()> {
        let (to, ifindex) = match answer.reply.destination {
            Destination::Broadcast => (
                SocketAddrV4::new(Ipv4Addr::BROADCAST, boot_common::DHCP_CLIENT_PORT),
                answer.ifindex,
            ),
            Destination::Unicast(to) => (to, answer.ifindex),
            // The relay is reached by routing, not necessarily through the ingress interface.
            Destination::Relay(giaddr) => {
                (SocketAddrV4::new(giaddr, boot_common::DHCP_SERVER_PORT), 0)
            }
        };
        send_from(
            self.fd.get_ref(),
            &answer.reply.bytes,
            to,
            answer.server,
            ifindex,
        )
    }
}

/// Sends `bytes` to `to` from our address `source`, out of interface `ifindex` (0: by route).
/// ip(7): ipi_ifindex picks the outgoing interface (so a broadcast leaves where the request
/// came in), ipi_spec_dst the source address.
pub(crate) fn send_from(
    socket: &Socket,
    bytes: &[u8],
    to: SocketAddrV4,
    source: Ipv4Addr,
    ifindex: u32,
) -> io::Result<()> {
    let info = libc::in_pktinfo {
        ipi_ifindex: ifindex as libc::c_int,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(source).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
    let iov = [IoSlice::new(bytes)];
    let to = SockaddrIn::from(to);
    sendmsg(
        socket.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::empty(),
        Some(&to),
    )?;
    Ok(())
}

/// One received datagram's metadata; the payload is in the caller's buffer.
pub(crate) struct Datagram {
    pub(crate) len: usize,
    pub(crate) source: SocketAddrV4,
    pub(crate) destination: Ipv4Addr,
    pub(crate) ifindex: u32,
}

/// Receives one datagram from a socket with IP_PKTINFO set; `Ok(None)` when the socket is
/// drained. Oversized datagrams are truncated by the kernel to `buf.len()` (one more than we
/// accept), so the core sees them as oversized and drops them.
pub(crate) fn receive(socket: &Socket, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let msg = match recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(msg) => msg,
        Err(nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(source) = msg.address else {
        return Err(io::Error::other("datagram without a source address"));
    };
    let mut info = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::Ipv4PacketInfo(i) = c {
            info = Some(i);
        }
    }
    let Some(info) = info else {
        return Err(io::Error::other("datagram without IP_PKTINFO"));
    };
    Ok(Some(Datagram {
        len: msg.bytes,
        source: SocketAddrV4::new(source.ip(), source.port()),
        destination: Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)),
        ifindex: info.ipi_ifindex as u32,
    }))
}
