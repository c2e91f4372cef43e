//! Auth's rules, without I/O: what an email, a password, a name and a phone
//! number must be, and how long a failing sign-in waits.

use std::collections::HashSet;
use std::sync::OnceLock;

/// Why a value from a request was refused; `field` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub code: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, code: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid { field, code, reason: reason.into() }
}

/// An email address, normalised: trimmed and lower-cased, so uniqueness is
/// case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, Invalid> {
        let email = raw.trim().to_lowercase();
        let bad = || invalid("email", "invalid_email", "not an email address");
        if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = email.rsplit_once('@').ok_or_else(bad)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.split('.').all(|label| !label.is_empty() && label.len() <= 63);
        if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
            return Err(bad());
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the policy: 10+ characters, not among the 10,000
/// most common passwords, not the email (or its local part).
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str, email: &Email, field: &'static str) -> Result<Password, Invalid> {
        let chars = raw.chars().count();
        if chars < 10 {
            return Err(invalid(field, "password_too_short", "use at least 10 characters"));
        }
        if chars > 1024 {
            return Err(invalid(field, "password_too_long", "use at most 1024 characters"));
        }
        let lower = raw.to_lowercase();
        if common_passwords().contains(lower.as_str()) {
            return Err(invalid(field, "password_too_common", "this password is among the most common ones; choose another"));
        }
        let local = email.as_str().split('@').next().unwrap_or_default();
        if lower == email.as_str() || (local.len() >= 4 && lower.contains(local)) {
            return Err(invalid(field, "password_contains_email", "the password must not contain your email address"));
        }
        Ok(Password(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn common_passwords() -> &'static HashSet<&'static str> {
    static LIST: OnceLock<HashSet<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| include_str!("../data/common-passwords.txt").lines().collect())
}

/// A display name: 1–100 characters, trimmed.
pub fn parse_name(raw: &str) -> Result<String, Invalid> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(invalid("name", "invalid_name", "1 to 100 characters"));
    }
    Ok(name.to_owned())
}

/// A phone number in E.164: `+` and 8 to 15 digits.
pub fn parse_phone(raw: &str) -> Result<String, Invalid> {
    let phone: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
    let digits = phone.strip_prefix('+').unwrap_or_default();
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return Err(invalid("phone", "invalid_phone", "use the international format, e.g. +14155550123"));
    }
    Ok(phone)
}

/// A BCP 47 language tag such as `en`, `en-US`, `pt-BR`.
pub fn parse_locale(raw: &str) -> Result<String, Invalid> {
    let ok = (2..=35).contains(&raw.len())
        && raw.split('-').all(|part| (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !ok {
        return Err(invalid("locale", "invalid_locale", "a language tag such as en or en-US"));
    }
    Ok(raw.to_owned())
}

/// How long an address waits to try an email again after `failures`
/// failed sign-ins for it: nothing before `after`, then `base`, doubled with
/// each further failure, at most `max`.
pub fn sign_in_wait_secs(failures: u64, after: u32, base_secs: u64, max_secs: u64) -> u64 {
    match failures.checked_sub(u64::from(after)) {
        None => 0,
        Some(over) => base_secs.saturating_mul(1u64 << over.min(30)).min(max_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse("  Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        for bad in ["", "alice", "alice@", "@example.com", "alice@example", "a b@example.com", "alice@.example.com", "alice@example..com"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_password_policy() {
        let email = Email::parse("alice.smith@example.com").unwrap();
        assert!(Password::parse("correct horse battery", &email, "password").is_ok());
        assert_eq!(Password::parse("short", &email, "password").err().unwrap().code, "password_too_short");
        assert_eq!(Password::parse("1234567890", &email, "password").err().unwrap().code, "password_too_common");
        assert_eq!(Password::parse("Password123", &email, "password").err().unwrap().code, "password_too_common", "case-insensitive");
        assert_eq!(
            Password::parse("alice.smith@example.com", &email, "password").err().unwrap().code,
            "password_contains_email"
        );
        assert_eq!(Password::parse("xxalice.smithxx", &email, "password").err().unwrap().code, "password_contains_email");
        assert!(common_passwords().len() > 9_000);
    }

    #[test]
    fn phones_names_locales() {
        assert_eq!(parse_phone("+1 (415) 555-0123").unwrap(), "+14155550123");
        assert!(parse_phone("4155550123").is_err());
        assert!(parse_phone("+0123456789").is_err());
        assert!(parse_name("  ").is_err());
        assert_eq!(parse_name(" Ada ").unwrap(), "Ada");
        assert!(parse_locale("en-US").is_ok());
        assert!(parse_locale("en_US!").is_err());
    }

    #[test]
    fn sign_in_waits_grow_and_are_capped() {
        assert_eq!(sign_in_wait_secs(4, 5, 30, 900), 0);
        assert_eq!(sign_in_wait_secs(5, 5, 30, 900), 30);
        assert_eq!(sign_in_wait_secs(6, 5, 30, 900), 60);
        assert_eq!(sign_in_wait_secs(8, 5, 30, 900), 240);
        assert_eq!(sign_in_wait_secs(10, 5, 30, 900), 900);
        assert_eq!(sign_in_wait_secs(u64::MAX, 5, 30, 900), 900);
    }
}
