//! Products and their variants: creating, changing, finding.

use std::collections::BTreeMap;

use kernel::Envelope;
use kernel::id::{ProductId, VariantId};
use platform::db::Db;
use platform::outbox;
use serde_json::json;
use time::OffsetDateTime;

use crate::domain::{self, Sku, Status};
use crate::error::CatalogError;
use crate::store::{self, NewVariant, ProductChange, ProductRow, VariantRow};

pub struct NewProduct {
    pub title: String,
    pub slug: Option<String>,
    pub description: String,
    pub status: Status,
    pub brand: Option<String>,
    pub tags: Vec<String>,
    pub variants: Vec<NewVariantInput>,
}

pub struct NewVariantInput {
    pub sku: String,
    pub title: Option<String>,
    pub prices: BTreeMap<String, i64>,
    pub track_inventory: bool,
    pub low_stock_threshold: Option<i64>,
}

/// A product with its variants.
pub struct Product {
    pub row: ProductRow,
    pub variants: Vec<VariantRow>,
}

fn clean_tags(tags: &[String]) -> Result<Vec<String>, CatalogError> {
    let mut out: Vec<String> = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        let t = t.trim().to_lowercase();
        if t.is_empty() || t.len() > 50 || t.contains(',') {
            return Err(domain::invalid(format!("tags[{i}]"), "invalid_tag", "1-50 characters, no commas").into());
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

pub async fn create(db: &Db, input: NewProduct) -> Result<Product, CatalogError> {
    let title = domain::parse_title(&input.title, "title")?;
    let tags = clean_tags(&input.tags)?;
    if input.variants.is_empty() {
        return Err(domain::invalid("variants", "no_variants", "a product has at least one variant").into());
    }
    let mut variants = Vec::new();
    for (i, v) in input.variants.iter().enumerate() {
        let sku = Sku::parse(&v.sku, &format!("variants[{i}].sku"))?;
        if variants.iter().any(|(s, ..): &(Sku, String, Vec<(String, i64)>, bool, i64)| *s == sku) {
            return Err(domain::invalid(format!("variants[{i}].sku"), "duplicate_sku", "each variant needs its own SKU").into());
        }
        let vtitle = match &v.title {
            Some(t) => domain::parse_title(t, &format!("variants[{i}].title"))?,
            None => "Default".to_owned(),
        };
        let prices = domain::parse_prices(&v.prices, &format!("variants[{i}].prices"))?
            .into_iter()
            .map(|(c, a)| (c.to_string(), a))
            .collect();
        let threshold = v.low_stock_threshold.unwrap_or(5).clamp(0, 1_000_000);
        variants.push((sku, vtitle, prices, v.track_inventory, threshold));
    }
    let id = ProductId::new().to_string();
    let mut tx = db.begin().await?;
    let slug = match &input.slug {
        Some(s) => {
            let s = domain::parse_slug(s)?;
            if store::slug_taken(&mut tx, &s).await? {
                return Err(CatalogError::SlugTaken(s));
            }
            s
        }
        None => {
            let base = domain::slugify(&title);
            let mut candidate = base.clone();
            let mut n = 2;
            while store::slug_taken(&mut tx, &candidate).await? {
                candidate = format!("{base}-{n}");
                n += 1;
            }
            candidate
        }
    };
    let now = OffsetDateTime::now_utc();
    let row = ProductRow {
        id: id.clone(),
        slug,
        title,
        description: input.description.trim().to_owned(),
        status: input.status.as_str().to_owned(),
        brand: input.brand.map(|b| b.trim().to_owned()).filter(|b| !b.is_empty()),
        tags,
        created_at: now,
        updated_at: now,
    };
    store::insert_product(&mut tx, &row).await?;
    for (position, (sku, vtitle, prices, track, threshold)) in variants.iter().enumerate() {
        let vid = VariantId::new().to_string();
        let inserted = store::insert_variant(&mut tx, &NewVariant {
            id: &vid,
            product_id: &id,
            sku: sku.as_str(),
            title: vtitle,
            track_inventory: *track,
            low_stock_threshold: *threshold,
            position: position as i32,
            prices,
        })
        .await;
        match inserted {
            Err(e) if e.is_unique_violation() => return Err(CatalogError::SkuTaken(sku.as_str().to_owned())),
            other => other?,
        }
    }
    outbox::enqueue(&mut tx, &Envelope::new("product.created", &id, json!({"product_id": id, "status": row.status}))).await?;
    tx.commit().await?;
    find(db, &id, true).await
}

/// A product by id or slug; drafts and archived products only for staff.
pub async fn find(db: &Db, id_or_slug: &str, staff: bool) -> Result<Product, CatalogError> {
    let row = store::product(db, id_or_slug).await?.ok_or(CatalogError::ProductNotFound)?;
    if !staff && row.status != "active" {
        return Err(CatalogError::ProductNotFound);
    }
    let variants = store::variants(db, std::slice::from_ref(&row.id)).await?;
    Ok(Product { row, variants })
}

pub struct ListFilter<'a> {
    pub status: Option<&'a str>,
    pub brand: Option<&'a str>,
    pub tag: Option<&'a str>,
}

/// A page of products (`limit + 1` rows, for the page builder) with variants.
pub async fn list(db: &Db, filter: &ListFilter<'_>, after: Option<&str>, limit: u32) -> Result<Vec<Product>, CatalogError> {
    let rows = store::products(db, filter.status, filter.brand, filter.tag, after, limit).await?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut variants = store::variants(db, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mine: Vec<VariantRow> = variants.extract_if(.., |v| v.product_id == row.id).collect();
            Product { row, variants: mine }
        })
        .collect())
}

pub struct Change {
    pub slug: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<Status>,
    pub brand: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
}

pub async fn update(db: &Db, id: &str, change: Change) -> Result<Product, CatalogError> {
    let title = change.title.as_deref().map(|t| domain::parse_title(t, "title")).transpose()?;
    let slug = change.slug.as_deref().map(domain::parse_slug).transpose()?;
    let tags = change.tags.as_deref().map(clean_tags).transpose()?;
    let mut tx = db.begin().await?;
    if let Some(s) = &slug
        && store::product(db, s).await?.is_some_and(|p| p.id != id)
    {
        return Err(CatalogError::SlugTaken(s.clone()));
    }
    let updated = store::update_product(&mut tx, id, &ProductChange {
        slug: slug.as_deref(),
        title: title.as_deref(),
        description: change.description.as_deref().map(str::trim),
        status: change.status.map(Status::as_str),
        brand: change.brand.as_ref().map(|b| b.as_deref()),
        tags: tags.as_deref(),
    })
    .await;
    match updated {
        Ok(true) => {}
        Ok(false) => return Err(CatalogError::ProductNotFound),
        Err(e) if e.is_unique_violation() => return Err(CatalogError::SlugTaken(slug.unwrap_or_default())),
        Err(e) => return Err(e.into()),
    }
    outbox::enqueue(&mut tx, &Envelope::new("product.updated", id, json!({"product_id": id}))).await?;
    tx.commit().await?;
    find(db, id, true).await
}
