//! `GET /admin/v1/alerts?state=pending|failed&limit=`: the threshold alerts
//! queued in the ledger (docs/alerts.md, "Watching the queue").

use serde_json::{json, Value};

use crate::error::GatewayError;
use crate::ledger::alerts::{AlertList, AlertState};
use crate::state::Gateway;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// `state` (default `pending`) and `limit` (1–1000, default 100).
pub fn query(query: Option<&str>) -> Result<(AlertState, usize), GatewayError> {
    let mut state = AlertState::Pending;
    let mut limit = DEFAULT_LIMIT;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "state" => {
                state = match value {
                    "pending" => AlertState::Pending,
                    "failed" => AlertState::Failed,
                    _ => {
                        return Err(GatewayError::bad_request(
                            "`state` must be `pending` or `failed`",
                        ))
                    }
                }
            }
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
            _ => {}
        }
    }
    Ok((state, limit))
}

pub async fn list(gateway: &Gateway, raw_query: Option<&str>) -> Result<Value, GatewayError> {
    let (state, limit) = query(raw_query)?;
    let list = gateway
        .ledger
        .backend()
        .list_alerts(state, limit)
        .await
        .map_err(GatewayError::from_ledger)?;
    Ok(list_json(state, &list))
}

/// `{"state", "items":[{event_id, account, threshold, used, monthly_allowance,
/// available, at, attempts, next_attempt_at | drop_at, last_error}], "truncated"}`.
pub fn list_json(state: AlertState, list: &AlertList) -> Value {
    let items: Vec<Value> = list
        .items
        .iter()
        .map(|alert| {
            let mut item = json!({
                "event_id": alert.event_id(),
                "account": alert.account,
                "threshold": alert.threshold(),
                "used": alert.used,
                "monthly_allowance": alert.monthly_allowance,
                "available": alert.available,
                "at": super::rfc3339(alert.at_ms),
                "state": alert.state.label(),
                "attempts": alert.attempts,
                "last_error": alert.last_error,
            });
            let when = match alert.state {
                AlertState::Pending => "next_attempt_at",
                AlertState::Failed => "drop_at",
            };
            item[when] = super::rfc3339(alert.next_ms).into();
            item
        })
        .collect();
    json!({ "state": state.label(), "items": items, "truncated": list.truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_limit_are_checked() {
        assert_eq!(query(None).unwrap(), (AlertState::Pending, 100));
        assert_eq!(
            query(Some("state=failed&limit=1000")).unwrap(),
            (AlertState::Failed, 1000)
        );
        for bad in ["state=done", "state=", "limit=0", "limit=1001", "limit=x"] {
            assert!(query(Some(bad)).is_err(), "{bad}");
        }
    }
}
