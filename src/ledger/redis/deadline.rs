//! Deadlines on the Redis clock, so a debit that Redis runs after the
//! gateway gave up on it records nothing.
//!
//! A frozen Redis (SIGSTOP, a long fork, a slow script) still holds the
//! debits queued on its socket; when it wakes it would run them, charging
//! requests the gateway already answered with 503. So each debit carries a
//! deadline on the Redis clock — half the call timeout after it was sent —
//! past which the script refuses (`X` in `lua/debit.lua`). The Redis clock is
//! estimated from the `TIME` every debit reply carries (offset error ≤ half a
//! round trip). What remains is a script that ran in time but whose reply was
//! held up for more than half the timeout: a Redis stall between running a
//! script and writing its reply.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};

/// Sent when the clocks have not been compared yet: the script then applies
/// no deadline.
pub(super) const NO_DEADLINE: i64 = 0;

pub(super) struct DebitDeadline {
    /// Redis clock minus local clock, in ms; `i64::MIN` until first observed.
    offset_ms: AtomicI64,
    budget_ms: i64,
}

impl DebitDeadline {
    pub(super) fn new(timeout: Duration) -> DebitDeadline {
        DebitDeadline {
            offset_ms: AtomicI64::new(i64::MIN),
            budget_ms: i64::try_from(timeout.as_millis() / 2)
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }

    /// The local clock, unix ms (the only local time this module reads).
    pub(super) fn local_now(&self) -> i64 {
        SystemClock.now_ms()
    }

    /// The deadline for a call sent now, on the Redis clock;
    /// [`NO_DEADLINE`] before the clocks were compared once.
    pub(super) fn for_call_sent_now(&self) -> i64 {
        match self.offset_ms.load(Ordering::Relaxed) {
            i64::MIN => NO_DEADLINE,
            offset => self.local_now() + offset + self.budget_ms,
        }
    }

    /// The earliest Redis time a debit with this deadline can have been
    /// recorded at: it was sent `budget` before its deadline, by a clock
    /// estimate off by at most half a round trip of a call that did not
    /// time out (so less than the budget). Four budgets and a second leave
    /// room for a clock step besides.
    pub(super) fn earliest_record(&self, deadline_ms: i64) -> i64 {
        deadline_ms - 4 * self.budget_ms - 1000
    }

    /// Records the Redis clock a reply carried, for a call sent at `sent_local`.
    pub(super) fn observe(&self, sent_local: i64, redis_now: i64) {
        let received_local = self.local_now();
        let midpoint = sent_local + (received_local - sent_local) / 2;
        self.offset_ms
            .store(redis_now - midpoint, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_deadline_until_the_clocks_were_compared() {
        let deadline = DebitDeadline::new(Duration::from_millis(250));
        assert_eq!(deadline.for_call_sent_now(), NO_DEADLINE);
        // Redis runs 10 s ahead of this host. The bounds below follow from
        // the readings taken around each step, whatever the host's load.
        let t0 = deadline.local_now();
        deadline.observe(t0, t0 + 10_000);
        let t1 = deadline.local_now();
        let sent = deadline.for_call_sent_now();
        let t2 = deadline.local_now();
        let budget = 125;
        let lowest = t1 + 10_000 - (t1 - t0) / 2 - 1 + budget;
        let highest = t2 + 10_000 + budget;
        assert!(
            (lowest..=highest).contains(&sent),
            "{sent} not in {lowest}..={highest}"
        );
    }
}
