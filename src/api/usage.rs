//! `/v1/credits`, `/v1/credits/history`, `/v1/credits/usage` and
//! `/v1/credits/prices`: what the plugin dashboard shows a customer,
//! authenticated with the customer's own API key (docs/http-api.md, "Usage
//! API"; docs/usage-api.md for the report and the price list).

use http::request::Parts;
use http::{Method, Response};

use crate::auth::authenticate;
use crate::body::{self, Body};
use crate::error::{ErrorKind, Extra, GatewayError};
use crate::record::Record;
use crate::state::{Gateway, Snapshot};

const BALANCE: &str = "/v1/credits";
const HISTORY: &str = "/v1/credits/history";
const USAGE: &str = "/v1/credits/usage";
const PRICES: &str = "/v1/credits/prices";

/// The usage API owns these paths on the data listener; no route can use them.
pub fn is_usage_path(path: &str) -> bool {
    path == BALANCE || path.starts_with("/v1/credits/")
}

pub async fn handle(
    gateway: &Gateway,
    snapshot: &Snapshot,
    parts: &Parts,
    path: &str,
    record: &Record,
) -> Result<Response<Body>, GatewayError> {
    if ![BALANCE, HISTORY, USAGE, PRICES].contains(&path) {
        return Err(GatewayError::new(
            ErrorKind::RouteNotFound,
            format!("no such usage resource: {path}"),
        ));
    }
    let owner = authenticate(&gateway.keys, &gateway.ledger, &parts.headers).await?;
    record.set_account(&owner.account_id);
    if parts.method != Method::GET {
        return Err(
            GatewayError::new(ErrorKind::MethodNotAllowed, "this path accepts GET")
                .with_extra(Extra::Allow("GET".into())),
        );
    }
    let account = owner.account_id.as_str();
    if path == USAGE {
        return super::usage_report::report(gateway, &snapshot.config.plans, account)
            .await?
            .map(|report| body::json(&report))
            .ok_or_else(|| {
                GatewayError::new(
                    ErrorKind::Unauthenticated,
                    "this key's account no longer exists",
                )
            });
    }
    if path == PRICES {
        return Ok(body::json(&super::prices::prices_json(&snapshot.config)));
    }
    if path == BALANCE {
        let balance = gateway
            .ledger
            .balance(account, &snapshot.config.plans, &snapshot.config.limits)
            .await
            .map_err(GatewayError::from_ledger)?
            .ok_or_else(|| {
                GatewayError::new(
                    ErrorKind::Unauthenticated,
                    "this key's account no longer exists",
                )
            })?;
        return Ok(body::json(&super::balance_json(account, &balance)));
    }
    let (limit, before) = super::history_query(parts.uri.query())?;
    let page = gateway
        .ledger
        .history(account, limit, before.as_ref())
        .await
        .map_err(GatewayError::from_ledger)?;
    Ok(body::json(&super::history_json(&page)))
}
