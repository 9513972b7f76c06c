//! The GROUPKEY-PULL server (RFC 6407 section 3): over an established
//! phase 1 SA, message 1 names the group, which must exist, accept the
//! SA's credential and authorise the GM; message 2 carries the group's
//! SA; message 3 may ask for sender IDs; message 4 carries SEQ and KD.
//! Open exchanges live here, by (phase 1 SA, message ID), and end with
//! their time or their SA.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use gkm_wire::consts::{Flags, IdType, NotifyType, PayloadType};
use gkm_wire::payload::{Gap, SaLayout, Seq};
use gkm_wire::{IsakmpHeader, Payload};

use super::config::{Credential, GroupAuth, KsGroup};
use super::events::{GmRecord, KsOutbox, Reject};
use super::groups::GroupTable;
use super::phase1::{cookies, Phase1Responder};
use crate::crypto::{rng, EngineRng};
use crate::engine::{GmClass, Millis, PeerVendor};
use crate::group::Ipv4Prefix;
use crate::ike::{
    decrypt_message, encrypt_body, hashed_chain, hashed_raw_chain, phase2_iv, verify_hashed_chain,
    CryptError, Decrypted, Phase1Keys, Suite,
};

/// Most GROUPKEY-PULL exchanges one phase 1 SA may have open at once.
pub const MAX_PULLS_PER_SA: usize = 8;

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

/// What a PULL needs of the rest of the key server.
pub(crate) struct PullContext<'a> {
    /// The phase 1 SAs (keys, identity, credential of the peer).
    pub phase1: &'a mut Phase1Responder,
    /// The groups (policy, payloads, sender IDs).
    pub groups: &'a mut GroupTable,
    /// Operator tags marking ASR 9000 GMs.
    pub asr9000: &'a [Ipv4Prefix],
    /// Where answers, refusals and counters go.
    pub out: &'a mut KsOutbox,
    /// Nonces.
    pub rng: &'a mut dyn EngineRng,
}

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

/// Refuses a PULL with a protected notification.
fn refuse(
    cx: &mut PullContext<'_>,
    key: [u8; 16],
    from: SocketAddr,
    (reason, t): (Reject, NotifyType),
    detail: Option<String>,
) {
    cx.phase1.notify_protected(cx.rng, cx.out, key, t);
    cx.out.refuse(from, reason, Some(t), detail);
}

/// What a group itself says of a GM over this phase 1 SA, checked at PULL
/// 1 and again at PULL 3 (the policy may have changed in between): a
/// legacy suite needs the group's `legacy_phase1`, and the GM must be
/// authorised.
fn admits(
    group: &KsGroup,
    suite: Suite,
    from: SocketAddr,
    gm_identity: &str,
) -> Result<(), ((Reject, NotifyType), String)> {
    if suite.is_legacy() && !group.legacy_phase1 {
        return Err((
            (Reject::LegacyPhase1, NotifyType::NO_PROPOSAL_CHOSEN),
            format!(
                "phase 1 suite {} is legacy and group {} does not have legacy_phase1 on",
                suite.name(),
                group.keys.group_id
            ),
        ));
    }
    if !group.authorization.allows(from.ip(), gm_identity) {
        return Err((
            (Reject::Unauthorized, NotifyType::INVALID_ID_INFORMATION),
            format!(
                "GM {gm_identity:?} from {} is not authorised for group {}",
                from.ip(),
                group.keys.group_id
            ),
        ));
    }
    Ok(())
}

/// The seed's GM class of a peer: an operator tag marks ASR 9000; a
/// Cisco Vendor ID marks Cisco; anything else is non-Cisco.
fn classify(asr9000: &[Ipv4Prefix], from: SocketAddr, vendor: &PeerVendor) -> GmClass {
    match from.ip() {
        IpAddr::V4(a) if asr9000.iter().any(|p| p.contains(a)) => GmClass::Asr9000,
        _ if vendor.cisco => GmClass::Cisco,
        _ => GmClass::NonCisco,
    }
}

/// Refuses a protected message: a bad HASH is answered with a protected
/// INVALID-HASH-INFORMATION; anything else is only counted.
fn refuse_protected(cx: &mut PullContext<'_>, key: [u8; 16], from: SocketAddr, reason: Reject) {
    if reason == Reject::InvalidHash {
        cx.phase1
            .notify_protected(cx.rng, cx.out, key, NotifyType::INVALID_HASH_INFORMATION);
        cx.out
            .reject(from, reason, Some(NotifyType::INVALID_HASH_INFORMATION));
    } else {
        cx.out.reject(from, reason, None);
    }
}

fn accepts(
    phase1: &Phase1Responder,
    groups: &GroupTable,
    gi: usize,
    credentials: &[Credential],
    agent_groups: Option<&[u32]>,
) -> bool {
    let Some(g) = groups.get(gi) else {
        return false;
    };
    let id = g.keys.group_id;
    match g.authentication {
        // An enrolled agent's certificate opens its own groups only.
        GroupAuth::Certificate => {
            credentials.contains(&Credential::Certificate)
                && agent_groups.is_none_or(|a| a.contains(&id))
        }
        GroupAuth::Psk => {
            let own = Credential::GroupPsk(id);
            if phase1.has_own_psk(id) {
                credentials.contains(&own)
            } else {
                credentials
                    .iter()
                    .any(|c| matches!(c, Credential::Keyring(_)))
            }
        }
    }
}

/// The open GROUPKEY-PULL exchanges.
pub(crate) struct PullServer {
    pulls: HashMap<([u8; 16], u32), Pull>,
    per_sa: HashMap<[u8; 16], usize>,
    timeout_ms: u64,
}

impl PullServer {
    /// No exchange open; each is forgotten `timeout_ms` after it began.
    pub(crate) fn new(timeout_ms: u64) -> Self {
        Self {
            pulls: HashMap::new(),
            per_sa: HashMap::new(),
            timeout_ms,
        }
    }

    /// Forgets exchanges past their time or whose phase 1 SA is gone;
    /// returns the earliest deadline of those left.
    pub(crate) fn sweep(&mut self, now: Millis, phase1: &Phase1Responder) -> Millis {
        let timeout = self.timeout_ms;
        self.pulls
            .retain(|(sa, _), p| now < p.started + timeout && phase1.established(sa).is_some());
        self.per_sa.clear();
        let mut earliest = Millis::MAX;
        for ((sa, _), p) in &self.pulls {
            *self.per_sa.entry(*sa).or_insert(0) += 1;
            earliest = earliest.min(p.started + timeout);
        }
        earliest
    }

    /// Handles a GROUPKEY-PULL datagram; returns the GM it registered
    /// (message 3 answered), with its group's index.
    pub(crate) fn handle(
        &mut self,
        now: Millis,
        from: SocketAddr,
        header: &IsakmpHeader,
        data: &[u8],
        cx: &mut PullContext<'_>,
    ) -> Option<(usize, GmRecord, u64)> {
        let key = cookies(&header.initiator_cookie, &header.responder_cookie);
        let mid = header.message_id;
        let Some(sa) = cx.phase1.established(&key) else {
            cx.out.reject(from, Reject::UnknownExchange, None);
            return None;
        };
        if sa.peer != from || mid == 0 {
            cx.out.reject(from, Reject::UnknownExchange, None);
            return None;
        }
        let (suite, keys, last_block, vendor) =
            (sa.suite, sa.keys.clone(), *sa.last_block, sa.vendor);
        let (gm_identity, credentials) = (sa.peer_identity.to_owned(), sa.credentials.to_vec());
        let agent_groups = sa.agent_groups.map(<[u32]>::to_vec);
        if let Some(p) = self.pulls.get(&(key, mid)) {
            if p.last_in == data {
                cx.out.send(from, p.last_out.clone());
                cx.out.reject(from, Reject::Retransmit, None);
                return None;
            }
        }
        let open = self.per_sa.get(&key).copied().unwrap_or(0);
        match self.pulls.get(&(key, mid)).map(|p| &p.state) {
            None if open >= MAX_PULLS_PER_SA => {
                cx.out.reject(from, Reject::HalfOpenLimit, None);
                None
            }
            None => {
                self.message_1(
                    now,
                    from,
                    key,
                    mid,
                    data,
                    (suite, &keys, &last_block, vendor),
                    (&gm_identity, &credentials, agent_groups.as_deref()),
                    cx,
                );
                None
            }
            Some(PullState::SentMsg2 { group_idx }) => {
                let group_idx = *group_idx;
                self.message_3(
                    now,
                    from,
                    key,
                    mid,
                    data,
                    group_idx,
                    (suite, &keys, vendor),
                    gm_identity,
                    cx,
                )
            }
            Some(PullState::Done) => {
                cx.out.reject(from, Reject::UnknownExchange, None);
                None
            }
        }
    }

    /// PULL message 1 (HASH(1), Ni, ID): checks the group, the credential
    /// and the authorization, answers HASH(2), Nr, SA.
    #[allow(clippy::too_many_arguments)]
    fn message_1(
        &mut self,
        now: Millis,
        from: SocketAddr,
        key: [u8; 16],
        mid: u32,
        data: &[u8],
        (suite, keys, last_block, vendor): (Suite, &Phase1Keys, &[u8; 16], PeerVendor),
        (gm_identity, credentials, agent_groups): (&str, &[Credential], Option<&[u32]>),
        cx: &mut PullContext<'_>,
    ) {
        let iv = phase2_iv(suite.cipher, suite.prf, last_block, mid);
        let (dec, raws) = match open_protected(suite, keys, data, &iv, &[]) {
            Ok(opened) => opened,
            Err(reason) => return refuse_protected(cx, key, from, reason),
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
        let nonce_len = ni.as_ref().map(Vec::len);
        let Some(ni) = ni.filter(|n| (8..=128).contains(&n.len())) else {
            let detail = match nonce_len {
                Some(n) => format!("PULL 1 NONCE length {n} (8-128)"),
                None => "PULL 1 has no NONCE payload".into(),
            };
            return refuse(
                cx,
                key,
                from,
                (Reject::Malformed, NotifyType::PAYLOAD_MALFORMED),
                Some(detail),
            );
        };
        let Some(group_idx) = group.and_then(|g| cx.groups.index(g)) else {
            return refuse(
                cx,
                key,
                from,
                (Reject::UnknownGroup, NotifyType::INVALID_ID_INFORMATION),
                Some(match group {
                    Some(g) => format!("PULL 1 asks for group {g}, which this KS does not serve"),
                    None => "PULL 1 has no ID_KEY_ID payload".into(),
                }),
            );
        };
        if !accepts(cx.phase1, cx.groups, group_idx, credentials, agent_groups) {
            return refuse(
                cx,
                key,
                from,
                (
                    Reject::CredentialNotAccepted,
                    NotifyType::INVALID_ID_INFORMATION,
                ),
                Some(match agent_groups {
                    Some(own) if !own.contains(&group.unwrap_or(0)) => format!(
                        "the certificate's enrolled agent may join groups {own:?} only, not {g}",
                        g = group.unwrap_or(0)
                    ),
                    _ => format!(
                        "the phase 1 credential is not one group {g} accepts",
                        g = group.unwrap_or(0)
                    ),
                }),
            );
        }
        let Some(group) = cx.groups.get(group_idx) else {
            return;
        };
        if let Err((why, detail)) = admits(group, suite, from, gm_identity) {
            return refuse(cx, key, from, why, Some(detail));
        }
        let class = classify(cx.asr9000, from, &vendor);
        let with_ack = group.rekey.transport.is_unicast()
            && crate::ack_policy::kek_ack_requested(group.rekey.ack, class).is_some();
        let nr = rng::bytes(cx.rng, 32);
        let Some(wire) = cx.groups.payloads(group_idx) else {
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
        let Ok((reply, next_iv)) = encrypt_body(h, body, suite.cipher, &keys.enc_key, &dec.next_iv)
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
                last_out: reply.clone(),
            },
        );
        *self.per_sa.entry(key).or_insert(0) += 1;
        cx.phase1.sweep_by(now + self.timeout_ms);
        cx.out.send(from, reply);
    }

    /// PULL message 3 (HASH(3), optionally a GAP asking for sender IDs):
    /// grants the IDs, answers HASH(4), SEQ, KD, and registers the GM.
    #[allow(clippy::too_many_arguments)]
    fn message_3(
        &mut self,
        now: Millis,
        from: SocketAddr,
        key: [u8; 16],
        mid: u32,
        data: &[u8],
        group_idx: usize,
        (suite, keys, vendor): (Suite, &Phase1Keys, PeerVendor),
        gm_identity: String,
        cx: &mut PullContext<'_>,
    ) -> Option<(usize, GmRecord, u64)> {
        let p = self.pulls.get(&(key, mid))?;
        let started = p.started;
        let (dec, raws) = match open_protected(suite, keys, data, &p.iv, &[&p.ni_b, &p.nr_b]) {
            Ok(opened) => opened,
            Err(reason) => {
                refuse_protected(cx, key, from, reason);
                return None;
            }
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
        // The group may have been deleted or changed since PULL 1.
        let Some(group) = cx
            .groups
            .get(group_idx)
            .filter(|_| !cx.groups.is_disabled(group_idx))
        else {
            refuse(
                cx,
                key,
                from,
                (Reject::UnknownGroup, NotifyType::INVALID_ID_INFORMATION),
                Some("PULL 3 for a group deleted since PULL 1".into()),
            );
            return None;
        };
        if let Err((why, detail)) = admits(group, suite, from, &gm_identity) {
            refuse(cx, key, from, why, Some(detail));
            return None;
        }
        if cx.groups.is_blocked(group_idx) {
            refuse(
                cx,
                key,
                from,
                (Reject::CoopBlocking, NotifyType::INVALID_ID_INFORMATION),
                Some("COOP secondary without its primary's keys yet: new GM temporary blocking (the GM tries its next key server)".into()),
            );
            return None;
        }
        let group_id = group.keys.group_id;
        let sids = cx.groups.grant_sids(group_id, sid_request.unwrap_or(0));
        let wire = cx.groups.payloads(group_idx)?;
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
            return None;
        };
        let h = IsakmpHeader {
            next_payload: first,
            flags: Flags::default(),
            ..dec.header
        };
        let Ok((reply, _)) = encrypt_body(h, body, suite.cipher, &keys.enc_key, &dec.next_iv)
        else {
            return None;
        };
        if let Some(p) = self.pulls.get_mut(&(key, mid)) {
            p.state = PullState::Done;
            p.last_in = data.to_vec();
            p.last_out = reply.clone();
        }
        let class = classify(cx.asr9000, from, &vendor);
        let record = GmRecord {
            gm_identity,
            addr: from,
            group_id,
            class,
            version: vendor.version(),
            features: vendor.features(),
            sids,
            registered_at: now,
        };
        cx.out.send(from, reply);
        Some((group_idx, record, now.saturating_sub(started)))
    }
}
