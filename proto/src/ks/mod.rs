//! The key server engine (responder): IKEv1 main mode (RFC 2409) followed
//! by GROUPKEY-PULL (RFC 6407 section 3). Sans-IO: the caller feeds
//! datagrams and time, then drains transmits and events.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use gkm_wire::consts::{ExchangeType, Flags, IdType, NotifyType, PayloadType};
use gkm_wire::payload::{Gap, Sa, SaLayout, Seq};
use gkm_wire::{Identity, IsakmpHeader, Payload};
use zeroize::Zeroizing;

use crate::crypto::{rng, EngineRng};
use crate::engine::{GmClass, Millis, PeerVendor, Transmit};
use crate::group::GroupKeys;
use crate::ike::{
    decrypt_message, encrypt_body, hashed_chain, hashed_raw_chain, phase2_iv, verify_hashed_chain,
    CryptError, Decrypted, Phase1Keys, Suite,
};
use crate::rekey::GroupRuntime;

mod config;
mod events;
mod phase1;

pub use config::{
    Authorization, Credential, GroupAuth, KsConfig, KsGroup, KsLimits, PskEntry, MAX_PSK_CANDIDATES,
};
pub(crate) use events::KsOutbox;
pub use events::{GmRecord, KsCounters, KsEvent, Reject};
pub use phase1::SWEEP_INTERVAL_MS;
use phase1::{cookies, Phase1Config, Phase1Responder};

enum PullState {
    SentMsg2 { group_idx: usize },
    Done,
}

struct Pull {
    ni_b: Vec<u8>,
    nr_b: Vec<u8>,
    iv: [u8; 16],
    state: PullState,
    started: Millis,
    last_in: Vec<u8>,
    last_out: Vec<u8>,
}

/// The key server engine.
pub struct KeyServer {
    pub(crate) cfg: KsConfig,
    pub(crate) rng: Box<dyn EngineRng>,
    /// Main mode: every phase 1 SA, the PSKs and the PKI.
    phase1: Phase1Responder,
    /// Open GROUPKEY-PULLs by (phase 1 SA, message ID), and how many each SA has.
    pulls: HashMap<([u8; 16], u32), Pull>,
    pulls_per_sa: HashMap<[u8; 16], usize>,
    pub(crate) next_sid: HashMap<u32, u32>,
    /// Datagrams, events and counters for the caller.
    pub(crate) out: KsOutbox,
    /// Each group's SA and KD payload bodies, encoded once: every GM of a
    /// group receives the same octets. Rebuilt whenever keys change and
    /// once per sweep (remaining lifetimes).
    pub(crate) wire: Vec<GroupWire>,
    /// When `wire` was encoded.
    wire_at: Millis,
    /// Per-group rekey state, same order as `cfg.groups`.
    pub(crate) runtime: Vec<GroupRuntime>,
    pub(crate) rekey_state_ready: bool,
}

/// A group's policy and keys as payload bodies: the SA without and with
/// KEK_ACK_REQUESTED (seed Table 1 picks one per GM class), and the KD.
pub(crate) struct GroupWire {
    keys: GroupKeys,
    sa: [Vec<u8>; 2],
    kd: Zeroizing<Vec<u8>>,
}

impl GroupWire {
    pub(crate) fn encode(keys: GroupKeys, d3p_window_ms: Option<u32>) -> Self {
        let mut plain = Vec::with_capacity(256);
        let mut with_ack = Vec::with_capacity(256);
        let mut kd = Zeroizing::new(Vec::with_capacity(512));
        let material = keys.kek_material();
        // Encoding our own well-formed policy cannot fail short of a group
        // larger than the codec limits, which configuration validation excludes.
        let mut sa = keys.to_sa();
        sa.gap = ks_gap(d3p_window_ms, None);
        let _ = Sa::Gdoi(sa).emit(&mut plain);
        let mut sa = keys.to_sa_with(Some(gkm_wire::consts::AckRequested::REKEY_ACK_KEK_SHA256));
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

/// Most GROUPKEY-PULL exchanges one phase 1 SA may have open at once.
pub const MAX_PULLS_PER_SA: usize = 8;

/// A payload's type and body, copied out of a decrypted message.
type OwnedPayload = (PayloadType, Vec<u8>);

/// Decrypts a protected message of an exchange and checks its leading HASH
/// (prf over M-ID, `prefix` and every octet after the HASH payload).
/// Returns the plaintext and the payloads after the HASH.
fn open_protected(
    suite: Suite,
    keys: &Phase1Keys,
    data: &[u8],
    iv: &[u8; 16],
    prefix: &[&[u8]],
) -> Result<(Decrypted, Vec<OwnedPayload>), Reject> {
    let dec =
        decrypt_message(data, suite.cipher, &keys.enc_key, iv).map_err(|_| Reject::Malformed)?;
    let raws = match verify_hashed_chain(
        suite.prf,
        &keys.skeyid_a,
        &dec.header,
        &dec.plaintext,
        prefix,
    ) {
        Ok(r) => r
            .iter()
            .map(|r| (r.payload_type, r.body.to_vec()))
            .collect(),
        Err(CryptError::BadHash) | Err(CryptError::NoHash) => return Err(Reject::InvalidHash),
        Err(_) => return Err(Reject::Malformed),
    };
    Ok((dec, raws))
}

/// A peer-chosen name as GKM shows, logs and stores it: control, format
/// (bidi) and other invisible characters escaped as `\u{..}`, so an
/// identity can neither forge a log line nor reorder what a page shows.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let invisible = c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}');
        if invisible || c == '\\' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// How an identity is shown and matched in authorization lists (peer
/// text made [`printable`]).
pub fn identity_string(id: &Identity<'_>) -> String {
    match id {
        Identity::Ipv4Addr(a) => a.to_string(),
        Identity::Ipv6Addr(a) => a.to_string(),
        Identity::Fqdn(b) | Identity::UserFqdn(b) => printable(&String::from_utf8_lossy(b)),
        other => {
            let mut v = Vec::new();
            other.emit_data(&mut v);
            format!(
                "{}:{}",
                other.id_type(),
                v.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        }
    }
}

impl KeyServer {
    /// A key server with its configuration and randomness.
    pub fn new(mut cfg: KsConfig, rng: Box<dyn EngineRng>) -> Self {
        let phase1 = Phase1Responder::new(Phase1Config {
            identity: cfg.identity,
            psks: std::mem::take(&mut cfg.psks),
            ca: cfg.ca.take(),
            certificate: cfg.certificate.take(),
            limits: cfg.limits,
            max_life_secs: cfg.max_phase1_life_secs,
            dh_backend: cfg.dh_backend,
            export_keys: cfg.export_keys,
        });
        let wire = cfg
            .groups
            .iter()
            .map(|g| GroupWire::encode(g.keys.clone(), g.d3p_window_ms))
            .collect();
        let runtime = cfg.groups.iter().map(|_| GroupRuntime::default()).collect();
        Self {
            wire,
            runtime,
            rekey_state_ready: false,
            wire_at: 0,
            cfg,
            rng,
            phase1,
            pulls: HashMap::new(),
            pulls_per_sa: HashMap::new(),
            next_sid: HashMap::new(),
            out: KsOutbox::default(),
        }
    }

    /// This key server's phase 1 identity (its address), as GMs see it.
    pub fn identity(&self) -> Ipv4Addr {
        self.cfg.identity
    }

    /// The groups served.
    pub fn groups(&self) -> &[KsGroup] {
        &self.cfg.groups
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
        [sweep, self.rekey_deadline()].into_iter().flatten().min()
    }

    /// Re-encodes each group's registration payloads (keys changed, or
    /// remaining lifetimes moved on).
    pub(crate) fn refresh_wire(&mut self, now: Millis) {
        self.wire_at = now;
        for gi in 0..self.cfg.groups.len() {
            let Some(keys) = self.registration_keys(gi, now) else {
                continue;
            };
            let d3p = self.cfg.groups.get(gi).and_then(|g| g.d3p_window_ms);
            if let Some(w) = self.wire.get_mut(gi) {
                *w = GroupWire::encode(keys, d3p);
            }
        }
    }

    /// The seed's GM class of a peer: an operator tag marks ASR 9000; a
    /// Cisco Vendor ID marks Cisco; anything else is non-Cisco.
    fn classify(&self, from: SocketAddr, vendor: &PeerVendor) -> GmClass {
        match from.ip() {
            IpAddr::V4(a) if self.cfg.asr9000.iter().any(|p| p.contains(a)) => GmClass::Asr9000,
            _ if vendor.cisco => GmClass::Cisco,
            _ => GmClass::NonCisco,
        }
    }

    /// Expires half-open exchanges, finished PULLs and phase 1 SAs past their lifetime.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.rekey_timeout(now);
        if !self.phase1.sweep_due(now) {
            return;
        }
        let mut earliest = self.phase1.sweep(now);
        // A PULL ends with its time, or with its phase 1 SA.
        let timeout = self.cfg.limits.pull_timeout_ms;
        let phase1 = &self.phase1;
        self.pulls
            .retain(|(sa, _), p| now < p.started + timeout && phase1.established(sa).is_some());
        self.pulls_per_sa.clear();
        for ((sa, _), p) in &self.pulls {
            *self.pulls_per_sa.entry(*sa).or_insert(0) += 1;
            earliest = earliest.min(p.started + timeout);
        }
        self.phase1.sweep_next(earliest, now);
    }

    pub(crate) fn reject(&mut self, peer: SocketAddr, reason: Reject, notify: Option<NotifyType>) {
        self.out.reject(peer, reason, notify);
    }

    fn send(&mut self, to: SocketAddr, payload: Vec<u8>) {
        self.out.send(to, payload);
    }

    /// Refuses a protected message: a bad HASH is answered with a protected
    /// INVALID-HASH-INFORMATION; anything else is only counted.
    fn refuse_protected(&mut self, key: [u8; 16], from: SocketAddr, reason: Reject) {
        if reason == Reject::InvalidHash {
            self.phase1.notify_protected(
                self.rng.as_mut(),
                &mut self.out,
                key,
                NotifyType::INVALID_HASH_INFORMATION,
            );
            self.reject(from, reason, Some(NotifyType::INVALID_HASH_INFORMATION));
        } else {
            self.reject(from, reason, None);
        }
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Millis, from: SocketAddr, data: &[u8]) {
        self.out.counters.datagrams += 1;
        let header = match IsakmpHeader::parse(data) {
            Ok(h) => h,
            Err(_) => return self.reject(from, Reject::Malformed, None),
        };
        match header.exchange_type {
            ExchangeType::IDENTITY_PROTECTION => {
                self.phase1
                    .main_mode(now, from, &header, data, self.rng.as_mut(), &mut self.out)
            }
            ExchangeType::GROUPKEY_PULL => self.pull(now, from, &header, data),
            ExchangeType::GROUPKEY_PUSH_ACK | ExchangeType::GKM_UNICAST_ACK => {
                if !self.rekey_state_ready {
                    self.init_rekey_state(now);
                }
                self.on_ack(now, from, &header, data)
            }
            ExchangeType::INFORMATIONAL => {}
            ExchangeType::AGGRESSIVE => self.phase1.refuse_aggressive(&mut self.out, from, &header),
            _ => self.reject(from, Reject::UnsupportedExchange, None),
        }
    }

    /// Whether group `gi` accepts any of `credentials`.
    /// Replaces the pre-shared keys (see [`Phase1Responder::set_psks`]).
    pub fn set_psks(&mut self, psks: Vec<PskEntry>) {
        self.phase1.set_psks(psks);
    }

    fn accepts(&self, gi: usize, credentials: &[Credential]) -> bool {
        let Some(g) = self.cfg.groups.get(gi) else {
            return false;
        };
        let id = g.keys.group_id;
        match g.authentication {
            GroupAuth::Certificate => credentials.contains(&Credential::Certificate),
            GroupAuth::Psk => {
                let own = Credential::GroupPsk(id);
                if self.phase1.has_own_psk(id) {
                    credentials.contains(&own)
                } else {
                    credentials
                        .iter()
                        .any(|c| matches!(c, Credential::Keyring(_)))
                }
            }
        }
    }

    fn pull(&mut self, now: Millis, from: SocketAddr, header: &IsakmpHeader, data: &[u8]) {
        if !self.rekey_state_ready {
            self.init_rekey_state(now);
        }
        if now >= self.wire_at + 1000 {
            // Remaining lifetimes handed out stay within a second of the truth.
            self.refresh_wire(now);
        }
        let key = cookies(&header.initiator_cookie, &header.responder_cookie);
        let mid = header.message_id;
        let Some(sa) = self.phase1.established(&key) else {
            return self.reject(from, Reject::UnknownExchange, None);
        };
        if sa.peer != from || mid == 0 {
            return self.reject(from, Reject::UnknownExchange, None);
        }
        let (suite, keys, last_block, vendor) =
            (sa.suite, sa.keys.clone(), *sa.last_block, sa.vendor);
        let (identity, credentials) = (sa.identity.to_owned(), sa.credentials.to_vec());
        if let Some(p) = self.pulls.get(&(key, mid)) {
            if p.last_in == data {
                let out = p.last_out.clone();
                self.send(from, out);
                return self.reject(from, Reject::Retransmit, None);
            }
        }
        let open = self.pulls_per_sa.get(&key).copied().unwrap_or(0);
        match self.pulls.get(&(key, mid)).map(|p| &p.state) {
            None if open >= MAX_PULLS_PER_SA => self.reject(from, Reject::HalfOpenLimit, None),
            None => self.pull_message_1(
                now,
                from,
                key,
                mid,
                data,
                (suite, &keys, &last_block, vendor),
                (&identity, &credentials),
            ),
            Some(PullState::SentMsg2 { group_idx }) => {
                let group_idx = *group_idx;
                self.pull_message_3(
                    now,
                    from,
                    key,
                    mid,
                    data,
                    group_idx,
                    (suite, &keys, vendor),
                    identity,
                )
            }
            Some(PullState::Done) => self.reject(from, Reject::UnknownExchange, None),
        }
    }

    /// Refuses a PULL with a protected notification.
    fn refuse_pull(&mut self, key: [u8; 16], from: SocketAddr, reason: Reject, t: NotifyType) {
        self.phase1
            .notify_protected(self.rng.as_mut(), &mut self.out, key, t);
        self.reject(from, reason, Some(t));
    }

    /// PULL message 1 (HASH(1), Ni, ID): checks the group, the credential
    /// and the authorization, answers HASH(2), Nr, SA.
    #[allow(clippy::too_many_arguments)]
    fn pull_message_1(
        &mut self,
        now: Millis,
        from: SocketAddr,
        key: [u8; 16],
        mid: u32,
        data: &[u8],
        (suite, keys, last_block, vendor): (Suite, &Phase1Keys, &[u8; 16], PeerVendor),
        (identity, credentials): (&str, &[Credential]),
    ) {
        let iv = phase2_iv(suite.prf, last_block, mid);
        let (dec, raws) = match open_protected(suite, keys, data, &iv, &[]) {
            Ok(opened) => opened,
            Err(reason) => return self.refuse_protected(key, from, reason),
        };
        let (mut ni, mut group) = (None, None);
        for (t, body) in &raws {
            match Payload::parse(*t, body, SaLayout::Gdoi) {
                Ok(Payload::Nonce(n)) => ni = Some(n.0.to_vec()),
                Ok(Payload::Id(i)) if i.identity.id_type() == IdType::KEY_ID => {
                    group = i.identity.group_id()
                }
                _ => {}
            }
        }
        let Some(ni) = ni.filter(|n| (8..=128).contains(&n.len())) else {
            return self.refuse_pull(key, from, Reject::Malformed, NotifyType::PAYLOAD_MALFORMED);
        };
        let Some(group_idx) = group.and_then(|g| self.serving_index(g)) else {
            return self.refuse_pull(
                key,
                from,
                Reject::UnknownGroup,
                NotifyType::INVALID_ID_INFORMATION,
            );
        };
        if !self.accepts(group_idx, credentials) {
            return self.refuse_pull(
                key,
                from,
                Reject::CredentialNotAccepted,
                NotifyType::INVALID_ID_INFORMATION,
            );
        }
        let Some(group) = self.cfg.groups.get(group_idx) else {
            return;
        };
        if !group.authorization.allows(from.ip(), identity) {
            return self.refuse_pull(
                key,
                from,
                Reject::Unauthorized,
                NotifyType::INVALID_ID_INFORMATION,
            );
        }
        let class = self.classify(from, &vendor);
        let with_ack = group.rekey.transport.is_unicast()
            && group.rekey.ack.kek_ack_requested(class).is_some();
        let nr = rng::bytes(self.rng.as_mut(), 32);
        let Some(wire) = self.wire.get(group_idx) else {
            return;
        };
        let rest = [
            (PayloadType::NONCE, nr.as_slice()),
            (PayloadType::SA, wire.sa[usize::from(with_ack)].as_slice()),
        ];
        let Ok((first, body)) = hashed_raw_chain(suite.prf, &keys.skeyid_a, mid, &[&ni], &rest)
        else {
            return;
        };
        let h = IsakmpHeader {
            next_payload: first,
            flags: Flags::default(),
            ..dec.header
        };
        let Ok((out, next_iv)) = encrypt_body(h, body, suite.cipher, &keys.enc_key, &dec.next_iv)
        else {
            return;
        };
        self.pulls.insert(
            (key, mid),
            Pull {
                ni_b: ni,
                nr_b: nr,
                iv: next_iv,
                state: PullState::SentMsg2 { group_idx },
                started: now,
                last_in: data.to_vec(),
                last_out: out.clone(),
            },
        );
        *self.pulls_per_sa.entry(key).or_insert(0) += 1;
        self.phase1.sweep_by(now + self.cfg.limits.pull_timeout_ms);
        self.send(from, out);
    }

    /// PULL message 3 (HASH(3), optionally a GAP asking for sender IDs):
    /// grants the IDs, answers HASH(4), SEQ, KD, and registers the GM.
    #[allow(clippy::too_many_arguments)]
    fn pull_message_3(
        &mut self,
        now: Millis,
        from: SocketAddr,
        key: [u8; 16],
        mid: u32,
        data: &[u8],
        group_idx: usize,
        (suite, keys, vendor): (Suite, &Phase1Keys, PeerVendor),
        identity: String,
    ) {
        let Some(p) = self.pulls.get(&(key, mid)) else {
            return;
        };
        let (dec, raws) = match open_protected(suite, keys, data, &p.iv, &[&p.ni_b, &p.nr_b]) {
            Ok(opened) => opened,
            Err(reason) => return self.refuse_protected(key, from, reason),
        };
        let sid_request =
            raws.iter()
                .find_map(|(t, body)| match Payload::parse(*t, body, SaLayout::Gdoi) {
                    Ok(Payload::Gap(Gap {
                        sender_id_request: Some(n),
                        ..
                    })) => Some(n),
                    _ => None,
                });
        let (ni_b, nr_b) = (p.ni_b.clone(), p.nr_b.clone());
        let Some(group_id) = self.cfg.groups.get(group_idx).map(|g| g.keys.group_id) else {
            return;
        };
        let sids: Vec<u32> = match sid_request {
            Some(n) if n > 0 => {
                let next = self.next_sid.entry(group_id).or_insert(1);
                let n = u32::from(n.min(16));
                let v: Vec<u32> = (*next..next.saturating_add(n))
                    .filter(|s| *s < 0xffff)
                    .collect();
                *next = next.saturating_add(n);
                v
            }
            _ => Vec::new(),
        };
        let Some(wire) = self.wire.get(group_idx) else {
            return;
        };
        let seq = wire.keys.seq.to_be_bytes();
        let built = if sids.is_empty() {
            let rest = [
                (PayloadType::SEQ, seq.as_slice()),
                (PayloadType::KEY_DOWNLOAD, wire.kd.as_slice()),
            ];
            hashed_raw_chain(suite.prf, &keys.skeyid_a, mid, &[&ni_b, &nr_b], &rest)
        } else {
            let material = wire.keys.kek_material();
            let kd = wire.keys.to_kd(&material, Some((16, sids.clone())));
            let rest = [Payload::Seq(Seq(wire.keys.seq)), Payload::KeyDownload(kd)];
            hashed_chain(suite.prf, &keys.skeyid_a, mid, &[&ni_b, &nr_b], &rest)
        };
        let Ok((first, body)) = built else {
            return;
        };
        let h = IsakmpHeader {
            next_payload: first,
            flags: Flags::default(),
            ..dec.header
        };
        let Ok((out, _)) = encrypt_body(h, body, suite.cipher, &keys.enc_key, &dec.next_iv) else {
            return;
        };
        if let Some(p) = self.pulls.get_mut(&(key, mid)) {
            p.state = PullState::Done;
            p.last_in = data.to_vec();
            p.last_out = out.clone();
        }
        let class = self.classify(from, &vendor);
        self.out.counters.registrations += 1;
        let record = GmRecord {
            identity,
            addr: from,
            group_id,
            class,
            version: vendor.version(),
            features: vendor.features(),
            sids,
            registered_at: now,
        };
        self.member_registered(group_idx, record.clone());
        self.out.event(KsEvent::Registered(record));
        self.send(from, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_identities_cannot_forge_log_lines_or_reorder_text() {
        let evil =
            b"gm.example\n2026-12-01T00:00:00Z  INFO gkm_server: forged\x1b[31m\xe2\x80\xaeabc\\";
        let shown = identity_string(&Identity::Fqdn(evil));
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert!(!shown.contains('\u{202e}'), "{shown}");
        assert!(shown.starts_with("gm.example\\u{a}2026"), "{shown}");
        assert!(shown.ends_with("\\u{202e}abc\\u{5c}"), "{shown}");
        assert_eq!(
            identity_string(&Identity::Fqdn(b"gm1.example.com")),
            "gm1.example.com"
        );
        assert_eq!(printable("plain ascii - ok"), "plain ascii - ok");
    }
}
