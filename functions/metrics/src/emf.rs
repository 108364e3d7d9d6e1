//! On Lambda, the same figures as CloudWatch Embedded Metric Format: one JSON log line that
//! CloudWatch turns into metrics, with no agent and no API call.
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use serde_json::{Map, Value, json};

use crate::report::MetricsReport;

pub const NAMESPACE: &str = "fluxgate";

/// Whether this process runs on AWS Lambda.
pub fn on_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// The EMF document of `report` (one line of JSON).
pub fn render(report: &MetricsReport) -> Value {
    let by_status = &report.counts.by_status;
    let latency = &report.latency.latency;
    let mut figures: Vec<(&str, &str, f64)> = vec![
        ("EventsIngested", "Count", report.counts.total as f64),
        (
            "EventsPublished",
            "Count",
            (by_status.published + by_status.done + by_status.failed + by_status.dead) as f64,
        ),
        ("EventsDone", "Count", by_status.done as f64),
        ("EventsFailed", "Count", by_status.failed as f64),
        ("EventsDead", "Count", by_status.dead as f64),
        ("EventsPending", "Count", by_status.pending as f64),
        ("OutboxLag", "Seconds", report.lag_seconds),
        ("DoneLast1m", "Count", report.throughput.last_1m as f64),
        ("DoneLast5m", "Count", report.throughput.last_5m as f64),
        ("DoneLast15m", "Count", report.throughput.last_15m as f64),
    ];
    for (name, value) in [
        ("LatencyAvg", latency.avg_ms),
        ("LatencyP50", latency.p50_ms),
        ("LatencyP95", latency.p95_ms),
    ] {
        if let Some(ms) = value {
            figures.push((name, "Milliseconds", ms));
        }
    }
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": report.generated_at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[]],
                "Metrics": figures.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (name, _, value) in figures {
        line.insert(name.into(), json!(value));
    }
    Value::Object(line)
}

/// Writes the EMF line to stdout, which Lambda ships to CloudWatch Logs.
pub fn emit(report: &MetricsReport) {
    println!("{}", render(report));
}
