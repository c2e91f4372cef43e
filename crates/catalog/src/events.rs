//! What the catalog does when events arrive: a cancelled order gives its
//! held stock back, and news of the catalog's own changes (written by
//! another process, such as an import from the command line) makes the
//! response cache forget.

use async_trait::async_trait;
use kernel::Envelope;
use platform::bus::{EventHandler, HandlerError};
use platform::outbox;

use crate::error::CatalogError;
use crate::inventory::Inventory;

pub struct Consumer {
    pub inventory: Inventory,
}

#[async_trait]
impl EventHandler for Consumer {
    fn consumer(&self) -> &str {
        "catalog"
    }

    fn interested_in(&self, event_type: &str) -> bool {
        event_type == "order.cancelled" || event_type.starts_with("product.") || event_type.starts_with("inventory.")
    }

    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        if event.event_type.starts_with("inventory.") {
            // The stock of one product: what shows it, and every listing when
            // it may have come into or run out of stock.
            let product = event.data.get("product_id").and_then(|v| v.as_str()).filter(|p| !p.is_empty());
            let available = event.data.get("available").and_then(|v| v.as_i64());
            match product {
                Some(product) => {
                    let listings = event.event_type == "inventory.back_in_stock" || available.is_none_or(|a| a <= 0);
                    self.inventory.stock_changed(crate::inventory::Touched::of(product.to_owned(), listings));
                }
                None => self.inventory.changed(),
            }
            return Ok(());
        }
        if event.event_type != "order.cancelled" {
            self.inventory.changed();
            return Ok(());
        }
        // The order's latest reservation (one per payment attempt), or the order id.
        let key = event.data.get("reservation").or_else(|| event.data.get("order_id"));
        let Some(order) = key.and_then(|v| v.as_str()) else {
            tracing::warn!(event_id = %event.id, "order.cancelled without an order_id; ignored");
            return Ok(());
        };
        // Releasing is idempotent, so it runs in its own transaction first and
        // the inbox mark follows (one SQLite writer at a time: never nest them).
        match self.inventory.release(order).await {
            Ok(()) | Err(CatalogError::ReservationNotFound(_)) => {}
            // A paid order's stock has left the shelf; the orders service
            // restocks what it refunds, so there is nothing to release.
            Err(CatalogError::Contention)
                if self.inventory.reservation(order).await.is_ok_and(|r| r.state == "committed") => {}
            Err(e) => return Err(Box::new(e)),
        }
        if let Some(tx) = outbox::begin_once(&self.inventory.db, "catalog", &event.id).await? {
            tx.commit().await?;
        }
        tracing::info!(event_id = %event.id, order_id = order, "released the stock of a cancelled order");
        Ok(())
    }
}
