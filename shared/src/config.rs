//! Typed configuration. Every function reads its settings from the environment (the only
//! configuration Lambda and Cloud Run give), parsed by clap so each setting also has a flag,
//! a default and a line of `--help`.

use chrono::TimeDelta;
use clap::Args;

/// Parses `90s`, `5m`, `1h 30m`, `30d` (humantime) into a chrono duration.
pub fn parse_duration(text: &str) -> std::result::Result<TimeDelta, String> {
    let std = humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?}: {e}"))?;
    TimeDelta::from_std(std).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses a comma-separated list of durations, such as the retry schedule `1m,5m,15m,60m`.
pub fn parse_schedule(text: &str) -> std::result::Result<Schedule, String> {
    let steps = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(parse_duration)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if steps.is_empty() {
        return Err("the schedule needs at least one duration".into());
    }
    Ok(Schedule(steps))
}

/// Retry delays in order; the last one repeats once the list is used up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<TimeDelta>);

impl Schedule {
    /// The delay before attempt number `failures + 1`, after `failures` (>= 1) failures.
    pub fn delay_after(&self, failures: u32) -> TimeDelta {
        let index = (failures.max(1) as usize - 1).min(self.0.len() - 1);
        self.0[index]
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Self(vec![
            TimeDelta::minutes(1),
            TimeDelta::minutes(5),
            TimeDelta::minutes(15),
            TimeDelta::minutes(60),
        ])
    }
}

/// What a field breaks when `size` is over `limit`, for the problem's detail:
/// `"5000 bytes, more than the limit of 4096 bytes"`.
pub fn over_limit(size: usize, limit: usize, unit: &str) -> Option<String> {
    (size > limit).then(|| format!("{size} {unit}, more than the limit of {limit} {unit}"))
}

/// Input limits, all enforced before anything is written.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest request body, after gzip decoding.
    #[arg(long, env = "FLUXGATE_MAX_BODY_BYTES", default_value_t = Limits::DEFAULT.max_body_bytes)]
    pub max_body_bytes: usize,
    /// Most events in one batch request.
    #[arg(long, env = "FLUXGATE_MAX_BATCH_EVENTS", default_value_t = Limits::DEFAULT.max_batch_events)]
    pub max_batch_events: usize,
    /// Largest payload (canonical JSON) of one event; keeps a whole event within one SQS or
    /// Pub/Sub message.
    #[arg(long, env = "FLUXGATE_MAX_PAYLOAD_BYTES", default_value_t = Limits::DEFAULT.max_payload_bytes)]
    pub max_payload_bytes: usize,
    /// Longest tenantId, eventId, eventType and source, in characters.
    #[arg(long, env = "FLUXGATE_MAX_FIELD_LENGTH", default_value_t = Limits::DEFAULT.max_field_length)]
    pub max_field_length: usize,
    /// How far in the future eventTs may be (clock skew of the sender); at most 365d, the
    /// most BigQuery takes ahead.
    #[arg(long, env = "FLUXGATE_MAX_FUTURE_SKEW", default_value = "15m", value_parser = parse_future_skew)]
    pub max_future_skew: TimeDelta,
    /// How far in the past eventTs may be; at most 1825d, the oldest partition BigQuery's
    /// streaming insert takes.
    #[arg(long, env = "FLUXGATE_MAX_EVENT_AGE", default_value = "1825d", value_parser = parse_event_age)]
    pub max_event_age: TimeDelta,
}

/// The widest timestamp window the warehouse takes. BigQuery's streaming insert (`insertAll`,
/// what the BigQuery sink uses) takes rows for a partition between 5 years in the past and 1
/// year in the future of today's date (the Storage Write API takes 10 years back); a row
/// outside is refused for good and its event would end DEAD. 1825 days is 5 years less the
/// leap days, so an event at the edge is still inside on every date; accepting nothing the
/// warehouse refuses keeps "a 2xx reaches the warehouse" true. The settings only narrow it.
pub const WAREHOUSE_MAX_EVENT_AGE: TimeDelta = TimeDelta::days(1825);
pub const WAREHOUSE_MAX_FUTURE_SKEW: TimeDelta = TimeDelta::days(365);

fn parse_event_age(text: &str) -> std::result::Result<TimeDelta, String> {
    at_most(parse_duration(text)?, WAREHOUSE_MAX_EVENT_AGE, "back")
}

fn parse_future_skew(text: &str) -> std::result::Result<TimeDelta, String> {
    at_most(parse_duration(text)?, WAREHOUSE_MAX_FUTURE_SKEW, "ahead")
}

fn at_most(value: TimeDelta, max: TimeDelta, way: &str) -> std::result::Result<TimeDelta, String> {
    if value > max {
        return Err(format!(
            "may be at most {}d: the BigQuery warehouse refuses rows dated further {way}",
            max.num_days()
        ));
    }
    Ok(value)
}

/// A limit as a reader takes it: whole days as `1825 days`, anything else as humantime says it.
pub fn describe_duration(duration: TimeDelta) -> String {
    let seconds = duration.num_seconds();
    if seconds > 0 && seconds % 86_400 == 0 {
        let days = seconds / 86_400;
        return format!("{days} day{}", if days == 1 { "" } else { "s" });
    }
    humantime::format_duration(duration.to_std().unwrap_or_default()).to_string()
}

impl Limits {
    const DEFAULT: Limits = Limits {
        max_body_bytes: 5 * 1024 * 1024,
        max_batch_events: 500,
        max_payload_bytes: 128 * 1024,
        max_field_length: 128,
        max_future_skew: TimeDelta::minutes(15),
        max_event_age: WAREHOUSE_MAX_EVENT_AGE,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How the outbox drain claims, retries and gives up.
#[derive(Debug, Clone, Args)]
pub struct DrainConfig {
    /// Rows claimed per round.
    #[arg(long, env = "FLUXGATE_DRAIN_BATCH_SIZE", default_value_t = 500)]
    pub drain_batch_size: u32,
    /// How long a claim holds before another run may take the rows (a crashed run's claims
    /// come back after this).
    #[arg(long, env = "FLUXGATE_DRAIN_LEASE_TTL", default_value = "2m", value_parser = parse_duration)]
    pub drain_lease_ttl: TimeDelta,
    /// Longest one drain run works when no invocation deadline tells it (HTTP trigger).
    #[arg(long, env = "FLUXGATE_DRAIN_TIME_BUDGET", default_value = "50s", value_parser = parse_duration)]
    pub drain_time_budget: TimeDelta,
    /// On Lambda, how long before the invocation's deadline a run stops claiming, so the round
    /// in flight is published and settled before the platform stops the function.
    #[arg(long, env = "FLUXGATE_DRAIN_DEADLINE_MARGIN", default_value = "5s", value_parser = parse_duration)]
    pub drain_deadline_margin: TimeDelta,
    /// Delays before re-publishing after a failed publish; the last repeats.
    #[arg(long, env = "FLUXGATE_RETRY_BACKOFF", default_value = "1m,5m,15m,60m", value_parser = parse_schedule)]
    pub retry_backoff: Schedule,
    /// Failed publishes after which an event is DEAD.
    #[arg(long, env = "FLUXGATE_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    /// Most events in one queue message (a pack of one tenant's events).
    #[arg(long, env = "FLUXGATE_PACK_MAX_EVENTS", default_value_t = DrainConfig::PACK_MAX_EVENTS)]
    pub pack_max_events: usize,
    /// Largest queue message body, in bytes; the queue's own limit caps it further (SQS
    /// 1 MiB, Pub/Sub 10 MB). An SQS queue whose `MaximumMessageSize` is smaller (256 KiB
    /// before 2025) needs this at or below it. SQS bills each 64 KiB of a message as one
    /// request, so larger packs cost the same per byte and fewer API calls.
    #[arg(long, env = "FLUXGATE_PACK_MAX_BYTES", default_value_t = DrainConfig::PACK_MAX_BYTES)]
    pub pack_max_bytes: usize,
}

impl DrainConfig {
    pub const PACK_MAX_EVENTS: usize = 500;
    pub const PACK_MAX_BYTES: usize = 1024 * 1024;
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            drain_batch_size: 500,
            drain_lease_ttl: TimeDelta::minutes(2),
            drain_time_budget: TimeDelta::seconds(50),
            drain_deadline_margin: TimeDelta::seconds(5),
            retry_backoff: Schedule::default(),
            max_attempts: 5,
            pack_max_events: Self::PACK_MAX_EVENTS,
            pack_max_bytes: Self::PACK_MAX_BYTES,
        }
    }
}

/// How the worker judges deliveries.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// Deliveries of one message after which a failure is final (DEAD); match the queue's
    /// redrive max receive count / the subscription's max delivery attempts.
    #[arg(long, env = "FLUXGATE_MAX_RECEIVE_COUNT", default_value_t = 5)]
    pub max_receive_count: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            max_receive_count: 5,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Port of the HTTP server when not running on Lambda.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_repeats_its_last_step() {
        let schedule = parse_schedule("1m, 5m,15m").expect("parses");
        assert_eq!(schedule.delay_after(1), TimeDelta::minutes(1));
        assert_eq!(schedule.delay_after(3), TimeDelta::minutes(15));
        assert_eq!(schedule.delay_after(9), TimeDelta::minutes(15));
        assert!(parse_schedule("").is_err());
        assert!(parse_schedule("soon").is_err());
    }

    #[test]
    fn the_timestamp_window_only_narrows_what_the_warehouse_takes() {
        assert_eq!(parse_event_age("30d"), Ok(TimeDelta::days(30)));
        assert_eq!(parse_event_age("1825d"), Ok(WAREHOUSE_MAX_EVENT_AGE));
        assert!(parse_event_age("1826d").is_err());
        assert!(parse_future_skew("366d").is_err());
        assert_eq!(describe_duration(TimeDelta::days(1825)), "1825 days");
        assert_eq!(describe_duration(TimeDelta::minutes(15)), "15m");
    }
}
