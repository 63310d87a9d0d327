//! The arithmetic of prices that follow the work (docs/configuration.md,
//! "Prices that follow the work"): the admission cost from the request
//! body's units, and the settled cost from a reported figure.
//!
//! Admission cost = `cost × ceil(units / per)`. With `settle`, that cost is a
//! reservation, replaced when the response ends by
//! `cost × ceil(reported / per)`, capped at `settle.max` credits (default: the
//! reservation). Reading the figure and moving the money is the charge's
//! business (`charge/`).

use serde_json::Value;

use crate::config::{SettleConfig, UnitsConfig};

/// The admission cost of a priced-per-unit request, or a client-facing
/// reason why the body cannot be priced.
pub fn admission_cost(cost: u64, units: &UnitsConfig, body: &[u8]) -> Result<u64, String> {
    let field = &units.pointer;
    let document: Value = serde_json::from_slice(body)
        .map_err(|_| format!("the request body must be JSON to price `{field}`"))?;
    let count = match document.pointer(field) {
        None | Some(Value::Null) => units
            .default
            .ok_or_else(|| format!("`{field}` is required to price this request"))?,
        Some(value) => {
            non_negative(value).ok_or_else(|| format!("`{field}` must be a non-negative number"))?
        }
    };
    if let Some(max) = units.max {
        if count > max {
            return Err(format!("`{field}` is {count}, above the maximum of {max}"));
        }
    }
    Ok(cost.saturating_mul(steps(count, units.per)))
}

/// The final cost for a reported figure.
pub fn settled_cost(cost: u64, settle: &SettleConfig, reported: f64, reservation: u64) -> u64 {
    let cap = settle.max_credits.unwrap_or(reservation);
    cost.saturating_mul(steps(reported, settle.per)).min(cap)
}

/// `ceil(count / per)` as a whole number of steps.
fn steps(count: f64, per: u64) -> u64 {
    let steps = (count / per.max(1) as f64).ceil();
    if steps >= u64::MAX as f64 {
        u64::MAX
    } else {
        steps as u64
    }
}

fn non_negative(value: &Value) -> Option<f64> {
    value.as_f64().filter(|n| n.is_finite() && *n >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SettleSource;

    fn units(default: Option<f64>, max: Option<f64>, per: u64) -> UnitsConfig {
        UnitsConfig {
            pointer: "/n".into(),
            default,
            max,
            per,
        }
    }

    #[test]
    fn admission_cost_reads_the_field_with_default_max_and_rounding() {
        let per_image = units(Some(1.0), Some(10.0), 1);
        assert_eq!(admission_cost(4, &per_image, br#"{}"#), Ok(4));
        assert_eq!(admission_cost(4, &per_image, br#"{"n":1}"#), Ok(4));
        assert_eq!(admission_cost(4, &per_image, br#"{"n":4}"#), Ok(16));
        assert_eq!(admission_cost(4, &per_image, br#"{"n":null}"#), Ok(4));
        assert!(admission_cost(4, &per_image, br#"{"n":11}"#)
            .unwrap_err()
            .contains("maximum"));
        assert!(admission_cost(4, &per_image, br#"{"n":-1}"#).is_err());
        assert!(admission_cost(4, &per_image, br#"{"n":"4"}"#).is_err());
        assert!(admission_cost(4, &per_image, b"not json")
            .unwrap_err()
            .contains("JSON"));
        let per_thousand = units(Some(1000.0), None, 1000);
        assert_eq!(admission_cost(1, &per_thousand, br#"{"n":1001}"#), Ok(2));
        assert_eq!(admission_cost(1, &per_thousand, br#"{"n":0}"#), Ok(0));
        let seconds = units(None, Some(60.0), 1);
        assert_eq!(admission_cost(3, &seconds, br#"{"n":12.5}"#), Ok(39));
        assert!(admission_cost(3, &seconds, br#"{}"#)
            .unwrap_err()
            .contains("required"));
    }

    #[test]
    fn settlement_rounds_up_and_is_capped() {
        let settle = SettleConfig {
            source: SettleSource::Json("/usage/total_tokens".into()),
            per: 1000,
            max_credits: None,
        };
        assert_eq!(settled_cost(1, &settle, 1.0, 32), 1);
        assert_eq!(settled_cost(1, &settle, 2500.0, 32), 3);
        assert_eq!(settled_cost(1, &settle, 0.0, 32), 0);
        assert_eq!(
            settled_cost(1, &settle, 99_000.0, 32),
            32,
            "capped at the reservation"
        );
        let capped = SettleConfig {
            max_credits: Some(40),
            ..settle
        };
        assert_eq!(settled_cost(1, &capped, 99_000.0, 32), 40);
    }
}
