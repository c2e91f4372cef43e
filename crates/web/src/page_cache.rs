//! The pages most shoppers see first — home, categories, products — kept
//! rendered for a few seconds, for visitors who are neither signed in nor
//! holding a cart (so the page is the same for all of them).
//!
//! A page's form token is the visitor's own: the kept page is cut where the
//! token was and the visitor's (always a well-formed one this shop signed)
//! is put back there alone, so a page served from here posts as safely as
//! a freshly drawn one. Pages are keyed by the parameters they read, and
//! all of them together stay under a byte budget
//! (`http.page_cache_max_bytes`). A signed-in shopper, a cart, any method
//! but GET, and any answer but a plain 200 go past it untouched. What is
//! kept is at most a few seconds old (`http.page_cache_secs`, 0 turns it
//! off); the catalog's own response cache keeps the pages' data exact.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Site;
use crate::account::{ACCESS, REFRESH};
use crate::session::{self, CART_ID, CART_SECRET, CSRF};

/// Pages kept at most; past it (or past the byte budget) the stale ones
/// go, then the oldest.
const CAPACITY: usize = 2_000;

/// Largest page kept.
const MAX_BODY: usize = 512 * 1024;

/// What a kept page costs beyond its text (its key, headers, bookkeeping).
const OVERHEAD: usize = 256;

struct Page {
    at: Instant,
    content_type: HeaderValue,
    cache_control: Option<HeaderValue>,
    /// The page cut where the form token was: the visitor's own token goes
    /// between each two parts, and nowhere else.
    parts: Vec<String>,
}

impl Page {
    fn weight(&self, key: &str) -> usize {
        OVERHEAD + key.len() + self.parts.iter().map(String::len).sum::<usize>()
    }

    /// The page with `token` (a well-formed one: hex and a dot, escaped all the same) put back.
    fn with_token(&self, token: &str) -> String {
        self.parts.join(&crate::xml_escape(token))
    }
}

#[derive(Default)]
struct Store {
    pages: HashMap<String, Page>,
    bytes: usize,
}

pub struct PageCache {
    ttl: Duration,
    max_bytes: usize,
    store: Mutex<Store>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl PageCache {
    pub fn new(ttl: Duration, max_bytes: usize) -> Self {
        PageCache {
            ttl,
            max_bytes,
            store: Mutex::new(Store::default()),
            hits: metrics::counter!("web_page_cache_total", "result" => "hit"),
            misses: metrics::counter!("web_page_cache_total", "result" => "miss"),
        }
    }

    /// How many pages are kept, and what they weigh in bytes.
    pub fn usage(&self) -> (usize, usize) {
        self.store.lock().map_or((0, 0), |s| (s.pages.len(), s.bytes))
    }

    fn get(&self, key: &str, token: &str) -> Option<(HeaderValue, Option<HeaderValue>, String)> {
        let store = self.store.lock().ok()?;
        let page = store.pages.get(key).filter(|p| p.at.elapsed() < self.ttl)?;
        Some((page.content_type.clone(), page.cache_control.clone(), page.with_token(token)))
    }

    fn put(&self, key: String, page: Page) {
        let weight = page.weight(&key);
        if weight > self.max_bytes {
            return;
        }
        let Ok(mut store) = self.store.lock() else { return };
        let store = &mut *store;
        if let Some(old) = store.pages.remove(&key) {
            store.bytes -= old.weight(&key);
        }
        if store.pages.len() >= CAPACITY || store.bytes + weight > self.max_bytes {
            let ttl = self.ttl;
            let mut gone = 0;
            store.pages.retain(|k, p| {
                let fresh = p.at.elapsed() < ttl;
                if !fresh {
                    gone += p.weight(k);
                }
                fresh
            });
            store.bytes -= gone;
            if store.pages.len() >= CAPACITY || store.bytes + weight > self.max_bytes {
                let mut by_age: Vec<(Instant, String)> = store.pages.iter().map(|(k, p)| (p.at, k.clone())).collect();
                by_age.sort();
                for (_, k) in by_age {
                    if store.pages.len() < CAPACITY && store.bytes + weight <= self.max_bytes {
                        break;
                    }
                    if let Some(p) = store.pages.remove(&k) {
                        store.bytes -= p.weight(&k);
                    }
                }
            }
        }
        store.bytes += weight;
        store.pages.insert(key, page);
    }
}

/// A path segment kept as it is: a slug without escapes (an escaped one
/// names the same page in many spellings, so it is drawn, not kept).
fn plain(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The key a kept page is known by: its path and the parameters the page
/// reads, parsed and written in one order (other parameters do not change
/// the page, so they do not make another copy of it). `None` for a page
/// not kept, or a query the page would refuse.
fn key_of(uri: &Uri) -> Option<String> {
    let path = uri.path();
    if path == "/" {
        return Some(path.to_owned());
    }
    if let Some(slug) = path.strip_prefix("/categories/").filter(|s| plain(s)) {
        let axum::extract::Query(p) = axum::extract::Query::<crate::pages::SearchParams>::try_from_uri(uri).ok()?;
        return Some(p.page_key(&format!("/categories/{slug}")));
    }
    if let Some(slug) = path.strip_prefix("/products/").filter(|s| plain(s)) {
        let axum::extract::Query(q) = axum::extract::Query::<crate::pages::ProductQuery>::try_from_uri(uri).ok()?;
        return Some(q.page_key(&format!("/products/{slug}")));
    }
    None
}

/// Whether the visitor sees the page as everyone does: no session, no cart.
fn anonymous(request: &Request) -> bool {
    let headers = request.headers();
    [ACCESS, REFRESH, CART_ID, CART_SECRET].iter().all(|name| session::cookie(headers, name).is_none())
}

pub async fn layer(State(site): State<Site>, request: Request, next: Next) -> Response {
    let Some(cache) = site.pages.clone() else { return next.run(request).await };
    if request.method() != Method::GET || !anonymous(&request) {
        return next.run(request).await;
    }
    let Some(key) = key_of(request.uri()) else { return next.run(request).await };
    // The form-token layer has made sure the visitor holds a good token;
    // anything else is not put into a page.
    let Some(token) = session::cookie(request.headers(), CSRF).filter(|t| session::well_formed(t)) else {
        return next.run(request).await;
    };

    if let Some((content_type, cache_control, body)) = cache.get(&key, &token) {
        cache.hits.increment(1);
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        if let Some(c) = cache_control {
            headers.insert(CACHE_CONTROL, c);
        }
        return response;
    }
    cache.misses.increment(1);

    let response = next.run(request).await;
    let keep = response.status() == StatusCode::OK && !response.headers().contains_key(SET_COOKIE);
    if !keep {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        // Too large to keep: it was already read, so it cannot be sent either.
        Err(e) => {
            tracing::warn!(error = %e, page = key, "a page too large to keep");
            return (StatusCode::INTERNAL_SERVER_ERROR, "This page is too large.").into_response();
        }
    };
    if let (Ok(text), Some(content_type)) = (std::str::from_utf8(&bytes), parts.headers.get(CONTENT_TYPE).cloned()) {
        let page = Page { at: Instant::now(), content_type, cache_control: parts.headers.get(CACHE_CONTROL).cloned(), parts: text.split(token.as_str()).map(str::to_owned).collect() };
        cache.put(key, page);
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_shared_pages_are_kept_and_by_what_they_read() {
        let key = |uri: &str| key_of(&uri.parse::<Uri>().unwrap_or_default());
        assert_eq!(key("/").as_deref(), Some("/"));
        assert_eq!(key("/?utm=1&x=2").as_deref(), Some("/"));
        assert_eq!(key("/categories/lamps").as_deref(), Some("/categories/lamps"));
        assert_eq!(key("/categories/lamps?junk=1&sort=newest&category=x").as_deref(), Some("/categories/lamps?sort=newest"));
        assert_eq!(key("/products/brass-desk-lamp?a=1").as_deref(), Some("/products/brass-desk-lamp"));
        assert_eq!(key("/products/brass-desk-lamp?notified=1").as_deref(), Some("/products/brass-desk-lamp?notified"));
        for uri in ["/search", "/cart", "/products/x/notify-me", "/products/", "/account", "/admin", "/categories/a/b", "/products/l%61mp", "/categories/x?min_price=cheap"] {
            assert!(key(uri).is_none(), "{uri}");
        }
    }

    #[test]
    fn stale_pages_are_not_served_and_the_store_stays_bounded() {
        let cache = PageCache::new(Duration::from_millis(50), 64 * 1024);
        let page = |body: &str| Page { at: Instant::now(), content_type: HeaderValue::from_static("text/html"), cache_control: None, parts: vec![body.to_owned()] };
        cache.put("/".into(), page("home"));
        assert_eq!(cache.get("/", "t").map(|p| p.2).as_deref(), Some("home"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("/", "t").is_none(), "too old");
        for i in 0..CAPACITY + 10 {
            cache.put(format!("/products/p{i}"), page(&"p".repeat(1000)));
            let (entries, bytes) = cache.usage();
            assert!(entries <= CAPACITY && bytes <= 64 * 1024, "{entries} pages, {bytes} bytes");
        }
        let (entries, bytes) = cache.usage();
        assert!(entries > 10 && bytes > 32 * 1024, "still keeps what fits: {entries} pages, {bytes} bytes");
    }

    #[test]
    fn the_token_goes_only_where_it_was() {
        let page = Page { at: Instant::now(), content_type: HeaderValue::from_static("text/html"), cache_control: None, parts: vec!["<a>".into(), "</a> csrf".into()] };
        assert_eq!(page.with_token("ab.cd"), "<a>ab.cd</a> csrf");
        assert_eq!(page.with_token("<x>"), "<a>&lt;x&gt;</a> csrf");
    }
}
