//! The storefront's pages, rendered from the API's answers: home, search
//! with a typo and facets, category, product (stock states, JSON-LD,
//! escaping), robots.txt and the sitemap, with the security headers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use support::Shop;
use support::pages::{Browser, between, create, guest_order, mail_link, page, searchable, staff_browser, stock, storefront};
use tower::ServiceExt;

#[tokio::test]
async fn pages_show_the_catalog_through_the_api() {
    let shop = storefront().await;
    let (s, cat) = shop.send("POST", "/api/v1/admin/categories", &shop.as_staff(), Some(json!({"name": "Lamps"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{cat}");
    create(&shop, json!({"title": "Brass Desk Lamp", "status": "active", "brand": "Lumen", "categories": [cat["id"]],
        "description": "A **solid** brass lamp for the desk.",
        "options": [{"name": "Finish", "values": ["Brass", "Black"]}],
        "variants": [{"sku": "LAMP-BR", "option_values": ["Brass"], "prices": {"USD": 8900}},
                     {"sku": "LAMP-BK", "option_values": ["Black"], "prices": {"USD": 7900}}]})).await;
    stock(&shop, "LAMP-BR", 3).await;
    stock(&shop, "LAMP-BK", 0).await;
    create(&shop, json!({"title": "<script>alert(1)</script>", "status": "active", "variants": [{"sku": "XSS-1", "prices": {"USD": 100}}]})).await;
    searchable(&shop, "brass").await;
    searchable(&shop, "alert").await;

    let (s, headers, home) = page(&shop, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "strict-origin-when-cross-origin");
    assert!(home.contains(r#"<a href="/categories/lamps">Lamps</a>"#), "{home}");
    assert!(home.contains("Brass Desk Lamp"));
    assert!(home.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "a title with markup is text: {home}");
    assert!(!home.contains("<script>alert(1)"));

    // A misspelled search finds the lamp; facets link to narrower pages.
    let (s, _, found) = page(&shop, "/search?q=bras").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(between(&found, "<title>", "</title>"), "Results for “bras” · Emporium");
    assert!(found.contains(r#"href="/products/brass-desk-lamp""#), "{found}");
    assert!(found.contains("$79.00"), "the lowest price is shown: {found}");
    assert!(found.contains(r#"href="/search?q=bras&amp;brand=Lumen""#) || found.contains("brand=Lumen"), "a brand facet: {found}");
    let (_, _, none) = page(&shop, "/search?q=zebra").await;
    assert!(none.contains("No products match"));

    let (s, _, category) = page(&shop, "/categories/lamps").await;
    assert_eq!(s, StatusCode::OK);
    assert!(category.contains("<h1>Lamps</h1>") && category.contains("Brass Desk Lamp"));
    assert!(!category.contains("alert(1)"), "only the category's products");
    assert_eq!(page(&shop, "/categories/nope").await.0, StatusCode::NOT_FOUND);

    // The product: variants by option, price, stock state, JSON-LD.
    let (s, _, product) = page(&shop, "/products/brass-desk-lamp").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(between(&product, "<title>", "</title>"), "Brass Desk Lamp · Emporium");
    assert!(product.contains(r#"<meta name="description" content="A solid brass lamp for the desk.">"#), "{product}");
    assert!(product.contains("<strong>solid</strong>"), "the description's Markdown, rendered by the catalog");
    assert!(product.contains("<span class=\"value\">Brass</span> <span class=\"price\">$89.00</span> <span class=\"stock\">Only 3 left</span>"), "{product}");
    assert!(product.contains("<span class=\"stock out\">Out of stock</span>"));
    let ld: Value = serde_json::from_str(between(&product, r#"<script type="application/ld+json">"#, "</script>")).unwrap();
    assert_eq!((ld["@type"].as_str(), ld["name"].as_str(), ld["brand"]["name"].as_str()), (Some("Product"), Some("Brass Desk Lamp"), Some("Lumen")));
    let offers = ld["offers"].as_array().unwrap();
    assert!(offers.iter().any(|o| o["sku"] == "LAMP-BR" && o["price"] == "89.00" && o["priceCurrency"] == "USD" && o["availability"] == "https://schema.org/InStock"));
    assert!(offers.iter().any(|o| o["sku"] == "LAMP-BK" && o["availability"] == "https://schema.org/OutOfStock"));
    let (_, _, xss) = page(&shop, "/products/script-alert-1-script").await;
    assert!(!xss.contains("<script>alert(1)") && !xss.contains("</script><script>"), "{xss}");
    assert_eq!(page(&shop, "/products/no-such-thing").await.0, StatusCode::NOT_FOUND);

    let (_, headers, robots) = page(&shop, "/robots.txt").await;
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(robots.contains("Disallow: /admin") && robots.contains("/sitemap.xml"));
    let (_, _, sitemap) = page(&shop, "/sitemap.xml").await;
    assert!(sitemap.contains("/products/brass-desk-lamp</loc>") && sitemap.contains("/categories/lamps</loc>"), "{sitemap}");
}

#[tokio::test]
async fn a_guest_finds_a_product_by_a_typo_and_buys_it_with_a_test_card() {
    let shop = Shop::with(|c| c.services.extend(["search".to_owned(), "notify".to_owned()])).await;
    create(&shop, json!({"title": "Brass Desk Lamp", "status": "active", "brand": "Lumen",
        "options": [{"name": "Finish", "values": ["Brass", "Black"]}],
        "variants": [{"sku": "LAMP-BR", "option_values": ["Brass"], "prices": {"USD": 8900}, "weight_grams": 900},
                     {"sku": "LAMP-BK", "option_values": ["Black"], "prices": {"USD": 7900}, "weight_grams": 900}]})).await;
    stock(&shop, "LAMP-BR", 5).await;
    stock(&shop, "LAMP-BK", 5).await;
    searchable(&shop, "brass").await;
    let mut browser = Browser::new(&shop);

    let (_, found) = browser.get("/search?q=lmap").await;
    let product_url = between(between(&found, r#"<li class="card">"#, "</li>"), r#"<a href=""#, r#"">"#);
    assert_eq!(product_url, "/products/brass-desk-lamp", "a typo still finds the lamp");
    let (_, product) = browser.get(product_url).await;
    let (status, cart) = browser.submit(&product, "/cart/items", &[("sku", "LAMP-BK"), ("quantity", "2")]).await;
    assert_eq!(status, StatusCode::OK, "{cart}");
    assert!(cart.contains("Brass Desk Lamp") && cart.contains("Finish: Black") && cart.contains("$158.00"), "{cart}");

    let (_, address) = browser.get("/checkout").await;
    let (status, pay) = browser.submit(&address, "/checkout/address", &[("email", "ada@example.com"), ("name", "Ada Lovelace"),
        ("line1", "1 Market St"), ("city", "San Francisco"), ("region", "CA"), ("postal_code", "94105"), ("country", "us")]).await;
    assert_eq!(status, StatusCode::OK, "{pay}");
    assert!(pay.contains("Ground") && pay.contains("tok_visa") && pay.contains("Declined"), "shipping methods and test cards: {pay}");
    let method = between(&pay, r#"name="shipping_method" id="m1" value=""#, "\"").to_owned();

    // Declined first: the page says so, and the stock is back.
    let (status, declined) = browser.pay(&pay, &[("shipping_method", &method), ("token", "tok_chargeDeclined")]).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert!(declined.contains(r#"<p class="alert" role="alert">Your card was declined.</p>"#), "{declined}");
    assert_eq!(shop.available("LAMP-BK").await, (5, 0), "nothing held after the decline");

    let (status, confirmation) = browser.pay(&declined, &[("shipping_method", &method), ("token", "tok_visa")]).await;
    assert_eq!(status, StatusCode::OK, "{confirmation}");
    assert!(confirmation.contains("<h1>Order #1001</h1>"), "{confirmation}");
    assert!(confirmation.contains("Thank you! Your order is confirmed; a receipt is on its way to ada@example.com."));
    assert!(confirmation.contains("Status: <strong>paid</strong>"));
    assert_eq!(shop.available("LAMP-BK").await, (3, 0));
    let (_, empty) = browser.get("/cart").await;
    assert!(empty.contains("Your cart is empty"), "the cart is done");

    // The receipt is in the dev mailbox.
    for _ in 0..100 {
        let (_, mail) = shop.send("GET", "/api/v1/admin/mailbox?to=ada@example.com", &shop.as_staff(), None).await;
        if mail["data"].as_array().unwrap().iter().any(|m| m["subject"] == "Receipt for order #1001") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no receipt in the dev mailbox");
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused() {
    let shop = storefront().await;
    create(&shop, json!({"title": "Mug", "status": "active", "variants": [{"sku": "MUG-9", "prices": {"USD": 1200}}]})).await;
    stock(&shop, "MUG-9", 5).await;
    let mut browser = Browser::new(&shop);
    let (_, product) = browser.get("/products/mug").await;
    assert!(browser.cookies.contains_key("csrf"), "the product page sets the token's cookie");
    let (status, _, _) = browser.request("POST", "/cart/items", Some(&[("sku", "MUG-9")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no token");
    let (status, _, _) = browser.request("POST", "/cart/items", Some(&[("csrf", "forged"), ("sku", "MUG-9")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another token");
    let (status, cart) = browser.submit(&product, "/cart/items", &[("sku", "MUG-9")]).await;
    assert!(status.is_success() && cart.contains("Mug"), "{cart}");
    let (_, headers, _) = browser.request("GET", "/cart", None).await;
    assert_eq!(headers["x-frame-options"], "DENY");
    let set = shop.app.router().oneshot(Request::builder().uri("/products/mug").body(Body::empty()).unwrap()).await.unwrap();
    let cookie = set.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
}

#[tokio::test]
async fn a_shopper_signs_up_confirms_the_email_signs_in_and_sees_their_orders() {
    let shop = Shop::with(|c| c.services.extend(["search".to_owned(), "notify".to_owned()])).await;
    create(&shop, json!({"title": "Mug", "status": "active", "variants": [{"sku": "MUG-9", "prices": {"USD": 1200}, "weight_grams": 300}]})).await;
    stock(&shop, "MUG-9", 5).await;
    let mut browser = Browser::new(&shop);

    let (_, form) = browser.get("/account/sign-up").await;
    let (status, weak) = browser.submit(&form, "/account/sign-up", &[("name", "Grace Hopper"), ("email", "grace@example.com"), ("password", "short")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(weak.contains(r#"class="alert""#) && weak.contains(r#"value="Grace Hopper""#), "the form keeps what was typed: {weak}");
    let (status, sent) = browser.submit(&form, "/account/sign-up", &[("name", "Grace Hopper"), ("email", "grace@example.com"), ("password", "a long passphrase")]).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert!(sent.contains("We have sent a message to grace@example.com") && sent.contains(r#"action="/account/sign-in""#), "{sent}");
    assert!(!browser.cookies.contains_key("access") && !browser.cookies.contains_key("refresh"), "signing up does not sign in");

    // The link in the mail confirms the address (and does not sign in); then she signs in.
    let link = mail_link(&shop, "grace@example.com", "Confirm your email", "/account/verify-email?token=").await;
    let (_, confirm) = browser.get(&link).await;
    let (status, done) = browser.submit(&confirm, "/account/verify-email", &[("token", between(&confirm, r#"name="token" value=""#, "\""))]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(done.contains("Your email address is confirmed.") && done.contains(r#"href="/account/sign-in""#), "{done}");
    assert!(!browser.cookies.contains_key("access"));
    let (status, account) = browser.submit(&sent, "/account/sign-in", &[("email", "grace@example.com"), ("password", "a long passphrase")]).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert!(account.contains("Hello, Grace Hopper") && !account.contains("not confirmed yet"), "{account}");
    assert!(browser.cookies.contains_key("access") && browser.cookies.contains_key("refresh"));

    // Two-step sign-in: a QR code drawn by the shop, the key, a first code.
    let (_, security) = browser.get("/account/security").await;
    let (_, enrol) = browser.submit(&security, "/account/security/totp", &[("password", "a long passphrase")]).await;
    assert!(enrol.contains("<svg") && enrol.contains("aria-label=\"QR code of your sign-in key\""), "{enrol}");
    let secret = between(&enrol, r#"<code class="secret">"#, "</code>").to_owned();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (status, wrong) = browser.submit(&enrol, "/account/security/totp/confirm", &[("code", "000000")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{wrong}");
    let (_, enrol) = browser.submit(&security, "/account/security/totp", &[("password", "a long passphrase")]).await;
    let secret = if enrol.contains(r#"<code class="secret">"#) { between(&enrol, r#"<code class="secret">"#, "</code>").to_owned() } else { secret };
    let (status, on) = browser.submit(&enrol, "/account/security/totp/confirm", &[("code", &platform::testing::totp(&secret, now))]).await;
    assert_eq!(status, StatusCode::OK, "{on}");
    assert!(on.contains("Two-step sign-in is on.") && on.contains("recovery codes"), "{on}");

    // An order while signed in shows in the account.
    let (_, product) = browser.get("/products/mug").await;
    browser.submit(&product, "/cart/items", &[("sku", "MUG-9")]).await;
    let (_, address) = browser.get("/checkout").await;
    let (_, pay) = browser.submit(&address, "/checkout/address", &[("email", "grace@example.com"), ("name", "Grace Hopper"),
        ("line1", "1 Market St"), ("city", "San Francisco"), ("region", "CA"), ("postal_code", "94105"), ("country", "US")]).await;
    let method = between(&pay, r#"name="shipping_method" id="m1" value=""#, "\"").to_owned();
    let (status, confirmation) = browser.pay(&pay, &[("shipping_method", &method), ("token", "tok_visa")]).await;
    assert_eq!(status, StatusCode::OK, "{confirmation}");
    assert!(confirmation.contains("<h1>Order #1001</h1>"));

    let (_, account) = browser.get("/account").await;
    assert!(account.contains("Hello, Grace Hopper") && account.contains(">#1001</a>") && account.contains("paid"), "{account}");
    assert!(account.contains("grace@example.com — confirmed"));
    let (status, home) = browser.submit(&account, "/account/sign-out", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(home.contains("New arrivals"));
    assert!(!browser.cookies.contains_key("access"));
    let (_, again) = browser.get("/account").await;
    assert!(again.contains("<h1>Sign in</h1>"), "signed out, the account asks to sign in");

    // A wrong password says so; a forgotten one is reset through the mailed link.
    let (status, wrong) = browser.submit(&again, "/account/sign-in", &[("email", "grace@example.com"), ("password", "not the password")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(wrong.contains(r#"class="alert""#));
    let (_, forgot) = browser.get("/account/forgot-password").await;
    let (_, sent) = browser.submit(&forgot, "/account/forgot-password", &[("email", "grace@example.com")]).await;
    assert!(sent.contains("a link to choose a new password is on its way"));
    let link = mail_link(&shop, "grace@example.com", "Reset your", "/account/reset-password?token=").await;
    let (_, reset) = browser.get(&link).await;
    let token = between(&reset, r#"name="token" value=""#, "\"").to_owned();
    let (_, changed) = browser.submit(&reset, "/account/reset-password", &[("token", &token), ("password", "a brand new passphrase")]).await;
    assert!(changed.contains("Your password is changed."), "{changed}");
    let (_, form) = browser.get("/account/sign-in").await;
    let (status, asks) = browser.submit(&form, "/account/sign-in", &[("email", "grace@example.com"), ("password", "a brand new passphrase")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(asks.contains("Enter the code from your authenticator app.") && asks.contains(r#"id="totp_code""#), "{asks}");
    let next_code = platform::testing::totp(&secret, now + 30);
    let (status, account) = browser.submit(&asks, "/account/sign-in", &[("email", "grace@example.com"), ("password", "a brand new passphrase"), ("totp_code", &next_code)]).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert!(account.contains(">#1001</a>") && account.contains("Two-step sign-in: on"), "{account}");

    // An access token that no longer works is renewed with the refresh token on the way.
    let before = browser.cookies.get("refresh").cloned();
    browser.cookies.insert("access".into(), "expired.token.here".into());
    let (_, account) = browser.get("/account").await;
    assert!(account.contains("Hello, Grace Hopper"), "{account}");
    assert_ne!(browser.cookies.get("access").map(String::as_str), Some("expired.token.here"));
    assert_ne!(browser.cookies.get("refresh"), before.as_ref(), "refresh tokens rotate");
}

#[tokio::test]
async fn an_order_manager_ships_from_the_console_and_the_customer_sees_the_tracking() {
    let shop = storefront().await;
    let (mut customer, order_id) = guest_order(&shop).await;

    let mut manager = staff_browser(&shop, "orders@example.com", kernel::auth::Role::OrderManager).await;
    let (status, dashboard) = manager.get("/admin").await;
    assert_eq!(status, StatusCode::OK, "{dashboard}");
    assert!(dashboard.contains(r#"<span class="big">1</span> orders today"#) && dashboard.contains("$30.74 revenue today") || dashboard.contains("$30.74</span> revenue today"), "{dashboard}");
    assert!(dashboard.contains(r#"<span class="big">1</span> to fulfil"#) && dashboard.contains("<svg"), "{dashboard}");
    assert!(dashboard.contains(r#"<a href="/admin/orders">Orders</a>"#));
    let (_, list) = manager.get("/admin/orders?status=paid").await;
    assert!(list.contains(&format!(r#"<a href="/admin/orders/{order_id}">#1001</a>"#)), "{list}");
    let (_, detail) = manager.get(&format!("/admin/orders/{order_id}")).await;
    assert!(detail.contains("Ship what is left"));
    let (status, shipped) = manager.submit(&detail, &format!("/admin/orders/{order_id}/fulfil"), &[("carrier", "UPS"),
        ("tracking_number", "1Z42"), ("tracking_url", "https://track.example/1Z42")]).await;
    assert_eq!(status, StatusCode::OK, "{shipped}");
    assert!(shipped.contains("Status: <strong>fulfilled</strong>") && shipped.contains("UPS 1Z42") && !shipped.contains("Ship what is left"), "{shipped}");
    assert!(shipped.contains("fulfilled <span class=\"sku\">by usr_"), "the timeline says who: {shipped}");

    let (_, seen) = customer.get(&format!("/orders/{order_id}")).await;
    assert!(seen.contains("Status: <strong>fulfilled</strong>") && seen.contains(r#"UPS, tracking number 1Z42 — <a href="https://track.example/1Z42">track it</a>"#), "{seen}");

    // A catalog manager has no orders in the console; a customer no console at all.
    let mut catalog = staff_browser(&shop, "catalog@example.com", kernel::auth::Role::CatalogManager).await;
    let (status, dashboard) = catalog.get("/admin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!dashboard.contains("/admin/orders") && !dashboard.contains("revenue today"), "{dashboard}");
    assert_eq!(catalog.get("/admin/orders").await.0, StatusCode::FORBIDDEN);
    assert_eq!(catalog.get(&format!("/admin/orders/{order_id}")).await.0, StatusCode::FORBIDDEN);
    let csrf = catalog.cookies.get("csrf").cloned().unwrap();
    let (status, _, _) = catalog.request("POST", &format!("/admin/orders/{order_id}/fulfil"), Some(&[("csrf", &csrf), ("carrier", "X")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the API refuses the action too");
    let (status, headers, _) = customer.request("GET", "/admin", None).await;
    assert!(status.is_redirection() && headers["location"] == "/account/sign-in", "a guest is sent to sign in");
    let mut shopper = staff_browser(&shop, "shopper@example.com", kernel::auth::Role::Customer).await;
    assert_eq!(shopper.get("/admin").await.0, StatusCode::FORBIDDEN, "a customer has no console");
}

#[tokio::test]
async fn a_shopper_asks_to_hear_when_a_variant_is_back_and_does() {
    let shop = Shop::with(|c| c.services.extend(["search".to_owned(), "notify".to_owned()])).await;
    create(&shop, json!({"title": "Brass Desk Lamp", "status": "active",
        "options": [{"name": "Finish", "values": ["Brass", "Black"]}],
        "variants": [{"sku": "LAMP-BR", "option_values": ["Brass"], "prices": {"USD": 8900}},
                     {"sku": "LAMP-BK", "option_values": ["Black"], "prices": {"USD": 7900}}]})).await;
    stock(&shop, "LAMP-BR", 3).await;
    let mut browser = Browser::new(&shop);
    let (_, product) = browser.get("/products/brass-desk-lamp").await;
    let notify = between(&product, r#"action="/products/brass-desk-lamp/notify-me""#, "</form>");
    assert!(notify.contains(r#"<input type="hidden" name="sku" value="LAMP-BK">"#) && !notify.contains("LAMP-BR"), "only the sold-out finish: {notify}");
    let (status, asked) = browser.submit(&product, "/products/brass-desk-lamp/notify-me", &[("sku", "LAMP-BK"), ("email", "lin@example.com")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(asked.contains("We will email you once, when it is back in stock."));
    stock(&shop, "LAMP-BK", 2).await;
    let link = mail_link(&shop, "lin@example.com", "is back in stock", "/products/").await;
    assert!(link.ends_with("/products/brass-desk-lamp"), "{link}");
}

#[tokio::test]
async fn a_customer_sets_preferences_downloads_their_data_and_deletes_the_account() {
    let shop = Shop::with(|c| c.services.extend(["search".to_owned(), "notify".to_owned()])).await;
    let mut browser = Browser::new(&shop);
    let (_, form) = browser.get("/account/sign-up").await;
    let (_, sent) = browser.submit(&form, "/account/sign-up", &[("name", "Lin"), ("email", "lin@example.com"), ("password", "a long passphrase")]).await;
    let (status, _) = browser.submit(&sent, "/account/sign-in", &[("email", "lin@example.com"), ("password", "a long passphrase")]).await;
    assert_eq!(status, StatusCode::OK, "signed in after signing up");

    let (_, prefs) = browser.get("/account/preferences").await;
    assert!(prefs.contains("Emails about your account and your orders always come."));
    let (status, refused) = browser.submit(&prefs, "/account/preferences", &[("order_sms", "on")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.contains(r#"class="alert""#), "SMS needs a number: {refused}");
    let (status, saved) = browser.submit(&prefs, "/account/preferences", &[("order_sms", "on"), ("phone", "+1 415 555 0100")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(saved.contains("Saved.") && saved.contains(r#"value="+14155550100""#) && saved.contains(r#"id="order_sms" name="order_sms" value="on" checked"#), "{saved}");

    let (status, headers, data) = browser.request("GET", "/account/export", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-disposition"].to_str().unwrap().contains("attachment"));
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["account"]["email"].as_str().or(data["user"]["email"].as_str()).or(data["email"].as_str()), Some("lin@example.com"), "{data}");

    let (_, account) = browser.get("/account").await;
    let (status, _) = browser.submit(&account, "/account/delete", &[("password", "not it")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, gone) = browser.submit(&account, "/account/delete", &[("password", "a long passphrase")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(gone.contains("Your account and its personal data are gone."));
    assert!(!browser.cookies.contains_key("access"));
    let (_, form) = browser.get("/account/sign-in").await;
    let (status, _) = browser.submit(&form, "/account/sign-in", &[("email", "lin@example.com"), ("password", "a long passphrase")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the account is gone");
}

#[tokio::test]
async fn a_customer_keeps_addresses_checks_out_with_the_default_and_asks_to_return_what_was_shipped() {
    let shop = storefront().await;
    create(&shop, json!({"title": "Mug", "status": "active", "variants": [{"sku": "MUG-9", "prices": {"USD": 1200}, "weight_grams": 300}]})).await;
    stock(&shop, "MUG-9", 5).await;
    let mut browser = Browser::new(&shop);
    let (_, form) = browser.get("/account/sign-up").await;
    let (_, sent) = browser.submit(&form, "/account/sign-up", &[("name", "Lin Wu"), ("email", "lin@example.com"), ("password", "a long passphrase")]).await;
    let (status, _) = browser.submit(&sent, "/account/sign-in", &[("email", "lin@example.com"), ("password", "a long passphrase")]).await;
    assert_eq!(status, StatusCode::OK, "signed in after signing up");

    let (status, book) = browser.get("/account/addresses").await;
    assert_eq!(status, StatusCode::OK);
    assert!(book.contains("No saved addresses yet.") && book.contains(r#"id="make_default" name="make_default" value="on" checked"#), "{book}");
    let home = [("name", "Lin Wu"), ("line1", "1 Market St"), ("city", "San Francisco"), ("region", "CA"), ("postal_code", "94105")];
    let mut bad = home.to_vec();
    bad.push(("country", "USA"));
    let (status, refused) = browser.submit(&book, "/account/addresses", &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(refused.contains(r#"class="alert""#) && refused.contains(r#"value="1 Market St""#), "the form keeps what was typed: {refused}");
    let mut good = home.to_vec();
    good.extend([("country", "us"), ("make_default", "on")]);
    let (status, saved) = browser.submit(&book, "/account/addresses", &good).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert!(saved.contains("The address is saved.") && saved.contains("Lin Wu, 1 Market St, San Francisco, CA, 94105, US — <strong>default</strong>"), "{saved}");
    let (_, saved) = browser.submit(&saved, "/account/addresses", &[("name", "Lin Wu"), ("line1", "2 Pier Rd"), ("city", "Oakland"), ("region", "CA"), ("postal_code", "94607"), ("country", "US")]).await;
    assert!(saved.contains("Lin Wu, 2 Pier Rd, Oakland, CA, 94607, US</span>"), "a second address, not the default: {saved}");
    let (_, list) = shop.send("GET", "/api/v1/me/addresses", &support::Who { token: browser.cookies.get("access").cloned(), ..Default::default() }, None).await;
    let list = list.get("data").unwrap_or(&list).as_array().unwrap().clone();
    let id_of = |line1: &str| list.iter().find(|a| a["line1"] == line1).unwrap()["id"].as_str().unwrap().to_owned();
    let (pier, market) = (id_of("2 Pier Rd"), id_of("1 Market St"));
    let (_, now) = browser.submit(&saved, &format!("/account/addresses/{pier}"), &[("action", "default")]).await;
    assert!(now.contains("That address is now your default.") && now.contains("2 Pier Rd, Oakland, CA, 94607, US — <strong>default</strong>"), "{now}");
    let (status, edit) = browser.get(&format!("/account/addresses/{pier}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(edit.contains(r#"value="2 Pier Rd""#) && edit.contains("<h1>Change an address</h1>"), "{edit}");
    let (_, changed) = browser.submit(&edit, &format!("/account/addresses/{pier}"), &[("name", "Lin Wu"), ("line1", "3 Pier Rd"), ("city", "Oakland"),
        ("region", "CA"), ("postal_code", "94607"), ("country", "US"), ("make_default", "on")]).await;
    assert!(changed.contains("The address is changed.") && changed.contains("3 Pier Rd"), "{changed}");
    let (_, removed) = browser.submit(&changed, &format!("/account/addresses/{market}"), &[("action", "delete")]).await;
    assert!(removed.contains("The address is removed.") && !removed.contains("1 Market St"), "{removed}");
    assert_eq!(browser.get("/account/addresses/adr_nope").await.0, StatusCode::NOT_FOUND);

    // The checkout starts from the default address and the account's email.
    let (_, product) = browser.get("/products/mug").await;
    browser.submit(&product, "/cart/items", &[("sku", "MUG-9"), ("quantity", "2")]).await;
    let (_, address) = browser.get("/checkout").await;
    assert!(address.contains(r#"value="lin@example.com""#) && address.contains(r#"value="3 Pier Rd""#) && address.contains(r#"value="94607""#), "{address}");
    let fields: Vec<(&str, &str)> = vec![("email", "lin@example.com"), ("name", "Lin Wu"), ("line1", "3 Pier Rd"), ("city", "Oakland"), ("region", "CA"), ("postal_code", "94607"), ("country", "US")];
    let (_, pay) = browser.submit(&address, "/checkout/address", &fields).await;
    let method = between(&pay, r#"name="shipping_method" id="m1" value=""#, "\"").to_owned();
    let (status, confirmation) = browser.pay(&pay, &[("shipping_method", &method), ("token", "tok_visa")]).await;
    assert_eq!(status, StatusCode::OK, "{confirmation}");
    assert!(!confirmation.contains("Return items"), "nothing to return before it ships");
    let (_, orders) = shop.send("GET", "/api/v1/admin/orders", &shop.as_staff(), None).await;
    let id = orders["data"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/fulfilments"), &shop.as_staff(), Some(json!({"carrier": "UPS", "tracking_number": "1Z42"}))).await;
    assert_eq!(s, StatusCode::CREATED);

    let (_, order) = browser.get(&format!("/orders/{id}")).await;
    let timeline = between(&order, r#"<ol class="timeline">"#, "</ol>");
    for step in ["Order placed", "Payment received", "Shipped"] {
        assert!(timeline.contains(step), "{step} in the timeline: {timeline}");
    }
    assert!(order.contains("Mug — how many to return (up to 2)") && order.contains(r#"name="qty:MUG-9""#), "{order}");
    let (status, too_many) = browser.submit(&order, &format!("/orders/{id}/returns"), &[("token", ""), ("qty:MUG-9", "3"), ("reason", "Too small")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{too_many}");
    assert!(too_many.contains(r#"<p class="alert" role="alert">"#), "{too_many}");
    let (status, asked) = browser.submit(&order, &format!("/orders/{id}/returns"), &[("token", ""), ("qty:MUG-9", "1"), ("reason", "Too small")]).await;
    assert_eq!(status, StatusCode::OK, "{asked}");
    assert!(asked.contains("Your return request is in.") && asked.contains("Mug × 1 — “Too small” — <strong>requested</strong>"), "{asked}");
    assert!(asked.contains("Mug — how many to return (up to 1)"), "one left to return: {asked}");
    let (_, returns) = shop.send("GET", "/api/v1/admin/returns", &shop.as_staff(), None).await;
    assert_eq!(returns["data"][0]["reason"], "Too small", "{returns}");
    let mut staff = staff_browser(&shop, "boss@example.com", kernel::auth::Role::Admin).await;
    let (_, seen) = staff.get(&format!("/admin/orders/{id}")).await;
    assert!(seen.contains("MUG-9 × 1 — “Too small” — requested") && seen.contains("Lin Wu, 3 Pier Rd, Oakland, CA, 94607, US"), "{seen}");
    let (status, _, _) = browser.request("POST", &format!("/orders/{id}/returns"), Some(&[("qty:MUG-9", "1"), ("reason", "again")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no return without the form's token");
}

#[tokio::test]
async fn with_stripe_set_up_the_payment_page_takes_cards_through_stripe_elements_and_no_test_cards() {
    let stripe = support::fake_stripe().await;
    let shop = Shop::with(|c| {
        c.services.extend(["search".to_owned()]);
        c.orders.stripe_secret_key = Some("sk_test_emporium".into());
        c.orders.test_payments = None; // as a real shop: no test gateway unless told
        c.orders.stripe_publishable_key = Some("pk_test_emporium".into());
        c.orders.stripe_api_base = stripe;
    })
    .await;
    create(&shop, json!({"title": "Mug", "status": "active", "variants": [{"sku": "MUG-9", "prices": {"USD": 1200}, "weight_grams": 300}]})).await;
    stock(&shop, "MUG-9", 5).await;
    let mut browser = Browser::new(&shop);
    let (_, product) = browser.get("/products/mug").await;
    browser.submit(&product, "/cart/items", &[("sku", "MUG-9")]).await;
    let (_, address) = browser.get("/checkout").await;
    let (_, pay) = browser.submit(&address, "/checkout/address", &[("email", "ada@example.com"), ("name", "Ada Lovelace"),
        ("line1", "1 Market St"), ("city", "San Francisco"), ("region", "CA"), ("postal_code", "94105"), ("country", "US")]).await;
    assert!(pay.contains(r#"<fieldset id="stripe-card" data-key="pk_test_emporium" hidden>"#), "the card field, shown by the script: {pay}");
    assert!(pay.contains(r#"<script src="https://js.stripe.com/v3/"></script><script src="/assets/stripe."#), "Stripe.js, then ours (by its fingerprinted address)");
    assert!(!pay.contains("Test cards") && !pay.contains("tok_visa"), "no test cards in a shop taking real payments");
    let (_, headers, _) = browser.request("GET", "/checkout/pay", None).await;
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self' https://js.stripe.com;") && csp.contains("frame-src https://js.stripe.com"), "{csp}");
    let (status, _, script) = browser.request("GET", "/assets/stripe.js", None).await;
    assert!(status.is_success() && script.contains("createToken"));

    // What the script posts: Stripe's token for the card; Stripe asks for 3-D Secure.
    let csrf = between(&pay, r#"name="csrf" value=""#, "\"").to_owned();
    let method = between(&pay, r#"name="shipping_method" id="m1" value=""#, "\"").to_owned();
    let amount = between(&pay, r#"name="total_amount" id="total-amount" value=""#, "\"").to_owned();
    let (status, headers, _) = browser.request("POST", "/checkout/pay", Some(&[("csrf", &csrf), ("shipping_method", &method), ("provider", "stripe"), ("token", "tok_1Card"),
        ("total_amount", &amount), ("total_currency", "USD")])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "https://stripe.example/3ds", "off to the bank's check");

    // A shop without Stripe allows no third-party script at all.
    let plain = storefront().await;
    let (_, headers, _) = page(&plain, "/").await;
    assert!(!headers["content-security-policy"].to_str().unwrap().contains("stripe"));
}

#[tokio::test]
async fn shared_pages_are_kept_for_visitors_without_a_session_each_with_their_own_form_token_until_the_catalog_changes() {
    // The catalog's own response cache off, so that what the pages show
    // comes from the database each time they are drawn. The news heard in
    // process only: with Redis, the catalog forgets everything once when its
    // subscription begins, at a moment of its own (news through Redis is
    // the split-shop test's).
    let shop = Shop::with(|c| {
        c.services.extend(["search".to_owned()]);
        c.http.page_cache_secs = 1;
        c.catalog.cache = false;
        c.redis.url = None;
    })
    .await;
    create(&shop, json!({"title": "Mug", "status": "active", "variants": [{"sku": "MUG-9", "prices": {"USD": 1200}}]})).await;
    create(&shop, json!({"title": "Jug", "status": "active", "variants": [{"sku": "JUG-1", "prices": {"USD": 900}}]})).await;
    stock(&shop, "MUG-9", 3).await;
    stock(&shop, "JUG-1", 4).await;
    // The catalog hears its own events too (a product created forgets
    // everything): let it apply them before the pages are drawn.
    let bus = shop.app.bus();
    let mark = bus.head().await.unwrap();
    let started = std::time::Instant::now();
    while !bus.position("catalog").await.unwrap().reached(mark) {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the catalog applies its events");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Stock changed behind the catalog's back: no news, so a kept page shows what it showed.
    let quietly = |sku: &'static str, on_hand: i64| {
        let db = shop.app.db("catalog").unwrap().clone();
        async move {
            platform::on_write!(db, pool => sqlx::query("UPDATE inventory_levels SET on_hand = $1 WHERE sku = $2").bind(on_hand).bind(sku).execute(pool).await.map(|r| r.rows_affected())).unwrap();
        }
    };

    let mut first = Browser::new(&shop);
    let (_, drawn) = first.get("/products/mug").await;
    assert!(drawn.contains("Only 3 left"));
    quietly("MUG-9", 1).await;
    let mut second = Browser::new(&shop);
    let (_, kept) = second.get("/products/mug").await;
    assert!(kept.contains("Only 3 left"), "the page drawn a moment ago: {kept}");
    let (first_token, second_token) = (between(&drawn, r#"name="csrf" value=""#, "\""), between(&kept, r#"name="csrf" value=""#, "\""));
    assert_ne!(first_token, second_token, "each visitor's own token");
    assert_eq!(second.cookies.get("csrf").map(String::as_str), Some(second_token));

    // The catalog announces a stock change: the page goes at once.
    stock(&shop, "MUG-9", 2).await;
    let (_, redrawn) = Browser::new(&shop).get("/products/mug").await;
    assert!(redrawn.contains("Only 2 left"), "drawn again after the change: {redrawn}");
    let (status, cart) = second.submit(&kept, "/cart/items", &[("sku", "MUG-9")]).await;
    assert_eq!(status, StatusCode::OK, "a kept page's form posts: {cart}");
    assert!(cart.contains("Mug"));
    let (_, with_cart) = second.get("/products/mug").await;
    assert!(with_cart.contains("Only 2 left"), "a shopper with a cart sees the page drawn for them: {with_cart}");

    // A product page outlives the few seconds of the lists while nothing changes its product.
    let (_, jug) = first.get("/products/jug").await;
    assert!(jug.contains("Only 4 left"), "{jug}");
    quietly("JUG-1", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, later) = first.get("/products/jug").await;
    assert!(later.contains("Only 4 left"), "still kept past http.page_cache_secs: {later}");
    assert_eq!(between(&later, r#"name="csrf" value=""#, "\""), first_token, "a visitor keeps their token");
    // Another product's change leaves it; its own makes it go.
    stock(&shop, "MUG-9", 5).await;
    assert!(first.get("/products/jug").await.1.contains("Only 4 left"), "another product's change leaves it kept");
    stock(&shop, "JUG-1", 3).await;
    assert!(first.get("/products/jug").await.1.contains("Only 3 left"), "drawn again after its own change");
}
