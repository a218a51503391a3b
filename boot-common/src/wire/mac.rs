//! Ethernet MAC addresses (IEEE 802): six octets, written `52:54:00:18:00:01`.

use core::fmt;
use core::str::FromStr;

/// A 48-bit MAC address. `Display` writes the lower-case, colon-separated form that
/// `ip link`, dnsmasq and iPXE's `${net0/mac}` use; `FromStr` also takes upper case and `-`
/// separators (Windows, `${net0/mac:hexhyp}`).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff, the destination of a frame to every station on the link.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> Self {
        mac.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// Text that is not six two-digit hex octets separated by `:` or `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseMacError;

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected a MAC address: six two-digit hex octets separated by ':' or '-'")
    }
}

impl core::error::Error for ParseMacError {}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Exactly six octets of exactly two hex digits each, all separated by the same one of
    /// `:` and `-`; either case.
    fn from_str(text: &str) -> Result<Self, ParseMacError> {
        let bytes = text.as_bytes();
        // 6 × 2 digits + 5 separators.
        if bytes.len() != 17 {
            return Err(ParseMacError);
        }
        let separator = bytes[2];
        if separator != b':' && separator != b'-' {
            return Err(ParseMacError);
        }
        let mut mac = [0; 6];
        for (i, octet) in mac.iter_mut().enumerate() {
            let at = 3 * i;
            if i > 0 && bytes[at - 1] != separator {
                return Err(ParseMacError);
            }
            *octet = (hex_digit(bytes[at])? << 4) | hex_digit(bytes[at + 1])?;
        }
        Ok(MacAddr(mac))
    }
}

fn hex_digit(c: u8) -> Result<u8, ParseMacError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ParseMacError),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::ToString;

    #[test]
    fn a_mac_prints_lower_case_with_colons() {
        let mac = MacAddr([0x52, 0x54, 0x00, 0xAB, 0x0c, 0xff]);
        assert_eq!(mac.to_string(), "52:54:00:ab:0c:ff");
        assert_eq!(std::format!("{mac:?}"), "MacAddr(52:54:00:ab:0c:ff)");
    }

    #[test]
    fn a_mac_parses_with_either_separator_and_case() {
        let mac = MacAddr([0x52, 0x54, 0x00, 0xab, 0x0c, 0xff]);
        for text in [
            "52:54:00:ab:0c:ff",
            "52-54-00-AB-0C-FF",
            "52:54:00:Ab:0C:fF",
        ] {
            assert_eq!(text.parse(), Ok(mac), "{text}");
        }
    }

    #[test]
    fn anything_but_six_two_digit_octets_is_refused() {
        for text in [
            "",
            "52:54:00:ab:0c",
            "52:54:00:ab:0c:ff:01",
            "52:54:00:ab:0c:f",
            "52:54:00:ab:0c:fff",
            "5:254:00:ab:0c:ff",
            "52:54-00:ab:0c:ff",
            "52.54.00.ab.0c.ff",
            "52:54:00:ab:0c:+f",
            "52:54:00:ab:0c:fg",
            "525400ab0cff",
            " 52:54:00:ab:0c:ff",
        ] {
            assert_eq!(text.parse::<MacAddr>(), Err(ParseMacError), "{text:?}");
        }
    }

    #[test]
    fn broadcast_is_all_ones() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(!MacAddr([0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]).is_broadcast());
        assert_eq!(MacAddr::BROADCAST.to_string(), "ff:ff:ff:ff:ff:ff");
    }
}
