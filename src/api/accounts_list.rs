//! `GET /admin/v1/accounts?limit=&after=`: every account in ascending id
//! order with its balance, a page at a time (docs/usage-api.md), and
//! `POST /admin/v1/reindex`, which puts accounts created before the account
//! index into it (docs/ledger.md, "The account index").

use serde_json::{json, Value};

use crate::error::GatewayError;
use crate::ledger::usage::AccountPage;
use crate::state::Gateway;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 500;

/// `limit` (1–500, default 100) and `after` (an account id) from the query.
pub fn list_query(query: Option<&str>) -> Result<(usize, Option<String>), GatewayError> {
    let mut limit = DEFAULT_LIMIT;
    let mut after = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        GatewayError::bad_request(format!(
                            "`limit` must be a whole number from 1 to {MAX_LIMIT}"
                        ))
                    })?;
            }
            "after" => {
                if !crate::account_id::is_valid(value) {
                    return Err(GatewayError::bad_request(format!(
                        "`after` must be an account id: {}",
                        crate::account_id::RULE
                    )));
                }
                after = Some(value.to_owned());
            }
            _ => {}
        }
    }
    Ok((limit, after))
}

pub async fn list(gateway: &Gateway, query: Option<&str>) -> Result<Value, GatewayError> {
    let (limit, after) = list_query(query)?;
    let snapshot = gateway.snapshot();
    let page = gateway
        .ledger
        .list_accounts(after.as_deref(), limit, &snapshot.config.plans)
        .await
        .map_err(GatewayError::from_ledger)?;
    Ok(page_json(&page))
}

/// `{"items":[{account, plan, suspended, monthly_allowance, used, available}], "next"}`.
/// An account whose stored totals are damaged is listed with `used` and
/// `available` null and `"inconsistent": true` (a recount repairs it).
pub fn page_json(page: &AccountPage) -> Value {
    json!({
        "items": page.items.iter().map(|item| {
            let allowance = item.allowance.unwrap_or(0);
            let mut entry = json!({
                "account": item.id,
                "plan": item.account.plan,
                "suspended": item.account.suspended,
                "monthly_allowance": allowance,
                "used": item.used,
                "available": item.used.map(|used| allowance.saturating_sub(used)),
            });
            if item.used.is_none() {
                entry["inconsistent"] = true.into();
            }
            entry
        }).collect::<Vec<_>>(),
        "next": page.next,
    })
}

pub async fn reindex(gateway: &Gateway) -> Result<Value, GatewayError> {
    let found = gateway
        .ledger
        .reindex_accounts()
        .await
        .map_err(GatewayError::from_ledger)?;
    tracing::info!(accounts = found, "account index rebuilt");
    Ok(json!({ "indexed": found }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_bounded_and_after_is_an_account_id() {
        assert_eq!(list_query(None).unwrap(), (100, None));
        assert_eq!(
            list_query(Some("limit=500&after=site-42")).unwrap(),
            (500, Some("site-42".into()))
        );
        for bad in [
            "limit=0",
            "limit=501",
            "limit=x",
            "limit=",
            "after=a/b",
            "after=",
        ] {
            assert!(list_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
