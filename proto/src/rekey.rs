//! Rekeying on the key server (RFC 6407 section 4; seed sections 2-3):
//! scheduling, GROUPKEY-PUSH fan-out, ACK intake, retransmission and
//! removal after [`MAX_MISSED_ACKS`] consecutive misses.
//!
//! A rekey happens in two steps so that a SEQ is never reused across a
//! crash: the engine *prepares* it (new keys and SEQ, nothing sent) and
//! emits [`KsEvent::RekeyPrepared`]; the caller makes
//! [`KeyServer::group_state`] durable and calls
//! [`KeyServer::rekey_persisted`]; only then does a GROUPKEY-PUSH leave.
//! Every GM of a class receives the same octets: a push is signed once per
//! distinct (KEK_ACK_REQUESTED, ATD) variant, not once per GM.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use gkm_wire::consts::{AckRequested, Doi, ExchangeType, GdoiProtocol};
use gkm_wire::payload::{Delete, Sa, Seq};
use gkm_wire::{IsakmpHeader, Payload};

use crate::ack::{open_rfc8263_ack, open_unicast_ack};
use crate::ack_policy::{atd_applies, AckKind, AckOption};
pub use crate::ack_tracker::MAX_MISSED_ACKS;
use crate::ack_tracker::{AckOutcome, AckTracker, RoundOutcome};
use crate::engine::{GmClass, Millis};
use crate::group::{GroupKeys, Kek, Tek};
use crate::ks::{GmRecord, KeyServer, KsEvent, KsGroup, Reject};
use crate::policy::activation_time_delay;
use crate::push::seal_push;

/// How a group's rekeys travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyTransport {
    /// One GROUPKEY-PUSH per GM, sent `1 + retransmits` times at most,
    /// `interval_ms` apart, to GMs that have not acknowledged it.
    Unicast {
        /// Retransmissions after the first send.
        retransmits: u32,
        /// Time between transmissions, and the ACK wait after the last one.
        interval_ms: u64,
    },
    /// One GROUPKEY-PUSH to a multicast group (no ACKs, seed section 3).
    Multicast {
        /// Group address and port.
        group: SocketAddrV4,
        /// IP TTL the driver sets on multicast rekeys.
        ttl: u8,
    },
}

impl RekeyTransport {
    /// Whether rekeys are unicast.
    pub fn is_unicast(&self) -> bool {
        matches!(self, Self::Unicast { .. })
    }
}

/// A group's rekey policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Unicast or multicast.
    pub transport: RekeyTransport,
    /// `rekey acknowledgement {cisco | interoperable | any}` (unicast only).
    pub ack: AckOption,
    /// Rekey the TEKs this long before they expire.
    pub tek_rekey_before_ms: u64,
    /// Rekey the KEK this long before it expires.
    pub kek_rekey_before_ms: u64,
}

impl Default for RekeyPolicy {
    /// Unicast, 2 retransmissions 10 s apart, `cisco` ACKs, rekeys 90 s
    /// before expiry.
    fn default() -> Self {
        Self {
            transport: RekeyTransport::Unicast {
                retransmits: 2,
                interval_ms: 10_000,
            },
            ack: AckOption::Cisco,
            tek_rekey_before_ms: 90_000,
            kek_rekey_before_ms: 90_000,
        }
    }
}

/// Why a rekey happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RekeyReason {
    /// The TEKs are about to expire.
    TekExpiry,
    /// The KEK is about to expire (new KEK, same TEKs).
    KekExpiry,
    /// An operator asked for a TEK rekey now.
    Manual,
    /// "rekey replace": new KEK and TEKs now, the old TEKs deleted at once
    /// (used when GMs must see a policy change, e.g. CMD <-> IP-D3P).
    Replace,
}

impl core::fmt::Display for RekeyReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::TekExpiry => "tek-expiry",
            Self::KekExpiry => "kek-expiry",
            Self::Manual => "manual",
            Self::Replace => "replace",
        })
    }
}

/// Why a rekey request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RekeyError {
    /// No such group.
    #[error("no group with identity {0}")]
    UnknownGroup(u32),
    /// The group has no KEK, so it cannot be rekeyed (registration only).
    #[error("group {0} has no KEK: it cannot be rekeyed")]
    NoKek(u32),
    /// The KS has no rekey-signing key.
    #[error("the key server has no rekey-signing key")]
    NoSigner,
    /// SEQ would wrap: the group must be re-created.
    #[error("group {0}: the rekey SEQ is exhausted")]
    SeqExhausted(u32),
    /// `rekey_persisted` named a SEQ that is not the prepared one.
    #[error("group {group}: SEQ {seq} is not the prepared rekey")]
    NotPrepared {
        /// Group.
        group: u32,
        /// SEQ given.
        seq: u32,
    },
}

/// A group's key state as it must survive a restart: the caller persists
/// it on [`KsEvent::RekeyPrepared`] (before anything is sent) and on
/// [`KsEvent::RekeySent`], and hands it back in `KsGroup::resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// Current keys; `keys.seq` is the last SEQ used.
    pub keys: GroupKeys,
    /// The KEK GMs hold now: the next GROUPKEY-PUSH is encrypted under it.
    pub push_kek: Option<Kek>,
    /// Earlier TEKs still valid for receiving, with their expiry.
    pub previous_teks: Vec<(Tek, Millis)>,
    /// When the current TEKs expire.
    pub tek_expires_at: Millis,
    /// When the current KEK expires.
    pub kek_expires_at: Millis,
    /// Rekeys sent so far (`show crypto gkm ks rekey`).
    pub rekeys_sent: u64,
}

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
    transmissions: u32,
    next_at: Millis,
    /// When the rekey was prepared, for the time to full acknowledgement.
    prepared_at: Millis,
    /// GMs the push was sent to, and how many have acknowledged it.
    targets: usize,
    acked: usize,
}

/// The KS's per-group rekey runtime.
#[derive(Default)]
pub(crate) struct GroupRuntime {
    members: HashMap<String, GmRecord>,
    /// GM address (registration source and IPv4 identity) → identity, for ACKs.
    by_addr: HashMap<Ipv4Addr, String>,
    tracker: AckTracker,
    state: Option<GroupState>,
    pending: Option<Pending>,
    queued: Option<RekeyReason>,
    round: Option<Round>,
    /// The group was deleted: no registrations, no rekeys (its index stays
    /// so exchanges in flight never point at another group).
    disabled: bool,
}

/// What `show crypto gkm ks rekey` shows for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyStatus {
    /// `Acknowledgement Type In-Use`: Cisco, Interoperable, Any, or None (multicast).
    pub ack_type_in_use: &'static str,
    /// `Number of Rekeys sent`.
    pub rekeys_sent: u64,
    /// SEQ of the last rekey (the group's current SEQ).
    pub seq: u32,
    /// GMs registered and tracked.
    pub gms: usize,
    /// GMs one miss away from removal.
    pub gms_at_risk: usize,
}

/// What `show crypto gkm ks policy` shows for a group's KEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekPolicyStatus {
    /// Number of TEKs.
    pub teks: usize,
    /// Current SEQ.
    pub seq: u32,
    /// `Unicast` or `Multicast`.
    pub transport: &'static str,
    /// KEK SPI, 16 octets.
    pub spi: [u8; 16],
    /// Management algorithm.
    pub management_algorithm: &'static str,
    /// Encryption algorithm, e.g. `AES`.
    pub encryption_algorithm: &'static str,
    /// IV length in octets.
    pub iv_len: usize,
    /// Key size in bits.
    pub key_size_bits: u16,
    /// Original lifetime in seconds.
    pub original_lifetime_secs: u32,
    /// Remaining lifetime in seconds.
    pub remaining_lifetime_secs: u64,
    /// Seconds until the next scheduled rekey (TEK or KEK, whichever first).
    pub time_to_rekey_secs: u64,
    /// Signature hash algorithm.
    pub sig_hash_algorithm: &'static str,
    /// Signature algorithm.
    pub sig_algorithm: &'static str,
    /// Signature key length in bits.
    pub sig_key_bits: u16,
    /// Signature size in octets.
    pub sig_size: usize,
    /// Signature key name.
    pub sig_key_name: String,
    /// `cisco`, `interoperable`, `any`, or `none` for multicast.
    pub acknowledgement: &'static str,
}

fn secs_left(until: Millis, now: Millis) -> u64 {
    until.saturating_sub(now) / 1000
}

fn ipv4(addr: SocketAddr) -> Option<Ipv4Addr> {
    match addr.ip() {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

impl GroupRuntime {
    fn state(&self) -> Option<&GroupState> {
        self.state.as_ref()
    }

    /// When this group next needs `handle_timeout`.
    fn next_deadline(&self, policy: &crate::rekey::RekeyPolicy) -> Option<Millis> {
        let round = self.round.as_ref().map(|r| r.next_at);
        let due = match (&self.state, &self.pending) {
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

/// Whether two key sets have the same shape (selectors, transforms,
/// lifetimes, KEK parameters): if not, GMs need a rekey replace.
fn same_key_policy(a: &GroupKeys, b: &GroupKeys) -> bool {
    let tek = |k: &GroupKeys| -> Vec<_> {
        k.teks
            .iter()
            .map(|t| (t.src, t.dst, t.transform, t.key.len(), t.lifetime_secs))
            .collect()
    };
    tek(a) == tek(b) && a.kek.as_ref().map(Kek::params) == b.kek.as_ref().map(Kek::params)
}

impl KeyServer {
    pub(crate) fn group_index(&self, group_id: u32) -> Option<usize> {
        self.cfg
            .groups
            .iter()
            .zip(&self.runtime)
            .position(|(g, rt)| g.keys.group_id == group_id && !rt.disabled)
    }

    /// The index of a group the KS serves now.
    pub(crate) fn serving_index(&self, group_id: u32) -> Option<usize> {
        self.group_index(group_id)
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
        if !self.rekey_state_ready {
            self.init_rekey_state(now);
        }
        let id = group.keys.group_id;
        let existing = self.cfg.groups.iter().position(|g| g.keys.group_id == id);
        let Some(gi) = existing else {
            self.wire.push(crate::ks::GroupWire::encode(
                group.keys.clone(),
                group.d3p_window_ms,
            ));
            self.cfg.groups.push(group);
            self.runtime.push(GroupRuntime::default());
            self.init_rekey_state(now);
            return Ok(None);
        };
        let was_disabled = self.runtime.get(gi).is_some_and(|rt| rt.disabled);
        let Some(old) = self.cfg.groups.get(gi) else {
            return Err(RekeyError::UnknownGroup(id));
        };
        let keys_changed = !same_key_policy(&old.keys, &group.keys);
        // GMs learn the ACK option and the IP-D3P window from a rekey.
        let ack_changed =
            old.rekey.ack != group.rekey.ack || old.d3p_window_ms != group.d3p_window_ms;
        let Some(rt) = self.runtime.get_mut(gi) else {
            return Err(RekeyError::UnknownGroup(id));
        };
        rt.disabled = false;
        if keys_changed || was_disabled {
            // New shape: the new keys become current, continuing the SEQ;
            // the TEKs GMs hold stay listed so the replace deletes them.
            if let Some(st) = rt.state.as_mut() {
                let old_teks: Vec<(Tek, Millis)> = st
                    .keys
                    .teks
                    .iter()
                    .map(|t| (t.clone(), st.tek_expires_at))
                    .collect();
                st.previous_teks.extend(old_teks);
                group.keys.seq = st.keys.seq;
                st.keys = group.keys.clone();
            }
        } else {
            group.keys = old.keys.clone();
        }
        group.resume = None;
        if let Some(g) = self.cfg.groups.get_mut(gi) {
            *g = group;
        }
        self.refresh_wire(now);
        let reason = if keys_changed || replace || was_disabled {
            Some(RekeyReason::Replace)
        } else if ack_changed {
            Some(RekeyReason::Manual)
        } else {
            None
        };
        if let Some(r) = reason {
            self.prepare(now, gi, r)?;
        }
        Ok(reason)
    }

    /// Stops serving a group (deleted): no registrations, no rekeys; its GM
    /// database is dropped.
    pub fn disable_group(&mut self, group_id: u32) -> bool {
        let Some(gi) = self.group_index(group_id) else {
            return false;
        };
        if let Some(rt) = self.runtime.get_mut(gi) {
            *rt = GroupRuntime {
                disabled: true,
                state: rt.state.take(),
                ..GroupRuntime::default()
            };
        }
        true
    }

    /// Removes a GM from the GM database on the operator's word (eject):
    /// no more rekeys until it registers again.
    pub fn eject(&mut self, group_id: u32, identity: &str) -> bool {
        let Some(rt) = self
            .group_index(group_id)
            .and_then(|gi| self.runtime.get_mut(gi))
        else {
            return false;
        };
        let Some(m) = rt.members.remove(identity) else {
            return false;
        };
        rt.by_addr.retain(|_, v| v != identity);
        rt.tracker.forget(identity);
        let _ = m;
        true
    }

    /// Sets up each group's rekey state the first time time is known.
    pub(crate) fn init_rekey_state(&mut self, now: Millis) {
        for (gi, g) in self.cfg.groups.iter_mut().enumerate() {
            let Some(rt) = self.runtime.get_mut(gi) else {
                continue;
            };
            if rt.state.is_some() {
                continue;
            }
            let state = match g.resume.take() {
                Some(s) => s,
                None => GroupState {
                    push_kek: g.keys.kek.clone(),
                    previous_teks: Vec::new(),
                    tek_expires_at: now
                        + g.keys
                            .teks
                            .iter()
                            .map(|t| u64::from(t.lifetime_secs) * 1000)
                            .min()
                            .unwrap_or(3_600_000),
                    kek_expires_at: now
                        + g.keys
                            .kek
                            .as_ref()
                            .map(|k| u64::from(k.lifetime_secs) * 1000)
                            .unwrap_or(u64::MAX / 4),
                    rekeys_sent: 0,
                    keys: g.keys.clone(),
                },
            };
            g.keys = state.keys.clone();
            rt.state = Some(state);
        }
        self.rekey_state_ready = true;
        self.refresh_wire(now);
    }

    /// The durable state of a group: with a prepared rekey, the state to
    /// persist before [`KeyServer::rekey_persisted`].
    pub fn group_state(&self, group_id: u32) -> Option<GroupState> {
        let rt = self.runtime.get(self.group_index(group_id)?)?;
        rt.pending
            .as_ref()
            .map(|p| p.state.clone())
            .or_else(|| rt.state.clone())
    }

    /// A GM that registered before a restart (from the caller's GM
    /// database): it receives unicast rekeys again.
    pub fn restore_member(&mut self, record: GmRecord) {
        let Some(gi) = self.group_index(record.group_id) else {
            return;
        };
        if let Some(max) = record.sids.iter().max() {
            let next = self.next_sid.entry(record.group_id).or_insert(1);
            *next = (*next).max(max.saturating_add(1));
        }
        self.member_registered(gi, record);
    }

    pub(crate) fn member_registered(&mut self, gi: usize, record: GmRecord) {
        let Some(rt) = self.runtime.get_mut(gi) else {
            return;
        };
        if let Some(old) = rt.members.get(&record.identity) {
            if let Some(a) = ipv4(old.addr) {
                rt.by_addr.remove(&a);
            }
        }
        if let Some(a) = ipv4(record.addr) {
            rt.by_addr.insert(a, record.identity.clone());
        }
        if let Ok(a) = record.identity.parse::<Ipv4Addr>() {
            rt.by_addr.insert(a, record.identity.clone());
        }
        rt.tracker.registered(&record.identity);
        rt.members.insert(record.identity.clone(), record);
    }

    /// The GMs of a group the KS rekeys (its GM database).
    pub fn members(&self, group_id: u32) -> impl Iterator<Item = &GmRecord> {
        self.group_index(group_id)
            .and_then(|gi| self.runtime.get(gi))
            .into_iter()
            .flat_map(|rt| rt.members.values())
    }

    /// Every group's GMs.
    pub fn all_members(&self) -> impl Iterator<Item = &GmRecord> {
        self.runtime.iter().flat_map(|rt| rt.members.values())
    }

    /// One GM's ACK state.
    pub fn member_ack_state(
        &self,
        group_id: u32,
        identity: &str,
    ) -> Option<crate::ack_tracker::AckState> {
        self.runtime
            .get(self.group_index(group_id)?)?
            .tracker
            .state(identity)
    }

    /// Whether a rekey of the group is in flight: prepared and not yet
    /// sent, queued behind one, or sent by unicast with GMs yet to
    /// acknowledge it (while its retransmissions last).
    pub fn rekey_in_flight(&self, group_id: u32) -> bool {
        self.group_index(group_id)
            .and_then(|gi| self.runtime.get(gi))
            .is_some_and(|rt| {
                rt.pending.is_some()
                    || rt.queued.is_some()
                    || rt.round.as_ref().is_some_and(|r| r.acked < r.targets)
            })
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
            .group_index(group_id)
            .ok_or(RekeyError::UnknownGroup(group_id))?;
        if !self.rekey_state_ready {
            self.init_rekey_state(now);
        }
        self.prepare(now, gi, reason)
    }

    fn prepare(&mut self, now: Millis, gi: usize, reason: RekeyReason) -> Result<(), RekeyError> {
        let Some(group) = self.cfg.groups.get(gi) else {
            return Err(RekeyError::UnknownGroup(0));
        };
        let group_id = group.keys.group_id;
        if self.cfg.rekey_signer.is_none() {
            return Err(RekeyError::NoSigner);
        }
        let Some(rt) = self.runtime.get_mut(gi) else {
            return Err(RekeyError::UnknownGroup(group_id));
        };
        if rt.pending.is_some() {
            rt.queued = Some(rt.queued.map_or(reason, |q| q.max(reason)));
            return Ok(());
        }
        let Some(cur) = rt.state.clone() else {
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
        let rng = self.rng.as_mut();
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
        let mut deleted = Vec::new();
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
        rt.pending = Some(Pending {
            reason,
            state,
            deleted,
            old_remaining_secs: secs_left(cur.tek_expires_at, now),
            new_teks,
            prepared_at: now,
        });
        self.out.event(KsEvent::RekeyPrepared {
            group_id,
            seq,
            reason,
        });
        Ok(())
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
            .group_index(group_id)
            .ok_or(RekeyError::UnknownGroup(group_id))?;
        let rt = self
            .runtime
            .get_mut(gi)
            .ok_or(RekeyError::UnknownGroup(group_id))?;
        if rt.pending.as_ref().map(|p| p.state.keys.seq) != Some(seq) {
            return Err(RekeyError::NotPrepared {
                group: group_id,
                seq,
            });
        }
        if rt.round.is_some() {
            self.close_round(gi);
        }
        let Some(rt) = self.runtime.get_mut(gi) else {
            return Err(RekeyError::UnknownGroup(group_id));
        };
        let Some(mut p) = rt.pending.take() else {
            return Err(RekeyError::NotPrepared {
                group: group_id,
                seq,
            });
        };
        let Some(push_kek) = p.state.push_kek.clone() else {
            return Err(RekeyError::NoKek(group_id));
        };
        let Some(group) = self.cfg.groups.get_mut(gi) else {
            return Err(RekeyError::UnknownGroup(group_id));
        };
        group.keys = p.state.keys.clone();
        let policy = group.rekey;
        let d3p = group.d3p_window_ms;
        let unicast = policy.transport.is_unicast();
        // Build one datagram per GM class that differs.
        let mut variants: BTreeMap<PushVariant, Shared> = BTreeMap::new();
        let mut datagrams = HashMap::new();
        for class in [GmClass::Cisco, GmClass::Asr9000, GmClass::NonCisco] {
            let ack_req = if unicast {
                policy.ack.kek_ack_requested(class)
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
                    let d = std::rc::Rc::new(self.build_push(&p, &push_kek, ack_req, atd, d3p)?);
                    variants.insert(key, d.clone());
                    d
                }
            };
            datagrams.insert(class, d);
        }
        let Some(rt) = self.runtime.get_mut(gi) else {
            return Err(RekeyError::UnknownGroup(group_id));
        };
        p.state.rekeys_sent += 1;
        p.state.push_kek = p.state.keys.kek.clone();
        let mut sent = 0usize;
        match policy.transport {
            RekeyTransport::Unicast { interval_ms, .. } => {
                for (id, m) in &rt.members {
                    if let Some(d) = datagrams.get(&m.class) {
                        rt.tracker.sent(id, seq);
                        self.out.transmit(crate::engine::Transmit {
                            to: m.addr,
                            payload: d.as_ref().clone(),
                        });
                        sent += 1;
                    }
                }
                rt.round = Some(Round {
                    seq,
                    kek: push_kek,
                    datagrams,
                    transmissions: 1,
                    next_at: now + interval_ms,
                    prepared_at: p.prepared_at,
                    targets: sent,
                    acked: 0,
                });
            }
            RekeyTransport::Multicast { group, .. } => {
                if let Some(d) = datagrams.get(&GmClass::NonCisco) {
                    self.out.transmit(crate::engine::Transmit {
                        to: SocketAddr::V4(group),
                        payload: d.as_ref().clone(),
                    });
                    sent = 1;
                }
            }
        }
        rt.state = Some(p.state);
        let queued = rt.queued.take();
        self.out.counters.rekeys_sent += 1;
        self.out.counters.push_datagrams += sent as u64;
        self.out.event(KsEvent::RekeySent {
            group_id,
            seq,
            reason: p.reason,
            datagrams: sent,
        });
        self.refresh_wire(now);
        if let Some(r) = queued {
            self.prepare(now, gi, r)?;
        }
        Ok(())
    }

    /// `HDR*, SEQ, [D], SA, KD, SIG` for one variant.
    fn build_push(
        &mut self,
        p: &Pending,
        push_kek: &Kek,
        ack_req: Option<AckRequested>,
        atd: Option<u16>,
        d3p_window_ms: Option<u32>,
    ) -> Result<Vec<u8>, RekeyError> {
        let keys = &p.state.keys;
        let material = keys.kek_material();
        let mut sa = keys.to_sa_with(ack_req);
        sa.gap = crate::ks::ks_gap(d3p_window_ms, atd);
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
        let signer = self.cfg.rekey_signer.as_ref().ok_or(RekeyError::NoSigner)?;
        seal_push(push_kek, signer, self.rng.as_mut(), &payloads).map_err(|_| RekeyError::NoSigner)
    }

    /// Rekey scheduling and round timers.
    pub(crate) fn rekey_timeout(&mut self, now: Millis) {
        if !self.rekey_state_ready {
            self.init_rekey_state(now);
        }
        for gi in 0..self.runtime.len() {
            let Some(policy) = self.cfg.groups.get(gi).map(|g| g.rekey) else {
                continue;
            };
            if self.runtime.get(gi).is_some_and(|rt| rt.disabled) {
                continue;
            }
            let round_due = self
                .runtime
                .get(gi)
                .and_then(|rt| rt.round.as_ref())
                .is_some_and(|r| now >= r.next_at);
            if round_due {
                self.round_timer(now, gi, policy);
            }
            let due = self
                .runtime
                .get(gi)
                .and_then(|rt| match (&rt.state, &rt.pending) {
                    (Some(s), None) => {
                        if now + policy.tek_rekey_before_ms >= s.tek_expires_at {
                            Some(RekeyReason::TekExpiry)
                        } else if now + policy.kek_rekey_before_ms >= s.kek_expires_at {
                            Some(RekeyReason::KekExpiry)
                        } else {
                            None
                        }
                    }
                    _ => None,
                });
            if let Some(reason) = due {
                // A group that cannot be rekeyed (no KEK, no signer) is not retried in a loop.
                if self.prepare(now, gi, reason).is_err() {
                    if let Some(s) = self.runtime.get_mut(gi).and_then(|rt| rt.state.as_mut()) {
                        s.tek_expires_at = u64::MAX / 4;
                        s.kek_expires_at = u64::MAX / 4;
                    }
                }
            }
        }
    }

    fn round_timer(&mut self, now: Millis, gi: usize, policy: RekeyPolicy) {
        let RekeyTransport::Unicast {
            retransmits,
            interval_ms,
        } = policy.transport
        else {
            return;
        };
        let Some(rt) = self.runtime.get_mut(gi) else {
            return;
        };
        let Some(round) = rt.round.as_mut() else {
            return;
        };
        if round.transmissions > retransmits {
            return self.close_round(gi);
        }
        round.transmissions += 1;
        round.next_at = now + interval_ms;
        let seq = round.seq;
        let mut resent = 0u64;
        for id in rt.tracker.unacknowledged(seq) {
            if let Some(m) = rt.members.get(id) {
                if let Some(d) = round.datagrams.get(&m.class) {
                    self.out.transmit(crate::engine::Transmit {
                        to: m.addr,
                        payload: d.as_ref().clone(),
                    });
                    resent += 1;
                }
            }
        }
        self.out.counters.push_datagrams += resent;
        self.out.counters.push_retransmits += resent;
    }

    /// Ends the ACK wait of the open round: misses counted, the third
    /// consecutive one removes the GM from the GM database.
    fn close_round(&mut self, gi: usize) {
        let group_id = self.cfg.groups.get(gi).map_or(0, |g| g.keys.group_id);
        let Some(rt) = self.runtime.get_mut(gi) else {
            return;
        };
        let Some(round) = rt.round.take() else {
            return;
        };
        let (mut acked, mut missed, mut removed) = (0usize, 0usize, 0usize);
        for (id, outcome) in rt.tracker.close_round(round.seq) {
            match outcome {
                RoundOutcome::Acked => acked += 1,
                RoundOutcome::Missed(_) => missed += 1,
                RoundOutcome::Removed => {
                    removed += 1;
                    if let Some(m) = rt.members.remove(&id) {
                        rt.by_addr.retain(|_, v| *v != id);
                        self.out.event(KsEvent::GmRemoved {
                            group_id,
                            identity: id,
                            addr: m.addr,
                            seq: round.seq,
                        });
                    }
                }
            }
        }
        self.out.counters.gms_removed += removed as u64;
        self.out.event(KsEvent::RekeyRoundClosed {
            group_id,
            seq: round.seq,
            acked,
            missed,
            removed,
        });
    }

    /// The earliest rekey deadline of any group.
    pub(crate) fn rekey_deadline(&self) -> Option<Millis> {
        if !self.rekey_state_ready {
            return (!self.cfg.groups.is_empty()).then_some(0);
        }
        self.runtime
            .iter()
            .zip(&self.cfg.groups)
            .filter_map(|(rt, g)| rt.next_deadline(&g.rekey))
            .min()
    }

    /// An RFC 8263 ACK (exchange 35) or GKM unicast ACK (exchange 240).
    pub(crate) fn on_ack(
        &mut self,
        now: Millis,
        from: SocketAddr,
        header: &IsakmpHeader,
        data: &[u8],
    ) {
        let kind = if header.exchange_type == ExchangeType::GROUPKEY_PUSH_ACK {
            AckKind::Rfc8263
        } else {
            AckKind::CiscoUnicast
        };
        let spi = header.kek_spi();
        let Some(gi) = self.runtime.iter().position(|rt| {
            rt.round.as_ref().is_some_and(|r| r.kek.spi == spi)
                || rt
                    .state
                    .as_ref()
                    .and_then(|s| s.push_kek.as_ref())
                    .is_some_and(|k| k.spi == spi)
        }) else {
            return self.reject(from, Reject::UnknownExchange, None);
        };
        let Some(option) = self.cfg.groups.get(gi).map(|g| g.rekey.ack) else {
            return;
        };
        if option.accepts(kind).is_err() {
            return self.reject(from, Reject::AckNotAccepted, None);
        }
        let Some(rt) = self.runtime.get_mut(gi) else {
            return;
        };
        let kek = match rt.round.as_ref().filter(|r| r.kek.spi == spi) {
            Some(r) => &r.kek,
            None => match rt.state.as_ref().and_then(|s| s.push_kek.as_ref()) {
                Some(k) => k,
                None => return,
            },
        };
        let opened = match kind {
            AckKind::Rfc8263 => open_rfc8263_ack(data, kek, AckRequested::REKEY_ACK_KEK_SHA256),
            AckKind::CiscoUnicast => open_unicast_ack(data, kek),
        };
        let Ok(ack) = opened else {
            return self.reject(from, Reject::BadAck, None);
        };
        let Some(id) = rt.by_addr.get(&ack.gm) else {
            self.out.counters.acks_ignored += 1;
            return;
        };
        match rt.tracker.acked(id, ack.seq) {
            AckOutcome::Recorded => {
                self.out.counters.acks_recorded += 1;
                let group_id = self.cfg.groups.get(gi).map_or(0, |g| g.keys.group_id);
                if let Some(r) = rt.round.as_mut().filter(|r| r.seq == ack.seq) {
                    r.acked += 1;
                    if r.acked == r.targets {
                        self.out.event(KsEvent::RekeyAcked {
                            group_id,
                            seq: r.seq,
                            gms: r.targets,
                            elapsed_ms: now.saturating_sub(r.prepared_at),
                        });
                    }
                }
            }
            AckOutcome::Ignored | AckOutcome::UnknownGm => self.out.counters.acks_ignored += 1,
        }
    }

    /// `show crypto gkm ks rekey` for a group.
    pub fn rekey_status(&self, group_id: u32) -> Option<RekeyStatus> {
        let gi = self.group_index(group_id)?;
        let g = self.cfg.groups.get(gi)?;
        let rt = self.runtime.get(gi)?;
        Some(RekeyStatus {
            ack_type_in_use: if g.rekey.transport.is_unicast() {
                match g.rekey.ack {
                    AckOption::Cisco => "Cisco",
                    AckOption::Interoperable => "Interoperable",
                    AckOption::Any => "Any",
                }
            } else {
                "None"
            },
            rekeys_sent: rt.state().map_or(0, |s| s.rekeys_sent),
            seq: g.keys.seq,
            gms: rt.members.len(),
            gms_at_risk: rt.tracker.at_risk().count(),
        })
    }

    /// `show crypto gkm ks policy` (KEK part) for a group.
    pub fn kek_policy_status(&self, group_id: u32, now: Millis) -> Option<KekPolicyStatus> {
        let gi = self.group_index(group_id)?;
        let g = self.cfg.groups.get(gi)?;
        let state = self.runtime.get(gi)?.state()?;
        let kek = g.keys.kek.as_ref()?;
        let unicast = g.rekey.transport.is_unicast();
        let signer = self.cfg.rekey_signer.as_ref();
        let next_rekey = state
            .tek_expires_at
            .saturating_sub(g.rekey.tek_rekey_before_ms)
            .min(
                state
                    .kek_expires_at
                    .saturating_sub(g.rekey.kek_rekey_before_ms),
            );
        Some(KekPolicyStatus {
            teks: g.keys.teks.len(),
            seq: g.keys.seq,
            transport: if unicast { "Unicast" } else { "Multicast" },
            spi: kek.spi,
            management_algorithm: "disabled",
            encryption_algorithm: "AES",
            iv_len: kek.iv.len(),
            key_size_bits: kek.cipher.key_bits(),
            original_lifetime_secs: kek.lifetime_secs,
            remaining_lifetime_secs: secs_left(state.kek_expires_at, now),
            time_to_rekey_secs: secs_left(next_rekey, now),
            sig_hash_algorithm: "SHA256",
            sig_algorithm: if kek.sig_algorithm == gkm_wire::consts::SigAlgorithm::RSA {
                "RSA"
            } else {
                "ECDSA-256"
            },
            sig_key_bits: kek.sig_key_bits,
            sig_size: signer.map_or(0, |s| s.signature_len()),
            sig_key_name: self.cfg.rekey_key_name.clone(),
            acknowledgement: if unicast {
                match g.rekey.ack {
                    AckOption::Cisco => "cisco",
                    AckOption::Interoperable => "interoperable",
                    AckOption::Any => "any",
                }
            } else {
                "none"
            },
        })
    }

    /// The keys a registering GM gets: current TEKs plus earlier ones still
    /// valid, each with its remaining lifetime.
    pub(crate) fn registration_keys(&self, gi: usize, now: Millis) -> Option<GroupKeys> {
        let g = self.cfg.groups.get(gi)?;
        let state = self.runtime.get(gi)?.state()?;
        let mut keys = g.keys.clone();
        let life = |exp: Millis| u32::try_from(secs_left(exp, now).max(1)).unwrap_or(u32::MAX);
        let mut teks: Vec<Tek> = state
            .previous_teks
            .iter()
            .filter(|(_, exp)| *exp > now)
            .map(|(t, exp)| Tek {
                lifetime_secs: life(*exp),
                ..t.clone()
            })
            .collect();
        teks.extend(keys.teks.iter().map(|t| Tek {
            lifetime_secs: life(state.tek_expires_at),
            ..t.clone()
        }));
        keys.teks = teks;
        if let Some(k) = keys.kek.as_mut() {
            k.lifetime_secs = life(state.kek_expires_at);
        }
        Some(keys)
    }
}
