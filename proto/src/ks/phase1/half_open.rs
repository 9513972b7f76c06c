//! The half-open flood defence: how many phase 1 exchanges are not yet
//! authenticated, in all and per source address, and which of them still
//! wait for message 3, oldest first.
//!
//! At the global cap the oldest exchange whose initiator never sent
//! message 3 (it never proved it receives at its address: a forged
//! message 1 looks like that) is forgotten for the new one; exchanges
//! past message 3 are kept. IKEv1 main mode gives the responder no way to
//! stay stateless until the initiator proves its address (message 3
//! carries neither the SA offer nor anything of message 1, and HASH_I
//! covers the offer), so a forged flood costs bounded memory and, instead
//! of locking real GMs out, only shortens how long an unanswered message
//! 2 is remembered: at 28,000 forged messages a second and a 20,000 cap,
//! 0.7 s, many round trips.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::super::config::KsLimits;

/// The half-open exchanges' accounting.
pub(crate) struct HalfOpen {
    limits: KsLimits,
    count: usize,
    by_source: HashMap<IpAddr, usize>,
    /// Exchanges that sent message 2, oldest first (entries that moved on
    /// or are gone are skipped when met).
    unproven: VecDeque<[u8; 16]>,
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
        self.unproven.push_back(key);
        if self.unproven.len() > 2 * self.limits.max_half_open + 64 {
            self.unproven.retain(|k| unproven(k));
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

    /// The oldest exchange still waiting for message 3, to forget at the
    /// global cap (the caller removes it, which closes it here).
    pub(crate) fn oldest_unproven(
        &mut self,
        unproven: impl Fn(&[u8; 16]) -> bool,
    ) -> Option<[u8; 16]> {
        while let Some(k) = self.unproven.pop_front() {
            if unproven(&k) {
                return Some(k);
            }
        }
        None
    }
}
