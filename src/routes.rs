//! The route table, compiled once per config snapshot.
//!
//! Precedence (docs/configuration.md): exact paths before prefixes, longer prefixes before
//! shorter ones, and on the same pattern an explicit method before an
//! any-method route. A request falls through to a less specific pattern when
//! the more specific one has no route for its method, so `GET /v1/agents/x`
//! can be priced separately while everything else under `/v1/agents/*` keeps
//! the prefix's price.
//!
//! Lookups run on every request, so the compiled form is laid out for the
//! hit path: one hash probe for exact paths, then prefixes longest first, and
//! no allocation unless the answer is 405.

use std::collections::HashMap;

use http::Method;

use crate::config::{PathPattern, RouteConfig};

/// The outcome of matching a request against the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// Index into the config's `routes`.
    Found(usize),
    /// Some route's path matches but none accepts this method. `allow` is
    /// sorted and deduplicated, ready for an `Allow` header.
    MethodNotAllowed {
        allow: Vec<String>,
    },
    NotFound,
}

/// Routes compiled from [`RouteConfig`]s for cheap lookup.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Exact path → routes on that path, explicit methods first.
    exact: HashMap<String, Vec<Candidate>>,
    /// One entry per distinct prefix, longest first.
    prefixes: Vec<PrefixRoutes>,
}

/// A route as seen by lookup: its position in the config and its method.
#[derive(Debug, Clone)]
struct Candidate {
    index: usize,
    /// `None` = any method.
    method: Option<Method>,
}

impl Candidate {
    fn accepts(&self, method: &Method) -> bool {
        self.method.as_ref().is_none_or(|wanted| wanted == method)
    }
}

#[derive(Debug, Clone)]
struct PrefixRoutes {
    /// Always ends with '/', so `/v1/agents/` never matches `/v1/agentsX`.
    prefix: String,
    /// Explicit methods first, then config order.
    candidates: Vec<Candidate>,
}

impl PrefixRoutes {
    fn matches(&self, path: &str) -> bool {
        // `/v1/agents/*` also answers `/v1/agents`: clients rarely add the slash.
        path.starts_with(self.prefix.as_str()) || self.prefix.strip_suffix('/') == Some(path)
    }
}

impl RouteTable {
    pub fn new(routes: &[RouteConfig]) -> RouteTable {
        let mut exact: HashMap<String, Vec<Candidate>> = HashMap::new();
        let mut prefixes: Vec<PrefixRoutes> = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            let candidate = Candidate {
                index,
                method: route.method.clone(),
            };
            match &route.path {
                PathPattern::Exact(path) => exact.entry(path.clone()).or_default().push(candidate),
                PathPattern::Prefix(prefix) => {
                    // Config stores prefixes with their slash; should one ever
                    // arrive without, adding it keeps the match on a segment
                    // boundary rather than silently widening it.
                    let mut prefix = prefix.clone();
                    if !prefix.ends_with('/') {
                        prefix.push('/');
                    }
                    match prefixes.iter_mut().find(|group| group.prefix == prefix) {
                        Some(group) => group.candidates.push(candidate),
                        None => prefixes.push(PrefixRoutes {
                            prefix,
                            candidates: vec![candidate],
                        }),
                    }
                }
            }
        }
        // Stable sorts: among equals, config order decides.
        for candidates in exact.values_mut() {
            candidates.sort_by_key(|c| c.method.is_none());
        }
        for group in &mut prefixes {
            group.candidates.sort_by_key(|c| c.method.is_none());
        }
        // Two distinct prefixes of one length never match the same path, so
        // length alone orders them.
        prefixes.sort_by_key(|group| std::cmp::Reverse(group.prefix.len()));
        RouteTable { exact, prefixes }
    }

    /// Matches a method and an already normalised path (see [`crate::path`]).
    /// Matching is case-sensitive, like the paths upstreams serve.
    pub fn lookup(&self, method: &Method, normalized_path: &str) -> RouteMatch {
        let mut path_matched = false;
        for candidates in self.matching(normalized_path) {
            path_matched = true;
            if let Some(found) = candidates.iter().find(|c| c.accepts(method)) {
                return RouteMatch::Found(found.index);
            }
        }
        if !path_matched {
            return RouteMatch::NotFound;
        }
        // Every candidate that matched has an explicit method, or one of them
        // would have accepted this request.
        let mut allow: Vec<String> = self
            .matching(normalized_path)
            .flatten()
            .filter_map(|c| c.method.as_ref().map(|m| m.as_str().to_owned()))
            .collect();
        allow.sort_unstable();
        allow.dedup();
        RouteMatch::MethodNotAllowed { allow }
    }

    /// The candidate lists whose pattern matches `path`, most specific first.
    fn matching<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a [Candidate]> + 'a {
        let exact = self.exact.get(path).map(Vec::as_slice);
        let prefixed = self
            .prefixes
            .iter()
            .filter(move |group| group.matches(path))
            .map(|group| group.candidates.as_slice());
        exact.into_iter().chain(prefixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(method: Option<&str>, pattern: &str) -> RouteConfig {
        let path = match pattern.strip_suffix('*') {
            Some(prefix) => PathPattern::Prefix(prefix.to_owned()),
            None => PathPattern::Exact(pattern.to_owned()),
        };
        RouteConfig {
            name: format!("{} {pattern}", method.unwrap_or("ANY")),
            method: method.map(|m| Method::from_bytes(m.as_bytes()).expect("valid method")),
            path,
            upstream: "up".to_owned(),
            cost: 1,
            refund_on_failure: true,
            units: None,
            settle: None,
        }
    }

    fn method(name: &str) -> Method {
        Method::from_bytes(name.as_bytes()).expect("valid method")
    }

    fn lookup(table: &RouteTable, m: &str, path: &str) -> RouteMatch {
        table.lookup(&method(m), path)
    }

    fn not_allowed(methods: &[&str]) -> RouteMatch {
        RouteMatch::MethodNotAllowed {
            allow: methods.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    #[test]
    fn exact_matches_only_the_exact_path() {
        let table = RouteTable::new(&[route(None, "/v1/images/generate")]);
        assert_eq!(
            lookup(&table, "POST", "/v1/images/generate"),
            RouteMatch::Found(0)
        );
        for path in [
            "/v1/images/generate/",
            "/v1/images/generate/x",
            "/v1/images/generat",
            "/v1/images",
            "/V1/images/generate",
            "/",
        ] {
            assert_eq!(lookup(&table, "POST", path), RouteMatch::NotFound, "{path}");
        }
    }

    #[test]
    fn prefix_matches_itself_with_and_without_slash_and_below() {
        let table = RouteTable::new(&[route(None, "/v1/agents/*")]);
        for path in [
            "/v1/agents",
            "/v1/agents/",
            "/v1/agents/x",
            "/v1/agents/x/y/",
        ] {
            assert_eq!(lookup(&table, "GET", path), RouteMatch::Found(0), "{path}");
        }
        for path in [
            "/v1/agentsX",
            "/v1/agentsX/y",
            "/v1/agent",
            "/v1/",
            "/v1/Agents/x",
        ] {
            assert_eq!(lookup(&table, "GET", path), RouteMatch::NotFound, "{path}");
        }
    }

    #[test]
    fn root_prefix_matches_everything() {
        let table = RouteTable::new(&[route(None, "/*")]);
        for path in ["/", "/a", "/a/b/"] {
            assert_eq!(lookup(&table, "GET", path), RouteMatch::Found(0), "{path}");
        }
    }

    #[test]
    fn prefix_without_trailing_slash_stays_on_a_segment_boundary() {
        let table = RouteTable::new(&[RouteConfig {
            path: PathPattern::Prefix("/v1/agents".to_owned()),
            ..route(None, "/unused")
        }]);
        assert_eq!(lookup(&table, "GET", "/v1/agents"), RouteMatch::Found(0));
        assert_eq!(lookup(&table, "GET", "/v1/agents/x"), RouteMatch::Found(0));
        assert_eq!(lookup(&table, "GET", "/v1/agentsX"), RouteMatch::NotFound);
    }

    #[test]
    fn exact_beats_prefix_regardless_of_order() {
        let table = RouteTable::new(&[
            route(None, "/v1/agents/*"),
            route(None, "/v1/agents/run"),
            route(None, "/v1/agents"),
        ]);
        assert_eq!(
            lookup(&table, "GET", "/v1/agents/run"),
            RouteMatch::Found(1)
        );
        assert_eq!(lookup(&table, "GET", "/v1/agents"), RouteMatch::Found(2));
        assert_eq!(lookup(&table, "GET", "/v1/agents/"), RouteMatch::Found(0));
        assert_eq!(
            lookup(&table, "GET", "/v1/agents/other"),
            RouteMatch::Found(0)
        );
    }

    #[test]
    fn longer_prefix_beats_shorter_regardless_of_order() {
        let table = RouteTable::new(&[
            route(None, "/*"),
            route(None, "/v1/*"),
            route(None, "/v1/agents/*"),
        ]);
        assert_eq!(lookup(&table, "GET", "/v1/agents/x"), RouteMatch::Found(2));
        assert_eq!(lookup(&table, "GET", "/v1/agents"), RouteMatch::Found(2));
        assert_eq!(lookup(&table, "GET", "/v1/agentsX"), RouteMatch::Found(1));
        assert_eq!(lookup(&table, "GET", "/v1"), RouteMatch::Found(1));
        assert_eq!(lookup(&table, "GET", "/v2"), RouteMatch::Found(0));
    }

    #[test]
    fn explicit_method_beats_any_method_on_the_same_pattern() {
        let table = RouteTable::new(&[
            route(None, "/v1/chat"),
            route(Some("POST"), "/v1/chat"),
            route(None, "/v1/x/*"),
            route(Some("GET"), "/v1/x/*"),
        ]);
        assert_eq!(lookup(&table, "POST", "/v1/chat"), RouteMatch::Found(1));
        assert_eq!(lookup(&table, "GET", "/v1/chat"), RouteMatch::Found(0));
        assert_eq!(lookup(&table, "GET", "/v1/x/y"), RouteMatch::Found(3));
        assert_eq!(lookup(&table, "DELETE", "/v1/x/y"), RouteMatch::Found(2));
    }

    #[test]
    fn same_pattern_and_method_first_in_config_wins() {
        let table = RouteTable::new(&[
            route(Some("GET"), "/a"),
            route(Some("GET"), "/a"),
            route(None, "/b/*"),
            route(None, "/b/*"),
        ]);
        assert_eq!(lookup(&table, "GET", "/a"), RouteMatch::Found(0));
        assert_eq!(lookup(&table, "GET", "/b/c"), RouteMatch::Found(2));
    }

    #[test]
    fn method_mismatch_falls_through_to_less_specific_patterns() {
        let table = RouteTable::new(&[
            route(Some("GET"), "/v1/agents/list"),
            route(Some("POST"), "/v1/agents/*"),
            route(None, "/v1/*"),
        ]);
        assert_eq!(
            lookup(&table, "GET", "/v1/agents/list"),
            RouteMatch::Found(0)
        );
        assert_eq!(
            lookup(&table, "POST", "/v1/agents/list"),
            RouteMatch::Found(1)
        );
        assert_eq!(
            lookup(&table, "DELETE", "/v1/agents/list"),
            RouteMatch::Found(2)
        );
    }

    #[test]
    fn method_not_allowed_lists_every_matching_route_sorted_once() {
        let table = RouteTable::new(&[
            route(Some("POST"), "/v1/agents/run"),
            route(Some("GET"), "/v1/agents/*"),
            route(Some("POST"), "/v1/agents/*"),
            route(Some("PUT"), "/v1/*"),
            route(Some("DELETE"), "/v2/*"),
            route(Some("PATCH"), "/v1/agents/other"),
        ]);
        assert_eq!(
            lookup(&table, "DELETE", "/v1/agents/run"),
            not_allowed(&["GET", "POST", "PUT"])
        );
        assert_eq!(
            lookup(&table, "DELETE", "/v1/agents"),
            not_allowed(&["GET", "POST", "PUT"])
        );
        assert_eq!(lookup(&table, "GET", "/v1/other"), not_allowed(&["PUT"]));
        assert_eq!(lookup(&table, "GET", "/v3"), RouteMatch::NotFound);
    }

    #[test]
    fn methods_match_case_sensitively() {
        let table = RouteTable::new(&[route(Some("GET"), "/a")]);
        assert_eq!(lookup(&table, "get", "/a"), not_allowed(&["GET"]));
        assert_eq!(lookup(&table, "HEAD", "/a"), not_allowed(&["GET"]));
    }

    #[test]
    fn extension_methods_match() {
        let table = RouteTable::new(&[route(Some("PURGE"), "/cache/*")]);
        assert_eq!(lookup(&table, "PURGE", "/cache/x"), RouteMatch::Found(0));
    }

    #[test]
    fn empty_table_finds_nothing() {
        let table = RouteTable::new(&[]);
        assert_eq!(lookup(&table, "GET", "/"), RouteMatch::NotFound);
    }

    /// The spec read literally: rank every route whose path matches, take the
    /// best one whose method matches.
    fn reference(routes: &[RouteConfig], method: &str, path: &str) -> RouteMatch {
        // Higher is more specific: exact above every prefix, then by length.
        let specificity = |pattern: &PathPattern| -> Option<(u8, usize)> {
            match pattern {
                PathPattern::Exact(p) => (path == p).then_some((1, 0)),
                PathPattern::Prefix(p) => {
                    let bare = &p[..p.len() - 1];
                    (path.starts_with(p.as_str()) || path == bare).then_some((0, p.len()))
                }
            }
        };
        let matching: Vec<(usize, &RouteConfig, (u8, usize))> = routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| specificity(&r.path).map(|s| (i, r, s)))
            .collect();
        let best = matching
            .iter()
            .filter(|(_, r, _)| r.method.as_ref().is_none_or(|m| m == method))
            .min_by_key(|(i, r, s)| (std::cmp::Reverse(*s), r.method.is_none(), *i));
        if let Some((i, _, _)) = best {
            return RouteMatch::Found(*i);
        }
        if matching.is_empty() {
            return RouteMatch::NotFound;
        }
        let allow: std::collections::BTreeSet<String> = matching
            .iter()
            .filter_map(|(_, r, _)| r.method.as_ref().map(|m| m.to_string()))
            .collect();
        RouteMatch::MethodNotAllowed {
            allow: allow.into_iter().collect(),
        }
    }

    /// Paths over a tiny alphabet so that patterns and requests collide often.
    fn small_path() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", "A"]), 0..4),
            any::<bool>(),
        )
            .prop_map(|(segments, slash)| {
                let mut path = format!("/{}", segments.join("/"));
                if slash && path != "/" {
                    path.push('/');
                }
                path
            })
    }

    fn arbitrary_route() -> impl Strategy<Value = RouteConfig> {
        let method = prop::option::of(prop::sample::select(vec!["GET", "POST", "PUT"]));
        (method, small_path(), any::<bool>()).prop_map(|(method, path, is_prefix)| {
            let pattern = if is_prefix {
                let prefix = if path.ends_with('/') {
                    path
                } else {
                    format!("{path}/")
                };
                format!("{prefix}*")
            } else {
                path
            };
            route(method, &pattern)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn lookup_agrees_with_reference(
            routes in prop::collection::vec(arbitrary_route(), 0..10),
            requests in prop::collection::vec(
                (prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]), small_path()),
                1..16,
            ),
        ) {
            let table = RouteTable::new(&routes);
            for (m, path) in requests {
                prop_assert_eq!(
                    lookup(&table, m, &path),
                    reference(&routes, m, &path),
                    "{} {}", m, path
                );
            }
        }
    }
}
