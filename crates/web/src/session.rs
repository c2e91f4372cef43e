//! What a browser carries between pages: its guest cart (id and secret, the
//! same credential an API client holds) and a CSRF token, in HttpOnly,
//! SameSite=Lax cookies (Secure and `__Host-` named when the shop is served
//! over HTTPS, so no other origin can set them). Every form posts the CSRF
//! token back; a form without the one its cookie names is refused. The
//! token is signed with the shop's form key and bound to who is signed in
//! (see [`FormKey`]), so a token from another visitor's browser is worth
//! nothing. Nothing here is trusted further: the API checks the cart's
//! secret itself.

use axum::http::{HeaderMap, HeaderValue, header};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

pub const CART_ID: &str = "cart_id";
pub const CART_SECRET: &str = "cart_secret";
pub const CSRF: &str = "csrf";

/// Over HTTPS every cookie of ours is named with this prefix: the browser
/// then takes it only from this origin, Secure, for `Path=/`.
pub const HOST_PREFIX: &str = "__Host-";

/// Every cookie the pages set.
pub const OURS: [&str; 5] = [crate::account::ACCESS, crate::account::REFRESH, CART_ID, CART_SECRET, CSRF];

/// The value of cookie `name` in a request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` for `name`; `None` removes it.
pub fn set_cookie(name: &str, value: Option<&str>, secure: bool) -> Option<HeaderValue> {
    let (prefix, secure) = if secure { (HOST_PREFIX, "; Secure") } else { ("", "") };
    let name = format!("{prefix}{name}");
    let text = match value {
        Some(v) => format!("{name}={v}; Path=/; HttpOnly; SameSite=Lax{secure}"),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&text).ok()
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        // No randomness: no token a form could match (forms are then refused).
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Over HTTPS, the request's cookies as the pages read them: ours only from
/// their `__Host-` names (an unprefixed one may have been set by another
/// origin, so it is dropped), prefix removed; others as they are. `None`
/// when nothing changes.
pub fn unprefixed(headers: &HeaderMap) -> Option<HeaderValue> {
    let pairs: Vec<&str> = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).map(str::trim).filter(|p| !p.is_empty()).collect();
    let ours = |name: &str| OURS.contains(&name);
    let kept: Vec<&str> = pairs
        .iter()
        .filter_map(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            match name.strip_prefix(HOST_PREFIX) {
                Some(plain) if ours(plain) => Some(&pair[HOST_PREFIX.len()..]),
                _ if ours(name) => None,
                _ => Some(*pair),
            }
        })
        .collect();
    if kept == pairs {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// Signs form tokens. A token is `nonce.mac`: 16 random bytes and an
/// HMAC-SHA256, over the nonce and the signed-in user (empty for a
/// visitor), under the shop's key. A token is good only for the user it was
/// made for, so one taken from another browser (or set there by someone
/// else) is refused, and signing in or out makes a new one.
#[derive(Clone)]
pub struct FormKey(std::sync::Arc<hmac::Key>);

const NONCE_HEX: usize = 32;
const MAC_HEX: usize = 64;

impl FormKey {
    /// The configured secret, or a random one for this process.
    pub fn new(secret: Option<&str>) -> FormKey {
        let key = match secret {
            Some(s) => hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes()),
            None => hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).unwrap_or_else(|_| {
                // No system randomness: a key this process alone can know (never a fixed one).
                use std::hash::{BuildHasher, Hasher};
                let mut material = Vec::new();
                for i in 0..4u64 {
                    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                    h.write_u64(i);
                    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default());
                    material.extend_from_slice(&h.finish().to_le_bytes());
                }
                hmac::Key::new(hmac::HMAC_SHA256, &material)
            }),
        };
        FormKey(std::sync::Arc::new(key))
    }

    fn mac(&self, nonce: &str, user: &str) -> hmac::Tag {
        hmac::sign(&self.0, format!("csrf\0{user}\0{nonce}").as_bytes())
    }

    /// A new token for `user` ("" for a visitor); empty when there is no randomness.
    pub fn mint(&self, user: &str) -> String {
        let nonce = random_token();
        if nonce.is_empty() {
            return String::new();
        }
        let nonce = &nonce[..NONCE_HEX];
        format!("{nonce}.{}", hex(self.mac(nonce, user).as_ref()))
    }

    /// Whether `token` is one this shop made for `user`.
    pub fn verify(&self, token: &str, user: &str) -> bool {
        let Some((nonce, mac)) = token.split_once('.') else { return false };
        if !well_formed(token) {
            return false;
        }
        let Some(mac) = unhex(mac) else { return false };
        hmac::verify(&self.0, format!("csrf\0{user}\0{nonce}").as_bytes(), &mac).is_ok()
    }
}

/// Whether `token` has a form token's shape (lowercase hex, a dot, lowercase
/// hex): such a token needs no escaping anywhere in a page.
pub fn well_formed(token: &str) -> bool {
    let hexes = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    token.split_once('.').is_some_and(|(nonce, mac)| hexes(nonce, NONCE_HEX) && hexes(mac, MAC_HEX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// Who a request is signed in as, for binding its form token: the `sub` of
/// the access cookie (read, not verified: the API verifies the token; a
/// forged one only binds a token to a session that does not work), or ""
/// for a visitor.
pub fn form_user(headers: &HeaderMap) -> String {
    cookie(headers, crate::account::ACCESS).and_then(|t| token_subject(&t)).unwrap_or_default()
}

/// The `sub` claim of an access token, unverified.
pub fn token_subject(token: &str) -> Option<String> {
    use base64::Engine;
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?.get("sub")?.as_str().map(str::to_owned)
}

/// The request's CSRF token, or a new one with the cookie that sets it.
/// (The form-token layer has already replaced a token that is not this
/// shop's for this user, so what is found here is good.)
pub fn csrf(headers: &HeaderMap, secure: bool) -> (String, Option<HeaderValue>) {
    match cookie(headers, CSRF) {
        Some(token) => (token, None),
        None => {
            let token = random_token();
            let set = set_cookie(CSRF, Some(&token), secure);
            (token, set)
        }
    }
}

/// Whether a posted form carries the token its cookie holds (compared in constant time).
pub fn csrf_ok(headers: &HeaderMap, posted: &str) -> bool {
    let Some(expected) = cookie(headers, CSRF) else { return false };
    !posted.is_empty()
        && expected.len() == posted.len()
        && expected.bytes().zip(posted.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_and_forms_checked() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; csrf=abc123; cart_id=cart_1"));
        assert_eq!(cookie(&headers, "cart_id").as_deref(), Some("cart_1"));
        assert_eq!(cookie(&headers, "missing"), None);
        assert!(csrf_ok(&headers, "abc123"));
        assert!(!csrf_ok(&headers, "abc124"));
        assert!(!csrf_ok(&headers, ""));
        assert!(!csrf_ok(&HeaderMap::new(), "abc123"));
        let set = set_cookie("csrf", Some("x"), true).unwrap_or_else(|| HeaderValue::from_static(""));
        assert_eq!(set, "__Host-csrf=x; Path=/; HttpOnly; SameSite=Lax; Secure");
        let set = set_cookie("csrf", Some("x"), false).unwrap_or_else(|| HeaderValue::from_static(""));
        assert_eq!(set, "csrf=x; Path=/; HttpOnly; SameSite=Lax");
        assert_eq!(random_token().len(), 64);
    }

    #[test]
    fn over_https_only_prefixed_cookies_count() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("csrf=planted; __Host-csrf=mine; theme=dark; __Host-other=x"));
        let seen = unprefixed(&headers).unwrap_or_else(|| HeaderValue::from_static("unchanged"));
        assert_eq!(seen, "csrf=mine; theme=dark; __Host-other=x");
        headers.insert(header::COOKIE, HeaderValue::from_static("theme=dark"));
        assert!(unprefixed(&headers).is_none());
    }

    #[test]
    fn form_tokens_are_bound_to_their_user() {
        let key = FormKey::new(Some("a form key of at least thirty-two characters"));
        let visitor = key.mint("");
        assert!(well_formed(&visitor) && key.verify(&visitor, ""), "{visitor}");
        assert!(!key.verify(&visitor, "usr_1"), "not for a signed-in user");
        let ada = key.mint("usr_1");
        assert!(key.verify(&ada, "usr_1") && !key.verify(&ada, "usr_2") && !key.verify(&ada, ""));
        assert!(!FormKey::new(None).verify(&ada, "usr_1"), "another shop's key");
        for junk in ["", "<script>", "abc.def", &ada.to_uppercase(), &format!("{ada}0"), &ada.replace('.', "<")] {
            assert!(!key.verify(junk, "usr_1"), "{junk}");
        }
    }
}
