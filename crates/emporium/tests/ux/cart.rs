//! The cart and checkout as a shopper meets them: the payment page prices
//! the shipping it shows as chosen (the cheapest by default) and charges
//! exactly the total it shows; quantities are held to what can be bought,
//! with the product named; lines name products and options, the header
//! counts the cart, adding says what was added; checkout has steps, a
//! summary, a country list, errors at their fields and a full confirmation.


use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::Shop;
use crate::support::pages::{Browser, between, create, page, picture, stock, storefront};
use crate::support::webdriver::Driver;

/// A lamp in two finishes: black (38 left) and brass (none on hand, sold on backorder).
async fn lamp(shop: &Shop) -> Value {
    let p = create(shop, json!({"title": "Brass Desk Lamp", "status": "active", "brand": "Lumen",
        "options": [{"name": "Finish", "values": ["Black", "Brass"]}],
        "variants": [{"sku": "LAMP-BK", "option_values": ["Black"], "prices": {"USD": 6899}, "weight_grams": 900},
                     {"sku": "LAMP-BR", "option_values": ["Brass"], "prices": {"USD": 8900}, "weight_grams": 900, "allow_backorder": true}]})).await;
    stock(shop, "LAMP-BK", 38).await;
    stock(shop, "LAMP-BR", 0).await;
    p
}

/// An express method dearer than the shop's ground one, named to be listed first.
async fn express(shop: &Shop) -> String {
    let (s, m) = shop.send("POST", "/api/v1/admin/shipping-methods", &shop.as_staff(), Some(json!({
        "name": "Express", "countries": ["US"], "currency": "USD", "flat_amount": 1995, "min_days": 1, "max_days": 2}))).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    m["id"].as_str().unwrap().to_owned()
}

/// The address form's fields for a Californian address (`country` as given).
fn address(country: &str) -> Vec<(&'static str, String)> {
    [("email", "ada@example.com"), ("name", "Ada Lovelace"), ("line1", "1 Market St"), ("city", "San Francisco"), ("region", "CA"), ("postal_code", "94105")]
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .chain([("country", country.to_owned())])
        .collect()
}

fn fields<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The value of the shipping method a payment page shows as chosen.
fn chosen_method(pay: &str) -> String {
    let radios: Vec<&str> = pay.split(r#"<input type="radio" name="shipping_method""#).skip(1).collect();
    let chosen: Vec<&&str> = radios.iter().filter(|r| r.split('>').next().unwrap().contains(" checked")).collect();
    assert_eq!(chosen.len(), 1, "one method is shown as chosen: {pay}");
    between(chosen[0], r#"value=""#, "\"").to_owned()
}

/// The amount a payment page sends with the payment, and the total it shows.
fn shown_total(pay: &str) -> (i64, String) {
    let amount = between(pay, r#"name="total_amount" id="total-amount" value=""#, "\"").parse().unwrap();
    let grand = between(between(pay, r#"<tr class="grand">"#, "</tr>"), "<td>", "</td>").to_owned();
    (amount, grand)
}

/// `7899` as every page writes it somewhere in its price: `78.99`.
fn decimal(amount: i64) -> String {
    format!("{}.{:02}", amount / 100, amount % 100)
}

/// A guest with the black lamp in the cart and the address given: the payment page.
async fn at_payment<'a>(shop: &'a Shop) -> (Browser<'a>, String) {
    let mut browser = Browser::new(shop);
    let (_, product) = browser.get("/products/brass-desk-lamp").await;
    let (status, cart) = browser.submit(&product, "/cart/items", &[("sku", "LAMP-BK"), ("quantity", "1")]).await;
    assert_eq!(status, StatusCode::OK, "{cart}");
    let (_, form) = browser.get("/checkout").await;
    let typed = address("US");
    let (status, pay) = browser.submit(&form, "/checkout/address", &fields(&typed)).await;
    assert_eq!(status, StatusCode::OK, "{pay}");
    (browser, pay)
}

async fn orders(shop: &Shop) -> Vec<Value> {
    let (_, list) = shop.send("GET", "/api/v1/admin/orders", &shop.as_staff(), None).await;
    list["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_payment_page_prices_the_cheapest_shipping_it_shows_and_charges_exactly_its_total() {
    let shop = storefront().await;
    lamp(&shop).await;
    let express = express(&shop).await;
    let (mut browser, pay) = at_payment(&shop).await;

    // Ground (5.00) is cheaper than Express (19.95, listed first by the shop): it is chosen and priced.
    let ground = chosen_method(&pay);
    assert_ne!(ground, express);
    assert!(pay.find("Ground").unwrap() < pay.find("Express").unwrap(), "the cheapest first: {pay}");
    let (amount, grand) = shown_total(&pay);
    assert_eq!(amount, 6899 + 500 + 500, "the lamp, ground shipping and California's tax: {pay}");
    assert!(grand.contains(&decimal(amount)) && pay.contains(&format!("Pay {grand}")), "{grand}");
    let cart_id = browser.cookies["cart_id"].clone();
    let guest = crate::support::Who { secret: browser.cookies.get("cart_secret").cloned(), ..Default::default() };
    let (_, cart) = shop.send("GET", &format!("/api/v1/carts/{cart_id}"), &guest, None).await;
    assert_eq!((cart["shipping_method"]["id"].as_str(), cart["totals"]["total"]["amount"].as_i64()), (Some(ground.as_str()), Some(amount)), "the cart is priced as shown");

    // Choosing Express (the form's "Update the total", as without script) shows its total.
    let (status, pay) = browser.submit(&pay, "/checkout/pay", &[("shipping_method", &express), ("update", "shipping")]).await;
    assert_eq!(status, StatusCode::OK, "{pay}");
    assert_eq!(chosen_method(&pay), express);
    let (with_express, grand) = shown_total(&pay);
    assert_eq!(with_express, 6899 + 1995 + 500);
    assert!(grand.contains(&decimal(with_express)), "{grand}");
    assert!(orders(&shop).await.is_empty(), "choosing is not paying");

    // Paying with a method the page did not price (a radio changed, no update) charges nothing.
    let (status, changed) = browser.submit(&pay, "/checkout/pay", &[("shipping_method", &ground), ("token", "tok_visa"),
        ("total_amount", &with_express.to_string()), ("total_currency", "USD")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{changed}");
    assert!(changed.contains("Shipping is now Ground") && changed.contains("Nothing was charged"), "{changed}");
    assert!(orders(&shop).await.is_empty(), "nothing charged unseen");
    let (shown, _) = shown_total(&changed);
    assert_eq!((chosen_method(&changed), shown), (ground.clone(), amount));

    // Paying from the page charges exactly the total it shows.
    let (status, confirmation) = browser.submit(&changed, "/checkout/pay", &[("shipping_method", &ground), ("token", "tok_visa"),
        ("total_amount", &shown.to_string()), ("total_currency", "USD")]).await;
    assert_eq!(status, StatusCode::OK, "{confirmation}");
    let placed = orders(&shop).await;
    let (_, order) = shop.send("GET", &format!("/api/v1/admin/orders/{}", placed[0]["id"].as_str().unwrap()), &shop.as_staff(), None).await;
    assert_eq!(order["totals"]["total"]["amount"], shown, "{order}");
    assert_eq!(order["payments"][0]["amount"]["amount"], shown, "the card is charged what was shown");
    assert_eq!(order["shipping_method"]["name"], "Ground");
}

#[tokio::test]
async fn the_api_charges_nothing_but_the_total_a_client_was_shown() {
    let shop = Shop::new().await;
    shop.product("MUG-1", 1200, 5).await;
    let (cart, who) = shop.ready_cart(&[("MUG-1", 1)], None).await;
    let (_, view) = shop.send("GET", &format!("/api/v1/carts/{cart}"), &who, None).await;
    let total = view["totals"]["total"]["amount"].as_i64().unwrap();
    let pay = |expected: i64| json!({"payment": {"provider": "test", "token": "tok_visa"}, "expected_total": {"amount": expected, "currency": "USD"}});
    let (status, err) = shop.send("POST", &format!("/api/v1/carts/{cart}/checkout"), &who, Some(pay(total - 1))).await;
    assert_eq!((status, err["error"]["code"].as_str(), err["error"]["field"].as_str()), (StatusCode::CONFLICT, Some("total_changed"), Some("expected_total")), "{err}");
    let (_, still) = shop.send("GET", &format!("/api/v1/carts/{cart}"), &who, None).await;
    assert_eq!(still["status"], "open", "nothing was placed");
    let (status, order) = shop.send("POST", &format!("/api/v1/carts/{cart}/checkout"), &who, Some(pay(total))).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!((order["totals"]["total"]["amount"].as_i64(), order["payments"][0]["amount"]["amount"].as_i64()), (Some(total), Some(total)));
    assert_eq!(order["payments"][0]["method"], "Visa ending 4242");
}

#[tokio::test]
async fn quantities_are_held_to_what_can_be_bought_and_the_product_is_named() {
    let shop = storefront().await;
    lamp(&shop).await;
    let mut browser = Browser::new(&shop);
    let (_, product) = browser.get("/products/brass-desk-lamp").await;

    // 999 when 38 are left: the cart page says so, and holds nothing.
    let (status, refused) = browser.submit(&product, "/cart/items", &[("sku", "LAMP-BK"), ("quantity", "999")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused.contains(r#"<p class="alert" role="alert">Only 38 of Brass Desk Lamp — Black are left</p>"#), "{refused}");
    assert!(refused.contains("Your cart is empty") && refused.contains(r#"<a class="brand" href="/">"#), "a page of the shop, no cart of 999: {refused}");

    // Two: the page says what was added, the line names the product and its option, the header counts.
    let (status, cart) = browser.submit(&product, "/cart/items", &[("sku", "LAMP-BK"), ("quantity", "2")]).await;
    assert_eq!(status, StatusCode::OK, "{cart}");
    assert!(cart.contains(r#"<p class="success" role="status">Added Brass Desk Lamp to your cart."#), "{cart}");
    let lines = between(&cart, "<tbody>", "</tbody>");
    assert!(lines.contains(r#"<a href="/products/brass-desk-lamp">Brass Desk Lamp</a><span class="options">Finish: Black</span>"#), "{lines}");
    assert!(!lines.contains("LAMP-BK"), "no SKU on the line: {lines}");
    assert!(cart.contains(r#"<a href="/cart">Cart <span class="cart-count">2<span class="hidden"> items</span></span></a>"#), "{cart}");

    // Raising it past what is left is refused the same way; the line keeps its 2.
    let item = between(&cart, r#"action="/cart/items/"#, "\"").to_owned();
    let (status, refused) = browser.submit(&cart, &format!("/cart/items/{item}"), &[("quantity", "999")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused.contains("Only 38 of Brass Desk Lamp — Black are left"), "{refused}");
    assert!(refused.contains(r#"value="2" inputmode="numeric""#) && refused.contains(r#"max="38""#), "{refused}");
    let (status, more) = browser.submit(&cart, "/cart/items", &[("sku", "LAMP-BK"), ("quantity", "37")]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(more.contains("Only 38 of Brass Desk Lamp — Black are left, and 2 are already in your cart"), "{more}");
    let (status, junk) = browser.submit(&cart, &format!("/cart/items/{item}"), &[("quantity", "lots")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(junk.contains("Enter a quantity from 0 (to remove it) to 999."), "{junk}");

    // Backorders are not capped: the brass lamp, none on hand, is sold by the hundred.
    let (status, cart) = browser.submit(&product, "/cart/items", &[("sku", "LAMP-BR"), ("quantity", "500")]).await;
    assert_eq!(status, StatusCode::OK, "{cart}");
    assert!(cart.contains("Finish: Brass") && cart.contains(r#"<span class="cart-count">502<"#), "{cart}");

    // Every page's header counts the cart for its holder, and no one else's.
    let (_, search) = browser.get("/search?q=lamp").await;
    assert!(search.contains(r#"Cart <span class="cart-count">502<"#), "{search}");
    for _ in 0..2 {
        // Twice: the second answer may be a kept page; neither has a count.
        let (_, _, shared) = page(&shop, "/products/brass-desk-lamp").await;
        assert!(shared.contains(r#"<a href="/cart">Cart<!--cart-count--></a>"#) && !shared.contains("cart-count\""), "{shared}");
    }
    let (_, mine) = browser.get("/products/brass-desk-lamp").await;
    assert!(mine.contains(r#"<span class="cart-count">502<"#), "{mine}");
    browser.cookies.insert("cart_count".into(), format!("{}.<b>9</b>", browser.cookies["cart_id"]));
    let (_, tampered) = browser.get("/search?q=lamp").await;
    assert!(!tampered.contains("cart-count\"") && !tampered.contains("<b>9"), "a cookie that is not a count shows nothing: {tampered}");
    let (_, cart) = browser.get("/cart").await;
    assert!(cart.contains(r#"<span class="cart-count">502<"#), "the cart page puts the count right: {cart}");

    // The API refuses the same way, for every client.
    let cart_id = browser.cookies["cart_id"].clone();
    let guest = crate::support::Who { secret: browser.cookies.get("cart_secret").cloned(), ..Default::default() };
    let (status, err) = shop.send("POST", &format!("/api/v1/carts/{cart_id}/items"), &guest, Some(json!({"sku": "LAMP-BK", "quantity": 999}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "out_of_stock");
    assert_eq!(err["error"]["field"], "quantity");
    assert_eq!(err["error"]["message"], "Only 38 of Brass Desk Lamp — Black are left, and 2 are already in your cart");
    let (_, view) = shop.send("GET", &format!("/api/v1/carts/{cart_id}"), &guest, None).await;
    let held: Vec<(String, i64)> = view["items"].as_array().unwrap().iter().map(|i| (i["sku"].as_str().unwrap().to_owned(), i["quantity"].as_i64().unwrap())).collect();
    assert_eq!(held, [("LAMP-BK".to_owned(), 2), ("LAMP-BR".to_owned(), 500)]);
}

#[tokio::test]
async fn checkout_has_steps_a_summary_a_country_list_errors_at_their_fields_and_a_full_confirmation() {
    let shop = storefront().await;
    lamp(&shop).await;
    let (s, m) = shop.send("POST", "/api/v1/admin/shipping-methods", &shop.as_staff(), Some(json!({
        "name": "Europe", "countries": ["DE", "FR"], "currency": "USD", "flat_amount": 2500, "min_days": 5, "max_days": 9}))).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let mut browser = Browser::new(&shop);
    let (_, product) = browser.get("/products/brass-desk-lamp").await;
    browser.submit(&product, "/cart/items", &[("sku", "LAMP-BK"), ("quantity", "2")]).await;
    let (_, cart) = browser.get("/cart").await;
    assert!(cart.contains(r#"<li aria-current="step">Cart</li>"#), "{cart}");

    // The address step: steps, the order's summary, the countries the shop ships to, by name.
    let (status, form) = browser.get("/checkout").await;
    assert_eq!(status, StatusCode::OK);
    let steps = between(&form, r#"<ol class="steps""#, "</ol>");
    assert!(steps.contains(r#"<li class="done"><a href="/cart">Cart</a></li>"#) && steps.contains(r#"<li aria-current="step">Address</li>"#), "{steps}");
    assert!(steps.contains("Shipping &amp; payment") && steps.contains("Done"), "{steps}");
    let summary = between(&form, r#"<section class="summary""#, "</section>");
    assert!(summary.contains("Brass Desk Lamp<span class=\"options\">Finish: Black</span>") && summary.contains("× 2") && summary.contains(&decimal(2 * 6899)), "{summary}");
    assert!(summary.contains("Subtotal") && summary.contains("Chosen at the next step") && summary.contains("Total before shipping"), "{summary}");
    let select = between(&form, r#"<select id="country""#, "</select>");
    let offered: Vec<&str> = select.split(r#"<option value=""#).skip(2).map(|o| o.split('"').next().unwrap()).collect();
    assert_eq!(offered, ["FR", "DE", "US"], "by name: France, Germany, United States: {select}");
    assert!(select.contains(r#"<option value="DE">Germany</option>"#) && select.contains(r#"<option value="">Choose a country</option>"#), "{select}");

    // A missing name and a country the shop does not ship to: said at each field, the rest kept.
    let mut typed = address("JP");
    typed.retain(|(k, _)| *k != "name");
    let (status, refused) = browser.submit(&form, "/checkout/address", &fields(&typed)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(refused.contains(r#"<span class="field-error" id="name-error">Enter the full name of the person it is for.</span><input id="name" name="name""#), "{refused}");
    assert!(refused.contains(r#"aria-invalid="true" aria-describedby="name-error""#), "{refused}");
    assert!(refused.contains(r#"<span class="field-error" id="country-error">We don’t ship to Japan yet. Choose one of the countries in the list.</span><select id="country" name="country" autocomplete="country" required aria-invalid="true" aria-describedby="country-error">"#), "{refused}");
    assert!(refused.contains(r#"value="1 Market St""#) && refused.contains(r#"value="ada@example.com""#) && refused.contains(r#"value="94105""#), "the typed values are kept: {refused}");
    assert!(refused.contains(r##"<li><a href="#name">Enter the full name"##) && refused.contains(r##"<li><a href="#country">We don’t ship to Japan"##), "the list leads to the fields: {refused}");
    assert!(!refused.contains(r#"id="line1-error""#), "only the fields at fault");
    let (status, unknown) = browser.submit(&refused, "/checkout/address", &fields(&address("XX"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown.contains(r#"id="country-error">Choose a country from the list.</span>"#), "{unknown}");
    let (status, bad_phone) = browser.submit(&refused, "/checkout/address", &[fields(&address("US")), vec![("phone", "call me")]].concat()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad_phone}");
    assert!(bad_phone.contains(r#"id="phone-error">Enter the phone number in international format"#) && bad_phone.contains(r#"<option value="US" selected>United States</option>"#), "{bad_phone}");

    // Then the payment step, and a confirmation that says where, how and how it was paid.
    let (status, pay) = browser.submit(&refused, "/checkout/address", &fields(&address("us"))).await;
    assert_eq!(status, StatusCode::OK, "{pay}");
    assert!(pay.contains(r#"<li aria-current="step">Shipping &amp; payment</li>"#) && pay.contains(r#"<a href="/checkout">Address</a>"#), "{pay}");
    assert!(pay.contains("Shipping to Ada Lovelace, 1 Market St, 94105, San Francisco, CA, United States"), "{pay}");
    let (amount, _) = shown_total(&pay);
    let (status, done) = browser.submit(&pay, "/checkout/pay", &[("shipping_method", &chosen_method(&pay)), ("token", "tok_visa"),
        ("total_amount", &amount.to_string()), ("total_currency", "USD")]).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert!(done.contains(r#"<li aria-current="step">Done</li>"#) && done.contains("Thank you! Your order is confirmed"), "{done}");
    let facts = between(&done, r#"<div class="order-facts">"#, "</div>");
    assert!(facts.contains("<p>Ada Lovelace<br>1 Market St<br>94105 San Francisco CA<br>United States</p>"), "{facts}");
    assert!(facts.contains("Ground — ") && facts.contains("(3–5 days)") && facts.contains("9.00"), "two lamps weigh 1.8 kg: {facts}");
    assert!(facts.contains("<h2 id=\"paid-with\">Payment</h2><p>Visa ending 4242</p>"), "{facts}");
    assert!(done.contains("Finish: Black") && done.contains(&decimal(amount)), "{done}");
    assert!(!done.contains("cart-count\""), "the header counts nothing once the cart is checked out: {done}");
}

#[tokio::test]
async fn with_no_shipping_method_set_up_every_country_is_offered() {
    let shop = storefront().await;
    lamp(&shop).await;
    let (_, methods) = shop.send("GET", "/api/v1/admin/shipping-methods", &shop.as_staff(), None).await;
    for m in methods["data"].as_array().unwrap() {
        let (s, _) = shop.send("DELETE", &format!("/api/v1/admin/shipping-methods/{}", m["id"].as_str().unwrap()), &shop.as_staff(), None).await;
        assert!(s.is_success());
    }
    let (_, served) = shop.send("GET", "/api/v1/shipping-countries", &Default::default(), None).await;
    assert_eq!(served, json!({"data": []}));
    let mut browser = Browser::new(&shop);
    let (_, product) = browser.get("/products/brass-desk-lamp").await;
    browser.submit(&product, "/cart/items", &[("sku", "LAMP-BK")]).await;
    let (_, form) = browser.get("/checkout").await;
    let select = between(&form, r#"<select id="country""#, "</select>");
    assert_eq!(select.matches("<option value=").count(), 250, "249 countries and the prompt");
    assert!(select.contains(r#"<option value="JP">Japan</option>"#));
}

/// The picture a line of `html` draws, as it is written: `<img class="line-picture" …>`.
fn line_picture(html: &str) -> String {
    format!("<img class=\"line-picture\"{}>", between(html, r#"<img class="line-picture""#, ">"))
}

#[tokio::test]
async fn cart_payment_and_order_lines_show_the_products_picture_and_their_own_amount() {
    let shop = storefront().await;
    let lamp = lamp(&shop).await;
    let media = picture(&shop, lamp["id"].as_str().unwrap(), 200, None).await;
    // The line's copy: the smallest that stays sharp at twice its 64 pixels (160 wide), not the 600 pixel original.
    let small = media["thumbnails"].as_array().unwrap().iter().find(|t| t["width"] == 160).unwrap_or_else(|| panic!("a 160 pixel copy: {media}"));
    let expected = format!(r#"<img class="line-picture" src="{}" width="160" height="160" alt="" decoding="async">"#, small["url"].as_str().unwrap());
    let mut browser = Browser::new(&shop);
    let (_, product) = browser.get("/products/brass-desk-lamp").await;
    let (status, cart) = browser.submit(&product, "/cart/items", &[("sku", "LAMP-BK"), ("quantity", "2")]).await;
    assert_eq!(status, StatusCode::OK, "{cart}");
    let lines = between(&cart, "<tbody>", "</tbody>");
    assert_eq!(line_picture(lines), expected, "{lines}");
    assert!(lines.contains(r#"<span class="line-name"><a href="/products/brass-desk-lamp">Brass Desk Lamp</a><span class="options">Finish: Black</span></span>"#), "the name beside it: {lines}");
    assert!(between(lines, r#"<td class="line-total">"#, "</td>").contains(&decimal(2 * 6899)), "{lines}");

    let (_, form) = browser.get("/checkout").await;
    assert_eq!(line_picture(between(&form, r#"<section class="summary""#, "</section>")), expected, "the checkout's summary: {form}");
    let (status, pay) = browser.submit(&form, "/checkout/address", &fields(&address("US"))).await;
    assert_eq!(status, StatusCode::OK, "{pay}");
    let summary = between(&pay, r#"<table class="lines summary-lines">"#, "</table>");
    assert_eq!(line_picture(summary), expected, "{summary}");
    // The line shows what the line costs (2 × 68.99), never the order's total with shipping and tax.
    let (amount, _) = shown_total(&pay);
    assert!(amount > 2 * 6899, "shipping and tax are added: {amount}");
    let line_amount = between(summary, "</td><td>", "</td>");
    assert!(line_amount.contains(&decimal(2 * 6899)) && !line_amount.contains(&decimal(amount)), "{summary}");

    let (status, done) = browser.submit(&pay, "/checkout/pay", &[("shipping_method", &chosen_method(&pay)), ("token", "tok_visa"),
        ("total_amount", &amount.to_string()), ("total_currency", "USD")]).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let ordered = between(&done, r#"<table class="lines summary-lines">"#, "</table>");
    assert_eq!(line_picture(ordered), expected, "the confirmation: {ordered}");
    assert!(between(ordered, "</td><td>", "</td>").contains(&decimal(2 * 6899)), "{ordered}");
}

#[tokio::test]
async fn adding_with_no_size_chosen_shows_the_product_page_asking_for_one() {
    let shop = storefront().await;
    create(&shop, json!({"title": "Harbour Hoodie", "status": "active",
        "options": [{"name": "Size", "values": ["S", "M"]}],
        "variants": [{"sku": "HOOD-S", "option_values": ["S"], "prices": {"USD": 6899}, "weight_grams": 700},
                     {"sku": "HOOD-M", "option_values": ["M"], "prices": {"USD": 6899}, "weight_grams": 700}]})).await;
    stock(&shop, "HOOD-S", 0).await;
    stock(&shop, "HOOD-M", 3).await;
    let mut browser = Browser::new(&shop);
    let (_, product) = browser.get("/products/harbour-hoodie").await;
    let from = between(&product, r#"<input type="hidden" name="from" value=""#, "\"").to_owned();
    assert_eq!(from, "/products/harbour-hoodie");

    // The form as a browser sends it when no size is chosen: no `sku` at all.
    let (status, again) = browser.submit(&product, "/cart/items", &[("quantity", "1"), ("from", &from)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{again}");
    assert!(again.contains(r#"<a class="brand" href="/">"#) && again.contains("<h1>Harbour Hoodie</h1>"), "the product's own page: {again}");
    let at_form = between(&again, "<h1>Harbour Hoodie</h1>", "</form>");
    assert!(at_form.contains(r#"<p class="alert" role="alert">Please choose a size.</p>"#), "said at the form, by the option's name: {at_form}");
    assert!(!again.contains("deserialize") && !again.contains("missing field") && !again.contains("Your cart"), "{again}");
    assert!(!browser.cookies.contains_key("cart_id"), "nothing was added, and no cart made");

    // The same form without the visitor's token: refused, the product not looked up again.
    let (status, _, forged) = browser.request("POST", "/cart/items", Some(&[("csrf", "forged"), ("quantity", "1"), ("from", &from)])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{forged}");
    assert!(forged.contains(r#"<a class="brand" href="/">"#) && !forged.contains("<h1>Harbour Hoodie</h1>"), "{forged}");

    // A quantity that is not one: the same page, saying so.
    let (status, again) = browser.submit(&product, "/cart/items", &[("sku", "HOOD-M"), ("quantity", "lots"), ("from", &from)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{again}");
    assert!(again.contains("<h1>Harbour Hoodie</h1>") && again.contains(r#"<p class="alert" role="alert">Enter a quantity from 1 to 999.</p>"#), "{again}");

    // Without a page to go back to, the cart page says it.
    let (status, cart) = browser.submit(&product, "/cart/items", &[("quantity", "1")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{cart}");
    assert!(cart.contains("Choose which one you would like before adding it to the cart."), "{cart}");
}

#[tokio::test]
async fn the_payment_page_links_stripes_script_by_its_fingerprinted_address() {
    let stripe = crate::support::fake_stripe().await;
    let shop = Shop::with(|c| {
        c.services.extend(["search".to_owned()]);
        c.orders.stripe_secret_key = Some("sk_test_emporium".into());
        c.orders.test_payments = None;
        c.orders.stripe_publishable_key = Some("pk_test_emporium".into());
        c.orders.stripe_api_base = stripe;
    })
    .await;
    lamp(&shop).await;
    let mut browser = Browser::new(&shop);
    let (_, product) = browser.get("/products/brass-desk-lamp").await;
    browser.submit(&product, "/cart/items", &[("sku", "LAMP-BK")]).await;
    let (_, form) = browser.get("/checkout").await;
    let (status, pay) = browser.submit(&form, "/checkout/address", &fields(&address("US"))).await;
    assert_eq!(status, StatusCode::OK, "{pay}");
    assert!(pay.contains(r#"<fieldset id="stripe-card" data-key="pk_test_emporium" hidden>"#), "{pay}");
    let script = between(&pay, r#"<script src="https://js.stripe.com/v3/"></script><script src=""#, "\"").to_owned();
    assert!(script.starts_with("/assets/stripe.") && script.ends_with(".js") && script != "/assets/stripe.js", "{script}");
    let (status, headers, body) = page(&shop, &script).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "public, max-age=31536000, immutable", "kept for a year");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/javascript") && !body.is_empty());
}

#[tokio::test]
async fn in_a_browser_the_total_on_the_payment_page_is_the_amount_charged() {
    let Some(driver) = Driver::start().await else { return };
    let shop = storefront().await;
    create(&shop, json!({"title": "Brass Desk Lamp", "status": "active",
        "variants": [{"sku": "LAMP-1", "prices": {"USD": 6899}, "weight_grams": 900}]})).await;
    stock(&shop, "LAMP-1", 38).await;
    express(&shop).await;
    let base = shop.serve().await;
    let window = driver.session(1280, 900).await;

    window.goto(&format!("{base}/products/brass-desk-lamp")).await;
    window.click("form.add button").await;
    window.wait_title("Your cart").await;
    window.wait_text("p.success", "Added Brass Desk Lamp to your cart.").await;
    window.wait_text("header a[href='/cart']", "1").await;
    window.screenshot("desktop-cart-added").await;
    window.click("main a.button").await;
    window.wait_url("/checkout").await;
    window.click("form.stack button[type=submit]").await;
    window.wait_text("#name-error", "Enter the full name").await;
    window.screenshot("desktop-checkout-errors").await;
    for (field, value) in [("#email", "ada@example.com"), ("#name", "Ada Lovelace"), ("#line1", "1 Market St"),
        ("#city", "San Francisco"), ("#region", "CA"), ("#postal_code", "94105"), ("#country", "US")] {
        window.fill(field, value).await;
    }
    window.click("form.stack button[type=submit]").await;
    window.wait_url("/checkout/pay").await;

    // The cheapest method is chosen, and the total includes it.
    let chosen = "return document.querySelector('input[name=shipping_method]:checked').labels[0].innerText;";
    let label = window.execute(chosen, json!([])).await;
    assert!(label.as_str().unwrap_or_default().starts_with("Ground"), "{label}");
    let total = || async { window.text("#order-totals tr.grand td").await };
    let first = total().await;
    assert!(first.contains(&decimal(6899 + 500 + 500)), "{first}");
    let update_shown = window.execute("return !document.getElementById('update-shipping').closest('p').hidden;", json!([])).await;
    assert_eq!(update_shown, false, "with the script, the total follows the choice by itself");

    // Express: the script brings the new total into the page.
    window.click("label[for=m2]").await;
    window.wait_text("#total-status", "The total is now").await;
    let shown = total().await;
    assert!(shown.contains(&decimal(6899 + 1995 + 500)), "{shown}");
    let sent = window.execute("return document.getElementById('total-amount').value;", json!([])).await;
    assert_eq!(sent, json!((6899 + 1995 + 500).to_string()));
    assert!(window.text("#pay-button").await.contains(&decimal(6899 + 1995 + 500)));
    window.screenshot("desktop-payment-express").await;

    window.click("label[for=c1]").await; // tok_visa
    window.click("#pay-button").await;
    window.wait_title("Order #1001").await;
    let confirmation = window.text("main").await;
    assert!(confirmation.contains("Express") && confirmation.contains("Visa ending 4242") && confirmation.contains("San Francisco"), "{confirmation}");
    window.screenshot("desktop-order-confirmation").await;
    window.quit().await;

    let placed = orders(&shop).await;
    let (_, order) = shop.send("GET", &format!("/api/v1/admin/orders/{}", placed[0]["id"].as_str().unwrap()), &shop.as_staff(), None).await;
    let charged = order["payments"][0]["amount"]["amount"].as_i64().unwrap();
    assert_eq!((order["totals"]["total"]["amount"].as_i64(), charged), (Some(6899 + 1995 + 500), 6899 + 1995 + 500), "{order}");
    assert!(shown.contains(&decimal(charged)), "shown {shown}, charged {charged}");
}

#[tokio::test]
async fn a_payment_form_without_the_total_it_showed_charges_nothing() {
    let shop = storefront().await;
    lamp(&shop).await;
    let (mut browser, pay) = at_payment(&shop).await;
    let (status, again) = browser.submit(&pay, "/checkout/pay", &[("shipping_method", &chosen_method(&pay)), ("token", "tok_visa")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert!(again.contains("Nothing was charged"), "{again}");
    assert!(orders(&shop).await.is_empty(), "no order was placed");
    // From the page it showed, it pays.
    let (status, done) = browser.pay(&again, &[("shipping_method", &chosen_method(&again)), ("token", "tok_visa")]).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(orders(&shop).await.len(), 1);
}
