//! The in-process transport: `publish` hands the event to every interested
//! consumer and returns only when all of them applied it, so the outbox row is
//! marked published only after delivery, and a crash before that redelivers.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use kernel::Envelope;
use tokio_util::sync::CancellationToken;

use super::{BusError, EventBus, EventHandler};

/// A consumer and the token that ends its subscription.
type Subscription = (Arc<dyn EventHandler>, CancellationToken);

#[derive(Default, Clone)]
pub struct InProcessBus {
    handlers: Arc<RwLock<Vec<Subscription>>>,
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn live_handlers(&self, event_type: &str) -> Vec<Arc<dyn EventHandler>> {
        let Ok(mut handlers) = self.handlers.write() else { return Vec::new() };
        handlers.retain(|(_, token)| !token.is_cancelled());
        handlers
            .iter()
            .filter(|(h, _)| h.interested_in(event_type))
            .map(|(h, _)| h.clone())
            .collect()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: &Envelope) -> Result<(), BusError> {
        // Every consumer gets its turn even if an earlier one fails; the first
        // failure is reported so the relay retries (the ones that succeeded
        // will see a duplicate and skip it).
        let mut first_error = None;
        for handler in self.live_handlers(&event.event_type) {
            if let Err(e) = handler.handle(event).await {
                tracing::warn!(consumer = handler.consumer(), event_id = %event.id,
                    event_type = %event.event_type, error = %e, "consumer failed; will retry");
                metrics::counter!("events_handler_failures_total", "consumer" => handler.consumer().to_owned()).increment(1);
                first_error.get_or_insert(BusError::Handler {
                    consumer: handler.consumer().to_owned(),
                    event_type: event.event_type.clone(),
                    event_id: event.id.to_string(),
                    reason: e.to_string(),
                });
            } else {
                metrics::counter!("events_handled_total", "consumer" => handler.consumer().to_owned()).increment(1);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn subscribe(
        &self,
        handler: Arc<dyn EventHandler>,
        shutdown: CancellationToken,
    ) -> Result<(), BusError> {
        let mut handlers = self
            .handlers
            .write()
            .map_err(|_| BusError::Subscribe { consumer: handler.consumer().into(), reason: "poisoned".into() })?;
        handlers.push((handler, shutdown));
        Ok(())
    }

    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }
}
