//! The XDP program run on frames with `BPF_PROG_TEST_RUN`, and attached to loopback inside a
//! network namespace of the test's own.
//!
//! These need root. Where the host cannot run BPF at all, or make a network namespace, an
//! unprivileged run outside CI prints why and skips; as root or under CI the test fails
//! ([`skip_or_fail`]). Any other failure, a verifier rejection above all, fails the test.
//!
//! What differs between kernels and drivers (the errno of a refused attach, whether loopback
//! has driver-mode XDP) is found out at run time: the tests assert what xdpboot promises on
//! either branch, not one kernel build's answer.
//!
//! `BPF_PROG_TEST_RUN` returns `XDP_REDIRECT` when the program redirects into an XSKMAP slot
//! holding a socket, and does not carry the redirect out: a frame actually arriving on an
//! AF_XDP socket is for an integration test with a bound socket (xsk.rs and the backend).

use std::{
    net::{Ipv4Addr, UdpSocket},
    os::fd::{AsFd as _, FromRawFd as _, OwnedFd},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, PerCpuArray, RingBuf, XskMap};
use boot_common::{
    CONFIG_MAP, COUNTERS_MAP, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, INVENTORY_MAP, PXE_SERVER_PORT,
    SHED_BUCKETS_MAP, TEE_CAPTURE_LEN, TEE_RECORD_LEN, TEE_RING_MAP, TokenBucket, XSK_MAP,
};

use super::*;
use crate::net::xdp::test_support::{current_test, load_or_skip, skip_or_fail};

/// Instructions the verifier may walk through the program: a tenth of its limit.
const VERIFIER_BUDGET: u32 = 100_000;

/// Each listed counter one (twice listed, two), every other zero.
fn counted(counters: &[Counter]) -> CounterValues {
    Counter::ALL.map(|c| (c, counters.iter().filter(|n| **n == c).count() as u64))
}

const CLIENT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const OTHER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
const RELAY_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const ETH_P_IPV4: [u8; 2] = [0x08, 0x00];
const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];
const ETH_P_8021AD: [u8; 2] = [0x88, 0xa8];
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// Offset of the UDP payload in an untagged frame without IPv4 options.
const UDP_PAYLOAD: usize = 14 + 20 + 8;

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

/// `options` with its option 53 (the first option) set to `message_type`.
fn with_message_type(mut options: Vec<u8>, message_type: u8) -> Vec<u8> {
    assert_eq!(options[..2], [53, 1], "option 53 comes first");
    options[2] = message_type;
    options
}

/// Options of an ordinary DHCP client's DISCOVER: no 60, 77 or 93.
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

/// A BOOTP message (RFC 2131 §2) from `chaddr` with `options` after the magic cookie, as is:
/// no END, no padding.
fn bootp_raw(op: u8, chaddr: [u8; 6], options: &[u8]) -> Vec<u8> {
    let mut msg = vec![0; 236];
    msg[0] = op;
    msg[1] = 1; // htype: Ethernet
    msg[2] = 6; // hlen
    msg[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // xid
    msg[10] = 0x80; // broadcast flag
    msg[28..34].copy_from_slice(&chaddr);
    msg.extend([99, 130, 83, 99]);
    msg.extend_from_slice(options);
    msg
}

/// A BOOTP message from [`CLIENT_MAC`], ended and padded to the 300-byte minimum as clients
/// send it.
fn bootp(op: u8, options: &[u8]) -> Vec<u8> {
    let mut msg = bootp_raw(op, CLIENT_MAC, options);
    msg.push(255);
    msg.resize(msg.len().max(300), 0);
    msg
}

/// `msg` as a relay agent forwards it: giaddr set (RFC 2131 §4.1).
fn relayed(mut msg: Vec<u8>, chaddr: [u8; 6]) -> Vec<u8> {
    msg[24..28].copy_from_slice(&[198, 18, 7, 1]);
    msg[28..34].copy_from_slice(&chaddr);
    msg
}

/// Ethernet from `src` (with `vlan_tags`, outermost first), IPv4 with `ip_options`, UDP from
/// 68 to `dst_port`, then `payload`. Checksums are left zero: XDP sees frames before any
/// checksum validation, and a zero UDP checksum means "none" in IPv4.
fn frame_from(
    src: [u8; 6],
    vlan_tags: &[([u8; 2], u16)],
    ip_options: &[u8],
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend(src);
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

fn frame(vlan_tags: &[([u8; 2], u16)], ip_options: &[u8], port: u16, payload: &[u8]) -> Vec<u8> {
    frame_from(CLIENT_MAC, vlan_tags, ip_options, port, payload)
}

fn untagged(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    frame(&[], &[], dst_port, payload)
}

/// A UEFI PXE ROM's DISCOVER to port 67.
fn pxe_discover() -> Vec<u8> {
    untagged(
        DHCP_SERVER_PORT,
        &bootp(BOOTREQUEST, &pxe_discover_options()),
    )
}

/// A UEFI PXE ROM's REQUEST to port 4011.
fn pxe_request_4011() -> Vec<u8> {
    let options = with_message_type(pxe_discover_options(), 3);
    untagged(PXE_SERVER_PORT, &bootp(BOOTREQUEST, &options))
}

fn run(program: &XdpProgram, frame: &[u8]) -> TestRunOutcome {
    program
        .test_run(frame)
        .unwrap_or_else(|err| panic!("{}", error_chain(&err)))
}

/// Runs `frame` and checks what the program returned and that it counted exactly `counters`.
#[track_caller]
fn assert_outcome(program: &XdpProgram, frame: &[u8], action: XdpAction, counters: &[Counter]) {
    assert_eq!(
        run(program, frame),
        TestRunOutcome {
            action,
            counter_deltas: counted(counters),
        }
    );
}

/// Runs `frame` and checks the program passed it and counted exactly `counter`.
#[track_caller]
fn assert_passed(program: &XdpProgram, frame: &[u8], counter: Counter) {
    assert_outcome(program, frame, XdpAction::Pass, &[counter]);
}

fn take_ring(program: &mut XdpProgram) -> TeeRing {
    program
        .take_tee_ring()
        .unwrap_or_else(|err| panic!("{}", error_chain(&err)))
}

fn take_priority_ring(program: &mut XdpProgram) -> TeeRing {
    program
        .take_priority_ring()
        .unwrap_or_else(|err| panic!("{}", error_chain(&err)))
}

/// Every record waiting in the ring, parsed.
fn drain(ring: &mut TeeRing) -> Vec<(TeeHeader, Vec<u8>)> {
    let mut records = Vec::new();
    while let Some(item) = ring.next() {
        let teed = parse_tee_record(&item).expect("a well-formed record");
        records.push((teed.header, teed.frame.to_vec()));
    }
    records
}

/// The default configuration with redirect steering.
fn redirect_mode() -> ProgramConfig {
    ProgramConfig {
        steer: SteerMode::Redirect,
        ..ProgramConfig::default()
    }
}

fn set_config(program: &mut XdpProgram, config: ProgramConfig) {
    program
        .set_config(&config)
        .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
}

/// An unbound AF_XDP socket: enough for an XSKMAP slot, and for `BPF_PROG_TEST_RUN` to
/// return a redirect.
fn af_xdp_socket() -> OwnedFd {
    // SAFETY: a plain socket(2) call; the descriptor it returns is ours alone.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket(AF_XDP): {}", io::Error::last_os_error());
    // SAFETY: `fd` was just opened and is owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
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
    let walked = program.verified_instruction_count().expect("program info");
    eprintln!("the verifier walked {walked:?} instructions");
    assert!(
        walked.is_none_or(|n| n < VERIFIER_BUDGET),
        "{walked:?} >= {VERIFIER_BUDGET}"
    );
}

#[test]
fn every_map_is_found_by_its_boot_common_name_with_its_type() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let map = |name| program.map(name).expect(name);
    PerCpuArray::<_, u64>::try_from(map(COUNTERS_MAP)).expect(COUNTERS_MAP);
    Array::<_, Config>::try_from(map(CONFIG_MAP)).expect(CONFIG_MAP);
    assert!(matches!(map(INVENTORY_MAP), Map::HashMap(_)));
    HashMap::<_, MacKey, u8>::try_from(map(INVENTORY_MAP)).expect(INVENTORY_MAP);
    assert!(matches!(map(SHED_BUCKETS_MAP), Map::LruHashMap(_)));
    HashMap::<_, MacKey, TokenBucket>::try_from(map(SHED_BUCKETS_MAP)).expect(SHED_BUCKETS_MAP);
    XskMap::try_from(map(XSK_MAP)).expect(XSK_MAP);
    let ring: RingBuf<_> = take_ring(&mut program);
    drop(ring);
    assert!(matches!(
        program.take_tee_ring(),
        Err(XdpError::MissingMap {
            name: TEE_RING_MAP,
            ..
        })
    ));
}

#[test]
fn a_pxe_rom_discover_is_teed_with_its_frame_and_where_it_came_from() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let mut ring = take_ring(&mut program);
    let discover = pxe_discover();
    assert_passed(&program, &discover, Counter::Teed);

    let records = drain(&mut ring);
    assert_eq!(records.len(), 1);
    let (header, teed) = &records[0];
    let frame_len = u32::try_from(discover.len()).expect("short frame");
    assert_eq!(
        *header,
        TeeHeader {
            packet_len: frame_len,
            captured_len: frame_len,
            // BPF_PROG_TEST_RUN runs the frame as if it came in on loopback's queue 0.
            ifindex: nix::net::if_::if_nametoindex("lo").expect("lo"),
            rx_queue: 0,
            vlan_ids: [0, 0],
            vlan_tags: 0,
            _pad: [0; 3],
        }
    );
    assert_eq!(*teed, discover);
    assert_eq!(header.vlan_id(), None);
}

#[test]
fn captured_boot_discovers_are_teed_and_their_requests_go_their_ways() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let mut ring = take_ring(&mut program);
    macro_rules! golden {
        ($name:literal) => {
            (
                $name,
                &include_bytes!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../tests/data/",
                    $name
                ))[..],
            )
        };
    }
    // Captured from real firmware in QEMU (tests/data/README.md).
    let discovers = [
        golden!("seabios-ipxe-discover.bin"),
        golden!("undionly-kpxe-discover.bin"),
        golden!("ovmf-pxe-discover.bin"),
        golden!("ovmf-http-discover.bin"),
        golden!("ipxe-efi-discover.bin"),
    ];
    for (name, payload) in discovers {
        let frame = untagged(DHCP_SERVER_PORT, payload);
        assert_eq!(
            run(&program, &frame).counter_deltas,
            counted(&[Counter::Teed]),
            "{name}"
        );
        let records = drain(&mut ring);
        assert_eq!(records.len(), 1, "{name}");
        assert_eq!(records[0].1, frame, "{name}");
    }
    // Their REQUESTs to 67 ask the site server for an address.
    let requests_67 = [
        golden!("seabios-ipxe-request-67.bin"),
        golden!("undionly-kpxe-request-67.bin"),
        golden!("ovmf-pxe-request-67.bin"),
        golden!("ovmf-http-request-67.bin"),
        golden!("ipxe-efi-request-67.bin"),
    ];
    for (name, payload) in requests_67 {
        let frame = untagged(DHCP_SERVER_PORT, payload);
        assert_eq!(
            run(&program, &frame).counter_deltas,
            counted(&[Counter::DhcpPassed]),
            "{name}"
        );
    }
    // Those to 4011 are taken (passed here: no socket is registered).
    let requests_4011 = [
        golden!("seabios-ipxe-request-4011.bin"),
        golden!("seabios-ipxe-pxebs-4011.bin"),
        golden!("undionly-kpxe-request-4011.bin"),
        golden!("ovmf-pxe-request-4011.bin"),
        golden!("ipxe-efi-request-4011.bin"),
    ];
    for (name, payload) in requests_4011 {
        let frame = untagged(PXE_SERVER_PORT, payload);
        assert_eq!(
            run(&program, &frame).counter_deltas,
            counted(&[Counter::NoSocket]),
            "{name}"
        );
    }
    assert!(drain(&mut ring).is_empty());
}

#[test]
fn uefi_http_boot_ipxe_and_arch_option_discovers_are_teed() {
    let Some(program) = load_or_skip() else {
        return;
    };
    let mut http = plain_discover_options();
    push_option(&mut http, 60, b"HTTPClient:Arch:00016:UNDI:003001");
    let mut ipxe = plain_discover_options();
    push_option(&mut ipxe, 77, b"iPXE");
    let mut ipxe_rfc3004 = plain_discover_options();
    push_option(&mut ipxe_rfc3004, 77, b"\x04iPXE");
    let mut arch = plain_discover_options();
    push_option(&mut arch, 93, &[0, 11]);
    // The boot mark before the message type.
    let mut mark_first = Vec::new();
    push_option(&mut mark_first, 60, b"PXEClient");
    mark_first.extend(plain_discover_options());
    for options in [http, ipxe, ipxe_rfc3004, arch, mark_first] {
        let discover = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &options));
        assert_passed(&program, &discover, Counter::Teed);
    }
}

#[test]
fn plain_discover_is_left_to_the_site_dhcp_server() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let mut ring = take_ring(&mut program);
    let discover = untagged(
        DHCP_SERVER_PORT,
        &bootp(BOOTREQUEST, &plain_discover_options()),
    );
    assert_passed(&program, &discover, Counter::DhcpPassed);

    // Look-alikes: a vendor class that only contains "PXEClient" later, a user class other
    // than iPXE, an option 60 "PXE" whose following bytes happen to read "Client…" (option
    // 67 'C', length 108 'l', data "ient…"), and an option 93 too short to hold an arch.
    let mut lookalikes = plain_discover_options();
    push_option(&mut lookalikes, 60, b"MSFT 5.0 PXEClient");
    push_option(&mut lookalikes, 77, b"iPXF");
    push_option(&mut lookalikes, 93, &[7]);
    push_option(&mut lookalikes, 60, b"PXE");
    let mut ient = b"ient".to_vec();
    ient.resize(usize::from(b'l'), b'x');
    push_option(&mut lookalikes, b'C', &ient);
    let discover = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &lookalikes));
    assert_passed(&program, &discover, Counter::DhcpPassed);

    // A boot client without option 53 speaks plain BOOTP: not ours either.
    let mut bootp_only = pxe_discover_options();
    bootp_only.drain(..3);
    let request = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &bootp_only));
    assert_passed(&program, &request, Counter::DhcpPassed);
    assert!(drain(&mut ring).is_empty());
}

#[test]
fn a_boot_clients_request_and_inform_on_67_are_left_to_the_site_server() {
    let Some(program) = load_or_skip() else {
        return;
    };
    for message_type in [3, 8] {
        let options = with_message_type(pxe_discover_options(), message_type);
        let request = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &options));
        assert_passed(&program, &request, Counter::DhcpPassed);
    }
}

#[test]
fn bootreply_to_a_relay_agent_is_left_to_the_site_dhcp_server() {
    let Some(program) = load_or_skip() else {
        return;
    };
    let reply = untagged(DHCP_SERVER_PORT, &bootp(BOOTREPLY, &pxe_discover_options()));
    assert_passed(&program, &reply, Counter::DhcpPassed);
}

#[test]
fn a_request_to_4011_is_taken_by_its_queues_socket_and_passed_without_one() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let request = pxe_request_4011();
    assert_passed(&program, &request, Counter::NoSocket);

    let socket = af_xdp_socket();
    program
        .register_socket(0, socket.as_fd())
        .expect("register");
    assert_outcome(&program, &request, XdpAction::Redirect, &[Counter::Taken]);
    // Any BOOTREQUEST to 4011 is taken: userspace decides what deserves an answer.
    let plain = untagged(
        PXE_SERVER_PORT,
        &bootp(BOOTREQUEST, &plain_discover_options()),
    );
    assert_outcome(&program, &plain, XdpAction::Redirect, &[Counter::Taken]);
    // Non-boot DHCP on 67 is not touched by a registered socket.
    let discover_67 = untagged(
        DHCP_SERVER_PORT,
        &bootp(BOOTREQUEST, &plain_discover_options()),
    );
    assert_passed(&program, &discover_67, Counter::DhcpPassed);

    program.unregister_socket(0).expect("unregister");
    assert_passed(&program, &request, Counter::NoSocket);
    assert!(matches!(
        program.register_socket(boot_common::XSK_MAX_QUEUES, socket.as_fd()),
        Err(XdpError::Map { .. })
    ));
}

#[test]
fn redirect_mode_takes_boot_discovers_on_67_and_tees_them_without_a_socket() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let mut ring = take_ring(&mut program);
    set_config(&mut program, redirect_mode());
    let discover = pxe_discover();
    // No socket on the queue: the tee still gets it to userspace.
    assert_outcome(
        &program,
        &discover,
        XdpAction::Pass,
        &[Counter::NoSocket, Counter::Teed],
    );
    assert_eq!(drain(&mut ring).len(), 1);

    let socket = af_xdp_socket();
    program
        .register_socket(0, socket.as_fd())
        .expect("register");
    assert_outcome(
        &program,
        &discover,
        XdpAction::Redirect,
        &[Counter::Redirected],
    );
    // Only boot DISCOVERs: the site server's traffic still goes to the kernel.
    let plain = untagged(
        DHCP_SERVER_PORT,
        &bootp(BOOTREQUEST, &plain_discover_options()),
    );
    assert_passed(&program, &plain, Counter::DhcpPassed);
    assert!(drain(&mut ring).is_empty());

    set_config(&mut program, ProgramConfig::default());
    assert_passed(&program, &discover, Counter::Teed);
}

#[test]
fn a_flood_from_one_mac_is_shed_after_its_burst_but_never_an_inventory_machine() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let mut ring = take_ring(&mut program);
    // One request per second: the four below come well within a second.
    set_config(
        &mut program,
        ProgramConfig {
            shed_rate: 1,
            shed_burst: 3,
            ..ProgramConfig::default()
        },
    );
    let discover = pxe_discover();
    for _ in 0..3 {
        assert_passed(&program, &discover, Counter::Teed);
    }
    // Over the limit: not teed, but the site server still gets it.
    assert_passed(&program, &discover, Counter::Shed);
    // The same MAC's requests on 4011 spend the same bucket, and nothing else wants them.
    assert_outcome(
        &program,
        &pxe_request_4011(),
        XdpAction::Drop,
        &[Counter::Shed],
    );
    assert_eq!(drain(&mut ring).len(), 3);
    // Non-boot DHCP from the same MAC is not ours to limit.
    let plain = untagged(
        DHCP_SERVER_PORT,
        &bootp(BOOTREQUEST, &plain_discover_options()),
    );
    assert_passed(&program, &plain, Counter::DhcpPassed);

    // Another MAC has a bucket of its own; listed in the inventory, it is never shed.
    let mut from_other = bootp(BOOTREQUEST, &pxe_discover_options());
    from_other[28..34].copy_from_slice(&OTHER_MAC);
    let other = frame_from(OTHER_MAC, &[], &[], DHCP_SERVER_PORT, &from_other);
    program.set_inventory(&[OTHER_MAC]).expect("inventory");
    for _ in 0..10 {
        assert_passed(&program, &other, Counter::Teed);
    }
    // Replacing the inventory drops MACs no longer listed.
    program.set_inventory(&[CLIENT_MAC]).expect("inventory");
    let mut verdicts = Vec::new();
    for _ in 0..5 {
        verdicts.push(run(&program, &other).counter_deltas);
    }
    assert_eq!(verdicts[..3], [counted(&[Counter::Teed]); 3]);
    assert_eq!(verdicts[3..], [counted(&[Counter::Shed]); 2]);
    assert_passed(&program, &discover, Counter::Teed);

    // Rate 0 turns shedding off.
    program.set_inventory(&[]).expect("inventory");
    set_config(&mut program, ProgramConfig::default());
    for _ in 0..10 {
        assert_passed(&program, &discover, Counter::Teed);
    }
}

#[test]
fn inventory_machines_are_teed_into_their_own_ring_even_when_a_flood_fills_the_shared_one() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let mut ring = take_ring(&mut program);
    let mut priority = take_priority_ring(&mut program);
    program.set_inventory(&[OTHER_MAC]).expect("inventory");
    // The flood: one MAC's DISCOVERs (shedding is off by default) until the shared ring is full.
    let flood = pxe_discover();
    let mut teed = 0;
    while run(&program, &flood).counter_deltas == counted(&[Counter::Teed]) {
        teed += 1;
        assert!(teed < 10_000, "the shared ring never filled");
    }
    assert_passed(&program, &flood, Counter::RingFull);

    // The inventory machine still gets through, into its own ring.
    let mut from_other = bootp(BOOTREQUEST, &pxe_discover_options());
    from_other[28..34].copy_from_slice(&OTHER_MAC);
    let other = frame_from(OTHER_MAC, &[], &[], DHCP_SERVER_PORT, &from_other);
    for _ in 0..5 {
        assert_passed(&program, &other, Counter::Teed);
    }
    let records = drain(&mut priority);
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|(_, frame)| *frame == other));
    assert_eq!(drain(&mut ring).len(), teed);
}

#[test]
fn inventory_machines_use_their_own_ring_on_4011_and_in_redirect_mode() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let mut ring = take_ring(&mut program);
    let mut priority = take_priority_ring(&mut program);
    set_config(&mut program, redirect_mode());
    let socket = af_xdp_socket();
    program
        .register_socket(0, socket.as_fd())
        .expect("register");
    // Others' requests are redirected into the queue's socket, where a flood would crowd them.
    assert_outcome(
        &program,
        &pxe_discover(),
        XdpAction::Redirect,
        &[Counter::Redirected],
    );
    assert_outcome(
        &program,
        &pxe_request_4011(),
        XdpAction::Redirect,
        &[Counter::Taken],
    );
    assert!(drain(&mut priority).is_empty());

    program.set_inventory(&[CLIENT_MAC]).expect("inventory");
    // Listed, the same machine's DISCOVER is teed into the priority ring (and passed), and
    // its 4011 REQUEST copied there and dropped: nothing else listens on 4011.
    let discover = pxe_discover();
    let request = pxe_request_4011();
    assert_passed(&program, &discover, Counter::Teed);
    assert_outcome(&program, &request, XdpAction::Drop, &[Counter::Taken]);
    let records = drain(&mut priority);
    assert_eq!(records.len(), 2);
    assert!(records[0].1 == discover && records[1].1 == request);
    assert!(drain(&mut ring).is_empty());
}

#[test]
fn clients_behind_a_relay_agent_or_a_router_are_limited_one_by_one() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    set_config(
        &mut program,
        ProgramConfig {
            shed_rate: 1,
            shed_burst: 2,
            ..ProgramConfig::default()
        },
    );
    // Relayed DISCOVERs all come from the relay's MAC, and REQUESTs to 4011 from clients on
    // another subnet from the router's; the client is in chaddr.
    let relayed_from = |client| {
        let msg = relayed(bootp(BOOTREQUEST, &pxe_discover_options()), client);
        frame_from(RELAY_MAC, &[], &[], DHCP_SERVER_PORT, &msg)
    };
    let routed_from = |client| {
        let options = with_message_type(pxe_discover_options(), 3);
        let mut msg = bootp_raw(BOOTREQUEST, client, &options);
        msg.push(255);
        frame_from(RELAY_MAC, &[], &[], PXE_SERVER_PORT, &msg)
    };
    for client in [CLIENT_MAC, OTHER_MAC] {
        let discover = relayed_from(client);
        assert_passed(&program, &discover, Counter::Teed);
        assert_passed(&program, &discover, Counter::Teed);
        assert_passed(&program, &discover, Counter::Shed);
    }
    for client in [[0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2]] {
        let request = routed_from(client);
        assert_passed(&program, &request, Counter::NoSocket);
        assert_passed(&program, &request, Counter::NoSocket);
        assert_outcome(&program, &request, XdpAction::Drop, &[Counter::Shed]);
    }
    // A chaddr that is no Ethernet MAC (InfiniBand: htype 32, hlen 0) says nothing: the
    // frame's source is all there is.
    for source in [[0x02, 0, 0, 0, 0, 0x0a], [0x02, 0, 0, 0, 0, 0x0b]] {
        let mut msg = bootp_raw(BOOTREQUEST, [0; 6], &pxe_discover_options());
        msg.push(255);
        (msg[1], msg[2]) = (32, 0);
        let discover = frame_from(source, &[], &[], DHCP_SERVER_PORT, &msg);
        assert_passed(&program, &discover, Counter::Teed);
        assert_passed(&program, &discover, Counter::Teed);
        assert_passed(&program, &discover, Counter::Shed);
    }
}

#[test]
fn malformed_requests_are_passed_on_67_and_dropped_on_4011() {
    let Some(program) = load_or_skip() else {
        return;
    };
    let options = pxe_discover_options();
    let mut bad_cookie = bootp(BOOTREQUEST, &options);
    bad_cookie[236] = 98;
    let mut bad_op = bootp(BOOTREQUEST, &options);
    bad_op[0] = 3;
    let too_short = bootp(BOOTREQUEST, &options)[..200].to_vec();
    // Option 60 says 200 bytes, the message ends 32 bytes into it.
    let mut overrun = vec![53, 1, 1];
    overrun.extend([60, 200]);
    overrun.extend(b"PXEClient:Arch:00007:UNDI:003016");
    let overrun = bootp_raw(BOOTREQUEST, CLIENT_MAC, &overrun);
    // The options end on a pad, without END.
    let mut no_end = plain_discover_options();
    no_end.push(0);
    let no_end = bootp_raw(BOOTREQUEST, CLIENT_MAC, &no_end);
    for (what, payload) in [
        ("bad cookie", bad_cookie),
        ("op 3", bad_op),
        ("200 bytes", too_short),
        ("option overrun", overrun),
        ("no end", no_end),
    ] {
        let on_67 = untagged(DHCP_SERVER_PORT, &payload);
        assert_eq!(
            run(&program, &on_67),
            TestRunOutcome {
                action: XdpAction::Pass,
                counter_deltas: counted(&[Counter::Malformed]),
            },
            "{what} on 67"
        );
        let on_4011 = untagged(PXE_SERVER_PORT, &payload);
        assert_eq!(
            run(&program, &on_4011),
            TestRunOutcome {
                action: XdpAction::Drop,
                counter_deltas: counted(&[Counter::Malformed]),
            },
            "{what} on 4011"
        );
    }
    // A BOOTREPLY to 4011 has no business there.
    let reply = untagged(PXE_SERVER_PORT, &bootp(BOOTREPLY, &options));
    assert_outcome(&program, &reply, XdpAction::Drop, &[Counter::Malformed]);
    // A UDP length beyond the IP datagram's.
    let mut lying = pxe_discover();
    lying[14 + 2..14 + 4].copy_from_slice(&300u16.to_be_bytes());
    assert_passed(&program, &lying, Counter::Malformed);
}

#[test]
fn a_frame_cut_at_any_offset_is_never_teed_or_taken() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let mut ring = take_ring(&mut program);
    let socket = af_xdp_socket();
    program
        .register_socket(0, socket.as_fd())
        .expect("register");
    for whole in [pxe_discover(), pxe_request_4011()] {
        let on_4011 = whole[14 + 20 + 2..14 + 20 + 4] == PXE_SERVER_PORT.to_be_bytes();
        for cut in MIN_TEST_FRAME_LEN..whole.len() {
            let outcome = run(&program, &whole[..cut]);
            // Until the UDP header is whole the frame is not known to be ours; after, a frame
            // shorter than its lengths say is malformed.
            let expected = if cut < UDP_PAYLOAD {
                (XdpAction::Pass, Counter::Passed)
            } else if on_4011 {
                (XdpAction::Drop, Counter::Malformed)
            } else {
                (XdpAction::Pass, Counter::Malformed)
            };
            assert_eq!(
                outcome,
                TestRunOutcome {
                    action: expected.0,
                    counter_deltas: counted(&[expected.1]),
                },
                "cut at {cut} of {}",
                whole.len()
            );
        }
    }
    assert!(drain(&mut ring).is_empty(), "teed a cut frame");
}

#[test]
fn vlan_tagged_discovers_are_teed_with_their_vlan_ids() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let mut ring = take_ring(&mut program);
    let payload = bootp(BOOTREQUEST, &pxe_discover_options());
    // The priority bits of the TCI are not part of the id.
    let dot1q = frame(
        &[(ETH_P_8021Q, 0xa000 | 42)],
        &[],
        DHCP_SERVER_PORT,
        &payload,
    );
    assert_passed(&program, &dot1q, Counter::Teed);
    let qinq = frame(
        &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 42)],
        &[],
        DHCP_SERVER_PORT,
        &payload,
    );
    assert_passed(&program, &qinq, Counter::Teed);
    let records = drain(&mut ring);
    assert_eq!(records.len(), 2);
    assert_eq!(
        (
            records[0].0.vlan_tags,
            records[0].0.vlan_ids,
            records[0].0.vlan_id()
        ),
        (1, [42, 0], Some(42))
    );
    assert_eq!(records[0].1, dot1q);
    assert_eq!(
        (
            records[1].0.vlan_tags,
            records[1].0.vlan_ids,
            records[1].0.vlan_id()
        ),
        (2, [100, 42], Some(42))
    );
    assert_eq!(records[1].1, qinq);

    // A third tag is beyond what the program looks through.
    let three_tags = frame(
        &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 42), (ETH_P_8021Q, 7)],
        &[],
        DHCP_SERVER_PORT,
        &payload,
    );
    assert_passed(&program, &three_tags, Counter::Passed);
    // A tagged request to 4011 is taken like any other.
    let tagged_4011 = frame(
        &[(ETH_P_8021Q, 42)],
        &[],
        PXE_SERVER_PORT,
        &bootp(BOOTREQUEST, &pxe_discover_options()),
    );
    assert_passed(&program, &tagged_4011, Counter::NoSocket);
}

#[test]
fn ipv4_fragments_are_passed_untouched() {
    let Some(program) = load_or_skip() else {
        return;
    };
    // The first fragment (more fragments set) and a later one (offset set) of a datagram to
    // port 67: neither shows the whole message.
    for flags_offset in [0x2000u16, 0x0010] {
        let mut fragment = pxe_discover();
        fragment[14 + 6..14 + 8].copy_from_slice(&flags_offset.to_be_bytes());
        assert_passed(&program, &fragment, Counter::Passed);
    }
    // "Don't fragment" is no fragment.
    let mut dont_fragment = pxe_discover();
    dont_fragment[14 + 6..14 + 8].copy_from_slice(&0x4000u16.to_be_bytes());
    assert_passed(&program, &dont_fragment, Counter::Teed);
}

#[test]
fn non_dhcp_frames_are_passed_untouched() {
    let Some(program) = load_or_skip() else {
        return;
    };
    let dns = untagged(53, &[0; 40]);
    assert_passed(&program, &dns, Counter::Passed);
    let mut arp = vec![0xff; 6];
    arp.extend(CLIENT_MAC);
    arp.extend([0x08, 0x06]);
    arp.extend([0; 28]);
    assert_passed(&program, &arp, Counter::Passed);
    // A bare Ethernet header is the shortest frame the kernel runs.
    assert_passed(&program, &arp[..MIN_TEST_FRAME_LEN], Counter::Passed);
}

#[test]
fn ipv4_options_are_skipped_by_the_header_length() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let mut ring = take_ring(&mut program);
    // Router alert (RFC 2113), one 32-bit word: IHL 6.
    let router_alert = [0x94, 0x04, 0x00, 0x00];
    let payload = bootp(BOOTREQUEST, &pxe_discover_options());
    let discover = frame(&[], &router_alert, DHCP_SERVER_PORT, &payload);
    assert_passed(&program, &discover, Counter::Teed);
    assert_eq!(drain(&mut ring)[0].1, discover);
}

#[test]
fn pad_options_are_stepped_over_and_the_scan_is_bounded() {
    let Some(program) = load_or_skip() else {
        return;
    };
    let mut padded = vec![53, 1, 1];
    padded.extend([0; 20]);
    padded.extend(&pxe_discover_options()[3..]);
    let discover = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &padded));
    assert_passed(&program, &discover, Counter::Teed);

    // Option 60 behind 40 other options is past the scan's bound: plain DHCP on 67, and on
    // 4011 still a request to take.
    let mut buried = vec![53, 1, 1];
    for _ in 0..40 {
        push_option(&mut buried, 250, b"x");
    }
    push_option(&mut buried, 60, b"PXEClient:Arch:00000:UNDI:002001");
    let discover = untagged(DHCP_SERVER_PORT, &bootp(BOOTREQUEST, &buried));
    assert_passed(&program, &discover, Counter::DhcpPassed);
    let request = untagged(PXE_SERVER_PORT, &bootp(BOOTREQUEST, &buried));
    assert_passed(&program, &request, Counter::NoSocket);
}

#[test]
fn tee_records_are_sliced_by_their_captured_length() {
    let mut record = vec![0xee; TEE_RECORD_LEN];
    record[..4].copy_from_slice(&2000u32.to_ne_bytes()); // packet_len
    record[4..8].copy_from_slice(&3u32.to_ne_bytes()); // captured_len
    record[16..18].copy_from_slice(&7u16.to_ne_bytes());
    record[20] = 1; // vlan_tags
    record[24..27].copy_from_slice(b"abc");
    let teed = parse_tee_record(&record).expect("record");
    assert_eq!(teed.frame, b"abc");
    assert_eq!(teed.header.vlan_id(), Some(7));
    assert!(teed.is_truncated());

    assert_eq!(
        parse_tee_record(&record[..TEE_RECORD_LEN - 1]),
        Err(TeeRecordError::Short {
            len: TEE_RECORD_LEN - 1
        })
    );
    let too_long = u32::try_from(TEE_CAPTURE_LEN + 1).expect("small");
    record[4..8].copy_from_slice(&too_long.to_ne_bytes());
    assert_eq!(
        parse_tee_record(&record),
        Err(TeeRecordError::CapturedTooLong { captured: too_long })
    );
}

#[test]
fn the_ring_signals_its_descriptor_only_when_wakeups_are_asked_for() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let ring = take_ring(&mut program);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Edge-triggered, as the backend will poll it.
        let mut ring = crate::net::register(ring).expect("register the ring");
        let wait = Duration::from_millis(200);
        for wakeup in [false, true, false] {
            set_config(
                &mut program,
                ProgramConfig {
                    ring_wakeup: wakeup,
                    ..ProgramConfig::default()
                },
            );
            assert_passed(&program, &pxe_discover(), Counter::Teed);
            let signalled = tokio::time::timeout(wait, ring.readable_mut()).await;
            assert_eq!(signalled.is_ok(), wakeup, "wakeup {wakeup}");
            // The record is there either way.
            match signalled {
                Ok(guard) => {
                    let mut guard = guard.expect("readable");
                    assert_eq!(drain(guard.get_inner_mut()).len(), 1);
                    guard.clear_ready();
                }
                Err(_) => assert_eq!(drain(ring.get_mut()).len(), 1),
            }
        }
    });
}

#[test]
fn test_run_repeat_reports_a_time_per_run_for_each_path() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    let mut ring = take_ring(&mut program);
    let dns = untagged(53, &[0; 40]);
    let plain = untagged(
        DHCP_SERVER_PORT,
        &bootp(BOOTREQUEST, &plain_discover_options()),
    );
    // Fewer than the ring holds, so every run tees.
    const TEES: u32 = 500;
    const RUNS: u32 = 10_000;
    fn time(
        (program, ring): (&XdpProgram, &mut TeeRing),
        what: &str,
        frame: &[u8],
        repeat: u32,
        counter: Counter,
    ) {
        let timed = program
            .test_run_repeat(frame, repeat)
            .unwrap_or_else(|err| panic!("{}", error_chain(&err)));
        assert_eq!(
            timed.counter_deltas,
            Counter::ALL.map(|c| (c, if c == counter { u64::from(repeat) } else { 0 })),
            "{what}"
        );
        assert!(timed.per_run > Duration::ZERO, "{what}");
        eprintln!("{what}: {} ns per run", timed.per_run.as_nanos());
        drain(ring);
    }
    time(
        (&program, &mut ring),
        "plain UDP",
        &dns,
        RUNS,
        Counter::Passed,
    );
    time(
        (&program, &mut ring),
        "non-boot DHCP",
        &plain,
        RUNS,
        Counter::DhcpPassed,
    );
    time(
        (&program, &mut ring),
        "teed DISCOVER",
        &pxe_discover(),
        TEES,
        Counter::Teed,
    );
    time(
        (&program, &mut ring),
        "4011 REQUEST, no socket",
        &pxe_request_4011(),
        RUNS,
        Counter::NoSocket,
    );

    let socket = af_xdp_socket();
    program
        .register_socket(0, socket.as_fd())
        .expect("register");
    time(
        (&program, &mut ring),
        "4011 REQUEST taken",
        &pxe_request_4011(),
        RUNS,
        Counter::Taken,
    );
    set_config(&mut program, redirect_mode());
    time(
        (&program, &mut ring),
        "redirected DISCOVER",
        &pxe_discover(),
        RUNS,
        Counter::Redirected,
    );
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
    let test = current_test();
    let outcome = thread::Builder::new()
        .name(test.clone())
        .spawn(move || {
            if let Err(err) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                skip_or_fail(&test, &format!("cannot create a network namespace: {err}"));
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

fn lo_state() -> AttachedXdp {
    attached_xdp_on("lo").expect("XDP state of lo")
}

/// lo's XDP state with `program_id` alone attached, in the hook of `mode` (an attachment's
/// mode: driver or skb).
fn only_on_lo(mode: AttachMode, program_id: u32) -> AttachedXdp {
    match mode {
        AttachMode::Driver => AttachedXdp {
            driver: Some(program_id),
            ..AttachedXdp::default()
        },
        AttachMode::Skb => AttachedXdp {
            skb: Some(program_id),
            ..AttachedXdp::default()
        },
        AttachMode::Auto => panic!("an attachment is in driver or skb mode, never auto"),
    }
}

/// Asserts that lo has no XDP program once a link was dropped. The kernel detaches when the
/// link's last reference goes, which under load (CI once saw it) can land just after the close
/// returns: a second is allowed.
#[track_caller]
fn assert_lo_cleared() {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !lo_state().is_empty() {
        assert!(
            Instant::now() < deadline,
            "a program was left on lo: {:?}",
            lo_state()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A one-instruction XDP program (`return XDP_PASS`) named `foreign`: someone else's.
fn load_foreign_program() -> OwnedFd {
    // BPF_ALU64 | BPF_MOV | BPF_K into r0, then BPF_JMP | BPF_EXIT.
    let instructions: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 2, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..7].copy_from_slice(b"foreign");
    /// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
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
    let mut attr = ProgLoadAttr {
        prog_type: 6, // BPF_PROG_TYPE_XDP
        insn_cnt: 2,
        insns: instructions.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    let fd = attached::sys_bpf(attached::BPF_PROG_LOAD, &mut attr).expect("BPF_PROG_LOAD");
    // SAFETY: the kernel just opened this descriptor for us.
    unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).expect("fd")) }
}

#[test]
fn auto_mode_falls_back_to_skb_on_loopback_and_dropping_the_attachment_detaches() {
    in_fresh_netns(|| {
        let Some(mut program) = load_or_skip() else {
            return;
        };
        let id = program.program_id().expect("id");
        assert!(matches!(
            program.attach("no-such-if0", AttachMode::Auto, ExistingProgram::Refuse),
            Err(XdpError::UnknownInterface { .. })
        ));
        // Loopback's driver has had no XDP of its own in any kernel so far, but that is the
        // kernel's to decide. Driver mode alone attaches there or fails saying so; auto mode
        // then takes driver mode where it attaches and falls back to skb mode where not.
        let expected = match program.attach("lo", AttachMode::Driver, ExistingProgram::Refuse) {
            Ok(attachment) => {
                eprintln!("this kernel has driver-mode XDP on lo");
                assert_eq!(attachment.mode(), AttachMode::Driver);
                assert_eq!(lo_state(), only_on_lo(AttachMode::Driver, id));
                AttachMode::Driver
            }
            Err(err) => {
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
                AttachMode::Skb
            }
        };
        assert_lo_cleared();

        let attachment = program
            .attach("lo", AttachMode::Auto, ExistingProgram::Refuse)
            .expect("attach in auto mode");
        assert_eq!(
            (attachment.interface(), attachment.mode()),
            ("lo", expected)
        );
        assert_eq!(lo_state(), only_on_lo(expected, id));

        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let discover = bootp(BOOTREQUEST, &pxe_discover_options());
        let target = (Ipv4Addr::LOCALHOST, DHCP_SERVER_PORT);
        socket.send_to(&discover, target).expect("send");
        assert_eq!(wait_for(&program, Counter::Teed, 1), 1);

        // Another process reads the same counters through the interface.
        let seen = attached_counters("lo").unwrap_or_else(|err| panic!("{}", error_chain(&err)));
        assert_eq!(seen, program.counters().expect("counters"));

        drop(attachment);
        assert_lo_cleared();
        socket.send_to(&discover, target).expect("send");
        assert_eq!(wait_for(&program, Counter::Teed, 2), 1, "still attached");
        assert!(matches!(
            attached_counters("lo"),
            Err(XdpError::NotAttached { .. })
        ));
    });
}

#[test]
fn one_program_instance_serves_one_interface() {
    in_fresh_netns(|| {
        let Some(mut program) = load_or_skip() else {
            return;
        };
        let status = Command::new("ip")
            .args([
                "link", "add", "xb-veth0", "type", "veth", "peer", "name", "xb-veth1",
            ])
            .status()
            .expect("ip");
        assert!(status.success());
        let _attachment = program
            .attach("lo", AttachMode::Skb, ExistingProgram::Refuse)
            .expect("attach");
        assert!(matches!(
            program.attach("xb-veth0", AttachMode::Skb, ExistingProgram::Replace),
            Err(XdpError::AlreadyAttached { attached }) if attached == "lo"
        ));
        assert!(matches!(
            program.attach("lo", AttachMode::Skb, ExistingProgram::Refuse),
            Err(XdpError::AlreadyAttached { .. })
        ));
    });
}

#[test]
fn someone_elses_program_is_kept_unless_forced_and_a_link_cannot_displace_it() {
    in_fresh_netns(|| {
        let Some(mut program) = load_or_skip() else {
            return;
        };
        let lo = nix::net::if_::if_nametoindex("lo").expect("lo");
        let foreign = load_foreign_program();
        attached::set_xdp_program(lo, XdpHook::Skb, Some(foreign.as_fd()), None)
            .expect("attach the foreign program through netlink");
        let foreign_id = lo_state().skb.expect("foreign program attached");

        // A BPF link never displaces a program attached through netlink, in its mode or the
        // other (net/core/dev.c, dev_xdp_attach). The errno differs between kernel builds
        // (EBUSY in the same mode; EEXIST in the other, or EOPNOTSUPP where the kernel first
        // finds that lo's driver has no XDP): what holds everywhere is the refusal and the
        // foreign program left where it was.
        let before = lo_state();
        let xdp = program.program_mut().expect("program");
        for mode in [XdpMode::Skb, XdpMode::Driver] {
            match xdp.attach_to_if_index(lo, mode) {
                Err(ProgramError::SyscallError(err)) => {
                    eprintln!("{mode:?} link refused: {err}: {}", err.io_error);
                }
                other => panic!("{mode:?}: a BPF link was not refused: {other:?}"),
            }
            assert_eq!(lo_state(), before, "{mode:?}: the foreign program stays");
        }

        let err = program
            .attach("lo", AttachMode::Auto, ExistingProgram::Refuse)
            .expect_err("the foreign program stays");
        let message = err.to_string();
        assert!(
            matches!(&err, XdpError::Occupied { interface, occupant }
                if interface == "lo" && occupant.name == "foreign"
                    && occupant.program_id == foreign_id && occupant.link_id.is_none()),
            "{err:?}"
        );
        assert!(
            message.contains("lo") && message.contains("--force"),
            "{message}"
        );
        assert!(matches!(
            attached_counters("lo"),
            Err(XdpError::NotOurs { .. })
        ));
        assert_eq!(lo_state().skb, Some(foreign_id));

        let attachment = program
            .attach("lo", AttachMode::Auto, ExistingProgram::Replace)
            .expect("replace the foreign program");
        assert_eq!(
            lo_state(),
            only_on_lo(attachment.mode(), program.program_id().expect("id"))
        );
        drop(attachment);
        assert_lo_cleared();
    });
}

#[test]
fn another_xdpboots_link_is_kept_even_when_forced_and_a_stale_one_is_replaced() {
    in_fresh_netns(|| {
        let Some(mut running) = load_or_skip() else {
            return;
        };
        let Some(mut ours) = load_or_skip() else {
            return;
        };
        let running_attachment = running
            .attach("lo", AttachMode::Skb, ExistingProgram::Refuse)
            .expect("attach");
        let err = ours
            .attach("lo", AttachMode::Auto, ExistingProgram::Refuse)
            .expect_err("another xdpboot serves lo");
        assert!(
            matches!(&err, XdpError::AnotherXdpboot { occupant, .. }
                if occupant.name == PROGRAM_NAME && occupant.link_id.is_some()),
            "{err:?}"
        );
        assert!(err.to_string().contains("--force"), "{err}");

        // Not even forced: the running daemon's sockets hold the queues, so taking its program
        // away would leave both without a working backend.
        let err = ours
            .attach("lo", AttachMode::Auto, ExistingProgram::Replace)
            .expect_err("a running xdpboot is never replaced");
        assert!(matches!(err, XdpError::AnotherXdpboot { .. }), "{err:?}");
        assert_eq!(lo_state().skb, Some(running.program_id().expect("id")));
        drop(running_attachment);
        assert_lo_cleared();

        // An xdpboot program attached through netlink has no owner to stop: replaced
        // without --force.
        let lo = nix::net::if_::if_nametoindex("lo").expect("lo");
        let stale_fd = running.program().expect("program").fd().expect("fd");
        attached::set_xdp_program(lo, XdpHook::Skb, Some(stale_fd.as_fd()), None)
            .expect("netlink attach");
        let attachment = ours
            .attach("lo", AttachMode::Auto, ExistingProgram::Refuse)
            .expect("replace the stale program");
        assert_eq!(
            lo_state(),
            only_on_lo(attachment.mode(), ours.program_id().expect("id"))
        );
        drop(attachment);
        assert_lo_cleared();
    });
}

#[test]
fn auto_steering_takes_a_boot_discover_only_while_no_socket_of_the_host_would_receive_it() {
    in_fresh_netns(|| {
        let Some(mut program) = load_or_skip() else {
            return;
        };
        let mut ring = take_ring(&mut program);
        set_config(
            &mut program,
            ProgramConfig {
                steer: SteerMode::Auto,
                ..ProgramConfig::default()
            },
        );
        let socket = af_xdp_socket();
        program
            .register_socket(0, socket.as_fd())
            .expect("register");
        let discover = pxe_discover();
        // Nothing in this namespace listens on 67: taken.
        assert_outcome(
            &program,
            &discover,
            XdpAction::Redirect,
            &[Counter::Redirected],
        );

        // A DHCP server binds 0.0.0.0:67, as dnsmasq does: its very next frame is teed, with
        // no watcher in between.
        let server = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, DHCP_SERVER_PORT)).expect("bind 67");
        assert_passed(&program, &discover, Counter::Teed);
        assert_eq!(drain(&mut ring).len(), 1);
        // A tagged frame is teed whoever listens: a server on the VLAN device is not found.
        drop(server);
        let tagged = frame(
            &[(ETH_P_8021Q, 100)],
            &[],
            DHCP_SERVER_PORT,
            &bootp(BOOTREQUEST, &pxe_discover_options()),
        );
        assert_passed(&program, &tagged, Counter::Teed);
        assert_eq!(drain(&mut ring).len(), 1);

        // The server stopped: taken again. A socket the kernel would not hand a broadcast to
        // (bound to a unicast address) does not count.
        let unicast =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, DHCP_SERVER_PORT)).expect("bind 127.0.0.1:67");
        assert_outcome(
            &program,
            &discover,
            XdpAction::Redirect,
            &[Counter::Redirected],
        );
        drop(unicast);
        assert!(drain(&mut ring).is_empty());
    });
}

// ---- IPv6 ----------------------------------------------------------------------------------

const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
/// The IPv6 next-header numbers the frames below use (RFC 8200 §4).
const HOP_BY_HOP: u8 = 0;
const UDP: u8 = 17;
const FRAGMENT: u8 = 44;
const DESTINATION_OPTIONS: u8 = 60;

/// A captured DHCPv6 request (`tests/data/dhcpv6/`, see tests/data/README.md).
fn golden6(name: &str) -> Vec<u8> {
    let path = format!("{}/../tests/data/dhcpv6/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Ethernet from `src` (with `vlan_tags`), IPv6 from the link-local address of `src` to
/// ff02::1:2 (to fd00:18::1 for port 4011), the extension headers `ext` (their bytes, the first
/// named by `first`, the last naming UDP), UDP from 546 to `dst_port`, then `payload`.
/// Checksums are left zero: XDP sees frames before any checksum validation.
fn frame6_from(
    src: [u8; 6],
    vlan_tags: &[([u8; 2], u16)],
    first: u8,
    ext: &[u8],
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = vec![0x33, 0x33, 0, 1, 0, 2];
    frame.extend(src);
    for (tpid, vid) in vlan_tags {
        frame.extend(tpid);
        frame.extend(vid.to_be_bytes());
    }
    frame.extend(ETH_P_IPV6);
    let payload_len = u16::try_from(ext.len() + 8 + payload.len()).expect("test frame fits");
    frame.extend([0x60, 0, 0, 0]);
    frame.extend(payload_len.to_be_bytes());
    frame.extend([first, 1]);
    frame.extend(boot_common::wire::ipv6::eui64_link_local(src.into()).octets());
    let dst = if dst_port == PXE_SERVER_PORT {
        std::net::Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1)
    } else {
        boot_common::wire::dhcpv6::ALL_RELAY_AGENTS_AND_SERVERS
    };
    frame.extend(dst.octets());
    frame.extend_from_slice(ext);
    frame.extend(546u16.to_be_bytes());
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

/// The default configuration with DHCPv6 steered.
fn ipv6_on() -> ProgramConfig {
    ProgramConfig {
        ipv6: true,
        ..ProgramConfig::default()
    }
}

fn untagged6(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    frame6_from(CLIENT_MAC, &[], UDP, &[], dst_port, payload)
}

/// A DHCPv6 message of `kind` with `options` (code, data) in order.
fn dhcpv6_message(kind: u8, options: &[(u16, &[u8])]) -> Vec<u8> {
    let mut msg = vec![kind, 0x12, 0x34, 0x56];
    for (code, data) in options {
        msg.extend(code.to_be_bytes());
        msg.extend(u16::try_from(data.len()).expect("short").to_be_bytes());
        msg.extend_from_slice(data);
    }
    msg
}

#[test]
fn captured_boot_solicits_and_information_requests_are_teed_as_they_came() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    set_config(&mut program, ipv6_on());
    let mut ring = take_ring(&mut program);
    // Off, as `[ipv6] enabled = false` leaves it, DHCPv6 passes untouched.
    set_config(&mut program, ProgramConfig::default());
    let solicit = untagged6(547, &golden6("ovmf-pxev6-solicit.bin"));
    assert_passed(&program, &solicit, Counter::Passed);
    set_config(&mut program, ipv6_on());
    let mut teed = Vec::new();
    for name in [
        "ovmf-pxev6-solicit.bin",
        "ovmf-httpv6-solicit.bin",
        "ipxe-efi-information-request.bin",
        "ipxe-efi-solicit.bin",
    ] {
        let frame = untagged6(547, &golden6(name));
        assert_passed(&program, &frame, Counter::Teed);
        teed.push(frame);
    }
    let records = drain(&mut ring);
    assert_eq!(
        records.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(),
        teed
    );
    assert!(records.iter().all(|(h, _)| h.vlan_tags == 0));
}

#[test]
fn plain_solicits_and_the_site_servers_exchanges_are_left_to_it() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    set_config(&mut program, ipv6_on());
    let mut ring = take_ring(&mut program);
    let duid = [0u8, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56];
    // EDK2's own session for the address: no vendor class, a request for DNS servers.
    let plain = dhcpv6_message(1, &[(1, &duid), (8, &[0, 0]), (6, &[0, 23])]);
    assert_passed(&program, &untagged6(547, &plain), Counter::DhcpPassed);
    // Its Request to the site's server.
    let request = untagged6(547, &golden6("ovmf-pxev6-request-547.bin"));
    assert_passed(&program, &request, Counter::DhcpPassed);
    // A boot client's Renew, Confirm or Release is the site server's whatever its marks.
    let class = [&[0u8, 0, 1, 0x57, 0, 9][..], b"PXEClient"].concat();
    for kind in [4u8, 5, 6, 8, 9] {
        let marked = dhcpv6_message(kind, &[(1, &duid), (16, &class)]);
        assert_passed(&program, &untagged6(547, &marked), Counter::DhcpPassed);
    }
    // A server's answer goes to port 546: not ours to look at.
    let advertise = dhcpv6_message(2, &[(1, &duid), (16, &class)]);
    let to_client = frame6_from(RELAY_MAC, &[], UDP, &[], 546, &advertise);
    assert_passed(&program, &to_client, Counter::Passed);
    // Another enterprise's "PXEClient" is not EDK2's.
    let other = [&[0u8, 0, 0, 9, 0, 9][..], b"PXEClient"].concat();
    let foreign = dhcpv6_message(1, &[(1, &duid), (16, &other)]);
    assert_passed(&program, &untagged6(547, &foreign), Counter::DhcpPassed);
    assert!(drain(&mut ring).is_empty());
}

#[test]
fn edk2s_request_on_4011_over_ipv6_is_taken_by_its_queues_socket() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    set_config(&mut program, ipv6_on());
    let request = untagged6(PXE_SERVER_PORT, &golden6("ovmf-pxev6-request-4011.bin"));
    assert_passed(&program, &request, Counter::NoSocket);
    let socket = af_xdp_socket();
    program
        .register_socket(0, socket.as_fd())
        .expect("register");
    assert_outcome(&program, &request, XdpAction::Redirect, &[Counter::Taken]);
}

#[test]
fn extension_headers_are_walked_to_the_solicit_and_fragments_are_passed() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    set_config(&mut program, ipv6_on());
    let mut ring = take_ring(&mut program);
    let solicit = golden6("ovmf-pxev6-solicit.bin");
    // Hop-by-hop options (8 octets), destination options (16 octets), an atomic fragment.
    let mut ext = vec![DESTINATION_OPTIONS, 0, 1, 4, 0, 0, 0, 0];
    ext.extend([FRAGMENT, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ext.extend([UDP, 0, 0, 0, 0, 0, 0, 7]);
    let walked = frame6_from(CLIENT_MAC, &[], HOP_BY_HOP, &ext, 547, &solicit);
    assert_passed(&program, &walked, Counter::Teed);
    assert_eq!(drain(&mut ring).len(), 1);

    // A first or later fragment: its ports are not all here (or not at all).
    for offset_and_more in [0x0001u16, 0x0008] {
        let [a, b] = offset_and_more.to_be_bytes();
        let fragment = [UDP, 0, a, b, 0, 0, 0, 7];
        let frame = frame6_from(CLIENT_MAC, &[], FRAGMENT, &fragment, 547, &solicit);
        assert_passed(&program, &frame, Counter::Passed);
    }
    // One more extension header than the walk's bound.
    let bound = boot_common::wire::ipv6::MAX_EXTENSION_HEADERS;
    let mut chain = Vec::new();
    for i in 0..=bound {
        let next = if i == bound { UDP } else { DESTINATION_OPTIONS };
        chain.extend([next, 0, 1, 4, 0, 0, 0, 0]);
    }
    let long = frame6_from(CLIENT_MAC, &[], DESTINATION_OPTIONS, &chain, 547, &solicit);
    assert_passed(&program, &long, Counter::Passed);
    // Exactly the bound: walked.
    let within = frame6_from(
        CLIENT_MAC,
        &[],
        DESTINATION_OPTIONS,
        &chain[8..],
        547,
        &solicit,
    );
    assert_passed(&program, &within, Counter::Teed);
    // ICMPv6 and other UDP are nothing to do with us.
    let mut icmp = untagged6(547, &solicit);
    icmp[14 + 6] = 58;
    assert_passed(&program, &icmp, Counter::Passed);
    assert_passed(&program, &untagged6(53, &solicit), Counter::Passed);
}

#[test]
fn malformed_dhcpv6_is_passed_on_547_and_dropped_on_4011() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    set_config(&mut program, ipv6_on());
    let solicit = golden6("ovmf-pxev6-solicit.bin");
    let udp_len_at = 14 + 40 + 4;
    for port in [547u16, PXE_SERVER_PORT] {
        let expected = if port == PXE_SERVER_PORT {
            XdpAction::Drop
        } else {
            XdpAction::Pass
        };
        // A UDP length past the frame, and past the IPv6 payload.
        let mut long = untagged6(port, &solicit);
        long[udp_len_at..udp_len_at + 2].copy_from_slice(&2000u16.to_be_bytes());
        assert_outcome(&program, &long, expected, &[Counter::Malformed]);
        let mut beyond_ip = untagged6(port, &solicit);
        let payload_len = u16::from_be_bytes([beyond_ip[18], beyond_ip[19]]);
        beyond_ip[18..20].copy_from_slice(&(payload_len - 1).to_be_bytes());
        assert_outcome(&program, &beyond_ip, expected, &[Counter::Malformed]);
        // Shorter than a DHCPv6 header.
        assert_outcome(
            &program,
            &untagged6(port, &[1, 0, 0]),
            expected,
            &[Counter::Malformed],
        );
        // An option whose length runs past the message.
        let mut overrun = solicit.clone();
        overrun[6..8].copy_from_slice(&500u16.to_be_bytes());
        assert_outcome(
            &program,
            &untagged6(port, &overrun),
            expected,
            &[Counter::Malformed],
        );
    }
}

#[test]
fn an_ipv6_frame_cut_at_any_offset_is_never_teed_or_taken() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    set_config(&mut program, ipv6_on());
    let mut ring = take_ring(&mut program);
    let socket = af_xdp_socket();
    program
        .register_socket(0, socket.as_fd())
        .expect("register");
    for (port, name) in [
        (547, "ovmf-pxev6-solicit.bin"),
        (PXE_SERVER_PORT, "ovmf-pxev6-request-4011.bin"),
    ] {
        let whole = untagged6(port, &golden6(name));
        for cut in MIN_TEST_FRAME_LEN..whole.len() {
            let expected = if cut < 14 + 40 + 8 {
                (XdpAction::Pass, Counter::Passed)
            } else if port == PXE_SERVER_PORT {
                (XdpAction::Drop, Counter::Malformed)
            } else {
                (XdpAction::Pass, Counter::Malformed)
            };
            assert_eq!(
                run(&program, &whole[..cut]),
                TestRunOutcome {
                    action: expected.0,
                    counter_deltas: counted(&[expected.1]),
                },
                "{name} cut at {cut} of {}",
                whole.len()
            );
        }
    }
    assert!(drain(&mut ring).is_empty(), "teed a cut frame");
}

#[test]
fn tagged_and_relayed_dhcpv6_is_teed_and_a_flood_from_one_mac_is_shed() {
    let Some(mut program) = load_or_skip() else {
        return;
    };
    set_config(&mut program, ipv6_on());
    let mut ring = take_ring(&mut program);
    let solicit = golden6("ovmf-pxev6-solicit.bin");
    let tagged = frame6_from(CLIENT_MAC, &[(ETH_P_8021Q, 42)], UDP, &[], 547, &solicit);
    assert_passed(&program, &tagged, Counter::Teed);
    let records = drain(&mut ring);
    assert_eq!(records[0].0.vlan_id(), Some(42));

    set_config(
        &mut program,
        ProgramConfig {
            shed_rate: 1,
            shed_burst: 2,
            ..ipv6_on()
        },
    );
    let frame = untagged6(547, &solicit);
    assert_passed(&program, &frame, Counter::Teed);
    assert_passed(&program, &frame, Counter::Teed);
    // Over the limit: not teed, but the site's DHCPv6 server still gets it.
    assert_passed(&program, &frame, Counter::Shed);
    // A relay's Relay-Forwards carry many clients: teed, never shed.
    let mut relay_forward = vec![12, 0];
    relay_forward.extend([0; 32]);
    relay_forward.extend(9u16.to_be_bytes());
    relay_forward.extend(u16::try_from(solicit.len()).expect("short").to_be_bytes());
    relay_forward.extend(&solicit);
    let relayed = frame6_from(RELAY_MAC, &[], UDP, &[], 547, &relay_forward);
    for _ in 0..5 {
        assert_passed(&program, &relayed, Counter::Teed);
    }
    assert_eq!(drain(&mut ring).len(), 2 + 5);
}
