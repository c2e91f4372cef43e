//! The tantivy index: its schema, where it lives on disk, and how products
//! go in and out. One writer per index (tantivy's rule), behind a mutex;
//! readers reload after each commit. A rebuild is made aside and swapped
//! in, so search never goes offline.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tantivy::schema::{
    FAST, Facet, FacetOptions, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, NgramTokenizer, RawTokenizer, SimpleTokenizer, TextAnalyzer};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::ProductDoc;

/// Bumped whenever the schema or the analysis changes: an index of another
/// version is rebuilt at start.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index files: {0}")]
    Io(#[from] std::io::Error),
    #[error("search index: {0}")]
    Other(String),
}

/// The fields, looked up once.
#[derive(Clone, Copy)]
pub struct Fields {
    pub id: Field,
    pub slug: Field,
    pub title: Field,
    pub compact: Field,
    pub brand: Field,
    pub brand_exact: Field,
    pub tags: Field,
    pub tag_exact: Field,
    pub categories: Field,
    pub category_id: Field,
    pub attributes: Field,
    pub description: Field,
    pub sku: Field,
    pub sku_prefix: Field,
    pub facets: Field,
    pub price: Field,
    pub in_stock: Field,
    pub created: Field,
    /// The list picture as JSON, stored only.
    pub thumbnail: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let words = |stored: bool| {
        let indexing = TextFieldIndexing::default().set_tokenizer("shop").set_index_option(IndexRecordOption::WithFreqsAndPositions);
        let options = TextOptions::default().set_indexing_options(indexing);
        if stored { options.set_stored() } else { options }
    };
    let prefixes = TextOptions::default()
        .set_indexing_options(TextFieldIndexing::default().set_tokenizer("sku_prefix").set_index_option(IndexRecordOption::Basic));
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        slug: b.add_text_field("slug", STORED),
        title: b.add_text_field("title", words(true)),
        compact: b.add_text_field("compact", words(false)),
        brand: b.add_text_field("brand", words(true)),
        brand_exact: b.add_text_field("brand_exact", STRING),
        tags: b.add_text_field("tags", words(false)),
        tag_exact: b.add_text_field("tag_exact", STRING),
        categories: b.add_text_field("categories", words(true)),
        category_id: b.add_text_field("category_id", STRING | STORED),
        attributes: b.add_text_field("attributes", words(false)),
        description: b.add_text_field("description", words(true)),
        sku: b.add_text_field("sku", STRING | STORED),
        sku_prefix: b.add_text_field("sku_prefix", prefixes),
        facets: b.add_facet_field("facets", FacetOptions::default()),
        price: b.add_u64_field("price", INDEXED | FAST | STORED),
        in_stock: b.add_u64_field("in_stock", INDEXED | FAST),
        created: b.add_i64_field("created", FAST),
        thumbnail: b.add_text_field("thumbnail", STORED),
    };
    (b.build(), fields)
}

fn register_tokenizers(index: &Index) -> Result<(), IndexError> {
    let shop = TextAnalyzer::builder(SimpleTokenizer::default()).filter(LowerCaser).filter(AsciiFoldingFilter).build();
    index.tokenizers().register("shop", shop);
    let prefixes = TextAnalyzer::builder(NgramTokenizer::prefix_only(2, 40)?).filter(LowerCaser).build();
    index.tokenizers().register("sku_prefix", prefixes);
    index.tokenizers().register("raw", TextAnalyzer::builder(RawTokenizer::default()).build());
    Ok(())
}

/// Letters and digits only, lower case: `TSH-0042` → `tsh0042`, `T-Shirts` → `tshirts`.
pub fn squash(text: &str) -> String {
    text.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// One open index: its reader and its single writer.
pub struct Open {
    pub index: Index,
    pub reader: IndexReader,
    pub fields: Fields,
    pub dir: PathBuf,
    /// `None` only once retired and let go.
    writer: Mutex<Option<IndexWriter>>,
    /// Set when another index replaced this one: its folder goes when the
    /// last search or write still holding it lets go.
    retired: std::sync::atomic::AtomicBool,
}

impl Drop for Open {
    fn drop(&mut self) {
        if !self.retired.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // The writer's merges finish before its folder goes.
        if let Ok(slot) = self.writer.get_mut()
            && let Some(writer) = slot.take()
            && let Err(e) = writer.wait_merging_threads()
        {
            tracing::debug!(error = %e, "an old search index's merges ended badly; it is removed anyway");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove an old search index");
        }
    }
}

impl Open {
    fn create(dir: &Path) -> Result<Open, IndexError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir).map_err(|e| IndexError::Other(e.to_string()))?;
        let index = Index::open_or_create(directory, schema)?;
        register_tokenizers(&index)?;
        let writer = index.writer_with_num_threads(1, 50_000_000)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Open { index, reader, fields, dir: dir.to_owned(), writer: Mutex::new(Some(writer)), retired: std::sync::atomic::AtomicBool::new(false) })
    }

    fn document(&self, p: &ProductDoc) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, &p.id);
        doc.add_text(f.slug, &p.slug);
        doc.add_text(f.title, &p.title);
        for word in p.title.split_whitespace().chain(p.category_names.iter().flat_map(|c| c.split_whitespace())) {
            doc.add_text(f.compact, squash(word));
        }
        if let Some(brand) = &p.brand {
            doc.add_text(f.brand, brand);
            doc.add_text(f.brand_exact, brand.to_lowercase());
            doc.add_facet(f.facets, Facet::from_path(["brand", brand.as_str()]));
        }
        for tag in &p.tags {
            doc.add_text(f.tags, tag);
            doc.add_text(f.tag_exact, tag.to_lowercase());
        }
        for name in &p.category_names {
            doc.add_text(f.categories, name);
        }
        for id in &p.category_ids {
            doc.add_text(f.category_id, id);
            doc.add_facet(f.facets, Facet::from_path(["category", id.as_str()]));
        }
        for (k, v) in &p.attributes {
            doc.add_text(f.attributes, format!("{k} {v}"));
            doc.add_facet(f.facets, Facet::from_path(["attr", k.as_str(), v.to_lowercase().as_str()]));
        }
        doc.add_text(f.description, &p.description);
        for sku in &p.skus {
            doc.add_text(f.sku, sku);
            doc.add_text(f.sku_prefix, squash(sku));
        }
        if let Some(price) = p.price {
            doc.add_u64(f.price, u64::try_from(price).unwrap_or(0));
        }
        doc.add_u64(f.in_stock, u64::from(p.in_stock));
        doc.add_i64(f.created, p.created_ms);
        if let Some(json) = p.thumbnail.as_ref().and_then(|t| serde_json::to_string(t).ok()) {
            doc.add_text(f.thumbnail, json);
        }
        doc
    }

    /// Replaces (or removes, when not active) products, then commits.
    pub fn apply(&self, upserts: &[ProductDoc], removals: &[String]) -> Result<(), IndexError> {
        let mut slot = self.writer.lock().map_err(|_| IndexError::Other("writer lock poisoned".into()))?;
        let writer = slot.as_mut().ok_or_else(|| IndexError::Other("this index was replaced".into()))?;
        for id in removals.iter().chain(upserts.iter().map(|p| &p.id)) {
            writer.delete_term(Term::from_field_text(self.fields.id, id));
        }
        for p in upserts.iter().filter(|p| p.status == "active") {
            writer.add_document(self.document(p))?;
        }
        writer.commit()?;
        drop(slot);
        self.reader.reload()?;
        Ok(())
    }
}

/// The live index, swappable under readers.
pub struct SearchIndex {
    root: PathBuf,
    live: RwLock<Arc<Open>>,
}

impl SearchIndex {
    /// Opens the index under `root` (`<data_dir>/search`). Answers whether it
    /// must be (re)built: none yet, or one of another schema version.
    pub fn open(root: &Path) -> Result<(SearchIndex, bool), IndexError> {
        std::fs::create_dir_all(root)?;
        let current = std::fs::read_to_string(root.join("CURRENT")).ok().map(|s| s.trim().to_owned());
        let prefix = format!("v{SCHEMA_VERSION}-");
        let (dir, fresh) = match current.filter(|name| name.starts_with(&prefix)) {
            Some(name) if root.join(&name).is_dir() => (root.join(name), false),
            _ => (root.join(format!("{prefix}{}", kernel::id::Uuid::now_v7().simple())), true),
        };
        let open = Open::create(&dir)?;
        if fresh {
            write_current(root, &dir)?;
        }
        // Folders of earlier versions, or of rebuilds a crash cut short.
        for entry in std::fs::read_dir(root)?.flatten() {
            let path = entry.path();
            if path.is_dir() && path != dir {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        Ok((SearchIndex { root: root.to_owned(), live: RwLock::new(Arc::new(open)) }, fresh))
    }

    pub fn live(&self) -> Result<Arc<Open>, IndexError> {
        self.live.read().map(|l| l.clone()).map_err(|_| IndexError::Other("index lock poisoned".into()))
    }

    /// A new, empty index beside the live one, for a rebuild.
    pub fn aside(&self) -> Result<Open, IndexError> {
        aside_in(&self.root)
    }

    /// When another process published a new index, opens it and swaps it in.
    pub fn follow(&self) -> Result<bool, IndexError> {
        let Some(name) = std::fs::read_to_string(self.root.join("CURRENT")).ok().map(|s| s.trim().to_owned()) else {
            return Ok(false);
        };
        if self.live()?.dir.file_name().and_then(|n| n.to_str()) == Some(name.as_str()) {
            return Ok(false);
        }
        let dir = self.root.join(&name);
        if !name.starts_with(&format!("v{SCHEMA_VERSION}-")) || !dir.is_dir() {
            return Ok(false);
        }
        self.swap(Open::create(&dir)?)?;
        Ok(true)
    }

    /// Makes a rebuilt index the live one and removes the old one's files.
    pub fn swap(&self, built: Open) -> Result<(), IndexError> {
        write_current(&self.root, &built.dir)?;
        let old = {
            let mut live = self.live.write().map_err(|_| IndexError::Other("index lock poisoned".into()))?;
            std::mem::replace(&mut *live, Arc::new(built))
        };
        // Searches still holding the old index finish on its memory maps.
        // Every other folder goes too: the one live index is the newest, and
        // a rebuild that lost a race to this one would be left behind.
        // The replaced index's folder goes once nothing uses it (see `Drop`).
        let live = self.live()?.dir.clone();
        old.retired.store(true, std::sync::atomic::Ordering::SeqCst);
        for entry in std::fs::read_dir(&self.root)?.flatten() {
            let path = entry.path();
            if path.is_dir()
                && path != live
                && path != old.dir
                && let Err(e) = std::fs::remove_dir_all(&path)
            {
                tracing::warn!(dir = %path.display(), error = %e, "could not remove an old search index");
            }
        }
        drop(old);
        Ok(())
    }
}

/// A new, empty index folder under `root`.
pub fn aside_in(root: &Path) -> Result<Open, IndexError> {
    Open::create(&root.join(format!("v{SCHEMA_VERSION}-{}", kernel::id::Uuid::now_v7().simple())))
}

/// Names `dir` the index to open: the next start opens it, and a running
/// server swaps it in (see [`SearchIndex::follow`]).
pub fn write_current(root: &Path, dir: &Path) -> Result<(), IndexError> {
    let name = dir.file_name().and_then(|n| n.to_str()).ok_or_else(|| IndexError::Other("bad index folder".into()))?;
    let tmp = root.join("CURRENT.tmp");
    std::fs::write(&tmp, name)?;
    std::fs::rename(tmp, root.join("CURRENT"))?;
    Ok(())
}
