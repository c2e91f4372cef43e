//! Every SQL statement of the search service: synonym groups and the
//! searches that found nothing.

use platform::db::{Db, DbError, Dialect, now_ms};
use platform::{on_db, on_tx, on_write};

pub async fn synonyms(db: &Db) -> Result<Vec<Vec<String>>, DbError> {
    let rows: Vec<(String,)> =
        on_db!(db, pool => sqlx::query_as("SELECT words FROM synonym_groups ORDER BY position").fetch_all(pool).await)?;
    rows.into_iter()
        .map(|(w,)| serde_json::from_str(&w).map_err(|e| DbError::Corrupt(format!("synonyms: {e}"))))
        .collect()
}

/// Replaces every group at once.
pub async fn set_synonyms(db: &Db, groups: &[Vec<String>]) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => sqlx::query("DELETE FROM synonym_groups").execute(c).await.map(|_| ()))?;
    for (i, group) in groups.iter().enumerate() {
        let words = serde_json::to_string(group).map_err(|e| DbError::Corrupt(e.to_string()))?;
        on_tx!(&mut tx, c => sqlx::query("INSERT INTO synonym_groups (position, words) VALUES ($1, $2)")
            .bind(i as i64).bind(words).execute(c).await.map(|_| ()))?;
    }
    tx.commit().await?;
    Ok(())
}

/// Counts one more search for `query` that found nothing.
pub async fn no_result(db: &Db, query: &str) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query(
        "INSERT INTO no_results (query, searches, last_ms) VALUES ($1, 1, $2) \
         ON CONFLICT (query) DO UPDATE SET searches = no_results.searches + 1, last_ms = excluded.last_ms")
        .bind(query).bind(now_ms()).execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// The most frequent searches that found nothing: (query, searches, last_ms).
pub async fn no_results(db: &Db, limit: u32) -> Result<Vec<(String, i64, i64)>, DbError> {
    let rows = on_db!(db, pool => sqlx::query_as(
        "SELECT query, searches, last_ms FROM no_results ORDER BY searches DESC, query LIMIT $1")
        .bind(i64::from(limit)).fetch_all(pool).await)?;
    Ok(rows)
}

// Recommendation statistics

/// Half-life of popularity: a sale or view counts half as much after three days.
pub const HALF_LIFE_MS: f64 = 3.0 * 86_400_000.0;

fn decayed(score: f64, at_ms: i64, now_ms: i64) -> f64 {
    score * (-(now_ms - at_ms).max(0) as f64 * std::f64::consts::LN_2 / HALF_LIFE_MS).exp()
}

/// Adds `weight` to a product's popularity, decaying what was there.
/// The row is made first and then read locked, so two bumps at once (two
/// visitors' views) both count: on PostgreSQL `FOR UPDATE` holds the second
/// until the first commits; SQLite's single writer already does.
async fn bump(tx: &mut platform::db::Tx, product: &str, weight: f64, now: i64) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("INSERT INTO trend (product_id, score, at_ms) VALUES ($1, 0, $2) ON CONFLICT (product_id) DO NOTHING")
        .bind(product).bind(now).execute(c).await.map(|_| ()))?;
    let read = match tx.dialect() {
        Dialect::Postgres => "SELECT score, at_ms FROM trend WHERE product_id = $1 FOR UPDATE",
        Dialect::Sqlite => "SELECT score, at_ms FROM trend WHERE product_id = $1",
    };
    let (score, at): (f64, i64) = on_tx!(tx, c => sqlx::query_as(read).bind(product).fetch_one(c).await)?;
    let score = decayed(score, at, now) + weight;
    on_tx!(tx, c => sqlx::query("UPDATE trend SET score = $2, at_ms = $3 WHERE product_id = $1")
        .bind(product).bind(score).bind(now.max(at)).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// Records a paid order's products, in the transaction that marks its
/// event handled (so a redelivered event counts nothing). A product counts
/// once per buyer, and so does a pair: a product new to the buyer is paired
/// with everything they bought before and in this order.
pub async fn record_order(tx: &mut platform::db::Tx, order: &str, buyer: &str, products: &[String], at_ms: i64) -> Result<(), DbError> {
    let before: Vec<(String,)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT DISTINCT product_id FROM purchases WHERE buyer = $1 AND order_id <> $2")
        .bind(buyer).bind(order).fetch_all(c).await)?;
    let mut known: Vec<String> = before.into_iter().map(|r| r.0).collect();
    let mut distinct: Vec<&String> = products.iter().collect();
    distinct.sort();
    distinct.dedup();
    for p in distinct {
        on_tx!(tx, c => sqlx::query(
            "INSERT INTO purchases (order_id, product_id, buyer, at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(order).bind(p).bind(buyer).bind(at_ms).execute(c).await.map(|_| ()))?;
        bump(tx, p, 1.0, at_ms).await?;
        if known.contains(p) {
            continue;
        }
        on_tx!(tx, c => sqlx::query(
            "INSERT INTO product_buyers (product_id, buyers) VALUES ($1, 1) \
             ON CONFLICT (product_id) DO UPDATE SET buyers = product_buyers.buyers + 1")
            .bind(p).execute(c).await.map(|_| ()))?;
        for q in &known {
            for (a, b) in [(p.as_str(), q.as_str()), (q.as_str(), p.as_str())] {
                on_tx!(tx, c => sqlx::query(
                    "INSERT INTO co_purchases (a, b, buyers) VALUES ($1, $2, 1) \
                     ON CONFLICT (a, b) DO UPDATE SET buyers = co_purchases.buyers + 1")
                    .bind(a).bind(b).execute(c).await.map(|_| ()))?;
            }
        }
        known.push(p.clone());
    }
    Ok(())
}

/// A product view: a little popularity, and the viewer's history.
pub async fn record_view(db: &Db, viewer: Option<&str>, product: &str) -> Result<(), DbError> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    if let Some(v) = viewer {
        on_tx!(&mut tx, c => sqlx::query("INSERT INTO views (viewer, product_id, at_ms) VALUES ($1, $2, $3)")
            .bind(v).bind(product).bind(now).execute(c).await.map(|_| ()))?;
    }
    bump(&mut tx, product, 0.1, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Products bought by the buyers of `product`, scored by the cosine
/// similarity of their buyer sets (`both / sqrt(buyers(a) × buyers(b))`), so
/// best-sellers do not top every list.
pub async fn bought_with(db: &Db, product: &str, limit: i64) -> Result<Vec<(String, f64)>, DbError> {
    let rows: Vec<(String, i64, i64, i64)> = on_db!(db, pool => sqlx::query_as(
        "SELECT c.b, c.buyers, pa.buyers, pb.buyers FROM co_purchases c \
         JOIN product_buyers pa ON pa.product_id = c.a JOIN product_buyers pb ON pb.product_id = c.b \
         WHERE c.a = $1 ORDER BY c.buyers DESC LIMIT 500")
        .bind(product).fetch_all(pool).await)?;
    let mut scored: Vec<(String, f64)> =
        rows.into_iter().map(|(b, together, na, nb)| (b, together as f64 / ((na * nb) as f64).sqrt())).collect();
    scored.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    scored.truncate(limit.max(0) as usize);
    Ok(scored)
}

/// The most popular products now, decayed to `now`.
pub async fn trending(db: &Db, limit: usize) -> Result<Vec<(String, f64)>, DbError> {
    let rows: Vec<(String, f64, i64)> = on_db!(db, pool => sqlx::query_as(
        "SELECT product_id, score, at_ms FROM trend ORDER BY score DESC LIMIT 2000").fetch_all(pool).await)?;
    let now = now_ms();
    let mut scored: Vec<(String, f64)> = rows.into_iter().map(|(p, s, at)| (p, decayed(s, at, now))).collect();
    scored.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    scored.truncate(limit);
    Ok(scored)
}

/// What a buyer bought, newest first.
pub async fn bought_by(db: &Db, buyer: &str) -> Result<Vec<String>, DbError> {
    let rows: Vec<(String,)> = on_db!(db, pool => sqlx::query_as(
        "SELECT product_id FROM purchases WHERE buyer = $1 ORDER BY at_ms DESC LIMIT 200")
        .bind(buyer).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// What a viewer looked at lately, newest first, without repeats.
pub async fn viewed_by(db: &Db, viewer: &str) -> Result<Vec<String>, DbError> {
    let rows: Vec<(String,)> = on_db!(db, pool => sqlx::query_as(
        "SELECT product_id FROM views WHERE viewer = $1 ORDER BY at_ms DESC LIMIT 50")
        .bind(viewer).fetch_all(pool).await)?;
    let mut out: Vec<String> = Vec::new();
    for (p,) in rows {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Forgets every statistic and purchase (a rebuild replays the purchases
/// read before, in order).
pub async fn reset_counts(tx: &mut platform::db::Tx) -> Result<(), DbError> {
    for table in ["product_buyers", "co_purchases", "trend", "purchases"] {
        let sql = format!("DELETE FROM {table}");
        on_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(c).await.map(|_| ()))?;
    }
    Ok(())
}

/// Every purchase, grouped by order: (order, buyer, at_ms, products).
pub async fn all_purchases(db: &Db) -> Result<Vec<(String, String, i64, Vec<String>)>, DbError> {
    let rows: Vec<(String, String, i64, String)> = on_db!(db, pool => sqlx::query_as(
        "SELECT order_id, buyer, at_ms, product_id FROM purchases ORDER BY at_ms, order_id, product_id").fetch_all(pool).await)?;
    let mut out: Vec<(String, String, i64, Vec<String>)> = Vec::new();
    for (order, buyer, at, product) in rows {
        match out.last_mut() {
            Some(last) if last.0 == order => last.3.push(product),
            _ => out.push((order, buyer, at, vec![product])),
        }
    }
    Ok(out)
}
