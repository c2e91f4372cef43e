//! Products and their variants: creating, changing, finding, listing.

use std::collections::BTreeMap;

use kernel::Envelope;
use kernel::id::{ProductId, VariantId};
use platform::db::{Db, Tx};
use platform::outbox;
use serde_json::json;
use time::OffsetDateTime;

use crate::categories;
use crate::domain::{self, ProductOption, Sku, Status};
use crate::error::CatalogError;
use crate::store::{self, CategoryRow, NewVariant, Price, ProductChange, ProductQuery, ProductRow, Sort, VariantRow};

pub struct NewProduct {
    pub title: String,
    pub slug: Option<String>,
    pub description: String,
    pub status: Status,
    pub brand: Option<String>,
    pub tags: Vec<String>,
    pub categories: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub seo_title: Option<String>,
    pub seo_description: Option<String>,
    /// Without options a product has one variant; with them, one variant per
    /// combination offered.
    pub options: Vec<ProductOption>,
    pub variants: Vec<NewVariantInput>,
}

pub struct NewVariantInput {
    pub sku: String,
    pub title: Option<String>,
    pub prices: BTreeMap<String, i64>,
    pub compare_at_prices: BTreeMap<String, i64>,
    pub barcode: Option<String>,
    pub weight_grams: Option<i64>,
    /// One value per option of the product, in its order.
    pub option_values: Vec<String>,
    pub track_inventory: bool,
    pub allow_backorder: bool,
    pub low_stock_threshold: Option<i64>,
}

/// A product with its variants and categories.
pub struct Product {
    pub row: ProductRow,
    pub variants: Vec<VariantRow>,
    pub categories: Vec<CategoryRow>,
    pub media: Vec<store::MediaRow>,
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

fn clean_attributes(attributes: &BTreeMap<String, String>) -> Result<String, CatalogError> {
    for (k, v) in attributes {
        if k.trim().is_empty() || k.len() > 50 || v.len() > 500 {
            return Err(domain::invalid(format!("attributes.{k}"), "invalid_attribute", "names up to 50, values up to 500 characters").into());
        }
    }
    let cleaned: BTreeMap<String, String> =
        attributes.iter().map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned())).collect();
    Ok(serde_json::to_string(&cleaned).unwrap_or_else(|_| "{}".into()))
}

fn optional_text(value: Option<String>, field: &str, max: usize) -> Result<Option<String>, CatalogError> {
    match value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
        Some(v) if v.chars().count() > max => Err(domain::invalid(field, "too_long", format!("at most {max} characters")).into()),
        other => Ok(other),
    }
}

/// Checks category ids exist; returns them without repeats.
async fn known_categories(db: &Db, ids: &[String]) -> Result<Vec<String>, CatalogError> {
    let all = store::categories(db).await?;
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let found = all.iter().find(|c| &c.id == id || &c.slug == id).ok_or_else(|| {
            CatalogError::from(domain::invalid(format!("categories[{i}]"), "unknown_category", "no such category"))
        })?;
        if !out.contains(&found.id) {
            out.push(found.id.clone());
        }
    }
    Ok(out)
}

fn parse_variant_prices(v: &NewVariantInput, i: usize) -> Result<Vec<Price>, CatalogError> {
    let field = format!("variants[{i}].prices");
    let prices = domain::parse_prices(&v.prices, &field)?;
    let compare = if v.compare_at_prices.is_empty() {
        Vec::new()
    } else {
        domain::parse_prices(&v.compare_at_prices, &format!("variants[{i}].compare_at_prices"))?
    };
    if let Some((c, _)) = compare.iter().find(|(c, _)| !prices.iter().any(|(p, _)| p == c)) {
        return Err(domain::invalid(format!("variants[{i}].compare_at_prices.{c}"), "no_price", "set a price in this currency first").into());
    }
    Ok(prices
        .into_iter()
        .map(|(c, a)| (c.to_string(), a, compare.iter().find(|(cc, _)| *cc == c).map(|(_, x)| *x)))
        .collect())
}

fn options_json(options: &[ProductOption]) -> String {
    serde_json::to_string(options).unwrap_or_else(|_| "[]".into())
}

fn values_json(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

/// A variant's option values, checked against the product's options and
/// against the combinations other variants already take.
fn variant_values(
    options: &[ProductOption],
    raw: &[String],
    field: &str,
    taken: &[Vec<String>],
) -> Result<Vec<String>, CatalogError> {
    if options.is_empty() && !raw.is_empty() {
        return Err(domain::invalid(field, "no_options", "the product declares no options").into());
    }
    let values = domain::parse_option_values(options, raw, field)?;
    if taken.contains(&values) {
        let reason = format!("another variant is already {}", domain::variant_title(&values));
        return Err(domain::invalid(field, "duplicate_combination", reason).into());
    }
    Ok(values)
}

async fn unique_slug(tx: &mut Tx, wanted: Option<&str>, title: &str) -> Result<String, CatalogError> {
    match wanted {
        Some(s) => {
            let s = domain::parse_slug(s)?;
            if store::slug_taken(tx, &s).await? {
                return Err(CatalogError::SlugTaken(s));
            }
            Ok(s)
        }
        None => {
            let base = domain::slugify(title);
            let mut candidate = base.clone();
            let mut n = 2;
            while store::slug_taken(tx, &candidate).await? {
                candidate = format!("{base}-{n}");
                n += 1;
            }
            Ok(candidate)
        }
    }
}

pub async fn create(db: &Db, input: NewProduct) -> Result<Product, CatalogError> {
    let title = domain::parse_title(&input.title, "title")?;
    let tags = clean_tags(&input.tags)?;
    let attributes = clean_attributes(&input.attributes)?;
    let seo_title = optional_text(input.seo_title, "seo_title", 200)?;
    let seo_description = optional_text(input.seo_description, "seo_description", 500)?;
    let categories = known_categories(db, &input.categories).await?;
    let options = domain::parse_options(&input.options)?;
    if input.variants.is_empty() {
        return Err(domain::invalid("variants", "no_variants", "a product has at least one variant").into());
    }
    if options.is_empty() && input.variants.len() > 1 {
        return Err(domain::invalid("options", "options_required", "declare options to offer more than one variant").into());
    }
    let mut variants: Vec<(Sku, String, Vec<Price>, &NewVariantInput, String)> = Vec::new();
    let mut combinations: Vec<Vec<String>> = Vec::new();
    for (i, v) in input.variants.iter().enumerate() {
        let sku = Sku::parse(&v.sku, &format!("variants[{i}].sku"))?;
        if variants.iter().any(|(s, ..)| *s == sku) {
            return Err(domain::invalid(format!("variants[{i}].sku"), "duplicate_sku", "each variant needs its own SKU").into());
        }
        let values = variant_values(&options, &v.option_values, &format!("variants[{i}].option_values"), &combinations)?;
        let vtitle = match &v.title {
            Some(t) => domain::parse_title(t, &format!("variants[{i}].title"))?,
            None => domain::variant_title(&values),
        };
        let values_text = values_json(&values);
        combinations.push(values);
        if v.weight_grams.is_some_and(|w| !(0..=1_000_000_000).contains(&w)) {
            return Err(domain::invalid(format!("variants[{i}].weight_grams"), "invalid_weight", "grams, 0 or more").into());
        }
        variants.push((sku, vtitle, parse_variant_prices(v, i)?, v, values_text));
    }
    let id = ProductId::new().to_string();
    let mut tx = db.begin().await?;
    let slug = unique_slug(&mut tx, input.slug.as_deref(), &title).await?;
    let now = OffsetDateTime::now_utc();
    let row = ProductRow {
        id: id.clone(),
        slug,
        title,
        description: input.description.trim().to_owned(),
        status: input.status.as_str().to_owned(),
        brand: input.brand.map(|b| b.trim().to_owned()).filter(|b| !b.is_empty()),
        tags,
        seo_title,
        seo_description,
        attributes,
        options: options_json(&options),
        created_at: now,
        updated_at: now,
    };
    store::insert_product(&mut tx, &row).await?;
    for (position, (sku, vtitle, prices, v, values)) in variants.iter().enumerate() {
        let vid = VariantId::new().to_string();
        let inserted = store::insert_variant(&mut tx, &NewVariant {
            id: &vid,
            product_id: &id,
            sku: sku.as_str(),
            title: vtitle,
            barcode: v.barcode.as_deref().map(str::trim).filter(|b| !b.is_empty()),
            weight_grams: v.weight_grams,
            option_values: values,
            track_inventory: v.track_inventory,
            allow_backorder: v.allow_backorder,
            low_stock_threshold: v.low_stock_threshold.unwrap_or(5).clamp(0, 1_000_000),
            position: position as i32,
            prices,
        })
        .await;
        match inserted {
            Err(e) if e.is_unique_violation() => return Err(CatalogError::SkuTaken(sku.as_str().to_owned())),
            other => other?,
        }
    }
    store::set_product_categories(&mut tx, &id, &categories).await?;
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
    let mut all = assemble(db, vec![row], None).await?;
    all.pop().ok_or(CatalogError::ProductNotFound)
}

/// `rows` with their variants, categories and media, in a fixed number of
/// queries; `categories` is every category when the caller has read them.
pub(crate) async fn assemble(db: &Db, rows: Vec<ProductRow>, categories: Option<Vec<CategoryRow>>) -> Result<Vec<Product>, CatalogError> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut variants = store::variants(db, &ids).await?;
    let links = store::product_categories(db, &ids).await?;
    let mut media = store::media(db, &ids).await?;
    let all_categories = match categories {
        _ if links.is_empty() => Vec::new(),
        Some(all) => all,
        None => store::categories(db).await?,
    };
    Ok(rows
        .into_iter()
        .map(|row| {
            let mine: Vec<VariantRow> = variants.extract_if(.., |v| v.product_id == row.id).collect();
            let categories = links
                .iter()
                .filter(|(p, _)| *p == row.id)
                .filter_map(|(_, c)| all_categories.iter().find(|x| &x.id == c).cloned())
                .collect();
            let pictures = media.extract_if(.., |m| m.product_id == row.id).collect();
            Product { row, variants: mine, categories, media: pictures }
        })
        .collect())
}

pub struct ListFilter<'a> {
    pub status: Option<&'a str>,
    /// Words the title or a SKU contains, in any case.
    pub text: Option<&'a str>,
    /// Only products with a tracked variant at or under its low-stock threshold.
    pub low_stock: bool,
    pub brand: Option<&'a str>,
    pub tag: Option<&'a str>,
    /// A category id or slug; products in it or below it.
    pub category: Option<&'a str>,
    pub currency: Option<&'a str>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: bool,
    pub sort: Sort,
}

/// What a list asks of the store, checked: the categories under the one
/// named, and the currency of its prices.
pub(crate) struct Asked {
    categories: Option<Vec<String>>,
    /// Every category, when they were read to find those under the one named.
    all_categories: Option<Vec<CategoryRow>>,
    currency: String,
}

impl Asked {
    pub(crate) async fn of(db: &Db, f: &ListFilter<'_>) -> Result<Asked, CatalogError> {
        let (categories, all_categories) = match f.category {
            Some(c) => {
                let all = store::categories(db).await?;
                let root = all.iter().find(|x| x.id == c || x.slug == c).ok_or(CatalogError::CategoryNotFound)?;
                (Some(categories::descendants(&all, &root.id)), Some(all))
            }
            None => (None, None),
        };
        let currency = match f.currency {
            Some(c) => kernel::money::Currency::parse(c)
                .map_err(|_| domain::invalid("currency", "invalid_currency", "an ISO 4217 code"))?
                .to_string(),
            None => "USD".to_owned(),
        };
        if f.min_price.is_some_and(|p| p < 0) || f.max_price.is_some_and(|p| p < 0) {
            return Err(domain::invalid("min_price", "invalid_amount", "minor units, 0 or more").into());
        }
        Ok(Asked { categories, all_categories, currency })
    }

    pub(crate) fn query<'a>(&'a self, f: &ListFilter<'a>, after: Option<&'a str>, limit: u32) -> ProductQuery<'a> {
        ProductQuery {
            status: f.status,
            text: f.text,
            low_stock: f.low_stock,
            brand: f.brand,
            tag: f.tag,
            categories: self.categories.as_deref(),
            currency: &self.currency,
            min_price: f.min_price,
            max_price: f.max_price,
            in_stock: f.in_stock,
            sort: f.sort,
            after,
            limit,
        }
    }
}

/// A page of products: `limit + 1` of them with their cursors.
pub async fn list(db: &Db, f: &ListFilter<'_>, after: Option<&str>, limit: u32) -> Result<Vec<(String, Product)>, CatalogError> {
    let mut asked = Asked::of(db, f).await?;
    let listed = store::products(db, &asked.query(f, after, limit)).await?;
    let keys: Vec<String> = listed.iter().map(|l| l.key.clone()).collect();
    let products = assemble(db, listed.into_iter().map(|l| l.row).collect(), asked.all_categories.take()).await?;
    Ok(keys.into_iter().zip(products).collect())
}

#[derive(Clone, Default)]
pub struct Change {
    pub slug: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<Status>,
    pub brand: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub categories: Option<Vec<String>>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub seo_title: Option<Option<String>>,
    pub seo_description: Option<Option<String>>,
    /// Replaces the options; every variant's values must still fit them.
    pub options: Option<Vec<ProductOption>>,
}

pub async fn update(db: &Db, id: &str, change: Change) -> Result<Product, CatalogError> {
    let existing = store::product(db, id).await?.ok_or(CatalogError::ProductNotFound)?;
    let id = existing.id.as_str();
    let title = change.title.as_deref().map(|t| domain::parse_title(t, "title")).transpose()?;
    let slug = change.slug.as_deref().map(domain::parse_slug).transpose()?;
    let tags = change.tags.as_deref().map(clean_tags).transpose()?;
    let attributes = change.attributes.as_ref().map(clean_attributes).transpose()?;
    let seo_title = change.seo_title.map(|t| optional_text(t, "seo_title", 200)).transpose()?;
    let seo_description = change.seo_description.map(|t| optional_text(t, "seo_description", 500)).transpose()?;
    let categories = match &change.categories {
        Some(c) => Some(known_categories(db, c).await?),
        None => None,
    };
    if let Some(s) = &slug
        && store::product(db, s).await?.is_some_and(|p| p.id != id)
    {
        return Err(CatalogError::SlugTaken(s.clone()));
    }
    let options = change.options.as_deref().map(domain::parse_options).transpose()?;
    let mut tx = db.begin().await?;
    if let Some(options) = &options {
        let existing = store::option_values_of(&mut tx, id).await?;
        if options.is_empty() && existing.len() > 1 {
            return Err(domain::invalid("options", "options_required", "this product has several variants").into());
        }
        // The one default variant of a product without options takes the
        // first value of each new option.
        let first: Vec<String> = options.iter().filter_map(|o| o.values.first().cloned()).collect();
        for (sku, values) in &existing {
            if values.is_empty() && !options.is_empty() && existing.len() == 1 {
                let values = values_json(&first);
                let change = store::VariantChange { option_values: Some(&values), title: Some(&domain::variant_title(&first)), ..Default::default() };
                store::update_variant(&mut tx, sku, &change).await?;
            } else if !options.is_empty() {
                domain::parse_option_values(options, values, "options").map_err(|_| {
                    domain::invalid("options", "options_mismatch", format!("variant {sku} has values these options do not offer"))
                })?;
            }
        }
        if options.is_empty() {
            for (sku, _) in &existing {
                let change = store::VariantChange { option_values: Some("[]"), title: Some("Default"), ..Default::default() };
                store::update_variant(&mut tx, sku, &change).await?;
            }
        }
    }
    let options_text = options.as_deref().map(options_json);
    let updated = store::update_product(&mut tx, id, &ProductChange {
        slug: slug.as_deref(),
        title: title.as_deref(),
        description: change.description.as_deref().map(str::trim),
        status: change.status.map(Status::as_str),
        brand: change.brand.as_ref().map(|b| b.as_deref()),
        tags: tags.as_deref(),
        seo_title: seo_title.as_ref().map(|t| t.as_deref()),
        seo_description: seo_description.as_ref().map(|t| t.as_deref()),
        attributes: attributes.as_deref(),
        options: options_text.as_deref(),
    })
    .await;
    match updated {
        Ok(true) => {}
        Ok(false) => return Err(CatalogError::ProductNotFound),
        Err(e) if e.is_unique_violation() => return Err(CatalogError::SlugTaken(slug.unwrap_or_default())),
        Err(e) => return Err(e.into()),
    }
    if let Some(categories) = &categories {
        store::set_product_categories(&mut tx, id, categories).await?;
    }
    outbox::enqueue(&mut tx, &Envelope::new("product.updated", id, json!({"product_id": id}))).await?;
    tx.commit().await?;
    find(db, id, true).await
}

/// Deletes a product that was never ordered; one that was must be archived.
pub async fn delete(db: &Db, id: &str) -> Result<(), CatalogError> {
    let row = store::product(db, id).await?.ok_or(CatalogError::ProductNotFound)?;
    if store::product_was_ordered(db, &row.id).await? {
        return Err(CatalogError::ProductWasOrdered);
    }
    let mut tx = db.begin().await?;
    if !store::delete_product(&mut tx, &row.id).await? {
        return Err(CatalogError::ProductNotFound);
    }
    outbox::enqueue(&mut tx, &Envelope::new("product.deleted", &row.id, json!({"product_id": row.id}))).await?;
    tx.commit().await?;
    Ok(())
}

/// Adds a variant to a product.
pub async fn add_variant(db: &Db, product: &str, input: NewVariantInput) -> Result<Product, CatalogError> {
    let row = store::product(db, product).await?.ok_or(CatalogError::ProductNotFound)?;
    let options: Vec<ProductOption> = serde_json::from_str(&row.options).unwrap_or_default();
    if options.is_empty() {
        return Err(domain::invalid("option_values", "options_required", "declare the product's options first").into());
    }
    let sku = Sku::parse(&input.sku, "sku")?;
    let prices = parse_variant_prices(&input, 0)?;
    let mut tx = db.begin().await?;
    let taken: Vec<Vec<String>> = store::option_values_of(&mut tx, &row.id).await?.into_iter().map(|(_, v)| v).collect();
    let values = variant_values(&options, &input.option_values, "option_values", &taken)?;
    let title = match &input.title {
        Some(t) => domain::parse_title(t, "title")?,
        None => domain::variant_title(&values),
    };
    let position = store::variant_count(&mut tx, &row.id).await? as i32;
    let inserted = store::insert_variant(&mut tx, &NewVariant {
        id: &VariantId::new().to_string(),
        product_id: &row.id,
        sku: sku.as_str(),
        title: &title,
        barcode: input.barcode.as_deref(),
        weight_grams: input.weight_grams,
        option_values: &values_json(&values),
        track_inventory: input.track_inventory,
        allow_backorder: input.allow_backorder,
        low_stock_threshold: input.low_stock_threshold.unwrap_or(5).clamp(0, 1_000_000),
        position,
        prices: &prices,
    })
    .await;
    match inserted {
        Err(e) if e.is_unique_violation() => return Err(CatalogError::SkuTaken(sku.as_str().to_owned())),
        other => other?,
    }
    outbox::enqueue(&mut tx, &Envelope::new("product.updated", &row.id, json!({"product_id": row.id}))).await?;
    tx.commit().await?;
    find(db, &row.id, true).await
}

/// What can change on a variant; prices, when given, replace the old ones.
pub struct VariantPatch {
    pub title: Option<String>,
    pub prices: Option<BTreeMap<String, i64>>,
    pub compare_at_prices: BTreeMap<String, i64>,
    pub barcode: Option<Option<String>>,
    pub weight_grams: Option<Option<i64>>,
    pub track_inventory: Option<bool>,
    pub allow_backorder: Option<bool>,
    pub low_stock_threshold: Option<i64>,
    pub option_values: Option<Vec<String>>,
}

pub async fn update_variant(db: &Db, sku: &str, patch: VariantPatch) -> Result<Product, CatalogError> {
    let sku = Sku::parse(sku, "sku")?;
    let title = patch.title.as_deref().map(|t| domain::parse_title(t, "title")).transpose()?;
    let prices = match &patch.prices {
        Some(p) => Some(parse_variant_prices(
            &NewVariantInput {
                sku: sku.as_str().to_owned(),
                title: None,
                prices: p.clone(),
                compare_at_prices: patch.compare_at_prices.clone(),
                barcode: None,
                weight_grams: None,
                option_values: Vec::new(),
                track_inventory: true,
                allow_backorder: false,
                low_stock_threshold: None,
            },
            0,
        )?),
        None => None,
    };
    let mut tx = db.begin().await?;
    let (variant, product) = store::variant_ids(&mut tx, sku.as_str()).await?.ok_or_else(|| CatalogError::UnknownSku(sku.as_str().to_owned()))?;
    let values = match &patch.option_values {
        Some(raw) => {
            let row = store::product(db, &product).await?.ok_or(CatalogError::ProductNotFound)?;
            let options: Vec<ProductOption> = serde_json::from_str(&row.options).unwrap_or_default();
            let taken: Vec<Vec<String>> = store::option_values_of(&mut tx, &product)
                .await?
                .into_iter()
                .filter(|(s, _)| s != sku.as_str())
                .map(|(_, v)| v)
                .collect();
            Some(values_json(&variant_values(&options, raw, "option_values", &taken)?))
        }
        None => None,
    };
    store::update_variant(&mut tx, sku.as_str(), &store::VariantChange {
        title: title.as_deref(),
        barcode: patch.barcode.as_ref().map(|b| b.as_deref()),
        weight_grams: patch.weight_grams,
        track_inventory: patch.track_inventory,
        allow_backorder: patch.allow_backorder,
        low_stock_threshold: patch.low_stock_threshold.map(|t| t.clamp(0, 1_000_000)),
        option_values: values.as_deref(),
    })
    .await?;
    if let Some(prices) = &prices {
        store::set_prices(&mut tx, &variant, prices).await?;
    }
    outbox::enqueue(&mut tx, &Envelope::new("product.updated", &product, json!({"product_id": product}))).await?;
    tx.commit().await?;
    find(db, &product, true).await
}

/// Removes a variant that was never ordered and is not the product's last.
pub async fn delete_variant(db: &Db, sku: &str) -> Result<(), CatalogError> {
    let sku = Sku::parse(sku, "sku")?;
    let mut tx = db.begin().await?;
    let (_, product) = store::variant_ids(&mut tx, sku.as_str()).await?.ok_or_else(|| CatalogError::UnknownSku(sku.as_str().to_owned()))?;
    if store::variant_count(&mut tx, &product).await? <= 1 {
        return Err(CatalogError::LastVariant);
    }
    if store::sku_was_ordered(&mut tx, sku.as_str()).await? {
        return Err(CatalogError::ProductWasOrdered);
    }
    store::delete_variant(&mut tx, sku.as_str()).await?;
    outbox::enqueue(&mut tx, &Envelope::new("product.updated", &product, json!({"product_id": product}))).await?;
    tx.commit().await?;
    Ok(())
}

/// Sets the prices of many variants at once: all of them or none.
pub async fn bulk_prices(db: &Db, updates: &[(String, BTreeMap<String, i64>)]) -> Result<usize, CatalogError> {
    let mut parsed = Vec::new();
    for (i, (sku, prices)) in updates.iter().enumerate() {
        let sku = Sku::parse(sku, &format!("updates[{i}].sku"))?;
        let prices: Vec<Price> = domain::parse_prices(prices, &format!("updates[{i}].prices"))?
            .into_iter()
            .map(|(c, a)| (c.to_string(), a, None))
            .collect();
        parsed.push((i, sku, prices));
    }
    let mut tx = db.begin().await?;
    let mut products = Vec::new();
    for (i, sku, prices) in &parsed {
        let (variant, product) = store::variant_ids(&mut tx, sku.as_str())
            .await?
            .ok_or_else(|| CatalogError::from(domain::invalid(format!("updates[{i}].sku"), "unknown_sku", "no variant has this SKU")))?;
        store::set_prices(&mut tx, &variant, prices).await?;
        if !products.contains(&product) {
            products.push(product);
        }
    }
    for product in &products {
        outbox::enqueue(&mut tx, &Envelope::new("product.updated", product, json!({"product_id": product}))).await?;
    }
    tx.commit().await?;
    Ok(parsed.len())
}
