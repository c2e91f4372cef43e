//! What orders does when other services' events arrive: a deleted
//! customer's orders are kept for the books without their personal data.

use async_trait::async_trait;
use kernel::Envelope;
use platform::bus::{EventHandler, HandlerError};
use platform::outbox;

use crate::service::Orders;

pub struct Consumer {
    pub orders: Orders,
}

#[async_trait]
impl EventHandler for Consumer {
    fn consumer(&self) -> &str {
        "orders"
    }

    fn interested_in(&self, event_type: &str) -> bool {
        event_type == "user.deleted"
    }

    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let Some(user) = event.data.get("user_id").and_then(|v| v.as_str()).or(Some(event.aggregate_id.as_str())) else {
            return Ok(());
        };
        // Forgetting is idempotent; the inbox mark follows in its own transaction.
        let n = self.orders.forget(user).await.map_err(Box::new)?;
        if let Some(tx) = outbox::begin_once(&self.orders.db, "orders", &event.id).await? {
            tx.commit().await?;
        }
        tracing::info!(event_id = %event.id, orders = n, "removed a deleted customer's personal data from their orders");
        Ok(())
    }
}
