//! Accounts and API keys: plain commands (and `lua/put_account.lua`).

use redis::AsyncCommands;

use super::RedisLedger;
use crate::ledger::keys::{api_key_lookup, AccountKeys};
use crate::ledger::{AccountRecord, KeyOwner, LedgerError};

impl RedisLedger {
    /// Writes the account index first (`index.rs`: another slot on a
    /// cluster), so no account exists that the account list cannot see.
    pub async fn put_account(&self, id: &str, record: &AccountRecord) -> Result<bool, LedgerError> {
        self.index_account(id).await?;
        let keys = AccountKeys::new(id);
        let mut invocation = self.core.scripts.put_account.prepare_invoke();
        invocation
            .key(&keys.account)
            .arg(&record.plan)
            .arg(if record.suspended { "1" } else { "0" });
        let created: i64 = self.core.transport.invoke(&invocation).await?;
        Ok(created == 1)
    }

    pub async fn get_account(&self, id: &str) -> Result<Option<AccountRecord>, LedgerError> {
        let keys = AccountKeys::new(id);
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        let (plan, suspended): (Option<String>, Option<String>) = transport
            .call(
                redis::cmd("HMGET")
                    .arg(&keys.account)
                    .arg("plan")
                    .arg("suspended")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(plan.map(|plan| AccountRecord {
            plan,
            suspended: suspended.as_deref() == Some("1"),
        }))
    }

    /// Writes the account's key list first and the lookup second (they may
    /// live on different cluster nodes): a failure in between leaves a listed
    /// key that cannot authenticate, never a usable key nobody can revoke.
    pub async fn add_key(
        &self,
        account: &str,
        key_id: &str,
        digest: &[u8; 32],
    ) -> Result<bool, LedgerError> {
        if self.get_account(account).await?.is_none() {
            return Ok(false);
        }
        let keys = AccountKeys::new(account);
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        let hex_digest = crate::hex::encode(digest);
        let _: i64 = transport
            .call(conn.hset(&keys.api_keys, key_id, &hex_digest))
            .await?;
        let _: () = transport
            .call(conn.set(api_key_lookup(digest), format!("{account}\t{key_id}")))
            .await?;
        Ok(true)
    }

    /// Deletes the lookup first, so the key stops working even if the second
    /// write fails.
    pub async fn revoke_key(&self, account: &str, key_id: &str) -> Result<bool, LedgerError> {
        let keys = AccountKeys::new(account);
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        let stored: Option<String> = transport.call(conn.hget(&keys.api_keys, key_id)).await?;
        let Some(digest) = stored.as_deref().and_then(crate::hex::decode_array::<32>) else {
            return Ok(false);
        };
        let _: i64 = transport.call(conn.del(api_key_lookup(&digest))).await?;
        let _: i64 = transport.call(conn.hdel(&keys.api_keys, key_id)).await?;
        Ok(true)
    }

    pub async fn find_key(&self, digest: &[u8; 32]) -> Result<Option<KeyOwner>, LedgerError> {
        let transport = &self.core.transport;
        let mut conn = transport.conn().await?;
        let owner: Option<String> = transport.call(conn.get(api_key_lookup(digest))).await?;
        let Some((account_id, key_id)) = owner.as_deref().and_then(|o| o.split_once('\t')) else {
            return Ok(None);
        };
        let Some(account) = self.get_account(account_id).await? else {
            return Ok(None);
        };
        Ok(Some(KeyOwner {
            account_id: account_id.to_owned(),
            key_id: key_id.to_owned(),
            digest: *digest,
            account,
        }))
    }
}
