//! Items 13 (the catalog half), 16, 17, 18 and 19: what an outsider or a
//! customer could do through the catalog and the checkout.

use axum::http::StatusCode;
use serde_json::json;

use super::support::Shop;

use super::support::pages::as_staff_raw as raw;

/// The public catalog cache's weight now, in bytes.
fn catalog_cache_bytes(shop: &Shop) -> u64 {
    let inventory = shop.app.ports().get::<catalog::Inventory>().unwrap();
    inventory.cache.as_ref().unwrap().weighted_size()
}

#[tokio::test]
async fn item_13_junk_query_parameters_are_refused_and_the_catalog_cache_stays_within_its_budget() {
    let budget = 64 * 1024;
    let shop = Shop::with(|c| c.catalog.cache_max_bytes = budget).await;
    shop.product("JUNK-1", 1500, 3).await;
    let anyone = Default::default();

    // Junk parameters are refused in the error shape and never remembered.
    for i in 0..2000 {
        let path = if i % 2 == 0 { format!("/api/v1/products?junk{i}=x") } else { format!("/api/v1/categories?v={i}") };
        let (status, body) = shop.send("GET", &path, &anyone, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    }
    assert_eq!(catalog_cache_bytes(&shop), 0);

    // The same question in another order is one entry. (The catalog's own
    // events about the new product may still make it forget at first.)
    let mut one = 0;
    for _ in 0..100 {
        let (status, _) = shop.send("GET", "/api/v1/products?sort=title&limit=5", &anyone, None).await;
        assert_eq!(status, StatusCode::OK);
        one = catalog_cache_bytes(&shop);
        if one > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(one > 0);
    let (status, _) = shop.send("GET", "/api/v1/products?limit=5&sort=title", &anyone, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(catalog_cache_bytes(&shop), one);

    // Distinct valid questions are remembered only up to the budget.
    // (A late catalog event may make it forget everything once on the way,
    // so the most it held is what is measured, after every answer.)
    let long = "b".repeat(200);
    let mut most = 0;
    for i in 0..1000 {
        let (status, body) = shop.send("GET", &format!("/api/v1/products?brand={long}{i}"), &anyone, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let weight = catalog_cache_bytes(&shop);
        assert!(weight <= budget, "{weight} of {budget} after {i} questions");
        most = most.max(weight);
    }
    assert!(most > budget / 2, "it filled to {most} of {budget}");
    // The shop still answers, from the cache or not.
    let (status, body) = shop.send("GET", "/api/v1/products", &anyone, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["title"], json!("Product JUNK-1"));
}

#[tokio::test]
async fn item_13_the_staff_product_list_takes_its_own_and_the_public_parameters_and_no_others() {
    let shop = Shop::new().await;
    shop.product("LOW-1", 1500, 1).await;
    shop.product("PLENTY-1", 1500, 500).await;
    let staff = shop.as_staff();
    let (status, body) = shop.send("GET", "/api/v1/admin/products?status=active&low_stock=true&sort=title&limit=10", &staff, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let titles: Vec<&str> = body["data"].as_array().unwrap().iter().map(|p| p["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Product LOW-1"]);
    let (status, body) = shop.send("GET", "/api/v1/admin/products?q=plenty", &staff, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"][0]["title"], "Product PLENTY-1");
    for junk in ["junk=1", "q=a&junk=1", "low_stock=perhaps"] {
        let (status, body) = shop.send("GET", &format!("/api/v1/admin/products?{junk}"), &staff, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{junk}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    }
}

#[tokio::test]
async fn item_16_the_csv_export_writes_formulas_as_text_and_numbers_as_numbers() {
    let shop = Shop::new().await;
    let title = r#"=HYPERLINK("http://x","y")"#;
    let (s, p) = shop.send("POST", "/api/v1/admin/products", &shop.as_staff(), Some(json!({
        "title": title, "brand": "@vendor", "tags": ["-sale"], "status": "active",
        "variants": [{"sku": "CSV-1", "prices": {"USD": 1999}, "weight_grams": 400}]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap().to_owned();

    let (status, csv) = raw(&shop, "GET", "/api/v1/admin/products/export", "text/plain", Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    let row = csv.lines().nth(1).unwrap();
    assert!(row.contains(r#""'=HYPERLINK(""http://x"",""y"")""#), "{row}");
    assert!(row.contains(",'@vendor,"), "{row}");
    assert!(row.contains(",'-sale,"), "{row}");
    assert!(!row.contains(",=") && !row.contains(",\"="), "{row}");
    // Numbers stay numbers: the price and the weight are not guarded.
    assert!(row.contains(",19.99,"), "{row}");
    assert!(row.contains(",400,"), "{row}");

    // Importing the export gives the same product back, formula-looking title and all.
    let (status, report) = raw(&shop, "POST", "/api/v1/admin/products/import", "text/csv", csv.into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let (_, p) = shop.send("GET", &format!("/api/v1/admin/products/{id}"), &shop.as_staff(), None).await;
    assert_eq!(p["title"], json!(title), "{report}");
    assert_eq!(p["brand"], json!("@vendor"));
    assert_eq!(p["tags"], json!(["-sale"]));
}

#[tokio::test]
async fn item_16_a_long_run_of_quotes_before_a_formula_exports_and_imports_without_crashing() {
    let shop = Shop::new().await;
    let quoted = format!("{}=1", "'".repeat(100_000));
    let (s, p) = shop.send("POST", "/api/v1/admin/products", &shop.as_staff(), Some(json!({
        "title": "Quotes", "description": quoted, "status": "active",
        "variants": [{"sku": "QUOTES-1", "prices": {"USD": 500}}]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap().to_owned();

    let (status, csv) = raw(&shop, "GET", "/api/v1/admin/products/export", "text/plain", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(csv.contains(&format!("'{quoted}")), "the cell is guarded once more");
    let (status, report) = raw(&shop, "POST", "/api/v1/admin/products/import", "text/csv", csv.into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let (_, p) = shop.send("GET", &format!("/api/v1/admin/products/{id}"), &shop.as_staff(), None).await;
    assert_eq!(p["description"].as_str().map(str::len), Some(quoted.len()), "{report}");
    assert_eq!(p["description"], json!(quoted));

    // A staff member's file with such a title is read (and the title refused as too long), not a crash.
    let file = format!("Handle,Title,Variant SKU,Variant Price\nquotes-2,{quoted},QUOTES-2,5.00\n");
    let (status, report) = raw(&shop, "POST", "/api/v1/admin/products/import", "text/csv", file.into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["products_created"], 0, "{report}");
    assert_eq!(report["errors"][0]["reason"], "1 to 200 characters", "{report}");
}

/// CRC-32 (ISO-HDLC, as PNG chunks use), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    png.extend_from_slice(&body);
    png.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid PNG of a few dozen bytes that declares `width`×`height` RGB pixels
/// (its one IDAT holds a zlib stream of one row's filter byte).
fn declared_png(width: u32, height: u32) -> Vec<u8> {
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, adaptive filters, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    // zlib: header, one stored final block of the byte 0, Adler-32 of it (1).
    chunk(&mut png, b"IDAT", &[0x78, 0x01, 0x01, 0x01, 0x00, 0xFE, 0xFF, 0x00, 0x00, 0x01, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[tokio::test]
async fn item_17_a_picture_declaring_too_many_pixels_is_refused_before_decoding() {
    let shop = Shop::new().await;
    let (s, p) = shop.send("POST", "/api/v1/admin/products", &shop.as_staff(), Some(json!({
        "title": "Poster", "status": "active", "variants": [{"sku": "POSTER-1", "prices": {"USD": 900}}]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let path = format!("/api/v1/admin/products/{}/media", p["id"].as_str().unwrap());
    let boundary = "item17-boundary";
    // 20000×20000 (400 MP, past the side limit too) and 9000×9000 (81 MP,
    // within the side limit: only the pixel count stops it).
    for (w, h) in [(20_000, 20_000), (9_000, 9_000)] {
        let png = declared_png(w, h);
        assert!(png.len() < 100);
        let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n").into_bytes();
        body.extend_from_slice(&png);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let (status, answer) = raw(&shop, "POST", &path, &format!("multipart/form-data; boundary={boundary}"), body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{w}×{h}: {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["error"]["code"], "image_too_large", "{answer}");
        assert_eq!(answer["error"]["field"], "file", "{answer}");
    }
    assert_eq!(shop.count("catalog", "SELECT COUNT(*) FROM product_media").await, 0);
}

#[tokio::test]
async fn item_18_a_shop_started_like_production_takes_no_test_payments() {
    // No --demo, no setting, no Stripe: as `emporium serve` on a real shop.
    let shop = Shop::with(|c| c.orders.test_payments = None).await;
    shop.product("PROD-1", 1500, 3).await;
    let (cart, who) = shop.ready_cart(&[("PROD-1", 1)], None).await;
    let (status, body) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "unknown_provider", "{body}");
    assert_eq!(body["error"]["field"], "payment.provider", "{body}");
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM orders").await, 0);
    assert_eq!(shop.available("PROD-1").await, (3, 0), "nothing held");
}

#[tokio::test]
async fn item_18_the_test_gateway_confirmation_needs_its_csrf_token() {
    let shop = Shop::new().await;
    shop.product("CONF-1", 1500, 3).await;
    let mut pages = Vec::new();
    for _ in 0..2 {
        let (cart, who) = shop.ready_cart(&[("CONF-1", 1)], None).await;
        let (status, order) = shop.checkout(&cart, &who, "tok_requires_action").await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        let url = order["next_action"].as_str().unwrap();
        let path = url.split_once("/test-gateway").map(|(_, p)| format!("/test-gateway{p}")).unwrap();
        let (status, html) = raw(&shop, "GET", &path, "text/plain", Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        pages.push((order["id"].as_str().unwrap().to_owned(), path, csrf));
    }
    let form = "application/x-www-form-urlencoded";
    let (id, path, csrf) = &pages[0];
    let approve = format!("{path}&action=approve");
    // A cross-site form: no token, a forged one, another payment's.
    for body in [String::new(), "csrf=00".to_owned(), format!("csrf={}", pages[1].2)] {
        let (status, answer) = raw(&shop, "POST", &approve, form, body.clone().into_bytes()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}: {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["error"]["code"], "csrf_failed");
    }
    let (_, order) = shop.send("GET", &format!("/api/v1/admin/orders/{id}"), &shop.as_staff(), None).await;
    assert_eq!(order["status"], "pending_payment", "{order}");
    // The page's own form goes through.
    let (status, answer) = raw(&shop, "POST", &approve, form, format!("csrf={csrf}").into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, order) = shop.send("GET", &format!("/api/v1/admin/orders/{id}"), &shop.as_staff(), None).await;
    assert_eq!(order["status"], "paid", "{order}");
}

#[tokio::test]
async fn item_19_a_once_per_customer_code_is_once_per_mailbox() {
    let shop = Shop::new().await;
    shop.product("ONCE-1", 2000, 10).await;
    let (s, code) = shop.send("POST", "/api/v1/admin/discounts", &shop.as_staff(), Some(json!({
        "code": "WELCOME1", "kind": "fixed", "amount_off": 300, "currency": "USD", "per_customer_limit": 1}))).await;
    assert_eq!(s, StatusCode::CREATED, "{code}");
    let mut outcomes = Vec::new();
    for email in ["ada@example.com", "Ada+1@Example.com", "ADA+shop@example.com", "bob@example.com"] {
        let (cart, who) = shop.ready_cart(&[("ONCE-1", 1)], None).await;
        let (s, body) = shop.send("PUT", &format!("/api/v1/carts/{cart}/email"), &who, Some(json!({"email": email}))).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let (s, body) = shop.send("POST", &format!("/api/v1/carts/{cart}/discounts"), &who, Some(json!({"code": "welcome1"}))).await;
        assert!(s.is_success(), "{body}");
        let (status, body) = shop.checkout(&cart, &who, "tok_visa").await;
        outcomes.push((email, status, body["error"]["code"].as_str().map(str::to_owned)));
    }
    let refused = Some("discount_limit_reached".to_owned());
    assert_eq!(outcomes, [
        ("ada@example.com", StatusCode::CREATED, None),
        ("Ada+1@Example.com", StatusCode::CONFLICT, refused.clone()),
        ("ADA+shop@example.com", StatusCode::CONFLICT, refused),
        ("bob@example.com", StatusCode::CREATED, None),
    ]);
}

#[tokio::test]
async fn item_19_a_once_per_customer_code_is_once_per_mailbox_and_once_per_account() {
    let shop = Shop::new().await;
    shop.product("ONCE-2", 2000, 20).await;
    for code in ["GUESTFIRST", "ACCOUNTFIRST"] {
        let (s, body) = shop.send("POST", "/api/v1/admin/discounts", &shop.as_staff(), Some(json!({
            "code": code, "kind": "fixed", "amount_off": 300, "currency": "USD", "per_customer_limit": 1}))).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    let ada = super::support::Who { token: Some(shop.user("Ada+2@example.com", kernel::auth::Role::Customer).await), ..Default::default() };
    let grace = super::support::Who { token: Some(shop.user("grace@example.com", kernel::auth::Role::Customer).await), ..Default::default() };
    let order = |who: Option<super::support::Who>, email: &'static str, code: &'static str| {
        let shop = &shop;
        async move {
            let (cart, who) = shop.ready_cart(&[("ONCE-2", 1)], who.as_ref()).await;
            let (s, body) = shop.send("PUT", &format!("/api/v1/carts/{cart}/email"), &who, Some(json!({"email": email}))).await;
            assert_eq!(s, StatusCode::OK, "{body}");
            let (s, body) = shop.send("POST", &format!("/api/v1/carts/{cart}/discounts"), &who, Some(json!({"code": code}))).await;
            assert!(s.is_success(), "{body}");
            let (status, body) = shop.checkout(&cart, &who, "tok_visa").await;
            (status, body["error"]["code"].as_str().map(str::to_owned))
        }
    };
    let taken = (StatusCode::CREATED, None);
    let refused = (StatusCode::CONFLICT, Some("discount_limit_reached".to_owned()));

    // A guest's use counts for the account whose address is an alias of that mailbox ...
    assert_eq!(order(None, "ada@example.com", "GUESTFIRST").await, taken);
    assert_eq!(order(Some(ada.clone()), "Ada+2@example.com", "GUESTFIRST").await, refused);
    // ... and an account's use counts for a guest at the same mailbox, and for the account under any address.
    assert_eq!(order(Some(ada.clone()), "Ada+2@example.com", "ACCOUNTFIRST").await, taken);
    assert_eq!(order(None, "ADA@example.com", "ACCOUNTFIRST").await, refused);
    assert_eq!(order(Some(ada), "lovelace@example.com", "ACCOUNTFIRST").await, refused);
    // Another customer still gets it.
    assert_eq!(order(Some(grace), "grace@example.com", "ACCOUNTFIRST").await, taken);
}
