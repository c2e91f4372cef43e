//! Every SQL statement of the search service: synonym groups and the
//! searches that found nothing.

use platform::db::{Db, DbError, now_ms};
use platform::{on_db, on_tx};

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
    on_db!(db, pool => sqlx::query(
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
