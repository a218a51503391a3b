//! TFTP packets on the wire (RFC 1350 §5, with the OACK of RFC 2347): parsing what a read-only
//! server receives and building what it sends. Pure functions over byte slices.
//!
//! Every packet starts with a 2-byte big-endian opcode. Strings (file name, mode, option names
//! and values, error messages) are NUL-terminated; block numbers and error codes are 2-byte
//! big-endian.

use std::fmt;

/// RFC 2347 ("Packet Format"): a request with options must not exceed 512 octets. Longer
/// datagrams on the server port are refused as malformed, so a request is always small.
pub const MAX_REQUEST_LEN: usize = 512;

/// The opcodes of RFC 1350 §5 and RFC 2347.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Opcode {
    Rrq = 1,
    Wrq = 2,
    Data = 3,
    Ack = 4,
    Error = 5,
    Oack = 6,
}

/// ERROR packet codes (RFC 1350 appendix "Error Codes"; 8 from RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    DiskFull = 3,
    IllegalOperation = 4,
    UnknownTransferId = 5,
    FileExists = 6,
    NoSuchUser = 7,
    /// RFC 2347: the client refuses the server's OACK.
    OptionsRefused = 8,
}

impl ErrorCode {
    pub fn number(self) -> u16 {
        self as u16
    }
}

/// One option of a request or an OACK (RFC 2347): a name and a value, both ASCII strings.
/// Names are case-insensitive; the parser lowercases them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpOption {
    pub name: String,
    pub value: String,
}

impl TftpOption {
    pub fn new(name: &str, value: impl fmt::Display) -> TftpOption {
        TftpOption {
            name: name.to_ascii_lowercase(),
            value: value.to_string(),
        }
    }
}

/// A read or write request (RFC 1350 §5 figure 5-1, options per RFC 2347).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// As sent: bytes up to the first NUL. Checked by [`super::request::RelativePath`].
    pub filename: &'a [u8],
    pub mode: &'a [u8],
    pub options: Vec<TftpOption>,
}

/// A parsed packet, borrowing from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request<'a>),
    Wrq(Request<'a>),
    Data { block: u16, payload: &'a [u8] },
    Ack { block: u16 },
    Error { code: u16, message: &'a [u8] },
    Oack(Vec<TftpOption>),
}

/// Why a datagram is not a TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than its header")]
    Truncated,
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("request longer than 512 bytes (RFC 2347)")]
    Oversized,
    #[error("file name or mode not NUL-terminated")]
    Unterminated,
}

impl Malformed {
    /// A stable label for counters.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::Truncated => "truncated",
            Malformed::UnknownOpcode(_) => "unknown_opcode",
            Malformed::Oversized => "oversized",
            Malformed::Unterminated => "unterminated",
        }
    }
}

impl<'a> Packet<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, Malformed> {
        let (opcode, body) = match bytes {
            [hi, lo, body @ ..] => (u16::from_be_bytes([*hi, *lo]), body),
            _ => return Err(Malformed::Truncated),
        };
        match opcode {
            1 | 2 => {
                if bytes.len() > MAX_REQUEST_LEN {
                    return Err(Malformed::Oversized);
                }
                let request = parse_request(body)?;
                Ok(if opcode == 1 {
                    Packet::Rrq(request)
                } else {
                    Packet::Wrq(request)
                })
            }
            3 => match body {
                [hi, lo, payload @ ..] => Ok(Packet::Data {
                    block: u16::from_be_bytes([*hi, *lo]),
                    payload,
                }),
                _ => Err(Malformed::Truncated),
            },
            // Bytes after the block number are ignored: some stacks pad short frames.
            4 => match body {
                [hi, lo, ..] => Ok(Packet::Ack {
                    block: u16::from_be_bytes([*hi, *lo]),
                }),
                _ => Err(Malformed::Truncated),
            },
            5 => match body {
                [hi, lo, rest @ ..] => {
                    // An unterminated message is taken whole: the code is what matters.
                    let (message, _) = split_string(rest).unwrap_or((rest, &[]));
                    Ok(Packet::Error {
                        code: u16::from_be_bytes([*hi, *lo]),
                        message,
                    })
                }
                _ => Err(Malformed::Truncated),
            },
            6 => Ok(Packet::Oack(parse_options(body))),
            other => Err(Malformed::UnknownOpcode(other)),
        }
    }
}

fn parse_request(body: &[u8]) -> Result<Request<'_>, Malformed> {
    let (filename, rest) = split_string(body).ok_or(Malformed::Unterminated)?;
    let (mode, rest) = split_string(rest).ok_or(Malformed::Unterminated)?;
    Ok(Request {
        filename,
        mode,
        options: parse_options(rest),
    })
}

/// `name\0value\0` pairs. An incomplete pair at the end (a name without a value, or trailing
/// padding) ends the list: RFC 2347 lets the server ignore what it does not understand, and
/// some firmware pads requests with NULs.
fn parse_options(mut rest: &[u8]) -> Vec<TftpOption> {
    let mut options = Vec::new();
    while let Some((name, after_name)) = split_string(rest) {
        let Some((value, after_value)) = split_string(after_name) else {
            break;
        };
        if !name.is_empty() {
            options.push(TftpOption {
                name: String::from_utf8_lossy(name).to_ascii_lowercase(),
                value: String::from_utf8_lossy(value).into_owned(),
            });
        }
        rest = after_value;
    }
    options
}

/// The bytes before the first NUL and the bytes after it; `None` without a NUL.
fn split_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

// ---- building ---------------------------------------------------------------------------------
//
// Each writer replaces the contents of `buf`, so one buffer serves a whole transfer.

/// DATA (RFC 1350 §5 figure 5-2).
pub fn write_data(buf: &mut Vec<u8>, block: u16, payload: &[u8]) {
    write_data_header(buf, block);
    buf.extend_from_slice(payload);
}

/// The 4 bytes in front of a DATA packet's payload, for a sender that passes the payload
/// separately (a second iovec pointing into the file) instead of copying it behind them.
pub fn write_data_header(buf: &mut Vec<u8>, block: u16) {
    buf.clear();
    buf.extend_from_slice(&(Opcode::Data as u16).to_be_bytes());
    buf.extend_from_slice(&block.to_be_bytes());
}

/// ACK (RFC 1350 §5 figure 5-3).
pub fn write_ack(buf: &mut Vec<u8>, block: u16) {
    buf.clear();
    buf.extend_from_slice(&(Opcode::Ack as u16).to_be_bytes());
    buf.extend_from_slice(&block.to_be_bytes());
}

/// ERROR (RFC 1350 §5 figure 5-4). The message is ASCII; anything else is replaced by `?` so
/// the packet stays a valid NUL-terminated string.
pub fn write_error(buf: &mut Vec<u8>, code: ErrorCode, message: &str) {
    buf.clear();
    buf.extend_from_slice(&(Opcode::Error as u16).to_be_bytes());
    buf.extend_from_slice(&code.number().to_be_bytes());
    buf.extend(
        message
            .bytes()
            .map(|b| if b.is_ascii() && b != 0 { b } else { b'?' }),
    );
    buf.push(0);
}

/// OACK (RFC 2347 "Packet Format").
pub fn write_oack(buf: &mut Vec<u8>, options: &[TftpOption]) {
    buf.clear();
    buf.extend_from_slice(&(Opcode::Oack as u16).to_be_bytes());
    push_options(buf, options);
}

/// RRQ or WRQ, as a client sends it (tests and benchmarks play the client).
pub fn write_request(
    buf: &mut Vec<u8>,
    opcode: Opcode,
    filename: &[u8],
    mode: &str,
    options: &[TftpOption],
) {
    buf.clear();
    buf.extend_from_slice(&(opcode as u16).to_be_bytes());
    buf.extend_from_slice(filename);
    buf.push(0);
    buf.extend_from_slice(mode.as_bytes());
    buf.push(0);
    push_options(buf, options);
}

fn push_options(buf: &mut Vec<u8>, options: &[TftpOption]) {
    for option in options {
        buf.extend_from_slice(option.name.as_bytes());
        buf.push(0);
        buf.extend_from_slice(option.value.as_bytes());
        buf.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_request_with_options_round_trips() {
        let mut buf = Vec::new();
        let options = [
            TftpOption::new("blksize", 1468),
            TftpOption::new("tsize", 0),
        ];
        write_request(&mut buf, Opcode::Rrq, b"undionly.kpxe", "octet", &options);
        assert_eq!(
            buf,
            b"\x00\x01undionly.kpxe\0octet\0blksize\x001468\0tsize\x000\0"
        );
        let Ok(Packet::Rrq(request)) = Packet::parse(&buf) else {
            panic!("not an RRQ: {:?}", Packet::parse(&buf));
        };
        assert_eq!(request.filename, b"undionly.kpxe");
        assert_eq!(request.mode, b"octet");
        assert_eq!(request.options, options);
    }

    #[test]
    fn tftp_option_names_are_case_insensitive_and_padding_is_ignored() {
        let Ok(Packet::Rrq(request)) = Packet::parse(b"\x00\x01f\0OCTET\0BlkSize\x00512\0\0\0\0")
        else {
            panic!("not an RRQ");
        };
        assert_eq!(request.mode, b"OCTET");
        assert_eq!(request.options, [TftpOption::new("blksize", 512)]);
    }

    #[test]
    fn broken_tftp_packets_are_named() {
        assert_eq!(Packet::parse(b""), Err(Malformed::Truncated));
        assert_eq!(Packet::parse(b"\x00"), Err(Malformed::Truncated));
        assert_eq!(Packet::parse(b"\x00\x04\x00"), Err(Malformed::Truncated));
        assert_eq!(
            Packet::parse(b"\x00\x09abc"),
            Err(Malformed::UnknownOpcode(9))
        );
        assert_eq!(
            Packet::parse(b"\x00\x01file-without-nul"),
            Err(Malformed::Unterminated)
        );
        assert_eq!(
            Packet::parse(b"\x00\x01file\0octet"),
            Err(Malformed::Unterminated)
        );
        let mut long = b"\x00\x01".to_vec();
        long.resize(MAX_REQUEST_LEN + 1, b'a');
        assert_eq!(Packet::parse(&long), Err(Malformed::Oversized));
    }

    #[test]
    fn tftp_data_ack_error_and_oack_are_built_as_rfc_1350_draws_them() {
        let mut buf = Vec::new();
        write_data(&mut buf, 0x0102, b"xyz");
        assert_eq!(buf, b"\x00\x03\x01\x02xyz");
        write_ack(&mut buf, 7);
        assert_eq!(buf, b"\x00\x04\x00\x07");
        assert_eq!(Packet::parse(&buf), Ok(Packet::Ack { block: 7 }));
        write_error(&mut buf, ErrorCode::FileNotFound, "no such file é");
        assert_eq!(buf, b"\x00\x05\x00\x01no such file ??\0");
        assert_eq!(
            Packet::parse(&buf),
            Ok(Packet::Error {
                code: 1,
                message: b"no such file ??"
            })
        );
        write_oack(&mut buf, &[TftpOption::new("tsize", 1024)]);
        assert_eq!(buf, b"\x00\x06tsize\x001024\0");
        assert_eq!(
            Packet::parse(&buf),
            Ok(Packet::Oack(vec![TftpOption::new("tsize", 1024)]))
        );
    }
}
