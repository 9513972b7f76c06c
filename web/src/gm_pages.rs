//! GM list pages as sent, kept while the GM database is unchanged.
//!
//! `GET /api/v1/gms` is the API's heaviest read (100 rows, about 30 KB of
//! JSON) and an operator's dashboard or a monitoring job asks for the same
//! first pages again and again. A page is kept with the store's
//! [`gms_generation`](gkm_store::GmStore::gms_generation) read *before* the
//! page was read, so any change committed since makes it stale at once; it
//! is also dropped after [`PAGE_TTL`], which bounds how long a change made
//! by another process sharing the database goes unseen. The cache holds
//! encoded pages only (no key material: the GM database holds none).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use gkm_store::model::{GmFilter, Page};

/// How long a page is served without reading the database again.
pub const PAGE_TTL: Duration = Duration::from_secs(1);

/// Pages kept at most; past it the stale ones go, then all.
pub const MAX_PAGES: usize = 1024;

/// One query's page.
struct Kept {
    generation: u64,
    made: Instant,
    body: Bytes,
}

/// Encoded GM pages by query (see the module docs).
#[derive(Default)]
pub struct GmPageCache(Mutex<HashMap<(GmFilter, Page), Kept>>);

impl GmPageCache {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(GmFilter, Page), Kept>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The page for this query, if it was made at `generation` and is
    /// younger than [`PAGE_TTL`].
    pub fn get(&self, filter: &GmFilter, page: &Page, generation: u64) -> Option<Bytes> {
        // Keyed by value: a lookup builds the key (two small clones).
        self.map()
            .get(&(filter.clone(), page.clone()))
            .filter(|k| k.generation == generation && k.made.elapsed() < PAGE_TTL)
            .map(|k| k.body.clone())
    }

    /// Keeps a page read after the store's generation was `generation`.
    pub fn put(&self, filter: GmFilter, page: Page, generation: u64, body: Bytes) {
        let mut map = self.map();
        if map.len() >= MAX_PAGES {
            map.retain(|_, k| k.generation == generation && k.made.elapsed() < PAGE_TTL);
            if map.len() >= MAX_PAGES {
                map.clear();
            }
        }
        map.insert(
            (filter, page),
            Kept {
                generation,
                made: Instant::now(),
                body,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(group: u32) -> (GmFilter, Page) {
        (
            GmFilter {
                group: Some(group),
                ..GmFilter::default()
            },
            Page {
                after: None,
                limit: 100,
            },
        )
    }

    #[test]
    fn a_page_is_served_only_at_its_generation() {
        let c = GmPageCache::default();
        let (f, p) = q(1);
        assert_eq!(c.get(&f, &p, 0), None);
        c.put(f.clone(), p.clone(), 7, Bytes::from_static(b"[1]"));
        assert_eq!(c.get(&f, &p, 7).as_deref(), Some(&b"[1]"[..]));
        assert_eq!(c.get(&f, &p, 8), None, "a change since makes it stale");
        let (f2, p2) = q(2);
        assert_eq!(c.get(&f2, &p2, 7), None, "another query is another page");
    }

    #[test]
    fn the_cache_stays_bounded() {
        let c = GmPageCache::default();
        for g in 0..(MAX_PAGES as u32 + 10) {
            let (f, p) = q(g);
            c.put(f, p, 1, Bytes::from_static(b"[]"));
        }
        assert!(c.map().len() <= MAX_PAGES);
        let (f, p) = q(MAX_PAGES as u32 + 9);
        assert!(c.get(&f, &p, 1).is_some(), "the newest page is kept");
    }
}
