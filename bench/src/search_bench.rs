//! The search benchmark: a deterministic synthetic catalog indexed through
//! the search service's own index (`search::index::SearchIndex`, batches of
//! 1,000 through `Open::apply`), then searched in process through
//! `search::query::run` and `search::query::suggest`, one kind of search at
//! a time, on one thread (latency) and on several (throughput). The
//! reference, measured in the same invocation on the same documents and
//! searches, is a bare tantivy index and the closest plain tantivy queries.
//! Prints a Markdown section; `--out FILE` appends it.
//!
//! The catalog and the searches are in `search_catalog.rs`, the reference in
//! `search_reference.rs`, the Markdown in `search_report.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use search::ProductDoc;
use search::index::{Open, SearchIndex};
use search::query::{self, Request};
use search_catalog::{Kind, Probe};

mod search_catalog;
mod search_reference;
mod search_report;

#[derive(Parser)]
#[command(about = "Emporium search benchmark (see the Benchmarks section of README.md)")]
struct Args {
    /// Products in the synthetic catalog.
    #[arg(long, default_value_t = 100_000)]
    products: usize,
    /// Searches of each kind, and autocompletions.
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Threads searching at once for the throughput figures.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Append the Markdown section to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Products per `Open::apply` call, and per reference commit.
const BATCH: usize = 1000;
/// Hits per search: the search route's default page.
const LIMIT: usize = 20;
/// Suggestions per call, as the suggest route asks.
const SUGGESTIONS: usize = 8;
/// Emporium's indexing memory budget, given to the reference's writer too.
const WRITER_MEMORY: usize = 50_000_000;
/// Searches of each list run unmeasured first, per engine.
const WARMUP: usize = 200;
/// Emporium's merges are taken as done when its segments stay the same this long.
const SETTLED: Duration = Duration::from_secs(5);

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.products == 0 || args.queries == 0 || args.threads == 0 {
        return Err("--products, --queries and --threads must be at least 1".into());
    }
    let dir = std::env::temp_dir().join(format!("emporium-search-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = run(&args, &dir);
    let _ = std::fs::remove_dir_all(dir);
    let report = search_report::render(&args, &result?);
    println!("{report}");
    if let Some(out) = &args.out {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(out).map_err(|e| format!("{}: {e}", out.display()))?;
        file.write_all(report.as_bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

/// A figure for Emporium and for the reference.
struct Pair<T> {
    emporium: T,
    reference: T,
}

struct Build {
    /// The batches, from the first add to the last commit (merges not waited for).
    seconds: f64,
    docs: u64,
    /// Segments once the merges were done, as the searches saw them.
    segments: usize,
    bytes: u64,
}

/// What one engine did with one list of searches.
#[derive(Default)]
struct Stats {
    p50_ms: f64,
    p99_ms: f64,
    /// Searches per second on one thread.
    per_sec: f64,
    /// Searches per second with `--threads` threads.
    per_sec_threads: f64,
    /// Documents matched (suggestions made) per search, on average.
    matches: f64,
}

struct Measured {
    build: Pair<Build>,
    /// Each kind, with one of its searches as an example.
    searches: Vec<(Kind, String, Pair<Stats>)>,
    suggest: Pair<Stats>,
}

fn run(args: &Args, dir: &Path) -> Result<Measured, String> {
    eprintln!("generating {} products", args.products);
    let docs = search_catalog::products(args.products);

    eprintln!("index build: emporium");
    let root = dir.join("emporium");
    let (index, took) = build_emporium(&root, &docs)?;
    let open = index.live().map_err(err)?;
    eprintln!("waiting for emporium's merges");
    let segments = settle(&open)?;
    let emporium = Build { seconds: took.as_secs_f64(), docs: open.reader.searcher().num_docs(), segments, bytes: dir_size(&root) };

    // Emporium's merges are over, so they do not take the reference's CPU.
    eprintln!("index build: reference");
    let reference_dir = dir.join("reference");
    let (reference, took) = search_reference::build(&reference_dir, &docs, BATCH)?;
    let (reference_docs, segments) = {
        let searcher = reference.reader.searcher();
        (searcher.num_docs(), searcher.segment_readers().len())
    };
    let reference_build = Build { seconds: took.as_secs_f64(), docs: reference_docs, segments, bytes: dir_size(&reference_dir) };
    for (name, build) in [("emporium", &emporium), ("reference", &reference_build)] {
        if build.docs != docs.len() as u64 {
            return Err(format!("the {name} index holds {} documents of {}", build.docs, docs.len()));
        }
    }
    drop(docs);

    let mut searches = Vec::new();
    for kind in Kind::ALL {
        let probes = search_catalog::probes(kind, args.queries);
        let requests: Vec<Request> = probes.iter().map(request).collect();
        eprintln!("{}: emporium", kind.label());
        let ours = measure(&requests, args.threads, |r| query::run(&open, r, &[]).map(|found| found.total).map_err(err))?;
        eprintln!("{}: reference", kind.label());
        let theirs = measure(&probes, args.threads, |p| reference.ask(p))?;
        if kind == Kind::OneWord && (ours.matches <= 0.0 || theirs.matches <= 0.0) {
            return Err("one-word searches found nothing: the catalog or an index is broken".into());
        }
        let example = probes.first().map(describe).unwrap_or_default();
        searches.push((kind, example, Pair { emporium: ours, reference: theirs }));
    }

    let prefixes = search_catalog::prefixes(args.queries);
    eprintln!("autocomplete: emporium");
    let ours = measure(&prefixes, args.threads, |p| query::suggest(&open, p, SUGGESTIONS).map(|s| s.len()).map_err(err))?;
    eprintln!("autocomplete: reference");
    let theirs = measure(&prefixes, args.threads, |p| reference.prefix(p))?;
    Ok(Measured {
        build: Pair { emporium, reference: reference_build },
        searches,
        suggest: Pair { emporium: ours, reference: theirs },
    })
}

/// The search as the route would parse it.
fn request(p: &Probe) -> Request {
    Request {
        q: p.q.clone(),
        brand: p.brand.clone(),
        min_price: p.price.map(|(min, _)| min),
        max_price: p.price.map(|(_, max)| max),
        limit: LIMIT,
        facet_attributes: if p.kind == Kind::Faceted { vec!["color".to_owned()] } else { Vec::new() },
        ..Request::default()
    }
}

/// `q`, and the filters when there are some: for the report.
fn describe(p: &Probe) -> String {
    let mut out = format!("`{}`", p.q);
    if let Some(brand) = &p.brand {
        out += &format!(", brand {brand}");
    }
    if let Some((min, max)) = p.price {
        out += &format!(", price {min}–{max}");
    }
    if p.kind == Kind::Faceted {
        out += ", color facet";
    }
    out
}

/// Builds Emporium's index under `root` as the service does, a batch per
/// `Open::apply`; returns it and the time the batches took.
fn build_emporium(root: &Path, docs: &[ProductDoc]) -> Result<(SearchIndex, Duration), String> {
    let (index, _fresh) = SearchIndex::open(root).map_err(err)?;
    let open = index.live().map_err(err)?;
    let started = Instant::now();
    for batch in docs.chunks(BATCH) {
        open.apply(batch, &[]).map_err(err)?;
    }
    Ok((index, started.elapsed()))
}

fn segment_ids(open: &Open) -> Result<Vec<tantivy::index::SegmentId>, String> {
    open.reader.reload().map_err(err)?;
    Ok(open.reader.searcher().segment_readers().iter().map(|s| s.segment_id()).collect())
}

/// Waits for Emporium's background merges (its writer is its own, so they
/// cannot be joined): its reader, reloaded every 250 ms, must show the same
/// segments for [`SETTLED`], within two minutes. Answers the segment count.
fn settle(open: &Open) -> Result<usize, String> {
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut last = segment_ids(open)?;
    let mut since = Instant::now();
    while since.elapsed() < SETTLED && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(250));
        let now = segment_ids(open)?;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    Ok(last.len())
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

// Measuring

/// Runs `items` through `run` (which answers the matches): a warm-up, then
/// each timed on one thread, then all of them again on `threads` threads.
fn measure<T: Sync, F: Fn(&T) -> Result<usize, String> + Sync>(items: &[T], threads: usize, run: F) -> Result<Stats, String> {
    for item in items.iter().take(WARMUP) {
        run(item)?;
    }
    let mut nanos = Vec::with_capacity(items.len());
    let mut matches = 0;
    let started = Instant::now();
    for item in items {
        let sent = Instant::now();
        matches += run(item)?;
        nanos.push(sent.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64);
    }
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    nanos.sort_unstable();
    let n = items.len().max(1) as f64;
    let per_sec = items.len() as f64 / wall;
    let per_sec_threads = if threads > 1 { in_parallel(items, threads, &run)? } else { per_sec };
    Ok(Stats {
        p50_ms: percentile(&nanos, 50.0),
        p99_ms: percentile(&nanos, 99.0),
        per_sec,
        per_sec_threads,
        matches: matches as f64 / n,
    })
}

/// Searches per second with `threads` threads, each running the whole list
/// from its own place in it.
fn in_parallel<T: Sync, F: Fn(&T) -> Result<usize, String> + Sync>(items: &[T], threads: usize, run: &F) -> Result<f64, String> {
    let started = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<(), String> {
                    let start = t * items.len() / threads;
                    for item in items[start..].iter().chain(&items[..start]) {
                        run(item)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().map_err(|_| "a search thread panicked".to_owned())?)
    })?;
    Ok((threads * items.len()) as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1e6
}
