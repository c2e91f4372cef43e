//! From what a shopper typed to ranked products: every word must match
//! somewhere — exactly (ranked first), within a typo (1 edit for words of
//! 4–7 letters, 2 for longer, none for shorter), or, for the last word, as a
//! prefix — in the title (boosted), brand, tags, categories, attributes or
//! description, in the title with its punctuation squashed (`tshirt` finds
//! `T-Shirts`), or in a SKU (`TSH-00` finds `TSH-0042`). Synonyms widen a
//! word. Filters and facets are computed on the same query.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::Serialize;
use tantivy::collector::{Count, FacetCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Facet, Field, IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Order, Searcher, TantivyDocument, Term};

use crate::index::{Fields, IndexError, Open, squash};

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
}

/// A search as the route parsed it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub q: String,
    /// A category id: products in it or below it.
    pub category: Option<String>,
    pub brand: Option<String>,
    pub tags: Vec<String>,
    /// `(name, value)` pairs, all required.
    pub attributes: Vec<(String, String)>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: bool,
    pub sort: Sort,
    pub offset: usize,
    pub limit: usize,
    /// Attributes to count values of (`color`, `size`).
    pub facet_attributes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hit {
    pub id: String,
    pub slug: String,
    pub title: String,
    pub brand: Option<String>,
    /// Minor units of the shop's currency.
    pub price: Option<i64>,
    pub score: f32,
    /// The best passage, matched words in `<b>`; HTML-escaped.
    pub snippet: String,
    /// The product's first picture, sized for a list; absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<Thumbnail>,
}

/// A product's picture, small enough for a list of products.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Thumbnail {
    /// `/media/…` for a stored picture, or the address of one kept elsewhere.
    #[schema(example = "/media/products/prd_01/med_01-480.jpg")]
    pub url: String,
    /// Pixels; absent when not known (a picture kept elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Count2 {
    pub value: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PriceBand {
    pub min: i64,
    /// `None` for the last, open band.
    pub max: Option<i64>,
    pub count: u64,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Facets {
    pub category: Vec<Count2>,
    pub brand: Vec<Count2>,
    pub attributes: BTreeMap<String, Vec<Count2>>,
    pub price: Vec<PriceBand>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub hits: Vec<Hit>,
    pub total: usize,
    pub facets: Facets,
    pub did_you_mean: Option<String>,
}

/// Price bands, in minor units.
const BANDS: [(i64, Option<i64>); 5] = [(0, Some(2500)), (2500, Some(5000)), (5000, Some(10000)), (10000, Some(25000)), (25000, None)];

/// Counts the matching documents of each price band in the same pass as
/// the search (reading the price column), instead of one search per band.
struct Bands;

struct BandCounter {
    prices: tantivy::columnar::Column<u64>,
    counts: [u64; BANDS.len()],
}

fn band_of(price: u64) -> Option<usize> {
    let price = i64::try_from(price).ok()?;
    BANDS.iter().position(|(min, max)| price >= *min && max.is_none_or(|m| price < m))
}

impl tantivy::collector::Collector for Bands {
    type Fruit = [u64; BANDS.len()];
    type Child = BandCounter;

    fn for_segment(&self, _: tantivy::SegmentOrdinal, segment: &tantivy::SegmentReader) -> tantivy::Result<BandCounter> {
        Ok(BandCounter { prices: segment.fast_fields().u64("price")?, counts: [0; BANDS.len()] })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, parts: Vec<[u64; BANDS.len()]>) -> tantivy::Result<[u64; BANDS.len()]> {
        let mut total = [0; BANDS.len()];
        for part in parts {
            for (t, p) in total.iter_mut().zip(part) {
                *t += p;
            }
        }
        Ok(total)
    }
}

impl tantivy::collector::SegmentCollector for BandCounter {
    type Fruit = [u64; BANDS.len()];

    fn collect(&mut self, doc: tantivy::DocId, _: tantivy::Score) {
        if let Some(band) = self.prices.first(doc).and_then(band_of) {
            self.counts[band] += 1;
        }
    }

    fn harvest(self) -> Self::Fruit {
        self.counts
    }
}

/// Where words are looked for, and how much a match there counts.
/// The third value: typos and prefixes are looked for there.
fn text_fields(f: &Fields) -> [(Field, f32, bool); 6] {
    [(f.title, 3.0, true), (f.brand, 2.0, true), (f.tags, 1.5, true), (f.categories, 1.5, true), (f.attributes, 1.0, false), (f.description, 0.5, false)]
}

/// Edits allowed for a word of `len` characters.
pub fn typo_budget(len: usize) -> u8 {
    match len {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// Lower-cased, accent-folded words, split where the index splits them.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().chars().map(fold).collect())
        .collect()
}

fn fold(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
        'ç' => 'c',
        'è' | 'é' | 'ê' | 'ë' => 'e',
        'ì' | 'í' | 'î' | 'ï' => 'i',
        'ñ' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
        'ù' | 'ú' | 'û' | 'ü' => 'u',
        other => other,
    }
}

fn boost(q: Box<dyn Query>, b: f32) -> Box<dyn Query> {
    Box::new(BoostQuery::new(q, b))
}

/// A filter: must match, adds nothing to the score.
fn filter(q: Box<dyn Query>) -> (Occur, Box<dyn Query>) {
    (Occur::Must, boost(q, 0.0))
}

fn term_query(field: Field, text: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::WithFreqs))
}

/// One token: exact, and — in the short fields (`tolerant`) — within its
/// typo budget and as a prefix when it is the last thing typed. Fuzzy
/// matching walks the term dictionary, so it is kept off the long
/// description and attribute texts, where an exact word is enough.
fn token_clauses(field: Field, weight: f32, token: &str, last: bool, tolerant: bool, out: &mut Vec<Box<dyn Query>>) {
    let term = Term::from_field_text(field, token);
    out.push(boost(Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)), weight * 3.0));
    if !tolerant {
        return;
    }
    let budget = typo_budget(token.chars().count());
    if budget > 0 {
        out.push(boost(Box::new(FuzzyTermQuery::new(term.clone(), budget, true)), weight));
    }
    if last && token.chars().count() >= 2 {
        out.push(boost(Box::new(FuzzyTermQuery::new_prefix(term, 0, true)), weight * 1.5));
    }
}

/// Everything one typed word (or one of its synonyms) may match.
fn word_query(f: &Fields, word: &str, last: bool) -> Box<dyn Query> {
    let tokens = words(word);
    let mut per_token: Vec<Box<dyn Query>> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let mut clauses = Vec::new();
        let token_last = last && i + 1 == tokens.len();
        for (field, weight, tolerant) in text_fields(f) {
            token_clauses(field, weight, token, token_last, tolerant, &mut clauses);
        }
        per_token.push(Box::new(BooleanQuery::union(clauses)));
    }
    let mut alternatives: Vec<Box<dyn Query>> = Vec::new();
    match per_token.len() {
        0 => {}
        1 => alternatives.extend(per_token),
        _ => alternatives.push(Box::new(BooleanQuery::intersection(per_token))),
    }
    let squashed = squash(word);
    if squashed.chars().count() >= 2 {
        let mut clauses = Vec::new();
        token_clauses(f.compact, 2.5, &squashed, last, true, &mut clauses);
        alternatives.extend(clauses);
        if squashed.chars().any(|c| c.is_ascii_digit()) || word.contains('-') {
            alternatives.push(boost(term_query(f.sku_prefix, &squashed), 4.0));
            alternatives.push(boost(term_query(f.sku, &word.to_uppercase()), 8.0));
        }
    }
    Box::new(BooleanQuery::union(alternatives))
}

/// The words of `q`, each widened by its synonyms; every word must match.
pub fn text_query(f: &Fields, q: &str, synonyms: &[Vec<String>]) -> Option<Box<dyn Query>> {
    let typed: Vec<&str> = q.split_whitespace().collect();
    if typed.is_empty() {
        return None;
    }
    let mut must: Vec<Box<dyn Query>> = Vec::new();
    for (i, word) in typed.iter().enumerate() {
        let last = i + 1 == typed.len();
        let lower = word.to_lowercase();
        let mut alternatives = vec![word_query(f, word, last)];
        for group in synonyms.iter().filter(|g| g.contains(&lower)) {
            for other in group.iter().filter(|s| **s != lower) {
                alternatives.push(boost(word_query(f, other, false), 0.8));
            }
        }
        must.push(Box::new(BooleanQuery::union(alternatives)));
    }
    Some(Box::new(BooleanQuery::intersection(must)))
}

fn price_range(f: &Fields, min: Option<i64>, max: Option<i64>) -> Box<dyn Query> {
    let at = |v: i64| Term::from_field_u64(f.price, u64::try_from(v).unwrap_or(0));
    let lower = min.map_or(Bound::Unbounded, |m| Bound::Included(at(m)));
    let upper = max.map_or(Bound::Unbounded, |m| Bound::Excluded(at(m)));
    Box::new(RangeQuery::new(lower, upper))
}

/// The query and its filters, without the price filter (so price bands can
/// be counted on the rest).
fn assemble(f: &Fields, r: &Request, synonyms: &[Vec<String>], with_price: bool) -> Box<dyn Query> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    match text_query(f, &r.q, synonyms) {
        Some(q) => clauses.push((Occur::Must, q)),
        None => clauses.push(filter(Box::new(AllQuery))),
    }
    if let Some(c) = &r.category {
        clauses.push(filter(term_query(f.category_id, c)));
    }
    if let Some(b) = &r.brand {
        clauses.push(filter(term_query(f.brand_exact, &b.to_lowercase())));
    }
    for t in &r.tags {
        clauses.push(filter(term_query(f.tag_exact, &t.to_lowercase())));
    }
    for (k, v) in &r.attributes {
        let facet = Facet::from_path(["attr", k.as_str(), v.to_lowercase().as_str()]);
        clauses.push(filter(Box::new(TermQuery::new(Term::from_facet(f.facets, &facet), IndexRecordOption::Basic))));
    }
    if r.in_stock {
        clauses.push(filter(Box::new(TermQuery::new(Term::from_field_u64(f.in_stock, 1), IndexRecordOption::Basic))));
    }
    if with_price && (r.min_price.is_some() || r.max_price.is_some()) {
        clauses.push(filter(price_range(f, r.min_price, r.max_price)));
    }
    Box::new(BooleanQuery::new(clauses))
}

fn counts(facets: &tantivy::collector::FacetCounts, root: &str) -> Vec<Count2> {
    let mut out: Vec<Count2> = facets
        .get(root)
        .map(|(facet, count)| Count2 { value: facet.to_path().last().map(|s| s.to_string()).unwrap_or_default(), count })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
    out
}

/// Runs a search on the live index.
pub fn run(open: &Open, r: &Request, synonyms: &[Vec<String>]) -> Result<Results, IndexError> {
    let f = &open.fields;
    let searcher = open.reader.searcher();
    let query = assemble(f, r, synonyms, true);
    let mut facet_collector = FacetCollector::for_field("facets");
    facet_collector.add_facet("/category");
    facet_collector.add_facet("/brand");
    for a in &r.facet_attributes {
        facet_collector.add_facet(Facet::from_path(["attr", a.as_str()]));
    }
    // The route bounds both; a caller that did not gets no more than a page.
    let limit = r.limit.clamp(1, 100);
    let offset = r.offset.min(crate::http::MAX_RESULT_WINDOW);
    let top = TopDocs::with_limit(limit).and_offset(offset);
    let (addresses, total, facet_counts, bands): (Vec<(f32, DocAddress)>, usize, _, _) = match r.sort {
        Sort::Relevance => searcher.search(&*query, &(top.order_by_score(), Count, facet_collector, Bands))?,
        Sort::PriceAsc | Sort::PriceDesc => {
            let order = if r.sort == Sort::PriceAsc { Order::Asc } else { Order::Desc };
            let (docs, total, facets, bands) =
                searcher.search(&*query, &(top.order_by_fast_field::<u64>("price", order), Count, facet_collector, Bands))?;
            (docs.into_iter().map(|(_, a)| (0.0, a)).collect(), total, facets, bands)
        }
        Sort::Newest => {
            let (docs, total, facets, bands) =
                searcher.search(&*query, &(top.order_by_fast_field::<i64>("created", Order::Desc), Count, facet_collector, Bands))?;
            (docs.into_iter().map(|(_, a)| (0.0, a)).collect(), total, facets, bands)
        }
    };
    // Price bands count the other filters only, so a shopper sees what
    // choosing another band would give: with a price filter, one more pass.
    let bands = if r.min_price.is_some() || r.max_price.is_some() {
        searcher.search(&*assemble(f, r, synonyms, false), &Bands)?
    } else {
        bands
    };
    let facets = Facets {
        category: counts(&facet_counts, "/category"),
        brand: counts(&facet_counts, "/brand"),
        attributes: r.facet_attributes.iter().map(|a| (a.clone(), counts(&facet_counts, &format!("/attr/{a}")))).collect(),
        price: BANDS.iter().zip(bands).map(|((min, max), count)| PriceBand { min: *min, max: *max, count }).collect(),
    };
    let hits = hits(&searcher, f, &*query, &addresses)?;
    let did_you_mean = if total == 0 && !r.q.trim().is_empty() { suggestion(&searcher, f, &r.q)? } else { None };
    Ok(Results { hits, total, facets, did_you_mean })
}

fn text_of(doc: &TantivyDocument, field: Field) -> Option<String> {
    doc.get_first(field).and_then(|v| v.as_str().map(str::to_owned))
}

fn hits(searcher: &Searcher, f: &Fields, query: &dyn Query, addresses: &[(f32, DocAddress)]) -> Result<Vec<Hit>, IndexError> {
    let mut description = SnippetGenerator::create(searcher, query, f.description)?;
    description.set_max_num_chars(160);
    let title = SnippetGenerator::create(searcher, query, f.title)?;
    let mut out = Vec::with_capacity(addresses.len());
    for (score, address) in addresses {
        let doc: TantivyDocument = searcher.doc(*address)?;
        let mut snippet = description.snippet_from_doc(&doc).to_html();
        if snippet.is_empty() {
            snippet = title.snippet_from_doc(&doc).to_html();
        }
        out.push(hit(&doc, f, *score, snippet));
    }
    Ok(out)
}

/// Edit distance with adjacent transpositions counted as one edit (the
/// optimal-string-alignment distance), as the fuzzy queries count them.
pub fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// When nothing matched: each word replaced by the closest title word of
/// the products nearest to it (two edits at most).
fn suggestion(searcher: &Searcher, f: &Fields, q: &str) -> Result<Option<String>, IndexError> {
    let mut changed = false;
    let mut out = Vec::new();
    for word in q.split_whitespace() {
        let lower = word.to_lowercase();
        let term = Term::from_field_text(f.title, &lower);
        let near = searcher.search(&FuzzyTermQuery::new(term, 2, true), &TopDocs::with_limit(5).order_by_score())?;
        let mut best: Option<(usize, String)> = None;
        for (_, address) in near {
            let doc: TantivyDocument = searcher.doc(address)?;
            for candidate in words(&text_of(&doc, f.title).unwrap_or_default()) {
                let d = distance(&lower, &candidate);
                if d <= 2 && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
                    best = Some((d, candidate));
                }
            }
        }
        match best {
            Some((d, w)) if d > 0 => {
                changed = true;
                out.push(w);
            }
            _ => out.push(lower),
        }
    }
    Ok(changed.then(|| out.join(" ")))
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Suggestion {
    /// `product` or `category`.
    pub kind: String,
    pub text: String,
    /// A product's slug or a category's id.
    pub id: String,
}

/// Titles and categories for what is being typed.
pub fn suggest(open: &Open, q: &str, limit: usize) -> Result<Vec<Suggestion>, IndexError> {
    let f = &open.fields;
    let typed = words(q);
    let Some((last, first)) = typed.split_last() else { return Ok(Vec::new()) };
    let searcher = open.reader.searcher();
    let mut must: Vec<Box<dyn Query>> = first.iter().map(|w| term_query(f.title, w)).collect();
    must.push(Box::new(FuzzyTermQuery::new_prefix(Term::from_field_text(f.title, last), 0, true)));
    let products = searcher.search(&BooleanQuery::intersection(must), &TopDocs::with_limit(limit).order_by_score())?;
    let mut out = Vec::new();
    for (_, address) in products {
        let doc: TantivyDocument = searcher.doc(address)?;
        out.push(Suggestion {
            kind: "product".into(),
            text: text_of(&doc, f.title).unwrap_or_default(),
            id: text_of(&doc, f.slug).unwrap_or_default(),
        });
    }
    // Categories whose name has a word starting with what is being typed.
    let prefix = FuzzyTermQuery::new_prefix(Term::from_field_text(f.categories, last), 0, true);
    let filed = searcher.search(&prefix, &TopDocs::with_limit(50).order_by_score())?;
    let mut categories: Vec<Suggestion> = Vec::new();
    for (_, address) in filed {
        let doc: TantivyDocument = searcher.doc(address)?;
        let names = doc.get_all(f.categories).filter_map(|v| v.as_str().map(str::to_owned));
        let ids = doc.get_all(f.category_id).filter_map(|v| v.as_str().map(str::to_owned));
        for (name, id) in names.zip(ids) {
            if words(&name).iter().any(|w| w.starts_with(last.as_str())) && !categories.iter().any(|c| c.id == id) {
                categories.push(Suggestion { kind: "category".into(), text: name, id });
            }
        }
        if categories.len() >= 4 {
            break;
        }
    }
    categories.truncate(4);
    out.extend(categories);
    Ok(out)
}

/// The products of `ids` that are active (in the index) and in stock, as
/// hits, in the order given.
pub fn available(open: &Open, ids: &[String]) -> Result<Vec<Hit>, IndexError> {
    let f = &open.fields;
    let searcher = open.reader.searcher();
    let mut out = Vec::new();
    for id in ids {
        let q = BooleanQuery::new(vec![
            (Occur::Must, term_query(f.id, id)),
            filter(Box::new(TermQuery::new(Term::from_field_u64(f.in_stock, 1), IndexRecordOption::Basic))),
        ]);
        let found = searcher.search(&q, &TopDocs::with_limit(1).order_by_score())?;
        if let Some((_, address)) = found.first() {
            let doc: TantivyDocument = searcher.doc(*address)?;
            out.push(hit(&doc, f, 0.0, String::new()));
        }
    }
    Ok(out)
}

fn hit(doc: &TantivyDocument, f: &Fields, score: f32, snippet: String) -> Hit {
    Hit {
        id: text_of(doc, f.id).unwrap_or_default(),
        slug: text_of(doc, f.slug).unwrap_or_default(),
        title: text_of(doc, f.title).unwrap_or_default(),
        brand: text_of(doc, f.brand),
        price: doc.get_first(f.price).and_then(|v| v.as_u64()).and_then(|p| i64::try_from(p).ok()),
        score,
        snippet,
        thumbnail: text_of(doc, f.thumbnail).and_then(|t| serde_json::from_str(&t).ok()),
    }
}

/// Products like `id` by content: shared categories (the deepest weigh
/// most), brand, attributes and title words; in stock, itself left out.
pub fn similar(open: &Open, id: &str, limit: usize) -> Result<Vec<Hit>, IndexError> {
    let f = &open.fields;
    let searcher = open.reader.searcher();
    let found = searcher.search(&*term_query(f.id, id), &TopDocs::with_limit(1).order_by_score())?;
    let Some((_, address)) = found.first() else { return Ok(Vec::new()) };
    let doc: TantivyDocument = searcher.doc(*address)?;
    let mut like: Vec<Box<dyn Query>> = Vec::new();
    let categories: Vec<String> = doc.get_all(f.category_id).filter_map(|v| v.as_str().map(str::to_owned)).collect();
    for (depth, c) in categories.iter().enumerate() {
        // Listed from the product's own category up to the root.
        like.push(boost(term_query(f.category_id, c), 3.0 / (depth as f32 + 1.0)));
    }
    if let Some(brand) = text_of(&doc, f.brand) {
        like.push(boost(term_query(f.brand_exact, &brand.to_lowercase()), 1.0));
    }
    for word in words(&text_of(&doc, f.title).unwrap_or_default()).into_iter().filter(|w| w.len() > 2) {
        like.push(boost(term_query(f.title, &word), 0.7));
    }
    if like.is_empty() {
        return Ok(Vec::new());
    }
    let q = BooleanQuery::new(vec![
        (Occur::Must, Box::new(BooleanQuery::union(like)) as Box<dyn Query>),
        (Occur::MustNot, term_query(f.id, id)),
        filter(Box::new(TermQuery::new(Term::from_field_u64(f.in_stock, 1), IndexRecordOption::Basic))),
    ]);
    let top = searcher.search(&q, &TopDocs::with_limit(limit).order_by_score())?;
    let mut out = Vec::with_capacity(top.len());
    for (score, address) in top {
        let doc: TantivyDocument = searcher.doc(address)?;
        out.push(hit(&doc, f, score, String::new()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_budgets_follow_word_length() {
        assert_eq!((typo_budget(3), typo_budget(4), typo_budget(7), typo_budget(8)), (0, 1, 1, 2));
    }

    #[test]
    fn words_are_folded_and_split() {
        assert_eq!(words("Crème-Brûlée  T-Shirt"), vec!["creme", "brulee", "t", "shirt"]);
        assert_eq!(squash("TSH-0042"), "tsh0042");
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("jackte", "jacket"), 1);
        assert_eq!(distance("jakcets", "jacket"), 2);
        assert_eq!(distance("runing", "running"), 1);
        assert_eq!(distance("same", "same"), 0);
    }
}
