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

/// An option a product declares, e.g. Size with S, M, L. A variant takes
/// one value of each of its product's options.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductOption {
    pub name: String,
    pub values: Vec<String>,
}

/// At most three options (as in Shopify's format), with distinct names and
/// distinct values; names and values are trimmed.
pub fn parse_options(raw: &[ProductOption]) -> Result<Vec<ProductOption>, Invalid> {
    if raw.len() > 3 {
        return Err(invalid("options", "too_many_options", "at most 3 options"));
    }
    let mut out: Vec<ProductOption> = Vec::new();
    for (i, option) in raw.iter().enumerate() {
        let name = option.name.trim();
        if name.is_empty() || name.chars().count() > 50 || name.chars().any(char::is_control) {
            return Err(invalid(format!("options[{i}].name"), "invalid_option", "1 to 50 characters"));
        }
        if out.iter().any(|o| o.name.eq_ignore_ascii_case(name)) {
            return Err(invalid(format!("options[{i}].name"), "duplicate_option", "each option needs its own name"));
        }
        if option.values.is_empty() || option.values.len() > 100 {
            return Err(invalid(format!("options[{i}].values"), "invalid_option_values", "1 to 100 values"));
        }
        let mut values: Vec<String> = Vec::new();
        for (j, value) in option.values.iter().enumerate() {
            let value = value.trim();
            if value.is_empty() || value.chars().count() > 100 || value.chars().any(char::is_control) {
                return Err(invalid(format!("options[{i}].values[{j}]"), "invalid_option_value", "1 to 100 characters"));
            }
            if values.iter().any(|v| v.eq_ignore_ascii_case(value)) {
                return Err(invalid(format!("options[{i}].values[{j}]"), "duplicate_option_value", "values differ"));
            }
            values.push(value.to_owned());
        }
        out.push(ProductOption { name: name.to_owned(), values });
    }
    Ok(out)
}

/// A variant's option values, one per option and among its declared values
/// (matched without regard to case, returned as declared).
pub fn parse_option_values(options: &[ProductOption], raw: &[String], field: &str) -> Result<Vec<String>, Invalid> {
    if raw.len() != options.len() {
        let reason = format!("one value for each option ({})", options.len());
        return Err(invalid(field, "option_values_mismatch", reason));
    }
    options
        .iter()
        .zip(raw)
        .enumerate()
        .map(|(i, (option, value))| {
            option.values.iter().find(|v| v.eq_ignore_ascii_case(value.trim())).cloned().ok_or_else(|| {
                invalid(format!("{field}[{i}]"), "unknown_option_value", format!("one of {}: {}", option.name, option.values.join(", ")))
            })
        })
        .collect()
}

/// The name of a variant shoppers see: `M / Red`, or `Default`.
pub fn variant_title(values: &[String]) -> String {
    if values.is_empty() { "Default".to_owned() } else { values.join(" / ") }
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
    fn options() {
        let size = ProductOption { name: " Size ".into(), values: vec!["S".into(), "M".into()] };
        let colour = ProductOption { name: "Colour".into(), values: vec!["Red".into()] };
        let parsed = parse_options(&[size.clone(), colour]).unwrap();
        assert_eq!(parsed[0].name, "Size");
        assert_eq!(parse_option_values(&parsed, &["m".into(), "RED".into()], "v").unwrap(), vec!["M", "Red"]);
        assert_eq!(parse_option_values(&parsed, &["XL".into(), "Red".into()], "v").unwrap_err().field, "v[0]");
        assert_eq!(parse_option_values(&parsed, &["S".into()], "v").unwrap_err().code, "option_values_mismatch");
        assert_eq!(parse_options(&[size.clone(), size.clone()]).unwrap_err().code, "duplicate_option");
        let four = vec![size; 4];
        assert_eq!(parse_options(&four).unwrap_err().code, "too_many_options");
        let repeated = ProductOption { name: "Size".into(), values: vec!["S".into(), "s".into()] };
        assert_eq!(parse_options(&[repeated]).unwrap_err().code, "duplicate_option_value");
        assert_eq!(variant_title(&["M".into(), "Red".into()]), "M / Red");
        assert_eq!(variant_title(&[]), "Default");
    }

    #[test]
    fn signals() {
        assert_eq!(stock_signals(6, 5, 5), StockSignals { low_stock: true, back_in_stock: false });
        assert_eq!(stock_signals(5, 4, 5), StockSignals { low_stock: false, back_in_stock: false });
        assert_eq!(stock_signals(0, 3, 5), StockSignals { low_stock: false, back_in_stock: true });
        assert_eq!(stock_signals(10, 0, 5), StockSignals { low_stock: true, back_in_stock: false });
    }
}
