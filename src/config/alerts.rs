//! The `[alerts]` section: where threshold alerts are sent, the secret that
//! signs them, and the thresholds (docs/alerts.md, docs/configuration.md).

use std::time::Duration;

use http::Uri;

use super::reader::Section;
use super::AlertsConfig;

/// Thresholds are kept in millionths of the allowance (an exact integer the
/// ledger scripts compute with); a threshold is given to at most six decimals.
pub const PPM: u32 = 1_000_000;

pub(super) fn read_alerts(section: Option<Section<'_>>) -> Option<AlertsConfig> {
    let mut s = section?;
    let url = s.string("url");
    let url = s.require("url", url).and_then(|url| match parse_url(&url) {
        Ok(uri) => Some(uri),
        Err(message) => {
            s.issue("url", message);
            None
        }
    });
    let secret = s.string("secret");
    let secret = s.require("secret", secret).filter(|secret| {
        if secret.is_empty() {
            s.issue(
                "secret",
                "must not be empty (receivers verify the signature with it)",
            );
        }
        !secret.is_empty()
    });
    let thresholds = match s.take("thresholds") {
        None => Some(vec![800_000, 950_000, PPM]),
        Some(value) => read_thresholds(&mut s, value),
    };
    let timeout = s.duration("timeout").unwrap_or(Duration::from_secs(10));
    let retry_base = s.duration("retry_base").unwrap_or(Duration::from_secs(1));
    let retry_for = s
        .duration("retry_for")
        .unwrap_or(Duration::from_secs(24 * 3600));
    s.finish();
    Some(AlertsConfig {
        url: url?,
        secret: secret?,
        thresholds: thresholds?,
        timeout,
        retry_base,
        retry_for,
    })
}

fn parse_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|e| {
        format!("invalid URL ({e}); use e.g. \"https://plugin.example/hooks/credits\"")
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must be an http:// or https:// URL".to_owned()),
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err("must name a host".to_owned());
    }
    Ok(uri)
}

/// Fractions of the allowance in `(0, 1]`, ascending, without repeats.
fn read_thresholds(s: &mut Section<'_>, value: toml::Value) -> Option<Vec<u32>> {
    let toml::Value::Array(items) = value else {
        s.issue(
            "thresholds",
            format!("expected an array of fractions, found {}", value.type_str()),
        );
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (index, item) in items.iter().enumerate() {
        let key = format!("thresholds[{index}]");
        let fraction = match item {
            toml::Value::Float(f) => *f,
            toml::Value::Integer(n) => *n as f64,
            other => {
                s.issue(
                    &key,
                    format!("expected a number, found {}", other.type_str()),
                );
                ok = false;
                continue;
            }
        };
        if !(fraction > 0.0 && fraction <= 1.0) {
            s.issue(
                &key,
                "must be a fraction of the allowance above 0 and at most 1 (e.g. 0.8)",
            );
            ok = false;
            continue;
        }
        let ppm = (fraction * f64::from(PPM)).round();
        if (ppm / f64::from(PPM) - fraction).abs() > 1e-12 || ppm < 1.0 {
            s.issue(&key, "at most six decimals");
            ok = false;
            continue;
        }
        let ppm = ppm as u32;
        if let Some(&last) = out.last() {
            if ppm <= last {
                s.issue(&key, "thresholds must be in ascending order, each once");
                ok = false;
                continue;
            }
        }
        out.push(ppm);
    }
    if items.is_empty() {
        s.issue("thresholds", "must list at least one threshold");
        ok = false;
    }
    ok.then_some(out)
}
