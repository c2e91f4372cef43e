//! The rules of selling, without I/O: cart totals (discounts, shipping,
//! taxes) in integer minor units, discount eligibility, shipping quotes, and
//! the order state machine.
//!
//! Rounding, once for all: every division rounds half to even ("banker's
//! rounding"), line by line. A percentage discount is rounded per line; a
//! fixed discount is split over the eligible lines in proportion to their
//! subtotals (floors, then the leftover minor units to the largest
//! remainders, earliest line first), so line discounts always add up to the
//! order's. Tax is computed per line on what is left after the discount, and
//! on shipping when the rate says so. With tax-inclusive prices the tax is
//! the part contained in the price (`taxable − taxable × 10000 / (10000 + bp)`),
//! and the total does not grow.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a request breaks a rule: a stable code and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

pub fn invalid(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), code, message: message.into() }
}

/// A quantity of one item in a cart or order line.
pub fn parse_quantity(q: i64, field: &str) -> Result<i64, Invalid> {
    if (1..=999).contains(&q) { Ok(q) } else { Err(invalid(field, "invalid_quantity", "a quantity from 1 to 999")) }
}

/// A product and its variant as shoppers read them: "Brass Desk Lamp —
/// Black", or the title alone for a product with only its default variant.
pub fn item_name(title: &str, variant: &str) -> String {
    if variant.is_empty() || variant == "Default" { title.to_owned() } else { format!("{title} — {variant}") }
}

/// Not enough of an item can be bought: what can be, and how many of them
/// the cart holds already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub available: i64,
    pub in_cart: i64,
}

/// Whether a cart may hold `wanted` units of an item of which `available`
/// can be sold now (`None`: stock is not counted, or backorders are taken,
/// so there is no cap). `in_cart` is what the cart held before, for the message.
pub fn check_stock(wanted: i64, available: Option<i64>, in_cart: i64) -> Result<(), Shortfall> {
    match available {
        Some(left) if wanted > left => Err(Shortfall { available: left.max(0), in_cart }),
        _ => Ok(()),
    }
}

/// What a shopper is told when `name` cannot be had in the number asked.
pub fn shortfall_message(name: &str, s: Shortfall) -> String {
    let verb = |n: i64| if n == 1 { "is" } else { "are" };
    match s {
        Shortfall { available: 0, .. } => format!("{name} is sold out"),
        Shortfall { available, in_cart } if in_cart > 0 => {
            format!("Only {available} of {name} {} left, and {in_cart} {} already in your cart", verb(available), verb(in_cart))
        }
        Shortfall { available, .. } => format!("Only {available} of {name} {} left", verb(available)),
    }
}

/// A discount code as typed: trimmed, upper-case, letters, digits, - and _.
pub fn parse_code(raw: &str, field: &str) -> Result<String, Invalid> {
    let code = raw.trim().to_uppercase();
    let ok = (2..=40).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(code) } else { Err(invalid(field, "invalid_code", "2-40 letters, digits, - and _")) }
}

/// An email address, lower-cased, loosely checked (the mail server decides).
pub fn parse_email(raw: &str, field: &str) -> Result<String, Invalid> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(email) } else { Err(invalid(field, "invalid_email", "an email address")) }
}

/// `n / d` rounded half to even; `n >= 0`, `d > 0`.
pub fn div_half_even(n: i128, d: i128) -> i64 {
    let (q, r) = (n / d, n % d);
    let q = match (2 * r).cmp(&d) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal if q % 2 == 1 => q + 1,
        _ => q,
    };
    i64::try_from(q).unwrap_or(i64::MAX)
}

/// One priced line as the totals see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub product_id: String,
    pub category_ids: Vec<String>,
    pub unit_price: i64,
    pub quantity: i64,
}

impl PricedLine {
    pub fn subtotal(&self) -> i64 {
        self.unit_price.saturating_mul(self.quantity)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DiscountValue {
    /// Whole percent, 1–100.
    Percentage { percent_off: i64 },
    /// Minor units of the discount's currency.
    Fixed { amount_off: i64 },
    /// Nothing off the goods (usually with `free_shipping`).
    FreeShipping,
}

/// A discount code's rules, as staff set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discount {
    pub code: String,
    pub value: DiscountValue,
    pub currency: Option<String>,
    /// Restricts the discount to these products or categories; both empty
    /// means the whole order.
    pub product_ids: Vec<String>,
    pub category_ids: Vec<String>,
    pub min_subtotal: Option<i64>,
    pub free_shipping: bool,
    pub starts_ms: Option<i64>,
    pub ends_ms: Option<i64>,
    pub usage_limit: Option<i64>,
    pub times_used: i64,
    pub active: bool,
}

/// Why a code does not apply to this cart now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Inactive,
    NotStarted,
    Expired,
    Exhausted,
    MinimumNotMet(i64),
    NothingEligible,
    WrongCurrency,
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Inactive => "discount_inactive",
            Refusal::NotStarted => "discount_not_started",
            Refusal::Expired => "discount_expired",
            Refusal::Exhausted => "discount_exhausted",
            Refusal::MinimumNotMet(_) => "discount_minimum_not_met",
            Refusal::NothingEligible => "discount_not_applicable",
            Refusal::WrongCurrency => "discount_wrong_currency",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Inactive => write!(f, "this code is not active"),
            Refusal::NotStarted => write!(f, "this code is not valid yet"),
            Refusal::Expired => write!(f, "this code has expired"),
            Refusal::Exhausted => write!(f, "this code has been used up"),
            Refusal::MinimumNotMet(min) => write!(f, "this code needs a subtotal of at least {min} minor units"),
            Refusal::NothingEligible => write!(f, "nothing in the cart qualifies for this code"),
            Refusal::WrongCurrency => write!(f, "this code is for another currency"),
        }
    }
}

impl Discount {
    fn covers(&self, line: &PricedLine) -> bool {
        (self.product_ids.is_empty() && self.category_ids.is_empty())
            || self.product_ids.contains(&line.product_id)
            || line.category_ids.iter().any(|c| self.category_ids.contains(c))
    }

    /// Whether the code applies to `lines` in `currency` at `now_ms`.
    pub fn check(&self, lines: &[PricedLine], currency: &str, now_ms: i64) -> Result<(), Refusal> {
        if !self.active {
            return Err(Refusal::Inactive);
        }
        if self.starts_ms.is_some_and(|s| now_ms < s) {
            return Err(Refusal::NotStarted);
        }
        if self.ends_ms.is_some_and(|e| now_ms >= e) {
            return Err(Refusal::Expired);
        }
        if self.usage_limit.is_some_and(|limit| self.times_used >= limit) {
            return Err(Refusal::Exhausted);
        }
        if matches!(self.value, DiscountValue::Fixed { .. }) && self.currency.as_deref() != Some(currency) {
            return Err(Refusal::WrongCurrency);
        }
        let subtotal: i64 = lines.iter().map(PricedLine::subtotal).sum();
        if let Some(min) = self.min_subtotal
            && subtotal < min
        {
            return Err(Refusal::MinimumNotMet(min));
        }
        if !lines.iter().any(|l| self.covers(l)) {
            return Err(Refusal::NothingEligible);
        }
        Ok(())
    }
}

/// A shipping method's price rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightBand {
    /// Parcels up to this weight (inclusive) cost `amount`.
    pub up_to_grams: i64,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rate {
    Flat(i64),
    /// Ascending by weight; heavier than the last band is not served.
    Weight(Vec<WeightBand>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippingMethod {
    pub id: String,
    pub name: String,
    pub countries: Vec<String>,
    pub currency: String,
    pub rate: Rate,
    /// Free when the goods (after discounts) cost at least this much.
    pub free_above: Option<i64>,
    pub min_days: i64,
    pub max_days: i64,
}

impl ShippingMethod {
    /// The price of sending `grams` of goods worth `goods` to `country`, or
    /// `None` when this method does not serve it.
    pub fn quote(&self, country: &str, currency: &str, goods: i64, grams: i64) -> Option<i64> {
        if self.currency != currency || !self.countries.iter().any(|c| c == country) {
            return None;
        }
        let price = match &self.rate {
            Rate::Flat(amount) => *amount,
            Rate::Weight(bands) => bands.iter().find(|b| grams <= b.up_to_grams)?.amount,
        };
        Some(if self.free_above.is_some_and(|t| goods >= t) { 0 } else { price })
    }
}

/// Checks weight bands as staff send them: ascending, positive, at least one.
pub fn parse_bands(mut bands: Vec<WeightBand>) -> Result<Vec<WeightBand>, Invalid> {
    bands.sort_by_key(|b| b.up_to_grams);
    if bands.is_empty() {
        return Err(invalid("weight_bands", "invalid_bands", "at least one band"));
    }
    for (i, pair) in bands.windows(2).enumerate() {
        if pair[0].up_to_grams == pair[1].up_to_grams {
            return Err(invalid(format!("weight_bands[{}]", i + 1), "invalid_bands", "two bands with the same weight"));
        }
    }
    if let Some(i) = bands.iter().position(|b| b.up_to_grams <= 0 || b.amount < 0) {
        return Err(invalid(format!("weight_bands[{i}]"), "invalid_bands", "a positive weight and a price of 0 or more"));
    }
    Ok(bands)
}

/// The tax that applies: basis points, and whether shipping is taxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaxRule {
    pub rate_bp: i64,
    pub shipping_taxable: bool,
}

/// Everything the totals depend on.
#[derive(Debug, Clone)]
pub struct TotalsInput<'a> {
    pub lines: &'a [PricedLine],
    pub discount: Option<&'a Discount>,
    /// The chosen method's price before any free-shipping discount.
    pub shipping: Option<i64>,
    pub tax: TaxRule,
    pub prices_include_tax: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LineTotals {
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    /// What the line costs the customer (tax added when prices exclude it).
    pub total: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub subtotal: i64,
    pub discount: i64,
    pub shipping: i64,
    pub tax: i64,
    pub total: i64,
    pub lines: Vec<LineTotals>,
}

fn tax_of(taxable: i64, rule: TaxRule, inclusive: bool) -> i64 {
    if rule.rate_bp == 0 || taxable <= 0 {
        return 0;
    }
    let (amount, bp) = (i128::from(taxable), i128::from(rule.rate_bp));
    if inclusive { taxable - div_half_even(amount * 10_000, 10_000 + bp) } else { div_half_even(amount * bp, 10_000) }
}

/// The one function that prices a cart or an order.
pub fn totals(input: &TotalsInput<'_>) -> Totals {
    let mut lines: Vec<LineTotals> =
        input.lines.iter().map(|l| LineTotals { subtotal: l.subtotal(), ..LineTotals::default() }).collect();
    let subtotal: i64 = lines.iter().map(|l| l.subtotal).sum();
    let mut free_shipping = false;
    if let Some(d) = input.discount {
        free_shipping = d.free_shipping;
        let eligible: Vec<usize> = (0..lines.len()).filter(|&i| d.covers(&input.lines[i])).collect();
        match d.value {
            DiscountValue::Percentage { percent_off } => {
                let pct = i128::from(percent_off.clamp(0, 100));
                for &i in &eligible {
                    lines[i].discount = div_half_even(i128::from(lines[i].subtotal) * pct, 100);
                }
            }
            DiscountValue::Fixed { amount_off } => {
                let base: i64 = eligible.iter().map(|&i| lines[i].subtotal).sum();
                let off = amount_off.clamp(0, base);
                if base > 0 {
                    // Largest remainder: floors first, then one unit each to
                    // the lines that lost the most in flooring.
                    let mut rema: Vec<(i128, usize)> = Vec::with_capacity(eligible.len());
                    let mut given = 0;
                    for &i in &eligible {
                        let exact = i128::from(off) * i128::from(lines[i].subtotal);
                        let share = exact / i128::from(base);
                        lines[i].discount = i64::try_from(share).unwrap_or(0);
                        given += lines[i].discount;
                        rema.push((exact % i128::from(base), i));
                    }
                    rema.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                    for (_, i) in rema.into_iter().take(usize::try_from(off - given).unwrap_or(0)) {
                        lines[i].discount += 1;
                    }
                }
            }
            DiscountValue::FreeShipping => {}
        }
    }
    let shipping = if free_shipping { 0 } else { input.shipping.unwrap_or(0).max(0) };
    for line in &mut lines {
        line.tax = tax_of(line.subtotal - line.discount, input.tax, input.prices_include_tax);
        line.total = line.subtotal - line.discount + if input.prices_include_tax { 0 } else { line.tax };
    }
    let shipping_tax = if input.tax.shipping_taxable { tax_of(shipping, input.tax, input.prices_include_tax) } else { 0 };
    let discount: i64 = lines.iter().map(|l| l.discount).sum();
    let tax: i64 = lines.iter().map(|l| l.tax).sum::<i64>() + shipping_tax;
    let total = subtotal - discount + shipping + if input.prices_include_tax { 0 } else { tax };
    Totals { subtotal, discount, shipping, tax, total, lines }
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    PendingPayment,
    PaymentFailed,
    Paid,
    PartiallyFulfilled,
    Fulfilled,
    Delivered,
    Cancelled,
    PartiallyRefunded,
    Refunded,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::PendingPayment,
        Status::PaymentFailed,
        Status::Paid,
        Status::PartiallyFulfilled,
        Status::Fulfilled,
        Status::Delivered,
        Status::Cancelled,
        Status::PartiallyRefunded,
        Status::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::PendingPayment => "pending_payment",
            Status::PaymentFailed => "payment_failed",
            Status::Paid => "paid",
            Status::PartiallyFulfilled => "partially_fulfilled",
            Status::Fulfilled => "fulfilled",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
            Status::PartiallyRefunded => "partially_refunded",
            Status::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether an order may move from `self` to `to`. Refund states may
    /// still be fulfilled (what was not refunded still ships); `cancelled`
    /// and `refunded` are the end.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        match self {
            PendingPayment => matches!(to, Paid | PaymentFailed | Cancelled),
            PaymentFailed => matches!(to, PendingPayment | Cancelled),
            Paid => matches!(to, PartiallyFulfilled | Fulfilled | Cancelled | PartiallyRefunded | Refunded),
            PartiallyFulfilled => matches!(to, PartiallyFulfilled | Fulfilled | PartiallyRefunded | Refunded),
            Fulfilled => matches!(to, Delivered | PartiallyRefunded | Refunded),
            Delivered => matches!(to, PartiallyRefunded | Refunded),
            PartiallyRefunded => matches!(to, PartiallyRefunded | Refunded | PartiallyFulfilled | Fulfilled | Delivered),
            Cancelled | Refunded => false,
        }
    }

    /// Paid for, and money may be refunded.
    pub fn is_paid(self) -> bool {
        use Status::*;
        matches!(self, Paid | PartiallyFulfilled | Fulfilled | Delivered | PartiallyRefunded)
    }

    /// Whether a parcel may leave: paid, and not everything has shipped.
    pub fn can_ship(self) -> bool {
        matches!(self, Status::Paid | Status::PartiallyFulfilled | Status::PartiallyRefunded)
    }

    /// Whether the customer may still cancel: nothing has shipped.
    pub fn cancellable(self) -> bool {
        matches!(self, Status::PendingPayment | Status::PaymentFailed | Status::Paid)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from} cannot become {to}")]
pub struct BadTransition {
    pub from: Status,
    pub to: Status,
}

pub fn transition(from: Status, to: Status) -> Result<Status, BadTransition> {
    if from.can_become(to) { Ok(to) } else { Err(BadTransition { from, to }) }
}

/// The status after shipping: every unit out, or some.
pub fn after_fulfilment(ordered: i64, fulfilled: i64) -> Status {
    if fulfilled >= ordered { Status::Fulfilled } else { Status::PartiallyFulfilled }
}

/// The status after a refund: all the captured money back, or part.
pub fn after_refund(captured: i64, refunded: i64) -> Status {
    if refunded >= captured { Status::Refunded } else { Status::PartiallyRefunded }
}

/// What a refund of some lines is worth: each unit's share of what the line
/// cost (discount and, when added, tax included), rounded half to even.
pub fn refund_for_units(line_total: i64, line_quantity: i64, units: i64) -> i64 {
    if line_quantity <= 0 {
        return 0;
    }
    div_half_even(i128::from(line_total) * i128::from(units), i128::from(line_quantity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(product: &str, unit_price: i64, quantity: i64) -> PricedLine {
        PricedLine { product_id: product.into(), category_ids: vec![format!("cat_{product}")], unit_price, quantity }
    }

    fn discount(value: DiscountValue) -> Discount {
        Discount {
            code: "SAVE".into(),
            value,
            currency: Some("USD".into()),
            product_ids: vec![],
            category_ids: vec![],
            min_subtotal: None,
            free_shipping: false,
            starts_ms: None,
            ends_ms: None,
            usage_limit: None,
            times_used: 0,
            active: true,
        }
    }

    #[test]
    fn half_even_rounding() {
        assert_eq!(div_half_even(5, 2), 2);
        assert_eq!(div_half_even(7, 2), 4);
        assert_eq!(div_half_even(11, 4), 3);
        assert_eq!(div_half_even(10, 4), 2);
        assert_eq!(div_half_even(1, 3), 0);
    }

    #[test]
    fn exclusive_tax_is_added_per_line() {
        let lines = [line("a", 1999, 2), line("b", 500, 1)];
        let t = totals(&TotalsInput {
            lines: &lines,
            discount: None,
            shipping: Some(495),
            tax: TaxRule { rate_bp: 825, shipping_taxable: false },
            prices_include_tax: false,
        });
        // 3998 × 8.25 % = 329.835 → 330; 500 × 8.25 % = 41.25 → 41.
        assert_eq!((t.subtotal, t.tax, t.shipping, t.total), (4498, 371, 495, 4498 + 495 + 371));
    }

    #[test]
    fn inclusive_tax_is_contained() {
        let lines = [line("a", 1190, 1)];
        let t = totals(&TotalsInput {
            lines: &lines,
            discount: None,
            shipping: Some(595),
            tax: TaxRule { rate_bp: 1900, shipping_taxable: true },
            prices_include_tax: true,
        });
        assert_eq!((t.tax, t.total), (190 + 95, 1190 + 595));
    }

    #[test]
    fn fixed_discount_is_split_to_the_unit() {
        let lines = [line("a", 100, 1), line("b", 100, 1), line("c", 100, 1)];
        let d = discount(DiscountValue::Fixed { amount_off: 100 });
        let t = totals(&TotalsInput { lines: &lines, discount: Some(&d), shipping: None, tax: TaxRule::default(), prices_include_tax: false });
        assert_eq!(t.lines.iter().map(|l| l.discount).collect::<Vec<_>>(), vec![34, 33, 33]);
        assert_eq!(t.total, 200);
    }

    #[test]
    fn targeted_discounts_and_free_shipping() {
        let lines = [line("a", 1000, 1), line("b", 1000, 1)];
        let mut d = discount(DiscountValue::Percentage { percent_off: 25 });
        d.product_ids = vec!["b".into()];
        d.free_shipping = true;
        let t = totals(&TotalsInput { lines: &lines, discount: Some(&d), shipping: Some(700), tax: TaxRule::default(), prices_include_tax: false });
        assert_eq!((t.discount, t.shipping, t.total), (250, 0, 1750));
        let mut by_category = discount(DiscountValue::Fixed { amount_off: 5000 });
        by_category.category_ids = vec!["cat_a".into()];
        let t = totals(&TotalsInput { lines: &lines, discount: Some(&by_category), shipping: None, tax: TaxRule::default(), prices_include_tax: false });
        assert_eq!((t.discount, t.lines[1].discount), (1000, 0), "never more than the eligible goods");
    }

    #[test]
    fn discount_rules_are_checked() {
        let lines = [line("a", 1000, 2)];
        let mut d = discount(DiscountValue::Percentage { percent_off: 10 });
        assert_eq!(d.check(&lines, "USD", 10), Ok(()));
        d.min_subtotal = Some(5000);
        assert_eq!(d.check(&lines, "USD", 10), Err(Refusal::MinimumNotMet(5000)));
        d.min_subtotal = None;
        d.starts_ms = Some(20);
        assert_eq!(d.check(&lines, "USD", 10), Err(Refusal::NotStarted));
        d.starts_ms = None;
        d.ends_ms = Some(10);
        assert_eq!(d.check(&lines, "USD", 10), Err(Refusal::Expired));
        d.ends_ms = None;
        d.usage_limit = Some(3);
        d.times_used = 3;
        assert_eq!(d.check(&lines, "USD", 10), Err(Refusal::Exhausted));
        d.usage_limit = None;
        d.product_ids = vec!["z".into()];
        assert_eq!(d.check(&lines, "USD", 10), Err(Refusal::NothingEligible));
        let fixed = discount(DiscountValue::Fixed { amount_off: 5 });
        assert_eq!(fixed.check(&lines, "EUR", 10), Err(Refusal::WrongCurrency));
    }

    #[test]
    fn shipping_quotes() {
        let m = ShippingMethod {
            id: "ship_1".into(),
            name: "Standard".into(),
            countries: vec!["US".into()],
            currency: "USD".into(),
            rate: Rate::Weight(vec![WeightBand { up_to_grams: 500, amount: 400 }, WeightBand { up_to_grams: 2000, amount: 900 }]),
            free_above: Some(10_000),
            min_days: 2,
            max_days: 5,
        };
        assert_eq!(m.quote("US", "USD", 1000, 500), Some(400));
        assert_eq!(m.quote("US", "USD", 1000, 501), Some(900));
        assert_eq!(m.quote("US", "USD", 1000, 2001), None, "too heavy");
        assert_eq!(m.quote("US", "USD", 10_000, 1500), Some(0), "free above the threshold");
        assert_eq!(m.quote("DE", "USD", 1000, 100), None, "not served");
        assert!(parse_bands(vec![]).is_err());
        assert!(parse_bands(vec![WeightBand { up_to_grams: 5, amount: 1 }, WeightBand { up_to_grams: 5, amount: 2 }]).is_err());
    }

    #[test]
    fn every_transition_is_decided() {
        use Status::*;
        let allowed = [
            (PendingPayment, Paid),
            (PendingPayment, PaymentFailed),
            (PendingPayment, Cancelled),
            (PaymentFailed, PendingPayment),
            (PaymentFailed, Cancelled),
            (Paid, PartiallyFulfilled),
            (Paid, Fulfilled),
            (Paid, Cancelled),
            (Paid, PartiallyRefunded),
            (Paid, Refunded),
            (PartiallyFulfilled, PartiallyFulfilled),
            (PartiallyFulfilled, Fulfilled),
            (PartiallyFulfilled, PartiallyRefunded),
            (PartiallyFulfilled, Refunded),
            (Fulfilled, Delivered),
            (Fulfilled, PartiallyRefunded),
            (Fulfilled, Refunded),
            (Delivered, PartiallyRefunded),
            (Delivered, Refunded),
            (PartiallyRefunded, PartiallyRefunded),
            (PartiallyRefunded, Refunded),
            (PartiallyRefunded, PartiallyFulfilled),
            (PartiallyRefunded, Fulfilled),
            (PartiallyRefunded, Delivered),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(transition(from, to).is_ok(), expected, "{from} → {to}");
            }
            assert_eq!(Status::parse(from.as_str()), Some(from));
        }
        assert!(!Fulfilled.cancellable() && Paid.cancellable());
        assert!(PartiallyFulfilled.can_ship() && !Fulfilled.can_ship() && !PendingPayment.can_ship());
        assert_eq!(after_fulfilment(3, 2), PartiallyFulfilled);
        assert_eq!(after_refund(100, 100), Refunded);
    }

    #[test]
    fn quantities_are_held_to_what_can_be_bought() {
        assert_eq!(check_stock(38, Some(38), 0), Ok(()));
        assert_eq!(check_stock(999, Some(38), 0), Err(Shortfall { available: 38, in_cart: 0 }));
        assert_eq!(check_stock(999, None, 0), Ok(()), "uncounted or backordered: no cap");
        assert_eq!(check_stock(1, Some(-2), 0), Err(Shortfall { available: 0, in_cart: 0 }));
        let lamp = item_name("Brass Desk Lamp", "Black");
        assert_eq!(lamp, "Brass Desk Lamp — Black");
        assert_eq!(item_name("Mug", "Default"), "Mug");
        assert_eq!(shortfall_message(&lamp, Shortfall { available: 38, in_cart: 0 }), "Only 38 of Brass Desk Lamp — Black are left");
        assert_eq!(shortfall_message("Mug", Shortfall { available: 1, in_cart: 0 }), "Only 1 of Mug is left");
        assert_eq!(shortfall_message("Mug", Shortfall { available: 3, in_cart: 1 }), "Only 3 of Mug are left, and 1 is already in your cart");
        assert_eq!(shortfall_message("Mug", Shortfall { available: 0, in_cart: 2 }), "Mug is sold out");
    }

    #[test]
    fn inputs_are_parsed() {
        assert_eq!(parse_code(" summer-10 ", "code").unwrap(), "SUMMER-10");
        assert!(parse_code("no spaces", "code").is_err());
        assert_eq!(parse_email(" Ada@Example.COM ", "email").unwrap(), "ada@example.com");
        assert!(parse_email("ada@", "email").is_err());
        assert!(parse_quantity(0, "q").is_err() && parse_quantity(1000, "q").is_err());
    }

    fn lines_strategy() -> impl Strategy<Value = Vec<PricedLine>> {
        prop::collection::vec((0..4usize, 0i64..200_000, 1i64..50), 1..8).prop_map(|v| {
            v.into_iter().map(|(p, price, q)| line(&format!("p{p}"), price, q)).collect()
        })
    }

    fn discount_strategy() -> impl Strategy<Value = Option<Discount>> {
        prop_oneof![
            Just(None),
            (1i64..=100, any::<bool>()).prop_map(|(p, free)| {
                let mut d = discount(DiscountValue::Percentage { percent_off: p });
                d.free_shipping = free;
                Some(d)
            }),
            (0i64..5_000_000, prop::option::of(0..4usize)).prop_map(|(a, only)| {
                let mut d = discount(DiscountValue::Fixed { amount_off: a });
                d.product_ids = only.map(|p| vec![format!("p{p}")]).unwrap_or_default();
                Some(d)
            }),
        ]
    }

    proptest! {
        #[test]
        fn totals_add_up(
            lines in lines_strategy(),
            d in discount_strategy(),
            shipping in prop::option::of(0i64..10_000),
            rate_bp in 0i64..3000,
            shipping_taxable in any::<bool>(),
            inclusive in any::<bool>(),
        ) {
            let tax = TaxRule { rate_bp, shipping_taxable };
            let t = totals(&TotalsInput { lines: &lines, discount: d.as_ref(), shipping, tax, prices_include_tax: inclusive });
            prop_assert_eq!(t.subtotal, lines.iter().map(PricedLine::subtotal).sum::<i64>());
            prop_assert_eq!(t.discount, t.lines.iter().map(|l| l.discount).sum::<i64>());
            prop_assert!(t.discount >= 0 && t.discount <= t.subtotal);
            prop_assert!(t.tax >= 0 && t.shipping >= 0);
            let expected = t.subtotal - t.discount + t.shipping + if inclusive { 0 } else { t.tax };
            prop_assert_eq!(t.total, expected);
            prop_assert!(t.total >= 0);
            for (l, input) in t.lines.iter().zip(&lines) {
                prop_assert!(l.discount <= l.subtotal);
                let taxable = i128::from(l.subtotal - l.discount);
                // Within half a minor unit of the exact tax.
                if inclusive {
                    let net = taxable - i128::from(l.tax);
                    prop_assert!((net * (10_000 + i128::from(rate_bp)) - taxable * 10_000).abs() <= 5_000 + i128::from(rate_bp) / 2);
                } else {
                    prop_assert!((i128::from(l.tax) * 10_000 - taxable * i128::from(rate_bp)).abs() <= 5_000);
                }
                if let Some(d) = &d && let DiscountValue::Percentage { percent_off } = d.value {
                    let exact = i128::from(input.subtotal()) * i128::from(percent_off);
                    prop_assert!((i128::from(l.discount) * 100 - exact).abs() <= 50);
                }
            }
            if let Some(d) = &d && let DiscountValue::Fixed { amount_off } = d.value {
                let eligible: i64 = lines.iter().filter(|l| d.covers(l)).map(PricedLine::subtotal).sum();
                prop_assert_eq!(t.discount, amount_off.min(eligible));
            }
        }

        #[test]
        fn refunds_of_all_units_are_the_line(total in 0i64..10_000_000, quantity in 1i64..100) {
            prop_assert_eq!(refund_for_units(total, quantity, quantity), total);
            let parts: i64 = (0..quantity).map(|_| refund_for_units(total, quantity, 1)).sum();
            prop_assert!((parts - total).abs() <= quantity);
        }
    }
}
