//! The Redis ledger: shared by every gateway instance.
//!
//! Each operation on an account's window is one Lua script (`*.lua` beside
//! this file), so check-and-record is atomic across instances and the clock
//! is Redis `TIME`. Scripts are sent by SHA and reloaded transparently after
//! NOSCRIPT (`redis::Script::invoke_async`). Every call is bounded by the
//! configured timeout; the `ConnectionManager` reconnects in the background
//! and never replays a command, so a timeout can never debit twice.

use std::time::Duration;

use redis::{AsyncCommands, Script, Value};

use super::connection::{Handle, Redis};

use super::keys::{api_key_lookup, AccountKeys};
use super::SettleOutcome;
use super::{
    AccountRecord, Balance, Debit, DebitOutcome, HistoryCursor, HistoryItem, HistoryPage, KeyOwner,
    LedgerError, PlanTable, RefundOutcome, Release, WindowState,
};

const PRELUDE: &str = include_str!("trim.lua");

struct Scripts {
    debit: Script,
    balance: Script,
    refund: Script,
    settle: Script,
    history: Script,
    put_account: Script,
}

/// Where the ledger lives.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Single(&'a str),
    Cluster(&'a [String]),
}

pub struct RedisLedger {
    connection: Redis,
    scripts: Scripts,
    window_ms: u64,
    retention_ms: u64,
    timeout: Duration,
    deadline: DebitDeadline,
    timing_out_since: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long calls may time out back to back before the connection is
/// replaced.
const RECONNECT_AFTER: Duration = Duration::from_secs(3);

/// Keeps a debit that Redis runs after the gateway gave up on it from
/// recording anything.
///
/// A frozen Redis (SIGSTOP, a long fork, a slow script) still holds the
/// debits queued on its socket; when it wakes it would run them, charging
/// requests the gateway already answered with 503. So each debit carries a
/// deadline on the Redis clock — half the call timeout after it was sent —
/// past which the script refuses. The Redis clock is estimated from the
/// `TIME` every debit reply carries (offset error ≤ half a round trip). What
/// remains is a script that ran in time but whose reply was held up for more
/// than half the timeout; that window is a Redis stall between running a
/// script and writing its reply.
struct DebitDeadline {
    /// Redis clock minus local clock, in ms; `i64::MIN` until first observed.
    offset_ms: std::sync::atomic::AtomicI64,
    budget_ms: i64,
}

impl DebitDeadline {
    fn new(timeout: Duration) -> DebitDeadline {
        DebitDeadline {
            offset_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            budget_ms: i64::try_from(timeout.as_millis() / 2)
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }

    fn local_now(&self) -> i64 {
        crate::clock::Clock::now_ms(&crate::clock::SystemClock)
    }

    /// The deadline for a call sent now, on the Redis clock; 0 before the
    /// clocks were compared once.
    fn for_call_sent_now(&self) -> i64 {
        match self.offset_ms.load(std::sync::atomic::Ordering::Relaxed) {
            i64::MIN => 0,
            offset => self.local_now() + offset + self.budget_ms,
        }
    }

    fn observe(&self, sent_local: i64, redis_now: i64) {
        let received_local = self.local_now();
        let midpoint = sent_local + (received_local - sent_local) / 2;
        self.offset_ms
            .store(redis_now - midpoint, std::sync::atomic::Ordering::Relaxed);
    }
}

impl RedisLedger {
    /// Connects lazily: the gateway starts (and answers 503) while Redis is
    /// down, and serves as soon as it is reachable.
    pub async fn connect(
        target: Target<'_>,
        window: Duration,
        history_retention: Duration,
        timeout: Duration,
    ) -> Result<RedisLedger, LedgerError> {
        let connection = match target {
            Target::Single(url) => Redis::single(url, timeout)?,
            Target::Cluster(urls) => Redis::cluster(urls, timeout)?,
        };
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        Ok(RedisLedger {
            connection,
            scripts: Scripts {
                debit: with_prelude(include_str!("debit.lua")),
                balance: with_prelude(include_str!("balance.lua")),
                refund: Script::new(include_str!("refund.lua")),
                settle: Script::new(include_str!("settle.lua")),
                history: Script::new(include_str!("history.lua")),
                put_account: Script::new(include_str!("put_account.lua")),
            },
            window_ms,
            retention_ms: u64::try_from(history_retention.as_millis())
                .unwrap_or(u64::MAX)
                .max(window_ms),
            timeout,
            deadline: DebitDeadline::new(timeout),
            timing_out_since: std::sync::Mutex::new(None),
        })
    }

    /// Runs one Redis exchange under the ledger timeout.
    async fn call<T, F>(&self, operation: F) -> Result<T, LedgerError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = match tokio::time::timeout(self.timeout, operation).await {
            Err(_) => Err(LedgerError::Timeout),
            Ok(Err(error)) if error.is_timeout() => Err(LedgerError::Timeout),
            Ok(Err(error)) => Err(LedgerError::Unavailable(error.to_string())),
            Ok(Ok(value)) => Ok(value),
        };
        self.track_timeouts(matches!(result, Err(LedgerError::Timeout)))
            .await;
        result
    }

    /// After [`RECONNECT_AFTER`] of nothing but timeouts, starts a fresh
    /// connection (see `Redis::reset`).
    async fn track_timeouts(&self, timed_out: bool) {
        let since = {
            let mut first = self
                .timing_out_since
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !timed_out {
                *first = None;
                return;
            }
            let since = *first.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() < RECONNECT_AFTER {
                return;
            }
            *first = None;
            since
        };
        tracing::warn!(
            "redis has not answered for {:?}; reconnecting",
            since.elapsed()
        );
        self.connection.reset().await;
    }

    /// Runs a script by SHA. redis-rs reloads it once after NOSCRIPT; a
    /// cache flushed again in between (failover, repeated `SCRIPT FLUSH`)
    /// gets a few more tries — NOSCRIPT means nothing ran, so retrying is safe.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, LedgerError> {
        let mut conn = self.conn().await?;
        self.call(async {
            let mut attempts = 0;
            loop {
                match invocation.invoke_async(&mut conn).await {
                    Err(error)
                        if attempts < 3
                            && error.kind()
                                == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        attempts += 1;
                    }
                    result => return result,
                }
            }
        })
        .await
    }

    /// A connection for one operation; creating a cluster connection is
    /// bounded by the ledger timeout like every call.
    async fn conn(&self) -> Result<Handle, LedgerError> {
        match tokio::time::timeout(self.timeout, self.connection.handle()).await {
            Ok(result) => result,
            Err(_) => Err(LedgerError::Timeout),
        }
    }

    pub async fn debit(&self, debit: &Debit<'_>) -> Result<DebitOutcome, LedgerError> {
        let keys = AccountKeys::new(debit.account);
        let mut invocation = self.scripts.debit.prepare_invoke();
        invocation
            .key(&keys.account)
            .key(&keys.window)
            .key(&keys.history)
            .key(&keys.debits)
            .key(&keys.used)
            .arg(debit.cost)
            .arg(self.window_ms)
            .arg(self.retention_ms)
            .arg(debit.request_id)
            .arg(debit.fallback_request_id)
            .arg(debit.route)
            .arg(self.deadline.for_call_sent_now());
        for (plan, allowance) in debit.plans {
            invocation.arg(plan).arg(*allowance);
        }
        let sent = self.deadline.local_now();
        let reply: Vec<Value> = self.invoke(&invocation).await?;
        if let Some(redis_now) = reply.last().and_then(|v| match v {
            Value::Int(n) => Some(*n),
            _ => None,
        }) {
            self.deadline.observe(sent, redis_now);
        }
        parse_debit(&reply)
    }

    pub async fn refund(
        &self,
        account: &str,
        request_id: &str,
    ) -> Result<RefundOutcome, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.scripts.refund.prepare_invoke();
        invocation
            .key(&keys.window)
            .key(&keys.debits)
            .key(&keys.used)
            .arg(request_id);
        let reply: String = self.invoke(&invocation).await?;
        match reply.as_str() {
            "refunded" => Ok(RefundOutcome::Refunded),
            "already" => Ok(RefundOutcome::AlreadyRefunded),
            "unknown" => Ok(RefundOutcome::Unknown),
            other => Err(LedgerError::Protocol(format!("refund replied {other}"))),
        }
    }

    pub async fn settle(
        &self,
        account: &str,
        request_id: &str,
        final_cost: u64,
    ) -> Result<SettleOutcome, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.scripts.settle.prepare_invoke();
        invocation
            .key(&keys.window)
            .key(&keys.debits)
            .key(&keys.used)
            .arg(request_id)
            .arg(final_cost);
        let reply: Vec<Value> = self.invoke(&invocation).await?;
        match text(&reply, 0)?.as_str() {
            "settled" => Ok(SettleOutcome::Settled {
                used: unsigned(&reply, 1)?,
            }),
            "refunded" => Ok(SettleOutcome::Refunded),
            "unknown" => Ok(SettleOutcome::Unknown),
            other => Err(LedgerError::Protocol(format!("settle replied {other}"))),
        }
    }

    pub async fn balance(
        &self,
        account: &str,
        plans: &PlanTable,
    ) -> Result<Option<Balance>, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.scripts.balance.prepare_invoke();
        invocation
            .key(&keys.account)
            .key(&keys.window)
            .key(&keys.history)
            .key(&keys.debits)
            .key(&keys.used)
            .arg(self.window_ms);
        let reply: Vec<Value> = self.invoke(&invocation).await?;
        if reply.is_empty() {
            return Ok(None);
        }
        let plan = text(&reply, 0)?;
        let release_at = int(&reply, 4)?;
        Ok(Some(Balance {
            allowance: plans.get(&plan).copied(),
            account: AccountRecord {
                plan,
                suspended: text(&reply, 1)? == "1",
            },
            used: unsigned(&reply, 2)?,
            now_ms: int(&reply, 3)?,
            window_ms: self.window_ms,
            next_release: (release_at >= 0).then(|| Release {
                at_ms: release_at,
                credits: unsigned(&reply, 5).unwrap_or(0),
            }),
        }))
    }

    pub async fn history(
        &self,
        account: &str,
        limit: usize,
        before: Option<&HistoryCursor>,
    ) -> Result<HistoryPage, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.scripts.history.prepare_invoke();
        invocation.key(&keys.history).key(&keys.debits).arg(limit);
        match before {
            Some(cursor) => invocation.arg(cursor.at_ms).arg(&cursor.request_id),
            None => invocation.arg("").arg(""),
        };
        let reply: Vec<Value> = self.invoke(&invocation).await?;
        let more = int(&reply, 0)? == 1;
        let mut items = Vec::with_capacity(reply.len() / 2);
        for pair in 0..(reply.len() - 1) / 2 {
            let request_id = text(&reply, 1 + 2 * pair)?;
            let record = text(&reply, 2 + 2 * pair)?;
            let Some(item) = parse_record(request_id, &record) else {
                continue;
            };
            items.push(item);
        }
        let next = if more {
            items.last().map(|last| HistoryCursor {
                at_ms: last.at_ms,
                request_id: last.request_id.clone(),
            })
        } else {
            None
        };
        Ok(HistoryPage { items, next })
    }

    pub async fn put_account(&self, id: &str, record: &AccountRecord) -> Result<bool, LedgerError> {
        let keys = AccountKeys::new(id);
        let mut invocation = self.scripts.put_account.prepare_invoke();
        invocation
            .key(&keys.account)
            .arg(&record.plan)
            .arg(if record.suspended { "1" } else { "0" });
        let created: i64 = self.invoke(&invocation).await?;
        Ok(created == 1)
    }

    pub async fn get_account(&self, id: &str) -> Result<Option<AccountRecord>, LedgerError> {
        let keys = AccountKeys::new(id);
        let mut conn = self.conn().await?;
        let (plan, suspended): (Option<String>, Option<String>) = self
            .call(
                redis::cmd("HMGET")
                    .arg(&keys.account)
                    .arg("plan")
                    .arg("suspended")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(plan.map(|plan| AccountRecord {
            plan,
            suspended: suspended.as_deref() == Some("1"),
        }))
    }

    /// Writes the account's key list first and the lookup second (they may
    /// live on different cluster nodes): a failure in between leaves a listed
    /// key that cannot authenticate, never a usable key nobody can revoke.
    pub async fn add_key(
        &self,
        account: &str,
        key_id: &str,
        digest: &[u8; 32],
    ) -> Result<bool, LedgerError> {
        if self.get_account(account).await?.is_none() {
            return Ok(false);
        }
        let keys = AccountKeys::new(account);
        let mut conn = self.conn().await?;
        let hex_digest = crate::auth::hex(digest);
        let _: i64 = self
            .call(conn.hset(&keys.api_keys, key_id, &hex_digest))
            .await?;
        let _: () = self
            .call(conn.set(api_key_lookup(digest), format!("{account}\t{key_id}")))
            .await?;
        Ok(true)
    }

    /// Deletes the lookup first, so the key stops working even if the second
    /// write fails.
    pub async fn revoke_key(&self, account: &str, key_id: &str) -> Result<bool, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut conn = self.conn().await?;
        let stored: Option<String> = self.call(conn.hget(&keys.api_keys, key_id)).await?;
        let Some(digest) = stored.as_deref().and_then(parse_hex_digest) else {
            return Ok(false);
        };
        let _: i64 = self.call(conn.del(api_key_lookup(&digest))).await?;
        let _: i64 = self.call(conn.hdel(&keys.api_keys, key_id)).await?;
        Ok(true)
    }

    pub async fn find_key(&self, digest: &[u8; 32]) -> Result<Option<KeyOwner>, LedgerError> {
        let mut conn = self.conn().await?;
        let owner: Option<String> = self.call(conn.get(api_key_lookup(digest))).await?;
        let Some((account_id, key_id)) = owner.as_deref().and_then(|o| o.split_once('\t')) else {
            return Ok(None);
        };
        let Some(account) = self.get_account(account_id).await? else {
            return Ok(None);
        };
        Ok(Some(KeyOwner {
            account_id: account_id.to_owned(),
            key_id: key_id.to_owned(),
            digest: *digest,
            account,
        }))
    }

    /// What Redis says about keeping debits: `None` where `CONFIG GET` is
    /// not allowed (managed services often forbid it).
    pub async fn durability(&self) -> Result<Option<Durability>, LedgerError> {
        let (Some(appendonly), Some(maxmemory_policy)) = (
            self.config_get("appendonly").await?,
            self.config_get("maxmemory-policy").await?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Durability {
            appendonly: appendonly == "yes",
            maxmemory_policy,
        }))
    }

    async fn config_get(&self, name: &str) -> Result<Option<String>, LedgerError> {
        let mut conn = self.conn().await?;
        match self
            .call(
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async::<Vec<String>>(&mut conn),
            )
            .await
        {
            Ok(pair) => Ok(pair.get(1).cloned()),
            // Refused (ACL, renamed command): not knowable, not an outage.
            Err(LedgerError::Unavailable(message))
                if message.contains("NOPERM") || message.contains("unknown command") =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    pub async fn ping(&self) -> Result<(), LedgerError> {
        let mut conn = self.conn().await?;
        let _: String = self.call(redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }
}

/// Redis settings that decide whether debits survive a crash or memory pressure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    pub appendonly: bool,
    pub maxmemory_policy: String,
}

impl Durability {
    /// Why debits could be lost, if they could.
    pub fn risks(&self) -> Vec<String> {
        let mut risks = Vec::new();
        if !self.appendonly {
            risks.push(
                "appendonly is off: a Redis crash or restart loses debits (set appendonly yes, appendfsync everysec)"
                    .to_owned(),
            );
        }
        if self.maxmemory_policy != "noeviction" {
            risks.push(format!(
                "maxmemory-policy is {}: Redis may evict ledgers and hand accounts a fresh allowance (set noeviction)",
                self.maxmemory_policy
            ));
        }
        risks
    }
}

fn parse_debit(reply: &[Value]) -> Result<DebitOutcome, LedgerError> {
    let status = text(reply, 0)?;
    match status.as_str() {
        "no_account" => return Ok(DebitOutcome::NoAccount),
        "expired" => return Err(LedgerError::Timeout),
        "suspended" => return Ok(DebitOutcome::Suspended),
        "unknown_plan" => return Ok(DebitOutcome::UnknownPlan(text(reply, 1)?)),
        _ => {}
    }
    let next_release = int(reply, 4)?;
    let window = WindowState {
        plan: text(reply, 1)?,
        allowance: unsigned(reply, 2)?,
        used: unsigned(reply, 3)?,
        next_release_in_ms: u64::try_from(next_release).ok(),
    };
    match status.as_str() {
        "admitted" => Ok(DebitOutcome::Admitted {
            request_id: text(reply, 5)?,
            window,
        }),
        "rejected" => Ok(DebitOutcome::Rejected {
            window,
            retry_after_ms: u64::try_from(int(reply, 5)?).ok(),
        }),
        other => Err(LedgerError::Protocol(format!("debit replied {other}"))),
    }
}

/// `cost|at_ms|refunded|route` → a history item.
fn parse_record(request_id: String, record: &str) -> Option<HistoryItem> {
    let mut fields = record.splitn(4, '|');
    let cost = fields.next()?.parse().ok()?;
    let at_ms = fields.next()?.parse().ok()?;
    let refunded = fields.next()? == "1";
    let route = fields.next()?.to_owned();
    Some(HistoryItem {
        at_ms,
        route,
        cost,
        request_id,
        refunded,
    })
}

fn parse_hex_digest(text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

fn text(reply: &[Value], index: usize) -> Result<String, LedgerError> {
    match reply.get(index) {
        Some(Value::BulkString(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Some(Value::SimpleString(text)) => Ok(text.clone()),
        Some(Value::Int(n)) => Ok(n.to_string()),
        other => Err(LedgerError::Protocol(format!(
            "expected text at {index}, got {other:?}"
        ))),
    }
}

fn int(reply: &[Value], index: usize) -> Result<i64, LedgerError> {
    match reply.get(index) {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| LedgerError::Protocol(format!("expected an integer at {index}"))),
        other => Err(LedgerError::Protocol(format!(
            "expected an integer at {index}, got {other:?}"
        ))),
    }
}

fn unsigned(reply: &[Value], index: usize) -> Result<u64, LedgerError> {
    u64::try_from(int(reply, index)?)
        .map_err(|_| LedgerError::Protocol(format!("negative value at {index}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_routes_may_contain_bars() {
        let item = parse_record("r1".into(), "7|1795521600000|1|image|gen").unwrap();
        assert_eq!(item.cost, 7);
        assert_eq!(item.at_ms, 1_795_521_600_000);
        assert!(item.refunded);
        assert_eq!(item.route, "image|gen");
        assert!(parse_record("r1".into(), "garbage").is_none());
    }

    #[test]
    fn hex_digests_round_trip() {
        let digest = [0x5a; 32];
        assert_eq!(parse_hex_digest(&crate::auth::hex(&digest)), Some(digest));
        assert_eq!(parse_hex_digest("zz"), None);
    }
}
