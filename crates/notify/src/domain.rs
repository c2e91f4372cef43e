//! The rules of notification, without I/O: who may be written to how,
//! when to try again, how links and webhook deliveries are signed, and
//! what of an event a merchant's system may see.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kernel::Envelope;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
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
const PRIVATE_EVENTS: &[&str] = &[
    "user.email_verification_requested",
    "user.password_reset_requested",
    // Security notices to one person, not merchants' business.
    "user.email_reuse_attempted",
    "user.email_changed",
];

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

/// The words a secret link (a password reset, a guest's order) is stored as:
/// the log and staff see this, the recipient gets the link, put back at send time.
pub fn withheld(n: usize) -> String {
    match n {
        0 => "[link withheld]".to_owned(),
        n => format!("[link {} withheld]", n + 1),
    }
}

/// Query parameters that make a link a key to something.
const SECRET_PARAMS: &[&str] = &["token", "code", "secret", "key", "signature"];

fn is_secret_link(link: &str) -> bool {
    let Some((_, query)) = link.split_once('?') else { return false };
    query.split(['&', '#']).any(|kv| SECRET_PARAMS.contains(&kv.split('=').next().unwrap_or("")))
}

/// Takes every secret link out of a message's context (a `url` or `…_url`
/// carrying a token, at any depth), leaving [`withheld`] words in its place.
/// Answers the links, in the order of their words.
pub fn withhold_links(ctx: &mut Value) -> Vec<String> {
    let mut links = Vec::new();
    withhold_in(ctx, &mut links);
    links
}

fn withhold_in(v: &mut Value, links: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, field) in map.iter_mut() {
                let secret = (k == "url" || k.ends_with("_url")) && field.as_str().is_some_and(is_secret_link);
                if secret {
                    let link = std::mem::replace(field, Value::String(withheld(links.len())));
                    links.extend(link.as_str().map(str::to_owned));
                } else {
                    withhold_in(field, links);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| withhold_in(i, links)),
        _ => {}
    }
}

fn sealing_key(key: &[u8]) -> Option<LessSafeKey> {
    let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), b"emporium notify sealing v1");
    UnboundKey::new(&AES_256_GCM, derived.as_ref()).ok().map(LessSafeKey::new)
}

/// Encrypts `plain` (AES-256-GCM, a key derived from notify's key) for a
/// row: secrets a message needs at send time are kept only like this.
pub fn seal(key: &[u8], plain: &str) -> Result<String, Refused> {
    let sealing = sealing_key(key).ok_or(Refused("cannot make the sealing key"))?;
    let mut nonce = [0u8; NONCE_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| Refused("the system's random source failed"))?;
    let mut data = plain.as_bytes().to_vec();
    sealing
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .map_err(|_| Refused("cannot seal"))?;
    let mut out = nonce.to_vec();
    out.extend(data);
    Ok(format!("v1.{}", URL_SAFE_NO_PAD.encode(out)))
}

/// What [`seal`] sealed with the same key; `None` for anything else.
pub fn unseal(key: &[u8], sealed: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(sealed.strip_prefix("v1.")?).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, data) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut data = data.to_vec();
    let plain = sealing_key(key)?.open_in_place(nonce, Aad::empty(), &mut data).ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

/// Whether a merchant's endpoint may be at `ip`: only public unicast
/// addresses. Loopback, private, link-local (cloud metadata), CGNAT, ULA,
/// unspecified, multicast, broadcast, documentation and benchmark ranges, and
/// IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64, 6to4) that are
/// any of those, are refused.
pub fn public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0 // "this network", unspecified
        || a == 10
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || a == 127
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relays
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !refused
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| public_v4(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8));
    match s {
        // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d): the IPv4 address decides.
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded(hi, lo),
        // 6to4 carries an IPv4 address in its prefix.
        [0x2002, hi, lo, ..] => embedded(hi, lo),
        // Documentation (2001:db8::/32, 3fff::/20) and the IETF's 2001::/23 (Teredo, benchmarking, ORCHID).
        [0x2001, 0x0db8, ..] => false,
        [0x2001, b, ..] if b < 0x0200 => false,
        [0x3fff, b, ..] if b < 0x1000 => false,
        // Global unicast is 2000::/3; everything else (::, ::1, IPv4-compatible,
        // fc00::/7, fe80::/10, fec0::/10, ff00::/8, 100::/64, 64:ff9b:1::/48) is not.
        [a, ..] => (0x2000..0x4000).contains(&a),
    }
}

/// Host names that always mean this machine or its network.
fn local_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    !host.contains('.')
        || ["localhost", "localdomain", "local", "internal", "intranet", "lan", "home.arpa", "corp", "private"]
            .iter()
            .any(|suffix| host == *suffix || host.ends_with(&format!(".{suffix}")))
}

/// Why an endpoint's address is refused, if it is: a literal IP that is not
/// public, or a name that can only be local. (A name is checked again, with
/// every address it resolves to, when a delivery connects.)
pub fn endpoint_host_refused(url: &str) -> Option<&'static str> {
    let Some(parsed) = reqwest::Url::parse(url).ok() else { return Some("an absolute http(s) address") };
    let Some(host) = parsed.host_str() else { return Some("an absolute http(s) address") };
    match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) if !public_ip(ip) => Some("a public address: loopback, private, link-local and reserved networks are refused"),
        Ok(_) => None,
        Err(_) if local_name(host) => Some("a public host name: local names such as localhost are refused"),
        Err(_) => None,
    }
}

/// Why an endpoint was switched off, as `settings:write` sees it and is
/// mailed: how long it failed, never what failed (resolver answers, refused
/// addresses and status codes would map the inside network; the delivery
/// log, for `staff:manage`, keeps them).
pub fn endpoint_disabled_reason(failing_for: &str) -> String {
    format!("no delivery succeeded for {failing_for}; what failed is in the delivery log (staff with staff:manage)")
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
    fn only_public_addresses_are_webhook_targets() {
        let refused = [
            "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.8.9.10",
            "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.10", "192.88.99.1", "192.168.1.1",
            "198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
            "255.255.255.255",
            "::", "::1", "::127.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::ffff:192.168.0.1",
            "::ffff:100.64.0.1", "::ffff:0.0.0.0", "64:ff9b::7f00:1", "64:ff9b:1::1", "2002:7f00:1::1", "2002:a9fe:a9fe::1",
            "fc00::1", "fd12:3456:789a::1", "fe80::1", "febf::1", "fec0::1", "ff02::1", "ff0e::1", "100::1", "2001:db8::1",
            "2001::1", "2001:2::1", "2001:10::1", "3fff::1", "3fff:fff::1", "4000::1", "8000::1",
        ];
        for ip in refused {
            assert!(!public_ip(ip.parse().unwrap()), "{ip} is refused");
        }
        let public = [
            "1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.1", "172.15.255.255", "172.32.0.1", "169.253.1.1", "192.0.1.1",
            "192.169.0.1", "198.17.255.255", "198.20.0.1", "203.0.114.1", "223.255.255.254",
            "2606:4700:4700::1111", "2a00:1450:4001::200e", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2001:200::1",
            "3fff:1000::1",
        ];
        for ip in public {
            assert!(public_ip(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn endpoint_hosts_that_are_local_are_refused_when_saved() {
        for bad in ["http://127.0.0.1:1/", "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
            "http://localhost/", "http://LOCALHOST./x", "http://api.localhost/", "http://printer.local/", "http://metadata.google.internal/",
            "http://intranet/", "http://0x7f.1/", "http://2130706433/", "http://[fd00::1]:8080/", "http://100.64.1.1/", "http://[::]/", "http://["] {
            assert!(endpoint_host_refused(bad).is_some(), "{bad}");
        }
        for good in ["https://hooks.example.com/emporium", "http://93.184.215.14:8080/in", "https://[2606:4700::1]/"] {
            assert_eq!(endpoint_host_refused(good), None, "{good}");
        }
    }

    #[test]
    fn secret_links_are_withheld_from_the_stored_message_and_sealed() {
        let mut ctx = serde_json::json!({"url": "https://shop.test/account/reset-password?token=abc", "shop": {"url": "https://shop.test"},
            "order": {"url": "https://shop.test/orders/ord_1?token=xyz", "lines": [{"title": "Mug"}]},
            "fulfilment": {"tracking_url": "https://track.example/1Z999"}});
        let links = withhold_links(&mut ctx);
        assert_eq!(links.len(), 2);
        let words = |link: &str| withheld(links.iter().position(|l| l == link).unwrap());
        assert_eq!(ctx["url"].as_str(), Some(words("https://shop.test/account/reset-password?token=abc").as_str()));
        assert_eq!(ctx["order"]["url"].as_str(), Some(words("https://shop.test/orders/ord_1?token=xyz").as_str()));
        assert_ne!(ctx["url"], ctx["order"]["url"]);
        assert_eq!(ctx["shop"]["url"], "https://shop.test", "links without a key stay");
        assert_eq!(ctx["fulfilment"]["tracking_url"], "https://track.example/1Z999");
        let key = b"0123456789abcdef0123456789abcdef";
        let sealed = seal(key, "tok_secret").unwrap();
        assert!(!sealed.contains("tok_secret"));
        assert_ne!(sealed, seal(key, "tok_secret").unwrap(), "a fresh nonce each time");
        assert_eq!(unseal(key, &sealed).as_deref(), Some("tok_secret"));
        assert_eq!(unseal(b"another key entirely, 32 bytes!!", &sealed), None);
        assert_eq!(unseal(key, "tok_secret"), None);
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
