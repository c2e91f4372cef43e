//! The storefront (`/`) and, with its issue, the admin console (`/admin`):
//! server-rendered pages over the same API every client uses (see [`api`]),
//! with a small hand-written stylesheet and no script. Every page answer
//! carries the security headers (content policy, no sniffing, no framing,
//! a strict referrer policy).

mod account;
mod admin;
pub mod api;
mod assets;
mod cart;
mod console;
mod form;
mod page_cache;
mod pages;
mod sections;
mod session;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

pub use api::Api;

/// What every page knows about the shop.
#[derive(Clone)]
pub struct Site {
    pub api: Api,
    pub name: String,
    /// The currency prices are shown in (the shop's).
    pub currency: String,
    /// Where shoppers reach the shop, for canonical links and the sitemap.
    pub public_url: String,
    /// The pages' content policy: Stripe's script and frames are allowed
    /// only when Stripe is set up.
    csp: HeaderValue,
    /// The shared pages kept rendered, unless turned off.
    pages: Option<std::sync::Arc<page_cache::PageCache>>,
    /// Signs the forms' CSRF tokens.
    forms: session::FormKey,
}

impl Site {
    pub fn new(api: Api, config: &kernel::config::Config) -> Site {
        Site {
            api,
            name: config.notify.shop_name.clone(),
            currency: config.orders.currency.clone(),
            public_url: config.public_url().trim_end_matches('/').to_owned(),
            csp: HeaderValue::from_static(if config.orders.stripe_publishable_key.is_some() { CSP_WITH_STRIPE } else { CSP }),
            pages: (config.http.page_cache_secs > 0).then(|| {
                std::sync::Arc::new(page_cache::PageCache::new(std::time::Duration::from_secs(config.http.page_cache_secs), config.http.page_cache_max_bytes))
            }),
            forms: session::FormKey::new(config.http.form_key.as_deref()),
        }
    }

    /// Follows the catalog's `news`: kept pages are forgotten when it
    /// announces a change of what they show, and product pages are kept
    /// until it does (see `page_cache`).
    pub fn follow(&self, news: &kernel::news::CatalogNews) {
        if let Some(pages) = &self.pages {
            pages.follow(news);
        }
    }

    /// How many shared pages are kept and what they weigh in bytes (for
    /// operators' tools and tests); `None` when the page cache is off.
    pub fn page_cache_usage(&self) -> Option<(usize, usize)> {
        self.pages.as_ref().map(|p| p.usage())
    }
}

pub fn router(site: Site) -> Router {
    console::routes(Router::new(), sections::SECTIONS)
        .route("/", get(pages::home))
        .route("/search", get(pages::search))
        .route("/categories/{slug}", get(pages::category))
        .route("/products/{slug}", get(pages::product))
        .route("/products/{slug}/notify-me", post(pages::notify_me))
        .route("/cart", get(cart::show))
        .route("/cart/items", post(cart::add))
        .route("/cart/items/{id}", post(cart::update))
        .route("/cart/discount", post(cart::discount))
        .route("/checkout", get(cart::checkout))
        .route("/checkout/address", post(cart::save_address))
        .route("/checkout/pay", get(cart::pay).post(cart::place))
        .route("/orders/{id}", get(cart::order))
        .route("/orders/{id}/returns", post(cart::request_return))
        .route("/account", get(account::account))
        .route("/account/sign-in", get(account::sign_in_form).post(account::sign_in))
        .route("/account/sign-up", get(account::sign_up_form).post(account::sign_up))
        .route("/account/sign-out", post(account::sign_out))
        .route("/account/security", get(account::security))
        .route("/account/preferences", get(account::preferences).post(account::save_preferences))
        .route("/account/export", get(account::export))
        .route("/account/addresses", get(account::addresses).post(account::add_address))
        .route("/account/addresses/{id}", get(account::address).post(account::update_address))
        .route("/account/delete", post(account::delete))
        .route("/account/email", post(account::change_email))
        .route("/account/security/totp", post(account::mfa_start))
        .route("/account/security/totp/confirm", post(account::mfa_confirm))
        .route("/account/verify-email", get(account::verify_form).post(account::verify))
        .route("/account/forgot-password", get(account::forgot_form).post(account::forgot))
        .route("/account/reset-password", get(account::reset_form).post(account::reset))
        .route("/admin", get(admin::dashboard))
        .route("/admin/orders", get(admin::orders))
        .route("/admin/orders/{id}", get(admin::order))
        .route("/admin/orders/{id}/fulfil", post(admin::fulfil))
        .route("/admin/orders/{id}/act", post(admin::order_action))
        .route("/admin/products/new", get(admin::new_product).post(admin::create_product))
        .route("/admin/products/import", get(admin::import_form).post(admin::import))
        .route("/admin/products/export", get(admin::export))
        .route("/admin/products/{id}/pictures", get(admin::pictures).post(admin::add_picture))
        .route("/admin/products/{id}/pictures/{media}", post(admin::change_picture))
        .route("/robots.txt", get(pages::robots))
        .route("/sitemap.xml", get(pages::sitemap))
        .route("/assets/{name}", get(assets::serve))
        .fallback(pages::not_found)
        .layer(middleware::from_fn_with_state(site.clone(), form::error_pages))
        .layer(middleware::from_fn_with_state(site.clone(), page_cache::layer))
        // The header's cart count, for visitors holding a cart: outside the
        // page cache, so a kept page never holds one (see `cart::show_count`).
        .layer(middleware::from_fn_with_state(site.clone(), cart::show_count))
        .layer(middleware::from_fn_with_state(site.clone(), form_tokens))
        .layer(middleware::from_fn_with_state(site.clone(), account::renew_session))
        .layer(middleware::from_fn(no_store))
        .layer(middleware::from_fn_with_state(site.clone(), host_cookies))
        .layer(middleware::from_fn_with_state(site.clone(), security_headers))
        .layer(middleware::from_fn(unavailable))
        .layer(middleware::from_fn(api::on_behalf))
        .with_state(site)
}

/// How long a shopper is asked to wait while the API is away.
const RETRY_AFTER_SECS: u64 = 5;

/// A page that could not be made because the API is away (or a balancer in
/// front of it said so with 502 or 504) is a 503 with `Retry-After`, never
/// a 500: the shopper and any crawler come back shortly.
async fn unavailable(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if api::is_unavailable(response.status()) {
        *response.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
        if !response.headers().contains_key(header::RETRY_AFTER) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
    }
    response
}

/// Over HTTPS, the pages see our cookies only as set under their `__Host-`
/// names (see [`session::unprefixed`]), by their plain names.
async fn host_cookies(State(site): State<Site>, mut request: Request, next: Next) -> Response {
    if site.secure()
        && let Some(cookies) = session::unprefixed(request.headers())
    {
        request.headers_mut().insert(header::COOKIE, cookies);
    }
    next.run(request).await
}

/// Replaces `name`'s value in the request's cookies (`None` removes it).
pub(crate) fn set_request_cookie(request: &mut Request, name: &str, value: Option<&str>) {
    let mut jar: Vec<String> = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty() && p.split_once('=').map_or(p.as_str(), |(n, _)| n) != name)
        .collect();
    if let Some(v) = value {
        jar.push(format!("{name}={v}"));
    }
    request.headers_mut().remove(header::COOKIE);
    if !jar.is_empty()
        && let Ok(v) = HeaderValue::from_str(&jar.join("; "))
    {
        request.headers_mut().insert(header::COOKIE, v);
    }
}

/// The value a response sets cookie `name` to (`""` when it removes it).
fn set_in_response(response: &Response, name: &str) -> Option<String> {
    response.headers().get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|text| {
        let pair = text.split(';').next().unwrap_or_default();
        let (n, v) = pair.split_once('=')?;
        (n == name || n.strip_prefix(session::HOST_PREFIX) == Some(name)).then(|| v.to_owned())
    })
}

/// Before any page: the visitor's form token must be one this shop signed
/// for whoever is signed in now; any other (none, junk, another visitor's,
/// one from before signing in) is replaced by a new one, which the page then
/// sees and the browser is given. Signing in or out (a page that changes
/// the session's cookies) rotates it again, for the new session.
async fn form_tokens(State(site): State<Site>, mut request: Request, next: Next) -> Response {
    let user = session::form_user(request.headers());
    let held = session::cookie(request.headers(), session::CSRF).filter(|t| site.forms.verify(t, &user));
    let fresh = match held {
        Some(_) => None,
        None => {
            let token = site.forms.mint(&user);
            set_request_cookie(&mut request, session::CSRF, Some(&token).filter(|t| !t.is_empty()).map(String::as_str));
            Some(token).filter(|t| !t.is_empty())
        }
    };
    let signs_in_or_out = matches!(request.uri().path(), "/account/sign-in" | "/account/sign-up" | "/account/sign-out");
    let mut response = next.run(request).await;
    let now = set_in_response(&response, account::ACCESS).map(|access| session::token_subject(&access).unwrap_or_default());
    let rotated = match now {
        Some(now) if signs_in_or_out || now != user => Some(site.forms.mint(&now)).filter(|t| !t.is_empty()),
        _ => None,
    };
    let html = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/html"));
    let give = rotated.or(fresh.filter(|_| html));
    if let Some(token) = give
        && let Some(cookie) = session::set_cookie(session::CSRF, Some(&token), site.secure())
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Pages for one person (their account, cart, checkout, orders, the
/// console) and every answer to a browser holding a session or a cart are
/// kept by no cache; only the shared pages an anonymous visitor sees (and
/// the static assets) may be.
async fn no_store(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let personal = ["/account", "/cart", "/checkout", "/orders", "/admin"]
        .iter()
        .any(|p| path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')));
    let asset = path.starts_with("/assets/");
    let personal_cookies = [account::ACCESS, account::REFRESH, session::CART_ID, session::CART_SECRET];
    let holds = personal_cookies.iter().any(|n| session::cookie(request.headers(), n).is_some());
    let mut response = next.run(request).await;
    let sets = personal_cookies.iter().any(|n| set_in_response(&response, n).is_some());
    let already = response.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("no-store"));
    if (personal || ((holds || sets) && !asset)) && !already {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, private"));
    }
    response
}

const CSP: &str = "default-src 'self'; img-src 'self' data: https:; style-src 'self'; script-src 'self'; \
                   object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// With Stripe Elements: Stripe.js, its card frame and its API, and nothing else more.
const CSP_WITH_STRIPE: &str = "default-src 'self'; img-src 'self' data: https:; style-src 'self'; \
                   script-src 'self' https://js.stripe.com; frame-src https://js.stripe.com https://hooks.stripe.com; \
                   connect-src 'self' https://api.stripe.com; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

async fn security_headers(State(site): State<Site>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, site.csp.clone());
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("strict-origin-when-cross-origin"));
    response
}

/// Text for an XML element.
pub(crate) fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}
