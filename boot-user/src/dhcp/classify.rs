//! Who is asking: parse a DHCP request and describe the client that sent it.
//!
//! One pass over a view of the bytes (the wire layer's [`dhcpv4::Packet`]), no allocation: the
//! bytes come straight off the wire, so every length is checked before it is used, and a
//! request that is not whole is refused rather than half read. dhcproto decodes the same
//! requests independently in the golden-packet tests.

use std::fmt;
use std::net::Ipv4Addr;

use boot_common::wire::{dhcpv4, mac::MacAddr, pxe};
use dhcproto::v4::MessageType;

/// The fixed BOOTP header before the options field (RFC 2131 §2, figure 1).
pub const BOOTP_HEADER_LEN: usize = 236;
/// RFC 2131 §3: the first four octets of the options field.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The largest request we accept. A DHCP message in one unfragmented Ethernet frame cannot be
/// longer (1500 − 20 IPv4 − 8 UDP); anything bigger is not from a boot ROM.
pub const MAX_REQUEST_LEN: usize = 1472;
/// Upper bound on options walked in one request. A 1472-byte message holds at most ~600
/// two-byte options; real firmware sends fewer than 30. The bound keeps the walk O(1).
pub const MAX_OPTIONS: usize = 255;

/// Why a request was dropped before classification. Counted, never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than a BOOTP header and magic cookie")]
    Truncated,
    #[error("longer than {MAX_REQUEST_LEN} bytes")]
    Oversized,
    #[error("op is not BOOTREQUEST")]
    NotARequest,
    #[error("hardware address length over 16")]
    BadHardwareLength,
    #[error("magic cookie missing")]
    BadMagic,
    #[error("an option runs past the end of the packet")]
    OptionOverrun,
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
    #[error("the option list does not end with END (255)")]
    MissingEnd,
    #[error("option {0} has a length its RFC does not allow")]
    BadOptionLength(u8),
    #[error("no DHCP message type (option 53)")]
    NoMessageType,
}

/// The UDP port a request arrived on. Which one decides which reply is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerPort {
    /// UDP 67: DHCP, shared with the site's DHCP server. We send proxy offers only.
    Dhcp,
    /// UDP 4011: the PXE boot-server port, ours alone (PXE 2.1 §2.2.1).
    Pxe,
}

impl ServerPort {
    pub fn number(self) -> u16 {
        match self {
            ServerPort::Dhcp => boot_common::DHCP_SERVER_PORT,
            ServerPort::Pxe => boot_common::PXE_SERVER_PORT,
        }
    }
}

/// The client's processor and firmware interface, from option 93 (RFC 4578 §2.1; numbers from
/// the IANA "Processor Architecture Types" registry). HTTP-boot codes map to the same
/// architecture with [`BootProtocol::Http`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientArch {
    /// 0: x86 PC BIOS.
    Bios,
    /// 0 from a Raspberry Pi's boot ROM, told apart by its MAC OUI (as tinkerbell/smee does):
    /// it cannot run any iPXE build.
    RaspberryPi,
    /// 6 (PXE) / 15 (HTTP): 32-bit x86 UEFI.
    UefiIa32,
    /// 7 (PXE) / 16 (HTTP), and 9 (EFI byte code), which several x64 firmwares send instead of 7.
    UefiX64,
    /// 10 / 18: 32-bit ARM UEFI.
    UefiArm32,
    /// 11 / 19: 64-bit ARM UEFI.
    UefiArm64,
    /// 27 / 28: 64-bit RISC-V UEFI.
    UefiRiscV64,
    /// Any other code: no policy applies; the request is counted and left alone.
    Other(u16),
}

impl ClientArch {
    /// Maps an option-93 code to the architecture and whether it is the HTTP-boot variant.
    pub fn from_code(code: u16) -> (ClientArch, BootProtocol) {
        use BootProtocol::{Http, Pxe};
        match code {
            0 => (ClientArch::Bios, Pxe),
            6 => (ClientArch::UefiIa32, Pxe),
            7 | 9 => (ClientArch::UefiX64, Pxe),
            10 => (ClientArch::UefiArm32, Pxe),
            11 => (ClientArch::UefiArm64, Pxe),
            15 => (ClientArch::UefiIa32, Http),
            16 | 17 => (ClientArch::UefiX64, Http),
            18 => (ClientArch::UefiArm32, Http),
            19 => (ClientArch::UefiArm64, Http),
            27 => (ClientArch::UefiRiscV64, Pxe),
            28 => (ClientArch::UefiRiscV64, Http),
            other => (ClientArch::Other(other), Pxe),
        }
    }

    /// The name used in the config's policy table and in logs.
    pub fn name(self) -> &'static str {
        match self {
            ClientArch::Bios => "bios",
            ClientArch::RaspberryPi => "rpi",
            ClientArch::UefiIa32 => "uefi-ia32",
            ClientArch::UefiX64 => "uefi-x64",
            ClientArch::UefiArm32 => "uefi-arm32",
            ClientArch::UefiArm64 => "uefi-arm64",
            ClientArch::UefiRiscV64 => "uefi-riscv64",
            ClientArch::Other(_) => "other",
        }
    }

    /// Parses a policy-table name; the inverse of [`ClientArch::name`] for known architectures.
    pub fn from_name(name: &str) -> Option<ClientArch> {
        Some(match name {
            "bios" => ClientArch::Bios,
            "rpi" => ClientArch::RaspberryPi,
            "uefi-ia32" => ClientArch::UefiIa32,
            "uefi-x64" => ClientArch::UefiX64,
            "uefi-arm32" => ClientArch::UefiArm32,
            "uefi-arm64" => ClientArch::UefiArm64,
            "uefi-riscv64" => ClientArch::UefiRiscV64,
            _ => return None,
        })
    }

    /// Every name [`ClientArch::from_name`] accepts, for error messages.
    pub const NAMES: &'static [&'static str] = &[
        "bios",
        "rpi",
        "uefi-ia32",
        "uefi-x64",
        "uefi-arm32",
        "uefi-arm64",
        "uefi-riscv64",
    ];

    /// UEFI firmware. Decides option 43: UEFI PXE clients get none, which sends them on to
    /// port 4011 (pixiecore `dhcp.go`; dnsmasq ≥ 2.76 `rfc2131.c`).
    pub fn is_uefi(self) -> bool {
        !matches!(
            self,
            ClientArch::Bios | ClientArch::RaspberryPi | ClientArch::Other(_)
        )
    }
}

impl fmt::Display for ClientArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientArch::Other(code) => write!(f, "other({code})"),
            known => f.write_str(known.name()),
        }
    }
}

/// How the firmware wants to fetch its boot file, from the vendor class (option 60).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootProtocol {
    /// "PXEClient…": PXE ROMs and iPXE.
    Pxe,
    /// "HTTPClient…": UEFI HTTP boot (UEFI 2.5+ §24.7); wants a URL, no TFTP.
    Http,
}

impl BootProtocol {
    pub fn name(self) -> &'static str {
        match self {
            BootProtocol::Pxe => "pxe",
            BootProtocol::Http => "http",
        }
    }

    /// The vendor class a proxy reply carries back (PXE 2.1 §2.2.5; UEFI 2.5+ §24.7.2).
    pub fn vendor_class(self) -> &'static [u8] {
        match self {
            BootProtocol::Pxe => b"PXEClient",
            BootProtocol::Http => b"HTTPClient",
        }
    }
}

/// What an iPXE client told us about itself (user class "iPXE", option 175 features).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpxeFeatures {
    /// Feature 0x13 (iPXE `DHCP_EB_FEATURE_HTTP`).
    pub http: bool,
    /// Feature 0x14 (`DHCP_EB_FEATURE_HTTPS`): the build has TLS.
    pub https: bool,
    /// Feature 0x24 (`DHCP_EB_FEATURE_EFI`): an EFI build.
    pub efi: bool,
}

/// A boot request, described in the protocol's own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub message_type: MessageType,
    pub port: ServerPort,
    pub xid: u32,
    /// Client hardware address (chaddr), when it is an Ethernet MAC (htype 1, hlen 6).
    pub mac: Option<[u8; 6]>,
    /// Option 93, or `None` when the client did not send it.
    pub arch: Option<ClientArch>,
    /// `None` when option 60 is neither "PXEClient…" nor "HTTPClient…": not a boot request.
    pub protocol: Option<BootProtocol>,
    /// Option 94: UNDI major and minor version.
    pub undi: Option<(u8, u8)>,
    /// Option 97 type 0: the machine's UUID/GUID, as sent (RFC 4578 §2.3).
    pub uuid: Option<[u8; 16]>,
    /// Present when the user class (option 77) says "iPXE".
    pub ipxe: Option<IpxeFeatures>,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
}

impl Client {
    /// Whether this is a request a PXE/HTTP boot server answers at all.
    pub fn is_boot_request(&self) -> bool {
        self.protocol.is_some()
    }
}

/// A request that passed the wire checks: a view of its bytes plus what we read from it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub packet: dhcpv4::Packet<&'a [u8]>,
    pub client: Client,
    /// Option 97 as sent, echoed byte for byte in the reply (PXE 2.1 §2.2.5).
    pub machine_id: Option<&'a [u8]>,
    /// Option 43 as sent: a 4011 REQUEST names its boot item there (PXE 2.1 §2.2.5).
    pub vendor_options: Option<&'a [u8]>,
}

/// What the walk over the options keeps: the data of the options the core reads (the first
/// instance of each; boot clients do not split options, RFC 3396).
#[derive(Default)]
struct Seen<'a> {
    message_type: Option<u8>,
    vendor_class: Option<&'a [u8]>,
    arch: Option<&'a [u8]>,
    ndi: Option<&'a [u8]>,
    machine_id: Option<&'a [u8]>,
    user_class: Option<&'a [u8]>,
    ipxe: Option<&'a [u8]>,
    vendor_options: Option<&'a [u8]>,
}

/// Checks the raw bytes and classifies the client, in one pass over the options and without
/// allocating: the checks (size, op, hlen, magic cookie, every option inside the packet, the
/// list ended by END, a message type) are those the earlier dhcproto-based parser made, so
/// the same requests are refused for the same reasons.
pub fn parse(bytes: &[u8], port: ServerPort) -> Result<Request<'_>, Malformed> {
    if bytes.len() < BOOTP_HEADER_LEN + MAGIC_COOKIE.len() {
        return Err(Malformed::Truncated);
    }
    if bytes.len() > MAX_REQUEST_LEN {
        return Err(Malformed::Oversized);
    }
    if bytes[0] != dhcpv4::BOOTREQUEST {
        return Err(Malformed::NotARequest);
    }
    if bytes[2] > 16 {
        return Err(Malformed::BadHardwareLength);
    }
    if bytes[BOOTP_HEADER_LEN..BOOTP_HEADER_LEN + 4] != MAGIC_COOKIE {
        return Err(Malformed::BadMagic);
    }
    let packet = dhcpv4::Packet::new_checked(bytes).map_err(|_| Malformed::Truncated)?;
    let seen = walk_options(&bytes[BOOTP_HEADER_LEN + 4..])?;
    let message_type = seen.message_type.ok_or(Malformed::NoMessageType)?;
    let client = classify(&packet, &seen, MessageType::from(message_type), port);
    Ok(Request {
        packet,
        client,
        machine_id: seen.machine_id,
        vendor_options: seen.vendor_options,
    })
}

/// The option walk (RFC 2131 §4.1, RFC 2132 §2: options are TLV; PAD and END are single
/// octets), bounded by [`MAX_OPTIONS`].
fn walk_options(options: &[u8]) -> Result<Seen<'_>, Malformed> {
    let mut seen = Seen::default();
    let mut at = 0;
    let mut count = 0;
    // RFC 3396: consecutive instances of one option are one option, so the lengths of the
    // options checked below are checked per run.
    let mut run: Option<(u8, usize)> = None;
    loop {
        let Some(&code) = options.get(at) else {
            // Every client we know of ends its options with END; a list that just stops was
            // cut short.
            return Err(Malformed::MissingEnd);
        };
        // A run ends at a different code, and also at PAD (instances join only when they
        // follow each other directly).
        if let Some((previous, len)) = run
            && (previous != code || code == dhcpv4::option::PAD)
        {
            check_option_length(previous, len)?;
            run = None;
        }
        if code == dhcpv4::option::PAD {
            at += 1;
            continue;
        }
        if code == dhcpv4::option::END {
            return Ok(seen);
        }
        count += 1;
        if count > MAX_OPTIONS {
            return Err(Malformed::TooManyOptions);
        }
        let len = usize::from(*options.get(at + 1).ok_or(Malformed::OptionOverrun)?);
        let data = options
            .get(at + 2..at + 2 + len)
            .ok_or(Malformed::OptionOverrun)?;
        fn first<'a>(slot: &mut Option<&'a [u8]>, data: &'a [u8]) {
            if slot.is_none() {
                *slot = Some(data);
            }
        }
        match code {
            dhcpv4::option::MESSAGE_TYPE if len == 1 && seen.message_type.is_none() => {
                seen.message_type = Some(data[0]);
            }
            dhcpv4::option::VENDOR_CLASS => first(&mut seen.vendor_class, data),
            dhcpv4::option::CLIENT_ARCH => first(&mut seen.arch, data),
            dhcpv4::option::CLIENT_NDI => first(&mut seen.ndi, data),
            dhcpv4::option::CLIENT_MACHINE_ID => first(&mut seen.machine_id, data),
            dhcpv4::option::USER_CLASS => first(&mut seen.user_class, data),
            dhcpv4::option::IPXE_ENCAPSULATED => first(&mut seen.ipxe, data),
            dhcpv4::option::VENDOR_SPECIFIC => first(&mut seen.vendor_options, data),
            _ => {}
        }
        run = Some(match run {
            Some((c, total)) => (c, total + len),
            None => (code, len),
        });
        at += 2 + len;
    }
}

/// Options whose lengths their RFCs fix: a request that breaks them is malformed. (They were
/// first checked because dhcproto asserted on them; the checks stay so that what is refused
/// does not change.)
fn check_option_length(code: u8, len: usize) -> Result<(), Malformed> {
    let ok = match code {
        80 => len == 0,        // Rapid Commit (RFC 4039 §4)
        81 => len >= 3,        // Client FQDN: flags, rcode1, rcode2 (RFC 4702 §2)
        94 => len == 3,        // Client NDI: type, major, minor (RFC 4578 §2.2)
        151 => len >= 1,       // BLQ status code (RFC 6926 §6.2.2)
        152..=155 => len == 4, // BLQ times (RFC 6926 §6.2.3–6)
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Malformed::BadOptionLength(code))
    }
}

/// Describes the client. Never fails on odd option contents: an option we cannot read is
/// treated as absent.
fn classify(
    packet: &dhcpv4::Packet<&[u8]>,
    seen: &Seen<'_>,
    message_type: MessageType,
    port: ServerPort,
) -> Client {
    // chaddr is a MAC when htype says Ethernet and hlen covers six octets (RFC 2131 §2).
    let mac = (packet.htype() == dhcpv4::HTYPE_ETHERNET && packet.hlen() >= 6).then(|| {
        let chaddr = packet.chaddr();
        [
            chaddr[0], chaddr[1], chaddr[2], chaddr[3], chaddr[4], chaddr[5],
        ]
    });
    // The vendor class, not the arch code, says PXE or HTTP: "HTTPClient" is what UEFI HTTP
    // boot sends (UEFI 2.5+ §24.7.2), and a client without either is not booting from us.
    let protocol = seen.vendor_class.and_then(|v| {
        if v.starts_with(pxe::PXE_CLIENT) {
            Some(BootProtocol::Pxe)
        } else if v.starts_with(pxe::HTTP_CLIENT) {
            Some(BootProtocol::Http)
        } else {
            None
        }
    });
    let arch_code = match seen.arch {
        // RFC 4578 §2.1: a list of 16-bit types; the first is the client's.
        Some([high, low, ..]) => Some(u16::from_be_bytes([*high, *low])),
        // PXE 2.1 §2.2.5: the vendor class itself carries "Arch:xxxxx" for clients that send
        // no option 93.
        _ => seen.vendor_class.and_then(arch_from_vendor_class),
    };
    let arch = arch_code.map(|code| ClientArch::from_code(code).0);
    let arch = match (arch, mac) {
        (Some(ClientArch::Bios), Some(mac)) if is_raspberry_pi(mac) => {
            Some(ClientArch::RaspberryPi)
        }
        (arch, _) => arch,
    };
    let undi = match seen.ndi {
        // RFC 4578 §2.2: type 1 (UNDI), then major and minor.
        Some(&[1, major, minor]) => Some((major, minor)),
        _ => None,
    };
    let uuid = seen.machine_id.and_then(|v| match v {
        // RFC 4578 §2.3: type 0 followed by a 16-octet GUID.
        [0, guid @ ..] => <[u8; 16]>::try_from(guid).ok(),
        _ => None,
    });
    let ipxe = seen
        .user_class
        .filter(|v| user_class_is_ipxe(v))
        .map(|_| ipxe_features(seen.ipxe));
    Client {
        message_type,
        port,
        xid: packet.xid(),
        mac,
        arch,
        protocol,
        undi,
        uuid,
        ipxe,
        ciaddr: packet.ciaddr(),
        giaddr: packet.giaddr(),
    }
}

/// "PXEClient:Arch:00007:UNDI:003016" → 7 (PXE 2.1 §2.2.5).
fn arch_from_vendor_class(v: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(v).ok()?;
    let rest = text.split(":Arch:").nth(1)?;
    rest.get(..5)?.parse().ok()
}

/// iPXE sends option 77 as the bare string "iPXE" (iPXE `dhcp.c`, `DHCP_USER_CLASS_ID`);
/// RFC 3004 framing (a length octet first) is accepted too.
fn user_class_is_ipxe(v: &[u8]) -> bool {
    v == pxe::IPXE_USER_CLASS || (v.len() == 5 && v[0] == 4 && &v[1..] == pxe::IPXE_USER_CLASS)
}

/// Option 175 holds iPXE's encapsulated options; feature flags are sub-options 0x10–0x7f
/// (iPXE `include/ipxe/features.h`).
fn ipxe_features(option: Option<&[u8]>) -> IpxeFeatures {
    let mut features = IpxeFeatures::default();
    let Some(data) = option else {
        return features;
    };
    let mut at = 0;
    // Bounded by the option's own length (≤ 255 octets).
    while at + 1 < data.len() {
        let (code, len) = (data[at], data[at + 1] as usize);
        match code {
            0x13 => features.http = true,
            0x14 => features.https = true,
            0x24 => features.efi = true,
            _ => {}
        }
        at += 2 + len;
    }
    features
}

/// Raspberry Pi Foundation / Raspberry Pi Trading OUIs (IEEE registry).
fn is_raspberry_pi(mac: [u8; 6]) -> bool {
    const OUIS: [[u8; 3]; 5] = [
        [0xb8, 0x27, 0xeb],
        [0xdc, 0xa6, 0x32],
        [0xe4, 0x5f, 0x01],
        [0xd8, 0x3a, 0xdd],
        [0x2c, 0xcf, 0x67],
    ];
    OUIS.contains(&[mac[0], mac[1], mac[2]])
}

/// `aa:bb:cc:dd:ee:ff`, as operators write MACs in config files and logs.
pub struct MacDisplay<'a>(pub &'a [u8; 6]);

impl fmt::Display for MacDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&MacAddr(*self.0), f)
    }
}

/// The UUID in its canonical text form, as `dmidecode` prints it. Firmware sends option 97 with
/// the first three fields little-endian (EFI GUID order: EDK2 and iPXE both do, see
/// `tests/data/README.md`), so those are swapped back here.
pub struct UuidDisplay<'a>(pub &'a [u8; 16]);

impl fmt::Display for UuidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = guid_to_uuid(self.0);
        for (i, b) in u.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Swaps the first three fields between EFI GUID (little-endian) and RFC 4122 (big-endian)
/// order; its own inverse.
pub fn guid_to_uuid(g: &[u8; 16]) -> [u8; 16] {
    let mut u = *g;
    u[0..4].reverse();
    u[4..6].reverse();
    u[6..8].reverse();
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_is_read_from_the_vendor_class_when_option_93_is_missing() {
        assert_eq!(
            arch_from_vendor_class(b"PXEClient:Arch:00007:UNDI:003016"),
            Some(7)
        );
        assert_eq!(arch_from_vendor_class(b"PXEClient"), None);
        assert_eq!(arch_from_vendor_class(b"PXEClient:Arch:0"), None);
    }

    #[test]
    fn http_boot_arch_codes_map_to_their_pxe_twins() {
        assert_eq!(
            ClientArch::from_code(16),
            (ClientArch::UefiX64, BootProtocol::Http)
        );
        assert_eq!(
            ClientArch::from_code(19),
            (ClientArch::UefiArm64, BootProtocol::Http)
        );
        assert_eq!(
            ClientArch::from_code(9),
            (ClientArch::UefiX64, BootProtocol::Pxe)
        );
        assert_eq!(
            ClientArch::from_code(2),
            (ClientArch::Other(2), BootProtocol::Pxe)
        );
    }

    #[test]
    fn arch_names_round_trip() {
        for name in ClientArch::NAMES {
            assert_eq!(
                ClientArch::from_name(name).map(ClientArch::name),
                Some(*name)
            );
        }
    }

    #[test]
    fn uuid_prints_in_canonical_form() {
        // As EDK2 sends 12345678-9abc-def0-0123-456789abcdef in option 97.
        let uuid = [
            0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        assert_eq!(
            UuidDisplay(&uuid).to_string(),
            "12345678-9abc-def0-0123-456789abcdef"
        );
    }
}
