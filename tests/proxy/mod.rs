//! The data plane end to end: real gateway, real recording upstream, and a
//! real redis-server where the ledger is Redis.

mod admin;
mod alerts;
mod cluster;
mod concurrency;
mod errors;
mod faults;
mod forwarding;
mod grants;
mod limits;
mod outage;
mod pricing;
mod redis_tls;
mod sentinel;
mod transport;
mod window;
mod workers;

use crate::support::http::Response;

/// Asserts a problem+json body with the given status and code.
pub fn assert_problem(response: &Response, status: u16, code: &str) {
    assert_eq!(
        response.status,
        status,
        "expected {status} {code}, got {}: {}",
        response.status,
        response.text()
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "problem content type"
    );
    let body = response.json();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    for member in ["type", "title", "detail"] {
        assert!(body[member].is_string(), "problem lacks `{member}`: {body}");
    }
}
