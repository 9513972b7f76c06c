//! The phase 1 responder: IKEv1 main mode (RFC 2409 section 5) with
//! pre-shared keys or RSA signatures. It owns every phase 1 SA, half-open
//! or established, the PSKs and the PKI, and the half-open flood defence;
//! the GROUPKEY-PULL server reads established SAs through
//! [`Phase1Responder::established`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use gkm_wire::consts::{Doi, Flags, NotifyType};
use gkm_wire::payload::{CertReq, KeyExchange, Nonce};
use gkm_wire::{Body, IsakmpHeader, Message, Payload};
use zeroize::Zeroizing;

use super::config::{
    Credential, EnrolledAgents, GroupAuth, KsLimits, PskEntry, MAX_PSK_CANDIDATES,
};
use super::events::{wire_detail, KsEvent, KsOutbox, Reject};
use crate::identity::identity_string;

mod auth;
mod half_open;
mod mm1;
mod notify;

use crate::crypto::{rng, CertificateAuthority, DhBackend, EngineRng, Phase1Signer};
use crate::engine::{Millis, PeerVendor};
use crate::ike::{phase1_iv, AuthKind, Phase1Keys, Suite, Transcript};
use half_open::HalfOpen;

/// How often expired state is swept.
pub const SWEEP_INTERVAL_MS: u64 = 1000;

/// A phase 1 SA's key: initiator cookie ‖ responder cookie.
pub(crate) fn cookies(i: &[u8; 8], r: &[u8; 8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..8].copy_from_slice(i);
    c[8..].copy_from_slice(r);
    c
}

enum P1State {
    /// MM2 sent; waiting for MM3.
    SentSa,
    /// MM4 sent; waiting for MM5. The keys are derived when MM5 comes:
    /// with pre-shared keys, each candidate PSK for the source is tried.
    SentKe {
        gxy: Zeroizing<Vec<u8>>,
        gxi: Vec<u8>,
        gxr: Vec<u8>,
        iv: [u8; 16],
    },
    /// MM6 sent.
    Established {
        keys: Phase1Keys,
        last_block: [u8; 16],
        peer_identity: String,
        /// What authenticated the peer (several only when groups share a PSK).
        credentials: Vec<Credential>,
        /// With certificates: the subject (DER) of the peer's verified
        /// certificate.
        cert_subject: Option<Vec<u8>>,
        /// An enrolled agent's certificate: the groups it may join.
        agent_groups: Option<Vec<u32>>,
        expires: Millis,
    },
}

struct P1Sa {
    peer: SocketAddr,
    icky: [u8; 8],
    rcky: [u8; 8],
    suite: Suite,
    doi: Doi,
    sai_b: Vec<u8>,
    vendor: PeerVendor,
    state: P1State,
    created: Millis,
    /// The last peer datagram and our answer, for retransmissions.
    last_in: Vec<u8>,
    last_out: Vec<u8>,
    ni_b: Vec<u8>,
    nr_b: Vec<u8>,
}

/// An established phase 1 SA as the GROUPKEY-PULL server sees it.
pub(crate) struct EstablishedSa<'a> {
    /// The peer's address and port.
    pub peer: SocketAddr,
    /// The negotiated suite.
    pub suite: Suite,
    /// The phase 1 keys.
    pub keys: &'a Phase1Keys,
    /// The last CBC block of main mode (phase 2 IVs derive from it).
    pub last_block: &'a [u8; 16],
    /// The peer's identity.
    pub peer_identity: &'a str,
    /// What authenticated it.
    pub credentials: &'a [Credential],
    /// With certificates: the subject (DER) of its verified certificate.
    pub cert_subject: Option<&'a [u8]>,
    /// An enrolled agent's certificate: the groups it may join.
    pub agent_groups: Option<&'a [u32]>,
    /// What its Vendor IDs said.
    pub vendor: PeerVendor,
}

/// The phase 1 responder.
pub(crate) struct Phase1Responder {
    /// The KS's own address (its phase 1 identity).
    address: Ipv4Addr,
    /// Its IPv6 address: the phase 1 identity IPv6 peers get, if set.
    address_v6: Option<Ipv6Addr>,
    psks: Vec<PskEntry>,
    ca: Option<CertificateAuthority>,
    certificates: Vec<(Vec<u8>, Phase1Signer)>,
    /// Enrolled and revoked agents.
    agents: EnrolledAgents,
    limits: KsLimits,
    max_life_secs: u32,
    dh_backend: DhBackend,
    export_keys: bool,
    sas: HashMap<[u8; 16], P1Sa>,
    /// (peer, initiator cookie) → responder cookie, for MM1 retransmissions.
    by_icky: HashMap<(SocketAddr, [u8; 8]), [u8; 8]>,
    /// Established phase 1 SAs by peer identity, for INITIAL-CONTACT.
    by_peer_identity: HashMap<String, Vec<[u8; 16]>>,
    /// The half-open flood defence.
    half_open: HalfOpen,
    /// The groups with `legacy_phase1` on (identity, authentication): a
    /// legacy suite is chosen in main mode 1 only for a peer one of them
    /// could accept.
    legacy_groups: Vec<(u32, GroupAuth)>,
    /// When the SA table (and the PULLs of its SAs) is next swept.
    next_sweep: Millis,
}

/// What the responder is configured with.
pub(crate) struct Phase1Config {
    /// The KS's own address (its phase 1 identity).
    pub address: Ipv4Addr,
    /// Its IPv6 address (the phase 1 identity of IPv6 peers), if any.
    pub address_v6: Option<Ipv6Addr>,
    pub psks: Vec<PskEntry>,
    pub ca: Option<CertificateAuthority>,
    pub certificates: Vec<(Vec<u8>, Phase1Signer)>,
    pub limits: KsLimits,
    pub max_life_secs: u32,
    pub dh_backend: DhBackend,
    pub export_keys: bool,
}

impl Phase1Responder {
    /// A responder with no SA yet.
    pub(crate) fn new(c: Phase1Config) -> Self {
        Self {
            address: c.address,
            address_v6: c.address_v6,
            psks: c.psks,
            ca: c.ca,
            certificates: c.certificates,
            agents: EnrolledAgents::default(),
            limits: c.limits,
            max_life_secs: c.max_life_secs,
            dh_backend: c.dh_backend,
            export_keys: c.export_keys,
            sas: HashMap::new(),
            by_icky: HashMap::new(),
            by_peer_identity: HashMap::new(),
            half_open: HalfOpen::new(c.limits),
            legacy_groups: Vec::new(),
            next_sweep: 0,
        }
    }

    /// Phase 1 SAs held, half-open or established.
    pub(crate) fn sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Whether the key server has certificate credentials (a certificate
    /// with its key, and CAs), without copying them.
    pub(crate) fn has_pki(&self) -> bool {
        !self.certificates.is_empty() && self.ca.is_some()
    }

    /// This key server's certificate credentials for phase 1 (its
    /// certificate, DER, its key and the CAs), when configured: a COOP
    /// session to a peer on certificates initiates with them.
    pub(crate) fn pki(&self) -> Option<crate::ike::initiator::OwnCertificate> {
        let (cert, key) = self.certificates.first().cloned()?;
        Some(crate::ike::initiator::OwnCertificate {
            cert,
            key,
            ca: self.ca.clone()?,
        })
    }

    /// Half-open exchanges.
    pub(crate) fn half_open_count(&self) -> usize {
        self.half_open.count()
    }

    /// The established SA with these cookies.
    pub(crate) fn established(&self, key: &[u8; 16]) -> Option<EstablishedSa<'_>> {
        let sa = self.sas.get(key)?;
        let P1State::Established {
            keys,
            last_block,
            peer_identity,
            credentials,
            cert_subject,
            agent_groups,
            ..
        } = &sa.state
        else {
            return None;
        };
        Some(EstablishedSa {
            peer: sa.peer,
            suite: sa.suite,
            keys,
            last_block,
            peer_identity,
            credentials,
            cert_subject: cert_subject.as_deref(),
            agent_groups: agent_groups.as_deref(),
            vendor: sa.vendor,
        })
    }

    /// Sets the groups with `legacy_phase1` on (their identity and
    /// authentication); SAs already established keep their suite, and the
    /// GROUPKEY-PULL check refuses a legacy SA for a group without it.
    pub(crate) fn set_legacy_groups(&mut self, groups: Vec<(u32, GroupAuth)>) {
        self.legacy_groups = groups;
    }

    /// Whether a legacy suite with `auth` may be chosen for a peer at
    /// `from`: some group with `legacy_phase1` on could accept it, by its
    /// certificate or by a PSK that covers the source and that group takes.
    fn legacy_allowed(&self, auth: AuthKind, from: IpAddr) -> bool {
        if self.legacy_groups.is_empty() {
            return false;
        }
        match auth {
            AuthKind::Signature(_) => self
                .legacy_groups
                .iter()
                .any(|&(_, how)| how == GroupAuth::Certificate),
            AuthKind::Psk => {
                // The source's candidates once (at most 16), each checked
                // against the legacy groups: bounded work before the peer
                // has proved anything.
                let candidates = self.psk_candidates(from);
                self.legacy_groups.iter().any(|&(id, how)| {
                    how == GroupAuth::Psk && {
                        let own = self.has_own_psk(id);
                        candidates.iter().any(|e| match e.credential {
                            Credential::GroupPsk(g) => own && g == id,
                            Credential::Keyring(_) => !own,
                            Credential::Certificate | Credential::CoopPeer(_) => false,
                        })
                    }
                })
            }
        }
    }

    /// Whether some PSK entry is group `group_id`'s own.
    pub(crate) fn has_own_psk(&self, group_id: u32) -> bool {
        let own = Credential::GroupPsk(group_id);
        self.psks.iter().any(|e| e.credential == own)
    }

    /// When the next sweep is due, while there is anything to sweep.
    pub(crate) fn sweep_at(&self) -> Option<Millis> {
        (!self.sas.is_empty()).then_some(self.next_sweep)
    }

    /// Whether a sweep is due.
    pub(crate) fn sweep_due(&self, now: Millis) -> bool {
        now >= self.next_sweep
    }

    /// New state with a deadline: the sweep comes no later than it.
    pub(crate) fn sweep_by(&mut self, deadline: Millis) {
        self.next_sweep = self.next_sweep.min(deadline);
    }

    /// Sets the next sweep (the caller's earliest deadline, at least a
    /// [`SWEEP_INTERVAL_MS`] away).
    pub(crate) fn sweep_next(&mut self, at: Millis, now: Millis) {
        self.next_sweep = at.max(now + SWEEP_INTERVAL_MS);
    }

    /// Forgets SAs past their lifetime and half-open exchanges past their
    /// timeout; returns the earliest deadline among those left.
    pub(crate) fn sweep(&mut self, now: Millis) -> Millis {
        let mut gone = Vec::new();
        let mut earliest = Millis::MAX;
        for (k, sa) in &self.sas {
            let deadline = match &sa.state {
                P1State::Established { expires, .. } => *expires,
                _ => sa.created + self.limits.half_open_timeout_ms,
            };
            if now >= deadline {
                gone.push(*k);
            } else {
                earliest = earliest.min(deadline);
            }
        }
        for k in gone {
            self.remove_sa(&k);
        }
        earliest
    }

    /// Refuses an aggressive-mode message (GKM serves main mode only).
    pub(crate) fn refuse_aggressive(
        &self,
        out: &mut KsOutbox,
        from: SocketAddr,
        header: &IsakmpHeader,
    ) {
        notify::clear(
            out,
            from,
            (header.initiator_cookie, header.responder_cookie),
            Doi::IPSEC,
            NotifyType::UNSUPPORTED_EXCHANGE_TYPE,
        );
        out.reject(
            from,
            Reject::UnsupportedExchange,
            Some(NotifyType::UNSUPPORTED_EXCHANGE_TYPE),
        );
    }

    pub(crate) fn remove_sa(&mut self, k: &[u8; 16]) {
        if let Some(sa) = self.sas.remove(k) {
            self.by_icky.remove(&(sa.peer, sa.icky));
            if let P1State::Established { peer_identity, .. } = &sa.state {
                if let Some(keys) = self.by_peer_identity.get_mut(peer_identity) {
                    keys.retain(|x| x != k);
                    if keys.is_empty() {
                        self.by_peer_identity.remove(peer_identity);
                    }
                }
            }
            if !matches!(sa.state, P1State::Established { .. }) {
                self.half_open.closed(sa.peer.ip());
            }
        }
    }

    /// Ends a phase 1 exchange that failed: tells the peer in the clear
    /// (it may not share our keys), forgets the SA, counts the reason.
    fn fail_phase1(
        &mut self,
        out: &mut KsOutbox,
        key: [u8; 16],
        from: SocketAddr,
        reason: Reject,
        notify: NotifyType,
    ) {
        self.fail_phase1_with(out, key, from, (reason, notify, None));
    }

    /// [`Self::fail_phase1`] with a detail for the log line (never one
    /// that depends on a secret).
    fn fail_phase1_with(
        &mut self,
        out: &mut KsOutbox,
        key: [u8; 16],
        from: SocketAddr,
        (reason, notify, detail): (Reject, NotifyType, Option<String>),
    ) {
        if let Some(sa) = self.sas.get(&key) {
            let (icky, rcky, doi) = (sa.icky, sa.rcky, sa.doi);
            notify::clear(out, from, (icky, rcky), doi, notify);
        }
        self.remove_sa(&key);
        out.refuse(from, reason, Some(notify), detail);
    }

    /// A protected Informational notification: HDR*, HASH(1), N.
    pub(crate) fn notify_protected(
        &self,
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
        key: [u8; 16],
        t: NotifyType,
    ) {
        let Some(sa) = self.sas.get(&key) else { return };
        let P1State::Established {
            keys, last_block, ..
        } = &sa.state
        else {
            return;
        };
        notify::protected(
            out,
            rng,
            notify::Protection {
                peer: sa.peer,
                cookies: (sa.icky, sa.rcky),
                suite: sa.suite,
                keys,
                last_block,
            },
            t,
        );
    }

    /// Handles a main-mode (identity protection) message.
    pub(crate) fn main_mode(
        &mut self,
        now: Millis,
        from: SocketAddr,
        header: &IsakmpHeader,
        data: &[u8],
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
    ) {
        if header.responder_cookie == [0; 8] {
            return self.mm1(now, from, header, data, rng, out);
        }
        let key = cookies(&header.initiator_cookie, &header.responder_cookie);
        let Some(sa) = self.sas.get(&key) else {
            return out.reject(from, Reject::UnknownExchange, None);
        };
        if sa.peer != from {
            return out.reject(from, Reject::UnknownExchange, None);
        }
        if sa.last_in == data {
            let reply = sa.last_out.clone();
            out.send(from, reply);
            return out.reject(from, Reject::Retransmit, None);
        }
        match sa.state {
            P1State::SentSa => self.mm3(from, key, data, rng, out),
            P1State::SentKe { .. } => self.mm5(now, from, key, data, rng, out),
            P1State::Established { .. } => out.reject(from, Reject::UnknownExchange, None),
        }
    }

    /// Replaces the pre-shared keys. Exchanges past message 3 try the new
    /// set when their message 5 arrives, and established phase 1 SAs that
    /// a key now changed or gone made are ended, so a rotation, a clear or
    /// a switch to certificates leaves the old key opening nothing.
    pub(crate) fn set_agents(&mut self, agents: EnrolledAgents) {
        self.agents = agents;
    }

    pub(crate) fn set_psks(&mut self, psks: Vec<PskEntry>) {
        let changed: Vec<Credential> = self
            .psks
            .iter()
            .filter(|old| {
                !psks
                    .iter()
                    .any(|new| new.credential == old.credential && new.key == old.key)
            })
            .map(|e| e.credential)
            .collect();
        self.psks = psks;
        if changed.is_empty() {
            return;
        }
        let stale: Vec<[u8; 16]> = self
            .sas
            .iter()
            .filter(|(_, sa)| {
                matches!(&sa.state, P1State::Established { credentials, .. }
                    if credentials.iter().any(|c| changed.contains(c)))
            })
            .map(|(k, _)| *k)
            .collect();
        for k in &stale {
            self.remove_sa(k);
        }
    }

    /// The PSKs to try for a source: every entry covering it, the most
    /// specific first (table order among equals), at most
    /// [`MAX_PSK_CANDIDATES`].
    pub(crate) fn psk_candidates(&self, a: IpAddr) -> Vec<&PskEntry> {
        let mut v: Vec<(u8, &PskEntry)> = self
            .psks
            .iter()
            .filter_map(|e| e.specificity(a).map(|l| (l, e)))
            .collect();
        v.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
        v.truncate(MAX_PSK_CANDIDATES);
        v.into_iter().map(|(_, e)| e).collect()
    }

    fn mm3(
        &mut self,
        from: SocketAddr,
        key: [u8; 16],
        data: &[u8],
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
    ) {
        let Some(msg) = parse_or_refuse(data, from, out) else {
            return;
        };
        let (mut ke, mut ni) = (None, None);
        for p in msg.payloads().unwrap_or_default() {
            match p {
                Payload::KeyExchange(k) => ke = Some(k.0),
                Payload::Nonce(n) => ni = Some(n.0),
                _ => {}
            }
        }
        let Some(sa) = self.sas.get(&key) else { return };
        let suite = sa.suite;
        let (icky, rcky, doi) = (sa.icky, sa.rcky, sa.doi);
        let (Some(gxi), Some(ni)) = (ke, ni) else {
            notify::clear(out, from, (icky, rcky), doi, NotifyType::PAYLOAD_MALFORMED);
            let missing = if ke.is_none() { "KE" } else { "NONCE" };
            return out.refuse(
                from,
                Reject::Malformed,
                Some(NotifyType::PAYLOAD_MALFORMED),
                Some(format!("main mode 3 has no {missing} payload")),
            );
        };
        if gxi.len() != suite.group.public_len() || !(8..=256).contains(&ni.len()) {
            notify::clear(
                out,
                from,
                (icky, rcky),
                doi,
                NotifyType::INVALID_KEY_INFORMATION,
            );
            return out.refuse(
                from,
                Reject::Malformed,
                Some(NotifyType::INVALID_KEY_INFORMATION),
                Some(format!(
                    "main mode 3 KE length {} (the group {} wants {}), NONCE length {} (8-256)",
                    gxi.len(),
                    suite.group.oakley(),
                    suite.group.public_len(),
                    ni.len()
                )),
            );
        }
        if suite.auth == AuthKind::Psk && self.psk_candidates(from.ip()).is_empty() {
            return self.fail_phase1(
                out,
                key,
                from,
                Reject::AuthenticationFailed,
                NotifyType::AUTHENTICATION_FAILED,
            );
        }
        let (dh, gxr) = suite.group.generate(rng, self.dh_backend);
        let Ok(gxy) = dh.shared(gxi) else {
            return self.fail_phase1(
                out,
                key,
                from,
                Reject::Malformed,
                NotifyType::INVALID_KEY_INFORMATION,
            );
        };
        let nr = rng::bytes(rng, 32);
        let iv = phase1_iv(&suite, gxi, &gxr);
        let mut payloads = vec![
            Payload::KeyExchange(KeyExchange(&gxr)),
            Payload::Nonce(Nonce(&nr)),
        ];
        if suite.auth.is_signature() {
            payloads.push(Payload::CertReq(CertReq {
                encoding: gkm_wire::consts::CertEncoding::X509_SIGNATURE,
                authority: &[],
            }));
        }
        let h = IsakmpHeader {
            flags: Flags::default(),
            message_id: 0,
            ..msg.header
        };
        let Ok(reply) = (Message {
            header: h,
            body: Body::Payloads(payloads),
        })
        .to_vec() else {
            return;
        };
        let Some(sa) = self.sas.get_mut(&key) else {
            return;
        };
        sa.ni_b = ni.to_vec();
        sa.nr_b = nr;
        sa.state = P1State::SentKe {
            gxy,
            gxi: gxi.to_vec(),
            gxr,
            iv,
        };
        sa.last_in = data.to_vec();
        sa.last_out = reply.clone();
        out.send(from, reply);
    }

    fn mm5(
        &mut self,
        now: Millis,
        from: SocketAddr,
        key: [u8; 16],
        data: &[u8],
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
    ) {
        let Some(sa) = self.sas.get(&key) else { return };
        let P1State::SentKe { gxy, gxi, gxr, iv } = &sa.state else {
            return;
        };
        let (icky, suite) = (sa.icky, sa.suite);
        let agreed = auth::Agreed {
            suite,
            gxy,
            transcript: Transcript {
                gxi,
                gxr,
                cky_i: &sa.icky,
                cky_r: &sa.rcky,
                sai_b: &sa.sai_b,
            },
            nonces: (&sa.ni_b, &sa.nr_b),
            iv,
        };
        // A wrong PSK shows up here: no candidate's keys open the message
        // to a chain whose HASH_I verifies.
        let candidates = self.psk_candidates(from.ip());
        let opened = match auth::open(&agreed, &candidates, data) {
            Ok(o) => o,
            Err(notify) => {
                return self.fail_phase1(out, key, from, Reject::AuthenticationFailed, notify)
            }
        };
        let mut vendor = sa.vendor;
        let who = match auth::initiator(&opened.dec, &mut vendor) {
            Ok(w) => w,
            Err(notify) => {
                return self.fail_phase1(out, key, from, Reject::AuthenticationFailed, notify)
            }
        };
        let (cert_subject, agent_groups) = match auth::verify(
            &agreed,
            &opened.keys,
            &who,
            self.ca.as_ref(),
            &self.agents,
            now,
            from,
        ) {
            Ok(s) => s,
            Err(refusal) => return self.fail_phase1_with(out, key, from, refusal),
        };
        let peer_identity = identity_string(&who.idii.identity);
        let initial_contact = who.initial_contact;
        let own_identity = auth::own_identity(from.ip(), self.address, self.address_v6);
        let Some((reply, last_block)) = auth::message_6(
            &agreed,
            &opened,
            &who,
            own_identity,
            &self.certificates,
            rng,
        ) else {
            return;
        };
        let auth::Opened {
            keys, credentials, ..
        } = opened;
        let expires = now + u64::from(suite.life_secs) * 1000;
        let peer_ip = from.ip();
        let mut elapsed_ms = 0;
        if let Some(sa) = self.sas.get_mut(&key) {
            elapsed_ms = now.saturating_sub(sa.created);
            sa.vendor = vendor;
            sa.state = P1State::Established {
                keys,
                last_block,
                peer_identity: peer_identity.clone(),
                credentials: credentials.clone(),
                cert_subject,
                agent_groups,
                expires,
            };
            sa.last_in = data.to_vec();
            sa.last_out = reply.clone();
        }
        self.half_open.closed(peer_ip);
        if initial_contact {
            // RFC 2407 section 4.6.3.3: the peer has no other SAs with us;
            // drop old ones. Only those the same credential made: a PSK
            // identity is the peer's claim, and one group's GM must not
            // end another group's SAs by claiming its identity.
            let stale: Vec<[u8; 16]> = self
                .by_peer_identity
                .get(&peer_identity)
                .into_iter()
                .flatten()
                .filter(|k| **k != key)
                .filter(|k| {
                    self.sas.get(*k).is_some_and(|sa| {
                        matches!(&sa.state, P1State::Established { credentials: c, .. } if *c == credentials)
                    })
                })
                .copied()
                .collect();
            for k in &stale {
                self.remove_sa(k);
            }
        }
        self.by_peer_identity
            .entry(peer_identity.clone())
            .or_default()
            .push(key);
        out.counters.phase1_established += 1;
        if self.export_keys {
            if let Some(P1State::Established { keys, .. }) = self.sas.get(&key).map(|s| &s.state) {
                out.event(KsEvent::Phase1Keys {
                    initiator_cookie: icky,
                    enc_key: keys.enc_key.clone(),
                });
            }
        }
        out.event(KsEvent::Phase1Established {
            peer: from,
            peer_identity,
            credentials,
            method: suite.auth,
            elapsed_ms,
        });
        out.send(from, reply);
    }
}

/// The message, or a PAYLOAD-MALFORMED refusal naming the field that did
/// not parse.
fn parse_or_refuse<'a>(
    data: &'a [u8],
    from: SocketAddr,
    out: &mut KsOutbox,
) -> Option<Message<'a>> {
    Message::parse(data)
        .map_err(|e| {
            out.refuse(
                from,
                Reject::Malformed,
                Some(NotifyType::PAYLOAD_MALFORMED),
                wire_detail(e),
            )
        })
        .ok()
}
