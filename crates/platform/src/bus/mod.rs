//! The event bus: how events leave a service's outbox and reach the services
//! that consume them. Two transports keep the same promises (see the contract
//! tests): in process, and NATS JetStream.

mod jetstream;
mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use kernel::Envelope;
use kernel::config::NatsConfig;
use tokio_util::sync::CancellationToken;

pub use jetstream::JetStreamBus;
pub use memory::InProcessBus;

/// What a handler returns when it could not apply an event; the event will be
/// delivered again.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A consumer of events. Each service registers one; its name is the durable
/// consumer's name, so it must not change between releases.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    fn consumer(&self) -> &str;

    /// Whether this consumer wants events of this type at all.
    fn interested_in(&self, event_type: &str) -> bool;

    /// `Some` for a listener that every process needs for itself (not one
    /// replica among many sharing a durable consumer): it gets a consumer of
    /// its own, which starts with the last `replay` of the events it selects
    /// and goes away with the process. Its `consumer()` name must be unique
    /// per process. Asked when the process subscribes.
    fn per_process(&self) -> Option<PerProcess> {
        None
    }

    /// Applies the event. It may be called again with the same event (at least
    /// once delivery): record its id in the same transaction as the effect
    /// (see [`crate::outbox::begin_once`]).
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError>;

    /// Applies several events, in order, that arrived together (all of the
    /// types this consumer is interested in). A consumer whose work costs
    /// per batch more than per event (an index commit) applies them at
    /// once; by default each is handled in turn. On failure, says how many
    /// of the first events were applied: the rest are offered again.
    async fn handle_batch(&self, events: &[Envelope]) -> Result<(), BatchFailure> {
        for (applied, event) in events.iter().enumerate() {
            self.handle(event).await.map_err(|error| BatchFailure { applied, error })?;
        }
        Ok(())
    }
}

/// How a batch failed: its first `applied` events took effect, the one after
/// them failed with `error`.
#[derive(Debug)]
pub struct BatchFailure {
    pub applied: usize,
    pub error: HandlerError,
}

impl BatchFailure {
    /// The place in `events` (a batch `consumer` was given) of the event
    /// that failed, noted in the log and the failure count, which says the
    /// transport's remedy (`then`).
    fn noted(&self, consumer: &str, events: &[Envelope], then: &str) -> usize {
        let at = self.applied.min(events.len().saturating_sub(1));
        if let Some(event) = events.get(at) {
            tracing::warn!(consumer = %consumer, event_id = %event.id, event_type = %event.event_type,
                error = %self.error, "consumer failed; {then}");
        }
        metrics::counter!("events_handler_failures_total", "consumer" => consumer.to_owned()).increment(1);
        at
    }
}

/// How a per-process listener subscribes (see [`EventHandler::per_process`]).
#[derive(Debug, Clone, Copy)]
pub struct PerProcess {
    /// How far back a new subscription starts.
    pub replay: std::time::Duration,
    /// The events it is offered: one event type, or [`PerProcess::ALL`]
    /// (then `interested_in` chooses).
    pub event_type: &'static str,
}

impl PerProcess {
    /// Every event type (a subject wildcard on JetStream).
    pub const ALL: &'static str = ">";
}

/// How far a consumer has got in the stream (see [`EventBus::position`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Every event up to this stream position has been applied (JetStream:
    /// the consumer's ack floor).
    pub applied_through: u64,
    /// Events handed to the consumer and not yet applied (a failing one
    /// stays here while it is offered again).
    pub in_flight: u64,
    /// Events not yet handed to the consumer.
    pub waiting: u64,
}

impl Position {
    /// Whether everything up to the stream position `mark` has been applied.
    pub fn reached(&self, mark: u64) -> bool {
        self.applied_through >= mark || (self.in_flight == 0 && self.waiting == 0)
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "applied through {}, {} in flight, {} waiting", self.applied_through, self.in_flight, self.waiting)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot reach the event bus: {0}")]
    Unavailable(String),
    #[error("publishing {event_type} failed: {reason}")]
    Publish { event_type: String, reason: String },
    #[error("consumer {consumer} failed on {event_type} ({event_id}): {reason}")]
    Handler { consumer: String, event_type: String, event_id: String, reason: String },
    #[error("cannot subscribe {consumer}: {reason}")]
    Subscribe { consumer: String, reason: String },
}

/// A transport for events.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Returns once the transport has taken responsibility for the event: a
    /// JetStream ack, or every in-process consumer having applied it.
    async fn publish(&self, event: &Envelope) -> Result<(), BusError>;

    /// Publishes `events` in order, stopping at the first failure; answers
    /// how many were published, and the failure if one stopped it. A
    /// transport that can deliver several at once (the in-process one hands
    /// each consumer its share as one batch) does so.
    async fn publish_all(&self, events: &[Envelope]) -> (usize, Option<BusError>) {
        for (published, event) in events.iter().enumerate() {
            if let Err(e) = self.publish(event).await {
                return (published, Some(e));
            }
        }
        (events.len(), None)
    }

    /// Starts delivering events to `handler` until `shutdown` fires.
    async fn subscribe(
        &self,
        handler: Arc<dyn EventHandler>,
        shutdown: CancellationToken,
    ) -> Result<(), BusError>;

    /// Whether the transport is reachable, for `/readyz`.
    async fn check(&self) -> Result<(), BusError>;

    /// Where the stream of events ends now: the position of the last event
    /// published (0 when none). A process notes it at start and is caught
    /// up once its consumer has applied everything up to it
    /// ([`Position::reached`]); what is published later does not count.
    /// A transport that keeps no positions is always caught up.
    async fn head(&self) -> Result<u64, BusError> {
        Ok(0)
    }

    /// How far the consumer named `consumer` has got in the stream.
    async fn position(&self, consumer: &str) -> Result<Position, BusError> {
        let _ = consumer;
        Ok(Position::default())
    }

    /// A short name for logs and readiness output.
    fn kind(&self) -> &'static str;

    /// Flushes what is in flight before the process exits.
    async fn close(&self) {}
}

/// The bus the configuration asks for: JetStream when `nats.url` is set,
/// otherwise in process.
pub async fn connect(config: &NatsConfig) -> Result<Arc<dyn EventBus>, BusError> {
    match &config.url {
        Some(url) => Ok(Arc::new(
            JetStreamBus::connect(url, &config.stream, &config.subject_prefix).await?,
        )),
        None => Ok(Arc::new(InProcessBus::new())),
    }
}


#[cfg(test)]
mod tests {
    use super::Position;

    #[test]
    fn a_position_reaches_the_mark_by_its_floor_or_by_having_nothing_left() {
        let at = |applied_through, in_flight, waiting| Position { applied_through, in_flight, waiting };
        // Events published after the mark keep the consumer busy: still caught up.
        assert!(at(10, 3, 50).reached(10));
        assert!(at(12, 0, 1).reached(10));
        // A failing event before the mark holds the floor back.
        assert!(!at(9, 1, 0).reached(10));
        assert!(!at(4, 0, 6).reached(10));
        // Nothing left at all (the tail of the stream filtered away).
        assert!(at(7, 0, 0).reached(10));
        assert!(at(0, 0, 0).reached(0));
    }
}
