//! Shared state: what one plane (a data-plane worker, or the admin plane)
//! holds, and what every plane of the instance shares.
//!
//! Each data-plane worker has a [`Gateway`] of its own (see `worker.rs`):
//! its own ledger connection and debit batcher, its own key cache, and its
//! own [`Snapshot`] — the same config, but upstream clients (connection
//! pools) of its own. What must agree across workers is shared: the config
//! every snapshot is built from (a reload rebuilds every plane's snapshot
//! before it returns), key revocations (`auth.rs`), the metrics registry and
//! the money-holding work that shutdown waits for.
//!
//! A request reads its plane's snapshot once at its start and keeps that
//! `Arc` to the end, so a reload never changes the rules under a request in
//! flight. The `Arc` and the lock around it belong to one plane, so reading
//! it never touches memory another core writes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::auth::{KeyCache, Revocations};
use crate::config::Config;
use crate::forward::Upstream;
use crate::ledger::{Ledger, MeteredLedger};
use crate::metrics::{Metrics, RouteMetrics};
use crate::routes::RouteTable;
use crate::tasks::Tasks;

/// Everything derived from one version of the config file, for one plane.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub routes: Arc<RouteTable>,
    /// Aligned with `config.routes`: the upstream each route forwards to
    /// (this plane's clients).
    pub route_upstreams: Vec<Arc<Upstream>>,
    /// Aligned with `config.routes`: each route's metrics handle.
    pub route_metrics: Arc<[Arc<RouteMetrics>]>,
    pub metrics: Arc<Metrics>,
    pub window_secs: u64,
}

/// What every plane's snapshot of one config shares.
#[derive(Clone)]
struct Compiled {
    config: Arc<Config>,
    routes: Arc<RouteTable>,
    route_metrics: Arc<[Arc<RouteMetrics>]>,
    metrics: Arc<Metrics>,
}

impl Compiled {
    fn new(config: Config, metrics: &Arc<Metrics>) -> Compiled {
        Compiled {
            routes: Arc::new(RouteTable::new(&config.routes)),
            route_metrics: config
                .routes
                .iter()
                .map(|route| metrics.route(&route.name))
                .collect(),
            config: Arc::new(config),
            metrics: metrics.clone(),
        }
    }
}

impl Snapshot {
    pub fn build(config: Config, metrics: &Arc<Metrics>) -> Result<Snapshot, String> {
        Snapshot::for_plane(Compiled::new(config, metrics))
    }

    fn compiled(&self) -> Compiled {
        Compiled {
            config: self.config.clone(),
            routes: self.routes.clone(),
            route_metrics: self.route_metrics.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// This plane's snapshot of a compiled config: the config, route table
    /// and metrics handles are shared, the upstream clients are new.
    fn for_plane(compiled: Compiled) -> Result<Snapshot, String> {
        let Compiled {
            config,
            routes,
            route_metrics,
            metrics,
        } = compiled;
        let mut upstreams: HashMap<&str, Arc<Upstream>> = HashMap::new();
        for (name, upstream) in &config.upstreams {
            upstreams.insert(name, Arc::new(Upstream::new(name, upstream)?));
        }
        let route_upstreams = config
            .routes
            .iter()
            .map(|route| {
                upstreams
                    .get(route.upstream.as_str())
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "route {} names unknown upstream {}",
                            route.name, route.upstream
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot {
            window_secs: config.ledger.window.as_secs(),
            routes,
            route_upstreams,
            route_metrics,
            metrics,
            config,
        })
    }
}

/// What every plane of one instance shares.
struct Instance {
    /// Every plane's gateway, so a reload reaches them all.
    planes: Mutex<Vec<Weak<Gateway>>>,
    revocations: Arc<Revocations>,
}

/// One plane's state: per plane, its ledger connection, key cache and
/// snapshot; shared with the instance's other planes, the rest.
pub struct Gateway {
    snapshot: RwLock<Arc<Snapshot>>,
    pub ledger: MeteredLedger,
    pub keys: KeyCache,
    pub metrics: Arc<Metrics>,
    /// Exchanges, refunds and settlements that outlive their request, on
    /// every plane (shutdown waits for all of them).
    pub tasks: Arc<Tasks>,
    /// Where reloads read the config from.
    pub config_path: Option<PathBuf>,
    /// Accounts whose debit just queued a threshold alert, for the
    /// instance's alert sender (shared by every plane).
    pub alerts: Arc<crate::alerts::Hints>,
    instance: Arc<Instance>,
}

impl Gateway {
    /// The instance's first plane (the admin plane).
    pub fn new(snapshot: Snapshot, ledger: Ledger, config_path: Option<PathBuf>) -> Arc<Gateway> {
        let metrics = snapshot.metrics.clone();
        let revocations = Arc::new(Revocations::default());
        let gateway = Arc::new(Gateway {
            snapshot: RwLock::new(Arc::new(snapshot)),
            ledger: MeteredLedger::new(ledger, metrics.clone()),
            keys: KeyCache::new(revocations.clone()),
            tasks: Arc::new(Tasks::new(metrics.clone())),
            metrics,
            config_path,
            alerts: Arc::default(),
            instance: Arc::new(Instance {
                planes: Mutex::new(Vec::new()),
                revocations,
            }),
        });
        gateway.instance.register(&gateway);
        gateway
    }

    /// Another plane of the same instance (a data-plane worker) with its own
    /// ledger handle, key cache and upstream clients.
    pub fn plane(&self, ledger: Ledger) -> Result<Arc<Gateway>, String> {
        let snapshot = Snapshot::for_plane(self.snapshot().compiled())?;
        let gateway = Arc::new(Gateway {
            snapshot: RwLock::new(Arc::new(snapshot)),
            ledger: MeteredLedger::new(ledger, self.metrics.clone()),
            keys: KeyCache::new(self.instance.revocations.clone()),
            metrics: self.metrics.clone(),
            tasks: self.tasks.clone(),
            config_path: self.config_path.clone(),
            alerts: self.alerts.clone(),
            instance: self.instance.clone(),
        });
        self.instance.register(&gateway);
        Ok(gateway)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps `config` in on every plane of the instance. Every plane's
    /// snapshot is built first, so a config that cannot be built changes
    /// nothing anywhere.
    pub fn replace_config(&self, config: Config) -> Result<(), String> {
        let compiled = Compiled::new(config, &self.metrics);
        let planes = self.instance.live_planes();
        let snapshots = planes
            .iter()
            .map(|_| Snapshot::for_plane(compiled.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        for (plane, snapshot) in planes.iter().zip(snapshots) {
            *plane.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        }
        Ok(())
    }
}

impl Instance {
    fn register(&self, gateway: &Arc<Gateway>) {
        let mut planes = self.planes.lock().unwrap_or_else(|e| e.into_inner());
        planes.retain(|plane| plane.strong_count() > 0);
        planes.push(Arc::downgrade(gateway));
    }

    fn live_planes(&self) -> Vec<Arc<Gateway>> {
        let planes = self.planes.lock().unwrap_or_else(|e| e.into_inner());
        planes.iter().filter_map(Weak::upgrade).collect()
    }
}

/// A snapshot of a small config (route 0 is `paid`, cost 7), for unit tests.
#[cfg(test)]
pub(crate) fn test_snapshot() -> Arc<Snapshot> {
    let toml = r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[ledger]
backend = "memory"
[plans.free]
monthly_allowance = 100
[upstreams.vendor]
url = "http://127.0.0.1:9"
[[routes]]
name = "paid"
method = "POST"
path = "/v1/paid"
upstream = "vendor"
cost = 7
"#;
    let config = Config::parse(toml, "test.toml", std::path::Path::new("."), &|_| None)
        .expect("test config");
    let metrics = Arc::new(Metrics::new(config.server.workers));
    Arc::new(Snapshot::build(config, &metrics).expect("snapshot"))
}
