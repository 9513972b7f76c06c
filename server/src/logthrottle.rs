//! Rate limits for repeated log lines: under a flood (forged IKE messages,
//! failed accepts) one line per interval is written, carrying the number
//! of lines suppressed since the last one, instead of a line per event.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// One kind of line: at most one per interval.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether a line may be written now; if so, how many were suppressed
    /// since the last one written.
    pub fn admit(&mut self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.interval => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A [`Throttle`] per key (e.g. per refusal reason), the keys bounded by
/// the caller (an enum, never a peer address).
#[derive(Debug)]
pub struct Throttles<K> {
    interval: Duration,
    by_key: HashMap<K, Throttle>,
}

impl<K: Eq + Hash> Throttles<K> {
    /// At most one line per key and `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            by_key: HashMap::new(),
        }
    }

    /// [`Throttle::admit`] for `key`.
    pub fn admit(&mut self, key: K) -> Option<u64> {
        let interval = self.interval;
        self.by_key
            .entry(key)
            .or_insert_with(|| Throttle::new(interval))
            .admit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.admit_at(t0), Some(0));
        for i in 1..=999u64 {
            assert_eq!(t.admit_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.admit_at(t0 + Duration::from_secs(10)), Some(999));
        assert_eq!(t.admit_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.admit_at(t0 + Duration::from_secs(21)), Some(1));
    }

    #[test]
    fn keys_are_throttled_apart() {
        let mut t = Throttles::new(Duration::from_secs(10));
        assert_eq!(t.admit("a"), Some(0));
        assert_eq!(t.admit("b"), Some(0));
        assert_eq!(t.admit("a"), None);
    }
}
