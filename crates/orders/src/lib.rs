//! The orders service: carts, discounts, shipping, taxes, checkout,
//! payments, fulfilment, refunds and returns. This is its face: the spec the
//! binary mounts, and the catalog port it needs.

mod admin;
mod carts;
pub mod domain;
mod demo;
mod error;
mod events;
pub mod gateway;
mod http;
pub mod service;
mod store;
pub mod stripe;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use platform::migrate::Migrations;
use platform::routes::Route;
use platform::service::{BoxError, BoxFuture, Mounted, PersonalData, PersonalDataSources, ServiceContext, ServiceSpec};
use serde::{Deserialize, Serialize};

pub use error::OrdersError;
pub use service::Orders;

pub const NAME: &str = "orders";

/// Every path the service answers, for the load balancer's route map
/// (`emporium deploy nginx`); a test holds it to the router.
pub const ROUTES: &[Route] = &[
    Route::public("/api/v1/admin/discounts"),
    Route::public("/api/v1/admin/discounts/{id}"),
    Route::public("/api/v1/admin/orders"),
    Route::public("/api/v1/admin/orders/{id}"),
    Route::public("/api/v1/admin/orders/{id}/cancel"),
    Route::public("/api/v1/admin/orders/{id}/delivered"),
    Route::public("/api/v1/admin/orders/{id}/fulfilments"),
    Route::public("/api/v1/admin/orders/{id}/notes"),
    Route::public("/api/v1/admin/orders/{id}/refunds"),
    Route::public("/api/v1/admin/returns"),
    Route::public("/api/v1/admin/returns/{id}/{step}"),
    Route::public("/api/v1/admin/shipping-methods"),
    Route::public("/api/v1/admin/shipping-methods/{id}"),
    Route::public("/api/v1/admin/tax-rates"),
    Route::public("/api/v1/admin/tax-rates/{id}"),
    Route::public("/api/v1/carts"),
    Route::public("/api/v1/carts/{id}"),
    Route::public("/api/v1/carts/{id}/billing-address"),
    Route::public("/api/v1/carts/{id}/checkout"),
    Route::public("/api/v1/carts/{id}/claim"),
    Route::public("/api/v1/carts/{id}/discounts"),
    Route::public("/api/v1/carts/{id}/email"),
    Route::public("/api/v1/carts/{id}/items"),
    Route::public("/api/v1/carts/{id}/items/{item_id}"),
    Route::public("/api/v1/carts/{id}/shipping-address"),
    Route::public("/api/v1/carts/{id}/shipping-method"),
    Route::public("/api/v1/carts/{id}/shipping-options"),
    Route::public("/api/v1/orders"),
    Route::public("/api/v1/orders/{id}"),
    Route::public("/api/v1/orders/{id}/cancel"),
    Route::public("/api/v1/orders/{id}/returns"),
    Route::public("/api/v1/payments/methods"),
    Route::public("/api/v1/payments/webhooks/stripe"),
    Route::public("/api/v1/shipping-countries"),
    Route::public("/test-gateway/confirm"),
];

/// This service's own tables, after the platform's.
pub static MIGRATIONS: Migrations = platform::migrations!("orders", ["0001_orders", "0002_payment_method", "0003_checkout_intents", "0004_order_number_sequence", "0005_order_number_on_insert"]);

/// A SKU as checkout needs it: what it is called, what it costs in a
/// currency, what it weighs, where it is filed and whether it can be sold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub sku: String,
    pub variant_id: String,
    pub product_id: String,
    pub title: String,
    pub variant_title: String,
    pub category_ids: Vec<String>,
    pub purchasable: bool,
    pub weight_grams: i64,
    /// Units that can be sold now; `None` when stock is not counted or backorders are allowed.
    pub available: Option<i64>,
    pub price: Option<i64>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PortError {
    #[error("only {available} of {sku} left")]
    OutOfStock { sku: String, available: i64 },
    #[error("no product has the SKU {0}")]
    UnknownSku(String),
    #[error("{0}")]
    Unavailable(String),
}

/// What orders asks of the catalog. The binary provides an in-process
/// adapter (all-in-one) or one over the catalog's internal HTTP routes.
/// Every call is idempotent on its key.
#[async_trait]
pub trait CatalogPort: Send + Sync + 'static {
    async fn offers(&self, skus: &[String], currency: &str) -> Result<Vec<Offer>, PortError>;
    /// Holds every line or none, under `key`.
    async fn reserve(&self, key: &str, lines: &[(String, i64)]) -> Result<(), PortError>;
    async fn commit(&self, key: &str) -> Result<(), PortError>;
    async fn release(&self, key: &str) -> Result<(), PortError>;
    /// Puts sold units back on the shelf (refund or cancellation), once per `reference`.
    async fn restock(&self, sku: &str, quantity: i64, reference: &str) -> Result<(), PortError>;
}

pub fn spec() -> ServiceSpec {
    ServiceSpec { name: NAME, migrations: &MIGRATIONS, mount, demo: Some(load_demo) }
}

fn mount(ctx: ServiceContext) -> BoxFuture<'static, Result<Mounted, BoxError>> {
    Box::pin(async move {
        let orders = Orders::new(ctx.db.clone(), ctx.ports.clone(), &ctx.config)?;
        ctx.ports.provide(Arc::new(orders.clone()));
        if let Some(sources) = ctx.ports.get::<PersonalDataSources>() {
            sources.add(Arc::new(Export(orders.clone())));
        }
        // Look as often as work can become stale, but at least every 10 s.
        let every = Duration::from_secs(ctx.config.orders.reconcile_after_secs.clamp(1, 10));
        tokio::spawn(orders.clone().run_reconciler(every, ctx.shutdown.clone()));
        let router = http::router(orders.clone()).merge(admin::router(orders.clone()));
        Ok(Mounted { router, handlers: vec![Arc::new(events::Consumer { orders })] })
    })
}

/// A customer's orders in their data export.
struct Export(Orders);

#[async_trait]
impl PersonalData for Export {
    fn service(&self) -> &'static str {
        NAME
    }

    async fn export(&self, user: &kernel::id::UserId) -> Result<serde_json::Value, BoxError> {
        Ok(self.0.export_for(&user.to_string()).await?)
    }
}

fn load_demo(ctx: ServiceContext) -> BoxFuture<'static, Result<(), BoxError>> {
    Box::pin(async move {
        demo::load(&ctx.db, &ctx.config.orders.currency).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_listed() {
        assert!(platform::migrate::unlisted_files(&super::MIGRATIONS).is_empty());
    }
}
