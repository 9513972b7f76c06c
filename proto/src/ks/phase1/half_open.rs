//! The half-open flood defence: how many phase 1 exchanges are not yet
//! authenticated, in all and per source address, and which of them still
//! wait for message 3, oldest first.
//!
//! At the global cap the oldest exchange whose initiator never sent
//! message 3 (it never proved it receives at its address: a forged
//! message 1 looks like that) is forgotten for the new one; exchanges
//! past message 3 are kept. A source's only half-open exchange is spared
//! (moved to the back, up to [`MAX_SPARED`] times per eviction) while
//! older ones of sources holding several remain: a GM has one exchange
//! at a time, a flood from a few hundred addresses has many each, so a
//! GM's message 3 still finds its exchange when a loaded key server
//! answers the flood slower than it arrives. IKEv1 main mode gives the responder no way to
//! stay stateless until the initiator proves its address (message 3
//! carries neither the SA offer nor anything of message 1, and HASH_I
//! covers the offer), so a forged flood costs bounded memory and, instead
//! of locking real GMs out, only shortens how long an unanswered message
//! 2 is remembered: at 28,000 forged messages a second and a 20,000 cap,
//! 0.7 s, many round trips.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::super::config::KsLimits;

/// Most single-exchange sources one eviction passes over before it
/// forgets the oldest anyway (bounded work per message 1 when every
/// source holds one).
pub(crate) const MAX_SPARED: usize = 16;

/// The half-open exchanges' accounting.
pub(crate) struct HalfOpen {
    limits: KsLimits,
    count: usize,
    by_source: HashMap<IpAddr, usize>,
    /// Exchanges that sent message 2, oldest first (entries that moved on
    /// or are gone are skipped when met).
    unproven: VecDeque<([u8; 16], IpAddr)>,
}

impl HalfOpen {
    /// Nothing half-open, within `limits`.
    pub(crate) fn new(limits: KsLimits) -> Self {
        Self {
            limits,
            count: 0,
            by_source: HashMap::new(),
            unproven: VecDeque::new(),
        }
    }

    /// Half-open exchanges.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Whether `source` already holds its share.
    pub(crate) fn source_full(&self, source: IpAddr) -> bool {
        self.by_source.get(&source).copied().unwrap_or(0) >= self.limits.max_half_open_per_source
    }

    /// Whether the global cap is reached.
    pub(crate) fn full(&self) -> bool {
        self.count >= self.limits.max_half_open
    }

    /// An exchange `key` from `source` sent message 2. `unproven` tells
    /// which keys still wait for message 3 (for the occasional compaction
    /// of the queue).
    pub(crate) fn opened(
        &mut self,
        key: [u8; 16],
        source: IpAddr,
        unproven: impl Fn(&[u8; 16]) -> bool,
    ) {
        self.unproven.push_back((key, source));
        if self.unproven.len() > 2 * self.limits.max_half_open + 64 {
            self.unproven.retain(|(k, _)| unproven(k));
        }
        self.count += 1;
        *self.by_source.entry(source).or_insert(0) += 1;
    }

    /// An exchange from `source` ended or was authenticated.
    pub(crate) fn closed(&mut self, source: IpAddr) {
        self.count = self.count.saturating_sub(1);
        if let Some(n) = self.by_source.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_source.remove(&source);
            }
        }
    }

    /// The oldest exchange still waiting for message 3 whose source holds
    /// others (or, past [`MAX_SPARED`] sources holding one, the oldest),
    /// to forget at the global cap (the caller removes it, which closes
    /// it here).
    pub(crate) fn oldest_unproven(
        &mut self,
        unproven: impl Fn(&[u8; 16]) -> bool,
    ) -> Option<[u8; 16]> {
        let mut spared = 0;
        while let Some((k, source)) = self.unproven.pop_front() {
            if !unproven(&k) {
                continue;
            }
            let alone = self.by_source.get(&source).copied().unwrap_or(0) <= 1;
            if alone && spared < MAX_SPARED && !self.unproven.is_empty() {
                spared += 1;
                self.unproven.push_back((k, source));
                continue;
            }
            return Some(k);
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    fn ip(a: u8, b: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 30, a, b))
    }

    fn key(i: u32) -> [u8; 16] {
        let mut k = [0; 16];
        k[..4].copy_from_slice(&i.to_be_bytes());
        k
    }

    #[test]
    fn a_sources_only_exchange_outlives_a_flood_of_many_per_source() {
        let mut h = HalfOpen::new(KsLimits {
            max_half_open: 100,
            max_half_open_per_source: 64,
            ..KsLimits::default()
        });
        let mut open: HashMap<[u8; 16], IpAddr> = HashMap::new();
        // The GM's exchange is the oldest of all.
        let gm = key(u32::MAX);
        let gm_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 8, 1));
        h.opened(gm, gm_ip, |_| true);
        open.insert(gm, gm_ip);
        // 10,000 forged exchanges from 20 sources, at the cap throughout.
        for i in 0..10_000u32 {
            if h.full() {
                let k = h.oldest_unproven(|k| open.contains_key(k)).unwrap();
                assert_ne!(k, gm, "the GM's exchange was forgotten at {i}");
                let source = open.remove(&k).unwrap();
                h.closed(source);
            }
            let k = key(i);
            let source = ip(0, (i % 20) as u8);
            h.opened(k, source, |k| open.contains_key(k));
            open.insert(k, source);
            assert!(h.count() <= 100);
        }
        assert!(open.contains_key(&gm));
    }

    #[test]
    fn when_every_source_holds_one_the_oldest_goes_after_a_bounded_search() {
        let mut h = HalfOpen::new(KsLimits {
            max_half_open: 50,
            ..KsLimits::default()
        });
        let mut open: HashSet<[u8; 16]> = HashSet::new();
        for i in 0..50u32 {
            let k = key(i);
            h.opened(k, ip((i / 200) as u8, (i % 200) as u8), |k| {
                open.contains(k)
            });
            open.insert(k);
        }
        // All sources hold one: MAX_SPARED are passed over, the next goes.
        let k = h.oldest_unproven(|k| open.contains(k)).unwrap();
        assert_eq!(k, key(MAX_SPARED as u32));
    }
}
