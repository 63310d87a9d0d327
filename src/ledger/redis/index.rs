//! The account index (`cg:accounts`, a sorted set of ids at score 0, read in
//! id order with `ZRANGEBYLEX`): the account list, and its rebuild for
//! accounts created before the index existed (docs/ledger.md, "The account
//! index").
//!
//! The index lives in a slot of its own on a Redis Cluster, so it cannot be
//! written by the account's script: `put_account` writes it first, then the
//! account. A crash in between leaves an id without an account, which the
//! list skips (and a later put of that id completes); never an account the
//! list cannot see.

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{AsyncCommands, Value};

use super::transport::Handle;
use super::RedisLedger;
use crate::ledger::keys::{account_of_hash_key, ACCOUNT_HASH_PATTERN, ACCOUNT_INDEX};
use crate::ledger::usage::{AccountPage, AccountSummary};
use crate::ledger::{LedgerError, PlanTable};

/// Index entries read per `ZRANGEBYLEX` beyond the page (orphans to skip).
const SCAN_COUNT: usize = 1000;

impl RedisLedger {
    /// Adds an id to the index (idempotent).
    pub(super) async fn index_account(&self, id: &str) -> Result<(), LedgerError> {
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        let _: i64 = transport.call(conn.zadd(ACCOUNT_INDEX, id, 0)).await?;
        Ok(())
    }

    pub async fn list_accounts(
        &self,
        after: Option<&str>,
        limit: usize,
        plans: &PlanTable,
    ) -> Result<AccountPage, LedgerError> {
        let transport = &self.core.transport;
        let mut items: Vec<AccountSummary> = Vec::with_capacity(limit.min(512));
        let mut cursor = after.map(str::to_owned);
        while items.len() < limit {
            let want = limit - items.len();
            let min = match &cursor {
                Some(id) => format!("({id}"),
                None => "-".to_owned(),
            };
            let mut conn = transport.conn().await?;
            let ids: Vec<String> = transport
                .call(
                    redis::cmd("ZRANGEBYLEX")
                        .arg(ACCOUNT_INDEX)
                        .arg(min)
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(want + 1)
                        .query_async(&mut conn),
                )
                .await?;
            let more = ids.len() > want;
            let page = &ids[..ids.len().min(want)];
            // One balance call each, all in flight together (each account
            // lives in its own slot on a cluster).
            let summaries =
                futures_util::future::join_all(page.iter().map(|id| self.summary(id, plans))).await;
            for summary in summaries {
                if let Some(summary) = summary? {
                    items.push(summary);
                }
            }
            if !more {
                return Ok(AccountPage { items, next: None });
            }
            cursor = page.last().cloned();
        }
        let next = items.last().map(|item| item.id.clone());
        Ok(AccountPage { items, next })
    }

    /// The account with its balance; `None` for an index entry without an
    /// account (a put that failed after writing the index).
    async fn summary(
        &self,
        id: &str,
        plans: &PlanTable,
    ) -> Result<Option<AccountSummary>, LedgerError> {
        match self.balance_with(id, plans, None).await {
            Ok(Some(balance)) => Ok(Some(AccountSummary {
                id: id.to_owned(),
                allowance: balance.allowance,
                account: balance.account,
                used: Some(balance.used),
            })),
            Ok(None) => Ok(None),
            Err(LedgerError::Inconsistent(_)) => {
                Ok(self.get_account(id).await?.map(|account| AccountSummary {
                    id: id.to_owned(),
                    allowance: plans.get(&account.plan).copied(),
                    account,
                    used: None,
                }))
            }
            Err(other) => Err(other),
        }
    }

    /// `SCAN`s every primary for account hashes and puts their ids into the
    /// index; returns how many it found.
    pub async fn reindex_accounts(&self) -> Result<u64, LedgerError> {
        let transport = &self.core.transport;
        let conn = transport.conn().await?;
        let nodes = match &conn {
            Handle::Single(_) | Handle::Sentinel(_) => vec![None],
            Handle::Cluster(_) => self.primaries().await?.into_iter().map(Some).collect(),
        };
        let mut found = 0;
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(ACCOUNT_HASH_PATTERN)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .arg("TYPE")
                    .arg("hash");
                let reply = self.on_node(scan, node.as_ref()).await?;
                let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply)
                    .map_err(|e| LedgerError::Protocol(format!("SCAN replied {e}")))?;
                let ids: Vec<&str> = keys.iter().filter_map(|k| account_of_hash_key(k)).collect();
                if !ids.is_empty() {
                    found += ids.len() as u64;
                    let mut conn = transport.conn().await?;
                    let members: Vec<(i64, &str)> = ids.iter().map(|id| (0, *id)).collect();
                    let _: i64 = transport
                        .call(conn.zadd_multiple(ACCOUNT_INDEX, &members))
                        .await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(found)
    }

    /// The cluster's primaries, `(host, port)`, from `CLUSTER NODES`.
    pub(super) async fn primaries(&self) -> Result<Vec<(String, u16)>, LedgerError> {
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        let nodes: String = transport
            .call(redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn))
            .await?;
        Ok(parse_primaries(&nodes))
    }

    /// Runs a command on one cluster node (`Some`), or on the one Redis.
    pub(super) async fn on_node(
        &self,
        command: redis::Cmd,
        node: Option<&(String, u16)>,
    ) -> Result<Value, LedgerError> {
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        match (&mut conn, node) {
            (Handle::Cluster(cluster), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                transport
                    .call(cluster.route_command(command, routing))
                    .await
            }
            _ => transport.call(command.query_async(&mut conn)).await,
        }
    }
}

/// `(host, port)` of every reachable primary in `CLUSTER NODES` output
/// (`<id> <host:port@bus[,hostname]> <flags> …`).
fn parse_primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, address, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master")
                || flags
                    .iter()
                    .any(|f| f.starts_with("fail") || *f == "noaddr")
            {
                return None;
            }
            let address = address.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_primaries;

    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let nodes = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
";
        assert_eq!(
            parse_primaries(nodes),
            [
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30001)
            ]
        );
    }
}
