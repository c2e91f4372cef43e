//! Replicas that die mid-request: an `Idempotency-Key` held by a dead
//! request is taken over once its lease lapses (a live one's is renewed),
//! a charged buyer's retry gets their order, and stock a dead checkout held
//! without writing its order is released by the reconciler, once, however
//! many reconcilers run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use support::{Shop, Who};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::post;
use http_body_util::BodyExt;
use kernel::auth::Role;
use platform::db::{Db, now_ms};
use platform::idempotency::{Idempotency, idempotent, in_flight};
use platform::migrate::{Migration, Migrations};
use platform::{on_db, on_write};
use platform::testing::Sandbox;
use serde_json::{Value, json};
use tower::ServiceExt;

// Leases

static CHARGES: Migrations = Migrations {
    component: "charges",
    sqlite: &[Migration { name: "0001", sql: "CREATE TABLE charges (id INTEGER PRIMARY KEY, amount BIGINT NOT NULL);" }],
    postgres: &[Migration { name: "0001", sql: "CREATE TABLE charges (id BIGSERIAL PRIMARY KEY, amount BIGINT NOT NULL);" }],
    dir: "",
};

#[derive(Clone)]
struct Charger {
    db: Db,
    started: Arc<AtomicUsize>,
}

/// The effect: one charge row per run, after `sleep_ms`. A request sent
/// with `x-hang` never gets there (it stands for a process that dies
/// mid-handler); the header is not part of the request's fingerprint.
async fn charge(State(c): State<Charger>, headers: HeaderMap, axum::Json(body): axum::Json<Value>) -> axum::response::Response {
    c.started.fetch_add(1, Ordering::SeqCst);
    if headers.contains_key("x-hang") {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    tokio::time::sleep(Duration::from_millis(body["sleep_ms"].as_u64().unwrap_or(0))).await;
    let id: i64 = on_write!(c.db, pool => sqlx::query_scalar("INSERT INTO charges (amount) VALUES ($1) RETURNING id")
        .bind(body["amount"].as_i64().unwrap()).fetch_one(pool).await).unwrap();
    (StatusCode::CREATED, axum::Json(json!({"charge": id}))).into_response()
}

const LEASE: Duration = Duration::from_millis(300);

fn charges_app(charger: &Charger, wait: Duration) -> Router {
    Router::new()
        .route("/charges", post(charge))
        .layer(from_fn_with_state(Idempotency::new(charger.db.clone(), "test.charge").lease(LEASE).wait_for_first(wait), idempotent))
        .with_state(charger.clone())
}

fn charge_request(key: &str, body: &Value, hang: bool) -> Request<Body> {
    let mut r = Request::post("/charges")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .header("x-cart-secret", "one-shopper");
    if hang {
        r = r.header("x-hang", "1");
    }
    r.body(Body::from(body.to_string())).unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn charges(db: &Db) -> i64 {
    on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM charges").fetch_one(pool).await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_requests_key_is_taken_over_within_its_lease_and_a_live_ones_is_not() {
    let sandbox = Sandbox::new().await;
    let db = sandbox.db("orders", &[&CHARGES]).await;
    let charger = Charger { db: db.clone(), started: Arc::new(AtomicUsize::new(0)) };
    let app = charges_app(&charger, Duration::from_secs(5));

    // A request that dies mid-handler: its future is dropped, as its
    // process's would be, and with it the renewal of its lease.
    let body = json!({"amount": 100});
    let dying = tokio::spawn({
        let (app, body) = (app.clone(), body.clone());
        async move { send(&app, charge_request("dies", &body, true)).await }
    });
    while charger.started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(in_flight(db.keys().await.unwrap()).await.unwrap(), 1, "its key is held while it runs");
    dying.abort();
    let died = Instant::now();
    let (status, headers, answer) = send(&app, charge_request("dies", &body, false)).await;
    let took = died.elapsed();
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert!(headers.get("idempotent-replayed").is_none(), "the retry ran the effect itself");
    assert!(took >= LEASE / 2, "the dead request's lease was waited out: {took:?}");
    assert!(took < Duration::from_secs(3), "taken over within seconds of the lease lapsing: {took:?}");
    assert_eq!(charges(&db).await, 1, "the effect ran once");
    assert_eq!(in_flight(db.keys().await.unwrap()).await.unwrap(), 0);

    // A live request slower than four leases keeps renewing its own: a
    // repeat waits for its answer rather than running the effect again.
    let slow = json!({"amount": 200, "sleep_ms": 4 * LEASE.as_millis() as u64});
    let first = tokio::spawn({
        let (app, slow) = (app.clone(), slow.clone());
        async move { send(&app, charge_request("slow", &slow, false)).await }
    });
    while charger.started.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let repeat = tokio::spawn({
        let (app, slow) = (app.clone(), slow.clone());
        async move { send(&app, charge_request("slow", &slow, false)).await }
    });
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(in_flight(db.keys().await.unwrap()).await.unwrap(), 1, "still held by the live request after two leases");
    // A repeat that may not wait is told to come back.
    let impatient = charges_app(&charger, Duration::ZERO);
    let (status, headers, body) = send(&impatient, charge_request("slow", &slow, false)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("idempotency_request_in_progress"), "{body}");
    assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));

    let (status, headers, first_body) = first.await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, repeat_body) = repeat.await.unwrap();
    assert_eq!((status, headers.get("idempotent-replayed").and_then(|v| v.to_str().ok())), (StatusCode::CREATED, Some("true")));
    assert_eq!(repeat_body, first_body, "the repeat got the first answer");
    assert_eq!(charges(&db).await, 2, "the slow effect ran once");
    assert_eq!(charger.started.load(Ordering::SeqCst), 3, "the repeats never reached the handler");
    assert_eq!(in_flight(db.keys().await.unwrap()).await.unwrap(), 0);
}

// A charged buyer's retry

/// What a process that died after charging and writing the order, but
/// before storing its answer, leaves of the key: running, with a lease
/// nobody renews any more.
async fn forget_answer(shop: &Shop, key: &str) {
    let db = shop.app.db("orders").unwrap().keys().await.unwrap();
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE idempotency_keys SET state = 'running', response_status = NULL, response_headers = NULL, \
         response_body = NULL, locked_until_ms = $1 WHERE idem_key = $2")
        .bind(now_ms() - 1).bind(key).execute(pool).await.map(|r| r.rows_affected())).unwrap();
    assert_eq!(n, 1);
}

async fn pay(shop: &Shop, cart: &str, who: &Who, token: &str) -> (StatusCode, HeaderMap, Value) {
    shop.send_full("POST", &format!("/api/v1/carts/{cart}/checkout"), who, Some(json!({"payment": {"provider": "test", "token": token}}))).await
}

#[tokio::test]
async fn a_charged_buyers_retry_gets_their_order_and_nobody_else_does() {
    let shop = Shop::new().await;
    shop.product("CLOCK-1", 5000, 3).await;
    let (cart, who) = shop.ready_cart(&[("CLOCK-1", 1)], None).await;
    let paying = Who { idempotency_key: Some("pay-once".into()), ..who.clone() };
    let (status, _, first) = pay(&shop, &cart, &paying, "tok_visa").await;
    assert_eq!((status, first["status"].as_str()), (StatusCode::CREATED, Some("paid")), "{first}");
    assert!(first["lookup_token"].is_string());

    forget_answer(&shop, "pay-once").await;
    let (status, headers, again) = pay(&shop, &cart, &paying, "tok_visa").await;
    assert_eq!(status, StatusCode::CREATED, "the retry gets the order, not a conflict: {again}");
    assert!(headers.get("idempotent-replayed").is_none(), "answered afresh");
    assert_eq!((again["id"].clone(), again["number"].clone(), again["status"].as_str()), (first["id"].clone(), first["number"].clone(), Some("paid")));
    assert_eq!(again["totals"], first["totals"]);
    assert!(again.get("lookup_token").is_none(), "a secret is shown once");
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM test_gateway_charges").await, 1, "charged once");
    assert_eq!(shop.available("CLOCK-1").await, (2, 0));
    // That answer is stored now.
    let (status, headers, replayed) = pay(&shop, &cart, &paying, "tok_visa").await;
    assert_eq!((status, headers.get("idempotent-replayed").is_some()), (StatusCode::CREATED, true));
    assert_eq!(replayed["id"], first["id"]);

    // Someone else who can reach the cart (signed in, holding its secret)
    // sends the same key: the key is theirs alone, the order is not.
    let bob = Who { token: Some(shop.user("bob@example.com", Role::Customer).await), idempotency_key: Some("pay-once".into()), ..who.clone() };
    let (status, _, refused) = pay(&shop, &cart, &bob, "tok_visa").await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("order_already_paid")), "{refused}");
    assert!(!refused.to_string().contains(first["id"].as_str().unwrap()), "{refused}");
    // So does the same shopper with another request (another key).
    let other = Who { idempotency_key: Some("second-click".into()), ..who.clone() };
    let (status, _, refused) = pay(&shop, &cart, &other, "tok_visa").await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("order_already_paid")));
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM test_gateway_charges").await, 1);

    // A payment waiting for the shopper's confirmation: the retry shows
    // where to confirm, as the first answer did.
    let (cart, who) = shop.ready_cart(&[("CLOCK-1", 1)], None).await;
    let confirming = Who { idempotency_key: Some("confirm-me".into()), ..who };
    let (status, _, first) = pay(&shop, &cart, &confirming, "tok_requires_action").await;
    assert_eq!((status, first["status"].as_str()), (StatusCode::CREATED, Some("pending_payment")), "{first}");
    forget_answer(&shop, "confirm-me").await;
    let (status, _, again) = pay(&shop, &cart, &confirming, "tok_requires_action").await;
    assert_eq!((status, again["id"].clone(), again["next_action"].clone()), (StatusCode::CREATED, first["id"].clone(), first["next_action"].clone()), "{again}");

    // A declined card: the retry is declined as the first try was, without asking again.
    let (cart, who) = shop.ready_cart(&[("CLOCK-1", 1)], None).await;
    let declined = Who { idempotency_key: Some("declined".into()), ..who };
    let (status, _, first) = pay(&shop, &cart, &declined, "tok_chargeDeclined").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{first}");
    forget_answer(&shop, "declined").await;
    let (status, _, again) = pay(&shop, &cart, &declined, "tok_chargeDeclined").await;
    assert_eq!((status, again["error"]["code"].clone()), (StatusCode::PAYMENT_REQUIRED, first["error"]["code"].clone()), "{again}");
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM test_gateway_charges WHERE token = 'tok_chargeDeclined'").await, 1);
}

// Stock held by a checkout that never wrote its order

/// What a checkout leaves when its process dies after holding the stock
/// and before writing its order: the intent, and the reservation.
async fn die_after_reserving(shop: &Shop, key: &str, order: &str, cart: &str, attempt: i64, sku: &str) {
    let db = shop.app.db("orders").unwrap();
    on_write!(db, pool => sqlx::query(
        "INSERT INTO checkout_intents (reservation_key, order_id, cart_id, attempt, lines, state, created_ms) \
         VALUES ($1, $2, $3, $4, $5, 'open', $6)")
        .bind(key).bind(order).bind(cart).bind(attempt).bind(json!([[sku, 1]]).to_string()).bind(now_ms())
        .execute(pool).await.map(|_| ())).unwrap();
    let catalog = shop.app.ports().get::<dyn orders::CatalogPort>().unwrap();
    catalog.reserve(key, &[(sku.to_owned(), 1)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_held_by_a_checkout_that_died_is_released_once_by_one_of_many_reconcilers() {
    // The shop's own reconciler waits the default minute; the two below,
    // as in two other processes with their own pools, wait one second.
    let shop = Shop::new().await;
    shop.product("LAMP-9", 2000, 2).await;
    let mut config = (*shop.config).clone();
    config.orders.reconcile_after_secs = 1;
    let reconcilers: Vec<orders::Orders> = {
        let mut all = Vec::new();
        for _ in 0..2 {
            let db = shop._sandbox.db("orders", &[]).await;
            all.push(orders::Orders::new(db, shop.app.ports().clone(), &config).unwrap());
        }
        all
    };

    let (cart, who) = shop.ready_cart(&[("LAMP-9", 1)], None).await;
    let order = kernel::id::OrderId::new().to_string();
    die_after_reserving(&shop, &order, &order, &cart, 1, "LAMP-9").await;
    assert_eq!(shop.available("LAMP-9").await, (2, 1));
    let (count, oldest) = reconcilers[0].checkouts_in_flight().await.unwrap();
    assert_eq!((count, oldest.is_some()), (1, true));
    assert_eq!(reconcilers[0].reconcile().await.unwrap(), 0, "not before its time: it may still be running");
    assert_eq!(shop.available("LAMP-9").await, (2, 1));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (a, b) = tokio::join!(reconcilers[0].reconcile(), reconcilers[1].reconcile());
    assert_eq!(a.unwrap() + b.unwrap(), 1, "one reconciler took it");
    assert_eq!(shop.available("LAMP-9").await, (2, 0), "the unit is back");
    assert_eq!(reconcilers[1].checkouts_in_flight().await.unwrap(), (0, None));
    let catalog = shop.app.db("catalog").unwrap();
    let state: String = on_db!(catalog, pool => sqlx::query_scalar("SELECT state FROM reservations WHERE order_id = $1")
        .bind(&order).fetch_one(pool).await).unwrap();
    assert_eq!(state, "released");
    // The cart was never ordered: it checks out as usual.
    let (status, placed) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!((status, placed["status"].as_str()), (StatusCode::CREATED, Some("paid")), "{placed}");
    assert_eq!(shop.available("LAMP-9").await, (1, 0));

    // Another card on a declined order, cut off the same way: released, and
    // the next card gets a reservation of its own.
    let (cart, who) = shop.ready_cart(&[("LAMP-9", 1)], None).await;
    let (status, declined) = shop.checkout(&cart, &who, "tok_chargeDeclined").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{declined}");
    let order: String = on_db!(shop.app.db("orders").unwrap(), pool => sqlx::query_scalar("SELECT order_id FROM carts WHERE id = $1")
        .bind(&cart).fetch_one(pool).await).unwrap();
    die_after_reserving(&shop, &format!("{order}-2"), &order, &cart, 2, "LAMP-9").await;
    assert_eq!(shop.available("LAMP-9").await, (1, 1));
    let (status, busy) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!((status, busy["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("payment_in_progress")), "{busy}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (a, b) = tokio::join!(reconcilers[0].reconcile(), reconcilers[1].reconcile());
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    assert_eq!(shop.available("LAMP-9").await, (1, 0));
    let (status, paid) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::CREATED, Some("paid")), "{paid}");
    assert_eq!(paid["payments"].as_array().unwrap().len(), 2, "the declined card and this one: {paid}");
    assert_eq!(shop.available("LAMP-9").await, (0, 0));
}

// The same, with processes that really die

/// A server process, killed if the test fails before it stops it.
struct Server(std::process::Child);

impl Server {
    fn exited_cleanly(&mut self) -> bool {
        self.0.wait().unwrap().success()
    }

    fn stop(mut self) -> bool {
        Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().unwrap();
        self.exited_cleanly()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `emporium serve --demo` (reconciling after 1 s), optionally aborting at
/// a fault point: the process and its address.
fn serve_demo(sandbox: &Sandbox, fault: Option<&str>) -> (Server, String) {
    serve_demo_reconciling_after(sandbox, fault, 1)
}

fn serve_demo_reconciling_after(sandbox: &Sandbox, fault: Option<&str>, secs: u64) -> (Server, String) {
    let mut child = support::emporium_command(sandbox)
        .args(["serve", "--demo", "--bind", "127.0.0.1:0"])
        .env("EMPORIUM_ORDERS_RECONCILE_AFTER_SECS", secs.to_string())
        .env("EMPORIUM_FAULT_POINT", fault.unwrap_or(""))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    (Server(child), format!("http://{addr}"))
}

/// One request: status (0 when the server dropped the connection) and body.
async fn request(client: &reqwest::Client, method: reqwest::Method, url: &str, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Value) {
    let mut r = client.request(method, url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(body) = body {
        r = r.header("content-type", "application/json").body(body.to_string());
    }
    match r.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let bytes = response.bytes().await.unwrap_or_default();
            (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// A checkout retried as a client does: again after `Retry-After` while
/// the key is held.
async fn checkout_until_answered(client: &reqwest::Client, base: &str, cart: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let body = json!({"payment": {"provider": "test", "token": "tok_visa"}});
    let url = format!("{base}/api/v1/carts/{cart}/checkout");
    for _ in 0..5 {
        let (status, answer) = request(client, reqwest::Method::POST, &url, headers, Some(body.clone())).await;
        if answer["error"]["code"] != "idempotency_request_in_progress" {
            return (status, answer);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("the key was never taken over");
}

/// A guest cart of the demo shop's oldest product, ready to check out:
/// its id and secret.
async fn ready_demo_cart(client: &reqwest::Client, base: &str) -> (String, String) {
    let get = reqwest::Method::GET;
    let (_, products) = request(client, get.clone(), &format!("{base}/api/v1/products?limit=1&sort=oldest"), &[], None).await;
    let sku = products["data"][0]["variants"][0]["sku"].as_str().unwrap().to_owned();
    let (_, cart) = request(client, reqwest::Method::POST, &format!("{base}/api/v1/carts"), &[], None).await;
    let (id, secret) = (cart["id"].as_str().unwrap().to_owned(), cart["secret"].as_str().unwrap().to_owned());
    let h = [("X-Cart-Secret", secret.as_str())];
    for (method, step, body) in [
        (reqwest::Method::POST, "items", json!({"sku": sku, "quantity": 1})),
        (reqwest::Method::PUT, "email", json!({"email": "guest@example.com"})),
        (reqwest::Method::PUT, "shipping-address", json!({"name": "G", "line1": "1 Main St", "city": "Austin", "region": "TX", "postal_code": "78701", "country": "US"})),
    ] {
        let (status, answer) = request(client, method, &format!("{base}/api/v1/carts/{id}/{step}"), &h, Some(body)).await;
        assert_eq!(status, 200, "{step}: {answer}");
    }
    let (_, options) = request(client, get, &format!("{base}/api/v1/carts/{id}/shipping-options"), &h, None).await;
    let method = options["data"][0]["id"].clone();
    request(client, reqwest::Method::PUT, &format!("{base}/api/v1/carts/{id}/shipping-method"), &h, Some(json!({"id": method}))).await;
    (id, secret)
}

#[tokio::test]
async fn a_retry_before_the_reconciler_goes_on_with_the_stock_its_first_try_held() {
    let sandbox = Sandbox::new().await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let (mut server, base) = serve_demo(&sandbox, Some("checkout.reserved"));
    let (id, secret) = ready_demo_cart(&client, &base).await;
    let paying = [("X-Cart-Secret", secret.as_str()), ("Idempotency-Key", "pay-once")];
    let (status, _) = checkout_until_answered(&client, &base, &id, &paying).await;
    assert_eq!(status, 0, "the server died with the stock held");
    assert!(!server.exited_cleanly());
    let orders = sandbox.db("orders", &[]).await;
    let first: String = on_db!(&orders, pool => sqlx::query_scalar("SELECT order_id FROM checkout_intents").fetch_one(pool).await).unwrap();

    // Back before the reconciler's time: the retry finds its first try's
    // intent and goes on under that order id, with the units it held.
    let (server, base) = serve_demo_reconciling_after(&sandbox, None, 600);
    let (status, order) = checkout_until_answered(&client, &base, &id, &paying).await;
    assert_eq!((status, order["status"].as_str(), order["id"].as_str()), (201, Some("paid"), Some(first.as_str())), "{order}");
    let catalog = sandbox.db("catalog", &[]).await;
    let holds: i64 = on_db!(&catalog, pool => sqlx::query_scalar("SELECT COUNT(*) FROM reservations").fetch_one(pool).await).unwrap();
    assert_eq!(holds, 1, "one hold, the first try's");
    orders.close().await;
    catalog.close().await;
    assert!(server.stop());
}

#[tokio::test]
async fn a_buyer_whose_checkout_died_with_its_process_gets_their_order_on_retry() {
    let sandbox = Sandbox::new().await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let get = reqwest::Method::GET;
    for point in ["checkout.reserved", "checkout.placed", "checkout.paid"] {
        let (mut server, base) = serve_demo(&sandbox, Some(point));
        let (id, secret) = ready_demo_cart(&client, &base).await;
        let h = [("X-Cart-Secret", secret.as_str())];
        let paying = [("X-Cart-Secret", secret.as_str()), ("Idempotency-Key", "pay-once")];
        let (status, _) = checkout_until_answered(&client, &base, &id, &paying).await;
        assert_eq!(status, 0, "{point}: the server died mid-checkout");
        assert!(!server.exited_cleanly());

        let orders = sandbox.db("orders", &[]).await;
        let catalog = sandbox.db("catalog", &[]).await;
        let intents: Vec<String> = on_db!(&orders, pool => sqlx::query_scalar("SELECT order_id FROM checkout_intents")
            .fetch_all(pool).await).unwrap();
        let (server, base) = serve_demo(&sandbox, None);
        if point == "checkout.reserved" {
            // Held, then the process died: nobody retries, the reconciler releases it.
            assert_eq!(intents.len(), 1, "the intent was written before the stock was held");
            let mut state = String::new();
            for _ in 0..100 {
                state = on_db!(&catalog, pool => sqlx::query_scalar("SELECT state FROM reservations WHERE order_id = $1")
                    .bind(&intents[0]).fetch_one(pool).await).unwrap();
                if state == "released" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(state, "released", "{point}");
            let left: i64 = on_db!(&orders, pool => sqlx::query_scalar("SELECT COUNT(*) FROM checkout_intents").fetch_one(pool).await).unwrap();
            assert_eq!(left, 0);
        } else {
            assert!(intents.is_empty(), "{point}: the order was written, with its intent resolved");
        }

        let (status, order) = checkout_until_answered(&client, &base, &id, &paying).await;
        assert_eq!((status, order["status"].as_str()), (201, Some("paid")), "{point}: {order}");
        // Written by the first try, it was shown then; written now, it is shown now.
        assert_eq!(order.get("lookup_token").is_some(), point == "checkout.reserved", "{point}: {order}");
        let (_, cart) = request(&client, get.clone(), &format!("{base}/api/v1/carts/{id}"), &h, None).await;
        assert_eq!(order["id"], cart["order_id"], "{point}: the order the first try made");
        let order_id = order["id"].as_str().unwrap().to_owned();
        let charged: i64 = on_db!(&orders, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM test_gateway_charges WHERE idempotency_key IN (SELECT id FROM payments WHERE order_id = $1)")
            .bind(&order_id).fetch_one(pool).await).unwrap();
        assert_eq!(charged, 1, "{point}: charged once");
        let mut held = String::new();
        for _ in 0..100 {
            held = on_db!(&catalog, pool => sqlx::query_scalar("SELECT state FROM reservations WHERE order_id = $1")
                .bind(&order_id).fetch_one(pool).await).unwrap();
            if held == "committed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(held, "committed", "{point}");
        orders.close().await;
        catalog.close().await;
        assert!(server.stop());
    }
}
