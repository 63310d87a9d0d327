//! Redis Sentinel for tests: a real primary, a real replica and real
//! `redis-server <conf> --sentinel` processes on free loopback ports, with
//! short failure detection (`down-after-milliseconds 1000`,
//! `failover-timeout 3000`), killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{free_port, TempDir};
use super::redis::RedisServer;

/// The name the sentinels monitor the primary under.
pub const MASTER: &str = "ledger";

/// One sentinel process.
pub struct SentinelNode {
    pub port: u16,
    child: Option<Child>,
    _dir: TempDir,
    client: redis::Client,
}

impl SentinelNode {
    /// Starts `redis-server sentinel.conf --sentinel` with `conf` (which must
    /// name the port); `client` reaches it (plain or TLS, with its password).
    pub fn start(port: u16, conf: &str, client: redis::Client) -> SentinelNode {
        let dir = TempDir::new("sentinel");
        // Sentinel rewrites its config file: it must be its own, writable.
        let conf_path = dir.write("sentinel.conf", conf);
        let child = Command::new("redis-server")
            .arg(&conf_path)
            .arg("--sentinel")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        let mut node = SentinelNode {
            port,
            child: Some(child),
            _dir: dir,
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.try_query(&["PING"]).is_err() {
            if let Some(Ok(Some(status))) = node.child.as_mut().map(|c| c.try_wait()) {
                panic!("sentinel on {port} exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "sentinel on {port} did not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    pub fn try_query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let mut connection = self
            .client
            .get_connection_with_timeout(Duration::from_millis(500))?;
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query(&mut connection)
    }

    pub fn query(&self, args: &[&str]) -> redis::Value {
        self.try_query(args)
            .unwrap_or_else(|e| panic!("sentinel {}: {args:?}: {e}", self.port))
    }

    /// The primary's port as this sentinel names it now.
    pub fn primary_port(&self) -> Option<u16> {
        let reply = self
            .try_query(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])
            .ok()?;
        let redis::Value::Array(parts) = reply else {
            return None;
        };
        match parts.get(1) {
            Some(redis::Value::BulkString(port)) => std::str::from_utf8(port).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// How many entries `SENTINEL <what> ledger` lists (replicas, sentinels).
    fn count(&self, what: &str) -> usize {
        match self.try_query(&["SENTINEL", what, MASTER]) {
            Ok(redis::Value::Array(items)) => items.len(),
            _ => 0,
        }
    }
}

impl Drop for SentinelNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A primary, one replica and `n` sentinels (quorum: a majority).
pub struct SentinelSet {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<SentinelNode>,
}

impl SentinelSet {
    /// Starts everything and waits until every sentinel knows the replica
    /// and the other sentinels, and the replica is in sync: a failover can
    /// then be decided and carried out.
    pub fn start(sentinels: usize) -> SentinelSet {
        let primary = RedisServer::start();
        let primary_port = primary.port().to_string();
        let replica =
            RedisServer::start_on(free_port(), &["--replicaof", "127.0.0.1", &primary_port]);
        let quorum = sentinels / 2 + 1;
        let nodes: Vec<SentinelNode> = (0..sentinels)
            .map(|_| {
                let port = free_port();
                let conf = format!(
                    "port {port}\n\
                     bind 127.0.0.1\n\
                     sentinel monitor {MASTER} 127.0.0.1 {primary_port} {quorum}\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 3000\n\
                     sentinel parallel-syncs {MASTER} 1\n"
                );
                let client =
                    redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
                SentinelNode::start(port, &conf, client)
            })
            .collect();
        let set = SentinelSet {
            primary,
            replica,
            sentinels: nodes,
        };
        set.wait_ready();
        set
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let others = self.sentinels.len() - 1;
        loop {
            let in_sync = self
                .replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up");
            let known = self
                .sentinels
                .iter()
                .all(|s| s.count("REPLICAS") >= 1 && s.count("SENTINELS") >= others);
            if in_sync && known {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sentinels not ready: replica in sync {in_sync}, replicas and sentinels known {known}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The TOML value for `ledger.sentinel`.
    pub fn toml(&self) -> String {
        let nodes: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"redis://127.0.0.1:{}\"", s.port))
            .collect();
        format!(
            "{{ master = \"{MASTER}\", nodes = [{}] }}",
            nodes.join(", ")
        )
    }

    /// The primary's port as the first sentinel that answers names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(SentinelNode::primary_port)
    }
}
