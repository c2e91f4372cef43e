//! `Idempotency-Key`: concurrent requests with one key run the effect once,
//! repeats replay the first response, another body with the key is a 409.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::post;
use http_body_util::BodyExt;
use platform::db::Db;
use platform::http::Json;
use platform::idempotency::{Idempotency, idempotent};
use platform::migrate::{Migration, Migrations};
use platform::{on_db, on_write};
use platform::testing::Sandbox;
use tower::ServiceExt;

static CHARGES: Migrations = Migrations {
    component: "charges",
    sqlite: &[Migration { name: "0001", sql: "CREATE TABLE charges (id INTEGER PRIMARY KEY, amount BIGINT NOT NULL);" }],
    postgres: &[Migration { name: "0001", sql: "CREATE TABLE charges (id BIGSERIAL PRIMARY KEY, amount BIGINT NOT NULL);" }],
    dir: "",
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Charge {
    amount: i64,
}

/// The effect: one charge row per run, slow enough for requests to overlap.
async fn charge(State(db): State<Db>, Json(body): Json<Charge>) -> axum::response::Response {
    if body.amount < 0 {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let id: i64 = on_write!(db, pool => sqlx::query_scalar("INSERT INTO charges (amount) VALUES ($1) RETURNING id")
        .bind(body.amount).fetch_one(pool).await).unwrap();
    (StatusCode::CREATED, axum::Json(serde_json::json!({"charge": id, "amount": body.amount}))).into_response()
}

fn app(db: &Db) -> Router {
    Router::new()
        .route("/charges", post(charge))
        .layer(from_fn_with_state(Idempotency::new(db.clone(), "test.charge"), idempotent))
        .with_state(db.clone())
}

fn request(key: &str, body: &str, cart_secret: &str) -> Request<Body> {
    Request::post("/charges")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .header("x-cart-secret", cart_secret)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Option<String>, String) {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let replayed = response.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap().to_owned());
    let body = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (status, replayed, body)
}

async fn charges(db: &Db) -> i64 {
    on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM charges").fetch_one(pool).await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_run_the_effect_once() {
    let sandbox = Sandbox::new().await;
    let db = sandbox.db("orders", &[&CHARGES]).await;
    let app = app(&db);
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (app, barrier) = (app.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            send(&app, request("key-1", r#"{"amount": 500}"#, "cart-secret-a")).await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(charges(&db).await, 1, "the effect ran once");
    let first = &results[0].2;
    for (status, _, body) in &results {
        assert_eq!(*status, StatusCode::CREATED);
        assert_eq!(body, first, "every caller sees the one response");
    }
    let replays = results.iter().filter(|r| r.1.as_deref() == Some("true")).count();
    assert_eq!(replays, 15);

    // On SQLite the keys have a writer of their own, in a file beside the
    // service's; on PostgreSQL they stay in the service's schema.
    let keys = db.keys().await.unwrap();
    let count = |db: &Db| {
        let db = db.clone();
        async move { on_db!(db, pool => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM idempotency_keys").fetch_one(pool).await).unwrap() }
    };
    assert_eq!(count(keys).await, 1);
    match db.dialect() {
        platform::db::Dialect::Sqlite => {
            assert_eq!(count(&db).await, 0, "not in the service's file");
            assert_eq!(keys.schema(), "orders_keys");
        }
        platform::db::Dialect::Postgres => assert_eq!(keys.schema(), db.schema()),
    }
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_a_conflict() {
    let sandbox = Sandbox::new().await;
    let db = sandbox.db("orders", &[&CHARGES]).await;
    let app = app(&db);
    assert_eq!(send(&app, request("k", r#"{"amount": 1}"#, "cart-secret-a")).await.0, StatusCode::CREATED);
    let (status, _, body) = send(&app, request("k", r#"{"amount": 2}"#, "cart-secret-a")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains(r#""code":"idempotency_key_reused""#), "{body}");
    assert!(body.contains(r#""type":"conflict""#), "{body}");
    // Another caller's key of the same name is theirs alone.
    assert_eq!(send(&app, request("k", r#"{"amount": 2}"#, "cart-secret-b")).await.0, StatusCode::CREATED);
    assert_eq!(charges(&db).await, 2);
}

#[tokio::test]
async fn a_failure_on_our_side_frees_the_key_and_requests_without_a_key_pass() {
    let sandbox = Sandbox::new().await;
    let db = sandbox.db("orders", &[&CHARGES]).await;
    let app = app(&db);
    assert_eq!(send(&app, request("k", r#"{"amount": -1}"#, "")).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    // The same key may be retried (the stored hash belongs to the failed body,
    // which was released, so a corrected body is accepted).
    assert_eq!(send(&app, request("k", r#"{"amount": 3}"#, "")).await.0, StatusCode::CREATED);

    let plain = |amount: i64| {
        Request::post("/charges")
            .header("content-type", "application/json")
            .body(Body::from(format!(r#"{{"amount": {amount}}}"#)))
            .unwrap()
    };
    send(&app, plain(4)).await;
    send(&app, plain(4)).await;
    assert_eq!(charges(&db).await, 3, "no key, no deduplication");

    let bad = request("bad key", r#"{"amount": 1}"#, "");
    let (status, _, body) = send(&app, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
