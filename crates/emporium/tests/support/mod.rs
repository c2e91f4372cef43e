//! What the black-box tests share: one request through a router, a
//! signed-in user of any role, the shop on a real port, and the `emporium`
//! binary as an operator runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // tests fail loudly; not every test file uses all

pub mod pages;
pub mod webdriver;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;

use platform::on_db;
use platform::testing::Sandbox;

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

/// The password every user the tests create signs in with.
pub const PASSWORD: &str = "a long passphrase";

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
    auth::admin::create_user(&auth, email, "Person", PASSWORD, &[role]).await.unwrap();
    let login = json!({"email": email, "password": PASSWORD});
    let (_, _, body) = call(app, "POST", "/api/v1/auth/login", &[], Some(login)).await;
    body["access_token"].as_str().unwrap().to_owned()
}

/// A whole shop in one process, with an admin signed in.
pub struct Shop {
    pub _sandbox: Sandbox,
    pub app: App,
    pub config: Arc<kernel::config::Config>,
    pub staff: String,
}

/// Who sends a request: a token, a guest cart's secret, an idempotency key.
#[derive(Clone, Default)]
pub struct Who {
    pub token: Option<String>,
    pub secret: Option<String>,
    pub idempotency_key: Option<String>,
}

pub fn address(country: &str, region: Option<&str>) -> Value {
    json!({"name": "Ada Lovelace", "line1": "1 Market St", "city": "San Francisco", "region": region,
           "postal_code": "94105", "country": country, "phone": "+14155550123"})
}

impl Shop {
    pub async fn new() -> Shop {
        Shop::with(|_| {}).await
    }

    pub async fn with(tune: impl FnOnce(&mut kernel::config::Config)) -> Shop {
        let sandbox = Sandbox::new().await;
        let mut config = (*sandbox.config()).clone();
        // Every role: the pages call the API in process. A test that runs
        // fewer has the shop's public address already, as such a process must.
        config.services = kernel::config::ROLES.iter().map(|r| r.to_string()).collect();
        config.public_url = Some("http://shop.test".into());
        tune(&mut config);
        platform::telemetry::init_logging(&config.log);
        let config = Arc::new(config);
        let app = emporium::start_shop(config.clone(), false).await.unwrap();
        let mut shop = Shop { _sandbox: sandbox, app, config, staff: String::new() };
        shop.staff = shop.user("admin@example.com", Role::Admin).await;
        if !shop.config.services.iter().any(|s| s == "orders") {
            return shop;
        }
        // The rules a shop sets up: shipping to the US, California's tax.
        let (s, _) = shop.send("POST", "/api/v1/admin/shipping-methods", &shop.as_staff(), Some(json!({
            "name": "Ground", "countries": ["US"], "currency": "USD",
            "weight_bands": [{"up_to_grams": 1000, "amount": 500}, {"up_to_grams": 10000, "amount": 900}],
            "free_above": 20000, "min_days": 3, "max_days": 5}))).await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, _) = shop.send("POST", "/api/v1/admin/tax-rates", &shop.as_staff(), Some(json!({
            "country": "US", "region": "CA", "name": "California", "rate_bp": 725, "shipping_taxable": false}))).await;
        assert_eq!(s, StatusCode::CREATED);
        shop
    }

    /// The shop on a real loopback port, each request knowing its
    /// connection's address as in `emporium serve`: its base URL
    /// (`http://127.0.0.1:…`).
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = self.app.router();
        tokio::spawn(async move { axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await });
        base
    }

    pub fn as_staff(&self) -> Who {
        Who { token: Some(self.staff.clone()), ..Who::default() }
    }

    pub async fn send(&self, method: &str, path: &str, who: &Who, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, body) = self.send_full(method, path, who, body).await;
        (status, body)
    }

    pub async fn send_full(&self, method: &str, path: &str, who: &Who, body: Option<Value>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut headers = Vec::new();
        if let Some(t) = &who.token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        if let Some(s) = &who.secret {
            headers.push(("x-cart-secret", s.clone()));
        }
        if let Some(k) = &who.idempotency_key {
            headers.push(("idempotency-key", k.clone()));
        }
        call(&self.app, method, path, &headers, body).await
    }

    pub async fn user(&self, email: &str, role: Role) -> String {
        signed_in(&self.app, &self.config, email, role).await
    }

    /// A product with one SKU at `price` cents and `stock` units on hand.
    pub async fn product(&self, sku: &str, price: i64, stock: i64) -> String {
        let (s, p) = self.send("POST", "/api/v1/admin/products", &self.as_staff(), Some(json!({
            "title": format!("Product {sku}"), "status": "active",
            "variants": [{"sku": sku, "prices": {"USD": price}, "weight_grams": 400}]}))).await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let (s, _) = self.send("PUT", &format!("/api/v1/admin/inventory/{sku}"), &self.as_staff(), Some(json!({"on_hand": stock}))).await;
        assert_eq!(s, StatusCode::OK);
        p["id"].as_str().unwrap().to_owned()
    }

    pub async fn available(&self, sku: &str) -> (i64, i64) {
        let (_, body) = self.send("GET", &format!("/api/v1/admin/inventory?sku={sku}"), &self.as_staff(), None).await;
        let levels = body.as_array().cloned().unwrap_or_default();
        let on_hand = levels.iter().map(|l| l["on_hand"].as_i64().unwrap()).sum();
        let reserved = levels.iter().map(|l| l["reserved"].as_i64().unwrap()).sum();
        (on_hand, reserved)
    }

    /// A guest cart with `items`, an email, a Californian address and the ground method.
    pub async fn ready_cart(&self, items: &[(&str, i64)], who: Option<&Who>) -> (String, Who) {
        let base = who.cloned().unwrap_or_default();
        let (s, cart) = self.send("POST", "/api/v1/carts", &base, None).await;
        assert!(s.is_success(), "{cart}");
        let id = cart["id"].as_str().unwrap().to_owned();
        let who = Who { secret: cart["secret"].as_str().map(str::to_owned).or(base.secret.clone()), ..base };
        for (sku, q) in items {
            let (s, body) = self.send("POST", &format!("/api/v1/carts/{id}/items"), &who, Some(json!({"sku": sku, "quantity": q}))).await;
            assert_eq!(s, StatusCode::OK, "{body}");
        }
        self.send("PUT", &format!("/api/v1/carts/{id}/email"), &who, Some(json!({"email": "Ada@Example.com"}))).await;
        let (s, body) = self.send("PUT", &format!("/api/v1/carts/{id}/shipping-address"), &who, Some(address("US", Some("CA")))).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let (_, options) = self.send("GET", &format!("/api/v1/carts/{id}/shipping-options"), &who, None).await;
        let method = options["data"][0]["id"].as_str().unwrap().to_owned();
        let (s, body) = self.send("PUT", &format!("/api/v1/carts/{id}/shipping-method"), &who, Some(json!({"id": method}))).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        (id, who)
    }

    pub async fn checkout(&self, cart: &str, who: &Who, token: &str) -> (StatusCode, Value) {
        self.send("POST", &format!("/api/v1/carts/{cart}/checkout"), who, Some(json!({"payment": {"provider": "test", "token": token}}))).await
    }

    pub async fn count(&self, service: &str, sql: &str) -> i64 {
        let db = self.app.db(service).unwrap();
        let sql = sql.to_owned();
        on_db!(db, pool => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await).unwrap()
    }
}

/// The `emporium` binary in the sandbox, as an operator's shell would run it:
/// SQLite by default, the test's PostgreSQL when there is one.
pub fn emporium_command(sandbox: &Sandbox) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_emporium"));
    cmd.current_dir(sandbox.dir.path())
        .env_remove("EMPORIUM_DATABASE_URL")
        .env_remove("EMPORIUM_NATS_URL")
        .env_remove("EMPORIUM_REDIS_URL")
        .env_remove("EMPORIUM_CONFIG")
        .env("EMPORIUM_DATA_DIR", sandbox.data_dir())
        .env("EMPORIUM_LOG", "info");
    if let Some(url) = &sandbox.database_url {
        cmd.env("EMPORIUM_DATABASE_URL", url);
    }
    cmd
}

/// What a command wrote: its output and its errors, as text.
pub fn output_text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A stand-in for Stripe that asks for 3-D Secure on every payment, so the
/// outcome arrives by webhook.
pub async fn fake_stripe() -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/payment_intents",
        post(|| async {
            axum::Json(json!({"id": "pi_3Test", "object": "payment_intent", "status": "requires_action", "amount": 1000,
                "next_action": {"type": "redirect_to_url", "redirect_to_url": {"url": "https://stripe.example/3ds"}}}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}
