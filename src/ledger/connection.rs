//! One Redis or a Redis Cluster behind the same `ConnectionLike`, so the
//! ledger's scripts and commands are written once.
//!
//! * One Redis: a `ConnectionManager` (reconnects in the background, never
//!   replays a command).
//! * Cluster: redis-rs' async cluster connection (slot map, MOVED/ASK
//!   redirects, TRYAGAIN retries, per-node connections; `SCRIPT LOAD` goes to
//!   every primary). It is created on first use and re-created after a
//!   failure, so a gateway starts — and answers 503 — while the cluster is down.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;

use super::LedgerError;

fn tcp() -> redis::io::tcp::TcpSettings {
    // redis-rs 1.x leaves Nagle on; every ledger call is a small write.
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

pub enum Redis {
    Single(Box<Single>),
    Cluster(Box<Cluster>),
}

pub struct Single {
    client: redis::Client,
    config: ConnectionManagerConfig,
    manager: std::sync::RwLock<ConnectionManager>,
}

pub struct Cluster {
    client: ClusterClient,
    connection: Mutex<Option<ClusterConnection>>,
}

impl Redis {
    pub fn single(url: &str, timeout: Duration) -> Result<Redis, LedgerError> {
        let bad_url =
            |e: redis::RedisError| LedgerError::Unavailable(format!("bad redis url: {e}"));
        let info = url
            .into_connection_info()
            .map_err(bad_url)?
            .set_tcp_settings(tcp());
        let client = redis::Client::open(info).map_err(bad_url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
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

    pub fn cluster(urls: &[String], timeout: Duration) -> Result<Redis, LedgerError> {
        let client = ClusterClient::builder(urls.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .tcp_settings(tcp())
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
            .map_err(|e| LedgerError::Unavailable(format!("bad cluster urls: {e}")))?;
        Ok(Redis::Cluster(Box::new(Cluster {
            client,
            connection: Mutex::new(None),
        })))
    }

    /// A handle for one operation (cheap: both kinds are multiplexed clones).
    pub async fn handle(&self) -> Result<Handle, LedgerError> {
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
        }
    }
}

impl Redis {
    /// Drops the connection and starts a new one. The client reconnects by
    /// itself after I/O errors, but a server that vanished without a reset
    /// (host gone, network partition) only ever times out; the ledger calls
    /// this when timeouts have lasted a while.
    pub async fn reset(&self) {
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
        }
    }
}

#[derive(Clone)]
pub enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Single(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Single(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
        }
    }
}
