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
    /// The product's first picture, sized for a list (absent without one).
    #[serde(default)]
    pub thumbnail: Option<Thumbnail>,
}

/// A picture small enough for a product list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumbnail {
    pub url: String,
    /// Pixels, when known (a picture kept elsewhere has no recorded size).
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// Narrowest width a list's picture is drawn from: sharp on a phone's
/// two-column grid at twice its pixel density.
const LIST_WIDTH: u32 = 320;

/// The first picture's copy for lists: the narrowest thumbnail at least
/// [`LIST_WIDTH`] wide, else the widest one, else the picture itself.
pub fn thumbnail(media: &[store::MediaRow]) -> Option<Thumbnail> {
    let first = media.iter().min_by_key(|m| (m.position, m.id.clone()))?;
    let size = |w: u32| -> (Option<u32>, Option<u32>) {
        match (first.width, first.height) {
            (Some(ow), Some(oh)) if ow > 0 => {
                let h = (u64::from(oh.unsigned_abs()) * u64::from(w) / u64::from(ow.unsigned_abs())).max(1);
                (Some(w), u32::try_from(h).ok())
            }
            _ => (None, None),
        }
    };
    let chosen = first.thumbnails.iter().filter(|(w, _)| *w >= LIST_WIDTH).min_by_key(|(w, _)| *w).or_else(|| first.thumbnails.iter().max_by_key(|(w, _)| *w));
    if let Some((w, key)) = chosen {
        let (width, height) = size(*w);
        return Some(Thumbnail { url: format!("/media/{key}"), width, height });
    }
    let url = match (&first.object_key, &first.source_url) {
        (Some(key), _) => format!("/media/{key}"),
        (None, Some(url)) => url.clone(),
        (None, None) => return None,
    };
    let known = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
    Some(Thumbnail { url, width: known(first.width), height: known(first.height) })
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
    let thumbnail = thumbnail(&p.media);
    Listing {
        thumbnail,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(position: i32, size: Option<(i32, i32)>, thumbnails: &[u32], source: Option<&str>) -> store::MediaRow {
        store::MediaRow {
            id: format!("med_{position}"),
            product_id: "prd_1".into(),
            object_key: source.is_none().then(|| format!("products/prd_1/med_{position}.png")),
            source_url: source.map(str::to_owned),
            content_type: None,
            alt: String::new(),
            position,
            width: size.map(|s| s.0),
            height: size.map(|s| s.1),
            byte_size: None,
            thumbnails: thumbnails.iter().map(|w| (*w, format!("products/prd_1/med_{position}-{w}.jpg"))).collect(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn lists_get_the_first_pictures_copy_sized_for_them() {
        let media = [picture(1, Some((1200, 800)), &[160, 480, 960], None), picture(0, Some((600, 600)), &[160, 480], None)];
        assert_eq!(thumbnail(&media), Some(Thumbnail { url: "/media/products/prd_1/med_0-480.jpg".into(), width: Some(480), height: Some(480) }));
        let wide = [picture(0, Some((1200, 800)), &[160, 480, 960], None)];
        assert_eq!(thumbnail(&wide).map(|t| (t.width, t.height)), Some((Some(480), Some(320))));
        let small = [picture(0, Some((300, 150)), &[160], None)];
        assert_eq!(thumbnail(&small).map(|t| t.url), Some("/media/products/prd_1/med_0-160.jpg".into()), "the widest copy there is");
        let tiny = [picture(0, Some((120, 90)), &[], None)];
        assert_eq!(thumbnail(&tiny), Some(Thumbnail { url: "/media/products/prd_1/med_0.png".into(), width: Some(120), height: Some(90) }));
        let elsewhere = [picture(0, None, &[], Some("https://cdn.example/a.jpg"))];
        assert_eq!(thumbnail(&elsewhere), Some(Thumbnail { url: "https://cdn.example/a.jpg".into(), width: None, height: None }));
        assert_eq!(thumbnail(&[]), None);
    }
}
