//! Every SQL statement of the catalog service.

use platform::db::{Db, DbError, Tx};
use platform::{on_db, on_tx};
use time::OffsetDateTime;

pub const DEFAULT_LOCATION: &str = "loc_default";

#[derive(Debug, Clone)]
pub struct ProductRow {
    pub id: String,
    pub slug: String,
    pub title: String,
    pub description: String,
    pub status: String,
    pub brand: Option<String>,
    pub tags: Vec<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

type ProductTuple = (String, String, String, String, String, Option<String>, String, OffsetDateTime, OffsetDateTime);
const PRODUCT_COLUMNS: &str = "id, slug, title, description, status, brand, tags, created_at, updated_at";

fn product_from(t: ProductTuple) -> ProductRow {
    ProductRow {
        id: t.0,
        slug: t.1,
        title: t.2,
        description: t.3,
        status: t.4,
        brand: t.5,
        tags: t.6.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        created_at: t.7,
        updated_at: t.8,
    }
}

#[derive(Debug, Clone)]
pub struct VariantRow {
    pub id: String,
    pub product_id: String,
    pub sku: String,
    pub title: String,
    pub track_inventory: bool,
    pub low_stock_threshold: i64,
    pub prices: Vec<(String, i64)>,
    pub on_hand: i64,
    pub reserved: i64,
}

pub async fn slug_taken(tx: &mut Tx, slug: &str) -> Result<bool, DbError> {
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE slug = $1")
        .bind(slug).fetch_one(c).await)?;
    Ok(n > 0)
}

pub async fn insert_product(tx: &mut Tx, p: &ProductRow) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO products (id, slug, title, description, status, brand, tags, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)")
        .bind(&p.id).bind(&p.slug).bind(&p.title).bind(&p.description).bind(&p.status).bind(&p.brand)
        .bind(p.tags.join(",")).bind(p.created_at)
        .execute(c).await.map(|_| ()))?;
    Ok(())
}

pub struct NewVariant<'a> {
    pub id: &'a str,
    pub product_id: &'a str,
    pub sku: &'a str,
    pub title: &'a str,
    pub track_inventory: bool,
    pub low_stock_threshold: i64,
    pub position: i32,
    pub prices: &'a [(String, i64)],
}

/// A variant, its prices, and an empty stock level at the default location.
pub async fn insert_variant(tx: &mut Tx, v: &NewVariant<'_>) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO variants (id, product_id, sku, title, track_inventory, low_stock_threshold, position) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(v.id).bind(v.product_id).bind(v.sku).bind(v.title).bind(v.track_inventory)
        .bind(v.low_stock_threshold).bind(v.position)
        .execute(c).await.map(|_| ()))?;
    for (currency, amount) in v.prices {
        on_tx!(tx, c => sqlx::query("INSERT INTO variant_prices (variant_id, currency, amount) VALUES ($1, $2, $3)")
            .bind(v.id).bind(currency).bind(amount).execute(c).await.map(|_| ()))?;
    }
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO inventory_levels (sku, location_id, on_hand, reserved) VALUES ($1, $2, 0, 0) \
         ON CONFLICT (sku, location_id) DO NOTHING")
        .bind(v.sku).bind(DEFAULT_LOCATION).execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn product(db: &Db, id_or_slug: &str) -> Result<Option<ProductRow>, DbError> {
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1 OR slug = $1");
    let row: Option<ProductTuple> =
        on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id_or_slug).fetch_optional(pool).await)?;
    Ok(row.map(product_from))
}

/// Products in id order after `after`, `limit + 1` of them.
pub async fn products(
    db: &Db,
    status: Option<&str>,
    brand: Option<&str>,
    tag: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<ProductRow>, DbError> {
    let sql = format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR brand = $2) \
         AND ($3 IS NULL OR (',' || tags || ',') LIKE $3) AND ($4 IS NULL OR id > $4) ORDER BY id LIMIT $5"
    );
    let tag = tag.map(|t| format!("%,{},%", t.replace(['%', '_', ','], "")));
    let rows: Vec<ProductTuple> = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(status).bind(brand).bind(tag).bind(after).bind(i64::from(limit) + 1)
        .fetch_all(pool).await)?;
    Ok(rows.into_iter().map(product_from).collect())
}

pub struct ProductChange<'a> {
    pub slug: Option<&'a str>,
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub status: Option<&'a str>,
    pub brand: Option<Option<&'a str>>,
    pub tags: Option<&'a [String]>,
}

pub async fn update_product(tx: &mut Tx, id: &str, ch: &ProductChange<'_>) -> Result<bool, DbError> {
    let now = OffsetDateTime::now_utc();
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE products SET slug = COALESCE($1, slug), title = COALESCE($2, title), \
         description = COALESCE($3, description), status = COALESCE($4, status), \
         brand = CASE WHEN $5 THEN $6 ELSE brand END, tags = COALESCE($7, tags), updated_at = $8 WHERE id = $9")
        .bind(ch.slug).bind(ch.title).bind(ch.description).bind(ch.status)
        .bind(ch.brand.is_some()).bind(ch.brand.flatten())
        .bind(ch.tags.map(|t| t.join(","))).bind(now).bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// The variants of `product_ids`, with prices and stock at the default location.
pub async fn variants(db: &Db, product_ids: &[String]) -> Result<Vec<VariantRow>, DbError> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    // Ids are generated by us (prefixed base32), but bind them anyway.
    let placeholders: Vec<String> = (1..=product_ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT v.id, v.product_id, v.sku, v.title, v.track_inventory, v.low_stock_threshold, \
         COALESCE(l.on_hand, 0), COALESCE(l.reserved, 0) FROM variants v \
         LEFT JOIN inventory_levels l ON l.sku = v.sku AND l.location_id = '{DEFAULT_LOCATION}' \
         WHERE v.product_id IN ({}) ORDER BY v.product_id, v.position, v.id",
        placeholders.join(", ")
    );
    type Row = (String, String, String, String, bool, i64, i64, i64);
    let rows: Vec<Row> = on_db!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        for id in product_ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await
    })?;
    let price_sql = format!(
        "SELECT p.variant_id, p.currency, p.amount FROM variant_prices p JOIN variants v ON v.id = p.variant_id \
         WHERE v.product_id IN ({}) ORDER BY p.currency",
        placeholders.join(", ")
    );
    let prices: Vec<(String, String, i64)> = on_db!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(price_sql.clone()));
        for id in product_ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await
    })?;
    Ok(rows
        .into_iter()
        .map(|(id, product_id, sku, title, track_inventory, low_stock_threshold, on_hand, reserved)| VariantRow {
            prices: prices.iter().filter(|p| p.0 == id).map(|p| (p.1.clone(), p.2)).collect(),
            id,
            product_id,
            sku,
            title,
            track_inventory,
            low_stock_threshold,
            on_hand,
            reserved,
        })
        .collect())
}

// Inventory

/// (track_inventory, low_stock_threshold) of a SKU's variant.
pub async fn stock_rules(tx: &mut Tx, sku: &str) -> Result<Option<(bool, i64)>, DbError> {
    let row: Option<(bool, i64)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT track_inventory, low_stock_threshold FROM variants WHERE sku = $1")
        .bind(sku).fetch_optional(c).await)?;
    Ok(row)
}

pub async fn levels(db: &Db, sku: &str) -> Result<Vec<(String, i64, i64)>, DbError> {
    let rows: Vec<(String, i64, i64)> = on_db!(db, pool => sqlx::query_as(
        "SELECT location_id, on_hand, reserved FROM inventory_levels WHERE sku = $1 ORDER BY location_id")
        .bind(sku).fetch_all(pool).await)?;
    Ok(rows)
}

pub async fn level_in(tx: &mut Tx, sku: &str, location: &str) -> Result<Option<(i64, i64)>, DbError> {
    let row: Option<(i64, i64)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT on_hand, reserved FROM inventory_levels WHERE sku = $1 AND location_id = $2")
        .bind(sku).bind(location).fetch_optional(c).await)?;
    Ok(row)
}

/// Holds `quantity` units if that many are available: one conditional
/// update, so concurrent holds can never take more than there is.
/// Returns (on_hand, reserved) after, or `None` if there was not enough.
pub async fn hold(tx: &mut Tx, sku: &str, location: &str, quantity: i64) -> Result<Option<(i64, i64)>, DbError> {
    let row: Option<(i64, i64)> = on_tx!(tx, c => sqlx::query_as(
        "UPDATE inventory_levels SET reserved = reserved + $1 \
         WHERE sku = $2 AND location_id = $3 AND on_hand - reserved >= $1 RETURNING on_hand, reserved")
        .bind(quantity).bind(sku).bind(location).fetch_optional(c).await)?;
    Ok(row)
}

/// Held units leave: on hand and reserved both drop.
pub async fn ship(tx: &mut Tx, sku: &str, location: &str, quantity: i64) -> Result<Option<(i64, i64)>, DbError> {
    let row: Option<(i64, i64)> = on_tx!(tx, c => sqlx::query_as(
        "UPDATE inventory_levels SET on_hand = on_hand - $1, reserved = reserved - $1 \
         WHERE sku = $2 AND location_id = $3 AND reserved >= $1 AND on_hand >= $1 RETURNING on_hand, reserved")
        .bind(quantity).bind(sku).bind(location).fetch_optional(c).await)?;
    Ok(row)
}

/// Held units go back to available.
pub async fn unhold(tx: &mut Tx, sku: &str, location: &str, quantity: i64) -> Result<Option<(i64, i64)>, DbError> {
    let row: Option<(i64, i64)> = on_tx!(tx, c => sqlx::query_as(
        "UPDATE inventory_levels SET reserved = reserved - $1 \
         WHERE sku = $2 AND location_id = $3 AND reserved >= $1 RETURNING on_hand, reserved")
        .bind(quantity).bind(sku).bind(location).fetch_optional(c).await)?;
    Ok(row)
}

/// Adds `delta` to on hand, never below what is reserved.
pub async fn adjust(tx: &mut Tx, sku: &str, location: &str, delta: i64) -> Result<Option<(i64, i64)>, DbError> {
    let row: Option<(i64, i64)> = on_tx!(tx, c => sqlx::query_as(
        "UPDATE inventory_levels SET on_hand = on_hand + $1 \
         WHERE sku = $2 AND location_id = $3 AND on_hand + $1 >= reserved RETURNING on_hand, reserved")
        .bind(delta).bind(sku).bind(location).fetch_optional(c).await)?;
    Ok(row)
}

pub struct LedgerEntry<'a> {
    pub sku: &'a str,
    pub location: &'a str,
    pub delta: i64,
    pub on_hand_after: i64,
    pub reason: &'a str,
    pub actor: Option<&'a str>,
    pub reference: Option<&'a str>,
}

pub async fn record(tx: &mut Tx, e: &LedgerEntry<'_>) -> Result<(), DbError> {
    let id = format!("inv_{}", kernel::id::encode_base32(kernel::id::Uuid::now_v7().as_u128()));
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO inventory_ledger (id, sku, location_id, delta, on_hand_after, reason, actor_id, reference, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(id).bind(e.sku).bind(e.location).bind(e.delta).bind(e.on_hand_after).bind(e.reason)
        .bind(e.actor).bind(e.reference).bind(OffsetDateTime::now_utc())
        .execute(c).await.map(|_| ()))?;
    Ok(())
}

pub type LedgerRow = (String, String, i64, i64, String, Option<String>, Option<String>, OffsetDateTime);

pub async fn ledger(db: &Db, sku: &str, after: Option<&str>, limit: u32) -> Result<Vec<LedgerRow>, DbError> {
    let rows: Vec<LedgerRow> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, location_id, delta, on_hand_after, reason, actor_id, reference, at FROM inventory_ledger \
         WHERE sku = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3")
        .bind(sku).bind(after).bind(i64::from(limit) + 1).fetch_all(pool).await)?;
    Ok(rows)
}

// Reservations

pub async fn reservation_state(tx: &mut Tx, order: &str) -> Result<Option<(String, i64)>, DbError> {
    let row: Option<(String, i64)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT state, expires_at_ms FROM reservations WHERE order_id = $1")
        .bind(order).fetch_optional(c).await)?;
    Ok(row)
}

pub async fn insert_reservation(tx: &mut Tx, order: &str, expires_at_ms: i64) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "INSERT INTO reservations (order_id, state, expires_at_ms, created_at) VALUES ($1, 'held', $2, $3) \
         ON CONFLICT (order_id) DO NOTHING")
        .bind(order).bind(expires_at_ms).bind(OffsetDateTime::now_utc())
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn insert_reservation_line(tx: &mut Tx, order: &str, sku: &str, location: &str, q: i64) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO reservation_lines (order_id, sku, location_id, quantity) VALUES ($1, $2, $3, $4)")
        .bind(order).bind(sku).bind(location).bind(q).execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn reservation_lines(tx: &mut Tx, order: &str) -> Result<Vec<(String, String, i64)>, DbError> {
    let rows: Vec<(String, String, i64)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT sku, location_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku")
        .bind(order).fetch_all(c).await)?;
    Ok(rows)
}

/// Moves a reservation from `held` to `to`; false if it was not held.
pub async fn settle_reservation(tx: &mut Tx, order: &str, to: &str) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query("UPDATE reservations SET state = $1 WHERE order_id = $2 AND state = 'held'")
        .bind(to).bind(order).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn expired_reservations(db: &Db, now_ms: i64, limit: i64) -> Result<Vec<String>, DbError> {
    let rows: Vec<String> = on_db!(db, pool => sqlx::query_scalar(
        "SELECT order_id FROM reservations WHERE state = 'held' AND expires_at_ms <= $1 ORDER BY expires_at_ms LIMIT $2")
        .bind(now_ms).bind(limit).fetch_all(pool).await)?;
    Ok(rows)
}
