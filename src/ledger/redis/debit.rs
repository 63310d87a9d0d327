//! Check and record debits (`lua/debit.lua`), one script call per batch.

use super::codec::{encoded_id, packed_id, text_id, DebitLine, RecordedAs, WindowFields};
use super::{Core, RedisLedger};
use crate::ledger::alerts;
use crate::ledger::keys::AccountKeys;
use crate::ledger::{
    bounds, limits_spec, Debit, DebitOutcome, LedgerError, LimitTable, PlanTable, UnconfirmedDebit,
    WindowState,
};

/// One debit's script arguments, owned so it can wait in a queue.
pub(super) struct DebitArgs {
    account: String,
    cost: u64,
    request_id: String,
    request_id_generated: bool,
    fallback_request_id: String,
    route: String,
    /// On the Redis clock; never `deadline::NO_DEADLINE` once sent.
    deadline_ms: i64,
    /// `alerts.thresholds` as the script reads them: comma-separated
    /// millionths of the allowance, `""` when none.
    alert_thresholds: String,
}

/// Why a debit call failed.
pub(super) enum Failure {
    /// The call itself: the script may have run, and recorded the debit.
    Call(LedgerError),
    /// The script answered for this debit: what it says was (not) recorded.
    Answer(LedgerError),
}

impl RedisLedger {
    pub async fn debit(&self, debit: &Debit<'_>) -> Result<DebitOutcome, LedgerError> {
        bounds::check_plans(debit.plans)?;
        let deadline_ms = self.core.deadline_for_call_sent_now().await?;
        let args = DebitArgs {
            account: debit.account.to_owned(),
            cost: debit.cost,
            request_id: debit.request_id.to_owned(),
            request_id_generated: debit.request_id_generated,
            fallback_request_id: debit.fallback_request_id.to_owned(),
            route: debit.route.to_owned(),
            deadline_ms,
            alert_thresholds: alerts::script_list(debit.alert_thresholds),
        };
        let result = match &self.batcher {
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
            None => match self
                .core
                .run_debits(&[&args], debit.plans, debit.limits)
                .await
            {
                Ok(mut outcomes) => outcomes
                    .pop()
                    .unwrap_or_else(|| Err(LedgerError::Protocol("no reply".into())))
                    .map_err(Failure::Answer),
                Err(error) => Err(Failure::Call(error)),
            },
        };
        result.map_err(|failure| match failure {
            Failure::Answer(error) => error,
            Failure::Call(error) => LedgerError::Unconfirmed {
                error: Box::new(error),
                debit: std::sync::Arc::new(UnconfirmedDebit {
                    account: debit.account.to_owned(),
                    request_id: debit.request_id.to_owned(),
                    fallback_request_id: debit.fallback_request_id.to_owned(),
                    from_ms: self.core.deadline.earliest_record(deadline_ms),
                    deadline_ms,
                }),
            },
        })
    }
}

impl Core {
    /// The deadline for a debit sent now. Before the first reply told the
    /// Redis clock, one `TIME` call reads it: a debit is never sent without
    /// a deadline, so a failed call can always be voided
    /// ([`RedisLedger::void_unconfirmed`]).
    async fn deadline_for_call_sent_now(&self) -> Result<i64, LedgerError> {
        let deadline = self.deadline.for_call_sent_now();
        if deadline != super::deadline::NO_DEADLINE {
            return Ok(deadline);
        }
        let mut conn = self.transport.conn().await?;
        let sent = self.deadline.local_now();
        let (secs, micros): (i64, i64) = self
            .transport
            .call(redis::cmd("TIME").query_async(&mut conn))
            .await?;
        self.deadline.observe(sent, secs * 1000 + micros / 1000);
        Ok(self.deadline.for_call_sent_now())
    }

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
                .key(keys.alerts)
                .arg(debit.cost)
                .arg(id)
                .arg(encoded_id(&debit.fallback_request_id))
                .arg(indexed_as)
                .arg(&debit.route)
                .arg(debit.deadline_ms)
                .arg(&debit.alert_thresholds);
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
            from_grants,
        } => Ok(DebitOutcome::Admitted {
            from_grants,
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
        DebitLine::PastDeadline { .. } => Err(LedgerError::Unavailable(
            "Redis reached the debit after its deadline; nothing was recorded".into(),
        )),
        DebitLine::Damaged { field } => Err(bounds::damaged(&debit.account, &field)),
        DebitLine::Failed(message) => Err(LedgerError::Unavailable(message)),
    }
}
