//! The key server engine (responder): IKEv1 main mode (RFC 2409) followed
//! by GROUPKEY-PULL (RFC 6407 section 3). Sans-IO: the caller feeds
//! datagrams and time, then drains transmits and events.

use std::net::{Ipv4Addr, SocketAddr};

use gkm_wire::consts::{ExchangeType, NotifyType};
use gkm_wire::IsakmpHeader;

use crate::crypto::EngineRng;
use crate::engine::{Millis, Transmit};
use crate::group::Ipv4Prefix;
use crate::rekey::{GroupState, RekeyError, RekeyReason};

mod config;
mod coop;
mod events;
mod groups;
mod phase1;
mod pull;
mod rekey;
mod status;

pub use crate::identity::{identity_string, printable};
pub use config::{
    Authorization, Credential, EnrolledAgents, GroupAuth, KsConfig, KsGroup, KsLimits, PskEntry,
    MAX_PSK_CANDIDATES,
};
pub use coop::{
    CoopGroupConfig, CoopPeerAuth, CoopPeerConfig, CoopPeerStatus, CoopStatus, TAKEOVER_SEQ_GAP,
};
use coop::{CoopPart, CoopSync, Incoming};
pub(crate) use events::KsOutbox;
pub use events::{CoopDrop, CoopEvent, CoopMismatch, GmRecord, KsCounters, KsEvent, Reject};
use groups::GroupTable;
pub use phase1::SWEEP_INTERVAL_MS;
use phase1::{Phase1Config, Phase1Responder};
pub use pull::MAX_PULLS_PER_SA;
use pull::{PullContext, PullServer};
use rekey::Rekeys;
pub use status::{KekPolicyStatus, RekeyStatus};

/// The key server engine: its owned parts composed. Each part keeps its
/// own state behind its own methods; the engine routes datagrams and time
/// to them and hands them the outbox and the generator.
pub struct KeyServer {
    /// The KS's address (its phase 1 identity, as GMs see it).
    address: Ipv4Addr,
    rng: Box<dyn EngineRng>,
    /// Datagrams, events and counters for the caller.
    out: KsOutbox,
    /// Main mode: every phase 1 SA, the PSKs and the PKI.
    phase1: Phase1Responder,
    /// Open GROUPKEY-PULLs.
    pulls: PullServer,
    /// Groups, their keys and registration payloads, sender IDs.
    groups: GroupTable,
    /// GM databases, rekeys and ACKs.
    rekeys: Rekeys,
    /// Operator tags marking ASR 9000 GMs by address.
    asr9000: Vec<Ipv4Prefix>,
    /// Cooperative key servers: elections and peer sessions.
    coop: CoopPart,
    /// Group 19 implementation, for the COOP sessions' main mode.
    dh_backend: crate::crypto::DhBackend,
}

impl KeyServer {
    /// A key server with its configuration and randomness.
    pub fn new(cfg: KsConfig, rng: Box<dyn EngineRng>) -> Self {
        let KsConfig {
            address,
            address_v6,
            groups,
            psks,
            ca,
            certificates,
            asr9000,
            limits,
            max_phase1_life_secs,
            dh_backend,
            export_keys,
            rekey_signer,
            rekey_key_name,
        } = cfg;
        let phase1 = Phase1Responder::new(Phase1Config {
            address,
            address_v6,
            psks,
            ca,
            certificates,
            limits,
            max_life_secs: max_phase1_life_secs,
            dh_backend,
            export_keys,
        });
        let rekeys = Rekeys::new(rekey_signer, rekey_key_name, groups.len());
        let mut ks = Self {
            address,
            rng,
            out: KsOutbox::default(),
            phase1,
            pulls: PullServer::new(limits.pull_timeout_ms),
            groups: GroupTable::new(groups),
            rekeys,
            asr9000,
            coop: CoopPart::default(),
            dh_backend,
        };
        ks.sync_legacy_groups();
        ks
    }

    /// Tells the phase 1 responder which groups have `legacy_phase1` on.
    fn sync_legacy_groups(&mut self) {
        let legacy = (0..self.groups.len())
            .filter(|&gi| !self.groups.is_disabled(gi))
            .filter_map(|gi| self.groups.get(gi))
            .filter(|g| g.legacy_phase1)
            .map(|g| (g.keys.group_id, g.authentication))
            .collect();
        self.phase1.set_legacy_groups(legacy);
    }

    /// This key server's address (its phase 1 identity), as GMs see it.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The groups, served or deleted (a deleted group keeps its place).
    pub fn groups(&self) -> &[KsGroup] {
        self.groups.all()
    }

    /// Counters.
    pub fn counters(&self) -> &KsCounters {
        &self.out.counters
    }

    /// Phase 1 exchanges in progress or established (state size, for tests and metrics).
    pub fn phase1_sa_count(&self) -> usize {
        self.phase1.sa_count()
    }

    /// Half-open phase 1 exchanges.
    pub fn half_open_count(&self) -> usize {
        self.phase1.half_open_count()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.poll_transmit()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<KsEvent> {
        self.out.poll_event()
    }

    /// When `handle_timeout` should next be called: state is swept when its
    /// earliest deadline comes, at most once per [`SWEEP_INTERVAL_MS`], so
    /// the cost stays O(1) per datagram and O(n) per second at worst; an
    /// idle KS with established SAs wakes only when one expires.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let sweep = self.phase1.sweep_at();
        [
            sweep,
            self.rekeys.deadline(&self.groups),
            self.coop.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Adds a group, or changes one the KS serves (`group.keys` are fresh
    /// keys of the new policy). A change of key policy (selectors,
    /// transforms, lifetimes, KEK) reaches GMs as a rekey replace; a change
    /// of the ACK option as a rekey (GMs must see KEK_ACK_REQUESTED change);
    /// authorization and names apply at once. `replace` forces a rekey
    /// replace (CMD <-> IP-D3P). Returns the rekey started, if any.
    pub fn set_group(
        &mut self,
        now: Millis,
        mut group: KsGroup,
        replace: bool,
    ) -> Result<Option<RekeyReason>, RekeyError> {
        self.ensure_ready(now);
        // A COOP secondary keeps serving its primary's keys: its own
        // configuration's keys would reach GMs no primary rekeys.
        if let Some(gi) = self.groups.index(group.keys.group_id) {
            if self.groups.is_held(gi) {
                if let Some(st) = self.groups.state(gi) {
                    group.keys = st.keys.clone();
                }
            }
        }
        let Some(gi) = self.groups.any_index(group.keys.group_id) else {
            self.groups.add(group, now);
            self.rekeys.added();
            self.sync_legacy_groups();
            return Ok(None);
        };
        let change = self.groups.change(gi, group, now);
        self.sync_legacy_groups();
        self.coop.recheck(&self.groups, &mut self.out);
        let reason = if change.keys || replace || change.revived {
            Some(RekeyReason::Replace)
        } else if change.policy {
            Some(RekeyReason::Manual)
        } else {
            None
        };
        // A COOP secondary's GMs hear of the change from its primary.
        let reason = reason.filter(|_| !self.groups.is_held(gi));
        if let Some(r) = reason {
            self.rekeys
                .prepare(now, gi, r, &self.groups, &mut self.out, self.rng.as_mut())?;
        }
        Ok(reason)
    }

    /// Stops serving a group (deleted): no registrations, no rekeys; its GM
    /// database is dropped.
    pub fn disable_group(&mut self, group_id: u32) -> bool {
        let Some(gi) = self.groups.index(group_id) else {
            return false;
        };
        self.groups.disable(gi);
        self.rekeys.reset(gi);
        self.sync_legacy_groups();
        true
    }

    /// Removes a GM from the GM database on the operator's word (eject):
    /// no more rekeys until it registers again.
    pub fn eject(&mut self, group_id: u32, gm_identity: &str) -> bool {
        self.groups
            .index(group_id)
            .is_some_and(|gi| self.rekeys.eject(gi, gm_identity))
    }

    /// The durable state of a group: with a prepared rekey, the state to
    /// persist before [`KeyServer::rekey_persisted`].
    pub fn group_state(&self, group_id: u32) -> Option<GroupState> {
        let gi = self.groups.index(group_id)?;
        self.rekeys
            .pending_state(gi)
            .or_else(|| self.groups.state(gi))
            .cloned()
    }

    /// A GM that registered before a restart (from the caller's GM
    /// database): it receives unicast rekeys again, and its sender IDs
    /// are never granted again.
    pub fn restore_member(&mut self, record: GmRecord) {
        let Some(gi) = self.groups.index(record.group_id) else {
            return;
        };
        self.groups.note_sids(record.group_id, &record.sids);
        self.rekeys.member_registered(gi, record);
    }

    /// The GMs of a group the KS rekeys (its GM database).
    pub fn members(&self, group_id: u32) -> impl Iterator<Item = &GmRecord> {
        self.groups
            .index(group_id)
            .into_iter()
            .flat_map(|gi| self.rekeys.members(gi))
    }

    /// Every group's GMs.
    pub fn all_members(&self) -> impl Iterator<Item = &GmRecord> {
        self.rekeys.all_members()
    }

    /// One GM's ACK state.
    pub fn member_ack_state(
        &self,
        group_id: u32,
        gm_identity: &str,
    ) -> Option<crate::ack_tracker::AckState> {
        self.rekeys
            .ack_state(self.groups.index(group_id)?, gm_identity)
    }

    /// Whether a rekey of the group is in flight: prepared and not yet
    /// sent, queued behind one, or sent by unicast with GMs yet to
    /// acknowledge it (while its retransmissions last).
    pub fn rekey_in_flight(&self, group_id: u32) -> bool {
        self.groups
            .index(group_id)
            .is_some_and(|gi| self.rekeys.in_flight(gi))
    }

    /// Asks for a rekey now (`Manual` or `Replace`; the scheduler uses the
    /// expiry reasons). While another rekey waits to be persisted, the
    /// request runs right after it.
    pub fn rekey_now(
        &mut self,
        now: Millis,
        group_id: u32,
        reason: RekeyReason,
    ) -> Result<(), RekeyError> {
        let gi = self
            .groups
            .index(group_id)
            .ok_or(RekeyError::UnknownGroup(group_id))?;
        self.ensure_ready(now);
        self.rekeys.prepare(
            now,
            gi,
            reason,
            &self.groups,
            &mut self.out,
            self.rng.as_mut(),
        )
    }

    /// The caller has made [`KeyServer::group_state`] durable for the
    /// prepared rekey `seq`: the engine switches to the new keys and sends
    /// the GROUPKEY-PUSH.
    pub fn rekey_persisted(
        &mut self,
        now: Millis,
        group_id: u32,
        seq: u32,
    ) -> Result<(), RekeyError> {
        let gi = self
            .groups
            .index(group_id)
            .ok_or(RekeyError::UnknownGroup(group_id))?;
        // Prepared as primary, persisted after stepping down: not sent
        // (the SEQ stays unused; the primary's state replaces these keys).
        if self.groups.is_held(gi) {
            self.rekeys.discard_pending(gi);
            return Err(RekeyError::NotPrimary(group_id));
        }
        self.rekeys.persisted(
            now,
            gi,
            seq,
            &mut self.groups,
            &mut self.out,
            self.rng.as_mut(),
        )?;
        // The secondaries take the new keys now, not at the next refresh.
        self.coop.announce_now(
            now,
            group_id,
            &self.groups,
            self.rng.as_mut(),
            &mut self.out,
        );
        self.sync_coop(now);
        Ok(())
    }

    /// `show crypto gkm ks rekey` for a group.
    pub fn rekey_status(&self, group_id: u32) -> Option<RekeyStatus> {
        status::rekey_status(&self.groups, &self.rekeys, self.groups.index(group_id)?)
    }

    /// `show crypto gkm ks policy` (KEK part) for a group.
    pub fn kek_policy_status(&self, group_id: u32, now: Millis) -> Option<KekPolicyStatus> {
        status::kek_policy_status(
            &self.groups,
            &self.rekeys,
            self.groups.index(group_id)?,
            now,
        )
    }

    /// Key states are set up the first time time is known.
    fn ensure_ready(&mut self, now: Millis) {
        if !self.groups.is_ready() {
            self.groups.ensure_ready(now);
        }
    }

    /// Expires half-open exchanges, finished PULLs and phase 1 SAs past their lifetime.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.ensure_ready(now);
        self.rekeys
            .timeout(now, &mut self.groups, &mut self.out, self.rng.as_mut());
        self.coop
            .handle_timeout(now, &self.groups, self.rng.as_mut(), &mut self.out);
        self.sync_coop(now);
        if !self.phase1.sweep_due(now) {
            return;
        }
        let earliest = self.phase1.sweep(now);
        // A PULL ends with its time, or with its phase 1 SA.
        let earliest = earliest.min(self.pulls.sweep(now, &self.phase1));
        self.phase1.sweep_next(earliest, now);
    }

    pub(crate) fn reject(&mut self, peer: SocketAddr, reason: Reject, notify: Option<NotifyType>) {
        self.out.reject(peer, reason, notify);
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Millis, from: SocketAddr, data: &[u8]) {
        self.out.counters.datagrams += 1;
        let header = match IsakmpHeader::parse(data) {
            Ok(h) => h,
            Err(e) => {
                return self
                    .out
                    .refuse(from, Reject::Malformed, None, events::wire_detail(e))
            }
        };
        match header.exchange_type {
            ExchangeType::IDENTITY_PROTECTION if self.coop.owns_main_mode(&header) => {
                self.coop.handle_main_mode(
                    Incoming {
                        now,
                        from,
                        header: &header,
                        data,
                    },
                    self.rng.as_mut(),
                    &mut self.out,
                )
            }
            ExchangeType::IDENTITY_PROTECTION => {
                self.phase1
                    .main_mode(now, from, &header, data, self.rng.as_mut(), &mut self.out)
            }
            ExchangeType::GKM_COOP => {
                self.ensure_ready(now);
                self.coop.handle_message(
                    Incoming {
                        now,
                        from,
                        header: &header,
                        data,
                    },
                    &self.phase1,
                    &self.groups,
                    self.rng.as_mut(),
                    &mut self.out,
                );
                self.sync_coop(now);
            }
            ExchangeType::GROUPKEY_PULL => self.pull(now, from, &header, data),
            ExchangeType::GROUPKEY_PUSH_ACK | ExchangeType::GKM_UNICAST_ACK => {
                self.ensure_ready(now);
                self.rekeys
                    .on_ack(now, from, &header, data, &self.groups, &mut self.out)
            }
            ExchangeType::INFORMATIONAL => {}
            ExchangeType::AGGRESSIVE => self.phase1.refuse_aggressive(&mut self.out, from, &header),
            _ => self.reject(from, Reject::UnsupportedExchange, None),
        }
    }

    /// Whether group `gi` accepts any of `credentials`.
    fn pull(&mut self, now: Millis, from: SocketAddr, header: &IsakmpHeader, data: &[u8]) {
        self.ensure_ready(now);
        self.groups.refresh(now);
        let mut cx = PullContext {
            phase1: &mut self.phase1,
            groups: &mut self.groups,
            asr9000: &self.asr9000,
            out: &mut self.out,
            rng: self.rng.as_mut(),
        };
        if let Some((gi, record, elapsed_ms)) = self.pulls.handle(now, from, header, data, &mut cx)
        {
            self.out.counters.registrations += 1;
            self.out.event(KsEvent::PullCompleted {
                group_id: record.group_id,
                elapsed_ms,
            });
            self.rekeys.member_registered(gi, record.clone());
            self.coop.gm_recorded(now, &record);
            self.out.event(KsEvent::Registered(record));
        }
    }

    /// Starts (or restarts with a new configuration) a group's cooperative
    /// key servers: its election and a session to each peer. The peers'
    /// pair PSKs must also be among [`KeyServer::set_psks`]'s entries (as
    /// [`Credential::CoopPeer`] for each peer's address) for their
    /// announcements to be taken.
    pub fn set_coop_group(&mut self, now: Millis, cfg: CoopGroupConfig) {
        self.ensure_ready(now);
        let group_id = cfg.group_id;
        // A new journal each start: the peers take this key server's GM
        // database again, whole.
        let journal = self.rng.next_u64() | 1;
        let own_certificate = self.phase1.pki();
        self.coop
            .set_group(now, cfg, self.dh_backend, own_certificate.as_ref(), journal);
        if let Some(gi) = self.groups.index(group_id) {
            for m in self.rekeys.members(gi) {
                self.coop.gm_recorded(now, m);
            }
        }
        self.sync_coop(now);
    }

    /// Stops a group's cooperative key servers: the key server rekeys the
    /// group on its own again.
    pub fn remove_coop_group(&mut self, group_id: u32) {
        self.coop.remove_group(group_id);
        if let Some(gi) = self.groups.index(group_id) {
            self.groups.set_held(gi, false);
            self.groups.set_blocked(gi, false);
        }
    }

    /// The caller has persisted a COOP epoch ([`CoopEvent::PersistEpoch`]).
    pub fn coop_epoch_persisted(&mut self, now: Millis, group_id: u32, epoch: u64) {
        self.coop.epoch_persisted(
            now,
            group_id,
            epoch,
            &self.groups,
            self.rng.as_mut(),
            &mut self.out,
        );
        self.sync_coop(now);
    }

    /// Acts on the COOP groups' roles (docs/COOP.md, "The key server
    /// acting on its role"): a secondary holds its rekeys and takes its
    /// primary's group state (its own SEQ never goes down); a primary
    /// keeps its SEQ at or above every SEQ its peers announced, and a
    /// takeover starts [`TAKEOVER_SEQ_GAP`] above all of them.
    fn sync_coop(&mut self, now: Millis) {
        let mut merges = Vec::new();
        for mut s in self.coop.sync() {
            let Some(gi) = self.groups.index(s.group_id) else {
                continue;
            };
            let primary = s.role == crate::coop::election::Role::Primary;
            // GMs learned from peers join the GM database (unicast
            // rekeys reach them) and their sender IDs are never granted
            // again; a primary passes them on to its other peers (a
            // secondary's journal holds its own registrations only, so
            // records flow to the primary and from it, never around).
            for r in std::mem::take(&mut s.learned) {
                if self.rekeys.member(gi, &r.gm_identity) == Some(&r)
                    || self.rekeys.was_removed(gi, &r)
                {
                    continue;
                }
                self.groups.note_sids(r.group_id, &r.sids);
                self.rekeys.member_registered(gi, r.clone());
                if primary {
                    self.coop.gm_recorded(now, &r);
                }
                self.out.event(KsEvent::Coop(CoopEvent::GmLearned(r)));
            }
            // A merge: the other side's GMs hold its KEK and TEKs and
            // took its SEQ; once the SEQ is raised above theirs (below),
            // the whole group is rekeyed (a replace) under every KEK held.
            let merge = std::mem::take(&mut s.merge);
            let merge_seq = merge.iter().map(|m| m.keys.seq).max().unwrap_or(0);
            // A new primary's journal takes the whole GM database.
            if s.took_over {
                for m in self.rekeys.members(gi) {
                    self.coop.gm_recorded(now, m);
                }
            }
            self.groups.set_held(gi, !primary);
            self.groups.set_blocked(gi, s.blocking);
            // Never under a rekey waiting to be persisted: it carries its
            // own SEQ; a takeover's raise waits for the next sync.
            if self.rekeys.pending_state(gi).is_some() {
                if s.took_over {
                    self.coop.defer_takeover(s.group_id);
                }
                // The merge waits too: its SEQ must be above theirs.
                if primary && !merge.is_empty() {
                    self.coop.requeue_merge(s.group_id, merge);
                }
                continue;
            }
            let Some(own) = self.groups.state(gi).cloned() else {
                continue;
            };
            let (next, adopted) = match s {
                CoopSync {
                    adopt: Some(mut theirs),
                    ..
                } => {
                    let spki = |s: &GroupState| s.keys.kek.as_ref().map(|k| k.sig_key_spki.clone());
                    let differs = self
                        .rekeys
                        .signer_spki()
                        .is_some_and(|mine| spki(&theirs).is_some_and(|their| their != mine));
                    self.coop
                        .set_key_differs(s.group_id, differs, &self.groups, &mut self.out);
                    theirs.keys.seq = theirs.keys.seq.max(own.keys.seq);
                    (theirs, true)
                }
                CoopSync {
                    took_over,
                    peer_seq_high,
                    ..
                } if primary => {
                    let gap = if took_over { TAKEOVER_SEQ_GAP } else { 0 };
                    let floor = if took_over {
                        own.keys.seq.max(peer_seq_high).saturating_add(gap)
                    } else {
                        peer_seq_high
                    }
                    .max(merge_seq);
                    let mut raised = own.clone();
                    raised.keys.seq = raised.keys.seq.max(floor);
                    (raised, false)
                }
                _ => continue,
            };
            if primary && !merge.is_empty() {
                let keks = merge.iter().filter_map(|m| m.push_kek.clone()).collect();
                let spis = merge
                    .iter()
                    .flat_map(|m| m.keys.teks.iter().map(|t| t.spi))
                    .collect();
                self.rekeys.add_merge(gi, keks, spis);
                merges.push(gi);
            }
            if next == own {
                continue;
            }
            let seq = next.keys.seq;
            self.groups.install(gi, next, now);
            self.out.event(KsEvent::Coop(CoopEvent::PersistGroupState {
                group_id: s.group_id,
                seq,
                adopted,
            }));
            if !adopted {
                // A raised SEQ reaches the secondaries at once: were this
                // primary to die before its next refresh, they would take
                // over from the SEQ they know.
                self.coop.announce_now(
                    now,
                    s.group_id,
                    &self.groups,
                    self.rng.as_mut(),
                    &mut self.out,
                );
            }
        }
        for gi in merges {
            // Queued behind a rekey waiting to be persisted, if one is.
            let _ = self.rekeys.prepare(
                now,
                gi,
                RekeyReason::Replace,
                &self.groups,
                &mut self.out,
                self.rng.as_mut(),
            );
        }
    }

    /// `show crypto gkm ks coop` for a group with cooperative key servers.
    pub fn coop_status(&self, group_id: u32, now: Millis) -> Option<CoopStatus> {
        self.coop.status(group_id, now)
    }

    /// Whether the key server has certificate credentials for phase 1
    /// (its certificate, key and CAs).
    pub fn has_certificate(&self) -> bool {
        self.phase1.has_pki()
    }

    /// The key server's role in a group with cooperative key servers.
    pub fn coop_role(&self, group_id: u32) -> Option<crate::coop::election::Role> {
        self.coop.role(group_id)
    }

    /// Replaces the enrolled agents: from the next phase 1 on, a
    /// certificate naming a revoked one is refused, and one naming an
    /// enrolled one joins only its groups (SAs already made keep the
    /// groups they were made with until they expire or the GM is ejected).
    pub fn set_enrolled_agents(&mut self, agents: EnrolledAgents) {
        self.phase1.set_agents(agents);
    }

    /// Replaces the pre-shared keys (see [`Phase1Responder::set_psks`]).
    pub fn set_psks(&mut self, psks: Vec<PskEntry>) {
        self.phase1.set_psks(psks);
    }
}
