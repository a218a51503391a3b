//! The IPv6 side of the harness: links without IPv4, the site's DHCPv6 server (dnsmasq, with or
//! without router advertisements), and a DHCPv6 client that speaks like EDK2 and iPXE.
//!
//! Addresses come from fd00::/8 (unique-local, RFC 4193) only, on links inside namespaces the
//! test made. Duplicate address detection is switched off on every interface here: a tentative
//! address cannot be bound, and DAD would add a second or two to every start.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use boot_common::wire::dhcpv6::{self, message_type, option};
use boot_common::wire::{MacAddr, ipv6};
use nix::errno::Errno;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{Binding, COMMAND_TIMEOUT, ChildGuard, NetNs, STARTUP_TIMEOUT, run_command};

/// How long an interface may take to have its link-local address usable.
const ADDRESS_TIMEOUT: Duration = Duration::from_secs(5);

/// Switches off duplicate address detection on `iface` in `ns` (and for interfaces made there
/// later), so addresses are usable at once. Call before adding addresses.
pub fn no_dad(ns: &NetNs, iface: &str) -> Result<()> {
    for key in ["all", "default", iface] {
        run_command(
            Command::new("ip")
                .args(["netns", "exec", ns.name(), "sysctl", "-qw"])
                .arg(format!("net.ipv6.conf.{key}.accept_dad=0")),
            COMMAND_TIMEOUT,
        )?;
    }
    Ok(())
}

/// Adds `cidr` (an fd00::/8 address with its prefix) to `iface`, without DAD.
pub fn add_address6(ns: &NetNs, iface: &str, cidr: &str) -> Result<()> {
    ns.ip(&format!("-6 addr add {cidr} dev {iface} nodad"))?;
    Ok(())
}

/// Waits until `iface` has a link-local address and none is tentative.
pub fn wait_ipv6_ready(ns: &NetNs, iface: &str) -> Result<()> {
    let deadline = Instant::now() + ADDRESS_TIMEOUT;
    loop {
        let all = ns.ip(&format!("-6 addr show dev {iface}"))?;
        let tentative = ns.ip(&format!("-6 addr show dev {iface} tentative"))?;
        if all.contains("fe80::") && tentative.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{iface} in {} has no usable link-local address: {all}",
                ns.name()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The link-local address of `iface` in `ns`.
pub fn link_local(ns: &NetNs, iface: &str) -> Result<Ipv6Addr> {
    let text = ns.ip(&format!("-6 addr show dev {iface} scope link"))?;
    text.split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no link-local address on {iface}: {text}"))
}

/// How many UDP sockets over IPv6 in `ns` are bound to `port` (any address).
pub fn udp6_sockets_on(ns: &NetNs, port: u16) -> Result<usize> {
    ns.run(|| {
        let table = std::fs::read_to_string("/proc/thread-self/net/udp6")?;
        let wanted = format!(":{port:04X}");
        Ok(table
            .lines()
            .skip(1)
            .filter(|line| {
                line.split_whitespace()
                    .nth(1)
                    .is_some_and(|local| local.ends_with(&wanted))
            })
            .count())
    })
}

// ---------------------------------------------------------------------------------------------
// The site's DHCPv6 server

/// dnsmasq as the site's DHCPv6 server on one interface (no DNS, no DHCPv4, no PXE): stateful
/// addresses from `range`, and with `ra` router advertisements of its own (`--enable-ra`: the
/// M flag for a stateful range).
#[derive(Debug)]
pub struct Dnsmasq6 {
    pub child: ChildGuard,
}

impl Dnsmasq6 {
    pub fn start(
        ns: &NetNs,
        iface: &str,
        range: (Ipv6Addr, Ipv6Addr),
        dir: &Path,
        binding: Binding,
        ra: bool,
        extra: &[String],
    ) -> Result<Dnsmasq6> {
        let mut args = vec![
            "--keep-in-foreground".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            "--port=0".to_owned(),
            format!("--interface={iface}"),
            format!("--dhcp-range={},{},64,1h", range.0, range.1),
            format!("--dhcp-leasefile={}", dir.join("dnsmasq6.leases").display()),
            format!("--pid-file={}", dir.join("dnsmasq6.pid").display()),
            "--log-dhcp".to_owned(),
            "--log-facility=-".to_owned(),
        ];
        if ra {
            args.push("--enable-ra".to_owned());
            // RAs every few seconds rather than minutes: the firmware starts after dnsmasq.
            args.push(format!("--ra-param={iface},3,0"));
        }
        if binding == Binding::Interfaces {
            args.push("--bind-interfaces".to_owned());
        }
        args.extend(extra.iter().cloned());
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let before = udp6_sockets_on(ns, dhcpv6::SERVER_PORT)?;
        let mut child = ns.spawn(
            "dnsmasq (DHCPv6)",
            Path::new("dnsmasq"),
            &args,
            &[],
            dir.join("dnsmasq6.log"),
        )?;
        child.wait_until("listening on port 547", STARTUP_TIMEOUT, || {
            Ok(udp6_sockets_on(ns, dhcpv6::SERVER_PORT)? > before)
        })?;
        Ok(Dnsmasq6 { child })
    }
}

// ---------------------------------------------------------------------------------------------
// Requests, as firmware sends them

/// A DHCPv6 message with `options` in order.
pub fn message(msg_type: u8, xid: u32, options: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let mut writer = dhcpv6::Writer::new(&mut buf, msg_type, xid).expect("room for the header");
    for (code, data) in options {
        writer.option(*code, data).expect("room for the option");
    }
    let len = writer.finish();
    buf.truncate(len);
    buf
}

/// Option 16 of enterprise 343 with one class string.
pub fn vendor_class(class: &[u8]) -> Vec<u8> {
    [
        &dhcpv6::ENTERPRISE_INTEL.to_be_bytes()[..],
        &(class.len() as u16).to_be_bytes(),
        class,
    ]
    .concat()
}

/// EDK2's DUID-UUID for a machine whose SMBIOS UUID ends in `mac` (the lab's VMs'), in EFI
/// GUID byte order.
pub fn edk2_duid(mac: MacAddr) -> Vec<u8> {
    let m = mac.octets();
    [
        &[
            0, 4, 0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99,
        ][..],
        &m,
    ]
    .concat()
}

/// EDK2's Solicit: its DHCPv6 driver's client id, elapsed time and IA_NA (`Dhcp6Io.c`), then
/// `PxeBcBuildDhcp6Options` (PXE) or `HttpBootBuildDhcp6Options` (HTTP): ORO, UNDI, arch and
/// the vendor class.
pub fn edk2_solicit(mac: MacAddr, http: bool, xid: u32) -> Vec<u8> {
    let mut options = vec![
        (option::CLIENT_ID, edk2_duid(mac)),
        (option::ELAPSED_TIME, vec![0, 0]),
        (option::IA_NA, vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
    ];
    options.extend(edk2_boot_options(http));
    message(message_type::SOLICIT, xid, &options)
}

fn edk2_boot_options(http: bool) -> Vec<(u16, Vec<u8>)> {
    if http {
        vec![
            (option::ORO, vec![0, 59, 0, 60, 0, 23, 0, 16]),
            (option::NII, vec![1, 3, 0]),
            (option::CLIENT_ARCH_TYPE, vec![0, 16]),
            (
                option::VENDOR_CLASS,
                vendor_class(b"HTTPClient:Arch:00016:UNDI:003000"),
            ),
        ]
    } else {
        vec![
            (option::ORO, vec![0, 59, 0, 60]),
            (option::NII, vec![1, 3, 0]),
            (option::CLIENT_ARCH_TYPE, vec![0, 7]),
            (
                option::VENDOR_CLASS,
                vendor_class(b"PXEClient:Arch:00007:UNDI:003000"),
            ),
        ]
    }
}

/// EDK2's PXEv6 Request to port 4011 (`PxeBcRequestBootService`): the proxy Advertise's
/// transaction id and Server Identifier, then its Request's options but the IAs.
pub fn edk2_boot_service_request(mac: MacAddr, server_duid: &[u8], xid: u32) -> Vec<u8> {
    let mut options = vec![
        (option::SERVER_ID, server_duid.to_vec()),
        (option::CLIENT_ID, edk2_duid(mac)),
        (option::ELAPSED_TIME, vec![0, 0]),
    ];
    options.extend(edk2_boot_options(false));
    message(message_type::REQUEST, xid, &options)
}

/// iPXE's Information-request (`dhcpv6_tx` in the stateless state): DUID-LL, ORO, user class
/// "iPXE", elapsed time.
pub fn ipxe_information_request(mac: MacAddr, xid: u32) -> Vec<u8> {
    message(
        message_type::INFORMATION_REQUEST,
        xid,
        &[
            (option::CLIENT_ID, dhcpv6::duid_ll(mac).to_vec()),
            (option::ORO, vec![0, 23, 0, 24, 0, 59, 0, 60]),
            (option::USER_CLASS, [&[0, 4][..], b"iPXE"].concat()),
            (option::ELAPSED_TIME, vec![0, 0]),
        ],
    )
}

/// A Solicit without boot marks, as EDK2's own DHCPv6 session for the address sends one.
pub fn plain_solicit(mac: MacAddr, xid: u32) -> Vec<u8> {
    message(
        message_type::SOLICIT,
        xid,
        &[
            (option::CLIENT_ID, edk2_duid(mac)),
            (option::ELAPSED_TIME, vec![0, 0]),
            (option::IA_NA, vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            (option::ORO, vec![0, 23]),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// A DHCPv6 client

/// One datagram a [`Probe6`] received.
#[derive(Debug, Clone)]
pub struct Received6 {
    pub from: SocketAddrV6,
    pub to: Ipv6Addr,
    pub bytes: Vec<u8>,
}

impl Received6 {
    pub fn msg_type(&self) -> u8 {
        self.bytes.first().copied().unwrap_or(0)
    }

    pub fn transaction_id(&self) -> Option<u32> {
        dhcpv6::Packet::new_checked(&self.bytes[..])
            .ok()
            .map(|p| p.transaction_id())
    }

    /// The data of option `code`, read by the wire layer.
    pub fn option(&self, code: u16) -> Option<Vec<u8>> {
        dhcpv6::Packet::new_checked(&self.bytes[..])
            .ok()?
            .find(code)
            .ok()?
            .map(<[u8]>::to_vec)
    }

    pub fn server_id(&self) -> Option<Vec<u8>> {
        self.option(option::SERVER_ID)
    }

    pub fn boot_file_url(&self) -> Option<String> {
        self.option(option::BOOTFILE_URL)
            .and_then(|u| String::from_utf8(u).ok())
    }
}

/// A DHCPv6 client socket on one interface: `[::]:port` tied to the interface, sending to
/// multicast through it.
pub struct Probe6 {
    socket: UdpSocket,
    pub ifindex: u32,
}

impl Probe6 {
    pub fn bind(ns: &NetNs, iface: &str, address: Ipv6Addr, port: u16) -> Result<Probe6> {
        let iface = iface.to_owned();
        let (socket, ifindex) = ns.run(move || {
            let ifindex = nix::net::if_::if_nametoindex(iface.as_str())?;
            let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_only_v6(true)?;
            socket.set_reuse_address(true)?;
            socket.bind_device(Some(iface.as_bytes()))?;
            socket.set_multicast_if_v6(ifindex)?;
            setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?;
            let scope = if address.is_unicast_link_local() {
                ifindex
            } else {
                0
            };
            socket
                .bind(&SocketAddrV6::new(address, port, 0, scope).into())
                .with_context(|| format!("binding [{address}]:{port} on {iface}"))?;
            Ok((UdpSocket::from(socket), ifindex))
        })?;
        Ok(Probe6 { socket, ifindex })
    }

    /// Sends `bytes` to `to` (a link-local or multicast one through our interface).
    pub fn send(&self, bytes: &[u8], to: Ipv6Addr, port: u16) -> Result<()> {
        let scope = if to.is_unicast_link_local() || to.is_multicast() {
            self.ifindex
        } else {
            0
        };
        self.socket
            .send_to(bytes, SocketAddrV6::new(to, port, 0, scope))
            .with_context(|| format!("sending to [{to}]:{port}"))?;
        Ok(())
    }

    /// Sends `bytes` to All_DHCP_Relay_Agents_and_Servers, port 547.
    pub fn multicast(&self, bytes: &[u8]) -> Result<()> {
        self.send(
            bytes,
            dhcpv6::ALL_RELAY_AGENTS_AND_SERVERS,
            dhcpv6::SERVER_PORT,
        )
    }

    /// Collects datagrams until `done` says enough or `window` passes.
    pub fn collect(
        &self,
        window: Duration,
        mut done: impl FnMut(&[Received6]) -> bool,
    ) -> Result<Vec<Received6>> {
        let deadline = Instant::now() + window;
        let mut received = Vec::new();
        let mut buf = vec![0u8; 2048];
        loop {
            if done(&received) {
                return Ok(received);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(received);
            }
            self.socket.set_read_timeout(Some(deadline - now))?;
            if let Some(datagram) = receive6(&self.socket, &mut buf)? {
                received.push(datagram);
            }
        }
    }
}

fn receive6(socket: &UdpSocket, buf: &mut [u8]) -> Result<Option<Received6>> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let msg = match recvmsg::<SockaddrIn6>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    ) {
        Ok(msg) => msg,
        Err(Errno::EAGAIN | Errno::EINTR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let from = msg.address.context("datagram without a source address")?;
    let mut to = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::Ipv6PacketInfo(info) = c {
            to = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
        }
    }
    let len = msg.bytes;
    Ok(Some(Received6 {
        from: SocketAddrV6::new(from.ip(), from.port(), 0, from.scope_id()),
        to: to.context("datagram without IPV6_PKTINFO")?,
        bytes: buf[..len].to_vec(),
    }))
}

/// The MAC of a link-local address's EUI-64 identifier (re-exported for tests).
pub fn mac_of(address: Ipv6Addr) -> Option<MacAddr> {
    ipv6::eui64_mac(address)
}
