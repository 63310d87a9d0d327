//! The usage report (`GET /v1/credits/usage`, `GET /admin/v1/accounts/{id}/usage`):
//! where an account's credits went, by route and by UTC day, and when they
//! come back — what a dashboard draws (docs/usage-api.md). Built from the
//! ledger's per-account aggregates, read in one atomic step, so its cost does
//! not grow with the number of debits and its parts always add up to `used`.

use std::collections::BTreeMap;

use chrono::DateTime;
use serde_json::{json, Value};

use crate::error::GatewayError;
use crate::ledger::usage::{utc_day, Rebuilt, Usage, DAY_MS};
use crate::ledger::PlanTable;
use crate::state::Gateway;

/// The account's usage report; `Ok(None)` when the account does not exist.
pub async fn report(
    gateway: &Gateway,
    plans: &PlanTable,
    account: &str,
) -> Result<Option<Value>, GatewayError> {
    let Some(usage) = gateway
        .ledger
        .usage(account, plans)
        .await
        .map_err(GatewayError::from_ledger)?
    else {
        return Ok(None);
    };
    if let Some(reason) = usage.rebuilt {
        let why = match reason {
            Rebuilt::NotKept => "none were kept yet (an account from before them, or a new window)",
            Rebuilt::Disagreed => "they did not add up to the account's total",
        };
        tracing::info!(account, "usage aggregates rebuilt from the window: {why}");
    }
    Ok(Some(usage_json(account, &usage)))
}

/// `YYYY-MM-DD` of a UTC day number.
fn day_text(day: i64) -> String {
    DateTime::from_timestamp_millis(day.saturating_mul(DAY_MS))
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// The report body: the balance fields of `/v1/credits`, then `by_route`
/// (largest first, then by name), `by_day` (every UTC day from the day of
/// `as_of − window` to the day of `as_of`, zero-filled, each with its
/// credits per route in `by_route` — what a stacked chart draws) and
/// `returning` (credits by the UTC day they leave the window, soonest first,
/// non-zero days only).
pub fn usage_json(account: &str, usage: &Usage) -> Value {
    let allowance = usage.allowance.unwrap_or(0);
    let mut routes: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    // Day → (credits, route → credits).
    let mut days: BTreeMap<i64, (u64, BTreeMap<&str, u64>)> = BTreeMap::new();
    for cell in &usage.spent {
        let route = routes.entry(&cell.route).or_default();
        route.0 += cell.credits;
        route.1 += cell.requests;
        let day = days.entry(cell.day).or_default();
        day.0 += cell.credits;
        if cell.credits > 0 {
            *day.1.entry(&cell.route).or_default() += cell.credits;
        }
    }
    let mut by_route: Vec<(&str, u64, u64)> = routes
        .into_iter()
        .map(|(route, (credits, requests))| (route, credits, requests))
        .collect();
    by_route.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let window_ms = i64::try_from(usage.window_ms).unwrap_or(i64::MAX);
    let first_day = utc_day(usage.now_ms.saturating_sub(window_ms));
    let last_day = utc_day(usage.now_ms);
    json!({
        "account": account,
        "plan": usage.account.plan,
        "monthly_allowance": allowance,
        "used": usage.used,
        "from_grants": usage.from_grants,
        "available": allowance.saturating_sub(usage.used),
        "window_seconds": usage.window_ms / 1000,
        "as_of": super::rfc3339(usage.now_ms),
        "by_route": by_route.iter().map(|(route, credits, requests)| json!({
            "route": route,
            "credits": credits,
            "requests": requests,
        })).collect::<Vec<_>>(),
        "by_day": (first_day..=last_day).map(|day| {
            let (credits, by_route) = days.get(&day).cloned().unwrap_or_default();
            json!({"day": day_text(day), "credits": credits, "by_route": by_route})
        }).collect::<Vec<_>>(),
        "returning": usage.returning.iter().filter(|day| day.credits > 0).map(|day| json!({
            "day": day_text(day.day),
            "credits": day.credits,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::usage::{DayCredits, UsageCell};
    use crate::ledger::AccountRecord;

    fn cell(day: i64, route: &str, credits: u64, requests: u64) -> UsageCell {
        UsageCell {
            day,
            route: route.into(),
            credits,
            requests,
        }
    }

    #[test]
    fn the_report_adds_up_and_fills_every_day_of_the_window() {
        // 2026-12-01T21:00:00Z, day 20788.
        let now = 1_796_158_800_000;
        let usage = Usage {
            account: AccountRecord {
                plan: "pro".into(),
                suspended: false,
            },
            allowance: Some(10_000),
            used: 1234,
            from_grants: 0,
            now_ms: now,
            window_ms: 30 * DAY_MS as u64,
            spent: vec![
                cell(20_758, "image-generate", 34, 8),
                cell(20_788, "image-generate", 300, 72),
                cell(20_788, "video-generate", 900, 45),
                cell(20_788, "zero", 0, 1),
            ],
            returning: vec![
                DayCredits {
                    day: 20_788,
                    credits: 34,
                },
                DayCredits {
                    day: 20_818,
                    credits: 1200,
                },
            ],
            rebuilt: None,
        };
        let body = usage_json("site-42", &usage);
        assert_eq!(body["available"], 8766);
        assert_eq!(body["as_of"], "2026-12-01T21:00:00Z");
        let by_route = body["by_route"].as_array().unwrap();
        let names: Vec<&str> = by_route
            .iter()
            .map(|r| r["route"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["video-generate", "image-generate", "zero"]);
        assert_eq!(by_route[1]["requests"], 80);
        let by_day = body["by_day"].as_array().unwrap();
        assert_eq!(by_day.len(), 31, "30 days back and today");
        assert_eq!(by_day[0]["day"], "2026-11-01");
        assert_eq!(by_day[0]["credits"], 34);
        assert_eq!(by_day[30]["day"], "2026-12-01");
        assert_eq!(by_day[30]["credits"], 1200);
        assert_eq!(
            by_day[30]["by_route"],
            json!({"image-generate": 300, "video-generate": 900})
        );
        assert_eq!(by_day[1]["by_route"], json!({}));
        let total = |list: &Value| -> u64 {
            list.as_array()
                .unwrap()
                .iter()
                .map(|item| item["credits"].as_u64().unwrap())
                .sum()
        };
        assert_eq!(total(&body["by_route"]), 1234);
        assert_eq!(total(&body["by_day"]), 1234);
        assert_eq!(total(&body["returning"]), 1234);
        assert_eq!(body["returning"][1]["day"], "2026-12-31");
    }

    #[test]
    fn days_are_calendar_dates() {
        assert_eq!(day_text(0), "1970-01-01");
        assert_eq!(day_text(20_781), "2026-11-24");
    }
}
