//! Access-token signing keys: created on first start, rotated by
//! `emporium keys rotate`, published at `/.well-known/jwks.json` until the
//! last token they signed has expired.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use platform::auth::{KeySource, PublicKey};
use platform::db::{Db, now_ms};
use platform::service::BoxError;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Serialize;
use tokio::sync::RwLock;

use crate::crypto::{KeyVault, random_token};
use crate::store::{self, StoredKey};

/// How often a process re-reads the keys, so a rotation made by another
/// process is picked up.
const RELOAD_EVERY: Duration = Duration::from_secs(60);

pub struct ActiveKey {
    pub kid: String,
    pub pair: Ed25519KeyPair,
}

struct Loaded {
    at: Instant,
    active: Arc<ActiveKey>,
    published: Vec<PublicKey>,
}

/// The signing keys of this auth service.
pub struct KeyRing {
    db: Db,
    vault: KeyVault,
    /// Retired keys stay published this long: the access-token lifetime plus
    /// the reload interval (a process may sign with a just-retired key until
    /// it reloads) plus clock leeway.
    publish_for_ms: i64,
    loaded: RwLock<Option<Loaded>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Db(#[from] platform::DbError),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error("a stored signing key is not a valid Ed25519 key")]
    BadKey,
}

impl KeyRing {
    pub fn new(db: Db, vault: KeyVault, access_ttl_secs: u64) -> Self {
        let publish_for_ms = (access_ttl_secs as i64 + RELOAD_EVERY.as_secs() as i64 + platform::auth::LEEWAY_SECS) * 1000;
        Self { db, vault, publish_for_ms, loaded: RwLock::new(None) }
    }

    /// Makes a new key the active one and retires the others (they stay published).
    pub async fn rotate(&self) -> Result<String, KeyError> {
        let kid = self.create().await?;
        store::retire_keys_except(&self.db, &kid).await?;
        *self.loaded.write().await = None;
        Ok(kid)
    }

    async fn create(&self) -> Result<String, KeyError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::BadKey)?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::BadKey)?;
        let kid = random_token(12)?;
        let (private_key, encrypted) = self.vault.seal(pkcs8.as_ref(), &kid)?;
        store::insert_signing_key(
            &self.db,
            &StoredKey {
                kid: kid.clone(),
                private_key,
                encrypted,
                public_key: pair.public_key().as_ref().to_vec(),
                created_at_ms: now_ms(),
                retired_at_ms: None,
            },
        )
        .await?;
        tracing::info!(kid = %kid, encrypted, "created a token signing key");
        Ok(kid)
    }

    async fn load(&self) -> Result<(Arc<ActiveKey>, Vec<PublicKey>), KeyError> {
        if let Some(l) = self.loaded.read().await.as_ref().filter(|l| l.at.elapsed() < RELOAD_EVERY) {
            return Ok((l.active.clone(), l.published.clone()));
        }
        let mut slot = self.loaded.write().await;
        let mut keys = store::published_keys(&self.db, now_ms() - self.publish_for_ms).await?;
        if !keys.iter().any(|k| k.retired_at_ms.is_none()) {
            self.create().await?;
            keys = store::published_keys(&self.db, now_ms() - self.publish_for_ms).await?;
        }
        let newest = keys.iter().find(|k| k.retired_at_ms.is_none()).ok_or(KeyError::BadKey)?;
        let pkcs8 = self.vault.open(&newest.private_key, newest.encrypted, &newest.kid)?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| KeyError::BadKey)?;
        let active = Arc::new(ActiveKey { kid: newest.kid.clone(), pair });
        let published: Vec<PublicKey> =
            keys.into_iter().map(|k| PublicKey { kid: k.kid, ed25519: k.public_key }).collect();
        *slot = Some(Loaded { at: Instant::now(), active: active.clone(), published: published.clone() });
        Ok((active, published))
    }

    pub async fn active(&self) -> Result<Arc<ActiveKey>, KeyError> {
        Ok(self.load().await?.0)
    }

    pub async fn jwks(&self) -> Result<Jwks, KeyError> {
        let (_, published) = self.load().await?;
        Ok(Jwks {
            keys: published
                .into_iter()
                .map(|k| Jwk {
                    kty: "OKP",
                    crv: "Ed25519",
                    alg: "EdDSA",
                    key_use: "sig",
                    x: URL_SAFE_NO_PAD.encode(&k.ed25519),
                    kid: k.kid,
                })
                .collect(),
        })
    }
}

#[async_trait]
impl KeySource for KeyRing {
    async fn public_keys(&self) -> Result<Vec<PublicKey>, BoxError> {
        Ok(self.load().await?.1)
    }
}

/// A JSON Web Key Set (RFC 7517) of Ed25519 keys (RFC 8037).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Jwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub key_use: &'static str,
    pub kid: String,
    /// The public key, base64url.
    pub x: String,
}
