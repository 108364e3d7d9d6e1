//! `GET /metrics`: the report in the Prometheus/OpenMetrics text format, written by the
//! `prometheus-client` crate.
//!
//! The figures come from the database, not from counters in this process (a function
//! instance lives briefly and sees a fraction of the traffic). Counters are what only grows:
//! events ingested (outbox rows), events done (DONE is final), and events handed to the queue
//! that have not come back to PENDING. FAILED and DEAD are gauges: a replay lowers them,
//! and a counter that goes down would read to Prometheus as a restart.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use fluxgate::store::{LATENCY_BUCKETS_MS, OutboxStatus};

use crate::report::MetricsReport;

/// The media type `prometheus-client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric: Counter = Counter::default();
    metric.inc_by(value);
    registry.register(name, help, metric);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let metric = FloatGauge::default();
    metric.set(value);
    registry.register(name, help, metric);
}

/// The text exposition of `report`. Help texts carry no final full stop: the encoder adds one.
pub fn render(report: &MetricsReport) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("fluxgate");
    let by_status = &report.counts.by_status;
    counter(
        &mut registry,
        "events_ingested",
        "Events accepted and stored (outbox rows)",
        report.counts.total,
    );
    counter(
        &mut registry,
        "events_published",
        "Events handed to the queue and not back in PENDING (PUBLISHED, DONE, FAILED, DEAD)",
        by_status.published + by_status.done + by_status.failed + by_status.dead,
    );
    counter(
        &mut registry,
        "events_done",
        "Events loaded into the warehouse",
        by_status.done,
    );

    let statuses = Family::<Labels, Gauge>::default();
    for status in OutboxStatus::ALL {
        statuses
            .get_or_create(&vec![("status".to_owned(), status.as_str().to_owned())])
            .set(i64::try_from(by_status.get(status)).unwrap_or(i64::MAX));
    }
    registry.register(
        "outbox_events",
        "Outbox rows per status now (FAILED and DEAD included)",
        statuses,
    );
    gauge(
        &mut registry,
        "events_failed",
        "Events FAILED now (the queue delivers them again)",
        by_status.failed as f64,
    );
    gauge(
        &mut registry,
        "events_dead",
        "Events DEAD now (waiting for a replay)",
        by_status.dead as f64,
    );
    gauge(
        &mut registry,
        "outbox_lag_seconds",
        "Age of the oldest PENDING event",
        report.lag_seconds,
    );
    let latency = &report.latency.latency;
    let quantiles = Family::<Labels, FloatGauge>::default();
    for (quantile, value) in [
        ("0.5", latency.p50_ms),
        ("0.95", latency.p95_ms),
        ("0.99", latency.p99_ms),
    ] {
        if let Some(ms) = value {
            quantiles
                .get_or_create(&vec![("quantile".to_owned(), quantile.to_owned())])
                .set(ms / 1000.0);
        }
    }
    registry.register(
        "latency_seconds",
        "Receive-to-DONE latency (nearest-rank quantiles) over the latency window",
        quantiles,
    );
    gauge(
        &mut registry,
        "latency_avg_seconds",
        "Average receive-to-DONE latency over the latency window",
        latency.avg_ms.unwrap_or(0.0) / 1000.0,
    );
    // The window's distribution as histogram buckets (`le`, cumulative, in seconds), for
    // `histogram_quantile`. Gauges, not a counter histogram: they count the events of a
    // sliding window, so they go down as well as up (an OpenMetrics gaugehistogram, which
    // prometheus-client cannot write yet).
    let buckets = Family::<Labels, Gauge>::default();
    let mut cumulative: u64 = 0;
    for (i, in_bucket) in latency.histogram.iter().enumerate() {
        cumulative += in_bucket;
        let le = LATENCY_BUCKETS_MS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |ms| (ms / 1000.0).to_string());
        buckets
            .get_or_create(&vec![("le".to_owned(), le)])
            .set(i64::try_from(cumulative).unwrap_or(i64::MAX));
    }
    registry.register(
        "latency_window_seconds_bucket",
        "Events that reached DONE in the latency window with a receive-to-DONE latency at most `le` seconds",
        buckets,
    );
    gauge(
        &mut registry,
        "latency_window_seconds_count",
        "Events that reached DONE in the latency window",
        latency.completed as f64,
    );
    gauge(
        &mut registry,
        "latency_window_seconds_sum",
        "Sum of their receive-to-DONE latencies, in seconds",
        latency.avg_ms.unwrap_or(0.0) * latency.completed as f64 / 1000.0,
    );
    let throughput = Family::<Labels, Gauge>::default();
    for (window, done) in [
        ("1m", report.throughput.last_1m),
        ("5m", report.throughput.last_5m),
        ("15m", report.throughput.last_15m),
    ] {
        throughput
            .get_or_create(&vec![("window".to_owned(), window.to_owned())])
            .set(i64::try_from(done).unwrap_or(i64::MAX));
    }
    registry.register(
        "events_done_recent",
        "Events that reached DONE in the last 1, 5 and 15 minutes",
        throughput,
    );

    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}
