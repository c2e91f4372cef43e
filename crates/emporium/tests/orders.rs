//! Carts, checkout, payments and what follows, through the routes of a
//! whole shop (auth, catalog and orders in one process).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use support::{Shop, Who, address};

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kernel::auth::Role;
use platform::testing::Sandbox;
use serde_json::{Value, json};
use tower::ServiceExt;

#[tokio::test]
async fn a_guest_checks_out_and_pays() {
    let shop = Shop::new().await;
    shop.product("MUG-1", 1250, 5).await;
    let (cart, who) = shop.ready_cart(&[("mug-1", 2)], None).await;

    let (_, view) = shop.send("GET", &format!("/api/v1/carts/{cart}"), &who, None).await;
    // 2 × 12.50 = 25.00; 800 g ships for 5.00 (untaxed in CA); 7.25 % of 25.00 = 1.8125 → 1.81.
    assert_eq!(view["totals"]["subtotal"]["amount"], 2500);
    assert_eq!(view["totals"]["shipping"]["amount"], 500);
    assert_eq!(view["totals"]["tax"]["amount"], 181);
    assert_eq!(view["totals"]["total"]["amount"], 3181);
    assert_eq!(view["email"], "ada@example.com");
    assert!(view.get("secret").is_none(), "the secret is shown once");
    let stranger = Who::default();
    assert_eq!(shop.send("GET", &format!("/api/v1/carts/{cart}"), &stranger, None).await.0, StatusCode::NOT_FOUND);

    let paying = Who { idempotency_key: Some("checkout-1".into()), ..who.clone() };
    let (status, headers, order) = shop
        .send_full("POST", &format!("/api/v1/carts/{cart}/checkout"), &paying, Some(json!({"payment": {"provider": "test", "token": "tok_visa"}})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(order["status"], "paid");
    assert_eq!(order["number"], 1001);
    assert_eq!(order["captured"]["amount"], 3181);
    assert_eq!(order["lines"][0]["title"], "Product MUG-1", "a snapshot of what was bought");
    assert_eq!(order["shipping_address"]["country"], "US");
    let kinds: Vec<&str> = order["timeline"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["placed", "paid"]);
    assert_eq!(shop.available("MUG-1").await, (3, 0), "sold units leave the shelf");

    let (status, headers, again) = shop
        .send_full("POST", &format!("/api/v1/carts/{cart}/checkout"), &paying, Some(json!({"payment": {"provider": "test", "token": "tok_visa"}})))
        .await;
    assert_eq!((status, headers.get("idempotent-replayed").is_some()), (StatusCode::CREATED, true));
    assert_eq!(again["id"], order["id"]);
    let other_key = Who { idempotency_key: Some("checkout-2".into()), ..who.clone() };
    let (status, err) = shop.checkout(&cart, &other_key, "tok_visa").await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("order_already_paid")));
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM test_gateway_charges").await, 1, "charged once");

    let id = order["id"].as_str().unwrap();
    let token = order["lookup_token"].as_str().unwrap();
    assert_eq!(shop.send("GET", &format!("/api/v1/orders/{id}"), &stranger, None).await.0, StatusCode::NOT_FOUND);
    let (status, seen) = shop.send("GET", &format!("/api/v1/orders/{id}?token={token}"), &stranger, None).await;
    assert_eq!((status, seen["number"].as_i64()), (StatusCode::OK, Some(1001)));
    assert!(seen.get("lookup_token").is_none());
    let mut answered = order.clone();
    answered.as_object_mut().unwrap().remove("lookup_token");
    assert_eq!(seen, answered, "the checkout answers the order as it is kept");
    assert_eq!(shop.send("GET", "/api/v1/orders/prod_01J0000000000000000000000", &stranger, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM outbox WHERE event_type IN ('order.placed', 'order.paid')").await, 2);
}

#[tokio::test]
async fn every_test_card_behaves_as_documented() {
    let shop = Shop::new().await;
    shop.product("TEE-1", 2000, 3).await;
    for (token, code) in [("tok_chargeDeclined", "card_declined"), ("tok_insufficientFunds", "insufficient_funds"), ("tok_expiredCard", "expired_card")] {
        let (cart, who) = shop.ready_cart(&[("TEE-1", 2)], None).await;
        let (status, err) = shop.checkout(&cart, &who, token).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{err}");
        assert_eq!(err["error"]["type"], "payment_failed");
        assert_eq!(err["error"]["code"], code);
        assert_eq!(shop.available("TEE-1").await, (3, 0), "a declined card gives the stock back");
        // Another card on the same order.
        let (status, order) = shop.checkout(&cart, &who, "tok_visa").await;
        assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("paid")), "{order}");
        assert_eq!(order["payments"].as_array().unwrap().len(), 2);
        assert_eq!(order["payments"][0]["failure_code"], code);
        let id = order["id"].as_str().unwrap();
        let (status, _) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/cancel"), &shop.as_staff(), Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(shop.available("TEE-1").await, (3, 0), "cancelling a paid order restocks it");
    }

    let (cart, who) = shop.ready_cart(&[("TEE-1", 1)], None).await;
    let (status, order) = shop.checkout(&cart, &who, "tok_processingError").await;
    assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("paid")), "a transient error is retried: {order}");

    let (cart, who) = shop.ready_cart(&[("TEE-1", 1)], None).await;
    let (status, order) = shop.checkout(&cart, &who, "tok_requires_action").await;
    assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("pending_payment")), "{order}");
    let url = order["next_action"].as_str().unwrap();
    let path = url.split_once("/test-gateway").map(|(_, p)| format!("/test-gateway{p}")).unwrap();
    assert_eq!(shop.available("TEE-1").await, (2, 1), "held while the shopper confirms");
    let (_, seen) = shop.send("GET", &format!("/api/v1/orders/{}?token={}", order["id"].as_str().unwrap(), order["lookup_token"].as_str().unwrap()), &Who::default(), None).await;
    let mut answered = order.clone();
    answered.as_object_mut().unwrap().retain(|k, _| k != "lookup_token" && k != "next_action");
    assert_eq!(seen, answered, "the checkout answers the order as it is kept");
    let page = shop.app.router().oneshot(Request::get(&path).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = String::from_utf8(page.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap();
    let approve = Request::post(format!("{path}&action=approve"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf={csrf}")))
        .unwrap();
    let status = shop.app.router().oneshot(approve).await.unwrap().status();
    assert_eq!(status, StatusCode::OK);
    let id = order["id"].as_str().unwrap();
    let (_, order) = shop.send("GET", &format!("/api/v1/orders/{id}?token={}", order["lookup_token"].as_str().unwrap()), &Who::default(), None).await;
    assert_eq!(order["status"], "paid");
    assert_eq!(shop.available("TEE-1").await, (1, 0));

    let (cart, who) = shop.ready_cart(&[("TEE-1", 1)], None).await;
    let (status, err) = shop.checkout(&cart, &who, "tok_unknown").await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("invalid_token")));
    let (status, err) = shop.send("POST", &format!("/api/v1/carts/{cart}/checkout"), &who, Some(json!({"payment": {"provider": "bitcoin", "token": "x"}}))).await;
    assert_eq!((status, err["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("payment.provider")));
    // Every order took the next number in its own INSERT.
    let orders = shop.count("orders", "SELECT COUNT(*) FROM orders").await;
    assert_eq!(shop.count("orders", "SELECT MIN(number) FROM orders").await, 1001);
    assert_eq!(shop.count("orders", "SELECT MAX(number) FROM orders").await, 1000 + orders);
}

#[tokio::test]
async fn concurrent_retries_of_one_checkout_make_one_order_and_one_charge() {
    let shop = Arc::new(Shop::new().await);
    shop.product("LAMP-1", 4500, 10).await;
    let (cart, who) = shop.ready_cart(&[("LAMP-1", 1)], None).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(12));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (shop, barrier, cart) = (shop.clone(), barrier.clone(), cart.clone());
        // Most retry with one key; a few are a second click with a new key.
        let key = if i < 8 { "one-key".to_owned() } else { format!("other-{i}") };
        let who = Who { idempotency_key: Some(key), ..who.clone() };
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            shop.checkout(&cart, &who, "tok_visa").await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        if status == StatusCode::CREATED {
            ids.insert(body["id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
        }
    }
    assert_eq!(ids.len(), 1, "one order");
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM test_gateway_charges").await, 1, "one charge");
    assert_eq!(shop.available("LAMP-1").await, (9, 0));
}

async fn make_code(shop: &Shop, body: Value) -> Value {
    let (status, code) = shop.send("POST", "/api/v1/admin/discounts", &shop.as_staff(), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{code}");
    code
}

#[tokio::test]
async fn the_regions_tax_rate_wins_over_the_countrys_with_the_shipping_chosen() {
    let shop = Shop::new().await;
    let (s, _) = shop.send("POST", "/api/v1/admin/tax-rates", &shop.as_staff(), Some(json!({
        "country": "US", "region": "", "name": "Elsewhere in the US", "rate_bp": 500, "shipping_taxable": true}))).await;
    assert_eq!(s, StatusCode::CREATED);
    shop.product("PEN-2", 1000, 5).await;
    // California: its own 7.25 % of the goods only (72.5, kept as 72), shipping untaxed.
    let (cart, who) = shop.ready_cart(&[("PEN-2", 1)], None).await;
    let (_, view) = shop.send("GET", &format!("/api/v1/carts/{cart}"), &who, None).await;
    assert_eq!((view["totals"]["tax"]["amount"].as_i64(), view["totals"]["shipping"]["amount"].as_i64()), (Some(72), Some(500)), "{view}");
    // Texas: the country's 5 %, shipping taxed too; (1000 + 500) × 5 % = 75.
    let (s, view) = shop.send("PUT", &format!("/api/v1/carts/{cart}/shipping-address"), &who, Some(address("US", Some("TX")))).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    let (_, view) = shop.send("GET", &format!("/api/v1/carts/{cart}"), &who, None).await;
    assert_eq!((view["totals"]["tax"]["amount"].as_i64(), view["shipping_method"]["name"].as_str()), (Some(75), Some("Ground")), "{view}");
    let (status, order) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!((status, order["totals"]["tax"]["amount"].as_i64()), (StatusCode::CREATED, Some(75)), "{order}");
}

#[tokio::test]
async fn a_code_for_categories_discounts_only_their_products() {
    let shop = Shop::new().await;
    let (status, outer) = shop.send("POST", "/api/v1/admin/categories", &shop.as_staff(), Some(json!({"name": "Outerwear"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{outer}");
    let (_, hats) = shop.send("POST", "/api/v1/admin/categories", &shop.as_staff(), Some(json!({"name": "Hats"}))).await;
    for (sku, categories) in [("COAT-1", json!([outer["id"], hats["id"]])), ("MUG-9", json!([]))] {
        let (status, p) = shop.send("POST", "/api/v1/admin/products", &shop.as_staff(), Some(json!({
            "title": sku, "status": "active", "categories": categories,
            "variants": [{"sku": sku, "prices": {"USD": 1000}, "weight_grams": 100}]}))).await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        shop.send("PUT", &format!("/api/v1/admin/inventory/{sku}"), &shop.as_staff(), Some(json!({"on_hand": 5}))).await;
    }
    make_code(&shop, json!({"code": "coats", "kind": "percentage", "percent_off": 50, "category_ids": [hats["id"]]})).await;
    let (cart, who) = shop.ready_cart(&[("COAT-1", 1), ("MUG-9", 1)], None).await;
    let (status, view) = shop.send("POST", &format!("/api/v1/carts/{cart}/discounts"), &who, Some(json!({"code": "coats"}))).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["totals"]["discount"]["amount"], 500, "half of the coat in the second of its categories, none of the mug: {view}");
    let (status, order) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!((status, order["totals"]["discount"]["amount"].as_i64()), (StatusCode::CREATED, Some(500)), "{order}");
}

#[tokio::test]
async fn discount_limits_hold_under_concurrency() {
    let shop = Arc::new(Shop::new().await);
    shop.product("SOCK-1", 1000, 100).await;
    let code = make_code(&shop, json!({"code": "three", "kind": "percentage", "percent_off": 20, "usage_limit": 3})).await;
    assert_eq!(code["code"], "THREE");
    let mut carts = Vec::new();
    for _ in 0..8 {
        let (cart, who) = shop.ready_cart(&[("SOCK-1", 1)], None).await;
        let (status, view) = shop.send("POST", &format!("/api/v1/carts/{cart}/discounts"), &who, Some(json!({"code": "three"}))).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["totals"]["discount"]["amount"], 200);
        carts.push((cart, who));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(carts.len()));
    let tasks: Vec<_> = carts
        .into_iter()
        .map(|(cart, who)| {
            let (shop, barrier) = (shop.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                shop.checkout(&cart, &who, "tok_visa").await
            })
        })
        .collect();
    let mut paid = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => paid += 1,
            _ => assert_eq!(body["error"]["code"], "discount_exhausted", "{body}"),
        }
    }
    assert_eq!(paid, 3, "never more than the limit");
    assert_eq!(shop.count("orders", "SELECT times_used FROM discounts WHERE code = 'THREE'").await, 3);
    assert_eq!(shop.available("SOCK-1").await, (97, 0), "refused checkouts hold nothing");

    // Once per customer.
    make_code(&shop, json!({"code": "ONCE", "kind": "fixed", "amount_off": 300, "currency": "USD", "per_customer_limit": 1})).await;
    let alice = Who { token: Some(shop.user("alice@example.com", Role::Customer).await), ..Who::default() };
    for expected in [StatusCode::CREATED, StatusCode::CONFLICT] {
        let (cart, who) = shop.ready_cart(&[("SOCK-1", 1)], Some(&alice)).await;
        shop.send("POST", &format!("/api/v1/carts/{cart}/discounts"), &who, Some(json!({"code": "once"}))).await;
        let (status, body) = shop.checkout(&cart, &who, "tok_visa").await;
        assert_eq!(status, expected, "{body}");
    }
    let (status, err) = shop.send("POST", "/api/v1/admin/discounts", &shop.as_staff(), Some(json!({"code": "ONCE", "kind": "percentage", "percent_off": 5}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("code_taken")));
    let (cart, who) = shop.ready_cart(&[("SOCK-1", 1)], None).await;
    make_code(&shop, json!({"code": "BIGSPEND", "kind": "percentage", "percent_off": 10, "min_subtotal": 5000})).await;
    let (status, err) = shop.send("POST", &format!("/api/v1/carts/{cart}/discounts"), &who, Some(json!({"code": "BIGSPEND"}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("discount_minimum_not_met")));
}

#[tokio::test]
async fn a_changed_price_is_shown_before_it_is_charged() {
    let shop = Shop::new().await;
    shop.product("BAG-1", 3000, 5).await;
    let (cart, who) = shop.ready_cart(&[("BAG-1", 1)], None).await;
    let (s, body) = shop.send("PATCH", "/api/v1/admin/variants/BAG-1", &shop.as_staff(), Some(json!({"prices": {"USD": 3500}}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, view) = shop.send("GET", &format!("/api/v1/carts/{cart}"), &who, None).await;
    assert_eq!(view["notices"][0]["code"], "price_changed");
    assert_eq!(view["items"][0]["unit_price"]["amount"], 3500);
    let (status, err) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("price_changed")));
    let (status, order) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["lines"][0]["unit_price"]["amount"], 3500);

    // Stock that runs short after the cart was filled (a cart cannot be filled past it).
    let (cart, who) = shop.ready_cart(&[("BAG-1", 4)], None).await;
    shop.send("PUT", "/api/v1/admin/inventory/BAG-1", &shop.as_staff(), Some(json!({"on_hand": 3}))).await;
    let (_, view) = shop.send("GET", &format!("/api/v1/carts/{cart}"), &who, None).await;
    assert_eq!(view["notices"][0]["code"], "out_of_stock");
    let (status, err) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("out_of_stock")));
}

#[tokio::test]
async fn orders_are_fulfilled_refunded_returned_and_cancelled_by_the_rules() {
    let shop = Shop::new().await;
    shop.product("CUP-1", 1000, 10).await;
    shop.product("PLATE-1", 2000, 10).await;
    let bob = Who { token: Some(shop.user("bob@example.com", Role::Customer).await), ..Who::default() };
    let (cart, who) = shop.ready_cart(&[("CUP-1", 2), ("PLATE-1", 1)], Some(&bob)).await;
    let (status, order) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let id = order["id"].as_str().unwrap().to_owned();
    let total = order["totals"]["total"]["amount"].as_i64().unwrap();

    let (_, mine) = shop.send("GET", "/api/v1/orders", &bob, None).await;
    assert_eq!(mine["data"][0]["id"], id.as_str());
    let eve = Who { token: Some(shop.user("eve@example.com", Role::Customer).await), ..Who::default() };
    assert_eq!(shop.send("GET", &format!("/api/v1/orders/{id}"), &eve, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(shop.send("GET", "/api/v1/orders", &eve, None).await.1["data"], json!([]));
    assert_eq!(shop.send("GET", "/api/v1/admin/orders", &eve, None).await.0, StatusCode::FORBIDDEN);
    let support = Who { token: Some(shop.user("support@example.com", Role::Support).await), ..Who::default() };
    assert_eq!(shop.send("GET", &format!("/api/v1/admin/orders/{id}"), &support, None).await.0, StatusCode::OK);
    let (status, _) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/fulfilments"), &support, Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "orders:read is not orders:write");

    let (status, err) = shop.send("POST", &format!("/api/v1/orders/{id}/returns"), &bob, Some(json!({"items": [{"sku": "CUP-1", "quantity": 1}], "reason": "chipped"}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_returnable")));
    let (status, o) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/fulfilments"), &shop.as_staff(), Some(json!({
        "items": [{"sku": "CUP-1", "quantity": 2}], "carrier": "UPS", "tracking_number": "1Z999", "tracking_url": "https://ups.example/1Z999"}))).await;
    assert_eq!((status, o["status"].as_str()), (StatusCode::CREATED, Some("partially_fulfilled")), "{o}");
    let (status, err) = shop.send("POST", &format!("/api/v1/orders/{id}/cancel"), &bob, None).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("order_not_cancellable")));
    let (status, err) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/fulfilments"), &shop.as_staff(), Some(json!({"items": [{"sku": "CUP-1", "quantity": 1}]}))).await;
    assert_eq!((status, err["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("items[0].quantity")));
    let (_, o) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/fulfilments"), &shop.as_staff(), Some(json!({"carrier": "UPS"}))).await;
    assert_eq!(o["status"], "fulfilled");
    let (_, o) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/delivered"), &shop.as_staff(), None).await;
    assert_eq!(o["status"], "delivered");
    assert_eq!(o["fulfilments"][0]["tracking_number"], "1Z999");
    shop.send("POST", &format!("/api/v1/admin/orders/{id}/notes"), &shop.as_staff(), Some(json!({"text": "called the customer"}))).await;
    let (_, seen) = shop.send("GET", &format!("/api/v1/orders/{id}"), &bob, None).await;
    assert!(seen["timeline"].as_array().unwrap().iter().all(|t| t["kind"] != "note"), "notes are for staff");

    // A return: requested, approved, received, refunded with restock.
    let (status, ret) = shop.send("POST", &format!("/api/v1/orders/{id}/returns"), &bob, Some(json!({"items": [{"sku": "CUP-1", "quantity": 1}], "reason": "chipped"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{ret}");
    let rid = ret["id"].as_str().unwrap();
    let (status, _) = shop.send("POST", &format!("/api/v1/admin/returns/{rid}/receive"), &shop.as_staff(), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "approve first");
    for step in ["approve", "receive"] {
        let (status, r) = shop.send("POST", &format!("/api/v1/admin/returns/{rid}/{step}"), &shop.as_staff(), None).await;
        assert_eq!(status, StatusCode::OK, "{r}");
    }
    let (status, r) = shop.send("POST", &format!("/api/v1/admin/returns/{rid}/refund"), &shop.as_staff(), Some(json!({"restock": true}))).await;
    assert_eq!((status, r["status"].as_str()), (StatusCode::OK, Some("refunded")), "{r}");
    assert_eq!(shop.available("CUP-1").await, (9, 0), "the returned cup is back on the shelf");
    let (_, o) = shop.send("GET", &format!("/api/v1/admin/orders/{id}"), &shop.as_staff(), None).await;
    assert_eq!(o["status"], "partially_refunded");
    let refunded = o["refunded"]["amount"].as_i64().unwrap();
    assert_eq!(refunded, o["lines"][0]["total"]["amount"].as_i64().unwrap() / 2);

    // Refunds never exceed what was captured, and replay under their key.
    let staff_key = Who { idempotency_key: Some("refund-1".into()), ..shop.as_staff() };
    let (status, err) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/refunds"), &staff_key, Some(json!({"amount": total, "reason": "goodwill"}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("refund_exceeds_captured")));
    let staff_key = Who { idempotency_key: Some("refund-2".into()), ..shop.as_staff() };
    let rest = total - refunded;
    for _ in 0..2 {
        let (status, r) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/refunds"), &staff_key, Some(json!({"amount": rest, "reason": "goodwill"}))).await;
        assert_eq!((status, r["order"]["status"].as_str()), (StatusCode::CREATED, Some("refunded")), "{r}");
    }
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM refunds WHERE status = 'succeeded'").await, 2);
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM outbox WHERE event_type = 'order.refunded'").await, 2);

    // Before anything ships, the customer may cancel: stock and money go back.
    let (cart, who) = shop.ready_cart(&[("PLATE-1", 2)], Some(&bob)).await;
    let (_, order) = shop.checkout(&cart, &who, "tok_visa").await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(shop.available("PLATE-1").await, (7, 0));
    let (status, o) = shop.send("POST", &format!("/api/v1/orders/{id}/cancel"), &bob, None).await;
    assert_eq!((status, o["status"].as_str()), (StatusCode::OK, Some("cancelled")), "{o}");
    assert_eq!(o["refunded"], o["captured"]);
    assert_eq!(shop.available("PLATE-1").await, (9, 0));
    assert_eq!(shop.send("POST", &format!("/api/v1/admin/orders/{id}/delivered"), &shop.as_staff(), None).await.0, StatusCode::CONFLICT);
    let (_, list) = shop.send("GET", "/api/v1/admin/orders?status=cancelled", &shop.as_staff(), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, _) = shop.send("GET", "/api/v1/admin/orders?status=lost", &shop.as_staff(), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_guest_cart_joins_the_customers_cart_at_sign_in() {
    let shop = Shop::new().await;
    shop.product("PEN-1", 300, 50).await;
    shop.product("INK-1", 700, 50).await;
    let carol = Who { token: Some(shop.user("carol@example.com", Role::Customer).await), ..Who::default() };
    let (status, mine) = shop.send("POST", "/api/v1/carts", &carol, None).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(mine.get("secret").is_none());
    let mine_id = mine["id"].as_str().unwrap();
    shop.send("POST", &format!("/api/v1/carts/{mine_id}/items"), &carol, Some(json!({"sku": "PEN-1", "quantity": 1}))).await;
    assert_eq!(shop.send("POST", "/api/v1/carts", &carol, None).await.1["id"], mine_id, "one open cart per customer");

    let (_, guest) = shop.send("POST", "/api/v1/carts", &Who::default(), None).await;
    let gid = guest["id"].as_str().unwrap();
    let gwho = Who { secret: guest["secret"].as_str().map(str::to_owned), ..Who::default() };
    shop.send("POST", &format!("/api/v1/carts/{gid}/items"), &gwho, Some(json!({"sku": "PEN-1", "quantity": 2}))).await;
    shop.send("POST", &format!("/api/v1/carts/{gid}/items"), &gwho, Some(json!({"sku": "INK-1", "quantity": 1}))).await;
    let wrong = Who { secret: Some("not-the-secret".into()), ..Who::default() };
    assert_eq!(shop.send("GET", &format!("/api/v1/carts/{gid}"), &wrong, None).await.0, StatusCode::NOT_FOUND);

    let claiming = Who { token: carol.token.clone(), secret: gwho.secret.clone(), ..Who::default() };
    let (status, merged) = shop.send("POST", &format!("/api/v1/carts/{gid}/claim"), &claiming, None).await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(merged["id"], mine_id);
    let quantities: Vec<(String, i64)> = merged["items"].as_array().unwrap().iter().map(|i| (i["sku"].as_str().unwrap().to_owned(), i["quantity"].as_i64().unwrap())).collect();
    assert_eq!(quantities, vec![("PEN-1".to_owned(), 3), ("INK-1".to_owned(), 1)]);
    assert_eq!(shop.send("GET", &format!("/api/v1/carts/{gid}"), &gwho, None).await.1["status"], "merged");
    assert_eq!(shop.send("POST", &format!("/api/v1/carts/{gid}/items"), &gwho, Some(json!({"sku": "PEN-1", "quantity": 1}))).await.0, StatusCode::CONFLICT);

    let (status, err) = shop.send("POST", &format!("/api/v1/carts/{mine_id}/items"), &carol, Some(json!({"sku": "NOPE-1", "quantity": 1}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_sku")));
    let (status, err) = shop.send("POST", &format!("/api/v1/carts/{mine_id}/items"), &carol, Some(json!({"sku": "PEN-1", "quantity": 0}))).await;
    assert_eq!((status, err["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("quantity")));
    let (status, err) = shop.send("PUT", &format!("/api/v1/carts/{mine_id}/shipping-address"), &carol, Some(address("XX", None))).await;
    assert_eq!((status, err["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("country")));
    let (status, err) = shop.send("POST", &format!("/api/v1/carts/{mine_id}/checkout"), &carol, Some(json!({"payment": {"provider": "test", "token": "tok_visa"}}))).await;
    assert_eq!((status, err["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("email")));
    shop.send("PUT", &format!("/api/v1/carts/{mine_id}/shipping-address"), &carol, Some(address("DE", None))).await;
    let (_, options) = shop.send("GET", &format!("/api/v1/carts/{mine_id}/shipping-options"), &carol, None).await;
    assert_eq!(options["data"], json!([]), "nothing ships to Germany here");
}

#[tokio::test]
async fn a_deleted_customers_orders_stay_without_their_person() {
    let shop = Shop::new().await;
    shop.product("HAT-1", 1500, 5).await;
    let dan = Who { token: Some(shop.user("dan@example.com", Role::Customer).await), ..Who::default() };
    let (cart, who) = shop.ready_cart(&[("HAT-1", 1)], Some(&dan)).await;
    let (_, order) = shop.checkout(&cart, &who, "tok_visa").await;
    let id = order["id"].as_str().unwrap().to_owned();
    let (status, export) = shop.send("GET", "/api/v1/me/export", &dan, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(export["services"]["orders"]["orders"][0]["id"], id.as_str(), "{export}");
    let (status, _) = shop.send("DELETE", "/api/v1/me", &dan, Some(json!({"password": "a long passphrase"}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut kept = Value::Null;
    for _ in 0..100 {
        kept = shop.send("GET", &format!("/api/v1/admin/orders/{id}"), &shop.as_staff(), None).await.1;
        if kept["email"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!((kept["email"].clone(), kept["shipping_address"].clone()), (Value::Null, Value::Null), "{kept}");
    assert_eq!(kept["totals"]["total"], order["totals"]["total"], "the books keep the money");
    assert_eq!(kept["lines"][0]["sku"], "HAT-1");
}

#[tokio::test]
async fn stripe_webhooks_settle_payments_only_when_signed() {
    let base = support::fake_stripe().await;
    let shop = Shop::with(|c| {
        c.orders.stripe_secret_key = Some("sk_test_emporium".into());
        c.orders.test_payments = None; // as a real shop: no test gateway unless told
        c.orders.stripe_webhook_secret = Some("whsec_emporium".into());
        c.orders.stripe_api_base = base;
    })
    .await;
    shop.product("KITE-1", 1000, 3).await;
    let (cart, who) = shop.ready_cart(&[("KITE-1", 1)], None).await;
    let (status, order) = shop.send("POST", &format!("/api/v1/carts/{cart}/checkout"), &who, Some(json!({"payment": {"provider": "stripe", "token": "tok_visa"}}))).await;
    assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("pending_payment")), "{order}");
    assert_eq!(order["next_action"], "https://stripe.example/3ds");
    let (other, guest) = shop.ready_cart(&[("KITE-1", 1)], None).await;
    let (status, refused) = shop.send("POST", &format!("/api/v1/carts/{other}/checkout"), &guest, Some(json!({"payment": {"provider": "test", "token": "tok_visa"}}))).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_provider")), "a shop taking real payments takes no test ones: {refused}");
    let (_, methods) = shop.send("GET", "/api/v1/payments/methods", &Default::default(), None).await;
    assert_eq!(methods["data"].as_array().unwrap().iter().map(|m| m["provider"].as_str().unwrap()).collect::<Vec<_>>(), ["stripe"]);

    let body = json!({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_3Test", "object": "payment_intent", "status": "succeeded"}}}).to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sign = |secret: &str, t: i64| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        hex::encode(ring::hmac::sign(&key, format!("{t}.{body}").as_bytes()).as_ref())
    };
    let post = |signature: String| {
        let r = Request::post("/api/v1/payments/webhooks/stripe").header("stripe-signature", signature).body(Body::from(body.clone())).unwrap();
        shop.app.router().oneshot(r)
    };
    let forged = post(format!("t={now},v1={}", sign("whsec_other", now))).await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let stale = post(format!("t={},v1={}", now - 3600, sign("whsec_emporium", now - 3600))).await.unwrap();
    assert_eq!(stale.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let id = order["id"].as_str().unwrap();
    let token = order["lookup_token"].as_str().unwrap();
    assert_eq!(shop.send("GET", &format!("/api/v1/orders/{id}?token={token}"), &Who::default(), None).await.1["status"], "pending_payment");
    for _ in 0..2 {
        let ok = post(format!("t={now},v1={}", sign("whsec_emporium", now))).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK, "a redelivered event is harmless");
    }
    let (_, paid) = shop.send("GET", &format!("/api/v1/orders/{id}?token={token}"), &Who::default(), None).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(shop.available("KITE-1").await, (2, 0));
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM outbox WHERE event_type = 'order.paid'").await, 1);

    // A refund made in Stripe's dashboard is recorded once.
    let body = json!({"id": "evt_2", "type": "charge.refunded", "data": {"object": {"id": "ch_1", "object": "charge",
        "payment_intent": "pi_3Test", "amount_refunded": 400}}}).to_string();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"whsec_emporium");
    let signature = hex::encode(ring::hmac::sign(&key, format!("{now}.{body}").as_bytes()).as_ref());
    for _ in 0..2 {
        let r = Request::post("/api/v1/payments/webhooks/stripe").header("stripe-signature", format!("t={now},v1={signature}")).body(Body::from(body.clone())).unwrap();
        assert_eq!(shop.app.router().oneshot(r).await.unwrap().status(), StatusCode::OK);
    }
    let (_, refunded) = shop.send("GET", &format!("/api/v1/admin/orders/{id}"), &shop.as_staff(), None).await;
    assert_eq!((refunded["status"].as_str(), refunded["refunded"]["amount"].as_i64()), (Some("partially_refunded"), Some(400)), "{refunded}");
    assert_eq!(refunded["refunds"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn orders_in_its_own_process_reaches_the_catalog_over_http() {
    const TOKEN: &str = "a-service-token-of-at-least-32-characters";
    let shop = Shop::with(|c| {
        c.services = vec!["auth".into(), "catalog".into()];
        c.catalog.service_token = Some(TOKEN.into());
        c.public_url = Some("http://shop.test".into());
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = shop.app.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let sandbox = Sandbox::new().await;
    let mut config = (*sandbox.config()).clone();
    config.services = vec!["orders".into(), "search".into()];
    config.public_url = Some("http://shop.test".into());
    config.catalog.service_token = Some(TOKEN.into());
    config.catalog.url = Some(format!("http://{addr}"));
    config.auth.jwks_url = Some(format!("http://{addr}/.well-known/jwks.json"));
    let orders = emporium::start(Arc::new(config), axum::Router::new(), false).await.unwrap();
    let remote = Shop { _sandbox: sandbox, app: orders, config: shop.config.clone(), staff: shop.staff.clone() };

    let (s, _) = remote.send("POST", "/api/v1/admin/shipping-methods", &remote.as_staff(), Some(json!({
        "name": "Ground", "countries": ["US"], "currency": "USD", "flat_amount": 500, "min_days": 3, "max_days": 5}))).await;
    assert_eq!(s, StatusCode::CREATED, "staff tokens verify through the published keys");
    shop.product("REMOTE-1", 2500, 2).await;
    let (cart, who) = remote.ready_cart(&[("REMOTE-1", 2)], None).await;
    // Filled while the stock lasts; the first order then takes it all.
    let (later, later_who) = remote.ready_cart(&[("REMOTE-1", 1)], None).await;
    let (_, view) = remote.send("GET", &format!("/api/v1/carts/{cart}"), &who, None).await;
    assert_eq!(view["items"][0]["title"], "Product REMOTE-1", "offers come over HTTP");
    let (status, order) = remote.checkout(&cart, &who, "tok_visa").await;
    assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("paid")), "{order}");
    assert_eq!(shop.available("REMOTE-1").await, (0, 0), "the remote catalog's stock was committed");
    let (status, err) = remote.checkout(&later, &later_who, "tok_visa").await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("out_of_stock")), "{err}");

    // Search in that process reads the catalog over HTTP too.
    shop.product("REMOTE-2", 900, 5).await;
    assert_eq!(remote.send("POST", "/api/v1/admin/search/reindex", &remote.as_staff(), None).await.0, StatusCode::ACCEPTED);
    let mut found = Value::Null;
    for _ in 0..100 {
        found = remote.send("GET", "/api/v1/search?q=remote-2", &Who::default(), None).await.1;
        if found["data"][0]["title"] == "Product REMOTE-2" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(found["data"][0]["title"], "Product REMOTE-2", "{found}");
}

#[tokio::test]
async fn a_shop_can_ask_customers_to_verify_their_email_before_checkout() {
    let shop = Shop::with(|c| c.auth.require_verified_email = true).await;
    shop.product("BOOK-1", 1800, 5).await;
    let body = json!({"email": "new@example.com", "password": "a long passphrase", "name": "New"});
    let (status, _) = shop.send("POST", "/api/v1/auth/register", &Who::default(), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, login) = shop.send("POST", "/api/v1/auth/login", &Who::default(), Some(json!({"email": "new@example.com", "password": "a long passphrase"}))).await;
    let new = Who { token: login["access_token"].as_str().map(str::to_owned), ..Who::default() };
    let (cart, who) = shop.ready_cart(&[("BOOK-1", 1)], Some(&new)).await;
    let (status, err) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("email_not_verified")));
    assert_eq!(shop.available("BOOK-1").await, (5, 0));
}

#[tokio::test]
async fn with_capture_on_fulfilment_the_money_is_taken_when_the_parcel_ships() {
    let shop = Shop::with(|c| c.orders.capture = "on_fulfilment".into()).await;
    shop.product("DESK-1", 20000, 5).await;
    let (cart, who) = shop.ready_cart(&[("DESK-1", 1)], None).await;
    let (_, order) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!((order["status"].as_str(), order["captured"]["amount"].as_i64()), (Some("paid"), Some(0)), "{order}");
    assert_eq!(order["payments"][0]["status"], "authorized");
    let id = order["id"].as_str().unwrap();
    let (_, shipped) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/fulfilments"), &shop.as_staff(), Some(json!({"carrier": "DHL"}))).await;
    assert_eq!(shipped["captured"], order["totals"]["total"], "{shipped}");
    assert_eq!(shipped["payments"][0]["status"], "captured");

    // Cancelled before shipping, a held amount is released, not refunded.
    let (cart, who) = shop.ready_cart(&[("DESK-1", 1)], None).await;
    let (_, order) = shop.checkout(&cart, &who, "tok_visa").await;
    let id = order["id"].as_str().unwrap();
    let (_, cancelled) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/cancel"), &shop.as_staff(), Some(json!({"reason": "customer called"}))).await;
    assert_eq!((cancelled["status"].as_str(), cancelled["refunded"]["amount"].as_i64()), (Some("cancelled"), Some(0)), "{cancelled}");
    assert_eq!(shop.count("orders", "SELECT COUNT(*) FROM test_gateway_charges WHERE status = 'canceled'").await, 1);
    assert_eq!(shop.available("DESK-1").await, (4, 0));
}

#[tokio::test]
async fn the_reconciler_leaves_a_payment_being_confirmed_alone_until_its_time_is_up() {
    let shop = Shop::with(|c| c.orders.reconcile_after_secs = 0).await;
    shop.product("VASE-1", 3000, 2).await;
    let (cart, who) = shop.ready_cart(&[("VASE-1", 1)], None).await;
    let (_, order) = shop.checkout(&cart, &who, "tok_requires_action").await;
    let id = order["id"].as_str().unwrap();
    let orders = shop.app.ports().get::<orders::Orders>().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    for _ in 0..3 {
        orders.reconcile().await.unwrap();
    }
    let (_, seen) = shop.send("GET", &format!("/api/v1/admin/orders/{id}"), &shop.as_staff(), None).await;
    assert_eq!(seen["status"], "pending_payment");
    let asked = seen["timeline"].as_array().unwrap().iter().filter(|t| t["kind"] == "payment_action_required").count();
    assert_eq!(asked, 1, "{seen}");
    assert_eq!(shop.available("VASE-1").await, (2, 1), "still held for the shopper");
}
