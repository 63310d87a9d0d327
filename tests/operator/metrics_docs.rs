//! What operators read about metrics matches what a running gateway serves:
//! every metric family in `/metrics` is documented in `docs/metrics.md` (with
//! its type and every label it is served with), nothing documented is gone,
//! and every metric and label the Grafana dashboard queries exists.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use creditgate::dev::{self, DevGateway, DevOptions};

use crate::support::http::TestClient;

const DOCS: &str = include_str!("../../docs/metrics.md");
const DASHBOARD: &str = include_str!("../../deploy/grafana/creditgate.json");
/// Labels Prometheus adds to every scraped series, and the histogram bucket label.
const SCRAPE_LABELS: &[&str] = &["instance", "job", "le"];

/// A family from `# TYPE` and the label names seen on its series.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
}

/// Starts the dev gateway in this process and makes it serve a bit of
/// everything (forwarded, settled, rejected, exhausted, refunded, reload),
/// so as many series as possible exist; returns its `/metrics` text.
async fn metrics_after_traffic() -> String {
    let dev = dev::start(DevOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
    })
    .await
    .expect("dev gateway");
    let client = TestClient::checking(dev.running.data_addr, dev.running.admin_addr);
    let data = |path: &str| format!("http://{}{path}", dev.running.data_addr);
    let admin = |path: &str| format!("http://{}{path}", dev.running.admin_addr);
    let auth = format!("Bearer {}", dev.key);
    let key = [("authorization", auth.as_str())];
    let image_url = data("/v1/images/generate");
    let image = |n: u32| client.post(&image_url, &key, format!("{{\"n\":{n}}}"));

    assert_eq!(image(2).await.status, 200);
    let agents = client
        .post(
            &data("/v1/agents/chat"),
            &key,
            r#"{"stream":true,"max_tokens":4000}"#,
        )
        .await;
    assert_eq!(agents.status, 200, "{}", agents.text());
    assert_eq!(client.get(&data("/v1/credits"), &key).await.status, 200);
    let stranger = client
        .get(
            &data("/v1/credits"),
            &[("authorization", "Bearer cg_unknown")],
        )
        .await;
    assert_eq!(stranger.status, 401);
    assert_eq!(client.get(&data("/nowhere"), &key).await.status, 404);
    // 11 used of 100: two of 40 fit, the third is a 429.
    assert_eq!(image(10).await.status, 200);
    assert_eq!(image(10).await.status, 200);
    assert_eq!(image(10).await.status, 429);
    let token = format!("Bearer {}", dev.admin_token);
    let reload = client
        .post(
            &admin("/admin/v1/reload"),
            &[("authorization", token.as_str())],
            "",
        )
        .await;
    assert_eq!(reload.status, 400, "dev mode has no file to reload");
    // Without its vendor a priced request is a 502 and its debit comes back.
    let DevGateway {
        running, vendor, ..
    } = dev;
    drop(vendor);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client
            .post(
                &format!("http://{}/v1/images/generate", running.data_addr),
                &key,
                "{}",
            )
            .await;
        if response.status == 502 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still answered without a vendor: {}",
            response.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = client
        .get(&format!("http://{}/metrics", running.admin_addr), &[])
        .await
        .text();
    running.shutdown().await;
    text
}

/// Families by `# TYPE`, with the label names of their series.
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            families.entry(name.to_owned()).or_default().kind = kind.to_owned();
        }
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let series = &line[..name_end];
        let family = family_of(series, &families)
            .unwrap_or_else(|| panic!("series {series} has no # TYPE line"));
        let labels = label_names(&line[name_end..]);
        families.get_mut(&family).unwrap().labels.extend(labels);
    }
    families
}

/// The family a series or queried name belongs to (`_bucket`, `_sum` and
/// `_count` of a histogram belong to the histogram).
fn family_of(name: &str, families: &BTreeMap<String, Family>) -> Option<String> {
    if families.contains_key(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (families.get(base)?.kind == "histogram").then(|| base.to_owned())
    })
}

/// `{a="x",b="y\"z"} 1` → [a, b].
fn label_names(rest: &str) -> Vec<String> {
    let Some(body) = rest.strip_prefix('{') else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut chars = body.chars();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() || name.starts_with('}') {
            break;
        }
        names.push(name.trim_start_matches(',').to_owned());
        assert_eq!(chars.next(), Some('"'), "label value of {name} in {rest}");
        let mut escaped = false;
        for c in chars.by_ref() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => break,
                _ => escaped = false,
            }
        }
        match chars.next() {
            Some(',') => continue,
            _ => break,
        }
    }
    names
}

/// The table of `docs/metrics.md`: name → (type, labels).
fn documented() -> BTreeMap<String, (String, BTreeSet<String>)> {
    DOCS.lines()
        .filter(|line| line.starts_with("| `creditgate_"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_owned();
            let labels = cells[3]
                .split(',')
                .map(|label| label.trim().trim_matches('`').to_owned())
                .filter(|label| !label.is_empty() && label != "—")
                .collect();
            (name, (cells[2].to_owned(), labels))
        })
        .collect()
}

#[test]
fn the_label_parser_handles_escapes_and_no_labels() {
    assert_eq!(label_names(r#"{a="x",b="y\"z,w"} 1"#), ["a", "b"]);
    assert_eq!(label_names(r#"{route="",le="+Inf"} 3"#), ["route", "le"]);
    assert!(label_names(" 5").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_served_is_documented_with_its_type_and_labels() {
    let text = metrics_after_traffic().await;
    let served = families(&text);
    let documented = documented();
    assert!(served.len() >= 10, "too few families:\n{text}");
    let served_names: BTreeSet<&String> = served.keys().collect();
    let documented_names: BTreeSet<&String> = documented.keys().collect();
    assert_eq!(
        served_names, documented_names,
        "docs/metrics.md and /metrics disagree (left: served, right: documented)"
    );
    for (name, family) in &served {
        let (kind, labels) = &documented[name];
        assert_eq!(&family.kind, kind, "{name}: type in docs/metrics.md");
        for label in &family.labels {
            assert!(
                labels.contains(label) || SCRAPE_LABELS.contains(&label.as_str()),
                "{name} is served with label `{label}`, which docs/metrics.md does not list"
            );
        }
    }
    // The traffic above reached the interesting families, so their labels were checked.
    for name in [
        "creditgate_requests_total",
        "creditgate_rejections_total",
        "creditgate_credits_debited_total",
        "creditgate_credits_refunded_total",
        "creditgate_upstream_duration_seconds",
        "creditgate_ledger_duration_seconds",
        "creditgate_config_reloads_total",
        "creditgate_open_connections",
    ] {
        assert!(
            !served[name].labels.is_empty(),
            "{name} has no series:\n{text}"
        );
    }
}

/// Every string of the dashboard that holds a query.
fn queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", serde_json::Value::String(text)) => {
                        out.push(text.clone())
                    }
                    _ => queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| queries(item, out)),
        _ => {}
    }
}

fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(start) = rest.find("creditgate_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Label names in `by (…)` clauses.
fn grouping_labels(query: &str) -> Vec<String> {
    query
        .split("by (")
        .skip(1)
        .flat_map(|clause| {
            clause
                .split(')')
                .next()
                .unwrap_or("")
                .split(',')
                .map(|label| label.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_the_dashboard_queries_exists() {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("deploy/grafana/creditgate.json is JSON");
    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    let all: Vec<String> = all
        .into_iter()
        .filter(|q| q.contains("creditgate_"))
        .collect();
    assert!(all.len() >= 10, "{all:?}");
    let served = families(&metrics_after_traffic().await);
    let documented = documented();
    let mut used = BTreeSet::new();
    for query in &all {
        let mut labels_here: BTreeSet<String> =
            SCRAPE_LABELS.iter().map(|l| (*l).to_owned()).collect();
        for name in metric_names(query) {
            let family = family_of(&name, &served).unwrap_or_else(|| {
                panic!("the dashboard queries `{name}`, which /metrics does not serve: {query}")
            });
            labels_here.extend(documented[&family].1.iter().cloned());
            used.insert(family);
        }
        for label in grouping_labels(query) {
            assert!(
                labels_here.contains(&label),
                "groups by `{label}`, which none of its metrics has: {query}"
            );
        }
    }
    for needed in [
        "creditgate_requests_total",
        "creditgate_credits_debited_total",
        "creditgate_credits_refunded_total",
        "creditgate_ledger_duration_seconds",
        "creditgate_upstream_duration_seconds",
        "creditgate_open_connections",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard shows nothing of {needed}"
        );
    }
}
