//! Item 12: rate limits beyond sign-in — the general limit per client and
//! per user, and the per-target ones (reset mails per address, code guesses
//! per cart, sign-ups and carts per address, views counted once per visitor).

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use kernel::auth::Role;
use platform::on_db;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::support::{Shop, Who};

const IP_A: &str = "203.0.113.10:50000";
const IP_B: &str = "203.0.113.20:50000";

/// One request through the router as the connection at `from` sends it.
async fn call_from(shop: &Shop, from: &str, method: &str, path: &str, who: &Who, body: Option<Value>) -> (StatusCode, HeaderMap, Value) {
    let mut r = Request::builder().method(method).uri(path);
    if let Some(t) = &who.token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    if let Some(s) = &who.secret {
        r = r.header("x-cart-secret", s);
    }
    let mut r = match body {
        Some(b) => r.header("content-type", "application/json").body(Body::from(b.to_string())),
        None => r.body(Body::empty()),
    }
    .unwrap();
    r.extensions_mut().insert(axum::extract::ConnectInfo(from.parse::<SocketAddr>().unwrap()));
    let response = shop.app.router().oneshot(r).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn assert_limited(status: StatusCode, headers: &HeaderMap, body: &Value) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["type"], "rate_limited", "{body}");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait >= 1, "Retry-After: {wait}");
}

async fn reset_mails(shop: &Shop, email: &str) -> usize {
    let db = shop.app.db("auth").unwrap();
    let payloads: Vec<String> = on_db!(db, pool => sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE event_type = 'user.password_reset_requested'")
        .fetch_all(pool).await)
    .unwrap();
    payloads.iter().filter(|p| serde_json::from_str::<Value>(p).unwrap()["data"]["email"] == email).count()
}

#[tokio::test]
async fn item_12_password_reset_mails_stop_at_the_limit_per_address() {
    let shop = Shop::with(|c| c.limits.password_resets_per_email_per_hour = 3).await;
    shop.user("ada@example.com", Role::Customer).await;
    shop.user("bob@example.com", Role::Customer).await;
    for _ in 0..5 {
        let (status, _) = shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "ada@example.com"}))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "the answer never tells");
    }
    assert_eq!(reset_mails(&shop, "ada@example.com").await, 3, "the 4th and 5th requests mail nothing");
    let (status, _) = shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "bob@example.com"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(reset_mails(&shop, "bob@example.com").await, 1, "another address has its own count");
}

#[tokio::test]
async fn item_12_discount_code_guesses_per_cart_answer_429_with_retry_after() {
    let default = kernel::config::LimitsConfig::default().discount_attempts_per_cart_per_10_min;
    let shop = Shop::with(|c| c.limits.discount_attempts_per_cart_per_10_min = default).await;
    let (status, cart) = shop.send("POST", "/api/v1/carts", &Who::default(), None).await;
    assert_eq!(status, StatusCode::CREATED, "{cart}");
    let id = cart["id"].as_str().unwrap().to_owned();
    let who = Who { secret: cart["secret"].as_str().map(str::to_owned), ..Who::default() };
    let path = format!("/api/v1/carts/{id}/discounts");
    for i in 0..default {
        let (status, body) = shop.send("POST", &path, &who, Some(json!({"code": format!("GUESS{i}")}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let (status, headers, body) = shop.send_full("POST", &path, &who, Some(json!({"code": "GUESS-MORE"}))).await;
    assert_limited(status, &headers, &body);

    let (_, other) = shop.send("POST", "/api/v1/carts", &Who::default(), None).await;
    let other_who = Who { secret: other["secret"].as_str().map(str::to_owned), ..Who::default() };
    let (status, body) =
        shop.send("POST", &format!("/api/v1/carts/{}/discounts", other["id"].as_str().unwrap()), &other_who, Some(json!({"code": "GUESS0"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "another cart has its own count: {body}");
}

#[tokio::test]
async fn item_12_view_events_from_one_visitor_count_once_toward_trending() {
    let shop = Shop::with(|c| {
        c.services.push("search".into());
        c.limits.view_dedup_secs = 1800;
    })
    .await;
    let pushed = shop.product("VIEW-A", 1000, 5).await;
    let liked = shop.product("VIEW-B", 1000, 5).await;
    for _ in 0..100 {
        let (status, _, _) = call_from(&shop, IP_A, "POST", "/api/v1/events/view", &Who::default(), Some(json!({"product_id": pushed}))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    for from in [IP_A, IP_B, "203.0.113.30:1"] {
        call_from(&shop, from, "POST", "/api/v1/events/view", &Who::default(), Some(json!({"product_id": liked}))).await;
    }
    let score = |product: String| {
        let db = shop.app.db("search").unwrap().clone();
        async move {
            let s: Option<f64> = on_db!(&db, pool => sqlx::query_scalar("SELECT score FROM trend WHERE product_id = $1")
                .bind(&product).fetch_optional(pool).await)
            .unwrap();
            s.unwrap_or(0.0)
        }
    };
    // Views are written just after the answer: wait until the three visitors' ones are in.
    let started = std::time::Instant::now();
    while score(liked.clone()).await < 0.29 || score(pushed.clone()).await < 0.09 {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            panic!("views were not recorded: liked {}, pushed {}", score(liked.clone()).await, score(pushed.clone()).await);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pushed_score = score(pushed.clone()).await;
    assert!(pushed_score < 0.15, "100 views of one visitor counted as {pushed_score} (one view is 0.1)");
    assert!(score(liked.clone()).await > pushed_score, "three visitors outrank one who reloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item_12_views_of_many_visitors_at_once_all_count() {
    let shop = Shop::with(|c| c.services.push("search".into())).await;
    let product = shop.product("VIEW-C", 1000, 5).await;
    let mut views = tokio::task::JoinSet::new();
    for n in 0..20 {
        let (router, product) = (shop.app.router(), product.clone());
        views.spawn(async move {
            let mut r = Request::builder().method("POST").uri("/api/v1/events/view")
                .header("content-type", "application/json")
                .body(Body::from(json!({"product_id": product}).to_string())).unwrap();
            let from: SocketAddr = format!("203.0.113.{}:1", 100 + n).parse().unwrap();
            r.extensions_mut().insert(axum::extract::ConnectInfo(from));
            router.oneshot(r).await.unwrap().status()
        });
    }
    while let Some(status) = views.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::ACCEPTED);
    }
    let db = shop.app.db("search").unwrap().clone();
    let mut score = 0.0;
    for _ in 0..500 {
        let s: Option<f64> = on_db!(&db, pool => sqlx::query_scalar("SELECT score FROM trend WHERE product_id = $1")
            .bind(&product).fetch_optional(pool).await)
        .unwrap();
        score = s.unwrap_or(0.0);
        if score > 1.99 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(score > 1.99 && score < 2.01, "20 visitors' views counted as {score} (one view is 0.1)");
}

#[tokio::test]
async fn item_12_sign_ups_per_ip_are_limited() {
    let shop = Shop::with(|c| c.limits.sign_ups_per_ip_per_hour = 3).await;
    let sign_up = |from: &'static str, n: usize| {
        let body = json!({"email": format!("new{n}@example.com"), "password": "a long passphrase 42", "name": "New"});
        let shop = &shop;
        async move { call_from(shop, from, "POST", "/api/v1/auth/register", &Who::default(), Some(body)).await }
    };
    for n in 0..3 {
        let (status, _, body) = sign_up(IP_A, n).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, headers, body) = sign_up(IP_A, 3).await;
    assert_limited(status, &headers, &body);
    let (status, _, body) = sign_up(IP_B, 4).await;
    assert_eq!(status, StatusCode::CREATED, "another address has its own count: {body}");
}

#[tokio::test]
async fn item_12_guest_carts_per_ip_are_limited() {
    let shop = Shop::with(|c| c.limits.carts_per_ip_per_hour = 2).await;
    for _ in 0..2 {
        let (status, _, body) = call_from(&shop, IP_A, "POST", "/api/v1/carts", &Who::default(), None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, headers, body) = call_from(&shop, IP_A, "POST", "/api/v1/carts", &Who::default(), None).await;
    assert_limited(status, &headers, &body);
    let (status, _, _) = call_from(&shop, IP_B, "POST", "/api/v1/carts", &Who::default(), None).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn item_12_general_limit_per_ip_and_per_user_answers_429_with_retry_after() {
    let shop = Shop::with(|c| {
        c.limits.per_ip_per_minute = 5;
        c.limits.per_principal_per_minute = 8;
    })
    .await;
    let anonymous = Who::default();
    for _ in 0..5 {
        let (status, _, body) = call_from(&shop, IP_A, "GET", "/api/v1/products", &anonymous, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, headers, body) = call_from(&shop, IP_A, "GET", "/api/v1/products", &anonymous, None).await;
    assert_limited(status, &headers, &body);
    let (status, _, _) = call_from(&shop, IP_A, "GET", "/healthz", &anonymous, None).await;
    assert_eq!(status, StatusCode::OK, "probes are not limited");
    let (status, _, _) = call_from(&shop, IP_B, "GET", "/api/v1/products", &anonymous, None).await;
    assert_eq!(status, StatusCode::OK, "another address has its own count");

    // Signed in, the user is counted, not the (exhausted) address; a bad token is the address's.
    let customer = Who { token: Some(shop.user("cust@example.com", Role::Customer).await), ..Who::default() };
    for _ in 0..8 {
        let (status, _, body) = call_from(&shop, IP_A, "GET", "/api/v1/me", &customer, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, headers, body) = call_from(&shop, IP_A, "GET", "/api/v1/me", &customer, None).await;
    assert_limited(status, &headers, &body);
    let forged = Who { token: Some("not-a-token".into()), ..Who::default() };
    let (status, headers, body) = call_from(&shop, IP_A, "GET", "/api/v1/me", &forged, None).await;
    assert_limited(status, &headers, &body);
}

/// Another process of the shop calling an internal route with the service
/// token is not one client among many (every reservation of a sale comes from
/// an orders replica's address); a wrong token is counted as usual.
#[tokio::test]
async fn item_12_the_shops_own_internal_calls_are_not_counted_per_address() {
    const TOKEN: &str = "a-service-token-of-at-least-32-bytes!";
    let shop = Shop::with(|c| {
        c.limits.per_ip_per_minute = 2;
        c.catalog.service_token = Some(TOKEN.into());
    })
    .await;
    let service = Who { token: Some(TOKEN.into()), ..Who::default() };
    let offers = || Some(json!({"currency": "EUR", "skus": ["NO-SUCH-SKU"]}));
    for _ in 0..6 {
        let (status, _, body) = call_from(&shop, IP_A, "POST", "/internal/v1/offers", &service, offers()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let wrong = Who { token: Some("not-the-service-token".into()), ..Who::default() };
    for _ in 0..2 {
        let (status, _, body) = call_from(&shop, IP_A, "POST", "/internal/v1/offers", &wrong, offers()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, headers, body) = call_from(&shop, IP_A, "POST", "/internal/v1/offers", &wrong, offers()).await;
    assert_limited(status, &headers, &body);
    // The token opens no public route's limit.
    let (status, headers, body) = call_from(&shop, IP_A, "GET", "/api/v1/products", &service, None).await;
    assert_limited(status, &headers, &body);
}

/// Two replicas on one Redis count one address's reset mails together.
#[tokio::test]
async fn item_12_replicas_share_limits_through_redis() {
    if platform::testing::redis_url().is_none() {
        eprintln!("EMPORIUM_TEST_REDIS_URL unset: shared limits are checked in the run with Redis");
        return;
    }
    // Replicas of the services that keep no files of their own (a search
    // replica would keep its own index, elsewhere).
    let shop = Shop::with(|c| {
        c.services = vec!["auth".into(), "catalog".into(), "orders".into()];
        c.limits.password_resets_per_email_per_hour = 2;
    })
    .await;
    shop.user("ada@example.com", Role::Customer).await;
    let replica = emporium::start(shop.config.clone(), axum::Router::new(), false).await.unwrap();
    let forgot = json!({"email": "ada@example.com"});
    super::support::call(&shop.app, "POST", "/api/v1/auth/password/forgot", &[], Some(forgot.clone())).await;
    super::support::call(&replica, "POST", "/api/v1/auth/password/forgot", &[], Some(forgot.clone())).await;
    super::support::call(&replica, "POST", "/api/v1/auth/password/forgot", &[], Some(forgot.clone())).await;
    super::support::call(&shop.app, "POST", "/api/v1/auth/password/forgot", &[], Some(forgot)).await;
    assert_eq!(reset_mails(&shop, "ada@example.com").await, 2, "the limit is the shop's, not each replica's");
    replica.shutdown().await;
}

#[tokio::test]
async fn item_12_storefront_carts_count_against_the_browsers_address() {
    let shop = Shop::with(|c| c.limits.carts_per_ip_per_hour = 2).await;
    super::support::pages::create(&shop, json!({"title": "Cup", "status": "active",
        "variants": [{"sku": "CUP-1", "prices": {"USD": 800}}]})).await;
    super::support::pages::stock(&shop, "CUP-1", 50).await;
    // Each browser starts without a cart, so each first add makes one.
    let mut answers = Vec::new();
    for _ in 0..3 {
        let mut browser = super::support::pages::Browser::at(&shop, IP_A);
        let (_, page) = browser.get("/products/cup").await;
        let (status, _) = browser.submit(&page, "/cart/items", &[("sku", "CUP-1"), ("quantity", "1")]).await;
        answers.push((status, browser.cookies.contains_key("cart_id")));
    }
    assert!(answers[..2].iter().all(|(s, cart)| s.is_success() && *cart), "{answers:?}");
    assert_eq!(answers[2], (StatusCode::TOO_MANY_REQUESTS, false), "the third cart from one address is refused");
    let mut elsewhere = super::support::pages::Browser::at(&shop, IP_B);
    let (_, page) = elsewhere.get("/products/cup").await;
    let (status, _) = elsewhere.submit(&page, "/cart/items", &[("sku", "CUP-1"), ("quantity", "1")]).await;
    assert!(status.is_success(), "{status}");
}

#[tokio::test]
async fn item_12_back_in_stock_requests_per_address_are_limited() {
    let shop = Shop::with(|c| {
        c.services = vec!["auth".into(), "catalog".into(), "orders".into(), "notify".into()];
        c.limits.stock_alerts_per_email_per_hour = 2;
    })
    .await;
    let mut products = Vec::new();
    for sku in ["GONE-1", "GONE-2", "GONE-3"] {
        products.push(shop.product(sku, 1000, 0).await);
    }
    let shop = &shop;
    let ask = |product: &str, email: &str| {
        let path = format!("/api/v1/products/{product}/notify-me");
        let body = json!({"email": email});
        async move { shop.send_full("POST", &path, &Who::default(), Some(body)).await }
    };
    for product in &products[..2] {
        let (status, _, body) = ask(product, "lin@example.com").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // The third request for one address, in another spelling of it, waits.
    let (status, headers, body) = ask(&products[2], "LIN@example.com").await;
    assert_limited(status, &headers, &body);
    let (status, _, body) = ask(&products[2], "kim@example.com").await;
    assert_eq!(status, StatusCode::CREATED, "another address has its own count: {body}");
}

/// One IPv6 subscriber holds a whole /64: its addresses are one client for
/// the general limit; an IPv4 address written as IPv6 is that IPv4 address.
#[tokio::test]
async fn item_12_an_ipv6_64_is_one_client_for_the_general_limit() {
    let shop = Shop::with(|c| c.limits.per_ip_per_minute = 3).await;
    let anonymous = Who::default();
    for from in ["[2001:db8::1]:1", "[2001:db8::2]:1", "[2001:db8::1]:2"] {
        let (status, _, body) = call_from(&shop, from, "GET", "/api/v1/products", &anonymous, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, headers, body) = call_from(&shop, "[2001:db8::9:9]:1", "GET", "/api/v1/products", &anonymous, None).await;
    assert_limited(status, &headers, &body);
    let (status, _, body) = call_from(&shop, "[2001:db8:0:1::1]:1", "GET", "/api/v1/products", &anonymous, None).await;
    assert_eq!(status, StatusCode::OK, "another /64 is another client: {body}");

    for from in ["203.0.113.10:1", "[::ffff:203.0.113.10]:1", "203.0.113.10:2"] {
        let (status, _, body) = call_from(&shop, from, "GET", "/api/v1/products", &anonymous, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, headers, body) = call_from(&shop, "[::ffff:203.0.113.10]:3", "GET", "/api/v1/products", &anonymous, None).await;
    assert_limited(status, &headers, &body);
}

/// Carts, sign-ups and the sign-in throttle count an IPv6 client by its /64.
#[tokio::test]
async fn item_12_an_ipv6_64_is_one_client_for_carts_sign_ups_and_sign_ins() {
    let shop = Shop::with(|c| {
        c.limits.carts_per_ip_per_hour = 2;
        c.limits.sign_ups_per_ip_per_hour = 2;
    })
    .await;
    let anonymous = Who::default();
    for from in ["[2001:db8::1]:1", "[2001:db8::2]:1"] {
        let (status, _, body) = call_from(&shop, from, "POST", "/api/v1/carts", &anonymous, None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, headers, body) = call_from(&shop, "[2001:db8::3]:1", "POST", "/api/v1/carts", &anonymous, None).await;
    assert_limited(status, &headers, &body);
    let (status, _, body) = call_from(&shop, "[2001:db8:0:1::1]:1", "POST", "/api/v1/carts", &anonymous, None).await;
    assert_eq!(status, StatusCode::CREATED, "another /64 has its own count: {body}");
    for from in ["[::ffff:203.0.113.10]:1", "203.0.113.10:1"] {
        let (status, _, body) = call_from(&shop, from, "POST", "/api/v1/carts", &anonymous, None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, headers, body) = call_from(&shop, "[::ffff:203.0.113.10]:2", "POST", "/api/v1/carts", &anonymous, None).await;
    assert_limited(status, &headers, &body);

    let register = |n: u32| json!({"email": format!("v6-{n}@example.com"), "password": "a long passphrase 42", "name": "New"});
    for (n, from) in [(0, "[2001:db8::10]:1"), (1, "[2001:db8::11]:1")] {
        let (status, _, body) = call_from(&shop, from, "POST", "/api/v1/auth/register", &anonymous, Some(register(n))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, headers, body) = call_from(&shop, "[2001:db8::12]:1", "POST", "/api/v1/auth/register", &anonymous, Some(register(2))).await;
    assert_limited(status, &headers, &body);
    let (status, _, body) = call_from(&shop, "[2001:db8:0:1::12]:1", "POST", "/api/v1/auth/register", &anonymous, Some(register(3))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Wrong passwords for one account, each from a new address of one /64: the /64 waits.
    shop.user("ada@example.com", Role::Customer).await;
    let login = |password: &str| json!({"email": "ada@example.com", "password": password});
    let after = shop.config.auth.sign_in_throttle_after;
    for n in 0..after + 1 {
        call_from(&shop, &format!("[2001:db8::a:{n:x}]:1"), "POST", "/api/v1/auth/login", &anonymous, Some(login("not the passphrase"))).await;
    }
    let (status, _, body) = call_from(&shop, "[2001:db8::b:1]:1", "POST", "/api/v1/auth/login", &anonymous, Some(login("a long passphrase"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("sign_in_throttled")), "{body}");
    let (status, _, body) = call_from(&shop, "[2001:db8:0:1::b]:1", "POST", "/api/v1/auth/login", &anonymous, Some(login("a long passphrase"))).await;
    assert_eq!(status, StatusCode::OK, "the owner in another /64 signs in: {body}");
}

/// Behind a trusted proxy, the storefront's guest carts count each browser
/// the proxy names in `X-Forwarded-For`, not the proxy.
#[tokio::test]
async fn item_12_storefront_carts_behind_a_proxy_count_each_forwarded_browser() {
    let shop = Shop::with(|c| {
        c.auth.trust_forwarded_for = true;
        c.limits.carts_per_ip_per_hour = 1;
    })
    .await;
    super::support::pages::create(&shop, json!({"title": "Cup", "status": "active",
        "variants": [{"sku": "CUP-1", "prices": {"USD": 800}}]})).await;
    super::support::pages::stock(&shop, "CUP-1", 50).await;
    let mut answers = Vec::new();
    for client in ["203.0.113.10", "203.0.113.20", "203.0.113.10"] {
        let mut browser = super::support::pages::Browser::at(&shop, "127.0.0.1:40000");
        browser.headers.push(("x-forwarded-for", client.to_owned()));
        let (_, page) = browser.get("/products/cup").await;
        let (status, _) = browser.submit(&page, "/cart/items", &[("sku", "CUP-1"), ("quantity", "1")]).await;
        answers.push((status.is_success(), browser.cookies.contains_key("cart_id")));
    }
    assert_eq!(answers, [(true, true), (true, true), (false, false)], "one cart per forwarded browser, not one for the whole proxy");
}

/// Discount codes tried count per client whatever the cart, so new carts
/// buy no new guesses.
#[tokio::test]
async fn item_12_discount_codes_tried_count_per_client_across_carts() {
    let defaults = kernel::config::LimitsConfig::default();
    let shop = Shop::with(|c| {
        c.limits.discount_attempts_per_cart_per_10_min = defaults.discount_attempts_per_cart_per_10_min;
        c.limits.discount_attempts_per_client_per_hour = defaults.discount_attempts_per_client_per_hour;
    })
    .await;
    assert_eq!(defaults.discount_attempts_per_client_per_hour, 30);
    let new_cart = |from: &'static str| {
        let shop = &shop;
        async move {
            let (status, _, cart) = call_from(shop, from, "POST", "/api/v1/carts", &Who::default(), None).await;
            assert_eq!(status, StatusCode::CREATED, "{cart}");
            let who = Who { secret: cart["secret"].as_str().map(str::to_owned), ..Who::default() };
            (format!("/api/v1/carts/{}/discounts", cart["id"].as_str().unwrap()), who)
        }
    };
    let mut answers = Vec::new();
    for n in 0..4 {
        let (path, who) = new_cart(IP_A).await;
        for i in 0..8 {
            if answers.len() == 31 {
                break;
            }
            // Unknown codes and malformed ones alike.
            let code = if i == 7 { "not a code!".to_owned() } else { format!("GUESS{n}X{i}") };
            let (status, headers, body) = call_from(&shop, IP_A, "POST", &path, &who, Some(json!({"code": code}))).await;
            answers.push((status, headers, body));
        }
    }
    assert!(answers[..30].iter().all(|(s, _, _)| *s == StatusCode::UNPROCESSABLE_ENTITY), "{:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    let (status, headers, body) = &answers[30];
    assert_limited(*status, headers, body);

    let (path, who) = new_cart(IP_B).await;
    let (status, _, body) = call_from(&shop, IP_B, "POST", &path, &who, Some(json!({"code": "GUESS-B"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "another client has its own count: {body}");

    // The storefront's code form counts the browser too: from A, it waits.
    super::support::pages::create(&shop, json!({"title": "Cup", "status": "active",
        "variants": [{"sku": "CUP-1", "prices": {"USD": 800}}]})).await;
    super::support::pages::stock(&shop, "CUP-1", 50).await;
    let mut browser = super::support::pages::Browser::at(&shop, IP_A);
    let (_, page) = browser.get("/products/cup").await;
    let (status, page) = browser.submit(&page, "/cart/items", &[("sku", "CUP-1"), ("quantity", "1")]).await;
    assert!(status.is_success(), "{status}");
    let (status, _) = browser.submit(&page, "/cart/discount", &[("code", "GUESS-PAGE")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

/// With Redis away (a closed port), a limit still holds, in this process.
#[tokio::test]
async fn item_12_limits_hold_in_process_while_redis_is_away() {
    let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
    let quick = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(std::time::Duration::from_millis(200)));
    let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, quick).unwrap();
    let limits = platform::limit::Limits::new(std::sync::Arc::new(platform::limit::RedisLimiter::new(conn, "t")));
    let hour = platform::limit::HOUR;
    for _ in 0..3 {
        assert_eq!(limits.hit("password_reset", "ada@example.com", 3, hour).await, Ok(()));
    }
    let refused = limits.hit("password_reset", "ada@example.com", 3, hour).await.unwrap_err();
    assert!((1..=3600).contains(&refused.retry_after_secs), "{refused:?}");
    assert_eq!(limits.hit("password_reset", "bob@example.com", 3, hour).await, Ok(()), "another subject counts apart");
}

/// Back-in-stock requests count per mailbox (`+tag` spellings are one inbox),
/// and only requests for something that can be waited for count.
#[tokio::test]
async fn item_12_back_in_stock_requests_count_per_mailbox_once_the_product_is_found() {
    let shop = Shop::with(|c| {
        c.services = vec!["auth".into(), "catalog".into(), "orders".into(), "notify".into()];
        c.limits.stock_alerts_per_email_per_hour = 2;
    })
    .await;
    let gone = shop.product("MBX-GONE", 1000, 0).await;
    let gone_too = shop.product("MBX-GONE-2", 1000, 0).await;
    let here = shop.product("MBX-HERE", 1000, 5).await;
    let shop = &shop;
    let ask = |product: &str, email: &str| {
        let path = format!("/api/v1/products/{product}/notify-me");
        let body = json!({"email": email});
        async move { shop.send_full("POST", &path, &Who::default(), Some(body)).await }
    };
    // Refused requests (in stock, unknown SKU) use up nothing.
    for _ in 0..3 {
        let (status, _, body) = ask(&here, "kim@example.com").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }
    for product in [&gone, &gone_too] {
        let (status, _, body) = ask(product, "kim@example.com").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for (product, email) in [(&gone, "lin+1@example.com"), (&gone_too, "Lin+2@Example.com")] {
        let (status, _, body) = ask(product, email).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, headers, body) = ask(&gone, "lin+3@example.com").await;
    assert_limited(status, &headers, &body);
    let (status, headers, body) = ask(&gone, "l.i.n+4@gmail.com").await;
    assert_eq!(status, StatusCode::CREATED, "another mailbox: {body} {headers:?}");
    let (_, _, _) = ask(&gone_too, "lin@googlemail.com").await;
    let (status, headers, body) = ask(&gone, "L.in@gmail.com").await;
    assert_limited(status, &headers, &body);
}

/// Guesses sent at once from one client, over several carts: each is counted
/// before its code is looked at, so no more than the limit reach the check
/// (a right guess among them included: it is not let through after wrong
/// ones that were all looked at before any was counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item_12_discount_guesses_sent_at_once_stop_at_the_client_limit() {
    const LIMIT: usize = 5;
    const CARTS: usize = 5;
    let shop = Shop::with(|c| c.limits.discount_attempts_per_client_per_hour = LIMIT as u32).await;
    let (status, body) = shop.send("POST", "/api/v1/admin/discounts", &shop.as_staff(), Some(json!({"code": "RIGHT10", "kind": "percentage", "percent_off": 10}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut carts = Vec::new();
    for _ in 0..CARTS {
        let (status, _, cart) = call_from(&shop, IP_A, "POST", "/api/v1/carts", &Who::default(), None).await;
        assert_eq!(status, StatusCode::CREATED, "{cart}");
        carts.push((cart["id"].as_str().unwrap().to_owned(), cart["secret"].as_str().unwrap().to_owned()));
    }
    let router = shop.app.router();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(3 * LIMIT));
    let mut guesses = tokio::task::JoinSet::new();
    for n in 0..3 * LIMIT {
        let (id, secret) = carts[n % CARTS].clone();
        // Every third guess is right: the answer to it would tell.
        let code = if n % 3 == 2 { "RIGHT10".to_owned() } else { format!("GUESS{n}") };
        let mut r = Request::post(format!("/api/v1/carts/{id}/discounts"))
            .header("content-type", "application/json")
            .header("x-cart-secret", secret)
            .body(Body::from(json!({"code": code}).to_string()))
            .unwrap();
        r.extensions_mut().insert(axum::extract::ConnectInfo(IP_A.parse::<SocketAddr>().unwrap()));
        let (router, start) = (router.clone(), start.clone());
        guesses.spawn(async move {
            start.wait().await;
            router.oneshot(r).await.unwrap().status()
        });
    }
    let answers: Vec<StatusCode> = guesses.join_all().await;
    let limited = answers.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    let checked = answers.iter().filter(|s| matches!(**s, StatusCode::OK | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_FOUND)).count();
    assert_eq!(checked + limited, answers.len(), "{answers:?}");
    assert!(checked <= LIMIT, "{checked} codes looked at, {LIMIT} allowed: {answers:?}");
    assert_eq!(checked, LIMIT, "the limit's worth are looked at: {answers:?}");
}
