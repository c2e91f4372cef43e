//! The one address shape used everywhere (accounts, carts, orders):
//! `{name, line1, line2?, city, region?, postal_code, country, phone?}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// ISO 3166-1 alpha-2 codes of countries and territories.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET \
FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR \
IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN \
MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY \
QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR \
TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Whether `code` is an assigned ISO 3166-1 alpha-2 code (upper case).
pub fn is_country(code: &str) -> bool {
    code.len() == 2 && COUNTRIES.split(' ').any(|c| c == code)
}

/// An address as clients send and receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `US`, `DE`.
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// Which field of an address is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct AddressError {
    pub field: &'static str,
    pub reason: &'static str,
}

impl Address {
    /// Trims every field, upper-cases the country, and checks lengths, the
    /// country code and the phone format (E.164).
    pub fn normalise(mut self) -> Result<Address, AddressError> {
        fn text(value: &mut String, field: &'static str, max: usize) -> Result<(), AddressError> {
            *value = value.trim().to_owned();
            if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
                return Err(AddressError { field, reason: "required, at most a line of text" });
            }
            Ok(())
        }
        fn optional(value: &mut Option<String>, field: &'static str, max: usize) -> Result<(), AddressError> {
            if let Some(v) = value {
                if v.trim().is_empty() {
                    *value = None;
                } else {
                    text(v, field, max)?;
                }
            }
            Ok(())
        }
        text(&mut self.name, "name", 100)?;
        text(&mut self.line1, "line1", 200)?;
        optional(&mut self.line2, "line2", 200)?;
        text(&mut self.city, "city", 100)?;
        optional(&mut self.region, "region", 100)?;
        text(&mut self.postal_code, "postal_code", 20)?;
        self.country = self.country.trim().to_uppercase();
        if !is_country(&self.country) {
            return Err(AddressError { field: "country", reason: "an ISO 3166-1 alpha-2 code, e.g. US or DE" });
        }
        if let Some(phone) = &self.phone {
            let p: String = phone.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
            let digits = p.strip_prefix('+').unwrap_or_default();
            if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AddressError { field: "phone", reason: "international format, e.g. +14155550123" });
            }
            self.phone = Some(p);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Address {
        Address {
            name: " Ada Lovelace ".into(),
            line1: "12 St James's Square".into(),
            line2: Some("  ".into()),
            city: "London".into(),
            region: None,
            postal_code: "SW1Y 4JH".into(),
            country: "gb".into(),
            phone: Some("+44 20 7946 0958".into()),
        }
    }

    #[test]
    fn addresses_are_normalised() {
        let a = sample().normalise().unwrap();
        assert_eq!((a.name.as_str(), a.country.as_str(), a.line2), ("Ada Lovelace", "GB", None));
        assert_eq!(a.phone.as_deref(), Some("+442079460958"));
        assert_eq!(COUNTRIES.split(' ').count(), 249);
    }

    #[test]
    fn bad_fields_are_named() {
        let e = Address { country: "UK".into(), ..sample() }.normalise().unwrap_err();
        assert_eq!(e.field, "country");
        let e = Address { city: " ".into(), ..sample() }.normalise().unwrap_err();
        assert_eq!(e.field, "city");
        let e = Address { phone: Some("12".into()), ..sample() }.normalise().unwrap_err();
        assert_eq!(e.field, "phone");
    }
}
