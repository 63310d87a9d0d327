//! The Redis ledger: shared by every gateway instance (docs/ledger.md has
//! the semantics and the Redis layout).
//!
//! Each operation on an account's window is one Lua script (`lua/`), so
//! check-and-record is atomic across instances and the clock is Redis
//! `TIME`. The module holds one concern per file:
//!
//! - `transport.rs`: the connection (one Redis, a Cluster, or Sentinel's
//!   primary: `sentinel.rs`; TLS: `tls.rs`), the per-call timeout, scripts
//!   by SHA with NOSCRIPT retries, reconnecting;
//! - `batch.rs`: debits queued while earlier calls are in flight go out as
//!   one script call;
//! - `deadline.rs`: a debit Redis runs after the gateway gave up records nothing;
//! - `debit.rs`, `amend.rs` (refund, settle), `repair.rs` (recount),
//!   `read.rs` (balance, history), `accounts.rs` (accounts and API keys),
//!   `health.rs` (ping, durability): the operations;
//! - `usage.rs` (the usage report, `lua/usage.lua`), `index.rs` (the
//!   account index: list and rebuild);
//! - `alerts.rs` (threshold alerts: the senders' side of the queue the
//!   debit writes, `lua/alerts.lua`, and its index);
//! - `codec.rs`: the packed debit record and every script's reply layout;
//! - `scripts.rs`: the scripts, loaded once. `ledger/keys.rs` spells the keys.

mod accounts;
mod alerts;
mod amend;
mod batch;
mod codec;
mod deadline;
mod debit;
mod grants;
mod health;
mod index;
mod read;
mod repair;
mod scripts;
mod sentinel;
mod tls;
mod transport;
mod usage;

use std::sync::Arc;
use std::time::Duration;

pub use health::Durability;
pub use usage::REBUILD_LIMIT;

use crate::ledger::LedgerError;
use batch::Batcher;
use deadline::DebitDeadline;
use scripts::Scripts;
use transport::Transport;

/// Where the ledger lives.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Single(&'a str),
    Cluster(&'a [String]),
    /// The primary the sentinels name, followed across failovers.
    Sentinel(&'a crate::config::SentinelConfig),
}

pub struct RedisLedger {
    core: Arc<Core>,
    /// Present for one Redis (not a cluster, where a script may only touch
    /// one slot): where debits queue for a batch.
    batcher: Option<Batcher>,
    /// The most debits a usage report rebuilds missing aggregates from.
    rebuild_limit: u64,
}

/// What the ledger's calls share with its batch task.
struct Core {
    transport: Transport,
    scripts: Scripts,
    window_ms: u64,
    retention_ms: u64,
    deadline: DebitDeadline,
}

impl RedisLedger {
    /// Connects lazily: the gateway starts (and answers 503) while Redis is
    /// down, and serves as soon as it is reachable. `rediss://` trusts the
    /// built-in web PKI roots (see [`RedisLedger::connect_with_ca`]).
    pub async fn connect(
        target: Target<'_>,
        window: Duration,
        history_retention: Duration,
        timeout: Duration,
    ) -> Result<RedisLedger, LedgerError> {
        Self::connect_with_ca(target, None, window, history_retention, timeout).await
    }

    /// As [`RedisLedger::connect`]; `tls_ca` (PEM text, `ledger.tls_ca`)
    /// replaces the web PKI roots for every `rediss://` connection.
    pub async fn connect_with_ca(
        target: Target<'_>,
        tls_ca: Option<&[u8]>,
        window: Duration,
        history_retention: Duration,
        timeout: Duration,
    ) -> Result<RedisLedger, LedgerError> {
        let transport = Transport::connect(target, tls_ca, timeout)?;
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let core = Arc::new(Core {
            transport,
            scripts: Scripts::new(),
            window_ms,
            retention_ms: u64::try_from(history_retention.as_millis())
                .unwrap_or(u64::MAX)
                .max(window_ms),
            deadline: DebitDeadline::new(timeout),
        });
        // One primary (a plain Redis or Sentinel's): debits can share a call.
        let batcher = matches!(target, Target::Single(_) | Target::Sentinel(_))
            .then(|| Batcher::start(core.clone()));
        Ok(RedisLedger {
            core,
            batcher,
            rebuild_limit: REBUILD_LIMIT,
        })
    }

    /// Changes how many debits a usage report may rebuild its aggregates
    /// from (default [`REBUILD_LIMIT`]); tests lower it.
    pub fn with_rebuild_limit(mut self, debits: u64) -> RedisLedger {
        self.rebuild_limit = debits;
        self
    }
}
