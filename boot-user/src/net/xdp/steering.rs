//! `--steer auto` kept safe for the life of the daemon: a watcher of the host's UDP port-67
//! sockets that switches every XDP interface to tee while any other program holds the port,
//! and back to auto when none does, logging each switch.
//!
//! The XDP program already asks the kernel, per frame, whether a socket would receive a boot
//! DISCOVER before it takes one (`SteerMode::Auto`), so a DHCP server that binds 0.0.0.0:67 is
//! safe from its first packet. The watcher adds what that lookup cannot see (a server whose
//! socket on 67 is bound to a unicast address while it reads broadcasts through a packet
//! socket, as Kea's raw-socket mode does; one bound to a VLAN device), and gives operators a
//! log line naming the process each time the steering changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use boot_common::{DHCP_SERVER_PORT, SteerMode};

use super::program::{ConfigWriter, ProgramConfig};
use crate::net::sockdiag::{self, BoundSocket};

/// How often the host's port-67 sockets are listed: a server that binds is teed within this.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// One interface the watcher steers.
pub struct Steered {
    pub interface: String,
    pub writer: ConfigWriter,
    /// The program's settings with [`SteerMode::Auto`]; the watcher writes them back with the
    /// steering it decides.
    pub config: ProgramConfig,
}

/// Who holds port 67 besides xdpboot, as the log names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub socket: BoundSocket,
    /// `(pid, command)`, when the process could be found.
    pub process: Option<(u32, String)>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.process {
            Some((pid, name)) => write!(f, "{name} (pid {pid}) on {}", self.socket.local)?,
            None => write!(f, "inode {} on {}", self.socket.inode, self.socket.local)?,
        }
        if self.socket.device != 0 {
            write!(f, " (device {})", self.socket.device)?;
        }
        Ok(())
    }
}

/// What the watcher concludes from one look at the sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Another program holds UDP 67: tee everything.
    Tee,
    /// Nobody else does: let the program take what no socket would receive.
    Auto,
}

impl Decision {
    fn steer(self) -> SteerMode {
        match self {
            Decision::Tee => SteerMode::Tee,
            Decision::Auto => SteerMode::Auto,
        }
    }
}

/// The steering for the sockets seen: tee while any socket not in `own` holds the port. A
/// failed look counts as held: not knowing is no reason to take a frame.
pub fn decide(seen: Option<&[BoundSocket]>, own: &BTreeSet<u32>) -> Decision {
    match seen {
        Some(sockets) if sockets.iter().all(|s| own.contains(&s.inode)) => Decision::Auto,
        _ => Decision::Tee,
    }
}

/// Keeps the interfaces' steering in line with the host's port-67 sockets.
pub struct PortWatcher {
    steered: Vec<Steered>,
    current: Option<Decision>,
    /// Sockets already named in the log, by inode (the `/proc` walk that names a process is
    /// done once per new socket).
    known: BTreeMap<u32, Holder>,
}

impl PortWatcher {
    pub fn new(steered: Vec<Steered>) -> PortWatcher {
        PortWatcher {
            steered,
            current: None,
            known: BTreeMap::new(),
        }
    }

    /// Looks at the sockets now and applies the decision. Returns it.
    pub fn poll(&mut self) -> Decision {
        let seen = match sockdiag::udp_sockets_on(DHCP_SERVER_PORT) {
            Ok(seen) => Some(seen),
            Err(e) => {
                if self.current != Some(Decision::Tee) {
                    tracing::warn!(error = %e, "cannot list the host's UDP port-67 sockets: teeing to be safe");
                }
                None
            }
        };
        let own = own_socket_inodes();
        let decision = decide(seen.as_deref(), &own);
        let holders: Vec<Holder> = seen
            .iter()
            .flatten()
            .filter(|s| !own.contains(&s.inode))
            .map(|socket| {
                self.known
                    .entry(socket.inode)
                    .or_insert_with(|| Holder {
                        socket: socket.clone(),
                        process: sockdiag::owner_of(socket.inode),
                    })
                    .clone()
            })
            .collect();
        // Forget sockets that went away; a new one with a reused inode is looked up again.
        self.known
            .retain(|inode, _| holders.iter().any(|h| h.socket.inode == *inode));
        if self.current != Some(decision) {
            self.apply(decision, &holders);
        }
        decision
    }

    fn apply(&mut self, decision: Decision, holders: &[Holder]) {
        let mut switched = Vec::new();
        for steered in &mut self.steered {
            let config = ProgramConfig {
                steer: decision.steer(),
                ..steered.config
            };
            match steered.writer.set(&config) {
                Ok(()) => switched.push(steered.interface.as_str()),
                Err(e) => tracing::error!(
                    iface = %steered.interface,
                    error = %e,
                    "could not change the XDP program's steering"
                ),
            }
        }
        let interfaces = switched.join(", ");
        let held_by = holders
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        match decision {
            Decision::Tee if holders.is_empty() => {}
            Decision::Tee => tracing::info!(
                iface = %interfaces,
                held_by = %held_by,
                steer = "tee",
                "UDP port 67 is held by another program: port-67 boot DISCOVERs are teed (copied \
                 to xdpboot and still passed to it)"
            ),
            Decision::Auto => tracing::info!(
                iface = %interfaces,
                steer = "auto",
                "no other program holds UDP port 67: port-67 boot DISCOVERs are taken by xdpboot \
                 while no socket would receive them"
            ),
        }
        self.current = Some(decision);
    }

    /// Polls every [`POLL_INTERVAL`] for as long as the daemon runs.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The dump and the occasional /proc walk block for a moment: off the reactor.
            self = match tokio::task::spawn_blocking(move || {
                self.poll();
                self
            })
            .await
            {
                Ok(watcher) => watcher,
                Err(e) => {
                    tracing::error!(error = %e, "the port-67 watcher failed: steering stays as it is");
                    return;
                }
            };
        }
    }
}

/// Inodes of this process's own sockets (the UDP backend's, where some interfaces use it):
/// ours on port 67 do not make the XDP interfaces tee.
fn own_socket_inodes() -> BTreeSet<u32> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return BTreeSet::new();
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(inode: u32) -> BoundSocket {
        BoundSocket {
            local: "0.0.0.0:67".parse().unwrap(),
            device: 0,
            inode,
            uid: 0,
        }
    }

    #[test]
    fn another_programs_socket_on_67_means_tee_and_ours_do_not() {
        let own = BTreeSet::from([7]);
        assert_eq!(decide(Some(&[]), &own), Decision::Auto);
        assert_eq!(decide(Some(&[socket(7)]), &own), Decision::Auto);
        assert_eq!(decide(Some(&[socket(7), socket(8)]), &own), Decision::Tee);
        assert_eq!(decide(None, &own), Decision::Tee, "unknown is held");
    }

    #[test]
    fn this_process_s_sockets_are_its_own() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let found = sockdiag::udp_sockets_on(socket.local_addr().unwrap().port()).unwrap();
        assert!(own_socket_inodes().contains(&found[0].inode));
    }
}
