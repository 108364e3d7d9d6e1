//! The figures every metrics endpoint shows, gathered from the store's SQL aggregations.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use fluxgate::error::Result;
use fluxgate::store::{Latency, OutboxFilter, OutboxMetrics, StatusCounts, Throughput, TypeCount};

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsReport {
    /// What was counted: `tenantId`, `from`, `to`.
    #[serde(flatten)]
    pub filter: OutboxFilter,
    pub generated_at: DateTime<Utc>,
    pub counts: Counts,
    /// Age of the oldest PENDING event, in seconds; 0 when nothing is pending.
    pub lag_seconds: f64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
    pub latency: LatencyReport,
    pub throughput: Throughput,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub by_status: StatusCounts,
    pub total: u64,
    /// Events per type, most frequent first.
    pub by_type: Vec<TypeCount>,
}

/// Receive-to-DONE latency of the events that reached DONE in the last `windowSeconds`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyReport {
    pub window_seconds: i64,
    #[serde(flatten)]
    pub latency: Latency,
}

/// Gathers the report; `window` is the latency window ending at `now`.
pub async fn collect(
    store: &dyn OutboxMetrics,
    filter: &OutboxFilter,
    window: TimeDelta,
    now: DateTime<Utc>,
) -> Result<MetricsReport> {
    let tenant = filter.tenant_id.as_deref();
    let by_status = store.status_counts(filter).await?;
    let by_type = store.type_counts(filter).await?;
    let oldest_pending_at = store.oldest_pending(tenant).await?;
    let latency = store.latency(tenant, now - window, now).await?;
    let throughput = store.throughput(tenant, now).await?;
    let lag_seconds = oldest_pending_at
        .map(|oldest| ((now - oldest).num_milliseconds().max(0) as f64) / 1000.0)
        .unwrap_or(0.0);
    Ok(MetricsReport {
        filter: filter.clone(),
        generated_at: now,
        counts: Counts {
            total: by_status.total(),
            by_status,
            by_type,
        },
        lag_seconds,
        oldest_pending_at,
        latency: LatencyReport {
            window_seconds: window.num_seconds(),
            latency,
        },
        throughput,
    })
}

/// `GET /v1/outbox/summary`: counts per status and their total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// What was counted: `tenantId`, `from`, `to`.
    #[serde(flatten)]
    pub filter: OutboxFilter,
    pub pending: u64,
    pub published: u64,
    pub done: u64,
    pub failed: u64,
    pub dead: u64,
    pub total: u64,
}

impl Summary {
    pub fn new(filter: &OutboxFilter, counts: StatusCounts) -> Self {
        Self {
            filter: filter.clone(),
            pending: counts.pending,
            published: counts.published,
            done: counts.done,
            failed: counts.failed,
            dead: counts.dead,
            total: counts.total(),
        }
    }
}
