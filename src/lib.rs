//! # creditgate
//!
//! A credit-enforcing reverse proxy. Each route has a price in credits; each
//! account may spend its plan's monthly allowance within any sliding window
//! (30 days by default). The check and the debit are one atomic step in the
//! ledger, so no interleaving of requests on any number of instances can
//! spend past the allowance. `docs/` holds the contract: the HTTP API, the
//! configuration reference and the ledger's semantics and Redis layout.
//!
//! ## One request's life
//! ```text
//! accept → read head → normalise path → authenticate key → match route
//!        → admit body and price → debit (atomic) → forward (stream)
//!        → response head → failure rules / settle → respond → record
//! ```
//! [`proxy`] holds these phases in order; [`server`] owns the listeners.
//! A request's money has one owner, its [`charge::Charge`]: created by the
//! debit, delivered when the upstream answers, refunded by itself if it is
//! dropped before that — whatever dropped it. The [`exchange`] that holds it
//! cannot be cancelled by a client that leaves, and [`tasks`] lets shutdown
//! wait for it. The [`record`] (one access line, the metrics) is written when
//! the last owner of the request lets go, with the final cost.
//!
//! ## Layout (one concept per file)
//! - [`config`]: the TOML file → validated [`config::Config`], every error with its key path.
//! - [`error`]: [`error::GatewayError`] and its problem+json form; every failure is a response.
//! - [`worker`]: the data plane's threads — one `current_thread` runtime and
//!   `SO_REUSEPORT` listener each, with a [`state::Gateway`] plane of its own
//!   (ledger connection and batcher, key cache, upstream pools).
//! - [`server`]: accept loop, TLS, HTTP/1.1 + HTTP/2, connection timers, graceful drain.
//! - [`path`]: request path normalisation (pure, property-tested).
//! - [`routes`]: the route table compiled from config.
//! - [`auth`]: API key extraction, hashing, the key → account cache, and
//!   `authenticate` (the data plane's and the usage API's one key check).
//! - [`request_id`], [`ratelimit`]: `X-Request-Id` and the credit headers.
//! - [`proxy`]: the request phases; [`admit`]: body limits and pricing before
//!   the debit; [`exchange`]: debit → forward → response head, uncancellable;
//!   [`forward`]: upstream connection pools (one per upstream and plane) and
//!   header hygiene.
//! - [`charge`]: the request's money (debit, delivery, refund, settlement);
//!   [`pricing`]: its arithmetic; [`record`]: the access line and metrics;
//!   [`tasks`]: money-holding work that outlives its request.
//! - [`deadline`], [`body`]: the request body's deadline; the body type.
//! - [`ledger`]: the `Ledger` contract and its `memory` and `redis` backends
//!   (`ledger/keys.rs` spells every Redis key; `ledger/redis/lua/` holds the scripts);
//!   [`ledger::MeteredLedger`], the gateway's handle, times every call.
//! - [`api`]: `/v1/credits*` (customers) and the admin listener.
//! - [`alerts`]: threshold alerts — the ledger queues them with the debit
//!   (`ledger/alerts.rs`); one sender task per instance delivers them,
//!   signed, off the request path (docs/alerts.md).
//! - [`state`]: one plane's state, what the planes share, and the reloadable
//!   snapshot; [`reload`] swaps it on every plane.
//! - [`metrics`]: every metric name and label (per-worker shards summed at
//!   scrape); [`clock`]: the one place time is read.
//! - [`hex`], [`account_id`]: leaf modules (hex encoding; the account id rule).
//! - [`dev`]: `serve --dev` — the demo vendor, the dev config and what it prints.
#![forbid(unsafe_code)]

pub mod account_id;
pub mod admit;
pub mod alerts;
pub mod api;
pub mod auth;
pub mod body;
pub mod charge;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod dev;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod hex;
pub mod ledger;
pub mod metrics;
pub mod path;
pub mod pricing;
pub mod proxy;
pub mod ratelimit;
pub mod record;
pub mod reload;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod state;
pub mod tasks;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, LedgerBackend};
use crate::ledger::Ledger;
use crate::server::{Plane, ServerOptions};
use crate::state::{Gateway, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Upstream(String),
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::LedgerError),
    #[error("ledger.require_durable is set and {0}")]
    NotDurable(String),
    #[error("{0}")]
    Worker(String),
}

/// A started gateway: both listeners bound and serving.
pub struct RunningGateway {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    shutdown: watch::Sender<bool>,
    /// The admin plane's accept loop (on the caller's runtime).
    servers: Vec<JoinHandle<()>>,
    /// The data plane's worker threads.
    workers: worker::Workers,
    drain_timeout: Duration,
}

impl RunningGateway {
    /// Stops accepting and drains: in-flight requests, and the exchanges,
    /// refunds and settlements that outlive their requests, may finish
    /// until `server.drain_timeout`. Then exchanges still waiting for an
    /// upstream are cut (their charges refund) and the refunds are awaited,
    /// at most [`tasks::SETTLE_AFTER_CUT`] more (docs/http-api.md, "Shutdown").
    ///
    /// Each worker's runtime keeps running until then, since that is where
    /// its exchanges and refunds run; then the workers are let go.
    pub async fn shutdown(mut self) {
        self.stop().await;
        self.workers.release().await;
    }

    async fn stop(&mut self) {
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        let _ = self.shutdown.send(true);
        for server in self.servers.drain(..) {
            let _ = server.await;
        }
        self.workers.drained().await;
        let tasks = &self.gateway.tasks;
        if tokio::time::timeout_at(deadline, tasks.idle())
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!(
            in_flight = tasks.in_flight(),
            "drain timeout reached; cutting exchanges still waiting for upstreams (their charges are refunded)"
        );
        tasks.cut();
        if tokio::time::timeout(tasks::SETTLE_AFTER_CUT, tasks.idle())
            .await
            .is_err()
        {
            tracing::error!(
                in_flight = tasks.in_flight(),
                "refunds and settlements still unfinished at exit; see the errors above for their request ids"
            );
        }
    }
}

/// Builds the ledger named by the config.
pub async fn open_ledger(config: &Config, clock: SharedClock) -> Result<Ledger, StartError> {
    let ledger = &config.ledger;
    let target = match &ledger.backend {
        LedgerBackend::Memory => {
            tracing::warn!(
                "ledger backend is `memory`: accounts, keys and debits live in this process only \
                 and are LOST ON RESTART; configure [ledger] redis_url for production"
            );
            return Ok(Ledger::Memory(Arc::new(ledger::memory::MemoryLedger::new(
                clock,
                ledger.window,
                ledger.history_retention,
            ))));
        }
        LedgerBackend::Redis { url } => ledger::redis::Target::Single(url),
        LedgerBackend::RedisCluster { urls } => ledger::redis::Target::Cluster(urls),
        LedgerBackend::RedisSentinel(sentinel) => ledger::redis::Target::Sentinel(sentinel),
    };
    let tls_ca = match &ledger.tls_ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            StartError::Tls(format!(
                "ledger.tls_ca: cannot read {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    Ok(Ledger::Redis(Arc::new(
        ledger::redis::RedisLedger::connect_with_ca(
            target,
            tls_ca.as_deref(),
            ledger.window,
            ledger.history_retention,
            ledger.timeout,
        )
        .await?,
    )))
}

/// Starts a gateway for `config` (listening on the configured addresses;
/// port 0 picks free ones, see [`RunningGateway::data_addr`]).
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

pub async fn start_with_clock(
    config: Config,
    clock: SharedClock,
) -> Result<RunningGateway, StartError> {
    // hyper-rustls builds its client config from the process default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = match &config.server.tls {
        Some(tls) => Some(server::tls_acceptor(&tls.cert, &tls.key).map_err(StartError::Tls)?),
        None => None,
    };
    if config.admin.token.is_none() {
        tracing::warn!("admin.token is not set: /admin/v1/* answers 403 until it is");
    }
    let ledger = open_ledger(&config, clock.clone()).await?;
    check_durability(&ledger, config.ledger.require_durable).await?;
    let data_listeners = worker::bind(config.server.listen, config.server.workers)?;
    let admin_listener = bind(config.admin.listen).await?;
    let data_addr = std_local_addr(&data_listeners[0], config.server.listen)?;
    let admin_addr = local_addr(&admin_listener, config.admin.listen)?;
    let server_config = config.server.clone();
    let config_path = config.source.clone();
    let metrics = Arc::new(metrics::Metrics::new(config.server.workers));
    let snapshot = Snapshot::build(config, &metrics).map_err(StartError::Upstream)?;
    let shared_config = snapshot.config.clone();
    let gateway = Gateway::new(snapshot, ledger, config_path);
    let (shutdown, watcher) = watch::channel(false);
    let (clock_for_alerts, watcher_for_alerts) = (clock.clone(), watcher.clone());
    let workers = worker::start(
        data_listeners,
        worker::Start {
            main: gateway.clone(),
            config: shared_config,
            clock,
            options: ServerOptions {
                plane: Plane::Data,
                tls,
                header_read_timeout: server_config.header_read_timeout,
                idle_timeout: server_config.idle_timeout,
                drain_timeout: server_config.drain_timeout,
                max_headers: server_config.max_headers,
                max_header_bytes: server_config.max_header_bytes,
                connection_slots: Arc::new(Semaphore::new(server_config.max_connections)),
            },
            shutdown: watcher.clone(),
        },
    )
    .await?;
    let admin = tokio::spawn(server::serve(
        admin_listener,
        gateway.clone(),
        ServerOptions {
            plane: Plane::Admin,
            tls: None,
            header_read_timeout: server_config.header_read_timeout,
            idle_timeout: server_config.idle_timeout,
            drain_timeout: server_config.drain_timeout,
            max_headers: server_config.max_headers,
            max_header_bytes: server_config.max_header_bytes,
            // The admin plane serves operators and probes: a small cap.
            connection_slots: Arc::new(Semaphore::new(256)),
        },
        watcher,
    ));
    // Threshold alerts go out from the admin plane's runtime, never from a
    // request's.
    let sender = alerts::spawn(gateway.clone(), clock_for_alerts, watcher_for_alerts);
    tracing::info!(%data_addr, %admin_addr, workers = server_config.workers, ledger = gateway.ledger.backend_name(), "creditgate listening");
    Ok(RunningGateway {
        data_addr,
        admin_addr,
        gateway,
        shutdown,
        servers: vec![admin, sender.task],
        workers,
        drain_timeout: server_config.drain_timeout,
    })
}

/// Warns loudly (or, with `require_durable`, refuses to start) when Redis
/// could lose or evict debits.
async fn check_durability(ledger: &Ledger, require_durable: bool) -> Result<(), StartError> {
    let Ledger::Redis(redis) = ledger else {
        return Ok(());
    };
    let problem = match redis.durability().await {
        Ok(Some(durability)) => {
            let risks = durability.risks();
            if risks.is_empty() {
                tracing::info!("redis durability: appendonly yes, maxmemory-policy noeviction");
                return Ok(());
            }
            risks.join("; ")
        }
        Ok(None) => "Redis does not allow CONFIG GET, so durability cannot be verified".to_owned(),
        Err(error) => format!("Redis durability cannot be checked ({error})"),
    };
    if require_durable {
        return Err(StartError::NotDurable(problem));
    }
    tracing::warn!("DEBITS MAY BE LOST: {problem}");
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn std_local_addr(
    listener: &std::net::TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}
