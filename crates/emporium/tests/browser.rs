//! The storefront in a real browser (headless Chromium through
//! chromedriver): a guest finds a product by a misspelled search, picks a
//! variant, is declined once, then pays with a test card and sees the
//! confirmation, and the receipt reaches the dev mailbox; and no page
//! scrolls sideways on a phone. Screenshots land in `target/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use support::Shop;
use support::webdriver::{Driver, Session};

/// The shop on a real port, with a lamp in two finishes.
async fn served_shop() -> (Shop, String) {
    let shop = Shop::with(|c| c.services.extend(["search".to_owned(), "notify".to_owned()])).await;
    let (s, p) = shop.send("POST", "/api/v1/admin/products", &shop.as_staff(), Some(json!({
        "title": "Brass Desk Lamp", "status": "active", "brand": "Lumen",
        "description": "A solid brass lamp with a linen shade, for the desk or the bedside.",
        "options": [{"name": "Finish", "values": ["Brass", "Black"]}],
        "variants": [{"sku": "LAMP-BR", "option_values": ["Brass"], "prices": {"USD": 8900}, "weight_grams": 900},
                     {"sku": "LAMP-BK", "option_values": ["Black"], "prices": {"USD": 7900}, "weight_grams": 900}]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    for sku in ["LAMP-BR", "LAMP-BK"] {
        shop.send("PUT", &format!("/api/v1/admin/inventory/{sku}"), &shop.as_staff(), Some(json!({"on_hand": 4}))).await;
    }
    for _ in 0..100 {
        let (_, found) = shop.send("GET", "/api/v1/search?q=brass", &Default::default(), None).await;
        if found["total"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = shop.serve().await;
    (shop, base)
}

async fn fill_address(window: &Session<'_>) {
    for (field, value) in [("#email", "ada@example.com"), ("#name", "Ada Lovelace"), ("#line1", "1 Market St"),
        ("#city", "San Francisco"), ("#region", "CA"), ("#postal_code", "94105"), ("#country", "US")] {
        window.fill(field, value).await;
    }
    window.click("form.stack button[type=submit]").await;
}

#[tokio::test]
async fn a_guest_finds_a_lamp_by_a_typo_and_pays_after_a_declined_card() {
    let Some(driver) = Driver::start().await else { return };
    let (shop, base) = served_shop().await;
    let window = driver.session(1280, 900).await;

    window.goto(&format!("{base}/")).await;
    assert_eq!(window.title().await, "Emporium");
    window.screenshot("desktop-home").await;
    // Typing offers suggestions (the enhancement script), then a typo still finds the lamp.
    window.fill("#q", "bras").await;
    let mut offered = String::new();
    for _ in 0..50 {
        offered = window.execute("return Array.from(document.querySelectorAll('#suggestions option')).map(o => o.value).join('|');", json!([])).await.as_str().unwrap_or_default().to_owned();
        if !offered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(offered.contains("Brass Desk Lamp"), "suggestions: {offered}");
    window.fill("#q", "lmap").await;
    window.click("form.search button").await;
    window.wait_url("/search?q=lmap").await;
    window.wait_title("Results for “lmap”").await;
    window.click("li.card a").await;
    window.wait_title("Brass Desk Lamp").await;
    window.screenshot("desktop-product").await;
    window.click("label[for=v2]").await; // Black
    window.fill("#quantity", "2").await;
    window.click("form.add button").await;
    window.wait_url("/cart").await;
    let line = window.text("table.lines").await;
    assert!(line.contains("Brass Desk Lamp") && line.contains("Finish: Black"), "{line}");
    window.screenshot("desktop-cart").await;
    window.click("a.button").await;
    window.wait_url("/checkout").await;
    window.screenshot("desktop-checkout").await;
    fill_address(&window).await;
    window.wait_url("/checkout/pay").await;

    window.click("label[for=c3]").await; // tok_chargeDeclined
    window.click("form.stack button[type=submit]").await;
    assert_eq!(window.text("p.alert").await, "Your card was declined.");
    window.wait_title("Payment").await;
    let (_, levels) = shop.send("GET", "/api/v1/admin/inventory?sku=LAMP-BK", &shop.as_staff(), None).await;
    assert_eq!(levels[0]["reserved"], 0, "the stock is back: {levels}");
    window.click("label[for=c1]").await; // tok_visa
    window.click("form.stack button[type=submit]").await;
    window.wait_title("Order #1001").await;
    assert_eq!(window.text("main h1").await, "Order #1001");
    assert!(window.text("p.success").await.contains("a receipt is on its way to ada@example.com"));
    window.screenshot("desktop-confirmation").await;
    window.quit().await;

    for _ in 0..100 {
        let (_, mail) = shop.send("GET", "/api/v1/admin/mailbox?to=ada@example.com", &shop.as_staff(), None).await;
        if mail["data"].as_array().unwrap().iter().any(|m| m["subject"] == "Receipt for order #1001") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no receipt in the dev mailbox");
}

#[tokio::test]
async fn no_page_scrolls_sideways_on_a_phone() {
    let Some(driver) = Driver::start().await else { return };
    let (_shop, base) = served_shop().await;
    let phone = driver.session(390, 844).await;
    // How far the page is wider than the window it is shown in.
    let overflow = "return document.documentElement.scrollWidth - document.documentElement.clientWidth;";

    for (name, path) in [("home", "/"), ("search", "/search?q=lamp"), ("product", "/products/brass-desk-lamp")] {
        phone.goto(&format!("{base}{path}")).await;
        assert_eq!(phone.execute(overflow, json!([])).await, 0, "{name} is wider than the phone");
        phone.screenshot(&format!("phone-{name}")).await;
    }
    phone.click("form.add button").await;
    phone.wait_url("/cart").await;
    assert_eq!(phone.execute(overflow, json!([])).await, 0, "the cart is wider than the phone");
    phone.screenshot("phone-cart").await;
    phone.click("a.button").await;
    phone.wait_url("/checkout").await;
    assert_eq!(phone.execute(overflow, json!([])).await, 0, "the checkout is wider than the phone");
    phone.screenshot("phone-checkout").await;
    fill_address(&phone).await;
    phone.wait_url("/checkout/pay").await;
    assert_eq!(phone.execute(overflow, json!([])).await, 0, "the payment page is wider than the phone");
    phone.screenshot("phone-payment").await;
    phone.quit().await;
}

#[tokio::test]
async fn a_catalog_manager_adds_a_product_with_two_variants_and_a_picture_that_shoppers_then_find() {
    let Some(driver) = Driver::start().await else { return };
    let (shop, base) = served_shop().await;
    shop.user("cm@example.com", kernel::auth::Role::CatalogManager).await;
    let folder = tempfile::tempdir().unwrap();
    let picture = folder.path().join("apron.png");
    std::fs::write(&picture, catalog::media::placeholder(120, 600).unwrap()).unwrap();
    let window = driver.session(1280, 900).await;

    window.sign_in(&base, "cm@example.com", "/admin").await; // staff land on the console
    window.goto(&format!("{base}/admin")).await;
    let nav = window.text("header nav").await;
    assert!(nav.contains("Products") && !nav.contains("Orders"), "a catalog manager's console: {nav}");
    window.goto(&format!("{base}/admin/products/new")).await;
    for (field, value) in [("#title", "Linen Apron"), ("#description", "A heavy *linen* apron."), ("#option", "Colour"),
        ("#value1", "Sand"), ("#sku1", "APR-S"), ("#price1", "24.00"), ("#stock1", "5"),
        ("#value2", "Olive"), ("#sku2", "APR-O"), ("#price2", "26.00"), ("#stock2", "3"), ("#alt", "A sand linen apron, folded")] {
        window.fill(field, value).await;
    }
    window.upload("#image", &picture).await;
    window.screenshot("desktop-admin-new-product").await;
    window.click("form.stack button[type=submit]").await;
    window.wait_url("/admin/products").await;
    assert!(window.text("table.lines").await.contains("Linen Apron"));

    // The search follows the catalog's events: the apron is found by shoppers.
    let mut found = false;
    for _ in 0..50 {
        window.goto(&format!("{base}/search?q=apron")).await;
        if window.execute("return document.querySelectorAll('li.card').length;", json!([])).await.as_u64() == Some(1) {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the new product never showed in the search");
    window.click("li.card a").await;
    window.wait_url("/products/linen-apron").await;
    let alt = window.execute("return document.querySelector('.gallery img').alt;", json!([])).await;
    assert_eq!(alt, "A sand linen apron, folded");
    let loaded = window.execute("return document.querySelector('.gallery img').naturalWidth;", json!([])).await;
    assert!(loaded.as_u64().unwrap_or(0) > 0, "the picture is served");
    let choices = window.text("fieldset.variants").await;
    assert!(choices.contains("Sand") && choices.contains("$24.00") && choices.contains("Olive") && choices.contains("$26.00"), "{choices}");
    window.quit().await;
}

#[tokio::test]
async fn a_shopper_with_two_step_sign_in_follows_the_order_an_order_manager_ships() {
    let Some(driver) = Driver::start().await else { return };
    let (shop, base) = served_shop().await;
    shop.user("orders@example.com", kernel::auth::Role::OrderManager).await;
    shop.user("catalog@example.com", kernel::auth::Role::CatalogManager).await;
    let shopper = driver.session(1280, 900).await;

    // Sign up; the address is confirmed through the link in the dev mailbox.
    shopper.goto(&format!("{base}/account/sign-up")).await;
    for (field, value) in [("#name", "Grace Hopper"), ("#email", "grace@example.com"), ("#password", "a long passphrase")] {
        shopper.fill(field, value).await;
    }
    shopper.click("form.stack button[type=submit]").await;
    shopper.wait_text("main", "We have sent a message to grace@example.com").await;
    let link = support::pages::mail_link(&shop, "grace@example.com", "Confirm your email", "/account/verify-email?token=").await;
    let path = &link[link.find("/account/").unwrap()..];
    shopper.goto(&format!("{base}{path}")).await;
    shopper.click("form.stack button[type=submit]").await;
    shopper.wait_text("main", "Your email address is confirmed.").await;
    // Signing up and confirming do not sign in: she signs in now.
    shopper.sign_in(&base, "grace@example.com", "/account").await;

    // Two-step sign-in: the QR code is drawn in the page; the key beside it gives the first code.
    shopper.goto(&format!("{base}/account/security")).await;
    shopper.fill("#mfa-password", "a long passphrase").await;
    shopper.click("form[action='/account/security/totp'] button").await;
    shopper.wait_text("main", "Scan this code").await;
    let drawn = shopper.execute("return document.querySelector('svg') !== null;", json!([])).await;
    assert_eq!(drawn, true, "a QR code");
    shopper.screenshot("desktop-account-two-step").await;
    let secret = shopper.text("code.secret").await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    shopper.fill("#code", &platform::testing::totp(&secret, now)).await;
    shopper.click("form[action='/account/security/totp/confirm'] button").await;
    shopper.wait_text("main", "Two-step sign-in is on.").await;

    // An order, then out and back in with a code.
    shopper.goto(&format!("{base}/products/brass-desk-lamp")).await;
    shopper.click("form.add button").await;
    shopper.wait_url("/cart").await;
    shopper.click("a.button").await;
    shopper.wait_url("/checkout").await;
    assert_eq!(shopper.execute("return document.querySelector('#email').value;", json!([])).await, "grace@example.com", "the account's email is filled in");
    for (field, value) in [("#name", "Grace Hopper"), ("#line1", "1 Market St"), ("#city", "San Francisco"), ("#region", "CA"), ("#postal_code", "94105"), ("#country", "US")] {
        shopper.fill(field, value).await;
    }
    shopper.click("form.stack button[type=submit]").await;
    shopper.wait_url("/checkout/pay").await;
    shopper.click("label[for=c1]").await; // tok_visa
    shopper.click("form.stack button[type=submit]").await;
    shopper.wait_title("Order #1001").await;
    let order_url = shopper.url().await;
    let order_path = order_url[order_url.find("/orders/").unwrap()..].split('?').next().unwrap().to_owned();

    shopper.goto(&format!("{base}/account")).await;
    shopper.click("form[action='/account/sign-out'] button").await;
    shopper.wait_title("Emporium").await;
    shopper.send_sign_in(&base, "grace@example.com").await;
    shopper.wait_text("main", "Enter the code from your authenticator app.").await;
    shopper.fill("#password", "a long passphrase").await;
    shopper.fill("#totp_code", &platform::testing::totp(&secret, now + 30)).await;
    shopper.click("form.stack button[type=submit]").await;
    shopper.wait_url("/account").await;
    let history = shopper.text("table.lines").await;
    shopper.goto(&format!("{base}{order_path}")).await;
    shopper.screenshot("desktop-order").await;
    shopper.goto(&format!("{base}/account")).await;
    assert!(history.contains("#1001") && history.contains("paid"), "the order history: {history}");
    shopper.screenshot("desktop-account").await;

    // An order manager ships it with a tracking number.
    let manager = driver.session(1280, 900).await;
    manager.sign_in(&base, "orders@example.com", "/admin").await;
    manager.goto(&format!("{base}/admin")).await;
    manager.wait_text("main", "to fulfil").await;
    manager.screenshot("desktop-admin-dashboard").await;
    manager.goto(&format!("{base}/admin/orders")).await;
    manager.click("table.lines a").await;
    manager.wait_title("Order #1001").await;
    manager.screenshot("desktop-admin-order").await;
    for (field, value) in [("#carrier", "UPS"), ("#tracking_number", "1Z999AA10123456784"), ("#tracking_url", "https://track.example/1Z999AA10123456784")] {
        manager.fill(field, value).await;
    }
    manager.click("form[action$='/fulfil'] button").await;
    manager.wait_text("main", "Status: fulfilled").await;
    manager.quit().await;

    // The console works on a phone too: nothing wider than the screen.
    let phone = driver.session(390, 844).await;
    phone.sign_in(&base, "orders@example.com", "/admin").await;
    phone.console_pages_fit(&base, &[("dashboard", "/admin".to_owned()), ("orders", "/admin/orders".to_owned()), ("order", format!("/admin{order_path}")), ("inventory", "/admin/inventory".to_owned())]).await;
    phone.quit().await;

    // The customer's order page shows the parcel and its tracking link.
    shopper.goto(&format!("{base}{order_path}")).await;
    let parcels = shopper.text("main").await;
    assert!(parcels.contains("Status: fulfilled") && parcels.contains("UPS, tracking number 1Z999AA10123456784 — track it"), "{parcels}");
    let link = shopper.execute("return document.querySelector('main h2 + ul a').href;", json!([])).await;
    assert_eq!(link, "https://track.example/1Z999AA10123456784");
    shopper.quit().await;

    // A catalog manager has no orders in the console.
    let catalog = driver.session(1280, 900).await;
    catalog.sign_in(&base, "catalog@example.com", "/admin").await;
    catalog.goto(&format!("{base}/admin")).await;
    let nav = catalog.text("header nav").await;
    assert!(nav.contains("Products") && !nav.contains("Orders"), "{nav}");
    catalog.goto(&format!("{base}/admin/orders")).await;
    catalog.wait_text("main h1", "Your role does not give access to this page.").await;
    catalog.goto(&format!("{base}/admin{order_path}")).await;
    catalog.wait_text("main h1", "Your role does not give access to this page.").await;
    catalog.quit().await;
}
