//! News of catalog changes inside one process: the catalog announces what
//! it forgot (its own changes, and with Redis those of its replicas), and
//! whatever keeps copies of catalog data (the storefront's page cache)
//! listens and forgets the same.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// A change of the catalog, as caches forget it and replicas announce it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum CatalogChange {
    /// Anything may have changed.
    Everything,
    /// The stock of these products (their ids) changed; `listings` when one
    /// of them came into or ran out of stock, so a list filtered or marked
    /// by stock may show other products now.
    Stock { products: Vec<String>, listings: bool },
}

impl CatalogChange {
    /// Both changes at once (many changes travel as one message).
    pub fn merge(self, other: CatalogChange) -> CatalogChange {
        match (self, other) {
            (CatalogChange::Stock { mut products, listings: a }, CatalogChange::Stock { products: more, listings: b }) => {
                products.extend(more);
                products.sort_unstable();
                products.dedup();
                CatalogChange::Stock { products, listings: a || b }
            }
            _ => CatalogChange::Everything,
        }
    }
}

/// What a copy of catalog data shows, so a change forgets only what it
/// touched: some products, and whether it is a listing (which products it
/// holds can change with stock).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shows {
    pub products: Vec<String>,
    pub listing: bool,
}

impl Shows {
    /// Whether `change` may have made a copy showing this stale.
    pub fn touched_by(&self, change: &CatalogChange) -> bool {
        match change {
            CatalogChange::Everything => true,
            CatalogChange::Stock { products, listings } => (*listings && self.listing) || self.products.iter().any(|p| products.contains(p)),
        }
    }
}

/// The changes a cache has heard, as far as it needs them to refuse a copy
/// drawn before a change of what the copy shows: every change moves the
/// epoch on, and a copy drawn from epoch `since` is current while no change
/// after `since` touched it.
#[derive(Debug, Default)]
pub struct ChangeLog {
    epoch: u64,
    /// How many changes counted as changes of everything, and the epoch of
    /// the last.
    everything: u64,
    everything_at: u64,
    /// The epoch of the last change that touched the listings.
    listings_at: u64,
    /// The epoch of each product's last change since the last change of
    /// everything.
    changed: HashMap<String, u64>,
}

impl ChangeLog {
    /// Products whose last change is remembered; past this many, a change
    /// counts as one of everything.
    pub const MAX_PRODUCTS: usize = 100_000;

    /// Where the log has got to: a copy drawn from now on is stamped with it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How many changes counted as changes of everything.
    pub fn everything(&self) -> u64 {
        self.everything
    }

    /// Notes `change`; answers whether it counts as a change of everything
    /// (it is one, or it names more products than the log keeps).
    pub fn record(&mut self, change: &CatalogChange) -> bool {
        self.epoch += 1;
        match change {
            CatalogChange::Stock { products, listings } if self.changed.len() + products.len() <= Self::MAX_PRODUCTS => {
                for product in products {
                    self.changed.insert(product.clone(), self.epoch);
                }
                if *listings {
                    self.listings_at = self.epoch;
                }
                false
            }
            _ => {
                self.everything += 1;
                self.everything_at = self.epoch;
                self.changed.clear();
                true
            }
        }
    }

    /// Whether a copy drawn from epoch `since`, showing `shows`, missed no
    /// change of what it shows.
    pub fn current(&self, since: u64, shows: &Shows) -> bool {
        self.everything_at <= since
            && !(shows.listing && self.listings_at > since)
            && shows.products.iter().all(|p| self.changed.get(p).is_none_or(|&at| at <= since))
    }
}

type Listener = Arc<dyn Fn(&CatalogChange) + Send + Sync>;

/// Where catalog changes are announced in a process. Listeners are called
/// in turn, on the announcing thread: they forget, and do nothing slow.
#[derive(Clone, Default)]
pub struct CatalogNews {
    listeners: Arc<RwLock<Vec<Listener>>>,
}

impl CatalogNews {
    /// Calls `listener` with every change announced from now on.
    pub fn listen(&self, listener: impl Fn(&CatalogChange) + Send + Sync + 'static) {
        if let Ok(mut listeners) = self.listeners.write() {
            listeners.push(Arc::new(listener));
        }
    }

    pub fn announce(&self, change: &CatalogChange) {
        let listeners: Vec<Listener> = self.listeners.read().map(|l| l.clone()).unwrap_or_default();
        for listener in listeners {
            listener(change);
        }
    }

    /// Whether anyone listens.
    pub fn heard(&self) -> bool {
        self.listeners.read().is_ok_and(|l| !l.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stock_change_touches_what_shows_its_products_and_listings_only_when_it_says_so() {
        let page = Shows { products: vec!["p1".into()], listing: false };
        let list = Shows { products: vec!["p2".into(), "p3".into()], listing: true };
        let p1 = CatalogChange::Stock { products: vec!["p1".into()], listings: false };
        assert!(page.touched_by(&p1) && !list.touched_by(&p1));
        let p9_out = CatalogChange::Stock { products: vec!["p9".into()], listings: true };
        assert!(!page.touched_by(&p9_out) && list.touched_by(&p9_out));
        assert!(page.touched_by(&CatalogChange::Everything) && list.touched_by(&CatalogChange::Everything));
        assert_eq!(p1.clone().merge(p9_out), CatalogChange::Stock { products: vec!["p1".into(), "p9".into()], listings: true });
        assert_eq!(p1.merge(CatalogChange::Everything), CatalogChange::Everything);
    }

    #[test]
    fn a_copy_is_current_until_a_change_after_it_touches_what_it_shows() {
        let mut log = ChangeLog::default();
        let page = Shows { products: vec!["p1".into()], listing: false };
        let list = Shows { products: Vec::new(), listing: true };
        let since = log.epoch();
        assert!(!log.record(&CatalogChange::Stock { products: vec!["p2".into()], listings: false }));
        assert!(log.current(since, &page) && log.current(since, &list), "another product");
        assert!(!log.record(&CatalogChange::Stock { products: vec!["p1".into()], listings: true }));
        assert!(!log.current(since, &page) && !log.current(since, &list));
        assert!(log.current(log.epoch(), &page) && log.current(log.epoch(), &list), "drawn after it");
        let since = log.epoch();
        assert!(log.record(&CatalogChange::Everything));
        assert!(!log.current(since, &Shows::default()) && log.everything() == 1);
        let many: Vec<String> = (0..=ChangeLog::MAX_PRODUCTS).map(|i| format!("p{i}")).collect();
        assert!(log.record(&CatalogChange::Stock { products: many, listings: false }), "more than it keeps");
        assert_eq!(log.everything(), 2);
    }

    #[test]
    fn every_listener_hears_every_change() {
        let news = CatalogNews::default();
        let heard = Arc::new(RwLock::new(Vec::new()));
        for _ in 0..2 {
            let heard = heard.clone();
            news.listen(move |c| heard.write().unwrap().push(c.clone()));
        }
        news.announce(&CatalogChange::Everything);
        assert_eq!(heard.read().unwrap().len(), 2);
    }
}
