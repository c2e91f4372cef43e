//! Public responses, remembered until the catalog changes. Every write of
//! the catalog (products, categories, stock) moves the generation on, which
//! makes every remembered response stale at once: simple and always right.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

const CAPACITY: usize = 10_000;

#[derive(Clone)]
pub struct Cached {
    pub body: bytes::Bytes,
    /// A strong validator, quoted: `"3f2a…"`, ready to send.
    pub etag: axum::http::HeaderValue,
}

pub struct ResponseCache {
    generation: AtomicU64,
    entries: Mutex<HashMap<String, (u64, Cached)>>,
    enabled: bool,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl ResponseCache {
    pub fn new(enabled: bool) -> Self {
        Self {
            generation: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
            enabled,
            hits: metrics::counter!("catalog_cache_total", "result" => "hit"),
            misses: metrics::counter!("catalog_cache_total", "result" => "miss"),
        }
    }

    /// The catalog changed: everything remembered is stale.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn get(&self, key: &str) -> Option<Cached> {
        if !self.enabled {
            return None;
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let entries = self.entries.lock().ok()?;
        let hit = entries.get(key).filter(|(g, _)| *g == generation).map(|(_, c)| c.clone());
        if hit.is_some() { &self.hits } else { &self.misses }.increment(1);
        hit
    }

    /// Remembers `body` for `key` if the catalog did not change since
    /// `generation` (taken before the body was built).
    pub fn put(&self, key: String, generation: u64, body: bytes::Bytes) -> Cached {
        let cached = Cached { etag: etag(&body), body };
        if self.enabled
            && generation == self.generation.load(Ordering::SeqCst)
            && let Ok(mut entries) = self.entries.lock()
        {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(key, (generation, cached.clone()));
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
        let cache = ResponseCache::new(true);
        let g = cache.generation();
        cache.put("/a".into(), g, bytes::Bytes::from_static(b"one"));
        assert!(cache.get("/a").is_some());
        cache.invalidate();
        assert!(cache.get("/a").is_none());
        // A body built before a change is not remembered after it.
        cache.put("/a".into(), g, bytes::Bytes::from_static(b"old"));
        assert!(cache.get("/a").is_none());
        assert!(ResponseCache::new(false).get("/a").is_none());
    }
}
