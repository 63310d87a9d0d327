//! Prices that follow the work (docs/configuration.md, "Prices that follow the work"): the admission cost read from the
//! request body, and the settled cost read from the response.
//!
//! Admission cost = `cost × ceil(units / per)`. With `settle`, that cost is a
//! reservation; when the response ends it is replaced by
//! `cost × ceil(reported / per)`, capped at `settle.max` credits (default: the
//! reservation). No usable figure → the reservation stands. A reservation
//! is an ordinary debit until it is settled, so a crash or a lost connection
//! leaves it charged at the reserved amount — never dropped, never pending.

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

/// The figure at `pointer` in a JSON document, if it is a usable number.
pub fn reported_in_json(bytes: &[u8], pointer: &str) -> Option<f64> {
    let document: Value = serde_json::from_slice(bytes).ok()?;
    non_negative(document.pointer(pointer)?)
}

/// Finds the usage figure in a `text/event-stream` as it streams by: each
/// event's `data:` line is tried as JSON; the last figure found wins.
#[derive(Debug)]
pub struct SseScanner {
    pointer: String,
    line: Vec<u8>,
    pub last: Option<f64>,
}

/// Longer lines cannot be usage events worth reading; they are skipped
/// rather than buffered without bound.
const MAX_LINE: usize = 1 << 20;

impl SseScanner {
    pub fn new(pointer: &str) -> SseScanner {
        SseScanner {
            pointer: pointer.to_owned(),
            line: Vec::new(),
            last: None,
        }
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            if self.line.len() + end <= MAX_LINE {
                self.line.extend_from_slice(&chunk[..end]);
                self.finish_line();
            }
            self.line.clear();
            chunk = &chunk[end + 1..];
        }
        if self.line.len() + chunk.len() <= MAX_LINE {
            self.line.extend_from_slice(chunk);
        } else {
            self.line.clear();
        }
    }

    /// The stream ended: a last line without a newline still counts.
    pub fn finish(&mut self) {
        if !self.line.is_empty() {
            self.finish_line();
            self.line.clear();
        }
    }

    fn finish_line(&mut self) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if let Some(found) = reported_in_json(data.trim_ascii(), &self.pointer) {
            self.last = Some(found);
        }
    }
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

    #[test]
    fn sse_usage_is_found_across_chunk_boundaries_and_the_last_wins() {
        let mut scanner = SseScanner::new("/usage/total_tokens");
        let stream = "data: {\"choices\":[]}\n\ndata: {\"usage\":{\"total_tokens\":10}}\n\ndata: {\"usage\":{\"total_\
                      tokens\":1234}}\r\n\r\ndata: [DONE]\n\n";
        for chunk in stream.as_bytes().chunks(7) {
            scanner.feed(chunk);
        }
        scanner.finish();
        assert_eq!(scanner.last, Some(1234.0));
        let mut unterminated = SseScanner::new("/u");
        unterminated.feed(b"data: {\"u\": 5}");
        unterminated.finish();
        assert_eq!(unterminated.last, Some(5.0));
    }
}
