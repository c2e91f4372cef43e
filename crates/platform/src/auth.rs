//! Who is calling: access tokens (EdDSA JWTs issued by the auth service) are
//! verified here, locally, by every service; the extractors turn a request
//! into a [`Principal`] and check permissions in one place.
//!
//! Only `EdDSA` is accepted: `alg: none`, HMAC (the public key used as a
//! shared secret) and anything else are refused before a key is looked up.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kernel::ApiError;
use kernel::auth::{Claims, Permission, Role};
use kernel::id::UserId;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use serde::Deserialize;
use tokio::sync::RwLock;

use crate::service::BoxError;

/// Accepted clock difference between issuer and verifier.
pub const LEEWAY_SECS: i64 = 30;
/// How long fetched keys are trusted before they are fetched again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// The least time between two fetches forced by an unknown `kid`, so random
/// key ids cannot make every request fetch keys.
const FORCED_REFRESH_GAP: Duration = Duration::from_secs(1);

/// A published verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    /// The raw 32-byte Ed25519 public key.
    pub ed25519: Vec<u8>,
}

/// Where the verifier gets the published keys: the auth service in process,
/// or its JWKS document over HTTP in the scaled-out shape.
#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    async fn public_keys(&self) -> Result<Vec<PublicKey>, BoxError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("tokens signed with `{0}` are not accepted")]
    UnsupportedAlgorithm(String),
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by someone else")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("verification keys are unavailable: {0}")]
    KeysUnavailable(String),
    #[error("the token was revoked (signed out, password or roles changed); refresh or sign in again")]
    Revoked,
}

impl From<&TokenError> for ApiError {
    fn from(e: &TokenError) -> Self {
        match e {
            TokenError::Expired => ApiError::unauthenticated("token_expired", e.to_string()),
            TokenError::Revoked => ApiError::unauthenticated("token_revoked", e.to_string()),
            TokenError::Malformed
            | TokenError::UnsupportedAlgorithm(_)
            | TokenError::UnknownKey
            | TokenError::BadSignature
            | TokenError::NotYetValid
            | TokenError::WrongIssuer
            | TokenError::WrongAudience => ApiError::unauthenticated("invalid_token", e.to_string()),
            TokenError::KeysUnavailable(cause) => ApiError::unavailable("the token keys", &format!("verifying a token: {cause}"), 5),
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

struct KeyCache {
    fetched: Option<Instant>,
    keys: HashMap<String, Vec<u8>>,
}

/// The lowest token generation each user's access tokens must carry, for
/// users whose tokens were revoked (signed out, password or roles changed,
/// disabled). In a process with the auth service, auth raises it directly
/// when it revokes; every process also learns it from the
/// `user.tokens_revoked` event ([`RevocationListener`]). A process that does
/// not run auth starts empty: it knows what the bus replays to it (the last
/// access-token lifetime on JetStream; nothing on the in-process bus, where
/// auth is always in the same process).
#[derive(Default)]
pub struct Revocations {
    minimum: std::sync::RwLock<HashMap<String, i64>>,
}

/// The event auth publishes when it revokes a user's access tokens.
pub const TOKENS_REVOKED: &str = "user.tokens_revoked";

/// The payload of [`TOKENS_REVOKED`].
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct TokensRevoked {
    pub user_id: UserId,
    /// Tokens of a lower generation are refused.
    pub generation: i64,
}

impl Revocations {
    /// Refuses `user`'s tokens below `generation` from now on (never lowers).
    pub fn raise(&self, user: &str, generation: i64) {
        if let Ok(mut map) = self.minimum.write() {
            let entry = map.entry(user.to_owned()).or_insert(generation);
            *entry = (*entry).max(generation);
        }
    }

    /// The lowest generation `user`'s tokens must carry (0: no revocation known).
    pub fn minimum(&self, user: &str) -> i64 {
        self.minimum.read().ok().and_then(|m| m.get(user).copied()).unwrap_or(0)
    }
}

/// Feeds [`Revocations`] from the bus. Every process needs every such event,
/// so it subscribes under a name of its own, not as one replica of a shared
/// durable consumer.
pub struct RevocationListener {
    revocations: Arc<Revocations>,
    consumer: String,
    replay: Duration,
}

impl RevocationListener {
    /// `replay`: how far back a new subscription starts (the access-token
    /// lifetime and leeway: older revocations concern only expired tokens).
    pub fn new(revocations: Arc<Revocations>, replay: Duration) -> Self {
        let consumer = format!("tokens_revoked_{}", uuid::Uuid::now_v7().simple());
        Self { revocations, consumer, replay }
    }
}

#[async_trait]
impl crate::bus::EventHandler for RevocationListener {
    fn consumer(&self) -> &str {
        &self.consumer
    }

    fn interested_in(&self, event_type: &str) -> bool {
        event_type == TOKENS_REVOKED
    }

    fn per_process(&self) -> Option<crate::bus::PerProcess> {
        Some(crate::bus::PerProcess { replay: self.replay, event_type: TOKENS_REVOKED })
    }

    async fn handle(&self, event: &kernel::Envelope) -> Result<(), crate::bus::HandlerError> {
        let revoked: TokensRevoked = serde_json::from_value(event.data.clone())?;
        self.revocations.raise(&revoked.user_id.to_string(), revoked.generation);
        Ok(())
    }
}

/// How many verified tokens are remembered; past it the memory starts over.
const VERIFIED_CAPACITY: usize = 10_000;

/// Verifies access tokens against the published keys.
pub struct Verifier {
    source: Option<Arc<dyn KeySource>>,
    issuer: String,
    audience: String,
    cache: RwLock<KeyCache>,
    /// Tokens already verified (by SHA-256), with their claims: a client
    /// sends the same token for its whole life, and the signature check is
    /// the expensive part. Lifetime checks still run on every request.
    verified: std::sync::Mutex<HashMap<[u8; 32], Claims>>,
    /// Checked on every request, after the cache: a remembered token is
    /// refused as soon as its user's tokens are revoked.
    revocations: Arc<Revocations>,
}

impl Verifier {
    pub fn new(source: Option<Arc<dyn KeySource>>, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            source,
            issuer: issuer.into(),
            audience: audience.into(),
            cache: RwLock::new(KeyCache { fetched: None, keys: HashMap::new() }),
            verified: std::sync::Mutex::new(HashMap::new()),
            revocations: Arc::new(Revocations::default()),
        }
    }

    /// Checks tokens against `revocations` (shared with the auth service
    /// and the bus listener of this process).
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = revocations;
        self
    }

    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Checks signature, algorithm, key, issuer, audience and lifetime.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, time::OffsetDateTime::now_utc().unix_timestamp()).await
    }

    pub async fn verify_at(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let known = self.verified.lock().ok().and_then(|m| m.get(&digest).cloned());
        let claims = match known {
            Some(claims) => claims,
            None => {
                let claims = self.verify_signed(token).await?;
                if let Ok(mut m) = self.verified.lock() {
                    if m.len() >= VERIFIED_CAPACITY {
                        m.clear();
                    }
                    m.insert(digest, claims.clone());
                }
                claims
            }
        };
        if claims.exp + LEEWAY_SECS <= now {
            return Err(TokenError::Expired);
        }
        if claims.iat - LEEWAY_SECS > now {
            return Err(TokenError::NotYetValid);
        }
        if claims.generation < self.revocations.minimum(&claims.sub) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    /// Everything but the lifetime: signature, algorithm, key, issuer, audience.
    async fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let header: Header = decode_json(h)?;
        if header.alg != "EdDSA" {
            return Err(TokenError::UnsupportedAlgorithm(header.alg));
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed); // no extensions are understood
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)?;
        let key = self.key(&kid).await?;
        let signed = &token[..h.len() + 1 + p.len()];
        UnparsedPublicKey::new(&ED25519, &key)
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = decode_json(p)?;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if !claims.aud.contains(&self.audience) {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }

    async fn key(&self, kid: &str) -> Result<Vec<u8>, TokenError> {
        {
            let cache = self.cache.read().await;
            let fresh = cache.fetched.is_some_and(|t| t.elapsed() < KEY_CACHE_TTL);
            if let Some(key) = cache.keys.get(kid).filter(|_| fresh) {
                return Ok(key.clone());
            }
            let recently = cache.fetched.is_some_and(|t| t.elapsed() < FORCED_REFRESH_GAP);
            if recently {
                return cache.keys.get(kid).cloned().ok_or(TokenError::UnknownKey);
            }
        }
        let source = self.source.as_ref().ok_or(TokenError::UnknownKey)?;
        let mut cache = self.cache.write().await;
        // Another request may have refreshed while this one waited.
        if cache.fetched.is_none_or(|t| t.elapsed() >= FORCED_REFRESH_GAP) {
            let keys = source.public_keys().await.map_err(|e| TokenError::KeysUnavailable(e.to_string()))?;
            cache.keys = keys.into_iter().map(|k| (k.kid, k.ed25519)).collect();
            cache.fetched = Some(Instant::now());
        }
        cache.keys.get(kid).cloned().ok_or(TokenError::UnknownKey)
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Signs `claims` as an EdDSA JWT with `kid` in its header (for the auth service).
pub fn sign(claims: &Claims, kid: &str, key: &Ed25519KeyPair) -> Result<String, serde_json::Error> {
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
    let signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
    Ok(token)
}

/// The most an answer of the auth service (a JWKS document, a resolved API
/// key) may weigh.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A client for calls to the auth service (`http` or `https`): short
/// timeouts, no redirects followed. Should one not be made, each call says why.
fn auth_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {}", describe(e)))
}

/// An answer's body, refused past `max` bytes.
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, BoxError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {max} bytes").into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error with its causes (`connection refused`), without the
/// address it was sent to.
fn describe(e: reqwest::Error) -> String {
    kernel::error::causes(&e.without_url())
}

/// Where a process without the auth service fetches the token keys:
/// `auth.jwks_url`, else the JWKS document under `auth.url`.
pub fn jwks_url(config: &kernel::config::AuthConfig) -> Option<String> {
    config
        .jwks_url
        .clone()
        .or_else(|| config.url.as_ref().map(|url| format!("{}/.well-known/jwks.json", url.trim_end_matches('/'))))
}

/// Fetches the published keys from the auth service's JWKS document (over
/// `http` or `https`), for processes that do not run auth themselves (the
/// scaled-out shape).
pub struct HttpKeySource {
    client: Result<reqwest::Client, String>,
    url: String,
}

impl HttpKeySource {
    pub fn new(url: impl Into<String>) -> Self {
        Self { client: auth_client(), url: url.into() }
    }
}

#[async_trait]
impl KeySource for HttpKeySource {
    async fn public_keys(&self) -> Result<Vec<PublicKey>, BoxError> {
        let response = self
            .client
            .as_ref()
            .map_err(|e| e.clone())?
            .get(&self.url)
            .header(axum::http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(describe)?;
        if !response.status().is_success() {
            return Err(format!("JWKS answered {}", response.status()).into());
        }
        parse_jwks(&read_capped(response, MAX_ANSWER_BYTES).await?)
    }
}

/// The Ed25519 keys of a JWKS document; other key types are skipped.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<PublicKey>, BoxError> {
    #[derive(Deserialize)]
    struct Jwks {
        keys: Vec<Jwk>,
    }
    #[derive(Deserialize)]
    struct Jwk {
        kty: String,
        crv: Option<String>,
        kid: Option<String>,
        x: Option<String>,
    }
    let doc: Jwks = serde_json::from_slice(body)?;
    Ok(doc
        .keys
        .into_iter()
        .filter(|k| k.kty == "OKP" && k.crv.as_deref() == Some("Ed25519"))
        .filter_map(|k| {
            let ed25519 = URL_SAFE_NO_PAD.decode(k.x?).ok().filter(|b| b.len() == 32)?;
            Some(PublicKey { kid: k.kid?, ed25519 })
        })
        .collect())
}

/// Compares secrets without stopping at the first difference, so the time
/// taken says nothing about how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    AccessToken,
    ApiKey,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: UserId,
    pub roles: Vec<Role>,
    pub permissions: Vec<Permission>,
    /// The token's `jti`, or the API key's id.
    pub credential_id: String,
    pub credential: Credential,
    pub email_verified: bool,
}

impl Principal {
    /// For shops that require a verified email (before checkout, say).
    pub fn require_verified_email(&self, required: bool) -> Result<(), ApiError> {
        if required && !self.email_verified && self.credential == Credential::AccessToken {
            return Err(ApiError::forbidden(
                "email_not_verified",
                "verify your email address first (then refresh your token)",
            ));
        }
        Ok(())
    }

    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    pub fn is_staff(&self) -> bool {
        self.roles.iter().any(|r| r.is_staff())
    }

    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden("missing_permission", format!("this needs the `{permission}` permission")))
        }
    }
}

/// Resolves `sk_…` API keys to principals: the auth service in process, or
/// [`HttpApiKeys`] in a process without it. An error that is
/// [`AuthUnavailable`] answers 503 with `Retry-After`.
#[async_trait]
pub trait ApiKeyResolver: Send + Sync + 'static {
    async fn resolve(&self, secret: &str) -> Result<Option<Principal>, BoxError>;
}

/// The longest API key looked up; a longer one is refused unasked.
pub const API_KEY_MAX_LEN: usize = 128;

/// Whether `key` can be an API key at all (`sk_` and URL-safe characters,
/// at most [`API_KEY_MAX_LEN`]): others are refused without a look-up.
pub fn is_api_key_shaped(key: &str) -> bool {
    key.len() <= API_KEY_MAX_LEN
        && key.strip_prefix("sk_").is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
}

/// The auth service could not say whether an API key is good (unreachable,
/// failing, or refusing this process's service token): 503, never 401.
#[derive(Debug, thiserror::Error)]
#[error("the auth service cannot check API keys now: {0}")]
pub struct AuthUnavailable(pub String);

/// How long a client is asked to wait when the auth service is unavailable.
pub const AUTH_RETRY_AFTER_SECS: u64 = 5;


/// What auth's `POST /internal/v1/api-keys/resolve` answers for an active
/// key: the principal the key stands for, as [`ApiKeyResolver`] gives it.
#[derive(Debug, Clone, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResolvedApiKey {
    /// The key's creator (`usr_…`), on whose behalf it acts.
    pub user_id: String,
    pub roles: Vec<Role>,
    /// The key's permissions that its creator still holds.
    pub permissions: Vec<Permission>,
    /// The key's id (`key_…`).
    pub key_id: String,
    pub email_verified: bool,
}

impl From<&Principal> for ResolvedApiKey {
    fn from(p: &Principal) -> Self {
        ResolvedApiKey {
            user_id: p.user_id.to_string(),
            roles: p.roles.clone(),
            permissions: p.permissions.clone(),
            key_id: p.credential_id.clone(),
            email_verified: p.email_verified,
        }
    }
}

/// Asked of auth's internal route, the body [`ResolvedApiKey`] answers.
#[derive(Debug, serde::Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveApiKey {
    /// The API key (`sk_…`), at most [`API_KEY_MAX_LEN`] characters.
    pub key: String,
}

/// The error code auth's internal route answers (404) for a key that is
/// unknown, revoked or expired, or whose creator is disabled.
pub const API_KEY_INACTIVE: &str = "api_key_inactive";

/// How many answers [`HttpApiKeys`] keeps, of found keys and of refused
/// ones each (so refused guesses cannot push out good keys).
const API_KEY_CACHE_CAPACITY: usize = 10_000;

/// One remembered answer about an API key.
struct KeyAnswers<T> {
    entries: std::sync::Mutex<HashMap<[u8; 32], (Instant, T)>>,
}

impl<T: Clone> KeyAnswers<T> {
    fn new() -> Self {
        Self { entries: std::sync::Mutex::new(HashMap::new()) }
    }

    fn get(&self, digest: &[u8; 32], ttl: Duration) -> Option<T> {
        let entries = self.entries.lock().ok()?;
        entries.get(digest).filter(|(at, _)| at.elapsed() < ttl).map(|(_, answer)| answer.clone())
    }

    fn put(&self, digest: [u8; 32], answer: T, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= API_KEY_CACHE_CAPACITY && !entries.contains_key(&digest) {
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= API_KEY_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(digest, (Instant::now(), answer));
    }

    fn remove(&self, digest: &[u8; 32]) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(digest);
        }
    }
}

/// API keys resolved by the auth service over HTTP (its internal route,
/// with the service token), for a process without auth. Each answer, found
/// or refused, is kept for `ttl` under the key's SHA-256 (never the key),
/// so a revoked key or a changed role takes effect within `ttl`.
pub struct HttpApiKeys {
    client: Result<reqwest::Client, String>,
    endpoint: String,
    token: String,
    ttl: Duration,
    found: KeyAnswers<Principal>,
    refused: KeyAnswers<()>,
}

impl HttpApiKeys {
    /// `auth_url`: where auth answers (`auth.url`); `token`: `auth.service_token`.
    pub fn new(auth_url: &str, token: &str, ttl: Duration) -> Self {
        Self {
            client: auth_client(),
            endpoint: format!("{}/internal/v1/api-keys/resolve", auth_url.trim_end_matches('/')),
            token: token.to_owned(),
            ttl,
            found: KeyAnswers::new(),
            refused: KeyAnswers::new(),
        }
    }

    /// Asks auth about a key no one holds (`emporium doctor`): `Ok` when
    /// auth answers and takes the service token, else what went wrong.
    pub async fn probe(&self) -> Result<(), String> {
        let nobodys = format!("sk_probe{}", uuid::Uuid::now_v7().simple());
        match self.ask(&nobodys).await {
            Ok(_) => Ok(()),
            Err(AuthUnavailable(cause)) => Err(cause),
        }
    }

    /// Asks auth; `Ok(None)` for a key it says is not active.
    async fn ask(&self, secret: &str) -> Result<Option<Principal>, AuthUnavailable> {
        let body = serde_json::to_vec(&ResolveApiKey { key: secret.to_owned() }).map_err(|e| AuthUnavailable(e.to_string()))?;
        let response = self
            .client
            .as_ref()
            .map_err(|e| AuthUnavailable(e.clone()))?
            .post(&self.endpoint)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| AuthUnavailable(describe(e)))?;
        let status = response.status().as_u16();
        let body = read_capped(response, MAX_ANSWER_BYTES).await.map_err(|e| AuthUnavailable(e.to_string()))?;
        let code = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        match (status, code.as_deref()) {
            (200, _) => {
                let found: ResolvedApiKey = serde_json::from_slice(&body).map_err(|e| AuthUnavailable(format!("auth's answer: {e}")))?;
                let user_id = UserId::parse(&found.user_id).map_err(|_| AuthUnavailable("auth's answer names no user".into()))?;
                Ok(Some(Principal {
                    user_id,
                    roles: found.roles,
                    permissions: found.permissions,
                    credential_id: found.key_id,
                    credential: Credential::ApiKey,
                    email_verified: found.email_verified,
                }))
            }
            (404, Some(API_KEY_INACTIVE)) | (422, _) => Ok(None),
            (401, _) => Err(AuthUnavailable("auth refused auth.service_token: give every process the same one".into())),
            (404, _) => Err(AuthUnavailable(
                "auth has no such route: auth.url is not the auth process, or that process has no auth.service_token".into(),
            )),
            (status, code) => Err(AuthUnavailable(format!("auth answered {status} {}", code.unwrap_or_default()))),
        }
    }
}

#[async_trait]
impl ApiKeyResolver for HttpApiKeys {
    async fn resolve(&self, secret: &str) -> Result<Option<Principal>, BoxError> {
        if !is_api_key_shaped(secret) {
            return Ok(None);
        }
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
        if let Some(principal) = self.found.get(&digest, self.ttl) {
            return Ok(Some(principal));
        }
        if self.refused.get(&digest, self.ttl).is_some() {
            return Ok(None);
        }
        match self.ask(secret).await? {
            Some(principal) => {
                self.refused.remove(&digest);
                self.found.put(digest, principal.clone(), self.ttl);
                Ok(Some(principal))
            }
            None => {
                self.found.remove(&digest);
                self.refused.put(digest, (), self.ttl);
                Ok(None)
            }
        }
    }
}

/// The state of routes only other processes of the shop call
/// (`/internal/v1/…`): the service token they must present.
pub trait ServiceTokenGuarded {
    /// `None`: the routes are closed (answered as if absent).
    fn service_token(&self) -> Option<&str>;
}

/// A caller presenting the service token (`Authorization: Bearer <token>`,
/// compared in constant time): 404 `route_not_found` while no token is
/// configured, 401 `invalid_service_token` for any other credential.
pub struct Service;

impl<S: ServiceTokenGuarded + Send + Sync> FromRequestParts<S> for Service {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(expected) = state.service_token() else {
            return Err(ApiError::not_found("route_not_found", "no such route"));
        };
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
            Ok(Service)
        } else {
            Err(ApiError::unauthenticated("invalid_service_token", "this needs the service token"))
        }
    }
}

/// What the extractors need, put in the request extensions by the app.
#[derive(Clone)]
pub struct AuthLayer {
    pub verifier: Arc<Verifier>,
    pub api_keys: Option<Arc<dyn ApiKeyResolver>>,
}

/// The caller a request was already found to be (or why not): the general
/// rate limit, the idempotency store and the handler each ask, and an API
/// key costs a database read or a call to auth, so the answer is kept with
/// the request.
#[derive(Clone)]
struct Authenticated(Result<Option<Principal>, ApiError>);

async fn authenticate(parts: &mut Parts) -> Result<Option<Principal>, ApiError> {
    if let Some(Authenticated(known)) = parts.extensions.get::<Authenticated>() {
        return known.clone();
    }
    let found = resolve(parts).await;
    parts.extensions.insert(Authenticated(found.clone()));
    found
}

async fn resolve(parts: &Parts) -> Result<Option<Principal>, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else { return Ok(None) };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthenticated("invalid_token", "the Authorization header is not readable"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthenticated("invalid_token", "use `Authorization: Bearer <token>`"))?;
    let layer = parts
        .extensions
        .get::<AuthLayer>()
        .ok_or_else(|| ApiError::internal(&"authentication is not wired into this router"))?;
    if token.starts_with("sk_") {
        let resolver = layer
            .api_keys
            .as_ref()
            .ok_or_else(|| ApiError::unauthenticated("invalid_api_key", "API keys are not accepted here"))?;
        return match resolver.resolve(token).await {
            Ok(Some(principal)) => Ok(Some(principal)),
            Ok(None) => Err(ApiError::unauthenticated("invalid_api_key", "this API key is unknown, revoked or expired")),
            Err(e) if e.is::<AuthUnavailable>() => Err(ApiError::unavailable("the auth service", &e, AUTH_RETRY_AFTER_SECS)),
            Err(e) => Err(ApiError::internal(&e)),
        };
    }
    let claims = layer.verifier.verify(token).await.map_err(|e| ApiError::from(&e))?;
    let user_id = UserId::parse(&claims.sub).map_err(|_| ApiError::unauthenticated("invalid_token", "bad subject"))?;
    Ok(Some(Principal {
        user_id,
        roles: claims.roles,
        permissions: claims.permissions,
        credential_id: claims.jti,
        credential: Credential::AccessToken,
        email_verified: claims.email_verified,
    }))
}

/// A signed-in caller is required: 401 otherwise.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("missing_token", "sign in: this needs `Authorization: Bearer <token>`"))
    }
}

/// Anonymous callers are welcome; a token that is present must still be valid.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        authenticate(parts).await
    }
}

/// A permission, as a type, for [`RequirePermission`].
pub trait NeedsPermission: Send + Sync + 'static {
    const PERMISSION: Permission;
}

/// The permission check every staff route uses:
/// `async fn handler(RequirePermission(who, ..): RequirePermission<perm::OrdersWrite>)`.
/// 401 without a valid credential, 403 without the permission.
pub struct RequirePermission<P: NeedsPermission>(pub Principal, pub PhantomData<P>);

impl<S: Send + Sync, P: NeedsPermission> FromRequestParts<S> for RequirePermission<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = <Principal as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        principal.require(P::PERMISSION)?;
        Ok(RequirePermission(principal, PhantomData))
    }
}

/// One type per permission, for [`RequirePermission`].
pub mod perm {
    use super::{NeedsPermission, Permission};

    macro_rules! permissions {
        ($($name:ident),* $(,)?) => {$(
            pub struct $name;
            impl NeedsPermission for $name {
                const PERMISSION: Permission = Permission::$name;
            }
        )*};
    }

    permissions!(
        CatalogWrite,
        InventoryWrite,
        OrdersRead,
        OrdersWrite,
        CustomersRead,
        CustomersWrite,
        MarketingWrite,
        SettingsWrite,
        StaffManage,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::auth::Audience;
    use ring::rand::SystemRandom;

    struct Fixed(Vec<PublicKey>);

    #[async_trait]
    impl KeySource for Fixed {
        async fn public_keys(&self) -> Result<Vec<PublicKey>, BoxError> {
            Ok(self.0.clone())
        }
    }

    fn keypair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn claims(now: i64) -> Claims {
        Claims {
            sub: UserId::new().to_string(),
            roles: vec![Role::Customer],
            permissions: vec![],
            iat: now,
            exp: now + 900,
            iss: "https://shop.test".into(),
            aud: Audience::One("emporium".into()),
            jti: "jti_1".into(),
            email_verified: false,
            generation: 0,
        }
    }

    fn verifier(key: &Ed25519KeyPair) -> Verifier {
        use ring::signature::KeyPair;
        let public = PublicKey { kid: "k1".into(), ed25519: key.public_key().as_ref().to_vec() };
        Verifier::new(Some(Arc::new(Fixed(vec![public]))), "https://shop.test", "emporium")
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[tokio::test]
    async fn good_tokens_verify_and_bad_ones_do_not() {
        let key = keypair();
        let v = verifier(&key);
        let token = sign(&claims(now()), "k1", &key).unwrap();
        assert_eq!(v.verify(&token).await.unwrap().jti, "jti_1");
        assert_eq!(v.verify(&token).await.unwrap().jti, "jti_1", "again, from the verified cache");
        let later = now() + 900 + LEEWAY_SECS + 1;
        assert_eq!(v.verify_at(&token, later).await, Err(TokenError::Expired), "a remembered token still expires");
        let sub = v.verify(&token).await.unwrap().sub;
        v.revocations().raise(&sub, 1);
        assert_eq!(v.verify(&token).await, Err(TokenError::Revoked), "a remembered token is still revoked");
        let mut next = claims(now());
        next.sub = sub.clone();
        next.generation = 1;
        assert!(v.verify(&sign(&next, "k1", &key).unwrap()).await.is_ok(), "a token of the new generation is good");
        v.revocations().raise(&sub, 0);
        assert_eq!(v.revocations().minimum(&sub), 1, "never lowered");

        // Tampered payload.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut forged = claims(now());
        forged.roles = vec![Role::Admin];
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(v.verify(&parts.join(".")).await, Err(TokenError::BadSignature));

        // Unknown key id.
        let other = sign(&claims(now()), "k2", &key).unwrap();
        assert_eq!(v.verify(&other).await, Err(TokenError::UnknownKey));

        // Expired (beyond the leeway), not yet valid, wrong issuer, wrong audience.
        let mut c = claims(now() - 2000);
        c.exp = now() - LEEWAY_SECS - 1;
        assert_eq!(v.verify(&sign(&c, "k1", &key).unwrap()).await, Err(TokenError::Expired));
        let mut c = claims(now());
        c.exp = now() - 5; // inside the leeway: still accepted
        assert!(v.verify(&sign(&c, "k1", &key).unwrap()).await.is_ok());
        let c = claims(now() + 3600);
        assert_eq!(v.verify(&sign(&c, "k1", &key).unwrap()).await, Err(TokenError::NotYetValid));
        let mut c = claims(now());
        c.iss = "https://evil.test".into();
        assert_eq!(v.verify(&sign(&c, "k1", &key).unwrap()).await, Err(TokenError::WrongIssuer));
        let mut c = claims(now());
        c.aud = Audience::Many(vec!["other".into()]);
        assert_eq!(v.verify(&sign(&c, "k1", &key).unwrap()).await, Err(TokenError::WrongAudience));
    }

    #[tokio::test]
    async fn https_jwks_urls_are_fetched_over_tls() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let first = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            byte[0]
        });
        let fetched = HttpKeySource::new(format!("https://{addr}/.well-known/jwks.json")).public_keys().await;
        assert!(fetched.is_err(), "no server answered it");
        let first = tokio::time::timeout(Duration::from_secs(5), first).await.expect("the client connected for https");
        assert_eq!(first.unwrap(), 0x16, "the client opened with a TLS handshake record");
    }

    #[test]
    fn the_jwks_defaults_to_the_one_under_auth_url() {
        let mut config = kernel::config::AuthConfig::default();
        assert_eq!(jwks_url(&config), None);
        config.url = Some("https://auth.internal:8443/".into());
        assert_eq!(jwks_url(&config).as_deref(), Some("https://auth.internal:8443/.well-known/jwks.json"));
        config.jwks_url = Some("http://keys.internal/jwks".into());
        assert_eq!(jwks_url(&config).as_deref(), Some("http://keys.internal/jwks"), "an explicit one wins");
    }

    #[test]
    fn only_api_key_shapes_are_looked_up() {
        assert!(is_api_key_shaped("sk_AbC-12_x"));
        for bad in ["sk_", "pk_abc", "sk_a b", "sk_a\n", "sk_é", &format!("sk_{}", "a".repeat(API_KEY_MAX_LEN))] {
            assert!(!is_api_key_shaped(bad), "{bad:?}");
        }
    }

    #[test]
    fn remembered_answers_expire_and_stay_bounded() {
        let answers: KeyAnswers<u32> = KeyAnswers::new();
        let ttl = Duration::from_secs(60);
        answers.put([1; 32], 7, ttl);
        assert_eq!(answers.get(&[1; 32], ttl), Some(7));
        assert_eq!(answers.get(&[1; 32], Duration::ZERO), None, "past its time");
        answers.put([2; 32], 8, Duration::ZERO);
        assert_eq!(answers.get(&[2; 32], ttl), None, "a cache time of 0 keeps nothing");
        for i in 0..=API_KEY_CACHE_CAPACITY as u32 {
            let mut digest = [0u8; 32];
            digest[..4].copy_from_slice(&i.to_be_bytes());
            digest[31] = 9;
            answers.put(digest, i, ttl);
        }
        assert!(answers.entries.lock().unwrap().len() <= API_KEY_CACHE_CAPACITY);
    }

    #[tokio::test]
    async fn none_and_hmac_algorithms_are_refused() {
        use ring::signature::KeyPair;
        let key = keypair();
        let v = verifier(&key);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(now())).unwrap());
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#));
        assert_eq!(v.verify(&none).await, Err(TokenError::UnsupportedAlgorithm("none".into())));

        // HS256 keyed with the public key: the classic confusion attack.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"k1"}"#);
        let signing_input = format!("{header}.{body}");
        let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.public_key().as_ref());
        let tag = ring::hmac::sign(&mac_key, signing_input.as_bytes());
        let hs = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_eq!(v.verify(&hs).await, Err(TokenError::UnsupportedAlgorithm("HS256".into())));

        assert_eq!(v.verify("a.b").await, Err(TokenError::Malformed));
        assert_eq!(v.verify("a.b.c.d").await, Err(TokenError::Malformed));
    }
}
