//! What the server port does with a datagram, sans I/O: a read request to serve, a request to
//! refuse with an ERROR, or something to drop. Also the rules for the names a client may ask
//! for.
//!
//! The server is read-only and serves only its root:
//! - WRQ gets ERROR 2 (access violation): nothing is ever written.
//! - Only octet mode is served (RFC 1350 §1); netascii would need a translated copy of each
//!   loader, and first-stage loaders are binaries. Other modes get ERROR 4.
//! - A name is a relative path inside the root. One leading `/` is stripped, as tftp-hpa does
//!   in its `-s` (secure, chroot) mode, because some PXE firmware and GRUB configurations send
//!   `/undionly.kpxe`; so the root is the client's `/`. A name still absolute after that
//!   (`//etc/passwd`), a `..` component, a backslash (a separator to Windows-minded clients),
//!   a NUL or another control character is refused with ERROR 2. The wire format ends a name
//!   at its first NUL (RFC 1350 §5), so a NUL smuggled into a name cannot reach a check
//!   either: what follows it is read as the mode and refused as one.
//! - Other opcodes sent to the server port get ERROR 4 (illegal operation); an ERROR packet
//!   is never answered.

use std::fmt;

use super::packet::{ErrorCode, Malformed, Packet, TftpOption};

/// A requested name that passed the rules above: relative, no `..`, no backslash or control
/// characters. Resolving it against the root (symlinks included) is [`super::files`]' job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelativePath(String);

impl RelativePath {
    pub fn parse(raw: &[u8]) -> Result<RelativePath, Refusal> {
        let name = std::str::from_utf8(raw).map_err(|_| Refusal::NotUtf8)?;
        let name = name.strip_prefix('/').unwrap_or(name);
        if name.is_empty() {
            return Err(Refusal::Empty);
        }
        if name.starts_with('/') {
            return Err(Refusal::Absolute);
        }
        if name.contains('\\') {
            return Err(Refusal::Backslash);
        }
        if name.chars().any(char::is_control) {
            return Err(Refusal::ControlCharacter);
        }
        if name.split('/').any(|component| component == "..") {
            return Err(Refusal::ParentComponent);
        }
        Ok(RelativePath(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the name is empty")]
    Empty,
    #[error("the name is not UTF-8")]
    NotUtf8,
    #[error("absolute paths are not served")]
    Absolute,
    #[error("backslashes are not allowed in names")]
    Backslash,
    #[error("control characters are not allowed in names")]
    ControlCharacter,
    #[error("`..` is not allowed in names")]
    ParentComponent,
}

/// A read request worth serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub path: RelativePath,
    pub options: Vec<TftpOption>,
}

/// The server port's decision about one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    Read(ReadRequest),
    /// Answer with an ERROR; `name` is the requested file, when there was one, for the log.
    Refuse {
        code: ErrorCode,
        message: &'static str,
        reason: &'static str,
        name: Option<String>,
    },
    /// Not answered: an ERROR packet (answering one could start an error loop) or a datagram
    /// too short to carry an opcode.
    Drop {
        reason: &'static str,
    },
}

impl Screened {
    fn refuse(code: ErrorCode, message: &'static str, reason: &'static str) -> Screened {
        Screened::Refuse {
            code,
            message,
            reason,
            name: None,
        }
    }
}

/// Decides what to do with a datagram that reached the server port.
pub fn screen(bytes: &[u8]) -> Screened {
    let request = match Packet::parse(bytes) {
        Ok(Packet::Rrq(request)) => request,
        Ok(Packet::Wrq(request)) => {
            return Screened::Refuse {
                code: ErrorCode::AccessViolation,
                message: "this server is read-only",
                reason: "write_request",
                name: Some(lossy(request.filename)),
            };
        }
        Ok(Packet::Error { .. }) => return Screened::Drop { reason: "error" },
        Ok(Packet::Data { .. } | Packet::Ack { .. } | Packet::Oack(_)) => {
            return Screened::refuse(
                ErrorCode::IllegalOperation,
                "only read requests are served on this port",
                "not_a_request",
            );
        }
        Err(Malformed::Truncated) => {
            return Screened::Drop {
                reason: "truncated",
            };
        }
        Err(Malformed::UnknownOpcode(_)) => {
            return Screened::refuse(
                ErrorCode::IllegalOperation,
                "unknown opcode",
                "unknown_opcode",
            );
        }
        Err(m @ (Malformed::Oversized | Malformed::Unterminated)) => {
            return Screened::refuse(ErrorCode::IllegalOperation, "malformed request", m.name());
        }
    };
    let name = lossy(request.filename);
    if !request.mode.eq_ignore_ascii_case(b"octet") {
        return Screened::Refuse {
            code: ErrorCode::IllegalOperation,
            message: "only octet mode is served",
            reason: "mode",
            name: Some(name),
        };
    }
    match RelativePath::parse(request.filename) {
        Ok(path) => Screened::Read(ReadRequest {
            path,
            options: request.options,
        }),
        Err(_) => Screened::Refuse {
            code: ErrorCode::AccessViolation,
            message: "access violation: names must be relative paths inside the TFTP root",
            reason: "refused_name",
            name: Some(name),
        },
    }
}

/// A requested name as text for logs, control characters masked.
pub fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::packet::{self, Opcode};

    fn rrq(name: &[u8], mode: &str) -> Vec<u8> {
        let mut buf = Vec::new();
        packet::write_request(&mut buf, Opcode::Rrq, name, mode, &[]);
        buf
    }

    fn code(screened: &Screened) -> Option<u16> {
        match screened {
            Screened::Refuse { code, .. } => Some(code.number()),
            _ => None,
        }
    }

    #[test]
    fn tftp_names_are_relative_paths_inside_the_root() {
        for good in [
            "undionly.kpxe",
            "efi/ipxe.efi",
            "a/./b",
            "a//b",
            "..a",
            "a..",
            "x...y",
        ] {
            assert_eq!(
                RelativePath::parse(good.as_bytes()).map(|p| p.0),
                Ok(good.to_owned())
            );
        }
        // One leading slash is the root itself, as with tftp-hpa -s.
        assert_eq!(
            RelativePath::parse(b"/undionly.kpxe").map(|p| p.0),
            Ok("undionly.kpxe".to_owned())
        );
        let bad: [(&[u8], Refusal); 10] = [
            (b"", Refusal::Empty),
            (b"/", Refusal::Empty),
            (b"//etc/passwd", Refusal::Absolute),
            (b"..", Refusal::ParentComponent),
            (b"../etc/passwd", Refusal::ParentComponent),
            (b"efi/../../x", Refusal::ParentComponent),
            (b"/..", Refusal::ParentComponent),
            (b"boot\\x86\\pxeboot.n12", Refusal::Backslash),
            (b"a\0b", Refusal::ControlCharacter),
            (b"\xff\xfe", Refusal::NotUtf8),
        ];
        for (name, why) in bad {
            assert_eq!(RelativePath::parse(name), Err(why), "{name:?}");
        }
    }

    #[test]
    fn a_tftp_read_request_in_octet_mode_is_served() {
        let mut buf = Vec::new();
        let options = [TftpOption::new("blksize", 1468)];
        packet::write_request(&mut buf, Opcode::Rrq, b"/efi/ipxe.efi", "OCTET", &options);
        assert_eq!(
            screen(&buf),
            Screened::Read(ReadRequest {
                path: RelativePath("efi/ipxe.efi".into()),
                options: options.to_vec(),
            })
        );
    }

    #[test]
    fn tftp_writes_traversal_and_odd_packets_are_refused_with_the_rfc_1350_codes() {
        let mut wrq = Vec::new();
        packet::write_request(&mut wrq, Opcode::Wrq, b"x", "octet", &[]);
        assert_eq!(code(&screen(&wrq)), Some(2));
        assert_eq!(code(&screen(&rrq(b"../etc/passwd", "octet"))), Some(2));
        assert_eq!(code(&screen(&rrq(b"//etc/passwd", "octet"))), Some(2));
        assert_eq!(code(&screen(&rrq(b"a\\b", "octet"))), Some(2));
        assert_eq!(code(&screen(&rrq(b"undionly.kpxe", "netascii"))), Some(4));
        // A NUL inside the name ends it; the rest is taken as the mode and refused.
        assert_eq!(
            code(&screen(b"\x00\x01../../etc/passwd\0.kpxe\0octet\0")),
            Some(4)
        );
        assert_eq!(code(&screen(b"\x00\x07whatever")), Some(4));
        assert_eq!(code(&screen(b"\x00\x04\x00\x01")), Some(4));
        assert_eq!(code(&screen(b"\x00\x01no-terminator")), Some(4));
        assert_eq!(
            screen(b"\x00\x05\x00\x01oops\0"),
            Screened::Drop { reason: "error" }
        );
        assert_eq!(
            screen(b"\x01"),
            Screened::Drop {
                reason: "truncated"
            }
        );
    }
}
