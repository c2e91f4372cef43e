//! Search through the routes of a shop (auth, catalog and search in one
//! process), fed by the catalog's events.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use kernel::auth::Role;
use platform::app::App;
use platform::testing::Sandbox;
use serde_json::{Value, json};

struct Shop {
    _sandbox: Sandbox,
    app: App,
    staff: String,
}

impl Shop {
    async fn new() -> Shop {
        let sandbox = Sandbox::new().await;
        let mut config = (*sandbox.config()).clone();
        config.services = vec!["auth".into(), "catalog".into(), "search".into()];
        config.public_url = Some("http://shop.test".into());
        let config = Arc::new(config);
        let app = emporium::start(config.clone(), axum::Router::new(), false).await.unwrap();
        let staff = support::signed_in(&app, &config, "cm@example.com", Role::Admin).await;
        Shop { _sandbox: sandbox, app, staff }
    }

    async fn send(&self, method: &str, path: &str, staff: bool, body: Option<Value>) -> (StatusCode, Value) {
        let headers: Vec<(&str, String)> = if staff { vec![("authorization", format!("Bearer {}", self.staff))] } else { Vec::new() };
        let (status, _, body) = support::call(&self.app, method, path, &headers, body).await;
        (status, body)
    }

    async fn category(&self, name: &str, parent: Option<&str>) -> String {
        let (s, c) = self.send("POST", "/api/v1/admin/categories", true, Some(json!({"name": name, "parent_id": parent}))).await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        c["id"].as_str().unwrap().to_owned()
    }

    async fn product(&self, body: Value, stock: i64) -> String {
        let (s, p) = self.send("POST", "/api/v1/admin/products", true, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let sku = p["variants"][0]["sku"].as_str().unwrap().to_owned();
        self.send("PUT", &format!("/api/v1/admin/inventory/{sku}"), true, Some(json!({"on_hand": stock}))).await;
        p["id"].as_str().unwrap().to_owned()
    }

    async fn search(&self, query: &str) -> Value {
        let (s, body) = self.send("GET", &format!("/api/v1/search?{query}"), false, None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body
    }

    fn titles(body: &Value) -> Vec<String> {
        body["data"].as_array().unwrap().iter().map(|h| h["title"].as_str().unwrap().to_owned()).collect()
    }

    /// Waits (at most `within`) until `query`'s first title is `first`.
    async fn until_first(&self, query: &str, first: Option<&str>, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let body = self.search(query).await;
            let top = body["data"][0]["title"].as_str().map(str::to_owned);
            if top.as_deref() == first || start.elapsed() > within {
                assert_eq!(top.as_deref(), first, "{query} after {:?}: {body}", start.elapsed());
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn item(title: &str, sku: &str, brand: &str, price: i64, categories: &[&str], color: &str) -> Value {
    json!({"title": title, "brand": brand, "status": "active", "categories": categories,
           "attributes": {"color": color}, "tags": ["new"],
           "description": format!("The {title}, made to last. Machine washable."),
           "variants": [{"sku": sku, "prices": {"USD": price}}]})
}

async fn stocked_shop() -> (Shop, String, String) {
    let shop = Shop::new().await;
    let clothing = shop.category("Clothing", None).await;
    let shirts = shop.category("T-Shirts", Some(&clothing)).await;
    let shoes = shop.category("Shoes", None).await;
    shop.product(item("Running Shoes", "RUN-0001", "Swift", 8900, &[&shoes], "blue"), 5).await;
    shop.product(item("Trail Running Shoes", "RUN-0002", "Swift", 12900, &[&shoes], "green"), 0).await;
    shop.product(item("Organic Cotton T-Shirts", "TSH-0042", "Northwind", 2500, &[&shirts], "white"), 10).await;
    shop.product(item("Striped T-Shirts", "TSH-0043", "Northwind", 2900, &[&shirts], "blue"), 3).await;
    shop.product(item("Rain Jacket", "JKT-0100", "Drizzle", 15900, &[&clothing], "yellow"), 2).await;
    shop.until_first("q=rain", Some("Rain Jacket"), Duration::from_secs(5)).await;
    // Stock reaches the index a moment after the products (gathered, then
    // applied together); the last product's stock comes with all before it.
    shop.until_first("q=rain&in_stock=true", Some("Rain Jacket"), Duration::from_secs(5)).await;
    (shop, clothing, shirts)
}

#[tokio::test]
async fn typing_badly_still_finds_the_product() {
    let (shop, _, _) = stocked_shop().await;
    // (query, what must lead the results, how many results)
    let shirts = ["Organic Cotton T-Shirts", "Striped T-Shirts"];
    for (query, lead, total) in [
        ("q=runing%20shoes", &["Running Shoes", "Trail Running Shoes"][..], 2),
        ("q=tshirt", &shirts[..], 2),
        ("q=jackte", &["Rain Jacket"][..], 1),
        ("q=shirt", &shirts[..], 2),
        ("q=TSH-00", &shirts[..], 2),
        ("q=TSH-0043", &["Striped T-Shirts"][..], 1),
        ("q=rai", &["Rain Jacket"][..], 1),
        ("q=northwind%20striped", &["Striped T-Shirts"][..], 1),
    ] {
        let body = shop.search(query).await;
        let mut titles = Shop::titles(&body);
        assert_eq!(titles.len(), total, "{query}: {body}");
        titles.truncate(lead.len());
        titles.sort();
        assert_eq!(titles, lead, "{query}: {body}");
    }
    let exact = shop.search("q=running").await;
    assert_eq!(Shop::titles(&exact)[..2], ["Running Shoes", "Trail Running Shoes"], "shorter titles with the exact word first");
    let body = shop.search("q=shoes").await;
    assert!(body["data"][0]["snippet"].as_str().unwrap().contains("<b>"), "{body}");

    let none = shop.search("q=jakcets").await;
    assert_eq!(none["total"], 0, "two edits are too many for seven letters");
    assert_eq!(none["did_you_mean"], "jacket");
    let (_, missing) = shop.send("GET", "/api/v1/admin/search/no-results", true, None).await;
    let counted = missing["data"].as_array().unwrap().iter().find(|m| m["query"] == "jakcets").cloned();
    assert_eq!(counted.map(|m| m["searches"].clone()), Some(json!(1)), "{missing}");

    let (_, suggest) = shop.send("GET", "/api/v1/search/suggest?q=run", false, None).await;
    let texts: Vec<&str> = suggest["data"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap()).collect();
    assert!(texts.contains(&"Running Shoes"), "{suggest}");
    let (_, suggest) = shop.send("GET", "/api/v1/search/suggest?q=t-sh", false, None).await;
    assert!(suggest["data"].as_array().unwrap().iter().any(|s| s["kind"] == "category" && s["text"] == "T-Shirts"), "{suggest}");
}

#[tokio::test]
async fn filters_combine_and_facets_count_the_filtered_result() {
    let (shop, clothing, shirts) = stocked_shop().await;
    let all = shop.search(&format!("category={clothing}&facets=color")).await;
    assert_eq!(all["total"], 3, "sub-categories count: {all}");
    let brands = all["facets"]["brand"].as_array().unwrap();
    assert_eq!(brands[0], json!({"value": "Northwind", "count": 2}));
    let colors = &all["facets"]["attributes"]["color"];
    let total: u64 = colors.as_array().unwrap().iter().map(|c| c["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 3, "{colors}");
    let bands = all["facets"]["price"].as_array().unwrap();
    assert_eq!(bands.iter().map(|b| b["count"].as_u64().unwrap()).sum::<u64>(), 3);
    assert_eq!(bands[1]["count"], 2, "25.00–50.00 holds both shirts: {bands:?}");

    let filtered = shop.search(&format!("category={shirts}&brand=northwind&min_price=2600&max_price=5000&attributes=color:blue")).await;
    assert_eq!(Shop::titles(&filtered), ["Striped T-Shirts"]);
    let in_stock = shop.search("q=running&in_stock=true").await;
    assert_eq!(Shop::titles(&in_stock), ["Running Shoes"]);
    let cheap_first = shop.search("sort=price_asc&limit=2").await;
    assert_eq!(Shop::titles(&cheap_first), ["Organic Cotton T-Shirts", "Striped T-Shirts"]);
    assert_eq!(cheap_first["has_more"], true);
    let cursor = cheap_first["next_cursor"].as_str().unwrap();
    let next = shop.search(&format!("sort=price_asc&limit=2&starting_after={cursor}")).await;
    assert_eq!(Shop::titles(&next), ["Running Shoes", "Trail Running Shoes"]);
    let (status, err) = shop.send("GET", "/api/v1/search?sort=cheapest", false, None).await;
    assert_eq!((status, err["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("sort")));
}

#[tokio::test]
async fn catalog_changes_reach_search_through_events_within_a_second() {
    let (shop, _, _) = stocked_shop().await;
    let jacket = shop.search("q=rain").await["data"][0]["id"].as_str().unwrap().to_owned();
    let (s, _) = shop.send("PATCH", &format!("/api/v1/admin/products/{jacket}"), true, Some(json!({"title": "Storm Parka", "description": "Keeps the weather out."}))).await;
    assert_eq!(s, StatusCode::OK);
    shop.until_first("q=parka", Some("Storm Parka"), Duration::from_secs(1)).await;
    shop.until_first("q=rain%20jacket", None, Duration::from_secs(1)).await;
    shop.send("PATCH", &format!("/api/v1/admin/products/{jacket}"), true, Some(json!({"status": "archived"}))).await;
    shop.until_first("q=parka", None, Duration::from_secs(1)).await;

    let trail = shop.search("q=trail").await["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(shop.search("q=trail&in_stock=true").await["total"], 0);
    shop.send("PUT", "/api/v1/admin/inventory/RUN-0002", true, Some(json!({"on_hand": 4}))).await;
    shop.until_first("q=trail&in_stock=true", Some("Trail Running Shoes"), Duration::from_secs(1)).await;
    let (s, _) = shop.send("DELETE", &format!("/api/v1/admin/products/{trail}"), true, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    shop.until_first("q=trail", None, Duration::from_secs(1)).await;

    // Synonyms apply to the next search.
    assert_eq!(shop.search("q=tee").await["total"], 0);
    let (s, _) = shop.send("PUT", "/api/v1/admin/search/synonyms", true, Some(json!({"groups": [["tee", "t-shirt"]]}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shop.search("q=tee").await["total"], 2);
    let (s, _) = shop.send("PUT", "/api/v1/admin/search/synonyms", true, Some(json!({"groups": [["lonely"]]}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_rebuild_swaps_in_while_search_keeps_answering() {
    let (shop, _, _) = stocked_shop().await;
    let shop = Arc::new(shop);
    let searching = {
        let shop = shop.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            for _ in 0..50 {
                let body = shop.search("q=shoes").await;
                assert_eq!(body["total"], 2, "never empty during the rebuild: {body}");
                answered += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            answered
        })
    };
    let (s, _) = shop.send("POST", "/api/v1/admin/search/reindex", true, None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(searching.await.unwrap(), 50);
    shop.until_first("q=jacket", Some("Rain Jacket"), Duration::from_secs(5)).await;
}

fn paid(order: &str, user: &str, products: &[&str]) -> kernel::Envelope {
    let lines: Vec<Value> = products.iter().map(|p| json!({"product_id": p, "sku": "X", "quantity": 1})).collect();
    kernel::Envelope::new("order.paid", order, json!({"order_id": order, "user_id": user, "lines": lines}))
}

#[tokio::test]
async fn recommendations_follow_purchases_views_and_stock() {
    let shop = Shop::new().await;
    let clothing = shop.category("Clothing", None).await;
    let shirt = shop.product(item("Linen Shirt", "LIN-1", "Northwind", 4000, &[&clothing], "white"), 10).await;
    let shorts = shop.product(item("Linen Shorts", "LIN-2", "Northwind", 3500, &[&clothing], "white"), 10).await;
    let belt = shop.product(item("Leather Belt", "BLT-1", "Hide", 2500, &[&clothing], "brown"), 10).await;
    let bag = shop.product(item("Canvas Bag", "BAG-1", "Carry", 1500, &[], "beige"), 10).await;
    let gone = shop.product(item("Linen Scarf", "LIN-3", "Northwind", 1800, &[&clothing], "white"), 0).await;
    shop.until_first("q=scarf", Some("Linen Scarf"), Duration::from_secs(5)).await;

    // Shirts go with shorts; the bag is a best-seller bought with everything.
    // One customer per order, but alice's.
    let mut n = 0;
    let mut order = |products: &[&str], user: &str| {
        n += 1;
        let buyer = if user == "usr_other" { format!("usr_buyer{n:03}") } else { user.to_owned() };
        paid(&format!("ord_test{n:04}"), &buyer, products)
    };
    let mut events = Vec::new();
    for _ in 0..6 {
        events.push(order(&[&shirt, &shorts], "usr_other"));
    }
    events.push(order(&[&shirt, &belt], "usr_other"));
    events.push(order(&[&shirt, &bag], "usr_other"));
    events.push(order(&[&shirt, &gone], "usr_other"));
    for _ in 0..20 {
        events.push(order(&[&bag], "usr_other"));
    }
    events.push(order(&[&shirt], "usr_alice"));
    for e in &events {
        shop.app.bus().publish(e).await.unwrap();
    }
    // Redelivered: counted once.
    for e in &events[..3] {
        shop.app.bus().publish(e).await.unwrap();
    }
    let path = format!("/api/v1/products/{shirt}/recommendations?kind=also_bought");
    let start = Instant::now();
    let mut body = Value::Null;
    while start.elapsed() < Duration::from_secs(10) {
        body = shop.send("GET", &path, false, None).await.1;
        // Every order counted (on JetStream they arrive a little later).
        let counted = body["data"][0]["score"].as_f64().is_some_and(|s| (s - 6.0 / 60f64.sqrt()).abs() < 1e-4);
        if counted && shop.send("GET", "/api/v1/recommendations/trending", false, None).await.1["data"][0]["id"] == bag.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids[0], shorts.as_str(), "bought together most, relative to how often each sells: {body}");
    assert!(!ids.contains(&gone.as_str()), "out of stock is left out");
    let bag_score = body["data"].as_array().unwrap().iter().find(|h| h["id"] == bag.as_str()).map(|h| h["score"].as_f64().unwrap());
    let belt_score = body["data"].as_array().unwrap().iter().find(|h| h["id"] == belt.as_str()).map(|h| h["score"].as_f64().unwrap());
    assert!(belt_score > bag_score, "the best-seller does not lead just for selling: {body}");
    // The shirt has 10 buyers (alice one of them), the shorts 6, both 6.
    let expected = 6.0 / (10.0f64 * 6.0).sqrt();
    let shorts_score = body["data"][0]["score"].as_f64().unwrap();
    assert!((shorts_score - expected).abs() < 1e-4, "redelivered orders are counted once: {shorts_score} vs {expected}");

    let (_, similar) = shop.send("GET", &format!("/api/v1/products/{shirt}/recommendations?kind=similar"), false, None).await;
    assert_eq!(similar["data"][0]["id"], shorts.as_str(), "same category, brand and words: {similar}");
    assert!(similar["data"].as_array().unwrap().iter().all(|h| h["id"] != shirt.as_str() && h["id"] != gone.as_str()));
    let (status, _) = shop.send("GET", &format!("/api/v1/products/{shirt}/recommendations?kind=random"), false, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A new customer gets what is trending; one with a history gets what goes with it.
    let (_, fresh) = shop.send("GET", "/api/v1/me/recommendations", true, None).await;
    assert_eq!(fresh["data"][0]["id"], bag.as_str(), "{fresh}");
    let (status, _) = shop.send("POST", "/api/v1/events/view", true, Some(json!({"product_id": shorts}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = shop.send("POST", "/api/v1/events/view", false, Some(json!({"product_id": "nope"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let start = Instant::now();
    let mut mine = Value::Null;
    while start.elapsed() < Duration::from_secs(5) {
        mine = shop.send("GET", "/api/v1/me/recommendations", true, None).await.1;
        if mine["data"][0]["id"] == shirt.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mine["data"][0]["id"], shirt.as_str(), "viewing shorts suggests the shirt bought with them: {mine}");
    let (status, rebuilt) = shop.send("POST", "/api/v1/admin/search/recommendations/rebuild", true, None).await;
    assert_eq!((status, rebuilt["orders"].as_u64()), (StatusCode::OK, Some(30)));
    let again = shop.send("GET", &path, false, None).await.1;
    assert!((again["data"][0]["score"].as_f64().unwrap() - expected).abs() < 1e-4, "a rebuild counts the same: {again}");
}
