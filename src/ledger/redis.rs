//! The Redis ledger: shared by every gateway instance.
//!
//! Each operation on an account's window is one Lua script (`*.lua` beside
//! this file), so check-and-record is atomic across instances and the clock
//! is Redis `TIME`. Scripts are sent by SHA and reloaded transparently after
//! NOSCRIPT (`redis::Script::invoke_async`). Every call is bounded by the
//! configured timeout; the `ConnectionManager` reconnects in the background
//! and never replays a command, so a timeout can never debit twice.
//!
//! Debits against one Redis are batched: callers queue them, and one task
//! sends whatever queued while earlier calls were in flight as a single
//! script call (each debit in it still atomic and in order). Under load this
//! turns dozens of script calls, replies and wake-ups into one; a lone debit
//! goes out at once. A Redis Cluster gets one debit per call (a script may
//! only touch one slot).

use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncCommands, Script, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::connection::{Handle, Redis};

use super::keys::{api_key_lookup, AccountKeys};
use super::SettleOutcome;
use super::{
    AccountRecord, Balance, Debit, DebitOutcome, HistoryCursor, HistoryItem, HistoryPage, KeyOwner,
    LedgerError, PlanTable, RefundOutcome, Release, WindowState,
};

const PRELUDE: &str = include_str!("prelude.lua");

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

/// Debits per script call, at most.
const MAX_BATCH: usize = 64;
/// Batches in flight at once; further debits queue and form the next batch.
const MAX_IN_FLIGHT: usize = 4;

pub struct RedisLedger {
    inner: Arc<Inner>,
    /// Present for one Redis (not a cluster): where debits queue for a batch.
    batches: Option<mpsc::UnboundedSender<PendingDebit>>,
    /// The plan table of recent debits, shared by queued debits so a batch
    /// can check they agree without comparing tables.
    plans: std::sync::Mutex<Arc<PlanTable>>,
}

impl std::ops::Deref for RedisLedger {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// One debit's script arguments, owned so it can wait in a queue.
struct DebitArgs {
    account: String,
    cost: u64,
    request_id: String,
    request_id_generated: bool,
    fallback_request_id: String,
    route: String,
    /// On the Redis clock; 0 = none (see [`DebitDeadline`]).
    deadline_ms: i64,
}

struct PendingDebit {
    args: DebitArgs,
    plans: Arc<PlanTable>,
    reply: oneshot::Sender<Result<DebitOutcome, LedgerError>>,
}

/// What the ledger's calls share with its batch task.
pub struct Inner {
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
        let batched = matches!(target, Target::Single(_));
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let inner = Arc::new(Inner {
            connection,
            scripts: Scripts {
                debit: with_prelude(include_str!("debit.lua")),
                balance: with_prelude(include_str!("balance.lua")),
                refund: with_prelude(include_str!("refund.lua")),
                settle: with_prelude(include_str!("settle.lua")),
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
        });
        let batches = batched.then(|| {
            let (queue, queued) = mpsc::unbounded_channel();
            tokio::spawn(run_batches(inner.clone(), queued));
            queue
        });
        Ok(RedisLedger {
            inner,
            batches,
            plans: std::sync::Mutex::new(Arc::default()),
        })
    }

    pub async fn debit(&self, debit: &Debit<'_>) -> Result<DebitOutcome, LedgerError> {
        let args = DebitArgs {
            account: debit.account.to_owned(),
            cost: debit.cost,
            request_id: debit.request_id.to_owned(),
            request_id_generated: debit.request_id_generated,
            fallback_request_id: debit.fallback_request_id.to_owned(),
            route: debit.route.to_owned(),
            deadline_ms: self.deadline.for_call_sent_now(),
        };
        let Some(queue) = &self.batches else {
            let mut outcomes = self.run_debits(&[&args], debit.plans).await?;
            return outcomes
                .pop()
                .unwrap_or_else(|| Err(LedgerError::Protocol("no reply".into())));
        };
        let plans = self.shared_plans(debit.plans);
        let (reply, replied) = oneshot::channel();
        queue
            .send(PendingDebit { args, plans, reply })
            .map_err(|_| LedgerError::Unavailable("the debit queue is closed".into()))?;
        // The batch call has its own timeout; this one also covers the wait
        // for a free slot. A debit given up on here that Redis runs later is
        // refused by its deadline.
        match tokio::time::timeout(self.timeout * 2, replied).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(LedgerError::Unavailable(
                "the debit batch was dropped".into(),
            )),
            Err(_) => Err(LedgerError::Timeout),
        }
    }

    /// The table behind an `Arc` shared with other debits that used an equal one.
    fn shared_plans(&self, plans: &PlanTable) -> Arc<PlanTable> {
        let mut current = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if **current != *plans {
            *current = Arc::new(plans.clone());
        }
        current.clone()
    }
}

/// Sends queued debits as batches until the ledger is dropped.
async fn run_batches(inner: Arc<Inner>, mut queued: mpsc::UnboundedReceiver<PendingDebit>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = queued.recv().await {
        // While every slot is busy, arrivals queue up and join this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            inner.run_batch(batch).await;
            drop(slot);
        });
    }
}

impl Inner {
    async fn run_batch(&self, mut batch: Vec<PendingDebit>) {
        // A caller that gave up has already answered its client: skip it.
        batch.retain(|pending| !pending.reply.is_closed());
        // Debits queued across a config reload may carry different tables.
        while !batch.is_empty() {
            let same_table = batch
                .iter()
                .take_while(|p| Arc::ptr_eq(&p.plans, &batch[0].plans))
                .count();
            let rest = batch.split_off(same_table);
            let group = std::mem::replace(&mut batch, rest);
            let args: Vec<&DebitArgs> = group.iter().map(|p| &p.args).collect();
            match self.run_debits(&args, &group[0].plans).await {
                Ok(outcomes) => {
                    for (pending, outcome) in group.into_iter().zip(outcomes) {
                        let _ = pending.reply.send(outcome);
                    }
                }
                Err(error) => {
                    for pending in group {
                        let _ = pending.reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// One script call for `debits`, in order; one outcome each.
    async fn run_debits(
        &self,
        debits: &[&DebitArgs],
        plans: &PlanTable,
    ) -> Result<Vec<Result<DebitOutcome, LedgerError>>, LedgerError> {
        let mut invocation = self.scripts.debit.prepare_invoke();
        invocation
            .arg(self.window_ms)
            .arg(self.retention_ms)
            .arg(plans.len());
        for (plan, allowance) in plans {
            invocation.arg(plan).arg(*allowance);
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
            let fallback = &debit.fallback_request_id;
            invocation
                .key(keys.account)
                .key(keys.window)
                .key(keys.ids)
                .arg(debit.cost)
                .arg(id)
                .arg(packed_id(fallback).unwrap_or_else(|| text_id(fallback)))
                .arg(indexed_as)
                .arg(&debit.route)
                .arg(debit.deadline_ms);
        }
        let sent = self.deadline.local_now();
        let reply: String = self.invoke(&invocation).await?;
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
                let reply = parse_debit(line, debit, plans)?;
                if let Some(now) = reply.now_ms {
                    self.deadline.observe(sent, now);
                }
                reply.outcome
            })
            .collect();
        Ok(outcomes)
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

    /// Refunds the debit recorded under `request_id`; `at_ms` (from the
    /// debit's outcome) finds it directly, without it a packed id is looked
    /// for across the account's history (admin refunds).
    pub async fn refund(
        &self,
        account: &str,
        request_id: &str,
        at_ms: Option<i64>,
    ) -> Result<RefundOutcome, LedgerError> {
        let invocation = self.lookup(&self.scripts.refund, account, request_id, at_ms);
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
        at_ms: Option<i64>,
        final_cost: u64,
    ) -> Result<SettleOutcome, LedgerError> {
        let mut invocation = self.lookup(&self.scripts.settle, account, request_id, at_ms);
        invocation.arg(final_cost);
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

    /// A script call that finds one debit by its request id (`find_debit`
    /// in `prelude.lua`): both encodings the id may be stored in, so one
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
            .arg(self.window_ms)
            .arg(packed_id(request_id).unwrap_or_default())
            .arg(text_id(request_id))
            .arg(request_id)
            .arg(at_ms.map(|at| at.to_string()).unwrap_or_default());
        invocation
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

    /// Pages are cut by (at, record): a Redis cursor carries the last
    /// record, hex-encoded, where the memory ledger carries the request id.
    pub async fn history(
        &self,
        account: &str,
        limit: usize,
        before: Option<&HistoryCursor>,
    ) -> Result<HistoryPage, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.scripts.history.prepare_invoke();
        invocation.key(&keys.account).key(&keys.window).arg(limit);
        match before {
            Some(cursor) => invocation
                .arg(cursor.at_ms)
                .arg(crate::hex::decode(&cursor.request_id).unwrap_or_default()),
            None => invocation.arg("").arg(""),
        };
        let reply: Vec<Value> = self.invoke(&invocation).await?;
        let more = int(&reply, 0)? == 1;
        let routes: std::collections::HashMap<u64, String> = match reply.get(1) {
            Some(Value::Array(pairs)) => (0..pairs.len() / 2)
                .filter_map(|i| Some((unsigned(pairs, 2 * i).ok()?, text(pairs, 2 * i + 1).ok()?)))
                .collect(),
            _ => Default::default(),
        };
        let mut items = Vec::with_capacity(reply.len() / 2);
        let mut last_member = Vec::new();
        for pair in 0..(reply.len() - 2) / 2 {
            let Some(Value::BulkString(member)) = reply.get(2 + 2 * pair) else {
                continue;
            };
            let at_ms = int(&reply, 3 + 2 * pair)?;
            let Some(record) = DebitRecord::parse(member) else {
                continue;
            };
            items.push(HistoryItem {
                at_ms,
                route: routes
                    .get(&record.route)
                    .cloned()
                    .unwrap_or_else(|| format!("route-{}", record.route)),
                cost: record.cost,
                request_id: record.request_id,
                refunded: record.refunded,
            });
            last_member.clone_from(member);
        }
        let next = if more {
            items.last().map(|last| HistoryCursor {
                at_ms: last.at_ms,
                request_id: crate::hex::encode(&last_member),
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
        let hex_digest = crate::hex::encode(digest);
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
        let Some(digest) = stored.as_deref().and_then(crate::hex::decode_array::<32>) else {
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

/// One line of the debit script's reply, decoded.
struct DebitReply {
    outcome: Result<DebitOutcome, LedgerError>,
    /// The Redis clock when the script ran, when the line carries it.
    now_ms: Option<i64>,
}

/// Decodes one line of the debit script's reply (see `debit.lua`).
fn parse_debit(
    line: &str,
    debit: &DebitArgs,
    plans: &PlanTable,
) -> Result<DebitReply, LedgerError> {
    let bad = || LedgerError::Protocol(format!("debit replied {line:?}"));
    let (status, rest) = line.split_once(' ').unwrap_or((line, ""));
    let simple = |outcome| {
        Ok(DebitReply {
            outcome,
            now_ms: None,
        })
    };
    match status {
        "N" => return simple(Ok(DebitOutcome::NoAccount)),
        "S" => return simple(Ok(DebitOutcome::Suspended)),
        "U" => return simple(Ok(DebitOutcome::UnknownPlan(rest.to_owned()))),
        "E" => return simple(Err(LedgerError::Unavailable(rest.to_owned()))),
        "X" => {
            return Ok(DebitReply {
                outcome: Err(LedgerError::Timeout),
                now_ms: Some(rest.parse().map_err(|_| bad())?),
            })
        }
        "A" | "R" => {}
        _ => return Err(bad()),
    }
    let mut fields = rest.split(' ').map(|field| field.parse::<i64>());
    let mut next = || fields.next().and_then(Result::ok).ok_or_else(bad);
    let plan_number = usize::try_from(next()?).map_err(|_| bad())?;
    let (plan, allowance) = plan_number
        .checked_sub(1)
        .and_then(|index| plans.iter().nth(index))
        .ok_or_else(bad)?;
    let used = u64::try_from(next()?).map_err(|_| bad())?;
    let next_release = next()?;
    let extra = next()?;
    let now = next()?;
    let window = WindowState {
        plan: plan.clone(),
        allowance: *allowance,
        used,
        next_release_in_ms: u64::try_from(next_release).ok(),
    };
    let outcome = if status == "A" {
        DebitOutcome::Admitted {
            request_id: if extra == 2 {
                debit.fallback_request_id.clone()
            } else {
                debit.request_id.clone()
            },
            at_ms: now,
            window,
        }
    } else {
        DebitOutcome::Rejected {
            window,
            retry_after_ms: u64::try_from(extra).ok(),
        }
    };
    Ok(DebitReply {
        outcome: Ok(outcome),
        now_ms: Some(now),
    })
}

// A request id as the debit record stores it (see `prelude.lua`): the flags
// byte, then 16 lower-case hex digits packed into 8 bytes (the gateway's own
// ids), or any other id as a varint length and its bytes.

const PACKED: u8 = 2;
const REFUNDED: u8 = 1;

/// The packed form, when `request_id` is 16 lower-case hex digits.
fn packed_id(request_id: &str) -> Option<Vec<u8>> {
    let bytes = request_id.as_bytes();
    if bytes.len() != 16 || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut encoded = Vec::with_capacity(9);
    encoded.push(PACKED);
    for pair in bytes.chunks(2) {
        encoded.push(crate::hex::digit(pair[0])? << 4 | crate::hex::digit(pair[1])?);
    }
    Some(encoded)
}

/// The text form, whatever the id looks like.
fn text_id(request_id: &str) -> Vec<u8> {
    let bytes = request_id.as_bytes();
    let mut encoded = Vec::with_capacity(bytes.len() + 3);
    encoded.push(0);
    push_varint(&mut encoded, bytes.len() as u64);
    encoded.extend_from_slice(bytes);
    encoded
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let low = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 128);
    }
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        n |= u64::from(byte & 127).checked_shl(shift)?;
        if byte < 128 {
            return Some(n);
        }
    }
    None
}

/// One debit record (a window member), decoded.
#[derive(Debug, PartialEq, Eq)]
struct DebitRecord {
    request_id: String,
    refunded: bool,
    cost: u64,
    route: u64,
}

impl DebitRecord {
    fn parse(member: &[u8]) -> Option<DebitRecord> {
        let flags = *member.first()?;
        let (request_id, mut pos) = if flags & PACKED != 0 {
            (crate::hex::encode(member.get(1..9)?), 9)
        } else {
            let mut pos = 1;
            let len = usize::try_from(read_varint(member, &mut pos)?).ok()?;
            let id = std::str::from_utf8(member.get(pos..pos.checked_add(len)?)?).ok()?;
            (id.to_owned(), pos + len)
        };
        let cost = read_varint(member, &mut pos)?;
        let route = read_varint(member, &mut pos)?;
        Some(DebitRecord {
            request_id,
            refunded: flags & REFUNDED != 0,
            cost,
            route,
        })
    }
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
    fn debit_records_round_trip_packed_and_text_ids() {
        let packed = packed_id("00ff10a0b1c2d3e4").unwrap();
        assert_eq!(packed, [2, 0x00, 0xff, 0x10, 0xa0, 0xb1, 0xc2, 0xd3, 0xe4]);
        let mut member = packed.clone();
        member[0] |= REFUNDED;
        push_varint(&mut member, 300);
        push_varint(&mut member, 2);
        // 9 bytes of id, 2 of cost, 1 of route: 12 bytes keeps a skiplist entry in its smallest size.
        assert_eq!(member.len(), 12);
        assert_eq!(
            DebitRecord::parse(&member),
            Some(DebitRecord {
                request_id: "00ff10a0b1c2d3e4".into(),
                refunded: true,
                cost: 300,
                route: 2,
            })
        );
        // Upper-case or other lengths stay text, so they round-trip exactly.
        for id in ["00FF10A0B1C2D3E4", "client-req-1", "0123456789abcdef0"] {
            assert_eq!(packed_id(id), None);
            let mut member = text_id(id);
            push_varint(&mut member, u64::from(u32::MAX) * 4);
            push_varint(&mut member, 1);
            let record = DebitRecord::parse(&member).unwrap();
            assert_eq!(record.request_id, id);
            assert_eq!(record.cost, u64::from(u32::MAX) * 4);
            assert!(!record.refunded);
        }
        assert_eq!(DebitRecord::parse(&[0, 5, b'a']), None);
    }
}
