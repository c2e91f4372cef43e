//! The `emporium` binary's library: the command line, the configuration it
//! loads, and the wiring of the services into one process.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kernel::config::{self, Config, ConfigError};
use kernel::money::Currency;
use platform::app::{self, App};
use platform::service::ServiceSpec;

pub mod deploy;
pub mod doctor;
pub mod ports;
mod progress;

/// Starts the services the configuration enables and wires their ports.
/// The whole shop: every configured service, and with the `web` role the
/// storefront and console over their API — in process when this process
/// runs every service, else over HTTP at `web.api_url`. Without `web` no
/// page is served (`/` is the API's 404).
pub async fn start_shop(config: Arc<Config>, demo: bool) -> Result<App, app::StartError> {
    let config = demo_defaults(config, demo);
    let runs = |role: &str| config.services.iter().any(|s| s == role);
    if !runs(config::WEB) {
        return start(config.clone(), axum::Router::new().fallback(platform::http::not_found), demo).await;
    }
    let api = match pages_api(&config) {
        Ok(api) => api,
        Err(message) => return Err(app::StartError::Mount { service: config::WEB, source: message.into() }),
    };
    let site = web::Site::new(api.clone(), &config);
    let app = start(config.clone(), web::router(site.clone()), demo).await?;
    follow_the_catalog(&site, &app, &config);
    match api.url() {
        Some(url) => tracing::info!(api_url = %config::mask_url(url), "the pages call the API over HTTP"),
        None => api.bind(app.internal_router()),
    }
    Ok(app)
}

/// The storefront's page cache hears the catalog's changes: from the
/// catalog's response cache in this process, or else from the other
/// replicas' news on Redis. Without either it keeps pages for its few
/// seconds only.
fn follow_the_catalog(site: &web::Site, app: &App, config: &Config) {
    if let Some(inventory) = app.ports().get::<catalog::Inventory>()
        && let Some(cache) = &inventory.cache
    {
        site.follow(cache.news());
    } else if let Some(url) = &config.redis.url {
        let news = kernel::news::CatalogNews::default();
        match catalog::follow_through_redis(url, &config.redis.prefix, news.clone(), app.stopping()) {
            Ok(()) => site.follow(&news),
            Err(e) => tracing::warn!(error = %e, "cannot follow the catalog's changes on redis; pages are kept for http.page_cache_secs"),
        }
    }
}

/// How the pages of a `web` process reach the API: in process when every
/// service runs here; else over HTTP at `web.api_url`. A process with some
/// services and no `web.api_url` keeps the in-process call (pages that need
/// a service it lacks find no route); one with none of them cannot serve a
/// page without `web.api_url`.
fn pages_api(config: &Arc<Config>) -> Result<web::Api, String> {
    let runs = |role: &str| config.services.iter().any(|s| s == role);
    if config::SERVICES.iter().all(|s| runs(s)) {
        return Ok(web::Api::default());
    }
    match &config.web.api_url {
        Some(url) => {
            let trust = config.clone();
            let client_ip: web::api::ClientIp = Arc::new(move |peer, headers| platform::http::client_ip(&trust, peer, headers));
            let timeout = std::time::Duration::from_secs(config.http.request_timeout_secs.clamp(1, 600));
            web::Api::over_http(url, timeout, client_ip).map_err(|e| format!("web.api_url: {e}"))
        }
        None if config::SERVICES.iter().any(|s| runs(s)) => {
            tracing::warn!(
                services = ?config.services,
                "web runs without every service and web.api_url is unset: the pages reach only the services in this process"
            );
            Ok(web::Api::default())
        }
        None => Err("web.api_url (EMPORIUM_WEB_API_URL) is unset: a `web` process without the API services reaches them there \
                     (the load balancer in front of them, e.g. http://lb.internal:8080)"
            .into()),
    }
}

pub async fn start(config: Arc<Config>, pages: axum::Router, demo: bool) -> Result<App, app::StartError> {
    let config = demo_defaults(config, demo);
    App::start_wired(config.clone(), &services(), pages, demo, |ports| ports::wire(ports, &config)).await
}

/// The demo takes test payments unless told otherwise; any other shop
/// takes them only when `orders.test_payments` says so.
fn demo_defaults(config: Arc<Config>, demo: bool) -> Arc<Config> {
    if !demo || config.orders.test_payments.is_some() {
        return config;
    }
    let mut config = (*config).clone();
    config.orders.test_payments = Some(true);
    Arc::new(config)
}

/// Every service, in start-up order.
pub fn services() -> Vec<ServiceSpec> {
    vec![auth::spec(), catalog::spec(), orders::spec(), search::spec(), notify::spec()]
}

#[derive(Debug, Parser)]
#[command(name = "emporium", version, about = "Emporium: a commerce platform in one binary")]
pub struct Cli {
    /// Configuration file (default: ./emporium.toml if it exists).
    #[arg(long, global = true, env = "EMPORIUM_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Options that override the configuration for one run.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Where data files live [env: EMPORIUM_DATA_DIR] [default: ./data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run only these services, e.g. `--services catalog,search` [env: EMPORIUM_SERVICES]
    #[arg(long, value_delimiter = ',')]
    pub services: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API, the storefront and the console.
    Serve {
        /// Address to listen on, `host:port` (`localhost:8080` is resolved) [env: EMPORIUM_BIND] [default: 127.0.0.1:8080]
        #[arg(long)]
        bind: Option<String>,
        #[command(flatten)]
        overrides: Overrides,
        /// Load the demo shop (products, shipping, taxes, a discount code).
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Print the effective configuration, secrets masked.
    Config {
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Check the configuration and reach every part it names (databases,
    /// NATS, Redis, the object store, SMTP, the catalog and JWKS URLs): one
    /// line each, with what to fix; exits non-zero when something fails.
    Doctor {
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Fill the catalog: the demo shop, or a synthetic catalog for benchmarks.
    Seed {
        /// The demo shop: its catalog (skipped if the shop has products
        /// already), shipping methods, tax rates and discount code.
        #[arg(long, conflicts_with = "products")]
        demo: bool,
        /// This many synthetic products, added to what is there.
        #[arg(long)]
        products: Option<usize>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Import products from a Shopify product CSV (bad rows are reported, the rest go in).
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Export products as a Shopify product CSV.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Search index tools.
    Search {
        #[command(subcommand)]
        command: SearchCommand,
    },
    /// Manage user accounts.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage the access-token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Files for running the shop scaled out.
    Deploy {
        #[command(subcommand)]
        command: DeployCommand,
    },
    /// Ask a running process whether it is ready (`/readyz`); exits non-zero
    /// when it is not (a container's health check).
    Health {
        /// The address to ask [default: /readyz on the port of `bind`, on loopback]
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Print the nginx configuration in front of a scaled-out shop: the
    /// route map from the services' route tables, an upstream per role, a
    /// public and an internal server. Body limits follow
    /// `http.body_limit_bytes` and `media.max_upload_bytes`.
    Nginx {
        #[command(flatten)]
        args: deploy::NginxArgs,
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user (e.g. the first admin); works while a server runs.
    Create {
        #[arg(long)]
        email: String,
        /// customer, admin, catalog_manager, order_manager or support (repeatable).
        #[arg(long = "role", default_value = "customer")]
        roles: Vec<String>,
        #[arg(long, default_value = "Administrator")]
        name: String,
        /// Read the password from standard input; otherwise one is generated and printed once.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(Debug, Subcommand)]
pub enum SearchCommand {
    /// Rebuild the search index from the catalog, aside; a running server
    /// swaps it in when it is done (search stays online).
    Reindex {
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Recount the recommendation statistics from the recorded purchases.
    RebuildRecommendations {
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Products, variants, stock and image addresses; importing again updates.
    Products {
        /// The CSV file (Shopify's product format).
        file: PathBuf,
        /// The currency of the file's prices.
        #[arg(long, default_value = "USD")]
        currency: String,
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Every product, in any status.
    Products {
        /// Where to write the CSV.
        file: PathBuf,
        /// The currency of the prices written.
        #[arg(long, default_value = "USD")]
        currency: String,
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key active; the old ones stay published until their tokens expire.
    Rotate {
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] app::StartError),
    #[error("cannot listen on {addr} (`{key}`): {source}; {}", bind_hint(.source, .key))]
    Bind { key: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
    #[error("{0}")]
    Service(platform::service::BoxError),
    #[error("{failed} of {checked} checks failed")]
    Doctor { failed: usize, checked: usize },
    #[error(transparent)]
    Deploy(#[from] deploy::DeployError),
}

/// What to do about an address that cannot be listened on.
fn bind_hint(e: &std::io::Error, key: &str) -> String {
    let setting = if key == "bind" { "`--bind` or EMPORIUM_BIND" } else { "EMPORIUM_METRICS_BIND" };
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!("another program (another Emporium?) listens there: stop it, or choose another port with {setting}"),
        std::io::ErrorKind::AddrNotAvailable => format!("this machine has no such address: use one of its own (127.0.0.1, 0.0.0.0) with {setting}"),
        std::io::ErrorKind::PermissionDenied => format!("ports below 1024 need privileges: use a port above 1024 with {setting}"),
        _ => format!("check {setting}"),
    }
}

/// Listens on `addr` (the setting `key`), or says why it cannot.
pub async fn listen(key: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener, CliError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| CliError::Bind { key, addr, source })
}

/// Loads the configuration: defaults, the file, the environment, then flags.
pub fn load_config(
    file: Option<&PathBuf>,
    overrides: &Overrides,
    bind: Option<&str>,
) -> Result<Config, ConfigError> {
    let (path, required) = match file {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from("emporium.toml"), false),
    };
    let mut config = config::load(Some(&path), required, |k| std::env::var(k).ok())?;
    if let Some(bind) = bind {
        config.bind = config::resolve_bind(bind).map_err(|message| ConfigError::Invalid { key: "bind (--bind)".into(), message })?;
    }
    if let Some(dir) = &overrides.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(services) = &overrides.services {
        config.services = services.clone();
    }
    config.validate()?;
    Ok(config)
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Config { overrides } => {
            let config = load_config(cli.config.as_ref(), &overrides, None)?;
            print!("{}", config.to_masked_toml());
            Ok(())
        }
        Command::Doctor { overrides } => {
            let report = doctor::run(cli.config.as_ref(), &overrides, &mut std::io::stdout()).await;
            match report.failed {
                0 => Ok(()),
                failed => Err(CliError::Doctor { failed, checked: report.checked }),
            }
        }
        Command::Migrate { overrides } => {
            let config = load_config(cli.config.as_ref(), &overrides, None)?;
            platform::telemetry::init_logging(&config.log);
            let specs = services();
            let enabled: Vec<&ServiceSpec> =
                specs.iter().filter(|s| config.services.iter().any(|n| n == s.name)).collect();
            let applied = app::migrate_all(&config, &enabled).await?;
            if applied.is_empty() {
                println!("migrations: nothing to apply");
            }
            for m in applied {
                println!("applied {m}");
            }
            Ok(())
        }
        Command::Users { command: UsersCommand::Create { email, roles, name, password_stdin, overrides } } => {
            let config = Arc::new(load_config(cli.config.as_ref(), &overrides, None)?);
            let roles = roles
                .iter()
                .map(|r| kernel::auth::Role::parse(r).ok_or_else(|| CliError::Usage(format!("unknown role `{r}`"))))
                .collect::<Result<Vec<_>, _>>()?;
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map_err(|e| CliError::Usage(e.to_string()))?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (auth::admin::generate_password()?, true)
            };
            let auth = open_auth(config).await?;
            let id = auth::admin::create_user(&auth, &email, &name, &password, &roles).await?;
            println!("created {id} ({email})");
            if generated {
                println!("password: {password}");
                println!("(shown once; store it now)");
            }
            Ok(())
        }
        Command::Seed { demo, products, overrides } => {
            let config = Arc::new(load_config(cli.config.as_ref(), &overrides, None)?);
            let ctx = app::open_service(config.clone(), &catalog::spec()).await?;
            let media = catalog::media::MediaStore::from_config(&config).map_err(|e| CliError::Service(Box::new(e)))?;
            let bar = progress::bar("products");
            let report = |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            let made = match (demo, products) {
                (_, Some(n)) => catalog::demo::generate_with_progress(&ctx.db, n, false, &report).await,
                (true, None) => catalog::demo::load_demo_with_progress(&ctx.db, Some(&media), &report).await,
                (false, None) => return Err(CliError::Usage("say --demo or --products N".into())),
            }
            .map_err(|e| CliError::Service(Box::new(e)))?;
            bar.finish_and_clear();
            println!("added {} products", progress::count(made));
            if demo && made > 0 {
                // The pictures went where the catalog processes read them, or should.
                match config.media.store.as_str() {
                    "s3" => println!("pictures stored in the S3 bucket {}", config.media.s3_bucket.as_deref().unwrap_or_default()),
                    _ => println!(
                        "pictures stored in {} (media.dir): every catalog process must serve this same folder; with replicas on several machines use media.store = \"s3\"",
                        config.media.dir.clone().unwrap_or_else(|| config.data_dir.join("media")).display()
                    ),
                }
            }
            if demo {
                // The rest of the demo shop a checkout needs: shipping
                // methods, tax rates, a discount code (each only once).
                let spec = orders::spec();
                if let Some(load) = spec.demo {
                    let ctx = app::open_service(config.clone(), &spec).await?;
                    load(ctx).await.map_err(CliError::Service)?;
                    println!("the demo's shipping methods, tax rates and discount code are in place");
                }
            }
            Ok(())
        }
        Command::Search { command: SearchCommand::Reindex { overrides } } => {
            let config = Arc::new(load_config(cli.config.as_ref(), &overrides, None)?);
            let catalog_ctx = app::open_service(config.clone(), &catalog::spec()).await?;
            let inventory = catalog::Inventory { db: catalog_ctx.db.clone(), reservation_ttl: catalog::RESERVATION_TTL, cache: None };
            let feed: Arc<dyn search::CatalogFeed> = Arc::new(ports::Feed { inventory, currency: config.orders.currency.clone() });
            let bar = progress::counter("products indexed", "products");
            let report = |done: usize| bar.set_position(done as u64);
            let count = search::rebuild_offline(feed, &config.data_dir, &report).await.map_err(|e| CliError::Service(Box::new(e)))?;
            bar.finish_and_clear();
            println!("indexed {} products; a running server switches to the new index within seconds", progress::count(count));
            Ok(())
        }
        Command::Search { command: SearchCommand::RebuildRecommendations { overrides } } => {
            let config = Arc::new(load_config(cli.config.as_ref(), &overrides, None)?);
            let ctx = app::open_service(config, &search::spec()).await?;
            let orders = search::rebuild_statistics(&ctx.db).await.map_err(|e| CliError::Service(Box::new(e)))?;
            println!("recounted the statistics of {orders} orders");
            Ok(())
        }
        Command::Import { command: ImportCommand::Products { file, currency, overrides } } => {
            let config = Arc::new(load_config(cli.config.as_ref(), &overrides, None)?);
            let currency = Currency::parse(&currency).map_err(|_| CliError::Usage(format!("`{currency}` is not an ISO 4217 code")))?;
            let input = std::fs::File::open(&file).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
            let ctx = app::open_service(config, &catalog::spec()).await?;
            let inventory = catalog::Inventory { db: ctx.db.clone(), reservation_ttl: catalog::RESERVATION_TTL, cache: None };
            let bar = progress::bar("products");
            let progress = |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            let report = catalog::shopify::import(&inventory, std::io::BufReader::new(input), currency, "cli", &progress)
                .await
                .map_err(|e| CliError::Service(Box::new(e)))?;
            bar.finish_and_clear();
            println!(
                "{} rows: {} products created, {} updated; {} variants created, {} updated; {} image addresses recorded",
                report.rows, report.products_created, report.products_updated, report.variants_created,
                report.variants_updated, report.images_recorded
            );
            for e in &report.errors {
                let column = e.column.as_deref().map(|c| format!(" [{c}]")).unwrap_or_default();
                println!("line {} ({}){column}: {}", e.line, e.handle, e.reason);
            }
            if !report.errors.is_empty() {
                println!("{} rows skipped", report.errors.len());
            }
            Ok(())
        }
        Command::Export { command: ExportCommand::Products { file, currency, overrides } } => {
            let config = Arc::new(load_config(cli.config.as_ref(), &overrides, None)?);
            let currency = Currency::parse(&currency).map_err(|_| CliError::Usage(format!("`{currency}` is not an ISO 4217 code")))?;
            let ctx = app::open_service(config.clone(), &catalog::spec()).await?;
            let out = std::fs::File::create(&file).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
            let bar = progress::counter("products exported", "products");
            let report = |done: usize| bar.set_position(done as u64);
            let count = catalog::shopify::export_with_progress(&ctx.db, std::io::BufWriter::new(out), currency, &config.public_url(), &report)
                .await
                .map_err(|e| CliError::Service(Box::new(e)))?;
            bar.finish_and_clear();
            println!("exported {} products to {}", progress::count(count), file.display());
            Ok(())
        }
        Command::Deploy { command: DeployCommand::Nginx { args, overrides } } => {
            let config = load_config(cli.config.as_ref(), &overrides, None)?;
            deploy::nginx(&args, &config, &mut std::io::stdout())?;
            Ok(())
        }
        Command::Health { url, overrides } => {
            let url = match url {
                Some(url) => url,
                None => deploy::ready_url(load_config(cli.config.as_ref(), &overrides, None)?.bind),
            };
            deploy::health(&url).await?;
            println!("ready: {url}");
            Ok(())
        }
        Command::Keys { command: KeysCommand::Rotate { overrides } } => {
            let config = Arc::new(load_config(cli.config.as_ref(), &overrides, None)?);
            let auth = open_auth(config).await?;
            let kid = auth::admin::rotate_keys(&auth).await?;
            println!("new signing key {kid} is active; earlier keys stay published until their tokens expire");
            Ok(())
        }
        Command::Serve { bind, overrides, demo } => {
            let config = Arc::new(load_config(cli.config.as_ref(), &overrides, bind.as_deref())?);
            platform::telemetry::init_logging(&config.log);
            // The addresses first: a port in use is said before migrations and demo data run.
            let listener = listen("bind", config.bind).await?;
            let metrics = match config.metrics.bind {
                Some(at) => Some(listen("metrics.bind", at).await?),
                None => None,
            };
            let addr = listener.local_addr().map_err(CliError::Serve)?;
            let app = start_shop(config.clone(), demo).await?;
            let startup = app.startup();
            tracing::info!(%addr, services = ?config.services, "listening");
            if let Some(at) = config.metrics.bind {
                tracing::info!(addr = %at, "serving /metrics on its own listener");
            }
            let serving = app.serve_with_metrics(listener, metrics, shutdown_signal());
            tokio::pin!(serving);
            // Requests are answered at once (`/readyz` says 503 while the
            // process catches up); "ready" is said once it has.
            tokio::select! {
                stopped = &mut serving => return stopped.map_err(CliError::Serve),
                () = startup.wait() => {}
            }
            tracing::info!(%addr, "ready");
            // Said on stdout for whoever started the server; a closed stdout does not stop it.
            let mut out = std::io::stdout();
            let _ = writeln!(out, "Emporium is ready at http://{addr}");
            if demo && config.services.iter().any(|s| s == auth::NAME) && config.services.iter().any(|s| s == config::WEB) {
                let _ = writeln!(
                    out,
                    "The console is at http://{addr}/admin: sign in as admin@example.com (or catalog@… / orders@…) with the demo password `{}`",
                    auth::DEMO_PASSWORD
                );
            }
            let _ = out.flush();
            serving.await.map_err(CliError::Serve)
        }
    }
}

async fn open_auth(config: Arc<Config>) -> Result<auth::Auth, CliError> {
    let ctx = app::open_service(config, &auth::spec()).await?;
    auth::open_checked(&ctx).await.map_err(CliError::Service)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
