//! TOTP: enrolment, sign-in with codes and recovery codes, turning it off,
//! and staff who must use it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use axum::http::StatusCode;
use serde_json::json;
use support::{PASSWORD, TestApp};

use platform::testing::totp;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn enrol_sign_in_with_codes_and_turn_off() {
    let t = TestApp::new().await;
    let (token, _) = t.customer("mia@example.com").await;
    let started = t.send("POST", "/api/v1/me/mfa/totp", Some(&token), Some(json!({"password": PASSWORD}))).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let secret = started.body["secret"].as_str().unwrap().to_owned();
    let uri = started.body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Emporium:mia%40example.com?secret=") && uri.contains(&secret), "{uri}");

    let wrong = t.send("POST", "/api/v1/me/mfa/totp/confirm", Some(&token), Some(json!({"code": "000000"}))).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // Use the previous step's code: accepted once for drift, and leaves the
    // current step for the sign-in below.
    let confirm_code = totp(&secret, now() - 30);
    let confirmed = t.send("POST", "/api/v1/me/mfa/totp/confirm", Some(&token), Some(json!({"code": confirm_code}))).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let recovery: Vec<String> = serde_json::from_value(confirmed.body["recovery_codes"].clone()).unwrap();
    assert_eq!(recovery.len(), 10);
    assert_eq!(t.get("/api/v1/me", &token).await.body["mfa_enabled"], true);
    assert_eq!(t.send("POST", "/api/v1/me/mfa/totp", Some(&token), Some(json!({"password": PASSWORD}))).await.status, StatusCode::CONFLICT);

    let no_code = t.login("mia@example.com", PASSWORD).await;
    assert_eq!((no_code.status, no_code.code()), (StatusCode::UNAUTHORIZED, "mfa_required"));
    let login = |code: String| t.post("/api/v1/auth/login", json!({"email": "mia@example.com", "password": PASSWORD, "totp_code": code}));
    let bad = login("123456".into()).await;
    assert_eq!((bad.status, bad.code()), (StatusCode::UNAUTHORIZED, "invalid_mfa_code"));
    let code = totp(&secret, now());
    assert_eq!(login(code.clone()).await.status, StatusCode::OK);
    assert_eq!(login(code).await.code(), "invalid_mfa_code", "a code works once");

    let rc = recovery[0].clone();
    assert_eq!(login(rc.to_lowercase()).await.status, StatusCode::OK, "recovery codes work, any case");
    assert_eq!(login(rc).await.status, StatusCode::UNAUTHORIZED, "once");

    let off_wrong = t.send("DELETE", "/api/v1/me/mfa/totp", Some(&token), Some(json!({"password": "not it at all"}))).await;
    assert_eq!(off_wrong.status, StatusCode::FORBIDDEN);
    let off = t.send("DELETE", "/api/v1/me/mfa/totp", Some(&token), Some(json!({"password": PASSWORD}))).await;
    assert_eq!(off.status, StatusCode::NO_CONTENT);
    assert_eq!(t.login("mia@example.com", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test]
async fn staff_without_mfa_get_no_permissions_where_it_is_required() {
    let t = TestApp::with(|c| c.auth.staff_mfa_required = true).await;
    let admin = t.staff("root@example.com", kernel::auth::Role::Admin).await;
    let denied = t.get("/api/v1/admin/users", &admin).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let secret = t.send("POST", "/api/v1/me/mfa/totp", Some(&admin), Some(json!({"password": PASSWORD}))).await.body["secret"].as_str().unwrap().to_owned();
    let confirm = t.send("POST", "/api/v1/me/mfa/totp/confirm", Some(&admin), Some(json!({"code": totp(&secret, now() - 30)}))).await;
    assert_eq!(confirm.status, StatusCode::OK);
    let login = t.post("/api/v1/auth/login", json!({"email": "root@example.com", "password": PASSWORD, "totp_code": totp(&secret, now())})).await;
    let token = login.body["access_token"].as_str().unwrap();
    assert_eq!(t.get("/api/v1/admin/users", token).await.status, StatusCode::OK);
}
