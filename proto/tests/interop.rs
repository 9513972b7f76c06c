//! Interoperability with other GDOI implementations (docs/INTEROP.md):
//! what GKM's engines send and accept where RFCs and peers differ.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use common::*;
use gkm_proto::gm::{GmAuth, GmEvent, GmIdentity, GroupMember};
use gkm_proto::ks::Authorization;
use gkm_wire::consts::{Doi, ExchangeType, GDOI_SITUATION_NONE, SIT_IDENTITY_ONLY};
use gkm_wire::payload::Sa;
use gkm_wire::{Body, Message, Payload};
use std::net::{IpAddr, SocketAddr};
use zeroize::Zeroizing;

/// The (DOI, situation) of each main mode SA payload, in the order sent.
fn phase1_sas(ipsec_doi: bool) -> (Vec<GmEvent>, Vec<(Dir, Doi, u32)>) {
    let mut ks = ks(b"group-psk", Authorization::default());
    let addr = gm_addr(1);
    let IpAddr::V4(a) = addr.ip() else { panic!() };
    let mut cfg = base_config(
        1,
        GROUP,
        GmIdentity::Ipv4(a),
        GmAuth::Psk(Zeroizing::new(b"group-psk".to_vec())),
    );
    if ipsec_doi {
        cfg.ipsec_doi_key_servers = vec![KS_ADDR];
    }
    let mut gms: Vec<(SocketAddr, GroupMember)> = vec![(addr, GroupMember::new(cfg, rng(7)))];
    let mut seen = Vec::new();
    let (_, _, events) = run_with(&mut ks, &mut gms, T0, T0 + 10_000, |dir, d| {
        let m = Message::parse(d).unwrap();
        if m.header.exchange_type == ExchangeType::IDENTITY_PROTECTION {
            if let Body::Payloads(ps) = &m.body {
                for p in ps {
                    if let Payload::Sa(Sa::Phase1(s)) = p {
                        seen.push((dir, s.doi, s.situation));
                    }
                }
            }
        }
        true
    });
    (events.into_iter().map(|(_, e)| e).collect(), seen)
}

#[test]
fn phase1_offers_the_gdoi_doi_and_the_ks_answers_with_what_it_was_offered() {
    // RFC 6407 section 2.1: the phase 1 SA carries the GDOI DOI (2); GDOI
    // defines no situation, so 0. A real GDOI peer drops DOI 1 offers
    // ("expected GROUP DOI") and a DOI 2 answer with situation 1.
    let (events, seen) = phase1_sas(false);
    assert_eq!(
        seen,
        [
            (Dir::Up, Doi::GDOI, GDOI_SITUATION_NONE),
            (Dir::Down, Doi::GDOI, GDOI_SITUATION_NONE)
        ]
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, GmEvent::Registered { .. })),
        "{events:?}"
    );
}

#[test]
fn a_key_server_set_for_the_ipsec_doi_gets_doi_1_and_answers_in_kind() {
    let (events, seen) = phase1_sas(true);
    assert_eq!(
        seen,
        [
            (Dir::Up, Doi::IPSEC, SIT_IDENTITY_ONLY),
            (Dir::Down, Doi::IPSEC, SIT_IDENTITY_ONLY)
        ]
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, GmEvent::Registered { .. })),
        "{events:?}"
    );
}

/// The UDP payload of frame `n` of the gdoid capture.
fn gdoid_frame(n: usize) -> Vec<u8> {
    let text = include_str!("data/gdoid/frames.txt");
    let line = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split('\t').next() == Some(&n.to_string()))
        .unwrap();
    let hex = line.split('\t').nth(3).unwrap();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn a_real_gdoi_peers_main_mode_1_is_read_and_refused_for_its_suite_only() {
    // gdoid's GM: DOI 2, situation 0, one transform 3DES / SHA-1 / PSK /
    // MODP-1024. GKM reads the offer as GDOI's phase 1 SA; it refuses the
    // suite (NO-PROPOSAL-CHOSEN, in the DOI offered): RFC 4109's legacy
    // suites are not accepted (docs/INTEROP.md).
    let mm1 = gdoid_frame(1);
    let m = Message::parse(&mm1).unwrap();
    let Body::Payloads(ps) = &m.body else {
        panic!()
    };
    let Some(Payload::Sa(Sa::Phase1(sa))) = ps.first() else {
        panic!("{ps:?}")
    };
    assert_eq!((sa.doi, sa.situation), (Doi::GDOI, GDOI_SITUATION_NONE));
    let t = &sa.proposals[0].transforms[0];
    assert_eq!(
        t.attributes.encryption,
        Some(gkm_wire::consts::OakleyEncryption::TRIPLE_DES_CBC)
    );
    assert_eq!(t.attributes.hash, Some(gkm_wire::consts::OakleyHash::SHA1));
    assert_eq!(
        t.attributes.group,
        Some(gkm_wire::consts::OakleyGroup::MODP_1024)
    );

    let mut ks = ks(b"mekmitasdigoat", Authorization::default());
    let peer: SocketAddr = "10.0.224.37:848".parse().unwrap();
    ks.handle_datagram(T0, peer, &mm1);
    let reply = ks.poll_transmit().expect("a notification back");
    let n = Message::parse(&reply.payload).unwrap();
    let Body::Payloads(ps) = &n.body else {
        panic!()
    };
    let Some(Payload::Notification(notify)) = ps.first() else {
        panic!("{ps:?}")
    };
    assert_eq!(
        notify.notify_type,
        gkm_wire::consts::NotifyType::NO_PROPOSAL_CHOSEN
    );
    assert_eq!(notify.doi, Doi::GDOI, "answered in the DOI offered");
    let mut rejected = false;
    while let Some(e) = ks.poll_event() {
        rejected |= matches!(
            e,
            gkm_proto::ks::KsEvent::Rejected {
                reason: gkm_proto::ks::Reject::NoProposal,
                ..
            }
        );
    }
    assert!(rejected);
    assert_eq!(ks.half_open_count(), 0, "nothing kept for a refused offer");
}
