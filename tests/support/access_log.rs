//! The gateway's access lines (`creditgate::access`), as logged by the real
//! binary with `--log-format json`.

use std::collections::BTreeMap;

use serde_json::Value;

/// Every access line in `logs`, in order.
pub fn access_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "creditgate::access")
        .collect()
}

/// Access lines grouped by request id.
pub fn by_request_id(lines: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in lines {
        let id = line["request_id"].as_str().unwrap_or_default().to_owned();
        grouped.entry(id).or_default().push(line.clone());
    }
    grouped
}
