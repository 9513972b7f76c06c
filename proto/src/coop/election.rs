//! The COOP election, sans IO (docs/COOP.md, "Election"): which key server
//! of a group is primary, in which epoch, as seen by one key server.
//!
//! Every KS announces itself to each configured peer every refresh
//! interval (the primary's announcements also carry the group state; that
//! is the caller's). From what it hears, each KS decides:
//!
//! - a live peer is one heard within `dead_periods` check periods;
//! - a primary that hears a live primary ranked above it steps down
//!   (rank: priority, then address; higher wins);
//! - a secondary follows the best live primary it hears, and adopts the
//!   highest epoch it has seen;
//! - a secondary that has no live primary takes over when it is the best
//!   of itself and its live peers, after it has waited a full dead window
//!   without hearing a primary (from its start, or from the last time it
//!   heard one): its epoch becomes one more than any epoch it has seen,
//!   which the caller persists before the KS acts as primary;
//! - a better secondary does not preempt a live primary: a takeover costs
//!   a rekey, and priority decides only between primaries and at
//!   elections;
//! - a primary that makes another step down (a partition healed: two
//!   primaries) takes a new epoch above both and rekeys the whole group,
//!   so every GM converges on one KEK ([`ElectionEvent::Merged`]).
//!
//! Announcements carry a per-sender anti-replay number; one not above the
//! last taken from that sender is dropped and counted, and changes nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// A key server's role in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Creates keys and policy, sends rekeys, takes ACKs.
    Primary,
    /// Holds the primary's group state and serves registrations with it.
    Secondary,
}

/// A key server's rank: priority first, then address; higher wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// 1-255.
    pub priority: u8,
    /// The KS's COOP address.
    pub addr: IpAddr,
}

/// Election timers and this KS's rank (validated by the caller: refresh
/// 10-300 s, dead periods 2-10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    /// This key server.
    pub local: Rank,
    /// The configured peers' COOP addresses.
    pub peers: Vec<IpAddr>,
    /// Announcement interval, ms.
    pub refresh_ms: u64,
    /// A secondary's periodic check of its primary, ms.
    pub check_ms: u64,
    /// Check periods without hearing a peer before it counts as dead.
    pub dead_periods: u8,
}

/// The election part of an announcement (the rest is the group state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnouncementHeader {
    /// The sender's role when it sent.
    pub role: Role,
    /// The sender's rank.
    pub rank: Rank,
    /// The sender's epoch.
    pub epoch: u64,
    /// The sender's anti-replay number, higher in every announcement.
    pub seq: u64,
    /// The epoch in which the sender was primary before it stepped down,
    /// until it hears a primary of a later epoch: the key state it made
    /// then may still be held by GMs, so the primary it now hears must
    /// rekey the whole group (a merge).
    pub stepped_down_from: Option<u64>,
}

/// Why an announcement was dropped (each is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dropped {
    /// From an address that is not a configured peer.
    NotAPeer,
    /// Its anti-replay number is not above the last taken from the sender
    /// ("Invalid ANN PST recvd").
    Replayed,
    /// The sender's claimed address is not the one it came from.
    AddressMismatch,
    /// An epoch at or above [`MAX_EPOCH`]: no run of takeovers reaches it,
    /// and taking it would leave no epoch above.
    EpochOutOfRange,
}

/// Epochs at or above this are refused (2^62: a takeover a second for
/// longer than the universe has existed).
pub const MAX_EPOCH: u64 = 1 << 62;

/// What the election tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionEvent {
    /// Persist `epoch`, then call [`Election::epoch_persisted`]: after a
    /// takeover the KS acts as primary only then. (An epoch adopted from a
    /// peer is persisted too, so that a restart knows it, but nothing
    /// waits for it.)
    PersistEpoch(u64),
    /// The role changed (after a takeover: once the epoch is persisted).
    RoleChanged {
        /// The new role.
        role: Role,
        /// The epoch it holds.
        epoch: u64,
        /// The primary now followed (this KS when primary; none when no
        /// primary is known).
        primary: Option<IpAddr>,
    },
    /// Send an announcement with this header to `to` (the caller adds the
    /// group state when the role is primary).
    Announce {
        /// The peer.
        to: IpAddr,
        /// The header.
        header: AnnouncementHeader,
    },
    /// This primary made another primary step down: rekey the whole
    /// group (GMs registered on the other side included).
    Merged {
        /// The primary that stepped down.
        with: IpAddr,
    },
}

/// What this KS knows of a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// Its last announcement's header.
    pub last: Option<AnnouncementHeader>,
    /// When it was last heard (ms).
    pub heard_at: Option<u64>,
    /// Announcements taken from it.
    pub received: u64,
    /// Announcements from it dropped as replayed.
    pub replayed: u64,
    /// Announcements sent to it.
    pub sent: u64,
}

/// One key server's view of its group's election.
#[derive(Debug)]
pub struct Election {
    cfg: ElectionConfig,
    role: Role,
    epoch: u64,
    /// The epoch a takeover waits to see persisted.
    pending: Option<u64>,
    /// Merges to announce once the pending epoch is persisted.
    pending_merge: Vec<IpAddr>,
    /// The other side's epoch of each merge made, so one split is merged
    /// once.
    merged: BTreeMap<IpAddr, u64>,
    primary: Option<IpAddr>,
    /// Since when no primary has been heard (the dead window runs from it).
    orphaned_since: Option<u64>,
    seq: u64,
    peers: BTreeMap<IpAddr, Peer>,
    next_announce: u64,
    events: std::collections::VecDeque<ElectionEvent>,
    /// Announcements dropped for not coming from a configured peer.
    pub not_a_peer: u64,
    /// The latest `now` handed in.
    now_seen: u64,
    /// The epoch this KS was primary in before it stepped down, until a
    /// primary of an epoch above `merged_above` is heard.
    stepped_down_from: Option<u64>,
    /// The higher of the two primaries' epochs when this KS stepped down:
    /// only a primary above it has merged (the winner's routine
    /// announcements at its old epoch have not).
    merged_above: u64,
}

impl Election {
    /// A KS starting at `now` as a secondary with no primary known, with
    /// the epoch it persisted last and the first anti-replay number to use
    /// (above any it used before a restart: the caller persists a floor
    /// or derives it from the clock).
    pub fn new(cfg: ElectionConfig, persisted_epoch: u64, seq_start: u64, now: u64) -> Self {
        let peers = cfg
            .peers
            .iter()
            .filter(|&&a| a != cfg.local.addr)
            .map(|&a| (a, Peer::default()))
            .collect();
        Self {
            cfg,
            role: Role::Secondary,
            epoch: persisted_epoch,
            pending: None,
            pending_merge: Vec::new(),
            merged: BTreeMap::new(),
            primary: None,
            orphaned_since: Some(now),
            seq: seq_start,
            peers,
            // Announce at once: peers learn this KS is up.
            next_announce: now,
            events: Default::default(),
            not_a_peer: 0,
            now_seen: now,
            stepped_down_from: None,
            merged_above: 0,
        }
    }

    /// This KS's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The epoch it holds.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The primary it follows (itself when primary).
    pub fn primary(&self) -> Option<IpAddr> {
        self.primary
    }

    /// Its next anti-replay number (the caller may persist it as a floor).
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// The peers, by address.
    pub fn peers(&self) -> &BTreeMap<IpAddr, Peer> {
        &self.peers
    }

    /// Whether `peer` counts as alive at `now`.
    pub fn is_alive(&self, peer: IpAddr, now: u64) -> bool {
        self.peers
            .get(&peer)
            .and_then(|p| p.heard_at)
            .is_some_and(|t| now.saturating_sub(t) < self.dead_window())
    }

    fn dead_window(&self) -> u64 {
        self.cfg.check_ms * u64::from(self.cfg.dead_periods)
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<ElectionEvent> {
        self.events.pop_front()
    }

    /// When [`Election::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> u64 {
        let mut t = self.next_announce;
        if self.role == Role::Secondary && self.pending.is_none() {
            // The next check: when the dead window of the last primary
            // heard (or of the start) ends, or when a live peer expires;
            // only instants still ahead (one already passed was decided).
            let ahead = self
                .orphaned_since
                .into_iter()
                .chain(self.peers.values().filter_map(|p| p.heard_at))
                .map(|since| since + self.dead_window())
                .filter(|&at| at > self.now_seen);
            if let Some(at) = ahead.min() {
                t = t.min(at);
            }
        }
        t
    }

    /// Takes an announcement that came from `from` (the authenticated
    /// phase 1 peer's address) at `now`.
    pub fn handle_announcement(
        &mut self,
        now: u64,
        from: IpAddr,
        h: AnnouncementHeader,
    ) -> Result<(), Dropped> {
        if h.rank.addr != from {
            return Err(Dropped::AddressMismatch);
        }
        if h.epoch >= MAX_EPOCH || h.stepped_down_from.is_some_and(|e| e >= MAX_EPOCH) {
            return Err(Dropped::EpochOutOfRange);
        }
        let Some(peer) = self.peers.get_mut(&from) else {
            self.not_a_peer += 1;
            return Err(Dropped::NotAPeer);
        };
        if peer.last.is_some_and(|l| h.seq <= l.seq) {
            peer.replayed += 1;
            return Err(Dropped::Replayed);
        }
        peer.last = Some(h);
        peer.heard_at = Some(now);
        peer.received += 1;
        // Only announcements taken move the clock `poll_timeout` counts
        // from: `decide` runs below for each of them.
        self.now_seen = self.now_seen.max(now);
        if h.role == Role::Primary
            && self.stepped_down_from.is_some()
            && h.epoch > self.merged_above
        {
            // A primary above both terms: it has merged what this KS made.
            self.stepped_down_from = None;
        }
        match self.role {
            Role::Primary if h.role == Role::Primary && h.rank > self.cfg.local => {
                // A better primary: this one steps down and follows it,
                // and says so until that primary has merged.
                self.stepped_down_from = Some(self.epoch);
                self.merged_above = self.epoch.max(h.epoch);
                if h.epoch > self.epoch {
                    self.epoch = h.epoch;
                    self.events.push_back(ElectionEvent::PersistEpoch(h.epoch));
                }
                self.step_down(Some(h.rank.addr));
                self.orphaned_since = None;
            }
            Role::Primary
                if h.role == Role::Primary
                    || h.epoch > self.epoch
                    || h.stepped_down_from.is_some() =>
            {
                // Another primary ranked below this one, or a KS that saw
                // a later epoch (a takeover on the other side of a
                // partition): two key states may exist. This primary takes
                // an epoch above both and rekeys the whole group.
                self.merge(now, from, h.epoch);
            }
            Role::Primary => {}
            Role::Secondary => {
                if h.epoch > self.epoch {
                    // Adopted, and persisted too (not waited for): a
                    // restart then knows the epochs it has seen.
                    self.epoch = h.epoch;
                    self.events.push_back(ElectionEvent::PersistEpoch(h.epoch));
                }
                if self.pending.is_some() && h.role == Role::Primary && h.rank < self.cfg.local {
                    // Taking over while a lesser primary speaks: merge
                    // with it once primary.
                    self.merge(now, from, h.epoch);
                }
            }
        }
        self.decide(now);
        Ok(())
    }

    /// Plans the merge with `with` (once per epoch of the other side).
    fn merge(&mut self, now: u64, with: IpAddr, their_epoch: u64) {
        let their_epoch = their_epoch.max(
            self.peers
                .get(&with)
                .and_then(|p| p.last)
                .and_then(|l| l.stepped_down_from)
                .unwrap_or(0),
        );
        if self.merged.get(&with).is_some_and(|&e| e >= their_epoch) {
            return;
        }
        self.merged.insert(with, their_epoch);
        if !self.pending_merge.contains(&with) {
            self.pending_merge.push(with);
        }
        if self.pending.is_none() {
            self.begin_takeover(their_epoch);
        }
        // Tell the other side at once.
        self.next_announce = now;
    }

    fn step_down(&mut self, to: Option<IpAddr>) {
        self.role = Role::Secondary;
        self.primary = to;
        self.pending = None;
        self.pending_merge.clear();
        self.events.push_back(ElectionEvent::RoleChanged {
            role: Role::Secondary,
            epoch: self.epoch,
            primary: to,
        });
    }

    /// Asks the caller to persist an epoch above `seen` and this KS's own.
    fn begin_takeover(&mut self, seen: u64) {
        let epoch = self
            .epoch
            .max(seen)
            .max(self.highest_epoch_heard())
            .saturating_add(1);
        self.pending = Some(epoch);
        self.events.push_back(ElectionEvent::PersistEpoch(epoch));
    }

    fn highest_epoch_heard(&self) -> u64 {
        self.peers
            .values()
            .filter_map(|p| p.last.map(|l| l.epoch))
            .max()
            .unwrap_or(0)
    }

    /// The caller persisted `epoch`: the takeover completes.
    pub fn epoch_persisted(&mut self, now: u64, epoch: u64) {
        if self.pending != Some(epoch) {
            return;
        }
        self.pending = None;
        if epoch <= self.epoch {
            // A later epoch was heard while this one was persisted: the
            // takeover takes one above it instead.
            self.begin_takeover(self.epoch);
            return;
        }
        self.epoch = epoch;
        let was = self.role;
        self.role = Role::Primary;
        self.primary = Some(self.cfg.local.addr);
        self.orphaned_since = None;
        if was != Role::Primary {
            self.events.push_back(ElectionEvent::RoleChanged {
                role: Role::Primary,
                epoch,
                primary: self.primary,
            });
        }
        for with in std::mem::take(&mut self.pending_merge) {
            self.events.push_back(ElectionEvent::Merged { with });
        }
        // Announce the new epoch at once.
        self.next_announce = now;
        self.announce_if_due(now);
    }

    /// Timers: announcements, the secondary's check of its primary.
    pub fn handle_timeout(&mut self, now: u64) {
        self.now_seen = self.now_seen.max(now);
        self.decide(now);
        self.announce_if_due(now);
    }

    /// Announces at once (the key server's group state changed: a rekey
    /// went out, so its secondaries must hold the new keys now).
    pub fn announce_now(&mut self, now: u64) {
        self.next_announce = now;
        self.announce_if_due(now);
    }

    /// Announces to one peer at once (an answer it asked for, or the next
    /// window of the GM database sync); the others' refresh timer runs on.
    pub fn announce_to(&mut self, peer: IpAddr) {
        let header = self.header();
        self.seq += 1;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.sent += 1;
            self.events
                .push_back(ElectionEvent::Announce { to: peer, header });
        }
    }

    fn header(&self) -> AnnouncementHeader {
        AnnouncementHeader {
            role: self.role,
            rank: self.cfg.local,
            epoch: self.epoch,
            seq: self.seq,
            stepped_down_from: self.stepped_down_from,
        }
    }

    fn announce_if_due(&mut self, now: u64) {
        if now < self.next_announce {
            return;
        }
        self.next_announce = now + self.cfg.refresh_ms;
        let header = self.header();
        self.seq += 1;
        for (&to, p) in &mut self.peers {
            p.sent += 1;
            self.events
                .push_back(ElectionEvent::Announce { to, header });
        }
    }

    /// A secondary follows the best live primary; with none for a dead
    /// window it takes over when it is the best live KS.
    fn decide(&mut self, now: u64) {
        if self.role == Role::Primary {
            return;
        }
        let best_primary = self
            .peers
            .iter()
            .filter(|(&a, _)| self.is_alive(a, now))
            .filter_map(|(_, p)| p.last.filter(|l| l.role == Role::Primary))
            .max_by_key(|l| l.rank);
        if let Some(l) = best_primary {
            if self.pending.is_some() {
                if l.rank < self.cfg.local {
                    // A lesser primary: the takeover goes on (and merges).
                    return;
                }
                // A better primary appeared: the takeover is abandoned.
                self.pending = None;
                self.pending_merge.clear();
            }
            self.orphaned_since = None;
            if self.primary != Some(l.rank.addr) {
                self.primary = Some(l.rank.addr);
                self.events.push_back(ElectionEvent::RoleChanged {
                    role: Role::Secondary,
                    epoch: self.epoch,
                    primary: self.primary,
                });
            }
            return;
        }
        if self.pending.is_some() {
            return;
        }
        if let Some(p) = self.primary.take() {
            // Lost it: the dead window ran from when it was last heard.
            let since = self.peers.get(&p).and_then(|x| x.heard_at).unwrap_or(now);
            self.orphaned_since = Some(since);
            self.events.push_back(ElectionEvent::RoleChanged {
                role: Role::Secondary,
                epoch: self.epoch,
                primary: None,
            });
        }
        let since = *self.orphaned_since.get_or_insert(now);
        if now.saturating_sub(since) < self.dead_window() {
            return;
        }
        let best_alive = self
            .peers
            .iter()
            .filter(|(&a, _)| self.is_alive(a, now))
            .filter_map(|(_, p)| p.last.map(|l| l.rank))
            .max();
        if best_alive.is_none_or(|b| b < self.cfg.local) {
            self.begin_takeover(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    fn ks(me: u8, priority: u8, now: u64) -> Election {
        Election::new(
            ElectionConfig {
                local: Rank {
                    priority,
                    addr: addr(me),
                },
                peers: vec![addr(1), addr(2), addr(3)],
                refresh_ms: 20_000,
                check_ms: 30_000,
                dead_periods: 3,
            },
            0,
            1,
            now,
        )
    }

    fn header(from: u8, priority: u8, role: Role, epoch: u64, seq: u64) -> AnnouncementHeader {
        AnnouncementHeader {
            role,
            rank: Rank {
                priority,
                addr: addr(from),
            },
            epoch,
            seq,
            stepped_down_from: None,
        }
    }

    #[test]
    fn a_stepped_down_primary_says_so_until_a_primary_above_both_terms_is_heard() {
        let mut b = ks(2, 50, 0);
        b.role = Role::Primary;
        b.epoch = 2;
        b.primary = Some(addr(2));
        // The better primary, in a later epoch: B steps down...
        b.handle_announcement(10, addr(1), header(1, 200, Role::Primary, 7, 1))
            .unwrap();
        assert_eq!((b.role(), b.epoch()), (Role::Secondary, 7));
        assert_eq!(b.stepped_down_from, Some(2));
        // ...and its routine announcement at the same epoch has merged
        // nothing: the flag stays, and B's announcements carry it.
        b.handle_announcement(20_010, addr(1), header(1, 200, Role::Primary, 7, 2))
            .unwrap();
        b.next_announce = 0;
        b.handle_timeout(20_020);
        let sent = std::iter::from_fn(|| b.poll_event()).find_map(|e| match e {
            ElectionEvent::Announce { header, .. } => Some(header),
            _ => None,
        });
        assert_eq!(sent.and_then(|h| h.stepped_down_from), Some(2));
        // The winner's merge takes epoch 8: that clears it.
        b.handle_announcement(30_000, addr(1), header(1, 200, Role::Primary, 8, 3))
            .unwrap();
        assert_eq!(b.stepped_down_from, None);
    }

    #[test]
    fn dropped_announcements_do_not_move_the_takeover_deadline() {
        let mut s = ks(3, 200, 0);
        // Announcements rarer than the dead window, so only the deadline
        // can bring the next timeout before it.
        s.cfg.refresh_ms = 300_000;
        let due = s.poll_timeout();
        assert_eq!(due, 0, "announces at once");
        s.handle_timeout(0);
        while s.poll_event().is_some() {}
        // The dead window from the start ends at 90 s.
        assert_eq!(s.poll_timeout(), 90_000);
        // Junk after the deadline, dropped: the deadline is still due.
        assert_eq!(
            s.handle_announcement(95_000, addr(9), header(9, 1, Role::Primary, 1, 1)),
            Err(Dropped::NotAPeer)
        );
        assert_eq!(s.poll_timeout(), 90_000);
        s.handle_timeout(95_000);
        assert!(std::iter::from_fn(|| s.poll_event()).any(|e| e == ElectionEvent::PersistEpoch(1)));
    }

    #[test]
    fn an_epoch_beyond_the_range_is_refused_and_changes_nothing() {
        let mut s = ks(3, 100, 0);
        for h in [
            header(1, 100, Role::Primary, MAX_EPOCH, 1),
            header(1, 100, Role::Secondary, u64::MAX, 2),
            AnnouncementHeader {
                stepped_down_from: Some(u64::MAX),
                ..header(1, 100, Role::Secondary, 3, 3)
            },
        ] {
            assert_eq!(
                s.handle_announcement(5, addr(1), h),
                Err(Dropped::EpochOutOfRange)
            );
        }
        assert_eq!((s.epoch(), s.primary()), (0, None));
        assert!(s.peers()[&addr(1)].last.is_none());
    }
}
