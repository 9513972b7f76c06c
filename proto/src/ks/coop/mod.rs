//! Cooperative key servers, the key server engine's part (docs/COOP.md):
//! for each group with peers, the election ([`crate::coop::election`]) and
//! one [`Session`] per peer. Announcements go out as GKM-COOP messages
//! over the phase 1 SA this key server initiated to the peer; a peer's
//! announcements come in over the SA it initiated, which the phase 1
//! responder authenticated with the pair PSK ([`Credential::CoopPeer`]).
//! An announcement is taken only when it decrypts, its HASH verifies, the
//! SA's credential is the pair PSK of the group it names and the SA's peer
//! is that configured peer; anything else is dropped and counted, and
//! changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use gkm_wire::consts::PayloadType;
use gkm_wire::coop::{CoopAnnouncement, CoopOptions, CoopRole, CoopSeq};
use gkm_wire::IsakmpHeader;

use super::events::{CoopDrop, CoopEvent, CoopMismatch, KsEvent, KsOutbox};
use super::groups::GroupTable;
use super::phase1::{cookies, Phase1Responder};
use crate::coop::election::{
    AnnouncementHeader, Election, ElectionConfig, ElectionEvent, Rank, Role,
};
use crate::crypto::{DhBackend, EngineRng};
use crate::engine::{own_vendor_id, Millis};
use crate::ike::initiator::OwnCertificate;
use crate::ike::{decrypt_message, phase2_iv, verify_hashed_chain};
use crate::ks::GmRecord;
use crate::rekey::GroupState;
use gkm_wire::coop_gms::CoopGms;

mod announce;
mod config;
mod gm_sync;
mod session;
mod status;

pub use config::{CoopGroupConfig, CoopPeerAuth, CoopPeerConfig};
use gm_sync::GmSync;
use session::{Session, SessionAuth, SessionOutput};
pub use status::{CoopPeerStatus, CoopStatus};

/// A datagram as the COOP part is handed it.
pub(crate) struct Incoming<'a> {
    /// When it came.
    pub now: Millis,
    /// From where.
    pub from: SocketAddr,
    /// Its ISAKMP header, parsed.
    pub header: &'a IsakmpHeader,
    /// The whole datagram.
    pub data: &'a [u8],
}

struct CoopGroup {
    cfg: CoopGroupConfig,
    election: Election,
    sessions: Vec<Session>,
    /// The options the followed primary (this address) announced last.
    primary_options: Option<(IpAddr, CoopOptions)>,
    /// The options raised as mismatched.
    mismatches: Vec<CoopMismatch>,
    /// The highest SEQ any peer announced (GKM-COOP-SEQ).
    peer_seq_high: u32,
    /// The role the engine last acted on (rekeys held or not).
    acted_role: Option<Role>,
    /// The followed primary's group state, to take.
    adopt: Option<GroupState>,
    /// The followed primary's KEK names another rekey-signing key than
    /// this key server's.
    key_differs: bool,
    /// The GM database sync.
    gms: GmSync,
    /// The last (anti-replay number, part) taken from each peer.
    last_part: HashMap<IpAddr, (u64, u16)>,
    /// When GM records recorded since the last announcement go out.
    gm_flush_at: Option<Millis>,
    /// The state this key server held when it stepped down as primary,
    /// announced until the primary it follows has merged it: until a
    /// state of that primary shows a rekey sent after the first one this
    /// key server saw (the count then) with a SEQ above this state's.
    stepped_state: Option<(GroupState, Option<u64>)>,
    /// New GM temporary blocking: no primary's state taken since start.
    blocking: bool,
    /// States of the other side of a healed partition, for a merge.
    merge: Vec<GroupState>,
    /// KEKs (SPIs) merged already, with the highest SEQ a state under
    /// each showed: a later state under the same KEK with a higher SEQ
    /// (its GMs took a rekey the merge's SEQ may not be above) is merged
    /// again.
    merged: HashMap<[u8; 16], u32>,
    /// Announcements for this group over an SA whose credential is not a
    /// configured peer's pair PSK.
    not_a_peer: u64,
}

/// How long new GM records wait before an announcement carries them
/// (registrations in a burst share one).
pub const GM_FLUSH_MS: Millis = 1000;

/// What the key server engine must do for a COOP group after the part
/// ran ([`CoopPart::sync`]).
pub(crate) struct CoopSync {
    /// The group.
    pub group_id: u32,
    /// Its role now.
    pub role: Role,
    /// It has just become primary (a takeover): its SEQ jumps.
    pub took_over: bool,
    /// The highest SEQ any peer announced.
    pub peer_seq_high: u32,
    /// The primary's group state to take (a secondary).
    pub adopt: Option<GroupState>,
    /// GM records learned from peers.
    pub learned: Vec<GmRecord>,
    /// The other side's states after a partition healed (a primary merges).
    pub merge: Vec<GroupState>,
    /// New GMs are refused for now (a secondary without its primary's keys).
    pub blocking: bool,
}

/// How far above the highest SEQ it heard a key server that takes over
/// starts: the dead primary may have sent rekeys after its last
/// announcement heard (it announces at once after each, so only the
/// rekeys of a lost announcement's interval count); GMs take any SEQ above
/// the last, so the gap costs nothing (docs/COOP.md, "SEQ across a
/// takeover").
pub const TAKEOVER_SEQ_GAP: u32 = 1000;

/// The options of group `group_id` every key server must share, from its
/// policy in the engine (None: the engine does not serve the group).
fn options_of(groups: &GroupTable, group_id: u32) -> Option<CoopOptions> {
    let g = groups.get(groups.index(group_id)?)?;
    let (ack_option, kek_ack_requested) = match g.rekey.transport {
        crate::rekey::RekeyTransport::Multicast { .. } => (0, false),
        crate::rekey::RekeyTransport::Unicast { .. } => (
            match g.rekey.ack {
                gkm_model::AckOption::Cisco => 1,
                gkm_model::AckOption::Interoperable => 2,
                gkm_model::AckOption::Any => 3,
            },
            crate::ack_policy::kek_ack_requested(g.rekey.ack, crate::engine::GmClass::NonCisco)
                .is_some(),
        ),
    };
    Some(CoopOptions {
        d3p_window_ms: g.d3p_window_ms,
        ack_option,
        kek_ack_requested,
    })
}

/// Every COOP group of the key server.
#[derive(Default)]
pub(crate) struct CoopPart {
    groups: Vec<CoopGroup>,
    /// COOP messages refused, by reason ([`CoopDrop::kind`]), all groups.
    refused: BTreeMap<&'static str, u64>,
}

fn election_header(a: &CoopAnnouncement) -> AnnouncementHeader {
    AnnouncementHeader {
        role: match a.role {
            CoopRole::Primary => Role::Primary,
            CoopRole::Secondary => Role::Secondary,
        },
        rank: Rank {
            priority: a.priority,
            addr: a.addr,
        },
        epoch: a.epoch,
        seq: a.seq,
        stepped_down_from: a.stepped_down_from,
    }
}

fn wire_announcement(group_id: u32, h: &AnnouncementHeader) -> CoopAnnouncement {
    let vid = own_vendor_id();
    CoopAnnouncement {
        role: match h.role {
            Role::Primary => CoopRole::Primary,
            Role::Secondary => CoopRole::Secondary,
        },
        priority: h.rank.priority,
        epoch: h.epoch,
        seq: h.seq,
        stepped_down_from: h.stepped_down_from,
        reply_requested: false,
        connect_again: false,
        group_id,
        version: vid.version,
        features: vid.features,
        part: 0,
        parts: 1,
        addr: h.rank.addr,
    }
}

impl CoopPart {
    /// Starts (or restarts, with a new configuration) a group's COOP.
    pub fn set_group(
        &mut self,
        now: Millis,
        cfg: CoopGroupConfig,
        dh_backend: DhBackend,
        own_certificate: Option<&OwnCertificate>,
        journal: u64,
    ) {
        self.remove_group(cfg.group_id);
        let election = Election::new(
            ElectionConfig {
                local: Rank {
                    priority: cfg.priority,
                    addr: cfg.local_addr,
                },
                peers: cfg.peers.iter().map(|p| p.addr.ip()).collect(),
                refresh_ms: cfg.refresh_ms,
                check_ms: cfg.check_ms,
                dead_periods: cfg.dead_periods,
            },
            cfg.persisted_epoch,
            cfg.seq_start,
            now,
        );
        let sessions = cfg
            .peers
            .iter()
            .map(|p| {
                let auth = match &p.auth {
                    CoopPeerAuth::Psk(k) => SessionAuth::Psk(k.clone()),
                    CoopPeerAuth::Certificate { subject } => SessionAuth::Certificate {
                        own: own_certificate.cloned().map(Box::new),
                        subject: subject.clone(),
                    },
                };
                Session::new(p.addr, auth, cfg.local_addr, dh_backend, now)
            })
            .collect();
        self.groups.push(CoopGroup {
            cfg,
            election,
            sessions,
            primary_options: None,
            mismatches: Vec::new(),
            peer_seq_high: 0,
            acted_role: None,
            adopt: None,
            key_differs: false,
            gms: GmSync::new(journal),
            last_part: HashMap::new(),
            gm_flush_at: None,
            stepped_state: None,
            blocking: true,
            merge: Vec::new(),
            merged: HashMap::new(),
            not_a_peer: 0,
        });
    }

    /// What the engine must act on: each group's role, a takeover, the
    /// peers' highest SEQ and a primary's state to take.
    pub fn sync(&mut self) -> Vec<CoopSync> {
        self.groups
            .iter_mut()
            .map(|g| {
                let role = g.election.role();
                let took_over = role == Role::Primary && g.acted_role != Some(Role::Primary);
                g.acted_role = Some(role);
                CoopSync {
                    group_id: g.cfg.group_id,
                    role,
                    took_over,
                    peer_seq_high: g.peer_seq_high,
                    adopt: g.adopt.take().filter(|_| role == Role::Secondary),
                    learned: std::mem::take(&mut g.gms.learned),
                    merge: std::mem::take(&mut g.merge),
                    blocking: {
                        if role == Role::Primary {
                            g.blocking = false;
                        }
                        g.blocking
                    },
                }
            })
            .collect()
    }

    /// A GM registered here, or one learned from a peer that the engine
    /// took: it goes to the peers with the next announcements.
    pub fn gm_recorded(&mut self, now: Millis, record: &GmRecord) {
        if let Some(g) = self
            .groups
            .iter_mut()
            .find(|g| g.cfg.group_id == record.group_id)
        {
            g.gms.record(record);
            g.gm_flush_at.get_or_insert(now + GM_FLUSH_MS);
        }
    }

    /// The engine could not act on a takeover yet: the next
    /// [`CoopPart::sync`] reports it again.
    pub fn defer_takeover(&mut self, group_id: u32) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.cfg.group_id == group_id) {
            g.acted_role = None;
        }
    }

    /// Whether the followed primary's rekey-signing key differs from this
    /// key server's (raised or cleared as a mismatch).
    pub fn set_key_differs(
        &mut self,
        group_id: u32,
        differs: bool,
        groups: &GroupTable,
        out: &mut KsOutbox,
    ) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.cfg.group_id == group_id) {
            g.key_differs = differs;
            g.check(options_of(groups, group_id), out);
        }
    }

    /// The group's state changed on this key server (a rekey went out):
    /// a primary announces at once, so its secondaries hold the new keys.
    pub fn announce_now(
        &mut self,
        now: Millis,
        group_id: u32,
        groups: &GroupTable,
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
    ) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.cfg.group_id == group_id) {
            if g.election.role() == Role::Primary {
                g.election.announce_now(now);
                g.drain(now, groups, rng, out);
            }
        }
    }

    /// Stops a group's COOP.
    /// Gives back states to merge that the engine could not act on yet (a
    /// rekey waiting to be persisted): the next sync hands them out again.
    pub fn requeue_merge(&mut self, group_id: u32, states: Vec<GroupState>) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.cfg.group_id == group_id) {
            g.merge.extend(states);
        }
    }

    pub fn remove_group(&mut self, group_id: u32) {
        self.groups.retain(|g| g.cfg.group_id != group_id);
    }

    /// The role in a group with COOP (None: the group has none).
    pub fn role(&self, group_id: u32) -> Option<Role> {
        self.group(group_id).map(|g| g.election.role())
    }

    fn group(&self, group_id: u32) -> Option<&CoopGroup> {
        self.groups.iter().find(|g| g.cfg.group_id == group_id)
    }

    /// When the part next needs time.
    pub fn deadline(&self) -> Option<Millis> {
        self.groups
            .iter()
            .flat_map(|g| {
                [Some(g.election.poll_timeout()), g.gm_flush_at]
                    .into_iter()
                    .chain(g.sessions.iter().map(Session::deadline))
            })
            .flatten()
            .min()
    }

    /// Runs the elections' timers and the sessions' retransmissions.
    pub fn handle_timeout(
        &mut self,
        now: Millis,
        groups: &GroupTable,
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
    ) {
        for g in &mut self.groups {
            g.election.handle_timeout(now);
            if g.gm_flush_at.is_some_and(|t| now >= t) {
                g.gm_flush_at = None;
                g.election.announce_now(now);
            }
            for s in &mut g.sessions {
                let o = s.handle_timeout(now, rng);
                deliver(g.cfg.group_id, s.peer, o, out);
            }
            g.drain(now, groups, rng, out);
        }
    }

    /// A group's policy changed: its options are compared with the
    /// primary's again.
    pub fn recheck(&mut self, groups: &GroupTable, out: &mut KsOutbox) {
        for g in &mut self.groups {
            g.check(options_of(groups, g.cfg.group_id), out);
        }
    }

    /// The caller persisted `epoch` for the group.
    pub fn epoch_persisted(
        &mut self,
        now: Millis,
        group_id: u32,
        epoch: u64,
        groups: &GroupTable,
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
    ) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.cfg.group_id == group_id) {
            g.election.epoch_persisted(now, epoch);
            g.drain(now, groups, rng, out);
        }
    }

    /// Whether a main mode message answers an exchange a session started.
    pub fn owns_main_mode(&self, header: &IsakmpHeader) -> bool {
        header.responder_cookie != [0; 8]
            && self.groups.iter().any(|g| {
                g.sessions
                    .iter()
                    .any(|s| s.connecting_cookie() == Some(header.initiator_cookie))
            })
    }

    /// A main mode message for an exchange a session started.
    pub fn handle_main_mode(
        &mut self,
        d: Incoming<'_>,
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
    ) {
        for g in &mut self.groups {
            let group_id = g.cfg.group_id;
            let Some(s) = g.sessions.iter_mut().find(|s| {
                s.connecting_cookie() == Some(d.header.initiator_cookie) && s.peer == d.from
            }) else {
                continue;
            };
            let o = s.handle_main_mode(d.now, d.header, d.data, rng);
            deliver(group_id, s.peer, o, out);
            return;
        }
    }

    /// A GKM-COOP message: an announcement from a peer over the SA it
    /// initiated.
    pub fn handle_message(
        &mut self,
        d: Incoming<'_>,
        phase1: &Phase1Responder,
        groups: &GroupTable,
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
    ) {
        let Incoming {
            now,
            from,
            header,
            data,
        } = d;
        let refused = &mut self.refused;
        let mut drop = |out: &mut KsOutbox, reason: CoopDrop| {
            *refused.entry(reason.kind()).or_default() += 1;
            out.event(KsEvent::Coop(CoopEvent::Dropped { from, reason }));
        };
        let key = cookies(&header.initiator_cookie, &header.responder_cookie);
        let Some(sa) = phase1.established(&key).filter(|sa| sa.peer == from) else {
            // From a peer's address: it sends over an SA this key server
            // lost (a restart); its next announcement to the peer asks
            // for a new one (flag 0x04), the only way the peer learns it.
            for g in &mut self.groups {
                for s in g.sessions.iter_mut().filter(|s| s.peer == from) {
                    s.peer_sa_lost = true;
                }
            }
            return drop(out, CoopDrop::NoSa);
        };
        let iv = phase2_iv(
            sa.suite.cipher,
            sa.suite.prf,
            sa.last_block,
            header.message_id,
        );
        let Ok(dec) = decrypt_message(data, sa.suite.cipher, &sa.keys.enc_key, &iv) else {
            return drop(out, CoopDrop::Undecryptable);
        };
        let Ok(raws) = verify_hashed_chain(
            sa.suite.prf,
            &sa.keys.skeyid_a,
            &dec.header,
            &dec.plaintext,
            &[],
        ) else {
            return drop(out, CoopDrop::BadHash);
        };
        let Some(body) = raws
            .iter()
            .find(|r| r.payload_type == PayloadType::GKM_COOP_ANNOUNCEMENT)
            .map(|r| r.body)
        else {
            return drop(out, CoopDrop::Malformed("coop: no announcement".into()));
        };
        let ann = match CoopAnnouncement::parse(body) {
            Ok(a) => a,
            Err(e) => return drop(out, CoopDrop::Malformed(e.to_string())),
        };
        let Some(g) = self
            .groups
            .iter_mut()
            .find(|g| g.cfg.group_id == ann.group_id)
        else {
            return drop(out, CoopDrop::UnknownGroup(ann.group_id));
        };
        let session = g.sessions.iter_mut().find(|s| s.peer.ip() == from.ip());
        let Some(session) =
            session.filter(|s| s.authenticated_by(ann.group_id, sa.credentials, sa.cert_subject))
        else {
            g.not_a_peer += 1;
            return drop(out, CoopDrop::NotAPeer);
        };
        // Authenticated by this peer's pair PSK: whatever the election
        // makes of it, a new SA from the peer is worth knowing.
        session.peer_sa_seen(key, now);
        if ann.connect_again {
            session.connect_again(now);
        }
        if ann.reply_requested {
            session.counters.ann_received_reply_request += 1;
        }
        let gms_payload = raws
            .iter()
            .find(|r| r.payload_type == PayloadType::GKM_COOP_GMS)
            .map(|r| CoopGms::parse(r.body));
        let gms = match gms_payload {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) => return drop(out, CoopDrop::Malformed(e.to_string())),
            None => None,
        };
        if ann.part > 0 {
            // A later part: only the GM records it carries, and only as
            // the next part of the announcement the election took last.
            let last = g.last_part.get(&from.ip()).copied();
            if last.is_none_or(|(seq, part)| seq != ann.seq || part >= ann.part) {
                session.counters.recv_drops += 1;
                return drop(out, CoopDrop::PartOutOfOrder);
            }
            g.last_part.insert(from.ip(), (ann.seq, ann.part));
            session.counters.ann_received += 1;
            session.counters.bytes_received += data.len() as u64;
            if let Some(m) = gms {
                g.gms.incoming(ann.group_id, from.ip(), m, false);
            }
            if ann.reply_requested {
                g.election.announce_to(from.ip());
            }
            return g.drain(now, groups, rng, out);
        }
        match g
            .election
            .handle_announcement(now, from.ip(), election_header(&ann))
        {
            Ok(()) => {
                g.last_part.insert(from.ip(), (ann.seq, 0));
                // The peer's acknowledgement moved the window with more to
                // send, or it asks for an answer (more parts are coming
                // its way): announce to it at once rather than at the
                // refresh (to it alone: answers never fan out).
                let moved = gms.is_some_and(|m| g.gms.incoming(ann.group_id, from.ip(), m, true));
                if (moved && g.gms.pending_for(from.ip())) || ann.reply_requested {
                    g.election.announce_to(from.ip());
                }
                session.counters.ann_received += 1;
                session.counters.bytes_received += data.len() as u64;
                session.peer_software = Some((ann.version, ann.features));
                // The followed primary's options, compared with ours.
                let from_primary = ann.role == CoopRole::Primary
                    && g.election.role() == Role::Secondary
                    && g.election.primary() == Some(from.ip());
                let options = raws
                    .iter()
                    .find(|r| r.payload_type == PayloadType::GKM_COOP_OPTIONS)
                    .map(|r| CoopOptions::parse(r.body));
                match options {
                    Some(Ok(o)) if from_primary => {
                        g.primary_options = Some((from.ip(), o));
                        g.check(options_of(groups, ann.group_id), out);
                    }
                    Some(Err(e)) => drop(out, CoopDrop::Malformed(e.to_string())),
                    _ => {}
                }
                let payload = |t| raws.iter().find(|r| r.payload_type == t).map(|r| r.body);
                match payload(PayloadType::GKM_COOP_SEQ).map(CoopSeq::parse) {
                    Some(Ok(s)) => g.peer_seq_high = g.peer_seq_high.max(s.highest),
                    Some(Err(e)) => drop(out, CoopDrop::Malformed(e.to_string())),
                    None => {}
                }
                let state = payload(PayloadType::GKM_COOP_GROUP_STATE)
                    .map(|b| crate::group_state::decode(ann.group_id, b));
                let leading = g.election.role() == Role::Primary;
                match state {
                    Some(Ok((_, s))) if from_primary => {
                        let merged = match g.stepped_state.as_mut() {
                            Some((_, at @ None)) => {
                                *at = Some(s.rekeys_sent);
                                false
                            }
                            Some((own, Some(at))) => {
                                s.rekeys_sent > *at && s.keys.seq > own.keys.seq
                            }
                            None => false,
                        };
                        if merged {
                            g.stepped_state = None;
                        }
                        g.blocking = false;
                        g.adopt = Some(s);
                    }
                    // Another side's state (a lesser primary, or one that
                    // stepped down): GMs hold its KEK, which the next
                    // rekey must also go out under, once.
                    Some(Ok((_, s))) if leading => {
                        let kek_of = |s: &GroupState| s.push_kek.as_ref().map(|k| k.spi);
                        let own = groups
                            .index(ann.group_id)
                            .and_then(|gi| groups.state(gi))
                            .map(|o| [kek_of(o), o.keys.kek.as_ref().map(|k| k.spi)]);
                        if let Some(spi) = kek_of(&s) {
                            let known = own.is_some_and(|o| o.contains(&Some(spi)));
                            let seq = s.keys.seq;
                            let newer = g.merged.get(&spi).is_none_or(|m| seq > *m);
                            if !known && newer {
                                g.merged.insert(spi, seq);
                                g.merge.push(s);
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        drop(out, CoopDrop::Malformed(format!("coop group state: {e}")))
                    }
                    None => {}
                }
            }
            Err(d) => {
                session.counters.recv_drops += 1;
                drop(out, CoopDrop::Election(d));
            }
        }
        g.drain(now, groups, rng, out);
    }
}

impl CoopGroup {
    /// Compares this key server's options (`own`) with the followed
    /// primary's last announcement: each difference raised once, each
    /// raised one cleared when they match again (or no primary's options
    /// are known).
    fn check(&mut self, own: Option<CoopOptions>, out: &mut KsOutbox) {
        let key_differs = self.key_differs;
        let differs = |kind| match (own, self.primary_options.map(|(_, o)| o)) {
            (_, _) if kind == CoopMismatch::RekeySigningKey => key_differs,
            (Some(a), Some(b)) => match kind {
                CoopMismatch::D3p => a.d3p_window_ms != b.d3p_window_ms,
                CoopMismatch::RekeyAck => a.ack_option != b.ack_option,
                CoopMismatch::RekeySigningKey => key_differs,
            },
            _ => false,
        };
        for kind in [
            CoopMismatch::D3p,
            CoopMismatch::RekeyAck,
            CoopMismatch::RekeySigningKey,
        ] {
            let now = differs(kind);
            let was = self.mismatches.contains(&kind);
            if now == was {
                continue;
            }
            if now {
                self.mismatches.push(kind);
            } else {
                self.mismatches.retain(|k| *k != kind);
            }
            out.event(KsEvent::Coop(CoopEvent::Mismatch {
                group_id: self.cfg.group_id,
                kind,
                raised: now,
            }));
        }
    }

    /// Acts on what the election decided: announcements to the sessions,
    /// the rest to the caller.
    fn drain(
        &mut self,
        now: Millis,
        groups: &GroupTable,
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
    ) {
        let group_id = self.cfg.group_id;
        while let Some(ev) = self.election.poll_event() {
            let ev = match ev {
                ElectionEvent::Announce { to, header } => {
                    self.announce(now, to, &header, groups, rng, out);
                    continue;
                }
                ElectionEvent::PersistEpoch(epoch) => CoopEvent::PersistEpoch { group_id, epoch },
                ElectionEvent::RoleChanged {
                    role,
                    epoch,
                    primary,
                } => {
                    // Options are compared with the followed primary's
                    // only: when this key server leads, or follows another
                    // (or none), the new one must announce its own.
                    if role == Role::Secondary && self.acted_role == Some(Role::Primary) {
                        self.stepped_state = groups
                            .index(group_id)
                            .and_then(|gi| groups.state(gi))
                            .cloned()
                            .map(|s| (s, None));
                    }
                    let source = self.primary_options.map(|(a, _)| a);
                    if role == Role::Primary || primary != source {
                        self.primary_options = None;
                        self.key_differs = false;
                        self.check(None, out);
                    }
                    CoopEvent::RoleChanged {
                        group_id,
                        role,
                        epoch,
                        primary,
                    }
                }
                ElectionEvent::Merged { with } => CoopEvent::Merged { group_id, with },
            };
            out.event(KsEvent::Coop(ev));
        }
    }
}

/// A session's outputs: datagrams to the peer, SA events to the caller.
fn deliver(group_id: u32, peer: SocketAddr, outputs: Vec<SessionOutput>, out: &mut KsOutbox) {
    for o in outputs {
        match o {
            SessionOutput::Send(d) => out.send(peer, d),
            SessionOutput::Established => out.event(KsEvent::Coop(CoopEvent::PeerSa {
                group_id,
                peer,
                failed: None,
            })),
            SessionOutput::Failed(why) => out.event(KsEvent::Coop(CoopEvent::PeerSa {
                group_id,
                peer,
                failed: Some(why),
            })),
        }
    }
}
