//! Idempotency decisions shared by every store: repeats inside one batch are judged the same
//! way as repeats across requests.

use std::collections::HashMap;

use serde::Serialize;

use crate::event::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InsertOutcome {
    /// Newly stored, with its outbox row.
    Accepted,
    /// Already stored with the same payload; nothing written.
    Duplicate,
    /// Already stored with a different payload; nothing written.
    Conflict,
}

/// A batch reduced to its first occurrence of each key.
pub(crate) struct UniqueBatch<'a> {
    pub unique: Vec<&'a Event>,
    /// For each input event: index into `unique`, whether it is that key's first occurrence,
    /// and its own payload hash.
    slots: Vec<(usize, bool, &'a str)>,
}

impl<'a> UniqueBatch<'a> {
    pub fn of(events: &'a [Event]) -> Self {
        let mut index: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
        let mut unique = Vec::with_capacity(events.len());
        let slots = events
            .iter()
            .map(|event| {
                let key = (event.tenant_id.as_str(), event.event_id.as_str());
                let hash = event.payload_sha256.as_str();
                match index.get(&key) {
                    Some(&slot) => (slot, false, hash),
                    None => {
                        index.insert(key, unique.len());
                        unique.push(event);
                        (unique.len() - 1, true, hash)
                    }
                }
            })
            .collect();
        Self { unique, slots }
    }

    /// `stored[i]` is (inserted, stored payload hash) for `unique[i]`.
    pub fn outcomes(&self, stored: &[(bool, String)]) -> Vec<InsertOutcome> {
        self.slots
            .iter()
            .map(|&(slot, first, own_hash)| {
                // Every occurrence is compared with what the store now holds for its key.
                let (inserted, stored_hash) = &stored[slot];
                if own_hash != stored_hash {
                    InsertOutcome::Conflict
                } else if *inserted && first {
                    InsertOutcome::Accepted
                } else {
                    InsertOutcome::Duplicate
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn event(id: &str, hash: &str) -> Event {
        Event {
            tenant_id: "t".into(),
            event_id: id.into(),
            event_type: "x".into(),
            event_ts: Utc::now(),
            received_at: Utc::now(),
            source: None,
            payload: serde_json::Map::new().into(),
            payload_sha256: hash.into(),
            metadata: None,
            correlation_id: None,
        }
    }

    #[test]
    fn repeats_inside_a_batch_are_duplicates_or_conflicts() {
        let events = [
            event("a", "h1"),
            event("a", "h1"),
            event("a", "h2"),
            event("b", "h3"),
        ];
        let batch = UniqueBatch::of(&events);
        assert_eq!(batch.unique.len(), 2);
        let outcomes = batch.outcomes(&[(true, "h1".into()), (false, "h3".into())]);
        use InsertOutcome::*;
        assert_eq!(outcomes, vec![Accepted, Duplicate, Conflict, Duplicate]);
    }

    #[test]
    fn a_first_occurrence_that_conflicts_does_not_make_its_repeat_accepted() {
        let events = [event("a", "new"), event("a", "old")];
        let batch = UniqueBatch::of(&events);
        let outcomes = batch.outcomes(&[(false, "old".into())]);
        assert_eq!(
            outcomes,
            vec![InsertOutcome::Conflict, InsertOutcome::Duplicate]
        );
    }
}
