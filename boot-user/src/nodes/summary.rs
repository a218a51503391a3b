//! The node table's aggregates, kept as events arrive so that a storm of 10,000 nodes costs a
//! summary no scan of the table: nodes per stage, per architecture, firmware, interface and
//! policy rule; nodes whose last event failed, by reason; nodes stuck; boots completed per
//! second; time from the first DHCP request to each stage.
//!
//! Every event moves a node from one set of [`Keys`] to another, and the counts follow
//! ([`Summary::moved`]): a few integer updates, and hash updates only for the dimensions that
//! changed. Times to stage go into fixed log-spaced histograms ([`Timings`]) that a node's
//! marks are added to and taken out of again when the node starts a new boot or is forgotten,
//! so the percentiles describe exactly the boots in the table. The last [`HISTORY_SECONDS`]
//! seconds are kept in a ring of per-second buckets ([`History`]), closed when an event (or a
//! reader) arrives in a later second. Everything here is bounded by a named constant.

use std::borrow::Cow;
use std::hash::Hash;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::ser::SerializeMap;

use super::Stage;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Where a node's current boot got: [`UNANSWERED`](super::UNANSWERED) (slot 0), then the
/// stages in [`Stage::ALL`] order.
pub const SLOTS: usize = Stage::ALL.len() + 1;
/// The slot of a node that reached its overlay: its boot is complete.
const DONE_SLOT: usize = SLOTS - 1;
/// Seconds of history the summary keeps (per-second buckets): the storm view's charts and the
/// completion rates reach this far back.
pub const HISTORY_SECONDS: usize = 300;
/// Buckets of a time-to-stage histogram. With [`TIMING_FIRST_MS`] and four buckets per
/// doubling they reach 10 ms × 2^(79/4) ≈ 2.4 hours; a percentile is the upper bound of its
/// bucket, at most 19 % above the true value.
pub const TIMING_BUCKETS: usize = 80;
/// Upper bound of the first time-to-stage bucket.
pub const TIMING_FIRST_MS: f64 = 10.0;
/// Buckets per doubling of time: each bound is 2^(1/4) ≈ 1.19 times the one before.
const TIMING_BUCKETS_PER_DOUBLING: f64 = 4.0;
/// Distinct values a breakdown (per architecture, firmware, interface, rule, failure reason)
/// counts separately; nodes with values beyond them count under [`OTHER`].
pub const MAX_BREAKDOWN_KEYS: usize = 256;
/// Distinct policy rule names remembered; later ones count under [`OTHER`].
pub const MAX_RULES: usize = 256;
/// The breakdown key of values past [`MAX_BREAKDOWN_KEYS`] (and rules past [`MAX_RULES`]).
pub const OTHER: &str = "other";
/// The breakdown key of a node whose architecture, firmware or interface is not known (a node
/// first seen in an HTTP request), or that no rule answered.
pub const UNKNOWN: &str = "unknown";
/// The percentiles of [`TimingView`] and of the history's time to boot.
const PERCENTILES: [f64; 3] = [0.5, 0.9, 0.99];
/// Windows of [`Rates`], in seconds.
const RATE_WINDOWS: [u64; 3] = [10, 60, HISTORY_SECONDS as u64];

/// A rule name's number in [`RuleNames`].
pub type RuleId = u16;

/// Policy rule names, each stored once: a node keeps the number. Names come from the config
/// (and change on reload), so they are copied once, on first sight, never per request.
#[derive(Debug, Default)]
pub struct RuleNames {
    ids: HashMap<Box<str>, RuleId>,
    names: Vec<Box<str>>,
    /// The last name looked up: a storm is mostly one rule, compared faster than hashed.
    last: Option<RuleId>,
}

impl RuleNames {
    /// The number of `name`, stored on first sight; past [`MAX_RULES`] names, [`OTHER`]'s.
    pub fn id(&mut self, name: &str) -> RuleId {
        if let Some(last) = self.last
            && *self.names[usize::from(last)] == *name
        {
            return last;
        }
        if let Some(id) = self.ids.get(name) {
            self.last = Some(*id);
            return *id;
        }
        let name = if self.names.len() + 1 >= MAX_RULES {
            OTHER
        } else {
            name
        };
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = RuleId::try_from(self.names.len())
            .expect("MAX_RULES names fit a RuleId: the table never grows past it");
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    pub fn name(&self, id: Option<RuleId>) -> &str {
        id.and_then(|id| self.names.get(usize::from(id)))
            .map_or(UNKNOWN, |name| name)
    }
}

/// What a node is counted under. Equal keys mean no count moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    /// 0 when no request of this boot was answered, else 1 + the furthest stage's index.
    pub slot: usize,
    pub arch: &'static str,
    pub firmware: &'static str,
    pub interface: &'static str,
    /// The rule of the boot's last DHCP decision.
    pub rule: Option<RuleId>,
    /// Why the node's last event failed, when it did.
    pub failure: Option<&'static str>,
}

impl Keys {
    /// Whether the boot got to its overlay, the last download before the kernel runs.
    pub fn finished(&self) -> bool {
        self.slot == DONE_SLOT
    }

    /// Equal, as far as a comparison of the names' addresses tells (the names come from
    /// `name()` functions and interned labels, so equal names share one). A false "not the
    /// same" only costs the counts a move to the same value; an event that changes nothing,
    /// the common case under a storm, costs a few compares.
    #[inline]
    fn same(&self, other: &Keys) -> bool {
        let same_str = |a: &str, b: &str| std::ptr::eq(a, b);
        self.slot == other.slot
            && same_str(self.arch, other.arch)
            && same_str(self.firmware, other.firmware)
            && same_str(self.interface, other.interface)
            && self.rule == other.rule
            && match (self.failure, other.failure) {
                (None, None) => true,
                (Some(a), Some(b)) => same_str(a, b),
                _ => false,
            }
    }
}

/// Counts per value of one dimension, bounded by [`MAX_BREAKDOWN_KEYS`]. Entries are never
/// removed (a count may drop to 0), so a value counted under [`Tally::other`] is found there
/// again when it is taken away.
#[derive(Debug)]
struct Tally<K> {
    counts: HashMap<K, usize>,
    other: K,
}

impl<K: Copy + Eq + Hash> Tally<K> {
    fn new(other: K) -> Tally<K> {
        Tally {
            counts: HashMap::default(),
            other,
        }
    }

    fn add(&mut self, key: K) {
        if let Some(count) = self.counts.get_mut(&key) {
            *count += 1;
            return;
        }
        let key = if self.counts.len() < MAX_BREAKDOWN_KEYS {
            key
        } else {
            self.other
        };
        *self.counts.entry(key).or_insert(0) += 1;
    }

    fn sub(&mut self, key: K) {
        let key = if self.counts.contains_key(&key) {
            key
        } else {
            self.other
        };
        if let Some(count) = self.counts.get_mut(&key) {
            debug_assert!(
                *count > 0,
                "a node is taken out of the tally it was added to"
            );
            *count = count.saturating_sub(1);
        }
    }

    fn moved(&mut self, from: K, to: K) {
        if from != to {
            self.sub(from);
            self.add(to);
        }
    }

    /// The non-zero counts, largest first (then by name).
    fn view(&self, name: impl Fn(K) -> Cow<'static, str>) -> Named<usize> {
        let mut rows: Vec<(Cow<'static, str>, usize)> = self
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (name(*k), *n))
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Named(rows)
    }
}

/// A histogram of times to a stage over [`TIMING_BUCKETS`] fixed log-spaced buckets: adding and
/// taking out are O(1), a percentile is one pass over the buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timings {
    counts: [u32; TIMING_BUCKETS],
    total: u32,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            counts: [0; TIMING_BUCKETS],
            total: 0,
        }
    }
}

impl Timings {
    /// The bucket of `after`: the first whose upper bound is at least `after`.
    pub fn bucket(after: Duration) -> usize {
        let ms = after.as_secs_f64() * 1e3;
        if ms <= TIMING_FIRST_MS {
            return 0;
        }
        let k = ((ms / TIMING_FIRST_MS).log2() * TIMING_BUCKETS_PER_DOUBLING).ceil();
        // `as` saturates: a huge time lands in the last bucket.
        (k as usize).min(TIMING_BUCKETS - 1)
    }

    /// The upper bound of bucket `k`, in milliseconds.
    pub fn upper_ms(k: usize) -> u64 {
        (TIMING_FIRST_MS * (k as f64 / TIMING_BUCKETS_PER_DOUBLING).exp2()).round() as u64
    }

    pub fn add(&mut self, after: Duration) {
        self.counts[Timings::bucket(after)] += 1;
        self.total += 1;
    }

    pub fn sub(&mut self, after: Duration) {
        let count = &mut self.counts[Timings::bucket(after)];
        debug_assert!(
            *count > 0,
            "a time is taken out of the bucket it was added to"
        );
        *count = count.saturating_sub(1);
        self.total = self.total.saturating_sub(1);
    }

    /// The `q` quantile (0 < q ≤ 1) as its bucket's upper bound; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * f64::from(self.total)).ceil() as u32).clamp(1, self.total);
        let mut seen = 0;
        for (k, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Timings::upper_ms(k));
            }
        }
        Some(Timings::upper_ms(TIMING_BUCKETS - 1))
    }

    fn percentiles(&self) -> [Option<u64>; PERCENTILES.len()] {
        PERCENTILES.map(|q| self.quantile(q))
    }
}

/// One second of history.
#[derive(Debug, Clone, Copy, Default)]
struct Second {
    /// Seconds since the first event.
    at: u64,
    /// Boots that reached their overlay in this second.
    completed: u32,
    /// Nodes per slot at the end of the second.
    stages: [u32; SLOTS],
    /// Time to boot (to the overlay) at the [`PERCENTILES`] at the end of the second.
    boot_ms: [Option<u64>; PERCENTILES.len()],
}

/// The last [`HISTORY_SECONDS`] seconds, a ring indexed by second.
#[derive(Debug)]
struct History {
    /// The first event's time: second 0.
    epoch: Option<Instant>,
    /// The second the newest bucket covers.
    current: u64,
    /// When the second after `current` starts: before it, an event only compares two instants.
    next: Option<Instant>,
    seconds: Vec<Second>,
}

impl History {
    fn new() -> History {
        History {
            epoch: None,
            current: 0,
            next: None,
            seconds: vec![Second::default(); HISTORY_SECONDS],
        }
    }

    fn slot(&mut self, at: u64) -> &mut Second {
        &mut self.seconds[(at % HISTORY_SECONDS as u64) as usize]
    }

    /// Moves on to `now`'s second: the current bucket is closed with `closing` (the counts as
    /// they are before this instant's event), and so is every second without events since.
    /// O(1) but for the first event of a second, which fills at most [`HISTORY_SECONDS`].
    fn tick(&mut self, now: Instant, closing: impl FnOnce() -> Second) {
        if self.next.is_some_and(|next| now < next) {
            return;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let second = now.saturating_duration_since(epoch).as_secs();
        self.next = Some(epoch + Duration::from_secs(second + 1));
        if second <= self.current {
            return;
        }
        let closing = closing();
        let current = self.current;
        let last = self.slot(current);
        last.stages = closing.stages;
        last.boot_ms = closing.boot_ms;
        let first_gap = (current + 1).max(second.saturating_sub(HISTORY_SECONDS as u64 - 1));
        for at in first_gap..=second {
            *self.slot(at) = Second {
                at,
                completed: 0,
                stages: closing.stages,
                boot_ms: closing.boot_ms,
            };
        }
        self.current = second;
    }

    /// The seconds kept, oldest first; the current one with `live` counts.
    fn seconds(&self, live: Second) -> Vec<Second> {
        if self.epoch.is_none() {
            return Vec::new();
        }
        let first = self.current.saturating_sub(HISTORY_SECONDS as u64 - 1);
        (first..=self.current)
            .map(|at| {
                let kept = self.seconds[(at % HISTORY_SECONDS as u64) as usize];
                if at == self.current {
                    Second {
                        at,
                        completed: kept.completed,
                        stages: live.stages,
                        boot_ms: live.boot_ms,
                    }
                } else {
                    kept
                }
            })
            .collect()
    }
}

/// The aggregates of a node table.
#[derive(Debug)]
pub struct Summary {
    stages: [usize; SLOTS],
    arch: Tally<&'static str>,
    firmware: Tally<&'static str>,
    interface: Tally<&'static str>,
    rule: Tally<Option<RuleId>>,
    failures: Tally<&'static str>,
    failed: usize,
    /// Unfinished nodes before [`Summary::stuck_cursor`] in the tracker's order.
    pub stuck: usize,
    /// Nodes whose sequence number is below this have been silent for
    /// [`STUCK_AFTER`](super::STUCK_AFTER) (the tracker moves it on).
    pub stuck_cursor: u64,
    /// Boots that reached their overlay since start.
    completed: u64,
    /// Times to each stage, indexed by [`Stage`] (the DHCP one stays empty: it is the start).
    timings: [Timings; Stage::ALL.len()],
    history: History,
}

impl Default for Summary {
    fn default() -> Self {
        Summary::new()
    }
}

impl Summary {
    pub fn new() -> Summary {
        Summary {
            stages: [0; SLOTS],
            arch: Tally::new(OTHER),
            firmware: Tally::new(OTHER),
            interface: Tally::new(OTHER),
            rule: Tally::new(None),
            failures: Tally::new(OTHER),
            failed: 0,
            stuck: 0,
            stuck_cursor: 0,
            completed: 0,
            timings: Default::default(),
            history: History::new(),
        }
    }

    /// Nodes per slot.
    pub fn stages(&self) -> &[usize; SLOTS] {
        &self.stages
    }

    /// Closes the history up to `now`. Call before an event changes the counts.
    pub fn tick(&mut self, now: Instant) {
        let (stages, overlay) = (&self.stages, &self.timings[Stage::Overlay as usize]);
        self.history.tick(now, || Second {
            at: 0,
            completed: 0,
            stages: stages.map(|n| n as u32),
            boot_ms: overlay.percentiles(),
        });
    }

    /// A node came into the table.
    pub fn add(&mut self, keys: &Keys) {
        self.stages[keys.slot] += 1;
        self.arch.add(keys.arch);
        self.firmware.add(keys.firmware);
        self.interface.add(keys.interface);
        self.rule.add(keys.rule);
        if let Some(reason) = keys.failure {
            self.failed += 1;
            self.failures.add(reason);
        }
    }

    /// A node left the table.
    pub fn sub(&mut self, keys: &Keys) {
        self.stages[keys.slot] = self.stages[keys.slot].saturating_sub(1);
        self.arch.sub(keys.arch);
        self.firmware.sub(keys.firmware);
        self.interface.sub(keys.interface);
        self.rule.sub(keys.rule);
        if let Some(reason) = keys.failure {
            self.failed = self.failed.saturating_sub(1);
            self.failures.sub(reason);
        }
    }

    /// An event changed a node's keys: only the dimensions that changed move.
    #[inline]
    pub fn moved(&mut self, before: &Keys, after: &Keys) {
        if !before.same(after) {
            self.move_keys(before, after);
        }
    }

    fn move_keys(&mut self, before: &Keys, after: &Keys) {
        if before.slot != after.slot {
            self.stages[before.slot] = self.stages[before.slot].saturating_sub(1);
            self.stages[after.slot] += 1;
        }
        self.arch.moved(before.arch, after.arch);
        self.firmware.moved(before.firmware, after.firmware);
        self.interface.moved(before.interface, after.interface);
        self.rule.moved(before.rule, after.rule);
        if before.failure != after.failure {
            if let Some(reason) = before.failure {
                self.failed = self.failed.saturating_sub(1);
                self.failures.sub(reason);
            }
            if let Some(reason) = after.failure {
                self.failed += 1;
                self.failures.add(reason);
            }
        }
    }

    /// A node reached `stage` for the first time in its boot, `after` its first DHCP request.
    pub fn reached(&mut self, stage: Stage, after: Duration) {
        if stage == Stage::Dhcp {
            return;
        }
        self.timings[stage as usize].add(after);
        if stage == Stage::Overlay {
            self.completed += 1;
            let current = self.history.current;
            self.history.slot(current).completed += 1;
        }
    }

    /// A node's mark for `stage` went away (a new boot, or the node was forgotten).
    pub fn forgot(&mut self, stage: Stage, after: Duration) {
        if stage != Stage::Dhcp {
            self.timings[stage as usize].sub(after);
        }
    }

    /// Times to `stage`.
    pub fn timings(&self, stage: Stage) -> &Timings {
        &self.timings[stage as usize]
    }

    /// The view of `/api/summary`; `head` holds what the tracker knows, `unix_ms` turns an
    /// instant into wall-clock milliseconds, `rules` names rule numbers.
    pub fn view(
        &self,
        head: SummaryHead,
        rules: &RuleNames,
        unix_ms: impl Fn(Instant) -> u64,
    ) -> SummaryView {
        let slot_name = |slot: usize| {
            if slot == 0 {
                super::UNANSWERED
            } else {
                Stage::ALL[slot - 1].name()
            }
        };
        let stages = Named(
            (0..SLOTS)
                .map(|slot| (Cow::Borrowed(slot_name(slot)), self.stages[slot]))
                .collect(),
        );
        let live = Second {
            at: 0,
            completed: 0,
            stages: self.stages.map(|n| n as u32),
            boot_ms: self.timings[Stage::Overlay as usize].percentiles(),
        };
        let seconds = self.history.seconds(live);
        // Rates count whole seconds only: the current one is still filling.
        let closed = &seconds[..seconds.len().saturating_sub(1)];
        let rate = |window: u64| {
            let window = (window as usize).min(closed.len());
            if window == 0 {
                return 0.0;
            }
            let done: u64 = closed[closed.len() - window..]
                .iter()
                .map(|s| u64::from(s.completed))
                .sum();
            done as f64 / window as f64
        };
        let start_ms = match (self.history.epoch, seconds.first()) {
            (Some(epoch), Some(first)) => unix_ms(epoch + Duration::from_secs(first.at)),
            _ => 0,
        };
        let static_name = |k: &'static str| Cow::Borrowed(k);
        SummaryView {
            version: head.version,
            now_ms: head.now_ms,
            total: head.total,
            max_nodes: head.max_nodes,
            ttl_secs: head.ttl_secs,
            stuck_after_secs: super::STUCK_AFTER.as_secs(),
            stages,
            failed: self.failed,
            stuck: self.stuck,
            failures: self.failures.view(static_name),
            arch: self.arch.view(static_name),
            firmware: self.firmware.view(static_name),
            interface: self.interface.view(static_name),
            rule: self.rule.view(|id| Cow::Owned(rules.name(id).to_owned())),
            boots_completed: self.completed,
            boots_per_second: Rates {
                last_10s: rate(RATE_WINDOWS[0]),
                last_60s: rate(RATE_WINDOWS[1]),
                last_300s: rate(RATE_WINDOWS[2]),
            },
            time_to_stage: Named(
                Stage::ALL[1..]
                    .iter()
                    .map(|stage| {
                        let timings = &self.timings[*stage as usize];
                        let [p50_ms, p90_ms, p99_ms] = timings.percentiles();
                        (
                            Cow::Borrowed(stage.name()),
                            TimingView {
                                count: timings.total,
                                p50_ms,
                                p90_ms,
                                p99_ms,
                            },
                        )
                    })
                    .collect(),
            ),
            history: HistoryView {
                start_ms,
                step_ms: 1000,
                completed: seconds.iter().map(|s| s.completed).collect(),
                stages: Named(
                    (0..SLOTS)
                        .map(|slot| {
                            (
                                Cow::Borrowed(slot_name(slot)),
                                seconds.iter().map(|s| s.stages[slot]).collect(),
                            )
                        })
                        .collect(),
                ),
                time_to_boot_ms: Named(
                    ["p50", "p90", "p99"]
                        .iter()
                        .enumerate()
                        .map(|(i, name)| {
                            (
                                Cow::Borrowed(*name),
                                seconds.iter().map(|s| s.boot_ms[i]).collect(),
                            )
                        })
                        .collect(),
                ),
            },
        }
    }
}

/// What the tracker adds to a summary.
#[derive(Debug, Clone, Copy)]
pub struct SummaryHead {
    pub version: u64,
    pub now_ms: u64,
    pub total: usize,
    pub max_nodes: usize,
    pub ttl_secs: u64,
}

/// Named values, serialized as a JSON object in this order.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<T>(pub Vec<(Cow<'static, str>, T)>);

impl<T> Named<T> {
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for Named<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// `/api/summary` (README, "Observing"). Counts are nodes in the table now, except
/// `boots_completed` and the rates, which count events since the daemon started.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryView {
    /// The node table's version: equal versions, equal table.
    pub version: u64,
    pub now_ms: u64,
    /// Nodes tracked.
    pub total: usize,
    pub max_nodes: usize,
    pub ttl_secs: u64,
    /// How long an unfinished node must be silent to count as stuck.
    pub stuck_after_secs: u64,
    /// Nodes by the furthest stage of their current boot (`unanswered`, then the stages in
    /// order): they add up to `total`.
    pub stages: Named<usize>,
    /// Nodes whose last event was a failure.
    pub failed: usize,
    /// Nodes short of their overlay and silent for `stuck_after_secs`.
    pub stuck: usize,
    /// `failed` by reason, largest first: a DHCP reason (`loader_missing`, `no_rule`, …) or
    /// `<protocol>_<what>` for a download (`tftp_loader`, `http_kernel`, …).
    pub failures: Named<usize>,
    pub arch: Named<usize>,
    pub firmware: Named<usize>,
    pub interface: Named<usize>,
    /// By the rule of the boot's last DHCP decision (`unknown`: none decided).
    pub rule: Named<usize>,
    /// Boots that reached their overlay since the daemon started.
    pub boots_completed: u64,
    pub boots_per_second: Rates,
    /// From the boot's first DHCP request to each later stage, over the boots in the table.
    pub time_to_stage: Named<TimingView>,
    pub history: HistoryView,
}

/// Boots completed per second, averaged over the last whole seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    pub last_10s: f64,
    pub last_60s: f64,
    pub last_300s: f64,
}

/// Percentiles of a time to stage, each the upper bound of its histogram bucket (within 19 %);
/// `null` when no boot reached the stage.
#[derive(Debug, Clone, Serialize)]
pub struct TimingView {
    pub count: u32,
    pub p50_ms: Option<u64>,
    pub p90_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

/// The last seconds, oldest first, one value per second from `start_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    pub start_ms: u64,
    pub step_ms: u64,
    pub completed: Vec<u32>,
    /// Nodes per stage at the end of each second.
    pub stages: Named<Vec<u32>>,
    /// Time to boot (to the overlay) at p50, p90, p99 at the end of each second.
    pub time_to_boot_ms: Named<Vec<Option<u64>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_lands_in_the_first_bucket_whose_bound_holds_it() {
        assert_eq!(Timings::bucket(Duration::ZERO), 0);
        assert_eq!(Timings::bucket(Duration::from_millis(10)), 0);
        assert_eq!(Timings::bucket(Duration::from_millis(11)), 1);
        assert_eq!(Timings::bucket(Duration::from_millis(20)), 4);
        assert_eq!(
            Timings::bucket(Duration::from_secs(86_400)),
            TIMING_BUCKETS - 1
        );
        for ms in [1u64, 15, 99, 1234, 60_000, 3_600_000] {
            let k = Timings::bucket(Duration::from_millis(ms));
            assert!(
                Timings::upper_ms(k) as f64 >= ms as f64 * 0.999,
                "{ms} ms in {k}"
            );
            if k > 0 {
                assert!(Timings::upper_ms(k - 1) < ms, "{ms} ms in {k}");
            }
        }
    }

    #[test]
    fn percentiles_come_from_the_bucket_bounds_and_forget_what_is_taken_out() {
        let mut t = Timings::default();
        assert_eq!(t.quantile(0.5), None);
        for ms in 1..=100u64 {
            t.add(Duration::from_millis(ms * 10));
        }
        let p50 = t.quantile(0.5).unwrap();
        assert!((500..=600).contains(&p50), "{p50}");
        let p99 = t.quantile(0.99).unwrap();
        assert!((990..=1190).contains(&p99), "{p99}");
        for ms in 1..=100u64 {
            t.sub(Duration::from_millis(ms * 10));
        }
        assert_eq!(t.quantile(0.5), None);
        assert!(t.counts.iter().all(|c| *c == 0));
    }

    #[test]
    fn a_tally_counts_values_past_its_bound_as_other() {
        let mut tally = Tally::new(OTHER);
        let names: Vec<&'static str> = (0..MAX_BREAKDOWN_KEYS + 5)
            .map(|i| &*Box::leak(format!("eth{i}").into_boxed_str()))
            .collect();
        for name in &names {
            tally.add(*name);
        }
        assert!(tally.counts.len() <= MAX_BREAKDOWN_KEYS + 1);
        assert_eq!(tally.counts[OTHER], 5);
        for name in &names {
            tally.sub(*name);
        }
        assert!(tally.counts.values().all(|n| *n == 0));
    }

    #[test]
    fn rule_names_are_bounded() {
        let mut rules = RuleNames::default();
        let a = rules.id("uefi");
        assert_eq!(rules.id("uefi"), a);
        assert_eq!(rules.name(Some(a)), "uefi");
        assert_eq!(rules.name(None), UNKNOWN);
        for i in 0..2 * MAX_RULES {
            rules.id(&format!("rule{i}"));
        }
        assert!(rules.names.len() <= MAX_RULES);
        let late = rules.id("late");
        assert_eq!(rules.name(Some(late)), OTHER);
    }

    #[test]
    fn history_closes_quiet_seconds_with_the_counts_of_their_end() {
        let t0 = Instant::now();
        let mut summary = Summary::new();
        let keys = Keys {
            slot: 1,
            arch: "bios",
            firmware: "bios-pxe",
            interface: "eth0",
            rule: None,
            failure: None,
        };
        summary.tick(t0);
        summary.add(&keys);
        // Three quiet seconds, then a boot completes in second 4.
        let t4 = t0 + Duration::from_millis(4500);
        summary.tick(t4);
        summary.moved(
            &keys,
            &Keys {
                slot: DONE_SLOT,
                ..keys
            },
        );
        summary.reached(Stage::Overlay, Duration::from_secs(4));
        let live = Second {
            at: 0,
            completed: 0,
            stages: summary.stages.map(|n| n as u32),
            boot_ms: [None; 3],
        };
        let seconds = summary.history.seconds(live);
        assert_eq!(seconds.len(), 5);
        assert_eq!(
            seconds[0].stages[1], 1,
            "second 0 ended with the node at DHCP"
        );
        assert_eq!(seconds[3].stages[1], 1);
        assert_eq!(seconds[4].stages[DONE_SLOT], 1);
        assert_eq!(seconds[4].completed, 1);
        // Far later: the ring keeps HISTORY_SECONDS.
        summary.tick(t0 + Duration::from_secs(10_000));
        assert_eq!(summary.history.seconds(live).len(), HISTORY_SECONDS);
    }
}
