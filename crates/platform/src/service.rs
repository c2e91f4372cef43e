//! The seam between the platform and a service: what a service gets (its
//! database, the bus, the configuration) and what it gives back (its routes,
//! its event consumer, its demo data).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

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
    /// Ports other services provide in this process.
    pub ports: Ports,
}

/// The ports services offer each other in one process. A port is a trait
/// owned by the asking crate (orders owns `InventoryPort`); the owning service
/// provides its in-process adapter here when it mounts, and the asker looks
/// it up when it needs it. In the scaled-out shape the binary provides the
/// HTTP adapter instead, and the asker cannot tell the difference.
#[derive(Clone, Default)]
pub struct Ports {
    by_type: Arc<RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl Ports {
    /// Offers `port` (usually an `Arc<dyn SomePort>`), replacing any earlier one.
    pub fn provide<T: ?Sized + Send + Sync + 'static>(&self, port: Arc<T>) {
        if let Ok(mut map) = self.by_type.write() {
            map.insert(TypeId::of::<Arc<T>>(), Arc::new(port));
        }
    }

    /// The port of type `T`, if a service in this process (or the binary) offers it.
    pub fn get<T: ?Sized + Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let map = self.by_type.read().ok()?;
        map.get(&TypeId::of::<Arc<T>>())?.downcast_ref::<Arc<T>>().cloned()
    }
}

/// What a service gives back once mounted.
pub struct Mounted {
    /// Its routes, with their OpenAPI descriptions (full paths, `/api/v1/...`).
    pub router: OpenApiRouter,
    /// Its consumers of events: durable ones, whose work is done once per
    /// shop however many replicas run, and per-process ones (see
    /// [`EventHandler::per_process`]), which every replica runs for itself.
    pub handlers: Vec<Arc<dyn EventHandler>>,
}

impl Mounted {
    pub fn routes(router: OpenApiRouter) -> Self {
        Self { router, handlers: Vec::new() }
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

#[cfg(test)]
mod tests {
    use super::*;

    trait Inventory: Send + Sync {
        fn available(&self, sku: &str) -> i64;
    }

    struct Fixed(i64);

    impl Inventory for Fixed {
        fn available(&self, _: &str) -> i64 {
            self.0
        }
    }

    #[test]
    fn ports_are_found_by_their_trait() {
        let ports = Ports::default();
        assert!(ports.get::<dyn Inventory>().is_none());
        ports.provide::<dyn Inventory>(Arc::new(Fixed(3)));
        let clone = ports.clone();
        assert_eq!(clone.get::<dyn Inventory>().map(|p| p.available("A")), Some(3));
        ports.provide::<dyn Inventory>(Arc::new(Fixed(5)));
        assert_eq!(clone.get::<dyn Inventory>().map(|p| p.available("A")), Some(5));
    }
}

/// A service's part of a user's data export (the right of access). Each
/// service that keeps personal data adds one to [`PersonalDataSources`];
/// erasure travels the other way, as the `user.deleted` event.
#[async_trait::async_trait]
pub trait PersonalData: Send + Sync + 'static {
    /// The key this service's part appears under in the export.
    fn service(&self) -> &'static str;
    async fn export(&self, user: &kernel::id::UserId) -> Result<serde_json::Value, BoxError>;
}

/// Every [`PersonalData`] source in this process (a port of its own).
#[derive(Clone, Default)]
pub struct PersonalDataSources {
    sources: Arc<RwLock<Vec<Arc<dyn PersonalData>>>>,
}

impl PersonalDataSources {
    pub fn add(&self, source: Arc<dyn PersonalData>) {
        if let Ok(mut all) = self.sources.write() {
            all.push(source);
        }
    }

    pub fn all(&self) -> Vec<Arc<dyn PersonalData>> {
        self.sources.read().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Work a service finishes after start before its process says it is ready
/// (the search index catching up with the catalog). `/readyz` answers 503
/// and `emporium serve` holds back its "ready" line until every check passes.
#[async_trait::async_trait]
pub trait StartupCheck: Send + Sync + 'static {
    /// What is waited for, as readiness reports it (`search.index`).
    fn name(&self) -> &'static str;
    /// `Ok` once done; before, what is still outstanding. Asked only once
    /// every event written before start has left this process's outboxes.
    async fn check(&self) -> Result<(), String>;
}

/// Every [`StartupCheck`] in this process (a port of its own).
#[derive(Clone, Default)]
pub struct StartupChecks {
    checks: Arc<RwLock<Vec<Arc<dyn StartupCheck>>>>,
}

impl StartupChecks {
    pub fn add(&self, check: Arc<dyn StartupCheck>) {
        if let Ok(mut all) = self.checks.write() {
            all.push(check);
        }
    }

    pub fn all(&self) -> Vec<Arc<dyn StartupCheck>> {
        self.checks.read().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Whether the process runs any of the API services (not only the pages).
pub fn runs_a_service(config: &Config) -> bool {
    kernel::config::SERVICES.iter().any(|s| config.services.iter().any(|n| n == s))
}

/// A part outside this process that one of its roles needs for as long as
/// it runs (the catalog over HTTP, the token keys, the API behind the
/// pages): `/readyz` fails while it cannot be reached, so a balancer sends
/// no traffic to a process that would fail it.
#[async_trait::async_trait]
pub trait DependencyCheck: Send + Sync + 'static {
    /// Its name in `/readyz` (`catalog`, `auth.jwks`, `web.api`).
    fn name(&self) -> &'static str;
    /// `Ok` when it answers; else what is wrong, for the log only.
    async fn check(&self) -> Result<(), String>;
}

/// Every [`DependencyCheck`] of this process (a port of its own). Each is
/// probed at most once per [`DependencyChecks::EVERY`], for at most
/// [`DependencyChecks::TIMEOUT`]; readiness asked more often gets the last
/// answer, so `/readyz` (public) costs the parts it checks next to nothing.
#[derive(Clone, Default)]
pub struct DependencyChecks {
    checks: Arc<RwLock<Vec<Arc<Probed>>>>,
}

/// A check with its last answer and when it was had.
struct Probed {
    check: Arc<dyn DependencyCheck>,
    last: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

impl DependencyChecks {
    /// How long an answer is reused.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(3);
    /// How long a probe may take before the part counts as unreachable.
    pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

    pub fn add(&self, check: Arc<dyn DependencyCheck>) {
        if let Ok(mut all) = self.checks.write() {
            all.push(Arc::new(Probed { check, last: tokio::sync::Mutex::new(None) }));
        }
    }

    /// The names of the checks, in the order they were added.
    pub fn names(&self) -> Vec<&'static str> {
        self.checks.read().map(|c| c.iter().map(|p| p.check.name()).collect()).unwrap_or_default()
    }

    /// Each check's answer, probed now unless it was within [`Self::EVERY`]
    /// (the checks run side by side; one probe at a time per check).
    pub async fn results(&self) -> Vec<(&'static str, Result<(), String>)> {
        let all = self.checks.read().map(|c| c.clone()).unwrap_or_default();
        futures::future::join_all(all.iter().map(|p| p.result())).await
    }
}

impl Probed {
    async fn result(&self) -> (&'static str, Result<(), String>) {
        let name = self.check.name();
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < DependencyChecks::EVERY
        {
            return (name, result.clone());
        }
        let result = match tokio::time::timeout(DependencyChecks::TIMEOUT, self.check.check()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", DependencyChecks::TIMEOUT.as_secs())),
        };
        *last = Some((std::time::Instant::now(), result.clone()));
        (name, result)
    }
}

#[cfg(test)]
mod dependency_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::{DependencyCheck, DependencyChecks};

    /// Answers as `up` says, counting the probes; `slow` never answers in time.
    struct Part {
        up: AtomicBool,
        probes: AtomicUsize,
        slow: bool,
    }

    #[async_trait::async_trait]
    impl DependencyCheck for Arc<Part> {
        fn name(&self) -> &'static str {
            if self.slow { "slow" } else { "part" }
        }
        async fn check(&self) -> Result<(), String> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            if self.slow {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            if self.up.load(Ordering::SeqCst) { Ok(()) } else { Err("connection refused".into()) }
        }
    }

    #[tokio::test]
    async fn answers_are_reused_for_a_while_and_a_slow_part_times_out() {
        let part = Arc::new(Part { up: AtomicBool::new(false), probes: AtomicUsize::new(0), slow: false });
        let checks = DependencyChecks::default();
        checks.add(Arc::new(part.clone()));
        let asked = futures::future::join_all((0..20).map(|_| checks.results())).await;
        assert!(asked.iter().all(|r| r == &vec![("part", Err("connection refused".to_owned()))]), "{asked:?}");
        assert_eq!(part.probes.load(Ordering::SeqCst), 1, "twenty asks at once, one probe");
        part.up.store(true, Ordering::SeqCst);
        assert!(checks.results().await[0].1.is_err(), "the last answer holds for a while");
        tokio::time::sleep(DependencyChecks::EVERY + Duration::from_millis(100)).await;
        assert_eq!(checks.results().await, vec![("part", Ok(()))]);
        assert_eq!(part.probes.load(Ordering::SeqCst), 2);

        let slow = Arc::new(Part { up: AtomicBool::new(true), probes: AtomicUsize::new(0), slow: true });
        checks.add(Arc::new(slow));
        let started = std::time::Instant::now();
        let results = checks.results().await;
        assert!(started.elapsed() < DependencyChecks::TIMEOUT + Duration::from_secs(1));
        assert_eq!(checks.names(), ["part", "slow"]);
        assert!(results[1].1.as_ref().is_err_and(|e| e.contains("no answer within 2 s")), "{results:?}");
    }
}
