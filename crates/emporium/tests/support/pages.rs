//! The pages as a browser without a browser sees them: requests through
//! the router with cookies kept, forms posted with their CSRF token, and the
//! shop's own steps (a product, its stock, a guest's order, a staff member
//! signed in) the page tests start from.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // tests fail loudly; not every test file uses all

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{PASSWORD, Shop};

pub async fn page(shop: &Shop, path: &str) -> (StatusCode, HeaderMap, String) {
    let request = Request::builder().uri(path).body(Body::empty()).unwrap();
    let response = shop.app.router().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

/// A shop with the search service, as the storefront needs.
pub async fn storefront() -> Shop {
    Shop::with(|c| c.services.extend(["search".to_owned()])).await
}

pub fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html.find(start).unwrap_or_else(|| panic!("no {start} in {html}")) + start.len();
    &html[from..from + html[from..].find(end).unwrap()]
}


pub async fn create(shop: &Shop, body: Value) -> Value {
    let (s, p) = shop.send("POST", "/api/v1/admin/products", &shop.as_staff(), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    p
}

pub async fn stock(shop: &Shop, sku: &str, on_hand: i64) {
    let (s, _) = shop.send("PUT", &format!("/api/v1/admin/inventory/{sku}"), &shop.as_staff(), Some(json!({"on_hand": on_hand}))).await;
    assert_eq!(s, StatusCode::OK);
}

/// Waits until the search finds `q` (the index follows catalog events).
pub async fn searchable(shop: &Shop, q: &str) {
    for _ in 0..100 {
        let (_, body) = shop.send("GET", &format!("/api/v1/search?q={q}"), &Default::default(), None).await;
        if body["total"].as_u64().unwrap_or(0) > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{q} never became searchable");
}

/// A `multipart/form-data` body as a browser sends it: the text `fields`,
/// then the file `(field, file name, bytes)` if any (a `.png` as
/// `image/png`, anything else as `text/csv`). Its content type and bytes.
pub fn multipart(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "emporium-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes());
    }
    if let Some((name, file_name, bytes)) = file {
        let kind = if file_name.ends_with(".png") { "image/png" } else { "text/csv" };
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: {kind}\r\n\r\n").bytes());
        body.extend_from_slice(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// One staff request to the API with a raw body; the answer as text.
pub async fn as_staff_raw(shop: &Shop, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", shop.staff))
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    let response = shop.app.router().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Uploads a generated 600×600 picture of product `id` in `hue` through the
/// API, described by `alt` if given (the catalog makes 160 and 480 pixel
/// copies): the media the API answers.
pub async fn picture(shop: &Shop, id: &str, hue: u32, alt: Option<&str>) -> Value {
    let png = catalog::media::placeholder(hue, 600).unwrap();
    let fields: Vec<(&str, &str)> = alt.map(|a| ("alt", a)).into_iter().collect();
    let (content_type, body) = multipart(&fields, Some(("file", "p.png", &png)));
    let (status, text) = as_staff_raw(shop, "POST", &format!("/api/v1/admin/products/{id}/media"), &content_type, body).await;
    let media: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::CREATED, "{media}");
    media
}

/// A browser without a browser: it keeps cookies, reads a form's CSRF
/// token and follows redirects, as the pages expect of one.
pub struct Browser<'a> {
    pub shop: &'a Shop,
    pub cookies: std::collections::BTreeMap<String, String>,
    /// The connection's address, as the server would see it.
    pub from: Option<std::net::SocketAddr>,
    /// Headers sent with every request (`X-Forwarded-For`, as a proxy adds it).
    pub headers: Vec<(&'static str, String)>,
}

impl<'a> Browser<'a> {
    pub fn new(shop: &'a Shop) -> Self {
        Browser { shop, cookies: Default::default(), from: None, headers: Vec::new() }
    }

    /// A browser whose requests arrive from `from` (no traffic goes there).
    pub fn at(shop: &'a Shop, from: &str) -> Self {
        Browser { from: Some(from.parse().unwrap()), ..Browser::new(shop) }
    }

    pub async fn request(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> (StatusCode, HeaderMap, String) {
        let mut r = Request::builder().method(method).uri(path);
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            r = r.header("cookie", jar.join("; "));
        }
        for (name, value) in &self.headers {
            r = r.header(*name, value);
        }
        let r = match form {
            Some(fields) => {
                let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={}", web::api::encode(v))).collect();
                r.header("content-type", "application/x-www-form-urlencoded").body(Body::from(body.join("&")))
            }
            None => r.body(Body::empty()),
        }
        .unwrap();
        let mut r = r;
        if let Some(from) = self.from {
            r.extensions_mut().insert(axum::extract::ConnectInfo(from));
        }
        let response = self.shop.app.router().oneshot(r).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        for set in headers.get_all("set-cookie") {
            let text = set.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Posts a [`multipart`] form with the browser's cookies, as a browser
    /// posts a file; the answer, not followed.
    pub async fn post_multipart(&self, path: &str, fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> (StatusCode, HeaderMap, String) {
        let (content_type, body) = multipart(fields, file);
        let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let request = Request::builder()
            .method("POST")
            .uri(path)
            .header("cookie", jar.join("; "))
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        let response = self.shop.app.router().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// GET, following redirects.
    pub async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let mut path = path.to_owned();
        for _ in 0..5 {
            let (status, headers, body) = self.request("GET", &path, None).await;
            if status.is_redirection() {
                path = headers["location"].to_str().unwrap().to_owned();
                continue;
            }
            return (status, body);
        }
        panic!("too many redirects");
    }

    /// Sends the sign-in form as `email` with the tests' password: the
    /// answer's status and headers, not followed.
    pub async fn post_sign_in(&mut self, email: &str) -> (StatusCode, HeaderMap) {
        let (_, form) = self.get("/account/sign-in").await;
        let csrf = between(&form, r#"name="csrf" value=""#, "\"").to_owned();
        let (status, headers, _) = self.request("POST", "/account/sign-in", Some(&[("csrf", &csrf), ("email", email), ("password", PASSWORD)])).await;
        (status, headers)
    }

    /// Pays from the payment page `page` as its form does: `fields` and the
    /// total the page showed (the only total the page will charge).
    pub async fn pay(&mut self, page: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let amount = between(page, r#"name="total_amount" id="total-amount" value=""#, "\"").to_owned();
        let currency = between(page, r#"name="total_currency" id="total-currency" value=""#, "\"").to_owned();
        let mut all = fields.to_vec();
        all.extend([("total_amount", amount.as_str()), ("total_currency", currency.as_str())]);
        self.submit(page, "/checkout/pay", &all).await
    }

    /// Posts a form from `page` (its CSRF token added), following the redirect.
    pub async fn submit(&mut self, page: &str, action: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let csrf = between(page, r#"name="csrf" value=""#, "\"").to_owned();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        let (status, headers, body) = self.request("POST", action, Some(&all)).await;
        if status == StatusCode::SEE_OTHER || status == StatusCode::FOUND || status == StatusCode::TEMPORARY_REDIRECT {
            let to = headers["location"].to_str().unwrap().to_owned();
            return self.get(&to).await;
        }
        (status, body)
    }
}


pub async fn mail_link(shop: &Shop, to: &str, subject: &str, path: &str) -> String {
    for _ in 0..100 {
        let (_, mail) = shop.send("GET", &format!("/api/v1/admin/mailbox?to={to}"), &shop.as_staff(), None).await;
        if let Some(m) = mail["data"].as_array().unwrap().iter().find(|m| m["subject"].as_str().unwrap_or("").contains(subject)) {
            let text = m["text"].as_str().unwrap();
            let start = text.find(path).unwrap_or_else(|| panic!("no {path} in {text}"));
            return text[start..].split_whitespace().next().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no mail to {to} about {subject}");
}


/// A guest buys two mugs through the pages; their browser and the order's page.
pub async fn guest_order(shop: &Shop) -> (Browser<'_>, String) {
    create(shop, json!({"title": "Mug", "status": "active", "variants": [{"sku": "MUG-9", "prices": {"USD": 1200}, "weight_grams": 300}]})).await;
    stock(shop, "MUG-9", 5).await;
    let mut browser = Browser::new(shop);
    let (_, product) = browser.get("/products/mug").await;
    browser.submit(&product, "/cart/items", &[("sku", "MUG-9"), ("quantity", "2")]).await;
    let (_, address) = browser.get("/checkout").await;
    let (_, pay) = browser.submit(&address, "/checkout/address", &[("email", "ada@example.com"), ("name", "Ada Lovelace"),
        ("line1", "1 Market St"), ("city", "San Francisco"), ("region", "CA"), ("postal_code", "94105"), ("country", "US")]).await;
    let method = between(&pay, r#"name="shipping_method" id="m1" value=""#, "\"").to_owned();
    let (status, confirmation) = browser.pay(&pay, &[("shipping_method", &method), ("token", "tok_visa")]).await;
    assert_eq!(status, StatusCode::OK, "{confirmation}");
    let (_, list) = shop.send("GET", "/api/v1/admin/orders", &shop.as_staff(), None).await;
    let id = list["data"][0]["id"].as_str().unwrap().to_owned();
    (browser, id)
}

pub async fn staff_browser<'a>(shop: &'a Shop, email: &str, role: kernel::auth::Role) -> Browser<'a> {
    shop.user(email, role).await;
    let mut browser = Browser::new(shop);
    let (_, form) = browser.get("/account/sign-in").await;
    let (status, _) = browser.submit(&form, "/account/sign-in", &[("email", email), ("password", PASSWORD)]).await;
    assert_eq!(status, StatusCode::OK);
    browser
}

