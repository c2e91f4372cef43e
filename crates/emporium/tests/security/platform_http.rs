//! The HTTP core under attack: slow clients and connection floods, retried
//! refunds after a token refresh, HTML without its security headers, secrets
//! in `emporium config`, and `/metrics` on the public port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::{get, post};
use kernel::auth::Role;
use platform::app::App;
use platform::testing::Sandbox;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::support::{Shop, Who, call, signed_in};

/// Only a bound against a hang: every outcome below arrives much sooner.
const PATIENCE: Duration = Duration::from_secs(20);

/// A process served on loopback, with probe routes: one that reads its
/// body, one that never answers, one that answers [`BIG`] bytes.
struct Served {
    _sandbox: Sandbox,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn served(tune: impl FnOnce(&mut kernel::config::Config), own_metrics_port: bool) -> Served {
    let sandbox = Sandbox::new().await;
    let mut config = (*sandbox.config()).clone();
    config.services = vec!["auth".into()];
    config.public_url = Some("http://shop.test".into());
    let metrics_listener = match own_metrics_port {
        true => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        false => None,
    };
    let metrics = metrics_listener.as_ref().map(|l| l.local_addr().unwrap());
    config.metrics.bind = metrics;
    tune(&mut config);
    let probes = Router::new()
        .route("/probe/echo", post(|body: Bytes| async move { format!("read {} bytes", body.len()) }))
        .route(
            "/probe/never",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .route("/probe/big", get(|| async { vec![b'x'; BIG] }));
    let app = App::start(Arc::new(config), &emporium::services(), probes, false).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.serve_with_metrics(listener, metrics_listener, async move {
        let _ = stopped.await;
    }));
    Served { _sandbox: sandbox, addr, metrics, _stop: stop }
}

/// Writes `raw`, then reads until the server closes the connection: what it
/// said (a reset counts as closed). Panics if the server keeps it open.
async fn exchange(addr: SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    until_closed(&mut stream).await
}

async fn until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out)).await {
        Ok(_) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => panic!("the server kept the connection open; it had said: {}", String::from_utf8_lossy(&out)),
    }
}

/// One keep-alive request on `stream`, read until its JSON body is complete.
async fn kept_alive_get(stream: &mut TcpStream, path: &str) -> String {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 1024];
    while !out.ends_with(b"}") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_8_slow_clients_are_cut_off() {
    let shop = served(
        |c| {
            c.http.header_timeout_secs = 1;
            c.http.body_timeout_secs = 1;
            c.http.request_timeout_secs = 2;
        },
        false,
    )
    .await;

    // Half the headers, then nothing: disconnected.
    let said = exchange(shop.addr, "GET /healthz HTTP/1.1\r\nHost: shop\r\nX-Slow: ").await;
    assert!(!said.contains(" 200 "), "{said}");

    // A body shorter than its Content-Length: 408 in the error shape, then closed.
    let said = exchange(
        shop.addr,
        "POST /probe/echo HTTP/1.1\r\nHost: shop\r\nContent-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\nshort",
    )
    .await;
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(said.contains(r#""code":"request_body_timeout""#), "{said}");

    // A handler that never answers: 503 `request_timeout`, not a hang.
    let said = exchange(shop.addr, "GET /probe/never HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n").await;
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    assert!(said.contains(r#""code":"request_timeout""#), "{said}");

    // A whole request within the limits is served as ever.
    let said = exchange(
        shop.addr,
        "POST /probe/echo HTTP/1.1\r\nHost: shop\r\nConnection: close\r\nContent-Length: 5\r\n\r\nwhole",
    )
    .await;
    assert!(said.starts_with("HTTP/1.1 200") && said.ends_with("read 5 bytes"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_8_connections_past_the_cap_are_not_served() {
    let shop = served(|c| c.http.max_connections = 2, false).await;
    let mut first = TcpStream::connect(shop.addr).await.unwrap();
    let mut second = TcpStream::connect(shop.addr).await.unwrap();
    for open in [&mut first, &mut second] {
        let said = kept_alive_get(open, "/healthz").await;
        assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    }

    // Both slots are held (the two stay open): a third is refused.
    let said = exchange(shop.addr, "GET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n").await;
    assert!(!said.contains(" 200 "), "served past the cap: {said}");
    if !said.is_empty() {
        assert!(said.starts_with("HTTP/1.1 503") && said.contains("too_many_connections"), "{said}");
    }

    // One closes; its slot serves the next connection.
    drop(first);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let said = exchange(shop.addr, "GET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n").await;
        if said.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the freed slot was never reused: {said}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let said = kept_alive_get(&mut second, "/healthz").await;
    assert!(said.starts_with("HTTP/1.1 200"), "the open connection is still served: {said}");
}

#[tokio::test]
async fn item_9_refund_retries_after_a_token_refresh_refund_once() {
    let shop = Shop::with(|c| c.orders.test_payments = Some(true)).await;
    shop.product("IDEM-1", 2500, 5).await;
    let (cart, guest) = shop.ready_cart(&[("IDEM-1", 1)], None).await;
    let (s, order) = shop.checkout(&cart, &guest, "tok_visa").await;
    assert_eq!((s, order["status"].as_str()), (StatusCode::CREATED, Some("paid")), "{order}");
    let order = order["id"].as_str().unwrap().to_owned();

    // An order manager signs in, and refreshes: a new access token, same person.
    signed_in(&shop.app, &shop.config, "orders@example.com", Role::OrderManager).await;
    let (s, _, tokens) = call(&shop.app, "POST", "/api/v1/auth/login", &[],
        Some(json!({"email": "orders@example.com", "password": "a long passphrase"}))).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    let before = tokens["access_token"].as_str().unwrap().to_owned();
    let (s, _, refreshed) = call(&shop.app, "POST", "/api/v1/auth/refresh", &[],
        Some(json!({"refresh_token": tokens["refresh_token"]}))).await;
    assert_eq!(s, StatusCode::OK, "{refreshed}");
    let after = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_ne!(before, after);

    let path = format!("/api/v1/admin/orders/{order}/refunds");
    let body = json!({"amount": 500, "reason": "damaged in transit"});
    let with = |token: &str| Who { token: Some(token.to_owned()), idempotency_key: Some("refund-7".into()), ..Who::default() };
    let (s, first_headers, first) = shop.send_full("POST", &path, &with(&before), Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert!(first_headers.get("idempotent-replayed").is_none());

    let (s, headers, again) = shop.send_full("POST", &path, &with(&after), Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert!(headers.get("idempotent-replayed").is_some(), "the retry after the refresh is a replay");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM refunds").await, 1, "refunded once");

    // The same key chosen by another staff member is theirs alone.
    let (s, headers, other) = shop.send_full("POST", &path, &with(&shop.staff), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{other}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_ne!(other["id"], first["id"]);
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM refunds").await, 2);
}

#[tokio::test]
async fn item_23_html_from_the_api_has_csp_and_frame_protection() {
    const SIGNING_KEY: &str = "a signing key of at least thirty-two characters";
    let shop = Shop::with(|c| {
        c.services = vec!["auth".into(), "catalog".into(), "orders".into(), "notify".into()];
        c.notify.signing_key = Some(SIGNING_KEY.into());
        c.orders.test_payments = Some(true);
    })
    .await;
    let token = notify::domain::unsubscribe_token(SIGNING_KEY.as_bytes(), notify::domain::Topic::MarketingEmail, "ada@example.com");
    for path in ["/api/docs".to_owned(), format!("/api/v1/unsubscribe?token={token}"), "/test-gateway/confirm?payment=pay_test_1".to_owned()] {
        let (status, headers, _) = call(&shop.app, "GET", &path, &[], None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(header("content-type").starts_with("text/html"), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("'unsafe-eval'") && !csp.contains("script-src 'self' 'unsafe-inline'"), "{path}: {csp}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert!(!header("referrer-policy").is_empty(), "{path}");
    }
    // The reference page still works under its policy: its script is apart.
    let (status, headers, _) = call(&shop.app, "GET", "/api/docs.js", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/javascript"));
}

#[tokio::test]
async fn item_24_config_masks_credentials_in_every_url() {
    let sandbox = Sandbox::new().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_emporium"))
        .current_dir(sandbox.dir.path())
        .arg("config")
        .env_remove("EMPORIUM_DATABASE_URL")
        .env_remove("EMPORIUM_NATS_URL")
        .env_remove("EMPORIUM_REDIS_URL")
        .env("EMPORIUM_DATA_DIR", sandbox.data_dir())
        .env("EMPORIUM_SMS_URL", "https://AC123:sms-url-password@sms.example/2010-04-01/send?signature=sms-query-secret")
        .env("EMPORIUM_SMS_ACCOUNT", "AC123")
        .env("EMPORIUM_SMS_TOKEN", "sms-token-secret")
        .env("EMPORIUM_SMS_FROM", "+15550100")
        .env("EMPORIUM_AUTH_JWKS_URL", "http://auth.internal:8080/.well-known/jwks.json?key=jwks-query-secret")
        .env("EMPORIUM_CATALOG_URL", "http://catalog-user@catalog.internal:8080")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for secret in ["sms-url-password", "sms-query-secret", "sms-token-secret", "jwks-query-secret", "catalog-user"] {
        assert!(!stdout.contains(secret), "`{secret}` shown:\n{stdout}");
    }
    // The addresses themselves stay readable.
    assert!(stdout.contains("https://AC123:****@sms.example/2010-04-01/send?signature=****"), "{stdout}");
    assert!(stdout.contains("http://auth.internal:8080/.well-known/jwks.json?key=****"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_26_metrics_live_on_their_own_listener_when_bound() {
    let shop = served(|_| {}, true).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
    let said = exchange(shop.addr, &get("/metrics")).await;
    assert!(said.starts_with("HTTP/1.1 404"), "the public port: {said}");
    let said = exchange(shop.addr, &get("/healthz")).await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");

    let metrics = shop.metrics.unwrap();
    let said = exchange(metrics, &get("/metrics")).await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    assert!(said.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{said}");
    assert!(said.contains("# TYPE http_request_duration_seconds"), "{said}");
    let said = exchange(metrics, &get("/api/v1/products")).await;
    assert!(said.starts_with("HTTP/1.1 404"), "only /metrics there: {said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_26_without_metrics_bind_the_main_port_serves_metrics() {
    let shop = served(|_| {}, false).await;
    let said = exchange(shop.addr, "GET /metrics HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n").await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
}

/// A client socket bound to `local` (a loopback address such as 127.0.0.2,
/// so one machine plays several clients), with a receive buffer of
/// `receive_buffer` bytes when given, connected to `addr`.
async fn client_from(local: &str, addr: SocketAddr, receive_buffer: Option<u32>) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// [`exchange`] from `local`; a refused connection may be closed before the
/// request is written, which is no failure here.
async fn exchange_from(local: &str, addr: SocketAddr, raw: &str) -> String {
    let mut stream = client_from(local, addr, None).await;
    let _ = stream.write_all(raw.as_bytes()).await;
    until_closed(&mut stream).await
}

/// What a probe answers for a client that will not read it: far more than
/// the kernel's socket buffers hold, so the server's writes stall.
const BIG: usize = 32 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_8_a_client_that_stops_reading_is_dropped_and_its_slot_reused() {
    let shop = served(
        |c| {
            c.http.max_connections = 1;
            c.http.write_timeout_secs = 1;
        },
        false,
    )
    .await;
    // It asks, with a tiny receive window, and never reads: it holds the
    // only slot. (The answer is far larger than the socket buffers; the API
    // document alone would fit in them and be written whole.)
    let mut slow = client_from("127.0.0.1", shop.addr, Some(4096)).await;
    slow.write_all(b"GET /probe/big HTTP/1.1\r\nHost: shop\r\n\r\n").await.unwrap();

    // Once its writes have stalled for the write timeout, the server drops
    // it and the slot serves someone else.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let said = exchange(shop.addr, "GET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n").await;
        if said.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slot of a client that never reads was never freed: {said}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The slow client got the start of its answer, cut short, then the end.
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, slow.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server kept the stalled connection open");
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got[..got.len().min(200)]));
    assert!(got.len() < BIG, "the whole answer was sent ({} bytes)", got.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_8_one_client_cannot_take_every_connection() {
    let get = "GET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n";
    let shop = served(|c| c.http.max_connections_per_ip = 2, false).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut open = client_from("127.0.0.2", shop.addr, None).await;
        let said = kept_alive_get(&mut open, "/healthz").await;
        assert!(said.starts_with("HTTP/1.1 200"), "{said}");
        held.push(open);
    }

    // 127.0.0.2 holds its two: its third is refused, another client is served.
    let said = exchange_from("127.0.0.2", shop.addr, get).await;
    assert!(!said.contains(" 200 "), "served past the per-client cap: {said}");
    if !said.is_empty() {
        assert!(said.starts_with("HTTP/1.1 503") && said.contains("too_many_connections"), "{said}");
    }
    let said = exchange_from("127.0.0.3", shop.addr, get).await;
    assert!(said.starts_with("HTTP/1.1 200"), "another client: {said}");

    // One of the two closes: 127.0.0.2 may open another.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let said = exchange_from("127.0.0.2", shop.addr, get).await;
        if said.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the client's freed slot was never reused: {said}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A trusted proxy speaks for many clients: it is not capped so.
    let behind_proxy = served(
        |c| {
            c.http.max_connections_per_ip = 2;
            c.http.trusted_proxies = vec!["127.0.0.2".parse().unwrap()];
        },
        false,
    )
    .await;
    let mut proxied = Vec::new();
    for _ in 0..4 {
        let mut open = client_from("127.0.0.2", behind_proxy.addr, None).await;
        let said = kept_alive_get(&mut open, "/healthz").await;
        assert!(said.starts_with("HTTP/1.1 200"), "the proxy's connection was refused: {said}");
        proxied.push(open);
    }
}

#[tokio::test]
async fn item_22_api_answers_holding_secrets_are_never_cached() {
    let shop = Shop::new().await;
    let cache_control = |headers: &axum::http::HeaderMap| headers.get("cache-control").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();

    let (s, headers, tokens) = call(&shop.app, "POST", "/api/v1/auth/login", &[],
        Some(json!({"email": "admin@example.com", "password": "a long passphrase"}))).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    assert_eq!(cache_control(&headers), "no-store", "login");
    let (s, headers, refreshed) = call(&shop.app, "POST", "/api/v1/auth/refresh", &[],
        Some(json!({"refresh_token": tokens["refresh_token"]}))).await;
    assert_eq!(s, StatusCode::OK, "{refreshed}");
    assert_eq!(cache_control(&headers), "no-store", "refresh");

    let admin = Who { token: Some(refreshed["access_token"].as_str().unwrap().to_owned()), ..Who::default() };
    let (s, headers, enrolment) = shop.send_full("POST", "/api/v1/me/mfa/totp", &admin, Some(json!({"password": "a long passphrase"}))).await;
    assert_eq!(s, StatusCode::OK, "{enrolment}");
    assert!(enrolment["secret"].is_string(), "{enrolment}");
    assert_eq!(cache_control(&headers), "no-store", "TOTP enrolment");
    let (s, headers, made) = shop.send_full("POST", "/api/v1/admin/api-keys", &admin,
        Some(json!({"name": "integration", "permissions": ["customers:read"]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    assert_eq!(cache_control(&headers), "no-store", "API key creation");
    let (s, headers, _) = call(&shop.app, "GET", "/api/v1/me", &[("authorization", format!("Bearer {}", refreshed["access_token"].as_str().unwrap()))], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cache_control(&headers), "no-store", "/me");

    // The public catalog's answers keep their own caching.
    let (s, headers, _) = call(&shop.app, "GET", "/api/v1/products", &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(cache_control(&headers).starts_with("public, max-age="), "{headers:?}");
}
