//! `Idempotency-Key` support (API-CONVENTIONS.md), stored in the service's
//! own database: the first response for a key is kept for 24 hours and
//! replayed for a repeat with the same body; the same key with another body
//! is a 409; concurrent requests with one key run the effect once.
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
use crate::on_db;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
const RETENTION_MS: i64 = 24 * 3600 * 1000;
/// A request holding a key longer than this is presumed dead (its process
/// crashed) and another request may take the key over.
const LOCK_MS: i64 = 60 * 1000;
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

#[derive(Clone)]
pub struct Idempotency {
    db: Db,
    scope: &'static str,
    body_limit: usize,
    wait: Duration,
}

impl Idempotency {
    /// `scope` names the operation (`orders.checkout`); keys are per scope and
    /// per caller.
    pub fn new(db: Db, scope: &'static str) -> Self {
        Self { db, scope, body_limit: 1024 * 1024, wait: Duration::from_secs(10) }
    }

    /// How long a repeat waits for the first request to finish before it is
    /// told to retry (409 `idempotency_request_in_progress`).
    pub fn wait_for_first(mut self, wait: Duration) -> Self {
        self.wait = wait;
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

/// Claims `key` for a request whose fingerprint is `hash`.
pub async fn claim(db: &Db, scope: &str, key: &str, hash: &str) -> Result<Claim, DbError> {
    for _ in 0..5 {
        let now = now_ms();
        let inserted = on_db!(db, pool => sqlx::query(
            "INSERT INTO idempotency_keys (scope, idem_key, request_hash, state, locked_until_ms, expires_at_ms) \
             VALUES ($1, $2, $3, 'running', $4, $5) ON CONFLICT (scope, idem_key) DO NOTHING")
            .bind(scope).bind(key).bind(hash).bind(now + LOCK_MS).bind(now + RETENTION_MS)
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
            on_db!(db, pool => sqlx::query(
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
            let taken = on_db!(db, pool => sqlx::query(
                "UPDATE idempotency_keys SET locked_until_ms = $1 \
                 WHERE scope = $2 AND idem_key = $3 AND state = 'running' AND locked_until_ms = $4")
                .bind(now + LOCK_MS).bind(scope).bind(key).bind(locked_until)
                .execute(pool).await.map(|r| r.rows_affected()))?;
            if taken == 1 {
                return Ok(Claim::Run);
            }
            continue;
        }
        return Ok(Claim::InProgress);
    }
    Ok(Claim::InProgress)
}

/// Stores the response of the request that ran the effect.
pub async fn complete(db: &Db, scope: &str, key: &str, response: &StoredResponse) -> Result<(), DbError> {
    let headers = serde_json::to_string(&response.headers).map_err(|e| DbError::Corrupt(e.to_string()))?;
    on_db!(db, pool => sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', response_status = $1, response_headers = $2, \
         response_body = $3 WHERE scope = $4 AND idem_key = $5")
        .bind(i32::from(response.status)).bind(headers).bind(&response.body)
        .bind(scope).bind(key).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Gives the key up after a failure on our side, so the client may retry.
pub async fn release(db: &Db, scope: &str, key: &str) -> Result<(), DbError> {
    on_db!(db, pool => sqlx::query(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND state = 'running'")
        .bind(scope).bind(key).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Deletes records past their 24 hours; returns how many.
pub async fn purge_expired(db: &Db) -> Result<u64, DbError> {
    let n = on_db!(db, pool => sqlx::query("DELETE FROM idempotency_keys WHERE expires_at_ms < $1")
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

    let deadline = tokio::time::Instant::now() + idem.wait;
    loop {
        match claim(&idem.db, &scope, &key, &hash).await.map_err(|e| ApiError::internal(&e))? {
            Claim::Run => break,
            Claim::Replay(stored) => return Ok(replay(stored)),
            Claim::Mismatch => {
                return Err(ApiError::conflict(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                ));
            }
            Claim::InProgress if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Claim::InProgress => {
                return Err(ApiError::conflict(
                    "idempotency_request_in_progress",
                    "a request with this Idempotency-Key is still being processed; retry shortly",
                ));
            }
        }
    }

    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if response.status().is_server_error() {
        if let Err(e) = release(&idem.db, &scope, &key).await {
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
    complete(&idem.db, &scope, &key, &stored).await.map_err(|e| ApiError::internal(&e))?;
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
