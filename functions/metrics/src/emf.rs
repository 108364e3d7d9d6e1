//! On Lambda, the report's figures as a CloudWatch Embedded Metric Format line
//! ([`fluxgate::emf`]), in the same words as the Prometheus text.

use fluxgate::emf::{self, Figure};
use serde_json::Value;

use crate::report::MetricsReport;

/// The figures of `report`, as CloudWatch metrics.
pub fn figures(report: &MetricsReport) -> Vec<Figure> {
    let by_status = &report.counts.by_status;
    let latency = &report.latency.latency;
    let mut figures = vec![
        Figure::new("EventsIngested", "Count", report.counts.total as f64),
        Figure::new(
            "EventsPublished",
            "Count",
            (by_status.published + by_status.done + by_status.failed + by_status.dead) as f64,
        ),
        Figure::new("EventsDone", "Count", by_status.done as f64),
        Figure::new("EventsFailed", "Count", by_status.failed as f64),
        Figure::new("EventsDead", "Count", by_status.dead as f64),
        Figure::new("EventsPending", "Count", by_status.pending as f64),
        Figure::new("OutboxLag", "Seconds", report.lag_seconds),
        Figure::new("DoneLast1m", "Count", report.throughput.last_1m as f64),
        Figure::new("DoneLast5m", "Count", report.throughput.last_5m as f64),
        Figure::new("DoneLast15m", "Count", report.throughput.last_15m as f64),
    ];
    for (name, value) in [
        ("LatencyAvg", latency.avg_ms),
        ("LatencyP50", latency.p50_ms),
        ("LatencyP95", latency.p95_ms),
        ("LatencyP99", latency.p99_ms),
    ] {
        if let Some(ms) = value {
            figures.push(Figure::new(name, "Milliseconds", ms));
        }
    }
    figures
}

/// The EMF document of `report` (one line of JSON), in the configured namespace.
pub fn render(report: &MetricsReport) -> Value {
    emf::line(&emf::namespace(), report.generated_at, &figures(report))
}
