//! What search does with events. Two consumers, because two kinds of work
//! follow them:
//! - [`IndexFollower`]: every replica keeps its own tantivy index, so every
//!   replica applies every catalog change itself — a consumer of its own
//!   per process, started when the process began (before it rebuilt its
//!   index from the catalog), never shared.
//! - [`Consumer`]: the shop's sales statistics live in the service's
//!   database, shared by the replicas: one durable consumer, each event
//!   applied once per shop.
//!
//! Replacing a document is idempotent (the product is read again as it is
//! now), so an event applied twice, or during the rebuild, changes nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kernel::Envelope;
use platform::bus::{BatchFailure, EventHandler, HandlerError, PerProcess};

use crate::Search;

/// The shop's statistics: once per shop.
pub struct Consumer {
    pub search: Search,
}

#[async_trait]
impl EventHandler for Consumer {
    fn consumer(&self) -> &str {
        crate::CONSUMER
    }

    fn interested_in(&self, event_type: &str) -> bool {
        event_type == "order.paid"
    }

    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.search.order_paid(event).await.map_err(|e| Box::new(e) as HandlerError)
    }
}

/// How long before this process began its consumer starts: a change
/// published just before start, whose product the rebuild may have read
/// before it, is applied again.
const REPLAY_MARGIN: Duration = Duration::from_secs(10);

/// This replica's index, kept up with the catalog.
pub struct IndexFollower {
    search: Search,
    name: String,
    started: Instant,
}

impl IndexFollower {
    /// A follower for a process that began at `started` (before its index
    /// rebuild started).
    pub fn new(search: Search, started: Instant) -> Self {
        let name = format!("{}_index_{}", crate::CONSUMER, uuid::Uuid::now_v7().simple());
        IndexFollower { search, name, started }
    }
}

/// Whether a stock change can change what the index holds of its product:
/// only when the SKU came into or ran out of stock (a product is in stock
/// while any of its SKUs is), or when the event does not say.
fn stock_may_show(data: &serde_json::Value) -> bool {
    match (data.get("available_before").and_then(|v| v.as_i64()), data.get("available").and_then(|v| v.as_i64())) {
        (Some(before), Some(after)) => (before > 0) != (after > 0),
        _ => true,
    }
}

/// Whether search's index follows events of this type.
pub(crate) fn changes_the_index(event_type: &str) -> bool {
    event_type.starts_with("product.") || event_type == "inventory.changed"
}

#[async_trait]
impl EventHandler for IndexFollower {
    fn consumer(&self) -> &str {
        &self.name
    }

    fn interested_in(&self, event_type: &str) -> bool {
        changes_the_index(event_type)
    }

    fn per_process(&self) -> Option<PerProcess> {
        Some(PerProcess { replay: self.started.elapsed() + REPLAY_MARGIN, event_type: PerProcess::ALL })
    }

    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.apply(std::slice::from_ref(event)).await
    }

    /// Events that arrived together cost one index commit.
    async fn handle_batch(&self, events: &[Envelope]) -> Result<(), BatchFailure> {
        self.apply(events).await.map_err(|error| BatchFailure { applied: 0, error })
    }
}

impl IndexFollower {
    /// Reads the products `events` touched again and puts them in the index
    /// with one commit.
    async fn apply(&self, events: &[Envelope]) -> Result<(), HandlerError> {
        let mut products = BTreeSet::new();
        let mut skus = BTreeSet::new();
        for event in events {
            if event.event_type == "inventory.changed" {
                if let Some(sku) = event.data.get("sku").and_then(|v| v.as_str())
                    && stock_may_show(&event.data)
                {
                    skus.insert(sku.to_owned());
                }
            } else {
                let id = event.data.get("product_id").and_then(|v| v.as_str()).unwrap_or(&event.aggregate_id);
                products.insert(id.to_owned());
            }
        }
        if !skus.is_empty() {
            let feed = self.search.feed().map_err(Box::new)?;
            for sku in &skus {
                if let Some(id) = feed.product_of_sku(sku).await.map_err(Box::new)? {
                    products.insert(id);
                }
            }
        }
        if !products.is_empty() {
            self.search.refresh(&products.into_iter().collect::<Vec<_>>()).await.map_err(Box::new)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::stock_may_show;

    #[test]
    fn only_a_sku_coming_into_or_running_out_of_stock_touches_the_index() {
        assert!(!stock_may_show(&json!({"available_before": 5, "available": 4})));
        assert!(!stock_may_show(&json!({"available_before": 0, "available": -2})), "a backorder stays out of stock");
        assert!(stock_may_show(&json!({"available_before": 1, "available": 0})));
        assert!(stock_may_show(&json!({"available_before": 0, "available": 3})));
        assert!(stock_may_show(&json!({"available": 3})), "an event that does not say is followed");
    }
}
