//! The CLI's side of the admin API: where it is, the token, and one call.
//!
//! The address and token come from `--admin-url`/`--token` (or
//! `CREDITGATE_ADMIN_URL`/`CREDITGATE_ADMIN_TOKEN`), else from the config
//! file (`admin.listen`, `admin.token`). Every path segment and query value
//! is percent-encoded here, so no argument can reach another resource.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};

use super::config_file;
use super::exit::{Exit, Failure};

/// How long one call may take before the CLI gives up (exit 5).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A reachable admin API: base URL (no trailing slash) and where it came from.
pub struct AdminApi {
    pub base: String,
    pub source: String,
    pub token: Option<String>,
}

/// One request: `segments` are joined under the base URL, each encoded.
pub struct Call {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<serde_json::Value>,
}

impl Call {
    pub fn new(method: Method, segments: &[&str]) -> Call {
        Call {
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
        }
    }

    /// The path and query, encoded.
    pub fn target(&self) -> String {
        let mut target = String::new();
        for segment in &self.segments {
            target.push('/');
            target.push_str(&encode(segment));
        }
        for (i, (name, value)) in self.query.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(name);
            target.push('=');
            target.push_str(&encode(value));
        }
        target
    }
}

/// The answer: status and body bytes.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl AdminApi {
    /// Resolves the admin API. With both a URL and a token (or when
    /// `need_token` is false and a URL is given) no config file is read.
    pub fn resolve(
        url: Option<String>,
        token: Option<String>,
        config_flag: Option<&Path>,
        need_token: bool,
    ) -> Result<AdminApi, Failure> {
        if let Some(url) = &url {
            if token.is_some() || !need_token {
                return Ok(AdminApi {
                    base: check_url(url)?,
                    source: "--admin-url / CREDITGATE_ADMIN_URL".to_owned(),
                    token,
                });
            }
        }
        let (config, located) = config_file::load(config_flag).map_err(|mut failure| {
            failure.message.push_str(
                "\n(or pass --admin-url and --token, or set CREDITGATE_ADMIN_URL and \
                 CREDITGATE_ADMIN_TOKEN, to do without the config file)",
            );
            failure
        })?;
        let file = located.path.display().to_string();
        let (base, source) = match url {
            Some(url) => (
                check_url(&url)?,
                "--admin-url / CREDITGATE_ADMIN_URL".to_owned(),
            ),
            None => (
                format!("http://{}", reachable(config.admin.listen)),
                format!("admin.listen in {file}"),
            ),
        };
        let token = token.or(config.admin.token);
        if need_token && token.is_none() {
            return Err(Failure::new(
                Exit::Usage,
                format!(
                    "no admin token: pass --token, set CREDITGATE_ADMIN_TOKEN, or set \
                     admin.token in {file}"
                ),
            ));
        }
        Ok(AdminApi {
            base,
            source,
            token,
        })
    }

    pub fn url(&self, call: &Call) -> String {
        format!("{}{}", self.base, call.target())
    }

    /// Sends `call` and waits up to `timeout` for the whole answer.
    pub fn send(&self, call: &Call, timeout: Duration) -> Result<Answer, Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::new(Exit::Failed, format!("cannot start a runtime: {e}")))?;
        runtime.block_on(self.send_async(call, timeout))
    }

    async fn send_async(&self, call: &Call, timeout: Duration) -> Result<Answer, Failure> {
        let url = self.url(call);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let body = call
            .body
            .as_ref()
            .map(|value| value.to_string())
            .unwrap_or_default();
        let mut request = http::Request::builder()
            .method(call.method.clone())
            .uri(&url)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| {
            Failure::new(
                Exit::Usage,
                format!("cannot build a request for {url}: {e}"),
            )
        })?;
        let unreachable = |detail: String| {
            Failure::new(
                Exit::Unreachable,
                format!(
                    "cannot reach the admin API at {} (from {}): {detail}\n\
                     Is `creditgate serve` running there?",
                    self.base, self.source
                ),
            )
        };
        let exchange = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("the answer broke off: {}", error_chain(&e))))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| {
            unreachable(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))
        })?
    }
}

/// `0.0.0.0`/`::` mean "every interface" to a listener; a client dials loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// `http://host:port[/prefix]`, returned without a trailing slash.
fn check_url(url: &str) -> Result<String, Failure> {
    let bad = |why: &str| {
        Failure::new(
            Exit::Usage,
            format!("admin URL {url:?} {why}; expected http://HOST:PORT (the admin listener serves plain HTTP)"),
        )
    };
    let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("does not start with http://"));
    }
    if uri.authority().is_none() {
        return Err(bad("has no host"));
    }
    if uri.query().is_some() {
        return Err(bad("has a query"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Percent-encodes everything but RFC 3986's unreserved characters. A whole
/// segment of `.` or `..` is encoded too (`%2E`), though the callers refuse
/// such ids before they get here.
pub fn encode(text: &str) -> String {
    if text == "." || text == ".." {
        return "%2E".repeat(text.len());
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An error and its causes on one line (hyper's top-level messages are terse).
fn error_chain(error: &dyn std::error::Error) -> String {
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

    #[test]
    fn segments_and_query_values_are_percent_encoded() {
        let mut call = Call::new(Method::GET, &["admin", "v1", "accounts", "a#b?c d/e%"]);
        call.query.push(("before", "x&y=z".to_owned()));
        call.query.push(("limit", "5".to_owned()));
        assert_eq!(
            call.target(),
            "/admin/v1/accounts/a%23b%3Fc%20d%2Fe%25?before=x%26y%3Dz&limit=5"
        );
        assert_eq!(encode("site-42.a_b~"), "site-42.a_b~");
        assert_eq!(encode(".."), "%2E%2E");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn admin_urls_are_plain_http_with_a_host() {
        assert_eq!(
            check_url("http://127.0.0.1:9090/").unwrap(),
            "http://127.0.0.1:9090"
        );
        assert_eq!(
            check_url("http://admin.internal/creditgate").unwrap(),
            "http://admin.internal/creditgate"
        );
        for bad in ["127.0.0.1:9090", "https://x", "http://x/?a=1", "not a url"] {
            assert_eq!(check_url(bad).unwrap_err().exit, Exit::Usage, "{bad}");
        }
    }

    #[test]
    fn a_wildcard_listen_address_is_dialled_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9090".parse().unwrap()).to_string(),
            "127.0.0.1:9090"
        );
        assert_eq!(
            reachable("[::]:9090".parse().unwrap()).to_string(),
            "[::1]:9090"
        );
        assert_eq!(
            reachable("10.0.0.5:9090".parse().unwrap()).to_string(),
            "10.0.0.5:9090"
        );
    }
}
