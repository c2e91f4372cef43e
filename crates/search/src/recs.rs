//! Recommendations: bought together (item-to-item: customers who bought
//! this also bought, cosine normalised), similar (content), trending (decayed sales and views) and
//! for one customer (from what they bought and looked at, trending when
//! there is nothing yet). Out-of-stock and inactive products, and what the
//! customer already bought, are left out.

use std::collections::BTreeMap;

use kernel::Envelope;
use platform::outbox;

use crate::query::{self, Hit};
use crate::{Search, SearchError, blocking, store};

/// Who a recommendation is for: a signed-in customer's id.
pub type Viewer<'a> = Option<&'a str>;

impl Search {
    /// Counts a paid order once: its products, their pairs, their popularity.
    pub async fn order_paid(&self, event: &Envelope) -> Result<(), SearchError> {
        let data = &event.data;
        let order = data.get("order_id").and_then(|v| v.as_str()).unwrap_or(event.aggregate_id.as_str());
        let buyer = data
            .get("user_id")
            .and_then(|v| v.as_str())
            .or_else(|| data.get("email").and_then(|v| v.as_str()))
            .unwrap_or(order);
        let products: Vec<String> = data
            .get("lines")
            .and_then(|l| l.as_array())
            .map(|lines| lines.iter().filter_map(|l| l.get("product_id").and_then(|p| p.as_str()).map(str::to_owned)).collect())
            .unwrap_or_default();
        let at = (event.occurred_at.unix_timestamp_nanos() / 1_000_000) as i64;
        if let Some(mut tx) = outbox::begin_once(&self.db, "search", &event.id).await? {
            store::record_order(&mut tx, order, buyer, &products, at).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn in_stock(&self, ids: Vec<String>) -> Result<Vec<Hit>, SearchError> {
        let live = self.index.live()?;
        blocking(move || query::available(&live, &ids)).await
    }

    pub async fn also_bought(&self, product: &str, viewer: Viewer<'_>, limit: usize) -> Result<Vec<Hit>, SearchError> {
        let bought = match viewer {
            Some(v) => store::bought_by(&self.db, v).await?,
            None => Vec::new(),
        };
        let scored = store::bought_with(&self.db, product, 100).await?;
        let ids: Vec<String> = scored.iter().map(|s| s.0.clone()).filter(|p| !bought.contains(p)).collect();
        let mut hits = self.in_stock(ids).await?;
        for h in &mut hits {
            h.score = scored.iter().find(|s| s.0 == h.id).map_or(0.0, |s| s.1 as f32);
        }
        hits.truncate(limit);
        Ok(hits)
    }

    pub async fn similar(&self, product: &str, viewer: Viewer<'_>, limit: usize) -> Result<Vec<Hit>, SearchError> {
        let bought = match viewer {
            Some(v) => store::bought_by(&self.db, v).await?,
            None => Vec::new(),
        };
        let live = self.index.live()?;
        let id = product.to_owned();
        let mut hits = blocking(move || query::similar(&live, &id, limit + 20)).await?;
        hits.retain(|h| !bought.contains(&h.id));
        hits.truncate(limit);
        Ok(hits)
    }

    pub async fn trending(&self, limit: usize, exclude: &[String]) -> Result<Vec<Hit>, SearchError> {
        let scored = store::trending(&self.db, limit * 3 + exclude.len()).await?;
        let ids: Vec<String> = scored.iter().map(|s| s.0.clone()).filter(|p| !exclude.contains(p)).collect();
        let mut hits = self.in_stock(ids).await?;
        for h in &mut hits {
            h.score = scored.iter().find(|s| s.0 == h.id).map_or(0.0, |s| s.1 as f32);
        }
        hits.truncate(limit);
        Ok(hits)
    }

    /// From the customer's purchases and recent views: what is bought with
    /// them and, for the latest view, what is like it; trending otherwise.
    pub async fn for_customer(&self, user: &str, limit: usize) -> Result<Vec<Hit>, SearchError> {
        let bought = store::bought_by(&self.db, user).await?;
        let viewed = store::viewed_by(&self.db, user).await?;
        let mut scores: BTreeMap<String, f64> = BTreeMap::new();
        let seeds = viewed.iter().take(5).chain(bought.iter().take(5));
        for (rank, seed) in seeds.enumerate() {
            let weight = 1.0 / (rank as f64 + 1.0);
            for (p, s) in store::bought_with(&self.db, seed, 20).await? {
                *scores.entry(p).or_default() += s * weight;
            }
        }
        if let Some(latest) = viewed.first() {
            for (rank, h) in self.similar(latest, None, 10).await?.into_iter().enumerate() {
                *scores.entry(h.id).or_default() += 0.3 / (rank as f64 + 1.0);
            }
        }
        scores.retain(|p, _| !bought.contains(p));
        if scores.is_empty() {
            return self.trending(limit, &bought).await;
        }
        let mut ranked: Vec<(String, f64)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let ids: Vec<String> = ranked.iter().map(|r| r.0.clone()).collect();
        let mut hits = self.in_stock(ids).await?;
        for h in &mut hits {
            h.score = ranked.iter().find(|r| r.0 == h.id).map_or(0.0, |r| r.1 as f32);
        }
        hits.truncate(limit);
        Ok(hits)
    }

    pub async fn viewed(&self, viewer: Viewer<'_>, product: &str) -> Result<(), SearchError> {
        store::record_view(&self.db, viewer, product).await?;
        Ok(())
    }

    /// Recounts every statistic from the recorded purchases.
    pub async fn rebuild_statistics(&self) -> Result<usize, SearchError> {
        rebuild_statistics(&self.db).await
    }
}

/// Recounts every statistic from the recorded purchases, replayed in order
/// (views' share of popularity starts again from zero). Needs only the
/// database, so the command line can run it beside a server.
pub async fn rebuild_statistics(db: &platform::db::Db) -> Result<usize, SearchError> {
    let orders = store::all_purchases(db).await?;
    let mut tx = db.begin().await?;
    store::reset_counts(&mut tx).await?;
    for (order, buyer, at, products) in &orders {
        store::record_order(&mut tx, order, buyer, products, *at).await?;
    }
    tx.commit().await?;
    Ok(orders.len())
}
