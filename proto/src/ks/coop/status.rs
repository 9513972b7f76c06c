//! `show crypto gkm ks coop`: what the COOP part reports of a group.

use std::net::{IpAddr, SocketAddr};

use super::CoopPart;
use crate::coop::election::{Peer, Rank, Role};
use crate::engine::Millis;
use crate::ks::CoopMismatch;

/// One peer in [`CoopStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoopPeerStatus {
    /// Its address and port.
    pub addr: SocketAddr,
    /// What the election knows of it (its last announcement, when heard,
    /// replayed announcements).
    pub election: Peer,
    /// Alive: heard within the dead window.
    pub alive: bool,
    /// Whether this key server's SA to it is up.
    pub sa_up: bool,
    /// Message and byte counters.
    pub counters: gkm_model::CoopCounters,
    /// GM database sync: the generations of its journal held here, and
    /// of this key server's journal it acknowledged.
    pub gm_sync: (u64, u64),
    /// The GDOI version and feature bits of its last announcement.
    pub software: Option<(
        gkm_wire::gkm_vid::GdoiVersion,
        gkm_wire::gkm_vid::FeatureBits,
    )>,
}

/// `show crypto gkm ks coop` for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoopStatus {
    /// The group.
    pub group_id: u32,
    /// This key server's rank.
    pub local: Rank,
    /// Its role.
    pub role: Role,
    /// Its epoch.
    pub epoch: u64,
    /// The primary it follows.
    pub primary: Option<IpAddr>,
    /// Its next anti-replay number.
    pub next_seq: u64,
    /// Announcement interval, ms.
    pub refresh_ms: u64,
    /// Check period, ms.
    pub check_ms: u64,
    /// Dead-peer threshold, check periods.
    pub dead_periods: u8,
    /// When the election next acts (ms).
    pub next_timer: Millis,
    /// Messages dropped for not coming from a configured peer.
    pub not_a_peer: u64,
    /// COOP messages the key server refused, by reason
    /// ([`crate::ks::CoopDrop::kind`]), for all its groups: most are
    /// refused before their group is known.
    pub refused: Vec<(&'static str, u64)>,
    /// Options raised as mismatched with the primary's.
    pub mismatches: Vec<CoopMismatch>,
    /// The peers.
    pub peers: Vec<CoopPeerStatus>,
    /// GMs in this key server's GM journal, and its last generation.
    pub gm_journal: (usize, u64),
    /// GM messages from a peer not taken for a gap (one before was lost).
    pub gm_sync_gaps: u64,
    /// "New GM Temporary Blocking Enforced?": a secondary that has not
    /// yet taken its primary's keys refuses new GMs.
    pub new_gm_blocking: bool,
}

impl CoopPart {
    /// `show crypto gkm ks coop` for a group.
    pub fn status(&self, group_id: u32, now: Millis) -> Option<CoopStatus> {
        let g = self.group(group_id)?;
        let e = &g.election;
        Some(CoopStatus {
            group_id,
            local: Rank {
                priority: g.cfg.priority,
                addr: g.cfg.local_addr,
            },
            role: e.role(),
            epoch: e.epoch(),
            primary: e.primary(),
            next_seq: e.next_seq(),
            refresh_ms: g.cfg.refresh_ms,
            check_ms: g.cfg.check_ms,
            dead_periods: g.cfg.dead_periods,
            next_timer: e.poll_timeout(),
            not_a_peer: e.not_a_peer + g.not_a_peer,
            refused: self.refused.iter().map(|(k, n)| (*k, *n)).collect(),
            mismatches: g.mismatches.clone(),
            gm_journal: (g.gms.len(), g.gms.generation()),
            gm_sync_gaps: g.gms.gaps,
            new_gm_blocking: g.blocking && e.role() != Role::Primary,
            peers: g
                .sessions
                .iter()
                .map(|s| CoopPeerStatus {
                    addr: s.peer,
                    election: e.peers().get(&s.peer.ip()).cloned().unwrap_or_default(),
                    alive: e.is_alive(s.peer.ip(), now),
                    sa_up: s.is_up(now),
                    counters: s.counters,
                    gm_sync: g.gms.progress(s.peer.ip()),
                    software: s.peer_software,
                })
                .collect(),
        })
    }
}
