//! The cart, checkout and order pages. Every change is a form posted with
//! the CSRF token and turned into the same API call a client would make
//! (the guest cart's secret travels in `X-Cart-Secret`); every refusal is
//! the API's, shown in words on the page.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Site;
use crate::account::AddressFields;
use crate::api::{ApiError, encode};
use crate::pages::{PageError, item_name, message_of, render};
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
    title: Option<String>,
    variant_title: Option<String>,
    quantity: i64,
    unit_price: Option<Money>,
    total: Money,
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
struct CartView {
    status: String,
    email: Option<String>,
    items: Vec<Item>,
    shipping_address: Option<Value>,
    shipping_method: Option<Value>,
    discount_code: Option<String>,
    totals: Totals,
    #[serde(default)]
    notices: Vec<Notice>,
}

pub struct Line {
    pub id: String,
    pub title: String,
    pub sku: String,
    pub quantity: i64,
    pub unit_price: String,
    pub total: String,
}

/// The totals as the pages show them: label and amount.
fn total_rows(t: &Totals, with_shipping: bool) -> Vec<(String, String)> {
    let mut rows = vec![("Subtotal".to_owned(), shown(&t.subtotal))];
    if t.discount.amount > 0 {
        rows.push(("Discount".into(), format!("−{}", shown(&t.discount))));
    }
    if with_shipping {
        rows.push(("Shipping".into(), shown(&t.shipping)));
    }
    rows.push(("Tax".into(), shown(&t.tax)));
    rows.push(("Total".into(), shown(&t.total)));
    rows
}

#[derive(Template)]
#[template(path = "cart.html")]
struct CartPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    lines: Vec<Line>,
    totals: Vec<(String, String)>,
    code: String,
    notices: Vec<String>,
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

async fn cart_page(site: &Site, headers: &HeaderMap, status: StatusCode, message: String) -> Result<Response, PageError> {
    let (csrf, set) = session::csrf(headers, site.secure());
    let cart = match CartKey::of(headers) {
        Some(key) => open_cart(site, &key).await?,
        None => None,
    };
    let page = match cart {
        Some(c) => CartPage {
            shop: &site.name,
            query: "",
            csrf,
            lines: c
                .items
                .iter()
                .map(|i| Line {
                    id: i.id.clone(),
                    title: match &i.title {
                        Some(t) => item_name(t, i.variant_title.as_deref().unwrap_or_default()),
                        None => i.sku.clone(),
                    },
                    sku: i.sku.clone(),
                    quantity: i.quantity,
                    unit_price: i.unit_price.as_ref().map(shown).unwrap_or_default(),
                    total: shown(&i.total),
                })
                .collect(),
            totals: total_rows(&c.totals, c.shipping_method.is_some()),
            code: c.discount_code.unwrap_or_default(),
            notices: c.notices.into_iter().map(|n| n.message).collect(),
            message,
        },
        None => CartPage { shop: &site.name, query: "", csrf, lines: Vec::new(), totals: Vec::new(), code: String::new(), notices: Vec::new(), message },
    };
    Ok(with_cookies((status, render(&page)).into_response(), [set]))
}

pub async fn show(State(site): State<Site>, headers: HeaderMap) -> Result<Response, PageError> {
    cart_page(&site, &headers, StatusCode::OK, String::new()).await
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    sku: String,
    #[serde(default = "one")]
    quantity: i64,
}

fn one() -> i64 {
    1
}

/// Adds to the browser's cart, making one (a guest cart) on the first add.
pub async fn add(State(site): State<Site>, headers: HeaderMap, ext: axum::http::Extensions, Form(f): Form<AddForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let mut cookies = Vec::new();
    let key = match CartKey::of(&headers) {
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
    let (status, body) = site.cart_call(&key, Method::POST, "/items", Some(json!({"sku": f.sku, "quantity": f.quantity}))).await?;
    let response = if status.is_success() {
        see_other("/cart")
    } else {
        // The cart's cookies are not sent with this answer's own request: show
        // the refusal on a page that says where to go next.
        let page = PageError(status, message_of(&body));
        page.into_response()
    };
    Ok(with_cookies(response, cookies))
}

#[derive(Deserialize)]
pub struct QuantityForm {
    #[serde(default)]
    csrf: String,
    quantity: i64,
}

pub async fn update(State(site): State<Site>, headers: HeaderMap, Path(item): Path<String>, Form(f): Form<QuantityForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let Some(key) = CartKey::of(&headers) else { return Ok(see_other("/cart")) };
    let path = format!("/items/{}", encode(&item));
    let (status, body) = if f.quantity <= 0 {
        site.cart_call(&key, Method::DELETE, &path, None).await?
    } else {
        site.cart_call(&key, Method::PATCH, &path, Some(json!({"quantity": f.quantity}))).await?
    };
    if status.is_success() {
        return Ok(see_other("/cart"));
    }
    cart_page(&site, &headers, StatusCode::UNPROCESSABLE_ENTITY, message_of(&body)).await
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
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
    cart_page(&site, &headers, shown, message_of(&body)).await
}

// Checkout: where to, then how to pay

#[derive(Template)]
#[template(path = "checkout.html")]
struct AddressPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    email: String,
    form: AddressFields,
    message: String,
}

fn field(address: &Option<Value>, key: &str) -> String {
    address.as_ref().and_then(|a| a.get(key)).and_then(Value::as_str).unwrap_or_default().to_owned()
}

pub async fn checkout(State(site): State<Site>, headers: HeaderMap, ext: axum::http::Extensions) -> Result<Response, PageError> {
    let Some(key) = CartKey::of(&headers) else { return Ok(see_other("/cart")) };
    let Some(cart) = open_cart(&site, &key).await?.filter(|c| !c.items.is_empty()) else { return Ok(see_other("/cart")) };
    let (csrf, set) = session::csrf(&headers, site.secure());
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
    let page = AddressPage {
        shop: &site.name,
        query: "",
        csrf,
        email: email.unwrap_or_default(),
        form: a.and_then(|a| serde_json::from_value(a).ok()).unwrap_or_default(),
        message: String::new(),
    };
    Ok(with_cookies(render(&page), [set]))
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

pub async fn save_address(State(site): State<Site>, headers: HeaderMap, Form(f): Form<AddressForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let Some(key) = CartKey::of(&headers) else { return Ok(see_other("/cart")) };
    let (status, body) = site.cart_call(&key, Method::PUT, "/email", Some(json!({"email": f.email}))).await?;
    let (status, body) = if status.is_success() {
        site.cart_call(&key, Method::PUT, "/shipping-address", Some(f.address.address())).await?
    } else {
        (status, body)
    };
    if status.is_success() {
        return Ok(see_other("/checkout/pay"));
    }
    let page = AddressPage { shop: &site.name, query: "", csrf: f.csrf.clone(), email: f.email, form: f.address, message: message_of(&body) };
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
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

#[derive(Template)]
#[template(path = "pay.html")]
struct PayPage<'a> {
    shop: &'a str,
    query: &'a str,
    csrf: String,
    lines: Vec<(String, i64, String)>,
    totals: Vec<(String, String)>,
    address: String,
    methods: Vec<Pick>,
    cards: Vec<Pick>,
    /// Stripe's publishable key when the shop takes cards through Stripe.
    stripe_key: String,
    message: String,
}

async fn pay_page(site: &Site, headers: &HeaderMap, key: &CartKey, status: StatusCode, message: String, chosen_card: &str) -> Result<Response, PageError> {
    let Some(cart) = load_cart(site, key).await?.filter(|c| !c.items.is_empty()) else { return Ok(see_other("/cart")) };
    if cart.shipping_address.is_none() || cart.email.is_none() {
        return Ok(see_other("/checkout"));
    }
    let (csrf, set) = session::csrf(headers, site.secure());
    let options: Options = match site.cart_call(key, Method::GET, "/shipping-options", None).await? {
        (s, body) if s.is_success() => serde_json::from_value(body).unwrap_or(Options { data: Vec::new() }),
        _ => Options { data: Vec::new() },
    };
    let current = cart.shipping_method.as_ref().and_then(|m| m.get("id")).and_then(Value::as_str).map(str::to_owned);
    let methods = options
        .data
        .iter()
        .enumerate()
        .map(|(i, o)| Pick {
            value: o.id.clone(),
            label: format!("{} — {} ({}–{} days)", o.name, shown(&o.amount), o.min_days, o.max_days),
            chosen: current.as_deref().map_or(i == 0, |c| c == o.id),
        })
        .collect();
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
    let address = ["name", "line1", "line2", "postal_code", "city", "region", "country"]
        .iter()
        .map(|k| field(&cart.shipping_address, k))
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let page = PayPage {
        shop: &site.name,
        query: "",
        csrf,
        lines: cart
            .items
            .iter()
            .map(|i| (i.title.clone().unwrap_or_else(|| i.sku.clone()), i.quantity, shown(&i.total)))
            .collect(),
        totals: total_rows(&cart.totals, cart.shipping_method.is_some()),
        address,
        methods,
        cards,
        stripe_key,
        message,
    };
    Ok(with_cookies((status, render(&page)).into_response(), [set]))
}

pub async fn pay(State(site): State<Site>, headers: HeaderMap) -> Result<Response, PageError> {
    let Some(key) = CartKey::of(&headers) else { return Ok(see_other("/cart")) };
    pay_page(&site, &headers, &key, StatusCode::OK, String::new(), "").await
}

#[derive(Deserialize)]
pub struct PayForm {
    #[serde(default)]
    csrf: String,
    shipping_method: String,
    token: String,
    /// `test` (a test card) or `stripe` (a token Stripe Elements made).
    #[serde(default)]
    provider: String,
}

/// Chooses the shipping method and pays: the confirmation on success, the
/// card's refusal on the same page otherwise.
pub async fn place(State(site): State<Site>, headers: HeaderMap, Form(f): Form<PayForm>) -> Result<Response, PageError> {
    if !session::csrf_ok(&headers, &f.csrf) {
        return Err(PageError::expired_form());
    }
    let Some(key) = CartKey::of(&headers) else { return Ok(see_other("/cart")) };
    let Some(cart) = load_cart(&site, &key).await? else { return Ok(see_other("/cart")) };
    let current = cart.shipping_method.as_ref().and_then(|m| m.get("id")).and_then(Value::as_str);
    // After a declined card the cart is closed, its method kept: paying again changes nothing else.
    if current != Some(f.shipping_method.as_str()) {
        let (status, body) = site.cart_call(&key, Method::PUT, "/shipping-method", Some(json!({"id": f.shipping_method}))).await?;
        if !status.is_success() {
            return pay_page(&site, &headers, &key, StatusCode::UNPROCESSABLE_ENTITY, message_of(&body), &f.token).await;
        }
    }
    let mut h = key.headers();
    h.push(("idempotency-key", session::random_token()));
    let path = format!("/api/v1/carts/{}/checkout", encode(&key.id));
    let provider = if f.provider == "stripe" { "stripe" } else { "test" };
    let (status, order) = site.api.send_as(Method::POST, &path, &h, Some(json!({"payment": {"provider": provider, "token": f.token}}))).await?;
    if !status.is_success() {
        let status = if status == StatusCode::PAYMENT_REQUIRED { status } else { StatusCode::UNPROCESSABLE_ENTITY };
        return pay_page(&site, &headers, &key, status, message_of(&order), &f.token).await;
    }
    if let Some(next) = order["next_action"].as_str() {
        return Ok(see_other(next));
    }
    // The cart, now checked out, stays in the cookies: its secret shows the
    // order (a retry after a declined card has no new lookup token), and the
    // next "add to cart" starts a new one.
    let id = order["id"].as_str().unwrap_or_default();
    let to = match order["lookup_token"].as_str() {
        Some(token) => format!("/orders/{}?token={}&placed=1", encode(id), encode(token)),
        None => format!("/orders/{}?placed=1", encode(id)),
    };
    Ok(see_other(&to))
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
    title: String,
    variant_title: String,
    quantity: i64,
    total: Money,
    #[serde(default)]
    fulfilled: i64,
    #[serde(default)]
    returned: i64,
}

impl OrderLine {
    fn name(&self) -> String {
        item_name(&self.title, &self.variant_title)
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
struct Order {
    number: i64,
    status: String,
    email: Option<String>,
    lines: Vec<OrderLine>,
    totals: Totals,
    #[serde(default)]
    fulfilments: Vec<Fulfilment>,
    #[serde(default)]
    returns: Vec<Return>,
    #[serde(default)]
    timeline: Vec<Event>,
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
    /// Where the return form posts (with the guest's lookup token).
    returns_to: String,
    token: String,
    number: i64,
    status: String,
    email: String,
    placed: bool,
    lines: Vec<(String, i64, String)>,
    totals: Vec<(String, String)>,
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

/// What the order page says above the order.
enum Said {
    Nothing,
    /// The order was just placed.
    Placed,
    /// A return was just asked for.
    ReturnAsked,
    /// The last form was refused, and why.
    Refused(StatusCode, String),
}

/// The order as its shopper sees it, with what just happened on it.
async fn order_page(site: &Site, headers: &HeaderMap, id: &str, token: &str, said: Said) -> Result<Response, PageError> {
    let path = format!("/api/v1/orders/{}?token={}", encode(id), encode(token));
    let credentials = Shopper::of(headers).headers();
    let (answer, body) = site.api.send_as(Method::GET, &path, &credentials, None).await?;
    if !answer.is_success() {
        return Err(ApiError::Status { status: answer, body }.into());
    }
    let o: Order = serde_json::from_value(body).map_err(|e| PageError::from(ApiError::Shape { path, reason: e.to_string() }))?;
    let names: BTreeMap<&str, String> = o.lines.iter().map(|l| (l.sku.as_str(), l.name())).collect();
    let shipped = matches!(o.status.as_str(), "fulfilled" | "partially_fulfilled" | "delivered" | "partially_refunded");
    let (csrf, set) = session::csrf(headers, site.secure());
    let (status, message) = match &said {
        Said::Refused(status, message) => (*status, message.clone()),
        _ => (StatusCode::OK, String::new()),
    };
    let page = OrderPage {
        shop: &site.name,
        query: "",
        csrf,
        returns_to: format!("/orders/{}/returns", encode(id)),
        token: token.to_owned(),
        number: o.number,
        status: o.status.replace('_', " "),
        email: o.email.clone().unwrap_or_default(),
        placed: matches!(said, Said::Placed),
        lines: o.lines.iter().map(|l| (l.name(), l.quantity, shown(&l.total))).collect(),
        totals: total_rows(&o.totals, true),
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
        done: matches!(said, Said::ReturnAsked),
    };
    let mut response = with_cookies((status, render(&page)).into_response(), [set]);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn order(State(site): State<Site>, headers: HeaderMap, Path(id): Path<String>, Query(q): Query<OrderQuery>) -> Result<Response, PageError> {
    let said = if q.placed.is_some() { Said::Placed } else { Said::Nothing };
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
                return order_page(&site, &headers, &id, &token, Said::Refused(StatusCode::UNPROCESSABLE_ENTITY, message)).await;
            }
        }
    }
    let path = format!("/api/v1/orders/{}/returns?token={}", encode(&id), encode(&token));
    let credentials = Shopper::of(&headers).headers();
    let (status, answer) = site.api.send_as(Method::POST, &path, &credentials, Some(json!({"items": items, "reason": value("reason")}))).await?;
    if status.is_success() {
        return order_page(&site, &headers, &id, &token, Said::ReturnAsked).await;
    }
    let status = if status == StatusCode::NOT_FOUND { status } else { StatusCode::UNPROCESSABLE_ENTITY };
    order_page(&site, &headers, &id, &token, Said::Refused(status, message_of(&answer))).await
}
