//! Counters of what the DHCPv6 core decided, shared by all backends, beside the DHCPv4 ones.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Ignored, Malformed, Outcome, ReplyKind};

/// Lock-free counters, one per outcome label.
#[derive(Debug, Default)]
pub struct Stats {
    malformed: [AtomicU64; Malformed::ALL.len()],
    ignored: [AtomicU64; Ignored::NAMES.len()],
    replies: [AtomicU64; ReplyKind::ALL.len()],
    /// Replies the backend built but could not send.
    send_failed: AtomicU64,
}

impl Stats {
    pub fn record(&self, outcome: &Outcome) {
        let slot = match outcome {
            Outcome::Malformed(m) => Malformed::ALL
                .iter()
                .position(|x| std::mem::discriminant(x) == std::mem::discriminant(m))
                .map(|i| &self.malformed[i]),
            Outcome::Ignored { reason, .. } => self.ignored.get(reason.index()),
            Outcome::Reply { reply, .. } => ReplyKind::ALL
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
        for (m, c) in Malformed::ALL.iter().zip(&self.malformed) {
            out.push((format!("malformed.{}", m.name()), load(c)));
        }
        for (name, c) in Ignored::NAMES.iter().zip(&self.ignored) {
            out.push((format!("ignored.{name}"), load(c)));
        }
        for (kind, c) in ReplyKind::ALL.iter().zip(&self.replies) {
            out.push((format!("reply.{}", kind.name()), load(c)));
        }
        out.push(("send_failed".to_owned(), load(&self.send_failed)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ignored_reason_has_its_own_counter() {
        let reasons = [
            Ignored::NotBootRequest,
            Ignored::MessageType(3),
            Ignored::OtherServer,
            Ignored::UnknownArch,
            Ignored::NoRule,
            Ignored::Silent { rule: "r" },
            Ignored::LoaderMissing {
                rule: "r",
                file: "f",
            },
            Ignored::ReplyFailed(super::super::reply::ReplyError::TooLong),
            Ignored::NotOurs,
            Ignored::ApiPending,
            Ignored::ApiDown,
        ];
        for (i, reason) in reasons.iter().enumerate() {
            assert_eq!(reason.index(), i);
            assert_eq!(Ignored::NAMES[i], reason.name());
        }
    }
}
