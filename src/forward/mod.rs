//! Talking to upstream vendors: a connection pool per upstream and plane
//! (`pool.rs`), header hygiene in both directions, timeouts, streaming
//! bodies.
//!
//! Header order matters (pingora #734, heimdall #653): everything a client
//! may not pass on is stripped first — hop-by-hop headers, every header named
//! in `Connection`, the client's own credentials, `Proxy-*`, forwarding
//! headers, and any header the upstream's config injects — and only then are
//! the vendor's headers injected, so no client can remove or replace them.

mod pool;

pub use pool::{PooledBody as UpstreamBody, IDLE_TIMEOUT as POOL_IDLE_TIMEOUT};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::body::Body;
use crate::config::{UpstreamConfig, UpstreamScheme};

/// Request headers that never travel upstream as the client sent them.
const STRIPPED_REQUEST_HEADERS: &[&str] = &[
    // Hop-by-hop (RFC 9110 §7.6.1) and their legacy forms.
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // The gateway answers `Expect: 100-continue` itself.
    "expect",
    // Set by the gateway.
    "host",
    "x-request-id",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    // The client's credentials for the gateway.
    "authorization",
    "x-api-key",
    "cookie",
];

/// Response headers the client must not see from the upstream.
const STRIPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream unreachable: {0}")]
    Unavailable(String),
}

/// A configured upstream with its own connection pool (one per plane: see
/// `pool.rs`).
pub struct Upstream {
    pub name: String,
    pub config: UpstreamConfig,
    host: HeaderValue,
    injected: Vec<(HeaderName, HeaderValue)>,
    pool: Arc<pool::Pool>,
}

/// The client side of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// What the proxy knows about the client side of a request.
pub struct ClientContext<'a> {
    pub peer: SocketAddr,
    pub tls: bool,
    pub request_id: &'a HeaderValue,
}

impl Upstream {
    /// The injected headers arrive typed and marked sensitive from the config.
    pub fn new(name: &str, config: &UpstreamConfig) -> Result<Upstream, String> {
        let host = HeaderValue::from_str(&config.authority)
            .map_err(|e| format!("upstream {name}: bad authority: {e}"))?;
        let injected = config.headers.clone();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Upstream {
            name: name.to_string(),
            config: config.clone(),
            host,
            injected,
            pool: Arc::new(pool::Pool::new(https)),
        })
    }

    /// The upstream URI for a normalised path and the client's raw query.
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let scheme = match self.config.scheme {
            UpstreamScheme::Http => "http",
            UpstreamScheme::Https => "https",
        };
        let mut path_and_query =
            String::with_capacity(self.config.base_path.len() + path.len() + 1);
        path_and_query.push_str(&self.config.base_path);
        path_and_query.push_str(path);
        if let Some(query) = query {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        Uri::builder()
            .scheme(scheme)
            .authority(self.config.authority.as_str())
            .path_and_query(path_and_query)
            .build()
    }

    /// Sends the request and waits for the response head, within the
    /// upstream's timeout. The response body streams afterwards.
    pub async fn send(
        &self,
        method: http::Method,
        uri: Uri,
        client_headers: &HeaderMap,
        body: Body,
        context: &ClientContext<'_>,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        copy_forwardable_headers(client_headers, headers, &self.injected);
        for (name, value) in &self.injected {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(header::HOST, self.host.clone());
        if let Ok(ip) = HeaderValue::from_str(&context.peer.ip().to_string()) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), ip);
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(if context.tls { "https" } else { "http" }),
        );
        headers.insert(
            HeaderName::from_static("x-request-id"),
            context.request_id.clone(),
        );
        let timeout = self.config.timeout;
        match tokio::time::timeout(timeout, self.pool.send(request)).await {
            Err(_) => Err(ForwardError::Timeout(timeout)),
            Ok(Err(error)) => Err(ForwardError::Unavailable(describe(&error))),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// Copies the client's headers that may travel upstream.
pub fn copy_forwardable_headers(
    src: &HeaderMap,
    dst: &mut HeaderMap,
    injected: &[(HeaderName, HeaderValue)],
) {
    let named_in_connection = connection_tokens(src);
    for (name, value) in src {
        let lower = name.as_str();
        if STRIPPED_REQUEST_HEADERS.contains(&lower)
            || lower.starts_with("proxy-")
            || named_in_connection.iter().any(|token| token == lower)
            || injected.iter().any(|(injected, _)| injected == name)
        {
            continue;
        }
        dst.append(name.clone(), value.clone());
    }
}

/// Removes hop-by-hop headers (and those named in `Connection`) from an
/// upstream response before it goes to the client.
pub fn clean_response_headers(headers: &mut HeaderMap) {
    for token in connection_tokens(headers) {
        headers.remove(token.as_str());
    }
    for name in STRIPPED_RESPONSE_HEADERS {
        headers.remove(*name);
    }
}

/// Lower-cased header names listed in every `Connection` header.
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// The error chain as one line, for logs (never for clients).
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn credentials_hop_by_hop_and_connection_named_headers_are_stripped() {
        let src = map(&[
            ("authorization", "Bearer client-key"),
            ("x-api-key", "client-key"),
            ("connection", "keep-alive, X-Vendor-Tenant"),
            ("x-vendor-tenant", "evil"),
            ("proxy-authorization", "Basic x"),
            ("x-forwarded-for", "1.2.3.4"),
            ("te", "trailers"),
            ("host", "attacker.example"),
            ("content-type", "application/json"),
            ("accept", "*/*"),
            ("x-custom", "kept"),
        ]);
        let injected = vec![(
            HeaderName::from_static("x-custom"),
            HeaderValue::from_static("vendor"),
        )];
        let mut dst = HeaderMap::new();
        copy_forwardable_headers(&src, &mut dst, &injected);
        let names: Vec<&str> = dst.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, vec!["content-type", "accept"]);
    }

    #[test]
    fn response_hop_by_hop_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "close, x-internal"),
            ("x-internal", "secret"),
            ("keep-alive", "timeout=5"),
            ("content-type", "text/plain"),
        ]);
        clean_response_headers(&mut headers);
        let names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, vec!["content-type"]);
    }
}
