//! The event: what a client posts, how it is validated, and the canonical payload hash that
//! makes ingest idempotent.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::config::{Limits, describe_duration, over_limit};
use crate::error::{Error, FieldError};
use crate::json_object::JsonObject;
use crate::tenant::TenantScope;

/// An event as a client sends it. Every field is optional here so that a missing field is
/// reported by name by [`EventInput::validate`]; serde still rejects wrong JSON types with the
/// path of the offending field. `payload` and `metadata` stay the client's text until
/// [`JsonObject::canonical`] reads them, so no number in them is ever converted.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(
    as = Event,
    description = "One event. A field that breaks a rule is a 422 naming it; an unknown field is refused, so a typo is not silently dropped. Text fields take up to 128 characters (FLUXGATE_MAX_FIELD_LENGTH)."
)]
pub struct EventInput {
    /// The tenant: with a tenant key optional, and the key's own (another is a 403); required
    /// with the admin key. Letters, digits, `-`, `_` and `.`, starting with a letter or digit.
    pub tenant_id: Option<String>,
    /// Unique per tenant: the idempotency key. A UUIDv7 is made when it is missing.
    pub event_id: Option<String>,
    #[schema(required = true, value_type = String)]
    pub event_type: Option<String>,
    /// RFC 3339; without an offset, UTC. Default: the receive time. At most 1825 days back and
    /// 15 minutes ahead (FLUXGATE_MAX_EVENT_AGE, FLUXGATE_MAX_FUTURE_SKEW).
    pub event_ts: Option<String>,
    /// A JSON object of at most 128 KiB (FLUXGATE_MAX_PAYLOAD_BYTES). Its numbers keep the
    /// digits sent; it is stored as canonical text (keys sorted, no insignificant whitespace).
    #[schema(required = true, value_type = Object)]
    pub payload: Option<Box<RawValue>>,
    pub source: Option<String>,
    /// A JSON object, under the same limit and kept the same way as `payload`.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Box<RawValue>>,
    /// Anything else: rejected by name, so a typo such as `timestamp` is not silently dropped.
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: HashMap<String, Value>,
}

/// Identity of an event: idempotency and de-duplication key everywhere in the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventKey {
    pub tenant_id: String,
    pub event_id: String,
}

/// A validated event. Its JSON form is also the queue message body, so a message carries the
/// whole event and the worker never reads the database to load it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(
    as = EventRecord,
    description = "An event as stored: its fields as sent (the timestamp in UTC), when it was received, the SHA-256 of its canonical payload, and the correlation id of the request that sent it."
)]
pub struct Event {
    pub tenant_id: String,
    pub event_id: String,
    pub event_type: String,
    pub event_ts: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[schema(value_type = Object)]
    pub payload: JsonObject,
    pub payload_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl Event {
    pub fn key(&self) -> EventKey {
        EventKey {
            tenant_id: self.tenant_id.clone(),
            event_id: self.event_id.clone(),
        }
    }

    /// The warehouse partition date: the UTC day of the event's own timestamp.
    pub fn event_date(&self) -> NaiveDate {
        self.event_ts.date_naive()
    }
}

impl EventInput {
    /// Checks every rule and builds the event. `now` is the receive time; it also anchors the
    /// timestamp-skew limits. The tenant comes first: a body naming a tenant the caller may
    /// not write for is refused (403) whatever else is wrong with it; every other rule breaks
    /// as [`Error::InvalidField`].
    pub fn validate(
        self,
        scope: &TenantScope,
        limits: &Limits,
        now: DateTime<Utc>,
        correlation_id: Option<&str>,
    ) -> Result<Event, Error> {
        let tenant_id = scope.resolve(self.tenant_id.as_deref())?;
        self.validate_for(tenant_id, limits, now, correlation_id)
            .map_err(Error::InvalidField)
    }

    fn validate_for(
        self,
        tenant_id: String,
        limits: &Limits,
        now: DateTime<Utc>,
        correlation_id: Option<&str>,
    ) -> Result<Event, FieldError> {
        if let Some(name) = self.unknown.keys().min() {
            return Err(FieldError::new(name, "is not a known event field"));
        }
        check_tenant_id(&tenant_id, limits)?;

        let event_id = match self.event_id {
            Some(id) => {
                check_text("eventId", &id, limits.max_field_length)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        let event_type = self
            .event_type
            .ok_or_else(|| FieldError::new("eventType", "is required"))?;
        check_text("eventType", &event_type, limits.max_field_length)?;
        if let Some(source) = &self.source {
            check_text("source", source, limits.max_field_length)?;
        }

        // Postgres keeps microseconds; truncating here makes what we store what we return.
        let received_at = now.trunc_subsecs(6);
        let event_ts = match self.event_ts {
            Some(text) => parse_timestamp(&text)?,
            None => received_at,
        };
        if event_ts > now + limits.max_future_skew {
            return Err(FieldError::new(
                "eventTs",
                format!(
                    "is more than {} in the future",
                    describe_duration(limits.max_future_skew)
                ),
            ));
        }
        if event_ts < now - limits.max_event_age {
            return Err(FieldError::new(
                "eventTs",
                format!(
                    "is more than {} in the past",
                    describe_duration(limits.max_event_age)
                ),
            ));
        }

        let payload = match self.payload {
            Some(raw) => JsonObject::canonical(raw.get(), "payload")?,
            None => return Err(FieldError::new("payload", "is required")),
        };
        let metadata = self
            .metadata
            .map(|raw| JsonObject::canonical(raw.get(), "metadata"))
            .transpose()?;
        for (field, object) in [("payload", Some(&payload)), ("metadata", metadata.as_ref())] {
            if let Some(over) =
                object.and_then(|o| over_limit(o.len(), limits.max_payload_bytes, "bytes"))
            {
                return Err(FieldError::new(field, format!("is {over}")));
            }
        }

        Ok(Event {
            tenant_id,
            event_id,
            event_type,
            event_ts,
            received_at,
            source: self.source,
            payload_sha256: payload_sha256(&payload),
            payload,
            metadata,
            correlation_id: correlation_id.map(str::to_owned),
        })
    }
}

/// Tenant ids name warehouse partitions and directories, so they are restricted to a safe,
/// portable alphabet (no path separators, no dot-dot).
pub fn check_tenant_id(tenant_id: &str, limits: &Limits) -> Result<(), FieldError> {
    let field = "tenantId";
    if tenant_id.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if tenant_id.chars().count() > limits.max_field_length {
        return Err(too_long(field, limits.max_field_length));
    }
    let first_ok = tenant_id.starts_with(|c: char| c.is_ascii_alphanumeric());
    let rest_ok = tenant_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !first_ok || !rest_ok {
        return Err(FieldError::new(
            field,
            "must start with a letter or digit and contain only letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

fn check_text(field: &str, value: &str, max_len: usize) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > max_len {
        return Err(too_long(field, max_len));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn too_long(field: &str, max_len: usize) -> FieldError {
    FieldError::new(field, format!("is longer than {max_len} characters"))
}

/// RFC 3339 with an offset, or a plain ISO 8601 date-time without one, which is taken as UTC.
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, FieldError> {
    crate::parse_time(text).ok_or_else(|| {
        FieldError::new(
            "eventTs",
            "must be an RFC 3339 timestamp such as 2024-01-15T10:30:00Z (no offset means UTC)",
        )
    })
}

/// The idempotency hash: SHA-256 of the payload's canonical text (keys sorted at every level,
/// numbers as the client wrote them), hex encoded. Two payloads that differ only in key order
/// or spacing hash alike; `1.0` and `1` are different payloads.
pub fn payload_sha256(payload: &JsonObject) -> String {
    hex::encode(Sha256::digest(payload.get().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits::default()
    }

    fn input(value: Value) -> EventInput {
        serde_json::from_value(value).expect("input parses")
    }

    /// An event from the client's own text, validated.
    fn input_text(text: &str) -> Event {
        serde_json::from_str::<EventInput>(text)
            .expect("input parses")
            .validate(&TenantScope::Open, &limits(), now(), None)
            .expect("valid")
    }

    fn now() -> DateTime<Utc> {
        "2024-01-15T12:00:00Z".parse().expect("timestamp")
    }

    fn validate(value: Value) -> Result<Event, FieldError> {
        input(value)
            .validate(&TenantScope::Open, &limits(), now(), None)
            .map_err(|e| match e {
                Error::InvalidField(f) => f,
                other => panic!("only field errors expected, got {other:?}"),
            })
    }

    #[test]
    fn key_order_does_not_change_the_hash_and_numbers_keep_their_digits() {
        let a = validate(serde_json::from_str(
            r#"{"tenantId":"t","eventType":"c","payload":{"b": 1, "a": {"y": [1, {"q": 2, "p": 1}], "x": null}}}"#,
        ).expect("json"))
        .expect("valid");
        let b = validate(serde_json::from_str(
            r#"{"tenantId":"t","eventType":"c","payload":{"a":{"x":null,"y":[1,{"p":1,"q":2}]},"b":1}}"#,
        ).expect("json"))
        .expect("valid");
        assert_eq!(a.payload_sha256, b.payload_sha256);
        assert_eq!(
            a.payload.get(),
            r#"{"a":{"x":null,"y":[1,{"p":1,"q":2}]},"b":1}"#
        );

        let big = input_text(
            r#"{"tenantId":"t","eventType":"c","payload":{"big":123456789012345678901234567890,"pi":3.1415926535897932}}"#,
        );
        assert_eq!(
            big.payload.get(),
            r#"{"big":123456789012345678901234567890,"pi":3.1415926535897932}"#
        );
        assert_eq!(
            big.payload_sha256,
            hex::encode(Sha256::digest(
                br#"{"big":123456789012345678901234567890,"pi":3.1415926535897932}"#
            ))
        );
        // The same value rounded to an f64 is another payload.
        let rounded = input_text(
            r#"{"tenantId":"t","eventType":"c","payload":{"big":1.2345678901234568e29,"pi":3.141592653589793}}"#,
        );
        assert_ne!(rounded.payload_sha256, big.payload_sha256);
    }

    #[test]
    fn missing_event_id_gets_a_uuid_v7_and_missing_ts_the_receive_time() {
        let event = validate(json!({"tenantId": "t1", "eventType": "click", "payload": {}}))
            .expect("valid");
        let id = uuid::Uuid::parse_str(&event.event_id).expect("uuid");
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(event.event_ts, now());
        assert_eq!(event.received_at, now());
    }

    #[test]
    fn timestamp_without_offset_is_utc() {
        let event = validate(json!({"tenantId": "t1", "eventType": "c", "eventTs": "2024-01-15T10:30:00", "payload": {}}))
            .expect("valid");
        assert_eq!(
            event.event_ts,
            "2024-01-15T10:30:00Z".parse::<DateTime<Utc>>().expect("ts")
        );
        let offset = validate(json!({"tenantId": "t1", "eventType": "c", "eventTs": "2024-01-15T12:30:00+02:00", "payload": {}}))
            .expect("valid");
        assert_eq!(offset.event_ts, event.event_ts);
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (json!({"eventType": "c", "payload": {}}), "tenantId"),
            (
                json!({"tenantId": "../etc", "eventType": "c", "payload": {}}),
                "tenantId",
            ),
            (json!({"tenantId": "t", "payload": {}}), "eventType"),
            (
                json!({"tenantId": "t", "eventType": " ", "payload": {}}),
                "eventType",
            ),
            (json!({"tenantId": "t", "eventType": "c"}), "payload"),
            (
                json!({"tenantId": "t", "eventType": "c", "payload": [1]}),
                "payload",
            ),
            (
                json!({"tenantId": "t", "eventType": "c", "payload": {}, "eventTs": "yesterday"}),
                "eventTs",
            ),
            (
                json!({"tenantId": "t", "eventType": "c", "payload": {}, "eventTs": "2030-01-01T00:00:00Z"}),
                "eventTs",
            ),
            (
                json!({"tenantId": "t", "eventType": "c", "payload": {}, "eventTs": "2001-01-01T00:00:00Z"}),
                "eventTs",
            ),
            (
                json!({"tenantId": "t", "eventType": "c", "payload": {}, "eventId": "a\u{0007}b"}),
                "eventId",
            ),
            (
                json!({"tenantId": "t", "eventType": "c", "payload": {}, "timestamp": 1}),
                "timestamp",
            ),
            (
                json!({"tenantId": "t", "eventType": "x".repeat(129), "payload": {}}),
                "eventType",
            ),
            (
                json!({"tenantId": "t", "eventType": "c", "payload": {"k": ["a\u{0000}b"]}}),
                "payload",
            ),
            (
                json!({"tenantId": "t", "eventType": "c", "payload": {"a\u{0000}": 1}}),
                "payload",
            ),
            (
                json!({"tenantId": "t", "eventType": "c", "payload": {}, "metadata": {"k": "\u{0000}"}}),
                "metadata",
            ),
        ];
        for (body, field) in cases {
            let err = validate(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.field, field, "{body}: {err:?}");
        }
    }

    #[test]
    fn history_the_warehouse_takes_is_welcome_by_default() {
        // The reference API's own example, as written: a naive timestamp (UTC) almost three
        // years before the receive time.
        let received: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().expect("ts");
        let example = json!({"tenantId": "tenant-123", "eventId": "event-456", "eventType": "user.action",
            "eventTs": "2024-01-15T10:30:00", "payload": {"userId": "user-789"}, "source": "web-app"});
        let event = input(example)
            .validate(&TenantScope::Open, &limits(), received, None)
            .expect("accepted");
        assert_eq!(event.event_date().to_string(), "2024-01-15");
        // Older than the warehouse's 5 years: refused, naming the window in days.
        let too_old = json!({"tenantId": "t", "eventType": "c", "eventTs": "2021-11-20T00:00:00Z", "payload": {}});
        let err = input(too_old)
            .validate(&TenantScope::Open, &limits(), received, None)
            .expect_err("too old");
        assert_eq!(err.field(), Some("eventTs"));
        assert!(err.to_string().contains("1825 days"), "{err}");
    }

    #[test]
    fn payload_size_is_limited() {
        let limits = Limits {
            max_payload_bytes: 32,
            ..Limits::default()
        };
        let err =
            input(json!({"tenantId": "t", "eventType": "c", "payload": {"k": "x".repeat(40)}}))
                .validate(&TenantScope::Open, &limits, now(), None)
                .expect_err("too big");
        assert_eq!(err.field(), Some("payload"));
    }
}
