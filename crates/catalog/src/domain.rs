//! The catalog's rules, without I/O: SKUs, slugs, titles, quantities, and
//! when a stock change is worth telling anyone about.

use std::collections::BTreeMap;

use kernel::money::Currency;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub code: &'static str,
    pub reason: String,
}

pub fn invalid(field: impl Into<String>, code: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), code, reason: reason.into() }
}

/// A stock-keeping unit: 1–64 letters, digits, `-`, `_`, `.`; stored upper case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str, field: &str) -> Result<Sku, Invalid> {
        let s = raw.trim();
        let ok = (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        ok.then(|| Sku(s.to_ascii_uppercase()))
            .ok_or_else(|| invalid(field, "invalid_sku", "1-64 letters, digits, - _ ."))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A URL slug: lower-case letters, digits and single dashes, 1–100 long.
pub fn parse_slug(raw: &str) -> Result<String, Invalid> {
    let s = raw.trim();
    let ok = (1..=100).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    ok.then(|| s.to_owned()).ok_or_else(|| invalid("slug", "invalid_slug", "lower-case letters, digits and dashes"))
}

/// A slug made from a title: `Organic Cotton T-Shirt!` → `organic-cotton-t-shirt`.
pub fn slugify(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_end_matches('-').chars().take(90).collect();
    if slug.is_empty() { "product".into() } else { slug.trim_end_matches('-').to_owned() }
}

pub fn parse_title(raw: &str, field: &str) -> Result<String, Invalid> {
    let t = raw.trim();
    if t.is_empty() || t.chars().count() > 200 || t.chars().any(char::is_control) {
        return Err(invalid(field, "invalid_title", "1 to 200 characters"));
    }
    Ok(t.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Active,
    Archived,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Active => "active",
            Status::Archived => "archived",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        [Status::Draft, Status::Active, Status::Archived].into_iter().find(|s| s.as_str() == text)
    }
}

/// Prices per currency, `{"USD": 1999}`: known codes, amounts ≥ 0, at least one.
pub fn parse_prices(raw: &BTreeMap<String, i64>, field: &str) -> Result<Vec<(Currency, i64)>, Invalid> {
    if raw.is_empty() {
        return Err(invalid(field, "missing_price", "at least one currency"));
    }
    raw.iter()
        .map(|(code, amount)| {
            let currency = Currency::parse(code)
                .map_err(|_| invalid(format!("{field}.{code}"), "invalid_currency", "an ISO 4217 code"))?;
            if *amount < 0 {
                return Err(invalid(format!("{field}.{code}"), "invalid_amount", "minor units, 0 or more"));
            }
            Ok((currency, *amount))
        })
        .collect()
}

/// A positive quantity of units, at most a million in one line.
pub fn parse_quantity(raw: i64, field: &str) -> Result<i64, Invalid> {
    if !(1..=1_000_000).contains(&raw) {
        return Err(invalid(field, "invalid_quantity", "between 1 and 1000000"));
    }
    Ok(raw)
}

/// What a change of available stock means for shoppers and staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockSignals {
    /// Available fell to or below the variant's threshold just now.
    pub low_stock: bool,
    /// Available went from nothing to something.
    pub back_in_stock: bool,
}

pub fn stock_signals(before: i64, after: i64, threshold: i64) -> StockSignals {
    StockSignals { low_stock: before > threshold && after <= threshold, back_in_stock: before <= 0 && after > 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_and_slugs() {
        assert_eq!(Sku::parse(" tsh-0042 ", "sku").unwrap().as_str(), "TSH-0042");
        assert!(Sku::parse("a b", "sku").is_err());
        assert!(Sku::parse("", "sku").is_err());
        assert_eq!(slugify("Organic Cotton T-Shirt!"), "organic-cotton-t-shirt");
        assert_eq!(slugify("  ¡Olé!  "), "ol");
        assert_eq!(slugify("!!!"), "product");
        assert!(parse_slug("good-slug-2").is_ok());
        assert!(parse_slug("Bad Slug").is_err());
        assert!(parse_slug("double--dash").is_err());
    }

    #[test]
    fn prices() {
        let mut raw = BTreeMap::new();
        raw.insert("USD".to_owned(), 1999);
        assert_eq!(parse_prices(&raw, "prices").unwrap().len(), 1);
        raw.insert("usd".to_owned(), 5);
        assert_eq!(parse_prices(&raw, "prices").unwrap_err().field, "prices.usd");
        let mut neg = BTreeMap::new();
        neg.insert("EUR".to_owned(), -1);
        assert_eq!(parse_prices(&neg, "variants[0].prices").unwrap_err().code, "invalid_amount");
        assert!(parse_prices(&BTreeMap::new(), "prices").is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(stock_signals(6, 5, 5), StockSignals { low_stock: true, back_in_stock: false });
        assert_eq!(stock_signals(5, 4, 5), StockSignals { low_stock: false, back_in_stock: false });
        assert_eq!(stock_signals(0, 3, 5), StockSignals { low_stock: false, back_in_stock: true });
        assert_eq!(stock_signals(10, 0, 5), StockSignals { low_stock: true, back_in_stock: false });
    }
}
