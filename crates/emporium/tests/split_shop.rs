//! A shop split over several processes: start-up refuses a process that is
//! not told where the rest is, `/readyz` says whether the parts elsewhere
//! answer (and only in words), an outage of one of them is 503 with
//! `Retry-After`, shops sharing a Redis keep apart, and `seed --demo`
//! puts the pictures where the catalog processes read them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use kernel::auth::Role;
use kernel::config::Config;
use platform::app::App;
use platform::testing::Sandbox;
use serde_json::{Value, json};
use support::{Shop, call, emporium_command, output_text, signed_in};

const TOKEN: &str = "a-service-token-of-at-least-32-characters";
const PUBLIC_URL: &str = "http://shop.test";

/// A loopback port nothing listens on (bound, then let go).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process's configuration in `sandbox`, running `services`, with the
/// shop's public address and the catalog's service token.
fn process(sandbox: &Sandbox, services: &[&str]) -> Config {
    let mut config = (*sandbox.config()).clone();
    config.services = services.iter().map(|s| s.to_string()).collect();
    config.public_url = Some(PUBLIC_URL.into());
    config.catalog.service_token = Some(TOKEN.into());
    config
}

/// `/readyz`: its status, its checks, and the body as sent.
async fn readyz(app: &App) -> (StatusCode, Value, String) {
    let (status, _, body) = call(app, "GET", "/readyz", &[], None).await;
    (status, body["checks"].clone(), body.to_string())
}

/// Asks `/readyz` until `wanted` holds (for up to 30 s); the last answer.
async fn readyz_until(app: &App, what: &str, wanted: impl Fn(StatusCode, &Value) -> bool) -> (StatusCode, Value, String) {
    let started = Instant::now();
    loop {
        let answer = readyz(app).await;
        if wanted(answer.0, &answer.1) {
            return answer;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Serves `app` on `addr` until the returned sender is used (or dropped),
/// then shuts it down as `emporium serve` does.
async fn serve_at(app: App, addr: SocketAddr) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.serve(listener, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (stop, server)
}

fn retry_after(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers.get("retry-after")?.to_str().ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orders_process_is_ready_only_while_the_catalog_and_the_keys_answer_and_their_outage_is_503() {
    let sandbox = Sandbox::new().await;
    let elsewhere: SocketAddr = format!("127.0.0.1:{}", dead_port()).parse().unwrap();
    let mut config = process(&sandbox, &["orders", "notify"]);
    config.catalog.url = Some(format!("http://{elsewhere}"));
    config.auth.url = Some(format!("http://{elsewhere}"));
    let orders = emporium::start(Arc::new(config), axum::Router::new(), false).await.unwrap();

    // Nothing answers there yet: not ready, naming the checks in one word each.
    let (status, checks, body) = readyz_until(&orders, "the catalog and the keys are named", |_, c| c["catalog"] == "unavailable").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!((checks["catalog"].as_str(), checks["auth.jwks"].as_str()), (Some("unavailable"), Some("unavailable")), "{body}");
    assert!(!body.contains("127.0.0.1") && !body.contains(&elsewhere.port().to_string()) && !body.contains("refused"), "no address or cause is shown: {body}");

    // Meanwhile a request that needs the catalog is 503 with Retry-After, not 500.
    let (status, _, cart) = call(&orders, "POST", "/api/v1/carts", &[], None).await;
    assert!(status.is_success(), "{cart}");
    let (cart_id, secret) = (cart["id"].as_str().unwrap().to_owned(), cart["secret"].as_str().unwrap().to_owned());
    let add = |sku: &str| json!({"sku": sku, "quantity": 1});
    let with_secret = [("x-cart-secret", secret.clone())];
    let (status, headers, body) = call(&orders, "POST", &format!("/api/v1/carts/{cart_id}/items"), &with_secret, Some(add("SPLIT-1"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("service_unavailable")), "{body}");
    assert!(retry_after(&headers).is_some_and(|s| (1..=60).contains(&s)), "{headers:?}");
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
    let product = kernel::id::ProductId::new().to_string();
    let (status, headers, body) =
        call(&orders, "POST", &format!("/api/v1/products/{product}/notify-me"), &[], Some(json!({"email": "ada@example.com"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("service_unavailable")), "{body}");
    assert!(retry_after(&headers).is_some(), "{headers:?}");

    // The catalog (with auth) starts at that address: ready, and the cart fills.
    let catalog_config = Arc::new(process(&sandbox, &["auth", "catalog"]));
    let catalog = emporium::start(catalog_config.clone(), axum::Router::new(), false).await.unwrap();
    let staff = signed_in(&catalog, &catalog_config, "cm@example.com", Role::Admin).await;
    let as_staff = [("authorization", format!("Bearer {staff}"))];
    let (status, _, body) = call(&catalog, "POST", "/api/v1/admin/products", &as_staff, Some(json!({
        "title": "Split Mug", "status": "active", "variants": [{"sku": "SPLIT-1", "prices": {"USD": 1200}}]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, body) = call(&catalog, "PUT", "/api/v1/admin/inventory/SPLIT-1", &as_staff, Some(json!({"on_hand": 5}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (stop, server) = serve_at(catalog, elsewhere).await;
    let (_, checks, body) = readyz_until(&orders, "ready once the catalog answers", |s, _| s == StatusCode::OK).await;
    assert_eq!((checks["catalog"].as_str(), checks["auth.jwks"].as_str()), (Some("ok"), Some("ok")), "{body}");
    let (status, _, body) = call(&orders, "POST", &format!("/api/v1/carts/{cart_id}/items"), &with_secret, Some(add("SPLIT-1"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // It goes away: not ready again within moments (not only at start).
    stop.send(()).unwrap();
    server.await.unwrap();
    let (status, checks, body) = readyz_until(&orders, "unready once the catalog is gone", |_, c| c["catalog"] == "unavailable").await;
    assert_eq!((status, checks["auth.jwks"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_process_is_ready_only_while_the_api_answers() {
    let sandbox = Sandbox::new().await;
    let api_at: SocketAddr = format!("127.0.0.1:{}", dead_port()).parse().unwrap();
    let mut config = process(&sandbox, &["web"]);
    config.web.api_url = Some(format!("http://{api_at}"));
    let web = emporium::start_shop(Arc::new(config), false).await.unwrap();
    let (status, checks, body) = readyz_until(&web, "the API is named", |_, c| c["web.api"] == "unavailable").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.contains("127.0.0.1") && !body.contains("healthz"), "{body}");
    assert!(checks.as_object().unwrap().keys().all(|k| !k.starts_with("database.")), "the pages hold no database: {body}");

    // A page process at that address answers /healthz, but it is not the API.
    let mut pages = process(&sandbox, &["web"]);
    pages.web.api_url = Some(format!("http://127.0.0.1:{}", dead_port()));
    let pages = emporium::start_shop(Arc::new(pages), false).await.unwrap();
    let (stop, server) = serve_at(pages, api_at).await;
    let answer = reqwest::get(format!("http://{api_at}/healthz")).await.unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (status, checks, body) = readyz(&web).await;
    assert_eq!((status, checks["web.api"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")), "{body}");
    stop.send(()).unwrap();
    server.await.unwrap();

    // The API (here a whole shop) comes up at that address.
    let api = emporium::start_shop(Arc::new(process(&sandbox, &kernel::config::ROLES)), false).await.unwrap();
    let (_stop, _server) = serve_at(api, api_at).await;
    let (_, checks, body) = readyz_until(&web, "ready once the API answers", |s, _| s == StatusCode::OK).await;
    assert_eq!(checks["web.api"], "ok", "{body}");
}

/// A TCP relay to PostgreSQL that can be cut, as a network outage would.
struct Relay {
    addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn to(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, mut watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = watch.changed() => return,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { return };
                        let target = target.clone();
                        let mut cut = watch.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = cut.changed() => {}
                            }
                        });
                    }
                }
            }
        });
        Relay { addr, cut }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }
}

/// A request that writes to the orders database: a new cart.
async fn request(shop: &Shop) -> (StatusCode, axum::http::HeaderMap, Value) {
    call(&shop.app, "POST", "/api/v1/carts", &[], None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_reached_is_503_with_retry_after() {
    match platform::testing::database_url() {
        // PostgreSQL through a relay, which is then cut: the connections
        // break and new ones are refused.
        Some(admin) => {
            let server = reqwest::Url::parse(&admin).unwrap();
            let relay = Relay::to(format!("{}:{}", server.host_str().unwrap(), server.port().unwrap_or(5432))).await;
            let shop = Shop::with(|c| {
                let mut url = reqwest::Url::parse(c.database.url.as_deref().unwrap()).unwrap();
                url.set_host(Some("127.0.0.1")).unwrap();
                url.set_port(Some(relay.addr.port())).unwrap();
                c.database.url = Some(url.to_string());
            })
            .await;
            assert_eq!(request(&shop).await.0, StatusCode::CREATED);
            relay.cut();
            let (status, headers, body) = request(&shop).await;
            assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("service_unavailable")), "{body}");
            assert!(retry_after(&headers).is_some(), "{headers:?}");
            assert!(!body.to_string().contains("127.0.0.1") && !body.to_string().contains(&relay.addr.port().to_string()), "{body}");
            let (status, checks, _) = readyz(&shop.app).await;
            assert_eq!((status, checks["database.orders"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")));
        }
        // SQLite held by another writer past the busy timeout.
        None => {
            let shop = Shop::with(|c| c.database.busy_timeout_secs = 1).await;
            assert_eq!(request(&shop).await.0, StatusCode::CREATED);
            use sqlx::Connection;
            let file = shop.config.data_dir.join("orders.db");
            let mut holder = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display())).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();
            let (status, headers, body) = request(&shop).await;
            assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("service_unavailable")), "{body}");
            assert!(retry_after(&headers).is_some(), "{headers:?}");
            sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
            assert_eq!(request(&shop).await.0, StatusCode::CREATED, "back once the writer is done");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_sharing_a_redis_keep_their_catalog_news_apart() {
    if platform::testing::redis_url().is_none() {
        eprintln!("EMPORIUM_TEST_REDIS_URL unset: Redis prefixes are checked in the run with Redis");
        return;
    }
    // Two replicas of one shop (one database, one prefix), and another shop
    // on the same Redis under a prefix of its own.
    let one = Sandbox::new().await;
    let first = Arc::new(process(&one, &["auth", "catalog"]));
    let shared = first.redis.prefix.clone();
    let replica = emporium::start(first.clone(), axum::Router::new(), false).await.unwrap();
    let writer = emporium::start(first.clone(), axum::Router::new(), false).await.unwrap();
    let other_sandbox = Sandbox::new().await;
    let other_config = process(&other_sandbox, &["auth", "catalog"]);
    assert_ne!(other_config.redis.prefix, shared);
    let other = emporium::start(Arc::new(other_config), axum::Router::new(), false).await.unwrap();

    let generation = |app: &App| app.ports().get::<catalog::Inventory>().unwrap().cache.as_ref().unwrap().generation();
    // Each has subscribed once it has forgotten everything once.
    let started = Instant::now();
    while generation(&replica) == 0 || generation(&other) == 0 || generation(&writer) == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "subscribed to catalog news");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A storefront of its own (no catalog in its process) hears the same news.
    let storefront = kernel::news::CatalogNews::default();
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    storefront.listen({
        let heard = heard.clone();
        move |change| heard.lock().unwrap().push(change.clone())
    });
    let stop = tokio_util::sync::CancellationToken::new();
    catalog::follow_through_redis(&platform::testing::redis_url().unwrap(), &shared, storefront, stop.clone()).unwrap();
    let started = Instant::now();
    while heard.lock().unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the storefront subscribed (and forgot everything once)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (replica_before, other_before) = (generation(&replica), generation(&other));
    let staff = signed_in(&writer, &first, "cm@example.com", Role::Admin).await;
    let (status, _, body) = call(&writer, "POST", "/api/v1/admin/products", &[("authorization", format!("Bearer {staff}"))], Some(json!({
        "title": "Shared Mug", "status": "active", "variants": [{"sku": "REDIS-1", "prices": {"USD": 900}}]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let started = Instant::now();
    while generation(&replica) == replica_before {
        assert!(started.elapsed() < Duration::from_secs(10), "the replica of the same shop hears of the change");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(generation(&other), other_before, "the other shop's cache is left alone");

    // A stock change travels as news of that product: the replica forgets its
    // page (which shows what is available) and nothing else.
    let available = |body: &serde_json::Value| body["variants"][0]["available"].as_i64();
    let (status, _, page) = call(&replica, "GET", "/api/v1/products/shared-mug", &[], None).await;
    assert_eq!((status, available(&page)), (StatusCode::OK, Some(0)), "{page}");
    let (status, _, _) = call(&replica, "GET", "/api/v1/categories", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    let replica_before = generation(&replica);
    let (status, _, body) = call(&writer, "PUT", "/api/v1/admin/inventory/REDIS-1", &[("authorization", format!("Bearer {staff}"))], Some(json!({"on_hand": 7}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let started = Instant::now();
    loop {
        let (_, _, page) = call(&replica, "GET", "/api/v1/products/shared-mug", &[], None).await;
        if available(&page) == Some(7) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the replica forgets the product's page: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(generation(&replica), replica_before, "a stock change does not forget everything");
    let product = page["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    while !heard.lock().unwrap().iter().any(|c| matches!(c, kernel::news::CatalogChange::Stock { products, .. } if products.contains(&product))) {
        assert!(started.elapsed() < Duration::from_secs(10), "the storefront hears which product's stock changed: {:?}", heard.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
}

/// The line of `emporium doctor` about `part`, if any.
fn doctor_line(stdout: &str, part: &str) -> Option<String> {
    stdout.lines().find(|l| l.split_whitespace().nth(1).is_some_and(|p| p.trim_end_matches(':') == part)).map(str::to_owned)
}

#[tokio::test]
async fn serve_refuses_an_incomplete_split_process_naming_the_key() {
    let sandbox = Sandbox::new().await;
    for (services, extra, key, var) in [
        ("orders", vec![], "catalog.url", "EMPORIUM_CATALOG_URL"),
        ("orders", vec![("EMPORIUM_CATALOG_URL", "http://127.0.0.1:9")], "catalog.service_token", "EMPORIUM_CATALOG_SERVICE_TOKEN"),
        ("catalog", vec![], "auth.url", "EMPORIUM_AUTH_URL"),
        ("web", vec![], "web.api_url", "EMPORIUM_WEB_API_URL"),
        ("auth", vec![], "public_url", "EMPORIUM_PUBLIC_URL"),
    ] {
        let mut cmd = emporium_command(&sandbox);
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--services", services]).envs(extra);
        if key != "public_url" {
            cmd.env("EMPORIUM_PUBLIC_URL", PUBLIC_URL);
        }
        let out = cmd.output().unwrap();
        let (_, stderr) = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{services}: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")) && stderr.contains(var), "{services} should name `{key}`: {stderr}");
    }
    let out = emporium_command(&sandbox).args(["serve", "--services", "auth"]).output().unwrap();
    let stderr = output_text(&out).1;
    assert!(stderr.contains("same on every process") && stderr.contains("issuer"), "public_url is explained: {stderr}");
}

#[tokio::test]
async fn doctor_notes_local_pictures_with_the_catalog_on_postgresql() {
    let sandbox = Sandbox::new().await;
    let out = emporium_command(&sandbox).arg("doctor").output().unwrap();
    let (stdout, stderr) = output_text(&out);
    let line = doctor_line(&stdout, "media.store");
    match sandbox.database_url {
        Some(_) => {
            let line = line.unwrap_or_else(|| panic!("no media.store line: {stdout}\n{stderr}"));
            assert!(line.starts_with("note ") && line.contains("replicas") && line.contains("media.store = \"s3\""), "{line}");
        }
        None => assert!(line.is_none(), "one SQLite catalog keeps its pictures beside it: {stdout}"),
    }
}

/// The picture of the first product, as a shopper's browser fetches it
/// from a catalog process: its address and status.
async fn first_picture(app: &App) -> (String, StatusCode, Vec<u8>) {
    let (_, _, list) = call(app, "GET", "/api/v1/products?limit=1", &[], None).await;
    let id = list["data"][0]["id"].as_str().unwrap_or_else(|| panic!("{list}")).to_owned();
    let (_, _, product) = call(app, "GET", &format!("/api/v1/products/{id}"), &[], None).await;
    let url = product["media"][0]["url"].as_str().unwrap_or_else(|| panic!("{product}")).to_owned();
    let response = tower::ServiceExt::oneshot(app.router(), axum::http::Request::get(&url).body(axum::body::Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes().to_vec();
    (url, status, bytes)
}

/// Files under `dir` (none when it does not exist).
fn files(dir: &std::path::Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                count += 1;
            }
        }
    }
    count
}

#[tokio::test]
async fn seed_demo_puts_the_pictures_in_media_dir_where_the_catalog_serves_them() {
    let sandbox = Sandbox::new().await;
    let shared = sandbox.data_dir().join("shared-media");
    let out = emporium_command(&sandbox).args(["seed", "--demo"]).env("EMPORIUM_MEDIA_DIR", &shared).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&shared.display().to_string()) && stdout.contains("media.dir"), "{stdout}");
    assert!(files(&shared) > 0, "the pictures are in media.dir");
    assert_eq!(files(&sandbox.data_dir().join("media")), 0, "nothing in the command's own folder");

    let mut config = process(&sandbox, &kernel::config::ROLES);
    config.media.dir = Some(shared);
    let app = emporium::start(Arc::new(config), axum::Router::new(), false).await.unwrap();
    let (url, status, bytes) = first_picture(&app).await;
    assert_eq!(status, StatusCode::OK, "{url}");
    assert_eq!(catalog::media::Kind::sniff(&bytes), Some(catalog::media::Kind::Png), "{url}");
}

#[tokio::test]
async fn seed_demo_uploads_the_pictures_to_the_bucket_a_catalog_serves_them_from() {
    let Some(endpoint) = platform::testing::s3_url() else {
        eprintln!("EMPORIUM_TEST_S3_URL unset: seeding into S3 is checked in the run with an S3-compatible server");
        return;
    };
    let bucket = platform::testing::unique("emporium-t").to_lowercase().replace('_', "-");
    platform::testing::create_bucket(&endpoint, &bucket);
    let sandbox = Sandbox::new().await;
    let out = emporium_command(&sandbox)
        .args(["seed", "--demo"])
        .env("EMPORIUM_MEDIA_STORE", "s3")
        .env("EMPORIUM_MEDIA_S3_BUCKET", &bucket)
        .env("EMPORIUM_MEDIA_S3_ENDPOINT", &endpoint)
        .env("EMPORIUM_MEDIA_S3_ALLOW_HTTP", "true")
        .env("EMPORIUM_MEDIA_S3_ACCESS_KEY_ID", "test")
        .env("EMPORIUM_MEDIA_S3_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&format!("S3 bucket {bucket}")), "{stdout}");
    assert_eq!(files(&sandbox.data_dir().join("media")), 0, "no picture in the command's own folder");

    // A catalog process elsewhere (another folder of its own) serves them from the bucket.
    let mut config = process(&sandbox, &kernel::config::ROLES);
    let catalog_db = config.database_url("catalog");
    config.data_dir = sandbox.data_dir().join("another-machine");
    config.database.services.catalog = Some(catalog_db);
    config.media.store = "s3".into();
    config.media.s3_bucket = Some(bucket);
    config.media.s3_endpoint = Some(endpoint);
    config.media.s3_allow_http = true;
    config.media.s3_access_key_id = Some("test".into());
    config.media.s3_secret_access_key = Some("test".into());
    let app = emporium::start(Arc::new(config), axum::Router::new(), false).await.unwrap();
    let (url, status, bytes) = first_picture(&app).await;
    assert_eq!(status, StatusCode::OK, "{url}");
    assert_eq!(catalog::media::Kind::sniff(&bytes), Some(catalog::media::Kind::Png), "{url}");
}
