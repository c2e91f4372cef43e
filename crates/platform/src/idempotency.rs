//! `Idempotency-Key` support (API-CONVENTIONS.md), stored in the service's
//! own database: the first response for a key is kept for 24 hours and
//! replayed for a repeat with the same body; the same key with another body
//! is a 409; concurrent requests with one key run the effect once.
//!
//! A running request holds its key with a short lease (10 s) that it renews
//! in the background while its handler runs. A repeat that arrives
//! meanwhile waits for the answer (then replays it) or is told to retry; a
//! lease that lapsed belongs to a request that died with its process, and
//! the next request with the same key and body takes the key over within
//! seconds, whichever replica it reaches. The handler of a taken-over key
//! finds what the dead request did in its own tables: [`IdempotencyAttempt`]
//! names the attempt (caller, key and request) so it can recognise its own
//! work and answer as the first request would have.
//!
//! Wrap a route with
//! `.layer(axum::middleware::from_fn_with_state(Idempotency::new(db, "orders.checkout"), idempotent))`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{OptionalFromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kernel::ApiError;
use sha2::{Digest, Sha256};

use crate::auth::{Credential, Principal};
use crate::db::{Db, DbError, now_ms};
use crate::{on_db, on_write};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
const RETENTION_MS: i64 = 24 * 3600 * 1000;
/// How long a running request holds its key without renewing it: a lease
/// not renewed for this long belongs to a dead request, and another request
/// with the same key may take the key over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// A waiting repeat asks again after 25 ms, then ever less often, up to this.
const MAX_POLL: Duration = Duration::from_millis(250);
/// Response headers worth replaying.
const KEPT_HEADERS: [&str; 3] = ["content-type", "location", "etag"];

/// Put in a response's extensions by a handler: these top-level fields of
/// its JSON body are secrets shown once (a guest order's lookup token). The
/// stored copy leaves them out, so a replay answers without them and the
/// table never holds them.
#[derive(Debug, Clone, Copy)]
pub struct ShownOnce(pub &'static [&'static str]);

impl ShownOnce {
    fn strip(&self, body: &[u8]) -> Vec<u8> {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(mut map)) => {
                for field in self.0 {
                    map.remove(*field);
                }
                serde_json::to_vec(&map).unwrap_or_default()
            }
            // Not an object: nothing of it is kept rather than a secret.
            _ => Vec::new(),
        }
    }
}

/// Put in a request's extensions for the handler: this attempt at the
/// operation, the same for every retry by the same caller with the same key
/// and body, and different for anyone else. A handler records it with its
/// effect (hex, 32 characters) so that a retry that took over a dead
/// request's key recognises that request's work as its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyAttempt(pub String);

impl IdempotencyAttempt {
    fn of(scope: &str, key: &str, request_hash: &str) -> Self {
        let mut h = Sha256::new();
        for part in ["attempt", scope, key, request_hash] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        IdempotencyAttempt(hex::encode(&h.finalize()[..16]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone)]
pub struct Idempotency {
    db: Db,
    scope: &'static str,
    body_limit: usize,
    wait: Duration,
    lease: Duration,
}

impl Idempotency {
    /// `scope` names the operation (`orders.checkout`); keys are per scope and
    /// per caller. The records are kept in `db`'s [`Db::keys`].
    pub fn new(db: Db, scope: &'static str) -> Self {
        Self { db, scope, body_limit: 1024 * 1024, wait: Duration::from_secs(10), lease: DEFAULT_LEASE }
    }

    /// How long a repeat waits for the first request to finish before it is
    /// told to retry (409 `idempotency_request_in_progress`).
    pub fn wait_for_first(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How long a running request's hold on its key lasts unless renewed
    /// (renewed every third of it): after a crash, the key is taken over
    /// this long after the last renewal at most. At least 100 ms.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }
}

/// What the store says about a key.
#[derive(Debug)]
pub enum Claim {
    /// This request owns the key: run the effect.
    Run,
    /// The effect already ran: send this again.
    Replay(StoredResponse),
    /// The key was used with another request body.
    Mismatch,
    /// Another request with this key is still running.
    InProgress,
}

#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

type Row = (String, String, i64, i64, Option<i32>, Option<String>, Option<Vec<u8>>);

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Claims `key` for a request whose fingerprint is `hash`; `holder` names
/// the request (random, unique), which holds the key for `lease` unless it
/// renews it ([`renew`]).
pub async fn claim(db: &Db, scope: &str, key: &str, hash: &str, holder: &str, lease: Duration) -> Result<Claim, DbError> {
    let lease = lease_ms(lease);
    for _ in 0..5 {
        let now = now_ms();
        let inserted = on_write!(db, pool => sqlx::query(
            "INSERT INTO idempotency_keys (scope, idem_key, request_hash, state, locked_until_ms, expires_at_ms, lease_holder) \
             VALUES ($1, $2, $3, 'running', $4, $5, $6) ON CONFLICT (scope, idem_key) DO NOTHING")
            .bind(scope).bind(key).bind(hash).bind(now + lease).bind(now + RETENTION_MS).bind(holder)
            .execute(pool).await.map(|r| r.rows_affected()))?;
        if inserted == 1 {
            return Ok(Claim::Run);
        }
        let row: Option<Row> = on_db!(db, pool => sqlx::query_as(
            "SELECT request_hash, state, locked_until_ms, expires_at_ms, response_status, \
             response_headers, response_body FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
            .bind(scope).bind(key).fetch_optional(pool).await)?;
        let Some((stored_hash, state, locked_until, expires_at, status, headers, body)) = row else {
            continue; // expired and deleted meanwhile: try to insert again
        };
        if expires_at <= now {
            on_write!(db, pool => sqlx::query(
                "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND expires_at_ms = $3")
                .bind(scope).bind(key).bind(expires_at).execute(pool).await.map(|r| r.rows_affected()))?;
            continue;
        }
        if stored_hash != hash {
            return Ok(Claim::Mismatch);
        }
        if state == "done" {
            let headers: Vec<(String, String)> = serde_json::from_str(headers.as_deref().unwrap_or("[]"))
                .map_err(|e| DbError::Corrupt(e.to_string()))?;
            let status = status.and_then(|s| u16::try_from(s).ok()).ok_or_else(|| {
                DbError::Corrupt("idempotency record without a status".into())
            })?;
            return Ok(Claim::Replay(StoredResponse { status, headers, body: body.unwrap_or_default() }));
        }
        if locked_until < now {
            // The holder stopped renewing: it died. Take the key over, unless
            // another request did first (the lease is no longer the one read).
            let taken = on_write!(db, pool => sqlx::query(
                "UPDATE idempotency_keys SET locked_until_ms = $1, lease_holder = $2 \
                 WHERE scope = $3 AND idem_key = $4 AND state = 'running' AND locked_until_ms = $5")
                .bind(now + lease).bind(holder).bind(scope).bind(key).bind(locked_until)
                .execute(pool).await.map(|r| r.rows_affected()))?;
            if taken == 1 {
                tracing::info!(scope, "took over an idempotency key whose request stopped renewing its lease");
                return Ok(Claim::Run);
            }
            continue;
        }
        return Ok(Claim::InProgress);
    }
    Ok(Claim::InProgress)
}

/// Extends `holder`'s lease on a running key; false when it no longer holds
/// it (it lapsed and another request took the key over, or it finished).
pub async fn renew(db: &Db, scope: &str, key: &str, holder: &str, lease: Duration) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE idempotency_keys SET locked_until_ms = $1 \
         WHERE scope = $2 AND idem_key = $3 AND state = 'running' AND lease_holder = $4")
        .bind(now_ms() + lease_ms(lease)).bind(scope).bind(key).bind(holder)
        .execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Stores the response of the request that ran the effect; false when
/// `holder` had lost the key meanwhile (the request that took it over
/// stores its own answer).
pub async fn complete(db: &Db, scope: &str, key: &str, holder: &str, response: &StoredResponse) -> Result<bool, DbError> {
    let headers = serde_json::to_string(&response.headers).map_err(|e| DbError::Corrupt(e.to_string()))?;
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', response_status = $1, response_headers = $2, \
         response_body = $3 WHERE scope = $4 AND idem_key = $5 AND state = 'running' AND lease_holder = $6")
        .bind(i32::from(response.status)).bind(headers).bind(&response.body)
        .bind(scope).bind(key).bind(holder).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Gives the key up after a failure on our side, so the client may retry.
pub async fn release(db: &Db, scope: &str, key: &str, holder: &str) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND state = 'running' AND lease_holder = $3")
        .bind(scope).bind(key).bind(holder).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// How many keys are held by a running request whose lease is live: the
/// requests with an `Idempotency-Key` in flight in this service, across
/// every replica.
pub async fn in_flight(db: &Db) -> Result<i64, DbError> {
    let n: i64 = on_db!(db, pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM idempotency_keys WHERE state = 'running' AND locked_until_ms >= $1")
        .bind(now_ms()).fetch_one(pool).await)?;
    Ok(n)
}

/// Renews a running request's lease in the background until dropped (the
/// request finished, or its future was dropped; a process that dies takes
/// it along).
struct Lease(tokio::task::JoinHandle<()>);

impl Lease {
    fn start(db: Db, scope: String, key: String, holder: String, lease: Duration) -> Lease {
        Lease(tokio::spawn(async move {
            let every = lease / 3;
            loop {
                tokio::time::sleep(every).await;
                match renew(&db, &scope, &key, &holder, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(scope, "an idempotency lease lapsed and the key was taken over while its request ran");
                        return;
                    }
                    // Tried again at the next beat; the lease outlives two missed ones.
                    Err(e) => tracing::warn!(scope, error = %e, "renewing an idempotency lease failed"),
                }
            }
        }))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Deletes records past their 24 hours; returns how many.
pub async fn purge_expired(db: &Db) -> Result<u64, DbError> {
    let n = on_write!(db, pool => sqlx::query("DELETE FROM idempotency_keys WHERE expires_at_ms < $1")
        .bind(now_ms()).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n)
}

/// The middleware. Requests without the header pass straight through.
pub async fn idempotent(State(idem): State<Idempotency>, request: Request, next: Next) -> Response {
    match run(&idem, request, next).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn run(idem: &Idempotency, request: Request, next: Next) -> Result<Response, ApiError> {
    let Some(key) = request.headers().get(HEADER) else {
        return Ok(next.run(request).await);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters")
                .with_field("Idempotency-Key")
        })?
        .to_owned();
    let (mut parts, body) = request.into_parts();
    let scope = format!("{}:{}", idem.scope, caller(&mut parts).await?);
    let bytes = axum::body::to_bytes(body, idem.body_limit)
        .await
        .map_err(|_| ApiError::payload_too_large(idem.body_limit))?;
    let hash = fingerprint(parts.method.as_str(), &parts.uri.to_string(), &bytes);
    let holder = uuid::Uuid::now_v7().simple().to_string();
    let keys = idem.db.keys().await.map_err(|e| ApiError::from(&e))?.clone();

    let deadline = tokio::time::Instant::now() + idem.wait;
    let mut poll = Duration::from_millis(25);
    loop {
        match claim(&keys, &scope, &key, &hash, &holder, idem.lease).await.map_err(|e| ApiError::from(&e))? {
            Claim::Run => break,
            Claim::Replay(stored) => return Ok(replay(stored)),
            Claim::Mismatch => {
                return Err(ApiError::conflict(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                ));
            }
            Claim::InProgress if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(poll).await;
                poll = (poll * 2).min(MAX_POLL);
            }
            Claim::InProgress => {
                let mut e = ApiError::conflict(
                    "idempotency_request_in_progress",
                    "a request with this Idempotency-Key is still being processed; retry shortly",
                );
                e.retry_after_secs = Some(1);
                return Err(e);
            }
        }
    }

    parts.extensions.insert(IdempotencyAttempt::of(&scope, &key, &hash));
    // Held until the answer is stored (or the key given up): every return below.
    let _lease = Lease::start(keys.clone(), scope.clone(), key.clone(), holder.clone(), idem.lease);
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if response.status().is_server_error() {
        if let Err(e) = release(&keys, &scope, &key, &holder).await {
            tracing::error!(error = %e, "releasing an idempotency key failed");
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| ApiError::internal(&e))?;
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers: KEPT_HEADERS
            .iter()
            .filter_map(|h| Some((h.to_string(), parts.headers.get(*h)?.to_str().ok()?.to_owned())))
            .collect(),
        body: match parts.extensions.get::<ShownOnce>() {
            Some(once) => once.strip(&body),
            None => body.to_vec(),
        },
    };
    if !complete(&keys, &scope, &key, &holder, &stored).await.map_err(|e| ApiError::from(&e))? {
        tracing::warn!(scope, "an idempotent request finished after its key was taken over; its answer is not stored");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut headers = HeaderMap::new();
    for (name, value) in stored.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(n, v);
        }
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    (status, headers, stored.body).into_response()
}

/// Keys belong to a caller: two customers choosing the same key do not meet,
/// and one caller's retry meets its first try whatever credential it holds
/// now. The caller is the principal (the user across token refreshes; the
/// API key by its id), a guest by the hash of their cart secret; never the
/// client address. A credential that does not verify is refused here, as
/// the route would refuse it.
async fn caller(parts: &mut Parts) -> Result<String, ApiError> {
    if let Some(principal) = <Principal as OptionalFromRequestParts<()>>::from_request_parts(parts, &()).await? {
        return Ok(match principal.credential {
            Credential::AccessToken => format!("user:{}", principal.user_id),
            Credential::ApiKey => format!("key:{}", principal.credential_id),
        });
    }
    Ok(match parts.headers.get("x-cart-secret") {
        Some(secret) => format!("cart:{}", hex::encode(&Sha256::digest(secret.as_bytes())[..16])),
        None => "anonymous".to_owned(),
    })
}

fn fingerprint(method: &str, uri: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(uri.as_bytes());
    h.update([0]);
    h.update(body);
    hex::encode(h.finalize())
}
