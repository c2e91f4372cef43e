//! `emporium doctor`: reads the configuration and reaches every part it
//! names with the clients the services use, one line per part: `ok`, a
//! `note` worth knowing, or `FAIL` with what is wrong and how to fix it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kernel::config::{Config, mask_url};
use platform::db::{Db, DbError, DbOptions};

use crate::Overrides;

/// How a run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub checked: usize,
    pub failed: usize,
}

enum Verdict {
    Ok(String),
    Note(String),
    Fail { problem: String, fix: String },
}

fn fail(problem: impl Into<String>, fix: impl Into<String>) -> Verdict {
    Verdict::Fail { problem: problem.into(), fix: fix.into() }
}

struct Lines<'a> {
    out: &'a mut dyn Write,
    report: Report,
}

impl Lines<'_> {
    fn say(&mut self, part: &str, verdict: Verdict) {
        self.report.checked += 1;
        let line = match verdict {
            Verdict::Ok(what) => format!("ok    {part}: {what}"),
            Verdict::Note(what) => format!("note  {part}: {what}"),
            Verdict::Fail { problem, fix } => {
                self.report.failed += 1;
                format!("FAIL  {part}: {problem}. Fix: {fix}")
            }
        };
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }
}


/// Runs `check` for at most `secs` seconds.
async fn within<T>(secs: u64, check: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(secs), check).await.map_err(|_| format!("no answer within {secs} seconds"))
}

/// Checks everything and writes one line per part to `out`.
pub async fn run(file: Option<&PathBuf>, overrides: &Overrides, out: &mut dyn Write) -> Report {
    let mut lines = Lines { out, report: Report { checked: 0, failed: 0 } };
    let config = match crate::load_config(file, overrides, None) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            lines.say(
                "configuration",
                fail(e.to_string(), "correct that setting in the configuration file or its EMPORIUM_* variable (README: Configuration)"),
            );
            return lines.report;
        }
    };
    lines.say("configuration", Verdict::Ok(configuration_summary(file, &config)));
    lines.say("bind", listening("bind", "`--bind` or EMPORIUM_BIND", config.bind).await);
    if let Some(at) = config.metrics.bind {
        lines.say("metrics.bind", listening("metrics.bind", "EMPORIUM_METRICS_BIND", at).await);
    }
    lines.say("data_dir", writable(&config.data_dir, "point data_dir (EMPORIUM_DATA_DIR) at a folder the user running Emporium can write to"));
    for (services, url) in databases(&config) {
        let part = format!("database ({})", services.join(", "));
        lines.say(&part, database(&config, &services, &url).await);
    }
    let runs = |name: &str| config.services.iter().any(|s| s == name);
    // The API services here (`web` holds no data and hears no event).
    let services = kernel::config::SERVICES.iter().filter(|s| runs(s)).count();
    if services == 0 {
        // Pages alone: no database, bus or token keys of their own.
    } else if let Some(url) = &config.nats.url {
        lines.say("nats", nats(url, &config.nats.stream).await);
    } else if services < kernel::config::SERVICES.len() {
        lines.say("nats", Verdict::Note("nats.url is unset: events stay inside this process, so services in other processes never hear of them".into()));
    }
    if let Some(url) = &config.redis.url {
        lines.say("redis", redis(url).await);
    }
    if runs(catalog::NAME) {
        lines.say("media", media(&config).await);
        if let Some(note) = local_media_on_a_shared_database(&config) {
            lines.say("media.store", note);
        }
    }
    if runs(notify::NAME) {
        match &config.notify.smtp_url {
            Some(url) => lines.say("smtp", smtp(url, config.notify.smtp_ca_file.as_deref()).await),
            None => lines.say("smtp", Verdict::Note("notify.smtp_url is unset: mail goes to the dev mailbox in the console, not to people".into())),
        }
    }
    let needs_catalog = !runs(catalog::NAME) && [orders::NAME, search::NAME, notify::NAME].iter().any(|s| runs(s));
    if needs_catalog {
        lines.say("catalog.url", catalog_url(&config).await);
    }
    if !runs(auth::NAME) && services > 0 {
        lines.say("auth.jwks_url", jwks(&config).await);
        lines.say("auth.url", api_keys(&config).await);
    }
    if runs(kernel::config::WEB) && services < kernel::config::SERVICES.len() {
        lines.say("web.api_url", web_api(&config, services).await);
    }
    lines.report
}

fn configuration_summary(file: Option<&PathBuf>, config: &Config) -> String {
    let source = match file {
        Some(path) => path.display().to_string(),
        None if Path::new("emporium.toml").is_file() => "emporium.toml".into(),
        None => "no file".into(),
    };
    let vars = kernel::config::env_keys().filter(|(var, _)| std::env::var_os(var).is_some()).count();
    format!("valid ({source}, {vars} EMPORIUM_* variables); services: {}", config.services.join(", "))
}

async fn listening(key: &'static str, setting: &str, addr: std::net::SocketAddr) -> Verdict {
    match crate::listen(key, addr).await {
        Ok(listener) => {
            drop(listener);
            Verdict::Ok(format!("{addr} is free to listen on"))
        }
        Err(crate::CliError::Bind { source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse => Verdict::Note(format!(
            "{addr} is in use: fine if Emporium already runs there; otherwise stop what holds it or choose another port with {setting}"
        )),
        Err(e) => fail(e.to_string(), format!("choose another address with {setting}")),
    }
}

/// Whether Emporium could write in `dir`, creating nothing that stays: an
/// existing folder is tried with a probe file removed at once; a folder not
/// made yet is judged by the nearest one that exists (where start-up makes it).
fn writable(dir: &Path, fix: &str) -> Verdict {
    let Some(existing) = dir.ancestors().find(|d| d.as_os_str().is_empty() || d.exists()) else {
        return fail(format!("{} has no existing folder above it", dir.display()), fix);
    };
    let existing = if existing.as_os_str().is_empty() { Path::new(".") } else { existing };
    if !existing.is_dir() {
        return fail(format!("{} is not a folder", existing.display()), fix);
    }
    let probe = existing.join(format!(".emporium-doctor-{}", std::process::id()));
    let tried = std::fs::OpenOptions::new().write(true).create_new(true).open(&probe).map(drop).and_then(|()| std::fs::remove_file(&probe));
    match tried {
        Err(e) => fail(format!("cannot write to {}: {e}", existing.display()), fix),
        Ok(()) if existing == dir => Verdict::Ok(format!("{} is writable", dir.display())),
        Ok(()) => Verdict::Note(format!("{} does not exist yet: it is made at first start (in {}, which is writable)", dir.display(), existing.display())),
    }
}

/// The databases of the services this process runs, each URL once with the
/// services that share it.
fn databases(config: &Config) -> Vec<(Vec<String>, String)> {
    let mut all: Vec<(Vec<String>, String)> = Vec::new();
    for service in config.services.iter().filter(|s| kernel::config::SERVICES.contains(&s.as_str())) {
        let url = config.database_url(service);
        match all.iter_mut().find(|(_, u)| *u == url) {
            Some((services, _)) => services.push(service.clone()),
            None => all.push((vec![service.clone()], url)),
        }
    }
    all
}

async fn database(config: &Config, services: &[String], url: &str) -> Verdict {
    let first = services.first().map_or("auth", String::as_str);
    let setting = match config.database.services.get(first) {
        Some(_) => format!("database.services.{first} (EMPORIUM_{}_DATABASE_URL)", first.to_uppercase()),
        None => "database.url (EMPORIUM_DATABASE_URL)".into(),
    };
    let options = DbOptions { max_connections: 1, busy_timeout: Duration::from_secs(config.database.busy_timeout_secs) };
    let shown = mask_url(url);
    // Looked at, not made: a missing SQLite file stays missing.
    let opened = within(30, async {
        let Some(db) = Db::connect_existing(url, first, &options).await? else { return Ok(false) };
        let pinged = db.ping().await;
        db.close().await;
        pinged.map(|()| true)
    })
    .await;
    match opened {
        Ok(Ok(true)) => Verdict::Ok(format!("{shown} answers")),
        Ok(Ok(false)) => Verdict::Note(format!("{shown}: not created yet — made at first start")),
        Ok(Err(DbError::Unreachable { target, cause })) => fail(
            format!("{shown}: nothing answers at {target} ({cause})"),
            format!("start PostgreSQL there, or correct {setting}"),
        ),
        Ok(Err(e @ DbError::DataDir { .. })) => fail(format!("{shown}: {e}"), "make that folder writable, or point data_dir (EMPORIUM_DATA_DIR) elsewhere"),
        Ok(Err(e)) => fail(format!("{shown}: {}", kernel::error::causes(&e)), format!("check the address, user, password and database name in {setting}")),
        Err(timeout) => fail(format!("{shown}: {timeout}"), format!("check that the database server runs and {setting} points at it")),
    }
}

async fn nats(url: &str, stream: &str) -> Verdict {
    let shown = mask_url(url);
    match within(15, platform::bus::JetStreamBus::probe(url, stream)).await {
        Ok(Ok(found)) => Verdict::Ok(format!("{shown}: {found}")),
        Ok(Err(e)) => fail(
            format!("{shown}: {e}"),
            "start nats-server with JetStream (`nats-server -js`) there, or correct nats.url (EMPORIUM_NATS_URL)",
        ),
        Err(timeout) => fail(format!("{shown}: {timeout}"), "check that nats-server runs there and nats.url (EMPORIUM_NATS_URL) is right"),
    }
}

async fn redis(url: &str) -> Verdict {
    let shown = mask_url(url);
    let fix = "start Redis there, or correct redis.url (EMPORIUM_REDIS_URL); unset, limits and caches stay in this process";
    let pinged = within(15, async {
        let mut conn = platform::app::connect_redis(url).await.map_err(|e| match e {
            platform::app::StartError::Redis(why) => why,
            other => other.to_string(),
        })?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(|e| format!("Redis at {shown}: {}", kernel::error::causes(&e)))
    })
    .await;
    match pinged {
        Ok(Ok(_)) => Verdict::Ok(format!("{shown} answers PING")),
        Ok(Err(e)) => fail(e, fix),
        Err(timeout) => fail(format!("Redis at {shown}: {timeout}"), fix),
    }
}

async fn media(config: &Config) -> Verdict {
    let m = &config.media;
    if m.store != "s3" {
        let dir = m.dir.clone().unwrap_or_else(|| config.data_dir.join("media"));
        return writable(&dir, "point media.dir (EMPORIUM_MEDIA_DIR) at a folder the user running Emporium can write to");
    }
    let bucket = m.s3_bucket.clone().unwrap_or_default();
    let fix = "check media.s3_bucket, media.s3_endpoint, media.s3_region and the access keys (EMPORIUM_MEDIA_S3_*)";
    let store = match catalog::media::s3_bucket(m) {
        Ok(store) => store,
        Err(e) => return fail(format!("bucket {bucket}: {e}"), fix),
    };
    let at = m.s3_endpoint.as_deref().map(mask_url).unwrap_or_else(|| "AWS".into());
    match within(15, object_store::ObjectStore::list_with_delimiter(&store, None)).await {
        Ok(Ok(_)) => Verdict::Ok(format!("S3 bucket {bucket} at {at} can be listed")),
        Ok(Err(e)) => fail(format!("S3 bucket {bucket} at {at}: {}", kernel::error::causes(&e)), fix),
        Err(timeout) => fail(format!("S3 bucket {bucket} at {at}: {timeout}"), fix),
    }
}

/// Local pictures with the catalog on PostgreSQL: fine for one catalog
/// process, wrong for replicas on several machines.
fn local_media_on_a_shared_database(config: &Config) -> Option<Verdict> {
    let url = config.database_url(catalog::NAME);
    let shared = url.starts_with("postgres:") || url.starts_with("postgresql:");
    (config.media.store == "local" && shared).then(|| {
        let dir = config.media.dir.clone().unwrap_or_else(|| config.data_dir.join("media"));
        Verdict::Note(format!(
            "media.store is `local` ({}) with the catalog on PostgreSQL: catalog replicas on other machines would each keep their own pictures \
             (a picture uploaded to one is missing on the others). With more than one catalog replica, set media.store = \"s3\" \
             (EMPORIUM_MEDIA_STORE, with the EMPORIUM_MEDIA_S3_* settings), or give every replica the same folder in media.dir",
            dir.display()
        ))
    })
}

async fn smtp(url: &str, ca_file: Option<&Path>) -> Verdict {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, Tokio1Executor};
    let shown = mask_url(url);
    let fix = "check notify.smtp_url (EMPORIUM_SMTP_URL): host, port, TLS mode (`smtps://` or `?tls=required`) and credentials";
    let mut builder = match AsyncSmtpTransport::<Tokio1Executor>::from_url(url) {
        Ok(builder) => builder.timeout(Some(Duration::from_secs(10))),
        Err(e) => return fail(format!("{shown}: {}", kernel::error::causes(&e)), fix),
    };
    if let Some(path) = ca_file {
        let ca_fix = "point notify.smtp_ca_file (EMPORIUM_SMTP_CA_FILE) at a PEM file of CA certificates";
        let pem = match std::fs::read(path) {
            Ok(pem) => pem,
            Err(e) => return fail(format!("{}: {e}", path.display()), ca_fix),
        };
        let certificate = match Certificate::from_pem(&pem) {
            Ok(c) => c,
            Err(e) => return fail(format!("{}: {e}", path.display()), ca_fix),
        };
        let parsed = reqwest::Url::parse(url).ok();
        let host = parsed.as_ref().and_then(|u| u.host_str()).unwrap_or_default().to_owned();
        let tls = parsed.as_ref().and_then(|u| u.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned()));
        let params = match TlsParameters::builder(host).add_root_certificate(certificate).build_rustls() {
            Ok(p) => p,
            Err(e) => return fail(format!("{}: {e}", path.display()), ca_fix),
        };
        builder = builder.tls(match (url.starts_with("smtps:"), tls.as_deref()) {
            (true, _) => Tls::Wrapper(params),
            (false, Some("required")) => Tls::Required(params),
            (false, Some("opportunistic")) => Tls::Opportunistic(params),
            _ => Tls::None,
        });
    }
    let transport: AsyncSmtpTransport<Tokio1Executor> = builder.build();
    match within(20, transport.test_connection()).await {
        Ok(Ok(true)) => Verdict::Ok(format!("{shown} accepts a connection")),
        Ok(Ok(false)) => fail(format!("{shown} did not answer NOOP"), fix),
        Ok(Err(e)) => fail(format!("{shown}: {}", kernel::error::causes(&e)), fix),
        Err(timeout) => fail(format!("{shown}: {timeout}"), fix),
    }
}

async fn catalog_url(config: &Config) -> Verdict {
    let set = "set catalog.url (EMPORIUM_CATALOG_URL) to the catalog process's address and catalog.service_token (EMPORIUM_CATALOG_SERVICE_TOKEN) to the token that process has";
    let (Some(url), Some(token)) = (&config.catalog.url, &config.catalog.service_token) else {
        return fail("the catalog runs elsewhere but catalog.url or catalog.service_token is unset, so checkout, search and stock alerts here cannot reach it", set);
    };
    let http = match crate::ports::Http::new(url, token, &config.orders.currency) {
        Ok(http) => http,
        Err(e) => return fail(kernel::error::causes(&e), set),
    };
    match within(15, http.probe()).await {
        Ok(Ok(())) => Verdict::Ok(format!("{} answers with the service token", mask_url(url))),
        Ok(Err(e)) => fail(format!("{}: {e}", mask_url(url)), set),
        Err(timeout) => fail(format!("{}: {timeout}", mask_url(url)), set),
    }
}

/// Where the pages of a process without every service reach the API: a
/// route of the API ([`crate::ports::API_PROBE`]) must answer.
async fn web_api(config: &Config, services: usize) -> Verdict {
    let set = "set web.api_url (EMPORIUM_WEB_API_URL) to the address of the load balancer in front of the API services";
    let Some(url) = &config.web.api_url else {
        if services == 0 {
            return fail("web runs without the API services but web.api_url is unset, so no page can be made", set);
        }
        return Verdict::Note("web.api_url is unset: the pages reach only the services in this process".into());
    };
    let shown = mask_url(url);
    let probe = async {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build()?;
        http.get(format!("{}{}", url.trim_end_matches('/'), crate::ports::API_PROBE)).send().await
    };
    let probe_path = crate::ports::API_PROBE;
    match within(15, probe).await {
        Ok(Ok(answer)) if answer.status().is_success() => Verdict::Ok(format!("{shown} answers {probe_path}")),
        Ok(Ok(answer)) => fail(format!("{shown}{probe_path} answered {}", answer.status()), "check that it is the address of the API (its load balancer) and that a catalog process runs behind it"),
        Ok(Err(e)) => fail(format!("{shown}: {}", kernel::error::causes(&e.without_url())), set),
        Err(timeout) => fail(format!("{shown}: {timeout}"), set),
    }
}

/// Where API keys are resolved for a process without auth: auth's internal
/// route must take the service token.
async fn api_keys(config: &Config) -> Verdict {
    let set = "set auth.url (EMPORIUM_AUTH_URL) to the auth process's address and auth.service_token (EMPORIUM_AUTH_SERVICE_TOKEN) to the token that process has";
    let (Some(url), Some(token)) = (&config.auth.url, &config.auth.service_token) else {
        return Verdict::Note(format!("auth.url or auth.service_token is unset: API keys are refused here (401); to accept them, {set}"));
    };
    let shown = mask_url(url);
    let keys = platform::auth::HttpApiKeys::new(url, token, Duration::ZERO);
    match within(15, keys.probe()).await {
        Ok(Ok(())) => Verdict::Ok(format!("{shown} resolves API keys with the service token")),
        Ok(Err(e)) => fail(format!("{shown}: {e}"), set),
        Err(timeout) => fail(format!("{shown}: {timeout}"), set),
    }
}

async fn jwks(config: &Config) -> Verdict {
    use platform::auth::KeySource;
    let set = "set auth.url (EMPORIUM_AUTH_URL) to the auth process's address, or auth.jwks_url (EMPORIUM_AUTH_JWKS_URL) to its /.well-known/jwks.json";
    let Some(url) = platform::auth::jwks_url(&config.auth) else {
        return fail("auth runs elsewhere but neither auth.url nor auth.jwks_url is set, so tokens cannot be checked here and signed-in requests are refused", set);
    };
    let shown = mask_url(&url);
    match within(15, platform::auth::HttpKeySource::new(url.clone()).public_keys()).await {
        Ok(Ok(keys)) if keys.is_empty() => fail(format!("{shown} publishes no signing keys"), "check that it is the auth process's /.well-known/jwks.json"),
        Ok(Ok(keys)) => Verdict::Ok(format!("{shown} publishes {} signing keys", keys.len())),
        Ok(Err(e)) => fail(format!("{shown}: {}", kernel::error::causes(e.as_ref())), set),
        Err(timeout) => fail(format!("{shown}: {timeout}"), set),
    }
}
