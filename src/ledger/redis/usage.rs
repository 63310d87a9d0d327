//! The usage report (`lua/usage.lua`): an account's window and its usage
//! aggregates in one atomic read, whatever the number of its debits.

use std::collections::BTreeMap;

use redis::Value;

use super::codec::{UsageField, UsageReply};
use super::RedisLedger;
use crate::ledger::keys::AccountKeys;
use crate::ledger::usage::{DayCredits, Rebuilt, Usage, UsageCell, DAY_MS};
use crate::ledger::{bounds, AccountRecord, LedgerError, PlanTable};

/// The most debits in a window from which a usage report rebuilds missing
/// aggregates itself (one scan in one script: 0.15-0.25 s at this size on
/// the bench machine, bench/RESULTS.md);
/// beyond it the report is refused until an operator runs the recount
/// (docs/ledger.md, "Usage aggregates").
pub const REBUILD_LIMIT: u64 = 100_000;

impl RedisLedger {
    /// `Ok(None)` when the account does not exist; an error naming the
    /// field when its stored totals are damaged (repair: `recount`).
    pub async fn usage(
        &self,
        account: &str,
        plans: &PlanTable,
    ) -> Result<Option<Usage>, LedgerError> {
        let keys = AccountKeys::new(account);
        let mut invocation = self.core.scripts.usage.prepare_invoke();
        invocation
            .key(&keys.account)
            .key(&keys.window)
            .key(&keys.usage)
            .arg(self.core.window_ms)
            .arg(self.rebuild_limit);
        let reply: Vec<Value> = self.core.transport.invoke(&invocation).await?;
        let (plan, suspended, used, now_ms, rebuilt, fields, routes) =
            match UsageReply::parse(&reply)? {
                UsageReply::NoAccount => return Ok(None),
                UsageReply::Damaged { field } => return Err(bounds::damaged(account, &field)),
                UsageReply::Unbuilt { debits } => {
                    return Err(LedgerError::Inconsistent(format!(
                        "account `{account}`: its usage aggregates must be built from {debits} \
                         debits, more than a report scans; repair: POST /admin/v1/accounts/{account}/recount"
                    )))
                }
                UsageReply::Found {
                    plan,
                    suspended,
                    used,
                    now_ms,
                    rebuilt,
                    fields,
                    routes,
                } => (plan, suspended, used, now_ms, rebuilt, fields, routes),
            };
        let route_name = |number: u64| {
            routes
                .get(&number)
                .filter(|name| !name.is_empty())
                .cloned()
                .unwrap_or_else(|| format!("route-{number}"))
        };
        // A window of whole days keeps no leave days (`lua/prelude.lua`):
        // credits spent on day d leave on day d + the window's days.
        let whole_days = (self.core.window_ms.is_multiple_of(DAY_MS as u64))
            .then(|| i64::try_from(self.core.window_ms / DAY_MS as u64).unwrap_or(i64::MAX));
        let mut cells: BTreeMap<(i64, String), (u64, u64)> = BTreeMap::new();
        let mut returning: BTreeMap<i64, u64> = BTreeMap::new();
        let mut from_grants = 0u64;
        for field in fields {
            match field {
                UsageField::Credits { day, route, value } => {
                    cells.entry((day, route_name(route))).or_default().0 += value;
                    if let Some(days) = whole_days {
                        *returning.entry(day.saturating_add(days)).or_default() += value;
                    }
                }
                UsageField::Requests { day, route, value } => {
                    cells.entry((day, route_name(route))).or_default().1 += value;
                }
                UsageField::Leaving { day, value } => {
                    if whole_days.is_none() {
                        *returning.entry(day).or_default() += value;
                    }
                }
                UsageField::FromGrants { day, value } => {
                    from_grants += value;
                    // Only the allowance part comes back.
                    if let Some(days) = whole_days {
                        let leaving = returning.entry(day.saturating_add(days)).or_default();
                        *leaving = leaving.saturating_sub(value);
                    }
                }
            }
        }
        returning.retain(|_, credits| *credits > 0);
        Ok(Some(Usage {
            allowance: plans.get(&plan).copied(),
            account: AccountRecord { plan, suspended },
            used,
            from_grants,
            now_ms,
            window_ms: self.core.window_ms,
            spent: cells
                .into_iter()
                .map(|((day, route), (credits, requests))| UsageCell {
                    day,
                    route,
                    credits,
                    requests,
                })
                .collect(),
            returning: returning
                .into_iter()
                .map(|(day, credits)| DayCredits { day, credits })
                .collect(),
            rebuilt: match rebuilt {
                1 => Some(Rebuilt::NotKept),
                2 => Some(Rebuilt::Disagreed),
                _ => None,
            },
        }))
    }
}
