//! What is attached to an interface's XDP hook, and how to take it off: the rtnetlink side
//! (`IFLA_XDP` in `RTM_GETLINK`/`RTM_SETLINK`, as `ip link` uses it) and the BPF-link side
//! (`BPF_LINK_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD`, `BPF_LINK_DETACH`, as
//! `bpftool link detach` uses them). aya 0.14 exposes neither the netlink calls nor a link's
//! ifindex, so both are spoken here directly.
//!
//! A program attached through a BPF link goes away when the last descriptor of the link
//! closes, so a crashed daemon leaves nothing behind; one attached through netlink stays until
//! someone removes it.

use std::{
    fmt, io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

use aya::programs::{links::LinkType, loaded_links};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

// rtnetlink(7), include/uapi/linux/if_link.h: the attributes nested in IFLA_XDP.
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
// include/uapi/linux/if_link.h: XDP_FLAGS_*.
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const RTATTR_HDR_LEN: usize = 4;
/// A link message with statistics and every attribute is a few kilobytes.
const NETLINK_RECV_BUF: usize = 64 * 1024;

/// An XDP hook of an interface. The kernel allows one program in each; driver and skb mode
/// exclude each other, hardware offload sits beside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpHook {
    Driver,
    Skb,
    Hardware,
}

impl XdpHook {
    const fn flags(self) -> u32 {
        match self {
            XdpHook::Driver => XDP_FLAGS_DRV_MODE,
            XdpHook::Skb => XDP_FLAGS_SKB_MODE,
            XdpHook::Hardware => XDP_FLAGS_HW_MODE,
        }
    }
}

impl fmt::Display for XdpHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpHook::Driver => "driver",
            XdpHook::Skb => "skb",
            XdpHook::Hardware => "hardware",
        })
    }
}

/// The ids of the XDP programs attached to one interface, by hook.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachedXdp {
    pub driver: Option<u32>,
    pub skb: Option<u32>,
    pub hardware: Option<u32>,
}

impl AttachedXdp {
    /// Whether no XDP program at all is attached.
    pub fn is_empty(&self) -> bool {
        self.programs().next().is_none()
    }

    /// Every attached program with its hook.
    pub fn programs(&self) -> impl Iterator<Item = (XdpHook, u32)> + use<> {
        [
            (XdpHook::Driver, self.driver),
            (XdpHook::Skb, self.skb),
            (XdpHook::Hardware, self.hardware),
        ]
        .into_iter()
        .filter_map(|(hook, id)| Some((hook, id?)))
    }
}

/// The XDP programs attached to `ifindex`, from rtnetlink (`ip link show` prints the same).
pub fn attached_xdp(ifindex: u32) -> io::Result<AttachedXdp> {
    let socket = netlink_socket()?;
    let mut request = Vec::with_capacity(NLMSG_HDR_LEN + IFINFOMSG_LEN);
    push_nlmsghdr(&mut request, libc::RTM_GETLINK, libc::NLM_F_REQUEST as u16);
    push_ifinfomsg(&mut request, ifindex)?;
    finish_nlmsg(&mut request);
    sendto(
        socket.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;

    let mut buf = vec![0u8; NETLINK_RECV_BUF];
    let len = recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    let message = netlink_messages(&buf[..len])
        .next()
        .ok_or_else(|| malformed("empty rtnetlink answer"))??;
    match message.kind {
        libc::RTM_NEWLINK => {}
        kind if kind == libc::NLMSG_ERROR as u16 => {
            return Err(netlink_error(message.payload).unwrap_or_else(|| {
                malformed("rtnetlink answered RTM_GETLINK with an acknowledgement")
            }));
        }
        kind => return Err(malformed(&format!("unexpected rtnetlink message {kind}"))),
    }
    let attributes = message
        .payload
        .get(IFINFOMSG_LEN..)
        .ok_or_else(|| malformed("short RTM_NEWLINK"))?;
    let mut attached = AttachedXdp::default();
    let Some(xdp) = attributes_of(attributes).find(|(kind, _)| *kind == libc::IFLA_XDP) else {
        return Ok(attached);
    };
    for (kind, value) in attributes_of(xdp.1) {
        let id = value
            .get(..4)
            .map(|bytes| u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            .filter(|id| *id != 0);
        match kind {
            IFLA_XDP_DRV_PROG_ID => attached.driver = id,
            IFLA_XDP_SKB_PROG_ID => attached.skb = id,
            IFLA_XDP_HW_PROG_ID => attached.hardware = id,
            _ => {}
        }
    }
    Ok(attached)
}

/// Attaches `program` to the `hook` of `ifindex` through netlink, or with `None` detaches what
/// is there. With `expected`, the kernel changes the hook only if that program is still the one
/// attached (`XDP_FLAGS_REPLACE`), so a program attached meanwhile is never removed unseen.
///
/// A program held by a BPF link cannot be removed this way: the kernel answers `EBUSY`.
pub fn set_xdp_program(
    ifindex: u32,
    hook: XdpHook,
    program: Option<BorrowedFd<'_>>,
    expected: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let socket = netlink_socket()?;
    let mut request = Vec::with_capacity(64);
    push_nlmsghdr(
        &mut request,
        libc::RTM_SETLINK,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
    );
    push_ifinfomsg(&mut request, ifindex)?;
    let nest = request.len();
    push_attribute(
        &mut request,
        libc::IFLA_XDP | libc::NLA_F_NESTED as u16,
        &[],
    );
    let fd: RawFd = program.map_or(-1, |fd| fd.as_raw_fd());
    push_attribute(&mut request, IFLA_XDP_FD, &fd.to_ne_bytes());
    let mut flags = hook.flags();
    if let Some(expected) = expected {
        flags |= XDP_FLAGS_REPLACE;
        push_attribute(
            &mut request,
            IFLA_XDP_EXPECTED_FD,
            &expected.as_raw_fd().to_ne_bytes(),
        );
    }
    push_attribute(&mut request, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    let nest_len = u16::try_from(request.len() - nest).expect("an IFLA_XDP nest is tiny");
    request[nest..nest + 2].copy_from_slice(&nest_len.to_ne_bytes());
    finish_nlmsg(&mut request);
    sendto(
        socket.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;

    let mut buf = vec![0u8; NETLINK_RECV_BUF];
    let len = recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    let message = netlink_messages(&buf[..len])
        .next()
        .ok_or_else(|| malformed("empty rtnetlink answer"))??;
    if message.kind != libc::NLMSG_ERROR as u16 {
        return Err(malformed("rtnetlink did not acknowledge RTM_SETLINK"));
    }
    match netlink_error(message.payload) {
        None => Ok(()),
        Some(err) => Err(err),
    }
}

/// The BPF link holding XDP program `program_id` on `ifindex`, if any: its id and descriptor.
///
/// Both must match: interface indexes repeat across network namespaces (every namespace's
/// first device is index 2) and a link's info does not say which namespace it is in, but
/// program ids are global, and netlink reported `program_id` on this namespace's `ifindex`.
/// Matching on the index alone found, and `--force` detached, another namespace's program.
pub fn xdp_link_on(ifindex: u32, program_id: u32) -> io::Result<Option<(u32, OwnedFd)>> {
    for info in loaded_links() {
        // A link that went away while we iterated is simply not there.
        let Ok(info) = info else { continue };
        if !matches!(info.link_type(), Ok(LinkType::Xdp)) || info.program_id() != program_id {
            continue;
        }
        let Ok(link) = link_fd_by_id(info.id()) else {
            continue;
        };
        if link_ifindex(link.as_fd())? == Some(ifindex) {
            return Ok(Some((info.id(), link)));
        }
    }
    Ok(None)
}

/// Detaches a BPF link from its hook (`BPF_LINK_DETACH`, Linux 5.9): the program comes off
/// even though its owner still holds the link, whose descriptor then refers to nothing.
pub fn detach_link(link: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct LinkDetachAttr {
        link_fd: u32,
    }
    let mut attr = LinkDetachAttr {
        link_fd: fd_as_u32(link),
    };
    sys_bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

// include/uapi/linux/bpf.h, enum bpf_cmd.
#[cfg(test)]
pub(super) const BPF_PROG_LOAD: u32 = 5;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;
const BPF_LINK_DETACH: u32 = 34;

/// The `bpf(2)` system call with `attr` as its attribute block, which the kernel may write
/// back to. The kernel accepts a block shorter than its `union bpf_attr` and reads the missing
/// tail as zeroes.
pub(super) fn sys_bpf<A>(cmd: u32, attr: &mut A) -> io::Result<i64> {
    // SAFETY: `attr` is a live, exclusively borrowed `#[repr(C)]` block of `size_of::<A>()`
    // bytes laid out as the command's part of `union bpf_attr`; pointers inside it (if any)
    // point at live buffers the caller owns for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<A>() as u32,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd_as_u32(fd: BorrowedFd<'_>) -> u32 {
    u32::try_from(fd.as_raw_fd()).expect("an open descriptor is not negative")
}

fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct GetFdByIdAttr {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = GetFdByIdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    let fd = sys_bpf(BPF_LINK_GET_FD_BY_ID, &mut attr)?;
    let fd = RawFd::try_from(fd).map_err(|_| malformed("descriptor out of range"))?;
    // SAFETY: the kernel just opened `fd` for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The ifindex of an XDP link (`bpf_link_info.xdp.ifindex`), `None` once it is detached.
fn link_ifindex(link: BorrowedFd<'_>) -> io::Result<Option<u32>> {
    /// `struct bpf_link_info` up to the XDP member of its union, which starts 8-byte aligned.
    #[repr(C)]
    #[derive(Default)]
    struct XdpLinkInfo {
        link_type: u32,
        id: u32,
        prog_id: u32,
        _pad: u32,
        ifindex: u32,
        _rest: [u32; 11],
    }
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = XdpLinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd_as_u32(link),
        info_len: size_of::<XdpLinkInfo>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok((info.ifindex != 0).then_some(info.ifindex))
}

fn netlink_socket() -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?)
}

fn push_nlmsghdr(buf: &mut Vec<u8>, kind: u16, flags: u16) {
    buf.extend(0u32.to_ne_bytes()); // length, see finish_nlmsg
    buf.extend(kind.to_ne_bytes());
    buf.extend(flags.to_ne_bytes());
    buf.extend(1u32.to_ne_bytes()); // sequence number: one request per socket
    buf.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
}

fn push_ifinfomsg(buf: &mut Vec<u8>, ifindex: u32) -> io::Result<()> {
    let index = i32::try_from(ifindex).map_err(|_| malformed("ifindex out of range"))?;
    buf.push(libc::AF_UNSPEC as u8);
    buf.push(0);
    buf.extend(0u16.to_ne_bytes()); // device type
    buf.extend(index.to_ne_bytes());
    buf.extend(0u32.to_ne_bytes()); // flags
    buf.extend(0u32.to_ne_bytes()); // change mask
    Ok(())
}

fn push_attribute(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(RTATTR_HDR_LEN + value.len()).expect("attributes here are tiny");
    buf.extend(len.to_ne_bytes());
    buf.extend(kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn finish_nlmsg(buf: &mut [u8]) {
    let len = u32::try_from(buf.len()).expect("requests here are tiny");
    buf[..4].copy_from_slice(&len.to_ne_bytes());
}

struct NetlinkMessage<'a> {
    kind: u16,
    payload: &'a [u8],
}

/// The messages of one netlink datagram.
fn netlink_messages(mut buf: &[u8]) -> impl Iterator<Item = io::Result<NetlinkMessage<'_>>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDR_LEN {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDR_LEN || len > buf.len() {
            buf = &[];
            return Some(Err(malformed("netlink message length out of bounds")));
        }
        let payload = &buf[NLMSG_HDR_LEN..len];
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some(Ok(NetlinkMessage { kind, payload }))
    })
}

/// The error an `NLMSG_ERROR` message carries, `None` for an acknowledgement.
fn netlink_error(payload: &[u8]) -> Option<io::Error> {
    let Some(code) = payload.get(..4) else {
        return Some(malformed("short NLMSG_ERROR"));
    };
    let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
    (code != 0).then(|| io::Error::from_raw_os_error(-code))
}

/// The (type, value) pairs of a run of rtattrs (rtnetlink(7)); nesting flags are masked off.
fn attributes_of(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < RTATTR_HDR_LEN {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & !(libc::NLA_F_NESTED as u16);
        if len < RTATTR_HDR_LEN || len > buf.len() {
            return None;
        }
        let value = &buf[RTATTR_HDR_LEN..len];
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_read_past_padding() {
        let mut buf = Vec::new();
        push_attribute(&mut buf, 2, &[1]); // padded to 8 bytes
        push_attribute(&mut buf, IFLA_XDP_SKB_PROG_ID, &42u32.to_ne_bytes());
        let attributes: Vec<_> = attributes_of(&buf).collect();
        assert_eq!(
            attributes,
            vec![
                (2, &[1u8][..]),
                (IFLA_XDP_SKB_PROG_ID, &42u32.to_ne_bytes()[..])
            ]
        );
        // A length running past the buffer ends the walk instead of reading beyond it.
        buf[0] = 200;
        assert_eq!(attributes_of(&buf).count(), 0);
    }

    #[test]
    fn asking_about_a_missing_interface_names_the_errno() {
        // RTM_GETLINK needs no privilege; no host has this many interfaces.
        let err = attached_xdp(0x7fff_fff0).expect_err("no such ifindex");
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
    }
}
