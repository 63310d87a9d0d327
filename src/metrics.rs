//! Every metric name and label, in one place, rendered as Prometheus text.
//!
//! Labels are routes, outcomes (the static problem codes), ledger operations
//! and listeners — never account ids, keys or paths, so cardinality stays
//! bounded by the config.
//!
//! **Per-worker counters, summed at scrape.** Each data-plane worker writes
//! to its own shard (picked by the thread it runs on, see [`enter_worker`]);
//! other threads share shard 0. A shard is a block of relaxed atomics, so a
//! request takes no lock, allocates nothing and touches no cache line
//! another core writes. A route's counters are a [`RouteMetrics`] handle
//! registered when a config is loaded (kept across reloads under the
//! route's name, so its counts never go back); the request path reaches it
//! through its snapshot, by index. `render` adds the shards up. The cells
//! (a lock-free counter table, an atomic histogram) are in `metrics/cells.rs`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::ErrorKind;
use crate::ledger::LedgerOp;

mod cells;

use cells::{CounterTable, Histogram};

/// Upper bounds in seconds; upstream calls range from milliseconds (cached
/// answers) to minutes (video generation).
const UPSTREAM_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// A healthy ledger call takes well under a millisecond on a LAN.
const LEDGER_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

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
    ("creditgate_unconfirmed_debits_total", "counter", "Debits whose ledger call failed after it may have run (the request was answered as for an outage), by what voiding them found: voided (it had been recorded; refunded), absent, unresolved (the ledger stayed unreachable; see the error log)."),
    ("creditgate_alerts_queued_total", "counter", "Threshold alerts queued by this instance's debits (docs/alerts.md)."),
    ("creditgate_alerts_delivered_total", "counter", "Threshold alerts this instance delivered (the receiver answered 2xx)."),
    ("creditgate_alert_attempts_failed_total", "counter", "Delivery attempts that failed (non-2xx, timeout, connection error) and will be retried."),
    ("creditgate_alerts_failed_total", "counter", "Threshold alerts given up on after alerts.retry_for of failures (listed by GET /admin/v1/alerts?state=failed)."),
    ("creditgate_log_lines_dropped_total", "counter", "Log lines (access lines included) dropped because the log writer's queue was full; requests never wait for the log."),
];

const CLOSE_REASONS: &[&str] = &[
    "header_timeout",
    "idle_timeout",
    "write_stalled",
    "connection_limit",
];
const LISTENERS: [&str; 2] = ["data", "admin"];
const RELOAD_RESULTS: [&str; 2] = ["success", "error"];
const VOID_OUTCOMES: [&str; 3] = ["voided", "absent", "unresolved"];

thread_local! {
    /// This thread's shard: 0, or a data-plane worker's index + 1.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as data-plane worker `index`: its metrics go to
/// a shard of their own from now on.
pub fn enter_worker(index: usize) {
    SHARD.with(|shard| shard.set(index + 1));
}

/// Picks this thread's shard out of `shards` (shard 0 for other threads,
/// and for a metrics registry with fewer workers than the thread's index).
fn local<T>(shards: &[T]) -> &T {
    let index = SHARD.with(Cell::get);
    shards.get(index).unwrap_or(&shards[0])
}

/// How a request ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    UsageApi,
    ClientClosed,
    UpstreamAborted,
    /// The gateway answered with this problem.
    Problem(ErrorKind),
}

const PLAIN_OUTCOMES: usize = 4;

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::UsageApi => "usage_api",
            Outcome::ClientClosed => "client_closed",
            Outcome::UpstreamAborted => "upstream_aborted",
            Outcome::Problem(kind) => kind.code(),
        }
    }

    fn index(self) -> usize {
        match self {
            Outcome::Forwarded => 0,
            Outcome::UsageApi => 1,
            Outcome::ClientClosed => 2,
            Outcome::UpstreamAborted => 3,
            Outcome::Problem(kind) => PLAIN_OUTCOMES + kind.index(),
        }
    }

    fn from_index(index: usize) -> Option<Outcome> {
        Some(match index {
            0 => Outcome::Forwarded,
            1 => Outcome::UsageApi,
            2 => Outcome::ClientClosed,
            3 => Outcome::UpstreamAborted,
            _ => Outcome::Problem(*ErrorKind::ALL.get(index - PLAIN_OUTCOMES)?),
        })
    }
}

/// The instance's metrics: per-worker shards and the route registry.
pub struct Metrics {
    shards: Box<[Shard]>,
    /// Every route name ever loaded (locked at config load and at scrape).
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    /// Requests that matched no route (`route=""`).
    unrouted: Arc<RouteMetrics>,
    open_connections: [AtomicI64; 2],
    reloads: [AtomicU64; 2],
    unconfirmed_debits: [AtomicU64; 3],
    /// Alerts queued, delivered, attempts failed, given up on.
    alerts: [AtomicU64; 4],
    log_lines_dropped: Mutex<Option<Box<dyn Fn() -> u64 + Send + Sync>>>,
}

#[repr(align(128))]
#[derive(Default)]
struct Shard {
    ledger: [Histogram; LedgerOp::ALL.len()],
    ledger_errors: [AtomicU64; LedgerOp::ALL.len()],
    closed: [[AtomicU64; CLOSE_REASONS.len()]; 2],
    charge_work_in_flight: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(1)
    }
}

impl Metrics {
    /// Metrics for an instance with `workers` data-plane workers.
    pub fn new(workers: usize) -> Metrics {
        let shards = workers + 1;
        Metrics {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            routes: Mutex::new(BTreeMap::new()),
            unrouted: Arc::new(RouteMetrics::new("", shards)),
            open_connections: Default::default(),
            reloads: Default::default(),
            unconfirmed_debits: Default::default(),
            alerts: Default::default(),
            log_lines_dropped: Mutex::new(None),
        }
    }

    /// The handle of route `name` (registered at config load; the same
    /// handle for the same name across reloads).
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(RouteMetrics::new(name, self.shards.len())))
            .clone()
    }

    /// The handle for requests that matched no route.
    pub fn unrouted(&self) -> &Arc<RouteMetrics> {
        &self.unrouted
    }

    /// Where `creditgate_log_lines_dropped_total` is read from (the log
    /// writer's own count, set up by the command line).
    pub fn count_dropped_log_lines(&self, dropped: impl Fn() -> u64 + Send + Sync + 'static) {
        *self
            .log_lines_dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Box::new(dropped));
    }

    pub fn ledger_call(&self, op: LedgerOp, elapsed: Duration, ok: bool) {
        let shard = local(&self.shards);
        let index = op.index();
        shard.ledger[index].observe(LEDGER_BUCKETS, elapsed);
        if !ok {
            shard.ledger_errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn reload(&self, result: &'static str) {
        let index = usize::from(result != RELOAD_RESULTS[0]);
        self.reloads[index].fetch_add(1, Ordering::Relaxed);
    }

    /// One debit whose call failed, voided in the background; `outcome` is
    /// `voided`, `absent` or `unresolved`.
    pub fn unconfirmed_debit(&self, outcome: &'static str) {
        if let Some(index) = VOID_OUTCOMES.iter().position(|o| *o == outcome) {
            self.unconfirmed_debits[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `n` alerts queued by a debit of this instance.
    pub fn alerts_queued(&self, n: u64) {
        self.alerts[0].fetch_add(n, Ordering::Relaxed);
    }

    pub fn alert_delivered(&self) {
        self.alerts[1].fetch_add(1, Ordering::Relaxed);
    }

    pub fn alert_attempt_failed(&self) {
        self.alerts[2].fetch_add(1, Ordering::Relaxed);
    }

    pub fn alert_given_up(&self) {
        self.alerts[3].fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_opened(&self, admin: bool) {
        self.open_connections[usize::from(admin)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self, admin: bool) {
        self.open_connections[usize::from(admin)].fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection closed by one of its timers (`reason` is
    /// `header_timeout`, `idle_timeout` or `write_stalled`) or refused at
    /// the connection cap (`connection_limit`).
    pub fn connection_closed_by(&self, admin: bool, reason: &'static str) {
        let Some(index) = CLOSE_REASONS.iter().position(|known| *known == reason) else {
            debug_assert!(false, "unknown close reason {reason}");
            return;
        };
        local(&self.shards).closed[usize::from(admin)][index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn charge_work_started(&self) {
        local(&self.shards)
            .charge_work_in_flight
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn charge_work_ended(&self) {
        local(&self.shards)
            .charge_work_in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut routes: Vec<Arc<RouteMetrics>> = self
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        routes.insert(0, self.unrouted.clone());
        let mut out = String::new();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            self.render_family(&mut out, name, &routes);
        }
        out
    }

    fn render_family(&self, out: &mut String, name: &str, routes: &[Arc<RouteMetrics>]) {
        let route_counter = |out: &mut String, read: fn(&RouteShard) -> &AtomicU64| {
            for route in routes {
                let value: u64 = route
                    .shards
                    .iter()
                    .map(|s| read(s).load(Ordering::Relaxed))
                    .sum();
                if value > 0 {
                    let _ = writeln!(out, "{name}{{route=\"{}\"}} {value}", escape(&route.name));
                }
            }
        };
        match name {
            "creditgate_requests_total" => {
                for route in routes {
                    for ((outcome, status), value) in route.requests() {
                        let _ = writeln!(
                            out,
                            "{name}{{route=\"{}\",outcome=\"{}\",status=\"{status}\"}} {value}",
                            escape(&route.name),
                            outcome.label()
                        );
                    }
                }
            }
            "creditgate_rejections_total" => {
                let mut reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
                for route in routes {
                    for ((outcome, _), value) in route.requests() {
                        if let Outcome::Problem(kind) = outcome {
                            *reasons.entry(kind.code()).or_default() += value;
                        }
                    }
                }
                for (reason, value) in reasons {
                    let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {value}");
                }
            }
            "creditgate_credits_debited_total" => route_counter(out, |s| &s.debited),
            "creditgate_credits_refunded_total" => route_counter(out, |s| &s.refunded),
            "creditgate_credits_charged_total" => route_counter(out, |s| &s.charged),
            "creditgate_refund_failures_total" => route_counter(out, |s| &s.refund_failures),
            "creditgate_unmetered_requests_total" => route_counter(out, |s| &s.unmetered),
            "creditgate_upstream_duration_seconds" => {
                for route in routes {
                    let label = format!("route=\"{}\"", escape(&route.name));
                    let sum = Histogram::sum_of(route.shards.iter().map(|s| &s.upstream));
                    sum.render(out, name, &label, UPSTREAM_BUCKETS);
                }
            }
            "creditgate_ledger_duration_seconds" => {
                for op in LedgerOp::ALL {
                    let label = format!("op=\"{}\"", op.label());
                    let sum = Histogram::sum_of(self.shards.iter().map(|s| &s.ledger[op.index()]));
                    sum.render(out, name, &label, LEDGER_BUCKETS);
                }
            }
            "creditgate_ledger_errors_total" => {
                for op in LedgerOp::ALL {
                    let value: u64 = self
                        .shards
                        .iter()
                        .map(|s| s.ledger_errors[op.index()].load(Ordering::Relaxed))
                        .sum();
                    if value > 0 {
                        let _ = writeln!(out, "{name}{{op=\"{}\"}} {value}", op.label());
                    }
                }
            }
            "creditgate_unconfirmed_debits_total" => {
                for (outcome, count) in VOID_OUTCOMES.iter().zip(&self.unconfirmed_debits) {
                    let value = count.load(Ordering::Relaxed);
                    if value > 0 {
                        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {value}");
                    }
                }
            }
            "creditgate_config_reloads_total" => {
                for (result, count) in RELOAD_RESULTS.iter().zip(&self.reloads) {
                    let value = count.load(Ordering::Relaxed);
                    if value > 0 {
                        let _ = writeln!(out, "{name}{{result=\"{result}\"}} {value}");
                    }
                }
            }
            "creditgate_alerts_queued_total"
            | "creditgate_alerts_delivered_total"
            | "creditgate_alert_attempts_failed_total"
            | "creditgate_alerts_failed_total" => {
                let index = match name {
                    "creditgate_alerts_queued_total" => 0,
                    "creditgate_alerts_delivered_total" => 1,
                    "creditgate_alert_attempts_failed_total" => 2,
                    _ => 3,
                };
                let value = self.alerts[index].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name} {value}");
            }
            "creditgate_open_connections" => {
                for (listener, gauge) in LISTENERS.iter().zip(&self.open_connections) {
                    let value = gauge.load(Ordering::Relaxed);
                    let _ = writeln!(out, "{name}{{listener=\"{listener}\"}} {value}");
                }
            }
            "creditgate_connections_closed_total" => {
                for (index, listener) in LISTENERS.iter().enumerate() {
                    for (reason_index, reason) in CLOSE_REASONS.iter().enumerate() {
                        let value: u64 = self
                            .shards
                            .iter()
                            .map(|s| s.closed[index][reason_index].load(Ordering::Relaxed))
                            .sum();
                        if value > 0 {
                            let _ = writeln!(
                                out,
                                "{name}{{listener=\"{listener}\",reason=\"{reason}\"}} {value}"
                            );
                        }
                    }
                }
            }
            "creditgate_charge_work_in_flight" => {
                let value: i64 = self
                    .shards
                    .iter()
                    .map(|s| s.charge_work_in_flight.load(Ordering::Relaxed))
                    .sum();
                let _ = writeln!(out, "{name} {value}");
            }
            "creditgate_log_lines_dropped_total" => {
                let dropped = self
                    .log_lines_dropped
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map_or(0, |read| read());
                let _ = writeln!(out, "{name} {dropped}");
            }
            _ => {}
        }
    }
}

/// One route's counters, one shard per worker. Registered at config load;
/// the request path reaches it through its snapshot.
pub struct RouteMetrics {
    name: Arc<str>,
    shards: Box<[RouteShard]>,
}

#[repr(align(128))]
#[derive(Default)]
struct RouteShard {
    requests: CounterTable,
    debited: AtomicU64,
    refunded: AtomicU64,
    charged: AtomicU64,
    unmetered: AtomicU64,
    refund_failures: AtomicU64,
    upstream: Histogram,
}

impl RouteMetrics {
    fn new(name: &str, shards: usize) -> RouteMetrics {
        RouteMetrics {
            name: Arc::from(name),
            shards: (0..shards).map(|_| RouteShard::default()).collect(),
        }
    }

    /// The route's name (empty for requests that matched no route).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn shard(&self) -> &RouteShard {
        local(&self.shards)
    }

    /// One finished request.
    pub fn request(&self, outcome: Outcome, status: u16) {
        let key = (outcome.index() as u32) << 16 | u32::from(status);
        self.shard().requests.add(key);
    }

    pub fn credits_debited(&self, credits: u64) {
        self.shard().debited.fetch_add(credits, Ordering::Relaxed);
    }

    pub fn credits_refunded(&self, credits: u64) {
        self.shard().refunded.fetch_add(credits, Ordering::Relaxed);
    }

    pub fn credits_charged(&self, credits: u64) {
        self.shard().charged.fetch_add(credits, Ordering::Relaxed);
    }

    pub fn refund_failed(&self) {
        self.shard().refund_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unmetered(&self) {
        self.shard().unmetered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upstream_latency(&self, elapsed: Duration) {
        self.shard().upstream.observe(UPSTREAM_BUCKETS, elapsed);
    }

    /// (outcome, status) → count over every shard, in label order.
    fn requests(&self) -> BTreeMap<(Outcome, u16), u64> {
        let mut sums: BTreeMap<(usize, u16), u64> = BTreeMap::new();
        for shard in self.shards.iter() {
            shard.requests.for_each(|key, count| {
                *sums
                    .entry(((key >> 16) as usize, (key & 0xffff) as u16))
                    .or_default() += count;
            });
        }
        let mut labelled = BTreeMap::new();
        for ((outcome, status), count) in sums {
            if let Some(outcome) = Outcome::from_index(outcome) {
                *labelled.entry((outcome, status)).or_default() += count;
            }
        }
        labelled
    }
}

impl PartialOrd for Outcome {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Outcome {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.label().cmp(other.label())
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
        let image = metrics.route("image-generate");
        image.request(Outcome::Forwarded, 200);
        image.request(Outcome::Problem(ErrorKind::CreditsExhausted), 429);
        metrics.unrouted().request(Outcome::UsageApi, 200);
        image.credits_debited(10);
        image.upstream_latency(Duration::from_millis(20));
        image.upstream_latency(Duration::from_secs(200));
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

    #[test]
    fn worker_shards_are_summed_at_scrape() {
        let metrics = Arc::new(Metrics::new(2));
        let paid = metrics.route("paid");
        paid.request(Outcome::Forwarded, 200);
        let threads: Vec<_> = (0..2)
            .map(|worker| {
                let (metrics, paid) = (metrics.clone(), paid.clone());
                std::thread::spawn(move || {
                    enter_worker(worker);
                    for _ in 0..1000 {
                        paid.request(Outcome::Forwarded, 200);
                        paid.credits_charged(2);
                        metrics.ledger_call(LedgerOp::Debit, Duration::from_micros(300), true);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = metrics.render();
        assert!(text.contains(
            "creditgate_requests_total{route=\"paid\",outcome=\"forwarded\",status=\"200\"} 2001"
        ));
        assert!(text.contains("creditgate_credits_charged_total{route=\"paid\"} 4000"));
        assert!(text.contains("creditgate_ledger_duration_seconds_count{op=\"debit\"} 2000"));
        assert!(
            Arc::ptr_eq(&paid, &metrics.route("paid")),
            "one handle per name"
        );
    }

    #[test]
    fn a_full_table_still_counts_every_request() {
        let table = CounterTable::default();
        for key in 0..100u32 {
            table.add(key);
            table.add(key);
        }
        let mut seen = BTreeMap::new();
        table.for_each(|key, count| {
            seen.insert(key, count);
        });
        assert_eq!(seen.len(), 100);
        assert!(seen.values().all(|count| *count == 2));
    }

    #[test]
    fn every_outcome_round_trips_through_its_index() {
        for kind in ErrorKind::ALL {
            let outcome = Outcome::Problem(*kind);
            assert_eq!(Outcome::from_index(outcome.index()), Some(outcome));
        }
        for index in 0..PLAIN_OUTCOMES {
            assert_eq!(Outcome::from_index(index).map(Outcome::index), Some(index));
        }
    }
}
