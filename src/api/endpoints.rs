//! Every operation the usage API and the admin listener serve, as tables of
//! (method, path template, operation) that the dispatch itself reads: a
//! route exists only by being in a table. `docs/openapi.json` describes
//! exactly these operations, and a test holds the two together (every
//! table entry documented, every documented operation in a table), so an
//! endpoint cannot be added without being described.
//!
//! A template is a path whose `{name}` segments match any one segment
//! (empty included: the handler judges the value, e.g. an account id).

use http::Method;

/// `docs/openapi.json`, served at `GET /admin/openapi.json` without a
/// token (like the console: it describes the API and holds nothing about
/// this deployment).
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

/// One operation: `method` on `path` (a template) is served by `op`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint<Op: 'static> {
    pub method: Method,
    pub path: &'static str,
    pub op: Op,
}

const fn at<Op>(method: Method, path: &'static str, op: Op) -> Endpoint<Op> {
    Endpoint { method, path, op }
}

/// What the usage API (data listener, `/v1/credits*`) serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOp {
    Balance,
    History,
    Report,
    Prices,
}

pub const USAGE: &[Endpoint<UsageOp>] = &[
    at(Method::GET, "/v1/credits", UsageOp::Balance),
    at(Method::GET, "/v1/credits/history", UsageOp::History),
    at(Method::GET, "/v1/credits/usage", UsageOp::Report),
    at(Method::GET, "/v1/credits/prices", UsageOp::Prices),
];

/// What the admin listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    Health,
    Ready,
    Metrics,
    OpenApi,
    /// The console's page, script and styles, and the `/admin` redirect.
    Console,
    Reload,
    ListAccounts,
    /// The threshold alerts' queue (docs/alerts.md).
    Alerts,
    Prices,
    Reindex,
    GetAccount,
    PutAccount,
    AddKey,
    RevokeKey,
    History,
    Usage,
    Refund,
    Recount,
    CreateGrant,
    ListGrants,
    VoidGrant,
}

pub const ADMIN: &[Endpoint<AdminOp>] = &[
    at(Method::GET, "/healthz", AdminOp::Health),
    at(Method::GET, "/readyz", AdminOp::Ready),
    at(Method::GET, "/metrics", AdminOp::Metrics),
    at(Method::GET, "/admin/openapi.json", AdminOp::OpenApi),
    at(Method::GET, "/admin", AdminOp::Console),
    at(Method::HEAD, "/admin", AdminOp::Console),
    at(Method::GET, "/admin/", AdminOp::Console),
    at(Method::HEAD, "/admin/", AdminOp::Console),
    at(Method::GET, "/admin/index.html", AdminOp::Console),
    at(Method::HEAD, "/admin/index.html", AdminOp::Console),
    at(Method::GET, "/admin/console.js", AdminOp::Console),
    at(Method::HEAD, "/admin/console.js", AdminOp::Console),
    at(Method::GET, "/admin/console.css", AdminOp::Console),
    at(Method::HEAD, "/admin/console.css", AdminOp::Console),
    at(Method::POST, "/admin/v1/reload", AdminOp::Reload),
    at(Method::GET, "/admin/v1/accounts", AdminOp::ListAccounts),
    at(Method::GET, "/admin/v1/alerts", AdminOp::Alerts),
    at(Method::GET, "/admin/v1/prices", AdminOp::Prices),
    at(Method::POST, "/admin/v1/reindex", AdminOp::Reindex),
    at(Method::GET, "/admin/v1/accounts/{id}", AdminOp::GetAccount),
    at(Method::PUT, "/admin/v1/accounts/{id}", AdminOp::PutAccount),
    at(
        Method::POST,
        "/admin/v1/accounts/{id}/keys",
        AdminOp::AddKey,
    ),
    at(
        Method::DELETE,
        "/admin/v1/accounts/{id}/keys/{key_id}",
        AdminOp::RevokeKey,
    ),
    at(
        Method::GET,
        "/admin/v1/accounts/{id}/history",
        AdminOp::History,
    ),
    at(Method::GET, "/admin/v1/accounts/{id}/usage", AdminOp::Usage),
    at(
        Method::POST,
        "/admin/v1/accounts/{id}/refunds",
        AdminOp::Refund,
    ),
    at(
        Method::POST,
        "/admin/v1/accounts/{id}/recount",
        AdminOp::Recount,
    ),
    at(
        Method::POST,
        "/admin/v1/accounts/{id}/grants",
        AdminOp::CreateGrant,
    ),
    at(
        Method::GET,
        "/admin/v1/accounts/{id}/grants",
        AdminOp::ListGrants,
    ),
    at(
        Method::DELETE,
        "/admin/v1/accounts/{id}/grants/{grant_id}",
        AdminOp::VoidGrant,
    ),
];

/// The template's `{…}` values in `path`, in order, or `None` when the
/// path does not fit the template.
pub fn match_template<'p>(template: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut params = Vec::new();
    let mut segments = path.split('/');
    for expected in template.split('/') {
        let segment = segments.next()?;
        if expected.starts_with('{') && expected.ends_with('}') {
            params.push(segment);
        } else if expected != segment {
            return None;
        }
    }
    segments.next().is_none().then_some(params)
}

/// How a request finds (or misses) its endpoint in a table.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'p, Op> {
    Found(Op, Vec<&'p str>),
    /// The path is served, with other methods (in table order).
    MethodNotAllowed(Vec<&'static str>),
    NotFound,
}

pub fn lookup<'p, Op: Copy>(
    table: &'static [Endpoint<Op>],
    method: &Method,
    path: &'p str,
) -> Lookup<'p, Op> {
    let mut allow = Vec::new();
    for endpoint in table {
        if let Some(params) = match_template(endpoint.path, path) {
            if endpoint.method == *method {
                return Lookup::Found(endpoint.op, params);
            }
            allow.push(endpoint.method.as_str());
        }
    }
    if allow.is_empty() {
        Lookup::NotFound
    } else {
        Lookup::MethodNotAllowed(allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments() {
        let keys = "/admin/v1/accounts/{id}/keys/{key_id}";
        assert_eq!(
            match_template(keys, "/admin/v1/accounts/site-42/keys/key_1"),
            Some(vec!["site-42", "key_1"])
        );
        assert_eq!(
            match_template("/admin/v1/accounts/{id}", "/admin/v1/accounts/"),
            Some(vec![""]),
            "an empty segment is a value the handler refuses"
        );
        for miss in [
            "/admin/v1/accounts/site-42/keys",
            "/admin/v1/accounts/site-42/keys/k/extra",
            "/admin/v1/accounts/site-42/keyz/k",
            "/admin/v1/accounts/a/b/keys/k",
        ] {
            assert_eq!(match_template(keys, miss), None, "{miss}");
        }
        assert_eq!(match_template("/admin/", "/admin"), None);
        assert_eq!(match_template("/admin", "/admin/"), None);
    }

    #[test]
    fn lookups_find_the_operation_or_say_which_methods_the_path_takes() {
        assert_eq!(
            lookup(ADMIN, &Method::PUT, "/admin/v1/accounts/a"),
            Lookup::Found(AdminOp::PutAccount, vec!["a"])
        );
        assert_eq!(
            lookup(ADMIN, &Method::POST, "/admin/v1/accounts/a"),
            Lookup::MethodNotAllowed(vec!["GET", "PUT"])
        );
        assert_eq!(
            lookup(ADMIN, &Method::GET, "/admin/v1/nothing"),
            Lookup::NotFound
        );
        assert_eq!(
            lookup(USAGE, &Method::POST, "/v1/credits"),
            Lookup::MethodNotAllowed(vec!["GET"])
        );
    }

    #[test]
    fn no_two_entries_serve_the_same_request() {
        for table in [
            ADMIN
                .iter()
                .map(|e| (&e.method, e.path))
                .collect::<Vec<_>>(),
            USAGE.iter().map(|e| (&e.method, e.path)).collect(),
        ] {
            for (j, (method, path)) in table.iter().enumerate() {
                // The request a later entry is for must not be taken by an
                // earlier one.
                let probe = path.replace("{id}", "x").replace("{key_id}", "k");
                for (earlier_method, earlier) in &table[..j] {
                    assert!(
                        method != earlier_method || match_template(earlier, &probe).is_none(),
                        "{method} {path} is shadowed by {earlier}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_embedded_document_describes_exactly_these_tables() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("JSON");
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                if [
                    "get", "put", "post", "delete", "options", "head", "patch", "trace",
                ]
                .contains(&method.as_str())
                {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let served: std::collections::BTreeSet<(String, String)> = ADMIN
            .iter()
            .map(|e| (e.method.to_string(), e.path.to_owned()))
            .chain(
                USAGE
                    .iter()
                    .map(|e| (e.method.to_string(), e.path.to_owned())),
            )
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let not_served: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && not_served.is_empty(),
            "served but not in docs/openapi.json: {undocumented:?}; \
             in docs/openapi.json but not served: {not_served:?}"
        );
    }
}
