//! `docs/openapi.json` as an oracle for what the gateway answers.
//!
//! [`check`] judges one response of the usage API (data listener) or of the
//! admin listener against the document: the operation must be documented
//! for its status, the `Content-Type` must be one the document names, the
//! required headers must be there and match their schemas, and a JSON body
//! must validate against the operation's schema (JSON Schema 2020-12,
//! formats checked, closed objects closed). An answer to an operation the
//! document does not have must be a refusal (a problem body, or a bare 405).
//!
//! Clients made by [`super::http::TestClient::checking`] — the clients of
//! every in-process test gateway — run it on every response from those
//! listeners, so every usage and admin answer any test receives is checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};

use jsonschema::Validator;
use serde_json::{json, Value};

use super::http::Response;

/// The document, as the binary embeds it.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

pub static SPEC: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON"));

pub const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Data,
    Admin,
}

impl Listener {
    pub fn name(self) -> &'static str {
        match self {
            Listener::Data => "data",
            Listener::Admin => "admin",
        }
    }
}

/// Which listener of one gateway a client's request went to.
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    pub data: SocketAddr,
    pub admin: SocketAddr,
}

impl Listeners {
    pub fn of(&self, uri: &http::Uri) -> Option<Listener> {
        let authority = uri.authority()?.as_str();
        if authority == self.data.to_string() {
            Some(Listener::Data)
        } else if authority == self.admin.to_string() {
            Some(Listener::Admin)
        } else {
            None
        }
    }
}

/// Every documented (METHOD, path template, listener).
pub fn operations() -> Vec<(String, String, Listener)> {
    let mut all = Vec::new();
    for (path, item) in SPEC["paths"].as_object().expect("paths") {
        let listener = match item["x-listener"].as_str() {
            Some("data") => Listener::Data,
            Some("admin") => Listener::Admin,
            other => panic!("{path}: x-listener is {other:?}"),
        };
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) {
                all.push((method.to_uppercase(), path.clone(), listener));
            }
        }
    }
    all
}

/// The documented template `path` fits on `listener`, with the operation
/// for `method` if there is one.
fn find<'s>(listener: Listener, method: &str, path: &str) -> Option<(&'s str, Option<&'s Value>)> {
    let paths = SPEC["paths"].as_object().expect("paths");
    paths.iter().find_map(|(template, item)| {
        if item["x-listener"] != listener.name()
            || creditgate::api::endpoints::match_template(template, path).is_none()
        {
            return None;
        }
        Some((
            template.as_str(),
            item.get(method.to_ascii_lowercase().as_str()),
        ))
    })
}

/// A validator for the schema at `pointer` (a JSON pointer into the
/// document), compiled once. The schema is validated as part of the whole
/// document, so its `$ref`s to `#/components/…` resolve.
pub fn validator(pointer: &str) -> Arc<Validator> {
    static CACHE: LazyLock<Mutex<HashMap<String, Arc<Validator>>>> =
        LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pointer.to_owned())
        .or_insert_with(|| {
            assert!(
                SPEC.pointer(pointer).is_some(),
                "no schema at {pointer} in docs/openapi.json"
            );
            let mut root = SPEC.clone();
            root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
            // A JSON pointer in a URI fragment: `{` and `}` (of path
            // templates) percent-encoded.
            let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
            root["$ref"] = json!(format!("#{fragment}"));
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&root)
                .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}"));
            Arc::new(validator)
        })
        .clone()
}

/// Every way `instance` breaks the schema at `pointer`, one per line.
pub fn violations(pointer: &str, instance: &Value) -> Vec<String> {
    let validator = validator(pointer);
    validator
        .iter_errors(instance)
        .map(|error| format!("at `{}`: {error}", error.instance_path()))
        .collect()
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The media type without parameters, lower-cased.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Checks `response` to `method path` on `listener` against the document.
/// `Ok` also for what the document does not describe: data-listener
/// answers outside the usage API (the priced routes).
pub fn check(
    listener: Listener,
    method: &http::Method,
    path: &str,
    response: &Response,
) -> Result<(), String> {
    let path = match listener {
        // The data plane answers for the normalised path.
        Listener::Data => match creditgate::path::normalize(path) {
            Ok(normal) if creditgate::api::usage::is_usage_path(&normal) => normal,
            _ => return Ok(()),
        },
        Listener::Admin => path.to_owned(),
    };
    let operation = find(listener, method.as_str(), &path);
    let Some((template, Some(operation))) = operation else {
        return check_refusal(method, response);
    };
    let status = response.status.to_string();
    let pointer = format!(
        "/paths/{}/{}/responses/{status}",
        escape(template),
        method.as_str().to_ascii_lowercase()
    );
    let mut documented = operation["responses"]
        .get(&status)
        .ok_or_else(|| format!("status {status} is not documented"))?
        .clone();
    let mut pointer = pointer;
    if let Some(target) = documented.get("$ref").and_then(Value::as_str) {
        pointer = target.trim_start_matches('#').to_owned();
        documented = SPEC
            .pointer(&pointer)
            .ok_or_else(|| format!("dangling {target}"))?
            .clone();
    }
    check_headers(&documented, response)?;
    let Some(content) = documented.get("content").and_then(Value::as_object) else {
        return if response.body.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "a body where the document says none: {}",
                response.text()
            ))
        };
    };
    let sent = response.header("content-type").ok_or("no Content-Type")?;
    let (media, _) = content
        .iter()
        .find(|(media, _)| essence(media) == essence(sent))
        .ok_or_else(|| {
            format!(
                "Content-Type `{sent}`; the document has {:?}",
                content.keys()
            )
        })?;
    if method == http::Method::HEAD {
        return Ok(());
    }
    if !essence(media).ends_with("json") {
        return Ok(());
    }
    let body: Value = serde_json::from_slice(&response.body)
        .map_err(|e| format!("not JSON ({e}): {}", response.text()))?;
    let schema = format!("{pointer}/content/{}/schema", escape(media));
    let broken = violations(&schema, &body);
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the body breaks {schema}:\n  {}\nbody: {body}",
            broken.join("\n  ")
        ))
    }
}

fn check_headers(documented: &Value, response: &Response) -> Result<(), String> {
    let Some(headers) = documented.get("headers").and_then(Value::as_object) else {
        return Ok(());
    };
    for (name, header) in headers {
        let header = match header.get("$ref").and_then(Value::as_str) {
            Some(target) => SPEC
                .pointer(target.trim_start_matches('#'))
                .ok_or_else(|| format!("dangling {target}"))?,
            None => header,
        };
        let Some(value) = response.header(name) else {
            if header["required"] == true {
                return Err(format!("no `{name}` header"));
            }
            continue;
        };
        let schema = &header["schema"];
        let instance = match schema["type"].as_str() {
            Some("integer") => value
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("`{name}: {value}` is not an integer"))?,
            _ => Value::String(value.to_owned()),
        };
        let compiled = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(schema)
            .map_err(|e| format!("the `{name}` header's schema: {e}"))?;
        if !compiled.is_valid(&instance) {
            return Err(format!("`{name}: {value}` breaks {schema}"));
        }
    }
    Ok(())
}

/// An answer to an operation the document does not have is a refusal: a
/// problem body, or a bare 405.
fn check_refusal(method: &http::Method, response: &Response) -> Result<(), String> {
    if response.status < 400 {
        return Err(format!(
            "{} for an operation docs/openapi.json does not describe",
            response.status
        ));
    }
    // A HEAD answer has no body to judge.
    if method == http::Method::HEAD || (response.status == 405 && response.body.is_empty()) {
        return Ok(());
    }
    match response.header("content-type") {
        Some("application/problem+json") => {}
        other => return Err(format!("a refusal with Content-Type {other:?}")),
    }
    let body: Value = serde_json::from_slice(&response.body)
        .map_err(|e| format!("not JSON ({e}): {}", response.text()))?;
    let broken = violations("/components/schemas/Problem", &body);
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the refusal is not a problem:\n  {}\nbody: {body}",
            broken.join("\n  ")
        ))
    }
}
