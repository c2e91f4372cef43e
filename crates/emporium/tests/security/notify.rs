//! What notify keeps and where it connects: private messages (reset links,
//! guests' order links) are never shown to staff nor kept in clear, and
//! merchants' webhooks never reach loopback, private or link-local networks.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use kernel::auth::Role;
use platform::{on_db, on_write};
use serde_json::{Value, json};

use super::support::pages::{mail_link, staff_browser};
use super::support::{Shop, Who};

fn notify_shop(tune: impl FnOnce(&mut kernel::config::Config) + Send + 'static) -> impl Future<Output = Shop> {
    Shop::with(move |c| {
        c.services = vec!["auth".into(), "catalog".into(), "orders".into(), "search".into(), "notify".into(), "web".into()];
        c.notify.retry_base_ms = 100;
        c.notify.order_placed_delay_secs = 1;
        tune(c);
    })
}

fn bearer(token: &str) -> Who {
    Who { token: Some(token.to_owned()), ..Who::default() }
}

/// Polls until every message to `to` was tried and sent, for up to 20 s: their log entries.
async fn all_sent(shop: &Shop, to: &str, at_least: usize) -> Vec<Value> {
    for _ in 0..400 {
        let (_, page) = shop.send("GET", &format!("/api/v1/admin/notifications?recipient={to}&limit=100"), &shop.as_staff(), None).await;
        let all = page["data"].as_array().cloned().unwrap_or_default();
        if all.len() >= at_least && all.iter().all(|n| n["status"] == "sent") {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the messages to {to} were not all sent");
}

type DeliveryRow = (String, String, String, Option<String>, Option<String>, Option<String>, Option<String>);

/// Every text a notify table keeps about messages and orders, row by row
/// (the dev mailbox aside: it is the recipients' inbox of a shop without a mail server).
async fn notify_rows(shop: &Shop) -> Vec<String> {
    let db = shop.app.db("notify").unwrap().clone();
    let mut rows: Vec<String> = Vec::new();
    let deliveries: Vec<DeliveryRow> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, subject, body, html, unsubscribe_url, last_error, secret FROM deliveries").fetch_all(pool).await).unwrap();
    rows.extend(deliveries.into_iter().map(|r| format!("{r:?}")));
    let attempts: Vec<(String, Option<String>)> =
        on_db!(db, pool => sqlx::query_as("SELECT delivery_id, error FROM delivery_attempts").fetch_all(pool).await).unwrap();
    rows.extend(attempts.into_iter().map(|r| format!("{r:?}")));
    let facts: Vec<(String, Option<String>, Option<String>, String)> =
        on_db!(db, pool => sqlx::query_as("SELECT order_id, email, lookup_token, placed FROM order_facts").fetch_all(pool).await).unwrap();
    rows.extend(facts.into_iter().map(|r| format!("{r:?}")));
    rows
}

#[tokio::test]
async fn item_2_order_managers_never_read_private_messages() {
    let shop = notify_shop(|_| {}).await;
    let manager = shop.user("om@example.com", Role::OrderManager).await;
    let (s, _) = shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "admin@example.com"}))).await;
    assert!(s.is_success());

    // The mailbox is the admin's inbox here: the link arrives whole.
    let link = mail_link(&shop, "admin@example.com", "Reset your", "/account/reset-password?token=").await;
    let token = link.split("token=").nth(1).unwrap().to_owned();
    assert!(token.len() >= 16, "{link}");
    let log = all_sent(&shop, "admin@example.com", 1).await;
    let reset = log.iter().find(|n| n["subject"].as_str().unwrap().contains("Reset your")).unwrap()["id"].as_str().unwrap().to_owned();

    // An order manager (customers:read) sees who got what and how it went, never what it said.
    let manager_sees = |path: String| {
        let who = bearer(&manager);
        let shop = &shop;
        async move {
            let (s, body) = shop.send("GET", &path, &who, None).await;
            assert_eq!(s, StatusCode::OK, "{path}: {body}");
            body
        }
    };
    let list = manager_sees("/api/v1/admin/notifications?limit=100".into()).await;
    assert!(!list.to_string().contains(&token), "{list}");
    for n in &log {
        let detail = manager_sees(format!("/api/v1/admin/notifications/{}", n["id"].as_str().unwrap())).await;
        assert!(!detail.to_string().contains(&token), "{detail}");
        assert!(detail.get("body").is_none() && detail.get("html").is_none(), "metadata only: {detail}");
        assert_eq!(detail["recipient"], "admin@example.com");
    }
    let mailbox = manager_sees("/api/v1/admin/mailbox?limit=100".into()).await;
    assert!(!mailbox.to_string().contains(&token), "{mailbox}");
    let mails = mailbox["data"].as_array().unwrap();
    assert!(!mails.is_empty() && mails.iter().all(|m| m.get("text").is_none() && m.get("html").is_none()), "{mailbox}");
    let mail_id = mails[0]["id"].as_str().unwrap().to_owned();
    let mail = manager_sees(format!("/api/v1/admin/mailbox/{mail_id}")).await;
    assert!(!mail.to_string().contains(&token) && mail.get("text").is_none(), "{mail}");

    // Nor in the console, which asks the API as them.
    let mut console = staff_browser(&shop, "om2@example.com", Role::OrderManager).await;
    for path in [format!("/admin/mailbox/{mail_id}"), format!("/admin/notifications/{reset}"), "/admin/mailbox".into()] {
        let (s, page) = console.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(!page.contains(&token), "{path}: {page}");
    }

    // The log keeps the message with its link withheld, even for staff:manage;
    // the sealed link was dropped once it was sent.
    let (_, detail) = shop.send("GET", &format!("/api/v1/admin/notifications/{reset}"), &shop.as_staff(), None).await;
    assert!(detail["body"].as_str().unwrap().contains("[link withheld]"), "{detail}");
    assert!(!detail.to_string().contains(&token), "{detail}");
    for row in notify_rows(&shop).await {
        assert!(!row.contains(&token), "a stored row holds the reset token: {row}");
    }
    let (s, e) = shop.send("POST", &format!("/api/v1/admin/notifications/{reset}/retry"), &shop.as_staff(), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_retryable")), "a sent one-time link is not sent again: {e}");

    // The admin's link works.
    let (s, body) = shop.send("POST", "/api/v1/auth/password/reset", &Who::default(),
        Some(json!({"token": token, "password": "another long passphrase"}))).await;
    assert!(s.is_success(), "{body}");
    let (s, _) = shop.send("POST", "/api/v1/auth/login", &Who::default(), Some(json!({"email": "admin@example.com", "password": "another long passphrase"}))).await;
    assert_eq!(s, StatusCode::OK);
}

/// A loopback listener that counts the connections it gets (it should get none).
async fn tripwire() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, hits)
}

#[tokio::test]
async fn item_6_webhooks_never_reach_private_networks() {
    let shop = notify_shop(|_| {}).await;
    assert!(!shop.config.notify.webhooks_allow_private, "off unless a developer turns it on");
    let types = json!(["inventory.low_stock"]);

    // Refused when saved: literal addresses and local names.
    for url in ["http://127.0.0.1:1/", "http://169.254.169.254/", "http://[::1]/", "http://localhost/", "http://[::ffff:10.0.0.1]/",
        "http://100.64.0.1/", "http://[fd00::1]/", "http://0x7f.1/"] {
        let (s, e) = shop.send("POST", "/api/v1/admin/webhooks", &shop.as_staff(), Some(json!({"url": url, "event_types": types}))).await;
        assert_eq!((s, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("url")), "{url}: {e}");
    }
    // A public name is taken (not resolved, not contacted: it starts switched off) ...
    let (s, hook) = shop.send("POST", "/api/v1/admin/webhooks", &shop.as_staff(),
        Some(json!({"url": "https://hooks.example.com/in", "event_types": types, "enabled": false}))).await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let id = hook["id"].as_str().unwrap().to_owned();
    // ... and cannot be changed to a private one.
    let (s, e) = shop.send("PATCH", &format!("/api/v1/admin/webhooks/{id}"), &shop.as_staff(), Some(json!({"url": "http://169.254.169.254/latest"}))).await;
    assert_eq!((s, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("url")), "{e}");

    // Refused when connecting: the name now leads to this machine (as DNS
    // rebinding would make it); the resolver finds only loopback and nothing connects.
    let (port, hits) = tripwire().await;
    let db = shop.app.db("notify").unwrap().clone();
    let url = format!("http://localhost:{port}/in");
    on_write!(db, pool => sqlx::query("UPDATE webhook_endpoints SET url = $1, enabled = TRUE WHERE id = $2")
        .bind(&url).bind(&id).execute(pool).await.map(|r| r.rows_affected())).unwrap();
    let (s, test) = shop.send("POST", &format!("/api/v1/admin/webhooks/{id}/test"), &shop.as_staff(), None).await;
    assert_eq!(s, StatusCode::OK, "{test}");
    assert_eq!(test, json!({"ok": false, "result": "failed"}), "delivered or failed, nothing more");
    // And a literal loopback address that got into the table the same way.
    on_write!(db, pool => sqlx::query("UPDATE webhook_endpoints SET url = $1 WHERE id = $2")
        .bind(format!("http://127.0.0.1:{port}/in")).bind(&id).execute(pool).await.map(|r| r.rows_affected())).unwrap();
    let (_, test) = shop.send("POST", &format!("/api/v1/admin/webhooks/{id}/test"), &shop.as_staff(), None).await;
    assert_eq!(test, json!({"ok": false, "result": "failed"}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection reached the loopback listener");
}

#[tokio::test]
async fn item_20_guest_lookup_tokens_are_kept_nowhere_in_clear() {
    let shop = notify_shop(|_| {}).await;
    shop.product("MUG-20", 1250, 5).await;
    let (cart, who) = shop.ready_cart(&[("MUG-20", 1)], None).await;
    let paying = Who { idempotency_key: Some("checkout-20".into()), ..who.clone() };
    let (s, order) = shop.checkout(&cart, &paying, "tok_visa").await;
    assert_eq!(s, StatusCode::CREATED, "{order}");
    let token = order["lookup_token"].as_str().unwrap().to_owned();
    let id = order["id"].as_str().unwrap().to_owned();

    // The guest's receipt carries the working link (put in at send time) ...
    let link = mail_link(&shop, "ada@example.com", "Receipt for order", "/orders/").await;
    assert!(link.contains(&format!("token={token}")), "{link}");
    all_sent(&shop, "ada@example.com", 1).await;
    let (s, seen) = shop.send("GET", &format!("/api/v1/orders/{id}?token={token}"), &Who::default(), None).await;
    assert_eq!(s, StatusCode::OK, "{seen}");

    // ... and a replay of the checkout answers the order without the token again.
    let (s, headers, again) = shop.send_full("POST", &format!("/api/v1/carts/{cart}/checkout"), &paying,
        Some(json!({"payment": {"provider": "test", "token": "tok_visa"}}))).await;
    assert_eq!((s, headers.get("idempotent-replayed").is_some()), (StatusCode::CREATED, true), "{again}");
    assert_eq!(again["id"], order["id"]);
    assert!(again.get("lookup_token").is_none(), "{again}");

    // Nothing notify keeps, nor the stored checkout answer, holds it in clear.
    let rows = notify_rows(&shop).await;
    assert!(rows.iter().any(|r| r.contains(&id)), "the order's facts are kept");
    for row in rows {
        assert!(!row.contains(&token), "a notify row holds the lookup token: {row}");
    }
    let orders = shop.app.db("orders").unwrap().keys().await.unwrap().clone();
    let stored: Vec<(String, Option<Vec<u8>>)> = on_db!(orders, pool => sqlx::query_as(
        "SELECT idem_key, response_body FROM idempotency_keys").fetch_all(pool).await).unwrap();
    assert!(!stored.is_empty());
    for (key, body) in stored {
        let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
        assert!(!body.contains(&token), "the stored answer for {key} holds the lookup token: {body}");
    }

    // Later messages still link the guest to the order (the token kept sealed, opened at send time).
    let (s, body) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/fulfilments"), &shop.as_staff(), Some(json!({"carrier": "UPS"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let link = mail_link(&shop, "ada@example.com", "is on its way", "/orders/").await;
    assert!(link.contains(&format!("token={token}")), "{link}");
    all_sent(&shop, "ada@example.com", 2).await;
    for row in notify_rows(&shop).await {
        assert!(!row.contains(&token), "a notify row holds the lookup token: {row}");
    }
}

/// A loopback server that answers every request with a 500 naming itself.
async fn failing_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut buf).await;
                let body = "internal-billing-service v2.3";
                let answer = format!("HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    port
}

/// Two webhook endpoints for `event` that cannot take a delivery: a closed
/// port and a server answering 500. Their ids, and their ports in that order.
async fn failing_endpoints(shop: &Shop, event: &str) -> (Vec<String>, [u16; 2]) {
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let failing = failing_server().await;
    let mut ids = Vec::new();
    for port in [closed, failing] {
        let url = format!("http://127.0.0.1:{port}/in");
        let (s, hook) = shop.send("POST", "/api/v1/admin/webhooks", &shop.as_staff(), Some(json!({"url": url, "event_types": [event]}))).await;
        assert_eq!(s, StatusCode::CREATED, "{hook}");
        ids.push(hook["id"].as_str().unwrap().to_owned());
    }
    (ids, [closed, failing])
}

#[tokio::test]
async fn item_6_why_a_webhook_failed_is_shown_only_to_staff_managers() {
    // A developer's shop, where loopback targets are let through: what the
    // log says about a closed port and a failing server is what a scan would learn.
    let shop = notify_shop(|c| c.notify.webhooks_allow_private = true).await;
    let manager = bearer(&shop.user("om@example.com", Role::OrderManager).await);
    let (ids, [closed, failing]) = failing_endpoints(&shop, "inventory.low_stock").await;
    for id in &ids {
        let (s, test) = shop.send("POST", &format!("/api/v1/admin/webhooks/{id}/test"), &shop.as_staff(), None).await;
        assert_eq!((s, test), (StatusCode::OK, json!({"ok": false, "result": "failed"})));
    }

    for (endpoint, port) in ids.iter().zip([closed, failing]) {
        let query = format!("/api/v1/admin/notifications?endpoint_id={endpoint}");
        // The merchant's admin reads why.
        let (s, list) = shop.send("GET", &query, &shop.as_staff(), None).await;
        assert_eq!(s, StatusCode::OK, "{list}");
        let delivery = list["data"][0].clone();
        let why = delivery["last_error"].as_str().unwrap_or_default().to_owned();
        assert!(!why.is_empty(), "{delivery}");
        let id = delivery["id"].as_str().unwrap().to_owned();
        let (_, detail) = shop.send("GET", &format!("/api/v1/admin/notifications/{id}"), &shop.as_staff(), None).await;
        let attempt = &detail["attempt_log"][0];
        assert_eq!(attempt["ok"], false, "{detail}");
        assert!(attempt["error"].is_string() || attempt["status_code"] == 500, "{detail}");

        // An order manager reads that it failed, and when; not why.
        let (s, list) = shop.send("GET", &query, &manager, None).await;
        assert_eq!(s, StatusCode::OK, "{list}");
        assert_eq!(list["data"][0]["status"], delivery["status"]);
        assert!(list["data"][0]["last_error"].is_null(), "{list}");
        assert!(!list.to_string().contains(&why), "{list}");
        let (s, detail) = shop.send("GET", &format!("/api/v1/admin/notifications/{id}"), &manager, None).await;
        assert_eq!(s, StatusCode::OK, "{detail}");
        let attempt = &detail["attempt_log"][0];
        assert_eq!(attempt["ok"], false, "{detail}");
        assert!(attempt["at"].is_string(), "{detail}");
        assert!(attempt["error"].is_null() && attempt["status_code"].is_null(), "{detail}");
        assert!(detail["last_error"].is_null(), "{detail}");
        let text = detail.to_string();
        assert!(!text.contains(&why) && !text.contains("500") && !text.to_lowercase().contains("refused"), "{port}: {detail}");
    }

    // Nor in the console, which asks the API as them.
    let mut console = staff_browser(&shop, "om2@example.com", Role::OrderManager).await;
    let (s, page) = console.get("/admin/notifications?channel=webhook").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains(&format!("127.0.0.1:{closed}/in")) && page.contains("failed"), "the failed deliveries are listed: {page}");
    assert!(!page.contains("HTTP 500") && !page.contains("no answer") && !page.contains("error sending"), "{page}");
}

/// An endpoint switched off after failing says so, and for how long, to
/// `settings:write` (its page and the mail about it), never what failed: a
/// refused connection, a status or a resolver's answer would map the inside
/// network. The delivery log keeps that for `staff:manage`.
#[tokio::test]
async fn item_6_a_switched_off_webhook_says_not_what_failed() {
    let shop = notify_shop(|c| {
        c.notify.webhooks_allow_private = true;
        // Tried a few times (0.1 s apart, growing), given up after a second.
        c.notify.webhook_retry_secs = 1;
    })
    .await;
    let (ids, _) = failing_endpoints(&shop, "inventory.changed").await;
    shop.product("HOOK-1", 300, 10).await;

    let mut whys = Vec::new();
    for id in &ids {
        let mut endpoint = Value::Null;
        for _ in 0..400 {
            endpoint = shop.send("GET", &format!("/api/v1/admin/webhooks/{id}"), &shop.as_staff(), None).await.1;
            if endpoint["enabled"] == false {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(endpoint["enabled"], false, "switched off: {endpoint}");
        let (_, log) = shop.send("GET", &format!("/api/v1/admin/notifications?endpoint_id={id}"), &shop.as_staff(), None).await;
        let why = log["data"][0]["last_error"].as_str().unwrap_or_default().to_owned();
        assert!(!why.is_empty(), "the delivery log keeps what failed: {log}");
        let reason = endpoint["disabled_reason"].as_str().unwrap_or_default().to_owned();
        assert!(reason.contains("no delivery succeeded"), "{endpoint}");
        let (_, list) = shop.send("GET", "/api/v1/admin/webhooks", &shop.as_staff(), None).await;
        for shown in [reason.clone(), list.to_string()] {
            let lower = shown.to_lowercase();
            assert!(!shown.contains(&why) && !shown.contains("HTTP 500") && !lower.contains("refused") && !lower.contains("error"), "{why} shown: {shown}");
        }
        whys.push(why);
    }

    // The mails about it, one per endpoint, say no more.
    let mut notices = Vec::new();
    for _ in 0..400 {
        let (_, mail) = shop.send("GET", "/api/v1/admin/mailbox?to=admin@example.com&limit=100", &shop.as_staff(), None).await;
        notices = mail["data"].as_array().unwrap().iter().filter(|m| m["subject"].as_str().unwrap_or("").contains("was switched off")).cloned().collect();
        if notices.len() == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(notices.len(), ids.len(), "{notices:?}");
    for notice in &notices {
        let text = format!("{} {}", notice["text"], notice["html"]);
        let lower = text.to_lowercase();
        assert!(text.contains("no delivery succeeded"), "{text}");
        assert!(whys.iter().all(|why| !text.contains(why)) && !text.contains("HTTP 500") && !lower.contains("refused") && !lower.contains("error"), "{text}");
    }
}
