//! The catalog service: what is sold and how many are left. Products and
//! variants with prices, stock per SKU with a ledger, and the reservation
//! port checkout uses. This is its face: the spec the binary mounts.

mod cache;
mod categories;
pub mod demo;
pub mod domain;
mod error;
mod events;
pub mod feed;
mod http;
mod internal;
pub mod inventory;
mod markdown;
pub mod media;
mod products;
pub mod shopify;
mod store;
mod views;

use std::sync::Arc;
use std::time::Duration;

use platform::migrate::Migrations;
use platform::routes::Route;
use platform::service::{BoxError, BoxFuture, Mounted, ServiceContext, ServiceSpec};

pub use cache::{ResponseCache, follow_through_redis};
pub use error::CatalogError;
pub use inventory::{Inventory, Line, Offer, Reservation};

pub const NAME: &str = "catalog";

/// Every path the service answers, for the load balancer's route map
/// (`emporium deploy nginx`); a test holds it to the router.
pub const ROUTES: &[Route] = &[
    Route::public("/api/v1/admin/categories"),
    Route::public("/api/v1/admin/categories/{id}"),
    Route::public("/api/v1/admin/inventory"),
    Route::public("/api/v1/admin/inventory/adjustments"),
    Route::public("/api/v1/admin/inventory/{sku}"),
    Route::public("/api/v1/admin/inventory/{sku}/history"),
    Route::public("/api/v1/admin/prices/bulk"),
    Route::public("/api/v1/admin/products"),
    Route::public("/api/v1/admin/products/export"),
    Route::public("/api/v1/admin/products/import").body_bytes(http::IMPORT_LIMIT),
    Route::public("/api/v1/admin/products/{id}"),
    Route::public("/api/v1/admin/products/{id}/media").upload(),
    Route::public("/api/v1/admin/products/{id}/media/{media_id}"),
    Route::public("/api/v1/admin/products/{id}/variants"),
    Route::public("/api/v1/admin/stock-locations"),
    Route::public("/api/v1/admin/stock-locations/{id}"),
    Route::public("/api/v1/admin/variants/{sku}"),
    Route::public("/api/v1/categories"),
    Route::public("/api/v1/products"),
    Route::public("/api/v1/products/{id_or_slug}"),
    Route::public("/media/{*key}"),
    Route::internal("/internal/v1/listings"),
    Route::internal("/internal/v1/listings/{id}"),
    Route::internal("/internal/v1/offers"),
    Route::internal("/internal/v1/reservations"),
    Route::internal("/internal/v1/reservations/{order_id}"),
    Route::internal("/internal/v1/reservations/{order_id}/commit"),
    Route::internal("/internal/v1/reservations/{order_id}/release"),
    Route::internal("/internal/v1/restocks"),
    Route::internal("/internal/v1/skus/{sku}/product"),
];

/// This service's own tables, after the platform's.
pub static MIGRATIONS: Migrations = platform::migrations!("catalog", ["0001_catalog", "0002_categories", "0003_options_locations_media", "0004_product_views"]);

/// How long a reservation holds stock unless checkout commits it.
pub const RESERVATION_TTL: Duration = Duration::from_secs(15 * 60);

pub fn spec() -> ServiceSpec {
    ServiceSpec { name: NAME, migrations: &MIGRATIONS, mount, demo: Some(load_demo) }
}

fn mount(ctx: ServiceContext) -> BoxFuture<'static, Result<Mounted, BoxError>> {
    Box::pin(async move {
        let cache = Arc::new(cache::ResponseCache::new(ctx.config.catalog.cache, ctx.config.catalog.cache_max_bytes));
        if let Some(url) = &ctx.config.redis.url {
            cache.share_through_redis(url, &ctx.config.redis.prefix, ctx.shutdown.clone())?;
        }
        let inventory = Inventory { db: ctx.db.clone(), reservation_ttl: RESERVATION_TTL, cache: Some(cache.clone()) };
        tokio::spawn(inventory.clone().sweep(Duration::from_secs(30), ctx.shutdown.clone()));
        // Checkout finds the reservation port here (in process).
        ctx.ports.provide(Arc::new(inventory.clone()));
        if let Some(readings) = ctx.ports.get::<platform::gauges::Readings>() {
            readings.add(Arc::new(inventory::HeldReservations(inventory.clone())));
        }
        let consumer = Arc::new(events::Consumer { inventory: inventory.clone() });
        let internal = internal::router(internal::Internal {
            inventory: inventory.clone(),
            token: ctx.config.catalog.service_token.as_deref().map(Arc::from),
        });
        let media = media::MediaStore::from_config(&ctx.config)?;
        if ctx.db.dialect() == platform::db::Dialect::Postgres && ctx.config.media.store == "local" {
            let dir = ctx.config.media.dir.clone().unwrap_or_else(|| ctx.config.data_dir.join("media"));
            tracing::warn!(media_dir = %dir.display(),
                "media.store is local on a shared PostgreSQL database: catalog replicas on other machines each keep their own pictures (a picture uploaded to one is missing on the others); set media.store = \"s3\" when more than one catalog replica may run");
        }
        ctx.ports.provide(Arc::new(media.clone()));
        let router = http::router(http::Catalog::new(http::Parts { inventory, cache, media, public_url: ctx.config.public_url().into() })).merge(internal);
        Ok(Mounted { router, handlers: vec![consumer] })
    })
}

fn load_demo(ctx: ServiceContext) -> BoxFuture<'static, Result<(), BoxError>> {
    Box::pin(async move {
        let media = ctx.ports.get::<media::MediaStore>();
        let made = demo::load_demo(&ctx.db, media.as_deref()).await?;
        if made > 0 {
            tracing::info!(products = made, "demo catalog loaded");
        }
        if let Some(inventory) = ctx.ports.get::<Inventory>()
            && let Some(cache) = &inventory.cache
        {
            cache.invalidate();
        }
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
