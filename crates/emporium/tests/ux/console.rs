//! The merchant's console as a merchant works in it: a product edited and
//! saved from its page (prices in the shop's money, options and variants in
//! a table, categories picked), a bad price refused at its field, a new
//! product put in categories, the products list with pictures, prices and
//! stock, the order page's shipping method, staff landing on the console
//! when they sign in, and the menu grouped by what each role may open.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kernel::auth::Role;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::Shop;
use crate::support::pages::{Browser, attributes, between, create, form_fields, staff_browser, stock, unescape};
use crate::support::webdriver::Driver;

/// Sets the first field called `name` to `value`.
fn set(fields: &mut [(String, String)], name: &str, value: &str) {
    let field = fields.iter_mut().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no field {name}"));
    field.1 = value.to_owned();
}

/// Posts `fields` to `action` as a browser does, following the redirect.
async fn post(browser: &mut Browser<'_>, action: &str, fields: &[(String, String)]) -> (StatusCode, String) {
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, headers, body) = browser.request("POST", action, Some(&pairs)).await;
    if status.is_redirection() {
        return browser.get(headers["location"].to_str().unwrap()).await;
    }
    (status, body)
}

async fn category(shop: &Shop, name: &str) -> String {
    let (s, c) = shop.send("POST", "/api/v1/admin/categories", &shop.as_staff(), Some(json!({"name": name}))).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

async fn product_api(shop: &Shop, id: &str) -> Value {
    let (s, p) = shop.send("GET", &format!("/api/v1/admin/products/{id}"), &shop.as_staff(), None).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    p
}

fn variant<'a>(product: &'a Value, sku: &str) -> &'a Value {
    product["variants"].as_array().unwrap().iter().find(|v| v["sku"] == sku).unwrap_or_else(|| panic!("no {sku} in {product}"))
}

/// A cap in two sizes in the Hats category, priced in dollars and in euros.
async fn wool_cap(shop: &Shop, hats: &str) -> String {
    let p = create(shop, json!({"title": "Wool Cap", "status": "active", "categories": [hats],
        "options": [{"name": "Size", "values": ["S", "M"]}],
        "variants": [{"sku": "CAP-S", "option_values": ["S"], "prices": {"USD": 6899, "EUR": 6500}, "weight_grams": 120},
                     {"sku": "CAP-M", "option_values": ["M"], "prices": {"USD": 7199}, "compare_at_prices": {"USD": 7999}, "weight_grams": 130}]})).await;
    stock(shop, "CAP-S", 5).await;
    p["id"].as_str().unwrap().to_owned()
}

/// A picture of the wool cap `id`, added on its pictures page in the console.
async fn cap_picture(admin: &mut Browser<'_>, id: &str) {
    let (_, page) = admin.get(&format!("/admin/products/{id}/pictures")).await;
    let csrf = between(&page, r#"name="csrf" value=""#, "\"").to_owned();
    let png = catalog::media::placeholder(40, 600).unwrap();
    let (status, _, _) = admin.post_multipart(&format!("/admin/products/{id}/pictures"), &[("csrf", &csrf), ("alt", "A grey wool cap")], Some(("image", "cap.png", &png))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

/// A guest's paid order of two mugs: the order, and the shipping amount paid.
async fn mug_order(shop: &Shop) -> (Value, i64) {
    shop.product("MUG-1", 1200, 5).await;
    let (cart, who) = shop.ready_cart(&[("MUG-1", 2)], None).await;
    let (status, order) = shop.checkout(&cart, &who, "tok_visa").await;
    assert!(status.is_success(), "{order}");
    let paid = order["shipping_method"]["amount"].as_i64().or_else(|| order["totals"]["shipping"]["amount"].as_i64()).unwrap();
    (order, paid)
}

/// The `value` of the input with id `id` on `page`.
fn input_value(page: &str, id: &str) -> String {
    let tag = between(page, &format!(r#"<input id="{id}""#), ">");
    attributes(tag).into_iter().find(|(k, _)| k == "value").map(|(_, v)| v).unwrap_or_default()
}

#[tokio::test]
async fn a_product_is_edited_from_its_page_and_saved_as_a_browser_sends_it() {
    let shop = Shop::new().await;
    let hats = category(&shop, "Hats").await;
    let scarves = category(&shop, "Scarves").await;
    let id = wool_cap(&shop, &hats).await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    let path = format!("/admin/products/{id}");

    // The editor: categories picked, prices in dollars, options and variants in tables, no JSON.
    let (status, editor) = admin.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{editor}");
    assert!(editor.contains(&format!(r#"name="categories" value="{hats}" checked>"#)), "Hats is chosen: {editor}");
    assert!(editor.contains(&format!(r#"name="categories" value="{scarves}">"#)), "Scarves is offered, not chosen: {editor}");
    assert!(editor.contains("Price (USD)") && editor.contains("Price of CAP-S (USD)"), "prices are named with their currency: {editor}");
    assert_eq!(input_value(&editor, "f-variant1-price"), "68.99");
    assert_eq!(input_value(&editor, "f-variant2-price"), "71.99");
    assert_eq!(input_value(&editor, "f-variant2-compare"), "79.99");
    assert_eq!(input_value(&editor, "f-option1-name"), "Size");
    assert_eq!(input_value(&editor, "f-option1-values"), "S, M");
    assert_eq!(input_value(&editor, "f-variant1-value1"), "S");
    assert!(!editor.contains("[{") && !editor.contains("&#34;id&#34;"), "nothing shown as JSON: {editor}");

    // Sent back untouched, it saves and changes nothing.
    let untouched = form_fields(&editor, r#"value="save""#);
    let (status, saved) = post(&mut admin, &path, &untouched).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert!(saved.contains("The product is saved."), "{saved}");
    let before = product_api(&shop, &id).await;
    assert_eq!(variant(&before, "CAP-S")["prices"]["USD"]["amount"], 6899);
    assert_eq!(before["categories"][0]["id"], hats.as_str());

    // A new title, price and category; a size renamed; a size added with its stock.
    let mut fields = form_fields(&saved, r#"value="save""#);
    set(&mut fields, "title", "Merino Cap");
    set(&mut fields, "variant1.price", "59.50");
    set(&mut fields, "option1.values", "S, Medium");
    set(&mut fields, "variant2.value1", "Medium");
    set(&mut fields, "new.sku", "CAP-L");
    set(&mut fields, "new.value1", "L");
    set(&mut fields, "new.price", "75");
    set(&mut fields, "new.weight", "140");
    set(&mut fields, "new.stock", "4");
    fields.retain(|(k, v)| !(k == "categories" && *v == hats));
    fields.push(("categories".into(), scarves.clone()));
    let (status, saved) = post(&mut admin, &path, &fields).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert!(saved.contains("The product is saved.") && saved.contains("<h1>Merino Cap</h1>"), "{saved}");
    let after = product_api(&shop, &id).await;
    assert_eq!(after["title"], "Merino Cap");
    let categories: Vec<&str> = after["categories"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(categories, [scarves.as_str()]);
    assert_eq!(after["options"], json!([{"name": "Size", "values": ["S", "Medium", "L"]}]), "{after}");
    let small = variant(&after, "CAP-S");
    assert_eq!((small["prices"]["USD"]["amount"].as_i64(), small["prices"]["EUR"]["amount"].as_i64()), (Some(5950), Some(6500)), "the euro price stays: {small}");
    let medium = variant(&after, "CAP-M");
    assert_eq!((medium["option_values"].clone(), medium["title"].as_str()), (json!(["Medium"]), Some("Medium")), "{medium}");
    assert_eq!((medium["prices"]["USD"]["amount"].as_i64(), medium["compare_at_prices"]["USD"]["amount"].as_i64()), (Some(7199), Some(7999)), "{medium}");
    let large = variant(&after, "CAP-L");
    assert_eq!((large["prices"]["USD"]["amount"].as_i64(), large["weight_grams"].as_i64(), large["on_hand"].as_i64()), (Some(7500), Some(140), Some(4)), "{large}");
    // The page shows what is saved.
    assert_eq!(input_value(&saved, "f-variant1-price"), "59.50");
    assert!(saved.contains(&format!(r#"name="categories" value="{scarves}" checked>"#)), "{saved}");

    // A variant removed; the old price ("was") cleared.
    let mut fields = form_fields(&saved, r#"value="save""#);
    fields.push(("variant3.remove".into(), "on".into()));
    set(&mut fields, "variant2.compare", "");
    let (status, saved) = post(&mut admin, &path, &fields).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    let after = product_api(&shop, &id).await;
    let skus: Vec<&str> = after["variants"].as_array().unwrap().iter().map(|v| v["sku"].as_str().unwrap()).collect();
    assert_eq!(skus, ["CAP-S", "CAP-M"], "{after}");
    assert!(variant(&after, "CAP-M")["compare_at_prices"].get("USD").is_none(), "{after}");

    // The product is deleted from its page, back to the list.
    let (status, list) = admin.submit(&saved, &path, &[("action", "delete")]).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(list.contains("Done: Delete the product.") && !list.contains("Merino Cap"), "{list}");
}

#[tokio::test]
async fn a_bad_price_is_refused_at_its_field_and_nothing_is_saved() {
    let shop = Shop::new().await;
    let hats = category(&shop, "Hats").await;
    let id = wool_cap(&shop, &hats).await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    let path = format!("/admin/products/{id}");
    let (_, editor) = admin.get(&path).await;

    let mut fields = form_fields(&editor, r#"value="save""#);
    set(&mut fields, "title", "Renamed Cap");
    set(&mut fields, "variant1.price", "68,99 dollars");
    set(&mut fields, "variant2.weight", "-3");
    set(&mut fields, "new.price", "12.00");
    let (status, refused) = post(&mut admin, &path, &fields).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    // At the field: marked, described, and what was typed kept.
    assert!(refused.contains(r#"<input id="f-variant1-price" name="variant1.price" value="68,99 dollars" inputmode="decimal" class="amount" aria-invalid="true" aria-describedby="f-variant1-price-error">"#), "{refused}");
    assert_eq!(between(&refused, r#"<small class="field-error" id="f-variant1-price-error">"#, "</small>"), "Enter the price of CAP-S as an amount in USD, like 68.99.");
    assert_eq!(between(&refused, r#"<small class="field-error" id="f-variant2-weight-error">"#, "</small>"), "Enter the weight in whole grams, e.g. 350.");
    assert_eq!(between(&refused, r#"<small class="field-error" id="f-new-sku-error">"#, "</small>"), "Give the new variant a SKU, or leave its row empty.");
    assert_eq!(input_value(&refused, "f-title"), "Renamed Cap", "the form keeps what was typed");
    // The summary links to each field.
    let summary = between(&refused, r#"<div class="alert" role="alert">"#, "</div>");
    assert!(summary.contains("3 fields need a change") && summary.contains(r##"<a href="#f-variant1-price">"##), "{summary}");
    let kept = product_api(&shop, &id).await;
    assert_eq!((kept["title"].as_str(), variant(&kept, "CAP-S")["prices"]["USD"]["amount"].as_i64()), (Some("Wool Cap"), Some(6899)), "nothing saved");

    // An amount too large, and a price left empty.
    set(&mut fields, "variant1.price", "99999999999");
    set(&mut fields, "variant2.price", "");
    set(&mut fields, "variant2.weight", "130");
    set(&mut fields, "new.price", "");
    let (status, refused) = post(&mut admin, &path, &fields).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(between(&refused, r#"id="f-variant1-price-error">"#, "</small>"), "Enter the price of CAP-S under 10000000.00 USD.");
    assert_eq!(between(&refused, r#"id="f-variant2-price-error">"#, "</small>"), "Enter the price of CAP-M, like 68.99.");

    // An option with values but no name, and one that cannot be added to a product with several variants.
    set(&mut fields, "variant1.price", "68.99");
    set(&mut fields, "variant2.price", "71.99");
    set(&mut fields, "option2.values", "Red, Blue");
    let (status, refused) = post(&mut admin, &path, &fields).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(between(&refused, r#"id="f-option2-name-error">"#, "</small>"), "Name this option, e.g. Size.");
    set(&mut fields, "option2.name", "Colour");
    let (status, refused) = post(&mut admin, &path, &fields).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(between(&refused, r#"id="f-option2-name-error">"#, "</small>").starts_with("Options can be added only while the product has none"), "{refused}");
    assert_eq!(product_api(&shop, &id).await["title"], "Wool Cap");
}

#[tokio::test]
async fn a_new_product_is_put_in_categories_and_a_bad_price_is_named_at_its_field() {
    let shop = Shop::new().await;
    let hats = category(&shop, "Hats").await;
    let (s, wool) = shop.send("POST", "/api/v1/admin/categories", &shop.as_staff(), Some(json!({"name": "Wool", "parent_id": hats}))).await;
    assert_eq!(s, StatusCode::CREATED, "{wool}");
    let wool = wool["id"].as_str().unwrap().to_owned();
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    let (status, form) = admin.get("/admin/products/new").await;
    assert_eq!(status, StatusCode::OK, "{form}");
    assert!(form.contains(&format!(r#"name="categories" value="{wool}"> Hats › Wool</label>"#)), "sub-categories named with their parent: {form}");
    let csrf = between(&form, r#"name="csrf" value=""#, "\"").to_owned();

    let typed = [("csrf", csrf.as_str()), ("title", "Beret"), ("status", "active"), ("categories", hats.as_str()), ("categories", wool.as_str()),
        ("option", ""), ("sku1", "BERET-1"), ("price1", "twelve"), ("stock1", "3")];
    let (status, _, refused) = admin.post_multipart("/admin/products/new", &typed, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(between(&refused, r#"<small class="field-error" id="price1-error">"#, "</small>"), "Enter the price of BERET-1 as an amount in USD, like 68.99.");
    assert!(refused.contains(r#"<input id="title" name="title" value="Beret" required>"#), "what was typed is kept: {refused}");
    assert!(refused.contains(&format!(r#"value="{wool}" checked>"#)), "the categories chosen are kept: {refused}");

    let typed = [("csrf", csrf.as_str()), ("title", "Beret"), ("status", "active"), ("categories", hats.as_str()), ("categories", wool.as_str()),
        ("option", ""), ("sku1", "BERET-1"), ("price1", "12.50"), ("stock1", "3")];
    let (status, headers, _) = admin.post_multipart("/admin/products/new", &typed, None).await;
    assert_eq!((status, headers.get("location").map(|l| l.to_str().unwrap())), (StatusCode::SEE_OTHER, Some("/admin/products")));
    let (_, list) = shop.send("GET", "/api/v1/admin/products?q=beret", &shop.as_staff(), None).await;
    let beret = &list["data"][0];
    let mut ids: Vec<&str> = beret["categories"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = [hats.as_str(), wool.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "{beret}");
    assert_eq!((beret["variants"][0]["prices"]["USD"]["amount"].as_i64(), beret["variants"][0]["on_hand"].as_i64()), (Some(1250), Some(3)), "{beret}");
}

#[tokio::test]
async fn the_products_list_shows_each_product_s_picture_price_and_stock() {
    let shop = Shop::new().await;
    let hats = category(&shop, "Hats").await;
    let id = wool_cap(&shop, &hats).await;
    create(&shop, json!({"title": "Gift Card", "status": "active", "variants": [{"sku": "GIFT-1", "prices": {"USD": 2500}, "track_inventory": false}]})).await;
    create(&shop, json!({"title": "Silk Scarf", "status": "active", "variants": [{"sku": "SCARF-1", "prices": {"USD": 4000}}]})).await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    cap_picture(&mut admin, &id).await;

    let (status, list) = admin.get("/admin/products").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let head = between(&list, "<thead>", "</thead>");
    assert!(head.contains(">Picture</th>") && head.contains(">Price</th>") && head.contains(">Stock</th>"), "{head}");
    let row = |title: &str| list.split("<tr>").find(|r| r.contains(title)).unwrap_or_else(|| panic!("no {title} in {list}")).to_owned();
    let cap = row("Wool Cap");
    let img = attributes(between(&cap, "<img", ">"));
    let attr = |k: &str| img.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {k} in {cap}"));
    assert!(attr("src").starts_with("/media/") && attr("width") == "56" && attr("height") == "56", "a square thumbnail, sized: {cap}");
    assert!(cap.contains("68.99") && cap.contains("71.99"), "from the lowest price to the highest: {cap}");
    assert!(cap.contains("5 available"), "{cap}");
    let served = shop.app.router().oneshot(Request::builder().uri(attr("src")).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert!(served.headers()["content-type"].to_str().unwrap().starts_with("image/"), "the thumbnail is served");
    assert!(row("Silk Scarf").contains("Sold out") && row("Silk Scarf").contains("40.00"), "{}", row("Silk Scarf"));
    assert!(row("Gift Card").contains("Not counted") && !row("Gift Card").contains("<img"), "{}", row("Gift Card"));
}

#[tokio::test]
async fn the_order_page_shows_the_shipping_method_the_customer_paid_for() {
    let shop = Shop::new().await;
    let (order, paid) = mug_order(&shop).await;
    assert!(paid > 0, "{order}");
    let mut staff = staff_browser(&shop, "om@example.com", Role::OrderManager).await;
    let (status, page) = staff.get(&format!("/admin/orders/{}", order["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let method = between(&page, r#"<p class="shipping-method">"#, "</p>");
    let price = format!("{}.{:02}", paid / 100, paid % 100);
    assert!(method.contains("<strong>Ground</strong>") && method.contains(&price) && method.contains("3–5 days"), "{method}");
}

#[tokio::test]
async fn staff_land_on_the_console_and_customers_on_their_account() {
    let shop = Shop::new().await;
    shop.user("om@example.com", Role::OrderManager).await;
    shop.user("ada@example.com", Role::Customer).await;
    let sign_in = |email: &'static str| {
        let shop = &shop;
        async move {
            let (status, headers) = Browser::new(shop).post_sign_in(email).await;
            assert!(status.is_redirection(), "{status}");
            headers["location"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(sign_in("om@example.com").await, "/admin");
    assert_eq!(sign_in("ada@example.com").await, "/account");

    // Staff who asked for a console page before signing in land on it.
    let mut browser = Browser::new(&shop);
    let (status, headers, _) = browser.request("GET", "/admin/orders?status=paid", None).await;
    assert_eq!((status.is_redirection(), headers["location"].to_str().unwrap()), (true, "/account/sign-in"));
    let (_, headers) = browser.post_sign_in("om@example.com").await;
    assert_eq!(headers["location"], "/admin/orders?status=paid");
    let (status, orders) = browser.get("/admin").await;
    assert_eq!(status, StatusCode::OK, "{orders}");
    // Asked once: signing in again lands on the console's dashboard.
    let (_, headers) = browser.post_sign_in("om@example.com").await;
    assert_eq!(headers["location"], "/admin");

    // A remembered page is never another site's, and a customer is never led into the console.
    for (forged, email, lands) in [("Ly9ldmlsLmV4YW1wbGUvYWRtaW4", "om@example.com", "/admin"), ("L2FkbWluL29yZGVycw", "ada@example.com", "/account")] {
        let mut browser = Browser::new(&shop);
        let (_, form) = browser.get("/account/sign-in").await;
        let csrf = between(&form, r#"name="csrf" value=""#, "\"").to_owned();
        browser.cookies.insert("console_page".into(), forged.into());
        let (_, headers, _) = browser.request("POST", "/account/sign-in", Some(&[("csrf", &csrf), ("email", email), ("password", "a long passphrase")])).await;
        assert_eq!(headers["location"], lands, "{forged}");
    }
}

/// The menu's groups on `page`, each with its links: (heading, labels).
fn menu(page: &str) -> Vec<(String, Vec<String>)> {
    let nav = between(page, r#"<nav class="menu" aria-label="Console">"#, "</nav>");
    nav.split(r#"<div class="menu-group">"#)
        .skip(1)
        .map(|group| {
            let id = between(group, r#"<span class="menu-heading" id=""#, "\"");
            let heading = between(group, &format!(r#"id="{id}">"#), "</span>").to_owned();
            assert!(group.contains(&format!(r#"<ul aria-labelledby="{id}">"#)), "the list is labelled by its heading: {group}");
            let links = group.split("<li><a href=").skip(1).map(|l| between(l, ">", "</a>").to_owned()).collect();
            (heading, links)
        })
        .collect()
}

#[tokio::test]
async fn the_console_menu_is_grouped_and_shows_each_role_only_what_it_may_open() {
    let shop = Shop::with(|c| c.services.extend(["search".to_owned(), "notify".to_owned()])).await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    let (_, page) = admin.get("/admin/products").await;
    let groups = menu(&page);
    let headings: Vec<&str> = groups.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(headings, ["Sales", "Catalog", "Customers", "Marketing", "Settings"]);
    let of = |groups: &[(String, Vec<String>)], heading: &str| groups.iter().find(|g| g.0 == heading).map(|g| g.1.join(", ")).unwrap_or_default();
    assert_eq!(of(&groups, "Sales"), "Orders, Returns");
    assert_eq!(of(&groups, "Catalog"), "Products, Inventory, Locations, Categories, Synonyms, Searches without results");
    assert_eq!(of(&groups, "Customers"), "Customers, Notifications, Mailbox");
    assert_eq!(of(&groups, "Marketing"), "Discounts, Templates");
    assert_eq!(of(&groups, "Settings"), "Shipping, Taxes, Webhooks, Staff, API keys, Audit log");
    assert!(page.contains(r#"<a href="/admin/products" aria-current="page">Products</a>"#), "the page shown is marked: {page}");
    let (_, dashboard) = admin.get("/admin").await;
    assert!(dashboard.contains(r#"<a href="/admin" aria-current="page">Dashboard</a>"#));

    let mut catalog = staff_browser(&shop, "cm@example.com", Role::CatalogManager).await;
    let (_, page) = catalog.get("/admin").await;
    let groups = menu(&page);
    assert_eq!(groups.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(), ["Catalog"], "{groups:?}");

    let mut orders = staff_browser(&shop, "om@example.com", Role::OrderManager).await;
    let (_, page) = orders.get("/admin").await;
    let groups = menu(&page);
    assert_eq!(groups.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(), ["Sales", "Catalog", "Customers"], "{groups:?}");
    assert_eq!(of(&groups, "Catalog"), "Inventory, Locations", "stock, not the catalog's editing");

    let mut support = staff_browser(&shop, "help@example.com", Role::Support).await;
    let (_, page) = support.get("/admin").await;
    let groups = menu(&page);
    assert_eq!(groups.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(), ["Sales", "Customers"], "{groups:?}");
    assert_eq!(of(&groups, "Sales"), "Orders, Returns");
}

#[tokio::test]
async fn a_catalog_manager_saves_a_product_edit_in_the_browser() {
    let Some(driver) = Driver::start().await else { return };
    let shop = Shop::new().await;
    let hats = category(&shop, "Hats").await;
    let scarves = category(&shop, "Scarves").await;
    let id = wool_cap(&shop, &hats).await;
    shop.user("cm@example.com", Role::CatalogManager).await;
    let base = shop.serve().await;
    let window = driver.session(1280, 900).await;

    // Staff sign in where shoppers do, and land on the console.
    window.sign_in(&base, "cm@example.com", "/admin").await;
    window.wait_text("nav.menu", "Products").await;
    window.screenshot("desktop-admin-dashboard-menu").await;

    window.goto(&format!("{base}/admin/products")).await;
    window.wait_text("main h1", "Products").await;
    window.screenshot("desktop-admin-products").await;
    window.click("table.lines a").await;
    window.wait_title("Wool Cap").await;
    let price = window.execute("return document.querySelector('#f-variant1-price').value;", json!([])).await;
    assert_eq!(price, "68.99");
    window.fill("#f-title", "Merino Cap").await;
    window.fill("#f-variant1-price", "59.50").await;
    window.click(&format!("input[name=categories][value='{hats}']")).await;
    window.click(&format!("input[name=categories][value='{scarves}']")).await;
    window.screenshot("desktop-admin-product-editor").await;
    window.click("form.editor button[type=submit]").await;
    window.wait_text("p.success", "The product is saved.").await;
    assert_eq!(window.text("main h1").await, "Merino Cap");
    let shown = window.execute(
        "return [document.querySelector('#f-variant1-price').value, document.querySelector(\"input[name=categories][value='\" + arguments[0] + \"']\").checked, document.querySelector(\"input[name=categories][value='\" + arguments[1] + \"']\").checked];",
        json!([scarves, hats]),
    ).await;
    assert_eq!(shown, json!(["59.50", true, false]), "the page shows what is saved");
    window.screenshot("desktop-admin-product-saved").await;
    window.execute("document.querySelector('#variants-heading').scrollIntoView();", json!([])).await;
    window.screenshot("desktop-admin-product-variants").await;
    let saved = product_api(&shop, &id).await;
    assert_eq!(saved["title"], "Merino Cap");
    assert_eq!(variant(&saved, "CAP-S")["prices"]["USD"]["amount"], 5950);
    assert_eq!(saved["categories"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect::<Vec<_>>(), [scarves.as_str()]);

    // A bad price is pointed out at its field, in the browser too.
    window.fill("#f-variant2-price", "7l.99").await;
    window.click("form.editor button[type=submit]").await;
    window.wait_text("#f-variant2-price-error", "Enter the price of CAP-M as an amount in USD, like 68.99.").await;
    window.quit().await;

    // On a phone, the editor and the list fit the screen (their tables scroll in their box).
    let phone = driver.session(390, 844).await;
    phone.sign_in(&base, "cm@example.com", "/admin").await;
    phone.console_pages_fit(&base, &[("dashboard-menu", "/admin".to_owned()), ("products", "/admin/products".to_owned()), ("product-editor", format!("/admin/products/{id}"))]).await;
    phone.quit().await;

    // An admin's menu: every group, on a wide screen and on a phone.
    shop.user("boss@example.com", Role::Admin).await;
    for (name, width, height) in [("desktop", 1280, 900), ("phone", 390, 844)] {
        let window = driver.session(width, height).await;
        window.sign_in(&base, "boss@example.com", "/admin").await;
        let menu = window.text("nav.menu").await.to_uppercase();
        assert!(["SALES", "CATALOG", "CUSTOMERS", "MARKETING", "SETTINGS"].iter().all(|g| menu.contains(g)), "{menu}");
        let overflow = window.execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", json!([])).await;
        window.screenshot(&format!("{name}-admin-menu-of-an-admin")).await;
        assert_eq!(overflow, 0, "the admin's dashboard is wider than the {name}");
        window.quit().await;
    }
}

/// A price as the shop shows it (`$5.00`).
fn price(amount: i64) -> String {
    kernel::money::Currency::parse("USD").unwrap().format_price(amount)
}

#[tokio::test]
async fn the_console_shows_prices_in_the_shop_s_money_format() {
    let shop = Shop::new().await;
    let (order, paid) = mug_order(&shop).await;
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    let (_, page) = admin.get(&format!("/admin/orders/{}", order["id"].as_str().unwrap())).await;
    let method = unescape(between(&page, r#"<p class="shipping-method">"#, "</p>"));
    assert!(method.contains(&format!(" · {} · ", price(paid))) && !method.contains("USD"), "{method}");

    // A shipping method's page and the list name its amounts as prices, not in cents.
    let (s, made) = shop.send("POST", "/api/v1/admin/shipping-methods", &shop.as_staff(), Some(json!({
        "name": "Courier", "countries": ["US"], "currency": "USD", "flat_amount": 750, "free_above": 10000, "min_days": 1, "max_days": 2, "active": true}))).await;
    assert!(s.is_success(), "{made}");
    let (status, record) = admin.get(&format!("/admin/shipping/{}", made["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK, "{record}");
    let record = unescape(&record);
    assert!(record.contains(&format!(r#"flat amount</span><span>{}</span>"#, price(750))), "{record}");
    assert!(record.contains(&format!(r#"free above</span><span>{}</span>"#, price(10000))), "{record}");
    let (_, list) = admin.get("/admin/shipping").await;
    let row = unescape(list.split("<tr>").find(|r| r.contains("Courier")).unwrap_or_else(|| panic!("no Courier in {list}")));
    assert!(row.contains(&price(750)) && row.contains(&price(10000)), "{row}");
}

/// Whether `css` matches boxes that all lie inside the window's width.
const INSIDE: &str = "const all = [...document.querySelectorAll(arguments[0])]; \
    return all.length > 0 && all.every(e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.left >= 0 && r.right <= window.innerWidth + 0.5; });";

#[tokio::test]
async fn on_a_phone_the_console_s_lists_order_and_dashboard_fit_and_labels_stay_with_their_fields() {
    let Some(driver) = Driver::start().await else { return };
    let shop = Shop::new().await;
    let hats = category(&shop, "Hats").await;
    let id = wool_cap(&shop, &hats).await;
    create(&shop, json!({"title": "Enamel Camping Mug With A Long Name", "status": "active", "variants": [{"sku": "MUG-LONG-000001-XL", "prices": {"USD": 1200}, "low_stock_threshold": 3}]})).await;
    stock(&shop, "MUG-LONG-000001-XL", 2).await;
    shop.product("TEAPOT-000042-CERAMIC", 3200, 9).await;
    let (cart, who) = shop.ready_cart(&[("TEAPOT-000042-CERAMIC", 2)], None).await;
    let (status, order) = shop.checkout(&cart, &who, "tok_visa").await;
    assert!(status.is_success(), "{order}");
    let mut admin = staff_browser(&shop, "boss@example.com", Role::Admin).await;
    cap_picture(&mut admin, &id).await;
    let base = shop.serve().await;

    let phone = driver.session(390, 844).await;
    phone.sign_in(&base, "boss@example.com", "/admin").await;
    let wide = "return document.documentElement.scrollWidth - document.documentElement.clientWidth;";

    // The products list: each filter's label on the line of its field; the picture, name, price and stock in view.
    phone.goto(&format!("{base}/admin/products")).await;
    phone.wait_text("main h1", "Products").await;
    phone.screenshot("phone-console-products-list").await;
    let apart = phone.execute(
        "return [...document.querySelectorAll('form.filters-bar label')].filter(l => { const f = document.getElementById(l.htmlFor); \
         const a = l.getBoundingClientRect(), b = f.getBoundingClientRect(); return Math.abs((a.top + a.bottom) / 2 - (b.top + b.bottom) / 2) > b.height / 2 || a.right > b.left; }).map(l => l.textContent);",
        json!([]),
    ).await;
    assert_eq!(apart, json!([]), "labels away from their fields");
    for css in ["tr:has(img.thumb) img.thumb", "tr:has(img.thumb) a[href^='/admin/products/']", "tr:has(img.thumb) td[data-label='Price']", "tr:has(img.thumb) td[data-label='Stock']"] {
        assert_eq!(phone.execute(INSIDE, json!([css])).await, json!(true), "{css} is not in view on a phone");
    }
    let row = phone.execute("return document.querySelector('tr:has(img.thumb)').innerText;", json!([])).await;
    let row = row.as_str().unwrap_or_default();
    assert!(row.contains("Wool Cap") && row.contains("68.99") && row.contains("5 available"), "{row}");
    assert_eq!(phone.execute(wide, json!([])).await, json!(0), "the products list is wider than the phone");

    // The order: its items fit, and the refund's checkbox sits before its label.
    phone.goto(&format!("{base}/admin/orders/{}", order["id"].as_str().unwrap())).await;
    phone.wait_text("main h1", "Order").await;
    phone.screenshot("phone-console-order-page").await;
    assert_eq!(phone.execute(INSIDE, json!(["main table.lines th, main table.lines td"])).await, json!(true), "the items are cut at the edge");
    let items = phone.execute("return [...document.querySelectorAll('main table.lines')].map(t => t.innerText).join(' ');", json!([])).await;
    assert!(items.as_str().unwrap_or_default().contains("TEAPOT-000042-CERAMIC"), "the SKU is shown: {items}");
    let check = phone.execute(
        "const c = document.querySelector('input[type=checkbox][name=restock]'); const l = document.querySelector('label[for=\"' + c.id + '\"]'); \
         const a = c.getBoundingClientRect(), b = l.getBoundingClientRect(); return a.right <= b.left && Math.abs((a.top + a.bottom) / 2 - (b.top + b.bottom) / 2) < b.height / 2;",
        json!([]),
    ).await;
    assert_eq!(check, json!(true), "the refund's checkbox is not before its label");
    assert_eq!(phone.execute(wide, json!([])).await, json!(0), "the order page is wider than the phone");

    // The dashboard's low stock fits.
    phone.goto(&format!("{base}/admin")).await;
    phone.wait_text("#low-stock", "Low stock").await;
    phone.screenshot("phone-console-dashboard-low-stock").await;
    assert_eq!(phone.execute(INSIDE, json!(["main table.lines th, main table.lines td"])).await, json!(true), "the low-stock table is cut at the edge");
    phone.quit().await;

    // On a wide screen the menu's dividing line runs the page's whole height, past the first screen.
    let window = driver.session(1280, 600).await;
    window.sign_in(&base, "boss@example.com", "/admin").await;
    window.goto(&format!("{base}/admin/products/{id}")).await;
    window.wait_title("Wool Cap").await;
    let spans = window.execute(
        "const page = document.documentElement.scrollHeight, menu = document.querySelector('header.top'), body = getComputedStyle(document.body); \
         const line = parseFloat(getComputedStyle(menu).borderRightWidth) > 0 ? menu.getBoundingClientRect().height : (body.backgroundImage.includes('gradient') ? document.body.getBoundingClientRect().height : 0); \
         return [page > window.innerHeight, line >= page - 1];",
        json!([]),
    ).await;
    assert_eq!(spans, json!([true, true]), "the menu's line stops part of the way down");
    window.quit().await;
}
