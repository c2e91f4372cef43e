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

/// `text` as it reads once the HTML escapes are undone.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';').filter(|e| *e <= 8) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The attributes of the tag starting at `tag` (just after its name): (name, value).
pub fn attributes(tag: &str) -> Vec<(String, String)> {
    let end = tag.find('>').unwrap_or(tag.len());
    let mut rest = &tag[..end];
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        let name_end = rest.find(|c: char| c == '=' || c.is_whitespace() || c == '/').unwrap_or(rest.len());
        if name_end == 0 {
            if rest.is_empty() {
                return out;
            }
            rest = &rest[1..];
            continue;
        }
        let name = rest[..name_end].to_ascii_lowercase();
        rest = &rest[name_end..];
        if let Some(quoted) = rest.strip_prefix("=\"") {
            let close = quoted.find('"').unwrap();
            out.push((name, unescape(&quoted[..close])));
            rest = &quoted[close + 1..];
        } else {
            out.push((name, String::new()));
        }
    }
}

/// What a browser sends for the form on `page` holding `marker`: its
/// inputs (checkboxes when checked, no files), the chosen option of each
/// select, its textareas, in the page's order.
pub fn form_fields(page: &str, marker: &str) -> Vec<(String, String)> {
    let form = page
        .split("<form")
        .skip(1)
        .map(|f| &f[..f.find("</form>").unwrap()])
        .find(|f| f.contains(marker))
        .unwrap_or_else(|| panic!("no form with {marker} in {page}"));
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        let get = |attrs: &[(String, String)], key: &str| attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        if let Some(tag) = rest.strip_prefix("input") {
            let attrs = attributes(tag);
            let Some(name) = get(&attrs, "name") else { continue };
            match get(&attrs, "type").as_deref() {
                Some("checkbox" | "radio") if get(&attrs, "checked").is_none() => {}
                Some("file" | "submit") => {}
                Some("checkbox" | "radio") => fields.push((name, get(&attrs, "value").unwrap_or_else(|| "on".into()))),
                _ => fields.push((name, get(&attrs, "value").unwrap_or_default())),
            }
        } else if let Some(tag) = rest.strip_prefix("select") {
            let attrs = attributes(tag);
            let body = &tag[..tag.find("</select>").unwrap()];
            let options: Vec<Vec<(String, String)>> = body.split("<option").skip(1).map(attributes).collect();
            let chosen = options.iter().find(|o| get(o, "selected").is_some()).or(options.first());
            if let (Some(name), Some(option)) = (get(&attrs, "name"), chosen) {
                fields.push((name, get(option, "value").unwrap_or_default()));
            }
        } else if let Some(tag) = rest.strip_prefix("textarea") {
            let attrs = attributes(tag);
            let open = tag.find('>').unwrap() + 1;
            let close = tag.find("</textarea>").unwrap();
            if let Some(name) = get(&attrs, "name") {
                fields.push((name, unescape(&tag[open..close])));
            }
        }
    }
    fields
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
    /// Pages served on a port of their own (`http://127.0.0.1:…`): requests
    /// go there over HTTP, not through the shop's router.
    pub remote: Option<String>,
}

impl<'a> Browser<'a> {
    pub fn new(shop: &'a Shop) -> Self {
        Browser { shop, cookies: Default::default(), from: None, headers: Vec::new(), remote: None }
    }

    /// A browser of the pages served at `base` over HTTP; `shop` is the
    /// shop (its API) behind them.
    pub fn through(shop: &'a Shop, base: &str) -> Self {
        Browser { remote: Some(base.trim_end_matches('/').to_owned()), ..Browser::new(shop) }
    }

    /// Sends `request` to the pages, through the router or over HTTP.
    async fn exchange(&self, request: Request<Body>) -> (StatusCode, HeaderMap, axum::body::Bytes) {
        let Some(base) = &self.remote else {
            let response = self.shop.app.router().oneshot(request).await.unwrap();
            let (status, headers) = (response.status(), response.headers().clone());
            return (status, headers, response.into_body().collect().await.unwrap().to_bytes());
        };
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap();
        let response = http.request(parts.method, format!("{base}{}", parts.uri)).headers(parts.headers).body(body).send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.bytes().await.unwrap())
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
        let (status, headers, bytes) = self.exchange(r).await;
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
        let (status, headers, bytes) = self.exchange(request).await;
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

