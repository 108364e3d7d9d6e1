//! The event: what a client posts, how it is validated, and the canonical payload hash that
//! makes ingest idempotent.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{Limits, over_limit};
use crate::error::{Error, FieldError};
use crate::tenant::TenantScope;

/// An event as a client sends it. Every field is optional here so that a missing field is
/// reported by name by [`EventInput::validate`]; serde still rejects wrong JSON types with the
/// path of the offending field.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventInput {
    pub tenant_id: Option<String>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub event_ts: Option<String>,
    pub payload: Option<Value>,
    pub source: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// Anything else: rejected by name, so a typo such as `timestamp` is not silently dropped.
    #[serde(flatten)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub tenant_id: String,
    pub event_id: String,
    pub event_type: String,
    pub event_ts: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub payload: Map<String, Value>,
    pub payload_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
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
                    humantime::format_duration(limits.max_future_skew.to_std().unwrap_or_default())
                ),
            ));
        }
        if event_ts < now - limits.max_event_age {
            return Err(FieldError::new(
                "eventTs",
                format!(
                    "is more than {} in the past",
                    humantime::format_duration(limits.max_event_age.to_std().unwrap_or_default())
                ),
            ));
        }

        let payload = match self.payload {
            Some(Value::Object(map)) => map,
            Some(_) => return Err(FieldError::new("payload", "must be a JSON object")),
            None => return Err(FieldError::new("payload", "is required")),
        };
        let canonical = canonical_json(&Value::Object(payload.clone()));
        check_no_nul("payload", &payload)?;
        if let Some(over) = over_limit(canonical.len(), limits.max_payload_bytes, "bytes") {
            return Err(FieldError::new("payload", format!("is {over}")));
        }
        if let Some(metadata) = &self.metadata {
            check_no_nul("metadata", metadata)?;
            let size = canonical_json(&Value::Object(metadata.clone())).len();
            if let Some(over) = over_limit(size, limits.max_payload_bytes, "bytes") {
                return Err(FieldError::new("metadata", format!("is {over}")));
            }
        }

        Ok(Event {
            tenant_id,
            event_id,
            event_type,
            event_ts,
            received_at,
            source: self.source,
            payload_sha256: hex::encode(Sha256::digest(&canonical)),
            payload,
            metadata: self.metadata,
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

/// PostgreSQL cannot store U+0000 in text or JSONB; refusing it everywhere keeps the
/// databases alike and answers 422 instead of a database error.
fn check_no_nul(field: &str, object: &Map<String, Value>) -> Result<(), FieldError> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if object.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        return Err(FieldError::new(
            field,
            "must not contain the NUL character (\\u0000)",
        ));
    }
    Ok(())
}

fn too_long(field: &str, max_len: usize) -> FieldError {
    FieldError::new(field, format!("is longer than {max_len} characters"))
}

/// RFC 3339 with an offset, or a plain ISO 8601 date-time without one, which is taken as UTC.
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, FieldError> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|ts| ts.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|ts| ts.and_utc())
        })
        .map_err(|_| {
            FieldError::new(
                "eventTs",
                "must be an RFC 3339 timestamp such as 2024-01-15T10:30:00Z (no offset means UTC)",
            )
        })?;
    Ok(parsed.trunc_subsecs(6))
}

/// JSON with object keys sorted at every level, so that two payloads that differ only in key
/// order hash alike. Written out here rather than relying on serde_json's map ordering, which a
/// dependency could change for the whole build by enabling `preserve_order`.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Serializing a scalar JSON value into a Vec cannot fail.
    serde_json::to_writer(&mut *out, value).unwrap_or_default();
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
    fn key_order_does_not_change_the_hash() {
        let a = canonical_json(&json!({"b": 1, "a": {"y": [1, {"q": 2, "p": 1}], "x": null}}));
        let b = canonical_json(&json!({"a": {"x": null, "y": [1, {"p": 1, "q": 2}]}, "b": 1}));
        assert_eq!(a, b);
        assert_eq!(
            String::from_utf8(a).expect("utf8"),
            r#"{"a":{"x":null,"y":[1,{"p":1,"q":2}]},"b":1}"#
        );
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
