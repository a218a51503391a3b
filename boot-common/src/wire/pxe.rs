//! PXE 2.1 options (Preboot Execution Environment Specification 2.1, Intel, 1999, its table of
//! PXE vendor options): the sub-options a PXE server puts in option 43, and the client machine
//! identifier of option 97 (RFC 4578 §2.3).
//!
//! Option 43 of a PXE message holds sub-options in the format of the options themselves
//! (code, length, data; PAD and END alone), so [`sub_options`] is the same iterator.

use super::dhcpv4::Options;

/// Option 60 prefixes of boot clients: PXE ROMs and iPXE ("PXEClient:Arch:xxxxx:UNDI:yyyzzz",
/// PXE 2.1; undionly.kpxe may send the bare word, see tests/data/README.md), and UEFI HTTP Boot
/// ("HTTPClient:Arch:xxxxx…", UEFI specification, HTTP Boot chapter). A proxy reply puts the
/// bare word back.
pub const PXE_CLIENT: &[u8; 9] = b"PXEClient";
pub const HTTP_CLIENT: &[u8; 10] = b"HTTPClient";
/// Option 77 of iPXE (`DHCP_USER_CLASS_ID` in iPXE's `include/ipxe/dhcp.h`): the bare string,
/// or as one RFC 3004 length-prefixed user class.
pub const IPXE_USER_CLASS: &[u8; 4] = b"iPXE";

/// Sub-option codes inside option 43 (PXE 2.1, PXE vendor options).
pub mod sub_option {
    /// One octet of [`super::discovery_control`] bits.
    pub const DISCOVERY_CONTROL: u8 = 6;
    /// Boot servers: type (16 bits), count, IPv4 addresses; repeated.
    pub const BOOT_SERVERS: u8 = 8;
    /// Boot menu: type (16 bits), description length, description; repeated.
    pub const BOOT_MENU: u8 = 9;
    /// Menu prompt: timeout in seconds, prompt text.
    pub const MENU_PROMPT: u8 = 10;
    /// Boot item: type and layer, 16 bits each, from a client's boot-server request.
    pub const BOOT_ITEM: u8 = 71;
}

/// `PXE_DISCOVERY_CONTROL` bits (PXE 2.1, PXE vendor options); bits 4–7 must be 0.
pub mod discovery_control {
    /// Do not discover boot servers by broadcast.
    pub const NO_BROADCAST: u8 = 1 << 0;
    /// Do not discover boot servers by multicast.
    pub const NO_MULTICAST: u8 = 1 << 1;
    /// Only use and accept the servers listed in `PXE_BOOT_SERVERS`.
    pub const SERVER_LIST_ONLY: u8 = 1 << 2;
    /// When this offer names a boot file, download it: no prompt, no menu, no discovery.
    /// dnsmasq and pixiecore send this to BIOS clients (DESIGN.md).
    pub const BOOT_FILE_IN_OFFER: u8 = 1 << 3;
}

/// The sub-options in option 43's data.
pub fn sub_options(data: &[u8]) -> Options<'_> {
    Options::new(data)
}

/// Option 43 data holding only `PXE_DISCOVERY_CONTROL = bits`, then END.
pub const fn discovery_control_option(bits: u8) -> [u8; 4] {
    [sub_option::DISCOVERY_CONTROL, 1, bits, 0xff]
}

/// A `PXE_BOOT_ITEM`: which menu item a client boots, and the layer of the file it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootItem {
    /// The boot server type from the menu (0 is Microsoft's Windows NT boot server, 0x8000 to
    /// 0xfffe are for vendor use: dnsmasq numbers its `--pxe-service` entries from 0x8000).
    pub item_type: u16,
    /// Bits 0–14 the layer, bit 15 a request for credentials.
    pub layer: u16,
}

impl BootItem {
    /// A boot item's sub-option data: exactly four octets.
    pub fn parse(data: &[u8]) -> Option<Self> {
        match *data {
            [t0, t1, l0, l1] => Some(Self {
                item_type: u16::from_be_bytes([t0, t1]),
                layer: u16::from_be_bytes([l0, l1]),
            }),
            _ => None,
        }
    }

    pub fn to_bytes(self) -> [u8; 4] {
        let [t0, t1] = self.item_type.to_be_bytes();
        let [l0, l1] = self.layer.to_be_bytes();
        [t0, t1, l0, l1]
    }
}

/// Option 97's type for a GUID, the only one defined (RFC 4578 §2.3).
pub const MACHINE_ID_GUID: u8 = 0;
/// Option 97's data: the type octet and the 16-byte GUID.
pub const MACHINE_ID_LEN: usize = 17;

/// The GUID in option 97's data, as sent: type 0 and 16 octets. Firmware puts the SMBIOS UUID
/// there with its first three fields little-endian (EFI GUID order; tests/data/README.md).
pub fn client_machine_id(data: &[u8]) -> Option<[u8; 16]> {
    match data.split_first() {
        Some((&MACHINE_ID_GUID, guid)) => guid.try_into().ok(),
        _ => None,
    }
}

/// Option 97's data for `guid`, as a reply echoes it.
pub fn client_machine_id_option(guid: &[u8; 16]) -> [u8; MACHINE_ID_LEN] {
    let mut data = [0; MACHINE_ID_LEN];
    data[0] = MACHINE_ID_GUID;
    data[1..].copy_from_slice(guid);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipxe_boot_server_requests_name_their_boot_item() {
        // Option 43 of tests/data/seabios-ipxe-pxebs-4011.bin: item 0x8000, layer 0, END.
        let data = [0x47, 0x04, 0x80, 0x00, 0x00, 0x00, 0xff];
        let mut subs = sub_options(&data);
        let (code, item) = subs.next().unwrap().unwrap();
        assert_eq!(code, sub_option::BOOT_ITEM);
        let item = BootItem::parse(item).unwrap();
        assert_eq!(
            item,
            BootItem {
                item_type: 0x8000,
                layer: 0
            }
        );
        assert_eq!(item.to_bytes(), [0x80, 0, 0, 0]);
        assert_eq!(subs.next(), None);
    }

    #[test]
    fn discovery_control_says_boot_the_file_in_this_offer() {
        let data = discovery_control_option(discovery_control::BOOT_FILE_IN_OFFER);
        assert_eq!(data, [6, 1, 8, 255]);
        assert_eq!(
            sub_options(&data).find(sub_option::DISCOVERY_CONTROL),
            Ok(Some(&[8][..]))
        );
    }

    #[test]
    fn the_machine_id_is_type_zero_and_sixteen_octets() {
        let guid: [u8; 16] = core::array::from_fn(|i| i as u8);
        let data = client_machine_id_option(&guid);
        assert_eq!(client_machine_id(&data), Some(guid));
        assert_eq!(client_machine_id(&data[..16]), None);
        let mut other_type = data;
        other_type[0] = 1;
        assert_eq!(client_machine_id(&other_type), None);
    }
}
