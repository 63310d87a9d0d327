//! The embedded ledger: the same semantics as Redis, in one process.
//!
//! One mutex around all accounts; no operation awaits while holding it, and
//! each is O(log n) amortised in the window size (expired debits are trimmed
//! from the front of an ordered map, their costs subtracted from a running
//! total and from the usage aggregates). State is lost when the process exits. It keeps the same bounds as
//! Redis (`ledger/bounds.rs`) and answers the same way at them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::alerts::{
    self as alerts, AlertList, AlertState, Attempt, Claim, Finished, QueuedAlert, Settled,
};
use super::usage::{utc_day, AccountPage, AccountSummary, DayCredits, Usage, UsageCell};
use super::{bounds, Recount, SettleOutcome};
use super::{
    AccountRecord, Balance, Debit, DebitOutcome, HistoryCursor, HistoryItem, HistoryPage, KeyOwner,
    LedgerError, PlanTable, RefundOutcome, Release, SettleAlerts, WindowState,
};
use crate::clock::SharedClock;

struct Record {
    at: i64,
    cost: u64,
    route: String,
    refunded: bool,
}

/// A debit that counts.
struct Counted {
    cost: u64,
    route: String,
}

#[derive(Default)]
struct AccountState {
    record: Option<AccountRecord>,
    /// Counted debits: (at, id) → cost and route.
    window: BTreeMap<(i64, String), Counted>,
    used: u64,
    /// The counted debits by (UTC day, route): credits and debits.
    spent: BTreeMap<(i64, String), (u64, u64)>,
    /// The counted debits' credits by the UTC day they leave the window.
    returning: BTreeMap<i64, u64>,
    /// Every debit still within the history retention, by id.
    records: HashMap<String, Record>,
    /// (at, id) of every debit in `records`, oldest first.
    history: BTreeMap<(i64, String), ()>,
    keys: HashMap<String, [u8; 32]>,
    /// Queued threshold alerts by number (docs/alerts.md).
    alerts: BTreeMap<u64, QueuedAlert>,
    /// The last alert number given out.
    alert_number: u64,
}

impl AccountState {
    /// Adds a counted debit's credits and count to the usage aggregates.
    fn count_usage(&mut self, at: i64, route: &str, credits: u64, requests: u64, window_ms: i64) {
        let cell = self
            .spent
            .entry((utc_day(at), route.to_owned()))
            .or_default();
        cell.0 += credits;
        cell.1 += requests;
        if credits > 0 {
            *self
                .returning
                .entry(utc_day(at.saturating_add(window_ms)))
                .or_default() += credits;
        }
    }

    /// Takes them out again; an entry at zero goes.
    fn uncount_usage(&mut self, at: i64, route: &str, credits: u64, requests: u64, window_ms: i64) {
        let key = (utc_day(at), route.to_owned());
        if let Some(cell) = self.spent.get_mut(&key) {
            cell.0 = cell.0.saturating_sub(credits);
            cell.1 = cell.1.saturating_sub(requests);
            if *cell == (0, 0) {
                self.spent.remove(&key);
            }
        }
        let day = utc_day(at.saturating_add(window_ms));
        if let Some(leaving) = self.returning.get_mut(&day) {
            *leaving = leaving.saturating_sub(credits);
            if *leaving == 0 {
                self.returning.remove(&day);
            }
        }
    }

    /// The aggregates recomputed from the window (the recount).
    fn recount_usage(&mut self, window_ms: i64) {
        self.spent.clear();
        self.returning.clear();
        let counted: Vec<(i64, String, u64)> = self
            .window
            .iter()
            .map(|((at, _), debit)| (*at, debit.route.clone(), debit.cost))
            .collect();
        for (at, route, cost) in counted {
            self.count_usage(at, &route, cost, 1, window_ms);
        }
    }
}

#[derive(Default)]
struct State {
    /// Ordered by id, for the account list.
    accounts: BTreeMap<String, AccountState>,
    /// Key digest → (account, key id).
    keys: HashMap<[u8; 32], (String, String)>,
    /// Accounts with queued alerts (the Redis index's counterpart).
    alerting: BTreeSet<String>,
}

pub struct MemoryLedger {
    clock: SharedClock,
    window_ms: i64,
    retention_ms: i64,
    state: Mutex<State>,
}

impl MemoryLedger {
    pub fn new(clock: SharedClock, window: Duration, history_retention: Duration) -> MemoryLedger {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let retention_ms = i64::try_from(history_retention.as_millis())
            .unwrap_or(i64::MAX)
            .max(window_ms);
        MemoryLedger {
            clock,
            window_ms,
            retention_ms,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops what has left the window (and the history) as of `now`.
    fn trim(&self, account: &mut AccountState, now: i64) {
        let cutoff = now.saturating_sub(self.window_ms);
        while let Some(entry) = account.window.first_entry() {
            if entry.key().0 > cutoff {
                break;
            }
            let ((at, _), debit) = entry.remove_entry();
            account.used -= debit.cost;
            account.uncount_usage(at, &debit.route, debit.cost, 1, self.window_ms);
        }
        let history_cutoff = now.saturating_sub(self.retention_ms);
        while let Some(entry) = account.history.first_entry() {
            if entry.key().0 > history_cutoff {
                break;
            }
            let (_, id) = entry.remove_entry().0;
            account.records.remove(&id);
        }
    }

    fn window_state(
        &self,
        account: &AccountState,
        plan: &str,
        allowance: u64,
        now: i64,
    ) -> WindowState {
        WindowState {
            plan: plan.to_owned(),
            allowance,
            used: account.used,
            next_release_in_ms: account
                .window
                .keys()
                .next()
                .map(|(at, _)| (at + self.window_ms - now).max(0) as u64),
        }
    }

    pub async fn debit(&self, debit: &Debit<'_>) -> Result<DebitOutcome, LedgerError> {
        bounds::check_plans(debit.plans)?;
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(account) = state.accounts.get_mut(debit.account) else {
            return Ok(DebitOutcome::NoAccount);
        };
        let Some(record) = account.record.clone() else {
            return Ok(DebitOutcome::NoAccount);
        };
        if record.suspended {
            return Ok(DebitOutcome::Suspended);
        }
        let Some(&allowance) = debit.plans.get(&record.plan) else {
            return Ok(DebitOutcome::UnknownPlan(record.plan));
        };
        self.trim(account, now);
        if debit.cost == 0 {
            let window = self.window_state(account, &record.plan, allowance, now);
            return Ok(DebitOutcome::Admitted {
                request_id: debit.request_id.to_owned(),
                at_ms: now,
                window,
            });
        }
        // The cost alone first: it may be beyond the bound, where a sum could overflow.
        if debit.cost > allowance || account.used + debit.cost > allowance {
            let retry_after_ms = if debit.cost > allowance {
                None
            } else {
                let mut remaining = account.used;
                account.window.iter().find_map(|((at, _), counted)| {
                    remaining -= counted.cost;
                    (remaining + debit.cost <= allowance)
                        .then(|| (at + self.window_ms - now).max(1) as u64)
                })
            };
            let window = self.window_state(account, &record.plan, allowance, now);
            return Ok(DebitOutcome::Rejected {
                window,
                retry_after_ms,
            });
        }
        let id = if account.records.contains_key(debit.request_id) {
            debit.fallback_request_id
        } else {
            debit.request_id
        };
        account.window.insert(
            (now, id.to_owned()),
            Counted {
                cost: debit.cost,
                route: debit.route.to_owned(),
            },
        );
        account.used += debit.cost;
        // Threshold alerts this debit crossed, queued in the same step.
        if queue_crossed_alerts(debit, account, allowance, now) {
            state.alerting.insert(debit.account.to_owned());
        }
        let account = state
            .accounts
            .get_mut(debit.account)
            .expect("looked up above");
        account.count_usage(now, debit.route, debit.cost, 1, self.window_ms);
        account.history.insert((now, id.to_owned()), ());
        account.records.insert(
            id.to_owned(),
            Record {
                at: now,
                cost: debit.cost,
                route: debit.route.to_owned(),
                refunded: false,
            },
        );
        let window = self.window_state(account, &record.plan, allowance, now);
        Ok(DebitOutcome::Admitted {
            request_id: id.to_owned(),
            at_ms: now,
            window,
        })
    }

    /// Ids are unique per account here, so `_at_ms` is not needed to find one.
    pub async fn refund(
        &self,
        account: &str,
        request_id: &str,
        _at_ms: Option<i64>,
    ) -> Result<RefundOutcome, LedgerError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(account) = state.accounts.get_mut(account) else {
            return Ok(RefundOutcome::Unknown);
        };
        self.trim(account, now);
        let Some(record) = account.records.get_mut(request_id) else {
            return Ok(RefundOutcome::Unknown);
        };
        if record.refunded {
            return Ok(RefundOutcome::AlreadyRefunded);
        }
        record.refunded = true;
        let at = record.at;
        if let Some(debit) = account.window.remove(&(at, request_id.to_owned())) {
            account.used -= debit.cost;
            account.uncount_usage(at, &debit.route, debit.cost, 1, self.window_ms);
        }
        Ok(RefundOutcome::Refunded)
    }

    /// Refused, nothing written, when the cost or the account's new total
    /// would be above [`bounds::MAX_CREDITS`].
    pub async fn settle(
        &self,
        account_id: &str,
        request_id: &str,
        _at_ms: Option<i64>,
        final_cost: u64,
        alerts: Option<&SettleAlerts<'_>>,
    ) -> Result<(SettleOutcome, u64), LedgerError> {
        bounds::check_settled_cost(final_cost)?;
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(account) = state.accounts.get_mut(account_id) else {
            return Ok((SettleOutcome::Unknown, 0));
        };
        self.trim(account, now);
        let Some(record) = account.records.get(request_id) else {
            return Ok((SettleOutcome::Unknown, 0));
        };
        if record.refunded {
            return Ok((SettleOutcome::Refunded, 0));
        }
        let mut crossing = None;
        let at = record.at;
        // A debit that already left the window no longer counts either way.
        if let Some(debit) = account.window.get_mut(&(at, request_id.to_owned())) {
            let used = account.used - debit.cost + final_cost;
            if used > bounds::MAX_CREDITS {
                return Err(bounds::total_too_large(account_id, &used.to_string()));
            }
            crossing = Some((account.used, used));
            account.used = used;
            let (route, reserved) = (debit.route.clone(), debit.cost);
            debit.cost = final_cost;
            account.uncount_usage(at, &route, reserved, 0, self.window_ms);
            account.count_usage(at, &route, final_cost, 0, self.window_ms);
        }
        if let Some(record) = account.records.get_mut(request_id) {
            record.cost = final_cost;
        }
        let used = account.used;
        // A settlement above the reservation may cross thresholds too.
        let allowance = account
            .record
            .as_ref()
            .and_then(|record| alerts.and_then(|a| a.plans.get(&record.plan)).copied());
        let queued = match (alerts, crossing, allowance) {
            (Some(alerts), Some((before, after)), Some(allowance)) => queue_crossed(
                account,
                account_id,
                alerts.thresholds,
                allowance,
                before,
                after,
                now,
            ),
            _ => 0,
        };
        if queued > 0 {
            state.alerting.insert(account_id.to_owned());
        }
        Ok((SettleOutcome::Settled { used }, queued))
    }

    /// Recomputes `used` from the debits in the window. The running total
    /// here is kept by the same code that keeps the window, so a recount
    /// finds it right; it answers like the Redis recount all the same.
    pub async fn recount(&self, account_id: &str) -> Result<Option<Recount>, LedgerError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(account) = state
            .accounts
            .get_mut(account_id)
            .filter(|a| a.record.is_some())
        else {
            return Ok(None);
        };
        self.trim(account, now);
        let previous = account.used;
        let used: u64 = account.window.values().map(|debit| debit.cost).sum();
        if used > bounds::MAX_CREDITS {
            return Err(bounds::total_too_large(account_id, &used.to_string()));
        }
        account.used = used;
        account.recount_usage(self.window_ms);
        Ok(Some(Recount {
            previous_used: previous.to_string(),
            used,
            counted: account.window.len() as u64,
            voided: 0,
            changed: previous != used,
        }))
    }

    pub async fn balance(
        &self,
        account: &str,
        plans: &PlanTable,
    ) -> Result<Option<Balance>, LedgerError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(state) = state.accounts.get_mut(account) else {
            return Ok(None);
        };
        let Some(record) = state.record.clone() else {
            return Ok(None);
        };
        self.trim(state, now);
        let next_release = state.window.iter().next().map(|((first, _), _)| {
            let credits = state
                .window
                .range((*first, String::new())..)
                .take_while(|((at, _), _)| at == first)
                .map(|(_, debit)| debit.cost)
                .sum();
            Release {
                at_ms: first + self.window_ms,
                credits,
            }
        });
        Ok(Some(Balance {
            allowance: plans.get(&record.plan).copied(),
            account: record,
            used: state.used,
            now_ms: now,
            window_ms: self.window_ms as u64,
            next_release,
        }))
    }

    pub async fn history(
        &self,
        account: &str,
        limit: usize,
        before: Option<&HistoryCursor>,
    ) -> Result<HistoryPage, LedgerError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(state) = state.accounts.get_mut(account) else {
            return Ok(HistoryPage {
                items: Vec::new(),
                next: None,
            });
        };
        self.trim(state, now);
        let upper = before.map(|c| (c.at_ms, c.request_id.clone()));
        let mut entries = state
            .history
            .keys()
            .rev()
            .filter(|key| upper.as_ref().is_none_or(|upper| *key < upper));
        let mut items = Vec::with_capacity(limit.min(512));
        for (at, id) in entries.by_ref().take(limit) {
            if let Some(record) = state.records.get(id) {
                items.push(HistoryItem {
                    at_ms: *at,
                    route: record.route.clone(),
                    cost: record.cost,
                    request_id: id.clone(),
                    refunded: record.refunded,
                });
            }
        }
        let next = match (entries.next(), items.last()) {
            (Some(_), Some(last)) => Some(HistoryCursor {
                at_ms: last.at_ms,
                request_id: last.request_id.clone(),
            }),
            _ => None,
        };
        Ok(HistoryPage { items, next })
    }

    pub async fn put_account(&self, id: &str, record: &AccountRecord) -> Result<bool, LedgerError> {
        let mut state = self.lock();
        let account = state.accounts.entry(id.to_owned()).or_default();
        let created = account.record.is_none();
        account.record = Some(record.clone());
        Ok(created)
    }

    pub async fn get_account(&self, id: &str) -> Result<Option<AccountRecord>, LedgerError> {
        Ok(self.lock().accounts.get(id).and_then(|a| a.record.clone()))
    }

    pub async fn add_key(
        &self,
        account: &str,
        key_id: &str,
        digest: &[u8; 32],
    ) -> Result<bool, LedgerError> {
        let mut state = self.lock();
        let Some(state_account) = state
            .accounts
            .get_mut(account)
            .filter(|a| a.record.is_some())
        else {
            return Ok(false);
        };
        state_account.keys.insert(key_id.to_owned(), *digest);
        state
            .keys
            .insert(*digest, (account.to_owned(), key_id.to_owned()));
        Ok(true)
    }

    pub async fn revoke_key(&self, account: &str, key_id: &str) -> Result<bool, LedgerError> {
        let mut state = self.lock();
        let Some(digest) = state
            .accounts
            .get_mut(account)
            .and_then(|a| a.keys.remove(key_id))
        else {
            return Ok(false);
        };
        state.keys.remove(&digest);
        Ok(true)
    }

    pub async fn find_key(&self, digest: &[u8; 32]) -> Result<Option<KeyOwner>, LedgerError> {
        let state = self.lock();
        let Some((account_id, key_id)) = state.keys.get(digest) else {
            return Ok(None);
        };
        let Some(record) = state
            .accounts
            .get(account_id)
            .and_then(|a| a.record.clone())
        else {
            return Ok(None);
        };
        Ok(Some(KeyOwner {
            account_id: account_id.clone(),
            key_id: key_id.clone(),
            digest: *digest,
            account: record,
        }))
    }

    pub async fn ping(&self) -> Result<(), LedgerError> {
        Ok(())
    }

    pub async fn usage(
        &self,
        account: &str,
        plans: &PlanTable,
    ) -> Result<Option<Usage>, LedgerError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(state) = state.accounts.get_mut(account) else {
            return Ok(None);
        };
        let Some(record) = state.record.clone() else {
            return Ok(None);
        };
        self.trim(state, now);
        Ok(Some(Usage {
            allowance: plans.get(&record.plan).copied(),
            account: record,
            used: state.used,
            now_ms: now,
            window_ms: self.window_ms as u64,
            spent: state
                .spent
                .iter()
                .map(|((day, route), (credits, requests))| UsageCell {
                    day: *day,
                    route: route.clone(),
                    credits: *credits,
                    requests: *requests,
                })
                .collect(),
            returning: state
                .returning
                .iter()
                .map(|(day, credits)| DayCredits {
                    day: *day,
                    credits: *credits,
                })
                .collect(),
            rebuilt: None,
        }))
    }

    pub async fn list_accounts(
        &self,
        after: Option<&str>,
        limit: usize,
        plans: &PlanTable,
    ) -> Result<AccountPage, LedgerError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let start = match after {
            Some(after) => Bound::Excluded(after.to_owned()),
            None => Bound::Unbounded,
        };
        let mut items = Vec::with_capacity(limit.min(512));
        let mut more = false;
        for (id, account) in state.accounts.range_mut((start, Bound::Unbounded)) {
            let Some(record) = account.record.clone() else {
                continue;
            };
            if items.len() == limit {
                more = true;
                break;
            }
            self.trim(account, now);
            items.push(AccountSummary {
                id: id.clone(),
                allowance: plans.get(&record.plan).copied(),
                account: record,
                used: Some(account.used),
            });
        }
        let next = more
            .then(|| items.last().map(|item| item.id.clone()))
            .flatten();
        Ok(AccountPage { items, next })
    }

    /// The account map is its own index: nothing to rebuild.
    pub async fn reindex_accounts(&self) -> Result<u64, LedgerError> {
        let state = self.lock();
        Ok(state
            .accounts
            .values()
            .filter(|account| account.record.is_some())
            .count() as u64)
    }
}

/// Queues one alert per threshold the debit just took `used` across (the
/// memory twin of `queue_crossed_alerts` in `lua/prelude.lua`); whether any
/// alert is queued now.
fn queue_crossed_alerts(
    debit: &Debit<'_>,
    account: &mut AccountState,
    allowance: u64,
    now: i64,
) -> bool {
    let before = account.used - debit.cost;
    let after = account.used;
    queue_crossed(
        account,
        debit.account,
        debit.alert_thresholds,
        allowance,
        before,
        after,
        now,
    ) > 0
}

/// One alert per threshold `used` crossed going from `before` to `after`.
fn queue_crossed(
    account: &mut AccountState,
    account_id: &str,
    thresholds: &[u32],
    allowance: u64,
    before: u64,
    after: u64,
    now: i64,
) -> u64 {
    let mut queued = 0;
    for ppm in alerts::crossed(thresholds, allowance, before, after) {
        if account.alerts.len() >= alerts::MAX_QUEUED_PER_ACCOUNT {
            break;
        }
        account.alert_number += 1;
        account.alerts.insert(
            account.alert_number,
            QueuedAlert {
                account: account_id.to_owned(),
                number: account.alert_number,
                threshold_ppm: ppm,
                used: after,
                monthly_allowance: allowance,
                available: allowance.saturating_sub(after),
                at_ms: now,
                state: AlertState::Pending,
                attempts: 0,
                next_ms: now,
                last_error: None,
            },
        );
        queued += 1;
    }
    queued
}

fn next_due(account: &AccountState) -> Option<i64> {
    account.alerts.values().map(|alert| alert.next_ms).min()
}

/// The alert queue: the same operations as Redis' `lua/alerts.lua`, with
/// the process clock.
impl MemoryLedger {
    /// Nothing to do: a debit that queues an alert puts its account in the
    /// index in the same step.
    pub async fn hint_alerts(&self, _account: &str) -> Result<(), LedgerError> {
        Ok(())
    }

    pub async fn alert_accounts_due(&self, limit: usize) -> Result<Vec<String>, LedgerError> {
        let now = self.clock.now_ms();
        let state = self.lock();
        Ok(state
            .alerting
            .iter()
            .filter(|id| {
                state
                    .accounts
                    .get(*id)
                    .and_then(next_due)
                    .is_some_and(|due| due <= now)
            })
            .take(limit)
            .cloned()
            .collect())
    }

    pub async fn claim_alerts(
        &self,
        account_id: &str,
        lease: Duration,
        max: usize,
    ) -> Result<Claim, LedgerError> {
        let now = self.clock.now_ms();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut state = self.lock();
        let Some(account) = state.accounts.get_mut(account_id) else {
            return Ok(Claim {
                alerts: Vec::new(),
                next_due_ms: None,
            });
        };
        account
            .alerts
            .retain(|_, alert| alert.state == AlertState::Pending || alert.next_ms > now);
        let mut claimed = Vec::new();
        for alert in account.alerts.values_mut() {
            if claimed.len() < max && alert.state == AlertState::Pending && alert.next_ms <= now {
                alert.next_ms = now.saturating_add(lease_ms);
                alert.attempts += 1;
                claimed.push(alert.clone());
            }
        }
        let next_due_ms = next_due(account);
        if next_due_ms.is_none() {
            state.alerting.remove(account_id);
        }
        Ok(Claim {
            alerts: claimed,
            next_due_ms,
        })
    }

    pub async fn finish_alert(
        &self,
        alert: &QueuedAlert,
        attempt: &Attempt,
    ) -> Result<Finished, LedgerError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(account) = state.accounts.get_mut(&alert.account) else {
            return Ok(Finished {
                settled: Settled::NotHeld,
                next_due_ms: None,
            });
        };
        let settled = match account.alerts.get_mut(&alert.number) {
            Some(queued) if queued.state == AlertState::Pending => match attempt {
                Attempt::Delivered => {
                    account.alerts.remove(&alert.number);
                    Settled::Delivered
                }
                Attempt::Failed { .. } if queued.next_ms != alert.next_ms => Settled::NotHeld,
                Attempt::Failed {
                    wait,
                    retry_for,
                    error,
                } => {
                    let ms = |d: &Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                    queued.last_error = (!error.is_empty()).then(|| error.clone());
                    if now.saturating_sub(queued.at_ms) >= ms(retry_for) {
                        queued.state = AlertState::Failed;
                        queued.next_ms = now.saturating_add(ms(&alerts::FAILED_KEPT));
                        Settled::GaveUp
                    } else {
                        queued.next_ms = now.saturating_add(ms(wait));
                        Settled::WillRetry
                    }
                }
            },
            _ => Settled::NotHeld,
        };
        let next_due_ms = next_due(account);
        if next_due_ms.is_none() {
            state.alerting.remove(&alert.account);
        }
        Ok(Finished {
            settled,
            next_due_ms,
        })
    }

    /// The memory index is kept by the operations themselves.
    pub async fn index_alert_account(
        &self,
        _account: &str,
        _next_due: Option<i64>,
    ) -> Result<(), LedgerError> {
        Ok(())
    }

    pub async fn list_alerts(
        &self,
        wanted: AlertState,
        limit: usize,
    ) -> Result<AlertList, LedgerError> {
        let state = self.lock();
        let mut items: Vec<QueuedAlert> = state
            .alerting
            .iter()
            .filter_map(|id| state.accounts.get(id))
            .flat_map(|account| account.alerts.values())
            .filter(|alert| alert.state == wanted)
            .cloned()
            .collect();
        items.sort_by(|a, b| (a.at_ms, &a.account, a.number).cmp(&(b.at_ms, &b.account, b.number)));
        let truncated = items.len() > limit;
        items.truncate(limit);
        Ok(AlertList { items, truncated })
    }

    /// Nothing can be missing from the memory index.
    pub async fn sweep_alert_queues(&self, _every: Duration) -> Result<Option<u64>, LedgerError> {
        Ok(None)
    }
}
