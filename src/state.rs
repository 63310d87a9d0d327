//! Shared state: the process-wide parts (ledger, key cache, metrics, the
//! background work that holds money) and the reloadable snapshot (config,
//! route table, upstream clients).
//!
//! A request reads the snapshot once at its start and keeps that `Arc` to the
//! end, so a reload never changes the rules under a request in flight.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::auth::KeyCache;
use crate::config::Config;
use crate::forward::Upstream;
use crate::ledger::{Ledger, MeteredLedger};
use crate::metrics::Metrics;
use crate::routes::RouteTable;
use crate::tasks::Tasks;

/// Everything derived from one version of the config file.
pub struct Snapshot {
    pub config: Config,
    pub routes: RouteTable,
    /// Aligned with `config.routes`: the upstream each route forwards to.
    pub route_upstreams: Vec<Arc<Upstream>>,
    pub window_secs: u64,
}

impl Snapshot {
    pub fn build(config: Config) -> Result<Snapshot, String> {
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
            routes: RouteTable::new(&config.routes),
            route_upstreams,
            window_secs: config.ledger.window.as_secs(),
            config,
        })
    }
}

/// State shared by every connection of this instance.
pub struct Gateway {
    snapshot: RwLock<Arc<Snapshot>>,
    pub ledger: MeteredLedger,
    pub keys: KeyCache,
    pub metrics: Arc<Metrics>,
    /// Exchanges, refunds and settlements that outlive their request.
    pub tasks: Arc<Tasks>,
    /// Where reloads read the config from.
    pub config_path: Option<PathBuf>,
}

impl Gateway {
    pub fn new(snapshot: Snapshot, ledger: Ledger, config_path: Option<PathBuf>) -> Gateway {
        let metrics = Arc::new(Metrics::default());
        Gateway {
            snapshot: RwLock::new(Arc::new(snapshot)),
            ledger: MeteredLedger::new(ledger, metrics.clone()),
            keys: KeyCache::default(),
            tasks: Arc::new(Tasks::new(metrics.clone())),
            metrics,
            config_path,
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace_snapshot(&self, snapshot: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }
}
