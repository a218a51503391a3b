//! The kernel half of the XDP backend: loads xdpboot's XDP program (built from `boot-ebpf` by
//! `build.rs` and embedded in the binary), attaches it to interfaces and reads its verdict
//! counters. [`XdpProgram::test_run`] runs it on one frame with `BPF_PROG_TEST_RUN`, for tests
//! and benchmarks.

use std::{fmt, io, str::FromStr};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{MapError, PerCpuArray},
    programs::{ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode, xdp::XdpLink},
};
use boot_common::{COUNTERS_MAP, Counter, PROGRAM_NAME};

/// The XDP object built by `build.rs`; empty when the binary was built with `AYA_BUILD_SKIP=1`.
fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/boot-ebpf"))
}

/// Shortest frame `BPF_PROG_TEST_RUN` accepts for XDP: an Ethernet header (`ETH_HLEN`).
pub const MIN_TEST_FRAME_LEN: usize = 14;

/// Every verdict counter with its value, in [`Counter::ALL`] order.
pub type CounterValues = [(Counter, u64); Counter::COUNT as usize];

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
    #[error("the eBPF object has no map named `{COUNTERS_MAP}`")]
    MissingCounters(#[source] Option<MapError>),
    #[error("reading counter `{}` failed", .counter.name())]
    ReadCounter {
        counter: Counter,
        #[source]
        source: MapError,
    },
    #[error("attaching the XDP program to {interface} in {mode} mode failed")]
    Attach {
        interface: String,
        mode: AttachMode,
        #[source]
        source: ProgramError,
    },
    #[error("a test frame must be at least {MIN_TEST_FRAME_LEN} bytes, not {len}")]
    TestFrameTooShort { len: usize },
    #[error("BPF_PROG_TEST_RUN failed")]
    TestRun(#[source] ProgramError),
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

/// xdpboot's XDP program, loaded and accepted by the verifier, with its maps.
pub struct XdpProgram {
    ebpf: Ebpf,
}

impl fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpProgram").finish_non_exhaustive()
    }
}

impl XdpProgram {
    /// Loads the embedded object and has the kernel verify the program. Needs root (or
    /// `CAP_BPF` + `CAP_NET_ADMIN`).
    pub fn load() -> Result<Self, XdpError> {
        let object = ebpf_object();
        if object.is_empty() {
            return Err(XdpError::BuiltWithoutObject);
        }
        let ebpf = EbpfLoader::new().load(object).map_err(XdpError::Load)?;
        let mut loaded = Self { ebpf };
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

    fn counter_map(&self) -> Result<PerCpuArray<&aya::maps::MapData, u64>, XdpError> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or(XdpError::MissingCounters(None))?;
        PerCpuArray::try_from(map).map_err(|err| XdpError::MissingCounters(Some(err)))
    }

    /// Attaches the program to `interface` through a BPF link. [`AttachMode::Auto`] tries
    /// driver mode first and falls back to skb mode with a warning. The program stays attached
    /// until the returned [`XdpAttachment`] is dropped; one program may be attached to several
    /// interfaces, and its counters then sum over all of them.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<XdpAttachment, XdpError> {
        let attempt = |program: &mut Xdp, mode: AttachMode| {
            program
                .attach(interface, mode.xdp_mode())
                .and_then(|id| program.take_link(id))
                .map_err(|source| XdpError::Attach {
                    interface: interface.to_owned(),
                    mode,
                    source,
                })
        };
        let program = self.program_mut()?;
        let (link, mode) = match mode {
            AttachMode::Auto => match attempt(program, AttachMode::Driver) {
                Ok(link) => (link, AttachMode::Driver),
                Err(XdpError::Attach {
                    source: ProgramError::UnknownInterface { name },
                    ..
                }) => {
                    return Err(XdpError::Attach {
                        interface: interface.to_owned(),
                        mode,
                        source: ProgramError::UnknownInterface { name },
                    });
                }
                Err(driver_error) => {
                    tracing::warn!(
                        iface = interface,
                        error = %error_chain(&driver_error),
                        "XDP driver mode unavailable, falling back to skb (generic) mode, \
                         which runs after the kernel allocates each packet's skb"
                    );
                    (attempt(program, AttachMode::Skb)?, AttachMode::Skb)
                }
            },
            AttachMode::Driver | AttachMode::Skb => (attempt(program, mode)?, mode),
        };
        tracing::info!(iface = interface, %mode, "XDP program attached");
        Ok(XdpAttachment {
            _link: link,
            interface: interface.to_owned(),
            mode,
        })
    }

    /// The verdict counters summed over all CPUs.
    pub fn counters(&self) -> Result<CounterValues, XdpError> {
        let map = self.counter_map()?;
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

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` and reports what it returned
    /// and which counters it moved. Counters moved by live traffic on an attached interface
    /// during the run are included.
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRunOutcome, XdpError> {
        if frame.len() < MIN_TEST_FRAME_LEN {
            return Err(XdpError::TestFrameTooShort { len: frame.len() });
        }
        let before = self.counters()?;
        let result = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::new()
            })
            .map_err(XdpError::TestRun)?;
        let after = self.counters()?;
        let mut counter_deltas = after;
        for ((_, delta), (_, old)) in counter_deltas.iter_mut().zip(before) {
            *delta = delta.saturating_sub(old);
        }
        Ok(TestRunOutcome {
            action: XdpAction::from(result.return_value),
            counter_deltas,
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
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, UdpSocket},
        process::Command,
        thread,
        time::{Duration, Instant},
    };

    use boot_common::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT, PXE_SERVER_PORT};

    use super::*;

    /// Loads the program, or returns `None` after saying why on stderr when this host cannot
    /// run BPF at all. Any other failure, a verifier rejection above all, fails the test.
    fn load_or_skip() -> Option<XdpProgram> {
        // The test harness names each test's thread after the test.
        let test = thread::current().name().unwrap_or("this test").to_owned();
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipping {test}: loading BPF programs needs root");
            return None;
        }
        match XdpProgram::load() {
            Ok(program) => Some(program),
            Err(err) if err.is_bpf_unavailable() => {
                eprintln!(
                    "skipping {test}: BPF is unavailable here: {}",
                    error_chain(&err)
                );
                None
            }
            Err(err) => panic!("{}", error_chain(&err)),
        }
    }

    /// Instructions the verifier may walk through the program: a tenth of its limit.
    const VERIFIER_BUDGET: u32 = 100_000;

    /// Every counter zero but `counter`, which is one.
    fn only(counter: Counter) -> CounterValues {
        Counter::ALL.map(|c| (c, u64::from(c == counter)))
    }

    const CLIENT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const ETH_P_IPV4: [u8; 2] = [0x08, 0x00];
    const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];
    const ETH_P_8021AD: [u8; 2] = [0x88, 0xa8];
    const BOOTREQUEST: u8 = 1;
    const BOOTREPLY: u8 = 2;

    /// Options of a UEFI x64 PXE ROM's DISCOVER (as OVMF sends them): 53, 57, 93, 94, 97, 55,
    /// then 60 last.
    fn pxe_discover_options() -> Vec<u8> {
        let mut options = vec![53, 1, 1, 57, 2, 0x05, 0xc0, 93, 2, 0, 7, 94, 3, 1, 3, 16];
        options.extend([97, 17, 0]);
        options.extend([0x8c; 16]);
        options.extend([55, 35]);
        options.extend(1..=35u8);
        push_option(&mut options, 60, b"PXEClient:Arch:00007:UNDI:003016");
        options
    }

    /// Options of an ordinary DHCP client's DISCOVER: no 60, no 77.
    fn plain_discover_options() -> Vec<u8> {
        let mut options = vec![53, 1, 1, 61, 7, 1];
        options.extend(CLIENT_MAC);
        push_option(&mut options, 12, b"node07");
        options.extend([55, 4, 1, 3, 6, 15]);
        options
    }

    fn push_option(options: &mut Vec<u8>, code: u8, data: &[u8]) {
        options.push(code);
        options.push(u8::try_from(data.len()).expect("test options are short"));
        options.extend_from_slice(data);
    }

    /// A BOOTP message (RFC 2131 §2) with `options` after the magic cookie, ended and padded
    /// to the 300-byte minimum as clients send it.
    fn bootp(op: u8, options: &[u8]) -> Vec<u8> {
        let mut msg = vec![0; 236];
        msg[0] = op;
        msg[1] = 1; // htype: Ethernet
        msg[2] = 6; // hlen
        msg[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // xid
        msg[10] = 0x80; // broadcast flag
        msg[28..34].copy_from_slice(&CLIENT_MAC); // chaddr
        msg.extend([99, 130, 83, 99]);
        msg.extend_from_slice(options);
        msg.push(255);
        msg.resize(msg.len().max(300), 0);
        msg
    }

    /// Ethernet (with `vlan_tags`, outermost first), IPv4 with `ip_options`, UDP from 68 to
    /// `dst_port`, then `payload`. Checksums are left zero: XDP sees frames before any
    /// checksum validation, and a zero UDP checksum means "none" in IPv4.
    fn frame(
        vlan_tags: &[([u8; 2], u16)],
        ip_options: &[u8],
        dst_port: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut frame = vec![0xff; 6];
        frame.extend(CLIENT_MAC);
        for (tpid, vid) in vlan_tags {
            frame.extend(tpid);
            frame.extend(vid.to_be_bytes());
        }
        frame.extend(ETH_P_IPV4);
        let ip_header_len = 20 + ip_options.len();
        assert_eq!(ip_header_len % 4, 0, "IPv4 options come in 32-bit words");
        let total_len = u16::try_from(ip_header_len + 8 + payload.len()).expect("test frame fits");
        frame.push(0x40 | u8::try_from(ip_header_len / 4).expect("IHL fits"));
        frame.push(0);
        frame.extend(total_len.to_be_bytes());
        frame.extend([0, 0, 0, 0]); // id, flags, fragment offset
        frame.extend([64, 17, 0, 0]); // ttl, UDP, checksum
        frame.extend(Ipv4Addr::UNSPECIFIED.octets());
        frame.extend(Ipv4Addr::BROADCAST.octets());
        frame.extend_from_slice(ip_options);
        frame.extend(DHCP_CLIENT_PORT.to_be_bytes());
        frame.extend(dst_port.to_be_bytes());
        frame.extend(
            u16::try_from(8 + payload.len())
                .expect("fits")
                .to_be_bytes(),
        );
        frame.extend([0, 0]);
        frame.extend_from_slice(payload);
        frame
    }

    fn untagged(dst_port: u16, payload: &[u8]) -> Vec<u8> {
        frame(&[], &[], dst_port, payload)
    }

    /// Runs `frame` and checks the program passed it and counted exactly `expected`.
    fn assert_verdict(program: &XdpProgram, frame: &[u8], expected: Counter) {
        let outcome = program
            .test_run(frame)
            .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
        assert_eq!(
            outcome,
            TestRunOutcome {
                action: XdpAction::Pass,
                counter_deltas: only(expected),
            }
        );
    }

    #[test]
    fn the_verifier_accepts_the_program_and_its_counters_start_at_zero() {
        let Some(program) = load_or_skip() else {
            return;
        };
        assert_eq!(
            program.counters().expect("counters"),
            Counter::ALL.map(|c| (c, 0))
        );

        // The verifier gives up at 1,000,000 instructions walked. Stay far below it, so that a
        // change which makes the paths multiply fails here, not on a production kernel.
        let walked = program
            .program()
            .and_then(|xdp| xdp.info().map_err(XdpError::Verify))
            .expect("program info")
            .verified_instruction_count();
        eprintln!("the verifier walked {walked:?} instructions");
        assert!(
            walked.is_none_or(|n| n < VERIFIER_BUDGET),
            "{walked:?} >= {VERIFIER_BUDGET}"
        );
    }

    #[test]
    fn pxe_rom_discover_is_a_boot_request() {
        let Some(program) = load_or_skip() else {
            return;
        };
        let discover = untagged(
            DHCP_SERVER_PORT,
            &bootp(BOOTREQUEST, &pxe_discover_options()),
        );
        assert_verdict(&program, &discover, Counter::BootRequest);
    }

    #[test]
    fn uefi_http_boot_and_ipxe_discovers_are_boot_requests() {
        let Some(program) = load_or_skip() else {
            return;
        };
        let mut http = plain_discover_options();
        push_option(&mut http, 60, b"HTTPClient:Arch:00016:UNDI:003001");
        let mut ipxe = plain_discover_options();
        push_option(&mut ipxe, 77, b"iPXE");
        let mut ipxe_rfc3004 = plain_discover_options();
        push_option(&mut ipxe_rfc3004, 77, b"\x04iPXE");
        for options in [http, ipxe, ipxe_rfc3004] {
            let discover = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &options));
            assert_verdict(&program, &discover, Counter::BootRequest);
        }
    }

    #[test]
    fn plain_discover_is_left_to_the_site_dhcp_server() {
        let Some(program) = load_or_skip() else {
            return;
        };
        let discover = untagged(
            DHCP_SERVER_PORT,
            &bootp(BOOTREQUEST, &plain_discover_options()),
        );
        assert_verdict(&program, &discover, Counter::DhcpPassed);

        // Look-alikes: a vendor class that only contains "PXEClient" later, a user class
        // other than iPXE, and an option 60 "PXE" whose following bytes happen to read
        // "Client…" (option 67 'C', length 108 'l', data "ient…").
        let mut lookalikes = plain_discover_options();
        push_option(&mut lookalikes, 60, b"MSFT 5.0 PXEClient");
        push_option(&mut lookalikes, 77, b"iPXF");
        push_option(&mut lookalikes, 60, b"PXE");
        let mut ient = b"ient".to_vec();
        ient.resize(usize::from(b'l'), b'x');
        push_option(&mut lookalikes, b'C', &ient);
        let discover = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &lookalikes));
        assert_verdict(&program, &discover, Counter::DhcpPassed);
    }

    #[test]
    fn bootreply_to_a_relay_agent_is_left_to_the_site_dhcp_server() {
        let Some(program) = load_or_skip() else {
            return;
        };
        let reply = untagged(DHCP_SERVER_PORT, &bootp(BOOTREPLY, &pxe_discover_options()));
        assert_verdict(&program, &reply, Counter::DhcpPassed);
    }

    #[test]
    fn request_to_port_4011_is_a_pxe_request() {
        let Some(program) = load_or_skip() else {
            return;
        };
        let mut options = pxe_discover_options();
        options[2] = 3; // DHCPREQUEST
        let request = untagged(PXE_SERVER_PORT, &bootp(BOOTREQUEST, &options));
        assert_verdict(&program, &request, Counter::PxeRequest);
        let reply = untagged(PXE_SERVER_PORT, &bootp(BOOTREPLY, &options));
        assert_verdict(&program, &reply, Counter::Malformed);
    }

    #[test]
    fn non_dhcp_frames_are_passed_untouched() {
        let Some(program) = load_or_skip() else {
            return;
        };
        let dns = untagged(53, &[0; 40]);
        assert_verdict(&program, &dns, Counter::Passed);
        let mut arp = vec![0xff; 6];
        arp.extend(CLIENT_MAC);
        arp.extend([0x08, 0x06]);
        arp.extend([0; 28]);
        assert_verdict(&program, &arp, Counter::Passed);
        // A non-first fragment of a datagram to port 67 cannot be looked into.
        let mut fragment = untagged(
            DHCP_SERVER_PORT,
            &bootp(BOOTREQUEST, &pxe_discover_options()),
        );
        fragment[14 + 6..14 + 8].copy_from_slice(&0x2000u16.to_be_bytes()); // more fragments
        assert_verdict(&program, &fragment, Counter::Passed);
        // A bare Ethernet header is the shortest frame the kernel runs.
        assert_verdict(&program, &arp[..MIN_TEST_FRAME_LEN], Counter::Passed);
    }

    #[test]
    fn vlan_tagged_discovers_are_looked_into() {
        let Some(program) = load_or_skip() else {
            return;
        };
        let payload = bootp(BOOTREQUEST, &pxe_discover_options());
        let dot1q = frame(&[(ETH_P_8021Q, 42)], &[], DHCP_SERVER_PORT, &payload);
        assert_verdict(&program, &dot1q, Counter::BootRequest);
        let qinq = frame(
            &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 42)],
            &[],
            DHCP_SERVER_PORT,
            &payload,
        );
        assert_verdict(&program, &qinq, Counter::BootRequest);
        // A third tag is beyond what the program looks through.
        let three_tags = frame(
            &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 42), (ETH_P_8021Q, 7)],
            &[],
            DHCP_SERVER_PORT,
            &payload,
        );
        assert_verdict(&program, &three_tags, Counter::Passed);
    }

    #[test]
    fn ipv4_options_are_skipped_by_the_header_length() {
        let Some(program) = load_or_skip() else {
            return;
        };
        // Router alert (RFC 2113), one 32-bit word: IHL 6.
        let router_alert = [0x94, 0x04, 0x00, 0x00];
        let payload = bootp(BOOTREQUEST, &pxe_discover_options());
        let discover = frame(&[], &router_alert, DHCP_SERVER_PORT, &payload);
        assert_verdict(&program, &discover, Counter::BootRequest);
    }

    #[test]
    fn truncated_or_corrupt_requests_are_malformed() {
        let Some(program) = load_or_skip() else {
            return;
        };
        let options = pxe_discover_options();
        let discover = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &options));
        let udp_payload = 14 + 20 + 8;
        // Cut inside the fixed BOOTP header, and just before the magic cookie ends.
        assert_verdict(&program, &discover[..udp_payload + 100], Counter::Malformed);
        assert_verdict(&program, &discover[..udp_payload + 239], Counter::Malformed);
        // Cut inside the UDP header: the port is unknown, so it is not ours.
        assert_verdict(&program, &discover[..udp_payload - 5], Counter::Passed);
        // Cut inside option 60 (the last one), after "PXEClient": an option that runs past
        // the frame is not believed.
        let cut = udp_payload + 240 + options.len() - 10;
        assert_verdict(&program, &discover[..cut], Counter::Malformed);
        // Cut right after option 60, before option 255: option 60 is whole, and the scan
        // stops at the first mark of a boot client.
        assert_verdict(&program, &discover[..cut + 10], Counter::BootRequest);
        // A plain DISCOVER cut before its option 255.
        let plain = plain_discover_options();
        let plain_discover = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &plain));
        let cut = udp_payload + 240 + plain.len();
        assert_verdict(&program, &plain_discover[..cut], Counter::Malformed);

        // A request sent without padding ends with option 255 as its last byte;
        // one that ends on a pad instead has lost its end.
        assert_verdict(&program, &plain_discover[..=cut], Counter::DhcpPassed);
        let mut ends_on_pad = plain_discover[..=cut].to_vec();
        ends_on_pad[cut] = 0;
        assert_verdict(&program, &ends_on_pad, Counter::Malformed);

        let mut bad_cookie = discover;
        bad_cookie[udp_payload + 236] = 98;
        assert_verdict(&program, &bad_cookie, Counter::Malformed);
    }

    #[test]
    fn pad_options_are_stepped_over_and_the_scan_is_bounded() {
        let Some(program) = load_or_skip() else {
            return;
        };
        let mut padded = vec![0; 20];
        padded.extend(pxe_discover_options());
        let discover = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &padded));
        assert_verdict(&program, &discover, Counter::BootRequest);

        // Option 60 behind 40 other options is past the scan's bound.
        let mut buried = Vec::new();
        for _ in 0..40 {
            push_option(&mut buried, 250, b"x");
        }
        push_option(&mut buried, 60, b"PXEClient:Arch:00000:UNDI:002001");
        let discover = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &buried));
        assert_verdict(&program, &discover, Counter::DhcpPassed);
    }

    #[test]
    fn test_frames_shorter_than_an_ethernet_header_are_refused() {
        let Some(program) = load_or_skip() else {
            return;
        };
        assert!(matches!(
            program.test_run(&[0; 13]),
            Err(XdpError::TestFrameTooShort { len: 13 })
        ));
    }

    #[test]
    fn attach_modes_parse_and_print() {
        for mode in [AttachMode::Auto, AttachMode::Driver, AttachMode::Skb] {
            assert_eq!(mode.to_string().parse::<AttachMode>(), Ok(mode));
        }
        assert_eq!("native".parse::<AttachMode>(), Ok(AttachMode::Driver));
        assert!("offload".parse::<AttachMode>().is_err());
    }

    /// Runs `f` on a thread of its own in a fresh network namespace with loopback up, so
    /// attaching touches nothing of the host's. The namespace goes when the thread ends.
    fn in_fresh_netns(f: impl FnOnce() + Send + 'static) {
        let test = thread::current().name().unwrap_or("this test").to_owned();
        let outcome = thread::Builder::new()
            .name(test.clone())
            .spawn(move || {
                if let Err(err) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                    eprintln!("skipping {test}: cannot create a network namespace: {err}");
                    return;
                }
                // A child process runs in the namespace of the thread that starts it.
                let status = Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status()
                    .expect("running `ip` (iproute2)");
                assert!(status.success(), "ip link set lo up: {status}");
                f();
            })
            .expect("spawning the namespace thread")
            .join();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Polls the program's counters until `counter` reaches `at_least` or a second passes.
    fn wait_for(program: &XdpProgram, counter: Counter, at_least: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let value = program.counters().expect("counters")[counter.index() as usize].1;
            if value >= at_least || Instant::now() > deadline {
                return value;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn auto_mode_falls_back_to_skb_on_loopback_and_dropping_the_attachment_detaches() {
        in_fresh_netns(|| {
            let Some(mut program) = load_or_skip() else {
                return;
            };
            // Loopback has no native XDP: driver mode alone fails, auto falls back.
            let err = program
                .attach("lo", AttachMode::Driver)
                .expect_err("lo has no driver XDP");
            assert!(
                matches!(
                    err,
                    XdpError::Attach {
                        mode: AttachMode::Driver,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(matches!(
                program.attach("no-such-if0", AttachMode::Auto),
                Err(XdpError::Attach {
                    source: ProgramError::UnknownInterface { .. },
                    ..
                })
            ));

            let attachment = program
                .attach("lo", AttachMode::Auto)
                .expect("attach in skb mode");
            assert_eq!(
                (attachment.interface(), attachment.mode()),
                ("lo", AttachMode::Skb)
            );

            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            let discover = bootp(BOOTREQUEST, &pxe_discover_options());
            let target = (Ipv4Addr::LOCALHOST, DHCP_SERVER_PORT);
            socket.send_to(&discover, target).expect("send");
            assert_eq!(wait_for(&program, Counter::BootRequest, 1), 1);

            drop(attachment);
            socket.send_to(&discover, target).expect("send");
            assert_eq!(
                wait_for(&program, Counter::BootRequest, 2),
                1,
                "still attached"
            );
        });
    }
}
