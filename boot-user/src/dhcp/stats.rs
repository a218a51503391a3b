//! Counters of what the core decided, shared by all backends. A bad packet is a counted
//! outcome, not a log line per packet.

use std::sync::atomic::{AtomicU64, Ordering};

use super::classify::Malformed;
use super::{Ignored, Outcome, ReplyKind};

const MALFORMED: [Malformed; 10] = [
    Malformed::Truncated,
    Malformed::Oversized,
    Malformed::NotARequest,
    Malformed::BadHardwareLength,
    Malformed::BadMagic,
    Malformed::OptionOverrun,
    Malformed::TooManyOptions,
    Malformed::MissingEnd,
    Malformed::BadOptionLength(0),
    Malformed::NoMessageType,
];
const IGNORED: [&str; 10] = Ignored::NAMES;
const REPLIES: [ReplyKind; 2] = [ReplyKind::ProxyOffer, ReplyKind::ProxyAck];

/// Lock-free counters, one per outcome label.
#[derive(Debug, Default)]
pub struct Stats {
    malformed: [AtomicU64; MALFORMED.len()],
    ignored: [AtomicU64; IGNORED.len()],
    replies: [AtomicU64; REPLIES.len()],
    /// Replies the backend built but could not send.
    send_failed: AtomicU64,
}

impl Stats {
    pub fn record(&self, outcome: &Outcome) {
        let slot = match outcome {
            Outcome::Malformed(m) => MALFORMED
                .iter()
                .position(|x| std::mem::discriminant(x) == std::mem::discriminant(m))
                .map(|i| &self.malformed[i]),
            Outcome::Ignored { reason, .. } => self.ignored.get(reason.index()),
            Outcome::Reply { reply, .. } => REPLIES
                .iter()
                .position(|x| *x == reply.kind)
                .map(|i| &self.replies[i]),
        };
        if let Some(counter) = slot {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record_send_failure(&self) {
        self.send_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// `(label, value)` pairs: `malformed.<reason>`, `ignored.<reason>`, `reply.<kind>`.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = Vec::new();
        for (m, c) in MALFORMED.iter().zip(&self.malformed) {
            out.push((format!("malformed.{}", malformed_name(*m)), load(c)));
        }
        for (name, c) in IGNORED.iter().zip(&self.ignored) {
            out.push((format!("ignored.{name}"), load(c)));
        }
        for (kind, c) in REPLIES.iter().zip(&self.replies) {
            out.push((format!("reply.{}", kind.name()), load(c)));
        }
        out.push(("send_failed".to_owned(), load(&self.send_failed)));
        out
    }
}

/// Stable label for a [`Malformed`] reason.
pub fn malformed_name(m: Malformed) -> &'static str {
    match m {
        Malformed::Truncated => "truncated",
        Malformed::Oversized => "oversized",
        Malformed::NotARequest => "not_a_request",
        Malformed::BadHardwareLength => "bad_hardware_length",
        Malformed::BadMagic => "bad_magic",
        Malformed::OptionOverrun => "option_overrun",
        Malformed::TooManyOptions => "too_many_options",
        Malformed::MissingEnd => "missing_end",
        Malformed::BadOptionLength(_) => "bad_option_length",
        Malformed::NoMessageType => "no_message_type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::Ignored;

    #[test]
    fn every_ignored_reason_has_a_counter() {
        use dhcproto::v4::MessageType;
        let reasons = [
            Ignored::NotBootRequest,
            Ignored::MessageType(MessageType::Request),
            Ignored::UnknownArch,
            Ignored::NoRule,
            Ignored::Silent { rule: "r" },
            Ignored::LoaderMissing {
                rule: "r",
                file: "f",
            },
            Ignored::ReplyFailed(crate::dhcp::reply::ReplyError::TooLong),
            Ignored::NotOurs,
            Ignored::ApiPending,
            Ignored::ApiDown,
        ];
        for reason in reasons {
            assert_eq!(IGNORED[reason.index()], reason.name());
        }
    }
}
