//! The connection behind Redis Sentinel: to whichever server the sentinels
//! name primary now (docs/ledger.md, "Sentinel and failover").
//!
//! redis-rs' `SentinelClient` asks the sentinels for the primary (skipping
//! one they flag down, and checking `ROLE` on the server they name) each
//! time it connects, so following a failover means connecting again at the
//! right moments:
//!
//! - one multiplexed connection to the primary is shared by every call;
//! - a call that fails in a way that says this connection no longer reaches
//!   a primary — the connection dropped (killed primary), anything else
//!   redis-rs calls unrecoverable, or `READONLY` (a primary demoted to
//!   replica keeps its clients; the transport sees it, scripts' caught
//!   errors included, and calls [`Sentinel::reset`]) — drops it, and the
//!   next call asks the sentinels again;
//! - asking the sentinels runs in its own task, one lookup at a time: calls
//!   wait for it within their own timeout, and a lookup that outlives them
//!   still finishes for the calls after them;
//! - after a failed lookup (no primary yet: the failover is still under way)
//!   calls fail at once for [`RETRY_PAUSE`], so an outage costs the
//!   sentinels a few lookups a second, not one per request.
//!
//! A failing call is never sent again: a debit whose fate is unknown is
//! refused by its deadline if Redis runs it late (see `deadline.rs`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, TlsMode, Value,
};
use tokio::sync::Notify;

use super::tls::{self, Roots};
use crate::config::SentinelConfig;
use crate::ledger::LedgerError;

/// How long calls fail fast after a lookup found no primary.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The longest one lookup may take (every sentinel asked, the primary's
/// `ROLE` checked, the connection made).
const LOOKUP_LIMIT: Duration = Duration::from_secs(5);

pub(super) struct Sentinel {
    master: String,
    /// Held by the one lookup task at a time (`SentinelClient` caches its
    /// connections to the sentinels and needs `&mut`).
    client: tokio::sync::Mutex<SentinelClient>,
    /// For the connection to the primary: the ledger's timeouts.
    connection_config: AsyncConnectionConfig,
    state: Mutex<State>,
    changed: Notify,
    /// Lookups failed in a row: the first is a warning, the rest debug lines.
    failures: AtomicU32,
}

enum State {
    /// No connection, no lookup under way.
    Idle,
    Looking,
    Connected(Primary),
    /// The last lookup failed; the next one starts after `retry_at`.
    Failed {
        error: String,
        retry_at: Instant,
    },
}

#[derive(Clone)]
struct Primary {
    connection: MultiplexedConnection,
    /// Which connection this is, so a failure on an old one never drops a
    /// newer one.
    generation: u64,
}

impl Sentinel {
    pub(super) fn new(
        config: &SentinelConfig,
        roots: &Roots,
        timeout: Duration,
    ) -> Result<Arc<Sentinel>, LedgerError> {
        let client = build_client(config, roots)
            .map_err(|e| LedgerError::Unavailable(format!("redis sentinel: {e}")))?;
        Ok(Arc::new(Sentinel {
            master: config.master.clone(),
            client: tokio::sync::Mutex::new(client),
            connection_config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(super::transport::response_timeout(timeout))),
            state: Mutex::new(State::Idle),
            changed: Notify::new(),
            failures: AtomicU32::new(0),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle on the current primary, asking the sentinels first when
    /// there is none. The caller bounds the wait (the ledger timeout).
    pub(super) async fn handle(self: &Arc<Self>) -> Result<SentinelHandle, LedgerError> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so a lookup that ends
            // in between still wakes this call.
            changed.as_mut().enable();
            {
                let mut state = self.state();
                match &*state {
                    State::Connected(primary) => {
                        return Ok(SentinelHandle {
                            primary: primary.clone(),
                            sentinel: self.clone(),
                        })
                    }
                    State::Failed { error, retry_at } if Instant::now() < *retry_at => {
                        return Err(LedgerError::Unavailable(error.clone()));
                    }
                    State::Looking => {}
                    State::Idle | State::Failed { .. } => {
                        *state = State::Looking;
                        tokio::spawn(self.clone().look_up());
                    }
                }
            }
            changed.await;
        }
    }

    /// Asks the sentinels for the primary and connects to it.
    async fn look_up(self: Arc<Self>) {
        // Should this task end early (a panic in the client, the runtime
        // shutting down), the next call starts another lookup rather than
        // waiting on this one forever.
        let mut unfinished = Unfinished(Some(self.clone()));
        let found = tokio::time::timeout(LOOKUP_LIMIT, async {
            let mut client = self.client.lock().await;
            let primary = client.async_get_client().await?;
            let address = primary.get_connection_info().addr().to_string();
            let connection = primary
                .get_multiplexed_async_connection_with_config(&self.connection_config)
                .await?;
            Ok::<_, RedisError>((connection, address))
        })
        .await;
        let mut state = self.state();
        *state = match found {
            Ok(Ok((connection, address))) => {
                static GENERATION: AtomicU64 = AtomicU64::new(0);
                let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
                let failed_lookups = self.failures.swap(0, Ordering::Relaxed);
                tracing::info!(master = %self.master, %address, failed_lookups, "redis sentinel: connected to the primary");
                State::Connected(Primary {
                    connection,
                    generation,
                })
            }
            Ok(Err(error)) => self.failed(format!("no primary for `{}`: {error}", self.master)),
            Err(_) => self.failed(format!(
                "asking the sentinels for `{}` took over {LOOKUP_LIMIT:?}",
                self.master
            )),
        };
        drop(state);
        unfinished.0 = None;
        self.changed.notify_waiters();
    }

    fn failed(&self, error: String) -> State {
        if self.failures.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                "redis sentinel: {error}; calls fail for {RETRY_PAUSE:?} after each failed lookup"
            );
        } else {
            tracing::debug!("redis sentinel: {error}");
        }
        State::Failed {
            error: format!("redis sentinel: {error}"),
            retry_at: Instant::now() + RETRY_PAUSE,
        }
    }

    /// Drops connection `generation` if it is still the current one.
    fn forget(&self, generation: u64, why: &RedisError) {
        let mut state = self.state();
        if matches!(&*state, State::Connected(primary) if primary.generation == generation) {
            tracing::warn!(master = %self.master, "redis sentinel: leaving the primary ({why}); asking the sentinels again");
            *state = State::Idle;
        }
    }

    /// Drops the current connection (a run of timeouts: the server may be
    /// gone without a reset; a READONLY answer: it is a replica now); the
    /// next call asks the sentinels again.
    pub(super) fn reset(&self) {
        let mut state = self.state();
        if matches!(&*state, State::Connected(_)) {
            *state = State::Idle;
        }
    }
}

/// Puts a lookup that did not finish back to `Idle` (see [`Sentinel::look_up`]).
struct Unfinished(Option<Arc<Sentinel>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(sentinel) = self.0.take() {
            *sentinel.state() = State::Idle;
            sentinel.changed.notify_waiters();
        }
    }
}

/// Whether an error says this connection is gone. (READONLY — reached a
/// replica — is seen by the transport, which also sees the READONLY errors
/// scripts catch, and resets the connection.)
fn lost_primary(error: &RedisError) -> bool {
    error.is_unrecoverable_error()
}

fn build_client(config: &SentinelConfig, roots: &Roots) -> Result<SentinelClient, RedisError> {
    let nodes = config
        .nodes
        .iter()
        .map(|url| url.as_str().into_connection_info())
        .collect::<Result<Vec<_>, _>>()?;
    // The config accepts only nodes that agree on scheme and credentials.
    let sentinel_auth = nodes[0].redis_settings().clone();
    let sentinels_use_tls = matches!(nodes[0].addr(), ConnectionAddr::TcpTls { .. });
    let addresses = nodes.iter().map(|node| node.addr().clone());
    let mut builder =
        SentinelClientBuilder::new(addresses, &config.master, SentinelServerType::Master)?
            .set_client_to_sentinel_tcp_settings(super::transport::tcp())
            .set_client_to_redis_tcp_settings(super::transport::tcp())
            .set_client_to_redis_db(config.db);
    if let Some(username) = sentinel_auth.username() {
        builder = builder.set_client_to_sentinel_username(username);
    }
    if let Some(password) = sentinel_auth.password() {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if let Some(username) = &config.username {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = &config.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(certificates) = roots.certificates() {
        if sentinels_use_tls {
            builder = builder.set_client_to_sentinel_certificates(certificates.clone());
        }
    }
    if config.tls {
        tls::use_ring();
        builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(certificates) = roots.certificates() {
            builder = builder.set_client_to_redis_certificates(certificates.clone());
        }
    }
    builder.build()
}

/// One call's connection to the primary; a failure that means the primary
/// is lost drops the shared connection (see the module doc).
#[derive(Clone)]
pub(super) struct SentinelHandle {
    primary: Primary,
    sentinel: Arc<Sentinel>,
}

impl SentinelHandle {
    fn watch<T>(&self, result: &redis::RedisResult<T>) {
        if let Err(error) = result {
            if lost_primary(error) {
                self.sentinel.forget(self.primary.generation, error);
            }
        }
    }
}

impl ConnectionLike for SentinelHandle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.primary.connection.req_packed_command(cmd).await;
            self.watch(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self
                .primary
                .connection
                .req_packed_commands(cmd, offset, count)
                .await;
            self.watch(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.primary.connection.get_db()
    }
}
