//! Prefixed, time-sortable identifiers (`usr_01JD…`): a UUIDv7 written in
//! Crockford base32 behind a prefix that names the kind of object.

use std::fmt;
use std::str::FromStr;


const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The id's text did not have the expected prefix or body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid `{prefix}_` id")]
pub struct IdError {
    pub prefix: &'static str,
}

/// Writes 128 bits as 26 Crockford base32 characters, most significant first,
/// so the text sorts like the number.
pub fn encode_base32(value: u128) -> String {
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (25 - i);
        // The first character carries only the top 3 bits (26 * 5 = 130).
        let digit = ((value >> shift) & 0x1f) as usize;
        *slot = ALPHABET[digit];
    }
    out.iter().map(|&b| b as char).collect()
}

/// Reads what [`encode_base32`] wrote; lower case is accepted.
pub fn decode_base32(text: &str) -> Option<u128> {
    if text.len() != 26 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, c) in text.bytes().enumerate() {
        let c = c.to_ascii_uppercase();
        let digit = ALPHABET.iter().position(|&a| a == c)? as u128;
        if i == 0 && digit > 7 {
            return None; // would overflow 128 bits
        }
        value = (value << 5) | digit;
    }
    Some(value)
}

/// Declares a prefixed id type: `define_id!(UserId, "usr");`.
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name($crate::id::Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id, ordered after every id made before it in this process.
            pub fn new() -> Self {
                Self($crate::id::Uuid::now_v7())
            }

            pub fn from_uuid(uuid: $crate::id::Uuid) -> Self {
                Self(uuid)
            }

            pub fn uuid(&self) -> $crate::id::Uuid {
                self.0
            }

            /// Parses `prefix_BODY`; any other prefix is an error (a 404 at the edge).
            pub fn parse(text: &str) -> Result<Self, $crate::id::IdError> {
                let err = $crate::id::IdError { prefix: $prefix };
                let body = text
                    .strip_prefix($prefix)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .ok_or(err.clone())?;
                $crate::id::decode_base32(body)
                    .map(|v| Self($crate::id::Uuid::from_u128(v)))
                    .ok_or(err)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}_{}", $prefix, $crate::id::encode_base32(self.0.as_u128()))
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(self, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::id::IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                Self::parse(&text).map_err(::serde::de::Error::custom)
            }
        }
    };
}

pub use uuid::Uuid;

define_id!(
    /// An event's id (`evt_…`).
    EventId,
    "evt"
);
define_id!(UserId, "usr");
define_id!(ProductId, "prod");
define_id!(VariantId, "var");
define_id!(CategoryId, "cat");
define_id!(MediaId, "med");
define_id!(LocationId, "loc");
define_id!(LedgerEntryId, "inv");
define_id!(CartId, "cart");
define_id!(OrderId, "ord");
define_id!(PaymentId, "pay");
define_id!(FulfilmentId, "ful");
define_id!(RefundId, "ref");
define_id!(NotificationId, "ntf");
define_id!(WebhookId, "whk");
define_id!(CartItemId, "item");
define_id!(DiscountId, "disc");
define_id!(ShippingMethodId, "ship");
define_id!(TaxRateId, "tax");
define_id!(ReturnId, "ret");
define_id!(MailId, "msg");

/// A request id as sent in `X-Request-Id`: kept when the client sent a sane one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    pub fn generate() -> Self {
        Self(format!("req_{}", encode_base32(Uuid::now_v7().as_u128())))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RequestId {
    type Err = ();
    /// A client's id is kept only if it is short printable ASCII, so it can
    /// never break a log line or a header.
    fn from_str(s: &str) -> Result<Self, ()> {
        let ok = (1..=128).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        ok.then(|| Self(s.to_owned())).ok_or(())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn base32_round_trips(v in any::<u128>()) {
            prop_assert_eq!(decode_base32(&encode_base32(v)), Some(v));
        }

        #[test]
        fn base32_sorts_like_numbers(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(a.cmp(&b), encode_base32(a).cmp(&encode_base32(b)));
        }
    }

    #[test]
    fn ids_carry_their_prefix_and_reject_others() {
        let id = OrderId::new();
        let text = id.to_string();
        assert!(text.starts_with("ord_"));
        assert_eq!(OrderId::parse(&text), Ok(id));
        assert!(UserId::parse(&text).is_err());
        assert!(OrderId::parse("ord_").is_err());
        assert!(OrderId::parse("ord_ZZZZZZZZZZZZZZZZZZZZZZZZZZ").is_err());
    }

    #[test]
    fn ids_made_later_sort_later() {
        let ids: Vec<String> = (0..1000).map(|_| EventId::new().to_string()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn request_ids_from_clients_are_sanitised() {
        assert!("abc-123".parse::<RequestId>().is_ok());
        assert!("bad\nid".parse::<RequestId>().is_err());
        assert!("".parse::<RequestId>().is_err());
        assert!("x".repeat(129).parse::<RequestId>().is_err());
    }
}
