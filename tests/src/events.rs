//! Valid events and the small values tests build around them.

use chrono::{DateTime, TimeDelta, Utc};
use fluxgate::event::{Event, EventKey, payload_sha256};
use fluxgate::json_object::JsonObject;
use fluxgate::store::ClaimRequest;
use serde_json::{Value, json};

/// The event type of the events built here.
pub const EVENT_TYPE: &str = "test.created";

/// A deadline for a drain run that a test never reaches: the run ends when nothing is due.
pub fn far_deadline() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(60)
}

/// The lease of [`claim_request`]: the drain's default.
pub const LEASE_TTL: TimeDelta = TimeDelta::minutes(2);

/// The payload hash fluxgate stores: SHA-256 of the canonical JSON (keys sorted at every
/// level), hex encoded, exactly as `EventInput::validate` computes it.
pub fn payload_hash(payload: &JsonObject) -> String {
    payload_sha256(payload)
}

/// A valid event received now, with a small payload that names its id.
pub fn event(tenant: &str, id: &str) -> Event {
    event_with_payload(tenant, id, json!({ "id": id, "n": 1 }))
}

/// A valid event of type `event_type`, received now.
pub fn event_of_type(tenant: &str, id: &str, event_type: &str) -> Event {
    let mut built = event(tenant, id);
    built.event_type = event_type.to_owned();
    built
}

/// A valid event received at `received_at` (which is also when its outbox row is first due).
pub fn event_at(tenant: &str, id: &str, received_at: DateTime<Utc>) -> Event {
    let mut built = event(tenant, id);
    built.event_ts = received_at;
    built.received_at = received_at;
    built
}

/// A valid event received now with this payload, which must be a JSON object.
pub fn event_with_payload(tenant: &str, id: &str, payload: Value) -> Event {
    let Value::Object(payload) = payload else {
        panic!(
            "event_with_payload({tenant:?}, {id:?}): the payload must be a JSON object, got {payload}"
        );
    };
    let payload = JsonObject::from(payload);
    let now = fluxgate::now();
    Event {
        tenant_id: tenant.to_owned(),
        event_id: id.to_owned(),
        event_type: EVENT_TYPE.to_owned(),
        event_ts: now,
        received_at: now,
        source: None,
        payload_sha256: payload_hash(&payload),
        payload,
        metadata: None,
        correlation_id: None,
    }
}

pub fn key(tenant: &str, id: &str) -> EventKey {
    EventKey {
        tenant_id: tenant.to_owned(),
        event_id: id.to_owned(),
    }
}

pub fn keys(events: &[Event]) -> Vec<EventKey> {
    events.iter().map(Event::key).collect()
}

/// A claim of up to `limit` rows by `owner` at `now`, leased for [`LEASE_TTL`].
pub fn claim_request(owner: &str, limit: u32, now: DateTime<Utc>) -> ClaimRequest {
    ClaimRequest {
        owner: owner.to_owned(),
        limit,
        lease_ttl: LEASE_TTL,
        now,
    }
}

/// The events a queue message body carries: a pack, or one event (the format before packs).
pub fn carried_by(body: &[u8]) -> fluxgate::Result<Vec<Event>> {
    fluxgate::queue::pack::read_events(body)
}

/// Every event the messages carry, in order.
pub fn unpack<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> Vec<Event> {
    bodies
        .into_iter()
        .flat_map(|body| carried_by(body).expect("a fluxgate message"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxgate::config::Limits;
    use fluxgate::event::EventInput;
    use fluxgate::tenant::TenantScope;

    #[test]
    fn built_events_hash_like_validated_ones() {
        let payload = json!({ "b": [1, { "y": 2, "x": null }], "a": "é" });
        let built = event_with_payload("t1", "e1", payload.clone());
        let input: EventInput = serde_json::from_value(json!({
            "tenantId": "t1", "eventId": "e1", "eventType": EVENT_TYPE, "payload": payload,
        }))
        .expect("input parses");
        let validated = input
            .validate(
                &TenantScope::Open,
                &Limits::default(),
                built.received_at,
                None,
            )
            .expect("the built event is valid");
        assert_eq!(validated, built);
    }
}
