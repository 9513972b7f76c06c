//! The group member engine (initiator): main mode to a key server, then
//! GROUPKEY-PULL for one group; retransmission with backoff, fail-over to
//! the next key server, and re-registration before the TEKs expire.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use gkm_wire::consts::{
    Doi, ExchangeType, Flags, PayloadType, GDOI_SITUATION_NONE, SIT_IDENTITY_ONLY,
};
use gkm_wire::payload::{Gap, SaLayout};
use gkm_wire::{IsakmpHeader, Message, Payload};

use crate::crypto::EngineRng;
use crate::engine::{Millis, Transmit};
use crate::group::Tek;

mod config;
mod group;
mod main_mode;
mod pull;
mod state;

use state::{SentPull1, SentPull3, State, P1};

pub use config::{CertAuth, GmAuth, GmConfig, GmEvent, GmFailure, GmIdentity};

use crate::ike::initiator::{InitiatorCert, InitiatorParams, MainModeInitiator};
use crate::ike::{
    decrypt_message, encrypt_body, hashed_chain, phase2_iv, verify_hashed_chain, AuthKind, Suite,
};
pub use group::{GmCounters, GmGroup, InstalledTek};

/// The group member engine.
pub struct GroupMember {
    cfg: GmConfig,
    rng: Box<dyn EngineRng>,
    ks_index: usize,
    icky: [u8; 8],
    state: State,
    last_out: Option<(Vec<u8>, Millis, u32)>,
    contacted: bool,
    /// Datagrams and events for the caller.
    out: crate::engine::Outbox<GmEvent>,
    /// Keys and rekey state once registered.
    group: Option<GmGroup>,
    /// ACKs waiting out their multicast jitter.
    delayed: Vec<(Millis, Transmit)>,
    counters: GmCounters,
}

impl GroupMember {
    /// A GM that starts registering at the first `handle_timeout`.
    pub fn new(cfg: GmConfig, rng: Box<dyn EngineRng>) -> Self {
        Self {
            cfg,
            rng,
            ks_index: 0,
            icky: [0; 8],
            state: State::Idle { at: 0 },
            last_out: None,
            contacted: false,
            out: crate::engine::Outbox::default(),
            group: None,
            delayed: Vec::new(),
            counters: Default::default(),
        }
    }

    /// Replaces the certificate credential (a renewed certificate and
    /// key); the next phase 1 uses it, SAs and keys held stay. False (and
    /// nothing changed) when the GM authenticates with a PSK.
    pub fn set_certificate(&mut self, c: CertAuth) -> bool {
        match &mut self.cfg.auth {
            GmAuth::Certificate(old) => {
                **old = c;
                true
            }
            GmAuth::Psk(_) => false,
        }
    }

    /// The key server currently in use.
    pub fn key_server(&self) -> Option<SocketAddr> {
        self.cfg.key_servers.get(self.ks_index).copied()
    }

    /// The phase 1 suites offered to the current key server.
    fn phase1_offers(&self, auth: AuthKind, life_secs: u32) -> Vec<Suite> {
        let legacy = self.legacy_phase1();
        match &self.cfg.phase1_suites {
            None => Suite::offers(auth, life_secs, legacy),
            Some(v) => v
                .iter()
                .filter(|s| s.auth == auth && (legacy || !s.is_legacy()))
                .map(|s| Suite { life_secs, ..*s })
                .collect(),
        }
    }

    /// Whether the current key server is offered the legacy phase 1 suites.
    fn legacy_phase1(&self) -> bool {
        self.key_server()
            .is_some_and(|ks| self.cfg.legacy_phase1_key_servers.contains(&ks))
    }

    /// Whether the GM holds keys now.
    pub fn is_registered(&self) -> bool {
        matches!(self.state, State::Registered { .. })
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.poll_transmit()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<GmEvent> {
        self.out.poll_event()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let own = match &self.state {
            State::Idle { at } => Some(*at),
            State::Registered { renew_at } => Some(*renew_at),
            _ => self.last_out.as_ref().map(|(_, at, _)| *at),
        };
        let delayed = self.delayed.iter().map(|(at, _)| *at).min();
        [own, delayed].into_iter().flatten().min()
    }

    /// A rekey moved the re-registration time.
    fn set_renew_at(&mut self, at: Millis) {
        if let State::Registered { renew_at } = &mut self.state {
            *renew_at = at;
        }
    }

    fn send(&mut self, now: Millis, payload: Vec<u8>) {
        let Some(to) = self.key_server() else { return };
        self.last_out = Some((payload.clone(), now + self.cfg.retransmit_initial_ms, 1));
        self.out.send(to, payload);
    }

    fn fail(&mut self, now: Millis, reason: GmFailure) {
        if let Some(ks) = self.key_server() {
            self.out.event(GmEvent::AttemptFailed { ks, reason });
        }
        self.ks_index = (self.ks_index + 1) % self.cfg.key_servers.len().max(1);
        self.last_out = None;
        self.state = State::Idle {
            at: now + self.cfg.retransmit_initial_ms,
        };
    }

    /// Records a failed attempt and yields the state to continue from.
    fn failed(&mut self, now: Millis, reason: GmFailure) -> State {
        self.fail(now, reason);
        std::mem::replace(&mut self.state, State::Idle { at: now })
    }

    /// Drives retransmissions, fail-over and re-registration.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.release_delayed(now);
        match self.state {
            State::Idle { at } | State::Registered { renew_at: at } if now >= at => {
                return self.start(now)
            }
            State::Idle { .. } | State::Registered { .. } => return,
            _ => {}
        }
        let Some((payload, at, n)) = self.last_out.clone() else {
            return;
        };
        if now < at {
            return;
        }
        if n >= self.cfg.max_transmissions {
            return self.fail(now, GmFailure::Timeout);
        }
        let backoff = self.cfg.retransmit_initial_ms << n.min(6);
        self.last_out = Some((payload.clone(), now + backoff, n + 1));
        if let Some(to) = self.key_server() {
            self.out.send(to, payload);
        }
    }

    fn start(&mut self, now: Millis) {
        let offers = self.offers();
        let params = initiator_params(&self.cfg, self.key_server(), self.contacted, &offers);
        let Some((mm, out)) = MainModeInitiator::start(&params, self.rng.as_mut()) else {
            return;
        };
        self.icky = mm.icky();
        self.state = State::MainMode(Box::new(mm));
        self.send(now, out);
    }

    /// The phase 1 suites offered to the current key server, with its
    /// authentication method and the configured lifetime.
    fn offers(&self) -> Vec<Suite> {
        let auth = match &self.cfg.auth {
            GmAuth::Psk(_) => AuthKind::Psk,
            GmAuth::Certificate(c) => AuthKind::Signature(c.key.kind()),
        };
        self.phase1_offers(auth, self.cfg.phase1_life_secs)
    }

    /// Sends `HASH(n), rest...` of the GROUPKEY-PULL `mid`, encrypted under
    /// phase 1 with `iv`; returns the IV for the next message.
    fn send_pull(
        &mut self,
        now: Millis,
        p1: &P1,
        mid: u32,
        prefix: &[&[u8]],
        rest: &[Payload<'_>],
        iv: &[u8; 16],
    ) -> Option<[u8; 16]> {
        let (first, body) =
            hashed_chain(p1.suite.prf, &p1.keys.skeyid_a, mid, prefix, rest).ok()?;
        let h = IsakmpHeader {
            next_payload: first,
            ..self.header(ExchangeType::GROUPKEY_PULL, p1.rcky, mid)
        };
        let (out, next_iv) = encrypt_body(h, body, p1.suite.cipher, &p1.keys.enc_key, iv).ok()?;
        self.send(now, out);
        Some(next_iv)
    }

    fn header(&self, exchange: ExchangeType, rcky: [u8; 8], message_id: u32) -> IsakmpHeader {
        IsakmpHeader {
            initiator_cookie: self.icky,
            responder_cookie: rcky,
            next_payload: PayloadType::NONE,
            exchange_type: exchange,
            flags: Flags::default(),
            message_id,
            length: 0,
        }
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Millis, from: SocketAddr, data: &[u8]) {
        let Ok(header) = IsakmpHeader::parse(data) else {
            return;
        };
        // A rekey is authenticated by its signature, not its source: it may
        // come from any KS of the group, unicast or multicast.
        if header.exchange_type == ExchangeType::GROUPKEY_PUSH {
            return self.on_push(now, from, data);
        }
        if Some(from) != self.key_server() {
            return;
        }
        if header.initiator_cookie != self.icky {
            return;
        }
        if header.exchange_type == ExchangeType::INFORMATIONAL {
            return self.informational(now, &header, data);
        }
        let state = std::mem::replace(&mut self.state, State::Idle { at: now });
        self.state = match state {
            State::MainMode(mm) if header.exchange_type == ExchangeType::IDENTITY_PROTECTION => {
                self.on_main_mode(now, &header, data, mm)
            }
            State::Pull1(st)
                if header.exchange_type == ExchangeType::GROUPKEY_PULL
                    && header.message_id == st.mid =>
            {
                self.on_pull2(now, data, st)
            }
            State::Pull3(st)
                if header.exchange_type == ExchangeType::GROUPKEY_PULL
                    && header.message_id == st.mid =>
            {
                self.on_pull4(now, from, data, st)
            }
            other => other,
        };
    }

    fn informational(&mut self, now: Millis, header: &IsakmpHeader, data: &[u8]) {
        let notify = if header.flags.contains(Flags::ENCRYPTION) {
            let p1 = match &self.state {
                State::Pull1(SentPull1 { p1, .. }) | State::Pull3(SentPull3 { p1, .. }) => p1,
                _ => return,
            };
            let iv = phase2_iv(
                p1.suite.cipher,
                p1.suite.prf,
                &p1.last_block,
                header.message_id,
            );
            let Ok(dec) = decrypt_message(data, p1.suite.cipher, &p1.keys.enc_key, &iv) else {
                return;
            };
            let Ok(raws) = verify_hashed_chain(
                p1.suite.prf,
                &p1.keys.skeyid_a,
                &dec.header,
                &dec.plaintext,
                &[],
            ) else {
                return;
            };
            raws.iter().find_map(
                |r| match Payload::parse(r.payload_type, r.body, SaLayout::Gdoi) {
                    Ok(Payload::Notification(n)) => Some(n.notify_type),
                    _ => None,
                },
            )
        } else {
            // Unprotected notifications are believed only before phase 1 completes.
            if !matches!(self.state, State::MainMode(_)) {
                return;
            }
            Message::parse(data).ok().and_then(|m| {
                m.payloads()?.iter().find_map(|p| match p {
                    Payload::Notification(n) => Some(n.notify_type),
                    _ => None,
                })
            })
        };
        if let Some(t) = notify.filter(|t| t.0 < 16384) {
            self.fail(now, GmFailure::Notified(t));
        }
    }

    fn on_pull2(&mut self, now: Millis, data: &[u8], st: SentPull1) -> State {
        let SentPull1 { p1, mid, ni, iv } = st;
        let Ok(dec) = decrypt_message(data, p1.suite.cipher, &p1.keys.enc_key, &iv) else {
            return State::Pull1(SentPull1 { p1, mid, ni, iv });
        };
        let Ok(raws) = verify_hashed_chain(
            p1.suite.prf,
            &p1.keys.skeyid_a,
            &dec.header,
            &dec.plaintext,
            &[&ni],
        ) else {
            return self.failed(
                now,
                GmFailure::BadResponse("GROUPKEY-PULL message 2: HASH(2) does not verify"),
            );
        };
        let nr = raws
            .iter()
            .find_map(|r| (r.payload_type == PayloadType::NONCE).then(|| r.body.to_vec()));
        let has_sa = raws.iter().any(|r| r.payload_type == PayloadType::SA);
        let Some(nr) = nr.filter(|_| has_sa) else {
            return self.failed(
                now,
                GmFailure::BadResponse("GROUPKEY-PULL message 2: nonce or SA missing"),
            );
        };
        let gap;
        let mut rest = Vec::new();
        if self.cfg.sender_ids > 0 {
            gap = Gap {
                sender_id_request: Some(self.cfg.sender_ids),
                ..Gap::default()
            };
            rest.push(Payload::Gap(gap));
        }
        let Some(next_iv) = self.send_pull(now, &p1, mid, &[&ni, &nr], &rest, &dec.next_iv) else {
            return State::Idle { at: now };
        };
        State::Pull3(SentPull3 {
            p1,
            mid,
            ni,
            nr,
            sa_plain: dec.plaintext,
            iv: next_iv,
        })
    }

    fn on_pull4(&mut self, now: Millis, from: SocketAddr, data: &[u8], st: SentPull3) -> State {
        let SentPull3 {
            p1,
            mid,
            ni,
            nr,
            sa_plain,
            iv,
        } = st;
        let Ok(dec) = decrypt_message(data, p1.suite.cipher, &p1.keys.enc_key, &iv) else {
            return State::Pull3(SentPull3 {
                p1,
                mid,
                ni,
                nr,
                sa_plain,
                iv,
            });
        };
        let Ok(raws) = verify_hashed_chain(
            p1.suite.prf,
            &p1.keys.skeyid_a,
            &dec.header,
            &dec.plaintext,
            &[&ni, &nr],
        ) else {
            return self.failed(
                now,
                GmFailure::BadResponse("GROUPKEY-PULL message 4: HASH(4) does not verify"),
            );
        };
        match pull::registration(self.cfg.group_id, &raws, &sa_plain) {
            Ok(pull::Registration {
                keys,
                sids,
                ack_requested,
                d3p,
            }) => {
                match GmGroup::registered(now, from, &keys, ack_requested, d3p) {
                    Ok(g) => self.group = Some(g),
                    Err(why) => return self.failed(now, GmFailure::BadResponse(why)),
                }
                let renew_at = self.renew_at(now);
                self.last_out = None;
                self.out.event(GmEvent::Registered {
                    ks: from,
                    keys,
                    sids,
                });
                State::Registered { renew_at }
            }
            Err(why) => self.failed(now, GmFailure::BadResponse(why)),
        }
    }
}

impl GroupMember {
    /// Re-register this long before the last TEK expires, unless a rekey comes.
    fn renew_at(&self, now: Millis) -> Millis {
        self.group.as_ref().map_or(now + 3_600_000, |g| {
            g.renew_at(now, self.cfg.reregister_before_ms)
        })
    }

    /// The group state, once registered.
    pub fn group(&self) -> Option<&GmGroup> {
        self.group.as_ref()
    }

    /// Rekey counters.
    pub fn rekey_counters(&self) -> GmCounters {
        self.counters
    }

    /// The TEK to send on at `now`: the newest one whose ATD has passed.
    pub fn outbound_tek(&self, now: Millis) -> Option<&Tek> {
        self.group.as_ref()?.outbound_tek(now)
    }

    /// TEKs accepted for receiving at `now`.
    pub fn inbound_teks(&self, now: Millis) -> impl Iterator<Item = &Tek> {
        self.group.iter().flat_map(move |g| g.inbound_teks(now))
    }

    /// Sends the ACKs whose multicast jitter has passed; forgets expired TEKs.
    fn release_delayed(&mut self, now: Millis) {
        let (due, later): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(at, _)| *at <= now);
        self.delayed = later;
        for (_, t) in due {
            self.out.transmit(t);
        }
        if let Some(g) = self.group.as_mut() {
            g.expire(now);
        }
    }

    /// The address ACKs name: the configured one, else the IP identity.
    fn ack_address(&self) -> IpAddr {
        self.cfg.ack_address.unwrap_or(match &self.cfg.identity {
            GmIdentity::Ipv4(a) => IpAddr::V4(*a),
            GmIdentity::Ipv6(a) => IpAddr::V6(*a),
            GmIdentity::Dn(_) | GmIdentity::Fqdn(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        })
    }

    /// A GROUPKEY-PUSH: applied by the group, acknowledged as it says (a
    /// multicast push's ACK after a random jitter).
    fn on_push(&mut self, now: Millis, from: SocketAddr, data: &[u8]) {
        let me = self.ack_address();
        let group_id = self.cfg.group_id;
        let Some(g) = self
            .group
            .as_mut()
            .filter(|g| g.kek.is_some() && g.verifier().is_some())
        else {
            self.counters.pushes_unregistered += 1;
            return;
        };
        let accepted = match g.apply_push(now, group_id, data, me) {
            Ok(a) => a,
            Err(e) => {
                self.counters.count(e);
                self.out.event(GmEvent::PushRejected(e));
                return;
            }
        };
        self.counters.pushes_accepted += 1;
        if let Some((payload, multicast)) = accepted.ack {
            self.counters.acks_sent += 1;
            let t = Transmit { to: from, payload };
            if !multicast || self.cfg.multicast_ack_jitter_ms == 0 {
                self.out.transmit(t);
            } else {
                let jitter =
                    u64::from(self.rng.next_u32()) % (self.cfg.multicast_ack_jitter_ms + 1);
                self.delayed.push((now + jitter, t));
            }
        }
        let renew_at = self.renew_at(now);
        self.set_renew_at(renew_at);
        self.out.event(GmEvent::Rekeyed {
            seq: accepted.seq,
            installed: accepted.installed,
            deleted: accepted.deleted,
            new_kek: accepted.new_kek,
            kek_packet_relabelled: accepted.kek_packet_relabelled,
        });
    }
}

/// What main mode with `ks` offers and proves (a free function: the
/// caller borrows the engine's RNG beside it).
fn initiator_params<'a>(
    cfg: &'a GmConfig,
    ks: Option<SocketAddr>,
    contacted: bool,
    offers: &'a [Suite],
) -> InitiatorParams<'a> {
    let (doi, situation) = match ks {
        Some(ks) if cfg.ipsec_doi_key_servers.contains(&ks) => (Doi::IPSEC, SIT_IDENTITY_ONLY),
        _ => (Doi::GDOI, GDOI_SITUATION_NONE),
    };
    let (psk, cert) = match &cfg.auth {
        GmAuth::Psk(k) => (Some(k.as_slice()), None),
        GmAuth::Certificate(c) => (
            None,
            Some(InitiatorCert {
                cert: &c.cert,
                key: &c.key,
                ca: &c.ca,
            }),
        ),
    };
    InitiatorParams {
        psk,
        cert,
        identity: cfg.identity.payload(),
        offers,
        life_secs: cfg.phase1_life_secs,
        doi,
        situation,
        dh_backend: cfg.dh_backend,
        initial_contact: cfg.initial_contact && !contacted,
        extra_vendor_ids: &cfg.extra_vendor_ids,
    }
}
