//! How the Redis ledger talks to Redis: the connection (one Redis, a Redis
//! Cluster, or the primary Redis Sentinel names, behind the same
//! `ConnectionLike`, so scripts and commands are written once), the per-call
//! timeout, script calls by SHA with their NOSCRIPT retries, and
//! reconnecting after a run of timeouts.
//!
//! * One Redis: a `ConnectionManager` (reconnects in the background, never
//!   replays a command, so a timed-out debit is never run twice by the client).
//! * Cluster: redis-rs' async cluster connection (slot map, MOVED/ASK
//!   redirects, TRYAGAIN retries, per-node connections; `SCRIPT LOAD` goes to
//!   every primary). It is created on first use and re-created after a
//!   failure, so a gateway starts — and answers 503 — while the cluster is down.
//! * Sentinel: `sentinel.rs` (the primary, asked of the sentinels again
//!   whenever the connection to it is lost).
//!
//! All three speak `redis://` or `rediss://` (`tls.rs`). docs/ledger.md
//! ("Connecting to Redis", "Timeouts and retries") describes the policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;

use super::sentinel::{Sentinel, SentinelHandle};
use super::tls::{self, Roots};
use crate::ledger::LedgerError;

pub(super) fn tcp() -> redis::io::tcp::TcpSettings {
    // redis-rs 1.x leaves Nagle on; every ledger call is a small write.
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

enum Redis {
    Single(Box<Single>),
    Cluster(Box<Cluster>),
    Sentinel(Arc<Sentinel>),
}

struct Single {
    client: redis::Client,
    config: ConnectionManagerConfig,
    manager: std::sync::RwLock<ConnectionManager>,
}

struct Cluster {
    client: ClusterClient,
    connection: Mutex<Option<ClusterConnection>>,
}

impl Redis {
    fn single(url: &str, roots: &Roots, timeout: Duration) -> Result<Redis, LedgerError> {
        let client = tls::client(url, roots)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response_timeout(timeout)))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        Ok(Redis::Single(Box::new(Single {
            client,
            config,
            manager: std::sync::RwLock::new(manager),
        })))
    }

    fn cluster(urls: &[String], roots: &Roots, timeout: Duration) -> Result<Redis, LedgerError> {
        let mut builder = ClusterClient::builder(urls.to_vec())
            .connection_timeout(timeout)
            .response_timeout(response_timeout(timeout))
            .tcp_settings(tcp())
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(100);
        // The TLS mode comes from the URLs; the CA, when given, applies to
        // every node the cluster reports.
        if let (true, Some(certificates)) = (
            urls.iter().all(|url| tls::is_tls(url)),
            roots.certificates(),
        ) {
            builder = builder.certs(certificates.clone());
        }
        let client = builder
            .build()
            .map_err(|e| LedgerError::Unavailable(format!("bad cluster urls: {e}")))?;
        Ok(Redis::Cluster(Box::new(Cluster {
            client,
            connection: Mutex::new(None),
        })))
    }

    /// A handle for one operation (cheap: every kind is a multiplexed clone).
    async fn handle(&self) -> Result<Handle, LedgerError> {
        match self {
            Redis::Single(single) => Ok(Handle::Single(
                single
                    .manager
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            )),
            Redis::Cluster(cluster) => {
                let mut slot = cluster.connection.lock().await;
                if let Some(existing) = slot.as_ref() {
                    return Ok(Handle::Cluster(existing.clone()));
                }
                let created = cluster
                    .client
                    .get_async_connection()
                    .await
                    .map_err(|e| LedgerError::Unavailable(format!("redis cluster: {e}")))?;
                *slot = Some(created.clone());
                Ok(Handle::Cluster(created))
            }
            Redis::Sentinel(sentinel) => sentinel.handle().await.map(Handle::Sentinel),
        }
    }
}

impl Redis {
    /// Drops the connection and starts a new one. The client reconnects by
    /// itself after I/O errors, but a server that vanished without a reset
    /// (host gone, network partition) only ever times out; the ledger calls
    /// this when timeouts have lasted a while.
    async fn reset(&self) {
        match self {
            Redis::Single(single) => {
                if let Ok(fresh) = ConnectionManager::new_lazy_with_config(
                    single.client.clone(),
                    single.config.clone(),
                ) {
                    *single.manager.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                }
            }
            Redis::Cluster(cluster) => *cluster.connection.lock().await = None,
            Redis::Sentinel(sentinel) => sentinel.reset(),
        }
    }
}

#[derive(Clone)]
pub(super) enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelHandle),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Single(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
            Handle::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Single(c) => c.req_packed_commands(cmd, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Handle::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Single(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
            Handle::Sentinel(c) => c.get_db(),
        }
    }
}

/// How long calls may time out back to back before the connection is
/// replaced.
const RECONNECT_AFTER: Duration = Duration::from_secs(3);

/// NOSCRIPT answers tolerated per script call beyond redis-rs' own reload.
const NOSCRIPT_RETRIES: u32 = 3;
/// The least time a call no request waits for gets: a ledger timeout tuned
/// for the request path (milliseconds) would fail such calls for the very
/// load that made them necessary.
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection's own reply timeout: long enough for background calls;
/// each call is bounded by its own timeout ([`Transport::call`]).
pub(super) fn response_timeout(ledger_timeout: Duration) -> Duration {
    ledger_timeout.max(BACKGROUND_TIMEOUT)
}

/// The least time between two reconnections for READONLY answers (calls
/// in flight on the old connection all get one).
const RECONNECT_SPACING: Duration = Duration::from_secs(1);

/// Whether a script reply reports a READONLY error it caught: the debit
/// script runs each debit under `pcall` and answers a failed one with a
/// line `E <error>` (`codec.rs`).
fn caught_read_only(reply: &Value) -> bool {
    let text = match reply {
        Value::BulkString(bytes) => bytes.as_slice(),
        Value::SimpleString(text) => text.as_bytes(),
        _ => return false,
    };
    text.split(|&b| b == b'\n')
        .any(|line| line.starts_with(b"E READONLY"))
}

/// Every Redis exchange of the ledger goes through here.
pub(super) struct Transport {
    connection: Redis,
    timeout: Duration,
    /// When the current run of back-to-back timeouts began.
    timing_out_since: std::sync::Mutex<Option<Instant>>,
    /// When a READONLY answer last made it reconnect.
    read_only_reset: std::sync::Mutex<Option<Instant>>,
}

impl Transport {
    /// Connects lazily: nothing is sent until the first call. `tls_ca`:
    /// the PEM certificates `rediss://` connections trust (see `tls.rs`).
    pub(super) fn connect(
        target: super::Target<'_>,
        tls_ca: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Transport, LedgerError> {
        tls::use_ring();
        let roots = Roots::from_pem(tls_ca)?;
        let connection = match target {
            super::Target::Single(url) => Redis::single(url, &roots, timeout)?,
            super::Target::Cluster(urls) => Redis::cluster(urls, &roots, timeout)?,
            super::Target::Sentinel(sentinel) => {
                Redis::Sentinel(Sentinel::new(sentinel, &roots, timeout)?)
            }
        };
        Ok(Transport {
            connection,
            timeout,
            timing_out_since: std::sync::Mutex::new(None),
            read_only_reset: std::sync::Mutex::new(None),
        })
    }

    /// The per-call timeout.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one Redis exchange under the ledger timeout.
    pub(super) async fn call<T, F>(&self, operation: F) -> Result<T, LedgerError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.call_within(self.timeout, operation).await
    }

    /// [`Self::call`] under `timeout` instead.
    async fn call_within<T, F>(&self, timeout: Duration, operation: F) -> Result<T, LedgerError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = match tokio::time::timeout(timeout, operation).await {
            Err(_) => Err(LedgerError::Timeout),
            Ok(Err(error)) if error.is_timeout() => Err(LedgerError::Timeout),
            Ok(Err(error)) => {
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly) {
                    self.replica_answered().await;
                }
                Err(LedgerError::Unavailable(error.to_string()))
            }
            Ok(Ok(value)) => Ok(value),
        };
        self.track_timeouts(matches!(result, Err(LedgerError::Timeout)))
            .await;
        result
    }

    /// After [`RECONNECT_AFTER`] of nothing but timeouts, starts a fresh
    /// connection (see [`Redis::reset`]).
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
            let since = *first.get_or_insert_with(Instant::now);
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

    /// A server answered READONLY: it is a replica now — a failover moved
    /// the primary, or a managed service's endpoint name points at another
    /// node — and this connection would keep writing to it. Connect again
    /// (Sentinel: ask the sentinels; one Redis: resolve the name again;
    /// Cluster: a fresh slot map), at most once per [`RECONNECT_SPACING`].
    async fn replica_answered(&self) {
        {
            let mut last = self
                .read_only_reset
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < RECONNECT_SPACING) {
                return;
            }
            *last = Some(Instant::now());
        }
        tracing::warn!("redis answered READONLY (the server is a replica now); reconnecting");
        self.connection.reset().await;
    }

    /// Runs a script by SHA. redis-rs reloads it once after NOSCRIPT; a
    /// cache flushed again in between (failover, repeated `SCRIPT FLUSH`)
    /// gets a few more tries — NOSCRIPT means nothing ran, so retrying is safe.
    pub(super) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, LedgerError> {
        self.invoke_within(self.timeout, invocation).await
    }

    /// [`Self::invoke`] for work no request waits for: under the ledger
    /// timeout or [`BACKGROUND_TIMEOUT`], whichever is longer.
    pub(super) async fn invoke_in_background<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, LedgerError> {
        self.invoke_within(self.timeout.max(BACKGROUND_TIMEOUT), invocation)
            .await
    }

    async fn invoke_within<T: redis::FromRedisValue>(
        &self,
        timeout: Duration,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, LedgerError> {
        let mut conn = self.conn().await?;
        let reply: Value = self
            .call_within(timeout, async {
                let mut attempts = 0;
                loop {
                    match invocation.invoke_async(&mut conn).await {
                        Err(error)
                            if attempts < NOSCRIPT_RETRIES
                                && error.kind()
                                    == redis::ErrorKind::Server(
                                        redis::ServerErrorKind::NoScript,
                                    ) =>
                        {
                            attempts += 1;
                        }
                        result => return result,
                    }
                }
            })
            .await?;
        if caught_read_only(&reply) {
            self.replica_answered().await;
        }
        redis::from_redis_value(reply).map_err(|e| LedgerError::Protocol(e.to_string()))
    }

    /// A connection for one operation; creating a cluster connection is
    /// bounded by the ledger timeout like every call.
    pub(super) async fn conn(&self) -> Result<Handle, LedgerError> {
        match tokio::time::timeout(self.timeout, self.connection.handle()).await {
            Ok(result) => result,
            Err(_) => Err(LedgerError::Timeout),
        }
    }
}
