//! One request's life on the data plane, as ordered phases:
//!
//! ```text
//! target → normalise path → (usage API) → authenticate → match route
//!        → admit body and price → exchange: debit → forward → response head
//!                                  → failure rules → settle
//!        → respond → record (when the response body is done)
//! ```
//!
//! Each phase passes the request on or ends it with a [`GatewayError`];
//! [`handle`] turns every error into a problem response, so hyper never sees
//! an error. The money of a request belongs to its [`crate::charge::Charge`]
//! and the exchange that holds it ([`crate::exchange`]), which a client that
//! leaves cannot cancel; what is logged and counted belongs to its
//! [`Record`], written once when the last of its owners is done.

use std::sync::Arc;

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::admit;
use crate::auth;
use crate::body::Body;
use crate::charge::debit::suspended;
use crate::deadline::DeadlineBody;
use crate::error::{ErrorKind, Extra, GatewayError};
use crate::exchange::Exchange;
pub use crate::forward::ConnInfo;
use crate::path;
use crate::record::{Answer, ClientBody, Record};
use crate::request_id;
use crate::routes::RouteMatch;
use crate::state::{Gateway, Snapshot};

/// The hyper service body: never fails.
pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    conn: ConnInfo,
) -> Response<Body> {
    let snapshot = gateway.snapshot();
    let record = Record::start(
        snapshot.clone(),
        request.method().clone(),
        request.uri().clone(),
        request_id::from_headers(request.headers()),
    );
    let response = match serve(&gateway, &snapshot, request, conn, &record).await {
        Ok(response) => response,
        Err(error) => problem(&record, error),
    };
    ClientBody::respond(record, response)
}

fn problem(record: &Record, error: GatewayError) -> Response<Body> {
    record.set_problem(error.kind);
    if let Some(internal) = &error.internal {
        let request_id = record.request_id();
        let request_id = request_id.to_str().unwrap_or_default();
        tracing::warn!(request_id, code = error.kind.code(), "{internal}");
    }
    error.to_response()
}

async fn serve(
    gateway: &Arc<Gateway>,
    snapshot: &Arc<Snapshot>,
    request: Request<Incoming>,
    conn: ConnInfo,
    record: &Arc<Record>,
) -> Result<Response<Body>, GatewayError> {
    let request_id_generated = !request_id::client_id_is_kept(request.headers());
    let (mut parts, body) = request.into_parts();

    // Phase: target. Only origin-form targets are routed; an HTTP/1 absolute
    // form would let the client name the host.
    if parts.method == Method::CONNECT
        || (parts.version < Version::HTTP_2 && parts.uri.authority().is_some())
    {
        return Err(GatewayError::bad_request(
            "only origin-form request targets (\"/path?query\") are accepted",
        ));
    }

    // Phase: normalise path.
    let path = path::normalize(parts.uri.path())
        .map_err(|e| GatewayError::bad_request(format!("unsafe request path: {e}")))?;
    debug_assert!(path::is_safe_normalized(&path));

    // The usage API answers from the ledger, on the same key.
    if crate::api::usage::is_usage_path(&path) {
        record.answered_by(Answer::UsageApi);
        return crate::api::usage::handle(gateway, snapshot, &parts, &path, record).await;
    }

    // Phase: authenticate.
    let owner = auth::authenticate(&gateway.keys, &gateway.ledger, &parts.headers).await?;
    record.set_owner(&owner);

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
    record.set_route(route_index);
    if owner.account.suspended {
        return Err(suspended());
    }

    // Phase: admit body and price — before any debit, so a 413 or a 400
    // never costs anything.
    let server = &snapshot.config.server;
    let body = DeadlineBody::new(body, server.body_read_timeout);
    let body_watch = body.watch();
    let (body, cost) = admit::admit(body, route, server.max_body_bytes).await?;

    // Phase: exchange (debit → forward → response head → failure rules →
    // settle), on the normalised path: what is charged is what is forwarded.
    let upstream = &snapshot.route_upstreams[route_index];
    parts.uri = upstream.uri_for(&path, parts.uri.query()).map_err(|e| {
        GatewayError::bad_request("request target cannot be forwarded").with_internal(e)
    })?;
    Exchange {
        gateway: gateway.clone(),
        snapshot: snapshot.clone(),
        route_index,
        owner,
        cost,
        request_id_generated,
        request: Request::from_parts(parts, body),
        body_watch,
        conn,
        record: record.clone(),
    }
    .run()
    .await
}
