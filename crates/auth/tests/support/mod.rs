//! A running auth service on a fresh database, and a client for it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test files

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kernel::config::Config;
use platform::app::App;
use platform::on_db;
use platform::service::ServiceContext;
use platform::testing::Sandbox;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub sandbox: Arc<Sandbox>,
    pub app: App,
    pub config: Arc<Config>,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Response {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with(|_| {}).await
    }

    pub async fn with(tune: impl FnOnce(&mut Config)) -> TestApp {
        let sandbox = Sandbox::new().await;
        let mut config = (*sandbox.config()).clone();
        config.services = vec!["auth".into()];
        // A process of auth alone: the shop's public address is given, as
        // every process of a split shop must have it (the token issuer).
        config.public_url = Some("http://shop.test".into());
        tune(&mut config);
        let config = Arc::new(config);
        let app = App::start(config.clone(), &[auth::spec()], axum::Router::new(), false).await.unwrap();
        TestApp { sandbox: Arc::new(sandbox), app, config }
    }

    /// Another process on the same databases (or this one after a restart).
    pub async fn with_same(other: &TestApp) -> TestApp {
        let app = App::start(other.config.clone(), &[auth::spec()], axum::Router::new(), false).await.unwrap();
        TestApp { sandbox: other.sandbox.clone(), app, config: other.config.clone() }
    }

    pub async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request.header("content-type", "application/json").body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.router().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Response { status: parts.status, headers: parts.headers, body }
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.send("POST", path, None, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.send("GET", path, Some(token), None).await
    }

    pub async fn register(&self, email: &str) -> Response {
        let r = self.post("/api/v1/auth/register", json!({"email": email, "password": PASSWORD, "name": "Test User"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post("/api/v1/auth/login", json!({"email": email, "password": password})).await
    }

    /// Registers and signs in; returns (access token, refresh token).
    pub async fn customer(&self, email: &str) -> (String, String) {
        self.register(email).await;
        let r = self.login(email, PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (r.body["access_token"].as_str().unwrap().to_owned(), r.body["refresh_token"].as_str().unwrap().to_owned())
    }

    /// The auth service as the CLI builds it.
    pub fn auth(&self) -> auth::Auth {
        let ctx = ServiceContext {
            name: "auth",
            db: self.app.db("auth").unwrap().clone(),
            bus: self.app.bus().clone(),
            config: self.config.clone(),
            shutdown: CancellationToken::new(),
            ports: Default::default(),
        };
        auth::open(&ctx).unwrap()
    }

    /// A staff user with `role`, signed in; returns the access token.
    pub async fn staff(&self, email: &str, role: kernel::auth::Role) -> String {
        auth::admin::create_user(&self.auth(), email, "Staff", PASSWORD, &[role]).await.unwrap();
        let r = self.login(email, PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["access_token"].as_str().unwrap().to_owned()
    }

    /// The newest event of `event_type` in auth's outbox, as a consumer sees it.
    pub async fn last_event(&self, event_type: &str) -> Option<Value> {
        let db = self.app.db("auth").unwrap();
        let payload: Option<String> = on_db!(db, pool => sqlx::query_scalar(
            "SELECT payload FROM outbox WHERE event_type = $1 ORDER BY id DESC LIMIT 1")
            .bind(event_type).fetch_optional(pool).await)
        .unwrap();
        payload.map(|p| serde_json::from_str(&p).unwrap())
    }

    pub async fn count_events(&self, event_type: &str) -> i64 {
        let db = self.app.db("auth").unwrap();
        on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE event_type = $1")
            .bind(event_type).fetch_one(pool).await)
        .unwrap()
    }
}
