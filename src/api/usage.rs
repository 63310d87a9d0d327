//! `/v1/credits`, `/v1/credits/history`, `/v1/credits/usage` and
//! `/v1/credits/prices`: what the plugin dashboard shows a customer,
//! authenticated with the customer's own API key (docs/http-api.md, "Usage
//! API"; docs/usage-api.md for the report and the price list). The
//! operations are the entries of [`super::endpoints::USAGE`].

use http::request::Parts;
use http::Response;

use super::endpoints::{lookup, Lookup, UsageOp, USAGE};
use crate::auth::authenticate;
use crate::body::{self, Body};
use crate::error::{ErrorKind, Extra, GatewayError};
use crate::record::Record;
use crate::state::{Gateway, Snapshot};

/// The usage API owns these paths on the data listener; no route can use them.
pub fn is_usage_path(path: &str) -> bool {
    path == "/v1/credits" || path.starts_with("/v1/credits/")
}

pub async fn handle(
    gateway: &Gateway,
    snapshot: &Snapshot,
    parts: &Parts,
    path: &str,
    record: &Record,
) -> Result<Response<Body>, GatewayError> {
    // An unknown path is a 404 whatever the key; a known path with another
    // method is a 405, after authentication.
    let op = match lookup(USAGE, &parts.method, path) {
        Lookup::Found(op, _) => Ok(op),
        Lookup::MethodNotAllowed(allow) => Err(allow.join(", ")),
        Lookup::NotFound => {
            return Err(GatewayError::new(
                ErrorKind::RouteNotFound,
                format!("no such usage resource: {path}"),
            ))
        }
    };
    let owner = authenticate(&gateway.keys, &gateway.ledger, &parts.headers).await?;
    record.set_account(&owner.account_id);
    let op = op.map_err(|allow| {
        GatewayError::new(
            ErrorKind::MethodNotAllowed,
            format!("this path accepts {allow}"),
        )
        .with_extra(Extra::Allow(allow))
    })?;
    let account = owner.account_id.as_str();
    let gone = || {
        GatewayError::new(
            ErrorKind::Unauthenticated,
            "this key's account no longer exists",
        )
    };
    match op {
        UsageOp::Report => super::usage_report::report(gateway, &snapshot.config.plans, account)
            .await?
            .map(|report| body::json(&report))
            .ok_or_else(gone),
        UsageOp::Prices => Ok(body::json(&super::prices::prices_json(&snapshot.config))),
        UsageOp::Balance => {
            let balance = gateway
                .ledger
                .balance(account, &snapshot.config.plans, &snapshot.config.limits)
                .await
                .map_err(GatewayError::from_ledger)?
                .ok_or_else(gone)?;
            Ok(body::json(&super::balance_json(account, &balance)))
        }
        UsageOp::History => {
            let (limit, before) = super::history_query(parts.uri.query())?;
            let page = gateway
                .ledger
                .history(account, limit, before.as_ref())
                .await
                .map_err(GatewayError::from_ledger)?;
            Ok(body::json(&super::history_json(&page)))
        }
    }
}
