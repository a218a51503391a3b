//! rtnetlink (netlink(7), rtnetlink(7)): a socket, requests for one object, and checked views
//! of the messages and attributes the kernel answers with. Written once for the interface
//! watcher ([`super::iface`]) and the neighbour lookup ([`super::neighbour`]); the layouts are
//! the kernel's `include/uapi/linux/netlink.h`. Netlink integers are in host byte order.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket as nix_socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

/// `struct nlmsghdr`: length, type, flags, sequence number, port id.
pub const HEADER_LEN: usize = 16;
/// `struct nlattr`: length, type.
const ATTRIBUTE_HEADER_LEN: usize = 4;
/// Room for the kernel's answer to a request for one object (a route, a neighbour entry): a
/// few hundred bytes in practice. A larger answer is an error, never silently cut.
pub const REPLY_BUFFER: usize = 4096;
/// How long a request waits for its answer. rtnetlink answers a get inside the `send` (the
/// doit handler runs in the sender's context), so this bound only matters if that changes.
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(100);

/// NLMSG_ALIGN and NLA_ALIGN: messages and attributes start on 4-byte boundaries.
const fn aligned(len: usize) -> usize {
    (len + 3) & !3
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[from] Errno),
    #[error("the kernel refused the request: {0}")]
    Refused(Errno),
    #[error("no answer from the kernel within {REPLY_TIMEOUT:?}")]
    NoAnswer,
    #[error("malformed netlink answer: {0}")]
    Malformed(&'static str),
}

/// An rtnetlink socket, bound to the multicast `groups` (`RTMGRP_*`; 0 for none).
pub fn socket(flags: SockFlag, groups: u32) -> nix::Result<OwnedFd> {
    let fd = nix_socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | flags,
        SockProtocol::NetlinkRoute,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

/// A request for one object: the netlink header with `NLM_F_REQUEST` and no `NLM_F_DUMP` (so
/// the kernel's doit handler answers, as for `ip route get` and `ip neigh get`), the family's
/// fixed header (`struct rtmsg`, `struct ndmsg`), then attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    bytes: Vec<u8>,
}

impl Request {
    pub fn get(kind: u16, fixed: &[u8]) -> Request {
        let mut bytes = Vec::with_capacity(HEADER_LEN + aligned(fixed.len()) + 16);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // length: kept current by `set_len`
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // sequence: set by `RequestSocket::ask`
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port id 0: the kernel's
        bytes.extend_from_slice(fixed);
        bytes.resize(aligned(bytes.len()), 0);
        let mut request = Request { bytes };
        request.set_len();
        request
    }

    pub fn attribute(mut self, kind: u16, payload: &[u8]) -> Request {
        let len = u16::try_from(ATTRIBUTE_HEADER_LEN + payload.len())
            .expect("request attributes are a few bytes, not 64 KiB");
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(payload);
        self.bytes.resize(aligned(self.bytes.len()), 0);
        self.set_len();
        self
    }

    pub fn with_seq(mut self, seq: u32) -> Request {
        self.bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn set_len(&mut self) {
        let len = u32::try_from(self.bytes.len()).expect("a request is a few dozen bytes");
        self.bytes[..4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// One netlink message: its header's fields and the bytes after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The attributes after a fixed header of `fixed_len` bytes (`struct ndmsg`, `struct
    /// rtmsg`), or `None` when the payload is shorter than that header.
    pub fn attributes(&self, fixed_len: usize) -> Option<Attributes<'a>> {
        (self.payload.len() >= fixed_len)
            .then(|| Attributes::new(self.payload.get(aligned(fixed_len)..).unwrap_or_default()))
    }
}

/// The messages of one datagram read from a netlink socket.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    pub fn new(datagram: &'a [u8]) -> Messages<'a> {
        Messages { rest: datagram }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, NetlinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let Some(len) = ne_u32(rest).map(|l| l as usize) else {
            return Some(Err(NetlinkError::Malformed(
                "a message header is cut short",
            )));
        };
        if len < HEADER_LEN || len > rest.len() {
            return Some(Err(NetlinkError::Malformed(
                "a message length is outside its datagram",
            )));
        }
        let message = Message {
            kind: ne_u16(&rest[4..]).expect("the header was checked to be whole"),
            flags: ne_u16(&rest[6..]).expect("the header was checked to be whole"),
            seq: ne_u32(&rest[8..]).expect("the header was checked to be whole"),
            payload: &rest[HEADER_LEN..len],
        };
        self.rest = rest.get(aligned(len)..).unwrap_or_default();
        Some(Ok(message))
    }
}

/// The attributes (`struct nlattr` and payload) of a message, as (type, payload). The type
/// drops the nested and byte-order flag bits (NLA_TYPE_MASK).
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Attributes<'a> {
    pub fn new(bytes: &'a [u8]) -> Attributes<'a> {
        Attributes { rest: bytes }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), NetlinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let (Some(len), Some(kind)) = (ne_u16(rest), rest.get(2..).and_then(ne_u16)) else {
            return Some(Err(NetlinkError::Malformed(
                "an attribute header is cut short",
            )));
        };
        let len = usize::from(len);
        if len < ATTRIBUTE_HEADER_LEN || len > rest.len() {
            return Some(Err(NetlinkError::Malformed(
                "an attribute length is outside its message",
            )));
        }
        self.rest = rest.get(aligned(len)..).unwrap_or_default();
        Some(Ok((
            kind & libc::NLA_TYPE_MASK as u16,
            &rest[ATTRIBUTE_HEADER_LEN..len],
        )))
    }
}

/// A socket for requests: bound to no multicast group, so only answers arrive on it.
#[derive(Debug)]
pub struct RequestSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl RequestSocket {
    pub fn open() -> Result<RequestSocket, NetlinkError> {
        let fd = socket(SockFlag::empty(), 0)?;
        let timeout = TimeVal::microseconds(REPLY_TIMEOUT.as_micros() as i64);
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
        Ok(RequestSocket {
            fd,
            seq: 0,
            buf: vec![0; REPLY_BUFFER],
        })
    }

    /// Sends `request` and returns the kernel's answer to it. An error message from the
    /// kernel (NLMSG_ERROR with a negative errno) is [`NetlinkError::Refused`].
    pub fn ask(&mut self, request: Request) -> Result<Message<'_>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let request = request.with_seq(self.seq);
        send(self.fd.as_raw_fd(), request.as_bytes(), MsgFlags::empty())?;
        // MSG_TRUNC: netlink then returns the datagram's full length, so a cut answer shows.
        let len = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_TRUNC) {
            Ok(len) => len,
            Err(Errno::EAGAIN) => return Err(NetlinkError::NoAnswer),
            Err(e) => return Err(e.into()),
        };
        if len > self.buf.len() {
            return Err(NetlinkError::Malformed(
                "the answer is larger than REPLY_BUFFER",
            ));
        }
        let message = Messages::new(&self.buf[..len])
            .next()
            .ok_or(NetlinkError::Malformed("an empty answer"))??;
        if message.seq != self.seq {
            return Err(NetlinkError::Malformed("an answer to another request"));
        }
        if message.kind == libc::NLMSG_ERROR as u16 {
            // `struct nlmsgerr`: the errno, negated, then the request's header.
            let code = message
                .payload
                .get(..4)
                .map(|b| i32::from_ne_bytes(b.try_into().expect("four bytes")))
                .ok_or(NetlinkError::Malformed("an error message without its code"))?;
            return Err(match code {
                // An acknowledgement; a get (no NLM_F_ACK) is answered with the object.
                0 => NetlinkError::Malformed("an acknowledgement instead of an answer"),
                code => NetlinkError::Refused(Errno::from_raw(code.saturating_neg())),
            });
        }
        Ok(message)
    }
}

/// The host-order `u16` at the start of `bytes`, if there is one.
pub fn ne_u16(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?))
}

/// The host-order `u32` at the start of `bytes`, if there is one.
pub fn ne_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_attributes_out_of_their_bounds_are_malformed() {
        // A message claiming 32 bytes in a 20-byte datagram.
        let mut datagram = vec![0u8; 20];
        datagram[..4].copy_from_slice(&32u32.to_ne_bytes());
        assert!(matches!(
            Messages::new(&datagram).next(),
            Some(Err(NetlinkError::Malformed(_)))
        ));
        assert!(matches!(
            Messages::new(&datagram[..10]).next(),
            Some(Err(NetlinkError::Malformed(_)))
        ));
        // An attribute claiming 12 bytes with 8 there, after a good one.
        let attributes = [8, 0, 1, 0, 198, 18, 0, 9, 12, 0, 2, 0, 2, 0, 0, 0];
        let mut it = Attributes::new(&attributes);
        assert_eq!(it.next().unwrap().unwrap(), (1, &[198, 18, 0, 9][..]));
        assert!(matches!(it.next(), Some(Err(NetlinkError::Malformed(_)))));
        assert!(it.next().is_none());
    }

    #[test]
    fn a_request_is_padded_and_counts_its_own_length() {
        let request = Request::get(libc::RTM_GETNEIGH, &[2, 0, 0])
            .attribute(1, &[1, 2, 3, 4, 5, 6])
            .with_seq(7);
        let bytes = request.as_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 4 + 12);
        assert_eq!(ne_u32(bytes), Some(bytes.len() as u32));
        assert_eq!(ne_u32(&bytes[8..]), Some(7));
        let message = Messages::new(bytes).next().unwrap().unwrap();
        assert_eq!(message.kind, libc::RTM_GETNEIGH);
        let attributes: Vec<_> = message.attributes(3).unwrap().collect();
        assert_eq!(attributes.len(), 1);
        assert_eq!(
            *attributes[0].as_ref().unwrap(),
            (1, &[1, 2, 3, 4, 5, 6][..])
        );
    }
}
