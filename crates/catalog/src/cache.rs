//! Public responses, remembered until the catalog changes. Every write of
//! the catalog (products, categories, stock) moves the generation on, which
//! makes every remembered response stale at once: simple and always right.
//!
//! With Redis configured, a change is also published on a channel every
//! replica listens to, so a write on one replica makes the others forget
//! too. Bodies stay in each process; only the news of a change travels.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
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

pub struct ResponseCache {
    generation: AtomicU64,
    entries: Mutex<Entries>,
    enabled: bool,
    /// The most the remembered keys and bodies may weigh, in bytes.
    max_bytes: u64,
    /// Set when changes are shared through Redis.
    broadcast: Mutex<Option<mpsc::UnboundedSender<()>>>,
    /// This process's name on the channel, to skip its own news.
    origin: String,
    hits: metrics::Counter,
    misses: metrics::Counter,
    bytes: metrics::Gauge,
}

/// What a remembered response weighs besides its key and body: the map
/// slot, the queue slot, the validator.
const ENTRY_OVERHEAD: u64 = 160;

/// The remembered responses of one generation, forgotten oldest first
/// once they weigh more than the budget.
#[derive(Default)]
struct Entries {
    generation: u64,
    map: HashMap<String, (u64, Cached)>,
    /// Keys in the order they were remembered, with the sequence number
    /// that tells a replaced entry's old slot from its current one.
    order: VecDeque<(u64, String)>,
    next: u64,
    bytes: u64,
}

fn weight(key: &str, cached: &Cached) -> u64 {
    (key.len() + cached.body.len()) as u64 + ENTRY_OVERHEAD
}

impl Entries {
    fn remove(&mut self, key: &str) {
        if let Some((_, old)) = self.map.remove(key) {
            self.bytes = self.bytes.saturating_sub(weight(key, &old));
        }
    }

    fn clear(&mut self, generation: u64) {
        *self = Entries { generation, next: self.next, ..Entries::default() };
    }
}

impl ResponseCache {
    pub fn new(enabled: bool, max_bytes: u64) -> Self {
        Self {
            generation: AtomicU64::new(0),
            entries: Mutex::new(Entries::default()),
            enabled,
            max_bytes,
            broadcast: Mutex::new(None),
            origin: kernel::id::encode_base32(kernel::id::Uuid::now_v7().as_u128()),
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
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(guard) = self.broadcast.lock()
            && let Some(tx) = guard.as_ref()
        {
            let _ = tx.send(());
        }
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
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        if let Ok(mut guard) = self.broadcast.lock() {
            *guard = Some(tx);
        }
        let publisher = client.clone();
        let origin = self.origin.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut conn: Option<redis::aio::MultiplexedConnection> = None;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    got = rx.recv() => if got.is_none() { break },
                }
                // Many changes at once travel as one message.
                while rx.try_recv().is_ok() {}
                if conn.is_none() {
                    conn = publisher.get_multiplexed_async_connection().await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    tracing::warn!("redis unreachable; other replicas learn of this change when it is back");
                    continue;
                };
                let sent: Result<i64, _> = redis::cmd("PUBLISH").arg(&publish_on).arg(&origin).query_async(c).await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "could not announce a catalog change");
                    conn = None;
                }
            }
        });
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                        Ok(()) => {
                            cache.generation.fetch_add(1, Ordering::SeqCst);
                            let mut messages = pubsub.on_message();
                            loop {
                                tokio::select! {
                                    _ = shutdown.cancelled() => return,
                                    m = messages.next() => match m {
                                        Some(m) => {
                                            let from: String = m.get_payload().unwrap_or_default();
                                            if from != cache.origin {
                                                cache.generation.fetch_add(1, Ordering::SeqCst);
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
        });
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<Cached> {
        if !self.enabled {
            return None;
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let entries = self.entries.lock().ok()?;
        let hit = entries.map.get(key).filter(|_| entries.generation == generation).map(|(_, c)| c.clone());
        if hit.is_some() { &self.hits } else { &self.misses }.increment(1);
        hit
    }

    /// Remembers `body` for `key` if the catalog did not change since
    /// `generation` (taken before the body was built). Responses of an
    /// older generation are dropped at once; past the byte budget the
    /// oldest are forgotten, and a body heavier than the budget is never kept.
    pub fn put(&self, key: String, generation: u64, body: bytes::Bytes) -> Cached {
        let cached = Cached { etag: etag(&body), body };
        let size = weight(&key, &cached);
        if self.enabled
            && size <= self.max_bytes
            && generation == self.generation.load(Ordering::SeqCst)
            && let Ok(mut entries) = self.entries.lock()
        {
            let e = &mut *entries;
            if e.generation != generation {
                e.clear(generation);
            }
            e.remove(&key);
            while e.bytes + size > self.max_bytes {
                let Some((seq, oldest)) = e.order.pop_front() else { break };
                if e.map.get(&oldest).is_some_and(|(s, _)| *s == seq) {
                    e.remove(&oldest);
                }
            }
            let seq = e.next;
            e.next += 1;
            e.bytes += size;
            e.order.push_back((seq, key.clone()));
            e.map.insert(key, (seq, cached.clone()));
            // Replaced keys leave dead slots behind; sweep them before they add up.
            if e.order.len() > 2 * e.map.len() + 64 {
                let live = &e.map;
                e.order.retain(|(seq, k)| live.get(k).is_some_and(|(s, _)| s == seq));
            }
            self.bytes.set(e.bytes as f64);
        }
        cached
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

pub fn etag(body: &[u8]) -> axum::http::HeaderValue {
    let text = format!("\"{}\"", hex::encode(&Sha256::digest(body)[..16]));
    // Quotes and hex digits are always a valid header value.
    axum::http::HeaderValue::from_str(&text).unwrap_or_else(|_| axum::http::HeaderValue::from_static("\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_makes_everything_stale() {
        let cache = ResponseCache::new(true, 1 << 20);
        let g = cache.generation();
        cache.put("/a".into(), g, bytes::Bytes::from_static(b"one"));
        assert!(cache.get("/a").is_some());
        cache.invalidate();
        assert!(cache.get("/a").is_none());
        // A body built before a change is not remembered after it.
        cache.put("/a".into(), g, bytes::Bytes::from_static(b"old"));
        assert!(cache.get("/a").is_none());
        assert!(ResponseCache::new(false, 1 << 20).get("/a").is_none());
    }

    #[test]
    fn the_cache_never_weighs_more_than_its_budget() {
        let cache = ResponseCache::new(true, 10_000);
        let g = cache.generation();
        for i in 0..1000 {
            cache.put(format!("/p?brand={i}"), g, bytes::Bytes::from(vec![b'x'; 300]));
            assert!(cache.weighted_size() <= 10_000);
        }
        assert!(cache.get("/p?brand=999").is_some(), "the newest stays");
        assert!(cache.get("/p?brand=0").is_none(), "the oldest went");
        cache.put("/big".into(), g, bytes::Bytes::from(vec![b'x'; 20_000]));
        assert!(cache.get("/big").is_none());
        // Replacing a key does not count it twice.
        let before = cache.weighted_size();
        cache.put("/p?brand=999".into(), g, bytes::Bytes::from(vec![b'x'; 300]));
        assert_eq!(cache.weighted_size(), before);
    }
}
