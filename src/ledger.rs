//! The credit ledger: the contract both backends keep (docs/ledger.md).
//!
//! A debit `(account, at, cost, route, request_id)` counts at time `T` iff
//! `at > T - window`. [`Ledger::debit`] checks and records in one atomic step;
//! a rejected debit records nothing. Accounts and API keys live in the same
//! store, so one backend holds everything an instance needs.
//!
//! Backends: [`memory::MemoryLedger`] (in-process, one instance) and
//! [`redis::RedisLedger`] (shared by every instance; Lua scripts read Redis
//! `TIME`). `ledger/keys.rs` is the only place that spells a Redis key;
//! [`bounds`] holds the numeric range both backends keep.
//!
//! [`Ledger`] dispatches to a backend (the conformance suite runs on it);
//! [`MeteredLedger`] is what the gateway holds: the same calls, each timed
//! and counted under a static [`LedgerOp`] label, so no call site times a
//! ledger call itself.

pub mod alerts;
pub mod bounds;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod usage;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::Metrics;

/// Plan name → monthly allowance, as configured.
pub type PlanTable = BTreeMap<String, u64>;

/// One extra (shorter) sliding window of a plan: at most `credits` spent
/// within any `window_ms` (docs/ledger.md, "Extra windows").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowLimit {
    /// The window as the config writes it (`"1d"`): the 429's `limit` and
    /// the `RateLimit` entry's name (`credits-1d`).
    pub name: String,
    pub window_ms: u64,
    pub credits: u64,
}

/// Plan name → its extra windows, in config order (plans without any may be
/// absent).
pub type LimitTable = BTreeMap<String, Vec<WindowLimit>>;

/// No plan has extra windows.
pub static NO_LIMITS: LimitTable = BTreeMap::new();

/// The extra windows as the scripts take them: `<ms>:<credits>,…`.
pub fn limits_spec(limits: Option<&Vec<WindowLimit>>) -> String {
    let mut spec = String::new();
    for limit in limits.into_iter().flatten() {
        if !spec.is_empty() {
            spec.push(',');
        }
        spec.push_str(&format!("{}:{}", limit.window_ms, limit.credits));
    }
    spec
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountRecord {
    pub plan: String,
    pub suspended: bool,
}

/// Who an API key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub account_id: String,
    pub key_id: String,
    /// The stored SHA-256 digest (compared in constant time by the caller).
    pub digest: [u8; 32],
    pub account: AccountRecord,
}

/// One debit to check and record.
#[derive(Debug, Clone, Copy)]
pub struct Debit<'a> {
    pub account: &'a str,
    /// Preferred id of the debit (the request id).
    pub request_id: &'a str,
    /// The gateway made `request_id` up (64 random bits, never seen before),
    /// so the ledger need not check it against earlier debits' ids; a
    /// client's id is checked.
    pub request_id_generated: bool,
    /// Used instead when `request_id` is already in this account's ledger
    /// (a client reusing an `X-Request-Id`), so every debit stays unique.
    pub fallback_request_id: &'a str,
    pub route: &'a str,
    pub cost: u64,
    pub plans: &'a PlanTable,
    /// Alert thresholds in millionths of the allowance, ascending
    /// (`alerts.thresholds`; empty: none). A debit that takes `used` across
    /// one queues an alert in the same atomic step (docs/alerts.md).
    pub alert_thresholds: &'a [u32],
    /// The plans' extra windows.
    pub limits: &'a LimitTable,
}

/// The window as seen right after an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowState {
    pub plan: String,
    pub allowance: u64,
    /// Credits counted in the window (after this debit, when admitted).
    pub used: u64,
    /// Milliseconds until the oldest counted debit leaves the window; `None`
    /// when nothing is in the window.
    pub next_release_in_ms: Option<u64>,
    /// Credits left in the account's live prepaid grants.
    pub grants: u64,
    /// The plan's extra windows, in config order.
    pub limits: Vec<LimitUse>,
}

/// One extra window as seen right after an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitUse {
    /// As the config writes it (`"1d"`).
    pub name: String,
    pub window_ms: u64,
    pub credits: u64,
    /// Credits counted in this window (every debit's whole cost).
    pub used: u64,
    /// Milliseconds until its oldest counted debit leaves it.
    pub next_release_in_ms: Option<u64>,
}

impl LimitUse {
    pub fn available(&self) -> u64 {
        self.credits.saturating_sub(self.used)
    }
}

impl WindowState {
    /// What the next request could spend now: the 30-day window's share
    /// with the grants added, and no more than any extra window leaves.
    pub fn available(&self) -> u64 {
        let mut available = self.allowance.saturating_sub(self.used) + self.grants;
        for limit in &self.limits {
            available = available.min(limit.available());
        }
        available
    }

    /// Pairs the script's per-window figures with the plan's windows.
    pub fn limit_uses(
        limits: Option<&Vec<WindowLimit>>,
        figures: impl IntoIterator<Item = (u64, Option<u64>)>,
    ) -> Vec<LimitUse> {
        limits
            .into_iter()
            .flatten()
            .zip(figures)
            .map(|(limit, (used, next_release_in_ms))| LimitUse {
                name: limit.name.clone(),
                window_ms: limit.window_ms,
                credits: limit.credits,
                used,
                next_release_in_ms,
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebitOutcome {
    Admitted {
        /// The id the debit was recorded under (`request_id` or the fallback).
        request_id: String,
        /// When it was recorded (ledger clock, unix ms): lets a refund or a
        /// settlement find the debit without a search.
        at_ms: i64,
        window: WindowState,
        /// The part of the cost prepaid grants paid; the rest counts in
        /// `window.used`.
        from_grants: u64,
    },
    /// Not enough credits; nothing recorded.
    Rejected {
        window: WindowState,
        /// Milliseconds until enough debits have left every window for this
        /// cost to fit; `None` when the cost exceeds a whole window.
        retry_after_ms: Option<u64>,
        /// The window that decides: `None` for the 30-day one, else the
        /// position in `window.limits` of the extra window that refused
        /// (the one that frees last).
        limit: Option<usize>,
    },
    NoAccount,
    Suspended,
    /// The account's plan is not in the plan table.
    UnknownPlan(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundOutcome {
    Refunded,
    AlreadyRefunded,
    Unknown,
}

/// What a settlement needs to queue the alerts it crosses (docs/alerts.md):
/// the thresholds, and the plan table to find the account's allowance.
#[derive(Debug, Clone, Copy)]
pub struct SettleAlerts<'a> {
    pub thresholds: &'a [u32],
    pub plans: &'a PlanTable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOutcome {
    /// The debit now costs the settled amount; `used` is the window's total after.
    Settled {
        used: u64,
    },
    /// The debit was refunded meanwhile; nothing changes.
    Refunded,
    Unknown,
}

/// When the oldest counted debit(s) leave the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Unix milliseconds at which they stop counting.
    pub at_ms: i64,
    /// Sum of the costs of the debits leaving at that instant.
    pub credits: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub account: AccountRecord,
    /// `None` when the plan is not in the plan table.
    pub allowance: Option<u64>,
    pub used: u64,
    /// The ledger clock's "now", unix milliseconds.
    pub now_ms: i64,
    pub window_ms: u64,
    /// When the oldest counting debit leaves, and the allowance credits
    /// that come back then.
    pub next_release: Option<Release>,
    /// The plan's extra windows (`next_release_in_ms` relative to `now_ms`).
    pub limits: Vec<LimitUse>,
    /// The live grants with credits left, in spending order.
    pub grants: Vec<GrantBalance>,
}

impl Balance {
    /// What the next request could spend now (see [`WindowState::available`]).
    pub fn available(&self) -> Option<u64> {
        let allowance = self.allowance?;
        let mut available = allowance.saturating_sub(self.used)
            + self.grants.iter().map(|g| g.remaining).sum::<u64>();
        for limit in &self.limits {
            available = available.min(limit.available());
        }
        Some(available)
    }
}

/// A live grant as `/v1/credits` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantBalance {
    pub grant_id: String,
    pub remaining: u64,
    /// Unix ms; `None` = never.
    pub expires_at_ms: Option<i64>,
}

/// A prepaid grant as stored (docs/ledger.md, "Prepaid grants").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `g<number>`: numbered per account, never reused.
    pub grant_id: String,
    pub credits: u64,
    /// What is left to spend (as of its expiry or void, for those).
    pub remaining: u64,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub note: String,
    pub voided: bool,
}

/// An account's grants as of the ledger's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantList {
    pub now_ms: i64,
    /// In spending order (soonest expiry first, never-expiring last, then oldest).
    pub grants: Vec<Grant>,
}

/// A grant to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    pub credits: u64,
    pub expires_at_ms: Option<i64>,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantCreated {
    Created(Grant),
    NoAccount,
    /// `expires_at` is not after the ledger's now.
    AlreadyExpired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantVoided {
    /// The credits it still held (0 when expired or voided before).
    Voided(u64),
    Unknown,
    NoAccount,
}

/// The grant id for a grant number, and back.
pub fn grant_id(number: u64) -> String {
    format!("g{number}")
}

/// The number of a grant id (`g17` → 17); `None` when it is not one.
pub fn grant_number(grant_id: &str) -> Option<u64> {
    let digits = grant_id.strip_prefix('g')?;
    if digits.is_empty() || digits.len() > 15 || digits.starts_with('0') {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    pub at_ms: i64,
    pub route: String,
    pub cost: u64,
    pub request_id: String,
    pub refunded: bool,
    /// What the allowance paid of `cost`, and what grants paid.
    pub from_allowance: u64,
    pub from_grants: u64,
}

/// Position after which (older than) the next page starts. Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryCursor {
    pub at_ms: i64,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Newest first.
    pub items: Vec<HistoryItem>,
    pub next: Option<HistoryCursor>,
}

/// What an admin recount found and wrote (docs/ledger.md, "Bounds and repair").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recount {
    /// What the stored totals said as of now, or the stored value verbatim
    /// when it was not a valid total (that is why one recounts).
    pub previous_used: String,
    /// The total now stored: the costs of the debits counting in the window.
    pub used: u64,
    /// Debits counting in the window.
    pub counted: u64,
    /// Debits whose own cost was above [`bounds::MAX_CREDITS`]: they could
    /// not be counted exactly, so they are marked refunded (history keeps them).
    pub voided: u64,
    /// Whether the stored totals disagreed with the debits (damaged, or
    /// wrong): `false` on a healthy account.
    pub changed: bool,
}

/// A debit call that failed after it may have reached the ledger (its reply
/// timed out, the connection broke, the reply was garbled): the debit may
/// have been recorded although the gateway answers as if it was not. What
/// is needed to find it and take it back ([`Ledger::void_unconfirmed`]).
///
/// Every debit the Redis ledger sends carries a deadline on the Redis clock
/// past which the script records nothing, so once Redis's clock has passed
/// `deadline_ms` the debit either stands, recorded at a time within
/// `from_ms..=deadline_ms`, or never will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnconfirmedDebit {
    pub account: String,
    pub request_id: String,
    /// The id the debit is recorded under when `request_id` was taken.
    pub fallback_request_id: String,
    /// On the ledger's clock, unix ms: no earlier than the debit could be recorded.
    pub from_ms: i64,
    /// On the ledger's clock, unix ms: the debit's deadline.
    pub deadline_ms: i64,
}

/// What [`Ledger::void_unconfirmed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoidOutcome {
    /// The debit had been recorded; it is refunded now.
    Voided,
    /// No debit was recorded, and none can be any more.
    Absent,
    /// The debit's deadline has not passed on the ledger's clock yet: it may
    /// still be recorded. Ask again later.
    TooEarly,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger call timed out")]
    Timeout,
    /// A debit failed in a way that may have left it recorded; the caller
    /// answers as for any outage and voids it in the background.
    #[error("{error} (the debit may have been recorded; it is voided in the background)")]
    Unconfirmed {
        error: Box<LedgerError>,
        debit: Arc<UnconfirmedDebit>,
    },
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    #[error("ledger returned an unexpected reply: {0}")]
    Protocol(String),
    /// An account's stored totals cannot be trusted; nothing was done. Not an
    /// outage: it lasts until an operator recounts the account.
    #[error("ledger inconsistent: {0}")]
    Inconsistent(String),
    /// A value the ledger cannot hold exactly was refused; nothing was written.
    #[error("ledger refused an out-of-range value: {0}")]
    OutOfRange(String),
}

impl LedgerError {
    /// Whether the ledger could not be reached or answered (what
    /// `ledger.on_unavailable` is about), as opposed to a refusal that
    /// retrying or forwarding unmetered must not paper over.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            LedgerError::Timeout
                | LedgerError::Unavailable(_)
                | LedgerError::Protocol(_)
                | LedgerError::Unconfirmed { .. }
        )
    }

    /// The debit a failed [`Ledger::debit`] may have left recorded.
    pub fn unconfirmed_debit(&self) -> Option<&Arc<UnconfirmedDebit>> {
        match self {
            LedgerError::Unconfirmed { debit, .. } => Some(debit),
            _ => None,
        }
    }
}

/// The ledger an instance uses. An enum rather than a trait object: two
/// backends, static dispatch, one conformance suite over both.
#[derive(Clone)]
pub enum Ledger {
    Memory(Arc<memory::MemoryLedger>),
    Redis(Arc<redis::RedisLedger>),
}

macro_rules! dispatch {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            Ledger::Memory($l) => $e,
            Ledger::Redis($l) => $e,
        }
    };
}

impl Ledger {
    pub fn backend_name(&self) -> &'static str {
        match self {
            Ledger::Memory(_) => "memory",
            Ledger::Redis(_) => "redis",
        }
    }

    /// A cost above the allowance (any cost above [`bounds::MAX_CREDITS`]
    /// is) is rejected with no retry time; a plan table with an allowance
    /// above the bound is refused with [`LedgerError::OutOfRange`].
    pub async fn debit(&self, debit: &Debit<'_>) -> Result<DebitOutcome, LedgerError> {
        dispatch!(self, l => l.debit(debit).await)
    }

    /// Removes one debit from the window; history keeps it, marked refunded.
    pub async fn refund(
        &self,
        account: &str,
        request_id: &str,
    ) -> Result<RefundOutcome, LedgerError> {
        dispatch!(self, l => l.refund(account, request_id, None).await)
    }

    /// [`Ledger::refund`] for a debit this instance just made: `at_ms` from
    /// its [`DebitOutcome::Admitted`] saves a search.
    pub async fn refund_debit(
        &self,
        account: &str,
        request_id: &str,
        at_ms: i64,
    ) -> Result<RefundOutcome, LedgerError> {
        dispatch!(self, l => l.refund(account, request_id, Some(at_ms)).await)
    }

    /// Takes back the debit a failed [`Ledger::debit`] may have recorded
    /// (see [`UnconfirmedDebit`]). Only the Redis ledger's calls can fail
    /// that way; the memory ledger records in-process or not at all.
    pub async fn void_unconfirmed(
        &self,
        debit: &UnconfirmedDebit,
    ) -> Result<VoidOutcome, LedgerError> {
        match self {
            Ledger::Memory(_) => Ok(VoidOutcome::Absent),
            Ledger::Redis(l) => l.void_unconfirmed(debit).await,
        }
    }

    /// Replaces a debit's cost (a reservation) by its settled cost, which
    /// may take `used` above the allowance (the work was done). Refused with
    /// [`LedgerError::OutOfRange`], nothing written, when the cost or the new
    /// total would be above [`bounds::MAX_CREDITS`].
    pub async fn settle(
        &self,
        account: &str,
        request_id: &str,
        at_ms: Option<i64>,
        final_cost: u64,
    ) -> Result<SettleOutcome, LedgerError> {
        dispatch!(self, l => l.settle(account, request_id, at_ms, final_cost, None).await)
            .map(|(outcome, _)| outcome)
    }

    /// [`Ledger::settle`] that also queues the threshold alerts a settlement
    /// above its reservation crosses, in the same atomic step; returns how
    /// many it queued.
    pub async fn settle_alerting(
        &self,
        account: &str,
        request_id: &str,
        at_ms: Option<i64>,
        final_cost: u64,
        alerts: &SettleAlerts<'_>,
    ) -> Result<(SettleOutcome, u64), LedgerError> {
        dispatch!(self, l => l.settle(account, request_id, at_ms, final_cost, Some(alerts)).await)
    }

    /// `Ok(None)` when the account does not exist.
    pub async fn balance(
        &self,
        account: &str,
        plans: &PlanTable,
        limits: &LimitTable,
    ) -> Result<Option<Balance>, LedgerError> {
        dispatch!(self, l => l.balance(account, plans, limits).await)
    }

    /// Adds a prepaid grant to an account; refused with
    /// [`LedgerError::OutOfRange`] when the live grants would hold more
    /// than [`bounds::MAX_CREDITS`].
    pub async fn create_grant(
        &self,
        account: &str,
        grant: &NewGrant,
    ) -> Result<GrantCreated, LedgerError> {
        dispatch!(self, l => l.create_grant(account, grant).await)
    }

    /// Every grant of the account (spent, expired and voided ones too), in
    /// spending order; `Ok(None)` when the account does not exist.
    pub async fn grants(&self, account: &str) -> Result<Option<GrantList>, LedgerError> {
        dispatch!(self, l => l.grants(account).await)
    }

    /// Voids what remains of a grant.
    pub async fn void_grant(&self, account: &str, number: u64) -> Result<GrantVoided, LedgerError> {
        dispatch!(self, l => l.void_grant(account, number).await)
    }

    pub async fn history(
        &self,
        account: &str,
        limit: usize,
        before: Option<&HistoryCursor>,
    ) -> Result<HistoryPage, LedgerError> {
        dispatch!(self, l => l.history(account, limit, before).await)
    }

    /// Creates or replaces an account; `Ok(true)` when it was created.
    pub async fn put_account(&self, id: &str, record: &AccountRecord) -> Result<bool, LedgerError> {
        dispatch!(self, l => l.put_account(id, record).await)
    }

    pub async fn get_account(&self, id: &str) -> Result<Option<AccountRecord>, LedgerError> {
        dispatch!(self, l => l.get_account(id).await)
    }

    /// Stores a key's digest for an existing account; `Ok(false)` when the
    /// account does not exist.
    pub async fn add_key(
        &self,
        account: &str,
        key_id: &str,
        digest: &[u8; 32],
    ) -> Result<bool, LedgerError> {
        dispatch!(self, l => l.add_key(account, key_id, digest).await)
    }

    /// `Ok(false)` when the account has no such key.
    pub async fn revoke_key(&self, account: &str, key_id: &str) -> Result<bool, LedgerError> {
        dispatch!(self, l => l.revoke_key(account, key_id).await)
    }

    pub async fn find_key(&self, digest: &[u8; 32]) -> Result<Option<KeyOwner>, LedgerError> {
        dispatch!(self, l => l.find_key(digest).await)
    }

    /// Recomputes an account's running totals from the debits in its window
    /// (an admin repair; a scan, never on the request path). `Ok(None)` when
    /// the account does not exist.
    pub async fn recount(&self, account: &str) -> Result<Option<Recount>, LedgerError> {
        dispatch!(self, l => l.recount(account).await)
    }

    /// Reachability check for `/readyz`.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        dispatch!(self, l => l.ping().await)
    }

    /// The account's window and where its credits went (by day and route,
    /// and when they come back), from one atomic read whose cost does not
    /// grow with the number of debits. `Ok(None)` when the account does not
    /// exist; an error naming the field when its stored totals are damaged.
    pub async fn usage(
        &self,
        account: &str,
        plans: &PlanTable,
    ) -> Result<Option<usage::Usage>, LedgerError> {
        dispatch!(self, l => l.usage(account, plans).await)
    }

    /// Accounts in ascending id order, after `after`, at most `limit`, with
    /// their balances (read one by one: not one atomic snapshot).
    pub async fn list_accounts(
        &self,
        after: Option<&str>,
        limit: usize,
        plans: &PlanTable,
    ) -> Result<usage::AccountPage, LedgerError> {
        dispatch!(self, l => l.list_accounts(after, limit, plans).await)
    }

    /// Puts every existing account into the account index (accounts created
    /// before the index existed); returns how many accounts were found. An
    /// admin operation: a scan of the whole store.
    pub async fn reindex_accounts(&self) -> Result<u64, LedgerError> {
        dispatch!(self, l => l.reindex_accounts().await)
    }

    // Threshold alerts (docs/alerts.md): the senders' side of the queue the
    // debit writes. None of these is on the request path.

    /// After a debit that queued an alert: makes the account findable by
    /// the senders (Redis: the fleet index, which the debit cannot write).
    pub async fn hint_alerts(&self, account: &str) -> Result<(), LedgerError> {
        dispatch!(self, l => l.hint_alerts(account).await)
    }

    /// Accounts with alerts due now (ledger clock), at most `limit`.
    pub async fn alert_accounts_due(&self, limit: usize) -> Result<Vec<String>, LedgerError> {
        dispatch!(self, l => l.alert_accounts_due(limit).await)
    }

    /// Leases the account's due pending alerts (at most `max`) to the caller
    /// for `lease`: no other sender takes them until it ends.
    pub async fn claim_alerts(
        &self,
        account: &str,
        lease: std::time::Duration,
        max: usize,
    ) -> Result<alerts::Claim, LedgerError> {
        dispatch!(self, l => l.claim_alerts(account, lease, max).await)
    }

    /// Records how the attempt on a claimed alert ended.
    pub async fn finish_alert(
        &self,
        alert: &alerts::QueuedAlert,
        attempt: &alerts::Attempt,
    ) -> Result<alerts::Finished, LedgerError> {
        dispatch!(self, l => l.finish_alert(alert, attempt).await)
    }

    /// Files the account in the senders' index under when its queue is next
    /// due (`None`: empty), from a claim's or a finish's answer.
    pub async fn index_alert_account(
        &self,
        account: &str,
        next_due: Option<i64>,
    ) -> Result<(), LedgerError> {
        dispatch!(self, l => l.index_alert_account(account, next_due).await)
    }

    /// Queued alerts in `state`, oldest crossing first, at most `limit`.
    pub async fn list_alerts(
        &self,
        state: alerts::AlertState,
        limit: usize,
    ) -> Result<alerts::AlertList, LedgerError> {
        dispatch!(self, l => l.list_alerts(state, limit).await)
    }

    /// Redis: finds alert queues missing from the index (`SCAN`), unless
    /// another gateway did within `every`. `Ok(None)`: not this time.
    pub async fn sweep_alert_queues(
        &self,
        every: std::time::Duration,
    ) -> Result<Option<u64>, LedgerError> {
        dispatch!(self, l => l.sweep_alert_queues(every).await)
    }
}

/// Every kind of ledger call, as the `op` label of the ledger metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerOp {
    Debit,
    Refund,
    Settle,
    Balance,
    History,
    PutAccount,
    GetAccount,
    AddKey,
    RevokeKey,
    FindKey,
    Recount,
    Usage,
    ListAccounts,
    Reindex,
    Grants,
    Ping,
}

// `LedgerOp::ALL` is in order and ends with the last operation.
const _: () = {
    let mut index = 0;
    while index < LedgerOp::ALL.len() {
        assert!(LedgerOp::ALL[index].index() == index);
        index += 1;
    }
    assert!(LedgerOp::Ping.index() + 1 == LedgerOp::ALL.len());
};

impl LedgerOp {
    /// Every operation, in declaration order (`Ping` stays last: the
    /// metrics index operations by position).
    pub const ALL: [LedgerOp; 16] = [
        LedgerOp::Debit,
        LedgerOp::Refund,
        LedgerOp::Settle,
        LedgerOp::Balance,
        LedgerOp::History,
        LedgerOp::PutAccount,
        LedgerOp::GetAccount,
        LedgerOp::AddKey,
        LedgerOp::RevokeKey,
        LedgerOp::FindKey,
        LedgerOp::Recount,
        LedgerOp::Usage,
        LedgerOp::ListAccounts,
        LedgerOp::Reindex,
        LedgerOp::Grants,
        LedgerOp::Ping,
    ];

    /// Position in [`LedgerOp::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            LedgerOp::Debit => "debit",
            LedgerOp::Refund => "refund",
            LedgerOp::Settle => "settle",
            LedgerOp::Balance => "balance",
            LedgerOp::History => "history",
            LedgerOp::PutAccount => "put_account",
            LedgerOp::GetAccount => "get_account",
            LedgerOp::AddKey => "add_key",
            LedgerOp::RevokeKey => "revoke_key",
            LedgerOp::FindKey => "find_key",
            LedgerOp::Recount => "recount",
            LedgerOp::Usage => "usage",
            LedgerOp::ListAccounts => "list_accounts",
            LedgerOp::Reindex => "reindex",
            LedgerOp::Grants => "grants",
            LedgerOp::Ping => "ping",
        }
    }
}

/// The gateway's ledger: [`Ledger`]'s calls, each one timed and its failures
/// counted (`creditgate_ledger_duration_seconds`, `creditgate_ledger_errors_total`).
#[derive(Clone)]
pub struct MeteredLedger {
    backend: Ledger,
    metrics: Arc<Metrics>,
}

impl MeteredLedger {
    pub fn new(backend: Ledger, metrics: Arc<Metrics>) -> MeteredLedger {
        MeteredLedger { backend, metrics }
    }

    /// The backend itself, for what is not a ledger call (its kind, Redis
    /// durability settings).
    pub fn backend(&self) -> &Ledger {
        &self.backend
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.backend_name()
    }

    async fn timed<T>(
        &self,
        op: LedgerOp,
        call: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, LedgerError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .ledger_call(op, started.elapsed(), result.is_ok());
        result
    }

    pub async fn debit(&self, debit: &Debit<'_>) -> Result<DebitOutcome, LedgerError> {
        self.timed(LedgerOp::Debit, self.backend.debit(debit)).await
    }

    /// See [`Ledger::refund`].
    pub async fn refund(
        &self,
        account: &str,
        request_id: &str,
    ) -> Result<RefundOutcome, LedgerError> {
        self.timed(LedgerOp::Refund, self.backend.refund(account, request_id))
            .await
    }

    /// See [`Ledger::refund_debit`].
    pub async fn refund_debit(
        &self,
        account: &str,
        request_id: &str,
        at_ms: i64,
    ) -> Result<RefundOutcome, LedgerError> {
        self.timed(
            LedgerOp::Refund,
            self.backend.refund_debit(account, request_id, at_ms),
        )
        .await
    }

    /// See [`Ledger::void_unconfirmed`]; timed as a refund.
    pub async fn void_unconfirmed(
        &self,
        debit: &UnconfirmedDebit,
    ) -> Result<VoidOutcome, LedgerError> {
        self.timed(LedgerOp::Refund, self.backend.void_unconfirmed(debit))
            .await
    }

    /// See [`Ledger::settle`].
    pub async fn settle(
        &self,
        account: &str,
        request_id: &str,
        at_ms: Option<i64>,
        final_cost: u64,
        alerts: &SettleAlerts<'_>,
    ) -> Result<(SettleOutcome, u64), LedgerError> {
        self.timed(
            LedgerOp::Settle,
            self.backend
                .settle_alerting(account, request_id, at_ms, final_cost, alerts),
        )
        .await
    }

    pub async fn balance(
        &self,
        account: &str,
        plans: &PlanTable,
        limits: &LimitTable,
    ) -> Result<Option<Balance>, LedgerError> {
        self.timed(
            LedgerOp::Balance,
            self.backend.balance(account, plans, limits),
        )
        .await
    }

    /// See [`Ledger::create_grant`].
    pub async fn create_grant(
        &self,
        account: &str,
        grant: &NewGrant,
    ) -> Result<GrantCreated, LedgerError> {
        self.timed(LedgerOp::Grants, self.backend.create_grant(account, grant))
            .await
    }

    /// See [`Ledger::grants`].
    pub async fn grants(&self, account: &str) -> Result<Option<GrantList>, LedgerError> {
        self.timed(LedgerOp::Grants, self.backend.grants(account))
            .await
    }

    /// See [`Ledger::void_grant`].
    pub async fn void_grant(&self, account: &str, number: u64) -> Result<GrantVoided, LedgerError> {
        self.timed(LedgerOp::Grants, self.backend.void_grant(account, number))
            .await
    }

    pub async fn history(
        &self,
        account: &str,
        limit: usize,
        before: Option<&HistoryCursor>,
    ) -> Result<HistoryPage, LedgerError> {
        self.timed(
            LedgerOp::History,
            self.backend.history(account, limit, before),
        )
        .await
    }

    pub async fn put_account(&self, id: &str, record: &AccountRecord) -> Result<bool, LedgerError> {
        self.timed(LedgerOp::PutAccount, self.backend.put_account(id, record))
            .await
    }

    pub async fn get_account(&self, id: &str) -> Result<Option<AccountRecord>, LedgerError> {
        self.timed(LedgerOp::GetAccount, self.backend.get_account(id))
            .await
    }

    pub async fn add_key(
        &self,
        account: &str,
        key_id: &str,
        digest: &[u8; 32],
    ) -> Result<bool, LedgerError> {
        self.timed(
            LedgerOp::AddKey,
            self.backend.add_key(account, key_id, digest),
        )
        .await
    }

    pub async fn revoke_key(&self, account: &str, key_id: &str) -> Result<bool, LedgerError> {
        self.timed(
            LedgerOp::RevokeKey,
            self.backend.revoke_key(account, key_id),
        )
        .await
    }

    pub async fn find_key(&self, digest: &[u8; 32]) -> Result<Option<KeyOwner>, LedgerError> {
        self.timed(LedgerOp::FindKey, self.backend.find_key(digest))
            .await
    }

    /// See [`Ledger::recount`].
    pub async fn recount(&self, account: &str) -> Result<Option<Recount>, LedgerError> {
        self.timed(LedgerOp::Recount, self.backend.recount(account))
            .await
    }

    /// See [`Ledger::usage`].
    pub async fn usage(
        &self,
        account: &str,
        plans: &PlanTable,
    ) -> Result<Option<usage::Usage>, LedgerError> {
        self.timed(LedgerOp::Usage, self.backend.usage(account, plans))
            .await
    }

    /// See [`Ledger::list_accounts`].
    pub async fn list_accounts(
        &self,
        after: Option<&str>,
        limit: usize,
        plans: &PlanTable,
    ) -> Result<usage::AccountPage, LedgerError> {
        self.timed(
            LedgerOp::ListAccounts,
            self.backend.list_accounts(after, limit, plans),
        )
        .await
    }

    /// See [`Ledger::reindex_accounts`].
    pub async fn reindex_accounts(&self) -> Result<u64, LedgerError> {
        self.timed(LedgerOp::Reindex, self.backend.reindex_accounts())
            .await
    }

    pub async fn ping(&self) -> Result<(), LedgerError> {
        self.timed(LedgerOp::Ping, self.backend.ping()).await
    }
}
