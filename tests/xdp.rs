//! The XDP side of the lab: what is attached to an interface, xdpboot's verdict counters, a
//! stand-in for another tool's XDP program, sending raw Ethernet frames (a tag the kernel would
//! not add; [`crate::BootRequest::broadcast_frame`] builds them), and whether this kernel makes
//! VLAN devices.
//!
//! Everything here acts inside namespaces the test made ([`NetNs::run`]); the only object
//! outside them is the stand-in program's descriptor, which closes with its guard.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{COMMAND_TIMEOUT, NetNs, POLL_INTERVAL, run_command, xdpboot_binary};

// ---------------------------------------------------------------------------------------------
// What is attached

/// An XDP program on an interface, as `ip link show` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedProgram {
    pub id: u32,
    /// The kernel's name of the program (at most 15 bytes); empty when it has none.
    pub name: String,
}

/// The XDP programs on `iface` in `ns`: `ip link show` prints one `prog/xdp… id N name X`
/// per attached program (`prog/xdp`, or `prog/xdpdrv`, `prog/xdpgeneric` … when several
/// modes are in use).
pub fn attached_programs(ns: &NetNs, iface: &str) -> Result<Vec<AttachedProgram>> {
    let text = ns.ip(&format!("link show dev {iface}"))?;
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut programs = Vec::new();
    for (at, token) in tokens.iter().enumerate() {
        if !token.starts_with("prog/xdp") {
            continue;
        }
        let value = |key: &str| {
            tokens[at + 1..]
                .windows(2)
                .take_while(|w| !w[0].starts_with("prog/"))
                .find(|w| w[0] == key)
                .map(|w| w[1])
        };
        let id = value("id")
            .and_then(|id| id.parse().ok())
            .with_context(|| format!("no program id after {token} in:\n{text}"))?;
        programs.push(AttachedProgram {
            id,
            name: value("name").unwrap_or_default().to_owned(),
        });
    }
    Ok(programs)
}

/// Waits until `iface` in `ns` has no XDP program; fails with what is still there after
/// `timeout`.
pub fn wait_for_no_xdp(ns: &NetNs, iface: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let programs = attached_programs(ns, iface)?;
        if programs.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("XDP programs still on {iface} after {timeout:?}: {programs:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

// ---------------------------------------------------------------------------------------------
// Counters

/// xdpboot's verdict counters on one interface, as `xdpboot stats` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Counters {
    /// Runs `xdpboot stats --interface IF` in `ns`: a line `IF: program N (Mode)`, then one
    /// `  name value` line per counter.
    pub fn read(ns: &NetNs, iface: &str) -> Result<Counters> {
        let text = ns.exec(&xdpboot_binary(), &["stats", "--interface", iface])?;
        let mut counters = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with(' ')) {
            let mut fields = line.split_whitespace();
            if let (Some(name), Some(value), None) = (fields.next(), fields.next(), fields.next()) {
                let value = value
                    .parse()
                    .with_context(|| format!("counter line {line:?} of:\n{text}"))?;
                counters.insert(name.to_owned(), value);
            }
        }
        ensure!(
            !counters.is_empty(),
            "no counters in `xdpboot stats`:\n{text}"
        );
        Ok(Counters(counters))
    }

    /// The counter `name`; 0 when `xdpboot stats` does not print it.
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// How much each counter grew since `earlier`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters(
            self.0
                .iter()
                .map(|(name, value)| (name.clone(), value.saturating_sub(earlier.get(name))))
                .collect(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Another tool's XDP program

// From include/uapi/linux/bpf.h, if_link.h and rtnetlink.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_PASS: i32 = 2;
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const RTM_SETLINK: u16 = 19;
const NLMSG_ERROR: u16 = 2;

/// `struct bpf_insn`.
#[repr(C)]
struct BpfInsn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`; the kernel
/// reads the fields it knows beyond these as zero.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_LINK_CREATE` part of `union bpf_attr`, with room for the per-type union after it.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    rest: [u64; 4],
}

/// `bpf(cmd, attr, sizeof attr)` for the commands that return a new descriptor.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a live, fully initialised `#[repr(C)]` struct of the layout the kernel
    // expects for `cmd`, and its size is passed along; the kernel only reads it (and any
    // pointers in it point into memory that outlives the call).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success these commands return a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A foreign XDP program, as a firewall or load balancer would leave on an interface: it
/// passes every frame. Loaded by the test itself (two instructions), since no other XDP
/// object is at hand. The program is unloaded when this guard and every attachment are gone;
/// an attachment through netlink lasts until its interface goes (with the namespace).
#[derive(Debug)]
pub struct ForeignXdp {
    program: OwnedFd,
}

impl ForeignXdp {
    /// The program's name in the kernel, so a test can tell it from xdpboot's.
    pub const NAME: &'static str = "xbt_foreign";

    pub fn load() -> Result<ForeignXdp> {
        let insns = [
            // r0 = XDP_PASS
            BpfInsn {
                code: 0xb7, // BPF_ALU64 | BPF_MOV | BPF_K
                regs: 0,
                off: 0,
                imm: XDP_PASS,
            },
            // exit
            BpfInsn {
                code: 0x95, // BPF_JMP | BPF_EXIT
                regs: 0,
                off: 0,
                imm: 0,
            },
        ];
        let license = c"GPL";
        let mut prog_name = [0u8; 16];
        prog_name[..ForeignXdp::NAME.len()].copy_from_slice(ForeignXdp::NAME.as_bytes());
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name,
            prog_ifindex: 0,
            expected_attach_type: BPF_XDP,
        };
        let program = bpf(BPF_PROG_LOAD, &mut attr).context("loading a minimal XDP program")?;
        Ok(ForeignXdp { program })
    }

    /// Attaches the program through netlink, as `ip link set dev IF xdp …` does: it stays
    /// attached when this process lets go of it. In driver mode, or skb mode where the driver
    /// has no XDP ([`in_driver_mode_or_skb`]).
    pub fn attach_through_netlink(&self, ns: &NetNs, iface: &str) -> Result<()> {
        let fd = self.program.as_raw_fd();
        let iface = iface.to_owned();
        ns.run(move || {
            let ifindex = nix::net::if_::if_nametoindex(iface.as_str())
                .with_context(|| format!("no interface {iface}"))?;
            in_driver_mode_or_skb(|mode| {
                set_xdp_through_netlink(ifindex, fd, mode | XDP_FLAGS_UPDATE_IF_NOEXIST)
            })
            .with_context(|| format!("attaching {} to {iface} through netlink", Self::NAME))
        })
    }

    /// Attaches the program through a BPF link, as libxdp and aya do: it stays attached as
    /// long as the returned descriptor is open (or until someone detaches the link). In
    /// driver mode, or skb mode where the driver has no XDP ([`in_driver_mode_or_skb`]).
    pub fn attach_through_link(&self, ns: &NetNs, iface: &str) -> Result<OwnedFd> {
        let fd = self.program.as_raw_fd();
        let iface = iface.to_owned();
        ns.run(move || {
            let ifindex = nix::net::if_::if_nametoindex(iface.as_str())
                .with_context(|| format!("no interface {iface}"))?;
            in_driver_mode_or_skb(|mode| {
                let mut attr = LinkCreateAttr {
                    prog_fd: fd as u32,
                    target_ifindex: ifindex,
                    attach_type: BPF_XDP,
                    flags: mode,
                    rest: [0; 4],
                };
                Ok(bpf(BPF_LINK_CREATE, &mut attr)?)
            })
            .with_context(|| format!("attaching {} to {iface} with a BPF link", Self::NAME))
        })
    }
}

/// `attach(XDP_FLAGS_DRV_MODE)`, then `attach(XDP_FLAGS_SKB_MODE)` if the driver has no XDP of
/// its own (EOPNOTSUPP). veth has driver-mode XDP since Linux 4.19; what the tests assert of
/// xdpboot beside another program holds in either mode.
fn in_driver_mode_or_skb<T>(attach: impl Fn(u32) -> Result<T>) -> Result<T> {
    match attach(XDP_FLAGS_DRV_MODE) {
        Err(err)
            if err
                .downcast_ref::<io::Error>()
                .and_then(io::Error::raw_os_error)
                == Some(libc::EOPNOTSUPP) =>
        {
            attach(XDP_FLAGS_SKB_MODE)
        }
        attached => attached,
    }
}

/// `RTM_SETLINK` with `IFLA_XDP { IFLA_XDP_FD, IFLA_XDP_FLAGS }` on the calling thread's
/// namespace, waiting for the kernel's acknowledgement.
fn set_xdp_through_netlink(ifindex: u32, program: i32, flags: u32) -> Result<()> {
    let socket = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(libc::NETLINK_ROUTE)),
    )?;
    socket.set_read_timeout(Some(COMMAND_TIMEOUT))?;

    let attribute = |kind: u16, value: &[u8]| {
        let mut a = Vec::new();
        a.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a
    };
    let mut xdp = attribute(IFLA_XDP_FD, &program.to_ne_bytes());
    xdp.extend(attribute(IFLA_XDP_FLAGS, &flags.to_ne_bytes()));
    let xdp = attribute(IFLA_XDP | NLA_F_NESTED, &xdp);

    // struct ifinfomsg: family, pad, type, index, flags, change.
    let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    body.extend(xdp);

    // struct nlmsghdr: len, type, flags, seq, pid.
    let mut message = Vec::new();
    message.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
    message.extend_from_slice(&RTM_SETLINK.to_ne_bytes());
    let request_flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    message.extend_from_slice(&request_flags.to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend(body);
    socket.send(&message).context("sending RTM_SETLINK")?;

    let mut reply = [0u8; 4096];
    let len = (&socket)
        .read(&mut reply)
        .context("reading the kernel's answer")?;
    ensure!(len >= 20, "short netlink answer ({len} bytes)");
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    ensure!(
        kind == NLMSG_ERROR,
        "unexpected netlink message type {kind}"
    );
    let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    if errno != 0 {
        return Err(io::Error::from_raw_os_error(-errno).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Raw frames

/// Sends `frame` out of `iface` in `ns` as it is (an `AF_PACKET` socket: the kernel adds no
/// headers and moves no tag out of the frame).
pub fn send_frame(ns: &NetNs, iface: &str, frame: &[u8]) -> Result<()> {
    let iface = iface.to_owned();
    ns.run(move || {
        let ifindex = nix::net::if_::if_nametoindex(iface.as_str())
            .with_context(|| format!("no interface {iface}"))?;
        // Protocol 0: this socket sends only.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and the address are live for the call, with their true lengths.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context(format!("sending a frame on {iface}"));
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// VLAN devices

/// Whether this kernel makes 802.1Q VLAN devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VlanDevices {
    Available,
    /// The kernel knows no `vlan` link type (`CONFIG_VLAN_8021Q` off, or module `8021q`
    /// absent): what `ip` said.
    Missing(String),
}

/// Whether this kernel makes 802.1Q VLAN devices: tries `modprobe 8021q` first where modprobe
/// exists, then creates one in a scratch namespace. Only a kernel without the `vlan` link type
/// is [`VlanDevices::Missing`]; a namespace or veth pair that cannot be made is an error.
pub fn vlan_devices() -> Result<VlanDevices> {
    // The module may just not be loaded; where modprobe is missing this fails quietly.
    let _ = run_command(Command::new("modprobe").arg("8021q"), COMMAND_TIMEOUT);
    let ns = NetNs::new("vlan")?;
    ns.ip("link add v0 type veth peer name v1")?;
    match ns.ip("link add link v0 name v0.100 type vlan id 100") {
        Ok(_) => Ok(VlanDevices::Available),
        Err(e) => {
            let said = format!("{e:#}");
            // The kernel's answer for an unknown link type (rtnetlink.c, rtnl_newlink):
            // EOPNOTSUPP, with the extack message where iproute2 shows it.
            if said.contains("Unknown device type") || said.contains("Operation not supported") {
                Ok(VlanDevices::Missing(said))
            } else {
                Err(e.context("creating a VLAN device in a scratch namespace"))
            }
        }
    }
}
