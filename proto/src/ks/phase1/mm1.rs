//! Main mode message 1: the suite chosen from the initiator's offer (the
//! first strong one; a legacy one only for a peer a `legacy_phase1` group
//! could accept), the half-open limits applied, and message 2 sent.

use std::net::SocketAddr;

use gkm_wire::consts::{Doi, Flags, NotifyType, PayloadType, ProtocolId};
use gkm_wire::payload::{Phase1Sa, Proposal, Sa, VendorId};
use gkm_wire::{Body, IsakmpHeader, Message, Payload};

use super::{cookies, notify, parse_or_refuse, P1Sa, P1State, Phase1Responder};
use crate::crypto::{rng, EngineRng, KeyKind};
use crate::engine::{own_vendor_id, Millis, PeerVendor};
use crate::ike::{AuthKind, Suite};
use crate::ks::events::{KsOutbox, Reject};

impl Phase1Responder {
    pub(super) fn mm1(
        &mut self,
        now: Millis,
        from: SocketAddr,
        header: &IsakmpHeader,
        data: &[u8],
        rng: &mut dyn EngineRng,
        out: &mut KsOutbox,
    ) {
        if let Some(rcky) = self.by_icky.get(&(from, header.initiator_cookie)).copied() {
            let key = cookies(&header.initiator_cookie, &rcky);
            if let Some(sa) = self.sas.get(&key) {
                if sa.last_in == data {
                    let reply = sa.last_out.clone();
                    out.send(from, reply);
                    return out.reject(from, Reject::Retransmit, None);
                }
            }
            return out.reject(from, Reject::UnknownExchange, None);
        }
        if self.half_open.source_full(from.ip()) {
            return out.reject(from, Reject::HalfOpenLimit, None);
        }
        let Some(msg) = parse_or_refuse(data, from, out) else {
            return;
        };
        let Some(payloads) = msg.payloads() else {
            return out.refuse(
                from,
                Reject::Malformed,
                None,
                Some("main mode 1 is encrypted".into()),
            );
        };
        let mut vendor = PeerVendor::default();
        let mut sa_payload = None;
        for p in payloads {
            match p {
                Payload::Sa(Sa::Phase1(s)) => sa_payload = Some(s),
                Payload::VendorId(v) => vendor.observe(v.0),
                _ => {}
            }
        }
        let Some(offer) = sa_payload else {
            notify::clear(
                out,
                from,
                (header.initiator_cookie, [0; 8]),
                Doi::IPSEC,
                NotifyType::PAYLOAD_MALFORMED,
            );
            return out.refuse(
                from,
                Reject::Malformed,
                Some(NotifyType::PAYLOAD_MALFORMED),
                Some("main mode 1 has no SA payload".into()),
            );
        };
        let mut allowed = vec![AuthKind::Psk];
        if self.ca.is_some() {
            allowed.extend(
                self.certificates
                    .iter()
                    .map(|(_, key)| AuthKind::Signature(key.kind())),
            );
        }
        // The first strong suite in the initiator's order; a legacy one
        // only when none is offered and a `legacy_phase1` group could
        // accept this peer with it.
        let parsed: Vec<(u8, u8, Suite)> = offer
            .proposals
            .first()
            .map(|prop| {
                prop.transforms
                    .iter()
                    .filter_map(|t| {
                        Suite::from_transform(t, &allowed).map(|s| (prop.number, t.number, s))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let chosen = parsed
            .iter()
            .find(|(_, _, s)| !s.is_legacy())
            .or_else(|| {
                // Decided once per authentication method, not per transform.
                let psk = self.legacy_allowed(AuthKind::Psk, from.ip());
                let cert = self.legacy_allowed(AuthKind::Signature(KeyKind::Rsa), from.ip());
                parsed.iter().find(|(_, _, s)| match s.auth {
                    AuthKind::Psk => psk,
                    AuthKind::Signature(_) => cert,
                })
            })
            .copied();
        let Some((prop_no, tr_no, mut suite)) = chosen.filter(|_| offer.proposals.len() == 1)
        else {
            notify::clear(
                out,
                from,
                (header.initiator_cookie, [0; 8]),
                offer.doi,
                NotifyType::NO_PROPOSAL_CHOSEN,
            );
            let mut detail = offered(offer);
            if offer.proposals.len() == 1 && !parsed.is_empty() {
                detail.push_str(
                    " (legacy suites only: no group with legacy_phase1 accepts this peer)",
                );
            }
            return out.refuse(
                from,
                Reject::NoProposal,
                Some(NotifyType::NO_PROPOSAL_CHOSEN),
                Some(detail),
            );
        };
        if self.half_open.full() && !self.evict_unproven(out) {
            return out.reject(from, Reject::HalfOpenLimit, None);
        }
        suite.life_secs = suite.life_secs.min(self.max_life_secs);
        // SAi_b: the whole body of the initiator's SA payload, as sent.
        let sai_b = gkm_wire::payload::PayloadIter::new(
            msg.header.next_payload,
            data.get(28..).unwrap_or_default(),
        )
        .filter_map(Result::ok)
        .find(|r| r.payload_type == PayloadType::SA)
        .map(|r| r.body.to_vec())
        .unwrap_or_default();
        let rcky: [u8; 8] = loop {
            let c = rng::array(rng);
            if c != [0; 8] {
                break c;
            }
        };
        // The DOI and situation as offered: GDOI's (2, situation 0, RFC
        // 6407 section 2.1) or the IPsec DOI's (1, SIT_IDENTITY_ONLY, which
        // the parser demands with DOI 1). Echoing SIT_IDENTITY_ONLY to a
        // DOI 2 offer made a real GDOI peer drop the reply.
        let answer = Payload::Sa(Sa::Phase1(Phase1Sa {
            doi: offer.doi,
            situation: offer.situation,
            proposals: vec![Proposal {
                number: prop_no,
                protocol_id: ProtocolId::ISAKMP,
                spi: &[],
                transforms: vec![suite.transform(tr_no)],
            }],
        }));
        let vid = own_vendor_id().to_bytes();
        let h = IsakmpHeader {
            responder_cookie: rcky,
            flags: Flags::default(),
            message_id: 0,
            ..*header
        };
        let Ok(reply) = (Message {
            header: h,
            body: Body::Payloads(vec![answer, Payload::VendorId(VendorId(&vid))]),
        })
        .to_vec() else {
            return;
        };
        let key = cookies(&header.initiator_cookie, &rcky);
        self.sas.insert(
            key,
            P1Sa {
                peer: from,
                icky: header.initiator_cookie,
                rcky,
                suite,
                doi: offer.doi,
                sai_b,
                vendor,
                state: P1State::SentSa,
                created: now,
                last_in: data.to_vec(),
                last_out: reply.clone(),
                ni_b: Vec::new(),
                nr_b: Vec::new(),
            },
        );
        self.by_icky.insert((from, header.initiator_cookie), rcky);
        let sas = &self.sas;
        self.half_open.opened(key, from.ip(), |k| {
            sas.get(k)
                .is_some_and(|sa| matches!(sa.state, P1State::SentSa))
        });
        self.sweep_by(now + self.limits.half_open_timeout_ms);
        out.send(from, reply);
    }

    /// At the global half-open cap: forgets the oldest exchange still
    /// waiting for message 3 (see [`half_open`]). False when there is none.
    fn evict_unproven(&mut self, out: &mut KsOutbox) -> bool {
        let sas = &self.sas;
        let Some(k) = self.half_open.oldest_unproven(|k| {
            sas.get(k)
                .is_some_and(|sa| matches!(sa.state, P1State::SentSa))
        }) else {
            return false;
        };
        let peer = self.sas.get(&k).map(|sa| sa.peer);
        self.remove_sa(&k);
        if let Some(peer) = peer {
            out.reject(peer, Reject::HalfOpenEvicted, None);
        }
        true
    }
}

/// What a refused main mode 1 offered, for the log line: each transform's
/// encryption (and key length), hash, authentication and group.
fn offered(offer: &Phase1Sa<'_>) -> String {
    let name = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let transforms: Vec<String> = offer
        .proposals
        .iter()
        .flat_map(|p| p.transforms.iter())
        .map(|t| {
            let a = &t.attributes;
            let enc = match (a.encryption, a.key_length_bits) {
                (Some(e), Some(bits)) => Some(format!("{e}-{bits}")),
                (e, _) => e.map(|e| e.to_string()),
            };
            format!(
                "{}/{}/{}/{}",
                name(enc),
                name(a.hash.map(|h| h.to_string())),
                name(a.auth_method.map(|m| m.to_string())),
                name(a.group.map(|g| g.to_string()))
            )
        })
        .collect();
    let proposals = offer.proposals.len();
    let extra = if proposals > 1 {
        format!(" in {proposals} proposals (GKM takes one)")
    } else {
        String::new()
    };
    format!("offered {}{extra}", transforms.join(", "))
}
