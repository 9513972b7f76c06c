//! Which GMs hold the current keys (seed section 3): the KS records, per GM
//! identity, the latest acknowledged SEQ — only when it equals the last SEQ
//! sent to that GM — and removes a GM after 3 consecutive unicast rekeys
//! it did not acknowledge.

use std::collections::HashMap;

/// Consecutive unacknowledged unicast rekeys after which a GM is removed.
pub const MAX_MISSED_ACKS: u32 = 3;

/// One GM's acknowledgement state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckState {
    /// SEQ of the last rekey sent to the GM.
    pub last_sent: Option<u32>,
    /// Latest SEQ the GM acknowledged (equal to a SEQ that was last sent at the time).
    pub last_acked: Option<u32>,
    /// Consecutive rekeys not acknowledged.
    pub misses: u32,
}

/// What an ACK did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Recorded: it acknowledges the last SEQ sent.
    Recorded,
    /// Valid but not for the last SEQ sent (late, duplicate or early): nothing recorded.
    Ignored,
    /// From a GM the tracker does not know (never rekeyed, or removed).
    UnknownGm,
}

/// What closing a rekey round did to one GM (ordered: acked, missed, removed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoundOutcome {
    /// The GM acknowledged.
    Acked,
    /// The GM missed this rekey; `misses` so far.
    Missed(u32),
    /// The GM missed its third consecutive rekey and was removed.
    Removed,
}

/// Acknowledgement bookkeeping for the GMs of one group, keyed by identity.
#[derive(Debug, Clone, Default)]
pub struct AckTracker {
    gms: HashMap<String, AckState>,
    /// How many GMs are [`AckState::at_risk`], kept as they change (the
    /// status API asks for it on every call; counting 100,000 GMs took
    /// half the server's CPU at 2,500 calls a second).
    at_risk: usize,
}

impl AckState {
    /// One miss away from removal.
    pub fn at_risk(&self) -> bool {
        self.misses + 1 == MAX_MISSED_ACKS
    }
}

impl AckTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A GM registered (again): it starts with a clean record.
    pub fn registered(&mut self, gm: &str) {
        if let Some(was) = self.gms.insert(gm.to_owned(), AckState::default()) {
            self.no_longer_at_risk(&was);
        }
    }

    fn no_longer_at_risk(&mut self, was: &AckState) {
        if was.at_risk() {
            self.at_risk = self.at_risk.saturating_sub(1);
        }
    }

    /// A GM left the GM database (ejected).
    pub fn forget(&mut self, gm: &str) {
        if let Some(was) = self.gms.remove(gm) {
            self.no_longer_at_risk(&was);
        }
    }

    /// A rekey with `seq` was sent to `gm`.
    pub fn sent(&mut self, gm: &str, seq: u32) {
        if let Some(s) = self.gms.get_mut(gm) {
            s.last_sent = Some(seq);
        }
    }

    /// A valid ACK for `seq` arrived from `gm`.
    pub fn acked(&mut self, gm: &str, seq: u32) -> AckOutcome {
        match self.gms.get_mut(gm) {
            None => AckOutcome::UnknownGm,
            Some(s) if s.last_sent == Some(seq) => {
                let was = *s;
                s.last_acked = Some(seq);
                s.misses = 0;
                self.no_longer_at_risk(&was);
                AckOutcome::Recorded
            }
            Some(_) => AckOutcome::Ignored,
        }
    }

    /// The ACK wait for the rekey with `seq` is over: every GM it was sent
    /// to either acknowledged it or missed it; the third consecutive miss
    /// removes the GM, which then gets no further rekeys until it registers again.
    pub fn close_round(&mut self, seq: u32) -> Vec<(String, RoundOutcome)> {
        let mut out = Vec::new();
        let (mut entered, mut left) = (0, 0);
        for (gm, s) in &mut self.gms {
            if s.last_sent != Some(seq) {
                continue;
            }
            if s.last_acked == Some(seq) {
                out.push((gm.clone(), RoundOutcome::Acked));
            } else {
                let was = s.at_risk();
                s.misses += 1;
                match (was, s.at_risk()) {
                    (false, true) => entered += 1,
                    (true, false) => left += 1,
                    _ => {}
                }
                out.push((
                    gm.clone(),
                    if s.misses >= MAX_MISSED_ACKS {
                        RoundOutcome::Removed
                    } else {
                        RoundOutcome::Missed(s.misses)
                    },
                ));
            }
        }
        self.at_risk = (self.at_risk + entered).saturating_sub(left);
        for (gm, o) in &out {
            if *o == RoundOutcome::Removed {
                self.gms.remove(gm);
            }
        }
        out.sort();
        out
    }

    /// GMs the rekey `seq` was last sent to that have not acknowledged it
    /// (retransmission targets).
    pub fn unacknowledged(&self, seq: u32) -> impl Iterator<Item = &str> {
        self.gms
            .iter()
            .filter(move |(_, s)| s.last_sent == Some(seq) && s.last_acked != Some(seq))
            .map(|(g, _)| g.as_str())
    }

    /// A GM's state, if it is tracked.
    pub fn state(&self, gm: &str) -> Option<AckState> {
        self.gms.get(gm).copied()
    }

    /// GMs one miss away from removal (for the dashboard's alert).
    pub fn at_risk(&self) -> impl Iterator<Item = &str> {
        self.gms
            .iter()
            .filter(|(_, s)| s.at_risk())
            .map(|(g, _)| g.as_str())
    }

    /// How many GMs are one miss away from removal (kept, not counted).
    pub fn at_risk_count(&self) -> usize {
        self.at_risk
    }

    /// Number of tracked GMs.
    pub fn len(&self) -> usize {
        self.gms.len()
    }

    /// Whether no GM is tracked.
    pub fn is_empty(&self) -> bool {
        self.gms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_is_recorded_only_for_the_last_seq_sent() {
        let mut t = AckTracker::new();
        t.registered("gm1");
        assert_eq!(t.acked("gm1", 1), AckOutcome::Ignored, "nothing sent yet");
        t.sent("gm1", 1);
        t.sent("gm1", 2);
        assert_eq!(
            t.acked("gm1", 1),
            AckOutcome::Ignored,
            "late ACK for an older SEQ"
        );
        assert_eq!(t.state("gm1").unwrap().last_acked, None);
        assert_eq!(
            t.acked("gm1", 3),
            AckOutcome::Ignored,
            "ACK for a SEQ never sent"
        );
        assert_eq!(t.acked("gm1", 2), AckOutcome::Recorded);
        assert_eq!(t.state("gm1").unwrap().last_acked, Some(2));
        assert_eq!(t.acked("stranger", 2), AckOutcome::UnknownGm);
    }

    #[test]
    fn exactly_three_consecutive_misses_remove_a_gm_that_may_register_again() {
        let mut t = AckTracker::new();
        t.registered("quiet");
        t.registered("good");
        for seq in 1..=3 {
            t.sent("quiet", seq);
            t.sent("good", seq);
            assert_eq!(t.acked("good", seq), AckOutcome::Recorded);
            let round = t.close_round(seq);
            let quiet = round
                .iter()
                .find(|(g, _)| g == "quiet")
                .map(|(_, o)| o.clone());
            match seq {
                1 => assert_eq!(quiet, Some(RoundOutcome::Missed(1))),
                2 => {
                    assert_eq!(quiet, Some(RoundOutcome::Missed(2)));
                    assert_eq!(t.at_risk().collect::<Vec<_>>(), ["quiet"]);
                }
                _ => assert_eq!(quiet, Some(RoundOutcome::Removed)),
            }
            assert!(round.contains(&("good".into(), RoundOutcome::Acked)));
        }
        assert!(t.state("quiet").is_none(), "removed from the GM database");
        t.sent("quiet", 4);
        assert_eq!(
            t.acked("quiet", 4),
            AckOutcome::UnknownGm,
            "no more rekeys, no ACKs recorded"
        );
        t.registered("quiet");
        t.sent("quiet", 4);
        assert_eq!(
            t.acked("quiet", 4),
            AckOutcome::Recorded,
            "registers cleanly again"
        );
    }

    #[test]
    fn an_ack_resets_the_miss_count() {
        let mut t = AckTracker::new();
        t.registered("gm");
        for seq in 1..=2 {
            t.sent("gm", seq);
            t.close_round(seq);
        }
        t.sent("gm", 3);
        t.acked("gm", 3);
        assert_eq!(t.close_round(3), [("gm".to_owned(), RoundOutcome::Acked)]);
        for seq in 4..=5 {
            t.sent("gm", seq);
            t.close_round(seq);
        }
        assert_eq!(
            t.state("gm").unwrap().misses,
            2,
            "misses count consecutive rekeys only"
        );
    }

    /// The kept count of GMs at risk equals a recount after any mix of
    /// registrations, ejections, rekeys, ACKs and closed rounds.
    #[test]
    fn the_kept_at_risk_count_equals_a_recount() {
        let mut t = AckTracker::new();
        // A fixed xorshift sequence: the same mix every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut seq, mut most) = (0, 0);
        for _ in 0..5_000 {
            let gm = format!("gm{}", next() % 40);
            match next() % 10 {
                0 | 1 => t.registered(&gm),
                2 => t.forget(&gm),
                3..=5 => {
                    seq += 1;
                    let gms: Vec<String> = t.gms.keys().cloned().collect();
                    for g in &gms {
                        t.sent(g, seq);
                    }
                }
                6 | 7 => {
                    t.acked(&gm, seq);
                }
                _ => {
                    t.close_round(seq);
                }
            }
            assert_eq!(t.at_risk_count(), t.at_risk().count());
            most = most.max(t.at_risk_count());
        }
        assert!(most > 3, "the mix reached few GMs at risk: {most}");
    }
}
