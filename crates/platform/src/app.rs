//! Assembles a process: connects each service's database and migrates it,
//! connects the bus (and Redis), mounts the services' routes behind the HTTP
//! core, starts the outbox relays and consumers, and shuts all of it down in
//! order: stop taking requests, finish the ones in flight, flush the outbox.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use kernel::config::Config;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::Predicate as _;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{ApiKeyResolver, AuthLayer, HttpKeySource, KeySource, RevocationListener, Revocations, Verifier};
use crate::bus::{self, BusError, EventBus, EventHandler};
use crate::db::{Db, DbError, DbOptions};
use crate::migrate::{self, PLATFORM};
use crate::outbox::Relay;
use crate::service::{BoxError, DependencyCheck, DependencyChecks, PersonalDataSources, Ports, ServiceContext, ServiceSpec, StartupCheck, StartupChecks};
use crate::{gauges, http, idempotency, limit, server, telemetry};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration given in code is not one a process can run with
    /// (`emporium serve` checks it as it loads it).
    #[error(transparent)]
    Config(#[from] kernel::config::ConfigError),
    #[error("database of {service}: {source}")]
    Db { service: &'static str, source: DbError },
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("redis: {0}")]
    Redis(String),
    #[error("service {service} failed to start: {source}")]
    Mount { service: &'static str, source: BoxError },
    #[error("demo data of {service}: {source}")]
    Demo { service: &'static str, source: BoxError },
}

/// The external parts `/readyz` checks.
#[derive(Clone)]
struct Readiness {
    dbs: Vec<(&'static str, Db)>,
    bus: Arc<dyn EventBus>,
    redis: Option<redis::aio::ConnectionManager>,
    startup: Startup,
    /// The parts elsewhere this process's roles need (probed, cached).
    dependencies: DependencyChecks,
}

/// What a process finishes after start before it is ready: first the
/// events written before start (the demo shop, say) leave the outboxes,
/// then each service's [`StartupCheck`] passes (the search index has
/// applied them). Once all is done it stays done. Past `ready_timeout`
/// (`startup.ready_timeout_secs`) it is ready anyway, with a warning in the
/// log naming what is still behind, so one event that keeps failing cannot
/// keep a new process out of service for good.
#[derive(Clone)]
pub struct Startup {
    /// Per service database: raised once its relay published what was waiting at start.
    outboxes: Vec<(&'static str, Arc<std::sync::atomic::AtomicBool>)>,
    checks: Vec<Arc<dyn StartupCheck>>,
    done: Arc<std::sync::atomic::AtomicBool>,
    started: std::time::Instant,
    ready_timeout: Duration,
}

impl Startup {
    fn new(outboxes: Vec<(&'static str, Arc<std::sync::atomic::AtomicBool>)>, checks: Vec<Arc<dyn StartupCheck>>, ready_timeout: Duration) -> Self {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        Self { outboxes, checks, done, started: std::time::Instant::now(), ready_timeout }
    }

    /// `Ok` once the process has caught up (or its time to do so is up);
    /// before, what it still waits for, in words for the log.
    pub async fn state(&self) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        if self.done.load(Ordering::SeqCst) {
            return Ok(());
        }
        match self.behind().await {
            Ok(()) => {}
            Err(behind) if self.started.elapsed() >= self.ready_timeout => {
                // Said once: whoever sees `done` first.
                if !self.done.swap(true, Ordering::SeqCst) {
                    tracing::warn!(behind = %behind, ready_timeout_secs = self.ready_timeout.as_secs(),
                        "not caught up within startup.ready_timeout_secs; serving anyway (see what is behind)");
                }
                return Ok(());
            }
            Err(behind) => return Err(behind),
        }
        self.done.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// What is still outstanding, if anything.
    async fn behind(&self) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        let waiting: Vec<&str> = self.outboxes.iter().filter(|(_, f)| !f.load(Ordering::SeqCst)).map(|(name, _)| *name).collect();
        if !waiting.is_empty() {
            return Err(format!("publishing the events written before start ({})", waiting.join(", ")));
        }
        for check in &self.checks {
            let outcome = tokio::time::timeout(Duration::from_secs(3), check.check()).await;
            flatten(outcome).map_err(|e| format!("{}: {e}", check.name()))?;
        }
        Ok(())
    }

    /// Waits until [`Startup::state`] is `Ok`, saying every few seconds
    /// what is still outstanding.
    pub async fn wait(&self) {
        let started = std::time::Instant::now();
        let mut said = started;
        loop {
            match self.state().await {
                Ok(()) => {
                    tracing::info!(after_ms = started.elapsed().as_millis() as u64, "ready after start");
                    return;
                }
                Err(waiting) if said.elapsed() >= Duration::from_secs(5) => {
                    tracing::info!(waiting = %waiting, "not ready yet");
                    said = std::time::Instant::now();
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A started process: its router and the background work behind it.
pub struct App {
    router: Router,
    /// The API's routes alone, for callers in this process (the pages).
    internal: Router,
    config: Arc<Config>,
    dbs: Vec<(&'static str, Db)>,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
    relays: Vec<JoinHandle<()>>,
    ports: Ports,
    startup: Startup,
}

/// Migrates the databases of `specs` without starting anything (`emporium migrate`).
pub async fn migrate_all(config: &Config, specs: &[&ServiceSpec]) -> Result<Vec<String>, StartError> {
    let mut applied = Vec::new();
    for spec in specs {
        let db = connect_db(config, spec.name).await?;
        let done = migrate::migrate(&db, &[&PLATFORM, spec.migrations])
            .await
            .map_err(|source| StartError::Db { service: spec.name, source })?;
        applied.extend(done.into_iter().map(|m| format!("{}: {m}", spec.name)));
        db.close().await;
    }
    Ok(applied)
}

/// Opens one service's database, migrated, for a command-line tool. Events it
/// writes wait in the outbox for the relay of a running server (or the next
/// start) to publish them.
pub async fn open_service(config: Arc<Config>, spec: &ServiceSpec) -> Result<ServiceContext, StartError> {
    let db = connect_db(&config, spec.name).await?;
    migrate::migrate(&db, &[&PLATFORM, spec.migrations])
        .await
        .map_err(|source| StartError::Db { service: spec.name, source })?;
    Ok(ServiceContext {
        name: spec.name,
        db,
        bus: Arc::new(bus::InProcessBus::new()),
        config,
        shutdown: CancellationToken::new(),
        ports: Ports::default(),
    })
}

async fn connect_db(config: &Config, service: &'static str) -> Result<Db, StartError> {
    let options = DbOptions {
        max_connections: config.database.max_connections,
        busy_timeout: Duration::from_secs(config.database.busy_timeout_secs),
    };
    Db::connect(&config.database_url(service), service, &options)
        .await
        .map_err(|source| StartError::Db { service, source })
}

impl App {
    /// Starts the services of `specs` that the configuration enables; `pages`
    /// (the storefront and console) are served beside the API.
    pub async fn start(
        config: Arc<Config>,
        specs: &[ServiceSpec],
        pages: Router,
        demo: bool,
    ) -> Result<App, StartError> {
        Self::start_wired(config, specs, pages, demo, |_| {}).await
    }

    /// [`App::start`], with `wire` offering the ports between services once
    /// every service is mounted (so each has provided its own), before any
    /// event is delivered or demo data loaded.
    pub async fn start_wired(
        config: Arc<Config>,
        specs: &[ServiceSpec],
        pages: Router,
        demo: bool,
        wire: impl FnOnce(&Ports),
    ) -> Result<App, StartError> {
        config.validate()?;
        http::set_body_limit(config.http.body_limit_bytes);
        telemetry::metrics_handle();
        let shutdown = CancellationToken::new();
        // A process without any service (the pages alone) publishes and
        // hears no event: it joins no bus.
        let serves_api = specs.iter().any(|s| config.services.iter().any(|n| n == s.name));
        let bus: Arc<dyn EventBus> = if serves_api { bus::connect(&config.nats).await? } else { Arc::new(bus::InProcessBus::new()) };
        let redis = match &config.redis.url {
            Some(url) => Some(connect_redis(url).await?),
            None => None,
        };

        let enabled: Vec<&ServiceSpec> =
            specs.iter().filter(|s| config.services.iter().any(|n| n == s.name)).collect();
        let mut api = OpenApiRouter::new();
        let mut dbs = Vec::new();
        let mut handlers = Vec::new();
        let mut contexts = Vec::new();
        let ports = Ports::default();
        ports.provide(Arc::new(PersonalDataSources::default()));
        let startup_checks = StartupChecks::default();
        ports.provide(Arc::new(startup_checks.clone()));
        // The parts elsewhere this process needs while it runs: `/readyz` fails while one cannot be reached.
        let dependencies = DependencyChecks::default();
        ports.provide(Arc::new(dependencies.clone()));
        // Gauges read on a timer: services add theirs when they mount.
        let readings = gauges::Readings::default();
        ports.provide(Arc::new(readings.clone()));
        // Rate limits: in Redis when configured, so replicas count together.
        let limiter = limit::connect(&config.redis.prefix, redis.clone());
        ports.provide::<dyn limit::RateLimiter>(limiter.clone());
        // Revoked access tokens: auth (when in this process) raises the marks
        // directly; the bus tells every process, each on a consumer of its own.
        let revocations = Arc::new(Revocations::default());
        ports.provide(revocations.clone());
        for spec in &enabled {
            let db = connect_db(&config, spec.name).await?;
            migrate::migrate(&db, &[&PLATFORM, spec.migrations])
                .await
                .map_err(|source| StartError::Db { service: spec.name, source })?;
            let ctx = ServiceContext {
                name: spec.name,
                db: db.clone(),
                bus: bus.clone(),
                config: config.clone(),
                shutdown: shutdown.clone(),
                ports: ports.clone(),
            };
            let mounted = (spec.mount)(ctx.clone())
                .await
                .map_err(|source| StartError::Mount { service: spec.name, source })?;
            api = api.merge(mounted.router);
            handlers.extend(mounted.handlers);
            dbs.push((spec.name, db));
            contexts.push((*spec, ctx));
        }
        wire(&ports);
        let mut consumers = Vec::new();
        for handler in handlers {
            consumers.push(handler.consumer().to_owned());
            bus.subscribe(handler, shutdown.clone()).await?;
        }
        let replay = Duration::from_secs(config.auth.access_token_ttl_secs + 2 * crate::auth::LEEWAY_SECS as u64 + 60);
        let revocation_listener = Arc::new(RevocationListener::new(revocations.clone(), replay));
        consumers.push(revocation_listener.consumer().to_owned());
        bus.subscribe(revocation_listener, shutdown.clone()).await?;
        if demo {
            for (spec, ctx) in &contexts {
                match spec.demo {
                    Some(load) => {
                        load(ctx.clone())
                            .await
                            .map_err(|source| StartError::Demo { service: spec.name, source })?;
                        tracing::info!(service = spec.name, "demo data loaded");
                    }
                    None => tracing::info!(service = spec.name, "no demo data for this service"),
                }
            }
        }
        let mut relays = Vec::new();
        let mut outboxes = Vec::new();
        for (name, db) in &dbs {
            let relay = Relay::new(db.clone(), bus.clone(), config.outbox.batch_size, Duration::from_millis(config.outbox.poll_interval_ms));
            // Events already waiting (the demo's, or a crash's leftovers)
            // must be out before the process is ready.
            let nothing_waiting = matches!(relay.backlog().await, Ok((0, _)));
            let drained = Arc::new(std::sync::atomic::AtomicBool::new(nothing_waiting));
            outboxes.push((*name, drained.clone()));
            relays.push(tokio::spawn(relay.noting_drained(drained).run(shutdown.clone())));
        }
        relays.extend(dbs.iter().map(|(_, db)| tokio::spawn(sweep(db.clone(), config.outbox.keep_published_hours, shutdown.clone()))));
        readings.add(Arc::new(gauges::ConsumerLag { bus: bus.clone(), consumers }));
        for (_, db) in &dbs {
            readings.add(Arc::new(gauges::DatabaseBacklog::new(db.clone())));
        }
        let every = Duration::from_millis(config.metrics.sample_interval_ms);
        relays.push(tokio::spawn(gauges::run(readings.all(), every, shutdown.clone())));
        let startup = Startup::new(outboxes, startup_checks.all(), Duration::from_secs(config.startup.ready_timeout_secs));

        let readiness = Readiness { dbs: dbs.clone(), bus: bus.clone(), redis, startup: startup.clone(), dependencies: dependencies.clone() };
        // Tokens are verified locally with the keys the auth service publishes
        // (in process here; absent when auth runs elsewhere and no source is set).
        let key_source = ports.get::<dyn KeySource>().or_else(|| {
            let url = crate::auth::jwks_url(&config.auth)?;
            Some(Arc::new(HttpKeySource::new(url)) as Arc<dyn KeySource>)
        });
        if key_source.is_none() && serves_api {
            tracing::warn!("auth is not in this process and neither auth.url nor auth.jwks_url is set: signed-in requests will be refused");
        }
        // Without auth here the token keys come over HTTP: readiness says
        // whether they can (a service cannot serve signed-in calls without).
        let runs_a_service = crate::service::runs_a_service(&config);
        if !config.services.iter().any(|s| s == "auth") && (runs_a_service || key_source.is_some()) {
            dependencies.add(Arc::new(TokenKeys(key_source.clone())));
        }
        let auth = AuthLayer {
            verifier: Arc::new(Verifier::new(
                key_source,
                config.public_url(),
                config.auth.audience.clone(),
            ).with_revocations(revocations)),
            api_keys: ports.get::<dyn ApiKeyResolver>(),
        };
        let general = limit::GeneralLimit {
            config: config.clone(),
            limits: limit::Limits::new(limiter),
            per_ip_per_minute: config.limits.per_ip_per_minute,
            per_principal_per_minute: config.limits.per_principal_per_minute,
        };
        let (router, internal) = assemble(api, pages, readiness, auth, general, &config);
        Ok(App { router, internal, config, dbs, bus, shutdown, relays, ports, startup })
    }

    /// What the process finishes after start before it is ready (see [`Startup`]).
    pub fn startup(&self) -> Startup {
        self.startup.clone()
    }

    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The API's routes for callers in this process (the storefront's
    /// pages): the same handlers, authentication and error shapes, without
    /// the outer layers a page request already went through (request id,
    /// access log, metrics), so one page is one logged request.
    pub fn internal_router(&self) -> Router {
        self.internal.clone()
    }

    /// The database of a running service (for tests and tools).
    pub fn db(&self, service: &str) -> Option<&Db> {
        self.dbs.iter().find(|(name, _)| *name == service).map(|(_, db)| db)
    }

    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    /// The ports the running services provide (for tests and tools).
    /// Fires when the process begins to stop, for tasks started beside it.
    pub fn stopping(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// Serves until `signal` completes, lets in-flight requests finish (up to
    /// the configured grace period), then shuts the background work down.
    /// With `metrics.bind` set, `/metrics` is served on a listener of its own.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let metrics = match self.config.metrics.bind {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
            None => None,
        };
        self.serve_with_metrics(listener, metrics, signal).await
    }

    /// [`App::serve`] with the metrics listener (for `metrics.bind`) bound by the caller.
    pub async fn serve_with_metrics(
        self,
        listener: tokio::net::TcpListener,
        metrics: Option<tokio::net::TcpListener>,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = CancellationToken::new();
        let grace = Duration::from_secs(self.config.http.shutdown_grace_secs);
        let limits = server::Limits::from_config(&self.config.http);
        let main = server::serve(listener, self.router.clone(), limits.clone(), stop.clone());
        let scrape = async {
            if let Some(listener) = metrics {
                server::serve(listener, metrics_router(), limits, stop.clone()).await;
            }
        };
        let server = async {
            tokio::join!(main, scrape);
        };
        let deadline = {
            let stop = stop.clone();
            async move {
                signal.await;
                tracing::info!("shutting down: no new connections, finishing in-flight requests");
                stop.cancel();
                tokio::time::sleep(grace).await;
            }
        };
        tokio::select! {
            () = server => {}
            () = deadline => tracing::warn!(grace_secs = grace.as_secs(), "grace period over; dropping the requests still running"),
        }
        self.shutdown().await;
        Ok(())
    }

    /// Stops consumers and relays; each relay publishes what is pending first.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for relay in self.relays {
            let _ = relay.await;
        }
        self.bus.close().await;
        for (_, db) in &self.dbs {
            db.close().await;
        }
        tracing::info!("stopped");
    }
}

/// Removes idempotency records past their retention and events published
/// longer ago than `keep_published_hours`, every ten minutes.
async fn sweep(db: Db, keep_published_hours: u32, shutdown: CancellationToken) {
    let name = format!("idempotency_sweeper_{}", db.schema());
    let keep = time::Duration::hours(i64::from(keep_published_hours));
    crate::worker::every(name, Duration::from_secs(600), shutdown, || async {
        // The records' own store, once the service has opened it.
        let expired = match db.keys_if_open() {
            Some(keys) => idempotency::purge_expired(keys).await?,
            None => 0,
        };
        let published = crate::outbox::purge_published(&db, time::OffsetDateTime::now_utc() - keep).await?;
        Ok::<usize, crate::db::DbError>((expired + published) as usize)
    })
    .await;
}

/// Connects to Redis as the process does (`redis.url`), within 5 seconds.
pub async fn connect_redis(url: &str) -> Result<redis::aio::ConnectionManager, StartError> {
    let shown = kernel::config::mask_url(url);
    let client = redis::Client::open(url).map_err(|e| StartError::Redis(format!("{shown}: {e}")))?;
    let connect = redis::aio::ConnectionManager::new(client.clone());
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(manager)) => Ok(manager),
        Ok(Err(e)) => Err(StartError::Redis(format!("cannot reach {shown}: {e}"))),
        // The manager retries a refused connection until the time is up:
        // one more attempt names the cause.
        Err(_) => {
            let cause = match tokio::time::timeout(Duration::from_secs(3), client.get_multiplexed_async_connection()).await {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(_)) => "it answered only after 5 seconds of trying".into(),
                Err(_) => "no answer within 5 seconds".into(),
            };
            Err(StartError::Redis(format!("cannot reach {shown}: {cause}")))
        }
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(info(title = "Emporium", description = "Emporium commerce platform API. \
    Errors, pagination, idempotency and money follow the API conventions."))]
struct ApiDoc;

/// The app's router, and the API's routes alone for in-process callers.
fn assemble(api: OpenApiRouter, pages: Router, readiness: Readiness, auth: AuthLayer, general: limit::GeneralLimit, config: &Config) -> (Router, Router) {
    let core = OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(healthz))
        .merge(OpenApiRouter::new().routes(routes!(readyz)).with_state(readiness))
        .merge(api);
    let (router, openapi) = core.split_for_parts();
    let internal = router
        .clone()
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        // The browser behind a page's call, as the public router finds it (no limit here: the page was counted).
        .layer(middleware::from_fn_with_state(general.config.clone(), limit::find_client))
        .layer(axum::Extension(auth.clone()))
        .layer(axum::extract::DefaultBodyLimit::max(config.http.body_limit_bytes))
        .layer(CatchPanicLayer::custom(http::panic_response))
        .layer(middleware::from_fn(http::shape_errors));
    let openapi = Arc::new(openapi);
    // With a listener of its own (`metrics.bind`), /metrics is not on this port.
    let router = if config.metrics.bind.is_none() { router.route("/metrics", get(metrics)) } else { router };
    let public = router
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/api/docs", get(|| async { Html(DOCS_PAGE) }))
        .route("/api/docs.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], DOCS_SCRIPT) }))
        // An address no route knows: under /api/ the API's error; elsewhere
        // the pages' own answer (a page of the shop), when they give one.
        .route("/api/{*rest}", axum::routing::any(http::not_found))
        .merge(pages)
        .method_not_allowed_fallback(http::method_not_allowed)
        // Per client, before any work; inside the auth extension it reads.
        .layer(middleware::from_fn_with_state(general, limit::general))
        .layer(axum::Extension(auth))
        .layer(middleware::from_fn(http::track_metrics))
        .layer(axum::extract::DefaultBodyLimit::max(config.http.body_limit_bytes))
        .layer(CatchPanicLayer::custom(http::panic_response))
        .layer(middleware::from_fn(http::shape_errors))
        .layer(middleware::from_fn(http::html_security_headers))
        .layer(middleware::from_fn(http::api_no_store))
        .layer(middleware::from_fn_with_state(server::Limits::from_config(&config.http), server::deadlines))
        // Pages, assets and API answers, gzip or brotli as the client accepts
        // (pictures, tiny answers and event streams are left as they are) —
        // except pages for one person (see [`http::shared_or_not_html`]).
        .layer(
            tower_http::compression::CompressionLayer::new()
                .quality(tower_http::CompressionLevel::Precise(5))
                .compress_when(tower_http::compression::predicate::DefaultPredicate::new().and(http::shared_or_not_html)),
        )
        .layer(middleware::from_fn(http::request_id));
    (public, internal)
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "alive", body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
struct Ready {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// Each dependency and one word: `ok`, `unavailable`, or for
    /// `startup` `starting` (the details are in the process's log).
    checks: BTreeMap<String, &'static str>,
}

/// The process can serve: its databases answer, NATS and Redis when
/// configured, the parts elsewhere its roles need answer (`catalog` for
/// orders, search or notify without the catalog, `auth.jwks` without auth,
/// `web.api` for the pages without the services), and it has caught up after start (`startup`: the events
/// written before start are out, and the search index has applied them).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready", body = Ready),
              (status = 503, description = "a dependency is unreachable, or the process is still catching up after start", body = Ready)))]
async fn readyz(State(r): State<Readiness>) -> Response {
    // Anyone may ask: the answer is a word per check; what exactly is
    // wrong (addresses, error text, counts) goes to the log.
    let mut checks = BTreeMap::new();
    let mut ok = true;
    let mut record = |name: String, result: Result<(), String>| {
        ok &= result.is_ok();
        let word = match result {
            Ok(()) => "ok",
            Err(e) if name == "startup" => {
                tracing::info!(waiting = %e, "readiness: still catching up after start");
                "starting"
            }
            Err(e) => {
                tracing::warn!(check = %name, error = %e, "readiness: a dependency is unavailable");
                "unavailable"
            }
        };
        checks.insert(name, word);
    };
    for (name, db) in &r.dbs {
        let result = tokio::time::timeout(Duration::from_secs(2), db.ping()).await;
        record(format!("database.{name}"), flatten(result.map(|r| r.map_err(|e| e.to_string()))));
    }
    let bus = r.bus.check().await.map_err(|e| e.to_string());
    record(format!("bus.{}", r.bus.kind()), bus);
    if let Some(mut conn) = r.redis.clone() {
        let ping = redis::cmd("PING");
        let result = tokio::time::timeout(Duration::from_secs(2), ping.query_async::<String>(&mut conn)).await;
        record("redis".into(), flatten(result.map(|r| r.map(|_| ()).map_err(|e| e.to_string()))));
    }
    for (name, result) in r.dependencies.results().await {
        record(name.to_owned(), result);
    }
    record("startup".into(), r.startup.state().await);
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Ready { status: if ok { "ready" } else { "unavailable" }, checks };
    (status, axum::Json(body)).into_response()
}

/// The token keys, fetched as verification fetches them.
struct TokenKeys(Option<Arc<dyn KeySource>>);

#[async_trait::async_trait]
impl DependencyCheck for TokenKeys {
    fn name(&self) -> &'static str {
        "auth.jwks"
    }

    async fn check(&self) -> Result<(), String> {
        let source = self.0.as_ref().ok_or("auth is not in this process, and neither auth.url nor auth.jwks_url is set")?;
        match source.public_keys().await {
            Ok(keys) if keys.is_empty() => Err("the JWKS publishes no signing key".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn flatten<E>(r: Result<Result<(), String>, E>) -> Result<(), String> {
    r.unwrap_or_else(|_| Err("timed out".into()))
}

/// What the metrics listener serves: `/metrics` and nothing else.
fn metrics_router() -> Router {
    Router::new().route("/metrics", get(metrics)).fallback(http::not_found)
}

async fn metrics() -> Response {
    let handle = telemetry::metrics_handle();
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

const DOCS_PAGE: &str = include_str!("docs.html");
/// The page's script, apart, so the page's CSP can refuse inline scripts.
const DOCS_SCRIPT: &str = include_str!("docs.js");

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::Startup;
    use crate::service::StartupCheck;

    /// A check that passes once `passes` is raised.
    struct Until(Arc<AtomicBool>);

    #[async_trait::async_trait]
    impl StartupCheck for Until {
        fn name(&self) -> &'static str {
            "test.check"
        }
        async fn check(&self) -> Result<(), String> {
            if self.0.load(Ordering::SeqCst) { Ok(()) } else { Err("3 events still to apply".into()) }
        }
    }

    #[tokio::test]
    async fn startup_waits_for_outboxes_then_checks_and_stays_done() {
        let drained = Arc::new(AtomicBool::new(false));
        let passes = Arc::new(AtomicBool::new(false));
        let startup = Startup::new(vec![("orders", drained.clone())], vec![Arc::new(Until(passes.clone()))], Duration::from_secs(600));
        assert!(startup.state().await.unwrap_err().contains("orders"));
        drained.store(true, Ordering::SeqCst);
        assert_eq!(startup.state().await.unwrap_err(), "test.check: 3 events still to apply");
        passes.store(true, Ordering::SeqCst);
        assert_eq!(startup.state().await, Ok(()));
        passes.store(false, Ordering::SeqCst);
        assert_eq!(startup.state().await, Ok(()), "once caught up it stays so");
    }

    #[tokio::test]
    async fn a_process_that_cannot_catch_up_is_ready_once_its_time_is_up() {
        let never = Arc::new(AtomicBool::new(false));
        let startup = Startup::new(Vec::new(), vec![Arc::new(Until(never.clone()))], Duration::from_millis(300));
        assert!(startup.state().await.is_err());
        tokio::time::timeout(Duration::from_secs(10), startup.wait()).await.expect("ready after the deadline");
        assert_eq!(startup.state().await, Ok(()));
        let stuck_outbox = Startup::new(vec![("catalog", never)], Vec::new(), Duration::ZERO);
        assert_eq!(stuck_outbox.state().await, Ok(()));
    }
}
