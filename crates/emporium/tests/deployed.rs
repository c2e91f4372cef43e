//! The scaled-out shop as an operator runs it: `deploy/local/up.sh` starts
//! one process per service and replica (two of catalog, orders, search and
//! web) behind Debian's nginx, on PostgreSQL, NATS JetStream and Redis, and
//! this test goes through nginx like shoppers, staff and an integration do —
//! then kills replicas mid-sale and checks the books.
//!
//! It runs when the test environment has PostgreSQL, NATS and Redis
//! (`EMPORIUM_TEST_DATABASE_URL`, `EMPORIUM_TEST_NATS_URL`,
//! `EMPORIUM_TEST_REDIS_URL`) and nginx (`/usr/sbin/nginx`); with
//! `EMPORIUM_TEST_NGINX=required` a missing nginx is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::testing::{Sandbox, unique};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NGINX: &str = "/usr/sbin/nginx";
const ADMIN_PASSWORD: &str = "correct horse battery staple 42";
/// The processes `up.sh` starts, in the order of their ports (BASE_PORT+10…).
const NAMES: [&str; 10] = ["auth-1", "catalog-1", "catalog-2", "orders-1", "orders-2", "search-1", "search-2", "notify-1", "web-1", "web-2"];

/// What this test needs, or why it does not run.
fn environment() -> Option<(String, String)> {
    let nats = std::env::var("EMPORIUM_TEST_NATS_URL").ok()?;
    let redis = std::env::var("EMPORIUM_TEST_REDIS_URL").ok()?;
    std::env::var("EMPORIUM_TEST_DATABASE_URL").ok()?;
    if !Path::new(NGINX).exists() {
        assert_ne!(std::env::var("EMPORIUM_TEST_NGINX").as_deref(), Ok("required"), "EMPORIUM_TEST_NGINX=required and there is no {NGINX} (apt-get install nginx-light)");
        eprintln!("skipped: no {NGINX}");
        return None;
    }
    Some((nats, redis))
}

/// A run of `deploy/local/up.sh`, stopped with `down.sh` when dropped.
struct Topology {
    root: PathBuf,
    run_dir: tempfile::TempDir,
    base: u16,
    url: String,
    http: reqwest::Client,
}

impl Drop for Topology {
    /// Stops everything, and keeps the processes' logs in
    /// `target/deployed-logs/` for whoever reads a failure.
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(self.root.join("deploy/local/down.sh"))
            .env("RUN_DIR", self.run_dir.path())
            .env("GRACE_SECS", "5")
            .status();
        let kept = self.root.join("target/deployed-logs");
        let _ = std::fs::remove_dir_all(&kept);
        if std::fs::create_dir_all(&kept).is_ok()
            && let Ok(logs) = std::fs::read_dir(self.run_dir.path().join("logs"))
        {
            for log in logs.flatten() {
                let _ = std::fs::copy(log.path(), kept.join(log.file_name()));
            }
        }
    }
}

/// A block of 20 loopback ports nobody listens on, below the range the
/// system hands out for outgoing connections (32768 and up).
fn free_base() -> u16 {
    for attempt in 0..200u32 {
        let base = 10_000 + ((std::process::id() * 7 + attempt * 131) % 1_000) as u16 * 20;
        let free = (base..base + 20).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free block of 20 ports on 127.0.0.1");
}

impl Topology {
    async fn up(sandbox: &Sandbox, nats: &str, redis: &str) -> Topology {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
        let run_dir = tempfile::Builder::new().prefix("emporium-deploy-").tempdir().unwrap();
        let base = free_base();
        let config = sandbox.config();
        let (stream, prefix) = sandbox.stream();
        let mut up = Command::new("bash");
        up.arg(root.join("deploy/local/up.sh"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
            .env("RUN_DIR", run_dir.path())
            .env("BASE_PORT", base.to_string())
            .env("EMPORIUM_BIN", env!("CARGO_BIN_EXE_emporium"))
            .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("READY_TIMEOUT_SECS", "240")
            .env("EMPORIUM_DATABASE_URL", config.database.url.clone().unwrap())
            .env("EMPORIUM_NATS_URL", nats)
            .env("EMPORIUM_NATS_STREAM", &stream)
            .env("EMPORIUM_NATS_SUBJECT_PREFIX", &prefix)
            .env("EMPORIUM_REDIS_URL", redis)
            .env("EMPORIUM_REDIS_PREFIX", unique("t"))
            .env("EMPORIUM_LOG", "warn")
            .env("EMPORIUM_METRICS_SAMPLE_INTERVAL_MS", "200")
            // Every buyer of this test comes from 127.0.0.1.
            .env("EMPORIUM_LIMITS_PER_IP_PER_MINUTE", "0")
            .env("EMPORIUM_LIMITS_CARTS_PER_IP_PER_HOUR", "0")
            .env("EMPORIUM_LIMITS_SIGN_UPS_PER_IP_PER_HOUR", "0")
            .env("EMPORIUM_AUTH_LOGIN_ATTEMPTS_PER_IP_PER_MINUTE", "1000")
            // A checkout cut off by a killed replica is rolled back soon.
            .env("EMPORIUM_ORDERS_RECONCILE_AFTER_SECS", "5");
        if let Ok(s3) = std::env::var("EMPORIUM_TEST_S3_URL") {
            up.env("EMPORIUM_S3_URL", s3).env("EMPORIUM_MEDIA_S3_BUCKET", unique("media").replace('_', "-"));
        }
        let out = tokio::task::spawn_blocking(move || up.output()).await.unwrap().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "up.sh failed:\n{stdout}\n{stderr}");
        let url = stdout.lines().last().unwrap_or_default().trim().to_owned();
        assert_eq!(url, format!("http://127.0.0.1:{base}"), "up.sh's last line is the public URL:\n{stdout}");
        let http = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(60)).build().unwrap();
        Topology { root, run_dir, base, url, http }
    }

    fn port(&self, name: &str) -> u16 {
        self.base + 10 + NAMES.iter().position(|n| *n == name).unwrap() as u16
    }

    fn kill(&self, name: &str) {
        let pid = std::fs::read_to_string(self.run_dir.path().join(format!("pids/{name}.pid"))).unwrap();
        let status = Command::new("kill").args(["-9", pid.trim()]).status().unwrap();
        assert!(status.success(), "kill -9 {name} ({pid})");
    }
}

/// One HTTP exchange: status and JSON body (`Null` when not JSON).
async fn send(http: &reqwest::Client, method: &str, url: &str, headers: &[(&str, &str)], body: Option<Value>) -> Result<(StatusCode, Value), reqwest::Error> {
    let mut request = http.request(method.parse().unwrap(), url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

fn address() -> Value {
    json!({"name": "Ada Lovelace", "line1": "1 Market St", "city": "San Francisco", "region": "CA",
           "postal_code": "94105", "country": "US", "phone": "+14155550123"})
}

/// A guest with a cart of one `sku`, an email, an address and a shipping
/// method, ready to pay: the cart's id and secret.
async fn ready_buyer(http: &reqwest::Client, url: &str, sku: &str, n: usize) -> (String, String) {
    let (s, cart) = send(http, "POST", &format!("{url}/api/v1/carts"), &[], None).await.unwrap();
    assert!(s.is_success(), "{s} {cart}");
    let id = cart["id"].as_str().unwrap().to_owned();
    let secret = cart["secret"].as_str().unwrap().to_owned();
    let h = [("x-cart-secret", secret.as_str())];
    let (s, b) = send(http, "POST", &format!("{url}/api/v1/carts/{id}/items"), &h, Some(json!({"sku": sku, "quantity": 1}))).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = send(http, "PUT", &format!("{url}/api/v1/carts/{id}/email"), &h, Some(json!({"email": format!("buyer{n}@example.com")}))).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = send(http, "PUT", &format!("{url}/api/v1/carts/{id}/shipping-address"), &h, Some(address())).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, options) = send(http, "GET", &format!("{url}/api/v1/carts/{id}/shipping-options"), &h, None).await.unwrap();
    let method = options["data"][0]["id"].as_str().unwrap_or_else(|| panic!("no shipping option: {options}")).to_owned();
    let (s, b) = send(http, "PUT", &format!("{url}/api/v1/carts/{id}/shipping-method"), &h, Some(json!({"id": method}))).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{b}");
    (id, secret)
}

/// How a buyer's checkout ended, after retrying with the same
/// `Idempotency-Key` through every transport error and 5xx.
#[derive(Debug)]
struct Outcome {
    status: StatusCode,
    order: Option<String>,
    /// 5xx answers and transport errors met before the end.
    troubles: usize,
}

async fn check_out(http: &reqwest::Client, url: &str, cart: &str, secret: &str) -> Outcome {
    let key = unique("idem");
    let headers = [("x-cart-secret", secret), ("idempotency-key", key.as_str())];
    let body = json!({"payment": {"provider": "test", "token": "tok_visa"}});
    let mut troubles = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match send(http, "POST", &format!("{url}/api/v1/carts/{cart}/checkout"), &headers, Some(body.clone())).await {
            Ok((status, answer)) if !status.is_server_error() && answer["error"]["code"] != "idempotency_request_in_progress" => {
                let order = answer["id"].as_str().map(str::to_owned);
                return Outcome { status, order, troubles };
            }
            Ok((status, _)) if status.is_server_error() => troubles += 1,
            Ok(_) => {}
            Err(_) => troubles += 1,
        }
        assert!(Instant::now() < deadline, "checkout of {cart} never ended ({troubles} troubles)");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// 300 buyers ready in parallel (32 at a time), then all checking out at
/// once; `during` runs once `after` checkouts have been sent.
async fn flash_sale(top: &Topology, sku: &str, buyers: usize, kill: Option<(usize, &[&str])>) -> Vec<Outcome> {
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut ready = Vec::new();
    for n in 0..buyers {
        let (http, url, sku, limit) = (top.http.clone(), top.url.clone(), sku.to_owned(), limit.clone());
        ready.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            ready_buyer(&http, &url, &sku, n).await
        }));
    }
    let mut carts = Vec::new();
    for r in ready {
        carts.push(r.await.unwrap());
    }
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut sales = Vec::new();
    for (cart, secret) in carts {
        let (http, url, sent) = (top.http.clone(), top.url.clone(), sent.clone());
        sales.push(tokio::spawn(async move {
            sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            check_out(&http, &url, &cart, &secret).await
        }));
    }
    if let Some((after, names)) = kill {
        while sent.load(std::sync::atomic::Ordering::SeqCst) < after {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        for name in names {
            top.kill(name);
        }
    }
    let mut outcomes = Vec::new();
    for s in sales {
        outcomes.push(s.await.unwrap());
    }
    outcomes
}

struct Staff<'a> {
    top: &'a Topology,
    auth: String,
}

impl Staff<'_> {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        send(&self.top.http, method, &format!("{}{path}", self.top.url), &[("authorization", &self.auth)], body).await.unwrap()
    }

    /// A product of one SKU with `units` on hand: its id.
    async fn product(&self, sku: &str, units: i64) -> String {
        let (s, p) = self.send("POST", "/api/v1/admin/products", Some(json!({
            "title": format!("Flash {sku}"), "status": "active",
            "variants": [{"sku": sku, "prices": {"USD": 2500}, "weight_grams": 400}]}))).await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let (s, b) = self.send("PUT", &format!("/api/v1/admin/inventory/{sku}"), Some(json!({"on_hand": units}))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        p["id"].as_str().unwrap().to_owned()
    }

    /// On hand and reserved over every location.
    async fn stock(&self, sku: &str) -> (i64, i64) {
        let (s, body) = self.send("GET", &format!("/api/v1/admin/inventory?sku={sku}"), None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let levels = body.as_array().cloned().unwrap_or_default();
        (levels.iter().map(|l| l["on_hand"].as_i64().unwrap()).sum(), levels.iter().map(|l| l["reserved"].as_i64().unwrap()).sum())
    }
}

/// Rows of the shop's database, read as an auditor would.
async fn scalar(db: &sqlx::PgPool, sql: &str, sku: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned())).bind(sku).fetch_one(db).await.unwrap()
}

/// What the books say of `sku` once the shop has settled: every paid order
/// has its receipt and its sales statistic.
async fn audit(db: &sqlx::PgPool, sku: &str) -> (i64, BTreeMap<&'static str, i64>) {
    let paid_units = scalar(db, "SELECT COALESCE(SUM(l.quantity), 0)::BIGINT FROM orders.order_lines l JOIN orders.orders o ON o.id = l.order_id \
        WHERE l.sku = $1 AND o.status = 'paid'", sku).await;
    let mut missing = BTreeMap::new();
    missing.insert("receipt", scalar(db, "SELECT COUNT(*) FROM orders.orders o WHERE o.status = 'paid' \
        AND EXISTS (SELECT 1 FROM orders.order_lines l WHERE l.order_id = o.id AND l.sku = $1) \
        AND NOT EXISTS (SELECT 1 FROM notify.deliveries d WHERE d.event_type = 'order.paid' AND d.channel = 'email' AND d.subject LIKE '%#' || o.number::TEXT || '%')", sku).await);
    missing.insert("statistic", scalar(db, "SELECT COUNT(*) FROM orders.orders o WHERE o.status = 'paid' \
        AND EXISTS (SELECT 1 FROM orders.order_lines l WHERE l.order_id = o.id AND l.sku = $1) \
        AND NOT EXISTS (SELECT 1 FROM search.purchases p WHERE p.order_id = o.id)", sku).await);
    (paid_units, missing)
}

async fn settled(db: &sqlx::PgPool, sku: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (units, missing) = audit(db, sku).await;
        if missing.values().all(|m| *m == 0) {
            return units;
        }
        assert!(Instant::now() < deadline, "paid orders of {sku} still lack: {missing:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_deployed_topology_sells_through_nginx_and_survives_killed_replicas() {
    let Some((nats, redis)) = environment() else { return };
    let sandbox = Sandbox::new().await;
    let top = Topology::up(&sandbox, &nats, &redis).await;
    let url = top.url.clone();
    let http = top.http.clone();
    let db = sqlx::PgPool::connect(sandbox.config().database.url.as_deref().unwrap()).await.unwrap();

    // Staff: the admin signs in through nginx (auth), sets up shipping
    // (orders) and makes an API key for an integration.
    let (s, tokens) = send(&http, "POST", &format!("{url}/api/v1/auth/login"), &[], Some(json!({"email": "admin@example.com", "password": ADMIN_PASSWORD}))).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{tokens}");
    let admin = Staff { top: &top, auth: format!("Bearer {}", tokens["access_token"].as_str().unwrap()) };
    let (s, b) = admin.send("POST", "/api/v1/admin/shipping-methods", Some(json!({
        "name": "Ground", "countries": ["US"], "currency": "USD",
        "weight_bands": [{"up_to_grams": 10000, "amount": 500}], "min_days": 3, "max_days": 5}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, key) = admin.send("POST", "/api/v1/admin/api-keys", Some(json!({"name": "erp", "permissions": ["catalog:write", "inventory:write", "orders:read"]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    let integration = Staff { top: &top, auth: format!("Bearer {}", key["key"].as_str().unwrap()) };

    // The API key works on the catalog's and the orders' routes, on every replica.
    for _ in 0..4 {
        let (s, b) = integration.send("GET", "/api/v1/admin/products?limit=1", None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = integration.send("GET", "/api/v1/admin/orders?limit=1", None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, _) = integration.send("GET", "/api/v1/admin/discounts", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the key has no marketing:write");

    // A shopper's pages, through nginx to the web tier.
    let (s, products) = send(&http, "GET", &format!("{url}/api/v1/products?limit=5"), &[], None).await.unwrap();
    assert_eq!(s, StatusCode::OK);
    let demo = products["data"].as_array().unwrap().iter().find(|p| p["variants"][0]["in_stock"] == true).expect("a demo product in stock").clone();
    let slug = demo["slug"].as_str().unwrap();
    for path in ["/".to_owned(), format!("/products/{slug}"), "/search?q=lamp".to_owned(), "/cart".to_owned()] {
        let response = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
    }
    let response = http.get(format!("{url}/admin")).send().await.unwrap();
    assert!(response.status().is_redirection(), "the console asks staff to sign in: {}", response.status());
    let response = http.get(format!("{url}/internal/v1/reservations/ord_x")).send().await.unwrap();
    assert!(matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::FORBIDDEN), "internal routes are not public: {}", response.status());
    let response = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert!(matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::FORBIDDEN), "/metrics is not public: {}", response.status());

    // A customer signs up, buys the demo product and finds the order.
    let email = format!("{}@example.com", unique("c"));
    let (s, b) = send(&http, "POST", &format!("{url}/api/v1/auth/register"), &[], Some(json!({"email": email, "password": "a long passphrase", "name": "Cy"}))).await.unwrap();
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, t) = send(&http, "POST", &format!("{url}/api/v1/auth/login"), &[], Some(json!({"email": email, "password": "a long passphrase"}))).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{t}");
    let bearer = format!("Bearer {}", t["access_token"].as_str().unwrap());
    let me = [("authorization", bearer.as_str())];
    let (s, cart) = send(&http, "POST", &format!("{url}/api/v1/carts"), &me, None).await.unwrap();
    assert!(s.is_success(), "{cart}");
    let cart = cart["id"].as_str().unwrap().to_owned();
    let sku = demo["variants"][0]["sku"].as_str().unwrap();
    for (method, path, body) in [
        ("POST", "items", json!({"sku": sku, "quantity": 1})),
        ("PUT", "email", json!({"email": email})),
        ("PUT", "shipping-address", address()),
    ] {
        let (s, b) = send(&http, method, &format!("{url}/api/v1/carts/{cart}/{path}"), &me, Some(body)).await.unwrap();
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
    }
    let (_, options) = send(&http, "GET", &format!("{url}/api/v1/carts/{cart}/shipping-options"), &me, None).await.unwrap();
    let (s, b) = send(&http, "PUT", &format!("{url}/api/v1/carts/{cart}/shipping-method"), &me, Some(json!({"id": options["data"][0]["id"]}))).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{b}");
    let key = unique("k");
    let (s, order) = send(&http, "POST", &format!("{url}/api/v1/carts/{cart}/checkout"), &[me[0], ("idempotency-key", &key)], Some(json!({"payment": {"provider": "test", "token": "tok_visa"}}))).await.unwrap();
    assert_eq!(s, StatusCode::CREATED, "{order}");
    let (s, mine) = send(&http, "GET", &format!("{url}/api/v1/orders"), &me, None).await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(mine["data"][0]["id"], order["id"], "{mine}");

    // Once each search replica has applied what the catalog published while
    // the shop started (the demo's products, relayed by the catalog's
    // outbox after start), a catalog edit reaches both replicas and the
    // storefront's search within 2 s.
    let deadline = Instant::now() + Duration::from_secs(240);
    for name in ["search-1", "search-2"] {
        loop {
            let metrics = http.get(format!("http://127.0.0.1:{}/metrics", top.port(name))).send().await.unwrap().text().await.unwrap();
            let behind: f64 = metrics
                .lines()
                .filter(|l| l.starts_with("events_consumer_lag{consumer=\"search_index_"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            let sampled = metrics.lines().any(|l| l.starts_with("events_consumer_lag{consumer=\"search_index_"));
            if sampled && behind < 0.5 {
                break;
            }
            assert!(Instant::now() < deadline, "{name} is still {behind} events behind the catalog");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let random = unique("");
    let word = format!("zephyr{}", &random[random.len() - 8..]);
    let started = Instant::now();
    let (s, b) = integration.send("PATCH", &format!("/api/v1/admin/products/{}", demo["id"].as_str().unwrap()), Some(json!({"title": format!("Lamp {word}")}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut seen: HashSet<&str> = HashSet::new();
    let mut when = BTreeMap::new();
    while seen.len() < 3 {
        for name in ["search-1", "search-2"] {
            let (_, hits) = send(&http, "GET", &format!("http://127.0.0.1:{}/api/v1/search?q={word}", top.port(name)), &[], None).await.unwrap();
            if hits["total"].as_u64().unwrap_or(0) > 0 && seen.insert(name) {
                when.insert(name, started.elapsed());
            }
        }
        let page = http.get(format!("{url}/search?q={word}")).send().await.unwrap().text().await.unwrap();
        if page.contains(&format!("/products/{slug}")) && seen.insert("storefront") {
            when.insert("storefront", started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(2), "after 2 s only {seen:?} found the edit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    eprintln!("the catalog edit reached: {when:?}");

    // A flash sale: 300 buyers for 50 units, across both replicas.
    let calm = unique("CALM").to_uppercase();
    admin.product(&calm, 50).await;
    let outcomes = flash_sale(&top, &calm, 300, None).await;
    let paid: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == StatusCode::CREATED).collect();
    assert_eq!(paid.len(), 50, "exactly 50 sold: {:?}", outcomes.iter().map(|o| o.status).collect::<Vec<_>>());
    assert!(outcomes.iter().all(|o| o.troubles == 0), "no 5xx in a calm sale");
    assert!(outcomes.iter().all(|o| o.status == StatusCode::CREATED || o.status == StatusCode::CONFLICT));
    assert_eq!(admin.stock(&calm).await, (0, 0));
    assert_eq!(settled(&db, &calm).await, 50);

    // Again, killing an orders and a catalog replica mid-burst.
    let storm = unique("STORM").to_uppercase();
    admin.product(&storm, 50).await;
    let outcomes = flash_sale(&top, &storm, 300, Some((120, &["orders-2", "catalog-2"]))).await;
    let troubles: usize = outcomes.iter().map(|o| o.troubles).sum();
    eprintln!("killed orders-2 and catalog-2 after 120 checkouts: {troubles} 5xx answers or broken connections, all retried");
    assert!(outcomes.iter().all(|o| o.status == StatusCode::CREATED || o.status == StatusCode::CONFLICT), "every buyer ends with an order or sold out: {:?}", outcomes.iter().map(|o| o.status).collect::<Vec<_>>());
    let answered: HashSet<String> = outcomes.iter().filter_map(|o| o.order.clone()).collect();
    // Nothing held once the reconciler has rolled back what the dead held.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (on_hand, reserved) = loop {
        let (on_hand, reserved) = admin.stock(&storm).await;
        if reserved == 0 {
            break (on_hand, reserved);
        }
        assert!(Instant::now() < deadline, "{reserved} units still held");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let sold = settled(&db, &storm).await;
    assert_eq!(on_hand + sold, 50, "the books balance: {on_hand} on hand + {sold} in paid orders");
    assert_eq!(reserved, 0);
    let paid_orders: HashSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT o.id FROM orders.orders o JOIN orders.order_lines l ON l.order_id = o.id WHERE l.sku = $1 AND o.status = 'paid'")
        .bind(&storm).fetch_all(&db).await.unwrap().into_iter().collect();
    assert_eq!(paid_orders, answered, "every charged buyer got their order, and every answer is a paid order");
    let charged = scalar(&db, "SELECT COUNT(DISTINCT o.id) FROM orders.orders o JOIN orders.order_lines l ON l.order_id = o.id \
         WHERE l.sku = $1 AND EXISTS (SELECT 1 FROM orders.payments p WHERE p.order_id = o.id AND p.status IN ('authorized', 'captured'))", &storm).await;
    assert_eq!(charged as usize, paid_orders.len(), "no buyer charged without a paid order");
}
