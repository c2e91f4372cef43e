//! Rate limits: a port that counts hits of a key against a quota, in process
//! (GCRA, the `governor` crate) or in Redis when `redis.url` is set (so every
//! replica counts together), and the general per-client layer on the router.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{ConnectInfo, OptionalFromRequestParts, Request, State};
use axum::http::{Extensions, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use kernel::ApiError;
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::service::{Ports, ServiceContext};

pub const MINUTE: Duration = Duration::from_secs(60);
pub const HOUR: Duration = Duration::from_secs(3600);

/// Over the limit: try again in this many seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests; retry in {retry_after_secs} s")]
pub struct Limited {
    pub retry_after_secs: u64,
}

impl From<Limited> for ApiError {
    fn from(l: Limited) -> Self {
        ApiError::rate_limited(l.retry_after_secs)
    }
}

/// Counts hits. `scope` names the limit (`reset`, `ip`, …; a constant of the
/// code), `subject` what is counted (an address, a cart id); `limit` hits
/// are allowed per `per`.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    async fn hit(&self, scope: &'static str, subject: &str, limit: NonZeroU32, per: Duration) -> Result<(), Limited>;
}

/// What a service holds: the process's limiter, with limits of 0 meaning off.
#[derive(Clone)]
pub struct Limits {
    limiter: Arc<dyn RateLimiter>,
}

impl Limits {
    pub fn new(limiter: Arc<dyn RateLimiter>) -> Self {
        Self { limiter }
    }

    /// The limiter the app provides in `ctx.ports` (shared through Redis when
    /// configured); one in process of its own for a service opened alone.
    pub fn of(ctx: &ServiceContext) -> Self {
        Self::from_ports(&ctx.ports)
    }

    /// [`Limits::of`] from the ports alone.
    pub fn from_ports(ports: &Ports) -> Self {
        match ports.get::<dyn RateLimiter>() {
            Some(limiter) => Self::new(limiter),
            None => Self::new(Arc::new(InProcessLimiter::default())),
        }
    }

    /// Counts one hit of `subject`; a `limit` of 0 is no limit.
    pub async fn hit(&self, scope: &'static str, subject: &str, limit: u32, per: Duration) -> Result<(), Limited> {
        let Some(limit) = NonZeroU32::new(limit) else { return Ok(()) };
        if per.is_zero() {
            return Ok(());
        }
        let verdict = self.limiter.hit(scope, subject, limit, per).await;
        if verdict.is_err() {
            metrics::counter!("rate_limited_total", "scope" => scope).increment(1);
        }
        verdict
    }
}

/// The limiter of a process: in Redis when there is one, in process otherwise.
pub fn connect(prefix: &str, redis: Option<redis::aio::ConnectionManager>) -> Arc<dyn RateLimiter> {
    match redis {
        Some(conn) => Arc::new(RedisLimiter::new(conn, prefix)),
        None => Arc::new(InProcessLimiter::default()),
    }
}

/// A fixed-size digest of what is counted: keys stay small whatever the
/// subject, and Redis holds no email addresses.
fn digest(scope: &str, subject: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(scope.as_bytes());
    h.update([0]);
    h.update(subject.as_bytes());
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

type Keyed = governor::DefaultKeyedRateLimiter<[u8; 16]>;
/// A limit's identity: its scope and its quota (count, window).
type QuotaKey = (&'static str, u32, Duration);

/// GCRA in this process: one keyed limiter per (scope, quota). Keys whose
/// state has fully recovered are dropped once a minute, so memory follows
/// the recent clients, not every client ever seen.
#[derive(Default)]
pub struct InProcessLimiter {
    limiters: Mutex<HashMap<QuotaKey, Arc<Keyed>>>,
    last_purge: Mutex<Option<Instant>>,
}

const PURGE_EVERY: Duration = Duration::from_secs(60);

impl InProcessLimiter {
    fn limiter(&self, scope: &'static str, limit: NonZeroU32, per: Duration) -> Option<Arc<Keyed>> {
        let mut all = self.limiters.lock().ok()?;
        if let Some(l) = all.get(&(scope, limit.get(), per)) {
            return Some(l.clone());
        }
        // `limit` hits at once, then one more each per/limit: GCRA's reading of "limit per `per`".
        let period = (per / limit.get()).max(Duration::from_nanos(1));
        let quota = governor::Quota::with_period(period)?.allow_burst(limit);
        let made = Arc::new(governor::DefaultKeyedRateLimiter::<[u8; 16]>::hashmap(quota));
        all.insert((scope, limit.get(), per), made.clone());
        Some(made)
    }

    fn purge_now_and_then(&self) {
        let Ok(mut last) = self.last_purge.try_lock() else { return };
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < PURGE_EVERY => {}
            None => *last = Some(now),
            Some(_) => {
                *last = Some(now);
                let all: Vec<Arc<Keyed>> = self.limiters.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
                for l in all {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
            }
        }
    }
}

fn whole_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[async_trait]
impl RateLimiter for InProcessLimiter {
    async fn hit(&self, scope: &'static str, subject: &str, limit: NonZeroU32, per: Duration) -> Result<(), Limited> {
        self.purge_now_and_then();
        let Some(limiter) = self.limiter(scope, limit, per) else { return Ok(()) };
        let key = digest(scope, subject);
        limiter
            .check_key(&key)
            .map_err(|not_until| Limited { retry_after_secs: whole_secs(not_until.wait_time_from(limiter.clock().now())) })
    }
}

/// A fixed window per key in Redis (INCR, expiry set by the first hit, in
/// one script so the two never part), shared by every replica. If Redis
/// fails or does not answer within half a second, the check falls back to
/// this process's own limiter (and Redis is left alone for a few seconds):
/// while Redis is away each replica limits on its own, never not at all.
pub struct RedisLimiter {
    conn: redis::aio::ConnectionManager,
    namespace: String,
    fallback: InProcessLimiter,
    /// Until when Redis is skipped after a failure, so a dead Redis does not
    /// cost every request the whole timeout.
    down_until: Mutex<Option<Instant>>,
    last_warning: Mutex<Option<Instant>>,
}

const WINDOW_SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
";

const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long Redis is left alone after it failed.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(5);
/// At most one "Redis is away" warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

impl RedisLimiter {
    pub fn new(conn: redis::aio::ConnectionManager, namespace: &str) -> Self {
        Self {
            conn,
            namespace: namespace.to_owned(),
            fallback: InProcessLimiter::default(),
            down_until: Mutex::new(None),
            last_warning: Mutex::new(None),
        }
    }

    fn key(&self, scope: &str, subject: &str, limit: NonZeroU32, window_ms: u64) -> String {
        format!("{}:limit:{scope}:{}:{window_ms}:{}", self.namespace, limit, hex::encode(digest(scope, subject)))
    }

    fn is_down(&self) -> bool {
        self.down_until.lock().ok().and_then(|d| *d).is_some_and(|until| Instant::now() < until)
    }

    /// Redis failed: skip it for a while, and say so now and then.
    fn went_down(&self, scope: &'static str, cause: &str) {
        let now = Instant::now();
        if let Ok(mut down) = self.down_until.lock() {
            *down = Some(now + REDIS_RETRY_AFTER);
        }
        let Ok(mut last) = self.last_warning.lock() else { return };
        if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(cause, scope, "rate limits counted in this process only: redis is not answering");
        }
    }

    /// One script against Redis: `None` when Redis failed or timed out.
    async fn run(&self, scope: &'static str, script: &str, key: &str, window_ms: u64) -> Option<(u64, i64)> {
        if self.is_down() {
            return None;
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(1).arg(key).arg(window_ms);
        match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<(u64, i64)>(&mut conn)).await {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(e)) => {
                self.went_down(scope, &e.to_string());
                None
            }
            Err(_) => {
                self.went_down(scope, "timed out");
                None
            }
        }
    }
}

fn window_ms(per: Duration) -> u64 {
    u64::try_from(per.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn over_window(count: u64, ttl_ms: i64, limit: NonZeroU32, window_ms: u64) -> Result<(), Limited> {
    if count > u64::from(limit.get()) {
        let ttl_ms = u64::try_from(ttl_ms).unwrap_or(window_ms);
        return Err(Limited { retry_after_secs: ttl_ms.div_ceil(1000).max(1) });
    }
    Ok(())
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn hit(&self, scope: &'static str, subject: &str, limit: NonZeroU32, per: Duration) -> Result<(), Limited> {
        let window_ms = window_ms(per);
        let key = self.key(scope, subject, limit, window_ms);
        match self.run(scope, WINDOW_SCRIPT, &key, window_ms).await {
            Some((count, ttl_ms)) => over_window(count, ttl_ms, limit, window_ms),
            None => self.fallback.hit(scope, subject, limit, per).await,
        }
    }
}

/// The client's address, as [`http::client_ip`](crate::http::client_ip)
/// found it (trusted proxies and all) for the public router ([`general`]) or
/// the internal one the pages call ([`find_client`]); else the connection's
/// peer. `None` for a request made inside this process without a browser's
/// address, or by a test.
pub fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    match extensions.get::<ClientAddr>() {
        Some(ClientAddr(ip)) => *ip,
        None => extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_canonical()),
    }
}

/// What a per-client count is keyed by: [`peer_ip`] reduced by
/// [`kernel::net::client_prefix`] (an IPv6 client is its /64, so one
/// subscriber's 2^64 addresses count once).
pub fn client_key(extensions: &Extensions) -> Option<String> {
    peer_ip(extensions).map(|ip| kernel::net::client_prefix(ip).to_string())
}

/// The client's address, found once per request by [`general`] or [`find_client`].
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

/// The visitor a per-visitor count uses: the signed-in user, else the
/// client (its /64 for IPv6), else one shared `unknown`.
pub fn visitor(principal: Option<&Principal>, extensions: &Extensions) -> String {
    match (principal, client_key(extensions)) {
        (Some(p), _) => format!("user:{}", p.user_id),
        (None, Some(client)) => format!("ip:{client}"),
        (None, None) => "unknown".to_owned(),
    }
}

/// For the internal router (the storefront's calls, which carry the
/// browser's connection and its `X-Forwarded-For`): finds the client as
/// [`general`] does, without limiting, so per-client counts of the routes
/// (carts, sign-ups) count the browser, not the proxy in front of the shop.
pub async fn find_client(State(config): State<Arc<kernel::config::Config>>, mut request: Request, next: Next) -> Response {
    let client = crate::http::request_client_ip(&config, request.extensions(), request.headers());
    request.extensions_mut().insert(ClientAddr(client));
    next.run(request).await
}

/// The general limit: requests per client IP per minute for anonymous
/// callers, per user for signed-in ones.
#[derive(Clone)]
pub struct GeneralLimit {
    pub config: Arc<kernel::config::Config>,
    pub limits: Limits,
    pub per_ip_per_minute: u32,
    pub per_principal_per_minute: u32,
}

/// Routes that probes and scrapers call on a schedule.
const UNLIMITED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// A call of another process of the shop: an `/internal/` route with one of
/// the shop's service tokens (`catalog.service_token`, `auth.service_token`).
/// Those calls are the shop's own traffic (every reservation of a sale comes
/// from an orders replica's address), so they are not counted as that
/// address's requests. A wrong token is counted like any other request.
fn from_the_shop(config: &kernel::config::Config, request: &Request) -> bool {
    if !request.uri().path().starts_with("/internal/") {
        return false;
    }
    let Some(presented) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    [config.catalog.service_token.as_deref(), config.auth.service_token.as_deref()]
        .into_iter()
        .flatten()
        .any(|token| crate::auth::constant_time_eq(presented.as_bytes(), token.as_bytes()))
}

/// The middleware of [`GeneralLimit`]: 429 with `Retry-After` when over.
pub async fn general(State(g): State<GeneralLimit>, request: Request, next: Next) -> Response {
    if UNLIMITED_PATHS.contains(&request.uri().path()) || from_the_shop(&g.config, &request) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let principal = if parts.headers.contains_key(header::AUTHORIZATION) {
        // A credential that does not verify counts against the address; the route answers 401.
        <Principal as OptionalFromRequestParts<()>>::from_request_parts(&mut parts, &()).await.ok().flatten()
    } else {
        None
    };
    let client = crate::http::request_client_ip(&g.config, &parts.extensions, &parts.headers);
    parts.extensions.insert(ClientAddr(client));
    let verdict = match &principal {
        Some(p) => g.limits.hit("principal", &p.user_id.to_string(), g.per_principal_per_minute, MINUTE).await,
        None => {
            let ip = client.map_or_else(|| "unknown".to_owned(), |ip| kernel::net::client_prefix(ip).to_string());
            g.limits.hit("ip", &ip, g.per_ip_per_minute, MINUTE).await
        }
    };
    match verdict {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(limited) => ApiError::from(limited).into_response(),
    }
}

/// The same promises from every adapter.
#[cfg(test)]
macro_rules! limiter_contract_tests {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            async fn limiter() -> Option<Limits> {
                let make = $make;
                make().await.map(Limits::new)
            }

            #[tokio::test]
            async fn allows_the_limit_then_refuses_with_a_wait() {
                let Some(l) = limiter().await else { return };
                for _ in 0..3 {
                    assert_eq!(l.hit("test", "ada@example.com", 3, HOUR).await, Ok(()));
                }
                let refused = l.hit("test", "ada@example.com", 3, HOUR).await.unwrap_err();
                assert!((1..=3600).contains(&refused.retry_after_secs), "{refused:?}");
                assert_eq!(l.hit("test", "bob@example.com", 3, HOUR).await, Ok(()), "another subject counts apart");
                assert_eq!(l.hit("other", "ada@example.com", 3, HOUR).await, Ok(()), "another scope counts apart");
            }

            #[tokio::test]
            async fn zero_is_no_limit() {
                let Some(l) = limiter().await else { return };
                for _ in 0..50 {
                    assert_eq!(l.hit("test", "x", 0, MINUTE).await, Ok(()));
                }
            }

            #[tokio::test]
            async fn one_per_window_counts_once() {
                let Some(l) = limiter().await else { return };
                assert_eq!(l.hit("view", "v:p", 1, MINUTE).await, Ok(()));
                for _ in 0..10 {
                    assert!(l.hit("view", "v:p", 1, MINUTE).await.is_err());
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    limiter_contract_tests!(in_process, || async { Some(Arc::new(InProcessLimiter::default()) as Arc<dyn RateLimiter>) });
    limiter_contract_tests!(in_redis, || async {
        let Some(url) = crate::testing::redis_url() else {
            eprintln!("EMPORIUM_TEST_REDIS_URL unset: the Redis limiter is checked in the run with Redis");
            return None;
        };
        let conn = redis::aio::ConnectionManager::new(redis::Client::open(url).unwrap()).await.unwrap();
        Some(Arc::new(RedisLimiter::new(conn, &crate::testing::unique("t"))) as Arc<dyn RateLimiter>)
    });

    #[tokio::test]
    async fn forgotten_keys_are_purged() {
        let l = InProcessLimiter::default();
        let one = NonZeroU32::MIN;
        for i in 0..100 {
            l.hit("t", &i.to_string(), one, Duration::from_millis(1)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        *l.last_purge.lock().unwrap() = Some(Instant::now() - PURGE_EVERY * 2);
        l.hit("t", "last", one, Duration::from_millis(1)).await.unwrap();
        let left: usize = l.limiters.lock().unwrap().values().map(|k| k.len()).sum();
        assert!(left <= 1, "{left} keys kept");
    }
}

#[cfg(test)]
mod replicas {
    use super::*;

    /// Two replicas (two limiters on one Redis, one namespace) count together.
    #[tokio::test]
    async fn replicas_share_their_counts_through_redis() {
        let Some(url) = crate::testing::redis_url() else { return };
        let namespace = crate::testing::unique("t");
        let connect = || async { redis::aio::ConnectionManager::new(redis::Client::open(url.as_str()).unwrap()).await.unwrap() };
        let a = Limits::new(Arc::new(RedisLimiter::new(connect().await, &namespace)));
        let b = Limits::new(Arc::new(RedisLimiter::new(connect().await, &namespace)));
        assert_eq!(a.hit("reset", "ada@example.com", 2, HOUR).await, Ok(()));
        assert_eq!(b.hit("reset", "ada@example.com", 2, HOUR).await, Ok(()));
        assert!(a.hit("reset", "ada@example.com", 2, HOUR).await.is_err());
        assert!(b.hit("reset", "ada@example.com", 2, HOUR).await.is_err());
    }
}
