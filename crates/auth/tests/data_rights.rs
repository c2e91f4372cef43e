//! Addresses, the data export, and erasure.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use axum::http::StatusCode;
use serde_json::json;
use support::{PASSWORD, TestApp};

fn home() -> serde_json::Value {
    json!({"name": "Nia Okafor", "line1": "1 Main St", "city": "Springfield", "region": "IL",
           "postal_code": "62701", "country": "us", "phone": "+1 217 555 0100"})
}

#[tokio::test]
async fn an_address_book_with_defaults() {
    let t = TestApp::new().await;
    let (token, _) = t.customer("nia@example.com").await;
    let first = t.send("POST", "/api/v1/me/addresses", Some(&token), Some(home())).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["country"], "US");
    assert_eq!((first.body["default_shipping"].as_bool(), first.body["default_billing"].as_bool()), (Some(true), Some(true)));
    let first_id = first.body["id"].as_str().unwrap().to_owned();

    let mut work = home();
    work["line1"] = json!("500 Office Park");
    work["default_shipping"] = json!(true);
    let second = t.send("POST", "/api/v1/me/addresses", Some(&token), Some(work)).await;
    assert_eq!((second.body["default_shipping"].as_bool(), second.body["default_billing"].as_bool()), (Some(true), Some(false)));
    let list = t.get("/api/v1/me/addresses", &token).await;
    let defaults: Vec<(bool, bool)> = list.body.as_array().unwrap().iter()
        .map(|a| (a["default_shipping"].as_bool().unwrap(), a["default_billing"].as_bool().unwrap())).collect();
    assert_eq!(defaults, vec![(false, true), (true, false)], "one default of each kind");

    let bad = t.send("POST", "/api/v1/me/addresses", Some(&token), Some(json!({"name": "X", "line1": "Y", "city": "Z", "postal_code": "1", "country": "XX"}))).await;
    assert_eq!((bad.status, bad.body["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("country")));
    let missing = t.send("POST", "/api/v1/me/addresses", Some(&token), Some(json!({"name": "X"}))).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);

    let patched = t.send("PATCH", &format!("/api/v1/me/addresses/{first_id}"), Some(&token), Some(json!({"city": "Chicago", "phone": null}))).await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!((patched.body["city"].as_str(), patched.body.get("phone")), (Some("Chicago"), None));
    assert_eq!(patched.body["line1"], "1 Main St", "untouched fields stay");

    // Another customer cannot see or touch it.
    let (other, _) = t.customer("zed@example.com").await;
    assert_eq!(t.send("PATCH", &format!("/api/v1/me/addresses/{first_id}"), Some(&other), Some(json!({"city": "X"}))).await.status, StatusCode::NOT_FOUND);
    assert_eq!(t.send("DELETE", &format!("/api/v1/me/addresses/{first_id}"), Some(&other), None).await.status, StatusCode::NOT_FOUND);
    assert!(t.get("/api/v1/me/addresses", &other).await.body.as_array().unwrap().is_empty());

    assert_eq!(t.send("DELETE", &format!("/api/v1/me/addresses/{first_id}"), Some(&token), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(t.get("/api/v1/me/addresses", &token).await.body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_export_holds_the_users_data_and_erasure_removes_it() {
    let t = TestApp::new().await;
    let (token, refresh) = t.customer("oli@example.com").await;
    t.send("PATCH", "/api/v1/me", Some(&token), Some(json!({"phone": "+33 1 23 45 67 89"}))).await;
    t.send("POST", "/api/v1/me/addresses", Some(&token), Some(home())).await;
    let export = t.get("/api/v1/me/export", &token).await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(export.headers["content-disposition"].to_str().unwrap().contains("attachment"));
    let doc = &export.body;
    assert_eq!(doc["account"]["email"], "oli@example.com");
    assert_eq!(doc["account"]["phone"], "+33123456789");
    assert_eq!(doc["addresses"][0]["address"]["line1"], "1 Main St");
    assert!(doc["services"].is_object());

    let wrong = t.send("DELETE", "/api/v1/me", Some(&token), Some(json!({"password": "not my password"}))).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let gone = t.send("DELETE", "/api/v1/me", Some(&token), Some(json!({"password": PASSWORD}))).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);

    let deleted = t.last_event("user.deleted").await.unwrap();
    let user_id = deleted["data"]["user_id"].as_str().unwrap().to_owned();
    assert_eq!(t.login("oli@example.com", PASSWORD).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(t.post("/api/v1/auth/refresh", json!({"refresh_token": refresh})).await.status, StatusCode::UNAUTHORIZED);
    let admin = t.staff("dpo@example.com", kernel::auth::Role::Admin).await;
    let tombstone = t.get(&format!("/api/v1/admin/users/{user_id}"), &admin).await;
    assert_eq!(tombstone.body["name"], "Deleted user");
    assert!(!tombstone.body.to_string().contains("oli@example.com"));
    assert!(tombstone.body.get("phone").is_none());
    // The address is gone from the database itself, not only hidden.
    let db = t.app.db("auth").unwrap();
    let left: i64 = platform::on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM addresses WHERE user_id = $1")
        .bind(&user_id).fetch_one(pool).await).unwrap();
    assert_eq!(left, 0);
    // The email can be used for a new account.
    t.register("oli@example.com").await;
}
