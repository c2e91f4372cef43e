//! Products, stock and reservations through the routes and the port.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use catalog::{CatalogError, Inventory, Line};
use http_body_util::BodyExt;
use kernel::auth::Role;
use platform::app::App;
use platform::{on_db, on_write};
use platform::service::ServiceContext;
use platform::testing::Sandbox;
use serde_json::{Value, json};
use tower::ServiceExt;

struct TestApp {
    _sandbox: Sandbox,
    app: App,
    config: Arc<kernel::config::Config>,
}

const SERVICE_TOKEN: &str = "a-service-token-of-at-least-32-characters";

/// The shop's public address: a process without every role must be given it.
const PUBLIC_URL: &str = "http://shop.test";

/// A process of the catalog alone, as a split shop runs it: auth elsewhere
/// (at an address nothing answers: these tests present no token, so the
/// keys are never fetched).
fn catalog_alone(config: &mut kernel::config::Config) {
    config.services = vec!["catalog".into()];
    config.public_url = Some(PUBLIC_URL.into());
    config.auth.url = Some("http://127.0.0.1:9".into());
}

impl TestApp {
    async fn new() -> TestApp {
        TestApp::with(|_| {}).await
    }

    async fn with(change: impl FnOnce(&mut kernel::config::Config)) -> TestApp {
        let sandbox = Sandbox::new().await;
        let mut config = (*sandbox.config()).clone();
        change(&mut config);
        config.services = vec!["auth".into(), "catalog".into()];
        config.public_url = Some(PUBLIC_URL.into());
        config.catalog.service_token = Some(SERVICE_TOKEN.into());
        let config = Arc::new(config);
        let app = App::start(config.clone(), &[auth::spec(), catalog::spec()], axum::Router::new(), false).await.unwrap();
        TestApp { _sandbox: sandbox, app, config }
    }

    async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let r = match body {
            Some(b) => r.header("content-type", "application/json").body(Body::from(b.to_string())),
            None => r.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.router().oneshot(r).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn user(&self, email: &str, role: Role) -> String {
        let ctx = ServiceContext {
            name: "auth",
            db: self.app.db("auth").unwrap().clone(),
            bus: self.app.bus().clone(),
            config: self.config.clone(),
            shutdown: Default::default(),
            ports: Default::default(),
        };
        let auth = auth::open(&ctx).unwrap();
        auth::admin::create_user(&auth, email, "Person", "a long passphrase", &[role]).await.unwrap();
        let (_, body) = self.send("POST", "/api/v1/auth/login", None, Some(json!({"email": email, "password": "a long passphrase"}))).await;
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// The running service's reservation port, as checkout finds it.
    fn inventory(&self) -> Inventory {
        (*self.app.ports().get::<Inventory>().unwrap()).clone()
    }

    /// The data of the newest event of `event_type` in the outbox.
    async fn last_event(&self, event_type: &str) -> Value {
        let db = self.app.db("catalog").unwrap();
        let payload: String = on_db!(db, pool => sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = $1 ORDER BY id DESC LIMIT 1")
            .bind(event_type).fetch_one(pool).await).unwrap();
        serde_json::from_str::<Value>(&payload).unwrap()["data"].clone()
    }

    async fn events(&self, event_type: &str) -> i64 {
        let db = self.app.db("catalog").unwrap();
        on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE event_type = $1")
            .bind(event_type).fetch_one(pool).await).unwrap()
    }
}

fn tee(sku: &str) -> Value {
    json!({"title": "Organic Cotton Tee", "brand": "Northwind", "tags": ["Shirts", "organic"], "status": "active",
           "variants": [{"sku": sku, "title": "M", "prices": {"USD": 2500, "EUR": 2300}, "low_stock_threshold": 3}]})
}

#[tokio::test]
async fn products_are_managed_by_staff_and_shown_when_active() {
    let t = TestApp::new().await;
    let staff = t.user("cm@example.com", Role::CatalogManager).await;
    let customer = t.user("c@example.com", Role::Customer).await;

    assert_eq!(t.send("POST", "/api/v1/admin/products", None, Some(tee("TEE-M"))).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(t.send("POST", "/api/v1/admin/products", Some(&customer), Some(tee("TEE-M"))).await.0, StatusCode::FORBIDDEN);
    let (status, created) = t.send("POST", "/api/v1/admin/products", Some(&staff), Some(tee("tee-m"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["id"].as_str().unwrap().starts_with("prod_"));
    assert_eq!(created["slug"], "organic-cotton-tee");
    assert_eq!(created["tags"], json!(["shirts", "organic"]));
    assert_eq!(created["variants"][0]["sku"], "TEE-M");
    assert_eq!(created["variants"][0]["prices"]["USD"], json!({"amount": 2500, "currency": "USD"}));
    assert_eq!(created["variants"][0]["in_stock"], false);

    let (status, again) = t.send("POST", "/api/v1/admin/products", Some(&staff), Some(tee("TEE-M"))).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("sku_taken")));
    let mut second = tee("TEE-L");
    second["status"] = json!("draft");
    let (_, draft) = t.send("POST", "/api/v1/admin/products", Some(&staff), Some(second)).await;
    assert_eq!(draft["slug"], "organic-cotton-tee-2", "slugs stay unique");

    let mut bad = tee("TEE-X");
    bad["variants"][0]["prices"] = json!({"US": 100});
    let (status, err) = t.send("POST", "/api/v1/admin/products", Some(&staff), Some(bad)).await;
    assert_eq!((status, err["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("variants[0].prices.US")));
    let mut bad = tee("TEE-Y");
    bad["variants"] = json!([]);
    assert_eq!(t.send("POST", "/api/v1/admin/products", Some(&staff), Some(bad)).await.1["error"]["field"], "variants");

    let (_, list) = t.send("GET", "/api/v1/products", None, None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "drafts are not public");
    assert!(list["data"][0]["variants"][0].get("on_hand").is_none(), "stock figures are for staff");
    let draft_id = draft["id"].as_str().unwrap();
    assert_eq!(t.send("GET", &format!("/api/v1/products/{draft_id}"), None, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(t.send("GET", &format!("/api/v1/admin/products/{draft_id}"), Some(&staff), None).await.0, StatusCode::OK);
    let (status, by_slug) = t.send("GET", "/api/v1/products/organic-cotton-tee", None, None).await;
    assert_eq!((status, by_slug["title"].as_str()), (StatusCode::OK, Some("Organic Cotton Tee")));
    assert_eq!(t.send("GET", "/api/v1/products?tag=organic&brand=Northwind", None, None).await.1["data"].as_array().unwrap().len(), 1);
    assert_eq!(t.send("GET", "/api/v1/products?tag=hats", None, None).await.1["data"].as_array().unwrap().len(), 0);

    let (status, live) = t.send("PATCH", &format!("/api/v1/admin/products/{draft_id}"), Some(&staff), Some(json!({"status": "active", "title": "Tee, large"}))).await;
    assert_eq!((status, live["status"].as_str()), (StatusCode::OK, Some("active")));
    let (_, page) = t.send("GET", "/api/v1/products?limit=1&sort=oldest", None, None).await;
    assert_eq!(page["has_more"], true);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = t.send("GET", &format!("/api/v1/products?limit=1&sort=oldest&starting_after={cursor}"), None, None).await;
    assert_eq!(rest["data"][0]["title"], "Tee, large");
    let (status, clash) = t.send("PATCH", &format!("/api/v1/admin/products/{draft_id}"), Some(&staff), Some(json!({"slug": "organic-cotton-tee"}))).await;
    assert_eq!((status, clash["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("slug_taken")));
    assert_eq!(t.events("product.created").await, 2);
}

#[tokio::test]
async fn stock_changes_are_recorded_and_guarded() {
    let t = TestApp::new().await;
    let staff = t.user("inv@example.com", Role::OrderManager).await;
    let cm = t.user("cm@example.com", Role::CatalogManager).await;
    t.send("POST", "/api/v1/admin/products", Some(&cm), Some(tee("MUG-1"))).await;

    let (status, level) = t.send("POST", "/api/v1/admin/inventory/adjustments", Some(&staff), Some(json!({"sku": "mug-1", "delta": 10, "reason": "received"}))).await;
    assert_eq!((status, level["available"].as_i64()), (StatusCode::OK, Some(10)), "{level}");
    assert_eq!(t.events("inventory.back_in_stock").await, 1);
    let (_, product) = t.send("GET", "/api/v1/products/organic-cotton-tee", None, None).await;
    assert_eq!(product["variants"][0]["in_stock"], true);

    t.inventory().reserve("ord_a", &[Line { sku: "MUG-1".into(), quantity: 6 }]).await.unwrap();
    assert_eq!(t.events("inventory.low_stock").await, 0, "4 left, threshold 3");
    let (status, err) = t.send("POST", "/api/v1/admin/inventory/adjustments", Some(&staff), Some(json!({"sku": "MUG-1", "delta": -5, "reason": "damaged"}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("below_reserved")));
    let (status, level) = t.send("PUT", "/api/v1/admin/inventory/MUG-1", Some(&staff), Some(json!({"on_hand": 7}))).await;
    assert_eq!((status, level["available"].as_i64()), (StatusCode::OK, Some(1)));
    assert_eq!(t.events("inventory.low_stock").await, 1, "available fell to the threshold or below");

    let (_, history) = t.send("GET", "/api/v1/admin/inventory/MUG-1/history", Some(&staff), None).await;
    let reasons: Vec<&str> = history["data"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, vec!["stocktake", "received"]);
    assert_eq!(history["data"][0]["delta"], -3);
    let (_, levels) = t.send("GET", "/api/v1/admin/inventory?sku=MUG-1", Some(&staff), None).await;
    assert_eq!(levels[0]["reserved"], 6);

    assert_eq!(t.send("POST", "/api/v1/admin/inventory/adjustments", Some(&cm), Some(json!({"sku": "MUG-1", "delta": 1, "reason": "received"}))).await.0, StatusCode::OK, "catalog managers hold inventory:write");
    let customer = t.user("c@example.com", Role::Customer).await;
    assert_eq!(t.send("GET", "/api/v1/admin/inventory?sku=MUG-1", Some(&customer), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(t.send("GET", "/api/v1/admin/inventory?sku=NOPE", Some(&staff), None).await.0, StatusCode::NOT_FOUND);
    let (status, err) = t.send("POST", "/api/v1/admin/inventory/adjustments", Some(&staff), Some(json!({"sku": "MUG-1", "delta": 1, "reason": "stolen"}))).await;
    assert_eq!((status, err["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("reason")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reservation_storm_never_oversells() {
    let t = TestApp::new().await;
    let cm = t.user("cm@example.com", Role::CatalogManager).await;
    t.send("POST", "/api/v1/admin/products", Some(&cm), Some(tee("LAST-ONE"))).await;
    let inv = t.inventory();
    inv.adjust("LAST-ONE", None, 10, "received", "test").await.unwrap();

    let barrier = Arc::new(tokio::sync::Barrier::new(24));
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (inv, barrier) = (inv.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            inv.reserve(&format!("ord_{i}"), &[Line { sku: "LAST-ONE".into(), quantity: 1 }]).await
        }));
    }
    let mut held = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(_) => held.push(i),
            Err(CatalogError::OutOfStock { available, .. }) => assert_eq!(available, 0),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(held.len(), 10, "exactly the stock was sold");

    // Commit half, release the rest: what was received is accounted for.
    for (n, i) in held.iter().enumerate() {
        if n % 2 == 0 {
            inv.commit(&format!("ord_{i}")).await.unwrap();
            inv.commit(&format!("ord_{i}")).await.unwrap(); // idempotent
        } else {
            inv.release(&format!("ord_{i}")).await.unwrap();
            inv.release(&format!("ord_{i}")).await.unwrap();
        }
    }
    let db = t.app.db("catalog").unwrap();
    let (on_hand, reserved): (i64, i64) = on_db!(db, pool => sqlx::query_as(
        "SELECT on_hand, reserved FROM inventory_levels WHERE sku = 'LAST-ONE'").fetch_one(pool).await).unwrap();
    let sold: i64 = on_db!(db, pool => sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(-delta), 0) AS BIGINT) FROM inventory_ledger WHERE sku = 'LAST-ONE' AND reason = 'sold'").fetch_one(pool).await).unwrap();
    assert_eq!((on_hand, reserved, sold), (5, 0, 5));
    assert_eq!(sold + (on_hand - reserved) + reserved, 10, "committed + available + reserved = received");
    let released = inv.commit(&format!("ord_{}", held[1])).await;
    assert!(matches!(released, Err(CatalogError::ReservationReleased(_))));
}

#[tokio::test]
async fn reservations_are_all_or_nothing_idempotent_and_expire() {
    let t = TestApp::new().await;
    let cm = t.user("cm@example.com", Role::CatalogManager).await;
    t.send("POST", "/api/v1/admin/products", Some(&cm), Some(tee("A-1"))).await;
    let mut other = tee("B-1");
    other["title"] = json!("Other");
    t.send("POST", "/api/v1/admin/products", Some(&cm), Some(other)).await;
    let mut inv = t.inventory();
    inv.adjust("A-1", None, 5, "received", "test").await.unwrap();
    inv.adjust("B-1", None, 1, "received", "test").await.unwrap();

    let lines = [Line { sku: "A-1".into(), quantity: 2 }, Line { sku: "b-1".into(), quantity: 2 }];
    match inv.reserve("ord_x", &lines).await {
        Err(CatalogError::OutOfStock { sku, available }) => assert_eq!((sku.as_str(), available), ("B-1", 1)),
        other => panic!("expected out of stock, got {other:?}"),
    }
    let level = |sku: &'static str| {
        let db = t.app.db("catalog").unwrap().clone();
        async move {
            let r: (i64,) = on_db!(db, pool => sqlx::query_as("SELECT reserved FROM inventory_levels WHERE sku = $1")
                .bind(sku).fetch_one(pool).await).unwrap();
            r.0
        }
    };
    assert_eq!(level("A-1").await, 0, "nothing held when one line fails");

    let lines = [Line { sku: "A-1".into(), quantity: 1 }, Line { sku: "A-1".into(), quantity: 1 }, Line { sku: "B-1".into(), quantity: 1 }];
    let first = inv.reserve("ord_y", &lines).await.unwrap();
    assert_eq!(first.lines, vec![("A-1".to_owned(), 2), ("B-1".to_owned(), 1)]);
    let again = inv.reserve("ord_y", &lines).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(level("A-1").await, 2, "the second call held nothing more");
    assert!(matches!(inv.reserve("ord_z", &[Line { sku: "NOPE".into(), quantity: 1 }]).await, Err(CatalogError::UnknownSku(_))));

    inv.reservation_ttl = std::time::Duration::ZERO;
    inv.reserve("ord_late", &[Line { sku: "A-1".into(), quantity: 3 }]).await.unwrap();
    assert_eq!(level("A-1").await, 5);
    assert_eq!(inv.release_expired().await.unwrap(), 1, "only the expired one");
    assert_eq!(level("A-1").await, 2);
    assert_eq!(inv.reservation("ord_late").await.unwrap().state, "released");
}

#[tokio::test]
async fn categories_filters_and_sorts() {
    let t = TestApp::new().await;
    let cm = t.user("cm@example.com", Role::CatalogManager).await;
    let cat = |body: Value| t.send("POST", "/api/v1/admin/categories", Some(&cm), Some(body));
    let (status, men) = cat(json!({"name": "Men"})).await;
    assert_eq!((status, men["slug"].as_str()), (StatusCode::CREATED, Some("men")));
    let men_id = men["id"].as_str().unwrap().to_owned();
    assert!(men_id.starts_with("cat_"));
    let (_, shirts) = cat(json!({"name": "Shirts", "parent_id": men_id})).await;
    let shirts_id = shirts["id"].as_str().unwrap().to_owned();
    let (_, women) = cat(json!({"name": "Women", "position": 1})).await;
    assert_eq!(cat(json!({"name": "Men"})).await.0, StatusCode::CONFLICT, "slugs are unique");
    assert_eq!(cat(json!({"name": "X", "parent_id": "cat_nope"})).await.1["error"]["field"], "parent_id");

    let (_, tree) = t.send("GET", "/api/v1/categories", None, None).await;
    assert_eq!(tree[0]["slug"], "men");
    assert_eq!(tree[0]["children"][0]["slug"], "shirts");
    assert_eq!(tree[1]["slug"], "women");
    let cycle = t.send("PATCH", &format!("/api/v1/admin/categories/{men_id}"), Some(&cm), Some(json!({"parent_id": shirts_id}))).await;
    assert_eq!(cycle.1["error"]["code"], "category_cycle");
    assert_eq!(t.send("DELETE", &format!("/api/v1/admin/categories/{men_id}"), Some(&cm), None).await.0, StatusCode::CONFLICT);

    let product = |title: &str, sku: &str, usd: i64, cats: Value| {
        json!({"title": title, "status": "active", "categories": cats, "attributes": {"Material": "cotton"},
               "variants": [{"sku": sku, "prices": {"USD": usd}, "compare_at_prices": {"USD": usd + 500}}]})
    };
    let (status, oxford) = t.send("POST", "/api/v1/admin/products", Some(&cm), Some(product("Oxford Shirt", "OX-1", 4500, json!(["shirts"])))).await;
    assert_eq!(status, StatusCode::CREATED, "{oxford}");
    assert_eq!(oxford["categories"][0]["slug"], "shirts");
    assert_eq!(oxford["attributes"]["material"], "cotton");
    assert_eq!(oxford["variants"][0]["compare_at_prices"]["USD"]["amount"], 5000);
    t.send("POST", "/api/v1/admin/products", Some(&cm), Some(product("Belt", "BELT-1", 2000, json!([men_id])))).await;
    t.send("POST", "/api/v1/admin/products", Some(&cm), Some(product("Dress", "DR-1", 9000, json!([women["id"]])))).await;
    let bad = t.send("POST", "/api/v1/admin/products", Some(&cm), Some(product("Hat", "HAT-1", 100, json!(["nope"])))).await;
    assert_eq!(bad.1["error"]["field"], "categories[0]");

    let titles = |v: &Value| -> Vec<String> { v["data"].as_array().unwrap().iter().map(|p| p["title"].as_str().unwrap().to_owned()).collect() };
    let (_, men_all) = t.send("GET", "/api/v1/products?category=men&sort=title", None, None).await;
    assert_eq!(titles(&men_all), vec!["Belt", "Oxford Shirt"], "a category includes its sub-categories");
    let (_, cheap_first) = t.send("GET", "/api/v1/products?sort=price_asc", None, None).await;
    assert_eq!(titles(&cheap_first), vec!["Belt", "Oxford Shirt", "Dress"]);
    let (_, dear_first) = t.send("GET", "/api/v1/products?sort=price_desc&limit=2", None, None).await;
    assert_eq!(titles(&dear_first), vec!["Dress", "Oxford Shirt"]);
    let cursor = dear_first["next_cursor"].as_str().unwrap();
    let (_, rest) = t.send("GET", &format!("/api/v1/products?sort=price_desc&limit=2&starting_after={cursor}"), None, None).await;
    assert_eq!(titles(&rest), vec!["Belt"]);
    let (_, band) = t.send("GET", "/api/v1/products?min_price=3000&max_price=5000&currency=USD", None, None).await;
    assert_eq!(titles(&band), vec!["Oxford Shirt"]);
    let (_, newest) = t.send("GET", "/api/v1/products", None, None).await;
    assert_eq!(titles(&newest), vec!["Dress", "Belt", "Oxford Shirt"]);
    let (_, none_in_stock) = t.send("GET", "/api/v1/products?in_stock=true", None, None).await;
    assert!(titles(&none_in_stock).is_empty());
    t.inventory().adjust("BELT-1", None, 3, "received", "test").await.unwrap();
    let (_, in_stock) = t.send("GET", "/api/v1/products?in_stock=true", None, None).await;
    assert_eq!(titles(&in_stock), vec!["Belt"]);
    assert_eq!(t.send("GET", "/api/v1/products?category=nope", None, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(t.send("GET", "/api/v1/products?currency=usd&min_price=1", None, None).await.0, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, moved) = t.send("PATCH", &format!("/api/v1/admin/products/{}", oxford["id"].as_str().unwrap()), Some(&cm),
        Some(json!({"categories": [women["id"]], "seo_title": "Oxford shirt in organic cotton"}))).await;
    assert_eq!((moved["categories"][0]["slug"].as_str(), moved["seo_title"].as_str()), (Some("women"), Some("Oxford shirt in organic cotton")));
}

#[tokio::test]
async fn public_pages_carry_etags_and_change_when_the_catalog_does() {
    let t = TestApp::new().await;
    let cm = t.user("cm@example.com", Role::CatalogManager).await;
    let (_, created) = t.send("POST", "/api/v1/admin/products", Some(&cm), Some(tee("ET-1"))).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let get = |etag: Option<String>| {
        let mut r = Request::get(format!("/api/v1/products/{id}"));
        if let Some(e) = etag {
            r = r.header("if-none-match", e);
        }
        let router = t.app.router();
        async move { router.oneshot(r.body(Body::empty()).unwrap()).await.unwrap() }
    };
    let first = get(None).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers()["cache-control"].to_str().unwrap().contains("max-age"));
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let again = get(Some(etag.clone())).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);

    // A stock change shows at once (in_stock flips), with a new ETag.
    t.inventory().adjust("ET-1", None, 2, "received", "test").await.unwrap();
    let changed = get(Some(etag.clone())).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    let body: Value = serde_json::from_slice(&changed.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["variants"][0]["in_stock"], true);

    t.send("PATCH", &format!("/api/v1/admin/products/{id}"), Some(&cm), Some(json!({"title": "Renamed Tee"}))).await;
    let (_, fresh) = t.send("GET", &format!("/api/v1/products/{id}"), None, None).await;
    assert_eq!(fresh["title"], "Renamed Tee", "writes invalidate the cache");
}

/// The product's kept view and whether it is current, read from its row.
async fn kept_view(t: &TestApp, id: &str) -> (Option<String>, bool) {
    let db = t.app.db("catalog").unwrap();
    let (view, current): (Option<String>, bool) = on_db!(db, pool => sqlx::query_as(
        "SELECT view, COALESCE(view_revision = revision, FALSE) FROM products WHERE id = $1")
        .bind(id).fetch_one(pool).await).unwrap();
    (view, current)
}

/// The product's kept view once it is current: the reader that drew it
/// keeps it in the background (at most 5 s).
async fn kept_view_current(t: &TestApp, id: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        if let (Some(view), true) = kept_view(t, id).await {
            return view;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "no current view of {id} was kept");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn kept_views_follow_every_change_to_what_they_show() {
    // Without the response cache, every read below comes from the rows.
    let t = TestApp::with(|c| c.catalog.cache = false).await;
    let cm = t.user("cm@example.com", Role::CatalogManager).await;
    let (_, men) = t.send("POST", "/api/v1/admin/categories", Some(&cm), Some(json!({"name": "Men"}))).await;
    let men_id = men["id"].as_str().unwrap().to_owned();
    let mut body = tee("KV-M");
    body["categories"] = json!([men_id]);
    body["options"] = json!([{"name": "Size", "values": ["M", "L"]}]);
    body["variants"][0]["option_values"] = json!(["M"]);
    let (status, created) = t.send("POST", "/api/v1/admin/products", Some(&cm), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let public = format!("/api/v1/products/{id}");
    let get = || async { t.send("GET", &public, None, None).await.1 };

    let first = get().await;
    assert_eq!(first["title"], "Organic Cotton Tee");
    kept_view_current(&t, &id).await;
    assert_eq!(get().await, first, "the kept view answers the same");

    // Each kind of change moves the product on, and the next read shows it.
    t.send("PATCH", &format!("/api/v1/admin/products/{id}"), Some(&cm), Some(json!({"title": "Renamed Tee"}))).await;
    assert!(!kept_view(&t, &id).await.1, "a change makes the kept view stale");
    assert_eq!(get().await["title"], "Renamed Tee");
    let (status, _) = t.send("POST", &format!("/api/v1/admin/products/{id}/variants"), Some(&cm),
        Some(json!({"sku": "KV-L", "option_values": ["L"], "prices": {"USD": 2700}}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(get().await["variants"].as_array().unwrap().len(), 2);
    t.send("POST", "/api/v1/admin/prices/bulk", Some(&cm), Some(json!({"updates": [{"sku": "KV-L", "prices": {"USD": 2100}}]}))).await;
    assert_eq!(get().await["variants"][1]["prices"]["USD"]["amount"], 2100);
    t.send("PATCH", "/api/v1/admin/variants/KV-L", Some(&cm), Some(json!({"barcode": "0123456789012"}))).await;
    assert_eq!(get().await["variants"][1]["barcode"], "0123456789012");
    t.send("PATCH", &format!("/api/v1/admin/categories/{men_id}"), Some(&cm), Some(json!({"name": "Gentlemen"}))).await;
    assert_eq!(get().await["categories"][0]["name"], "Gentlemen", "a category's new name shows on its products");
    let png = catalog::media::placeholder(30, 200).unwrap();
    let (ct, upload) = multipart(&[("file", Some("tee.png"), &png), ("alt", None, b"Folded")]);
    let (status, picture, _) = t.send_raw("POST", &format!("/api/v1/admin/products/{id}/media"), Some(&cm), &ct, upload).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(get().await["media"][0]["alt"], "Folded");
    let picture: Value = serde_json::from_slice(&picture).unwrap();
    let media_path = format!("/api/v1/admin/products/{id}/media/{}", picture["id"].as_str().unwrap());
    t.send("PATCH", &media_path, Some(&cm), Some(json!({"alt": "Unfolded"}))).await;
    assert_eq!(get().await["media"][0]["alt"], "Unfolded");
    t.send("DELETE", &media_path, Some(&cm), None).await;
    assert_eq!(get().await["media"], json!([]));

    // Stock is not kept: it is read beside the view, so it shows at once
    // without drawing the view again.
    kept_view_current(&t, &id).await;
    t.inventory().adjust("KV-M", None, 2, "received", "test").await.unwrap();
    assert!(kept_view(&t, &id).await.1, "stock leaves the kept view current");
    let shown = get().await;
    assert_eq!((shown["variants"][0]["in_stock"].as_bool(), shown["variants"][0]["available"].as_i64()), (Some(true), Some(2)));
    assert!(shown["variants"][0].get("on_hand").is_none() && shown["variants"][0].get("low_stock_threshold").is_none(), "staff figures stay hidden");
    let (_, staff_view) = t.send("GET", &format!("/api/v1/admin/products/{id}"), Some(&cm), None).await;
    assert_eq!((staff_view["variants"][0]["on_hand"].as_i64(), staff_view["variants"][0]["low_stock_threshold"].as_i64()), (Some(2), Some(3)));
    let (_, listed) = t.send("GET", &format!("/api/v1/products?category={men_id}"), None, None).await;
    assert_eq!(listed["data"][0], shown, "a list shows the same view");

    // A view kept under an older revision, or one that does not read, is
    // never served: the product is read again and its view kept anew.
    let db = t.app.db("catalog").unwrap();
    let kept = kept_view_current(&t, &id).await;
    let forged = kept.replace("\"title\":\"Renamed Tee\"", "\"title\":\"Forged\"");
    assert_ne!(forged, kept);
    let keep = |view: String, behind: i64| {
        let db = db.clone();
        let id = id.clone();
        async move {
            on_write!(db, pool => sqlx::query("UPDATE products SET view = $1, view_revision = revision - $2 WHERE id = $3")
                .bind(&view).bind(behind).bind(&id).execute(pool).await.map(|_| ())).unwrap();
        }
    };
    keep(forged.clone(), 0).await;
    assert_eq!(get().await["title"], "Forged", "reads answer the kept view while it is current");
    let (app, product) = (&t, id.as_str());
    let redrawn = |was: String| async move {
        let start = std::time::Instant::now();
        while kept_view(app, product).await.0.as_deref() == Some(was.as_str()) {
            assert!(start.elapsed() < std::time::Duration::from_secs(5), "the view was not kept again");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    keep(forged.clone(), 1).await;
    assert_eq!(get().await, shown);
    redrawn(forged.clone()).await;
    let other_release = forged.replacen("\"drawn_by\":\"", "\"drawn_by\":\"0", 1);
    assert_ne!(other_release, forged);
    keep(other_release.clone(), 0).await;
    assert_eq!(get().await, shown, "a view drawn by another release is drawn again");
    redrawn(other_release).await;
    on_write!(db, pool => sqlx::query("UPDATE products SET view = 'not json', view_revision = revision WHERE id = $1")
        .bind(&id).execute(pool).await.map(|_| ())).unwrap();
    assert_eq!(get().await, shown);
    redrawn("not json".to_owned()).await;
    kept_view_current(&t, &id).await;

    // Drafts stay hidden whatever is kept.
    t.send("PATCH", &format!("/api/v1/admin/products/{id}"), Some(&cm), Some(json!({"status": "draft"}))).await;
    assert_eq!(t.send("GET", &public, None, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(t.send("GET", "/api/v1/products", None, None).await.1["data"], json!([]));
}

#[tokio::test]
async fn the_demo_catalog_loads_once() {
    let sandbox = Sandbox::new().await;
    let mut config = (*sandbox.config()).clone();
    catalog_alone(&mut config);
    let config = Arc::new(config);
    let app = App::start(config.clone(), &[catalog::spec()], axum::Router::new(), true).await.unwrap();
    let db = app.db("catalog").unwrap().clone();
    let count = |db: platform::Db| async move {
        let n: i64 = on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE status = 'active'").fetch_one(pool).await).unwrap();
        n
    };
    assert!(count(db.clone()).await >= 200);
    let (_, tree) = {
        let r = app.router().oneshot(Request::get("/api/v1/categories").body(Body::empty()).unwrap()).await.unwrap();
        (r.status(), serde_json::from_slice::<Value>(&r.into_body().collect().await.unwrap().to_bytes()).unwrap())
    };
    assert_eq!(tree.as_array().unwrap().len(), 4);
    let r = app.router().oneshot(Request::get("/api/v1/products?category=shirts&in_stock=true&sort=price_asc").body(Body::empty()).unwrap()).await.unwrap();
    let page: Value = serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(!page["data"].as_array().unwrap().is_empty());
    // Every demo product has a generated picture, served with thumbnails.
    let shirt = &page["data"][0];
    assert_eq!(shirt["options"][0]["name"], "Size");
    let picture = &shirt["media"][0];
    assert_eq!(picture["alt"], shirt["title"]);
    let r = app.router().oneshot(Request::get(picture["url"].as_str().unwrap()).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let png = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 600);
    let thumb = picture["thumbnails"][0]["url"].as_str().unwrap();
    let r = app.router().oneshot(Request::get(thumb).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sold_out: i64 = on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM inventory_levels WHERE on_hand = 0").fetch_one(pool).await).unwrap();
    assert!(sold_out > 0, "some variants are out of stock, for the storefront to show");
    let before = count(db.clone()).await;
    drop(app);
    let again = App::start(config, &[catalog::spec()], axum::Router::new(), true).await.unwrap();
    assert_eq!(count(again.db("catalog").unwrap().clone()).await, before, "loading twice adds nothing");
}

#[tokio::test]
async fn variants_prices_and_deletion() {
    let t = TestApp::new().await;
    let cm = t.user("cm@example.com", Role::CatalogManager).await;
    let (_, p) = t.send("POST", "/api/v1/admin/products", Some(&cm), Some(tee("V-M"))).await;
    let id = p["id"].as_str().unwrap().to_owned();
    // Without options a product has one default variant.
    let (status, err) = t.send("POST", &format!("/api/v1/admin/products/{id}/variants"), Some(&cm),
        Some(json!({"sku": "V-L", "prices": {"USD": 2700}}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("options_required")));
    let (status, sized) = t.send("PATCH", &format!("/api/v1/admin/products/{id}"), Some(&cm),
        Some(json!({"options": [{"name": "Size", "values": ["M", "L", "XL"]}]}))).await;
    assert_eq!(status, StatusCode::OK, "{sized}");
    assert_eq!(sized["variants"][0]["option_values"], json!(["M"]), "the default variant takes the first values");
    let (status, with_l) = t.send("POST", &format!("/api/v1/admin/products/{id}/variants"), Some(&cm),
        Some(json!({"sku": "V-L", "option_values": ["l"], "prices": {"USD": 2700}}))).await;
    assert_eq!(status, StatusCode::CREATED, "{with_l}");
    assert_eq!(with_l["variants"].as_array().unwrap().len(), 2);
    assert_eq!(with_l["variants"][1]["title"], "L");
    assert_eq!(with_l["variants"][1]["option_values"], json!(["L"]));
    let (status, err) = t.send("POST", &format!("/api/v1/admin/products/{id}/variants"), Some(&cm),
        Some(json!({"sku": "V-L2", "option_values": ["L"], "prices": {"USD": 1}}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("duplicate_combination")));
    let (status, err) = t.send("POST", &format!("/api/v1/admin/products/{id}/variants"), Some(&cm),
        Some(json!({"sku": "V-XL", "option_values": ["XXL"], "prices": {"USD": 1}}))).await;
    assert_eq!((status, err["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("option_values[0]")));
    let (status, _) = t.send("POST", &format!("/api/v1/admin/products/{id}/variants"), Some(&cm),
        Some(json!({"sku": "V-L", "option_values": ["XL"], "prices": {"USD": 1}}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, err) = t.send("PATCH", &format!("/api/v1/admin/products/{id}"), Some(&cm),
        Some(json!({"options": [{"name": "Size", "values": ["S", "M"]}]}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("options_mismatch")),
        "V-L is L, which these options no longer offer");

    let (status, changed) = t.send("PATCH", "/api/v1/admin/variants/v-l", Some(&cm),
        Some(json!({"prices": {"USD": 2900, "GBP": 2300}, "compare_at_prices": {"USD": 3500}, "barcode": "0123456789012"}))).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let large = changed["variants"].as_array().unwrap().iter().find(|v| v["sku"] == "V-L").unwrap().clone();
    assert_eq!(large["prices"]["GBP"]["amount"], 2300);
    assert_eq!(large["compare_at_prices"]["USD"]["amount"], 3500);
    assert_eq!(large["barcode"], "0123456789012");

    let (status, bulk) = t.send("POST", "/api/v1/admin/prices/bulk", Some(&cm),
        Some(json!({"updates": [{"sku": "V-M", "prices": {"USD": 2000}}, {"sku": "NOPE", "prices": {"USD": 1}}]}))).await;
    assert_eq!((status, bulk["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("updates[1].sku")));
    let (_, unchanged) = t.send("GET", &format!("/api/v1/admin/products/{id}"), Some(&cm), None).await;
    assert_eq!(unchanged["variants"][0]["prices"]["USD"]["amount"], 2500, "all or none");
    let (status, bulk) = t.send("POST", "/api/v1/admin/prices/bulk", Some(&cm),
        Some(json!({"updates": [{"sku": "V-M", "prices": {"USD": 2000}}, {"sku": "V-L", "prices": {"USD": 2100}}]}))).await;
    assert_eq!((status, bulk["updated"].as_u64()), (StatusCode::OK, Some(2)));

    assert_eq!(t.send("DELETE", "/api/v1/admin/variants/V-L", Some(&cm), None).await.0, StatusCode::NO_CONTENT);
    let (status, last) = t.send("DELETE", "/api/v1/admin/variants/V-M", Some(&cm), None).await;
    assert_eq!((status, last["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("last_variant")));

    // Ordered products are archived, not deleted.
    t.inventory().adjust("V-M", None, 1, "received", "test").await.unwrap();
    t.inventory().reserve("ord_keep", &[Line { sku: "V-M".into(), quantity: 1 }]).await.unwrap();
    let (status, kept) = t.send("DELETE", &format!("/api/v1/admin/products/{id}"), Some(&cm), None).await;
    assert_eq!((status, kept["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("was_ordered")));
    let (_, fresh) = t.send("POST", "/api/v1/admin/products", Some(&cm), Some(json!({"title": "Gone", "variants": [{"sku": "GONE-1", "prices": {"USD": 1}}]}))).await;
    let gone = fresh["id"].as_str().unwrap();
    assert_eq!(t.send("DELETE", &format!("/api/v1/admin/products/{gone}"), Some(&cm), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(t.send("GET", &format!("/api/v1/admin/products/{gone}"), Some(&cm), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(t.events("product.deleted").await, 1);
}

#[tokio::test]
async fn a_cancelled_order_gives_its_stock_back() {
    let t = TestApp::new().await;
    let cm = t.user("cm@example.com", Role::CatalogManager).await;
    t.send("POST", "/api/v1/admin/products", Some(&cm), Some(tee("C-1"))).await;
    let inv = t.inventory();
    inv.adjust("C-1", None, 4, "received", "test").await.unwrap();
    inv.reserve("ord_cancel", &[Line { sku: "C-1".into(), quantity: 3 }]).await.unwrap();
    let event = kernel::Envelope::new("order.cancelled", "ord_cancel", json!({"order_id": "ord_cancel"}));
    t.app.bus().publish(&event).await.unwrap();
    t.app.bus().publish(&event).await.unwrap(); // redelivered: no second effect
    let reservation = inv.reservation("ord_cancel").await;
    if platform::testing::nats_url().is_some() {
        // Over JetStream delivery is asynchronous: wait for it.
        for _ in 0..100 {
            if inv.reservation("ord_cancel").await.unwrap().state == "released" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    } else {
        assert_eq!(reservation.unwrap().state, "released");
    }
    assert_eq!(inv.reservation("ord_cancel").await.unwrap().state, "released");
    let (_, levels) = t.send("GET", "/api/v1/admin/inventory?sku=C-1", Some(&t.user("o@example.com", Role::OrderManager).await), None).await;
    assert_eq!(levels[0]["available"], 4);
}

#[tokio::test]
async fn the_reservation_port_over_http_needs_the_service_token() {
    let t = TestApp::new().await;
    let cm = t.user("cm@example.com", Role::CatalogManager).await;
    t.send("POST", "/api/v1/admin/products", Some(&cm), Some(tee("H-1"))).await;
    t.inventory().adjust("H-1", None, 2, "received", "test").await.unwrap();
    let body = json!({"order_id": "ord_http", "lines": [{"sku": "H-1", "quantity": 2}]});

    assert_eq!(t.send("POST", "/internal/v1/reservations", None, Some(body.clone())).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(t.send("POST", "/internal/v1/reservations", Some(&cm), Some(body.clone())).await.0, StatusCode::UNAUTHORIZED,
        "a user's token is not the service token");
    let (status, held) = t.send("POST", "/internal/v1/reservations", Some(SERVICE_TOKEN), Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    assert_eq!((held["state"].as_str(), held["lines"][0]["quantity"].as_i64()), (Some("held"), Some(2)));
    let (status, again) = t.send("POST", "/internal/v1/reservations", Some(SERVICE_TOKEN), Some(body)).await;
    assert_eq!((status, again["state"].as_str()), (StatusCode::CREATED, Some("held")), "idempotent on the order id");
    let (status, none_left) = t.send("POST", "/internal/v1/reservations", Some(SERVICE_TOKEN),
        Some(json!({"order_id": "ord_late", "lines": [{"sku": "H-1", "quantity": 1}]}))).await;
    assert_eq!((status, none_left["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("out_of_stock")));

    assert_eq!(t.send("POST", "/internal/v1/reservations/ord_http/commit", Some(SERVICE_TOKEN), None).await.0, StatusCode::NO_CONTENT);
    let (_, committed) = t.send("GET", "/internal/v1/reservations/ord_http", Some(SERVICE_TOKEN), None).await;
    assert_eq!(committed["state"], "committed");
    let (status, _) = t.send("POST", "/internal/v1/reservations/ord_http/release", Some(SERVICE_TOKEN), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "a committed reservation cannot be released");
    assert_eq!(t.send("GET", "/internal/v1/reservations/ord_nope", Some(SERVICE_TOKEN), None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn internal_routes_are_closed_without_a_token() {
    let sandbox = Sandbox::new().await;
    let mut config = (*sandbox.config()).clone();
    catalog_alone(&mut config);
    let app = App::start(Arc::new(config), &[catalog::spec()], axum::Router::new(), false).await.unwrap();
    let r = app.router().oneshot(Request::get("/internal/v1/reservations/ord_1").header("authorization", "Bearer x").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

impl TestApp {
    async fn send_raw(&self, method: &str, path: &str, token: Option<&str>, content_type: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        let mut r = Request::builder().method(method).uri(path).header("content-type", content_type);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let response = self.app.router().oneshot(r.body(Body::from(body)).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, response.into_body().collect().await.unwrap().to_bytes().to_vec(), headers)
    }

    async fn get_raw(&self, path: &str, token: Option<&str>) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        let mut r = Request::get(path);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let response = self.app.router().oneshot(r.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, response.into_body().collect().await.unwrap().to_bytes().to_vec(), headers)
    }
}

fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "emporium-test-boundary";
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes()),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn options_backorders_and_stock_locations() {
    let t = TestApp::new().await;
    let staff = t.user("ops@example.com", Role::Admin).await;
    let (status, p) = t.send("POST", "/api/v1/admin/products", Some(&staff), Some(json!({
        "title": "Rain Jacket", "status": "active",
        "options": [{"name": "Size", "values": ["S", "M"]}, {"name": "Colour", "values": ["Red"]}],
        "variants": [
            {"sku": "RJ-S", "option_values": ["S", "Red"], "prices": {"USD": 9000}},
            {"sku": "RJ-M", "option_values": ["M", "Red"], "prices": {"USD": 9000}, "allow_backorder": true}
        ]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["options"][1], json!({"name": "Colour", "values": ["Red"]}));
    assert_eq!(p["variants"][0]["title"], "S / Red");
    assert_eq!(p["variants"][0]["in_stock"], false);
    assert_eq!(p["variants"][1]["in_stock"], true, "open to backorders");
    let (status, err) = t.send("POST", "/api/v1/admin/products", Some(&staff), Some(json!({
        "title": "Two defaults", "variants": [{"sku": "TD-1", "prices": {"USD": 1}}, {"sku": "TD-2", "prices": {"USD": 1}}]}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("options_required")));

    // A second location; stock there is sold when the default has none.
    let (status, loc) = t.send("POST", "/api/v1/admin/stock-locations", Some(&staff), Some(json!({"name": "Warehouse B"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{loc}");
    let b = loc["id"].as_str().unwrap().to_owned();
    let (status, level) = t.send("POST", "/api/v1/admin/inventory/adjustments", Some(&staff),
        Some(json!({"sku": "RJ-S", "location": b, "delta": 5, "reason": "received"}))).await;
    assert_eq!((status, level["location"].as_str(), level["on_hand"].as_i64()), (StatusCode::OK, Some(b.as_str()), Some(5)));
    let (status, err) = t.send("POST", "/api/v1/admin/inventory/adjustments", Some(&staff),
        Some(json!({"sku": "RJ-S", "location": "loc_nowhere", "delta": 5, "reason": "received"}))).await;
    assert_eq!((status, err["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("location")));
    let (_, levels) = t.send("GET", "/api/v1/admin/inventory?sku=rj-s", Some(&staff), None).await;
    assert_eq!(levels.as_array().unwrap().len(), 2, "{levels}");
    let inv = t.inventory();
    inv.reserve("ord_loc", &[Line { sku: "RJ-S".into(), quantity: 3 }]).await.unwrap();
    let changed = t.last_event("inventory.changed").await;
    assert_eq!((&changed["location"], &changed["on_hand"], &changed["reserved"], &changed["available"]), (&json!(b), &json!(5), &json!(3), &json!(2)), "{changed}");
    let err = inv.reserve("ord_loc2", &[Line { sku: "RJ-S".into(), quantity: 3 }]).await.unwrap_err();
    assert!(matches!(err, CatalogError::OutOfStock { available: 2, .. }), "{err:?}");
    inv.commit("ord_loc").await.unwrap();
    let (_, levels) = t.send("GET", "/api/v1/admin/inventory?sku=RJ-S", Some(&staff), None).await;
    let at_b = levels.as_array().unwrap().iter().find(|l| l["location"] == b.as_str()).unwrap().clone();
    assert_eq!((at_b["on_hand"].as_i64(), at_b["reserved"].as_i64()), (Some(2), Some(0)));
    // Where both have them, the default location's go first.
    inv.adjust("RJ-S", None, 2, "received", "test").await.unwrap();
    inv.reserve("ord_loc3", &[Line { sku: "RJ-S".into(), quantity: 2 }]).await.unwrap();
    let changed = t.last_event("inventory.changed").await;
    assert_eq!((&changed["location"], &changed["reserved"], &changed["available"]), (&json!("loc_default"), &json!(2), &json!(2)), "counted over both locations: {changed}");
    let (_, levels) = t.send("GET", "/api/v1/admin/inventory?sku=RJ-S", Some(&staff), None).await;
    let reserved: Vec<(String, i64)> =
        levels.as_array().unwrap().iter().map(|l| (l["location"].as_str().unwrap().to_owned(), l["reserved"].as_i64().unwrap())).collect();
    assert!(reserved.contains(&("loc_default".to_owned(), 2)) && reserved.contains(&(b.clone(), 0)), "{levels}");
    inv.release("ord_loc3").await.unwrap();
    inv.adjust("RJ-S", None, -2, "correction", "test").await.unwrap();
    let (status, _) = t.send("DELETE", &format!("/api/v1/admin/stock-locations/{b}"), Some(&staff), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "it holds stock");
    let (status, _) = t.send("DELETE", "/api/v1/admin/stock-locations/loc_default", Some(&staff), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "the default stays");
    let (status, renamed) = t.send("PATCH", &format!("/api/v1/admin/stock-locations/{b}"), Some(&staff), Some(json!({"name": "Depot"}))).await;
    assert_eq!((status, renamed["name"].as_str()), (StatusCode::OK, Some("Depot")));

    // Backorders sell past zero; the units arrive later.
    inv.adjust("RJ-M", None, 1, "received", "test").await.unwrap();
    inv.reserve("ord_bo", &[Line { sku: "RJ-M".into(), quantity: 4 }]).await.unwrap();
    inv.commit("ord_bo").await.unwrap();
    let (_, levels) = t.send("GET", "/api/v1/admin/inventory?sku=RJ-M", Some(&staff), None).await;
    assert_eq!(levels[0]["on_hand"], -3, "three units are owed");
    let (_, shown) = t.send("GET", "/api/v1/products/rain-jacket", None, None).await;
    assert_eq!((shown["variants"][1]["in_stock"].as_bool(), shown["variants"][1]["available"].as_i64()), (Some(true), Some(-3)));
    assert!(shown["variants"][1].get("on_hand").is_none(), "stock figures beyond available are for staff");
    inv.adjust("RJ-M", None, 5, "received", "test").await.unwrap();
    let (_, history) = t.send("GET", "/api/v1/admin/inventory/RJ-M/history", Some(&staff), None).await;
    let reasons: Vec<&str> = history["data"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, vec!["received", "sold", "received"]);
}

#[tokio::test]
async fn descriptions_are_rendered_safely() {
    let t = TestApp::new().await;
    let staff = t.user("cm@example.com", Role::CatalogManager).await;
    let (status, p) = t.send("POST", "/api/v1/admin/products", Some(&staff), Some(json!({
        "title": "Mug", "status": "active",
        "description": "A **big** mug.\n\n<script>alert(1)</script>\n\n[shop](javascript:alert(2))",
        "variants": [{"sku": "MUG-1", "prices": {"USD": 1200}}]}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let html = p["description_html"].as_str().unwrap();
    assert!(html.contains("<strong>big</strong>"), "{html}");
    assert!(!html.contains("<script") && !html.contains("javascript:"), "{html}");
    assert!(p["description"].as_str().unwrap().contains("**big**"), "the Markdown is kept as written");
}

#[tokio::test]
async fn pictures_are_uploaded_checked_and_served() {
    let t = TestApp::new().await;
    let staff = t.user("cm@example.com", Role::CatalogManager).await;
    let customer = t.user("c@example.com", Role::Customer).await;
    let (_, p) = t.send("POST", "/api/v1/admin/products", Some(&staff), Some(tee("PIC-1"))).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let png = catalog::media::placeholder(30, 1200).unwrap();
    let path = format!("/api/v1/admin/products/{id}/media");

    let (ct, body) = multipart(&[("file", Some("tee.png"), &png), ("alt", None, b"The tee, folded")]);
    let (status, _, _) = t.send_raw("POST", &path, Some(&customer), &ct, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, created, _) = t.send_raw("POST", &path, Some(&staff), &ct, body).await;
    let created: Value = serde_json::from_slice(&created).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((created["width"].as_i64(), created["alt"].as_str()), (Some(1200), Some("The tee, folded")));
    let widths: Vec<i64> = created["thumbnails"].as_array().unwrap().iter().map(|t| t["width"].as_i64().unwrap()).collect();
    assert_eq!(widths, vec![160, 480, 960]);

    let (status, bytes, headers) = t.get_raw(created["url"].as_str().unwrap(), None).await;
    assert_eq!((status, headers["content-type"].to_str().unwrap()), (StatusCode::OK, "image/png"));
    assert!(headers["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(bytes, png, "the original, as uploaded");
    let (status, thumb, _) = t.get_raw(created["thumbnails"][0]["url"].as_str().unwrap(), None).await;
    assert_eq!(status, StatusCode::OK);
    let decoded = image::load_from_memory(&thumb).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (160, 160));
    assert_eq!(t.get_raw("/media/products/nothing/here.png", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(t.get_raw("/media/../../etc/passwd", None).await.0, StatusCode::NOT_FOUND);

    // Checked by content, not by name.
    let (ct, body) = multipart(&[("file", Some("evil.png"), b"<svg onload=alert(1)></svg>")]);
    let (status, err, _) = t.send_raw("POST", &path, Some(&staff), &ct, body).await;
    let err: Value = serde_json::from_slice(&err).unwrap();
    assert_eq!((status, err["error"]["code"].as_str(), err["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unsupported_media_type"), Some("file")));
    let (ct, body) = multipart(&[("alt", None, b"no file")]);
    assert_eq!(t.send_raw("POST", &path, Some(&staff), &ct, body).await.0, StatusCode::UNPROCESSABLE_ENTITY);

    // A second picture, moved first, with new alt text.
    let small = catalog::media::placeholder(200, 100).unwrap();
    let (ct, body) = multipart(&[("file", Some("x.bin"), &small)]);
    let (status, second, _) = t.send_raw("POST", &path, Some(&staff), &ct, body).await;
    assert_eq!(status, StatusCode::CREATED);
    let second: Value = serde_json::from_slice(&second).unwrap();
    assert_eq!(second["thumbnails"], json!([]), "never wider than the original");
    let second_id = second["id"].as_str().unwrap();
    let (status, moved) = t.send("PATCH", &format!("{path}/{second_id}"), Some(&staff), Some(json!({"position": 0, "alt": "Detail"}))).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["media"][0]["id"], second_id);
    assert_eq!(moved["media"][0]["alt"], "Detail");
    assert_eq!(moved["media"][1]["id"], created["id"]);

    let first_id = created["id"].as_str().unwrap();
    assert_eq!(t.send("DELETE", &format!("{path}/{first_id}"), Some(&staff), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(t.get_raw(created["url"].as_str().unwrap(), None).await.0, StatusCode::NOT_FOUND, "its files are gone");
    assert_eq!(t.send("DELETE", &format!("{path}/{first_id}"), Some(&staff), None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn uploads_over_the_limit_are_refused() {
    let sandbox = Sandbox::new().await;
    let mut config = (*sandbox.config()).clone();
    config.services = vec!["auth".into(), "catalog".into()];
    config.public_url = Some(PUBLIC_URL.into());
    config.media.max_upload_bytes = 20_000;
    let config = Arc::new(config);
    let app = App::start(config.clone(), &[auth::spec(), catalog::spec()], axum::Router::new(), false).await.unwrap();
    let t = TestApp { _sandbox: sandbox, app, config };
    let staff = t.user("cm@example.com", Role::CatalogManager).await;
    let (_, p) = t.send("POST", "/api/v1/admin/products", Some(&staff), Some(tee("BIG-1"))).await;
    let id = p["id"].as_str().unwrap();
    let big = catalog::media::placeholder(10, 400).unwrap();
    assert!(big.len() > 20_000, "{}", big.len());
    let (ct, body) = multipart(&[("file", Some("big.png"), &big)]);
    let (status, err, _) = t.send_raw("POST", &format!("/api/v1/admin/products/{id}/media"), Some(&staff), &ct, body).await;
    let err: Value = serde_json::from_slice(&err).unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert_eq!(err["error"]["type"], "invalid_request");
}

const SHOPIFY_CSV: &[u8] = include_bytes!("fixtures/shopify_products.csv");

#[tokio::test]
async fn a_shopify_csv_imports_with_bad_rows_reported_and_round_trips() {
    let t = TestApp::new().await;
    let staff = t.user("cm@example.com", Role::CatalogManager).await;
    let customer = t.user("c@example.com", Role::Customer).await;
    let path = "/api/v1/admin/products/import";
    assert_eq!(t.send_raw("POST", path, Some(&customer), "text/csv", SHOPIFY_CSV.to_vec()).await.0, StatusCode::FORBIDDEN);
    let (status, report, _) = t.send_raw("POST", path, Some(&staff), "text/csv", SHOPIFY_CSV.to_vec()).await;
    let report: Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!((report["rows"].as_u64(), report["products_created"].as_u64()), (Some(13), Some(4)), "{report}");
    let errors: Vec<(u64, Option<&str>)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["column"].as_str()))
        .collect();
    assert_eq!(errors, vec![
        (4, Some("Variant Inventory Qty")),
        (5, Some("Variant Price")),
        (6, Some("Variant SKU")),
        (9, Some("Variant Inventory Qty")),
        (11, Some("Title")),
        (12, Some("Handle")),
        (14, Some("Image Src")),
    ], "{report}");

    let (_, shirt) = t.send("GET", "/api/v1/products/ocean-blue-shirt", None, None).await;
    assert_eq!(shirt["options"], json!([{"name": "Size", "values": ["xs", "s"]}, {"name": "Color", "values": ["Blue"]}]));
    assert_eq!(shirt["variants"].as_array().unwrap().len(), 2);
    assert_eq!(shirt["variants"][1]["prices"]["USD"]["amount"], 5000);
    assert_eq!(shirt["variants"][1]["compare_at_prices"]["USD"]["amount"], 6000);
    assert_eq!(shirt["variants"][1]["barcode"], "123456789012");
    assert_eq!(shirt["variants"][0]["available"], 50);
    assert_eq!(shirt["brand"], "partners-demo");
    assert_eq!(shirt["attributes"]["type"], "Shirts");
    assert_eq!(shirt["categories"][0]["name"], "Shirts");
    assert_eq!(shirt["tags"], json!(["men", "summer"]));
    assert_eq!(shirt["seo_title"], "Ocean Blue Shirt | Partners");
    assert_eq!(shirt["media"].as_array().unwrap().len(), 2, "image addresses are recorded");
    assert_eq!(shirt["media"][0]["url"], "https://burst.shopifycdn.com/photos/man-adjusts-blue-tuxedo-bowtie_925x.jpg");
    let (_, top) = t.send("GET", "/api/v1/products/classic-varsity-top", None, None).await;
    assert!(!top["description_html"].as_str().unwrap().contains("<script"));
    assert_eq!(top["variants"][0]["allow_backorder"], true);
    assert_eq!(top["variants"][1]["track_inventory"], false, "no inventory tracker");
    assert_eq!(top["variants"][1]["weight_grams"], 250);
    assert_eq!(t.send("GET", "/api/v1/products/gift-card", None, None).await.0, StatusCode::NOT_FOUND, "drafts stay hidden");
    let (_, tree) = t.send("GET", "/api/v1/categories", None, None).await;
    assert_eq!(tree[0]["name"], "Apparel & Accessories");
    let (_, history) = t.send("GET", "/api/v1/admin/inventory/OBS-XS-BLUE/history", Some(&staff), None).await;
    assert_eq!(history["data"][0]["reason"], "import");

    // The same file again updates; nothing is doubled.
    let (_, again, _) = t.send_raw("POST", path, Some(&staff), "text/csv", SHOPIFY_CSV.to_vec()).await;
    let again: Value = serde_json::from_slice(&again).unwrap();
    assert_eq!((again["products_created"].as_u64(), again["products_updated"].as_u64(), again["images_recorded"].as_u64()),
        (Some(0), Some(4), Some(0)), "{again}");
    let (_, all) = t.send("GET", "/api/v1/admin/products?limit=100", Some(&staff), None).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 4);

    // Export, import into an empty shop, export again: the same file.
    let (status, exported, headers) = t.get_raw("/api/v1/admin/products/export", Some(&staff)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let other = TestApp::new().await;
    let staff2 = other.user("cm@example.com", Role::CatalogManager).await;
    let (status, report, _) = other.send_raw("POST", path, Some(&staff2), "text/csv", exported.clone()).await;
    let report: Value = serde_json::from_slice(&report).unwrap();
    assert_eq!((status, report["errors"].as_array().unwrap().len()), (StatusCode::OK, 0), "{report}");
    let (_, second, _) = other.get_raw("/api/v1/admin/products/export", Some(&staff2)).await;
    assert_eq!(String::from_utf8(second).unwrap(), String::from_utf8(exported).unwrap());

    let (status, err, _) = t.send_raw("POST", path, Some(&staff), "text/csv", b"Name,Price\nx,1\n".to_vec()).await;
    let err: Value = serde_json::from_slice(&err).unwrap();
    assert_eq!((status, err["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("file")));
}

#[tokio::test]
async fn replicas_forget_together_through_redis() {
    let Some(_) = platform::testing::redis_url() else {
        eprintln!("EMPORIUM_TEST_REDIS_URL unset: the shared cache is checked in the run with Redis");
        return;
    };
    let t = TestApp::new().await;
    // A second replica of the catalog over the same database.
    let replica = App::start(t.config.clone(), &[auth::spec(), catalog::spec()], axum::Router::new(), false).await.unwrap();
    let staff = t.user("cm@example.com", Role::CatalogManager).await;
    let mut body = tee("RED-1");
    body["status"] = json!("active");
    let (_, p) = t.send("POST", "/api/v1/admin/products", Some(&staff), Some(body)).await;
    let url = format!("/api/v1/products/{}", p["id"].as_str().unwrap());
    let get = |app: &App| {
        let router = app.router();
        let url = url.clone();
        async move {
            let response = router.oneshot(Request::get(url).body(Body::empty()).unwrap()).await.unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    assert_eq!(get(&replica).await["title"], "Organic Cotton Tee", "the replica has it cached now");
    t.send("PATCH", &format!("/api/v1/admin/products/{}", p["id"].as_str().unwrap()), Some(&staff), Some(json!({"title": "Renamed"}))).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if get(&replica).await["title"] == "Renamed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the replica kept the old product");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    replica.shutdown().await;
}

#[tokio::test]
async fn pictures_can_live_in_an_s3_bucket() {
    let Some(endpoint) = platform::testing::s3_url() else {
        eprintln!("EMPORIUM_TEST_S3_URL unset: the S3 store is checked in the run with an S3-compatible server");
        return;
    };
    let bucket = platform::testing::unique("emporium-t").to_lowercase().replace('_', "-");
    platform::testing::create_bucket(&endpoint, &bucket);
    let sandbox = Sandbox::new().await;
    let mut config = (*sandbox.config()).clone();
    config.services = vec!["auth".into(), "catalog".into()];
    config.public_url = Some(PUBLIC_URL.into());
    config.media.store = "s3".into();
    config.media.s3_bucket = Some(bucket.clone());
    config.media.s3_endpoint = Some(endpoint.clone());
    config.media.s3_allow_http = true;
    config.media.s3_access_key_id = Some("test".into());
    config.media.s3_secret_access_key = Some("test".into());
    let config = Arc::new(config);
    let app = App::start(config.clone(), &[auth::spec(), catalog::spec()], axum::Router::new(), false).await.unwrap();
    let t = TestApp { _sandbox: sandbox, app, config };
    let staff = t.user("cm@example.com", Role::CatalogManager).await;
    let (_, p) = t.send("POST", "/api/v1/admin/products", Some(&staff), Some(tee("S3-1"))).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let png = catalog::media::placeholder(120, 500).unwrap();
    let (ct, body) = multipart(&[("file", Some("p.png"), &png)]);
    let (status, created, _) = t.send_raw("POST", &format!("/api/v1/admin/products/{id}/media"), Some(&staff), &ct, body).await;
    let created: Value = serde_json::from_slice(&created).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, bytes, _) = t.get_raw(created["url"].as_str().unwrap(), None).await;
    assert_eq!((status, bytes == png), (StatusCode::OK, true), "served from the bucket");
    // The object is in the bucket, under the key of its address.
    let key = created["url"].as_str().unwrap().trim_start_matches("/media/");
    let listing = {
        use std::io::{Read, Write};
        let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        write!(stream, "GET /{bucket}?list-type=2 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    assert!(listing.contains(key), "{listing}");
    let media_id = created["id"].as_str().unwrap();
    assert_eq!(t.send("DELETE", &format!("/api/v1/admin/products/{id}/media/{media_id}"), Some(&staff), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(t.get_raw(created["url"].as_str().unwrap(), None).await.0, StatusCode::NOT_FOUND);
}
