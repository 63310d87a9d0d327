//! The operator console at `GET /admin/` (docs/operations.md, "The operator
//! console"): one page, its script and its styles, embedded in the binary so
//! it works offline and loads nothing from elsewhere.
//!
//! The page needs no token: it asks for the admin token (or takes it from the
//! URL fragment, which never reaches a server or a log), keeps it in
//! `sessionStorage` and sends it as a bearer header on every admin API call.
//! Served with a strict Content-Security-Policy: scripts and styles only from
//! these files, requests only to this origin, no framing.

use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::body::{self, Body};

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLES: &str = include_str!("console/console.css");

/// Scripts and styles from this origin only (no inline code), API calls to
/// this origin only, images inline (`data:`) at most, no plugins, no framing,
/// forms nowhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The console's response for `path`, or `None` when the path is not the
/// console's. `/admin` redirects to `/admin/`. Each takes GET and HEAD;
/// another method is a 405.
pub fn serve(method: &Method, path: &str) -> Option<Response<Body>> {
    let (content, content_type) = match path {
        "/admin" => ("", ""),
        "/admin/" | "/admin/index.html" => (PAGE, "text/html; charset=utf-8"),
        "/admin/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/admin/console.css" => (STYLES, "text/css; charset=utf-8"),
        _ => return None,
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(response);
    }
    if path == "/admin" {
        return Some(redirect("/admin/"));
    }
    let mut response = Response::new(if method == Method::HEAD {
        body::empty()
    } else {
        body::full(content)
    });
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(headers);
    Some(response)
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    secure(response.headers_mut());
    response
}

fn secure(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Small files, and a new binary may bring new ones: always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        assert!(PAGE.contains(r#"src="/admin/console.js""#));
        assert!(PAGE.contains(r#"href="/admin/console.css""#));
        for file in [PAGE, SCRIPT, STYLES] {
            // The SVG namespace is a name, not a load.
            let file = file.replace("'http://www.w3.org/2000/svg'", "");
            for outside in ["http://", "https://", "//cdn", "@import", "url(", "fonts."] {
                assert!(!file.contains(outside), "the console refers to {outside}");
            }
        }
        // No inline script or style: the policy would block it.
        assert!(!PAGE.contains("<script>"));
        assert!(!PAGE.contains("<style"));
        assert!(!PAGE.contains(" style="));
        assert!(!PAGE.contains(" onclick="));
    }

    #[test]
    fn every_console_file_is_served_with_the_policy() {
        for path in ["/admin/", "/admin/console.js", "/admin/console.css"] {
            let response = serve(&Method::GET, path).unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        }
        assert_eq!(
            serve(&Method::GET, "/admin").unwrap().status(),
            StatusCode::PERMANENT_REDIRECT
        );
        for path in ["/admin/", "/admin"] {
            assert_eq!(
                serve(&Method::POST, path).unwrap().status(),
                StatusCode::METHOD_NOT_ALLOWED
            );
        }
        assert!(serve(&Method::GET, "/admin/v1/accounts").is_none());
    }
}
