//! Items 11, 15 and 25: signing in. Failed sign-ins hold up one address for
//! one email (never the owner elsewhere, and unknown emails alike), mailed
//! one-time links die with their siblings, and the client address behind a
//! proxy is the hop the proxy wrote, not one the client wrote.
//!
//! The addresses below are only values of the connection info and of
//! headers: no traffic goes anywhere but the in-process router.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use kernel::auth::Role;
use platform::on_db;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::support::{Shop, Who};

const PASSWORD: &str = "a long passphrase";
const IP_A: &str = "198.51.100.7:50000";
const IP_B: &str = "203.0.113.20:50000";

/// A sign-in from the connection `peer`, with an `X-Forwarded-For` if given.
async fn sign_in(shop: &Shop, peer: &str, forwarded_for: Option<&str>, email: &str, password: &str) -> (StatusCode, HeaderMap, Value) {
    let mut r = Request::builder().method("POST").uri("/api/v1/auth/login").header("content-type", "application/json");
    if let Some(hops) = forwarded_for {
        r = r.header("x-forwarded-for", hops);
    }
    let mut r = r.body(Body::from(json!({"email": email, "password": password}).to_string())).unwrap();
    r.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    let response = shop.app.router().oneshot(r).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn retry_after(headers: &HeaderMap) -> u64 {
    headers["retry-after"].to_str().unwrap().parse().unwrap()
}

async fn user_id(shop: &Shop, email: &str) -> String {
    let (status, body) = shop.send("GET", &format!("/api/v1/admin/users?email={email}"), &shop.as_staff(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"][0]["id"].as_str().unwrap().to_owned()
}

async fn audit_actions(shop: &Shop) -> Vec<Value> {
    let (status, body) = shop.send("GET", "/api/v1/admin/audit?limit=100", &shop.as_staff(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn item_11_failed_sign_ins_hold_up_one_address_not_the_owner_and_not_only_known_emails() {
    let shop = Shop::new().await;

    // Ten wrong passwords for the admin from address A: A waits, growing
    // with nothing further counted while it waits.
    let mut known = Vec::new();
    for _ in 0..10 {
        known.push(sign_in(&shop, IP_A, None, "admin@example.com", "not the passphrase").await);
    }
    assert!(known[..5].iter().all(|(s, _, b)| *s == StatusCode::UNAUTHORIZED && b["error"]["code"] == "invalid_credentials"));
    for (status, headers, body) in &known[5..] {
        assert_eq!((*status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("sign_in_throttled")), "{body}");
        assert!((1..=30).contains(&retry_after(headers)));
    }
    // Even the right password waits at A ...
    let (status, _, body) = sign_in(&shop, IP_A, None, "admin@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // ... but the admin at B signs in.
    let (status, _, body) = sign_in(&shop, IP_B, None, "admin@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "the owner elsewhere is not locked out: {body}");

    // An email with no account is answered exactly alike, wait included.
    let mut unknown = Vec::new();
    for _ in 0..10 {
        unknown.push(sign_in(&shop, IP_A, None, "ghost@example.com", "not the passphrase").await);
    }
    for ((ks, kh, kb), (us, uh, ub)) in known.iter().zip(&unknown) {
        assert_eq!((ks, kb), (us, ub));
        assert_eq!(kh.contains_key("retry-after"), uh.contains_key("retry-after"));
        if kh.contains_key("retry-after") {
            assert!(retry_after(kh).abs_diff(retry_after(uh)) <= 1, "{kh:?} {uh:?}");
        }
    }

    // Staff who manage staff lift the admin's waits; a customer cannot.
    let admin = user_id(&shop, "admin@example.com").await;
    let unlock = format!("/api/v1/admin/users/{admin}/unlock");
    let customer = Who { token: Some(shop.user("cleo@example.com", Role::Customer).await), ..Who::default() };
    let (status, _) = shop.send("POST", &unlock, &customer, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let support = Who { token: Some(shop.user("help@example.com", Role::Support).await), ..Who::default() };
    let (status, body) = shop.send("POST", &unlock, &shop.as_staff(), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _, body) = sign_in(&shop, IP_A, None, "admin@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "unlocked: {body}");
    let (status, _) = shop.send("POST", "/api/v1/admin/users/usr_00000000000000000000000000/unlock", &support, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let audit = audit_actions(&shop).await;
    let cleared = audit.iter().find(|e| e["action"] == "sign_in_throttles_cleared").expect("the unlock is audited");
    assert_eq!(cleared["subject_id"], admin.as_str());
    assert!(audit.iter().any(|e| e["action"] == "sign_in_throttled" && e["ip"] == "198.51.100.7"));
}

/// The reset links mailed to `email` so far, oldest first.
async fn reset_links(shop: &Shop, email: &str) -> Vec<String> {
    let db = shop.app.db("auth").unwrap();
    let payloads: Vec<String> = on_db!(db, pool => sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE event_type = 'user.password_reset_requested' ORDER BY id")
        .fetch_all(pool).await)
    .unwrap();
    payloads
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).unwrap())
        .filter(|e| e["data"]["email"] == email)
        .map(|e| e["data"]["token"].as_str().unwrap().to_owned())
        .collect()
}

async fn forgot(shop: &Shop, email: &str) {
    let (status, _) = shop.send("POST", "/api/v1/auth/password/forgot", &Who::default(), Some(json!({"email": email}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

async fn reset(shop: &Shop, token: &str, password: &str) -> (StatusCode, Value) {
    shop.send("POST", "/api/v1/auth/password/reset", &Who::default(), Some(json!({"token": token, "password": password}))).await
}

#[tokio::test]
async fn item_15_using_a_reset_link_or_changing_the_password_voids_the_other_links() {
    let shop = Shop::new().await;
    shop.user("rita@example.com", Role::Customer).await;

    // Two links; the newer is used; the older is now void.
    forgot(&shop, "rita@example.com").await;
    forgot(&shop, "rita@example.com").await;
    let links = reset_links(&shop, "rita@example.com").await;
    assert_eq!(links.len(), 2);
    let (status, body) = reset(&shop, &links[1], "second new passphrase").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = reset(&shop, &links[0], "first new passphrase").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_token")), "{body}");

    // A link outstanding when the password is changed is void too.
    forgot(&shop, "rita@example.com").await;
    let outstanding = reset_links(&shop, "rita@example.com").await.pop().unwrap();
    let (status, _, tokens) = sign_in(&shop, IP_B, None, "rita@example.com", "second new passphrase").await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let rita = Who { token: tokens["access_token"].as_str().map(str::to_owned), ..Who::default() };
    let change = json!({"current_password": "second new passphrase", "new_password": "third new passphrase"});
    let (status, body) = shop.send("POST", "/api/v1/auth/password/change", &rita, Some(change)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = reset(&shop, &outstanding, "an intruders passphrase").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_token")), "{body}");
    let (status, _, body) = sign_in(&shop, IP_B, None, "rita@example.com", "third new passphrase").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn item_25_behind_a_trusted_proxy_the_client_is_the_hop_the_proxy_wrote() {
    let shop = Shop::with(|c| c.auth.trust_forwarded_for = true).await;
    let proxy = "127.0.0.1:40000"; // trusted by default

    // The hop the client wrote (left) is not the address recorded.
    let (status, _, _) = sign_in(&shop, proxy, Some("6.6.6.6, 10.9.8.7"), "admin@example.com", "not the passphrase").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let audit = audit_actions(&shop).await;
    let failed = audit.iter().find(|e| e["action"] == "login_failed").unwrap();
    assert_eq!(failed["ip"], "10.9.8.7", "{failed}");

    // A fresh spoofed left-most hop on every attempt does not reset the throttle.
    let mut last = None;
    for i in 0..7 {
        let hops = format!("192.0.2.{i}, 203.0.113.50");
        last = Some(sign_in(&shop, proxy, Some(&hops), "ghost@example.com", "not the passphrase").await);
    }
    let (status, headers, body) = last.unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("sign_in_throttled")), "{body}");
    assert!(headers.contains_key("retry-after"));

    // An untrusted peer's header is ignored altogether: its own address counts.
    let (status, _, body) = sign_in(&shop, IP_A, Some("203.0.113.50"), "ghost@example.com", "not the passphrase").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn item_11_only_staff_who_manage_staff_lift_a_staff_accounts_sign_in_waits() {
    let shop = Shop::new().await;
    shop.user("cat@example.com", Role::CatalogManager).await;
    shop.user("dora@example.com", Role::Customer).await;
    for email in ["cat@example.com", "dora@example.com"] {
        for _ in 0..5 {
            sign_in(&shop, IP_A, None, email, "not the passphrase").await;
        }
        assert_eq!(sign_in(&shop, IP_A, None, email, PASSWORD).await.0, StatusCode::TOO_MANY_REQUESTS);
    }
    let support = Who { token: Some(shop.user("help@example.com", Role::Support).await), ..Who::default() };
    let unlock = |id: &str| format!("/api/v1/admin/users/{id}/unlock");

    // A customer's waits: support (customers:write) lifts them.
    let dora = user_id(&shop, "dora@example.com").await;
    let (status, body) = shop.send("POST", &unlock(&dora), &support, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(sign_in(&shop, IP_A, None, "dora@example.com", PASSWORD).await.0, StatusCode::OK);

    // A staff account's: not without staff:manage, and the wait stays ...
    let cat = user_id(&shop, "cat@example.com").await;
    let (status, body) = shop.send("POST", &unlock(&cat), &support, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("missing_permission")), "{body}");
    assert_eq!(sign_in(&shop, IP_A, None, "cat@example.com", PASSWORD).await.0, StatusCode::TOO_MANY_REQUESTS);
    // ... until someone who manages staff lifts it.
    let (status, body) = shop.send("POST", &unlock(&cat), &shop.as_staff(), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(sign_in(&shop, IP_A, None, "cat@example.com", PASSWORD).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_11_wrong_sign_ins_sent_at_once_get_no_more_guesses_than_one_by_one() {
    let shop = Shop::new().await;
    let n = shop.config.auth.sign_in_throttle_after as usize;
    assert!(n > 0);
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..3 * n {
        let router = shop.app.router();
        guesses.spawn(async move {
            let body = json!({"email": "admin@example.com", "password": format!("guess number {i}")});
            let mut r = Request::builder().method("POST").uri("/api/v1/auth/login").header("content-type", "application/json")
                .body(Body::from(body.to_string())).unwrap();
            r.extensions_mut().insert(ConnectInfo(IP_A.parse::<SocketAddr>().unwrap()));
            router.oneshot(r).await.unwrap().status()
        });
    }
    let statuses = guesses.join_all().await;
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(checked + refused, 3 * n, "{statuses:?}");
    assert!(checked <= n, "{checked} guesses got their password checked, more than {n}: {statuses:?}");
    // The owner elsewhere is not held up.
    let (status, _, body) = sign_in(&shop, IP_B, None, "admin@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A reset request for `email` from the connection `peer`.
async fn forgot_from(shop: &Shop, peer: &str, email: &str) {
    let mut r = Request::builder().method("POST").uri("/api/v1/auth/password/forgot").header("content-type", "application/json")
        .body(Body::from(json!({"email": email}).to_string())).unwrap();
    r.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    let status = shop.app.router().oneshot(r).await.unwrap().status();
    assert_eq!(status, StatusCode::ACCEPTED, "the answer never tells");
}

#[tokio::test]
async fn item_12_one_clients_reset_requests_do_not_use_up_the_owners() {
    let shop = Shop::with(|c| {
        c.limits.password_resets_per_email_per_hour = 3;
        c.limits.password_resets_per_email_all_clients_per_hour = 5;
    })
    .await;
    shop.user("rita@example.com", Role::Customer).await;

    // An attacker asks for Rita's reset over and over: three are mailed.
    for _ in 0..5 {
        forgot_from(&shop, IP_A, "rita@example.com").await;
    }
    assert_eq!(reset_links(&shop, "rita@example.com").await.len(), 3);
    // Rita, elsewhere, still gets her link.
    forgot_from(&shop, IP_B, "rita@example.com").await;
    assert_eq!(reset_links(&shop, "rita@example.com").await.len(), 4, "the owner's own request is mailed");
    // All clients together stop at the higher cap.
    for _ in 0..3 {
        forgot_from(&shop, "192.0.2.9:50000", "rita@example.com").await;
    }
    assert_eq!(reset_links(&shop, "rita@example.com").await.len(), 5);
}

#[tokio::test]
async fn item_12_strangers_using_up_the_reset_cap_do_not_keep_the_owners_mail_away() {
    let shop = Shop::with(|c| {
        c.limits.password_resets_per_email_per_hour = 3;
        c.limits.password_resets_per_email_all_clients_per_hour = 10;
    })
    .await;
    shop.user("rita@example.com", Role::Customer).await;
    // Rita signs in from her usual address (an IPv6 client is its /64).
    let home = "[2001:db8:7:1::10]:50000";
    let (status, _, body) = sign_in(&shop, home, None, "rita@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Four strangers ask three times each: the cap for all clients is used up.
    for i in 1..=4 {
        for _ in 0..3 {
            forgot_from(&shop, &format!("192.0.2.{i}:50000"), "rita@example.com").await;
        }
    }
    assert_eq!(reset_links(&shop, "rita@example.com").await.len(), 10);
    forgot_from(&shop, "192.0.2.5:50000", "rita@example.com").await;
    assert_eq!(reset_links(&shop, "rita@example.com").await.len(), 10, "a fresh client is held by the cap");

    // Rita, from another address of her network, still gets her mail; her
    // own per-client limit still holds.
    for _ in 0..4 {
        forgot_from(&shop, "[2001:db8:7:1::99]:41000", "rita@example.com").await;
    }
    assert_eq!(reset_links(&shop, "rita@example.com").await.len(), 13, "the owner's own client is mailed up to its own limit");
    forgot_from(&shop, IP_B, "rita@example.com").await;
    assert_eq!(reset_links(&shop, "rita@example.com").await.len(), 13, "a client that never signed in is held by the cap");
}
