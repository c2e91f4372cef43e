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
//!
//! Stock moves with every sale, so its changes are gathered and applied
//! together at most every [`STOCK_EVERY`]: in a sale the index is read and
//! committed a few times a second instead of twice per checkout, and the
//! bus never waits on an index commit for them. A stock change gathered but
//! not applied when the process stops is not lost: the next process
//! rebuilds its index from the catalog.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kernel::Envelope;
use platform::bus::{BatchFailure, EventHandler, HandlerError, PerProcess};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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

/// How often stock changes gathered meanwhile are applied to the index.
pub const STOCK_EVERY: Duration = Duration::from_millis(200);

/// This replica's index, kept up with the catalog.
pub struct IndexFollower {
    search: Search,
    name: String,
    started: Instant,
    stock: Arc<Gathered>,
}

/// SKUs whose stock changed, waiting to be applied.
#[derive(Default)]
struct Gathered {
    skus: Mutex<BTreeSet<String>>,
    more: Notify,
}

impl Gathered {
    fn add(&self, skus: BTreeSet<String>) {
        if let Ok(mut pending) = self.skus.lock() {
            pending.extend(skus);
        }
        self.more.notify_one();
    }

    fn take(&self) -> BTreeSet<String> {
        self.skus.lock().map(|mut pending| std::mem::take(&mut *pending)).unwrap_or_default()
    }
}

impl IndexFollower {
    /// A follower for a process that began at `started` (before its index
    /// rebuild started); it applies stock changes until `shutdown`.
    pub fn new(search: Search, started: Instant, shutdown: CancellationToken) -> Self {
        let name = format!("{}_index_{}", crate::CONSUMER, uuid::Uuid::now_v7().simple());
        let stock = Arc::new(Gathered::default());
        tokio::spawn(apply_stock(search.clone(), stock.clone(), shutdown));
        IndexFollower { search, name, started, stock }
    }
}

/// The longest wait between tries while stock changes keep failing.
const STOCK_RETRY_MAX: Duration = Duration::from_secs(30);

/// Applies the stock changes gathered, at most every [`STOCK_EVERY`]. What
/// fails is gathered again and tried later, waiting twice as long each time
/// (up to [`STOCK_RETRY_MAX`]); a product that fails holds up no other.
async fn apply_stock(search: Search, stock: Arc<Gathered>, shutdown: CancellationToken) {
    let mut wait = STOCK_EVERY;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = stock.more.notified() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let skus = stock.take();
        if skus.is_empty() {
            continue;
        }
        let failed = refresh_skus(&search, skus).await;
        if failed.is_empty() {
            wait = STOCK_EVERY;
        } else {
            wait = (wait * 2).min(STOCK_RETRY_MAX);
            tracing::warn!(skus = failed.len(), retry_in_ms = wait.as_millis() as u64, "stock changes did not reach the index; trying again");
            stock.add(failed);
        }
    }
}

/// Reads the products of `skus` again and puts them in the index: all of
/// them with one commit, or, when that fails, one product at a time.
/// Answers the SKUs that did not make it.
async fn refresh_skus(search: &Search, skus: BTreeSet<String>) -> BTreeSet<String> {
    let feed = match search.feed() {
        Ok(feed) => feed,
        Err(e) => {
            tracing::warn!(error = %e, "no catalog to read stock changes from");
            return skus;
        }
    };
    let mut failed = BTreeSet::new();
    let mut products: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for sku in skus {
        match feed.product_of_sku(&sku).await {
            Ok(Some(id)) => products.entry(id).or_default().push(sku),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(sku, error = %e, "reading the product of a SKU failed");
                failed.insert(sku);
            }
        }
    }
    let ids: Vec<String> = products.keys().cloned().collect();
    if ids.is_empty() || search.refresh(&ids).await.is_ok() {
        return failed;
    }
    for (id, skus) in products {
        if let Err(e) = search.refresh(std::slice::from_ref(&id)).await {
            tracing::warn!(product = %id, error = %e, "a product's stock change did not reach the index");
            failed.extend(skus);
        }
    }
    failed
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
    /// Reads the products `events` changed again and puts them in the index
    /// with one commit; their stock changes are gathered for the next turn
    /// of [`apply_stock`].
    async fn apply(&self, events: &[Envelope]) -> Result<(), HandlerError> {
        let mut products = BTreeSet::new();
        let mut skus = BTreeSet::new();
        for event in events {
            if event.event_type == "inventory.changed" {
                if let Some(sku) = event.data.get("sku").and_then(|v| v.as_str()) {
                    skus.insert(sku.to_owned());
                }
            } else {
                let id = event.data.get("product_id").and_then(|v| v.as_str()).unwrap_or(&event.aggregate_id);
                products.insert(id.to_owned());
            }
        }
        if !skus.is_empty() {
            self.stock.add(skus);
        }
        if !products.is_empty() {
            self.search.refresh(&products.into_iter().collect::<Vec<_>>()).await.map_err(Box::new)?;
        }
        Ok(())
    }
}
