//! The demo shop's catalog, and synthetic catalogs of any size for
//! benchmarks: made up from word lists, deterministic, no network.

use kernel::Envelope;
use kernel::id::{CategoryId, ProductId, VariantId};
use platform::db::Db;
use platform::outbox;
use serde_json::json;
use time::OffsetDateTime;

use crate::error::CatalogError;
use crate::media::MediaStore;
use crate::store::{self, CategoryRow, LedgerEntry, NewVariant, ProductRow, DEFAULT_LOCATION};

/// A sub-category: its name, the nouns of its products, whether they come in sizes.
type Sub = (&'static str, &'static [&'static str], bool);

/// Top-level categories and their sub-categories.
const TREE: &[(&str, &[Sub])] = &[
    ("Men", &[("Shirts", &["Oxford Shirt", "Linen Shirt", "Flannel Shirt", "Polo"], true),
              ("Trousers", &["Chinos", "Jeans", "Cargo Trousers", "Joggers"], true)]),
    ("Women", &[("Dresses", &["Wrap Dress", "Midi Dress", "Shirt Dress", "Slip Dress"], true),
                ("Tops", &["Blouse", "T-Shirt", "Tank Top", "Cardigan"], true)]),
    ("Home", &[("Kitchen", &["Mug", "Teapot", "Chef's Knife", "Cutting Board"], false),
               ("Decor", &["Vase", "Throw Pillow", "Candle", "Wall Clock"], false)]),
    ("Accessories", &[("Bags", &["Tote Bag", "Backpack", "Weekender", "Crossbody Bag"], false),
                      ("Hats", &["Beanie", "Cap", "Bucket Hat", "Sun Hat"], false)]),
];
const ADJECTIVES: &[&str] = &["Classic", "Organic", "Everyday", "Vintage", "Relaxed", "Essential", "Heritage", "Modern",
    "Coastal", "Alpine", "Urban", "Handmade"];
const MATERIALS: &[&str] = &["Cotton", "Linen", "Wool", "Denim", "Hemp", "Bamboo", "Leather", "Ceramic", "Oak", "Canvas"];
const BRANDS: &[&str] = &["Northwind", "Tailspin", "Fabrikam", "Contoso", "Litware", "Proseware"];
const SIZES: &[&str] = &["S", "M", "L", "XL"];

/// A small deterministic generator (no security use).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }
}

/// A stored placeholder picture: (original key, width, thumbnails).
type Picture = (String, u32, Vec<(u32, String)>);

/// Loads the demo catalog unless the shop has products already, with a
/// generated placeholder picture per sub-category when `media` is given.
pub async fn load_demo(db: &Db, media: Option<&MediaStore>) -> Result<usize, CatalogError> {
    load_demo_with_progress(db, media, &|_, _| {}).await
}

/// [`load_demo`], telling `progress` the products made so far and the total after each batch.
pub async fn load_demo_with_progress(db: &Db, media: Option<&MediaStore>, progress: &(dyn Fn(usize, usize) + Send + Sync)) -> Result<usize, CatalogError> {
    if !store::products(db, &store::ProductQuery {
        status: None, text: None, low_stock: false, brand: None, tag: None, categories: None, currency: "USD", min_price: None,
        max_price: None, in_stock: false, sort: store::Sort::Oldest, after: None, limit: 1,
    })
    .await?
    .is_empty()
    {
        return Ok(0);
    }
    let mut pictures = Vec::new();
    if let Some(media) = media {
        let subs = TREE.iter().flat_map(|(_, subs)| subs.iter());
        for (i, (name, _, _)) in subs.enumerate() {
            pictures.push(crate::media::store_placeholder(media, &crate::domain::slugify(name), i as u32 * 45).await?);
        }
    }
    generate_with(db, 240, true, &pictures, progress).await
}

/// Adds `count` active products (with categories, 1–4 variants, USD and EUR
/// prices, stock) and returns how many were made. Writes in batches; events
/// are written only for the demo (a benchmark catalog does not announce).
pub async fn generate(db: &Db, count: usize, announce: bool) -> Result<usize, CatalogError> {
    generate_with(db, count, announce, &[], &|_, _| {}).await
}

/// [`generate`], telling `progress` the products made so far and the total after each batch.
pub async fn generate_with_progress(db: &Db, count: usize, announce: bool, progress: &(dyn Fn(usize, usize) + Send + Sync)) -> Result<usize, CatalogError> {
    generate_with(db, count, announce, &[], progress).await
}

async fn generate_with(db: &Db, count: usize, announce: bool, pictures: &[Picture], progress: &(dyn Fn(usize, usize) + Send + Sync)) -> Result<usize, CatalogError> {
    let categories = ensure_categories(db).await?;
    let subs: Vec<(&CategoryRow, &[&str], bool)> = TREE
        .iter()
        .flat_map(|(_, subs)| subs.iter())
        .filter_map(|(name, nouns, sized)| Some((categories.iter().find(|c| c.name == *name)?, *nouns, *sized)))
        .collect();
    let run = kernel::id::encode_base32(kernel::id::Uuid::now_v7().as_u128()).to_lowercase();
    let mut rng = Lcg(count as u64 ^ 0x5eed);
    let mut made = 0;
    while made < count {
        let mut tx = db.begin().await?;
        for _ in 0..(count - made).min(500) {
            let sub = made % subs.len();
            let (category, nouns, sized) = subs[sub];
            let title = format!("{} {} {}", rng.pick(ADJECTIVES), rng.pick(MATERIALS), rng.pick(nouns));
            let id = ProductId::new().to_string();
            let now = OffsetDateTime::now_utc();
            let row = ProductRow {
                id: id.clone(),
                slug: format!("{}-{}-{made}", crate::domain::slugify(&title), &run[20..]),
                title: title.clone(),
                description: format!("The {} — made to last, and made to be worn or used every day.", title.to_lowercase()),
                status: "active".into(),
                brand: Some(rng.pick(BRANDS).to_owned()),
                tags: vec![category.slug.clone(), rng.pick(MATERIALS).to_lowercase()],
                seo_title: None,
                seo_description: None,
                attributes: json!({"material": rng.pick(MATERIALS).to_lowercase()}).to_string(),
                options: if sized { json!([{"name": "Size", "values": SIZES}]).to_string() } else { "[]".into() },
                created_at: now,
                updated_at: now,
            };
            store::insert_product(&mut tx, &row).await?;
            store::set_product_categories(&mut tx, &id, std::slice::from_ref(&category.id)).await?;
            if let Some((key, width, thumbnails)) = pictures.get(sub) {
                store::insert_media(&mut tx, &store::MediaRow {
                    id: kernel::id::MediaId::new().to_string(),
                    product_id: id.clone(),
                    object_key: Some(key.clone()),
                    source_url: None,
                    content_type: Some("image/png".into()),
                    alt: title.clone(),
                    position: 0,
                    width: Some(*width as i32),
                    height: Some(*width as i32),
                    byte_size: None,
                    thumbnails: thumbnails.clone(),
                    created_at: now,
                })
                .await?;
            }
            let base = 900 + (rng.next() % 120) as i64 * 100 + 99;
            let sizes: &[&str] = if sized { SIZES } else { &["One size"] };
            for (position, size) in sizes.iter().enumerate() {
                let sku = format!("D{}-{made:06}-{}", &run[20..], if sized { *size } else { "OS" }).to_uppercase();
                let prices = vec![("USD".to_owned(), base, None), ("EUR".to_owned(), base * 92 / 100, None)];
                let vtitle = if sized { size.to_string() } else { "Default".to_owned() };
                let values = if sized { json!([size]).to_string() } else { "[]".to_owned() };
                store::insert_variant(&mut tx, &NewVariant {
                    id: &VariantId::new().to_string(),
                    product_id: &id,
                    sku: &sku,
                    title: &vtitle,
                    barcode: None,
                    weight_grams: Some(150 + (rng.next() % 900) as i64),
                    option_values: &values,
                    track_inventory: true,
                    allow_backorder: false,
                    low_stock_threshold: 3,
                    position: position as i32,
                    prices: &prices,
                })
                .await?;
                // Some sell out, some run low, most are well stocked.
                let stock = match rng.next() % 10 {
                    0 => 0,
                    1 => 2,
                    _ => 10 + (rng.next() % 90) as i64,
                };
                if stock > 0 {
                    store::adjust(&mut tx, &sku, DEFAULT_LOCATION, stock).await?;
                    store::record(&mut tx, &LedgerEntry {
                        sku: &sku, location: DEFAULT_LOCATION, delta: stock, on_hand_after: stock,
                        reason: "received", actor: None, reference: Some("seed"),
                    })
                    .await?;
                }
            }
            if announce {
                outbox::enqueue(&mut tx, &Envelope::new("product.created", &id, json!({"product_id": id, "status": "active"}))).await?;
            }
            made += 1;
        }
        tx.commit().await?;
        progress(made, count);
    }
    Ok(made)
}

/// The demo category tree, created once.
async fn ensure_categories(db: &Db) -> Result<Vec<CategoryRow>, CatalogError> {
    let mut all = store::categories(db).await?;
    for (position, (top, subs)) in TREE.iter().enumerate() {
        let slug = crate::domain::slugify(top);
        let parent = match all.iter().find(|c| c.slug == slug) {
            Some(c) => c.id.clone(),
            None => {
                let row = CategoryRow { id: CategoryId::new().to_string(), parent_id: None, slug, name: (*top).into(), position: position as i32 };
                store::insert_category(db, &row).await?;
                all.push(row.clone());
                row.id
            }
        };
        for (i, (name, _, _)) in subs.iter().enumerate() {
            let slug = crate::domain::slugify(name);
            if !all.iter().any(|c| c.slug == slug) {
                let row = CategoryRow { id: CategoryId::new().to_string(), parent_id: Some(parent.clone()), slug, name: (*name).into(), position: i as i32 };
                store::insert_category(db, &row).await?;
                all.push(row);
            }
        }
    }
    Ok(all)
}
