//! A reservation storm: many tasks reserve one unit each of a single SKU
//! until it is gone, through the catalog's reservation port on a real
//! database. Prints reservations per second and whether anything was
//! oversold (it never may be).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use catalog::{CatalogError, Inventory, Line};
use clap::Parser;
use platform::db::{Db, DbOptions};
use platform::migrate::{self, PLATFORM};
use platform::on_db;

#[derive(Parser)]
#[command(about = "Reservation storm on one SKU")]
struct Args {
    /// Units on hand at the start.
    #[arg(long, default_value_t = 5000)]
    stock: i64,
    /// Concurrent reserving tasks.
    #[arg(long, default_value_t = 64)]
    tasks: usize,
    /// `sqlite://…` or `postgres://…` (default: a fresh SQLite file).
    #[arg(long)]
    database_url: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("emporium-storm-{}", std::process::id()));
    let url = args.database_url.clone().unwrap_or_else(|| format!("sqlite://{}/catalog.db", dir.display()));
    let db = Db::connect(&url, "catalog", &DbOptions { max_connections: 16, ..DbOptions::default() })
        .await
        .map_err(|e| e.to_string())?;
    migrate::migrate(&db, &[&PLATFORM, &catalog::MIGRATIONS]).await.map_err(|e| e.to_string())?;
    catalog::demo::generate(&db, 1, false).await.map_err(|e| e.to_string())?;
    let sku: String = on_db!(db, pool => sqlx::query_scalar("SELECT sku FROM variants ORDER BY id DESC LIMIT 1").fetch_one(pool).await)
        .map_err(|e| e.to_string())?;
    let inventory = Inventory { db: db.clone(), reservation_ttl: Duration::from_secs(900), cache: None };
    inventory.set_count(&sku, None, args.stock, "stocktake", "storm").await.map_err(|e| e.to_string())?;

    let held = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.tasks)
        .map(|t| {
            let (inventory, sku, held, refused) = (inventory.clone(), sku.clone(), held.clone(), refused.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    match inventory.reserve(&format!("ord_storm_{t}_{n}"), &[Line { sku: sku.clone(), quantity: 1 }]).await {
                        Ok(_) => {
                            held.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(CatalogError::OutOfStock { .. }) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (on_hand, reserved): (i64, i64) = on_db!(db, pool => sqlx::query_as(
        "SELECT on_hand, reserved FROM inventory_levels WHERE sku = $1").bind(&sku).fetch_one(pool).await)
        .map_err(|e| e.to_string())?;
    let held = held.load(Ordering::Relaxed) as i64;
    let oversold = (held - args.stock).max(0) + (reserved - on_hand).max(0);
    println!(
        "{{\"reservations\":{held},\"stock\":{},\"tasks\":{},\"seconds\":{elapsed:.3},\"per_second\":{:.1},\"reserved\":{reserved},\"on_hand\":{on_hand},\"oversold\":{oversold}}}",
        args.stock,
        args.tasks,
        held as f64 / elapsed
    );
    db.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    if oversold != 0 || held != args.stock {
        return Err(format!("oversold {oversold}, held {held} of {}", args.stock));
    }
    Ok(())
}
