//! Accounts and credentials: registration, sign-in without enumeration,
//! sign-in throttles and rate limits, email verification, password reset and change.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use axum::http::StatusCode;
use serde_json::json;
use support::{PASSWORD, TestApp};

#[tokio::test]
async fn registration_validates_and_normalises() {
    let t = TestApp::new().await;
    let r = t.register("  Alice@Example.com ").await;
    assert_eq!(r.body["email"], "alice@example.com");
    assert_eq!(r.body["roles"], json!(["customer"]));
    assert_eq!(r.body["email_verified"], false);
    assert!(r.body["id"].as_str().unwrap().starts_with("usr_"));
    assert!(r.body.get("password_hash").is_none());

    // A known address is answered like a new one; its owner is mailed instead.
    let again = t.post("/api/v1/auth/register", json!({"email": "ALICE@example.com", "password": PASSWORD, "name": "A"})).await;
    assert_eq!((again.status, again.body["email"].as_str(), again.body["email_verified"].as_bool()), (StatusCode::CREATED, Some("alice@example.com"), Some(false)));
    assert_ne!(again.body["id"], r.body["id"]);
    let warned = t.last_event("user.email_reuse_attempted").await.unwrap();
    assert_eq!((warned["data"]["email"].as_str(), warned["data"]["attempt"].as_str()), (Some("alice@example.com"), Some("register")));

    for (password, code) in [("short", "password_too_short"), ("qwertyuiop", "password_too_common"), ("bob.builder@example.com", "password_contains_email")] {
        let r = t.post("/api/v1/auth/register", json!({"email": "bob.builder@example.com", "password": password, "name": "Bob"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{password}");
        assert_eq!((r.code(), r.body["error"]["field"].as_str()), (code, Some("password")));
    }
    let r = t.post("/api/v1/auth/register", json!({"email": "not-an-email", "password": PASSWORD, "name": "X"})).await;
    assert_eq!(r.body["error"]["field"], "email");
    let r = t.post("/api/v1/auth/register", json!({"email": "c@example.com", "password": PASSWORD, "name": "C", "roles": ["admin"]})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "no mass assignment: {}", r.body);

    assert_eq!(t.count_events("user.registered").await, 1);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_the_same() {
    let t = TestApp::new().await;
    t.register("dora@example.com").await;
    let wrong = t.login("dora@example.com", "not the password at all").await;
    let unknown = t.login("nobody@example.com", "not the password at all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.code(), "invalid_credentials");

    let ok = t.login("DORA@example.com", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 900);
    let me = t.get("/api/v1/me", ok.body["access_token"].as_str().unwrap()).await;
    assert_eq!((me.status, me.body["email"].as_str()), (StatusCode::OK, Some("dora@example.com")));
}

#[tokio::test]
async fn repeated_failures_make_that_address_wait_for_that_email() {
    let t = TestApp::with(|c| {
        c.auth.sign_in_throttle_after = 3;
        c.auth.sign_in_throttle_base_secs = 60;
    })
    .await;
    t.register("erin@example.com").await;
    for _ in 0..3 {
        assert_eq!(t.login("erin@example.com", "wrong password here").await.status, StatusCode::UNAUTHORIZED);
    }
    let held = t.login("erin@example.com", PASSWORD).await;
    assert_eq!((held.status, held.code()), (StatusCode::TOO_MANY_REQUESTS, "sign_in_throttled"));
    let retry: u64 = held.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((50..=60).contains(&retry), "{retry}");
    // An unknown email is held up exactly alike.
    for _ in 0..3 {
        assert_eq!(t.login("nobody@example.com", "wrong password here").await.status, StatusCode::UNAUTHORIZED);
    }
    let unknown = t.login("nobody@example.com", PASSWORD).await;
    assert_eq!((unknown.status, &unknown.body), (StatusCode::TOO_MANY_REQUESTS, &held.body));

    let staff = t.staff("sec@example.com", kernel::auth::Role::Admin).await;
    let audit = t.get("/api/v1/admin/audit", &staff).await;
    let actions: Vec<&str> = audit.body["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"sign_in_throttled") && actions.contains(&"login_failed"), "{actions:?}");
}

#[tokio::test]
async fn too_many_attempts_from_one_address_are_refused() {
    let t = TestApp::with(|c| c.auth.login_attempts_per_ip_per_minute = 3).await;
    for _ in 0..3 {
        assert_eq!(t.login("x@example.com", "whatever password").await.status, StatusCode::UNAUTHORIZED);
    }
    let limited = t.login("x@example.com", "whatever password").await;
    assert_eq!((limited.status, limited.code()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn email_verification_with_the_mailed_token() {
    let t = TestApp::new().await;
    let (token, _) = t.customer("fay@example.com").await;
    let event = t.last_event("user.email_verification_requested").await.unwrap();
    assert_eq!(event["data"]["email"], "fay@example.com");
    let mailed = event["data"]["token"].as_str().unwrap();
    assert!(event["data"]["url"].as_str().unwrap().contains(mailed));

    let bad = t.post("/api/v1/auth/verify-email", json!({"token": "made-up"})).await;
    assert_eq!((bad.status, bad.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_token"));
    assert_eq!(t.post("/api/v1/auth/verify-email", json!({"token": mailed})).await.status, StatusCode::NO_CONTENT);
    assert_eq!(t.get("/api/v1/me", &token).await.body["email_verified"], true);
    let claims = |token: &str| -> serde_json::Value {
        use base64::Engine;
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    assert_eq!(claims(&token)["email_verified"], false, "issued before verification");
    let fresh = t.login("fay@example.com", PASSWORD).await;
    assert_eq!(claims(fresh.body["access_token"].as_str().unwrap())["email_verified"], true);
    let again = t.post("/api/v1/auth/verify-email", json!({"token": mailed})).await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY, "single use");
}

#[tokio::test]
async fn password_reset_signs_out_everywhere() {
    let t = TestApp::new().await;
    let (_, refresh) = t.customer("gus@example.com").await;
    let unknown = t.post("/api/v1/auth/password/forgot", json!({"email": "nobody@example.com"})).await;
    assert_eq!(unknown.status, StatusCode::ACCEPTED);
    assert_eq!(t.count_events("user.password_reset_requested").await, 0);
    assert_eq!(t.post("/api/v1/auth/password/forgot", json!({"email": "GUS@example.com"})).await.status, StatusCode::ACCEPTED);
    let mailed = t.last_event("user.password_reset_requested").await.unwrap()["data"]["token"].as_str().unwrap().to_owned();

    let weak = t.post("/api/v1/auth/password/reset", json!({"token": mailed, "password": "password1"})).await;
    assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fresh = t.post("/api/v1/auth/password/forgot", json!({"email": "gus@example.com"})).await;
    assert_eq!(fresh.status, StatusCode::ACCEPTED);
    let mailed = t.last_event("user.password_reset_requested").await.unwrap()["data"]["token"].as_str().unwrap().to_owned();
    let done = t.post("/api/v1/auth/password/reset", json!({"token": mailed, "password": "a brand new passphrase"})).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.body);

    assert_eq!(t.login("gus@example.com", PASSWORD).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(t.login("gus@example.com", "a brand new passphrase").await.status, StatusCode::OK);
    let old = t.post("/api/v1/auth/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "sessions before the reset are gone");
    let reused = t.post("/api/v1/auth/password/reset", json!({"token": mailed, "password": "another new passphrase"})).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn password_change_needs_the_current_password() {
    let t = TestApp::new().await;
    let (token, _) = t.customer("hal@example.com").await;
    let body = |current: &str| json!({"current_password": current, "new_password": "the next passphrase"});
    let wrong = t.send("POST", "/api/v1/auth/password/change", Some(&token), Some(body("nope nope nope"))).await;
    assert_eq!((wrong.status, wrong.code()), (StatusCode::FORBIDDEN, "wrong_password"));
    let anonymous = t.send("POST", "/api/v1/auth/password/change", None, Some(body(PASSWORD))).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let ok = t.send("POST", "/api/v1/auth/password/change", Some(&token), Some(body(PASSWORD))).await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    assert_eq!(t.login("hal@example.com", "the next passphrase").await.status, StatusCode::OK);
}

#[tokio::test]
async fn profile_updates_and_email_change_needs_verification() {
    let t = TestApp::new().await;
    let (token, _) = t.customer("ivy@example.com").await;
    let bad = t.send("PATCH", "/api/v1/me", Some(&token), Some(json!({"phone": "12345"}))).await;
    assert_eq!((bad.status, bad.body["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("phone")));
    let ok = t.send("PATCH", "/api/v1/me", Some(&token), Some(json!({"name": "Ivy", "phone": "+44 20 7946 0958", "locale": "en-GB"}))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!((ok.body["name"].as_str(), ok.body["phone"].as_str()), (Some("Ivy"), Some("+442079460958")));
    let cleared = t.send("PATCH", "/api/v1/me", Some(&token), Some(json!({"phone": null}))).await;
    assert!(cleared.body.get("phone").is_none());
    assert_eq!(cleared.body["locale"], "en-GB", "absent fields stay");

    let mailed = t.last_event("user.email_verification_requested").await.unwrap()["data"]["token"].as_str().unwrap().to_owned();
    t.post("/api/v1/auth/verify-email", json!({"token": mailed})).await;
    // A new address needs the password, and waits for the link mailed to it.
    let bare = t.send("PATCH", "/api/v1/me", Some(&token), Some(json!({"email": "ivy@new.example"}))).await;
    assert_eq!((bare.status, bare.code(), bare.body["error"]["field"].as_str()), (StatusCode::FORBIDDEN, "password_required", Some("password")));
    let moved = t.send("PATCH", "/api/v1/me", Some(&token), Some(json!({"email": "ivy@new.example", "password": PASSWORD}))).await;
    assert_eq!((moved.body["email"].as_str(), moved.body["email_verified"].as_bool()), (Some("ivy@example.com"), Some(true)), "pending until the link is used");
    assert_eq!(t.count_events("user.email_verification_requested").await, 2);
    let link = t.last_event("user.email_verification_requested").await.unwrap()["data"].clone();
    assert_eq!(link["email"], "ivy@new.example");
    assert_eq!(t.post("/api/v1/auth/verify-email", json!({"token": link["token"]})).await.status, StatusCode::NO_CONTENT);
    let me = t.get("/api/v1/me", &token).await;
    assert_eq!((me.body["email"].as_str(), me.body["email_verified"].as_bool()), (Some("ivy@new.example"), Some(true)));
    assert_eq!(t.last_event("user.email_changed").await.unwrap()["data"]["old_email"], "ivy@example.com");
    // The link sent to the old address no longer verifies anything.
    let old_link = t.post("/api/v1/auth/verify-email", json!({"token": mailed})).await;
    assert_eq!(old_link.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Another account's address: the same answer, and its owner is told.
    t.register("taken@example.com").await;
    let clash = t.send("PATCH", "/api/v1/me", Some(&token), Some(json!({"email": "taken@example.com", "password": PASSWORD}))).await;
    assert_eq!((clash.status, clash.body["email"].as_str()), (StatusCode::OK, Some("ivy@new.example")));
    let warned = t.last_event("user.email_reuse_attempted").await.unwrap();
    assert_eq!((warned["data"]["email"].as_str(), warned["data"]["attempt"].as_str()), (Some("taken@example.com"), Some("email_change")));
}
