//! Every metric name and label, in one place, rendered as Prometheus text.
//!
//! Labels are routes, outcomes (the static problem codes), ledger operations
//! and listeners — never account ids, keys or paths, so cardinality stays
//! bounded by the config.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds in seconds; upstream calls range from milliseconds (cached
/// answers) to minutes (video generation).
const UPSTREAM_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// A healthy ledger call takes well under a millisecond on a LAN.
const LEDGER_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

type Key = (&'static str, Vec<(&'static str, String)>);

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<Key, u64>,
    histograms: BTreeMap<Key, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
    open_data_connections: AtomicI64,
    open_admin_connections: AtomicI64,
    charge_work_in_flight: AtomicI64,
}

const HELP: &[(&str, &str, &str)] = &[
    ("creditgate_requests_total", "counter", "Data-plane requests by route, outcome and status, counted once when the request ends (outcome: forwarded, usage_api, client_closed or a problem code)."),
    ("creditgate_rejections_total", "counter", "Requests the gateway answered with a problem, by reason (the problem code)."),
    ("creditgate_credits_debited_total", "counter", "Credits taken by debits at admission (reservations included), by route."),
    ("creditgate_credits_refunded_total", "counter", "Credits given back by refunds (upstream failures, requests that never reached the upstream), by route."),
    ("creditgate_credits_charged_total", "counter", "Credits finally charged (after refunds and settlements), by route."),
    ("creditgate_refund_failures_total", "counter", "Refunds that still failed after every retry (the debit stands; see the error log), by route."),
    ("creditgate_unmetered_requests_total", "counter", "Requests forwarded without a debit because the ledger was unreachable (on_unavailable = allow)."),
    ("creditgate_upstream_duration_seconds", "histogram", "Time from forwarding to the upstream's response head."),
    ("creditgate_ledger_duration_seconds", "histogram", "Ledger call latency by operation."),
    ("creditgate_ledger_errors_total", "counter", "Failed ledger calls by operation."),
    ("creditgate_config_reloads_total", "counter", "Config reloads by result."),
    ("creditgate_open_connections", "gauge", "Open client connections by listener."),
    ("creditgate_connections_closed_total", "counter", "Connections the gateway closed itself, by listener and reason (header_timeout, idle_timeout, write_stalled, connection_limit)."),
    ("creditgate_charge_work_in_flight", "gauge", "Exchanges, refunds and settlements in flight that hold a request's money (shutdown waits for them)."),
];

impl Metrics {
    /// One finished request. `rejection`: the gateway answered it with a
    /// problem (`outcome` is then its code).
    pub fn request(&self, route: &str, outcome: &'static str, status: u16, rejection: bool) {
        let mut registry = self.lock();
        registry.add(
            "creditgate_requests_total",
            vec![
                ("route", route.to_owned()),
                ("outcome", outcome.to_owned()),
                ("status", status.to_string()),
            ],
            1,
        );
        if rejection {
            registry.add(
                "creditgate_rejections_total",
                vec![("reason", outcome.to_owned())],
                1,
            );
        }
    }

    pub fn credits_debited(&self, route: &str, credits: u64) {
        self.lock().add(
            "creditgate_credits_debited_total",
            vec![("route", route.to_owned())],
            credits,
        );
    }

    pub fn credits_refunded(&self, route: &str, credits: u64) {
        self.lock().add(
            "creditgate_credits_refunded_total",
            vec![("route", route.to_owned())],
            credits,
        );
    }

    pub fn credits_charged(&self, route: &str, credits: u64) {
        self.lock().add(
            "creditgate_credits_charged_total",
            vec![("route", route.to_owned())],
            credits,
        );
    }

    pub fn refund_failed(&self, route: &str) {
        self.lock().add(
            "creditgate_refund_failures_total",
            vec![("route", route.to_owned())],
            1,
        );
    }

    pub fn unmetered(&self, route: &str) {
        self.lock().add(
            "creditgate_unmetered_requests_total",
            vec![("route", route.to_owned())],
            1,
        );
    }

    pub fn upstream_latency(&self, route: &str, elapsed: Duration) {
        self.lock().observe(
            "creditgate_upstream_duration_seconds",
            vec![("route", route.to_owned())],
            UPSTREAM_BUCKETS,
            elapsed,
        );
    }

    pub fn ledger_call(&self, operation: &'static str, elapsed: Duration, ok: bool) {
        let mut registry = self.lock();
        registry.observe(
            "creditgate_ledger_duration_seconds",
            vec![("op", operation.to_owned())],
            LEDGER_BUCKETS,
            elapsed,
        );
        if !ok {
            registry.add(
                "creditgate_ledger_errors_total",
                vec![("op", operation.to_owned())],
                1,
            );
        }
    }

    pub fn reload(&self, result: &'static str) {
        self.lock().add(
            "creditgate_config_reloads_total",
            vec![("result", result.to_owned())],
            1,
        );
    }

    pub fn connection_opened(&self, admin: bool) {
        self.gauge(admin).fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self, admin: bool) {
        self.gauge(admin).fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection closed by one of its timers (`reason` is
    /// `header_timeout`, `idle_timeout` or `write_stalled`) or refused at
    /// the connection cap (`connection_limit`).
    pub fn connection_closed_by(&self, admin: bool, reason: &'static str) {
        let listener = if admin { "admin" } else { "data" };
        self.lock().add(
            "creditgate_connections_closed_total",
            vec![
                ("listener", listener.to_owned()),
                ("reason", reason.to_owned()),
            ],
            1,
        );
    }

    pub fn charge_work_started(&self) {
        self.charge_work_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn charge_work_ended(&self) {
        self.charge_work_in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn gauge(&self, admin: bool) -> &AtomicI64 {
        if admin {
            &self.open_admin_connections
        } else {
            &self.open_data_connections
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let registry = self.lock();
        let mut out = String::new();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            if *name == "creditgate_open_connections" {
                for (listener, gauge) in [
                    ("data", &self.open_data_connections),
                    ("admin", &self.open_admin_connections),
                ] {
                    let _ = writeln!(
                        out,
                        "{name}{{listener=\"{listener}\"}} {}",
                        gauge.load(Ordering::Relaxed)
                    );
                }
            }
            if *name == "creditgate_charge_work_in_flight" {
                let _ = writeln!(
                    out,
                    "{name} {}",
                    self.charge_work_in_flight.load(Ordering::Relaxed)
                );
            }
            for ((metric, labels), value) in &registry.counters {
                if metric == name {
                    let _ = writeln!(out, "{name}{} {value}", render_labels(labels, None));
                }
            }
            for ((metric, labels), histogram) in &registry.histograms {
                if metric != name {
                    continue;
                }
                let mut cumulative = 0;
                for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
                    cumulative += count;
                    let le = bound.to_string();
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {cumulative}",
                        render_labels(labels, Some(&le))
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    render_labels(labels, Some("+Inf")),
                    histogram.count
                );
                let _ = writeln!(
                    out,
                    "{name}_sum{} {}",
                    render_labels(labels, None),
                    histogram.sum
                );
                let _ = writeln!(
                    out,
                    "{name}_count{} {}",
                    render_labels(labels, None),
                    histogram.count
                );
            }
        }
        out
    }
}

impl Registry {
    fn add(&mut self, name: &'static str, labels: Vec<(&'static str, String)>, value: u64) {
        *self.counters.entry((name, labels)).or_default() += value;
    }

    fn observe(
        &mut self,
        name: &'static str,
        labels: Vec<(&'static str, String)>,
        bounds: &'static [f64],
        elapsed: Duration,
    ) {
        let histogram = self
            .histograms
            .entry((name, labels))
            .or_insert_with(|| Histogram {
                bounds,
                counts: vec![0; bounds.len()],
                sum: 0.0,
                count: 0,
            });
        let seconds = elapsed.as_secs_f64();
        if let Some(slot) = histogram.bounds.iter().position(|bound| seconds <= *bound) {
            histogram.counts[slot] += 1;
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }
}

fn render_labels(labels: &[(&'static str, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let metrics = Metrics::default();
        metrics.request("image-generate", "forwarded", 200, false);
        metrics.request("image-generate", "credits_exhausted", 429, true);
        metrics.request("", "usage_api", 200, false);
        metrics.credits_debited("image-generate", 10);
        metrics.upstream_latency("image-generate", Duration::from_millis(20));
        metrics.upstream_latency("image-generate", Duration::from_secs(200));
        let text = metrics.render();
        assert!(text.contains(
            "creditgate_requests_total{route=\"image-generate\",outcome=\"forwarded\",status=\"200\"} 1"
        ));
        assert!(text.contains("creditgate_rejections_total{reason=\"credits_exhausted\"} 1"));
        assert!(!text.contains("reason=\"usage_api\""), "{text}");
        assert!(text.contains("creditgate_credits_debited_total{route=\"image-generate\"} 10"));
        assert!(text.contains(
            "creditgate_upstream_duration_seconds_bucket{route=\"image-generate\",le=\"0.025\"} 1"
        ));
        assert!(text.contains(
            "creditgate_upstream_duration_seconds_bucket{route=\"image-generate\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("creditgate_open_connections{listener=\"data\"} 0"));
    }

    #[test]
    fn counts_connections_closed_by_listener_and_reason() {
        let metrics = Metrics::default();
        metrics.connection_closed_by(false, "header_timeout");
        metrics.connection_closed_by(false, "header_timeout");
        metrics.connection_closed_by(true, "idle_timeout");
        let text = metrics.render();
        assert!(text.contains("# TYPE creditgate_connections_closed_total counter"));
        assert!(text.contains(
            "creditgate_connections_closed_total{listener=\"data\",reason=\"header_timeout\"} 2"
        ));
        assert!(text.contains(
            "creditgate_connections_closed_total{listener=\"admin\",reason=\"idle_timeout\"} 1"
        ));
    }
}
