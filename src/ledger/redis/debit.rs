//! Check and record debits (`lua/debit.lua`), one script call per batch.

use super::codec::{encoded_id, packed_id, text_id, DebitLine, RecordedAs, WindowFields};
use super::{Core, RedisLedger};
use crate::ledger::keys::AccountKeys;
use crate::ledger::{
    bounds, limits_spec, Debit, DebitOutcome, LedgerError, LimitTable, PlanTable, WindowState,
};

/// One debit's script arguments, owned so it can wait in a queue.
pub(super) struct DebitArgs {
    account: String,
    cost: u64,
    request_id: String,
    request_id_generated: bool,
    fallback_request_id: String,
    route: String,
    /// On the Redis clock; `deadline::NO_DEADLINE` = none.
    deadline_ms: i64,
}

impl RedisLedger {
    pub async fn debit(&self, debit: &Debit<'_>) -> Result<DebitOutcome, LedgerError> {
        bounds::check_plans(debit.plans)?;
        let args = DebitArgs {
            account: debit.account.to_owned(),
            cost: debit.cost,
            request_id: debit.request_id.to_owned(),
            request_id_generated: debit.request_id_generated,
            fallback_request_id: debit.fallback_request_id.to_owned(),
            route: debit.route.to_owned(),
            deadline_ms: self.core.deadline.for_call_sent_now(),
        };
        match &self.batcher {
            Some(batcher) => {
                batcher
                    .submit(
                        args,
                        debit.plans,
                        debit.limits,
                        self.core.transport.timeout(),
                    )
                    .await
            }
            None => self
                .core
                .run_debits(&[&args], debit.plans, debit.limits)
                .await?
                .pop()
                .unwrap_or_else(|| Err(LedgerError::Protocol("no reply".into()))),
        }
    }
}

impl Core {
    /// One script call for `debits`, in order; one outcome each.
    pub(super) async fn run_debits(
        &self,
        debits: &[&DebitArgs],
        plans: &PlanTable,
        limits: &LimitTable,
    ) -> Result<Vec<Result<DebitOutcome, LedgerError>>, LedgerError> {
        let mut invocation = self.scripts.debit.prepare_invoke();
        invocation
            .arg(self.window_ms)
            .arg(self.retention_ms)
            .arg(plans.len());
        for (plan, allowance) in plans {
            invocation
                .arg(plan)
                .arg(*allowance)
                .arg(limits_spec(limits.get(plan)));
        }
        for debit in debits {
            let keys = AccountKeys::new(&debit.account);
            // Only the gateway's own ids are packed and left out of the index:
            // nobody else can have used them. A client's id is checked.
            let packed = debit
                .request_id_generated
                .then(|| packed_id(&debit.request_id))
                .flatten();
            let (id, indexed_as) = match packed {
                Some(packed) => (packed, ""),
                None => (text_id(&debit.request_id), debit.request_id.as_str()),
            };
            invocation
                .key(keys.account)
                .key(keys.window)
                .key(keys.ids)
                .key(keys.usage)
                .key(keys.grants)
                .arg(debit.cost)
                .arg(id)
                .arg(encoded_id(&debit.fallback_request_id))
                .arg(indexed_as)
                .arg(&debit.route)
                .arg(debit.deadline_ms);
        }
        let sent = self.deadline.local_now();
        let reply: String = self.transport.invoke(&invocation).await?;
        let lines: Vec<&str> = reply.split('\n').collect();
        if lines.len() != debits.len() {
            return Err(LedgerError::Protocol(format!(
                "{} replies for {} debits",
                lines.len(),
                debits.len()
            )));
        }
        let outcomes = lines
            .into_iter()
            .zip(debits)
            .map(|(line, debit)| {
                let line = DebitLine::parse(line)?;
                if let Some(now) = line.now_ms() {
                    self.deadline.observe(sent, now);
                }
                outcome(line, debit, plans, limits)
            })
            .collect();
        Ok(outcomes)
    }
}

fn outcome(
    line: DebitLine,
    debit: &DebitArgs,
    plans: &PlanTable,
    limits: &LimitTable,
) -> Result<DebitOutcome, LedgerError> {
    let window = |fields: WindowFields| -> Result<WindowState, LedgerError> {
        let (plan, allowance) = fields
            .plan_number
            .checked_sub(1)
            .and_then(|index| plans.iter().nth(index))
            .ok_or_else(|| {
                LedgerError::Protocol(format!("debit replied plan number {}", fields.plan_number))
            })?;
        let plan_limits = limits.get(plan);
        if fields.limits.len() != plan_limits.map_or(0, Vec::len) {
            return Err(LedgerError::Protocol(format!(
                "debit replied {} extra windows for plan {plan}",
                fields.limits.len()
            )));
        }
        Ok(WindowState {
            plan: plan.clone(),
            allowance: *allowance,
            used: fields.used,
            next_release_in_ms: u64::try_from(fields.next_release_in_ms).ok(),
            grants: fields.grants,
            limits: WindowState::limit_uses(
                plan_limits,
                fields
                    .limits
                    .iter()
                    .map(|&(used, next)| (used, u64::try_from(next).ok())),
            ),
        })
    };
    match line {
        DebitLine::Admitted {
            window: fields,
            recorded_as,
            now_ms,
            ..
        } => Ok(DebitOutcome::Admitted {
            request_id: match recorded_as {
                RecordedAs::RequestId => debit.request_id.clone(),
                RecordedAs::Fallback => debit.fallback_request_id.clone(),
            },
            at_ms: now_ms,
            window: window(fields)?,
        }),
        DebitLine::Rejected {
            window: fields,
            retry_after_ms,
            refused_by,
            ..
        } => Ok(DebitOutcome::Rejected {
            window: window(fields)?,
            retry_after_ms,
            limit: refused_by.checked_sub(1),
        }),
        DebitLine::NoAccount => Ok(DebitOutcome::NoAccount),
        DebitLine::Suspended => Ok(DebitOutcome::Suspended),
        DebitLine::UnknownPlan(plan) => Ok(DebitOutcome::UnknownPlan(plan)),
        DebitLine::PastDeadline { .. } => Err(LedgerError::Timeout),
        DebitLine::Damaged { field } => Err(bounds::damaged(&debit.account, &field)),
        DebitLine::Failed(message) => Err(LedgerError::Unavailable(message)),
    }
}
