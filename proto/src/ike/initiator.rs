//! Main mode as the initiator (RFC 2409 section 5), sans I/O: message 1
//! from the offered suites, then each of the responder's messages 2, 4
//! and 6 answered or refused, ending in an established phase 1 SA. The
//! group member registers over it; a key server reaches its cooperative
//! peers over it. Retransmission and the choice of peer are the caller's.

use gkm_wire::consts::{
    CertEncoding, Doi, ExchangeType, Flags, NotifyType, PayloadType, ProtocolId,
};
use gkm_wire::payload::{
    Cert, IdPayload, KeyExchange, Nonce, Notification, Phase1Sa, Proposal, Sa, SaLayout, Signature,
    VendorId,
};
use gkm_wire::{Body, Identity, IsakmpHeader, Message, Payload};

use super::{
    decrypt_message, encrypt_body, phase1_iv, AuthKind, Iv, Phase1Keys, Suite, Transcript,
};
use crate::crypto::{rng, CertificateAuthority, DhBackend, DhPrivate, EngineRng, Phase1Signer};
use crate::engine::{own_vendor_id, Millis};

/// The initiator's certificate credential.
pub struct InitiatorCert<'a> {
    /// Its certificate (DER).
    pub cert: &'a [u8],
    /// Its private key.
    pub key: &'a Phase1Signer,
    /// The CAs the responder's certificate must chain to.
    pub ca: &'a CertificateAuthority,
}

/// A party's own certificate credentials, owned (what an
/// [`InitiatorCert`] borrows).
#[derive(Clone)]
pub struct OwnCertificate {
    /// Its certificate (DER).
    pub cert: Vec<u8>,
    /// Its private key.
    pub key: Phase1Signer,
    /// The CAs a peer's certificate must chain to.
    pub ca: CertificateAuthority,
}

impl OwnCertificate {
    /// The borrowed form main mode takes.
    pub fn as_initiator(&self) -> InitiatorCert<'_> {
        InitiatorCert {
            cert: &self.cert,
            key: &self.key,
            ca: &self.ca,
        }
    }
}

/// What the initiator offers and proves.
pub struct InitiatorParams<'a> {
    /// The pre-shared key (PSK authentication) ...
    pub psk: Option<&'a [u8]>,
    /// ... or the certificate (signatures of its key's kind).
    pub cert: Option<InitiatorCert<'a>>,
    /// Its phase 1 identity.
    pub identity: Identity<'a>,
    /// The suites offered, in order (of the authentication method used).
    pub offers: &'a [Suite],
    /// The longest phase 1 lifetime taken, seconds.
    pub life_secs: u32,
    /// The DOI and situation of the offer (GDOI's, or the IPsec DOI's for
    /// peers that want it).
    pub doi: Doi,
    /// The situation field of the SA payload.
    pub situation: u32,
    /// Key exchange implementation.
    pub dh_backend: DhBackend,
    /// Send INITIAL-CONTACT in message 5.
    pub initial_contact: bool,
    /// Vendor IDs sent after GKM's own.
    pub extra_vendor_ids: &'a [Vec<u8>],
}

impl InitiatorParams<'_> {
    fn auth(&self) -> AuthKind {
        self.cert
            .as_ref()
            .map_or(AuthKind::Psk, |c| AuthKind::Signature(c.key.kind()))
    }
}

/// Main mode after message 3 (KE, Ni) was sent.
struct SentKe {
    suite: Suite,
    dh: DhPrivate,
    gxi: Vec<u8>,
    ni: Vec<u8>,
    rcky: [u8; 8],
}

/// Main mode after message 5 (ID, proof) was sent.
struct SentId {
    suite: Suite,
    keys: Phase1Keys,
    iv: Iv,
    gxi: Vec<u8>,
    gxr: Vec<u8>,
    rcky: [u8; 8],
}

enum Step {
    /// Message 1 sent.
    Mm1,
    /// Message 3 sent.
    Mm3(SentKe),
    /// Message 5 sent.
    Mm5(SentId),
    /// Over (established or failed).
    Done,
}

/// An established phase 1 SA, as the initiator holds it.
pub struct EstablishedP1 {
    /// The negotiated suite.
    pub suite: Suite,
    /// The SA's keys.
    pub keys: Phase1Keys,
    /// The responder's cookie.
    pub rcky: [u8; 8],
    /// The last CBC block of main mode (phase 2 IVs derive from it).
    pub last_block: Iv,
    /// The responder's ID payload body as sent (checked by the caller
    /// against whom it meant to reach).
    pub idir_b: Vec<u8>,
    /// With certificates: the subject (DER) of the responder's verified
    /// certificate (checked by the caller against whom it meant to reach).
    pub peer_cert_subject: Option<Vec<u8>>,
}

/// What a responder's message did.
pub enum MmOutcome {
    /// Send this (the next main mode message).
    Send(Vec<u8>),
    /// Message 6 authenticated the responder: the SA is up (message 5 was
    /// the last sent).
    Established(EstablishedP1),
    /// The exchange is over: this was wrong.
    Failed(&'static str),
}

/// One main mode exchange as the initiator.
pub struct MainModeInitiator {
    icky: [u8; 8],
    sai_b: Vec<u8>,
    step: Step,
}

impl MainModeInitiator {
    /// Starts an exchange: a fresh initiator cookie and message 1.
    pub fn start(p: &InitiatorParams<'_>, rng: &mut dyn EngineRng) -> Option<(Self, Vec<u8>)> {
        let icky = loop {
            let c = rng::array(rng);
            if c != [0; 8] {
                break c;
            }
        };
        let sa = Phase1Sa {
            doi: p.doi,
            situation: p.situation,
            proposals: vec![Proposal {
                number: 1,
                protocol_id: ProtocolId::ISAKMP,
                spi: &[],
                transforms: p
                    .offers
                    .iter()
                    .zip(1u8..)
                    .map(|(s, n)| s.transform(n))
                    .collect(),
            }],
        };
        let mut sai_b = Vec::new();
        Sa::Phase1(sa.clone()).emit(&mut sai_b).ok()?;
        let vid = own_vendor_id().to_bytes();
        let mut payloads = vec![
            Payload::Sa(Sa::Phase1(sa)),
            Payload::VendorId(VendorId(&vid)),
        ];
        payloads.extend(
            p.extra_vendor_ids
                .iter()
                .map(|v| Payload::VendorId(VendorId(v))),
        );
        let this = Self {
            icky,
            sai_b,
            step: Step::Mm1,
        };
        let out = Message {
            header: this.header([0; 8]),
            body: Body::Payloads(payloads),
        }
        .to_vec()
        .ok()?;
        Some((this, out))
    }

    /// The initiator cookie.
    pub fn icky(&self) -> [u8; 8] {
        self.icky
    }

    /// Whether the exchange is still before message 6 (an unprotected
    /// notification may end it).
    pub fn in_progress(&self) -> bool {
        !matches!(self.step, Step::Done)
    }

    fn transcript<'a>(&'a self, gxi: &'a [u8], gxr: &'a [u8], rcky: &'a [u8; 8]) -> Transcript<'a> {
        Transcript {
            gxi,
            gxr,
            cky_i: &self.icky,
            cky_r: rcky,
            sai_b: &self.sai_b,
        }
    }

    fn header(&self, rcky: [u8; 8]) -> IsakmpHeader {
        IsakmpHeader {
            initiator_cookie: self.icky,
            responder_cookie: rcky,
            next_payload: PayloadType::NONE,
            exchange_type: ExchangeType::IDENTITY_PROTECTION,
            flags: Flags::default(),
            message_id: 0,
            length: 0,
        }
    }

    /// Feeds a main mode message from the responder; `None` when it is not
    /// for this exchange's current step (dropped, nothing changes).
    pub fn handle(
        &mut self,
        p: &InitiatorParams<'_>,
        now: Millis,
        header: &IsakmpHeader,
        data: &[u8],
        rng: &mut dyn EngineRng,
    ) -> Option<MmOutcome> {
        if header.initiator_cookie != self.icky
            || header.exchange_type != ExchangeType::IDENTITY_PROTECTION
        {
            return None;
        }
        let outcome = match std::mem::replace(&mut self.step, Step::Done) {
            Step::Mm1 => self.on_mm2(p, header, data, rng),
            Step::Mm3(st) if header.responder_cookie == st.rcky => self.on_mm4(p, data, st, rng),
            Step::Mm5(st) if header.responder_cookie == st.rcky => self.on_mm6(p, now, data, st),
            other => {
                self.step = other;
                return None;
            }
        };
        Some(outcome)
    }

    fn on_mm2(
        &mut self,
        p: &InitiatorParams<'_>,
        header: &IsakmpHeader,
        data: &[u8],
        rng: &mut dyn EngineRng,
    ) -> MmOutcome {
        let auth = p.auth();
        let chosen = Message::parse(data).ok().and_then(|m| {
            m.payloads()?.iter().find_map(|pl| match pl {
                Payload::Sa(Sa::Phase1(s)) => s
                    .proposals
                    .first()?
                    .transforms
                    .first()
                    .and_then(|t| Suite::from_transform(t, &[auth])),
                _ => None,
            })
        });
        let Some(mut suite) = chosen.filter(|s| {
            p.offers
                .iter()
                .any(|o| o.cipher == s.cipher && o.prf == s.prf && o.group == s.group)
        }) else {
            return MmOutcome::Failed("main mode 2: no acceptable transform");
        };
        suite.life_secs = suite.life_secs.min(p.life_secs);
        let rcky = header.responder_cookie;
        let (dh, gxi) = suite.group.generate(rng, p.dh_backend);
        let ni = rng::bytes(rng, 32);
        let Ok(out) = (Message {
            header: self.header(rcky),
            body: Body::Payloads(vec![
                Payload::KeyExchange(KeyExchange(&gxi)),
                Payload::Nonce(Nonce(&ni)),
            ]),
        })
        .to_vec() else {
            return MmOutcome::Failed("main mode 3 could not be encoded");
        };
        self.step = Step::Mm3(SentKe {
            suite,
            dh,
            gxi,
            ni,
            rcky,
        });
        MmOutcome::Send(out)
    }

    fn on_mm4(
        &mut self,
        p: &InitiatorParams<'_>,
        data: &[u8],
        st: SentKe,
        rng: &mut dyn EngineRng,
    ) -> MmOutcome {
        let SentKe {
            suite,
            dh,
            gxi,
            ni,
            rcky,
        } = st;
        let (mut gxr, mut nr) = (None, None);
        if let Ok(m) = Message::parse(data) {
            for pl in m.payloads().unwrap_or_default() {
                match pl {
                    Payload::KeyExchange(k) => gxr = Some(k.0.to_vec()),
                    Payload::Nonce(n) => nr = Some(n.0.to_vec()),
                    _ => {}
                }
            }
        }
        let (Some(gxr), Some(nr)) = (gxr, nr) else {
            return MmOutcome::Failed("main mode 4: KE or nonce missing");
        };
        let Ok(gxy) = dh.shared(&gxr) else {
            return MmOutcome::Failed("main mode 4: bad KE");
        };
        let keys = Phase1Keys::derive(&suite, p.psk, &ni, &nr, &gxy, &self.icky, &rcky);
        let iv = phase1_iv(&suite, &gxi, &gxr);
        let idii = IdPayload {
            protocol: 17,
            port: gkm_wire::consts::GDOI_PORT,
            identity: p.identity,
        };
        let mut idii_b = Vec::new();
        if idii.emit(&mut idii_b).is_err() {
            return MmOutcome::Failed("main mode 5: the ID could not be encoded");
        }
        let transcript = self.transcript(&gxi, &gxr, &rcky);
        let hash_i = keys.hash_i(suite.prf, &transcript, &idii_b);
        let sig;
        let mut payloads = vec![Payload::Id(idii)];
        match &p.cert {
            None => payloads.push(Payload::Hash(gkm_wire::payload::Hash(&hash_i))),
            Some(c) => {
                sig = match c.key.sign(rng, &hash_i) {
                    Ok(s) => s,
                    Err(_) => return MmOutcome::Failed("main mode 5: signing failed"),
                };
                payloads.push(Payload::Cert(Cert {
                    encoding: CertEncoding::X509_SIGNATURE,
                    data: c.cert,
                }));
                payloads.push(Payload::Signature(Signature(&sig)));
            }
        }
        let spi: Vec<u8> = self.icky.iter().chain(rcky.iter()).copied().collect();
        if p.initial_contact {
            payloads.push(Payload::Notification(Notification {
                doi: Doi::IPSEC,
                protocol_id: ProtocolId::ISAKMP.0,
                notify_type: NotifyType::INITIAL_CONTACT,
                spi: &spi,
                data: &[],
            }));
        }
        let mut body = Vec::new();
        let Ok(first) = gkm_wire::payload::emit_chain(&payloads, &mut body) else {
            return MmOutcome::Failed("main mode 5 could not be encoded");
        };
        let h = IsakmpHeader {
            next_payload: first,
            ..self.header(rcky)
        };
        let Ok((out, next_iv)) = encrypt_body(h, body, suite.cipher, &keys.enc_key, &iv) else {
            return MmOutcome::Failed("main mode 5 could not be encrypted");
        };
        self.step = Step::Mm5(SentId {
            suite,
            keys,
            iv: next_iv,
            gxi,
            gxr,
            rcky,
        });
        MmOutcome::Send(out)
    }

    fn on_mm6(
        &mut self,
        p: &InitiatorParams<'_>,
        now: Millis,
        data: &[u8],
        st: SentId,
    ) -> MmOutcome {
        let Ok(dec) = decrypt_message(data, st.suite.cipher, &st.keys.enc_key, &st.iv) else {
            return MmOutcome::Failed("main mode 6 does not decrypt");
        };
        let raws: Vec<_> =
            gkm_wire::payload::PayloadIter::new(dec.header.next_payload, &dec.plaintext)
                .filter_map(Result::ok)
                .collect();
        let (mut idir_b, mut hash, mut cert, mut sig) = (None, None, None, None);
        for r in &raws {
            match Payload::parse(r.payload_type, r.body, SaLayout::Phase1) {
                Ok(Payload::Id(_)) => idir_b = Some(r.body),
                Ok(Payload::Hash(h)) => hash = Some(h.0),
                Ok(Payload::Cert(c)) => cert = Some(c.data),
                Ok(Payload::Signature(s)) => sig = Some(s.0),
                _ => {}
            }
        }
        let Some(idir_b) = idir_b else {
            return MmOutcome::Failed("main mode 6: no ID");
        };
        let SentId {
            suite,
            keys,
            gxi,
            gxr,
            rcky,
            ..
        } = st;
        let transcript = self.transcript(&gxi, &gxr, &rcky);
        let mut peer_cert_subject = None;
        let ok = match &p.cert {
            None => hash.is_some_and(|h| keys.verify_hash_r(suite.prf, &transcript, idir_b, h)),
            Some(c) => {
                let hash_r = keys.hash_r(suite.prf, &transcript, idir_b);
                match (cert, sig) {
                    (Some(cert), Some(s)) => match c.ca.verify(cert, now / 1000) {
                        Ok(v)
                            if AuthKind::Signature(v.key.kind()) == suite.auth
                                && v.key.verify(&hash_r, s).is_ok() =>
                        {
                            peer_cert_subject = Some(v.subject_der);
                            true
                        }
                        _ => false,
                    },
                    _ => false,
                }
            }
        };
        if !ok {
            return MmOutcome::Failed("main mode 6 does not authenticate the responder");
        }
        MmOutcome::Established(EstablishedP1 {
            suite,
            keys,
            rcky,
            last_block: dec.next_iv,
            idir_b: idir_b.to_vec(),
            peer_cert_subject,
        })
    }
}
