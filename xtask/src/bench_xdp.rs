//! `cargo xtask bench-xdp`: nanoseconds per packet of the XDP program's decision, for boot and
//! non-boot frames, measured with `BPF_PROG_TEST_RUN` and a repeat count (the kernel times the
//! loop and reports the average per run).
//!
//! Each case runs `--batches` times `--repeat` runs; the report gives the median and the
//! fastest batch. Every run counts (and tees) like a real frame, so each case checks that the
//! counters moved as its path says: a tee batch that found the ring full, or a boot DISCOVER
//! that was shed, measured a different path and is reported as such. The tee ring holds about
//! 670 records: tee cases keep `--repeat` below that and drain the ring between batches.
//!
//! The benchmark links the daemon's library (for `XdpProgram`), whose build compiles the XDP
//! program and needs the eBPF toolchain. So it lives behind xtask's `xdp-bench` feature, and
//! without it this command re-runs itself as `cargo run --release -p xtask --features
//! xdp-bench -- bench-xdp …`: `cargo xtask setup` must build on a machine without that
//! toolchain.

use anyhow::ensure;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Runs per `BPF_PROG_TEST_RUN` call. Tee cases use at most the ring's room, less a margin
    /// (604 records).
    #[arg(long, default_value_t = 500)]
    repeat: u32,
    /// Calls per case; the median and the fastest are reported.
    #[arg(long, default_value_t = 200)]
    batches: u32,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=1_000_000).contains(&self.repeat),
            "--repeat must be 1..=1,000,000"
        );
        ensure!(
            (1..=100_000).contains(&self.batches),
            "--batches must be 1..=100,000"
        );
        Ok(())
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    args.validate()?;
    imp::run(args)
}

#[cfg(not(feature = "xdp-bench"))]
mod imp {
    use std::process::Command;

    use anyhow::{Context as _, ensure};

    use crate::workspace_root;

    /// Builds xtask with the daemon's library and runs this same command in it.
    pub fn run(_: &super::Args) -> anyhow::Result<()> {
        let forwarded: Vec<String> = std::env::args().skip(1).collect();
        println!(
            "[bench-xdp] building with the XDP program (cargo run --release -p xtask --features \
             xdp-bench)"
        );
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "run",
                "--quiet",
                "--release",
                "--package",
                "xtask",
                "--features",
                "xdp-bench",
                "--",
            ])
            .args(&forwarded)
            .current_dir(workspace_root())
            .status()
            .context("running cargo run")?;
        ensure!(status.success(), "bench-xdp failed ({status})");
        Ok(())
    }
}

#[cfg(feature = "xdp-bench")]
mod imp {
    use std::io;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};
    use std::time::Duration;

    use anyhow::{Context as _, bail};
    use boot_common::wire::ethernet::VlanTags;
    use boot_common::wire::{FrameRepr, MacAddr, emit_udp_frame};
    use boot_tests::BootRequest;
    use dhcproto::v4::MessageType;
    use xdpboot::net::xdp::program::{
        Counter, ProgramConfig, SteerMode, TeeRing, XdpAction, XdpProgram,
    };

    use super::Args;
    use crate::loadgen::{self, RequestPath};

    /// Records the tee ring holds: its bytes over a record and the kernel's 8-byte record
    /// header (`BPF_RINGBUF_HDR_SZ`).
    const TEE_RING_RECORDS: u32 =
        boot_common::TEE_RING_BYTES / (boot_common::TEE_RECORD_LEN as u32 + 8);
    /// Tee runs per call: the ring's room, less a margin.
    const TEE_REPEAT: u32 = TEE_RING_RECORDS - 64;

    /// One measured case.
    struct Case {
        name: &'static str,
        frame: Vec<u8>,
        config: ProgramConfig,
        /// Put an AF_XDP socket in rx queue 0's slot.
        socket: bool,
        /// The counter every run must move (and no other), and the action it returns.
        expect: (Counter, XdpAction),
        /// Runs the ring must have room for: tee cases drain it between batches.
        tees: bool,
    }

    pub fn run(args: &Args) -> anyhow::Result<()> {
        if !nix::unistd::Uid::effective().is_root() {
            bail!("loading XDP programs needs root");
        }
        let mut program = XdpProgram::load().context("loading xdpboot's XDP program")?;
        let mut ring = program.take_tee_ring().context("taking the tee ring")?;
        let socket = af_xdp_socket().context("opening an AF_XDP socket for the XSKMAP")?;
        let verified = program.verified_instruction_count().ok().flatten();
        let jit = std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into());
        println!(
            "[bench-xdp] kernel {}, bpf_jit_enable={jit}, verifier walked {} instructions; \
             {} batches of {} runs per case (tee cases: at most {})",
            kernel_release(),
            verified.map_or("?".into(), |n| n.to_string()),
            args.batches,
            args.repeat,
            args.repeat.min(TEE_REPEAT)
        );
        let tee = ProgramConfig {
            steer: SteerMode::Tee,
            shed_rate: 0,
            shed_burst: 0,
            ring_wakeup: true,
            ipv6: false,
        };
        let boot = boot_discover();
        let cases = [
            Case {
                name: "ARP request (not IPv4)",
                frame: arp_request(),
                config: tee,
                socket: false,
                expect: (Counter::Passed, XdpAction::Pass),
                tees: false,
            },
            Case {
                name: "UDP to port 53 (not DHCP)",
                frame: udp_frame(53, &[0u8; 64]),
                config: tee,
                socket: false,
                expect: (Counter::Passed, XdpAction::Pass),
                tees: false,
            },
            Case {
                name: "plain DHCP DISCOVER (no PXE options), port 67",
                frame: plain_discover(),
                config: tee,
                socket: false,
                expect: (Counter::DhcpPassed, XdpAction::Pass),
                tees: false,
            },
            Case {
                name: "PXE boot DISCOVER, tee (ring wakeups on, as the daemon runs)",
                frame: boot.clone(),
                config: tee,
                socket: false,
                expect: (Counter::Teed, XdpAction::Pass),
                tees: true,
            },
            Case {
                name: "PXE boot DISCOVER, tee (BPF_RB_NO_WAKEUP)",
                frame: boot.clone(),
                config: ProgramConfig {
                    ring_wakeup: false,
                    ..tee
                },
                socket: false,
                expect: (Counter::Teed, XdpAction::Pass),
                tees: true,
            },
            Case {
                name: "PXE boot DISCOVER, tee, shed limiter on (bucket lookup, not shed)",
                frame: boot.clone(),
                config: ProgramConfig {
                    shed_rate: 1_000_000_000,
                    shed_burst: 1_000_000_000,
                    ..tee
                },
                socket: false,
                expect: (Counter::Teed, XdpAction::Pass),
                tees: true,
            },
            Case {
                name: "PXE boot DISCOVER, shed (MAC over its rate)",
                frame: boot.clone(),
                config: ProgramConfig {
                    shed_rate: 1,
                    shed_burst: 1,
                    ..tee
                },
                socket: false,
                expect: (Counter::Shed, XdpAction::Pass),
                tees: false,
            },
            Case {
                name: "PXE boot DISCOVER, redirect to AF_XDP",
                frame: boot.clone(),
                config: ProgramConfig {
                    steer: SteerMode::Redirect,
                    ..tee
                },
                socket: true,
                expect: (Counter::Redirected, XdpAction::Redirect),
                tees: false,
            },
            Case {
                // What `--steer auto` adds: the kernel's socket lookup for the frame
                // (`bpf_sk_lookup_udp`), which finds nothing on 67 on a bench host.
                name: "PXE boot DISCOVER, auto: socket lookup, nothing on 67, redirect",
                frame: boot.clone(),
                config: ProgramConfig {
                    steer: SteerMode::Auto,
                    ..tee
                },
                socket: true,
                expect: (Counter::Redirected, XdpAction::Redirect),
                tees: false,
            },
            Case {
                name: "PXE REQUEST to port 4011, taken by AF_XDP",
                frame: pxe_request_4011(),
                config: tee,
                socket: true,
                expect: (Counter::Taken, XdpAction::Redirect),
                tees: false,
            },
        ];
        println!();
        println!("| frame | XDP verdict | median ns/packet | fastest batch |");
        println!("|---|---|---:|---:|");
        for case in &cases {
            let (median, fastest, note) =
                measure(&mut program, &mut ring, socket.as_fd(), case, args)?;
            println!(
                "| {} | {} ({:?}){note} | {:.1} | {:.1} |",
                case.name,
                case.expect.0.name(),
                case.expect.1,
                median,
                fastest
            );
        }
        Ok(())
    }

    fn measure(
        program: &mut XdpProgram,
        ring: &mut TeeRing,
        socket: std::os::fd::BorrowedFd<'_>,
        case: &Case,
        args: &Args,
    ) -> anyhow::Result<(f64, f64, String)> {
        program.set_config(&case.config)?;
        if case.socket {
            program.register_socket(0, socket)?;
        } else {
            program.unregister_socket(0)?;
        }
        let repeat = if case.tees {
            args.repeat.min(TEE_REPEAT)
        } else {
            args.repeat
        };
        // Warm up (and, for the shed case, spend the MAC's burst) before timing.
        program.test_run_repeat(&case.frame, repeat)?;
        drain(ring);
        let mut times = Vec::with_capacity(args.batches as usize);
        let mut strays = 0u64;
        for _ in 0..args.batches {
            let run = program.test_run_repeat(&case.frame, repeat)?;
            drain(ring);
            if run.action != case.expect.1 {
                bail!(
                    "{}: the program returned {:?}, not {:?}",
                    case.name,
                    run.action,
                    case.expect.1
                );
            }
            for (counter, delta) in run.counter_deltas {
                let want = if counter == case.expect.0 {
                    u64::from(repeat)
                } else {
                    0
                };
                strays += delta.abs_diff(want);
            }
            times.push(run.per_run);
        }
        times.sort();
        let ns = |d: Duration| d.as_nanos() as f64;
        let note = if strays > 0 {
            format!(" — {strays} runs took another path")
        } else {
            String::new()
        };
        Ok((ns(times[times.len() / 2]), ns(times[0]), note))
    }

    fn drain(ring: &mut TeeRing) {
        while ring.next().is_some() {}
    }

    /// An unbound AF_XDP socket: enough for an XSKMAP slot, and for `BPF_PROG_TEST_RUN` to
    /// return a redirect (which it does not carry out).
    fn af_xdp_socket() -> io::Result<OwnedFd> {
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn kernel_release() -> String {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into())
    }

    /// The server's MAC and address, where a frame is sent to them.
    const SERVER_MAC: MacAddr = MacAddr([0x02, 0xd0, 0, 0, 0, 0xfe]);
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    /// A UEFI x64 PXE ROM's DISCOVER, as the load generator sends it (366 bytes).
    fn boot_request() -> BootRequest {
        BootRequest {
            mac: MacAddr([0x02, 0xd0, 0, 0, 0, 1]),
            ..loadgen::discover(RequestPath::Broadcast, 7, Ipv4Addr::UNSPECIFIED)
        }
    }

    fn boot_discover() -> Vec<u8> {
        boot_request().broadcast_frame(VlanTags::NONE)
    }

    /// A DISCOVER from a client that is not network booting: no options 60, 93, 94, 97.
    fn plain_discover() -> Vec<u8> {
        BootRequest {
            mac: MacAddr([0x02, 0xd0, 0, 0, 0, 2]),
            ..BootRequest::plain()
        }
        .broadcast_frame(VlanTags::NONE)
    }

    /// The REQUEST a UEFI PXE client sends to `<server>:4011` after a proxy offer: the
    /// DISCOVER's options with type REQUEST, from its new address (as OVMF, without option 54).
    fn pxe_request_4011() -> Vec<u8> {
        let client = Ipv4Addr::new(198, 18, 0, 147);
        let request = BootRequest {
            message_type: MessageType::Request,
            ciaddr: client,
            ..boot_request()
        };
        let addressing = FrameRepr {
            src_mac: request.mac,
            dst_mac: SERVER_MAC,
            tags: VlanTags::NONE,
            src: SocketAddrV4::new(client, 68),
            dst: SocketAddrV4::new(SERVER, 4011),
            ttl: FrameRepr::DEFAULT_TTL,
        };
        let mut frame = vec![0; BootRequest::MAX_FRAME_LEN];
        let len = request
            .write_frame(&mut frame, &addressing)
            .expect("a REQUEST fits BootRequest::MAX_FRAME_LEN");
        frame.truncate(len);
        frame
    }

    fn udp_frame(port: u16, payload: &[u8]) -> Vec<u8> {
        let addressing = FrameRepr {
            src_mac: MacAddr([0x02, 0xd0, 0, 0, 0, 3]),
            dst_mac: SERVER_MAC,
            tags: VlanTags::NONE,
            src: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 3), 40000),
            dst: SocketAddrV4::new(SERVER, port),
            ttl: FrameRepr::DEFAULT_TTL,
        };
        let at = addressing.headers_len();
        let mut frame = vec![0; at + payload.len()];
        frame[at..].copy_from_slice(payload);
        emit_udp_frame(&mut frame, &addressing, payload.len())
            .expect("the buffer was sized for the frame");
        frame
    }

    fn arp_request() -> Vec<u8> {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0xd0, 0, 0, 0, 3]);
        frame.extend_from_slice(&[0x08, 0x06]);
        frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        frame.extend_from_slice(&[0x02, 0xd0, 0, 0, 0, 3, 198, 18, 0, 3]);
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 0, 198, 18, 0, 1]);
        frame.resize(60, 0);
        frame
    }
}
