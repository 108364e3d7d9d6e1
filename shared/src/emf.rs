//! CloudWatch Embedded Metric Format: a JSON log line that CloudWatch Logs turns into metrics,
//! with no agent and no API call — what a Lambda function writes to stdout is enough.
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The namespace of fluxgate's metrics; a deployment sets its own (the SAM template uses
/// `fluxgate/<stack>`), so two stacks in one account keep their alarms apart.
pub const NAMESPACE_ENV: &str = "FLUXGATE_METRICS_NAMESPACE";
pub const DEFAULT_NAMESPACE: &str = "fluxgate";

/// One figure of a metric line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    pub name: &'static str,
    /// A CloudWatch unit: `Count`, `Seconds`, `Milliseconds`, …
    pub unit: &'static str,
    pub value: f64,
}

impl Figure {
    pub fn new(name: &'static str, unit: &'static str, value: f64) -> Self {
        Self { name, unit, value }
    }
}

pub fn namespace() -> String {
    std::env::var(NAMESPACE_ENV)
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// The EMF document for `figures` at `at`, in `namespace`, without dimensions (one series per
/// metric name and namespace).
pub fn line(namespace: &str, at: DateTime<Utc>, figures: &[Figure]) -> Value {
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [[]],
                "Metrics": figures
                    .iter()
                    .map(|f| json!({"Name": f.name, "Unit": f.unit}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    for figure in figures {
        line.insert(figure.name.into(), json!(figure.value));
    }
    Value::Object(line)
}

/// The EMF line of `figures` now, in this deployment's namespace.
pub fn line_now(figures: &[Figure]) -> Value {
    line(&namespace(), crate::now(), figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_declares_each_figure_and_carries_its_value() {
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).expect("valid time");
        let line = line(
            "fluxgate/test",
            at,
            &[
                Figure::new("OutboxLag", "Seconds", 12.5),
                Figure::new("DrainPublished", "Count", 3.0),
            ],
        );
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_123_i64);
        assert_eq!(directive["Namespace"], "fluxgate/test");
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "OutboxLag", "Unit": "Seconds"}, {"Name": "DrainPublished", "Unit": "Count"}])
        );
        assert_eq!(line["OutboxLag"], 12.5);
        assert_eq!(line["DrainPublished"], 3.0);
    }
}
