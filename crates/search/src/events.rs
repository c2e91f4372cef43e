//! What search does when the catalog changes: the product is read again
//! and its document replaced (removed when deleted or no longer active).
//! Replacing is idempotent, so a redelivered event changes nothing.

use async_trait::async_trait;
use kernel::Envelope;
use platform::bus::{EventHandler, HandlerError};
use platform::outbox;

use crate::Search;

pub struct Consumer {
    pub search: Search,
}

#[async_trait]
impl EventHandler for Consumer {
    fn consumer(&self) -> &str {
        crate::CONSUMER
    }

    fn interested_in(&self, event_type: &str) -> bool {
        event_type.starts_with("product.") || event_type == "inventory.changed" || event_type == "order.paid"
    }

    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        if event.event_type == "order.paid" {
            return self.search.order_paid(event).await.map_err(|e| Box::new(e) as HandlerError);
        }
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
        if let Some(tx) = outbox::begin_once(&self.search.db, crate::CONSUMER, &event.id).await? {
            tx.commit().await?;
        }
        Ok(())
    }
}
