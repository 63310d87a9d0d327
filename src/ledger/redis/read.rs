//! Reads: the balance (`lua/balance.lua`) and history pages (`lua/history.lua`).

use redis::Value;

use super::codec::{BalanceReply, DebitRecord, HistoryReply};
use super::RedisLedger;
use crate::ledger::keys::AccountKeys;
use crate::ledger::{
    bounds, grant_id, limits_spec, AccountRecord, Balance, GrantBalance, HistoryCursor,
    HistoryItem, HistoryPage, LedgerError, LimitTable, LimitUse, PlanTable, Release,
};

impl RedisLedger {
    /// `Ok(None)` when the account does not exist; an error naming the
    /// field when its stored totals are damaged (repair: `recount`).
    pub async fn balance(
        &self,
        account: &str,
        plans: &PlanTable,
        limits: &LimitTable,
    ) -> Result<Option<Balance>, LedgerError> {
        self.balance_with(account, plans, Some(limits)).await
    }

    /// The balance; with `limits` `None` the account's extra windows are
    /// neither synced to its plan nor reported (the account list).
    pub(super) async fn balance_with(
        &self,
        account: &str,
        plans: &PlanTable,
        limits: Option<&LimitTable>,
    ) -> Result<Option<Balance>, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.core.scripts.balance.prepare_invoke();
        invocation
            .key(&keys.account)
            .key(&keys.window)
            .key(&keys.usage)
            .key(&keys.grants)
            .arg(self.core.window_ms)
            .arg(limits.map_or(0, |_| plans.len()));
        if let Some(limits) = limits {
            for plan in plans.keys() {
                invocation.arg(plan).arg(limits_spec(limits.get(plan)));
            }
        }
        let limits = limits.unwrap_or(&crate::ledger::NO_LIMITS);
        let reply: Vec<Value> = self.core.transport.invoke(&invocation).await?;
        match BalanceReply::parse(&reply)? {
            BalanceReply::NoAccount => Ok(None),
            BalanceReply::Damaged { field } => Err(bounds::damaged(account, &field)),
            BalanceReply::Found {
                plan,
                suspended,
                used,
                now_ms,
                release,
                grants: _,
                limits: windows,
                grant_list,
            } => {
                // The windows are the plan's (the script kept them in its order).
                let limits = limits
                    .get(&plan)
                    .into_iter()
                    .flatten()
                    .zip(windows)
                    .map(|(limit, (_, used, release_at))| LimitUse {
                        name: limit.name.clone(),
                        window_ms: limit.window_ms,
                        credits: limit.credits,
                        used,
                        next_release_in_ms: u64::try_from(release_at - now_ms).ok(),
                    })
                    .collect();
                Ok(Some(Balance {
                    allowance: plans.get(&plan).copied(),
                    account: AccountRecord { plan, suspended },
                    used,
                    now_ms,
                    window_ms: self.core.window_ms,
                    next_release: release.map(|(at_ms, credits)| Release { at_ms, credits }),
                    limits,
                    grants: grant_list
                        .into_iter()
                        .map(|(number, remaining, expires)| GrantBalance {
                            grant_id: grant_id(number),
                            remaining,
                            expires_at_ms: (expires >= 0).then_some(expires),
                        })
                        .collect(),
                }))
            }
        }
    }

    /// Pages are cut by (at, record): a Redis cursor carries the last
    /// record, hex-encoded, where the memory ledger carries the request id.
    pub async fn history(
        &self,
        account: &str,
        limit: usize,
        before: Option<&HistoryCursor>,
    ) -> Result<HistoryPage, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.core.scripts.history.prepare_invoke();
        invocation.key(&keys.account).key(&keys.window).arg(limit);
        match before {
            Some(cursor) => invocation
                .arg(cursor.at_ms)
                .arg(crate::hex::decode(&cursor.request_id).unwrap_or_default()),
            None => invocation.arg("").arg(""),
        };
        let reply: Vec<Value> = self.core.transport.invoke(&invocation).await?;
        let reply = HistoryReply::parse(reply)?;
        let mut items = Vec::with_capacity(reply.entries.len());
        let mut last_member: &[u8] = &[];
        for (member, at_ms) in &reply.entries {
            let Some(record) = DebitRecord::parse(member) else {
                continue;
            };
            items.push(HistoryItem {
                at_ms: *at_ms,
                route: reply
                    .routes
                    .get(&record.route)
                    .cloned()
                    .unwrap_or_else(|| format!("route-{}", record.route)),
                cost: record.cost,
                request_id: record.request_id,
                refunded: record.refunded,
                from_allowance: record.from_allowance,
                from_grants: record.cost - record.from_allowance,
            });
            last_member = member;
        }
        let next = if reply.more {
            items.last().map(|last| HistoryCursor {
                at_ms: last.at_ms,
                request_id: crate::hex::encode(last_member),
            })
        } else {
            None
        };
        Ok(HistoryPage { items, next })
    }
}
