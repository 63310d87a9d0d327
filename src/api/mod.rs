//! JSON surfaces: the usage API on the data listener, the admin API and
//! health endpoints on the admin listener.

pub mod accounts_list;
pub mod admin;
pub mod alerts_list;
pub mod console;
pub mod endpoints;
pub mod grants;
pub mod json;
pub mod prices;
pub mod usage;
pub mod usage_report;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::error::GatewayError;
use crate::ledger::{Balance, HistoryCursor, HistoryPage};

/// RFC 3339 in UTC, with sub-second digits only when there are any.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The `/v1/credits` body. `available` is what the next request could
/// spend: the 30-day window's share plus the live grants, and no more than
/// any extra window leaves.
pub fn balance_json(account: &str, balance: &Balance) -> Value {
    let allowance = balance.allowance.unwrap_or(0);
    json!({
        "account": account,
        "plan": balance.account.plan,
        "monthly_allowance": allowance,
        "used": balance.used,
        "available": balance.available().unwrap_or(0),
        "limits": balance.limits.iter().map(|limit| json!({
            "window": limit.name,
            "window_seconds": limit.window_ms / 1000,
            "credits": limit.credits,
            "used": limit.used,
            "available": limit.available(),
        })).collect::<Vec<_>>(),
        "grants": balance.grants.iter().map(|grant| json!({
            "grant_id": grant.grant_id,
            "remaining": grant.remaining,
            "expires_at": grant.expires_at_ms.map(rfc3339),
        })).collect::<Vec<_>>(),
        "window_seconds": balance.window_ms / 1000,
        "as_of": rfc3339(balance.now_ms),
        "next_release": balance.next_release.as_ref().map(|release| json!({
            "at": rfc3339(release.at_ms),
            "credits": release.credits,
        })),
    })
}

pub const DEFAULT_HISTORY_LIMIT: usize = 50;
pub const MAX_HISTORY_LIMIT: usize = 500;

/// `limit` and `before` from a history query string.
pub fn history_query(query: Option<&str>) -> Result<(usize, Option<HistoryCursor>), GatewayError> {
    let mut limit = DEFAULT_HISTORY_LIMIT;
    let mut before = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_HISTORY_LIMIT).contains(n))
                    .ok_or_else(|| {
                        GatewayError::bad_request(format!(
                            "`limit` must be a whole number from 1 to {MAX_HISTORY_LIMIT}"
                        ))
                    })?;
            }
            "before" => {
                before = Some(decode_cursor(value).ok_or_else(|| {
                    GatewayError::bad_request("`before` is not a cursor this API returned")
                })?);
            }
            _ => {}
        }
    }
    Ok((limit, before))
}

pub fn history_json(page: &HistoryPage) -> Value {
    json!({
        "items": page.items.iter().map(|item| json!({
            "at": rfc3339(item.at_ms),
            "route": item.route,
            "cost": item.cost,
            "request_id": item.request_id,
            "refunded": item.refunded,
            "from_allowance": item.from_allowance,
            "from_grants": item.from_grants,
        })).collect::<Vec<_>>(),
        "next": page.next.as_ref().map(encode_cursor),
    })
}

/// Cursors are opaque to clients: hex of `<at_ms>:<request_id>`.
pub fn encode_cursor(cursor: &HistoryCursor) -> String {
    crate::hex::encode(format!("{}:{}", cursor.at_ms, cursor.request_id).as_bytes())
}

pub fn decode_cursor(text: &str) -> Option<HistoryCursor> {
    if text.len() > 512 {
        return None;
    }
    let bytes = crate::hex::decode(text)?;
    let text = String::from_utf8(bytes).ok()?;
    let (at_ms, request_id) = text.split_once(':')?;
    Some(HistoryCursor {
        at_ms: at_ms.parse().ok()?,
        request_id: request_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_junk() {
        let cursor = HistoryCursor {
            at_ms: 1_764_000_000_123,
            request_id: "abc:def".into(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&cursor)), Some(cursor));
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
    }

    #[test]
    fn history_limit_is_bounded() {
        assert_eq!(history_query(None).unwrap().0, 50);
        assert_eq!(history_query(Some("limit=500")).unwrap().0, 500);
        assert!(history_query(Some("limit=0")).is_err());
        assert!(history_query(Some("limit=501")).is_err());
        assert!(history_query(Some("limit=x")).is_err());
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(rfc3339(1_795_521_600_000), "2026-11-24T12:00:00Z");
        assert_eq!(rfc3339(1_795_521_600_500), "2026-11-24T12:00:00.500Z");
    }
}
