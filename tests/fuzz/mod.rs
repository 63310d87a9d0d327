//! Fuzzing as property tests (cargo-fuzz needs a nightly toolchain, which
//! this project's machines do not have): arbitrary inputs for path
//! normalisation, route matching, config parsing and header filtering, plus
//! their seed corpora (`tests/corpus/`) replayed on every `cargo test`.
//! Proptest also replays its saved failures (`proptest-regressions/`).

use std::path::Path;

use creditgate::config::{Config, PathPattern, RouteConfig};
use creditgate::forward::copy_forwardable_headers;
use creditgate::path::{is_safe_normalized, normalize};
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

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("connection".to_owned()),
        Just("keep-alive".to_owned()),
        Just("transfer-encoding".to_owned()),
        Just("te".to_owned()),
        Just("upgrade".to_owned()),
        Just("authorization".to_owned()),
        Just("x-api-key".to_owned()),
        Just("proxy-authorization".to_owned()),
        Just("proxy-foo".to_owned()),
        Just("host".to_owned()),
        Just("x-forwarded-for".to_owned()),
        Just("x-vendor-tenant".to_owned()),
        Just("content-type".to_owned()),
        "x-[a-z]{1,6}",
    ]
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

    #[test]
    fn arbitrary_paths_normalise_safely_or_are_refused(path in "[/a-z.%2eEfF5cC0;\\\\]{0,24}") {
        if let Ok(normalised) = normalize(&path) {
            prop_assert!(is_safe_normalized(&normalised), "{} -> {}", path, normalised);
            prop_assert_eq!(normalize(&normalised), Ok(normalised.clone()));
        }
    }

    #[test]
    fn route_matching_only_returns_routes_whose_pattern_matches(
        patterns in proptest::collection::vec("/[ab]{1,2}(/[ab]{1,2})?(/\\*)?", 1..6),
        path in "/[ab]{1,2}(/[ab]{1,2}){0,2}/?",
    ) {
        let routes: Vec<RouteConfig> = patterns.iter().enumerate().map(|(i, p)| RouteConfig {
            name: format!("r{i}"),
            method: None,
            path: match p.strip_suffix('*') {
                Some(prefix) => PathPattern::Prefix(prefix.to_owned()),
                None => PathPattern::Exact(p.clone()),
            },
            upstream: "u".into(),
            cost: 1,
            refund_on_failure: true,
            units: None,
            settle: None,
        }).collect();
        let table = RouteTable::new(&routes);
        if let RouteMatch::Found(index) = table.lookup(&http::Method::GET, &path) {
            let matched = match &routes[index].path {
                PathPattern::Exact(exact) => exact == &path,
                PathPattern::Prefix(prefix) => path.starts_with(prefix.as_str()) || path == prefix.trim_end_matches('/'),
            };
            prop_assert!(matched, "{} matched {:?}", path, routes[index].path);
        }
    }

    #[test]
    fn header_filtering_never_forwards_credentials_hop_by_hop_or_named_headers(
        headers in proptest::collection::vec((header_name(), "[a-zA-Z0-9 ,-]{0,20}"), 0..12),
    ) {
        let mut src = HeaderMap::new();
        for (name, value) in &headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                src.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
            }
        }
        let injected = vec![(HeaderName::from_static("x-vendor-tenant"), HeaderValue::from_static("gw"))];
        let mut dst = HeaderMap::new();
        copy_forwardable_headers(&src, &mut dst, &injected);
        let named: Vec<String> = src.get_all("connection").iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        for name in dst.keys() {
            let name = name.as_str();
            prop_assert!(!["connection", "keep-alive", "transfer-encoding", "te", "upgrade", "authorization",
                "x-api-key", "host", "x-forwarded-for", "x-vendor-tenant"].contains(&name), "{} forwarded", name);
            prop_assert!(!name.starts_with("proxy-"), "{} forwarded", name);
            prop_assert!(!named.iter().any(|t| t == name), "{} named in Connection but forwarded", name);
        }
    }
}
