//! The catalog's pages as a shopper meets them: pictures in every list,
//! the first size that can be bought already chosen, a sold-out product
//! that offers only to tell when it is back, a picker named by its option,
//! prices in the shop's money, every failed form a page of the shop, the
//! icon and fingerprinted assets, compressed answers; and, in a browser on
//! a phone, the first product and the Add to cart button on the first screen.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::Shop;
use crate::support::pages::{Browser, between, create, page, picture, searchable, staff_browser, stock, storefront};
use crate::support::webdriver::Driver;

/// The shop's header, as every page of the storefront starts.
const HEADER: &str = r#"<a class="brand" href="/">Emporium</a>"#;

/// A hoodie in four sizes whose first is sold out, in `categories`.
async fn hoodie(shop: &Shop, categories: Value) -> Value {
    let p = create(shop, json!({"title": "Harbour Hoodie", "status": "active", "brand": "Northwind", "categories": categories,
        "description": "A heavy cotton hoodie for cold mornings by the sea.",
        "options": [{"name": "Size", "values": ["S", "M", "L", "XL"]}],
        "variants": [{"sku": "HOOD-S", "option_values": ["S"], "prices": {"USD": 6899}, "weight_grams": 700},
                     {"sku": "HOOD-M", "option_values": ["M"], "prices": {"USD": 6899}, "weight_grams": 700},
                     {"sku": "HOOD-L", "option_values": ["L"], "prices": {"USD": 6899}, "weight_grams": 700},
                     {"sku": "HOOD-XL", "option_values": ["XL"], "prices": {"USD": 6899}, "weight_grams": 700}]})).await;
    stock(shop, "HOOD-S", 0).await;
    stock(shop, "HOOD-M", 3).await;
    stock(shop, "HOOD-L", 20).await;
    stock(shop, "HOOD-XL", 20).await;
    p
}

/// Waits until the search's hit for `q` carries a picture (the index follows catalog events).
async fn pictured(shop: &Shop, q: &str) -> Value {
    for _ in 0..100 {
        let (_, body) = shop.send("GET", &format!("/api/v1/search?q={q}"), &Default::default(), None).await;
        if let Some(hit) = body["data"].as_array().and_then(|d| d.iter().find(|h| h["thumbnail"].is_object())) {
            return hit.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the search never showed a picture for {q}");
}

/// A request with extra headers; the status, headers and raw body.
async fn raw(shop: &Shop, path: &str, headers: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut r = Request::builder().uri(path);
    for (name, value) in headers {
        r = r.header(*name, *value);
    }
    let response = shop.app.router().oneshot(r.body(Body::empty()).unwrap()).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.into_body().collect().await.unwrap().to_bytes().to_vec())
}

#[tokio::test]
async fn the_first_size_that_can_be_bought_is_chosen_and_a_missing_size_is_asked_for_on_the_page() {
    let shop = storefront().await;
    hoodie(&shop, json!([])).await;
    let mut browser = Browser::new(&shop);
    let (status, product) = browser.get("/products/harbour-hoodie").await;
    assert_eq!(status, StatusCode::OK);
    let picker = between(&product, r#"<fieldset class="variants">"#, "</fieldset>");
    assert!(picker.contains("<legend>Size</legend>"), "the picker is named by its option: {picker}");
    let s = between(picker, r#"id="v1""#, ">");
    assert!(s.contains("disabled") && !s.contains("checked"), "the sold-out first size is neither chosen nor choosable: {s}");
    let m = between(picker, r#"id="v2""#, ">");
    assert!(m.contains("checked") && !m.contains("disabled"), "the first size in stock is chosen: {m}");
    assert_eq!(picker.matches(" checked").count(), 1, "{picker}");
    assert!(picker.contains("Only 3 left") && picker.contains("Out of stock"), "{picker}");
    assert!(product.contains(r#"<p class="price-line">$68.99</p>"#), "one price for the product, as the currency writes it: {product}");
    let buy = between(&product, r#"<div class="buy">"#, r#"<div class="description">"#);
    assert!(!buy.contains("USD") && buy.contains("$68.99"), "no currency codes beside prices: {buy}");
    assert!(product.contains(r#"<button type="submit" class="primary">Add to cart</button>"#));
    assert!(product.contains(r#"<button type="submit" class="secondary">Notify me</button>"#), "notify-me for the sold-out size stays secondary");

    // What the browser sends with the page as it opens: the chosen size.
    let (status, cart) = browser.submit(&product, "/cart/items", &[("sku", "HOOD-M"), ("quantity", "1"), ("from", "/products/harbour-hoodie")]).await;
    assert_eq!(status, StatusCode::OK, "{cart}");
    assert!(cart.contains("Harbour Hoodie"), "{cart}");

    // No size at all, or a quantity that is not a number: a page of the shop that says so in words.
    for fields in [&[("quantity", "1"), ("from", "/products/harbour-hoodie")][..], &[("sku", "HOOD-L"), ("quantity", "lots"), ("from", "/products/harbour-hoodie")]] {
        let (status, again) = browser.submit(&product, "/cart/items", fields).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(again.contains(HEADER) && again.contains(r#"class="alert" role="alert""#), "{again}");
        assert!(!again.contains("deserialize") && !again.contains("missing field"), "{again}");
    }
    // A form of the product page sent without the size: the product page again, asking for one by its name.
    let (status, again) = browser.submit(&product, "/products/harbour-hoodie/notify-me", &[("email", "ada@example.com"), ("from", "/products/harbour-hoodie")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.contains(HEADER) && again.contains("<h1>Harbour Hoodie</h1>"), "the product's own page: {again}");
    assert!(again.contains(r#"<p class="alert" role="alert">Please choose a size.</p>"#), "{again}");
    assert!(again.contains(r#"id="v2" value="HOOD-M" required checked"#), "the page as it was: {again}");
    // Another field not understood: said at the form, on the same page.
    let (status, again) = browser.submit(&product, "/products/harbour-hoodie/notify-me", &[("sku", "HOOD-S"), ("from", "/products/harbour-hoodie")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.contains("<h1>Harbour Hoodie</h1>") && again.contains("Please fill in your email address"), "{again}");
    // The same form without the visitor's token: a plain page of the shop, the product not looked up again.
    let (status, _, forged) = browser.request("POST", "/products/harbour-hoodie/notify-me", Some(&[("csrf", "forged"), ("sku", "HOOD-S"), ("from", "/products/harbour-hoodie")])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(forged.contains(HEADER) && forged.contains("Please fill in your email address") && !forged.contains("<h1>Harbour Hoodie</h1>"), "{forged}");
    // A page that is not a product's is not drawn for a form that names it.
    let (status, elsewhere) = browser.submit(&product, "/products/harbour-hoodie/notify-me", &[("sku", "HOOD-S"), ("from", "//evil.example/x")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(elsewhere.contains(HEADER) && !elsewhere.contains("evil.example") && !elsewhere.contains("<h1>Harbour Hoodie</h1>"), "{elsewhere}");
}

#[tokio::test]
async fn a_sold_out_product_offers_only_to_tell_when_it_is_back_and_one_variant_has_no_picker() {
    let shop = storefront().await;
    create(&shop, json!({"title": "Tide Scarf", "status": "active",
        "options": [{"name": "Colour", "values": ["Sand", "Slate"]}],
        "variants": [{"sku": "SCARF-SA", "option_values": ["Sand"], "prices": {"USD": 2500}},
                     {"sku": "SCARF-SL", "option_values": ["Slate"], "prices": {"USD": 2700}}]})).await;
    stock(&shop, "SCARF-SA", 0).await;
    stock(&shop, "SCARF-SL", 0).await;
    let (_, _, scarf) = page(&shop, "/products/tide-scarf").await;
    assert!(!scarf.contains(r#"action="/cart/items""#) && !scarf.contains("Add to cart"), "nothing to add: {scarf}");
    assert!(scarf.contains(r#"<p class="sold-out">Sold out</p>"#), "{scarf}");
    let notify = between(&scarf, r#"action="/products/tide-scarf/notify-me""#, "</form>");
    assert!(notify.contains(r#"<label for="notify-sku">Colour</label>"#) && notify.contains(r#"class="primary">Notify me"#), "{notify}");
    assert!(scarf.contains("From $25.00"), "the variants' prices differ: {scarf}");

    // Sold on backorder: still bought.
    create(&shop, json!({"title": "Pier Mug", "status": "active",
        "variants": [{"sku": "MUG-P", "prices": {"USD": 1400}, "allow_backorder": true}]})).await;
    stock(&shop, "MUG-P", 0).await;
    let (_, _, mug) = page(&shop, "/products/pier-mug").await;
    assert!(mug.contains("Add to cart") && !mug.contains("Sold out"), "{mug}");
    // One variant (the default): no picker, no "Default".
    let add = between(&mug, r#"<form method="post" action="/cart/items" class="add">"#, "</form>");
    assert!(add.contains(r#"<input type="hidden" name="sku" value="MUG-P">"#), "{add}");
    assert!(!add.contains("fieldset") && !add.contains("radio") && !mug.contains("Default"), "{add}");
}

#[tokio::test]
async fn every_failed_form_and_every_error_is_a_page_of_the_shop_in_words() {
    let shop = storefront().await;
    create(&shop, json!({"title": "Pier Mug", "status": "active", "variants": [{"sku": "MUG-P", "prices": {"USD": 1400}}]})).await;
    let mut browser = Browser::new(&shop);
    // Forms posted from a page that does not say where it is: the error page, with the shop around it.
    let (_, home) = browser.get("/products/pier-mug").await;
    // Not found: the shop's header and name.
    let (status, _, missing) = page(&shop, "/products/no-such-thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing.contains(HEADER) && missing.contains("<title>This page does not exist. · Emporium</title>"), "{missing}");
    let (status, _, nowhere) = page(&shop, "/no-such-page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(nowhere.contains(HEADER) && nowhere.contains("<h1>This page does not exist.</h1>"), "{nowhere}");
    let (status, _, api) = page(&shop, "/api/v1/no-such-route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(serde_json::from_str::<Value>(&api).unwrap()["error"]["code"], "route_not_found", "the API keeps its own answer");
    // A broken address of a list.
    let (status, _, odd) = page(&shop, "/search?min_price=cheap").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(odd.contains(HEADER) && odd.contains("does not understand"), "{odd}");
    // A form with a field missing, on the storefront and in the console.
    let (status, cart) = browser.submit(&home, "/products/pier-mug/notify-me", &[("sku", "MUG-P")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(cart.contains(HEADER) && cart.contains("<h1>Please fill in your email address and send the form again.</h1>"), "{cart}");
    let (status, sign_in) = browser.submit(&home, "/account/sign-in", &[("email", "ada@example.com")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(sign_in.contains(HEADER) && sign_in.contains("Please fill in your password"), "{sign_in}");
    let mut admin = staff_browser(&shop, "boss@example.com", kernel::auth::Role::Admin).await;
    let (_, dashboard) = admin.get("/admin/products/new").await;
    let (status, fulfil) = admin.submit(&dashboard, "/admin/orders/ord_nothing/fulfil", &[]).await;
    assert!(status.is_client_error(), "{status}");
    assert!(fulfil.contains(HEADER) && fulfil.contains("<h1>"), "{fulfil}");
    // Not a form at all.
    let (status, _, text) = browser.request("POST", "/cart/items", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains(HEADER), "{text}");
    for body in [&missing, &odd, &cart, &sign_in, &fulfil, &text] {
        assert!(!body.contains("Failed to deserialize") && !body.contains("missing field") && !body.contains("Content-Type"), "{body}");
    }
}

#[tokio::test]
async fn every_list_shows_the_products_pictures_and_the_product_page_a_sized_one() {
    let shop = storefront().await;
    let (s, cat) = shop.send("POST", "/api/v1/admin/categories", &shop.as_staff(), Some(json!({"name": "Knitwear"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{cat}");
    let mut ids = Vec::new();
    for (i, title) in ["Harbour Jumper", "Harbour Cardigan", "Harbour Vest", "Harbour Beanie", "Harbour Gloves", "Harbour Socks"].iter().enumerate() {
        let sku = format!("KNIT-{i}");
        let p = create(&shop, json!({"title": title, "status": "active", "brand": "Northwind", "categories": [cat["id"]],
            "variants": [{"sku": sku, "prices": {"USD": 4000 + i as i64 * 100}}]})).await;
        stock(&shop, &sku, 10).await;
        picture(&shop, p["id"].as_str().unwrap(), i as u32 * 50, Some("The product, from the front")).await;
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    searchable(&shop, "socks").await;
    let hit = pictured(&shop, "socks").await;
    let thumb = &hit["thumbnail"];
    assert!(thumb["url"].as_str().unwrap().starts_with("/media/") && thumb["url"].as_str().unwrap().ends_with("/w480.jpg"), "the copy for lists: {hit}");
    assert_eq!((thumb["width"].as_u64(), thumb["height"].as_u64()), (Some(480), Some(480)));
    for _ in 0..100 {
        let (_, all) = shop.send("GET", "/api/v1/search?q=harbour", &Default::default(), None).await;
        if all["data"].as_array().unwrap().iter().filter(|h| h["thumbnail"].is_object()).count() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, doc) = page(&shop, "/api/openapi.json").await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["components"]["schemas"]["Hit"]["properties"]["thumbnail"].is_object(), "documented: {}", doc["components"]["schemas"]["Hit"]);

    for path in ["/", "/search?q=harbour", "/categories/knitwear"] {
        let (status, _, list) = page(&shop, path).await;
        assert_eq!(status, StatusCode::OK);
        let cards: Vec<&str> = list.split(r#"<li class="card">"#).skip(1).map(|c| c.split("</li>").next().unwrap()).collect();
        assert!(cards.len() >= 6, "{path}: {list}");
        for (i, card) in cards.iter().enumerate() {
            let img = between(card, "<img ", ">");
            assert!(img.contains(r#"width="480" height="480""#) && img.contains(r#"alt="""#) && img.contains("/w480.jpg"), "{path}: {img}");
            assert_eq!(img.contains(r#"loading="lazy""#), i >= 4, "{path}: only the first row loads at once: {img}");
        }
    }

    // The product page: the sized copy, its size, and the others by width; and pictures in its recommendations.
    let (_, _, product) = page(&shop, "/products/harbour-jumper").await;
    let gallery = between(&product, r#"<div class="gallery">"#, "</div>");
    let src = between(gallery, r#"src=""#, "\"");
    assert!(src.ends_with("/w480.jpg"), "the widest copy of a 600 pixel picture, not the picture: {gallery}");
    assert!(gallery.contains(r#"width="480" height="480""#) && gallery.contains("160w") && gallery.contains("480w"), "{gallery}");
    let similar = between(&product, r#"<h2 id="similar">"#, "</section>");
    assert!(similar.contains(r#"<img src="/media/"#) && similar.contains(r#"loading="lazy""#), "recommendations have pictures: {similar}");
    let (_, recs) = shop.send("GET", &format!("/api/v1/products/{}/recommendations?kind=similar&limit=4", ids[0]), &Default::default(), None).await;
    assert!(recs["data"].as_array().unwrap().iter().all(|h| h["thumbnail"]["url"].is_string()), "{recs}");
}

#[tokio::test]
async fn prices_read_as_money_the_icon_and_assets_are_fingerprinted_and_answers_compressed() {
    let shop = storefront().await;
    hoodie(&shop, json!([])).await;
    searchable(&shop, "hoodie").await;
    let (_, _, found) = page(&shop, "/search?q=hoodie").await;
    assert!(found.contains(r#"<span class="card-price">$68.99</span>"#), "{found}");
    assert!(found.contains("$50.00 – $100.00"), "price filters in the same money: {found}");

    let icon = between(&found, r#"<link rel="icon" href=""#, "\"").to_owned();
    let css = between(&found, r#"<link rel="stylesheet" href=""#, "\"").to_owned();
    let js = between(&found, r#"<script src=""#, "\"").to_owned();
    for (url, kind) in [(&icon, "image/svg+xml"), (&css, "text/css; charset=utf-8"), (&js, "text/javascript; charset=utf-8")] {
        let name = url.strip_prefix("/assets/").unwrap();
        let hash = name.split('.').nth(1).unwrap();
        assert!(hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{url}");
        let (status, headers, _) = raw(&shop, url, &[]).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        assert_eq!(headers["content-type"], kind);
        assert_eq!(headers["cache-control"], "public, max-age=31536000, immutable", "{url}");
    }
    let (status, headers, _) = raw(&shop, "/assets/site.css", &[]).await;
    assert_eq!((status, headers["cache-control"].to_str().unwrap()), (StatusCode::OK, "public, max-age=300"), "the plain name, kept briefly");
    assert_eq!(raw(&shop, "/assets/nothing.css", &[]).await.0, StatusCode::NOT_FOUND);
    let mut admin = staff_browser(&shop, "boss@example.com", kernel::auth::Role::Admin).await;
    let (_, console) = admin.get("/admin").await;
    assert!(console.contains(&format!(r#"<link rel="stylesheet" href="{css}">"#)) && console.contains(&icon), "the console links the same files");

    // Pages, assets and API answers, compressed as the client accepts.
    for path in ["/search?q=hoodie", css.as_str(), "/api/v1/search?q=hoodie"] {
        for encoding in ["br", "gzip"] {
            let (status, headers, body) = raw(&shop, path, &[("accept-encoding", encoding)]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers.get("content-encoding").map(|v| v.to_str().unwrap()), Some(encoding), "{path}");
            let (_, _, plain) = raw(&shop, path, &[]).await;
            assert!(body.len() < plain.len(), "{path} {encoding}: {} of {} bytes", body.len(), plain.len());
            if !path.starts_with("/api/") {
                assert!(body.len() < plain.len() / 2, "{path} {encoding}: {} of {} bytes", body.len(), plain.len());
            }
        }
    }
    let (_, headers, _) = raw(&shop, "/search?q=hoodie", &[]).await;
    assert!(headers.get("content-encoding").is_none(), "nothing the client did not ask for");
}

/// The top and bottom of the first element matching `css`, and the window's height.
async fn place(window: &crate::support::webdriver::Session<'_>, css: &str) -> (f64, f64, f64) {
    let v = window
        .execute("const r = document.querySelector(arguments[0]).getBoundingClientRect(); return [r.top, r.bottom, window.innerHeight];", json!([css]))
        .await;
    (v[0].as_f64().unwrap(), v[1].as_f64().unwrap(), v[2].as_f64().unwrap())
}

#[tokio::test]
async fn on_a_phone_the_first_product_and_the_add_to_cart_button_are_on_the_first_screen() {
    let Some(driver) = Driver::start().await else { return };
    let shop = storefront().await;
    let (s, cat) = shop.send("POST", "/api/v1/admin/categories", &shop.as_staff(), Some(json!({"name": "Hoodies"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let p = hoodie(&shop, json!([cat["id"]])).await;
    picture(&shop, p["id"].as_str().unwrap(), 200, Some("The product, from the front")).await;
    for i in 0..6 {
        let sku = format!("HOOD-{i}");
        let other = create(&shop, json!({"title": format!("Fleece Hoodie No. {i}"), "status": "active", "brand": "Northwind", "categories": [cat["id"]],
            "variants": [{"sku": sku, "prices": {"USD": 5000}}]})).await;
        stock(&shop, &sku, 5).await;
        picture(&shop, other["id"].as_str().unwrap(), i * 40, Some("The product, from the front")).await;
    }
    pictured(&shop, "harbour").await;
    for _ in 0..100 {
        let (_, found) = shop.send("GET", &format!("/api/v1/search?category={}", cat["id"].as_str().unwrap()), &Default::default(), None).await;
        if found["total"].as_u64() == Some(7) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = shop.serve().await;
    let phone = driver.session(390, 844).await;

    phone.goto(&format!("{base}/categories/hoodies")).await;
    phone.wait_title("Hoodies").await;
    phone.screenshot("catalog-phone-category").await;
    let (top, bottom, height) = place(&phone, "li.card").await;
    assert!(top >= 0.0 && bottom <= height, "the first product is on the first screen: {top}–{bottom} of {height}");
    let filters = phone.execute("return document.querySelector('.filters details').open;", json!([])).await;
    assert_eq!(filters, json!(false), "the filters are folded away");
    let picture_loaded = phone.execute("const i = document.querySelector('li.card img'); return i.complete && i.naturalWidth;", json!([])).await;
    assert!(picture_loaded.as_u64().unwrap_or(0) > 0, "the card's picture loads: {picture_loaded}");

    phone.goto(&format!("{base}/products/harbour-hoodie")).await;
    phone.wait_title("Harbour Hoodie").await;
    phone.screenshot("catalog-phone-product").await;
    let (top, bottom, height) = place(&phone, "form.add button[type=submit]").await;
    assert!(top >= 0.0 && bottom <= height, "Add to cart is on the first screen: {top}–{bottom} of {height}");
    let notify = phone.execute("const d = document.querySelector('details.notify'); return d ? d.open : null;", json!([])).await;
    assert_eq!(notify, json!(false), "notify-me for the sold-out size is folded, below the buy button");
    phone.quit().await;

    // On a wide screen the filters stand open beside the products.
    let desktop = driver.session(1280, 900).await;
    desktop.goto(&format!("{base}/categories/hoodies")).await;
    desktop.wait_title("Hoodies").await;
    desktop.screenshot("catalog-desktop-category").await;
    let (top, bottom, _) = place(&desktop, ".filters li a").await;
    assert!(bottom > top, "a filter link is shown: {top}–{bottom}");
    desktop.quit().await;
}

#[tokio::test]
async fn in_a_browser_a_product_whose_first_size_is_sold_out_goes_into_the_cart() {
    let Some(driver) = Driver::start().await else { return };
    let shop = storefront().await;
    hoodie(&shop, json!([])).await;
    let base = shop.serve().await;
    let window = driver.session(1280, 900).await;
    window.goto(&format!("{base}/products/harbour-hoodie")).await;
    window.wait_title("Harbour Hoodie").await;
    window.screenshot("desktop-product-first-size-sold-out").await;
    // Straight to the button: the size chosen when the page opened is sent.
    window.click("form.add button[type=submit]").await;
    window.wait_title("Your cart").await;
    assert!(window.url().await.starts_with(&format!("{base}/cart")), "{}", window.url().await);
    let cart = window.wait_text("main", "Harbour Hoodie").await;
    assert!(!cart.contains("deserialize") && !cart.contains("Your cart is empty"), "{cart}");
    window.screenshot("desktop-cart-after-first-size-sold-out").await;
    window.quit().await;
}
