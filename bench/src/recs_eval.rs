//! Offline evaluation of the recommenders on a synthetic order history with
//! a planted structure: products fall in taste groups, each customer has a
//! group, and their orders mostly hold products of that group (plus noise
//! and a few best-sellers everyone buys). The last purchase of each
//! customer is held out; each recommender then proposes ten products from
//! the rest, and we report hit-rate@10 and NDCG@10 against a popularity
//! baseline. A recommender that found the structure beats the baseline.

use std::collections::BTreeMap;

use clap::Parser;
use kernel::Envelope;
use platform::db::{Db, DbOptions};
use platform::migrate::{self, PLATFORM};
use platform::service::Ports;
use search::{ProductDoc, Search};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Offline evaluation of the recommenders (hit-rate@10, NDCG@10)")]
struct Args {
    #[arg(long, default_value_t = 400)]
    products: usize,
    #[arg(long, default_value_t = 20)]
    groups: usize,
    #[arg(long, default_value_t = 600)]
    customers: usize,
    /// Orders per customer (the last one's last item is held out).
    #[arg(long, default_value_t = 4)]
    orders: usize,
    /// Share of items picked at random instead of from the customer's group.
    #[arg(long, default_value_t = 0.2)]
    noise: f64,
    /// Append the report here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

fn product_id(i: usize) -> String {
    format!("prod_eval{i:05}")
}

fn doc(i: usize, groups: usize) -> ProductDoc {
    let group = i % groups;
    ProductDoc {
        id: product_id(i),
        slug: format!("p-{i}"),
        status: "active".into(),
        title: format!("Item {i} of line{group}"),
        brand: Some(format!("maker{group}")),
        tags: vec![],
        category_ids: vec![format!("cat_line{group}")],
        category_names: vec![format!("Line {group}")],
        attributes: BTreeMap::new(),
        description: String::new(),
        skus: vec![format!("EVAL-{i}")],
        price: Some(1000),
        in_stock: true,
        created_ms: 0,
        thumbnail: None,
    }
}

/// Ranks of the held-out product in a list of ten: (hit, ndcg contribution).
fn score(list: &[String], held_out: &str) -> (f64, f64) {
    match list.iter().take(10).position(|p| p == held_out) {
        Some(rank) => (1.0, 1.0 / ((rank + 2) as f64).log2()),
        None => (0.0, 0.0),
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("emporium-recs-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = run(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    println!("{report}");
    if let Some(out) = &args.out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(out).map_err(|e| e.to_string())?;
        writeln!(f, "\n{report}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn run(args: &Args, dir: &std::path::Path) -> Result<String, String> {
    let url = format!("sqlite://{}/search.db", dir.display());
    let db = Db::connect(&url, "search", &DbOptions::default()).await.map_err(|e| e.to_string())?;
    migrate::migrate(&db, &[&PLATFORM, &search::MIGRATIONS]).await.map_err(|e| e.to_string())?;
    let (search, _) = Search::open(db, Ports::default(), dir).map_err(|e| e.to_string())?;
    let docs: Vec<ProductDoc> = (0..args.products).map(|i| doc(i, args.groups)).collect();
    search.index_documents(docs).await.map_err(|e| e.to_string())?;

    // The history: per customer, orders of 1-3 items; the held-out item is
    // the last item of the last order.
    let mut rng = Rng(42);
    let per_group = args.products / args.groups;
    let best_sellers: Vec<usize> = (0..5).map(|k| k * per_group * 3 % args.products).collect();
    // (customer, items bought before, the held-out item)
    let mut held_out: Vec<(String, Vec<String>, String)> = Vec::new();
    let mut n = 0;
    for c in 0..args.customers {
        let customer = format!("usr_eval{c:05}");
        let group = c % args.groups;
        let mut orders: Vec<Vec<usize>> = Vec::new();
        for _ in 0..args.orders {
            let mut items = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let pick = if rng.chance(args.noise) {
                    rng.below(args.products)
                } else if rng.chance(0.15) {
                    best_sellers[rng.below(best_sellers.len())]
                } else {
                    group + args.groups * rng.below(per_group)
                };
                if !items.contains(&pick) {
                    items.push(pick);
                }
            }
            orders.push(items);
        }
        let Some(target) = orders.last_mut().and_then(|o| o.pop()) else { continue };
        let before: Vec<String> = orders.iter().flatten().map(|i| product_id(*i)).collect();
        if before.is_empty() || before.contains(&product_id(target)) {
            continue;
        }
        for items in orders.iter().filter(|o| !o.is_empty()) {
            n += 1;
            let order = format!("ord_eval{n:06}");
            let lines: Vec<_> = items.iter().map(|i| json!({"product_id": product_id(*i)})).collect();
            let event = Envelope::new("order.paid", &order, json!({"order_id": order, "user_id": customer, "lines": lines}));
            search.order_paid(&event).await.map_err(|e| e.to_string())?;
        }
        held_out.push((customer, before, product_id(target)));
    }

    let mut totals: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (customer, before, target) in &held_out {
        let last_seen = before.last().map(String::as_str).unwrap_or_default();
        let lists: [(&str, Vec<String>); 4] = [
            ("personal (`/me/recommendations`)", ids(search.for_customer(customer, 10).await)?),
            ("also bought with the last item", ids(search.also_bought(last_seen, Some(customer), 10).await)?),
            ("similar to the last item", ids(search.similar(last_seen, Some(customer), 10).await)?),
            ("popularity (baseline; bought items left out)", ids(search.trending(10, before).await)?),
        ];
        for (name, list) in lists {
            let (hit, gain) = score(&list, target);
            let entry = totals.entry(name).or_default();
            entry.0 += hit;
            entry.1 += gain;
        }
    }
    let users = held_out.len() as f64;
    let baseline = totals.get("popularity (baseline; bought items left out)").copied().unwrap_or((0.0, 0.0));
    let mut report = format!(
        "## Recommendations, offline\n\n`recs-eval`: {} products in {} taste groups, {} customers with {} orders each \
         (1-3 items; {:.0} % of items random, 15 % from five best-sellers, the rest from the customer's group); \
         the last purchase of each customer is held out ({} held out).\n\n\
         | recommender | hit-rate@10 | NDCG@10 | hit-rate ÷ baseline |\n|---|---:|---:|---:|\n",
        args.products, args.groups, args.customers, args.orders, args.noise * 100.0, held_out.len()
    );
    for (name, (hits, gain)) in &totals {
        let ratio = if baseline.0 > 0.0 { format!("{:.2}", hits / baseline.0) } else { "-".into() };
        report.push_str(&format!("| {name} | {:.3} | {:.3} | {ratio} |\n", hits / users, gain / users));
    }
    Ok(report)
}

fn ids(hits: Result<Vec<search::query::Hit>, search::SearchError>) -> Result<Vec<String>, String> {
    Ok(hits.map_err(|e| e.to_string())?.into_iter().map(|h| h.id).collect())
}
