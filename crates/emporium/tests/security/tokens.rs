//! Credentials that must not outlive their grounds: API keys shrink with
//! their creator's roles and expire; access tokens die at sign-out, password
//! and role changes; signing keys and TOTP secrets are sealed at rest.

use axum::http::StatusCode;
use kernel::auth::Role;
use serde_json::{Value, json};

use super::support::{Shop, Who};

const PASSWORD: &str = "a long passphrase";

fn bearer(token: &str) -> Who {
    Who { token: Some(token.to_owned()), ..Who::default() }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// Signs in: (access token, refresh token).
async fn login(shop: &Shop, email: &str, password: &str) -> (String, String) {
    let (s, body) = shop.send("POST", "/api/v1/auth/login", &Who::default(), Some(json!({"email": email, "password": password}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    (body["access_token"].as_str().unwrap().to_owned(), body["refresh_token"].as_str().unwrap().to_owned())
}

async fn user_id(shop: &Shop, token: &str) -> String {
    let (s, me) = shop.send("GET", "/api/v1/me", &bearer(token), None).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    me["id"].as_str().unwrap().to_owned()
}

/// The token is refused as revoked, on the API route `path`.
async fn assert_revoked(shop: &Shop, token: &str, path: &str, after: &str) {
    let (s, body) = shop.send("GET", path, &bearer(token), None).await;
    assert_eq!((s, code(&body)), (StatusCode::UNAUTHORIZED, "token_revoked"), "a token used after {after}: {body}");
}

#[tokio::test]
async fn item_4_api_keys_follow_their_creators_roles() {
    let shop = Shop::with(|c| c.services = vec!["auth".into()]).await;
    let boss = shop.user("boss@example.com", Role::Admin).await;
    let boss_id = user_id(&shop, &boss).await;
    let (s, made) = shop.send("POST", "/api/v1/admin/api-keys", &bearer(&boss), Some(json!({
        "name": "integration", "permissions": ["staff:manage", "customers:read"]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let key = bearer(made["key"].as_str().unwrap());

    // A key asked for without an expiry gets the longest allowed (365 days).
    let expires = time::OffsetDateTime::parse(made["expires_at"].as_str().expect("every key expires"), &time::format_description::well_known::Rfc3339).unwrap();
    let days = (expires - time::OffsetDateTime::now_utc()).whole_days();
    assert!((364..=365).contains(&days), "expires in {days} days");
    let far = (time::OffsetDateTime::now_utc() + time::Duration::days(400)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let (s, body) = shop.send("POST", "/api/v1/admin/api-keys", &bearer(&boss), Some(json!({
        "name": "forever", "permissions": ["customers:read"], "expires_at": far}))).await;
    assert_eq!((s, body["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("expires_at")), "{body}");

    // While its creator is admin, the key does what it was given.
    assert_eq!(shop.send("GET", "/api/v1/admin/api-keys", &key, None).await.0, StatusCode::OK);

    // The creator is demoted to order manager.
    let (s, body) = shop.send("PATCH", &format!("/api/v1/admin/users/{boss_id}"), &shop.as_staff(), Some(json!({"roles": ["order_manager"]}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // The key keeps only what its creator still holds.
    for path in ["/api/v1/admin/api-keys", "/api/v1/admin/audit"] {
        let (s, body) = shop.send("GET", path, &key, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path} with a demoted admin's key: {body}");
    }
    let (s, body) = shop.send("POST", "/api/v1/admin/api-keys", &key, Some(json!({"name": "escape", "permissions": ["staff:manage"]}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a demoted admin's key minted a staff:manage key: {body}");
    assert_eq!(shop.send("GET", "/api/v1/admin/users", &key, None).await.0, StatusCode::OK, "customers:read is still the creator's");

    // A disabled creator's key is dead.
    shop.send("PATCH", &format!("/api/v1/admin/users/{boss_id}"), &shop.as_staff(), Some(json!({"disabled": true}))).await;
    assert_eq!(shop.send("GET", "/api/v1/admin/users", &key, None).await.0, StatusCode::UNAUTHORIZED);
}

/// Stores a password-reset token for `user`, as a mailed link would carry.
async fn reset_token(shop: &Shop, user: &str, email: &str) -> String {
    use sha2::Digest;
    let token = format!("reset-{}", uuid_like());
    let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let expires = (time::OffsetDateTime::now_utc().unix_timestamp() + 3600) * 1000;
    let db = shop.app.db("auth").unwrap();
    platform::on_write!(db, pool => sqlx::query(
        "INSERT INTO one_time_tokens (token_hash, user_id, purpose, email, expires_at_ms, created_at) VALUES ($1, $2, 'reset_password', $3, $4, $5)")
        .bind(&hash).bind(user).bind(email).bind(expires).bind(time::OffsetDateTime::now_utc())
        .execute(pool).await.map(|_| ())).unwrap();
    token
}

fn uuid_like() -> String {
    hex::encode(ring::rand::generate::<[u8; 16]>(&ring::rand::SystemRandom::new()).unwrap().expose())
}

#[tokio::test]
async fn item_5_access_tokens_die_with_their_session() {
    let shop = Shop::with(|c| c.services = vec!["auth".into()]).await;
    let email = "ada@example.com";
    shop.user(email, Role::Customer).await;

    // Sign out of this session: its access token is refused at once, and a
    // new sign-in (within the same second) works.
    let (access, refresh) = login(&shop, email, PASSWORD).await;
    let id = user_id(&shop, &access).await;
    let (s, _) = shop.send("POST", "/api/v1/auth/logout", &Who::default(), Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_revoked(&shop, &access, "/api/v1/me", "logout").await;
    let (access, _) = login(&shop, email, PASSWORD).await;
    user_id(&shop, &access).await;

    // Sign out everywhere.
    assert_eq!(shop.send("POST", "/api/v1/auth/logout-all", &bearer(&access), None).await.0, StatusCode::NO_CONTENT);
    assert_revoked(&shop, &access, "/api/v1/me", "logout-all").await;
    let (access, _) = login(&shop, email, PASSWORD).await;
    user_id(&shop, &access).await;

    // Change the password.
    let (s, body) = shop.send("POST", "/api/v1/auth/password/change", &bearer(&access), Some(json!({
        "current_password": PASSWORD, "new_password": "another long passphrase"}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_revoked(&shop, &access, "/api/v1/me", "a password change").await;
    let (access, _) = login(&shop, email, "another long passphrase").await;
    user_id(&shop, &access).await;

    // Reset the password with a mailed link.
    let token = reset_token(&shop, &id, email).await;
    let (s, body) = shop.send("POST", "/api/v1/auth/password/reset", &Who::default(), Some(json!({
        "token": token, "password": "a third long passphrase"}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_revoked(&shop, &access, "/api/v1/me", "a password reset").await;
    let (access, _) = login(&shop, email, "a third long passphrase").await;
    user_id(&shop, &access).await;

    // Staff: demoted, then disabled.
    let staff_email = "olga@example.com";
    let olga = shop.user(staff_email, Role::OrderManager).await;
    let olga_id = user_id(&shop, &olga).await;
    assert_eq!(shop.send("GET", "/api/v1/admin/users", &bearer(&olga), None).await.0, StatusCode::OK);
    let (s, body) = shop.send("PATCH", &format!("/api/v1/admin/users/{olga_id}"), &shop.as_staff(), Some(json!({"roles": ["customer"]}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_revoked(&shop, &olga, "/api/v1/admin/users", "a demotion").await;
    let (olga, _) = login(&shop, staff_email, PASSWORD).await;
    assert_eq!(shop.send("GET", "/api/v1/admin/users", &bearer(&olga), None).await.0, StatusCode::FORBIDDEN, "the new token has the new roles");

    let (s, body) = shop.send("PATCH", &format!("/api/v1/admin/users/{olga_id}"), &shop.as_staff(), Some(json!({"disabled": true}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_revoked(&shop, &olga, "/api/v1/me", "disabling").await;
    shop.send("PATCH", &format!("/api/v1/admin/users/{olga_id}"), &shop.as_staff(), Some(json!({"disabled": false}))).await;
    let (olga, _) = login(&shop, staff_email, PASSWORD).await;
    user_id(&shop, &olga).await;

    // Revocation concerns only that user.
    assert_eq!(shop.send("GET", "/api/v1/me", &shop.as_staff(), None).await.0, StatusCode::OK);
}

/// RFC 4648 base32 without padding, as the enrolment answer gives secrets.
fn base32_decode(text: &str) -> Vec<u8> {
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {text}"),
        };
        buffer = (buffer << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    out
}

fn totp_now(secret: &[u8]) -> String {
    let step = (time::OffsetDateTime::now_utc().unix_timestamp() / 30) as u64;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = ring::hmac::sign(&key, &step.to_be_bytes());
    let mac = mac.as_ref();
    let offset = (mac[mac.len() - 1] & 0x0f) as usize;
    let binary = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
    format!("{:06}", binary % 1_000_000)
}

#[tokio::test]
async fn item_10_secrets_are_sealed_without_a_configured_key() {
    let shop = Shop::with(|c| c.services = vec!["auth".into()]).await;
    assert!(shop.config.auth.key_encryption_key.is_none(), "no key-encryption key is configured");

    // A key-encryption key was generated beside the data, readable by its owner only.
    let kek = shop.config.data_dir.join("auth.kek");
    let text = std::fs::read_to_string(&kek).expect("auth.kek is generated on first start");
    {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap();
        assert_eq!(bytes.len(), 32);
    }
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // The signing key is sealed: its stored bytes are not a usable key.
    assert_eq!(shop.count("auth", "SELECT COUNT(*) FROM signing_keys WHERE encrypted = FALSE").await, 0);
    let db = shop.app.db("auth").unwrap().clone();
    let keys: Vec<(Vec<u8>,)> = platform::on_db!(db, pool => sqlx::query_as("SELECT private_key FROM signing_keys").fetch_all(pool).await).unwrap();
    assert!(!keys.is_empty());
    for (private,) in &keys {
        assert!(ring::signature::Ed25519KeyPair::from_pkcs8(private).is_err(), "a signing key is stored in plaintext");
    }

    // An enrolled TOTP secret is sealed too.
    let email = "tess@example.com";
    let token = shop.user(email, Role::Customer).await;
    let (s, enrolment) = shop.send("POST", "/api/v1/me/mfa/totp", &bearer(&token), Some(json!({"password": PASSWORD}))).await;
    assert_eq!(s, StatusCode::OK, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let (s, body) = shop.send("POST", "/api/v1/me/mfa/totp/confirm", &bearer(&token), Some(json!({"code": totp_now(&base32_decode(&secret))}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(shop.count("auth", "SELECT COUNT(*) FROM users WHERE totp_enabled_at IS NOT NULL AND totp_secret LIKE 'enc:%'").await, 1);
    assert_eq!(shop.count("auth", &format!("SELECT COUNT(*) FROM users WHERE totp_secret LIKE '%{secret}%'")).await, 0);

    // What an older version left in plaintext is sealed at the next start.
    let legacy_id = user_id(&shop, &shop.staff).await;
    platform::on_write!(db, pool => sqlx::query("UPDATE users SET totp_secret = 'raw:JBSWY3DPEHPK3PXP' WHERE id = $1")
        .bind(&legacy_id).execute(pool).await.map(|_| ())).unwrap();
    platform::on_write!(db, pool => sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, private_key, encrypted, public_key, created_at_ms, retired_at_ms) \
         VALUES ('legacy', 'EdDSA', $1, FALSE, $2, 1, 2)")
        .bind(b"plaintext key bytes".to_vec()).bind(vec![0u8; 32]).execute(pool).await.map(|_| ())).unwrap();

    // A restart with the same data folder reads the key back: old tokens still verify.
    let Shop { _sandbox, app, config, staff } = shop;
    app.shutdown().await;
    let app = emporium::start_shop(config.clone(), false).await.unwrap();
    let shop = Shop { _sandbox, app, config, staff };
    assert_eq!(std::fs::read_to_string(&kek).unwrap(), text, "the same key, not a new one");
    let (s, body) = shop.send("GET", "/api/v1/me", &shop.as_staff(), None).await;
    assert_eq!(s, StatusCode::OK, "a token from before the restart: {body}");
    assert_eq!(shop.send("GET", "/api/v1/me", &bearer(&token), None).await.0, StatusCode::OK);
    assert_eq!(shop.count("auth", "SELECT COUNT(*) FROM signing_keys WHERE encrypted = FALSE").await, 0, "legacy keys are sealed");
    assert_eq!(shop.count("auth", "SELECT COUNT(*) FROM users WHERE totp_secret LIKE 'raw:%'").await, 0, "legacy TOTP secrets are sealed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_5_a_process_without_auth_learns_revocations_from_the_bus() {
    use std::sync::Arc;
    let sandbox = platform::testing::Sandbox::new().await;
    let mut base = (*sandbox.config()).clone();
    base.public_url = Some("http://shop.test".into());
    let mut auth_config = base.clone();
    auth_config.services = vec!["auth".into()];
    let shop = Shop { app: emporium::start(Arc::new(auth_config.clone()), axum::Router::new(), false).await.unwrap(),
        config: Arc::new(auth_config), staff: String::new(), _sandbox: sandbox };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = shop.app.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    // A catalog process: it verifies tokens with the keys auth publishes.
    let mut catalog_config = base.clone();
    catalog_config.services = vec!["catalog".into()];
    catalog_config.auth.jwks_url = Some(format!("http://{addr}/.well-known/jwks.json"));
    let catalog = emporium::start(Arc::new(catalog_config), axum::Router::new(), false).await.unwrap();

    shop.user("bo@example.com", Role::Customer).await;
    let (access, refresh) = login(&shop, "bo@example.com", PASSWORD).await;
    let ask = |token: &str| {
        let catalog = catalog.router();
        let token = token.to_owned();
        async move {
            let r = axum::http::Request::get("/api/v1/admin/products").header("authorization", format!("Bearer {token}")).body(axum::body::Body::empty()).unwrap();
            let response = tower::ServiceExt::oneshot(catalog, r).await.unwrap();
            let status = response.status();
            let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        }
    };
    assert_eq!(ask(&access).await.0, StatusCode::FORBIDDEN, "the catalog knows the customer (and refuses the staff route)");

    shop.send("POST", "/api/v1/auth/logout", &Who::default(), Some(json!({"refresh_token": refresh}))).await;
    if base.nats.url.is_none() {
        // Two processes on the in-process bus do not share it: hand the
        // catalog's bus the event auth's outbox holds, as JetStream would.
        let db = shop.app.db("auth").unwrap();
        let payload: String = platform::on_db!(db, pool => sqlx::query_scalar(
            "SELECT payload FROM outbox WHERE event_type = 'user.tokens_revoked'").fetch_one(pool).await).unwrap();
        catalog.bus().publish(&serde_json::from_str(&payload).unwrap()).await.unwrap();
    }
    // On JetStream the event arrives within moments; ask until it has (bounded).
    let mut answer = ask(&access).await;
    for _ in 0..100 {
        if answer.0 == StatusCode::UNAUTHORIZED {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        answer = ask(&access).await;
    }
    assert_eq!((answer.0, code(&answer.1)), (StatusCode::UNAUTHORIZED, "token_revoked"), "{}", answer.1);
    let (fresh, _) = login(&shop, "bo@example.com", PASSWORD).await;
    assert_eq!(ask(&fresh).await.0, StatusCode::FORBIDDEN, "a fresh sign-in works in the other process");
}

/// The stored form of a refresh token (as the service keeps it).
fn stored_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

#[tokio::test]
async fn item_5_a_refresh_racing_a_sign_out_gets_no_session() {
    let shop = Shop::with(|c| c.services = vec!["auth".into()]).await;
    let email = "rae@example.com";
    shop.user(email, Role::Customer).await;
    let (_, refresh) = login(&shop, email, PASSWORD).await;

    // A sign-out commits the instant the refresh has used its old token up,
    // before the new tokens are made: a trigger does what the logout would
    // (the family revoked, the user's token generation moved on), no timing.
    let db = shop.app.db("auth").unwrap().clone();
    match db.dialect() {
        platform::db::Dialect::Sqlite => {
            platform::on_write!(db, pool => sqlx::raw_sql(
                "CREATE TRIGGER race_logout AFTER UPDATE OF used_at_ms ON refresh_tokens FOR EACH ROW \
                 WHEN OLD.used_at_ms IS NULL AND NEW.used_at_ms IS NOT NULL BEGIN \
                 UPDATE users SET token_generation = token_generation + 1 WHERE id = NEW.user_id; \
                 UPDATE refresh_tokens SET revoked_at_ms = NEW.used_at_ms WHERE family_id = NEW.family_id AND revoked_at_ms IS NULL; \
                 END").execute(pool).await.map(|_| ())).unwrap();
        }
        platform::db::Dialect::Postgres => {
            platform::on_write!(db, pool => sqlx::raw_sql(
                "CREATE FUNCTION race_logout() RETURNS trigger AS $$ BEGIN \
                 UPDATE users SET token_generation = token_generation + 1 WHERE id = NEW.user_id; \
                 UPDATE refresh_tokens SET revoked_at_ms = NEW.used_at_ms WHERE family_id = NEW.family_id AND revoked_at_ms IS NULL; \
                 RETURN NEW; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER race_logout AFTER UPDATE OF used_at_ms ON refresh_tokens FOR EACH ROW \
                 WHEN (OLD.used_at_ms IS NULL AND NEW.used_at_ms IS NOT NULL) EXECUTE FUNCTION race_logout();")
                .execute(pool).await.map(|_| ())).unwrap();
        }
    }
    let (s, body) = shop.send("POST", "/api/v1/auth/refresh", &Who::default(), Some(json!({"refresh_token": refresh}))).await;
    assert_eq!((s, code(&body)), (StatusCode::UNAUTHORIZED, "invalid_refresh_token"), "a refresh that lost the race to a sign-out got a session: {body}");
    let family = format!("SELECT COUNT(*) FROM refresh_tokens WHERE revoked_at_ms IS NULL AND family_id = \
        (SELECT family_id FROM refresh_tokens WHERE token_hash = '{}')", stored_hash(&refresh));
    assert_eq!(shop.count("auth", &family).await, 0, "a refresh token outlived the sign-out");
}

#[tokio::test]
async fn item_5_a_dead_refresh_token_signs_nothing_out() {
    let shop = Shop::with(|c| c.services = vec!["auth".into()]).await;
    let email = "dee@example.com";
    shop.user(email, Role::Customer).await;
    let anyone = Who::default();
    let logout = |token: String| shop.send("POST", "/api/v1/auth/logout", &anyone, Some(json!({"refresh_token": token})));

    // A session signed out; a later one is live.
    let (_, old) = login(&shop, email, PASSWORD).await;
    assert_eq!(logout(old.clone()).await.0, StatusCode::NO_CONTENT);
    let (access, _) = login(&shop, email, PASSWORD).await;
    user_id(&shop, &access).await;

    // Signing out with the revoked token again, or with an expired one,
    // leaves the live session's access token alone.
    assert_eq!(logout(old).await.0, StatusCode::NO_CONTENT);
    let (s, body) = shop.send("GET", "/api/v1/me", &bearer(&access), None).await;
    assert_eq!(s, StatusCode::OK, "a revoked refresh token signed the user out again: {body}");
    let (_, expired) = login(&shop, email, PASSWORD).await;
    let db = shop.app.db("auth").unwrap().clone();
    platform::on_write!(db, pool => sqlx::query("UPDATE refresh_tokens SET expires_at_ms = 1 WHERE token_hash = $1")
        .bind(stored_hash(&expired)).execute(pool).await.map(|_| ())).unwrap();
    assert_eq!(logout(expired).await.0, StatusCode::NO_CONTENT);
    let (s, body) = shop.send("GET", "/api/v1/me", &bearer(&access), None).await;
    assert_eq!(s, StatusCode::OK, "an expired refresh token signed the user out: {body}");
}

#[tokio::test]
async fn item_5_a_staff_mfa_reset_revokes_the_users_access_tokens() {
    let shop = Shop::with(|c| c.services = vec!["auth".into()]).await;
    let token = shop.user("mo@example.com", Role::OrderManager).await;
    let id = user_id(&shop, &token).await;
    let (s, enrolment) = shop.send("POST", "/api/v1/me/mfa/totp", &bearer(&token), Some(json!({"password": PASSWORD}))).await;
    assert_eq!(s, StatusCode::OK, "{enrolment}");
    let code_now = totp_now(&base32_decode(enrolment["secret"].as_str().unwrap()));
    let (s, body) = shop.send("POST", "/api/v1/me/mfa/totp/confirm", &bearer(&token), Some(json!({"code": code_now}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(shop.send("GET", "/api/v1/admin/users", &bearer(&token), None).await.0, StatusCode::OK);

    // What a staff account may do can hang on MFA: its tokens go with it.
    assert_eq!(shop.send("DELETE", &format!("/api/v1/admin/users/{id}/mfa"), &shop.as_staff(), None).await.0, StatusCode::NO_CONTENT);
    assert_revoked(&shop, &token, "/api/v1/admin/users", "a staff reset of MFA").await;
}

#[tokio::test]
async fn item_10_a_lost_key_file_stops_the_start_instead_of_making_a_new_key() {
    let shop = Shop::with(|c| c.services = vec!["auth".into()]).await;
    let kek = shop.config.data_dir.join("auth.kek");
    assert!(kek.exists(), "a key was generated on first start");
    assert!(shop.count("auth", "SELECT COUNT(*) FROM signing_keys WHERE encrypted = TRUE").await > 0);

    // The same database, the key file gone (ephemeral storage, another replica's folder).
    let Shop { _sandbox, app, config, .. } = shop;
    app.shutdown().await;
    std::fs::remove_file(&kek).unwrap();
    let error = match emporium::start_shop(config.clone(), false).await {
        Ok(_) => panic!("started with a new key that cannot open the sealed signing keys"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("auth.key_encryption_key") && error.contains(&kek.display().to_string()), "{error}");
    assert!(!kek.exists(), "a new key file was left behind");
}
