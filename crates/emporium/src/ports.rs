//! The wiring of ports between services: in one process, orders reaches the
//! catalog's inventory directly; in the scaled-out shape, over the catalog's
//! internal HTTP routes with the service token. Orders cannot tell which.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use catalog::{CatalogError, Inventory, Line};
use kernel::config::Config;
use orders::{CatalogPort, Offer, PortError};
use platform::auth::{ApiKeyResolver, HttpApiKeys};
use platform::service::{DependencyCheck, DependencyChecks, Ports};
use serde_json::{Value, json};

/// Offers orders and search their catalog ports: the in-process adapters
/// when the catalog runs here, else the HTTP ones when `catalog.url` is set.
pub fn wire(ports: &Ports, config: &Config) {
    // What this process needs from elsewhere, as readiness checks it.
    let depend = |check: Arc<dyn DependencyCheck>| {
        if let Some(checks) = ports.get::<DependencyChecks>() {
            checks.add(check);
        }
    };
    let runs = |role: &str| config.services.iter().any(|s| s == role);
    let remote = || {
        let (url, token) = (config.catalog.url.as_ref()?, config.catalog.service_token.as_ref()?);
        Http::new(url, token, &config.orders.currency).map_err(|e| tracing::error!(error = %e, "cannot reach the catalog over HTTP")).ok()
    };
    if let Some(inventory) = ports.get::<Inventory>() {
        let feed = Arc::new(Feed { inventory: (*inventory).clone(), currency: config.orders.currency.clone() });
        ports.provide::<dyn search::CatalogFeed>(feed.clone());
        ports.provide::<dyn notify::Products>(Arc::new(Products(feed)));
        ports.provide::<dyn CatalogPort>(Arc::new(InProcess((*inventory).clone())));
    } else if let Some(http) = remote() {
        let http = Arc::new(http);
        ports.provide::<dyn CatalogPort>(http.clone());
        ports.provide::<dyn search::CatalogFeed>(http.clone());
        ports.provide::<dyn notify::Products>(Arc::new(Products(http.clone())));
        depend(Arc::new(CatalogReachable(http)));
    } else if runs("orders") || runs("search") || runs("notify") {
        tracing::warn!("the catalog is not in this process and catalog.url (with catalog.service_token) is unset: checkout, search and back-in-stock alerts will fail");
        depend(Arc::new(Missing { name: "catalog", why: "the catalog is not in this process and catalog.url or catalog.service_token is unset".into() }));
    }
    // The pages without the services call the API at web.api_url.
    if runs(kernel::config::WEB) && kernel::config::SERVICES.iter().any(|s| !runs(s)) {
        match config.web.api_url.as_deref().map(ApiReachable::new) {
            Some(Ok(api)) => depend(Arc::new(api)),
            Some(Err(e)) => depend(Arc::new(Missing { name: "web.api", why: format!("web.api_url: {e}") })),
            None => depend(Arc::new(Missing { name: "web.api", why: "the services are not all in this process and web.api_url is unset".into() })),
        }
    }
    wire_api_keys(ports, config);
}

/// A part this process needs that it was not told where to find: never ready.
struct Missing {
    name: &'static str,
    why: String,
}

#[async_trait]
impl DependencyCheck for Missing {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn check(&self) -> Result<(), String> {
        Err(self.why.clone())
    }
}

/// The catalog over HTTP, asked as search asks it (which also proves the service token).
struct CatalogReachable(Arc<Http>);

#[async_trait]
impl DependencyCheck for CatalogReachable {
    fn name(&self) -> &'static str {
        "catalog"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.probe().await
    }
}

/// What a web process asks of `web.api_url` to know the API answers: a
/// route of the API itself, the first page of one product, which the
/// balancer sends to a catalog process. (`/healthz` would not do: behind
/// the balancer it is answered by a web process.)
pub(crate) const API_PROBE: &str = "/api/v1/products?limit=1";

/// The API behind the pages (`web.api_url`): [`API_PROBE`] answers 2xx
/// (a balancer with no live service behind it answers 502 or 503).
struct ApiReachable {
    client: reqwest::Client,
    url: String,
}

impl ApiReachable {
    fn new(base: &str) -> Result<ApiReachable, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(DependencyChecks::TIMEOUT).redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(ApiReachable { client, url: format!("{}{API_PROBE}", base.trim_end_matches('/')) })
    }
}

#[async_trait]
impl DependencyCheck for ApiReachable {
    fn name(&self) -> &'static str {
        "web.api"
    }

    async fn check(&self) -> Result<(), String> {
        let response = self.client.get(&self.url).send().await.map_err(|e| kernel::error::causes(&e))?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(format!("{} answered {status}", kernel::config::mask_url(&self.url))),
        }
    }
}


/// API keys: auth resolves them in process; a process without auth asks
/// auth's internal route (`auth.url`, with `auth.service_token`), keeping
/// each answer `auth.api_key_cache_secs`.
fn wire_api_keys(ports: &Ports, config: &Config) {
    if ports.get::<dyn ApiKeyResolver>().is_some() {
        return;
    }
    match (&config.auth.url, &config.auth.service_token) {
        (Some(url), Some(token)) => {
            let ttl = Duration::from_secs(config.auth.api_key_cache_secs);
            ports.provide::<dyn ApiKeyResolver>(Arc::new(HttpApiKeys::new(url, token, ttl)));
        }
        _ if platform::service::runs_a_service(config) => {
            tracing::warn!("auth is not in this process and auth.url (with auth.service_token) is unset: API keys are refused here (401)");
        }
        _ => {}
    }
}

/// Notify's view of a product, from whichever catalog feed this process has.
pub struct Products<F: ?Sized>(pub Arc<F>);

#[async_trait]
impl<F: search::CatalogFeed + ?Sized> notify::Products for Products<F> {
    async fn product(&self, id: &str) -> Result<Option<notify::ProductInfo>, platform::service::BoxError> {
        let doc = self.0.product(id).await.map_err(|e| e.0)?;
        Ok(doc.map(|d| notify::ProductInfo {
            id: d.id,
            slug: d.slug,
            title: d.title,
            active: d.status == "active",
            skus: d.skus,
            in_stock: d.in_stock,
        }))
    }
}

pub struct InProcess(pub Inventory);

fn port_error(e: CatalogError) -> PortError {
    match e {
        CatalogError::OutOfStock { sku, available } => PortError::OutOfStock { sku, available },
        CatalogError::UnknownSku(sku) => PortError::UnknownSku(sku),
        other => PortError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl CatalogPort for InProcess {
    async fn offers(&self, skus: &[String], currency: &str) -> Result<Vec<Offer>, PortError> {
        let offers = self.0.offers(skus, currency).await.map_err(port_error)?;
        Ok(offers
            .into_iter()
            .map(|o| Offer {
                sku: o.sku,
                variant_id: o.variant_id,
                product_id: o.product_id,
                title: o.title,
                variant_title: o.variant_title,
                category_ids: o.category_ids,
                purchasable: o.purchasable,
                weight_grams: o.weight_grams,
                available: o.available,
                price: o.price,
            })
            .collect())
    }

    async fn reserve(&self, key: &str, lines: &[(String, i64)]) -> Result<(), PortError> {
        let lines: Vec<Line> = lines.iter().map(|(sku, quantity)| Line { sku: sku.clone(), quantity: *quantity }).collect();
        let held = self.0.reserve(key, &lines).await.map_err(port_error)?;
        // Reserving again under a key returns the first reservation: one
        // released since (it expired) holds nothing.
        if held.state == "released" {
            return Err(PortError::Unavailable(format!("the reservation {key} was released")));
        }
        Ok(())
    }

    async fn commit(&self, key: &str) -> Result<(), PortError> {
        self.0.commit(key).await.map_err(port_error)
    }

    async fn release(&self, key: &str) -> Result<(), PortError> {
        match self.0.release(key).await {
            Ok(()) | Err(CatalogError::ReservationNotFound(_)) => Ok(()),
            Err(e) => Err(port_error(e)),
        }
    }

    async fn restock(&self, sku: &str, quantity: i64, reference: &str) -> Result<(), PortError> {
        self.0.restock(sku, quantity, reference).await.map_err(port_error)
    }
}

/// The catalog's internal routes, with the service token: both ports a
/// process without the catalog needs.
pub struct Http {
    client: reqwest::Client,
    base: String,
    token: String,
    /// The currency search indexes prices in.
    currency: String,
}

impl Http {
    pub fn new(base: &str, token: &str, currency: &str) -> Result<Http, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Http { client, base: base.trim_end_matches('/').to_owned(), token: token.to_owned(), currency: currency.to_owned() })
    }

    async fn post(&self, path: &str, body: Option<Value>) -> Result<(u16, Value), PortError> {
        self.send(reqwest::Method::POST, path, body).await
    }

    async fn get(&self, path: &str) -> Result<(u16, Value), PortError> {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(u16, Value), PortError> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|e| PortError::Unavailable(format!("catalog: {e}")))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| PortError::Unavailable(format!("catalog: {e}")))?;
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok((status, value))
    }

    /// Asks for one listing as search would (`emporium doctor`): `Ok` when
    /// the catalog answers and takes the token, else what went wrong.
    pub async fn probe(&self) -> Result<(), String> {
        let response = self
            .client
            .post(format!("{}/internal/v1/listings", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(json!({"currency": self.currency, "after": null, "limit": 1}).to_string())
            .send()
            .await
            .map_err(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(inner) = source {
                    text = format!("{text}: {inner}");
                    source = inner.source();
                }
                text
            })?;
        let status = response.status().as_u16();
        let body: Value = response.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
        match (status, body["error"]["code"].as_str()) {
            (200, _) => Ok(()),
            (401, _) => Err("the catalog refused catalog.service_token: give both processes the same token".into()),
            (404, Some("route_not_found")) => {
                Err("no catalog answers there, or it has no catalog.service_token (its internal routes are closed)".into())
            }
            (status, code) => Err(format!("the catalog answered {status} {}", code.unwrap_or_default())),
        }
    }

    fn failure(status: u16, body: &Value) -> PortError {
        let code = body["error"]["code"].as_str().unwrap_or_default();
        PortError::Unavailable(format!("catalog answered {status} {code}"))
    }
}

#[async_trait]
impl CatalogPort for Http {
    async fn offers(&self, skus: &[String], currency: &str) -> Result<Vec<Offer>, PortError> {
        let (status, body) = self.post("/internal/v1/offers", Some(json!({"currency": currency, "skus": skus}))).await?;
        if status != 200 {
            return Err(Self::failure(status, &body));
        }
        serde_json::from_value(body["data"].clone()).map_err(|e| PortError::Unavailable(format!("catalog offers: {e}")))
    }

    async fn reserve(&self, key: &str, lines: &[(String, i64)]) -> Result<(), PortError> {
        let lines: Vec<Value> = lines.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect();
        let (status, body) = self.post("/internal/v1/reservations", Some(json!({"order_id": key, "lines": lines}))).await?;
        match (status, body["error"]["code"].as_str()) {
            (201, _) if body["state"] == "released" => Err(PortError::Unavailable(format!("the reservation {key} was released"))),
            (201, _) => Ok(()),
            (409, Some("out_of_stock")) => {
                // Name the line that ran short, with what is left of it now.
                let skus: Vec<String> = lines.iter().filter_map(|l| l["sku"].as_str().map(str::to_owned)).collect();
                let offers = self.offers(&skus, "XXX").await?;
                let short = lines.iter().find_map(|l| {
                    let offer = offers.iter().find(|o| Some(o.sku.as_str()) == l["sku"].as_str())?;
                    let available = offer.available?;
                    (available < l["quantity"].as_i64().unwrap_or(0)).then(|| (offer.sku.clone(), available))
                });
                let (sku, available) = short.unwrap_or_else(|| (skus.first().cloned().unwrap_or_default(), 0));
                Err(PortError::OutOfStock { sku, available })
            }
            (404, Some("sku_not_found")) => Err(PortError::UnknownSku(body["error"]["message"].as_str().unwrap_or_default().to_owned())),
            _ => Err(Self::failure(status, &body)),
        }
    }

    async fn commit(&self, key: &str) -> Result<(), PortError> {
        let (status, body) = self.post(&format!("/internal/v1/reservations/{key}/commit"), None).await?;
        if status == 204 { Ok(()) } else { Err(Self::failure(status, &body)) }
    }

    async fn release(&self, key: &str) -> Result<(), PortError> {
        let (status, body) = self.post(&format!("/internal/v1/reservations/{key}/release"), None).await?;
        if status == 204 || status == 404 { Ok(()) } else { Err(Self::failure(status, &body)) }
    }

    async fn restock(&self, sku: &str, quantity: i64, reference: &str) -> Result<(), PortError> {
        let (status, body) =
            self.post("/internal/v1/restocks", Some(json!({"sku": sku, "quantity": quantity, "reference": reference}))).await?;
        if status == 204 { Ok(()) } else { Err(Self::failure(status, &body)) }
    }
}

/// The catalog's products as search indexes them, in process.
pub struct Feed {
    pub inventory: Inventory,
    /// Prices are indexed in the shop's currency.
    pub currency: String,
}

fn doc(l: catalog::feed::Listing) -> search::ProductDoc {
    search::ProductDoc {
        id: l.id,
        slug: l.slug,
        status: l.status,
        title: l.title,
        brand: l.brand,
        tags: l.tags,
        category_ids: l.category_ids,
        category_names: l.category_names,
        attributes: l.attributes,
        description: l.description,
        skus: l.skus,
        price: l.price,
        in_stock: l.in_stock,
        created_ms: l.created_ms,
        thumbnail: l.thumbnail.map(|t| search::query::Thumbnail { url: t.url, width: t.width, height: t.height }),
    }
}

fn feed_error(e: CatalogError) -> search::FeedError {
    search::FeedError(e.to_string())
}

#[async_trait]
impl search::CatalogFeed for Feed {
    async fn page(&self, after: Option<String>, limit: u32) -> Result<Vec<(String, search::ProductDoc)>, search::FeedError> {
        let page = catalog::feed::listings(&self.inventory.db, after.as_deref(), limit, &self.currency).await.map_err(feed_error)?;
        Ok(page.into_iter().map(|(cursor, l)| (cursor, doc(l))).collect())
    }

    async fn product(&self, id: &str) -> Result<Option<search::ProductDoc>, search::FeedError> {
        Ok(catalog::feed::listing_of(&self.inventory.db, id, &self.currency).await.map_err(feed_error)?.map(doc))
    }

    async fn product_of_sku(&self, sku: &str) -> Result<Option<String>, search::FeedError> {
        catalog::feed::product_of_sku(&self.inventory.db, sku).await.map_err(feed_error)
    }
}

fn listing_doc(value: Value) -> Result<search::ProductDoc, search::FeedError> {
    let listing: catalog::feed::Listing = serde_json::from_value(value).map_err(|e| search::FeedError(format!("catalog listing: {e}")))?;
    Ok(doc(listing))
}

fn unavailable(e: PortError) -> search::FeedError {
    search::FeedError(e.to_string())
}

#[async_trait]
impl search::CatalogFeed for Http {
    async fn page(&self, after: Option<String>, limit: u32) -> Result<Vec<(String, search::ProductDoc)>, search::FeedError> {
        let body = json!({"currency": self.currency, "after": after, "limit": limit});
        let (status, page) = self.post("/internal/v1/listings", Some(body)).await.map_err(unavailable)?;
        if status != 200 {
            return Err(unavailable(Http::failure(status, &page)));
        }
        let entries = page["data"].as_array().cloned().unwrap_or_default();
        entries
            .into_iter()
            .map(|e| Ok((e["cursor"].as_str().unwrap_or_default().to_owned(), listing_doc(e["listing"].clone())?)))
            .collect()
    }

    async fn product(&self, id: &str) -> Result<Option<search::ProductDoc>, search::FeedError> {
        let (status, body) = self.get(&format!("/internal/v1/listings/{id}?currency={}", self.currency)).await.map_err(unavailable)?;
        match status {
            200 => Ok(Some(listing_doc(body)?)),
            404 => Ok(None),
            _ => Err(unavailable(Http::failure(status, &body))),
        }
    }

    async fn product_of_sku(&self, sku: &str) -> Result<Option<String>, search::FeedError> {
        let (status, body) = self.get(&format!("/internal/v1/skus/{sku}/product")).await.map_err(unavailable)?;
        match status {
            200 => Ok(body["product_id"].as_str().map(str::to_owned)),
            404 => Ok(None),
            _ => Err(unavailable(Http::failure(status, &body))),
        }
    }
}
