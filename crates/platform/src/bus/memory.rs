//! The in-process transport: `publish` hands the event to every interested
//! consumer and returns only when all of them applied it, so the outbox row is
//! marked published only after delivery, and a crash before that redelivers.
//!
//! Each publish takes the next stream position, so a process can tell when
//! what was published before a moment has been applied (see
//! [`EventBus::head`]): everything up to the oldest publish still being
//! delivered.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use kernel::Envelope;
use tokio_util::sync::CancellationToken;

use super::{BusError, EventBus, EventHandler, Position};

/// A consumer and the token that ends its subscription.
type Subscription = (Arc<dyn EventHandler>, CancellationToken);

#[derive(Default, Clone)]
pub struct InProcessBus {
    handlers: Arc<RwLock<Vec<Subscription>>>,
    sequence: Arc<Mutex<Sequence>>,
}

/// The positions given out, and those still being delivered.
#[derive(Default)]
struct Sequence {
    last: u64,
    delivering: BTreeSet<u64>,
}

/// A publish's position, given back (done) when dropped, however it ends.
struct Delivering {
    sequence: Arc<Mutex<Sequence>>,
    at: u64,
}

impl Drop for Delivering {
    fn drop(&mut self) {
        if let Ok(mut s) = self.sequence.lock() {
            s.delivering.remove(&self.at);
        }
    }
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn take_position(&self) -> Option<Delivering> {
        let mut s = self.sequence.lock().ok()?;
        s.last += 1;
        let at = s.last;
        s.delivering.insert(at);
        Some(Delivering { sequence: self.sequence.clone(), at })
    }

    fn live_handlers(&self) -> Vec<Arc<dyn EventHandler>> {
        let Ok(mut handlers) = self.handlers.write() else { return Vec::new() };
        handlers.retain(|(_, token)| !token.is_cancelled());
        handlers.iter().map(|(h, _)| h.clone()).collect()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: &Envelope) -> Result<(), BusError> {
        match self.publish_all(std::slice::from_ref(event)).await {
            (_, Some(e)) => Err(e),
            (_, None) => Ok(()),
        }
    }

    /// Each consumer gets the events it is interested in as one batch, and
    /// every consumer gets its turn even if an earlier one fails. The events
    /// before the first one some consumer failed on count as published; the
    /// relay publishes the rest again (the consumers that applied them will
    /// see duplicates and skip them).
    async fn publish_all(&self, events: &[Envelope]) -> (usize, Option<BusError>) {
        let _delivering: Vec<Delivering> = events.iter().filter_map(|_| self.take_position()).collect();
        let mut published = events.len();
        let mut first_error = None;
        for handler in self.live_handlers() {
            let (places, share): (Vec<usize>, Vec<Envelope>) =
                events.iter().enumerate().filter(|(_, e)| handler.interested_in(&e.event_type)).map(|(i, e)| (i, e.clone())).unzip();
            if share.is_empty() {
                continue;
            }
            let consumer = handler.consumer().to_owned();
            let applied = match handler.handle_batch(&share).await {
                Ok(()) => share.len(),
                Err(failure) => {
                    let place = failure.noted(&consumer, &share, "will retry");
                    let (at, failed) = (places[place], &share[place]);
                    if at < published {
                        published = at;
                        first_error = Some(BusError::Handler {
                            consumer: consumer.clone(),
                            event_type: failed.event_type.clone(),
                            event_id: failed.id.to_string(),
                            reason: failure.error.to_string(),
                        });
                    }
                    place
                }
            };
            metrics::counter!("events_handled_total", "consumer" => consumer).increment(applied as u64);
        }
        (published, first_error)
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

    async fn head(&self) -> Result<u64, BusError> {
        let s = self.sequence.lock().map_err(|_| BusError::Unavailable("poisoned".into()))?;
        Ok(s.last)
    }

    /// One position for every consumer: a publish delivers to all of them
    /// before it returns. A failed delivery ends the publish (the relay
    /// publishes the event again, at a new position).
    async fn position(&self, consumer: &str) -> Result<Position, BusError> {
        let _ = consumer;
        let s = self.sequence.lock().map_err(|_| BusError::Unavailable("poisoned".into()))?;
        let applied_through = s.delivering.first().map_or(s.last, |oldest| oldest - 1);
        Ok(Position { applied_through, in_flight: s.delivering.len() as u64, waiting: 0 })
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use kernel::Envelope;
    use tokio::sync::Semaphore;
    use tokio_util::sync::CancellationToken;

    use super::InProcessBus;
    use crate::bus::{EventBus, EventHandler, HandlerError};

    /// Applies an event once let through.
    struct Gate(Arc<Semaphore>);

    #[async_trait]
    impl EventHandler for Gate {
        fn consumer(&self) -> &str {
            "gate"
        }
        fn interested_in(&self, _: &str) -> bool {
            true
        }
        async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
            self.0.acquire().await?.forget();
            Ok(())
        }
    }

    #[tokio::test]
    async fn what_was_published_before_the_mark_is_applied_once_its_deliveries_end() {
        let bus = InProcessBus::new();
        let gate = Arc::new(Semaphore::new(0));
        bus.subscribe(Arc::new(Gate(gate.clone())), CancellationToken::new()).await.unwrap();
        let event = Envelope::new("thing.happened", "t1", serde_json::json!({}));
        let first = tokio::spawn({
            let (bus, event) = (bus.clone(), event.clone());
            async move { bus.publish(&event).await }
        });
        while bus.head().await.unwrap() < 1 {
            tokio::task::yield_now().await;
        }
        let mark = bus.head().await.unwrap();
        assert_eq!(mark, 1);
        assert!(!bus.position("gate").await.unwrap().reached(mark), "still being delivered");
        gate.add_permits(1);
        first.await.unwrap().unwrap();
        assert!(bus.position("gate").await.unwrap().reached(mark));
        // A publish after the mark that does not finish does not hold it back.
        let later = tokio::spawn({
            let bus = bus.clone();
            async move { bus.publish(&event).await }
        });
        while bus.head().await.unwrap() < 2 {
            tokio::task::yield_now().await;
        }
        let position = bus.position("gate").await.unwrap();
        assert_eq!((position.applied_through, position.in_flight), (1, 1));
        assert!(position.reached(mark) && !position.reached(2));
        gate.add_permits(1);
        later.await.unwrap().unwrap();
    }
}
