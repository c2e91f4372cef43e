//! The storefront's pages, rendered from the API's answers: home, search
//! with a typo and facets, category, product (stock states, JSON-LD,
//! escaping), robots.txt and the sitemap, with the security headers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::Shop;
use tower::ServiceExt;

async fn page(shop: &Shop, path: &str) -> (StatusCode, HeaderMap, String) {
    let request = Request::builder().uri(path).body(Body::empty()).unwrap();
    let response = shop.app.router().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html.find(start).unwrap_or_else(|| panic!("no {start} in {html}")) + start.len();
    &html[from..from + html[from..].find(end).unwrap()]
}

async fn storefront() -> Shop {
    Shop::with(|c| c.services.extend(["search".to_owned()])).await
}

async fn create(shop: &Shop, body: Value) -> Value {
    let (s, p) = shop.send("POST", "/api/v1/admin/products", &shop.as_staff(), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    p
}

async fn stock(shop: &Shop, sku: &str, on_hand: i64) {
    let (s, _) = shop.send("PUT", &format!("/api/v1/admin/inventory/{sku}"), &shop.as_staff(), Some(json!({"on_hand": on_hand}))).await;
    assert_eq!(s, StatusCode::OK);
}

/// Waits until the search finds `q` (the index follows catalog events).
async fn searchable(shop: &Shop, q: &str) {
    for _ in 0..100 {
        let (_, body) = shop.send("GET", &format!("/api/v1/search?q={q}"), &Default::default(), None).await;
        if body["total"].as_u64().unwrap_or(0) > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{q} never became searchable");
}

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
    assert!(found.contains("79.00 USD"), "the lowest price is shown: {found}");
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
    assert!(product.contains("Brass</span> <span class=\"price\">89.00 USD</span> <span class=\"stock\">Only 3 left</span>"), "{product}");
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
