//! What the black-box tests share: one request through a router, and a
//! signed-in user of any role.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // tests fail loudly; not every test file uses all

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use kernel::auth::Role;
use platform::app::App;
use platform::service::ServiceContext;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Sends one request; a JSON body is sent as JSON and the answer read as
/// JSON (`Null` when it is not).
pub async fn call(app: &App, method: &str, path: &str, headers: &[(&str, String)], body: Option<Value>) -> (StatusCode, HeaderMap, Value) {
    let mut r = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        r = r.header(*name, value);
    }
    let r = match body {
        Some(b) => r.header("content-type", "application/json").body(Body::from(b.to_string())),
        None => r.body(Body::empty()),
    }
    .unwrap();
    let response = app.router().oneshot(r).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Creates a user with `role` (as an operator would) and signs them in:
/// their access token.
pub async fn signed_in(app: &App, config: &Arc<kernel::config::Config>, email: &str, role: Role) -> String {
    let ctx = ServiceContext {
        name: "auth",
        db: app.db("auth").unwrap().clone(),
        bus: app.bus().clone(),
        config: config.clone(),
        shutdown: Default::default(),
        ports: Default::default(),
    };
    let auth = auth::open(&ctx).unwrap();
    auth::admin::create_user(&auth, email, "Person", "a long passphrase", &[role]).await.unwrap();
    let login = json!({"email": email, "password": "a long passphrase"});
    let (_, _, body) = call(app, "POST", "/api/v1/auth/login", &[], Some(login)).await;
    body["access_token"].as_str().unwrap().to_owned()
}
