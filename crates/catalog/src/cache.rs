//! Public responses, remembered until what they show changes.
//!
//! Each remembered response says what it shows: some products (a product's
//! page, a listing's products) and whether it is a listing. A stock change of
//! one product forgets only the responses that show that product, and every
//! listing when the product came into or ran out of stock (a listing filtered
//! on stock may gain or lose it). Any other change of the catalog (products
//! edited, categories, imports) forgets everything: simple and always right.
//!
//! With Redis configured, changes are also published on a channel every
//! replica listens to, so a write on one replica makes the others forget
//! the same. Bodies stay in each process; only the news of a change travels.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The Redis channel replicas announce catalog changes on, after the
/// shop's `redis.prefix` (shops sharing a Redis hear only their own).
fn channel(prefix: &str) -> String {
    format!("{prefix}:catalog:changed")
}

#[derive(Clone)]
pub struct Cached {
    pub body: bytes::Bytes,
    /// A strong validator, quoted: `"3f2a…"`, ready to send.
    pub etag: axum::http::HeaderValue,
}

pub use kernel::news::{CatalogChange as Change, Shows};

/// The news on the channel: who changed what.
#[derive(Serialize, Deserialize)]
struct News {
    from: String,
    #[serde(flatten)]
    change: Change,
}

/// When a response began to be built: a change after it makes it stale.
#[derive(Debug, Clone, Copy)]
pub struct Stamp(u64);

pub struct ResponseCache {
    entries: Mutex<Entries>,
    enabled: bool,
    /// The most the remembered keys and bodies may weigh, in bytes.
    max_bytes: u64,
    /// Set when changes are shared through Redis.
    broadcast: Mutex<Option<mpsc::UnboundedSender<Change>>>,
    /// This process's name on the channel, to skip its own news.
    origin: String,
    /// Told of every change forgotten here, this process's and the other
    /// replicas' alike (the storefront's page cache listens).
    news: kernel::news::CatalogNews,
    hits: metrics::Counter,
    misses: metrics::Counter,
    bytes: metrics::Gauge,
}

/// What a remembered response weighs besides its key and body: the map
/// slot, the queue slot, the validator.
const ENTRY_OVERHEAD: u64 = 160;

/// The remembered responses since everything was last forgotten, forgotten
/// oldest first once they weigh more than the budget.
#[derive(Default)]
struct Entries {
    /// The changes heard (to refuse responses built before a change of what
    /// they show).
    log: kernel::news::ChangeLog,
    map: HashMap<String, Entry>,
    /// Keys in the order they were remembered, with the sequence number
    /// that tells a replaced entry's old slot from its current one.
    order: VecDeque<(u64, String)>,
    next: u64,
    bytes: u64,
    /// The keys of the responses that show a product.
    by_product: HashMap<String, HashSet<String>>,
    /// The keys of the listings.
    listings: HashSet<String>,
}

struct Entry {
    seq: u64,
    cached: Cached,
    shows: Shows,
}

fn weight(key: &str, cached: &Cached) -> u64 {
    (key.len() + cached.body.len()) as u64 + ENTRY_OVERHEAD
}

impl Entries {
    fn remove(&mut self, key: &str) {
        if let Some(old) = self.map.remove(key) {
            self.bytes = self.bytes.saturating_sub(weight(key, &old.cached));
            for product in &old.shows.products {
                if let Some(keys) = self.by_product.get_mut(product) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.by_product.remove(product);
                    }
                }
            }
            if old.shows.listing {
                self.listings.remove(key);
            }
        }
    }

    fn forget(&mut self, change: &Change) {
        if self.log.record(change) {
            *self = Entries { log: std::mem::take(&mut self.log), next: self.next, ..Entries::default() };
            return;
        }
        let Change::Stock { products, listings } = change else { return };
        for product in products {
            for key in self.by_product.remove(product).unwrap_or_default() {
                self.remove(&key);
            }
        }
        if *listings {
            for key in std::mem::take(&mut self.listings) {
                self.remove(&key);
            }
        }
    }
}

impl ResponseCache {
    pub fn new(enabled: bool, max_bytes: u64) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            enabled,
            max_bytes,
            broadcast: Mutex::new(None),
            origin: kernel::id::encode_base32(kernel::id::Uuid::now_v7().as_u128()),
            news: kernel::news::CatalogNews::default(),
            hits: metrics::counter!("catalog_cache_total", "result" => "hit"),
            misses: metrics::counter!("catalog_cache_total", "result" => "miss"),
            bytes: metrics::gauge!("catalog_cache_bytes"),
        }
    }

    /// What the remembered responses weigh now, in bytes (keys, bodies and
    /// a fixed overhead each); never more than the budget.
    pub fn weighted_size(&self) -> u64 {
        self.entries.lock().map_or(0, |e| e.bytes)
    }

    /// The catalog changed: everything remembered is stale, here and (with
    /// Redis) on every replica.
    pub fn invalidate(&self) {
        self.changed(Change::Everything);
    }

    /// `change` happened: what it touched is forgotten, here and (with
    /// Redis) on every replica.
    pub fn changed(&self, change: Change) {
        self.forget_here(&change);
        if let Ok(guard) = self.broadcast.lock()
            && let Some(tx) = guard.as_ref()
        {
            let _ = tx.send(change);
        }
    }

    fn forget_here(&self, change: &Change) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.forget(change);
            self.bytes.set(entries.bytes as f64);
        }
        self.news.announce(change);
    }

    /// Where the changes forgotten here are announced in this process.
    pub fn news(&self) -> &kernel::news::CatalogNews {
        &self.news
    }

    /// Shares changes with other replicas through Redis until `shutdown`:
    /// publishes this process's changes and forgets on theirs, on the
    /// channel of `prefix` (`redis.prefix`). A lost connection is retried;
    /// on reconnecting everything is forgotten once, since news may have
    /// been missed meanwhile.
    pub fn share_through_redis(self: &Arc<Self>, url: &str, prefix: &str, shutdown: CancellationToken) -> Result<(), redis::RedisError> {
        let client = redis::Client::open(url)?;
        let channel = channel(prefix);
        let publish_on = channel.clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
        if let Ok(mut guard) = self.broadcast.lock() {
            *guard = Some(tx);
        }
        let publisher = client.clone();
        let origin = self.origin.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut conn: Option<redis::aio::MultiplexedConnection> = None;
            loop {
                let mut change = tokio::select! {
                    _ = stop.cancelled() => break,
                    got = rx.recv() => match got { Some(change) => change, None => break },
                };
                // Many changes at once travel as one message.
                while let Ok(more) = rx.try_recv() {
                    change = change.merge(more);
                }
                if conn.is_none() {
                    conn = publisher.get_multiplexed_async_connection().await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    tracing::warn!("redis unreachable; other replicas learn of this change when it is back");
                    continue;
                };
                let news = serde_json::to_string(&News { from: origin.clone(), change }).unwrap_or_default();
                let sent: Result<i64, _> = redis::cmd("PUBLISH").arg(&publish_on).arg(news).query_async(c).await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "could not announce a catalog change");
                    conn = None;
                }
            }
        });
        let cache = Arc::clone(self);
        let origin = self.origin.clone();
        tokio::spawn(hear(client, channel, Some(origin), move |change| cache.forget_here(change), shutdown));
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<Cached> {
        if !self.enabled {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        let hit = entries.map.get(key).map(|e| e.cached.clone());
        if hit.is_some() { &self.hits } else { &self.misses }.increment(1);
        hit
    }

    /// How many times everything was forgotten (a stock change of a few
    /// products does not count).
    pub fn generation(&self) -> u64 {
        self.entries.lock().map_or(0, |e| e.log.everything())
    }

    /// When a response begins to be built (before it reads anything). A
    /// poisoned lock stays poisoned, so `put` keeps nothing whatever the stamp.
    pub fn stamp(&self) -> Stamp {
        Stamp(self.entries.lock().map_or(0, |e| e.log.epoch()))
    }

    /// Remembers `body` for `key` unless what it `shows` changed since
    /// `stamp` (taken before the body was built). Past the byte budget the
    /// oldest are forgotten, and a body heavier than the budget is never kept.
    pub fn put(&self, key: String, stamp: Stamp, shows: Shows, body: bytes::Bytes) -> Cached {
        let cached = Cached { etag: etag(&body), body };
        let size = weight(&key, &cached);
        if self.enabled
            && size <= self.max_bytes
            && let Ok(mut entries) = self.entries.lock()
            && entries.log.current(stamp.0, &shows)
        {
            let e = &mut *entries;
            e.remove(&key);
            while e.bytes + size > self.max_bytes {
                let Some((seq, oldest)) = e.order.pop_front() else { break };
                if e.map.get(&oldest).is_some_and(|entry| entry.seq == seq) {
                    e.remove(&oldest);
                }
            }
            let seq = e.next;
            e.next += 1;
            e.bytes += size;
            e.order.push_back((seq, key.clone()));
            for product in &shows.products {
                e.by_product.entry(product.clone()).or_default().insert(key.clone());
            }
            if shows.listing {
                e.listings.insert(key.clone());
            }
            e.map.insert(key, Entry { seq, cached: cached.clone(), shows });
            // Replaced keys leave dead slots behind; sweep them before they add up.
            if e.order.len() > 2 * e.map.len() + 64 {
                let live = &e.map;
                e.order.retain(|(seq, k)| live.get(k).is_some_and(|entry| entry.seq == *seq));
            }
            self.bytes.set(e.bytes as f64);
        }
        cached
    }
}

pub fn etag(body: &[u8]) -> axum::http::HeaderValue {
    let text = format!("\"{}\"", hex::encode(&Sha256::digest(body)[..16]));
    // Quotes and hex digits are always a valid header value.
    axum::http::HeaderValue::from_str(&text).unwrap_or_else(|_| axum::http::HeaderValue::from_static("\"\""))
}

/// Follows the catalog's news on Redis (`redis.prefix`) until `shutdown`
/// and announces it on `news`: for a process that keeps copies of catalog
/// data without running the catalog (a storefront of its own).
pub fn follow_through_redis(url: &str, prefix: &str, news: kernel::news::CatalogNews, shutdown: CancellationToken) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(url)?;
    tokio::spawn(hear(client, channel(prefix), None, move |change| news.announce(change), shutdown));
    Ok(())
}

/// Hears the news on `channel` until `shutdown`, skipping what `origin`
/// sent, and passes each change to `forget`. A lost connection is retried;
/// on (re)subscribing everything is forgotten once, since news may have
/// been missed meanwhile; news in a form this version does not know
/// forgets everything too.
async fn hear(client: redis::Client, channel: String, origin: Option<String>, forget: impl Fn(&Change) + Send + 'static, shutdown: CancellationToken) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    forget(&Change::Everything);
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            m = messages.next() => match m {
                                Some(m) => {
                                    let payload: String = m.get_payload().unwrap_or_default();
                                    match serde_json::from_str::<News>(&payload) {
                                        Ok(news) if Some(&news.from) == origin.as_ref() => {}
                                        Ok(news) => forget(&news.change),
                                        Err(_) => forget(&Change::Everything),
                                    }
                                }
                                None => break,
                            },
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not subscribe to catalog changes"),
            },
            Err(e) => tracing::warn!(error = %e, "redis unreachable for catalog changes"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: &str) -> Shows {
        Shows { products: vec![id.into()], listing: false }
    }

    fn listing(ids: &[&str]) -> Shows {
        Shows { products: ids.iter().map(|s| s.to_string()).collect(), listing: true }
    }

    fn stock(ids: &[&str], listings: bool) -> Change {
        Change::Stock { products: ids.iter().map(|s| s.to_string()).collect(), listings }
    }

    #[test]
    fn a_change_of_everything_makes_everything_stale() {
        let cache = ResponseCache::new(true, 1 << 20);
        let g = cache.stamp();
        cache.put("/a".into(), g, product("a"), bytes::Bytes::from_static(b"one"));
        assert!(cache.get("/a").is_some());
        cache.invalidate();
        assert!(cache.get("/a").is_none());
        // A body built before a change is not remembered after it.
        cache.put("/a".into(), g, product("a"), bytes::Bytes::from_static(b"old"));
        assert!(cache.get("/a").is_none());
        assert!(ResponseCache::new(false, 1 << 20).get("/a").is_none());
    }

    #[test]
    fn a_stock_change_forgets_only_what_shows_the_product() {
        let cache = ResponseCache::new(true, 1 << 20);
        let s = cache.stamp();
        cache.put("product a".into(), s, product("a"), bytes::Bytes::from_static(b"a"));
        cache.put("product b".into(), s, product("b"), bytes::Bytes::from_static(b"b"));
        cache.put("list a,b".into(), s, listing(&["a", "b"]), bytes::Bytes::from_static(b"ab"));
        cache.put("list c".into(), s, listing(&["c"]), bytes::Bytes::from_static(b"c"));
        cache.put("categories".into(), s, Shows::default(), bytes::Bytes::from_static(b"t"));

        cache.changed(stock(&["a"], false));
        assert!(cache.get("product a").is_none());
        assert!(cache.get("list a,b").is_none(), "a listing that shows it");
        for kept in ["product b", "list c", "categories"] {
            assert!(cache.get(kept).is_some(), "{kept}");
        }
        // A body of `a` built before its change is refused; one of `b` is kept.
        cache.put("product a".into(), s, product("a"), bytes::Bytes::from_static(b"old"));
        assert!(cache.get("product a").is_none());
        let after = cache.stamp();
        cache.put("product a".into(), after, product("a"), bytes::Bytes::from_static(b"new"));
        assert_eq!(cache.get("product a").map(|c| c.body), Some(bytes::Bytes::from_static(b"new")));

        // Into or out of stock: every listing goes, even one built before that did not show it.
        cache.changed(stock(&["b"], true));
        assert!(cache.get("list c").is_none());
        assert!(cache.get("product b").is_none());
        assert!(cache.get("product a").is_some() && cache.get("categories").is_some());
        cache.put("list c".into(), after, listing(&["c"]), bytes::Bytes::from_static(b"old"));
        assert!(cache.get("list c").is_none());
        cache.put("product c".into(), after, product("c"), bytes::Bytes::from_static(b"c"));
        assert!(cache.get("product c").is_some(), "a product page of another product built meanwhile is true");
    }

    #[test]
    fn changes_merge_into_one_message_and_read_back() {
        let merged = stock(&["b", "a"], false).merge(stock(&["a"], true));
        assert_eq!(merged, Change::Stock { products: vec!["a".into(), "b".into()], listings: true });
        assert_eq!(merged.clone().merge(Change::Everything), Change::Everything);
        let text = serde_json::to_string(&News { from: "me".into(), change: merged.clone() }).unwrap();
        let back: News = serde_json::from_str(&text).unwrap();
        assert_eq!((back.from.as_str(), back.change), ("me", merged));
        assert!(serde_json::from_str::<News>("01HOLDFORMAT").is_err(), "an older replica's bare name is not news of this form");
    }

    #[test]
    fn the_cache_never_weighs_more_than_its_budget() {
        let cache = ResponseCache::new(true, 10_000);
        let g = cache.stamp();
        for i in 0..1000 {
            cache.put(format!("/p?brand={i}"), g, product(&format!("p{i}")), bytes::Bytes::from(vec![b'x'; 300]));
            assert!(cache.weighted_size() <= 10_000);
        }
        assert!(cache.get("/p?brand=999").is_some(), "the newest stays");
        assert!(cache.get("/p?brand=0").is_none(), "the oldest went");
        cache.put("/big".into(), g, Shows::default(), bytes::Bytes::from(vec![b'x'; 20_000]));
        assert!(cache.get("/big").is_none());
        // Replacing a key does not count it twice.
        let before = cache.weighted_size();
        cache.put("/p?brand=999".into(), g, product("p999"), bytes::Bytes::from(vec![b'x'; 300]));
        assert_eq!(cache.weighted_size(), before);
        // Forgotten entries leave nothing in the product index.
        let entries = cache.entries.lock().unwrap();
        assert!(entries.by_product.len() <= entries.map.len());
    }
}
