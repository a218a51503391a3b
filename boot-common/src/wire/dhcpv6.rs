//! DHCPv6 messages (RFC 8415 §8, §9) and their options (RFC 8415 §21), with the boot options
//! of RFC 5970 (boot file URL, client architecture) and RFC 6939 (the client's link-layer
//! address in relays).
//!
//! ```text
//! client/server message (§8):  msg-type(1) transaction-id(3) options
//! relay message (§9):          msg-type(1) hop-count(1) link-address(16) peer-address(16) options
//! option (§21.1):              option-code(2) option-len(2) option-data
//! ```
//!
//! Unlike DHCPv4 there is no PAD, no END and no fixed part: the options run to the end of the
//! UDP data, and an option whose length runs past it makes the message malformed.

use core::net::Ipv6Addr;

use super::{Error, MacAddr, be16};

/// UDP port servers and relay agents listen on (RFC 8415 §7.2).
pub const SERVER_PORT: u16 = 547;
/// UDP port clients listen on (RFC 8415 §7.2).
pub const CLIENT_PORT: u16 = 546;
/// All_DHCP_Relay_Agents_and_Servers, ff02::1:2 (RFC 8415 §7.1): where clients send.
pub const ALL_RELAY_AGENTS_AND_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// A client or server message's header: type and transaction id.
pub const HEADER_LEN: usize = 4;
/// A relay message's header: type, hop count, link and peer addresses.
pub const RELAY_HEADER_LEN: usize = 34;
/// An option's code and length.
pub const OPTION_HEADER_LEN: usize = 4;
/// Options an [`Options`] iterator yields before it gives up with [`Error::TooManyOptions`].
/// EDK2 sends about 8 and iPXE 6; a relay adds a few. Each option takes at least four bytes,
/// so a full Ethernet frame could carry about 360; 64 leaves room for any real client.
pub const MAX_OPTIONS: usize = 64;
/// IANA enterprise number of Intel, under which PXE and UEFI HTTP boot clients send their
/// vendor class (EDK2 `PXEBC_DHCP6_ENTERPRISE_NUM`, `HTTP_BOOT_DHCP6_ENTERPRISE_NUM`).
pub const ENTERPRISE_INTEL: u32 = 343;

/// Message types (RFC 8415 §7.3).
pub mod message_type {
    pub const SOLICIT: u8 = 1;
    pub const ADVERTISE: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const CONFIRM: u8 = 4;
    pub const RENEW: u8 = 5;
    pub const REBIND: u8 = 6;
    pub const REPLY: u8 = 7;
    pub const RELEASE: u8 = 8;
    pub const DECLINE: u8 = 9;
    pub const RECONFIGURE: u8 = 10;
    pub const INFORMATION_REQUEST: u8 = 11;
    pub const RELAY_FORW: u8 = 12;
    pub const RELAY_REPL: u8 = 13;

    /// Whether messages of this type have the relay header (RFC 8415 §9).
    pub const fn is_relay(kind: u8) -> bool {
        kind == RELAY_FORW || kind == RELAY_REPL
    }
}

/// Option codes (RFC 8415 §21 unless said otherwise).
pub mod option {
    pub const CLIENT_ID: u16 = 1;
    pub const SERVER_ID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IA_TA: u16 = 4;
    pub const IAADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const ELAPSED_TIME: u16 = 8;
    pub const RELAY_MSG: u16 = 9;
    pub const AUTH: u16 = 11;
    pub const UNICAST: u16 = 12;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    /// User class: a list of length-prefixed opaque strings (§21.15); iPXE sends "iPXE".
    pub const USER_CLASS: u16 = 15;
    /// Vendor class: an enterprise number, then length-prefixed strings (§21.16).
    pub const VENDOR_CLASS: u16 = 16;
    pub const VENDOR_OPTS: u16 = 17;
    pub const INTERFACE_ID: u16 = 18;
    pub const RECONF_MSG: u16 = 19;
    /// DNS recursive name servers (RFC 3646 §3).
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
    pub const IA_PD: u16 = 25;
    /// Boot file URL (RFC 5970 §3.1).
    pub const BOOTFILE_URL: u16 = 59;
    /// Boot file parameters (RFC 5970 §3.2).
    pub const BOOTFILE_PARAM: u16 = 60;
    /// Client system architecture types, 16 bits each (RFC 5970 §3.3).
    pub const CLIENT_ARCH_TYPE: u16 = 61;
    /// Client network interface identifier: type, major, minor (RFC 5970 §3.4).
    pub const NII: u16 = 62;
    /// Client link-layer address, added by a relay agent (RFC 6939 §4).
    pub const CLIENT_LINKLAYER_ADDR: u16 = 79;
}

/// DUID types (RFC 8415 §11.1).
pub mod duid_type {
    /// Link-layer address plus time: type, hardware type, time, address.
    pub const LLT: u16 = 1;
    /// Vendor-assigned, based on an enterprise number.
    pub const EN: u16 = 2;
    /// Link-layer address: type, hardware type, address.
    pub const LL: u16 = 3;
    /// A UUID (RFC 6355).
    pub const UUID: u16 = 4;
}

/// The hardware type of Ethernet (IANA "Hardware Types", as ARP; RFC 8415 §11.2).
pub const HARDWARE_ETHERNET: u16 = 1;

/// Status codes (RFC 8415 §21.13).
pub mod status {
    pub const SUCCESS: u16 = 0;
    pub const UNSPEC_FAIL: u16 = 1;
    pub const NO_ADDRS_AVAIL: u16 = 2;
    pub const NO_BINDING: u16 = 3;
    pub const NOT_ON_LINK: u16 = 4;
    pub const USE_MULTICAST: u16 = 5;
}

/// A view of a client or server message (RFC 8415 §8): the header is inside the buffer, and the
/// options are checked as they are read ([`Packet::options`]). A relay message reads wrongly
/// through this view: see [`RelayPacket`] and [`message_type::is_relay`].
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The 24-bit transaction id, chosen by the client and echoed by servers.
    pub fn transaction_id(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[1], b[2], b[3]])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The options after the header.
    pub fn options(&self) -> Options<'a> {
        Options::new(&self.buffer.as_ref()[HEADER_LEN..])
    }

    /// The data of the first option `code`.
    pub fn find(&self, code: u16) -> Result<Option<&'a [u8]>, Error> {
        self.options().find(code)
    }
}

/// A view of a relay message (RFC 8415 §9): Relay-Forward from a relay agent, Relay-Reply
/// back to it. The client's message is inside, in a Relay Message option.
#[derive(Debug, Clone, Copy)]
pub struct RelayPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RelayPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < RELAY_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Relay agents the message passed, less one (§9.1).
    pub fn hop_count(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// An address on the client's link (or unspecified), which the server uses to pick its
    /// configuration for that link (§9.1).
    pub fn link_address(&self) -> Ipv6Addr {
        ipv6_at(self.buffer.as_ref(), 2)
    }

    /// The client's (or the inner relay's) address: where the relay sends the reply (§9.1).
    pub fn peer_address(&self) -> Ipv6Addr {
        ipv6_at(self.buffer.as_ref(), 18)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> RelayPacket<&'a T> {
    pub fn options(&self) -> Options<'a> {
        Options::new(&self.buffer.as_ref()[RELAY_HEADER_LEN..])
    }

    pub fn find(&self, code: u16) -> Result<Option<&'a [u8]>, Error> {
        self.options().find(code)
    }
}

/// The options of a message, or of an option that holds options (IA_NA, a relayed message's
/// own), in order: `(code, data)`. An option whose length runs past the end is an
/// [`Error::OptionOverrun`] item, fewer than four bytes left over too, and more than
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

    /// The data of the first option `code`, or the error met before it.
    pub fn find(self, code: u16) -> Result<Option<&'a [u8]>, Error> {
        for item in self {
            let (found, data) = item?;
            if found == code {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    fn stop(&mut self, error: Error) -> Option<Result<(u16, &'a [u8]), Error>> {
        self.rest = &[];
        Some(Err(error))
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u16, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        if self.yielded == MAX_OPTIONS {
            return self.stop(Error::TooManyOptions);
        }
        let Some((header, after)) = self.rest.split_at_checked(OPTION_HEADER_LEN) else {
            return self.stop(Error::OptionOverrun);
        };
        let (code, len) = (be16(header, 0), usize::from(be16(header, 2)));
        let Some((data, rest)) = after.split_at_checked(len) else {
            return self.stop(Error::OptionOverrun);
        };
        self.rest = rest;
        self.yielded += 1;
        Some(Ok((code, data)))
    }
}

impl core::iter::FusedIterator for Options<'_> {}

/// The MAC in a DUID-LL or DUID-LLT of Ethernet (RFC 8415 §11.4, §11.2): iPXE sends a DUID-LL
/// (`dhcpv6.c`), some firmware DUID-LLT. Other DUIDs (EDK2's default is DUID-UUID) name no MAC.
pub fn duid_mac(duid: &[u8]) -> Option<MacAddr> {
    let address = match duid {
        [0, 3, 0, 1, address @ ..] => address,
        [0, 1, 0, 1, _, _, _, _, address @ ..] => address,
        _ => return None,
    };
    <[u8; 6]>::try_from(address).ok().map(MacAddr)
}

/// A DUID-LL of Ethernet for `mac` (RFC 8415 §11.4): how a server without stable storage
/// names itself, as dnsmasq and iPXE do.
pub fn duid_ll(mac: MacAddr) -> [u8; 10] {
    let [a, b, c, d, e, f] = mac.0;
    [0, 3, 0, 1, a, b, c, d, e, f]
}

/// The client's link-layer address from a relay's option 79 (RFC 6939 §4): a hardware type of
/// Ethernet and six octets.
pub fn client_linklayer_mac(data: &[u8]) -> Option<MacAddr> {
    match data {
        [0, 1, address @ ..] => <[u8; 6]>::try_from(address).ok().map(MacAddr),
        _ => None,
    }
}

/// The first architecture type of option 61 (RFC 5970 §3.3: a list of 16-bit types; firmware
/// sends one).
pub fn client_arch(data: &[u8]) -> Option<u16> {
    match data {
        [high, low, ..] => Some(u16::from_be_bytes([*high, *low])),
        _ => None,
    }
}

/// Option 16: the enterprise number and the class strings after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendorClass<'a> {
    pub enterprise: u32,
    data: &'a [u8],
}

impl<'a> VendorClass<'a> {
    /// `None` for data shorter than the enterprise number.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (enterprise, data) = data.split_first_chunk::<4>()?;
        Some(Self {
            enterprise: u32::from_be_bytes(*enterprise),
            data,
        })
    }

    /// The vendor-class-data items (each a 16-bit length and that many octets).
    pub fn classes(&self) -> Strings<'a> {
        Strings::new(self.data)
    }
}

/// Length-prefixed strings, as option 15 holds them and option 16 after its enterprise number
/// (RFC 8415 §21.15, §21.16). A length running past the end ends the list; the bytes bound
/// the walk (each item takes at least two).
#[derive(Debug, Clone)]
pub struct Strings<'a> {
    rest: &'a [u8],
}

impl<'a> Strings<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl<'a> Iterator for Strings<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, after) = self.rest.split_first_chunk::<2>()?;
        let Some((item, rest)) = after.split_at_checked(usize::from(u16::from_be_bytes(*len)))
        else {
            self.rest = &[];
            return None;
        };
        self.rest = rest;
        Some(item)
    }
}

impl core::iter::FusedIterator for Strings<'_> {}

/// Writes a DHCPv6 message into a caller's buffer without allocating: the header first
/// ([`Writer::new`] or [`Writer::relay`]), then options one by one.
#[derive(Debug)]
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    /// A client or server message of `msg_type` with the low 24 bits of `transaction_id`.
    pub fn new(buf: &'b mut [u8], msg_type: u8, transaction_id: u32) -> Result<Self, Error> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        header.copy_from_slice(&transaction_id.to_be_bytes());
        header[0] = msg_type;
        Ok(Self {
            buf,
            len: HEADER_LEN,
        })
    }

    /// A relay message (Relay-Forward or Relay-Reply).
    pub fn relay(
        buf: &'b mut [u8],
        msg_type: u8,
        hop_count: u8,
        link_address: Ipv6Addr,
        peer_address: Ipv6Addr,
    ) -> Result<Self, Error> {
        let header = buf
            .get_mut(..RELAY_HEADER_LEN)
            .ok_or(Error::BufferTooSmall)?;
        header[0] = msg_type;
        header[1] = hop_count;
        header[2..18].copy_from_slice(&link_address.octets());
        header[18..34].copy_from_slice(&peer_address.octets());
        Ok(Self {
            buf,
            len: RELAY_HEADER_LEN,
        })
    }

    /// Appends option `code` with `data`.
    pub fn option(&mut self, code: u16, data: &[u8]) -> Result<(), Error> {
        self.option_parts(code, &[data])
    }

    /// Appends option `code` whose data is `parts` back to back (an enterprise number and a
    /// class, a relayed message), so the caller need not join them first.
    pub fn option_parts(&mut self, code: u16, parts: &[&[u8]]) -> Result<(), Error> {
        let data_len: usize = parts.iter().map(|part| part.len()).sum();
        let len = u16::try_from(data_len).map_err(|_| Error::OptionTooLong)?;
        let end = self.len + OPTION_HEADER_LEN + data_len;
        let out = self
            .buf
            .get_mut(self.len..end)
            .ok_or(Error::BufferTooSmall)?;
        out[..2].copy_from_slice(&code.to_be_bytes());
        out[2..4].copy_from_slice(&len.to_be_bytes());
        let mut at = OPTION_HEADER_LEN;
        for part in parts {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        self.len = end;
        Ok(())
    }

    /// Bytes written so far: the message's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: the header is written on creation. For clippy's symmetry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The message's length.
    pub fn finish(self) -> usize {
        self.len
    }
}

/// The sixteen octets at `at`. Callers checked the buffer's length in `new_checked`.
fn ipv6_at(bytes: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0; 16];
    octets.copy_from_slice(&bytes[at..at + 16]);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x18, 0x01, 0x01]);

    #[test]
    fn a_written_message_reads_back() {
        let mut buf = [0u8; 64];
        let mut writer = Writer::new(&mut buf, message_type::ADVERTISE, 0xab_cdef).unwrap();
        writer.option(option::CLIENT_ID, &duid_ll(MAC)).unwrap();
        writer
            .option_parts(
                option::VENDOR_CLASS,
                &[&ENTERPRISE_INTEL.to_be_bytes(), &[0, 9], b"PXEClient"],
            )
            .unwrap();
        let len = writer.finish();
        assert_eq!(len, 4 + 14 + 19);
        let packet = Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!(packet.msg_type(), message_type::ADVERTISE);
        assert_eq!(packet.transaction_id(), 0xab_cdef);
        let client = packet.find(option::CLIENT_ID).unwrap().unwrap();
        assert_eq!(duid_mac(client), Some(MAC));
        let vendor =
            VendorClass::parse(packet.find(option::VENDOR_CLASS).unwrap().unwrap()).unwrap();
        assert_eq!(vendor.enterprise, ENTERPRISE_INTEL);
        assert!(vendor.classes().eq([&b"PXEClient"[..]]));
        assert_eq!(packet.find(option::SERVER_ID), Ok(None));
    }

    #[test]
    fn the_writer_checks_room_and_lengths() {
        let mut buf = [0u8; 10];
        assert_eq!(
            Writer::new(&mut buf[..3], message_type::REPLY, 1).err(),
            Some(Error::BufferTooSmall)
        );
        let mut writer = Writer::new(&mut buf, message_type::REPLY, 1).unwrap();
        assert_eq!(writer.option(1, &[0; 3]), Err(Error::BufferTooSmall));
        writer.option(1, &[0; 2]).unwrap();
        assert_eq!(writer.len(), 10);
        let mut big = [0u8; 70_000];
        let mut writer = Writer::new(&mut big, message_type::REPLY, 1).unwrap();
        assert_eq!(
            writer.option(option::RELAY_MSG, &[0; 65_536]),
            Err(Error::OptionTooLong)
        );
    }

    #[test]
    fn an_option_running_past_the_end_is_an_error_item_and_the_last() {
        for tail in [&[0, 1, 0, 4, 1, 2, 3][..], &[0, 1, 0][..]] {
            let mut options = Options::new(tail);
            assert_eq!(options.next(), Some(Err(Error::OptionOverrun)));
            assert_eq!(options.next(), None);
        }
    }

    #[test]
    fn more_than_max_options_is_an_error_item() {
        let bytes = [0u8; 4 * (MAX_OPTIONS + 1)];
        let items: usize = Options::new(&bytes).filter(Result::is_ok).count();
        assert_eq!(items, MAX_OPTIONS);
        assert_eq!(Options::new(&bytes).find(1), Err(Error::TooManyOptions));
    }

    #[test]
    fn a_relay_message_reads_its_addresses_and_inner_message() {
        let link = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
        let peer = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe18, 0x0101);
        let mut inner = [0u8; 18];
        let mut writer = Writer::new(&mut inner, message_type::SOLICIT, 7).unwrap();
        writer.option(option::CLIENT_ID, &duid_ll(MAC)).unwrap();
        let inner_len = writer.finish();
        let mut buf = [0u8; 80];
        let mut writer = Writer::relay(&mut buf, message_type::RELAY_FORW, 0, link, peer).unwrap();
        writer
            .option(
                option::CLIENT_LINKLAYER_ADDR,
                &[0, 1, 0x52, 0x54, 0, 0x18, 1, 1],
            )
            .unwrap();
        writer
            .option(option::RELAY_MSG, &inner[..inner_len])
            .unwrap();
        let len = writer.finish();
        let relay = RelayPacket::new_checked(&buf[..len]).unwrap();
        assert!(message_type::is_relay(relay.msg_type()));
        assert_eq!((relay.hop_count(), relay.link_address()), (0, link));
        assert_eq!(relay.peer_address(), peer);
        let lladdr = relay.find(option::CLIENT_LINKLAYER_ADDR).unwrap().unwrap();
        assert_eq!(client_linklayer_mac(lladdr), Some(MAC));
        let message = relay.find(option::RELAY_MSG).unwrap().unwrap();
        let inner = Packet::new_checked(message).unwrap();
        assert_eq!(inner.msg_type(), message_type::SOLICIT);
        assert_eq!(inner.transaction_id(), 7);
        assert_eq!(
            RelayPacket::new_checked(&buf[..33]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn duids_of_ethernet_name_their_mac() {
        assert_eq!(duid_mac(&duid_ll(MAC)), Some(MAC));
        let llt = [
            0, 1, 0, 1, 0x2a, 0, 0, 1, 0x52, 0x54, 0x00, 0x18, 0x01, 0x01,
        ];
        assert_eq!(duid_mac(&llt), Some(MAC));
        // DUID-UUID, another hardware type, a short address.
        assert_eq!(
            duid_mac(&[0, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
            None
        );
        assert_eq!(duid_mac(&[0, 3, 0, 6, 1, 2, 3, 4, 5, 6]), None);
        assert_eq!(duid_mac(&[0, 3, 0, 1, 1, 2, 3]), None);
    }

    #[test]
    fn length_prefixed_strings_stop_at_an_overrun() {
        let bytes = [0, 4, b'i', b'P', b'X', b'E', 0, 9, b'x'];
        assert!(Strings::new(&bytes).eq([&b"iPXE"[..]]));
        assert_eq!(Strings::new(&[0]).next(), None);
        assert_eq!(VendorClass::parse(&[0, 0, 1]), None);
    }
}
