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

use std::time::{Duration, Instant};

use async_trait::async_trait;
use kernel::Envelope;
use platform::bus::{EventHandler, HandlerError, PerProcess};

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
        let product = if event.event_type == "inventory.changed" {
            let Some(sku) = event.data.get("sku").and_then(|v| v.as_str()) else { return Ok(()) };
            let feed = self.search.feed().map_err(Box::new)?;
            feed.product_of_sku(sku).await.map_err(Box::new)?
        } else {
            event.data.get("product_id").and_then(|v| v.as_str()).map(str::to_owned).or(Some(event.aggregate_id.clone()))
        };
        if let Some(id) = product {
            self.search.refresh(&[id]).await.map_err(Box::new)?;
        }
        Ok(())
    }
}
