//! The alert sender: one task per instance, on the admin plane's runtime,
//! never on the request path.
//!
//! Every [`POLL`] (or at once after a debit queued an alert) it files the
//! hinted accounts in the ledger's index, asks the ledger for accounts with
//! alerts due, claims their due alerts — a lease of 2 × `alerts.timeout` + 5 s,
//! during which no other sender of the fleet takes them — and POSTs each
//! one, signed. A 2xx answer removes the alert; anything else (another
//! status, a timeout, a connection error) schedules the next attempt
//! `alerts.retry_base` × 2^(attempts − 1) later, at most 5 minutes, until
//! `alerts.retry_for` after the crossing: then the alert is marked failed.
//! A sender that dies mid-attempt leaves its lease to run out; then another
//! takes the alert (at least once). One that shuts down hands the alerts it
//! was sending back to the queue, due at once. Settings are read from the current
//! config on every round, so a reload applies to the next one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::payload::{body, signature_header};
use crate::clock::SharedClock;
use crate::config::AlertsConfig;
use crate::ledger::alerts::{retry_wait, Attempt, QueuedAlert, Settled};
use crate::state::Gateway;

/// How often the sender looks for due alerts when nothing wakes it.
pub const POLL: Duration = Duration::from_millis(250);
/// Deliveries in flight at once per instance.
const MAX_IN_FLIGHT: usize = 32;
/// Accounts looked at per round.
const ACCOUNTS_PER_ROUND: usize = 64;
/// How long a claim outlives the attempt's own timeout (recording the
/// attempt's end in the ledger is part of it).
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How often the fleet scans for alert queues the index missed (one
/// gateway per period: a lease in the ledger).
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Alerts with an attempt under way, by (account, number): handed back to
/// the queue if the instance shuts down before they end.
type InFlight = Arc<Mutex<HashMap<(String, u64), QueuedAlert>>>;

/// How long a shutdown spends handing back the alerts it was sending.
const RELEASE_ON_SHUTDOWN: Duration = Duration::from_secs(2);

/// The running sender; it stops when the instance shuts down.
pub struct Sender {
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the sender for `gateway` (the admin plane's).
pub fn spawn(gateway: Arc<Gateway>, clock: SharedClock, shutdown: watch::Receiver<bool>) -> Sender {
    Sender {
        task: tokio::spawn(run(gateway, clock, shutdown)),
    }
}

fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

async fn run(gateway: Arc<Gateway>, clock: SharedClock, mut shutdown: watch::Receiver<bool>) {
    let client = client();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut deliveries = JoinSet::new();
    let in_flight: InFlight = Arc::default();
    let mut next_sweep = tokio::time::Instant::now() + SWEEP_EVERY / 20;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = gateway.alerts.notify.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        while deliveries.try_join_next().is_some() {}
        let snapshot = gateway.snapshot();
        let Some(config) = snapshot.config.alerts.clone() else {
            continue;
        };
        let config = Arc::new(config);
        let ledger = gateway.ledger.backend();
        let mut hints = gateway.alerts.take().into_iter();
        while let Some(account) = hints.next() {
            if let Err(error) = ledger.hint_alerts(&account).await {
                // Kept for the next round (the sweep is the last resort).
                tracing::debug!(%account, "alerts: cannot file the account in the alert index: {error}");
                gateway.alerts.add(&account);
                hints.for_each(|account| gateway.alerts.add(&account));
                break;
            }
        }
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
            match ledger.sweep_alert_queues(SWEEP_EVERY).await {
                Ok(Some(found)) => tracing::debug!(found, "alerts: swept for alert queues"),
                Ok(None) => {}
                Err(error) => tracing::warn!("alerts: sweep for alert queues failed: {error}"),
            }
        }
        let accounts = match ledger.alert_accounts_due(ACCOUNTS_PER_ROUND).await {
            Ok(accounts) => accounts,
            Err(error) => {
                tracing::debug!("alerts: cannot read the alert index: {error}");
                continue;
            }
        };
        let lease = config.timeout * 2 + LEASE_MARGIN;
        for account in accounts {
            let free = slots.available_permits();
            if free == 0 {
                break;
            }
            let claim = match ledger.claim_alerts(&account, lease, free).await {
                Ok(claim) => claim,
                Err(error) => {
                    tracing::warn!(%account, "alerts: cannot claim alerts: {error}");
                    continue;
                }
            };
            if let Err(error) = ledger
                .index_alert_account(&account, claim.next_due_ms)
                .await
            {
                tracing::warn!(%account, "alerts: cannot update the alert index: {error}");
            }
            for alert in claim.alerts {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let (gateway, client, clock, config, in_flight) = (
                    gateway.clone(),
                    client.clone(),
                    clock.clone(),
                    config.clone(),
                    in_flight.clone(),
                );
                let held = (alert.account.clone(), alert.number);
                lock(&in_flight).insert(held.clone(), alert.clone());
                deliveries.spawn(async move {
                    deliver_and_record(&gateway, &client, &clock, &config, alert).await;
                    lock(&in_flight).remove(&held);
                    drop(slot);
                });
            }
        }
    }
    // Attempts still under way are cut and their alerts handed back, due at
    // once, so another sender (or this one, restarted) need not wait for the
    // lease to run out. The receiver may have had one already: at least once.
    deliveries.abort_all();
    while deliveries.join_next().await.is_some() {}
    let cut: Vec<QueuedAlert> = lock(&in_flight).drain().map(|(_, alert)| alert).collect();
    if cut.is_empty() {
        return;
    }
    let snapshot = gateway.snapshot();
    let retry_for = snapshot
        .config
        .alerts
        .as_ref()
        .map_or(Duration::from_secs(24 * 3600), |alerts| alerts.retry_for);
    let release = async {
        for alert in &cut {
            let handed_back = Attempt::Failed {
                wait: Duration::ZERO,
                retry_for,
                error: "the gateway shut down during the attempt".into(),
            };
            let ledger = gateway.ledger.backend();
            if let Ok(finished) = ledger.finish_alert(alert, &handed_back).await {
                let _ = ledger
                    .index_alert_account(&alert.account, finished.next_due_ms)
                    .await;
            }
        }
    };
    if tokio::time::timeout(RELEASE_ON_SHUTDOWN, release)
        .await
        .is_err()
    {
        tracing::warn!(
            alerts = cut.len(),
            "alerts: shutdown could not hand back every alert it was sending; their leases will run out"
        );
    }
}

fn lock(in_flight: &InFlight) -> std::sync::MutexGuard<'_, HashMap<(String, u64), QueuedAlert>> {
    in_flight.lock().unwrap_or_else(|e| e.into_inner())
}

async fn deliver_and_record(
    gateway: &Gateway,
    client: &HttpClient,
    clock: &SharedClock,
    config: &AlertsConfig,
    alert: QueuedAlert,
) {
    let attempt = deliver(client, clock, config, &alert).await;
    let ledger = gateway.ledger.backend();
    let finished = match ledger.finish_alert(&alert, &attempt).await {
        Ok(finished) => finished,
        Err(error) => {
            // The lease runs out and the alert is tried again.
            tracing::warn!(event_id = %alert.event_id(), "alerts: cannot record the attempt: {error}");
            return;
        }
    };
    match (&attempt, finished.settled) {
        (_, Settled::Delivered) => {
            gateway.metrics.alert_delivered();
            tracing::info!(event_id = %alert.event_id(), attempts = alert.attempts, "alert delivered");
        }
        (Attempt::Failed { error, .. }, Settled::WillRetry) => {
            gateway.metrics.alert_attempt_failed();
            tracing::warn!(event_id = %alert.event_id(), attempts = alert.attempts, "alert not delivered, will retry: {error}");
        }
        (Attempt::Failed { error, .. }, Settled::GaveUp) => {
            gateway.metrics.alert_attempt_failed();
            gateway.metrics.alert_given_up();
            tracing::error!(event_id = %alert.event_id(), attempts = alert.attempts, "alert given up on after alerts.retry_for: {error}");
        }
        _ => {}
    }
    if let Err(error) = ledger
        .index_alert_account(&alert.account, finished.next_due_ms)
        .await
    {
        tracing::warn!(account = %alert.account, "alerts: cannot update the alert index: {error}");
    }
}

/// One attempt: POST the signed body, within `alerts.timeout`.
async fn deliver(
    client: &HttpClient,
    clock: &SharedClock,
    config: &AlertsConfig,
    alert: &QueuedAlert,
) -> Attempt {
    let failed = |error: String| Attempt::Failed {
        wait: retry_wait(config.retry_base, alert.attempts),
        retry_for: config.retry_for,
        error,
    };
    let body = body(alert);
    let signature = signature_header(&config.secret, clock.now_ms().div_euclid(1000), &body);
    let request = Request::post(config.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("creditgate/", env!("CARGO_PKG_VERSION")),
        )
        .header("x-creditgate-signature", signature)
        .header(
            "x-creditgate-event-id",
            HeaderValue::from_str(&alert.event_id()).unwrap_or(HeaderValue::from_static("")),
        )
        .body(Full::new(Bytes::from(body)));
    let request = match request {
        Ok(request) => request,
        Err(error) => return failed(format!("cannot build the request: {error}")),
    };
    match tokio::time::timeout(config.timeout, client.request(request)).await {
        Err(_) => failed(format!("no answer within {:?}", config.timeout)),
        Ok(Err(error)) => failed(format!("cannot reach the receiver: {error}")),
        Ok(Ok(response)) if response.status().is_success() => Attempt::Delivered,
        Ok(Ok(response)) => failed(format!("the receiver answered {}", response.status())),
    }
}
