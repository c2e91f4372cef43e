//! The seam between the platform and a service: what a service gets (its
//! database, the bus, the configuration) and what it gives back (its routes,
//! its event consumer, its demo data).

use std::sync::Arc;

pub use futures::future::BoxFuture;
use kernel::config::Config;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use crate::bus::{EventBus, EventHandler};
use crate::db::Db;
use crate::migrate::Migrations;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a running service is handed.
#[derive(Clone)]
pub struct ServiceContext {
    pub name: &'static str,
    pub db: Db,
    pub bus: Arc<dyn EventBus>,
    pub config: Arc<Config>,
    /// Fires when the process is shutting down; background loops stop on it.
    pub shutdown: CancellationToken,
}

/// What a service gives back once mounted.
pub struct Mounted {
    /// Its routes, with their OpenAPI descriptions (full paths, `/api/v1/...`).
    pub router: OpenApiRouter,
    /// Its consumer of other services' events, if it has one.
    pub handler: Option<Arc<dyn EventHandler>>,
}

impl Mounted {
    pub fn routes(router: OpenApiRouter) -> Self {
        Self { router, handler: None }
    }
}

/// A service as the binary knows it: a name, its migrations, how to mount it
/// and how to load its part of the demo shop.
pub struct ServiceSpec {
    pub name: &'static str,
    pub migrations: &'static Migrations,
    pub mount: MountFn,
    pub demo: Option<DemoFn>,
}

/// Mounts a service: opens what it needs and returns its routes and consumer.
pub type MountFn = fn(ServiceContext) -> BoxFuture<'static, Result<Mounted, BoxError>>;
/// Loads a service's part of the demo shop; must be safe to run on every start.
pub type DemoFn = fn(ServiceContext) -> BoxFuture<'static, Result<(), BoxError>>;
