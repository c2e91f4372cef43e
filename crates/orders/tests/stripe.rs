#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]
//! The Stripe gateway against a fake Stripe on loopback that speaks the part
//! of the PaymentIntents API the gateway uses, and its webhook signatures
//! against a vector computed independently (Python's `hmac`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orders::gateway::{Charge, GatewayError, Outcome, PaymentGateway, WebhookEvent};
use orders::stripe::{StripeGateway, verify_signature};
use ring::hmac;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const KEY: &str = "sk_test_fake";
const WHSEC: &str = "whsec_test";
/// Reserved and non-ASCII characters, to prove the form encoding.
const RETURN_URL: &str = "https://shop.test/checkout/return?order=ord_1&note=café au lait";

// ---- the fake Stripe ----

#[derive(Default)]
struct Book {
    intents: HashMap<String, Value>,
    replays: HashMap<String, (StatusCode, Value)>,
    /// Intents really created, whatever was replayed.
    created: usize,
    refunds: usize,
    forms: Vec<HashMap<String, String>>,
}

type Shared = Arc<Mutex<Book>>;

struct Fake {
    base: String,
    book: Shared,
}

impl Fake {
    async fn start() -> Self {
        let book = Shared::default();
        let app = Router::new()
            .route("/v1/payment_intents", post(create))
            .route("/v1/payment_intents/{id}", get(show))
            .route("/v1/payment_intents/{id}/capture", post(capture))
            .route("/v1/payment_intents/{id}/cancel", post(cancel))
            .route("/v1/refunds", post(refund))
            .with_state(book.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, book }
    }

    fn gateway(&self) -> StripeGateway {
        StripeGateway::new(KEY, Some(WHSEC.into()), &self.base).unwrap()
    }

    fn created(&self) -> usize {
        self.book.lock().unwrap().created
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn error(kind: &str, code: &str, message: &str) -> Value {
    json!({ "error": { "type": kind, "code": code, "message": message } })
}

fn authorised(headers: &HeaderMap) -> Result<(), Response> {
    let sent = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if sent == format!("Bearer {KEY}") {
        return Ok(());
    }
    // Echoes the key in full (Stripe masks it) so the gateway's scrub is tested.
    let message = format!("Invalid API Key provided: {}", sent.trim_start_matches("Bearer "));
    Err(reply(StatusCode::UNAUTHORIZED, json!({ "error": { "type": "invalid_request_error", "message": message } })))
}

/// Strict: anything a browser would have escaped is refused, so a sloppy
/// encoder fails here rather than at Stripe.
fn form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, Response> {
    let form_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) == Some("application/x-www-form-urlencoded");
    if !form_type || !body.iter().all(|b| b.is_ascii_alphanumeric() || b"-._*+%&=".contains(b)) {
        return Err(reply(StatusCode::BAD_REQUEST, error("invalid_request_error", "parameter_invalid", "bad form")));
    }
    let body = std::str::from_utf8(body).unwrap();
    Ok(body.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap()).map(|(k, v)| (decode(k), decode(v))).collect())
}

fn decode(text: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [bytes.next().unwrap(), bytes.next().unwrap()];
                u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap()
            }
            b => b,
        });
    }
    String::from_utf8(out).unwrap()
}

/// Stripe's idempotency: a repeated key gets the first answer, untouched.
fn idempotent(book: &Shared, headers: &HeaderMap, run: impl FnOnce(&mut Book) -> (StatusCode, Value)) -> Response {
    let mut book = book.lock().unwrap();
    let key = headers.get("idempotency-key").map(|v| v.to_str().unwrap().to_owned());
    if let Some((status, body)) = key.as_ref().and_then(|k| book.replays.get(k)).cloned() {
        return reply(status, body);
    }
    let (status, body) = run(&mut book);
    if let Some(key) = key {
        book.replays.insert(key, (status, body.clone()));
    }
    reply(status, body)
}

fn no_such(id: &str) -> (StatusCode, Value) {
    (StatusCode::NOT_FOUND, error("invalid_request_error", "resource_missing", &format!("No such payment_intent: '{id}'")))
}

fn unexpected_state(intent: &Value) -> (StatusCode, Value) {
    let message = format!("This PaymentIntent's status is {}.", intent["status"]);
    (StatusCode::BAD_REQUEST, error("invalid_request_error", "payment_intent_unexpected_state", &message))
}

async fn create(State(book): State<Shared>, headers: HeaderMap, body: Bytes) -> Result<Response, Response> {
    authorised(&headers)?;
    let form = form(&headers, &body)?;
    Ok(idempotent(&book, &headers, |book| {
        let token = form["payment_method_data[card][token]"].as_str();
        let declined = match token {
            "tok_visa" | "tok_requires_action" => None,
            "tok_chargeDeclined" => Some(("card_declined", None, "Your card was declined.")),
            "tok_insufficientFunds" => Some(("card_declined", Some("insufficient_funds"), "Your card has insufficient funds.")),
            "tok_expiredCard" => Some(("expired_card", None, "Your card has expired.")),
            "tok_stripeDown" => return (StatusCode::INTERNAL_SERVER_ERROR, error("api_error", "", "Something went wrong.")),
            _ => return (StatusCode::BAD_REQUEST, error("invalid_request_error", "resource_missing", "No such token")),
        };
        book.created += 1;
        book.forms.push(form.clone());
        let id = format!("pi_{}", book.created);
        let amount: i64 = form["amount"].parse().unwrap();
        let mut intent = json!({
            "id": id, "object": "payment_intent", "amount": amount, "currency": form["currency"].clone(),
            "amount_received": 0, "amount_capturable": 0, "refunded": 0,
            "last_payment_error": null, "next_action": null
        });
        let answer = match declined {
            None if token == "tok_requires_action" => {
                intent["status"] = json!("requires_action");
                intent["next_action"] = json!({
                    "type": "redirect_to_url",
                    "redirect_to_url": { "url": format!("https://hooks.stripe.test/3ds/{id}"), "return_url": form["return_url"].clone() }
                });
                (StatusCode::OK, intent.clone())
            }
            None if form["capture_method"] == "manual" => {
                intent["status"] = json!("requires_capture");
                intent["amount_capturable"] = json!(amount);
                (StatusCode::OK, intent.clone())
            }
            None => {
                intent["status"] = json!("succeeded");
                intent["amount_received"] = json!(amount);
                (StatusCode::OK, intent.clone())
            }
            Some((code, decline_code, message)) => {
                let mut card_error = json!({ "type": "card_error", "code": code, "decline_code": decline_code, "message": message });
                intent["status"] = json!("requires_payment_method");
                intent["last_payment_error"] = card_error.clone();
                card_error["payment_intent"] = intent.clone();
                (StatusCode::PAYMENT_REQUIRED, json!({ "error": card_error }))
            }
        };
        book.intents.insert(id, intent);
        answer
    }))
}

async fn show(State(book): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Result<Response, Response> {
    authorised(&headers)?;
    let (status, body) = book.lock().unwrap().intents.get(&id).map_or_else(|| no_such(&id), |i| (StatusCode::OK, i.clone()));
    Ok(reply(status, body))
}

async fn capture(State(book): State<Shared>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Response, Response> {
    authorised(&headers)?;
    let form = form(&headers, &body)?;
    Ok(idempotent(&book, &headers, |book| {
        let Some(intent) = book.intents.get_mut(&id) else { return no_such(&id) };
        let amount: i64 = form["amount_to_capture"].parse().unwrap();
        if intent["status"] != "requires_capture" || amount > intent["amount_capturable"].as_i64().unwrap() {
            return unexpected_state(intent);
        }
        intent["status"] = json!("succeeded");
        intent["amount_received"] = json!(amount);
        intent["amount_capturable"] = json!(0);
        (StatusCode::OK, intent.clone())
    }))
}

async fn cancel(State(book): State<Shared>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Response, Response> {
    authorised(&headers)?;
    form(&headers, &body)?;
    Ok(idempotent(&book, &headers, |book| {
        let Some(intent) = book.intents.get_mut(&id) else { return no_such(&id) };
        if !["requires_capture", "requires_action", "requires_payment_method"].contains(&intent["status"].as_str().unwrap()) {
            return unexpected_state(intent);
        }
        intent["status"] = json!("canceled");
        (StatusCode::OK, intent.clone())
    }))
}

async fn refund(State(book): State<Shared>, headers: HeaderMap, body: Bytes) -> Result<Response, Response> {
    authorised(&headers)?;
    let form = form(&headers, &body)?;
    Ok(idempotent(&book, &headers, |book| {
        let id = &form["payment_intent"];
        let Some(intent) = book.intents.get_mut(id) else { return no_such(id) };
        let amount: i64 = form["amount"].parse().unwrap();
        let refunded = intent["refunded"].as_i64().unwrap();
        if refunded + amount > intent["amount_received"].as_i64().unwrap() {
            let message = "Refund amount is greater than unrefunded amount on charge.";
            return (StatusCode::BAD_REQUEST, error("invalid_request_error", "amount_too_large", message));
        }
        intent["refunded"] = json!(refunded + amount);
        book.refunds += 1;
        let refund = format!("re_{}", book.refunds);
        (StatusCode::OK, json!({ "id": refund, "object": "refund", "amount": amount, "payment_intent": id, "status": "succeeded" }))
    }))
}

// ---- the gateway ----

fn charge(payment_id: &'static str, token: &'static str, capture: bool) -> Charge<'static> {
    Charge { payment_id, order_id: "ord_1", order_number: 42, amount: 2500, currency: "EUR", token, capture, return_url: RETURN_URL }
}

#[tokio::test]
async fn a_good_card_is_charged_and_captured_at_once() {
    let fake = Fake::start().await;
    let stripe = fake.gateway();
    assert_eq!(stripe.name(), "stripe");
    let outcome = stripe.authorise(&charge("pay_1", "tok_visa", true)).await.unwrap();
    assert_eq!(outcome, Outcome::Authorised { reference: "pi_1".into(), captured: true });
    assert_eq!(stripe.status("pi_1").await.unwrap(), outcome);

    let form = fake.book.lock().unwrap().forms[0].clone();
    let expected = [
        ("amount", "2500"),
        ("currency", "eur"),
        ("payment_method_data[type]", "card"),
        ("payment_method_data[card][token]", "tok_visa"),
        ("confirm", "true"),
        ("capture_method", "automatic"),
        ("return_url", RETURN_URL),
        ("metadata[order_id]", "ord_1"),
        ("metadata[order_number]", "42"),
        ("metadata[payment_id]", "pay_1"),
    ];
    assert_eq!(form, expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>());
}

#[tokio::test]
async fn a_held_amount_is_captured_later_and_only_once() {
    let fake = Fake::start().await;
    let stripe = fake.gateway();
    let outcome = stripe.authorise(&charge("pay_1", "tok_visa", false)).await.unwrap();
    assert_eq!(outcome, Outcome::Authorised { reference: "pi_1".into(), captured: false });
    assert_eq!(fake.book.lock().unwrap().forms[0]["capture_method"], "manual");

    stripe.capture("pi_1", 2000, "cap_1").await.unwrap();
    assert_eq!(stripe.status("pi_1").await.unwrap(), Outcome::Authorised { reference: "pi_1".into(), captured: true });
    // A retry of the same capture is replayed; a new one is refused.
    stripe.capture("pi_1", 2000, "cap_1").await.unwrap();
    let again = stripe.capture("pi_1", 2000, "cap_2").await.unwrap_err();
    assert!(matches!(again, GatewayError::Refused { ref code, .. } if code == "payment_intent_unexpected_state"), "{again:?}");
}

#[tokio::test]
async fn a_retried_charge_creates_one_payment_intent() {
    let fake = Fake::start().await;
    let stripe = fake.gateway();
    let first = stripe.authorise(&charge("pay_1", "tok_visa", true)).await.unwrap();
    let second = stripe.authorise(&charge("pay_1", "tok_visa", true)).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(fake.created(), 1);
    stripe.authorise(&charge("pay_2", "tok_visa", true)).await.unwrap();
    assert_eq!(fake.created(), 2);
}

#[tokio::test]
async fn each_decline_keeps_the_issuers_reason() {
    let fake = Fake::start().await;
    let stripe = fake.gateway();
    let cases = [
        ("pay_1", "tok_chargeDeclined", "card_declined", "Your card was declined."),
        ("pay_2", "tok_insufficientFunds", "insufficient_funds", "Your card has insufficient funds."),
        ("pay_3", "tok_expiredCard", "expired_card", "Your card has expired."),
    ];
    for (payment_id, token, code, message) in cases {
        let outcome = stripe.authorise(&charge(payment_id, token, true)).await.unwrap();
        let Outcome::Declined { reference: Some(reference), code: got, message: said } = outcome.clone() else {
            panic!("{token}: {outcome:?}");
        };
        assert_eq!((got.as_str(), said.as_str()), (code, message), "{token}");
        // Asked again later, the intent tells the same story.
        assert_eq!(stripe.status(&reference).await.unwrap(), outcome, "{token}");
    }
}

#[tokio::test]
async fn a_card_that_needs_confirming_gives_the_redirect() {
    let fake = Fake::start().await;
    let stripe = fake.gateway();
    let outcome = stripe.authorise(&charge("pay_1", "tok_requires_action", true)).await.unwrap();
    let expected = Outcome::RequiresAction { reference: "pi_1".into(), url: "https://hooks.stripe.test/3ds/pi_1".into() };
    assert_eq!(outcome, expected);
    assert_eq!(stripe.status("pi_1").await.unwrap(), expected);
}

#[tokio::test]
async fn a_held_amount_can_be_voided() {
    let fake = Fake::start().await;
    let stripe = fake.gateway();
    stripe.authorise(&charge("pay_1", "tok_visa", false)).await.unwrap();
    stripe.void("pi_1", "void_1").await.unwrap();
    assert!(matches!(stripe.status("pi_1").await.unwrap(), Outcome::Declined { .. }));
    stripe.void("pi_1", "void_1").await.unwrap();
    assert!(matches!(stripe.capture("pi_1", 2500, "cap_1").await, Err(GatewayError::Refused { .. })));
}

#[tokio::test]
async fn refunds_add_up_to_no_more_than_was_captured() {
    let fake = Fake::start().await;
    let stripe = fake.gateway();
    stripe.authorise(&charge("pay_1", "tok_visa", true)).await.unwrap();
    assert_eq!(stripe.refund("pi_1", 1000, "ref_1").await.unwrap(), "re_1");
    assert_eq!(stripe.refund("pi_1", 1000, "ref_1").await.unwrap(), "re_1");
    let over = stripe.refund("pi_1", 1600, "ref_2").await.unwrap_err();
    assert!(matches!(over, GatewayError::Refused { ref code, .. } if code == "amount_too_large"), "{over:?}");
    assert_eq!(stripe.refund("pi_1", 1500, "ref_3").await.unwrap(), "re_2");
}

#[tokio::test]
async fn a_wrong_key_is_refused_without_repeating_it() {
    let fake = Fake::start().await;
    let stripe = StripeGateway::new("sk_test_wrong", None, &fake.base).unwrap();
    let refused = stripe.authorise(&charge("pay_1", "tok_visa", true)).await.unwrap_err();
    let GatewayError::Refused { code, message } = &refused else { panic!("{refused:?}") };
    assert_eq!(code, "authentication_error");
    assert!(!message.contains("sk_test_wrong") && !refused.to_string().contains("sk_test_wrong"), "{message}");
    assert_eq!(fake.created(), 0);
}

#[tokio::test]
async fn stripe_out_of_reach_or_failing_is_worth_a_retry() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let stripe = StripeGateway::new(KEY, None, base).unwrap();
    let down = stripe.authorise(&charge("pay_1", "tok_visa", true)).await.unwrap_err();
    assert!(matches!(down, GatewayError::Unavailable(_)), "{down:?}");
    assert!(matches!(stripe.status("pi_1").await, Err(GatewayError::Unavailable(_))));

    let fake = Fake::start().await;
    let failing = fake.gateway().authorise(&charge("pay_1", "tok_stripeDown", true)).await.unwrap_err();
    assert!(matches!(failing, GatewayError::Unavailable(_)), "{failing:?}");
}

#[tokio::test]
async fn a_reference_that_is_not_a_stripe_id_never_reaches_a_url() {
    let fake = Fake::start().await;
    let refused = fake.gateway().status("../refunds").await.unwrap_err();
    assert!(matches!(refused, GatewayError::Refused { ref code, .. } if code == "invalid_reference"), "{refused:?}");
}

// ---- webhooks ----

const T: i64 = 1_700_000_000;
const SUCCEEDED: &str =
    r#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","object":"payment_intent","status":"succeeded"}}}"#;
/// hex(HMAC-SHA256(WHSEC, "1700000000." + SUCCEEDED)), from Python's `hmac`.
const SUCCEEDED_SIG: &str = "39eeb3219a9fa8c6f5d0e1bfc60581cf82369414a714663df2c2b59b9b4e0886";

fn sign(t: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, WHSEC.as_bytes());
    hex::encode(hmac::sign(&key, format!("{t}.{body}").as_bytes()))
}

fn signed_now(body: &str) -> HeaderMap {
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("stripe-signature", format!("t={now},v1={}", sign(now, body)).parse().unwrap());
    headers
}

fn refused_webhook(result: Result<impl std::fmt::Debug, GatewayError>) -> bool {
    matches!(result, Err(GatewayError::BadWebhook(_)))
}

#[test]
fn a_signature_made_by_stripes_scheme_is_accepted() {
    assert_eq!(sign(T, SUCCEEDED), SUCCEEDED_SIG, "the test's own signer agrees with Python");
    let header = format!("t={T},v1={SUCCEEDED_SIG}");
    verify_signature(&header, SUCCEEDED.as_bytes(), WHSEC, T + 10, 300).unwrap();
    verify_signature(&header, SUCCEEDED.as_bytes(), WHSEC, T + 300, 300).unwrap();
}

#[test]
fn a_tampered_body_or_another_secret_is_refused() {
    let header = format!("t={T},v1={SUCCEEDED_SIG}");
    let tampered = SUCCEEDED.replace("pi_1", "pi_2");
    assert!(refused_webhook(verify_signature(&header, tampered.as_bytes(), WHSEC, T, 300)));
    assert!(refused_webhook(verify_signature(&header, SUCCEEDED.as_bytes(), "whsec_other", T, 300)));
    // The timestamp is signed too: moving it breaks the signature.
    let moved = format!("t={},v1={SUCCEEDED_SIG}", T + 1);
    assert!(refused_webhook(verify_signature(&moved, SUCCEEDED.as_bytes(), WHSEC, T, 300)));
}

#[test]
fn a_signature_outside_the_tolerance_is_refused() {
    let header = format!("t={T},v1={SUCCEEDED_SIG}");
    assert!(refused_webhook(verify_signature(&header, SUCCEEDED.as_bytes(), WHSEC, T + 301, 300)));
    assert!(refused_webhook(verify_signature(&header, SUCCEEDED.as_bytes(), WHSEC, T - 301, 300)));
}

#[test]
fn any_v1_entry_may_match() {
    let wrong = "0".repeat(64);
    let header = format!("t={T},v1={wrong},v1={SUCCEEDED_SIG},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39");
    verify_signature(&header, SUCCEEDED.as_bytes(), WHSEC, T, 300).unwrap();
    let only_wrong = format!("t={T},v1={wrong},v0={SUCCEEDED_SIG}");
    assert!(refused_webhook(verify_signature(&only_wrong, SUCCEEDED.as_bytes(), WHSEC, T, 300)));
}

#[test]
fn a_malformed_header_is_refused() {
    let headers =
        [String::new(), format!("v1={SUCCEEDED_SIG}"), format!("t={T}"), format!("t=soon,v1={SUCCEEDED_SIG}"), format!("t={T},v1=zz")];
    for header in &headers {
        assert!(refused_webhook(verify_signature(header, SUCCEEDED.as_bytes(), WHSEC, T, 300)), "{header:?}");
    }
}

#[tokio::test]
async fn signed_events_are_read() {
    let stripe = StripeGateway::new(KEY, Some(WHSEC.into()), "http://127.0.0.1:9").unwrap();
    let failed = r#"{"type":"payment_intent.payment_failed","data":{"object":{"id":"pi_3","last_payment_error":
        {"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds."}}}}"#;
    let cases = [
        (SUCCEEDED, WebhookEvent::Succeeded { reference: "pi_1".into(), captured: true }),
        (
            r#"{"type":"payment_intent.amount_capturable_updated","data":{"object":{"id":"pi_2"}}}"#,
            WebhookEvent::Succeeded { reference: "pi_2".into(), captured: false },
        ),
        (
            failed,
            WebhookEvent::Failed {
                reference: "pi_3".into(),
                code: "insufficient_funds".into(),
                message: "Your card has insufficient funds.".into(),
            },
        ),
        (
            r#"{"type":"charge.refunded","data":{"object":{"id":"ch_1","payment_intent":"pi_4","amount_refunded":700}}}"#,
            WebhookEvent::Refunded { reference: "pi_4".into(), amount_refunded: 700 },
        ),
        (r#"{"type":"customer.created","data":{"object":{"id":"cus_1"}}}"#, WebhookEvent::Ignored("customer.created".into())),
    ];
    for (body, expected) in cases {
        assert_eq!(stripe.parse_webhook(&signed_now(body), body.as_bytes()).unwrap(), expected);
    }
}

#[tokio::test]
async fn unsigned_or_unreadable_events_are_refused() {
    let stripe = StripeGateway::new(KEY, Some(WHSEC.into()), "http://127.0.0.1:9").unwrap();
    assert!(refused_webhook(stripe.parse_webhook(&HeaderMap::new(), SUCCEEDED.as_bytes())));
    let tampered = SUCCEEDED.replace("pi_1", "pi_2");
    assert!(refused_webhook(stripe.parse_webhook(&signed_now(SUCCEEDED), tampered.as_bytes())));
    let stale = {
        let mut headers = HeaderMap::new();
        headers.insert("stripe-signature", format!("t={T},v1={SUCCEEDED_SIG}").parse().unwrap());
        headers
    };
    assert!(refused_webhook(stripe.parse_webhook(&stale, SUCCEEDED.as_bytes())));
    assert!(refused_webhook(stripe.parse_webhook(&signed_now("{not json"), b"{not json")));

    let no_secret = StripeGateway::new(KEY, None, "http://127.0.0.1:9").unwrap();
    assert!(refused_webhook(no_secret.parse_webhook(&signed_now(SUCCEEDED), SUCCEEDED.as_bytes())));
}
