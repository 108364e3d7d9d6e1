//! Many events in one queue message. Queues bill and limit by message and by request, not by
//! event, so the drain packs the events of one tenant into as few messages as the queue's size
//! limit allows. The body is a small versioned envelope:
//!
//! ```json
//! {"v": 2, "count": 3, "events": [{…event…}, {…event…}, {…event…}]}
//! ```
//!
//! A body without `v` is a version-1 message: one event, as published before packs existed.
//! The worker reads both, so messages already in a queue during a rollout are still understood.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{MessageAttributes, QueueMessage};
use crate::error::{Error, Result};
use crate::event::Event;

/// The envelope version the drain writes.
pub const PACK_VERSION: u32 = 2;

/// The envelope around the events, without them: what a pack adds to their bytes.
const ENVELOPE_BYTES: usize = r#"{"v":2,"count":4294967295,"events":[]}"#.len();

/// How full one message may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackLimits {
    pub max_events: usize,
    /// Body bytes, envelope included.
    pub max_bytes: usize,
}

#[derive(Serialize)]
struct PackOut<'a> {
    v: u32,
    count: usize,
    events: &'a [Box<RawValue>],
}

#[derive(Deserialize)]
struct PackIn {
    v: u32,
    count: usize,
    events: Vec<Event>,
}

/// One message of a packing: its position in the input of each event it carries, and the
/// message, or why the event could not be packed (it cannot be written as JSON, or it is
/// larger than a message may be on its own).
#[derive(Debug)]
pub enum Packed {
    Message {
        events: Vec<usize>,
        message: QueueMessage,
    },
    Refused {
        event: usize,
        reason: String,
    },
}

/// Packs `events` into messages within `limits`, one tenant per message (so the `tenantId`
/// attribute stays true for subscription filters), in input order within each tenant.
pub fn pack(events: &[&Event], limits: PackLimits) -> Vec<Packed> {
    let max_events = limits.max_events.max(1);
    let mut order: Vec<usize> = (0..events.len()).collect();
    // Stable: each tenant's events keep their order (oldest due first).
    order.sort_by(|a, b| events[*a].tenant_id.cmp(&events[*b].tenant_id));
    let mut packed = Vec::new();
    let mut open = Open::default();
    for index in order {
        let event = events[index];
        let raw = match serde_json::value::to_raw_value(event) {
            Ok(raw) => raw,
            Err(e) => {
                packed.push(Packed::Refused {
                    event: index,
                    reason: format!("the event cannot be written as JSON: {e}"),
                });
                continue;
            }
        };
        let size = raw.get().len() + 1;
        if ENVELOPE_BYTES + size > limits.max_bytes {
            packed.push(Packed::Refused {
                event: index,
                reason: format!(
                    "the event is {size} bytes, more than a message may carry ({} bytes)",
                    limits.max_bytes
                ),
            });
            continue;
        }
        let fits = open.indexes.len() < max_events
            && ENVELOPE_BYTES + open.bytes + size <= limits.max_bytes
            && open.tenant_id.as_deref() == Some(event.tenant_id.as_str());
        if !fits {
            packed.extend(open.close(events));
            open.tenant_id = Some(event.tenant_id.clone());
        }
        open.indexes.push(index);
        open.raw.push(raw);
        open.bytes += size;
    }
    packed.extend(open.close(events));
    packed
}

/// The message being filled.
#[derive(Default)]
struct Open {
    tenant_id: Option<String>,
    indexes: Vec<usize>,
    raw: Vec<Box<RawValue>>,
    bytes: usize,
}

impl Open {
    fn close(&mut self, events: &[&Event]) -> Option<Packed> {
        if self.indexes.is_empty() {
            return None;
        }
        let indexes = std::mem::take(&mut self.indexes);
        let raw = std::mem::take(&mut self.raw);
        self.bytes = 0;
        let pack = PackOut {
            v: PACK_VERSION,
            count: raw.len(),
            events: &raw,
        };
        // Serializing already-serialized values into a Vec cannot fail.
        let body = serde_json::to_vec(&pack).unwrap_or_default();
        let members: Vec<&Event> = indexes.iter().map(|i| events[*i]).collect();
        Some(Packed::Message {
            message: QueueMessage {
                keys: members.iter().map(|e| e.key()).collect(),
                body,
                attributes: MessageAttributes::common_to(&members),
            },
            events: indexes,
        })
    }
}

/// The events a message body carries: a pack, or one event (version 1).
pub fn read_events(body: &[u8]) -> Result<Vec<Event>> {
    match serde_json::from_slice::<PackIn>(body) {
        Ok(pack) if pack.v == PACK_VERSION && pack.count == pack.events.len() => Ok(pack.events),
        Ok(pack) if pack.v == PACK_VERSION => Err(Error::malformed(
            "count",
            format!(
                "the pack says {} events and carries {}",
                pack.count,
                pack.events.len()
            ),
        )),
        Ok(pack) => Err(Error::malformed(
            "v",
            format!("message format version {} is not known here", pack.v),
        )),
        Err(pack_error) => match serde_json::from_slice::<Event>(body) {
            Ok(event) => Ok(vec![event]),
            Err(event_error) => Err(Error::malformed(
                "body",
                format!("neither a pack ({pack_error}) nor an event ({event_error})"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKey;

    fn event(tenant: &str, id: &str, payload_bytes: usize) -> Event {
        let mut payload = serde_json::Map::new();
        payload.insert("pad".into(), "x".repeat(payload_bytes).into());
        Event {
            tenant_id: tenant.into(),
            event_id: id.into(),
            event_type: "order.created".into(),
            event_ts: crate::now(),
            received_at: crate::now(),
            source: None,
            payload: payload.into(),
            payload_sha256: "0".repeat(64),
            metadata: None,
            correlation_id: None,
        }
    }

    #[test]
    fn a_message_carries_the_payload_in_the_clients_digits() {
        let mut big = event("t", "big", 0);
        big.payload = crate::json_object::JsonObject::canonical(
            r#"{"big":123456789012345678901234567890,"pi":3.1415926535897932}"#,
            "payload",
        )
        .expect("object");
        let packed = pack(
            &[&big],
            PackLimits {
                max_events: 10,
                max_bytes: 1 << 20,
            },
        );
        let (_, message) = messages(&packed)[0];
        let body = std::str::from_utf8(&message.body).expect("utf8");
        assert!(
            body.contains(
                r#""payload":{"big":123456789012345678901234567890,"pi":3.1415926535897932}"#
            ),
            "{body}"
        );
        let read = read_events(&message.body).expect("read");
        assert_eq!(read[0].payload, big.payload);
    }

    fn messages(packed: &[Packed]) -> Vec<(&Vec<usize>, &QueueMessage)> {
        packed
            .iter()
            .filter_map(|p| match p {
                Packed::Message { events, message } => Some((events, message)),
                Packed::Refused { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_pack_round_trips_and_keeps_its_events_in_order() {
        let events: Vec<Event> = (0..5)
            .map(|i| event("acme", &format!("e{i}"), 10))
            .collect();
        let refs: Vec<&Event> = events.iter().collect();
        let limits = PackLimits {
            max_events: 100,
            max_bytes: 1 << 20,
        };
        let packed = pack(&refs, limits);
        let messages = messages(&packed);
        assert_eq!(messages.len(), 1);
        let (indexes, message) = messages[0];
        assert_eq!(indexes, &vec![0, 1, 2, 3, 4]);
        assert_eq!(read_events(&message.body).expect("read"), events);
        assert_eq!(
            message.keys,
            events.iter().map(Event::key).collect::<Vec<EventKey>>()
        );
        assert_eq!(message.attributes.tenant_id, "acme");
    }

    #[test]
    fn packs_stop_at_the_event_and_byte_caps_and_at_each_tenant() {
        let events: Vec<Event> = (0..10)
            .map(|i| event(if i % 2 == 0 { "a" } else { "b" }, &format!("e{i}"), 100))
            .collect();
        let refs: Vec<&Event> = events.iter().collect();
        let by_count = pack(
            &refs,
            PackLimits {
                max_events: 2,
                max_bytes: 1 << 20,
            },
        );
        assert_eq!(
            messages(&by_count).len(),
            6,
            "3 of tenant a (5 events), 3 of b"
        );
        let one_size = serde_json::to_vec(&events[0]).expect("json").len() + 1;
        let by_bytes = pack(
            &refs,
            PackLimits {
                max_events: 100,
                max_bytes: ENVELOPE_BYTES + 2 * one_size + 4,
            },
        );
        for (indexes, message) in messages(&by_bytes) {
            assert!(indexes.len() <= 2);
            assert!(message.body.len() <= ENVELOPE_BYTES + 2 * one_size + 4);
            let tenants: Vec<&str> = indexes
                .iter()
                .map(|i| events[*i].tenant_id.as_str())
                .collect();
            assert!(
                tenants.windows(2).all(|w| w[0] == w[1]),
                "one tenant per message"
            );
        }
        let carried: usize = messages(&by_bytes).iter().map(|(i, _)| i.len()).sum();
        assert_eq!(carried, 10, "every event is in exactly one message");
    }

    #[test]
    fn an_event_larger_than_a_message_is_refused_alone() {
        let events = [event("a", "small", 10), event("a", "huge", 5000)];
        let refs: Vec<&Event> = events.iter().collect();
        let packed = pack(
            &refs,
            PackLimits {
                max_events: 10,
                max_bytes: 1000,
            },
        );
        assert!(matches!(
            packed.as_slice(),
            [Packed::Refused { event: 1, .. }, Packed::Message { .. }]
                | [Packed::Message { .. }, Packed::Refused { event: 1, .. }]
        ));
    }

    #[test]
    fn a_single_event_message_of_version_one_is_still_read() {
        let single = event("acme", "old", 10);
        let body = serde_json::to_vec(&single).expect("json");
        assert_eq!(read_events(&body).expect("read"), vec![single]);
    }

    #[test]
    fn bodies_that_are_neither_are_refused_by_name() {
        for (body, field) in [
            (&br#"{"v":2,"count":2,"events":[]}"#[..], "count"),
            (&br#"{"v":9,"count":0,"events":[]}"#[..], "v"),
            (&b"not json"[..], "body"),
        ] {
            let error = read_events(body).expect_err("refused");
            assert_eq!(error.field(), Some(field), "{error}");
        }
    }
}
