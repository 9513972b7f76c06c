//! The group table: each group's configuration, its key state (current
//! keys, the KEK GMs hold, earlier TEKs, expiries), the payload bodies a
//! registration sends (encoded once for every GM), and the sender IDs
//! granted. It is the only way keys change: [`GroupTable::install`]
//! replaces a group's state and re-encodes its payloads in one step, so
//! the octets a registering GM gets always carry the current keys.

use std::collections::HashMap;

use gkm_wire::consts::AckRequested;
use gkm_wire::payload::{Gap, Sa};
use zeroize::Zeroizing;

use super::config::KsGroup;
use crate::engine::Millis;
use crate::group::{GroupKeys, Kek, Tek};
use crate::rekey::GroupState;

/// A group's policy and keys as payload bodies: the SA without and with
/// KEK_ACK_REQUESTED (seed Table 1 picks one per GM class), and the KD.
pub(crate) struct RegistrationPayloads {
    /// The keys they were encoded from (remaining lifetimes as of then).
    pub keys: GroupKeys,
    /// SA bodies: `[without KEK_ACK_REQUESTED, with it]`.
    pub sa: [Vec<u8>; 2],
    /// The KD body.
    pub kd: Zeroizing<Vec<u8>>,
}

impl RegistrationPayloads {
    fn encode(keys: GroupKeys, d3p_window_ms: Option<u32>) -> Self {
        let mut plain = Vec::with_capacity(256);
        let mut with_ack = Vec::with_capacity(256);
        let mut kd = Zeroizing::new(Vec::with_capacity(512));
        let material = keys.kek_material();
        // Encoding our own well-formed policy cannot fail short of a group
        // larger than the codec limits, which configuration validation excludes.
        let mut sa = keys.to_sa();
        sa.gap = ks_gap(d3p_window_ms, None);
        let _ = Sa::Gdoi(sa).emit(&mut plain);
        let mut sa = keys.to_sa_with(Some(AckRequested::REKEY_ACK_KEK_SHA256));
        sa.gap = ks_gap(d3p_window_ms, None);
        let _ = Sa::Gdoi(sa).emit(&mut with_ack);
        let _ = keys.to_kd(&material, None).emit(&mut kd);
        Self {
            keys,
            sa: [plain, with_ack],
            kd,
        }
    }
}

/// The GAP a KS sends: IP-D3P (type POSIX-TIME-MSEC and the window) when
/// the group has it, and the activation time delay when it applies; none
/// when neither.
pub(crate) fn ks_gap(d3p_window_ms: Option<u32>, atd_secs: Option<u16>) -> Option<Gap<'static>> {
    (d3p_window_ms.is_some() || atd_secs.is_some()).then(|| Gap {
        activation_time_delay: atd_secs,
        d3p_type: d3p_window_ms.map(|_| gkm_wire::consts::D3pType::POSIX_TIME_MSEC),
        d3p_window_msec: d3p_window_ms,
        ..Gap::default()
    })
}

/// Seconds left until `until`.
pub(crate) fn secs_left(until: Millis, now: Millis) -> u64 {
    until.saturating_sub(now) / 1000
}

/// What a change of a group's configuration means for its GMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupChange {
    /// Selectors, transforms, lifetimes or KEK changed (a rekey replace).
    pub keys: bool,
    /// The ACK option or the IP-D3P window changed (a rekey).
    pub policy: bool,
    /// The group was deleted before (served again: a rekey replace).
    pub revived: bool,
}

/// Whether two key sets have the same shape (selectors, transforms,
/// lifetimes, KEK parameters): if not, GMs need a rekey replace.
fn same_key_policy(a: &GroupKeys, b: &GroupKeys) -> bool {
    let tek = |k: &GroupKeys| -> Vec<_> {
        k.teks
            .iter()
            .map(|t| {
                let shape = (t.transform, t.auth, t.key.len(), t.integrity_key.len());
                (t.src, t.dst, shape, t.lifetime_secs)
            })
            .collect()
    };
    tek(a) == tek(b) && a.kek.as_ref().map(Kek::params) == b.kek.as_ref().map(Kek::params)
}

/// The groups a key server serves; indexes are stable (a deleted group
/// keeps its index, disabled, so exchanges in flight never point at
/// another group).
pub(crate) struct GroupTable {
    groups: Vec<KsGroup>,
    states: Vec<Option<GroupState>>,
    payloads: Vec<RegistrationPayloads>,
    disabled: Vec<bool>,
    /// Rekeys held: the key server is a COOP secondary of the group (its
    /// primary makes the keys and rekeys).
    held: Vec<bool>,
    /// New GMs blocked: a COOP secondary without its primary's keys yet.
    blocked: Vec<bool>,
    /// When `payloads` were encoded.
    encoded_at: Millis,
    /// Key states are set up (the first time time was known).
    ready: bool,
    /// The next sender ID of each group (RFC 6054), never granted twice.
    next_sid: HashMap<u32, u32>,
}

impl GroupTable {
    /// The table for these groups; key states come with the first time.
    pub(crate) fn new(groups: Vec<KsGroup>) -> Self {
        let payloads = groups
            .iter()
            .map(|g| RegistrationPayloads::encode(g.keys.clone(), g.d3p_window_ms))
            .collect();
        Self {
            states: groups.iter().map(|_| None).collect(),
            disabled: groups.iter().map(|_| false).collect(),
            held: groups.iter().map(|_| false).collect(),
            blocked: groups.iter().map(|_| false).collect(),
            payloads,
            groups,
            encoded_at: 0,
            ready: false,
            next_sid: HashMap::new(),
        }
    }

    /// Every group, served or deleted, by index.
    pub(crate) fn all(&self) -> &[KsGroup] {
        &self.groups
    }

    /// Groups, served or not.
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    /// The index of a group the KS serves now.
    pub(crate) fn index(&self, group_id: u32) -> Option<usize> {
        self.groups
            .iter()
            .zip(&self.disabled)
            .position(|(g, d)| g.keys.group_id == group_id && !d)
    }

    /// Group `gi`'s configuration.
    pub(crate) fn get(&self, gi: usize) -> Option<&KsGroup> {
        self.groups.get(gi)
    }

    /// Whether group `gi` was deleted.
    pub(crate) fn is_disabled(&self, gi: usize) -> bool {
        self.disabled.get(gi).copied().unwrap_or(true)
    }

    /// Whether group `gi`'s rekeys are held (a COOP secondary).
    pub(crate) fn is_held(&self, gi: usize) -> bool {
        self.held.get(gi).copied().unwrap_or(false)
    }

    /// Holds or releases group `gi`'s rekeys.
    pub(crate) fn set_held(&mut self, gi: usize, held: bool) {
        if let Some(h) = self.held.get_mut(gi) {
            *h = held;
        }
    }

    /// Whether new GMs of group `gi` are refused for now.
    pub(crate) fn is_blocked(&self, gi: usize) -> bool {
        self.blocked.get(gi).copied().unwrap_or(false)
    }

    /// Blocks or admits new GMs of group `gi`.
    pub(crate) fn set_blocked(&mut self, gi: usize, blocked: bool) {
        if let Some(b) = self.blocked.get_mut(gi) {
            *b = blocked;
        }
    }

    /// Group `gi`'s key state.
    pub(crate) fn state(&self, gi: usize) -> Option<&GroupState> {
        self.states.get(gi)?.as_ref()
    }

    /// What a registration of group `gi` sends.
    pub(crate) fn payloads(&self, gi: usize) -> Option<&RegistrationPayloads> {
        self.payloads.get(gi)
    }

    /// Whether key states are set up.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// Sets up each group's key state the first time time is known: the
    /// state persisted before a restart, or fresh expiries for new keys.
    pub(crate) fn ensure_ready(&mut self, now: Millis) {
        for (g, slot) in self.groups.iter_mut().zip(self.states.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            let state = match g.resume.take() {
                Some(s) => s,
                None => fresh_state(&g.keys, now),
            };
            g.keys = state.keys.clone();
            *slot = Some(state);
        }
        self.ready = true;
        self.encode_all(now);
    }

    /// Makes `state` group `gi`'s keys: the only way keys change. The
    /// registration payloads are encoded again at once.
    pub(crate) fn install(&mut self, gi: usize, state: GroupState, now: Millis) {
        if let Some(g) = self.groups.get_mut(gi) {
            g.keys = state.keys.clone();
        }
        if let Some(slot) = self.states.get_mut(gi) {
            *slot = Some(state);
        }
        self.encode(gi, now);
    }

    /// A group that cannot be rekeyed (no KEK, no signer) is not scheduled
    /// again and again: its expiries move out of reach.
    pub(crate) fn park(&mut self, gi: usize) {
        if let Some(s) = self.states.get_mut(gi).and_then(Option::as_mut) {
            s.tek_expires_at = u64::MAX / 4;
            s.kek_expires_at = u64::MAX / 4;
        }
    }

    /// Re-encodes the registration payloads when they are a second old
    /// (remaining lifetimes handed out stay within a second of the truth).
    pub(crate) fn refresh(&mut self, now: Millis) {
        if now >= self.encoded_at + 1000 {
            self.encode_all(now);
        }
    }

    fn encode_all(&mut self, now: Millis) {
        self.encoded_at = now;
        for gi in 0..self.groups.len() {
            self.encode(gi, now);
        }
    }

    fn encode(&mut self, gi: usize, now: Millis) {
        let Some(keys) = self.registration_keys(gi, now) else {
            return;
        };
        let d3p = self.groups.get(gi).and_then(|g| g.d3p_window_ms);
        if let Some(p) = self.payloads.get_mut(gi) {
            *p = RegistrationPayloads::encode(keys, d3p);
        }
    }

    /// The keys a registering GM gets: current TEKs plus earlier ones still
    /// valid, each with its remaining lifetime.
    pub(crate) fn registration_keys(&self, gi: usize, now: Millis) -> Option<GroupKeys> {
        let g = self.groups.get(gi)?;
        let state = self.state(gi)?;
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

    /// Up to `n` (at most 16) new sender IDs of a group.
    pub(crate) fn grant_sids(&mut self, group_id: u32, n: u16) -> Vec<u32> {
        if n == 0 {
            return Vec::new();
        }
        let next = self.next_sid.entry(group_id).or_insert(1);
        let n = u32::from(n.min(16));
        let v: Vec<u32> = (*next..next.saturating_add(n))
            .filter(|s| *s < 0xffff)
            .collect();
        *next = next.saturating_add(n);
        v
    }

    /// Sender IDs granted before a restart are never granted again.
    pub(crate) fn note_sids(&mut self, group_id: u32, sids: &[u32]) {
        if let Some(max) = sids.iter().max() {
            let next = self.next_sid.entry(group_id).or_insert(1);
            *next = (*next).max(max.saturating_add(1));
        }
    }

    /// Adds a group (served at once); returns its index.
    pub(crate) fn add(&mut self, group: KsGroup, now: Millis) -> usize {
        self.payloads.push(RegistrationPayloads::encode(
            group.keys.clone(),
            group.d3p_window_ms,
        ));
        self.groups.push(group);
        self.states.push(None);
        self.disabled.push(false);
        self.held.push(false);
        self.blocked.push(false);
        self.ensure_ready(now);
        self.groups.len() - 1
    }

    /// The index of group `group_id`, served or deleted.
    pub(crate) fn any_index(&self, group_id: u32) -> Option<usize> {
        self.groups.iter().position(|g| g.keys.group_id == group_id)
    }

    /// Changes group `gi` to `group` (whose keys are fresh keys of the new
    /// policy). New key shapes become current at once, continuing the
    /// SEQ, with the TEKs GMs hold listed so a rekey replace deletes them;
    /// otherwise the keys stay. Says what GMs must be told.
    pub(crate) fn change(&mut self, gi: usize, mut group: KsGroup, now: Millis) -> GroupChange {
        let revived = self.disabled.get(gi).copied().unwrap_or(false);
        let Some(old) = self.groups.get(gi) else {
            return GroupChange {
                keys: false,
                policy: false,
                revived,
            };
        };
        let keys = !same_key_policy(&old.keys, &group.keys);
        // GMs learn the ACK option and the IP-D3P window from a rekey.
        let policy = old.rekey.ack != group.rekey.ack || old.d3p_window_ms != group.d3p_window_ms;
        if let Some(d) = self.disabled.get_mut(gi) {
            *d = false;
        }
        if keys || revived {
            if let Some(st) = self.states.get_mut(gi).and_then(Option::as_mut) {
                let held: Vec<(Tek, Millis)> = st
                    .keys
                    .teks
                    .iter()
                    .map(|t| (t.clone(), st.tek_expires_at))
                    .collect();
                st.previous_teks.extend(held);
                group.keys.seq = st.keys.seq;
                st.keys = group.keys.clone();
            }
        } else {
            group.keys = old.keys.clone();
        }
        group.resume = None;
        if let Some(g) = self.groups.get_mut(gi) {
            *g = group;
        }
        self.encode_all(now);
        GroupChange {
            keys,
            policy,
            revived,
        }
    }

    /// Stops serving group `gi` (deleted); its key state is kept.
    pub(crate) fn disable(&mut self, gi: usize) {
        if let Some(d) = self.disabled.get_mut(gi) {
            *d = true;
        }
    }
}

/// The key state of keys just made: they expire a lifetime from now.
fn fresh_state(keys: &GroupKeys, now: Millis) -> GroupState {
    GroupState {
        push_kek: keys.kek.clone(),
        previous_teks: Vec::new(),
        tek_expires_at: now
            + keys
                .teks
                .iter()
                .map(|t| u64::from(t.lifetime_secs) * 1000)
                .min()
                .unwrap_or(3_600_000),
        kek_expires_at: now
            + keys
                .kek
                .as_ref()
                .map(|k| u64::from(k.lifetime_secs) * 1000)
                .unwrap_or(u64::MAX / 4),
        rekeys_sent: 0,
        keys: keys.clone(),
    }
}
