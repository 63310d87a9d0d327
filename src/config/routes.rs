//! The walk of `[[routes]]`: path patterns, methods, per-unit prices
//! (`units`) and settlement (`settle`) — docs/configuration.md, "Routes".

use std::collections::BTreeMap;

use super::reader::Section;
use super::sections::is_name;
use super::validate;
use super::{
    ConfigIssue, PathPattern, RouteConfig, SettleConfig, SettleSource, UnitsConfig, UpstreamConfig,
};

/// The routes that could be read, and how many `[[routes]]` the file declares.
pub(super) fn read_routes(
    root: &mut Section<'_>,
    upstreams: &BTreeMap<String, UpstreamConfig>,
) -> (Vec<RouteConfig>, usize) {
    let mut routes: Vec<RouteConfig> = Vec::new();
    let Some(value) = root.take("routes") else {
        return (routes, 0);
    };
    let toml::Value::Array(items) = value else {
        root.issue("routes", "expected an array of tables ([[routes]])");
        return (routes, 1);
    };
    let declared = items.len();
    for (index, item) in items.into_iter().enumerate() {
        let path = format!("routes[{index}]");
        let toml::Value::Table(table) = item else {
            root.issues.push(ConfigIssue {
                key: path,
                message: "expected a table".to_owned(),
            });
            continue;
        };
        let mut r = Section {
            path,
            table,
            issues: root.issues,
            env: root.env,
        };
        let units = r.table("units").and_then(read_units);
        let settle = r.table("settle").and_then(read_settle);
        let name = r.string("name");
        let name = r.require("name", name);
        if let Some(name) = &name {
            if !is_name(name) {
                r.issue(
                    "name",
                    "route names are 1-64 characters of A-Z a-z 0-9 . _ -",
                );
            } else if routes.iter().any(|route| &route.name == name) {
                r.issue("name", format!("duplicate route name `{name}`"));
            }
        }
        let method = r.string("method").and_then(|m| {
            let upper = m.to_ascii_uppercase();
            match http::Method::from_bytes(upper.as_bytes()) {
                Ok(method) if !upper.is_empty() => Some(method),
                _ => {
                    r.issue("method", format!("`{m}` is not an HTTP method"));
                    None
                }
            }
        });
        let pattern = r.string("path");
        let pattern = r
            .require("path", pattern)
            .and_then(|p| match parse_pattern(&p) {
                Ok(pattern) => Some(pattern),
                Err(message) => {
                    r.issue("path", message);
                    None
                }
            });
        let upstream = r.string("upstream");
        let upstream = r.require("upstream", upstream);
        if let Some(upstream) = &upstream {
            if !upstreams.contains_key(upstream) {
                let defined: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                r.issue(
                    "upstream",
                    format!(
                        "unknown upstream `{upstream}`; defined: {}",
                        defined.join(", ")
                    ),
                );
            }
        }
        let cost = r.credits("cost");
        let cost = r.require("cost", cost);
        let refund_on_failure = r.bool("refund_on_failure").unwrap_or(true);
        if let (Some(pattern), true) = (&pattern, name.is_some()) {
            if routes
                .iter()
                .any(|route| &route.path == pattern && route.method == method)
            {
                r.issue("path", "another route already has this method and path");
            }
        }
        for (key, message) in validate::route(cost, pattern.as_ref(), units.as_ref()) {
            r.issue(key, message);
        }
        r.finish();
        if let (Some(name), Some(path), Some(upstream), Some(cost)) =
            (name, pattern, upstream, cost)
        {
            routes.push(RouteConfig {
                name,
                method,
                path,
                upstream,
                cost,
                refund_on_failure,
                units,
                settle,
            });
        }
    }
    (routes, declared)
}

fn json_pointer(s: &mut Section<'_>, key: &str) -> Option<String> {
    let pointer = s.string(key)?;
    if pointer.is_empty() || pointer.starts_with('/') {
        Some(pointer)
    } else {
        s.issue(
            key,
            format!("`{pointer}` is not a JSON pointer (it must start with '/')"),
        );
        None
    }
}

fn per(s: &mut Section<'_>) -> u64 {
    match s.u64("per") {
        Some(0) => {
            s.issue("per", "must be at least 1");
            1
        }
        Some(per) => per,
        None => 1,
    }
}

fn read_units(mut s: Section<'_>) -> Option<UnitsConfig> {
    let pointer = json_pointer(&mut s, "json");
    let pointer = s.require("json", pointer);
    let default = s.number("default");
    let max = s.number("max");
    let per = per(&mut s);
    if let (Some(default), Some(max)) = (default, max) {
        if default > max {
            s.issue("default", "is larger than `max`");
        }
    }
    s.finish();
    Some(UnitsConfig {
        pointer: pointer?,
        default,
        max,
        per,
    })
}

fn read_settle(mut s: Section<'_>) -> Option<SettleConfig> {
    let json = json_pointer(&mut s, "json");
    let header = s.string("header");
    let source = match (json, header) {
        (Some(pointer), None) => Some(SettleSource::Json(pointer)),
        (None, Some(name)) => {
            let lower = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_ok() {
                Some(SettleSource::Header(lower))
            } else {
                s.issue("header", "not a valid header name");
                None
            }
        }
        (Some(_), Some(_)) => {
            s.issue("json", "give either `json` or `header`, not both");
            None
        }
        (None, None) => {
            s.issue("json", "missing: give `json` (a JSON pointer) or `header`");
            None
        }
    };
    let per = per(&mut s);
    let max_credits = s.credits("max");
    s.finish();
    Some(SettleConfig {
        source: source?,
        per,
        max_credits,
    })
}

fn parse_pattern(path: &str) -> Result<PathPattern, String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".to_owned());
    }
    let (body, prefix) = match path.strip_suffix("/*") {
        Some(body) => (body, true),
        None => (path, false),
    };
    if body.contains(['?', '#', '%', '\\', '*']) {
        return Err("may not contain ?, #, %, \\ or * (except a trailing /*)".to_owned());
    }
    // Routes match normalised paths, so a pattern must be normalised too.
    let inner = body.trim_start_matches('/');
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if !inner.is_empty() {
        for segment in inner.split('/') {
            if segment.is_empty() {
                return Err("may not contain empty segments (//)".to_owned());
            }
            if segment == "." || segment == ".." {
                return Err("may not contain . or .. segments".to_owned());
            }
        }
    }
    if body.starts_with("//") {
        return Err("may not contain empty segments (//)".to_owned());
    }
    Ok(if prefix {
        PathPattern::Prefix(format!("{}/", body.trim_end_matches('/')))
    } else {
        PathPattern::Exact(path.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_paths_are_validated() {
        assert_eq!(
            parse_pattern("/v1/x"),
            Ok(PathPattern::Exact("/v1/x".into()))
        );
        assert_eq!(
            parse_pattern("/v1/*"),
            Ok(PathPattern::Prefix("/v1/".into()))
        );
        assert_eq!(parse_pattern("/*"), Ok(PathPattern::Prefix("/".into())));
        for bad in [
            "v1", "/a/../b", "/a//b", "/a/*/b", "/a%2f", "/a?b", "/a\\b", "/a/./b",
        ] {
            assert!(parse_pattern(bad).is_err(), "{bad}");
        }
    }
}
