//! The rules of notification, without I/O: who may be written to how,
//! when to try again, how links and webhook deliveries are signed, and
//! what of an event a merchant's system may see.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kernel::Envelope;
use ring::hmac;
use serde_json::Value;

/// `n` random bytes, hex-encoded (secrets, keys).
pub fn random_hex(n: usize) -> Result<String, Refused> {
    let mut bytes = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Refused("the system's random source failed"))?;
    Ok(hex::encode(bytes))
}

/// A number in 0..1 for spreading retries (not a secret).
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 2];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes) {
        Ok(()) => f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    }
}

/// Retries never wait longer than this.
pub const MAX_BACKOFF_MS: i64 = 3_600_000;

/// Channels a message can go by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    Sms,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(text: &str) -> Option<Channel> {
        [Channel::Email, Channel::Sms, Channel::Webhook].into_iter().find(|c| c.as_str() == text)
    }
}

/// A delivery's state: waiting to be (re)tried, delivered, refused for good
/// by the other side, or given up after every retry (the dead letters).
pub const STATUSES: [&str; 4] = ["queued", "sent", "failed", "dead"];

/// How long to wait before attempt `attempt + 1`, after `attempt` failures:
/// `base · 2^(attempt−1)`, at most an hour, spread by ±20 % (`jitter` in 0..1)
/// so that many failures at once do not all come back at once.
pub fn backoff_ms(base_ms: u64, attempt: u32, jitter: f64) -> i64 {
    let exp = attempt.saturating_sub(1).min(30);
    let plain = (base_ms as i64).saturating_mul(1_i64 << exp).min(MAX_BACKOFF_MS);
    let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    ((plain as f64) * spread).round() as i64
}

/// Why a phone number or email address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub &'static str);

/// An E.164 number: `+`, a country code that does not start with 0, and 8–15 digits in all.
pub fn parse_phone(text: &str) -> Result<String, Refused> {
    let compact: String = text.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.')).collect();
    let Some(digits) = compact.strip_prefix('+') else {
        return Err(Refused("a phone number in international form, starting with + and the country code (+14155550100)"));
    };
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return Err(Refused("a phone number in international form: + then 8 to 15 digits (+14155550100)"));
    }
    Ok(compact)
}

/// An email address as mail servers take it: one `@`, a dotted domain, no
/// spaces or angle brackets, at most 254 characters. Lower-cased.
pub fn parse_email(text: &str) -> Result<String, Refused> {
    let email = text.trim().to_lowercase();
    let refused = Refused("an email address, e.g. ada@example.com");
    let (local, domain) = email.split_once('@').ok_or(refused.clone())?;
    let ok = !local.is_empty()
        && local.len() <= 64
        && email.len() <= 254
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && email.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | ',' | ';' | '(' | ')' | '\\'));
    if ok { Ok(email) } else { Err(refused) }
}

/// What an unsubscribe link turns off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Order updates by SMS (a customer's preference).
    OrderSms,
    /// Marketing email (a customer's preference).
    MarketingEmail,
    /// The low-stock digest (a staff member's preference).
    StockDigest,
    /// Every waiting back-in-stock alert of an address.
    StockAlerts,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::OrderSms => "order_sms",
            Topic::MarketingEmail => "marketing_email",
            Topic::StockDigest => "stock_digest",
            Topic::StockAlerts => "stock_alerts",
        }
    }

    fn parse(text: &str) -> Option<Topic> {
        [Topic::OrderSms, Topic::MarketingEmail, Topic::StockDigest, Topic::StockAlerts]
            .into_iter()
            .find(|t| t.as_str() == text)
    }
}

/// Signs "`topic` for `subject`" (a user id, or an address for stock alerts)
/// into a token for a link that works without signing in.
pub fn unsubscribe_token(key: &[u8], topic: Topic, subject: &str) -> String {
    let payload = format!("{}:{subject}", topic.as_str());
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), payload.as_bytes());
    format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// The topic and subject a token names, if we signed it.
pub fn verify_unsubscribe(key: &[u8], token: &str) -> Option<(Topic, String)> {
    let (payload, tag) = token.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), &payload, &tag).ok()?;
    let payload = String::from_utf8(payload).ok()?;
    let (topic, subject) = payload.split_once(':')?;
    Some((Topic::parse(topic)?, subject.to_owned()))
}

/// The `Emporium-Signature` header of a webhook delivery sent at `unix`:
/// `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn webhook_signature(secret: &str, unix: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{unix}.{body}").as_bytes());
    format!("t={unix},v1={}", hex::encode(tag.as_ref()))
}

/// Every event type the shop announces, for webhook filters.
pub const EVENT_TYPES: &[&str] = &[
    "user.registered",
    "user.updated",
    "user.deleted",
    "product.created",
    "product.updated",
    "product.deleted",
    "inventory.changed",
    "inventory.low_stock",
    "inventory.back_in_stock",
    "order.placed",
    "order.paid",
    "order.cancelled",
    "order.fulfilled",
    "order.delivered",
    "order.refunded",
    "return.requested",
    "return.approved",
    "return.received",
];

/// Events that carry secrets (sign-in links) and never leave the shop.
const PRIVATE_EVENTS: &[&str] = &["user.email_verification_requested", "user.password_reset_requested"];

/// Fields that are keys to something (a guest's order, a reservation) and are removed.
const PRIVATE_FIELDS: &[&str] = &["lookup_token", "token", "reservation"];

/// A webhook filter: `*`, `area.*` or one event type.
pub fn valid_event_pattern(pattern: &str) -> bool {
    match pattern.strip_suffix(".*") {
        _ if pattern == "*" => true,
        Some(area) => EVENT_TYPES.iter().any(|t| t.split('.').next() == Some(area)),
        None => EVENT_TYPES.contains(&pattern),
    }
}

/// The event as a merchant's system receives it: without secrets, or `None`
/// when the event is private altogether.
pub fn public_event(event: &Envelope) -> Option<Envelope> {
    if PRIVATE_EVENTS.contains(&event.event_type.as_str()) {
        return None;
    }
    let mut event = event.clone();
    if let Value::Object(map) = &mut event.data {
        for field in PRIVATE_FIELDS {
            map.remove(*field);
        }
    }
    Some(event)
}

/// A webhook endpoint's address: absolute http(s), no credentials in it.
pub fn valid_endpoint_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && !host.contains('@')
        && url.len() <= 2000
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Money in minor units as people read it: `$12.34`-like with the code, `12.34 USD`.
pub fn format_money(amount: i64, currency: &str) -> String {
    match kernel::money::Currency::parse(currency) {
        Ok(c) => c.format_with_code(amount),
        Err(_) => format!("{amount} {currency}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour_within_its_spread() {
        assert_eq!(backoff_ms(1000, 1, 0.5), 1000);
        assert_eq!(backoff_ms(1000, 2, 0.5), 2000);
        assert_eq!(backoff_ms(1000, 4, 0.5), 8000);
        assert_eq!(backoff_ms(1000, 1, 0.0), 800);
        assert_eq!(backoff_ms(1000, 1, 1.0), 1200);
        assert_eq!(backoff_ms(30_000, 40, 0.5), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(30_000, 0, 0.5), 30_000);
    }

    #[test]
    fn webhook_retries_last_at_least_a_day_with_the_default_base() {
        let mut waited = 0;
        let mut attempt = 1;
        while waited < 24 * 3_600_000 {
            waited += backoff_ms(30_000, attempt, 0.0);
            attempt += 1;
        }
        assert!(attempt < 40, "a day of retries takes {attempt} attempts");
    }

    #[test]
    fn phones_must_be_e164() {
        assert_eq!(parse_phone("+1 415-555-0100").as_deref(), Ok("+14155550100"));
        assert_eq!(parse_phone("+44 (20) 7946 0958").as_deref(), Ok("+442079460958"));
        for bad in ["4155550100", "+0123456789", "+1234", "+1415555010012345", "+1415abc0100", ""] {
            assert!(parse_phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(parse_email(" Ada@Example.COM ").as_deref(), Ok("ada@example.com"));
        for bad in ["ada", "ada@", "@example.com", "ada@example", "a da@example.com", "ada@example.com>", "a@b@c.com"] {
            assert!(parse_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unsubscribe_tokens_name_what_they_signed_and_nothing_else() {
        let key = b"0123456789abcdef0123456789abcdef";
        let token = unsubscribe_token(key, Topic::OrderSms, "usr_1");
        assert_eq!(verify_unsubscribe(key, &token), Some((Topic::OrderSms, "usr_1".into())));
        assert_eq!(verify_unsubscribe(b"another key entirely, 32 bytes!!", &token), None);
        let (payload, tag) = token.split_once('.').unwrap_or_default();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode("order_sms:usr_2"));
        assert_ne!(payload, URL_SAFE_NO_PAD.encode("order_sms:usr_2"));
        assert_eq!(verify_unsubscribe(key, &forged), None);
        assert_eq!(verify_unsubscribe(key, "nonsense"), None);
    }

    #[test]
    fn webhook_signature_matches_a_known_vector() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"whsec_test",b"1700000000.{\"a\":1}",hashlib.sha256).hexdigest())'
        assert_eq!(
            webhook_signature("whsec_test", 1_700_000_000, "{\"a\":1}"),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn patterns_and_public_events() {
        assert!(valid_event_pattern("*"));
        assert!(valid_event_pattern("order.*"));
        assert!(valid_event_pattern("inventory.low_stock"));
        assert!(!valid_event_pattern("orders.*"));
        assert!(!valid_event_pattern("order.shipped"));
        assert!(!valid_event_pattern("user.password_reset_requested"));
        let secret = Envelope::new("user.password_reset_requested", "usr_1", serde_json::json!({"token": "t"}));
        assert!(public_event(&secret).is_none());
        let placed = Envelope::new("order.placed", "ord_1", serde_json::json!({"number": 1001, "lookup_token": "x"}));
        let shown = public_event(&placed).map(|e| e.data).unwrap_or_default();
        assert_eq!(shown, serde_json::json!({"number": 1001}));
    }

    #[test]
    fn endpoint_urls() {
        assert!(valid_endpoint_url("https://hooks.example.com/emporium"));
        assert!(valid_endpoint_url("http://127.0.0.1:9000/in"));
        for bad in ["ftp://x", "https://", "https://user:pw@x.com/", "hooks.example.com", "https://x.com/a b"] {
            assert!(!valid_endpoint_url(bad), "{bad}");
        }
    }
}
