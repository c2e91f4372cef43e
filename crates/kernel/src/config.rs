//! Typed configuration: defaults, then `emporium.toml`, then `EMPORIUM_*`
//! variables. A bad value stops start-up with a message naming its key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The services of the platform, in start-up order.
pub const SERVICES: [&str; 5] = ["auth", "catalog", "orders", "search", "notify"];

/// The storefront and console: a role a process may take besides (or
/// instead of) the services; it holds no data of its own.
pub const WEB: &str = "web";

/// Everything a process can run: the services, then the pages.
pub const ROLES: [&str; 6] = ["auth", "catalog", "orders", "search", "notify", WEB];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on: `host:port`, a host name
    /// (`localhost:8080`) resolved when the configuration is read.
    #[serde(deserialize_with = "bind_address")]
    pub bind: SocketAddr,
    /// Where SQLite files, the search index and local media live.
    pub data_dir: PathBuf,
    /// The services this process runs, and `web` for the storefront and
    /// console (all of them by default).
    pub services: Vec<String>,
    /// The address shoppers and API clients use (`https://shop.example`);
    /// defaults to `http://<bind>`. It is the token issuer and the base of links.
    pub public_url: Option<String>,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub nats: NatsConfig,
    pub redis: RedisConfig,
    pub limits: LimitsConfig,
    pub outbox: OutboxConfig,
    pub startup: StartupConfig,
    pub metrics: MetricsConfig,
    pub auth: AuthConfig,
    pub catalog: CatalogConfig,
    pub media: MediaConfig,
    pub orders: OrdersConfig,
    pub notify: NotifyConfig,
    pub web: WebConfig,
}

/// The storefront and console tier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Where a `web` process without the API services reaches the API
    /// (`http://lb.internal`: the load balancer in front of the services);
    /// the pages call it with the shopper's credentials.
    pub api_url: Option<String>,
}

/// How the shop sells: its currency, taxes, payments and returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    /// The currency carts are priced in (ISO 4217).
    pub currency: String,
    /// Catalog prices include tax (EU style) rather than exclude it (US style).
    pub prices_include_tax: bool,
    /// `on_authorise` (charge at checkout) or `on_fulfilment` (hold the
    /// amount at checkout, charge when the first parcel ships).
    pub capture: String,
    /// Days after delivery (or fulfilment) during which a customer may ask to return items.
    pub return_window_days: u32,
    /// An order still waiting for payment this long is cancelled and its stock released.
    pub payment_timeout_mins: u64,
    /// A checkout untouched this long is presumed interrupted (a crash) and
    /// the reconciler completes or rolls it back.
    pub reconcile_after_secs: u64,
    /// The built-in test gateway (test cards that succeed or fail as they
    /// are named). Unset: on only for `serve --demo`, so a shop never takes
    /// make-believe payments unless told to.
    pub test_payments: Option<bool>,
    /// The Stripe secret key (`sk_test_…`); Stripe is offered when set.
    pub stripe_secret_key: Option<String>,
    /// The Stripe publishable key, for Stripe Elements in the storefront.
    pub stripe_publishable_key: Option<String>,
    /// The signing secret of the Stripe webhook endpoint (`whsec_…`).
    pub stripe_webhook_secret: Option<String>,
    /// Stripe's API base URL (a local stand-in in tests).
    pub stripe_api_base: String,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            prices_include_tax: false,
            capture: "on_authorise".into(),
            return_window_days: 30,
            payment_timeout_mins: 15,
            reconcile_after_secs: 60,
            test_payments: None,
            stripe_secret_key: None,
            stripe_publishable_key: None,
            stripe_webhook_secret: None,
            stripe_api_base: "https://api.stripe.com".into(),
        }
    }
}

/// How the shop reaches people: email, SMS, and merchants' webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The shop's name in messages.
    pub shop_name: String,
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://…:465`
    /// (TLS) or `smtp://host:25` (plain). Unset: mail goes to the dev mailbox.
    pub smtp_url: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's, for a
    /// mail server with a private certificate.
    pub smtp_ca_file: Option<PathBuf>,
    /// The `From` of every email.
    pub mail_from: String,
    /// Base URL of an SMS provider with Twilio's Messages API
    /// (`https://api.twilio.com`). Unset: SMS go to the dev mailbox.
    pub sms_url: Option<String>,
    pub sms_account: Option<String>,
    pub sms_token: Option<String>,
    /// The sender number (E.164) of text messages.
    pub sms_from: Option<String>,
    /// Attempts at an email or SMS before it is dead-lettered.
    pub max_attempts: u32,
    /// The first retry waits this long; each next one twice as long (±20 %), at most an hour.
    pub retry_base_ms: u64,
    /// How long a webhook delivery is retried before it is given up.
    pub webhook_retry_secs: u64,
    /// How often the low-stock digest is sent to staff.
    pub digest_interval_secs: u64,
    /// The "order received" message waits this long and goes only if the
    /// order is still waiting for payment (a 3-D Secure check, say); a paid
    /// order gets its receipt alone.
    pub order_placed_delay_secs: u64,
    /// Messages sent at once.
    pub concurrency: usize,
    /// The key unsubscribe links are signed with; unset, one is made and kept in the database.
    pub signing_key: Option<String>,
    /// Lets webhooks reach loopback, private and link-local addresses (development only).
    pub webhooks_allow_private: bool,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            shop_name: "Emporium".into(),
            smtp_url: None,
            smtp_ca_file: None,
            mail_from: "Emporium <shop@localhost>".into(),
            sms_url: None,
            sms_account: None,
            sms_token: None,
            sms_from: None,
            max_attempts: 8,
            retry_base_ms: 30_000,
            webhook_retry_secs: 24 * 3600,
            digest_interval_secs: 900,
            order_placed_delay_secs: 300,
            concurrency: 8,
            signing_key: None,
            webhooks_allow_private: false,
        }
    }
}

/// Where product pictures live: a local folder, or an S3-compatible bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// `local` (a folder, `dir`) or `s3`.
    pub store: String,
    /// The folder of the local store; `<data_dir>/media` when unset.
    pub dir: Option<PathBuf>,
    /// The largest upload accepted.
    pub max_upload_bytes: usize,
    pub s3_bucket: Option<String>,
    /// For S3-compatible stores (MinIO, R2, …); AWS when unset.
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    /// Allow a plain-HTTP endpoint (a store on the same network).
    pub s3_allow_http: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            store: "local".into(),
            dir: None,
            max_upload_bytes: 10 * 1024 * 1024,
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Remember public catalog responses until the catalog changes.
    pub cache: bool,
    /// The bearer token other services present on `/internal/v1/…` (the
    /// reservation port over HTTP); unset means those routes are closed.
    pub service_token: Option<String>,
    /// Where processes without the catalog (orders, search) reach it
    /// (`http://catalog.internal:8080`); they present `service_token`.
    pub url: Option<String>,
    /// The most the public response cache holds, in bytes of bodies and
    /// keys; past it the oldest responses are forgotten.
    pub cache_max_bytes: u64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self { cache: true, service_token: None, url: None, cache_max_bytes: 64 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The `aud` of access tokens.
    pub audience: String,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_days: u64,
    /// Argon2id cost; OWASP's recommendation by default (19 MiB, 2 passes, 1 lane).
    /// Raising them rehashes each password at its next login.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// 32 bytes, base64: encrypts the token signing keys and TOTP secrets
    /// at rest. Unset: one is generated into `<data_dir>/auth.kek` (0600) on
    /// first start and used from there.
    pub key_encryption_key: Option<String>,
    /// The longest an API key may live, in days; a key asked for without an
    /// expiry gets this.
    pub api_key_max_days: u32,
    /// Customers must verify their email before checkout.
    pub require_verified_email: bool,
    /// Staff must enrol TOTP before they can sign in.
    pub staff_mfa_required: bool,
    /// Failed sign-ins for one email from one client address before that
    /// address must wait to try that email again (the owner elsewhere is
    /// not held up; unknown emails are held up alike).
    pub sign_in_throttle_after: u32,
    /// The first wait; each further failure doubles it, up to `sign_in_throttle_max_secs`.
    pub sign_in_throttle_base_secs: u64,
    pub sign_in_throttle_max_secs: u64,
    /// Login attempts allowed per client IP per minute.
    pub login_attempts_per_ip_per_minute: u32,
    /// Take the client IP from `X-Forwarded-For` when the connection comes
    /// from one of `http.trusted_proxies`: the right-most hop that is not a
    /// trusted proxy (hops further left are the client's to write).
    pub trust_forwarded_for: bool,
    /// Where processes without the auth service fetch the token keys
    /// (`http://auth.internal:8080/.well-known/jwks.json`); unset: the
    /// JWKS under `auth.url`.
    pub jwks_url: Option<String>,
    /// Where processes without the auth service reach it
    /// (`http://auth.internal:8080`): the token keys, and the internal
    /// route that resolves API keys.
    pub url: Option<String>,
    /// The bearer token (32+ characters) other processes present on auth's
    /// `/internal/v1/…` routes (resolving API keys); unset: those routes
    /// are closed.
    pub service_token: Option<String>,
    /// How long a process without auth trusts an API key it resolved;
    /// a revoked key or a changed role takes effect within this.
    pub api_key_cache_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            audience: "emporium".into(),
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_days: 30,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            key_encryption_key: None,
            api_key_max_days: 365,
            require_verified_email: false,
            staff_mfa_required: false,
            sign_in_throttle_after: 5,
            sign_in_throttle_base_secs: 30,
            sign_in_throttle_max_secs: 900,
            login_attempts_per_ip_per_minute: 30,
            trust_forwarded_for: false,
            jwks_url: None,
            url: None,
            service_token: None,
            api_key_cache_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (one object per line) or `pretty`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,sqlx=warn`.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Where Prometheus scrapes `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A listener of its own for `/metrics` (`127.0.0.1:9100`), kept off the
    /// public port; unset: `/metrics` is served on the main port.
    #[serde(deserialize_with = "optional_bind_address")]
    pub bind: Option<SocketAddr>,
    /// How often the gauges that cost a query (consumer lag, held
    /// reservations, queued deliveries, idempotency keys in flight) are
    /// read; a scrape shows the last reading.
    pub sample_interval_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { bind: None, sample_interval_ms: 10_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body (uploads have their own limits).
    pub body_limit_bytes: usize,
    /// How long in-flight requests get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// How long the storefront's shared pages (home, categories, products)
    /// are kept rendered for visitors without a session or cart; 0: never.
    pub page_cache_secs: u64,
    /// A client must send a request's headers within this many seconds (an
    /// idle keep-alive connection is closed after it too).
    pub header_timeout_secs: u64,
    /// The longest pause while a request body is read; past it: 408 and
    /// the connection is closed.
    pub body_timeout_secs: u64,
    /// The longest a request may take until its response starts; past it:
    /// 503 `request_timeout`.
    pub request_timeout_secs: u64,
    /// Open connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Open connections served at once from one client (an IPv4 address or
    /// an IPv6 /64); more are answered 503 and closed. Connections from
    /// `trusted_proxies` are not counted this way (behind a proxy, all come
    /// from it).
    pub max_connections_per_ip: usize,
    /// The longest a response write may make no progress (a client that
    /// does not read); past it the connection is closed.
    pub write_timeout_secs: u64,
    /// The most the kept pages may hold together, in bytes (pages are
    /// dropped, oldest first, to stay under it).
    pub page_cache_max_bytes: usize,
    /// The secret the storefront's form (CSRF) tokens are signed with, at
    /// least 32 characters. Unset: a random one per process, which is fine
    /// for one process; give every web process the same one when several
    /// serve one shop.
    pub form_key: Option<String>,
    /// The proxies (IPs or CIDR blocks) whose `X-Forwarded-For` hops are
    /// believed when `auth.trust_forwarded_for` is on.
    pub trusted_proxies: Vec<crate::net::IpCidr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; unset means one SQLite file per service
    /// under `data_dir`.
    pub url: Option<String>,
    pub max_connections: u32,
    /// Seconds a SQLite writer waits for a lock before giving up.
    pub busy_timeout_secs: u64,
    /// Per-service URLs that override `url`.
    pub services: ServiceUrls,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceUrls {
    pub auth: Option<String>,
    pub catalog: Option<String>,
    pub orders: Option<String>,
    pub search: Option<String>,
    pub notify: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// `nats://host:4222`; unset means events travel in process.
    pub url: Option<String>,
    /// JetStream stream name.
    pub stream: String,
    /// Subjects are `<subject_prefix>.<event type>`.
    pub subject_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:6379`; unset means caches and limits live in process.
    pub url: Option<String>,
    /// Put before every key and channel name this shop uses in Redis, so
    /// shops sharing one Redis keep apart.
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, prefix: "emporium".into() }
    }
}

/// Request limits, per client and per target; shared through Redis when
/// `redis.url` is set. 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// API and page requests per client IP per minute (anonymous callers).
    pub per_ip_per_minute: u32,
    /// API and page requests per signed-in user or API key per minute.
    pub per_principal_per_minute: u32,
    /// Password-reset mails per email address and client (an IPv6 client is
    /// its /64) per hour (more requests still answer 202), so one client's
    /// requests cannot use up the owner's.
    pub password_resets_per_email_per_hour: u32,
    /// Password-reset mails per email address per hour from all clients together.
    pub password_resets_per_email_all_clients_per_hour: u32,
    /// Back-in-stock requests per email address per hour.
    pub stock_alerts_per_email_per_hour: u32,
    /// Discount-code attempts per cart per 10 minutes.
    pub discount_attempts_per_cart_per_10_min: u32,
    /// Discount codes tried (accepted or not) per client (an IPv6 client is
    /// its /64) and per signed-in user per hour, whatever the cart. Every try
    /// counts before the code is looked at, so guesses sent at once cannot
    /// outrun the count.
    pub discount_attempts_per_client_per_hour: u32,
    /// Account sign-ups per client IP per hour.
    pub sign_ups_per_ip_per_hour: u32,
    /// Carts created per client IP per hour.
    pub carts_per_ip_per_hour: u32,
    /// A visitor's views of one product count once per this many seconds
    /// toward trending.
    pub view_dedup_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_ip_per_minute: 600,
            per_principal_per_minute: 1200,
            password_resets_per_email_per_hour: 3,
            password_resets_per_email_all_clients_per_hour: 10,
            stock_alerts_per_email_per_hour: 5,
            discount_attempts_per_cart_per_10_min: 10,
            discount_attempts_per_client_per_hour: 30,
            sign_ups_per_ip_per_hour: 20,
            carts_per_ip_per_hour: 100,
            view_dedup_secs: 1800,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// How often the relay looks for rows it was not told about.
    pub poll_interval_ms: u64,
    pub batch_size: u32,
    /// How long published events stay in the outbox before they are
    /// forgotten (they carry order details and guests' order links).
    pub keep_published_hours: u32,
}

/// What a process does right after it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StartupConfig {
    /// How long a new process may take to catch up (the events written
    /// before start published, the search index holding what the event
    /// stream held at start) before it says ready anyway, logging a warning
    /// that names what is still behind. Until then `/readyz` answers 503.
    pub ready_timeout_secs: u64,
}

impl Default for StartupConfig {
    fn default() -> Self {
        Self { ready_timeout_secs: 120 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            services: ROLES.iter().map(|s| s.to_string()).collect(),
            public_url: None,
            log: LogConfig::default(),
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            nats: NatsConfig::default(),
            redis: RedisConfig::default(),
            limits: LimitsConfig::default(),
            outbox: OutboxConfig::default(),
            startup: StartupConfig::default(),
            metrics: MetricsConfig::default(),
            auth: AuthConfig::default(),
            catalog: CatalogConfig::default(),
            media: MediaConfig::default(),
            orders: OrdersConfig::default(),
            notify: NotifyConfig::default(),
            web: WebConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Json, filter: "info".into() }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            shutdown_grace_secs: 20,
            page_cache_secs: 2,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            request_timeout_secs: 60,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            write_timeout_secs: 30,
            page_cache_max_bytes: 32 * 1024 * 1024,
            form_key: None,
            trusted_proxies: ["127.0.0.1/32", "::1/128"].iter().filter_map(|c| c.parse().ok()).collect(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 10, busy_timeout_secs: 5, services: ServiceUrls::default() }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self { url: None, stream: "EMPORIUM".into(), subject_prefix: "emporium".into() }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { poll_interval_ms: 500, batch_size: 100, keep_published_hours: 24 }
    }
}

impl ServiceUrls {
    pub fn get(&self, service: &str) -> Option<&String> {
        match service {
            "auth" => self.auth.as_ref(),
            "catalog" => self.catalog.as_ref(),
            "orders" => self.orders.as_ref(),
            "search" => self.search.as_ref(),
            "notify" => self.notify.as_ref(),
            _ => None,
        }
    }
}

impl Config {
    /// The database URL a service uses: its own, else the shared one, else a
    /// SQLite file of its own under `data_dir`.
    pub fn database_url(&self, service: &str) -> String {
        self.database
            .services
            .get(service)
            .or(self.database.url.as_ref())
            .cloned()
            .unwrap_or_else(|| {
                format!("sqlite://{}", self.data_dir.join(format!("{service}.db")).display())
            })
    }

    /// The public base URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.bind),
        }
    }

    /// The effective configuration as TOML, with every secret masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        let mask = |url: &mut Option<String>| {
            if let Some(u) = url {
                *u = mask_url(u);
            }
        };
        mask(&mut shown.database.url);
        mask(&mut shown.database.services.auth);
        mask(&mut shown.database.services.catalog);
        mask(&mut shown.database.services.orders);
        mask(&mut shown.database.services.search);
        mask(&mut shown.database.services.notify);
        mask(&mut shown.nats.url);
        mask(&mut shown.redis.url);
        if shown.auth.key_encryption_key.is_some() {
            shown.auth.key_encryption_key = Some("****".into());
        }
        if shown.media.s3_secret_access_key.is_some() {
            shown.media.s3_secret_access_key = Some("****".into());
        }
        for secret in [&mut shown.orders.stripe_secret_key, &mut shown.orders.stripe_webhook_secret] {
            if secret.is_some() {
                *secret = Some("****".into());
            }
        }
        mask(&mut shown.notify.smtp_url);
        for secret in [&mut shown.notify.sms_token, &mut shown.notify.signing_key] {
            if secret.is_some() {
                *secret = Some("****".into());
            }
        }
        if shown.catalog.service_token.is_some() {
            shown.catalog.service_token = Some("****".into());
        }
        if shown.http.form_key.is_some() {
            shown.http.form_key = Some("****".into());
        }
        // Whatever the list above misses (a setting added later): every URL
        // and every secret-named value goes through the one masking rule.
        let mut value = match toml::Value::try_from(&shown) {
            Ok(v) => v,
            Err(e) => return format!("# cannot show: {e}"),
        };
        mask_settings("", &mut value);
        toml::to_string_pretty(&value).unwrap_or_else(|e| format!("# cannot show: {e}"))
    }
}

/// Masks, in place, each secret-named setting and each URL-valued one.
fn mask_settings(key: &str, value: &mut toml::Value) {
    match value {
        toml::Value::String(s) if is_secret_key(key) && !s.is_empty() => *s = "****".into(),
        toml::Value::String(s) if s.contains("://") => *s = mask_url(s),
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                mask_settings(k, v);
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|v| mask_settings(key, v)),
        _ => {}
    }
}

/// Settings whose value is a credential, by name (`*_key` but the
/// publishable one, `*token*`, `*secret*`, `*password*`).
fn is_secret_key(key: &str) -> bool {
    ["secret", "token", "password"].iter().any(|w| key.contains(w))
        || (key.ends_with("_key") && !key.contains("publishable"))
}

/// The one masking rule for every URL-valued setting: the password of the
/// userinfo (a lone user, often a token, too), every query value but a few
/// harmless connection options, and any fragment:
/// `postgres://u:****@h/db?sslmode=require&key=****`.
///
/// A password may hold `/`, `?`, `#` and `@` unescaped, so the userinfo is
/// not found by parsing: it is everything before the last `@` that is
/// followed by something shaped like a host. Where that is ambiguous (an `@`
/// in the path) more is hidden, never less.
pub fn mask_url(url: &str) -> String {
    /// Query parameters that never hold a credential.
    const SHOWN: [&str; 4] = ["sslmode", "connect_timeout", "application_name", "mode"];
    let Some((scheme, rest)) = url.split_once("://") else { return mask_unparsed(url) };
    let host_after = |at: usize| {
        let tail = &rest[at + 1..];
        let host = &tail[..tail.find(['/', '?', '#']).unwrap_or(tail.len())];
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || !b.is_ascii() || b".-_:[]%".contains(&b))
    };
    // No host-shaped `@`: an odd host, or an `@` in a query value only.
    let before_query = &rest[..rest.find('?').unwrap_or(rest.len())];
    let at = rest.match_indices('@').map(|(i, _)| i).rev().find(|i| host_after(*i)).or_else(|| before_query.rfind('@'));
    let (userinfo, rest) = match at {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let userinfo = match userinfo.map(|u| u.split_once(':')) {
        Some(Some((user, _password))) => format!("{user}:****@"),
        Some(None) => "****@".to_owned(),
        None => String::new(),
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, _)) => (r, "#****"),
        None => (rest, ""),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let mut masked = format!("{scheme}://{userinfo}{rest}");
    if let Some(query) = query {
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if SHOWN.contains(&k) => kv.to_owned(),
                Some((k, _)) => format!("{k}=****"),
                None => kv.to_owned(),
            })
            .collect();
        masked = format!("{masked}?{}", query.join("&"));
    }
    masked.push_str(fragment);
    masked
}

/// A URL-valued setting that is not shaped like a URL (`postgres//u:pw@h`)
/// may hold a password anywhere: only a leading word that ends at `:` or
/// `/` (a scheme, or a user name before its password) is shown, then `****`.
fn mask_unparsed(value: &str) -> String {
    let end = value.find([':', '/', '@']).unwrap_or(value.len());
    let word = &value[..end];
    let shown = value[end..].starts_with([':', '/'])
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._".contains(&b));
    if value.is_empty() {
        String::new()
    } else if shown {
        format!("{word}****")
    } else {
        "****".into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{var} (config key `{key}`): {message}")]
    Env { var: String, key: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    List,
}

/// Each key that can come from the environment, with its variable.
const ENV_KEYS: &[(&str, &str, Kind)] = &[
    ("EMPORIUM_BIND", "bind", Kind::Str),
    ("EMPORIUM_DATA_DIR", "data_dir", Kind::Str),
    ("EMPORIUM_SERVICES", "services", Kind::List),
    ("EMPORIUM_LOG_FORMAT", "log.format", Kind::Str),
    ("EMPORIUM_LOG", "log.filter", Kind::Str),
    ("EMPORIUM_HTTP_BODY_LIMIT_BYTES", "http.body_limit_bytes", Kind::Int),
    ("EMPORIUM_HTTP_SHUTDOWN_GRACE_SECS", "http.shutdown_grace_secs", Kind::Int),
    ("EMPORIUM_HTTP_PAGE_CACHE_SECS", "http.page_cache_secs", Kind::Int),
    ("EMPORIUM_HTTP_HEADER_TIMEOUT_SECS", "http.header_timeout_secs", Kind::Int),
    ("EMPORIUM_HTTP_BODY_TIMEOUT_SECS", "http.body_timeout_secs", Kind::Int),
    ("EMPORIUM_HTTP_REQUEST_TIMEOUT_SECS", "http.request_timeout_secs", Kind::Int),
    ("EMPORIUM_HTTP_MAX_CONNECTIONS", "http.max_connections", Kind::Int),
    ("EMPORIUM_HTTP_MAX_CONNECTIONS_PER_IP", "http.max_connections_per_ip", Kind::Int),
    ("EMPORIUM_HTTP_WRITE_TIMEOUT_SECS", "http.write_timeout_secs", Kind::Int),
    ("EMPORIUM_METRICS_BIND", "metrics.bind", Kind::Str),
    ("EMPORIUM_METRICS_SAMPLE_INTERVAL_MS", "metrics.sample_interval_ms", Kind::Int),
    ("EMPORIUM_HTTP_PAGE_CACHE_MAX_BYTES", "http.page_cache_max_bytes", Kind::Int),
    ("EMPORIUM_HTTP_FORM_KEY", "http.form_key", Kind::Str),
    ("EMPORIUM_HTTP_TRUSTED_PROXIES", "http.trusted_proxies", Kind::List),
    ("EMPORIUM_DATABASE_URL", "database.url", Kind::Str),
    ("EMPORIUM_DATABASE_MAX_CONNECTIONS", "database.max_connections", Kind::Int),
    ("EMPORIUM_DATABASE_BUSY_TIMEOUT_SECS", "database.busy_timeout_secs", Kind::Int),
    ("EMPORIUM_AUTH_DATABASE_URL", "database.services.auth", Kind::Str),
    ("EMPORIUM_CATALOG_DATABASE_URL", "database.services.catalog", Kind::Str),
    ("EMPORIUM_ORDERS_DATABASE_URL", "database.services.orders", Kind::Str),
    ("EMPORIUM_SEARCH_DATABASE_URL", "database.services.search", Kind::Str),
    ("EMPORIUM_NOTIFY_DATABASE_URL", "database.services.notify", Kind::Str),
    ("EMPORIUM_NATS_URL", "nats.url", Kind::Str),
    ("EMPORIUM_NATS_STREAM", "nats.stream", Kind::Str),
    ("EMPORIUM_NATS_SUBJECT_PREFIX", "nats.subject_prefix", Kind::Str),
    ("EMPORIUM_REDIS_URL", "redis.url", Kind::Str),
    ("EMPORIUM_REDIS_PREFIX", "redis.prefix", Kind::Str),
    ("EMPORIUM_LIMITS_PER_IP_PER_MINUTE", "limits.per_ip_per_minute", Kind::Int),
    ("EMPORIUM_LIMITS_PER_PRINCIPAL_PER_MINUTE", "limits.per_principal_per_minute", Kind::Int),
    ("EMPORIUM_LIMITS_PASSWORD_RESETS_PER_EMAIL_PER_HOUR", "limits.password_resets_per_email_per_hour", Kind::Int),
    ("EMPORIUM_LIMITS_PASSWORD_RESETS_PER_EMAIL_ALL_CLIENTS_PER_HOUR", "limits.password_resets_per_email_all_clients_per_hour", Kind::Int),
    ("EMPORIUM_LIMITS_STOCK_ALERTS_PER_EMAIL_PER_HOUR", "limits.stock_alerts_per_email_per_hour", Kind::Int),
    ("EMPORIUM_LIMITS_DISCOUNT_ATTEMPTS_PER_CART_PER_10_MIN", "limits.discount_attempts_per_cart_per_10_min", Kind::Int),
    ("EMPORIUM_LIMITS_DISCOUNT_ATTEMPTS_PER_CLIENT_PER_HOUR", "limits.discount_attempts_per_client_per_hour", Kind::Int),
    ("EMPORIUM_LIMITS_SIGN_UPS_PER_IP_PER_HOUR", "limits.sign_ups_per_ip_per_hour", Kind::Int),
    ("EMPORIUM_LIMITS_CARTS_PER_IP_PER_HOUR", "limits.carts_per_ip_per_hour", Kind::Int),
    ("EMPORIUM_LIMITS_VIEW_DEDUP_SECS", "limits.view_dedup_secs", Kind::Int),
    ("EMPORIUM_OUTBOX_POLL_INTERVAL_MS", "outbox.poll_interval_ms", Kind::Int),
    ("EMPORIUM_OUTBOX_BATCH_SIZE", "outbox.batch_size", Kind::Int),
    ("EMPORIUM_OUTBOX_KEEP_PUBLISHED_HOURS", "outbox.keep_published_hours", Kind::Int),
    ("EMPORIUM_STARTUP_READY_TIMEOUT_SECS", "startup.ready_timeout_secs", Kind::Int),
    ("EMPORIUM_PUBLIC_URL", "public_url", Kind::Str),
    ("EMPORIUM_AUTH_AUDIENCE", "auth.audience", Kind::Str),
    ("EMPORIUM_AUTH_ACCESS_TOKEN_TTL_SECS", "auth.access_token_ttl_secs", Kind::Int),
    ("EMPORIUM_AUTH_REFRESH_TOKEN_TTL_DAYS", "auth.refresh_token_ttl_days", Kind::Int),
    ("EMPORIUM_AUTH_ARGON2_MEMORY_KIB", "auth.argon2_memory_kib", Kind::Int),
    ("EMPORIUM_AUTH_ARGON2_ITERATIONS", "auth.argon2_iterations", Kind::Int),
    ("EMPORIUM_AUTH_ARGON2_PARALLELISM", "auth.argon2_parallelism", Kind::Int),
    ("EMPORIUM_AUTH_KEY_ENCRYPTION_KEY", "auth.key_encryption_key", Kind::Str),
    ("EMPORIUM_AUTH_API_KEY_MAX_DAYS", "auth.api_key_max_days", Kind::Int),
    ("EMPORIUM_AUTH_REQUIRE_VERIFIED_EMAIL", "auth.require_verified_email", Kind::Bool),
    ("EMPORIUM_AUTH_STAFF_MFA_REQUIRED", "auth.staff_mfa_required", Kind::Bool),
    ("EMPORIUM_AUTH_SIGN_IN_THROTTLE_AFTER", "auth.sign_in_throttle_after", Kind::Int),
    ("EMPORIUM_AUTH_SIGN_IN_THROTTLE_BASE_SECS", "auth.sign_in_throttle_base_secs", Kind::Int),
    ("EMPORIUM_AUTH_SIGN_IN_THROTTLE_MAX_SECS", "auth.sign_in_throttle_max_secs", Kind::Int),
    ("EMPORIUM_AUTH_LOGIN_ATTEMPTS_PER_IP_PER_MINUTE", "auth.login_attempts_per_ip_per_minute", Kind::Int),
    ("EMPORIUM_AUTH_TRUST_FORWARDED_FOR", "auth.trust_forwarded_for", Kind::Bool),
    ("EMPORIUM_AUTH_JWKS_URL", "auth.jwks_url", Kind::Str),
    ("EMPORIUM_AUTH_URL", "auth.url", Kind::Str),
    ("EMPORIUM_AUTH_SERVICE_TOKEN", "auth.service_token", Kind::Str),
    ("EMPORIUM_AUTH_API_KEY_CACHE_SECS", "auth.api_key_cache_secs", Kind::Int),
    ("EMPORIUM_CATALOG_CACHE", "catalog.cache", Kind::Bool),
    ("EMPORIUM_CATALOG_CACHE_MAX_BYTES", "catalog.cache_max_bytes", Kind::Int),
    ("EMPORIUM_CATALOG_SERVICE_TOKEN", "catalog.service_token", Kind::Str),
    ("EMPORIUM_CATALOG_URL", "catalog.url", Kind::Str),
    ("EMPORIUM_MEDIA_STORE", "media.store", Kind::Str),
    ("EMPORIUM_MEDIA_DIR", "media.dir", Kind::Str),
    ("EMPORIUM_MEDIA_MAX_UPLOAD_BYTES", "media.max_upload_bytes", Kind::Int),
    ("EMPORIUM_MEDIA_S3_BUCKET", "media.s3_bucket", Kind::Str),
    ("EMPORIUM_MEDIA_S3_ENDPOINT", "media.s3_endpoint", Kind::Str),
    ("EMPORIUM_MEDIA_S3_REGION", "media.s3_region", Kind::Str),
    ("EMPORIUM_MEDIA_S3_ACCESS_KEY_ID", "media.s3_access_key_id", Kind::Str),
    ("EMPORIUM_MEDIA_S3_SECRET_ACCESS_KEY", "media.s3_secret_access_key", Kind::Str),
    ("EMPORIUM_MEDIA_S3_ALLOW_HTTP", "media.s3_allow_http", Kind::Bool),
    ("EMPORIUM_ORDERS_CURRENCY", "orders.currency", Kind::Str),
    ("EMPORIUM_ORDERS_PRICES_INCLUDE_TAX", "orders.prices_include_tax", Kind::Bool),
    ("EMPORIUM_ORDERS_CAPTURE", "orders.capture", Kind::Str),
    ("EMPORIUM_ORDERS_RETURN_WINDOW_DAYS", "orders.return_window_days", Kind::Int),
    ("EMPORIUM_ORDERS_PAYMENT_TIMEOUT_MINS", "orders.payment_timeout_mins", Kind::Int),
    ("EMPORIUM_ORDERS_RECONCILE_AFTER_SECS", "orders.reconcile_after_secs", Kind::Int),
    ("EMPORIUM_TEST_PAYMENTS", "orders.test_payments", Kind::Bool),
    ("EMPORIUM_STRIPE_SECRET_KEY", "orders.stripe_secret_key", Kind::Str),
    ("EMPORIUM_STRIPE_PUBLISHABLE_KEY", "orders.stripe_publishable_key", Kind::Str),
    ("EMPORIUM_STRIPE_WEBHOOK_SECRET", "orders.stripe_webhook_secret", Kind::Str),
    ("EMPORIUM_STRIPE_API_BASE", "orders.stripe_api_base", Kind::Str),
    ("EMPORIUM_SHOP_NAME", "notify.shop_name", Kind::Str),
    ("EMPORIUM_SMTP_URL", "notify.smtp_url", Kind::Str),
    ("EMPORIUM_SMTP_CA_FILE", "notify.smtp_ca_file", Kind::Str),
    ("EMPORIUM_MAIL_FROM", "notify.mail_from", Kind::Str),
    ("EMPORIUM_SMS_URL", "notify.sms_url", Kind::Str),
    ("EMPORIUM_SMS_ACCOUNT", "notify.sms_account", Kind::Str),
    ("EMPORIUM_SMS_TOKEN", "notify.sms_token", Kind::Str),
    ("EMPORIUM_SMS_FROM", "notify.sms_from", Kind::Str),
    ("EMPORIUM_NOTIFY_MAX_ATTEMPTS", "notify.max_attempts", Kind::Int),
    ("EMPORIUM_NOTIFY_RETRY_BASE_MS", "notify.retry_base_ms", Kind::Int),
    ("EMPORIUM_NOTIFY_WEBHOOK_RETRY_SECS", "notify.webhook_retry_secs", Kind::Int),
    ("EMPORIUM_NOTIFY_DIGEST_INTERVAL_SECS", "notify.digest_interval_secs", Kind::Int),
    ("EMPORIUM_NOTIFY_ORDER_PLACED_DELAY_SECS", "notify.order_placed_delay_secs", Kind::Int),
    ("EMPORIUM_NOTIFY_CONCURRENCY", "notify.concurrency", Kind::Int),
    ("EMPORIUM_NOTIFY_SIGNING_KEY", "notify.signing_key", Kind::Str),
    ("EMPORIUM_NOTIFY_WEBHOOKS_ALLOW_PRIVATE", "notify.webhooks_allow_private", Kind::Bool),
    ("EMPORIUM_WEB_API_URL", "web.api_url", Kind::Str),
];

/// The variables `load` reads, with their keys, for documentation and `--help`.
pub fn env_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    ENV_KEYS.iter().map(|(var, key, _)| (*var, *key))
}

/// Loads the configuration. `file` is read if it exists (an explicitly named
/// file must exist); `env` looks up variables (the process environment in
/// production, a map in tests).
pub fn load(
    file: Option<&Path>,
    file_required: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut table = toml::Table::try_from(Config::default())
        .map_err(|e| ConfigError::Invalid { key: String::new(), message: e.to_string() })?;

    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let from_file: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                    ConfigError::File { path: path.to_owned(), message: e.to_string() }
                })?;
                merge(&mut table, from_file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file_required => {}
            Err(e) => {
                return Err(ConfigError::File { path: path.to_owned(), message: e.to_string() });
            }
        }
    }

    let mut from_env = Vec::new();
    for (var, key, kind) in ENV_KEYS {
        let Some(raw) = env(var) else { continue };
        from_env.push((*var, *key));
        let env_err = |message: String| ConfigError::Env {
            var: var.to_string(),
            key: key.to_string(),
            message,
        };
        let value = match kind {
            Kind::Str => toml::Value::String(raw),
            Kind::Int => toml::Value::Integer(
                raw.trim().parse().map_err(|_| env_err(format!("`{raw}` is not a whole number")))?,
            ),
            Kind::Bool => toml::Value::Boolean(match raw.trim() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => return Err(env_err(format!("`{raw}` is not true or false"))),
            }),
            Kind::List => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
        };
        set_path(&mut table, key, value);
    }

    // A bad value that came from a variable is reported under the variable too.
    from_table(table).map_err(|e| match e {
        ConfigError::Invalid { key, message } => match from_env.iter().find(|(_, k)| key == *k || key.starts_with(&format!("{k}[")) || key.starts_with(&format!("{k}."))) {
            Some((var, _)) => ConfigError::Env { var: (*var).to_owned(), key, message },
            None => ConfigError::Invalid { key, message },
        },
        other => other,
    })
}

/// Deserializes a merged table; a type error names the key at fault.
fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
    let json = serde_json::to_value(&table)
        .map_err(|e| ConfigError::Invalid { key: String::new(), message: e.to_string() })?;
    let config: Config = serde_path_to_error::deserialize(json).map_err(|e| ConfigError::Invalid {
        key: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    config.validate()?;
    Ok(config)
}

impl Config {
    /// Checks what types alone cannot: URL schemes, ranges, service names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid { key: key.into(), message };
        // The value at fault, then the rule it breaks.
        let bad = |key: &str, value: &dyn std::fmt::Display, rule: &str| ConfigError::Invalid { key: key.into(), message: format!("`{value}` {rule}") };
        // A secret is not echoed: its length says enough.
        let short = |key: &str, secret: &str| ConfigError::Invalid {
            key: key.into(),
            message: format!("is {} characters long; use at least 32 (e.g. the output of `openssl rand -hex 32`)", secret.chars().count()),
        };
        for s in &self.services {
            if !ROLES.contains(&s.as_str()) {
                return Err(invalid(
                    "services",
                    format!("unknown service `{s}`; known: {}", ROLES.join(", ")),
                ));
            }
        }
        if self.services.is_empty() {
            return Err(invalid("services", format!("is empty: at least one service must run (known: {})", ROLES.join(", "))));
        }
        if let Err(message) = check_log_filter(&self.log.filter) {
            return Err(invalid("log.filter", message));
        }
        let db_urls = std::iter::once(("database.url", &self.database.url)).chain(
            [
                ("database.services.auth", &self.database.services.auth),
                ("database.services.catalog", &self.database.services.catalog),
                ("database.services.orders", &self.database.services.orders),
                ("database.services.search", &self.database.services.search),
                ("database.services.notify", &self.database.services.notify),
            ],
        );
        for (key, url) in db_urls {
            if let Some(url) = url {
                check_scheme(key, url, &["sqlite", "postgres", "postgresql"])?;
            }
        }
        if let Some(url) = &self.nats.url {
            check_scheme("nats.url", url, &["nats", "tls"])?;
        }
        if let Some(url) = &self.redis.url {
            check_scheme("redis.url", url, &["redis", "rediss"])?;
        }
        if self.database.max_connections == 0 {
            return Err(bad("database.max_connections", &self.database.max_connections, "is too few: use at least 1"));
        }
        if self.http.body_limit_bytes < 1024 {
            return Err(bad("http.body_limit_bytes", &self.http.body_limit_bytes, "is too small: use at least 1024"));
        }
        for (key, secs) in [
            ("http.header_timeout_secs", self.http.header_timeout_secs),
            ("http.body_timeout_secs", self.http.body_timeout_secs),
            ("http.request_timeout_secs", self.http.request_timeout_secs),
            ("http.write_timeout_secs", self.http.write_timeout_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err(bad(key, &secs, "is out of range: use 1 to 3600"));
            }
        }
        if !(1..=1_000_000).contains(&self.http.max_connections) {
            return Err(bad("http.max_connections", &self.http.max_connections, "is out of range: use 1 to 1000000"));
        }
        if !(1..=1_000_000).contains(&self.http.max_connections_per_ip) {
            return Err(bad("http.max_connections_per_ip", &self.http.max_connections_per_ip, "is out of range: use 1 to 1000000"));
        }
        if self.metrics.bind.is_some_and(|m| m == self.bind) {
            return Err(bad("metrics.bind", &self.bind, "is also `bind`: give /metrics a port of its own, or unset metrics.bind"));
        }
        if !(100..=3_600_000).contains(&self.metrics.sample_interval_ms) {
            return Err(bad("metrics.sample_interval_ms", &self.metrics.sample_interval_ms, "is out of range: use 100 to 3600000"));
        }
        let a = &self.auth;
        if a.argon2_memory_kib < 8 * a.argon2_parallelism.max(1) || a.argon2_iterations == 0 || a.argon2_parallelism == 0 {
            return Err(invalid(
                "auth.argon2_memory_kib",
                format!(
                    "`{}` KiB with {} passes and {} lanes: Argon2 needs at least 8 KiB per lane, 1 pass and 1 lane",
                    a.argon2_memory_kib, a.argon2_iterations, a.argon2_parallelism
                ),
            ));
        }
        if !(60..=86_400).contains(&a.access_token_ttl_secs) {
            return Err(bad("auth.access_token_ttl_secs", &a.access_token_ttl_secs, "is out of range: use 60 to 86400"));
        }
        if !(1..=3650).contains(&a.api_key_max_days) {
            return Err(bad("auth.api_key_max_days", &a.api_key_max_days, "is out of range: use 1 to 3650"));
        }
        if !(1..=1000).contains(&a.sign_in_throttle_after) {
            return Err(bad("auth.sign_in_throttle_after", &a.sign_in_throttle_after, "is out of range: use 1 to 1000"));
        }
        if !(1..=a.sign_in_throttle_max_secs).contains(&a.sign_in_throttle_base_secs) || a.sign_in_throttle_max_secs > 86_400 {
            return Err(invalid(
                "auth.sign_in_throttle_base_secs",
                format!(
                    "`{}` with a max of `{}`: the base must be at least 1 s and at most the max, and the max at most 86400 (a day)",
                    a.sign_in_throttle_base_secs, a.sign_in_throttle_max_secs
                ),
            ));
        }
        if let Some(kek) = &a.key_encryption_key
            && !is_base64_32_bytes(kek)
        {
            return Err(invalid(
                "auth.key_encryption_key",
                format!("is not 32 bytes in base64 ({} characters given; `openssl rand -base64 32` makes one)", kek.trim().len()),
            ));
        }
        if let Some(url) = &a.jwks_url {
            check_scheme("auth.jwks_url", url, &["http", "https"])?;
        }
        if let Some(url) = &a.url {
            check_scheme("auth.url", url, &["http", "https"])?;
        }
        if let Some(token) = a.service_token.as_ref().filter(|t| t.len() < 32) {
            return Err(short("auth.service_token", token));
        }
        if a.api_key_cache_secs > 300 {
            return Err(bad("auth.api_key_cache_secs", &a.api_key_cache_secs, "is too long: use 0 to 300 (a revoked key works for up to this long)"));
        }
        if let Some(url) = &self.web.api_url {
            check_scheme("web.api_url", url, &["http", "https"])?;
        }
        let o = &self.orders;
        if crate::money::Currency::parse(&o.currency).is_err() {
            return Err(invalid("orders.currency", format!("`{}` is not an ISO 4217 code", o.currency)));
        }
        if !["on_authorise", "on_fulfilment"].contains(&o.capture.as_str()) {
            return Err(invalid("orders.capture", format!("`{}` is not `on_authorise` or `on_fulfilment`", o.capture)));
        }
        if o.payment_timeout_mins == 0 {
            return Err(bad("orders.payment_timeout_mins", &o.payment_timeout_mins, "is too short: use at least 1"));
        }
        check_scheme("orders.stripe_api_base", &o.stripe_api_base, &["https", "http"])?;
        if let Some(url) = &self.catalog.url {
            check_scheme("catalog.url", url, &["http", "https"])?;
        }
        match self.media.store.as_str() {
            "local" => {}
            "s3" if self.media.s3_bucket.is_none() => {
                return Err(invalid("media.s3_bucket", "is unset, and `media.store = \"s3\"` needs a bucket".into()));
            }
            "s3" => {}
            other => return Err(invalid("media.store", format!("`{other}` is not `local` or `s3`"))),
        }
        if self.media.max_upload_bytes < 1024 {
            return Err(bad("media.max_upload_bytes", &self.media.max_upload_bytes, "is too small: use at least 1024"));
        }
        if !(64 * 1024..=16 * 1024 * 1024 * 1024).contains(&self.catalog.cache_max_bytes) {
            return Err(bad("catalog.cache_max_bytes", &self.catalog.cache_max_bytes, "is out of range: use 65536 (64 KiB) to 17179869184 (16 GiB)"));
        }
        if !(64 * 1024..=16 * 1024 * 1024 * 1024).contains(&self.http.page_cache_max_bytes) {
            return Err(bad("http.page_cache_max_bytes", &self.http.page_cache_max_bytes, "is out of range: use 65536 (64 KiB) to 17179869184 (16 GiB)"));
        }
        if let Some(key) = self.http.form_key.as_ref().filter(|k| k.len() < 32) {
            return Err(short("http.form_key", key));
        }
        if let Some(token) = self.catalog.service_token.as_ref().filter(|t| t.len() < 32) {
            return Err(short("catalog.service_token", token));
        }
        if let Some(url) = &self.public_url {
            check_scheme("public_url", url, &["http", "https"])?;
        }
        let n = &self.notify;
        if let Some(url) = &n.smtp_url {
            check_scheme("notify.smtp_url", url, &["smtp", "smtps"])?;
        }
        if let Some(url) = &n.sms_url {
            check_scheme("notify.sms_url", url, &["http", "https"])?;
            if n.sms_account.is_none() || n.sms_token.is_none() || n.sms_from.is_none() {
                let missing: Vec<&str> = [("notify.sms_account", n.sms_account.is_none()), ("notify.sms_token", n.sms_token.is_none()), ("notify.sms_from", n.sms_from.is_none())]
                    .into_iter()
                    .filter_map(|(key, unset)| unset.then_some(key))
                    .collect();
                return Err(invalid("notify.sms_url", format!("is set, and an SMS provider also needs {} (unset)", missing.join(", "))));
            }
        }
        if n.max_attempts == 0 {
            return Err(bad("notify.max_attempts", &n.max_attempts, "is too few: use at least 1"));
        }
        if n.concurrency == 0 {
            return Err(bad("notify.concurrency", &n.concurrency, "is too few: use at least 1"));
        }
        if n.digest_interval_secs == 0 {
            return Err(bad("notify.digest_interval_secs", &n.digest_interval_secs, "is too short: use at least 1"));
        }
        if let Some(key) = n.signing_key.as_ref().filter(|k| k.len() < 32) {
            return Err(short("notify.signing_key", key));
        }
        if self.limits.view_dedup_secs > 7 * 86_400 {
            return Err(bad("limits.view_dedup_secs", &self.limits.view_dedup_secs, "is too long: use at most 604800 (a week)"));
        }
        if !self.redis.prefix.split(':').all(is_key_part) {
            return Err(bad("redis.prefix", &self.redis.prefix, "is not a key prefix: use letters, digits, - and _, parts separated by :"));
        }
        if !(1..=10_000).contains(&self.outbox.batch_size) {
            return Err(bad("outbox.batch_size", &self.outbox.batch_size, "is out of range: use 1 to 10000"));
        }
        if !(1..=8760).contains(&self.outbox.keep_published_hours) {
            return Err(bad("outbox.keep_published_hours", &self.outbox.keep_published_hours, "is out of range: use 1 to 8760 (a year)"));
        }
        if !(1..=86_400).contains(&self.startup.ready_timeout_secs) {
            return Err(bad("startup.ready_timeout_secs", &self.startup.ready_timeout_secs, "is out of range: use 1 to 86400 (a day)"));
        }
        let token_ok = |s: &str| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !token_ok(&self.nats.stream) {
            return Err(bad("nats.stream", &self.nats.stream, "is not a stream name: use letters, digits, - and _ only"));
        }
        if !self.nats.subject_prefix.split('.').all(token_ok) {
            return Err(bad("nats.subject_prefix", &self.nats.subject_prefix, "is not a subject prefix: use dot-separated letters, digits, - and _"));
        }
        self.check_split()
    }

    /// A process of a split shop must be told where the parts it does not
    /// run are: each refusal names the first key missing.
    fn check_split(&self) -> Result<(), ConfigError> {
        let runs = |role: &str| self.services.iter().any(|s| s == role);
        let unset = |key: &str, why: String, fix: &str| {
            let var = ENV_KEYS.iter().find(|(_, k, _)| *k == key).map(|(var, _, _)| format!(" ({var})")).unwrap_or_default();
            ConfigError::Invalid { key: key.into(), message: format!("is unset{var}, and {why}: {fix}") }
        };
        let running = |names: &[&str]| names.iter().filter(|s| runs(s)).copied().collect::<Vec<_>>().join(", ");
        let needs_catalog = running(&["orders", "search", "notify"]);
        if !runs("catalog") && !needs_catalog.is_empty() {
            let why = format!("this process runs {needs_catalog} without the catalog");
            if self.catalog.url.is_none() {
                return Err(unset("catalog.url", why, "set it to the catalog's address (`http://catalog.internal:8080`, or the balancer in front of the catalog replicas)"));
            }
            if self.catalog.service_token.is_none() {
                return Err(unset("catalog.service_token", why, "set it to the token the catalog processes have (32+ characters, the same on every process)"));
            }
        }
        let api = running(&SERVICES);
        if !runs("auth") && !api.is_empty() && self.auth.url.is_none() && self.auth.jwks_url.is_none() {
            return Err(unset(
                "auth.url",
                format!("so is auth.jwks_url, and this process runs {api} without auth, so it cannot check tokens"),
                "set auth.url to the auth service's address (`http://auth.internal:8080`), or auth.jwks_url to its /.well-known/jwks.json",
            ));
        }
        if runs(WEB) && SERVICES.iter().any(|s| !runs(s)) && self.web.api_url.is_none() {
            let missing: Vec<&str> = SERVICES.iter().filter(|s| !runs(s)).copied().collect();
            return Err(unset(
                "web.api_url",
                format!("this process serves the storefront and console without {}", missing.join(", ")),
                "set it to the API's address (the balancer in front of the services, `http://lb.internal`)",
            ));
        }
        if ROLES.iter().any(|r| !runs(r)) && self.public_url.is_none() {
            return Err(unset(
                "public_url",
                format!("this process runs only {}", self.services.join(", ")),
                "set it to the address shoppers use (`https://shop.example`), the same on every process of the shop: it is the issuer of the access tokens, so a process with another one refuses every token (and it is the base of links in mails and pages)",
            ));
        }
        Ok(())
    }
}

/// A non-empty run of letters, digits, `-` and `_` (at most 64).
fn is_key_part(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Standard base64 (with or without padding) of exactly 32 bytes.
fn is_base64_32_bytes(text: &str) -> bool {
    let t = text.trim().trim_end_matches('=');
    t.len() == 43
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// An address to listen on: `127.0.0.1:8080`, `[::1]:8080`, or a host name
/// and port (`localhost:8080`), resolved now; of a name's addresses the
/// first IPv4 one is taken (what `http://localhost` reaches everywhere).
pub fn resolve_bind(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let shape = || format!("`{text}` is not an address to listen on: use host:port, e.g. `127.0.0.1:8080` or `localhost:8080`");
    let (host, port) = text.rsplit_once(':').ok_or_else(shape)?;
    let port: u16 = port.parse().map_err(|_| shape())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)) {
        return Err(shape());
    }
    use std::net::ToSocketAddrs;
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("`{text}`: the host name `{host}` does not resolve ({e}); use an IP address or a name this machine knows"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("`{text}`: the host name `{host}` has no address"))
}

fn bind_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    resolve_bind(&text).map_err(serde::de::Error::custom)
}

fn optional_bind_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) => resolve_bind(&text).map(Some).map_err(serde::de::Error::custom),
    }
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a log filter (`log.filter`): comma-separated directives, each a
/// level (`info`) or a target with its level (`sqlx=warn`,
/// `emporium::web[request]=debug`). A word that is not a level is refused
/// rather than read as a target, so a typo cannot silence the log.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    let is_level = |s: &str| LEVELS.contains(&s.trim().to_ascii_lowercase().as_str()) || matches!(s.trim(), "0" | "1" | "2" | "3" | "4" | "5");
    let is_target = |s: &str| {
        !s.is_empty()
            && s.split("::").all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    };
    let help = "use a level (off, error, warn, info, debug, trace) or `target=level` pairs, e.g. `info,sqlx=warn`";
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = match directive.rsplit_once('=') {
            // `target[span{field=value}]` with no level of its own.
            _ if directive.ends_with(']') => (directive, None),
            Some((target, level)) if !level.contains(']') => (target, Some(level)),
            _ => (directive, None),
        };
        let target_ok = match target.split_once('[') {
            Some((path, span)) => (path.is_empty() || is_target(path)) && span.ends_with(']'),
            None => is_target(target),
        };
        let ok = match level {
            Some(level) => target_ok && is_level(level),
            None => is_level(directive) || (target.contains('[') && target_ok),
        };
        if !ok {
            return Err(format!("`{filter}` is not a log filter (`{directive}` is not understood): {help}"));
        }
    }
    Ok(())
}

fn check_scheme(key: &str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some(s) if schemes.contains(&s) => Ok(()),
        _ => Err(ConfigError::Invalid {
            key: key.into(),
            message: format!("`{}` must start with {}://", mask_url(url), schemes.join("://, ")),
        }),
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut node = table;
    for part in parts {
        let entry = node
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else { return };
        node = next;
    }
    node.insert(last.to_owned(), value);
}

/// A variable lookup over a fixed map, for tests and tools.
pub fn env_from(map: BTreeMap<String, String>) -> impl Fn(&str) -> Option<String> {
    move |k| map.get(k).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        env_from(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_load_with_nothing_set() {
        let c = load(None, false, env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert!(c.database_url("auth").starts_with("sqlite://"));
        assert!(c.database_url("auth").ends_with("auth.db"));
    }

    #[test]
    fn file_then_env_then_validation() {
        let dir = tempfile_dir();
        let path = dir.join("emporium.toml");
        std::fs::write(
            &path,
            "bind = \"0.0.0.0:9000\"\n[database]\nmax_connections = 3\nurl = \"postgres://u:pw@db/shop\"\n",
        )
        .unwrap();
        let c = load(Some(&path), true, env(&[("EMPORIUM_BIND", "127.0.0.1:7000")])).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:7000", "env wins over file");
        assert_eq!(c.database.max_connections, 3, "file wins over defaults");
        assert_eq!(c.database_url("orders"), "postgres://u:pw@db/shop");

        let c = load(
            Some(&path),
            true,
            env(&[("EMPORIUM_CATALOG_DATABASE_URL", "sqlite:///tmp/c.db")]),
        )
        .unwrap();
        assert_eq!(c.database_url("catalog"), "sqlite:///tmp/c.db", "per-service override");
        assert!(c.to_masked_toml().contains("postgres://u:****@db/shop"));
        assert!(!c.to_masked_toml().contains("pw@"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load(None, false, env(&[("EMPORIUM_BIND", "not-an-address")])).unwrap_err();
        assert!(e.to_string().contains("bind"), "{e}");
        let e = load(None, false, env(&[("EMPORIUM_DATABASE_MAX_CONNECTIONS", "ten")])).unwrap_err();
        assert!(e.to_string().contains("EMPORIUM_DATABASE_MAX_CONNECTIONS"), "{e}");
        assert!(e.to_string().contains("database.max_connections"), "{e}");
        let e = load(None, false, env(&[("EMPORIUM_DATABASE_URL", "mysql://x")])).unwrap_err();
        assert!(e.to_string().contains("database.url"), "{e}");
        let e = load(None, false, env(&[("EMPORIUM_SERVICES", "auth,shipping")])).unwrap_err();
        assert!(e.to_string().contains("services") && e.to_string().contains("shipping"), "{e}");
        let e = load(None, false, env(&[("EMPORIUM_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(e.to_string().contains("log.format"), "{e}");
        let e = load(None, false, env(&[("EMPORIUM_HTTP_TRUSTED_PROXIES", "10.0.0.0/8, 10.0.0.1/33")])).unwrap_err();
        assert!(e.to_string().contains("http.trusted_proxies") && e.to_string().contains("10.0.0.1/33"), "{e}");
        let c = load(None, false, env(&[("EMPORIUM_HTTP_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8")])).unwrap();
        assert_eq!(c.http.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.0.0/8", "fd00::/8"]);

        let dir = tempfile_dir();
        let path = dir.join("emporium.toml");
        std::fs::write(&path, "[database]\nmax_conections = 3\n").unwrap();
        let e = load(Some(&path), true, env(&[])).unwrap_err();
        assert!(e.to_string().contains("max_conections"), "unknown keys are refused: {e}");
        let e = load(Some(&dir.join("missing.toml")), true, env(&[])).unwrap_err();
        assert!(matches!(e, ConfigError::File { .. }));
    }

    #[test]
    fn host_names_are_resolved_for_listening() {
        let c = load(None, false, env(&[("EMPORIUM_BIND", "localhost:8080"), ("EMPORIUM_METRICS_BIND", "localhost:9100")])).unwrap();
        assert!(c.bind.ip().is_loopback() && c.bind.port() == 8080, "{}", c.bind);
        assert_eq!(c.metrics.bind.map(|m| m.port()), Some(9100));
        assert_eq!(resolve_bind("[::1]:80").unwrap().to_string(), "[::1]:80");
        for bad in ["localhost", "localhost:http", ":8080", "local host:80", "300.1.2.3:80x"] {
            let e = load(None, false, env(&[("EMPORIUM_BIND", bad)])).unwrap_err().to_string();
            assert!(e.contains("EMPORIUM_BIND") && e.contains("`bind`") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn log_filters_are_checked() {
        for good in ["info", "INFO", "info,sqlx=warn", "emporium::web=debug, tower_http=trace", "warn,[request]=debug", "off", "3", ""] {
            assert!(check_log_filter(good).is_ok(), "{good}");
        }
        for garbage in ["loud", "info,sqlx=lots", "info;debug", "=debug", "info,,,sq lx=warn", "!!!"] {
            let e = load(None, false, env(&[("EMPORIUM_LOG", garbage)])).unwrap_err().to_string();
            assert!(e.contains("EMPORIUM_LOG") && e.contains("log.filter") && e.contains(garbage), "{garbage}: {e}");
        }
    }

    #[test]
    fn every_refusal_names_the_value_but_never_a_secret() {
        for (var, value) in [
            ("EMPORIUM_DATABASE_MAX_CONNECTIONS", "0"),
            ("EMPORIUM_HTTP_BODY_LIMIT_BYTES", "12"),
            ("EMPORIUM_HTTP_HEADER_TIMEOUT_SECS", "9999"),
            ("EMPORIUM_AUTH_ACCESS_TOKEN_TTL_SECS", "5"),
            ("EMPORIUM_ORDERS_CURRENCY", "dollars"),
            ("EMPORIUM_ORDERS_CAPTURE", "later"),
            ("EMPORIUM_MEDIA_STORE", "ftp"),
            ("EMPORIUM_OUTBOX_BATCH_SIZE", "0"),
            ("EMPORIUM_NATS_STREAM", "my stream"),
            ("EMPORIUM_REDIS_PREFIX", "a b"),
            ("EMPORIUM_NOTIFY_CONCURRENCY", "0"),
        ] {
            let e = load(None, false, env(&[(var, value)])).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains(&format!("`{value}`")), "{var}={value}: {e}");
        }
        let e = load(None, false, env(&[("EMPORIUM_HTTP_FORM_KEY", "hunter2")])).unwrap_err().to_string();
        assert!(e.contains("http.form_key") && e.contains("7 characters") && !e.contains("hunter2"), "{e}");
        let e = load(None, false, env(&[("EMPORIUM_AUTH_KEY_ENCRYPTION_KEY", "sekrit")])).unwrap_err().to_string();
        assert!(e.contains("auth.key_encryption_key") && !e.contains("sekrit"), "{e}");
        let e = load(None, false, env(&[("EMPORIUM_SMS_URL", "https://sms.example")])).unwrap_err().to_string();
        assert!(e.contains("notify.sms_token"), "names what is missing: {e}");
    }

    #[test]
    fn values_not_shaped_like_urls_show_no_secret() {
        assert_eq!(mask_url("postgres//app:S3cret@db/x"), "postgres****");
        assert_eq!(mask_url("postgres:app:S3cret@db/x"), "postgres****");
        assert_eq!(mask_url("redis:/:S3cret@h"), "redis****");
        assert_eq!(mask_url("nats//tok3n@h"), "nats****");
        assert_eq!(mask_url("tok3n@h"), "****");
        assert_eq!(mask_url("S3cret"), "****");
        assert_eq!(mask_url(""), "");
        for (var, value) in [("EMPORIUM_DATABASE_URL", "postgres//app:S3cret@db/x"), ("EMPORIUM_REDIS_URL", "redis:app:S3cret@h"), ("EMPORIUM_SMTP_URL", "S3cret@mail")] {
            let e = load(None, false, env(&[(var, value)])).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains("****") && !e.contains("S3cret"), "{e}");
            let c = Config { database: DatabaseConfig { url: Some(value.into()), ..DatabaseConfig::default() }, ..Config::default() };
            assert!(!c.to_masked_toml().contains("S3cret"));
        }
    }

    #[test]
    fn urls_are_masked() {
        assert_eq!(mask_url("redis://:secret@h:6379"), "redis://:****@h:6379");
        assert_eq!(mask_url("nats://token@h"), "nats://****@h");
        assert_eq!(mask_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(mask_url("postgres://h/db?password=x"), "postgres://h/db?password=****");
        assert_eq!(
            mask_url("postgres://u@h/db?sslmode=require&password=x"),
            "postgres://****@h/db?sslmode=require&password=****"
        );
        assert_eq!(
            mask_url("https://sid:smspass@sms.example/send?sig=abc&mode=live#frag"),
            "https://sid:****@sms.example/send?sig=****&mode=live#****"
        );
        // An `@` in the path could as well end a password holding a `/`: more is hidden.
        assert_eq!(mask_url("https://sid:smspass@sms.example/send@x?sig=abc"), "https://sid:****@x?sig=****");
        assert_eq!(mask_url("https://sms.example/send?to=a@b.c&sig=abc"), "https://sms.example/send?to=****&sig=****");
        assert_eq!(mask_url("http://auth/.well-known/jwks.json?key=k1"), "http://auth/.well-known/jwks.json?key=****");
    }

    #[test]
    fn item_24_passwords_holding_url_delimiters_are_masked_whole() {
        for (url, masked, password) in [
            ("postgres://u:p/a?s#h@host/db", "postgres://u:****@host/db", ["p/a", "a?s", "s#h"]),
            ("smtp://u:pa@ss@host:587", "smtp://u:****@host:587", ["pa@", "@ss", "pa@ss"]),
            ("redis://:x/y@host:6379/0", "redis://:****@host:6379/0", [":x", "x/y", "y@"]),
        ] {
            let shown = mask_url(url);
            assert_eq!(shown, masked);
            for part in password {
                assert!(!shown.contains(part), "{url} shows {part}: {shown}");
            }
        }
    }

    #[test]
    fn an_incomplete_split_process_is_refused_naming_the_key() {
        let refused = |vars: &[(&str, &str)]| load(None, false, env(vars)).unwrap_err().to_string();
        let public = ("EMPORIUM_PUBLIC_URL", "https://shop.example");
        let token = ("EMPORIUM_CATALOG_SERVICE_TOKEN", "a-service-token-of-at-least-32-characters");
        let catalog = ("EMPORIUM_CATALOG_URL", "http://catalog.internal:8080");
        let auth = ("EMPORIUM_AUTH_URL", "http://auth.internal:8080");

        // Every role in one process needs none of it.
        assert!(load(None, false, env(&[])).is_ok());
        assert!(load(None, false, env(&[("EMPORIUM_SERVICES", "auth,catalog,orders,search,notify,web")])).is_ok());

        // orders, search or notify without the catalog: its address, then its token.
        for services in ["orders", "search", "notify", "auth,orders,search,notify"] {
            let e = refused(&[("EMPORIUM_SERVICES", services), public, auth]);
            assert!(e.contains("`catalog.url`") && e.contains("EMPORIUM_CATALOG_URL") && e.contains("without the catalog"), "{services}: {e}");
            let e = refused(&[("EMPORIUM_SERVICES", services), public, auth, catalog]);
            assert!(e.contains("`catalog.service_token`") && e.contains("EMPORIUM_CATALOG_SERVICE_TOKEN"), "{services}: {e}");
        }
        assert!(load(None, false, env(&[("EMPORIUM_SERVICES", "orders,search"), public, auth, catalog, token])).is_ok());

        // Any service without auth: where the token keys are, either way.
        for services in ["catalog", "orders", "catalog,orders,search,notify,web"] {
            let e = refused(&[("EMPORIUM_SERVICES", services), public, catalog, token]);
            assert!(e.contains("`auth.url`") && e.contains("auth.jwks_url") && e.contains("EMPORIUM_AUTH_URL"), "{services}: {e}");
        }
        let e = refused(&[("EMPORIUM_SERVICES", "catalog,orders,search,notify,web"), public, catalog, token]);
        assert!(e.contains("without auth"), "{e}");
        assert!(load(None, false, env(&[("EMPORIUM_SERVICES", "catalog"), public, auth])).is_ok());
        assert!(load(None, false, env(&[("EMPORIUM_SERVICES", "catalog"), public, ("EMPORIUM_AUTH_JWKS_URL", "https://auth.internal/.well-known/jwks.json")])).is_ok());

        // The pages without all five services: where the API is.
        for services in ["web", "auth,catalog,orders,search,web"] {
            let e = refused(&[("EMPORIUM_SERVICES", services), public, auth, catalog, token]);
            assert!(e.contains("`web.api_url`") && e.contains("EMPORIUM_WEB_API_URL"), "{services}: {e}");
        }
        let e = refused(&[("EMPORIUM_SERVICES", "web"), public]);
        assert!(e.contains("without auth, catalog, orders, search, notify"), "{e}");
        assert!(load(None, false, env(&[("EMPORIUM_SERVICES", "web"), public, ("EMPORIUM_WEB_API_URL", "http://lb.internal")])).is_ok());

        // Anything short of all six roles: the one public address, said why.
        for services in ["auth", "auth,catalog,orders,search,notify", "web"] {
            let e = refused(&[("EMPORIUM_SERVICES", services), auth, catalog, token, ("EMPORIUM_WEB_API_URL", "http://lb.internal")]);
            assert!(e.contains("`public_url`") && e.contains("EMPORIUM_PUBLIC_URL") && e.contains("same on every process") && e.contains("issuer"), "{services}: {e}");
        }
        // The same rules hold for a configuration made in code.
        let c = Config { services: vec!["orders".into()], public_url: Some("https://shop.example".into()), ..Config::default() };
        assert!(matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "catalog.url"));
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("emporium-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
