//! Changes to a recorded debit: refund (`lua/refund.lua`) and settlement
//! (`lua/settle.lua`). Both find the debit with one lookup (`find_debit` in
//! `lua/prelude.lua`).

use redis::{Script, Value};

use super::codec::{packed_id, text_id, RefundReply, SettleReply};
use super::RedisLedger;
use crate::ledger::keys::AccountKeys;
use crate::ledger::{
    bounds, LedgerError, RefundOutcome, SettleAlerts, SettleOutcome, UnconfirmedDebit, VoidOutcome,
};

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
            RefundReply::TooEarly => {
                return Err(LedgerError::Protocol("refund replied early".into()))
            }
        })
    }

    /// Takes back a debit whose call failed after it may have run: once the
    /// Redis clock has passed its deadline (before that, `TooEarly`), it is
    /// refunded if it was recorded. It is looked for by time range, under
    /// the fallback id first (unique to this request), then under its
    /// request id.
    pub async fn void_unconfirmed(
        &self,
        debit: &UnconfirmedDebit,
    ) -> Result<VoidOutcome, LedgerError> {
        let range = format!("{}:{}", debit.from_ms, debit.deadline_ms);
        for id in [&debit.fallback_request_id, &debit.request_id] {
            let invocation =
                self.lookup_with(&self.core.scripts.refund, &debit.account, id, &range);
            let reply: String = self
                .core
                .transport
                .invoke_in_background(&invocation)
                .await?;
            match RefundReply::parse(&reply)? {
                RefundReply::TooEarly => return Ok(VoidOutcome::TooEarly),
                // Already: refunded by someone else (an operator); not charged.
                RefundReply::Refunded | RefundReply::Already => return Ok(VoidOutcome::Voided),
                RefundReply::Unknown => {}
            }
        }
        Ok(VoidOutcome::Absent)
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
        alerts: Option<&SettleAlerts<'_>>,
    ) -> Result<(SettleOutcome, u64), LedgerError> {
        bounds::check_settled_cost(final_cost)?;
        let mut invocation = self.lookup(&self.core.scripts.settle, account, request_id, at_ms);
        invocation
            .key(AccountKeys::new(account).alerts)
            .arg(final_cost);
        match alerts {
            Some(alerts) => {
                invocation
                    .arg(crate::ledger::alerts::script_list(alerts.thresholds))
                    .arg(alerts.plans.len());
                for (plan, allowance) in alerts.plans {
                    invocation.arg(plan).arg(*allowance);
                }
            }
            None => {
                invocation.arg("").arg(0);
            }
        }
        let reply: Vec<Value> = self.core.transport.invoke(&invocation).await?;
        match SettleReply::parse(&reply)? {
            SettleReply::Settled {
                used,
                alerts_queued,
            } => Ok((SettleOutcome::Settled { used }, alerts_queued)),
            SettleReply::Refunded => Ok((SettleOutcome::Refunded, 0)),
            SettleReply::Unknown => Ok((SettleOutcome::Unknown, 0)),
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
        let at = at_ms.map(|at| at.to_string()).unwrap_or_default();
        self.lookup_with(script, account, request_id, &at)
    }

    /// [`Self::lookup`] with the time argument spelled out: `<at>`, `''`
    /// (unknown) or `<from>:<deadline>` (a range, refused until the Redis
    /// clock has passed the deadline).
    fn lookup_with<'s>(
        &self,
        script: &'s Script,
        account: &str,
        request_id: &str,
        at: &str,
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
            .arg(at);
        invocation
    }
}
