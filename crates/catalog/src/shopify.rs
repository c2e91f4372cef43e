//! Shopify's product CSV: import (validated row by row; a bad row is
//! reported with its line and does not stop the good ones; importing the
//! same file again updates rather than duplicates) and export in the same
//! format, so that export then import gives the same catalog back.
//!
//! Rows are grouped by `Handle` (our slug). The first row of a handle that
//! has a `Title` carries the product; rows with a SKU, a price or option
//! values carry variants; `Image Src` may sit on any row. Prices are read
//! and written in one currency. `Variant Inventory Qty` is the count at the
//! default stock location.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use kernel::money::Currency;
use serde::Serialize;
use utoipa::ToSchema;

use crate::categories::{self, CategoryInput};
use crate::domain::{self, ProductOption, Sku, Status};
use crate::error::CatalogError;
use crate::inventory::Inventory;
use crate::products::{self, Change, NewProduct, NewVariantInput, VariantPatch};
use crate::store::{self, ProductRow};

/// The columns written on export, in Shopify's order.
pub const COLUMNS: [&str; 28] = [
    "Handle",
    "Title",
    "Body (HTML)",
    "Vendor",
    "Product Category",
    "Type",
    "Tags",
    "Published",
    "Option1 Name",
    "Option1 Value",
    "Option2 Name",
    "Option2 Value",
    "Option3 Name",
    "Option3 Value",
    "Variant SKU",
    "Variant Grams",
    "Variant Inventory Tracker",
    "Variant Inventory Qty",
    "Variant Inventory Policy",
    "Variant Price",
    "Variant Compare At Price",
    "Variant Barcode",
    "Image Src",
    "Image Position",
    "Image Alt Text",
    "SEO Title",
    "SEO Description",
    "Status",
];

/// The columns that hold numbers we write: never guarded, so a negative
/// stock count stays a number. Every other column may hold text someone typed.
const NUMBER_COLUMNS: [&str; 5] = ["Variant Grams", "Variant Inventory Qty", "Variant Price", "Variant Compare At Price", "Image Position"];

/// Whether a spreadsheet would read `text` as a formula (OWASP's CSV
/// injection list), or it is one we guarded already and must guard again
/// so that import gives it back unchanged. A loop, not recursion: a cell may
/// start with any number of `'`.
fn needs_guard(text: &str) -> bool {
    matches!(text.bytes().find(|b| *b != b'\''), Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r'))
}

/// A text cell as written: a leading `'` makes a spreadsheet show a
/// would-be formula as text.
fn guard(text: String) -> String {
    if needs_guard(&text) { format!("'{text}") } else { text }
}

/// A cell as read: the `'` that `guard` added is taken off again.
fn unguard(text: &str) -> &str {
    match text.strip_prefix('\'') {
        Some(rest) if needs_guard(rest) => rest,
        _ => text,
    }
}

/// One problem with one row of the file.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowError {
    /// The line of the file the row starts on (the header is line 1).
    pub line: u64,
    pub handle: String,
    /// The column at fault, where one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ImportReport {
    pub rows: usize,
    pub products_created: usize,
    pub products_updated: usize,
    pub variants_created: usize,
    pub variants_updated: usize,
    pub images_recorded: usize,
    /// Rows that were skipped, and why.
    pub errors: Vec<RowError>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not a readable CSV file: {0}")]
    Csv(#[from] csv::Error),
    #[error("the file has no `Handle` column; is it a Shopify product CSV?")]
    NoHandle,
}

impl From<FileError> for CatalogError {
    fn from(e: FileError) -> Self {
        domain::invalid("file", "invalid_csv", e.to_string()).into()
    }
}

/// A row, by column name (names compared without regard to case).
struct Row {
    line: u64,
    cells: BTreeMap<String, String>,
}

impl Row {
    fn get(&self, column: &str) -> &str {
        self.cells.get(&column.to_ascii_lowercase()).map_or("", |v| unguard(v.trim()))
    }

    fn has(&self, column: &str) -> bool {
        !self.get(column).is_empty()
    }
}

/// A variant as the file gives it, checked.
struct VariantLine {
    line: u64,
    sku: Sku,
    values: Vec<String>,
    price: Option<i64>,
    compare_at: Option<i64>,
    grams: Option<i64>,
    barcode: Option<String>,
    track: bool,
    backorder: bool,
    quantity: Option<i64>,
}

/// A product as the file gives it.
struct Group {
    handle: String,
    rows: Vec<Row>,
}

/// Reads the whole file into groups of rows by handle, in file order.
fn read_groups(input: impl Read) -> Result<(Vec<Group>, usize), FileError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::None).from_reader(input);
    let headers: Vec<String> = reader
        .headers()?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase())
        .collect();
    if !headers.iter().any(|h| h == "handle") {
        return Err(FileError::NoHandle);
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut count = 0;
    for record in reader.records() {
        let record = record?;
        count += 1;
        let line = record.position().map_or(0, |p| p.line());
        let cells: BTreeMap<String, String> =
            headers.iter().cloned().zip(record.iter().map(str::to_owned)).collect();
        let row = Row { line, cells };
        let handle = row.get("Handle").to_owned();
        match groups.iter_mut().rev().find(|g| g.handle == handle) {
            Some(g) => g.rows.push(row),
            None => groups.push(Group { handle, rows: vec![row] }),
        }
    }
    Ok((groups, count))
}

fn error(row: &Row, handle: &str, column: Option<&str>, reason: impl Into<String>) -> RowError {
    RowError { line: row.line, handle: handle.to_owned(), column: column.map(str::to_owned), reason: reason.into() }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Whole grams; Shopify sometimes writes `250.0`.
fn parse_grams(text: &str) -> Option<i64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.bytes().any(|b| b != b'0') {
        return None;
    }
    whole.parse::<i64>().ok().filter(|g| (0..=1_000_000_000).contains(g))
}

/// The option names a product row declares; Shopify's `Title` / `Default
/// Title` means "no options".
fn option_names(row: &Row) -> Vec<String> {
    (1..=3)
        .map(|i| row.get(&format!("Option{i} Name")).to_owned())
        .take_while(|n| !n.is_empty())
        .filter(|n| !(n == "Title" && row.get("Option1 Value") == "Default Title"))
        .collect()
}

fn variant_line(
    row: &Row,
    handle: &str,
    index: usize,
    names: &[String],
    currency: Currency,
    tracker_column: bool,
) -> Result<VariantLine, RowError> {
    let sku_text = row.get("Variant SKU");
    let sku_text = if sku_text.is_empty() {
        // Shopify allows variants without SKUs; ours need one, made the same
        // way on every import of the file.
        format!("{}-{}", handle.to_ascii_uppercase(), index + 1).chars().take(64).collect()
    } else {
        sku_text.to_owned()
    };
    let sku = Sku::parse(&sku_text, "sku").map_err(|e| error(row, handle, Some("Variant SKU"), e.reason))?;
    let mut values = Vec::new();
    for i in 1..=names.len() {
        let value = row.get(&format!("Option{i} Value"));
        if value.is_empty() {
            return Err(error(row, handle, Some(&format!("Option{i} Value")), format!("a value for {}", names[i - 1])));
        }
        values.push(value.to_owned());
    }
    let money = |column: &str| -> Result<Option<i64>, RowError> {
        let text = row.get(column);
        if text.is_empty() {
            return Ok(None);
        }
        currency
            .parse_decimal(text)
            .map(Some)
            .map_err(|_| error(row, handle, Some(column), format!("`{text}` is not an amount in {currency}")))
    };
    let price = money("Variant Price")?;
    let compare_at = money("Variant Compare At Price")?.filter(|c| *c > 0);
    let grams = match row.get("Variant Grams") {
        "" => None,
        text => Some(parse_grams(text).ok_or_else(|| error(row, handle, Some("Variant Grams"), format!("`{text}` is not a weight in grams")))?),
    };
    let quantity = match row.get("Variant Inventory Qty") {
        "" => None,
        text => {
            let q: i64 = text
                .parse()
                .map_err(|_| error(row, handle, Some("Variant Inventory Qty"), format!("`{text}` is not a whole number")))?;
            if !(0..=1_000_000_000).contains(&q) {
                return Err(error(row, handle, Some("Variant Inventory Qty"), "a count of 0 or more"));
            }
            Some(q)
        }
    };
    let track = if tracker_column { row.has("Variant Inventory Tracker") } else { true };
    let backorder = match row.get("Variant Inventory Policy").to_ascii_lowercase().as_str() {
        "" | "deny" => false,
        "continue" => true,
        other => return Err(error(row, handle, Some("Variant Inventory Policy"), format!("`{other}` is not deny or continue"))),
    };
    let barcode = Some(row.get("Variant Barcode").to_owned()).filter(|b| !b.is_empty());
    Ok(VariantLine { line: row.line, sku, values, price, compare_at, grams, barcode, track, backorder, quantity })
}

/// Imports a Shopify product CSV. `progress(done, total)` is called after
/// each product.
pub async fn import(
    inventory: &Inventory,
    input: impl Read,
    currency: Currency,
    actor: &str,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Result<ImportReport, CatalogError> {
    let (groups, rows) = read_groups(input)?;
    let mut report = ImportReport { rows, ..ImportReport::default() };
    let tracker_column = groups.iter().flat_map(|g| g.rows.first()).any(|r| r.cells.contains_key("variant inventory tracker"));
    let total = groups.len();
    for (done, group) in groups.into_iter().enumerate() {
        import_group(inventory, group, currency, actor, tracker_column, &mut report).await?;
        progress(done + 1, total);
    }
    if let Some(cache) = &inventory.cache {
        cache.invalidate();
    }
    Ok(report)
}

async fn import_group(
    inventory: &Inventory,
    group: Group,
    currency: Currency,
    actor: &str,
    tracker_column: bool,
    report: &mut ImportReport,
) -> Result<(), CatalogError> {
    let db = &inventory.db;
    let handle = group.handle.clone();
    let Some(first) = group.rows.first() else { return Ok(()) };
    if handle.is_empty() {
        for row in &group.rows {
            report.errors.push(error(row, "", Some("Handle"), "every row needs a handle"));
        }
        return Ok(());
    }
    if let Err(e) = domain::parse_slug(&handle) {
        for row in &group.rows {
            report.errors.push(error(row, &handle, Some("Handle"), e.reason.clone()));
        }
        return Ok(());
    }
    let product_row = group.rows.iter().find(|r| r.has("Title"));
    let existing = store::product(db, &handle).await?;
    let names = product_row.map(option_names).unwrap_or_else(|| {
        existing.as_ref().map_or_else(Vec::new, |p| {
            serde_json::from_str::<Vec<ProductOption>>(&p.options).unwrap_or_default().into_iter().map(|o| o.name).collect()
        })
    });

    // Variants, each checked on its own.
    let mut lines: Vec<VariantLine> = Vec::new();
    let variant_rows = group.rows.iter().filter(|r| {
        r.has("Variant SKU") || r.has("Variant Price") || r.has("Option1 Value") || r.has("Variant Inventory Qty")
    });
    for (index, row) in variant_rows.enumerate() {
        match variant_line(row, &handle, index, &names, currency, tracker_column) {
            Ok(line) if lines.iter().any(|l| l.sku == line.sku) => {
                report.errors.push(error(row, &handle, Some("Variant SKU"), "this SKU is on an earlier row"));
            }
            Ok(line) if !names.is_empty() && lines.iter().any(|l| l.values == line.values) => {
                report.errors.push(error(row, &handle, Some("Option1 Value"), "these option values are on an earlier row"));
            }
            Ok(line) => lines.push(line),
            Err(e) => report.errors.push(e),
        }
    }
    if names.is_empty() && lines.len() > 1 {
        for line in lines.drain(1..) {
            report.errors.push(RowError {
                line: line.line,
                handle: handle.clone(),
                column: Some("Option1 Name".into()),
                reason: "a product without options has one variant".into(),
            });
        }
    }
    let options: Vec<ProductOption> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut values: Vec<String> = Vec::new();
            for line in &lines {
                if let Some(v) = line.values.get(i)
                    && !values.iter().any(|x| x.eq_ignore_ascii_case(v))
                {
                    values.push(v.clone());
                }
            }
            ProductOption { name: name.clone(), values }
        })
        .collect();

    let product = match (&existing, product_row) {
        (None, None) => {
            for row in &group.rows {
                report.errors.push(error(row, &handle, Some("Title"), "a new product needs a title"));
            }
            return Ok(());
        }
        (None, Some(row)) => {
            match create_product(inventory, row, &handle, &options, &mut lines, currency, report).await? {
                Some(p) => p,
                None => return Ok(()),
            }
        }
        (Some(p), _) => {
            if let Some(row) = product_row {
                let merged = merge_options(&p.options, &options);
                if let Err(e) = products::update(db, &p.id, change_from(db, row, Some(merged)).await?).await {
                    report.errors.push(error(row, &handle, None, describe(&e)));
                    return Ok(());
                }
            } else if !options.is_empty() {
                let merged = merge_options(&p.options, &options);
                let change = Change { options: Some(merged), ..Change::default() };
                if let Err(e) = products::update(db, &p.id, change).await {
                    report.errors.push(error(first, &handle, None, describe(&e)));
                    return Ok(());
                }
            }
            report.products_updated += 1;
            upsert_variants(inventory, p, &mut lines, currency, &handle, report).await?;
            p.clone()
        }
    };

    // Stock: a stocktake at the default location, in the ledger as `import`.
    for line in &lines {
        if let (Some(q), true) = (line.quantity, line.track)
            && let Err(e) = inventory.set_count(line.sku.as_str(), None, q, "import", actor).await
        {
            report.errors.push(RowError {
                line: line.line,
                handle: handle.clone(),
                column: Some("Variant Inventory Qty".into()),
                reason: describe(&e),
            });
        }
    }

    // Pictures: addresses are recorded, not downloaded.
    let mut tx = db.begin().await?;
    for row in group.rows.iter().filter(|r| r.has("Image Src")) {
        let url = row.get("Image Src");
        match crate::media::record_url(&mut tx, &product.id, url, row.get("Image Alt Text")).await {
            Ok(true) => report.images_recorded += 1,
            Ok(false) => {}
            Err(e @ CatalogError::Invalid(_)) => report.errors.push(error(row, &handle, Some("Image Src"), describe(&e))),
            Err(e) => return Err(e),
        }
    }
    tx.commit().await?;
    Ok(())
}

fn describe(e: &CatalogError) -> String {
    match e {
        CatalogError::Invalid(i) => i.reason.clone(),
        other => other.to_string(),
    }
}

/// The options already there, with the file's values added.
fn merge_options(existing: &str, file: &[ProductOption]) -> Vec<ProductOption> {
    let mut options: Vec<ProductOption> = serde_json::from_str(existing).unwrap_or_default();
    for new in file {
        match options.iter_mut().find(|o| o.name.eq_ignore_ascii_case(&new.name)) {
            Some(o) => {
                for v in &new.values {
                    if !o.values.iter().any(|x| x.eq_ignore_ascii_case(v)) {
                        o.values.push(v.clone());
                    }
                }
            }
            None => options.push(new.clone()),
        }
    }
    options
}

fn status_of(row: &Row) -> Status {
    Status::parse(&row.get("Status").to_ascii_lowercase()).unwrap_or_else(|| match parse_bool(row.get("Published")) {
        Some(false) => Status::Draft,
        _ if row.has("Published") => Status::Active,
        _ => Status::Draft,
    })
}

/// The category path of `Product Category` (`Apparel > Shirts`), made
/// where missing; returns the deepest one's id.
async fn category_path(db: &platform::db::Db, path: &str) -> Result<Option<String>, CatalogError> {
    let mut parent: Option<String> = None;
    for name in path.split('>').map(str::trim).filter(|n| !n.is_empty()) {
        let all = store::categories(db).await?;
        let slug = domain::slugify(name);
        let found = all.iter().find(|c| c.parent_id == parent && (c.slug == slug || c.name.eq_ignore_ascii_case(name)));
        parent = Some(match found {
            Some(c) => c.id.clone(),
            None => {
                // Slugs are unique over the tree: qualify a repeated one by its parent.
                let slug = if all.iter().any(|c| c.slug == slug) {
                    let parent_slug = all.iter().find(|c| Some(&c.id) == parent.as_ref()).map_or("", |c| c.slug.as_str());
                    format!("{parent_slug}-{slug}").trim_matches('-').to_owned()
                } else {
                    slug
                };
                let input = CategoryInput { name: Some(name.to_owned()), slug: Some(slug), parent_id: Some(parent.clone()), position: None };
                categories::create(db, input).await?.id
            }
        });
    }
    Ok(parent)
}

async fn change_from(db: &platform::db::Db, row: &Row, options: Option<Vec<ProductOption>>) -> Result<Change, CatalogError> {
    let category = category_path(db, row.get("Product Category")).await?;
    let mut attributes = BTreeMap::new();
    if row.has("Type") {
        attributes.insert("type".to_owned(), row.get("Type").to_owned());
    }
    let text = |c: &str| Some(row.get(c).to_owned()).filter(|t| !t.is_empty());
    Ok(Change {
        slug: None,
        title: Some(row.get("Title").to_owned()),
        description: Some(row.get("Body (HTML)").to_owned()),
        status: Some(status_of(row)),
        brand: Some(text("Vendor")),
        tags: Some(row.get("Tags").split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect()),
        categories: category.map(|c| vec![c]),
        attributes: Some(attributes),
        seo_title: Some(text("SEO Title")),
        seo_description: Some(text("SEO Description")),
        options,
    })
}

fn new_variant(line: &VariantLine, currency: Currency) -> NewVariantInput {
    let mut prices = BTreeMap::new();
    let mut compare = BTreeMap::new();
    if let Some(p) = line.price {
        prices.insert(currency.to_string(), p);
    }
    if let Some(c) = line.compare_at {
        compare.insert(currency.to_string(), c);
    }
    NewVariantInput {
        sku: line.sku.as_str().to_owned(),
        title: None,
        prices,
        compare_at_prices: compare,
        barcode: line.barcode.clone(),
        weight_grams: line.grams,
        option_values: line.values.clone(),
        track_inventory: line.track,
        allow_backorder: line.backorder,
        low_stock_threshold: None,
    }
}

/// Creates a product from its rows. A variant the catalog refuses (say, a
/// SKU another product has) is reported and left out, and the rest go in.
async fn create_product(
    inventory: &Inventory,
    row: &Row,
    handle: &str,
    options: &[ProductOption],
    lines: &mut Vec<VariantLine>,
    currency: Currency,
    report: &mut ImportReport,
) -> Result<Option<ProductRow>, CatalogError> {
    let db = &inventory.db;
    lines.retain(|l| {
        if l.price.is_none() {
            report.errors.push(RowError {
                line: l.line,
                handle: handle.to_owned(),
                column: Some("Variant Price".into()),
                reason: "a new variant needs a price".into(),
            });
        }
        l.price.is_some()
    });
    // The product's own fields (and its category path) are the same on every try.
    let change = change_from(db, row, None).await?;
    loop {
        if lines.is_empty() {
            report.errors.push(error(row, handle, Some("Variant SKU"), "no valid variant for this product"));
            return Ok(None);
        }
        let change = change.clone();
        let input = NewProduct {
            title: change.title.unwrap_or_default(),
            slug: Some(handle.to_owned()),
            description: change.description.unwrap_or_default(),
            status: change.status.unwrap_or(Status::Draft),
            brand: change.brand.flatten(),
            tags: change.tags.unwrap_or_default(),
            categories: change.categories.unwrap_or_default(),
            attributes: change.attributes.unwrap_or_default(),
            seo_title: change.seo_title.flatten(),
            seo_description: change.seo_description.flatten(),
            options: options.iter().filter(|o| !o.values.is_empty()).cloned().collect(),
            variants: lines.iter().map(|l| new_variant(l, currency)).collect(),
        };
        match products::create(db, input).await {
            Ok(p) => {
                report.products_created += 1;
                report.variants_created += lines.len();
                return Ok(Some(p.row));
            }
            Err(CatalogError::SkuTaken(sku)) => {
                let Some(at) = lines.iter().position(|l| l.sku.as_str() == sku) else {
                    report.errors.push(error(row, handle, Some("Variant SKU"), format!("SKU {sku} exists already")));
                    return Ok(None);
                };
                let l = lines.remove(at);
                report.errors.push(RowError {
                    line: l.line,
                    handle: handle.to_owned(),
                    column: Some("Variant SKU".into()),
                    reason: format!("SKU {sku} belongs to another product"),
                });
            }
            Err(CatalogError::Invalid(i)) if i.field.starts_with("variants[") => {
                let index: Option<usize> = i.field["variants[".len()..].split(']').next().and_then(|n| n.parse().ok());
                let Some(at) = index.filter(|at| *at < lines.len()) else {
                    report.errors.push(error(row, handle, None, i.reason));
                    return Ok(None);
                };
                let l = lines.remove(at);
                report.errors.push(RowError { line: l.line, handle: handle.to_owned(), column: None, reason: i.reason });
            }
            Err(e @ (CatalogError::Invalid(_) | CatalogError::SlugTaken(_))) => {
                report.errors.push(error(row, handle, None, describe(&e)));
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Brings the variants of an existing product in line with the file:
/// known SKUs are updated, new ones added.
async fn upsert_variants(
    inventory: &Inventory,
    product: &ProductRow,
    lines: &mut Vec<VariantLine>,
    currency: Currency,
    handle: &str,
    report: &mut ImportReport,
) -> Result<(), CatalogError> {
    let db = &inventory.db;
    let current = products::find(db, &product.id, true).await?;
    let mut kept = Vec::new();
    for line in lines.drain(..) {
        let result = match current.variants.iter().find(|v| v.sku == line.sku.as_str()) {
            Some(v) => {
                let mut prices: BTreeMap<String, i64> = v.prices.iter().map(|(c, a, _)| (c.clone(), *a)).collect();
                let mut compare: BTreeMap<String, i64> =
                    v.prices.iter().filter_map(|(c, _, x)| Some((c.clone(), (*x)?))).collect();
                if let Some(p) = line.price {
                    prices.insert(currency.to_string(), p);
                    match line.compare_at {
                        Some(c) => compare.insert(currency.to_string(), c),
                        None => compare.remove(currency.as_str()),
                    };
                }
                let patch = VariantPatch {
                    title: None,
                    prices: Some(prices),
                    compare_at_prices: compare,
                    barcode: Some(line.barcode.clone()),
                    weight_grams: Some(line.grams),
                    track_inventory: Some(line.track),
                    allow_backorder: Some(line.backorder),
                    low_stock_threshold: None,
                    option_values: Some(line.values.clone()).filter(|v| !v.is_empty()),
                };
                products::update_variant(db, line.sku.as_str(), patch).await.map(|_| false)
            }
            None if line.price.is_none() => Err(domain::invalid("Variant Price", "missing_price", "a new variant needs a price").into()),
            None => products::add_variant(db, &product.id, new_variant(&line, currency)).await.map(|_| true),
        };
        match result {
            Ok(true) => {
                report.variants_created += 1;
                kept.push(line);
            }
            Ok(false) => {
                report.variants_updated += 1;
                kept.push(line);
            }
            Err(e @ (CatalogError::Invalid(_) | CatalogError::SkuTaken(_) | CatalogError::UnknownSku(_))) => {
                let reason = match &e {
                    CatalogError::SkuTaken(sku) => format!("SKU {sku} belongs to another product"),
                    other => describe(other),
                };
                report.errors.push(RowError { line: line.line, handle: handle.to_owned(), column: None, reason });
            }
            Err(e) => return Err(e),
        }
    }
    *lines = kept;
    Ok(())
}

/// Writes every product, in any status, as Shopify CSV; returns how many.
pub async fn export(db: &platform::db::Db, out: impl Write, currency: Currency, public_url: &str) -> Result<usize, CatalogError> {
    export_with_progress(db, out, currency, public_url, &|_| {}).await
}

/// [`export`], telling `progress` how many products are written so far.
pub async fn export_with_progress(
    db: &platform::db::Db,
    out: impl Write,
    currency: Currency,
    public_url: &str,
    progress: &(dyn Fn(usize) + Send + Sync),
) -> Result<usize, CatalogError> {
    let mut writer = csv::Writer::from_writer(out);
    let io = |e: csv::Error| CatalogError::Media(format!("writing the export: {e}"));
    writer.write_record(COLUMNS).map_err(io)?;
    let filter = products::ListFilter {
        status: None,
        text: None,
        low_stock: false,
        brand: None,
        tag: None,
        category: None,
        currency: None,
        min_price: None,
        max_price: None,
        in_stock: false,
        sort: store::Sort::Oldest,
    };
    let all_categories = store::categories(db).await?;
    let mut after: Option<String> = None;
    let mut count = 0;
    loop {
        let page = products::list(db, &filter, after.as_deref(), 200).await?;
        let more = page.len() > 200;
        for (key, p) in page.into_iter().take(200) {
            after = Some(key);
            let skus: Vec<String> = p.variants.iter().map(|v| v.sku.clone()).collect();
            let default_stock = store::default_on_hand(db, &skus).await?;
            for record in rows_of(&p, &all_categories, &default_stock, currency, public_url) {
                writer.write_record(&record).map_err(io)?;
            }
            count += 1;
        }
        progress(count);
        if !more {
            break;
        }
    }
    writer.flush().map_err(|e| CatalogError::Media(format!("writing the export: {e}")))?;
    Ok(count)
}

fn category_path_of(all: &[store::CategoryRow], id: &str) -> String {
    let mut names = Vec::new();
    let mut at = all.iter().find(|c| c.id == id);
    while let Some(c) = at {
        names.push(c.name.clone());
        at = c.parent_id.as_ref().and_then(|p| all.iter().find(|x| &x.id == p));
        if names.len() > 20 {
            break;
        }
    }
    names.reverse();
    names.join(" > ")
}

fn rows_of(
    p: &products::Product,
    categories: &[store::CategoryRow],
    default_stock: &BTreeMap<String, i64>,
    currency: Currency,
    public_url: &str,
) -> Vec<Vec<String>> {
    let options: Vec<ProductOption> = serde_json::from_str(&p.row.options).unwrap_or_default();
    let attributes: BTreeMap<String, String> = serde_json::from_str(&p.row.attributes).unwrap_or_default();
    let n = p.variants.len().max(p.media.len()).max(1);
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let mut r = vec![String::new(); COLUMNS.len()];
        let mut set = |column: &str, value: String| {
            if let Some(at) = COLUMNS.iter().position(|c| *c == column) {
                r[at] = value;
            }
        };
        set("Handle", p.row.slug.clone());
        if i == 0 {
            set("Title", p.row.title.clone());
            set("Body (HTML)", p.row.description.clone());
            set("Vendor", p.row.brand.clone().unwrap_or_default());
            let category = p.categories.first().map(|c| category_path_of(categories, &c.id)).unwrap_or_default();
            set("Product Category", category);
            set("Type", attributes.get("type").cloned().unwrap_or_default());
            set("Tags", p.row.tags.join(", "));
            set("Published", (p.row.status == "active").to_string().to_uppercase());
            set("SEO Title", p.row.seo_title.clone().unwrap_or_default());
            set("SEO Description", p.row.seo_description.clone().unwrap_or_default());
            set("Status", p.row.status.clone());
        }
        if let Some(v) = p.variants.get(i) {
            if options.is_empty() && i == 0 {
                set("Option1 Name", "Title".into());
                set("Option1 Value", "Default Title".into());
            }
            for (k, option) in options.iter().enumerate() {
                if i == 0 {
                    set(&format!("Option{} Name", k + 1), option.name.clone());
                }
                set(&format!("Option{} Value", k + 1), v.option_values.get(k).cloned().unwrap_or_default());
            }
            set("Variant SKU", v.sku.clone());
            set("Variant Grams", v.weight_grams.map(|g| g.to_string()).unwrap_or_default());
            set("Variant Inventory Tracker", if v.track_inventory { "shopify".into() } else { String::new() });
            set("Variant Inventory Qty", default_stock.get(&v.sku).copied().unwrap_or(0).to_string());
            set("Variant Inventory Policy", if v.allow_backorder { "continue".into() } else { "deny".into() });
            if let Some((_, amount, compare_at)) = v.prices.iter().find(|(c, ..)| c == currency.as_str()) {
                set("Variant Price", currency.format_decimal(*amount));
                set("Variant Compare At Price", compare_at.map(|c| currency.format_decimal(c)).unwrap_or_default());
            }
            set("Variant Barcode", v.barcode.clone().unwrap_or_default());
        }
        if let Some(m) = p.media.get(i) {
            let src = match (&m.object_key, &m.source_url) {
                (Some(key), _) => format!("{}/media/{key}", public_url.trim_end_matches('/')),
                (None, Some(url)) => url.clone(),
                (None, None) => String::new(),
            };
            set("Image Src", src);
            set("Image Position", (i + 1).to_string());
            set("Image Alt Text", m.alt.clone());
        }
        for (cell, column) in r.iter_mut().zip(COLUMNS) {
            if !NUMBER_COLUMNS.contains(&column) {
                *cell = guard(std::mem::take(cell));
            }
        }
        rows.push(r);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_handles_are_refused() {
        assert!(matches!(read_groups("Name,Price\nx,1\n".as_bytes()), Err(FileError::NoHandle)));
        let (groups, rows) = read_groups("\u{feff}Handle,Title\na,A\nb,B\na,\n".as_bytes()).unwrap();
        assert_eq!(rows, 3);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].rows.len(), 2);
        assert_eq!(groups[0].rows[1].line, 4);
    }

    #[test]
    fn cells() {
        assert_eq!(parse_grams("250"), Some(250));
        assert_eq!(parse_grams("250.0"), Some(250));
        assert_eq!(parse_grams("250.5"), None);
        assert_eq!(parse_grams("-1"), None);
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn formulas_are_written_as_text_and_read_back_as_they_were() {
        for text in ["=HYPERLINK(\"http://x\",\"y\")", "+1", "-x", "@SUM(A1)", "\tx", "\rx", "'=x", "''+x", "plain", "'quoted", ""] {
            let written = guard(text.to_owned());
            assert!(!matches!(written.as_bytes().first(), Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')), "{written}");
            assert_eq!(unguard(&written), text);
        }
        assert_eq!(guard("=1".into()), "'=1");
        assert_eq!(guard("plain".into()), "plain");
        let long = format!("{}=1", "'".repeat(100_000));
        assert_eq!(unguard(&guard(long.clone())), long);
    }
}
