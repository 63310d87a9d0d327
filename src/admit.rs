//! The admission phase: the request body is checked against the size limit
//! and priced before anything is debited or forwarded, so a 413 or a 400
//! never costs anything.
//!
//! A body of known length (hyper enforces `Content-Length`) streams on; one
//! of unknown length (chunked) is buffered up to the limit so an oversized
//! body is refused before it is forwarded; a per-unit route reads the body
//! whole to find its units. Either way the whole body must arrive within
//! `server.body_read_timeout` ([`DeadlineBody`]).

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};

use crate::body::{self, Body};
use crate::config::RouteConfig;
use crate::deadline::{BodyTimedOut, DeadlineBody};
use crate::error::{ErrorKind, GatewayError};
use crate::pricing;

/// The body to forward and the request's admission cost.
pub async fn admit(
    body: DeadlineBody,
    route: &RouteConfig,
    max_bytes: u64,
) -> Result<(Body, u64), GatewayError> {
    let hint = body.size_hint();
    if hint.lower() > max_bytes {
        return Err(payload_too_large(max_bytes));
    }
    match &route.units {
        None if hint.exact().is_some() => Ok((body::stream(body), route.cost)),
        None => Ok((body::full(read_whole(body, max_bytes).await?), route.cost)),
        Some(units) => {
            let bytes = read_whole(body, max_bytes).await?;
            let cost = pricing::admission_cost(route.cost, units, &bytes)
                .map_err(|detail| GatewayError::new(ErrorKind::InvalidUnits, detail))?;
            Ok((body::full(bytes), cost))
        }
    }
}

async fn read_whole(body: DeadlineBody, max_bytes: u64) -> Result<Bytes, GatewayError> {
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
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

pub fn body_timed_out() -> GatewayError {
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
