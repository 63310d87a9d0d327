//! The embedded ledger: the same semantics as Redis, in one process.
//!
//! One mutex around all accounts; no operation awaits while holding it, and
//! each is O(log n) amortised in the window size (expired debits are trimmed
//! from the front of an ordered map, their costs subtracted from a running
//! total and from the usage aggregates). State is lost when the process exits. It keeps the same bounds as
//! Redis (`ledger/bounds.rs`) and answers the same way at them.
//!
//! A plan's extra windows keep a running total and a cursor (`seen`) each
//! over the same ordered map; prepaid grants are a small map per account
//! (docs/ledger.md, "Extra windows" and "Prepaid grants").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::alerts::{
    self as alerts, AlertList, AlertState, Attempt, Claim, Finished, QueuedAlert, Settled,
};
use super::usage::{utc_day, AccountPage, AccountSummary, DayCredits, Usage, UsageCell};
use super::{bounds, grant_id, Grant, GrantBalance, GrantCreated, GrantVoided, NewGrant};
use super::{
    AccountRecord, Balance, Debit, DebitOutcome, HistoryCursor, HistoryItem, HistoryPage, KeyOwner,
    LedgerError, PlanTable, RefundOutcome, Release, SettleAlerts, WindowState,
};
use super::{LimitTable, LimitUse, Recount, SettleOutcome, WindowLimit};
use crate::clock::SharedClock;

struct Record {
    at: i64,
    cost: u64,
    route: String,
    refunded: bool,
    /// What the allowance paid of `cost`.
    from_allowance: u64,
    /// (grant number, credits) in the order taken.
    parts: Vec<(u64, u64)>,
}

/// A debit that counts.
struct Counted {
    cost: u64,
    /// The part that counts in the 30-day window.
    from_allowance: u64,
    route: String,
}

/// An extra window's running total: the costs of the counted debits after `seen`.
#[derive(Clone, Copy)]
struct LimitTotal {
    used: u64,
    seen: i64,
}

struct StoredGrant {
    credits: u64,
    remaining: u64,
    expires: Option<i64>,
    created: i64,
    note: String,
    voided: bool,
}

impl StoredGrant {
    fn live(&self, now: i64) -> bool {
        !self.voided && self.expires.is_none_or(|expires| expires > now)
    }

    /// Spending order: soonest expiry first, never-expiring last, then oldest.
    fn order(&self, number: u64) -> (i64, u64) {
        (self.expires.unwrap_or(i64::MAX), number)
    }
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
    /// What grants paid of the counted debits.
    from_grants: u64,
    /// The extra windows kept, by length (ms).
    limits: BTreeMap<u64, LimitTotal>,
    /// Grants by number.
    grants: BTreeMap<u64, StoredGrant>,
    grant_seq: u64,
}

impl AccountState {
    /// Adds a counted debit's credits (`from_allowance` of them paid by
    /// the allowance) and count to the usage aggregates.
    fn count_usage(
        &mut self,
        at: i64,
        route: &str,
        credits: u64,
        from_allowance: u64,
        requests: u64,
        window_ms: i64,
    ) {
        let cell = self
            .spent
            .entry((utc_day(at), route.to_owned()))
            .or_default();
        cell.0 += credits;
        cell.1 += requests;
        self.from_grants += credits - from_allowance;
        if from_allowance > 0 {
            *self
                .returning
                .entry(utc_day(at.saturating_add(window_ms)))
                .or_default() += from_allowance;
        }
    }

    /// A debit recorded at `at` leaves the window (expiry or refund): its
    /// allowance part leaves `used`, its figures the aggregates.
    fn uncount(&mut self, at: i64, debit: &Counted, window_ms: i64) {
        self.used -= debit.from_allowance;
        self.uncount_usage(
            at,
            &debit.route,
            debit.cost,
            debit.from_allowance,
            1,
            window_ms,
        );
    }

    /// Takes them out again; an entry at zero goes.
    fn uncount_usage(
        &mut self,
        at: i64,
        route: &str,
        credits: u64,
        from_allowance: u64,
        requests: u64,
        window_ms: i64,
    ) {
        let key = (utc_day(at), route.to_owned());
        if let Some(cell) = self.spent.get_mut(&key) {
            cell.0 = cell.0.saturating_sub(credits);
            cell.1 = cell.1.saturating_sub(requests);
            if *cell == (0, 0) {
                self.spent.remove(&key);
            }
        }
        self.from_grants = self
            .from_grants
            .saturating_sub(credits.saturating_sub(from_allowance));
        let day = utc_day(at.saturating_add(window_ms));
        if let Some(leaving) = self.returning.get_mut(&day) {
            *leaving = leaving.saturating_sub(from_allowance);
            if *leaving == 0 {
                self.returning.remove(&day);
            }
        }
    }

    /// The aggregates recomputed from the window (the recount).
    fn recount_usage(&mut self, window_ms: i64) {
        self.spent.clear();
        self.returning.clear();
        self.from_grants = 0;
        let counted: Vec<(i64, String, u64, u64)> = self
            .window
            .iter()
            .map(|((at, _), debit)| (*at, debit.route.clone(), debit.cost, debit.from_allowance))
            .collect();
        for (at, route, cost, from_allowance) in counted {
            self.count_usage(at, &route, cost, from_allowance, 1, window_ms);
        }
    }

    /// The credits left in live grants.
    fn grants_left(&self, now: i64) -> u64 {
        self.grants
            .values()
            .filter(|g| g.live(now))
            .map(|g| g.remaining)
            .sum()
    }

    /// Live grant numbers with credits left, in spending order.
    fn spendable(&self, now: i64) -> Vec<u64> {
        let mut numbers: Vec<u64> = self
            .grants
            .iter()
            .filter(|(_, g)| g.live(now) && g.remaining > 0)
            .map(|(n, _)| *n)
            .collect();
        numbers.sort_by_key(|n| self.grants[n].order(*n));
        numbers
    }

    /// Takes `need` credits from the grants; the parts in the order taken.
    fn take_from_grants(&mut self, mut need: u64, now: i64) -> Vec<(u64, u64)> {
        let mut parts = Vec::new();
        for number in self.spendable(now) {
            if need == 0 {
                break;
            }
            let grant = self.grants.get_mut(&number).expect("listed");
            let take = need.min(grant.remaining);
            grant.remaining -= take;
            need -= take;
            parts.push((number, take));
        }
        parts
    }

    /// Gives back `amount` of a debit's charge, last taken first (grant
    /// parts from the last, then the allowance); nothing goes to a grant
    /// that expired or was voided. Returns the new allowance part and parts.
    fn give_back(
        &mut self,
        from_allowance: u64,
        parts: &[(u64, u64)],
        mut amount: u64,
        now: i64,
    ) -> (u64, Vec<(u64, u64)>) {
        let mut kept = parts.to_vec();
        for (number, credits) in kept.iter_mut().rev() {
            if amount == 0 {
                break;
            }
            let back = amount.min(*credits);
            if let Some(grant) = self.grants.get_mut(number).filter(|g| g.live(now)) {
                grant.remaining += back;
            }
            *credits -= back;
            amount -= back;
        }
        kept.retain(|(_, credits)| *credits > 0);
        (from_allowance - amount.min(from_allowance), kept)
    }

    /// Brings the extra windows kept to `limits` (the plan's): drops the
    /// others, builds new ones from the counted debits inside them.
    fn sync_limits(&mut self, limits: &[WindowLimit], now: i64) {
        let same = self.limits.len() == limits.len()
            && limits
                .iter()
                .all(|l| self.limits.contains_key(&l.window_ms));
        if same {
            return;
        }
        self.limits
            .retain(|ms, _| limits.iter().any(|l| l.window_ms == *ms));
        for limit in limits {
            if self.limits.contains_key(&limit.window_ms) {
                continue;
            }
            let seen = now.saturating_sub(limit.window_ms as i64);
            let used = self
                .window
                .range((seen.saturating_add(1), String::new())..)
                .map(|(_, debit)| debit.cost)
                .sum();
            self.limits
                .insert(limit.window_ms, LimitTotal { used, seen });
        }
    }

    /// Milliseconds until the oldest debit counted after `seen` leaves a
    /// window of `window_ms`.
    fn release_in(&self, seen: i64, window_ms: i64, now: i64) -> Option<u64> {
        self.window
            .range((seen.saturating_add(1), String::new())..)
            .next()
            .map(|((at, _), _)| (at + window_ms - now).max(0) as u64)
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

    /// Drops what has left the window (and the history) as of `now`. The
    /// extra windows first: the debits leaving them are still in the map.
    fn trim(&self, account: &mut AccountState, now: i64) {
        let mut limits = std::mem::take(&mut account.limits);
        for (ms, total) in limits.iter_mut() {
            let cutoff = now.saturating_sub(*ms as i64);
            if cutoff <= total.seen {
                continue;
            }
            let left: u64 = account
                .window
                .range(
                    (total.seen.saturating_add(1), String::new())
                        ..(cutoff.saturating_add(1), String::new()),
                )
                .map(|(_, debit)| debit.cost)
                .sum();
            total.used = total.used.saturating_sub(left);
            total.seen = cutoff;
        }
        account.limits = limits;
        let cutoff = now.saturating_sub(self.window_ms);
        while let Some(entry) = account.window.first_entry() {
            if entry.key().0 > cutoff {
                break;
            }
            let ((at, _), debit) = entry.remove_entry();
            account.uncount(at, &debit, self.window_ms);
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
        limits: &[WindowLimit],
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
            grants: account.grants_left(now),
            limits: limit_uses(account, limits, now),
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
        let limits = plan_limits(debit.limits, &record.plan);
        self.trim(account, now);
        account.sync_limits(limits, now);
        if debit.cost == 0 {
            let window = self.window_state(account, &record.plan, allowance, limits, now);
            return Ok(DebitOutcome::Admitted {
                request_id: debit.request_id.to_owned(),
                at_ms: now,
                window,
                from_grants: 0,
            });
        }
        // The cost alone first: it may be beyond the bound, where a sum could overflow.
        let grants = account.grants_left(now);
        let from_allowance = allowance.saturating_sub(account.used);
        let main_refuses = debit.cost > bounds::MAX_CREDITS || debit.cost > from_allowance + grants;
        let refusing: Vec<usize> = limits
            .iter()
            .enumerate()
            .filter(|(_, limit)| {
                debit.cost
                    > limit
                        .credits
                        .saturating_sub(account.limits[&limit.window_ms].used)
            })
            .map(|(i, _)| i)
            .collect();
        if main_refuses || !refusing.is_empty() {
            // As the Redis script: the latest time at which each refusing
            // window fits, none when one never will.
            let mut retry: Option<u64> = Some(0);
            let mut binding: Option<usize> = None;
            let mut consider = |window: Option<usize>, r: Option<u64>| {
                if let Some(current) = retry {
                    match r {
                        None => {
                            retry = None;
                            binding = window;
                        }
                        Some(r) if r > current => {
                            retry = Some(r);
                            binding = window;
                        }
                        Some(_) => {}
                    }
                }
            };
            if main_refuses {
                if debit.cost > allowance + grants {
                    consider(None, None);
                } else {
                    let need = account.used + debit.cost - allowance - grants;
                    let mut freed = 0;
                    let r = account.window.iter().find_map(|((at, _), counted)| {
                        freed += counted.from_allowance;
                        (freed >= need).then(|| (at + self.window_ms - now).max(1) as u64)
                    });
                    consider(None, r);
                }
            }
            for i in refusing {
                let limit = &limits[i];
                let total = account.limits[&limit.window_ms];
                if debit.cost > limit.credits {
                    consider(Some(i), None);
                } else {
                    let need = total.used + debit.cost - limit.credits;
                    let mut freed = 0;
                    let r = account
                        .window
                        .range((total.seen.saturating_add(1), String::new())..)
                        .find_map(|((at, _), counted)| {
                            freed += counted.cost;
                            (freed >= need)
                                .then(|| (at + limit.window_ms as i64 - now).max(1) as u64)
                        });
                    consider(Some(i), r);
                }
            }
            let window = self.window_state(account, &record.plan, allowance, limits, now);
            return Ok(DebitOutcome::Rejected {
                window,
                retry_after_ms: retry,
                limit: binding,
            });
        }
        let id = if account.records.contains_key(debit.request_id) {
            debit.fallback_request_id
        } else {
            debit.request_id
        };
        // The allowance first, the rest from grants (soonest expiry first).
        let from_allowance = from_allowance.min(debit.cost);
        let parts = account.take_from_grants(debit.cost - from_allowance, now);
        account.window.insert(
            (now, id.to_owned()),
            Counted {
                cost: debit.cost,
                from_allowance,
                route: debit.route.to_owned(),
            },
        );
        account.used += from_allowance;
        for total in account.limits.values_mut() {
            total.used += debit.cost;
        }
        account.count_usage(
            now,
            debit.route,
            debit.cost,
            from_allowance,
            1,
            self.window_ms,
        );
        // Threshold alerts this debit crossed, queued in the same step.
        if queue_crossed_alerts(debit, account, allowance, from_allowance, now) {
            state.alerting.insert(debit.account.to_owned());
        }
        let account = state
            .accounts
            .get_mut(debit.account)
            .expect("looked up above");
        account.history.insert((now, id.to_owned()), ());
        account.records.insert(
            id.to_owned(),
            Record {
                at: now,
                cost: debit.cost,
                route: debit.route.to_owned(),
                refunded: false,
                from_allowance,
                parts,
            },
        );
        let window = self.window_state(account, &record.plan, allowance, limits, now);
        Ok(DebitOutcome::Admitted {
            request_id: id.to_owned(),
            at_ms: now,
            window,
            from_grants: debit.cost - from_allowance,
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
        let (cost, from_allowance, parts) =
            (record.cost, record.from_allowance, record.parts.clone());
        account.give_back(from_allowance, &parts, cost - from_allowance, now);
        if let Some(debit) = account.window.remove(&(at, request_id.to_owned())) {
            account.uncount(at, &debit, self.window_ms);
            for total in account.limits.values_mut() {
                if at > total.seen {
                    total.used = total.used.saturating_sub(debit.cost);
                }
            }
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
        let (cost, from_allowance, parts) =
            (record.cost, record.from_allowance, record.parts.clone());
        // An overrun is charged to the allowance part; an underrun goes back
        // last taken first.
        let mut new_allowance = from_allowance + final_cost.saturating_sub(cost);
        let key = (at, request_id.to_owned());
        // A debit that already left the window no longer counts either way.
        if account.window.contains_key(&key) {
            let used = account.used - from_allowance + new_allowance;
            if used > bounds::MAX_CREDITS {
                return Err(bounds::total_too_large(account_id, &used.to_string()));
            }
            crossing = Some((account.used, used));
        }
        let mut new_parts = parts.clone();
        if final_cost < cost {
            (new_allowance, new_parts) =
                account.give_back(from_allowance, &parts, cost - final_cost, now);
        }
        if let Some(debit) = account.window.get_mut(&key) {
            let route = debit.route.clone();
            debit.cost = final_cost;
            debit.from_allowance = new_allowance;
            account.used = account.used - from_allowance + new_allowance;
            account.uncount_usage(at, &route, cost, from_allowance, 0, self.window_ms);
            account.count_usage(at, &route, final_cost, new_allowance, 0, self.window_ms);
            for total in account.limits.values_mut() {
                if at > total.seen {
                    total.used = (total.used + final_cost).saturating_sub(cost);
                }
            }
        }
        if let Some(record) = account.records.get_mut(request_id) {
            record.cost = final_cost;
            record.from_allowance = new_allowance;
            record.parts = new_parts;
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
        let used: u64 = account
            .window
            .values()
            .map(|debit| debit.from_allowance)
            .sum();
        if used > bounds::MAX_CREDITS {
            return Err(bounds::total_too_large(account_id, &used.to_string()));
        }
        account.used = used;
        account.recount_usage(self.window_ms);
        // Rebuilt by the next debit or balance read, as on Redis.
        account.limits.clear();
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
        limits: &LimitTable,
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
        let plan_limits = if plans.contains_key(&record.plan) {
            let wanted = plan_limits(limits, &record.plan);
            state.sync_limits(wanted, now);
            wanted
        } else {
            &[]
        };
        let next_release = state.window.iter().next().map(|((first, _), _)| {
            let credits = state
                .window
                .range((*first, String::new())..)
                .take_while(|((at, _), _)| at == first)
                .map(|(_, debit)| debit.from_allowance)
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
            limits: limit_uses(state, plan_limits, now),
            grants: state
                .spendable(now)
                .into_iter()
                .map(|number| GrantBalance {
                    grant_id: grant_id(number),
                    remaining: state.grants[&number].remaining,
                    expires_at_ms: state.grants[&number].expires,
                })
                .collect(),
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
                    from_allowance: record.from_allowance,
                    from_grants: record.cost - record.from_allowance,
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
            from_grants: state.from_grants,
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

    pub async fn create_grant(
        &self,
        account: &str,
        grant: &NewGrant,
    ) -> Result<GrantCreated, LedgerError> {
        bounds::check_grant(grant.credits)?;
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(state) = state
            .accounts
            .get_mut(account)
            .filter(|a| a.record.is_some())
        else {
            return Ok(GrantCreated::NoAccount);
        };
        if grant.expires_at_ms.is_some_and(|expires| expires <= now) {
            return Ok(GrantCreated::AlreadyExpired);
        }
        let total = state.grants_left(now) + grant.credits;
        if total > bounds::MAX_CREDITS {
            return Err(bounds::grants_too_large(account, &total.to_string()));
        }
        state.grant_seq += 1;
        let number = state.grant_seq;
        state.grants.insert(
            number,
            StoredGrant {
                credits: grant.credits,
                remaining: grant.credits,
                expires: grant.expires_at_ms,
                created: now,
                note: grant.note.clone(),
                voided: false,
            },
        );
        Ok(GrantCreated::Created(Grant {
            grant_id: grant_id(number),
            credits: grant.credits,
            remaining: grant.credits,
            expires_at_ms: grant.expires_at_ms,
            created_at_ms: now,
            note: grant.note.clone(),
            voided: false,
        }))
    }

    pub async fn grants(&self, account: &str) -> Result<Option<super::GrantList>, LedgerError> {
        let now = self.clock.now_ms();
        let state = self.lock();
        let Some(state) = state.accounts.get(account).filter(|a| a.record.is_some()) else {
            return Ok(None);
        };
        let mut numbers: Vec<&u64> = state.grants.keys().collect();
        numbers.sort_by_key(|n| state.grants[n].order(**n));
        Ok(Some(super::GrantList {
            now_ms: now,
            grants: numbers
                .into_iter()
                .map(|n| {
                    let g = &state.grants[n];
                    Grant {
                        grant_id: grant_id(*n),
                        credits: g.credits,
                        remaining: g.remaining,
                        expires_at_ms: g.expires,
                        created_at_ms: g.created,
                        note: g.note.clone(),
                        voided: g.voided,
                    }
                })
                .collect(),
        }))
    }

    pub async fn void_grant(&self, account: &str, number: u64) -> Result<GrantVoided, LedgerError> {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let Some(state) = state
            .accounts
            .get_mut(account)
            .filter(|a| a.record.is_some())
        else {
            return Ok(GrantVoided::NoAccount);
        };
        let Some(grant) = state.grants.get_mut(&number) else {
            return Ok(GrantVoided::Unknown);
        };
        let voided = if grant.live(now) { grant.remaining } else { 0 };
        grant.voided = true;
        Ok(GrantVoided::Voided(voided))
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
    from_allowance: u64,
    now: i64,
) -> bool {
    // Only the allowance part counts in the 30-day window's `used`.
    let before = account.used - from_allowance;
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

/// A plan's extra windows (none when it has none).
fn plan_limits<'a>(limits: &'a LimitTable, plan: &str) -> &'a [WindowLimit] {
    limits.get(plan).map_or(&[], Vec::as_slice)
}

/// The plan's extra windows as the account's totals see them.
fn limit_uses(account: &AccountState, limits: &[WindowLimit], now: i64) -> Vec<LimitUse> {
    limits
        .iter()
        .map(|limit| {
            let total = account
                .limits
                .get(&limit.window_ms)
                .copied()
                .unwrap_or(LimitTotal { used: 0, seen: now });
            LimitUse {
                name: limit.name.clone(),
                window_ms: limit.window_ms,
                credits: limit.credits,
                used: total.used,
                next_release_in_ms: account.release_in(total.seen, limit.window_ms as i64, now),
            }
        })
        .collect()
}
