//! The admin repair (`lua/recount.lua`): an account's running totals
//! recomputed from the debits in its window. A scan of the window, so it is
//! never on the request path (docs/ledger.md, "Repair").

use redis::Value;

use super::codec::RecountReply;
use super::RedisLedger;
use crate::ledger::keys::AccountKeys;
use crate::ledger::{bounds, LedgerError, Recount};

impl RedisLedger {
    /// `Ok(None)` when the account does not exist.
    pub async fn recount(&self, account: &str) -> Result<Option<Recount>, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.core.scripts.recount.prepare_invoke();
        invocation
            .key(&keys.account)
            .key(&keys.window)
            .key(&keys.usage)
            .key(&keys.grants)
            .arg(self.core.window_ms);
        let reply: Vec<Value> = self.core.transport.invoke(&invocation).await?;
        match RecountReply::parse(&reply)? {
            RecountReply::NoAccount => Ok(None),
            RecountReply::TooLarge { total } => Err(bounds::total_too_large(account, &total)),
            RecountReply::Recounted {
                previous_used,
                used,
                counted,
                voided,
                changed,
            } => Ok(Some(Recount {
                previous_used,
                used,
                counted,
                voided,
                changed,
            })),
        }
    }
}
