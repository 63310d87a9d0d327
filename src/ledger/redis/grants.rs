//! Prepaid grants (`lua/grants.lua`): create, list, void — each one atomic
//! step against the account's hash slot.

use redis::Value;

use super::codec::GrantsReply;
use super::RedisLedger;
use crate::ledger::keys::AccountKeys;
use crate::ledger::{
    bounds, grant_id, Grant, GrantCreated, GrantList, GrantVoided, LedgerError, NewGrant,
};

impl RedisLedger {
    pub async fn create_grant(
        &self,
        account: &str,
        grant: &NewGrant,
    ) -> Result<GrantCreated, LedgerError> {
        bounds::check_grant(grant.credits)?;
        let keys = AccountKeys::new(account);
        let mut invocation = self.core.scripts.grants.prepare_invoke();
        invocation
            .key(&keys.account)
            .key(&keys.grants)
            .arg("create")
            .arg(grant.credits)
            .arg(grant.expires_at_ms.unwrap_or(-1))
            .arg(&grant.note);
        let reply: Vec<Value> = self.core.transport.invoke(&invocation).await?;
        match GrantsReply::parse(&reply)? {
            GrantsReply::NoAccount => Ok(GrantCreated::NoAccount),
            GrantsReply::Past => Ok(GrantCreated::AlreadyExpired),
            GrantsReply::TooLarge { total } => Err(bounds::grants_too_large(account, &total)),
            GrantsReply::Created {
                number,
                created_at_ms,
            } => Ok(GrantCreated::Created(Grant {
                grant_id: grant_id(number),
                credits: grant.credits,
                remaining: grant.credits,
                expires_at_ms: grant.expires_at_ms,
                created_at_ms,
                note: grant.note.clone(),
                voided: false,
            })),
            other => Err(LedgerError::Protocol(format!(
                "grants create replied {other:?}"
            ))),
        }
    }

    pub async fn grants(&self, account: &str) -> Result<Option<GrantList>, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.core.scripts.grants.prepare_invoke();
        invocation.key(&keys.account).key(&keys.grants).arg("list");
        let reply: Vec<Value> = self.core.transport.invoke(&invocation).await?;
        match GrantsReply::parse(&reply)? {
            GrantsReply::NoAccount => Ok(None),
            GrantsReply::List(list) => Ok(Some(list)),
            other => Err(LedgerError::Protocol(format!(
                "grants list replied {other:?}"
            ))),
        }
    }

    pub async fn void_grant(&self, account: &str, number: u64) -> Result<GrantVoided, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.core.scripts.grants.prepare_invoke();
        invocation
            .key(&keys.account)
            .key(&keys.grants)
            .arg("void")
            .arg(number);
        let reply: Vec<Value> = self.core.transport.invoke(&invocation).await?;
        match GrantsReply::parse(&reply)? {
            GrantsReply::NoAccount => Ok(GrantVoided::NoAccount),
            GrantsReply::Unknown => Ok(GrantVoided::Unknown),
            GrantsReply::Voided { credits } => Ok(GrantVoided::Voided(credits)),
            other => Err(LedgerError::Protocol(format!(
                "grants void replied {other:?}"
            ))),
        }
    }
}
