//! The HTTP core as a client sees it, on the whole app: error shapes, request
//! ids, body limits, health and readiness, metrics, the OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use platform::app::App;
use platform::http::Json;
use platform::testing::Sandbox;
use serde_json::Value;
use tower::ServiceExt;

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Echo {
    name: String,
    quantity: u32,
}

/// Extra routes that exercise the core the way service routes will.
fn probe_routes() -> Router {
    Router::new()
        .route("/probe/echo", post(|Json(body): Json<Echo>| async move { Json(body) }))
        .route("/probe/panic", post(explode))
}

async fn explode() -> &'static str {
    panic!("secret detail")
}

struct TestApp {
    _sandbox: Sandbox,
    app: App,
}

impl TestApp {
    async fn new() -> TestApp {
        let sandbox = Sandbox::new().await;
        let app = App::start(sandbox.config(), &emporium::services(), probe_routes(), false).await.unwrap();
        TestApp { _sandbox: sandbox, app }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = self.app.router().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn get(&self, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        self.send(Request::get(path).body(Body::empty()).unwrap()).await
    }

    async fn post_json(&self, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let request = Request::post(path).header("content-type", "application/json").body(body.into()).unwrap();
        let (status, _, body) = self.send(request).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

fn error_of(body: &Value) -> (&str, &str) {
    (body["error"]["type"].as_str().unwrap_or_default(), body["error"]["code"].as_str().unwrap_or_default())
}

#[tokio::test]
async fn health_and_readiness() {
    let t = TestApp::new().await;
    let (status, _, body) = t.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"status":"ok"}"#);

    let (status, _, body) = t.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready");
    for service in kernel::config::SERVICES {
        assert_eq!(ready["checks"][format!("database.{service}")], "ok", "{body}");
    }
    if platform::testing::nats_url().is_some() {
        assert_eq!(ready["checks"]["bus.nats"], "ok", "{body}");
    }
    if platform::testing::redis_url().is_some() {
        assert_eq!(ready["checks"]["redis"], "ok", "{body}");
    }
}

#[tokio::test]
async fn readiness_reports_a_database_that_went_away() {
    let t = TestApp::new().await;
    t.app.db("orders").unwrap().close().await;
    let (status, _, body) = t.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "unavailable");
    assert_ne!(ready["checks"]["database.orders"], "ok");
    assert_eq!(ready["checks"]["database.catalog"], "ok");
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_always_echoed() {
    let t = TestApp::new().await;
    let (_, headers, _) = t.send(Request::get("/healthz").header("x-request-id", "client-42").body(Body::empty()).unwrap()).await;
    assert_eq!(headers["x-request-id"], "client-42");
    let (_, headers, _) = t.get("/healthz").await;
    assert!(headers["x-request-id"].to_str().unwrap().starts_with("req_"));
    // A header that could break a log line is replaced, not echoed.
    let (_, headers, _) = t.send(Request::get("/healthz").header("x-request-id", "a b\"c").body(Body::empty()).unwrap()).await;
    assert!(headers["x-request-id"].to_str().unwrap().starts_with("req_"));
    let (status, headers, _) = t.get("/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.contains_key("x-request-id"), "errors carry it too");
}

#[tokio::test]
async fn errors_have_the_documented_shape() {
    let t = TestApp::new().await;
    let (status, _, body) = t.get("/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error_of(&body), ("not_found", "route_not_found"));

    let (status, _, body) = t.send(Request::delete("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body.contains(r#""code":"method_not_allowed""#), "{body}");

    let (status, body) = t.post_json("/probe/echo", r#"{"name": "tee", "quantity": 2}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["quantity"], 2);

    let (status, body) = t.post_json("/probe/echo", r#"{"name": "tee", "quantity": 2, "price": 0}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "unknown fields are refused");
    assert_eq!(error_of(&body).0, "invalid_request");
    assert_eq!(body["error"]["field"], "price");

    let (status, body) = t.post_json("/probe/echo", r#"{"name": "tee", "quantity": -2}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "quantity");

    let (status, body) = t.post_json("/probe/echo", r#"{"name": "#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&body), ("invalid_request", "malformed_json"));

    let request = Request::post("/probe/echo").header("content-type", "text/plain").body(Body::from("{}")).unwrap();
    let (status, _, body) = t.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unsupported_content_type"), "{body}");
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_refused_with_413() {
    let t = TestApp::new().await;
    let big = format!(r#"{{"name": "{}", "quantity": 1}}"#, "x".repeat(1024 * 1024 + 1));
    let (status, body) = t.post_json("/probe/echo", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_of(&body), ("invalid_request", "body_too_large"));
}

#[tokio::test]
async fn a_panic_is_a_500_that_hides_its_cause() {
    let t = TestApp::new().await;
    let (status, _, body) = t.send(Request::post("/probe/panic").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains(r#""type":"internal""#), "{body}");
    assert!(!body.contains("secret detail"));
}

#[tokio::test]
async fn metrics_have_latency_histograms_per_route() {
    let t = TestApp::new().await;
    t.get("/healthz").await;
    t.get("/readyz").await;
    let (status, headers, body) = t.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(body.contains(r#"http_request_duration_seconds_bucket{method="GET",route="/healthz",status="200""#), "{body}");
    assert!(body.contains(r#"route="/readyz""#));
    assert!(body.contains("worker_last_tick_seconds"), "background loops report: {body}");
    assert!(body.contains(r#"worker_up{worker="outbox_relay_orders"} 1"#), "{body}");
}

#[tokio::test]
async fn the_openapi_document_is_generated_and_browsable_offline() {
    let t = TestApp::new().await;
    let (status, _, body) = t.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/healthz"]["get"].is_object());
    assert!(doc["paths"]["/readyz"]["get"]["responses"]["503"].is_object());
    let (status, headers, page) = t.get("/api/docs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.contains("/api/openapi.json"));
    assert!(!page.contains("https://"), "no CDN: the page is served whole from the binary");
}
