//! The search benchmark's Markdown section: the machine, the catalog, then
//! tables of metric, Emporium, reference and ratio (Emporium ÷ reference).

use emporium_bench::report::{machine, num, ratio};

use super::{Args, BATCH, Build, LIMIT, Measured, Pair, SETTLED, SUGGESTIONS, Stats, WARMUP, WRITER_MEMORY};

/// `100000` → `100,000`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A row of `| group | metric | Emporium | reference | ratio |`.
fn row(group: &str, metric: &str, ours: String, reference: String, ratio: String) -> String {
    format!("| {group} | {metric} | {ours} | {reference} | {ratio} |\n")
}

fn build_table(b: &Pair<Build>, products: usize) -> String {
    let (e, r) = (&b.emporium, &b.reference);
    let rate = |x: &Build| products as f64 / x.seconds.max(1e-9);
    let mib = |x: &Build| x.bytes as f64 / 1024.0 / 1024.0;
    let mut out = format!("\n### Index build ({} products, batches of {}, one commit each)\n\n", grouped(products), grouped(BATCH));
    out += "| | metric | Emporium | reference | ratio |\n|---|---|---:|---:|---:|\n";
    out += &row("build", "documents/s", num(rate(e), 0), num(rate(r), 0), ratio(rate(e), rate(r)));
    out += &row("build", "seconds", num(e.seconds, 2), num(r.seconds, 2), ratio(e.seconds, r.seconds));
    out += &row("index", "documents", e.docs.to_string(), r.docs.to_string(), "-".into());
    out += &row("index", "segments once merged", e.segments.to_string(), r.segments.to_string(), "-".into());
    out += &row("index", "size on disk MiB", num(mib(e), 1), num(mib(r), 1), ratio(mib(e), mib(r)));
    out
}

fn stats_rows(group: &str, s: &Pair<Stats>, threads: usize, matches: &str) -> String {
    let (e, r) = (&s.emporium, &s.reference);
    let mut out = row(group, "p50 ms", num(e.p50_ms, 3), num(r.p50_ms, 3), ratio(e.p50_ms, r.p50_ms));
    out += &row(group, "p99 ms", num(e.p99_ms, 3), num(r.p99_ms, 3), ratio(e.p99_ms, r.p99_ms));
    out += &row(group, "per second, 1 thread", num(e.per_sec, 0), num(r.per_sec, 0), ratio(e.per_sec, r.per_sec));
    if threads > 1 {
        let (a, b) = (e.per_sec_threads, r.per_sec_threads);
        out += &row(group, &format!("per second, {threads} threads"), num(a, 0), num(b, 0), ratio(a, b));
    }
    out += &row(group, matches, num(e.matches, 1), num(r.matches, 1), "-".into());
    out
}

pub fn render(args: &Args, m: &Measured) -> String {
    let mut out = String::from(
        "\n## Search\n\nWritten by `search-bench`: the search service's own index (`SearchIndex`, `Open::apply`) and searches \
         (`search::query::run`, `search::query::suggest`) called in process — no HTTP, no database, no synonyms — on a synthetic \
         catalog in a fresh temporary folder. The reference, measured in the same invocation on the same documents and searches, is \
         a bare tantivy index of the same fields and the closest plain tantivy query for each search. Nothing is pinned.\n\n",
    );
    out += &format!("- Machine: {}\n", machine());
    out += &format!(
        "- Catalog: {} products from word lists with a fixed seed (40 product nouns, 30 adjectives, 20 materials, 50 brands; \
         2–3 category levels; color, size and material; ~30-word descriptions; 1–3 SKUs; prices 500–50,000 minor units; 85% in stock)\n",
        grouped(args.products)
    );
    out += &format!(
        "- Searches: {} of each kind, the first {} also run before unmeasured; {LIMIT} hits each; latency on one thread; \
         throughput on one thread and on {} threads each running the whole list\n",
        grouped(args.queries),
        WARMUP.min(args.queries),
        args.threads
    );
    out += &build_table(&m.build, args.products);
    out += "\n### Searches (`search::query::run`)\n\n| search | metric | Emporium | reference | ratio |\n|---|---|---:|---:|---:|\n";
    for (kind, _, stats) in &m.searches {
        out += &stats_rows(kind.label(), stats, args.threads, "matches per search");
    }
    let examples: Vec<String> = m.searches.iter().map(|(kind, example, _)| format!("{}: {example}", kind.label())).collect();
    out += &format!("\nFirst search of each kind — {}.\n", examples.join("; "));
    out += &format!("\n### Autocomplete (`search::query::suggest`, {SUGGESTIONS} products, 2–5 letters of a product noun)\n\n");
    out += "| | metric | Emporium | reference | ratio |\n|---|---|---:|---:|---:|\n";
    out += &stats_rows("suggest", &m.suggest, args.threads, "suggestions per call");
    out += &format!(
        "\nRatios are Emporium ÷ reference: for documents/s and per second, higher is better; for seconds, latency and size, lower is \
         better. **Build**: Emporium's `Open::apply` per batch deletes each product's id (it is an upsert), adds the documents through \
         its analyzers (lower case and ASCII folding; SKU prefixes as 2–40-character n-grams), commits and reloads its reader; the \
         reference adds the same field values with tantivy's default tokenizer and commits, nothing more. Both use one indexing \
         thread, a {} MB budget and tantivy's default merge policy; searches start once the merges are done (the reference's \
         awaited with `wait_merging_threads`, Emporium's taken as done when its segments stay the same for {} s), which the build \
         time leaves out. **Searches**: Emporium makes, for every word, an exact clause over six weighted fields and, over the four \
         short ones (title, brand, tags, categories), a typo clause (1 edit for 4–7 letters, 2 beyond) and, for the last word, a \
         prefix clause, plus the squashed title and the SKU fields; it collects the top {LIMIT} with the total, the category and \
         brand facets (and color when asked) and five price bands in the same pass, loads the hits and makes snippets. The reference parses the words with tantivy's `QueryParser` \
         over title and description, every word required (a typo: a one-edit `FuzzyTermQuery` on both fields; faceted: the same \
         words plus a brand `TermQuery`, a price `RangeQuery` and a `FacetCollector` over category, brand and color) and loads the \
         top {LIMIT}. The typo searches use 4–7-letter nouns with two neighbouring letters swapped, so both sides allow one edit. \
         **Autocomplete**: Emporium's `suggest` (a prefix query on titles for {SUGGESTIONS} products, plus up to 4 categories with a \
         word starting with the prefix) against a prefix `FuzzyTermQuery` on the title for the top {SUGGESTIONS}. More matches on \
         Emporium's side are its typo and prefix tolerance at work.\n",
        WRITER_MEMORY / 1_000_000,
        SETTLED.as_secs()
    );
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands() {
        assert_eq!(super::grouped(100_000), "100,000");
        assert_eq!(super::grouped(1_000), "1,000");
        assert_eq!(super::grouped(999), "999");
        assert_eq!(super::grouped(1_234_567), "1,234,567");
    }
}
