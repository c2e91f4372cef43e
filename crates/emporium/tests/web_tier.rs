//! The storefront and console as a tier of their own: an API process (every
//! service, no pages) on a loopback port, and a `web`-only process whose
//! pages reach it over HTTP at `web.api_url`, on a port of its own. A
//! shopper, a customer and a staff member use the pages through that port
//! with a real HTTP client; the API counts each shopper's own address; and
//! with the API stopped a page says 503 with `Retry-After`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use kernel::auth::Role;
use kernel::config::Config;
use serde_json::json;
use support::pages::{Browser, between, create, form_fields, mail_link, searchable, stock};
use support::{PASSWORD, Shop};
use tokio_util::sync::CancellationToken;

/// `router` on a loopback port as `emporium serve` serves it (each
/// connection's address known, a graceful stop): its base URL, the token
/// that stops it and the task serving it.
async fn serve(router: axum::Router, config: &Config) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let limits = platform::server::Limits::from_config(&config.http);
    let task = tokio::spawn(platform::server::serve(listener, router, limits, stop.clone()));
    (base, stop, task)
}

/// The API: every service, no pages; it believes `X-Forwarded-For` from
/// loopback (where the pages' process is) and lets three sign-in attempts
/// per client address a minute through.
async fn api_process() -> Shop {
    Shop::with(|c| {
        c.services = kernel::config::SERVICES.map(str::to_owned).to_vec();
        c.auth.trust_forwarded_for = true;
        c.auth.login_attempts_per_ip_per_minute = 3;
    })
    .await
}

/// A `web`-only configuration reaching the API at `api_url`, with a data
/// folder of its own, and a database and NATS it must never open (both at
/// a closed port: opening either would fail the start).
fn web_config(api: &Shop, api_url: &str, data_dir: &std::path::Path) -> Arc<Config> {
    let mut web = Config { data_dir: data_dir.to_owned(), ..(*api.config).clone() };
    web.services = vec![kernel::config::WEB.to_owned()];
    web.web.api_url = Some(api_url.to_owned());
    web.public_url = Some(api.config.public_url());
    web.database.url = Some("postgres://nobody@127.0.0.1:1/nothing".into());
    web.database.services = Default::default();
    web.nats.url = Some("nats://127.0.0.1:1".into());
    // The pages believe the proxy in front of them (the test's client, on loopback).
    web.auth.trust_forwarded_for = true;
    Arc::new(web)
}

/// A browser of the pages at `base`, arriving through a proxy that names it `ip`.
fn shopper<'a>(api: &'a Shop, base: &str, ip: &str) -> Browser<'a> {
    let mut browser = Browser::through(api, base);
    browser.headers.push(("x-forwarded-for", ip.to_owned()));
    browser
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_in_a_process_of_their_own_serve_every_journey_over_the_api() {
    let api = api_process().await;
    let (api_url, stop_api, api_task) = serve(api.app.router(), &api.config).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let home = http.get(format!("{api_url}/")).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::NOT_FOUND, "a process without `web` serves no page");

    let web_dir = tempfile::tempdir().unwrap();
    let web_config = web_config(&api, &api_url, web_dir.path());
    let web = emporium::start_shop(web_config.clone(), false).await.expect("a web-only process opens no database and joins no bus");
    assert!(web.db("catalog").is_none() && web.db("auth").is_none(), "no service database in the pages' process");
    let (web_url, stop_web, _web_task) = serve(web.router(), &web_config).await;

    // Its own probes, metrics and assets.
    for path in ["/healthz", "/readyz", "/metrics", "/assets/site.css"] {
        let r = http.get(format!("{web_url}{path}")).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {text}");
        assert!(!text.contains("database."), "{path} checks no database: {text}");
    }

    // The catalog, set up through the API.
    let (s, cat) = api.send("POST", "/api/v1/admin/categories", &api.as_staff(), Some(json!({"name": "Lamps"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{cat}");
    let lamp = create(&api, json!({"title": "Brass Desk Lamp", "status": "active", "brand": "Lumen", "categories": [cat["id"]],
        "variants": [{"sku": "LAMP-BR", "prices": {"USD": 8900}, "weight_grams": 900}]})).await;
    stock(&api, "LAMP-BR", 5).await;
    searchable(&api, "brass").await;

    // A guest: home, category, product and search pages, then an order paid with the test card.
    let mut guest = shopper(&api, &web_url, "203.0.113.20");
    let (status, home) = guest.get("/").await;
    assert_eq!(status, StatusCode::OK, "{home}");
    assert!(home.contains("Brass Desk Lamp") && home.contains(r#"href="/categories/lamps""#), "{home}");
    let (status, category) = guest.get("/categories/lamps").await;
    assert_eq!(status, StatusCode::OK);
    assert!(category.contains("Brass Desk Lamp"), "{category}");
    let (status, found) = guest.get("/search?q=lmap").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(between(between(&found, r#"<li class="card">"#, "</li>"), r#"<a href=""#, r#"">"#), "/products/brass-desk-lamp", "{found}");
    let (status, product) = guest.get("/products/brass-desk-lamp").await;
    assert_eq!(status, StatusCode::OK);
    assert!(product.contains("<h1>Brass Desk Lamp</h1>") && product.contains("$89.00"), "{product}");
    let (status, cart) = guest.submit(&product, "/cart/items", &[("sku", "LAMP-BR"), ("quantity", "2")]).await;
    assert_eq!(status, StatusCode::OK, "{cart}");
    assert!(cart.contains("Brass Desk Lamp") && cart.contains("$178.00"), "{cart}");
    assert!(guest.cookies.contains_key("cart_secret"), "the guest's cart secret is the browser's: {:?}", guest.cookies.keys());
    let (_, address) = guest.get("/checkout").await;
    let (status, pay) = guest.submit(&address, "/checkout/address", &[("email", "ada@example.com"), ("name", "Ada Lovelace"),
        ("line1", "1 Market St"), ("city", "San Francisco"), ("region", "CA"), ("postal_code", "94105"), ("country", "US")]).await;
    assert_eq!(status, StatusCode::OK, "{pay}");
    let method = between(&pay, r#"name="shipping_method" id="m1" value=""#, "\"").to_owned();
    let (status, confirmation) = guest.pay(&pay, &[("shipping_method", &method), ("token", "tok_visa")]).await;
    assert_eq!(status, StatusCode::OK, "{confirmation}");
    assert!(confirmation.contains("<h1>Order #1001</h1>") && confirmation.contains("Status: <strong>paid</strong>"), "{confirmation}");
    let (_, orders) = api.send("GET", "/api/v1/admin/orders", &api.as_staff(), None).await;
    let order_id = orders["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, order) = guest.get(&format!("/orders/{order_id}")).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert!(order.contains("<h1>Order #1001</h1>") && order.contains("Brass Desk Lamp"), "{order}");
    assert_eq!(api.available("LAMP-BR").await, (3, 0), "sold through the pages' tier");

    // A customer signs up, confirms the address from the mail, signs in and sees the account.
    let mut grace = shopper(&api, &web_url, "203.0.113.21");
    let (_, form) = grace.get("/account/sign-up").await;
    let (status, sent) = grace.submit(&form, "/account/sign-up", &[("name", "Grace Hopper"), ("email", "grace@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert!(sent.contains("We have sent a message to grace@example.com"), "{sent}");
    let link = mail_link(&api, "grace@example.com", "Confirm your email", "/account/verify-email?token=").await;
    let (_, confirm) = grace.get(&link).await;
    let (status, done) = grace.submit(&confirm, "/account/verify-email", &[("token", between(&confirm, r#"name="token" value=""#, "\""))]).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert!(done.contains("Your email address is confirmed."), "{done}");
    let (status, account) = grace.submit(&sent, "/account/sign-in", &[("email", "grace@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert!(account.contains("Hello, Grace Hopper"), "{account}");
    let (status, account) = grace.get("/account").await;
    assert_eq!(status, StatusCode::OK);
    assert!(account.contains("grace@example.com"), "{account}");

    // A staff member signs in to the console and saves a product from its editor.
    api.user("catalog@example.com", Role::CatalogManager).await;
    let mut staff = shopper(&api, &web_url, "203.0.113.30");
    let (status, _) = staff.post_sign_in("catalog@example.com").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, console) = staff.get("/admin").await;
    assert_eq!(status, StatusCode::OK, "{console}");
    let id = lamp["id"].as_str().unwrap();
    let path = format!("/admin/products/{id}");
    let (status, editor) = staff.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{editor}");
    let mut fields = form_fields(&editor, r#"value="save""#);
    fields.iter_mut().find(|(k, _)| k == "title").unwrap().1 = "Brass Reading Lamp".into();
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, headers, body) = staff.request("POST", &path, Some(&pairs)).await;
    let (status, saved) = if status.is_redirection() { staff.get(headers["location"].to_str().unwrap()).await } else { (status, body) };
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert!(saved.contains("The product is saved.") && saved.contains("<h1>Brass Reading Lamp</h1>"), "{saved}");
    let (_, stored) = api.send("GET", &format!("/api/v1/admin/products/{id}"), &api.as_staff(), None).await;
    assert_eq!(stored["title"], "Brass Reading Lamp");

    // The API counts each shopper's own address: three failed sign-ins from
    // one use up its attempts; another address still signs in.
    let mut guesser = shopper(&api, &web_url, "203.0.113.7");
    for _ in 0..3 {
        let (_, form) = guesser.get("/account/sign-in").await;
        let (status, _) = guesser.submit(&form, "/account/sign-in", &[("email", "grace@example.com"), ("password", "not the password")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (_, form) = guesser.get("/account/sign-in").await;
    let (status, _) = guesser.submit(&form, "/account/sign-in", &[("email", "grace@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the fourth attempt from that address waits");
    let mut owner = shopper(&api, &web_url, "203.0.113.8");
    let (status, headers) = owner.post_sign_in("grace@example.com").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "another address is not held up by the first one's attempts: {headers:?}");
    let failed = api.count("auth", "SELECT COUNT(*) FROM audit_log WHERE action = 'login_failed' AND ip = '203.0.113.7'").await;
    assert_eq!(failed, 3, "the failures are recorded against the shopper's address");
    let from_pages = api.count("auth", "SELECT COUNT(*) FROM audit_log WHERE ip = '127.0.0.1'").await;
    assert_eq!(from_pages, 0, "nothing is recorded against the pages' own address");

    // The API stops: pages that need it say 503 with Retry-After, not 500.
    stop_api.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), api_task).await.expect("the API stops").unwrap();
    for path in ["/products/another-lamp", "/search?q=brass+reading", "/account"] {
        let mut r = http.get(format!("{web_url}{path}"));
        for (name, value) in &grace.cookies {
            r = r.header("cookie", format!("{name}={value}"));
        }
        let r = r.send().await.unwrap();
        let status = r.status();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let page = r.text().await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {page}");
        assert!(retry.is_some_and(|s| s.parse::<u64>().unwrap() > 0), "{path}: Retry-After");
        assert!(page.contains("The shop cannot answer just now. Please try again in a moment."), "{path}: {page}");
    }
    let r = http.get(format!("{web_url}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the pages' process itself is alive");
    stop_web.cancel();
    web.shutdown().await;
    let left: Vec<_> = std::fs::read_dir(web_dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(left.iter().all(|name| !name.to_string_lossy().ends_with(".db")), "the pages' process wrote no database: {left:?}");
    let Shop { _sandbox, app, .. } = api;
    app.shutdown().await;
}

#[tokio::test]
async fn a_web_process_without_the_api_or_its_address_does_not_start() {
    let sandbox = platform::testing::Sandbox::new().await;
    let mut config = (*sandbox.config()).clone();
    config.services = vec![kernel::config::WEB.to_owned()];
    config.web.api_url = None;
    let error = match emporium::start_shop(Arc::new(config), false).await {
        Ok(_) => panic!("pages without an API started"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("web.api_url") && error.contains("EMPORIUM_WEB_API_URL"), "{error}");
}
