//! What the usage report and the account list read from the ledger
//! (docs/ledger.md, "Usage aggregates" and "The account index").
//!
//! Both backends keep, per account, the credits and debits that count by
//! UTC day and route, and the credits by the UTC day on which they leave the
//! window — updated by the same atomic steps that debit, refund, settle and
//! expire — so a report reads a few hundred numbers whatever the number of
//! debits, and its parts always add up to `used`.

use super::AccountRecord;

/// Milliseconds in a UTC day (no leap seconds in unix time).
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day of a unix-ms instant, counted from 1970-01-01 (day 0).
pub fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The debits of one route made on one UTC day that still count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCell {
    /// [`utc_day`] of the debits' `at`.
    pub day: i64,
    pub route: String,
    pub credits: u64,
    /// How many debits (a debit settled to 0 credits is still one).
    pub requests: u64,
}

/// Credits that leave the window on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCredits {
    pub day: i64,
    pub credits: u64,
}

/// Why a read had to rebuild an account's aggregates from its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuilt {
    /// None were kept: an account from before the aggregates, or a window
    /// length changed since they were built.
    NotKept,
    /// They did not add up to `used` (a refund on a damaged account leaves
    /// them for the recount).
    Disagreed,
}

/// An account's window and where its credits went, as of one instant.
/// `Σ spent.credits == used + from_grants` (the debits' whole costs) and
/// `Σ returning.credits == used` (only the allowance part comes back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub account: AccountRecord,
    /// `None` when the plan is not in the plan table.
    pub allowance: Option<u64>,
    pub used: u64,
    /// What prepaid grants paid of the debits counting in the window.
    pub from_grants: u64,
    /// The ledger clock's "now", unix milliseconds.
    pub now_ms: i64,
    pub window_ms: u64,
    /// Ordered by day, then route name.
    pub spent: Vec<UsageCell>,
    /// Soonest first; days with credits only.
    pub returning: Vec<DayCredits>,
    /// Set when this read rebuilt the aggregates (Redis only; worth a log line).
    pub rebuilt: Option<Rebuilt>,
}

/// One account of the account list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    pub id: String,
    pub account: AccountRecord,
    /// `None` when the plan is not in the plan table.
    pub allowance: Option<u64>,
    /// `None` when the account's stored totals are damaged (a recount
    /// repairs them); one damaged account does not fail the list.
    pub used: Option<u64>,
}

/// One page of the account list, in ascending id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPage {
    pub items: Vec<AccountSummary>,
    /// The last id of this page when more may follow (pass it as `after`).
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_and_floor_before_the_epoch() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(DAY_MS - 1), 0);
        assert_eq!(utc_day(DAY_MS), 1);
        assert_eq!(utc_day(-1), -1);
        // 2026-11-24T12:00:00Z is day 20781.
        assert_eq!(utc_day(1_795_521_600_000), 20_781);
    }
}
