//! One error type for every way a request can fail, and its problem+json form.
//!
//! [`ErrorKind`] fixes the status, the problem `code` (docs/http-api.md) and the static
//! metric label. What the client reads (`detail`) is kept apart from what only
//! the log sees (`internal`): vendor errors, Redis messages and key material
//! never reach a response.

use std::borrow::Cow;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use crate::ledger::LedgerError;
use crate::ratelimit::CreditHeaders;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Unauthenticated,
    AccountSuspended,
    PlanUnavailable,
    RouteNotFound,
    MethodNotAllowed,
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    CreditsExhausted,
    LedgerUnavailable,
    /// The account's stored totals are damaged; an operator must recount it.
    LedgerInconsistent,
    InvalidUnits,
    UpstreamUnavailable,
    UpstreamTimeout,
    ShuttingDown,
    // Admin plane.
    AdminDisabled,
    AdminUnauthorized,
    NotFound,
    UnknownPlan,
    InvalidConfig,
    Internal,
}

impl ErrorKind {
    /// Every kind, in declaration order (`Internal` stays last: the metrics
    /// index outcomes by position, and a test checks this list is whole).
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::Unauthenticated,
        ErrorKind::AccountSuspended,
        ErrorKind::PlanUnavailable,
        ErrorKind::RouteNotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::BadRequest,
        ErrorKind::PayloadTooLarge,
        ErrorKind::RequestTimeout,
        ErrorKind::CreditsExhausted,
        ErrorKind::LedgerUnavailable,
        ErrorKind::LedgerInconsistent,
        ErrorKind::InvalidUnits,
        ErrorKind::UpstreamUnavailable,
        ErrorKind::UpstreamTimeout,
        ErrorKind::ShuttingDown,
        ErrorKind::AdminDisabled,
        ErrorKind::AdminUnauthorized,
        ErrorKind::NotFound,
        ErrorKind::UnknownPlan,
        ErrorKind::InvalidConfig,
        ErrorKind::Internal,
    ];

    /// Position in [`ErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn status(self) -> StatusCode {
        use ErrorKind::*;
        match self {
            Unauthenticated | AdminUnauthorized => StatusCode::UNAUTHORIZED,
            AccountSuspended | PlanUnavailable | AdminDisabled => StatusCode::FORBIDDEN,
            RouteNotFound | NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            BadRequest | InvalidUnits | InvalidConfig => StatusCode::BAD_REQUEST,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            CreditsExhausted => StatusCode::TOO_MANY_REQUESTS,
            LedgerUnavailable | ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            UnknownPlan => StatusCode::UNPROCESSABLE_ENTITY,
            LedgerInconsistent | Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `code` member of the problem body; also the metric label.
    pub fn code(self) -> &'static str {
        use ErrorKind::*;
        match self {
            Unauthenticated => "unauthenticated",
            AccountSuspended => "account_suspended",
            PlanUnavailable => "plan_unavailable",
            RouteNotFound => "route_not_found",
            MethodNotAllowed => "method_not_allowed",
            BadRequest => "bad_request",
            PayloadTooLarge => "payload_too_large",
            RequestTimeout => "request_timeout",
            CreditsExhausted => "credits_exhausted",
            LedgerUnavailable => "ledger_unavailable",
            LedgerInconsistent => "ledger_inconsistent",
            InvalidUnits => "invalid_units",
            UpstreamUnavailable => "upstream_unavailable",
            UpstreamTimeout => "upstream_timeout",
            ShuttingDown => "shutting_down",
            AdminDisabled => "admin_disabled",
            AdminUnauthorized => "unauthorized",
            NotFound => "not_found",
            UnknownPlan => "unknown_plan",
            InvalidConfig => "invalid_config",
            Internal => "internal",
        }
    }

    pub fn title(self) -> &'static str {
        use ErrorKind::*;
        match self {
            Unauthenticated => "Missing or unknown API key",
            AccountSuspended => "Account suspended",
            PlanUnavailable => "Account plan unavailable",
            RouteNotFound => "No route matches",
            MethodNotAllowed => "Method not allowed",
            BadRequest => "Bad request",
            PayloadTooLarge => "Request body too large",
            RequestTimeout => "Request body too slow",
            CreditsExhausted => "Not enough credits",
            LedgerUnavailable => "Credit ledger unavailable",
            LedgerInconsistent => "Credit balance needs repair",
            InvalidUnits => "Invalid pricing input",
            UpstreamUnavailable => "Upstream unavailable",
            UpstreamTimeout => "Upstream timed out",
            ShuttingDown => "Gateway shutting down",
            AdminDisabled => "Admin API disabled",
            AdminUnauthorized => "Missing or wrong admin token",
            NotFound => "Not found",
            UnknownPlan => "Unknown plan",
            InvalidConfig => "Invalid configuration",
            Internal => "Internal error",
        }
    }
}

/// Extra members and headers some problems carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extra {
    None,
    Credits {
        cost: u64,
        available: u64,
        retry_after_secs: Option<u64>,
        /// The extra window that refused, as the config writes it (`"1d"`).
        limit: Option<String>,
    },
    Allow(String),
    RetryAfter(u64),
    Errors(Vec<String>),
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {detail}", kind.code())]
pub struct GatewayError {
    pub kind: ErrorKind,
    /// Shown to the client.
    pub detail: Cow<'static, str>,
    /// Logged, never shown.
    pub internal: Option<String>,
    pub extra: Extra,
    /// The credit headers of a request on a priced route (docs/http-api.md).
    /// Boxed: most errors have none, and every `Result` carries the size.
    pub credit_headers: Option<Box<CreditHeaders>>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        GatewayError {
            kind,
            detail: detail.into(),
            internal: None,
            extra: Extra::None,
            credit_headers: None,
        }
    }

    pub fn with_internal(mut self, internal: impl std::fmt::Display) -> Self {
        self.internal = Some(internal.to_string());
        self
    }

    pub fn with_extra(mut self, extra: Extra) -> Self {
        self.extra = extra;
        self
    }

    pub fn with_credit_headers(mut self, headers: &CreditHeaders) -> Self {
        self.credit_headers = Some(Box::new(headers.clone()));
        self
    }

    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadRequest, detail)
    }

    pub fn ledger_unavailable(internal: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorKind::LedgerUnavailable,
            "the credit ledger cannot be reached; retry shortly",
        )
        .with_internal(internal)
        .with_extra(Extra::RetryAfter(1))
    }

    /// A ledger failure as the client sees it: an outage is a 503
    /// `ledger_unavailable`; an account whose stored totals are damaged is a
    /// 500 `ledger_inconsistent` until an operator recounts it
    /// (docs/ledger.md, "Bounds and repair"). Nothing is charged either way.
    pub fn from_ledger(error: LedgerError) -> Self {
        match error {
            LedgerError::Inconsistent(_) => Self::new(
                ErrorKind::LedgerInconsistent,
                "this account's credit balance is inconsistent and needs repair by the operator; nothing was charged",
            )
            .with_internal(error),
            LedgerError::OutOfRange(_) => Self::new(
                ErrorKind::Internal,
                "the credit ledger refused an amount outside its range; nothing was charged",
            )
            .with_internal(error),
            LedgerError::Timeout
            | LedgerError::Unavailable(_)
            | LedgerError::Protocol(_)
            | LedgerError::Unconfirmed { .. } => Self::ledger_unavailable(error),
        }
    }

    /// The RFC 9457 problem response.
    pub fn to_response(&self) -> Response<Body> {
        let status = self.kind.status();
        let mut problem = serde_json::json!({
            "type": format!("urn:creditgate:problem:{}", self.kind.code()),
            "title": self.kind.title(),
            "status": status.as_u16(),
            "detail": self.detail,
            "code": self.kind.code(),
        });
        let mut response = Response::builder().status(status);
        match &self.extra {
            Extra::None => {}
            Extra::Credits {
                cost,
                available,
                retry_after_secs,
                limit,
            } => {
                problem["cost"] = (*cost).into();
                problem["available"] = (*available).into();
                if let Some(limit) = limit {
                    problem["limit"] = limit.as_str().into();
                }
                if let Some(secs) = retry_after_secs {
                    problem["retry_after"] = (*secs).into();
                    response = response.header(header::RETRY_AFTER, *secs);
                }
            }
            Extra::Allow(methods) => {
                response = response.header(header::ALLOW, methods.as_str());
            }
            Extra::RetryAfter(secs) => {
                problem["retry_after"] = (*secs).into();
                response = response.header(header::RETRY_AFTER, *secs);
            }
            Extra::Errors(errors) => {
                problem["errors"] = errors.clone().into();
            }
        }
        let bytes = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = response
            .body(body::full(bytes))
            .unwrap_or_else(|_| Response::new(body::empty()));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(credits) = &self.credit_headers {
            credits.apply(response.headers_mut());
        }
        response
    }
}

impl From<LedgerError> for GatewayError {
    fn from(error: LedgerError) -> Self {
        GatewayError::from_ledger(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn all_lists_every_kind_in_order() {
        assert_eq!(ErrorKind::ALL.len(), ErrorKind::Internal as usize + 1);
        for (index, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), index, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn credits_problem_carries_cost_available_and_retry_after() {
        let error = GatewayError::new(ErrorKind::CreditsExhausted, "need 10, have 3").with_extra(
            Extra::Credits {
                cost: 10,
                available: 3,
                retry_after_secs: Some(42),
                limit: None,
            },
        );
        let response = error.to_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "42");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["code"], "credits_exhausted");
        assert_eq!(json["status"], 429);
        assert_eq!(json["cost"], 10);
        assert_eq!(json["available"], 3);
        assert_eq!(json["retry_after"], 42);
        assert!(json["type"].is_string() && json["title"].is_string());
    }

    #[tokio::test]
    async fn internal_detail_is_not_in_the_body() {
        let error = GatewayError::ledger_unavailable("redis: connection refused 10.1.2.3");
        let response = error.to_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        // The body is the whole problem document, so its absence means
        // something (a Debug of a boxed body never shows its bytes).
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["code"], "ledger_unavailable", "{text}");
        for shown in std::iter::once(text.as_ref()).chain(
            parts
                .headers
                .values()
                .map(|value| value.to_str().unwrap_or_default()),
        ) {
            assert!(
                !shown.contains("10.1.2.3") && !shown.contains("refused"),
                "internal detail shown to the client: {shown}"
            );
        }
    }

    #[tokio::test]
    async fn a_damaged_account_is_a_500_that_says_so_without_internals() {
        let error = GatewayError::from_ledger(LedgerError::Inconsistent(
            "account `a`: the stored `used` is not a valid total".into(),
        ));
        assert!(error.internal.as_deref().unwrap().contains("stored `used`"));
        let response = error.to_response();
        assert_eq!(response.status(), 500);
        assert!(response.headers().get("retry-after").is_none());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["code"], "ledger_inconsistent");
        assert!(!json["detail"].as_str().unwrap().contains("used"));
        assert_eq!(
            GatewayError::from_ledger(LedgerError::Timeout).kind,
            ErrorKind::LedgerUnavailable
        );
    }
}
