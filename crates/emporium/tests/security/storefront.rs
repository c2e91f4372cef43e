//! The storefront's pages: the page cache, the forms' CSRF tokens and what
//! browsers and proxies may keep.

use std::sync::Arc;

use axum::http::StatusCode;
use kernel::auth::Role;
use serde_json::json;

use super::support::Shop;
use super::support::pages::{Browser, between, create, staff_browser, stock};

fn token_of(page: &str) -> String {
    between(page, r#"name="csrf" value=""#, "\"").to_owned()
}

/// A form token this shop signs: 32 hex digits, a dot, 64 hex digits.
fn well_formed(token: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    token.split_once('.').is_some_and(|(a, b)| hex(a, 32) && hex(b, 64))
}

async fn mug_shop(tune: impl FnOnce(&mut kernel::config::Config)) -> Shop {
    let shop = Shop::with(|c| {
        c.services.extend(["search".to_owned()]);
        tune(c);
    })
    .await;
    create(&shop, json!({"title": "Mug", "status": "active", "variants": [{"sku": "MUG-9", "prices": {"USD": 1200}}]})).await;
    stock(&shop, "MUG-9", 3).await;
    shop
}

#[tokio::test]
async fn item_3_a_planted_form_cookie_never_reaches_a_kept_page() {
    let shop = mug_shop(|c| c.http.page_cache_secs = 600).await;
    let junk = ["<script>alert(1)</script>", "<", "\"><b>x</b>", "abc", &format!("{}.{}", "0".repeat(32), "0".repeat(64))];

    // The product page is kept (drawn for a clean visitor); the pages below are drawn for the planted cookie first.
    let (_, clean) = Browser::new(&shop).get("/products/mug").await;
    assert!(well_formed(&token_of(&clean)), "{clean}");
    for path in ["/products/mug", "/", "/products/mug?notified=1"] {
        for planted in junk {
            let mut visitor = Browser::new(&shop);
            visitor.cookies.insert("csrf".into(), planted.to_owned());
            let (status, page) = visitor.get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(!page.contains("<script>alert(1)") && !page.contains("<b>x</b>"), "{path}, {planted}: {page}");
            if path.starts_with("/products/") {
                let token = token_of(&page);
                assert!(well_formed(&token) && token != planted, "{path}, {planted}: a new token, not the planted one: {token}");
                assert_eq!(visitor.cookies.get("csrf"), Some(&token), "and the browser is given it");
            }
        }
        // The next visitor without cookies gets an intact page with a token of their own.
        let mut next = Browser::new(&shop);
        let (status, page) = next.get(path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.starts_with("<!DOCTYPE html>") || page.starts_with("<!doctype html>"), "{path}: {page}");
        assert!(page.contains("</html>") && !page.contains("alert(1)") && !page.contains("<b>x</b>"), "{path}: {page}");
        if path.starts_with("/products/") {
            assert!(page.contains("Mug") && page.contains(r#"action="/cart/items""#), "{page}");
            let token = token_of(&page);
            assert!(well_formed(&token), "{path}: {token}");
            assert_eq!(next.cookies.get("csrf"), Some(&token));
            let (status, cart) = next.submit(&page, "/cart/items", &[("sku", "MUG-9")]).await;
            assert_eq!(status, StatusCode::OK, "the kept page's form still posts: {cart}");
        }
    }
}

#[tokio::test]
async fn item_21_a_form_token_is_bound_to_its_session_and_rotated_at_sign_in_and_out() {
    let shop = mug_shop(|_| {}).await;
    let mut ada = staff_browser(&shop, "ada@example.com", Role::Customer).await;
    let mut bob = staff_browser(&shop, "bob@example.com", Role::Customer).await;
    let (_, ada_page) = ada.get("/products/mug").await;
    let (_, bob_page) = bob.get("/products/mug").await;
    let (ada_token, bob_token) = (token_of(&ada_page), token_of(&bob_page));

    // Bob's token, planted in Ada's browser (cookie and form alike), does not post as Ada.
    let own = ada.cookies.insert("csrf".into(), bob_token.clone()).unwrap();
    assert_eq!(own, ada_token);
    let (status, _, _) = ada.request("POST", "/cart/items", Some(&[("csrf", &bob_token), ("sku", "MUG-9")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a token from another session is refused");
    let (_, page) = ada.get("/products/mug").await;
    let (status, cart) = ada.submit(&page, "/cart/items", &[("sku", "MUG-9")]).await;
    assert_eq!(status, StatusCode::OK, "her own form posts: {cart}");

    // A visitor's token is replaced when they sign in, and the old one no longer posts.
    shop.user("cy@example.com", Role::Customer).await;
    let mut cy = Browser::new(&shop);
    let (_, form) = cy.get("/account/sign-in").await;
    let before = token_of(&form);
    let (status, _) = cy.submit(&form, "/account/sign-in", &[("email", "cy@example.com"), ("password", "a long passphrase")]).await;
    assert_eq!(status, StatusCode::OK);
    let signed_in = cy.cookies.get("csrf").cloned().unwrap();
    assert!(signed_in != before && well_formed(&signed_in), "rotated at sign-in");
    cy.cookies.insert("csrf".into(), before.clone());
    let (status, _, _) = cy.request("POST", "/cart/items", Some(&[("csrf", &before), ("sku", "MUG-9")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the token from before signing in is refused");

    // And again at sign-out.
    cy.cookies.insert("csrf".into(), signed_in.clone());
    let (_, account) = cy.get("/account").await;
    let (status, _) = cy.submit(&account, "/account/sign-out", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cy.cookies.get("csrf").is_some_and(|t| *t != signed_in), "rotated at sign-out");
    cy.cookies.insert("csrf".into(), signed_in.clone());
    let (status, _, _) = cy.request("POST", "/cart/items", Some(&[("csrf", &signed_in), ("sku", "MUG-9")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the signed-in token is refused once signed out");

    // Over HTTPS the cookies are `__Host-` ones, and only those count.
    let https = mug_shop(|c| c.public_url = Some("https://shop.test".into())).await;
    let mut visitor = Browser::new(&https);
    let (_, headers, page) = visitor.request("GET", "/products/mug", None).await;
    let set = headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(set.starts_with("__Host-csrf=") && set.contains("; Secure") && set.contains("Path=/"), "{set}");
    let (status, cart) = visitor.submit(&page, "/cart/items", &[("sku", "MUG-9")]).await;
    assert_eq!(status, StatusCode::OK, "{cart}");
    assert!(visitor.cookies.contains_key("__Host-cart_id") && !visitor.cookies.contains_key("cart_id"), "{:?}", visitor.cookies);
    let token = token_of(&page);
    let mut planted = Browser::new(&https);
    planted.cookies.insert("csrf".into(), token.clone());
    let (status, _, _) = planted.request("POST", "/cart/items", Some(&[("csrf", &token), ("sku", "MUG-9")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a cookie without the prefix (settable by another origin) does not count");
}

#[tokio::test]
async fn item_22_personal_pages_say_no_store() {
    let shop = mug_shop(|c| c.services.push("notify".into())).await;
    let mut ada = staff_browser(&shop, "ada@example.com", Role::Customer).await;
    let (_, product) = ada.get("/products/mug").await;
    ada.submit(&product, "/cart/items", &[("sku", "MUG-9")]).await;
    let no_store = |headers: &axum::http::HeaderMap, what: &str| {
        let value = headers.get("cache-control").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        assert!(value.contains("no-store"), "{what}: cache-control {value:?}");
    };
    for path in ["/account", "/account/security", "/account/preferences", "/account/addresses", "/cart", "/checkout", "/products/mug", "/"] {
        let (status, headers, body) = ada.request("GET", path, None).await;
        assert!(status.is_success() || status.is_redirection(), "{path}: {status} {body}");
        no_store(&headers, path);
    }
    let (_, security) = ada.get("/account/security").await;
    let csrf = token_of(&security);
    let (_, headers, answer) = ada.request("POST", "/account/security/totp", Some(&[("csrf", &csrf), ("password", "a long passphrase")])).await;
    no_store(&headers, &format!("the TOTP enrolment answer: {answer}"));

    // A visitor without a session or cart: the personal pages still say so; the shared ones may be kept.
    let mut visitor = Browser::new(&shop);
    for path in ["/cart", "/account/sign-in", "/checkout"] {
        let (_, headers, _) = visitor.request("GET", path, None).await;
        no_store(&headers, path);
    }
    let (_, headers, _) = visitor.request("GET", "/products/mug", None).await;
    assert!(!headers["cache-control"].to_str().unwrap().contains("no-store"), "{headers:?}");
}

#[tokio::test]
async fn item_13_junk_parameters_do_not_grow_the_page_cache_past_its_budget() {
    let sandbox = platform::testing::Sandbox::new().await;
    let mut config = (*sandbox.config()).clone();
    config.services = kernel::config::ROLES.iter().map(|r| r.to_string()).collect();
    config.http.page_cache_secs = 600;
    config.http.page_cache_max_bytes = 64 * 1024;
    let config = Arc::new(config);
    let api = web::Api::default();
    let site = web::Site::new(api.clone(), &config);
    let app = emporium::start(config.clone(), web::router(site.clone()), false).await.unwrap();
    api.bind(app.internal_router());
    let mut shop = Shop { _sandbox: sandbox, app, config, staff: String::new() };
    shop.staff = shop.user("admin@example.com", Role::Admin).await;
    let (s, cat) = shop.send("POST", "/api/v1/admin/categories", &shop.as_staff(), Some(json!({"name": "Mugs"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{cat}");
    create(&shop, json!({"title": "Mug", "status": "active", "categories": [cat["id"]], "variants": [{"sku": "MUG-9", "prices": {"USD": 1200}}]})).await;

    // Parameters a page does not read make no copies of it.
    for i in 0..2000 {
        let path = if i % 2 == 0 { format!("/products/mug?junk{i}={i}") } else { format!("/?utm_source={i}&x={}", "y".repeat(200)) };
        let (status, _, _) = super::support::pages::page(&shop, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (entries, bytes) = site.page_cache_usage().unwrap();
    assert_eq!(entries, 2, "one home page, one product page: {entries} kept, {bytes} bytes");

    // Parameters it does read (each a real page) stay under the byte budget together.
    for i in 0..200 {
        let (status, _, _) = super::support::pages::page(&shop, &format!("/categories/mugs?q=mug{i}&junk={i}")).await;
        assert!(status.is_success() || status.is_redirection());
        let (entries, bytes) = site.page_cache_usage().unwrap();
        assert!(bytes <= 64 * 1024 && entries <= 200, "{entries} kept, {bytes} bytes");
    }
    let (entries, bytes) = site.page_cache_usage().unwrap();
    assert!(entries > 2 && bytes > 16 * 1024, "and it still keeps pages: {entries} kept, {bytes} bytes");
}

/// BREACH: a page for one person holds the visitor's form token and their
/// data next to text the address chose (a console filter, a mailed link's
/// token); it is never compressed, so its size tells an onlooker nothing.
/// Shared pages still are.
#[tokio::test]
async fn pages_for_one_person_are_never_compressed() {
    let shop = mug_shop(|_| {}).await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    admin.headers.push(("accept-encoding", "br, gzip".to_owned()));
    for path in ["/admin/customers?q=csrf%3D", "/admin", "/account"] {
        let (status, headers, body) = admin.request("GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body.len() > 1000, "{path}: a page worth compressing");
        assert!(headers.get("content-encoding").is_none(), "{path} was compressed");
    }
    let mut visitor = Browser::new(&shop);
    visitor.headers.push(("accept-encoding", "gzip".to_owned()));
    let (status, headers, body) = visitor.request("GET", "/account/reset-password?token=value%3D%22", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"name="csrf""#));
    assert!(headers.get("content-encoding").is_none(), "the reset page was compressed");
    // A shared page, for anyone, is.
    use tower::ServiceExt as _;
    let request = axum::http::Request::get("/search?q=mug").header("accept-encoding", "gzip").body(axum::body::Body::empty()).unwrap();
    let response = shop.app.router().oneshot(request).await.unwrap();
    assert_eq!(response.headers().get("content-encoding").and_then(|v| v.to_str().ok()), Some("gzip"));
}
