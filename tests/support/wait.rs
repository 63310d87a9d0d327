//! Waiting for a condition instead of sleeping for a guess: a loaded machine
//! delays things, so tests wait (up to a generous deadline) for what they
//! expect, and when it never comes they say what they saw.

use std::time::{Duration, Instant};

use super::http::GENEROUS;

/// Polls `probe` until it returns `Ok`, and returns that value. `Err` carries
/// what the probe saw; if [`GENEROUS`] passes, the test fails with `what` and
/// the last observation.
pub async fn wait_until<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + GENEROUS;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "waited {GENEROUS:?} for {what}; last saw: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
