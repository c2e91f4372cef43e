//! The gauges `/metrics` reads on a timer from the shop's databases and
//! its bus: consumer lag, held reservations, queued and dead deliveries,
//! idempotency keys in flight. Each test holds a part of the shop up for
//! real (a write lock on a service's database, a webhook receiver that
//! answers 500) and watches the gauge rise, then fall once it is let go.
//!
//! The metrics recorder is one per test binary: the tests here run one at
//! a time, each on a shop of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use platform::Tx;
use platform::db::{Db, Dialect};
use platform::on_tx;
use serde_json::json;
use support::{Shop, Who};
use tower::ServiceExt;

/// One test at a time: the gauges are the process's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A shop of `services` whose gauges are read every 100 ms, and whose
/// database writers wait out a test's lock rather than fail.
async fn shop(services: &[&str], tune: impl FnOnce(&mut kernel::config::Config)) -> Shop {
    let services: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    Shop::with(move |c| {
        c.services = services;
        c.metrics.sample_interval_ms = 100;
        c.database.busy_timeout_secs = 60;
        tune(c);
    })
    .await
}

/// What `/metrics` shows now.
async fn scrape(shop: &Shop) -> String {
    let response = shop.app.router().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// The value of one series, named as the page writes it
/// (`events_consumer_lag{consumer="notify"}`).
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Scrapes until `series` has a value that `wanted` accepts (for up to 30 s): that value.
async fn until(shop: &Shop, series: &str, what: &str, wanted: impl Fn(f64) -> bool) -> f64 {
    let mut last = None;
    for _ in 0..600 {
        last = value(&scrape(shop).await, series);
        if let Some(v) = last.filter(|v| wanted(*v)) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {series} to be {what}; last seen {last:?}");
}

/// Holds a write lock on `table` of a service's database until the
/// transaction ends: on SQLite the database's write lock (`BEGIN
/// IMMEDIATE`), on PostgreSQL a table lock that lets reads through.
async fn lock_writes(db: &Db, table: &str) -> Tx {
    let mut tx = db.begin().await.unwrap();
    if db.dialect() == Dialect::Postgres {
        let sql = format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE");
        on_tx!(&mut tx, c => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(c).await.map(|_| ())).unwrap();
    }
    tx
}

#[tokio::test]
async fn held_reservations_and_idempotency_keys_in_flight_are_gauges() {
    let _serial = SERIAL.lock().await;
    let shop = shop(&["auth", "catalog", "orders"], |_| {}).await;
    shop.product("GAUGE-1", 2500, 5).await;
    until(&shop, "reservations_held", "0", |v| v == 0.0).await;
    let page = scrape(&shop).await;
    for help in ["reservations_held", "reservations_oldest_age_seconds", "idempotency_in_flight", "outbox_pending", "events_consumer_lag"] {
        assert!(page.contains(&format!("# HELP {help} ")), "{help} is described:\n{page}");
    }
    assert_eq!(value(&page, "reservations_oldest_age_seconds"), Some(0.0));
    assert!(value(&page, r#"outbox_pending{service="catalog"}"#).is_some(), "{page}");
    until(&shop, r#"idempotency_in_flight{service="orders"}"#, "0", |v| v == 0.0).await;

    // A checkout whose stock cannot be held yet (the catalog's database is
    // locked): its Idempotency-Key is in flight meanwhile.
    let (cart, who) = shop.ready_cart(&[("GAUGE-1", 1)], None).await;
    let who = Who { idempotency_key: Some("gauge-checkout-1".into()), ..who };
    let lock = lock_writes(shop.app.db("catalog").unwrap(), "reservations").await;
    let watch = async {
        until(&shop, r#"idempotency_in_flight{service="orders"}"#, "1 or more", |v| v >= 1.0).await;
        lock.rollback().await.unwrap();
    };
    let ((status, order), ()) = tokio::join!(shop.checkout(&cart, &who, "tok_requires_action"), watch);
    assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("pending_payment")), "{order}");
    until(&shop, r#"idempotency_in_flight{service="orders"}"#, "0 once answered", |v| v == 0.0).await;

    // Held while the shopper confirms the payment: counted, and aging.
    assert_eq!(until(&shop, "reservations_held", "1", |v| v >= 1.0).await, 1.0);
    until(&shop, "reservations_oldest_age_seconds", "a second or more", |v| v >= 1.0).await;
    assert_eq!(shop.available("GAUGE-1").await, (5, 1));

    // Cancelled: nothing held any more.
    let id = order["id"].as_str().unwrap();
    let (s, cancelled) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/cancel"), &shop.as_staff(), Some(json!({"reason": "changed their mind"}))).await;
    assert_eq!(s, StatusCode::OK, "{cancelled}");
    until(&shop, "reservations_held", "0 after the cancellation", |v| v == 0.0).await;
    until(&shop, "reservations_oldest_age_seconds", "0 after the cancellation", |v| v == 0.0).await;
}

#[tokio::test]
async fn a_consumer_held_up_shows_its_lag_until_it_catches_up() {
    let _serial = SERIAL.lock().await;
    let shop = shop(&["auth", "catalog", "notify"], |_| {}).await;
    shop.product("LAG-1", 900, 3).await;
    let lag = r#"events_consumer_lag{consumer="notify"}"#;
    until(&shop, lag, "0 after start", |v| v == 0.0).await;
    let page = scrape(&shop).await;
    assert!(page.contains(r#"events_consumer_lag{consumer="catalog"}"#), "every consumer of the process: {page}");
    assert!(page.contains(r#"events_consumer_lag{consumer="tokens_revoked_"#), "per-process consumers too: {page}");

    // Notify cannot record what it handled (its database is locked): the
    // stock changes wait for it.
    let lock = lock_writes(shop.app.db("notify").unwrap(), "processed_events").await;
    for on_hand in [4, 5, 6] {
        let (s, _) = shop.send("PUT", "/api/v1/admin/inventory/LAG-1", &shop.as_staff(), Some(json!({"on_hand": on_hand}))).await;
        assert_eq!(s, StatusCode::OK);
    }
    until(&shop, lag, "1 or more while notify is held up", |v| v >= 1.0).await;
    lock.rollback().await.unwrap();
    until(&shop, lag, "0 once caught up", |v| v == 0.0).await;
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_is_queued_then_dead() {
    let _serial = SERIAL.lock().await;
    let shop = shop(&["auth", "catalog", "notify"], |c| {
        c.notify.retry_base_ms = 300;
        c.notify.max_attempts = 3;
        c.notify.webhook_retry_secs = 2;
        // The receiver is on loopback, which only a development setting allows.
        c.notify.webhooks_allow_private = true;
    })
    .await;
    shop.product("HOOK-1", 900, 3).await;
    let (queued, dead) = (r#"notify_deliveries_queued{channel="webhook"}"#, r#"notify_deliveries_dead{channel="webhook"}"#);
    until(&shop, dead, "0", |v| v == 0.0).await;
    let page = scrape(&shop).await;
    assert!(page.contains("# HELP notify_deliveries_queued ") && page.contains("# HELP notify_deliveries_dead "), "{page}");
    assert_eq!(value(&page, r#"notify_deliveries_queued{channel="email"}"#).map(|v| v >= 0.0), Some(true), "every channel: {page}");

    // A receiver that always answers 500.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let failing = axum::Router::new().route("/hooks", axum::routing::post(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
    tokio::spawn(async move { axum::serve(listener, failing).await });
    let (s, hook) = shop.send("POST", "/api/v1/admin/webhooks", &shop.as_staff(), Some(json!({"url": url, "event_types": ["inventory.changed"]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let (s, _) = shop.send("PUT", "/api/v1/admin/inventory/HOOK-1", &shop.as_staff(), Some(json!({"on_hand": 7}))).await;
    assert_eq!(s, StatusCode::OK);

    // Retried for the retry window (2 s), then given up.
    until(&shop, queued, "1 while retried", |v| v >= 1.0).await;
    until(&shop, dead, "1 once given up", |v| v >= 1.0).await;
    until(&shop, queued, "0 once given up", |v| v == 0.0).await;
}
