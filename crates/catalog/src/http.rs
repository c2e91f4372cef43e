//! The catalog's routes and their request and response types.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use kernel::error::ErrorBody;
use kernel::money::Currency;
use kernel::page::{Page, PageParams};
use platform::auth::{RequirePermission, perm};
use platform::http::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cache::{ResponseCache, Shows};
use crate::domain::{ProductOption, Status};
use crate::error::CatalogError;
use crate::inventory::Inventory;
use crate::products::{self, Change, ListFilter, NewProduct, NewVariantInput};
use crate::store;
use crate::views::{self, ProductView, view};

/// The routes' state: one shared value, so that a request clones one
/// pointer rather than every handle inside.
#[derive(Clone)]
pub struct Catalog(std::sync::Arc<Parts>);

impl Catalog {
    pub fn new(parts: Parts) -> Catalog {
        Catalog(std::sync::Arc::new(parts))
    }
}

impl std::ops::Deref for Catalog {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

pub struct Parts {
    pub inventory: Inventory,
    pub cache: std::sync::Arc<ResponseCache>,
    pub media: crate::media::MediaStore,
    /// The shop's address, for absolute links in exports.
    pub public_url: std::sync::Arc<str>,
}

/// A public route's query string read into its typed parameters: an
/// unknown or malformed parameter is refused in the error shape, so junk
/// never reaches the response cache.
fn public_query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, kernel::ApiError> {
    Query::<T>::try_from_uri(uri).map(|Query(q)| q).map_err(|e| kernel::ApiError::bad_request("invalid_query", e.body_text()))
}

/// A cache key from the route and its parsed parameters, not the raw
/// URI: the same question asked with parameters in another order, or
/// spelled with other escapes, is one entry.
fn cache_key(route: &str, params: &impl Serialize) -> String {
    format!("{route} {}", serde_json::to_string(params).unwrap_or_default())
}

/// No query parameters: the routes that take none refuse any.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// Public, cacheable JSON: served from the cache while what it shows has
/// not changed, with a strong `ETag`; `If-None-Match` gets a 304. `build`
/// answers the body and what it shows.
async fn cached<F, Fut, T>(c: &Catalog, key: String, headers: &HeaderMap, build: F) -> Result<Response, CatalogError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(T, Shows), CatalogError>>,
    T: Serialize,
{
    let entry = match c.cache.get(&key) {
        Some(hit) => hit,
        None => {
            let stamp = c.cache.stamp();
            let (value, shows) = build().await?;
            let body = serde_json::to_vec(&value).map_err(|e| platform::DbError::Corrupt(e.to_string()))?;
            c.cache.put(key, stamp, shows, body.into())
        }
    };
    let cache_control = (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60, stale-while-revalidate=300"));
    let etag = entry.etag;
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().as_bytes() == etag.as_bytes() || t.trim() == "*"));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag), cache_control]).into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json")), (header::ETAG, etag), cache_control],
        entry.body,
    )
        .into_response())
}

/// A route that takes larger bodies than the server-wide limit.
fn body_limit(
    (schemas, paths, method): utoipa_axum::router::UtoipaMethodRouter<Catalog>,
    bytes: usize,
) -> utoipa_axum::router::UtoipaMethodRouter<Catalog> {
    (schemas, paths, method.layer(axum::extract::DefaultBodyLimit::max(bytes)))
}

pub fn router(catalog: Catalog) -> OpenApiRouter {
    // The picture and the multipart framing around it.
    let upload_limit = catalog.media.max_upload_bytes + platform::routes::UPLOAD_FRAMING_BYTES;
    OpenApiRouter::new()
        .routes(routes!(list_products))
        .routes(routes!(category_tree))
        .routes(routes!(create_category))
        .routes(routes!(update_category, delete_category))
        .routes(routes!(get_product))
        .routes(routes!(admin_list_products, create_product))
        .routes(routes!(admin_get_product, update_product, delete_product))
        .routes(routes!(add_variant))
        .routes(routes!(update_variant, delete_variant))
        .routes(routes!(bulk_prices))
        .routes(routes!(inventory_levels))
        .routes(routes!(adjust_inventory))
        .routes(routes!(set_inventory))
        .routes(routes!(inventory_history))
        .routes(routes!(list_locations, create_location))
        .routes(routes!(rename_location, delete_location))
        .routes(body_limit(routes!(upload_media), upload_limit))
        .routes(routes!(update_media, delete_media))
        .routes(body_limit(routes!(import_products), IMPORT_LIMIT))
        .routes(routes!(export_products))
        .route("/media/{*key}", axum::routing::get(serve_media))
        .with_state(catalog)
}

fn page(products: Vec<(String, ProductView)>, limit: u32) -> Page<ProductView> {
    let page = Page::from_rows(products, limit, |(key, _)| key.clone());
    Page { data: page.data.into_iter().map(|(_, p)| p).collect(), has_more: page.has_more, next_cursor: page.next_cursor }
}

#[derive(Deserialize, Serialize, Clone, Copy, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    #[default]
    Newest,
    Oldest,
    Title,
    PriceAsc,
    PriceDesc,
}

impl From<SortOrder> for store::Sort {
    fn from(s: SortOrder) -> Self {
        match s {
            SortOrder::Newest => store::Sort::Newest,
            SortOrder::Oldest => store::Sort::Oldest,
            SortOrder::Title => store::Sort::Title,
            SortOrder::PriceAsc => store::Sort::PriceAsc,
            SortOrder::PriceDesc => store::Sort::PriceDesc,
        }
    }
}

/// The public list's parameters, all of them: any other is refused.
#[derive(Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ProductFilter {
    pub brand: Option<String>,
    pub tag: Option<String>,
    /// A category id or slug: its products and those of its sub-categories.
    pub category: Option<String>,
    /// Currency of the price filter and price sorts (default USD).
    pub currency: Option<String>,
    /// Minor units.
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    /// Only products with a variant that can be bought now.
    #[serde(default)]
    pub in_stock: bool,
    /// `newest` (default), `oldest`, `title`, `price_asc`, `price_desc`.
    #[serde(default)]
    pub sort: SortOrder,
    /// 1–100, default 20.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub starting_after: Option<String>,
}

impl ProductFilter {
    fn page(&self) -> PageParams {
        PageParams { limit: self.limit, starting_after: self.starting_after.clone() }
    }

    fn list_filter(&self, status: Option<&'static str>) -> ListFilter<'_> {
        ListFilter {
            status,
            text: None,
            low_stock: false,
            brand: self.brand.as_deref(),
            tag: self.tag.as_deref(),
            category: self.category.as_deref(),
            currency: self.currency.as_deref(),
            min_price: self.min_price,
            max_price: self.max_price,
            in_stock: self.in_stock,
            sort: self.sort.into(),
        }
    }
}

/// Active products: filtered, sorted, in cursor pages.
#[utoipa::path(get, path = "/api/v1/products", tag = "catalog", params(ProductFilter),
    responses((status = 200, body = Page<ProductView>), (status = 400, body = ErrorBody)))]
async fn list_products(State(c): State<Catalog>, uri: Uri, headers: HeaderMap) -> Result<Response, kernel::ApiError> {
    let filter: ProductFilter = public_query(&uri)?;
    let p = filter.page().parse()?;
    let result = cached(&c, cache_key("products", &filter), &headers, || async {
        let f = filter.list_filter(Some("active"));
        let rows = views::list(&c.inventory.db, &f, p.after.as_deref(), p.limit, false).await?;
        let shows = Shows { products: rows.iter().map(|(_, p)| p.id.clone()).collect(), listing: true };
        Ok((page(rows, p.limit), shows))
    })
    .await;
    result.map_err(|e| kernel::ApiError::from(&e))
}

/// An active product by id or slug.
#[utoipa::path(get, path = "/api/v1/products/{id_or_slug}", tag = "catalog", params(("id_or_slug" = String, Path)),
    responses((status = 200, body = ProductView), (status = 404, body = ErrorBody)))]
async fn get_product(
    State(c): State<Catalog>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, kernel::ApiError> {
    let params: NoParams = public_query(&uri)?;
    let result = cached(&c, cache_key(&format!("product {id}"), &params), &headers, || async {
        let product = views::find(&c.inventory.db, &id, false).await?;
        let shows = Shows { products: vec![product.id.clone()], listing: false };
        Ok((product, shows))
    })
    .await;
    result.map_err(|e| kernel::ApiError::from(&e))
}

/// What the staff list takes besides the public list's parameters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AdminProductFilter {
    pub status: Option<Status>,
    /// Words the title or a SKU contains, in any case.
    pub q: Option<String>,
    /// Only products with a tracked variant at or under its low-stock threshold.
    #[serde(default)]
    pub low_stock: bool,
}

impl AdminProductFilter {
    const NAMES: [&str; 3] = ["status", "q", "low_stock"];

    /// Splits a staff list's query into its own part and the public list's,
    /// each parsed strictly: a parameter neither knows is refused.
    fn parse(uri: &Uri) -> Result<(AdminProductFilter, ProductFilter), kernel::ApiError> {
        let (own, public): (Vec<&str>, Vec<&str>) = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .partition(|pair| Self::NAMES.contains(&pair.split('=').next().unwrap_or_default()));
        let part = |pairs: Vec<&str>| {
            Uri::try_from(format!("/?{}", pairs.join("&")))
                .map_err(|e| kernel::ApiError::bad_request("invalid_query", e.to_string()))
        };
        Ok((public_query(&part(own)?)?, public_query(&part(public)?)?))
    }
}

/// Staff: products in any status (`catalog:write` or `inventory:write`).
#[utoipa::path(get, path = "/api/v1/admin/products", tag = "admin", params(AdminProductFilter, ProductFilter),
    responses((status = 200, body = Page<ProductView>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn admin_list_products(
    State(c): State<Catalog>,
    who: platform::auth::Principal,
    uri: Uri,
) -> Result<Json<Page<ProductView>>, kernel::ApiError> {
    // Whoever keeps the stock reads the variants it belongs to, as editors do.
    if !who.has(kernel::auth::Permission::InventoryWrite) {
        who.require(kernel::auth::Permission::CatalogWrite)?;
    }
    let (own, filter) = AdminProductFilter::parse(&uri)?;
    let p = filter.page().parse()?;
    let f = ListFilter { text: own.q.as_deref(), low_stock: own.low_stock, ..filter.list_filter(own.status.map(Status::as_str)) };
    let rows = views::list(&c.inventory.db, &f, p.after.as_deref(), p.limit, true).await.map_err(|e| kernel::ApiError::from(&e))?;
    Ok(Json(page(rows, p.limit)))
}

fn default_track() -> bool {
    true
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantRequest {
    pub sku: String,
    pub title: Option<String>,
    /// Minor units per ISO 4217 currency, e.g. `{"USD": 1999, "EUR": 1899}`.
    pub prices: BTreeMap<String, i64>,
    /// "Was" prices, per currency that has a price.
    #[serde(default)]
    pub compare_at_prices: BTreeMap<String, i64>,
    pub barcode: Option<String>,
    pub weight_grams: Option<i64>,
    /// One value per option of the product, in its order (none when the
    /// product has no options).
    #[serde(default)]
    pub option_values: Vec<String>,
    #[serde(default = "default_track")]
    pub track_inventory: bool,
    /// Keep selling when nothing is available (default false).
    #[serde(default)]
    pub allow_backorder: bool,
    /// `inventory.low_stock` fires when available falls to this (default 5).
    pub low_stock_threshold: Option<i64>,
}

impl From<VariantRequest> for NewVariantInput {
    fn from(v: VariantRequest) -> Self {
        NewVariantInput {
            sku: v.sku,
            title: v.title,
            prices: v.prices,
            compare_at_prices: v.compare_at_prices,
            barcode: v.barcode,
            weight_grams: v.weight_grams,
            option_values: v.option_values,
            track_inventory: v.track_inventory,
            allow_backorder: v.allow_backorder,
            low_stock_threshold: v.low_stock_threshold,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub title: String,
    /// Made from the title when absent.
    pub slug: Option<String>,
    #[serde(default)]
    pub description: String,
    /// `draft` by default.
    pub status: Option<Status>,
    pub brand: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Category ids or slugs.
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub seo_title: Option<String>,
    pub seo_description: Option<String>,
    /// Up to 3, e.g. `[{"name": "Size", "values": ["S", "M"]}]`.
    #[serde(default)]
    pub options: Vec<ProductOption>,
    pub variants: Vec<VariantRequest>,
}

/// Staff: create a product with its variants (`catalog:write`).
#[utoipa::path(post, path = "/api/v1/admin/products", tag = "admin", request_body = CreateProduct,
    responses((status = 201, body = ProductView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_product(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Json(body): Json<CreateProduct>,
) -> Result<impl IntoResponse, CatalogError> {
    let input = NewProduct {
        title: body.title,
        slug: body.slug,
        description: body.description,
        status: body.status.unwrap_or(Status::Draft),
        brand: body.brand,
        tags: body.tags,
        categories: body.categories,
        attributes: body.attributes,
        seo_title: body.seo_title,
        seo_description: body.seo_description,
        options: body.options,
        variants: body.variants.into_iter().map(NewVariantInput::from).collect(),
    };
    let product = products::create(&c.inventory.db, input).await?;
    c.cache.invalidate();
    Ok((StatusCode::CREATED, Json(view(product, true))))
}

/// Staff: a product in any status (`catalog:write`).
#[utoipa::path(get, path = "/api/v1/admin/products/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = ProductView), (status = 404, body = ErrorBody)))]
async fn admin_get_product(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Path(id): Path<String>,
) -> Result<Json<ProductView>, CatalogError> {
    Ok(Json(views::find(&c.inventory.db, &id, true).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    pub slug: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<Status>,
    #[serde(default, deserialize_with = "platform::http::nullable")]
    #[schema(value_type = Option<String>)]
    pub brand: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    /// Category ids or slugs; replaces the product's categories.
    pub categories: Option<Vec<String>>,
    pub attributes: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "platform::http::nullable")]
    #[schema(value_type = Option<String>)]
    pub seo_title: Option<Option<String>>,
    #[serde(default, deserialize_with = "platform::http::nullable")]
    #[schema(value_type = Option<String>)]
    pub seo_description: Option<Option<String>>,
    /// Replaces the options; each variant's values must still be offered.
    pub options: Option<Vec<ProductOption>>,
}

/// Staff: change a product (`catalog:write`); archive it with `status: archived`.
#[utoipa::path(patch, path = "/api/v1/admin/products/{id}", tag = "admin", params(("id" = String, Path)),
    request_body = UpdateProduct,
    responses((status = 200, body = ProductView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_product(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Path(id): Path<String>,
    Json(b): Json<UpdateProduct>,
) -> Result<Json<ProductView>, CatalogError> {
    let change = Change {
        slug: b.slug,
        title: b.title,
        description: b.description,
        status: b.status,
        brand: b.brand,
        tags: b.tags,
        categories: b.categories,
        attributes: b.attributes,
        seo_title: b.seo_title,
        seo_description: b.seo_description,
        options: b.options,
    };
    let product = products::update(&c.inventory.db, &id, change).await?;
    c.cache.invalidate();
    Ok(Json(view(product, true)))
}

#[derive(Serialize, ToSchema)]
pub struct LevelView {
    pub sku: String,
    pub location: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

#[derive(Deserialize, IntoParams)]
pub struct SkuQuery {
    pub sku: String,
}

/// Staff: stock of a SKU per location (`inventory:write`).
#[utoipa::path(get, path = "/api/v1/admin/inventory", tag = "admin", params(SkuQuery),
    responses((status = 200, body = Vec<LevelView>), (status = 404, body = ErrorBody)))]
async fn inventory_levels(
    State(c): State<Catalog>,
    _: RequirePermission<perm::InventoryWrite>,
    Query(q): Query<SkuQuery>,
) -> Result<Json<Vec<LevelView>>, CatalogError> {
    let sku = crate::domain::Sku::parse(&q.sku, "sku")?;
    let levels = store::levels(&c.inventory.db, sku.as_str()).await?;
    if levels.is_empty() {
        return Err(CatalogError::UnknownSku(sku.as_str().to_owned()));
    }
    Ok(Json(
        levels
            .into_iter()
            .map(|(location, on_hand, reserved)| LevelView {
                sku: sku.as_str().to_owned(),
                location,
                on_hand,
                reserved,
                available: on_hand - reserved,
            })
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentReason {
    Received,
    Damaged,
    Correction,
    Returned,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Adjustment {
    pub sku: String,
    /// A stock location id; the default location when absent.
    pub location: Option<String>,
    pub delta: i64,
    pub reason: AdjustmentReason,
}

fn level_view(sku: &str, location: Option<&str>, (on_hand, reserved): (i64, i64)) -> LevelView {
    LevelView {
        sku: sku.trim().to_uppercase(),
        location: location.unwrap_or(store::DEFAULT_LOCATION).to_owned(),
        on_hand,
        reserved,
        available: on_hand - reserved,
    }
}

/// Staff: record received, damaged, corrected or returned units (`inventory:write`).
#[utoipa::path(post, path = "/api/v1/admin/inventory/adjustments", tag = "admin", request_body = Adjustment,
    responses((status = 200, body = LevelView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn adjust_inventory(
    State(c): State<Catalog>,
    RequirePermission(who, ..): RequirePermission<perm::InventoryWrite>,
    Json(b): Json<Adjustment>,
) -> Result<Json<LevelView>, CatalogError> {
    let reason = match b.reason {
        AdjustmentReason::Received => "received",
        AdjustmentReason::Damaged => "damaged",
        AdjustmentReason::Correction => "correction",
        AdjustmentReason::Returned => "returned",
    };
    let level = c.inventory.adjust(&b.sku, b.location.as_deref(), b.delta, reason, &who.user_id.to_string()).await?;
    Ok(Json(level_view(&b.sku, b.location.as_deref(), level)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stocktake {
    pub on_hand: i64,
    pub location: Option<String>,
}

/// Staff: set the counted stock of a SKU (`inventory:write`).
#[utoipa::path(put, path = "/api/v1/admin/inventory/{sku}", tag = "admin", params(("sku" = String, Path)),
    request_body = Stocktake, responses((status = 200, body = LevelView), (status = 409, body = ErrorBody)))]
async fn set_inventory(
    State(c): State<Catalog>,
    RequirePermission(who, ..): RequirePermission<perm::InventoryWrite>,
    Path(sku): Path<String>,
    Json(b): Json<Stocktake>,
) -> Result<Json<LevelView>, CatalogError> {
    let level = c.inventory.set_count(&sku, b.location.as_deref(), b.on_hand, "stocktake", &who.user_id.to_string()).await?;
    Ok(Json(level_view(&sku, b.location.as_deref(), level)))
}

#[derive(Serialize, ToSchema)]
pub struct LedgerView {
    pub id: String,
    pub location: String,
    pub delta: i64,
    pub on_hand_after: i64,
    pub reason: String,
    pub actor_id: Option<String>,
    /// The order, for sales.
    pub reference: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
}

/// Staff: every stock change of a SKU, newest first (`inventory:write`).
#[utoipa::path(get, path = "/api/v1/admin/inventory/{sku}/history", tag = "admin",
    params(("sku" = String, Path), PageParams), responses((status = 200, body = Page<LedgerView>)))]
async fn inventory_history(
    State(c): State<Catalog>,
    _: RequirePermission<perm::InventoryWrite>,
    Path(sku): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<LedgerView>>, kernel::ApiError> {
    let p = params.parse()?;
    let sku = crate::domain::Sku::parse(&sku, "sku").map_err(|e| kernel::ApiError::from(&CatalogError::from(e)))?;
    let rows = store::ledger(&c.inventory.db, sku.as_str(), p.after.as_deref(), p.limit)
        .await
        .map_err(|e| kernel::ApiError::from(&CatalogError::from(e)))?;
    let views: Vec<LedgerView> = rows
        .into_iter()
        .map(|(id, location, delta, on_hand_after, reason, actor_id, reference, at)| LedgerView {
            id,
            location,
            delta,
            on_hand_after,
            reason,
            actor_id,
            reference,
            at,
        })
        .collect();
    Ok(Json(Page::from_rows(views, p.limit, |v| v.id.clone())))
}

/// The category tree.
#[utoipa::path(get, path = "/api/v1/categories", tag = "catalog",
    responses((status = 200, body = Vec<crate::categories::Node>)))]
async fn category_tree(State(c): State<Catalog>, uri: Uri, headers: HeaderMap) -> Result<Response, kernel::ApiError> {
    let params: NoParams = public_query(&uri)?;
    let result = cached(&c, cache_key("categories", &params), &headers, || async {
        Ok((crate::categories::tree(&store::categories(&c.inventory.db).await?), Shows::default()))
    })
    .await;
    result.map_err(|e| kernel::ApiError::from(&e))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryRequest {
    pub name: Option<String>,
    /// Made from the name when absent.
    pub slug: Option<String>,
    /// The parent category; `null` for the top level.
    #[serde(default, deserialize_with = "platform::http::nullable")]
    #[schema(value_type = Option<String>)]
    pub parent_id: Option<Option<String>>,
    pub position: Option<i32>,
}

impl From<CategoryRequest> for crate::categories::CategoryInput {
    fn from(r: CategoryRequest) -> Self {
        crate::categories::CategoryInput { name: r.name, slug: r.slug, parent_id: r.parent_id, position: r.position }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CategoryView {
    pub id: String,
    pub parent_id: Option<String>,
    pub slug: String,
    pub name: String,
    pub position: i32,
}

impl From<store::CategoryRow> for CategoryView {
    fn from(c: store::CategoryRow) -> Self {
        CategoryView { id: c.id, parent_id: c.parent_id, slug: c.slug, name: c.name, position: c.position }
    }
}

/// Staff: add a category (`catalog:write`).
#[utoipa::path(post, path = "/api/v1/admin/categories", tag = "admin", request_body = CategoryRequest,
    responses((status = 201, body = CategoryView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_category(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Json(b): Json<CategoryRequest>,
) -> Result<impl IntoResponse, CatalogError> {
    let row = crate::categories::create(&c.inventory.db, b.into()).await?;
    c.cache.invalidate();
    Ok((StatusCode::CREATED, Json(CategoryView::from(row))))
}

/// Staff: rename, move or reorder a category (`catalog:write`).
#[utoipa::path(patch, path = "/api/v1/admin/categories/{id}", tag = "admin", params(("id" = String, Path)),
    request_body = CategoryRequest, responses((status = 200, body = CategoryView), (status = 404, body = ErrorBody)))]
async fn update_category(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Path(id): Path<String>,
    Json(b): Json<CategoryRequest>,
) -> Result<Json<CategoryView>, CatalogError> {
    let row = crate::categories::update(&c.inventory.db, &id, b.into()).await?;
    c.cache.invalidate();
    Ok(Json(row.into()))
}

/// Staff: remove a category without sub-categories (`catalog:write`).
#[utoipa::path(delete, path = "/api/v1/admin/categories/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204, description = "removed"), (status = 409, body = ErrorBody)))]
async fn delete_category(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, CatalogError> {
    crate::categories::delete(&c.inventory.db, &id).await?;
    c.cache.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

/// Staff: delete a product that was never ordered (`catalog:write`); archive the others.
#[utoipa::path(delete, path = "/api/v1/admin/products/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 409, body = ErrorBody)))]
async fn delete_product(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, CatalogError> {
    products::delete(&c.inventory.db, &id).await?;
    c.cache.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

/// Staff: add a variant to a product (`catalog:write`).
#[utoipa::path(post, path = "/api/v1/admin/products/{id}/variants", tag = "admin", params(("id" = String, Path)),
    request_body = VariantRequest, responses((status = 201, body = ProductView), (status = 409, body = ErrorBody)))]
async fn add_variant(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Path(id): Path<String>,
    Json(v): Json<VariantRequest>,
) -> Result<impl IntoResponse, CatalogError> {
    let product = products::add_variant(&c.inventory.db, &id, v.into()).await?;
    c.cache.invalidate();
    Ok((StatusCode::CREATED, Json(view(product, true))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantUpdate {
    pub title: Option<String>,
    /// Replaces every price of the variant.
    pub prices: Option<BTreeMap<String, i64>>,
    #[serde(default)]
    pub compare_at_prices: BTreeMap<String, i64>,
    #[serde(default, deserialize_with = "platform::http::nullable")]
    #[schema(value_type = Option<String>)]
    pub barcode: Option<Option<String>>,
    #[serde(default, deserialize_with = "platform::http::nullable")]
    #[schema(value_type = Option<i64>)]
    pub weight_grams: Option<Option<i64>>,
    pub track_inventory: Option<bool>,
    pub allow_backorder: Option<bool>,
    pub low_stock_threshold: Option<i64>,
    pub option_values: Option<Vec<String>>,
}

/// Staff: change a variant (`catalog:write`).
#[utoipa::path(patch, path = "/api/v1/admin/variants/{sku}", tag = "admin", params(("sku" = String, Path)),
    request_body = VariantUpdate, responses((status = 200, body = ProductView), (status = 404, body = ErrorBody)))]
async fn update_variant(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Path(sku): Path<String>,
    Json(v): Json<VariantUpdate>,
) -> Result<Json<ProductView>, CatalogError> {
    let patch = products::VariantPatch {
        title: v.title,
        prices: v.prices,
        compare_at_prices: v.compare_at_prices,
        barcode: v.barcode,
        weight_grams: v.weight_grams,
        track_inventory: v.track_inventory,
        allow_backorder: v.allow_backorder,
        low_stock_threshold: v.low_stock_threshold,
        option_values: v.option_values,
    };
    let product = products::update_variant(&c.inventory.db, &sku, patch).await?;
    c.cache.invalidate();
    Ok(Json(view(product, true)))
}

/// Staff: remove a variant that was never ordered (`catalog:write`).
#[utoipa::path(delete, path = "/api/v1/admin/variants/{sku}", tag = "admin", params(("sku" = String, Path)),
    responses((status = 204, description = "removed"), (status = 409, body = ErrorBody)))]
async fn delete_variant(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Path(sku): Path<String>,
) -> Result<StatusCode, CatalogError> {
    products::delete_variant(&c.inventory.db, &sku).await?;
    c.cache.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceUpdate {
    pub sku: String,
    pub prices: BTreeMap<String, i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkPrices {
    pub updates: Vec<PriceUpdate>,
}

#[derive(Serialize, ToSchema)]
pub struct BulkResult {
    pub updated: usize,
}

/// Staff: set the prices of many variants at once, all or none (`catalog:write`).
#[utoipa::path(post, path = "/api/v1/admin/prices/bulk", tag = "admin", request_body = BulkPrices,
    responses((status = 200, body = BulkResult), (status = 422, body = ErrorBody)))]
async fn bulk_prices(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Json(b): Json<BulkPrices>,
) -> Result<Json<BulkResult>, CatalogError> {
    let updates: Vec<(String, BTreeMap<String, i64>)> = b.updates.into_iter().map(|u| (u.sku, u.prices)).collect();
    let updated = products::bulk_prices(&c.inventory.db, &updates).await?;
    c.cache.invalidate();
    Ok(Json(BulkResult { updated }))
}

// Stock locations

#[derive(Serialize, ToSchema)]
pub struct LocationView {
    pub id: String,
    pub name: String,
    pub is_default: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationRequest {
    pub name: String,
}

fn location_name(raw: &str) -> Result<String, CatalogError> {
    Ok(crate::domain::parse_title(raw, "name")?)
}

/// Staff: the stock locations, the default first (`inventory:write`).
#[utoipa::path(get, path = "/api/v1/admin/stock-locations", tag = "admin",
    responses((status = 200, body = Vec<LocationView>)))]
async fn list_locations(
    State(c): State<Catalog>,
    _: RequirePermission<perm::InventoryWrite>,
) -> Result<Json<Vec<LocationView>>, CatalogError> {
    let all = store::locations(&c.inventory.db).await?;
    Ok(Json(all.into_iter().map(|l| LocationView { id: l.id, name: l.name, is_default: l.is_default }).collect()))
}

/// Staff: add a stock location (`inventory:write`).
#[utoipa::path(post, path = "/api/v1/admin/stock-locations", tag = "admin", request_body = LocationRequest,
    responses((status = 201, body = LocationView), (status = 422, body = ErrorBody)))]
async fn create_location(
    State(c): State<Catalog>,
    _: RequirePermission<perm::InventoryWrite>,
    Json(b): Json<LocationRequest>,
) -> Result<impl IntoResponse, CatalogError> {
    let name = location_name(&b.name)?;
    let id = kernel::id::LocationId::new().to_string();
    store::insert_location(&c.inventory.db, &id, &name).await?;
    Ok((StatusCode::CREATED, Json(LocationView { id, name, is_default: false })))
}

/// Staff: rename a stock location (`inventory:write`).
#[utoipa::path(patch, path = "/api/v1/admin/stock-locations/{id}", tag = "admin", params(("id" = String, Path)),
    request_body = LocationRequest, responses((status = 200, body = LocationView), (status = 404, body = ErrorBody)))]
async fn rename_location(
    State(c): State<Catalog>,
    _: RequirePermission<perm::InventoryWrite>,
    Path(id): Path<String>,
    Json(b): Json<LocationRequest>,
) -> Result<Json<LocationView>, CatalogError> {
    let name = location_name(&b.name)?;
    if !store::rename_location(&c.inventory.db, &id, &name).await? {
        return Err(CatalogError::LocationNotFound);
    }
    let all = store::locations(&c.inventory.db).await?;
    let l = all.into_iter().find(|l| l.id == id).ok_or(CatalogError::LocationNotFound)?;
    Ok(Json(LocationView { id: l.id, name: l.name, is_default: l.is_default }))
}

/// Staff: remove a stock location that holds nothing (`inventory:write`).
#[utoipa::path(delete, path = "/api/v1/admin/stock-locations/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204, description = "removed"), (status = 409, body = ErrorBody)))]
async fn delete_location(
    State(c): State<Catalog>,
    _: RequirePermission<perm::InventoryWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, CatalogError> {
    let mut tx = c.inventory.db.begin().await?;
    if !store::location_exists(&mut tx, &id).await? {
        return Err(CatalogError::LocationNotFound);
    }
    if !store::delete_location(&mut tx, &id).await? {
        return Err(CatalogError::LocationInUse);
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// Media

/// A picture upload: the `file` part, and optional `alt` text.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MediaUpload {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    alt: Option<String>,
}

/// Staff: upload a picture of a product (`catalog:write`): JPEG, PNG or
/// WebP, recognised by content; thumbnails are made at once.
#[utoipa::path(post, path = "/api/v1/admin/products/{id}/media", tag = "admin", params(("id" = String, Path)),
    request_body(content = MediaUpload, content_type = "multipart/form-data"),
    responses((status = 201, body = crate::media::MediaView), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn upload_media(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Path(id): Path<String>,
    mut form: axum::extract::Multipart,
) -> Result<impl IntoResponse, CatalogError> {
    let limit = c.media.max_upload_bytes;
    let bad_form = |e: axum::extract::multipart::MultipartError| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => CatalogError::TooLarge(limit),
        _ => CatalogError::from(crate::domain::invalid("file", "invalid_form", e.body_text())),
    };
    let mut file: Option<bytes::Bytes> = None;
    let mut alt = String::new();
    while let Some(field) = form.next_field().await.map_err(bad_form)? {
        match field.name() {
            Some("file") => {
                file = Some(field.bytes().await.map_err(bad_form)?);
            }
            Some("alt") => alt = field.text().await.map_err(bad_form)?,
            other => {
                let name = other.unwrap_or("").to_owned();
                return Err(crate::domain::invalid(name, "unknown_field", "only `file` and `alt`").into());
            }
        }
    }
    let file = file.ok_or_else(|| crate::domain::invalid("file", "missing_file", "a `file` part with the picture"))?;
    let saved = crate::media::upload(&c.inventory.db, &c.media, &id, file, &alt).await?;
    c.cache.invalidate();
    Ok((StatusCode::CREATED, Json(crate::media::MediaView::from(saved))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaChange {
    pub alt: Option<String>,
    /// The new place in the product's order, from 0.
    pub position: Option<i32>,
}

/// Staff: change a picture's alt text or place (`catalog:write`).
#[utoipa::path(patch, path = "/api/v1/admin/products/{id}/media/{media_id}", tag = "admin",
    params(("id" = String, Path), ("media_id" = String, Path)), request_body = MediaChange,
    responses((status = 200, body = ProductView), (status = 404, body = ErrorBody)))]
async fn update_media(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Path((id, media_id)): Path<(String, String)>,
    Json(b): Json<MediaChange>,
) -> Result<Json<ProductView>, CatalogError> {
    crate::media::update(&c.inventory.db, &id, &media_id, b.alt.as_deref(), b.position).await?;
    c.cache.invalidate();
    Ok(Json(views::find(&c.inventory.db, &id, true).await?))
}

/// Staff: remove a picture (`catalog:write`).
#[utoipa::path(delete, path = "/api/v1/admin/products/{id}/media/{media_id}", tag = "admin",
    params(("id" = String, Path), ("media_id" = String, Path)),
    responses((status = 204, description = "removed"), (status = 404, body = ErrorBody)))]
async fn delete_media(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Path((id, media_id)): Path<(String, String)>,
) -> Result<StatusCode, CatalogError> {
    crate::media::delete(&c.inventory.db, &c.media, &id, &media_id).await?;
    c.cache.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

/// A stored picture. Keys never change for new content, so it may be
/// cached for a year.
async fn serve_media(State(c): State<Catalog>, Path(key): Path<String>) -> Result<Response, CatalogError> {
    if !crate::media::valid_key(&key) {
        return Err(CatalogError::MediaNotFound);
    }
    let Some(body) = c.media.get(&key).await? else {
        return Err(CatalogError::MediaNotFound);
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(crate::media::content_type_of(&key))),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response())
}

// Import and export

/// The largest CSV file the import route reads.
pub(crate) const IMPORT_LIMIT: usize = 32 * 1024 * 1024;

#[derive(Deserialize, IntoParams)]
pub struct CurrencyParam {
    /// The currency of the file's prices (default USD).
    pub currency: Option<String>,
}

fn currency_param(p: &CurrencyParam) -> Result<Currency, CatalogError> {
    let code = p.currency.as_deref().unwrap_or("USD");
    Ok(Currency::parse(code).map_err(|_| crate::domain::invalid("currency", "invalid_currency", "an ISO 4217 code"))?)
}

/// Staff: import products from a Shopify product CSV sent as the body
/// (`catalog:write`). Bad rows are reported with their line; the rest go in.
#[utoipa::path(post, path = "/api/v1/admin/products/import", tag = "admin", params(CurrencyParam),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = crate::shopify::ImportReport), (status = 422, body = ErrorBody)))]
async fn import_products(
    State(c): State<Catalog>,
    RequirePermission(who, ..): RequirePermission<perm::CatalogWrite>,
    Query(q): Query<CurrencyParam>,
    body: bytes::Bytes,
) -> Result<Json<crate::shopify::ImportReport>, CatalogError> {
    let currency = currency_param(&q)?;
    let report = crate::shopify::import(&c.inventory, body.as_ref(), currency, &who.user_id.to_string(), &|_, _| {}).await?;
    c.cache.invalidate();
    Ok(Json(report))
}

/// Staff: every product as a Shopify product CSV (`catalog:write`).
#[utoipa::path(get, path = "/api/v1/admin/products/export", tag = "admin", params(CurrencyParam),
    responses((status = 200, content_type = "text/csv", body = String)))]
async fn export_products(
    State(c): State<Catalog>,
    _: RequirePermission<perm::CatalogWrite>,
    Query(q): Query<CurrencyParam>,
) -> Result<Response, CatalogError> {
    let currency = currency_param(&q)?;
    let mut out = Vec::new();
    crate::shopify::export(&c.inventory.db, &mut out, currency, &c.public_url).await?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
            (header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"products.csv\"")),
        ],
        out,
    )
        .into_response())
}
