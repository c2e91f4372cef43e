//! Staff routes: orders (list, fulfil, deliver, refund, cancel, notes),
//! returns, and the selling rules (discount codes, shipping methods, tax
//! rates). Each names the permission it needs.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kernel::error::ErrorBody;
use kernel::id::{DiscountId, ShippingMethodId, TaxRateId};
use kernel::money::{Currency, Money};
use kernel::page::{Page, PageParams};
use platform::auth::{RequirePermission, perm};
use platform::db::now_ms;
use platform::http::Json;
use platform::idempotency::{Idempotency, idempotent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{self, Discount, DiscountValue, Rate, ShippingMethod, Status, WeightBand};
use crate::error::OrdersError;
use crate::http::{OrderSummary, OrderView, ReturnView, money, order_view, return_view, rfc3339, summary};
use crate::service::{ItemCount, Orders, RefundRequest, ReturnStep, Tracking};
use crate::store::{self, DiscountRow, ShippingRow};

pub fn router(orders: Orders) -> OpenApiRouter {
    let refunds = OpenApiRouter::new()
        .routes(routes!(refund))
        .layer(axum::middleware::from_fn_with_state(Idempotency::new(orders.db.clone(), "orders.refund"), idempotent));
    OpenApiRouter::new()
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(fulfil))
        .routes(routes!(delivered))
        .merge(refunds)
        .routes(routes!(cancel))
        .routes(routes!(add_note))
        .routes(routes!(list_returns))
        .routes(routes!(advance_return))
        .routes(routes!(list_discounts, create_discount))
        .routes(routes!(get_discount, replace_discount, delete_discount))
        .routes(routes!(list_shipping, create_shipping))
        .routes(routes!(replace_shipping, delete_shipping))
        .routes(routes!(list_taxes, create_tax))
        .routes(routes!(replace_tax, delete_tax))
        .with_state(orders)
}

fn parse_time(text: &str, field: &str) -> Result<i64, OrdersError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| domain::invalid(field, "invalid_time", "an RFC 3339 time, e.g. 2026-11-25T00:00:00Z").into())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrderQuery {
    pub status: Option<String>,
    /// Placed at or after (RFC 3339).
    pub from: Option<String>,
    /// Placed before (RFC 3339).
    pub to: Option<String>,
    /// A customer's user id.
    pub customer: Option<String>,
    pub email: Option<String>,
    pub min_total: Option<i64>,
    pub max_total: Option<i64>,
    pub limit: Option<u32>,
    pub starting_after: Option<String>,
}

/// Orders, newest first, filtered.
#[utoipa::path(get, path = "/api/v1/admin/orders", tag = "admin", params(OrderQuery),
    responses((status = 200, body = Page<OrderSummary>), (status = 403, body = ErrorBody)))]
async fn list_orders(State(o): State<Orders>, _: RequirePermission<perm::OrdersRead>, Query(q): Query<OrderQuery>) -> Result<Json<Page<OrderSummary>>, OrdersError> {
    let page = PageParams { limit: q.limit, starting_after: q.starting_after.clone() }
        .parse()
        .map_err(|e| domain::invalid(e.field.clone().unwrap_or_default(), "invalid_page", e.message))?;
    if let Some(s) = &q.status
        && Status::parse(s).is_none()
    {
        return Err(domain::invalid("status", "invalid_status", "an order status, e.g. paid").into());
    }
    let from = q.from.as_deref().map(|t| parse_time(t, "from")).transpose()?;
    let to = q.to.as_deref().map(|t| parse_time(t, "to")).transpose()?;
    let email = q.email.as_deref().map(|e| e.trim().to_lowercase());
    let filter = store::OrderFilter {
        user_id: q.customer.as_deref(),
        status: q.status.as_deref(),
        email: email.as_deref(),
        placed_from_ms: from,
        placed_to_ms: to,
        min_total: q.min_total,
        max_total: q.max_total,
        after: page.after.as_deref(),
        limit: page.limit,
    };
    let rows: Vec<OrderSummary> = store::orders(&o.db, &filter).await?.iter().map(summary).collect();
    Ok(Json(Page::from_rows(rows, page.limit, |s| s.id.clone())))
}

async fn found(o: &Orders, id: &str) -> Result<store::OrderRow, OrdersError> {
    store::order(&o.db, id).await?.ok_or(OrdersError::OrderNotFound)
}

/// An order with staff notes and who did what.
#[utoipa::path(get, path = "/api/v1/admin/orders/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody)))]
async fn get_order(State(o): State<Orders>, _: RequirePermission<perm::OrdersRead>, Path(id): Path<String>) -> Result<Json<OrderView>, OrdersError> {
    let order = found(&o, &id).await?;
    Ok(Json(order_view(&o, order, true).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FulfilRequest {
    /// What is in this parcel; everything left when omitted.
    pub items: Option<Vec<ItemCount>>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
}

fn short(value: Option<String>, field: &str, max: usize) -> Result<Option<String>, OrdersError> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if value.as_ref().is_some_and(|v| v.chars().count() > max || v.chars().any(char::is_control)) {
        return Err(domain::invalid(field, "invalid_text", format!("at most {max} characters")).into());
    }
    Ok(value)
}

/// Ships a parcel (all or part of the order) → `order.fulfilled`.
#[utoipa::path(post, path = "/api/v1/admin/orders/{id}/fulfilments", tag = "admin", params(("id" = String, Path)), request_body = FulfilRequest,
    responses((status = 201, body = OrderView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn fulfil(State(o): State<Orders>, RequirePermission(who, ..): RequirePermission<perm::OrdersWrite>, Path(id): Path<String>, Json(b): Json<FulfilRequest>) -> Result<Response, OrdersError> {
    let url = short(b.tracking_url, "tracking_url", 500)?;
    if url.as_ref().is_some_and(|u| !(u.starts_with("https://") || u.starts_with("http://"))) {
        return Err(domain::invalid("tracking_url", "invalid_url", "an http(s) address").into());
    }
    let tracking = Tracking { carrier: short(b.carrier, "carrier", 100)?, tracking_number: short(b.tracking_number, "tracking_number", 100)?, tracking_url: url };
    found(&o, &id).await?;
    let order = o.fulfil(&id, b.items, tracking, &who.user_id.to_string()).await?;
    Ok((StatusCode::CREATED, Json(order_view(&o, order, true).await?)).into_response())
}

/// The parcels arrived.
#[utoipa::path(post, path = "/api/v1/admin/orders/{id}/delivered", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = OrderView), (status = 409, body = ErrorBody)))]
async fn delivered(State(o): State<Orders>, RequirePermission(who, ..): RequirePermission<perm::OrdersWrite>, Path(id): Path<String>) -> Result<Json<OrderView>, OrdersError> {
    found(&o, &id).await?;
    let order = o.mark_delivered(&id, &who.user_id.to_string()).await?;
    Ok(Json(order_view(&o, order, true).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Minor units; when omitted, the value of `items`.
    pub amount: Option<i64>,
    pub items: Option<Vec<ItemCount>>,
    pub reason: String,
    /// Put the refunded items back in stock.
    #[serde(default)]
    pub restock: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RefundCreated {
    pub id: String,
    pub amount: Money,
    pub status: String,
    pub order: OrderView,
}

/// Gives money back (never more than was captured) → `order.refunded`.
/// Send an `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/admin/orders/{id}/refunds", tag = "admin", params(("id" = String, Path)), request_body = RefundBody,
    responses((status = 201, body = RefundCreated), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn refund(State(o): State<Orders>, RequirePermission(who, ..): RequirePermission<perm::OrdersWrite>, Path(id): Path<String>, Json(b): Json<RefundBody>) -> Result<Response, OrdersError> {
    found(&o, &id).await?;
    let actor = who.user_id.to_string();
    let r = o.refund(&id, RefundRequest { amount: b.amount, items: b.items, reason: b.reason, restock: b.restock }, Some(&actor)).await?;
    let order = found(&o, &id).await?;
    let amount = money(r.amount, &order.currency);
    let body = RefundCreated { id: r.id, amount, status: r.status, order: order_view(&o, order, true).await? };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub reason: Option<String>,
}

/// Cancels an order that has not shipped.
#[utoipa::path(post, path = "/api/v1/admin/orders/{id}/cancel", tag = "admin", params(("id" = String, Path)), request_body = CancelBody,
    responses((status = 200, body = OrderView), (status = 409, body = ErrorBody)))]
async fn cancel(State(o): State<Orders>, RequirePermission(who, ..): RequirePermission<perm::OrdersWrite>, Path(id): Path<String>, Json(b): Json<CancelBody>) -> Result<Json<OrderView>, OrdersError> {
    found(&o, &id).await?;
    let reason = short(b.reason, "reason", 500)?.unwrap_or_else(|| "cancelled by staff".into());
    let order = o.cancel(&id, Some(&who.user_id.to_string()), &reason).await?;
    Ok(Json(order_view(&o, order, true).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    pub text: String,
}

/// A note on the order's timeline (staff only).
#[utoipa::path(post, path = "/api/v1/admin/orders/{id}/notes", tag = "admin", params(("id" = String, Path)), request_body = NoteBody,
    responses((status = 201, body = OrderView), (status = 404, body = ErrorBody)))]
async fn add_note(State(o): State<Orders>, RequirePermission(who, ..): RequirePermission<perm::OrdersWrite>, Path(id): Path<String>, Json(b): Json<NoteBody>) -> Result<Response, OrdersError> {
    o.add_note(&id, &b.text, &who.user_id.to_string()).await?;
    let order = found(&o, &id).await?;
    Ok((StatusCode::CREATED, Json(order_view(&o, order, true).await?)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReturnQuery {
    /// `requested`, `approved`, `rejected`, `received` or `refunded`.
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub starting_after: Option<String>,
}

/// Return requests, newest first.
#[utoipa::path(get, path = "/api/v1/admin/returns", tag = "admin", params(ReturnQuery),
    responses((status = 200, body = Page<ReturnView>)))]
async fn list_returns(State(o): State<Orders>, _: RequirePermission<perm::OrdersRead>, Query(q): Query<ReturnQuery>) -> Result<Json<Page<ReturnView>>, OrdersError> {
    let page = PageParams { limit: q.limit, starting_after: q.starting_after }
        .parse()
        .map_err(|e| domain::invalid(e.field.clone().unwrap_or_default(), "invalid_page", e.message))?;
    let rows: Vec<ReturnView> = store::returns(&o.db, q.status.as_deref(), page.after.as_deref(), page.limit).await?.into_iter().map(return_view).collect();
    Ok(Json(Page::from_rows(rows, page.limit, |r| r.id.clone())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundReturn {
    #[serde(default)]
    pub restock: bool,
}

/// Moves a return on: `approve`, `reject`, `receive`, or `refund` (body
/// `{"restock": true}` puts the items back in stock).
#[utoipa::path(post, path = "/api/v1/admin/returns/{id}/{step}", tag = "admin", params(("id" = String, Path), ("step" = String, Path)),
    responses((status = 200, body = ReturnView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn advance_return(State(o): State<Orders>, RequirePermission(who, ..): RequirePermission<perm::OrdersWrite>, Path((id, step)): Path<(String, String)>, body: axum::body::Bytes) -> Result<Response, OrdersError> {
    let restock = if body.is_empty() { false } else {
        match platform::http::parse_json::<RefundReturn>(&body) {
            Ok(b) => b.restock,
            Err(e) => return Ok(e.into_response()),
        }
    };
    let step = match step.as_str() {
        "approve" => ReturnStep::Approve,
        "reject" => ReturnStep::Reject,
        "receive" => ReturnStep::Receive,
        "refund" => ReturnStep::Refund { restock },
        _ => return Err(OrdersError::NotFound("route")),
    };
    o.advance_return(&id, step, &who.user_id.to_string()).await?;
    let row = store::return_by_id(&o.db, &id).await?.ok_or(OrdersError::NotFound("return"))?;
    Ok(Json(return_view(row)).into_response())
}

// Discount codes

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscountInput {
    pub code: String,
    /// `percentage` (with `percent_off`), `fixed` (with `amount_off` and
    /// `currency`) or `free_shipping`.
    pub kind: String,
    pub percent_off: Option<i64>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    /// Only these products / categories; the whole order when both are empty.
    #[serde(default)]
    pub product_ids: Vec<String>,
    #[serde(default)]
    pub category_ids: Vec<String>,
    pub min_subtotal: Option<i64>,
    #[serde(default)]
    pub free_shipping: bool,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub usage_limit: Option<i64>,
    pub per_customer_limit: Option<i64>,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, ToSchema)]
pub struct DiscountView {
    pub id: String,
    pub code: String,
    pub kind: String,
    pub percent_off: Option<i64>,
    pub amount_off: Option<Money>,
    pub product_ids: Vec<String>,
    pub category_ids: Vec<String>,
    pub min_subtotal: Option<i64>,
    pub free_shipping: bool,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub usage_limit: Option<i64>,
    pub per_customer_limit: Option<i64>,
    pub times_used: i64,
    pub active: bool,
}

fn discount_view(d: DiscountRow) -> DiscountView {
    let r = d.rule;
    let (kind, percent_off, amount_off) = match r.value {
        DiscountValue::Percentage { percent_off } => ("percentage", Some(percent_off), None),
        DiscountValue::Fixed { amount_off } => ("fixed", None, Some(money(amount_off, r.currency.as_deref().unwrap_or("XXX")))),
        DiscountValue::FreeShipping => ("free_shipping", None, None),
    };
    DiscountView {
        id: d.id,
        code: r.code,
        kind: kind.into(),
        percent_off,
        amount_off,
        product_ids: r.product_ids,
        category_ids: r.category_ids,
        min_subtotal: r.min_subtotal,
        free_shipping: r.free_shipping || kind == "free_shipping",
        starts_at: r.starts_ms.map(rfc3339),
        ends_at: r.ends_ms.map(rfc3339),
        usage_limit: r.usage_limit,
        per_customer_limit: d.per_customer_limit,
        times_used: r.times_used,
        active: r.active,
    }
}

fn parse_discount(b: DiscountInput, id: String, times_used: i64, created_ms: i64) -> Result<DiscountRow, OrdersError> {
    let code = domain::parse_code(&b.code, "code")?;
    let value = match b.kind.as_str() {
        "percentage" => match b.percent_off {
            Some(p) if (1..=100).contains(&p) => DiscountValue::Percentage { percent_off: p },
            _ => return Err(domain::invalid("percent_off", "invalid_percent", "a whole percent from 1 to 100").into()),
        },
        "fixed" => match b.amount_off {
            Some(a) if a > 0 => DiscountValue::Fixed { amount_off: a },
            _ => return Err(domain::invalid("amount_off", "invalid_amount", "a positive amount in minor units").into()),
        },
        "free_shipping" => DiscountValue::FreeShipping,
        _ => return Err(domain::invalid("kind", "invalid_kind", "percentage, fixed or free_shipping").into()),
    };
    let currency = match (&value, b.currency) {
        (DiscountValue::Fixed { .. }, Some(c)) => Some(Currency::parse(c.trim()).map_err(|_| domain::invalid("currency", "invalid_currency", "an ISO 4217 code"))?.as_str().to_owned()),
        (DiscountValue::Fixed { .. }, None) => return Err(domain::invalid("currency", "invalid_currency", "a fixed amount needs its currency").into()),
        (_, _) => None,
    };
    for (field, v) in [("min_subtotal", b.min_subtotal), ("usage_limit", b.usage_limit), ("per_customer_limit", b.per_customer_limit)] {
        if v.is_some_and(|v| v < 0) {
            return Err(domain::invalid(field, "invalid_number", "0 or more").into());
        }
    }
    let starts_ms = b.starts_at.as_deref().map(|t| parse_time(t, "starts_at")).transpose()?;
    let ends_ms = b.ends_at.as_deref().map(|t| parse_time(t, "ends_at")).transpose()?;
    if let (Some(s), Some(e)) = (starts_ms, ends_ms)
        && e <= s
    {
        return Err(domain::invalid("ends_at", "invalid_period", "the end must come after the start").into());
    }
    let free_shipping = b.free_shipping || matches!(value, DiscountValue::FreeShipping);
    Ok(DiscountRow {
        id,
        rule: Discount {
            code,
            value,
            currency,
            product_ids: b.product_ids,
            category_ids: b.category_ids,
            min_subtotal: b.min_subtotal,
            free_shipping,
            starts_ms,
            ends_ms,
            usage_limit: b.usage_limit,
            times_used,
            active: b.active,
        },
        per_customer_limit: b.per_customer_limit,
        created_ms,
    })
}

async fn save_discount(o: &Orders, row: &DiscountRow) -> Result<(), OrdersError> {
    store::save_discount(&o.db, row).await.map_err(|e| {
        if e.is_unique_violation() { OrdersError::Conflict("code_taken", "another discount has this code".into()) } else { e.into() }
    })
}

/// Discount codes, newest first.
#[utoipa::path(get, path = "/api/v1/admin/discounts", tag = "admin", params(PageParams),
    responses((status = 200, body = Page<DiscountView>)))]
async fn list_discounts(State(o): State<Orders>, _: RequirePermission<perm::MarketingWrite>, Query(p): Query<PageParams>) -> Result<Json<Page<DiscountView>>, OrdersError> {
    let page = p.parse().map_err(|e| domain::invalid(e.field.clone().unwrap_or_default(), "invalid_page", e.message))?;
    let rows: Vec<DiscountView> = store::discounts(&o.db, page.after.as_deref(), page.limit).await?.into_iter().map(discount_view).collect();
    Ok(Json(Page::from_rows(rows, page.limit, |d| d.id.clone())))
}

/// A new discount code.
#[utoipa::path(post, path = "/api/v1/admin/discounts", tag = "admin", request_body = DiscountInput,
    responses((status = 201, body = DiscountView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_discount(State(o): State<Orders>, _: RequirePermission<perm::MarketingWrite>, Json(b): Json<DiscountInput>) -> Result<Response, OrdersError> {
    let row = parse_discount(b, DiscountId::new().to_string(), 0, now_ms())?;
    save_discount(&o, &row).await?;
    let saved = store::discount(&o.db, &row.id).await?.ok_or(OrdersError::NotFound("discount"))?;
    Ok((StatusCode::CREATED, Json(discount_view(saved))).into_response())
}

#[utoipa::path(get, path = "/api/v1/admin/discounts/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = DiscountView), (status = 404, body = ErrorBody)))]
async fn get_discount(State(o): State<Orders>, _: RequirePermission<perm::MarketingWrite>, Path(id): Path<String>) -> Result<Json<DiscountView>, OrdersError> {
    Ok(Json(discount_view(store::discount(&o.db, &id).await?.ok_or(OrdersError::NotFound("discount"))?)))
}

/// Replaces a code's rules (its use count stays).
#[utoipa::path(put, path = "/api/v1/admin/discounts/{id}", tag = "admin", params(("id" = String, Path)), request_body = DiscountInput,
    responses((status = 200, body = DiscountView), (status = 404, body = ErrorBody)))]
async fn replace_discount(State(o): State<Orders>, _: RequirePermission<perm::MarketingWrite>, Path(id): Path<String>, Json(b): Json<DiscountInput>) -> Result<Json<DiscountView>, OrdersError> {
    let old = store::discount(&o.db, &id).await?.ok_or(OrdersError::NotFound("discount"))?;
    let row = parse_discount(b, id.clone(), old.rule.times_used, old.created_ms)?;
    save_discount(&o, &row).await?;
    Ok(Json(discount_view(store::discount(&o.db, &id).await?.ok_or(OrdersError::NotFound("discount"))?)))
}

#[utoipa::path(delete, path = "/api/v1/admin/discounts/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
async fn delete_discount(State(o): State<Orders>, _: RequirePermission<perm::MarketingWrite>, Path(id): Path<String>) -> Result<StatusCode, OrdersError> {
    if store::delete_discount(&o.db, &id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(OrdersError::NotFound("discount")) }
}

// Shipping methods

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingInput {
    pub name: String,
    /// ISO 3166-1 alpha-2 codes of the countries served.
    pub countries: Vec<String>,
    pub currency: String,
    /// A flat price, or `weight_bands`.
    pub flat_amount: Option<i64>,
    pub weight_bands: Option<Vec<WeightBand>>,
    /// Free when the goods cost at least this much.
    pub free_above: Option<i64>,
    pub min_days: i64,
    pub max_days: i64,
    #[serde(default = "yes")]
    pub active: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ShippingView {
    pub id: String,
    pub name: String,
    pub countries: Vec<String>,
    pub currency: String,
    pub flat_amount: Option<i64>,
    pub weight_bands: Option<Vec<WeightBand>>,
    pub free_above: Option<i64>,
    pub min_days: i64,
    pub max_days: i64,
    pub active: bool,
}

fn shipping_view(r: ShippingRow) -> ShippingView {
    let m = r.method;
    let (flat_amount, weight_bands) = match m.rate {
        Rate::Flat(a) => (Some(a), None),
        Rate::Weight(b) => (None, Some(b)),
    };
    ShippingView { id: m.id, name: m.name, countries: m.countries, currency: m.currency, flat_amount, weight_bands, free_above: m.free_above, min_days: m.min_days, max_days: m.max_days, active: r.active }
}

fn parse_shipping(b: ShippingInput, id: String) -> Result<ShippingRow, OrdersError> {
    let name = b.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(domain::invalid("name", "invalid_name", "1-100 characters").into());
    }
    let mut countries = Vec::new();
    for (i, c) in b.countries.iter().enumerate() {
        let c = c.trim().to_uppercase();
        if !kernel::address::is_country(&c) {
            return Err(domain::invalid(format!("countries[{i}]"), "invalid_country", "an ISO 3166-1 alpha-2 code").into());
        }
        countries.push(c);
    }
    if countries.is_empty() {
        return Err(domain::invalid("countries", "invalid_country", "at least one country").into());
    }
    let currency = Currency::parse(b.currency.trim()).map_err(|_| domain::invalid("currency", "invalid_currency", "an ISO 4217 code"))?;
    let rate = match (b.flat_amount, b.weight_bands) {
        (Some(a), None) if a >= 0 => Rate::Flat(a),
        (None, Some(bands)) => Rate::Weight(domain::parse_bands(bands)?),
        _ => return Err(domain::invalid("flat_amount", "invalid_rate", "either a flat amount (0 or more) or weight bands").into()),
    };
    if !(0..=365).contains(&b.min_days) || b.max_days < b.min_days || b.max_days > 365 {
        return Err(domain::invalid("max_days", "invalid_estimate", "0 ≤ min_days ≤ max_days ≤ 365").into());
    }
    if b.free_above.is_some_and(|f| f < 0) {
        return Err(domain::invalid("free_above", "invalid_amount", "0 or more").into());
    }
    Ok(ShippingRow {
        method: ShippingMethod { id, name, countries, currency: currency.as_str().to_owned(), rate, free_above: b.free_above, min_days: b.min_days, max_days: b.max_days },
        active: b.active,
    })
}

#[derive(Serialize, ToSchema)]
pub struct ShippingList {
    pub data: Vec<ShippingView>,
}

#[utoipa::path(get, path = "/api/v1/admin/shipping-methods", tag = "admin",
    responses((status = 200, body = ShippingList)))]
async fn list_shipping(State(o): State<Orders>, _: RequirePermission<perm::SettingsWrite>) -> Result<Json<ShippingList>, OrdersError> {
    Ok(Json(ShippingList { data: store::shipping_methods(&o.db).await?.into_iter().map(shipping_view).collect() }))
}

#[utoipa::path(post, path = "/api/v1/admin/shipping-methods", tag = "admin", request_body = ShippingInput,
    responses((status = 201, body = ShippingView), (status = 422, body = ErrorBody)))]
async fn create_shipping(State(o): State<Orders>, _: RequirePermission<perm::SettingsWrite>, Json(b): Json<ShippingInput>) -> Result<Response, OrdersError> {
    let row = parse_shipping(b, ShippingMethodId::new().to_string())?;
    store::save_shipping_method(&o.db, &row).await?;
    Ok((StatusCode::CREATED, Json(shipping_view(row))).into_response())
}

#[utoipa::path(put, path = "/api/v1/admin/shipping-methods/{id}", tag = "admin", params(("id" = String, Path)), request_body = ShippingInput,
    responses((status = 200, body = ShippingView), (status = 404, body = ErrorBody)))]
async fn replace_shipping(State(o): State<Orders>, _: RequirePermission<perm::SettingsWrite>, Path(id): Path<String>, Json(b): Json<ShippingInput>) -> Result<Json<ShippingView>, OrdersError> {
    store::shipping_method(&o.db, &id).await?.ok_or(OrdersError::NotFound("shipping method"))?;
    let row = parse_shipping(b, id)?;
    store::save_shipping_method(&o.db, &row).await?;
    Ok(Json(shipping_view(row)))
}

#[utoipa::path(delete, path = "/api/v1/admin/shipping-methods/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
async fn delete_shipping(State(o): State<Orders>, _: RequirePermission<perm::SettingsWrite>, Path(id): Path<String>) -> Result<StatusCode, OrdersError> {
    if store::delete_shipping_method(&o.db, &id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(OrdersError::NotFound("shipping method")) }
}

// Tax rates

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaxInput {
    pub country: String,
    /// A region (state, province) with its own rate; the whole country when omitted.
    pub region: Option<String>,
    pub name: String,
    /// Basis points: 1900 is 19 %.
    pub rate_bp: i64,
    #[serde(default = "yes")]
    pub shipping_taxable: bool,
}

#[derive(Serialize, ToSchema)]
pub struct TaxView {
    pub id: String,
    pub country: String,
    pub region: Option<String>,
    pub name: String,
    pub rate_bp: i64,
    pub shipping_taxable: bool,
}

fn tax_view(t: store::TaxRow) -> TaxView {
    TaxView { id: t.0, country: t.1, region: Some(t.2).filter(|r| !r.is_empty()), name: t.3, rate_bp: t.4, shipping_taxable: t.5 }
}

fn parse_tax(b: TaxInput, id: String) -> Result<store::TaxRow, OrdersError> {
    let country = b.country.trim().to_uppercase();
    if !kernel::address::is_country(&country) {
        return Err(domain::invalid("country", "invalid_country", "an ISO 3166-1 alpha-2 code").into());
    }
    let region = b.region.map(|r| r.trim().to_uppercase()).unwrap_or_default();
    if region.chars().count() > 50 {
        return Err(domain::invalid("region", "invalid_region", "at most 50 characters").into());
    }
    let name = b.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(domain::invalid("name", "invalid_name", "1-100 characters").into());
    }
    if !(0..=10_000).contains(&b.rate_bp) {
        return Err(domain::invalid("rate_bp", "invalid_rate", "basis points from 0 to 10000").into());
    }
    Ok((id, country, region, name, b.rate_bp, b.shipping_taxable))
}

async fn save_tax(o: &Orders, row: &store::TaxRow) -> Result<(), OrdersError> {
    store::save_tax_rate(&o.db, row).await.map_err(|e| {
        if e.is_unique_violation() { OrdersError::Conflict("rate_exists", "this country and region already have a rate".into()) } else { e.into() }
    })
}

#[derive(Serialize, ToSchema)]
pub struct TaxList {
    pub data: Vec<TaxView>,
}

#[utoipa::path(get, path = "/api/v1/admin/tax-rates", tag = "admin", responses((status = 200, body = TaxList)))]
async fn list_taxes(State(o): State<Orders>, _: RequirePermission<perm::SettingsWrite>) -> Result<Json<TaxList>, OrdersError> {
    Ok(Json(TaxList { data: store::tax_rates(&o.db).await?.into_iter().map(tax_view).collect() }))
}

#[utoipa::path(post, path = "/api/v1/admin/tax-rates", tag = "admin", request_body = TaxInput,
    responses((status = 201, body = TaxView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_tax(State(o): State<Orders>, _: RequirePermission<perm::SettingsWrite>, Json(b): Json<TaxInput>) -> Result<Response, OrdersError> {
    let row = parse_tax(b, TaxRateId::new().to_string())?;
    save_tax(&o, &row).await?;
    Ok((StatusCode::CREATED, Json(tax_view(row))).into_response())
}

#[utoipa::path(put, path = "/api/v1/admin/tax-rates/{id}", tag = "admin", params(("id" = String, Path)), request_body = TaxInput,
    responses((status = 200, body = TaxView), (status = 404, body = ErrorBody)))]
async fn replace_tax(State(o): State<Orders>, _: RequirePermission<perm::SettingsWrite>, Path(id): Path<String>, Json(b): Json<TaxInput>) -> Result<Json<TaxView>, OrdersError> {
    if !store::tax_rates(&o.db).await?.iter().any(|t| t.0 == id) {
        return Err(OrdersError::NotFound("tax rate"));
    }
    let row = parse_tax(b, id)?;
    save_tax(&o, &row).await?;
    Ok(Json(tax_view(row)))
}

#[utoipa::path(delete, path = "/api/v1/admin/tax-rates/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
async fn delete_tax(State(o): State<Orders>, _: RequirePermission<perm::SettingsWrite>, Path(id): Path<String>) -> Result<StatusCode, OrdersError> {
    if store::delete_tax_rate(&o.db, &id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(OrdersError::NotFound("tax rate")) }
}
