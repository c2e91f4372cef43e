//! The reservation port over HTTP, for checkout in another process:
//! `/internal/v1/reservations`, guarded by a service token from the
//! configuration (closed when none is set).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kernel::error::ErrorBody;
use platform::auth::Service;
use platform::http::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::CatalogError;
use crate::inventory::{Inventory, Line, Offer, Reservation};

#[derive(Clone)]
pub struct Internal {
    pub inventory: Inventory,
    pub token: Option<Arc<str>>,
}

pub fn router(internal: Internal) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(reserve))
        .routes(routes!(get_reservation))
        .routes(routes!(commit))
        .routes(routes!(release))
        .routes(routes!(offers))
        .routes(routes!(restock))
        .routes(routes!(listings))
        .routes(routes!(listing))
        .routes(routes!(sku_owner))
        .with_state(internal)
}

/// The routes answer callers holding `catalog.service_token` (closed while it is unset).
impl platform::auth::ServiceTokenGuarded for Internal {
    fn service_token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// Reserving again with the same order id returns the first reservation.
    pub order_id: String,
    pub lines: Vec<LineRequest>,
}

#[derive(Serialize, ToSchema)]
pub struct ReservationView {
    pub order_id: String,
    /// `held`, `committed` or `released`.
    pub state: String,
    pub expires_at_ms: i64,
    pub lines: Vec<ReservedLine>,
}

#[derive(Serialize, ToSchema)]
pub struct ReservedLine {
    pub sku: String,
    pub quantity: i64,
}

impl From<Reservation> for ReservationView {
    fn from(r: Reservation) -> Self {
        ReservationView {
            order_id: r.order_id,
            state: r.state,
            expires_at_ms: r.expires_at_ms,
            lines: r.lines.into_iter().map(|(sku, quantity)| ReservedLine { sku, quantity }).collect(),
        }
    }
}

fn order_id(raw: &str) -> Result<&str, CatalogError> {
    let ok = (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(raw) } else { Err(crate::domain::invalid("order_id", "invalid_order_id", "1-64 letters, digits, _ and -").into()) }
}

/// Hold every line or none (409 `out_of_stock` names the SKU).
#[utoipa::path(post, path = "/internal/v1/reservations", tag = "internal", request_body = ReserveRequest,
    responses((status = 201, body = ReservationView), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn reserve(
    State(s): State<Internal>,
    _: Service,
    Json(b): Json<ReserveRequest>,
) -> Result<impl IntoResponse, CatalogError> {
    let lines: Vec<Line> = b.lines.into_iter().map(|l| Line { sku: l.sku, quantity: l.quantity }).collect();
    let reservation = s.inventory.reserve(order_id(&b.order_id)?, &lines).await?;
    Ok((StatusCode::CREATED, Json(ReservationView::from(reservation))))
}

/// A reservation.
#[utoipa::path(get, path = "/internal/v1/reservations/{order_id}", tag = "internal", params(("order_id" = String, Path)),
    responses((status = 200, body = ReservationView), (status = 404, body = ErrorBody)))]
async fn get_reservation(
    State(s): State<Internal>,
    _: Service,
    Path(order): Path<String>,
) -> Result<Json<ReservationView>, CatalogError> {
    Ok(Json(s.inventory.reservation(order_id(&order)?).await?.into()))
}

/// The order was paid: the held units leave the shelf.
#[utoipa::path(post, path = "/internal/v1/reservations/{order_id}/commit", tag = "internal", params(("order_id" = String, Path)),
    responses((status = 204, description = "committed"), (status = 409, body = ErrorBody)))]
async fn commit(State(s): State<Internal>, _: Service, Path(order): Path<String>) -> Result<StatusCode, CatalogError> {
    s.inventory.commit(order_id(&order)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The order will not be paid: the held units are available again.
#[utoipa::path(post, path = "/internal/v1/reservations/{order_id}/release", tag = "internal", params(("order_id" = String, Path)),
    responses((status = 204, description = "released"), (status = 404, body = ErrorBody)))]
async fn release(State(s): State<Internal>, _: Service, Path(order): Path<String>) -> Result<StatusCode, CatalogError> {
    s.inventory.release(order_id(&order)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OffersRequest {
    pub currency: String,
    pub skus: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OffersResponse {
    pub data: Vec<Offer>,
}

/// What checkout needs to know about SKUs, priced in a currency.
#[utoipa::path(post, path = "/internal/v1/offers", tag = "internal", request_body = OffersRequest,
    responses((status = 200, body = OffersResponse), (status = 401, body = ErrorBody)))]
async fn offers(State(s): State<Internal>, _: Service, Json(b): Json<OffersRequest>) -> Result<Json<OffersResponse>, CatalogError> {
    if b.skus.len() > 500 {
        return Err(crate::domain::invalid("skus", "too_many", "at most 500 SKUs").into());
    }
    Ok(Json(OffersResponse { data: s.inventory.offers(&b.skus, &b.currency).await? }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    pub sku: String,
    pub quantity: i64,
    /// Restocking twice with one reference counts once.
    pub reference: String,
}

/// Sold units come back to the shelf (a refund or a cancellation).
#[utoipa::path(post, path = "/internal/v1/restocks", tag = "internal", request_body = RestockRequest,
    responses((status = 204, description = "restocked"), (status = 401, body = ErrorBody)))]
async fn restock(State(s): State<Internal>, _: Service, Json(b): Json<RestockRequest>) -> Result<StatusCode, CatalogError> {
    s.inventory.restock(&b.sku, b.quantity, order_id(&b.reference)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListingsRequest {
    pub currency: String,
    /// The `cursor` of the last listing of the previous page.
    pub after: Option<String>,
    pub limit: u32,
}

#[derive(Serialize, ToSchema)]
pub struct ListingEntry {
    pub cursor: String,
    #[schema(value_type = Object)]
    pub listing: crate::feed::Listing,
}

#[derive(Serialize, ToSchema)]
pub struct ListingsResponse {
    pub data: Vec<ListingEntry>,
}

/// Active products as search indexes them, oldest first.
#[utoipa::path(post, path = "/internal/v1/listings", tag = "internal", request_body = ListingsRequest,
    responses((status = 200, body = ListingsResponse), (status = 401, body = ErrorBody)))]
async fn listings(State(s): State<Internal>, _: Service, Json(b): Json<ListingsRequest>) -> Result<Json<ListingsResponse>, CatalogError> {
    let limit = b.limit.clamp(1, 1000);
    let page = crate::feed::listings(&s.inventory.db, b.after.as_deref(), limit, &b.currency).await?;
    Ok(Json(ListingsResponse { data: page.into_iter().map(|(cursor, listing)| ListingEntry { cursor, listing }).collect() }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CurrencyQuery {
    pub currency: String,
}

/// One product as search indexes it, whatever its status (404 when deleted).
#[utoipa::path(get, path = "/internal/v1/listings/{id}", tag = "internal", params(("id" = String, Path), CurrencyQuery),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn listing(
    State(s): State<Internal>,
    _: Service,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<CurrencyQuery>,
) -> Result<Json<crate::feed::Listing>, CatalogError> {
    crate::feed::listing_of(&s.inventory.db, &id, &q.currency).await?.map(Json).ok_or(CatalogError::ProductNotFound)
}

#[derive(Serialize, ToSchema)]
pub struct SkuOwner {
    pub product_id: String,
}

/// The product a SKU belongs to.
#[utoipa::path(get, path = "/internal/v1/skus/{sku}/product", tag = "internal", params(("sku" = String, Path)),
    responses((status = 200, body = SkuOwner), (status = 404, body = ErrorBody)))]
async fn sku_owner(State(s): State<Internal>, _: Service, Path(sku): Path<String>) -> Result<Json<SkuOwner>, CatalogError> {
    let product_id = crate::feed::product_of_sku(&s.inventory.db, &sku).await?.ok_or(CatalogError::UnknownSku(sku))?;
    Ok(Json(SkuOwner { product_id }))
}
