//! The search benchmark's reference: a bare tantivy index of the same
//! fields, filled with the same values, but with tantivy's `default`
//! tokenizer where Emporium has its own analyzers (`shop`, `sku_prefix`);
//! one writer with Emporium's memory budget, one commit per batch, no
//! deletes and no reader reload per batch. Each search is the closest plain
//! tantivy query: the `QueryParser` over title and description (every word
//! required), a `FuzzyTermQuery` of one edit for a typo, a `TermQuery` on the
//! brand and a `RangeQuery` on the price with a `FacetCollector` for the
//! faceted search, a prefix query on the title for autocomplete; the top
//! documents are loaded, as Emporium loads its hits.

use std::ops::Bound;
use std::path::Path;
use std::time::{Duration, Instant};

use search::ProductDoc;
use search::index::squash;
use tantivy::collector::{Count, FacetCollector, TopDocs};
use tantivy::query::{BooleanQuery, FuzzyTermQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, Facet, FacetOptions, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, TextFieldIndexing, TextOptions,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use super::search_catalog::{Kind, Probe};
use super::{LIMIT, SUGGESTIONS, WRITER_MEMORY, err};

/// The fields of Emporium's schema, by the same names.
struct Fields {
    id: Field,
    slug: Field,
    title: Field,
    compact: Field,
    brand: Field,
    brand_exact: Field,
    tags: Field,
    tag_exact: Field,
    categories: Field,
    category_id: Field,
    attributes: Field,
    description: Field,
    sku: Field,
    sku_prefix: Field,
    facets: Field,
    price: Field,
    in_stock: Field,
    created: Field,
}

/// Emporium's schema with the default tokenizer (`TEXT`: positions, as
/// Emporium's word fields have).
fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let prefixes = TextOptions::default()
        .set_indexing_options(TextFieldIndexing::default().set_tokenizer("default").set_index_option(IndexRecordOption::Basic));
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        slug: b.add_text_field("slug", STORED),
        title: b.add_text_field("title", TEXT | STORED),
        compact: b.add_text_field("compact", TEXT),
        brand: b.add_text_field("brand", TEXT | STORED),
        brand_exact: b.add_text_field("brand_exact", STRING),
        tags: b.add_text_field("tags", TEXT),
        tag_exact: b.add_text_field("tag_exact", STRING),
        categories: b.add_text_field("categories", TEXT | STORED),
        category_id: b.add_text_field("category_id", STRING | STORED),
        attributes: b.add_text_field("attributes", TEXT),
        description: b.add_text_field("description", TEXT | STORED),
        sku: b.add_text_field("sku", STRING | STORED),
        sku_prefix: b.add_text_field("sku_prefix", prefixes),
        facets: b.add_facet_field("facets", FacetOptions::default()),
        price: b.add_u64_field("price", INDEXED | FAST | STORED),
        in_stock: b.add_u64_field("in_stock", INDEXED | FAST),
        created: b.add_i64_field("created", FAST),
    };
    (b.build(), fields)
}

/// The values Emporium's index gets for a product, field by field.
fn document(f: &Fields, p: &ProductDoc) -> TantivyDocument {
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
    doc
}

pub struct Reference {
    pub reader: IndexReader,
    fields: Fields,
    parser: QueryParser,
}

/// Builds the reference index in `dir` in batches of `batch`, one commit
/// each; returns it and the time the batches took. Its merges are waited
/// for afterwards (not timed), so it is searched as it settles.
pub fn build(dir: &Path, docs: &[ProductDoc], batch: usize) -> Result<(Reference, Duration), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (schema, fields) = schema();
    let index = Index::create_in_dir(dir, schema).map_err(err)?;
    let mut writer: IndexWriter = index.writer_with_num_threads(1, WRITER_MEMORY).map_err(err)?;
    let started = Instant::now();
    for chunk in docs.chunks(batch.max(1)) {
        for p in chunk {
            writer.add_document(document(&fields, p)).map_err(err)?;
        }
        writer.commit().map_err(err)?;
    }
    let took = started.elapsed();
    writer.wait_merging_threads().map_err(err)?;
    let reader: IndexReader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(err)?;
    let mut parser = QueryParser::for_index(&index, vec![fields.title, fields.description]);
    parser.set_conjunction_by_default();
    Ok((Reference { reader, fields, parser }, took))
}

impl Reference {
    /// Runs one search; answers how many documents matched.
    pub fn ask(&self, p: &Probe) -> Result<usize, String> {
        let f = &self.fields;
        match (p.kind, &p.brand, p.price) {
            (Kind::Typo, ..) => {
                let fuzzy = |field: Field| -> Box<dyn Query> { Box::new(FuzzyTermQuery::new(Term::from_field_text(field, &p.q), 1, true)) };
                self.top(&BooleanQuery::union(vec![fuzzy(f.title), fuzzy(f.description)]))
            }
            (Kind::Faceted, Some(brand), Some((min, max))) => self.faceted(&p.q, brand, min, max),
            _ => self.top(&*self.parser.parse_query(&p.q).map_err(err)?),
        }
    }

    fn top(&self, query: &dyn Query) -> Result<usize, String> {
        let searcher = self.reader.searcher();
        let (top, total) = searcher.search(query, &(TopDocs::with_limit(LIMIT).order_by_score(), Count)).map_err(err)?;
        load(&searcher, &top)?;
        Ok(total)
    }

    fn faceted(&self, q: &str, brand: &str, min: i64, max: i64) -> Result<usize, String> {
        let f = &self.fields;
        let at = |v: i64| Term::from_field_u64(f.price, u64::try_from(v).unwrap_or(0));
        let brand = Term::from_field_text(f.brand_exact, &brand.to_lowercase());
        let query = BooleanQuery::new(vec![
            (Occur::Must, self.parser.parse_query(q).map_err(err)?),
            (Occur::Must, Box::new(TermQuery::new(brand, IndexRecordOption::Basic)) as Box<dyn Query>),
            (Occur::Must, Box::new(RangeQuery::new(Bound::Included(at(min)), Bound::Excluded(at(max)))) as Box<dyn Query>),
        ]);
        let mut facets = FacetCollector::for_field("facets");
        facets.add_facet("/category");
        facets.add_facet("/brand");
        facets.add_facet(Facet::from_path(["attr", "color"]));
        let searcher = self.reader.searcher();
        let (top, total, counts) =
            searcher.search(&query, &(TopDocs::with_limit(LIMIT).order_by_score(), Count, facets)).map_err(err)?;
        load(&searcher, &top)?;
        // Read the counts out, as Emporium does.
        let values: usize = ["/category", "/brand", "/attr/color"].iter().map(|root| counts.get(*root).count()).sum();
        let _ = std::hint::black_box(values);
        Ok(total)
    }

    /// The autocomplete: titles with a word starting with `prefix`.
    pub fn prefix(&self, prefix: &str) -> Result<usize, String> {
        let query = FuzzyTermQuery::new_prefix(Term::from_field_text(self.fields.title, prefix), 0, true);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(SUGGESTIONS).order_by_score()).map_err(err)?;
        load(&searcher, &top)?;
        Ok(top.len())
    }
}

fn load(searcher: &Searcher, top: &[(f32, DocAddress)]) -> Result<(), String> {
    for (_, address) in top {
        let _doc: TantivyDocument = searcher.doc(*address).map_err(err)?;
    }
    Ok(())
}
