//! Every SQL statement of the orders service. The same text runs on SQLite
//! and PostgreSQL; times are Unix milliseconds, JSON is stored as text.

use platform::db::{Db, DbError, Dialect, Tx, now_ms};
use platform::{on_db, on_tx, on_write};
use sqlx::Row;

use crate::domain::{Discount, DiscountValue, Rate, ShippingMethod, Status, TaxRule, WeightBand};

fn corrupt(what: &str, e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(format!("{what}: {e}"))
}

// Carts

#[derive(Debug, Clone)]
pub struct CartRow {
    pub id: String,
    pub secret_hash: Option<String>,
    pub user_id: Option<String>,
    pub currency: String,
    pub email: Option<String>,
    pub shipping_address: Option<String>,
    pub billing_address: Option<String>,
    pub shipping_method_id: Option<String>,
    pub discount_code: Option<String>,
    pub status: String,
    pub order_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ItemRow {
    pub id: String,
    pub sku: String,
    pub quantity: i64,
    pub unit_price: Option<i64>,
}

const CART_COLUMNS: &str = "id, secret_hash, user_id, currency, email, shipping_address, billing_address, \
     shipping_method_id, discount_code, status, order_id";

macro_rules! cart_row {
    ($r:expr) => {
        CartRow {
            id: $r.try_get(0)?,
            secret_hash: $r.try_get(1)?,
            user_id: $r.try_get(2)?,
            currency: $r.try_get(3)?,
            email: $r.try_get(4)?,
            shipping_address: $r.try_get(5)?,
            billing_address: $r.try_get(6)?,
            shipping_method_id: $r.try_get(7)?,
            discount_code: $r.try_get(8)?,
            status: $r.try_get(9)?,
            order_id: $r.try_get(10)?,
        }
    };
}

pub async fn insert_cart(db: &Db, id: &str, secret_hash: Option<&str>, user: Option<&str>, currency: &str) -> Result<(), DbError> {
    let now = now_ms();
    on_write!(db, pool => sqlx::query(
        "INSERT INTO carts (id, secret_hash, user_id, currency, status, created_ms, updated_ms) VALUES ($1, $2, $3, $4, 'open', $5, $5)")
        .bind(id).bind(secret_hash).bind(user).bind(currency).bind(now).execute(pool).await.map(|_| ()))?;
    Ok(())
}

pub async fn cart(db: &Db, id: &str) -> Result<Option<CartRow>, DbError> {
    let sql = format!("SELECT {CART_COLUMNS} FROM carts WHERE id = $1");
    let row = on_db!(db, pool => {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?;
        r.map(|r| -> Result<CartRow, sqlx::Error> { Ok(cart_row!(r)) }).transpose()
    })?;
    Ok(row)
}

/// A cart with its items, in one statement.
pub async fn cart_with_items(db: &Db, id: &str) -> Result<Option<(CartRow, Vec<ItemRow>)>, DbError> {
    let cart_columns: Vec<String> = CART_COLUMNS.split(", ").map(|c| format!("c.{}", c.trim())).collect();
    let sql = format!(
        "SELECT {}, i.id, i.sku, i.quantity, i.unit_price FROM carts c LEFT JOIN cart_items i ON i.cart_id = c.id \
         WHERE c.id = $1 ORDER BY i.id",
        cart_columns.join(", ")
    );
    let found = on_db!(db, pool => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(pool).await?;
        let mut found: Option<(CartRow, Vec<ItemRow>)> = None;
        for r in &rows {
            if found.is_none() {
                found = Some((cart_row!(r), Vec::new()));
            }
            let item: (Option<String>, Option<String>, Option<i64>, Option<i64>) = (r.try_get(11)?, r.try_get(12)?, r.try_get(13)?, r.try_get(14)?);
            if let (Some((_, items)), (Some(id), Some(sku), Some(quantity), unit_price)) = (found.as_mut(), item) {
                items.push(ItemRow { id, sku, quantity, unit_price });
            }
        }
        Ok::<_, sqlx::Error>(found)
    })?;
    Ok(found)
}

/// A customer's open cart, the newest if there are several.
pub async fn open_cart_of(db: &Db, user: &str) -> Result<Option<CartRow>, DbError> {
    let sql = format!("SELECT {CART_COLUMNS} FROM carts WHERE user_id = $1 AND status = 'open' ORDER BY id DESC LIMIT 1");
    let row = on_db!(db, pool => {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user).fetch_optional(pool).await?;
        r.map(|r| -> Result<CartRow, sqlx::Error> { Ok(cart_row!(r)) }).transpose()
    })?;
    Ok(row)
}

pub async fn items(db: &Db, cart: &str) -> Result<Vec<ItemRow>, DbError> {
    let rows: Vec<(String, String, i64, Option<i64>)> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, sku, quantity, unit_price FROM cart_items WHERE cart_id = $1 ORDER BY id")
        .bind(cart).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(|(id, sku, quantity, unit_price)| ItemRow { id, sku, quantity, unit_price }).collect())
}

/// Adds `quantity` of `sku` (or more of it, up to `max`); returns the item id.
pub async fn add_item(db: &Db, cart: &str, id: &str, sku: &str, quantity: i64, unit_price: Option<i64>, max: i64) -> Result<String, DbError> {
    let row: (String,) = on_write!(db, pool => sqlx::query_as(
        "INSERT INTO cart_items (id, cart_id, sku, quantity, unit_price) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (cart_id, sku) DO UPDATE SET quantity = CASE WHEN cart_items.quantity + excluded.quantity > $6 \
         THEN $6 ELSE cart_items.quantity + excluded.quantity END, unit_price = excluded.unit_price RETURNING id")
        .bind(id).bind(cart).bind(sku).bind(quantity).bind(unit_price).bind(max).fetch_one(pool).await)?;
    touch_cart(db, cart).await?;
    Ok(row.0)
}

pub async fn set_quantity(db: &Db, cart: &str, item: &str, quantity: i64, unit_price: Option<i64>) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE cart_items SET quantity = $1, unit_price = $2 WHERE id = $3 AND cart_id = $4")
        .bind(quantity).bind(unit_price).bind(item).bind(cart).execute(pool).await.map(|r| r.rows_affected()))?;
    touch_cart(db, cart).await?;
    Ok(n == 1)
}

pub async fn remove_item(db: &Db, cart: &str, item: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query("DELETE FROM cart_items WHERE id = $1 AND cart_id = $2")
        .bind(item).bind(cart).execute(pool).await.map(|r| r.rows_affected()))?;
    touch_cart(db, cart).await?;
    Ok(n == 1)
}

/// The shopper has now seen these prices.
pub async fn acknowledge_prices(db: &Db, cart: &str, prices: &[(String, Option<i64>)]) -> Result<(), DbError> {
    for (sku, price) in prices {
        on_write!(db, pool => sqlx::query("UPDATE cart_items SET unit_price = $1 WHERE cart_id = $2 AND sku = $3")
            .bind(price).bind(cart).bind(sku).execute(pool).await.map(|_| ()))?;
    }
    Ok(())
}

async fn touch_cart(db: &Db, cart: &str) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query("UPDATE carts SET updated_ms = $1 WHERE id = $2")
        .bind(now_ms()).bind(cart).execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// A cart field the shopper sets (email, addresses, method, discount code).
#[derive(Debug, Clone, Copy)]
pub enum CartField {
    Email,
    ShippingAddress,
    BillingAddress,
    ShippingMethod,
    DiscountCode,
}

impl CartField {
    fn column(self) -> &'static str {
        match self {
            CartField::Email => "email",
            CartField::ShippingAddress => "shipping_address",
            CartField::BillingAddress => "billing_address",
            CartField::ShippingMethod => "shipping_method_id",
            CartField::DiscountCode => "discount_code",
        }
    }
}

/// Sets a field of an open cart; false when the cart is no longer open.
pub async fn set_cart_field(db: &Db, cart: &str, field: CartField, value: Option<&str>) -> Result<bool, DbError> {
    let sql = format!("UPDATE carts SET {} = $1, updated_ms = $2 WHERE id = $3 AND status = 'open'", field.column());
    let n = on_write!(db, pool => sqlx::query(sqlx::AssertSqlSafe(sql)).bind(value).bind(now_ms()).bind(cart)
        .execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Moves a guest cart's items into `into` (quantities add up, capped at
/// `max`) and closes it as merged, in one transaction.
pub async fn merge_carts(db: &Db, from: &str, into: &str, max: i64) -> Result<bool, DbError> {
    let mut tx = db.begin().await?;
    let closed = on_tx!(&mut tx, c => sqlx::query(
        "UPDATE carts SET status = 'merged', updated_ms = $1 WHERE id = $2 AND status = 'open'")
        .bind(now_ms()).bind(from).execute(c).await.map(|r| r.rows_affected()))?;
    if closed != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    let moving: Vec<(String, i64, Option<i64>)> = on_tx!(&mut tx, c => sqlx::query_as(
        "SELECT sku, quantity, unit_price FROM cart_items WHERE cart_id = $1 ORDER BY id")
        .bind(from).fetch_all(c).await)?;
    for (sku, quantity, unit_price) in moving {
        let id = kernel::id::CartItemId::new().to_string();
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO cart_items (id, cart_id, sku, quantity, unit_price) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (cart_id, sku) DO UPDATE SET quantity = CASE WHEN cart_items.quantity + excluded.quantity > $6 \
             THEN $6 ELSE cart_items.quantity + excluded.quantity END")
            .bind(id).bind(into).bind(sku).bind(quantity).bind(unit_price).bind(max).execute(c).await.map(|_| ()))?;
    }
    // What the customer's cart lacks, the guest cart brings.
    on_tx!(&mut tx, c => sqlx::query(
        "UPDATE carts SET email = COALESCE(carts.email, g.email), \
         shipping_address = COALESCE(carts.shipping_address, g.shipping_address), \
         billing_address = COALESCE(carts.billing_address, g.billing_address), \
         shipping_method_id = COALESCE(carts.shipping_method_id, g.shipping_method_id), \
         discount_code = COALESCE(carts.discount_code, g.discount_code), updated_ms = $1 \
         FROM (SELECT email, shipping_address, billing_address, shipping_method_id, discount_code FROM carts WHERE id = $2) AS g \
         WHERE carts.id = $3")
        .bind(now_ms()).bind(from).bind(into).execute(c).await.map(|_| ()))?;
    tx.commit().await?;
    Ok(true)
}

/// A guest cart becomes the customer's own.
pub async fn adopt_cart(db: &Db, cart: &str, user: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE carts SET user_id = $1, secret_hash = NULL, updated_ms = $2 WHERE id = $3 AND status = 'open' AND user_id IS NULL")
        .bind(user).bind(now_ms()).bind(cart).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

// Discounts

#[derive(Debug, Clone)]
pub struct DiscountRow {
    pub id: String,
    pub rule: Discount,
    pub per_customer_limit: Option<i64>,
    pub created_ms: i64,
}

const DISCOUNT_COLUMNS: &str = "id, code, kind, percent_off, amount_off, currency, product_ids, category_ids, min_subtotal, \
     free_shipping, starts_ms, ends_ms, usage_limit, per_customer_limit, times_used, active, created_ms";

macro_rules! discount_row {
    ($r:expr) => {{
        let kind: String = $r.try_get(2)?;
        let percent: Option<i64> = $r.try_get(3)?;
        let amount: Option<i64> = $r.try_get(4)?;
        let products: String = $r.try_get(6)?;
        let categories: String = $r.try_get(7)?;
        (
            DiscountRow {
                id: $r.try_get(0)?,
                rule: Discount {
                    code: $r.try_get(1)?,
                    value: match kind.as_str() {
                        "percentage" => DiscountValue::Percentage { percent_off: percent.unwrap_or(0) },
                        "fixed" => DiscountValue::Fixed { amount_off: amount.unwrap_or(0) },
                        _ => DiscountValue::FreeShipping,
                    },
                    currency: $r.try_get(5)?,
                    product_ids: Vec::new(),
                    category_ids: Vec::new(),
                    min_subtotal: $r.try_get(8)?,
                    free_shipping: $r.try_get(9)?,
                    starts_ms: $r.try_get(10)?,
                    ends_ms: $r.try_get(11)?,
                    usage_limit: $r.try_get(12)?,
                    times_used: $r.try_get(14)?,
                    active: $r.try_get(15)?,
                },
                per_customer_limit: $r.try_get(13)?,
                created_ms: $r.try_get(16)?,
            },
            products,
            categories,
        )
    }};
}

fn finish_discount((mut row, products, categories): (DiscountRow, String, String)) -> Result<DiscountRow, DbError> {
    row.rule.product_ids = serde_json::from_str(&products).map_err(|e| corrupt("discount products", e))?;
    row.rule.category_ids = serde_json::from_str(&categories).map_err(|e| corrupt("discount categories", e))?;
    Ok(row)
}

pub async fn discount_by_code(db: &Db, code: &str) -> Result<Option<DiscountRow>, DbError> {
    let sql = format!("SELECT {DISCOUNT_COLUMNS} FROM discounts WHERE code = $1");
    let row = on_db!(db, pool => {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(code).fetch_optional(pool).await?;
        r.map(|r| -> Result<_, sqlx::Error> { Ok(discount_row!(r)) }).transpose()
    })?;
    row.map(finish_discount).transpose()
}

pub async fn discount(db: &Db, id: &str) -> Result<Option<DiscountRow>, DbError> {
    let sql = format!("SELECT {DISCOUNT_COLUMNS} FROM discounts WHERE id = $1");
    let row = on_db!(db, pool => {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?;
        r.map(|r| -> Result<_, sqlx::Error> { Ok(discount_row!(r)) }).transpose()
    })?;
    row.map(finish_discount).transpose()
}

pub async fn discounts(db: &Db, after: Option<&str>, limit: u32) -> Result<Vec<DiscountRow>, DbError> {
    let sql = format!("SELECT {DISCOUNT_COLUMNS} FROM discounts WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2");
    let rows = on_db!(db, pool => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(i64::from(limit) + 1).fetch_all(pool).await?;
        rows.iter().map(|r| -> Result<_, sqlx::Error> { Ok(discount_row!(r)) }).collect::<Result<Vec<_>, _>>()
    })?;
    rows.into_iter().map(finish_discount).collect()
}

/// Inserts or replaces a discount (by id).
pub async fn save_discount(db: &Db, row: &DiscountRow) -> Result<(), DbError> {
    let d = &row.rule;
    let (kind, percent, amount) = match d.value {
        DiscountValue::Percentage { percent_off } => ("percentage", Some(percent_off), None),
        DiscountValue::Fixed { amount_off } => ("fixed", None, Some(amount_off)),
        DiscountValue::FreeShipping => ("free_shipping", None, None),
    };
    let products = serde_json::to_string(&d.product_ids).map_err(|e| corrupt("discount products", e))?;
    let categories = serde_json::to_string(&d.category_ids).map_err(|e| corrupt("discount categories", e))?;
    on_write!(db, pool => sqlx::query(
        "INSERT INTO discounts (id, code, kind, percent_off, amount_off, currency, product_ids, category_ids, min_subtotal, \
         free_shipping, starts_ms, ends_ms, usage_limit, per_customer_limit, active, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (id) DO UPDATE SET code = excluded.code, kind = excluded.kind, percent_off = excluded.percent_off, \
         amount_off = excluded.amount_off, currency = excluded.currency, product_ids = excluded.product_ids, \
         category_ids = excluded.category_ids, min_subtotal = excluded.min_subtotal, free_shipping = excluded.free_shipping, \
         starts_ms = excluded.starts_ms, ends_ms = excluded.ends_ms, usage_limit = excluded.usage_limit, \
         per_customer_limit = excluded.per_customer_limit, active = excluded.active")
        .bind(&row.id).bind(&d.code).bind(kind).bind(percent).bind(amount).bind(&d.currency)
        .bind(products).bind(categories).bind(d.min_subtotal).bind(d.free_shipping).bind(d.starts_ms)
        .bind(d.ends_ms).bind(d.usage_limit).bind(row.per_customer_limit).bind(d.active).bind(row.created_ms)
        .execute(pool).await.map(|_| ()))?;
    Ok(())
}

pub async fn delete_discount(db: &Db, id: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query("DELETE FROM discounts WHERE id = $1").bind(id)
        .execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Takes one use of a code, for the whole shop and for each of the keys a
/// customer is known by (account, mailbox), or none: conditional writes, so
/// concurrent checkouts cannot exceed a limit (the first write locks the
/// discount's row until commit). On any refusal the caller rolls back.
pub async fn use_discount(tx: &mut Tx, id: &str, customers: &[String], per_customer: Option<i64>) -> Result<UseOutcome, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE discounts SET times_used = times_used + 1 WHERE id = $1 AND (usage_limit IS NULL OR times_used < usage_limit)")
        .bind(id).execute(c).await.map(|r| r.rows_affected()))?;
    if n != 1 {
        return Ok(UseOutcome::Exhausted);
    }
    let limit = per_customer.unwrap_or(i64::MAX);
    for customer in customers {
        let n = on_tx!(tx, c => sqlx::query(
            "INSERT INTO discount_uses (discount_id, customer_key, uses) VALUES ($1, $2, 1) \
             ON CONFLICT (discount_id, customer_key) DO UPDATE SET uses = discount_uses.uses + 1 WHERE discount_uses.uses < $3")
            .bind(id).bind(customer).bind(limit).execute(c).await.map(|r| r.rows_affected()))?;
        if n != 1 {
            return Ok(UseOutcome::CustomerLimit);
        }
    }
    Ok(UseOutcome::Taken)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseOutcome {
    Taken,
    Exhausted,
    CustomerLimit,
}

/// Gives a use back (the order was cancelled), to the shop and to each of
/// the customer's keys.
pub async fn return_discount(tx: &mut Tx, id: &str, customers: &[String]) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE discounts SET times_used = times_used - 1 WHERE id = $1 AND times_used > 0")
        .bind(id).execute(c).await.map(|_| ()))?;
    for customer in customers {
        on_tx!(tx, c => sqlx::query(
            "UPDATE discount_uses SET uses = uses - 1 WHERE discount_id = $1 AND customer_key = $2 AND uses > 0")
            .bind(id).bind(customer).execute(c).await.map(|_| ()))?;
    }
    Ok(())
}

// Shipping and taxes

#[derive(Debug, Clone)]
pub struct ShippingRow {
    pub method: ShippingMethod,
    pub active: bool,
}

type ShippingTuple = (String, String, String, String, Option<i64>, Option<String>, Option<i64>, i64, i64, bool);

fn shipping_from(t: ShippingTuple) -> Result<ShippingRow, DbError> {
    let (id, name, countries, currency, flat, bands, free_above, min_days, max_days, active) = t;
    let rate = match (flat, bands) {
        (Some(amount), _) => Rate::Flat(amount),
        (None, Some(bands)) => {
            Rate::Weight(serde_json::from_str::<Vec<WeightBand>>(&bands).map_err(|e| corrupt("weight bands", e))?)
        }
        (None, None) => return Err(corrupt("shipping method", "neither a flat rate nor bands")),
    };
    let countries = countries.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect();
    Ok(ShippingRow { method: ShippingMethod { id, name, countries, currency, rate, free_above, min_days, max_days }, active })
}

const SHIPPING_COLUMNS: &str =
    "SELECT id, name, countries, currency, flat_amount, weight_bands, free_above, min_days, max_days, active FROM shipping_methods";

pub async fn shipping_methods(db: &Db) -> Result<Vec<ShippingRow>, DbError> {
    let sql = format!("{SHIPPING_COLUMNS} ORDER BY name, id");
    let rows: Vec<ShippingTuple> = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await)?;
    rows.into_iter().map(shipping_from).collect()
}

pub async fn shipping_method(db: &Db, id: &str) -> Result<Option<ShippingRow>, DbError> {
    let sql = format!("{SHIPPING_COLUMNS} WHERE id = $1");
    let row: Option<ShippingTuple> =
        on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await)?;
    row.map(shipping_from).transpose()
}

pub async fn save_shipping_method(db: &Db, row: &ShippingRow) -> Result<(), DbError> {
    let m = &row.method;
    let (flat, bands) = match &m.rate {
        Rate::Flat(a) => (Some(*a), None),
        Rate::Weight(b) => (None, Some(serde_json::to_string(b).map_err(|e| corrupt("weight bands", e))?)),
    };
    on_write!(db, pool => sqlx::query(
        "INSERT INTO shipping_methods (id, name, countries, currency, flat_amount, weight_bands, free_above, min_days, \
         max_days, active, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, countries = excluded.countries, currency = excluded.currency, \
         flat_amount = excluded.flat_amount, weight_bands = excluded.weight_bands, free_above = excluded.free_above, \
         min_days = excluded.min_days, max_days = excluded.max_days, active = excluded.active")
        .bind(&m.id).bind(&m.name).bind(m.countries.join(",")).bind(&m.currency).bind(flat).bind(bands)
        .bind(m.free_above).bind(m.min_days).bind(m.max_days).bind(row.active).bind(now_ms())
        .execute(pool).await.map(|_| ()))?;
    Ok(())
}

pub async fn delete_shipping_method(db: &Db, id: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query("DELETE FROM shipping_methods WHERE id = $1").bind(id)
        .execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// (id, country, region, name, rate_bp, shipping_taxable)
pub type TaxRow = (String, String, String, String, i64, bool);

pub async fn tax_rates(db: &Db) -> Result<Vec<TaxRow>, DbError> {
    let rows = on_db!(db, pool => sqlx::query_as(
        "SELECT id, country, region, name, rate_bp, shipping_taxable FROM tax_rates ORDER BY country, region")
        .fetch_all(pool).await)?;
    Ok(rows)
}

/// The rate for an address: its region's if set, else its country's.
/// The tax rate for country `$1` and region `$2` (`''` for none): the
/// region's own, else the country's.
const TAX_RATE: &str = "SELECT rate_bp, shipping_taxable FROM tax_rates WHERE country = $1 AND (region = $2 OR region = '') \
     ORDER BY region DESC LIMIT 1";

pub async fn tax_for(db: &Db, country: &str, region: Option<&str>) -> Result<TaxRule, DbError> {
    let row: Option<(i64, bool)> = on_db!(db, pool => sqlx::query_as(TAX_RATE)
        .bind(country).bind(region.unwrap_or("")).fetch_optional(pool).await)?;
    Ok(row.map(|(rate_bp, shipping_taxable)| TaxRule { rate_bp, shipping_taxable }).unwrap_or_default())
}

/// [`tax_for`] and [`shipping_method`] in one statement.
pub async fn tax_and_method(db: &Db, country: &str, region: Option<&str>, method: &str) -> Result<(TaxRule, Option<ShippingRow>), DbError> {
    type Row = (
        Option<String>, Option<String>, Option<String>, Option<String>, Option<i64>, Option<String>, Option<i64>, Option<i64>,
        Option<i64>, Option<bool>, Option<i64>, Option<bool>,
    );
    let sql = format!(
        "SELECT m.id, m.name, m.countries, m.currency, m.flat_amount, m.weight_bands, m.free_above, m.min_days, m.max_days, \
         m.active, t.rate_bp, t.shipping_taxable FROM (SELECT 1 AS one) x \
         LEFT JOIN shipping_methods m ON m.id = $3 LEFT JOIN ({TAX_RATE}) t ON TRUE"
    );
    let row: Row = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
        .bind(country).bind(region.unwrap_or("")).bind(method).fetch_one(pool).await)?;
    let (id, name, countries, currency, flat, bands, free_above, min_days, max_days, active, rate_bp, shipping_taxable) = row;
    let tax = match (rate_bp, shipping_taxable) {
        (Some(rate_bp), Some(shipping_taxable)) => TaxRule { rate_bp, shipping_taxable },
        _ => TaxRule::default(),
    };
    let method = match (id, name, countries, currency, min_days, max_days, active) {
        (Some(id), Some(name), Some(countries), Some(currency), Some(min_days), Some(max_days), Some(active)) => {
            Some(shipping_from((id, name, countries, currency, flat, bands, free_above, min_days, max_days, active))?)
        }
        _ => None,
    };
    Ok((tax, method))
}

pub async fn save_tax_rate(db: &Db, row: &TaxRow) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query(
        "INSERT INTO tax_rates (id, country, region, name, rate_bp, shipping_taxable) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO UPDATE SET country = excluded.country, region = excluded.region, name = excluded.name, \
         rate_bp = excluded.rate_bp, shipping_taxable = excluded.shipping_taxable")
        .bind(&row.0).bind(&row.1).bind(&row.2).bind(&row.3).bind(row.4).bind(row.5)
        .execute(pool).await.map(|_| ()))?;
    Ok(())
}

pub async fn delete_tax_rate(db: &Db, id: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query("DELETE FROM tax_rates WHERE id = $1").bind(id)
        .execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

// Orders

#[derive(Debug, Clone)]
pub struct OrderRow {
    pub id: String,
    pub number: i64,
    pub cart_id: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub lookup_hash: String,
    pub status: Status,
    pub currency: String,
    pub subtotal: i64,
    pub discount_total: i64,
    pub shipping_total: i64,
    pub tax_total: i64,
    pub total: i64,
    pub prices_include_tax: bool,
    pub shipping_address: Option<String>,
    pub billing_address: Option<String>,
    pub shipping_method: Option<String>,
    pub discount_id: Option<String>,
    pub discount_code: Option<String>,
    pub customer_key: String,
    pub capture_mode: String,
    pub attempt: i64,
    pub stock: String,
    pub captured: i64,
    pub refunded: i64,
    pub placed_ms: i64,
    pub paid_ms: Option<i64>,
    pub updated_ms: i64,
}

const ORDER_COLUMNS: &str = "id, number, cart_id, user_id, email, lookup_hash, status, currency, subtotal, discount_total, \
     shipping_total, tax_total, total, prices_include_tax, shipping_address, billing_address, shipping_method, discount_id, \
     discount_code, customer_key, capture_mode, attempt, stock, captured, refunded, placed_ms, paid_ms, updated_ms";

macro_rules! order_row {
    ($r:expr) => {{
        let status: String = $r.try_get(6)?;
        OrderRow {
            id: $r.try_get(0)?,
            number: $r.try_get(1)?,
            cart_id: $r.try_get(2)?,
            user_id: $r.try_get(3)?,
            email: $r.try_get(4)?,
            lookup_hash: $r.try_get(5)?,
            status: Status::parse(&status).ok_or_else(|| sqlx::Error::Decode(format!("order status `{status}`").into()))?,
            currency: $r.try_get(7)?,
            subtotal: $r.try_get(8)?,
            discount_total: $r.try_get(9)?,
            shipping_total: $r.try_get(10)?,
            tax_total: $r.try_get(11)?,
            total: $r.try_get(12)?,
            prices_include_tax: $r.try_get(13)?,
            shipping_address: $r.try_get(14)?,
            billing_address: $r.try_get(15)?,
            shipping_method: $r.try_get(16)?,
            discount_id: $r.try_get(17)?,
            discount_code: $r.try_get(18)?,
            customer_key: $r.try_get(19)?,
            capture_mode: $r.try_get(20)?,
            attempt: $r.try_get(21)?,
            stock: $r.try_get(22)?,
            captured: $r.try_get(23)?,
            refunded: $r.try_get(24)?,
            placed_ms: $r.try_get(25)?,
            paid_ms: $r.try_get(26)?,
            updated_ms: $r.try_get(27)?,
        }
    }};
}

#[derive(Debug, Clone)]
pub struct LineRow {
    pub line_no: i64,
    pub sku: String,
    pub product_id: String,
    pub variant_id: String,
    pub title: String,
    pub variant_title: String,
    pub unit_price: i64,
    pub quantity: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
    pub fulfilled: i64,
    pub returned: i64,
    pub refunded: i64,
}

/// The next order number: PostgreSQL's sequence (no row lock, so checkouts
/// never queue on it); on SQLite, whose writes are one at a time anyway, the
/// `counters` row.
/// Writes a new order, numbered in the same statement (the next of the
/// `order_numbers` sequence on PostgreSQL, of the `counters` row that a
/// trigger moves on on SQLite); answers its number (`o.number` is not written).
pub async fn insert_order(tx: &mut Tx, o: &OrderRow) -> Result<i64, DbError> {
    let next = match tx.dialect() {
        Dialect::Postgres => "nextval('order_numbers')",
        Dialect::Sqlite => "(SELECT value + 1 FROM counters WHERE name = 'order_number')",
    };
    let sql = format!(
        "INSERT INTO orders ({ORDER_COLUMNS}) VALUES ($1, {next}, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
         $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27) RETURNING number"
    );
    let number: i64 = on_tx!(tx, c => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(&o.id).bind(&o.cart_id).bind(&o.user_id).bind(&o.email).bind(&o.lookup_hash)
        .bind(o.status.as_str()).bind(&o.currency).bind(o.subtotal).bind(o.discount_total).bind(o.shipping_total)
        .bind(o.tax_total).bind(o.total).bind(o.prices_include_tax).bind(&o.shipping_address).bind(&o.billing_address)
        .bind(&o.shipping_method).bind(&o.discount_id).bind(&o.discount_code).bind(&o.customer_key).bind(&o.capture_mode)
        .bind(o.attempt).bind(&o.stock).bind(o.captured).bind(o.refunded).bind(o.placed_ms).bind(o.paid_ms).bind(o.updated_ms)
        .fetch_one(c).await)?;
    Ok(number)
}

pub async fn insert_line(tx: &mut Tx, order: &str, l: &LineRow) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO order_lines (order_id, line_no, sku, product_id, variant_id, title, variant_title, unit_price, quantity, \
         discount, tax, total) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
        .bind(order).bind(l.line_no).bind(&l.sku).bind(&l.product_id).bind(&l.variant_id).bind(&l.title)
        .bind(&l.variant_title).bind(l.unit_price).bind(l.quantity).bind(l.discount).bind(l.tax).bind(l.total)
        .execute(c).await.map(|_| ()))?;
    Ok(())
}

/// Closes an open cart as ordered; false when another checkout got there first.
pub async fn close_cart(tx: &mut Tx, cart: &str, order: &str) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE carts SET status = 'ordered', order_id = $1, updated_ms = $2 WHERE id = $3 AND status = 'open'")
        .bind(order).bind(now_ms()).bind(cart).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn order(db: &Db, id: &str) -> Result<Option<OrderRow>, DbError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
    let row = on_db!(db, pool => {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?;
        r.map(|r| -> Result<OrderRow, sqlx::Error> { Ok(order_row!(r)) }).transpose()
    })?;
    Ok(row)
}

pub async fn order_in(tx: &mut Tx, id: &str) -> Result<Option<OrderRow>, DbError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
    let row = on_tx!(tx, c => {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(c).await?;
        r.map(|r| -> Result<OrderRow, sqlx::Error> { Ok(order_row!(r)) }).transpose()
    })?;
    Ok(row)
}

/// What a staff order list filters on.
#[derive(Debug, Default, Clone)]
pub struct OrderFilter<'a> {
    pub user_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub email: Option<&'a str>,
    pub placed_from_ms: Option<i64>,
    pub placed_to_ms: Option<i64>,
    pub min_total: Option<i64>,
    pub max_total: Option<i64>,
    pub after: Option<&'a str>,
    pub limit: u32,
}

/// Newest first, `limit + 1` rows.
pub async fn orders(db: &Db, f: &OrderFilter<'_>) -> Result<Vec<OrderRow>, DbError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR status = $2) \
         AND ($3 IS NULL OR email = $3) AND ($4 IS NULL OR placed_ms >= $4) AND ($5 IS NULL OR placed_ms < $5) \
         AND ($6 IS NULL OR total >= $6) AND ($7 IS NULL OR total <= $7) AND ($8 IS NULL OR id < $8) \
         ORDER BY id DESC LIMIT $9"
    );
    let rows = on_db!(db, pool => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(f.user_id).bind(f.status).bind(f.email).bind(f.placed_from_ms).bind(f.placed_to_ms)
            .bind(f.min_total).bind(f.max_total).bind(f.after).bind(i64::from(f.limit) + 1)
            .fetch_all(pool).await?;
        rows.iter().map(|r| -> Result<OrderRow, sqlx::Error> { Ok(order_row!(r)) }).collect::<Result<Vec<_>, _>>()
    })?;
    Ok(rows)
}

/// Orders in `statuses` untouched since `before_ms` (the reconciler's work).
pub async fn stale_orders(db: &Db, statuses: &[&str], stock: Option<&str>, before_ms: i64, limit: i64) -> Result<Vec<String>, DbError> {
    let list = statuses.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT id FROM orders WHERE status IN ({list}) AND ($1 IS NULL OR stock = $1) AND updated_ms < $2 ORDER BY updated_ms LIMIT $3"
    );
    let rows: Vec<(String,)> = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(stock).bind(before_ms).bind(limit).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

pub async fn lines(db: &Db, order: &str) -> Result<Vec<LineRow>, DbError> {
    type T = (i64, String, String, String, String, String, i64, i64, i64, i64, i64, i64, i64, i64);
    let rows: Vec<T> = on_db!(db, pool => sqlx::query_as(
        "SELECT line_no, sku, product_id, variant_id, title, variant_title, unit_price, quantity, discount, tax, total, \
         fulfilled, returned, refunded FROM order_lines WHERE order_id = $1 ORDER BY line_no")
        .bind(order).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(|(line_no, sku, product_id, variant_id, title, variant_title, unit_price, quantity, discount, tax, total, fulfilled, returned, refunded)| LineRow {
            line_no, sku, product_id, variant_id, title, variant_title, unit_price, quantity, discount, tax, total, fulfilled, returned, refunded,
        })
        .collect())
}

/// Moves an order from `from` to `to` (checked by the caller against the
/// state machine); false when it was no longer `from`.
pub async fn set_status(tx: &mut Tx, order: &str, from: Status, to: Status) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query("UPDATE orders SET status = $1, updated_ms = $2 WHERE id = $3 AND status = $4")
        .bind(to.as_str()).bind(now_ms()).bind(order).bind(from.as_str()).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Where the stock of the order's attempt `attempt` stands (one statement, no transaction).
pub async fn set_stock(db: &Db, order: &str, attempt: i64, stock: &str) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query("UPDATE orders SET stock = $1 WHERE id = $2 AND attempt = $3")
        .bind(stock).bind(order).bind(attempt).execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// Marks a pending order paid; answers when (`None` when it was not pending).
pub async fn mark_paid(tx: &mut Tx, order: &str, captured: i64) -> Result<Option<i64>, DbError> {
    let now = now_ms();
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE orders SET status = 'paid', captured = $1, paid_ms = $2, updated_ms = $2 WHERE id = $3 AND status = 'pending_payment'")
        .bind(captured).bind(now).bind(order).execute(c).await.map(|r| r.rows_affected()))?;
    Ok((n == 1).then_some(now))
}

pub async fn add_captured(tx: &mut Tx, order: &str, amount: i64) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE orders SET captured = captured + $1, updated_ms = $2 WHERE id = $3")
        .bind(amount).bind(now_ms()).bind(order).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// A new payment attempt on a failed order; false when another retry won.
pub async fn retry_order(tx: &mut Tx, order: &str, attempt: i64) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE orders SET status = 'pending_payment', attempt = attempt + 1, stock = 'held', updated_ms = $1 \
         WHERE id = $2 AND status = 'payment_failed' AND attempt = $3")
        .bind(now_ms()).bind(order).bind(attempt).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Takes `amount` more off what may still be refunded; false when it would
/// exceed what was captured.
pub async fn add_refunded(tx: &mut Tx, order: &str, amount: i64) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE orders SET refunded = refunded + $1, updated_ms = $2 WHERE id = $3 AND refunded + $1 <= captured")
        .bind(amount).bind(now_ms()).bind(order).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn add_line_counts(tx: &mut Tx, order: &str, line_no: i64, column: LineCount, n: i64) -> Result<bool, DbError> {
    let col = match column {
        LineCount::Fulfilled => "fulfilled",
        LineCount::Returned => "returned",
        LineCount::Refunded => "refunded",
    };
    let sql = format!("UPDATE order_lines SET {col} = {col} + $1 WHERE order_id = $2 AND line_no = $3 AND {col} + $1 <= quantity");
    let done = on_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(sql)).bind(n).bind(order).bind(line_no)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

#[derive(Debug, Clone, Copy)]
pub enum LineCount {
    Fulfilled,
    Returned,
    Refunded,
}

pub async fn line_totals(tx: &mut Tx, order: &str) -> Result<(i64, i64), DbError> {
    let row: (Option<i64>, Option<i64>) = on_tx!(tx, c => sqlx::query_as(
        "SELECT CAST(SUM(quantity) AS BIGINT), CAST(SUM(fulfilled) AS BIGINT) FROM order_lines WHERE order_id = $1")
        .bind(order).fetch_one(c).await)?;
    Ok((row.0.unwrap_or(0), row.1.unwrap_or(0)))
}

/// One entry on an order's timeline.
/// Notes on an order's timeline; answers the entry as written.
pub async fn record(tx: &mut Tx, order: &str, kind: &str, actor: Option<&str>, data: &serde_json::Value) -> Result<TimelineRow, DbError> {
    let id = kernel::id::EventId::new().to_string();
    let entry: TimelineRow = (now_ms(), kind.to_owned(), actor.map(str::to_owned), data.to_string());
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO order_timeline (id, order_id, at_ms, kind, actor, data) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id).bind(order).bind(entry.0).bind(&entry.1).bind(&entry.2).bind(&entry.3)
        .execute(c).await.map(|_| ()))?;
    Ok(entry)
}

/// An order's timeline entry: (at_ms, kind, actor, data).
pub type TimelineRow = (i64, String, Option<String>, String);

pub async fn timeline(db: &Db, order: &str) -> Result<Vec<TimelineRow>, DbError> {
    let rows = on_db!(db, pool => sqlx::query_as(
        "SELECT at_ms, kind, actor, data FROM order_timeline WHERE order_id = $1 ORDER BY id")
        .bind(order).fetch_all(pool).await)?;
    Ok(rows)
}

// Payments

#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub id: String,
    pub order_id: String,
    pub attempt: i64,
    pub provider: String,
    pub provider_ref: Option<String>,
    pub token: Option<String>,
    pub status: String,
    pub amount: i64,
    pub captured: i64,
    pub refunded: i64,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub next_action_url: Option<String>,
    /// How it is paid, as a receipt says it ("Visa ending 4242"): what
    /// remains of the token once it is dropped.
    pub method: Option<String>,
}

impl PaymentRow {
    /// A new attempt to pay an order, before the provider is asked.
    pub fn attempt(order_id: &str, attempt: i64, provider: &str, token: &str, amount: i64) -> PaymentRow {
        PaymentRow {
            id: kernel::id::PaymentId::new().to_string(),
            order_id: order_id.to_owned(),
            attempt,
            provider: provider.to_owned(),
            provider_ref: None,
            token: Some(token.to_owned()),
            method: Some(crate::gateway::payment_method_label(provider, Some(token))),
            status: "pending".into(),
            amount,
            captured: 0,
            refunded: 0,
            failure_code: None,
            failure_message: None,
            next_action_url: None,
        }
    }
}

const PAYMENT_COLUMNS: &str = "id, order_id, attempt, provider, provider_ref, token, status, amount, captured, refunded, \
     failure_code, failure_message, next_action_url, method";

macro_rules! payment_row {
    ($r:expr) => {
        PaymentRow {
            id: $r.try_get(0)?,
            order_id: $r.try_get(1)?,
            attempt: $r.try_get(2)?,
            provider: $r.try_get(3)?,
            provider_ref: $r.try_get(4)?,
            token: $r.try_get(5)?,
            status: $r.try_get(6)?,
            amount: $r.try_get(7)?,
            captured: $r.try_get(8)?,
            refunded: $r.try_get(9)?,
            failure_code: $r.try_get(10)?,
            failure_message: $r.try_get(11)?,
            next_action_url: $r.try_get(12)?,
            method: $r.try_get(13)?,
        }
    };
}

/// A new payment attempt, made by the idempotent request `checkout_attempt` when there is one.
pub async fn insert_payment(tx: &mut Tx, p: &PaymentRow, checkout_attempt: Option<&str>) -> Result<(), DbError> {
    let now = now_ms();
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO payments (id, order_id, attempt, provider, token, status, amount, created_ms, updated_ms, method, checkout_attempt) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $7, $8, $9)")
        .bind(&p.id).bind(&p.order_id).bind(p.attempt).bind(&p.provider).bind(&p.token).bind(p.amount).bind(now).bind(&p.method)
        .bind(checkout_attempt).execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn payments(db: &Db, order: &str) -> Result<Vec<PaymentRow>, DbError> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 ORDER BY attempt");
    let rows = on_db!(db, pool => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order).fetch_all(pool).await?;
        rows.iter().map(|r| -> Result<PaymentRow, sqlx::Error> { Ok(payment_row!(r)) }).collect::<Result<Vec<_>, _>>()
    })?;
    Ok(rows)
}

pub async fn payment_by_ref(db: &Db, provider: &str, reference: &str) -> Result<Option<PaymentRow>, DbError> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider = $1 AND provider_ref = $2");
    let row = on_db!(db, pool => {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(provider).bind(reference).fetch_optional(pool).await?;
        r.map(|r| -> Result<PaymentRow, sqlx::Error> { Ok(payment_row!(r)) }).transpose()
    })?;
    Ok(row)
}

/// Records what the provider said about an attempt. The token is dropped
/// once the attempt is settled.
pub async fn settle_payment(tx: &mut Tx, p: &PaymentRow) -> Result<(), DbError> {
    let settled = !matches!(p.status.as_str(), "pending" | "requires_action");
    on_tx!(tx, c => sqlx::query(
        "UPDATE payments SET provider_ref = COALESCE($1, provider_ref), status = $2, captured = $3, failure_code = $4, \
         failure_message = $5, next_action_url = $6, token = CASE WHEN $7 THEN NULL ELSE token END, updated_ms = $8 WHERE id = $9")
        .bind(&p.provider_ref).bind(&p.status).bind(p.captured).bind(&p.failure_code).bind(&p.failure_message)
        .bind(&p.next_action_url).bind(settled).bind(now_ms()).bind(&p.id)
        .execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn add_payment_refunded(tx: &mut Tx, payment: &str, amount: i64) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE payments SET refunded = refunded + $1, updated_ms = $2 WHERE id = $3")
        .bind(amount).bind(now_ms()).bind(payment).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// The latest payment attempt of `order` made by the idempotent request `checkout_attempt`.
pub async fn payment_of_attempt(db: &Db, order: &str, checkout_attempt: &str) -> Result<Option<PaymentRow>, DbError> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND checkout_attempt = $2 ORDER BY attempt DESC LIMIT 1");
    let row = on_db!(db, pool => {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order).bind(checkout_attempt).fetch_optional(pool).await?;
        r.map(|r| -> Result<PaymentRow, sqlx::Error> { Ok(payment_row!(r)) }).transpose()
    })?;
    Ok(row)
}

/// A payment attempt given up before it was written (its reservation was
/// released): the order's next attempt takes the number after it, and so a
/// reservation key of its own. Only for an order still waiting for another card.
pub async fn skip_attempt(tx: &mut Tx, order: &str, attempt: i64) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE orders SET attempt = $1, stock = 'released' WHERE id = $2 AND attempt = $3 AND status = 'payment_failed'")
        .bind(attempt).bind(order).bind(attempt - 1).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

// Checkout intents

/// A checkout about to hold stock (see the `checkout_intents` table).
#[derive(Debug, Clone)]
pub struct IntentRow {
    pub reservation_key: String,
    pub order_id: String,
    pub cart_id: String,
    pub attempt: i64,
    /// What is reserved, as JSON.
    pub lines: String,
    pub checkout_attempt: Option<String>,
    pub state: String,
    pub created_ms: i64,
}

type IntentTuple = (String, String, String, i64, String, Option<String>, String, i64);

const INTENT_COLUMNS: &str = "reservation_key, order_id, cart_id, attempt, lines, checkout_attempt, state, created_ms";

fn intent_from(t: IntentTuple) -> IntentRow {
    let (reservation_key, order_id, cart_id, attempt, lines, checkout_attempt, state, created_ms) = t;
    IntentRow { reservation_key, order_id, cart_id, attempt, lines, checkout_attempt, state, created_ms }
}

/// Records a checkout about to reserve stock under its key; false when an
/// intent with that key is already there (another checkout of the order
/// is running, or one died and is not reconciled yet).
pub async fn insert_intent(db: &Db, i: &IntentRow) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "INSERT INTO checkout_intents (reservation_key, order_id, cart_id, attempt, lines, checkout_attempt, state, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, 'open', $7) ON CONFLICT (reservation_key) DO NOTHING")
        .bind(&i.reservation_key).bind(&i.order_id).bind(&i.cart_id).bind(i.attempt).bind(&i.lines)
        .bind(&i.checkout_attempt).bind(i.created_ms).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// [`insert_intent`] unless its request left an open intent for the
/// cart's first checkout (see [`open_intent_of`]): false then, and when
/// the key is taken. One statement for the usual first try.
pub async fn insert_intent_unless_open(db: &Db, i: &IntentRow) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "INSERT INTO checkout_intents (reservation_key, order_id, cart_id, attempt, lines, checkout_attempt, state, created_ms) \
         SELECT $1, $2, $3, $4, $5, $6, 'open', $7 WHERE NOT EXISTS (SELECT 1 FROM checkout_intents \
         WHERE cart_id = $3 AND checkout_attempt = $6 AND attempt = 1 AND state = 'open') \
         ON CONFLICT (reservation_key) DO NOTHING")
        .bind(&i.reservation_key).bind(&i.order_id).bind(&i.cart_id).bind(i.attempt).bind(&i.lines)
        .bind(&i.checkout_attempt).bind(i.created_ms).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn intent(db: &Db, key: &str) -> Result<Option<IntentRow>, DbError> {
    let sql = format!("SELECT {INTENT_COLUMNS} FROM checkout_intents WHERE reservation_key = $1");
    let row: Option<IntentTuple> = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(key).fetch_optional(pool).await)?;
    Ok(row.map(intent_from))
}

/// The open intent a retried request left for the first checkout of `cart`.
pub async fn open_intent_of(db: &Db, cart: &str, checkout_attempt: &str) -> Result<Option<IntentRow>, DbError> {
    let sql = format!(
        "SELECT {INTENT_COLUMNS} FROM checkout_intents WHERE cart_id = $1 AND checkout_attempt = $2 AND attempt = 1 \
         AND state = 'open' ORDER BY created_ms DESC LIMIT 1"
    );
    let row: Option<IntentTuple> =
        on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(cart).bind(checkout_attempt).fetch_optional(pool).await)?;
    Ok(row.map(intent_from))
}

/// The order (or its attempt) is being written: its intent goes in the
/// same transaction. False when the reconciler claimed it first (and is
/// releasing its stock): the checkout must not go on.
pub async fn resolve_intent(tx: &mut Tx, key: &str) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query("DELETE FROM checkout_intents WHERE reservation_key = $1 AND state = 'open'")
        .bind(key).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// An intent whose reservation was released (or never made).
pub async fn drop_intent(db: &Db, key: &str) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query("DELETE FROM checkout_intents WHERE reservation_key = $1")
        .bind(key).execute(pool).await.map(|_| ()))?;
    Ok(())
}

pub async fn drop_intent_in(tx: &mut Tx, key: &str) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("DELETE FROM checkout_intents WHERE reservation_key = $1")
        .bind(key).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// Intents left behind: open since before `before_ms`, or claimed by a
/// reconciler whose claim ran out (it died) by `now`.
pub async fn stale_intents(db: &Db, before_ms: i64, now: i64, limit: i64) -> Result<Vec<IntentRow>, DbError> {
    let sql = format!(
        "SELECT {INTENT_COLUMNS} FROM checkout_intents WHERE (state = 'open' AND created_ms < $1) \
         OR (state = 'releasing' AND claimed_until_ms < $2) ORDER BY created_ms LIMIT $3"
    );
    let rows: Vec<IntentTuple> =
        on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(before_ms).bind(now).bind(limit).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(intent_from).collect())
}

/// Claims a stale intent for one reconciler until `until_ms`, with one
/// conditional update: false when another reconciler has it, the checkout
/// wrote its order meanwhile, or it is gone.
pub async fn claim_intent(db: &Db, key: &str, before_ms: i64, now: i64, until_ms: i64) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE checkout_intents SET state = 'releasing', claimed_until_ms = $1 WHERE reservation_key = $2 \
         AND ((state = 'open' AND created_ms < $3) OR (state = 'releasing' AND claimed_until_ms < $4))")
        .bind(until_ms).bind(key).bind(before_ms).bind(now).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// How many checkouts hold (or are about to hold) stock without their
/// order written yet, and since when the oldest.
pub async fn intents_summary(db: &Db) -> Result<(i64, Option<i64>), DbError> {
    let row: (i64, Option<i64>) = on_db!(db, pool => sqlx::query_as(
        "SELECT COUNT(*), MIN(created_ms) FROM checkout_intents").fetch_one(pool).await)?;
    Ok(row)
}

// Fulfilments, refunds, returns

/// (id, carrier, tracking_number, tracking_url, lines JSON, created_ms, delivered_ms)
pub type FulfilmentRow = (String, Option<String>, Option<String>, Option<String>, String, i64, Option<i64>);

pub async fn insert_fulfilment(tx: &mut Tx, order: &str, f: &FulfilmentRow) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO fulfilments (id, order_id, carrier, tracking_number, tracking_url, lines, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(&f.0).bind(order).bind(&f.1).bind(&f.2).bind(&f.3).bind(&f.4).bind(f.5)
        .execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn fulfilments(db: &Db, order: &str) -> Result<Vec<FulfilmentRow>, DbError> {
    let rows = on_db!(db, pool => sqlx::query_as(
        "SELECT id, carrier, tracking_number, tracking_url, lines, created_ms, delivered_ms FROM fulfilments \
         WHERE order_id = $1 ORDER BY id")
        .bind(order).fetch_all(pool).await)?;
    Ok(rows)
}

pub async fn mark_delivered(tx: &mut Tx, order: &str) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE fulfilments SET delivered_ms = $1 WHERE order_id = $2 AND delivered_ms IS NULL")
        .bind(now_ms()).bind(order).execute(c).await.map(|_| ()))?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct RefundRow {
    pub id: String,
    pub order_id: String,
    pub payment_id: String,
    pub amount: i64,
    pub reason: String,
    pub restock: bool,
    pub lines: String,
    pub status: String,
    pub provider_ref: Option<String>,
    pub actor: Option<String>,
    pub created_ms: i64,
}

type RefundTuple = (String, String, String, i64, String, bool, String, String, Option<String>, Option<String>, i64);

fn refund_from(t: RefundTuple) -> RefundRow {
    let (id, order_id, payment_id, amount, reason, restock, lines, status, provider_ref, actor, created_ms) = t;
    RefundRow { id, order_id, payment_id, amount, reason, restock, lines, status, provider_ref, actor, created_ms }
}

pub async fn insert_refund(tx: &mut Tx, r: &RefundRow) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO refunds (id, order_id, payment_id, amount, reason, restock, lines, status, actor, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)")
        .bind(&r.id).bind(&r.order_id).bind(&r.payment_id).bind(r.amount).bind(&r.reason).bind(r.restock)
        .bind(&r.lines).bind(&r.actor).bind(r.created_ms).execute(c).await.map(|_| ()))?;
    Ok(())
}

const REFUND_COLUMNS: &str =
    "SELECT id, order_id, payment_id, amount, reason, restock, lines, status, provider_ref, actor, created_ms FROM refunds";

pub async fn refunds(db: &Db, order: &str) -> Result<Vec<RefundRow>, DbError> {
    let sql = format!("{REFUND_COLUMNS} WHERE order_id = $1 ORDER BY id");
    let rows: Vec<RefundTuple> = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(order).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(refund_from).collect())
}

pub async fn pending_refunds(db: &Db, before_ms: i64) -> Result<Vec<RefundRow>, DbError> {
    let sql = format!("{REFUND_COLUMNS} WHERE status = 'pending' AND created_ms < $1 ORDER BY id LIMIT 100");
    let rows: Vec<RefundTuple> = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(before_ms).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(refund_from).collect())
}

pub async fn finish_refund(tx: &mut Tx, id: &str, status: &str, provider_ref: Option<&str>) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE refunds SET status = $1, provider_ref = $2 WHERE id = $3 AND status = 'pending'")
        .bind(status).bind(provider_ref).bind(id).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// (id, order_id, status, reason, lines JSON, refund_id, created_ms, updated_ms)
pub type ReturnRow = (String, String, String, String, String, Option<String>, i64, i64);

pub async fn insert_return(tx: &mut Tx, r: &ReturnRow) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO returns (id, order_id, status, reason, lines, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $6)")
        .bind(&r.0).bind(&r.1).bind(&r.2).bind(&r.3).bind(&r.4).bind(r.6).execute(c).await.map(|_| ()))?;
    Ok(())
}

const RETURN_COLUMNS: &str = "SELECT id, order_id, status, reason, lines, refund_id, created_ms, updated_ms FROM returns";

pub async fn return_by_id(db: &Db, id: &str) -> Result<Option<ReturnRow>, DbError> {
    let sql = format!("{RETURN_COLUMNS} WHERE id = $1");
    let row = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await)?;
    Ok(row)
}

pub async fn returns_of(db: &Db, order: &str) -> Result<Vec<ReturnRow>, DbError> {
    let sql = format!("{RETURN_COLUMNS} WHERE order_id = $1 ORDER BY id");
    let rows = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(order).fetch_all(pool).await)?;
    Ok(rows)
}

pub async fn returns(db: &Db, status: Option<&str>, after: Option<&str>, limit: u32) -> Result<Vec<ReturnRow>, DbError> {
    let sql = format!("{RETURN_COLUMNS} WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3");
    let rows = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(status).bind(after)
        .bind(i64::from(limit) + 1).fetch_all(pool).await)?;
    Ok(rows)
}

pub async fn set_return_status(tx: &mut Tx, id: &str, from: &str, to: &str, refund: Option<&str>) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE returns SET status = $1, refund_id = COALESCE($2, refund_id), updated_ms = $3 WHERE id = $4 AND status = $5")
        .bind(to).bind(refund).bind(now_ms()).bind(id).bind(from).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

// Erasure

/// Keeps a deleted customer's orders for the books, without who they were.
pub async fn forget_customer(tx: &mut Tx, user: &str) -> Result<u64, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE orders SET email = NULL, shipping_address = NULL, billing_address = NULL, customer_key = 'erased', \
         user_id = NULL WHERE user_id = $1")
        .bind(user).execute(c).await.map(|r| r.rows_affected()))?;
    on_tx!(tx, c => sqlx::query("DELETE FROM carts WHERE user_id = $1").bind(user).execute(c).await.map(|_| ()))?;
    Ok(n)
}
