//! The product read model: what the API shows of a product, kept on the
//! product's row and read back as one row per product, with its stock read
//! beside it (stock moves with every sale; the rest of a product rarely).
//!
//! A kept view carries the product's revision when it was drawn; triggers
//! move the revision on every change to what the view shows (migration
//! 0004), so a view is current exactly while the two are equal. A product
//! whose view is missing or stale is read the long way (its variants,
//! prices, categories and pictures) and its view kept for the next reader,
//! unless it changed meanwhile.

use std::collections::{BTreeMap, HashMap};

use kernel::money::{Currency, Money};
use platform::db::Db;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::domain::{ProductOption, Status};
use crate::error::CatalogError;
use crate::products::{self, ListFilter, Product};
use crate::store::{self, KeptView};

#[derive(Serialize, Deserialize, ToSchema)]
pub struct VariantView {
    pub id: String,
    pub sku: String,
    pub title: String,
    /// One value per option of the product, in its order.
    pub option_values: Vec<String>,
    /// Price per currency.
    pub prices: BTreeMap<String, Money>,
    /// The "was" price per currency, where one is set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compare_at_prices: BTreeMap<String, Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub barcode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_grams: Option<i64>,
    /// Can be bought now: in stock, not tracked, or open to backorders.
    pub in_stock: bool,
    /// Units free to sell over all locations, for "only 3 left"; absent when
    /// stock is not tracked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    pub track_inventory: bool,
    /// Sells on when nothing is available; the units arrive later.
    pub allow_backorder: bool,
    /// Staff only: units on hand and held for orders, over all locations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_hand: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_stock_threshold: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    pub id: String,
    pub slug: String,
    pub title: String,
    /// Markdown, as written.
    pub description: String,
    /// The description rendered to HTML that is safe to show as is.
    pub description_html: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    pub tags: Vec<String>,
    pub categories: Vec<CategoryRef>,
    /// Free-form attributes, e.g. `{"material": "cotton"}`.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seo_title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seo_description: Option<String>,
    /// e.g. `[{"name": "Size", "values": ["S", "M", "L"]}]`; empty for a
    /// product with one default variant.
    pub options: Vec<ProductOption>,
    pub variants: Vec<VariantView>,
    pub media: Vec<crate::media::MediaView>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CategoryRef {
    pub id: String,
    pub slug: String,
    pub name: String,
}

fn money(prices: &[store::Price], compare: bool) -> BTreeMap<String, Money> {
    prices
        .iter()
        .filter_map(|(c, amount, compare_at)| {
            let value = if compare { (*compare_at)? } else { *amount };
            Some((c.clone(), Money::new(value, Currency::parse(c).ok()?)))
        })
        .collect()
}

impl VariantView {
    /// Shows `on_hand` and `reserved` (summed over stock locations): what
    /// can be bought to everyone, the figures and the threshold to staff.
    fn show_stock(&mut self, on_hand: i64, reserved: i64, staff: bool) {
        let available = on_hand - reserved;
        self.in_stock = !self.track_inventory || self.allow_backorder || available > 0;
        self.available = self.track_inventory.then_some(available);
        self.on_hand = staff.then_some(on_hand);
        self.reserved = staff.then_some(reserved);
        if !staff {
            self.low_stock_threshold = None;
        }
    }
}

pub fn view(p: Product, staff: bool) -> ProductView {
    ProductView {
        categories: p.categories.into_iter().map(|c| CategoryRef { id: c.id, slug: c.slug, name: c.name }).collect(),
        attributes: serde_json::from_str(&p.row.attributes).unwrap_or_else(|_| serde_json::json!({})),
        seo_title: p.row.seo_title,
        seo_description: p.row.seo_description,
        options: serde_json::from_str(&p.row.options).unwrap_or_default(),
        media: p.media.into_iter().map(crate::media::MediaView::from).collect(),
        variants: p
            .variants
            .into_iter()
            .map(|v| {
                let mut shown = VariantView {
                    id: v.id,
                    sku: v.sku,
                    title: v.title,
                    option_values: v.option_values,
                    prices: money(&v.prices, false),
                    compare_at_prices: money(&v.prices, true),
                    barcode: v.barcode,
                    weight_grams: v.weight_grams,
                    in_stock: false,
                    available: None,
                    track_inventory: v.track_inventory,
                    allow_backorder: v.allow_backorder,
                    on_hand: None,
                    reserved: None,
                    low_stock_threshold: Some(v.low_stock_threshold),
                };
                shown.show_stock(v.on_hand, v.reserved, staff);
                shown
            })
            .collect(),
        id: p.row.id,
        slug: p.row.slug,
        title: p.row.title,
        description_html: crate::markdown::render(&p.row.description),
        description: p.row.description,
        status: Status::parse(&p.row.status).unwrap_or(Status::Draft),
        brand: p.row.brand,
        tags: p.row.tags,
        created_at: p.row.created_at,
        updated_at: p.row.updated_at,
    }
}

/// The form a view is kept in: raise it when [`view`] changes what it
/// draws from the same rows.
const FORMAT: u32 = 1;

/// What a kept view was drawn by: its form, this crate's version and every
/// locked dependency (the Markdown renderer and the HTML cleaner among
/// them). A view drawn by another release is drawn again, so a fix in how
/// descriptions are cleaned reaches every product without an edit.
fn drawn_by() -> &'static str {
    static DRAWN_BY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (FORMAT, env!("CARGO_PKG_VERSION"), include_str!("../../../Cargo.lock")).hash(&mut h);
        format!("{FORMAT}-{:016x}", h.finish())
    });
    &DRAWN_BY
}

#[derive(Serialize, Deserialize)]
struct Kept {
    drawn_by: String,
    product: ProductView,
}

/// The staff's view of `p` without its stock, as it is kept.
fn stockless(p: Product) -> ProductView {
    let mut v = view(p, true);
    for variant in &mut v.variants {
        variant.in_stock = false;
        variant.available = None;
        variant.on_hand = None;
        variant.reserved = None;
    }
    v
}

/// Sets each variant's stock from `stock` (on hand, reserved per SKU), as
/// [`view`] does.
fn with_stock(mut v: ProductView, stock: &HashMap<String, (i64, i64)>, staff: bool) -> ProductView {
    for variant in &mut v.variants {
        let (on_hand, reserved) = stock.get(&variant.sku).copied().unwrap_or((0, 0));
        variant.show_stock(on_hand, reserved, staff);
    }
    v
}

/// The stockless views of `kept`, in its order: kept ones as they are, the
/// others drawn from the product's rows (a fixed number of queries for all
/// of them) and kept for the next reader. A product deleted meanwhile is
/// left out, and for the public one no longer active.
async fn resolve(db: &Db, kept: Vec<KeptView>, staff: bool) -> Result<Vec<ProductView>, CatalogError> {
    let mut views: Vec<Option<ProductView>> = Vec::with_capacity(kept.len());
    let mut stale: Vec<String> = Vec::new();
    for k in &kept {
        let current = k.view.as_deref().and_then(|body| match serde_json::from_str::<Kept>(body) {
            Ok(v) if v.drawn_by == drawn_by() => Some(v.product),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(product = %k.id, error = %e, "a kept product view does not read; drawing it again");
                None
            }
        });
        if current.is_none() {
            stale.push(k.id.clone());
        }
        views.push(current);
    }
    if stale.is_empty() {
        return Ok(views.into_iter().flatten().collect());
    }
    let rows = store::products_by_id(db, &stale).await?;
    let mut drawn: HashMap<String, ProductView> = HashMap::with_capacity(rows.len());
    let mut to_keep: Vec<(String, i64, String)> = Vec::with_capacity(rows.len());
    for p in products::assemble(db, rows, None).await? {
        let v = stockless(p);
        let Some(revision) = kept.iter().find(|k| k.id == v.id).map(|k| k.revision) else { continue };
        let kept = Kept { drawn_by: drawn_by().to_owned(), product: v };
        let body = serde_json::to_string(&kept).map_err(|e| platform::DbError::Corrupt(e.to_string()))?;
        to_keep.push((kept.product.id.clone(), revision, body));
        // Read again after the status was checked: it may have left the shop since.
        if staff || kept.product.status == Status::Active {
            drawn.insert(kept.product.id.clone(), kept.product);
        }
    }
    // Keeping is for the next reader: this one is answered without waiting
    // for the writer.
    let db = db.clone();
    tokio::spawn(async move {
        for (id, revision, body) in to_keep {
            if let Err(e) = store::keep_view(&db, &id, revision, &body).await {
                tracing::warn!(product = %id, error = %e, "could not keep a product view");
            }
        }
    });
    for (slot, k) in views.iter_mut().zip(&kept) {
        if slot.is_none() {
            *slot = drawn.remove(&k.id);
        }
    }
    Ok(views.into_iter().flatten().collect())
}

/// The stock of every variant `views` show, in one query.
async fn stock(db: &Db, views: &[ProductView]) -> Result<HashMap<String, (i64, i64)>, CatalogError> {
    let skus: Vec<String> = views.iter().flat_map(|v| v.variants.iter().map(|x| x.sku.clone())).collect();
    Ok(store::stock_of(db, &skus).await?.into_iter().map(|(sku, on_hand, reserved)| (sku, (on_hand, reserved))).collect())
}

/// A product by id or slug as the API shows it; drafts and archived
/// products only for staff. Two queries when its view is kept.
pub async fn find(db: &Db, id_or_slug: &str, staff: bool) -> Result<ProductView, CatalogError> {
    let kept = store::product_view(db, id_or_slug).await?.ok_or(CatalogError::ProductNotFound)?;
    if !staff && kept.status != Status::Active.as_str() {
        return Err(CatalogError::ProductNotFound);
    }
    let views = resolve(db, vec![kept], staff).await?;
    let stock = stock(db, &views).await?;
    views.into_iter().next().map(|v| with_stock(v, &stock, staff)).ok_or(CatalogError::ProductNotFound)
}

/// A page of products as the API shows them: `limit + 1` of them with
/// their cursors. The list, its stock, and the categories when `f` names
/// one: three queries when their views are kept, whatever the page's size.
pub async fn list(
    db: &Db,
    f: &ListFilter<'_>,
    after: Option<&str>,
    limit: u32,
    staff: bool,
) -> Result<Vec<(String, ProductView)>, CatalogError> {
    let asked = products::Asked::of(db, f).await?;
    let rows = store::product_views(db, &asked.query(f, after, limit)).await?;
    let keys: HashMap<String, String> = rows.iter().map(|(key, k)| (k.id.clone(), key.clone())).collect();
    let views = resolve(db, rows.into_iter().map(|(_, k)| k).collect(), staff).await?;
    let stock = stock(db, &views).await?;
    Ok(views
        .into_iter()
        .filter_map(|v| Some((keys.get(&v.id)?.clone(), with_stock(v, &stock, staff))))
        .collect())
}
