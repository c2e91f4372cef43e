//! Every SQL statement of the catalog service.

use platform::db::{Db, DbError, Dialect, Tx};
use platform::{on_db, on_tx, on_write};
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
    pub seo_title: Option<String>,
    pub seo_description: Option<String>,
    /// A JSON object of string values.
    pub attributes: String,
    /// A JSON array of [`crate::domain::ProductOption`].
    pub options: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

type ProductTuple = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    OffsetDateTime,
    OffsetDateTime,
);
const PRODUCT_COLUMNS: &str =
    "id, slug, title, description, status, brand, tags, seo_title, seo_description, attributes, options, created_at, updated_at";

fn product_from(t: ProductTuple) -> ProductRow {
    ProductRow {
        id: t.0,
        slug: t.1,
        title: t.2,
        description: t.3,
        status: t.4,
        brand: t.5,
        tags: t.6.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        seo_title: t.7,
        seo_description: t.8,
        attributes: t.9,
        options: t.10,
        created_at: t.11,
        updated_at: t.12,
    }
}

/// A price in one currency: amount and optional compare-at amount.
pub type Price = (String, i64, Option<i64>);

#[derive(Debug, Clone)]
pub struct VariantRow {
    pub id: String,
    pub product_id: String,
    pub sku: String,
    pub title: String,
    pub barcode: Option<String>,
    pub weight_grams: Option<i64>,
    pub option_values: Vec<String>,
    pub track_inventory: bool,
    pub allow_backorder: bool,
    pub low_stock_threshold: i64,
    pub prices: Vec<Price>,
    /// Summed over stock locations.
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
        "INSERT INTO products (id, slug, title, description, status, brand, tags, seo_title, seo_description, \
         attributes, options, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, $11, $11)")
        .bind(&p.id).bind(&p.slug).bind(&p.title).bind(&p.description).bind(&p.status).bind(&p.brand)
        .bind(p.tags.join(",")).bind(&p.seo_title).bind(&p.seo_description).bind(&p.attributes).bind(p.created_at)
        .bind(&p.options)
        .execute(c).await.map(|_| ()))?;
    Ok(())
}

pub struct NewVariant<'a> {
    pub id: &'a str,
    pub product_id: &'a str,
    pub sku: &'a str,
    pub title: &'a str,
    pub barcode: Option<&'a str>,
    pub weight_grams: Option<i64>,
    /// A JSON array of strings.
    pub option_values: &'a str,
    pub track_inventory: bool,
    pub allow_backorder: bool,
    pub low_stock_threshold: i64,
    pub position: i32,
    pub prices: &'a [Price],
}

/// A variant, its prices, and an empty stock level at the default location.
pub async fn insert_variant(tx: &mut Tx, v: &NewVariant<'_>) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO variants (id, product_id, sku, title, barcode, weight_grams, track_inventory, \
         low_stock_threshold, position, option_values, allow_backorder) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
        .bind(v.id).bind(v.product_id).bind(v.sku).bind(v.title).bind(v.barcode).bind(v.weight_grams)
        .bind(v.track_inventory).bind(v.low_stock_threshold).bind(v.position).bind(v.option_values)
        .bind(v.allow_backorder)
        .execute(c).await.map(|_| ()))?;
    set_prices(tx, v.id, v.prices).await?;
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO inventory_levels (sku, location_id, on_hand, reserved) VALUES ($1, $2, 0, 0) \
         ON CONFLICT (sku, location_id) DO NOTHING")
        .bind(v.sku).bind(DEFAULT_LOCATION).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// Replaces a variant's prices.
pub async fn set_prices(tx: &mut Tx, variant: &str, prices: &[Price]) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("DELETE FROM variant_prices WHERE variant_id = $1")
        .bind(variant).execute(c).await.map(|_| ()))?;
    for (currency, amount, compare_at) in prices {
        on_tx!(tx, c => sqlx::query(
            "INSERT INTO variant_prices (variant_id, currency, amount, compare_at) VALUES ($1, $2, $3, $4)")
            .bind(variant).bind(currency).bind(amount).bind(compare_at).execute(c).await.map(|_| ()))?;
    }
    Ok(())
}

pub async fn product(db: &Db, id_or_slug: &str) -> Result<Option<ProductRow>, DbError> {
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1 OR slug = $1");
    let row: Option<ProductTuple> =
        on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id_or_slug).fetch_optional(pool).await)?;
    Ok(row.map(product_from))
}

/// How a product list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Oldest,
    Newest,
    Title,
    PriceAsc,
    PriceDesc,
}

/// What a product list asks for. `after` is the sort key of the last item
/// seen (from [`ListedProduct::key`]).
pub struct ProductQuery<'a> {
    pub status: Option<&'a str>,
    /// Words the title or a SKU contains, in any case.
    pub text: Option<&'a str>,
    /// Only products with a tracked variant at or under its low-stock threshold.
    pub low_stock: bool,
    pub brand: Option<&'a str>,
    pub tag: Option<&'a str>,
    /// Products in any of these categories.
    pub categories: Option<&'a [String]>,
    /// The currency of price filters and price sorts.
    pub currency: &'a str,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: bool,
    pub sort: Sort,
    pub after: Option<&'a str>,
    pub limit: u32,
}

pub struct ListedProduct {
    pub row: ProductRow,
    /// The cursor of this row under the query's sort.
    pub key: String,
}

enum Bind {
    Text(String),
    Int(i64),
}

/// The SQL of a product list and its bound values: `columns` (of `p`, the
/// products table) and the sort key of the rows matching `q`, in its order,
/// `limit + 1` of them. The SQL is assembled from fixed fragments; every
/// value is bound.
fn product_list_sql(q: &ProductQuery<'_>, columns: &[&str]) -> (String, Vec<Bind>) {
    let mut binds: Vec<Bind> = Vec::new();
    let next = |b: Bind, binds: &mut Vec<Bind>| {
        binds.push(b);
        format!("${}", binds.len())
    };
    let mut filters = String::new();
    if let Some(status) = q.status {
        filters += &format!(" AND p.status = {}", next(Bind::Text(status.into()), &mut binds));
    }
    if let Some(text) = q.text.map(|t| t.trim().to_lowercase().replace(['%', '_', '\\'], "")).filter(|t| !t.is_empty()) {
        let pattern = next(Bind::Text(format!("%{text}%")), &mut binds);
        filters += &format!(
            " AND (LOWER(p.title) LIKE {pattern} OR EXISTS (SELECT 1 FROM variants v WHERE v.product_id = p.id AND LOWER(v.sku) LIKE {pattern}))"
        );
    }
    if let Some(brand) = q.brand {
        filters += &format!(" AND p.brand = {}", next(Bind::Text(brand.into()), &mut binds));
    }
    if let Some(tag) = q.tag {
        let pattern = format!("%,{},%", tag.to_lowercase().replace(['%', '_', ','], ""));
        filters += &format!(" AND (',' || p.tags || ',') LIKE {}", next(Bind::Text(pattern), &mut binds));
    }
    if let Some(categories) = q.categories {
        let list: Vec<String> = categories.iter().map(|c| next(Bind::Text(c.clone()), &mut binds)).collect();
        let list = if list.is_empty() { "NULL".to_owned() } else { list.join(", ") };
        filters += &format!(
            " AND EXISTS (SELECT 1 FROM product_categories pc WHERE pc.product_id = p.id AND pc.category_id IN ({list}))"
        );
    }
    if q.min_price.is_some() || q.max_price.is_some() {
        let currency = next(Bind::Text(q.currency.into()), &mut binds);
        let min = next(Bind::Int(q.min_price.unwrap_or(0)), &mut binds);
        let max = next(Bind::Int(q.max_price.unwrap_or(i64::MAX)), &mut binds);
        filters += &format!(
            " AND EXISTS (SELECT 1 FROM variants v JOIN variant_prices vp ON vp.variant_id = v.id \
             WHERE v.product_id = p.id AND vp.currency = {currency} AND vp.amount >= {min} AND vp.amount <= {max})"
        );
    }
    if q.low_stock {
        filters += " AND EXISTS (SELECT 1 FROM variants v WHERE v.product_id = p.id AND v.track_inventory = TRUE \
             AND COALESCE((SELECT SUM(l.on_hand - l.reserved) FROM inventory_levels l WHERE l.sku = v.sku), 0) <= v.low_stock_threshold)";
    }
    if q.in_stock {
        filters += " AND EXISTS (SELECT 1 FROM variants v WHERE v.product_id = p.id \
             AND (v.track_inventory = FALSE OR v.allow_backorder = TRUE OR EXISTS (SELECT 1 FROM inventory_levels l \
             WHERE l.sku = v.sku AND l.on_hand - l.reserved > 0)))";
    }
    let key = match q.sort {
        Sort::Oldest | Sort::Newest => "p.id".to_owned(),
        Sort::Title => "p.title".to_owned(),
        Sort::PriceAsc | Sort::PriceDesc => {
            let currency = next(Bind::Text(q.currency.into()), &mut binds);
            format!(
                "(SELECT MIN(vp.amount) FROM variants v JOIN variant_prices vp ON vp.variant_id = v.id \
                 WHERE v.product_id = p.id AND vp.currency = {currency})"
            )
        }
    };
    let (direction, op) = match q.sort {
        Sort::Newest | Sort::PriceDesc => ("DESC", "<"),
        Sort::Oldest | Sort::Title | Sort::PriceAsc => ("ASC", ">"),
    };
    let mut cursor = String::new();
    if let Some(after) = q.after {
        let (k, id) = after.split_once('\u{1f}').unwrap_or((after, after));
        let k_bind = match q.sort {
            Sort::PriceAsc | Sort::PriceDesc => Bind::Int(k.parse().unwrap_or(0)),
            _ => Bind::Text(k.to_owned()),
        };
        match q.sort {
            Sort::Oldest | Sort::Newest => {
                cursor = format!(" AND x.id {op} {}", next(Bind::Text(id.to_owned()), &mut binds));
            }
            _ => {
                let k1 = next(k_bind, &mut binds);
                let k2 = next(
                    match q.sort {
                        Sort::PriceAsc | Sort::PriceDesc => Bind::Int(k.parse().unwrap_or(0)),
                        _ => Bind::Text(k.to_owned()),
                    },
                    &mut binds,
                );
                let i = next(Bind::Text(id.to_owned()), &mut binds);
                cursor = format!(" AND (x.k {op} {k1} OR (x.k = {k2} AND x.id {op} {i}))");
            }
        }
    }
    let limit = next(Bind::Int(i64::from(q.limit) + 1), &mut binds);
    let inner_cols = columns.iter().map(|c| format!("p.{c}")).collect::<Vec<_>>().join(", ");
    let outer_cols = columns.iter().map(|c| format!("x.{c}")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT {outer_cols}, CAST(x.k AS TEXT) FROM (SELECT {inner_cols}, {key} AS k FROM products p WHERE 1 = 1{filters}) x \
         WHERE x.k IS NOT NULL{cursor} ORDER BY x.k {direction}, x.id {direction} LIMIT {limit}"
    );
    (sql, binds)
}

/// The cursor of a listed row under `sort`, from its id and sort key.
fn list_key(sort: Sort, id: &str, k: &str) -> String {
    match sort {
        Sort::Oldest | Sort::Newest => id.to_owned(),
        _ => format!("{k}\u{1f}{id}"),
    }
}

/// Runs a list's SQL with its values bound, as rows of type `$row`.
macro_rules! fetch_list {
    ($db:expr, $sql:expr, $binds:expr) => {
        on_db!($db, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe($sql.clone()));
            for b in $binds {
                query = match b {
                    Bind::Text(t) => query.bind(t.clone()),
                    Bind::Int(i) => query.bind(*i),
                };
            }
            query.fetch_all(pool).await
        })
    };
}

/// Products matching `q`, in its order, `limit + 1` of them.
pub async fn products(db: &Db, q: &ProductQuery<'_>) -> Result<Vec<ListedProduct>, DbError> {
    let columns: Vec<&str> = PRODUCT_COLUMNS.split(", ").collect();
    let (sql, binds) = product_list_sql(q, &columns);
    type Row = (
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        String,
        String,
        OffsetDateTime,
        OffsetDateTime,
        String,
    );
    let rows: Vec<Row> = fetch_list!(db, sql, &binds)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let key = list_key(q.sort, &r.0, &r.13);
            ListedProduct { row: product_from((r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11, r.12)), key }
        })
        .collect())
}

/// A product as pages show it: its kept view, when that is current.
#[derive(Debug, Clone)]
pub struct KeptView {
    pub id: String,
    pub status: String,
    /// The product's revision when this was read: a view drawn from data
    /// read after this may be kept under it (see [`keep_view`]).
    pub revision: i64,
    /// The kept view, `None` when there is none or the product has changed
    /// since it was drawn.
    pub view: Option<String>,
}

const KEPT_VIEW_COLUMNS: [&str; 5] = ["id", "status", "revision", "view", "view_revision"];

type KeptViewRow = (String, String, i64, Option<String>, Option<i64>);

fn kept_view((id, status, revision, view, view_revision): KeptViewRow) -> KeptView {
    KeptView { id, status, revision, view: view.filter(|_| view_revision == Some(revision)) }
}

/// The kept views of the products matching `q`, with their cursors: the
/// rows [`products`] reads, one narrow row each.
pub async fn product_views(db: &Db, q: &ProductQuery<'_>) -> Result<Vec<(String, KeptView)>, DbError> {
    let (sql, binds) = product_list_sql(q, &KEPT_VIEW_COLUMNS);
    type Row = (String, String, i64, Option<String>, Option<i64>, String);
    let rows: Vec<Row> = fetch_list!(db, sql, &binds)?;
    Ok(rows
        .into_iter()
        .map(|(id, status, revision, view, view_revision, k)| {
            (list_key(q.sort, &id, &k), kept_view((id, status, revision, view, view_revision)))
        })
        .collect())
}

/// A product's kept view, by id or slug.
pub async fn product_view(db: &Db, id_or_slug: &str) -> Result<Option<KeptView>, DbError> {
    let row: Option<KeptViewRow> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, status, revision, view, view_revision FROM products WHERE id = $1 OR slug = $1")
        .bind(id_or_slug).fetch_optional(pool).await)?;
    Ok(row.map(kept_view))
}

/// Keeps `view`, drawn from data read after the product was at `revision`,
/// unless the product has changed since: a view is never kept over newer
/// data.
pub async fn keep_view(db: &Db, id: &str, revision: i64, view: &str) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query(
        "UPDATE products SET view = $1, view_revision = $2 WHERE id = $3 AND revision = $2")
        .bind(view).bind(revision).bind(id).execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// Products by id, in no particular order.
pub async fn products_by_id(db: &Db, ids: &[String]) -> Result<Vec<ProductRow>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id IN ({})", platform::db::placeholders(1, ids.len()));
    let rows: Vec<ProductTuple> = on_db!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await
    })?;
    Ok(rows.into_iter().map(product_from).collect())
}

/// Units on hand and reserved per SKU, summed over stock locations; a SKU
/// without a level is left out.
pub async fn stock_of(db: &Db, skus: &[String]) -> Result<Vec<(String, i64, i64)>, DbError> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT sku, CAST(SUM(on_hand) AS BIGINT), CAST(SUM(reserved) AS BIGINT) FROM inventory_levels \
         WHERE sku IN ({}) GROUP BY sku",
        platform::db::placeholders(1, skus.len())
    );
    let rows = on_db!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        for sku in skus {
            q = q.bind(sku);
        }
        q.fetch_all(pool).await
    })?;
    Ok(rows)
}

pub struct ProductChange<'a> {
    pub slug: Option<&'a str>,
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub status: Option<&'a str>,
    pub brand: Option<Option<&'a str>>,
    pub tags: Option<&'a [String]>,
    pub seo_title: Option<Option<&'a str>>,
    pub seo_description: Option<Option<&'a str>>,
    pub attributes: Option<&'a str>,
    pub options: Option<&'a str>,
}

pub async fn update_product(tx: &mut Tx, id: &str, ch: &ProductChange<'_>) -> Result<bool, DbError> {
    let now = OffsetDateTime::now_utc();
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE products SET slug = COALESCE($1, slug), title = COALESCE($2, title), \
         description = COALESCE($3, description), status = COALESCE($4, status), \
         brand = CASE WHEN $5 THEN $6 ELSE brand END, tags = COALESCE($7, tags), updated_at = $8, \
         seo_title = CASE WHEN $10 THEN $11 ELSE seo_title END, \
         seo_description = CASE WHEN $12 THEN $13 ELSE seo_description END, \
         attributes = COALESCE($14, attributes), options = COALESCE($15, options) WHERE id = $9")
        .bind(ch.slug).bind(ch.title).bind(ch.description).bind(ch.status)
        .bind(ch.brand.is_some()).bind(ch.brand.flatten())
        .bind(ch.tags.map(|t| t.join(","))).bind(now).bind(id)
        .bind(ch.seo_title.is_some()).bind(ch.seo_title.flatten())
        .bind(ch.seo_description.is_some()).bind(ch.seo_description.flatten())
        .bind(ch.attributes).bind(ch.options)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// The variants of `product_ids`, with prices and stock at the default location.
pub async fn variants(db: &Db, product_ids: &[String]) -> Result<Vec<VariantRow>, DbError> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    // Ids are generated by us (prefixed base32), but bind them anyway.
    let placeholders = platform::db::placeholders(1, product_ids.len());
    let sql = format!(
        "SELECT v.id, v.product_id, v.sku, v.title, v.barcode, v.weight_grams, v.track_inventory, \
         v.low_stock_threshold, \
         CAST(COALESCE(SUM(l.on_hand), 0) AS BIGINT), CAST(COALESCE(SUM(l.reserved), 0) AS BIGINT), \
         v.option_values, v.allow_backorder FROM variants v LEFT JOIN inventory_levels l ON l.sku = v.sku \
         WHERE v.product_id IN ({}) GROUP BY v.id ORDER BY v.product_id, v.position, v.id",
        placeholders
    );
    type Row = (String, String, String, String, Option<String>, Option<i64>, bool, i64, i64, i64, String, bool);
    let rows: Vec<Row> = on_db!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        for id in product_ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await
    })?;
    let price_sql = format!(
        "SELECT p.variant_id, p.currency, p.amount, p.compare_at FROM variant_prices p JOIN variants v ON v.id = p.variant_id \
         WHERE v.product_id IN ({}) ORDER BY p.currency",
        placeholders
    );
    let prices: Vec<(String, String, i64, Option<i64>)> = on_db!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(price_sql.clone()));
        for id in product_ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await
    })?;
    Ok(rows
        .into_iter()
        .map(|(id, product_id, sku, title, barcode, weight_grams, track_inventory, low_stock_threshold, on_hand, reserved, values, allow_backorder)| VariantRow {
            prices: prices.iter().filter(|p| p.0 == id).map(|p| (p.1.clone(), p.2, p.3)).collect(),
            id,
            product_id,
            sku,
            title,
            barcode,
            weight_grams,
            option_values: serde_json::from_str(&values).unwrap_or_default(),
            track_inventory,
            allow_backorder,
            low_stock_threshold,
            on_hand,
            reserved,
        })
        .collect())
}

// Inventory

/// How a SKU's stock is kept.
#[derive(Debug, Clone, Copy)]
pub struct StockRules {
    pub track: bool,
    pub backorder: bool,
    pub threshold: i64,
}

/// The names a SKU's stock events carry: product id, variant id, product
/// title, variant title, slug.
pub type Names = (String, String, String, String, String);

/// How a SKU's stock is kept, and its names.
#[derive(Debug, Clone)]
pub struct StockFacts {
    pub rules: StockRules,
    pub names: Names,
}

type FactsRow = (bool, bool, i64, String, String, String, String, String);

fn facts_of((track, backorder, threshold, product, variant, title, variant_title, slug): FactsRow) -> StockFacts {
    StockFacts { rules: StockRules { track, backorder, threshold }, names: (product, variant, title, variant_title, slug) }
}

/// A SKU's stock facts, and what is available of it over all locations
/// as the same statement saw them.
pub async fn stock_facts(tx: &mut Tx, sku: &str) -> Result<Option<(StockFacts, i64)>, DbError> {
    type Row = (bool, bool, i64, String, String, String, String, String, i64);
    let row: Option<Row> = on_tx!(tx, c => sqlx::query_as(
        "SELECT v.track_inventory, v.allow_backorder, v.low_stock_threshold, v.product_id, v.id, p.title, v.title, p.slug, \
         CAST(COALESCE((SELECT SUM(l.on_hand - l.reserved) FROM inventory_levels l WHERE l.sku = v.sku), 0) AS BIGINT) \
         FROM variants v JOIN products p ON p.id = v.product_id WHERE v.sku = $1")
        .bind(sku).fetch_optional(c).await)?;
    Ok(row.map(|(t, b, th, p, v, ti, vt, sl, available)| (facts_of((t, b, th, p, v, ti, vt, sl)), available)))
}

/// A SKU's level at one location just after a change, and what is
/// available at its other locations as the same statement saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub on_hand: i64,
    pub reserved: i64,
    pub elsewhere: i64,
}

impl From<(i64, i64, i64)> for Level {
    fn from((on_hand, reserved, elsewhere): (i64, i64, i64)) -> Level {
        Level { on_hand, reserved, elsewhere }
    }
}

impl Level {
    /// Available over all locations.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved + self.elsewhere
    }
}

/// The `RETURNING` of a statement that changes one level: a [`Level`].
macro_rules! returning_level {
    () => {
        " RETURNING on_hand, reserved, (SELECT CAST(COALESCE(SUM(o.on_hand - o.reserved), 0) AS BIGINT) \
         FROM inventory_levels o WHERE o.sku = inventory_levels.sku AND o.location_id <> inventory_levels.location_id) AS elsewhere"
    };
}

/// (location, on_hand, reserved) of a SKU at each location it has a level at.
pub async fn levels(db: &Db, sku: &str) -> Result<Vec<(String, i64, i64)>, DbError> {
    let rows: Vec<(String, i64, i64)> = on_db!(db, pool => sqlx::query_as(
        "SELECT l.location_id, l.on_hand, l.reserved FROM inventory_levels l \
         JOIN stock_locations s ON s.id = l.location_id WHERE l.sku = $1 \
         ORDER BY s.is_default DESC, s.name, s.id")
        .bind(sku).fetch_all(pool).await)?;
    Ok(rows)
}

/// Available units of a SKU over all locations.
pub async fn available(tx: &mut Tx, sku: &str) -> Result<i64, DbError> {
    let n: Option<i64> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT CAST(SUM(on_hand - reserved) AS BIGINT) FROM inventory_levels WHERE sku = $1")
        .bind(sku).fetch_one(c).await)?;
    Ok(n.unwrap_or(0))
}

/// Locations in the order reservations try them: the default first.
pub async fn location_order(tx: &mut Tx) -> Result<Vec<String>, DbError> {
    let rows: Vec<String> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT id FROM stock_locations ORDER BY is_default DESC, name, id").fetch_all(c).await)?;
    Ok(rows)
}

/// Makes sure a SKU has a level (of zero) at a location.
pub async fn ensure_level(tx: &mut Tx, sku: &str, location: &str) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO inventory_levels (sku, location_id, on_hand, reserved) VALUES ($1, $2, 0, 0) \
         ON CONFLICT (sku, location_id) DO NOTHING")
        .bind(sku).bind(location).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// Holds units whether or not they are on hand (a backorder).
pub async fn hold_backorder(tx: &mut Tx, sku: &str, location: &str, quantity: i64) -> Result<Option<Level>, DbError> {
    ensure_level(tx, sku, location).await?;
    let row: Option<(i64, i64, i64)> = on_tx!(tx, c => sqlx::query_as(concat!(
        "UPDATE inventory_levels SET reserved = reserved + $1 WHERE sku = $2 AND location_id = $3", returning_level!()))
        .bind(quantity).bind(sku).bind(location).fetch_optional(c).await)?;
    Ok(row.map(Level::from))
}

// Stock locations

#[derive(Debug, Clone)]
pub struct LocationRow {
    pub id: String,
    pub name: String,
    pub is_default: bool,
}

pub async fn locations(db: &Db) -> Result<Vec<LocationRow>, DbError> {
    let rows: Vec<(String, String, bool)> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, name, is_default FROM stock_locations ORDER BY is_default DESC, name, id").fetch_all(pool).await)?;
    Ok(rows.into_iter().map(|(id, name, is_default)| LocationRow { id, name, is_default }).collect())
}

pub async fn location_exists(tx: &mut Tx, id: &str) -> Result<bool, DbError> {
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar("SELECT COUNT(*) FROM stock_locations WHERE id = $1")
        .bind(id).fetch_one(c).await)?;
    Ok(n > 0)
}

pub async fn insert_location(db: &Db, id: &str, name: &str) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query("INSERT INTO stock_locations (id, name, is_default, created_at) VALUES ($1, $2, FALSE, $3)")
        .bind(id).bind(name).bind(OffsetDateTime::now_utc()).execute(pool).await.map(|_| ()))?;
    Ok(())
}

pub async fn rename_location(db: &Db, id: &str, name: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query("UPDATE stock_locations SET name = $1 WHERE id = $2")
        .bind(name).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Removes a location that is not the default and holds no stock.
pub async fn delete_location(tx: &mut Tx, id: &str) -> Result<bool, DbError> {
    on_tx!(tx, c => sqlx::query("DELETE FROM inventory_levels WHERE location_id = $1 AND on_hand = 0 AND reserved = 0")
        .bind(id).execute(c).await.map(|_| ()))?;
    let n = on_tx!(tx, c => sqlx::query(
        "DELETE FROM stock_locations WHERE id = $1 AND is_default = FALSE \
         AND NOT EXISTS (SELECT 1 FROM inventory_levels WHERE location_id = $1)")
        .bind(id).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn level_in(tx: &mut Tx, sku: &str, location: &str) -> Result<Option<(i64, i64)>, DbError> {
    let row: Option<(i64, i64)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT on_hand, reserved FROM inventory_levels WHERE sku = $1 AND location_id = $2")
        .bind(sku).bind(location).fetch_optional(c).await)?;
    Ok(row)
}

/// Holds `quantity` at the first location (in [`location_order`]) that
/// has them all, in one statement: the location and its level after.
/// `None` when none had them as the statement saw it (on PostgreSQL
/// a concurrent hold may have taken the chosen location's units first:
/// try each location then).
pub async fn hold_first_fit(tx: &mut Tx, sku: &str, quantity: i64) -> Result<Option<(String, Level)>, DbError> {
    type Row = (i64, i64, i64, String);
    let row: Option<Row> = on_tx!(tx, c => sqlx::query_as(concat!(
        "UPDATE inventory_levels SET reserved = reserved + $1 \
         WHERE sku = $2 AND on_hand - reserved >= $1 AND location_id = (\
           SELECT l.location_id FROM inventory_levels l JOIN stock_locations s ON s.id = l.location_id \
           WHERE l.sku = $2 AND l.on_hand - l.reserved >= $1 ORDER BY s.is_default DESC, s.name, s.id LIMIT 1)",
        returning_level!(), ", location_id"))
        .bind(quantity).bind(sku).fetch_optional(c).await)?;
    Ok(row.map(|(on_hand, reserved, elsewhere, location)| (location, Level { on_hand, reserved, elsewhere })))
}

/// Holds `quantity` units at `location` if that many are available there:
/// one conditional update, so concurrent holds can never take more than
/// there is. Returns the level after, or `None` if there was not enough.
pub async fn hold(tx: &mut Tx, sku: &str, location: &str, quantity: i64) -> Result<Option<Level>, DbError> {
    let row: Option<(i64, i64, i64)> = on_tx!(tx, c => sqlx::query_as(concat!(
        "UPDATE inventory_levels SET reserved = reserved + $1 \
         WHERE sku = $2 AND location_id = $3 AND on_hand - reserved >= $1", returning_level!()))
        .bind(quantity).bind(sku).bind(location).fetch_optional(c).await)?;
    Ok(row.map(Level::from))
}

/// Held units leave: on hand and reserved both drop (below zero on hand
/// only for a backorder).
pub async fn ship(tx: &mut Tx, sku: &str, location: &str, quantity: i64, backorder: bool) -> Result<Option<Level>, DbError> {
    let row: Option<(i64, i64, i64)> = on_tx!(tx, c => sqlx::query_as(concat!(
        "UPDATE inventory_levels SET on_hand = on_hand - $1, reserved = reserved - $1 \
         WHERE sku = $2 AND location_id = $3 AND reserved >= $1 AND ($4 OR on_hand >= $1)", returning_level!()))
        .bind(quantity).bind(sku).bind(location).bind(backorder).fetch_optional(c).await)?;
    Ok(row.map(Level::from))
}

/// Held units go back to available.
pub async fn unhold(tx: &mut Tx, sku: &str, location: &str, quantity: i64) -> Result<Option<Level>, DbError> {
    let row: Option<(i64, i64, i64)> = on_tx!(tx, c => sqlx::query_as(concat!(
        "UPDATE inventory_levels SET reserved = reserved - $1 \
         WHERE sku = $2 AND location_id = $3 AND reserved >= $1", returning_level!()))
        .bind(quantity).bind(sku).bind(location).fetch_optional(c).await)?;
    Ok(row.map(Level::from))
}

/// Adds `delta` to on hand; units taken away never leave less on hand than
/// is reserved (units received always count, even against a backorder).
pub async fn adjust(tx: &mut Tx, sku: &str, location: &str, delta: i64) -> Result<Option<Level>, DbError> {
    ensure_level(tx, sku, location).await?;
    let row: Option<(i64, i64, i64)> = on_tx!(tx, c => sqlx::query_as(concat!(
        "UPDATE inventory_levels SET on_hand = on_hand + $1 \
         WHERE sku = $2 AND location_id = $3 AND ($1 > 0 OR on_hand + $1 >= reserved)", returning_level!()))
        .bind(delta).bind(sku).bind(location).fetch_optional(c).await)?;
    Ok(row.map(Level::from))
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
    let id = kernel::id::LedgerEntryId::new().to_string();
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

/// A reservation's state, expiry and lines (sku, quantity), read without
/// a transaction (its lines never change once written).
pub async fn reservation(db: &Db, order: &str) -> Result<Option<(String, i64, Vec<(String, i64)>)>, DbError> {
    let head: Option<(String, i64)> = on_db!(db, pool => sqlx::query_as(
        "SELECT state, expires_at_ms FROM reservations WHERE order_id = $1")
        .bind(order).fetch_optional(pool).await)?;
    let Some((state, expires_at_ms)) = head else { return Ok(None) };
    let mut lines: Vec<(String, i64)> = on_db!(db, pool => sqlx::query_as(
        "SELECT sku, quantity FROM reservation_lines WHERE order_id = $1")
        .bind(order).fetch_all(pool).await)?;
    // In the order of the SKUs' bytes, whatever the database's collation.
    lines.sort();
    Ok(Some((state, expires_at_ms, lines)))
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

/// A reservation's lines with their SKU's stock facts (`None` when the
/// SKU is gone).
pub async fn reservation_lines(tx: &mut Tx, order: &str) -> Result<Vec<(String, String, i64, Option<StockFacts>)>, DbError> {
    type Row = (String, String, i64, Option<bool>, Option<bool>, Option<i64>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);
    let rows: Vec<Row> = on_tx!(tx, c => sqlx::query_as(
        "SELECT r.sku, r.location_id, r.quantity, v.track_inventory, v.allow_backorder, v.low_stock_threshold, \
         v.product_id, v.id, p.title, v.title, p.slug \
         FROM reservation_lines r LEFT JOIN variants v ON v.sku = r.sku LEFT JOIN products p ON p.id = v.product_id \
         WHERE r.order_id = $1 ORDER BY r.sku")
        .bind(order).fetch_all(c).await)?;
    Ok(rows
        .into_iter()
        .map(|(sku, location, quantity, track, backorder, threshold, product, variant, title, variant_title, slug)| {
            let facts = match (track, backorder, threshold, product, variant, title, variant_title, slug) {
                (Some(t), Some(b), Some(th), Some(p), Some(v), Some(ti), Some(vt), Some(sl)) => Some(facts_of((t, b, th, p, v, ti, vt, sl))),
                _ => None,
            };
            (sku, location, quantity, facts)
        })
        .collect())
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

/// How many reservations are held, and when the oldest of them was made.
pub async fn held_reservations(db: &Db) -> Result<(i64, Option<OffsetDateTime>), DbError> {
    let row = on_db!(db, pool => sqlx::query_as(
        "SELECT COUNT(*), MIN(created_at) FROM reservations WHERE state = 'held'")
        .fetch_one(pool).await)?;
    Ok(row)
}

// Categories

#[derive(Debug, Clone)]
pub struct CategoryRow {
    pub id: String,
    pub parent_id: Option<String>,
    pub slug: String,
    pub name: String,
    pub position: i32,
}

pub async fn categories(db: &Db) -> Result<Vec<CategoryRow>, DbError> {
    let rows: Vec<(String, Option<String>, String, String, i32)> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, parent_id, slug, name, position FROM categories ORDER BY position, name, id")
        .fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(|(id, parent_id, slug, name, position)| CategoryRow { id, parent_id, slug, name, position })
        .collect())
}

pub async fn insert_category(db: &Db, c: &CategoryRow) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query(
        "INSERT INTO categories (id, parent_id, slug, name, position, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&c.id).bind(&c.parent_id).bind(&c.slug).bind(&c.name).bind(c.position).bind(OffsetDateTime::now_utc())
        .execute(pool).await.map(|_| ()))?;
    Ok(())
}

pub async fn update_category(db: &Db, c: &CategoryRow) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE categories SET parent_id = $1, slug = $2, name = $3, position = $4 WHERE id = $5")
        .bind(&c.parent_id).bind(&c.slug).bind(&c.name).bind(c.position).bind(&c.id)
        .execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn delete_category(db: &Db, id: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query("DELETE FROM categories WHERE id = $1")
        .bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn set_product_categories(tx: &mut Tx, product: &str, categories: &[String]) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("DELETE FROM product_categories WHERE product_id = $1")
        .bind(product).execute(c).await.map(|_| ()))?;
    for category in categories {
        on_tx!(tx, c => sqlx::query("INSERT INTO product_categories (product_id, category_id) VALUES ($1, $2)")
            .bind(product).bind(category).execute(c).await.map(|_| ()))?;
    }
    Ok(())
}

/// (product_id, category_id) pairs for `product_ids`.
pub async fn product_categories(db: &Db, product_ids: &[String]) -> Result<Vec<(String, String)>, DbError> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = platform::db::placeholders(1, product_ids.len());
    let sql = format!(
        "SELECT product_id, category_id FROM product_categories WHERE product_id IN ({}) ORDER BY category_id",
        placeholders
    );
    let rows: Vec<(String, String)> = on_db!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        for id in product_ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await
    })?;
    Ok(rows)
}

/// Whether any variant of the product was ever reserved for an order.
pub async fn product_was_ordered(db: &Db, product: &str) -> Result<bool, DbError> {
    let n: i64 = on_db!(db, pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM reservation_lines r JOIN variants v ON v.sku = r.sku WHERE v.product_id = $1")
        .bind(product).fetch_one(pool).await)?;
    Ok(n > 0)
}

pub async fn delete_product(tx: &mut Tx, product: &str) -> Result<bool, DbError> {
    // Stock rows are keyed by SKU, not by product: remove them with it.
    on_tx!(tx, c => sqlx::query(
        "DELETE FROM inventory_levels WHERE sku IN (SELECT sku FROM variants WHERE product_id = $1)")
        .bind(product).execute(c).await.map(|_| ()))?;
    let n = on_tx!(tx, c => sqlx::query("DELETE FROM products WHERE id = $1")
        .bind(product).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

#[derive(Default)]
pub struct VariantChange<'a> {
    pub title: Option<&'a str>,
    pub barcode: Option<Option<&'a str>>,
    pub weight_grams: Option<Option<i64>>,
    pub track_inventory: Option<bool>,
    pub allow_backorder: Option<bool>,
    pub low_stock_threshold: Option<i64>,
    /// A JSON array of strings.
    pub option_values: Option<&'a str>,
}

pub async fn update_variant(tx: &mut Tx, sku: &str, ch: &VariantChange<'_>) -> Result<Option<String>, DbError> {
    let id: Option<String> = on_tx!(tx, c => sqlx::query_scalar(
        "UPDATE variants SET title = COALESCE($1, title), barcode = CASE WHEN $2 THEN $3 ELSE barcode END, \
         weight_grams = CASE WHEN $4 THEN $5 ELSE weight_grams END, \
         track_inventory = COALESCE($6, track_inventory), low_stock_threshold = COALESCE($7, low_stock_threshold), \
         allow_backorder = COALESCE($9, allow_backorder), option_values = COALESCE($10, option_values) \
         WHERE sku = $8 RETURNING id")
        .bind(ch.title).bind(ch.barcode.is_some()).bind(ch.barcode.flatten())
        .bind(ch.weight_grams.is_some()).bind(ch.weight_grams.flatten())
        .bind(ch.track_inventory).bind(ch.low_stock_threshold).bind(sku).bind(ch.allow_backorder).bind(ch.option_values)
        .fetch_optional(c).await)?;
    Ok(id)
}

/// The option values of each variant of a product.
pub async fn option_values_of(tx: &mut Tx, product: &str) -> Result<Vec<(String, Vec<String>)>, DbError> {
    let rows: Vec<(String, String)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT sku, option_values FROM variants WHERE product_id = $1 ORDER BY position, id")
        .bind(product).fetch_all(c).await)?;
    Ok(rows.into_iter().map(|(sku, v)| (sku, serde_json::from_str(&v).unwrap_or_default())).collect())
}

/// (variant id, product id) of a SKU.
pub async fn variant_ids(tx: &mut Tx, sku: &str) -> Result<Option<(String, String)>, DbError> {
    let row: Option<(String, String)> = on_tx!(tx, c => sqlx::query_as("SELECT id, product_id FROM variants WHERE sku = $1")
        .bind(sku).fetch_optional(c).await)?;
    Ok(row)
}

pub async fn product_of_sku(db: &Db, sku: &str) -> Result<Option<String>, DbError> {
    let row: Option<(String,)> = on_db!(db, pool => sqlx::query_as("SELECT product_id FROM variants WHERE sku = $1")
        .bind(sku).fetch_optional(pool).await)?;
    Ok(row.map(|r| r.0))
}

pub async fn variant_count(tx: &mut Tx, product: &str) -> Result<i64, DbError> {
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar("SELECT COUNT(*) FROM variants WHERE product_id = $1")
        .bind(product).fetch_one(c).await)?;
    Ok(n)
}

pub async fn delete_variant(tx: &mut Tx, sku: &str) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("DELETE FROM inventory_levels WHERE sku = $1").bind(sku).execute(c).await.map(|_| ()))?;
    on_tx!(tx, c => sqlx::query("DELETE FROM variants WHERE sku = $1").bind(sku).execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn sku_was_ordered(tx: &mut Tx, sku: &str) -> Result<bool, DbError> {
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar("SELECT COUNT(*) FROM reservation_lines WHERE sku = $1")
        .bind(sku).fetch_one(c).await)?;
    Ok(n > 0)
}

// Media

#[derive(Debug, Clone)]
pub struct MediaRow {
    pub id: String,
    pub product_id: String,
    pub object_key: Option<String>,
    pub source_url: Option<String>,
    pub content_type: Option<String>,
    pub alt: String,
    pub position: i32,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub byte_size: Option<i64>,
    /// (width, object key), narrowest first.
    pub thumbnails: Vec<(u32, String)>,
    pub created_at: OffsetDateTime,
}

type MediaTuple = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i32,
    Option<i32>,
    Option<i32>,
    Option<i64>,
    String,
    OffsetDateTime,
);
const MEDIA_COLUMNS: &str =
    "id, product_id, object_key, source_url, content_type, alt, position, width, height, byte_size, thumbnails, created_at";

fn media_from(t: MediaTuple) -> MediaRow {
    MediaRow {
        id: t.0,
        product_id: t.1,
        object_key: t.2,
        source_url: t.3,
        content_type: t.4,
        alt: t.5,
        position: t.6,
        width: t.7,
        height: t.8,
        byte_size: t.9,
        thumbnails: serde_json::from_str(&t.10).unwrap_or_default(),
        created_at: t.11,
    }
}

/// Inserts a picture last in its product's order; returns it as stored.
pub async fn insert_media(tx: &mut Tx, m: &MediaRow) -> Result<MediaRow, DbError> {
    let position: i32 = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT CAST(COALESCE(MAX(position) + 1, 0) AS INTEGER) FROM product_media WHERE product_id = $1")
        .bind(&m.product_id).fetch_one(c).await)?;
    let thumbnails = serde_json::to_string(&m.thumbnails).unwrap_or_else(|_| "[]".into());
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO product_media (id, product_id, object_key, source_url, content_type, alt, position, width, height, \
         byte_size, thumbnails, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
        .bind(&m.id).bind(&m.product_id).bind(&m.object_key).bind(&m.source_url).bind(&m.content_type).bind(&m.alt)
        .bind(position).bind(m.width).bind(m.height).bind(m.byte_size).bind(&thumbnails).bind(m.created_at)
        .execute(c).await.map(|_| ()))?;
    Ok(MediaRow { position, ..m.clone() })
}

pub async fn media_of(tx: &mut Tx, product: &str) -> Result<Vec<MediaRow>, DbError> {
    let sql = format!("SELECT {MEDIA_COLUMNS} FROM product_media WHERE product_id = $1 ORDER BY position, id");
    let rows: Vec<MediaTuple> =
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(product).fetch_all(c).await)?;
    Ok(rows.into_iter().map(media_from).collect())
}

/// The pictures of `product_ids`, each product's in order.
pub async fn media(db: &Db, product_ids: &[String]) -> Result<Vec<MediaRow>, DbError> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = platform::db::placeholders(1, product_ids.len());
    let sql = format!(
        "SELECT {MEDIA_COLUMNS} FROM product_media WHERE product_id IN ({}) ORDER BY product_id, position, id",
        placeholders
    );
    let rows: Vec<MediaTuple> = on_db!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
        for id in product_ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await
    })?;
    Ok(rows.into_iter().map(media_from).collect())
}

/// Whether the product has a picture from this address, or stored under this key.
pub async fn media_known(tx: &mut Tx, product: &str, url: &str, key: Option<&str>) -> Result<bool, DbError> {
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM product_media WHERE product_id = $1 AND (source_url = $2 OR object_key = $3)")
        .bind(product).bind(url).bind(key).fetch_one(c).await)?;
    Ok(n > 0)
}

/// On hand at the default location, per SKU.
pub async fn default_on_hand(db: &Db, skus: &[String]) -> Result<std::collections::BTreeMap<String, i64>, DbError> {
    if skus.is_empty() {
        return Ok(Default::default());
    }
    let placeholders = platform::db::placeholders(2, skus.len());
    let sql = format!(
        "SELECT sku, on_hand FROM inventory_levels WHERE location_id = $1 AND sku IN ({})",
        placeholders
    );
    let rows: Vec<(String, i64)> = on_db!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(DEFAULT_LOCATION);
        for sku in skus {
            q = q.bind(sku);
        }
        q.fetch_all(pool).await
    })?;
    Ok(rows.into_iter().collect())
}

pub async fn set_media_alt(tx: &mut Tx, id: &str, alt: &str) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE product_media SET alt = $1 WHERE id = $2")
        .bind(alt).bind(id).execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn set_media_position(tx: &mut Tx, id: &str, position: i32) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE product_media SET position = $1 WHERE id = $2")
        .bind(position).bind(id).execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn delete_media(tx: &mut Tx, id: &str) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("DELETE FROM product_media WHERE id = $1").bind(id).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// Marks a product changed (its pictures changed) and tells subscribers.
pub async fn touch_product(tx: &mut Tx, product: &str) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE products SET updated_at = $1 WHERE id = $2")
        .bind(OffsetDateTime::now_utc()).bind(product).execute(c).await.map(|_| ()))?;
    Ok(())
}

// Offers: what checkout reads about SKUs.

/// (sku, variant id, product id, product title, variant title, product status,
/// grams, tracked, backorder, available, price in the currency).
/// (sku, variant id, product id, title, variant title, status, weight,
/// track, backorder, available, price, the product's category ids).
pub type OfferRow = (String, String, String, String, String, String, i64, bool, bool, i64, Option<i64>, Vec<String>);

type OfferTuple = (String, String, String, String, String, String, i64, bool, bool, i64, Option<i64>, Option<String>);

pub async fn offers(db: &Db, skus: &[String], currency: &str) -> Result<Vec<OfferRow>, DbError> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    // The product's categories as one list (ids never hold a comma).
    let categories = match db.dialect() {
        Dialect::Sqlite => "(SELECT group_concat(c.category_id, ',') FROM (SELECT category_id FROM product_categories \
                            WHERE product_id = v.product_id ORDER BY category_id) c)",
        Dialect::Postgres => "(SELECT string_agg(c.category_id, ',' ORDER BY c.category_id) FROM product_categories c \
                              WHERE c.product_id = v.product_id)",
    };
    let placeholders = platform::db::placeholders(2, skus.len());
    let sql = format!(
        "SELECT v.sku, v.id, v.product_id, p.title, v.title, p.status, CAST(COALESCE(v.weight_grams, 0) AS BIGINT), \
         v.track_inventory, v.allow_backorder, \
         CAST(COALESCE((SELECT SUM(l.on_hand - l.reserved) FROM inventory_levels l WHERE l.sku = v.sku), 0) AS BIGINT), \
         (SELECT pr.amount FROM variant_prices pr WHERE pr.variant_id = v.id AND pr.currency = $1), {categories} \
         FROM variants v JOIN products p ON p.id = v.product_id WHERE v.sku IN ({placeholders})"
    );
    let rows: Vec<OfferTuple> = on_db!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(currency);
        for sku in skus {
            q = q.bind(sku);
        }
        q.fetch_all(pool).await
    })?;
    Ok(rows
        .into_iter()
        .map(|(sku, variant, product, title, variant_title, status, weight, track, backorder, available, price, categories)| {
            let categories = categories.map(|c| c.split(',').filter(|id| !id.is_empty()).map(str::to_owned).collect()).unwrap_or_default();
            (sku, variant, product, title, variant_title, status, weight, track, backorder, available, price, categories)
        })
        .collect())
}

/// Whether the ledger already holds a change of `sku` for `reference` with `reason`.
pub async fn ledger_has(tx: &mut Tx, sku: &str, reference: &str, reason: &str) -> Result<bool, DbError> {
    let n: i64 = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM inventory_ledger WHERE sku = $1 AND reference = $2 AND reason = $3")
        .bind(sku).bind(reference).bind(reason).fetch_one(c).await)?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    /// Every column a product's view shows moves its revision when it
    /// changes (the `UPDATE OF` lists of both databases' triggers).
    #[test]
    fn the_revision_triggers_name_every_column_the_view_shows() {
        for migration in [crate::MIGRATIONS.sqlite, crate::MIGRATIONS.postgres] {
            let sql = migration.iter().find(|m| m.name == "0004_product_views").map(|m| m.sql).unwrap_or_default();
            let start = sql.find("UPDATE OF ").map(|i| i + "UPDATE OF ".len()).unwrap_or(0);
            let end = sql[start..].find(" ON products").map(|i| start + i).unwrap_or(start);
            let listed: Vec<&str> = sql[start..end].split(',').map(str::trim).collect();
            for column in super::PRODUCT_COLUMNS.split(", ").filter(|c| *c != "id") {
                assert!(listed.contains(&column), "{column} is not in {listed:?}");
            }
        }
    }
}
