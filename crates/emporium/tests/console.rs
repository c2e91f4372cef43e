//! The admin console through its pages: every section opens for an admin
//! and only for the roles it is meant for; the forms of discounts, tax
//! rates, synonyms, templates, API keys and orders make the API calls they
//! stand for and show the API's refusals in words; the CSV import reports
//! row by row and the export downloads.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use axum::http::StatusCode;
use kernel::auth::Role;
use serde_json::json;
use support::Shop;
use support::pages::{between, create, guest_order, staff_browser, stock};

async fn full_shop() -> Shop {
    Shop::with(|c| c.services.extend(["search".to_owned(), "notify".to_owned()])).await
}

/// The record a form's redirect landed on (`/admin/x/{id}?done=…` drawn).
fn done(page: &str, label: &str) {
    assert!(page.contains(&format!("Done: {label}.")), "no “Done: {label}.” in {page}");
}

fn alert(page: &str) -> &str {
    between(page, r#"<p class="alert" role="alert">"#, "</p>")
}

const SECTIONS: [&str; 19] = [
    "/admin", "/admin/orders", "/admin/products", "/admin/products/new", "/admin/products/import", "/admin/returns",
    "/admin/inventory", "/admin/locations", "/admin/categories", "/admin/customers", "/admin/discounts", "/admin/shipping",
    "/admin/taxes", "/admin/synonyms", "/admin/searches", "/admin/notifications", "/admin/mailbox", "/admin/templates",
    "/admin/webhooks",
];

#[tokio::test]
async fn every_page_opens_for_an_admin_and_each_role_sees_only_its_own() {
    let shop = full_shop().await;
    create(&shop, json!({"title": "Mug", "status": "active", "variants": [{"sku": "MUG-9", "prices": {"USD": 1200}, "low_stock_threshold": 3}]})).await;
    stock(&shop, "MUG-9", 2).await;
    create(&shop, json!({"title": "Teapot", "status": "active", "variants": [{"sku": "POT-1", "prices": {"USD": 3200}, "low_stock_threshold": 3}]})).await;
    stock(&shop, "POT-1", 40).await;
    let (_, low) = shop.send("GET", "/api/v1/admin/products?low_stock=true", &shop.as_staff(), None).await;
    let titles: Vec<&str> = low["data"].as_array().unwrap().iter().map(|p| p["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Mug"], "only what runs low: {low}");

    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    for path in SECTIONS.iter().chain(&["/admin/staff", "/admin/api-keys", "/admin/audit", "/admin/inventory/MUG-9", "/admin/templates/order.paid.email"]) {
        let (status, page) = admin.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        assert!(page.contains("<h1>"), "{path} has a heading");
    }
    let (_, dashboard) = admin.get("/admin").await;
    assert!(dashboard.contains(r#"<span class="big">1</span> low-stock variants"#), "{dashboard}");
    assert!(dashboard.contains(r#"<a href="/admin/inventory/MUG-9">MUG-9</a></td><td>Mug</td><td>2</td>"#), "{dashboard}");
    assert!(!dashboard.contains("POT-1"), "plenty of teapots");
    let (_, nav) = admin.get("/admin/products").await;
    let nav = between(&nav, "<nav", "</nav>");
    for label in ["Orders", "Products", "Inventory", "Customers", "Discounts", "Taxes", "Templates", "Staff", "API keys", "Audit log"] {
        assert!(nav.contains(&format!(">{label}</a>")), "{label} in the admin's menu: {nav}");
    }

    // A catalog manager: the catalog and the stock, nothing about people or money.
    let mut catalog = staff_browser(&shop, "cm@example.com", Role::CatalogManager).await;
    for path in ["/admin/products", "/admin/inventory", "/admin/categories", "/admin/synonyms", "/admin/products/import"] {
        assert_eq!(catalog.get(path).await.0, StatusCode::OK, "{path}");
    }
    for path in ["/admin/orders", "/admin/customers", "/admin/discounts", "/admin/taxes", "/admin/staff", "/admin/api-keys", "/admin/mailbox"] {
        assert_eq!(catalog.get(path).await.0, StatusCode::FORBIDDEN, "{path}");
    }
    let (_, products) = catalog.get("/admin/products").await;
    assert!(!products.contains(">Customers</a>") && !products.contains(">Discounts</a>"), "the menu leaves out what they cannot open");

    // An order manager keeps stock too: the inventory opens, the catalog's editing does not.
    let mut orders = staff_browser(&shop, "om@example.com", Role::OrderManager).await;
    let (status, inventory) = orders.get("/admin/inventory").await;
    assert_eq!(status, StatusCode::OK, "{inventory}");
    assert!(inventory.contains("MUG-9"));
    assert_eq!(orders.get("/admin/products").await.0, StatusCode::FORBIDDEN);
    let (_, dashboard) = orders.get("/admin").await;
    assert!(dashboard.contains("low-stock variants") && dashboard.contains("to fulfil"), "{dashboard}");

    // A form posted to a page the role cannot use is refused by the console.
    let csrf = catalog.cookies.get("csrf").cloned().unwrap();
    let (status, _, _) = catalog.request("POST", "/admin/discounts", Some(&[("csrf", &csrf), ("action", "create"), ("code", "FREE")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn tax_rate(shop: &Shop, name: &str) -> Option<serde_json::Value> {
    let (_, rates) = shop.send("GET", "/api/v1/admin/tax-rates", &shop.as_staff(), None).await;
    rates.get("data").unwrap_or(&rates).as_array().unwrap().iter().find(|r| r["name"] == name).cloned()
}

#[tokio::test]
async fn discounts_tax_rates_and_synonyms_are_kept_through_forms() {
    let shop = full_shop().await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;

    // A discount: a bad percentage is refused in words, with what was typed kept.
    let (_, list) = admin.get("/admin/discounts").await;
    let (status, refused) = admin.submit(&list, "/admin/discounts", &[("action", "create"), ("code", "SPRING"), ("kind", "percentage"), ("percent_off", "150")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(alert(&refused).contains("percent_off"), "{}", alert(&refused));
    assert!(refused.contains(r#"value="SPRING""#), "the form keeps what was typed");
    let (status, made) = admin.submit(&list, "/admin/discounts", &[("action", "create"), ("code", "SPRING"), ("kind", "percentage"), ("percent_off", "15"), ("active", "on")]).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    done(&made, "Add a discount code");
    assert!(made.contains("<h1>SPRING</h1>"), "the new discount's page: {made}");
    let (_, api) = shop.send("GET", "/api/v1/admin/discounts", &shop.as_staff(), None).await;
    let spring = &api["data"][0];
    assert_eq!((spring["code"].as_str(), spring["percent_off"].as_i64(), spring["active"].as_bool()), (Some("SPRING"), Some(15), Some(true)), "{api}");
    let (status, twice) = admin.submit(&list, "/admin/discounts", &[("action", "create"), ("code", "SPRING"), ("kind", "percentage"), ("percent_off", "10")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{twice}");
    assert!(!alert(&twice).is_empty());

    // A tax rate: added, changed, removed.
    let (_, taxes) = admin.get("/admin/taxes").await;
    let (status, rate) = admin.submit(&taxes, "/admin/taxes", &[("action", "create"), ("country", "CA"), ("region", "ON"), ("name", "Ontario HST"), ("rate_bp", "1300")]).await;
    assert_eq!(status, StatusCode::OK, "{rate}");
    done(&rate, "Add a tax rate");
    let made = tax_rate(&shop, "Ontario HST").await.expect("the rate is kept");
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!((made["rate_bp"].as_i64(), made["shipping_taxable"].as_bool()), (Some(1300), Some(false)), "{made}");
    let (status, changed) = admin.submit(&rate, &format!("/admin/taxes/{id}"), &[("action", "update"), ("country", "CA"), ("region", "ON"), ("name", "Ontario HST"), ("rate_bp", "1350"), ("shipping_taxable", "on")]).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    done(&changed, "Save");
    let kept = tax_rate(&shop, "Ontario HST").await.unwrap();
    assert_eq!((kept["rate_bp"].as_i64(), kept["shipping_taxable"].as_bool()), (Some(1350), Some(true)), "{kept}");
    let (status, refused) = admin.submit(&changed, &format!("/admin/taxes/{id}"), &[("action", "update"), ("country", "CA"), ("name", "Ontario HST"), ("rate_bp", "a lot")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(alert(&refused).starts_with("Rate "), "the field named in words: {}", alert(&refused));
    let (status, gone) = admin.submit(&changed, &format!("/admin/taxes/{id}"), &[("action", "delete")]).await;
    assert_eq!(status, StatusCode::OK, "{gone}");
    assert!(!gone.contains("Ontario HST") && gone.contains("California"), "{gone}");
    assert!(tax_rate(&shop, "Ontario HST").await.is_none());

    // Synonyms: one group a line.
    let (_, synonyms) = admin.get("/admin/synonyms").await;
    let (status, saved) = admin.submit(&synonyms, "/admin/synonyms", &[("action", "save"), ("groups", "sofa, couch, settee\nmug, cup")]).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    let (_, groups) = shop.send("GET", "/api/v1/admin/search/synonyms", &shop.as_staff(), None).await;
    assert_eq!(groups["groups"], json!([["sofa", "couch", "settee"], ["mug", "cup"]]), "{groups}");
    assert!(saved.contains("sofa, couch, settee"), "the page shows the groups back: {saved}");
}

#[tokio::test]
async fn templates_are_previewed_and_a_broken_one_is_refused_when_saved() {
    let shop = full_shop().await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    let path = "/admin/templates/order.paid.email";
    let (_, template) = admin.get(path).await;
    assert!(template.contains("Receipt for order #{{ order.number }}"), "the shipped wording: {template}");

    let (status, preview) = admin.submit(&template, path, &[("action", "preview"), ("subject", "Paid: #{{ order.number }}"), ("html", ""), ("text", "Thanks for order {{ order.number }}.")]).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let answer = between(&preview, r#"<section class="panel answer""#, "</section>");
    assert!(answer.contains("Paid: #1042") && answer.contains("Thanks for order 1042."), "rendered with sample data: {answer}");

    let (status, refused) = admin.submit(&template, path, &[("action", "save"), ("subject", "Receipt"), ("html", ""), ("text", "{% if order.number %}unclosed")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(!alert(&refused).is_empty());
    let (_, kept) = shop.send("GET", "/api/v1/admin/notification-templates/order.paid.email", &shop.as_staff(), None).await;
    assert_eq!(kept["subject"], "Receipt for order #{{ order.number }}", "nothing saved: {kept}");

    let (status, saved) = admin.submit(&template, path, &[("action", "save"), ("subject", "Your receipt, #{{ order.number }}"), ("html", ""), ("text", "Paid: {{ order.number }}.")]).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    done(&saved, "Save");
    let (_, kept) = shop.send("GET", "/api/v1/admin/notification-templates/order.paid.email", &shop.as_staff(), None).await;
    assert_eq!(kept["subject"], "Your receipt, #{{ order.number }}");
    let (_, reset) = admin.submit(&saved, path, &[("action", "reset")]).await;
    assert!(reset.contains("Receipt for order #{{ order.number }}"), "back to the shipped wording");
}

#[tokio::test]
async fn an_api_key_is_shown_once_and_revoked_from_the_list() {
    let shop = full_shop().await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    let (_, keys) = admin.get("/admin/api-keys").await;
    let (status, made) = admin.submit(&keys, "/admin/api-keys", &[("action", "create"), ("name", "Warehouse"), ("permissions", "orders:read"), ("permissions", "inventory:write")]).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    done(&made, "Make a key");
    let key = format!("sk_{}", between(&made, "sk_", "<"));
    assert!(key.len() > 20, "{key}");
    let (status, orders) = shop.send("GET", "/api/v1/admin/orders", &support::Who { token: Some(key.clone()), ..Default::default() }, None).await;
    assert_eq!(status, StatusCode::OK, "the key works: {orders}");
    let (_, list) = admin.get("/admin/api-keys").await;
    assert!(list.contains("Warehouse") && !list.contains(&key), "listed, never shown again");
    let id = between(&list, r#"action="/admin/api-keys/"#, "\"").to_owned();
    let (status, revoked) = admin.submit(&list, &format!("/admin/api-keys/{id}"), &[("action", "revoke")]).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(shop.send("GET", "/api/v1/admin/orders", &support::Who { token: Some(key.clone()), ..Default::default() }, None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_order_is_noted_and_refunded_from_its_page_and_a_refused_cancel_says_why() {
    let shop = full_shop().await;
    let (_customer, id) = guest_order(&shop).await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    let page = format!("/admin/orders/{id}");
    let act = format!("/admin/orders/{id}/act");

    // The list narrows by email and by the day the order was placed.
    let (_, api) = shop.send("GET", &format!("/api/v1/admin/orders/{id}"), &shop.as_staff(), None).await;
    let day = api["placed_at"].as_str().unwrap()[..10].to_owned();
    let listed = format!(r#"<a href="/admin/orders/{id}">#1001</a>"#);
    for query in ["email=ada%40example.com", &format!("from={day}&to={day}"), &format!("status=paid&from={day}")] {
        let (status, list) = admin.get(&format!("/admin/orders?{query}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(list.contains(&listed), "{query}: {list}");
    }
    for query in ["email=nobody%40example.com", "status=refunded", "to=2020-01-01"] {
        let (_, list) = admin.get(&format!("/admin/orders?{query}")).await;
        assert!(list.contains("No orders.") && !list.contains(&listed), "{query}: {list}");
    }
    let (status, _) = admin.get("/admin/orders?from=yesterday").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, order) = admin.get(&page).await;

    let (status, noted) = admin.submit(&order, &act, &[("action", "note"), ("text", "Asked for gift wrap <b>please</b>")]).await;
    assert_eq!(status, StatusCode::OK, "{noted}");
    assert!(noted.contains("Asked for gift wrap &#60;b&#62;please&#60;/b&#62;"), "the note in the timeline, as text: {noted}");

    let (status, too_much) = admin.submit(&order, &act, &[("action", "refund"), ("amount", "999.00"), ("reason", "goodwill")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{too_much}");
    assert_eq!(alert(&too_much), "a refund of 999.00 USD is more than the 30.74 USD that can still be refunded", "in the shop's money");
    let (status, refunded) = admin.submit(&order, &act, &[("action", "refund"), ("amount", "5.00"), ("reason", "goodwill")]).await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    let (_, api) = shop.send("GET", &format!("/api/v1/admin/orders/{id}"), &shop.as_staff(), None).await;
    assert_eq!((api["refunded"]["amount"].as_i64(), api["status"].as_str()), (Some(500), Some("partially_refunded")), "{api}");
    assert!(refunded.contains("Status: <strong>partially refunded</strong>"), "{refunded}");
    assert!(refunded.contains("Ada Lovelace, 1 Market St, San Francisco, CA, 94105, US"), "where it goes: {refunded}");
    assert!(refunded.contains("<th scope=\"row\">Taken</th><td>$30.74</td>") && refunded.contains("<th scope=\"row\">Refunded</th><td>$5.00</td>"), "{refunded}");
    assert!(refunded.contains("test · captured · $30.74") && refunded.contains(": $5.00 — goodwill"), "payments and refunds: {refunded}");

    // Refunded in part, the order can no longer be cancelled: the API's reason is on the page.
    let (status, refused) = admin.submit(&order, &act, &[("action", "cancel"), ("reason", "customer asked")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(alert(&refused).contains("cannot be cancelled"), "{}", alert(&refused));
    let (_, api) = shop.send("GET", &format!("/api/v1/admin/orders/{id}"), &shop.as_staff(), None).await;
    assert_eq!(api["status"], "partially_refunded");
}

#[tokio::test]
async fn a_shopify_csv_is_imported_with_a_report_of_each_refused_row_and_exported_again() {
    let shop = full_shop().await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    let (_, form) = admin.get("/admin/products/import").await;
    let csrf = between(&form, r#"name="csrf" value=""#, "\"").to_owned();
    let csv = include_bytes!("../../catalog/tests/fixtures/shopify_products.csv");

    let (status, _, _) = admin.post_multipart("/admin/products/import", &[("csrf", "forged"), ("currency", "USD")], Some(("file", "products.csv", csv))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no import without the form's token");
    let (status, _, report) = admin.post_multipart("/admin/products/import", &[("csrf", &csrf), ("currency", "USD")], Some(("file", "products.csv", csv))).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert!(report.contains("13 rows read: 4 products made, 0 updated;") && report.contains("7 rows refused."), "{report}");
    let refused = between(&report, "<tbody>", "</tbody>");
    for (line, column) in [(4, "Variant Inventory Qty"), (5, "Variant Price"), (6, "Variant SKU"), (11, "Title"), (14, "Image Src")] {
        assert!(refused.contains(&format!("<tr><td>{line}</td>")) && refused.contains(column), "line {line}, {column}: {refused}");
    }
    let (_, products) = admin.get("/admin/products").await;
    assert!(products.contains("Ocean Blue Shirt"), "{products}");
    let (_, found) = admin.get("/admin/products?q=ocean+BLUE").await;
    let rows = between(&found, "<tbody>", "</tbody>");
    assert_eq!(rows.matches("<tr>").count(), 1, "one product's title has the words: {rows}");
    assert!(rows.contains("Ocean Blue Shirt"));

    let (status, headers, csv) = admin.request("GET", "/admin/products/export", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(headers["content-disposition"].to_str().unwrap().contains("attachment"));
    assert!(csv.starts_with("Handle,Title") && csv.contains("ocean-blue-shirt"), "{csv}");
    let mut cm = staff_browser(&shop, "support@example.com", Role::Support).await;
    assert_eq!(cm.get("/admin/products/export").await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn what_staff_and_shoppers_typed_is_shown_as_text_in_the_console() {
    let shop = full_shop().await;
    create(&shop, json!({"title": "<script>alert(1)</script>", "status": "active", "variants": [{"sku": "XSS-1", "prices": {"USD": 100}}]})).await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    for path in ["/admin/products", "/admin/inventory", "/admin/inventory/XSS-1"] {
        let (_, page) = admin.get(path).await;
        assert!(!page.contains("<script>alert(1)"), "{path}: {page}");
    }
    let (_, list) = admin.get("/admin/products").await;
    assert!(list.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{list}");
    let (_, headers, _) = admin.request("GET", "/admin/products", None).await;
    assert!(headers["content-security-policy"].to_str().unwrap().contains("script-src 'self'"), "{headers:?}");
    assert_eq!(headers["cache-control"], "no-store");
}

#[tokio::test]
async fn a_product_s_pictures_are_uploaded_described_ordered_and_removed() {
    let shop = full_shop().await;
    let product = create(&shop, json!({"title": "Linen Apron", "status": "active", "variants": [{"sku": "APR-S", "prices": {"USD": 2400}}]})).await;
    let id = product["id"].as_str().unwrap();
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    let (_, record) = admin.get(&format!("/admin/products/{id}")).await;

    // Its page edits it: a field emptied is cleared.
    let edit = [("action", "update"), ("title", "Linen Apron"), ("description", "Heavy *linen*."), ("status", "active"), ("brand", "Lumen"), ("tags", "kitchen, linen")];
    let (status, saved) = admin.submit(&record, &format!("/admin/products/{id}"), &edit).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    let (_, api) = shop.send("GET", &format!("/api/v1/admin/products/{id}"), &shop.as_staff(), None).await;
    assert_eq!((api["brand"].as_str(), api["tags"].clone(), api["description"].as_str()), (Some("Lumen"), json!(["kitchen", "linen"]), Some("Heavy *linen*.")), "{api}");
    let cleared = [("action", "update"), ("title", "Linen Apron"), ("description", ""), ("status", "active"), ("brand", ""), ("tags", ""), ("seo_title", "")];
    let (status, saved) = admin.submit(&saved, &format!("/admin/products/{id}"), &cleared).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    let (_, api) = shop.send("GET", &format!("/api/v1/admin/products/{id}"), &shop.as_staff(), None).await;
    assert_eq!((api["brand"].clone(), api["tags"].clone(), api["description"].as_str()), (serde_json::Value::Null, json!([]), Some("")), "{api}");
    let options = [("action", "update"), ("title", "Linen Apron"), ("status", "active"), ("option1.name", "Colour"), ("option1.values", "Sand, Olive")];
    let (status, saved) = admin.submit(&saved, &format!("/admin/products/{id}"), &options).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    let (_, api) = shop.send("GET", &format!("/api/v1/admin/products/{id}"), &shop.as_staff(), None).await;
    assert_eq!(api["options"], json!([{"name": "Colour", "values": ["Sand", "Olive"]}]), "{api}");
    assert_eq!(api["variants"][0]["option_values"], json!(["Sand"]), "the one variant takes the first value");
    let (status, refused) = admin.submit(&saved, &format!("/admin/products/{id}"), &[("action", "update"), ("title", "Linen Apron"), ("status", "active"), ("option2.values", "Linen")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(between(&refused, r#"<div class="alert" role="alert">"#, "</div>").contains("Name this option, e.g. Size."), "{refused}");
    let pictures = format!("/admin/products/{id}/pictures");
    assert!(record.contains(&format!(r#"href="{pictures}">Pictures</a>"#)), "{record}");
    let (_, page) = admin.get(&pictures).await;
    assert!(page.contains("No pictures yet."));
    let csrf = between(&page, r#"name="csrf" value=""#, "\"").to_owned();

    let png = catalog::media::placeholder(120, 600).unwrap();
    let (status, _, refused) = admin.post_multipart(&pictures, &[("csrf", &csrf), ("alt", "Not a picture")], Some(("image", "apron.png", b"plain text"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(alert(&refused).len() > 3, "the catalog's reason: {refused}");
    for alt in ["A sand apron, folded", "The apron, worn"] {
        let (status, _, _) = admin.post_multipart(&pictures, &[("csrf", &csrf), ("alt", alt)], Some(("image", "apron.png", &png))).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
    }
    let (_, page) = admin.get(&format!("{pictures}?done=added")).await;
    assert!(page.contains("The picture is added.") && page.matches("<img ").count() == 2, "{page}");
    let (_, api) = shop.send("GET", &format!("/api/v1/admin/products/{id}"), &shop.as_staff(), None).await;
    let media: Vec<(String, String)> = api["media"].as_array().unwrap().iter().map(|m| (m["id"].as_str().unwrap().to_owned(), m["alt"].as_str().unwrap().to_owned())).collect();
    assert_eq!(media.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(), ["A sand apron, folded", "The apron, worn"]);

    let second = format!("{pictures}/{}", media[1].0);
    let (_, page) = admin.submit(&page, &second, &[("action", "first")]).await;
    assert!(page.contains("That picture now comes first."), "{page}");
    let (_, page) = admin.submit(&page, &second, &[("action", "alt"), ("alt", "The apron, worn in the kitchen")]).await;
    assert!(page.contains("The description is saved."));
    let (_, api) = shop.send("GET", &format!("/api/v1/products/{id}"), &Default::default(), None).await;
    assert_eq!(api["media"][0]["alt"], "The apron, worn in the kitchen", "{api}");
    let (_, page) = admin.submit(&page, &format!("{pictures}/{}", media[0].0), &[("action", "remove")]).await;
    assert!(page.contains("The picture is removed.") && page.matches("<img ").count() == 1, "{page}");

    let mut support = staff_browser(&shop, "help@example.com", Role::Support).await;
    assert_eq!(support.get(&pictures).await.0, StatusCode::FORBIDDEN);
}
