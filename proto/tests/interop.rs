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
use gkm_proto::crypto::{CbcCipher, DhGroup, Prf, RekeySigner, RsaSigner};
use gkm_proto::gm::{GmAuth, GmEvent, GmFailure, GmIdentity, GroupMember};
use gkm_proto::ike::{AuthKind, Suite};
use gkm_proto::ks::{Authorization, KsEvent, Reject};
use gkm_proto::push::{seal_push, MalformedPush, PushError};
use gkm_wire::consts::NotifyType;
use gkm_wire::consts::{Doi, ExchangeType, PayloadType, GDOI_SITUATION_NONE, SIT_IDENTITY_ONLY};
use gkm_wire::payload::{KeyPacket, PayloadIter, Sa, SaLayout, Seq};
use gkm_wire::{Body, Message, Payload};
use std::net::{IpAddr, SocketAddr};
use zeroize::Zeroizing;

fn is_registered(e: &GmEvent) -> bool {
    matches!(e, GmEvent::Registered { .. })
}

fn assert_registered(events: &[GmEvent]) {
    assert!(events.iter().any(is_registered), "{events:?}");
}

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
    assert_registered(&events);
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
    assert_registered(&events);
}

/// The UDP payload of frame `n` of the gdoid capture.
fn gdoid_frame(n: usize) -> Vec<u8> {
    let text = include_str!("data/gdoid/frames.txt");
    let line = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split('\t').next() == Some(&n.to_string()))
        .unwrap();
    hex::decode(line.split('\t').nth(3).unwrap()).unwrap()
}

#[test]
fn a_real_gdoi_peers_main_mode_1_is_read_and_refused_for_its_suite_only() {
    // gdoid's GM: DOI 2, situation 0, one transform 3DES / SHA-1 / PSK /
    // MODP-1024. GKM reads the offer as GDOI's phase 1 SA; it refuses the
    // suite (NO-PROPOSAL-CHOSEN, in the DOI offered): RFC 4109's legacy
    // suites are not accepted unless a group has legacy_phase1 on
    // (docs/INTEROP.md; the next test turns it on).
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
    // The log line says what was offered, so an operator sees why.
    let detail = std::iter::from_fn(|| ks.poll_event()).find_map(|e| match e {
        gkm_proto::ks::KsEvent::Rejected {
            reason: gkm_proto::ks::Reject::NoProposal,
            detail,
            ..
        } => Some(detail),
        _ => None,
    });
    // 3DES, SHA-1 and MODP-1024 are all known (legacy): the detail says
    // what would have let it in.
    assert_eq!(
        detail,
        Some(Some(
            "offered 3DES-CBC/SHA/Pre-Shared Key/MODP-1024 (legacy suites only: \
             no group with legacy_phase1 accepts this peer)"
                .to_owned()
        ))
    );
    assert_eq!(ks.half_open_count(), 0, "nothing kept for a refused offer");
}

#[test]
fn a_real_gdoi_peers_3des_main_mode_1_is_taken_where_a_group_allows_legacy_phase1() {
    // The same gdoid message 1 (3DES / SHA-1 / PSK / MODP-1024), with the
    // group's legacy_phase1 on: main mode 2 chooses exactly that transform,
    // in the DOI and situation offered.
    let mut ks = ks(b"mekmitasdigoat", Authorization::default());
    let mut g = ks.groups()[0].clone();
    g.legacy_phase1 = true;
    ks.set_group(T0, g, false).unwrap();
    let peer: SocketAddr = "10.0.224.37:848".parse().unwrap();
    ks.handle_datagram(T0, peer, &gdoid_frame(1));
    let reply = ks.poll_transmit().expect("main mode 2");
    let m = Message::parse(&reply.payload).unwrap();
    assert_eq!(m.header.exchange_type, ExchangeType::IDENTITY_PROTECTION);
    let Body::Payloads(ps) = &m.body else {
        panic!()
    };
    let Some(Payload::Sa(Sa::Phase1(sa))) = ps.first() else {
        panic!("{ps:?}")
    };
    assert_eq!((sa.doi, sa.situation), (Doi::GDOI, GDOI_SITUATION_NONE));
    let chosen = Suite::from_transform(&sa.proposals[0].transforms[0], &[AuthKind::Psk]).unwrap();
    assert_eq!(chosen.name(), "3DES-CBC/SHA/MODP-1024");
    assert!(chosen.is_legacy());
    assert_eq!(ks.half_open_count(), 1);
}

/// A GROUPKEY-PUSH under the group's current KEK, signed by the KS's rekey
/// key, announcing a new KEK (SPI `new_spi`) whose KD packet is labelled
/// `packet_spi`.
fn rollover_push(
    ks: &gkm_proto::ks::KeyServer,
    new_spi: [u8; 16],
    packet_spi: [u8; 16],
    seq: u32,
) -> Vec<u8> {
    let old = &ks.groups()[0].keys;
    let mut new = old.clone();
    let k = new.kek.as_mut().unwrap();
    k.spi = new_spi;
    k.key = Zeroizing::new(vec![0x55; k.key.len()]);
    let material = new.kek_material();
    let mut kd = new.to_kd(&material, None);
    for p in &mut kd.packets {
        if let KeyPacket::Kek(k) = p {
            k.spi = packet_spi;
        }
    }
    let signer = RekeySigner::Rsa(Box::new(
        RsaSigner::from_pkcs8_pem(include_str!("data/ks-rekey.pem")).unwrap(),
    ));
    seal_push(
        old.kek.as_ref().unwrap(),
        &signer,
        rng(5).as_mut(),
        &[
            Payload::Seq(Seq(seq)),
            Payload::Sa(Sa::Gdoi(new.to_sa())),
            Payload::KeyDownload(kd),
        ],
    )
    .unwrap()
}

#[test]
fn a_kek_rollover_labelled_with_the_old_spi_is_taken_and_any_other_label_is_named() {
    // gdoid's KS announces a new KEK in the SA KEK but labels the KD's KEK
    // packet with the old SPI. GKM refused it as "malformed", then every
    // later push as "for another KEK": the GM stranded itself.
    let mut ks = ks(b"group-psk", Authorization::default());
    let mut gms = vec![(gm_addr(1), gm(1, b"group-psk", GROUP))];
    let (got, _, _) = run(&mut ks, &mut gms, T0 + 10_000);
    assert_eq!(got.len(), 1);
    let old_spi = ks.groups()[0].keys.kek.as_ref().unwrap().spi;
    let seq = ks.groups()[0].keys.seq + 1;
    let new_spi = [0x77; 16];
    let g = &mut gms[0].1;

    // A label that is neither the new nor the current SPI: refused, and the
    // reason names all three; nothing changes.
    let stray = [0x99; 16];
    g.handle_datagram(
        T0 + 20_000,
        KS_ADDR,
        &rollover_push(&ks, new_spi, stray, seq),
    );
    let e = std::iter::from_fn(|| g.poll_event())
        .find_map(|e| match e {
            GmEvent::PushRejected(why) => Some(why),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        e,
        PushError::Malformed(MalformedPush::KekPacketSpi {
            packet: stray,
            sa_kek: new_spi,
            current: old_spi
        })
    );
    assert_eq!(
        e.to_string(),
        format!(
            "malformed GROUPKEY-PUSH: KD KEK packet SPI {} matches neither the SA KEK's {} nor the KEK in use {}",
            "99".repeat(16),
            "77".repeat(16),
            hex::encode(old_spi)
        )
    );
    assert_eq!(g.group().unwrap().kek.as_ref().unwrap().spi, old_spi);

    // The peer's form: taken, the key installed under the SA KEK's SPI.
    g.handle_datagram(
        T0 + 21_000,
        KS_ADDR,
        &rollover_push(&ks, new_spi, old_spi, seq),
    );
    let rekeyed = std::iter::from_fn(|| g.poll_event()).find_map(|e| match e {
        GmEvent::Rekeyed {
            seq,
            new_kek,
            kek_packet_relabelled,
            ..
        } => Some((seq, new_kek, kek_packet_relabelled)),
        _ => None,
    });
    assert_eq!(rekeyed, Some((seq, true, true)));
    let kek = g.group().unwrap().kek.as_ref().unwrap();
    assert_eq!(kek.spi, new_spi);
    assert_eq!(&kek.key[..], &vec![0x55; kek.key.len()][..]);
}

/// gdoid's logged plaintext `who dump n` (`who` is "ks" or "gm").
fn gdoid_plaintext(who: &str, n: usize) -> Vec<u8> {
    let text = include_str!("data/gdoid/plaintexts.txt");
    let mut lines = text.lines();
    let head = format!("{who} dump {n} ");
    lines.find(|l| l.starts_with(&head)).unwrap();
    hex::decode(lines.next().unwrap().trim()).unwrap()
}

/// Each payload of a plaintext chain starting with `first`: its type and
/// what gkm-wire makes of it (GDOI layout, 3DES padding of up to 8).
fn chain(first: PayloadType, data: &[u8]) -> Vec<(PayloadType, Result<String, gkm_wire::Error>)> {
    PayloadIter::with_padding(first, data, 8)
        .map(|r| {
            let r = r.unwrap();
            (
                r.payload_type,
                Payload::parse(r.payload_type, r.body, SaLayout::Gdoi).map(|p| format!("{p:?}")),
            )
        })
        .collect()
}

#[test]
fn a_real_gdoi_peers_plaintexts_are_read_or_refused_with_the_exact_reason() {
    use gkm_wire::payload::SA_KEK_RFC3547;
    let read = |who: &str, n: usize, first: PayloadType| {
        chain(first, &gdoid_plaintext(who, n))
            .into_iter()
            .map(|(t, r)| (t, r.map(|_| ()).map_err(|e| e.field)))
            .collect::<Vec<_>>()
    };
    let ok = |t: PayloadType| (t, Ok(()));
    // Main mode 5 and 6: ID, HASH and INITIAL-CONTACT (in the IPsec DOI,
    // as GKM's agent sends it): read.
    for who in ["ks", "gm"] {
        for n in [1, 2] {
            assert_eq!(
                read(who, n, PayloadType::ID),
                [
                    ok(PayloadType::ID),
                    ok(PayloadType::HASH),
                    ok(PayloadType::NOTIFICATION)
                ],
                "{who} dump {n}"
            );
        }
    }
    // PULL 1: read, but its ID_KEY_ID is the group number in host order
    // (1234 as d2 04 00 00), so GKM reads group 3,523,477,504 and answers
    // INVALID-ID-INFORMATION (RFC 6407 section 5: network order).
    assert_eq!(
        read("ks", 3, PayloadType::HASH),
        [
            ok(PayloadType::HASH),
            ok(PayloadType::NONCE),
            ok(PayloadType::ID)
        ]
    );
    let pull1 = gdoid_plaintext("ks", 3);
    let id = PayloadIter::with_padding(PayloadType::HASH, &pull1, 8)
        .map(Result::unwrap)
        .find(|r| r.payload_type == PayloadType::ID)
        .unwrap();
    let Ok(Payload::Id(id)) = Payload::parse(PayloadType::ID, id.body, SaLayout::Gdoi) else {
        panic!()
    };
    assert_eq!(id.identity.group_id(), Some(0xd204_0000));
    // PULL 2 and every PUSH: the SA refused, naming RFC 3547's SA KEK.
    let rfc3547 = (PayloadType::SA, Err(SA_KEK_RFC3547));
    assert_eq!(
        read("ks", 4, PayloadType::HASH),
        [ok(PayloadType::HASH), ok(PayloadType::NONCE), rfc3547]
    );
    for n in [7, 8, 9, 10] {
        assert_eq!(
            read("ks", n, PayloadType::SEQ),
            [
                ok(PayloadType::SEQ),
                rfc3547,
                ok(PayloadType::KEY_DOWNLOAD),
                ok(PayloadType::SIG)
            ],
            "ks dump {n}"
        );
    }
    // PULL 3 (HASH), PULL 4 (HASH, SEQ, KD) and the push that only
    // deletes TEKs (SEQ, Delete in the GDOI DOI, SIG): read.
    assert_eq!(read("ks", 5, PayloadType::HASH), [ok(PayloadType::HASH)]);
    assert_eq!(
        read("ks", 6, PayloadType::HASH),
        [
            ok(PayloadType::HASH),
            ok(PayloadType::SEQ),
            ok(PayloadType::KEY_DOWNLOAD)
        ]
    );
    assert_eq!(
        read("ks", 11, PayloadType::SEQ),
        [
            ok(PayloadType::SEQ),
            ok(PayloadType::DELETE),
            ok(PayloadType::SIG)
        ]
    );
}

#[test]
fn a_refused_main_mode_1_names_the_field_in_the_log_line() {
    // gdoid's MM1 with DOI 1 and a situation the IPsec DOI does not frame.
    let mut mm1 = gdoid_frame(1);
    mm1[32..40].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 5]);
    let mut ks = ks(b"mekmitasdigoat", Authorization::default());
    ks.handle_datagram(T0, "10.0.224.37:848".parse().unwrap(), &mm1);
    let detail = std::iter::from_fn(|| ks.poll_event()).find_map(|e| match e {
        gkm_proto::ks::KsEvent::Rejected {
            reason: gkm_proto::ks::Reject::Malformed,
            detail,
            ..
        } => Some(detail),
        _ => None,
    });
    assert_eq!(detail, Some(Some("sa.situation: Unsupported".to_owned())));
}

#[test]
fn the_ks_takes_ecp_384_when_it_is_all_a_peer_offers() {
    use gkm_wire::consts::{
        AuthMethod, Flags, IsakmpTransformId, OakleyEncryption, OakleyGroup, OakleyHash, ProtocolId,
    };
    use gkm_wire::payload::{KeyExchange, Nonce, OakleyAttributes, Phase1Sa, Proposal, Transform};
    use gkm_wire::IsakmpHeader;
    let header = |r: [u8; 8]| IsakmpHeader {
        initiator_cookie: [7; 8],
        responder_cookie: r,
        next_payload: PayloadType::NONE,
        exchange_type: ExchangeType::IDENTITY_PROTECTION,
        flags: Flags::default(),
        message_id: 0,
        length: 0,
    };
    let mm1 = Message {
        header: header([0; 8]),
        body: Body::Payloads(vec![Payload::Sa(Sa::Phase1(Phase1Sa {
            doi: Doi::GDOI,
            situation: GDOI_SITUATION_NONE,
            proposals: vec![Proposal {
                number: 1,
                protocol_id: ProtocolId::ISAKMP,
                spi: &[],
                transforms: vec![Transform {
                    number: 1,
                    transform_id: IsakmpTransformId::KEY_IKE,
                    attributes: OakleyAttributes {
                        encryption: Some(OakleyEncryption::AES_CBC),
                        key_length_bits: Some(256),
                        hash: Some(OakleyHash::SHA2_256),
                        auth_method: Some(AuthMethod::PRE_SHARED_KEY),
                        group: Some(OakleyGroup::ECP_384),
                        life_seconds: Some(86_400),
                        ..OakleyAttributes::default()
                    },
                }],
            }],
        }))]),
    }
    .to_vec()
    .unwrap();
    let mut ks = ks(b"group-psk", Authorization::default());
    let peer = gm_addr(1);
    ks.handle_datagram(T0, peer, &mm1);
    let mm2 = ks.poll_transmit().unwrap().payload;
    let m = Message::parse(&mm2).unwrap();
    let Body::Payloads(ps) = &m.body else {
        panic!()
    };
    let Some(Payload::Sa(Sa::Phase1(sa))) = ps.first() else {
        panic!("{ps:?}")
    };
    assert_eq!(
        sa.proposals[0].transforms[0].attributes.group,
        Some(OakleyGroup::ECP_384)
    );
    // Main mode 3 with a P-384 public value (RFC 5903: x ‖ y, 96 octets).
    let sys = ring::rand::SystemRandom::new();
    let k =
        ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P384, &sys).unwrap();
    let public = k.compute_public_key().unwrap();
    let mm3 = Message {
        header: header(m.header.responder_cookie),
        body: Body::Payloads(vec![
            Payload::KeyExchange(KeyExchange(&public.as_ref()[1..])),
            Payload::Nonce(Nonce(&[9; 32])),
        ]),
    }
    .to_vec()
    .unwrap();
    ks.handle_datagram(T0 + 10, peer, &mm3);
    let mm4 = ks.poll_transmit().unwrap().payload;
    let m = Message::parse(&mm4).unwrap();
    let Body::Payloads(ps) = &m.body else {
        panic!()
    };
    let ke = ps
        .iter()
        .find_map(|p| match p {
            Payload::KeyExchange(k) => Some(k.0.len()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ke, 96, "the KS's P-384 public value");
    // A P-256-sized value in a P-384 exchange is refused.
    let mut ks = self::ks(b"group-psk", Authorization::default());
    ks.handle_datagram(T0, peer, &mm1);
    let mm2 = ks.poll_transmit().unwrap().payload;
    let r = Message::parse(&mm2).unwrap().header.responder_cookie;
    let short = Message {
        header: header(r),
        body: Body::Payloads(vec![
            Payload::KeyExchange(KeyExchange(&[4; 64])),
            Payload::Nonce(Nonce(&[9; 32])),
        ]),
    }
    .to_vec()
    .unwrap();
    ks.handle_datagram(T0 + 10, peer, &short);
    assert!(ks.counters().rejected(gkm_proto::ks::Reject::Malformed) >= 1);
}

/// AES-CBC-128 / HMAC-SHA-1 / MODP-1536 with a PSK: what the 2011 GDOI
/// reference implementation can do best, short of 3DES.
fn gdoid_suite() -> Suite {
    Suite {
        cipher: CbcCipher::Aes128,
        prf: Prf::HmacSha1,
        group: DhGroup::Modp1536,
        auth: AuthKind::Psk,
        life_secs: 86_400,
    }
}

/// A GM of `group` offering only [`gdoid_suite`], with `legacy_phase1`
/// for the KS; runs it against `ks` and returns the KS's and the GM's
/// events and the suite names main mode 2 chose.
fn legacy_run(
    ks: &mut gkm_proto::ks::KeyServer,
    group: u32,
) -> (Vec<KsEvent>, Vec<GmEvent>, Vec<String>) {
    legacy_run_offering(ks, group, vec![gdoid_suite()])
}

/// PSK GM `i` of `group` offering `suites`, with `legacy_phase1` for the KS.
fn legacy_gm(i: u32, group: u32, suites: Vec<Suite>) -> (SocketAddr, GroupMember) {
    let addr = gm_addr(i);
    let IpAddr::V4(a) = addr.ip() else { panic!() };
    let mut cfg = base_config(
        i,
        group,
        GmIdentity::Ipv4(a),
        GmAuth::Psk(Zeroizing::new(b"group-psk".to_vec())),
    );
    cfg.legacy_phase1_key_servers = vec![KS_ADDR];
    cfg.phase1_suites = Some(suites);
    (addr, GroupMember::new(cfg, rng(u64::from(i) + 6)))
}

/// [`legacy_run`] with the GM offering `suites`.
fn legacy_run_offering(
    ks: &mut gkm_proto::ks::KeyServer,
    group: u32,
    suites: Vec<Suite>,
) -> (Vec<KsEvent>, Vec<GmEvent>, Vec<String>) {
    let mut gms = vec![legacy_gm(3, group, suites)];
    let mut chosen = Vec::new();
    let (_, ks_events, gm_events) = run_with(ks, &mut gms, T0, T0 + 20_000, |dir, d| {
        let m = Message::parse(d).unwrap();
        if let (Dir::Down, Body::Payloads(ps)) = (dir, &m.body) {
            for p in ps {
                if let Payload::Sa(Sa::Phase1(s)) = p {
                    for t in s.proposals.iter().flat_map(|p| &p.transforms) {
                        let s = Suite::from_transform(t, &[AuthKind::Psk]).unwrap();
                        chosen.push(s.name());
                    }
                }
            }
        }
        true
    });
    (
        ks_events,
        gm_events.into_iter().map(|(_, e)| e).collect(),
        chosen,
    )
}

fn rejected(events: &[KsEvent], reason: Reject) -> Vec<Option<String>> {
    events
        .iter()
        .filter_map(|e| match e {
            KsEvent::Rejected {
                reason: r, detail, ..
            } if *r == reason => Some(detail.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_legacy_suite_is_refused_with_no_proposal_chosen_unless_the_group_allows_it() {
    // Default: legacy_phase1 off everywhere. The offer is read (SHA-1 and
    // MODP-1536 are known), refused with NO-PROPOSAL-CHOSEN, and the log
    // line says why.
    let mut ks = ks(b"group-psk", Authorization::default());
    let (ks_events, gm_events, chosen) = legacy_run(&mut ks, GROUP);
    assert!(chosen.is_empty(), "{chosen:?}");
    assert_eq!(
        rejected(&ks_events, Reject::NoProposal).first(),
        Some(&Some(
            "offered AES-CBC-128/SHA/Pre-Shared Key/MODP-1536 (legacy suites only: \
             no group with legacy_phase1 accepts this peer)"
                .to_owned()
        ))
    );
    assert!(
        gm_events.iter().any(|e| matches!(
            e,
            GmEvent::AttemptFailed {
                reason: GmFailure::Notified(NotifyType::NO_PROPOSAL_CHOSEN),
                ..
            }
        )),
        "{gm_events:?}"
    );
    assert!(!gm_events.iter().any(is_registered), "{gm_events:?}");
    assert_eq!(ks.half_open_count(), 0);

    // The group turns legacy_phase1 on: the same GM registers with the
    // legacy suite.
    let mut g = ks.groups()[0].clone();
    g.legacy_phase1 = true;
    ks.set_group(T0, g, false).unwrap();
    let (ks_events, gm_events, chosen) = legacy_run(&mut ks, GROUP);
    assert_eq!(chosen, ["AES-CBC-128/SHA/MODP-1536"]);
    assert!(rejected(&ks_events, Reject::NoProposal).is_empty());
    assert_registered(&gm_events);
}

/// gdoid's default suite: 3DES-CBC / HMAC-SHA-1 / MODP-1024 with a PSK.
fn gdoid_default_suite() -> Suite {
    Suite {
        cipher: CbcCipher::TripleDes,
        group: DhGroup::Modp1024,
        ..gdoid_suite()
    }
}

#[test]
fn a_3des_phase1_registers_only_where_a_group_allows_legacy_phase1() {
    // 3DES is legacy like SHA-1 and MODP-1024: refused by default...
    let mut ks = ks(b"group-psk", Authorization::default());
    let (ks_events, gm_events, chosen) =
        legacy_run_offering(&mut ks, GROUP, vec![gdoid_default_suite()]);
    assert!(chosen.is_empty(), "{chosen:?}");
    assert_eq!(
        rejected(&ks_events, Reject::NoProposal).first(),
        Some(&Some(
            "offered 3DES-CBC/SHA/Pre-Shared Key/MODP-1024 (legacy suites only: \
             no group with legacy_phase1 accepts this peer)"
                .to_owned()
        ))
    );
    assert!(!gm_events.iter().any(is_registered), "{gm_events:?}");

    // ...and with legacy_phase1 on, main mode runs in 3DES (8-octet blocks
    // and IVs through main mode 5/6 and the PULL) and the GM registers.
    let mut g = ks.groups()[0].clone();
    g.legacy_phase1 = true;
    ks.set_group(T0, g, false).unwrap();
    let (ks_events, gm_events, chosen) =
        legacy_run_offering(&mut ks, GROUP, vec![gdoid_default_suite()]);
    assert_eq!(chosen, ["3DES-CBC/SHA/MODP-1024"]);
    assert!(rejected(&ks_events, Reject::NoProposal).is_empty());
    assert_registered(&gm_events);

    // A GM offering AES after 3DES-capable legacy suites gets AES: 3DES
    // is offered last and taken only when nothing else is.
    let offers = Suite::offers(AuthKind::Psk, 3600, true);
    let first_3des = offers
        .iter()
        .position(|s| s.cipher == CbcCipher::TripleDes)
        .unwrap();
    assert!(offers[first_3des..]
        .iter()
        .all(|s| s.cipher == CbcCipher::TripleDes));
    assert!(!Suite::offers(AuthKind::Psk, 3600, false)
        .iter()
        .any(|s| s.cipher == CbcCipher::TripleDes));
}

#[test]
fn a_legacy_phase1_sa_opens_only_the_groups_that_allow_it() {
    // Two groups take the same keyring PSK; only LEGACY has legacy_phase1.
    // A peer negotiates the legacy suite (LEGACY could accept it), then
    // asks for STRONG: refused, naming the suite and the group; LEGACY
    // over the same kind of SA works.
    let mut cfg = common::ks_config(b"group-psk", Authorization::default());
    let mut legacy = common::ks_group("LEGACY", 4321, 5, Authorization::default());
    legacy.legacy_phase1 = true;
    cfg.groups.push(legacy);
    let mut ks = gkm_proto::ks::KeyServer::new(cfg, rng(2));
    let (ks_events, gm_events, chosen) = legacy_run(&mut ks, GROUP);
    assert_eq!(
        chosen.first().map(String::as_str),
        Some("AES-CBC-128/SHA/MODP-1536")
    );
    assert_eq!(
        rejected(&ks_events, Reject::LegacyPhase1).first(),
        Some(&Some(format!(
            "phase 1 suite AES-CBC-128/SHA/MODP-1536 is legacy and group {GROUP} does not \
             have legacy_phase1 on"
        )))
    );
    assert!(!gm_events.iter().any(is_registered), "{gm_events:?}");
    assert!(
        ks.members(GROUP).next().is_none(),
        "nothing written for STRONG"
    );
    assert!(ks.counters().rejected(Reject::LegacyPhase1) >= 1);

    let (_, gm_events, _) = legacy_run(&mut ks, 4321);
    assert_registered(&gm_events);
}

#[test]
fn a_gm_offers_legacy_suites_only_to_a_key_server_set_for_them_and_after_the_strong_ones() {
    let strong = Suite::offers(AuthKind::Psk, 3600, false);
    let with_legacy = Suite::offers(AuthKind::Psk, 3600, true);
    assert!(strong.iter().all(|s| !s.is_legacy()));
    assert_eq!(with_legacy[..strong.len()], strong[..]);
    assert!(with_legacy[strong.len()..].iter().all(Suite::is_legacy));
    assert!(with_legacy
        .iter()
        .any(|s| s.name() == "AES-CBC-128/SHA/MODP-1536"));
    assert!(with_legacy
        .iter()
        .any(|s| s.name() == "AES-CBC-256/SHA/MODP-1024"));

    // A GM offering strong and legacy suites to a KS with legacy_phase1 on
    // still gets a strong one: the KS prefers any strong suite.
    let mut ks = ks(b"group-psk", Authorization::default());
    let mut g = ks.groups()[0].clone();
    g.legacy_phase1 = true;
    ks.set_group(T0, g, false).unwrap();
    let mut suites = vec![gdoid_suite()];
    suites.extend(Suite::offers(AuthKind::Psk, 3600, false));
    let (_, events, chosen) = legacy_run_offering(&mut ks, GROUP, suites);
    assert_eq!(chosen, ["AES-CBC-256/SHA2-256/ECP-256"], "a strong suite");
    assert_registered(&events);
}

/// A KS whose group's TEKs are `transform` (fresh keys of its sizes).
fn ks_with_teks(transform: gkm_proto::group::TekTransform) -> gkm_proto::ks::KeyServer {
    let mut cfg = common::ks_config(b"group-psk", Authorization::default());
    let mut r = rng(77);
    for t in &mut cfg.groups[0].keys.teks {
        *t = t.with_transform(transform, r.as_mut());
    }
    gkm_proto::ks::KeyServer::new(cfg, rng(2))
}

#[test]
fn cbc_hmac_teks_reach_the_gm_with_their_integrity_keys() {
    use gkm_proto::group::TekTransform;
    use gkm_wire::consts::{AuthAlgorithm, EspTransformId};
    for (transform, auth, key_len, mac_len) in [
        (
            TekTransform::AesCbc256HmacSha256,
            AuthAlgorithm::HMAC_SHA2_256,
            32,
            32,
        ),
        (
            TekTransform::AesCbc128HmacSha1,
            AuthAlgorithm::HMAC_SHA1,
            16,
            20,
        ),
    ] {
        let mut ks = ks_with_teks(transform);
        let want = ks.groups()[0].keys.teks.clone();
        let mut gms = vec![(gm_addr(5), gm(5, b"group-psk", GROUP))];
        let (keys, _, events) = run(&mut ks, &mut gms, T0 + 10_000);
        let got = &keys
            .get(&gm_addr(5))
            .unwrap_or_else(|| panic!("{events:?}"))
            .teks;
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (g.transform, g.auth, g.key.len(), g.integrity_key.len()),
                (EspTransformId::AES_CBC, Some(auth), key_len, mac_len)
            );
            assert_eq!((&g.key, &g.integrity_key), (&w.key, &w.integrity_key));
            assert_eq!(g.transform_name(), Some(transform.name()));
        }
        // A rekey's TEKs keep the transform, with fresh keys.
        let next = want[0].fresh(rng(5).as_mut());
        assert_eq!(
            (next.transform, next.auth),
            (EspTransformId::AES_CBC, Some(auth))
        );
        assert_eq!(next.integrity_key.len(), mac_len);
        assert_ne!(next.integrity_key, want[0].integrity_key);
    }
}

#[test]
fn a_tek_the_gm_cannot_use_is_refused_naming_what_is_wrong() {
    use gkm_proto::group::{GroupError, GroupKeys, TekTransform};
    use gkm_wire::consts::{AuthAlgorithm, EspTransformId};
    use gkm_wire::payload::TekBody;
    let ks = ks_with_teks(TekTransform::AesCbc128HmacSha1);
    let keys = &ks.groups()[0].keys;
    let material = keys.kek_material();
    let kd = keys.to_kd(&material, None);
    let ok = GroupKeys::from_pull(GROUP, &keys.to_sa(), &kd, 0)
        .unwrap()
        .0;
    assert_eq!(ok.teks, keys.teks, "the KS's own SA and KD read back");
    let refused = |change: &dyn Fn(&mut gkm_wire::payload::IpsecTek<'_>)| {
        let mut sa = keys.to_sa();
        if let TekBody::Ipsec(t) = &mut sa.teks[0].body {
            change(t);
        }
        match GroupKeys::from_pull(GROUP, &sa, &kd, 0) {
            Err(GroupError::Inconsistent(m)) => m,
            Ok(_) => panic!("accepted"),
        }
    };
    assert_eq!(
        refused(&|t| t.transform_id = EspTransformId::TRIPLE_DES),
        "SA TEK transform ESP_3DES (RFC 8221: MUST NOT)"
    );
    assert_eq!(
        refused(&|t| t.attributes.auth_algorithm = None),
        "SA TEK AES-CBC without an authentication algorithm"
    );
    assert_eq!(
        refused(&|t| t.attributes.auth_algorithm = Some(AuthAlgorithm::HMAC_SHA2_256)),
        "TEK_INTEGRITY_KEY length does not match the authentication algorithm"
    );
    assert_eq!(
        refused(&|t| t.attributes.auth_algorithm = Some(AuthAlgorithm::HMAC_SHA2_512)),
        "SA TEK authentication algorithm (HMAC-SHA or HMAC-SHA2-256)"
    );
    assert_eq!(
        refused(&|t| t.transform_id = EspTransformId::AES_GCM_16),
        "TEK key length does not match its transform"
    );
    // A GCM TEK with an integrity algorithm is no GCM TEK GKM knows.
    let gcm = ks_with_teks(TekTransform::AesGcm256);
    let keys = &gcm.groups()[0].keys;
    let material = keys.kek_material();
    let kd = keys.to_kd(&material, None);
    let mut sa = keys.to_sa();
    if let TekBody::Ipsec(t) = &mut sa.teks[0].body {
        t.attributes.auth_algorithm = Some(AuthAlgorithm::HMAC_SHA1);
    }
    assert_eq!(
        GroupKeys::from_pull(GROUP, &sa, &kd, 0).unwrap_err(),
        GroupError::Inconsistent(
            "AES-GCM SA TEK with an authentication algorithm or integrity key"
        )
    );
}

#[test]
fn a_group_that_drops_legacy_phase1_between_pull_1_and_pull_3_gives_no_keys() {
    // PULL 1 passes while LEGACY allows the legacy SA; its first PULL 3 is
    // lost; the operator turns legacy_phase1 off; the GM's retransmitted
    // PULL 3 is refused, naming the suite, and nothing is registered.
    let mut cfg = common::ks_config(b"group-psk", Authorization::default());
    cfg.groups[0].legacy_phase1 = true;
    let mut ks = gkm_proto::ks::KeyServer::new(cfg, rng(2));
    let mut gms = vec![legacy_gm(6, GROUP, vec![gdoid_suite()])];
    let mut pulls_up = 0;
    let (_, _, events) = run_with(&mut ks, &mut gms, T0, T0 + 500, |dir, d| {
        let m = Message::parse(d).unwrap();
        if dir == Dir::Up && m.header.exchange_type == ExchangeType::GROUPKEY_PULL {
            pulls_up += 1;
            return pulls_up != 2;
        }
        true
    });
    assert_eq!(pulls_up, 2, "PULL 1 through, PULL 3 dropped");
    assert!(!events.iter().any(|(_, e)| is_registered(e)));
    let mut g = ks.groups()[0].clone();
    g.legacy_phase1 = false;
    ks.set_group(T0 + 500, g, false).unwrap();
    let (_, ks_events, gm_events) = run_with(&mut ks, &mut gms, T0 + 500, T0 + 20_000, |_, _| true);
    assert!(
        !gm_events.iter().any(|(_, e)| is_registered(e)),
        "{gm_events:?}"
    );
    assert!(ks.members(GROUP).next().is_none());
    assert!(
        rejected(&ks_events, Reject::LegacyPhase1).iter().any(|d| d
            .as_deref()
            .is_some_and(|d| d.starts_with("phase 1 suite AES-CBC-128/SHA/MODP-1536 is legacy"))),
        "{ks_events:?}"
    );
}

#[test]
fn a_gm_registers_over_ipv6_with_a_psk_and_authorization_by_ipv6_prefix() {
    use gkm_proto::group::IpPrefix;
    use gkm_proto::ks::{Credential, PskEntry};
    let v6 = |s: &str| s.parse::<IpPrefix>().unwrap();
    let mut cfg = common::ks_config(
        b"unused",
        Authorization {
            addresses: vec![v6("fd00:1::/64")],
            identities: vec![],
        },
    );
    cfg.psks = vec![PskEntry {
        credential: Credential::Keyring(0),
        ranges: vec![v6("fd00:1::/64")],
        key: Zeroizing::new(b"v6-psk".to_vec()),
    }];
    let mut ks = gkm_proto::ks::KeyServer::new(cfg, rng(2));
    let gm6 = |host: u16, seed: u64| {
        let ip = std::net::Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, host);
        let addr = SocketAddr::new(IpAddr::V6(ip), 848);
        let mut c = base_config(
            host.into(),
            GROUP,
            GmIdentity::Ipv6(ip),
            GmAuth::Psk(Zeroizing::new(b"v6-psk".to_vec())),
        );
        c.key_servers = vec![KS_ADDR6];
        (addr, GroupMember::new(c, rng(seed)))
    };
    let mut gms = vec![gm6(5, 31)];
    let (keys, _, events) = run(&mut ks, &mut gms, T0 + 10_000);
    let events: Vec<GmEvent> = events.into_iter().map(|(_, e)| e).collect();
    assert_registered(&events);
    assert_eq!(keys.len(), 1);
    let m: Vec<_> = ks.members(GROUP).collect();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].gm_identity, "fd00:1::5");
    assert!(m[0].addr.is_ipv6());

    // The PSK and the authorization cover fd00:1::/64 only: an IPv6 GM
    // elsewhere, and an IPv4 GM, find no PSK for their source.
    let outside = {
        let ip = std::net::Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 5);
        let mut c = base_config(
            6,
            GROUP,
            GmIdentity::Ipv6(ip),
            GmAuth::Psk(Zeroizing::new(b"v6-psk".to_vec())),
        );
        c.key_servers = vec![KS_ADDR6];
        (
            SocketAddr::new(IpAddr::V6(ip), 848),
            GroupMember::new(c, rng(32)),
        )
    };
    let v4 = (gm_addr(7), gm(7, b"v6-psk", GROUP));
    let mut others = vec![outside, v4];
    let (keys, ks_events, _) = run(&mut ks, &mut others, T0 + 10_000);
    assert!(keys.is_empty());
    assert!(
        rejected(&ks_events, Reject::AuthenticationFailed).len() >= 2,
        "{ks_events:?}"
    );
    assert_eq!(ks.members(GROUP).count(), 1);
}

/// Issue 18 item 6: TEK selectors in IPv6 (ID_IPV6_ADDR_SUBNET) reach a
/// GM as they were written; a TEK whose source and destination are of
/// different families is refused by the GM naming why.
#[test]
fn ipv6_tek_selectors_reach_the_gm_and_a_mixed_family_tek_is_refused() {
    use gkm_proto::group::{GroupError, GroupKeys, IpPrefix};
    use gkm_wire::payload::TekBody;
    use gkm_wire::Identity;
    let v6 = |s: &str| s.parse::<IpPrefix>().unwrap();
    let mut cfg = common::ks_config(b"group-psk", Authorization::default());
    let mut r = rng(78);
    let generated = GroupKeys::generate(
        r.as_mut(),
        GROUP,
        &[
            (v6("fd00:1::/64"), v6("fd00:2::7/48")),
            (v6("10.1.0.0/16"), v6("10.1.0.0/16")),
        ],
        3600,
        None,
    );
    cfg.groups[0].keys.teks = generated.teks.clone();
    let mut ks = gkm_proto::ks::KeyServer::new(cfg, rng(2));
    // On the wire: ID_IPV6_ADDR_SUBNET with the address as written.
    let sa = ks.groups()[0].keys.to_sa();
    let TekBody::Ipsec(t) = &sa.teks[0].body else {
        panic!()
    };
    assert_eq!(
        t.dst.identity,
        Identity::Ipv6Subnet(
            "fd00:2::7".parse().unwrap(),
            "ffff:ffff:ffff::".parse().unwrap()
        )
    );
    let mut gms = vec![(gm_addr(6), gm(6, b"group-psk", GROUP))];
    let (keys, _, events) = run(&mut ks, &mut gms, T0 + 10_000);
    let got = &keys
        .get(&gm_addr(6))
        .unwrap_or_else(|| panic!("{events:?}"))
        .teks;
    assert_eq!(
        (got[0].src, got[0].dst, got[1].dst),
        (v6("fd00:1::/64"), v6("fd00:2::7/48"), v6("10.1.0.0/16"))
    );
    // A TEK from fd00:1::/64 to 10.1.0.0/16: no single packet family fits.
    let keys = &ks.groups()[0].keys;
    let material = keys.kek_material();
    let kd = keys.to_kd(&material, None);
    let mut sa = keys.to_sa();
    if let TekBody::Ipsec(t) = &mut sa.teks[0].body {
        t.dst.identity =
            Identity::Ipv4Subnet("10.1.0.0".parse().unwrap(), "255.255.0.0".parse().unwrap());
    }
    match GroupKeys::from_pull(GROUP, &sa, &kd, 0) {
        Err(GroupError::Inconsistent(m)) => assert_eq!(
            m,
            "TEK source and destination selectors of different IP families"
        ),
        Ok(_) => panic!("accepted"),
    }
}

/// The same attack with 3DES: a 3DES phase 1 SA negotiated on a legacy
/// group's account opens no strong group's PULL, even over the same PSK.
#[test]
fn a_3des_phase1_sa_opens_only_the_groups_that_allow_it() {
    let mut cfg = common::ks_config(b"group-psk", Authorization::default());
    let mut legacy = common::ks_group("LEGACY", 4321, 5, Authorization::default());
    legacy.legacy_phase1 = true;
    cfg.groups.push(legacy);
    let mut ks = gkm_proto::ks::KeyServer::new(cfg, rng(2));
    let (ks_events, gm_events, chosen) =
        legacy_run_offering(&mut ks, GROUP, vec![gdoid_default_suite()]);
    assert_eq!(
        chosen.first().map(String::as_str),
        Some("3DES-CBC/SHA/MODP-1024")
    );
    assert_eq!(
        rejected(&ks_events, Reject::LegacyPhase1).first(),
        Some(&Some(format!(
            "phase 1 suite 3DES-CBC/SHA/MODP-1024 is legacy and group {GROUP} does not \
             have legacy_phase1 on"
        )))
    );
    assert!(!gm_events.iter().any(is_registered), "{gm_events:?}");
    assert!(ks.members(GROUP).next().is_none(), "nothing written");
    let (_, gm_events, _) = legacy_run_offering(&mut ks, 4321, vec![gdoid_default_suite()]);
    assert_registered(&gm_events);
}
