//! A budget for per-request log lines. One line per answered request is what an operator wants
//! while a rack boots, but a flood of a million DISCOVERs must not become a million lines: the
//! formatting and writing would cost more than the answers, and the journal would lose the
//! lines that matter. Past the budget, lines are counted instead, and the next window starts
//! with one line saying how many were left out (the kernel's printk ratelimit does the same).
//! The counters in `/metrics` and `xdpboot stats` still count every request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per-request lines allowed per window, and the window.
pub const LINES_PER_WINDOW: u32 = 200;
pub const WINDOW: Duration = Duration::from_secs(1);

/// The budget; shared by every task that logs requests.
#[derive(Debug)]
pub struct LogBudget {
    limit: u32,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    started: Instant,
    used: u32,
    suppressed: u64,
}

/// What the caller may do with one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it.
    Log,
    /// Log it, after a line saying this many were left out since the last one logged.
    LogAfterSuppressed(u64),
    /// Leave it out (counted).
    Suppress,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget::new(LINES_PER_WINDOW, WINDOW)
    }
}

impl LogBudget {
    pub fn new(limit: u32, window: Duration) -> LogBudget {
        LogBudget {
            limit,
            window,
            state: Mutex::new(State {
                started: Instant::now(),
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// Takes one line from the budget at `now`.
    pub fn take(&self, now: Instant) -> Verdict {
        // A poisoned lock only means another thread panicked while counting: the counts are
        // still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(state.started) >= self.window {
            state.started = now;
            state.used = 0;
        }
        if state.used >= self.limit {
            state.suppressed += 1;
            return Verdict::Suppress;
        }
        state.used += 1;
        match std::mem::take(&mut state.suppressed) {
            0 => Verdict::Log,
            n => Verdict::LogAfterSuppressed(n),
        }
    }

    /// [`take`](Self::take) now, logging the "left out" line itself; true if the caller logs.
    pub fn allow(&self) -> bool {
        match self.take(Instant::now()) {
            Verdict::Log => true,
            Verdict::LogAfterSuppressed(n) => {
                tracing::warn!(
                    suppressed = n,
                    limit = self.limit,
                    "per-request log lines over the budget were left out; /metrics counts every request"
                );
                true
            }
            Verdict::Suppress => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_budget_are_counted_and_reported_in_the_next_window() {
        let budget = LogBudget::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..5).map(|_| budget.take(t0)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Log,
                Verdict::Log,
                Verdict::Log,
                Verdict::Suppress,
                Verdict::Suppress
            ]
        );
        // Still in the same window: still suppressed.
        assert_eq!(
            budget.take(t0 + Duration::from_millis(999)),
            Verdict::Suppress
        );
        // A new window: the first line reports the three left out, then the count restarts.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(budget.take(t1), Verdict::LogAfterSuppressed(3));
        assert_eq!(budget.take(t1), Verdict::Log);
    }
}
