//! A real 3-primary Redis Cluster on loopback for tests: three
//! `redis-server --cluster-enabled yes` on free ports (and free bus ports),
//! joined with `redis-cli --cluster create`, killed on drop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::RedisServer;

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// A port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = super::process::free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_on(
                    cluster_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "3000",
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            output.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all_ok = self
                .nodes
                .iter()
                .all(|node| node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            if all_ok {
                return;
            }
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port()))
            .collect()
    }

    /// The TOML value for `ledger.cluster`.
    pub fn toml_urls(&self) -> String {
        let quoted: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!("[{}]", quoted.join(", "))
    }

    pub fn keyslot(&self, key: &str) -> u16 {
        self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("slot")
    }

    /// The node currently serving `slot`.
    pub fn owner_of(&self, slot: u16) -> usize {
        for (index, node) in self.nodes.iter().enumerate() {
            let myself = node.cli(&["CLUSTER", "MYID"]);
            let slots = node.cli_raw(&["CLUSTER", "SLOTS"]);
            if slot_owner_is(&slots, slot, &myself) {
                return index;
            }
        }
        panic!("no node owns slot {slot}");
    }

    pub fn node_id(&self, index: usize) -> String {
        self.nodes[index].cli(&["CLUSTER", "MYID"])
    }

    /// Moves one slot (and its keys) from one primary to another, the way
    /// `redis-cli --cluster reshard` does, one key batch at a time. In each
    /// intermediate state — keys still on the source while the slot
    /// migrates ("migrating"), keys on the target before the slot is
    /// reassigned ("migrated") — it calls `in_between` with the state's name
    /// and waits for it to return, so a test can hold the move there until
    /// its load has met that state.
    pub fn move_slot(&self, slot: u16, from: usize, to: usize, mut in_between: impl FnMut(&str)) {
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        let (source_id, target_id) = (self.node_id(from), self.node_id(to));
        let slot_text = slot.to_string();
        target.cli(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source_id]);
        source.cli(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target_id]);
        in_between("migrating");
        loop {
            let keys = source.cli_list(&["CLUSTER", "GETKEYSINSLOT", &slot_text, "10"]);
            if keys.is_empty() {
                break;
            }
            let port = target.port().to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            source.cli(&args);
            std::thread::sleep(Duration::from_millis(20));
        }
        in_between("migrated");
        for node in &self.nodes {
            node.cli(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &target_id]);
        }
    }
}

fn slot_owner_is(slots: &redis::Value, slot: u16, node_id: &str) -> bool {
    let redis::Value::Array(ranges) = slots else {
        return false;
    };
    ranges.iter().any(|range| {
        let redis::Value::Array(fields) = range else {
            return false;
        };
        let as_int = |v: &redis::Value| match v {
            redis::Value::Int(n) => *n,
            _ => -1,
        };
        let (start, end) = (as_int(&fields[0]), as_int(&fields[1]));
        let owner_id = match &fields[2] {
            redis::Value::Array(node) => match node.get(2) {
                Some(redis::Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        (start..=end).contains(&(slot as i64)) && owner_id == node_id
    })
}

pub fn redis_cli_available() -> bool {
    Command::new("redis-cli")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
