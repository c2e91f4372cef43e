//! The shopper's routes: carts, checkout, their orders and returns, the
//! test gateway's confirmation page and the payment providers' webhooks.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use kernel::ApiError;
use kernel::address::Address;
use kernel::error::ErrorBody;
use kernel::id::OrderId;
use kernel::money::{Currency, Money};
use kernel::page::{Page, PageParams};
use platform::auth::Principal;
use platform::http::Json;
use platform::idempotency::{Idempotency, IdempotencyAttempt, ShownOnce, idempotent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::carts::{Access, Notice, Priced};
use crate::error::OrdersError;
use crate::gateway::{Outcome, WebhookEvent};
use crate::service::{ItemCount, OrderParts, Orders};
use crate::store::{self, OrderRow};

pub fn router(orders: Orders) -> OpenApiRouter {
    let checkout = OpenApiRouter::new()
        .routes(routes!(checkout))
        .layer(axum::middleware::from_fn_with_state(Idempotency::new(orders.db.clone(), "orders.checkout"), idempotent));
    OpenApiRouter::new()
        .routes(routes!(create_cart))
        .routes(routes!(get_cart))
        .routes(routes!(add_item))
        .routes(routes!(update_item, remove_item))
        .routes(routes!(set_email))
        .routes(routes!(set_shipping_address))
        .routes(routes!(set_billing_address))
        .routes(routes!(shipping_options))
        .routes(routes!(shipping_countries))
        .routes(routes!(set_shipping_method))
        .routes(routes!(apply_discount, remove_discount))
        .routes(routes!(claim))
        .merge(checkout)
        .routes(routes!(my_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .routes(routes!(request_return))
        .routes(routes!(stripe_webhook))
        .routes(routes!(payment_methods))
        .routes(routes!(confirm_page, confirm))
        .with_state(orders)
}

pub(crate) fn money(amount: i64, currency: &str) -> Money {
    Money::new(amount, Currency::parse(currency).unwrap_or(Currency::XXX))
}

pub(crate) fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn access(principal: &Option<Principal>, headers: &HeaderMap) -> Access {
    Access {
        user: principal.as_ref().map(|p| p.user_id.to_string()),
        secret: headers.get("x-cart-secret").and_then(|v| v.to_str().ok()).map(str::to_owned),
    }
}

#[derive(Serialize, ToSchema)]
pub struct CartView {
    pub id: String,
    /// `open`, `ordered` (see `order_id`) or `merged`.
    pub status: String,
    pub currency: String,
    pub email: Option<String>,
    pub items: Vec<CartItemView>,
    pub shipping_address: Option<Address>,
    pub billing_address: Option<Address>,
    pub shipping_method: Option<MethodView>,
    pub discount_code: Option<String>,
    pub totals: TotalsView,
    pub prices_include_tax: bool,
    /// What changed since the shopper last looked, and what stops checkout.
    pub notices: Vec<Notice>,
    pub order_id: Option<String>,
    /// Only when a guest cart is created: send it back as `X-Cart-Secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CartItemView {
    pub id: String,
    pub sku: String,
    pub product_id: Option<String>,
    pub variant_id: Option<String>,
    pub title: Option<String>,
    pub variant_title: Option<String>,
    pub quantity: i64,
    /// The catalog's price now.
    pub unit_price: Option<Money>,
    pub subtotal: Money,
    pub discount: Money,
    pub total: Money,
    /// Units that can be sold now, when stock is counted.
    pub available: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct MethodView {
    pub id: String,
    pub name: String,
    pub amount: Money,
    pub min_days: i64,
    pub max_days: i64,
}

#[derive(Serialize, ToSchema)]
pub struct TotalsView {
    pub subtotal: Money,
    pub discount: Money,
    pub shipping: Money,
    pub tax: Money,
    pub total: Money,
}

pub(crate) fn cart_view(p: Priced, prices_include_tax: bool) -> CartView {
    let c = &p.cart.currency;
    let items = p
        .items
        .iter()
        .zip(&p.totals.lines)
        .map(|(i, t)| CartItemView {
            id: i.item.id.clone(),
            sku: i.item.sku.clone(),
            product_id: i.offer.as_ref().map(|o| o.product_id.clone()),
            variant_id: i.offer.as_ref().map(|o| o.variant_id.clone()),
            title: i.offer.as_ref().map(|o| o.title.clone()),
            variant_title: i.offer.as_ref().map(|o| o.variant_title.clone()),
            quantity: i.item.quantity,
            unit_price: i.price.map(|a| money(a, c)),
            subtotal: money(t.subtotal, c),
            discount: money(t.discount, c),
            total: money(t.total, c),
            available: i.offer.as_ref().and_then(|o| o.available),
        })
        .collect();
    CartView {
        id: p.cart.id.clone(),
        status: p.cart.status.clone(),
        currency: c.clone(),
        email: p.cart.email.clone(),
        items,
        shipping_address: p.shipping_address.clone(),
        billing_address: p.billing_address.clone(),
        shipping_method: p.method.as_ref().map(|m| MethodView {
            id: m.method.id.clone(),
            name: m.method.name.clone(),
            amount: money(p.shipping_quote.unwrap_or(0), c),
            min_days: m.method.min_days,
            max_days: m.method.max_days,
        }),
        discount_code: p.cart.discount_code.clone(),
        totals: TotalsView {
            subtotal: money(p.totals.subtotal, c),
            discount: money(p.totals.discount, c),
            shipping: money(p.totals.shipping, c),
            tax: money(p.totals.tax, c),
            total: money(p.totals.total, c),
        },
        prices_include_tax,
        notices: p.notices,
        order_id: p.cart.order_id.clone(),
        secret: None,
    }
}

async fn view(o: &Orders, id: &str, a: &Access) -> Result<Json<CartView>, OrdersError> {
    let (cart, items) = o.cart_and_items_for(id, a).await?;
    Ok(Json(cart_view(o.price_items(cart, items).await?, o.settings.prices_include_tax)))
}

/// A new cart. Signed in, the customer's open cart is returned (200) if they
/// have one; a guest cart comes with its `secret`, shown once.
#[utoipa::path(post, path = "/api/v1/carts", tag = "carts",
    responses((status = 201, body = CartView), (status = 200, body = CartView),
              (status = 429, description = "too many carts from this address; see Retry-After", body = ErrorBody)))]
async fn create_cart(State(o): State<Orders>, principal: Option<Principal>, ext: axum::http::Extensions) -> Result<Response, OrdersError> {
    // Guests only (a customer has one open cart), and only when the client's
    // address is known (the storefront's calls carry the browser's).
    if principal.is_none()
        && let Some(client) = platform::limit::client_key(&ext)
    {
        let per_hour = o.limit_settings.carts_per_ip_per_hour;
        o.limits.hit("cart", &client, per_hour, platform::limit::HOUR).await?;
    }
    let user = principal.map(|p| p.user_id.to_string());
    let (cart, secret, created) = o.create_cart(user.as_deref()).await?;
    let mut body = cart_view(o.price(cart).await?, o.settings.prices_include_tax);
    body.secret = secret;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(body)).into_response())
}

/// A cart, priced now, with notices of what changed.
#[utoipa::path(get, path = "/api/v1/carts/{id}", tag = "carts", params(("id" = String, Path)),
    responses((status = 200, body = CartView), (status = 404, body = ErrorBody)))]
async fn get_cart(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path(id): Path<String>) -> Result<Json<CartView>, OrdersError> {
    view(&o, &id, &access(&p, &h)).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    pub sku: String,
    pub quantity: i64,
}

/// Adds units of a SKU (more of it when it is already in the cart). When
/// the cart would then hold more than can be bought now, nothing is added
/// and 409 `out_of_stock` answers, its message naming the product and how
/// many are left ("Only 38 of Brass Desk Lamp — Black are left"); variants
/// sold on backorder, or whose stock is not counted, have no such limit.
#[utoipa::path(post, path = "/api/v1/carts/{id}/items", tag = "carts", params(("id" = String, Path)), request_body = AddItem,
    responses((status = 200, body = CartView), (status = 422, body = ErrorBody),
              (status = 409, description = "out_of_stock (fewer can be bought; the message names the product and how many are left), not_purchasable, not_priced, cart_closed", body = ErrorBody)))]
async fn add_item(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path(id): Path<String>, Json(b): Json<AddItem>) -> Result<Json<CartView>, OrdersError> {
    let a = access(&p, &h);
    let cart = o.cart_for(&id, &a).await?;
    o.add_item(&cart, &b.sku, b.quantity).await?;
    view(&o, &id, &a).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    pub quantity: i64,
}

/// Changes a line's quantity. More than can be bought now answers 409
/// `out_of_stock` naming the product and how many are left (variants sold
/// on backorder, or whose stock is not counted, have no such limit).
#[utoipa::path(patch, path = "/api/v1/carts/{id}/items/{item_id}", tag = "carts",
    params(("id" = String, Path), ("item_id" = String, Path)), request_body = SetQuantity,
    responses((status = 200, body = CartView), (status = 404, body = ErrorBody),
              (status = 409, description = "out_of_stock: fewer can be bought; the message names the product and how many are left", body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update_item(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path((id, item)): Path<(String, String)>, Json(b): Json<SetQuantity>) -> Result<Json<CartView>, OrdersError> {
    let a = access(&p, &h);
    let cart = o.cart_for(&id, &a).await?;
    o.set_quantity(&cart, &item, b.quantity).await?;
    view(&o, &id, &a).await
}

/// Removes a line.
#[utoipa::path(delete, path = "/api/v1/carts/{id}/items/{item_id}", tag = "carts",
    params(("id" = String, Path), ("item_id" = String, Path)),
    responses((status = 200, body = CartView), (status = 404, body = ErrorBody)))]
async fn remove_item(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path((id, item)): Path<(String, String)>) -> Result<Json<CartView>, OrdersError> {
    let a = access(&p, &h);
    let cart = o.cart_for(&id, &a).await?;
    o.remove_item(&cart, &item).await?;
    view(&o, &id, &a).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEmail {
    pub email: String,
}

/// Where the receipt goes.
#[utoipa::path(put, path = "/api/v1/carts/{id}/email", tag = "carts", params(("id" = String, Path)), request_body = SetEmail,
    responses((status = 200, body = CartView), (status = 422, body = ErrorBody)))]
async fn set_email(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path(id): Path<String>, Json(b): Json<SetEmail>) -> Result<Json<CartView>, OrdersError> {
    let a = access(&p, &h);
    let cart = o.cart_for(&id, &a).await?;
    o.set_email(&cart, &b.email).await?;
    view(&o, &id, &a).await
}

/// Where the parcel goes (decides shipping methods and tax).
#[utoipa::path(put, path = "/api/v1/carts/{id}/shipping-address", tag = "carts", params(("id" = String, Path)), request_body = Address,
    responses((status = 200, body = CartView), (status = 422, body = ErrorBody)))]
async fn set_shipping_address(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path(id): Path<String>, Json(b): Json<Address>) -> Result<Json<CartView>, OrdersError> {
    let a = access(&p, &h);
    let cart = o.cart_for(&id, &a).await?;
    o.set_address(&cart, false, b).await?;
    view(&o, &id, &a).await
}

/// The billing address (the shipping address when unset).
#[utoipa::path(put, path = "/api/v1/carts/{id}/billing-address", tag = "carts", params(("id" = String, Path)), request_body = Address,
    responses((status = 200, body = CartView), (status = 422, body = ErrorBody)))]
async fn set_billing_address(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path(id): Path<String>, Json(b): Json<Address>) -> Result<Json<CartView>, OrdersError> {
    let a = access(&p, &h);
    let cart = o.cart_for(&id, &a).await?;
    o.set_address(&cart, true, b).await?;
    view(&o, &id, &a).await
}

#[derive(Serialize, ToSchema)]
pub struct ShippingOptions {
    pub data: Vec<MethodView>,
}

/// The methods that serve the cart's address, priced for this cart.
#[utoipa::path(get, path = "/api/v1/carts/{id}/shipping-options", tag = "carts", params(("id" = String, Path)),
    responses((status = 200, body = ShippingOptions), (status = 422, body = ErrorBody)))]
async fn shipping_options(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path(id): Path<String>) -> Result<Json<ShippingOptions>, OrdersError> {
    let cart = o.cart_for(&id, &access(&p, &h)).await?;
    let priced = o.price(cart).await?;
    let currency = priced.cart.currency.clone();
    let data = o
        .shipping_options(&priced)
        .await?
        .into_iter()
        .map(|(m, amount)| MethodView {
            id: m.method.id,
            name: m.method.name,
            amount: money(amount, &currency),
            min_days: m.method.min_days,
            max_days: m.method.max_days,
        })
        .collect();
    Ok(Json(ShippingOptions { data }))
}

#[derive(Serialize, ToSchema)]
pub struct ShippingCountries {
    /// ISO 3166-1 alpha-2 codes, sorted; empty while no shipping method is set up.
    pub data: Vec<String>,
}

/// The countries the shop ships to: those its active shipping methods in
/// the shop's currency serve (an address form offers these).
#[utoipa::path(get, path = "/api/v1/shipping-countries", tag = "carts",
    responses((status = 200, body = ShippingCountries)))]
async fn shipping_countries(State(o): State<Orders>) -> Result<Json<ShippingCountries>, OrdersError> {
    Ok(Json(ShippingCountries { data: o.shipping_countries().await? }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChooseMethod {
    pub id: String,
}

/// Chooses one of the shipping options.
#[utoipa::path(put, path = "/api/v1/carts/{id}/shipping-method", tag = "carts", params(("id" = String, Path)), request_body = ChooseMethod,
    responses((status = 200, body = CartView), (status = 422, body = ErrorBody)))]
async fn set_shipping_method(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path(id): Path<String>, Json(b): Json<ChooseMethod>) -> Result<Json<CartView>, OrdersError> {
    let a = access(&p, &h);
    let cart = o.cart_for(&id, &a).await?;
    o.set_shipping_method(&cart, &b.id).await?;
    view(&o, &id, &a).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyCode {
    pub code: String,
}

/// Applies a discount code (one per cart; a new one replaces it).
#[utoipa::path(post, path = "/api/v1/carts/{id}/discounts", tag = "carts", params(("id" = String, Path)), request_body = ApplyCode,
    responses((status = 200, body = CartView), (status = 422, body = ErrorBody),
              (status = 429, description = "too many codes tried on this cart, or by this client or user on any cart; see Retry-After", body = ErrorBody)))]
async fn apply_discount(
    State(o): State<Orders>,
    p: Option<Principal>,
    h: HeaderMap,
    ext: axum::http::Extensions,
    Path(id): Path<String>,
    Json(b): Json<ApplyCode>,
) -> Result<Json<CartView>, OrdersError> {
    let a = access(&p, &h);
    let cart = o.cart_for(&id, &a).await?;
    // Counted once the caller holds the cart, so nobody uses up another's attempts.
    let per_10_min = o.limit_settings.discount_attempts_per_cart_per_10_min;
    o.limits.hit("discount_code", &id, per_10_min, 10 * platform::limit::MINUTE).await?;
    // Carts are cheap: codes also count per client and per user, whatever the cart.
    // Each try is counted before the code is looked at, so guesses sent at once
    // cannot all pass a check made before any of them is counted.
    let per_hour = o.limit_settings.discount_attempts_per_client_per_hour;
    let guessers = p.iter().map(|p| format!("user:{}", p.user_id)).chain(platform::limit::client_key(&ext).map(|c| format!("ip:{c}")));
    for guesser in guessers {
        o.limits.hit("discount_attempt", &guesser, per_hour, platform::limit::HOUR).await?;
    }
    o.apply_code(&cart, &b.code).await?;
    view(&o, &id, &a).await
}

/// Removes the discount code.
#[utoipa::path(delete, path = "/api/v1/carts/{id}/discounts", tag = "carts", params(("id" = String, Path)),
    responses((status = 200, body = CartView)))]
async fn remove_discount(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path(id): Path<String>) -> Result<Json<CartView>, OrdersError> {
    let a = access(&p, &h);
    let cart = o.cart_for(&id, &a).await?;
    o.remove_code(&cart).await?;
    view(&o, &id, &a).await
}

/// After signing in: the guest cart (its secret in `X-Cart-Secret`) joins
/// the customer's cart. Answers the customer's cart.
#[utoipa::path(post, path = "/api/v1/carts/{id}/claim", tag = "carts", params(("id" = String, Path)),
    responses((status = 200, body = CartView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn claim(State(o): State<Orders>, p: Principal, h: HeaderMap, Path(id): Path<String>) -> Result<Json<CartView>, OrdersError> {
    let user = p.user_id.to_string();
    let guest = Access { user: None, secret: access(&None, &h).secret };
    let cart = match o.cart_for(&id, &guest).await {
        Ok(cart) => cart,
        // Claiming one's own cart again is harmless.
        Err(_) => o.cart_for(&id, &Access { user: Some(user.clone()), secret: None }).await?,
    };
    let mine = o.claim(&cart, &user).await?;
    Ok(Json(cart_view(o.price(mine).await?, o.settings.prices_include_tax)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentInput {
    /// `test` (built in) or `stripe`.
    pub provider: String,
    /// The provider's single-use card token (never a card number).
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub payment: PaymentInput,
    /// The total the shopper was shown. When sent, nothing is charged
    /// unless it is exactly the amount: otherwise 409 `total_changed`
    /// answers (with the total now in its message) and the cart stays open.
    #[serde(default)]
    pub expected_total: Option<Money>,
}

/// Places the order and pays for it. Send an `Idempotency-Key`: a retry
/// with the same key replays the answer and never charges twice; if the
/// server that took the first try died before answering, the retry gets
/// the order that try made (201, without the lookup token shown once). A
/// declined card answers 402 and leaves the order `payment_failed`; check
/// out the same cart again with another card to retry.
#[utoipa::path(post, path = "/api/v1/carts/{id}/checkout", tag = "checkout", params(("id" = String, Path)), request_body = CheckoutRequest,
    responses((status = 201, body = OrderView), (status = 402, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn checkout(
    State(o): State<Orders>,
    p: Option<Principal>,
    h: HeaderMap,
    attempt: Option<axum::Extension<IdempotencyAttempt>>,
    Path(id): Path<String>,
    Json(b): Json<CheckoutRequest>,
) -> Result<Response, ApiError> {
    if let Some(p) = &p {
        p.require_verified_email(o.require_verified_email)?;
    }
    let attempt = attempt.map(|a| a.0);
    checkout_as(&o, &p, &h, attempt.as_ref(), &id, b).await.map_err(|e| ApiError::from(&e))
}

async fn checkout_as(o: &Orders, p: &Option<Principal>, h: &HeaderMap, attempt: Option<&IdempotencyAttempt>, id: &str, b: CheckoutRequest) -> Result<Response, OrdersError> {
    let placed = o
        .checkout(id, &access(p, h), &b.payment.provider, &b.payment.token, b.expected_total, attempt.map(IdempotencyAttempt::as_str))
        .await?;
    let mut body = match placed.parts {
        Some(parts) => order_view_of(placed.order, parts, false)?,
        None => order_view(o, placed.order, false).await?,
    };
    body.lookup_token = placed.lookup_token;
    body.next_action = placed.next_action;
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    // Shown once: a replay of this answer has no lookup token (the cart's secret still shows the order).
    response.extensions_mut().insert(ShownOnce(&["lookup_token"]));
    Ok(response)
}

#[derive(Serialize, ToSchema)]
pub struct OrderView {
    pub id: String,
    /// The number shoppers and staff quote (sequential: 1001, 1002, …).
    pub number: i64,
    pub status: crate::domain::Status,
    pub email: Option<String>,
    pub currency: String,
    pub lines: Vec<LineView>,
    pub totals: TotalsView,
    pub prices_include_tax: bool,
    pub captured: Money,
    pub refunded: Money,
    pub shipping_address: Option<Address>,
    pub billing_address: Option<Address>,
    #[schema(value_type = Object)]
    pub shipping_method: Option<serde_json::Value>,
    pub discount_code: Option<String>,
    pub payments: Vec<PaymentView>,
    pub fulfilments: Vec<FulfilmentView>,
    pub refunds: Vec<RefundView>,
    pub returns: Vec<ReturnView>,
    pub timeline: Vec<TimelineEntry>,
    pub placed_at: String,
    pub paid_at: Option<String>,
    /// Only in the checkout answer: with the order id, it shows a guest the
    /// order (`GET /api/v1/orders/{id}?token=…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup_token: Option<String>,
    /// Only when the payment needs the shopper's confirmation first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_action: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LineView {
    pub sku: String,
    pub product_id: String,
    pub variant_id: String,
    pub title: String,
    pub variant_title: String,
    pub unit_price: Money,
    pub quantity: i64,
    pub discount: Money,
    pub tax: Money,
    pub total: Money,
    pub fulfilled: i64,
    pub returned: i64,
    pub refunded: i64,
}

#[derive(Serialize, ToSchema)]
pub struct PaymentView {
    pub id: String,
    pub provider: String,
    /// How it was paid, as a receipt says it: `Visa ending 4242`.
    pub method: String,
    pub status: String,
    pub amount: Money,
    pub captured: Money,
    pub refunded: Money,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub next_action_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FulfilmentView {
    pub id: String,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub items: Vec<ItemCount>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RefundView {
    pub id: String,
    pub amount: Money,
    pub reason: String,
    pub restock: bool,
    pub items: Vec<ItemCount>,
    pub status: String,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ReturnView {
    pub id: String,
    pub order_id: String,
    pub status: String,
    pub reason: String,
    pub items: Vec<ItemCount>,
    pub refund_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct TimelineEntry {
    pub at: String,
    /// `placed`, `paid`, `payment_failed`, `fulfilled`, `delivered`,
    /// `refunded`, `cancelled`, `note`, `return_requested`, …
    pub kind: String,
    /// Who did it (a user id); empty for the shopper's checkout and the system.
    pub actor: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

pub(crate) fn return_view(r: store::ReturnRow) -> ReturnView {
    let (id, order_id, status, reason, lines, refund_id, created, updated) = r;
    ReturnView { id, order_id, status, reason, items: serde_json::from_str(&lines).unwrap_or_default(), refund_id, created_at: rfc3339(created), updated_at: rfc3339(updated) }
}

/// Everything about an order; `staff` adds notes and who did what.
pub(crate) async fn order_view(o: &Orders, order: OrderRow, staff: bool) -> Result<OrderView, OrdersError> {
    let parts = OrderParts::read(&o.db, &order.id).await?;
    order_view_of(order, parts, staff)
}

/// An order's view from its row and parts, read or as a request wrote them.
pub(crate) fn order_view_of(order: OrderRow, parts: OrderParts, staff: bool) -> Result<OrderView, OrdersError> {
    let OrderParts { lines, payments, fulfilments, refunds, returns, timeline } = parts;
    let c = order.currency.clone();
    Ok(OrderView {
        number: order.number,
        status: order.status,
        email: order.email.clone(),
        lines: lines
            .into_iter()
            .map(|l| LineView {
                unit_price: money(l.unit_price, &c),
                discount: money(l.discount, &c),
                tax: money(l.tax, &c),
                total: money(l.total, &c),
                sku: l.sku,
                product_id: l.product_id,
                variant_id: l.variant_id,
                title: l.title,
                variant_title: l.variant_title,
                quantity: l.quantity,
                fulfilled: l.fulfilled,
                returned: l.returned,
                refunded: l.refunded,
            })
            .collect(),
        totals: TotalsView {
            subtotal: money(order.subtotal, &c),
            discount: money(order.discount_total, &c),
            shipping: money(order.shipping_total, &c),
            tax: money(order.tax_total, &c),
            total: money(order.total, &c),
        },
        prices_include_tax: order.prices_include_tax,
        captured: money(order.captured, &c),
        refunded: money(order.refunded, &c),
        shipping_address: crate::carts::parse_address(order.shipping_address.as_deref())?,
        billing_address: crate::carts::parse_address(order.billing_address.as_deref())?,
        shipping_method: order.shipping_method.as_deref().and_then(|m| serde_json::from_str(m).ok()),
        discount_code: order.discount_code.clone(),
        payments: payments
            .into_iter()
            .map(|p| PaymentView {
                amount: money(p.amount, &c),
                captured: money(p.captured, &c),
                refunded: money(p.refunded, &c),
                method: p.method.unwrap_or_else(|| crate::gateway::payment_method_label(&p.provider, None)),
                id: p.id,
                provider: p.provider,
                status: p.status,
                failure_code: p.failure_code,
                failure_message: p.failure_message,
                next_action_url: p.next_action_url,
            })
            .collect(),
        fulfilments: fulfilments
            .into_iter()
            .map(|(id, carrier, tracking_number, tracking_url, lines, created, delivered)| FulfilmentView {
                id,
                carrier,
                tracking_number,
                tracking_url,
                items: serde_json::from_str(&lines).unwrap_or_default(),
                created_at: rfc3339(created),
                delivered_at: delivered.map(rfc3339),
            })
            .collect(),
        refunds: refunds
            .into_iter()
            .map(|r| RefundView {
                amount: money(r.amount, &c),
                items: serde_json::from_str(&r.lines).unwrap_or_default(),
                id: r.id,
                reason: r.reason,
                restock: r.restock,
                status: r.status,
                created_at: rfc3339(r.created_ms),
            })
            .collect(),
        returns: returns.into_iter().map(return_view).collect(),
        timeline: timeline
            .into_iter()
            .filter(|(_, kind, ..)| staff || kind != "note")
            .map(|(at, kind, actor, data)| TimelineEntry {
                at: rfc3339(at),
                kind,
                actor: if staff { actor } else { None },
                data: serde_json::from_str(&data).unwrap_or_default(),
            })
            .collect(),
        placed_at: rfc3339(order.placed_ms),
        paid_at: order.paid_ms.map(rfc3339),
        currency: c,
        id: order.id,
        lookup_token: None,
        next_action: None,
    })
}

#[derive(Serialize, ToSchema)]
pub struct OrderSummary {
    pub id: String,
    pub number: i64,
    pub status: crate::domain::Status,
    pub total: Money,
    pub email: Option<String>,
    pub placed_at: String,
}

pub(crate) fn summary(o: &OrderRow) -> OrderSummary {
    OrderSummary { id: o.id.clone(), number: o.number, status: o.status, total: money(o.total, &o.currency), email: o.email.clone(), placed_at: rfc3339(o.placed_ms) }
}

/// The signed-in customer's orders, newest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", params(PageParams),
    responses((status = 200, body = Page<OrderSummary>), (status = 401, body = ErrorBody)))]
async fn my_orders(State(o): State<Orders>, p: Principal, Query(page): Query<PageParams>) -> Result<Json<Page<OrderSummary>>, ApiError> {
    let page = page.parse()?;
    let user = p.user_id.to_string();
    let filter = store::OrderFilter { user_id: Some(&user), after: page.after.as_deref(), limit: page.limit, ..Default::default() };
    let rows = store::orders(&o.db, &filter).await.map_err(|e| ApiError::from(&OrdersError::from(e)))?;
    let rows: Vec<OrderSummary> = rows.iter().map(summary).collect();
    Ok(Json(Page::from_rows(rows, page.limit, |s| s.id.clone())))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupToken {
    /// A guest order's lookup token (from the checkout answer or the receipt).
    pub token: Option<String>,
}

/// The order, if the caller may see it: its customer, the holder of its
/// lookup token, or the holder of the secret of the cart it came from (a
/// guest who paid on a second try, after the token was shown).
async fn visible_order(o: &Orders, id: &str, p: &Option<Principal>, token: Option<&str>, h: &HeaderMap) -> Result<OrderRow, OrdersError> {
    OrderId::parse(id).map_err(|_| OrdersError::OrderNotFound)?;
    let order = store::order(&o.db, id).await?.ok_or(OrdersError::OrderNotFound)?;
    let user = p.as_ref().map(|p| p.user_id.to_string());
    if Orders::may_see(&order, user.as_deref(), token) {
        return Ok(order);
    }
    let by_cart = access(p, h);
    if by_cart.secret.is_some() && o.cart_for(&order.cart_id, &by_cart).await.is_ok() {
        return Ok(order);
    }
    Err(OrdersError::OrderNotFound)
}

/// One order with its lines, payments, parcels, refunds and timeline: the
/// customer's own, or a guest's with its lookup token.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", params(("id" = String, Path), LookupToken),
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody)))]
async fn get_order(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path(id): Path<String>, Query(q): Query<LookupToken>) -> Result<Json<OrderView>, OrdersError> {
    let order = visible_order(&o, &id, &p, q.token.as_deref(), &h).await?;
    Ok(Json(order_view(&o, order, false).await?))
}

/// Cancels an order that has not shipped: the stock goes back and the
/// payment is voided or refunded.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders", params(("id" = String, Path), LookupToken),
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_order(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path(id): Path<String>, Query(q): Query<LookupToken>) -> Result<Json<OrderView>, OrdersError> {
    let order = visible_order(&o, &id, &p, q.token.as_deref(), &h).await?;
    let actor = p.as_ref().map(|p| p.user_id.to_string());
    let order = o.cancel(&order.id, actor.as_deref(), "cancelled by the customer").await?;
    Ok(Json(order_view(&o, order, false).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnRequest {
    pub items: Vec<ItemCount>,
    pub reason: String,
}

/// Asks to return shipped items, within the shop's return window.
#[utoipa::path(post, path = "/api/v1/orders/{id}/returns", tag = "orders", params(("id" = String, Path), LookupToken), request_body = ReturnRequest,
    responses((status = 201, body = ReturnView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn request_return(State(o): State<Orders>, p: Option<Principal>, h: HeaderMap, Path(id): Path<String>, Query(q): Query<LookupToken>, Json(b): Json<ReturnRequest>) -> Result<Response, OrdersError> {
    let order = visible_order(&o, &id, &p, q.token.as_deref(), &h).await?;
    let actor = p.as_ref().map(|p| p.user_id.to_string());
    let ret = o.request_return(&order.id, b.items, &b.reason, actor.as_deref()).await?;
    let row = store::return_by_id(&o.db, &ret).await?.ok_or(OrdersError::NotFound("return"))?;
    Ok((StatusCode::CREATED, Json(return_view(row))).into_response())
}

/// A card the test gateway knows: its token and what it does.
#[derive(Serialize, ToSchema)]
pub struct TestCard {
    pub token: &'static str,
    pub label: &'static str,
}

/// A way to pay this shop offers.
#[derive(Serialize, ToSchema)]
pub struct PaymentMethod {
    /// `test` or `stripe`: the `provider` of a checkout.
    pub provider: String,
    /// The test gateway's cards (tokens to pay with).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub test_cards: Vec<TestCard>,
    /// Stripe's publishable key, for Stripe Elements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publishable_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PaymentMethods {
    pub data: Vec<PaymentMethod>,
}

/// The payment providers a checkout may name.
#[utoipa::path(get, path = "/api/v1/payments/methods", tag = "payments",
    responses((status = 200, body = PaymentMethods)))]
async fn payment_methods(State(o): State<Orders>) -> Json<PaymentMethods> {
    let data = o
        .providers()
        .into_iter()
        .map(|provider| PaymentMethod {
            test_cards: if provider == "test" {
                crate::gateway::TEST_TOKENS.iter().map(|(token, label)| TestCard { token, label }).collect()
            } else {
                Vec::new()
            },
            publishable_key: (provider == "stripe").then(|| o.stripe_publishable_key()).flatten(),
            provider: provider.to_owned(),
        })
        .collect();
    Json(PaymentMethods { data })
}

/// Stripe's webhook: the signature is checked before anything is read.
#[utoipa::path(post, path = "/api/v1/payments/webhooks/stripe", tag = "payments",
    responses((status = 200, description = "handled"), (status = 400, body = ErrorBody)))]
async fn stripe_webhook(State(o): State<Orders>, h: HeaderMap, body: Bytes) -> Result<StatusCode, OrdersError> {
    let gateway = o.gateway("stripe").map_err(|_| OrdersError::NotFound("route"))?;
    let event = gateway
        .parse_webhook(&h, &body)
        .map_err(|e| crate::domain::invalid("Stripe-Signature", "invalid_webhook", e.to_string()))?;
    match event {
        WebhookEvent::Succeeded { reference, captured } => {
            o.payment_update("stripe", &reference, Outcome::Authorised { reference: reference.clone(), captured }).await?
        }
        WebhookEvent::Failed { reference, code, message } => {
            o.payment_update("stripe", &reference, Outcome::Declined { reference: Some(reference.clone()), code, message }).await?
        }
        WebhookEvent::Refunded { reference, amount_refunded } => o.provider_refund("stripe", &reference, amount_refunded).await?,
        WebhookEvent::Ignored(kind) => tracing::debug!(kind, "Stripe event ignored"),
    }
    Ok(StatusCode::OK)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfirmQuery {
    pub payment: String,
    /// `approve` or `decline` (on POST).
    pub action: Option<String>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The confirmation form's fields: the CSRF token the page was shown with.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmForm {
    pub csrf: String,
}

/// The test gateway's stand-in for a bank's 3-D Secure page.
#[utoipa::path(get, path = "/test-gateway/confirm", tag = "payments", params(ConfirmQuery),
    responses((status = 200, description = "an HTML page")))]
async fn confirm_page(State(o): State<Orders>, Query(q): Query<ConfirmQuery>) -> Html<String> {
    let p = escape(&q.payment);
    let csrf = o.test_gateway.confirm_token(&q.payment);
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Confirm your payment</title></head>\
         <body><main><h1>Confirm your payment</h1><p>This is the test gateway's confirmation step for payment <code>{p}</code>.</p>\
         <form method=\"post\" action=\"/test-gateway/confirm?payment={p}&amp;action=approve\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button>Complete authentication</button></form>\
         <form method=\"post\" action=\"/test-gateway/confirm?payment={p}&amp;action=decline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button>Fail authentication</button></form>\
         </main></body></html>"
    ))
}

/// Completes (or fails) a test payment that needed confirmation.
#[utoipa::path(post, path = "/test-gateway/confirm", tag = "payments", params(ConfirmQuery),
    responses((status = 200, description = "an HTML page"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn confirm(
    State(o): State<Orders>,
    Query(q): Query<ConfirmQuery>,
    form: Result<axum::Form<ConfirmForm>, axum::extract::rejection::FormRejection>,
) -> Result<Html<String>, OrdersError> {
    // Only the page this process showed for this payment may post here.
    let sent = form.map(|axum::Form(f)| f.csrf).unwrap_or_default();
    if !o.test_gateway.confirm_token_ok(&q.payment, &sent) {
        return Err(OrdersError::CsrfRejected);
    }
    let approve = match q.action.as_deref() {
        Some("approve") => true,
        Some("decline") => false,
        _ => return Err(crate::domain::invalid("action", "invalid_action", "approve or decline").into()),
    };
    let outcome = o.test_gateway.confirm(&q.payment, approve).await.map_err(|_| OrdersError::NotFound("payment"))?;
    o.payment_update("test", &q.payment, outcome).await?;
    let payment = store::payment_by_ref(&o.db, "test", &q.payment).await?.ok_or(OrdersError::NotFound("payment"))?;
    let status = escape(&payment.status);
    Ok(Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Payment {status}</title></head>\
         <body><main><h1>Payment {status}</h1><p>You can close this page.</p></main></body></html>"
    )))
}
