//! The auth service: who is who. Accounts, credentials, access and refresh
//! tokens, roles and permissions, and the audit log of security events.
//! This is its face: the spec the binary mounts, and the ports it provides.

mod crypto;
pub mod domain;
mod error;
mod http;
mod internal;
mod keys;
mod service;
mod store;

use std::sync::Arc;

use kernel::auth::Role;
use platform::auth::KeySource;
use platform::migrate::Migrations;
use platform::routes::Route;
use platform::service::{BoxError, BoxFuture, Mounted, ServiceContext, ServiceSpec};

pub use error::AuthError;
pub use service::Auth;

pub const NAME: &str = "auth";

/// Every path the service answers, for the load balancer's route map
/// (`emporium deploy nginx`); a test holds it to the router.
pub const ROUTES: &[Route] = &[
    Route::both("/.well-known/jwks.json"),
    Route::public("/.well-known/openid-configuration"),
    Route::public("/api/v1/admin/api-keys"),
    Route::public("/api/v1/admin/api-keys/{id}"),
    Route::public("/api/v1/admin/audit"),
    Route::public("/api/v1/admin/users"),
    Route::public("/api/v1/admin/users/{id}"),
    Route::public("/api/v1/admin/users/{id}/mfa"),
    Route::public("/api/v1/admin/users/{id}/unlock"),
    Route::public("/api/v1/auth/login"),
    Route::public("/api/v1/auth/logout"),
    Route::public("/api/v1/auth/logout-all"),
    Route::public("/api/v1/auth/password/change"),
    Route::public("/api/v1/auth/password/forgot"),
    Route::public("/api/v1/auth/password/reset"),
    Route::public("/api/v1/auth/refresh"),
    Route::public("/api/v1/auth/register"),
    Route::public("/api/v1/auth/verify-email"),
    Route::public("/api/v1/me"),
    Route::public("/api/v1/me/addresses"),
    Route::public("/api/v1/me/addresses/{id}"),
    Route::public("/api/v1/me/export"),
    Route::public("/api/v1/me/mfa/totp"),
    Route::public("/api/v1/me/mfa/totp/confirm"),
    Route::internal("/internal/v1/api-keys/resolve"),
];

/// This service's own tables, after the platform's.
pub static MIGRATIONS: Migrations = platform::migrations!("auth", ["0001_accounts", "0002_mfa", "0003_addresses", "0004_api_keys", "0005_token_generation", "0006_sign_in_throttles", "0007_known_clients"]);

pub fn spec() -> ServiceSpec {
    ServiceSpec { name: NAME, migrations: &MIGRATIONS, mount, demo: Some(load_demo) }
}

/// Builds the service over its database, after making sure no key-encryption
/// key would be generated for data sealed with another (start and CLI).
pub async fn open_checked(ctx: &ServiceContext) -> Result<Auth, BoxError> {
    let sealed = store::holds_sealed_secrets(&ctx.db).await?;
    crypto::KeyVault::check_kek_at_hand(&ctx.config, sealed)?;
    open(ctx)
}

/// Builds the service over its database (see `open_checked`).
pub fn open(ctx: &ServiceContext) -> Result<Auth, BoxError> {
    let config = ctx.config.clone();
    let vault = crypto::KeyVault::for_service(&config)?;
    let keys = Arc::new(keys::KeyRing::new(ctx.db.clone(), vault.clone(), config.auth.access_token_ttl_secs));
    Ok(Auth {
        db: ctx.db.clone(),
        hasher: Arc::new(crypto::PasswordHasher::new(&config.auth)?),
        keys,
        vault,
        ip_limiter: Arc::new(service::IpLimiter::default()),
        limits: platform::limit::Limits::of(ctx),
        personal_data: ctx.ports.get::<platform::service::PersonalDataSources>(),
        hash_pool: crypto::HashPool::shared(),
        revocations: ctx.ports.get::<platform::auth::Revocations>().unwrap_or_default(),
        config,
    })
}

fn mount(ctx: ServiceContext) -> BoxFuture<'static, Result<Mounted, BoxError>> {
    Box::pin(async move {
        let auth = open_checked(&ctx).await?;
        auth.seal_plaintext_secrets().await?;
        // Make sure a signing key exists before the first request needs it.
        auth.keys.active().await?;
        auth.load_revocations().await?;
        ctx.ports.provide::<dyn KeySource>(auth.keys.clone());
        ctx.ports.provide::<dyn platform::auth::ApiKeyResolver>(Arc::new(service::ApiKeys(auth.clone())));
        // Processes without auth resolve API keys here, with the service token.
        let token = ctx.config.auth.service_token.as_deref().map(Arc::from);
        let internal = internal::router(internal::Internal { auth: auth.clone(), token });
        Ok(Mounted::routes(http::router(auth).merge(internal)))
    })
}

/// The demo shop's staff, one per role, so the console can be tried at once.
pub const DEMO_STAFF: [(&str, &str, Role); 3] = [
    ("admin@example.com", "Demo Admin", Role::Admin),
    ("catalog@example.com", "Demo Catalog Manager", Role::CatalogManager),
    ("orders@example.com", "Demo Order Manager", Role::OrderManager),
];

/// The demo staff's password (documented in the README; demo shops only).
pub const DEMO_PASSWORD: &str = "emporium-demo";

fn load_demo(ctx: ServiceContext) -> BoxFuture<'static, Result<(), BoxError>> {
    Box::pin(async move {
        let auth = open(&ctx)?;
        for (email, name, role) in DEMO_STAFF {
            match admin::create_user(&auth, email, name, DEMO_PASSWORD, &[role]).await {
                Ok(_) => tracing::info!(email, role = %role, "demo staff account created"),
                // A second start of the demo keeps the accounts as they are.
                Err(AuthError::EmailTaken) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })
}

/// Operator commands: the first admin, key rotation.
pub mod admin {
    use kernel::auth::Role;

    use crate::domain::{Email, Password};
    use crate::error::AuthError;
    use crate::service::Auth;

    /// Creates a (staff) user with a chosen password, verified from the start.
    pub async fn create_user(auth: &Auth, email: &str, name: &str, password: &str, roles: &[Role]) -> Result<String, AuthError> {
        let email = Email::parse(email)?;
        let password = Password::parse(password, &email, "password")?;
        let hash = auth.hasher.hash(password.expose())?;
        let user = auth.create_user(&email, name, &hash, roles).await?;
        let mut tx = auth.db.begin().await?;
        crate::store::mark_email_verified(&mut tx, &user.id).await?;
        tx.commit().await?;
        auth.audit(None, "user_created_by_operator", Some(&user.id), None, serde_json::json!({"roles": roles})).await?;
        Ok(user.id.to_string())
    }

    /// Makes a new signing key active; returns its kid.
    pub async fn rotate_keys(auth: &Auth) -> Result<String, AuthError> {
        Ok(auth.keys.rotate().await?)
    }

    /// A random password that meets the policy, for operators who ask for one.
    pub fn generate_password() -> Result<String, AuthError> {
        Ok(crate::crypto::random_token(18)?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_listed() {
        assert!(platform::migrate::unlisted_files(&super::MIGRATIONS).is_empty());
    }
}
