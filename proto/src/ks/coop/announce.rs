//! One announcement to one peer (docs/COOP.md, "Wire"): the header, a
//! primary's options and group state (or a stepped-down key server's
//! state), the highest SEQ held, and the GM records after what the peer
//! acknowledged, in as many parts as the window allows.

use std::net::IpAddr;

use gkm_wire::consts::PayloadType;
use gkm_wire::coop::CoopSeq;
use zeroize::Zeroizing;

use super::gm_sync::GM_MESSAGES_PER_ANNOUNCEMENT;
use super::session::Announcement;
use super::{deliver, options_of, wire_announcement, CoopGroup};
use crate::coop::election::{AnnouncementHeader, Role};
use crate::crypto::EngineRng;
use crate::engine::Millis;
use crate::ks::events::KsOutbox;
use crate::ks::groups::GroupTable;

impl CoopGroup {
    /// Sends `header` to peer `to` with everything that goes with it.
    pub(super) fn announce(
        &mut self,
        now: Millis,
        to: IpAddr,
        header: &AnnouncementHeader,
        groups: &GroupTable,
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
    ) {
        let group_id = self.cfg.group_id;
        let mut payloads: Announcement = vec![(
            PayloadType::GKM_COOP_ANNOUNCEMENT,
            Zeroizing::new(wire_announcement(group_id, header).to_bytes()),
        )];
        // A primary announces the options every key server
        // must share, and its group state; every key server
        // the highest SEQ it holds.
        let state = groups.index(group_id).and_then(|gi| groups.state(gi));
        if header.role == Role::Primary {
            if let Some(o) = options_of(groups, group_id) {
                payloads.push((PayloadType::GKM_COOP_OPTIONS, Zeroizing::new(o.to_bytes())));
            }
            if let Some(s) = state {
                let body = crate::group_state::encode("", s);
                payloads.push((PayloadType::GKM_COOP_GROUP_STATE, body));
            }
        } else if let Some((s, _)) = &self.stepped_state {
            // Stepped down: the state this key server's GMs may hold,
            // until the remaining primary has merged it.
            let body = crate::group_state::encode("", s);
            payloads.push((PayloadType::GKM_COOP_GROUP_STATE, body));
        }
        if let Some(s) = state {
            let seq = CoopSeq {
                highest: s.keys.seq,
            };
            payloads.push((PayloadType::GKM_COOP_SEQ, Zeroizing::new(seq.to_bytes())));
        }
        let Some(s) = self.sessions.iter_mut().find(|s| s.peer.ip() == to) else {
            return;
        };
        // The GM records after what the peer acknowledged: the
        // first batch with the header, more in later parts
        // while the SA is up (else they wait for the next
        // announcement); the last part asks for an answer
        // when records remain beyond the window.
        let window = if s.is_up(now) {
            GM_MESSAGES_PER_ANNOUNCEMENT
        } else {
            1
        };
        let (batches, more) = self.gms.outgoing(to, now, window);
        let parts = u16::try_from(batches.len()).unwrap_or(1).max(1);
        let mut wire = wire_announcement(group_id, header);
        wire.parts = parts;
        wire.reply_requested = more && parts == 1;
        wire.connect_again = s.peer_sa_lost;
        payloads[0].1 = Zeroizing::new(wire.to_bytes());
        let mut batches = batches.into_iter();
        if let Some(b) = batches.next().and_then(|b| b.to_bytes().ok()) {
            payloads.push((PayloadType::GKM_COOP_GMS, Zeroizing::new(b)));
        }
        if wire.reply_requested {
            s.counters.ann_sent_reply_request += 1;
        }
        let o = s.announce(now, payloads, rng);
        deliver(group_id, s.peer, o, out);
        for (i, b) in (1..parts).zip(batches) {
            let (Ok(body), true) = (b.to_bytes(), s.is_up(now)) else {
                break;
            };
            let mut h = wire;
            h.part = i;
            h.reply_requested = more && i + 1 == parts;
            if h.reply_requested {
                s.counters.ann_sent_reply_request += 1;
            }
            let part: Announcement = vec![
                (
                    PayloadType::GKM_COOP_ANNOUNCEMENT,
                    Zeroizing::new(h.to_bytes()),
                ),
                (PayloadType::GKM_COOP_GMS, Zeroizing::new(body)),
            ];
            let o = s.announce(now, part, rng);
            deliver(group_id, s.peer, o, out);
        }
    }
}
