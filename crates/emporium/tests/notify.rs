//! Notifications through a whole shop: each event reaches the right person
//! by the right channel — the dev mailbox, a real SMTP server (Python's
//! aiosmtpd, which parses what we send), an SMS provider and merchants'
//! webhook receivers on loopback (signatures checked with an independent
//! HMAC implementation) — with retries, dead letters, preferences,
//! unsubscribe links and templates.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use kernel::auth::Role;
use serde_json::{Value, json};
use support::{Shop, Who};
use tokio::io::AsyncBufReadExt;

fn notify_shop(tune: impl FnOnce(&mut kernel::config::Config) + Send + 'static) -> impl Future<Output = Shop> {
    Shop::with(move |c| {
        c.services = vec!["auth".into(), "catalog".into(), "orders".into(), "notify".into()];
        c.notify.retry_base_ms = 100;
        c.notify.max_attempts = 3;
        c.notify.digest_interval_secs = 1;
        c.notify.order_placed_delay_secs = 1;
        tune(c);
    })
}

/// Polls `check` until it gives something, for up to 20 s.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..400 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The dev mailbox's messages to `to`, oldest first.
async fn mailbox(shop: &Shop, to: &str) -> Vec<Value> {
    let (s, page) = shop.send("GET", &format!("/api/v1/admin/mailbox?to={to}&limit=100"), &shop.as_staff(), None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let mut all = page["data"].as_array().cloned().unwrap_or_default();
    all.reverse();
    all
}

/// Waits for a message to `to` whose subject contains `subject`.
async fn mail_to(shop: &Shop, to: &str, subject: &str) -> Value {
    until(&format!("mail to {to} about {subject}"), || async {
        mailbox(shop, to).await.into_iter().find(|m| m["subject"].as_str().unwrap_or("").contains(subject))
    })
    .await
}

async fn notifications(shop: &Shop, query: &str) -> Vec<Value> {
    let (s, page) = shop.send("GET", &format!("/api/v1/admin/notifications?limit=100&{query}"), &shop.as_staff(), None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    page["data"].as_array().cloned().unwrap_or_default()
}

fn link_in(text: &str, prefix: &str) -> String {
    let start = text.find(prefix).unwrap_or_else(|| panic!("no link starting {prefix} in {text}"));
    text[start..].split(|c: char| c.is_whitespace() || c == '"' || c == '<').next().unwrap().to_owned()
}

fn bearer(token: &str) -> Who {
    Who { token: Some(token.to_owned()), ..Who::default() }
}

/// Signs up a customer through the API and signs them in.
async fn customer(shop: &Shop, email: &str) -> String {
    let (s, body) = shop.send("POST", "/api/v1/auth/register", &Who::default(),
        Some(json!({"email": email, "password": "a long passphrase", "name": "Ada Lovelace"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (_, login) = shop.send("POST", "/api/v1/auth/login", &Who::default(), Some(json!({"email": email, "password": "a long passphrase"}))).await;
    login["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn account_and_order_messages_reach_the_dev_mailbox_once() {
    let shop = notify_shop(|_| {}).await;

    // Sign-up: a verification link that works.
    let _token = customer(&shop, "grace@example.com").await;
    let mail = mail_to(&shop, "grace@example.com", "Confirm your email").await;
    assert_eq!(mail["channel"], "email");
    assert_eq!(mail["from"], "Emporium <shop@localhost>");
    let link = link_in(mail["text"].as_str().unwrap(), "http");
    assert!(unescape(mail["html"].as_str().unwrap()).contains(&link), "both parts carry the link");
    let token = link.split("token=").nth(1).unwrap();
    let (s, body) = shop.send("POST", "/api/v1/auth/verify-email", &Who::default(), Some(json!({"token": token}))).await;
    assert!(s.is_success(), "the mailed link verifies the address: {body}");

    // Forgotten password: a reset link.
    shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "grace@example.com"}))).await;
    let reset = mail_to(&shop, "grace@example.com", "Reset your").await;
    assert!(reset["text"].as_str().unwrap().contains("/account/reset-password?token="));

    // A guest's order, paid at once: the receipt, itemised, and nothing else.
    shop.product("MUG-1", 1250, 5).await;
    let (cart, who) = shop.ready_cart(&[("MUG-1", 2)], None).await;
    let (s, order) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!(s, StatusCode::CREATED, "{order}");
    let receipt = mail_to(&shop, "ada@example.com", "Receipt for order #1001").await;
    for part in ["text", "html"] {
        let body = unescape(receipt[part].as_str().unwrap());
        assert!(body.contains("Product MUG-1") && body.contains("× 2"), "{part}: {body}");
        assert!(body.contains("25.00 USD") && body.contains("31.81 USD"), "{part}: subtotal and total: {body}");
        assert!(body.contains("/orders/ord_") && body.contains("token="), "{part}: a guest's order link: {body}");
    }
    assert!(receipt["headers"].get("List-Unsubscribe").is_none(), "a receipt is not marketing");

    // Shipped with tracking, refunded, and another order cancelled.
    let id = order["id"].as_str().unwrap();
    let (s, body) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/fulfilments"), &shop.as_staff(), Some(json!({
        "carrier": "UPS", "tracking_number": "1Z999", "tracking_url": "https://track.example/1Z999"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let shipped = mail_to(&shop, "ada@example.com", "is on its way").await;
    assert!(shipped["text"].as_str().unwrap().contains("UPS, tracking number 1Z999"));
    assert!(unescape(shipped["html"].as_str().unwrap()).contains(r#"href="https://track.example/1Z999""#));
    let refunding = Who { idempotency_key: Some("refund-1".into()), ..shop.as_staff() };
    let (s, body) = shop.send("POST", &format!("/api/v1/admin/orders/{id}/refunds"), &refunding, Some(json!({"amount": 500, "reason": "scratched"}))).await;
    assert!(s.is_success(), "{body}");
    let refund = mail_to(&shop, "ada@example.com", "A refund of 5.00 USD").await;
    assert!(refund["text"].as_str().unwrap().contains("(scratched)"));
    let (cart, who) = shop.ready_cart(&[("MUG-1", 1)], None).await;
    let (_, second) = shop.checkout(&cart, &who, "tok_visa").await;
    let second_id = second["id"].as_str().unwrap();
    let (s, _) = shop.send("POST", &format!("/api/v1/admin/orders/{second_id}/cancel"), &shop.as_staff(), Some(json!({"reason": "out of paint"}))).await;
    assert!(s.is_success());
    let cancelled = mail_to(&shop, "ada@example.com", "Order #1002 is cancelled").await;
    assert!(cancelled["text"].as_str().unwrap().contains("out of paint"));

    // An order waiting for its payment (3-D Secure) gets "order received"
    // once the delay passed; the paid ones never do.
    let (cart, who) = shop.ready_cart(&[("MUG-1", 1)], None).await;
    let (s, waiting) = shop.checkout(&cart, &who, "tok_requires_action").await;
    assert!(s.is_success() && waiting["status"] == "pending_payment", "{waiting}");
    let placed = mail_to(&shop, "ada@example.com", "We have your order #1003").await;
    assert!(placed["text"].as_str().unwrap().contains("payment is confirmed"));
    assert!(unescape(placed["html"].as_str().unwrap()).contains("Product MUG-1"));
    let received: Vec<String> = mailbox(&shop, "ada@example.com").await.iter().map(|m| m["subject"].as_str().unwrap().to_owned())
        .filter(|s| s.starts_with("We have your order")).collect();
    assert_eq!(received, ["We have your order #1003"], "paid orders get their receipt alone");

    // The log has every message, sent, with the provider's id; one in detail.
    let log = until("every message logged as sent", || async {
        let all = notifications(&shop, "recipient=ada@example.com").await;
        (all.len() >= 6 && all.iter().all(|n| n["status"] == "sent")).then_some(all)
    })
    .await;
    let kinds: Vec<&str> = log.iter().map(|n| n["template"].as_str().unwrap()).collect();
    for kind in ["order.placed.email", "order.paid.email", "order.fulfilled.email", "order.refunded.email", "order.cancelled.email"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let (s, detail) = shop.send("GET", &format!("/api/v1/admin/notifications/{}", log[0]["id"].as_str().unwrap()), &shop.as_staff(), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(detail["attempt_log"].as_array().unwrap().len(), 1);
    assert_eq!(detail["attempt_log"][0]["ok"], true);
    assert!(detail["provider_message_id"].as_str().unwrap().starts_with("msg_"));

    // Cursor pages: newest first, no overlap, no gap.
    let (_, first) = shop.send("GET", "/api/v1/admin/notifications?recipient=ada@example.com&limit=4", &shop.as_staff(), None).await;
    assert_eq!(first["has_more"], true);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = shop.send("GET", &format!("/api/v1/admin/notifications?recipient=ada@example.com&limit=100&starting_after={cursor}"), &shop.as_staff(), None).await;
    let paged: Vec<&Value> = first["data"].as_array().unwrap().iter().chain(rest["data"].as_array().unwrap()).collect();
    assert_eq!(paged.iter().map(|n| n["id"].clone()).collect::<Vec<_>>(), log.iter().map(|n| n["id"].clone()).collect::<Vec<_>>());
    assert_eq!(shop.send("GET", "/api/v1/admin/notifications?starting_after=nonsense", &shop.as_staff(), None).await.0, StatusCode::UNPROCESSABLE_ENTITY);

    // The same event delivered again sends nothing more.
    let db = shop.app.db("orders").unwrap().clone();
    let rows: Vec<(String,)> = platform::on_db!(db, pool => sqlx::query_as(
        "SELECT payload FROM outbox WHERE event_type = 'order.paid'").fetch_all(pool).await).unwrap();
    for (payload,) in rows {
        let event: kernel::Envelope = serde_json::from_str(&payload).unwrap();
        shop.app.bus().publish(&event).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(notifications(&shop, "recipient=ada@example.com").await.len(), log.len(), "a redelivered event queues nothing");
    assert_eq!(mailbox(&shop, "ada@example.com").await.len(), log.len());

    // Staff only: the log and the mailbox.
    let customer = customer(&shop, "eve@example.com").await;
    assert_eq!(shop.send("GET", "/api/v1/admin/mailbox", &bearer(&customer), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(shop.send("GET", "/api/v1/admin/notifications?status=lost", &shop.as_staff(), None).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(shop.send("GET", "/api/v1/admin/notifications/ord_123", &shop.as_staff(), None).await.0, StatusCode::NOT_FOUND);
}

/// An SMS provider with Twilio's Messages API on loopback. It answers with
/// the status in `mode` (201 unless told otherwise).
struct SmsFake {
    url: String,
    received: Arc<Mutex<Vec<(String, HeaderMap, String)>>>,
    mode: Arc<AtomicU16>,
    /// Answer 503 to this many requests first.
    fail_next: Arc<AtomicU16>,
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| {
            let v = v.replace('+', " ");
            let b = v.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 3 <= b.len() {
                    out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        })
    })
}

/// HTML as a reader sees it: entities the escaper writes, decoded.
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/").replace("&quot;", "\"").replace("&#x27;", "'").replace("&amp;", "&")
}

async fn sms_fake() -> SmsFake {
    let received = Arc::new(Mutex::new(Vec::new()));
    let mode = Arc::new(AtomicU16::new(201));
    let fail_next = Arc::new(AtomicU16::new(0));
    let (r, m, f) = (received.clone(), mode.clone(), fail_next.clone());
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        axum::routing::post(move |axum::extract::Path(sid): axum::extract::Path<String>, headers: HeaderMap, body: String| {
            let (r, m, f) = (r.clone(), m.clone(), f.clone());
            async move {
                let failing = f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                let status = if failing { 503 } else { m.load(Ordering::SeqCst) };
                r.lock().unwrap().push((sid, headers, body));
                let n = r.lock().unwrap().len();
                let answer = if status == 201 {
                    json!({"sid": format!("SM{n:032}"), "status": "queued"})
                } else {
                    json!({"code": 21211, "message": "The 'To' number is not valid."})
                };
                (StatusCode::from_u16(status).unwrap(), axum::Json(answer))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    SmsFake { url, received, mode, fail_next }
}

#[tokio::test]
async fn customers_who_opted_in_get_order_updates_by_sms() {
    let sms = sms_fake().await;
    let url = sms.url.clone();
    let shop = notify_shop(move |c| {
        c.notify.sms_url = Some(url);
        c.notify.sms_account = Some("AC123".into());
        c.notify.sms_token = Some("sms-secret".into());
        c.notify.sms_from = Some("+15005550006".into());
    })
    .await;
    let token = customer(&shop, "sam@example.com").await;
    let me = bearer(&token);

    let (s, prefs) = shop.send("GET", "/api/v1/me/notification-preferences", &me, None).await;
    assert_eq!((s, prefs["transactional_email"].as_bool(), prefs["order_sms"].as_bool()), (StatusCode::OK, Some(true), Some(false)));
    let (s, e) = shop.send("PUT", "/api/v1/me/notification-preferences", &me, Some(json!({"order_sms": true}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("phone_required")));
    let (s, e) = shop.send("PUT", "/api/v1/me/notification-preferences", &me, Some(json!({"order_sms": true, "phone": "4155550100"}))).await;
    assert_eq!((s, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("phone")));
    let (s, e) = shop.send("PUT", "/api/v1/me/notification-preferences", &me, Some(json!({"transactional_email": false}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("always_on")));
    let (s, e) = shop.send("PUT", "/api/v1/me/notification-preferences", &me, Some(json!({"sms": true}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "unknown fields are refused: {e}");

    // A guest gets no SMS, whatever the address says.
    shop.product("CAP-1", 1500, 10).await;
    let (cart, who) = shop.ready_cart(&[("CAP-1", 1)], None).await;
    shop.checkout(&cart, &who, "tok_visa").await;
    mail_to(&shop, "ada@example.com", "Receipt").await;

    let (s, prefs) = shop.send("PUT", "/api/v1/me/notification-preferences", &me, Some(json!({"order_sms": true, "phone": "+1 415 555 0100"}))).await;
    assert_eq!((s, prefs["phone"].as_str()), (StatusCode::OK, Some("+14155550100")));
    let (cart, who) = shop.ready_cart(&[("CAP-1", 1)], Some(&me)).await;
    let (s, order) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!(s, StatusCode::CREATED, "{order}");
    let texts = until("a text", || async {
        let got = sms.received.lock().unwrap().clone();
        (!got.is_empty()).then_some(got)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sms.received.lock().unwrap().len(), 1, "the payment, and nothing for the guest (nor an 'order received' for a paid order)");
    let (sid, headers, body) = &texts[0];
    assert_eq!(sid, "AC123");
    let expected = format!("Basic {}", base64_of("AC123:sms-secret"));
    assert_eq!(headers["authorization"], expected.as_str());
    assert_eq!(form_value(body, "To").as_deref(), Some("+14155550100"));
    assert_eq!(form_value(body, "From").as_deref(), Some("+15005550006"));
    assert!(form_value(body, "Body").unwrap().contains("payment confirmed for order #1002"), "{body}");

    // The provider fails twice, then takes the shipping text: it is retried.
    sms.fail_next.store(2, Ordering::SeqCst);
    let id = order["id"].as_str().unwrap();
    shop.send("POST", &format!("/api/v1/admin/orders/{id}/fulfilments"), &shop.as_staff(), Some(json!({
        "carrier": "DHL", "tracking_url": "https://track.example/JD0"}))).await;
    let shipped = until("the shipping text sent", || async {
        notifications(&shop, "channel=sms&event_type=order.fulfilled").await.into_iter().find(|n| n["status"] == "sent")
    })
    .await;
    assert_eq!(shipped["attempts"], 3);
    assert!(shipped["provider_message_id"].as_str().unwrap().starts_with("SM"));
    let body = &sms.received.lock().unwrap().last().unwrap().2.clone();
    assert!(form_value(body, "Body").unwrap().contains("with DHL. Track: https://track.example/JD0"), "{body}");

    // A refusal for good is not retried.
    sms.mode.store(400, Ordering::SeqCst);
    let before = sms.received.lock().unwrap().len();
    let (cart, who) = shop.ready_cart(&[("CAP-1", 1)], Some(&me)).await;
    shop.checkout(&cart, &who, "tok_visa").await;
    let failed = until("a failed text", || async {
        let all = notifications(&shop, "channel=sms&status=failed").await;
        (!all.is_empty()).then_some(all)
    })
    .await;
    assert!(failed.iter().all(|n| n["attempts"] == 1 && n["last_error"].as_str().unwrap().contains("400")), "{failed:#?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sms.received.lock().unwrap().len(), before + 1);
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A merchant's receiver: records what it is sent and answers `mode`.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    mode: Arc<AtomicU16>,
}

async fn receiver() -> Receiver {
    let received = Arc::new(Mutex::new(Vec::new()));
    let mode = Arc::new(AtomicU16::new(200));
    let (r, m) = (received.clone(), mode.clone());
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (r, m) = (r.clone(), m.clone());
            async move {
                r.lock().unwrap().push((headers, body));
                StatusCode::from_u16(m.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, received, mode }
}

/// Checks `Emporium-Signature` the way a merchant would, with RustCrypto's
/// HMAC (the shop signs with ring).
fn signature_holds(headers: &HeaderMap, body: &str, secret: &str) -> bool {
    let header = headers["emporium-signature"].to_str().unwrap();
    let t = header.split(',').find_map(|p| p.strip_prefix("t=")).unwrap();
    let v1 = header.split(',').find_map(|p| p.strip_prefix("v1=")).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - t.parse::<i64>().unwrap();
    mac.verify_slice(&hex::decode(v1).unwrap()).is_ok() && age.abs() < 300
}

#[tokio::test]
async fn merchants_webhooks_are_signed_retried_and_switched_off_when_they_keep_failing() {
    // The receivers are on loopback, which only a development setting allows.
    let shop = notify_shop(|c| {
        c.notify.webhook_retry_secs = 2;
        c.notify.webhooks_allow_private = true;
    })
    .await;
    let good = receiver().await;
    let (s, e) = shop.send("POST", "/api/v1/admin/webhooks", &shop.as_staff(), Some(json!({"url": "ftp://x", "event_types": ["order.*"]}))).await;
    assert_eq!((s, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("url")));
    let (s, e) = shop.send("POST", "/api/v1/admin/webhooks", &shop.as_staff(), Some(json!({"url": good.url, "event_types": ["order.shipped"]}))).await;
    assert_eq!((s, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("event_types[0]")));
    let (s, hook) = shop.send("POST", "/api/v1/admin/webhooks", &shop.as_staff(), Some(json!({"url": good.url, "event_types": ["order.*", "user.*"]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(hook["id"].as_str().unwrap().starts_with("whk_") && secret.starts_with("whsec_"));

    // A test send, answered at once.
    let (s, test) = shop.send("POST", &format!("/api/v1/admin/webhooks/{}/test", hook["id"].as_str().unwrap()), &shop.as_staff(), None).await;
    assert_eq!((s, test["ok"].as_bool(), test["result"].as_str()), (StatusCode::OK, Some(true), Some("delivered")), "{test}");

    shop.product("PEN-1", 300, 10).await;
    let (cart, who) = shop.ready_cart(&[("PEN-1", 1)], None).await;
    shop.checkout(&cart, &who, "tok_visa").await;
    shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "admin@example.com"}))).await;
    let got = until("order.placed and order.paid", || async {
        let got = good.received.lock().unwrap().clone();
        let types: Vec<String> = got.iter().filter_map(|(h, _)| h.get("emporium-event-type").map(|v| v.to_str().unwrap().to_owned())).collect();
        (types.contains(&"order.placed".to_owned()) && types.contains(&"order.paid".to_owned())).then_some(got)
    })
    .await;
    for (headers, body) in &got {
        assert!(signature_holds(headers, body, &secret), "signed: {body}");
        assert!(!signature_holds(headers, body, "whsec_another"));
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(headers["emporium-event-id"].to_str().unwrap(), event["id"].as_str().unwrap());
        assert!(event["id"].as_str().unwrap().starts_with("evt_") && event.get("occurred_at").is_some());
        assert!(event["data"].get("lookup_token").is_none(), "keys to a guest's order stay in the shop");
        assert_ne!(event["type"], "user.password_reset_requested", "sign-in links never leave the shop");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(good.received.lock().unwrap().iter().all(|(h, _)| h["emporium-event-type"] != "user.password_reset_requested"));

    // An endpoint that keeps failing: retried with back-off for the retry
    // window (2 s here), then dead, switched off, and staff told.
    let bad = receiver().await;
    bad.mode.store(500, Ordering::SeqCst);
    let (_, failing) = shop.send("POST", "/api/v1/admin/webhooks", &shop.as_staff(), Some(json!({"url": bad.url, "event_types": ["inventory.changed"]}))).await;
    let failing_id = failing["id"].as_str().unwrap().to_owned();
    shop.send("PUT", "/api/v1/admin/inventory/PEN-1", &shop.as_staff(), Some(json!({"on_hand": 20}))).await;
    let dead = until("the delivery dead", || async {
        notifications(&shop, &format!("endpoint_id={failing_id}")).await.into_iter().find(|n| n["status"] == "dead")
    })
    .await;
    assert!(dead["attempts"].as_i64().unwrap() >= 3, "retried: {dead}");
    assert!(dead["last_error"].as_str().unwrap().contains("HTTP 500"));
    let (_, detail) = shop.send("GET", &format!("/api/v1/admin/notifications/{}", dead["id"].as_str().unwrap()), &shop.as_staff(), None).await;
    let log = detail["attempt_log"].as_array().unwrap();
    assert!(log.iter().all(|a| a["status_code"] == 500 && a["ok"] == false));
    let at: Vec<i64> = log.iter().map(|a| time::OffsetDateTime::parse(a["at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap().unix_timestamp_nanos() as i64 / 1_000_000).collect();
    let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().max().unwrap() > &(gaps[0] + 100), "waits grow: {gaps:?}");
    let (_, endpoint) = shop.send("GET", &format!("/api/v1/admin/webhooks/{failing_id}"), &shop.as_staff(), None).await;
    assert_eq!(endpoint["enabled"], false);
    assert!(endpoint["disabled_reason"].as_str().unwrap().contains("no delivery succeeded"));
    let notice = mail_to(&shop, "admin@example.com", "was switched off").await;
    assert!(notice["text"].as_str().unwrap().contains(&bad.url));

    // Fixed: switched on again, the dead delivery retried by hand arrives.
    bad.mode.store(204, Ordering::SeqCst);
    let (s, _) = shop.send("PATCH", &format!("/api/v1/admin/webhooks/{failing_id}"), &shop.as_staff(), Some(json!({"enabled": true}))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, retried) = shop.send("POST", &format!("/api/v1/admin/notifications/{}/retry", dead["id"].as_str().unwrap()), &shop.as_staff(), None).await;
    assert_eq!((s, retried["status"].as_str()), (StatusCode::ACCEPTED, Some("queued")));
    until("the retried delivery sent", || async {
        let (_, n) = shop.send("GET", &format!("/api/v1/admin/notifications/{}", dead["id"].as_str().unwrap()), &shop.as_staff(), None).await;
        (n["status"] == "sent").then_some(())
    })
    .await;
    let (s, e) = shop.send("POST", &format!("/api/v1/admin/notifications/{}/retry", dead["id"].as_str().unwrap()), &shop.as_staff(), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_retryable")));
    let (s, _) = shop.send("DELETE", &format!("/api/v1/admin/webhooks/{failing_id}"), &shop.as_staff(), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let catalog_manager = shop.user("cm@example.com", Role::CatalogManager).await;
    assert_eq!(shop.send("GET", "/api/v1/admin/webhooks", &bearer(&catalog_manager), None).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn templates_are_checked_when_saved_and_used_when_sent() {
    let shop = notify_shop(|_| {}).await;
    let key = "/api/v1/admin/notification-templates/order.paid.email";
    let (s, t) = shop.send("GET", key, &shop.as_staff(), None).await;
    assert_eq!((s, t["customised"].as_bool()), (StatusCode::OK, Some(false)));
    let (s, all) = shop.send("GET", "/api/v1/admin/notification-templates", &shop.as_staff(), None).await;
    assert!(s.is_success() && all.as_array().unwrap().len() >= 13);
    assert_eq!(shop.send("GET", "/api/v1/admin/notification-templates/order.lost.email", &shop.as_staff(), None).await.0, StatusCode::NOT_FOUND);

    let (s, e) = shop.send("PUT", key, &shop.as_staff(), Some(json!({"subject": "Paid", "html": "{% for line in %}", "text": "x"}))).await;
    assert_eq!((s, e["error"]["code"].as_str(), e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("template_error"), Some("html")));
    let (s, e) = shop.send("PUT", key, &shop.as_staff(), Some(json!({"subject": "Paid {{ order.nummber }}", "text": "x"}))).await;
    assert_eq!((s, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("subject")), "an unknown variable is refused when saved");
    let (s, e) = shop.send("PUT", "/api/v1/admin/notification-templates/order.paid.sms", &shop.as_staff(), Some(json!({"subject": "x", "text": "x"}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("not_for_sms")));

    let custom = json!({"subject": "Thanks for order {{ order.number }}!", "html": "<p>Total {{ order.total }} for {{ order.lines[0].title }}</p>",
                        "text": "Total {{ order.total }} for {{ order.lines[0].title }}"});
    let (s, preview) = shop.send("POST", &format!("{key}/preview"), &shop.as_staff(), Some(custom.clone())).await;
    assert_eq!((s, preview["subject"].as_str()), (StatusCode::OK, Some("Thanks for order 1042!")), "{preview}");
    assert!(preview["html"].as_str().unwrap().contains("Classic Tee"));
    let (s, saved) = shop.send("PUT", key, &shop.as_staff(), Some(custom)).await;
    assert_eq!((s, saved["customised"].as_bool()), (StatusCode::OK, Some(true)));

    // Used for the next receipt; a title with markup is text in HTML.
    let (s, p) = shop.send("POST", "/api/v1/admin/products", &shop.as_staff(), Some(json!({
        "title": "<script>alert(1)</script>", "status": "active", "variants": [{"sku": "XSS-1", "prices": {"USD": 100}}]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    shop.send("PUT", "/api/v1/admin/inventory/XSS-1", &shop.as_staff(), Some(json!({"on_hand": 5}))).await;
    let (cart, who) = shop.ready_cart(&[("XSS-1", 1)], None).await;
    shop.checkout(&cart, &who, "tok_visa").await;
    let mail = mail_to(&shop, "ada@example.com", "Thanks for order 1001!").await;
    assert!(mail["html"].as_str().unwrap().contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "{}", mail["html"]);
    assert!(!mail["html"].as_str().unwrap().contains("<script>"));
    assert!(mail["text"].as_str().unwrap().contains("<script>alert(1)</script>"), "plain text is not HTML");

    assert_eq!(shop.send("DELETE", key, &shop.as_staff(), None).await.0, StatusCode::NO_CONTENT);
    let (_, t) = shop.send("GET", key, &shop.as_staff(), None).await;
    assert_eq!(t["customised"], false);
    assert_eq!(t["subject"], "Receipt for order #{{ order.number }}");
}

#[tokio::test]
async fn back_in_stock_alerts_low_stock_digests_and_unsubscribe_links() {
    let shop = notify_shop(|_| {}).await;
    let product = shop.product("LAMP-1", 4000, 0).await;
    let (s, e) = shop.send("POST", &format!("/api/v1/products/{product}/notify-me"), &Who::default(), Some(json!({}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("email_required")));
    let (s, e) = shop.send("POST", &format!("/api/v1/products/{product}/notify-me"), &Who::default(), Some(json!({"email": "nope"}))).await;
    assert_eq!((s, e["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("email")));
    let (s, e) = shop.send("POST", &format!("/api/v1/products/{product}/notify-me"), &Who::default(), Some(json!({"email": "lin@example.com", "sku": "OTHER"}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_sku")));
    assert_eq!(shop.send("POST", "/api/v1/products/prod_01J0000000000000000000000/notify-me", &Who::default(), Some(json!({"email": "lin@example.com"}))).await.0, StatusCode::NOT_FOUND);
    assert_eq!(shop.send("POST", "/api/v1/products/ord_1/notify-me", &Who::default(), Some(json!({"email": "lin@example.com"}))).await.0, StatusCode::NOT_FOUND);
    for email in ["Lin@Example.com", "max@example.com"] {
        let (s, a) = shop.send("POST", &format!("/api/v1/products/{product}/notify-me"), &Who::default(), Some(json!({"email": email}))).await;
        assert_eq!((s, a["status"].as_str()), (StatusCode::CREATED, Some("waiting")), "{a}");
    }

    // Back: one email each, with a one-click unsubscribe.
    shop.send("PUT", "/api/v1/admin/inventory/LAMP-1", &shop.as_staff(), Some(json!({"on_hand": 3}))).await;
    let mail = mail_to(&shop, "lin@example.com", "is back in stock").await;
    assert!(mail["text"].as_str().unwrap().contains("/products/product-lamp-1"), "{}", mail["text"]);
    let unsubscribe = mail["headers"]["List-Unsubscribe"].as_str().unwrap().trim_matches(['<', '>']).to_owned();
    assert_eq!(mail["headers"]["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click");
    assert!(mail["text"].as_str().unwrap().contains(&unsubscribe));
    mail_to(&shop, "max@example.com", "is back in stock").await;

    // Out and back again: Lin asked once and is not written to again; Max
    // unsubscribes with the link (no sign-in), after asking again.
    shop.send("POST", &format!("/api/v1/products/{product}/notify-me"), &Who::default(), Some(json!({"email": "max@example.com", "sku": "LAMP-1"}))).await;
    let path = unsubscribe.split_once("/api/").map(|(_, p)| format!("/api/{p}")).unwrap();
    let max_link = mailbox(&shop, "max@example.com").await[0]["headers"]["List-Unsubscribe"].as_str().unwrap().trim_matches(['<', '>']).to_owned();
    let max_path = max_link.split_once("/api/").map(|(_, p)| format!("/api/{p}")).unwrap();
    let (s, _, page) = support::call(&shop.app, "GET", &max_path, &[], None).await;
    assert_eq!(s, StatusCode::OK, "the link opens a confirmation page");
    assert_eq!(page, Value::Null, "(HTML, not JSON)");
    let (s, done) = shop.send("POST", &max_path, &Who::default(), None).await;
    assert_eq!((s, done["unsubscribed"].as_str()), (StatusCode::OK, Some("stock_alerts")));
    assert_ne!(path, max_path, "each link names its own address");
    let tampered = format!("{}x", max_path);
    assert_eq!(shop.send("POST", &tampered, &Who::default(), None).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    shop.send("PUT", "/api/v1/admin/inventory/LAMP-1", &shop.as_staff(), Some(json!({"on_hand": 0}))).await;
    shop.send("PUT", "/api/v1/admin/inventory/LAMP-1", &shop.as_staff(), Some(json!({"on_hand": 3}))).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mailbox(&shop, "lin@example.com").await.len(), 1);
    assert_eq!(mailbox(&shop, "max@example.com").await.len(), 1);

    // Low stock: staff with inventory:write get one digest; a SKU that runs
    // low twice in a day is listed once.
    let _manager = shop.user("stock@example.com", Role::OrderManager).await;
    let _support = shop.user("help@example.com", Role::Support).await;
    for on_hand in [10, 2, 10, 1] {
        shop.send("PUT", "/api/v1/admin/inventory/LAMP-1", &shop.as_staff(), Some(json!({"on_hand": on_hand}))).await;
    }
    let digest = mail_to(&shop, "stock@example.com", "running low").await;
    assert!(digest["text"].as_str().unwrap().contains("LAMP-1 (Product LAMP-1"), "{}", digest["text"]);
    assert_eq!(digest["text"].as_str().unwrap().matches("LAMP-1 (").count(), 1);
    mail_to(&shop, "admin@example.com", "running low").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let digests = |to: &'static str| {
        let shop = &shop;
        async move { mailbox(shop, to).await.into_iter().filter(|m| m["subject"].as_str().unwrap().contains("running low")).count() }
    };
    assert_eq!(digests("help@example.com").await, 0, "support staff do not manage stock");
    assert_eq!(digests("stock@example.com").await, 1, "one digest a day per SKU");
    let link = digest["headers"]["List-Unsubscribe"].as_str().unwrap().trim_matches(['<', '>']).to_owned();
    let (s, done) = shop.send("POST", &link.split_once("/api/").map(|(_, p)| format!("/api/{p}")).unwrap(), &Who::default(), None).await;
    assert_eq!((s, done["unsubscribed"].as_str()), (StatusCode::OK, Some("stock_digest")));
}

#[tokio::test]
async fn a_deleted_customer_leaves_no_personal_data_in_the_log() {
    let shop = notify_shop(|_| {}).await;
    let token = customer(&shop, "gone@example.com").await;
    mail_to(&shop, "gone@example.com", "Confirm your email").await;
    shop.send("PUT", "/api/v1/me/notification-preferences", &bearer(&token), Some(json!({"phone": "+447700900123"}))).await;
    let (s, _) = shop.send("DELETE", "/api/v1/me", &bearer(&token), Some(json!({"password": "a long passphrase"}))).await;
    assert!(s.is_success());
    until("the log erased", || async {
        notifications(&shop, "recipient=gone@example.com").await.is_empty().then_some(())
    })
    .await;
    let erased = notifications(&shop, "recipient=%5Berased%5D").await;
    assert!(!erased.is_empty() && erased.iter().all(|n| n["subject"] == "[erased]" && n["user_id"].is_null()));
    assert!(mailbox(&shop, "gone@example.com").await.is_empty());
    let db = shop.app.db("notify").unwrap().clone();
    let left: Vec<(String,)> = platform::on_db!(db, pool => sqlx::query_as(
        "SELECT user_id FROM notification_preferences UNION ALL SELECT user_id FROM contacts WHERE email = 'gone@example.com'")
        .fetch_all(pool).await).unwrap();
    assert!(left.is_empty(), "{left:?}");
}

// A real SMTP server

/// A running aiosmtpd sink: its port and the folder it writes each message to (as JSON).
struct Sink {
    port: u16,
    dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts the sink, or says why it cannot (no python3 or aiosmtpd): the
/// test then skips, unless `EMPORIUM_TEST_SMTP_SINK=required` (CI).
async fn smtp_sink(auth: &str, tls: Option<(&Path, &Path)>) -> Option<Sink> {
    let deps = repo_root().join(".ci/.pydeps");
    let pythonpath = match std::env::var("PYTHONPATH") {
        Ok(p) if !p.is_empty() => format!("{p}:{}", deps.display()),
        _ => deps.display().to_string(),
    };
    let required = std::env::var("EMPORIUM_TEST_SMTP_SINK").is_ok_and(|v| v == "required");
    let usable = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .env("PYTHONPATH", &pythonpath)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        assert!(!required, "EMPORIUM_TEST_SMTP_SINK=required but python3 with aiosmtpd is not available");
        eprintln!("skipping: python3 with aiosmtpd is not available (pip install aiosmtpd, or run .ci/run)");
        return None;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new("python3")
        .arg(repo_root().join("crates/emporium/tests/support/smtp_sink.py"))
        .args(["--port", &port.to_string(), "--dir"])
        .arg(dir.path())
        .args(["--auth", auth])
        .args(tls.map(|(cert, key)| vec!["--tls-cert".as_ref(), cert.as_os_str(), "--tls-key".as_ref(), key.as_os_str()]).unwrap_or_default())
        .env("PYTHONPATH", &pythonpath)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap();
    assert_eq!(ready.as_deref(), Some("ready"));
    Some(Sink { port, dir, _child: child })
}

impl Sink {
    fn messages(&self) -> Vec<Value> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
        names.sort();
        names.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect()
    }

    async fn message(&self, to: &str, subject: &str) -> Value {
        until(&format!("SMTP mail to {to} about {subject}"), || async {
            self.messages().into_iter().find(|m| {
                m["rcpt_tos"].as_array().unwrap().iter().any(|r| r == to) && m["subject"].as_str().unwrap_or("").contains(subject)
            })
        })
        .await
    }
}

#[tokio::test]
async fn mail_goes_through_a_real_smtp_server_and_refusals_are_retried_or_failed() {
    let Some(sink) = smtp_sink("mailer:smtp-pass", None).await else { return };
    let url = format!("smtp://mailer:smtp-pass@127.0.0.1:{}", sink.port);
    let shop = notify_shop(move |c| {
        c.notify.smtp_url = Some(url);
        c.notify.mail_from = "Lamp Shop <orders@lamps.test>".into();
        c.notify.shop_name = "Lamp Shop".into();
    })
    .await;

    shop.product("BULB-1", 800, 4).await;
    let (cart, who) = shop.ready_cart(&[("BULB-1", 3)], None).await;
    let (s, order) = shop.checkout(&cart, &who, "tok_visa").await;
    assert_eq!(s, StatusCode::CREATED, "{order}");
    let m = sink.message("ada@example.com", "Receipt for order #1001").await;
    assert_eq!(m["auth_login"], "mailer", "signed in to the server");
    assert_eq!(m["from"], "Lamp Shop <orders@lamps.test>");
    assert_eq!(m["to"], "ada@example.com");
    assert_eq!(m["multipart_type"], "multipart/alternative");
    assert!(m["message_id"].as_str().unwrap().starts_with("<ntf_") && m["message_id"].as_str().unwrap().ends_with("@lamps.test>"));
    let text = m["text"].as_str().unwrap().replace('\r', "");
    let html = m["html"].as_str().unwrap().replace('\r', "");
    assert!(text.contains("Product BULB-1 — Default × 3: 24.00 USD"), "{text}");
    assert!(html.contains("<title>Lamp Shop</title>") && html.contains("Product BULB-1"), "{html}");
    let link = link_in(&text, "http");
    assert!(link.contains(&format!("/orders/{}?token=", order["id"].as_str().unwrap())), "{link}");
    assert!(unescape(&html).contains(&link));
    let logged = until("the receipt logged", || async {
        notifications(&shop, "event_type=order.paid&channel=email").await.into_iter().find(|n| n["status"] == "sent")
    })
    .await;
    assert_eq!(logged["provider_message_id"], m["message_id"]);

    // Every other message through the same server, to the right person.
    let id = order["id"].as_str().unwrap();
    shop.send("POST", &format!("/api/v1/admin/orders/{id}/fulfilments"), &shop.as_staff(), Some(json!({
        "carrier": "UPS", "tracking_number": "1Z42", "tracking_url": "https://track.example/1Z42"}))).await;
    let shipped = sink.message("ada@example.com", "is on its way").await;
    assert!(unescape(shipped["html"].as_str().unwrap()).contains(r#"<a href="https://track.example/1Z42">Track the parcel</a>"#));
    let refunding = Who { idempotency_key: Some("r-1".into()), ..shop.as_staff() };
    shop.send("POST", &format!("/api/v1/admin/orders/{id}/refunds"), &refunding, Some(json!({"amount": 800, "reason": "one was broken"}))).await;
    let refunded = sink.message("ada@example.com", "A refund of 8.00 USD").await;
    assert!(refunded["text"].as_str().unwrap().contains("one was broken"));
    let (cart, who) = shop.ready_cart(&[("BULB-1", 1)], None).await;
    let (_, second) = shop.checkout(&cart, &who, "tok_visa").await;
    shop.send("POST", &format!("/api/v1/admin/orders/{}/cancel", second["id"].as_str().unwrap()), &shop.as_staff(), Some(json!({}))).await;
    let cancelled = sink.message("ada@example.com", "Order #1002 is cancelled").await;
    assert!(cancelled["text"].as_str().unwrap().contains("will be back on your card"));
    let _customer = customer(&shop, "new@example.com").await;
    let verify = sink.message("new@example.com", "Confirm your email address for Lamp Shop").await;
    let link = link_in(&verify["text"].as_str().unwrap().replace('\r', ""), "http");
    let token = link.split("token=").nth(1).unwrap();
    let (s, _) = shop.send("POST", "/api/v1/auth/verify-email", &Who::default(), Some(json!({"token": token}))).await;
    assert!(s.is_success(), "the link from the real mail verifies the address");
    shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "new@example.com"}))).await;
    let reset = sink.message("new@example.com", "Reset your Lamp Shop password").await;
    assert!(reset["text"].as_str().unwrap().contains("/account/reset-password?token="));
    for on_hand in [20, 2] {
        shop.send("PUT", "/api/v1/admin/inventory/BULB-1", &shop.as_staff(), Some(json!({"on_hand": on_hand}))).await;
    }
    let digest = sink.message("admin@example.com", "running low at Lamp Shop").await;
    assert!(digest["text"].as_str().unwrap().contains("BULB-1"), "{}", digest["text"]);
    assert!(digest["headers"]["list-unsubscribe"].as_str().unwrap().contains("/api/v1/unsubscribe?token="));
    assert!(sink.messages().iter().all(|m| m["rcpt_tos"].as_array().unwrap().len() == 1), "one recipient per message");
    assert!(!sink.messages().iter().any(|m| m["subject"].as_str().unwrap_or("").starts_with("We have your order")), "paid at once: a receipt alone");

    // Back-in-stock mail carries List-Unsubscribe, and its link works.
    let lamp = shop.product("LAMP-9", 5000, 0).await;
    shop.send("POST", &format!("/api/v1/products/{lamp}/notify-me"), &Who::default(), Some(json!({"email": "fan@example.com"}))).await;
    shop.send("PUT", "/api/v1/admin/inventory/LAMP-9", &shop.as_staff(), Some(json!({"on_hand": 2}))).await;
    let alert = sink.message("fan@example.com", "is back in stock").await;
    let header = alert["headers"]["list-unsubscribe"].as_str().unwrap().to_owned();
    assert_eq!(alert["headers"]["list-unsubscribe-post"], "List-Unsubscribe=One-Click");
    let path = header.trim_matches(['<', '>']).split_once("/api/").map(|(_, p)| format!("/api/{p}")).unwrap();
    let (s, done) = shop.send("POST", &path, &Who::default(), None).await;
    assert_eq!((s, done["unsubscribed"].as_str()), (StatusCode::OK, Some("stock_alerts")));

    // A server that says "later" is retried until the attempts run out
    // (dead); one that says "no such user" is not retried (failed).
    for email in ["tempfail@example.com", "reject@example.com"] {
        shop.user(email, Role::Customer).await;
        shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": email}))).await;
    }
    let dead = until("the deferred reset mail dead", || async {
        notifications(&shop, "recipient=tempfail@example.com&status=dead").await.into_iter().next()
    })
    .await;
    assert_eq!(dead["attempts"], 3);
    assert!(dead["last_error"].as_str().unwrap().contains("451"), "{dead}");
    let failed = until("the refused reset mail failed", || async {
        notifications(&shop, "recipient=reject@example.com&status=failed").await.into_iter().next()
    })
    .await;
    assert_eq!(failed["attempts"], 1);
    assert!(failed["last_error"].as_str().unwrap().contains("550"), "{failed}");
    assert!(sink.messages().iter().all(|m| m["rcpt_tos"][0] != "tempfail@example.com" && m["rcpt_tos"][0] != "reject@example.com"));
}

/// A private CA and a certificate it signed for 127.0.0.1, as PEM files.
fn private_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Test mail CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn mail_goes_over_starttls_and_only_to_a_server_whose_certificate_is_trusted() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_certificate(certs.path());
    let Some(sink) = smtp_sink("mailer:smtp-pass", Some((&cert, &key))).await else { return };
    let url = format!("smtp://mailer:smtp-pass@127.0.0.1:{}?tls=required", sink.port);

    let trusting = url.clone();
    let shop = notify_shop(move |c| {
        c.notify.smtp_url = Some(trusting);
        c.notify.smtp_ca_file = Some(ca);
    })
    .await;
    shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "admin@example.com"}))).await;
    let m = sink.message("admin@example.com", "Reset your Emporium password").await;
    assert_eq!((m["tls"].as_bool(), m["auth_login"].as_str()), (Some(true), Some("mailer")), "sent after STARTTLS, then signed in");

    // Without the CA, the server's certificate is not trusted and nothing is sent.
    let wary = notify_shop(move |c| c.notify.smtp_url = Some(url)).await;
    wary.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": "admin@example.com"}))).await;
    let refused = until("a refused connection logged", || async {
        notifications(&wary, "recipient=admin@example.com").await.into_iter().find(|n| n["last_error"].is_string())
    })
    .await;
    assert!(refused["last_error"].as_str().unwrap().to_lowercase().contains("certificate"), "{refused}");
    let resets = sink.messages().into_iter().filter(|m| m["subject"].as_str().unwrap_or("").starts_with("Reset")).count();
    assert_eq!(resets, 1, "only the shop that trusts the server sent anything");
}
