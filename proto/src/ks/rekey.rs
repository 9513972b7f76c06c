//! The rekey part of the key server (RFC 6407 section 4; seed sections
//! 2-3): each group's GM database and ACK tracking, rekey scheduling,
//! GROUPKEY-PUSH fan-out, ACK intake, retransmission and removal after
//! [`MAX_MISSED_ACKS`] consecutive misses.
//!
//! A rekey happens in two steps so that a SEQ is never reused across a
//! crash: the part *prepares* it (new keys and SEQ, nothing sent) and
//! emits [`KsEvent::RekeyPrepared`]; the caller makes the group state
//! durable and reports it persisted; only then are the new keys installed
//! in the [`GroupTable`] and a GROUPKEY-PUSH leaves. Every GM of a class
//! receives the same octets: a push is signed once per distinct
//! (KEK_ACK_REQUESTED, ATD) variant, not once per GM.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use gkm_wire::consts::{AckRequested, Doi, GdoiProtocol};
use gkm_wire::payload::{Delete, Sa, Seq};
use gkm_wire::Payload;

use super::events::{GmRecord, KsEvent, KsOutbox};
use super::groups::{ks_gap, secs_left, GroupTable};
use crate::ack_policy::{atd_applies, kek_ack_requested};
use crate::ack_tracker::{AckState, AckTracker, RoundOutcome};
use crate::crypto::{EngineRng, RekeySigner};
use crate::engine::{GmClass, Millis, Transmit};
use crate::group::{Kek, Tek};
use crate::policy::activation_time_delay;
use crate::push::seal_push;
#[cfg(doc)]
use crate::rekey::MAX_MISSED_ACKS;
use crate::rekey::{GroupState, RekeyError, RekeyPolicy, RekeyReason, RekeyTransport};

mod ack;

/// A prepared rekey waiting for its state to be persisted.
struct Pending {
    reason: RekeyReason,
    state: GroupState,
    /// TEK SPIs deleted at once (rekey replace).
    deleted: Vec<u32>,
    /// Seconds the old TEKs had left when prepared (for ATD).
    old_remaining_secs: u64,
    new_teks: bool,
    prepared_at: Millis,
}

/// What differs between GM classes in one push: KEK_ACK_REQUESTED, ATD.
type PushVariant = (Option<u16>, Option<u16>);

/// One push's octets, shared by every GM of a class.
type Shared = std::rc::Rc<Vec<u8>>;

/// An open unicast rekey round: who still owes an ACK.
struct Round {
    seq: u32,
    /// The KEK the push was encrypted under; ACKs name it.
    kek: Kek,
    /// The push, per GM class.
    datagrams: HashMap<GmClass, Shared>,
    /// A COOP merge: the same push under each KEK the other side's GMs
    /// hold, sent and resent with it; ACKs may name those KEKs.
    merge: Vec<(Kek, Shared)>,
    transmissions: u32,
    next_at: Millis,
    /// When the rekey was prepared, for the time to full acknowledgement.
    prepared_at: Millis,
    /// GMs the push was sent to, and how many have acknowledged it.
    targets: usize,
    acked: usize,
}

/// One group's GM database and rekey in progress.
#[derive(Default)]
struct GroupRekey {
    members: HashMap<String, GmRecord>,
    /// GM address (registration source and IPv4 identity) → identity, for ACKs.
    by_addr: HashMap<IpAddr, String>,
    tracker: AckTracker,
    pending: Option<Pending>,
    queued: Option<RekeyReason>,
    round: Option<Round>,
    /// GMs removed (ejected, or after three missed ACKs), with the
    /// registration time of the record removed: a COOP peer's copy of
    /// that registration does not bring the GM back (docs/COOP.md).
    removed: HashMap<String, Millis>,
    /// A COOP merge (docs/COOP.md, "Split and merge"): the KEKs GMs of the
    /// other side hold (the next rekey also goes out under each), and
    /// their TEK SPIs (it deletes them).
    merge: Option<(Vec<Kek>, Vec<u32>)>,
}

impl GroupRekey {
    /// When this group next needs a timeout: its round's next step, or
    /// its next scheduled rekey.
    fn next_deadline(&self, state: Option<&GroupState>, policy: &RekeyPolicy) -> Option<Millis> {
        let round = self.round.as_ref().map(|r| r.next_at);
        let due = match (state, &self.pending) {
            (Some(s), None) => Some(
                s.tek_expires_at
                    .saturating_sub(policy.tek_rekey_before_ms)
                    .min(s.kek_expires_at.saturating_sub(policy.kek_rekey_before_ms)),
            ),
            _ => None,
        };
        [round, due].into_iter().flatten().min()
    }
}

/// The rekey part: one [`GroupRekey`] per group of the [`GroupTable`],
/// same indexes, and the rekey-signing key.
pub(crate) struct Rekeys {
    signer: Option<RekeySigner>,
    key_name: String,
    groups: Vec<GroupRekey>,
}

impl Rekeys {
    /// No GM and nothing in progress for `n` groups.
    pub(crate) fn new(signer: Option<RekeySigner>, key_name: String, n: usize) -> Self {
        Self {
            signer,
            key_name,
            groups: (0..n).map(|_| GroupRekey::default()).collect(),
        }
    }

    /// The rekey-signing key's name (`show crypto gkm ks policy`).
    /// The rekey-signing key's public key (DER SubjectPublicKeyInfo).
    pub(crate) fn signer_spki(&self) -> Option<Vec<u8>> {
        self.signer.as_ref()?.public_spki_der().ok()
    }

    pub(crate) fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The length of a rekey signature, 0 without a signer.
    pub(crate) fn signature_len(&self) -> usize {
        self.signer.as_ref().map_or(0, RekeySigner::signature_len)
    }

    /// A group was added to the table.
    pub(crate) fn added(&mut self) {
        self.groups.push(GroupRekey::default());
    }

    /// A group was deleted: its GM database and any rekey in progress go.
    pub(crate) fn reset(&mut self, gi: usize) {
        if let Some(g) = self.groups.get_mut(gi) {
            *g = GroupRekey::default();
        }
    }

    /// Removes a GM from the GM database (eject).
    pub(crate) fn eject(&mut self, gi: usize, gm_identity: &str) -> bool {
        let Some(g) = self.groups.get_mut(gi) else {
            return false;
        };
        let Some(m) = g.members.remove(gm_identity) else {
            return false;
        };
        g.removed.insert(m.gm_identity, m.registered_at);
        g.by_addr.retain(|_, v| v != gm_identity);
        g.tracker.forget(gm_identity);
        true
    }

    /// A COOP merge: the next rekey of group `gi` also goes out under
    /// `keks` (held by the GMs of the other side of a healed partition)
    /// and deletes `spis` (their TEKs).
    pub(crate) fn add_merge(&mut self, gi: usize, keks: Vec<Kek>, spis: Vec<u32>) {
        if let Some(g) = self.groups.get_mut(gi) {
            let m = g.merge.get_or_insert_with(Default::default);
            m.0.extend(keks);
            m.1.extend(spis);
        }
    }

    /// Drops a prepared rekey (and any queued behind it) unsent.
    pub(crate) fn discard_pending(&mut self, gi: usize) {
        if let Some(g) = self.groups.get_mut(gi) {
            g.pending = None;
            g.queued = None;
        }
    }

    /// A prepared rekey's state, to persist before it is released.
    pub(crate) fn pending_state(&self, gi: usize) -> Option<&GroupState> {
        self.groups.get(gi)?.pending.as_ref().map(|p| &p.state)
    }

    /// A GM registered (or came back from the caller's GM database).
    pub(crate) fn member_registered(&mut self, gi: usize, record: GmRecord) {
        let Some(g) = self.groups.get_mut(gi) else {
            return;
        };
        if let Some(old) = g.members.get(&record.gm_identity) {
            g.by_addr.remove(&old.addr.ip());
        }
        g.by_addr
            .insert(record.addr.ip(), record.gm_identity.clone());
        if let Ok(a) = record.gm_identity.parse::<IpAddr>() {
            g.by_addr.insert(a, record.gm_identity.clone());
        }
        g.tracker.registered(&record.gm_identity);
        g.members.insert(record.gm_identity.clone(), record);
    }

    /// Whether `record` is a registration this key server removed (a
    /// peer's copy of it does not bring the GM back; a newer
    /// registration does).
    pub(crate) fn was_removed(&self, gi: usize, record: &GmRecord) -> bool {
        self.groups
            .get(gi)
            .and_then(|g| g.removed.get(&record.gm_identity))
            .is_some_and(|at| *at >= record.registered_at)
    }

    /// One GM of group `gi`'s GM database.
    pub(crate) fn member(&self, gi: usize, gm_identity: &str) -> Option<&GmRecord> {
        self.groups.get(gi)?.members.get(gm_identity)
    }

    /// Group `gi`'s GM database.
    pub(crate) fn members(&self, gi: usize) -> impl Iterator<Item = &GmRecord> {
        self.groups
            .get(gi)
            .into_iter()
            .flat_map(|g| g.members.values())
    }

    /// Every group's GMs.
    pub(crate) fn all_members(&self) -> impl Iterator<Item = &GmRecord> {
        self.groups.iter().flat_map(|g| g.members.values())
    }

    /// One GM's ACK state.
    pub(crate) fn ack_state(&self, gi: usize, gm_identity: &str) -> Option<AckState> {
        self.groups.get(gi)?.tracker.state(gm_identity)
    }

    /// GMs registered and tracked, and those one miss from removal.
    pub(crate) fn gm_counts(&self, gi: usize) -> (usize, usize) {
        self.groups
            .get(gi)
            .map_or((0, 0), |g| (g.members.len(), g.tracker.at_risk_count()))
    }

    /// Whether a rekey of group `gi` is in flight: prepared and not yet
    /// sent, queued behind one, or sent by unicast with GMs yet to
    /// acknowledge it (while its retransmissions last).
    pub(crate) fn in_flight(&self, gi: usize) -> bool {
        self.groups.get(gi).is_some_and(|g| {
            g.pending.is_some()
                || g.queued.is_some()
                || g.round.as_ref().is_some_and(|r| r.acked < r.targets)
        })
    }

    /// Prepares a rekey of group `gi` (new keys and SEQ, nothing sent) and
    /// asks the caller to persist it; while another waits to be persisted,
    /// this one runs right after it.
    pub(crate) fn prepare(
        &mut self,
        now: Millis,
        gi: usize,
        reason: RekeyReason,
        table: &GroupTable,
        out: &mut KsOutbox,
        rng: &mut dyn EngineRng,
    ) -> Result<(), RekeyError> {
        let Some(group) = table.get(gi) else {
            return Err(RekeyError::UnknownGroup(0));
        };
        let group_id = group.keys.group_id;
        if self.signer.is_none() {
            return Err(RekeyError::NoSigner);
        }
        if table.is_held(gi) {
            return Err(RekeyError::NotPrimary(group_id));
        }
        let Some(g) = self.groups.get_mut(gi) else {
            return Err(RekeyError::UnknownGroup(group_id));
        };
        if g.pending.is_some() {
            g.queued = Some(g.queued.map_or(reason, |q| q.max(reason)));
            return Ok(());
        }
        let Some(cur) = table.state(gi) else {
            return Err(RekeyError::UnknownGroup(group_id));
        };
        let Some(old_kek) = cur.keys.kek.as_ref() else {
            return Err(RekeyError::NoKek(group_id));
        };
        let seq = cur
            .keys
            .seq
            .checked_add(1)
            .ok_or(RekeyError::SeqExhausted(group_id))?;
        let new_teks = reason != RekeyReason::KekExpiry;
        let new_kek = matches!(reason, RekeyReason::KekExpiry | RekeyReason::Replace)
            || cur
                .kek_expires_at
                .saturating_sub(group.rekey.kek_rekey_before_ms)
                <= now;
        let mut keys = cur.keys.clone();
        keys.seq = seq;
        if new_kek {
            keys.kek = Some(Kek::fresh(rng, &old_kek.params()));
        }
        let mut previous: Vec<(Tek, Millis)> = cur
            .previous_teks
            .iter()
            .filter(|(_, exp)| *exp > now)
            .cloned()
            .collect();
        let mut deleted: Vec<u32> = g.merge.as_ref().map(|m| m.1.clone()).unwrap_or_default();
        if new_teks {
            keys.teks = cur.keys.teks.iter().map(|t| t.fresh(rng)).collect();
            if reason == RekeyReason::Replace {
                deleted.extend(cur.keys.teks.iter().map(|t| t.spi));
                deleted.extend(previous.iter().map(|(t, _)| t.spi));
                previous.clear();
            } else {
                previous.extend(
                    cur.keys
                        .teks
                        .iter()
                        .map(|t| (t.clone(), cur.tek_expires_at)),
                );
            }
        }
        let tek_life_ms = keys
            .teks
            .iter()
            .map(|t| u64::from(t.lifetime_secs) * 1000)
            .min()
            .unwrap_or(3_600_000);
        let kek_life_ms = keys
            .kek
            .as_ref()
            .map(|k| u64::from(k.lifetime_secs) * 1000)
            .unwrap_or(0);
        let state = GroupState {
            push_kek: cur.push_kek.clone(),
            previous_teks: previous,
            tek_expires_at: if new_teks {
                now + tek_life_ms
            } else {
                cur.tek_expires_at
            },
            kek_expires_at: if new_kek {
                now + kek_life_ms
            } else {
                cur.kek_expires_at
            },
            rekeys_sent: cur.rekeys_sent,
            keys,
        };
        g.pending = Some(Pending {
            reason,
            state,
            deleted,
            old_remaining_secs: secs_left(cur.tek_expires_at, now),
            new_teks,
            prepared_at: now,
        });
        out.event(KsEvent::RekeyPrepared {
            group_id,
            seq,
            reason,
        });
        Ok(())
    }

    /// The caller made the prepared rekey `seq` of group `gi` durable: its
    /// keys are installed and the GROUPKEY-PUSH goes out.
    pub(crate) fn persisted(
        &mut self,
        now: Millis,
        gi: usize,
        seq: u32,
        table: &mut GroupTable,
        out: &mut KsOutbox,
        rng: &mut dyn EngineRng,
    ) -> Result<(), RekeyError> {
        let group_id = table.get(gi).map_or(0, |g| g.keys.group_id);
        let g = self
            .groups
            .get_mut(gi)
            .ok_or(RekeyError::UnknownGroup(group_id))?;
        if g.pending.as_ref().map(|p| p.state.keys.seq) != Some(seq) {
            return Err(RekeyError::NotPrepared {
                group: group_id,
                seq,
            });
        }
        if g.round.is_some() {
            self.close_round(gi, group_id, out);
        }
        let Some(mut p) = self.groups.get_mut(gi).and_then(|g| g.pending.take()) else {
            return Err(RekeyError::NotPrepared {
                group: group_id,
                seq,
            });
        };
        let Some(push_kek) = p.state.push_kek.clone() else {
            return Err(RekeyError::NoKek(group_id));
        };
        let Some(group) = table.get(gi) else {
            return Err(RekeyError::UnknownGroup(group_id));
        };
        let policy = group.rekey;
        let d3p = group.d3p_window_ms;
        let unicast = policy.transport.is_unicast();
        // Build one datagram per GM class that differs.
        let mut variants: BTreeMap<PushVariant, Shared> = BTreeMap::new();
        let mut datagrams = HashMap::new();
        for class in [GmClass::Cisco, GmClass::Asr9000, GmClass::NonCisco] {
            let ack_req = if unicast {
                kek_ack_requested(policy.ack, class)
            } else {
                None
            };
            let atd = (p.new_teks
                && p.reason != RekeyReason::Replace
                && atd_applies(class, p.state.keys.teks.len(), unicast))
            .then(|| activation_time_delay(p.old_remaining_secs));
            let key = (ack_req.map(|a| a.0), atd);
            let d = match variants.get(&key) {
                Some(d) => d.clone(),
                None => {
                    let d =
                        std::rc::Rc::new(self.build_push(&p, &push_kek, ack_req, atd, d3p, rng)?);
                    variants.insert(key, d.clone());
                    d
                }
            };
            datagrams.insert(class, d);
        }
        // A merge: the same push under each KEK the other side's GMs hold
        // (each GM takes the one it can open and drops the others).
        let merge_keks = self
            .groups
            .get_mut(gi)
            .and_then(|g| g.merge.take())
            .map(|m| m.0)
            .unwrap_or_default();
        let mut merge_pushes: Vec<(Kek, Shared)> = Vec::new();
        for kek in merge_keks {
            let ack_req = if unicast {
                kek_ack_requested(policy.ack, GmClass::NonCisco)
            } else {
                None
            };
            let d = self.build_push(&p, &kek, ack_req, None, d3p, rng)?;
            merge_pushes.push((kek, std::rc::Rc::new(d)));
        }
        let Some(g) = self.groups.get_mut(gi) else {
            return Err(RekeyError::UnknownGroup(group_id));
        };
        p.state.rekeys_sent += 1;
        p.state.push_kek = p.state.keys.kek.clone();
        let mut sent = 0usize;
        match policy.transport {
            RekeyTransport::Unicast {
                retransmit_interval,
                ..
            } => {
                let interval_ms = u64::from(retransmit_interval) * 1000;
                for (id, m) in &g.members {
                    if let Some(d) = datagrams.get(&m.class) {
                        g.tracker.sent(id, seq);
                        out.transmit(Transmit {
                            to: m.addr,
                            payload: d.as_ref().clone(),
                        });
                        sent += 1;
                    }
                    for (_, d) in &merge_pushes {
                        out.transmit(Transmit {
                            to: m.addr,
                            payload: d.as_ref().clone(),
                        });
                        sent += 1;
                    }
                }
                g.round = Some(Round {
                    seq,
                    kek: push_kek,
                    datagrams,
                    merge: merge_pushes,
                    transmissions: 1,
                    next_at: now + interval_ms,
                    prepared_at: p.prepared_at,
                    targets: sent,
                    acked: 0,
                });
            }
            RekeyTransport::Multicast { address, port, .. } => {
                if let Some(d) = datagrams.get(&GmClass::NonCisco) {
                    let to = SocketAddr::V4(SocketAddrV4::new(address, port));
                    let merged = merge_pushes.iter().map(|(_, d)| d.as_ref().clone());
                    for payload in std::iter::once(d.as_ref().clone()).chain(merged) {
                        out.transmit(Transmit { to, payload });
                        sent += 1;
                    }
                }
            }
        }
        let queued = g.queued.take();
        table.install(gi, p.state, now);
        out.counters.rekeys_sent += 1;
        out.counters.push_datagrams += sent as u64;
        out.event(KsEvent::RekeySent {
            group_id,
            seq,
            reason: p.reason,
            datagrams: sent,
        });
        if let Some(r) = queued {
            self.prepare(now, gi, r, table, out, rng)?;
        }
        Ok(())
    }

    /// `HDR*, SEQ, [D], SA, KD, SIG` for one variant.
    fn build_push(
        &self,
        p: &Pending,
        push_kek: &Kek,
        ack_req: Option<AckRequested>,
        atd: Option<u16>,
        d3p_window_ms: Option<u32>,
        rng: &mut dyn EngineRng,
    ) -> Result<Vec<u8>, RekeyError> {
        let keys = &p.state.keys;
        let material = keys.kek_material();
        let mut sa = keys.to_sa_with(ack_req);
        sa.gap = ks_gap(d3p_window_ms, atd);
        let kd = keys.to_kd(&material, None);
        let spis: Vec<u8> = p.deleted.iter().flat_map(|s| s.to_be_bytes()).collect();
        let mut payloads = vec![Payload::Seq(Seq(keys.seq))];
        if !spis.is_empty() {
            payloads.push(Payload::Delete(Delete {
                doi: Doi::GDOI,
                protocol_id: GdoiProtocol::IPSEC_ESP.0,
                spi_size: 4,
                spis: &spis,
            }));
        }
        payloads.push(Payload::Sa(Sa::Gdoi(sa)));
        payloads.push(Payload::KeyDownload(kd));
        let signer = self.signer.as_ref().ok_or(RekeyError::NoSigner)?;
        seal_push(push_kek, signer, rng, &payloads).map_err(|_| RekeyError::NoSigner)
    }

    /// Rekey scheduling and round timers.
    pub(crate) fn timeout(
        &mut self,
        now: Millis,
        table: &mut GroupTable,
        out: &mut KsOutbox,
        rng: &mut dyn EngineRng,
    ) {
        for gi in 0..self.groups.len() {
            let Some((policy, group_id)) = table.get(gi).map(|g| (g.rekey, g.keys.group_id)) else {
                continue;
            };
            // A COOP secondary sends no rekey, not even a retransmission.
            if table.is_disabled(gi) || table.is_held(gi) {
                continue;
            }
            let round_due = self
                .groups
                .get(gi)
                .and_then(|g| g.round.as_ref())
                .is_some_and(|r| now >= r.next_at);
            if round_due {
                self.round_timer(now, gi, group_id, policy, out);
            }
            let pending = self.groups.get(gi).is_some_and(|g| g.pending.is_some());
            let due = match (table.state(gi), pending) {
                (Some(s), false) => {
                    if now + policy.tek_rekey_before_ms >= s.tek_expires_at {
                        Some(RekeyReason::TekExpiry)
                    } else if now + policy.kek_rekey_before_ms >= s.kek_expires_at {
                        Some(RekeyReason::KekExpiry)
                    } else {
                        None
                    }
                }
                _ => None,
            };
            if let Some(reason) = due {
                // A group that cannot be rekeyed (no KEK, no signer) is not retried in a loop.
                if self.prepare(now, gi, reason, table, out, rng).is_err() {
                    table.park(gi);
                }
            }
        }
    }

    fn round_timer(
        &mut self,
        now: Millis,
        gi: usize,
        group_id: u32,
        policy: RekeyPolicy,
        out: &mut KsOutbox,
    ) {
        let Some((retransmits, interval_ms)) = policy.transport.unicast_schedule() else {
            return;
        };
        let Some(g) = self.groups.get_mut(gi) else {
            return;
        };
        let Some(round) = g.round.as_mut() else {
            return;
        };
        if round.transmissions > retransmits {
            return self.close_round(gi, group_id, out);
        }
        round.transmissions += 1;
        round.next_at = now + interval_ms;
        let seq = round.seq;
        let mut resent = 0u64;
        for id in g.tracker.unacknowledged(seq) {
            if let Some(m) = g.members.get(id) {
                let merged = round.merge.iter().map(|(_, d)| d);
                for d in round.datagrams.get(&m.class).into_iter().chain(merged) {
                    out.transmit(Transmit {
                        to: m.addr,
                        payload: d.as_ref().clone(),
                    });
                    resent += 1;
                }
            }
        }
        out.counters.push_datagrams += resent;
        out.counters.push_retransmits += resent;
    }

    /// Ends the ACK wait of the open round: misses counted, the third
    /// consecutive one removes the GM from the GM database.
    fn close_round(&mut self, gi: usize, group_id: u32, out: &mut KsOutbox) {
        let Some(g) = self.groups.get_mut(gi) else {
            return;
        };
        let Some(round) = g.round.take() else {
            return;
        };
        let (mut acked, mut missed, mut removed) = (0usize, 0usize, 0usize);
        for (id, outcome) in g.tracker.close_round(round.seq) {
            match outcome {
                RoundOutcome::Acked => acked += 1,
                RoundOutcome::Missed(_) => missed += 1,
                RoundOutcome::Removed => {
                    removed += 1;
                    if let Some(m) = g.members.remove(&id) {
                        g.removed.insert(id.clone(), m.registered_at);
                        g.by_addr.retain(|_, v| *v != id);
                        out.event(KsEvent::GmRemoved {
                            group_id,
                            gm_identity: id,
                            addr: m.addr,
                            seq: round.seq,
                        });
                    }
                }
            }
        }
        out.counters.gms_removed += removed as u64;
        out.event(KsEvent::RekeyRoundClosed {
            group_id,
            seq: round.seq,
            acked,
            missed,
            removed,
        });
    }

    /// The earliest rekey deadline of any group.
    pub(crate) fn deadline(&self, table: &GroupTable) -> Option<Millis> {
        if !table.is_ready() {
            return (table.len() > 0).then_some(0);
        }
        self.groups
            .iter()
            .zip(table.all())
            .enumerate()
            .filter(|(gi, _)| !table.is_disabled(*gi) && !table.is_held(*gi))
            .filter_map(|(gi, (g, cfg))| g.next_deadline(table.state(gi), &cfg.rekey))
            .min()
    }
}
