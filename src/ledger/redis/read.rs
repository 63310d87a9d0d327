//! Reads: the balance (`lua/balance.lua`) and history pages (`lua/history.lua`).

use redis::Value;

use super::codec::{BalanceReply, DebitRecord, HistoryReply};
use super::RedisLedger;
use crate::ledger::keys::AccountKeys;
use crate::ledger::{
    bounds, AccountRecord, Balance, HistoryCursor, HistoryItem, HistoryPage, LedgerError,
    PlanTable, Release,
};

impl RedisLedger {
    /// `Ok(None)` when the account does not exist; an error naming the
    /// field when its stored totals are damaged (repair: `recount`).
    pub async fn balance(
        &self,
        account: &str,
        plans: &PlanTable,
    ) -> Result<Option<Balance>, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.core.scripts.balance.prepare_invoke();
        invocation
            .key(&keys.account)
            .key(&keys.window)
            .key(&keys.usage)
            .arg(self.core.window_ms);
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
            } => Ok(Some(Balance {
                allowance: plans.get(&plan).copied(),
                account: AccountRecord { plan, suspended },
                used,
                now_ms,
                window_ms: self.core.window_ms,
                next_release: release.map(|(at_ms, credits)| Release { at_ms, credits }),
            })),
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
