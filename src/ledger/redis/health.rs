//! Reachability (`/readyz`) and what Redis says about keeping debits.

use super::RedisLedger;
use crate::ledger::LedgerError;

/// Redis settings that decide whether debits survive a crash or memory pressure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    pub appendonly: bool,
    pub maxmemory_policy: String,
}

impl Durability {
    /// Why debits could be lost, if they could (docs/ledger.md, "Durability").
    pub fn risks(&self) -> Vec<String> {
        let mut risks = Vec::new();
        if !self.appendonly {
            risks.push(
                "appendonly is off: a Redis crash or restart loses debits (set appendonly yes, appendfsync everysec)"
                    .to_owned(),
            );
        }
        if self.maxmemory_policy != "noeviction" {
            risks.push(format!(
                "maxmemory-policy is {}: Redis may evict ledgers and hand accounts a fresh allowance (set noeviction)",
                self.maxmemory_policy
            ));
        }
        risks
    }
}

impl RedisLedger {
    /// What Redis says about keeping debits: `None` where `CONFIG GET` is
    /// not allowed (managed services often forbid it).
    pub async fn durability(&self) -> Result<Option<Durability>, LedgerError> {
        let (Some(appendonly), Some(maxmemory_policy)) = (
            self.config_get("appendonly").await?,
            self.config_get("maxmemory-policy").await?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Durability {
            appendonly: appendonly == "yes",
            maxmemory_policy,
        }))
    }

    async fn config_get(&self, name: &str) -> Result<Option<String>, LedgerError> {
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        match transport
            .call(
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async::<Vec<String>>(&mut conn),
            )
            .await
        {
            Ok(pair) => Ok(pair.get(1).cloned()),
            // Refused (ACL, renamed command): not knowable, not an outage.
            Err(LedgerError::Unavailable(message))
                if message.contains("NOPERM") || message.contains("unknown command") =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    pub async fn ping(&self) -> Result<(), LedgerError> {
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        let _: String = transport
            .call(redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }
}
