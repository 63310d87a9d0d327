//! Fuzzing as property tests (cargo-fuzz needs a nightly toolchain, which
//! this project's machines do not have): arbitrary inputs for path
//! normalisation, route matching, config parsing and header filtering, plus
//! their seed corpora (`tests/corpus/`) replayed on every `cargo test`.
//! Proptest also replays its saved failures (`proptest-regressions/`).

use std::path::Path;

use std::collections::{BTreeMap, BTreeSet};

use creditgate::config::Config;
use creditgate::forward::copy_forwardable_headers;
use creditgate::path::{is_safe_normalized, normalize, PathError};
use creditgate::routes::{RouteMatch, RouteTable};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");

#[test]
fn path_corpus_replays() {
    let text = std::fs::read_to_string(format!("{CORPUS}/paths.txt")).unwrap();
    let mut cases = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        cases += 1;
        if let Some(rest) = line.strip_prefix("ok ") {
            let (input, expected) = rest.split_once(" -> ").expect("`ok IN -> OUT`");
            assert_eq!(normalize(input).as_deref(), Ok(expected), "{input}");
        } else if let Some(input) = line.strip_prefix("bad ") {
            assert!(normalize(input).is_err(), "{input} should be refused");
        } else {
            panic!("corpus line must start with `ok ` or `bad `: {line}");
        }
    }
    assert!(cases >= 25, "{cases}");
}

#[test]
fn config_corpus_replays() {
    let mut seen = 0;
    for entry in std::fs::read_dir(format!("{CORPUS}/configs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let result = Config::parse(&text, &name, Path::new("."), &|_| None);
        seen += 1;
        match (name.starts_with("valid"), result) {
            (true, Ok(_)) => {}
            (false, Err(error)) => {
                assert!(!error.issues.is_empty());
                for issue in &error.issues {
                    assert!(!issue.message.is_empty(), "{name}: {issue:?}");
                }
                // Errors are all reported at once: every invalid corpus file
                // has several problems.
                if name != "invalid-syntax.toml" {
                    assert!(error.issues.len() >= 3, "{name}: {error}");
                }
            }
            (valid, result) => panic!("{name}: valid={valid} but got {result:?}"),
        }
    }
    assert!(seen >= 5);
}

/// TOML-ish text assembled from fragments that exercise every section.
fn config_text() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("[server]\n".to_owned()),
        Just("[admin]\n".to_owned()),
        Just("[ledger]\n".to_owned()),
        Just("[plans.p]\n".to_owned()),
        Just("[upstreams.u]\n".to_owned()),
        Just("[[routes]]\n".to_owned()),
        Just("url = \"http://127.0.0.1:1\"\n".to_owned()),
        Just("name = \"r\"\npath = \"/r\"\nupstream = \"u\"\ncost = 1\n".to_owned()),
        Just("units = { json = \"/n\", max = 2 }\n".to_owned()),
        Just("settle = { header = \"x\" }\n".to_owned()),
        Just("monthly_allowance = 5\n".to_owned()),
        Just("window = \"3s\"\n".to_owned()),
        Just("listen = \"127.0.0.1:0\"\n".to_owned()),
        Just("token = \"${X}\"\n".to_owned()),
        Just("redis_url = \"redis://127.0.0.1:1\"\n".to_owned()),
        "[a-z_]{1,8} = [0-9]{1,3}\n",
        "[a-z_]{1,8} = \"[ -~]{0,12}\"\n",
        "[ -~\n]{0,20}",
    ];
    proptest::collection::vec(fragment, 0..14).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn config_parsing_never_panics_and_names_every_problem(text in config_text()) {
        match Config::parse(&text, "fuzz.toml", Path::new("."), &|_| None) {
            Ok(config) => {
                for route in &config.routes {
                    prop_assert!(config.upstreams.contains_key(&route.upstream));
                }
            }
            Err(error) => {
                prop_assert!(!error.issues.is_empty());
                let rendered = error.to_string();
                prop_assert!(rendered.lines().all(|line| line.starts_with("fuzz.toml: ")), "{}", rendered);
            }
        }
    }
}

/// Request paths built from segments: plain words, dot segments, empty
/// segments (doubled slashes) and the spellings that may be refused.
fn request_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        6 => "[a-zA-Z0-9_~-]{1,3}",
        2 => prop::sample::select(vec![".", "..", ""]).prop_map(str::to_owned),
        1 => prop::sample::select(vec![
            "%2e", "%2E%2e", "a%2fb", "%5c", "a\\b", "..;", ".;x", "%25", "%00", "%zz", "%4",
            "%41", "%7e", "%3b", "a;b", "caf%c3%a9",
        ])
        .prop_map(str::to_owned),
    ];
    (proptest::collection::vec(segment, 0..8), any::<bool>()).prop_map(|(segments, slash)| {
        let mut path = format!("/{}", segments.join("/"));
        if slash {
            path.push('/');
        }
        path
    })
}

/// For paths of plain words, dot and empty segments only, the whole rule:
/// empty and `.` segments go, `..` removes the segment before it (and a
/// path that climbs above the root is refused), a path ending in a removed
/// segment keeps a trailing slash.
fn plain_model(path: &str) -> Result<String, PathError> {
    let mut stack = Vec::new();
    let mut trailing = false;
    for segment in path[1..].split('/') {
        trailing = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                stack.pop().ok_or(PathError::AboveRoot)?;
            }
            word => stack.push(word),
        }
    }
    let mut out = format!("/{}", stack.join("/"));
    if trailing && out != "/" {
        out.push('/');
    }
    Ok(out)
}

#[test]
fn paths_normalise_safely_and_plain_ones_exactly() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 2048,
        ..runner_config()
    });
    let counts = std::cell::RefCell::new(BTreeMap::<&str, usize>::new());
    runner
        .run(&request_path(), |path| {
            let got = normalize(&path);
            let plain = !path.contains(['%', '\\', ';']);
            if plain {
                // No spelling to refuse: only climbing above the root is.
                prop_assert_eq!(&got, &plain_model(&path), "{}", path);
            }
            if let Ok(normalised) = &got {
                prop_assert!(is_safe_normalized(normalised), "{} -> {}", path, normalised);
                prop_assert_eq!(normalize(normalised), Ok(normalised.clone()));
            }
            let kind = match (plain, got.is_ok()) {
                (true, true) => "plain, accepted",
                (true, false) => "plain, above the root",
                (false, true) => "encoded, accepted",
                (false, false) => "encoded, refused",
            };
            *counts.borrow_mut().entry(kind).or_default() += 1;
            Ok(())
        })
        .unwrap();
    // A normaliser that refused everything, or accepted everything, fails here.
    let counts = counts.into_inner();
    let total: usize = counts.values().sum();
    for kind in [
        "plain, accepted",
        "plain, above the root",
        "encoded, accepted",
        "encoded, refused",
    ] {
        let count = counts.get(kind).copied().unwrap_or(0);
        assert!(
            count * 50 >= total,
            "{kind}: {count} of {total} ({counts:?})"
        );
    }
}

// ---- Route matching against a brute-force model ----

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// (method or any, pattern): `/seg…` exact, `/seg…/*` prefix.
fn route_spec() -> impl Strategy<Value = (Option<&'static str>, String)> {
    (
        prop::option::weighted(0.6, prop::sample::select(&METHODS[..3])),
        "/[ab]{1,2}(/[ab]{1,2}){0,2}(/\\*)?",
    )
}

/// Routes through the real config parser, so the table is built exactly as
/// the gateway builds it; (method, pattern) pairs are unique, as the config
/// requires.
fn parse_routes(specs: &[(Option<&str>, String)]) -> Config {
    let mut toml = String::from(
        "[plans.p]\nmonthly_allowance = 1\n[upstreams.u]\nurl = \"http://127.0.0.1:1\"\n",
    );
    for (index, (method, pattern)) in specs.iter().enumerate() {
        toml.push_str(&format!(
            "[[routes]]\nname = \"r{index}\"\npath = \"{pattern}\"\nupstream = \"u\"\ncost = 1\n"
        ));
        if let Some(method) = method {
            toml.push_str(&format!("method = \"{method}\"\n"));
        }
    }
    Config::parse(&toml, "fuzz.toml", Path::new("."), &|_| None)
        .unwrap_or_else(|e| panic!("generated routes are valid:\n{toml}\n{e}"))
}

/// The routing rules read literally, by brute force: among the routes whose
/// pattern matches the path (an exact pattern equal to it, or a prefix
/// `/p/*` with the path under `/p/` or equal to `/p`), those accepting the
/// method rank exact first, then longer prefix, then explicit method, then
/// config order; none accepting while some match is a 405 listing their
/// methods; none matching is a 404.
fn model(specs: &[(Option<&str>, String)], method: &str, path: &str) -> RouteMatch {
    let mut matching = Vec::new();
    for (index, (route_method, pattern)) in specs.iter().enumerate() {
        let rank = match pattern.strip_suffix('*') {
            None => (pattern == path).then_some((1, 0)),
            Some(prefix) => (path.starts_with(prefix) || path == &prefix[..prefix.len() - 1])
                .then_some((0, prefix.len())),
        };
        if let Some(rank) = rank {
            matching.push((index, *route_method, rank));
        }
    }
    let best = matching
        .iter()
        .filter(|(_, route_method, _)| route_method.is_none_or(|m| m == method))
        .max_by_key(|(index, route_method, rank)| {
            (*rank, route_method.is_some(), std::cmp::Reverse(*index))
        });
    match best {
        Some((index, _, _)) => RouteMatch::Found(*index),
        None if matching.is_empty() => RouteMatch::NotFound,
        None => RouteMatch::MethodNotAllowed {
            allow: matching
                .iter()
                .filter_map(|(_, m, _)| m.map(str::to_owned))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        },
    }
}

/// Explicit runners: no regression file to look for (and none to write).
fn runner_config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn route_matching_agrees_with_a_brute_force_model_on_found_405_and_404() {
    let mut runner = proptest::test_runner::TestRunner::new(runner_config());
    let outcomes = std::cell::RefCell::new(BTreeMap::<&str, usize>::new());
    // Requests aim at the routes' own patterns half of the time (the path
    // itself, a prefix's bare form or something under it), so that lookups
    // collide with routes often; the rest are arbitrary.
    let cases = proptest::collection::vec(route_spec(), 1..8).prop_flat_map(|specs| {
        let count = specs.len();
        let request = (
            prop::sample::select(&METHODS[..]),
            prop::option::of(0..count),
            "(/[ab]{1,2}){0,2}/?",
            "/[ab]{1,2}(/[ab]{1,2}){0,2}/?",
        );
        let specs_for_paths = specs.clone();
        (
            Just(specs),
            proptest::collection::vec(request, 1..12).prop_map(move |requests| {
                requests
                    .into_iter()
                    .map(|(method, aim, below, arbitrary)| {
                        let path = match aim.map(|i| &specs_for_paths[i].1) {
                            None => arbitrary,
                            Some(pattern) => match pattern.strip_suffix("/*") {
                                None => pattern.clone(),
                                Some(bare) if below.is_empty() => bare.to_owned(),
                                Some(bare) => format!("{bare}{below}"),
                            },
                        };
                        (method, path)
                    })
                    .collect::<Vec<_>>()
            }),
        )
    });
    runner
        .run(&cases, |(specs, requests)| {
            let mut seen = BTreeSet::new();
            let specs: Vec<_> = specs
                .into_iter()
                .filter(|(method, pattern)| seen.insert((*method, pattern.clone())))
                .collect();
            let config = parse_routes(&specs);
            let table = RouteTable::new(&config.routes);
            for (method, path) in requests {
                let got =
                    table.lookup(&http::Method::from_bytes(method.as_bytes()).unwrap(), &path);
                let want = model(&specs, method, &path);
                prop_assert_eq!(&got, &want, "{} {} over {:?}", method, path, specs);
                let kind = match got {
                    RouteMatch::Found(_) => "found",
                    RouteMatch::MethodNotAllowed { .. } => "405",
                    RouteMatch::NotFound => "404",
                };
                *outcomes.borrow_mut().entry(kind).or_default() += 1;
            }
            Ok(())
        })
        .unwrap();
    // Both sides, and the third: a table that never matches, or never
    // answers 405, fails here even if it agreed with the model.
    let outcomes = outcomes.into_inner();
    let total: usize = outcomes.values().sum();
    for kind in ["found", "405", "404"] {
        let count = outcomes.get(kind).copied().unwrap_or(0);
        assert!(
            count * 10 >= total,
            "{kind}: {count} of {total} lookups ({outcomes:?})"
        );
    }
}

// ---- Header filtering, both ways ----

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        // Never forwarded as the client sent them, then the rest.
        prop::sample::select(
            NEVER_FORWARDED
                .iter()
                .copied()
                .chain([
                    "proxy-authorization",
                    "proxy-foo",
                    "x-vendor-tenant",
                    // Forwarded (unless named in Connection).
                    "content-type",
                    "accept",
                    "accept-encoding",
                    "user-agent",
                    "x-custom",
                ])
                .collect::<Vec<_>>()
        )
        .prop_map(str::to_owned),
        "x-[a-z]{1,2}",
    ]
}

/// Names the gateway sets, strips as hop-by-hop, or keeps to itself
/// (docs/http-api.md), independent of the implementation's list.
const NEVER_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "host",
    "x-request-id",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "authorization",
    "x-api-key",
    "cookie",
];

#[test]
fn header_filtering_forwards_exactly_what_may_travel() {
    let mut runner = proptest::test_runner::TestRunner::new(runner_config());
    let (forwarded, stripped) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let headers = proptest::collection::vec(
        (
            header_name(),
            prop_oneof![
                "[a-zA-Z0-9 ,-]{0,12}",
                // A Connection value naming other headers of the request.
                proptest::collection::vec(header_name(), 1..3).prop_map(|names| names.join(", ")),
            ],
        ),
        0..12,
    );
    runner
        .run(&headers, |headers| {
            let mut src = HeaderMap::new();
            for (name, value) in &headers {
                if let Ok(value) = HeaderValue::from_str(value) {
                    src.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
                }
            }
            let injected = vec![(
                HeaderName::from_static("x-vendor-tenant"),
                HeaderValue::from_static("gw"),
            )];
            let mut dst = HeaderMap::new();
            copy_forwardable_headers(&src, &mut dst, &injected);
            let named: BTreeSet<String> = src
                .get_all("connection")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|t| t.trim().to_ascii_lowercase())
                .collect();
            let may_travel = |name: &str| {
                !NEVER_FORWARDED.contains(&name)
                    && !name.starts_with("proxy-")
                    && !named.contains(name)
                    && name != "x-vendor-tenant"
            };
            // Every header that may travel arrives, every value in order;
            // nothing else does.
            for name in src.keys() {
                let sent: Vec<_> = src.get_all(name).iter().collect();
                let arrived: Vec<_> = dst.get_all(name).iter().collect();
                if may_travel(name.as_str()) {
                    prop_assert_eq!(&arrived, &sent, "{} dropped or altered", name);
                    forwarded.set(forwarded.get() + 1);
                } else {
                    prop_assert!(arrived.is_empty(), "{} forwarded", name);
                    stripped.set(stripped.get() + 1);
                }
            }
            prop_assert!(
                dst.keys().all(|name| src.contains_key(name)),
                "a header appeared"
            );
            Ok(())
        })
        .unwrap();
    // Both sides were exercised many times.
    assert!(
        forwarded.get() >= 500 && stripped.get() >= 500,
        "{} forwarded, {} stripped header names checked",
        forwarded.get(),
        stripped.get()
    );
}
