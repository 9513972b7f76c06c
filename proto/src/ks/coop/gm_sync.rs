//! The GM database sync of one COOP group (docs/COOP.md, "GM database
//! sync"): a journal of every GM record this key server knows, each change
//! stamped with the next generation, and per peer what it acknowledged of
//! the journal and what this key server holds of the peer's. Records go
//! out in GKM-COOP-GMs payloads (`gkm_wire::coop_gms`) after the
//! announcement header, in as many messages as a window allows; a peer's
//! acknowledgement (in its next announcement) moves the window on.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use gkm_wire::coop_gms::{encoded_len, CoopGm, CoopGms, HEADER_LEN};

use crate::engine::{GmClass, Millis};
use crate::ks::GmRecord;

/// Most record octets in one message: a message stays well under the
/// 64 KiB limit (and near a dozen Ethernet fragments).
pub const GMS_PER_MESSAGE_OCTETS: usize = 16 * 1024;

/// Most messages one announcement sends a peer (the window): 256 KiB, some
/// 5,000 records, per round trip.
pub const GM_MESSAGES_PER_ANNOUNCEMENT: usize = 16;

/// What this key server holds of a peer's journal, and what the peer
/// acknowledged of this key server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PeerSync {
    /// The peer's journal.
    journal: u64,
    /// Its generations held here, all up to this one.
    have: u64,
    /// This key server's generations the peer holds (for this journal).
    acked: u64,
    /// Sent up to this generation (not yet acknowledged), and when.
    sent: u64,
    sent_at: Millis,
}

/// A window not acknowledged within this time is sent again from the
/// acknowledgement (a message of it was lost).
pub const GM_RESEND_MS: Millis = 1000;

/// A group's GM journal and the sync state with each peer.
pub(crate) struct GmSync {
    /// This key server's journal (random, drawn at start).
    journal: u64,
    /// The last generation stamped.
    gen: u64,
    by_gen: BTreeMap<u64, String>,
    records: HashMap<String, (u64, GmRecord)>,
    peers: HashMap<IpAddr, PeerSync>,
    /// Records learned from peers, for the engine to take.
    pub learned: Vec<GmRecord>,
    /// Messages whose records were not taken (a gap: an earlier message
    /// was lost; the peer sends again from the acknowledgement).
    pub gaps: u64,
}

/// The class on the wire.
fn class_code(c: GmClass) -> u8 {
    match c {
        GmClass::Cisco => 1,
        GmClass::Asr9000 => 2,
        GmClass::NonCisco => 3,
    }
}

fn class_of(code: u8) -> GmClass {
    match code {
        1 => GmClass::Cisco,
        2 => GmClass::Asr9000,
        _ => GmClass::NonCisco,
    }
}

/// A record as the wire carries it.
fn to_wire(r: &GmRecord) -> CoopGm {
    CoopGm {
        identity: r.gm_identity.clone(),
        addr: r.addr,
        class: class_code(r.class),
        version: r.version,
        features: r.features,
        registered_at: r.registered_at,
        sids: r.sids.clone(),
    }
}

/// A wire record as the engine's, in group `group_id`.
fn from_wire(group_id: u32, g: CoopGm) -> GmRecord {
    GmRecord {
        gm_identity: g.identity,
        addr: g.addr,
        group_id,
        class: class_of(g.class),
        version: g.version,
        features: g.features,
        sids: g.sids,
        registered_at: g.registered_at,
    }
}

impl GmSync {
    /// An empty journal named `journal`.
    pub fn new(journal: u64) -> Self {
        Self {
            journal,
            gen: 0,
            by_gen: BTreeMap::new(),
            records: HashMap::new(),
            peers: HashMap::new(),
            learned: Vec::new(),
            gaps: 0,
        }
    }

    /// GMs in the journal.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// A GM registered here, or one learned that differs from the record
    /// held: stamped with the next generation (an unchanged record is not,
    /// so records echoed back by a peer stop there).
    pub fn record(&mut self, r: &GmRecord) {
        if self
            .records
            .get(&r.gm_identity)
            .is_some_and(|(_, old)| old == r)
        {
            return;
        }
        self.gen += 1;
        if let Some((old, _)) = self
            .records
            .insert(r.gm_identity.clone(), (self.gen, r.clone()))
        {
            self.by_gen.remove(&old);
        }
        self.by_gen.insert(self.gen, r.gm_identity.clone());
    }

    /// Whether records wait to go to `peer` beyond what it acknowledged.
    pub fn pending_for(&self, peer: IpAddr) -> bool {
        let acked = self.peers.get(&peer).map_or(0, |p| p.acked);
        self.gen > acked
    }

    /// Where the next window to `peer` starts: after what was sent, while
    /// that is recent; else again after what it acknowledged.
    fn window_start(&self, peer: IpAddr, now: Millis) -> u64 {
        let p = self.peers.get(&peer).copied().unwrap_or_default();
        let start = if now < p.sent_at + GM_RESEND_MS {
            p.sent.max(p.acked)
        } else {
            p.acked
        };
        start.min(self.gen)
    }

    /// The GKM-COOP-GMs payloads for one announcement to `peer`: the
    /// acknowledgement of the peer's journal, and the records after what
    /// the peer acknowledged, split into at most `max_messages` (the first
    /// goes with the header). Returns them and whether records remain.
    pub fn outgoing(
        &mut self,
        peer: IpAddr,
        now: Millis,
        max_messages: usize,
    ) -> (Vec<CoopGms>, bool) {
        let (out, more) = self.window(peer, now, max_messages);
        if let Some(last) = out.last().filter(|m| m.to > m.from || !m.gms.is_empty()) {
            let p = self.peers.entry(peer).or_default();
            p.sent = last.to;
            p.sent_at = now;
        }
        (out, more)
    }

    fn window(&self, peer: IpAddr, now: Millis, max_messages: usize) -> (Vec<CoopGms>, bool) {
        let p = self.peers.get(&peer).copied().unwrap_or_default();
        let mut out = Vec::new();
        let mut from = self.window_start(peer, now);
        let mut entries = self.by_gen.range(from + 1..).peekable();
        while out.len() < max_messages.max(1) {
            let mut gms = Vec::new();
            let mut octets = HEADER_LEN;
            let mut to = from;
            while let Some((&g, id)) = entries.peek() {
                let Some((_, r)) = self.records.get(*id) else {
                    entries.next();
                    continue;
                };
                let w = to_wire(r);
                if !gms.is_empty() && octets + encoded_len(&w) > GMS_PER_MESSAGE_OCTETS {
                    break;
                }
                octets += encoded_len(&w);
                gms.push(w);
                to = g;
                entries.next();
            }
            let done = entries.peek().is_none();
            if done {
                // Past the last record: the holes after it are covered too.
                to = self.gen;
            }
            out.push(CoopGms {
                journal: self.journal,
                acked_journal: p.journal,
                acked: p.have,
                from,
                to,
                gms,
            });
            from = to;
            if done {
                return (out, false);
            }
        }
        (out, true)
    }

    /// A GKM-COOP-GMs payload from `peer`, authenticated. `ack`: the
    /// message opened an announcement the election took (its
    /// acknowledgement is the peer's latest; a later part's is not read).
    /// Returns whether the acknowledgement moved this key server's window.
    pub fn incoming(&mut self, group_id: u32, peer: IpAddr, m: CoopGms, ack: bool) -> bool {
        let journal = self.journal;
        let p = self.peers.entry(peer).or_default();
        let mut moved = false;
        if ack {
            // A restarted peer acknowledges another journal, or less: it
            // gets everything again.
            let acked = if m.acked_journal == journal {
                m.acked
            } else {
                0
            };
            moved = acked > p.acked;
            p.acked = acked;
        }
        if m.journal != p.journal {
            // A new journal (the peer restarted): from its start.
            *p = PeerSync {
                journal: m.journal,
                have: 0,
                ..*p
            };
        }
        if m.to <= p.have {
            return moved;
        }
        if m.from > p.have {
            self.gaps += 1;
            return moved;
        }
        p.have = m.to;
        self.learned
            .extend(m.gms.into_iter().map(|g| from_wire(group_id, g)));
        moved
    }

    /// What this key server holds of `peer`'s journal, and what the peer
    /// acknowledged of this key server's.
    pub fn progress(&self, peer: IpAddr) -> (u64, u64) {
        self.peers.get(&peer).map_or((0, 0), |p| (p.have, p.acked))
    }

    /// This key server's last generation.
    pub fn generation(&self) -> u64 {
        self.gen
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use gkm_wire::gkm_vid::FeatureBits;

    fn gm(i: u32) -> GmRecord {
        GmRecord {
            gm_identity: format!("gm-{i}"),
            addr: format!("10.1.{}.{}:848", i / 250, i % 250 + 1)
                .parse()
                .unwrap(),
            group_id: 7,
            class: GmClass::NonCisco,
            version: None,
            features: FeatureBits(0),
            sids: vec![i],
            registered_at: u64::from(i),
        }
    }

    /// Sends from `a` to `b` until nothing remains, losing message `lose`
    /// of the first round; returns the rounds taken.
    fn sync(a: &mut GmSync, b: &mut GmSync, lose: Option<usize>) -> usize {
        let (ia, ib): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for round in 1..100 {
            let (msgs, _) = a.outgoing(ib, u64::from(round as u32) * 2000, 4);
            for (i, m) in msgs.into_iter().enumerate() {
                if round == 1 && Some(i) == lose {
                    continue;
                }
                b.incoming(7, ia, m, i == 0);
            }
            // B's announcement back acknowledges.
            let (back, _) = b.outgoing(ia, 0, 1);
            a.incoming(7, ib, back.into_iter().next().unwrap(), true);
            if !a.pending_for(ib) {
                return round;
            }
        }
        panic!("no convergence");
    }

    #[test]
    fn a_journal_reaches_a_peer_in_windows_and_a_lost_message_is_sent_again() {
        let mut a = GmSync::new(1);
        let mut b = GmSync::new(2);
        for i in 0..3000 {
            a.record(&gm(i));
        }
        // An update moves a GM to a new generation; an unchanged one does not.
        a.record(&gm(5));
        let mut moved = gm(6);
        moved.addr = "10.9.9.9:848".parse().unwrap();
        a.record(&moved);
        assert_eq!(a.generation(), 3001);
        let rounds = sync(&mut a, &mut b, Some(1));
        assert!(rounds >= 2, "{rounds}");
        assert!(b.gaps > 0, "the loss made a gap");
        let learned: HashMap<String, GmRecord> = b
            .learned
            .drain(..)
            .map(|r| (r.gm_identity.clone(), r))
            .collect();
        assert_eq!(learned.len(), 3000);
        assert_eq!(learned["gm-6"], moved);
        // Echoed back unchanged: nothing new in B's journal... once B
        // records what it learned, then A stops at equal records.
        for r in learned.values() {
            b.record(r);
        }
        sync(&mut b, &mut a, None);
        let echoed = std::mem::take(&mut a.learned);
        let gen = a.generation();
        for r in &echoed {
            a.record(r);
        }
        assert_eq!(a.generation(), gen, "equal records are not stamped again");
    }

    #[test]
    fn a_window_in_flight_is_not_sent_again_until_the_resend_time() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let mut a = GmSync::new(1);
        for i in 0..1000 {
            a.record(&gm(i));
        }
        let (first, more) = a.outgoing(peer, 0, 1);
        assert!(more);
        let (second, _) = a.outgoing(peer, 10, 1);
        assert_eq!(second[0].from, first[0].to, "the next window, not the same");
        let (again, _) = a.outgoing(peer, 10 + GM_RESEND_MS, 1);
        assert_eq!(again[0].from, 0, "nothing acknowledged: from the start");
    }

    #[test]
    fn a_restarted_peer_gets_everything_again() {
        let mut a = GmSync::new(1);
        for i in 0..10 {
            a.record(&gm(i));
        }
        let mut b = GmSync::new(2);
        sync(&mut a, &mut b, None);
        assert_eq!(b.learned.len(), 10);
        // B restarts: a new journal, holding nothing of A's.
        let mut b = GmSync::new(3);
        let ia: IpAddr = "10.0.0.1".parse().unwrap();
        let ib: IpAddr = "10.0.0.2".parse().unwrap();
        let (hello, _) = b.outgoing(ia, 0, 1);
        assert!(!a.pending_for(ib), "B had everything");
        a.incoming(7, ib, hello.into_iter().next().unwrap(), true);
        assert!(a.pending_for(ib), "A sends everything again");
        sync(&mut a, &mut b, None);
        assert_eq!(b.learned.len(), 10);
        // A restarts: B takes A's new journal from its start.
        let mut a2 = GmSync::new(9);
        a2.record(&gm(42));
        let (m, _) = a2.outgoing(ib, 0, 1);
        b.incoming(7, ia, m.into_iter().next().unwrap(), true);
        assert_eq!(b.learned.last().unwrap().gm_identity, "gm-42");
    }
}
