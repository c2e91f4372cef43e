//! Tokens: refresh rotation and reuse detection, sign-out, published keys and
//! rotation, refused tokens, and the permission checks other services use.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kernel::auth::Role;
use serde_json::{Value, json};
use support::{PASSWORD, TestApp};

fn part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

#[tokio::test]
async fn access_tokens_carry_the_documented_claims() {
    let t = TestApp::new().await;
    let (token, _) = t.customer("ann@example.com").await;
    let header = part(&token, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].is_string());
    let claims = part(&token, 1);
    assert!(claims["sub"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(claims["roles"], json!(["customer"]));
    assert_eq!(claims["aud"], "emporium");
    assert_eq!(claims["iss"], t.config.public_url());
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
    assert!(claims["jti"].is_string());

    let jwks = t.send("GET", "/.well-known/jwks.json", None, None).await;
    let keys = jwks.body["keys"].as_array().unwrap();
    assert!(keys.iter().any(|k| k["kid"] == header["kid"] && k["kty"] == "OKP" && k["crv"] == "Ed25519"));
    let oidc = t.send("GET", "/.well-known/openid-configuration", None, None).await;
    assert_eq!(oidc.body["issuer"], t.config.public_url());
    assert_eq!(oidc.body["jwks_uri"], format!("{}/.well-known/jwks.json", t.config.public_url()));
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let t = TestApp::new().await;
    let (_, first) = t.customer("ben@example.com").await;
    let second = t.post("/api/v1/auth/refresh", json!({"refresh_token": first})).await;
    assert_eq!(second.status, StatusCode::OK);
    let second_refresh = second.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first);
    assert_eq!(t.get("/api/v1/me", second.body["access_token"].as_str().unwrap()).await.status, StatusCode::OK);

    // A thief replays the first token: the whole family dies, the legitimate
    // holder's current token included.
    let replay = t.post("/api/v1/auth/refresh", json!({"refresh_token": first})).await;
    assert_eq!((replay.status, replay.code()), (StatusCode::UNAUTHORIZED, "refresh_token_reused"));
    let after = t.post("/api/v1/auth/refresh", json!({"refresh_token": second_refresh})).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);

    // Another session (another family) is untouched.
    let other = t.login("ben@example.com", PASSWORD).await.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(t.post("/api/v1/auth/refresh", json!({"refresh_token": other})).await.status, StatusCode::OK);
    let junk = t.post("/api/v1/auth/refresh", json!({"refresh_token": "junk"})).await;
    assert_eq!((junk.status, junk.code()), (StatusCode::UNAUTHORIZED, "invalid_refresh_token"));
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_yield_one_winner() {
    let t = std::sync::Arc::new(TestApp::new().await);
    let (_, refresh) = t.customer("cal@example.com").await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (t, refresh) = (t.clone(), refresh.clone());
        tasks.push(tokio::spawn(async move { t.post("/api/v1/auth/refresh", json!({"refresh_token": refresh})).await }));
    }
    let mut won = Vec::new();
    for task in tasks {
        let answer = task.await.unwrap();
        if answer.status == StatusCode::OK {
            won.push(answer.body["refresh_token"].as_str().unwrap().to_owned());
        }
    }
    // The losers count as reuse and revoke the family: the winner's new
    // token is either never written (its write sees the revocation) or
    // revoked with the family. Never two sessions, never one that lives on.
    assert!(won.len() <= 1, "at most one refresh wins");
    for token in won {
        assert_eq!(t.post("/api/v1/auth/refresh", json!({"refresh_token": token})).await.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn logout_and_logout_all() {
    let t = TestApp::new().await;
    let (token, a) = t.customer("dee@example.com").await;
    let b = t.login("dee@example.com", PASSWORD).await.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(t.post("/api/v1/auth/logout", json!({"refresh_token": a})).await.status, StatusCode::NO_CONTENT);
    assert_eq!(t.post("/api/v1/auth/refresh", json!({"refresh_token": a})).await.status, StatusCode::UNAUTHORIZED);
    // Signing out revokes the user's access tokens; the other session refreshes.
    assert_eq!(t.get("/api/v1/me", &token).await.code(), "token_revoked");
    let refreshed = t.post("/api/v1/auth/refresh", json!({"refresh_token": b})).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let token = refreshed.body["access_token"].as_str().unwrap().to_owned();
    let c = t.login("dee@example.com", PASSWORD).await.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(t.send("POST", "/api/v1/auth/logout-all", Some(&token), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(t.post("/api/v1/auth/refresh", json!({"refresh_token": c})).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(t.send("POST", "/api/v1/auth/logout-all", None, None).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_from_a_rotated_key_verify_until_they_expire() {
    let t = TestApp::new().await;
    let (old_token, _) = t.customer("eve@example.com").await;
    let old_kid = part(&old_token, 0)["kid"].as_str().unwrap().to_owned();
    let new_kid = auth::admin::rotate_keys(&t.auth()).await.unwrap();
    assert_ne!(old_kid, new_kid);

    // The running service sees the rotation (another process would within a minute).
    let fresh = TestApp::with_same(&t).await;
    let new_token = fresh.login("eve@example.com", PASSWORD).await.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(part(&new_token, 0)["kid"], new_kid.as_str());
    assert_eq!(fresh.get("/api/v1/me", &old_token).await.status, StatusCode::OK, "old key still published");
    assert_eq!(fresh.get("/api/v1/me", &new_token).await.status, StatusCode::OK);
    let kids: Vec<String> = fresh.send("GET", "/.well-known/jwks.json", None, None).await.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert!(kids.contains(&old_kid) && kids.contains(&new_kid), "{kids:?}");
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let t = TestApp::new().await;
    let (token, _) = t.customer("fox@example.com").await;
    let [h, p, s]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();

    let mut claims = part(&token, 1);
    claims["roles"] = json!(["admin"]);
    let forged = format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let none = format!("{}.{p}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#));
    let mut wrong_aud = part(&token, 1);
    wrong_aud["aud"] = json!("another-app");
    let wrong_aud = format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(wrong_aud.to_string()));
    for bad in [forged.as_str(), none.as_str(), wrong_aud.as_str(), "garbage", &token[..token.len() - 2]] {
        let r = t.get("/api/v1/me", bad).await;
        assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "invalid_token"), "{bad}");
    }
    let missing = t.send("GET", "/api/v1/me", None, None).await;
    assert_eq!((missing.status, missing.code()), (StatusCode::UNAUTHORIZED, "missing_token"));
}

#[tokio::test]
async fn staff_routes_check_permissions() {
    let t = TestApp::new().await;
    let (customer, _) = t.customer("gil@example.com").await;
    let admin = t.staff("boss@example.com", Role::Admin).await;
    let support = t.staff("help@example.com", Role::Support).await;

    assert_eq!(t.send("GET", "/api/v1/admin/users", None, None).await.status, StatusCode::UNAUTHORIZED);
    let r = t.get("/api/v1/admin/users", &customer).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "missing_permission"));

    let list = t.get("/api/v1/admin/users?limit=2", &support).await;
    assert_eq!(list.status, StatusCode::OK, "support has customers:read");
    assert_eq!(list.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(list.body["has_more"], true);
    let next = list.body["next_cursor"].as_str().unwrap();
    let rest = t.get(&format!("/api/v1/admin/users?limit=2&starting_after={next}"), &support).await;
    assert_eq!(rest.body["data"].as_array().unwrap().len(), 1);
    let staff_only = t.get("/api/v1/admin/users?role=admin", &support).await;
    assert_eq!(staff_only.body["data"].as_array().unwrap().len(), 1);
    let by_email = t.get("/api/v1/admin/users?email=GIL@", &support).await;
    let gil = &by_email.body["data"][0];
    assert_eq!(gil["email"], "gil@example.com");
    let gil_id = gil["id"].as_str().unwrap();

    // Support may read but not manage staff.
    let denied = t.send("PATCH", &format!("/api/v1/admin/users/{gil_id}"), Some(&support), Some(json!({"roles": ["admin"]}))).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let promoted = t.send("PATCH", &format!("/api/v1/admin/users/{gil_id}"), Some(&admin), Some(json!({"roles": ["catalog_manager"]}))).await;
    assert_eq!(promoted.body["roles"], json!(["catalog_manager"]));
    assert_eq!(t.get("/api/v1/admin/users/usr_nope", &admin).await.status, StatusCode::NOT_FOUND);
    assert_eq!(t.get("/api/v1/admin/users/prod_01JD0000000000000000000000", &admin).await.status, StatusCode::NOT_FOUND);

    // Disabling signs the user out and keeps them out.
    let refresh = t.login("gil@example.com", PASSWORD).await.body["refresh_token"].as_str().unwrap().to_owned();
    let disabled = t.send("PATCH", &format!("/api/v1/admin/users/{gil_id}"), Some(&admin), Some(json!({"disabled": true}))).await;
    assert_eq!(disabled.body["disabled"], true);
    assert_eq!(t.post("/api/v1/auth/refresh", json!({"refresh_token": refresh})).await.status, StatusCode::UNAUTHORIZED);
    let login = t.login("gil@example.com", PASSWORD).await;
    assert_eq!((login.status, login.code()), (StatusCode::FORBIDDEN, "account_disabled"));

    let admin_id = t.get("/api/v1/me", &admin).await.body["id"].as_str().unwrap().to_owned();
    let self_disable = t.send("PATCH", &format!("/api/v1/admin/users/{admin_id}"), Some(&admin), Some(json!({"disabled": true}))).await;
    assert_eq!(self_disable.status, StatusCode::CONFLICT);

    let audit = t.get("/api/v1/admin/audit", &admin).await;
    let actions: Vec<&str> = audit.body["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"roles_changed") && actions.contains(&"user_disabled"), "{actions:?}");
    assert_eq!(t.get("/api/v1/admin/audit", &support).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn api_keys_carry_exactly_their_permissions() {
    let t = TestApp::new().await;
    let admin = t.staff("ops@example.com", Role::Admin).await;
    let support = t.staff("desk@example.com", Role::Support).await;
    let made = t.send("POST", "/api/v1/admin/api-keys", Some(&admin), Some(json!({"name": "ERP sync", "permissions": ["customers:read"]}))).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let key = made.body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk_"));
    let id = made.body["id"].as_str().unwrap().to_owned();

    assert_eq!(t.get("/api/v1/admin/users", &key).await.status, StatusCode::OK, "customers:read works");
    let denied = t.get("/api/v1/admin/audit", &key).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "staff:manage is not in the key");
    assert_eq!(t.get("/api/v1/admin/users", "sk_not_a_key").await.code(), "invalid_api_key");

    let listed = t.get("/api/v1/admin/api-keys", &admin).await;
    let entry = listed.body.as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).unwrap().clone();
    assert!(entry.get("key").is_none(), "the secret is never shown again");
    assert!(entry["last_used_at"].is_string(), "{entry}");
    assert!(key.starts_with(entry["prefix"].as_str().unwrap()));

    assert_eq!(t.send("POST", "/api/v1/admin/api-keys", Some(&support), Some(json!({"name": "x", "permissions": ["customers:read"]}))).await.status, StatusCode::FORBIDDEN);
    let past = t.send("POST", "/api/v1/admin/api-keys", Some(&admin), Some(json!({"name": "old", "permissions": ["orders:read"], "expires_at": "2020-01-01T00:00:00Z"}))).await;
    assert_eq!(past.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = t.send("POST", "/api/v1/admin/api-keys", Some(&admin), Some(json!({"name": "x", "permissions": ["root:all"]}))).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(t.send("DELETE", &format!("/api/v1/admin/api-keys/{id}"), Some(&admin), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(t.get("/api/v1/admin/users", &key).await.status, StatusCode::UNAUTHORIZED, "revoked keys stop working");
    assert_eq!(t.send("DELETE", &format!("/api/v1/admin/api-keys/{id}"), Some(&admin), None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn signing_keys_are_encrypted_at_rest_when_a_key_is_configured() {
    use base64::engine::general_purpose::STANDARD;
    let kek = STANDARD.encode([42u8; 32]);
    let t = TestApp::with(|c| c.auth.key_encryption_key = Some(kek.clone())).await;
    let (token, _) = t.customer("kay@example.com").await;
    assert_eq!(t.get("/api/v1/me", &token).await.status, StatusCode::OK);
    let db = t.app.db("auth").unwrap();
    let (private, encrypted): (Vec<u8>, bool) = platform::on_db!(db, pool => sqlx::query_as(
        "SELECT private_key, encrypted FROM signing_keys LIMIT 1").fetch_one(pool).await).unwrap();
    assert!(encrypted);
    assert!(ring::signature::Ed25519KeyPair::from_pkcs8(&private).is_err(), "the stored bytes are not a usable key");

    // Without the key, the service cannot sign: it refuses to start rather
    // than mint tokens with a new, unexpected key.
    let mut config = (*t.config).clone();
    config.auth.key_encryption_key = None;
    let result = platform::app::App::start(std::sync::Arc::new(config), &[auth::spec()], axum::Router::new(), false).await;
    assert!(result.is_err(), "starting without the key-encryption key fails");
}
