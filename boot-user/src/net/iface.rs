//! The interface table: ifindex → name, MAC, MTU and IPv4 and IPv6 addresses, kept current by
//! listening to rtnetlink link and address events.
//!
//! The server address in siaddr, option 54 and boot URLs must be an address of the interface
//! the request came in on (a multi-homed provisioning host serves several racks); this table is
//! where the backends look it up.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, RwLock};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::{InterfaceFlags, if_nametoindex};
use nix::sys::socket::{MsgFlags, SockFlag, recv};

/// An IPv4 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(self.addr) & mask == u32::from(other) & mask
    }
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub up: bool,
    /// In the order the kernel lists them; the first is the primary address.
    pub addrs: Vec<Ipv4Net>,
    /// IPv6 addresses, link-local ones included, in the order the kernel lists them.
    pub addrs6: Vec<Ipv6Addr>,
    /// Set for an 802.1Q sub-interface (`eth0.100`): its parent and VLAN id.
    pub vlan: Option<Vlan>,
}

/// A VLAN sub-interface's place: tagged frames with `id` on `parent` belong to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vlan {
    pub parent: u32,
    pub id: u16,
}

impl Interface {
    /// Which of our addresses to hand a client whose request reached `destination`.
    ///
    /// A unicast request (a 4011 REQUEST sent to our option 54, or a relay agent's forward) was
    /// addressed to one of ours: answering from that same address is what iPXE checks (it
    /// accepts the ACK only with the option 54 it sent to). A broadcast request gets the
    /// interface's primary address, or for relayed requests the address in the relay's subnet
    /// if there is one.
    pub fn server_address(&self, destination: Ipv4Addr, giaddr: Ipv4Addr) -> Option<Ipv4Addr> {
        if let Some(net) = self.addrs.iter().find(|n| n.addr == destination) {
            return Some(net.addr);
        }
        if !giaddr.is_unspecified()
            && let Some(net) = self.addrs.iter().find(|n| n.contains(giaddr))
        {
            return Some(net.addr);
        }
        self.addrs.first().map(|n| n.addr)
    }
}

impl Interface {
    /// The address to put in an IPv6 boot URL when the config names none: the first global or
    /// unique-local one ([`crate::dhcp6::url_address_problem`]).
    pub fn url_address6(&self) -> Option<Ipv6Addr> {
        self.addrs6
            .iter()
            .copied()
            .find(|&a| crate::dhcp6::url_address_problem(a).is_none())
    }

    /// Whether `address` is one of this interface's IPv6 addresses.
    pub fn has_address6(&self, address: Ipv6Addr) -> bool {
        self.addrs6.contains(&address)
    }
}

/// A snapshot of the host's interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceTable {
    by_index: BTreeMap<u32, Interface>,
}

impl InterfaceTable {
    /// Reads the current interfaces with getifaddrs(3) and sysfs.
    pub fn read() -> io::Result<InterfaceTable> {
        let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
        for ifa in getifaddrs()? {
            let name = ifa.interface_name.clone();
            let entry = match by_name.get_mut(&name) {
                Some(entry) => entry,
                None => {
                    let Ok(index) = if_nametoindex(name.as_str()) else {
                        continue; // vanished between the two calls
                    };
                    by_name.entry(name.clone()).or_insert(Interface {
                        index,
                        mtu: read_mtu(&name).unwrap_or(1500),
                        name,
                        mac: None,
                        up: false,
                        addrs: Vec::new(),
                        addrs6: Vec::new(),
                        vlan: None,
                    })
                }
            };
            entry.up |= ifa.flags.contains(InterfaceFlags::IFF_UP);
            let Some(address) = ifa.address else { continue };
            if let Some(link) = address.as_link_addr() {
                if let Some(mac) = link.addr() {
                    entry.mac = Some(mac);
                }
            } else if let Some(v4) = address.as_sockaddr_in() {
                let prefix = ifa
                    .netmask
                    .and_then(|m| m.as_sockaddr_in().map(|m| u32::from(m.ip()).count_ones()))
                    .unwrap_or(32) as u8;
                entry.addrs.push(Ipv4Net {
                    addr: v4.ip(),
                    prefix,
                });
            } else if let Some(v6) = address.as_sockaddr_in6() {
                entry.addrs6.push(v6.ip());
            }
        }
        for (name, vlan) in read_vlans(&by_name) {
            if let Some(iface) = by_name.get_mut(&name) {
                iface.vlan = Some(vlan);
            }
        }
        Ok(InterfaceTable {
            by_index: by_name.into_values().map(|i| (i.index, i)).collect(),
        })
    }

    /// The sub-interface that tagged frames with VLAN `id` arriving on `parent` belong to.
    pub fn vlan_child(&self, parent: u32, id: u16) -> Option<&Interface> {
        self.by_index
            .values()
            .find(|i| i.vlan == Some(Vlan { parent, id }))
    }

    pub fn get(&self, index: u32) -> Option<&Interface> {
        self.by_index.get(&index)
    }

    pub fn by_name(&self, name: &str) -> Option<&Interface> {
        self.by_index.values().find(|i| i.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Interface> {
        self.by_index.values()
    }

    #[cfg(test)]
    pub fn from_interfaces(list: Vec<Interface>) -> InterfaceTable {
        InterfaceTable {
            by_index: list.into_iter().map(|i| (i.index, i)).collect(),
        }
    }
}

/// VLAN sub-interfaces from `/proc/net/vlan/config` (the 8021q module's table; absent when no
/// VLAN device exists). Lines read `eth0.100       | 100  | eth0`.
fn read_vlans(known: &BTreeMap<String, Interface>) -> Vec<(String, Vlan)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/vlan/config") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('|').map(str::trim);
            let (name, id, parent) = (fields.next()?, fields.next()?, fields.next()?);
            let id = id.parse().ok()?;
            let parent = known.get(parent)?.index;
            Some((name.to_owned(), Vlan { parent, id }))
        })
        .collect()
}

fn read_mtu(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The live table, shared by the backends and refreshed by [`Interfaces::watch`].
#[derive(Debug, Default)]
pub struct Interfaces {
    current: RwLock<Arc<InterfaceTable>>,
}

impl Interfaces {
    /// Subscribes to rtnetlink events, then reads the table: in that order, so no change made
    /// between the two is missed. Run the returned [`Watcher`] to keep the table current.
    pub fn new() -> io::Result<(Arc<Interfaces>, Watcher)> {
        let socket = netlink_socket()?;
        let interfaces = Arc::new(Interfaces {
            current: RwLock::new(Arc::new(InterfaceTable::read()?)),
        });
        let watcher = Watcher {
            socket,
            interfaces: interfaces.clone(),
        };
        Ok((interfaces, watcher))
    }

    /// The current snapshot; cheap (an `Arc` clone).
    pub fn snapshot(&self) -> Arc<InterfaceTable> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn refresh(&self) -> io::Result<()> {
        let table = Arc::new(InterfaceTable::read()?);
        match self.current.write() {
            Ok(mut guard) => *guard = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
        Ok(())
    }
}

/// Keeps an [`Interfaces`] table current from rtnetlink link and address events.
pub struct Watcher {
    socket: OwnedFd,
    interfaces: Arc<Interfaces>,
}

impl Watcher {
    /// Re-reads the table whenever rtnetlink reports a change. Runs until the netlink socket
    /// fails.
    pub async fn run(self) -> io::Result<()> {
        let fd = super::register(self.socket)?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let mut guard = fd.readable().await?;
            // Drain everything queued: one refresh covers a burst of events.
            let mut changed = false;
            loop {
                match recv(
                    guard.get_inner().as_raw_fd(),
                    &mut buf,
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(0) => break,
                    Ok(_) => changed = true,
                    // ENOBUFS: events were lost; a full re-read is exactly the recovery.
                    Err(nix::errno::Errno::ENOBUFS) => changed = true,
                    Err(nix::errno::Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if changed {
                self.interfaces.refresh()?;
                tracing::debug!("interface table refreshed");
            }
        }
    }
}

/// An rtnetlink socket subscribed to link and address events (rtnetlink(7)).
fn netlink_socket() -> io::Result<OwnedFd> {
    let groups = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
    Ok(super::netlink::socket(SockFlag::SOCK_NONBLOCK, groups)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface() -> Interface {
        Interface {
            index: 2,
            name: "eth0".into(),
            mac: Some([2, 0, 0, 0, 0, 1]),
            mtu: 1500,
            up: true,
            vlan: None,
            addrs6: vec![
                "fe80::1".parse().unwrap(),
                "fd00:18::1".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ],
            addrs: vec![
                Ipv4Net {
                    addr: Ipv4Addr::new(198, 18, 0, 1),
                    prefix: 24,
                },
                Ipv4Net {
                    addr: Ipv4Addr::new(198, 18, 5, 1),
                    prefix: 24,
                },
            ],
        }
    }

    #[test]
    fn unicast_requests_are_answered_from_the_address_they_reached() {
        let i = iface();
        let any = Ipv4Addr::UNSPECIFIED;
        assert_eq!(
            i.server_address(Ipv4Addr::new(198, 18, 5, 1), any),
            Some(Ipv4Addr::new(198, 18, 5, 1))
        );
        assert_eq!(
            i.server_address(Ipv4Addr::BROADCAST, any),
            Some(Ipv4Addr::new(198, 18, 0, 1))
        );
        assert_eq!(
            i.server_address(Ipv4Addr::BROADCAST, Ipv4Addr::new(198, 18, 5, 254)),
            Some(Ipv4Addr::new(198, 18, 5, 1))
        );
    }

    #[test]
    fn the_ipv6_url_address_is_the_first_that_is_not_link_local() {
        let mut i = iface();
        assert_eq!(i.url_address6(), Some("fd00:18::1".parse().unwrap()));
        i.addrs6.retain(|a| a.is_unicast_link_local());
        assert_eq!(i.url_address6(), None);
    }

    #[test]
    fn loopback_is_in_the_live_table() {
        let table = InterfaceTable::read().unwrap();
        let lo = table.by_name("lo").expect("every Linux host has lo");
        assert!(
            lo.addrs
                .iter()
                .any(|n| n.addr == Ipv4Addr::LOCALHOST && n.prefix == 8)
        );
        assert_eq!(table.get(lo.index).map(|i| i.name.as_str()), Some("lo"));
    }

    #[test]
    fn prefixes_contain_their_subnet() {
        let net = Ipv4Net {
            addr: Ipv4Addr::new(198, 18, 0, 1),
            prefix: 24,
        };
        assert!(net.contains(Ipv4Addr::new(198, 18, 0, 200)));
        assert!(!net.contains(Ipv4Addr::new(198, 18, 1, 1)));
        let all = Ipv4Net {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        };
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    }
}
