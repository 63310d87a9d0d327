//! The sliding window with a short `window`, against Redis `TIME`.

use std::time::{Duration, Instant};

use super::assert_problem;
use crate::support::gateway::{Setup, TestGateway};
use crate::support::money::{assert_debits_match_vendors, by_path};
use crate::support::redis::RedisServer;
use crate::support::upstream::RecordingUpstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_return_after_the_window_and_retry_after_is_right() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let url = redis.url();
    let mut setup = Setup::new(&upstream.url()).redis(&url);
    setup.window = "3s";
    let gateway = TestGateway::start(&setup).await;
    let key = gateway.account_with_key("site-1", "free").await;

    for _ in 0..10 {
        let ok = gateway.post_as(&key, "/v1/images/generate", "x").await;
        assert_eq!(ok.status, 200);
    }
    let rejected = gateway.post_as(&key, "/v1/images/generate", "x").await;
    let rejected_at = Instant::now();
    assert_problem(&rejected, 429, "credits_exhausted");
    let retry_after: u64 = rejected.header("retry-after").unwrap().parse().unwrap();
    // The first debit leaves 3 s after it was made; some of that has passed.
    assert!((1..=3).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(rejected.json()["retry_after"], retry_after);

    // At the promised time there is room again.
    let promised = rejected_at + Duration::from_secs(retry_after);
    tokio::time::sleep_until((promised + Duration::from_millis(100)).into()).await;
    let ok = gateway.post_as(&key, "/v1/images/generate", "x").await;
    assert_eq!(
        ok.status,
        200,
        "credits should be back after Retry-After: {}",
        ok.text()
    );

    tokio::time::sleep(Duration::from_millis(3200)).await;
    let credits = gateway.credits(&key).await;
    assert_eq!(credits["used"], 0, "{credits}");
    assert!(credits["next_release"].is_null());
    assert_eq!(upstream.reached(), 11, "{}", upstream.summary());
    // Every debit has left the window; each still stands, one per request
    // the vendor received.
    let view = gateway.ledger_view(&["site-1"]).await;
    assert_debits_match_vendors(&view, &[&upstream], by_path(&[("/v1/images/generate", 10)]));
}
