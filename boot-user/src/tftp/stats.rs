//! Counters of what the TFTP server did with requests and how transfers ended. Bad packets are
//! counted, not logged one by one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters keyed by `(group, reason)`, shown as `group.reason`. Updated once per request or
/// transfer (never per DATA packet), so one lock is cheap enough; the labels are all static.
#[derive(Debug, Default)]
pub struct TftpStats {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Bytes acknowledged by clients over all transfers.
    bytes: AtomicU64,
    /// DATA packets sent again, over all transfers.
    retransmits: AtomicU64,
}

impl TftpStats {
    pub fn count(&self, group: &'static str, reason: &'static str) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((group, reason)).or_default() += 1;
    }

    pub fn add_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_retransmits(&self, retransmits: u64) {
        self.retransmits.fetch_add(retransmits, Ordering::Relaxed);
    }

    /// One counter's value (0 if never counted).
    pub fn get(&self, group: &str, reason: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&(group, reason)).copied().unwrap_or(0)
    }

    /// `(label, value)` pairs for every counter that moved, plus `bytes` and `retransmits`.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, u64)> = counts
            .iter()
            .map(|((group, reason), n)| (format!("{group}.{reason}"), *n))
            .collect();
        out.push(("bytes".to_owned(), self.bytes.load(Ordering::Relaxed)));
        out.push((
            "retransmits".to_owned(),
            self.retransmits.load(Ordering::Relaxed),
        ));
        out
    }
}
