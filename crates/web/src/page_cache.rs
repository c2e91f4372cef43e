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
//! off), except that a product page lives until the catalog announces a
//! change of its product (up to [`FOLLOWED_MAX_AGE`]) once the cache follows
//! the catalog's news ([`PageCache::follow`]). Any announced change forgets
//! the pages showing what it touched: a stock change the product's pages
//! (and the listings when a product came into or ran out of stock), any
//! other change every page. Listings keep their few seconds: they show
//! search's answers, which follow the catalog a moment later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use kernel::news::{CatalogChange, CatalogNews, ChangeLog, Shows};

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

/// The longest a product page is kept while the cache follows the
/// catalog's news: what else it shows (recommendations) moves slowly.
pub const FOLLOWED_MAX_AGE: Duration = Duration::from_secs(60);


struct Page {
    at: Instant,
    content_type: HeaderValue,
    cache_control: Option<HeaderValue>,
    /// The page cut where the form token was: the visitor's own token goes
    /// between each two parts, and nowhere else.
    parts: Vec<String>,
    /// What the page shows, when its handler said (see [`shows`]).
    shows: Option<Shows>,
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
    /// The changes heard (to refuse pages drawn before a change of what
    /// they show).
    log: ChangeLog,
}

impl Store {
    fn forget(&mut self, change: &CatalogChange) {
        self.log.record(change);
        let mut gone = 0;
        self.pages.retain(|k, p| {
            // A page that does not say what it shows goes with any change.
            let touched = p.shows.as_ref().is_none_or(|s| s.touched_by(change));
            if touched {
                gone += p.weight(k);
            }
            !touched
        });
        self.bytes -= gone;
    }

    /// Whether a page drawn from epoch `since` on, showing `shows`, missed
    /// no change.
    fn current(&self, since: u64, shows: Option<&Shows>) -> bool {
        shows.map_or(self.log.epoch() == since, |shows| self.log.current(since, shows))
    }
}

/// Marks a page's response with what it shows, for the page cache.
pub fn shows(response: &mut Response, shows: Shows) {
    response.extensions_mut().insert(shows);
}

pub struct PageCache {
    ttl: Duration,
    /// Set once the cache hears the catalog's news.
    following: AtomicBool,
    max_bytes: usize,
    store: Mutex<Store>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl PageCache {
    pub fn new(ttl: Duration, max_bytes: usize) -> Self {
        PageCache {
            ttl,
            following: AtomicBool::new(false),
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

    /// Hears `news` from now on: a product page lives until its product
    /// changes (up to [`FOLLOWED_MAX_AGE`]), and every page goes when a
    /// change touches what it shows.
    pub fn follow(self: &std::sync::Arc<Self>, news: &CatalogNews) {
        let cache = std::sync::Arc::downgrade(self);
        news.listen(move |change| {
            if let Some(cache) = cache.upgrade()
                && let Ok(mut store) = cache.store.lock()
            {
                store.forget(change);
            }
        });
        self.following.store(true, Ordering::Relaxed);
    }

    /// How long `page` may be kept.
    fn lifetime(&self, page: &Page) -> Duration {
        let product_page = page.shows.as_ref().is_some_and(|s| !s.listing && !s.products.is_empty());
        if product_page && self.following.load(Ordering::Relaxed) { FOLLOWED_MAX_AGE.max(self.ttl) } else { self.ttl }
    }

    /// Where the news has got to: a page drawn from now on is kept only if
    /// no change it shows is heard before it is put.
    fn epoch(&self) -> u64 {
        self.store.lock().map_or(0, |s| s.log.epoch())
    }

    fn get(&self, key: &str, token: &str) -> Option<(HeaderValue, Option<HeaderValue>, String)> {
        let store = self.store.lock().ok()?;
        let page = store.pages.get(key).filter(|p| p.at.elapsed() < self.lifetime(p))?;
        Some((page.content_type.clone(), page.cache_control.clone(), page.with_token(token)))
    }

    fn put(&self, key: String, page: Page, since: u64) {
        let weight = page.weight(&key);
        if weight > self.max_bytes {
            return;
        }
        let Ok(mut store) = self.store.lock() else { return };
        let store = &mut *store;
        if !store.current(since, page.shows.as_ref()) {
            return;
        }
        if let Some(old) = store.pages.remove(&key) {
            store.bytes -= old.weight(&key);
        }
        if store.pages.len() >= CAPACITY || store.bytes + weight > self.max_bytes {
            let mut gone = 0;
            store.pages.retain(|k, p| {
                let fresh = p.at.elapsed() < self.lifetime(p);
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

    let since = cache.epoch();
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
        let page = Page {
            at: Instant::now(),
            content_type,
            cache_control: parts.headers.get(CACHE_CONTROL).cloned(),
            parts: text.split(token.as_str()).map(str::to_owned).collect(),
            shows: parts.extensions.get::<Shows>().cloned(),
        };
        cache.put(key, page, since);
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
        let page = |body: &str| Page { at: Instant::now(), content_type: HeaderValue::from_static("text/html"), cache_control: None, parts: vec![body.to_owned()], shows: None };
        cache.put("/".into(), page("home"), 0);
        assert_eq!(cache.get("/", "t").map(|p| p.2).as_deref(), Some("home"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("/", "t").is_none(), "too old");
        for i in 0..CAPACITY + 10 {
            cache.put(format!("/products/p{i}"), page(&"p".repeat(1000)), 0);
            let (entries, bytes) = cache.usage();
            assert!(entries <= CAPACITY && bytes <= 64 * 1024, "{entries} pages, {bytes} bytes");
        }
        let (entries, bytes) = cache.usage();
        assert!(entries > 10 && bytes > 32 * 1024, "still keeps what fits: {entries} pages, {bytes} bytes");
    }

    #[test]
    fn the_token_goes_only_where_it_was() {
        let page = Page { at: Instant::now(), content_type: HeaderValue::from_static("text/html"), cache_control: None, parts: vec!["<a>".into(), "</a> csrf".into()], shows: None };
        assert_eq!(page.with_token("ab.cd"), "<a>ab.cd</a> csrf");
        assert_eq!(page.with_token("<x>"), "<a>&lt;x&gt;</a> csrf");
    }

    #[test]
    fn a_cache_following_the_news_keeps_product_pages_until_their_product_changes() {
        let cache = std::sync::Arc::new(PageCache::new(Duration::from_millis(50), 64 * 1024));
        let news = CatalogNews::default();
        cache.follow(&news);
        let page = |body: &str, shows: Shows| Page {
            at: Instant::now(),
            content_type: HeaderValue::from_static("text/html"),
            cache_control: None,
            parts: vec![body.to_owned()],
            shows: Some(shows),
        };
        let product = |id: &str| Shows { products: vec![id.to_owned()], listing: false };
        let listing = Shows { products: Vec::new(), listing: true };
        cache.put("/products/a".into(), page("a", product("p_a")), 0);
        cache.put("/products/b".into(), page("b", product("p_b")), 0);
        cache.put("/".into(), page("home", listing.clone()), 0);
        std::thread::sleep(Duration::from_millis(60));
        // Past the few seconds: the listing is gone, the product pages stay.
        assert!(cache.get("/", "t").is_none());
        assert!(cache.get("/products/a", "t").is_some() && cache.get("/products/b", "t").is_some());
        // A's stock changes: its page goes, B's stays.
        news.announce(&CatalogChange::Stock { products: vec!["p_a".into()], listings: false });
        assert!(cache.get("/products/a", "t").is_none());
        assert!(cache.get("/products/b", "t").is_some());
        // A page drawn before a change of what it shows and put after it is not kept.
        let since = cache.epoch();
        news.announce(&CatalogChange::Stock { products: vec!["p_a".into()], listings: false });
        cache.put("/products/a".into(), page("a, stale", product("p_a")), since);
        assert!(cache.get("/products/a", "t").is_none());
        cache.put("/products/a".into(), page("a", product("p_a")), cache.epoch());
        assert!(cache.get("/products/a", "t").is_some());
        // A listing drawn before a change of the listings is not kept either.
        let since = cache.epoch();
        news.announce(&CatalogChange::Stock { products: vec!["p_z".into()], listings: true });
        cache.put("/".into(), page("home", listing), since);
        assert!(cache.get("/", "t").is_none());
        assert!(cache.get("/products/b", "t").is_some(), "untouched");
        // Any other change: everything goes.
        news.announce(&CatalogChange::Everything);
        assert_eq!(cache.usage().0, 0);
    }
}
