//! What a browser carries between pages: its guest cart (id and secret, the
//! same credential an API client holds) and a CSRF token, in HttpOnly,
//! SameSite=Lax cookies (Secure when the shop is served over HTTPS). Every
//! form posts the CSRF token back; a form without the one its cookie names
//! is refused. Nothing here is trusted further: the API checks the cart's
//! secret itself.

use axum::http::{HeaderMap, HeaderValue, header};
use ring::rand::{SecureRandom, SystemRandom};

pub const CART_ID: &str = "cart_id";
pub const CART_SECRET: &str = "cart_secret";
pub const CSRF: &str = "csrf";

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
    let secure = if secure { "; Secure" } else { "" };
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

/// The request's CSRF token, or a new one with the cookie that sets it.
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
        assert_eq!(set, "csrf=x; Path=/; HttpOnly; SameSite=Lax; Secure");
        assert_eq!(random_token().len(), 64);
    }
}
