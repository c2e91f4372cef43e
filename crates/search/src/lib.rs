//! The search service: full-text search over the catalog with typo
//! tolerance, facets and suggestions, fed only by events and the catalog
//! feed port. This is its face: the spec the binary mounts and the port it needs.

mod events;
mod http;
pub mod index;
pub mod query;
mod recs;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use platform::db::Db;
use platform::migrate::Migrations;
use platform::routes::Route;
use platform::service::{BoxError, BoxFuture, Mounted, Ports, ServiceContext, ServiceSpec};
use serde::{Deserialize, Serialize};

pub use index::{IndexError, SearchIndex};
pub use query::{Request, Results};
pub use recs::rebuild_statistics;

pub const NAME: &str = "search";

/// Every path the service answers, for the load balancer's route map
/// (`emporium deploy nginx`); a test holds it to the router.
pub const ROUTES: &[Route] = &[
    Route::public("/api/v1/admin/search/no-results"),
    Route::public("/api/v1/admin/search/recommendations/rebuild"),
    Route::public("/api/v1/admin/search/reindex"),
    Route::public("/api/v1/admin/search/synonyms"),
    Route::public("/api/v1/events/view"),
    Route::public("/api/v1/me/recommendations"),
    Route::public("/api/v1/products/{id_or_slug}/recommendations"),
    Route::public("/api/v1/recommendations/trending"),
    Route::public("/api/v1/search"),
    Route::public("/api/v1/search/suggest"),
];

/// The name of the service's event consumer (its durable consumer on NATS).
pub(crate) const CONSUMER: &str = "search";

/// This service's own tables, after the platform's.
pub static MIGRATIONS: Migrations = platform::migrations!("search", ["0001_search", "0002_recommendations"]);

/// A product as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDoc {
    pub id: String,
    pub slug: String,
    pub status: String,
    pub title: String,
    pub brand: Option<String>,
    pub tags: Vec<String>,
    pub category_ids: Vec<String>,
    pub category_names: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub description: String,
    pub skus: Vec<String>,
    /// The lowest price in the shop's currency, minor units.
    pub price: Option<i64>,
    pub in_stock: bool,
    pub created_ms: i64,
    /// The product's picture for lists.
    #[serde(default)]
    pub thumbnail: Option<query::Thumbnail>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("the catalog feed is unavailable: {0}")]
pub struct FeedError(pub String);

/// What search reads from the catalog. The binary provides an in-process
/// adapter (or one over HTTP in the scaled-out shape).
#[async_trait]
pub trait CatalogFeed: Send + Sync + 'static {
    /// Active products after the cursor, oldest first: `(cursor, product)`.
    async fn page(&self, after: Option<String>, limit: u32) -> Result<Vec<(String, ProductDoc)>, FeedError>;
    /// One product whatever its status; `None` when it was deleted.
    async fn product(&self, id: &str) -> Result<Option<ProductDoc>, FeedError>;
    async fn product_of_sku(&self, sku: &str) -> Result<Option<String>, FeedError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error(transparent)]
    Store(#[from] platform::db::DbError),
    #[error("{message}")]
    Invalid { field: &'static str, code: &'static str, message: String },
    #[error("not a cursor from an earlier page, or past the first {} results (narrow the search instead)", http::MAX_RESULT_WINDOW)]
    BadCursor,
    #[error("a rebuild of the index is already running")]
    Busy,
}

/// The service's state, shared by routes, the consumer and the CLI.
#[derive(Clone)]
pub struct Search {
    pub(crate) index: Arc<SearchIndex>,
    pub(crate) db: Db,
    ports: Ports,
    /// While a rebuild runs: the products changed meanwhile, redone after the swap.
    rebuilding: Arc<Mutex<Option<BTreeSet<String>>>>,
    /// Views of one product by one visitor count once per this window (zero: every view counts).
    pub(crate) view_dedup: Duration,
    /// The index holds the whole catalog as of a complete build by this
    /// process; false from its start until then.
    built: Arc<AtomicBool>,
    pub(crate) limits: platform::limit::Limits,
}

impl Search {
    pub fn open(db: Db, ports: Ports, data_dir: &std::path::Path) -> Result<(Search, bool), SearchError> {
        let (index, fresh) = SearchIndex::open(&data_dir.join("search"))?;
        let limits = platform::limit::Limits::from_ports(&ports);
        let built = Arc::new(AtomicBool::new(false));
        let search = Search { index: Arc::new(index), db, ports, rebuilding: Arc::new(Mutex::new(None)), view_dedup: Duration::ZERO, limits, built };
        Ok((search, fresh))
    }

    pub(crate) fn feed(&self) -> Result<Arc<dyn CatalogFeed>, FeedError> {
        self.ports.get::<dyn CatalogFeed>().ok_or_else(|| FeedError("no catalog feed in this process".into()))
    }

    /// Reads `ids` from the catalog again and puts them in the index as they
    /// are now (gone when deleted or no longer active).
    pub async fn refresh(&self, ids: &[String]) -> Result<(), SearchError> {
        if let Ok(mut guard) = self.rebuilding.lock()
            && let Some(touched) = guard.as_mut()
        {
            touched.extend(ids.iter().cloned());
        }
        let feed = self.feed()?;
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        for id in ids {
            match feed.product(id).await? {
                Some(doc) => upserts.push(doc),
                None => removals.push(id.clone()),
            }
        }
        let live = self.index.live()?;
        blocking(move || live.apply(&upserts, &removals)).await
    }

    /// Builds a new index from the whole catalog beside the live one, then
    /// swaps it in; search keeps answering from the old one meanwhile.
    /// `progress` hears the count of products indexed so far.
    pub async fn reindex(&self, progress: &(dyn Fn(usize) + Send + Sync)) -> Result<usize, SearchError> {
        {
            let mut guard = self.rebuilding.lock().map_err(|_| SearchError::Busy)?;
            if guard.is_some() {
                return Err(SearchError::Busy);
            }
            *guard = Some(BTreeSet::new());
        }
        let built = self.build(progress).await;
        let touched = self.rebuilding.lock().map(|mut g| g.take().unwrap_or_default()).unwrap_or_default();
        let count = built?;
        if !touched.is_empty() {
            self.refresh(&touched.into_iter().collect::<Vec<_>>()).await?;
        }
        self.built.store(true, Ordering::SeqCst);
        Ok(count)
    }

    async fn build(&self, progress: &(dyn Fn(usize) + Send + Sync)) -> Result<usize, SearchError> {
        let aside = Arc::new(self.index.aside()?);
        let count = fill(self.feed()?, aside.clone(), progress).await?;
        let built = Arc::try_unwrap(aside).map_err(|_| IndexError::Other("the new index is still in use".into()))?;
        self.index.swap(built)?;
        Ok(count)
    }

    /// Swaps in an index another process published, every two seconds.
    async fn follow(self, shutdown: tokio_util::sync::CancellationToken) {
        platform::worker::every("search_index_follower".into(), Duration::from_secs(2), shutdown, || async {
            let index = self.index.clone();
            blocking(move || index.follow()).await.map(usize::from)
        })
        .await;
    }

    /// Waits for the catalog feed (wired once every service is mounted),
    /// then builds the index, trying again while the catalog cannot be read
    /// (another process not up yet).
    async fn first_build(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut waited = Duration::ZERO;
        while self.feed().is_err() {
            if waited >= Duration::from_secs(60) {
                tracing::error!("no catalog feed after a minute: the search index stays empty until `emporium search reindex`");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        let mut pause = Duration::from_millis(500);
        loop {
            match self.reindex(&|_| {}).await {
                Ok(n) => {
                    tracing::info!(products = n, "search index built");
                    return;
                }
                // A rebuild asked for meanwhile does the same work.
                Err(SearchError::Busy) => {}
                Err(e) => tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "building the search index failed; trying again"),
            }
            if self.built.load(Ordering::SeqCst) {
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// Puts documents in the live index as they are (tools and benchmarks;
    /// the service itself reads products through the feed).
    pub async fn index_documents(&self, docs: Vec<ProductDoc>) -> Result<(), SearchError> {
        let live = self.index.live()?;
        blocking(move || live.apply(&docs, &[])).await
    }

    pub async fn search(&self, request: Request) -> Result<Results, SearchError> {
        let synonyms = store::synonyms(&self.db).await?;
        let live = self.index.live()?;
        let results = blocking(move || query::run(&live, &request, &synonyms)).await?;
        Ok(results)
    }
}

/// Search is ready once its index holds the catalog: rebuilt from the
/// catalog at start, and every event in the stream when it was first asked
/// (after this process published what was written before start) applied by
/// this process's follower. Events published later do not count: under
/// steady traffic the follower is rarely idle, and that is not being behind.
struct CaughtUp {
    search: Search,
    bus: Arc<dyn platform::bus::EventBus>,
    /// This process's index follower.
    consumer: String,
    /// The stream's end when first asked.
    mark: std::sync::OnceLock<u64>,
}

#[async_trait]
impl platform::service::StartupCheck for CaughtUp {
    fn name(&self) -> &'static str {
        "search.index"
    }

    async fn check(&self) -> Result<(), String> {
        // Without a catalog in reach there is nothing to catch up with (the
        // start-up log already says search will fail).
        if self.search.feed().is_err() {
            return Ok(());
        }
        let mark = match self.mark.get() {
            Some(mark) => *mark,
            None => {
                let head = self.bus.head().await.map_err(|e| e.to_string())?;
                *self.mark.get_or_init(|| head)
            }
        };
        if !self.search.built.load(Ordering::SeqCst) {
            return Err("building the index from the catalog".into());
        }
        let position = self.bus.position(&self.consumer).await.map_err(|e| e.to_string())?;
        if position.reached(mark) {
            Ok(())
        } else {
            Err(format!("the consumer {} has not applied the events up to {mark} yet ({position})", self.consumer))
        }
    }
}

/// Indexes every active product the feed has into `target`.
async fn fill(feed: Arc<dyn CatalogFeed>, target: Arc<index::Open>, progress: &(dyn Fn(usize) + Send + Sync)) -> Result<usize, SearchError> {
    let mut after = None;
    let mut count = 0;
    loop {
        let page = feed.page(after.clone(), 500).await?;
        let Some((cursor, _)) = page.last() else { break };
        after = Some(cursor.clone());
        let docs: Vec<ProductDoc> = page.into_iter().map(|(_, d)| d).collect();
        count += docs.len();
        let target = target.clone();
        blocking(move || target.apply(&docs, &[])).await?;
        progress(count);
    }
    Ok(count)
}

/// The command line's rebuild: a new index under `<data_dir>/search`,
/// named current when complete. A running server swaps it in within
/// seconds; otherwise the next start opens it. The live index is not
/// touched (its writer belongs to the server).
pub async fn rebuild_offline(feed: Arc<dyn CatalogFeed>, data_dir: &std::path::Path, progress: &(dyn Fn(usize) + Send + Sync)) -> Result<usize, SearchError> {
    let root = data_dir.join("search");
    std::fs::create_dir_all(&root).map_err(IndexError::from)?;
    let built = Arc::new(index::aside_in(&root)?);
    let count = fill(feed, built.clone(), progress).await?;
    index::write_current(&root, &built.dir)?;
    Ok(count)
}

/// Runs index work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, IndexError> + Send + 'static) -> Result<T, SearchError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| IndexError::Other(e.to_string()))?.map_err(SearchError::from)
}

pub fn spec() -> ServiceSpec {
    ServiceSpec { name: NAME, migrations: &MIGRATIONS, mount, demo: None }
}

/// Opens the service outside a server (the `search reindex` command).
pub fn open(ctx: &ServiceContext) -> Result<Search, SearchError> {
    Ok(Search::open(ctx.db.clone(), ctx.ports.clone(), &ctx.config.data_dir)?.0)
}

fn mount(ctx: ServiceContext) -> BoxFuture<'static, Result<Mounted, BoxError>> {
    Box::pin(async move {
        let started = std::time::Instant::now();
        let (mut search, _) = Search::open(ctx.db.clone(), ctx.ports.clone(), &ctx.config.data_dir)?;
        search.view_dedup = Duration::from_secs(ctx.config.limits.view_dedup_secs);
        ctx.ports.provide(Arc::new(search.clone()));
        // This replica's index is rebuilt from the catalog at every start
        // (the one kept from the last run answers meanwhile): events it
        // missed while the process was away are not replayed to it.
        tokio::spawn(search.clone().first_build(ctx.shutdown.clone()));
        let follower = events::IndexFollower::new(search.clone(), started);
        if let Some(checks) = ctx.ports.get::<platform::service::StartupChecks>() {
            let consumer = platform::bus::EventHandler::consumer(&follower).to_owned();
            checks.add(Arc::new(CaughtUp { search: search.clone(), bus: ctx.bus.clone(), consumer, mark: std::sync::OnceLock::new() }));
        }
        tokio::spawn(search.clone().follow(ctx.shutdown.clone()));
        let router = http::router(search.clone());
        Ok(Mounted { router, handlers: vec![Arc::new(follower), Arc::new(events::Consumer { search })] })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_listed() {
        assert!(platform::migrate::unlisted_files(&super::MIGRATIONS).is_empty());
    }
}
