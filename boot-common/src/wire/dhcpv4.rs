//! BOOTP/DHCPv4 messages (RFC 2131 §2, RFC 951) and their options (RFC 2132).
//!
//! ```text
//! 0    op(1) htype(1) hlen(1) hops(1)
//! 4    xid(4)
//! 8    secs(2) flags(2)
//! 12   ciaddr(4)  16 yiaddr(4)  20 siaddr(4)  24 giaddr(4)
//! 28   chaddr(16)
//! 44   sname(64)
//! 108  file(128)
//! 236  magic cookie 99.130.83.99 (RFC 2131 §3)
//! 240  options: code(1) length(1) data, PAD (0) and END (255) alone (RFC 2132 §2)
//! ```

use core::net::Ipv4Addr;

use super::{Error, MacAddr, be16, ipv4_at};

/// BOOTP `op` (RFC 951): a client's message and a server's.
pub const BOOTREQUEST: u8 = 1;
pub const BOOTREPLY: u8 = 2;
/// BOOTP `htype` of Ethernet (the ARP hardware type, RFC 1700), whose `hlen` is 6.
pub const HTYPE_ETHERNET: u8 = 1;
/// The broadcast bit of `flags` (RFC 2131 §2, figure 2): the client cannot receive unicast
/// before it has an address.
pub const FLAG_BROADCAST: u16 = 0x8000;
/// The first four octets of the options field (RFC 2131 §3, RFC 1497).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// The fixed part: everything before the magic cookie.
pub const FIXED_LEN: usize = 236;
/// The fixed part and the magic cookie: where the options start.
pub const OPTIONS_OFFSET: usize = 240;
/// The shortest message [`Writer`] produces: dnsmasq pads to `MIN_PACKETSZ` (300), the size of
/// a BOOTP message with its 64-byte vendor area (RFC 951), which old relay agents and clients
/// expect at least (RFC 1542 §2.1).
pub const MIN_LEN: usize = 300;
/// Options an [`Options`] iterator yields before it gives up with [`Error::TooManyOptions`].
/// PXE ROMs send about 8 and iPXE about 15; 64 leaves room for any boot client, and the
/// buffer's length bounds the PADs in between.
pub const MAX_OPTIONS: usize = 64;

/// Option codes (RFC 2132 unless said otherwise).
pub mod option {
    /// One octet of filling, no length (§3.1).
    pub const PAD: u8 = 0;
    /// The end of the options, no length (§3.2).
    pub const END: u8 = 255;
    /// Vendor-specific information (§8.4); for PXE clients the PXE vendor options of
    /// [`super::super::pxe`].
    pub const VENDOR_SPECIFIC: u8 = 43;
    /// Requested IP address (§9.1).
    pub const REQUESTED_IP: u8 = 50;
    /// DHCP message type, one octet: see [`super::message_type`] (§9.6).
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier, an IPv4 address (§9.7).
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list (§9.8).
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    /// Maximum DHCP message size, 16 bits (§9.10).
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    /// Vendor class identifier: "PXEClient:Arch:…", "HTTPClient:Arch:…" (§9.13).
    pub const VENDOR_CLASS: u8 = 60;
    /// Client identifier (§9.14).
    pub const CLIENT_ID: u8 = 61;
    /// User class: "iPXE" from iPXE (RFC 3004).
    pub const USER_CLASS: u8 = 77;
    /// Client system architecture, a list of 16-bit types (RFC 4578 §2.1).
    pub const CLIENT_ARCH: u8 = 93;
    /// Client network interface identifier: type 1, UNDI major, minor (RFC 4578 §2.2).
    pub const CLIENT_NDI: u8 = 94;
    /// Client machine identifier: type 0 and a 16-byte GUID (RFC 4578 §2.3).
    pub const CLIENT_MACHINE_ID: u8 = 97;
    /// iPXE's encapsulated options (iPXE `include/ipxe/dhcp.h`, `DHCP_EB_ENCAP`).
    pub const IPXE_ENCAPSULATED: u8 = 175;
}

/// Values of option 53 (RFC 2132 §9.6).
pub mod message_type {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const DECLINE: u8 = 4;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
    pub const RELEASE: u8 = 7;
    pub const INFORM: u8 = 8;
}

mod field {
    use core::ops::Range;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: usize = 4;
    pub const SECS: usize = 8;
    pub const FLAGS: usize = 10;
    pub const CIADDR: usize = 12;
    pub const YIADDR: usize = 16;
    pub const SIADDR: usize = 20;
    pub const GIADDR: usize = 24;
    pub const CHADDR: Range<usize> = 28..44;
    pub const SNAME: Range<usize> = 44..108;
    pub const FILE: Range<usize> = 108..236;
    pub const MAGIC_COOKIE: Range<usize> = 236..240;
}

/// A view of a DHCP message: the fixed BOOTP part and the magic cookie are inside the buffer.
/// The options are checked as they are read ([`Packet::options`]).
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A BOOTP message without the cookie (plain RFC 951 BOOTP) is [`Error::BadMagicCookie`]:
    /// its vendor area holds no DHCP options to read.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let bytes = buffer.as_ref();
        if bytes.len() < OPTIONS_OFFSET {
            return Err(Error::Truncated);
        }
        if bytes[field::MAGIC_COOKIE] != MAGIC_COOKIE {
            return Err(Error::BadMagicCookie);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// [`BOOTREQUEST`] or [`BOOTREPLY`].
    pub fn op(&self) -> u8 {
        self.bytes()[field::OP]
    }

    pub fn htype(&self) -> u8 {
        self.bytes()[field::HTYPE]
    }

    pub fn hlen(&self) -> u8 {
        self.bytes()[field::HLEN]
    }

    pub fn hops(&self) -> u8 {
        self.bytes()[field::HOPS]
    }

    /// Transaction id, chosen by the client and echoed by servers.
    pub fn xid(&self) -> u32 {
        let b = self.bytes();
        u32::from_be_bytes([
            b[field::XID],
            b[field::XID + 1],
            b[field::XID + 2],
            b[field::XID + 3],
        ])
    }

    pub fn secs(&self) -> u16 {
        be16(self.bytes(), field::SECS)
    }

    pub fn flags(&self) -> u16 {
        be16(self.bytes(), field::FLAGS)
    }

    /// Whether the client asked for broadcast replies ([`FLAG_BROADCAST`]).
    pub fn broadcast(&self) -> bool {
        self.flags() & FLAG_BROADCAST != 0
    }

    /// The client's address, when it has one it can answer ARP for.
    pub fn ciaddr(&self) -> Ipv4Addr {
        ipv4_at(self.bytes(), field::CIADDR)
    }

    /// The address a server offers ("your" address).
    pub fn yiaddr(&self) -> Ipv4Addr {
        ipv4_at(self.bytes(), field::YIADDR)
    }

    /// The next server in the boot process (the TFTP server).
    pub fn siaddr(&self) -> Ipv4Addr {
        ipv4_at(self.bytes(), field::SIADDR)
    }

    /// The relay agent's address; not 0.0.0.0 when the message came through one.
    pub fn giaddr(&self) -> Ipv4Addr {
        ipv4_at(self.bytes(), field::GIADDR)
    }

    /// The client hardware address field, all 16 bytes.
    pub fn chaddr(&self) -> [u8; 16] {
        let mut chaddr = [0; 16];
        chaddr.copy_from_slice(&self.bytes()[field::CHADDR]);
        chaddr
    }

    /// The client's MAC: the first six bytes of `chaddr`, when `htype` and `hlen` say it is
    /// an Ethernet address.
    pub fn client_mac(&self) -> Option<MacAddr> {
        if self.htype() != HTYPE_ETHERNET || self.hlen() != 6 {
            return None;
        }
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.bytes()[field::CHADDR.start..field::CHADDR.start + 6]);
        Some(MacAddr(mac))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The server host name field, all 64 bytes; [`until_nul`] gives the text.
    pub fn sname(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::SNAME]
    }

    /// The boot file name field, all 128 bytes; [`until_nul`] gives the text.
    pub fn file(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::FILE]
    }

    /// The options after the magic cookie. Option overload (52, RFC 2132 §9.3), which moves
    /// options into `sname` and `file`, is not followed: boot firmware does not send it.
    pub fn options(&self) -> Options<'a> {
        Options::new(&self.buffer.as_ref()[OPTIONS_OFFSET..])
    }

    /// The data of the first option `code`.
    pub fn find(&self, code: u8) -> Result<Option<&'a [u8]>, Error> {
        self.options().find(code)
    }

    /// Option 53, when it is present and one octet long.
    pub fn message_type(&self) -> Result<Option<u8>, Error> {
        Ok(match self.find(option::MESSAGE_TYPE)? {
            Some(&[kind]) => Some(kind),
            _ => None,
        })
    }
}

/// The bytes of a NUL-terminated field (`sname`, `file`) before the first NUL.
pub fn until_nul(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// The client's first architecture type in option 93's data (RFC 4578 §2.1: a list of 16-bit
/// types, in order of preference; firmware sends one).
pub fn client_arch(data: &[u8]) -> Option<u16> {
    match data {
        [high, low, ..] => Some(u16::from_be_bytes([*high, *low])),
        _ => None,
    }
}

/// The options of a DHCP message, or the sub-options of an encapsulating option (43, 175),
/// in order: `(code, data)`. PADs are skipped; END or the end of the bytes ends the list
/// (RFC 2132 §3.2 marks the end with END, but a list that simply stops loses nothing). An option
/// whose length runs past the end is an [`Error::OptionOverrun`] item, and more than
/// [`MAX_OPTIONS`] options an [`Error::TooManyOptions`] item; nothing follows an error.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
    yielded: usize,
}

impl<'a> Options<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            yielded: 0,
        }
    }

    /// The data of the first option `code`, or the error met before it. A code that appears
    /// twice is not joined (RFC 3396 long options): boot clients do not split options.
    pub fn find(self, code: u8) -> Result<Option<&'a [u8]>, Error> {
        for item in self {
            let (found, data) = item?;
            if found == code {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    fn stop(&mut self, error: Error) -> Option<Result<(u8, &'a [u8]), Error>> {
        self.rest = &[];
        Some(Err(error))
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u8, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        // Each turn consumes at least one byte, so the buffer's length bounds the loop.
        loop {
            let (&code, after_code) = self.rest.split_first()?;
            match code {
                option::PAD => self.rest = after_code,
                option::END => {
                    self.rest = &[];
                    return None;
                }
                _ => {
                    if self.yielded == MAX_OPTIONS {
                        return self.stop(Error::TooManyOptions);
                    }
                    let Some((&len, after_len)) = after_code.split_first() else {
                        return self.stop(Error::OptionOverrun);
                    };
                    let Some((data, rest)) = after_len.split_at_checked(usize::from(len)) else {
                        return self.stop(Error::OptionOverrun);
                    };
                    self.rest = rest;
                    self.yielded += 1;
                    return Some(Ok((code, data)));
                }
            }
        }
    }
}

impl core::iter::FusedIterator for Options<'_> {}

/// The fixed part of a message to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    /// Server host name, at most 63 bytes (the field ends with a NUL).
    pub sname: &'a [u8],
    /// Boot file name, at most 127 bytes (the field ends with a NUL).
    pub file: &'a [u8],
}

impl<'a> Header<'a> {
    /// The fixed part of a received message, `sname` and `file` up to their first NUL.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Self {
        Self {
            op: packet.op(),
            htype: packet.htype(),
            hlen: packet.hlen(),
            hops: packet.hops(),
            xid: packet.xid(),
            secs: packet.secs(),
            flags: packet.flags(),
            ciaddr: packet.ciaddr(),
            yiaddr: packet.yiaddr(),
            siaddr: packet.siaddr(),
            giaddr: packet.giaddr(),
            chaddr: packet.chaddr(),
            sname: until_nul(packet.sname()),
            file: until_nul(packet.file()),
        }
    }
}

/// Writes a DHCP message into a caller's buffer, without allocating: the fixed part and the
/// cookie first ([`Writer::new`]), then options one by one ([`Writer::option`]), then END and
/// zero padding up to [`MIN_LEN`] ([`Writer::finish`]).
#[derive(Debug)]
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    /// Writes `header` and the magic cookie. `buf` must hold at least [`MIN_LEN`] bytes, so
    /// that [`Writer::finish`] cannot fail.
    pub fn new(buf: &'b mut [u8], header: &Header<'_>) -> Result<Self, Error> {
        if buf.len() < MIN_LEN {
            return Err(Error::BufferTooSmall);
        }
        // Room for the NUL that ends each field (RFC 2131 §2: "null terminated string").
        if header.sname.len() >= field::SNAME.len() || header.file.len() >= field::FILE.len() {
            return Err(Error::FieldTooLong);
        }
        let fixed = &mut buf[..OPTIONS_OFFSET];
        fixed.fill(0);
        fixed[field::OP] = header.op;
        fixed[field::HTYPE] = header.htype;
        fixed[field::HLEN] = header.hlen;
        fixed[field::HOPS] = header.hops;
        fixed[field::XID..field::XID + 4].copy_from_slice(&header.xid.to_be_bytes());
        fixed[field::SECS..field::SECS + 2].copy_from_slice(&header.secs.to_be_bytes());
        fixed[field::FLAGS..field::FLAGS + 2].copy_from_slice(&header.flags.to_be_bytes());
        for (at, address) in [
            (field::CIADDR, header.ciaddr),
            (field::YIADDR, header.yiaddr),
            (field::SIADDR, header.siaddr),
            (field::GIADDR, header.giaddr),
        ] {
            fixed[at..at + 4].copy_from_slice(&address.octets());
        }
        fixed[field::CHADDR].copy_from_slice(&header.chaddr);
        let sname = field::SNAME.start;
        fixed[sname..sname + header.sname.len()].copy_from_slice(header.sname);
        let file = field::FILE.start;
        fixed[file..file + header.file.len()].copy_from_slice(header.file);
        fixed[field::MAGIC_COOKIE].copy_from_slice(&MAGIC_COOKIE);
        Ok(Self {
            buf,
            len: OPTIONS_OFFSET,
        })
    }

    /// Appends option `code` with `data`.
    pub fn option(&mut self, code: u8, data: &[u8]) -> Result<(), Error> {
        self.option_parts(code, &[data])
    }

    /// Appends option `code` whose data is `parts` back to back (a type octet and a GUID,
    /// sub-options), so the caller need not join them first.
    pub fn option_parts(&mut self, code: u8, parts: &[&[u8]]) -> Result<(), Error> {
        if code == option::PAD || code == option::END {
            return Err(Error::BadOptionCode);
        }
        let data_len: usize = parts.iter().map(|part| part.len()).sum();
        let len = u8::try_from(data_len).map_err(|_| Error::OptionTooLong)?;
        // Code, length, data, and the END that must still fit after it.
        let end = self.len + 2 + data_len;
        if end + 1 > self.buf.len() {
            return Err(Error::BufferTooSmall);
        }
        self.buf[self.len] = code;
        self.buf[self.len + 1] = len;
        let mut at = self.len + 2;
        for part in parts {
            self.buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        self.len = end;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: the fixed part is written on creation. For clippy's symmetry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes END and zeroes up to [`MIN_LEN`] (zero is PAD), and returns the message's length.
    pub fn finish(self) -> usize {
        // `new` and `option_parts` leave room for END.
        self.buf[self.len] = option::END;
        let len = (self.len + 1).max(MIN_LEN);
        self.buf[self.len + 1..len].fill(option::PAD);
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(options: &[u8]) -> [u8; 300] {
        let mut bytes = [0u8; 300];
        bytes[0] = BOOTREQUEST;
        bytes[1] = HTYPE_ETHERNET;
        bytes[2] = 6;
        bytes[28..34].copy_from_slice(&[0x52, 0x54, 0, 0x18, 0, 1]);
        bytes[236..240].copy_from_slice(&MAGIC_COOKIE);
        bytes[240..240 + options.len()].copy_from_slice(options);
        bytes
    }

    #[test]
    fn options_skip_pads_and_stop_at_end() {
        let bytes = message(&[0, 53, 1, 1, 0, 0, 60, 3, b'a', b'b', b'c', 255, 53, 1, 3]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        let mut options = packet.options();
        assert_eq!(options.next(), Some(Ok((53, &[1][..]))));
        assert_eq!(options.next(), Some(Ok((60, &b"abc"[..]))));
        assert_eq!(options.next(), None);
        assert_eq!(packet.message_type(), Ok(Some(message_type::DISCOVER)));
        assert_eq!(
            packet.client_mac(),
            Some(MacAddr([0x52, 0x54, 0, 0x18, 0, 1]))
        );
    }

    #[test]
    fn an_option_running_past_the_end_is_an_error_item_and_the_last() {
        for tail in [&[60, 4, b'a', b'b', b'c'][..], &[60][..]] {
            let mut bytes = [0u8; 245];
            bytes[..240].copy_from_slice(&message(&[])[..240]);
            bytes[240..240 + tail.len()].copy_from_slice(tail);
            let bytes = &bytes[..240 + tail.len()];
            let mut options = Packet::new_checked(bytes).unwrap().options();
            assert_eq!(options.next(), Some(Err(Error::OptionOverrun)));
            assert_eq!(options.next(), None);
        }
    }

    #[test]
    fn more_than_max_options_is_an_error_item() {
        let mut bytes = [0u8; OPTIONS_OFFSET + 2 * (MAX_OPTIONS + 1)];
        for pair in bytes[OPTIONS_OFFSET..].chunks_exact_mut(2) {
            pair.copy_from_slice(&[1, 0]);
        }
        let options = Options::new(&bytes[OPTIONS_OFFSET..]);
        let items: [_; MAX_OPTIONS + 2] = core::array::from_fn({
            let mut options = options.clone();
            move |_| options.next()
        });
        assert!(
            items[..MAX_OPTIONS]
                .iter()
                .all(|i| i == &Some(Ok((1, &[][..]))))
        );
        assert_eq!(items[MAX_OPTIONS], Some(Err(Error::TooManyOptions)));
        assert_eq!(items[MAX_OPTIONS + 1], None);
        assert_eq!(options.find(2), Err(Error::TooManyOptions));
    }

    #[test]
    fn a_message_without_the_cookie_is_refused() {
        let mut bytes = message(&[255]);
        bytes[239] = 0;
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(Error::BadMagicCookie)
        );
        assert_eq!(
            Packet::new_checked(&bytes[..239]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn the_writer_checks_room_lengths_and_codes() {
        let header = Header {
            op: BOOTREPLY,
            htype: HTYPE_ETHERNET,
            hlen: 6,
            hops: 0,
            xid: 0x1234_5678,
            secs: 0,
            flags: FLAG_BROADCAST,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::new(198, 18, 0, 1),
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [0x52, 0x54, 0, 0x18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sname: b"",
            file: b"undionly.kpxe",
        };
        let mut small = [0u8; MIN_LEN - 1];
        assert_eq!(
            Writer::new(&mut small, &header).err(),
            Some(Error::BufferTooSmall)
        );
        let long = [b'x'; 128];
        let mut buf = [0u8; MIN_LEN];
        let too_long = Header {
            file: &long,
            ..header
        };
        assert_eq!(
            Writer::new(&mut buf, &too_long).err(),
            Some(Error::FieldTooLong)
        );

        let mut writer = Writer::new(&mut buf, &header).unwrap();
        assert_eq!(writer.option(option::END, &[]), Err(Error::BadOptionCode));
        assert_eq!(writer.option(43, &[0; 256]), Err(Error::OptionTooLong));
        writer
            .option(option::MESSAGE_TYPE, &[message_type::OFFER])
            .unwrap();
        // 243 written; 300 - 243 - 1 (END) leaves 56 bytes: 54 of data.
        assert_eq!(writer.option(43, &[0; 55]), Err(Error::BufferTooSmall));
        writer.option_parts(43, &[&[6, 1], &[8; 52]]).unwrap();
        assert_eq!(writer.len(), 299);
        assert_eq!(writer.finish(), 300);

        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Header::parse(&packet), header);
        assert_eq!(packet.message_type(), Ok(Some(message_type::OFFER)));
        assert_eq!(packet.find(43).unwrap().map(|d| d.len()), Some(54));
        assert_eq!(buf[299], option::END);
    }

    #[test]
    fn a_short_message_is_padded_to_the_minimum_with_zeroes() {
        let mut buf = [0xeeu8; 400];
        let request = message(&[255]);
        let header = Header::parse(&Packet::new_checked(&request[..]).unwrap());
        let mut writer = Writer::new(&mut buf, &header).unwrap();
        writer
            .option(option::MESSAGE_TYPE, &[message_type::ACK])
            .unwrap();
        assert_eq!(writer.finish(), MIN_LEN);
        assert_eq!(buf[243], option::END);
        assert!(buf[244..MIN_LEN].iter().all(|&b| b == 0));
        assert_eq!(buf[MIN_LEN], 0xee, "nothing written past the message");
    }
}
