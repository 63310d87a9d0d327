//! What a receiver gets: the JSON body and its signature header.

use crate::alerts::sign::hmac_sha256;
use crate::hex;
use crate::ledger::alerts::QueuedAlert;

/// The body, the same on every attempt (fields in this order):
/// `{"event_id","account","threshold","used","monthly_allowance","available","at"}`.
pub fn body(alert: &QueuedAlert) -> String {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        event_id: String,
        account: &'a str,
        threshold: f64,
        used: u64,
        monthly_allowance: u64,
        available: u64,
        at: String,
    }
    serde_json::to_string(&Body {
        event_id: alert.event_id(),
        account: &alert.account,
        threshold: alert.threshold(),
        used: alert.used,
        monthly_allowance: alert.monthly_allowance,
        available: alert.available,
        at: crate::api::rfc3339(alert.at_ms),
    })
    .unwrap_or_default()
}

/// `X-Creditgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn signature_header(secret: &str, unix_seconds: i64, body: &str) -> String {
    let signed = format!("{unix_seconds}.{body}");
    let mac = hmac_sha256(secret.as_bytes(), signed.as_bytes());
    format!("t={unix_seconds},v1={}", hex::encode(&mac))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::alerts::AlertState;

    #[test]
    fn the_body_holds_the_fields_in_order_and_the_signature_covers_it() {
        let alert = QueuedAlert {
            account: "site-42".into(),
            number: 3,
            threshold_ppm: 800_000,
            used: 8_000,
            monthly_allowance: 10_000,
            available: 2_000,
            at_ms: 1_795_521_600_000,
            state: AlertState::Pending,
            attempts: 1,
            next_ms: 0,
            last_error: None,
        };
        let body = body(&alert);
        assert_eq!(
            body,
            r#"{"event_id":"site-42:1795521600000:3","account":"site-42","threshold":0.8,"used":8000,"monthly_allowance":10000,"available":2000,"at":"2026-11-24T12:00:00Z"}"#
        );
        // The value a receiver computes with `openssl dgst -sha256 -hmac`.
        let header = signature_header("s3cret", 1_795_521_601, "{}");
        assert_eq!(
            header,
            format!(
                "t=1795521601,v1={}",
                hex::encode(&hmac_sha256(b"s3cret", b"1795521601.{}"))
            )
        );
    }
}
