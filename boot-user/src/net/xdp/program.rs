//! The kernel half of the XDP backend: loads xdpboot's XDP program (built from `boot-ebpf` by
//! `build.rs` and embedded in the binary), configures it, attaches it to an interface and
//! reads what it counts and tees.
//!
//! One [`XdpProgram`] serves one interface: its counters, its socket slots (by rx queue) and
//! its ring of teed frames are that interface's. The backend's sequence:
//!
//! ```text
//! let mut program = XdpProgram::load()?;
//! program.set_config(&ProgramConfig { .. })?;
//! program.set_inventory(&macs)?;
//! let ring = program.take_tee_ring()?;          // poll it; parse_tee_record() each item
//! let attachment = program.attach("eth0", AttachMode::Auto, ExistingProgram::Refuse)?;
//! program.register_socket(queue, xsk_fd)?;      // per rx queue with an AF_XDP socket
//! ...
//! drop(attachment);                             // detaches (the BPF link closes)
//! ```
//!
//! [`attached_counters`] reads the counters of a daemon's program from another process
//! (`xdpboot stats`) without anything pinned; [`attached_xdp`] says what is attached to an
//! interface. [`XdpProgram::test_run`] and [`XdpProgram::test_run_repeat`] run the program on a
//! frame with `BPF_PROG_TEST_RUN`, for tests and benchmarks.

mod attached;
#[cfg(test)]
mod tests;

use std::{
    borrow::Borrow,
    collections::HashSet,
    fmt, io,
    mem::offset_of,
    os::fd::{AsFd as _, AsRawFd, OwnedFd},
    str::FromStr,
    time::Duration,
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, MapInfo, PerCpuArray, RingBuf, XskMap},
    programs::{
        ProgramError, ProgramInfo, TestRun as _, TestRunOptions, Xdp, XdpMode, loaded_programs,
        xdp::XdpLink,
    },
};
use boot_common::{
    CONFIG_FLAG_IPV6, CONFIG_FLAG_WAKEUP, CONFIG_MAP, COUNTERS_MAP, Config, INVENTORY_MAP,
    INVENTORY_MAX_ENTRIES, MacKey, PRIORITY_RING_MAP, PROGRAM_NAME, TEE_CAPTURE_LEN,
    TEE_RECORD_LEN, TEE_RING_MAP, TeeRecord, XSK_MAP,
};
pub use boot_common::{Counter, SteerMode, TeeHeader};

pub use self::attached::{AttachedXdp, XdpHook, attached_xdp};

/// The XDP object built by `build.rs`; empty when the binary was built with `AYA_BUILD_SKIP=1`.
fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/boot-ebpf"))
}

/// Shortest frame `BPF_PROG_TEST_RUN` accepts for XDP: an Ethernet header (`ETH_HLEN`).
pub const MIN_TEST_FRAME_LEN: usize = 14;

/// Every verdict counter with its value, in [`Counter::ALL`] order.
pub type CounterValues = [(Counter, u64); Counter::COUNT as usize];

/// The ring buffer of teed boot DISCOVERs. Take records with `next()` and read each with
/// [`parse_tee_record`]. The ring is `AsRawFd`/`AsFd` and owns its descriptor, so
/// [`crate::net::register`] wraps it in tokio's `AsyncFd`; but with
/// [`ProgramConfig::ring_wakeup`] off (records submitted with `BPF_RB_NO_WAKEUP`) the kernel
/// never signals the descriptor, so poll on a short timer instead.
pub type TeeRing = RingBuf<MapData>;

// The ring owns its map's descriptor, open and unchanged for as long as the ring lives.
impl crate::net::OwnsFd for TeeRing {}

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error(
        "this xdpboot binary was built without its eBPF object (AYA_BUILD_SKIP was set): \
         rebuild it without AYA_BUILD_SKIP (`cargo xtask setup` installs the eBPF toolchain), \
         or use the UDP backend"
    )]
    BuiltWithoutObject,
    #[error("loading the eBPF object into the kernel failed")]
    Load(#[source] EbpfError),
    #[error("the eBPF object has no XDP program named `{PROGRAM_NAME}`")]
    MissingProgram(#[source] Option<ProgramError>),
    #[error("the kernel verifier rejected the XDP program `{PROGRAM_NAME}`")]
    Verify(#[source] ProgramError),
    #[error("the XDP program has no map `{name}` of the expected type (or it was handed out)")]
    MissingMap {
        name: &'static str,
        #[source]
        source: Option<MapError>,
    },
    #[error("{action} failed")]
    Map {
        action: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading counter `{}` failed", .counter.name())]
    ReadCounter {
        counter: Counter,
        #[source]
        source: MapError,
    },
    #[error(
        "the inventory lists {count} MACs; the XDP program holds at most {INVENTORY_MAX_ENTRIES}"
    )]
    InventoryTooLarge { count: usize },
    #[error("there is no network interface named `{interface}`")]
    UnknownInterface { interface: String },
    #[error("this XDP program instance already serves {attached}: load one per interface")]
    AlreadyAttached { attached: String },
    #[error(
        "{interface} already has an XDP program attached: {occupant}; pass --force to replace it"
    )]
    Occupied {
        interface: String,
        occupant: Occupant,
    },
    #[error(
        "another xdpboot is running on {interface} ({occupant}): stop it first (its AF_XDP \
         sockets hold the interface's queues, so even --force cannot take over)"
    )]
    AnotherXdpboot {
        interface: String,
        occupant: Occupant,
    },
    #[error("removing the XDP program {occupant} from {interface} failed")]
    Detach {
        interface: String,
        occupant: Occupant,
        #[source]
        source: io::Error,
    },
    #[error("reading the XDP state of {interface} failed")]
    XdpState {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("attaching the XDP program to {interface} in {mode} mode failed")]
    Attach {
        interface: String,
        mode: AttachMode,
        #[source]
        source: ProgramError,
    },
    #[error(
        "no XDP program is attached to {interface} (is xdpboot serving it with the xdp backend?)"
    )]
    NotAttached { interface: String },
    #[error("the XDP program on {interface} is not xdpboot's: {occupant}")]
    NotOurs {
        interface: String,
        occupant: Occupant,
    },
    #[error("reading the XDP program {program_id} on {interface} failed")]
    Inspect {
        interface: String,
        program_id: u32,
        #[source]
        source: InspectError,
    },
    #[error("a test frame must be at least {MIN_TEST_FRAME_LEN} bytes, not {len}")]
    TestFrameTooShort { len: usize },
    #[error("BPF_PROG_TEST_RUN failed")]
    TestRun(#[source] ProgramError),
}

/// Why a program found on an interface could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("the program went away")]
    Gone,
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("it has no `{COUNTERS_MAP}` map")]
    NoCounters,
}

impl XdpError {
    /// Whether the error says this host cannot run BPF programs at all (no privilege, BPF
    /// compiled out or locked down) rather than that something is wrong with ours.
    pub fn is_bpf_unavailable(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<io::Error>() {
                return matches!(io.raw_os_error(), Some(libc::EPERM | libc::ENOSYS));
            }
            source = err.source();
        }
        false
    }
}

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Driver (native) mode, falling back to skb mode when the driver has no XDP support.
    #[default]
    Auto,
    /// Driver (native) mode only: the program runs before the kernel allocates an skb.
    Driver,
    /// skb (generic) mode only: works on every interface, after the skb is allocated.
    Skb,
}

impl AttachMode {
    const fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Auto | AttachMode::Driver => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Auto => "auto",
            AttachMode::Driver => "driver",
            AttachMode::Skb => "skb",
        })
    }
}

impl FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AttachMode::Auto),
            "driver" | "native" | "drv" => Ok(AttachMode::Driver),
            "skb" | "generic" => Ok(AttachMode::Skb),
            other => Err(format!(
                "unknown XDP attach mode `{other}`: expected auto, driver or skb"
            )),
        }
    }
}

/// What [`XdpProgram::attach`] does about an XDP program already on the interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExistingProgram {
    /// Fail with [`XdpError::Occupied`] (or [`XdpError::AnotherXdpboot`]). An xdpboot program
    /// left attached through netlink, which no running process owns, is replaced all the same.
    #[default]
    Refuse,
    /// Detach whatever is there first (`--force`): through netlink, or `BPF_LINK_DETACH` when
    /// a BPF link holds it. Hardware-offloaded programs sit beside ours and stay.
    Replace,
}

/// An XDP program found on an interface's hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occupant {
    pub program_id: u32,
    /// The program's name as the kernel keeps it (at most 15 bytes), empty when unknown.
    pub name: String,
    pub hook: XdpHook,
    /// The BPF link holding it; `None` when it was attached through netlink.
    pub link_id: Option<u32>,
}

impl fmt::Display for Occupant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            // Without CAP_SYS_ADMIN a program cannot be looked up by id: it may well be
            // another xdpboot (the packaged service runs without that capability).
            "(unknown: naming it needs CAP_SYS_ADMIN; is another xdpboot running?)"
        } else {
            &self.name
        };
        write!(
            f,
            "`{name}` (program id {}, {} mode, ",
            self.program_id, self.hook
        )?;
        match self.link_id {
            Some(link) => write!(f, "held by BPF link {link})"),
            None => f.write_str("attached through netlink)"),
        }
    }
}

/// The program's settings ([`boot_common::Config`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramConfig {
    /// What happens to a boot DISCOVER on port 67.
    pub steer: SteerMode,
    /// Boot requests per second each MAC may send on average before the rest are shed;
    /// 0 turns shedding off.
    pub shed_rate: u32,
    /// Boot requests a MAC may send back to back (read as 1 when 0).
    pub shed_burst: u32,
    /// Have the kernel signal the ring's descriptor when records arrive and userspace had
    /// caught up. Off, records are submitted with `BPF_RB_NO_WAKEUP` and userspace polls.
    pub ring_wakeup: bool,
    /// Steer DHCPv6 too (`[ipv6] enabled`); off, IPv6 frames pass untouched.
    pub ipv6: bool,
}

impl From<&ProgramConfig> for Config {
    fn from(config: &ProgramConfig) -> Self {
        Config {
            steer: config.steer as u32,
            flags: if config.ring_wakeup {
                CONFIG_FLAG_WAKEUP
            } else {
                0
            } | if config.ipv6 { CONFIG_FLAG_IPV6 } else { 0 },
            shed_rate: config.shed_rate,
            shed_burst: config.shed_burst,
        }
    }
}

/// What the program returned (`enum xdp_action` in `include/uapi/linux/bpf.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Unknown(u32),
}

impl From<u32> for XdpAction {
    fn from(value: u32) -> Self {
        match value {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            other => XdpAction::Unknown(other),
        }
    }
}

/// The outcome of [`XdpProgram::test_run`] on one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    pub action: XdpAction,
    /// How much each counter grew during the run.
    pub counter_deltas: CounterValues,
}

/// The outcome of [`XdpProgram::test_run_repeat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedRun {
    /// What the last run returned.
    pub action: XdpAction,
    /// The kernel's average time per run (`BPF_PROG_TEST_RUN`'s `duration`).
    pub per_run: Duration,
    /// How much each counter grew over all runs: a benchmark checks these to know which path
    /// it measured (a tee that found the ring full is a different path).
    pub counter_deltas: CounterValues,
}

/// A teed frame: a [`TeeRing`] record read with [`parse_tee_record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TeedFrame<'a> {
    pub header: TeeHeader,
    /// The frame's first `header.captured_len` bytes, from its Ethernet header.
    pub frame: &'a [u8],
}

impl TeedFrame<'_> {
    /// Whether the frame was longer than the record holds.
    pub fn is_truncated(&self) -> bool {
        self.header.packet_len > self.header.captured_len
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TeeRecordError {
    #[error("a tee record of {len} bytes is shorter than the {TEE_RECORD_LEN} the program writes")]
    Short { len: usize },
    #[error("a tee record claims {captured} captured bytes; it holds at most {TEE_CAPTURE_LEN}")]
    CapturedTooLong { captured: u32 },
}

/// Reads one record of the [`TeeRing`]: its header, and its frame cut to the captured length
/// (the rest of the record's array holds stale bytes of earlier frames).
pub fn parse_tee_record(record: &[u8]) -> Result<TeedFrame<'_>, TeeRecordError> {
    if record.len() < TEE_RECORD_LEN {
        return Err(TeeRecordError::Short { len: record.len() });
    }
    // Field by field at the layout's own offsets: the ring's records are 8-byte aligned in
    // the kernel, but nothing promises that of a slice.
    let header_at = offset_of!(TeeRecord, header);
    let u32_at = |field: usize| {
        let at = header_at + field;
        u32::from_ne_bytes([record[at], record[at + 1], record[at + 2], record[at + 3]])
    };
    let u16_at = |field: usize| {
        let at = header_at + field;
        u16::from_ne_bytes([record[at], record[at + 1]])
    };
    let vlan_ids = offset_of!(TeeHeader, vlan_ids);
    let header = TeeHeader {
        packet_len: u32_at(offset_of!(TeeHeader, packet_len)),
        captured_len: u32_at(offset_of!(TeeHeader, captured_len)),
        ifindex: u32_at(offset_of!(TeeHeader, ifindex)),
        rx_queue: u32_at(offset_of!(TeeHeader, rx_queue)),
        vlan_ids: [u16_at(vlan_ids), u16_at(vlan_ids + 2)],
        vlan_tags: record[header_at + offset_of!(TeeHeader, vlan_tags)],
        _pad: [0; 3],
    };
    let captured = header.captured_len as usize;
    if captured > TEE_CAPTURE_LEN {
        return Err(TeeRecordError::CapturedTooLong {
            captured: header.captured_len,
        });
    }
    let frame_at = offset_of!(TeeRecord, frame);
    Ok(TeedFrame {
        header,
        frame: &record[frame_at..frame_at + captured],
    })
}

/// xdpboot's XDP program, loaded and accepted by the verifier, with its maps.
pub struct XdpProgram {
    ebpf: Ebpf,
    /// The interface this instance was attached to: its maps are that interface's.
    interface: Option<String>,
}

impl fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpProgram")
            .field("interface", &self.interface)
            .finish_non_exhaustive()
    }
}

impl XdpProgram {
    /// Loads the embedded object and has the kernel verify the program, with fresh maps: one
    /// instance per interface. Needs root (or `CAP_BPF` + `CAP_NET_ADMIN`).
    pub fn load() -> Result<Self, XdpError> {
        let object = ebpf_object();
        if object.is_empty() {
            return Err(XdpError::BuiltWithoutObject);
        }
        let ebpf = EbpfLoader::new().load(object).map_err(XdpError::Load)?;
        let mut loaded = Self {
            ebpf,
            interface: None,
        };
        loaded.program_mut()?.load().map_err(XdpError::Verify)?;
        loaded.counter_map()?;
        Ok(loaded)
    }

    fn program(&self) -> Result<&Xdp, XdpError> {
        self.ebpf
            .program(PROGRAM_NAME)
            .ok_or(XdpError::MissingProgram(None))?
            .try_into()
            .map_err(|err| XdpError::MissingProgram(Some(err)))
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, XdpError> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(XdpError::MissingProgram(None))?
            .try_into()
            .map_err(|err| XdpError::MissingProgram(Some(err)))
    }

    /// The kernel's id of the loaded program.
    fn program_id(&self) -> Result<u32, XdpError> {
        Ok(self.program_info()?.id())
    }

    fn program_info(&self) -> Result<ProgramInfo, XdpError> {
        self.program()?.info().map_err(XdpError::Verify)
    }

    fn map(&self, name: &'static str) -> Result<&Map, XdpError> {
        self.ebpf
            .map(name)
            .ok_or(XdpError::MissingMap { name, source: None })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, XdpError> {
        self.ebpf
            .map_mut(name)
            .ok_or(XdpError::MissingMap { name, source: None })
    }

    fn counter_map(&self) -> Result<PerCpuArray<&MapData, u64>, XdpError> {
        PerCpuArray::try_from(self.map(COUNTERS_MAP)?).map_err(|source| XdpError::MissingMap {
            name: COUNTERS_MAP,
            source: Some(source),
        })
    }

    fn xsk_map(&mut self) -> Result<XskMap<&mut MapData>, XdpError> {
        XskMap::try_from(self.map_mut(XSK_MAP)?).map_err(|source| XdpError::MissingMap {
            name: XSK_MAP,
            source: Some(source),
        })
    }

    /// How many instructions the verifier walked to accept the program (it gives up at a
    /// million), if the kernel says.
    pub fn verified_instruction_count(&self) -> Result<Option<u32>, XdpError> {
        Ok(self.program_info()?.verified_instruction_count())
    }

    /// Writes the program's settings; they apply to the next frame.
    pub fn set_config(&mut self, config: &ProgramConfig) -> Result<(), XdpError> {
        let mut map: Array<&mut MapData, Config> = Array::try_from(self.map_mut(CONFIG_MAP)?)
            .map_err(|source| XdpError::MissingMap {
                name: CONFIG_MAP,
                source: Some(source),
            })?;
        map.set(0, Config::from(config), 0)
            .map_err(|source| XdpError::Map {
                action: "writing the XDP program's config",
                source,
            })
    }

    /// Makes `macs` the inventory: machines whose boot requests are never shed. MACs of an
    /// earlier inventory that are not in `macs` are removed.
    pub fn set_inventory(&mut self, macs: &[[u8; 6]]) -> Result<(), XdpError> {
        let wanted: HashSet<MacKey> = macs.iter().copied().map(MacKey::new).collect();
        if wanted.len() > INVENTORY_MAX_ENTRIES as usize {
            return Err(XdpError::InventoryTooLarge {
                count: wanted.len(),
            });
        }
        let mut map: HashMap<&mut MapData, MacKey, u8> =
            HashMap::try_from(self.map_mut(INVENTORY_MAP)?).map_err(|source| {
                XdpError::MissingMap {
                    name: INVENTORY_MAP,
                    source: Some(source),
                }
            })?;
        let stale: Vec<MacKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !wanted.contains(key))
            .collect();
        for key in &stale {
            map.remove(key).map_err(|source| XdpError::Map {
                action: "removing a MAC from the XDP program's inventory",
                source,
            })?;
        }
        for key in &wanted {
            map.insert(key, 1, 0).map_err(|source| XdpError::Map {
                action: "adding a MAC to the XDP program's inventory",
                source,
            })?;
        }
        Ok(())
    }

    /// Puts the AF_XDP socket bound to rx queue `queue` of this program's interface in the
    /// queue's slot: boot requests taken on that queue go to it. (The kernel delivers a
    /// redirected frame only to a socket bound to the queue it arrived on.)
    pub fn register_socket(&mut self, queue: u32, socket: impl AsRawFd) -> Result<(), XdpError> {
        self.xsk_map()?
            .set(queue, socket, 0)
            .map_err(|source| XdpError::Map {
                action: "registering an AF_XDP socket with the XDP program",
                source,
            })
    }

    /// Empties the slot of rx queue `queue`: its boot requests on 4011 are passed to the
    /// kernel again (and counted `no_socket`).
    pub fn unregister_socket(&mut self, queue: u32) -> Result<(), XdpError> {
        self.xsk_map()?
            .unset(queue)
            .map_err(|source| XdpError::Map {
                action: "removing an AF_XDP socket from the XDP program",
                source,
            })
    }

    /// Hands out the ring buffer of teed frames; once per program.
    pub fn take_tee_ring(&mut self) -> Result<TeeRing, XdpError> {
        self.take_ring(TEE_RING_MAP)
    }

    /// Hands out the ring buffer of teed frames from inventory MACs; once per program.
    pub fn take_priority_ring(&mut self) -> Result<TeeRing, XdpError> {
        self.take_ring(PRIORITY_RING_MAP)
    }

    fn take_ring(&mut self, name: &'static str) -> Result<TeeRing, XdpError> {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(XdpError::MissingMap { name, source: None })?;
        RingBuf::try_from(map).map_err(|source| XdpError::MissingMap {
            name,
            source: Some(source),
        })
    }

    /// The verdict counters summed over all CPUs.
    pub fn counters(&self) -> Result<CounterValues, XdpError> {
        sum_counters(&self.counter_map()?)
    }

    /// A second handle on this program's counters, for a reader elsewhere (the metrics
    /// collector) while the backend owns the program.
    pub fn counter_reader(&self) -> Result<CounterReader, XdpError> {
        let map = PerCpuArray::try_from(Map::PerCpuArray(self.dup_map(COUNTERS_MAP)?)).map_err(
            |source| XdpError::MissingMap {
                name: COUNTERS_MAP,
                source: Some(source),
            },
        )?;
        Ok(CounterReader { map })
    }

    /// A second handle on this program's settings, for the steering watcher while the backend
    /// owns the program.
    pub fn config_writer(&self) -> Result<ConfigWriter, XdpError> {
        let map = Array::try_from(Map::Array(self.dup_map(CONFIG_MAP)?)).map_err(|source| {
            XdpError::MissingMap {
                name: CONFIG_MAP,
                source: Some(source),
            }
        })?;
        Ok(ConfigWriter { map })
    }

    /// The map `name` opened again through a duplicate of its descriptor: the map lives as
    /// long as either handle does.
    fn dup_map(&self, name: &'static str) -> Result<MapData, XdpError> {
        let missing = |source| XdpError::MissingMap {
            name,
            source: Some(source),
        };
        let data = match self.map(name)? {
            Map::PerCpuArray(data) | Map::Array(data) => data,
            _ => return Err(XdpError::MissingMap { name, source: None }),
        };
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
            missing(MapError::SyscallError(aya::sys::SyscallError {
                call: "dup",
                io_error,
            }))
        })?;
        MapData::from_fd(fd).map_err(missing)
    }

    /// Attaches the program to `interface` through a BPF link, so it goes away with this
    /// process. [`AttachMode::Auto`] tries driver mode first and falls back to skb mode with
    /// a warning. An XDP program already on the interface is handled as `existing` says.
    ///
    /// The program stays attached until the returned [`XdpAttachment`] is dropped. One
    /// program instance serves one interface: attaching it to a second one is refused.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
        existing: ExistingProgram,
    ) -> Result<XdpAttachment, XdpError> {
        if let Some(attached) = self.interface.as_ref().filter(|name| *name != interface) {
            return Err(XdpError::AlreadyAttached {
                attached: attached.clone(),
            });
        }
        let ifindex = ifindex_of(interface)?;
        self.make_room(interface, ifindex, existing)?;

        let attempt = |program: &mut Xdp, mode: AttachMode| {
            program
                .attach_to_if_index(ifindex, mode.xdp_mode())
                .and_then(|id| program.take_link(id))
                .map_err(|source| XdpError::Attach {
                    interface: interface.to_owned(),
                    mode,
                    source,
                })
        };
        let program = self.program_mut()?;
        let attached = match mode {
            AttachMode::Auto => match attempt(program, AttachMode::Driver) {
                Ok(link) => Ok((link, AttachMode::Driver)),
                Err(err) if is_occupied(&err) => Err(err),
                Err(driver_error) => {
                    tracing::warn!(
                        iface = interface,
                        error = %error_chain(&driver_error),
                        "XDP driver mode unavailable, falling back to skb (generic) mode, \
                         which runs after the kernel allocates each packet's skb"
                    );
                    attempt(program, AttachMode::Skb).map(|link| (link, AttachMode::Skb))
                }
            },
            AttachMode::Driver | AttachMode::Skb => attempt(program, mode).map(|link| (link, mode)),
        };
        let (link, mode) = match attached {
            Ok(attached) => attached,
            // Something was attached between our look and our attach: say what.
            Err(err) if is_occupied(&err) => {
                let occupant = self.occupants(interface, ifindex)?.into_iter().next();
                return Err(occupant.map_or(err, |found| refusal(interface, found.occupant)));
            }
            Err(err) => return Err(err),
        };
        self.interface = Some(interface.to_owned());
        tracing::info!(iface = interface, %mode, "XDP program attached");
        Ok(XdpAttachment {
            _link: link,
            interface: interface.to_owned(),
            mode,
        })
    }

    /// Clears the interface's driver and skb hooks of other programs, as `existing` allows.
    fn make_room(
        &self,
        interface: &str,
        ifindex: u32,
        existing: ExistingProgram,
    ) -> Result<(), XdpError> {
        for found in self.occupants(interface, ifindex)? {
            let occupant = found.occupant.clone();
            // No process owns an xdpboot program attached through netlink: a leftover (aya
            // attaches through netlink on kernels without XDP links, and such an attachment
            // outlives its process).
            let stale = occupant.name == PROGRAM_NAME && occupant.link_id.is_none();
            // A running xdpboot (its BPF link alive) is never replaced: its sockets hold the
            // queues, so taking its program away would leave both without a working backend.
            if occupant.name == PROGRAM_NAME && occupant.link_id.is_some() {
                return Err(refusal(interface, occupant));
            }
            match existing {
                ExistingProgram::Refuse if !stale => {
                    return Err(refusal(interface, occupant));
                }
                ExistingProgram::Refuse => tracing::warn!(
                    iface = interface,
                    %occupant,
                    "removing a stale xdpboot XDP program"
                ),
                ExistingProgram::Replace => tracing::warn!(
                    iface = interface,
                    %occupant,
                    "replacing the XDP program already attached (--force)"
                ),
            }
            found.remove(ifindex).map_err(|source| XdpError::Detach {
                interface: interface.to_owned(),
                occupant,
                source,
            })?;
        }
        Ok(())
    }

    /// The programs in the interface's driver and skb hooks. Finding this program itself
    /// there is an error: it is attached already.
    fn occupants(&self, interface: &str, ifindex: u32) -> Result<Vec<Found>, XdpError> {
        let state_error = |source| XdpError::XdpState {
            interface: interface.to_owned(),
            source,
        };
        let state = attached_xdp(ifindex).map_err(state_error)?;
        let own_id = self.program_id()?;
        let mut found = Vec::new();
        for (hook, program_id) in state.programs() {
            if hook == XdpHook::Hardware {
                continue;
            }
            if program_id == own_id {
                return Err(XdpError::AlreadyAttached {
                    attached: interface.to_owned(),
                });
            }
            found.push(Found::inspect(ifindex, hook, program_id).map_err(state_error)?);
        }
        Ok(found)
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` and reports what it returned
    /// and which counters it moved. Counters moved by live traffic on an attached interface
    /// during the run are included.
    ///
    /// The kernel runs it as if the frame arrived on rx queue 0 of the loopback interface of
    /// the caller's network namespace. A redirect is returned, not carried out.
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRunOutcome, XdpError> {
        let run = self.test_run_repeat(frame, 1)?;
        Ok(TestRunOutcome {
            action: run.action,
            counter_deltas: run.counter_deltas,
        })
    }

    /// Runs the program `repeat` times on `frame` with `BPF_PROG_TEST_RUN` and reports the
    /// kernel's average time per run: ns/packet for benchmarks. Every run counts and tees like
    /// a real frame, so a tee benchmark must keep `repeat` below what the ring holds (and
    /// drain it between batches) or it measures the ring-full path; the counter deltas say
    /// which it was.
    pub fn test_run_repeat(&self, frame: &[u8], repeat: u32) -> Result<TimedRun, XdpError> {
        if frame.len() < MIN_TEST_FRAME_LEN {
            return Err(XdpError::TestFrameTooShort { len: frame.len() });
        }
        let before = self.counters()?;
        let result = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::new()
            })
            .map_err(XdpError::TestRun)?;
        let mut counter_deltas = self.counters()?;
        for ((_, delta), (_, old)) in counter_deltas.iter_mut().zip(before) {
            *delta = delta.saturating_sub(old);
        }
        Ok(TimedRun {
            action: XdpAction::from(result.return_value),
            per_run: result.duration,
            counter_deltas,
        })
    }
}

/// An occupant of an XDP hook, with what it takes to remove it.
struct Found {
    occupant: Occupant,
    program: Option<ProgramInfo>,
    /// The descriptor of the BPF link holding it, opened by id.
    link: Option<OwnedFd>,
}

impl Found {
    fn inspect(ifindex: u32, hook: XdpHook, program_id: u32) -> io::Result<Self> {
        let program = find_program(program_id);
        let name = program
            .as_ref()
            .and_then(|info| info.name_as_str())
            .unwrap_or_default()
            .to_owned();
        let link = attached::xdp_link_on(ifindex, program_id)?;
        Ok(Found {
            occupant: Occupant {
                program_id,
                name,
                hook,
                link_id: link.as_ref().map(|(id, _)| *id),
            },
            program,
            link: link.map(|(_, fd)| fd),
        })
    }

    fn remove(self, ifindex: u32) -> io::Result<()> {
        if let Some(link) = &self.link {
            return attached::detach_link(link.as_fd());
        }
        // Only if it is still the program we looked at (it may have gone meanwhile: then the
        // kernel answers EEXIST, and the hook is free or someone else's again).
        let expected = self
            .program
            .as_ref()
            .map(ProgramInfo::fd)
            .transpose()
            .map_err(io::Error::other)?;
        attached::set_xdp_program(
            ifindex,
            self.occupant.hook,
            None,
            expected.as_ref().map(|fd| fd.as_fd()),
        )
    }
}

/// The error for a hook `occupant` holds and we may not clear.
fn refusal(interface: &str, occupant: Occupant) -> XdpError {
    let interface = interface.to_owned();
    if occupant.name == PROGRAM_NAME {
        XdpError::AnotherXdpboot {
            interface,
            occupant,
        }
    } else {
        XdpError::Occupied {
            interface,
            occupant,
        }
    }
}

fn find_program(id: u32) -> Option<ProgramInfo> {
    loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == id)
}

/// Whether an attach failed because the hook is taken: by a program (`EBUSY`), a link
/// (`EBUSY`), or a program in the other of driver and skb mode (`EEXIST`).
fn is_occupied(err: &XdpError) -> bool {
    let XdpError::Attach {
        source: ProgramError::SyscallError(syscall),
        ..
    } = err
    else {
        return false;
    };
    matches!(
        syscall.io_error.raw_os_error(),
        Some(libc::EBUSY | libc::EEXIST)
    )
}

fn ifindex_of(interface: &str) -> Result<u32, XdpError> {
    nix::net::if_::if_nametoindex(interface).map_err(|_| XdpError::UnknownInterface {
        interface: interface.to_owned(),
    })
}

/// The XDP programs attached to `interface` (see [`attached_xdp`]).
pub fn attached_xdp_on(interface: &str) -> Result<AttachedXdp, XdpError> {
    attached_xdp(ifindex_of(interface)?).map_err(|source| XdpError::XdpState {
        interface: interface.to_owned(),
        source,
    })
}

/// The counters of the xdpboot program attached to `interface` by another process (the
/// running daemon), for `xdpboot stats`. Nothing is pinned: the program is found on the
/// interface's XDP hook and its counter map opened by id, for the duration of the call. Needs
/// root (`CAP_SYS_ADMIN` to open BPF objects by id).
pub fn attached_counters(interface: &str) -> Result<CounterValues, XdpError> {
    let ifindex = ifindex_of(interface)?;
    let state = attached_xdp(ifindex).map_err(|source| XdpError::XdpState {
        interface: interface.to_owned(),
        source,
    })?;
    let Some((hook, program_id)) = state
        .programs()
        .find(|(hook, _)| *hook != XdpHook::Hardware)
    else {
        return Err(XdpError::NotAttached {
            interface: interface.to_owned(),
        });
    };
    let inspect_error = |source: InspectError| XdpError::Inspect {
        interface: interface.to_owned(),
        program_id,
        source,
    };
    let info = find_program(program_id).ok_or_else(|| inspect_error(InspectError::Gone))?;
    if info.name_as_str() != Some(PROGRAM_NAME) {
        return Err(XdpError::NotOurs {
            interface: interface.to_owned(),
            occupant: Occupant {
                program_id,
                name: info.name_as_str().unwrap_or_default().to_owned(),
                hook,
                link_id: None,
            },
        });
    }
    let map_ids = info
        .map_ids()
        .map_err(|err| inspect_error(err.into()))?
        .unwrap_or_default();
    for map_id in map_ids {
        let map_info = MapInfo::from_id(map_id).map_err(|err| inspect_error(err.into()))?;
        if map_info.name_as_str() != Some(COUNTERS_MAP) {
            continue;
        }
        let map = MapData::from_id(map_id)
            .and_then(Map::from_map_data)
            .map_err(|err| inspect_error(err.into()))?;
        let counters: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(map).map_err(|err| inspect_error(err.into()))?;
        return sum_counters(&counters);
    }
    Err(inspect_error(InspectError::NoCounters))
}

fn sum_counters<T: Borrow<MapData>>(map: &PerCpuArray<T, u64>) -> Result<CounterValues, XdpError> {
    let mut values: CounterValues = Counter::ALL.map(|counter| (counter, 0));
    for (counter, value) in &mut values {
        let per_cpu = map
            .get(&counter.index(), 0)
            .map_err(|source| XdpError::ReadCounter {
                counter: *counter,
                source,
            })?;
        *value = per_cpu.iter().fold(0u64, |sum, n| sum.saturating_add(*n));
    }
    Ok(values)
}

/// The verdict counters of one program, readable apart from it (its own descriptor of the
/// counter map; the map lives as long as either does).
pub struct CounterReader {
    map: PerCpuArray<MapData, u64>,
}

impl fmt::Debug for CounterReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CounterReader").finish_non_exhaustive()
    }
}

impl CounterReader {
    /// The verdict counters summed over all CPUs.
    pub fn read(&self) -> Result<CounterValues, XdpError> {
        sum_counters(&self.map)
    }
}

/// The settings of one program, writable apart from it (its own descriptor of the config map).
pub struct ConfigWriter {
    map: Array<MapData, Config>,
}

impl fmt::Debug for ConfigWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigWriter").finish_non_exhaustive()
    }
}

impl ConfigWriter {
    /// Writes the program's settings; they apply to the next frame.
    pub fn set(&mut self, config: &ProgramConfig) -> Result<(), XdpError> {
        self.map
            .set(0, Config::from(config), 0)
            .map_err(|source| XdpError::Map {
                action: "writing the XDP program's config",
                source,
            })
    }
}

/// The program attached to one interface. Dropping it detaches the program (the BPF link's
/// file descriptor closes).
#[derive(Debug)]
pub struct XdpAttachment {
    _link: XdpLink,
    interface: String,
    mode: AttachMode,
}

impl XdpAttachment {
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The mode actually in use: [`AttachMode::Driver`] or [`AttachMode::Skb`], never `Auto`.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }
}

/// `err` and its sources on one line, for log fields.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
