//! One cooperative peer, as the sender sees it: the phase 1 SA this key
//! server initiates to the peer (main mode through the shared initiator,
//! with the pair PSK), the announcement waiting for it, and the counters
//! of `show ... ks coop`'s peer session. Announcements go out only over
//! SAs this key server initiated; the peer's own announcements come in
//! over the SA it initiated (the responder's), so each direction has an
//! SA of its own and neither side waits for the other to connect.

use std::net::SocketAddr;

use gkm_model::CoopCounters;
use gkm_wire::consts::{Doi, ExchangeType, Flags, PayloadType, GDOI_SITUATION_NONE};
use gkm_wire::{Identity, IsakmpHeader};
use zeroize::Zeroizing;

use crate::crypto::{DhBackend, EngineRng};
use crate::engine::Millis;
use crate::ike::initiator::{
    EstablishedP1, InitiatorParams, MainModeInitiator, MmOutcome, OwnCertificate,
};
use crate::ike::{encrypt_body, hashed_raw_chain, phase2_iv, AuthKind, Suite};
use crate::ks::config::Credential;

/// An announcement's payloads, in order (the group state holds keys:
/// zeroized when dropped).
pub(crate) type Announcement = Vec<(PayloadType, Zeroizing<Vec<u8>>)>;

/// A main mode message is sent again after this long without an answer.
pub const RETRANSMIT_MS: Millis = 2_000;
/// Main mode is given up after this many transmissions of one message,
/// and tried again after [`RECONNECT_MS`].
pub const MAX_TRANSMISSIONS: u32 = 4;
/// Wait before a new main mode after one failed.
pub const RECONNECT_MS: Millis = 5_000;
/// The phase 1 lifetime a key server asks of its peers, seconds.
pub const PHASE1_LIFE_SECS: u32 = 86_400;
/// An SA is replaced when less than this share of its life is left
/// (tenths): 9 = at 90 % of its lifetime.
const REPLACE_AT_TENTHS: u64 = 9;

enum State {
    /// No SA; main mode starts at `at` (or when an announcement is due).
    Idle { at: Millis },
    /// Main mode under way.
    Connecting {
        mm: Box<MainModeInitiator>,
        last_out: Vec<u8>,
        resend_at: Millis,
        sent: u32,
    },
    /// The SA is up until `replace_at`.
    Up {
        p1: Box<EstablishedP1>,
        icky: [u8; 8],
        replace_at: Millis,
    },
}

/// What the session asks its caller to do.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionOutput {
    /// Send this datagram to the peer.
    Send(Vec<u8>),
    /// The SA to the peer came up.
    Established,
    /// Main mode to the peer failed (why).
    Failed(&'static str),
}

/// How this key server authenticates to a peer and knows it.
pub enum SessionAuth {
    /// The pair PSK.
    Psk(Zeroizing<Vec<u8>>),
    /// Certificates: this key server's own (None: it has none, and main
    /// mode to the peer fails saying so), and the subject the peer's must
    /// have.
    Certificate {
        /// This key server's certificate credentials.
        own: Option<Box<OwnCertificate>>,
        /// The peer's certificate's subject.
        subject: String,
    },
}

/// This key server's side of one peer.
pub struct Session {
    /// The peer's COOP address and port.
    pub peer: SocketAddr,
    auth: SessionAuth,
    /// This key server's phase 1 identity towards the peer.
    identity: std::net::IpAddr,
    dh_backend: DhBackend,
    state: State,
    /// The announcement (its payloads) waiting for the SA: a newer one
    /// replaces it.
    waiting: Option<Announcement>,
    /// Counters.
    pub counters: CoopCounters,
    /// The cookies of the SA the peer's announcements came over last.
    peer_sa: Option<[u8; 16]>,
    /// The peer sent datagrams over an SA this key server does not hold
    /// (it restarted, or the peer's SA outlived ours) since its last
    /// message that opened: the next announcement asks it to connect
    /// again.
    pub peer_sa_lost: bool,
    /// The GDOI version and feature bits of the peer's last announcement.
    pub peer_software: Option<(
        gkm_wire::gkm_vid::GdoiVersion,
        gkm_wire::gkm_vid::FeatureBits,
    )>,
}

impl Session {
    /// A session that connects when its first announcement is due.
    pub fn new(
        peer: SocketAddr,
        auth: SessionAuth,
        identity: std::net::IpAddr,
        dh_backend: DhBackend,
        now: Millis,
    ) -> Self {
        Self {
            peer,
            auth,
            identity,
            dh_backend,
            state: State::Idle { at: now },
            waiting: None,
            counters: CoopCounters::default(),
            peer_sa: None,
            peer_sa_lost: false,
            peer_software: None,
        }
    }

    /// An announcement from the peer came over the SA `cookies`. A new SA
    /// from the peer means it may have restarted and lost the SA this key
    /// server sends over: that one is replaced (main mode again when the
    /// next announcement is due), so a restarted peer hears this key
    /// server again within a refresh interval instead of never.
    pub fn peer_sa_seen(&mut self, cookies: [u8; 16], now: Millis) {
        let changed = self.peer_sa.is_some_and(|c| c != cookies);
        self.peer_sa = Some(cookies);
        self.peer_sa_lost = false;
        if changed {
            self.connect_again(now);
        }
    }

    /// The peer cannot open what this key server sends it (its
    /// announcement said so: it restarted after this key server's SA to
    /// it was made): main mode again when the next announcement is due.
    pub fn connect_again(&mut self, now: Millis) {
        if matches!(self.state, State::Up { .. }) {
            self.state = State::Idle { at: now };
        }
    }

    /// Whether the SA to the peer is up.
    pub fn is_up(&self, now: Millis) -> bool {
        matches!(&self.state, State::Up { replace_at, .. } if now < *replace_at)
    }

    /// The initiator cookie of the main mode under way, if any.
    pub fn connecting_cookie(&self) -> Option<[u8; 8]> {
        match &self.state {
            State::Connecting { mm, .. } => Some(mm.icky()),
            _ => None,
        }
    }

    /// When the session next needs time.
    pub fn deadline(&self) -> Option<Millis> {
        match &self.state {
            State::Idle { at } if self.waiting.is_some() => Some(*at),
            State::Idle { .. } => None,
            State::Connecting { resend_at, .. } => Some(*resend_at),
            State::Up { replace_at, .. } => Some(*replace_at),
        }
    }

    /// Whether an SA the peer initiated (its credentials, and its
    /// certificate's subject) is the one this session knows the peer by:
    /// the group's pair PSK with it, or a certificate with the configured
    /// subject (a GM's PSK or certificate never is).
    pub fn authenticated_by(
        &self,
        group_id: u32,
        credentials: &[Credential],
        cert_subject: Option<&[u8]>,
    ) -> bool {
        match &self.auth {
            SessionAuth::Psk(_) => credentials.contains(&Credential::CoopPeer(group_id)),
            SessionAuth::Certificate { subject, .. } => {
                credentials.contains(&Credential::Certificate)
                    && cert_subject.is_some_and(|s| crate::identity::dn_matches(subject, s))
            }
        }
    }

    fn offers(&self) -> Vec<Suite> {
        let auth = match &self.auth {
            SessionAuth::Psk(_) => AuthKind::Psk,
            SessionAuth::Certificate { own, .. } => AuthKind::Signature(
                own.as_ref()
                    .map_or(crate::crypto::KeyKind::Rsa, |o| o.key.kind()),
            ),
        };
        Suite::offers(auth, PHASE1_LIFE_SECS, false)
    }

    fn identity(&self) -> Identity<'static> {
        match self.identity {
            std::net::IpAddr::V4(a) => Identity::Ipv4Addr(a),
            std::net::IpAddr::V6(a) => Identity::Ipv6Addr(a),
        }
    }

    fn connect(&mut self, now: Millis, rng: &mut dyn EngineRng) -> Vec<SessionOutput> {
        let offers = self.offers();
        let id = self.identity();
        let Some(params) = initiator_params(&self.auth, id, &offers, self.dh_backend) else {
            self.state = State::Idle {
                at: now + RECONNECT_MS,
            };
            return vec![SessionOutput::Failed(
                "the peer is on certificates and this key server has no [pki] certificate",
            )];
        };
        let Some((mm, out)) = MainModeInitiator::start(&params, rng) else {
            self.state = State::Idle {
                at: now + RECONNECT_MS,
            };
            return vec![SessionOutput::Failed("main mode 1 could not be encoded")];
        };
        self.counters.bytes_sent += out.len() as u64;
        self.state = State::Connecting {
            mm: Box::new(mm),
            last_out: out.clone(),
            resend_at: now + RETRANSMIT_MS,
            sent: 1,
        };
        vec![SessionOutput::Send(out)]
    }

    /// Sends `announcement` (the GKM-COOP-Announcement payload, and the
    /// options from a primary, as bodies) over the SA, or keeps it until
    /// the SA is up (connecting if need be).
    pub fn announce(
        &mut self,
        now: Millis,
        announcement: Announcement,
        rng: &mut dyn EngineRng,
    ) -> Vec<SessionOutput> {
        if let State::Up { p1, icky, .. } = &self.state {
            if self.is_up(now) {
                return match seal(p1, *icky, &announcement, rng) {
                    Some(d) => {
                        self.counters.ann_sent += 1;
                        self.counters.bytes_sent += d.len() as u64;
                        vec![SessionOutput::Send(d)]
                    }
                    None => Vec::new(),
                };
            }
        }
        if self.waiting.replace(announcement).is_some() {
            self.counters.send_drops += 1;
        }
        match self.state {
            State::Connecting { .. } => Vec::new(),
            State::Idle { at } if now < at => Vec::new(),
            _ => self.connect(now, rng),
        }
    }

    /// Retransmits main mode, gives it up, or replaces an aging SA.
    pub fn handle_timeout(&mut self, now: Millis, rng: &mut dyn EngineRng) -> Vec<SessionOutput> {
        match &mut self.state {
            State::Idle { at } if now >= *at && self.waiting.is_some() => self.connect(now, rng),
            State::Connecting {
                last_out,
                resend_at,
                sent,
                ..
            } if now >= *resend_at => {
                if *sent >= MAX_TRANSMISSIONS {
                    self.state = State::Idle {
                        at: now + RECONNECT_MS,
                    };
                    return vec![SessionOutput::Failed("no answer to main mode")];
                }
                *sent += 1;
                *resend_at = now + (RETRANSMIT_MS << (*sent - 1).min(4));
                self.counters.bytes_sent += last_out.len() as u64;
                vec![SessionOutput::Send(last_out.clone())]
            }
            State::Up { replace_at, .. } if now >= *replace_at => {
                self.state = State::Idle { at: now };
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// A main mode message from the peer for the exchange under way.
    pub fn handle_main_mode(
        &mut self,
        now: Millis,
        header: &IsakmpHeader,
        data: &[u8],
        rng: &mut dyn EngineRng,
    ) -> Vec<SessionOutput> {
        let offers = self.offers();
        let id = self.identity();
        let State::Connecting { mm, .. } = &mut self.state else {
            return Vec::new();
        };
        let Some(params) = initiator_params(&self.auth, id, &offers, self.dh_backend) else {
            return Vec::new();
        };
        match mm.handle(&params, now, header, data, rng) {
            None => Vec::new(),
            Some(MmOutcome::Send(out)) => {
                self.counters.bytes_sent += out.len() as u64;
                self.state = match std::mem::replace(&mut self.state, State::Idle { at: now }) {
                    State::Connecting { mm, .. } => State::Connecting {
                        mm,
                        last_out: out.clone(),
                        resend_at: now + RETRANSMIT_MS,
                        sent: 1,
                    },
                    other => other,
                };
                vec![SessionOutput::Send(out)]
            }
            Some(MmOutcome::Failed(why)) => {
                self.state = State::Idle {
                    at: now + RECONNECT_MS,
                };
                vec![SessionOutput::Failed(why)]
            }
            Some(MmOutcome::Established(p1)) => {
                let refused = if !identifies(&p1.idir_b, self.peer.ip()) {
                    Some("main mode 6: the peer's ID is not its address")
                } else {
                    match &self.auth {
                        SessionAuth::Certificate { subject, .. }
                            if !p1
                                .peer_cert_subject
                                .as_deref()
                                .is_some_and(|s| crate::identity::dn_matches(subject, s)) =>
                        {
                            Some(
                                "main mode 6: the peer's certificate is not the configured subject",
                            )
                        }
                        _ => None,
                    }
                };
                if let Some(why) = refused {
                    self.state = State::Idle {
                        at: now + RECONNECT_MS,
                    };
                    return vec![SessionOutput::Failed(why)];
                }
                let icky = header.initiator_cookie;
                let life_ms = u64::from(p1.suite.life_secs) * 1000;
                self.state = State::Up {
                    p1: Box::new(p1),
                    icky,
                    replace_at: now + life_ms * REPLACE_AT_TENTHS / 10,
                };
                self.counters.sas_established += 1;
                let mut out = vec![SessionOutput::Established];
                if let Some(a) = self.waiting.take() {
                    out.extend(self.announce(now, a, rng));
                }
                out
            }
        }
    }
}

/// Main mode to a peer: the pair PSK or this key server's certificate,
/// its address as its identity, GKM's strong suites only (no legacy suite
/// between key servers), the GDOI DOI. None: certificates without one.
fn initiator_params<'a>(
    auth: &'a SessionAuth,
    identity: Identity<'a>,
    offers: &'a [Suite],
    dh_backend: DhBackend,
) -> Option<InitiatorParams<'a>> {
    let (psk, cert) = match auth {
        SessionAuth::Psk(k) => (Some(k.as_slice()), None),
        SessionAuth::Certificate { own, .. } => (None, Some(own.as_deref()?.as_initiator())),
    };
    Some(InitiatorParams {
        psk,
        cert,
        identity,
        offers,
        life_secs: PHASE1_LIFE_SECS,
        doi: Doi::GDOI,
        situation: GDOI_SITUATION_NONE,
        dh_backend,
        initial_contact: false,
        extra_vendor_ids: &[],
    })
}

/// Whether an ID payload body (IDir_b) names `addr` (ID_IPV4_ADDR or
/// ID_IPV6_ADDR): a PSK peer is its address.
fn identifies(idir_b: &[u8], addr: std::net::IpAddr) -> bool {
    gkm_wire::payload::IdPayload::parse(idir_b).is_ok_and(|id| match (id.identity, addr) {
        (Identity::Ipv4Addr(a), std::net::IpAddr::V4(b)) => a == b,
        (Identity::Ipv6Addr(a), std::net::IpAddr::V6(b)) => a == b,
        _ => false,
    })
}

/// One GKM-COOP message: `HASH(mid | announcement)`, then the
/// announcement, encrypted under the phase 1 SA with the phase 2 IV of a
/// fresh message ID (as a GROUPKEY-PULL message is).
fn seal(
    p1: &EstablishedP1,
    icky: [u8; 8],
    announcement: &[(PayloadType, Zeroizing<Vec<u8>>)],
    rng: &mut dyn EngineRng,
) -> Option<Vec<u8>> {
    let mid = rng.next_u32() | 1;
    let (first, body) = hashed_raw_chain(
        p1.suite.prf,
        &p1.keys.skeyid_a,
        mid,
        &[],
        &announcement
            .iter()
            .map(|(t, b)| (*t, b.as_slice()))
            .collect::<Vec<_>>(),
    )
    .ok()?;
    let header = IsakmpHeader {
        initiator_cookie: icky,
        responder_cookie: p1.rcky,
        next_payload: first,
        exchange_type: ExchangeType::GKM_COOP,
        flags: Flags::default(),
        message_id: mid,
        length: 0,
    };
    let iv = phase2_iv(p1.suite.cipher, p1.suite.prf, &p1.last_block, mid);
    encrypt_body(header, body, p1.suite.cipher, &p1.keys.enc_key, &iv)
        .ok()
        .map(|(d, _)| d)
}
