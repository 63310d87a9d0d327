//! The data plane's workers: `server.workers` threads, each running a
//! `current_thread` tokio runtime with its own `SO_REUSEPORT` listener on
//! the data address, so the kernel spreads connections over the workers
//! and a request lives on one thread from accept to record — no work
//! stealing, no wake-ups across cores (docs/operations.md, "Workers").
//!
//! Each worker has a [`Gateway`] plane of its own (`state.rs`): its ledger
//! connection and debit batcher, key cache and upstream connection pools.
//! The connection cap is one semaphore per listener address, shared by the
//! workers.
//!
//! Shutdown, in [`crate::RunningGateway::shutdown`]: every worker stops
//! accepting and drains its connections, then reports it has drained; its
//! runtime keeps running the money-holding work (detached exchanges,
//! refunds, settlements) until shutdown has waited for it, and only then
//! is released and dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::ledger::Ledger;
use crate::server::{self, ServerOptions};
use crate::state::Gateway;
use crate::StartError;

/// Pending connections per worker listener (tokio's default for `bind`).
const BACKLOG: u32 = 1024;

/// The running workers.
pub struct Workers {
    workers: Vec<Worker>,
    /// Lets the workers' runtimes go (or, dropped, lets them go too).
    release: watch::Sender<bool>,
}

struct Worker {
    drained: Option<oneshot::Receiver<()>>,
    exited: Option<oneshot::Receiver<()>>,
}

/// Binds `count` listeners on `addr`, all in one `SO_REUSEPORT` group (the
/// first one picks the port when it is 0). Must run inside a runtime; the
/// listeners come out unregistered, for each worker's runtime to adopt.
///
/// An address another process listens on is refused, as a plain bind
/// would: the group is only joined after a plain bind of the address
/// succeeded, so a second gateway (or a stale one) never silently shares
/// the port with this one.
pub fn bind(addr: SocketAddr, count: usize) -> Result<Vec<std::net::TcpListener>, StartError> {
    let error = |source| StartError::Bind { addr, source };
    let probe = std::net::TcpListener::bind(addr).map_err(error)?;
    let addr = probe.local_addr().map_err(error)?;
    drop(probe);
    (0..count.max(1))
        .map(|_| reuseport_listener(addr).map_err(error))
        .collect()
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)?.into_std()
}

/// What each worker is started with.
pub struct Start {
    pub main: Arc<Gateway>,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub options: ServerOptions,
    pub shutdown: watch::Receiver<bool>,
}

/// Starts one worker per listener; returns once each has its ledger and
/// serves (or the first error).
pub async fn start(
    listeners: Vec<std::net::TcpListener>,
    start: Start,
) -> Result<Workers, StartError> {
    let (release, released) = watch::channel(false);
    let mut workers = Vec::with_capacity(listeners.len());
    let mut ready = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (drained_tx, drained) = oneshot::channel();
        let (exited_tx, exited) = oneshot::channel();
        let job = Job {
            listener,
            main: start.main.clone(),
            config: start.config.clone(),
            clock: start.clock.clone(),
            options: start.options.clone(),
            shutdown: start.shutdown.clone(),
            released: released.clone(),
        };
        std::thread::Builder::new()
            .name(format!("creditgate-worker-{index}"))
            .spawn(move || {
                crate::metrics::enter_worker(index);
                job.run(ready_tx, drained_tx);
                let _ = exited_tx.send(());
            })
            .map_err(|e| StartError::Worker(format!("cannot start worker thread {index}: {e}")))?;
        workers.push(Worker {
            drained: Some(drained),
            exited: Some(exited),
        });
        ready.push(ready_rx);
    }
    let workers = Workers { workers, release };
    for ready in ready {
        match ready.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(StartError::Worker("a worker stopped while starting".into())),
        }
    }
    Ok(workers)
}

impl Workers {
    /// Resolves once every worker has stopped accepting and drained its
    /// connections (or given up on them at the drain timeout).
    pub async fn drained(&mut self) {
        for worker in &mut self.workers {
            if let Some(drained) = worker.drained.take() {
                let _ = drained.await;
            }
        }
    }

    /// Lets the workers' runtimes go, and waits for their threads to end.
    pub async fn release(mut self) {
        let _ = self.release.send(true);
        for worker in &mut self.workers {
            if let Some(exited) = worker.exited.take() {
                let _ = exited.await;
            }
        }
    }
}

struct Job {
    listener: std::net::TcpListener,
    main: Arc<Gateway>,
    config: Arc<Config>,
    clock: SharedClock,
    options: ServerOptions,
    shutdown: watch::Receiver<bool>,
    released: watch::Receiver<bool>,
}

impl Job {
    fn run(self, ready: oneshot::Sender<Result<(), StartError>>, drained: oneshot::Sender<()>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = ready.send(Err(StartError::Worker(format!(
                    "cannot start a worker runtime: {e}"
                ))));
                return;
            }
        };
        let Job {
            listener,
            main,
            config,
            clock,
            options,
            shutdown,
            mut released,
        } = self;
        runtime.block_on(async move {
            let gateway = match plane(&main, &config, clock).await {
                Ok(gateway) => gateway,
                Err(error) => {
                    let _ = ready.send(Err(error));
                    return;
                }
            };
            drop(main);
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(e) => {
                    let _ = ready.send(Err(StartError::Worker(format!(
                        "cannot adopt the data listener: {e}"
                    ))));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            server::serve(listener, gateway, options, shutdown).await;
            let _ = drained.send(());
            // Money-holding work may still run on this runtime (see the
            // module doc): wait until shutdown lets go.
            let _ = released.wait_for(|released| *released).await;
        });
    }
}

/// This worker's plane: its own Redis connection and debit batcher (a
/// memory ledger is one store, shared), key cache and upstream clients.
async fn plane(
    main: &Arc<Gateway>,
    config: &Config,
    clock: SharedClock,
) -> Result<Arc<Gateway>, StartError> {
    let ledger = match main.ledger.backend() {
        Ledger::Memory(memory) => Ledger::Memory(memory.clone()),
        Ledger::Redis(_) => crate::open_ledger(config, clock).await?,
    };
    main.plane(ledger).map_err(StartError::Upstream)
}
