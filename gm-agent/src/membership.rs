//! The membership and ACK health the agent reports (issue 20): the key
//! server it registered with, its KEK, the SEQs it received, accepted and
//! acknowledged (and how), pushes refused by reason, re-registrations and
//! fail-overs. Kept from the GM engine's events and counters by the main
//! loop; read by the report thread. The controller compares the SEQ
//! acknowledged here with its own record to find ACKs lost on the way.

use std::sync::{Arc, Mutex, PoisonError};

use gkm_model::health::{AckKind, Membership, PushesRefused};
use gkm_proto::gm::{GmCounters, GmEvent, GroupMember};
use gkm_proto::push::PushError;

/// What the report thread reads.
pub type Shared = Arc<Mutex<Tracker>>;

/// The membership as the engine's events built it.
#[derive(Debug, Default)]
pub struct Tracker {
    /// What the next report says.
    pub membership: Membership,
    /// ACKs the engine had sent at the last event.
    acks_seen: u64,
    /// The engine's rekey counters, as of the last event or sync.
    engine: GmCounters,
}

impl Tracker {
    /// Takes in one engine event; `gm` is the engine after it.
    pub fn event(&mut self, e: &GmEvent, gm: &GroupMember) {
        let m = &mut self.membership;
        match e {
            GmEvent::Registered { ks, keys, .. } => {
                let ks = ks.to_string();
                if m.key_server.as_ref().is_some_and(|before| *before != ks) {
                    m.failovers += 1;
                }
                m.registrations += 1;
                m.key_server = Some(ks);
                // A new membership: what the last one received and
                // acknowledged no longer speaks for this one.
                m.last_seq_accepted = Some(keys.seq);
                m.last_seq_received = None;
                m.last_seq_acked = None;
                m.ack_kind = None;
            }
            GmEvent::Rekeyed { seq, .. } => {
                m.last_seq_received = Some(*seq);
                m.last_seq_accepted = Some(*seq);
                // The engine counts an ACK when it makes it: sent at once
                // for a unicast rekey, within its jitter (at most 500 ms)
                // for a multicast one.
                let acks = gm.rekey_counters().acks_sent;
                if acks > self.acks_seen {
                    m.last_seq_acked = Some(*seq);
                    // RFC 8263's ACK when the KEK policy asks for one,
                    // else (a unicast rekey) Cisco's.
                    m.ack_kind = Some(match gm.group().and_then(|g| g.ack_requested) {
                        Some(_) => AckKind::Interoperable,
                        None => AckKind::Cisco,
                    });
                }
            }
            GmEvent::PushRejected(PushError::Replay { seq, .. }) => {
                m.last_seq_received = Some(*seq);
            }
            GmEvent::PushRejected(_) | GmEvent::AttemptFailed { .. } => {}
        }
        self.acks_seen = gm.rekey_counters().acks_sent;
        self.sync(gm);
    }

    /// What the engine holds now: the KEK and the refusal counters (a
    /// push before registration is counted without an event).
    pub fn sync(&mut self, gm: &GroupMember) {
        let c = gm.rekey_counters();
        self.engine = c;
        let m = &mut self.membership;
        m.pushes_refused = PushesRefused {
            malformed: c.pushes_malformed,
            wrong_kek: c.pushes_wrong_kek,
            bad_signature: c.pushes_bad_signature,
            replayed: c.pushes_replayed,
            unregistered: c.pushes_unregistered,
        };
        m.kek_spi = gm
            .group()
            .and_then(|g| g.kek.as_ref())
            .map(|k| hex::encode(k.spi));
    }
}

/// Takes in `e` under the lock.
pub fn note(shared: &Shared, e: &GmEvent, gm: &GroupMember) {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .event(e, gm);
}

/// Takes in the engine's counters and KEK under the lock.
pub fn sync(shared: &Shared, gm: &GroupMember) {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .sync(gm);
}

/// The membership and the engine's rekey counters now (for the agent's
/// metrics).
pub fn snapshot_with_counters(shared: &Shared) -> (Membership, GmCounters) {
    let t = shared.lock().unwrap_or_else(PoisonError::into_inner);
    (t.membership.clone(), t.engine)
}

/// The membership to report now.
pub fn snapshot(shared: &Shared) -> Membership {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .membership
        .clone()
}
