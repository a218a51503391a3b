//! Types shared by the XDP program (`boot-ebpf`) and the daemon (`boot-user`).
//!
//! Everything here crosses the kernel boundary, so it is `#[repr(C)]` with explicit padding and
//! no pointers. Map and program names are constants so the two sides cannot drift apart.
#![no_std]

/// UDP port a DHCP server listens on (RFC 2131 §4.1).
pub const DHCP_SERVER_PORT: u16 = 67;
/// UDP port a DHCP client listens on (RFC 2131 §4.1).
pub const DHCP_CLIENT_PORT: u16 = 68;
/// PXE boot-server port (PXE 2.1 spec §2.2.1; iPXE `PXE_PORT`).
pub const PXE_SERVER_PORT: u16 = 4011;

/// Name of the XDP program in the object file. `aya-ebpf`'s `#[xdp]` names the program after
/// its function, so `boot-ebpf` defines `fn xdpboot`.
pub const PROGRAM_NAME: &str = "xdpboot";
/// Per-CPU array of `u64` counters indexed by [`Counter`]. `#[map(name = ...)]` in `boot-ebpf`
/// takes a literal, so the two spellings are checked against each other by boot-user's tests.
pub const COUNTERS_MAP: &str = "COUNTERS";

/// What the XDP program decided about one frame. The discriminant is the index into
/// [`COUNTERS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not UDP to port 67 or 4011 (or an IPv4 fragment, whose ports cannot be seen): passed to
    /// the kernel untouched.
    Passed = 0,
    /// DHCP traffic to port 67 that is not a boot request (a plain client, or a BOOTREPLY to a
    /// relay agent): passed, the site DHCP server's business.
    DhcpPassed = 1,
    /// A BOOTREQUEST to port 67 from a boot client: option 60 starts with "PXEClient" or
    /// "HTTPClient", or option 77 (user class) says "iPXE".
    BootRequest = 2,
    /// A BOOTREQUEST to the PXE boot-server port 4011.
    PxeRequest = 3,
    /// A frame to port 67 or 4011 that does not parse as a BOOTREQUEST: truncated, wrong magic
    /// cookie, or a BOOTREPLY sent to 4011.
    Malformed = 4,
}

impl Counter {
    /// Number of counters; the size of [`COUNTERS_MAP`].
    pub const COUNT: u32 = 5;
    /// Every counter in index order, for userspace readers.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Passed,
        Counter::DhcpPassed,
        Counter::BootRequest,
        Counter::PxeRequest,
        Counter::Malformed,
    ];

    /// The counter's slot in [`COUNTERS_MAP`].
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Stable snake_case name, used by `xdpboot stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Passed => "passed",
            Counter::DhcpPassed => "dhcp_passed",
            Counter::BootRequest => "boot_request",
            Counter::PxeRequest => "pxe_request",
            Counter::Malformed => "malformed",
        }
    }
}

// `ALL` must list the counters in index order: readers zip it with the map's slots.
const _: () = {
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i].index() as usize == i);
        i += 1;
    }
};
