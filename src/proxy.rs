//! One request's life on the data plane, as ordered phases:
//!
//! ```text
//! target → normalise path → authenticate → match route → admit body
//!        → debit (atomic, ledger) → forward (stream) → refund on failure
//!        → respond → record
//! ```
//!
//! Each phase passes the request on or ends it with a [`GatewayError`];
//! [`handle`] turns every error into a problem response, so hyper never sees
//! an error, and every request — admitted or not — passes through
//! [`record_request`] exactly once.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::config::{OnUnavailable, SettleSource};
use crate::deadline::{BodyTimedOut, DeadlineBody};
use crate::error::{ErrorKind, Extra, GatewayError};
use crate::forward::{self, ClientContext, ForwardError};
use crate::ledger::{Debit, DebitOutcome, KeyOwner, RefundOutcome, WindowState};
use crate::path;
use crate::pricing;
use crate::ratelimit::CreditHeaders;
use crate::request_id;
use crate::routes::RouteMatch;
use crate::settle;
use crate::state::{Gateway, Snapshot};

/// The client side of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// What [`record_request`] logs and counts about a request.
pub struct RequestRecord {
    pub request_id: HeaderValue,
    /// The gateway generated `request_id` (the client sent none it could keep).
    pub request_id_generated: bool,
    pub method: Method,
    pub path: String,
    pub route: Option<String>,
    pub account: Option<String>,
    /// Credits debited (and not refunded) for this request.
    pub cost: u64,
    /// When the debit was recorded (ledger clock), to find it again.
    pub debit_at_ms: Option<i64>,
    pub refunded: bool,
    /// Forwarded without a debit because the ledger was unreachable and
    /// `on_unavailable = "allow"`.
    pub unmetered: bool,
    pub error: Option<ErrorKind>,
    pub credit_headers: Option<CreditHeaders>,
    pub upstream_started: Option<Instant>,
    /// The cost is settled when the response stream ends; credits are
    /// counted then, not here.
    pub settle_later: bool,
    pub upstream_elapsed: Option<std::time::Duration>,
}

/// The hyper service body: never fails.
pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    conn: ConnInfo,
) -> Response<Body> {
    let started = Instant::now();
    let snapshot = gateway.snapshot();
    let mut record = RequestRecord {
        request_id_generated: !request_id::client_id_is_kept(request.headers()),
        request_id: request_id::from_headers(request.headers()),
        method: request.method().clone(),
        path: request.uri().path().to_string(),
        route: None,
        account: None,
        cost: 0,
        refunded: false,
        unmetered: false,
        error: None,
        credit_headers: None,
        upstream_started: None,
        upstream_elapsed: None,
        settle_later: false,
        debit_at_ms: None,
    };
    let mut response = match serve(&gateway, &snapshot, request, conn, &mut record).await {
        Ok(response) => response,
        Err(error) => {
            record.error = Some(error.kind);
            if let Some(internal) = &error.internal {
                tracing::warn!(request_id = ?record.request_id, code = error.kind.code(), "{internal}");
            }
            error.to_response()
        }
    };
    let headers = response.headers_mut();
    headers.insert("x-request-id", record.request_id.clone());
    if let Some(credits) = &record.credit_headers {
        credits.apply(headers);
    }
    record_request(&gateway, &record, &response, started);
    response
}

async fn serve(
    gateway: &Arc<Gateway>,
    snapshot: &Snapshot,
    request: Request<Incoming>,
    conn: ConnInfo,
    record: &mut RequestRecord,
) -> Result<Response<Body>, GatewayError> {
    let (parts, body) = request.into_parts();

    // Phase: target. Only origin-form targets are routed; an HTTP/1 absolute
    // form would let the client name the host.
    if parts.method == Method::CONNECT
        || (parts.version < Version::HTTP_2 && parts.uri.authority().is_some())
    {
        return Err(GatewayError::bad_request(
            "only origin-form request targets (\"/path?query\") are accepted",
        ));
    }
    let path = path::normalize(parts.uri.path())
        .map_err(|e| GatewayError::bad_request(format!("unsafe request path: {e}")))?;
    debug_assert!(path::is_safe_normalized(&path));

    if crate::api::usage::is_usage_path(&path) {
        return crate::api::usage::handle(gateway, snapshot, &parts, &path, record).await;
    }

    // Phase: authenticate.
    let owner = authenticate(gateway, &parts.headers).await?;
    record.account = Some(owner.account_id.clone());

    // Phase: match route.
    let route_index = match snapshot.routes.lookup(&parts.method, &path) {
        RouteMatch::Found(index) => index,
        RouteMatch::MethodNotAllowed { allow } => {
            let allow = allow.join(", ");
            return Err(GatewayError::new(
                ErrorKind::MethodNotAllowed,
                format!("this path accepts {allow}"),
            )
            .with_extra(Extra::Allow(allow)));
        }
        RouteMatch::NotFound => {
            return Err(GatewayError::new(
                ErrorKind::RouteNotFound,
                format!("no route for {} {path}", parts.method),
            ))
        }
    };
    let route = &snapshot.config.routes[route_index];
    record.route = Some(route.name.clone());
    if owner.account.suspended {
        return Err(suspended());
    }

    // Phase: admit body and price — before any debit, so a 413 or a 400
    // never costs anything. Only per-unit routes read the body whole.
    let max_body = snapshot.config.server.max_body_bytes;
    let body = DeadlineBody::new(body, snapshot.config.server.body_read_timeout);
    let body_expired = body.expired_flag();
    let (body, cost) = match &route.units {
        None => (admit_body(body, max_body).await?, route.cost),
        Some(units) => {
            let bytes = read_body(body, max_body).await?;
            let cost = pricing::admission_cost(route.cost, units, &bytes)
                .map_err(|detail| GatewayError::new(ErrorKind::InvalidUnits, detail))?;
            (body::full(bytes), cost)
        }
    };

    // Phase: debit.
    if cost > 0 {
        debit(gateway, snapshot, &owner, &route.name, cost, record).await?;
    }

    // Phase: forward.
    let upstream = &snapshot.route_upstreams[route_index];
    let uri = upstream.uri_for(&path, parts.uri.query()).map_err(|e| {
        GatewayError::bad_request("request target cannot be forwarded").with_internal(e)
    })?;
    let context = ClientContext {
        peer: conn.peer,
        tls: conn.tls,
        request_id: &record.request_id,
    };
    let upstream_started = Instant::now();
    record.upstream_started = Some(upstream_started);
    let result = upstream
        .send(parts.method.clone(), uri, &parts.headers, body, &context)
        .await;
    record.upstream_elapsed = Some(upstream_started.elapsed());

    // Phase: refund on failure, then respond.
    let refund_on_failure = route.refund_on_failure;
    match result {
        Ok(response) => {
            let failed = response.status().is_server_error();
            if failed && refund_on_failure {
                refund(gateway, &owner.account_id, record).await;
            }
            let (mut head, incoming) = response.into_parts();
            forward::clean_response_headers(&mut head.headers);
            head.version = Version::HTTP_11;
            let body = match &route.settle {
                Some(settle) if record.cost > 0 && !record.refunded => {
                    let pending = settle::Pending {
                        gateway: gateway.clone(),
                        account: owner.account_id.clone(),
                        request_id: record.request_id.to_str().unwrap_or_default().to_owned(),
                        debit_at_ms: record.debit_at_ms,
                        route: route.name.clone(),
                        route_cost: route.cost,
                        settle: settle.clone(),
                        reservation: record.cost,
                        drain_timeout: upstream.config.timeout,
                    };
                    settle_response(&head, incoming, pending, record).await
                }
                _ => body::stream(incoming),
            };
            Ok(Response::from_parts(head, body))
        }
        Err(_) if body_expired.load(Ordering::SeqCst) => {
            // The client's body stalled mid-forward: its fault, but nothing
            // was delivered, so nothing is charged.
            refund(gateway, &owner.account_id, record).await;
            Err(body_timed_out())
        }
        Err(error) => {
            if refund_on_failure {
                refund(gateway, &owner.account_id, record).await;
            }
            let kind = match error {
                ForwardError::Timeout(_) => ErrorKind::UpstreamTimeout,
                ForwardError::Unavailable(_) => ErrorKind::UpstreamUnavailable,
            };
            let detail = match kind {
                ErrorKind::UpstreamTimeout => "the upstream did not answer in time",
                _ => "the upstream could not be reached or answered malformed data",
            };
            Err(GatewayError::new(kind, detail)
                .with_internal(format_args!("upstream {}: {error}", upstream.name)))
        }
    }
}

/// Settles a reservation from the response: at once when the figure is in
/// the head or a small JSON body, else as the event stream ends.
async fn settle_response(
    head: &http::response::Parts,
    incoming: Incoming,
    pending: settle::Pending,
    record: &mut RequestRecord,
) -> Body {
    let settle_now = |record: &mut RequestRecord, (charged, used): (u64, Option<u64>)| {
        record.cost = charged;
        if let Some(headers) = &mut record.credit_headers {
            headers.settled(charged, used);
        }
    };
    match &pending.settle.source {
        SettleSource::Header(name) => {
            let reported = head
                .headers
                .get(name.as_str())
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n >= 0.0);
            settle_now(record, pending.settle(reported).await);
            body::stream(incoming)
        }
        SettleSource::Json(pointer) => {
            let event_stream = head
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.trim_start().starts_with("text/event-stream"));
            if event_stream {
                // Counted when the stream ends, with the settled cost.
                record.settle_later = true;
                let pointer = pointer.clone();
                return body::stream(settle::SettlingBody::new(incoming, &pointer, pending));
            }
            let (body, reported) = settle::read_json_usage(incoming, pointer).await;
            settle_now(record, pending.settle(reported).await);
            body
        }
    }
}

/// The account behind the request's API key.
pub(crate) async fn authenticate(
    gateway: &Gateway,
    headers: &http::HeaderMap,
) -> Result<Arc<KeyOwner>, GatewayError> {
    let unauthenticated = || {
        GatewayError::new(
            ErrorKind::Unauthenticated,
            "send a valid API key as `Authorization: Bearer <key>` or `X-Api-Key: <key>`",
        )
    };
    let key = crate::auth::presented_key(headers).ok_or_else(unauthenticated)?;
    gateway
        .keys
        .authenticate(&gateway.ledger, &gateway.metrics, key)
        .await
        .map_err(GatewayError::ledger_unavailable)?
        .ok_or_else(unauthenticated)
}

fn suspended() -> GatewayError {
    GatewayError::new(ErrorKind::AccountSuspended, "this account is suspended")
}

/// Reads a whole request body within the limit (per-unit pricing needs it).
async fn read_body(body: DeadlineBody, max_bytes: u64) -> Result<bytes::Bytes, GatewayError> {
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    if body.size_hint().lower() > max_bytes {
        return Err(payload_too_large(max_bytes));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(payload_too_large(max_bytes))
        }
        Err(error) if error.is::<BodyTimedOut>() => Err(body_timed_out()),
        Err(error) => Err(
            GatewayError::bad_request("the request body could not be read").with_internal(error),
        ),
    }
}

fn body_timed_out() -> GatewayError {
    GatewayError::new(
        ErrorKind::RequestTimeout,
        "the request body did not arrive in time",
    )
}

fn payload_too_large(max_bytes: u64) -> GatewayError {
    GatewayError::new(
        ErrorKind::PayloadTooLarge,
        format!("request bodies are limited to {max_bytes} bytes"),
    )
}

/// Streams a body of known length (hyper enforces `Content-Length`); buffers
/// one of unknown length (chunked) up to the limit, so that an oversized body
/// is refused before anything is forwarded or debited.
async fn admit_body(body: DeadlineBody, max_bytes: u64) -> Result<Body, GatewayError> {
    let too_large = || {
        GatewayError::new(
            ErrorKind::PayloadTooLarge,
            format!("request bodies are limited to {max_bytes} bytes"),
        )
    };
    let hint = body.size_hint();
    if hint.lower() > max_bytes {
        return Err(too_large());
    }
    if hint.exact().is_some() {
        return Ok(body::stream(body));
    }
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(body::full(collected.to_bytes())),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) if error.is::<BodyTimedOut>() => Err(body_timed_out()),
        Err(error) => Err(
            GatewayError::bad_request("the request body could not be read").with_internal(error),
        ),
    }
}

async fn debit(
    gateway: &Gateway,
    snapshot: &Snapshot,
    owner: &KeyOwner,
    route: &str,
    cost: u64,
    record: &mut RequestRecord,
) -> Result<(), GatewayError> {
    let fallback = request_id::generate();
    let request_id = record.request_id.to_str().unwrap_or_default().to_owned();
    let debit = Debit {
        account: &owner.account_id,
        request_id: &request_id,
        request_id_generated: record.request_id_generated,
        fallback_request_id: fallback.to_str().unwrap_or_default(),
        route,
        cost,
        plans: &snapshot.config.plans,
    };
    let started = Instant::now();
    let outcome = gateway.ledger.debit(&debit).await;
    gateway
        .metrics
        .ledger_call("debit", started.elapsed(), outcome.is_ok());
    let window_secs = snapshot.window_secs;
    match outcome {
        // A damaged account or a refused amount: never forwarded unmetered.
        Err(error) if !error.is_outage() => Err(GatewayError::from_ledger(error)),
        Err(error) => match snapshot.config.ledger.on_unavailable {
            OnUnavailable::Reject => Err(GatewayError::ledger_unavailable(error)),
            OnUnavailable::Allow => {
                tracing::warn!(
                    route,
                    "ledger unreachable; forwarding without a debit: {error}"
                );
                record.unmetered = true;
                Ok(())
            }
        },
        Ok(DebitOutcome::Admitted {
            request_id,
            at_ms,
            window,
        }) => {
            record.debit_at_ms = Some(at_ms);
            if request_id.as_bytes() != record.request_id.as_bytes() {
                record.request_id = HeaderValue::from_str(&request_id).unwrap_or(fallback);
            }
            record.cost = cost;
            record.credit_headers = Some(CreditHeaders::new(&window, cost, window_secs));
            Ok(())
        }
        Ok(DebitOutcome::Rejected {
            window,
            retry_after_ms,
        }) => {
            record.credit_headers = Some(CreditHeaders::new(&window, cost, window_secs));
            Err(credits_exhausted(&window, cost, retry_after_ms))
        }
        Ok(DebitOutcome::NoAccount) => Err(GatewayError::new(
            ErrorKind::Unauthenticated,
            "the account for this key no longer exists",
        )),
        Ok(DebitOutcome::Suspended) => Err(suspended()),
        Ok(DebitOutcome::UnknownPlan(plan)) => Err(GatewayError::new(
            ErrorKind::PlanUnavailable,
            "this account's plan is not available; contact support",
        )
        .with_internal(format_args!(
            "account {} has unknown plan {plan}",
            owner.account_id
        ))),
    }
}

fn credits_exhausted(window: &WindowState, cost: u64, retry_after_ms: Option<u64>) -> GatewayError {
    let available = window.available();
    let retry_after_secs = retry_after_ms.map(|ms| ms.div_ceil(1000).max(1));
    let detail = match retry_after_secs {
        Some(secs) => format!(
            "this request costs {cost} credits and {available} are available; enough credits return in {secs} s"
        ),
        None => format!(
            "this request costs {cost} credits, more than the plan's whole allowance of {}",
            window.allowance
        ),
    };
    GatewayError::new(ErrorKind::CreditsExhausted, detail).with_extra(Extra::Credits {
        cost,
        available,
        retry_after_secs,
    })
}

/// Gives a failed request's credits back. A failed refund is logged and
/// counted; the client still gets the upstream failure.
async fn refund(gateway: &Gateway, account: &str, record: &mut RequestRecord) {
    if record.cost == 0 {
        return;
    }
    let request_id = record.request_id.to_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    let outcome = match record.debit_at_ms {
        Some(at_ms) => {
            gateway
                .ledger
                .refund_debit(account, &request_id, at_ms)
                .await
        }
        None => gateway.ledger.refund(account, &request_id).await,
    };
    gateway
        .metrics
        .ledger_call("refund", started.elapsed(), outcome.is_ok());
    match outcome {
        Ok(RefundOutcome::Refunded) | Ok(RefundOutcome::AlreadyRefunded) => {
            record.refunded = true;
            if let Some(headers) = &mut record.credit_headers {
                headers.refunded();
            }
        }
        Ok(RefundOutcome::Unknown) => {
            tracing::error!(request_id, "refund found no debit for this request");
        }
        Err(error) => {
            tracing::error!(request_id, "refund failed; the debit stands: {error}");
        }
    }
}

/// The record phase: one log line and the metrics, for every request.
fn record_request(
    gateway: &Gateway,
    record: &RequestRecord,
    response: &Response<Body>,
    started: Instant,
) {
    let status = response.status().as_u16();
    let route = record.route.as_deref().unwrap_or("");
    let outcome = record.error.map(ErrorKind::code).unwrap_or("forwarded");
    let charged = if record.refunded { 0 } else { record.cost };
    gateway.metrics.request(route, outcome, status);
    if record.cost > 0 && !record.settle_later {
        gateway.metrics.credits_debited(route, record.cost);
        if record.refunded {
            gateway.metrics.credits_refunded(route, record.cost);
        }
    }
    if record.unmetered {
        gateway.metrics.unmetered(route);
    }
    if let Some(elapsed) = record.upstream_elapsed {
        gateway.metrics.upstream_latency(route, elapsed);
    }
    tracing::info!(
        target: "creditgate::access",
        request_id = record.request_id.to_str().unwrap_or_default(),
        method = %record.method,
        path = %record.path,
        route,
        account = record.account.as_deref().unwrap_or(""),
        status,
        outcome,
        cost = charged,
        refunded = record.refunded,
        upstream_ms = record.upstream_elapsed.map(|d| d.as_secs_f64() * 1000.0),
        total_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
}
