//! The cart, checkout and order pages. Every change is a form posted with
//! the CSRF token and turned into the same API call a client would make
//! (the guest cart's secret travels in `X-Cart-Secret`); every refusal is
//! the API's, shown in words on the page. Checkout goes Cart → Address →
//! Shipping & payment → Done; the payment page always shows, and sends
//! with the payment, the exact total that will be charged.
//!
//! The header's cart count comes from a display-only cookie the handlers
//! here keep up to date (see [`show_count`]).

mod countries;

use std::collections::BTreeMap;

use askama::Template;
use crate::form::Form;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Site;
use crate::account::AddressFields;
use crate::api::{ApiError, encode};
use crate::pages::{PageError, Pictures, Thumb, item_name, message_of, render};
use crate::session::{self, CART_ID, CART_SECRET};

/// Who is shopping: a signed-in customer (their access token), a guest
/// (their cart's secret), or both at once.
struct Shopper {
    bearer: Option<String>,
    secret: Option<String>,
}

impl Shopper {
    fn of(headers: &HeaderMap) -> Shopper {
        Shopper { bearer: session::cookie(headers, crate::account::ACCESS), secret: session::cookie(headers, CART_SECRET) }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(t) = &self.bearer {
            h.push(("authorization", format!("Bearer {t}")));
        }
        if let Some(s) = &self.secret {
            h.push(("x-cart-secret", s.clone()));
        }
        h
    }
}

/// The cart a browser holds, and who holds it.
struct CartKey {
    id: String,
    who: Shopper,
}

impl CartKey {
    fn of(headers: &HeaderMap) -> Option<CartKey> {
        let who = Shopper::of(headers);
        if who.bearer.is_none() && who.secret.is_none() {
            return None;
        }
        Some(CartKey { id: session::cookie(headers, CART_ID)?, who })
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        self.who.headers()
    }
}

fn with_cookies(mut response: Response, cookies: impl IntoIterator<Item = Option<HeaderValue>>) -> Response {
    for c in cookies.into_iter().flatten() {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

impl Site {
    /// Whether the shop is served over HTTPS (cookies are then `Secure`).
    pub(crate) fn secure(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    async fn cart_call(&self, key: &CartKey, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value), ApiError> {
        self.api.send_as(method, &format!("/api/v1/carts/{}{path}", encode(&key.id)), &key.headers(), body).await
    }
}

// The header's cart count

/// The cookie that tells the header how many items the browser's cart
/// holds: `<cart id>.<count>`. It is for display only: the pages set it
/// from the API's answers, and changing it changes nothing but what one's
/// own header says.
const CART_COUNT: &str = "cart_count";

/// Where `base.html` puts the count (inside the Cart link).
const COUNT_MARKER: &str = "<!--cart-count-->";

/// Largest page the count is written into (pages are a few KB).
const MAX_PAGE: usize = 2 * 1024 * 1024;

/// The SKU just added, for the cart page to say so once ("Added … to your
/// cart"); it names only what the cart holds, so it says nothing else.
const JUST_ADDED: &str = "cart_added";

/// A cookie of ours as this shop's requests name it (`__Host-` over HTTPS).
fn cookie_name(site: &Site, name: &str) -> String {
    if site.secure() { format!("{}{name}", session::HOST_PREFIX) } else { name.to_owned() }
}

fn count_cookie_name(site: &Site) -> String {
    cookie_name(site, CART_COUNT)
}

/// The count a [`CART_COUNT`] value gives for `cart`, if it is about that cart.
fn count_of(cart: &str, value: &str) -> Option<u32> {
    let (of, count) = value.rsplit_once('.')?;
    if of != cart || count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    count.parse().ok()
}

/// The count a request's cookie gives for `cart`.
fn held_count(site: &Site, headers: &HeaderMap, cart: &str) -> Option<u32> {
    count_of(cart, &session::cookie(headers, &count_cookie_name(site))?)
}

/// The value a response sets cookie `name` to (plain or `__Host-` named;
/// `""` when it removes it).
fn set_by(response: &Response, name: &str) -> Option<String> {
    response.headers().get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|text| {
        let (n, v) = text.split(';').next().unwrap_or_default().split_once('=')?;
        (n == name || n.strip_prefix(session::HOST_PREFIX) == Some(name)).then(|| v.to_owned())
    })
}

/// The cookie that records `count` items in `cart` (removed at none), when
/// the request did not already say so.
fn count_cookie(site: &Site, headers: &HeaderMap, cart: &str, count: u32) -> Option<HeaderValue> {
    let held = session::cookie(headers, &count_cookie_name(site)).is_some();
    match count {
        0 if !held => None,
        0 => session::set_cookie(CART_COUNT, None, site.secure()),
        n if held_count(site, headers, cart) == Some(n) => None,
        n => session::set_cookie(CART_COUNT, Some(&format!("{cart}.{n}")), site.secure()),
    }
}

/// How many items (units) a cart holds.
fn units(items: &[Item]) -> u32 {
    u32::try_from(items.iter().map(|i| i.quantity.max(0)).sum::<i64>()).unwrap_or(u32::MAX)
}

/// The header's cart count, written into the pages of a visitor holding a
/// cart (from [`CART_COUNT`], when it is about the cart they hold, as the
/// request has it or the answer sets it); nothing is added for anyone else. This runs outside the page cache, which keeps
/// only pages drawn for visitors without a cart (marker and all), so a
/// count never reaches a kept page. Compressed answers are left as they are.
pub(crate) async fn show_count(State(site): State<Site>, request: Request, next: Next) -> Response {
    let cart = session::cookie(request.headers(), CART_ID);
    let held = session::cookie(request.headers(), &count_cookie_name(&site));
    let response = next.run(request).await;
    // What the answer itself sets counts (the cart page puts a wrong count right).
    let cart = set_by(&response, CART_ID).or(cart);
    let held = set_by(&response, CART_COUNT).or(held);
    let Some(count) = cart.zip(held).and_then(|(cart, held)| count_of(&cart, &held)).filter(|n| *n > 0) else { return response };
    let html = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/html"));
    let small = axum::body::HttpBody::size_hint(response.body()).upper().is_some_and(|n| n <= MAX_PAGE as u64);
    if !html || !small || response.headers().contains_key(header::CONTENT_ENCODING) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_PAGE).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "a page could not be read to show the cart count");
            return (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong on our side.").into_response();
        }
    };
    let text = match String::from_utf8(bytes.to_vec()) {
        Ok(text) if text.contains(COUNT_MARKER) => text,
        _ => return Response::from_parts(parts, Body::from(bytes)),
    };
    let items = if count == 1 { "item" } else { "items" };
    let badge = format!(" <span class=\"cart-count\">{count}<span class=\"hidden\"> {items}</span></span>");
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text.replacen(COUNT_MARKER, &badge, 1)))
}

// The cart page

#[derive(Debug, Deserialize)]
struct Money {
    amount: i64,
    currency: String,
}

fn shown(m: &Money) -> String {
    crate::pages::money(m.amount, &m.currency)
}

#[derive(Debug, Deserialize)]
struct Item {
    id: String,
    sku: String,
    product_id: Option<String>,
    title: Option<String>,
    variant_title: Option<String>,
    quantity: i64,
    unit_price: Option<Money>,
    /// Price × quantity (the lines show it; discount and tax are totalled below).
    subtotal: Money,
    #[serde(default)]
    available: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Totals {
    subtotal: Money,
    discount: Money,
    shipping: Money,
    tax: Money,
    total: Money,
}

#[derive(Debug, Deserialize)]
struct Notice {
    message: String,
}

#[derive(Debug, Deserialize)]
struct ChosenMethod {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct CartView {
    status: String,
    email: Option<String>,
    items: Vec<Item>,
    shipping_address: Option<Value>,
    shipping_method: Option<ChosenMethod>,
    discount_code: Option<String>,
    totals: Totals,
    #[serde(default)]
    notices: Vec<Notice>,
    #[serde(default)]
    order_id: Option<String>,
}

impl CartView {
    fn method_id(&self) -> Option<&str> {
        self.shipping_method.as_ref().map(|m| m.id.as_str())
    }
}

/// A line of the cart as the page shows it.
pub struct Line {
    pub id: String,
    /// The product's title, and the chosen options ("Size: M").
    pub title: String,
    pub options: String,
    /// The product's page, when it is on sale.
    pub url: String,
    pub quantity: i64,
    /// The most the quantity field offers: what can be bought, at most 999.
    pub max: i64,
    pub unit_price: String,
    pub total: String,
    /// The product's picture, and whether it loads only when scrolled near.
    pub image: Option<Thumb>,
    pub lazy: bool,
}

/// A line of an order summary: name, options, how many, what they cost
/// (unit price × quantity).
pub struct SummaryLine {
    pub title: String,
    pub options: String,
    pub quantity: i64,
    pub total: String,
    pub image: Option<Thumb>,
    pub lazy: bool,
}

/// A product and its options as a line names them, with its picture.
struct Named {
    title: String,
    options: String,
    url: String,
    image: Option<Thumb>,
}

/// Lines whose pictures load at once (about the first screen of a list);
/// the rest wait until scrolled near.
const EAGER_LINES: usize = 3;

#[derive(Deserialize)]
struct OptionName {
    name: String,
}

#[derive(Deserialize)]
struct VariantValues {
    sku: String,
    #[serde(default)]
    option_values: Vec<String>,
}

/// What a line needs of its product: its page, its options' names and
/// its picture (all from the one lookup).
#[derive(Deserialize)]
struct ProductNames {
    slug: String,
    #[serde(default)]
    options: Vec<OptionName>,
    #[serde(default)]
    variants: Vec<VariantValues>,
    #[serde(flatten)]
    pictures: Pictures,
}

/// Products looked up for one page at most; further lines show the
/// variant's title alone.
const MAX_LOOKUPS: usize = 50;

/// Names lines as shoppers know them: the product's title and its options
/// ("Finish: Black"), with its picture, from the catalog's product answers
/// (one lookup per product, whatever the page shows of it). `lines` are
/// (product id, SKU, title, variant title); a product the catalog no longer
/// shows keeps its variant's title.
async fn name_lines(site: &Site, lines: &[(Option<&str>, &str, &str, &str)]) -> Vec<Named> {
    let mut products: BTreeMap<&str, Option<ProductNames>> = BTreeMap::new();
    for (product, ..) in lines {
        let Some(id) = product.filter(|p| !p.is_empty()) else { continue };
        if products.contains_key(id) || products.len() >= MAX_LOOKUPS {
            continue;
        }
        let found = site.api.get::<ProductNames>(&format!("/api/v1/products/{}", encode(id))).await;
        products.insert(id, found.ok());
    }
    lines
        .iter()
        .map(|(product, sku, title, variant)| {
            let info = product.and_then(|p| products.get(p)).and_then(Option::as_ref);
            let values = info.and_then(|p| p.variants.iter().find(|v| v.sku.eq_ignore_ascii_case(sku)));
            let options = match (info, values) {
                (Some(p), Some(v)) => p.options.iter().zip(&v.option_values).map(|(o, value)| format!("{}: {value}", o.name)).collect::<Vec<_>>().join(", "),
                _ if item_name("", variant).is_empty() => String::new(),
                _ => (*variant).to_owned(),
            };
            Named {
                title: (*title).to_owned(),
                options,
                url: info.map(|p| format!("/products/{}", encode(&p.slug))).unwrap_or_default(),
                image: info.and_then(|p| p.pictures.line_thumbnail()),
            }
        })
        .collect()
}

/// The cart's lines as a summary shows them.
async fn summary_lines(site: &Site, items: &[Item]) -> Vec<SummaryLine> {
    let keys: Vec<(Option<&str>, &str, &str, &str)> = items
        .iter()
        .map(|i| (i.product_id.as_deref(), i.sku.as_str(), i.title.as_deref().unwrap_or(i.sku.as_str()), i.variant_title.as_deref().unwrap_or_default()))
        .collect();
    let names = name_lines(site, &keys).await;
    items.iter().zip(names).enumerate().map(|(at, (i, n))| summary_line(n, i.quantity, shown(&i.subtotal), at)).collect()
}

/// The `at`th line of a summary: `total` is the line's own amount.
fn summary_line(n: Named, quantity: i64, total: String, at: usize) -> SummaryLine {
    SummaryLine { title: n.title, options: n.options, quantity, total, image: n.image, lazy: at >= EAGER_LINES }
}

/// A row of totals: label, amount, and whether it is the total itself.
pub struct TotalRow {
    pub label: String,
    pub amount: String,
    pub grand: bool,
}

/// What the shipping row says before a method is chosen.
const NEXT_STEP: &str = "Chosen at the next step";

fn row(label: &str, amount: String) -> TotalRow {
    TotalRow { label: label.to_owned(), amount, grand: false }
}

/// The totals as the pages show them. `shipping` is `None` while no
/// shipping method is chosen (the row then says `pending`, and the total
/// says it is before shipping).
fn total_rows(t: &Totals, shipping: Option<&Money>, pending: &str) -> Vec<TotalRow> {
    let mut rows = vec![row("Subtotal", shown(&t.subtotal))];
    if t.discount.amount > 0 {
        rows.push(row("Discount", format!("−{}", shown(&t.discount))));
    }
    match shipping {
        Some(s) => rows.push(row("Shipping", shown(s))),
        None => rows.push(row("Shipping", pending.to_owned())),
    }
    rows.push(row("Tax", shown(&t.tax)));
    let label = if shipping.is_some() { "Total" } else { "Total before shipping" };
    rows.push(TotalRow { label: label.to_owned(), amount: shown(&t.total), grand: true });
    rows
}

#[derive(Template)]
#[template(path = "cart.html")]
struct CartPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    step: u8,
    lines: Vec<Line>,
    totals: Vec<TotalRow>,
    code: String,
    notices: Vec<String>,
    /// What was just added ("Added Brass Desk Lamp to your cart.").
    added: String,
    message: String,
}

async fn load_cart(site: &Site, key: &CartKey) -> Result<Option<CartView>, PageError> {
    match site.cart_call(key, Method::GET, "", None).await? {
        (StatusCode::OK, body) => serde_json::from_value(body)
            .map(Some)
            .map_err(|e| PageError::from(ApiError::Shape { path: "/api/v1/carts".into(), reason: e.to_string() })),
        (StatusCode::NOT_FOUND, _) => Ok(None),
        (status, body) => Err(ApiError::Status { status, body }.into()),
    }
}

/// The browser's cart while it can still change (a checked-out one is past).
async fn open_cart(site: &Site, key: &CartKey) -> Result<Option<CartView>, PageError> {
    Ok(load_cart(site, key).await?.filter(|c| c.status == "open"))
}

/// What the cart page says above the cart.
#[derive(Default)]
struct Said {
    /// The SKU just added, for "Added … to your cart".
    added: String,
    /// A refusal, in words.
    message: String,
}

/// The cart page for `key` (the browser's cart, or one made in this request).
async fn cart_page(site: &Site, headers: &HeaderMap, key: Option<&CartKey>, status: StatusCode, said: Said) -> Result<Response, PageError> {
    let (csrf, set) = session::csrf(headers, site.secure());
    let cart = match key {
        Some(key) => load_cart(site, key).await?,
        None => None,
    };
    let mut cookies = vec![set];
    if let (Some(key), Some(c)) = (key, &cart) {
        // A checked-out cart holds nothing to buy any more.
        let count = if c.status == "open" { units(&c.items) } else { 0 };
        cookies.push(count_cookie(site, headers, &key.id, count));
    }
    let page = match cart.filter(|c| c.status == "open") {
        Some(c) => {
            let keys: Vec<(Option<&str>, &str, &str, &str)> = c
                .items
                .iter()
                .map(|i| (i.product_id.as_deref(), i.sku.as_str(), i.title.as_deref().unwrap_or(i.sku.as_str()), i.variant_title.as_deref().unwrap_or_default()))
                .collect();
            let names = name_lines(site, &keys).await;
            let added = c
                .items
                .iter()
                .find(|i| !said.added.is_empty() && i.sku.eq_ignore_ascii_case(&said.added))
                .map(|i| format!("Added {} to your cart.", i.title.as_deref().unwrap_or(i.sku.as_str())))
                .unwrap_or_default();
            CartPage {
                shop: &site.name,
                query: "",
                csrf,
                step: 1,
                lines: c
                    .items
                    .iter()
                    .zip(names)
                    .enumerate()
                    .map(|(at, (i, n))| Line {
                        id: i.id.clone(),
                        title: n.title,
                        options: n.options,
                        url: n.url,
                        quantity: i.quantity,
                        max: i.available.map_or(999, |a| a.clamp(i.quantity.clamp(1, 999), 999)),
                        unit_price: i.unit_price.as_ref().map(shown).unwrap_or_default(),
                        total: shown(&i.subtotal),
                        image: n.image,
                        lazy: at >= EAGER_LINES,
                    })
                    .collect(),
                totals: total_rows(&c.totals, c.shipping_method.as_ref().map(|_| &c.totals.shipping), NEXT_STEP),
                code: c.discount_code.unwrap_or_default(),
                notices: c.notices.into_iter().map(|n| n.message).collect(),
                added,
                message: said.message,
            }
        }
        None => CartPage {
            shop: &site.name,
            query: "",
            csrf,
            step: 1,
            lines: Vec::new(),
            totals: Vec::new(),
            code: String::new(),
            notices: Vec::new(),
            added: String::new(),
            message: said.message,
        },
    };
    Ok(with_cookies((status, render(&page)).into_response(), cookies))
}

pub async fn show(State(site): State<Site>, headers: HeaderMap) -> Result<Response, PageError> {
    let key = CartKey::of(&headers);
    // Said once: the page that says it removes it.
    let added = session::cookie(&headers, &cookie_name(&site, JUST_ADDED)).unwrap_or_default();
    let seen = (!added.is_empty()).then(|| session::set_cookie(JUST_ADDED, None, site.secure())).flatten();
    let page = cart_page(&site, &headers, key.as_ref(), StatusCode::OK, Said { added, message: String::new() }).await?;
    Ok(with_cookies(page, [seen]))
}

/// A quantity as typed into a form: a whole number from `min` to 999.
fn typed_quantity(text: &str, min: i64) -> Result<i64, String> {
    match text.trim().parse::<i64>() {
        Ok(n) if (min..=999).contains(&n) => Ok(n),
        _ if min == 0 => Err("Enter a quantity from 0 (to remove it) to 999.".into()),
        _ => Err(format!("Enter a quantity from {min} to 999.")),
    }
}

/// The status a page shows an API's refusal with: a conflict (not enough
/// stock) as it is, anything else as a form to correct.
fn refused(status: StatusCode) -> StatusCode {
    match status {
        StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYMENT_REQUIRED => status,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    sku: String,
    #[serde(default)]
    quantity: Option<String>,
    /// The page the form is on (see [`crate::form::FROM`]).
    #[serde(default)]
    from: String,
}

/// Adds to the browser's cart, making one (a guest cart) on the first add,
/// and shows the cart with what was added; a refusal (not enough left) is
/// shown there in words. A form that chose no variant, or typed a quantity
/// that is not one, is the product page again with the message at its form.
pub async fn add(State(site): State<Site>, headers: HeaderMap, ext: axum::http::Extensions, Form(f): Form<AddForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let current = CartKey::of(&headers);
    let sku = f.sku.trim().to_owned();
    if sku.is_empty() {
        // `None`: the product page names what to choose ("Please choose a size.").
        if let Some(page) = crate::form::page_again(&site, &headers, &f.from, StatusCode::UNPROCESSABLE_ENTITY, None).await {
            return Ok(page);
        }
        let message = "Choose which one you would like before adding it to the cart.".to_owned();
        return cart_page(&site, &headers, current.as_ref(), StatusCode::UNPROCESSABLE_ENTITY, Said { message, ..Said::default() }).await;
    }
    let quantity = match typed_quantity(f.quantity.as_deref().unwrap_or("1"), 1) {
        Ok(q) => q,
        Err(message) => {
            if let Some(page) = crate::form::page_again(&site, &headers, &f.from, StatusCode::UNPROCESSABLE_ENTITY, Some(message.clone())).await {
                return Ok(page);
            }
            return cart_page(&site, &headers, current.as_ref(), StatusCode::UNPROCESSABLE_ENTITY, Said { message, ..Said::default() }).await;
        }
    };
    let mut cookies = Vec::new();
    let key = match current {
        Some(k) if open_cart(&site, &k).await?.is_some() => k,
        _ => {
            // A customer's cart is theirs (reached with their token); a guest's has a secret.
            let who = Shopper { bearer: session::cookie(&headers, crate::account::ACCESS), secret: None };
            // On behalf of the browser, so the carts-per-client limit counts it.
            let mut sent = who.headers();
            sent.extend(crate::account::forwarded(&headers));
            let (status, body) = site.api.send_from(crate::account::client(&ext), Method::POST, "/api/v1/carts", &sent, None).await?;
            if !status.is_success() {
                return Err(ApiError::Status { status, body }.into());
            }
            let id = body["id"].as_str().unwrap_or_default().to_owned();
            let secret = body["secret"].as_str().map(str::to_owned);
            cookies.push(session::set_cookie(CART_ID, Some(&id), site.secure()));
            cookies.push(session::set_cookie(CART_SECRET, secret.as_deref(), site.secure()));
            CartKey { id, who: Shopper { secret, ..who } }
        }
    };
    let (status, body) = site.cart_call(&key, Method::POST, "/items", Some(json!({"sku": sku, "quantity": quantity}))).await?;
    let response = if status.is_success() {
        let items: Vec<Item> = serde_json::from_value(body["items"].clone()).unwrap_or_default();
        cookies.push(count_cookie(&site, &headers, &key.id, units(&items)));
        let added = items.iter().find(|i| i.sku.eq_ignore_ascii_case(&sku)).map(|i| i.sku.as_str());
        cookies.push(added.and_then(|sku| session::set_cookie(JUST_ADDED, Some(sku), site.secure())));
        see_other("/cart")
    } else {
        // The cart (perhaps made just now) with the refusal above it.
        cart_page(&site, &headers, Some(&key), refused(status), Said { message: message_of(&body), ..Said::default() }).await?
    };
    Ok(with_cookies(response, cookies))
}

#[derive(Deserialize)]
pub struct QuantityForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    quantity: String,
}

pub async fn update(State(site): State<Site>, headers: HeaderMap, Path(item): Path<String>, Form(f): Form<QuantityForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let Some(key) = CartKey::of(&headers) else { return Ok(see_other("/cart")) };
    let quantity = match typed_quantity(&f.quantity, 0) {
        Ok(q) => q,
        Err(message) => return cart_page(&site, &headers, Some(&key), StatusCode::UNPROCESSABLE_ENTITY, Said { message, ..Said::default() }).await,
    };
    let path = format!("/items/{}", encode(&item));
    let (status, body) = if quantity == 0 {
        site.cart_call(&key, Method::DELETE, &path, None).await?
    } else {
        site.cart_call(&key, Method::PATCH, &path, Some(json!({"quantity": quantity}))).await?
    };
    if status.is_success() {
        let items: Vec<Item> = serde_json::from_value(body["items"].clone()).unwrap_or_default();
        return Ok(with_cookies(see_other("/cart"), [count_cookie(&site, &headers, &key.id, units(&items))]));
    }
    cart_page(&site, &headers, Some(&key), refused(status), Said { message: message_of(&body), ..Said::default() }).await
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

pub async fn discount(State(site): State<Site>, headers: HeaderMap, ext: axum::http::Extensions, Form(f): Form<CodeForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let Some(key) = CartKey::of(&headers) else { return Ok(see_other("/cart")) };
    let (status, body) = if f.code.trim().is_empty() {
        site.cart_call(&key, Method::DELETE, "/discounts", None).await?
    } else {
        // On behalf of the browser, so failed codes count against it (not only the cart).
        let mut sent = key.headers();
        sent.extend(crate::account::forwarded(&headers));
        let path = format!("/api/v1/carts/{}/discounts", encode(&key.id));
        site.api.send_from(crate::account::client(&ext), Method::POST, &path, &sent, Some(json!({"code": f.code.trim()}))).await?
    };
    if status.is_success() {
        return Ok(see_other("/cart"));
    }
    let shown = if status == StatusCode::TOO_MANY_REQUESTS { status } else { StatusCode::UNPROCESSABLE_ENTITY };
    cart_page(&site, &headers, Some(&key), shown, Said { message: message_of(&body), ..Said::default() }).await
}

// Checkout: where to, then how to pay

/// A country the address form offers.
pub struct Country {
    pub code: &'static str,
    pub name: &'static str,
    pub selected: bool,
}

/// What is wrong with the fields of a form, field by field.
#[derive(Default)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    pub fn has(&self, field: &str) -> bool {
        self.0.iter().any(|(f, _)| *f == field)
    }

    pub fn get(&self, field: &str) -> &str {
        self.0.iter().find(|(f, _)| *f == field).map_or("", |(_, m)| m.as_str())
    }

    /// Every problem, in the form's order: (field, message).
    pub fn all(&self) -> &[(&'static str, String)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn add(&mut self, field: &'static str, message: impl Into<String>) {
        if !self.has(field) {
            self.0.push((field, message.into()));
        }
    }
}

/// The order fields appear in on the address form.
const FIELD_ORDER: [&str; 9] = ["email", "name", "line1", "line2", "city", "region", "postal_code", "country", "phone"];

#[derive(Template)]
#[template(path = "checkout.html")]
struct AddressPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    step: u8,
    email: String,
    form: AddressFields,
    countries: Vec<Country>,
    errors: FieldErrors,
    message: String,
    lines: Vec<SummaryLine>,
    totals: Vec<TotalRow>,
}

fn field(address: &Option<Value>, key: &str) -> String {
    address.as_ref().and_then(|a| a.get(key)).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// The countries the shop ships to (every country when no shipping method
/// limits them yet), by name, with `chosen` selected (or the only one).
async fn ship_to(site: &Site, chosen: &str) -> Result<Vec<Country>, PageError> {
    #[derive(Deserialize)]
    struct Served {
        data: Vec<String>,
    }
    let served: Served = site.api.get("/api/v1/shipping-countries").await?;
    let mut list: Vec<Country> = countries::COUNTRIES
        .iter()
        .filter(|(code, _)| served.data.is_empty() || served.data.iter().any(|s| s == code))
        .map(|&(code, name)| Country { code, name, selected: code.eq_ignore_ascii_case(chosen.trim()) })
        .collect();
    list.sort_by(|a, b| a.name.cmp(b.name));
    if let [only] = list.as_mut_slice()
        && chosen.trim().is_empty()
    {
        only.selected = true;
    }
    Ok(list)
}

/// The address page, from the cart (`typed` when a form is shown again).
async fn address_page(site: &Site, headers: &HeaderMap, cart: &CartView, page: AddressPageInput) -> Result<Response, PageError> {
    let (csrf, set) = session::csrf(headers, site.secure());
    let countries = ship_to(site, &page.form.country).await?;
    let lines = summary_lines(site, &cart.items).await;
    let body = AddressPage {
        shop: &site.name,
        query: "",
        csrf,
        step: 2,
        email: page.email,
        form: page.form,
        countries,
        errors: page.errors,
        message: page.message,
        lines,
        totals: total_rows(&cart.totals, cart.shipping_method.as_ref().map(|_| &cart.totals.shipping), NEXT_STEP),
    };
    Ok(with_cookies((page.status, render(&body)).into_response(), [set]))
}

/// What the address page shows in its form.
struct AddressPageInput {
    status: StatusCode,
    email: String,
    form: AddressFields,
    errors: FieldErrors,
    message: String,
}

pub async fn checkout(State(site): State<Site>, headers: HeaderMap, ext: axum::http::Extensions) -> Result<Response, PageError> {
    let Some(key) = CartKey::of(&headers) else { return Ok(see_other("/cart")) };
    let Some(cart) = open_cart(&site, &key).await?.filter(|c| !c.items.is_empty()) else { return Ok(see_other("/cart")) };
    let (mut a, mut email) = (cart.shipping_address.clone(), cart.email.clone());
    // A signed-in shopper starts from their default address and their email.
    if a.is_none()
        && let Some((status, list)) = site.user_call(&headers, &ext, Method::GET, "/api/v1/me/addresses", None).await?
        && status.is_success()
    {
        let saved = list.get("data").unwrap_or(&list).as_array().cloned().unwrap_or_default();
        a = saved.iter().find(|x| x["default_shipping"] == true).or(saved.first()).cloned();
    }
    if email.is_none()
        && let Some((status, me)) = site.user_call(&headers, &ext, Method::GET, "/api/v1/me", None).await?
        && status.is_success()
    {
        email = me["email"].as_str().map(str::to_owned);
    }
    let input = AddressPageInput {
        status: StatusCode::OK,
        email: email.unwrap_or_default(),
        form: a.and_then(|a| serde_json::from_value(a).ok()).unwrap_or_default(),
        errors: FieldErrors::default(),
        message: String::new(),
    };
    let count = count_cookie(&site, &headers, &key.id, units(&cart.items));
    Ok(with_cookies(address_page(&site, &headers, &cart, input).await?, [count]))
}

#[derive(Deserialize)]
pub struct AddressForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(flatten)]
    address: AddressFields,
}

/// The fields' own problems, before anything is sent: what is missing or
/// too long, and a country the shop does not ship to.
fn check_address(email: &str, a: &AddressFields, countries: &[Country]) -> FieldErrors {
    let mut errors = FieldErrors::default();
    let mut text = |field: &'static str, value: &str, max: usize, missing: &str, what: &str| {
        let value = value.trim();
        if value.is_empty() && !missing.is_empty() {
            errors.add(field, missing);
        } else if value.chars().count() > max {
            errors.add(field, format!("{what} can be at most {max} characters long."));
        }
    };
    text("email", email, 254, "Enter your email address: the receipt goes there.", "The email address");
    text("name", &a.name, 100, "Enter the full name of the person it is for.", "The name");
    text("line1", &a.line1, 200, "Enter the street address.", "The address");
    text("line2", a.line2(), 200, "", "The apartment or suite");
    text("city", &a.city, 100, "Enter the town or city.", "The town or city");
    text("region", a.region(), 100, "", "The state or region");
    text("postal_code", &a.postal_code, 20, "Enter the postal code.", "The postal code");
    let country = a.country.trim().to_uppercase();
    if country.is_empty() {
        errors.add("country", "Choose the country to send it to.");
    } else if !countries.iter().any(|c| c.code == country) {
        match countries::name(&country) {
            Some(name) => errors.add("country", format!("We don’t ship to {name} yet. Choose one of the countries in the list.")),
            None => errors.add("country", "Choose a country from the list."),
        }
    }
    errors
}

/// What the page says about a field the API refused.
fn refused_field(field: &str) -> Option<(&'static str, &'static str)> {
    Some(match field {
        "email" => ("email", "Enter an email address like name@example.com."),
        "name" => ("name", "Enter the full name, in up to 100 characters."),
        "line1" => ("line1", "Enter the street address, in up to 200 characters."),
        "line2" => ("line2", "Enter the apartment or suite in up to 200 characters, or leave it empty."),
        "city" => ("city", "Enter the town or city, in up to 100 characters."),
        "region" => ("region", "Enter the state or region in up to 100 characters, or leave it empty."),
        "postal_code" => ("postal_code", "Enter the postal code, in up to 20 characters."),
        "country" => ("country", "Choose a country from the list."),
        "phone" => ("phone", "Enter the phone number in international format, such as +14155550123, or leave it empty."),
        _ => return None,
    })
}

pub async fn save_address(State(site): State<Site>, headers: HeaderMap, Form(f): Form<AddressForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let Some(key) = CartKey::of(&headers) else { return Ok(see_other("/cart")) };
    let Some(cart) = open_cart(&site, &key).await?.filter(|c| !c.items.is_empty()) else { return Ok(see_other("/cart")) };
    let countries = ship_to(&site, &f.address.country).await?;
    let mut errors = check_address(&f.email, &f.address, &countries);
    let mut message = String::new();
    if errors.is_empty() {
        let (status, body) = site.cart_call(&key, Method::PUT, "/email", Some(json!({"email": f.email.trim()}))).await?;
        let (status, body) = if status.is_success() {
            site.cart_call(&key, Method::PUT, "/shipping-address", Some(f.address.address())).await?
        } else {
            (status, body)
        };
        if status.is_success() {
            return Ok(see_other("/checkout/pay"));
        }
        match body["error"]["field"].as_str().and_then(refused_field) {
            Some((field, text)) => errors.add(field, text),
            None => message = message_of(&body),
        }
    }
    errors.0.sort_by_key(|(f, _)| FIELD_ORDER.iter().position(|o| o == f));
    let input = AddressPageInput { status: StatusCode::UNPROCESSABLE_ENTITY, email: f.email, form: f.address, errors, message };
    address_page(&site, &headers, &cart, input).await
}

#[derive(Debug, Deserialize)]
struct Option_ {
    id: String,
    name: String,
    amount: Money,
    min_days: i64,
    max_days: i64,
}

#[derive(Debug, Deserialize)]
struct Options {
    data: Vec<Option_>,
}

#[derive(Debug, Deserialize)]
struct TestCard {
    token: String,
    label: String,
}

#[derive(Debug, Deserialize)]
struct Method_ {
    provider: String,
    #[serde(default)]
    test_cards: Vec<TestCard>,
    /// Stripe's, for Stripe Elements.
    #[serde(default)]
    publishable_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Methods {
    data: Vec<Method_>,
}

/// A radio choice: value, label, whether chosen.
pub struct Pick {
    pub value: String,
    pub label: String,
    pub chosen: bool,
}

/// How long a method takes, in words.
fn days(min: i64, max: i64) -> String {
    match (min, max) {
        (a, b) if a == b && a == 1 => "1 day".into(),
        (a, b) if a == b => format!("{a} days"),
        (a, b) => format!("{a}–{b} days"),
    }
}

#[derive(Template)]
#[template(path = "pay.html")]
struct PayPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    step: u8,
    lines: Vec<SummaryLine>,
    totals: Vec<TotalRow>,
    /// The total the page shows, as sent back with the payment: minor units and currency.
    total: String,
    total_amount: i64,
    total_currency: String,
    address: String,
    /// The shipping methods to choose from (none once the order is placed).
    methods: Vec<Pick>,
    /// The order's method, once it is fixed (a payment being tried again).
    fixed_method: String,
    cards: Vec<Pick>,
    /// Stripe's publishable key when the shop takes cards through Stripe.
    stripe_key: String,
    message: String,
    notice: String,
}

/// What the payment page says above the form.
#[derive(Default)]
struct PayNote {
    /// A refusal (`role="alert"`).
    alert: String,
    /// Something changed that the shopper should look at before paying.
    notice: String,
}

#[derive(Debug, Deserialize)]
struct OrderMethod {
    #[serde(default)]
    name: String,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    min_days: i64,
    #[serde(default)]
    max_days: i64,
}

/// The address on one line.
fn address_line(address: &Option<Value>) -> String {
    ["name", "line1", "line2", "postal_code", "city", "region"]
        .iter()
        .map(|k| field(address, k))
        .chain(std::iter::once(field(address, "country")).map(|c| countries::name(&c).map_or(c, str::to_owned)))
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The payment page. An open cart is priced with the shipping method shown
/// as chosen: the one it has, or else the cheapest that serves the address,
/// saved to the cart first, so the total shown is the one checkout charges
/// (and is sent with the payment, which is refused if it ever differs). A
/// cart whose order's payment failed shows that order, to pay again.
async fn pay_page(site: &Site, headers: &HeaderMap, key: &CartKey, status: StatusCode, note: PayNote, chosen_card: &str) -> Result<Response, PageError> {
    let Some(mut cart) = load_cart(site, key).await?.filter(|c| !c.items.is_empty()) else { return Ok(see_other("/cart")) };
    let mut methods = Vec::new();
    let mut fixed_method = String::new();
    let (lines, totals, total, address);
    match cart.status.as_str() {
        "open" => {
            if cart.shipping_address.is_none() || cart.email.is_none() {
                return Ok(see_other("/checkout"));
            }
            let mut options: Options = match site.cart_call(key, Method::GET, "/shipping-options", None).await? {
                (s, body) if s.is_success() => serde_json::from_value(body).unwrap_or(Options { data: Vec::new() }),
                _ => Options { data: Vec::new() },
            };
            // Cheapest first (then as the shop lists them): the first is the default.
            options.data.sort_by_key(|o| o.amount.amount);
            let serves = |id: Option<&str>| id.is_some_and(|id| options.data.iter().any(|o| o.id == id));
            if !serves(cart.method_id())
                && let Some(cheapest) = options.data.first()
            {
                let (s, body) = site.cart_call(key, Method::PUT, "/shipping-method", Some(json!({"id": cheapest.id}))).await?;
                if !s.is_success() {
                    return Err(ApiError::Status { status: s, body }.into());
                }
                cart = serde_json::from_value(body).map_err(|e| PageError::from(ApiError::Shape { path: "/api/v1/carts".into(), reason: e.to_string() }))?;
            }
            let current = cart.method_id().filter(|id| serves(Some(id)));
            methods = options
                .data
                .iter()
                .map(|o| Pick {
                    value: o.id.clone(),
                    label: format!("{} — {} ({})", o.name, shown(&o.amount), days(o.min_days, o.max_days)),
                    chosen: current == Some(o.id.as_str()),
                })
                .collect();
            lines = summary_lines(site, &cart.items).await;
            totals = total_rows(&cart.totals, current.map(|_| &cart.totals.shipping), "Not available to this address");
            total = Money { amount: cart.totals.total.amount, currency: cart.totals.total.currency.clone() };
            address = address_line(&cart.shipping_address);
        }
        "ordered" => {
            let Some(order_id) = cart.order_id.clone() else { return Ok(see_other("/cart")) };
            let o = fetch_order(site, headers, &order_id, "").await?;
            if !matches!(o.status.as_str(), "payment_failed" | "pending_payment") {
                return Ok(see_other(&format!("/orders/{}", encode(&order_id))));
            }
            let m: Option<OrderMethod> = o.shipping_method.clone().and_then(|m| serde_json::from_value(m).ok());
            fixed_method = m.as_ref().map(|m| format!("{} — {} ({})", m.name, crate::pages::money(m.amount, &o.currency), days(m.min_days, m.max_days))).unwrap_or_default();
            let keys: Vec<(Option<&str>, &str, &str, &str)> =
                o.lines.iter().map(|l| (Some(l.product_id.as_str()), l.sku.as_str(), l.title.as_str(), l.variant_title.as_str())).collect();
            let names = name_lines(site, &keys).await;
            lines = o.lines.iter().zip(names).enumerate().map(|(at, (l, n))| summary_line(n, l.quantity, l.subtotal(), at)).collect();
            totals = total_rows(&o.totals, Some(&o.totals.shipping), "");
            total = Money { amount: o.totals.total.amount, currency: o.totals.total.currency.clone() };
            address = address_line(&o.shipping_address);
        }
        _ => return Ok(see_other("/cart")),
    }
    let (csrf, set) = session::csrf(headers, site.secure());
    let payment: Methods = site.api.get("/api/v1/payments/methods").await?;
    let cards = payment
        .data
        .iter()
        .filter(|m| m.provider == "test")
        .flat_map(|m| &m.test_cards)
        .enumerate()
        .map(|(i, c)| Pick {
            value: c.token.clone(),
            label: c.label.clone(),
            chosen: if chosen_card.is_empty() { i == 0 } else { c.token == chosen_card },
        })
        .collect();
    let stripe_key = payment.data.iter().find(|m| m.provider == "stripe").and_then(|m| m.publishable_key.clone()).unwrap_or_default();
    let page = PayPage {
        shop: &site.name,
        query: "",
        csrf,
        step: 3,
        lines,
        totals,
        total: shown(&total),
        total_amount: total.amount,
        total_currency: total.currency,
        address,
        methods,
        fixed_method,
        cards,
        stripe_key,
        message: note.alert,
        notice: note.notice,
    };
    let count = if cart.status == "open" { count_cookie(site, headers, &key.id, units(&cart.items)) } else { None };
    Ok(with_cookies((status, render(&page)).into_response(), [set, count]))
}

pub async fn pay(State(site): State<Site>, headers: HeaderMap) -> Result<Response, PageError> {
    let Some(key) = CartKey::of(&headers) else { return Ok(see_other("/cart")) };
    pay_page(&site, &headers, &key, StatusCode::OK, PayNote::default(), "").await
}

#[derive(Deserialize)]
pub struct PayForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    shipping_method: String,
    #[serde(default)]
    token: String,
    /// `test` (a test card) or `stripe` (a token Stripe Elements made).
    #[serde(default)]
    provider: String,
    /// `shipping`: only choose the shipping method (and show the new total).
    #[serde(default)]
    update: String,
    /// The total the page showed: minor units and currency.
    #[serde(default)]
    total_amount: String,
    #[serde(default)]
    total_currency: String,
}

/// The total a payment form showed, as the API takes it (`None` when the
/// form did not carry one, or carried something else).
fn shown_total(f: &PayForm) -> Option<Value> {
    let amount = f.total_amount.trim().parse::<i64>().ok().filter(|a| *a >= 0)?;
    let currency = f.total_currency.trim();
    (currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())).then(|| json!({"amount": amount, "currency": currency}))
}

/// Chooses the shipping method, or pays: the confirmation on success, the
/// refusal on the same page otherwise. A method other than the one the
/// page priced is saved and shown with its total, never charged unseen.
pub async fn place(State(site): State<Site>, headers: HeaderMap, Form(f): Form<PayForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let Some(key) = CartKey::of(&headers) else { return Ok(see_other("/cart")) };
    let Some(cart) = load_cart(&site, &key).await? else { return Ok(see_other("/cart")) };
    let updating = f.update == "shipping";
    let wanted = f.shipping_method.trim();
    // After a declined card the cart is closed and its order fixed: paying again changes nothing else.
    if cart.status == "open" {
        if !wanted.is_empty() && cart.method_id() != Some(wanted) {
            let (status, body) = site.cart_call(&key, Method::PUT, "/shipping-method", Some(json!({"id": wanted}))).await?;
            if !status.is_success() {
                let note = PayNote { alert: message_of(&body), ..PayNote::default() };
                return pay_page(&site, &headers, &key, StatusCode::UNPROCESSABLE_ENTITY, note, &f.token).await;
            }
            if !updating {
                let name = serde_json::from_value::<CartView>(body).ok().and_then(|c| c.shipping_method).map(|m| m.name).unwrap_or_default();
                let note = PayNote { notice: format!("Shipping is now {name}, and the total below includes it. Nothing was charged: check the total, then pay."), ..PayNote::default() };
                return pay_page(&site, &headers, &key, StatusCode::CONFLICT, note, &f.token).await;
            }
        }
        if updating {
            return Ok(see_other("/checkout/pay"));
        }
    }
    if f.token.trim().is_empty() {
        let note = PayNote { alert: "Choose how you would like to pay.".into(), ..PayNote::default() };
        return pay_page(&site, &headers, &key, StatusCode::UNPROCESSABLE_ENTITY, note, "").await;
    }
    let mut h = key.headers();
    h.push(("idempotency-key", session::random_token()));
    let path = format!("/api/v1/carts/{}/checkout", encode(&key.id));
    let provider = if f.provider == "stripe" { "stripe" } else { "test" };
    // The page charges only the total it showed: a form without one (an
    // old page, a hand-made post) is shown the total first.
    let Some(total) = shown_total(&f) else {
        let note = PayNote { notice: "Nothing was charged: check the total below, then pay.".into(), ..PayNote::default() };
        return pay_page(&site, &headers, &key, StatusCode::CONFLICT, note, &f.token).await;
    };
    let body = json!({"payment": {"provider": provider, "token": f.token}, "expected_total": total});
    let (status, order) = site.api.send_as(Method::POST, &path, &h, Some(body)).await?;
    if !status.is_success() {
        let note = match order["error"]["code"].as_str() {
            Some("total_changed") => PayNote { notice: "The total changed since this page was shown, so nothing was charged. Check the new total below, then pay.".into(), ..PayNote::default() },
            _ => PayNote { alert: message_of(&order), ..PayNote::default() },
        };
        return pay_page(&site, &headers, &key, refused(status), note, &f.token).await;
    }
    // The cart is now checked out: the header counts nothing.
    let cleared = count_cookie(&site, &headers, &key.id, 0);
    if let Some(next) = order["next_action"].as_str() {
        return Ok(with_cookies(see_other(next), [cleared]));
    }
    // The cart, now checked out, stays in the cookies: its secret shows the
    // order (a retry after a declined card has no new lookup token), and the
    // next "add to cart" starts a new one.
    let id = order["id"].as_str().unwrap_or_default();
    let to = match order["lookup_token"].as_str() {
        Some(token) => format!("/orders/{}?token={}&placed=1", encode(id), encode(token)),
        None => format!("/orders/{}?placed=1", encode(id)),
    };
    Ok(with_cookies(see_other(&to), [cleared]))
}

// The order

#[derive(Deserialize)]
pub struct OrderQuery {
    #[serde(default)]
    token: String,
    #[serde(default)]
    placed: Option<u8>,
}

#[derive(Debug, Deserialize)]
struct OrderLine {
    sku: String,
    #[serde(default)]
    product_id: String,
    title: String,
    variant_title: String,
    quantity: i64,
    unit_price: Money,
    #[serde(default)]
    fulfilled: i64,
    #[serde(default)]
    returned: i64,
}

impl OrderLine {
    fn name(&self) -> String {
        item_name(&self.title, &self.variant_title)
    }

    /// Price × quantity, as the line shows it (discount and tax are totalled below).
    fn subtotal(&self) -> String {
        crate::pages::money(self.unit_price.amount.saturating_mul(self.quantity), &self.unit_price.currency)
    }
}

#[derive(Debug, Deserialize)]
struct Fulfilment {
    carrier: Option<String>,
    tracking_number: Option<String>,
    tracking_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Return {
    status: String,
    reason: String,
    items: Vec<Returned>,
}

#[derive(Debug, Deserialize)]
struct Returned {
    sku: String,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
struct Event {
    at: String,
    kind: String,
}

#[derive(Debug, Deserialize)]
struct Payment {
    status: String,
    #[serde(default)]
    method: String,
}

#[derive(Debug, Deserialize)]
struct Order {
    number: i64,
    status: String,
    currency: String,
    email: Option<String>,
    lines: Vec<OrderLine>,
    totals: Totals,
    #[serde(default)]
    shipping_address: Option<Value>,
    #[serde(default)]
    shipping_method: Option<Value>,
    #[serde(default)]
    payments: Vec<Payment>,
    #[serde(default)]
    fulfilments: Vec<Fulfilment>,
    #[serde(default)]
    returns: Vec<Return>,
    #[serde(default)]
    timeline: Vec<Event>,
}

/// The order as its shopper may see it (their own, with its lookup token,
/// or through the cart it came from).
async fn fetch_order(site: &Site, headers: &HeaderMap, id: &str, token: &str) -> Result<Order, PageError> {
    let path = format!("/api/v1/orders/{}?token={}", encode(id), encode(token));
    let credentials = Shopper::of(headers).headers();
    let (answer, body) = site.api.send_as(Method::GET, &path, &credentials, None).await?;
    if !answer.is_success() {
        return Err(ApiError::Status { status: answer, body }.into());
    }
    serde_json::from_value(body).map_err(|e| PageError::from(ApiError::Shape { path, reason: e.to_string() }))
}

/// A shipped line that can still be sent back: its SKU, name and how many.
struct Returnable {
    sku: String,
    name: String,
    left: i64,
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    step: u8,
    /// Where the return form posts (with the guest's lookup token).
    returns_to: String,
    token: String,
    number: i64,
    status: String,
    email: String,
    placed: bool,
    lines: Vec<SummaryLine>,
    totals: Vec<TotalRow>,
    /// Where it goes, how, and how it was paid.
    ship_to: Vec<String>,
    method: String,
    paid_with: String,
    parcels: Vec<(String, String, String)>,
    timeline: Vec<(String, String)>,
    returns: Vec<(String, String, String)>,
    returnable: Vec<Returnable>,
    message: String,
    done: bool,
}

/// What a timeline entry says to the shopper.
fn happened(kind: &str) -> String {
    match kind {
        "placed" => "Order placed".into(),
        "paid" => "Payment received".into(),
        "payment_failed" => "Payment declined".into(),
        "fulfilled" | "partially_fulfilled" => "Shipped".into(),
        "delivered" => "Delivered".into(),
        "refunded" | "partially_refunded" => "Refunded".into(),
        "cancelled" => "Cancelled".into(),
        "return_requested" => "Return requested".into(),
        other => {
            let text = other.replace('_', " ");
            let mut chars = text.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
        }
    }
}

/// The address as a label prints it: one line each.
fn address_lines(address: &Option<Value>) -> Vec<String> {
    let city = [field(address, "postal_code"), field(address, "city"), field(address, "region")].into_iter().filter(|v| !v.is_empty()).collect::<Vec<_>>().join(" ");
    let country = field(address, "country");
    let country = countries::name(&country).map_or(country, str::to_owned);
    [field(address, "name"), field(address, "line1"), field(address, "line2"), city, country, field(address, "phone")].into_iter().filter(|v| !v.is_empty()).collect()
}

/// What the order page says above the order.
enum OrderSaid {
    Nothing,
    /// The order was just placed.
    Placed,
    /// A return was just asked for.
    ReturnAsked,
    /// The last form was refused, and why.
    Refused(StatusCode, String),
}

/// The order as its shopper sees it, with what just happened on it.
async fn order_page(site: &Site, headers: &HeaderMap, id: &str, token: &str, said: OrderSaid) -> Result<Response, PageError> {
    let o = fetch_order(site, headers, id, token).await?;
    let names: BTreeMap<&str, String> = o.lines.iter().map(|l| (l.sku.as_str(), l.name())).collect();
    let shipped = matches!(o.status.as_str(), "fulfilled" | "partially_fulfilled" | "delivered" | "partially_refunded");
    let (csrf, set) = session::csrf(headers, site.secure());
    let (status, message) = match &said {
        OrderSaid::Refused(status, message) => (*status, message.clone()),
        _ => (StatusCode::OK, String::new()),
    };
    let keys: Vec<(Option<&str>, &str, &str, &str)> = o.lines.iter().map(|l| (Some(l.product_id.as_str()), l.sku.as_str(), l.title.as_str(), l.variant_title.as_str())).collect();
    let named = name_lines(site, &keys).await;
    let method: Option<OrderMethod> = o.shipping_method.clone().and_then(|m| serde_json::from_value(m).ok());
    // The payment that went through, or else the latest attempt.
    let paid = o.payments.iter().rev().find(|p| matches!(p.status.as_str(), "captured" | "authorized" | "refunded" | "partially_refunded")).or(o.payments.last());
    let page = OrderPage {
        shop: &site.name,
        query: "",
        csrf,
        step: 4,
        returns_to: format!("/orders/{}/returns", encode(id)),
        token: token.to_owned(),
        number: o.number,
        status: o.status.replace('_', " "),
        email: o.email.clone().unwrap_or_default(),
        placed: matches!(said, OrderSaid::Placed),
        lines: o.lines.iter().zip(named).enumerate().map(|(at, (l, n))| summary_line(n, l.quantity, l.subtotal(), at)).collect(),
        totals: total_rows(&o.totals, Some(&o.totals.shipping), ""),
        ship_to: address_lines(&o.shipping_address),
        method: method.map(|m| format!("{} — {} ({})", m.name, crate::pages::money(m.amount, &o.currency), days(m.min_days, m.max_days))).unwrap_or_default(),
        paid_with: paid.map(|p| p.method.clone()).unwrap_or_default(),
        parcels: o
            .fulfilments
            .iter()
            .map(|f| (f.carrier.clone().unwrap_or_default(), f.tracking_number.clone().unwrap_or_default(), f.tracking_url.clone().unwrap_or_default()))
            .collect(),
        timeline: o.timeline.iter().map(|e| (format!("{} UTC", e.at.chars().take(16).collect::<String>().replace('T', " ")), happened(&e.kind))).collect(),
        returns: o
            .returns
            .iter()
            .map(|r| {
                let items = r.items.iter().map(|i| format!("{} × {}", names.get(i.sku.as_str()).cloned().unwrap_or_else(|| i.sku.clone()), i.quantity)).collect::<Vec<_>>().join(", ");
                (items, r.reason.clone(), r.status.replace('_', " "))
            })
            .collect(),
        returnable: if shipped {
            o.lines.iter().filter(|l| l.fulfilled > l.returned).map(|l| Returnable { sku: l.sku.clone(), name: l.name(), left: l.fulfilled - l.returned }).collect()
        } else {
            Vec::new()
        },
        message,
        done: matches!(said, OrderSaid::ReturnAsked),
    };
    let mut response = with_cookies((status, render(&page)).into_response(), [set]);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn order(State(site): State<Site>, headers: HeaderMap, Path(id): Path<String>, Query(q): Query<OrderQuery>) -> Result<Response, PageError> {
    let said = if q.placed.is_some() { OrderSaid::Placed } else { OrderSaid::Nothing };
    order_page(&site, &headers, &id, &q.token, said).await
}

/// Asks to send shipped items back: `qty:<sku>` fields give how many of each.
pub async fn request_return(State(site): State<Site>, headers: HeaderMap, Path(id): Path<String>, Form(posted): Form<Vec<(String, String)>>) -> Result<Response, PageError> {
    let value = |name: &str| posted.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).unwrap_or_default();
    if !session::csrf_ok(&headers, &value("csrf")) {
        return Err(PageError::expired_form());
    }
    let token = value("token");
    let mut items = Vec::new();
    for (name, text) in &posted {
        let Some(sku) = name.strip_prefix("qty:") else { continue };
        let text = text.trim();
        if text.is_empty() || text == "0" {
            continue;
        }
        match text.parse::<i64>() {
            Ok(n) if n > 0 => items.push(json!({"sku": sku, "quantity": n})),
            _ => {
                let message = format!("“{text}” is not a number of items.");
                return order_page(&site, &headers, &id, &token, OrderSaid::Refused(StatusCode::UNPROCESSABLE_ENTITY, message)).await;
            }
        }
    }
    let path = format!("/api/v1/orders/{}/returns?token={}", encode(&id), encode(&token));
    let credentials = Shopper::of(&headers).headers();
    let (status, answer) = site.api.send_as(Method::POST, &path, &credentials, Some(json!({"items": items, "reason": value("reason")}))).await?;
    if status.is_success() {
        return order_page(&site, &headers, &id, &token, OrderSaid::ReturnAsked).await;
    }
    let status = if status == StatusCode::NOT_FOUND { status } else { StatusCode::UNPROCESSABLE_ENTITY };
    order_page(&site, &headers, &id, &token, OrderSaid::Refused(status, message_of(&answer))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(amount: i64) -> Money {
        Money { amount, currency: "USD".into() }
    }

    #[test]
    fn the_total_says_when_shipping_is_still_to_come() {
        let t = Totals { subtotal: money(6899), discount: money(0), shipping: money(0), tax: money(0), total: money(6899) };
        let before: Vec<String> = total_rows(&t, None, NEXT_STEP).iter().map(|r| r.label.clone()).collect();
        assert_eq!(before, ["Subtotal", "Shipping", "Tax", "Total before shipping"]);
        let t = Totals { shipping: money(1995), total: money(8894), ..t };
        let with = total_rows(&t, Some(&t.shipping), NEXT_STEP);
        assert_eq!(with.last().map(|r| (r.label.as_str(), r.grand)), Some(("Total", true)));
        assert!(with.iter().any(|r| r.label == "Shipping" && r.amount.contains("19.95")));
    }

    #[test]
    fn quantities_are_whole_numbers_in_range() {
        assert_eq!(typed_quantity(" 3 ", 1), Ok(3));
        assert!(typed_quantity("0", 1).is_err());
        assert_eq!(typed_quantity("0", 0), Ok(0));
        for junk in ["", "1000", "-1", "2.5", "lots", "99999999999999999999"] {
            assert!(typed_quantity(junk, 1).is_err(), "{junk}");
        }
    }

    #[test]
    fn the_count_cookie_is_about_one_cart_and_only_digits() {
        let site = Site::new(crate::Api::default(), &kernel::config::Config::default());
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("cart_id=cart_1; cart_count=cart_1.3"));
        assert_eq!(held_count(&site, &headers, "cart_1"), Some(3));
        assert_eq!(held_count(&site, &headers, "cart_2"), None, "another cart's count");
        assert!(count_cookie(&site, &headers, "cart_1", 3).is_none(), "unchanged: nothing set");
        let set = count_cookie(&site, &headers, "cart_1", 4).and_then(|v| v.to_str().ok().map(str::to_owned)).unwrap_or_default();
        assert!(set.starts_with("cart_count=cart_1.4;"), "{set}");
        let gone = count_cookie(&site, &headers, "cart_1", 0).and_then(|v| v.to_str().ok().map(str::to_owned)).unwrap_or_default();
        assert!(gone.contains("Max-Age=0"), "{gone}");
        headers.insert(header::COOKIE, HeaderValue::from_static("cart_id=cart_1; cart_count=cart_1.<b>"));
        assert_eq!(held_count(&site, &headers, "cart_1"), None);
    }

    #[test]
    fn an_address_is_checked_field_by_field() {
        let us = [Country { code: "US", name: "United States", selected: true }];
        let form: AddressFields = serde_json::from_value(json!({"name": "Ada", "line1": "", "city": "SF", "postal_code": "94105", "country": "DE"})).unwrap_or_default();
        let errors = check_address("", &form, &us);
        assert_eq!(errors.all().iter().map(|(f, _)| *f).collect::<Vec<_>>(), ["email", "line1", "country"]);
        assert_eq!(errors.get("country"), "We don’t ship to Germany yet. Choose one of the countries in the list.");
        let form: AddressFields = serde_json::from_value(json!({"name": "Ada", "line1": "1 Market St", "city": "SF", "postal_code": "94105", "country": "us"})).unwrap_or_default();
        assert!(check_address("ada@example.com", &form, &us).is_empty());
    }
}
