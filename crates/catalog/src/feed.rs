//! What the search service reads about products: every product with the
//! words shoppers search for, its categories (with their ancestors), its
//! lowest price in a currency and whether any variant can be sold.

use std::collections::BTreeMap;

use platform::db::Db;
use serde::{Deserialize, Serialize};

use crate::error::CatalogError;
use crate::products::{self, ListFilter, Product};
use crate::store::{self, CategoryRow, Sort};

/// A product as search indexes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub id: String,
    pub slug: String,
    /// `active` products are searchable; others are removed from the index.
    pub status: String,
    pub title: String,
    pub brand: Option<String>,
    pub tags: Vec<String>,
    /// The product's categories and all their ancestors.
    pub category_ids: Vec<String>,
    pub category_names: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub description: String,
    pub skus: Vec<String>,
    /// The lowest variant price in the asked currency.
    pub price: Option<i64>,
    pub in_stock: bool,
    pub created_ms: i64,
}

fn listing(p: Product, all: &[CategoryRow], currency: &str) -> Listing {
    let mut category_ids: Vec<String> = Vec::new();
    let mut category_names: Vec<String> = Vec::new();
    for c in &p.categories {
        let mut next = Some(c.id.clone());
        while let Some(id) = next {
            let Some(row) = all.iter().find(|x| x.id == id) else { break };
            if !category_ids.contains(&row.id) {
                category_ids.push(row.id.clone());
                category_names.push(row.name.clone());
            }
            next = row.parent_id.clone();
        }
    }
    let price = p.variants.iter().filter_map(|v| v.prices.iter().find(|pr| pr.0 == currency).map(|pr| pr.1)).min();
    let in_stock = p.variants.iter().any(|v| !v.track_inventory || v.allow_backorder || v.on_hand - v.reserved > 0);
    Listing {
        attributes: serde_json::from_str(&p.row.attributes).unwrap_or_default(),
        skus: p.variants.iter().map(|v| v.sku.clone()).collect(),
        id: p.row.id,
        slug: p.row.slug,
        status: p.row.status,
        title: p.row.title,
        brand: p.row.brand,
        tags: p.row.tags,
        category_ids,
        category_names,
        description: p.row.description,
        price,
        in_stock,
        created_ms: (p.row.created_at.unix_timestamp_nanos() / 1_000_000) as i64,
    }
}

/// Active products, oldest first, after the cursor `after`: `(cursor, listing)`.
pub async fn listings(db: &Db, after: Option<&str>, limit: u32, currency: &str) -> Result<Vec<(String, Listing)>, CatalogError> {
    let filter = ListFilter {
        status: Some("active"),
        text: None,
        low_stock: false,
        brand: None,
        tag: None,
        category: None,
        currency: None,
        min_price: None,
        max_price: None,
        in_stock: false,
        sort: Sort::Oldest,
    };
    let page = products::list(db, &filter, after, limit).await?;
    let all = store::categories(db).await?;
    Ok(page.into_iter().take(limit as usize).map(|(key, p)| (key, listing(p, &all, currency))).collect())
}

/// One product whatever its status; `None` when it no longer exists.
pub async fn listing_of(db: &Db, id: &str, currency: &str) -> Result<Option<Listing>, CatalogError> {
    match products::find(db, id, true).await {
        Ok(p) => Ok(Some(listing(p, &store::categories(db).await?, currency))),
        Err(CatalogError::ProductNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The product a SKU belongs to.
pub async fn product_of_sku(db: &Db, sku: &str) -> Result<Option<String>, CatalogError> {
    Ok(store::product_of_sku(db, sku).await?)
}
