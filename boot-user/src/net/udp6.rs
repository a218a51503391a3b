//! The UDP-socket backend over IPv6: DHCPv6 on port 547 and EDK2's PXEv6 boot-server port 4011.
//!
//! - Port 547: one socket per served interface, bound to `[ff02::1:2%IF]:547` after joining
//!   that group there (RFC 8415 §7.1: clients send to All_DHCP_Relay_Agents_and_Servers). Bound
//!   to the group, it receives what clients multicast and never the unicast traffic of a site
//!   DHCPv6 server on the same host (renewals, a relay's forwards to its address), which a
//!   second socket on `[::]:547` could take from it. Binding beside a server on `[::]:547`
//!   needs SO_REUSEADDR on both sides: dnsmasq sets it with `--bind-interfaces` (its
//!   `dhcp6_init`), and without it the port is refused, as port 67 is in the DHCPv4 backend.
//! - Port 4011: one socket on `[::]:4011`, ours alone, IPv6 only (the DHCPv4 backend has its
//!   own on 0.0.0.0).
//!
//! Every datagram comes with IPV6_PKTINFO (ipv6(7)): the interface it arrived on and the
//! address it was sent to. Replies leave through the ingress interface (a link-local client is
//! only reachable there), from the address a 4011 request was sent to, which EDK2 checks.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use boot_common::wire::dhcpv6;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::service::{Answer6, Service};
use crate::dhcp6::classify::MAX_REQUEST_LEN;
use crate::dhcp6::{Destination, ServerPort};

/// Errors setting up or running the IPv6 UDP backend.
#[derive(Debug, thiserror::Error)]
pub enum Udp6Error {
    #[error(
        "UDP port {port} over IPv6 is already held by a server that does not share it (for port \
         547 a DHCPv6 server bound to [::]:547 without SO_REUSEADDR, such as dnsmasq without \
         --bind-interfaces). Run xdpboot with --backend xdp, which answers without binding port \
         547, or make that server bind to its interfaces"
    )]
    PortInUse { port: u16 },
    #[error("binding UDP port {port} over IPv6{on}: {source}")]
    Bind {
        port: u16,
        on: String,
        source: io::Error,
    },
    #[error("UDP port {port} over IPv6: {source}")]
    Io { port: u16, source: io::Error },
}

/// A bound DHCPv6 or PXEv6 socket.
pub struct Udp6Socket {
    port: ServerPort,
    fd: AsyncFd<Socket>,
}

impl Udp6Socket {
    /// `[ff02::1:2%ifindex]:547`, the group joined on that interface.
    pub fn bind_dhcp(ifindex: u32, iface: &str) -> Result<Udp6Socket, Udp6Error> {
        let group = dhcpv6::ALL_RELAY_AGENTS_AND_SERVERS;
        let socket = Self::socket(ServerPort::Dhcp)?;
        let port = ServerPort::Dhcp.number();
        let io = |source| Udp6Error::Io { port, source };
        socket.join_multicast_v6(&group, ifindex).map_err(io)?;
        let bind = SocketAddrV6::new(group, port, 0, ifindex);
        Self::bind(
            socket,
            bind.into(),
            &format!(" on {iface}"),
            ServerPort::Dhcp,
        )
    }

    /// `[::]:4011`.
    pub fn bind_pxe() -> Result<Udp6Socket, Udp6Error> {
        let socket = Self::socket(ServerPort::Pxe)?;
        let bind = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, ServerPort::Pxe.number(), 0, 0);
        Self::bind(socket, bind.into(), "", ServerPort::Pxe)
    }

    fn socket(port: ServerPort) -> Result<Socket, Udp6Error> {
        let number = port.number();
        let io = |source| Udp6Error::Io {
            port: number,
            source,
        };
        let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).map_err(io)?;
        socket.set_only_v6(true).map_err(io)?;
        socket.set_reuse_address(true).map_err(io)?;
        socket.set_nonblocking(true).map_err(io)?;
        setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true).map_err(|e| io(e.into()))?;
        Ok(socket)
    }

    fn bind(
        socket: Socket,
        addr: SocketAddr,
        on: &str,
        port: ServerPort,
    ) -> Result<Udp6Socket, Udp6Error> {
        let number = port.number();
        socket.bind(&addr.into()).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                Udp6Error::PortInUse { port: number }
            } else {
                Udp6Error::Bind {
                    port: number,
                    on: on.to_owned(),
                    source,
                }
            }
        })?;
        let fd = super::register(socket).map_err(|source| Udp6Error::Io {
            port: number,
            source,
        })?;
        Ok(Udp6Socket { port, fd })
    }

    /// Serves requests until an I/O error other than a transient one.
    pub async fn serve(self, service: Arc<Service>) -> Result<(), Udp6Error> {
        let number = self.port.number();
        let mut buf = vec![0u8; MAX_REQUEST_LEN + 1];
        loop {
            let mut guard = self.fd.readable().await.map_err(|source| Udp6Error::Io {
                port: number,
                source,
            })?;
            loop {
                let datagram = match receive6(guard.get_inner(), &mut buf) {
                    Ok(Some(d)) => d,
                    Ok(None) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(port = number, error = %e, "recvmsg failed");
                        continue;
                    }
                };
                let bytes = &buf[..datagram.len];
                let Some(answer) = service.handle6(
                    self.port,
                    datagram.ifindex,
                    datagram.source,
                    datagram.destination,
                    None,
                    bytes,
                ) else {
                    continue;
                };
                if let Err(e) = send6(self.fd.get_ref(), &answer) {
                    service.stats6.record_send_failure();
                    tracing::warn!(port = number, error = %e, "sending a DHCPv6 reply failed");
                }
            }
        }
    }
}

/// Where a reply goes, as a socket address: a link-local destination gets the ingress
/// interface as its scope.
pub fn reply_address(destination: Destination, ifindex: u32) -> SocketAddrV6 {
    let (ip, port) = match destination {
        Destination::Client(ip) => (ip, dhcpv6::CLIENT_PORT),
        Destination::Unicast(to) => (*to.ip(), to.port()),
        Destination::Relay(ip) => (ip, dhcpv6::SERVER_PORT),
    };
    let scope = if ip.is_unicast_link_local() {
        ifindex
    } else {
        0
    };
    SocketAddrV6::new(ip, port, 0, scope)
}

/// Sends `answer` on `socket`: out of the ingress interface, from the address the answer names
/// (or one the kernel picks). ipv6(7): `ipi6_ifindex` picks the interface, `ipi6_addr` the
/// source.
fn send6(socket: &Socket, answer: &Answer6) -> io::Result<()> {
    let to = reply_address(answer.reply.destination, answer.ifindex);
    // A relay is reached by routing, not necessarily through the ingress interface.
    let ifindex = match answer.reply.destination {
        Destination::Relay(ip) if !ip.is_unicast_link_local() => 0,
        _ => answer.ifindex,
    };
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: answer.source.unwrap_or(Ipv6Addr::UNSPECIFIED).octets(),
        },
        ipi6_ifindex: ifindex,
    };
    let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
    let iov = [IoSlice::new(&answer.reply.bytes)];
    let to = SockaddrIn6::from(to);
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
pub(crate) struct Datagram6 {
    pub(crate) len: usize,
    /// With the scope id the kernel gave a link-local source.
    pub(crate) source: SocketAddrV6,
    pub(crate) destination: Ipv6Addr,
    pub(crate) ifindex: u32,
}

/// Receives one datagram from a socket with IPV6_RECVPKTINFO set; `Ok(None)` when drained.
/// Oversized datagrams are cut to `buf.len()` (one more than the core accepts), which the core
/// counts as oversized.
pub(crate) fn receive6(socket: &Socket, buf: &mut [u8]) -> io::Result<Option<Datagram6>> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let msg = match recvmsg::<SockaddrIn6>(
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
        if let ControlMessageOwned::Ipv6PacketInfo(i) = c {
            info = Some(i);
        }
    }
    let Some(info) = info else {
        return Err(io::Error::other("datagram without IPV6_PKTINFO"));
    };
    Ok(Some(Datagram6 {
        len: msg.bytes,
        source: SocketAddrV6::new(source.ip(), source.port(), 0, source.scope_id()),
        destination: Ipv6Addr::from(info.ipi6_addr.s6_addr),
        ifindex: info.ipi6_ifindex,
    }))
}

/// Sends `bytes` to `to` from `source` (unspecified: the kernel picks) out of `ifindex`
/// (0: by route), for the TFTP server's errors over IPv6.
pub(crate) fn send_from6(
    socket: &Socket,
    bytes: &[u8],
    to: SocketAddrV6,
    source: Ipv6Addr,
    ifindex: u32,
) -> io::Result<()> {
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: source.octets(),
        },
        ipi6_ifindex: ifindex,
    };
    let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
    let iov = [IoSlice::new(bytes)];
    let to = SockaddrIn6::from(to);
    sendmsg(
        socket.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::empty(),
        Some(&to),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_destinations_get_the_ingress_interface_as_scope() {
        let client: Ipv6Addr = "fe80::5054:ff:fe18:101".parse().unwrap();
        assert_eq!(
            reply_address(Destination::Client(client), 7),
            SocketAddrV6::new(client, 546, 0, 7)
        );
        let relay: Ipv6Addr = "fd00:19::1".parse().unwrap();
        assert_eq!(
            reply_address(Destination::Relay(relay), 7),
            SocketAddrV6::new(relay, 547, 0, 0)
        );
        let pxe = SocketAddrV6::new("fd00:18::150".parse().unwrap(), 4011, 0, 0);
        assert_eq!(reply_address(Destination::Unicast(pxe), 7), pxe);
    }
}
