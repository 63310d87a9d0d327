//! The alert queue on Redis (docs/alerts.md): per account, the hash
//! `cg:{<account>}:q` in the account's slot, which the debit script writes
//! in the same step as the debit (`queue_crossed_alerts` in
//! `lua/prelude.lua`); the senders' operations on it are `lua/alerts.lua`.
//!
//! The senders find accounts through the index `cg:alerts` (accounts scored
//! by when their queue is next due). It lives in a slot of its own on a
//! Redis Cluster, so the debit cannot write it: the gateway adds an account
//! after a debit that crossed ([`RedisLedger::hint_alerts`]), off the request
//! path, and [`RedisLedger::sweep_alert_queues`] finds queues the index
//! missed (a gateway that died in between). Whoever moves an account's
//! score later, or takes it out, checks its queue again afterwards, so a
//! concurrent hint is never lost.

use redis::AsyncCommands;
use redis::Value;

use super::transport::Handle;
use super::RedisLedger;
use crate::ledger::alerts::{
    AlertList, AlertState, Attempt, Claim, Finished, QueuedAlert, Settled, FAILED_KEPT,
};
use crate::ledger::keys::{
    account_of_alert_queue, AccountKeys, ALERT_INDEX, ALERT_QUEUE_PATTERN, ALERT_SWEEP_LEASE,
};
use crate::ledger::LedgerError;

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn due(value: i64) -> Option<i64> {
    (value >= 0).then_some(value)
}

impl RedisLedger {
    /// Marks the account as having alerts due now (`ZADD LT`: never later
    /// than what the index says already).
    pub async fn hint_alerts(&self, account: &str) -> Result<(), LedgerError> {
        self.index_lower(account, 0).await
    }

    async fn index_lower(&self, account: &str, score: i64) -> Result<(), LedgerError> {
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        let _: i64 = transport
            .call(
                redis::cmd("ZADD")
                    .arg(ALERT_INDEX)
                    .arg("LT")
                    .arg(score)
                    .arg(account)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// Accounts whose queue is due (Redis clock), at most `limit`.
    pub async fn alert_accounts_due(&self, limit: usize) -> Result<Vec<String>, LedgerError> {
        let mut invocation = self.core.scripts.alerts.prepare_invoke();
        invocation.key(ALERT_INDEX).arg("accounts").arg(limit);
        self.core.transport.invoke(&invocation).await
    }

    /// Leases the account's due pending alerts (at most `max`) to the
    /// caller for `lease`.
    pub async fn claim_alerts(
        &self,
        account: &str,
        lease: std::time::Duration,
        max: usize,
    ) -> Result<Claim, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.core.scripts.alerts.prepare_invoke();
        invocation
            .key(&keys.alerts)
            .arg("claim")
            .arg(millis(lease))
            .arg(max);
        let reply: Vec<String> = self.core.transport.invoke(&invocation).await?;
        let next_due = reply
            .get(1)
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(|| LedgerError::Protocol(format!("alert claim replied {reply:?}")))?;
        let alerts = reply[2..]
            .chunks(2)
            .map(|pair| parse_record(account, &pair[0], pair.get(1).map_or("", |s| s)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Claim {
            alerts,
            next_due_ms: due(next_due),
        })
    }

    /// Records how a claimed alert's attempt ended.
    pub async fn finish_alert(
        &self,
        alert: &QueuedAlert,
        attempt: &Attempt,
    ) -> Result<Finished, LedgerError> {
        let keys = AccountKeys::new(&alert.account);
        let mut invocation = self.core.scripts.alerts.prepare_invoke();
        invocation
            .key(&keys.alerts)
            .arg("finish")
            .arg(alert.number)
            .arg(alert.next_ms);
        match attempt {
            Attempt::Delivered => invocation.arg("d").arg(0).arg(0).arg(0).arg(""),
            Attempt::Failed {
                wait,
                retry_for,
                error,
            } => invocation
                .arg("r")
                .arg(millis(*wait))
                .arg(millis(*retry_for))
                .arg(millis(FAILED_KEPT))
                .arg(truncate(error)),
        };
        let reply: (String, String) = self.core.transport.invoke(&invocation).await?;
        let settled = match reply.0.as_str() {
            "d" => Settled::Delivered,
            "r" => Settled::WillRetry,
            "f" => Settled::GaveUp,
            "x" => Settled::NotHeld,
            other => {
                return Err(LedgerError::Protocol(format!(
                    "alert finish replied {other:?}"
                )))
            }
        };
        let next_due = reply
            .1
            .parse::<i64>()
            .map_err(|_| LedgerError::Protocol(format!("alert finish replied {reply:?}")))?;
        Ok(Finished {
            settled,
            next_due_ms: due(next_due),
        })
    }

    async fn queue_next_due(&self, account: &str) -> Result<Option<i64>, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.core.scripts.alerts.prepare_invoke();
        invocation.key(&keys.alerts).arg("due");
        let reply: String = self.core.transport.invoke(&invocation).await?;
        let next = reply
            .parse::<i64>()
            .map_err(|_| LedgerError::Protocol(format!("alert due replied {reply:?}")))?;
        Ok(due(next))
    }

    /// Puts the account in the index at `next_due` (out of it for `None`),
    /// then reads its queue again: an alert queued meanwhile (whose hint may
    /// have come before this write) lowers the score back.
    pub async fn index_alert_account(
        &self,
        account: &str,
        next_due: Option<i64>,
    ) -> Result<(), LedgerError> {
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        match next_due {
            Some(score) => {
                let _: i64 = transport
                    .call(conn.zadd(ALERT_INDEX, account, score))
                    .await?;
            }
            None => {
                let _: i64 = transport.call(conn.zrem(ALERT_INDEX, account)).await?;
            }
        }
        if let Some(now_due) = self.queue_next_due(account).await? {
            if next_due.is_none_or(|score| now_due < score) {
                self.index_lower(account, now_due).await?;
            }
        }
        Ok(())
    }

    /// The queued alerts in `state` of every account in the index, oldest
    /// crossing first, at most `limit` (an admin call: it reads every queue
    /// the index names).
    pub async fn list_alerts(
        &self,
        state: AlertState,
        limit: usize,
    ) -> Result<AlertList, LedgerError> {
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        let accounts: Vec<String> = transport.call(conn.zrange(ALERT_INDEX, 0, -1)).await?;
        let mut items = Vec::new();
        for chunk in accounts.chunks(64) {
            let queues = futures_util::future::join_all(chunk.iter().map(|account| async move {
                let keys = AccountKeys::new(account);
                let mut conn = transport.conn().await?;
                let all: Vec<(String, String)> = transport.call(conn.hgetall(&keys.alerts)).await?;
                Ok::<_, LedgerError>((account, all))
            }))
            .await;
            for queue in queues {
                let (account, all) = queue?;
                for (number, record) in all {
                    let alert = parse_record(account, &number, &record)?;
                    if alert.state == state {
                        items.push(alert);
                    }
                }
            }
        }
        items.sort_by(|a, b| (a.at_ms, &a.account, a.number).cmp(&(b.at_ms, &b.account, b.number)));
        let truncated = items.len() > limit;
        items.truncate(limit);
        Ok(AlertList { items, truncated })
    }

    /// Puts every account with an alert queue into the index, if no other
    /// gateway did so within `every` (a lease): the safety net for a hint
    /// lost between a debit and its index write. `SCAN`s every primary.
    /// `Ok(None)` when another gateway holds the lease.
    pub async fn sweep_alert_queues(
        &self,
        every: std::time::Duration,
    ) -> Result<Option<u64>, LedgerError> {
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        let won: Option<String> = transport
            .call(
                redis::cmd("SET")
                    .arg(ALERT_SWEEP_LEASE)
                    .arg("1")
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(every))
                    .query_async(&mut conn),
            )
            .await?;
        if won.is_none() {
            return Ok(None);
        }
        let nodes = match &conn {
            Handle::Single(_) | Handle::Sentinel(_) => vec![None],
            Handle::Cluster(_) => self.primaries().await?.into_iter().map(Some).collect(),
        };
        let mut found = 0;
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(ALERT_QUEUE_PATTERN)
                    .arg("COUNT")
                    .arg(1000)
                    .arg("TYPE")
                    .arg("hash");
                let reply: Value = self.on_node(scan, node.as_ref()).await?;
                let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply)
                    .map_err(|e| LedgerError::Protocol(format!("SCAN replied {e}")))?;
                for account in keys.iter().filter_map(|k| account_of_alert_queue(k)) {
                    found += 1;
                    self.index_lower(account, 0).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(Some(found))
    }
}

fn truncate(error: &str) -> &str {
    let mut end = error.len().min(200);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

/// `<p|f> <next> <attempts> <at> <ppm> <used> <allowance> <available>[ <error>]`.
fn parse_record(account: &str, number: &str, record: &str) -> Result<QueuedAlert, LedgerError> {
    let bad = || LedgerError::Protocol(format!("alert {account}/{number}: bad record {record:?}"));
    let mut fields = record.splitn(9, ' ');
    let mut next = || fields.next().ok_or_else(bad);
    let state = match next()? {
        "p" => AlertState::Pending,
        "f" => AlertState::Failed,
        _ => return Err(bad()),
    };
    let next_ms = next()?.parse().map_err(|_| bad())?;
    let attempts = next()?.parse().map_err(|_| bad())?;
    let at_ms = next()?.parse().map_err(|_| bad())?;
    let threshold_ppm = next()?.parse().map_err(|_| bad())?;
    let used = next()?.parse().map_err(|_| bad())?;
    let monthly_allowance = next()?.parse().map_err(|_| bad())?;
    let available = next()?.parse().map_err(|_| bad())?;
    let last_error = fields.next().filter(|e| !e.is_empty()).map(str::to_owned);
    Ok(QueuedAlert {
        account: account.to_owned(),
        number: number.parse().map_err(|_| bad())?,
        threshold_ppm,
        used,
        monthly_allowance,
        available,
        at_ms,
        state,
        attempts,
        next_ms,
        last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_with_and_without_an_error() {
        let alert = parse_record(
            "site-42",
            "3",
            "p 1700 2 1600 800000 80 100 20 HTTP 500 from receiver",
        )
        .unwrap();
        assert_eq!(alert.number, 3);
        assert_eq!(alert.state, AlertState::Pending);
        assert_eq!(
            (alert.next_ms, alert.attempts, alert.at_ms),
            (1700, 2, 1600)
        );
        assert_eq!(
            (
                alert.threshold_ppm,
                alert.used,
                alert.monthly_allowance,
                alert.available
            ),
            (800_000, 80, 100, 20)
        );
        assert_eq!(alert.last_error.as_deref(), Some("HTTP 500 from receiver"));
        assert_eq!(alert.event_id(), "site-42:1600:3");
        let failed = parse_record("a", "1", "f 9 24 1 1000000 5 5 0").unwrap();
        assert_eq!(
            (failed.state, failed.last_error),
            (AlertState::Failed, None)
        );
        assert!(parse_record("a", "1", "x 1 2").is_err());
    }
}
