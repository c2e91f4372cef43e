//! The Stripe gateway: charges, captures, voids and refunds over the PaymentIntents API,
//! and the signed webhooks Stripe sends about them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::http::HeaderMap;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, RequestBuilder, StatusCode};
use ring::hmac;
use serde_json::Value;

use crate::gateway::{Charge, GatewayError, Outcome, PaymentGateway, WebhookEvent};

/// Stripe's own default: an older signature is treated as a replay.
const TOLERANCE_SECS: i64 = 300;

/// Deliberately not `Debug`: it holds the secret key.
pub struct StripeGateway {
    client: Client,
    secret_key: String,
    webhook_secret: Option<String>,
    api_base: String,
}

/// A successful answer, or a card's refusal: Stripe sends the latter as a
/// 402, but for a charge it is an answer, not a failure.
enum Reply {
    Object(Value),
    Declined { reference: Option<String>, code: String, message: String },
}

impl StripeGateway {
    pub fn new(
        secret_key: impl Into<String>,
        webhook_secret: Option<String>,
        api_base: impl Into<String>,
    ) -> Result<Self, GatewayError> {
        let client = Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| GatewayError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        let api_base: String = api_base.into();
        let api_base = api_base.trim_end_matches('/').to_owned();
        Ok(Self { client, secret_key: secret_key.into(), webhook_secret, api_base })
    }

    fn post(&self, path: &str, idempotency_key: &str, form: &[(&str, &str)]) -> RequestBuilder {
        self.client
            .post(format!("{}{path}", self.api_base))
            .header("Idempotency-Key", idempotency_key)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(encode_form(form))
    }

    async fn send(&self, request: RequestBuilder) -> Result<Reply, GatewayError> {
        let response = request.bearer_auth(&self.secret_key).send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&body).map(Reply::Object).map_err(|e| unreadable(&e));
        }
        // 409 is a concurrent request with the same idempotency key still in
        // flight: its answer will be there to replay shortly.
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::CONFLICT {
            return Err(GatewayError::Unavailable(format!("stripe answered {status}")));
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let error = body.get("error");
        if status == StatusCode::PAYMENT_REQUIRED && str_of(error, "type") == Some("card_error") {
            let (code, message) = decline(error);
            let reference = error.and_then(|e| e.pointer("/payment_intent/id")).and_then(Value::as_str);
            return Ok(Reply::Declined { reference: reference.map(str::to_owned), code, message });
        }
        // A bad key comes back with no code, only the generic request type.
        let code = match str_of(error, "code") {
            Some(code) => code,
            None if status == StatusCode::UNAUTHORIZED => "authentication_error",
            None => str_of(error, "type").unwrap_or("invalid_request_error"),
        };
        let message = str_of(error, "message").map_or_else(|| format!("stripe answered {status}"), str::to_owned);
        // Stripe masks keys in its messages; this makes sure of it.
        let message = match self.secret_key.as_str() {
            "" => message,
            key => message.replace(key, "[secret key]"),
        };
        Err(GatewayError::Refused { code: code.to_owned(), message })
    }

    /// For calls where a card's refusal cannot be the answer.
    async fn object(&self, request: RequestBuilder) -> Result<Value, GatewayError> {
        match self.send(request).await? {
            Reply::Object(object) => Ok(object),
            Reply::Declined { code, message, .. } => Err(GatewayError::Refused { code, message }),
        }
    }
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn authorise(&self, c: &Charge<'_>) -> Result<Outcome, GatewayError> {
        let (amount, order_number) = (c.amount.to_string(), c.order_number.to_string());
        let currency = c.currency.to_ascii_lowercase();
        let form = [
            ("amount", amount.as_str()),
            ("currency", currency.as_str()),
            ("payment_method_data[type]", "card"),
            ("payment_method_data[card][token]", c.token),
            ("confirm", "true"),
            ("capture_method", if c.capture { "automatic" } else { "manual" }),
            ("return_url", c.return_url),
            ("metadata[order_id]", c.order_id),
            ("metadata[order_number]", order_number.as_str()),
            ("metadata[payment_id]", c.payment_id),
        ];
        // Our payment id as Stripe's idempotency key: a retry after a lost
        // answer gets the first answer back instead of a second charge.
        match self.send(self.post("/v1/payment_intents", c.payment_id, &form)).await? {
            Reply::Object(intent) => outcome_of(&intent),
            Reply::Declined { reference, code, message } => Ok(Outcome::Declined { reference, code, message }),
        }
    }

    async fn status(&self, reference: &str) -> Result<Outcome, GatewayError> {
        let url = format!("{}/v1/payment_intents/{}", self.api_base, stripe_id(reference)?);
        match self.send(self.client.get(url)).await? {
            Reply::Object(intent) => outcome_of(&intent),
            Reply::Declined { reference, code, message } => Ok(Outcome::Declined { reference, code, message }),
        }
    }

    async fn capture(&self, reference: &str, amount: i64, idempotency_key: &str) -> Result<(), GatewayError> {
        let path = format!("/v1/payment_intents/{}/capture", stripe_id(reference)?);
        let amount = amount.to_string();
        self.object(self.post(&path, idempotency_key, &[("amount_to_capture", amount.as_str())])).await?;
        Ok(())
    }

    async fn void(&self, reference: &str, idempotency_key: &str) -> Result<(), GatewayError> {
        let path = format!("/v1/payment_intents/{}/cancel", stripe_id(reference)?);
        self.object(self.post(&path, idempotency_key, &[])).await?;
        Ok(())
    }

    async fn refund(&self, reference: &str, amount: i64, idempotency_key: &str) -> Result<String, GatewayError> {
        let amount = amount.to_string();
        let form = [("payment_intent", stripe_id(reference)?), ("amount", amount.as_str())];
        let refund = self.object(self.post("/v1/refunds", idempotency_key, &form)).await?;
        str_of(Some(&refund), "id").map(str::to_owned).ok_or_else(|| malformed("a refund without an id"))
    }

    fn parse_webhook(&self, headers: &HeaderMap, body: &[u8]) -> Result<WebhookEvent, GatewayError> {
        let secret = self.webhook_secret.as_deref().ok_or_else(|| bad("no Stripe webhook secret is configured"))?;
        let header = headers
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| bad("no Stripe-Signature header"))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        verify_signature(header, body, secret, now, TOLERANCE_SECS)?;

        let event: Value = serde_json::from_slice(body).map_err(|e| bad(&format!("unreadable event: {e}")))?;
        let kind = str_of(Some(&event), "type").ok_or_else(|| bad("an event without a type"))?;
        let object = event.pointer("/data/object");
        let field = |key: &str| str_of(object, key).map(str::to_owned).ok_or_else(|| bad(&format!("{kind} without {key}")));
        Ok(match kind {
            "payment_intent.succeeded" => WebhookEvent::Succeeded { reference: field("id")?, captured: true },
            "payment_intent.amount_capturable_updated" => WebhookEvent::Succeeded { reference: field("id")?, captured: false },
            "payment_intent.payment_failed" => {
                let (code, message) = decline(object.and_then(|o| o.get("last_payment_error")));
                WebhookEvent::Failed { reference: field("id")?, code, message }
            }
            "charge.refunded" => WebhookEvent::Refunded {
                reference: field("payment_intent")?,
                amount_refunded: object
                    .and_then(|o| o.get("amount_refunded"))
                    .and_then(Value::as_i64)
                    .ok_or_else(|| bad("charge.refunded without amount_refunded"))?,
            },
            other => WebhookEvent::Ignored(other.to_owned()),
        })
    }
}

/// Checks a `Stripe-Signature` header (`t=…,v1=…[,v1=…]`) as Stripe
/// documents it. Several `v1` entries appear while a secret is being rolled,
/// so any one of them may be the match.
pub fn verify_signature(
    header: &str,
    body: &[u8],
    secret: &str,
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), GatewayError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", sig)) => signatures.extend(hex::decode(sig).ok()),
            _ => {}
        }
    }
    let t = timestamp.ok_or_else(|| bad("no timestamp in Stripe-Signature"))?;
    let t_unix: i64 = t.parse().map_err(|_| bad("a malformed timestamp in Stripe-Signature"))?;
    if signatures.is_empty() {
        return Err(bad("no v1 signature in Stripe-Signature"));
    }
    // Signed over the timestamp exactly as sent, so it cannot be swapped.
    let signed = [t.as_bytes(), b".".as_slice(), body].concat();
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    // `hmac::verify` compares in constant time.
    if !signatures.iter().any(|sig| hmac::verify(&key, &signed, sig).is_ok()) {
        return Err(bad("no signature matches"));
    }
    if now_unix.abs_diff(t_unix) > u64::try_from(tolerance_secs).unwrap_or(0) {
        return Err(bad("the signature's timestamp is outside the tolerance"));
    }
    Ok(())
}

fn outcome_of(intent: &Value) -> Result<Outcome, GatewayError> {
    let reference = str_of(Some(intent), "id").ok_or_else(|| malformed("a payment intent without an id"))?.to_owned();
    Ok(match str_of(Some(intent), "status").unwrap_or_default() {
        "succeeded" => Outcome::Authorised { reference, captured: true },
        "requires_capture" => Outcome::Authorised { reference, captured: false },
        "requires_action" => match intent.pointer("/next_action/redirect_to_url/url").and_then(Value::as_str) {
            Some(url) => Outcome::RequiresAction { reference, url: url.to_owned() },
            // We always send a return_url, so Stripe should always redirect.
            None => return Err(refused("unsupported_next_action", &format!("payment {reference} needs an action without a redirect"))),
        },
        "requires_payment_method" | "canceled" => {
            let (code, message) = decline(intent.get("last_payment_error"));
            Outcome::Declined { reference: Some(reference), code, message }
        }
        // The card network has not answered yet; `status` will tell later.
        "processing" => return Err(GatewayError::Unavailable(format!("payment {reference} is still processing"))),
        other => return Err(refused("unexpected_status", &format!("payment {reference} is {other}"))),
    })
}

/// The code and message of a card's refusal; `decline_code` is the issuer's
/// precise reason where `code` is often only the generic `card_declined`.
fn decline(error: Option<&Value>) -> (String, String) {
    let code = str_of(error, "decline_code").or_else(|| str_of(error, "code")).unwrap_or("card_declined");
    let message = str_of(error, "message").unwrap_or("Your card was declined.");
    (code.to_owned(), message.to_owned())
}

fn str_of<'a>(value: Option<&'a Value>, key: &str) -> Option<&'a str> {
    value.and_then(|v| v.get(key)).and_then(Value::as_str)
}

/// References go into URL paths: anything but a Stripe-shaped id is refused
/// rather than escaped, so no reference can reach another endpoint.
fn stripe_id(reference: &str) -> Result<&str, GatewayError> {
    if !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(reference)
    } else {
        Err(refused("invalid_reference", "not a Stripe id"))
    }
}

/// `application/x-www-form-urlencoded`, as browsers write it: Stripe reads
/// `metadata[order_id]` whether or not the brackets are escaped.
fn encode_form(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (key, value) in fields {
        if !out.is_empty() {
            out.push('&');
        }
        push_encoded(&mut out, key);
        out.push('=');
        push_encoded(&mut out, value);
    }
    out
}

fn push_encoded(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xF)]));
            }
        }
    }
}

/// A failure to get an answer is worth a retry: the idempotency key makes the
/// retry safe even if the first request did reach Stripe.
fn transport(e: reqwest::Error) -> GatewayError {
    // Except a request we could not even build (a bad `api_base`): no retry fixes that.
    if e.is_builder() {
        return refused("invalid_request", &e.to_string());
    }
    // reqwest's own message hides the cause (refused, reset, timed out).
    let mut message = format!("stripe: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        message = format!("{message}: {c}");
        cause = std::error::Error::source(c);
    }
    GatewayError::Unavailable(message)
}

fn unreadable(e: &serde_json::Error) -> GatewayError {
    malformed(&format!("unreadable answer: {e}"))
}

fn malformed(what: &str) -> GatewayError {
    GatewayError::Unavailable(format!("stripe sent {what}"))
}

fn refused(code: &str, message: &str) -> GatewayError {
    GatewayError::Refused { code: code.to_owned(), message: message.to_owned() }
}

fn bad(why: &str) -> GatewayError {
    GatewayError::BadWebhook(why.to_owned())
}
