//! The rules a configuration must keep beyond each value's own type: the
//! credits bound, rules across the keys of a route, and rules across
//! sections (docs/configuration.md, "What `check` refuses"). The same rules
//! run at start-up, in `creditgate check` and on every reload.

use std::net::SocketAddr;

use super::sections::Draft;
use super::{ConfigIssue, PathPattern, UnitsConfig};

/// The largest number of credits a cost, an allowance, a route's largest
/// admission cost or a settlement may be: the ledger's own bound, under
/// which every sum it makes is exact (docs/ledger.md, "Bounds and repair").
pub const MAX_CREDITS: u64 = crate::ledger::bounds::MAX_CREDITS;

/// The usage API's paths on the data listener (docs/http-api.md): `/v1/credits`
/// and everything under `/v1/credits/`. No route may match them.
const USAGE_API: &str = "/v1/credits";

/// A number of credits read from the file.
pub(super) fn credits(value: u64) -> Result<u64, String> {
    if value > MAX_CREDITS {
        return Err(format!(
            "is {value}; credits are at most 10^15 ({MAX_CREDITS}) so that the ledger counts them exactly"
        ));
    }
    Ok(value)
}

/// Rules across the keys of one route; each issue names its key within the
/// route's table. `None` stands for a key that is absent or already reported.
/// (`settle.max` is a credits value of its own, bounded where it is read;
/// without it a settlement is capped by the reservation, bounded here.)
pub(super) fn route(
    cost: Option<u64>,
    path: Option<&PathPattern>,
    units: Option<&UnitsConfig>,
) -> Vec<(&'static str, String)> {
    let mut issues = Vec::new();
    if let Some(path) = path.filter(|path| matches_usage_api(path)) {
        issues.push((
            "path",
            format!(
                "`{}` would match {USAGE_API}, which the usage API owns on this listener; \
                 choose a path outside {USAGE_API} and {USAGE_API}/*",
                path.as_config()
            ),
        ));
    }
    if let (Some(cost), Some(units)) = (cost, units) {
        // The largest admission cost: at `max`, or at `default` when nothing
        // caps the units (a larger value in a request is then refused as a
        // cost above the allowance).
        let (key, count) = match (units.max, units.default) {
            (Some(max), _) => ("units.max", max),
            (None, Some(default)) => ("units.default", default),
            (None, None) => return issues,
        };
        let steps = (count / units.per as f64).ceil();
        let largest = steps * cost as f64;
        if largest > MAX_CREDITS as f64 {
            issues.push((
                key,
                format!(
                    "a request for {count} units would cost {cost} × {steps} = {largest} credits; \
                     admission costs are at most 10^15 ({MAX_CREDITS})"
                ),
            ));
        }
    }
    issues
}

/// Rules across sections, on what the walk could read.
pub(super) fn whole(draft: &Draft) -> Vec<ConfigIssue> {
    let config = &draft.config;
    let mut issues = Vec::new();
    let mut issue = |key: &str, message: String| {
        issues.push(ConfigIssue {
            key: key.to_owned(),
            message,
        })
    };
    if draft.declared_routes == 0 {
        issue(
            "routes",
            "no routes: the gateway would answer 404 to every request; add at least one [[routes]] table"
                .to_owned(),
        );
    }
    let (data, admin) = (config.server.listen, config.admin.listen);
    if compete_for_a_port(data, admin) {
        issue(
            "admin.listen",
            format!(
                "`{admin}` would bind the same port as server.listen (`{data}`); \
                 give the admin plane its own port"
            ),
        );
    }
    let ledger = &config.ledger;
    for (plan, limits) in &config.limits {
        for (index, limit) in limits.iter().enumerate() {
            if u128::from(limit.window_ms) >= ledger.window.as_millis() {
                issue(
                    &format!("plans.{plan}.limits[{index}].window"),
                    format!(
                        "is {} but ledger.window is {}: an extra window must be shorter than the ledger's",
                        limit.name,
                        humantime::format_duration(ledger.window)
                    ),
                );
            }
        }
    }
    if ledger.history_retention < ledger.window {
        issue(
            "ledger.history_retention",
            format!(
                "is {} but ledger.window is {}: a debit must stay in the history at least as long as it counts",
                humantime::format_duration(ledger.history_retention),
                humantime::format_duration(ledger.window)
            ),
        );
    }
    issues
}

/// Whether a route with this pattern would match `/v1/credits` or a path
/// under `/v1/credits/` (a prefix matches its own path without the slash).
fn matches_usage_api(pattern: &PathPattern) -> bool {
    let under = format!("{USAGE_API}/");
    match pattern {
        PathPattern::Exact(path) => path == USAGE_API || path.starts_with(&under),
        PathPattern::Prefix(prefix) => {
            USAGE_API.starts_with(prefix.as_str())
                || prefix.starts_with(&under)
                || prefix.trim_end_matches('/') == USAGE_API
        }
    }
}

/// Whether two listeners could not both bind: the same port (0 picks a free
/// one, so never) on the same address, or on a wildcard address that covers
/// the other (`0.0.0.0` covers IPv4, `[::]` both families).
fn compete_for_a_port(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let covers = |wide: std::net::IpAddr, other: std::net::IpAddr| {
        wide.is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(max: Option<f64>, default: Option<f64>, per: u64) -> UnitsConfig {
        UnitsConfig {
            pointer: "/n".into(),
            default,
            max,
            per,
        }
    }

    #[test]
    fn credits_are_bounded_at_ten_to_the_fifteenth() {
        assert_eq!(credits(0), Ok(0));
        assert_eq!(credits(MAX_CREDITS), Ok(MAX_CREDITS));
        assert!(credits(MAX_CREDITS + 1).unwrap_err().contains("10^15"));
        assert!(credits(u64::MAX).is_err());
    }

    #[test]
    fn the_largest_admission_cost_is_bounded() {
        let keys = |cost, units: &UnitsConfig| -> Vec<&'static str> {
            route(Some(cost), None, Some(units))
                .into_iter()
                .map(|(key, _)| key)
                .collect()
        };
        // 10^15 exactly is allowed: 10^9 credits × 10^6 units.
        assert!(keys(1_000_000_000, &units(Some(1e6), None, 1)).is_empty());
        assert_eq!(
            keys(1_000_000_000, &units(Some(1e6 + 1.0), None, 1)),
            ["units.max"]
        );
        // `per` groups units into steps: ceil(2_000_001 / 2) = 1_000_001 steps.
        assert_eq!(
            keys(1_000_000_000, &units(Some(2_000_001.0), None, 2)),
            ["units.max"]
        );
        assert!(keys(1_000_000_000, &units(Some(2_000_000.0), None, 2)).is_empty());
        // Without a max, the default is the figure every request may use.
        assert_eq!(
            keys(MAX_CREDITS, &units(None, Some(2.0), 1)),
            ["units.default"]
        );
        assert!(keys(MAX_CREDITS, &units(None, None, 1)).is_empty());
    }

    #[test]
    fn routes_may_not_match_the_usage_api() {
        let exact = |p: &str| PathPattern::Exact(p.into());
        let prefix = |p: &str| PathPattern::Prefix(p.into());
        for reserved in [
            exact("/v1/credits"),
            exact("/v1/credits/"),
            exact("/v1/credits/history"),
            prefix("/v1/credits/"),
            prefix("/v1/credits/history/"),
            prefix("/v1/"),
            prefix("/"),
        ] {
            assert!(matches_usage_api(&reserved), "{reserved:?}");
        }
        for free in [
            exact("/v1/credit"),
            exact("/v1/creditsx"),
            exact("/v2/credits"),
            prefix("/v1/cred/"),
            prefix("/v1/creditsx/"),
            prefix("/v1/images/"),
        ] {
            assert!(!matches_usage_api(&free), "{free:?}");
        }
    }

    #[test]
    fn listeners_compete_on_one_port_unless_it_is_zero() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(compete_for_a_port(
            addr("127.0.0.1:8080"),
            addr("127.0.0.1:8080")
        ));
        assert!(compete_for_a_port(
            addr("0.0.0.0:8080"),
            addr("127.0.0.1:8080")
        ));
        assert!(compete_for_a_port(
            addr("127.0.0.1:8080"),
            addr("[::]:8080")
        ));
        assert!(!compete_for_a_port(
            addr("127.0.0.1:0"),
            addr("127.0.0.1:0")
        ));
        assert!(!compete_for_a_port(
            addr("127.0.0.1:8080"),
            addr("127.0.0.1:9090")
        ));
        assert!(!compete_for_a_port(
            addr("127.0.0.1:8080"),
            addr("127.0.0.2:8080")
        ));
        assert!(!compete_for_a_port(
            addr("0.0.0.0:8080"),
            addr("[::1]:8080")
        ));
    }
}
