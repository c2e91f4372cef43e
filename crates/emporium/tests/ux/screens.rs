//! Every page of the demo shop, at desktop and at phone size, in a real
//! browser: each fits the window's width and keeps the shop's header. A
//! picture of each is kept in `target/screenshots/<size>/<page>.png`, for
//! people to look at.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kernel::auth::Role;
use platform::testing::Sandbox;
use serde_json::json;

use crate::support::Shop;
use crate::support::webdriver::{Driver, Session};

const SIZES: &[(&str, u32, u32)] = &[("desktop", 1280, 900), ("phone", 390, 844)];
/// How far down a page its picture goes, in CSS pixels.
const SHOT_HEIGHT: u32 = 6000;

/// The demo shop (catalog with pictures, shipping, taxes), served on a port,
/// once the search has indexed the catalog.
async fn demo_shop() -> (Shop, String) {
    let sandbox = Sandbox::new().await;
    let mut config = (*sandbox.config()).clone();
    config.services = ["auth", "catalog", "orders", "search", "notify", "web"].map(str::to_owned).to_vec();
    platform::telemetry::init_logging(&config.log);
    let config = Arc::new(config);
    let app = emporium::start_shop(config.clone(), true).await.unwrap();
    let mut shop = Shop { _sandbox: sandbox, app, config, staff: String::new() };
    shop.staff = shop.user("screens-admin@example.com", Role::Admin).await;
    // The search follows the catalog's events: wait until its count settles.
    let (mut last, mut steady) = (0, 0);
    for _ in 0..300 {
        let (_, found) = shop.send("GET", "/api/v1/search?q=linen", &Default::default(), None).await;
        let total = found["total"].as_u64().unwrap_or(0);
        steady = if total > 0 && total == last { steady + 1 } else { 0 };
        last = total;
        if steady >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(last > 0, "the demo catalog never became searchable");
    let base = shop.serve().await;
    (shop, base)
}

/// The console's pages that `crates/web/src/sections.rs` names: every
/// section, and the pages of their own they link to.
fn section_paths() -> Vec<String> {
    let source = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/src/sections.rs")).unwrap();
    let mut paths = Vec::new();
    for literal in source.split("\"/admin/").skip(1).filter_map(|rest| rest.split('"').next()) {
        let path = format!("/admin/{literal}");
        if !literal.is_empty() && literal.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/') && !paths.contains(&path) {
            paths.push(path);
        }
    }
    assert!(paths.len() >= 10, "the console's sections were not found in sections.rs: {paths:?}");
    paths
}

/// What a page is called in its picture's name: `/admin/api-keys` → `api-keys`.
fn slug(path: &str) -> String {
    path.trim_start_matches("/admin/").replace('/', "-")
}

/// Checks the page the window shows and keeps its picture; what is wrong, if anything.
async fn look(window: &Session<'_>, size: &str, page: &str, shop_name: &str, problems: &mut Vec<String>) {
    // Pictures below the fold load lazily: a moment for the page to settle.
    let _ = window.try_execute("return document.readyState;", json!([])).await;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../target/screenshots/{size}/{page}.png"));
    window.page_screenshot(&path, SHOT_HEIGHT).await;
    let at = window.url().await;
    let fit = window
        .execute(
            "const w = window.innerWidth, d = document.documentElement.scrollWidth;
             const wide = d <= w ? [] : Array.from(document.querySelectorAll('body *'))
               .filter(e => e.getBoundingClientRect().right > w + 0.5)
               .slice(0, 4).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\\s+/).join('.') : ''));
             return [d, w, wide.join(', ')];",
            json!([]),
        )
        .await;
    let (wide, window_width) = (fit[0].as_u64().unwrap_or(0), fit[1].as_u64().unwrap_or(0));
    if wide > window_width || window_width == 0 {
        problems.push(format!("{size}/{page} ({at}) is {wide} px wide in a {window_width} px window: {}", fit[2].as_str().unwrap_or_default()));
    }
    let header = window
        .execute(
            "const h = document.querySelector('header');
             if (!h) return 'it has no header';
             if (!h.querySelector('a[href=\"/\"], a[href=\"/admin\"]')) return 'its header has no link to the shop';
             if (!h.innerText.includes(arguments[0])) return 'its header does not name the shop';
             return '';",
            json!([shop_name]),
        )
        .await;
    if let Some(why) = header.as_str().filter(|w| !w.is_empty()) {
        problems.push(format!("{size}/{page} ({at}): {why}"));
    }
}

/// Sets form fields by id (a text field or a select), then sends the form of the first.
async fn send_form(window: &Session<'_>, fields: &[(&str, &str)]) {
    let fields: Vec<_> = fields.iter().map(|(id, value)| json!([id, value])).collect();
    window
        .execute(
            "let form = null;
             for (const [id, value] of arguments[0]) {
               const e = document.getElementById(id);
               if (!e) continue;
               e.value = value;
               e.dispatchEvent(new Event('change', {bubbles: true}));
               form = form || e.form;
             }
             if (!form) throw new Error('none of the fields is on the page');
             form.requestSubmit();",
            json!([fields]),
        )
        .await;
}

async fn sign_in(window: &Session<'_>, base: &str, email: &str) {
    window.goto(&format!("{base}/account/sign-in")).await;
    send_form(window, &[("email", email), ("password", "a long passphrase")]).await;
    window.wait_away_from(&["/account/sign-in"]).await;
}

/// Puts a product in the cart through its page: the first of `products`
/// whose form works. Its path.
async fn add_to_cart(window: &Session<'_>, base: &str, products: &[String]) -> String {
    for product in products {
        window.goto(&format!("{base}{product}")).await;
        let sent = window
            .execute("const f = document.querySelector('form[action=\"/cart/items\"]'); if (!f) return false; f.requestSubmit(); return true;", json!([]))
            .await;
        if sent != true {
            continue;
        }
        window.wait_away_from(&[product.as_str()]).await;
        window.goto(&format!("{base}/cart")).await;
        let filled = window.execute("return document.querySelector('a[href=\"/checkout\"], form[action^=\"/cart/items/\"]') !== null;", json!([])).await;
        if filled == true {
            return product.clone();
        }
    }
    panic!("none of these products could be put in the cart: {products:?}");
}

async fn links(window: &Session<'_>, prefix: &str) -> Vec<String> {
    let found = window
        .execute("return [...new Set(Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href')).filter(h => h && h.startsWith(arguments[0])))];", json!([prefix]))
        .await;
    found.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[tokio::test]
async fn every_page_fits_a_desktop_and_a_phone_and_keeps_the_shop_header() {
    let Some(driver) = Driver::start().await else { return };
    let (shop, base) = demo_shop().await;
    let name = shop.config.notify.shop_name.clone();
    shop.user("screens-shopper@example.com", Role::Customer).await;
    let (_, products) = shop.send("GET", "/api/v1/admin/products?limit=1", &shop.as_staff(), None).await;
    let product_id = products["data"][0]["id"].as_str().expect("the demo has products").to_owned();
    let mut problems = Vec::new();
    for &(size, _, _) in SIZES {
        // Only this run's pictures: a page that is gone leaves none behind.
        let _ = std::fs::remove_dir_all(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../target/screenshots/{size}")));
    }

    for &(size, width, height) in SIZES {
        // A guest: browsing, the cart, checkout, payment and the order.
        let guest = driver.session(width, height).await;
        guest.goto(&format!("{base}/")).await;
        look(&guest, size, "home", &name, &mut problems).await;
        let categories = links(&guest, "/categories/").await;
        let mut products: Vec<String> = links(&guest, "/products/").await;
        let category = categories.first().expect("the home page links to a category").clone();
        guest.goto(&format!("{base}{category}")).await;
        look(&guest, size, "category", &name, &mut problems).await;
        products.extend(links(&guest, "/products/").await);
        let mut once = std::collections::BTreeSet::new();
        products.retain(|p| !p.contains("/notify-me") && once.insert(p.clone()));
        guest.goto(&format!("{base}/search?q=linen")).await;
        look(&guest, size, "search", &name, &mut problems).await;
        let product = add_to_cart(&guest, &base, &products).await;
        guest.goto(&format!("{base}{product}")).await;
        look(&guest, size, "product", &name, &mut problems).await;
        guest.goto(&format!("{base}/cart")).await;
        look(&guest, size, "cart", &name, &mut problems).await;
        guest.goto(&format!("{base}/checkout")).await;
        look(&guest, size, "checkout", &name, &mut problems).await;
        send_form(&guest, &[("email", "ada@example.com"), ("name", "Ada Lovelace"), ("line1", "1 Market St"), ("city", "San Francisco"),
            ("region", "CA"), ("postal_code", "94105"), ("country", "US")]).await;
        guest.wait_url("/checkout/pay").await;
        look(&guest, size, "payment", &name, &mut problems).await;
        guest
            .execute("const c = document.querySelector('input[name=token][value=tok_visa]'); c.checked = true; c.form.requestSubmit();", json!([]))
            .await;
        let order = guest.wait_away_from(&["/checkout/pay"]).await;
        assert!(order.contains("/orders/"), "paying ended at {order}");
        guest.wait_title("Order").await;
        look(&guest, size, "order", &name, &mut problems).await;
        let order_id = order[order.find("/orders/").unwrap() + "/orders/".len()..].split(['?', '#']).next().unwrap().to_owned();
        guest.goto(&format!("{base}/no-such-page")).await;
        look(&guest, size, "not-found", &name, &mut problems).await;
        guest.goto(&format!("{base}/account/sign-in")).await;
        look(&guest, size, "sign-in", &name, &mut problems).await;
        guest.goto(&format!("{base}/account/sign-up")).await;
        look(&guest, size, "sign-up", &name, &mut problems).await;
        guest.quit().await;

        // A customer's account.
        let shopper = driver.session(width, height).await;
        sign_in(&shopper, &base, "screens-shopper@example.com").await;
        for (page, path) in [("account", "/account"), ("addresses", "/account/addresses"), ("preferences", "/account/preferences"), ("security", "/account/security")] {
            shopper.goto(&format!("{base}{path}")).await;
            look(&shopper, size, page, &name, &mut problems).await;
        }
        shopper.quit().await;

        // The console, as an admin sees it.
        let admin = driver.session(width, height).await;
        sign_in(&admin, &base, "screens-admin@example.com").await;
        admin.goto(&format!("{base}/admin")).await;
        look(&admin, size, "console-dashboard", &name, &mut problems).await;
        let order_page = format!("/admin/orders/{order_id}");
        let product_page = format!("/admin/products/{product_id}");
        let pictures_page = format!("/admin/products/{product_id}/pictures");
        let mut console: Vec<(String, String)> = vec![
            ("console-orders".to_owned(), "/admin/orders".to_owned()),
            ("console-order".to_owned(), order_page),
            ("console-product".to_owned(), product_page),
            ("console-pictures".to_owned(), pictures_page),
            ("console-new-product".to_owned(), "/admin/products/new".to_owned()),
            ("console-import".to_owned(), "/admin/products/import".to_owned()),
        ];
        // The dashboard's menu may offer sections of its own; its links to single records are left out.
        let listed = links(&admin, "/admin/").await;
        let listed = listed.iter().map(|l| l.split(['?', '#']).next().unwrap_or_default().to_owned()).filter(|l| l.matches('/').count() == 2);
        let more = section_paths().into_iter().chain(listed);
        for path in more {
            // Downloads (a CSV export) are not pages.
            if !path.ends_with("/export") && !console.iter().any(|(_, p)| *p == path) {
                console.push((format!("console-{}", slug(&path)), path));
            }
        }
        for (page, path) in console {
            admin.goto(&format!("{base}{path}")).await;
            look(&admin, size, &page, &name, &mut problems).await;
        }
        admin.quit().await;
    }

    assert!(problems.is_empty(), "{} page(s) do not fit or lost the shop's header:\n{}", problems.len(), problems.join("\n"));
}
