//! `/admin/v1/accounts/{id}/grants`: prepaid grants — credits sold or given
//! once, apart from the plan (docs/http-api.md, "Prepaid grants";
//! docs/ledger.md for how debits spend them).

use chrono::DateTime;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::error::{ErrorKind, GatewayError};
use crate::ledger::{grant_number, Grant, GrantCreated, GrantVoided, LedgerError, NewGrant};
use crate::state::Gateway;

/// A note is for people: short, printable.
pub const MAX_NOTE_CHARS: usize = 200;

/// The grant as the admin API shows it. A voided grant shows `remaining`
/// 0 and what was voided; an expired one keeps what it held at expiry.
pub fn grant_json(grant: &Grant, now_ms: i64) -> Value {
    let expired = grant.expires_at_ms.is_some_and(|at| at <= now_ms);
    let status = if grant.voided {
        "voided"
    } else if expired {
        "expired"
    } else if grant.remaining == 0 {
        "used_up"
    } else {
        "active"
    };
    json!({
        "grant_id": grant.grant_id,
        "credits": grant.credits,
        "remaining": if grant.voided { 0 } else { grant.remaining },
        "expires_at": grant.expires_at_ms.map(super::rfc3339),
        "created_at": super::rfc3339(grant.created_at_ms),
        "note": grant.note,
        "status": status,
        "voided_credits": if grant.voided { grant.remaining } else { 0 },
    })
}

/// The body of `POST …/grants`: `{"credits", "expires_at"?, "note"?}`.
pub fn parse_new_grant(body: &Value) -> Result<NewGrant, GatewayError> {
    let object = body
        .as_object()
        .ok_or_else(|| GatewayError::bad_request("the body must be a JSON object"))?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "credits" | "expires_at" | "note"))
    {
        return Err(GatewayError::bad_request(format!(
            "unknown field `{unknown}`"
        )));
    }
    let credits = object
        .get("credits")
        .and_then(Value::as_u64)
        .filter(|c| (1..=crate::ledger::bounds::MAX_CREDITS).contains(c))
        .ok_or_else(|| {
            GatewayError::bad_request(format!(
                "`credits` must be a whole number from 1 to {}",
                crate::ledger::bounds::MAX_CREDITS
            ))
        })?;
    let expires_at_ms = match object.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(
            DateTime::parse_from_rfc3339(text)
                .map_err(|_| {
                    GatewayError::bad_request(
                        "`expires_at` must be an RFC 3339 time, e.g. 2027-03-01T00:00:00Z",
                    )
                })?
                .timestamp_millis(),
        ),
        Some(_) => {
            return Err(GatewayError::bad_request(
                "`expires_at` must be an RFC 3339 string or null",
            ))
        }
    };
    let note = match object.get("note") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(note))
            if note.chars().count() <= MAX_NOTE_CHARS && !note.chars().any(char::is_control) =>
        {
            note.clone()
        }
        Some(_) => {
            return Err(GatewayError::bad_request(format!(
                "`note` must be a string of at most {MAX_NOTE_CHARS} printable characters"
            )))
        }
    };
    Ok(NewGrant {
        credits,
        expires_at_ms,
        note,
    })
}

fn no_account(id: &str) -> GatewayError {
    GatewayError::new(ErrorKind::NotFound, format!("no account `{id}`"))
}

fn ledger_error(error: LedgerError) -> GatewayError {
    match error {
        LedgerError::OutOfRange(message) => GatewayError::bad_request(message),
        other => GatewayError::from_ledger(other),
    }
}

pub async fn create(
    gateway: &Gateway,
    id: &str,
    body: &Value,
) -> Result<Response<Body>, GatewayError> {
    let grant = parse_new_grant(body)?;
    match gateway
        .ledger
        .create_grant(id, &grant)
        .await
        .map_err(ledger_error)?
    {
        GrantCreated::NoAccount => Err(no_account(id)),
        GrantCreated::AlreadyExpired => Err(GatewayError::bad_request(
            "`expires_at` is not in the future",
        )),
        GrantCreated::Created(grant) => {
            let mut response = body::json(&grant_json(&grant, grant.created_at_ms));
            *response.status_mut() = StatusCode::CREATED;
            Ok(response)
        }
    }
}

pub async fn list(gateway: &Gateway, id: &str) -> Result<Response<Body>, GatewayError> {
    let list = gateway
        .ledger
        .grants(id)
        .await
        .map_err(ledger_error)?
        .ok_or_else(|| no_account(id))?;
    Ok(body::json(&json!({
        "account": id,
        "items": list.grants.iter().map(|g| grant_json(g, list.now_ms)).collect::<Vec<_>>(),
    })))
}

pub async fn void(
    gateway: &Gateway,
    id: &str,
    grant_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let number = grant_number(grant_id).ok_or_else(|| {
        GatewayError::bad_request("a grant id is `g` and a number, as the API returned it")
    })?;
    match gateway
        .ledger
        .void_grant(id, number)
        .await
        .map_err(ledger_error)?
    {
        GrantVoided::NoAccount => Err(no_account(id)),
        GrantVoided::Unknown => Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("account `{id}` has no grant `{grant_id}`"),
        )),
        GrantVoided::Voided(credits) => Ok(body::json(&json!({
            "account": id,
            "grant_id": grant_id,
            "voided": true,
            "voided_credits": credits,
        }))),
    }
}
