//! API keys across processes: catalog and orders processes without the
//! auth service resolve `sk_…` keys through auth's internal route (with the
//! service token), keep each answer `auth.api_key_cache_secs`, and answer
//! 503 with `Retry-After` for a key they cannot check while auth is away.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use support::{Shop, Who};

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use kernel::auth::Role;
use kernel::config::Config;
use platform::app::App;
use platform::auth::HttpApiKeys;
use serde_json::{Value, json};
use tower::ServiceExt;

const AUTH_TOKEN: &str = "auth-service-token-of-at-least-32-characters";
const CATALOG_TOKEN: &str = "catalog-service-token-of-at-least-32-characters";

async fn send(router: &Router, method: &str, path: &str, bearer: Option<&str>, body: Option<Body>) -> (StatusCode, HeaderMap, Value) {
    let mut r = Request::builder().method(method).uri(path);
    if let Some(token) = bearer {
        r = r.header("authorization", format!("Bearer {token}"));
    }
    let r = match body {
        Some(body) => r.header("content-type", "application/json").body(body),
        None => r.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(r).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn get(app: &App, path: &str, key: &str) -> (StatusCode, HeaderMap, Value) {
    send(&app.router(), "GET", path, Some(key), None).await
}

fn bearer(token: &str) -> Who {
    Who { token: Some(token.to_owned()), ..Who::default() }
}

/// A process of the shop running `services`, reaching auth at `auth_url`.
async fn process(base: &Config, services: &[&str], auth_url: &str, cache_secs: u64, tune: impl FnOnce(&mut Config)) -> App {
    let mut config = base.clone();
    config.services = services.iter().map(|s| s.to_string()).collect();
    config.auth.url = Some(auth_url.to_owned());
    config.auth.service_token = Some(AUTH_TOKEN.into());
    config.auth.api_key_cache_secs = cache_secs;
    tune(&mut config);
    config.validate().unwrap();
    emporium::start(Arc::new(config), Router::new(), false).await.unwrap()
}

async fn serve(app: &App) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// Polls `path` with `key` until it answers `want`; how long that took.
async fn until(app: &App, path: &str, key: &str, want: StatusCode, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (status, _, body) = get(app, path, key).await;
        if status == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{path} still answers {status} after {within:?}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_key(auth: &Router, who: &str, permissions: &[&str]) -> (String, String) {
    let body = json!({"name": "integration", "permissions": permissions}).to_string();
    let (s, _, made) = send(auth, "POST", "/api/v1/admin/api-keys", Some(who), Some(Body::from(body))).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    (made["key"].as_str().unwrap().to_owned(), made["id"].as_str().unwrap().to_owned())
}

const PRODUCTS: &str = "/api/v1/admin/products";
const ORDERS: &str = "/api/v1/admin/orders";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_work_on_every_service_and_stop_within_the_cache_time() {
    let auth = Shop::with(|c| {
        c.services = vec!["auth".into()];
        c.public_url = Some("http://shop.test".into());
        c.auth.service_token = Some(AUTH_TOKEN.into());
    })
    .await;
    let base = (*auth.config).clone();
    // A second admin, whose key outlives their demotion.
    let manager = auth.user("boss@example.com", Role::Admin).await;
    let (_, me) = auth.send("GET", "/api/v1/me", &bearer(&manager), None).await;
    let manager_id = me["id"].as_str().unwrap().to_owned();
    let auth_router = auth.app.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth_url = format!("http://{}", listener.local_addr().unwrap());
    let Shop { _sandbox, app: auth_app, config: _, staff: admin } = auth;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let auth_server = tokio::spawn(auth_app.serve(listener, async move {
        let _ = stopped.await;
    }));
    let auth = &auth_router;

    let catalog = process(&base, &["catalog"], &auth_url, 1, |c| c.catalog.service_token = Some(CATALOG_TOKEN.into())).await;
    let catalog_url = serve(&catalog).await;
    let orders = process(&base, &["orders"], &auth_url, 1, |c| {
        c.catalog.url = Some(catalog_url.clone());
        c.catalog.service_token = Some(CATALOG_TOKEN.into());
    })
    .await;

    // The admin's token verifies on both, with the keys under auth.url (no auth.jwks_url set).
    assert_eq!(get(&catalog, PRODUCTS, &admin).await.0, StatusCode::OK);
    assert_eq!(get(&orders, ORDERS, &admin).await.0, StatusCode::OK);

    // A key with both permissions works on both services; one lacking a permission is 403.
    let (both, both_id) = create_key(auth, &admin, &["catalog:write", "orders:read"]).await;
    let (orders_only, _) = create_key(auth, &admin, &["orders:read"]).await;
    let (catalog_only, _) = create_key(auth, &admin, &["catalog:write"]).await;
    let (s, _, body) = get(&catalog, PRODUCTS, &both).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _, body) = get(&orders, ORDERS, &both).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _, body) = get(&catalog, PRODUCTS, &orders_only).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("missing_permission")), "{body}");
    let (s, _, body) = get(&orders, ORDERS, &catalog_only).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("missing_permission")), "{body}");
    assert_eq!(get(&orders, ORDERS, &orders_only).await.0, StatusCode::OK);
    // A write through a key, on the catalog process.
    let product = json!({"title": "Keyed", "status": "active", "variants": [{"sku": "KEY-1", "prices": {"USD": 900}}]}).to_string();
    let (s, _, body) = send(&catalog.router(), "POST", PRODUCTS, Some(&both), Some(Body::from(product))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    // Unknown and malformed keys are 401.
    for key in ["sk_thisKeyWasNeverIssuedByAnyone0000000000000", &format!("sk_{}", "a".repeat(300)), "sk_bad key"] {
        for (app, path) in [(&catalog, PRODUCTS), (&orders, ORDERS)] {
            let (s, _, body) = get(app, path, key).await;
            assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_api_key")), "{path}: {body}");
        }
    }

    // Revoked: refused everywhere within the cache time (1 s).
    assert_eq!(send(auth, "DELETE", &format!("/api/v1/admin/api-keys/{both_id}"), Some(&admin), None).await.0, StatusCode::NO_CONTENT);
    let took = until(&catalog, PRODUCTS, &both, StatusCode::UNAUTHORIZED, Duration::from_secs(3)).await;
    until(&orders, ORDERS, &both, StatusCode::UNAUTHORIZED, Duration::from_secs(3)).await;
    assert!(took <= Duration::from_millis(1500), "revocation took {took:?}");

    // A role change: the creator's key keeps only what the creator still holds.
    let (managed, _) = create_key(auth, &manager, &["catalog:write"]).await;
    assert_eq!(get(&catalog, PRODUCTS, &managed).await.0, StatusCode::OK);
    let roles = Some(Body::from(json!({"roles": ["customer"]}).to_string()));
    let (s, _, body) = send(auth, "PATCH", &format!("/api/v1/admin/users/{manager_id}"), Some(&admin), roles).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    until(&catalog, PRODUCTS, &managed, StatusCode::FORBIDDEN, Duration::from_secs(3)).await;

    // The internal route: the service token or nothing.
    let ask = |key: &str| Some(Body::from(json!({"key": key}).to_string()));
    let (s, _, body) = send(&auth_router, "POST", "/internal/v1/api-keys/resolve", Some(AUTH_TOKEN), ask(&orders_only)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!((body["user_id"].as_str().map(|u| u.starts_with("usr_")), body["permissions"].clone()), (Some(true), json!(["orders:read"])), "{body}");
    assert!(body["key_id"].as_str().unwrap().starts_with("key_"), "{body}");
    let (s, _, body) = send(&auth_router, "POST", "/internal/v1/api-keys/resolve", Some(AUTH_TOKEN), ask(&both)).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("api_key_inactive")), "revoked: {body}");
    for wrong in [None, Some("auth-service-token-of-at-least-32-characterZ"), Some(admin.as_str()), Some(orders_only.as_str())] {
        let (s, _, body) = send(&auth_router, "POST", "/internal/v1/api-keys/resolve", wrong, ask(&orders_only)).await;
        assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_service_token")), "{body}");
        assert!(body.get("user_id").is_none());
    }
    let (s, _, body) = send(&auth_router, "POST", "/internal/v1/api-keys/resolve", Some(AUTH_TOKEN), ask(&"a".repeat(200))).await;
    assert_eq!((s, body["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("key")), "{body}");
    let big = Some(Body::from(json!({"key": format!("sk_{}", "a".repeat(4000))}).to_string()));
    assert_eq!(send(&auth_router, "POST", "/internal/v1/api-keys/resolve", Some(AUTH_TOKEN), big).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // An auth process without auth.service_token has no such route.
    let mut closed = base.clone();
    closed.auth.service_token = None;
    let closed = emporium::start(Arc::new(closed), Router::new(), false).await.unwrap();
    for token in [None, Some(AUTH_TOKEN)] {
        let (s, _, body) = send(&closed.router(), "POST", "/internal/v1/api-keys/resolve", token, ask(&orders_only)).await;
        assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("route_not_found")), "{body}");
    }
    // What `emporium doctor` asks: a key no one holds, with the service token.
    assert_eq!(HttpApiKeys::new(&auth_url, AUTH_TOKEN, Duration::ZERO).probe().await, Ok(()));
    let refused = HttpApiKeys::new(&auth_url, "another-service-token-of-32-characters!", Duration::ZERO).probe().await.unwrap_err();
    assert!(refused.contains("refused auth.service_token"), "{refused}");
    // The route is documented with the other internal ones.
    let (_, _, doc) = send(&auth_router, "GET", "/api/openapi.json", None, None).await;
    assert!(doc["paths"]["/internal/v1/api-keys/resolve"]["post"].is_object());

    // A process that keeps answers longer, to show what a cache holds while auth is away.
    let patient = process(&base, &["catalog"], &auth_url, 60, |_| {}).await;
    let (kept, _) = create_key(auth, &admin, &["catalog:write"]).await;
    let (never_used, _) = create_key(auth, &admin, &["catalog:write", "orders:read"]).await;
    let unknown = "sk_anotherKeyNoOneWasEverGiven00000000000000";
    assert_eq!(get(&patient, PRODUCTS, &kept).await.0, StatusCode::OK);
    assert_eq!(get(&patient, PRODUCTS, unknown).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&catalog, PRODUCTS, &kept).await.0, StatusCode::OK);

    // Auth stops.
    stop.send(()).unwrap();
    auth_server.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A key no process has seen: 503 with Retry-After, on both services.
    for (app, path) in [(&catalog, PRODUCTS), (&orders, ORDERS), (&patient, PRODUCTS)] {
        let (s, headers, body) = get(app, path, &never_used).await;
        assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("service_unavailable")), "{path}: {body}");
        let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    // Past the cache time nothing is taken on trust; within it, the answers stand.
    assert_eq!(get(&catalog, PRODUCTS, &kept).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&patient, PRODUCTS, &kept).await.0, StatusCode::OK);
    assert_eq!(get(&patient, PRODUCTS, unknown).await.0, StatusCode::UNAUTHORIZED, "refused keys are remembered too");
    // Tokens verify with the keys fetched earlier.
    assert_eq!(get(&catalog, PRODUCTS, &admin).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_pointed_at_an_auth_without_the_token_refuses_keys_as_unavailable() {
    let auth = Shop::with(|c| {
        c.services = vec!["auth".into()];
        c.public_url = Some("http://shop.test".into());
    })
    .await;
    let base = (*auth.config).clone();
    let auth_url = auth.serve().await;
    let (key, _) = create_key(&auth.app.router(), &auth.staff, &["catalog:write"]).await;
    let catalog = process(&base, &["catalog"], &auth_url, 30, |_| {}).await;
    let (s, headers, body) = get(&catalog, PRODUCTS, &key).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "auth's internal route is closed: {body}");
    assert!(headers.contains_key("retry-after"));
    let closed = HttpApiKeys::new(&auth_url, AUTH_TOKEN, Duration::ZERO).probe().await.unwrap_err();
    assert!(closed.contains("no auth.service_token"), "{closed}");
    // Without auth.url a process refuses keys outright, as before.
    let mut bare = base.clone();
    bare.services = vec!["catalog".into()];
    bare.auth.jwks_url = Some(format!("{auth_url}/.well-known/jwks.json"));
    let bare = emporium::start(Arc::new(bare), Router::new(), false).await.unwrap();
    let (s, _, body) = get(&bare, PRODUCTS, &key).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_api_key")), "{body}");
    assert_eq!(get(&bare, PRODUCTS, &auth.staff).await.0, StatusCode::OK);
}
