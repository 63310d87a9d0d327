//! Reading the TOML tree: one [`Section`] per table takes its keys by name,
//! typed, and reports every problem with its key path — wrong types, bad
//! durations, missing `${VAR}`s, and every key nobody asked for (unknown
//! keys are errors). Nothing stops at the first problem.

use std::net::SocketAddr;
use std::time::Duration;

use super::env::{substitute, Env};
use super::validate;
use super::ConfigIssue;

/// One table being read: takes keys by name and reports the rest as unknown.
pub(super) struct Section<'a> {
    /// The table's key path (`""` for the root, `upstreams.images`, `routes[2]`).
    pub path: String,
    pub table: toml::Table,
    pub issues: &'a mut Vec<ConfigIssue>,
    pub env: Env<'a>,
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Section<'a> {
    pub(super) fn issue(&mut self, key: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: join(&self.path, key),
            message: message.into(),
        });
    }

    fn type_name(value: &toml::Value) -> &'static str {
        value.type_str()
    }

    pub(super) fn take(&mut self, key: &str) -> Option<toml::Value> {
        self.table.remove(key)
    }

    pub(super) fn require<T>(&mut self, key: &str, value: Option<T>) -> Option<T> {
        if value.is_none() && !self.issues.iter().any(|i| i.key == join(&self.path, key)) {
            self.issue(key, "missing required key");
        }
        value
    }

    pub(super) fn string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            toml::Value::String(raw) => {
                let path = join(&self.path, key);
                match substitute(&raw, self.env) {
                    Ok(value) => Some(value),
                    Err(message) => {
                        self.issues.push(ConfigIssue { key: path, message });
                        None
                    }
                }
            }
            other => {
                let found = Self::type_name(&other);
                self.issue(key, format!("expected a string, found {found}"));
                None
            }
        }
    }

    pub(super) fn u64(&mut self, key: &str) -> Option<u64> {
        match self.take(key)? {
            toml::Value::Integer(n) if n >= 0 => Some(n as u64),
            toml::Value::Integer(_) => {
                self.issue(key, "expected a non-negative integer, found a negative one");
                None
            }
            other => {
                let found = Self::type_name(&other);
                self.issue(
                    key,
                    format!("expected a non-negative integer, found {found}"),
                );
                None
            }
        }
    }

    /// A number of credits: a non-negative integer at most 10^15 (see
    /// [`validate::credits`]).
    pub(super) fn credits(&mut self, key: &str) -> Option<u64> {
        let value = self.u64(key)?;
        match validate::credits(value) {
            Ok(value) => Some(value),
            Err(message) => {
                self.issue(key, message);
                None
            }
        }
    }

    /// A non-negative integer or float.
    pub(super) fn number(&mut self, key: &str) -> Option<f64> {
        match self.take(key)? {
            toml::Value::Integer(n) if n >= 0 => Some(n as f64),
            toml::Value::Float(f) if f.is_finite() && f >= 0.0 => Some(f),
            other => {
                let found = Self::type_name(&other);
                self.issue(
                    key,
                    format!("expected a non-negative number, found {found}"),
                );
                None
            }
        }
    }

    pub(super) fn bool(&mut self, key: &str) -> Option<bool> {
        match self.take(key)? {
            toml::Value::Boolean(b) => Some(b),
            other => {
                let found = Self::type_name(&other);
                self.issue(key, format!("expected true or false, found {found}"));
                None
            }
        }
    }

    pub(super) fn duration(&mut self, key: &str) -> Option<Duration> {
        let text = self.string(key)?;
        match humantime::parse_duration(&text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.issue(key, "must be greater than zero");
                None
            }
            Err(e) => {
                self.issue(
                    key,
                    format!(
                        "invalid duration `{text}` ({e}); use e.g. \"30d\", \"10s\", \"250ms\""
                    ),
                );
                None
            }
        }
    }

    pub(super) fn socket_addr(&mut self, key: &str) -> Option<SocketAddr> {
        let text = self.string(key)?;
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.issue(
                    key,
                    format!("invalid socket address `{text}`; use e.g. \"0.0.0.0:8080\""),
                );
                None
            }
        }
    }

    /// A nested table as its own section (`None` when absent or not a table).
    pub(super) fn table(&mut self, key: &str) -> Option<Section<'_>> {
        let value = self.take(key)?;
        let path = join(&self.path, key);
        match value {
            toml::Value::Table(table) => Some(Section {
                path,
                table,
                issues: self.issues,
                env: self.env,
            }),
            other => {
                let found = Self::type_name(&other);
                self.issues.push(ConfigIssue {
                    key: path,
                    message: format!("expected a table, found {found}"),
                });
                None
            }
        }
    }

    /// Reports every key nobody asked for.
    pub(super) fn finish(self) {
        for key in self.table.keys() {
            self.issues.push(ConfigIssue {
                key: join(&self.path, key),
                message: "unknown key".to_owned(),
            });
        }
    }
}

/// A TOML syntax error as one line: where, then what.
pub(super) fn toml_error_line(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("invalid TOML at line {line}, column {column}: {message}")
        }
        None => format!("invalid TOML: {message}"),
    }
}
