//! One contract, every transport: the in-process bus and the JetStream bus
//! are held to the same promises, through the outbox and relay as services
//! use them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use std::sync::Arc;
use std::time::Duration;

use platform::bus::{BatchFailure, EventBus, EventHandler, HandlerError, InProcessBus, JetStreamBus};
use platform::outbox::Relay;
use platform::testing::{self, Sandbox};
use support::{EFFECTS, Recorder, commit, event};
use tokio_util::sync::CancellationToken;

/// A running relay over a fresh producer database.
struct Rig {
    _sandbox: Sandbox,
    producer: platform::Db,
    consumer_db: platform::Db,
    bus: Arc<dyn EventBus>,
    stop: CancellationToken,
}

impl Rig {
    async fn new(sandbox: Sandbox, bus: Arc<dyn EventBus>) -> Rig {
        let producer = sandbox.db("orders", &[]).await;
        let consumer_db = sandbox.db("search", &[&EFFECTS]).await;
        let stop = CancellationToken::new();
        tokio::spawn(Relay::new(producer.clone(), bus.clone(), 50, Duration::from_millis(50)).run(stop.clone()));
        Rig { _sandbox: sandbox, producer, consumer_db, bus, stop }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

macro_rules! bus_contract_tests {
    ($transport:ident, $make:expr) => {
        mod $transport {
            use super::*;

            async fn rig() -> Option<Rig> {
                let sandbox = Sandbox::new().await;
                match $make(&sandbox).await {
                    Some(bus) => Some(Rig::new(sandbox, bus).await),
                    None => {
                        eprintln!("{}: server not configured for this run", stringify!($transport));
                        None
                    }
                }
            }

            #[tokio::test]
            async fn delivers_only_what_a_consumer_asked_for_in_order() {
                let Some(rig) = rig().await else { return };
                let orders = Recorder::build("notify", "order.*", 0, None);
                rig.bus.subscribe(orders.clone(), rig.stop.clone()).await.unwrap();
                let placed = event("order.placed");
                let other = event("user.registered");
                let paid = event("order.paid");
                for e in [&placed, &other, &paid] {
                    commit(&rig.producer, e).await;
                }
                let seen = orders.wait_for(2).await;
                assert_eq!(seen, vec![placed.id.to_string(), paid.id.to_string()]);
            }

            #[tokio::test]
            async fn each_consumer_gets_every_event() {
                let Some(rig) = rig().await else { return };
                let a = Recorder::new("search");
                let b = Recorder::new("notify");
                rig.bus.subscribe(a.clone(), rig.stop.clone()).await.unwrap();
                rig.bus.subscribe(b.clone(), rig.stop.clone()).await.unwrap();
                let e = event("product.created");
                commit(&rig.producer, &e).await;
                assert_eq!(a.wait_for(1).await, vec![e.id.to_string()]);
                assert_eq!(b.wait_for(1).await, vec![e.id.to_string()]);
            }

            #[tokio::test]
            async fn a_failed_event_is_delivered_again_and_applied_once() {
                let Some(rig) = rig().await else { return };
                let flaky = Recorder::build("search", "*", 1, Some(rig.consumer_db.clone()));
                rig.bus.subscribe(flaky.clone(), rig.stop.clone()).await.unwrap();
                let e = event("inventory.changed");
                commit(&rig.producer, &e).await;
                let seen = flaky.wait_for(2).await;
                assert!(seen.len() >= 2 && seen.iter().all(|id| *id == e.id.to_string()), "{seen:?}");
                assert_eq!(flaky.settled_effects(&e.id.to_string()).await, 1);
            }

            #[tokio::test]
            async fn events_that_arrive_together_reach_a_batching_consumer_together_each_once_in_order() {
                let Some(rig) = rig().await else { return };
                let batcher = Batcher::new(None);
                rig.bus.subscribe(batcher.clone(), rig.stop.clone()).await.unwrap();
                let events: Vec<_> = (0..20).map(|_| event("product.updated")).collect();
                let mut tx = rig.producer.begin().await.unwrap();
                for e in &events {
                    platform::outbox::enqueue(&mut tx, e).await.unwrap();
                }
                tx.commit().await.unwrap();
                let (seen, batches) = batcher.wait_for(events.len()).await;
                assert_eq!(seen, events.iter().map(|e| e.id.to_string()).collect::<Vec<_>>());
                assert!(batches < events.len(), "{batches} batches for {} events committed together", events.len());
            }

            #[tokio::test]
            async fn a_stopped_consumer_gets_nothing_more() {
                let Some(rig) = rig().await else { return };
                let mine = CancellationToken::new();
                let r = Recorder::new("search");
                rig.bus.subscribe(r.clone(), mine.clone()).await.unwrap();
                let first = event("product.updated");
                commit(&rig.producer, &first).await;
                assert_eq!(r.wait_for(1).await.len(), 1);
                mine.cancel();
                tokio::time::sleep(Duration::from_millis(100)).await;
                commit(&rig.producer, &event("product.updated")).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                assert_eq!(r.ids().await, vec![first.id.to_string()]);
            }
        }
    };
}

async fn in_process_bus(_: &Sandbox) -> Option<Arc<dyn EventBus>> {
    Some(Arc::new(InProcessBus::new()))
}

async fn jetstream_bus(sandbox: &Sandbox) -> Option<Arc<dyn EventBus>> {
    let url = testing::nats_url()?;
    let (stream, prefix) = sandbox.stream();
    let bus = JetStreamBus::connect(&url, &stream, &prefix)
        .await
        .unwrap_or_else(|e| panic!("EMPORIUM_TEST_NATS_URL is set but: {e}"));
    Some(Arc::new(bus))
}

/// A consumer that applies what it is given as one batch, after a pause
/// (so that what follows arrives meanwhile), failing every time on the
/// event `poison` names.
struct Batcher {
    applied: tokio::sync::Mutex<(Vec<String>, usize)>,
    poison: Option<String>,
}

impl Batcher {
    fn new(poison: Option<String>) -> Arc<Batcher> {
        Arc::new(Batcher { applied: tokio::sync::Mutex::new((Vec::new(), 0)), poison })
    }

    /// The ids applied, in order, and how many batches they came in, once
    /// there are `n` (panics after 15 s).
    async fn wait_for(&self, n: usize) -> (Vec<String>, usize) {
        for _ in 0..300 {
            let applied = self.applied.lock().await;
            if applied.0.len() >= n {
                return applied.clone();
            }
            drop(applied);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} events applied, expected {n}", self.applied.lock().await.0.len());
    }
}

#[async_trait::async_trait]
impl EventHandler for Batcher {
    fn consumer(&self) -> &str {
        "search"
    }

    fn interested_in(&self, event_type: &str) -> bool {
        event_type.starts_with("product.")
    }

    async fn handle(&self, event: &kernel::Envelope) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(event)).await.map_err(|f| f.error)
    }

    async fn handle_batch(&self, events: &[kernel::Envelope]) -> Result<(), BatchFailure> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut applied = self.applied.lock().await;
        applied.1 += 1;
        for (i, event) in events.iter().enumerate() {
            if self.poison.as_deref() == Some(event.id.to_string().as_str()) {
                return Err(BatchFailure { applied: i, error: "this event always fails".into() });
            }
            applied.0.push(event.id.to_string());
        }
        Ok(())
    }
}

/// JetStream: an event that keeps failing is offered again on its own, and
/// the events that came with it and after it are applied meanwhile.
#[tokio::test]
async fn an_event_that_keeps_failing_holds_up_no_other() {
    let sandbox = Sandbox::new().await;
    let Some(bus) = jetstream_bus(&sandbox).await else { return };
    let rig = Rig::new(sandbox, bus).await;
    let events: Vec<_> = (0..10).map(|_| event("product.updated")).collect();
    let poison = events[3].id.to_string();
    let batcher = Batcher::new(Some(poison.clone()));
    rig.bus.subscribe(batcher.clone(), rig.stop.clone()).await.unwrap();
    let mut tx = rig.producer.begin().await.unwrap();
    for e in &events {
        platform::outbox::enqueue(&mut tx, e).await.unwrap();
    }
    tx.commit().await.unwrap();
    let (seen, _) = batcher.wait_for(events.len() - 1).await;
    let others: Vec<String> = events.iter().map(|e| e.id.to_string()).filter(|id| *id != poison).collect();
    assert_eq!(seen, others);
}

bus_contract_tests!(in_process, in_process_bus);
bus_contract_tests!(jetstream, jetstream_bus);
