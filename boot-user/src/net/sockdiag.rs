//! Who holds a UDP port on this host: the kernel's socket table through `NETLINK_SOCK_DIAG`
//! (sock_diag(7), `inet_diag`), the interface `ss -uan` uses. One dump request filtered by
//! local port answers in microseconds whatever else the host runs, so the steering watcher can
//! ask every few hundred milliseconds without parsing `/proc/net/udp`.
//!
//! The message layouts are `include/uapi/linux/inet_diag.h`'s; [`dump_request`] and
//! [`parse_dump`] are pure so the wire format is tested with golden bytes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::netlink::{HEADER_LEN as NLMSG_HDR_LEN, Messages};

/// `SOCK_DIAG_BY_FAMILY` (`include/uapi/linux/sock_diag.h`).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_sockid`: sport, dport, src[4], dst[4], if, cookie[2].
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, id.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_msg`: family, state, timer, retrans, id, expires, rqueue, wqueue, uid,
/// inode.
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;
/// Bytes read per `recv`: the kernel fills a dump reply up to the buffer it is given.
const RECV_BUFFER: usize = 32 * 1024;
/// Sockets reported at most: a port is held by a handful (`SO_REUSEPORT` groups included);
/// the bound keeps a runaway table from growing our memory.
pub const MAX_SOCKETS: usize = 1024;
/// Reads of one dump at most, for the same reason.
const MAX_READS: usize = 64;

/// One UDP socket bound to the port asked about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoundSocket {
    /// The local address and port (`0.0.0.0:67` for a wildcard bind).
    pub local: SocketAddr,
    /// The device it is bound to with `SO_BINDTODEVICE`, 0 for none.
    pub device: u32,
    /// The socket's inode, which names it in `/proc/<pid>/fd` (see [`owner_of`]).
    pub inode: u32,
    pub uid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("opening a NETLINK_SOCK_DIAG socket")]
    Open(#[source] io::Error),
    #[error("asking the kernel for UDP sockets")]
    Io(#[source] io::Error),
    #[error("the kernel refused the socket dump (errno {0})")]
    Refused(i32),
    #[error("a socket dump message is cut short")]
    Truncated,
}

/// The UDP sockets (IPv4 and IPv6, any state) of this network namespace whose local port is
/// `port`.
pub fn udp_sockets_on(port: u16) -> Result<Vec<BoundSocket>, SockDiagError> {
    let socket = open()?;
    let mut found = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        send(&socket, &dump_request(family, port, u32::from(family)))?;
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut done = false;
        for _ in 0..MAX_READS {
            // SAFETY: `buf` is a writable buffer of its length; the descriptor is ours.
            let n =
                unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let n =
                usize::try_from(n).map_err(|_| SockDiagError::Io(io::Error::last_os_error()))?;
            done = parse_dump(&buf[..n], port, &mut found)?;
            if done || found.len() >= MAX_SOCKETS {
                break;
            }
        }
        if !done && found.len() < MAX_SOCKETS {
            return Err(SockDiagError::Truncated);
        }
    }
    found.truncate(MAX_SOCKETS);
    found.sort();
    found.dedup();
    Ok(found)
}

fn open() -> Result<OwnedFd, SockDiagError> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(SockDiagError::Open(io::Error::last_os_error()));
    }
    // A dump that never ends would block us forever: a receive timeout bounds every read.
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: `fd` was just opened; the option value is a timeval of the size given.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    // SAFETY: `fd` is open and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    if set < 0 {
        return Err(SockDiagError::Open(io::Error::last_os_error()));
    }
    Ok(socket)
}

fn send(socket: &OwnedFd, request: &[u8]) -> Result<(), SockDiagError> {
    // SAFETY: `request` is readable for its length; an unbound netlink socket sends to the
    // kernel (destination pid 0).
    let n = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if n < 0 {
        return Err(SockDiagError::Io(io::Error::last_os_error()));
    }
    Ok(())
}

/// A `SOCK_DIAG_BY_FAMILY` dump request for UDP sockets of `family` with local port `port`
/// (`udp_diag.c` filters a dump by `id.idiag_sport` when it is set), in every state.
pub fn dump_request(family: u8, port: u16, seq: u32) -> [u8; NLMSG_HDR_LEN + REQ_LEN] {
    let mut msg = [0u8; NLMSG_HDR_LEN + REQ_LEN];
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    let req = &mut msg[NLMSG_HDR_LEN..];
    req[0] = family;
    req[1] = libc::IPPROTO_UDP as u8;
    // idiag_states: every TCP-style state bit; UDP sockets are TCP_CLOSE (7) or, connected,
    // TCP_ESTABLISHED (1).
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    // id.idiag_sport, network byte order.
    req[8..10].copy_from_slice(&port.to_be_bytes());
    msg
}

/// Adds the sockets in one `recv`'s worth of dump reply to `found`. Returns whether the dump
/// is complete (`NLMSG_DONE`). Sockets on another port are skipped, in case a kernel ignores
/// the filter.
pub fn parse_dump(
    buf: &[u8],
    port: u16,
    found: &mut Vec<BoundSocket>,
) -> Result<bool, SockDiagError> {
    for message in Messages::new(buf) {
        let message = message.map_err(|_| SockDiagError::Truncated)?;
        match message.kind {
            k if k == libc::NLMSG_DONE as u16 => return Ok(true),
            k if k == libc::NLMSG_ERROR as u16 => {
                let errno = message
                    .payload
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                return Err(SockDiagError::Refused(-errno));
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(socket) = parse_message(message.payload)?
                    && socket.local.port() == port
                    && found.len() < MAX_SOCKETS
                {
                    found.push(socket);
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// One `struct inet_diag_msg`.
fn parse_message(body: &[u8]) -> Result<Option<BoundSocket>, SockDiagError> {
    let Some(msg) = body.get(..MSG_LEN) else {
        return Err(SockDiagError::Truncated);
    };
    let family = i32::from(msg[0]);
    let id = &msg[4..4 + SOCKID_LEN];
    let port = u16::from_be_bytes([id[0], id[1]]);
    let src = &id[4..20];
    let ip = match family {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        libc::AF_INET6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(src);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return Ok(None),
    };
    let u32_at = |at: usize| u32::from_ne_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]]);
    Ok(Some(BoundSocket {
        local: SocketAddr::new(ip, port),
        device: u32_at(4 + 36),
        uid: u32_at(4 + SOCKID_LEN + 12),
        inode: u32_at(4 + SOCKID_LEN + 16),
    }))
}

/// The process holding socket `inode`, as `(pid, command name)`: the first `/proc/<pid>/fd`
/// entry that links to `socket:[inode]`. A walk of every process's descriptors, so call it
/// only when the set of sockets changes, never per packet. Processes are looked at in pid
/// order, at most `MAX_PROCESSES` of them.
pub fn owner_of(inode: u32) -> Option<(u32, String)> {
    const MAX_PROCESSES: usize = 65_536;
    let wanted = format!("socket:[{inode}]");
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .take(MAX_PROCESSES)
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.filter_map(Result::ok).any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
        });
        if holds {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim_end().to_owned())
                .unwrap_or_default();
            return Some((pid, name));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_request_asks_for_udp_sockets_on_one_port() {
        let msg = dump_request(libc::AF_INET as u8, 67, 9);
        assert_eq!(msg.len(), 72);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), 20);
        assert_eq!(u16::from_ne_bytes([msg[6], msg[7]]), 0x301);
        assert_eq!(msg[16], 2, "AF_INET");
        assert_eq!(msg[17], 17, "IPPROTO_UDP");
        assert_eq!(&msg[24..26], &[0, 67], "sport in network byte order");
        assert!(msg[26..].iter().all(|b| *b == 0));
    }

    /// An `inet_diag_msg` as the kernel sends it for dnsmasq's `0.0.0.0:67` (uid 0, inode
    /// 4242), then NLMSG_DONE.
    fn reply(family: u8, port: u16, addr: &[u8], device: u32) -> Vec<u8> {
        let mut body = vec![0u8; MSG_LEN];
        body[0] = family;
        body[1] = 7; // TCP_CLOSE: an unconnected UDP socket
        body[4..6].copy_from_slice(&port.to_be_bytes());
        body[8..8 + addr.len()].copy_from_slice(addr);
        body[40..44].copy_from_slice(&device.to_ne_bytes());
        body[MSG_LEN - 4..].copy_from_slice(&4242u32.to_ne_bytes());
        let mut msg = Vec::new();
        msg.extend(((NLMSG_HDR_LEN + MSG_LEN) as u32).to_ne_bytes());
        msg.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        msg.extend([0u8; 10]);
        msg.extend(body);
        msg
    }

    fn done() -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend(20u32.to_ne_bytes());
        msg.extend((libc::NLMSG_DONE as u16).to_ne_bytes());
        msg.extend([0u8; 14]);
        msg
    }

    #[test]
    fn a_dump_reply_names_each_socket_and_ends_at_done() {
        let mut buf = reply(libc::AF_INET as u8, 67, &[0, 0, 0, 0], 0);
        buf.extend(reply(
            libc::AF_INET6 as u8,
            67,
            &Ipv6Addr::LOCALHOST.octets(),
            3,
        ));
        let mut found = Vec::new();
        assert!(!parse_dump(&buf, 67, &mut found).unwrap(), "no DONE yet");
        assert_eq!(
            found,
            [
                BoundSocket {
                    local: "0.0.0.0:67".parse().unwrap(),
                    device: 0,
                    inode: 4242,
                    uid: 0
                },
                BoundSocket {
                    local: "[::1]:67".parse().unwrap(),
                    device: 3,
                    inode: 4242,
                    uid: 0
                }
            ]
        );
        assert!(parse_dump(&done(), 67, &mut found).unwrap());
    }

    #[test]
    fn sockets_on_other_ports_and_cut_messages_are_not_taken() {
        let mut found = Vec::new();
        let other = reply(libc::AF_INET as u8, 68, &[0; 4], 0);
        assert!(!parse_dump(&other, 67, &mut found).unwrap());
        assert!(found.is_empty());
        let mut cut = reply(libc::AF_INET as u8, 67, &[0; 4], 0);
        cut.truncate(40);
        assert!(parse_dump(&cut, 67, &mut found).is_err());
        let mut error = done();
        error[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        error[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert!(matches!(
            parse_dump(&error, 67, &mut found),
            Err(SockDiagError::Refused(libc::EPERM))
        ));
    }

    /// The kernel's own answer: a socket this test binds is found, with this process as its
    /// owner. Any host with sock_diag (every Linux since 3.3) runs it; no root needed.
    #[test]
    fn a_socket_bound_here_is_found_with_its_owner() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = socket.local_addr().expect("local address").port();
        let local = socket.local_addr().expect("local address");
        // Other processes may hold the same port number elsewhere (IPv6, other addresses):
        // ours is the one on this address.
        let ours = |found: Vec<BoundSocket>| -> Vec<BoundSocket> {
            found.into_iter().filter(|s| s.local == local).collect()
        };
        let found = ours(udp_sockets_on(port).expect("sock_diag dump"));
        assert_eq!(found.len(), 1, "{found:?}");
        let (pid, _) = owner_of(found[0].inode).expect("the owner is this process");
        assert_eq!(pid, std::process::id());
        drop(socket);
        assert!(ours(udp_sockets_on(port).expect("dump")).is_empty());
    }
}
