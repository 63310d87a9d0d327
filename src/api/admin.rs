//! The admin listener: `/healthz`, `/readyz`, `/metrics`, the console and
//! `/admin/openapi.json` (no token) and `/admin/v1/*` (bearer admin token,
//! compared in constant time); every operation is an entry of
//! [`super::endpoints::ADMIN`].

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::endpoints::{lookup, AdminOp, Lookup, ADMIN, OPENAPI_JSON};
use crate::body::{self, Body};
use crate::error::{ErrorKind, GatewayError};
use crate::ledger::{AccountRecord, LedgerError, RefundOutcome};
use crate::state::Gateway;

/// Admin request bodies are small JSON documents.
const MAX_ADMIN_BODY: usize = 64 * 1024;

pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = match serve(&gateway, request).await {
        Ok(response) => response,
        Err(error) => {
            if let Some(internal) = &error.internal {
                tracing::warn!(
                    code = error.kind.code(),
                    "admin {method} {path}: {internal}"
                );
            }
            error.to_response()
        }
    };
    if path.starts_with("/admin/") {
        tracing::info!(
            target: "creditgate::admin",
            method = %method,
            path = %path,
            status = response.status().as_u16(),
        );
    }
    response
}

async fn serve(
    gateway: &Gateway,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    // The token comes before the path: without it, nothing says which
    // `/admin/v1/` paths exist.
    if path.starts_with("/admin/v1/") {
        check_token(gateway, request.headers())?;
    }
    let (op, params) = match lookup(ADMIN, &method, &path) {
        Lookup::Found(op, params) => (op, params),
        // The console's files answer other methods with a 405 of their own.
        Lookup::MethodNotAllowed(_) => {
            return super::console::serve(&method, &path).ok_or_else(not_found)
        }
        Lookup::NotFound => return Err(not_found()),
    };
    match (op, params.as_slice()) {
        (AdminOp::Health, []) => Ok(body::json(&json!({"status": "ok"}))),
        (AdminOp::Ready, []) => Ok(readiness(gateway).await),
        (AdminOp::Metrics, []) => {
            let mut response = Response::new(body::full(gateway.metrics.render()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(response)
        }
        (AdminOp::OpenApi, []) => {
            let mut response = Response::new(body::full(OPENAPI_JSON));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        (AdminOp::Console, []) => super::console::serve(&method, &path).ok_or_else(not_found),
        (AdminOp::Reload, []) => crate::reload::reload_from_file(gateway)
            .map(|summary| body::json(&json!({"reloaded": true, "routes": summary})))
            .map_err(|errors| {
                GatewayError::new(
                    ErrorKind::InvalidConfig,
                    "the config file is invalid; nothing changed",
                )
                .with_extra(crate::error::Extra::Errors(errors))
            }),
        (AdminOp::ListAccounts, []) => super::accounts_list::list(gateway, request.uri().query())
            .await
            .map(|page| body::json(&page)),
        (AdminOp::Alerts, []) => super::alerts_list::list(gateway, request.uri().query())
            .await
            .map(|list| body::json(&list)),
        (AdminOp::Prices, []) => Ok(body::json(&super::prices::admin_prices_json(
            &gateway.snapshot().config,
        ))),
        (AdminOp::Reindex, []) => super::accounts_list::reindex(gateway)
            .await
            .map(|found| body::json(&found)),
        (AdminOp::Usage, [id]) => {
            let id = valid_account_id(id)?;
            let snapshot = gateway.snapshot();
            super::usage_report::report(gateway, &snapshot.config.plans, id)
                .await?
                .map(|report| body::json(&report))
                .ok_or_else(|| GatewayError::new(ErrorKind::NotFound, format!("no account `{id}`")))
        }
        (AdminOp::PutAccount, [id]) => put_account(gateway, id, request).await,
        (AdminOp::GetAccount, [id]) => get_account(gateway, id).await,
        (AdminOp::AddKey, [id]) => add_key(gateway, id).await,
        (AdminOp::RevokeKey, [id, key_id]) => revoke_key(gateway, id, key_id).await,
        (AdminOp::History, [id]) => {
            let id = valid_account_id(id)?;
            existing_account(gateway, id).await?;
            let (limit, before) = super::history_query(request.uri().query())?;
            let page = gateway
                .ledger
                .history(id, limit, before.as_ref())
                .await
                .map_err(GatewayError::ledger_unavailable)?;
            Ok(body::json(&super::history_json(&page)))
        }
        (AdminOp::Refund, [id]) => refund(gateway, id, request).await,
        (AdminOp::Recount, [id]) => recount(gateway, id).await,
        (AdminOp::CreateGrant, [id]) => {
            let id = valid_account_id(id)?;
            let body = read_json(gateway, request).await?;
            super::grants::create(gateway, id, &body).await
        }
        (AdminOp::ListGrants, [id]) => super::grants::list(gateway, valid_account_id(id)?).await,
        (AdminOp::VoidGrant, [id, grant_id]) => {
            super::grants::void(gateway, valid_account_id(id)?, grant_id).await
        }
        // A table entry whose template does not give its handler the
        // values it takes (a unit test keeps this from happening).
        (op, _) => Err(GatewayError::new(
            ErrorKind::Internal,
            format!("the admin endpoint table is inconsistent for {op:?}"),
        )),
    }
}

async fn readiness(gateway: &Gateway) -> Response<Body> {
    let backend = gateway.ledger.backend_name();
    match gateway.ledger.ping().await {
        Ok(()) => {
            let mut ready = json!({"status": "ready", "ledger": backend});
            if let crate::ledger::Ledger::Redis(redis) = gateway.ledger.backend() {
                ready["durability"] = match redis.durability().await {
                    Ok(Some(durability)) => json!({
                        "appendonly": durability.appendonly,
                        "maxmemory_policy": durability.maxmemory_policy,
                        "risks": durability.risks(),
                    }),
                    _ => json!("unknown"),
                };
            }
            body::json(&ready)
        }
        Err(error) => {
            let mut response = body::json(&json!({
                "status": "unavailable",
                "ledger": backend,
                "detail": "the ledger cannot be reached",
            }));
            tracing::warn!("readiness: ledger unreachable: {error}");
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
    }
}

fn not_found() -> GatewayError {
    GatewayError::new(ErrorKind::NotFound, "no such admin resource")
}

fn check_token(gateway: &Gateway, headers: &http::HeaderMap) -> Result<(), GatewayError> {
    let snapshot = gateway.snapshot();
    let Some(expected) = snapshot.config.admin.token.as_deref() else {
        return Err(GatewayError::new(
            ErrorKind::AdminDisabled,
            "the admin API is disabled: set admin.token in the config",
        ));
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    // Compare digests so the comparison time does not depend on lengths.
    let matches = crate::auth::digest(presented).ct_eq(&crate::auth::digest(expected));
    if bool::from(matches) {
        Ok(())
    } else {
        Err(GatewayError::new(
            ErrorKind::AdminUnauthorized,
            "send the admin token as `Authorization: Bearer <token>`",
        ))
    }
}

fn valid_account_id(id: &str) -> Result<&str, GatewayError> {
    if crate::account_id::is_valid(id) {
        Ok(id)
    } else {
        Err(GatewayError::bad_request(crate::account_id::RULE))
    }
}

/// Reads a small JSON body whole, within `server.body_read_timeout`: a
/// request in progress is not idle, so only this deadline frees a
/// connection whose body stops arriving (see `docs/operations.md`).
async fn read_json(gateway: &Gateway, request: Request<Incoming>) -> Result<Value, GatewayError> {
    let deadline = gateway.snapshot().config.server.body_read_timeout;
    let collected = tokio::time::timeout(
        deadline,
        Limited::new(request.into_body(), MAX_ADMIN_BODY).collect(),
    )
    .await
    .map_err(|_| {
        GatewayError::new(
            ErrorKind::RequestTimeout,
            "the request body did not arrive in time",
        )
    })?;
    let bytes = collected
        .map_err(|_| GatewayError::bad_request("the request body is unreadable or over 64 KiB"))?
        .to_bytes();
    // Strict: a repeated key is a 400 naming it, never "last one wins".
    super::json::parse(&bytes).map_err(|e| GatewayError::bad_request(e.to_string()))
}

async fn existing_account(gateway: &Gateway, id: &str) -> Result<AccountRecord, GatewayError> {
    gateway
        .ledger
        .get_account(id)
        .await
        .map_err(GatewayError::ledger_unavailable)?
        .ok_or_else(|| GatewayError::new(ErrorKind::NotFound, format!("no account `{id}`")))
}

async fn account_view(gateway: &Gateway, id: &str) -> Result<Value, GatewayError> {
    let snapshot = gateway.snapshot();
    let balance = gateway
        .ledger
        .balance(id, &snapshot.config.plans, &snapshot.config.limits)
        .await
        .map_err(GatewayError::from_ledger)?
        .ok_or_else(|| GatewayError::new(ErrorKind::NotFound, format!("no account `{id}`")))?;
    let mut view = super::balance_json(id, &balance);
    view["suspended"] = balance.account.suspended.into();
    Ok(view)
}

/// `PUT {"plan": "...", "suspended": false}`. On create `plan` is required;
/// on update an omitted field keeps its value.
async fn put_account(
    gateway: &Gateway,
    id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let id = valid_account_id(id)?;
    let body = read_json(gateway, request).await?;
    let object = body
        .as_object()
        .ok_or_else(|| GatewayError::bad_request("the body must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| *k != "plan" && *k != "suspended") {
        return Err(GatewayError::bad_request(format!(
            "unknown field `{unknown}`"
        )));
    }
    let plan = match object.get("plan") {
        None => None,
        Some(Value::String(plan)) => Some(plan.clone()),
        Some(_) => return Err(GatewayError::bad_request("`plan` must be a string")),
    };
    let suspended = match object.get("suspended") {
        None => None,
        Some(Value::Bool(flag)) => Some(*flag),
        Some(_) => {
            return Err(GatewayError::bad_request(
                "`suspended` must be true or false",
            ))
        }
    };
    let existing = gateway
        .ledger
        .get_account(id)
        .await
        .map_err(GatewayError::ledger_unavailable)?;
    let plan = match (plan, &existing) {
        (Some(plan), _) => plan,
        (None, Some(existing)) => existing.plan.clone(),
        (None, None) => {
            return Err(GatewayError::bad_request(
                "`plan` is required to create an account",
            ))
        }
    };
    let snapshot = gateway.snapshot();
    if !snapshot.config.plans.contains_key(&plan) {
        let known: Vec<&str> = snapshot.config.plans.keys().map(String::as_str).collect();
        return Err(GatewayError::new(
            ErrorKind::UnknownPlan,
            format!(
                "unknown plan `{plan}`; configured plans: {}",
                known.join(", ")
            ),
        ));
    }
    let record = AccountRecord {
        plan,
        suspended: suspended.or(existing.map(|e| e.suspended)).unwrap_or(false),
    };
    let created = gateway
        .ledger
        .put_account(id, &record)
        .await
        .map_err(GatewayError::ledger_unavailable)?;
    gateway.keys.forget_account(id);
    let mut response = body::json(&account_view(gateway, id).await?);
    if created {
        *response.status_mut() = StatusCode::CREATED;
    }
    Ok(response)
}

async fn get_account(gateway: &Gateway, id: &str) -> Result<Response<Body>, GatewayError> {
    let id = valid_account_id(id)?;
    Ok(body::json(&account_view(gateway, id).await?))
}

async fn add_key(gateway: &Gateway, id: &str) -> Result<Response<Body>, GatewayError> {
    let id = valid_account_id(id)?;
    let (key_id, key) = crate::auth::generate_key();
    let added = gateway
        .ledger
        .add_key(id, &key_id, &crate::auth::digest(&key))
        .await
        .map_err(GatewayError::ledger_unavailable)?;
    if !added {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("no account `{id}`"),
        ));
    }
    let mut response = body::json(&json!({"account": id, "key_id": key_id, "key": key}));
    *response.status_mut() = StatusCode::CREATED;
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

async fn revoke_key(
    gateway: &Gateway,
    id: &str,
    key_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let id = valid_account_id(id)?;
    let revoked = gateway
        .ledger
        .revoke_key(id, key_id)
        .await
        .map_err(GatewayError::ledger_unavailable)?;
    gateway.keys.forget_account(id);
    if !revoked {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("account `{id}` has no key `{key_id}`"),
        ));
    }
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

async fn refund(
    gateway: &Gateway,
    id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let id = valid_account_id(id)?;
    let body = read_json(gateway, request).await?;
    let object = body
        .as_object()
        .ok_or_else(|| GatewayError::bad_request("the body must be a JSON object"))?;
    // As for accounts: a member this call does not know is refused, not
    // ignored (`docs/http-api.md`).
    if let Some(unknown) = object.keys().find(|k| *k != "request_id") {
        return Err(GatewayError::bad_request(format!(
            "unknown field `{unknown}`"
        )));
    }
    let request_id = object
        .get("request_id")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| GatewayError::bad_request("`request_id` (a string) is required"))?;
    existing_account(gateway, id).await?;
    let outcome = gateway
        .ledger
        .refund(id, request_id)
        .await
        .map_err(GatewayError::ledger_unavailable)?;
    match outcome {
        RefundOutcome::Unknown => Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("account `{id}` has no debit with request id `{request_id}`"),
        )),
        RefundOutcome::Refunded | RefundOutcome::AlreadyRefunded => Ok(body::json(&json!({
            "account": id,
            "request_id": request_id,
            "refunded": true,
            "already_refunded": outcome == RefundOutcome::AlreadyRefunded,
        }))),
    }
}

/// `POST /admin/v1/accounts/{id}/recount`: recomputes the account's running
/// totals from the debits in its window — the repair for an account whose
/// stored totals are damaged (docs/ledger.md, "Bounds and repair"). Answers
/// what was found and the account as it now stands.
async fn recount(gateway: &Gateway, id: &str) -> Result<Response<Body>, GatewayError> {
    let id = valid_account_id(id)?;
    let recount = gateway
        .ledger
        .recount(id)
        .await
        .map_err(|error| match error {
            // The operator asked: tell them what stood in the way.
            LedgerError::OutOfRange(message) => GatewayError::new(ErrorKind::Internal, message),
            other => GatewayError::from_ledger(other),
        })?
        .ok_or_else(|| GatewayError::new(ErrorKind::NotFound, format!("no account `{id}`")))?;
    if recount.changed {
        tracing::warn!(
            account = id,
            previous_used = %recount.previous_used,
            used = recount.used,
            voided = recount.voided,
            "account totals repaired by a recount"
        );
    }
    let mut view = account_view(gateway, id).await?;
    view["recount"] = json!({
        "previous_used": recount.previous_used,
        "used": recount.used,
        "debits_counted": recount.counted,
        "debits_voided": recount.voided,
        "changed": recount.changed,
    });
    Ok(body::json(&view))
}
