//! Threshold alerts as the ledger keeps them (docs/alerts.md): queued by
//! the debit that crosses a threshold, in the same atomic step, and handed
//! to the alert senders one claim at a time.
//!
//! Both backends keep the same queue: per account, alerts numbered from 1,
//! each `pending` (due at `next_ms`, or leased to a sender until then) or
//! `failed` (given up on; kept until `next_ms` for the admin list).

use std::time::Duration;

/// Millionths: a threshold of `PPM` is the whole allowance.
pub const PPM: u64 = 1_000_000;

/// How long an alert given up on stays listed (`state=failed`).
pub const FAILED_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Alerts queued per account at most; a crossing beyond it queues nothing
/// (a receiver down for long, an account bouncing around a threshold).
pub const MAX_QUEUED_PER_ACCOUNT: usize = 1000;

/// The wait before attempt `attempts + 1` after `attempts` failed ones:
/// `base`, doubled each time, at most [`MAX_RETRY_WAIT`].
pub fn retry_wait(base: Duration, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(MAX_RETRY_WAIT)
}

/// The longest wait between two attempts.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);

/// A threshold's level in credits: `ceil(ppm × allowance / 10^6)` (the
/// scripts compute the same, exactly).
pub fn level(ppm: u32, allowance: u64) -> u64 {
    let product = u128::from(ppm) * u128::from(allowance);
    u64::try_from(product.div_ceil(u128::from(PPM))).unwrap_or(u64::MAX)
}

/// The thresholds a change of `used` from `before` to `after` crosses
/// (`before < level ≤ after`), in the order given.
pub fn crossed(
    thresholds: &[u32],
    allowance: u64,
    before: u64,
    after: u64,
) -> impl Iterator<Item = u32> + '_ {
    thresholds.iter().copied().filter(move |&ppm| {
        let level = level(ppm, allowance);
        before < level && level <= after
    })
}

/// The thresholds as the debit script reads them: `"800000,950000,1000000"`.
pub fn script_list(thresholds: &[u32]) -> String {
    let mut out = String::with_capacity(thresholds.len() * 8);
    for (index, ppm) in thresholds.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&ppm.to_string());
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Pending,
    Failed,
}

impl AlertState {
    pub fn label(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Failed => "failed",
        }
    }
}

/// One queued alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedAlert {
    pub account: String,
    /// Its number in the account's queue (from 1, never reused).
    pub number: u64,
    /// Millionths of the allowance.
    pub threshold_ppm: u32,
    /// The 30-day `used` right after the debit that crossed.
    pub used: u64,
    pub monthly_allowance: u64,
    pub available: u64,
    /// When the debit crossed (ledger clock, unix ms).
    pub at_ms: i64,
    pub state: AlertState,
    /// Delivery attempts started so far.
    pub attempts: u32,
    /// Pending: when the next attempt is due — while a sender holds it,
    /// when its lease ends (also the claim's token). Failed: when it is
    /// dropped from the list.
    pub next_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

impl QueuedAlert {
    /// Unique across accounts and time: receivers deduplicate by it.
    pub fn event_id(&self) -> String {
        format!("{}:{}:{}", self.account, self.at_ms, self.number)
    }

    /// The threshold as the config writes it (`0.8`).
    pub fn threshold(&self) -> f64 {
        f64::from(self.threshold_ppm) / PPM as f64
    }
}

/// What a claim took: alerts now leased to the caller until their
/// `next_ms`, and when the account's queue next needs a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub alerts: Vec<QueuedAlert>,
    /// The earliest `next_ms` left in the queue (pending or failed, the
    /// claimed ones included); `None` when the queue is empty.
    pub next_due_ms: Option<i64>,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx: the alert leaves the queue.
    Delivered,
    /// Try again after `wait`, unless `retry_for` has passed since the
    /// crossing: then the alert is marked failed.
    Failed {
        wait: Duration,
        retry_for: Duration,
        error: String,
    },
}

/// What an [`Attempt`] did to the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    WillRetry,
    GaveUp,
    /// The alert was gone, or another sender holds it now (the lease ran
    /// out): nothing changed.
    NotHeld,
}

/// The result of [`Settled`] and when the account's queue next needs a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub settled: Settled,
    pub next_due_ms: Option<i64>,
}

/// A page of the admin list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertList {
    /// Oldest crossing first.
    pub items: Vec<QueuedAlert>,
    /// More alerts matched than the limit.
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_up_and_are_exact_at_the_bound() {
        assert_eq!(level(800_000, 10_000), 8_000);
        assert_eq!(level(950_000, 10_000), 9_500);
        assert_eq!(level(PPM as u32, 10_000), 10_000);
        assert_eq!(level(800_000, 7), 6); // 5.6 → 6
        assert_eq!(level(1, 1), 1);
        assert_eq!(level(999_999, 1_000_000_000_000_000), 999_999_000_000_000);
        assert_eq!(level(333_333, 1_000_000_000_000_001), 333_333_000_000_001);
        assert_eq!(level(800_000, 0), 0);
    }

    #[test]
    fn a_change_crosses_the_levels_between() {
        let t = [800_000, 950_000, 1_000_000];
        assert_eq!(crossed(&t, 100, 79, 80).collect::<Vec<_>>(), [800_000]);
        assert_eq!(crossed(&t, 100, 80, 94).count(), 0);
        assert_eq!(crossed(&t, 100, 0, 100).count(), 3);
        assert_eq!(crossed(&t, 100, 96, 120).collect::<Vec<_>>(), [1_000_000]);
        assert_eq!(crossed(&t, 0, 0, 5).count(), 0);
    }

    #[test]
    fn waits_double_up_to_five_minutes() {
        let base = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=11).map(|n| retry_wait(base, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_wait(base, 100), MAX_RETRY_WAIT);
    }

    #[test]
    fn the_script_list_is_comma_separated() {
        assert_eq!(script_list(&[800_000, 1_000_000]), "800000,1000000");
        assert_eq!(script_list(&[]), "");
    }
}
