//! Changes to a recorded debit: refund (`lua/refund.lua`) and settlement
//! (`lua/settle.lua`). Both find the debit with one lookup (`find_debit` in
//! `lua/prelude.lua`).

use redis::{Script, Value};

use super::codec::{packed_id, text_id, RefundReply, SettleReply};
use super::RedisLedger;
use crate::ledger::keys::AccountKeys;
use crate::ledger::{bounds, LedgerError, RefundOutcome, SettleOutcome};

impl RedisLedger {
    /// Refunds the debit recorded under `request_id`; `at_ms` (from the
    /// debit's outcome) finds it directly, without it a packed id is looked
    /// for across the account's history (admin refunds).
    pub async fn refund(
        &self,
        account: &str,
        request_id: &str,
        at_ms: Option<i64>,
    ) -> Result<RefundOutcome, LedgerError> {
        let invocation = self.lookup(&self.core.scripts.refund, account, request_id, at_ms);
        let reply: String = self.core.transport.invoke(&invocation).await?;
        Ok(match RefundReply::parse(&reply)? {
            RefundReply::Refunded => RefundOutcome::Refunded,
            RefundReply::Already => RefundOutcome::AlreadyRefunded,
            RefundReply::Unknown => RefundOutcome::Unknown,
        })
    }

    /// Replaces a debit's cost by `final_cost`. Refused (nothing written)
    /// when the cost or the account's new total would be above
    /// [`bounds::MAX_CREDITS`], or when the account's totals are damaged.
    pub async fn settle(
        &self,
        account: &str,
        request_id: &str,
        at_ms: Option<i64>,
        final_cost: u64,
    ) -> Result<SettleOutcome, LedgerError> {
        bounds::check_settled_cost(final_cost)?;
        let mut invocation = self.lookup(&self.core.scripts.settle, account, request_id, at_ms);
        invocation.arg(final_cost);
        let reply: Vec<Value> = self.core.transport.invoke(&invocation).await?;
        match SettleReply::parse(&reply)? {
            SettleReply::Settled { used } => Ok(SettleOutcome::Settled { used }),
            SettleReply::Refunded => Ok(SettleOutcome::Refunded),
            SettleReply::Unknown => Ok(SettleOutcome::Unknown),
            SettleReply::Damaged { field } => Err(bounds::damaged(account, &field)),
            SettleReply::TooLarge { total } => Err(bounds::total_too_large(account, &total)),
        }
    }

    /// A script call that finds one debit by its request id (`find_debit`
    /// in `lua/prelude.lua`): both encodings the id may be stored in, so one
    /// call finds it either way.
    fn lookup<'s>(
        &self,
        script: &'s Script,
        account: &str,
        request_id: &str,
        at_ms: Option<i64>,
    ) -> redis::ScriptInvocation<'s> {
        let keys = AccountKeys::new(account);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(keys.account)
            .key(keys.window)
            .key(keys.ids)
            .key(keys.usage)
            .key(keys.grants)
            .arg(self.core.window_ms)
            .arg(packed_id(request_id).unwrap_or_default())
            .arg(text_id(request_id))
            .arg(request_id)
            .arg(at_ms.map(|at| at.to_string()).unwrap_or_default());
        invocation
    }
}
