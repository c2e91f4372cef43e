//! The NATS JetStream transport: one durable stream for all events, one
//! durable pull consumer per service, messages acked only after the handler
//! applied them. Written for nats-server 2.9 (streams and consumers only).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use async_trait::async_trait;
use futures::StreamExt;
use kernel::Envelope;
use tokio_util::sync::CancellationToken;

use super::{BusError, EventBus, EventHandler, Position};

/// How long the server waits for an ack before redelivering.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Messages handed to a consumer before it acknowledges them. A consumer
/// takes what has arrived (up to this many) as one batch, and a handler
/// that applies a batch one event at a time makes the rest wait: at 32, it
/// may take up to ACK_WAIT / 32 (~1 s) per event before the last of them is
/// redelivered while still waiting its turn.
const MAX_ACK_PENDING: i64 = 32;
/// The pause before a failed event is offered again.
const RETRY_DELAY: Duration = Duration::from_secs(2);

pub struct JetStreamBus {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    subject_prefix: String,
}

impl JetStreamBus {
    /// Connects and makes sure the stream exists (created on first use).
    pub async fn connect(url: &str, stream_name: &str, subject_prefix: &str) -> Result<Self, BusError> {
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name("emporium")
            .connect(url)
            .await
            .map_err(|e| unavailable(&e))?;
        let js = jetstream::new(client.clone());
        let stream = js
            .get_or_create_stream(stream::Config {
                name: stream_name.to_owned(),
                subjects: vec![format!("{subject_prefix}.>")],
                storage: stream::StorageType::File,
                // JetStream drops a second publish of one event id in this
                // window (the relay may publish twice after a crash).
                duplicate_window: Duration::from_secs(120),
                max_age: Duration::from_secs(7 * 24 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(Self { client, js, stream, subject_prefix: subject_prefix.to_owned() })
    }

    /// Connects as the bus does and asks about JetStream and the stream,
    /// changing nothing (`emporium doctor`): what it found, in a few words.
    pub async fn probe(url: &str, stream_name: &str) -> Result<String, BusError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name("emporium-doctor")
            .connect(url)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let js = jetstream::new(client.clone());
        let found = match js.get_stream(stream_name).await {
            Ok(stream) => match stream.get_info().await {
                Ok(info) => Ok(format!("JetStream on; the stream {stream_name} holds {} events", info.state.messages)),
                Err(e) => Err(BusError::Unavailable(format!("the stream {stream_name}: {e}"))),
            },
            Err(e) if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j) if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {
                Ok(format!("JetStream on; the stream {stream_name} is made at the first start"))
            }
            Err(e) => Err(BusError::Unavailable(format!("the server answers but JetStream does not ({e}); start nats-server with -js"))),
        };
        let _ = client.drain().await;
        found
    }

    fn subject(&self, event_type: &str) -> String {
        format!("{}.{}", self.subject_prefix, event_type)
    }
}

#[async_trait]
impl EventBus for JetStreamBus {
    async fn publish(&self, event: &Envelope) -> Result<(), BusError> {
        let fail = |reason: String| BusError::Publish { event_type: event.event_type.clone(), reason };
        let payload = serde_json::to_vec(event).map_err(|e| fail(e.to_string()))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.to_string().as_str());
        let ack = self
            .js
            .publish_with_headers(self.subject(&event.event_type), headers, payload.into())
            .await
            .map_err(|e| fail(e.to_string()))?;
        ack.await.map_err(|e| fail(e.to_string()))?;
        Ok(())
    }

    async fn subscribe(
        &self,
        handler: Arc<dyn EventHandler>,
        shutdown: CancellationToken,
    ) -> Result<(), BusError> {
        let name = handler.consumer().to_owned();
        let fail = |reason: String| BusError::Subscribe { consumer: name.clone(), reason };
        let consumer: jetstream::consumer::Consumer<pull::Config> = match handler.per_process() {
            // A consumer of this process alone: ephemeral (the server drops
            // it once the process is gone), starting `replay` ago.
            Some(each) => self
                .stream
                .create_consumer(pull::Config {
                    name: Some(name.clone()),
                    durable_name: None,
                    filter_subject: self.subject(each.event_type),
                    deliver_policy: jetstream::consumer::DeliverPolicy::ByStartTime {
                        start_time: time::OffsetDateTime::now_utc() - each.replay,
                    },
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: MAX_ACK_PENDING,
                    inactive_threshold: Duration::from_secs(300),
                    ..Default::default()
                })
                .await
                .map_err(|e| fail(e.to_string()))?,
            None => self
                .stream
                .get_or_create_consumer(
                    &name,
                    pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: format!("{}.>", self.subject_prefix),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: ACK_WAIT,
                        max_ack_pending: MAX_ACK_PENDING,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| fail(e.to_string()))?,
        };
        let messages = consumer.messages().await.map_err(|e| fail(e.to_string()))?;
        // What has arrived together is handled together (up to the window).
        let mut messages = messages.ready_chunks(MAX_ACK_PENDING as usize);
        tokio::spawn(async move {
            let up = metrics::gauge!("worker_up", "worker" => format!("consumer_{name}"));
            up.set(1.0);
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = messages.next() => next,
                };
                let Some(arrived) = next else { break };
                let mut batch = Vec::with_capacity(arrived.len());
                for message in arrived {
                    match message {
                        Ok(m) => batch.push(m),
                        Err(e) => {
                            tracing::warn!(consumer = %name, error = %e, "jetstream delivery error");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                deliver(handler.as_ref(), batch).await;
            }
            up.set(0.0);
            tracing::info!(consumer = %name, "jetstream consumer stopped");
        });
        Ok(())
    }

    async fn check(&self) -> Result<(), BusError> {
        tokio::time::timeout(Duration::from_secs(2), self.client.flush())
            .await
            .map_err(|_| BusError::Unavailable("flush timed out".into()))?
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    async fn head(&self) -> Result<u64, BusError> {
        let info = tokio::time::timeout(Duration::from_secs(2), self.stream.get_info())
            .await
            .map_err(|_| BusError::Unavailable("no answer about the stream within 2 s".into()))?
            .map_err(|e| BusError::Unavailable(format!("the stream: {e}")))?;
        Ok(info.state.last_sequence)
    }

    async fn position(&self, consumer: &str) -> Result<Position, BusError> {
        let info = tokio::time::timeout(Duration::from_secs(2), self.stream.consumer_info(consumer))
            .await
            .map_err(|_| BusError::Unavailable(format!("no answer about the consumer {consumer} within 2 s")))?
            .map_err(|e| BusError::Unavailable(format!("the consumer {consumer}: {e}")))?;
        Ok(Position { applied_through: info.ack_floor.stream_sequence, in_flight: info.num_ack_pending as u64, waiting: info.num_pending })
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn close(&self) {
        if let Err(e) = self.client.flush().await {
            tracing::warn!(error = %e, "flushing nats on shutdown failed");
        }
    }
}

/// Applies messages that arrived together, in order, and acks each one
/// applied; what failed is offered again later.
async fn deliver(handler: &dyn EventHandler, messages: Vec<jetstream::Message>) {
    let consumer = handler.consumer().to_owned();
    let mut wanted = Vec::with_capacity(messages.len());
    for message in messages {
        let event: Envelope = match serde_json::from_slice(&message.payload) {
            Ok(e) => e,
            Err(e) => {
                // A message no version of us can read would be redelivered
                // forever; terminate it and say so.
                tracing::error!(consumer = %consumer, subject = %message.subject, error = %e,
                    "unreadable event terminated");
                metrics::counter!("events_unreadable_total", "consumer" => consumer.clone()).increment(1);
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
        };
        if handler.interested_in(&event.event_type) {
            wanted.push((message, event));
        } else {
            let _ = message.ack().await;
        }
    }
    if wanted.is_empty() {
        return;
    }
    let (messages, events): (Vec<jetstream::Message>, Vec<Envelope>) = wanted.into_iter().unzip();
    // A failed event is offered again later on its own; the events after it
    // are tried now, so one that keeps failing holds up no other.
    let mut from = 0;
    while from < events.len() {
        let rest = &events[from..];
        let (applied, failed) = match handler.handle_batch(rest).await {
            Ok(()) => (rest.len(), None),
            Err(failure) => {
                let applied = failure.noted(&consumer, rest, "will be redelivered");
                (applied, Some(from + applied))
            }
        };
        metrics::counter!("events_handled_total", "consumer" => consumer.clone()).increment(applied as u64);
        for (message, event) in messages[from..from + applied].iter().zip(rest) {
            if let Err(e) = message.ack().await {
                // Not fatal: the event is redelivered and the inbox skips it.
                tracing::warn!(consumer = %consumer, event_id = %event.id, error = %e, "ack failed");
            }
        }
        match failed {
            Some(at) => {
                let _ = messages[at].ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                from = at + 1;
            }
            None => break,
        }
    }
}
