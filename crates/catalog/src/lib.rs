//! The catalog service: what is sold and how many are left: products, variants, categories, prices, media, inventory.
//! This is its face: the spec the binary mounts (routes, migrations, consumer).

use platform::migrate::Migrations;
use platform::service::{BoxError, BoxFuture, Mounted, ServiceContext, ServiceSpec};
use utoipa_axum::router::OpenApiRouter;

pub const NAME: &str = "catalog";

/// This service's own tables, after the platform's.
pub static MIGRATIONS: Migrations = platform::migrations!("catalog", []);

pub fn spec() -> ServiceSpec {
    ServiceSpec { name: NAME, migrations: &MIGRATIONS, mount, demo: None }
}

fn mount(_ctx: ServiceContext) -> BoxFuture<'static, Result<Mounted, BoxError>> {
    Box::pin(async move { Ok(Mounted::routes(OpenApiRouter::new())) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_listed() {
        assert!(platform::migrate::unlisted_files(&super::MIGRATIONS).is_empty());
    }
}
