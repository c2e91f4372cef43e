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

use std::sync::Arc;
use std::time::Duration;

use platform::migrate::Migrations;
use platform::service::{BoxError, BoxFuture, Mounted, ServiceContext, ServiceSpec};

pub use cache::ResponseCache;
pub use error::CatalogError;
pub use inventory::{Inventory, Line, Offer, Reservation};

pub const NAME: &str = "catalog";

/// This service's own tables, after the platform's.
pub static MIGRATIONS: Migrations = platform::migrations!("catalog", ["0001_catalog", "0002_categories", "0003_options_locations_media"]);

/// How long a reservation holds stock unless checkout commits it.
pub const RESERVATION_TTL: Duration = Duration::from_secs(15 * 60);

pub fn spec() -> ServiceSpec {
    ServiceSpec { name: NAME, migrations: &MIGRATIONS, mount, demo: Some(load_demo) }
}

fn mount(ctx: ServiceContext) -> BoxFuture<'static, Result<Mounted, BoxError>> {
    Box::pin(async move {
        let cache = Arc::new(cache::ResponseCache::new(ctx.config.catalog.cache, ctx.config.catalog.cache_max_bytes));
        if let Some(url) = &ctx.config.redis.url {
            cache.share_through_redis(url, ctx.shutdown.clone())?;
        }
        let inventory = Inventory { db: ctx.db.clone(), reservation_ttl: RESERVATION_TTL, cache: Some(cache.clone()) };
        tokio::spawn(inventory.clone().sweep(Duration::from_secs(30), ctx.shutdown.clone()));
        // Checkout finds the reservation port here (in process).
        ctx.ports.provide(Arc::new(inventory.clone()));
        let consumer = Arc::new(events::Consumer { inventory: inventory.clone() });
        let internal = internal::router(internal::Internal {
            inventory: inventory.clone(),
            token: ctx.config.catalog.service_token.as_deref().map(Arc::from),
        });
        let media = media::MediaStore::from_config(&ctx.config)?;
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
