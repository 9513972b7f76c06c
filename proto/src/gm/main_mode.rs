//! Main mode as the initiator: messages 2, 4 and 6 from the key server
//! (suite check, key exchange, then the key server's authentication), each
//! answered with the next message or ending the exchange.

use gkm_wire::consts::{CertEncoding, Doi, ExchangeType, NotifyType, ProtocolId};
use gkm_wire::payload::{
    Cert, IdPayload, KeyExchange, Nonce, Notification, Sa, SaLayout, Signature,
};
use gkm_wire::{Body, Identity, IsakmpHeader, Message, Payload};

use super::config::{CertAuth, GmAuth, GmFailure};
use super::state::{SentId, SentKe, SentPull1, State, P1};
use super::GroupMember;
use crate::crypto::rng;
use crate::engine::Millis;
use crate::ike::{
    decrypt_message, encrypt_body, phase1_iv, phase2_iv, AuthKind, Phase1Keys, Suite, Transcript,
};

impl GroupMember {
    pub(super) fn on_mm2(
        &mut self,
        now: Millis,
        header: &IsakmpHeader,
        data: &[u8],
        sai_b: Vec<u8>,
    ) -> State {
        let auth = match self.cfg.auth {
            GmAuth::Psk(_) => AuthKind::Psk,
            GmAuth::Certificate(_) => AuthKind::RsaSig,
        };
        let chosen = Message::parse(data).ok().and_then(|m| {
            m.payloads()?.iter().find_map(|p| match p {
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
            self.phase1_offers(auth, s.life_secs)
                .iter()
                .any(|o| o.cipher == s.cipher && o.prf == s.prf && o.group == s.group)
        }) else {
            return self.failed(
                now,
                GmFailure::BadResponse("main mode 2: no acceptable transform"),
            );
        };
        suite.life_secs = suite.life_secs.min(self.cfg.phase1_life_secs);
        let rcky = header.responder_cookie;
        let (dh, gxi) = suite.group.generate(self.rng.as_mut(), self.cfg.dh_backend);
        let ni = rng::bytes(self.rng.as_mut(), 32);
        let h = self.header(ExchangeType::IDENTITY_PROTECTION, rcky, 0);
        let Ok(out) = (Message {
            header: h,
            body: Body::Payloads(vec![
                Payload::KeyExchange(KeyExchange(&gxi)),
                Payload::Nonce(Nonce(&ni)),
            ]),
        })
        .to_vec() else {
            return State::Idle { at: now };
        };
        self.send(now, out);
        State::Mm3(SentKe {
            sai_b,
            suite,
            dh,
            gxi,
            ni,
            rcky,
        })
    }

    pub(super) fn on_mm4(&mut self, now: Millis, data: &[u8], st: SentKe) -> State {
        let SentKe {
            sai_b,
            suite,
            dh,
            gxi,
            ni,
            rcky,
        } = st;
        let (mut gxr, mut nr) = (None, None);
        if let Ok(m) = Message::parse(data) {
            for p in m.payloads().unwrap_or_default() {
                match p {
                    Payload::KeyExchange(k) => gxr = Some(k.0.to_vec()),
                    Payload::Nonce(n) => nr = Some(n.0.to_vec()),
                    _ => {}
                }
            }
        }
        let (Some(gxr), Some(nr)) = (gxr, nr) else {
            return self.failed(
                now,
                GmFailure::BadResponse("main mode 4: KE or nonce missing"),
            );
        };
        let Ok(gxy) = dh.shared(&gxr) else {
            return self.failed(now, GmFailure::BadResponse("main mode 4: bad KE"));
        };
        let psk = match &self.cfg.auth {
            GmAuth::Psk(k) => Some(k.as_slice()),
            GmAuth::Certificate(_) => None,
        };
        let keys = Phase1Keys::derive(&suite, psk, &ni, &nr, &gxy, &self.icky, &rcky);
        let iv = phase1_iv(&suite, &gxi, &gxr);
        let identity = self.cfg.identity.payload();
        let idii = IdPayload {
            protocol: 17,
            port: gkm_wire::consts::GDOI_PORT,
            identity,
        };
        let mut idii_b = Vec::new();
        if idii.emit(&mut idii_b).is_err() {
            return State::Idle { at: now };
        }
        let transcript = Transcript {
            gxi: &gxi,
            gxr: &gxr,
            cky_i: &self.icky,
            cky_r: &rcky,
            sai_b: &sai_b,
        };
        let hash_i = keys.hash_i(suite.prf, &transcript, &idii_b);
        let sig;
        let mut payloads = vec![Payload::Id(idii)];
        match &self.cfg.auth {
            GmAuth::Psk(_) => payloads.push(Payload::Hash(gkm_wire::payload::Hash(&hash_i))),
            GmAuth::Certificate(c) => {
                let CertAuth { cert, key, .. } = c.as_ref();
                sig = match key.sign(self.rng.as_mut(), &hash_i) {
                    Ok(s) => s,
                    Err(_) => return State::Idle { at: now },
                };
                payloads.push(Payload::Cert(Cert {
                    encoding: CertEncoding::X509_SIGNATURE,
                    data: cert,
                }));
                payloads.push(Payload::Signature(Signature(&sig)));
            }
        }
        let spi: Vec<u8> = self.icky.iter().chain(rcky.iter()).copied().collect();
        if self.cfg.initial_contact && !self.contacted {
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
            return State::Idle { at: now };
        };
        let h = IsakmpHeader {
            next_payload: first,
            ..self.header(ExchangeType::IDENTITY_PROTECTION, rcky, 0)
        };
        let Ok((out, next_iv)) = encrypt_body(h, body, suite.cipher, &keys.enc_key, &iv) else {
            return State::Idle { at: now };
        };
        self.send(now, out);
        State::Mm5(SentId {
            suite,
            keys,
            iv: next_iv,
            sai_b,
            gxi,
            gxr,
            rcky,
        })
    }

    pub(super) fn on_mm6(&mut self, now: Millis, data: &[u8], st: SentId) -> State {
        let SentId {
            suite,
            keys,
            iv,
            sai_b,
            gxi,
            gxr,
            rcky,
        } = st;
        let Ok(dec) = decrypt_message(data, suite.cipher, &keys.enc_key, &iv) else {
            return self.failed(now, GmFailure::BadResponse("main mode 6 does not decrypt"));
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
            return self.failed(now, GmFailure::BadResponse("main mode 6: no ID"));
        };
        let transcript = Transcript {
            gxi: &gxi,
            gxr: &gxr,
            cky_i: &self.icky,
            cky_r: &rcky,
            sai_b: &sai_b,
        };
        let ok = match &self.cfg.auth {
            GmAuth::Psk(_) => hash.is_some_and(|h| {
                suite.prf.verify(
                    &keys.skeyid,
                    &[&gxr, &gxi, &rcky, &self.icky, &sai_b, idir_b],
                    h,
                )
            }),
            GmAuth::Certificate(c) => {
                let ca = &c.ca;
                let hash_r = keys.hash_r(suite.prf, &transcript, idir_b);
                match (cert, sig) {
                    (Some(c), Some(s)) => ca
                        .verify(c, now / 1000)
                        .is_ok_and(|v| v.key.verify(&hash_r, s).is_ok()),
                    _ => false,
                }
            }
        };
        if !ok {
            return self.failed(
                now,
                GmFailure::BadResponse("main mode 6 does not authenticate the key server"),
            );
        }
        self.contacted = true;
        let p1 = P1 {
            suite,
            keys,
            rcky,
            last_block: dec.next_iv,
        };
        // GROUPKEY-PULL message 1: HASH(1), Ni, ID(group).
        let mid = self.rng.next_u32() | 1;
        let ni = rng::bytes(self.rng.as_mut(), 32);
        let gid = self.cfg.group_id.to_be_bytes();
        let rest = [
            Payload::Nonce(Nonce(&ni)),
            Payload::Id(IdPayload {
                protocol: 0,
                port: 0,
                identity: Identity::KeyId(&gid),
            }),
        ];
        let iv = phase2_iv(p1.suite.cipher, p1.suite.prf, &p1.last_block, mid);
        let Some(next_iv) = self.send_pull(now, &p1, mid, &[], &rest, &iv) else {
            return State::Idle { at: now };
        };
        State::Pull1(SentPull1 {
            p1,
            mid,
            ni,
            iv: next_iv,
        })
    }
}
