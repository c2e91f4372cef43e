//! The search routes: search with facets, suggestions, and the staff's
//! synonyms, no-result queries and rebuild.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kernel::ApiError;
use kernel::error::ErrorBody;
use kernel::page::{decode_cursor, encode_cursor};
use platform::auth::{Principal, RequirePermission, perm};
use platform::http::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::query::{Facets, Hit, Request, Sort, Suggestion};
use crate::{Search, SearchError, store};

impl From<&SearchError> for ApiError {
    fn from(e: &SearchError) -> Self {
        match e {
            SearchError::Invalid { field, code, message } => ApiError::invalid(*code, message.clone()).with_field(*field),
            SearchError::BadCursor => ApiError::bad_request("invalid_cursor", e.to_string()).with_field("starting_after"),
            SearchError::Busy => ApiError::conflict("reindex_running", e.to_string()),
            SearchError::Feed(cause) => ApiError::unavailable("the catalog", cause, 5),
            SearchError::Store(cause) => ApiError::from(cause),
            SearchError::Index(_) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for SearchError {
    fn into_response(self) -> Response {
        ApiError::from(&self).into_response()
    }
}

pub fn router(search: Search) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(search_products))
        .routes(routes!(suggest))
        .routes(routes!(get_synonyms, put_synonyms))
        .routes(routes!(no_results))
        .routes(routes!(reindex))
        .routes(routes!(recommendations))
        .routes(routes!(trending))
        .routes(routes!(for_me))
        .routes(routes!(view))
        .routes(routes!(rebuild_statistics))
        .with_state(search)
}

fn invalid(field: &'static str, code: &'static str, message: &str) -> SearchError {
    SearchError::Invalid { field, code, message: message.into() }
}

/// How deep results can be paged: a cursor is an offset into the ranked
/// results, and the index collects `offset + limit` hits to answer it, so
/// the offset a client sends must be bounded before it sizes anything.
pub const MAX_RESULT_WINDOW: usize = 10_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// What the shopper typed; empty browses by the filters alone.
    pub q: Option<String>,
    /// A category id (its sub-categories included).
    pub category: Option<String>,
    pub brand: Option<String>,
    /// Comma-separated; all required.
    pub tags: Option<String>,
    /// `name:value` pairs, comma-separated, e.g. `color:red,size:m`.
    pub attributes: Option<String>,
    /// Minor units of the shop's currency.
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    #[serde(default)]
    pub in_stock: bool,
    /// `relevance` (default), `price_asc`, `price_desc`, `newest`.
    pub sort: Option<String>,
    /// Attribute names to count values of, comma-separated.
    pub facets: Option<String>,
    pub limit: Option<u32>,
    pub starting_after: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    pub data: Vec<Hit>,
    pub total: usize,
    pub has_more: bool,
    pub next_cursor: Option<String>,
    pub facets: Facets,
    /// A corrected query when nothing matched.
    pub did_you_mean: Option<String>,
}

fn list(text: &Option<String>) -> Vec<String> {
    text.as_deref().unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn parse(q: SearchQuery) -> Result<Request, SearchError> {
    let text = q.q.unwrap_or_default();
    if text.chars().count() > 200 {
        return Err(invalid("q", "query_too_long", "at most 200 characters"));
    }
    let sort = match q.sort.as_deref().unwrap_or("relevance") {
        "relevance" => Sort::Relevance,
        "price_asc" => Sort::PriceAsc,
        "price_desc" => Sort::PriceDesc,
        "newest" => Sort::Newest,
        _ => return Err(invalid("sort", "invalid_sort", "relevance, price_asc, price_desc or newest")),
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(invalid("limit", "invalid_limit", "1 to 100"));
    }
    let offset = match &q.starting_after {
        Some(c) => decode_cursor(c)
            .and_then(|o| o.parse::<usize>().ok())
            .filter(|o| o.saturating_add(limit as usize) <= MAX_RESULT_WINDOW)
            .ok_or(SearchError::BadCursor)?,
        None => 0,
    };
    let mut attributes = Vec::new();
    for pair in list(&q.attributes) {
        let (k, v) = pair.split_once(':').ok_or_else(|| invalid("attributes", "invalid_attribute", "name:value pairs"))?;
        attributes.push((k.trim().to_lowercase(), v.trim().to_owned()));
    }
    for (field, value) in [("min_price", q.min_price), ("max_price", q.max_price)] {
        if value.is_some_and(|v| v < 0) {
            return Err(invalid(field, "invalid_price", "0 or more minor units"));
        }
    }
    Ok(Request {
        q: text,
        category: q.category,
        brand: q.brand,
        tags: list(&q.tags),
        attributes,
        min_price: q.min_price,
        max_price: q.max_price,
        in_stock: q.in_stock,
        sort,
        offset,
        limit: limit as usize,
        facet_attributes: list(&q.facets).into_iter().map(|a| a.to_lowercase()).collect(),
    })
}

/// Full-text search over active products with typo tolerance, filters,
/// facets for the filtered result, sorts and cursor pages.
#[utoipa::path(get, path = "/api/v1/search", tag = "search", params(SearchQuery),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn search_products(State(s): State<Search>, Query(q): Query<SearchQuery>) -> Result<Json<SearchResponse>, SearchError> {
    let request = parse(q)?;
    let (offset, limit, text) = (request.offset, request.limit, request.q.trim().to_lowercase());
    let results = s.search(request).await?;
    if results.total == 0 && !text.is_empty() {
        store::no_result(&s.db, &text).await?;
    }
    let has_more = offset + results.hits.len() < results.total;
    Ok(Json(SearchResponse {
        next_cursor: has_more.then(|| encode_cursor(&(offset + limit).to_string())),
        has_more,
        data: results.hits,
        total: results.total,
        facets: results.facets,
        did_you_mean: results.did_you_mean,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuggestQuery {
    pub q: String,
}

#[derive(Serialize, ToSchema)]
pub struct Suggestions {
    pub data: Vec<Suggestion>,
}

/// Product titles and categories for what is being typed.
#[utoipa::path(get, path = "/api/v1/search/suggest", tag = "search", params(SuggestQuery),
    responses((status = 200, body = Suggestions)))]
async fn suggest(State(s): State<Search>, Query(q): Query<SuggestQuery>) -> Result<Json<Suggestions>, SearchError> {
    if q.q.chars().count() > 100 {
        return Err(invalid("q", "query_too_long", "at most 100 characters"));
    }
    let live = s.index.live()?;
    let data = crate::blocking(move || crate::query::suggest(&live, &q.q, 8)).await?;
    Ok(Json(Suggestions { data }))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Synonyms {
    /// Groups of words that mean the same, e.g. `[["tee", "t-shirt"]]`.
    pub groups: Vec<Vec<String>>,
}

/// Staff: the synonym groups.
#[utoipa::path(get, path = "/api/v1/admin/search/synonyms", tag = "admin", responses((status = 200, body = Synonyms)))]
async fn get_synonyms(State(s): State<Search>, _: RequirePermission<perm::CatalogWrite>) -> Result<Json<Synonyms>, SearchError> {
    Ok(Json(Synonyms { groups: store::synonyms(&s.db).await? }))
}

/// Staff: replaces the synonym groups (applied to the next search).
#[utoipa::path(put, path = "/api/v1/admin/search/synonyms", tag = "admin", request_body = Synonyms,
    responses((status = 200, body = Synonyms), (status = 422, body = ErrorBody)))]
async fn put_synonyms(State(s): State<Search>, _: RequirePermission<perm::CatalogWrite>, Json(b): Json<Synonyms>) -> Result<Json<Synonyms>, SearchError> {
    if b.groups.len() > 1000 {
        return Err(invalid("groups", "too_many", "at most 1000 groups"));
    }
    let mut groups = Vec::new();
    for group in b.groups {
        let mut words: Vec<String> = group.iter().map(|w| w.trim().to_lowercase()).filter(|w| !w.is_empty()).collect();
        words.dedup();
        if words.len() < 2 || words.iter().any(|w| w.chars().count() > 50 || w.contains(char::is_whitespace)) {
            return Err(invalid("groups", "invalid_group", "two or more single words of up to 50 characters"));
        }
        groups.push(words);
    }
    store::set_synonyms(&s.db, &groups).await?;
    Ok(Json(Synonyms { groups }))
}

#[derive(Serialize, ToSchema)]
pub struct NoResult {
    pub query: String,
    pub searches: i64,
    pub last_searched_at_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct NoResults {
    pub data: Vec<NoResult>,
}

/// Staff: searches that found nothing, most frequent first.
#[utoipa::path(get, path = "/api/v1/admin/search/no-results", tag = "admin", responses((status = 200, body = NoResults)))]
async fn no_results(State(s): State<Search>, _: RequirePermission<perm::CatalogWrite>) -> Result<Json<NoResults>, SearchError> {
    let data = store::no_results(&s.db, 100)
        .await?
        .into_iter()
        .map(|(query, searches, last)| NoResult { query, searches, last_searched_at_ms: last })
        .collect();
    Ok(Json(NoResults { data }))
}

/// Staff: rebuilds the index from the catalog aside and swaps it in.
#[utoipa::path(post, path = "/api/v1/admin/search/reindex", tag = "admin",
    responses((status = 202, description = "started"), (status = 409, body = ErrorBody)))]
async fn reindex(State(s): State<Search>, _: RequirePermission<perm::CatalogWrite>) -> Result<StatusCode, SearchError> {
    tokio::spawn(async move {
        match s.reindex(&|_| {}).await {
            Ok(n) => tracing::info!(products = n, "search index rebuilt"),
            Err(e) => tracing::error!(error = %e, "rebuilding the search index failed"),
        }
    });
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecommendationQuery {
    /// `also_bought` (bought in the same orders) or `similar` (by content).
    pub kind: String,
    /// 1–50, default 10.
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct Recommendations {
    pub data: Vec<Hit>,
}

fn limit_of(limit: Option<usize>) -> Result<usize, SearchError> {
    let limit = limit.unwrap_or(10);
    if (1..=50).contains(&limit) { Ok(limit) } else { Err(invalid("limit", "invalid_limit", "1 to 50")) }
}

/// Products to show with a product (its id); what the signed-in customer
/// already bought is left out.
#[utoipa::path(get, path = "/api/v1/products/{id_or_slug}/recommendations", tag = "recommendations",
    params(("id_or_slug" = String, Path, description = "the product's id"), RecommendationQuery),
    responses((status = 200, body = Recommendations), (status = 422, body = ErrorBody)))]
async fn recommendations(
    State(s): State<Search>,
    who: Option<Principal>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<RecommendationQuery>,
) -> Result<Json<Recommendations>, SearchError> {
    let limit = limit_of(q.limit)?;
    let user = who.map(|p| p.user_id.to_string());
    let data = match q.kind.as_str() {
        "also_bought" => s.also_bought(&id, user.as_deref(), limit).await?,
        "similar" => s.similar(&id, user.as_deref(), limit).await?,
        _ => return Err(invalid("kind", "invalid_kind", "also_bought or similar")),
    };
    Ok(Json(Recommendations { data }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    pub limit: Option<usize>,
}

/// What sells and is looked at now (decayed over days).
#[utoipa::path(get, path = "/api/v1/recommendations/trending", tag = "recommendations", params(LimitQuery),
    responses((status = 200, body = Recommendations)))]
async fn trending(State(s): State<Search>, Query(q): Query<LimitQuery>) -> Result<Json<Recommendations>, SearchError> {
    Ok(Json(Recommendations { data: s.trending(limit_of(q.limit)?, &[]).await? }))
}

/// For the signed-in customer, from their purchases and recent views.
#[utoipa::path(get, path = "/api/v1/me/recommendations", tag = "recommendations", params(LimitQuery),
    responses((status = 200, body = Recommendations), (status = 401, body = ErrorBody)))]
async fn for_me(State(s): State<Search>, who: Principal, Query(q): Query<LimitQuery>) -> Result<Json<Recommendations>, SearchError> {
    Ok(Json(Recommendations { data: s.for_customer(&who.user_id.to_string(), limit_of(q.limit)?).await? }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewEvent {
    pub product_id: String,
}

/// Records a product view (answers at once; the count is written after).
#[utoipa::path(post, path = "/api/v1/events/view", tag = "recommendations", request_body = ViewEvent,
    responses((status = 202, description = "recorded"), (status = 422, body = ErrorBody)))]
async fn view(State(s): State<Search>, who: Option<Principal>, ext: axum::http::Extensions, Json(b): Json<ViewEvent>) -> Result<StatusCode, SearchError> {
    if kernel::id::ProductId::parse(&b.product_id).is_err() {
        return Err(invalid("product_id", "invalid_product_id", "a product id (prod_…)"));
    }
    // One counted view per visitor and product per window: repeats are accepted and not counted.
    let visitor = platform::limit::visitor(who.as_ref(), &ext);
    let seen = format!("{visitor} {}", b.product_id);
    if s.limits.hit("view", &seen, 1, s.view_dedup).await.is_err() {
        return Ok(StatusCode::ACCEPTED);
    }
    let user = who.map(|p| p.user_id.to_string());
    tokio::spawn(async move {
        if let Err(e) = s.viewed(user.as_deref(), &b.product_id).await {
            tracing::warn!(error = %e, "recording a product view failed");
        }
    });
    Ok(StatusCode::ACCEPTED)
}

/// Staff: recounts the recommendation statistics from recorded purchases.
#[utoipa::path(post, path = "/api/v1/admin/search/recommendations/rebuild", tag = "admin",
    responses((status = 200, description = "rebuilt")))]
async fn rebuild_statistics(State(s): State<Search>, _: RequirePermission<perm::CatalogWrite>) -> Result<Json<serde_json::Value>, SearchError> {
    let orders = s.rebuild_statistics().await?;
    Ok(Json(serde_json::json!({"orders": orders})))
}
