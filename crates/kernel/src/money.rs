//! Money: an integer count of minor units and an ISO 4217 currency. No floats.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An ISO 4217 code: three upper-case ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ToSchema)]
#[schema(value_type = String, example = "USD")]
pub struct Currency([u8; 3]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("a currency is three upper-case letters (ISO 4217)")]
    BadCurrency,
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("an amount is a plain decimal with at most the currency's minor digits")]
    BadAmount,
    #[error("amount out of range")]
    Overflow,
}

impl Currency {
    /// ISO 4217's code for "no currency".
    pub const XXX: Currency = Currency(*b"XXX");

    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        match text.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(MoneyError::BadCurrency),
        }
    }

    /// Digits after the decimal point in the currency's usual notation
    /// (ISO 4217): 0 for JPY, 3 for KWD, 2 for most.
    pub fn minor_digits(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
            | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }

    /// `"19.99"` → 1999 minor units; refuses more digits than the currency
    /// has, signs, and anything that is not a plain decimal.
    pub fn parse_decimal(&self, text: &str) -> Result<i64, MoneyError> {
        let text = text.trim();
        let digits = self.minor_digits() as usize;
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !plain(whole) || !plain(frac) || frac.len() > digits || whole.len() > 15 {
            return Err(MoneyError::BadAmount);
        }
        let frac: String = format!("{frac:0<digits$}");
        format!("{whole}{frac}").parse().map_err(|_| MoneyError::BadAmount)
    }

    /// 1999 minor units → `"19.99"`.
    pub fn format_decimal(&self, amount: i64) -> String {
        let digits = self.minor_digits();
        if digits == 0 {
            return amount.to_string();
        }
        let scale = 10_i64.pow(digits);
        let sign = if amount < 0 { "-" } else { "" };
        let abs = amount.unsigned_abs();
        format!("{sign}{}.{:0width$}", abs / scale as u64, abs % scale as u64, width = digits as usize)
    }

    /// 1999 minor units → `"19.99 USD"`: an amount as people read it.
    pub fn format_with_code(&self, amount: i64) -> String {
        format!("{} {}", self.format_decimal(amount), self.as_str())
    }

    /// 6899 minor units → `"$68.99"`, `"€68.99"`, `"£1,250.00"`, `"¥1,200"`,
    /// `"CHF 68.99"`: an amount as a price tag shows it, in English notation
    /// (thousands grouped by commas), with the currency's sign where one is
    /// well known, its code otherwise.
    pub fn format_price(&self, amount: i64) -> String {
        let decimal = self.format_decimal(amount.unsigned_abs().min(i64::MAX as u64) as i64);
        let (whole, fraction) = decimal.split_once('.').map_or((decimal.as_str(), None), |(w, f)| (w, Some(f)));
        let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
        for (i, digit) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if let Some(f) = fraction {
            grouped.push('.');
            grouped.push_str(f);
        }
        let sign = if amount < 0 { "-" } else { "" };
        match self.symbol() {
            Some(symbol) => format!("{sign}{symbol}{grouped}"),
            None => format!("{sign}{} {grouped}", self.as_str()),
        }
    }

    /// The sign English-speaking shoppers know the currency by, where it
    /// names one currency alone (`$` is the US dollar; other dollars carry
    /// their country's letters).
    pub fn symbol(&self) -> Option<&'static str> {
        Some(match self.as_str() {
            "USD" => "$",
            "EUR" => "€",
            "GBP" => "£",
            "JPY" => "¥",
            "CNY" => "CN¥",
            "INR" => "₹",
            "KRW" => "₩",
            "ILS" => "₪",
            "VND" => "₫",
            "PHP" => "₱",
            "NGN" => "₦",
            "UAH" => "₴",
            "CAD" => "CA$",
            "AUD" => "A$",
            "NZD" => "NZ$",
            "HKD" => "HK$",
            "MXN" => "MX$",
            "TWD" => "NT$",
            "BRL" => "R$",
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `{"amount": 1999, "currency": "USD"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Minor units (cents for USD).
    pub amount: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let amount = self.amount.checked_add(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn currency_codes() {
        assert!(Currency::parse("USD").is_ok());
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("US").is_err());
        let m: Money = serde_json::from_str(r#"{"amount":1999,"currency":"EUR"}"#).unwrap();
        assert_eq!(m.amount, 1999);
        assert!(serde_json::from_str::<Money>(r#"{"amount":19.99,"currency":"EUR"}"#).is_err());
    }

    proptest! {
        #[test]
        fn addition_is_exact_or_refused(a in any::<i64>(), b in any::<i64>()) {
            let usd = Currency::parse("USD").unwrap();
            match Money::new(a, usd).checked_add(Money::new(b, usd)) {
                Ok(sum) => prop_assert_eq!(sum.amount as i128, a as i128 + b as i128),
                Err(e) => prop_assert_eq!(e, MoneyError::Overflow),
            }
        }
    }

    #[test]
    fn decimals() {
        let usd = Currency::parse("USD").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(usd.parse_decimal("19.99"), Ok(1999));
        assert_eq!(usd.parse_decimal("19.9"), Ok(1990));
        assert_eq!(usd.parse_decimal("19"), Ok(1900));
        assert_eq!(usd.parse_decimal("0.5"), Ok(50));
        assert!(usd.parse_decimal("19.999").is_err());
        assert!(usd.parse_decimal("-1").is_err());
        assert!(usd.parse_decimal("1e3").is_err());
        assert!(usd.parse_decimal("").is_err());
        assert!(usd.parse_decimal(".5").is_err());
        assert_eq!(jpy.parse_decimal("1200"), Ok(1200));
        assert!(jpy.parse_decimal("12.5").is_err());
        assert_eq!(usd.format_decimal(1999), "19.99");
        assert_eq!(usd.format_decimal(5), "0.05");
        assert_eq!(usd.format_with_code(1999), "19.99 USD");
        assert_eq!(jpy.format_decimal(1200), "1200");
    }

    #[test]
    fn prices_as_shoppers_read_them() {
        let c = |code: &str| Currency::parse(code).unwrap();
        assert_eq!(c("USD").format_price(6899), "$68.99");
        assert_eq!(c("USD").format_price(5), "$0.05");
        assert_eq!(c("USD").format_price(6_892_101), "$68,921.01");
        assert_eq!(c("USD").format_price(100_000_000), "$1,000,000.00");
        assert_eq!(c("USD").format_price(-500), "-$5.00");
        assert_eq!(c("EUR").format_price(6899), "€68.99");
        assert_eq!(c("GBP").format_price(125_000), "£1,250.00");
        assert_eq!(c("JPY").format_price(1200), "¥1,200");
        assert_eq!(c("CAD").format_price(999), "CA$9.99");
        assert_eq!(c("CHF").format_price(6899), "CHF 68.99");
        assert_eq!(c("KWD").format_price(1234), "KWD 1.234");
        assert_eq!(c("USD").format_price(i64::MIN), "-$92,233,720,368,547,758.07");
    }

    proptest! {
        #[test]
        fn decimals_round_trip(a in 0_i64..1_000_000_000_000) {
            for code in ["USD", "JPY", "KWD"] {
                let c = Currency::parse(code).unwrap();
                prop_assert_eq!(c.parse_decimal(&c.format_decimal(a)), Ok(a));
            }
        }
    }

    #[test]
    fn currencies_do_not_mix() {
        let usd = Currency::parse("USD").unwrap();
        let eur = Currency::parse("EUR").unwrap();
        assert!(Money::new(1, usd).checked_add(Money::new(1, eur)).is_err());
    }
}
