//! Option negotiation (RFC 2347) for blksize (RFC 2348), timeout and tsize (RFC 2349) and
//! windowsize (RFC 7440): what the client asked for in, what the transfer uses and what the
//! OACK says out. Pure.
//!
//! RFC 2347: the server acknowledges only the options it accepts, and ignores the ones it does
//! not know or cannot honour; a client that gets no OACK falls back to RFC 1350 defaults.

use std::time::Duration;

use super::packet::TftpOption;

/// RFC 1350 §2: data blocks are 512 bytes unless blksize says otherwise.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348: "Valid values range between 8 and 65464 octets, inclusive."
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// IPv4 header (without options) + UDP header + TFTP DATA header (opcode, block): what a
/// block must leave room for so DATA packets fit the interface MTU unfragmented, the reason
/// RFC 2348 gives for the option (1468 bytes on a 1500-byte Ethernet MTU).
pub const BLOCK_OVERHEAD: u32 = 20 + 8 + 4;
/// Our ceiling for windowsize. RFC 7440 allows up to 65535 blocks; a window is sent as one
/// burst, so the bound keeps one client from flooding a switch port or its own receive buffer.
pub const MAX_WINDOWSIZE: u16 = 64;
/// The most bytes of DATA one window may carry. A burst larger than the client's socket
/// receive buffer (Linux defaults to 208 KiB, counting kernel overhead per datagram) is
/// partly dropped on arrival and has to be sent again, so large blocks get fewer per window:
/// 64 blocks of 1468 bytes, 14 of 8968 (jumbo frames), 2 of 65464.
pub const MAX_WINDOW_BYTES: u32 = 128 * 1024;
/// RFC 2349: "Valid values range between 1 and 255 seconds inclusive."
pub const MIN_TIMEOUT_SECS: u64 = 1;
pub const MAX_TIMEOUT_SECS: u64 = 255;
/// Retransmission interval when the client does not ask for one: a second, as tftp-hpa's
/// server uses by default (`-T 1000000`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Option values are decimal numbers; longer strings are not numbers we accept.
const MAX_NUMBER_DIGITS: usize = 10;

/// The largest blksize whose DATA packets fit an interface's MTU, within RFC 2348's range.
pub fn max_blksize_for_mtu(mtu: u32) -> u16 {
    let fits = mtu.saturating_sub(BLOCK_OVERHEAD);
    u16::try_from(fits)
        .unwrap_or(u16::MAX)
        .clamp(MIN_BLKSIZE, MAX_BLKSIZE)
}

/// What the server is willing to grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From the MTU of the interface the request came in on ([`max_blksize_for_mtu`]).
    pub max_blksize: u16,
    pub max_windowsize: u16,
}

/// The transfer parameters agreed on, and the options to acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    /// The retransmission interval: the client's `timeout` when accepted, else the default.
    pub timeout: Duration,
    /// The OACK's contents, in the order the client asked; empty means no OACK is sent and the
    /// transfer starts with DATA 1 (RFC 1350).
    pub acknowledged: Vec<TftpOption>,
}

impl Negotiated {
    /// RFC 1350 without options.
    pub fn plain() -> Negotiated {
        Negotiated {
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            timeout: DEFAULT_TIMEOUT,
            acknowledged: Vec::new(),
        }
    }
}

/// Decides each option the client asked for, for a file of `file_len` bytes.
pub fn negotiate(requested: &[TftpOption], file_len: u64, limits: Limits) -> Negotiated {
    // RFC 2347 does not say what a repeated option means; the first one counts.
    let first = |name: &str| {
        requested
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| parse_number(&o.value))
    };
    let mut agreed = Negotiated::plain();

    // RFC 2348: the server may answer a smaller blksize than asked, never a larger one; values
    // below 8 are invalid and the option is ignored.
    let max_blksize = u64::from(limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE));
    let blksize = first("blksize")
        .filter(|&asked| asked >= u64::from(MIN_BLKSIZE))
        .and_then(|asked| u16::try_from(asked.min(max_blksize)).ok());
    agreed.blksize = blksize.unwrap_or(DEFAULT_BLKSIZE);

    // RFC 7440 §3: likewise for windowsize, 0 being invalid; bounded in blocks and in bytes.
    let by_bytes = u64::from(MAX_WINDOW_BYTES / u32::from(agreed.blksize)).max(1);
    let max_windowsize = u64::from(limits.max_windowsize.max(1)).min(by_bytes);
    let windowsize = first("windowsize")
        .filter(|&asked| asked >= 1)
        .and_then(|asked| u16::try_from(asked.min(max_windowsize)).ok());
    agreed.windowsize = windowsize.unwrap_or(1);

    // RFC 2349: the OACK must carry the very timeout asked for, so a value out of range is not
    // acknowledged at all.
    let timeout =
        first("timeout").filter(|secs| (MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(secs));
    if let Some(secs) = timeout {
        agreed.timeout = Duration::from_secs(secs);
    }

    // The OACK, in the client's order. RFC 2349: a read request carries tsize 0 and the OACK
    // returns the file's size. Its value is not checked: atftp sends "enable" instead of 0.
    for option in requested {
        let value = match option.name.as_str() {
            "blksize" => blksize.map(u64::from),
            "windowsize" => windowsize.map(u64::from),
            "timeout" => timeout,
            "tsize" => Some(file_len),
            _ => None, // unknown options are ignored (RFC 2347)
        };
        let repeated = agreed.acknowledged.iter().any(|a| a.name == option.name);
        if let Some(value) = value
            && !repeated
        {
            agreed
                .acknowledged
                .push(TftpOption::new(&option.name, value));
        }
    }
    agreed
}

/// A decimal number of at most ten digits, nothing else (no sign, no spaces).
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty()
        || text.len() > MAX_NUMBER_DIGITS
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETHERNET: Limits = Limits {
        max_blksize: 1468,
        max_windowsize: MAX_WINDOWSIZE,
    };

    fn ask(options: &[(&str, &str)]) -> Negotiated {
        let requested: Vec<TftpOption> =
            options.iter().map(|(n, v)| TftpOption::new(n, v)).collect();
        negotiate(&requested, 1_048_576, ETHERNET)
    }

    fn acked(n: &Negotiated) -> Vec<(String, String)> {
        n.acknowledged
            .iter()
            .map(|o| (o.name.clone(), o.value.clone()))
            .collect()
    }

    #[test]
    fn tftp_blksize_is_clamped_to_the_interface_mtu() {
        assert_eq!(max_blksize_for_mtu(1500), 1468);
        assert_eq!(max_blksize_for_mtu(9000), 8968);
        assert_eq!(max_blksize_for_mtu(65536), MAX_BLKSIZE);
        assert_eq!(max_blksize_for_mtu(0), MIN_BLKSIZE);

        let n = ask(&[("blksize", "65464")]);
        assert_eq!(n.blksize, 1468);
        assert_eq!(acked(&n), [("blksize".into(), "1468".into())]);
        assert_eq!(ask(&[("blksize", "1024")]).blksize, 1024);
        // Below RFC 2348's minimum: ignored, not acknowledged.
        let n = ask(&[("blksize", "7")]);
        assert_eq!((n.blksize, n.acknowledged.len()), (DEFAULT_BLKSIZE, 0));
    }

    #[test]
    fn tftp_windowsize_is_bounded_and_timeout_is_taken_only_as_asked() {
        let n = ask(&[("windowsize", "1000"), ("timeout", "3")]);
        assert_eq!(n.windowsize, MAX_WINDOWSIZE);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(
            acked(&n),
            [
                ("windowsize".into(), "64".into()),
                ("timeout".into(), "3".into())
            ]
        );
        for bad in ["0", "256", "-1", "1.5", "", "99999999999"] {
            let n = ask(&[("timeout", bad)]);
            assert_eq!(
                (n.timeout, n.acknowledged.len()),
                (DEFAULT_TIMEOUT, 0),
                "{bad}"
            );
        }
        assert_eq!(ask(&[("windowsize", "0")]).acknowledged.len(), 0);
    }

    #[test]
    fn a_tftp_window_of_large_blocks_is_bounded_in_bytes_whatever_the_option_order() {
        let loopback = Limits {
            max_blksize: MAX_BLKSIZE,
            max_windowsize: MAX_WINDOWSIZE,
        };
        let asked = [
            TftpOption::new("windowsize", 64),
            TftpOption::new("blksize", 65464),
        ];
        let n = negotiate(&asked, 0, loopback);
        assert_eq!((n.blksize, n.windowsize), (65464, 2));
        assert_eq!(
            acked(&n),
            [
                ("windowsize".into(), "2".into()),
                ("blksize".into(), "65464".into())
            ]
        );
        let asked = [
            TftpOption::new("blksize", 8968),
            TftpOption::new("windowsize", 64),
        ];
        assert_eq!(negotiate(&asked, 0, loopback).windowsize, 14);
    }

    #[test]
    fn tftp_tsize_is_answered_with_the_file_size_and_unknown_options_are_ignored() {
        let n = ask(&[
            ("multicast", ""),
            ("tsize", "0"),
            ("utimeout", "500"),
            ("tsize", "5"),
        ]);
        assert_eq!(acked(&n), [("tsize".into(), "1048576".into())]);
        // atftp's `--option "tsize enable"` puts "enable" on the wire.
        let n = ask(&[("tsize", "enable")]);
        assert_eq!(acked(&n), [("tsize".into(), "1048576".into())]);
        assert_eq!(ask(&[]), Negotiated::plain());
    }
}
