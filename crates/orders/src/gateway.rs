//! Payment gateways behind one trait: authorise, capture, void, refund, and
//! read the provider's webhooks. No card number ever reaches us: the
//! storefront turns a card into a token with the provider, and we charge the
//! token. This file also holds the built-in `test` gateway, modelled on
//! Stripe's test cards, which keeps its own book of charges in the orders
//! database so that a repeated request is recognised as it would be by a
//! real provider.

use async_trait::async_trait;
use axum::http::HeaderMap;
use platform::db::{Db, DbError, now_ms};
use platform::{on_db, on_write};

/// One request to take money.
#[derive(Debug, Clone)]
pub struct Charge<'a> {
    /// Ours (`pay_…`); also the idempotency key the provider sees, so a
    /// retry of the same attempt can never charge twice.
    pub payment_id: &'a str,
    pub order_id: &'a str,
    pub order_number: i64,
    pub amount: i64,
    pub currency: &'a str,
    pub token: &'a str,
    /// Capture now, or only hold the amount (captured at fulfilment).
    pub capture: bool,
    /// Where a shopper lands after a 3-D Secure style confirmation.
    pub return_url: &'a str,
}

/// What the provider said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Authorised { reference: String, captured: bool },
    /// The shopper must confirm (3-D Secure) at `url` first.
    RequiresAction { reference: String, url: String },
    Declined { reference: Option<String>, code: String, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Worth retrying: the network, a timeout, the provider's own trouble.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request itself (not the card): a bad token,
    /// an amount it will not take, a capture of more than was held.
    #[error("the payment provider refused the request ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("webhook refused: {0}")]
    BadWebhook(String),
    #[error(transparent)]
    Store(#[from] DbError),
}

impl From<sqlx::Error> for GatewayError {
    fn from(e: sqlx::Error) -> Self {
        GatewayError::Store(e.into())
    }
}

/// What a provider's webhook told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    Succeeded { reference: String, captured: bool },
    Failed { reference: String, code: String, message: String },
    Refunded { reference: String, amount_refunded: i64 },
    /// A type we do not act on.
    Ignored(String),
}

#[async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    /// `test` or `stripe`: what clients put in `payment.provider`.
    fn name(&self) -> &'static str;
    async fn authorise(&self, charge: &Charge<'_>) -> Result<Outcome, GatewayError>;
    /// Where a payment stands now (after a confirmation, or after a crash).
    async fn status(&self, reference: &str) -> Result<Outcome, GatewayError>;
    async fn capture(&self, reference: &str, amount: i64, idempotency_key: &str) -> Result<(), GatewayError>;
    async fn void(&self, reference: &str, idempotency_key: &str) -> Result<(), GatewayError>;
    /// Returns the provider's refund reference.
    async fn refund(&self, reference: &str, amount: i64, idempotency_key: &str) -> Result<String, GatewayError>;
    fn parse_webhook(&self, headers: &HeaderMap, body: &[u8]) -> Result<WebhookEvent, GatewayError>;
}

/// The built-in gateway: no network, deterministic by token.
#[derive(Clone)]
pub struct TestGateway {
    db: Db,
    public_url: String,
    /// Signs the confirmation page's CSRF tokens; made at start, so a page
    /// shown before a restart is shown again.
    confirm_key: ring::hmac::Key,
}

/// How a test token behaves.
enum Card {
    Succeeds,
    Declines(&'static str, &'static str),
    /// Fails once per payment with a transient error, then succeeds.
    ProcessingError,
    RequiresAction,
}

/// The tokens the test gateway knows, for the storefront's "test cards".
pub const TEST_TOKENS: [(&str, &str); 7] = [
    ("tok_visa", "Visa: succeeds"),
    ("tok_mastercard", "Mastercard: succeeds"),
    ("tok_chargeDeclined", "Declined"),
    ("tok_insufficientFunds", "Declined: insufficient funds"),
    ("tok_expiredCard", "Declined: expired card"),
    ("tok_processingError", "A processing error, then success on retry"),
    ("tok_requires_action", "Needs 3-D Secure confirmation"),
];

/// How a payment was made, in the words a receipt uses: the test cards
/// stand for Stripe's test cards of the same name ("Visa ending 4242"); a
/// Stripe payment is a card the shop never saw.
pub fn payment_method_label(provider: &str, token: Option<&str>) -> String {
    match (provider, token.unwrap_or_default()) {
        ("test", "tok_visa") => "Visa ending 4242".into(),
        ("test", "tok_mastercard") => "Mastercard ending 4444".into(),
        ("test", "tok_amex") => "American Express ending 0005".into(),
        ("test", other) => match TEST_TOKENS.iter().find(|(t, _)| *t == other) {
            Some((_, label)) => format!("Test card ({label})"),
            None => "Test card".into(),
        },
        ("stripe", _) => "Card, paid through Stripe".into(),
        (other, _) => format!("Paid through {other}"),
    }
}

fn card(token: &str) -> Option<Card> {
    Some(match token {
        "tok_visa" | "tok_mastercard" | "tok_amex" => Card::Succeeds,
        "tok_chargeDeclined" => Card::Declines("card_declined", "Your card was declined."),
        "tok_insufficientFunds" => Card::Declines("insufficient_funds", "Your card has insufficient funds."),
        "tok_expiredCard" => Card::Declines("expired_card", "Your card has expired."),
        "tok_processingError" => Card::ProcessingError,
        "tok_requires_action" => Card::RequiresAction,
        _ => return None,
    })
}

type ChargeRow = (String, String, String, i64, i64, i64);

impl TestGateway {
    pub fn new(db: Db, public_url: impl Into<String>) -> Result<Self, GatewayError> {
        let confirm_key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| GatewayError::Unavailable("no randomness for the test gateway's key".into()))?;
        Ok(Self { db, public_url: public_url.into(), confirm_key })
    }

    /// The CSRF token of a payment's confirmation form: an HMAC of the
    /// payment, so a token is good for that payment only.
    pub fn confirm_token(&self, reference: &str) -> String {
        hex::encode(ring::hmac::sign(&self.confirm_key, format!("test-gateway-confirm:{reference}").as_bytes()))
    }

    pub fn confirm_token_ok(&self, reference: &str, token: &str) -> bool {
        let message = format!("test-gateway-confirm:{reference}");
        hex::decode(token).is_ok_and(|tag| ring::hmac::verify(&self.confirm_key, message.as_bytes(), &tag).is_ok())
    }

    async fn by_key(&self, key: &str) -> Result<Option<ChargeRow>, DbError> {
        Ok(on_db!(&self.db, pool => sqlx::query_as(
            "SELECT reference, token, status, amount, captured, refunded FROM test_gateway_charges WHERE idempotency_key = $1")
            .bind(key).fetch_optional(pool).await)?)
    }

    async fn by_reference(&self, reference: &str) -> Result<Option<ChargeRow>, DbError> {
        Ok(on_db!(&self.db, pool => sqlx::query_as(
            "SELECT reference, token, status, amount, captured, refunded FROM test_gateway_charges WHERE reference = $1")
            .bind(reference).fetch_optional(pool).await)?)
    }

    async fn set_status(&self, reference: &str, from: &str, to: &str) -> Result<bool, DbError> {
        let n = on_write!(&self.db, pool => sqlx::query(
            "UPDATE test_gateway_charges SET status = $1 WHERE reference = $2 AND status = $3")
            .bind(to).bind(reference).bind(from).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// The shopper confirmed (or refused) on the test confirmation page.
    pub async fn confirm(&self, reference: &str, approve: bool) -> Result<Outcome, GatewayError> {
        let row = self.by_reference(reference).await?.ok_or_else(|| refused("no_such_payment", "no such payment"))?;
        if row.2 == "requires_action" {
            // Whether it is captured at once was fixed when it was created.
            let to = match (approve, row.4 > 0) {
                (false, _) => "failed_authentication",
                (true, true) => "succeeded",
                (true, false) => "requires_capture",
            };
            self.set_status(reference, "requires_action", to).await?;
        }
        self.status(reference).await
    }

    /// How many charges this gateway holds for an order's payment ids, for
    /// the "never charged twice" promise (tests and the admin console).
    pub async fn charges_for(&self, payment_ids: &[String]) -> Result<Vec<(String, String, i64)>, DbError> {
        let mut out = Vec::new();
        for key in payment_ids {
            if let Some(row) = self.by_key(key).await? {
                out.push((row.0, row.2, row.4));
            }
        }
        Ok(out)
    }
}

fn refused(code: &str, message: &str) -> GatewayError {
    GatewayError::Refused { code: code.into(), message: message.into() }
}

fn outcome_of(reference: String, status: &str, token: &str, confirm_url: String) -> Outcome {
    match status {
        "succeeded" => Outcome::Authorised { reference, captured: true },
        "requires_capture" => Outcome::Authorised { reference, captured: false },
        "requires_action" => Outcome::RequiresAction { reference, url: confirm_url },
        "failed_authentication" => Outcome::Declined {
            reference: Some(reference),
            code: "authentication_failed".into(),
            message: "The card's confirmation failed.".into(),
        },
        _ => {
            let (code, message) = match card(token) {
                Some(Card::Declines(code, message)) => (code, message),
                _ => ("card_declined", "Your card was declined."),
            };
            Outcome::Declined { reference: Some(reference), code: code.into(), message: message.into() }
        }
    }
}

#[async_trait]
impl PaymentGateway for TestGateway {
    fn name(&self) -> &'static str {
        "test"
    }

    async fn authorise(&self, c: &Charge<'_>) -> Result<Outcome, GatewayError> {
        let Some(kind) = card(c.token) else {
            return Err(refused("invalid_token", "unknown test token; use one of the test cards"));
        };
        if c.amount <= 0 {
            return Err(refused("invalid_amount", "the amount must be positive"));
        }
        // A repeat of the same payment gets the first answer (what Stripe's
        // idempotency keys promise).
        if let Some((reference, token, status, ..)) = self.by_key(c.payment_id).await? {
            if status == "processing_error" {
                self.set_status(&reference, "processing_error", if c.capture { "succeeded" } else { "requires_capture" }).await?;
                return self.status(&reference).await;
            }
            let url = self.confirm_url(&reference);
            return Ok(outcome_of(reference, &status, &token, url));
        }
        let reference = format!("tch_{}", kernel::id::Uuid::now_v7().simple());
        let status = match kind {
            Card::Succeeds if c.capture => "succeeded",
            Card::Succeeds => "requires_capture",
            Card::Declines(..) => "declined",
            Card::ProcessingError => "processing_error",
            Card::RequiresAction => "requires_action",
        };
        let captured = if matches!(kind, Card::Succeeds | Card::ProcessingError | Card::RequiresAction) && c.capture { c.amount } else { 0 };
        let inserted = on_write!(&self.db, pool => sqlx::query(
            "INSERT INTO test_gateway_charges (reference, idempotency_key, token, amount, currency, status, captured, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (idempotency_key) DO NOTHING")
            .bind(&reference).bind(c.payment_id).bind(c.token).bind(c.amount).bind(c.currency)
            .bind(status).bind(captured).bind(now_ms())
            .execute(pool).await.map(|r| r.rows_affected()))?;
        if inserted == 0 {
            // A concurrent repeat won the insert: answer as it did.
            let (reference, token, status, ..) =
                self.by_key(c.payment_id).await?.ok_or_else(|| refused("no_such_payment", "no such payment"))?;
            let url = self.confirm_url(&reference);
            return Ok(outcome_of(reference, &status, &token, url));
        }
        if status == "processing_error" {
            return Err(GatewayError::Unavailable("processing_error: the card network did not answer".into()));
        }
        let url = self.confirm_url(&reference);
        Ok(outcome_of(reference, status, c.token, url))
    }

    async fn status(&self, reference: &str) -> Result<Outcome, GatewayError> {
        let (reference, token, status, ..) =
            self.by_reference(reference).await?.ok_or_else(|| refused("no_such_payment", "no such payment"))?;
        if status == "processing_error" {
            return Err(GatewayError::Unavailable("processing_error: the card network did not answer".into()));
        }
        let url = self.confirm_url(&reference);
        Ok(outcome_of(reference, &status, &token, url))
    }

    async fn capture(&self, reference: &str, amount: i64, _key: &str) -> Result<(), GatewayError> {
        let (_, _, status, held, captured, _) =
            self.by_reference(reference).await?.ok_or_else(|| refused("no_such_payment", "no such payment"))?;
        match status.as_str() {
            "succeeded" if captured == amount => Ok(()),
            "requires_capture" if amount <= held => {
                on_write!(&self.db, pool => sqlx::query(
                    "UPDATE test_gateway_charges SET status = 'succeeded', captured = $1 WHERE reference = $2 AND status = 'requires_capture'")
                    .bind(amount).bind(reference).execute(pool).await.map(|_| ()))?;
                Ok(())
            }
            _ => Err(refused("capture_refused", &format!("a payment that is {status} cannot capture {amount}"))),
        }
    }

    async fn void(&self, reference: &str, _key: &str) -> Result<(), GatewayError> {
        let (_, _, status, ..) =
            self.by_reference(reference).await?.ok_or_else(|| refused("no_such_payment", "no such payment"))?;
        match status.as_str() {
            "canceled" => Ok(()),
            "requires_capture" | "requires_action" => {
                self.set_status(reference, &status, "canceled").await?;
                Ok(())
            }
            _ => Err(refused("void_refused", &format!("a payment that is {status} cannot be voided"))),
        }
    }

    async fn refund(&self, reference: &str, amount: i64, key: &str) -> Result<String, GatewayError> {
        let refund_ref = format!("tre_{}", &key.chars().filter(char::is_ascii_alphanumeric).collect::<String>());
        // Idempotent on the key: the refund row is the key's record.
        let seen = on_db!(&self.db, pool => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM test_gateway_charges WHERE idempotency_key = $1")
            .bind(key).fetch_one(pool).await)?;
        if seen > 0 {
            return Ok(refund_ref);
        }
        let mut tx = self.db.begin().await?;
        let n = platform::on_tx!(&mut tx, c => sqlx::query(
            "UPDATE test_gateway_charges SET refunded = refunded + $1 \
             WHERE reference = $2 AND status = 'succeeded' AND refunded + $1 <= captured")
            .bind(amount).bind(reference).execute(c).await.map(|r| r.rows_affected()))?;
        if n != 1 {
            tx.rollback().await?;
            return Err(refused("refund_refused", "more than was captured, or nothing was captured"));
        }
        platform::on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO test_gateway_charges (reference, idempotency_key, token, amount, currency, status, created_ms) \
             VALUES ($1, $2, 'refund', $3, '', 'refund', $4)")
            .bind(&refund_ref).bind(key).bind(amount).bind(now_ms()).execute(c).await.map(|_| ()))?;
        tx.commit().await?;
        Ok(refund_ref)
    }

    fn parse_webhook(&self, _headers: &HeaderMap, _body: &[u8]) -> Result<WebhookEvent, GatewayError> {
        // Confirmations arrive through the confirmation page, in process.
        Err(GatewayError::BadWebhook("the test gateway sends no webhooks".into()))
    }
}

impl TestGateway {
    fn confirm_url(&self, reference: &str) -> String {
        format!("{}/test-gateway/confirm?payment={reference}", self.public_url)
    }
}
