//! AF_XDP sockets for the XDP backend: one socket per rx queue of an interface, all sharing one
//! UMEM (XDP_SHARED_UMEM), so the XDP program can hand a taken frame (port 4011) to the socket of
//! the queue it arrived on, and replies leave as whole Ethernet frames through the TX ring.
//!
//! Frame ownership is what keeps this sound and leak-free. The UMEM is cut into fixed-size
//! frames; each queue gets a disjoint share, and splits it once more:
//! - **RX frames** cycle fill ring → kernel → RX ring → [`RxBatch`] → fill ring. A batch hands
//!   them out as borrowed slices and gives them back to the fill ring when it drops.
//! - **TX frames** cycle free list → TX ring → kernel → completion ring → free list. A send with
//!   no free frame, or with the TX ring full, is counted and dropped; the frame goes back to the
//!   free list.
//!
//! A frame is only ever touched by userspace while it is in a free list or in a live batch,
//! never while one of the kernel's rings holds it.
//!
//! Copy mode (`XDP_COPY`) is the default: see [`BindMode`]. In copy mode the kernel transmits
//! only inside `sendto`, and at most a budget of frames per call, so every TX commit is followed
//! by a wakeup (DESIGN.md, "Toolchain recipe").

use std::fmt;
use std::io;
use std::mem;
use std::num::NonZeroU32;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::str::FromStr;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use tokio::io::unix::AsyncFd;
use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig};

/// Bytes per UMEM frame by default. One frame holds one Ethernet frame. 2048 is the smallest
/// chunk the kernel accepts in aligned mode; a received frame starts after the 256-byte
/// `XDP_PACKET_HEADROOM`, which leaves 1792 bytes, more than a 1522-byte VLAN-tagged frame.
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// Frame sizes the kernel accepts for an aligned UMEM: powers of two from 2048 to the page size.
pub const FRAME_SIZES: [u32; 2] = [2048, 4096];
/// UMEM frames per interface by default: 8 MiB at 2048 bytes, split between the queues.
pub const DEFAULT_FRAMES: u32 = 4096;
/// Fewest frames a queue may get: half of them RX, half TX.
pub const MIN_FRAMES_PER_QUEUE: u32 = 16;
/// Most queues one interface may have sockets on: the slots of the XDP program's XSKMAP.
pub const MAX_QUEUES: u32 = boot_common::XSK_MAX_QUEUES;
/// Largest UMEM one interface may register (the kernel pins it in memory).
pub const MAX_UMEM_BYTES: u64 = 256 << 20;
/// Most frames one [`RxBatch`] holds.
pub const RX_BATCH: u32 = 64;
/// Most frames [`XskQueue::send_batch`] submits to the TX ring before waking the kernel.
pub const TX_BATCH: usize = 64;
/// Frames [`XskQueue::stage_with`] gathers before it submits them. In copy mode the kernel
/// copies and delivers every frame inside the `sendto` that wakes it (a few microseconds each on
/// veth): sixteen at a time holds the serving task, and an inventory machine's reply behind
/// it, for tens of microseconds rather than over a hundred, for a few more calls.
pub const STAGE_BATCH: usize = 16;

/// Frames the kernel transmits per `sendto` in copy mode before it returns EAGAIN
/// (`TX_BATCH_SIZE`, the default of `XDP_MAX_TX_SKB_BUDGET` in `net/xdp/xsk.c`).
const COPY_MODE_TX_BUDGET: u32 = 32;
/// Headroom the kernel leaves in front of every received frame (`XDP_PACKET_HEADROOM`).
const XDP_PACKET_HEADROOM: u32 = 256;
/// The shortest frame worth sending: an Ethernet header.
const MIN_FRAME_LEN: usize = 14;

/// `getsockopt(SOL_XDP, XDP_OPTIONS)` and its zero-copy flag (`include/uapi/linux/if_xdp.h`).
const SOL_XDP: libc::c_int = 283;
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;
/// `ETHTOOL_GCHANNELS` (`include/uapi/linux/ethtool.h`).
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// How sockets are bound to the driver's queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BindMode {
    /// `XDP_COPY`: the kernel copies frames between the driver's buffers and the UMEM. Works on
    /// every interface. The default, because xdpboot's own traffic is a few frames per boot,
    /// while zero-copy would make the driver build an skb by copying for every frame the
    /// program passes to the stack on that queue, which is nearly all of the host's traffic.
    #[default]
    Copy,
    /// `XDP_ZEROCOPY`: the driver reads and writes the UMEM directly; binding fails where the
    /// driver has no support (veth, most virtual interfaces).
    ZeroCopy,
    /// Neither flag: the kernel tries zero-copy and falls back to copy.
    Auto,
}

impl BindMode {
    const fn bind_flags(self) -> u16 {
        match self {
            BindMode::Copy => SocketConfig::XDP_BIND_COPY,
            BindMode::ZeroCopy => SocketConfig::XDP_BIND_ZEROCOPY,
            BindMode::Auto => 0,
        }
    }
}

impl fmt::Display for BindMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BindMode::Copy => "copy",
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Auto => "auto",
        })
    }
}

impl FromStr for BindMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "copy" => Ok(BindMode::Copy),
            "zero-copy" | "zerocopy" | "zc" => Ok(BindMode::ZeroCopy),
            "auto" => Ok(BindMode::Auto),
            other => Err(format!(
                "unknown AF_XDP bind mode `{other}`: expected copy, zero-copy or auto"
            )),
        }
    }
}

/// Sizes and mode of one interface's AF_XDP sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskOptions {
    /// UMEM frames for the whole interface, split evenly between its queues.
    pub frames: u32,
    /// Bytes per frame, one of [`FRAME_SIZES`].
    pub frame_size: u32,
    pub bind_mode: BindMode,
}

impl Default for XskOptions {
    fn default() -> Self {
        XskOptions {
            frames: DEFAULT_FRAMES,
            frame_size: DEFAULT_FRAME_SIZE,
            bind_mode: BindMode::default(),
        }
    }
}

/// Why AF_XDP sockets could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error(
        "registering the {bytes}-byte AF_XDP buffer of {ifname} failed with ENOBUFS: the locked \
         memory limit is too low (raise it: `ulimit -l`, or LimitMEMLOCK= in the systemd unit; \
         each served interface needs {bytes} bytes)"
    )]
    MemlockLimit { ifname: String, bytes: usize },
    #[error("an interface takes 1 to {MAX_QUEUES} AF_XDP queues, not {queues}")]
    QueueCount { queues: u32 },
    #[error("the AF_XDP frame size must be 2048 or 4096 bytes, not {frame_size}")]
    FrameSize { frame_size: u32 },
    #[error(
        "{frames} UMEM frames are too few for {queues} queues: each queue needs at least \
         {MIN_FRAMES_PER_QUEUE}"
    )]
    TooFewFrames { frames: u32, queues: u32 },
    #[error(
        "a UMEM of {frames} frames of {frame_size} bytes is larger than {MAX_UMEM_BYTES} bytes"
    )]
    UmemTooLarge { frames: u32, frame_size: u32 },
    #[error("this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)")]
    Unsupported(#[source] io::Error),
    #[error("allocating a UMEM of {bytes} bytes")]
    Allocate {
        bytes: usize,
        #[source]
        source: io::Error,
    },
    /// A step of creating or binding the socket of one queue failed. EBUSY from binding means
    /// another AF_XDP socket (another xdpboot?) holds the queue; EOPNOTSUPP with
    /// [`BindMode::ZeroCopy`] that the driver has no zero-copy support.
    #[error("AF_XDP socket on {ifname} queue {queue}: {step}")]
    Setup {
        ifname: String,
        queue: u32,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("a frame of {len} bytes cannot be sent: frames are {MIN_FRAME_LEN} to {max} bytes")]
    FrameLength { len: usize, max: usize },
    #[error("the reply frame does not fit a {max}-byte UMEM frame")]
    FrameDoesNotFit { max: usize },
    #[error("no free UMEM frame to transmit from: the kernel has not completed earlier frames")]
    NoFreeFrame,
    #[error("the AF_XDP TX ring is full")]
    TxRingFull,
    #[error("waking the kernel to transmit on queue {queue}")]
    Wake {
        queue: u32,
        #[source]
        source: io::Error,
    },
    #[error("waiting for frames on queue {queue}")]
    Readiness {
        queue: u32,
        #[source]
        source: io::Error,
    },
    #[error("reading the kernel's AF_XDP statistics of queue {queue}")]
    Statistics {
        queue: u32,
        #[source]
        source: io::Error,
    },
}

/// xdpilone's `Errno` as an `io::Error`. xdpilone sometimes negates the value (`-EINVAL`).
fn os_error(errno: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(errno.get_raw().saturating_abs())
}

/// What this process counted on one queue (or, summed, on an interface).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskCounters {
    /// Frames handed out in [`RxBatch`]es.
    pub rx_frames: u64,
    pub rx_batches: u64,
    /// Times a batch was taken while the kernel had no frame left in the fill ring to receive
    /// into: the kernel drops frames then (see [`XskKernelStats::rx_fill_ring_empty_descs`]).
    pub fill_ring_empty: u64,
    /// RX or completion descriptors that did not point into this queue's frames; ignored.
    pub invalid_descriptors: u64,
    /// Frames put on the TX ring.
    pub tx_frames: u64,
    /// Frames the kernel gave back through the completion ring.
    pub tx_completed: u64,
    /// Sends dropped because every TX frame was still with the kernel.
    pub tx_dropped_no_frame: u64,
    /// Sends dropped because the TX ring was full.
    pub tx_dropped_ring_full: u64,
    /// Sends dropped because the frame was empty, or longer than a UMEM frame.
    pub tx_dropped_bad_length: u64,
    /// `sendto` calls that woke the kernel to transmit.
    pub tx_wakeups: u64,
    /// Wakeups the kernel refused for now (no skb memory, interface down); the frames stay on
    /// the TX ring for the next wakeup.
    pub tx_wakeup_deferred: u64,
}

impl XskCounters {
    fn add(&mut self, other: &XskCounters) {
        self.rx_frames += other.rx_frames;
        self.rx_batches += other.rx_batches;
        self.fill_ring_empty += other.fill_ring_empty;
        self.invalid_descriptors += other.invalid_descriptors;
        self.tx_frames += other.tx_frames;
        self.tx_completed += other.tx_completed;
        self.tx_dropped_no_frame += other.tx_dropped_no_frame;
        self.tx_dropped_ring_full += other.tx_dropped_ring_full;
        self.tx_dropped_bad_length += other.tx_dropped_bad_length;
        self.tx_wakeups += other.tx_wakeups;
        self.tx_wakeup_deferred += other.tx_wakeup_deferred;
    }
}

/// The kernel's counters of one socket (`struct xdp_statistics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskKernelStats {
    /// Frames dropped for reasons other than those below.
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full: we did not take batches fast enough.
    pub rx_ring_full: u64,
    /// Frames dropped because the fill ring was empty.
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// How one interface's UMEM is split between queues and rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    frame_size: u32,
    frames_per_queue: u32,
    rx_frames: u32,
    tx_frames: u32,
    /// Fill and RX ring entries: room for every RX frame, a power of two as the kernel wants.
    rx_ring: u32,
    /// TX and completion ring entries: room for every TX frame, so neither ring can overflow.
    tx_ring: u32,
}

impl Layout {
    fn new(queues: u32, options: &XskOptions) -> Result<Layout, XskError> {
        if !(1..=MAX_QUEUES).contains(&queues) {
            return Err(XskError::QueueCount { queues });
        }
        let XskOptions {
            frames, frame_size, ..
        } = *options;
        if !FRAME_SIZES.contains(&frame_size) {
            return Err(XskError::FrameSize { frame_size });
        }
        if u64::from(frames) * u64::from(frame_size) > MAX_UMEM_BYTES {
            return Err(XskError::UmemTooLarge { frames, frame_size });
        }
        let frames_per_queue = frames / queues;
        if frames_per_queue < MIN_FRAMES_PER_QUEUE {
            return Err(XskError::TooFewFrames { frames, queues });
        }
        let rx_frames = frames_per_queue / 2;
        let tx_frames = frames_per_queue - rx_frames;
        Ok(Layout {
            frame_size,
            frames_per_queue,
            rx_frames,
            tx_frames,
            rx_ring: rx_frames.next_power_of_two(),
            tx_ring: tx_frames.next_power_of_two(),
        })
    }

    fn umem_bytes(&self, queues: u32) -> usize {
        // At most MAX_UMEM_BYTES, checked in `new`.
        (u64::from(self.frames_per_queue) * u64::from(queues) * u64::from(self.frame_size)) as usize
    }

    /// Byte offsets of the RX and TX frames of `queue` in the UMEM.
    fn frames_of(&self, queue: u32) -> (Range<u64>, Range<u64>) {
        let size = u64::from(self.frame_size);
        let first = u64::from(queue) * u64::from(self.frames_per_queue) * size;
        let tx_first = first + u64::from(self.rx_frames) * size;
        (
            first..tx_first,
            tx_first..tx_first + u64::from(self.tx_frames) * size,
        )
    }
}

/// The UMEM's memory: an anonymous mapping, unmapped when the last queue lets go of it.
struct UmemArea {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: `UmemArea` is an address range, not data; which thread may touch which frame is
// decided by frame ownership (each queue owns a disjoint set of frames, see the module docs).
unsafe impl Send for UmemArea {}
// SAFETY: as for `Send`: `&UmemArea` gives no access to the bytes by itself.
unsafe impl Sync for UmemArea {}

impl UmemArea {
    fn map(len: usize) -> io::Result<UmemArea> {
        // SAFETY: a fresh private anonymous mapping aliases nothing; the arguments are valid.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(UmemArea { base, len })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.base, self.len)
    }

    /// The bytes at `range`, which must lie in the area.
    fn bytes(&self, range: Range<u64>) -> NonNull<[u8]> {
        assert!(
            range.start <= range.end && range.end <= self.len as u64,
            "UMEM access {range:?} lies within the {}-byte area",
            self.len
        );
        // SAFETY: `range` lies within the mapping (asserted), so the offset stays in bounds.
        let start = unsafe { self.base.add(range.start as usize) };
        NonNull::slice_from_raw_parts(start, (range.end - range.start) as usize)
    }
}

impl Drop for UmemArea {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `map` with this length; every queue holding an `Arc`
        // to it is gone, so no slice into it is alive. The kernel pinned the pages it uses and
        // unpins them when the last socket closes: unmapping first cannot break it.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The AF_XDP sockets of one interface: one [`XskQueue`] per rx queue, sharing one UMEM.
pub struct XskInterface {
    ifname: String,
    ifindex: u32,
    zero_copy: bool,
    queues: Vec<XskQueue>,
}

impl fmt::Debug for XskInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XskInterface")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .field("zero_copy", &self.zero_copy)
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl XskInterface {
    /// Creates the UMEM of `ifname` (index `ifindex`) and binds one socket to each of its
    /// rx queues `0..queues` (see [`rx_queue_count`]). Needs `CAP_NET_RAW` (and `CAP_IPC_LOCK`
    /// or enough `RLIMIT_MEMLOCK` for the UMEM). The sockets receive nothing until their
    /// [`XskQueue::fd`] is put into the XDP program's XSKMAP; they can send at once.
    pub fn open(
        ifname: &str,
        ifindex: u32,
        queues: u32,
        options: &XskOptions,
    ) -> Result<XskInterface, XskError> {
        let layout = Layout::new(queues, options)?;
        let bytes = layout.umem_bytes(queues);
        let area =
            Arc::new(UmemArea::map(bytes).map_err(|source| XskError::Allocate { bytes, source })?);
        let config = UmemConfig {
            fill_size: layout.rx_ring,
            complete_size: layout.tx_ring,
            frame_size: layout.frame_size,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: the area is a page-aligned mapping of `bytes` bytes (mmap), and stays mapped
        // for as long as any socket of this UMEM lives: every queue holds an `Arc` to it.
        let umem = unsafe { Umem::new(config, area.as_slice_ptr()) }.map_err(|errno| {
            let source = os_error(errno);
            if source.raw_os_error() == Some(libc::EAFNOSUPPORT) {
                XskError::Unsupported(source)
            } else if source.raw_os_error() == Some(libc::ENOBUFS) {
                // The kernel pins the UMEM against the user's RLIMIT_MEMLOCK.
                XskError::MemlockLimit {
                    ifname: ifname.to_owned(),
                    bytes,
                }
            } else {
                XskError::Setup {
                    ifname: ifname.to_owned(),
                    queue: 0,
                    step: "registering the UMEM",
                    source,
                }
            }
        })?;
        let mut sockets = Vec::with_capacity(queues as usize);
        for queue in 0..queues {
            let socket = XskQueue::bind(
                &umem,
                &area,
                &layout,
                ifname,
                ifindex,
                queue,
                options.bind_mode,
            )?;
            sockets.push(socket);
        }
        // Sockets sharing the UMEM inherit the first one's mode.
        let zero_copy = sockets.first().is_some_and(|q| q.zero_copy);
        // `umem` (the registration socket, also queue 0's socket) drops here; queue 0 keeps its
        // descriptor open, and the kernel keeps the UMEM while any socket uses it.
        Ok(XskInterface {
            ifname: ifname.to_owned(),
            ifindex,
            zero_copy,
            queues: sockets,
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether the sockets run in zero-copy mode (only possible with [`BindMode::ZeroCopy`] or
    /// [`BindMode::Auto`] on a driver that supports it).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The queues, indexed by rx queue number.
    pub fn queues(&self) -> &[XskQueue] {
        &self.queues
    }

    pub fn queues_mut(&mut self) -> &mut [XskQueue] {
        &mut self.queues
    }

    /// The queues, to drive each from a task of its own.
    pub fn into_queues(self) -> Vec<XskQueue> {
        self.queues
    }

    /// The counters of all queues summed.
    pub fn counters(&self) -> XskCounters {
        let mut sum = XskCounters::default();
        for queue in &self.queues {
            sum.add(&queue.counters);
        }
        sum
    }
}

/// The AF_XDP socket of one rx queue: its RX, TX, fill and completion rings and its share of
/// the UMEM's frames.
pub struct XskQueue {
    ifindex: u32,
    queue: u32,
    zero_copy: bool,
    frame_size: u64,
    /// Byte offsets of this queue's RX frames and TX frames in the UMEM.
    rx_frames: Range<u64>,
    tx_frames: Range<u64>,
    /// Fill and completion rings.
    device: DeviceQueue,
    rx: RingRx,
    tx: RingTx,
    /// RX frames back from batches that did not fit the fill ring yet.
    rx_free: Vec<u64>,
    /// TX frames that are ours to write.
    tx_free: Vec<u64>,
    /// Storage for the descriptors of a batch, reused.
    rx_descs: Vec<XdpDesc>,
    tx_descs: Vec<XdpDesc>,
    /// Storage for an urgent frame's descriptor ([`XskQueue::send_with`]), reused.
    tx_urgent: Vec<XdpDesc>,
    /// Wakeups per TX commit in copy mode: enough for the kernel's per-call budget to drain a
    /// full TX ring.
    max_wakeups: u32,
    counters: XskCounters,
    /// Our own descriptor of the socket (xdpilone owns another): for the XSKMAP and wakeups.
    fd: OwnedFd,
    /// Registered with the tokio reactor on the first [`XskQueue::recv`].
    readiness: Option<AsyncFd<OwnedFd>>,
    /// Last, so the rings are unmapped and the sockets closed before the UMEM may go.
    umem: Arc<UmemArea>,
}

impl fmt::Debug for XskQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XskQueue")
            .field("ifindex", &self.ifindex)
            .field("queue", &self.queue)
            .field("zero_copy", &self.zero_copy)
            .field("fd", &self.fd)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl XskQueue {
    fn bind(
        umem: &Umem,
        area: &Arc<UmemArea>,
        layout: &Layout,
        ifname: &str,
        ifindex: u32,
        queue: u32,
        mode: BindMode,
    ) -> Result<XskQueue, XskError> {
        let setup = |step| {
            move |source| XskError::Setup {
                ifname: ifname.to_owned(),
                queue,
                step,
                source,
            }
        };
        let mut info = IfInfo::invalid();
        info.from_ifindex(ifindex)
            .map_err(|e| setup("finding the interface")(os_error(e)))?;
        info.set_queue(queue);
        // Queue 0 uses the socket that registered the UMEM; the others get sockets of their
        // own, each with its own fill and completion ring (required to share a UMEM across
        // queues) and bound with XDP_SHARED_UMEM.
        let socket = if queue == 0 {
            Socket::with_shared(&info, umem)
        } else {
            Socket::new(&info)
        }
        .map_err(|e| setup("creating the socket")(os_error(e)))?;
        let device = umem
            .fq_cq(&socket)
            .map_err(|e| setup("creating the fill and completion rings")(os_error(e)))?;
        // Sockets bound with XDP_SHARED_UMEM must not pass mode flags (EINVAL): they inherit
        // the mode and need-wakeup of the first.
        let bind_flags = if queue == 0 {
            mode.bind_flags() | SocketConfig::XDP_BIND_NEED_WAKEUP
        } else {
            0
        };
        let user = umem
            .rx_tx(
                &socket,
                &SocketConfig {
                    rx_size: NonZeroU32::new(layout.rx_ring),
                    tx_size: NonZeroU32::new(layout.tx_ring),
                    bind_flags,
                },
            )
            .map_err(|e| setup("creating the RX and TX rings")(os_error(e)))?;
        let rx = user
            .map_rx()
            .map_err(|e| setup("mapping the RX ring")(os_error(e)))?;
        let tx = user
            .map_tx()
            .map_err(|e| setup("mapping the TX ring")(os_error(e)))?;
        umem.bind(&user)
            .map_err(|e| setup("binding to the queue")(os_error(e)))?;

        // SAFETY: the descriptor is open: `rx`, `tx` and `device` keep xdpilone's copy of it
        // open while we duplicate it.
        let fd = unsafe { BorrowedFd::borrow_raw(rx.as_raw_fd()) }
            .try_clone_to_owned()
            .map_err(setup("duplicating the socket descriptor"))?;
        let zero_copy = is_zero_copy(fd.as_fd()).map_err(setup("reading the bind options"))?;

        let (rx_frames, tx_frames) = layout.frames_of(queue);
        let frame_size = u64::from(layout.frame_size);
        let mut socket = XskQueue {
            ifindex,
            queue,
            zero_copy,
            frame_size,
            rx_free: rx_frames.clone().step_by(frame_size as usize).collect(),
            tx_free: tx_frames.clone().step_by(frame_size as usize).collect(),
            rx_frames,
            tx_frames,
            device,
            rx,
            tx,
            rx_descs: Vec::with_capacity(RX_BATCH as usize),
            tx_descs: Vec::with_capacity(TX_BATCH),
            tx_urgent: Vec::with_capacity(TX_BATCH),
            max_wakeups: layout.tx_ring / COPY_MODE_TX_BUDGET + 1,
            counters: XskCounters::default(),
            fd,
            readiness: None,
            umem: Arc::clone(area),
        };
        socket.refill();
        Ok(socket)
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The rx queue this socket is bound to: its slot in the XSKMAP.
    pub fn queue_id(&self) -> u32 {
        self.queue
    }

    /// The socket, for the XDP program's XSKMAP (`XskMap::set(queue_id, fd, 0)`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Longest frame [`XskQueue::send`] takes: one UMEM frame.
    pub fn max_frame_len(&self) -> usize {
        self.frame_size as usize
    }

    /// Longest frame the kernel can receive into a UMEM frame.
    pub fn max_rx_frame_len(&self) -> usize {
        (self.frame_size as u32 - XDP_PACKET_HEADROOM) as usize
    }

    pub fn counters(&self) -> XskCounters {
        self.counters
    }

    /// TX frames free to send from right now (after taking back completed ones).
    pub fn tx_frames_free(&mut self) -> usize {
        self.reap_completions();
        self.tx_free.len()
    }

    /// The kernel's counters for this socket.
    pub fn kernel_stats(&self) -> Result<XskKernelStats, XskError> {
        let stats = self
            .device
            .statistics_v2()
            .map_err(|errno| XskError::Statistics {
                queue: self.queue,
                source: os_error(errno),
            })?;
        Ok(XskKernelStats {
            rx_dropped: stats.rx_dropped,
            rx_invalid_descs: stats.rx_invalid_descs,
            tx_invalid_descs: stats.tx_invalid_descs,
            rx_ring_full: stats.rx_ring_full,
            rx_fill_ring_empty_descs: stats.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: stats.tx_ring_empty_descs,
        })
    }

    // ----------------------------------------------------------------------------------------
    // RX

    /// Waits until frames have arrived and returns up to [`RX_BATCH`] of them. They go back to
    /// the fill ring when the batch drops, so drop it before waiting again. Must be called from
    /// within a tokio runtime (the socket is registered with its reactor on the first call).
    pub async fn recv(&mut self) -> Result<RxBatch<'_>, XskError> {
        self.refill();
        let queue = self.queue;
        let readiness_error = |source| XskError::Readiness { queue, source };
        let readiness = match &self.readiness {
            Some(readiness) => readiness,
            None => {
                let fd = self.fd.try_clone().map_err(readiness_error)?;
                self.readiness
                    .insert(crate::net::register(fd).map_err(readiness_error)?)
            }
        };
        while self.rx.available() == 0 {
            let mut ready = readiness.readable().await.map_err(readiness_error)?;
            // The kernel wakes the socket after writing to the RX ring; tokio keeps a wakeup
            // that raced with this check, so clearing cannot lose one.
            if self.rx.available() == 0 {
                ready.clear_ready();
            }
        }
        Ok(self.take_batch())
    }

    /// The frames that have arrived, up to [`RX_BATCH`], without waiting; `None` if none.
    pub fn try_recv(&mut self) -> Option<RxBatch<'_>> {
        self.refill();
        if self.rx.available() == 0 {
            return None;
        }
        Some(self.take_batch())
    }

    fn take_batch(&mut self) -> RxBatch<'_> {
        if self.device.pending() == 0 {
            self.counters.fill_ring_empty += 1;
        }
        let mut descs = mem::take(&mut self.rx_descs);
        descs.clear();
        let mut reader = self.rx.receive(RX_BATCH);
        while let Some(desc) = reader.read() {
            let chunk = desc.addr - desc.addr % self.frame_size;
            if !self.rx_frames.contains(&chunk) {
                // Not one of our frames: we cannot give it back, only ignore it.
                self.counters.invalid_descriptors += 1;
            } else if desc.addr - chunk + u64::from(desc.len) > self.frame_size {
                self.counters.invalid_descriptors += 1;
                self.rx_free.push(chunk);
            } else {
                descs.push(desc);
            }
        }
        // The descriptors are copied out: the RX ring slots can go back to the kernel now; the
        // frames stay ours until the batch drops.
        reader.release();
        drop(reader);
        self.counters.rx_batches += 1;
        self.counters.rx_frames += descs.len() as u64;
        RxBatch { queue: self, descs }
    }

    /// Gives the RX frames we hold back to the fill ring.
    fn refill(&mut self) {
        if self.rx_free.is_empty() {
            return;
        }
        let mut writer = self.device.fill(self.rx_free.len() as u32);
        let filled = writer.insert(self.rx_free.iter().copied()) as usize;
        writer.commit();
        drop(writer);
        self.rx_free.drain(..filled);
        // Zero-copy drivers stop polling an empty fill ring until woken.
        if self.device.needs_wakeup() {
            self.device.wake();
        }
    }

    // ----------------------------------------------------------------------------------------
    // TX

    /// Copies `frame` (a whole Ethernet frame with checksums) into a free UMEM frame, puts it
    /// on the TX ring and wakes the kernel. A frame that cannot be queued is counted and
    /// dropped, and the error says why.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), XskError> {
        let max = self.max_frame_len();
        if !(MIN_FRAME_LEN..=max).contains(&frame.len()) {
            self.counters.tx_dropped_bad_length += 1;
            return Err(XskError::FrameLength {
                len: frame.len(),
                max,
            });
        }
        self.send_with(|buf| {
            buf[..frame.len()].copy_from_slice(frame);
            Some(frame.len())
        })
    }

    /// Like [`XskQueue::send`], but `build` writes the frame straight into the UMEM frame and
    /// returns its length, or `None` if it does not fit. The frame goes on the TX ring at once,
    /// ahead of frames [`XskQueue::stage_with`] has queued and not yet flushed: an urgent reply
    /// does not wait behind a batch.
    pub fn send_with(
        &mut self,
        build: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Result<(), XskError> {
        let chunk = self.take_tx_frame()?;
        let max = self.max_frame_len();
        let len = build(self.tx_frame_mut(chunk));
        let Some(len) = len.filter(|len| (MIN_FRAME_LEN..=max).contains(len)) else {
            self.tx_free.push(chunk);
            self.counters.tx_dropped_bad_length += 1;
            return Err(XskError::FrameDoesNotFit { max });
        };
        // The staged frames step aside (into the urgent list's spare storage) for one submit.
        mem::swap(&mut self.tx_descs, &mut self.tx_urgent);
        self.tx_descs.clear();
        self.tx_descs.push(XdpDesc {
            addr: chunk,
            len: len as u32,
            options: 0,
        });
        let sent = self.submit();
        mem::swap(&mut self.tx_descs, &mut self.tx_urgent);
        match sent? {
            0 => Err(XskError::TxRingFull),
            _ => Ok(()),
        }
    }

    /// Has `build` write a frame straight into a free UMEM frame (and return its length, or
    /// `None` to send nothing) and queues it for the next [`XskQueue::flush`]; a full
    /// [`STAGE_BATCH`] goes out at once. Nothing is copied and nothing is allocated: this is how
    /// replies leave. Returns whether a frame was queued; a frame that cannot be (no free frame,
    /// a bad length) is counted and dropped, and the error says why.
    pub fn stage_with(
        &mut self,
        build: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Result<bool, XskError> {
        let chunk = self.take_tx_frame()?;
        let max = self.max_frame_len();
        let Some(len) = build(self.tx_frame_mut(chunk)) else {
            self.tx_free.push(chunk);
            return Ok(false);
        };
        if !(MIN_FRAME_LEN..=max).contains(&len) {
            self.tx_free.push(chunk);
            self.counters.tx_dropped_bad_length += 1;
            return Err(XskError::FrameDoesNotFit { max });
        }
        self.tx_descs.push(XdpDesc {
            addr: chunk,
            len: len as u32,
            options: 0,
        });
        if self.tx_descs.len() >= STAGE_BATCH {
            self.submit()?;
        }
        Ok(true)
    }

    /// Puts the frames [`XskQueue::stage_with`] queued on the TX ring and wakes the kernel
    /// once for all of them. Returns how many were queued.
    pub fn flush(&mut self) -> Result<usize, XskError> {
        self.submit()
    }

    /// Whether frames wait in the RX ring, registering the task's waker with the reactor
    /// when none does (for a task that waits on several sockets and rings at once).
    pub fn poll_rx_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), XskError>> {
        use std::task::Poll;
        self.refill();
        let queue = self.queue;
        let readiness_error = |source| XskError::Readiness { queue, source };
        if self.readiness.is_none() {
            let fd = self.fd.try_clone().map_err(readiness_error)?;
            self.readiness = Some(crate::net::register(fd).map_err(readiness_error)?);
        }
        let Some(readiness) = &self.readiness else {
            return Poll::Pending;
        };
        loop {
            if self.rx.available() > 0 {
                return Poll::Ready(Ok(()));
            }
            match readiness.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    // Cleared only while the ring is still empty: tokio keeps a wakeup that
                    // raced with this check.
                    if self.rx.available() == 0 {
                        guard.clear_ready();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(readiness_error(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Sends every frame of `frames` as [`XskQueue::send`] does, waking the kernel once per
    /// [`TX_BATCH`] frames. Returns how many were queued; the others were counted and dropped.
    pub fn send_batch<'f>(
        &mut self,
        frames: impl IntoIterator<Item = &'f [u8]>,
    ) -> Result<usize, XskError> {
        let max = self.max_frame_len();
        let mut queued = 0;
        self.tx_descs.clear();
        for frame in frames {
            if !(MIN_FRAME_LEN..=max).contains(&frame.len()) {
                self.counters.tx_dropped_bad_length += 1;
                continue;
            }
            // Out of free frames: send what is gathered, which takes back completed frames.
            if self.tx_free.is_empty() {
                queued += self.submit()?;
            }
            let chunk = match self.take_tx_frame() {
                Ok(chunk) => chunk,
                Err(XskError::NoFreeFrame) => continue,
                Err(err) => return Err(err),
            };
            self.tx_frame_mut(chunk)[..frame.len()].copy_from_slice(frame);
            self.tx_descs.push(XdpDesc {
                addr: chunk,
                len: frame.len() as u32,
                options: 0,
            });
            if self.tx_descs.len() == TX_BATCH {
                queued += self.submit()?;
            }
        }
        queued += self.submit()?;
        Ok(queued)
    }

    /// A free TX frame, taking back completed frames first if none is left. Counts a drop if
    /// there is none.
    fn take_tx_frame(&mut self) -> Result<u64, XskError> {
        if self.tx_free.is_empty() {
            self.reap_completions();
        }
        if self.tx_free.is_empty() && self.tx.pending() > 0 {
            // Frames still wait on the TX ring because a wakeup was deferred (the link was
            // down, say): wake the kernel again rather than wait for a commit that cannot come.
            self.wake_tx()?;
            self.reap_completions();
        }
        self.tx_free.pop().ok_or_else(|| {
            self.counters.tx_dropped_no_frame += 1;
            XskError::NoFreeFrame
        })
    }

    /// The whole UMEM frame at `chunk`, which must be a TX frame in `tx_free` or just taken
    /// from it.
    fn tx_frame_mut(&mut self, chunk: u64) -> &mut [u8] {
        debug_assert!(self.tx_frames.contains(&chunk) && chunk.is_multiple_of(self.frame_size));
        let mut bytes = self.umem.bytes(chunk..chunk + self.frame_size);
        // SAFETY: the frame is one of this queue's TX frames and is in none of the kernel's
        // rings (it came from `tx_free`), so neither the kernel nor another queue touches it;
        // `&mut self` makes this the only reference to it until it is submitted.
        unsafe { bytes.as_mut() }
    }

    /// Puts `tx_descs` on the TX ring and wakes the kernel. Frames that found no slot go back
    /// to the free list, counted. Returns how many were queued.
    fn submit(&mut self) -> Result<usize, XskError> {
        if self.tx_descs.is_empty() {
            return Ok(0);
        }
        let descs = mem::take(&mut self.tx_descs);
        let mut writer = self.tx.transmit(descs.len() as u32);
        let queued = writer.insert(descs.iter().copied()) as usize;
        writer.commit();
        drop(writer);
        for desc in &descs[queued..] {
            self.tx_free.push(desc.addr);
            self.counters.tx_dropped_ring_full += 1;
        }
        self.counters.tx_frames += queued as u64;
        self.tx_descs = descs;
        self.tx_descs.clear();
        if queued > 0 {
            self.wake_tx()?;
            self.reap_completions();
        }
        Ok(queued)
    }

    /// Makes the kernel transmit what is on the TX ring. Copy mode transmits only inside
    /// `sendto`, at most [`COPY_MODE_TX_BUDGET`] frames per call, so call it until the ring is
    /// drained (bounded). Zero-copy drivers transmit on their own unless they ask for a wakeup.
    fn wake_tx(&mut self) -> Result<(), XskError> {
        if self.zero_copy && !self.tx.needs_wakeup() {
            return Ok(());
        }
        let rounds = if self.zero_copy { 1 } else { self.max_wakeups };
        let mut pending = self.tx.pending();
        for _ in 0..rounds {
            self.counters.tx_wakeups += 1;
            match nix::sys::socket::send(self.fd.as_raw_fd(), &[], MsgFlags::MSG_DONTWAIT) {
                // EAGAIN: the per-call budget ran out; EBUSY: the device dropped a frame (it is
                // completed all the same). Frames remain: go on.
                Ok(_) | Err(Errno::EAGAIN | Errno::EBUSY) => {}
                // No memory for an skb, or the interface is down: the frames wait on the ring
                // for the next wakeup.
                Err(Errno::ENOBUFS | Errno::ENETDOWN) => {
                    self.counters.tx_wakeup_deferred += 1;
                    return Ok(());
                }
                Err(errno) => {
                    return Err(XskError::Wake {
                        queue: self.queue,
                        source: errno.into(),
                    });
                }
            }
            // Stop when the ring is drained, or when the kernel made no progress (the device
            // is busy): the next commit or send wakes it again.
            let now = self.tx.pending();
            if self.zero_copy || now == 0 || now == pending {
                break;
            }
            pending = now;
        }
        Ok(())
    }

    /// Takes the frames the kernel has finished sending back into the free list.
    fn reap_completions(&mut self) {
        let tx_frame_count =
            ((self.tx_frames.end - self.tx_frames.start) / self.frame_size) as usize;
        let mut reader = self.device.complete(tx_frame_count as u32);
        while let Some(addr) = reader.read() {
            let chunk = addr - addr % self.frame_size;
            if self.tx_frames.contains(&chunk) && self.tx_free.len() < tx_frame_count {
                self.tx_free.push(chunk);
                self.counters.tx_completed += 1;
            } else {
                self.counters.invalid_descriptors += 1;
            }
        }
        reader.release();
    }
}

// Each queue is meant to be driven by a task of its own.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<XskQueue>();
};

impl AsFd for XskQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for XskQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Frames received on one queue, borrowed from the UMEM. Dropping the batch gives the frames
/// back to the fill ring for the kernel to receive into.
#[must_use = "dropping the batch at once discards its frames"]
pub struct RxBatch<'q> {
    queue: &'q mut XskQueue,
    descs: Vec<XdpDesc>,
}

impl RxBatch<'_> {
    pub fn len(&self) -> usize {
        self.descs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.descs.is_empty()
    }

    /// The rx queue the frames arrived on.
    pub fn queue_id(&self) -> u32 {
        self.queue.queue
    }

    /// Each received Ethernet frame.
    pub fn frames(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.descs.iter().map(|desc| {
            let bytes = self
                .queue
                .umem
                .bytes(desc.addr..desc.addr + u64::from(desc.len));
            // SAFETY: `take_batch` checked that the descriptor lies within one of this queue's
            // RX frames. The kernel handed the frame over through the RX ring and gets it back
            // only when the batch drops, so nothing writes to it while this borrow lives.
            unsafe { bytes.as_ref() }
        })
    }
}

impl RxBatch<'_> {
    /// Hands each received frame, with a free TX frame of the same queue, to `answer`, which
    /// writes the reply there and returns its length (or `None`: no reply); replies are
    /// queued as [`XskQueue::stage_with`] does, for the caller's [`XskQueue::flush`]. A request
    /// is read where the kernel wrote it and its reply written where the kernel will send it
    /// from: no copy in between. Returns how many replies were queued.
    pub fn answer_each(
        &mut self,
        mut answer: impl FnMut(&[u8], &mut [u8]) -> Option<usize>,
    ) -> Result<usize, XskError> {
        let mut queued = 0;
        for at in 0..self.descs.len() {
            let desc = self.descs[at];
            let bytes = self
                .queue
                .umem
                .bytes(desc.addr..desc.addr + u64::from(desc.len));
            // SAFETY: as in `frames`: the descriptor lies within one of this queue's RX frames,
            // which the kernel gets back only when the batch drops. The TX frame `stage_with`
            // lends out is one of this queue's TX frames, a range of the UMEM disjoint from
            // every RX frame (`Layout::frames_of`), so the two slices never overlap.
            let request: &[u8] = unsafe { bytes.as_ref() };
            match self.queue.stage_with(|reply| answer(request, reply)) {
                Ok(true) => queued += 1,
                Ok(false) => {}
                // Out of TX frames or a bad length: counted by the queue; the next request may
                // still fit.
                Err(XskError::NoFreeFrame | XskError::FrameDoesNotFit { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(queued)
    }
}

impl Drop for RxBatch<'_> {
    fn drop(&mut self) {
        let size = self.queue.frame_size;
        self.queue
            .rx_free
            .extend(self.descs.iter().map(|desc| desc.addr - desc.addr % size));
        self.queue.refill();
        self.descs.clear();
        self.queue.rx_descs = mem::take(&mut self.descs);
    }
}

impl fmt::Debug for RxBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RxBatch")
            .field("queue", &self.queue.queue)
            .field("frames", &self.descs.len())
            .finish()
    }
}

/// Whether a bound socket runs in zero-copy mode (`XDP_OPTIONS`).
fn is_zero_copy(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut flags: u32 = 0;
    let mut len = mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `struct xdp_options` is one u32; `flags` and `len` outlive the call.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            XDP_OPTIONS,
            (&raw mut flags).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & XDP_OPTIONS_ZEROCOPY != 0)
}

/// The number of rx queues of `ifname` in the calling thread's network namespace: how many
/// sockets [`XskInterface::open`] should bind. Asks the driver for its channels (ethtool
/// `GCHANNELS`, as `ethtool -l` shows them); a driver without channel support has one queue
/// per `/sys/class/net/IF/queues/rx-*` (read when sysfs shows this namespace), or else one.
pub fn rx_queue_count(ifname: &str) -> io::Result<u32> {
    match ethtool_rx_channels(ifname) {
        Ok(count) if count > 0 => return Ok(count),
        Ok(_) => {}
        Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
        Err(err) => return Err(err),
    }
    let dir = std::path::Path::new("/sys/class/net")
        .join(ifname)
        .join("queues");
    let count = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count(),
        Err(_) => 0,
    };
    Ok(u32::try_from(count).unwrap_or(u32::MAX).max(1))
}

/// `struct ethtool_channels`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// Current rx-only plus combined channels: each is one rx queue.
fn ethtool_rx_channels(ifname: &str) -> io::Result<u32> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    // SAFETY: `ifreq` is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&raw mut channels).cast();
    // SAFETY: SIOCETHTOOL reads the NUL-terminated name and writes one `ethtool_channels`
    // through `ifru_data`, which points to `channels`; both outlive the call.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut request) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(channels.rx_count.saturating_add(channels.combined_count))
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::thread;
    use std::time::{Duration, Instant};

    use boot_common::PXE_SERVER_PORT;

    use super::*;
    use crate::net::xdp::test_support::{current_test, error_chain, load_or_skip, skip_or_fail};
    use boot_common::wire::ethernet::VlanTags;
    use boot_common::wire::frame::{FrameRepr, UdpFrame, emit_udp_frame};
    use boot_common::wire::mac::MacAddr;

    const XSK_IF: &str = "xsk0";
    const PEER_IF: &str = "peer0";
    const XSK_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
    const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x02];
    /// Not assigned to any interface: `xsk0` has no address, the frames we build carry it.
    const XSK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const WAIT: Duration = Duration::from_secs(2);

    /// An untagged UDP frame `src` → `dst` around `payload`, written into `out` with the wire
    /// layer, as the backend writes replies; its length.
    fn udp_frame(
        (src_mac, src): ([u8; 6], SocketAddrV4),
        (dst_mac, dst): ([u8; 6], SocketAddrV4),
        payload: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let repr = FrameRepr {
            src_mac: MacAddr(src_mac),
            dst_mac: MacAddr(dst_mac),
            tags: VlanTags::NONE,
            src,
            dst,
            ttl: FrameRepr::DEFAULT_TTL,
        };
        let at = repr.headers_len();
        out.get_mut(at..at + payload.len())?
            .copy_from_slice(payload);
        emit_udp_frame(out, &repr, payload.len()).ok()
    }

    /// 32 RX and 32 TX frames per queue: few, so the tests go round the rings several times.
    fn small_options(queues: u32) -> XskOptions {
        XskOptions {
            frames: 64 * queues,
            ..XskOptions::default()
        }
    }

    fn mac(m: [u8; 6]) -> String {
        m.map(|b| format!("{b:02x}")).join(":")
    }

    /// A network namespace `xsk<pid>-<n>` holding a veth pair: `xsk0` (no address, where the
    /// AF_XDP sockets go) and `peer0` (198.18.0.2/24, with a permanent neighbour entry for
    /// 198.18.0.1 at `xsk0`'s MAC, so datagrams to it need no ARP). Dropping it deletes the
    /// namespace and the links in it, also when the test panics.
    struct TestNet {
        name: String,
    }

    impl TestNet {
        /// `None` when this host cannot run the test (not root) and [`skip_or_fail`] lets it
        /// skip; any failure to build the namespace fails the test.
        fn new(queues: u32) -> Option<TestNet> {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            if !nix::unistd::Uid::effective().is_root() {
                skip_or_fail(&current_test(), "network namespaces need root");
                return None;
            }
            let name = format!(
                "xsk{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            run_ip(&["netns", "add", &name]);
            let net = TestNet { name };
            net.ip("link set lo up");
            let veth_end = |name: &str, mac_addr: [u8; 6]| {
                format!(
                    "{name} address {} numtxqueues {queues} numrxqueues {queues}",
                    mac(mac_addr)
                )
            };
            net.ip(&format!(
                "link add {} type veth peer name {}",
                veth_end(XSK_IF, XSK_MAC),
                veth_end(PEER_IF, PEER_MAC)
            ));
            net.ip(&format!("addr add {PEER_IP}/24 dev {PEER_IF}"));
            net.ip(&format!("link set {XSK_IF} up"));
            net.ip(&format!("link set {PEER_IF} up"));
            net.ip(&format!(
                "neigh add {XSK_IP} lladdr {} dev {PEER_IF} nud permanent",
                mac(XSK_MAC)
            ));
            Some(net)
        }

        fn ip(&self, args: &str) {
            let mut all = vec!["-n", &self.name];
            all.extend(args.split_whitespace());
            run_ip(&all);
        }

        /// Runs `f` on a thread inside the namespace, named after the test. Sockets made there
        /// stay in it.
        fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            let ns = File::open(format!("/run/netns/{}", self.name)).expect("namespace file");
            thread::scope(|scope| {
                thread::Builder::new()
                    .name(current_test())
                    .spawn_scoped(scope, move || {
                        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                            .expect("entering the test namespace");
                        f()
                    })
                    .expect("spawning the namespace thread")
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        }

        /// Opens `queues` AF_XDP queues on `xsk0`.
        fn open(&self, queues: u32, options: XskOptions) -> XskInterface {
            self.try_open(queues, options)
                .unwrap_or_else(|err| panic!("{}", error_chain(&err)))
        }

        fn try_open(&self, queues: u32, options: XskOptions) -> Result<XskInterface, XskError> {
            self.run(move || {
                let ifindex = nix::net::if_::if_nametoindex(XSK_IF).expect("xsk0 exists");
                XskInterface::open(XSK_IF, ifindex, queues, &options)
            })
        }

        /// A UDP socket on `peer0`.
        fn peer_socket(&self, port: u16) -> UdpSocket {
            self.run(|| {
                let socket = UdpSocket::bind((PEER_IP, port)).expect("bind on peer0");
                socket.set_read_timeout(Some(WAIT)).expect("timeout");
                socket
            })
        }
    }

    impl Drop for TestNet {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    fn run_ip(args: &[&str]) {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("running `ip` (iproute2)");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// A reply as the backend sends it: 198.18.0.1:67 → 198.18.0.2:`port`, `xsk0` → `peer0`,
    /// the payload padded to the 300-byte BOOTP minimum (342 bytes in all).
    fn reply_frame(tag: u32, port: u16) -> Vec<u8> {
        let mut payload = format!("reply {tag}").into_bytes();
        payload.resize(300, 0);
        let mut out = vec![0; 2048];
        let len = udp_frame(
            (XSK_MAC, SocketAddrV4::new(XSK_IP, 67)),
            (PEER_MAC, SocketAddrV4::new(PEER_IP, port)),
            &payload,
            &mut out,
        )
        .expect("fits");
        out.truncate(len);
        out
    }

    fn expect_datagram(peer: &UdpSocket, tag: u32) {
        let mut buf = [0; 512];
        let (len, from) = peer
            .recv_from(&mut buf)
            .unwrap_or_else(|err| panic!("datagram {tag} did not arrive: {err}"));
        assert_eq!(from, SocketAddr::from((XSK_IP, 67)));
        assert_eq!(len, 300);
        let text = format!("reply {tag}");
        assert_eq!(&buf[..text.len()], text.as_bytes(), "datagram {tag}");
    }

    #[test]
    fn frames_sent_on_the_tx_ring_reach_the_peer_as_udp_datagrams() {
        let Some(net) = TestNet::new(1) else { return };
        let mut xsk = net.open(1, small_options(1));
        let peer = net.peer_socket(6800);
        assert!(!xsk.zero_copy(), "copy mode, the default, was asked for");
        let queue = &mut xsk.queues_mut()[0];
        let tx_frames = queue.tx_frames_free();
        assert_eq!(tx_frames, 32);

        // Three times round the TX frames: each comes back through the completion ring.
        let rounds = 3 * tx_frames as u32;
        for tag in 0..rounds {
            queue
                .send(&reply_frame(tag, 6800))
                .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
            expect_datagram(&peer, tag);
        }

        // A batch larger than the TX frames: it is submitted in parts as frames run out.
        let batch: Vec<Vec<u8>> = (0..48).map(|tag| reply_frame(1000 + tag, 6800)).collect();
        let queued = queue
            .send_batch(batch.iter().map(Vec::as_slice))
            .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
        assert_eq!(queued, 48);
        for tag in 0..48 {
            expect_datagram(&peer, 1000 + tag);
        }

        // Built in place, as the backend builds replies.
        queue
            .send_with(|out| {
                let mut payload = b"reply 2000".to_vec();
                payload.resize(300, 0);
                udp_frame(
                    (XSK_MAC, SocketAddrV4::new(XSK_IP, 67)),
                    (PEER_MAC, SocketAddrV4::new(PEER_IP, 6800)),
                    &payload,
                    out,
                )
            })
            .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
        expect_datagram(&peer, 2000);

        assert_eq!(queue.tx_frames_free(), tx_frames, "every frame came back");
        let counters = queue.counters();
        let sent = u64::from(rounds) + 48 + 1;
        assert_eq!(counters.tx_frames, sent);
        assert_eq!(counters.tx_completed, sent);
        assert_eq!(
            counters.tx_dropped_no_frame
                + counters.tx_dropped_ring_full
                + counters.tx_dropped_bad_length,
            0
        );
        let stats = queue.kernel_stats().expect("statistics");
        assert_eq!(stats.tx_invalid_descs, 0);
    }

    #[test]
    fn unsendable_frames_are_counted_and_keep_their_umem_frame() {
        let Some(net) = TestNet::new(1) else { return };
        let mut xsk = net.open(1, small_options(1));
        let queue = &mut xsk.queues_mut()[0];
        let free = queue.tx_frames_free();
        assert!(matches!(
            queue.send(&[0; 10]),
            Err(XskError::FrameLength { len: 10, max: 2048 })
        ));
        assert!(matches!(
            queue.send(&vec![0; 2049]),
            Err(XskError::FrameLength { len: 2049, .. })
        ));
        assert!(matches!(
            queue.send_with(|_| None),
            Err(XskError::FrameDoesNotFit { max: 2048 })
        ));
        assert!(matches!(
            queue.send_with(|out| Some(out.len() + 1)),
            Err(XskError::FrameDoesNotFit { .. })
        ));
        let too_short = [0u8; 4];
        assert_eq!(queue.send_batch([&too_short[..]]).expect("batch"), 0);
        assert_eq!(queue.counters().tx_dropped_bad_length, 5);
        assert_eq!(queue.counters().tx_frames, 0);
        assert_eq!(queue.tx_frames_free(), free);
    }

    #[test]
    fn sends_on_a_link_that_is_down_are_held_or_dropped_by_count_and_no_frame_is_lost() {
        let Some(net) = TestNet::new(1) else { return };
        let mut xsk = net.open(1, small_options(1));
        let peer = net.peer_socket(6800);
        let queue = &mut xsk.queues_mut()[0];
        let tx_frames = queue.tx_frames_free();

        // While the link is down the kernel refuses to transmit (ENETDOWN here): the frames
        // wait on the TX ring until every TX frame is there, then sends are counted dropped.
        net.ip(&format!("link set {XSK_IF} down"));
        let attempts = 3 * tx_frames as u32;
        let mut no_frame = 0;
        for tag in 0..attempts {
            match queue.send(&reply_frame(tag, 6800)) {
                Ok(()) => {}
                Err(XskError::NoFreeFrame) => no_frame += 1,
                Err(err) => panic!("{}", error_chain(&err)),
            }
        }
        let down = queue.counters();
        eprintln!("while down: {down:?}");
        assert_eq!(down.tx_dropped_no_frame, no_frame);
        assert_eq!(
            down.tx_frames + down.tx_dropped_no_frame,
            u64::from(attempts)
        );

        // Once it is up, the next send wakes the kernel for the held frames too.
        net.ip(&format!("link set {XSK_IF} up"));
        queue
            .send(&reply_frame(9999, 6800))
            .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
        let mut buf = [0; 512];
        let mut held = 0;
        loop {
            let (len, _) = peer.recv_from(&mut buf).expect("the frame sent after up");
            if buf[..len].starts_with(b"reply 9999") {
                break;
            }
            held += 1;
        }
        let up = queue.counters();
        eprintln!("after up: {held} held frames arrived first; {up:?}");
        assert_eq!(queue.tx_frames_free(), tx_frames, "no frame lost");
        assert_eq!(queue.counters().tx_completed, up.tx_frames);
    }

    #[test]
    fn rx_queue_count_reads_the_driver_channels() {
        let Some(net) = TestNet::new(4) else { return };
        // Current kernels' veth reports its queues as channels (ethtool GCHANNELS). Where a
        // veth reports none, the count falls back to sysfs, whose mount shows the namespace
        // of whoever mounted it, not this test's: there, one queue.
        let (channels, count) = net.run(|| (ethtool_rx_channels(XSK_IF), rx_queue_count(XSK_IF)));
        match channels {
            Ok(channels) => {
                assert_eq!(channels, 4);
                assert_eq!(count.expect("rx queues"), 4);
            }
            Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                eprintln!("veth reports no channels here: {err}");
                assert_eq!(count.expect("rx queues"), 1);
            }
            Err(err) => panic!("ethtool GCHANNELS on {XSK_IF}: {err}"),
        }
        let missing = net.run(|| rx_queue_count("nosuchif0"));
        assert!(missing.is_err(), "{missing:?}");
    }

    #[test]
    fn four_queues_share_one_umem_and_each_sends() {
        let Some(net) = TestNet::new(4) else { return };
        let mut xsk = net.open(4, small_options(4));
        let peer = net.peer_socket(6800);
        for (tag, queue) in xsk.queues_mut().iter_mut().enumerate() {
            assert_eq!(queue.queue_id(), tag as u32);
            queue
                .send(&reply_frame(tag as u32, 6800))
                .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
            expect_datagram(&peer, tag as u32);
        }
        assert_eq!(xsk.counters().tx_frames, 4);
    }

    #[test]
    fn zero_copy_is_refused_on_veth_and_auto_falls_back_to_copy() {
        let Some(net) = TestNet::new(1) else { return };
        let zero_copy = XskOptions {
            bind_mode: BindMode::ZeroCopy,
            ..small_options(1)
        };
        // veth has had no zero-copy AF_XDP so far, but that is the driver's to decide: asked
        // for, zero-copy binds or binding fails, and auto mode gets zero-copy where it binds
        // and copy mode where not.
        let has_zero_copy = match net.try_open(1, zero_copy) {
            Ok(xsk) => {
                eprintln!("this kernel's veth has zero-copy AF_XDP");
                assert!(xsk.zero_copy());
                true
            }
            Err(err) => {
                eprintln!("{}", error_chain(&err));
                assert!(
                    matches!(
                        err,
                        XskError::Setup {
                            step: "binding to the queue",
                            ..
                        }
                    ),
                    "{err:?}"
                );
                false
            }
        };

        let auto = XskOptions {
            bind_mode: BindMode::Auto,
            ..small_options(1)
        };
        let mut xsk = net.open(1, auto);
        assert_eq!(xsk.zero_copy(), has_zero_copy);
        let peer = net.peer_socket(6800);
        xsk.queues_mut()[0]
            .send(&reply_frame(7, 6800))
            .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
        expect_datagram(&peer, 7);
    }

    #[test]
    fn options_are_checked_before_anything_is_created() {
        let open = |queues, options| XskInterface::open("none0", 0, queues, &options);
        let defaults = XskOptions::default();
        assert!(matches!(
            open(0, defaults),
            Err(XskError::QueueCount { queues: 0 })
        ));
        assert!(matches!(
            open(MAX_QUEUES + 1, defaults),
            Err(XskError::QueueCount { .. })
        ));
        let odd_frames = XskOptions {
            frame_size: 3000,
            ..defaults
        };
        assert!(matches!(
            open(1, odd_frames),
            Err(XskError::FrameSize { frame_size: 3000 })
        ));
        let scarce = XskOptions {
            frames: 100,
            ..defaults
        };
        assert!(matches!(
            open(8, scarce),
            Err(XskError::TooFewFrames {
                frames: 100,
                queues: 8
            })
        ));
        let huge = XskOptions {
            frames: 1 << 20,
            ..defaults
        };
        assert!(matches!(open(1, huge), Err(XskError::UmemTooLarge { .. })));
    }

    #[test]
    fn the_umem_is_split_into_disjoint_power_of_two_ringed_shares() {
        let layout = Layout::new(1, &XskOptions::default()).expect("defaults");
        assert_eq!((layout.rx_frames, layout.tx_frames), (2048, 2048));
        assert_eq!((layout.rx_ring, layout.tx_ring), (2048, 2048));
        assert_eq!(layout.umem_bytes(1), 8 << 20);

        let layout = Layout::new(3, &XskOptions::default()).expect("3 queues");
        assert_eq!((layout.rx_frames, layout.tx_frames), (682, 683));
        assert_eq!((layout.rx_ring, layout.tx_ring), (1024, 1024));
        let mut end = 0;
        for queue in 0..3 {
            let (rx, tx) = layout.frames_of(queue);
            assert_eq!(rx.start, end);
            assert_eq!(rx.end, tx.start);
            assert_eq!(tx.end - rx.start, 1365 * 2048);
            end = tx.end;
        }
        assert_eq!(end as usize, layout.umem_bytes(3));
    }

    #[test]
    fn bind_modes_parse_and_print() {
        for mode in [BindMode::Copy, BindMode::ZeroCopy, BindMode::Auto] {
            assert_eq!(mode.to_string().parse::<BindMode>(), Ok(mode));
        }
        assert_eq!(BindMode::default(), BindMode::Copy);
        assert!("fast".parse::<BindMode>().is_err());
    }

    /// A request from the peer to 198.18.0.1:4011 (a unicast PXE REQUEST's addressing).
    fn send_request(peer: &UdpSocket, tag: u32) {
        let mut payload = format!("request {tag}").into_bytes();
        payload.resize(300, 0);
        peer.send_to(&payload, (XSK_IP, PXE_SERVER_PORT))
            .expect("send from peer0");
    }

    /// The tag of a request frame, or `None` for other frames the peer sends on its own
    /// (IPv6 router solicitations and the like, which the test program redirects too).
    fn request_tag(ethernet: &[u8]) -> Option<u32> {
        let request = UdpFrame::parse(ethernet).ok()?;
        if request.dst() != SocketAddrV4::new(XSK_IP, PXE_SERVER_PORT) {
            return None;
        }
        let text = std::str::from_utf8(request.payload().split(|b| *b == 0).next()?).ok()?;
        text.strip_prefix("request ")?.parse().ok()
    }

    /// Each queue's XSKMAP slot and socket.
    fn sockets_of(xsk: &XskInterface) -> Vec<(u32, RawFd)> {
        xsk.queues()
            .iter()
            .map(|q| (q.queue_id(), q.as_raw_fd()))
            .collect()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    }

    #[test]
    fn frames_redirected_to_the_xskmap_arrive_in_rx_batches() {
        let Some(net) = TestNet::new(1) else { return };
        let mut xsk = net.open(1, small_options(1));
        let sockets = sockets_of(&xsk);
        let Some(_program) = net.run(|| redirect::RedirectToXsk::attach(XSK_IF, &sockets)) else {
            return;
        };
        let peer = net.peer_socket(0);
        let queue = &mut xsk.queues_mut()[0];
        let rt = runtime();

        // Three times round the RX frames: each goes back to the fill ring after its batch.
        let rounds = 3 * ((queue.rx_frames.end - queue.rx_frames.start) / 2048) as u32;
        for tag in 0..rounds {
            send_request(&peer, tag);
            let received = rt.block_on(async {
                loop {
                    let batch = tokio::time::timeout(WAIT, queue.recv())
                        .await
                        .unwrap_or_else(|_| panic!("request {tag} did not arrive"))
                        .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
                    assert_eq!(batch.queue_id(), 0);
                    if let Some(got) = batch.frames().find_map(request_tag) {
                        return got;
                    }
                }
            });
            assert_eq!(received, tag);
        }
        let counters = queue.counters();
        assert!(counters.rx_frames >= u64::from(rounds), "{counters:?}");
        assert_eq!(counters.invalid_descriptors, 0);
        let stats = queue.kernel_stats().expect("statistics");
        assert_eq!(
            stats.rx_dropped + stats.rx_fill_ring_empty_descs,
            0,
            "{stats:?}"
        );
        assert!(
            queue
                .try_recv()
                .is_none_or(|batch| batch.frames().all(|f| request_tag(f).is_none()))
        );
    }

    /// The steering program itself (boot-ebpf, through `XdpProgram`): a PXE REQUEST to 4011,
    /// as OVMF sent it, is taken into the socket of its rx queue. Needs the eBPF object: in a
    /// build with AYA_BUILD_SKIP it fails as root or under CI, and skips otherwise.
    #[test]
    fn a_pxe_request_to_port_4011_is_taken_by_the_steering_program_into_the_queue_socket() {
        use crate::net::xdp::AttachMode;
        use crate::net::xdp::program::ExistingProgram;

        let Some(net) = TestNet::new(1) else { return };
        let mut xsk = net.open(1, small_options(1));
        let sockets = sockets_of(&xsk);
        let steering = net.run(|| {
            let mut program = load_or_skip()?;
            let attachment = program
                .attach(XSK_IF, AttachMode::Auto, ExistingProgram::Refuse)
                .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
            for &(queue, fd) in &sockets {
                program
                    .register_socket(queue, fd)
                    .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
            }
            Some((program, attachment))
        });
        let Some(_steering) = steering else { return };

        let path = format!(
            "{}/../tests/data/ovmf-pxe-request-4011.bin",
            env!("CARGO_MANIFEST_DIR")
        );
        let request = std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
        let peer = net.peer_socket(0);
        peer.send_to(&request, (XSK_IP, PXE_SERVER_PORT))
            .expect("send from peer0");
        let queue = &mut xsk.queues_mut()[0];
        let taken = runtime().block_on(async {
            loop {
                let batch = tokio::time::timeout(WAIT, queue.recv())
                    .await
                    .expect("the request was not taken into the socket")
                    .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
                let found = batch.frames().find_map(|ethernet| {
                    let frame = UdpFrame::parse(ethernet).ok()?;
                    (frame.dst().port() == PXE_SERVER_PORT).then(|| frame.payload().to_vec())
                });
                if let Some(payload) = found {
                    return payload;
                }
            }
        });
        assert_eq!(taken, request);
    }

    #[test]
    fn four_queues_share_one_umem_and_all_receive() {
        let Some(net) = TestNet::new(4) else { return };
        let mut xsk = net.open(4, small_options(4));
        let sockets = sockets_of(&xsk);
        let Some(_program) = net.run(|| redirect::RedirectToXsk::attach(XSK_IF, &sockets)) else {
            return;
        };
        // Datagrams from many source ports: veth picks the rx queue by the flow's hash.
        let peers: Vec<UdpSocket> = (0..32).map(|_| net.peer_socket(0)).collect();
        for (tag, peer) in peers.iter().enumerate() {
            send_request(peer, tag as u32);
        }
        let mut seen = [false; 32];
        let mut per_queue = [0u32; 4];
        let deadline = Instant::now() + WAIT;
        while seen.contains(&false) && Instant::now() < deadline {
            for queue in xsk.queues_mut() {
                let Some(batch) = queue.try_recv() else {
                    continue;
                };
                for tag in batch.frames().filter_map(request_tag) {
                    seen[tag as usize] = true;
                    per_queue[batch.queue_id() as usize] += 1;
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
        eprintln!("requests per rx queue: {per_queue:?}");
        assert!(!seen.contains(&false), "missing: {seen:?}");
    }

    /// Frames of a proxy OFFER's size (342 bytes: a 300-byte BOOTP message in UDP, IPv4 and
    /// Ethernet), broadcast as an OFFER is, so the peer drops them without answering.
    fn offer_frame(tag: u32) -> Vec<u8> {
        let mut payload = format!("offer {tag}").into_bytes();
        payload.resize(300, 0);
        let mut out = vec![0; 2048];
        let len = udp_frame(
            (XSK_MAC, SocketAddrV4::new(XSK_IP, 67)),
            ([0xff; 6], SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)),
            &payload,
            &mut out,
        )
        .expect("fits");
        out.truncate(len);
        out
    }

    /// The TX ceiling in copy mode on veth, one frame per `send` and in batches of
    /// [`TX_BATCH`]: 200,000 frames or 5 s each. A measurement, not a test:
    /// `cargo test -p boot-user --release --lib -- --ignored --nocapture tx_rate`.
    #[test]
    #[ignore = "a measurement: run it with --ignored --nocapture"]
    fn tx_rate_of_342_byte_frames_in_copy_mode_on_veth() {
        const FRAMES: u64 = 200_000;
        const LIMIT: Duration = Duration::from_secs(5);
        let Some(net) = TestNet::new(1) else { return };
        let mut xsk = net.open(1, XskOptions::default());
        let queue = &mut xsk.queues_mut()[0];
        let frame = offer_frame(0);
        assert_eq!(frame.len(), 342);
        let batch: Vec<&[u8]> = vec![&frame; TX_BATCH];

        for batched in [false, true] {
            let before = queue.counters();
            let start = Instant::now();
            let mut attempted = 0u64;
            while attempted < FRAMES && start.elapsed() < LIMIT {
                if batched {
                    queue.send_batch(batch.iter().copied()).expect("send_batch");
                    attempted += TX_BATCH as u64;
                } else {
                    // Drops are counted; the error is not interesting here.
                    let _ = queue.send(&frame);
                    attempted += 1;
                }
            }
            let elapsed = start.elapsed();
            queue.tx_frames_free();
            let after = queue.counters();
            let sent = after.tx_frames - before.tx_frames;
            eprintln!(
                "{}: {sent} of {attempted} frames queued in {elapsed:.2?}: {:.0} frames/s, \
                 {} completed, {} dropped (no frame {}, ring full {}), {:.2} wakeups/frame",
                if batched { "send_batch(64)" } else { "send" },
                sent as f64 / elapsed.as_secs_f64(),
                after.tx_completed - before.tx_completed,
                (after.tx_dropped_no_frame + after.tx_dropped_ring_full)
                    - (before.tx_dropped_no_frame + before.tx_dropped_ring_full),
                after.tx_dropped_no_frame - before.tx_dropped_no_frame,
                after.tx_dropped_ring_full - before.tx_dropped_ring_full,
                (after.tx_wakeups - before.tx_wakeups) as f64 / sent.max(1) as f64,
            );
        }
        let peer = Command::new("ip")
            .args(["-n", &net.name, "-s", "link", "show", PEER_IF])
            .output()
            .expect("ip -s link");
        eprintln!("{}", String::from_utf8_lossy(&peer.stdout));
    }

    /// A hand-assembled XDP program that redirects every frame to the XSKMAP slot of its rx
    /// queue (falling back to XDP_PASS), so these tests drive the AF_XDP RX path without the
    /// boot-ebpf build. Raw `bpf(2)`; everything it makes closes with its descriptors.
    mod redirect {
        use std::io;
        use std::mem;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

        use crate::net::xdp::test_support::{current_test, skip_or_fail};

        const BPF_MAP_CREATE: libc::c_long = 0;
        const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
        const BPF_PROG_LOAD: libc::c_long = 5;
        const BPF_LINK_CREATE: libc::c_long = 28;
        const BPF_MAP_TYPE_XSKMAP: u32 = 17;
        const BPF_PROG_TYPE_XDP: u32 = 6;
        const BPF_XDP: u32 = 37;
        const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
        const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
        const XDP_PASS: i32 = 2;
        const BPF_FUNC_REDIRECT_MAP: i32 = 51;
        const BPF_PSEUDO_MAP_FD: u8 = 1;

        /// The leading fields of `union bpf_attr` for each command; the kernel treats the rest
        /// as zero. No padding: every byte passed is initialised.
        #[repr(C)]
        struct MapCreate {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
        }
        #[repr(C)]
        struct MapUpdate {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        #[repr(C)]
        struct ProgLoad {
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
        #[repr(C)]
        struct LinkCreate {
            prog_fd: u32,
            target_ifindex: u32,
            attach_type: u32,
            flags: u32,
        }
        /// `struct bpf_insn`: registers packed as dst (low nibble) and src (high nibble).
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Insn {
            code: u8,
            regs: u8,
            off: i16,
            imm: i32,
        }

        fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
            Insn {
                code,
                regs: (src << 4) | dst,
                off,
                imm,
            }
        }

        fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
            // SAFETY: `attr` is an initialised prefix of `union bpf_attr` of the given size;
            // pointers inside it point to live buffers of the caller.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    cmd,
                    (attr as *mut T).cast::<libc::c_void>(),
                    mem::size_of::<T>(),
                )
            };
            if ret < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(ret)
        }

        fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
            let fd = bpf(cmd, attr)?;
            // SAFETY: these commands return a new descriptor that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
        }

        /// The XSKMAP, the program and its link to the interface.
        pub struct RedirectToXsk {
            _map: OwnedFd,
            _program: OwnedFd,
            _link: OwnedFd,
        }

        impl RedirectToXsk {
            /// Attaches to `ifname` with every queue's socket in the map; `None` when this
            /// kernel refuses BPF and [`skip_or_fail`] lets the test skip.
            pub fn attach(ifname: &str, sockets: &[(u32, RawFd)]) -> Option<RedirectToXsk> {
                match Self::try_attach(ifname, sockets) {
                    Ok(program) => Some(program),
                    Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
                        skip_or_fail(
                            &current_test(),
                            &format!("BPF is not permitted here: {err}"),
                        );
                        None
                    }
                    Err(err) => panic!("attaching the redirect program: {err}"),
                }
            }

            fn try_attach(ifname: &str, sockets: &[(u32, RawFd)]) -> io::Result<RedirectToXsk> {
                let ifindex = nix::net::if_::if_nametoindex(ifname)?;
                let map = bpf_fd(
                    BPF_MAP_CREATE,
                    &mut MapCreate {
                        map_type: BPF_MAP_TYPE_XSKMAP,
                        key_size: 4,
                        value_size: 4,
                        max_entries: sockets.len() as u32,
                    },
                )?;
                for &(key, fd) in sockets {
                    let value = fd as u32;
                    bpf(
                        BPF_MAP_UPDATE_ELEM,
                        &mut MapUpdate {
                            map_fd: map.as_raw_fd() as u32,
                            _pad: 0,
                            key: (&raw const key) as u64,
                            value: (&raw const value) as u64,
                            flags: 0,
                        },
                    )?;
                }
                let program = [
                    // r2 = ctx->rx_queue_index (struct xdp_md, offset 16)
                    insn(0x61, 2, 1, 16, 0),
                    // r1 = the map (a 64-bit immediate over two instructions)
                    insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map.as_raw_fd()),
                    insn(0, 0, 0, 0, 0),
                    // r3 = XDP_PASS: what the helper returns when the slot is empty
                    insn(0xb7, 3, 0, 0, XDP_PASS),
                    insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
                    insn(0x95, 0, 0, 0, 0), // exit with the helper's verdict
                ];
                let license = c"Dual MIT/GPL";
                let mut log = vec![0u8; 4096];
                let mut load = ProgLoad {
                    prog_type: BPF_PROG_TYPE_XDP,
                    insn_cnt: program.len() as u32,
                    insns: program.as_ptr() as u64,
                    license: license.as_ptr() as u64,
                    log_level: 1,
                    log_size: log.len() as u32,
                    log_buf: log.as_mut_ptr() as u64,
                    kern_version: 0,
                    prog_flags: 0,
                    prog_name: *b"xsk_test_redir\0\0",
                    prog_ifindex: 0,
                    expected_attach_type: BPF_XDP,
                };
                let prog = bpf_fd(BPF_PROG_LOAD, &mut load).map_err(|err| {
                    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                    io::Error::new(
                        err.kind(),
                        format!("{err}: {}", String::from_utf8_lossy(&log[..end])),
                    )
                })?;
                // Driver mode as the daemon uses on veth; skb mode where that is refused.
                let mut link = Err(io::Error::from_raw_os_error(libc::EINVAL));
                for flags in [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE] {
                    link = bpf_fd(
                        BPF_LINK_CREATE,
                        &mut LinkCreate {
                            prog_fd: prog.as_raw_fd() as u32,
                            target_ifindex: ifindex,
                            attach_type: BPF_XDP,
                            flags,
                        },
                    );
                    if link.is_ok() {
                        break;
                    }
                }
                Ok(RedirectToXsk {
                    _map: map,
                    _program: prog,
                    _link: link?,
                })
            }
        }
    }
}
