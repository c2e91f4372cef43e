//! The pages most shoppers see first — home, categories, products — kept
//! rendered for a few seconds, for visitors who are neither signed in nor
//! holding a cart (so the page is the same for all of them).
//!
//! A page's form token is the visitor's own: it is cut out of the kept page
//! and put back for each visitor, so a page served from here posts as
//! safely as a freshly drawn one. A signed-in shopper, a cart, any method
//! but GET, and any answer but a plain 200 go past it untouched. What is
//! kept is at most a few seconds old (`http.page_cache_secs`, 0 turns it
//! off); the catalog's own response cache keeps the pages' data exact.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Site;
use crate::account::{ACCESS, REFRESH};
use crate::session::{self, CART_ID, CART_SECRET, CSRF};

/// Stands for the visitor's form token in a kept page.
const MARKER: &str = "\u{1}csrf\u{1}";

/// Pages kept at most; past it the stale ones go, then all.
const CAPACITY: usize = 2_000;

/// Largest page kept.
const MAX_BODY: usize = 512 * 1024;

struct Page {
    at: Instant,
    content_type: HeaderValue,
    cache_control: Option<HeaderValue>,
    /// The page with `MARKER` where the form token was.
    body: String,
}

pub struct PageCache {
    ttl: Duration,
    pages: Mutex<HashMap<String, Page>>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl PageCache {
    pub fn new(ttl: Duration) -> Self {
        PageCache {
            ttl,
            pages: Mutex::new(HashMap::new()),
            hits: metrics::counter!("web_page_cache_total", "result" => "hit"),
            misses: metrics::counter!("web_page_cache_total", "result" => "miss"),
        }
    }

    fn get(&self, key: &str) -> Option<(HeaderValue, Option<HeaderValue>, String)> {
        let pages = self.pages.lock().ok()?;
        let page = pages.get(key).filter(|p| p.at.elapsed() < self.ttl)?;
        Some((page.content_type.clone(), page.cache_control.clone(), page.body.clone()))
    }

    fn put(&self, key: String, page: Page) {
        let Ok(mut pages) = self.pages.lock() else { return };
        if pages.len() >= CAPACITY {
            let ttl = self.ttl;
            pages.retain(|_, p| p.at.elapsed() < ttl);
            if pages.len() >= CAPACITY {
                pages.clear();
            }
        }
        pages.insert(key, page);
    }
}

/// Whether `path` is one of the pages kept.
fn kept(path: &str) -> bool {
    path == "/"
        || path.strip_prefix("/categories/").is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
        || path.strip_prefix("/products/").is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// Whether the visitor sees the page as everyone does: no session, no cart.
fn anonymous(request: &Request) -> bool {
    let headers = request.headers();
    [ACCESS, REFRESH, CART_ID, CART_SECRET].iter().all(|name| session::cookie(headers, name).is_none())
}

pub async fn layer(State(site): State<Site>, mut request: Request, next: Next) -> Response {
    let Some(cache) = site.pages.clone() else { return next.run(request).await };
    if request.method() != Method::GET || !kept(request.uri().path()) || !anonymous(&request) {
        return next.run(request).await;
    }
    let key = request.uri().path_and_query().map_or_else(|| request.uri().path().to_owned(), |p| p.as_str().to_owned());
    let (token, set_cookie) = session::csrf(request.headers(), site.secure());

    if let Some((content_type, cache_control, body)) = cache.get(&key) {
        cache.hits.increment(1);
        let mut response = (StatusCode::OK, body.replace(MARKER, &token)).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        if let Some(c) = cache_control {
            headers.insert(CACHE_CONTROL, c);
        }
        if let Some(c) = set_cookie {
            headers.append(SET_COOKIE, c);
        }
        return response;
    }
    cache.misses.increment(1);

    // The page is drawn with the token chosen here, as if the visitor already held it.
    if set_cookie.is_some() {
        let cookies = match request.headers().get(COOKIE).and_then(|v| v.to_str().ok()) {
            Some(existing) if !existing.is_empty() => format!("{existing}; {CSRF}={token}"),
            _ => format!("{CSRF}={token}"),
        };
        if let Ok(value) = HeaderValue::from_str(&cookies) {
            request.headers_mut().insert(COOKIE, value);
        }
    }
    let response = next.run(request).await;
    let keep = response.status() == StatusCode::OK && !response.headers().contains_key(SET_COOKIE);
    let (mut parts, body) = response.into_parts();
    if let Some(c) = set_cookie {
        parts.headers.append(SET_COOKIE, c);
    }
    if !keep {
        return Response::from_parts(parts, body);
    }
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        // Too large to keep: it was already read, so it cannot be sent either.
        Err(e) => {
            tracing::warn!(error = %e, page = key, "a page too large to keep");
            return (StatusCode::INTERNAL_SERVER_ERROR, "This page is too large.").into_response();
        }
    };
    if let (Ok(text), Some(content_type)) = (std::str::from_utf8(&bytes), parts.headers.get(CONTENT_TYPE).cloned()) {
        let page = Page { at: Instant::now(), content_type, cache_control: parts.headers.get(CACHE_CONTROL).cloned(), body: text.replace(&token, MARKER) };
        cache.put(key, page);
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_shared_pages_are_kept() {
        for path in ["/", "/categories/lamps", "/products/brass-desk-lamp"] {
            assert!(kept(path), "{path}");
        }
        for path in ["/search", "/cart", "/products/x/notify-me", "/products/", "/account", "/admin", "/categories/a/b"] {
            assert!(!kept(path), "{path}");
        }
    }

    #[test]
    fn stale_pages_are_not_served_and_the_store_stays_bounded() {
        let cache = PageCache::new(Duration::from_millis(50));
        let page = |body: &str| Page { at: Instant::now(), content_type: HeaderValue::from_static("text/html"), cache_control: None, body: body.to_owned() };
        cache.put("/".into(), page("home"));
        assert_eq!(cache.get("/").map(|p| p.2).as_deref(), Some("home"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get("/").is_none(), "too old");
        for i in 0..CAPACITY + 10 {
            cache.put(format!("/products/p{i}"), page("p"));
        }
        assert!(cache.pages.lock().map(|p| p.len()).unwrap_or(usize::MAX) <= CAPACITY);
    }
}
