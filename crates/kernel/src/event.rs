//! The event envelope: what a service announces after a state change, as it
//! travels through the outbox and over the bus.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::EventId;

/// One event. `id` is unique forever; consumers record it to apply each event once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub id: EventId,
    /// Dotted name, `aggregate.verb`: `order.placed`, `inventory.changed`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub aggregate_id: String,
    pub data: serde_json::Value,
}

impl Envelope {
    /// A version-1 event that happened now.
    pub fn new(
        event_type: impl Into<String>,
        aggregate_id: impl ToString,
        data: serde_json::Value,
    ) -> Self {
        Self {
            id: EventId::new(),
            event_type: event_type.into(),
            version: 1,
            occurred_at: OffsetDateTime::now_utc(),
            aggregate_id: aggregate_id.to_string(),
            data,
        }
    }

    /// Whether `pattern` (`order.placed`, `order.*`, `*`) covers this event.
    pub fn matches(&self, pattern: &str) -> bool {
        type_matches(pattern, &self.event_type)
    }
}

/// `order.*` covers `order.placed`; `*` covers everything; otherwise exact.
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_as_json() {
        let e = Envelope::new("order.placed", "ord_1", serde_json::json!({"total": 10}));
        let text = serde_json::to_string(&e).unwrap_or_default();
        assert!(text.contains("\"type\":\"order.placed\""));
        let back: Envelope = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(back, e);
    }

    #[test]
    fn patterns() {
        assert!(type_matches("*", "user.deleted"));
        assert!(type_matches("order.*", "order.paid"));
        assert!(!type_matches("order.*", "orders.paid"));
        assert!(type_matches("order.paid", "order.paid"));
        assert!(!type_matches("order.paid", "order.placed"));
    }
}
